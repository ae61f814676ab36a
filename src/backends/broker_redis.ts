/**
 * Redis {@link Broker}: one stream per instance (`im:{inst:<id>}:deliveries`).
 * A publish looks up, in the shared presence, which instances hold a
 * connection of each recipient (and of the sender, for its other devices),
 * and appends the delivery to those instances' streams only
 * (`route_redis.ts`; the Redis store does the same inside its accept and
 * acknowledge scripts, so a stored message is stored and routed in one
 * step). Each instance reads its own stream (`XREAD BLOCK`) and hands what it
 * reads to its hub. So an instance reads about one entry per frame it
 * delivers, however many instances there are.
 *
 * Kicks are rare and must reach a connection whose presence entry may not be
 * written yet (two registers of one client racing on two instances), so they
 * go to every live instance's stream, as before routing.
 *
 * The guarantees and why they hold (docs/CLUSTER.md has the full argument):
 * - Order: entries one instance appends reach each target stream in the
 *   order published (on a Redis Cluster, `Outbox` keeps that order across
 *   masters); a reader reads its stream in order.
 * - No gap at reconnects: a reader remembers the last entry id it handled and
 *   resumes after it when its connection comes back.
 * - No loss at a register elsewhere: the presence entry of a new connection is
 *   written before its replay reads the store (`RedisStore` waits for the
 *   presence add in flight), and a stored message is stored and looked up in
 *   presence by one script; so that script either sees the new entry (and the
 *   entry goes to that instance's stream) or ran before it, and then before
 *   the replay's read, which finds the message.
 *
 * Each instance renews its own entry in `im:broker:instances` (a sorted set of
 * expiries, Redis clock) from a timer; the renewal of any instance removes
 * the entries and deletes the streams of instances whose expiry passed. An
 * instance creates its stream when it subscribes (and again if it finds
 * itself expired); appends never create one (`NOMKSTREAM`), so a stopped
 * instance's stream stays gone. Streams are capped (`MAXLEN ~`) and trimmed
 * up to what their reader has handled, so a stream holds at most what its
 * reader has not read.
 *
 * @module
 */
import type { Broker, BrokerHandler, Delivery, Kick } from "../core/broker.ts";
import type { Logger } from "../log.ts";
import {
  guard,
  KEY_PREFIX,
  linkOf,
  type RedisClient,
  type RedisLink,
  RedisScripts,
} from "./redis.ts";
import { deliveryStream, RedisLayout } from "./redis_layout.ts";
import { Router, type SequencedKey } from "./route_redis.ts";

export { deliveryStream };

/** Sorted set: live instance id → expiry (ms, Redis clock). */
const BROKER_INSTANCES = `${KEY_PREFIX}broker:instances`;

type Envelope = ["d", Delivery] | ["k", Kick];

const NOW = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`;

/**
 * KEYS[1]: the instances set. ARGV: instance, ttl ms. Renews the instance's
 * entry and removes those that expired. Returns {1 when the entry had
 * expired or was gone, else 0; the expired instances (their streams are
 * deleted by the caller)}.
 */
const RENEW = NOW + `
local now = now_ms()
local dead = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE')) do
  if id ~= ARGV[1] then
    redis.call('ZREM', KEYS[1], id)
    dead[#dead + 1] = id
  end
end
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local lost = 0
if not expiry or tonumber(expiry) <= now then lost = 1 end
return {lost, dead}
`;

/** KEYS[1]: the instances set. Returns the live instances. */
const LIVE = NOW + `
return redis.call('ZRANGE', KEYS[1], '(' .. now_ms(), '+inf', 'BYSCORE')
`;

const SCRIPTS = { RENEW, LIVE };

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
  /** Key layout; by default the writer's ({@link RedisLayout.of}). */
  layout?: RedisLayout;
  /** Deliveries held per stream while its master is unreachable. @default 10000 */
  maxHeld?: number;
}

type StreamReply = [string, [string, string[]][]][] | null;

/**
 * Appends on one connection and reads on another (a blocked `XREAD` holds its
 * connection).
 */
export class RedisBroker implements Broker {
  #writer: RedisLink;
  #reader: RedisLink;
  #scripts: RedisScripts<keyof typeof SCRIPTS>;
  #router: Router;
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

  /** Takes ownership of both connections (closed by {@link close}). */
  constructor(
    writer: RedisClient | RedisLink,
    reader: RedisClient | RedisLink,
    options: RedisBrokerOptions,
  ) {
    this.#writer = linkOf(writer);
    this.#reader = linkOf(reader);
    this.#logger = options.logger;
    const maxLength = options.maxLength ?? 100_000;
    this.#maxLength = String(maxLength);
    this.#batch = String(options.batch ?? 1000);
    this.#ttlMs = options.ttlMs ?? 15_000;
    this.#renewMs = options.renewMs ?? Math.max(1, Math.floor(this.#ttlMs / 3));
    this.#scripts = new RedisScripts(this.#writer, "Broker", SCRIPTS, options.logger);
    const layout = options.layout ?? RedisLayout.of(this.#writer);
    this.#router = new Router(this.#writer, layout, maxLength, options.logger, options.maxHeld);
    this.#reader.onReady(() => this.#wake?.());
    // Back after an outage: be a delivery target again at once rather than at the next timer.
    this.#writer.onReady(() => {
      if (this.#timer !== undefined && !this.#closing) this.#renewSoon();
    });
  }

  publish(delivery: Delivery): Promise<void> {
    return this.#router.publish(delivery);
  }

  /** Appends the kick to the stream of every live instance. */
  async kick(kick: Kick): Promise<void> {
    const live = await this.#scripts.run("LIVE", BROKER_INSTANCES, []) as string[];
    const text = JSON.stringify(["k", kick]);
    await Promise.all(live.map((instance) => this.#append(instance, ["e", text])));
  }

  /** Appends an entry to an instance's stream, if it exists. */
  #append(instance: string, fields: string[], create = false): Promise<unknown> {
    const stream = deliveryStream(instance);
    const args = ["XADD", stream, "MAXLEN", "~", this.#maxLength, "*", ...fields];
    if (!create) args.splice(2, 0, "NOMKSTREAM");
    return guard("Broker", () => this.#writer.send(stream, args));
  }

  async subscribe(handler: BrokerHandler): Promise<void> {
    this.#handler = handler;
    if (this.#reading) return;
    const instance = handler.instance;
    if (instance === undefined) throw new Error("The Redis broker needs the instance id");
    this.#instance = instance;
    this.#stream = deliveryStream(instance);
    // The stream exists from now on (instance ids are random per start: it is new), then
    // this is a target: publishes that see this instance in presence reach its stream.
    await this.#append(instance, ["h", "1"], true);
    await this.#renew();
    this.#timer = setInterval(() => this.#renewSoon(), this.#renewMs);
    this.#reading = this.#read();
  }

  /** Renews unless a renewal is in flight. */
  #renewSoon(): void {
    this.#renewing ??= this.#renew().catch((error) =>
      this.#logger.debug("Broker renewal failed", { error })
    ).finally(() => this.#renewing = undefined);
  }

  async #renew(): Promise<void> {
    const [lost, dead] = await this.#scripts.run("RENEW", BROKER_INSTANCES, [
      this.#instance!,
      String(this.#ttlMs),
    ]) as [number, string[]];
    if (lost === 1 && this.#reading) {
      // Another instance may have deleted our stream meanwhile: make sure it exists.
      await this.#append(this.#instance!, ["h", "1"], true);
      this.#logger.warn("This instance had expired as a delivery target: renewed");
    }
    await Promise.all(dead.map((instance) => {
      const stream = deliveryStream(instance);
      return guard("Broker", () => this.#writer.send(stream, ["DEL", stream]));
    }));
    if (this.#last !== this.#trimmed) {
      const upTo = this.#last;
      const stream = this.#stream!;
      // Entries up to the last one handled are no longer needed by anyone.
      await guard(
        "Broker",
        () => this.#writer.send(stream, ["XTRIM", stream, "MINID", "~", upTo]),
      );
      this.#trimmed = upTo;
    }
  }

  async #read(): Promise<void> {
    while (!this.#closing) {
      let reply: StreamReply;
      try {
        reply = await this.#reader.send<StreamReply>(this.#stream!, [
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
        // Entries are ["e", entry] with, for a stored message, "t" (its frame text, when the
        // entry leaves it out), "s" (seq) and "b" (bytes); the stream's first is ["h", "1"].
        if (fields[0] !== "e") continue;
        let frame: string | undefined;
        let seq: string | undefined;
        let bytes: string | undefined;
        for (let i = 2; i < fields.length; i += 2) {
          const value = fields[i + 1];
          if (fields[i] === "t") frame = value;
          else if (fields[i] === "s") seq = value;
          else if (fields[i] === "b") bytes = value;
        }
        this.#receive(fields[1], seq, bytes, frame);
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

  /**
   * Hands an entry to the handler; `seq` and `bytes` are the stored
   * message's, when the store routed it.
   */
  #receive(text: string | undefined, seq?: string, bytes?: string, frame?: string): void {
    const handler = this.#handler;
    if (!handler || text === undefined) return;
    try {
      const [kind, body] = JSON.parse(text) as Envelope;
      if (kind === "d") {
        const delivery = body as Delivery;
        if (frame !== undefined && delivery.text === undefined) delivery.text = frame;
        // The delivery mark (RedisStore.markDelivered) then finds the message without a lookup.
        if (seq !== undefined && delivery.stored) {
          const stored = delivery.stored as SequencedKey;
          stored.seq = seq;
          if (bytes) stored.bytes = bytes;
        }
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
    const dropped = this.#reader.drop();
    this.#wake?.();
    await this.#reading;
    if (this.#instance !== undefined) {
      const instance = this.#instance;
      const stream = deliveryStream(instance);
      await Promise.all([
        this.#writer.send(BROKER_INSTANCES, ["ZREM", BROKER_INSTANCES, instance]),
        this.#writer.send(stream, ["DEL", stream]),
      ]).catch((error) =>
        this.#logger.debug("Broker cleanup failed: the stream expires with the renewals", {
          error,
        })
      );
    }
    this.#router.outbox.close();
    await Promise.all([dropped, this.#writer.close()]);
  }
}
