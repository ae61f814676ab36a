/**
 * Readers for `/proc/<pid>/stat` and `/proc/<pid>/status` (Linux only): CPU time and memory of
 * the server and of the load generator itself.
 *
 * @module
 */

/** Clock ticks per second used by `/proc/<pid>/stat` (`getconf CLK_TCK`, 100 on Linux). */
export const CLOCK_TICKS = 100;

/**
 * CPU seconds (user + system, all threads) a process has used so far.
 *
 * @example
 * ```ts
 * const seconds = cpuSeconds("self");
 * ```
 */
export function cpuSeconds(pid: number | "self"): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // The command name may contain spaces; the fields after it are fixed.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}

/** Memory of a process in bytes, from `/proc/<pid>/status`. */
export interface Memory {
  /** Resident set size now (VmRSS). */
  rss: number;
  /** Peak resident set size (VmHWM). */
  peak: number;
}

/**
 * Current and peak resident memory of a process; NaN when it cannot be read.
 *
 * @example
 * ```ts
 * const { rss, peak } = memory("self");
 * ```
 */
export function memory(pid: number | "self"): Memory {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    return { rss: kib(status, "VmRSS:") * 1024, peak: kib(status, "VmHWM:") * 1024 };
  } catch {
    return { rss: NaN, peak: NaN };
  }
}

function kib(status: string, key: string): number {
  const at = status.indexOf(key);
  if (at < 0) return NaN;
  return parseInt(status.slice(at + key.length).trim(), 10);
}

/** Measures the share of one core a process used between `start()` and `stop()`. */
export class CpuMeter {
  #pid: number | "self";
  #cpu = 0;
  #wall = 0;

  /** Meter for a process id, or `"self"`. */
  constructor(pid: number | "self") {
    this.#pid = pid;
  }

  /** Starts (or restarts) the measurement. */
  start(): void {
    this.#cpu = cpuSeconds(this.#pid);
    this.#wall = performance.now();
  }

  /** Percent of one core used since `start()`. */
  stop(): number {
    const cpu = cpuSeconds(this.#pid) - this.#cpu;
    const wall = (performance.now() - this.#wall) / 1000;
    return wall > 0 ? (cpu / wall) * 100 : NaN;
  }
}

/**
 * CPU seconds the whole machine spent busy so far (all cores, from `/proc/stat`): used to show
 * how much CPU other processes took during a measurement.
 */
export function machineBusySeconds(): number {
  try {
    const line = Deno.readTextFileSync("/proc/stat").split("\n", 1)[0];
    const [user, nice, system, , , irq, softirq, steal] = line.split(/\s+/).slice(1).map(Number);
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}
