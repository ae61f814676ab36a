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
 * - `held:{user}`: list of the seqs a recipient holds, oldest first (the
 *   per-user cap; messages leave it oldest first, by the cap or retention);
 * - `un:{user}`: sorted set of the seqs a recipient has not acknowledged;
 * - `c:{a}\0{b}`: sorted set of the seqs between two users (history);
 * - `order`: list of every seq in acceptance order (retention; the sweep
 *   pops it from the head and skips messages the cap already dropped);
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
import type { Delivery } from "../core/broker.ts";
import type { Logger } from "../log.ts";
import { deliveryEntry, ROUTE_LUA, type SequencedKey } from "./broker_redis.ts";
import { BackendUnavailableError } from "../core/errors.ts";
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
-- Drops a recipient's hold on a message (popped: the caller took it off the head of the
-- recipient's held list already). Returns the state it had, the sender and the id.
local function forget(user, seq, popped)
  local m = P .. 'm:' .. seq
  local v = redis.call('HMGET', m, 's:' .. user, 'sender', 'id', 'n')
  local state = v[1]
  if not state then return false end
  if state ~= 'a' then
    redis.call('DECR', P .. 'pending')
    redis.call('ZREM', P .. 'un:' .. user, seq)
  end
  -- The oldest first, by the cap or retention: found at the head of the list.
  if not popped then redis.call('LREM', P .. 'held:' .. user, 1, seq) end
  redis.call('ZREM', P .. 'c:' .. pair(v[2], user), seq)
  if tonumber(v[4]) <= 1 then
    redis.call('DEL', m, P .. 'k:' .. v[2] .. '\\0' .. v[3])
  else
    redis.call('HDEL', m, 's:' .. user)
    redis.call('HINCRBY', m, 'n', -1)
  end
  return state, v[2], v[3]
end
`;

/**
 * ARGV: sender, id, type, text, acceptedAt, recipients JSON, maxPerUser,
 * entry text ('' to not publish), stream max length, origin instance, echo
 * user, recipients…. Returns {1} for a duplicate, else {0, then user, sender,
 * id of each unacknowledged drop}. When the entry text is not '', routes it
 * to the instances holding the recipients in the same step (ROUTE_LUA).
 */
const ACCEPT = PRELUDE + ROUTE_LUA + `
local sender, id = ARGV[1], ARGV[2]
-- As a string once: Lua formats numbers with sprintf at every use.
local seq = tostring(redis.call('INCR', P .. 'seq'))
if not redis.call('SET', P .. 'k:' .. sender .. '\\0' .. id, seq, 'NX') then return {1} end
local FIRST = 12
local m = P .. 'm:' .. seq
local fields = {'sender', sender, 'id', id, 'type', ARGV[3], 'text', ARGV[4], 'at', ARGV[5],
  'rcpt', ARGV[6], 'n', #ARGV - FIRST + 1}
-- One HSET for the common case; very long recipient lists go on in further calls.
local last = math.min(#ARGV, FIRST + 199)
for i = FIRST, last do
  table.insert(fields, 's:' .. ARGV[i]); table.insert(fields, 'p')
end
redis.call('HSET', m, unpack(fields))
for i = last + 1, #ARGV do redis.call('HSET', m, 's:' .. ARGV[i], 'p') end
redis.call('RPUSH', P .. 'order', seq)
redis.call('INCRBY', P .. 'pending', #ARGV - FIRST + 1)
local max = tonumber(ARGV[7])
local out = {0}
for i = FIRST, #ARGV do
  local user = ARGV[i]
  local held = P .. 'held:' .. user
  redis.call('ZADD', P .. 'un:' .. user, seq, seq)
  redis.call('ZADD', P .. 'c:' .. pair(sender, user), seq, seq)
  local count = redis.call('RPUSH', held, seq)
  while count > max do
    count = count - 1
    local state, from, key = forget(user, redis.call('LPOP', held), true)
    if state and state ~= 'a' then
      table.insert(out, user); table.insert(out, from); table.insert(out, key)
    end
  end
end
if ARGV[8] ~= '' then route(ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV, FIRST, seq) end
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

/**
 * ARGV: user, sender, id, seq ('' when unknown) of each (recipient, message)
 * to mark delivered.
 */
const MARK_DELIVERED = `
local P = ${JSON.stringify(P)}
for i = 1, #ARGV, 4 do
  local seq = ARGV[i + 3]
  if seq == '' then seq = redis.call('GET', P .. 'k:' .. ARGV[i + 1] .. '\\0' .. ARGV[i + 2]) end
  if seq then
    local m, field = P .. 'm:' .. seq, 's:' .. ARGV[i]
    if redis.call('HGET', m, field) == 'p' then redis.call('HSET', m, field, 'd') end
  end
end
return 1
`;

/**
 * ARGV: user, sender, id, entry text ('' to not publish), stream max length,
 * origin instance, echo user, users to route to…. Returns 1 when the message
 * to the user is known (and then routes the entry, see ACCEPT).
 */
const ACKNOWLEDGE = ROUTE_LUA + `
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
if ARGV[4] ~= '' then route(ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV, 8, nil) end
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
 * ARGV: cutoff (ms), batch size. Drops messages accepted before cutoff, oldest
 * first, up to the first one that is not; returns {messages dropped,
 * unacknowledged (recipient, message) pairs among them, entries of the order
 * list looked at and removed (dropped, or already dropped by the cap)}.
 */
const SWEEP = PRELUDE + `
local order = P .. 'order'
local cutoff, batch = tonumber(ARGV[1]), tonumber(ARGV[2])
local dropped, unacked, popped = 0, 0, 0
for _, seq in ipairs(redis.call('LRANGE', order, 0, batch - 1)) do
  local m = P .. 'm:' .. seq
  local v = redis.call('HMGET', m, 'sender', 'id', 'rcpt', 'at')
  if v[4] and tonumber(v[4]) >= cutoff then break end
  redis.call('LPOP', order)
  popped = popped + 1
  if v[3] then
    dropped = dropped + 1
    for _, user in ipairs(cjson.decode(v[3])) do
      local state = forget(user, seq)
      if state and state ~= 'a' then unacked = unacked + 1 end
    end
    if redis.call('EXISTS', m) == 1 then
      redis.call('DEL', m, P .. 'k:' .. v[1] .. '\\0' .. v[2])
    end
  end
end
return {dropped, unacked, popped}
`;

const SCRIPTS = {
  ACCEPT,
  UNACKNOWLEDGED,
  MARK_DELIVERED,
  ACKNOWLEDGE,
  HISTORY,
  SWEEP,
};

/** (recipient, message) marks per MARK_DELIVERED call. */
const MARKS_PER_CALL = 1000;

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
  /**
   * Awaited before the replay of a user is read: resolves once this
   * instance's presence entries of the user are written, so that any message
   * this read misses is published to this instance (see docs/CLUSTER.md).
   */
  beforeReplay?: (userId: string) => Promise<void>;
  /**
   * Publish the deliveries passed to accept and acknowledge in the same
   * script, to instance streams of this length (the broker's `maxLength`):
   * one round trip per message, and publishes ordered with the store's calls.
   */
  publish?: { maxLength: number };
  /**
   * Replicas that must confirm an accept or acknowledge (Redis `WAIT`)
   * before it resolves; when fewer do within `timeoutMs`, it rejects as
   * unavailable (the write stays on the primary: a resend is a duplicate).
   */
  waitReplicas?: { replicas: number; timeoutMs: number };
}

/** Messages and delivery states in Redis, shared by every instance. */
export class RedisStore implements MessageStore {
  #client: RedisClient;
  #scripts: RedisScripts<keyof typeof SCRIPTS>;
  #maxPerUser: number;
  #retentionMs: number;
  #logger?: Logger;
  #sweepBatch: number;
  #beforeReplay?: (userId: string) => Promise<void>;
  /** Marks not sent yet: user, sender, id, seq of each. */
  #marks: string[] = [];
  #marked?: PromiseWithResolvers<void>;
  #streamLength: string;
  #wait?: { replicas: number; timeoutMs: number };
  /** The `WAIT` that covers the writes sent in this turn of the event loop, if one is due. */
  #waiting?: Promise<void>;
  /** Whether accept and acknowledge publish what they are given (see RedisStoreOptions.publish). */
  readonly publishes: boolean;

  /** Takes ownership of `client` (closed by {@link close}). */
  constructor(client: RedisClient, options: RedisStoreOptions = {}) {
    this.#client = client;
    this.#maxPerUser = options.maxPerUser ?? 10000;
    this.#retentionMs = (options.retentionDays ?? 30) * 86_400_000;
    this.#logger = options.logger;
    this.#sweepBatch = options.sweepBatch ?? 500;
    this.#beforeReplay = options.beforeReplay;
    this.publishes = options.publish !== undefined;
    this.#streamLength = String(options.publish?.maxLength ?? 0);
    if (options.waitReplicas && options.waitReplicas.replicas > 0) {
      this.#wait = options.waitReplicas;
    }
    const logger = options.logger ?? createLogger({ level: "error" });
    this.#scripts = new RedisScripts(client, "Storage", SCRIPTS, logger);
  }

  #eval(script: keyof typeof SCRIPTS, args: string[]): Promise<unknown> {
    return this.#scripts.run(script, args);
  }

  /** ARGV of the publish part of a script: entry, max length, origin, echo user. */
  #routeArgs(delivery: Delivery | undefined): string[] {
    if (!this.publishes || !delivery) return ["", "", "", ""];
    return [
      deliveryEntry(delivery),
      this.#streamLength,
      delivery.origin?.instance ?? "",
      delivery.echoTo ?? "",
    ];
  }

  /**
   * Resolves once `written` (a script call just sent) has resolved and, with
   * `waitReplicas`, once enough replicas confirm it. One `WAIT`, sent after
   * every write of this turn of the event loop on the same connection,
   * covers them all (Redis answers it once the replicas acknowledge
   * everything written before it).
   */
  async #replicated<T>(written: Promise<T>): Promise<T> {
    if (!this.#wait) return await written;
    if (!this.#waiting) {
      const { replicas, timeoutMs } = this.#wait;
      const waiting = Promise.resolve().then(async () => {
        this.#waiting = undefined;
        const copies = await guard(
          "Storage",
          () => this.#client.sendCommand<number>(["WAIT", String(replicas), String(timeoutMs)]),
        );
        if (copies < replicas) {
          throw new BackendUnavailableError(
            `Storage unavailable: copied to ${copies} of ${replicas} Redis replicas in time, try again`,
          );
        }
      });
      this.#waiting = waiting;
    }
    const waited = this.#waiting!;
    const [result] = await Promise.all([written, waited]);
    return result;
  }

  async accept(message: NewMessage, delivery?: Delivery): Promise<AcceptResult> {
    const reply = await this.#replicated(this.#eval("ACCEPT", [
      message.sender,
      message.id,
      String(message.type),
      message.text,
      String(message.acceptedAt),
      JSON.stringify(message.recipients),
      String(this.#maxPerUser),
      ...this.#routeArgs(delivery),
      ...message.recipients,
    ])) as (number | string)[];
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
    await this.#beforeReplay?.(userId);
    const reply = await this.#eval("UNACKNOWLEDGED", [userId]) as string[][];
    return reply.map(([sender, id, type, text, at]) => ({
      sender,
      id,
      type: Number(type),
      text,
      acceptedAt: Number(at),
    }));
  }

  /**
   * Marks are batched: those made in one turn of the event loop (e.g. for
   * every entry of one broker read) go to Redis as one script call after it.
   * A mark only moves `pending` to `delivered`, so its place among other
   * calls does not matter.
   */
  markDelivered(userId: string, keys: MessageKey[]): Promise<void> {
    if (keys.length === 0) return Promise.resolve();
    for (const key of keys) {
      this.#marks.push(userId, key.sender, key.id, (key as SequencedKey).seq ?? "");
    }
    if (!this.#marked) {
      this.#marked = Promise.withResolvers<void>();
      queueMicrotask(() => this.#flushMarks());
    }
    return this.#marked.promise;
  }

  /** One message delivered to several users: their marks join the same batch. */
  markDeliveredTo(key: MessageKey, userIds: readonly string[]): Promise<void> {
    if (userIds.length === 0) return Promise.resolve();
    const seq = (key as SequencedKey).seq ?? "";
    for (const userId of userIds) this.#marks.push(userId, key.sender, key.id, seq);
    if (!this.#marked) {
      this.#marked = Promise.withResolvers<void>();
      queueMicrotask(() => this.#flushMarks());
    }
    return this.#marked.promise;
  }

  async #flushMarks(): Promise<void> {
    const marks = this.#marks;
    const done = this.#marked!;
    this.#marks = [];
    this.#marked = undefined;
    try {
      const calls = [];
      for (let i = 0; i < marks.length; i += MARKS_PER_CALL * 4) {
        calls.push(this.#eval("MARK_DELIVERED", marks.slice(i, i + MARKS_PER_CALL * 4)));
      }
      await Promise.all(calls);
      done.resolve();
    } catch (error) {
      done.reject(error);
    }
  }

  async acknowledge(userId: string, key: MessageKey, delivery?: Delivery): Promise<boolean> {
    return await this.#replicated(this.#eval("ACKNOWLEDGE", [
      userId,
      key.sender,
      key.id,
      ...this.#routeArgs(delivery),
      ...(this.publishes && delivery ? delivery.users : []),
    ])) === 1;
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
      const [count, unacked, popped] = await this.#eval("SWEEP", [
        cutoff,
        String(this.#sweepBatch),
      ]) as [number, number, number];
      dropped += count;
      unacknowledged += unacked;
      // Fewer than a batch looked at: the rest of the list is within the retention period.
      if (popped < this.#sweepBatch) break;
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
