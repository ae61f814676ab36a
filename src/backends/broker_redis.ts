/**
 * Redis {@link Broker}: every delivery and kick goes through one pub/sub
 * channel that every instance subscribes to; each instance hands what it gets
 * to its own hub, which knows whether it holds connections of those users.
 *
 * Why one channel: Redis delivers the messages of one publishing connection to
 * each subscriber in the order they were published, so the Broker's ordering
 * guarantee holds with no sequence numbers, and no presence lookup can race
 * with a register on another instance. The price is that each instance reads
 * every delivery, which is fine for a handful of instances (see docs/CLUSTER.md).
 *
 * @module
 */
import type { Broker, BrokerHandler, Delivery, Kick } from "../core/broker.ts";
import type { Logger } from "../log.ts";
import { closeRedis, guard, KEY_PREFIX, type RedisClient } from "./redis.ts";

/** The channel every instance publishes to and subscribes to. */
export const BROKER_CHANNEL = `${KEY_PREFIX}broker`;

type Envelope = ["d", Delivery] | ["k", Kick];

/** Publishes on one connection, listens on another (a subscribed connection can do nothing else). */
export class RedisBroker implements Broker {
  #publisher: RedisClient;
  #subscriber: RedisClient;
  #logger: Logger;
  #handler?: BrokerHandler;

  /** Takes ownership of both clients (closed by {@link close}). */
  constructor(publisher: RedisClient, subscriber: RedisClient, logger: Logger) {
    this.#publisher = publisher;
    this.#subscriber = subscriber;
    this.#logger = logger;
  }

  publish(delivery: Delivery): Promise<void> {
    return this.#send(["d", delivery]);
  }

  kick(kick: Kick): Promise<void> {
    return this.#send(["k", kick]);
  }

  async #send(envelope: Envelope): Promise<void> {
    const text = JSON.stringify(envelope);
    await guard("Broker", () => this.#publisher.publish(BROKER_CHANNEL, text));
  }

  async subscribe(handler: BrokerHandler): Promise<void> {
    const first = this.#handler === undefined;
    this.#handler = handler;
    if (!first) return;
    await guard(
      "Broker",
      () => this.#subscriber.subscribe(BROKER_CHANNEL, (text) => this.#receive(text)),
    );
  }

  #receive(text: string): void {
    const handler = this.#handler;
    if (!handler) return;
    try {
      const [kind, body] = JSON.parse(text) as Envelope;
      if (kind === "d") handler.deliver(body as Delivery);
      else if (kind === "k") handler.kick(body as Kick);
    } catch (error) {
      this.#logger.error("Broker message failed", { error });
    }
  }

  async close(): Promise<void> {
    this.#handler = undefined;
    await Promise.all([closeRedis(this.#subscriber), closeRedis(this.#publisher)]);
  }
}
