/**
 * `deno task bench`: starts each server under test, runs the load generator against it as a
 * separate process, repeats every cell `--runs` times, and prints one Markdown table of medians
 * with each target's ratio to the bare Deno relay, then the targets as PASS/FAIL.
 *
 * Flags (defaults in brackets): `--quick` (1 run, short phases, 2,000 idle connections),
 * `--runs N` [3], `--warmup S` [1], `--duration S` [2.5], `--users N` [200], `--window N` [2],
 * `--deep-window N` [32: the window of the second relay cell], `--rate N` [10000],
 * `--idle N` [10000], `--idle-runs N` [1: the idle cells are slow and steady],
 * `--messages N` [50000: messages left waiting in the backlog cell],
 * `--gens N` [1: generator processes for the relay, receipts and open-loop cells],
 * `--only relay,relay-deep,receipts,plugin,fanout,open,idle,backlog`,
 * `--targets im-memory,im-sqlite,im-base,im-plugin,im-plugin-inproc,bare,socketio`,
 * `--base DIR` [our server from another tree as the target `im-base`, e.g. a worktree of the last
 * commit, for before/after in one run], `--out FILE` [.bench-out/bench-<time>.json].
 *
 * @module
 */
import type { GenOptions, GenResult, Scenario } from "./load_gen.ts";
import { runGenerators } from "./generators.ts";
import { median } from "./stats.ts";
import { renderChecks, renderTable, type Row } from "./table.ts";
import {
  dialectOf,
  ensurePeers,
  type Paths,
  RELAY_PLUGIN_TYPE,
  type Running,
  start,
  startV8Flags,
  type TargetName,
  TARGETS,
  unavailable,
} from "./targets.ts";

/** One scenario of the matrix. */
interface Cell {
  key: string;
  label: string;
  scenario: Scenario;
  receipts: boolean;
  targets: TargetName[];
  /** Frames in flight per sender; the settings' window when absent. */
  window?: number;
  /** Type of the relayed frames. @default 2001 */
  frameType?: number;
}

/** Settings from the command line. */
interface Settings {
  runs: number;
  warmupMs: number;
  durationMs: number;
  users: number;
  window: number;
  deepWindow: number;
  rate: number;
  idle: number;
  messages: number;
  base?: string;
  idleRuns: number;
  gens: number;
  only?: string[];
  targets?: string[];
  out: string;
}

function parseArgs(args: string[]): Settings {
  const quick = args.includes("--quick");
  const value = (name: string): string | undefined => {
    const i = args.indexOf(`--${name}`);
    if (i < 0) return undefined;
    const v = args[i + 1];
    if (v === undefined || v.startsWith("--")) throw new Error(`Flag --${name} needs a value`);
    return v;
  };
  const number = (name: string, fallback: number): number => {
    const v = value(name);
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`Flag --${name} must be a positive number`);
    return n;
  };
  const known = new Set([
    "--quick",
    "--runs",
    "--warmup",
    "--duration",
    "--users",
    "--window",
    "--deep-window",
    "--messages",
    "--base",
    "--rate",
    "--idle",
    "--idle-runs",
    "--gens",
    "--only",
    "--targets",
    "--out",
  ]);
  for (const arg of args) {
    if (arg.startsWith("--") && !known.has(arg)) throw new Error(`Unknown flag: ${arg}`);
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  return {
    runs: number("runs", quick ? 1 : 3),
    warmupMs: number("warmup", quick ? 0.5 : 1) * 1000,
    durationMs: number("duration", quick ? 1.5 : 2.5) * 1000,
    users: number("users", 200),
    window: number("window", 2),
    deepWindow: number("deep-window", 32),
    rate: number("rate", 10_000),
    idle: number("idle", quick ? 2000 : 10_000),
    messages: number("messages", quick ? 10_000 : 50_000),
    base: value("base"),
    idleRuns: number("idle-runs", 1),
    gens: number("gens", 1),
    only: value("only")?.split(","),
    targets: value("targets")?.split(","),
    out: value("out") ?? `.bench-out/bench-${stamp}.json`,
  };
}

function matrix(s: Settings): Cell[] {
  const all: Cell[] = [
    {
      key: "relay",
      label: `relay ${s.users} users`,
      scenario: "relay",
      receipts: false,
      targets: ["im-memory", "im-base", "bare", "socketio"],
    },
    {
      key: "relay-deep",
      label: `relay, window ${s.deepWindow}`,
      scenario: "relay",
      receipts: false,
      targets: ["im-memory", "im-base", "bare", "socketio"],
      window: s.deepWindow,
    },
    {
      key: "receipts",
      label: `relay + receipts`,
      scenario: "relay",
      receipts: true,
      targets: ["im-sqlite", "im-memory", "im-base", "bare", "socketio"],
    },
    {
      key: "plugin",
      label: `plugin type ${RELAY_PLUGIN_TYPE} relay`,
      scenario: "relay",
      receipts: false,
      frameType: RELAY_PLUGIN_TYPE,
      targets: ["im-plugin", "im-plugin-inproc"],
    },
    {
      key: "fanout",
      label: "fan-out ×100",
      scenario: "fanout",
      receipts: false,
      targets: ["im-memory", "im-base", "bare", "socketio"],
    },
    {
      key: "open",
      label: `open loop ${s.rate / 1000}k/s`,
      scenario: "open",
      receipts: false,
      targets: ["im-memory", "im-sqlite", "im-base", "bare", "socketio"],
    },
    {
      key: "idle",
      label: `idle ${s.idle}`,
      scenario: "idle",
      receipts: false,
      targets: ["im-memory", "im-base", "bare", "socketio"],
    },
    {
      key: "backlog",
      label: `backlog ${s.messages / 1000}k`,
      scenario: "backlog",
      receipts: false,
      targets: ["im-memory", "im-sqlite", "im-base", "bare", "socketio"],
      window: s.deepWindow,
    },
  ];
  for (const name of s.only ?? []) {
    if (!all.some((c) => c.key === name)) throw new Error(`Unknown scenario: ${name}`);
  }
  for (const name of s.targets ?? []) {
    if (!TARGETS.includes(name as TargetName)) throw new Error(`Unknown target: ${name}`);
  }
  return all
    .filter((c) => !s.only || s.only.includes(c.key))
    .map((c) => ({
      ...c,
      targets: c.targets.filter((t) =>
        s.targets ? s.targets.includes(t) : t !== "im-base" || s.base !== undefined
      ),
    }))
    .filter((c) => c.targets.length > 0);
}

function usersFor(cell: Cell, s: Settings): number {
  if (cell.scenario === "idle") return s.idle;
  return cell.scenario === "fanout" || cell.scenario === "backlog" ? 101 : s.users;
}

async function runCell(
  cell: Cell,
  target: TargetName,
  s: Settings,
  paths: Paths,
): Promise<{ result: GenResult; warning?: string }> {
  const users = usersFor(cell, s);
  const server = await start(target, users, paths);
  current = server;
  try {
    const options: GenOptions = {
      scenario: cell.scenario,
      dialect: dialectOf(target),
      origin: server.origin,
      path: "websocket",
      serverPid: server.pid,
      users,
      window: cell.window ?? s.window,
      receipts: cell.receipts,
      frameType: cell.frameType,
      warmupMs: s.warmupMs,
      durationMs: s.durationMs,
      rate: s.rate,
      messages: s.messages,
      concurrency: 64,
      offset: 0,
      gen: 0,
    };
    const gens = cell.scenario === "relay" || cell.scenario === "open" ? s.gens : 1;
    const result = await runGenerators(options, gens, paths);
    return { result, warning: server.verify() };
  } finally {
    current = undefined;
    await server.stop();
  }
}

/** The server of the cell that is running, stopped on Ctrl-C so it does not outlive us. */
let current: Running | undefined;

function medianResult(results: GenResult[]): GenResult {
  const out = {} as Record<string, number>;
  for (const key of Object.keys(results[0])) {
    out[key] = median(results.map((r) => (r as unknown as Record<string, number>)[key]));
  }
  return out as unknown as GenResult;
}

function machine(): string {
  let cpu = "unknown CPU";
  try {
    cpu = Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1] ?? cpu;
  } catch { /* not Linux */ }
  return `${navigator.hardwareConcurrency} cores (nproc), ${cpu}, Deno ${Deno.version.deno}`;
}

if (import.meta.main) {
  const settings = parseArgs(Deno.args);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, async () => {
      await current?.stop();
      Deno.exit(130);
    });
  }
  const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
  const paths: Paths = {
    root,
    deno: Deno.execPath(),
    base: settings.base &&
      (settings.base.startsWith("/") ? settings.base : `${Deno.cwd()}/${settings.base}`),
  };
  const cells = matrix(settings);
  if (cells.some((c) => c.targets.includes("socketio"))) await ensurePeers(paths);
  const results = new Map<string, GenResult[]>();
  const notes = new Map<string, string>();
  const began = performance.now();
  for (let run = 1; run <= settings.runs; run++) {
    for (const cell of cells) {
      const slow = cell.scenario === "idle" || cell.scenario === "backlog";
      if (slow && run > Math.min(settings.runs, settings.idleRuns)) continue;
      for (const target of cell.targets) {
        const id = `${cell.key}/${target}`;
        const reason = unavailable(target, paths);
        if (reason) {
          notes.set(id, reason);
          continue;
        }
        const t0 = performance.now();
        try {
          const { result, warning } = await runCell(cell, target, settings, paths);
          results.set(id, [...(results.get(id) ?? []), result]);
          if (warning) notes.set(id, warning);
          console.error(
            `run ${run}/${settings.runs} ${cell.label} ${target}: ${
              ((performance.now() - t0) / 1000).toFixed(1)
            } s`,
          );
        } catch (error) {
          notes.set(id, (error as Error).message.split("\n")[0]);
          console.error(`run ${run}/${settings.runs} ${cell.label} ${target}: ${error}`);
        }
      }
    }
  }
  const rows: Row[] = cells.flatMap((cell) =>
    cell.targets.map((target) => {
      const id = `${cell.key}/${target}`;
      const list = results.get(id) ?? [];
      return {
        label: cell.label,
        key: cell.key,
        target,
        median: list.length ? medianResult(list) : undefined,
        runs: list.length,
        note: notes.get(id),
      };
    })
  );
  const seconds = (performance.now() - began) / 1000;
  console.log(
    `\n${new Date().toISOString()} — ${machine()} — median of ${settings.runs} run(s), ` +
      `idle and backlog cells ${Math.min(settings.runs, settings.idleRuns)} run(s), ` +
      `warmup ${settings.warmupMs / 1000} s, measured ${settings.durationMs / 1000} s, ` +
      `window ${settings.window} (deep ${settings.deepWindow}), ${settings.gens} generator process(es), ` +
      `Deno servers run with ${startV8Flags(root).join(" ") || "no V8 flags"}, total ${
        seconds.toFixed(0)
      } s\n`,
  );
  console.log(renderTable(rows));
  console.log(`\n${renderChecks(rows)}`);
  await Deno.mkdir(`${root}/.bench-out`, { recursive: true });
  const out = settings.out.startsWith("/") ? settings.out : `${root}/${settings.out}`;
  await Deno.writeTextFile(
    out,
    JSON.stringify({ settings, machine: machine(), results: Object.fromEntries(results) }, null, 2),
  );
  console.error(`raw results: ${out}`);
}
