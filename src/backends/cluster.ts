/**
 * The Redis backends of a cluster (`cluster.redisUrl`): every instance
 * sharing the URL shares login sessions, delivery, presence and storage.
 *
 * @module
 */
import type { Config } from "../config/schema.ts";
import type { Logger } from "../log.ts";
import type { Backends } from "./mod.ts";
import { RedisBroker } from "./broker_redis.ts";
import { RedisPresence } from "./presence_redis.ts";
import { openRedis, type RedisLink } from "./redis.ts";
import { RedisSessionStore } from "./sessions_redis.ts";
import { RedisStore } from "./store_redis.ts";

/** Entries kept in an instance's delivery stream (approximately). */
const STREAM_LENGTH = 100_000;

/**
 * Opens one connection each for the store, the sessions, presence, and the
 * broker's writer and reader. The store's connection carries every
 * store call, so they resolve in call order.
 */
export async function openRedisBackends(
  config: Config,
  logger: Logger,
): Promise<Backends & { presence: RedisPresence }> {
  const url = config.cluster.redisUrl!;
  const log = logger.child("redis");
  const opened: RedisLink[] = [];
  const open = async (name: string) => {
    const link = await openRedis(url, { logger: log, name });
    opened.push(link);
    return link;
  };
  try {
    const storeClient = await open("store");
    await checkDurability(storeClient, log);
    await checkLayout(storeClient, log);
    const presence = new RedisPresence(await open("presence"), {
      logger: logger.child("presence"),
    });
    const store = new RedisStore(storeClient, {
      maxPerUser: config.storage.maxPerUser,
      retentionDays: config.storage.retentionDays,
      maxPendingBytesPerSender: config.limits.maxPendingBytesPerSender,
      logger: logger.child("store"),
      // Presence entries route deliveries: a replay reads the store only once they are written.
      beforeReplay: (userId) => presence.added(userId),
      // Accept (or acknowledge) and publish in one script: one round trip per message.
      publish: { maxLength: STREAM_LENGTH, maxHeld: config.cluster.maxHeldDeliveries },
      waitReplicas: {
        replicas: config.cluster.redisWait,
        timeoutMs: config.cluster.redisWaitTimeoutMs,
      },
    });
    const broker = new RedisBroker(await open("publish"), await open("read"), {
      logger: logger.child("broker"),
      maxLength: STREAM_LENGTH,
      maxHeld: config.cluster.maxHeldDeliveries,
    });
    const sessions = new RedisSessionStore(await open("sessions"), config.auth.sessionTtlSeconds);
    log.info(
      storeClient.cluster ? "Cluster backends on a Redis Cluster" : "Cluster backends on Redis",
      {
        url: redactUrl(url),
      },
    );
    return { store, broker, sessions, presence };
  } catch (error) {
    await Promise.all(opened.map((link) => link.close()));
    throw error;
  }
}

/** Warns when Redis could lose accepted messages at a crash or restart. */
async function checkDurability(link: RedisLink, logger: Logger): Promise<void> {
  try {
    // Every master has the same settings in a cluster set up by one configuration.
    const [client] = await link.nodes();
    const config = await client.configGet("appendonly");
    const fsync = await client.configGet("appendfsync");
    if (config.appendonly !== "yes") {
      logger.warn(
        "Redis runs without appendonly: accepted messages are lost if Redis restarts " +
          "(start it with --appendonly yes --appendfsync always, see docs/CLUSTER.md)",
      );
    } else if (fsync.appendfsync !== "always") {
      logger.info(
        `Redis appendfsync is ${fsync.appendfsync}: a Redis crash can lose the last seconds ` +
          "of accepted messages (appendfsync always loses none, see docs/CLUSTER.md)",
      );
    }
  } catch {
    logger.debug("Could not read the persistence settings of Redis (CONFIG is disabled)");
  }
}

/**
 * Warns when a single Redis holds messages in the key layout of versions
 * before the Redis Cluster support (an `order` list and a `pending` counter):
 * this version does not read them (docs/CLUSTER.md, "Upgrading").
 */
async function checkLayout(link: RedisLink, logger: Logger): Promise<void> {
  if (link.cluster) return;
  const old = ["im:store:order", "im:store:pending"];
  try {
    if (await link.send<number>(old[0], ["EXISTS", ...old]) > 0) {
      logger.warn(
        "Redis holds messages stored by an earlier version (keys im:store:order, " +
          "im:store:pending): this version does not read them; see docs/CLUSTER.md, Upgrading",
      );
    }
  } catch {
    // Not reachable: the first call that needs Redis says so.
  }
}

/** The URL without its password, for logs. */
function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "****";
    return parsed.toString();
  } catch {
    return "(unparsable URL)";
  }
}
