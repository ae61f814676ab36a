/**
 * Soak: legitimate traffic and issue 13's attacks at once, for minutes
 * (`deno task soak`, not in CI). Prints, each minute, the server's resident
 * memory, the bystanders' delivery latency (p50/p99/max) and what each attack
 * got; at the end, the server's start-up memory on the store the run left.
 * docs/SECURITY.md has the figures.
 *
 * ```sh
 * deno task soak                          # 10 minutes, every attack
 * deno task soak --minutes 2 --only backlog,login
 * deno task soak --root ../other-tree     # the same against another checkout
 * ```
 *
 * Bystanders: 10 pairs of users, each pair a ping-pong of text frames (about
 * 20 frames/s per pair); latency is from the send to the recipient's receive.
 * Attacks (each loops for the whole run):
 * - `backlog`: a user with a full inbox (12,000 stored 1 KB messages, over
 *   `storage.maxPerUser`) registers 8 connections at once every 30 s and reads
 *   its replay (never acknowledging, so the inbox stays full);
 * - `stuck`: a second user with a backlog of 1,000 stored 20 KB messages
 *   registers a socket that never reads, while the user's other device sends
 *   30 KB frames for 30 s (own copies are held for the replaying socket); then
 *   20 s of rest, and again;
 * - `recipients`: a user sends frames to 100 made-up names each, all the time;
 * - `login`: 32 concurrent wrong-password logins, all the time, against a user
 *   with a PBKDF2 hash and against unknown names;
 * - `dupkeys`: a frame repeating `from`/`isSystem` every second.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { memory } from "./proc_stats.ts";
import { startV8Flags } from "./targets.ts";

const { values: flags } = parseArgs({
  options: {
    minutes: { type: "string", default: "10" },
    only: { type: "string", default: "backlog,stuck,recipients,login,dupkeys" },
    root: { type: "string", default: new URL("..", import.meta.url).pathname },
    pairs: { type: "string", default: "10" },
    /** Raise the login failure budgets out of the way: every wrong login then hashes. */
    "no-login-budget": { type: "boolean", default: false },
    /** Raise limits.maxPendingBytesPerSender out of the way (to see the store's start-up cost). */
    "no-sender-quota": { type: "boolean", default: false },
  },
});
const MINUTES = Number(flags.minutes);
const ATTACKS = new Set(flags.only!.split(","));
const ROOT = flags.root!;
const PAIRS = Number(flags.pairs);
const API_KEY = "soak-api-key-0123456789";
const encoder = new TextEncoder();
const HASH_ITERATIONS = 210_000;

let running = true;
const counts = new Map<string, number>();
const count = (what: string, n = 1) => counts.set(what, (counts.get(what) ?? 0) + n);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------- the server

async function pbkdf2Hash(password: string): Promise<string> {
  const b64 = (bytes: Uint8Array) =>
    btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_")
      .replace(/=+$/, "");
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const key = await crypto.subtle.importKey(
    "raw",
    encoder.encode(password),
    "PBKDF2",
    false,
    [
      "deriveBits",
    ],
  );
  const bits = await crypto.subtle.deriveBits(
    { name: "PBKDF2", hash: "SHA-256", salt, iterations: HASH_ITERATIONS },
    key,
    256,
  );
  return `pbkdf2-sha256$${HASH_ITERATIONS}$${b64(salt)}$${b64(new Uint8Array(bits))}`;
}

async function writeConfig(dir: string): Promise<string> {
  const users = ["victim", "victim2", "attacker", "forger", "sender"];
  for (let i = 1; i <= PAIRS * 2; i++) users.push(`b${i}`);
  const lines = [
    "websocket: { url: 127.0.0.1, port: 0 }",
    "auth:",
    // JWT on: made-up recipients are accepted names (only the sender quota stops them).
    "  jwt: { secret: soak-jwt-secret-0123456789abcdef }",
    ...(flags["no-login-budget"]
      ? [
        "  login: { maxFailuresPerIp: 100000000, maxFailuresPerUsername: 100000000 }",
      ]
      : []),
    "  users:",
    ...users.map((u) => `    - { userId: ${u}, username: ${u}, password: ${u}-pw }`),
    `    - { userId: hashed, username: hashed, password: "${await pbkdf2Hash(
      "hashed-pw",
    )}" }`,
    ...(flags["no-sender-quota"] ? ["limits: { maxPendingBytesPerSender: 1000000000000 }"] : []),
    `storage: { driver: sqlite, dir: ${JSON.stringify(`${dir}/data`)} }`,
    `server: { apiKey: ${API_KEY} }`,
    `plugins: { dir: ${JSON.stringify(`${dir}/plugins`)} }`,
    "log: { level: warn }",
  ];
  await Deno.mkdir(`${dir}/plugins`, { recursive: true });
  await Deno.writeTextFile(`${dir}/config.yaml`, lines.join("\n") + "\n");
  return `${dir}/config.yaml`;
}

interface Server {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

async function startServer(config: string): Promise<Server> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...startV8Flags(ROOT), "-A", "main.ts", "--config", config],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let out = "";
  const listening = Promise.withResolvers<string>();
  const read = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      if (out.length < 100_000) out += chunk;
      const match = out.match(/listening on (http:\/\/[^\s/]+)/);
      if (match) listening.resolve(match[1]);
    }
  };
  const drained = Promise.all([read(child.stdout), read(child.stderr)]).then(
    () => listening.reject(new Error(`The server exited:\n${out}`)),
  );
  const url = await listening.promise;
  return {
    url,
    pid: child.pid,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
      await drained;
    },
  };
}

// ------------------------------------------------------------------ clients

async function login(url: string, user: string): Promise<string> {
  const r = await fetch(`${url}/app/login`, {
    method: "POST",
    body: JSON.stringify({ username: user, password: `${user}-pw` }),
  });
  const body = await r.json();
  if (r.status !== 200) {
    throw new Error(`Login of ${user} failed: ${JSON.stringify(body)}`);
  }
  return body.data.token;
}

/**
 * Tokens of the legitimate users, taken before the attacks start: every
 * client comes from 127.0.0.1 here, so once the login flood has spent that
 * address's failure budget, logins from it wait (as they would behind one NAT).
 */
const tokens = new Map<string, string>();

async function sessionId(
  url: string,
  user: string,
  clientName: string,
): Promise<string> {
  let token = tokens.get(user);
  if (!token) tokens.set(user, token = await login(url, user));
  const r = await fetch(`${url}/app/websocket/client/login/${clientName}`, {
    headers: { token },
  });
  return (await r.json()).data;
}

/** A registered socket: frames go to `onFrame`. */
async function connect(
  url: string,
  user: string,
  clientName: string,
  onFrame: (frame: Record<string, unknown>) => void,
): Promise<WebSocket> {
  const sid = await sessionId(url, user, clientName);
  const ws = new WebSocket(`${url.replace("http", "ws")}/websocket`);
  await new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error("WebSocket failed to open"));
  });
  const registered = Promise.withResolvers<void>();
  ws.onmessage = (event) => {
    const frame = JSON.parse(event.data);
    if (frame.id === "reg" && frame.type === 9001) registered.resolve();
    else onFrame(frame);
  };
  ws.onclose = () => registered.reject(new Error(`${user}/${clientName} closed at register`));
  ws.send(JSON.stringify({
    id: "reg",
    type: 1000,
    isSystem: false,
    from: user,
    to: "",
    body: JSON.stringify({ sessionId: sid }),
  }));
  await registered.promise;
  ws.onclose = null;
  return ws;
}

const text = (from: string, to: string, id: string, body: string) =>
  JSON.stringify({ id, type: 2001, isSystem: false, from, to, body });

// --------------------------------------------------------------- bystanders

let latencies: number[] = [];
/** Latencies of bystander frames sent while an attack round was under way, by attack. */
const during = new Map<string, number[]>();
const activeRounds = new Set<string>();
let serverPid = 0;

/**
 * Runs one round of an attack, recording the server's RSS rise over its start
 * (sampled every 100 ms) and the bystanders' latencies meanwhile.
 */
async function round<T>(name: string, work: () => Promise<T>): Promise<T> {
  const before = memory(serverPid).rss;
  let top = before;
  const timer = setInterval(
    () => top = Math.max(top, memory(serverPid).rss),
    100,
  );
  activeRounds.add(name);
  try {
    return await work();
  } finally {
    activeRounds.delete(name);
    clearInterval(timer);
    const rise = Math.round((top - before) / 1048576);
    count(`${name} round RSS rise max MiB`, 0);
    counts.set(
      `${name} round RSS rise max MiB`,
      Math.max(counts.get(`${name} round RSS rise max MiB`)!, rise),
    );
  }
}

async function bystanderPair(url: string, a: string, b: string) {
  let waiting: ((at: number) => void) | undefined;
  const onFrame = (frame: Record<string, unknown>) => {
    if (frame.type === 2001 && waiting) waiting(performance.now());
  };
  const wa = await connect(url, a, "soak", onFrame);
  const wb = await connect(url, b, "soak", onFrame);
  let n = 0;
  while (running) {
    for (const [ws, from, to] of [[wa, a, b], [wb, b, a]] as const) {
      const got = new Promise<number>((resolve) => waiting = resolve);
      const sent = performance.now();
      ws.send(text(from, to, `p${n++}`, "ping"));
      const timeout = sleep(10_000).then(() => NaN);
      const at = await Promise.race([got, timeout]);
      if (Number.isNaN(at)) count("bystander frames lost (10 s)");
      else {
        latencies.push(at - sent);
        for (const name of activeRounds) {
          if (!during.has(name)) during.set(name, []);
          during.get(name)!.push(at - sent);
        }
      }
      await sleep(50);
    }
  }
  wa.close();
  wb.close();
}

// ------------------------------------------------------------------ attacks

async function fillBacklog(url: string, to: string, n: number, size = 1000) {
  const body = JSON.stringify({ title: "backlog", msg: "x".repeat(size) });
  for (let start = 0; start < n; start += 32) {
    await Promise.all(
      Array.from(
        { length: Math.min(32, n - start) },
        (_, k) =>
          fetch(`${url}/server/messages`, {
            method: "POST",
            headers: { authorization: `Bearer ${API_KEY}` },
            body: JSON.stringify({
              id: `bl-${start + k}`,
              type: 3001,
              to,
              body,
            }),
          }).then((r) => r.body?.cancel()),
      ),
    );
  }
}

async function backlogAttack(url: string) {
  await fillBacklog(url, "victim", 12_000);
  count("backlog stored", 12_000);
  while (running) {
    const started = performance.now();
    const replays = await round(
      "backlog",
      () =>
        Promise.all(Array.from({ length: 8 }, async (_, i) => {
          let got = 0;
          let last = performance.now();
          const ws = await connect(url, "victim", `r${i}`, () => {
            got++;
            last = performance.now();
          });
          while (performance.now() - last < 2000) await sleep(100);
          ws.close();
          return got;
        })),
    );
    count("backlog rounds");
    count("backlog frames replayed", replays.reduce((a, b) => a + b, 0));
    count("backlog replay ms", Math.round(performance.now() - started));
    await sleep(30_000);
  }
}

function clientFrame(payload: Uint8Array): Uint8Array {
  const n = payload.length;
  const head = n < 126 ? [0x81, 0x80 | n] : [0x81, 0x80 | 126, n >> 8, n & 0xff];
  const frame = new Uint8Array(head.length + 4 + n);
  frame.set(head);
  frame.set(payload, head.length + 4);
  return frame;
}

async function stuckAttack(url: string) {
  // A backlog larger than the kernel's socket buffers, so the replay to a socket
  // that never reads waits for it to drain (and live frames are held meanwhile).
  await fillBacklog(url, "victim2", 1000, 20_000);
  while (running) {
    const sid = await sessionId(url, "victim2", "stuck");
    const { hostname, port } = new URL(url);
    const conn = await Deno.connect({ hostname, port: Number(port) });
    await conn.write(encoder.encode(
      `GET /websocket HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\n` +
        `Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n` +
        `Sec-WebSocket-Version: 13\r\n\r\n`,
    ));
    await conn.read(new Uint8Array(1024));
    await conn.write(clientFrame(encoder.encode(JSON.stringify({
      id: "reg",
      type: 1000,
      isSystem: false,
      from: "victim2",
      to: "",
      body: JSON.stringify({ sessionId: sid }),
    }))));
    // The victim's other device sends for 30 s; its own copies are held for "stuck".
    await round("stuck", async () => {
      let answers = 0;
      const other = await connect(url, "victim2", "laptop", (f) => {
        if (f.type === 9001) answers++;
      });
      const big = "y".repeat(30_000);
      const until = performance.now() + 30_000;
      let n = 0;
      while (running && performance.now() < until) {
        other.send(text("victim2", "sender", `s${Date.now()}-${n++}`, big));
        await sleep(10);
      }
      count("stuck frames sent", n);
      count("stuck frames answered", answers);
      other.close();
      conn.close();
    });
    count("stuck rounds");
    await sleep(20_000);
  }
}

async function recipientsAttack(url: string) {
  let i = 0;
  const answered = new Map<number, number>();
  const ws = await connect(url, "attacker", "spam", (f) => {
    if (f.type !== 9001) return;
    const code = JSON.parse(f.body as string).code as number;
    answered.set(code, (answered.get(code) ?? 0) + 1);
  });
  while (running) {
    const to = Array.from({ length: 100 }, (_, k) => `ghost-${i}-${k}`).join(
      ",",
    );
    ws.send(text("attacker", to, `g${i++}`, "z".repeat(100)));
    await sleep(10); // 100 frames/s: under the default rate limit
  }
  for (const [code, n] of answered) count(`recipients answered ${code}`, n);
  ws.close();
}

async function loginAttack(url: string) {
  const one = async (k: number) => {
    let i = 0;
    while (running) {
      const username = (i++ + k) % 2 === 0 ? "hashed" : `nobody-${k}-${i}`;
      const r = await fetch(`${url}/app/login`, {
        method: "POST",
        body: JSON.stringify({ username, password: "guess" }),
      });
      await r.body?.cancel();
      count(`login answered ${r.status}`);
    }
  };
  await Promise.all(Array.from({ length: 32 }, (_, k) => one(k)));
}

async function dupkeysAttack(url: string) {
  let forgedSeen = 0;
  const victim = await connect(url, "sender", "dup", (f) => {
    // Delivered at all: a parser that keeps the first value reads it as from SYSTEM.
    if (f.type === 2001 && String(f.id).startsWith("d")) forgedSeen++;
  });
  const answers = new Map<number, number>();
  const ws = await connect(url, "forger", "dup", (f) => {
    if (f.type !== 9001) return;
    const code = JSON.parse(f.body as string).code as number;
    answers.set(code, (answers.get(code) ?? 0) + 1);
  });
  let i = 0;
  while (running) {
    ws.send(
      `{"id":"d${i++}","type":2001,"isSystem":true,"from":"SYSTEM","to":"sender",` +
        `"body":"pay now","isSystem":false,"from":"forger"}`,
    );
    await sleep(1000);
  }
  for (const [code, n] of answers) count(`dupkeys answered ${code}`, n);
  count("dupkeys forged frames delivered", forgedSeen);
  ws.close();
  victim.close();
}

// --------------------------------------------------------------------- main

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

const mib = (bytes: number) => (bytes / 1048576).toFixed(0);

const dir = await Deno.makeTempDir({ prefix: "im-soak-" });
const config = await writeConfig(dir);
const server = await startServer(config);
await sleep(1000);
const baseline = memory(server.pid).rss;
serverPid = server.pid;
console.log(
  `soak: ${MINUTES} min, attacks: ${[...ATTACKS].join(", ")}, ${PAIRS} bystander pairs, ` +
    `server ${ROOT} (pid ${server.pid}), RSS at start ${mib(baseline)} MiB`,
);
for (const user of ["victim", "victim2", "attacker", "forger", "sender"]) {
  tokens.set(user, await login(server.url, user));
}
for (let i = 1; i <= PAIRS * 2; i++) {
  tokens.set(`b${i}`, await login(server.url, `b${i}`));
}
const tasks: Promise<unknown>[] = [];
for (let i = 0; i < PAIRS; i++) {
  tasks.push(bystanderPair(server.url, `b${2 * i + 1}`, `b${2 * i + 2}`));
}
const attacks: Record<string, (url: string) => Promise<void>> = {
  backlog: backlogAttack,
  stuck: stuckAttack,
  recipients: recipientsAttack,
  login: loginAttack,
  dupkeys: dupkeysAttack,
};
for (const name of ATTACKS) {
  if (!attacks[name]) continue;
  tasks.push(
    attacks[name](server.url).catch((error) => {
      console.log(`attack ${name} stopped: ${error.message}`);
      count(`attack ${name} failed`);
    }),
  );
}
console.log(
  "minute | RSS MiB | peak MiB | bystander frames | p50 ms | p99 ms | max ms",
);
let allLatencies: number[] = [];
for (let minute = 1; minute <= MINUTES; minute++) {
  const step = 60_000 / 4;
  let peakRss = 0;
  for (let q = 0; q < 4; q++) {
    await sleep(step);
    peakRss = Math.max(peakRss, memory(server.pid).rss);
  }
  const sample = latencies.sort((a, b) => a - b);
  allLatencies = allLatencies.concat(sample);
  latencies = [];
  console.log(
    `${String(minute).padStart(6)} | ${mib(memory(server.pid).rss).padStart(7)} | ` +
      `${mib(memory(server.pid).peak).padStart(8)} | ${String(sample.length).padStart(16)} | ` +
      `${quantile(sample, 0.5).toFixed(1).padStart(6)} | ${
        quantile(sample, 0.99).toFixed(1).padStart(6)
      } | ${(sample[sample.length - 1] ?? NaN).toFixed(0).padStart(6)}`,
  );
}
running = false;
await Promise.race([Promise.all(tasks), sleep(20_000)]);
allLatencies.sort((a, b) => a - b);
console.log(
  `whole run: ${allLatencies.length} bystander frames, p50 ${
    quantile(allLatencies, 0.5).toFixed(1)
  } ms, p99 ${quantile(allLatencies, 0.99).toFixed(1)} ms, max ${
    allLatencies[allLatencies.length - 1]?.toFixed(0)
  } ms; peak RSS ${mib(memory(server.pid).peak)} MiB`,
);
for (const [what, n] of [...counts].sort()) console.log(`  ${what}: ${n}`);
for (const [name, sample] of during) {
  sample.sort((a, b) => a - b);
  console.log(
    `  bystanders during ${name} rounds: ${sample.length} frames, p50 ${
      quantile(sample, 0.5).toFixed(1)
    } ms, p99 ${quantile(sample, 0.99).toFixed(1)} ms, max ${
      sample[sample.length - 1].toFixed(0)
    } ms`,
  );
}
try {
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  for (const line of metrics.split("\n")) {
    if (line.startsWith("im_connections_rejected_total")) console.log(`  ${line}`);
  }
} catch { /* no metrics */ }
await server.stop();
// Item 4: what the store the run left costs at start-up.
const again = await startServer(config);
await sleep(2000);
console.log(`restart on the same store: RSS ${mib(memory(again.pid).rss)} MiB`);
await again.stop();
await Deno.remove(dir, { recursive: true });
