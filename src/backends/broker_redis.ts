/**
 * Redis {@link Broker}: one stream per instance (`im:{inst:<id>}:deliveries`).
 * A publish looks up, in the shared presence, which instances hold a
 * connection of each recipient (and of the sender, for its other devices),
 * and appends the delivery to those instances' streams only, in one Lua
 * script ({@link ROUTE_LUA}; the Redis store runs it inside its accept and
 * acknowledge scripts, so a stored message is stored and routed in one step).
 * Each instance reads its own stream (`XREAD BLOCK`) and hands what it reads
 * to its hub. So an instance reads about one entry per frame it delivers,
 * however many instances there are.
 *
 * Kicks are rare and must reach a connection whose presence entry may not be
 * written yet (two registers of one client racing on two instances), so they
 * go to every live instance's stream, as before routing.
 *
 * The guarantees and why they hold (docs/CLUSTER.md has the full argument):
 * - Order: the entries one instance appends over its one connection are in
 *   each target stream in the order published; a reader reads its stream in
 *   order.
 * - No gap at reconnects: a reader remembers the last entry id it handled and
 *   resumes after it when its connection comes back.
 * - No loss at a register elsewhere: the presence entry of a new connection is
 *   written before its replay reads the store (`RedisStore` waits for the
 *   presence add in flight), and a stored message is stored and routed by one
 *   script; so that script either sees the new entry (and appends to that
 *   instance's stream) or ran before it, and then before the replay's read,
 *   which finds the message.
 *
 * Each instance renews its own entry in `im:broker:instances` (a sorted set of
 * expiries, Redis clock) from a timer; the renewal of any instance removes
 * the entries and deletes the streams of instances whose expiry passed, and a
 * publish skips instances without an entry. Streams are capped (`MAXLEN ~`) and trimmed up to what their
 * reader has handled, so a stream holds at most what its reader has not read.
 *
 * @module
 */
import type { Broker, BrokerHandler, Delivery, Kick } from "../core/broker.ts";
import type { MessageKey } from "../core/store.ts";
import type { Logger } from "../log.ts";
import { PRESENCE_PREFIX } from "./presence_redis.ts";
import {
  closeRedis,
  dropRedis,
  guard,
  KEY_PREFIX,
  type RedisClient,
  RedisScripts,
} from "./redis.ts";

/** The delivery stream of an instance. */
export const deliveryStream = (instance: string): string =>
  `${KEY_PREFIX}{inst:${instance}}:deliveries`;

/** Sorted set: live instance id → expiry (ms, Redis clock). */
export const BROKER_INSTANCES = `${KEY_PREFIX}broker:instances`;

type Envelope = ["d", Delivery] | ["k", Kick];

/** A stored message's key as read from a stream entry the store routed: with its sequence. */
export type SequencedKey = MessageKey & { seq?: string };

/** The text of a stream entry carrying `delivery`. */
export const deliveryEntry = (delivery: Delivery): string => JSON.stringify(["d", delivery]);

const PRELUDE = `
local PREFIX = ${JSON.stringify(KEY_PREFIX)}
local INSTANCES = ${JSON.stringify(BROKER_INSTANCES)}
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function stream(instance) return PREFIX .. '{inst:' .. instance .. '}:deliveries' end
`;

/**
 * Lua: `route(text, max, origin, echo, users, first, seq)` appends the entry
 * `text` to the stream of every instance (still in `im:broker:instances`)
 * that holds a presence entry of `users[first..]`, or of the `echo` user
 * (the sender's other devices; '' for none). The origin's instance is
 * skipped for the echo user when the echo user has only one entry there: the
 * origin connection itself. `seq` (or nil) is the stored message's sequence,
 * carried in the entry so that the delivery mark needs no lookup. Returns
 * the number of streams appended to. Shared with the store's scripts, which
 * accept (or acknowledge) and route in one step.
 */
export const ROUTE_LUA = `
local ROUTE_PREFIX = ${JSON.stringify(KEY_PREFIX)}
local ROUTE_INSTANCES = ${JSON.stringify(BROKER_INSTANCES)}
local ROUTE_PRESENCE = ${JSON.stringify(PRESENCE_PREFIX + "u:")}
local function route_holders(user)
  local counts = {}
  for _, field in ipairs(redis.call('HKEYS', ROUTE_PRESENCE .. user)) do
    local cut = string.find(field, '\\0', 1, true)
    if cut then
      local instance = string.sub(field, 1, cut - 1)
      counts[instance] = (counts[instance] or 0) + 1
    end
  end
  return counts
end
local function route(text, max, origin, echo, users, first, seq)
  local targets = {}
  local recipient = {}
  for i = first, #users do
    recipient[users[i]] = true
    for instance in pairs(route_holders(users[i])) do targets[instance] = true end
  end
  -- A sender with one entry has no other device: that entry is the sending connection's.
  if echo ~= '' and not recipient[echo] and (origin == '' or
      redis.call('HLEN', ROUTE_PRESENCE .. echo) > 1) then
    for instance, n in pairs(route_holders(echo)) do
      if instance ~= origin or n > 1 then targets[instance] = true end
    end
  end
  local sent = 0
  for instance in pairs(targets) do
    -- Instances that stopped leave the set at the next renewal of any instance.
    if redis.call('ZSCORE', ROUTE_INSTANCES, instance) then
      local key = ROUTE_PREFIX .. '{inst:' .. instance .. '}:deliveries'
      if seq then
        redis.call('XADD', key, 'MAXLEN', '~', max, '*', 'e', text, 's', seq)
      else
        redis.call('XADD', key, 'MAXLEN', '~', max, '*', 'e', text)
      end
      sent = sent + 1
    end
  end
  return sent
end
`;

/** ARGV: entry text, max length, origin instance ('' if none), echo user ('' if none), users…. */
const PUBLISH = ROUTE_LUA + `
return route(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV, 5, nil)
`;

/** ARGV: entry text, max length. Appends to the stream of every live instance. */
const KICK = PRELUDE + `
local sent = 0
for _, instance in ipairs(redis.call('ZRANGE', INSTANCES, '(' .. now_ms(), '+inf', 'BYSCORE')) do
  redis.call('XADD', stream(instance), 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[1])
  sent = sent + 1
end
return sent
`;

/**
 * ARGV: instance, ttl ms. Renews the instance's entry; deletes the entries and
 * streams of instances that expired. Returns 1 when the entry had expired.
 */
const RENEW = PRELUDE + `
local now = now_ms()
for _, dead in ipairs(redis.call('ZRANGE', INSTANCES, '-inf', now, 'BYSCORE')) do
  if dead ~= ARGV[1] then
    redis.call('DEL', stream(dead))
    redis.call('ZREM', INSTANCES, dead)
  end
end
return redis.call('ZADD', INSTANCES, now + tonumber(ARGV[2]), ARGV[1])
`;

/** ARGV: instance. Forgets an instance that stops (its stream and entry). */
const LEAVE = PRELUDE + `
redis.call('DEL', stream(ARGV[1]))
redis.call('ZREM', INSTANCES, ARGV[1])
return 1
`;

const SCRIPTS = { PUBLISH, KICK, RENEW, LEAVE };

/** Options of {@link RedisBroker}. */
export interface RedisBrokerOptions {
  /** Where read failures are logged. */
  logger: Logger;
  /** Entries kept in an instance's stream (approximately). @default 100000 */
  maxLength?: number;
  /** Entries read per `XREAD`. @default 1000 */
  batch?: number;
  /** Milliseconds an instance stays a delivery target without renewing. @default 15000 */
  ttlMs?: number;
  /** Milliseconds between renewals (and trims of the read part of the stream). @default ttlMs / 3 */
  renewMs?: number;
}

type StreamReply = [string, [string, string[]][]][] | null;

/**
 * Appends on one connection and reads on another (a blocked `XREAD` holds its
 * connection).
 */
export class RedisBroker implements Broker {
  #writer: RedisClient;
  #reader: RedisClient;
  #scripts: RedisScripts<keyof typeof SCRIPTS>;
  #logger: Logger;
  #maxLength: string;
  #batch: string;
  #ttlMs: number;
  #renewMs: number;
  #handler?: BrokerHandler;
  #instance?: string;
  #stream?: string;
  #reading?: Promise<void>;
  #timer?: ReturnType<typeof setInterval>;
  #renewing?: Promise<void>;
  /** Id of the last entry handled, and of the last one trimmed up to. */
  #last = "0-0";
  #trimmed = "0-0";
  #closing = false;
  /** Wakes the read loop waiting for its connection to come back. */
  #wake?: () => void;

  /** Takes ownership of both clients (closed by {@link close}). */
  constructor(writer: RedisClient, reader: RedisClient, options: RedisBrokerOptions) {
    this.#writer = writer;
    this.#reader = reader;
    this.#logger = options.logger;
    this.#maxLength = String(options.maxLength ?? 100_000);
    this.#batch = String(options.batch ?? 1000);
    this.#ttlMs = options.ttlMs ?? 15_000;
    this.#renewMs = options.renewMs ?? Math.max(1, Math.floor(this.#ttlMs / 3));
    this.#scripts = new RedisScripts(writer, "Broker", SCRIPTS, options.logger);
    reader.on("ready", () => this.#wake?.());
    // Back after an outage: be a delivery target again at once rather than at the next timer.
    writer.on("ready", () => {
      if (this.#timer !== undefined && !this.#closing) this.#renewSoon();
    });
  }

  async publish(delivery: Delivery): Promise<void> {
    await this.#scripts.run("PUBLISH", [
      deliveryEntry(delivery),
      this.#maxLength,
      delivery.origin?.instance ?? "",
      delivery.echoTo ?? "",
      ...delivery.users,
    ]);
  }

  async kick(kick: Kick): Promise<void> {
    await this.#scripts.run("KICK", [JSON.stringify(["k", kick]), this.#maxLength]);
  }

  async subscribe(handler: BrokerHandler): Promise<void> {
    this.#handler = handler;
    if (this.#reading) return;
    const instance = handler.instance;
    if (instance === undefined) throw new Error("The Redis broker needs the instance id");
    this.#instance = instance;
    this.#stream = deliveryStream(instance);
    // A target from now on: publishes that see this instance in presence reach its stream.
    await this.#renew();
    this.#timer = setInterval(() => this.#renewSoon(), this.#renewMs);
    // The stream is new (instance ids are random per start): read it from its beginning.
    this.#reading = this.#read();
  }

  /** Renews unless a renewal is in flight. */
  #renewSoon(): void {
    this.#renewing ??= this.#renew().catch((error) =>
      this.#logger.debug("Broker renewal failed", { error })
    ).finally(() => this.#renewing = undefined);
  }

  async #renew(): Promise<void> {
    const lost = await this.#scripts.run("RENEW", [this.#instance!, String(this.#ttlMs)]);
    if (lost === 1 && this.#reading) {
      this.#logger.warn("This instance had expired as a delivery target: renewed");
    }
    if (this.#last !== this.#trimmed) {
      const upTo = this.#last;
      // Entries up to the last one handled are no longer needed by anyone.
      await guard(
        "Broker",
        () => this.#writer.sendCommand(["XTRIM", this.#stream!, "MINID", "~", upTo]),
      );
      this.#trimmed = upTo;
    }
  }

  async #read(): Promise<void> {
    while (!this.#closing) {
      let reply: StreamReply;
      try {
        reply = await this.#reader.sendCommand<StreamReply>([
          "XREAD",
          "COUNT",
          this.#batch,
          "BLOCK",
          "0",
          "STREAMS",
          this.#stream!,
          this.#last,
        ]);
      } catch (error) {
        if (this.#closing) break;
        this.#logger.debug("Broker read failed: waiting for Redis", { error });
        await this.#waitForReader();
        continue;
      }
      for (const [id, fields] of reply?.[0]?.[1] ?? []) {
        this.#last = id;
        this.#receive(fields[1], fields[3]);
      }
    }
  }

  /** Resolves when the reader's connection is ready again, or at close. */
  async #waitForReader(): Promise<void> {
    if (this.#closing) return;
    if (this.#reader.isReady) {
      // Connected but refused (e.g. LOADING after a restart): try again shortly.
      await new Promise((resolve) => setTimeout(resolve, 100));
      return;
    }
    const woken = Promise.withResolvers<void>();
    this.#wake = woken.resolve;
    // The "ready" event may have fired between the failure and now.
    if (this.#reader.isReady) woken.resolve();
    await woken.promise;
    this.#wake = undefined;
  }

  /** Hands an entry to the handler; `seq` is the stored message's, when the store routed it. */
  #receive(text: string | undefined, seq: string | undefined): void {
    const handler = this.#handler;
    if (!handler || text === undefined) return;
    try {
      const [kind, body] = JSON.parse(text) as Envelope;
      if (kind === "d") {
        const delivery = body as Delivery;
        // The delivery mark (RedisStore.markDelivered) then finds the message without a lookup.
        if (seq !== undefined && delivery.stored) (delivery.stored as SequencedKey).seq = seq;
        handler.deliver(delivery);
      } else if (kind === "k") handler.kick(body as Kick);
    } catch (error) {
      this.#logger.error("Broker entry failed", { error });
    }
  }

  async close(): Promise<void> {
    this.#closing = true;
    this.#handler = undefined;
    clearInterval(this.#timer);
    await this.#renewing;
    // A blocked XREAD never ends by itself: drop the reader's connection.
    const dropped = dropRedis(this.#reader);
    this.#wake?.();
    await this.#reading;
    if (this.#instance !== undefined) {
      await this.#scripts.run("LEAVE", [this.#instance]).catch((error) =>
        this.#logger.debug("Broker cleanup failed: the stream expires with the renewals", {
          error,
        })
      );
    }
    await Promise.all([dropped, closeRedis(this.#writer)]);
  }
}
