/**
 * Time limits on promises: one helper for every "this must settle within N ms"
 * in the server (readiness checks, plugin handlers, shutdown stages).
 *
 * @module
 */

/** Rejected by {@link withTimeout} when the work takes too long. */
export class TimeoutError extends Error {
  override name = "TimeoutError";
}

/**
 * Resolves like `work`, or rejects with a {@link TimeoutError} carrying
 * `message` when it has not settled within `ms`. The timer never outlives the race.
 *
 * @example
 * ```ts
 * import { withTimeout } from "./deadline.ts";
 * const value = await withTimeout(Promise.resolve(1), 100, "too slow");
 * console.assert(value === 1);
 * ```
 */
export async function withTimeout<T>(work: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(message)), Math.max(0, ms));
  });
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Whether `work` settles (either way) within `ms`. */
export function settlesWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  return withTimeout(work.then(() => true, () => true), ms, "").catch(() => false);
}

/**
 * A point in time that several stages share: each stage waits at most for
 * what is left of it (graceful shutdown gives every stage a share of one budget).
 */
export class Deadline {
  readonly at: number;

  constructor(ms: number, now = Date.now()) {
    this.at = now + ms;
  }

  /** Milliseconds left, never negative. */
  remaining(): number {
    return Math.max(0, this.at - Date.now());
  }

  /** Whether `work` settles within `share` (0 to 1) of what is left. */
  settles(work: Promise<unknown>, share = 1): Promise<boolean> {
    return settlesWithin(work, this.remaining() * share);
  }
}
