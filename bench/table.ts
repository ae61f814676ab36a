/**
 * Turns the medians of the benchmark's cells into one Markdown table and a list of target checks.
 *
 * @module
 */
import type { GenResult } from "./load_gen.ts";
import type { TargetName } from "./targets.ts";

/** One row: a scenario on a target, with the median of each figure over the runs. */
export interface Row {
  /** Scenario label shown in the table. */
  label: string;
  /** Scenario key (`relay`, `relay-deep`, `receipts`, `fanout`, `open`, `idle`, `backlog`). */
  key: string;
  /** Target. */
  target: TargetName;
  /** Medians of the runs; undefined when the cell could not run. */
  median?: GenResult;
  /** Runs that produced a result. */
  runs: number;
  /** Why the cell has no result. */
  note?: string;
}

const MIB = 1024 * 1024;

function num(value: number | undefined, digits = 0): string {
  if (value === undefined || !Number.isFinite(value)) return "–";
  return value.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

/** The figure a row is judged by, and whether higher is better. */
export function headline(row: Row): { value: number; text: string; higherIsBetter: boolean } {
  const m = row.median;
  if (!m) return { value: NaN, text: row.note ? `n/a` : "–", higherIsBetter: true };
  switch (row.key) {
    case "idle":
      return {
        value: m.bytesPerConn,
        text: `${num(m.bytesPerConn / 1024, 1)} KiB/conn`,
        higherIsBetter: false,
      };
    case "open":
      return { value: m.p99, text: `p99 ${num(m.p99, 2)} ms`, higherIsBetter: false };
    case "backlog": {
      const beyond = m.bytesPerMessage - m.textBytes;
      return { value: beyond, text: `${num(beyond)} B/msg + text`, higherIsBetter: false };
    }
    default:
      return { value: m.delivered, text: `${num(m.delivered)} deliv/s`, higherIsBetter: true };
  }
}

function details(row: Row): string {
  const m = row.median;
  if (!m) return row.note ?? "";
  if (row.key === "idle") {
    const login = Number.isFinite(m.loginRate) ? `, HTTP login ${num(m.loginRate)}/s` : "";
    const note = row.note ? `, **${row.note}**` : "";
    return `connect+register ${num(m.connectRate)}/s${login}, average over all ${
      num(m.bytesPerConnAvg / 1024, 1)
    } KiB/conn${note}`;
  }
  if (row.key === "backlog") {
    const note = row.note ? `, **${row.note}**` : "";
    const errors = m.errors > 0 ? `, **${num(m.errors)} non-200**` : "";
    return `RSS ${num(m.bytesPerMessage)} B per message held, text ${
      num(m.textBytes)
    } B, accepted ${num(m.sent)}/s${errors}${note}`;
  }
  const parts = [`sent ${num(m.sent)}/s`];
  if (row.key === "open") parts.push(`delivered ${num(m.delivered)}/s`);
  if (m.receipts > 0) parts.push(`receipts back ${num(m.receipts)}/s`);
  if (m.errors > 0) parts.push(`**${num(m.errors)} non-200**`);
  if (row.note) parts.push(`**${row.note}**`);
  return parts.join(", ");
}

/** Renders rows as a Markdown table; ratios are against the bare relay in the same scenario. */
export function renderTable(rows: Row[]): string {
  const out = [
    "| scenario | target | figure | × bare | deliv/CPU-s | × bare (CPU) | 9001/s | p50 ms | p99 ms | max ms | srv peak RSS MiB | srv CPU % | gen CPU % | other CPU % | runs | notes |",
    "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
  ];
  for (const row of rows) {
    const m = row.median;
    const bare = rows.find((r) => r.key === row.key && r.target === "bare");
    const h = headline(row);
    const b = bare ? headline(bare).value : NaN;
    // Nothing is held by the bare relay in the backlog: no ratio to it.
    const ratio = row.key === "backlog"
      ? "–"
      : row.target === "bare"
      ? "1.00"
      : num(h.value / b, 2);
    const cpuRatio = row.target === "bare"
      ? (m && row.key !== "idle" && row.key !== "backlog" ? "1.00" : "–")
      : num((m?.perCpuSecond ?? NaN) / (bare?.median?.perCpuSecond ?? NaN), 2);
    out.push(
      `| ${row.label} | ${row.target} | ${h.text} | ${ratio} | ${
        num(m?.perCpuSecond)
      } | ${cpuRatio} | ${num(m?.replies)} | ${num(m?.p50, 2)} | ${num(m?.p99, 2)} | ${
        num(m?.max, 1)
      } | ${num((m?.serverPeakRss ?? NaN) / MIB)} | ${num(m?.serverCpu)} | ${num(m?.genCpu)} | ${
        num(m?.otherCpu)
      } | ${row.runs} | ${details(row)} |`,
    );
  }
  return out.join("\n");
}

/**
 * The targets of issue 17, each as a line `PASS|FAIL|n/a what: measured (target)`: against the
 * bare relay (the runtime's floor) in the same run, and faster than Socket.IO in every traffic
 * scenario.
 */
export function renderChecks(rows: Row[]): string {
  const get = (key: string, target: TargetName) =>
    rows.find((r) => r.key === key && r.target === target)?.median;
  const invalid = rows.filter((r) => r.median && r.note).map((r) => `${r.label}/${r.target}`);
  const lines: string[] = [];
  const check = (
    what: string,
    value: number,
    limit: number,
    higherIsBetter: boolean,
    digits = 2,
  ) => {
    const verdict = !Number.isFinite(value)
      ? "n/a "
      : (higherIsBetter ? value >= limit : value <= limit)
      ? "PASS"
      : "FAIL";
    lines.push(
      `- ${verdict} ${what}: ${num(value, digits)} (target ${higherIsBetter ? "≥" : "≤"} ${limit})`,
    );
  };
  const ratio = (key: string, a: TargetName, b: TargetName, figure: keyof GenResult) =>
    (get(key, a)?.[figure] ?? NaN) / (get(key, b)?.[figure] ?? NaN);
  for (const [key, name] of [["relay", "relay"], ["relay-deep", "relay, deep window"]]) {
    check(
      `${name}, memory storage ÷ bare relay (delivered/s)`,
      ratio(key, "im-memory", "bare", "delivered"),
      0.9,
      true,
    );
    check(
      `${name}, memory storage ÷ bare relay, per server CPU-second (steadier on a busy machine)`,
      ratio(key, "im-memory", "bare", "perCpuSecond"),
      0.9,
      true,
    );
  }
  check(
    "fan-out ×100 ÷ bare relay (delivered/s)",
    ratio("fanout", "im-memory", "bare", "delivered"),
    0.9,
    true,
  );
  check(
    "fan-out ×100 ÷ bare relay, per server CPU-second",
    ratio("fanout", "im-memory", "bare", "perCpuSecond"),
    0.9,
    true,
  );
  check(
    "fan-out ×100 p99 ÷ bare relay's p99",
    ratio("fanout", "im-memory", "bare", "p99"),
    1.5,
    false,
  );
  check(
    "relay with receipts, sqlite ÷ memory (delivered/s)",
    ratio("receipts", "im-sqlite", "im-memory", "delivered"),
    0.8,
    true,
  );
  check(
    "relay with receipts, sqlite ÷ memory, per server CPU-second",
    ratio("receipts", "im-sqlite", "im-memory", "perCpuSecond"),
    0.8,
    true,
  );
  check("open loop p99 ms, memory storage", get("open", "im-memory")?.p99 ?? NaN, 10, false);
  check("open loop p99 ms, sqlite storage", get("open", "im-sqlite")?.p99 ?? NaN, 10, false);
  check(
    "idle registered connection, KiB more than in the bare relay (all of it, login included)",
    ((get("idle", "im-memory")?.bytesPerConnAvg ?? NaN) -
      (get("idle", "bare")?.bytesPerConnAvg ?? NaN)) / 1024,
    2,
    false,
    1,
  );
  const held = get("backlog", "im-memory");
  check(
    "message waiting for a receipt, memory storage: bytes of RSS beyond its text",
    (held?.bytesPerMessage ?? NaN) - (held?.textBytes ?? NaN),
    200,
    false,
    0,
  );
  for (
    const [key, name] of [
      ["relay", "relay"],
      ["relay-deep", "relay, deep window"],
      ["receipts", "relay with receipts"],
      ["fanout", "fan-out ×100"],
    ]
  ) {
    check(
      `${name}, memory storage ÷ Socket.IO (delivered/s)`,
      ratio(key, "im-memory", "socketio", "delivered"),
      1,
      true,
    );
    check(
      `${name}, memory storage ÷ Socket.IO, per server CPU-second`,
      ratio(key, "im-memory", "socketio", "perCpuSecond"),
      1,
      true,
    );
  }
  if (invalid.length) {
    lines.push(`- WARNING: these cells carry a note, read it: ${invalid.join(", ")}`);
  }
  return lines.join("\n");
}
