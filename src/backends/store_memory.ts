/**
 * In-memory {@link MessageStore}: fast, bounded per user, lost on restart.
 * For tests and throwaway runs (`storage.driver: memory`).
 *
 * Layout: one record per message, and per recipient an insertion-ordered map
 * from message key to delivery state. A message goes when no recipient holds
 * it any more (acknowledged messages stay, for duplicate detection and
 * history, until the per-user cap or the retention period drops them).
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
  /** Recipients still holding the message. */
  holders: number;
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
  /** Per recipient: message key → delivery state, in acceptance order. */
  #inbox = new Map<string, Map<string, DeliveryState>>();
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
    this.#messages.set(key, {
      seq: ++this.#seq,
      sender: message.sender,
      id: message.id,
      type: message.type,
      text: message.text,
      acceptedAt: message.acceptedAt,
      recipients: message.recipients,
      holders: message.recipients.length,
    });
    for (const user of message.recipients) {
      let inbox = this.#inbox.get(user);
      if (!inbox) this.#inbox.set(user, inbox = new Map());
      inbox.set(key, "pending");
      this.#pending++;
      if (inbox.size > this.#maxPerUser) this.#dropOldest(user, inbox);
    }
    return Promise.resolve({ duplicate: false });
  }

  #dropOldest(user: string, inbox: Map<string, DeliveryState>) {
    const [oldest, state] = inbox.entries().next().value as [string, DeliveryState];
    if (state !== "acknowledged") {
      const record = this.#messages.get(oldest)!;
      this.#logger?.warn("Per-user cap reached: dropped an unacknowledged message", {
        user,
        sender: record.sender,
        id: record.id,
        maxPerUser: this.#maxPerUser,
      });
    }
    this.#forget(user, oldest);
  }

  /** Removes `user`'s hold on a message; the message goes when nobody holds it. */
  #forget(user: string, key: string) {
    const inbox = this.#inbox.get(user);
    const state = inbox?.get(key);
    if (state === undefined) return;
    if (state !== "acknowledged") this.#pending--;
    inbox!.delete(key);
    if (inbox!.size === 0) this.#inbox.delete(user);
    const record = this.#messages.get(key);
    if (record && --record.holders === 0) this.#messages.delete(key);
  }

  unacknowledged(userId: string): Promise<StoredMessage[]> {
    const result: StoredMessage[] = [];
    for (const [key, state] of this.#inbox.get(userId) ?? []) {
      if (state === "acknowledged") continue;
      const { sender, id, type, text, acceptedAt } = this.#messages.get(key)!;
      result.push({ sender, id, type, text, acceptedAt });
    }
    return Promise.resolve(result);
  }

  markDelivered(userId: string, keys: MessageKey[]): Promise<void> {
    const inbox = this.#inbox.get(userId);
    if (inbox) {
      for (const { sender, id } of keys) {
        const key = keyOf(sender, id);
        if (inbox.get(key) === "pending") inbox.set(key, "delivered");
      }
    }
    return Promise.resolve();
  }

  acknowledge(userId: string, { sender, id }: MessageKey): Promise<boolean> {
    const key = keyOf(sender, id);
    const inbox = this.#inbox.get(userId);
    const state = inbox?.get(key);
    if (state === undefined) return Promise.resolve(false);
    if (state !== "acknowledged") {
      inbox!.set(key, "acknowledged");
      this.#pending--;
    }
    return Promise.resolve(true);
  }

  history(userId: string, peer: string, options: HistoryOptions): Promise<HistoryPage> {
    const before = options.before === undefined ? Infinity : Number(options.before);
    const mine = this.#inbox.get(userId);
    const theirs = this.#inbox.get(peer);
    const matches: { record: Record; state: DeliveryState }[] = [];
    // A message between the two sits in the recipient's inbox: peer's from me, mine from peer.
    const collect = (inbox: Map<string, DeliveryState> | undefined, from: string) => {
      for (const [key, state] of inbox ?? []) {
        const record = this.#messages.get(key)!;
        if (record.sender === from && record.seq < before) matches.push({ record, state });
      }
    };
    collect(theirs, userId);
    if (peer !== userId) collect(mine, peer);
    matches.sort((a, b) => b.record.seq - a.record.seq);
    const page = matches.slice(0, options.limit);
    const more = matches.length > options.limit;
    return Promise.resolve({
      messages: page.map(({ record, state }) => {
        const { sender, id, type, text, acceptedAt, recipients } = record;
        return { sender, id, type, text, acceptedAt, recipients, state };
      }),
      next: more ? String(page[page.length - 1].record.seq) : undefined,
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
      for (const user of record.recipients) {
        const state = this.#inbox.get(user)?.get(key);
        if (state !== undefined && state !== "acknowledged") unacknowledged++;
        this.#forget(user, key);
      }
      this.#messages.delete(key);
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
