/**
 * The in-process harness: the JavaScript cost of a frame alone. It drives `ClientSession`,
 * `DeliveryService`, `Hub` and the memory store with fake sockets that only count what they are
 * sent, so the runtime's socket work (the same for every server, see bench/README.md) is left out,
 * and prints CPU time per delivery (from `/proc/self/stat`, this process only). Repeatable within a
 * few per cent on a busy machine, where the benchmark's rates are not; compare two trees by running
 * it from each, alternately.
 *
 * Usage: `deno run -A --v8-flags=--min-semi-space-size=16 bench/inproc_bench.ts fanout|relay
 * [frames]` (fan-out: 1 sender, 100 recipients; relay: 200 users in a ring; every message kept).
 *
 * @module
 */
import { Hub } from "../src/core/hub.ts";
import { DeliveryService } from "../src/core/delivery.ts";
import { ClientSession, type SessionDeps } from "../src/core/client_session.ts";
import { MemoryStore } from "../src/backends/store_memory.ts";
import { MemoryBroker } from "../src/backends/broker_memory.ts";
import { cpuSeconds } from "./proc_stats.ts";

const mode = Deno.args[0] ?? "fanout";
const frames = Number(Deno.args[1] ?? 20000);
const users = mode === "fanout" ? 101 : 200;
const logger = {
  debug() {},
  info() {},
  warn() {},
  error(...a: unknown[]) {
    console.error(...a);
  },
  child() {
    return logger;
  },
} as unknown as SessionDeps["logger"];
const hub = new Hub("i");
const store = new MemoryStore({ maxPerUser: 1_000_000 });
const broker = new MemoryBroker();
const delivery = new DeliveryService({ store, broker, hub, instanceId: "i", logger });
await delivery.start();
let ids = 0;
const pending = new Map<string, { userId: string; clientName: string }>();
const deps: SessionDeps = {
  delivery,
  sessions: {
    issue: () => Promise.resolve(""),
    peek: (id: string) => Promise.resolve(pending.get(id)),
    redeem: (id: string) => {
      const s = pending.get(id);
      pending.delete(id);
      return Promise.resolve(s);
    },
    close: () => Promise.resolve(),
  },
  hub,
  custom: { has: () => false, handle: () => Promise.resolve({ code: 200 }) },
  logger,
  events: {},
  limits: {
    maxFrameBytes: 65536,
    maxBufferedBytes: 1 << 24,
    registerTimeoutSeconds: 10,
    maxRecipients: 1000,
  },
  accepting: () => true,
  nextId: () => ++ids,
};
let sends = 0;
const sessions: ClientSession[] = [];
for (let i = 1; i <= users; i++) {
  const s = new ClientSession(deps, {
    send() {
      sends++;
    },
    close() {},
    bufferedAmount: 0,
    isOpen: true,
  });
  s.opened();
  pending.set(`s${i}`, { userId: `u${i}`, clientName: "c" });
  s.receive(JSON.stringify({
    id: "r",
    type: 1000,
    isSystem: false,
    from: `u${i}`,
    to: "",
    body: JSON.stringify({ sessionId: `s${i}` }),
  }));
  sessions.push(s);
}
await new Promise((r) => setTimeout(r, 10));
const to = Array.from({ length: 100 }, (_, i) => `u${i + 2}`).join(",");
function frame(seq: number, from: number): string {
  const target = mode === "fanout" ? to : `u${(from % users) + 1}`;
  return `{"id":"m${seq}","type":2001,"isSystem":false,"from":"u${from}","to":"${target}","body":"hello","timestamp":${Date.now()}}`;
}
async function run(n: number) {
  for (let k = 0; k < n; k++) {
    const from = mode === "fanout" ? 1 : (k % users) + 1;
    sessions[from - 1].receive(frame(seq++, from));
    if ((k & 31) === 31) await Promise.resolve();
  }
  await new Promise((r) => setTimeout(r, 0));
}
let seq = 0;
await run(Math.min(frames, 5000));
const c0 = cpuSeconds("self");
const t0 = performance.now();
const s0 = sends;
await run(frames);
const t = performance.now() - t0;
const c = cpuSeconds("self") - c0;
const deliveries = mode === "fanout" ? frames * 100 : frames;
console.log(
  JSON.stringify({
    mode,
    frames,
    sends: sends - s0,
    usPerFrame: +(t * 1000 / frames).toFixed(2),
    nsPerDelivery: +(t * 1e6 / deliveries).toFixed(0),
    cpuNsPerDelivery: +(c * 1e9 / deliveries).toFixed(0),
  }),
);
