/**
 * Accepts per second of the message stores, as the server drives them: many
 * connections, one promise per frame.
 *
 * `deno run -A bench/store_bench.ts [messages]`
 *
 * Scenarios, each with 200 concurrent writers:
 * - `accept`: every writer awaits one `accept` after another.
 * - `lifecycle`: every message is accepted, then marked delivered and
 *   acknowledged by its recipient (three store writes per message), while the
 *   next message is already being accepted.
 *
 * @module
 */
import process from "node:process";
import { MemoryStore } from "../src/backends/store_memory.ts";
import { openSqliteStore } from "../src/backends/store_sqlite.ts";
import type { MessageStore } from "../src/core/store.ts";

const WRITERS = 200;
const total = Number(Deno.args[0] ?? 50_000);
const padding = "x".repeat(120);

interface Result {
  perSecond: number;
  /** Accepts per second of CPU time of this process: stabler on a shared machine. */
  perCpuSecond: number;
  p50: number;
  p99: number;
}

async function drive(store: MessageStore, count: number, lifecycle: boolean): Promise<Result> {
  let next = 0;
  const latencies = new Float64Array(count);
  const followUps: Promise<unknown>[] = [];
  const writer = async (w: number) => {
    const sender = `user${w}`;
    const recipient = `user${(w + 1) % WRITERS}`;
    while (next < count) {
      const i = next++;
      const id = `m${i}`;
      const text = JSON.stringify({ type: 2001, id, from: sender, to: [recipient], body: padding });
      const started = performance.now();
      await store.accept({
        sender,
        id,
        type: 2001,
        recipients: [recipient],
        text,
        acceptedAt: Date.now(),
      });
      latencies[i] = performance.now() - started;
      if (lifecycle) {
        const key = { sender, id };
        followUps.push(
          store.markDeliveredTo(key, [recipient]).then(() => store.acknowledge(recipient, key)),
        );
        if (followUps.length >= 10_000) await Promise.all(followUps.splice(0));
      }
    }
  };
  const started = performance.now();
  const cpu = process.cpuUsage();
  await Promise.all(Array.from({ length: WRITERS }, (_, w) => writer(w)));
  await Promise.all(followUps);
  const seconds = (performance.now() - started) / 1000;
  const { user, system } = process.cpuUsage(cpu);
  latencies.sort();
  return {
    perSecond: count / seconds,
    perCpuSecond: count / ((user + system) / 1e6),
    p50: latencies[Math.floor(count * 0.5)],
    p99: latencies[Math.floor(count * 0.99)],
  };
}

async function withStore(
  kind: "memory" | "sqlite-normal" | "sqlite-full",
  fn: (store: MessageStore) => Promise<Result>,
): Promise<Result> {
  if (kind === "memory") return await fn(new MemoryStore({ maxPerUser: 1_000_000 }));
  const dir = await Deno.makeTempDir({ prefix: "im_store_bench_" });
  const store = await openSqliteStore({
    dir,
    maxPerUser: 1_000_000,
    synchronous: kind === "sqlite-full" ? "full" : "normal",
  });
  try {
    return await fn(store);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

const rows: string[][] = [];
const baseline: Record<string, Result> = {};
for (const lifecycle of [false, true]) {
  for (const kind of ["memory", "sqlite-normal", "sqlite-full"] as const) {
    const count = total;
    const scenario = lifecycle ? "lifecycle" : "accept";
    const result = await withStore(kind, (store) => drive(store, count, lifecycle));
    if (kind === "memory") baseline[scenario] = result;
    const base = baseline[scenario];
    rows.push([
      scenario,
      kind,
      String(count),
      Math.round(result.perSecond).toLocaleString("en"),
      (result.perSecond / base.perSecond).toFixed(2),
      Math.round(result.perCpuSecond).toLocaleString("en"),
      (result.perCpuSecond / base.perCpuSecond).toFixed(2),
      result.p50.toFixed(2),
      result.p99.toFixed(2),
    ]);
  }
}
const header = [
  "scenario",
  "store",
  "messages",
  "accepts/s",
  "vs memory",
  "per CPU-s",
  "vs memory",
  "p50 ms",
  "p99 ms",
];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i])).join("  ");
console.log(`${WRITERS} concurrent writers, one promise per accept (Deno ${Deno.version.deno})`);
console.log("per CPU-s: accepts per second of this process's CPU time (user + system)");
console.log(line(header));
for (const row of rows) console.log(line(row));
