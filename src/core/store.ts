/**
 * The message store: where accepted messages and their delivery state live.
 * The in-memory and SQLite (and later Redis) stores implement this interface
 * and pass one shared conformance suite (`tests/store_conformance.ts`).
 *
 * @module
 */
import type { Delivery } from "./broker.ts";

/** A message is known by its sender and its id. */
export interface MessageKey {
  /** Sender's userId, or `SYSTEM`. */
  sender: string;
  /** The message id chosen by the sender. */
  id: string;
}

/** A message to record for its recipients. */
export interface NewMessage extends MessageKey {
  /** Type code (2001, 3001, 3003, or a plugin's type). */
  type: number;
  /** Distinct recipient userIds, in the order of `to`. */
  recipients: string[];
  /** The frame's JSON text exactly as it is delivered. */
  text: string;
  /** When the server accepted it, ms since the epoch. */
  acceptedAt: number;
}

/** A stored message as handed back for delivery or history. */
export interface StoredMessage extends MessageKey {
  type: number;
  text: string;
  acceptedAt: number;
}

/** A message in a conversation page, with the recipient's delivery state. */
export interface HistoryEntry extends StoredMessage {
  /** Recipients of the message. */
  recipients: string[];
  /** State of the message for the other party of the conversation (or the caller). */
  state: DeliveryState;
}

/** Delivery state of a message for one recipient. */
export type DeliveryState = "pending" | "delivered" | "acknowledged";

/** Result of {@link MessageStore.accept}. */
export interface AcceptResult {
  /** True when a message with this sender and id was already stored; nothing changed. */
  duplicate: boolean;
}

/** A page of history, newest first. */
export interface HistoryPage {
  messages: HistoryEntry[];
  /** Cursor for the next (older) page, absent on the last page. */
  next?: string;
}

/** Options of {@link MessageStore.history}. */
export interface HistoryOptions {
  /** Cursor returned by the previous page. */
  before?: string;
  /** Page size. */
  limit: number;
}

/**
 * Stores accepted messages and their per-recipient delivery state.
 *
 * Guarantees every implementation keeps:
 * - `accept` resolves only once the message is as durable as the store can make
 *   it (for SQLite: committed). Calls resolve in the order they were made, so
 *   the caller may reply and deliver in promise order.
 * - A second `accept` of the same (sender, id) changes nothing and resolves
 *   `{ duplicate: true }`, for as long as the message is kept.
 * - `unacknowledged(user)` returns every message to `user` not yet
 *   acknowledged, in the order they were accepted.
 * - Per-user caps and retention may drop messages; the store logs each drop.
 */
export interface MessageStore {
  /**
   * True when the store publishes the deliveries passed to {@link accept} and
   * {@link acknowledge} itself, in the same step (Redis: one script stores
   * and routes, so one round trip and an order shared with the store's).
   * Otherwise the caller publishes them through the broker afterwards.
   */
  readonly publishes?: boolean;
  /**
   * Records a message for each of its recipients (state `pending`); a store
   * that {@link publishes} also publishes `delivery` unless it is a duplicate.
   */
  accept(message: NewMessage, delivery?: Delivery): Promise<AcceptResult>;
  /** Every unacknowledged message addressed to `userId`, oldest first. */
  unacknowledged(userId: string): Promise<StoredMessage[]>;
  /** Marks messages as sent to a connection of `userId` (`pending` → `delivered`). */
  markDelivered(userId: string, keys: MessageKey[]): Promise<void>;
  /**
   * Marks one message as sent to a connection of each of `userIds` (`pending` →
   * `delivered`): the live delivery of a message makes one such call, however
   * many recipients it reached. Users the message is not addressed to are
   * ignored. `userIds` is often the message's own recipient list, in its order.
   */
  markDeliveredTo(key: MessageKey, userIds: readonly string[]): Promise<void>;
  /**
   * Records the receipt of `userId` for the message (sender, id). Resolves false
   * when the store knows no such message addressed to `userId`; a store that
   * {@link publishes} also publishes `delivery` (the forwarded receipt) when true.
   */
  acknowledge(userId: string, key: MessageKey, delivery?: Delivery): Promise<boolean>;
  /** Messages between two users (either direction), newest first. */
  history(userId: string, peer: string, options: HistoryOptions): Promise<HistoryPage>;
  /** Number of unacknowledged (recipient, message) pairs, for metrics. */
  pendingCount(): Promise<number>;
  /**
   * Drops messages older than the retention period, and in stores that apply
   * per-user caps lazily (SQLite) the oldest messages past the cap; resolves
   * the number dropped. Called by the server every `storage.sweepIntervalMs`.
   */
  sweep(now: number): Promise<number>;
  /** Flushes and releases the store. */
  close(): Promise<void>;
}
