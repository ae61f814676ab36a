/**
 * Runs one cell's load generators as child processes, starts their load together, and merges
 * their results.
 *
 * @module
 */
import type { GenOptions, GenResult } from "./load_gen.ts";

/** How to start a generator. */
export interface GenCommand {
  /** The `deno` executable. */
  deno: string;
  /** Repository root (the generator runs from there). */
  root: string;
}

/**
 * Starts `count` generators, each with its share of the users (and of the open-loop rate), waits
 * until every one has registered its users, lets them all start, and merges their results.
 *
 * @example
 * ```ts
 * import { runGenerators } from "./generators.ts";
 * import type { GenOptions } from "./load_gen.ts";
 *
 * // `options`: one cell's settings, as bench/run.ts builds them.
 * export async function twoGenerators(options: GenOptions) {
 *   const result = await runGenerators(options, 2, { deno: Deno.execPath(), root: "." });
 *   console.log(result);
 * }
 * ```
 */
export async function runGenerators(
  options: GenOptions,
  count: number,
  command: GenCommand,
): Promise<GenResult> {
  const share = Math.floor(options.users / count);
  const children = Array.from({ length: count }, (_, gen) => {
    const users = gen === count - 1 ? options.users - share * gen : share;
    const mine: GenOptions = {
      ...options,
      users,
      offset: share * gen,
      gen,
      rate: (options.rate * users) / options.users,
    };
    return new Deno.Command(command.deno, {
      args: ["run", "-A", "bench/load_gen.ts", JSON.stringify(mine)],
      cwd: command.root,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(180_000),
    }).spawn();
  });
  let ready = 0;
  const go = async () => {
    for (const child of children) {
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode("go\n")).catch(() => {});
      writer.releaseLock();
    }
  };
  const results = await Promise.all(children.map(async (child) => {
    const stderr = new Response(child.stderr).text();
    let last = "";
    let rest = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      const lines = (rest + chunk).split("\n");
      rest = lines.pop() ?? "";
      for (const line of lines) {
        if (line === '{"ready":true}') {
          if (++ready === children.length) await go();
        } else if (line.trim()) {
          last = line;
        }
      }
    }
    if (rest.trim()) last = rest;
    const status = await child.status;
    await child.stdin.close().catch(() => {});
    if (!status.success) {
      throw new Error(`load generator failed (${status.code}): ${(await stderr).trim()}`);
    }
    return JSON.parse(last) as GenResult;
  }));
  return merge(results);
}

/**
 * Merges the results of generators that ran side by side: rates and generator CPU add up; the
 * server's figures are the largest seen; p50 is the mean; p99 and max are the largest (an upper
 * bound of the merged p99).
 */
export function merge(results: GenResult[]): GenResult {
  if (results.length === 1) return results[0];
  const sum = (key: keyof GenResult) => results.reduce((n, r) => n + r[key], 0);
  const max = (key: keyof GenResult) => Math.max(...results.map((r) => r[key]));
  const genCpu = sum("genCpu");
  return {
    delivered: sum("delivered"),
    replies: sum("replies"),
    receipts: sum("receipts"),
    sent: sum("sent"),
    errors: sum("errors"),
    p50: sum("p50") / results.length,
    p99: max("p99"),
    max: max("max"),
    serverCpu: max("serverCpu"),
    perCpuSecond: sum("delivered") / (max("serverCpu") / 100),
    genCpu,
    // Each generator counted the others as "other": take theirs off again.
    otherCpu: Math.min(...results.map((r) => r.otherCpu - (genCpu - r.genCpu))),
    serverPeakRss: max("serverPeakRss"),
    serverRss: max("serverRss"),
    connectRate: sum("connectRate"),
    loginRate: sum("loginRate"),
    bytesPerConn: results[0].bytesPerConn,
    bytesPerConnAvg: results[0].bytesPerConnAvg,
    bytesPerMessage: results[0].bytesPerMessage,
    textBytes: results[0].textBytes,
  };
}
