/**
 * A log an attacker cannot flood: lines about refused input (malformed
 * requests, bad handshakes) pass at most `perMinute` times a minute per kind;
 * the rest are counted and reported in one line when the minute is over.
 *
 * @module
 */
import type { Logger, LogLevel } from "../log.ts";

interface Window {
  start: number;
  written: number;
  suppressed: number;
}

/** Rate-limited lines, per kind, over a logger. */
export class LogBudget {
  #logger: Logger;
  #perMinute: number;
  #windows = new Map<string, Window>();
  #now: () => number;

  constructor(logger: Logger, perMinute: number, now: () => number = Date.now) {
    this.#logger = logger;
    this.#perMinute = perMinute;
    this.#now = now;
  }

  /**
   * Writes `msg` unless `kind` already used its lines this minute. The first
   * line of a new minute says how many were left out in the one before.
   */
  write(level: LogLevel, kind: string, msg: string, fields?: Record<string, unknown>): void {
    const now = this.#now();
    let window = this.#windows.get(kind);
    if (!window || now - window.start >= 60_000) {
      if (window && window.suppressed > 0) {
        this.#logger.warn("Log lines left out over their budget", {
          kind,
          count: window.suppressed,
          perMinute: this.#perMinute,
        });
      }
      window = { start: now, written: 0, suppressed: 0 };
      this.#windows.set(kind, window);
      // Kinds are a small fixed set; this only bounds a caller that passes many.
      if (this.#windows.size > 64) this.#windows.delete(this.#windows.keys().next().value!);
    }
    if (window.written >= this.#perMinute) {
      window.suppressed++;
      return;
    }
    window.written++;
    this.#logger[level](msg, fields);
  }
}
