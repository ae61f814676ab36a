/**
 * Delivery: accepts messages into the store, routes them through the broker to
 * the hub's connections, replays stored messages at register, and records
 * receipts. Every path that sends a stored frame to users goes through here
 * (client frames, the business API and plugins alike). Kicks go straight to
 * the broker and end in {@link Hub.kick}.
 *
 * @module
 */
import type { Broker, Delivery as Routed, Origin } from "./broker.ts";
import type { Connection, Hub } from "./hub.ts";
import type { MessageKey, MessageStore } from "./store.ts";
import { CloseCode, SYSTEM } from "../protocol/codes.ts";
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

/** Stored messages replayed between two waits for the socket to drain. */
const REPLAY_CHUNK_BYTES = 32 * 1024;

const DUPLICATE = Object.freeze({ duplicate: true });
const ACCEPTED = Object.freeze({ duplicate: false });

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
  /** Logs a failed markDelivered (one function for every call: none is made per frame). */
  #markFailed = (error: unknown) => {
    this.#logger.warn("Could not mark a message delivered", { error });
  };
  /** Sends and receipts in progress, awaited by {@link idle}. */
  #busy = 0;
  /** Waiters of {@link idle}, woken when `#busy` drops to zero. */
  #idleWaiters: (() => void)[] = [];

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
      instance: this.#instance,
      deliver: (delivery) => this.#deliverHere(delivery),
      kick: (kick) => this.#hub.kick(kick),
    });
  }

  /** How other instances know `conn`. */
  #origin(conn: Connection): Origin {
    return { instance: this.#instance, conn: conn.id };
  }

  /**
   * Accepts a message (stored first, unless `store` is false) and routes it to
   * its recipients and to the sender's other connections. Resolves with
   * `duplicate: true`, delivering nothing, when the sender already had a
   * message with this id accepted.
   */
  async send(message: Outgoing, origin?: Connection): Promise<{ duplicate: boolean }> {
    this.#busy++;
    try {
      const acceptedAt = Date.now();
      const stored = message.store !== false;
      const { recipients } = message;
      const routed: Routed = {
        stored: stored ? { sender: message.sender, id: message.id } : undefined,
        text: message.text,
        users: recipients,
        echoTo: message.sender === SYSTEM ? undefined : message.sender,
        origin: origin && this.#origin(origin),
        acceptedAt,
      };
      if (stored) {
        const { duplicate } = await this.#store.accept({
          sender: message.sender,
          id: message.id,
          type: message.type,
          recipients,
          text: message.text,
          acceptedAt,
        }, routed);
        if (duplicate) return DUPLICATE;
        if (this.#observer.storedForOffline) {
          let offline: string[] | undefined;
          for (const user of recipients) {
            if (!this.#hub.isOnline(user)) (offline ??= []).push(user);
          }
          if (offline) this.#observer.storedForOffline(offline, message);
        }
        if (this.#store.publishes) return ACCEPTED;
      }
      await this.#broker.publish(routed);
      return ACCEPTED;
    } finally {
      this.#settled();
    }
  }

  /** Resolves once every send and receipt in progress has settled (for shutdown). */
  idle(): Promise<void> {
    if (this.#busy === 0) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#idleWaiters.push(resolve);
    return promise;
  }

  #settled(): void {
    if (--this.#busy > 0 || this.#idleWaiters.length === 0) return;
    for (const resolve of this.#idleWaiters.splice(0)) resolve();
  }

  /**
   * Records the receipt of `userId` for a message and forwards the receipt
   * frame to the original sender and to the user's other connections. Resolves
   * false when no such message to `userId` is known.
   */
  async receipt(
    userId: string,
    key: MessageKey,
    text: string,
    origin?: Connection,
  ): Promise<boolean> {
    this.#busy++;
    try {
      const routed: Routed = {
        text,
        users: key.sender === SYSTEM ? [] : [key.sender],
        echoTo: userId,
        origin: origin && this.#origin(origin),
      };
      const known = await this.#store.acknowledge(userId, key, routed);
      if (!known) return false;
      if (!this.#store.publishes) await this.#broker.publish(routed);
      return true;
    } finally {
      this.#settled();
    }
  }

  /**
   * Registers a connection: adds it to the hub (closing the one it replaces
   * with 4001), calls `registered` (which sends the 9001), then replays every
   * unacknowledged stored message, oldest first, before any live frame.
   */
  async register(conn: Connection, registered: () => void): Promise<void> {
    const { REPLACED } = CloseCode;
    this.#hub.add(conn)?.close(REPLACED.code, REPLACED.reason);
    // The same client may be registered on another instance too.
    await this.#broker.kick({
      userId: conn.userId,
      clientName: conn.clientName,
      ...REPLACED,
      except: this.#origin(conn),
    });
    registered();
    try {
      const messages = await this.#store.unacknowledged(conn.userId);
      // Paced by the socket: a large backlog must not look like a slow consumer.
      let sent = 0;
      let bytes = 0;
      for (const message of messages) {
        if (bytes >= REPLAY_CHUNK_BYTES) {
          bytes = 0;
          if (!await conn.drain()) break;
        }
        conn.replay(message);
        bytes += message.text.length;
        sent++;
      }
      if (sent > 0) {
        this.#observer.sent?.(sent);
        await this.#store.markDelivered(conn.userId, messages.slice(0, sent));
      }
    } catch (error) {
      this.#logger.error("Replay of stored messages failed", { user: conn.userId, error });
    } finally {
      conn.endReplay();
    }
  }

  /** Delivers a routed frame to this instance's connections. */
  #deliverHere(delivery: Routed): void {
    const { origin, stored, text, users } = delivery;
    const except = origin?.instance === this.#instance ? origin.conn : -1;
    const hub = this.#hub;
    let sent = 0;
    // The users reached, for one delivery mark: `users` itself while every one
    // so far was reached (the common case: no array is built).
    let reachedUsers: string[] | undefined;
    let allSoFar = 0;
    for (let i = 0; i < users.length; i++) {
      const user = users[i];
      const reached = hub.deliver(user, text, except, stored);
      if (reached === 0) {
        if (stored && reachedUsers === undefined) reachedUsers = users.slice(0, allSoFar);
        continue;
      }
      sent += reached;
      if (reachedUsers === undefined) allSoFar++;
      else reachedUsers.push(user);
    }
    if (stored) {
      const marked = reachedUsers ?? users;
      if (marked.length > 0) this.#store.markDeliveredTo(stored, marked).catch(this.#markFailed);
    }
    const echo = delivery.echoTo;
    if (echo !== undefined && !users.includes(echo)) {
      sent += hub.deliver(echo, text, except, stored);
    }
    if (sent > 0) this.#observer.sent?.(sent, delivery.acceptedAt);
  }
}
