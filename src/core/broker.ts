/**
 * The broker carries frames to the connections of users on every instance.
 * The in-memory broker serves one instance; a Redis broker serves several.
 *
 * @module
 */

import type { MessageKey } from "./store.ts";

/** A connection, as other instances know it. */
export interface Origin {
  /** The instance's id. */
  instance: string;
  /** The connection's id on that instance. */
  conn: number;
}

/** A frame on its way to the connections of some users. */
export interface Delivery {
  /**
   * The stored message the frame carries: the `users` reached are marked
   * delivered, and a connection replaying stored messages skips it when the
   * replay already sent it. Absent for frames that are not stored (receipts, typing).
   */
  stored?: MessageKey;
  /** The frame's JSON text. */
  text: string;
  /** Users who get the frame on every connection. */
  users: string[];
  /** Also send to this user's connections (the sender's other devices), never marked delivered. */
  echoTo?: string;
  /** The connection that sent it (its instance and connection id): it never gets its own frame. */
  origin?: Origin;
  /** When the message was accepted, ms since the epoch (for the delivery latency metric). */
  acceptedAt?: number;
}

/**
 * Closes connections of a user on every instance: a kick from the business
 * API, or a newer register of the same (userId, clientName) replacing older ones.
 */
export interface Kick {
  userId: string;
  /** Only this client; all of the user's connections when absent. */
  clientName?: string;
  /** WebSocket close code and reason, e.g. 4001 "replaced". */
  code: number;
  reason: string;
  /** A connection to spare: the one that replaces the others. */
  except?: Origin;
}

/** What an instance does with what the broker carries. */
export interface BrokerHandler {
  /**
   * This instance's id, as in {@link Origin} and presence entries (a broker
   * that routes reads the queue of this id).
   */
  instance: string;
  deliver(delivery: Delivery): void;
  kick(kick: Kick): void;
}

/**
 * Routes deliveries to the instances holding the users' connections.
 * Guarantees: deliveries published by one instance reach every instance that
 * holds a connection of their users, in the order published; at most once per
 * connection; no storage (a user without a connection simply gets nothing, the
 * store keeps the message). A connection registered while a stored message is
 * published gets it live or from its replay (or both), never neither.
 */
export interface Broker {
  /** Hands a delivery to every instance holding its users (or the echo user), this one included. */
  publish(delivery: Delivery): Promise<void>;
  /** Hands a kick to every instance, this one included. */
  kick(kick: Kick): Promise<void>;
  /** Sets what this instance does with deliveries and kicks. */
  subscribe(handler: BrokerHandler): Promise<void>;
  close(): Promise<void>;
}
