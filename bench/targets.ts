/**
 * The servers under test, started as child processes: our server (memory or SQLite storage),
 * the bare Deno relay, and the Socket.IO relay on Node. Each prints a line containing
 * `listening on http://HOST:PORT` when ready.
 *
 * @module
 */
import type { Dialect } from "./client.ts";

/**
 * Names of the servers under test. `im-base` is our server (memory storage) from another tree,
 * given with `--base DIR`: a before/after comparison in the same run.
 */
export type TargetName =
  | "im-memory"
  | "im-sqlite"
  | "im-base"
  | "im-plugin"
  | "im-plugin-inproc"
  | "bare"
  | "socketio";

/** All targets, in table order. */
export const TARGETS: readonly TargetName[] = [
  "im-memory",
  "im-sqlite",
  "im-base",
  "im-plugin",
  "im-plugin-inproc",
  "bare",
  "socketio",
];

/** The type the benchmark's relay plugin handles (the `plugin` row). */
export const RELAY_PLUGIN_TYPE = 5900;

/** A plugin that relays its type to `to`, live only: the cost of one plugin call per frame. */
const RELAY_PLUGIN = `export default {
  name: "bench-relay",
  types: [${RELAY_PLUGIN_TYPE}],
  ephemeral: [${RELAY_PLUGIN_TYPE}],
  async handle(message, ctx) {
    await ctx.send({ id: message.id, type: ${RELAY_PLUGIN_TYPE}, to: message.to, body: message.body });
  },
};
`;

/** A started server. */
export interface Running {
  /** `http://HOST:PORT`. */
  origin: string;
  /** Process id of the server itself (not of a wrapper). */
  pid: number;
  /** Stops the server and removes its temporary files. */
  stop(): Promise<void>;
  /** A warning when the server did not run as configured (e.g. no SQLite file was written). */
  verify(): string | undefined;
}

/** Where things are. */
export interface Paths {
  /** Repository root (holds `main.ts`). */
  root: string;
  /** The `deno` executable running this benchmark. */
  deno: string;
  /** Root of another tree whose server runs as `im-base` (`--base DIR`). */
  base?: string;
}

/** The dialect the load generator speaks with a target. */
export function dialectOf(target: TargetName): Dialect {
  return target === "bare" ? "bare" : target === "socketio" ? "sio" : "im";
}

/** Whether a target can run here; a reason when it cannot. */
export function unavailable(target: TargetName, paths: Paths): string | undefined {
  if (target === "im-base" && !paths.base) return "no --base tree given";
  if (target.startsWith("im-")) {
    const root = target === "im-base" ? paths.base! : paths.root;
    for (const file of ["main.ts", "src/server.ts"]) {
      try {
        Deno.statSync(`${root}/${file}`);
      } catch {
        return `our server is not in this tree yet (${file} missing)`;
      }
    }
  }
  return undefined;
}

/** The YAML config our server is started with, for `users` users u1..uN (password `pw`). */
export function imConfig(
  users: number,
  driver: "memory" | "sqlite",
  dir: string,
  pluginIsolation?: "process" | "none",
): string {
  const lines = [
    "websocket: { url: 127.0.0.1, port: 0 }",
    "auth:",
    "  sessionTtlSeconds: 600",
    "  users:",
  ];
  for (let i = 1; i <= users; i++) {
    lines.push(`    - { userId: u${i}, username: user${i}, password: pw }`);
  }
  lines.push(
    driver === "sqlite"
      ? `storage: { driver: sqlite, dir: ${JSON.stringify(`${dir}/data`)} }`
      : "storage: { driver: memory }",
    "limits:",
    "  rateLimit: { perSecond: 100000, burst: 100000 }",
    "  maxConnectionsPerIp: 100000",
    "  maxConnectionsPerUser: 100000",
    pluginIsolation
      ? `plugins: { dir: ${JSON.stringify(`${dir}/plugins`)}, watch: false, permissions: ` +
        `{ bench-relay: { isolation: ${pluginIsolation} } } }`
      : `plugins: { dir: ${JSON.stringify(`${dir}/plugins`)} }`,
    "log: { level: warn }",
  );
  return lines.join("\n") + "\n";
}

/**
 * The `--v8-flags=…` argument of `deno task start` in `deno.json`, so the benchmark runs our server
 * the way users run it (and gives the bare relay the same runtime flags); none when it has none.
 */
export function startV8Flags(root: string): string[] {
  const config = JSON.parse(Deno.readTextFileSync(`${root}/deno.json`));
  const flag = String(config.tasks?.start ?? "").match(/--v8-flags=\S+/);
  return flag ? [flag[0]] : [];
}

/** Ensures `bench/peers/node_modules` exists (runs `npm ci` there once). */
export async function ensurePeers(paths: Paths): Promise<void> {
  const peers = `${paths.root}/bench/peers`;
  try {
    Deno.statSync(`${peers}/node_modules/socket.io`);
    return;
  } catch { /* install below */ }
  console.error("installing Socket.IO into bench/peers (npm ci)...");
  const { success } = await new Deno.Command("npm", {
    args: ["ci", "--no-audit", "--no-fund"],
    cwd: peers,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!success) throw new Error(`Cannot install the Socket.IO peer: npm ci failed in ${peers}`);
}

/**
 * Starts a target and resolves once it printed its `listening on` line.
 *
 * @example
 * ```ts
 * const server = await start("bare", 200, { root: ".", deno: Deno.execPath() });
 * await server.stop();
 * ```
 */
export async function start(target: TargetName, users: number, paths: Paths): Promise<Running> {
  const dir = await Deno.makeTempDir({ prefix: "im-bench-" });
  const v8Flags = startV8Flags(paths.root);
  let command: Deno.Command;
  if (target === "bare") {
    command = new Deno.Command(paths.deno, {
      args: ["run", ...v8Flags, "-A", "bench/peers/bare_relay.ts"],
      cwd: paths.root,
      stdout: "piped",
      stderr: "piped",
    });
  } else if (target === "socketio") {
    command = new Deno.Command("node", {
      args: ["bench/peers/socketio_relay.mjs"],
      cwd: paths.root,
      stdout: "piped",
      stderr: "piped",
    });
  } else {
    await Deno.mkdir(`${dir}/plugins`);
    const isolation = target === "im-plugin"
      ? "process"
      : target === "im-plugin-inproc"
      ? "none"
      : undefined;
    if (isolation) await Deno.writeTextFile(`${dir}/plugins/relay.js`, RELAY_PLUGIN);
    const config = `${dir}/config.yaml`;
    await Deno.writeTextFile(
      config,
      imConfig(users, target === "im-sqlite" ? "sqlite" : "memory", dir, isolation),
    );
    const root = target === "im-base" ? paths.base! : paths.root;
    command = new Deno.Command(paths.deno, {
      args: ["run", ...startV8Flags(root), "-A", "main.ts", "--config", config],
      cwd: root,
      stdout: "piped",
      stderr: "piped",
    });
  }
  const child = command.spawn();
  const tail: string[] = [];
  const keep = (line: string) => {
    tail.push(line);
    if (tail.length > 20) tail.shift();
  };
  drain(child.stderr, keep);
  const { promise: listening, resolve } = Promise.withResolvers<string>();
  drain(child.stdout, (line) => {
    keep(line);
    const match = line.match(/listening on (http:\/\/[^\s/]+)/);
    if (match) resolve(match[1]);
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const failed = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("no `listening on` line within 30 s")), 30_000);
    child.status.then((status) =>
      reject(new Error(`exited with code ${status.code} before listening`))
    );
  });
  failed.catch(() => {}); // once listening, a later exit is expected
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
    const killer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
    }, 3000);
    await child.status;
    clearTimeout(killer);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    const origin = await Promise.race([listening, failed]);
    const verify = () => {
      if (target !== "im-sqlite") return undefined;
      try {
        if ([...Deno.readDirSync(`${dir}/data`)].length > 0) return undefined;
      } catch { /* no directory */ }
      return "no SQLite file was written: the server ran without durable storage";
    };
    return { origin, pid: child.pid, stop, verify };
  } catch (error) {
    await stop();
    throw new Error(
      `Cannot start ${target}: ${(error as Error).message}\n${tail.join("\n")}`,
    );
  } finally {
    clearTimeout(timer);
  }
}

async function drain(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void) {
  let rest = "";
  try {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      const lines = (rest + chunk).split("\n");
      rest = lines.pop() ?? "";
      for (const line of lines) onLine(line);
    }
  } catch { /* the process ended */ }
  if (rest) onLine(rest);
}
