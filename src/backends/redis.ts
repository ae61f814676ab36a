/**
 * Shared Redis client setup for the cluster backends (`cluster.redisUrl`):
 * a client that fails fast while Redis is away, logs its outages once, and
 * reconnects by itself; and the mapping of connection errors to
 * {@link BackendUnavailableError}.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { createClient, ErrorReply } from "redis";
import { BackendUnavailableError } from "../core/errors.ts";
import type { Logger } from "../log.ts";

/** A connected node-redis client. */
export type RedisClient = ReturnType<typeof createClient>;

/** Options of {@link connectRedis}. */
export interface RedisConnectOptions {
  /** Where connection errors and recoveries are logged. */
  logger: Logger;
  /** Name of the connection in logs and in `CLIENT LIST`. */
  name: string;
  /** Most milliseconds between reconnect attempts. @default 1000 */
  maxRetryDelayMs?: number;
}

/** Key prefix of every key the cluster backends write. */
export const KEY_PREFIX = "im:";

/** When each client's pending reconnect attempt is due. */
const retries = new WeakMap<RedisClient, { until: number }>();

/**
 * Opens a client and waits until it is ready (it keeps retrying while Redis is
 * not reachable, logging the first failure).
 *
 * Commands sent while the connection is down reject at once
 * (`disableOfflineQueue`): no unbounded queue builds up during an outage, and
 * callers answer their clients quickly. The client reconnects by itself with a
 * capped backoff (50 ms doubling up to `maxRetryDelayMs`).
 */
export async function connectRedis(
  url: string,
  options: RedisConnectOptions,
): Promise<RedisClient> {
  const { logger, name } = options;
  const maxDelay = options.maxRetryDelayMs ?? 1000;
  const retry = { until: 0 };
  const client = createClient({
    url,
    name: `im-${name}`,
    disableOfflineQueue: true,
    socket: {
      connectTimeout: 2000,
      reconnectStrategy: (retries) => {
        const delay = Math.min(50 * 2 ** retries, maxDelay);
        retry.until = Date.now() + delay;
        return delay;
      },
    },
  });
  retries.set(client, retry);
  let down = false;
  // Without an "error" listener node-redis would throw from its event emitter.
  client.on("error", (error: Error) => {
    if (down) {
      logger.debug("Redis still unreachable", { connection: name, error: error.message });
      return;
    }
    down = true;
    logger.warn("Redis connection lost: retrying", { connection: name, error: error.message });
  });
  client.on("ready", () => {
    if (!down) return;
    down = false;
    logger.info("Redis connection restored", { connection: name });
  });
  await client.connect();
  return client;
}

/**
 * Closes a client: waits for its replies when connected, drops it otherwise.
 * A client waiting to reconnect is dropped, then this waits for its retry
 * timer (at most `maxRetryDelayMs`) so that no timer outlives the close.
 */
export async function closeRedis(client: RedisClient): Promise<void> {
  if (!client.isOpen) return;
  if (client.isReady) {
    try {
      await client.close();
      return;
    } catch {
      // Fall through: the connection went away while closing.
    }
  }
  await dropRedis(client);
}

/**
 * Drops a client's connection at once (pending commands reject), then waits
 * for a pending reconnect timer so that none outlives the client.
 */
export async function dropRedis(client: RedisClient): Promise<void> {
  if (client.isOpen) client.destroy();
  const wait = (retries.get(client)?.until ?? 0) - Date.now();
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait + 5));
}

/** Replies that mean "Redis is there but cannot serve right now". */
const TRANSIENT_REPLY = /^(LOADING|BUSY|MISCONF|READONLY|MASTERDOWN|TRYAGAIN|CLUSTERDOWN)\b/;

/**
 * Whether `error` means Redis is unreachable or temporarily unable to serve
 * (as opposed to a bug such as a bad script).
 */
export function isUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  if (error instanceof ErrorReply) return TRANSIENT_REPLY.test(error.message);
  return true;
}

/**
 * Runs a Redis call; a connection failure rejects with a
 * {@link BackendUnavailableError} whose message names `what` (sent to clients).
 */
export async function guard<T>(what: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (!isUnavailable(error)) throw error;
    const detail = error instanceof ErrorReply
      ? error.message.split(" ")[0].toLowerCase()
      : "Redis is not reachable";
    throw new BackendUnavailableError(`${what} unavailable: ${detail}, try again later`, {
      cause: error,
    });
  }
}

/**
 * Lua scripts run with `EVALSHA`, so each call sends a few bytes instead of
 * the script (Redis reads about 16 KiB of a connection per event-loop turn,
 * and its AOF fsync covers one turn: small commands mean large group commits).
 *
 * The scripts are loaded on the connection at once and again whenever it
 * becomes ready (Redis forgets scripts at a restart). Both go ahead of any
 * later call on the same connection, so calls never meet a missing script in
 * practice; if one does (`SCRIPT FLUSH`), it fails as unavailable, with no
 * retry that could reorder calls, and the scripts are loaded again.
 */
export class RedisScripts<Name extends string> {
  #client: RedisClient;
  #what: string;
  #sources: Record<Name, string>;
  #shas: Record<Name, string>;
  #logger: Logger;

  /** Loads `sources` on `client`; `what` names the backend in errors ("Storage"). */
  constructor(client: RedisClient, what: string, sources: Record<Name, string>, logger: Logger) {
    this.#client = client;
    this.#what = what;
    this.#sources = sources;
    this.#logger = logger;
    this.#shas = Object.fromEntries(
      Object.entries<string>(sources).map((
        [name, source],
      ) => [name, createHash("sha1").update(source).digest("hex")]),
    ) as Record<Name, string>;
    client.on("ready", () => this.#load());
    this.#load();
  }

  #load(): void {
    for (const source of Object.values<string>(this.#sources)) {
      this.#client.scriptLoad(source).catch((error) =>
        this.#logger.debug("Could not load a Lua script", { error })
      );
    }
  }

  /** Runs a script with `args` (no keys: the scripts build their key names). */
  async run(name: Name, args: string[]): Promise<unknown> {
    try {
      return await guard(
        this.#what,
        () => this.#client.sendCommand(["EVALSHA", this.#shas[name], "0", ...args]),
      );
    } catch (error) {
      if (!(error instanceof ErrorReply && error.message.startsWith("NOSCRIPT"))) throw error;
      this.#load();
      throw new BackendUnavailableError(
        `${this.#what} unavailable: Redis lost its scripts, try again`,
        { cause: error },
      );
    }
  }
}
