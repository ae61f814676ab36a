/**
 * Cluster benchmark: throughput and latency of text messages between users
 * spread over 1, 2 and 3 server instances sharing one Redis (or one Redis
 * Cluster).
 *
 *   npx -y deno@2.9.6 run -A bench/cluster_bench.ts [--seconds 8] [--users 60]
 *     [--window 8] [--instances 1,2,3] [--fsync always|everysec|off] [--baseline yes|no]
 *     [--redis single|cluster|both] [--replicas 0|1] [--pin yes|no] [--commandstats yes|no]
 *
 * Each instance is a child process (`main.ts`) with `cluster.redisUrl` set;
 * Redis is a fresh `redis-server` per run (AOF with the chosen fsync policy).
 * With `--redis cluster` it is a fresh local Redis Cluster of 3 masters
 * (`--replicas 1`: a replica each) built by tests/_redis_cluster.ts, every
 * node with the same AOF setting; `both` runs the single Redis and the
 * cluster alternately for each instance count. Redis CPU per message is
 * `INFO cpu` summed over every node (replicas included). With two cores or
 * more and `taskset`, every Redis node runs on CPU 0 and the instances on
 * the other CPUs (printed).
 * The load generator (this process) logs every user in on the instance
 * `index % instances`; each user sends 2001 texts to the next user, who sits
 * on another instance whenever there is more than one, keeping `window` frames
 * unanswered (waiting for their 9001). Latency is from the send to the frame's
 * arrival at the recipient's socket (one clock: this process).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { NodeProbes, startBenchCluster } from "./redis_nodes.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    seconds: { type: "string", default: "8" },
    warmup: { type: "string", default: "2" },
    users: { type: "string", default: "60" },
    window: { type: "string", default: "8" },
    instances: { type: "string", default: "1,2,3" },
    fsync: { type: "string", default: "always" },
    baseline: { type: "string", default: "yes" },
    pin: { type: "string", default: "yes" },
    commandstats: { type: "string", default: "no" },
    redis: { type: "string", default: "single" },
    replicas: { type: "string", default: "0" },
  },
});
if (!["single", "cluster", "both"].includes(values.redis!)) {
  throw new Error(`Invalid --redis: expected single, cluster or both, got ${values.redis}`);
}
const REPLICAS = Number(values.replicas);
const MASTERS = 3;
const SECONDS = Number(values.seconds);
const WARMUP = Number(values.warmup);
const USERS = Number(values.users);
const WINDOW = Number(values.window);
const COUNTS = values.instances!.split(",").map(Number);
const FSYNC = values.fsync!;
const CORES = navigator.hardwareConcurrency;
/** Redis on the first core, the instances on the others (when there are two cores or more). */
const PIN = values.pin !== "no" && CORES >= 2 && hasTaskset();
const REDIS_CPUS = "0";
const INSTANCE_CPUS = CORES > 2 ? `1-${CORES - 1}` : "1";

function hasTaskset(): boolean {
  try {
    return new Deno.Command("taskset", { args: ["-V"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** `command args` under `taskset -c cpus` when pinning. */
function pinned(cpus: string, command: string, args: string[]): [string, string[]] {
  return PIN ? ["taskset", ["-c", cpus, command, ...args]] : [command, args];
}

const users = Array.from({ length: USERS }, (_, i) => ({
  userId: `u${i}`,
  username: `user${i}`,
  password: `password-${i}`,
}));

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

async function startRedis(dir: string) {
  const port = freePort();
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", ""];
  if (FSYNC === "off") args.push("--appendonly", "no");
  else args.push("--appendonly", "yes", "--appendfsync", FSYNC, "--dir", dir);
  const [command, argv] = pinned(REDIS_CPUS, "redis-server", args);
  const child = new Deno.Command(command, { args: argv, stdout: "null", stderr: "null" }).spawn();
  for (let i = 0; i < 200; i++) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      break;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    nodes: [{ port, pid: child.pid, role: "master" as const }],
    async stop() {
      child.kill("SIGKILL");
      await child.status;
    },
  };
}

/** AOF settings of every node, as the single Redis gets them (the node's own `--dir`). */
function aofArgs(): string[] {
  return FSYNC === "off" ? ["--appendonly", "no"] : ["--appendonly", "yes", "--appendfsync", FSYNC];
}

/** A fresh Redis Cluster: 3 masters (and replicas), every node on the Redis CPU when pinning. */
async function startCluster() {
  const cluster = await startBenchCluster({
    masters: MASTERS,
    replicas: REPLICAS,
    extraArgs: aofArgs(),
    cpus: PIN ? REDIS_CPUS : undefined,
  });
  // Check that the nodes run with the AOF setting asked for (the harness sets its own first).
  const probes = await NodeProbes.open(cluster.nodes);
  try {
    for (const client of probes.clients) {
      const config = await client.configGet(["appendonly", "appendfsync"]);
      const want = FSYNC === "off" ? "no" : "yes";
      if (config.appendonly !== want || (want === "yes" && config.appendfsync !== FSYNC)) {
        throw new Error(
          `Redis Cluster node runs with ${JSON.stringify(config)}: not fsync=${FSYNC}`,
        );
      }
    }
  } finally {
    await probes.close();
  }
  return cluster;
}

type Backend = "none" | "single" | "cluster";

async function startInstance(redisUrl: string | undefined, dir: string, index: number) {
  const path = `${dir}/instance-${index}.json`;
  await Deno.writeTextFile(
    path,
    JSON.stringify({
      websocket: { url: "127.0.0.1", port: 0 },
      auth: { users },
      storage: { driver: "memory" },
      plugins: { dir: "./tests/fixtures/empty" },
      limits: { rateLimit: { perSecond: 100000, burst: 100000 } },
      cluster: redisUrl ? { redisUrl } : {},
      log: { level: "error" },
    }),
  );
  const [command, argv] = pinned(INSTANCE_CPUS, Deno.execPath(), [
    "run",
    "-A",
    "--v8-flags=--min-semi-space-size=16",
    "main.ts",
    "--config",
    path,
  ]);
  const child = new Deno.Command(command, {
    args: argv,
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const listening = Promise.withResolvers<string>();
  const drained = (async () => {
    let text = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      if (text.length < 10000) text += chunk;
      const match = text.match(/listening on (http:\/\/\S+)/);
      if (match) listening.resolve(match[1]);
    }
    listening.reject(new Error(`Instance ${index} exited: ${text}`));
  })();
  const url = await listening.promise;
  return {
    url,
    pid: child.pid,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await drained;
    },
  };
}

/** CPU seconds (user + system) a process has used so far, from /proc. */
function cpuSeconds(pid: number): number {
  try {
    const fields = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1].split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}

/** Busy and total jiffies of the whole machine, from /proc/stat. */
function machineJiffies(): { busy: number; total: number } {
  const line = Deno.readTextFileSync("/proc/stat").split("\n")[0];
  const fields = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = fields[3] + (fields[4] ?? 0);
  const total = fields.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/** Redis's own CPU seconds (main thread and helpers, user + system) summed over every node. */
async function redisCpu(probes: NodeProbes): Promise<number> {
  const { user, sys } = await probes.cpu();
  return user + sys;
}

/**
 * Entries appended so far to the delivery streams (on every master), times
 * the instances that read each: the one stream every instance reads
 * (`im:broker`, before routing) or one stream per instance
 * (`im:{inst:<id>}:deliveries`).
 */
async function entriesRead(probes: NodeProbes, instances: number): Promise<number> {
  const shared = await probes.entriesAdded({ match: "im:broker" });
  if (shared > 0) return shared * instances;
  return await probes.entriesAdded({ match: "im:{inst:*}:deliveries" });
}

interface Client {
  socket: WebSocket;
  userId: string;
}

async function connect(url: string, user: (typeof users)[number]): Promise<Client> {
  const login = await fetch(`${url}/app/login`, {
    method: "POST",
    body: JSON.stringify({ username: user.username, password: user.password }),
  }).then((r) => r.json());
  const session = await fetch(`${url}/app/websocket/client/login/bench`, {
    headers: { token: login.data.token },
  }).then((r) => r.json());
  const socket = new WebSocket(`${url.replace("http", "ws")}/websocket`);
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onerror = reject;
  });
  const registered = new Promise<void>((resolve, reject) => {
    socket.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      if (frame.type !== 9001) return;
      if (JSON.parse(frame.body).code === 200) resolve();
      else reject(new Error(frame.body));
    };
  });
  socket.send(JSON.stringify({
    id: "reg",
    type: 1000,
    isSystem: false,
    from: user.userId,
    to: "",
    body: JSON.stringify({ sessionId: session.data }),
  }));
  await registered;
  return { socket, userId: user.userId };
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

async function run(count: number, backend: Backend) {
  const dir = await Deno.makeTempDir({ prefix: "im-cluster-bench-" });
  const redis = backend === "single"
    ? await startRedis(dir)
    : backend === "cluster"
    ? await startCluster()
    : undefined;
  const instances = [];
  for (let i = 0; i < count; i++) instances.push(await startInstance(redis?.url, dir, i));
  const clients: Client[] = [];
  for (let i = 0; i < USERS; i++) {
    clients.push(await connect(instances[i % count].url, users[i]));
  }

  let measuring = false;
  let stopping = false;
  let received = 0;
  let failed = 0;
  /** Every frame delivered to a recipient, and sends not answered yet. */
  let delivered = 0;
  let unanswered = 0;
  const latencies: number[] = [];
  const sentAt = new Map<string, number>();
  let seq = 0;

  const send = (client: Client, to: string) => {
    const id = `${client.userId}-${++seq}`;
    sentAt.set(id, performance.now());
    unanswered++;
    client.socket.send(JSON.stringify({
      id,
      type: 2001,
      isSystem: false,
      from: client.userId,
      to,
      body: `bench message ${id} with some text to carry`,
    }));
  };

  clients.forEach((client, i) => {
    // Next user: on the next instance when there are several (users are dealt round-robin).
    const to = users[(i + 1) % USERS].userId;
    client.socket.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      if (frame.type === 9001) {
        unanswered--;
        if (JSON.parse(frame.body).code !== 200) failed++;
        if (!stopping) send(client, to);
        return;
      }
      const start = sentAt.get(frame.id);
      sentAt.delete(frame.id);
      delivered++;
      if (measuring && start !== undefined) {
        received++;
        latencies.push(performance.now() - start);
      }
    };
    for (let w = 0; w < WINDOW; w++) send(client, to);
  });
  const start = () => {
    stopping = false;
    clients.forEach((client, i) => {
      for (let w = 0; w < WINDOW; w++) send(client, users[(i + 1) % USERS].userId);
    });
  };
  /** Stops sending and waits until every send is answered and delivered (at most 20 s). */
  const quiesce = async () => {
    stopping = true;
    for (let i = 0; i < 2000 && (unanswered > 0 || sentAt.size > 0); i++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  };

  await new Promise((resolve) => setTimeout(resolve, WARMUP * 1000));
  // Parent pids: under taskset the child is taskset, which execs the program (same pid).
  const redisPids = redis?.nodes.map((node) => node.pid) ?? [];
  const pids = [...redisPids, ...instances.map((i) => i.pid), Deno.pid];
  const probe = redis ? await NodeProbes.open(redis.nodes) : undefined;
  // Redis's unit costs are counted between two quiet points (nothing in flight), so that
  // every message counted is one Redis fully handled and the other way round.
  await quiesce();
  if (probe && values.commandstats === "yes") await probe.each(["CONFIG", "RESETSTAT"]);
  const redisCpuBefore = probe ? await redisCpu(probe) : NaN;
  const entriesBefore = probe ? await entriesRead(probe, count) : NaN;
  const deliveredBefore = delivered;
  start();
  const cpuBefore = pids.map(cpuSeconds);
  const machineBefore = machineJiffies();
  measuring = true;
  const started = performance.now();
  await new Promise((resolve) => setTimeout(resolve, SECONDS * 1000));
  measuring = false;
  const elapsed = (performance.now() - started) / 1000;
  const cpuAll = pids.map((pid, i) => (cpuSeconds(pid) - cpuBefore[i]) / elapsed);
  // One figure for Redis (every node summed), then the instances, then the load generator.
  const cpu = [
    redis ? cpuAll.slice(0, redisPids.length).reduce((a, b) => a + b, 0) : NaN,
    ...cpuAll.slice(redisPids.length),
  ];
  const machineAfter = machineJiffies();
  await quiesce();
  const counted = delivered - deliveredBefore;
  const redisCpuUsed = probe ? await redisCpu(probe) - redisCpuBefore : NaN;
  const entries = probe ? await entriesRead(probe, count) - entriesBefore : NaN;
  if (probe && values.commandstats === "yes") {
    // Where Redis's time goes, per delivered message (scripts include the commands they call).
    for (const [name, { calls, usec }] of await probe.commandstats()) {
      if (/^(info|xinfo|scan|config)/.test(name)) continue;
      console.log(
        `  ${name}: ${(calls / counted).toFixed(2)} calls/msg, ${
          (usec / counted).toFixed(1)
        } us/msg`,
      );
    }
  }
  await probe?.close();
  const cores = navigator.hardwareConcurrency;
  // Machine-wide busy time in cores (e.g. 1.6 of 2), and the part our processes did not use.
  const machineBusy = (machineAfter.busy - machineBefore.busy) /
    (machineAfter.total - machineBefore.total) * cores;
  const others = Math.max(
    0,
    machineBusy - cpu.filter((x) => !Number.isNaN(x)).reduce((a, b) => a + b, 0),
  );
  stopping = true;
  await new Promise((resolve) => setTimeout(resolve, 500));

  for (const client of clients) client.socket.close();
  await new Promise((resolve) => setTimeout(resolve, 200));
  for (const instance of instances) await instance.stop();
  await redis?.stop();
  await Deno.remove(dir, { recursive: true });

  latencies.sort((a, b) => a - b);
  return {
    instances: backend === "single"
      ? String(count)
      : backend === "cluster"
      ? `${count}, Redis Cluster ${MASTERS} masters${
        REPLICAS > 0 ? ` + ${REPLICAS} replica each` : ""
      }`
      : "1, memory backends, no Redis",
    throughput: received / elapsed,
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
    failed,
    cpuRedis: cpu[0],
    cpuInstances: cpu.slice(1, -1).reduce((a, b) => a + b, 0),
    cpuLoad: cpu[cpu.length - 1],
    others,
    redisUsPerMessage: redisCpuUsed / counted * 1e6,
    entriesPerMessage: entries / counted,
  };
}

const BACKENDS: Backend[] = values.redis === "both"
  ? ["single", "cluster"]
  : [values.redis as Backend];
const nodeCount = MASTERS * (1 + REPLICAS);
console.log(
  `users=${USERS} window=${WINDOW} seconds=${SECONDS} fsync=${FSYNC} cores=${CORES} redis=${values.redis}`,
);
if (BACKENDS.includes("cluster")) {
  console.log(
    `Redis Cluster: ${MASTERS} masters, ${REPLICAS} replica(s) each, ${nodeCount} nodes, ` +
      `every node with the same AOF setting (fsync=${FSYNC}); Redis CPU per message and CPU Redis ` +
      "are summed over every node",
  );
}
console.log(
  PIN
    ? `pinning: Redis on CPU ${REDIS_CPUS}${
      BACKENDS.includes("cluster") ? ` (all ${nodeCount} cluster nodes)` : ""
    }, instances on CPU ${INSTANCE_CPUS} (taskset), load generator unpinned`
    : "pinning: none (taskset missing, one core, or --pin no)",
);
console.log(
  "| instances | msgs/s delivered | p50 ms | p99 ms | 400s | Redis CPU us/msg | entries read per msg (all instances) | CPU Redis | CPU instances | CPU load gen | CPU other processes |",
);
console.log("|---|---|---|---|---|---|---|---|---|---|---|");
// With both, the single Redis and the cluster alternate for each count (drift spreads over both).
const runs: [number, Backend][] = COUNTS.flatMap((count) =>
  BACKENDS.map((backend): [number, Backend] => [count, backend])
);
if (values.baseline !== "no") runs.unshift([1, "none"]);
for (const [count, backend] of runs) {
  const r = await run(count, backend);
  const num = (x: number, digits: number) => Number.isNaN(x) ? "-" : x.toFixed(digits);
  const pct = (x: number) => Number.isNaN(x) ? "-" : `${Math.round(x * 100)}%`;
  console.log(
    `| ${r.instances} | ${Math.round(r.throughput)} | ${r.p50.toFixed(1)} | ${
      r.p99.toFixed(1)
    } | ${r.failed} | ${num(r.redisUsPerMessage, 1)} | ${num(r.entriesPerMessage, 2)} | ${
      pct(r.cpuRedis)
    } | ${pct(r.cpuInstances)} | ${pct(r.cpuLoad)} | ${pct(r.others)} |`,
  );
}
