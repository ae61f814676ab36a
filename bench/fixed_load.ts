/**
 * A fixed amount of work, for instruction counts (`valgrind --tool=callgrind`) rather than rates:
 * registers the users of a scenario, sends exactly `--frames N` frames (closed loop, window 2),
 * waits until every delivery and reply has arrived, and exits. Run it twice against a server
 * started under callgrind, with N and with 0 frames: the difference of the server's instruction
 * counts divided by the deliveries is the server's cost per delivery, repeatable on a busy machine.
 *
 * Usage: `deno run -A bench/fixed_load.ts --origin http://127.0.0.1:PORT --dialect im|bare|sio
 * --scenario fanout|relay --frames N [--users 200] [--window 2]`
 *
 * @module
 */
import { Conn, type Dialect, loginIm, pool } from "./client.ts";

function flag(name: string, fallback?: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  const v = i >= 0 ? Deno.args[i + 1] : fallback;
  if (v === undefined) throw new Error(`Flag --${name} is missing`);
  return v;
}

const origin = flag("origin");
const dialect = flag("dialect", "im") as Dialect;
const scenario = flag("scenario", "fanout");
const frames = Number(flag("frames", "1000"));
const window = Number(flag("window", "2"));
const first = Number(flag("first", "0"));
const users = scenario === "fanout" ? 101 : Number(flag("users", "200"));
const receipts = Deno.args.includes("--receipts");

const credentials = new Array<string>(users).fill("");
if (dialect === "im") {
  await pool(users, 16, async (i) => {
    credentials[i] = await loginIm(origin, i);
  });
}
const conns = Array.from({ length: users }, (_, i) => new Conn(i, dialect));
await pool(users, 32, (i) => conns[i].open(origin, "websocket", credentials[i]));
const senders = scenario === "fanout" ? [conns[0]] : conns;
if (scenario === "fanout") {
  conns[0].setTarget(conns.slice(1).map((c) => c.userId).join(","), "hello fan-out");
} else {
  for (let i = 0; i < users; i++) conns[i].setTarget(conns[(i + 1) % users].userId, "hello relay");
}
const perFrame = scenario === "fanout" ? users - 1 : 1;
const expected = frames * perFrame;
let delivered = 0;
let replies = 0;
let receiptsBack = 0;
let seq = first;
const last = first + frames;
const senderOf = new Int32Array(last + 1);
const { promise: finished, resolve } = Promise.withResolvers<void>();
const check = () => {
  if (delivered === expected && replies === frames && (!receipts || receiptsBack === expected)) {
    resolve();
  }
};
const fill = (conn: Conn) => {
  while (seq < last && conn.outstanding < window) {
    senderOf[seq] = conn.index;
    conn.outstanding++;
    conn.sendText(seq++);
  }
};
for (const conn of conns) {
  conn.onFrame((c, frame) => {
    if (frame.type === 9001) {
      if (frame.seq < 0 || senderOf[frame.seq] !== c.index) return;
      c.outstanding--;
      replies++;
      fill(c);
    } else if (frame.type === 2001) {
      delivered++;
      if (receipts) c.sendReceipt(frame.seq, conns[senderOf[frame.seq]].userId);
    } else if (frame.type === 9101) receiptsBack++;
    check();
  });
}
const t0 = performance.now();
if (frames === 0) resolve();
for (const conn of senders) fill(conn);
await finished;
console.log(
  JSON.stringify({ frames, delivered, replies, receiptsBack, ms: performance.now() - t0 }),
);
for (const conn of conns) conn.close();
setTimeout(() => Deno.exit(0), 100);
