/**
 * Redis {@link MessageStore}: messages and delivery states shared by every
 * instance. Each operation is one Lua script (`EVAL`), so it is atomic, and
 * every call goes through one connection, so calls resolve in the order they
 * were made.
 *
 * Keys (prefix `im:store:`):
 * - `seq`: the global sequence (INCR); a message's seq orders inboxes and history;
 * - `k:{sender}\0{id}`: the seq of a message (dedupe by sender and id);
 * - `m:{seq}`: hash of the message: `sender`, `id`, `type`, `text`, `at`,
 *   `rcpt` (JSON), `n` (recipients still holding it), `s:{user}` (state
 *   `p`ending, `d`elivered, `a`cknowledged);
 * - `in:{user}`: sorted set of the seqs a recipient holds (the per-user cap);
 * - `un:{user}`: sorted set of the seqs a recipient has not acknowledged;
 * - `c:{a}\0{b}`: sorted set of the seqs between two users (history);
 * - `t`: sorted set of seqs by acceptance time (retention);
 * - `pending`: the number of unacknowledged (recipient, message) pairs.
 *
 * Durability is Redis's: with `appendonly yes` a reply is written to the AOF
 * before it is sent, so a killed Redis process loses nothing that was
 * answered; `appendfsync everysec` bounds a machine crash to one second (see
 * docs/CLUSTER.md).
 *
 * @module
 */
import type {
  AcceptResult,
  DeliveryState,
  HistoryOptions,
  HistoryPage,
  MessageKey,
  MessageStore,
  NewMessage,
  StoredMessage,
} from "../core/store.ts";
import type { Logger } from "../log.ts";
import { closeRedis, guard, KEY_PREFIX, type RedisClient, RedisScripts } from "./redis.ts";
import { createLogger } from "../log.ts";

const P = `${KEY_PREFIX}store:`;

/** Lua prelude: key names and the removal of one recipient's hold on a message. */
const PRELUDE = `
local P = ${JSON.stringify(P)}
local function pair(a, b)
  if a < b then return a .. '\\0' .. b end
  return b .. '\\0' .. a
end
local function forget(user, seq)
  local m = P .. 'm:' .. seq
  local state = redis.call('HGET', m, 's:' .. user)
  if not state then return false end
  if state ~= 'a' then
    redis.call('DECR', P .. 'pending')
    redis.call('ZREM', P .. 'un:' .. user, seq)
  end
  redis.call('HDEL', m, 's:' .. user)
  redis.call('ZREM', P .. 'in:' .. user, seq)
  local sender = redis.call('HGET', m, 'sender')
  redis.call('ZREM', P .. 'c:' .. pair(sender, user), seq)
  if redis.call('HINCRBY', m, 'n', -1) <= 0 then
    redis.call('DEL', m, P .. 'k:' .. sender .. '\\0' .. redis.call('HGET', m, 'id'))
    redis.call('ZREM', P .. 't', seq)
  end
  return state
end
`;

/**
 * ARGV: sender, id, type, text, acceptedAt, recipients JSON, maxPerUser, recipients….
 * Returns {1} for a duplicate, else {0, then user, sender, id of each unacknowledged drop}.
 */
const ACCEPT = PRELUDE + `
local sender, id = ARGV[1], ARGV[2]
local k = P .. 'k:' .. sender .. '\\0' .. id
if redis.call('EXISTS', k) == 1 then return {1} end
local seq = redis.call('INCR', P .. 'seq')
redis.call('SET', k, seq)
local m = P .. 'm:' .. seq
redis.call('HSET', m, 'sender', sender, 'id', id, 'type', ARGV[3], 'text', ARGV[4],
  'at', ARGV[5], 'rcpt', ARGV[6], 'n', #ARGV - 7)
redis.call('ZADD', P .. 't', ARGV[5], seq)
local max = tonumber(ARGV[7])
local out = {0}
for i = 8, #ARGV do
  local user = ARGV[i]
  local inbox = P .. 'in:' .. user
  redis.call('HSET', m, 's:' .. user, 'p')
  redis.call('ZADD', inbox, seq, seq)
  redis.call('ZADD', P .. 'un:' .. user, seq, seq)
  redis.call('ZADD', P .. 'c:' .. pair(sender, user), seq, seq)
  redis.call('INCR', P .. 'pending')
  while redis.call('ZCARD', inbox) > max do
    local oldest = redis.call('ZRANGE', inbox, 0, 0)[1]
    local keyOf = redis.call('HMGET', P .. 'm:' .. oldest, 'sender', 'id')
    local state = forget(user, oldest)
    if state and state ~= 'a' then
      table.insert(out, user); table.insert(out, keyOf[1]); table.insert(out, keyOf[2])
    end
  end
end
return out
`;

/** ARGV: user. Returns {sender, id, type, text, at} of each unacknowledged message, oldest first. */
const UNACKNOWLEDGED = `
local P = ${JSON.stringify(P)}
local out = {}
for _, seq in ipairs(redis.call('ZRANGE', P .. 'un:' .. ARGV[1], 0, -1)) do
  table.insert(out, redis.call('HMGET', P .. 'm:' .. seq, 'sender', 'id', 'type', 'text', 'at'))
end
return out
`;

/** ARGV: user, then sender, id of each message. */
const MARK_DELIVERED = `
local P = ${JSON.stringify(P)}
local field = 's:' .. ARGV[1]
for i = 2, #ARGV, 2 do
  local seq = redis.call('GET', P .. 'k:' .. ARGV[i] .. '\\0' .. ARGV[i + 1])
  if seq and redis.call('HGET', P .. 'm:' .. seq, field) == 'p' then
    redis.call('HSET', P .. 'm:' .. seq, field, 'd')
  end
end
return 1
`;

/** ARGV: sender, id, user…: one message delivered to several users. */
const MARK_DELIVERED_TO = `
local P = ${JSON.stringify(P)}
local seq = redis.call('GET', P .. 'k:' .. ARGV[1] .. '\\0' .. ARGV[2])
if not seq then return 1 end
local m = P .. 'm:' .. seq
for i = 3, #ARGV do
  local field = 's:' .. ARGV[i]
  if redis.call('HGET', m, field) == 'p' then redis.call('HSET', m, field, 'd') end
end
return 1
`;

/** ARGV: user, sender, id. Returns 1 when the message to the user is known. */
const ACKNOWLEDGE = `
local P = ${JSON.stringify(P)}
local user = ARGV[1]
local seq = redis.call('GET', P .. 'k:' .. ARGV[2] .. '\\0' .. ARGV[3])
if not seq then return 0 end
local m = P .. 'm:' .. seq
local state = redis.call('HGET', m, 's:' .. user)
if not state then return 0 end
if state ~= 'a' then
  redis.call('HSET', m, 's:' .. user, 'a')
  redis.call('ZREM', P .. 'un:' .. user, seq)
  redis.call('DECR', P .. 'pending')
end
return 1
`;

/**
 * ARGV: user, peer, before (seq, or ''), limit. Returns {seq, sender, id, type,
 * text, at, rcpt, state} per message, newest first, up to limit + 1 of them.
 */
const HISTORY = PRELUDE + `
local user, peer = ARGV[1], ARGV[2]
local max = '+inf'
if ARGV[3] ~= '' then max = '(' .. ARGV[3] end
local seqs = redis.call('ZRANGE', P .. 'c:' .. pair(user, peer), max, '-inf', 'BYSCORE', 'REV',
  'LIMIT', 0, tonumber(ARGV[4]) + 1)
local out = {}
for _, seq in ipairs(seqs) do
  local m = P .. 'm:' .. seq
  local v = redis.call('HMGET', m, 'sender', 'id', 'type', 'text', 'at', 'rcpt')
  local other = user
  if v[1] == user then other = peer end
  local state = redis.call('HGET', m, 's:' .. other) or 'a'
  table.insert(out, {seq, v[1], v[2], v[3], v[4], v[5], v[6], state})
end
return out
`;

/**
 * ARGV: cutoff (ms), batch size. Drops messages accepted before cutoff; returns
 * {messages dropped, unacknowledged (recipient, message) pairs among them}.
 */
const SWEEP = PRELUDE + `
local seqs = redis.call('ZRANGE', P .. 't', '-inf', '(' .. ARGV[1], 'BYSCORE', 'LIMIT', 0,
  tonumber(ARGV[2]))
local unacked = 0
for _, seq in ipairs(seqs) do
  local m = P .. 'm:' .. seq
  local v = redis.call('HMGET', m, 'sender', 'id', 'rcpt')
  if v[3] then
    for _, user in ipairs(cjson.decode(v[3])) do
      local state = forget(user, seq)
      if state and state ~= 'a' then unacked = unacked + 1 end
    end
  end
  if v[1] and redis.call('EXISTS', m) == 1 then
    redis.call('DEL', m, P .. 'k:' .. v[1] .. '\\0' .. v[2])
  end
  redis.call('ZREM', P .. 't', seq)
end
return {#seqs, unacked}
`;

const SCRIPTS = {
  ACCEPT,
  UNACKNOWLEDGED,
  MARK_DELIVERED,
  MARK_DELIVERED_TO,
  ACKNOWLEDGE,
  HISTORY,
  SWEEP,
};

const STATES: Record<string, DeliveryState> = {
  p: "pending",
  d: "delivered",
  a: "acknowledged",
};

/** Options of {@link RedisStore}. */
export interface RedisStoreOptions {
  /** Messages kept per recipient; the oldest are dropped past it. @default 10000 */
  maxPerUser?: number;
  /** Days a message is kept. @default 30 */
  retentionDays?: number;
  /** Where drops are reported. */
  logger?: Logger;
  /** Messages dropped per script run by {@link RedisStore.sweep}. @default 500 */
  sweepBatch?: number;
}

/** Messages and delivery states in Redis, shared by every instance. */
export class RedisStore implements MessageStore {
  #client: RedisClient;
  #scripts: RedisScripts<keyof typeof SCRIPTS>;
  #maxPerUser: number;
  #retentionMs: number;
  #logger?: Logger;
  #sweepBatch: number;

  /** Takes ownership of `client` (closed by {@link close}). */
  constructor(client: RedisClient, options: RedisStoreOptions = {}) {
    this.#client = client;
    this.#maxPerUser = options.maxPerUser ?? 10000;
    this.#retentionMs = (options.retentionDays ?? 30) * 86_400_000;
    this.#logger = options.logger;
    this.#sweepBatch = options.sweepBatch ?? 500;
    const logger = options.logger ?? createLogger({ level: "error" });
    this.#scripts = new RedisScripts(client, "Storage", SCRIPTS, logger);
  }

  #eval(script: keyof typeof SCRIPTS, args: string[]): Promise<unknown> {
    return this.#scripts.run(script, args);
  }

  async accept(message: NewMessage): Promise<AcceptResult> {
    const reply = await this.#eval("ACCEPT", [
      message.sender,
      message.id,
      String(message.type),
      message.text,
      String(message.acceptedAt),
      JSON.stringify(message.recipients),
      String(this.#maxPerUser),
      ...message.recipients,
    ]) as (number | string)[];
    if (reply[0] === 1) return { duplicate: true };
    for (let i = 1; i < reply.length; i += 3) {
      this.#logger?.warn("Per-user cap reached: dropped an unacknowledged message", {
        user: reply[i],
        sender: reply[i + 1],
        id: reply[i + 2],
        maxPerUser: this.#maxPerUser,
      });
    }
    return { duplicate: false };
  }

  async unacknowledged(userId: string): Promise<StoredMessage[]> {
    const reply = await this.#eval("UNACKNOWLEDGED", [userId]) as string[][];
    return reply.map(([sender, id, type, text, at]) => ({
      sender,
      id,
      type: Number(type),
      text,
      acceptedAt: Number(at),
    }));
  }

  async markDelivered(userId: string, keys: MessageKey[]): Promise<void> {
    if (keys.length === 0) return;
    await this.#eval("MARK_DELIVERED", [userId, ...keys.flatMap((key) => [key.sender, key.id])]);
  }

  async markDeliveredTo(key: MessageKey, userIds: readonly string[]): Promise<void> {
    if (userIds.length === 0) return;
    await this.#eval("MARK_DELIVERED_TO", [key.sender, key.id, ...userIds]);
  }

  async acknowledge(userId: string, key: MessageKey): Promise<boolean> {
    return await this.#eval("ACKNOWLEDGE", [userId, key.sender, key.id]) === 1;
  }

  async history(userId: string, peer: string, options: HistoryOptions): Promise<HistoryPage> {
    const before = options.before !== undefined && /^\d+$/.test(options.before)
      ? options.before
      : "";
    const limit = Math.max(0, Math.floor(options.limit));
    const reply = await this.#eval("HISTORY", [userId, peer, before, String(limit)]) as string[][];
    const page = reply.slice(0, limit);
    return {
      messages: page.map(([_seq, sender, id, type, text, at, rcpt, state]) => ({
        sender,
        id,
        type: Number(type),
        text,
        acceptedAt: Number(at),
        recipients: JSON.parse(rcpt),
        state: STATES[state],
      })),
      next: reply.length > limit && page.length > 0 ? page[page.length - 1][0] : undefined,
    };
  }

  async pendingCount(): Promise<number> {
    const value = await guard("Storage", () => this.#client.get(`${P}pending`));
    return Number(value ?? 0);
  }

  async sweep(now: number): Promise<number> {
    const cutoff = String(now - this.#retentionMs);
    let dropped = 0;
    let unacknowledged = 0;
    while (true) {
      const [count, unacked] = await this.#eval("SWEEP", [cutoff, String(this.#sweepBatch)]) as [
        number,
        number,
      ];
      dropped += count;
      unacknowledged += unacked;
      if (count < this.#sweepBatch) break;
    }
    if (unacknowledged > 0) {
      this.#logger?.warn("Retention sweep dropped unacknowledged messages", {
        dropped,
        unacknowledged,
      });
    } else if (dropped > 0) {
      this.#logger?.info("Retention sweep dropped old messages", { dropped });
    }
    return dropped;
  }

  close(): Promise<void> {
    return closeRedis(this.#client);
  }
}
