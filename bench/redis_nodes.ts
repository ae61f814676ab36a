/**
 * The Redis side of the cluster benchmarks: a local 3-master Redis Cluster
 * (tests/_redis_cluster.ts) with every node pinned to given CPUs, and probes
 * that read each node's `INFO` and streams and sum them.
 *
 * @module
 */
import { createClient } from "redis";
import { RedisCluster } from "../tests/_redis_cluster.ts";

type Client = ReturnType<typeof createClient>;

/** One `redis-server` a benchmark measures. */
export interface BenchNode {
  port: number;
  /** Its process id (`INFO server`), for `/proc` and `taskset`. */
  pid: number;
  role: "master" | "replica";
}

/** A Redis Cluster started for a benchmark. */
export interface BenchCluster {
  /** Seed URL (a master). */
  url: string;
  /** Masters first, then replicas. */
  nodes: BenchNode[];
  stop(): Promise<void>;
}

/** Whether `taskset` runs here and there are two cores or more to split. */
export function canPin(): boolean {
  if (navigator.hardwareConcurrency < 2) return false;
  try {
    return new Deno.Command("taskset", { args: ["-V"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** Moves every thread of a running process to `cpus` (`taskset -a -p -c`). */
export async function pinProcess(pid: number, cpus: string): Promise<void> {
  const { success, stderr } = await new Deno.Command("taskset", {
    args: ["-a", "-p", "-c", cpus, String(pid)],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!success) {
    throw new Error(`Cannot pin process ${pid}: ${new TextDecoder().decode(stderr).trim()}`);
  }
}

/**
 * Starts a local Redis Cluster of `masters` masters with `replicas` replicas
 * each, `extraArgs` on every node (e.g. AOF settings), and pins every node to
 * `cpus` when given. The node timeout is Redis's default (15 s): a node slowed
 * by the load is not taken for dead in the middle of a run.
 */
export async function startBenchCluster(options: {
  masters?: number;
  replicas: number;
  extraArgs: string[];
  cpus?: string;
}): Promise<BenchCluster> {
  const cluster = await RedisCluster.start({
    masters: options.masters ?? 3,
    replicasPerMaster: options.replicas,
    nodeTimeoutMs: 15_000,
    extraArgs: options.extraArgs,
  });
  try {
    const nodes: BenchNode[] = [];
    for (const node of cluster.nodes) {
      const probe = await connectNode(node.port);
      const info = await probe.info("server");
      await probe.close();
      const pid = Number(info.match(/process_id:(\d+)/)?.[1]);
      if (options.cpus !== undefined) await pinProcess(pid, options.cpus);
      nodes.push({ port: node.port, pid, role: node.role });
    }
    return { url: cluster.url, nodes, stop: () => cluster.stop() };
  } catch (error) {
    await cluster.stop();
    throw error;
  }
}

/** A plain client of one node (its own keys, its own `INFO`). */
export async function connectNode(port: number): Promise<Client> {
  const client = createClient({ url: `redis://127.0.0.1:${port}` });
  client.on("error", () => {});
  await client.connect();
  return client as Client;
}

/** Plain clients of a set of nodes, to read and sum what each reports. */
export class NodeProbes {
  private constructor(readonly clients: Client[], readonly masters: Client[]) {}

  /** Connects to every node; `masters` are the nodes that hold keys. */
  static async open(nodes: { port: number; role: "master" | "replica" }[]): Promise<NodeProbes> {
    const clients: Client[] = [];
    const masters: Client[] = [];
    for (const node of nodes) {
      const client = await connectNode(node.port);
      clients.push(client);
      if (node.role === "master") masters.push(client);
    }
    return new NodeProbes(clients, masters);
  }

  /** CPU seconds (user and system, main thread and helpers) of every node, summed. */
  async cpu(): Promise<{ user: number; sys: number }> {
    let user = 0;
    let sys = 0;
    for (const client of this.clients) {
      const info = await client.info("cpu");
      const field = (name: string) => Number(info.match(new RegExp(`${name}:([\\d.]+)`))?.[1]);
      user += field("used_cpu_user");
      sys += field("used_cpu_sys");
    }
    return { user, sys };
  }

  /** `used_memory` of the masters, summed. */
  async memory(): Promise<number> {
    let total = 0;
    for (const client of this.masters) {
      total += Number((await client.info("memory")).match(/used_memory:(\d+)/)?.[1]);
    }
    return total;
  }

  /**
   * Entries ever appended (`entries-added`) to the streams whose key matches
   * `match` (or of type stream), on every master, each times `readers(key)`.
   */
  async entriesAdded(
    options: { match?: string; readers?: (key: string) => number },
  ): Promise<number> {
    let total = 0;
    for (const client of this.masters) {
      const scan = options.match
        ? client.scanIterator({ MATCH: options.match, COUNT: 1000 })
        : client.scanIterator({ TYPE: "stream", COUNT: 1000 });
      for await (const keys of scan) {
        for (const key of keys) {
          const reply = await client.sendCommand(["XINFO", "STREAM", key]) as unknown[];
          const at = reply.indexOf("entries-added");
          if (at >= 0) total += Number(reply[at + 1]) * (options.readers?.(key) ?? 1);
        }
      }
    }
    return total;
  }

  /** Sends a command to every node (e.g. `CONFIG RESETSTAT`). */
  async each(args: string[]): Promise<void> {
    for (const client of this.clients) await client.sendCommand(args);
  }

  /** `INFO commandstats` of every node, calls and microseconds summed per command. */
  async commandstats(): Promise<Map<string, { calls: number; usec: number }>> {
    const stats = new Map<string, { calls: number; usec: number }>();
    for (const client of this.clients) {
      for (const line of (await client.info("commandstats")).split("\r\n")) {
        const match = line.match(/^cmdstat_(\S+):calls=(\d+),usec=(\d+)/);
        if (!match) continue;
        const entry = stats.get(match[1]) ?? { calls: 0, usec: 0 };
        entry.calls += Number(match[2]);
        entry.usec += Number(match[3]);
        stats.set(match[1], entry);
      }
    }
    return stats;
  }

  async close(): Promise<void> {
    await Promise.all(this.clients.map((client) => client.close()));
  }
}
