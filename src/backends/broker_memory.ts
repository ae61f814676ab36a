/**
 * In-memory {@link Broker} for a single instance: delivers at once.
 *
 * @module
 */
import type { Broker, Delivery } from "../core/broker.ts";

/** Hands every delivery straight to this instance's handler. */
export class MemoryBroker implements Broker {
  #handler: (delivery: Delivery) => void = () => {};

  publish(delivery: Delivery): Promise<void> {
    this.#handler(delivery);
    return Promise.resolve();
  }

  subscribe(handler: (delivery: Delivery) => void): Promise<void> {
    this.#handler = handler;
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.#handler = () => {};
    return Promise.resolve();
  }
}
