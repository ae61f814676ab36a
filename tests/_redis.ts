/**
 * Test helpers for the Redis backends: a throwaway `redis-server` on a free
 * loopback port, killed and restarted on demand.
 *
 * @module
 */

/** Path of `redis-server`, or undefined when it is not installed. */
export const REDIS_SERVER: string | undefined = findRedisServer();

/** Why Redis tests are skipped, or undefined when they run. */
export const SKIP_REASON = REDIS_SERVER === undefined
  ? "redis-server is not installed (apt-get install redis-server): Redis tests skipped"
  : undefined;

if (SKIP_REASON) console.log(`SKIPPED: ${SKIP_REASON}`);

function findRedisServer(): string | undefined {
  const dirs = (Deno.env.get("PATH") ?? "").split(":").concat(["/usr/bin", "/usr/local/bin"]);
  for (const dir of dirs) {
    if (!dir) continue;
    try {
      const path = `${dir}/redis-server`;
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // Not in this directory.
    }
  }
  return undefined;
}

/** A free TCP port on 127.0.0.1. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Options of {@link startRedis}. */
export interface RedisServerOptions {
  /**
   * Keep data in an append-only file in this directory, fsynced before each
   * reply (`appendfsync always`): what was answered survives a kill. (With
   * `everysec`, Redis may send replies before writing the AOF while an fsync
   * is in progress, so a kill can lose up to two seconds of answered writes.)
   */
  aofDir?: string;
  /** Port to use. @default a free one */
  port?: number;
  /** Start as a replica of the Redis on this port (127.0.0.1). */
  replicaOf?: number;
  /**
   * Working directory without an AOF: kept across {@link RedisServer.kill} and
   * {@link RedisServer.restart} and left for the caller to remove (a cluster node keeps its
   * `nodes.conf` there). @default a temporary directory removed on kill
   */
  dir?: string;
  /** More `redis-server` arguments, appended after the others (e.g. cluster settings). */
  extraArgs?: string[];
}

/** A running `redis-server` owned by a test. */
export class RedisServer implements AsyncDisposable {
  readonly port: number;
  readonly url: string;
  #options: RedisServerOptions;
  #child?: Deno.ChildProcess;
  /** The working directory of a server without an AOF directory (replication's RDB files). */
  #scratch?: string;

  private constructor(port: number, options: RedisServerOptions) {
    this.port = port;
    this.url = `redis://127.0.0.1:${port}`;
    this.#options = options;
  }

  /** Starts a server and waits until it answers PING. */
  static async start(options: RedisServerOptions = {}): Promise<RedisServer> {
    const server = new RedisServer(options.port ?? freePort(), options);
    await server.restart();
    return server;
  }

  /** Whether the process is running. */
  get running(): boolean {
    return this.#child !== undefined;
  }

  /** Starts the process again on the same port (and AOF directory) after {@link kill}. */
  async restart(): Promise<void> {
    if (this.#child) throw new Error("Redis is already running");
    const args = ["--port", String(this.port), "--bind", "127.0.0.1", "--save", ""];
    if (this.#options.aofDir) {
      args.push("--appendonly", "yes", "--appendfsync", "always", "--dir", this.#options.aofDir);
    } else if (this.#options.dir) {
      args.push("--appendonly", "no", "--dir", this.#options.dir);
    } else {
      // Replication writes an RDB file even without persistence: keep it out of the repository.
      this.#scratch ??= Deno.makeTempDirSync({ prefix: "im-redis-" });
      args.push("--appendonly", "no", "--dir", this.#scratch);
    }
    if (this.#options.replicaOf !== undefined) {
      args.push("--replicaof", "127.0.0.1", String(this.#options.replicaOf));
    }
    if (this.#options.extraArgs) args.push(...this.#options.extraArgs);
    this.#child = new Deno.Command(REDIS_SERVER!, {
      args,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    await this.#waitForPing();
  }

  async #waitForPing(): Promise<void> {
    for (let attempt = 0; attempt < 200; attempt++) {
      try {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: this.port });
        try {
          await conn.write(new TextEncoder().encode("PING\r\n"));
          const buffer = new Uint8Array(64);
          const n = await conn.read(buffer);
          const reply = new TextDecoder().decode(buffer.subarray(0, n ?? 0));
          if (reply.startsWith("+PONG")) return;
        } finally {
          conn.close();
        }
      } catch {
        // Not listening yet.
      }
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    throw new Error(`redis-server did not answer on port ${this.port}`);
  }

  /** Stops the process (SIGSTOP) without killing it: it answers nothing until {@link resume}. */
  pause(): void {
    this.#child?.kill("SIGSTOP");
  }

  /** Lets a paused process run again (SIGCONT). */
  resume(): void {
    this.#child?.kill("SIGCONT");
  }

  /** Kills the process at once (SIGKILL) and waits for it to exit. */
  async kill(): Promise<void> {
    const child = this.#child;
    if (!child) return;
    this.#child = undefined;
    child.kill("SIGKILL");
    await child.status;
    if (this.#scratch) {
      await Deno.remove(this.#scratch, { recursive: true }).catch(() => {});
      this.#scratch = undefined;
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill();
  }
}

/**
 * Calls `attempt` until it resolves a value other than undefined (a rejection
 * counts as undefined), pausing between tries. Not a timing assertion: the
 * generous limit only keeps a broken test from hanging.
 */
export async function eventually<T>(
  attempt: () => Promise<T | undefined>,
  what: string,
  limitMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + limitMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await attempt();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`Gave up waiting: ${what}`, { cause: last });
}
