import assert from "node:assert/strict";
import { parseConfigText } from "../src/config/load.ts";
import { digits } from "./client.ts";
import { merge } from "./generators.ts";
import type { GenResult } from "./load_gen.ts";
import { median, quantile } from "./stats.ts";
import { renderChecks, renderTable, type Row } from "./table.ts";
import { imConfig } from "./targets.ts";

function result(overrides: Partial<GenResult>): GenResult {
  return {
    delivered: 1000,
    replies: 1000,
    receipts: 0,
    sent: 1000,
    errors: 0,
    p50: 1,
    p99: 5,
    max: 9,
    serverCpu: 50,
    perCpuSecond: 2000,
    genCpu: 30,
    otherCpu: 10,
    serverPeakRss: 1 << 20,
    serverRss: 1 << 20,
    connectRate: NaN,
    loginRate: NaN,
    bytesPerConn: NaN,
    bytesPerConnAvg: NaN,
    bytesPerMessage: NaN,
    textBytes: NaN,
    ...overrides,
  };
}

Deno.test("quantile() and median() pick nearest ranks and skip NaN", () => {
  assert.equal(quantile(new Float64Array([1, 2, 3, 4]), 0.5), 2);
  assert.equal(quantile(new Float64Array([1, 2, 3, 4]), 0.99), 4);
  assert.equal(median([3, NaN, 1, 2]), 2);
  assert.equal(median([4, 1]), 2.5);
  assert.ok(Number.isNaN(median([NaN])));
});

Deno.test("digits() reads the number in an id or an ack without parsing JSON", () => {
  const frame = '{"id":"m12345","type":9001}';
  assert.equal(digits(frame, frame.indexOf('"id":"m') + 7), 12345);
  assert.equal(digits(frame, frame.indexOf('"type":') + 7), 9001);
  assert.equal(digits("43017[{}]", 2), 17);
  assert.equal(digits("x", 0), -1);
});

Deno.test("imConfig() writes a config our server's loader accepts", () => {
  const config = parseConfigText(imConfig(3, "sqlite", "/tmp/x"), "bench.yaml");
  assert.equal(config.auth.users.length, 3);
  assert.deepEqual(config.auth.users[2], { userId: "u3", username: "user3", password: "pw" });
  assert.equal(config.storage.driver, "sqlite");
  assert.equal(config.storage.dir, "/tmp/x/data");
  assert.equal(config.websocket.port, 0);
  assert.equal(parseConfigText(imConfig(1, "memory", "/t"), "b.yaml").storage.driver, "memory");
});

Deno.test("merge() adds rates and generator CPU and keeps the worst latency", () => {
  const merged = merge([
    result({ delivered: 100, p99: 3, genCpu: 20, otherCpu: 50 }),
    result({ delivered: 200, p99: 7, genCpu: 30, otherCpu: 40 }),
  ]);
  assert.equal(merged.delivered, 300);
  assert.equal(merged.p99, 7);
  assert.equal(merged.genCpu, 50);
  assert.equal(merged.otherCpu, 20);
});

Deno.test("renderTable() shows ratios to the bare relay and renderChecks() judges targets", () => {
  const rows: Row[] = [
    { label: "relay", key: "relay", target: "im-memory", runs: 3, median: result({}) },
    { label: "relay", key: "relay", target: "bare", runs: 3, median: result({ delivered: 1250 }) },
    { label: "open", key: "open", target: "im-memory", runs: 0, note: "server missing" },
  ];
  const table = renderTable(rows);
  assertLine(table, /\| relay \| im-memory \| 1,000 deliv\/s \| 0\.80 \|/);
  assertLine(table, /\| open \| im-memory \| n\/a \|.*server missing/);
  const checks = renderChecks(rows);
  assertLine(
    checks,
    /^- FAIL relay, memory storage ÷ bare relay \(delivered.*0\.80 \(target ≥ 0\.9\)/,
  );
  assertLine(checks, /^- n\/a +open loop p99 ms, memory storage/);
});

function assertLine(text: string, pattern: RegExp): void {
  assert.ok(text.split("\n").some((line) => pattern.test(line)), `no line matches ${pattern}`);
}
