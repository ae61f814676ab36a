/**
 * The fragment attack of `fragment_attack.ts` against our server (`im-memory` target of
 * `bench/targets.ts`, started as `deno task start` would): prints the attack's JSON line.
 *
 * With `--warmup S`, a first attack of S seconds and 5 s of rest come before the measured one, so
 * the baseline is a server whose heap has already grown to its working size (the young generation
 * of `--min-semi-space-size` is committed at the first burst of traffic of any kind, and stays).
 * `--root DIR` attacks the server of another checkout (for before/after figures).
 *
 * `--rounds N` repeats the measured attack N times (each with its 15 s of recovery), to tell memory
 * the process keeps for reuse (a plateau) from a leak (growth every round).
 *
 * Usage: `deno run -A bench/transport/attack_server.ts [--seconds 8] [--sockets 30] [--warmup 2]
 * [--rounds 1] [--root DIR]`
 *
 * @module
 */
import { start } from "../targets.ts";
import { fragmentAttack } from "./fragment_attack.ts";

function flag(name: string, fallback: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < Deno.args.length ? Deno.args[i + 1] : fallback;
}

const root = flag("root", new URL("../../", import.meta.url).pathname);
const server = await start("im-memory", 10, { root, deno: Deno.execPath() });
try {
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const port = Number(new URL(server.origin).port);
  const warmup = Number(flag("warmup", "0"));
  if (warmup > 0) {
    const first = await fragmentAttack({
      port,
      path: "/websocket",
      pid: server.pid,
      sockets: Number(flag("sockets", "30")),
      seconds: warmup,
      recoverSeconds: 5,
    });
    console.log(JSON.stringify({ warmup: true, ...first }));
  }
  for (let round = 1; round <= Number(flag("rounds", "1")); round++) {
    const result = await fragmentAttack({
      port,
      path: "/websocket",
      pid: server.pid,
      sockets: Number(flag("sockets", "30")),
      seconds: Number(flag("seconds", "8")),
    });
    console.log(JSON.stringify({ round, ...result }));
  }
} finally {
  await server.stop();
}
