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
  /**
   * True when the sender already has `maxPendingBytesPerSender` of copies
   * waiting for their recipients (or this message would pass it); nothing was
   * stored. Never set for messages from `SYSTEM`.
   */
  overQuota?: boolean;
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

/** Options of {@link MessageStore.unacknowledged}. */
export interface UnacknowledgedOptions {
  /** Cursor of the previous page; absent for the first page. */
  after?: string;
  /** Most messages in the page. */
  limit: number;
}

/** A page of unacknowledged messages, oldest first. */
export interface UnacknowledgedPage {
  messages: StoredMessage[];
  /**
   * Where the page ends: pass it as `after` to read on. Absent when the page is
   * empty (read on from the same `after`).
   */
  cursor?: string;
  /** Whether more messages followed the page when it was read. */
  more: boolean;
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
 * - `unacknowledged(user, …)` pages through the messages to `user` not yet
 *   acknowledged, in the order they were accepted. A message accepted after a
 *   page was read comes after that page's cursor, so reading on from it finds
 *   the message. A page holds at most `limit` messages: no call loads a whole
 *   inbox.
 * - `maxPerUser` holds when `accept` resolves: a recipient never holds more.
 * - Nothing the store keeps in memory grows with the number of distinct
 *   recipients it has seen (the memory store's messages aside).
 * - Per-user caps and retention may drop messages; the store logs each drop.
 * - With `maxPendingBytesPerSender`, `accept` refuses (`overQuota`) a message
 *   whose pending copies (length of its text times recipients) would take the
 *   sender's pending copies past it. A copy stops counting once its delivery
 *   mark is written (a store may write marks late; reads write them first),
 *   or it is acknowledged or dropped. Lengths are the store's own measure of
 *   text (characters, or UTF-8 bytes in Redis).
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
  /** A page of the unacknowledged messages addressed to `userId`, oldest first. */
  unacknowledged(userId: string, options: UnacknowledgedOptions): Promise<UnacknowledgedPage>;
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
