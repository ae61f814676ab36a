/**
 * Shared Redis client setup for the cluster backends (`cluster.redisUrl`):
 * a client that fails fast while Redis is away, logs its outages once, and
 * reconnects by itself; and the mapping of connection errors to
 * {@link BackendUnavailableError}.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { ClientOfflineError, createClient, createCluster, ErrorReply } from "redis";
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
const TRANSIENT_REPLY =
  /^(LOADING|BUSY|MISCONF|READONLY|MASTERDOWN|TRYAGAIN|CLUSTERDOWN|MOVED|ASK)\b/;

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

/** A connected node-redis cluster client. */
type RedisClusterClient = ReturnType<typeof createCluster>;

/**
 * One logical connection to the Redis of a cluster (`cluster.redisUrl`):
 * a single Redis, or a Redis Cluster (a connection to each master). Every
 * command names a key, and goes to the node serving that key's slot, on one
 * connection per node: calls for the same slot resolve in call order.
 */
export interface RedisLink {
  /** Whether this is a Redis Cluster (keys live in slots on several masters). */
  readonly cluster: boolean;
  /** Whether commands can be sent now. */
  readonly isReady: boolean;
  /** Sends `args` to the node serving `key` (any key for a single Redis). */
  send<T = unknown>(key: string, args: string[]): Promise<T>;
  /**
   * The client of every node (the one client of a single Redis): masters,
   * and with `replicas` the replicas too. A single Redis answers at once.
   */
  nodes(replicas?: boolean): RedisClient[] | Promise<RedisClient[]>;
  /** Calls `listener` each time a connection (to any node) becomes ready. */
  onReady(listener: () => void): void;
  /** Waits for replies in flight, then closes. */
  close(): Promise<void>;
  /** Drops the connections at once (pending commands reject). */
  drop(): Promise<void>;
}

/** A link over one single-Redis client. */
class SingleLink implements RedisLink {
  readonly cluster = false;
  readonly client: RedisClient;

  constructor(client: RedisClient) {
    this.client = client;
  }

  get isReady(): boolean {
    return this.client.isReady;
  }

  send<T>(_key: string, args: string[]): Promise<T> {
    return this.client.sendCommand<T>(args);
  }

  nodes(): RedisClient[] {
    return [this.client];
  }

  onReady(listener: () => void): void {
    this.client.on("ready", listener);
  }

  close(): Promise<void> {
    return closeRedis(this.client);
  }

  drop(): Promise<void> {
    return dropRedis(this.client);
  }
}

/** A link to a Redis Cluster: node-redis's cluster client follows MOVED and ASK itself. */
class ClusterLink implements RedisLink {
  readonly cluster = true;
  #client: RedisClusterClient;
  #discovering?: Promise<void>;
  #discoveredAt = 0;

  #retry: { until: number };

  constructor(client: RedisClusterClient, retry: { until: number }) {
    this.#client = client;
    this.#retry = retry;
  }

  get isReady(): boolean {
    return this.#client.isOpen;
  }

  /**
   * A command refused because its node is offline was never sent: it is sent
   * again once the slot map is read anew (after a failover, to the promoted
   * replica). Commands that may have run are not retried.
   */
  async send<T>(key: string, args: string[]): Promise<T> {
    try {
      return await this.#client.sendCommand(key, false, args) as T;
    } catch (error) {
      if (!isUnavailable(error)) throw error;
      const discovered = this.#rediscover();
      if (!(error instanceof ClientOfflineError)) throw error;
      await discovered;
      return await this.#client.sendCommand(key, false, args) as T;
    }
  }

  /**
   * Asks the nodes for the slot map again. node-redis does that only when a
   * node answers MOVED or ASK, which a dead master never does: without this
   * its slots would stay unreachable after a replica took them over. Tried
   * on the replicas first (they outlive a master), at most every 200 ms
   * while commands keep failing, so it settles once the failover is done.
   */
  #rediscover(): Promise<void> {
    if (this.#discovering) return this.#discovering;
    const now = Date.now();
    if (now - this.#discoveredAt < 200) return Promise.resolve();
    this.#discoveredAt = now;
    const cluster = this.#client;
    const slots = (cluster as unknown as {
      _slots: { rediscover(start: { options: unknown }): Promise<void> };
    })._slots;
    const nodes = [...cluster.replicas, ...cluster.masters].map(({ host, port }) => ({
      host,
      port,
    }));
    return this.#discovering = (async () => {
      for (const socket of nodes) {
        try {
          await slots.rediscover({ options: { socket } });
          return;
        } catch {
          // That node is gone too: try the next.
        }
      }
    })().finally(() => this.#discovering = undefined);
  }

  nodes(replicas = false): Promise<RedisClient[]> {
    const cluster = this.#client;
    const nodes = replicas ? [...cluster.masters, ...cluster.replicas] : cluster.masters;
    return Promise.all(nodes.map((node) => cluster.nodeClient(node) as Promise<RedisClient>));
  }

  onReady(listener: () => void): void {
    this.#client.on("node-ready", listener);
  }

  async close(): Promise<void> {
    if (this.#client.isOpen) {
      try {
        await this.#client.close();
      } catch {
        this.#client.destroy();
      }
    }
    await this.#retried();
  }

  async drop(): Promise<void> {
    if (this.#client.isOpen) this.#client.destroy();
    await this.#retried();
  }

  /** Waits out a pending reconnect timer of a node (destroy does not cancel it). */
  async #retried(): Promise<void> {
    const wait = this.#retry.until - Date.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait + 5));
  }
}

/** Wraps a single-Redis client as a {@link RedisLink} (takes ownership of it). */
export function linkOf(client: RedisClient | RedisLink): RedisLink {
  return client instanceof SingleLink || client instanceof ClusterLink
    ? client
    : new SingleLink(client as RedisClient);
}

/**
 * Opens a link to `url`: a Redis Cluster when that node says it runs in
 * cluster mode (`INFO cluster`), a single Redis otherwise. The node of the URL
 * is the seed: the cluster client finds the others from it.
 */
export async function openRedis(url: string, options: RedisConnectOptions): Promise<RedisLink> {
  const client = await connectRedis(url, options);
  let clustered = false;
  try {
    clustered = /cluster_enabled:1/.test(await client.sendCommand<string>(["INFO", "cluster"]));
  } catch {
    // INFO disabled or not answered: treat it as a single Redis.
  }
  if (!clustered) return new SingleLink(client);
  await closeRedis(client);
  return await connectCluster(url, options);
}

/** Opens a cluster client seeded with `url`, with the same failure behaviour as {@link connectRedis}. */
async function connectCluster(url: string, options: RedisConnectOptions): Promise<RedisLink> {
  const { logger, name } = options;
  const maxDelay = options.maxRetryDelayMs ?? 1000;
  const parsed = new URL(url);
  /** When the latest reconnect attempt of any node is due (node-redis keeps that timer). */
  const retry = { until: 0 };
  const cluster = createCluster({
    rootNodes: [{ url }],
    // Connected to the replicas too (commands still go to masters): they get the scripts
    // before a failover promotes one of them.
    useReplicas: true,
    defaults: {
      name: `im-${name}`,
      username: parsed.username ? decodeURIComponent(parsed.username) : undefined,
      password: parsed.password ? decodeURIComponent(parsed.password) : undefined,
      disableOfflineQueue: true,
      socket: {
        connectTimeout: 2000,
        reconnectStrategy: (retries: number) => {
          const delay = Math.min(50 * 2 ** retries, maxDelay);
          retry.until = Math.max(retry.until, Date.now() + delay);
          return delay;
        },
      },
    },
  });
  let down = false;
  const lost = (error: Error) => {
    if (down) {
      logger.debug("Redis Cluster node still unreachable", {
        connection: name,
        error: error.message,
      });
      return;
    }
    down = true;
    logger.warn("Redis Cluster connection lost: retrying", {
      connection: name,
      error: error.message,
    });
  };
  cluster.on("error", lost);
  cluster.on("node-error", lost);
  cluster.on("node-ready", () => {
    if (!down) return;
    down = false;
    logger.info("Redis Cluster connection restored", { connection: name });
  });
  await cluster.connect();
  return new ClusterLink(cluster, retry);
}

/**
 * Lua scripts run with `EVALSHA`, so each call sends a few bytes instead of
 * the script (Redis reads about 16 KiB of a connection per event-loop turn,
 * and its AOF fsync covers one turn: small commands mean large group commits).
 *
 * Every script declares one key (`KEYS[1]`), which picks the node in a Redis
 * Cluster; every key a script touches shares that key's hash tag, so it runs
 * within one slot.
 *
 * The scripts are loaded on every master at once and again whenever a
 * connection becomes ready (Redis forgets scripts at a restart, and a replica
 * promoted by a failover never had them). Both go ahead of any later call on
 * the same connection, so calls rarely meet a missing script; if one does, it
 * fails as unavailable, with no retry that could reorder calls, and the
 * scripts are loaded again.
 */
export class RedisScripts<Name extends string> {
  #link: RedisLink;
  #what: string;
  #sources: Record<Name, string>;
  #shas: Record<Name, string>;
  #logger: Logger;

  /** Loads `sources` through `link`; `what` names the backend in errors ("Storage"). */
  constructor(
    link: RedisLink,
    what: string,
    sources: Record<Name, string>,
    logger: Logger,
  ) {
    this.#link = link;
    this.#what = what;
    this.#sources = sources;
    this.#logger = logger;
    this.#shas = Object.fromEntries(
      Object.entries<string>(sources).map((
        [name, source],
      ) => [name, createHash("sha1").update(source).digest("hex")]),
    ) as Record<Name, string>;
    link.onReady(() => this.#load());
    this.#load();
  }

  /**
   * Loads the scripts on every node; on a single Redis synchronously, ahead
   * of any call made after this. Replicas get them too: a replica promoted
   * by a failover then has them.
   */
  #load(): void {
    const loadOn = (nodes: RedisClient[]) => {
      for (const node of nodes) {
        for (const source of Object.values<string>(this.#sources)) {
          node.scriptLoad(source).catch((error) =>
            this.#logger.debug("Could not load a Lua script", { error })
          );
        }
      }
    };
    const nodes = this.#link.nodes(true);
    if (Array.isArray(nodes)) loadOn(nodes);
    else {
      nodes.then(
        loadOn,
        (error) => this.#logger.debug("Could not load the Lua scripts", { error }),
      );
    }
  }

  /** Runs a script on the node of `key` (its `KEYS[1]`) with `args`. */
  async run(name: Name, key: string, args: string[]): Promise<unknown> {
    try {
      return await guard(
        this.#what,
        () => this.#link.send(key, ["EVALSHA", this.#shas[name], "1", key, ...args]),
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
