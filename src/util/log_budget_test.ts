/** The refusal log budget on a fake clock. */
import { assertEquals } from "../../tests/_assert.ts";
import { createLogger } from "../log.ts";
import { LogBudget } from "./log_budget.ts";

function setup(perMinute: number) {
  const lines: string[] = [];
  let now = 0;
  const logger = createLogger({ write: (_level, line) => lines.push(line) });
  const budget = new LogBudget(logger, perMinute, () => now);
  return { lines, budget, advance: (ms: number) => now += ms };
}

Deno.test("LogBudget writes at most perMinute lines per kind, then counts the rest", () => {
  const { lines, budget, advance } = setup(2);
  for (let i = 0; i < 50; i++) budget.write("info", "bad_http", `refused ${i}`);
  budget.write("info", "bad_request", "another kind has its own budget");
  assertEquals(lines.length, 3);
  advance(60_000);
  budget.write("info", "bad_http", "next minute");
  assertEquals(lines.length, 5);
  assertEquals(lines[3].includes("count=48"), true, lines[3]);
  assertEquals(lines[4].includes("next minute"), true);
});

Deno.test("LogBudget says nothing about a minute that stayed within its budget", () => {
  const { lines, budget, advance } = setup(5);
  budget.write("warn", "k", "one");
  advance(120_000);
  budget.write("warn", "k", "two");
  assertEquals(lines.length, 2);
});
