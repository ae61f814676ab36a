/**
 * In-memory {@link MessageStore}: fast, bounded per user, lost on restart.
 * For tests and throwaway runs (`storage.driver: memory`).
 *
 * @module
 */
import type {
  AcceptResult,
  DeliveryState,
  HistoryOptions,
  HistoryPage,
  MessageKey,
  MessageStore,
  NewMessage,
  StoredMessage,
} from "../core/store.ts";
import type { Logger } from "../log.ts";

interface Record extends StoredMessage {
  seq: number;
  recipients: string[];
  /** Delivery state per recipient still holding the message. */
  states: Map<string, DeliveryState>;
}

/** Options of {@link MemoryStore}. */
export interface MemoryStoreOptions {
  /** Messages kept per recipient; the oldest are dropped past it. @default 10000 */
  maxPerUser?: number;
  /** Days a message is kept. @default 30 */
  retentionDays?: number;
  /** Where drops are reported. */
  logger?: Logger;
}

const keyOf = (sender: string, id: string) => `${sender}\u0000${id}`;

/** Keeps messages in maps; every operation is synchronous under the hood. */
export class MemoryStore implements MessageStore {
  #seq = 0;
  /** Every kept message by key, in acceptance order. */
  #messages = new Map<string, Record>();
  /** Per recipient: keys of the messages kept for them, in acceptance order. */
  #inbox = new Map<string, Set<string>>();
  #pending = 0;
  #maxPerUser: number;
  #retentionMs: number;
  #logger?: Logger;

  constructor(options: MemoryStoreOptions = {}) {
    this.#maxPerUser = options.maxPerUser ?? 10000;
    this.#retentionMs = (options.retentionDays ?? 30) * 86_400_000;
    this.#logger = options.logger;
  }

  accept(message: NewMessage): Promise<AcceptResult> {
    const key = keyOf(message.sender, message.id);
    if (this.#messages.has(key)) return Promise.resolve({ duplicate: true });
    const record: Record = {
      seq: ++this.#seq,
      sender: message.sender,
      id: message.id,
      type: message.type,
      text: message.text,
      acceptedAt: message.acceptedAt,
      recipients: message.recipients,
      states: new Map(),
    };
    this.#messages.set(key, record);
    for (const user of message.recipients) {
      record.states.set(user, "pending");
      this.#pending++;
      let inbox = this.#inbox.get(user);
      if (!inbox) this.#inbox.set(user, inbox = new Set());
      inbox.add(key);
      if (inbox.size > this.#maxPerUser) this.#dropOldest(user, inbox);
    }
    return Promise.resolve({ duplicate: false });
  }

  #dropOldest(user: string, inbox: Set<string>) {
    const oldest = inbox.values().next().value as string;
    const record = this.#messages.get(oldest)!;
    const state = record.states.get(user);
    if (state !== "acknowledged") {
      this.#logger?.warn("Per-user cap reached: dropped an unacknowledged message", {
        user,
        sender: record.sender,
        id: record.id,
        maxPerUser: this.#maxPerUser,
      });
    }
    this.#forget(user, oldest, record);
  }

  /** Removes `user`'s hold on a message; the message goes when nobody holds it. */
  #forget(user: string, key: string, record: Record) {
    if (record.states.get(user) !== "acknowledged") this.#pending--;
    record.states.delete(user);
    const inbox = this.#inbox.get(user);
    inbox?.delete(key);
    if (inbox?.size === 0) this.#inbox.delete(user);
    if (record.states.size === 0) this.#messages.delete(key);
  }

  unacknowledged(userId: string): Promise<StoredMessage[]> {
    const result: StoredMessage[] = [];
    for (const key of this.#inbox.get(userId) ?? []) {
      const record = this.#messages.get(key)!;
      if (record.states.get(userId) === "acknowledged") continue;
      const { sender, id, type, text, acceptedAt } = record;
      result.push({ sender, id, type, text, acceptedAt });
    }
    return Promise.resolve(result);
  }

  markDelivered(userId: string, keys: MessageKey[]): Promise<void> {
    for (const { sender, id } of keys) {
      const record = this.#messages.get(keyOf(sender, id));
      if (record?.states.get(userId) === "pending") record.states.set(userId, "delivered");
    }
    return Promise.resolve();
  }

  acknowledge(userId: string, { sender, id }: MessageKey): Promise<boolean> {
    const record = this.#messages.get(keyOf(sender, id));
    const state = record?.states.get(userId);
    if (!record || state === undefined) return Promise.resolve(false);
    if (state !== "acknowledged") {
      record.states.set(userId, "acknowledged");
      this.#pending--;
    }
    return Promise.resolve(true);
  }

  history(userId: string, peer: string, options: HistoryOptions): Promise<HistoryPage> {
    const before = options.before === undefined ? Infinity : Number(options.before);
    const matches: Record[] = [];
    // Messages between the two are in one of their inboxes; walk both, newest first.
    const keys = new Set([...(this.#inbox.get(userId) ?? []), ...(this.#inbox.get(peer) ?? [])]);
    for (const key of keys) {
      const record = this.#messages.get(key)!;
      if (record.seq >= before) continue;
      const between = (record.sender === userId && record.states.has(peer)) ||
        (record.sender === peer && record.states.has(userId));
      if (between) matches.push(record);
    }
    matches.sort((a, b) => b.seq - a.seq);
    const page = matches.slice(0, options.limit);
    const more = matches.length > options.limit;
    return Promise.resolve({
      messages: page.map((record) => {
        const other = record.sender === userId ? peer : userId;
        const { sender, id, type, text, acceptedAt, recipients } = record;
        return {
          sender,
          id,
          type,
          text,
          acceptedAt,
          recipients,
          state: record.states.get(other) ?? "acknowledged",
        };
      }),
      next: more ? String(page[page.length - 1].seq) : undefined,
    });
  }

  pendingCount(): Promise<number> {
    return Promise.resolve(this.#pending);
  }

  sweep(now: number): Promise<number> {
    const cutoff = now - this.#retentionMs;
    let dropped = 0;
    let unacknowledged = 0;
    for (const [key, record] of this.#messages) {
      if (record.acceptedAt >= cutoff) break;
      for (const [user, state] of [...record.states]) {
        if (state !== "acknowledged") unacknowledged++;
        this.#forget(user, key, record);
      }
      dropped++;
    }
    if (dropped > 0) {
      const fields = { dropped, unacknowledged, retentionDays: this.#retentionMs / 86_400_000 };
      if (unacknowledged > 0) {
        this.#logger?.warn("Retention sweep dropped unacknowledged messages", fields);
      } else this.#logger?.info("Retention sweep dropped old messages", fields);
    }
    return Promise.resolve(dropped);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
