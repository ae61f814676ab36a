/**
 * Compares the WebSocket transports of `relay_variants.ts` (docs/TRANSPORT.md): for each variant,
 * interleaved over `--runs` rounds, the relay (closed loop) and open-loop scenarios of
 * `bench/load_gen.ts` (bare dialect), and the fragment attack of `fragment_attack.ts`.
 * Prints one JSON line per cell and a median table at the end.
 *
 * Usage: `deno run -A bench/transport/compare.ts [--runs 3] [--modes deno,ws,own]
 * [--rate 6000] [--attack-seconds 8] [--no-attack]`
 *
 * @module
 */
import { runGenerators } from "../generators.ts";
import type { GenOptions, GenResult } from "../load_gen.ts";
import { startV8Flags } from "../targets.ts";
import { fragmentAttack } from "./fragment_attack.ts";

function flag(name: string, fallback: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < Deno.args.length ? Deno.args[i + 1] : fallback;
}

const root = new URL("../../", import.meta.url).pathname;
const deno = Deno.execPath();
const runs = Number(flag("runs", "3"));
const modes = flag("modes", "deno,ws,own").split(",");
const rate = Number(flag("rate", "6000"));
const attackSeconds = Number(flag("attack-seconds", "8"));
const attack = !Deno.args.includes("--no-attack");
const users = 200;

async function startRelay(mode: string) {
  const child = new Deno.Command(deno, {
    args: ["run", ...startV8Flags(root), "-A", "bench/transport/relay_variants.ts", "--mode", mode],
    cwd: root,
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!/listening on http:\/\/[^\s]+:(\d+)/.test(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`Relay ${mode} exited before listening`);
    text += value;
  }
  (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })();
  const port = Number(text.match(/listening on http:\/\/[^\s]+:(\d+)/)![1]);
  return {
    port,
    pid: child.pid,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      const t = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }, 2000);
      await child.status;
      clearTimeout(t);
    },
  };
}

async function load(mode: string, scenario: "relay" | "open"): Promise<GenResult> {
  const relay = await startRelay(mode);
  try {
    const options: GenOptions = {
      scenario,
      dialect: "bare",
      origin: `http://127.0.0.1:${relay.port}`,
      path: "websocket",
      serverPid: relay.pid,
      users,
      window: 2,
      receipts: false,
      warmupMs: 1000,
      durationMs: 3000,
      rate,
      concurrency: 64,
      offset: 0,
      gen: 0,
    };
    return await runGenerators(options, 1, { deno, root });
  } finally {
    await relay.stop();
  }
}

const rows: Record<string, Record<string, number[]>> = {};
const keep = (mode: string, key: string, value: number | null) => {
  rows[mode] ??= {};
  (rows[mode][key] ??= []).push(value ?? NaN);
};

for (let run = 1; run <= runs; run++) {
  for (const mode of modes) {
    const r = await load(mode, "relay");
    console.log(JSON.stringify({ run, mode, scenario: "relay", ...r }));
    keep(mode, "relay/s", r.delivered);
    keep(mode, "relay per CPU-s", r.perCpuSecond);
    keep(mode, "relay p99 ms", r.p99);
    keep(mode, "relay max ms", r.max);
    const o = await load(mode, "open");
    console.log(JSON.stringify({ run, mode, scenario: "open", ...o }));
    keep(mode, "open p50 ms", o.p50);
    keep(mode, "open p99 ms", o.p99);
    keep(mode, "open max ms", o.max);
    keep(mode, "open CPU %", o.serverCpu);
    if (attack && run === 1) {
      const relay = await startRelay(mode);
      try {
        const a = await fragmentAttack({
          port: relay.port,
          path: "/websocket",
          pid: relay.pid,
          seconds: attackSeconds,
        });
        console.log(JSON.stringify({ run, mode, scenario: "attack", ...a }));
        keep(mode, "attack RSS over base MiB", a.peakMiB - a.baselineMiB);
        keep(mode, "attack recovered s", a.recoveredAfterS);
      } finally {
        await relay.stop();
      }
    }
  }
}

const median = (xs: number[]) => {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.floor((s.length - 1) / 2)];
};
const keys = Object.keys(rows[modes[0]] ?? {});
console.log(["figure", ...modes].join(" | "));
for (const key of keys) {
  console.log(
    [key, ...modes.map((m) => Math.round(median(rows[m][key] ?? []) * 10) / 10)].join(" | "),
  );
}
