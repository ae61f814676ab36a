/**
 * Redis {@link MessageStore}: messages and delivery states shared by every
 * instance. Each operation is one Lua script per user group
 * (`redis_layout.ts`: one group on a single Redis, `CLUSTER_GROUPS`
 * hash-tagged groups on a Redis Cluster), so it is atomic within its group,
 * and calls for one group go over one connection, so they resolve in the
 * order they were made.
 *
 * A message is stored in the group of each of its recipients: a copy per
 * group, holding the states of that group's recipients (on a single Redis,
 * one copy). Keys of a group (prefix `im:store:`, or `im:{<tag>}:store:`):
 * - `seq`: the group's sequence, advanced by the number of copies each
 *   message stores (so also the count of copies ever stored); orders
 *   inboxes, history and retention;
 * - `done`: copies acknowledged or dropped unacknowledged (and refused):
 *   `seq - done` copies are pending;
 * - `k:{sender}\0{id}`: the seq and text of a message, `{seq}\0{text}`
 *   (dedupe by sender and id);
 * - `m:{seq}`: hash of the message: `sender`, `id`, `type`, `b` (text bytes), `at`,
 *   `rcpt` (JSON, every recipient), `n` (recipients of the group still
 *   holding it), `s:{user}` (state `p`ending, `P`ending without counting
 *   against the sender's quota: the recipient had a connection, `a`cknowledged),
 *   `d:{user}` (set once delivered);
 * - `held:{user}`: list of the seqs a recipient holds, oldest first (the
 *   per-user cap; messages leave it oldest first, by the cap or retention);
 * - `in:{user}`: list of the seqs a recipient has not acknowledged, ascending
 *   (appended in seq order; a list, not a sorted set: an append costs a
 *   fraction of a ZADD, and receipts come oldest first, near the head);
 * - `h:{a}\0{b}`: list of the seqs between two users whose recipient is in
 *   this group, ascending (history merges the two directions' groups; a
 *   list, not a sorted set: an append costs a third of a ZADD);
 * - `swept`: the seq up to which retention has looked (it walks seqs upward
 *   and stops at the first message within the retention period);
 * - `sb:{sender}`: bytes of text of the sender's pending copies in this group
 *   (not `SYSTEM`), for `maxPendingBytesPerSender` (so on a Redis Cluster a
 *   sender may hold up to that much in each group: see docs/CLUSTER.md).
 *
 * The scripts are in `store_redis_lua.ts`.
 *
 * Durability is Redis's: with `appendonly yes` a reply is written to the AOF
 * before it is sent, so a killed Redis process loses nothing that was
 * answered; `appendfsync everysec` bounds a machine crash to one second, and
 * `cluster.redisWait` a failover (see docs/CLUSTER.md).
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
  UnacknowledgedOptions,
  UnacknowledgedPage,
} from "../core/store.ts";
import type { Delivery } from "../core/broker.ts";
import type { Logger } from "../log.ts";
import { BackendUnavailableError } from "../core/errors.ts";
import { guard, linkOf, type RedisClient, type RedisLink, RedisScripts } from "./redis.ts";
import { fnv1a, RedisLayout } from "./redis_layout.ts";
import {
  type Append,
  deliveryEntry,
  Router,
  type SequencedKey,
  storedEntry,
} from "./route_redis.ts";
import { SCRIPTS } from "./store_redis_lua.ts";
import { createLogger } from "../log.ts";

/** (recipient, message) marks per MARK_DELIVERED call. */
const MARKS_PER_CALL = 1000;

const STATES: Record<string, DeliveryState> = {
  p: "pending",
  d: "delivered",
  a: "acknowledged",
};

/** Options of {@link RedisStore}. */
export interface RedisStoreOptions {
  /** Messages kept per recipient; the oldest are dropped past it. @default 10000 */
  maxPerUser?: number;
  /** Days a message is kept. @default 30 */
  retentionDays?: number;
  /** Where drops are reported. */
  logger?: Logger;
  /** Seqs looked at per script run by {@link RedisStore.sweep}. @default 500 */
  sweepBatch?: number;
  /**
   * Awaited before the replay of a user is read: resolves once this
   * instance's presence entries of the user are written, so that any message
   * this read misses is published to this instance (see docs/CLUSTER.md).
   */
  beforeReplay?: (userId: string) => Promise<void>;
  /**
   * Publish the deliveries passed to accept and acknowledge in the same
   * script, to instance streams of this length (the broker's `maxLength`):
   * one round trip per message, and publishes ordered with the store's calls.
   */
  publish?: { maxLength: number; maxHeld?: number };
  /**
   * Replicas that must confirm an accept or acknowledge (Redis `WAIT`)
   * before it resolves; when fewer do within `timeoutMs`, it rejects as
   * unavailable (the write stays on the primary: a resend is a duplicate).
   */
  waitReplicas?: { replicas: number; timeoutMs: number };
  /** Bytes of pending copies a sender may have; no limit when absent. */
  maxPendingBytesPerSender?: number;
  /** Key layout; by default the link's ({@link RedisLayout.of}). */
  layout?: RedisLayout;
}

type AcceptReply = [0, string, string[], string[], string[], string] | [1] | [2] | [3];

/** Messages and delivery states in Redis, shared by every instance. */
export class RedisStore implements MessageStore {
  #link: RedisLink;
  #layout: RedisLayout;
  #scripts: RedisScripts<keyof typeof SCRIPTS>;
  #router?: Router;
  #maxPerUser: string;
  #retentionMs: number;
  #lastStamp = 0;
  /** Settles after the last call passed to {@link #inOrder}. */
  #ordered: Promise<void> = Promise.resolve();
  /** Lifetime of a claim: the retention period and a day. */
  #claimSeconds: number;
  #logger?: Logger;
  #sweepBatch: number;
  #maxPendingBytes: string;
  #beforeReplay?: (userId: string) => Promise<void>;
  /** Marks not sent yet, by group: user, sender, id, seq of each. */
  #marks = new Map<number, string[]>();
  #marked?: PromiseWithResolvers<void>;
  #streamLength: string;
  #wait?: { replicas: number; timeoutMs: number };
  /** The `WAIT`s that cover the writes sent in this turn of the event loop, by group. */
  #waiting = new Map<number, Promise<void>>();
  /** Whether accept and acknowledge publish what they are given (see RedisStoreOptions.publish). */
  readonly publishes: boolean;

  /** Takes ownership of `client` (closed by {@link close}). */
  constructor(client: RedisClient | RedisLink, options: RedisStoreOptions = {}) {
    this.#link = linkOf(client);
    this.#layout = options.layout ?? RedisLayout.of(this.#link);
    this.#maxPerUser = String(options.maxPerUser ?? 10000);
    this.#retentionMs = (options.retentionDays ?? 30) * 86_400_000;
    this.#claimSeconds = Math.ceil(this.#retentionMs / 1000) + 86_400;
    this.#logger = options.logger;
    this.#sweepBatch = options.sweepBatch ?? 500;
    this.#maxPendingBytes = options.maxPendingBytesPerSender === undefined
      ? ""
      : String(options.maxPendingBytesPerSender);
    this.#beforeReplay = options.beforeReplay;
    this.publishes = options.publish !== undefined;
    this.#streamLength = String(options.publish?.maxLength ?? 0);
    if (options.waitReplicas && options.waitReplicas.replicas > 0) {
      this.#wait = options.waitReplicas;
    }
    const logger = options.logger ?? createLogger({ level: "error" });
    this.#scripts = new RedisScripts(this.#link, "Storage", SCRIPTS, logger);
    if (options.publish) {
      const { maxLength, maxHeld } = options.publish;
      this.#router = new Router(this.#link, this.#layout, maxLength, logger, maxHeld);
    }
  }

  #run(script: keyof typeof SCRIPTS, k: number, args: string[]): Promise<unknown> {
    return this.#scripts.run(script, this.#layout.store(k), args);
  }

  /**
   * The route arguments of a script: mode, entry text, max length, origin,
   * echo user. `stored`: the entry of a stored message, whose frame text the
   * script adds as a field of its own.
   */
  #routeArgs(delivery: Delivery | undefined, echo: string, stored = false): string[] {
    if (!this.#router || !delivery) return ["", "", "", "", ""];
    const inline = this.#layout.inline;
    return [
      inline ? "i" : "r",
      inline ? (stored ? storedEntry(delivery) : deliveryEntry(delivery)) : "",
      this.#streamLength,
      delivery.origin?.instance ?? "",
      echo,
    ];
  }

  /**
   * Resolves once `written` (a script call just sent to group `k`) has
   * resolved and, with `waitReplicas`, once enough replicas confirm it. One
   * `WAIT` per group, sent after every write of this turn of the event loop
   * on the same connection, covers them all (Redis answers it once the
   * replicas acknowledge everything written before it).
   */
  async #replicated<T>(k: number, written: Promise<T>): Promise<T> {
    if (!this.#wait) return await written;
    let waiting = this.#waiting.get(k);
    if (!waiting) {
      const { replicas, timeoutMs } = this.#wait;
      const key = this.#layout.store(k);
      waiting = Promise.resolve().then(async () => {
        this.#waiting.delete(k);
        const copies = await guard(
          "Storage",
          () => this.#link.send<number>(key, ["WAIT", String(replicas), String(timeoutMs)]),
        );
        if (copies < replicas) {
          throw new BackendUnavailableError(
            `Storage unavailable: copied to ${copies} of ${replicas} Redis replicas in time, try again`,
          );
        }
      });
      this.#waiting.set(k, waiting);
    }
    const [result] = await Promise.all([written, waiting]);
    return result;
  }

  /**
   * Stores the message: on a single Redis in one script that also routes it.
   * On a Redis Cluster the sender's group first claims (sender, id) (a
   * duplicate stops there), then the message is stored in the group of each
   * recipient (one script per group, in parallel), each routing to the
   * instances holding its recipients; a resend after a partial failure
   * completes the groups that missed it (the others answer duplicate).
   */
  async accept(message: NewMessage, delivery?: Delivery): Promise<AcceptResult> {
    const layout = this.#layout;
    if (layout.groups === 1 && layout.inline) {
      const reply = await this.#replicated(
        0,
        this.#run("ACCEPT", 0, [
          layout.presence(0),
          ...this.#acceptArgs(message),
          ...this.#routeArgs(delivery, delivery?.echoTo ?? "", delivery?.text === message.text),
          "",
          "",
          "",
          "",
          ...message.recipients,
        ]),
      ) as AcceptReply;
      if (reply[0] === 1 || reply[0] === 3) return { duplicate: true };
      if (reply[0] === 2) return { duplicate: false, overQuota: true };
      this.#logDrops(reply[2]);
      return { duplicate: false };
    }
    const slot = this.#router && delivery ? this.#router.outbox.reserve() : undefined;
    const appends: Append[] = [];
    return this.#inOrder((async () => {
      try {
        return await this.#acceptInGroups(message, slot ? delivery : undefined, appends);
      } finally {
        await slot?.fill(appends);
      }
    })());
  }

  /**
   * `call`, resolved only after every earlier call passed here settled: on a
   * Redis Cluster the groups' masters answer independently, and accepts and
   * acknowledgements still resolve in the order they were made.
   */
  #inOrder<T>(call: Promise<T>): Promise<T> {
    const before = this.#ordered;
    const after = call.then(
      async (value) => {
        await before;
        return value;
      },
      async (error) => {
        await before;
        throw error;
      },
    );
    this.#ordered = after.then(() => {}, () => {});
    return after;
  }

  /**
   * A strictly increasing stamp (µs since the epoch, this process's clock):
   * orders messages of one millisecond in a history merged from two groups.
   */
  #stamp(): string {
    const now = Math.round((performance.timeOrigin + performance.now()) * 1000);
    this.#lastStamp = Math.max(this.#lastStamp + 1, now);
    return String(this.#lastStamp);
  }

  /** The message's part of ACCEPT's arguments. */
  #acceptArgs(message: NewMessage): string[] {
    return [
      message.sender,
      message.id,
      String(message.type),
      message.text,
      String(message.acceptedAt),
      JSON.stringify(message.recipients),
      this.#maxPerUser,
      this.#maxPendingBytes,
    ];
  }

  /** {@link accept} on several groups; what is to be routed goes to `appends`. */
  async #acceptInGroups(
    message: NewMessage,
    delivery: Delivery | undefined,
    appends: Append[],
  ): Promise<AcceptResult> {
    const layout = this.#layout;
    const own = layout.group(message.sender);
    const groups = layout.split(message.recipients);
    const echo = delivery?.echoTo ?? "";
    const print = fingerprint(message.recipients);
    // Claimed alongside the copies, so that every call is sent now, in call order: by the copy's
    // script when the sender's group stores one, else by a script of its own (which also finds
    // the sender's other devices).
    const claimArgs = [print, String(groups.size), String(this.#claimSeconds)];
    const claiming = groups.has(own) ? undefined : this.#replicated(
      own,
      this.#run("CLAIM", own, [
        layout.presence(own),
        message.sender,
        message.id,
        String(this.#claimSeconds),
        delivery?.origin?.instance ?? "",
        echo,
        print,
        String(groups.size),
      ]),
    ).then(
      (reply) => reply as [1] | [0, string[]],
      // Settled here: the copies are awaited first, and a rejection must not go unhandled.
      (error: unknown) => error instanceof Error ? error : new Error(String(error)),
    );
    const entries = [...groups];
    const stamp = this.#stamp();
    const storing = Promise.allSettled(entries.map(([k, users]) =>
      this.#replicated(
        k,
        this.#run("ACCEPT", k, [
          layout.presence(k),
          ...this.#acceptArgs(message),
          ...this.#routeArgs(delivery, k === own ? echo : ""),
          stamp,
          ...(k === own ? claimArgs : ["", "", ""]),
          ...users,
        ]),
      ) as Promise<AcceptReply>
    ));
    const replies = await storing;
    let claim: Error | [1] | [0, string[]];
    if (claiming) {
      claim = await claiming;
    } else {
      const mine = replies[entries.findIndex(([k]) => k === own)];
      claim = mine.status === "rejected"
        ? (mine.reason instanceof Error ? mine.reason : new Error(String(mine.reason)))
        : mine.value[0] === 3
        ? [1]
        : [0, []];
    }
    if (claim instanceof Error || claim[0] === 1) {
      // Known already (or unknown whether): take back the copies this call stored.
      await Promise.all(replies.map((reply, i) => {
        if (reply.status !== "fulfilled" || reply.value[0] !== 0) return;
        const [k, users] = entries[i];
        return this.#run("REVOKE", k, [message.sender, message.id, ...users]);
      }));
      if (claim instanceof Error) throw claim;
      return { duplicate: true };
    }
    let duplicates = 0;
    let overQuota = false;
    let failed: unknown;
    const instances = new Set<string>();
    const gone: string[][] = [];
    let seq: string | undefined;
    let bytes: string | undefined;
    for (const reply of replies) {
      if (reply.status === "rejected") {
        failed ??= reply.reason;
        continue;
      }
      const value = reply.value;
      if (value[0] === 1 || value[0] === 3) duplicates++;
      else if (value[0] === 2) overQuota = true;
      else {
        const [, stored, drops, found, dropped, size] = value;
        this.#logDrops(drops);
        for (const instance of found) instances.add(instance);
        gone.push(dropped);
        seq = stored;
        bytes = size;
      }
    }
    const complete = failed === undefined && !overQuota;
    const released = this.#release(gone.flat());
    if (delivery && instances.size + claim[1].length > 0) {
      if (complete && duplicates < groups.size) {
        for (const instance of claim[1]) instances.add(instance);
      }
      // A seq names one group's copy: only a delivery to users of one group may carry it.
      // The frame text as a field of its own, not escaped into the entry (as on a single Redis).
      const apart = delivery.text === message.text;
      appends.push({
        instances: [...instances],
        text: apart ? storedEntry(delivery) : deliveryEntry(delivery),
        body: apart ? delivery.text : undefined,
        seq: groups.size === 1 ? seq : undefined,
        bytes: groups.size === 1 ? bytes : undefined,
      });
    }
    await released;
    if (failed !== undefined) throw failed;
    if (overQuota) return { duplicate: false, overQuota: true };
    return { duplicate: duplicates === groups.size };
  }

  /**
   * Releases, in each sender's group, the claims of the messages whose copy
   * in a group was removed (`gone`: sender, id pairs). Failures are logged:
   * a claim left behind only answers a resend duplicate until it expires
   * with the retention period.
   */
  async #release(gone: string[]): Promise<void> {
    if (gone.length === 0) return;
    const byGroup = new Map<number, string[]>();
    for (let i = 0; i < gone.length; i += 2) {
      const k = this.#layout.group(gone[i]);
      const list = byGroup.get(k);
      if (list) list.push(gone[i], gone[i + 1]);
      else byGroup.set(k, [gone[i], gone[i + 1]]);
    }
    await Promise.all(
      [...byGroup].map(([k, args]) =>
        this.#run("RELEASE", k, args).catch((error) =>
          this.#logger?.debug("Could not release a message's claim", { error })
        )
      ),
    );
  }

  #logDrops(drops: string[]): void {
    for (let i = 0; i < drops.length; i += 3) {
      this.#logger?.warn("Per-user cap reached: dropped an unacknowledged message", {
        user: drops[i],
        sender: drops[i + 1],
        id: drops[i + 2],
        maxPerUser: Number(this.#maxPerUser),
      });
    }
  }

  async unacknowledged(
    userId: string,
    options: UnacknowledgedOptions,
  ): Promise<UnacknowledgedPage> {
    // Before the first page: later pages come after it, so presence is written by then.
    if (options.after === undefined) await this.#beforeReplay?.(userId);
    const after = options.after !== undefined && /^\d+$/.test(options.after) ? options.after : "0";
    const limit = Math.max(0, Math.floor(options.limit));
    const reply = await this.#run("UNACKNOWLEDGED", this.#layout.group(userId), [
      userId,
      after,
      String(limit),
    ]) as string[][];
    const page = reply.length > limit ? reply.slice(0, limit) : reply;
    return {
      messages: page.map(([_seq, sender, id, type, text, at]) => ({
        sender,
        id,
        type: Number(type),
        text,
        acceptedAt: Number(at),
      })),
      cursor: page.length > 0 ? String(page[page.length - 1][0]) : undefined,
      more: reply.length > limit,
    };
  }

  /**
   * Marks are batched: those made in one turn of the event loop (e.g. for
   * every entry of one broker read) go to Redis as one script call per group
   * after it. A mark only moves `pending` to `delivered`, so its place among
   * other calls does not matter.
   */
  markDelivered(userId: string, keys: MessageKey[]): Promise<void> {
    if (keys.length === 0) return Promise.resolve();
    const marks = this.#marksOf(this.#layout.group(userId));
    for (const key of keys) {
      const { seq, bytes } = key as SequencedKey;
      marks.push(userId, key.sender, key.id, seq ?? "", bytes ?? "");
    }
    return this.#markedSoon();
  }

  /** One message delivered to several users: their marks join the same batch. */
  markDeliveredTo(key: MessageKey, userIds: readonly string[]): Promise<void> {
    if (userIds.length === 0) return Promise.resolve();
    // A seq names the copy of one group: it came with a delivery to users of that group only.
    const seq = (key as SequencedKey).seq ?? "";
    const bytes = (key as SequencedKey).bytes ?? "";
    for (const userId of userIds) {
      this.#marksOf(this.#layout.group(userId)).push(userId, key.sender, key.id, seq, bytes);
    }
    return this.#markedSoon();
  }

  #marksOf(k: number): string[] {
    let marks = this.#marks.get(k);
    if (!marks) this.#marks.set(k, marks = []);
    return marks;
  }

  #markedSoon(): Promise<void> {
    if (!this.#marked) {
      this.#marked = Promise.withResolvers<void>();
      queueMicrotask(() => this.#flushMarks());
    }
    return this.#marked.promise;
  }

  async #flushMarks(): Promise<void> {
    const byGroup = this.#marks;
    const done = this.#marked!;
    this.#marks = new Map();
    this.#marked = undefined;
    try {
      const calls = [];
      for (const [k, marks] of byGroup) {
        for (let i = 0; i < marks.length; i += MARKS_PER_CALL * 5) {
          calls.push(this.#run("MARK_DELIVERED", k, marks.slice(i, i + MARKS_PER_CALL * 5)));
        }
      }
      await Promise.all(calls);
      done.resolve();
    } catch (error) {
      done.reject(error);
    }
  }

  /**
   * Records the receipt in the user's group and routes the receipt frame
   * from there (the user's other devices, and the sender when they share
   * the group); on a Redis Cluster a sender of another group is looked up in
   * theirs, and the frame goes once to each instance found.
   */
  acknowledge(userId: string, key: MessageKey, delivery?: Delivery): Promise<boolean> {
    const acknowledged = this.#acknowledge(userId, key, delivery);
    return this.#layout.groups > 1 ? this.#inOrder(acknowledged) : acknowledged;
  }

  async #acknowledge(userId: string, key: MessageKey, delivery?: Delivery): Promise<boolean> {
    const layout = this.#layout;
    const k = layout.group(userId);
    const route = this.#router && delivery ? delivery : undefined;
    const here = route ? route.users.filter((user) => layout.group(user) === k) : [];
    const slot = route && !layout.inline ? this.#router!.outbox.reserve() : undefined;
    const lookups = slot
      ? [...layout.split(route!.users.filter((user) => layout.group(user) !== k))].map((
        [g, users],
      ) => this.#router!.lookup(g, users, "", route!, "").catch(() => [] as string[]))
      : [];
    const appends: Append[] = [];
    try {
      const reply = await this.#replicated(
        k,
        this.#run("ACKNOWLEDGE", k, [
          layout.presence(k),
          userId,
          key.sender,
          key.id,
          ...this.#routeArgs(route, route?.echoTo ?? ""),
          ...here,
        ]),
      ) as [0] | [1, string[]];
      if (reply[0] !== 1) return false;
      if (slot) {
        const instances = new Set(reply[1]);
        for (const found of await Promise.all(lookups)) {
          for (const instance of found) instances.add(instance);
        }
        if (instances.size > 0) {
          appends.push({ instances: [...instances], text: deliveryEntry(route!) });
        }
      }
      return true;
    } finally {
      await slot?.fill(appends);
    }
  }

  /**
   * A page of the conversation of two users, newest first. Each direction is
   * stored in its recipient's group; when the two users are in different
   * groups, both are read and merged by acceptance time, and the cursor
   * holds a position in each (`<seq in the user's group>_<seq in the peer's>`).
   */
  async history(userId: string, peer: string, options: HistoryOptions): Promise<HistoryPage> {
    const limit = Math.max(0, Math.floor(options.limit));
    const mine = this.#layout.group(userId);
    const theirs = this.#layout.group(peer);
    if (mine === theirs) {
      const before = options.before !== undefined && /^\d+$/.test(options.before)
        ? options.before
        : "";
      const rows = await this.#historyIn(mine, userId, peer, before, limit);
      const page = rows.slice(0, limit);
      return {
        messages: page.map(historyMessage),
        next: rows.length > limit && page.length > 0 ? page[page.length - 1][0] : undefined,
      };
    }
    const cursor = /^(\d*)_(\d*)$/.exec(options.before ?? "");
    const before = [cursor?.[1] ?? "", cursor?.[2] ?? ""];
    const sides = await Promise.all([
      this.#historyIn(mine, userId, peer, before[0], limit),
      this.#historyIn(theirs, userId, peer, before[1], limit),
    ]);
    const taken = [0, 0];
    const page: string[][] = [];
    while (page.length < limit) {
      const a = sides[0][taken[0]];
      const b = sides[1][taken[1]];
      if (!a && !b) break;
      const side = !b || (a && newer(a, b)) ? 0 : 1;
      page.push(sides[side][taken[side]++]);
    }
    const position = (side: number) =>
      taken[side] > 0 ? sides[side][taken[side] - 1][0] : before[side];
    const more = sides[0].length > taken[0] || sides[1].length > taken[1];
    return {
      messages: page.map(historyMessage),
      next: more && page.length > 0 ? `${position(0)}_${position(1)}` : undefined,
    };
  }

  async #historyIn(
    k: number,
    userId: string,
    peer: string,
    before: string,
    limit: number,
  ): Promise<string[][]> {
    return await this.#run("HISTORY", k, [userId, peer, before, String(limit)]) as string[][];
  }

  async pendingCount(): Promise<number> {
    let total = 0;
    for (let k = 0; k < this.#layout.groups; k++) {
      const prefix = this.#layout.store(k);
      const [stored, done] = await guard(
        "Storage",
        () => this.#link.send<(string | null)[]>(prefix, ["MGET", `${prefix}seq`, `${prefix}done`]),
      );
      total += Number(stored ?? 0) - Number(done ?? 0);
    }
    return total;
  }

  async sweep(now: number): Promise<number> {
    const cutoff = String(now - this.#retentionMs);
    let dropped = 0;
    let unacknowledged = 0;
    for (let k = 0; k < this.#layout.groups; k++) {
      while (true) {
        const [count, unacked, looked, gone] = await this.#run("SWEEP", k, [
          cutoff,
          String(this.#sweepBatch),
        ]) as [number, number, number, string[]];
        if (this.#layout.groups > 1) await this.#release(gone);
        dropped += count;
        unacknowledged += unacked;
        // Fewer than a batch looked at: the rest of the group is within the retention period.
        if (looked < this.#sweepBatch) break;
      }
    }
    if (unacknowledged > 0) {
      this.#logger?.warn("Retention sweep dropped unacknowledged messages", {
        dropped,
        unacknowledged,
      });
    } else if (dropped > 0) {
      this.#logger?.info("Retention sweep dropped old messages", { dropped });
    }
    return dropped;
  }

  close(): Promise<void> {
    this.#router?.outbox.close();
    return this.#link.close();
  }
}

/** A short hash of a recipient list: tells a resend from another message with its id. */
function fingerprint(recipients: readonly string[]): string {
  return fnv1a(recipients).toString(16);
}

/** Whether HISTORY row `a` was accepted after `b` (by acceptedAt, then order stamp). */
function newer(a: string[], b: string[]): boolean {
  const at = Number(a[5]) - Number(b[5]);
  return at !== 0 ? at > 0 : Number(a[8]) > Number(b[8]);
}

/** A HISTORY row as a history message. */
function historyMessage([_seq, sender, id, type, text, at, rcpt, state]: string[]) {
  return {
    sender,
    id,
    type: Number(type),
    text,
    acceptedAt: Number(at),
    recipients: JSON.parse(rcpt) as string[],
    state: STATES[state],
  };
}
