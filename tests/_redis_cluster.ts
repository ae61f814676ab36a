/**
 * Test helper for Redis Cluster: a throwaway cluster of real `redis-server`
 * processes on free loopback ports (3 masters with a replica each by default),
 * built with `redis-cli --cluster create`, whose masters can be killed to see a
 * replica promoted.
 *
 * ```ts
 * import { createCluster } from "redis";
 * import { RedisCluster } from "./_redis_cluster.ts";
 *
 * await using cluster = await RedisCluster.start();
 * const client = await createCluster({ rootNodes: [{ url: cluster.url }] }).connect();
 * await client.set("{room:1}:messages", "hello");
 * const { killed, promoted } = await cluster.killMasterOf("{room:1}:messages");
 * client.destroy(); // It would keep retrying `killed` (see tests/redis_cluster_harness_test.ts)
 * ```
 *
 * Admin queries go over a raw RESP exchange (no client library): they never
 * retry, reconnect or follow redirections behind the test's back.
 *
 * @module
 */
import { eventually, freePort, REDIS_SERVER, RedisServer } from "./_redis.ts";

/** Options of {@link RedisCluster.start}. */
export interface RedisClusterOptions {
  /** Masters, each serving an equal share of the 16384 slots. @default 3 */
  masters?: number;
  /** Replicas of each master. @default 1 */
  replicasPerMaster?: number;
  /**
   * `cluster-node-timeout`: how long a node may be unreachable before it is
   * suspected to have failed (a failover takes about twice this). @default 1000
   */
  nodeTimeoutMs?: number;
  /** More `redis-server` arguments for every node (e.g. `["--cluster-require-full-coverage", "no"]`). */
  extraArgs?: string[];
}

/** One `redis-server` of a {@link RedisCluster}. */
export interface RedisClusterNode {
  readonly port: number;
  /** Its role when last seen by the harness (a killed master stays "master"). */
  role: "master" | "replica";
  /** For a replica: port of its master. */
  replicaOf?: number;
  readonly server: RedisServer;
}

/** What {@link RedisCluster.killMasterOf} did. */
export interface Failover {
  /** Port of the master that was killed. */
  killed: number;
  /** Port of the replica that took over its slots. */
  promoted: number;
  /** Time from the kill until every surviving node reported `cluster_state:ok` again. */
  elapsedMs: number;
}

/** A reply of Redis, as parsed by {@link redisCommand}. */
export type RespValue = string | number | null | RespError | RespValue[];

/** An error reply (`-ERR ...`), returned rather than thrown. */
export class RespError {
  constructor(readonly message: string) {}
}

/** A running Redis Cluster owned by a test. */
export class RedisCluster implements AsyncDisposable {
  /** Every node, masters first (in slot order) then replicas, as created. */
  readonly nodes: readonly RedisClusterNode[];
  #dirs: string[];

  private constructor(nodes: RedisClusterNode[], dirs: string[]) {
    this.nodes = nodes;
    this.#dirs = dirs;
  }

  /** A seed URL for a cluster client: a master that is running. */
  get url(): string {
    const node = this.nodes.find((n) => n.role === "master" && n.server.running) ??
      this.nodes.find((n) => n.server.running);
    if (!node) throw new Error("Redis Cluster has no running node");
    return node.server.url;
  }

  /**
   * Starts `masters * (1 + replicasPerMaster)` nodes, joins them with
   * `redis-cli --cluster create` and waits until every node reports
   * `cluster_state:ok` with all slots assigned and every replica is in sync.
   * Stops everything it started if any of that fails.
   */
  static async start(options: RedisClusterOptions = {}): Promise<RedisCluster> {
    const masters = options.masters ?? 3;
    const replicas = options.replicasPerMaster ?? 1;
    const nodeTimeoutMs = options.nodeTimeoutMs ?? 1000;
    if (masters < 3) throw new Error(`Redis Cluster needs at least 3 masters: got ${masters}`);
    const count = masters * (1 + replicas);
    const dirs: string[] = [];
    const nodes: RedisClusterNode[] = [];
    const cluster = new RedisCluster(nodes, dirs);
    try {
      const args = [
        "--cluster-enabled",
        "yes",
        "--cluster-node-timeout",
        String(nodeTimeoutMs),
        // A replica may always stand for election, however long its link was down.
        "--cluster-replica-validity-factor",
        "0",
        // Replicas stay with the master they were given: the layout stays predictable.
        "--cluster-allow-replica-migration",
        "no",
        // Full syncs start at once (the default waits 5 s for more replicas to join).
        "--repl-diskless-sync-delay",
        "0",
        ...(options.extraArgs ?? []),
      ];
      for (let i = 0; i < count; i++) {
        const dir = await Deno.makeTempDir({ prefix: "im-redis-cluster-" });
        dirs.push(dir);
        const server = await startNode(dir, args, nodes.map((n) => n.port));
        nodes.push({ port: server.port, role: "master", server });
      }
      await createCluster(nodes.map((n) => n.port), replicas);
      await cluster.#waitHealthy(masters, masters * replicas, "the new Redis Cluster is healthy");
      // Record who is who, masters first in slot order.
      const view = parseNodes(await clusterNodes(nodes[0].port));
      for (const node of nodes) {
        const seen = view.find((v) => v.port === node.port);
        node.role = seen?.master ? "master" : "replica";
        node.replicaOf = view.find((v) => v.id === seen?.masterId)?.port;
      }
      const firstSlot = (port: number) => view.find((v) => v.port === port)?.slots[0]?.[0] ?? 0;
      nodes.sort((a, b) =>
        a.role === b.role ? firstSlot(a.port) - firstSlot(b.port) : a.role === "master" ? -1 : 1
      );
      return cluster;
    } catch (error) {
      await cluster.stop();
      throw error;
    }
  }

  /** The hash slot of a key (`CLUSTER KEYSLOT`, so hash tags count as Redis counts them). */
  async slotOf(key: string): Promise<number> {
    const slot = await redisCommand(this.#live()[0].port, ["CLUSTER", "KEYSLOT", key]);
    if (typeof slot !== "number") throw new Error(`CLUSTER KEYSLOT failed: ${describe(slot)}`);
    return slot;
  }

  /** Port of the master serving the key's slot, as a running node sees it. */
  async masterOf(key: string): Promise<number> {
    const slot = await this.slotOf(key);
    const view = parseNodes(await clusterNodes(this.#live()[0].port));
    const owner = view.find((v) => v.master && !v.failed && ownsSlot(v, slot));
    if (!owner) throw new Error(`No master serves slot ${slot} of key "${key}"`);
    return owner.port;
  }

  /**
   * Kills (SIGKILL) the master serving the key's slot and waits until one of
   * its replicas has taken over the slot and every surviving node reports
   * `cluster_state:ok` again.
   */
  async killMasterOf(key: string): Promise<Failover> {
    const slot = await this.slotOf(key);
    const killed = await this.masterOf(key);
    const victim = this.nodes.find((n) => n.port === killed);
    if (!victim) throw new Error(`Port ${killed} is not a node of this cluster`);
    const started = performance.now();
    await victim.server.kill();
    const promoted = await eventually(async () => {
      const live = this.#live();
      const owners = new Set<number>();
      for (const node of live) {
        if (!(await clusterInfo(node.port)).includes("cluster_state:ok")) return undefined;
        const owner = parseNodes(await clusterNodes(node.port))
          .find((v) => v.master && !v.failed && ownsSlot(v, slot));
        if (!owner || owner.port === killed) return undefined;
        owners.add(owner.port);
      }
      return owners.size === 1 ? [...owners][0] : undefined;
    }, `a replica of ${killed} is promoted and the cluster is ok`);
    const elapsedMs = Math.round(performance.now() - started);
    const node = this.nodes.find((n) => n.port === promoted);
    if (node) {
      node.role = "master";
      node.replicaOf = undefined;
    }
    return { killed, promoted, elapsedMs };
  }

  /** Kills every node and removes their directories. */
  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((node) => node.server.kill()));
    await Promise.all(
      this.#dirs.map((dir) => Deno.remove(dir, { recursive: true }).catch(() => {})),
    );
    this.#dirs.length = 0;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  #live(): RedisClusterNode[] {
    const live = this.nodes.filter((n) => n.server.running);
    if (live.length === 0) throw new Error("Redis Cluster has no running node");
    return live;
  }

  /**
   * Waits until every node is ok with all slots assigned, sees `masters` masters and `replicas`
   * replicas, and every replica is in sync.
   */
  async #waitHealthy(masters: number, replicas: number, what: string): Promise<void> {
    await eventually(async () => {
      let synced = 0;
      for (const node of this.nodes) {
        const info = await clusterInfo(node.port);
        if (!info.includes("cluster_state:ok") || !info.includes("cluster_slots_assigned:16384")) {
          return undefined;
        }
        // Every node knows every role (gossip spreads a replica's role after it is set).
        const view = parseNodes(await clusterNodes(node.port));
        const seenMasters = view.filter((v) => v.master && !v.failed && v.slots.length > 0);
        const seenReplicas = view.filter((v) => !v.master && !v.failed && v.masterId);
        if (seenMasters.length !== masters || seenReplicas.length !== replicas) return undefined;
        const replication = await redisCommand(node.port, ["INFO", "replication"]);
        if (typeof replication !== "string") return undefined;
        if (replication.includes("role:slave")) {
          if (!replication.includes("master_link_status:up")) return undefined;
          synced++;
        }
      }
      return synced === replicas || undefined;
    }, what);
  }
}

/**
 * Starts a cluster node in `dir` on a free port (not in `taken`), with its bus on another one
 * (the default, port + 10000, may be above 65535 or taken). Another process may take a port
 * between the probe and the start, so a node that does not come up as itself (its `dir`) is
 * tried again on other ports.
 */
async function startNode(dir: string, args: string[], taken: number[]): Promise<RedisServer> {
  let last: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    let port = freePort();
    let busPort = freePort();
    while (taken.includes(port) || taken.includes(busPort) || port === busPort) {
      [port, busPort] = [freePort(), freePort()];
    }
    let server: RedisServer | undefined;
    try {
      server = await RedisServer.start({
        port,
        dir,
        extraArgs: [
          "--cluster-config-file",
          `${dir}/nodes-${port}.conf`,
          "--cluster-port",
          String(busPort),
          ...args,
        ],
      });
      const reply = await redisCommand(port, ["CONFIG", "GET", "dir"]);
      if (Array.isArray(reply) && reply[1] === (await Deno.realPath(dir))) return server;
      last = new Error(`Port ${port} is answered by another Redis: ${describe(reply)}`);
    } catch (error) {
      last = error;
    }
    await server?.kill().catch(() => {});
  }
  throw new Error("Cannot start a Redis Cluster node", { cause: last });
}

/** Runs `redis-cli --cluster create` over the nodes (masters are the first ones it picks). */
async function createCluster(ports: number[], replicas: number): Promise<void> {
  const cli = REDIS_SERVER!.replace(/redis-server$/, "redis-cli");
  const { code, stdout, stderr } = await new Deno.Command(cli, {
    args: [
      "--cluster",
      "create",
      ...ports.map((port) => `127.0.0.1:${port}`),
      "--cluster-replicas",
      String(replicas),
      "--cluster-yes",
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const output = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
  if (code !== 0 || !output.includes("[OK] All 16384 slots covered")) {
    throw new Error(`redis-cli --cluster create failed: ${output.trim()}`);
  }
}

async function clusterInfo(port: number): Promise<string> {
  const info = await redisCommand(port, ["CLUSTER", "INFO"]);
  if (typeof info !== "string") throw new Error(`CLUSTER INFO failed: ${describe(info)}`);
  return info;
}

async function clusterNodes(port: number): Promise<string> {
  const nodes = await redisCommand(port, ["CLUSTER", "NODES"]);
  if (typeof nodes !== "string") throw new Error(`CLUSTER NODES failed: ${describe(nodes)}`);
  return nodes;
}

/** A line of `CLUSTER NODES`. */
interface NodeView {
  id: string;
  port: number;
  master: boolean;
  /** Flagged `fail` (or `fail?`, suspected) by the node asked. */
  failed: boolean;
  /** Id of its master, for a replica. */
  masterId?: string;
  /** Slot ranges it serves, inclusive. */
  slots: [number, number][];
}

function parseNodes(text: string): NodeView[] {
  const views: NodeView[] = [];
  for (const line of text.split("\n")) {
    const fields = line.trim().split(" ");
    if (fields.length < 8) continue;
    const [id, address, flags, masterId] = fields;
    const flagSet = new Set(flags.split(","));
    const slots: [number, number][] = [];
    for (const range of fields.slice(8)) {
      if (range.startsWith("[")) continue; // A slot being imported or migrated.
      const [from, to] = range.split("-").map(Number);
      slots.push([from, to ?? from]);
    }
    views.push({
      id,
      port: Number(address.split("@")[0].split(":").at(-1)),
      master: flagSet.has("master"),
      failed: flagSet.has("fail") || flagSet.has("fail?"),
      masterId: masterId === "-" ? undefined : masterId,
      slots,
    });
  }
  return views;
}

function ownsSlot(view: NodeView, slot: number): boolean {
  return view.slots.some(([from, to]) => from <= slot && slot <= to);
}

function describe(value: RespValue): string {
  return value instanceof RespError ? value.message : JSON.stringify(value);
}

/**
 * Sends one command to the Redis on 127.0.0.1:`port` over a fresh connection
 * and returns its reply (an error reply as a {@link RespError}). Gives up after
 * `timeoutMs` (a stopped process answers nothing). Being a fresh connection,
 * `WAIT` here waits for nothing: send it on the connection that wrote.
 */
export async function redisCommand(
  port: number,
  args: string[],
  timeoutMs = 2_000,
): Promise<RespValue> {
  const encoder = new TextEncoder();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const timer = setTimeout(() => conn.close(), timeoutMs);
  let closed = false;
  try {
    let request = `*${args.length}\r\n`;
    for (const arg of args) request += `$${encoder.encode(arg).length}\r\n${arg}\r\n`;
    const bytes = encoder.encode(request);
    for (let sent = 0; sent < bytes.length;) sent += await conn.write(bytes.subarray(sent));
    let buffer = new Uint8Array(0);
    const chunk = new Uint8Array(16 * 1024);
    while (true) {
      const parsed = parseReply(buffer, 0);
      if (parsed) return parsed[0];
      const n = await conn.read(chunk);
      if (n === null) {
        closed = true;
        throw new Error(`Redis on port ${port} closed the connection before replying`);
      }
      const next = new Uint8Array(buffer.length + n);
      next.set(buffer);
      next.set(chunk.subarray(0, n), buffer.length);
      buffer = next;
    }
  } catch (error) {
    if (error instanceof Deno.errors.BadResource) {
      throw new Error(`Redis on port ${port} did not reply in ${timeoutMs} ms`);
    }
    throw error;
  } finally {
    clearTimeout(timer);
    if (!closed) {
      try {
        conn.close();
      } catch {
        // Already closed by the timer.
      }
    }
  }
}

/** Parses one RESP2 reply at `offset`: the value and where it ends, or undefined if incomplete. */
function parseReply(buffer: Uint8Array, offset: number): [RespValue, number] | undefined {
  const lineEnd = buffer.indexOf(10, offset); // "\n"
  if (lineEnd < 0) return undefined;
  const line = new TextDecoder().decode(buffer.subarray(offset + 1, lineEnd - 1));
  const next = lineEnd + 1;
  switch (buffer[offset]) {
    case 43: // "+"
      return [line, next];
    case 45: // "-"
      return [new RespError(line), next];
    case 58: // ":"
      return [Number(line), next];
    case 36: { // "$"
      const length = Number(line);
      if (length < 0) return [null, next];
      if (buffer.length < next + length + 2) return undefined;
      return [new TextDecoder().decode(buffer.subarray(next, next + length)), next + length + 2];
    }
    case 42: { // "*"
      const length = Number(line);
      if (length < 0) return [null, next];
      const items: RespValue[] = [];
      let at = next;
      for (let i = 0; i < length; i++) {
        const item = parseReply(buffer, at);
        if (!item) return undefined;
        items.push(item[0]);
        at = item[1];
      }
      return [items, at];
    }
    default:
      throw new Error(`Unexpected RESP reply: ${line}`);
  }
}
