/**
 * In-memory {@link Broker} for a single instance: delivers at once.
 *
 * @module
 */
import type { Broker, BrokerHandler, Delivery, Kick } from "../core/broker.ts";

const NOBODY: BrokerHandler = { instance: "", deliver() {}, kick() {} };

/** Hands everything straight to this instance's handler. */
export class MemoryBroker implements Broker {
  #handler = NOBODY;

  publish(delivery: Delivery): Promise<void> {
    this.#handler.deliver(delivery);
    return Promise.resolve();
  }

  kick(kick: Kick): Promise<void> {
    this.#handler.kick(kick);
    return Promise.resolve();
  }

  subscribe(handler: BrokerHandler): Promise<void> {
    this.#handler = handler;
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.#handler = NOBODY;
    return Promise.resolve();
  }
}
