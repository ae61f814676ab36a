/**
 * Per-connection rate limiting: a token bucket, and the rule that closes a
 * connection that stays over its limit.
 *
 * @module
 */

/** Options of {@link RateLimiter}. */
export interface RateLimitOptions {
  /** Tokens added per second (the sustained frame rate). */
  perSecond: number;
  /** Bucket size (the largest burst). */
  burst: number;
  /** Seconds of continuous refusals after which the connection should be closed. */
  closeAfterSeconds: number;
  /** Clock in ms. @default performance.now */
  now?: () => number;
}

/** What to do with a frame. */
export type RateVerdict = "ok" | "limited" | "close";

/** A gap without refusals, in ms, that ends a run of refusals. */
const CALM_MS = 1000;

/**
 * A token bucket for one connection. {@link take} answers `"ok"` while tokens
 * last, `"limited"` when the frame must be refused, and `"close"` once the
 * frames have been refused for `closeAfterSeconds` without a calm second
 * between refusals (sustained abuse rather than a burst).
 *
 * @example
 * ```ts
 * import { RateLimiter } from "./rate_limit.ts";
 * let now = 0;
 * const limiter = new RateLimiter({ perSecond: 1, burst: 2, closeAfterSeconds: 5, now: () => now });
 * console.assert(limiter.take() === "ok" && limiter.take() === "ok");
 * console.assert(limiter.take() === "limited");
 * now = 1000;
 * console.assert(limiter.take() === "ok");
 * ```
 */
export class RateLimiter {
  #tokens: number;
  #last: number;
  #options: RateLimitOptions;
  #now: () => number;
  /** Start of the current run of refusals. */
  #limitedSince?: number;
  #lastRefusal = 0;

  constructor(options: RateLimitOptions) {
    this.#options = options;
    this.#now = options.now ?? (() => performance.now());
    this.#tokens = options.burst;
    this.#last = this.#now();
  }

  /** Takes a token for one frame: {@link tryTake}, then {@link refuse} when there is none. */
  take(): RateVerdict {
    return this.tryTake() ? "ok" : this.refuse();
  }

  /** Takes a token if there is one; records nothing when there is none. */
  tryTake(): boolean {
    const now = this.#now();
    const { perSecond, burst } = this.#options;
    this.#tokens = Math.min(burst, this.#tokens + (now - this.#last) / 1000 * perSecond);
    this.#last = now;
    if (this.#limitedSince !== undefined && now - this.#lastRefusal >= CALM_MS) {
      this.#limitedSince = undefined;
    }
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  /** Records a refused frame; `"close"` once refusals have lasted `closeAfterSeconds`. */
  refuse(): "limited" | "close" {
    const now = this.#now();
    this.#limitedSince ??= now;
    this.#lastRefusal = now;
    return now - this.#limitedSince >= this.#options.closeAfterSeconds * 1000 ? "close" : "limited";
  }
}

/** How much larger the receipt allowance is than the frame limit. */
export const RECEIPT_ALLOWANCE = 10;

/**
 * The rate limit of one connection. Receipts (9101) that find the bucket
 * empty draw on a second allowance {@link RECEIPT_ALLOWANCE} times larger, so
 * a client can acknowledge a replay of many stored messages at once. Whether a
 * frame is a receipt comes from its parsed `type`, never from its raw text.
 */
export class ConnectionRateLimit {
  #frames: RateLimiter;
  #receipts: RateLimiter;

  constructor(options: RateLimitOptions) {
    this.#frames = new RateLimiter(options);
    this.#receipts = new RateLimiter({
      ...options,
      perSecond: options.perSecond * RECEIPT_ALLOWANCE,
      burst: options.burst * RECEIPT_ALLOWANCE,
    });
  }

  /** The verdict for one frame; `receipt`: its parsed type is 9101. */
  take(receipt: boolean): RateVerdict {
    if (this.#frames.tryTake()) return "ok";
    if (receipt && this.#receipts.tryTake()) return "ok";
    return this.#frames.refuse();
  }
}
