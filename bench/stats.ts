/**
 * Small statistics helpers: a latency recorder with percentiles, and the median of runs.
 *
 * @module
 */

/** Collects latency samples in milliseconds into a growable typed array. */
export class LatencyRecorder {
  #samples = new Float64Array(1 << 16);
  #count = 0;
  #max = 0;

  /** Number of samples so far. */
  get count(): number {
    return this.#count;
  }

  /** Adds one sample (milliseconds). */
  add(ms: number): void {
    if (this.#count === this.#samples.length) {
      const bigger = new Float64Array(this.#samples.length * 2);
      bigger.set(this.#samples);
      this.#samples = bigger;
    }
    this.#samples[this.#count++] = ms;
    if (ms > this.#max) this.#max = ms;
  }

  /** p50, p99 and max in milliseconds; NaN when there are no samples. */
  summary(): { p50: number; p99: number; max: number } {
    if (this.#count === 0) return { p50: NaN, p99: NaN, max: NaN };
    const sorted = this.#samples.slice(0, this.#count).sort();
    return { p50: quantile(sorted, 0.5), p99: quantile(sorted, 0.99), max: this.#max };
  }
}

/**
 * The q-quantile (nearest rank) of sorted numbers.
 *
 * @example
 * ```ts
 * quantile(new Float64Array([1, 2, 3, 4]), 0.5); // 2
 * ```
 */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.max(1, Math.ceil(q * sorted.length));
  return sorted[Math.min(sorted.length, rank) - 1];
}

/**
 * Median of the finite numbers in a list; NaN when there are none.
 *
 * @example
 * ```ts
 * median([3, 1, 2]); // 2
 * ```
 */
export function median(values: number[]): number {
  const finite = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (finite.length === 0) return NaN;
  const mid = finite.length >> 1;
  return finite.length % 2 ? finite[mid] : (finite[mid - 1] + finite[mid]) / 2;
}
