/**
 * What stands between a login route and a password guesser: failure budgets
 * per client address and per username, and a bound on how many password hashes
 * run at once (each costs ~45 ms of a core; unbounded, a login flood starves
 * the event loop and every connected user with it).
 *
 * @module
 */

/** Options of {@link LoginGuard}. */
export interface LoginGuardOptions {
  /** Failed logins allowed from one address per window. @default 20 */
  maxFailuresPerIp?: number;
  /** Failed logins allowed for one username per window. @default 10 */
  maxFailuresPerUsername?: number;
  /** Length of a failure window in seconds. @default 300 */
  windowSeconds?: number;
  /** Password hashes computed at once. @default 1 */
  maxConcurrentHashes?: number;
  /** Logins waiting for a hash slot; more are refused at once. @default 64 */
  maxQueuedLogins?: number;
  /** Addresses and usernames tracked at most (each); the oldest window goes first. @default 100000 */
  maxTracked?: number;
  /** Clock, for tests. */
  now?: () => number;
}

/** A login refused before any hashing: the status and when to come back. */
export interface LoginRefusal {
  status: 429 | 503;
  msg: string;
  /** Seconds until trying again makes sense. */
  retryAfter: number;
}

interface Window {
  failures: number;
  /** When the window ends, ms since the epoch. */
  ends: number;
}

/** Fixed-window failure counters by key, at most `max` keys. */
class FailureBudget {
  #windows = new Map<string, Window>();
  #limit: number;
  #windowMs: number;
  #max: number;

  constructor(limit: number, windowMs: number, max: number) {
    this.#limit = limit;
    this.#windowMs = windowMs;
    this.#max = max;
  }

  /** Milliseconds until `key` may try again, or 0 when it may now. */
  blockedFor(key: string, now: number): number {
    const window = this.#windows.get(key);
    if (!window) return 0;
    if (window.ends <= now) {
      this.#windows.delete(key);
      return 0;
    }
    return window.failures >= this.#limit ? window.ends - now : 0;
  }

  failed(key: string, now: number): void {
    let window = this.#windows.get(key);
    if (!window || window.ends <= now) {
      this.#windows.delete(key);
      // Insertion order is window order: the first key is the oldest window.
      if (this.#windows.size >= this.#max) this.#windows.delete(this.#windows.keys().next().value!);
      window = { failures: 0, ends: now + this.#windowMs };
      this.#windows.set(key, window);
    }
    window.failures++;
  }

  clear(key: string): void {
    this.#windows.delete(key);
  }

  get size(): number {
    return this.#windows.size;
  }
}

/** Budgets and the hashing queue of the login routes. */
export class LoginGuard {
  #byIp: FailureBudget;
  #byName: FailureBudget;
  #slots: number;
  #maxQueued: number;
  #queue: (() => void)[] = [];
  #now: () => number;

  constructor(options: LoginGuardOptions = {}) {
    const windowMs = (options.windowSeconds ?? 300) * 1000;
    const max = options.maxTracked ?? 100_000;
    this.#byIp = new FailureBudget(options.maxFailuresPerIp ?? 20, windowMs, max);
    this.#byName = new FailureBudget(options.maxFailuresPerUsername ?? 10, windowMs, max);
    this.#slots = options.maxConcurrentHashes ?? 1;
    this.#maxQueued = options.maxQueuedLogins ?? 64;
    this.#now = options.now ?? Date.now;
  }

  /**
   * Why a login from `ip` for `username` is refused before hashing, if it is.
   * Without `username` (the body not read yet), only the address is checked.
   */
  check(ip: string, username?: string): LoginRefusal | undefined {
    const now = this.#now();
    const byName = username === undefined ? 0 : this.#byName.blockedFor(username, now);
    const wait = Math.max(this.#byIp.blockedFor(ip, now), byName);
    if (wait > 0) {
      return {
        status: 429,
        msg: "Too many failed logins: try again later",
        retryAfter: Math.ceil(wait / 1000),
      };
    }
    if (this.#slots === 0 && this.#queue.length >= this.#maxQueued) {
      return { status: 503, msg: "Too many logins in progress: try again later", retryAfter: 1 };
    }
    return undefined;
  }

  /** Counts a failed login against both budgets. */
  failed(ip: string, username: string): void {
    const now = this.#now();
    this.#byIp.failed(ip, now);
    this.#byName.failed(username, now);
  }

  /** A correct password: the username's failures are forgotten (the address's are not). */
  succeeded(username: string): void {
    this.#byName.clear(username);
  }

  /**
   * Runs `hash` when a hashing slot is free, at most `maxConcurrentHashes` at
   * once, in arrival order. Check {@link check} first: the queue is bounded there.
   */
  async hashing<T>(hash: () => Promise<T>): Promise<T> {
    if (this.#slots > 0) this.#slots--;
    else await new Promise<void>((resolve) => this.#queue.push(resolve));
    try {
      return await hash();
    } finally {
      const next = this.#queue.shift();
      if (next) next();
      else this.#slots++;
    }
  }

  /** Addresses and usernames with a failure window open (for tests and metrics). */
  get tracked(): { ips: number; usernames: number } {
    return { ips: this.#byIp.size, usernames: this.#byName.size };
  }
}
