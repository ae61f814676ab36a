/**
 * Keeps SQLite's WAL file flushed to disk from a worker thread.
 *
 * Why: with `synchronous=NORMAL`, commits only write to the WAL (no fsync);
 * the fsyncs happen in checkpoints, which SQLite runs inside a commit on the
 * main thread, and the first of them flushes everything written to the WAL
 * since the last checkpoint. On the disk measured here an fdatasync costs about
 * 0.8 ms plus 0.75 ms per dirty MiB, so each 16 MiB checkpoint stalled every
 * frame in flight for 25–35 ms (open-loop p99 of 46–67 ms at 10,000 frames/s).
 * With the WAL flushed every few milliseconds off the main thread, the
 * checkpoint's own fsync has little left to do (p99 ≈ 14 ms in the same runs;
 * `bench/README.md` has the figures and the alternatives that were tried).
 *
 * Safe with SQLite's locking: the worker opens the `-wal` file, never the
 * database file, so closing its descriptor cannot drop SQLite's POSIX locks
 * (those are on the database file), and an fsync changes no data.
 *
 * @module
 */

/** The worker: on each message (the WAL's path), fdatasync that file and say so. */
const WORKER_SOURCE = `
let file;
self.onmessage = ({ data: path }) => {
  try {
    file ??= Deno.openSync(path, { read: true });
    file.syncDataSync();
    self.postMessage(true);
  } catch {
    // No WAL yet, or it went away: try again next time.
    try { file?.close(); } catch { /* already closed */ }
    file = undefined;
  }
};
`;

/** Flushes a WAL file from a worker thread at most every `intervalMs` while it is written. */
export class WalSyncer {
  #path: string;
  #intervalMs: number;
  #worker?: Worker;
  /** The worker's script: a blob URL, so a compiled binary has nothing to embed. */
  #url?: string;
  #timer?: ReturnType<typeof setTimeout>;
  #closed = false;
  #syncs = 0;

  /** `walPath`: the database's `-wal` file. */
  constructor(walPath: string, intervalMs = 20) {
    this.#path = walPath;
    this.#intervalMs = intervalMs;
  }

  /** Flushes done so far (a flush is skipped while the file does not exist). */
  get syncs(): number {
    return this.#syncs;
  }

  /** A transaction was committed: the WAL is flushed within `intervalMs`. */
  touched(): void {
    if (this.#closed || this.#timer !== undefined) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#start().postMessage(this.#path);
    }, this.#intervalMs);
  }

  /** Stops the timer and the worker. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#worker?.terminate();
    this.#worker = undefined;
    if (this.#url) URL.revokeObjectURL(this.#url);
    this.#url = undefined;
  }

  #start(): Worker {
    if (this.#worker) return this.#worker;
    this.#url = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "text/javascript" }));
    this.#worker = new Worker(this.#url, { type: "module", name: "wal-syncer" });
    this.#worker.onmessage = () => this.#syncs++;
    return this.#worker;
  }
}
