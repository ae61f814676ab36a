/**
 * Delivery: accepts messages into the store, routes them through the broker to
 * the hub's connections, replays stored messages at register, and records
 * receipts. Every path that sends a stored frame to users goes through here
 * (client frames, the business API and plugins alike).
 *
 * @module
 */
import type { Broker, Delivery as Routed, Kick } from "./broker.ts";
import type { Connection, Hub } from "./hub.ts";
import type { MessageKey, MessageStore } from "./store.ts";
import { SYSTEM } from "../protocol/codes.ts";
import type { Logger } from "../log.ts";

/** A message to accept and deliver. */
export interface Outgoing {
  sender: string;
  id: string;
  type: number;
  /** Distinct recipient userIds. */
  recipients: string[];
  /** The frame's JSON text as delivered. */
  text: string;
  /** Keep it for offline recipients and redelivery (false: live only, e.g. typing). */
  store?: boolean;
}

/** Hooks that observe delivery, for metrics and webhooks. */
export interface DeliveryObserver {
  /** A stored message found some recipients without a connection anywhere known here. */
  storedForOffline?(userIds: string[], message: Outgoing): void;
  /**
   * Frames sent to connections on this instance; `acceptedAt` (ms since the
   * epoch) is when the message was accepted, absent for replays.
   */
  sent?(count: number, acceptedAt?: number): void;
}

const keyOf = (key: MessageKey) => `${key.sender}\u0000${key.id}`;

/** Options of {@link DeliveryService}. */
export interface DeliveryOptions {
  store: MessageStore;
  broker: Broker;
  hub: Hub;
  /** This instance's name in connection references. */
  instanceId: string;
  logger: Logger;
  observer?: DeliveryObserver;
}

/** The one delivery path of the server. */
export class DeliveryService {
  #store: MessageStore;
  #broker: Broker;
  #hub: Hub;
  #instance: string;
  #logger: Logger;
  #observer: DeliveryObserver;
  /** Sends and receipts in progress, awaited by {@link idle}. */
  #inflight = new Set<Promise<unknown>>();

  constructor(options: DeliveryOptions) {
    this.#store = options.store;
    this.#broker = options.broker;
    this.#hub = options.hub;
    this.#instance = options.instanceId;
    this.#logger = options.logger;
    this.#observer = options.observer ?? {};
  }

  /** Subscribes this instance to the broker. */
  start(): Promise<void> {
    return this.#broker.subscribe({
      deliver: (delivery) => this.#deliverHere(delivery),
      kick: (kick) => this.#kickHere(kick),
    });
  }

  /** A connection reference that other instances understand. */
  ref(conn: Connection): string {
    return `${this.#instance}/${conn.id}`;
  }

  /**
   * Accepts a message (stored first, unless `store` is false) and routes it to
   * its recipients and to the sender's other connections. Resolves with
   * `duplicate: true`, delivering nothing, when the sender already had a
   * message with this id accepted.
   */
  send(message: Outgoing, origin?: Connection): Promise<{ duplicate: boolean }> {
    return this.#track(this.#send(message, origin));
  }

  /** Resolves once every send and receipt in progress has settled (for shutdown). */
  async idle(): Promise<void> {
    while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight]);
  }

  #track<T>(work: Promise<T>): Promise<T> {
    this.#inflight.add(work);
    const forget = () => this.#inflight.delete(work);
    work.then(forget, forget);
    return work;
  }

  async #send(message: Outgoing, origin?: Connection): Promise<{ duplicate: boolean }> {
    const acceptedAt = Date.now();
    const stored = message.store !== false;
    if (stored) {
      const { duplicate } = await this.#store.accept({
        sender: message.sender,
        id: message.id,
        type: message.type,
        recipients: message.recipients,
        text: message.text,
        acceptedAt,
      });
      if (duplicate) return { duplicate };
      const offline = message.recipients.filter((user) => !this.#hub.isOnline(user));
      if (offline.length > 0) this.#observer.storedForOffline?.(offline, message);
    }
    await this.#broker.publish({
      key: keyOf(message),
      text: message.text,
      users: message.recipients,
      echoTo: message.sender === SYSTEM ? undefined : message.sender,
      origin: origin ? this.ref(origin) : undefined,
      record: stored,
      acceptedAt,
    });
    return { duplicate: false };
  }

  /**
   * Records the receipt of `userId` for a message and forwards the receipt
   * frame to the original sender and to the user's other connections. Resolves
   * false when no such message to `userId` is known.
   */
  receipt(
    userId: string,
    key: MessageKey,
    text: string,
    origin?: Connection,
  ): Promise<boolean> {
    return this.#track(this.#receipt(userId, key, text, origin));
  }

  async #receipt(userId: string, key: MessageKey, text: string, origin?: Connection) {
    const known = await this.#store.acknowledge(userId, key);
    if (!known) return false;
    await this.#broker.publish({
      key: `receipt\u0000${userId}\u0000${keyOf(key)}`,
      text,
      users: key.sender === SYSTEM ? [] : [key.sender],
      echoTo: userId,
      origin: origin ? this.ref(origin) : undefined,
      record: false,
    });
    return true;
  }

  /**
   * Registers a connection: adds it to the hub (closing the one it replaces
   * with 4001), calls `registered` (which sends the 9001), then replays every
   * unacknowledged stored message, oldest first, before any live frame.
   */
  async register(conn: Connection, registered: () => void): Promise<void> {
    const replaced = this.#hub.add(conn);
    if (replaced) replaced.close(4001, "replaced");
    // The same client may be registered on another instance too.
    await this.#broker.kick({
      userId: conn.userId,
      clientName: conn.clientName,
      code: 4001,
      reason: "replaced",
      except: this.ref(conn),
    });
    registered();
    try {
      const messages = await this.#store.unacknowledged(conn.userId);
      for (const message of messages) this.#hub.replay(conn, keyOf(message), message.text);
      if (messages.length > 0) {
        this.#observer.sent?.(messages.length);
        await this.#store.markDelivered(conn.userId, messages);
      }
    } catch (error) {
      this.#logger.error("Replay of stored messages failed", { user: conn.userId, error });
    } finally {
      this.#hub.endReplay(conn);
    }
  }

  /** Closes connections on every instance (business API kick). */
  kick(kick: Kick): Promise<void> {
    return this.#broker.kick(kick);
  }

  #kickHere(kick: Kick): void {
    for (const conn of [...this.#hub.connectionsOf(kick.userId)]) {
      if (kick.clientName !== undefined && conn.clientName !== kick.clientName) continue;
      if (kick.except === this.ref(conn)) continue;
      conn.close(kick.code, kick.reason);
    }
  }

  /** Delivers a routed frame to this instance's connections. */
  #deliverHere(delivery: Routed): void {
    const prefix = `${this.#instance}/`;
    const except = delivery.origin?.startsWith(prefix)
      ? Number(delivery.origin.slice(prefix.length))
      : -1;
    let sent = 0;
    for (const user of delivery.users) {
      const reached = this.#hub.deliver(user, delivery.key, delivery.text, except);
      sent += reached;
      if (reached > 0 && delivery.record) {
        const [sender, id] = delivery.key.split("\u0000");
        this.#store.markDelivered(user, [{ sender, id }]).catch((error) =>
          this.#logger.warn("Could not mark a message delivered", { user, error })
        );
      }
    }
    const echo = delivery.echoTo;
    if (echo !== undefined && !delivery.users.includes(echo)) {
      sent += this.#hub.deliver(echo, delivery.key, delivery.text, except);
    }
    if (sent > 0) this.#observer.sent?.(sent, delivery.acceptedAt);
  }
}
