/**
 * In-memory {@link MessageStore}: fast, bounded per user, lost on restart.
 * For tests and throwaway runs (`storage.driver: memory`).
 *
 * Layout, chosen for the per-frame path (bench/README.md has the figures):
 * - one record per message, found by sender then id: two lookups on strings
 *   that already carry their hash, rather than a joined key built per call;
 * - the delivery state of each recipient lives on the record (a field for a
 *   single recipient, two bits each in a small array for several), so no map
 *   entry is made per (recipient, message), and a record keeps the inbox's
 *   copy of each userId, not the frame's;
 * - each recipient's inbox is a queue of records in acceptance order. Nothing
 *   leaves it except from the front (the per-user cap and the retention sweep),
 *   so it is an array with a moving head.
 *
 * A message goes when no recipient holds it any more. Acknowledged messages
 * stay, for duplicate detection and history, until the cap or the retention
 * period drops them.
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

/** Delivery states as small integers; GONE: dropped from that recipient's inbox. */
const PENDING = 0, DELIVERED = 1, ACKNOWLEDGED = 2, GONE = 3;
const STATE_NAMES: DeliveryState[] = ["pending", "delivered", "acknowledged"];

/** Above this many recipients a list gets a map from recipient to index. */
const INDEXED_RECIPIENTS = 16;
/** States packed per element of {@link Several.states}: 2 bits each, 30 bits (a small integer). */
const PER_WORD = 15;

/**
 * `acceptedAt` is kept as milliseconds from this instant, a small integer for
 * ±24 days around it: a field of small integers is stored in the object, a
 * field of larger numbers takes a 16-byte box per record. (Past that range V8
 * widens the field for every record; nothing breaks.)
 */
const EPOCH = Date.now();

/**
 * One kept message, in 8 fields: the layout decides the memory per waiting
 * message (bench/README.md, "backlog"). A single recipient costs no array:
 * `to` is its userId and `state` its delivery state. With several, `to` holds
 * the list and their states, and `state` counts those still holding it. A
 * class, not an object literal: V8 gives its instances exactly 8 fields (88
 * bytes), a literal of 8 properties took 104 here.
 */
class Record {
  constructor(
    readonly seq: number,
    readonly sender: string,
    readonly id: string,
    readonly type: number,
    readonly text: string,
    /** acceptedAt − {@link EPOCH}. */
    readonly at: number,
    public to: string | Several,
    public state: number,
  ) {}
}

/** The recipients of a record with several. */
interface Several {
  /** The userIds, often shared with the sender's other records to the same list. */
  list: string[];
  /** Their delivery states, two bits each, {@link PER_WORD} per element. */
  states: number[];
}

/**
 * userId → slot of long recipient lists, built when a lookup (a receipt) needs
 * it; one per list, so the messages of a group that share a list share it.
 */
const indexes = new WeakMap<readonly string[], Map<string, number>>();

function recipientsOf(record: Record): string[] {
  const { to } = record;
  return typeof to === "string" ? [to] : to.list;
}

/** The slot of `user` among the record's recipients, -1 when not one of them. */
function slotOf(record: Record, user: string): number {
  const { to } = record;
  if (typeof to === "string") return to === user ? 0 : -1;
  const { list } = to;
  if (list[0] === user) return 0;
  if (list.length <= INDEXED_RECIPIENTS) return list.indexOf(user);
  let index = indexes.get(list);
  if (!index) indexes.set(list, index = new Map(list.map((u, i) => [u, i])));
  return index.get(user) ?? -1;
}

function stateAt(record: Record, slot: number): number {
  const { to } = record;
  if (typeof to === "string") return record.state;
  return (to.states[(slot / PER_WORD) | 0] >> ((slot % PER_WORD) * 2)) & 3;
}

function setState(record: Record, slot: number, state: number): void {
  const { to } = record;
  if (typeof to === "string") {
    record.state = state;
    return;
  }
  const word = (slot / PER_WORD) | 0;
  const shift = (slot % PER_WORD) * 2;
  to.states[word] = (to.states[word] & ~(3 << shift)) | (state << shift);
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Drops one recipient's hold; true when it was the last one. */
function release(record: Record): boolean {
  if (typeof record.to === "string") return true;
  return --record.state === 0;
}

/** One recipient's messages, oldest first, from `head` on. */
interface Inbox {
  /** The recipient: the one copy of the userId that records point to. */
  user: string;
  records: Record[];
  head: number;
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

const DUPLICATE: Promise<AcceptResult> = Promise.resolve({ duplicate: true });
const ACCEPTED: Promise<AcceptResult> = Promise.resolve({ duplicate: false });
const DONE: Promise<void> = Promise.resolve();
const KNOWN = Promise.resolve(true);
const UNKNOWN = Promise.resolve(false);

/** Keeps messages in maps and arrays; every operation is synchronous under the hood. */
export class MemoryStore implements MessageStore {
  #seq = 0;
  /** Every kept message: sender → id → record. */
  #bySender = new Map<string, Map<string, Record>>();
  #inbox = new Map<string, Inbox>();
  /** Each sender's last list of several recipients, shared by its next records to the same list. */
  #lastList = new Map<string, string[]>();
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
    const { sender, id, recipients } = message;
    let ids = this.#bySender.get(sender);
    if (!ids) this.#bySender.set(sender, ids = new Map());
    else if (ids.has(id)) return DUPLICATE;
    const count = recipients.length;
    // Each userId is kept as the inbox's own string: the frame's copies (one
    // per recipient of a `to` list) are left to the collector. A sender's next
    // message to the same list (a group) shares the list of the last one.
    const last = count === 1 ? undefined : this.#lastList.get(sender);
    const shared = last !== undefined && sameList(last, recipients);
    const list = count === 1 ? undefined : shared ? last! : new Array<string>(count);
    if (list && !shared) this.#lastList.set(sender, list);
    const record = new Record(
      ++this.#seq,
      sender,
      id,
      message.type,
      message.text,
      message.acceptedAt - EPOCH,
      list ? { list, states: new Array<number>(Math.ceil(count / PER_WORD)).fill(0) } : "",
      list ? count : PENDING,
    );
    ids.set(id, record);
    this.#pending += count;
    for (let i = 0; i < count; i++) {
      const user = recipients[i];
      let inbox = this.#inbox.get(user);
      if (!inbox) this.#inbox.set(user, inbox = { user, records: [], head: 0 });
      if (!list) record.to = inbox.user;
      else if (!shared) list[i] = inbox.user;
      inbox.records.push(record);
      if (inbox.records.length - inbox.head > this.#maxPerUser) this.#dropOldest(inbox.user, inbox);
    }
    return ACCEPTED;
  }

  #find(sender: string, id: string): Record | undefined {
    return this.#bySender.get(sender)?.get(id);
  }

  #dropOldest(user: string, inbox: Inbox) {
    const oldest = inbox.records[inbox.head];
    const state = stateAt(oldest, slotOf(oldest, user));
    if (state !== ACKNOWLEDGED) {
      this.#logger?.warn("Per-user cap reached: dropped an unacknowledged message", {
        user,
        sender: oldest.sender,
        id: oldest.id,
        maxPerUser: this.#maxPerUser,
      });
    }
    this.#shift(user, inbox);
  }

  /**
   * Drops the oldest message of `user`'s inbox; the message goes when nobody
   * holds it. Returns the state it had for `user` and whether that was its last hold.
   */
  #shift(user: string, inbox: Inbox): { state: number; last: boolean } {
    const record = inbox.records[inbox.head];
    inbox.records[inbox.head++] = undefined as unknown as Record;
    const size = inbox.records.length - inbox.head;
    if (size === 0) this.#inbox.delete(user);
    else if (inbox.head >= 1024 && inbox.head >= size) {
      inbox.records = inbox.records.slice(inbox.head);
      inbox.head = 0;
    }
    const slot = slotOf(record, user);
    const state = stateAt(record, slot);
    setState(record, slot, GONE);
    if (state !== ACKNOWLEDGED) this.#pending--;
    const last = release(record);
    if (last) {
      const ids = this.#bySender.get(record.sender);
      if (ids?.get(record.id) === record) {
        ids.delete(record.id);
        if (ids.size === 0) {
          this.#bySender.delete(record.sender);
          this.#lastList.delete(record.sender);
        }
      }
    }
    return { state, last };
  }

  /** The state of a message for `user`, with where to change it; undefined when not held. */
  #held(user: string, sender: string, id: string): { record: Record; slot: number } | undefined {
    const record = this.#find(sender, id);
    if (!record) return undefined;
    const slot = slotOf(record, user);
    if (slot < 0 || stateAt(record, slot) === GONE) return undefined;
    return { record, slot };
  }

  unacknowledged(userId: string): Promise<StoredMessage[]> {
    const result: StoredMessage[] = [];
    const inbox = this.#inbox.get(userId);
    if (inbox) {
      const { records } = inbox;
      for (let i = inbox.head; i < records.length; i++) {
        const record = records[i];
        if (stateAt(record, slotOf(record, userId)) === ACKNOWLEDGED) continue;
        const { sender, id, type, text, at } = record;
        result.push({ sender, id, type, text, acceptedAt: at + EPOCH });
      }
    }
    return Promise.resolve(result);
  }

  markDelivered(userId: string, keys: MessageKey[]): Promise<void> {
    for (const { sender, id } of keys) {
      const held = this.#held(userId, sender, id);
      if (held && stateAt(held.record, held.slot) === PENDING) {
        setState(held.record, held.slot, DELIVERED);
      }
    }
    return DONE;
  }

  markDeliveredTo({ sender, id }: MessageKey, userIds: readonly string[]): Promise<void> {
    const record = this.#find(sender, id);
    if (!record) return DONE;
    const recipients = recipientsOf(record);
    // `userIds` is usually the recipients or an ordered part of them: walk
    // both, and look a user up only when the walk loses step.
    let slot = 0;
    for (const user of userIds) {
      if (recipients[slot] !== user) {
        slot = slotOf(record, user);
        if (slot < 0) {
          slot = 0;
          continue;
        }
      }
      if (stateAt(record, slot) === PENDING) setState(record, slot, DELIVERED);
      slot++;
    }
    return DONE;
  }

  acknowledge(userId: string, { sender, id }: MessageKey): Promise<boolean> {
    const held = this.#held(userId, sender, id);
    if (!held) return UNKNOWN;
    if (stateAt(held.record, held.slot) !== ACKNOWLEDGED) {
      setState(held.record, held.slot, ACKNOWLEDGED);
      this.#pending--;
    }
    return KNOWN;
  }

  history(userId: string, peer: string, options: HistoryOptions): Promise<HistoryPage> {
    const before = options.before === undefined ? Infinity : Number(options.before);
    const matches: { record: Record; state: DeliveryState }[] = [];
    // A message between the two sits in the recipient's inbox: peer's from me, mine from peer.
    const collect = (owner: string, from: string) => {
      const inbox = this.#inbox.get(owner);
      if (!inbox) return;
      const { records } = inbox;
      for (let i = inbox.head; i < records.length; i++) {
        const record = records[i];
        if (record.sender !== from || record.seq >= before) continue;
        matches.push({ record, state: STATE_NAMES[stateAt(record, slotOf(record, owner))] });
      }
    };
    collect(peer, userId);
    if (peer !== userId) collect(userId, peer);
    matches.sort((a, b) => b.record.seq - a.record.seq);
    const page = matches.slice(0, options.limit);
    const more = matches.length > options.limit;
    return Promise.resolve({
      messages: page.map(({ record, state }) => {
        const { sender, id, type, text, at } = record;
        const recipients = recipientsOf(record).slice();
        return { sender, id, type, text, acceptedAt: at + EPOCH, recipients, state };
      }),
      next: more ? String(page[page.length - 1].record.seq) : undefined,
    });
  }

  pendingCount(): Promise<number> {
    return Promise.resolve(this.#pending);
  }

  /** Drops, from the front of every inbox, the messages older than the retention period. */
  sweep(now: number): Promise<number> {
    const cutoff = now - this.#retentionMs;
    let dropped = 0;
    let unacknowledged = 0;
    for (const [user, inbox] of [...this.#inbox]) {
      while (inbox.head < inbox.records.length) {
        if (inbox.records[inbox.head].at + EPOCH >= cutoff) break;
        const { state, last } = this.#shift(user, inbox);
        if (state !== ACKNOWLEDGED) unacknowledged++;
        if (last) dropped++;
      }
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
    return DONE;
  }
}
