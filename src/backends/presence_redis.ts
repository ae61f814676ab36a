/**
 * Redis {@link Presence}: the registered clients of every instance, with a
 * heartbeat so that the entries of an instance that died expire.
 *
 * Keys of a user group (`redis_layout.ts`; prefix `im:presence:`, or
 * `im:{<tag>}:presence:` on a Redis Cluster, the same slot as the group's
 * messages):
 * - `u:{userId}`: hash, `{instance}\0{clientName}` → `{"since","instance","clientName"}`;
 * - `online`: set of the group's userIds with at least one entry;
 * - `i:{instance}`: set of `userId\0clientName` an instance holds in the group (for cleanup);
 *
 * and `im:presence:instances`: sorted set, instance → expiry (Redis clock,
 * ms), renewed by each instance's heartbeat.
 *
 * An entry is one client on one instance (a newer register of the same client
 * elsewhere closes the older connection, whose disconnect removes its entry).
 * A remove takes an entry away only if it is still the one that connection
 * added (same `since`), so the late disconnect of a replaced connection keeps
 * the newer entry. Entries of an instance whose heartbeat stopped are ignored
 * by lookups at once and deleted by the next heartbeat of any instance.
 *
 * The entries are also the routing table of deliveries (`route_redis.ts`):
 * a delivery goes to the instances that have an entry of a recipient. So a
 * register's replay must not read the store before its entry is written:
 * {@link RedisPresence.added} resolves once the adds in flight for a user are
 * done, and the Redis store waits for it before reading a replay.
 *
 * @module
 */
import type { Presence, PresenceEntry } from "../core/presence.ts";
import type { Logger } from "../log.ts";
import { KEY_PREFIX, linkOf, type RedisClient, type RedisLink, RedisScripts } from "./redis.ts";
import { RedisLayout } from "./redis_layout.ts";

/** Sorted set: instance → expiry of its presence entries (ms, Redis clock). */
const PRESENCE_INSTANCES = `${KEY_PREFIX}presence:instances`;

/** Lua prelude: Redis time. */
const NOW = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`;

/** Lua prelude of a group's scripts: the removal of one entry. */
const PRELUDE = `
local P = KEYS[1]
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
`;

/** KEYS[1]: group prefix. ARGV: user, client, instance, entry JSON. */
const ADD = PRELUDE + `
local user, client, instance = ARGV[1], ARGV[2], ARGV[3]
redis.call('HSET', P .. 'u:' .. user, instance .. '\\0' .. client, ARGV[4])
redis.call('SADD', P .. 'i:' .. instance, user .. '\\0' .. client)
redis.call('SADD', P .. 'online', user)
return 1
`;

/** KEYS[1]: group prefix. ARGV: user, client, instance, since. */
const REMOVE = PRELUDE + `
drop(ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]))
return 1
`;

/** KEYS[1]: group prefix. ARGV: instances that stopped: drops their entries in the group. */
const DROP = PRELUDE + `
for _, dead in ipairs(ARGV) do
  for _, member in ipairs(redis.call('SMEMBERS', P .. 'i:' .. dead)) do
    local cut = string.find(member, '\\0', 1, true)
    drop(string.sub(member, 1, cut - 1), string.sub(member, cut + 1), dead)
  end
  redis.call('DEL', P .. 'i:' .. dead)
end
return 1
`;

/**
 * KEYS[1]: the instances set. ARGV: ttl ms, instance ids to renew. Returns
 * {instances whose expiry passed (not renewed here), renewed ids that had
 * expired or were gone}.
 */
const RENEW = NOW + `
local now = now_ms()
local renew = {}
for i = 2, #ARGV do renew[ARGV[i]] = true end
local dead = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE')) do
  if not renew[id] then dead[#dead + 1] = id end
end
local lost = {}
for i = 2, #ARGV do
  local expiry = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if not expiry or tonumber(expiry) <= now then lost[#lost + 1] = ARGV[i] end
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i])
end
return {dead, lost}
`;

/** KEYS[1]: the instances set. ARGV: instances: removes those whose expiry passed. */
const FORGET = NOW + `
local now = now_ms()
for _, id in ipairs(ARGV) do
  local expiry = redis.call('ZSCORE', KEYS[1], id)
  if expiry and tonumber(expiry) <= now then redis.call('ZREM', KEYS[1], id) end
end
return 1
`;

/** KEYS[1]: the instances set. Returns the live instances. */
const LIVE = NOW + `
return redis.call('ZRANGE', KEYS[1], '(' .. now_ms(), '+inf', 'BYSCORE')
`;

/** KEYS[1]: group prefix. ARGV: userIds. Returns, per user, the entries (JSON). */
const LOOKUP = `
local out = {}
for i, user in ipairs(ARGV) do out[i] = redis.call('HVALS', KEYS[1] .. 'u:' .. user) end
return out
`;

/** KEYS[1]: group prefix. Returns user, entries (JSON) of every user with an entry in the group. */
const ONLINE = `
local out = {}
for _, user in ipairs(redis.call('SMEMBERS', KEYS[1] .. 'online')) do
  out[#out + 1] = user
  out[#out + 1] = redis.call('HVALS', KEYS[1] .. 'u:' .. user)
end
return out
`;

const SCRIPTS = { ADD, REMOVE, DROP, RENEW, FORGET, LIVE, LOOKUP, ONLINE };

/** Options of {@link RedisPresence}. */
export interface RedisPresenceOptions {
  /** Where heartbeat failures are logged. */
  logger: Logger;
  /** Milliseconds an instance's entries live without a heartbeat. @default 15000 */
  ttlMs?: number;
  /** Milliseconds between heartbeats. @default ttlMs / 3 */
  heartbeatMs?: number;
  /** Key layout; by default the link's ({@link RedisLayout.of}). */
  layout?: RedisLayout;
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
  #link: RedisLink;
  #layout: RedisLayout;
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
  /** When each instance of ours was last renewed in the instances set (ms, local clock). */
  #renewed = new Map<string, number>();

  /** Takes ownership of `client` (closed by {@link close}). */
  constructor(client: RedisClient | RedisLink, options: RedisPresenceOptions) {
    this.#link = linkOf(client);
    this.#layout = options.layout ?? RedisLayout.of(this.#link);
    this.#logger = options.logger;
    this.#ttlMs = options.ttlMs ?? 15_000;
    this.#scripts = new RedisScripts(this.#link, "Presence", SCRIPTS, options.logger);
    this.#timer = setInterval(() => {
      this.#beating ??= this.heartbeat().finally(() => this.#beating = undefined);
    }, options.heartbeatMs ?? Math.max(1, Math.floor(this.#ttlMs / 3)));
  }

  #run(script: keyof typeof SCRIPTS, key: string, args: string[]): Promise<unknown> {
    return this.#scripts.run(script, key, args);
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
    const k = this.#layout.group(userId);
    const renewed = this.#renewed.get(instance);
    // A new instance is live from its first entry on, not from its first heartbeat.
    const renewal = renewed === undefined || Date.now() - renewed > this.#ttlMs / 3
      ? this.#renew([instance])
      : undefined;
    await Promise.all([
      this.#run("ADD", this.#layout.presence(k), [userId, clientName, instance, value]),
      renewal,
    ]);
  }

  /** Renews `instances`; returns {instances that stopped, ours that had expired}. */
  async #renew(instances: string[]): Promise<[string[], string[]]> {
    const now = Date.now();
    const reply = await this.#run("RENEW", PRESENCE_INSTANCES, [
      String(this.#ttlMs),
      ...instances,
    ]) as [string[], string[]];
    for (const instance of instances) this.#renewed.set(instance, now);
    return reply;
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
    await this.#run("REMOVE", this.#layout.presence(this.#layout.group(entry.userId)), [
      entry.userId,
      entry.clientName,
      entry.instance,
      String(entry.since),
    ]);
  }

  /** The instances whose heartbeat is current. */
  async #live(): Promise<Set<string>> {
    return new Set(await this.#run("LIVE", PRESENCE_INSTANCES, []) as string[]);
  }

  async lookup(userIds: string[]): Promise<Map<string, PresenceEntry[]>> {
    const result = new Map<string, PresenceEntry[]>();
    if (userIds.length === 0) return result;
    const groups = [...this.#layout.split(userIds)];
    const [live, ...replies] = await Promise.all([
      this.#live(),
      ...groups.map(([k, users]) => this.#run("LOOKUP", this.#layout.presence(k), users)),
    ]);
    groups.forEach(([, users], g) => {
      const reply = replies[g] as string[][];
      users.forEach((userId, i) => {
        const entries = entriesOf(userId, reply[i], live as Set<string>);
        if (entries.length > 0) result.set(userId, entries);
      });
    });
    return result;
  }

  async onlineUsers(): Promise<string[]> {
    const layout = this.#layout;
    const [live, ...replies] = await Promise.all([
      this.#live(),
      ...Array.from(
        { length: layout.groups },
        (_, k) => this.#run("ONLINE", layout.presence(k), []),
      ),
    ]);
    const users: string[] = [];
    for (const reply of replies as (string | string[])[][]) {
      for (let i = 0; i < reply.length; i += 2) {
        const user = reply[i] as string;
        if (entriesOf(user, reply[i + 1] as string[], live as Set<string>).length > 0) {
          users.push(user);
        }
      }
    }
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
      const [dead, lost] = await this.#renew([...instances]);
      if (dead.length > 0) {
        // Their entries in every group, then the instances themselves (unless they came back).
        const layout = this.#layout;
        await Promise.all(
          Array.from(
            { length: layout.groups },
            (_, k) => this.#run("DROP", layout.presence(k), dead),
          ),
        );
        await this.#run("FORGET", PRESENCE_INSTANCES, dead);
      }
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
    await this.#link.close();
  }
}

/** The entries of `userId` (stored JSON values) on live instances, oldest first. */
function entriesOf(userId: string, values: string[], live: Set<string>): PresenceEntry[] {
  const entries: PresenceEntry[] = [];
  for (const value of values) {
    const { since, instance, clientName } = JSON.parse(value) as Stored;
    if (live.has(instance)) entries.push({ userId, clientName, since, instance });
  }
  return entries.sort((a, b) => a.since - b.since);
}
