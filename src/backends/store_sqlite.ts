/**
 * Durable {@link MessageStore} on SQLite (`node:sqlite`): one file
 * `<dir>/messages.db`, the default `storage.driver`.
 *
 * Durability: writes are group-committed. `accept`, `markDelivered` and
 * `acknowledge` join a write queue; the queue is written in one transaction
 * per batch (at most {@link MAX_BATCH} operations) on the next event-loop turn
 * (`setImmediate`: a chained `setTimeout(0)` is clamped to ~2 ms per turn), or
 * at once when a batch is full, and the promises resolve in call order once
 * their transaction has committed. Reads first wait for the queue, so they see
 * every write made before them.
 *
 * The database runs in WAL mode with `synchronous=NORMAL` by default: a
 * committed transaction is in the WAL file (in the OS page cache) before
 * `accept` resolves, so it survives a crash or `kill -9` of the process (tested),
 * but an OS crash or power loss may lose the last transactions (never corrupt
 * the database). That is the guarantee of a 200. `synchronous: "full"` adds an
 * fsync per batch and survives those too; with group commit it cost little CPU
 * here (bench/store_bench.ts: ~0.85× the wall-clock rate of NORMAL), but the
 * fsync blocks the event loop for its whole duration on every batch, which on
 * slow disks stalls delivery, so it is an option, not the default.
 *
 * Throughput is bounded by write amplification, not by JavaScript (< 2% of the
 * profile): each message dirties about one page of each B-tree keyed by user,
 * written whole to the WAL and later checkpointed (the kernel write path is
 * ~40% of the profile). So the schema keeps only two such trees (see
 * `MIGRATIONS`) and checkpoints every 4000 pages. Checkpoints run inside a
 * commit on the main thread; with `synchronous: "normal"` a worker keeps the
 * WAL flushed meanwhile (`wal_syncer.ts`), so their fsync is short.
 *
 * Locking: the connection uses `locking_mode=EXCLUSIVE` and takes the write
 * lock at open, so a second server (in this or another process) opening the
 * same file fails at once. The lock is a POSIX lock on the file: the kernel
 * releases it when the process dies, also on `kill -9`. The owner's pid is
 * written to `<dir>/messages.db.pid` for the error message only. While the
 * server runs, no other program (the `sqlite3` shell included) can read the
 * file; exclusive mode also keeps the WAL index in memory (no `-shm` file).
 *
 * `maxPerUser` holds at accept: a recipient at the cap loses its oldest copy in
 * the transaction that adds the new one. The count of copies a recipient holds
 * is read from the primary key when first needed and kept in a cache of at most
 * {@link HELD_CACHE} recipients, so memory does not grow with the number of
 * distinct recipients (messages to made-up names cost disk, not memory).
 * Retention is enforced by {@link SqliteStore.sweep} in chunks of
 * {@link SWEEP_CHUNK} rows per transaction, yielding to the event loop between
 * chunks; the first sweep also trims recipients found above the cap at open
 * (written by an older version or under a larger `maxPerUser`).
 *
 * Needs only `--allow-read=<dir> --allow-write=<dir>`.
 *
 * @module
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { clearImmediate, setImmediate } from "node:timers";
import type {
  AcceptResult,
  DeliveryState,
  HistoryEntry,
  HistoryOptions,
  HistoryPage,
  MessageKey,
  MessageStore,
  NewMessage,
  UnacknowledgedOptions,
  UnacknowledgedPage,
} from "../core/store.ts";
import type { Logger } from "../log.ts";
import { WalSyncer } from "./wal_syncer.ts";
import { SYSTEM } from "../protocol/codes.ts";

/** Most operations written in one transaction. */
export const MAX_BATCH = 256;
/** Most rows deleted in one sweep transaction. */
export const SWEEP_CHUNK = 1000;
/** Recipients whose held count is cached (oldest entry evicted first). */
export const HELD_CACHE = 10_000;
/** Name of the database file inside the storage directory. */
export const DB_FILE = "messages.db";

/** Delivery states as stored: ordered so that `state < 2` means unacknowledged. */
const STATES: DeliveryState[] = ["pending", "delivered", "acknowledged"];
const DONE: Promise<void> = Promise.resolve();
const PENDING = 0;
const DELIVERED = 1;
const ACKNOWLEDGED = 2;

/**
 * Schema migrations; `PRAGMA user_version` is the number applied. Append only:
 * never edit a migration that has shipped.
 *
 * Every index keyed by user is written at random places, and each costs about
 * one dirty page per message of a batch, so there are only two: the unique
 * (sender, id) of `messages` for duplicates, and the primary key (recipient,
 * seq) of `deliveries`. `unacknowledged` and `history` read a range of that key
 * and filter on `state` or `sender`: at most `maxPerUser` rows per user. The
 * `seq` index only grows at its end, which is cheap; retention and caps use it.
 */
const MIGRATIONS: string[] = [
  `CREATE TABLE messages (
     seq INTEGER PRIMARY KEY,
     sender TEXT NOT NULL,
     id TEXT NOT NULL,
     type INTEGER NOT NULL,
     text TEXT NOT NULL,
     accepted_at INTEGER NOT NULL,
     recipients TEXT NOT NULL,
     UNIQUE (sender, id)
   );
   CREATE TABLE deliveries (
     recipient TEXT NOT NULL,
     seq INTEGER NOT NULL,
     sender TEXT NOT NULL,
     state INTEGER NOT NULL DEFAULT 0,
     PRIMARY KEY (recipient, seq)
   ) WITHOUT ROWID;
   CREATE INDEX deliveries_seq ON deliveries (seq);`,
];

/** Schema version this code writes. */
export const SCHEMA_VERSION: number = MIGRATIONS.length;

/** Options of {@link openSqliteStore}. */
export interface SqliteStoreOptions {
  /** Directory of the database file; created if missing. */
  dir: string;
  /** Messages kept per recipient; the oldest are dropped by `sweep` past it. @default 10000 */
  maxPerUser?: number;
  /** Days a message is kept. @default 30 */
  retentionDays?: number;
  /** Where drops and write errors are reported. */
  logger?: Logger;
  /**
   * `normal`: a resolved `accept` survives a process crash (WAL in the OS cache).
   * `full`: also an OS crash or power loss (one fsync per batch).
   * @default "normal"
   */
  synchronous?: "normal" | "full";
  /** Characters of pending copies a sender may have; no limit when absent. */
  maxPendingBytesPerSender?: number;
}

type Deferred<T> = { resolve(value: T): void; reject(error: unknown): void };

type Op =
  | Deferred<AcceptResult> & { kind: "accept"; message: NewMessage }
  | Deferred<void> & { kind: "delivered"; marks: Iterable<Mark> }
  | Deferred<boolean> & { kind: "ack"; userId: string; key: MessageKey };

/** Delivery marks of one message not yet written: one user, or several. */
interface Mark {
  sender: string;
  id: string;
  users: string | Set<string>;
}

/**
 * How long a delivery mark waits before it is written. A receipt that comes
 * back meanwhile (the usual case with receipts on: one round trip) makes it
 * moot, and it is never written: one write less per message.
 */
export const MARK_DELAY_MS = 200;

const NO_ONE_WAITS: Deferred<void> = { resolve() {}, reject() {} };

/** Counter changes of a transaction, applied only once it has committed. */
class Delta {
  pending = 0;
  held = new Map<string, number>();
  /** Change of pending characters by sender. */
  bytes = new Map<string, number>();
  add(user: string, n: number) {
    this.held.set(user, (this.held.get(user) ?? 0) + n);
  }
  /** A pending copy from `sender` of `n` characters came (n > 0) or went (n < 0). */
  addBytes(sender: string, n: number) {
    if (sender !== SYSTEM) this.bytes.set(sender, (this.bytes.get(sender) ?? 0) + n);
  }
}

/** Row of a message as selected for delivery or history. */
interface MessageRow {
  seq: number;
  sender: string;
  id: string;
  type: number;
  text: string;
  accepted_at: number;
  recipients: string;
  state: number;
}

/**
 * Opens (creating if needed) the store in `options.dir`.
 *
 * Fails with a clear error when the directory cannot be used, when another
 * server holds it, or when its schema is newer than this code.
 *
 * @example
 * ```ts
 * import { openSqliteStore } from "./store_sqlite.ts";
 *
 * const dir = await Deno.makeTempDir();
 * const store = await openSqliteStore({ dir, maxPerUser: 10000, retentionDays: 30 });
 * const message = {
 *   sender: "alice",
 *   id: "m1",
 *   type: 2001,
 *   recipients: ["bob"],
 *   text: '{"type":2001,"id":"m1","from":"alice","to":["bob"]}',
 *   acceptedAt: Date.now(),
 * };
 * await store.accept(message); // committed: survives a crash of the process
 * (await store.unacknowledged("bob", { limit: 100 })).messages.length; // 1
 * await store.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function openSqliteStore(options: SqliteStoreOptions): Promise<SqliteStore> {
  const dir = options.dir;
  try {
    await Deno.mkdir(dir, { recursive: true });
    const info = await Deno.stat(dir);
    if (!info.isDirectory) throw new Error("not a directory");
  } catch (error) {
    const detail = error instanceof Deno.errors.AlreadyExists
      ? "not a directory"
      : (error as Error).message;
    throw new Error(`Cannot open storage ${dir}: ${detail}`, { cause: error });
  }
  const path = `${dir}/${DB_FILE}`;
  const pidPath = `${path}.pid`;
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(path);
  } catch (error) {
    throw new Error(`Cannot open storage ${path}: ${(error as Error).message}`, { cause: error });
  }
  try {
    try {
      // Prepared statements: errors of `exec` carry no `errcode` in Deno 2.9.
      db.prepare("PRAGMA locking_mode = EXCLUSIVE").get();
      db.prepare("PRAGMA journal_mode = WAL").get();
      // Takes the lock now and keeps it until close (exclusive locking mode).
      db.prepare("BEGIN EXCLUSIVE").run();
      db.prepare("COMMIT").run();
    } catch (error) {
      if (!isBusy(error)) throw error;
      let owner = "pid unknown";
      try {
        owner = `pid ${(await Deno.readTextFile(pidPath)).trim()}`;
      } catch {
        // No pid file: report the lock without it.
      }
      throw new Error(`Storage ${dir} is locked by another server (${owner})`, { cause: error });
    }
    migrate(db, path);
    db.exec(`PRAGMA synchronous = ${options.synchronous === "full" ? "FULL" : "NORMAL"}`);
    // Fewer, larger checkpoints: each copies a page once however often it changed.
    db.exec("PRAGMA wal_autocheckpoint = 4000"); // pages: a WAL of about 16 MiB
    db.exec("PRAGMA cache_size = -32768"); // 32 MiB of page cache
    await Deno.writeTextFile(pidPath, `${Deno.pid}\n`);
    return new SqliteStore(db, path, options);
  } catch (error) {
    db.close();
    if ((error as Error).message.startsWith("Storage ")) throw error;
    throw new Error(`Cannot open storage ${path}: ${(error as Error).message}`, { cause: error });
  }
}

function migrate(db: DatabaseSync, path: string) {
  const { user_version: version } = db.prepare("PRAGMA user_version").get() as {
    user_version: number;
  };
  if (version > SCHEMA_VERSION) {
    throw new Error(
      `Storage ${path} has schema version ${version}, newer than this server's ${SCHEMA_VERSION}: upgrade the server`,
    );
  }
  for (let v = version; v < SCHEMA_VERSION; v++) {
    db.exec("BEGIN");
    try {
      db.exec(MIGRATIONS[v]);
      db.exec(`PRAGMA user_version = ${v + 1}`);
      db.exec("COMMIT");
    } catch (error) {
      db.exec("ROLLBACK");
      throw new Error(`Migration to schema version ${v + 1} failed: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }
}

/** The SQLite message store; get one from {@link openSqliteStore}. */
export class SqliteStore implements MessageStore {
  #db: DatabaseSync;
  #pidPath: string;
  #maxPerUser: number;
  #retentionMs: number;
  #logger?: Logger;
  #closed = false;
  /** Flushes the WAL off the main thread (synchronous=NORMAL only). */
  #walSync?: WalSyncer;

  /** Write operations not yet committed, in call order. */
  #queue: Op[] = [];
  /** Delivery marks waiting to be written, by `sender\0id`. */
  #marks = new Map<string, Mark>();
  #markTimer?: ReturnType<typeof setTimeout>;
  #timer?: ReturnType<typeof setImmediate>;
  /** Reads waiting for the queue to be written. */
  #waiters: (() => void)[] = [];

  /** Unacknowledged (recipient, message) pairs. */
  #pending: number;
  /** Committed deliveries kept per recipient, for at most {@link HELD_CACHE} recipients. */
  #held = new Map<string, number>();
  /** Recipients found above `maxPerUser` at open; undefined until the first sweep looked. */
  #overCap?: Set<string>;
  #sweeping?: Promise<unknown>;
  #maxPendingBytes: number;
  /** Characters of pending copies by sender, senders with none absent (SYSTEM is not counted). */
  #pendingBytes = new Map<string, number>();

  /** The prepared statements, by what they do. */
  #sql: Statements;

  /** Use {@link openSqliteStore}. */
  constructor(db: DatabaseSync, path: string, options: SqliteStoreOptions) {
    this.#db = db;
    this.#pidPath = `${path}.pid`;
    if (options.synchronous !== "full") this.#walSync = new WalSyncer(`${path}-wal`);
    this.#maxPerUser = options.maxPerUser ?? 10000;
    this.#retentionMs = (options.retentionDays ?? 30) * 86_400_000;
    this.#logger = options.logger;

    this.#sql = prepareStatements(db);

    this.#pending = (db.prepare("SELECT COUNT(*) AS n FROM deliveries WHERE state < 2").get() as {
      n: number;
    }).n;
    this.#maxPendingBytes = options.maxPendingBytesPerSender ?? Infinity;
    // One entry per sender with pending copies: senders are users who logged in.
    const pendingBySender = db.prepare(
      `SELECT d.sender, SUM(length(m.text)) AS n FROM deliveries d JOIN messages m ON m.seq = d.seq
       WHERE d.state = ${PENDING} AND d.sender <> ? GROUP BY d.sender`,
    );
    for (const row of pendingBySender.iterate(SYSTEM)) {
      const { sender, n } = row as { sender: string; n: number };
      this.#pendingBytes.set(sender, n);
    }
    // Those scans filled the page cache with pages nobody may read again: give them back.
    db.exec("PRAGMA shrink_memory");
  }

  /**
   * Copies `user` holds, as committed plus the changes of the transaction
   * being written (`delta`). Reads the count from the primary key on a cache miss.
   */
  #heldBy(user: string, delta: Delta): number {
    const pendingChange = delta.held.get(user) ?? 0;
    let committed = this.#held.get(user);
    if (committed === undefined) {
      // The count sees this transaction's own rows: take them out.
      committed = (this.#sql.countHeld.get(user) as { n: number }).n - pendingChange;
      this.#cacheHeld(user, committed);
    }
    return committed + pendingChange;
  }

  #cacheHeld(user: string, n: number) {
    if (!this.#held.has(user) && this.#held.size >= HELD_CACHE) {
      this.#held.delete(this.#held.keys().next().value!);
    }
    this.#held.set(user, n);
  }

  accept(message: NewMessage): Promise<AcceptResult> {
    return this.#enqueue<AcceptResult>((d) => ({ kind: "accept", message, ...d }));
  }

  markDelivered(userId: string, keys: MessageKey[]): Promise<void> {
    for (const key of keys) this.#mark(key, [userId]);
    return this.#closed ? Promise.reject(new Error("Storage is closed")) : DONE;
  }

  markDeliveredTo(key: MessageKey, userIds: readonly string[]): Promise<void> {
    this.#mark(key, userIds);
    return this.#closed ? Promise.reject(new Error("Storage is closed")) : DONE;
  }

  /**
   * Delivery marks wait {@link MARK_DELAY_MS} and are then written in one
   * batch; reads and `close` write them first, so every read sees them. The
   * delivered state is informational (a delivered message is replayed like a
   * pending one until acknowledged), so a crash that loses the last marks
   * loses nothing a client relies on.
   */
  #mark({ sender, id }: MessageKey, userIds: readonly string[]): void {
    if (this.#closed || userIds.length === 0) return;
    const key = `${sender}\u0000${id}`;
    const mark = this.#marks.get(key);
    if (!mark) {
      const users = userIds.length === 1 ? userIds[0] : new Set(userIds);
      this.#marks.set(key, { sender, id, users });
    } else {
      if (typeof mark.users === "string") mark.users = new Set([mark.users]);
      for (const user of userIds) mark.users.add(user);
    }
    this.#markTimer ??= setTimeout(() => this.#writeMarks(), MARK_DELAY_MS);
  }

  /** Queues the delivery marks still waiting. */
  #writeMarks(): void {
    clearTimeout(this.#markTimer);
    this.#markTimer = undefined;
    if (this.#marks.size === 0) return;
    const marks = this.#marks.values();
    this.#marks = new Map();
    this.#queue.push({ kind: "delivered", marks, ...NO_ONE_WAITS });
    if (this.#queue.length >= MAX_BATCH) this.#flush();
    else this.#timer ??= setImmediate(() => this.#flush());
  }

  acknowledge(userId: string, key: MessageKey): Promise<boolean> {
    if (this.#marks.size > 0) {
      // A mark still waiting for this user is moot now.
      const waiting = `${key.sender}\u0000${key.id}`;
      const mark = this.#marks.get(waiting);
      const users = mark?.users;
      if (users === userId || (typeof users === "object" && users.delete(userId) && !users.size)) {
        this.#marks.delete(waiting);
      }
    }
    return this.#enqueue<boolean>((d) => ({ kind: "ack", userId, key, ...d }));
  }

  async unacknowledged(
    userId: string,
    options: UnacknowledgedOptions,
  ): Promise<UnacknowledgedPage> {
    await this.#settled();
    const cursor = options.after === undefined ? 0 : Number(options.after);
    const after = Number.isSafeInteger(cursor) ? cursor : 0;
    const limit = Math.max(0, Math.floor(options.limit));
    const rows = this.#sql.unacked.all(userId, after, limit + 1) as unknown as MessageRow[];
    const page = rows.length > limit ? rows.slice(0, limit) : rows;
    return {
      messages: page.map((row) => ({
        sender: row.sender,
        id: row.id,
        type: row.type,
        text: row.text,
        acceptedAt: row.accepted_at,
      })),
      cursor: page.length > 0 ? String(page[page.length - 1].seq) : undefined,
      more: rows.length > limit,
    };
  }

  async history(userId: string, peer: string, options: HistoryOptions): Promise<HistoryPage> {
    await this.#settled();
    const cursor = options.before === undefined ? NaN : Number(options.before);
    const before = Number.isSafeInteger(cursor) ? cursor : Number.MAX_SAFE_INTEGER;
    const limit = Math.max(0, Math.floor(options.limit));
    const rows = this.#sql.history.all(userId, peer, before, limit + 1) as unknown as MessageRow[];
    const page = rows.slice(0, limit);
    const messages: HistoryEntry[] = page.map((row) => ({
      sender: row.sender,
      id: row.id,
      type: row.type,
      text: row.text,
      acceptedAt: row.accepted_at,
      recipients: JSON.parse(row.recipients),
      state: STATES[row.state],
    }));
    const next = rows.length > limit && page.length > 0
      ? String(page[page.length - 1].seq)
      : undefined;
    return { messages, next };
  }

  async pendingCount(): Promise<number> {
    await this.#settled();
    return this.#pending;
  }

  /**
   * Drops messages older than the retention period (oldest first, stopping at
   * the first newer one), then the oldest messages of every recipient above
   * `maxPerUser`. Works in transactions of at most {@link SWEEP_CHUNK} rows and
   * yields to the event loop between them. Resolves the number of messages
   * dropped by retention plus the number of recipient copies dropped by caps.
   * A sweep already running is awaited rather than started twice.
   */
  sweep(now: number): Promise<number> {
    if (this.#closed) return Promise.reject(new Error("Storage is closed"));
    const run = this.#sweeping ? this.#sweeping.then(() => this.#sweep(now)) : this.#sweep(now);
    const done = run.finally(() => {
      if (this.#sweeping === done) this.#sweeping = undefined;
    });
    this.#sweeping = done;
    return done;
  }

  async #sweep(now: number): Promise<number> {
    await this.#settled();
    const cutoff = now - this.#retentionMs;
    let dropped = 0;
    let unacked = 0;
    while (!this.#closed) {
      const chunk = this.#transact((delta) => this.#dropOld(cutoff, delta));
      dropped += chunk.messages;
      unacked += chunk.unacked;
      if (!chunk.more) break;
      await nextTurn();
    }
    if (dropped > 0) {
      const fields = { dropped, unacknowledged: unacked, retentionDays: this.#retentionMs / 864e5 };
      if (unacked > 0) {
        this.#logger?.warn("Retention sweep dropped unacknowledged messages", fields);
      } else this.#logger?.info("Retention sweep dropped old messages", fields);
    }
    if (!this.#overCap) await this.#findOverCap();
    for (const user of [...this.#overCap!]) {
      let userDropped = 0;
      let userUnacked = 0;
      while (!this.#closed) {
        const excess = this.#heldBy(user, new Delta()) - this.#maxPerUser;
        if (excess <= 0) break;
        const chunk = this.#transact((delta) =>
          this.#dropOldestOf(user, Math.min(excess, SWEEP_CHUNK), delta)
        );
        userDropped += chunk.dropped;
        userUnacked += chunk.unacked;
        await nextTurn();
      }
      if (this.#closed) break;
      this.#overCap!.delete(user);
      dropped += userDropped;
      if (userUnacked > 0) {
        this.#logger?.warn("Per-user cap reached: dropped unacknowledged messages", {
          user,
          dropped: userDropped,
          unacknowledged: userUnacked,
          maxPerUser: this.#maxPerUser,
        });
      }
    }
    return dropped;
  }

  /** Finds the recipients above the cap, a chunk of recipients per event-loop turn. */
  async #findOverCap() {
    const found = new Set<string>();
    let after = "";
    while (!this.#closed) {
      const rows = this.#sql.overCapAfter.all(after) as { recipient: string; n: number }[];
      for (const { recipient, n } of rows) if (n > this.#maxPerUser) found.add(recipient);
      if (rows.length < SWEEP_CHUNK) break;
      after = rows[rows.length - 1].recipient;
      await nextTurn();
    }
    this.#overCap = found;
  }

  /** One retention chunk: the oldest messages, up to the first one not old enough. */
  #dropOld(cutoff: number, delta: Delta) {
    const rows = this.#sql.oldest.all(SWEEP_CHUNK) as { seq: number; accepted_at: number }[];
    let last = -1;
    let messages = 0;
    for (const row of rows) {
      if (row.accepted_at >= cutoff) break;
      last = row.seq;
      messages++;
    }
    let unacked = 0;
    if (messages > 0) {
      const gone = this.#sql.deleteDeliveriesUpTo.all(last) as {
        recipient: string;
        state: number;
        sender: string;
        n: number;
      }[];
      for (const { recipient, state, sender, n } of gone) {
        delta.add(recipient, -1);
        if (state === PENDING) delta.addBytes(sender, -n);
        if (state < ACKNOWLEDGED) {
          delta.pending--;
          unacked++;
        }
      }
      this.#sql.deleteMessagesUpTo.run(last);
    }
    return { messages, unacked, more: messages === rows.length && messages > 0 };
  }

  /** One cap chunk: `user`'s `count` oldest copies, and the messages nobody holds anymore. */
  #dropOldestOf(user: string, count: number, delta: Delta) {
    const rows = this.#sql.userOldest.all(user, count) as {
      seq: number;
      state: number;
      sender: string;
      n: number;
    }[];
    let unacked = 0;
    for (const { seq, state, sender, n } of rows) {
      this.#sql.deleteDelivery.run(user, seq);
      this.#sql.deleteOrphan.run(seq);
      if (state === PENDING) delta.addBytes(sender, -n);
      if (state < ACKNOWLEDGED) {
        delta.pending--;
        unacked++;
      }
    }
    delta.add(user, -rows.length);
    return { dropped: rows.length, unacked };
  }

  /** Drops `user`'s `excess` oldest copies to make room for a new one; logs unacknowledged drops. */
  #capAtAccept(user: string, excess: number, delta: Delta) {
    const { dropped, unacked } = this.#dropOldestOf(user, excess, delta);
    if (unacked > 0) {
      this.#logger?.warn("Per-user cap reached: dropped an unacknowledged message", {
        user,
        dropped,
        unacknowledged: unacked,
        maxPerUser: this.#maxPerUser,
      });
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#writeMarks();
    this.#flush();
    this.#closed = true;
    await this.#sweeping?.catch(() => {});
    this.#walSync?.close();
    this.#db.close();
    try {
      await Deno.remove(this.#pidPath);
    } catch {
      // Already gone, or not ours to remove: the lock, not this file, guards the store.
    }
  }

  #enqueue<T>(make: (deferred: Deferred<T>) => Op): Promise<T> {
    if (this.#closed) return Promise.reject(new Error("Storage is closed"));
    const { promise, resolve, reject } = Promise.withResolvers<T>();
    this.#queue.push(make({ resolve, reject } as Deferred<T>));
    if (this.#queue.length >= MAX_BATCH) this.#flush();
    else this.#timer ??= setImmediate(() => this.#flush());
    return promise;
  }

  /** Resolves once every write queued so far is committed (or failed); rejects once closed. */
  async #settled(): Promise<void> {
    if (!this.#closed) this.#writeMarks();
    if (this.#queue.length > 0 && !this.#closed) {
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    if (this.#closed) throw new Error("Storage is closed");
  }

  /** Writes the whole queue, {@link MAX_BATCH} operations per transaction. */
  #flush() {
    if (this.#timer !== undefined) {
      clearImmediate(this.#timer);
      this.#timer = undefined;
    }
    while (this.#queue.length > 0) {
      const batch = this.#queue.length <= MAX_BATCH ? this.#queue : this.#queue.slice(0, MAX_BATCH);
      this.#queue = batch === this.#queue ? [] : this.#queue.slice(MAX_BATCH);
      this.#commit(batch);
    }
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }

  #commit(batch: Op[]) {
    const results: unknown[] = [];
    try {
      this.#transact((delta) => {
        for (const op of batch) results.push(this.#apply(op, delta));
      });
    } catch (error) {
      if (batch.length > 1) {
        // Find the culprit: one transaction per operation, so only it fails.
        for (const op of batch) this.#commit([op]);
        return;
      }
      this.#logger?.error("Storage write failed", { kind: batch[0].kind, error });
      batch[0].reject(error);
      return;
    }
    for (let i = 0; i < batch.length; i++) {
      (batch[i].resolve as (value: unknown) => void)(results[i]);
    }
  }

  /** Runs `work` in a transaction; counters change only if it commits. */
  #transact<T>(work: (delta: Delta) => T): T {
    const delta = new Delta();
    this.#db.exec("BEGIN");
    let result: T;
    try {
      result = work(delta);
      this.#db.exec("COMMIT");
      this.#walSync?.touched();
    } catch (error) {
      if (this.#db.isTransaction) this.#db.exec("ROLLBACK");
      throw error;
    }
    this.#pending += delta.pending;
    for (const [sender, n] of delta.bytes) {
      const bytes = (this.#pendingBytes.get(sender) ?? 0) + n;
      if (bytes > 0) this.#pendingBytes.set(sender, bytes);
      else this.#pendingBytes.delete(sender);
    }
    for (const [user, n] of delta.held) {
      const held = this.#held.get(user);
      // Not cached: the next use counts it again.
      if (held !== undefined) this.#cacheHeld(user, held + n);
    }
    return result;
  }

  #apply(op: Op, delta: Delta): AcceptResult | boolean | void {
    switch (op.kind) {
      case "accept": {
        const { sender, id, type, text, acceptedAt, recipients } = op.message;
        const inserted = this.#sql.insertMessage.get(
          sender,
          id,
          type,
          text,
          acceptedAt,
          JSON.stringify(recipients),
        ) as { seq: number; n: number } | undefined;
        if (!inserted) return { duplicate: true };
        const { seq, n } = inserted;
        if (sender !== SYSTEM && this.#maxPendingBytes !== Infinity) {
          const bytes = (this.#pendingBytes.get(sender) ?? 0) + (delta.bytes.get(sender) ?? 0);
          if (bytes + n * recipients.length > this.#maxPendingBytes) {
            this.#sql.deleteMessage.run(seq);
            return { duplicate: false, overQuota: true };
          }
        }
        for (const user of recipients) {
          const excess = this.#heldBy(user, delta) + 1 - this.#maxPerUser;
          if (excess > 0) this.#capAtAccept(user, excess, delta);
          if (this.#sql.insertDelivery.run(user, seq, sender).changes === 0) continue;
          delta.pending++;
          delta.add(user, 1);
          delta.addBytes(sender, n);
        }
        return { duplicate: false };
      }
      case "delivered":
        for (const { sender, id, users } of op.marks) {
          if (typeof users === "string" || users.size === 1) {
            const user = typeof users === "string" ? users : users.values().next().value!;
            const row = this.#sql.markDelivered.get(user, sender, id) as { n: number } | undefined;
            if (row) delta.addBytes(sender, -row.n);
          } else if (users.size > 1) {
            const rows = this.#sql.markDeliveredTo.all(sender, id, JSON.stringify([...users])) as {
              n: number;
            }[];
            for (const row of rows) delta.addBytes(sender, -row.n);
          }
        }
        return;
      case "ack": {
        const { sender, id } = op.key;
        // Most receipts come before their delivery mark was written (it waits
        // MARK_DELAY_MS and the receipt makes it moot): try the pending state first.
        const row = this.#sql.ackPending.get(op.userId, sender, id) as { n: number } | undefined;
        if (row) {
          delta.addBytes(sender, -row.n);
          delta.pending--;
          return true;
        }
        if (this.#sql.ack.run(op.userId, sender, id).changes > 0) {
          delta.pending--;
          return true;
        }
        return this.#sql.addressed.get(op.userId, sender, id) !== undefined;
      }
    }
  }
}

/** Whether `error` is SQLITE_BUSY: another connection holds the lock. */
function isBusy(error: unknown): boolean {
  const { errcode, message } = error as { errcode?: number; message?: string };
  return errcode === 5 || /database is locked/.test(message ?? "");
}

/** Resolves on the next turn of the event loop, after pending I/O. */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** The store's prepared statements. */
type Statements = Record<
  | "insertMessage"
  | "insertDelivery"
  | "markDelivered"
  | "markDeliveredTo"
  | "ack"
  | "ackPending"
  | "deleteMessage"
  | "addressed"
  | "unacked"
  | "history"
  | "oldest"
  | "deleteDeliveriesUpTo"
  | "deleteMessagesUpTo"
  | "userOldest"
  | "countHeld"
  | "overCapAfter"
  | "deleteDelivery"
  | "deleteOrphan",
  StatementSync
>;

/** Prepares every statement of the store once, at open. */
function prepareStatements(db: DatabaseSync): Statements {
  const seqOf = "(SELECT seq FROM messages WHERE sender = ? AND id = ?)";
  const lengthOf = "(SELECT length(text) FROM messages WHERE seq = deliveries.seq)";
  return {
    insertMessage: db.prepare(
      `INSERT INTO messages (sender, id, type, text, accepted_at, recipients)
         VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sender, id) DO NOTHING
         RETURNING seq, length(text) AS n`,
    ),
    deleteMessage: db.prepare("DELETE FROM messages WHERE seq = ?"),
    insertDelivery: db.prepare(
      "INSERT INTO deliveries (recipient, seq, sender) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
    ),
    markDelivered: db.prepare(
      `UPDATE deliveries SET state = ${DELIVERED}
         WHERE recipient = ? AND seq = ${seqOf} AND state = ${PENDING} RETURNING ${lengthOf} AS n`,
    ),
    ackPending: db.prepare(
      `UPDATE deliveries SET state = ${ACKNOWLEDGED}
         WHERE recipient = ? AND seq = ${seqOf} AND state = ${PENDING} RETURNING ${lengthOf} AS n`,
    ),
    // One statement for every recipient reached: the rows of one seq, by the seq index.
    markDeliveredTo: db.prepare(
      `UPDATE deliveries SET state = ${DELIVERED}
         WHERE seq = ${seqOf} AND state = ${PENDING}
           AND recipient IN (SELECT value FROM json_each(?)) RETURNING ${lengthOf} AS n`,
    ),
    ack: db.prepare(
      `UPDATE deliveries SET state = ${ACKNOWLEDGED}
         WHERE recipient = ? AND seq = ${seqOf} AND state = ${DELIVERED}`,
    ),
    addressed: db.prepare(
      `SELECT 1 AS found FROM deliveries WHERE recipient = ? AND seq = ${seqOf}`,
    ),
    unacked: db.prepare(
      `SELECT d.seq, m.sender, m.id, m.type, m.text, m.accepted_at
         FROM deliveries d JOIN messages m ON m.seq = d.seq
         WHERE d.recipient = ? AND d.seq > ? AND d.state < 2 ORDER BY d.seq LIMIT ?`,
    ),
    // Newest first from each direction (each a range of the primary key), merged.
    history: db.prepare(
      `WITH pick AS (
           SELECT seq, state FROM (
             SELECT seq, state FROM deliveries
             WHERE recipient = ?2 AND sender = ?1 AND seq < ?3 ORDER BY seq DESC LIMIT ?4)
           UNION ALL
           SELECT seq, state FROM (
             SELECT seq, state FROM deliveries
             WHERE recipient = ?1 AND sender = ?2 AND seq < ?3 AND ?1 <> ?2
             ORDER BY seq DESC LIMIT ?4)
         )
         SELECT m.seq, m.sender, m.id, m.type, m.text, m.accepted_at, m.recipients, pick.state
         FROM pick JOIN messages m ON m.seq = pick.seq ORDER BY pick.seq DESC LIMIT ?4`,
    ),
    oldest: db.prepare("SELECT seq, accepted_at FROM messages ORDER BY seq LIMIT ?"),
    deleteDeliveriesUpTo: db.prepare(
      `DELETE FROM deliveries WHERE seq <= ? RETURNING recipient, state, sender, ${lengthOf} AS n`,
    ),
    deleteMessagesUpTo: db.prepare("DELETE FROM messages WHERE seq <= ?"),
    userOldest: db.prepare(
      `SELECT d.seq, d.state, d.sender, length(m.text) AS n
         FROM deliveries d JOIN messages m ON m.seq = d.seq
         WHERE d.recipient = ? ORDER BY d.seq LIMIT ?`,
    ),
    countHeld: db.prepare("SELECT COUNT(*) AS n FROM deliveries WHERE recipient = ?"),
    overCapAfter: db.prepare(
      `SELECT recipient, COUNT(*) AS n FROM deliveries WHERE recipient > ?
         GROUP BY recipient ORDER BY recipient LIMIT ${SWEEP_CHUNK}`,
    ),
    deleteDelivery: db.prepare("DELETE FROM deliveries WHERE recipient = ? AND seq = ?"),
    deleteOrphan: db.prepare(
      "DELETE FROM messages WHERE seq = ?1 AND NOT EXISTS (SELECT 1 FROM deliveries WHERE seq = ?1)",
    ),
  };
}
