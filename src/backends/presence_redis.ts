/**
 * Redis {@link Presence}: the registered clients of every instance, with a
 * heartbeat so that the entries of an instance that died expire.
 *
 * Keys (prefix `im:presence:`):
 * - `u:{userId}`: hash, `{instance}\0{clientName}` → `{"since","instance","clientName"}`;
 * - `online`: set of userIds with at least one entry;
 * - `i:{instance}`: set of `userId\0clientName` held by an instance (for cleanup);
 * - `instances`: sorted set, instance → expiry (Redis clock, ms), renewed by
 *   each instance's heartbeat.
 *
 * An entry is one client on one instance (a newer register of the same client
 * elsewhere closes the older connection, whose disconnect removes its entry).
 * A remove takes an entry away only if it is still the one that connection
 * added (same `since`), so the late disconnect of a replaced connection keeps
 * the newer entry. Entries of an instance whose heartbeat stopped are ignored
 * by lookups at once and deleted by the next heartbeat of any instance.
 *
 * The entries are also the routing table of the broker (`broker_redis.ts`):
 * a delivery goes to the instances that have an entry of a recipient. So a
 * register's replay must not read the store before its entry is written:
 * {@link RedisPresence.added} resolves once the adds in flight for a user are
 * done, and the Redis store waits for it before reading a replay.
 *
 * @module
 */
import type { Presence, PresenceEntry } from "../core/presence.ts";
import type { Logger } from "../log.ts";
import { closeRedis, KEY_PREFIX, type RedisClient, RedisScripts } from "./redis.ts";

/** Prefix of the presence keys (the broker reads `u:{userId}` to route deliveries). */
export const PRESENCE_PREFIX = `${KEY_PREFIX}presence:`;
const P = PRESENCE_PREFIX;

/** Lua prelude: key names, Redis time, and the removal of one entry. */
const PRELUDE = `
local P = ${JSON.stringify(P)}
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function drop(user, client, instance, since)
  local key = P .. 'u:' .. user
  local field = instance .. '\\0' .. client
  local prev = redis.call('HGET', key, field)
  if prev and (since == nil or cjson.decode(prev).since == since) then
    redis.call('HDEL', key, field)
    if redis.call('EXISTS', key) == 0 then redis.call('SREM', P .. 'online', user) end
    redis.call('SREM', P .. 'i:' .. instance, user .. '\\0' .. client)
  end
end
local function alive()
  local set = {}
  for _, id in ipairs(redis.call('ZRANGE', P .. 'instances', '(' .. now_ms(), '+inf', 'BYSCORE')) do
    set[id] = true
  end
  return set
end
`;

/** ARGV: user, client, instance, entry JSON, ttl ms. */
const ADD = PRELUDE + `
local user, client, instance = ARGV[1], ARGV[2], ARGV[3]
redis.call('ZADD', P .. 'instances', now_ms() + tonumber(ARGV[5]), instance)
redis.call('HSET', P .. 'u:' .. user, instance .. '\\0' .. client, ARGV[4])
redis.call('SADD', P .. 'i:' .. instance, user .. '\\0' .. client)
redis.call('SADD', P .. 'online', user)
return 1
`;

/** ARGV: user, client, instance, since. */
const REMOVE = PRELUDE + `
drop(ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]))
return 1
`;

/** ARGV: ttl ms, instance ids to renew. Returns the ids that had expired. Sweeps dead instances. */
const HEARTBEAT = PRELUDE + `
local now = now_ms()
local ttl = tonumber(ARGV[1])
local dead = redis.call('ZRANGE', P .. 'instances', '-inf', now, 'BYSCORE')
for _, d in ipairs(dead) do
  local held = redis.call('SMEMBERS', P .. 'i:' .. d)
  for _, member in ipairs(held) do
    local cut = string.find(member, '\\0', 1, true)
    drop(string.sub(member, 1, cut - 1), string.sub(member, cut + 1), d)
  end
  redis.call('DEL', P .. 'i:' .. d)
  redis.call('ZREM', P .. 'instances', d)
end
local lost = {}
for i = 2, #ARGV do
  if redis.call('ZADD', P .. 'instances', now + ttl, ARGV[i]) == 1 then table.insert(lost, ARGV[i]) end
end
return lost
`;

/** ARGV: userIds. Returns, per user, the entries (JSON) of live instances. */
const LOOKUP = PRELUDE + `
local live = alive()
local out = {}
for i, user in ipairs(ARGV) do
  local kept = {}
  for _, value in ipairs(redis.call('HVALS', P .. 'u:' .. user)) do
    if live[cjson.decode(value).instance] then table.insert(kept, value) end
  end
  out[i] = kept
end
return out
`;

/** Every user with an entry of a live instance. */
const ONLINE = PRELUDE + `
local live = alive()
local out = {}
for _, user in ipairs(redis.call('SMEMBERS', P .. 'online')) do
  for _, value in ipairs(redis.call('HVALS', P .. 'u:' .. user)) do
    if live[cjson.decode(value).instance] then table.insert(out, user); break end
  end
end
return out
`;

const SCRIPTS = { ADD, REMOVE, HEARTBEAT, LOOKUP, ONLINE };

/** Options of {@link RedisPresence}. */
export interface RedisPresenceOptions {
  /** Where heartbeat failures are logged. */
  logger: Logger;
  /** Milliseconds an instance's entries live without a heartbeat. @default 15000 */
  ttlMs?: number;
  /** Milliseconds between heartbeats. @default ttlMs / 3 */
  heartbeatMs?: number;
}

interface Stored {
  since: number;
  instance: string;
  clientName: string;
}

const localKey = (entry: PresenceEntry) =>
  `${entry.userId}\u0000${entry.instance}\u0000${entry.clientName}`;

/** Presence shared by every instance through Redis. */
export class RedisPresence implements Presence {
  #client: RedisClient;
  #scripts: RedisScripts<keyof typeof SCRIPTS>;
  #logger: Logger;
  #ttlMs: number;
  #timer: ReturnType<typeof setInterval>;
  /** The entries this instance added, to renew them if Redis lost them. */
  #local = new Map<string, PresenceEntry>();
  /** Adds and removes that failed (Redis was away), retried by the next heartbeat. */
  #unsynced = new Map<string, { entry: PresenceEntry; added: boolean }>();
  #beating?: Promise<void>;
  /** Adds in flight, by userId (the latest per user; earlier ones are on the same connection). */
  #adding = new Map<string, Promise<void>>();

  /** Takes ownership of `client` (closed by {@link close}). */
  constructor(client: RedisClient, options: RedisPresenceOptions) {
    this.#client = client;
    this.#logger = options.logger;
    this.#ttlMs = options.ttlMs ?? 15_000;
    this.#scripts = new RedisScripts(client, "Presence", SCRIPTS, options.logger);
    this.#timer = setInterval(() => {
      this.#beating ??= this.heartbeat().finally(() => this.#beating = undefined);
    }, options.heartbeatMs ?? Math.max(1, Math.floor(this.#ttlMs / 3)));
  }

  async add(entry: PresenceEntry): Promise<void> {
    const key = localKey(entry);
    this.#local.set(key, entry);
    this.#unsynced.delete(key);
    const adding = this.#add(entry);
    this.#adding.set(entry.userId, adding);
    try {
      await adding;
    } catch (error) {
      this.#unsynced.set(key, { entry, added: true });
      throw error;
    } finally {
      if (this.#adding.get(entry.userId) === adding) this.#adding.delete(entry.userId);
    }
  }

  /**
   * Resolves once the adds of `userId`'s entries made so far are written
   * (rejects if the latest failed): from then on, publishes see them.
   */
  added(userId: string): Promise<void> {
    return this.#adding.get(userId) ?? Promise.resolve();
  }

  async #add(entry: PresenceEntry): Promise<void> {
    const { userId, clientName, since, instance } = entry;
    const value = JSON.stringify({ since, instance, clientName });
    await this.#scripts.run("ADD", [userId, clientName, instance, value, String(this.#ttlMs)]);
  }

  async remove(entry: PresenceEntry): Promise<void> {
    const key = localKey(entry);
    const local = this.#local.get(key);
    if (local?.since === entry.since) {
      this.#local.delete(key);
      this.#unsynced.delete(key);
    }
    try {
      await this.#remove(entry);
    } catch (error) {
      if (!this.#local.has(key)) this.#unsynced.set(key, { entry, added: false });
      throw error;
    }
  }

  async #remove(entry: PresenceEntry): Promise<void> {
    await this.#scripts.run("REMOVE", [
      entry.userId,
      entry.clientName,
      entry.instance,
      String(entry.since),
    ]);
  }

  async lookup(userIds: string[]): Promise<Map<string, PresenceEntry[]>> {
    const result = new Map<string, PresenceEntry[]>();
    if (userIds.length === 0) return result;
    const reply = await this.#scripts.run("LOOKUP", userIds) as string[][];
    userIds.forEach((userId, i) => {
      if (reply[i].length === 0) return;
      const entries = reply[i].map((value): PresenceEntry => {
        const { since, instance, clientName } = JSON.parse(value) as Stored;
        return { userId, clientName, since, instance };
      });
      entries.sort((a, b) => a.since - b.since);
      result.set(userId, entries);
    });
    return result;
  }

  async onlineUsers(): Promise<string[]> {
    const users = await this.#scripts.run("ONLINE", []) as string[];
    return users.sort();
  }

  /**
   * Renews this instance's entries, removes those of instances whose
   * heartbeat stopped, and retries the adds and removes that failed while
   * Redis was away. Runs on a timer; exposed for tests.
   */
  async heartbeat(): Promise<void> {
    const instances = new Set([...this.#local.values()].map((entry) => entry.instance));
    try {
      const lost = await this.#scripts.run("HEARTBEAT", [
        String(this.#ttlMs),
        ...instances,
      ]) as string[];
      if (lost.length > 0) {
        // Our instance had expired (a long outage, or Redis lost its data): add our entries again.
        this.#logger.warn("Presence entries had expired: adding them again", { instances: lost });
        for (const entry of this.#local.values()) {
          if (lost.includes(entry.instance)) await this.#add(entry);
        }
      }
      for (const [key, { entry, added }] of this.#unsynced) {
        if (added) await this.#add(entry);
        else await this.#remove(entry);
        this.#unsynced.delete(key);
      }
    } catch (error) {
      this.#logger.debug("Presence heartbeat failed", { error });
    }
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.#beating;
    try {
      for (const entry of this.#local.values()) await this.#remove(entry);
    } catch (error) {
      this.#logger.debug("Presence cleanup failed: entries expire with the heartbeat", { error });
    }
    this.#local.clear();
    this.#unsynced.clear();
    await closeRedis(this.#client);
  }
}
