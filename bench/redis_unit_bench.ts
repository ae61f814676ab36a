/**
 * Redis's own CPU per delivered 1:1 message, without WebSockets: the Redis
 * backends of two instances (A publishes, B holds the recipients) drive one
 * fresh `redis-server` (AOF off, pinned to CPU 0 when `taskset` exists) with
 * the calls the server makes per message: accept, publish, each instance's
 * broker read, and the delivery mark. Redis CPU is read from `INFO cpu`
 * before and after; nothing else runs against that Redis, so the figure is
 * the backends' cost, less noisy than the full cluster benchmark.
 *
 * On a shared or virtual machine that figure still moves by ±10 % from run
 * to run. `--callgrind` runs Redis under valgrind's callgrind and prints the
 * instructions Redis executes per message in the measured run instead: the
 * same for the same code, so two versions compare to the percent (slow: use
 * fewer messages).
 *
 * `--cluster` runs the same against a fresh local Redis Cluster of 3 masters
 * (tests/_redis_cluster.ts, AOF off, no replicas, every node pinned to CPU 0)
 * with the backends opened by `openRedis` as a server opens them: Redis CPU
 * and memory are summed over the masters, streams read on each. `--callgrind`
 * is single-Redis only (it refuses `--cluster`).
 *
 *   npx -y deno@2.9.6 run -A bench/redis_unit_bench.ts [--messages 30000] [--window 64]
 *     [--instances 2] [--no-registers] [--max-per-user 10000] [--callgrind | --cluster]
 *     [--redis-args="--hash-max-listpack-value 1024"]
 *
 * @module
 */
import { parseArgs } from "node:util";
import process from "node:process";
import { connectRedis, openRedis } from "../src/backends/redis.ts";
import { RedisBroker } from "../src/backends/broker_redis.ts";
import { RedisPresence } from "../src/backends/presence_redis.ts";
import { RedisStore } from "../src/backends/store_redis.ts";
import type { Broker, BrokerHandler, Delivery } from "../src/core/broker.ts";
import type { MessageStore } from "../src/core/store.ts";
import type { PresenceEntry } from "../src/core/presence.ts";
import { createLogger } from "../src/log.ts";
import { type BenchNode, canPin, NodeProbes, startBenchCluster } from "./redis_nodes.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    messages: { type: "string", default: "30000" },
    window: { type: "string", default: "64" },
    users: { type: "string", default: "100" },
    commandstats: { type: "boolean", default: false },
    "print-pid": { type: "boolean", default: false },
    "no-registers": { type: "boolean", default: false },
    callgrind: { type: "boolean", default: false },
    cluster: { type: "boolean", default: false },
    instances: { type: "string", default: "2" },
    "max-per-user": { type: "string", default: "10000" },
    /** Extra redis-server arguments, space separated (e.g. "--hash-max-listpack-value 1024"). */
    "redis-args": { type: "string", default: "" },
  },
});
const MESSAGES = Number(values.messages);
const WINDOW = Number(values.window);
const USERS = Number(values.users);
/** Instances reading deliveries: A (the sender's), B (the recipients') and others holding nobody. */
const INSTANCES = Math.max(2, Number(values.instances));
const logger = createLogger({ level: "error", write: () => {} });
const CLUSTER = values.cluster;
const CALLGRIND = values.callgrind;
if (CLUSTER && CALLGRIND) {
  throw new Error("Invalid options: --callgrind runs a single Redis only, not with --cluster");
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

const redisArgs = values["redis-args"].split(" ").filter((arg) => arg !== "");
const pin = canPin();
const callgrindOut = `${Deno.makeTempDirSync({ prefix: "im-callgrind-" })}/redis.out`;
let url: string;
let nodes: BenchNode[];
let stopRedis: (signal: Deno.Signal) => Promise<void>;
let redisPid = 0;
if (CLUSTER) {
  // Every master runs as the single Redis does (AOF off, the same extra arguments).
  const cluster = await startBenchCluster({
    replicas: 0,
    extraArgs: ["--appendonly", "no", ...redisArgs],
    cpus: pin ? "0" : undefined,
  });
  url = cluster.url;
  nodes = cluster.nodes;
  stopRedis = () => cluster.stop();
} else {
  const port = freePort();
  const args = [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "no",
    ...redisArgs,
  ];
  const command = CALLGRIND
    ? ["valgrind", "--tool=callgrind", "--instr-atstart=no", `--callgrind-out-file=${callgrindOut}`]
    : [];
  command.push("redis-server", ...args);
  if (pin) command.unshift("taskset", "-c", "0");
  const redis = new Deno.Command(command[0], {
    args: command.slice(1),
    stdout: "null",
    stderr: "null",
  }).spawn();
  url = `redis://127.0.0.1:${port}`;
  redisPid = redis.pid;
  nodes = [{ port, pid: redis.pid, role: "master" }];
  stopRedis = async (signal) => {
    redis.kill(signal);
    await redis.status;
  };
  for (let i = 0; i < (CALLGRIND ? 2000 : 200); i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      break;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }
}
if (values["print-pid"]) {
  console.log(`redis pid ${nodes.map((node) => node.pid).join(" ")}`);
}

// On a cluster, the backends open their links as a server does (openRedis detects the cluster).
const open = (name: string) =>
  CLUSTER ? openRedis(url, { logger, name }) : connectRedis(url, { logger, name });
const presence = new RedisPresence(await open("presence"), { logger });
// As cluster.ts sets them up (where the options exist: the benchmark also runs on older code).
// A small --max-per-user measures the steady state in which each message drops a recipient's oldest.
const maxPerUser = Number(values["max-per-user"]);
// The default limits.maxPendingBytesPerSender (64 MiB), as a server runs.
const maxPendingBytesPerSender = 64 * 1024 * 1024;
const storeA = new RedisStore(await open("store-a"), {
  logger,
  maxPerUser,
  maxPendingBytesPerSender,
  publish: { maxLength: 100000 },
});
const storeB = new RedisStore(await open("store-b"), {
  logger,
  maxPerUser,
  maxPendingBytesPerSender,
});
const brokerA: Broker = new RedisBroker(await open("pub-a"), await open("read-a"), { logger });
const brokerB: Broker = new RedisBroker(await open("pub-b"), await open("read-b"), { logger });
let delivered = 0;
let wake: (() => void) | undefined;
const handler = (instance: string, marks: MessageStore): BrokerHandler => ({
  instance,
  deliver(delivery: Delivery) {
    // Instance B holds every recipient; A holds none (as a hub would answer).
    if (instance !== "ib") return;
    for (const user of delivery.users) {
      delivered++;
      if (delivery.stored) marks.markDelivered(user, [delivery.stored]).catch(() => {});
    }
    wake?.();
  },
  kick() {},
});
await brokerA.subscribe(handler("ia", storeA));
await brokerB.subscribe(handler("ib", storeB));
// Further instances that hold none of the recipients (they only read what reaches them).
const others: Broker[] = [];
for (let i = 2; i < INSTANCES; i++) {
  const broker = new RedisBroker(await open(`pub-${i}`), await open(`read-${i}`), { logger });
  await broker.subscribe(handler(`i${i}`, storeA));
  others.push(broker);
}
for (let i = 0; i < USERS; i++) {
  await presence.add({ userId: `r${i}`, clientName: "web", since: Date.now(), instance: "ib" });
}

const store = storeA as MessageStore & { publishes?: boolean };
let next = 0;
async function sendOne(): Promise<void> {
  const n = next++;
  const sender = `s${n % USERS}`;
  const recipient = `r${n % USERS}`;
  const id = `m${n}`;
  const text = JSON.stringify({ id, type: 2001, from: sender, to: recipient, body: `unit ${n}` });
  const message = { sender, id, type: 2001, recipients: [recipient], text, acceptedAt: Date.now() };
  const delivery: Delivery = {
    stored: { sender, id },
    text,
    users: [recipient],
    echoTo: sender,
    origin: { instance: "ia", conn: 1 },
    acceptedAt: message.acceptedAt,
  };
  await store.accept(message, delivery);
  if (!store.publishes) await brokerA.publish(delivery);
}

async function run(count: number): Promise<void> {
  const target = delivered + count;
  let started = 0;
  const lane = async () => {
    while (started < count) {
      started++;
      await sendOne();
    }
  };
  await Promise.all(Array.from({ length: WINDOW }, lane));
  while (delivered < target) {
    const woken = Promise.withResolvers<void>();
    wake = woken.resolve;
    await woken.promise;
  }
  // Let the last batch of marks reach Redis.
  await new Promise((resolve) => setTimeout(resolve, 50));
}

const probe = await NodeProbes.open(nodes);
let split = { sys: 0, user: 0 };
/** Redis CPU seconds since the last call, summed over every node. */
const cpu = async () => {
  const now = await probe.cpu();
  const delta = { sys: now.sys - split.sys, user: now.user - split.user };
  split = now;
  return delta;
};
// The old single stream is read by every instance.
const streams = () => probe.entriesAdded({ readers: (key) => key === "im:broker" ? INSTANCES : 1 });

/** Runs `callgrind_control` on Redis: `-i on` / `-i off` switches counting on and off. */
async function callgrind(...args: string[]): Promise<void> {
  if (!CALLGRIND) return;
  await new Deno.Command("callgrind_control", { args: [...args, String(redisPid)] }).output();
}

/** The instructions callgrind counted (the `totals:` of its output file, or of dump `part`). */
async function instructions(part?: number): Promise<number> {
  const text = await Deno.readTextFile(
    part === undefined ? callgrindOut : `${callgrindOut}.${part}`,
  );
  return Number(text.match(/^totals: (\d+)/m)?.[1]);
}

// Memory before any message: a cluster has three empty Redis to subtract, a single Redis one.
const memoryEmpty = await probe.memory();
await run(Math.min(5000, MESSAGES));
await callgrind("-i", "on");
await probe.each(["CONFIG", "RESETSTAT"]);
const entriesBefore = await streams();
await cpu();
const ownBefore = process.cpuUsage();
const started = performance.now();
await run(MESSAGES);
// The messages' counts go to a file of their own (dump 1); the receipts' are counted next.
await callgrind("-d");
await callgrind("-i", "off");
const seconds = (performance.now() - started) / 1000;
const { sys, user } = await cpu();
const used = sys + user;
const own = process.cpuUsage(ownBefore);
const entries = await streams() - entriesBefore;
const where = CLUSTER
  ? `Redis Cluster of ${nodes.length} masters (no replicas), ${
    pin ? "every node pinned to CPU 0" : "unpinned"
  }, CPU and memory summed over the masters`
  : pin
  ? "Redis pinned to CPU 0"
  : "Redis unpinned";
console.log(
  `${where}; ${MESSAGES} messages in ${
    seconds.toFixed(1)
  } s with ${INSTANCES} instances, maxPerUser ${maxPerUser}; Redis CPU ${
    (used / MESSAGES * 1e6).toFixed(1)
  } us/msg (user ${(user / MESSAGES * 1e6).toFixed(1)}, sys ${
    (sys / MESSAGES * 1e6).toFixed(1)
  }); entries read ${(entries / MESSAGES).toFixed(2)} per msg; Redis ${
    (used / seconds * 100).toFixed(0)
  }% of a core; this process (the backends of every instance) ${
    ((own.user + own.system) / MESSAGES).toFixed(1)
  } us/msg`,
);

if (values.commandstats) {
  for (const [name, { calls, usec }] of await probe.commandstats()) {
    if (/^(info|xinfo|scan|config)/.test(name)) continue;
    console.log(
      `  ${name}: ${(calls / MESSAGES).toFixed(2)} calls/msg, ${
        (usec / MESSAGES).toFixed(2)
      } us/msg`,
    );
  }
}
// Memory per stored message, and the cost of registers (presence add, the kick of the same
// client elsewhere, the replay read) and of the disconnects that follow.
const memory = () => probe.memory();
const memoryAfterMessages = await memory();
console.log(
  `Redis memory per stored message (1 recipient, not acknowledged, ~100-byte text): ${
    Math.round(memoryAfterMessages / (next || 1))
  } bytes (all ${next} messages, including the warm-up); ${
    Math.round((memoryAfterMessages - memoryEmpty) / (next || 1))
  } bytes less the memory before the first message`,
);
if (!Deno.args.includes("--no-registers")) {
  // Receipts: the recipient (on B) acknowledges each message of the measured run; the receipt
  // frame goes to the sender (on A, which holds nobody here: its presence has no entry).
  const first = next - MESSAGES;
  const storeReceipts = storeB as MessageStore & { publishes?: boolean };
  await cpu();
  let acked = 0;
  const lane = async () => {
    while (acked < MESSAGES) {
      const n = first + acked++;
      const key = { sender: `s${n % USERS}`, id: `m${n}` };
      const receipt: Delivery = {
        text: JSON.stringify({ id: key.id, type: 9101, from: `r${n % USERS}`, to: key.sender }),
        users: [key.sender],
        echoTo: `r${n % USERS}`,
        origin: { instance: "ib", conn: 1 },
      };
      await storeReceipts.acknowledge(`r${n % USERS}`, key, receipt);
      if (!storeReceipts.publishes) await brokerB.publish(receipt);
    }
  };
  await callgrind("-i", "on");
  await Promise.all(Array.from({ length: WINDOW }, lane));
  await callgrind("-i", "off");
  const receipts = await cpu();
  console.log(
    `receipts: Redis CPU ${
      ((receipts.sys + receipts.user) / MESSAGES * 1e6).toFixed(1)
    } us each (acknowledge and route the receipt frame)`,
  );

  const REGISTERS = 5000;
  const memoryBefore = await memory();
  await cpu();
  const entries: PresenceEntry[] = [];
  for (let i = 0; i < REGISTERS; i += 50) {
    await Promise.all(Array.from({ length: 50 }, async (_, j) => {
      const entry = { userId: `c${i + j}`, clientName: "web", since: Date.now(), instance: "ib" };
      entries.push(entry);
      await brokerB.kick({
        userId: entry.userId,
        clientName: "web",
        code: 4001,
        reason: "replaced",
        except: { instance: "ib", conn: i + j },
      });
      await presence.add(entry);
      await storeB.unacknowledged(entry.userId, { limit: 64 });
    }));
  }
  const registered = await cpu();
  const memoryRegistered = await memory();
  for (const entry of entries) await presence.remove(entry);
  const removed = await cpu();
  console.log(
    `registers: Redis CPU ${
      ((registered.sys + registered.user) / REGISTERS * 1e6).toFixed(1)
    } us each (kick to 2 instances, presence add, replay read); ${
      Math.round((memoryRegistered - memoryBefore) / REGISTERS)
    } bytes of Redis memory per connected user; disconnects ${
      ((removed.sys + removed.user) / REGISTERS * 1e6).toFixed(1)
    } us each`,
  );
}
await probe.close();
await brokerA.close();
await brokerB.close();
for (const broker of others) await broker.close();
await presence.close();
await storeA.close();
await storeB.close();
if (CALLGRIND) {
  // A clean exit writes callgrind's file.
  await stopRedis("SIGTERM");
  console.log(
    `callgrind: Redis executed ${
      Math.round(await instructions(1) / MESSAGES)
    } instructions per message in the measured run${
      Deno.args.includes("--no-registers")
        ? ""
        : `, ${Math.round(await instructions() / MESSAGES)} per receipt`
    }`,
  );
} else {
  await stopRedis("SIGKILL");
}
