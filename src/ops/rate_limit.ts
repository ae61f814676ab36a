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
 * import { RateLimiter } from "./src/ops/rate_limit.ts";
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

  /** Takes a token for one frame. */
  take(): RateVerdict {
    const now = this.#now();
    const { perSecond, burst, closeAfterSeconds } = this.#options;
    this.#tokens = Math.min(burst, this.#tokens + (now - this.#last) / 1000 * perSecond);
    this.#last = now;
    if (this.#limitedSince !== undefined && now - this.#lastRefusal >= CALM_MS) {
      this.#limitedSince = undefined;
    }
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return "ok";
    }
    this.#limitedSince ??= now;
    this.#lastRefusal = now;
    return now - this.#limitedSince >= closeAfterSeconds * 1000 ? "close" : "limited";
  }
}
