/**
 * Redis {@link Broker}: every delivery and kick is appended to one Redis
 * stream that every instance reads (`XADD` / `XREAD BLOCK`); each instance
 * hands what it reads to its own hub, which knows whether it holds
 * connections of those users.
 *
 * Why one stream rather than pub/sub or per-instance channels:
 * - Order: the entries one instance appends over its one connection are in
 *   the stream in the order published, and every reader reads them in that
 *   order, so the Broker's ordering guarantee holds with no sequence numbers.
 * - No gap at reconnects: a reader remembers the last entry id it handled and
 *   resumes after it when its connection comes back, so frames published
 *   while one instance's reader was reconnecting still reach it, once (Redis
 *   pub/sub would drop them silently).
 * - No presence lookup in the send path, so no race with a register on
 *   another instance. The price: every instance reads every delivery, which is
 *   fine for a handful of instances (see docs/CLUSTER.md).
 *
 * The stream is capped (`MAXLEN ~`), so a reader away for longer than the cap
 * covers misses live frames; stored messages still come at the next register.
 *
 * @module
 */
import type { Broker, BrokerHandler, Delivery, Kick } from "../core/broker.ts";
import type { Logger } from "../log.ts";
import { closeRedis, dropRedis, guard, KEY_PREFIX, type RedisClient } from "./redis.ts";

/** The stream every instance appends to and reads. */
export const BROKER_STREAM = `${KEY_PREFIX}broker`;

type Envelope = ["d", Delivery] | ["k", Kick];

/** Options of {@link RedisBroker}. */
export interface RedisBrokerOptions {
  /** Where read failures are logged. */
  logger: Logger;
  /** Entries kept in the stream (approximately). @default 100000 */
  maxLength?: number;
  /** Entries read per `XREAD`. @default 1000 */
  batch?: number;
}

type StreamReply = [string, [string, string[]][]][] | null;

/**
 * Appends on one connection and reads on another (a blocked `XREAD` holds its
 * connection).
 */
export class RedisBroker implements Broker {
  #writer: RedisClient;
  #reader: RedisClient;
  #logger: Logger;
  #maxLength: string;
  #batch: string;
  #handler?: BrokerHandler;
  #reading?: Promise<void>;
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
    reader.on("ready", () => this.#wake?.());
  }

  publish(delivery: Delivery): Promise<void> {
    return this.#append(["d", delivery]);
  }

  kick(kick: Kick): Promise<void> {
    return this.#append(["k", kick]);
  }

  async #append(envelope: Envelope): Promise<void> {
    const text = JSON.stringify(envelope);
    await guard("Broker", () =>
      this.#writer.sendCommand([
        "XADD",
        BROKER_STREAM,
        "MAXLEN",
        "~",
        this.#maxLength,
        "*",
        "e",
        text,
      ]));
  }

  async subscribe(handler: BrokerHandler): Promise<void> {
    this.#handler = handler;
    if (this.#reading) return;
    // Start after the newest entry: what was published before this instance started is not ours.
    const last = await guard("Broker", () =>
      this.#reader.sendCommand<[string, string[]][]>([
        "XREVRANGE",
        BROKER_STREAM,
        "+",
        "-",
        "COUNT",
        "1",
      ]));
    this.#reading = this.#read(last[0]?.[0] ?? "0-0");
  }

  async #read(after: string): Promise<void> {
    let last = after;
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
          BROKER_STREAM,
          last,
        ]);
      } catch (error) {
        if (this.#closing) break;
        this.#logger.debug("Broker read failed: waiting for Redis", { error });
        await this.#waitForReader();
        continue;
      }
      for (const [id, fields] of reply?.[0]?.[1] ?? []) {
        last = id;
        this.#receive(fields[1]);
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

  #receive(text: string | undefined): void {
    const handler = this.#handler;
    if (!handler || text === undefined) return;
    try {
      const [kind, body] = JSON.parse(text) as Envelope;
      if (kind === "d") handler.deliver(body as Delivery);
      else if (kind === "k") handler.kick(body as Kick);
    } catch (error) {
      this.#logger.error("Broker entry failed", { error });
    }
  }

  async close(): Promise<void> {
    this.#closing = true;
    this.#handler = undefined;
    // A blocked XREAD never ends by itself: drop the reader's connection.
    const dropped = dropRedis(this.#reader);
    this.#wake?.();
    await this.#reading;
    await Promise.all([dropped, closeRedis(this.#writer)]);
  }
}
