/**
 * A plugin in its own host process (`host.ts`), started with only the
 * permissions its config grants and a heap limit. A loop, an out-of-memory or
 * a crash costs that plugin only: its frames answer 400 within
 * `plugins.timeoutMs`, the process is killed if it stops answering, and it is
 * started again with backoff (its `init` runs again).
 *
 * @module
 */
import { StatusCode, statusName } from "../protocol/codes.ts";
import type { Message } from "../protocol/frame.ts";
import type { Connection } from "../core/hub.ts";
import type { Status } from "../core/client_session.ts";
import { Channel, messages, OversizeMessageError } from "./ipc.ts";
import { LogBudget } from "../util/log_budget.ts";
import { settlesWithin, withTimeout } from "../util/deadline.ts";
import { PluginError } from "./loader.ts";
import type { HostMessage, ServerMessage } from "./host_messages.ts";
import type { ClientInfo } from "./types.ts";
import type { InProcessOptions, PluginUnit } from "./unit.ts";
import { permissionFlags, type PluginPermissions } from "./permissions.ts";

/** How to start a plugin's host process. */
export interface ProcessPluginOptions extends InProcessOptions {
  /** Its URL. */
  url: string;
  /** The deno executable. */
  denoPath: string;
  /** The files it may always read: its own, and the directory's `_` helpers. */
  ownFiles: string[];
  /** The grants of a plugin named so (`plugins.permissions.<name>`). */
  grantsFor(name: string): PluginPermissions | undefined;
  /** Heap limit of the host process, in MiB, unless its grants say otherwise. */
  maxHeapMb: number;
  /**
   * `ctx.send` calls being accepted at once (`plugins.maxSendsInFlight`); one
   * more is refused (its promise rejects in the plugin), so a plugin that sends
   * in a loop without awaiting cannot make the server hold an unbounded queue.
   */
  maxSendsInFlight: number;
  /** `plugins.logLinesPerMinute`: the plugin's log lines and output written per minute. */
  logLinesPerMinute: number;
  /** Milliseconds before the first restart; doubles up to {@link maxBackoffMs}. @default 200 */
  backoffMs?: number;
  /** @default 30000 */
  maxBackoffMs?: number;
}

const HOST = new URL("./host.ts", import.meta.url);
const DENO_JSON = new URL("../../deno.json", import.meta.url);
let importMap: string | undefined;
/** Milliseconds a host may take to import its plugin, and then to run `init`. */
const START_MS = 15_000;
/** Terminal colour codes. */
const ANSI = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, "g");

/**
 * The hosts' import map: the project's imports, with `@im/server` mapped to the
 * plugin API alone (measured: a host then takes ~52 MiB RSS instead of ~64).
 */
function hostImportMap(): string {
  if (importMap) return importMap;
  let imports: Record<string, string> = { zod: "npm:zod@4" };
  try {
    imports = JSON.parse(Deno.readTextFileSync(DENO_JSON)).imports ?? imports;
  } catch {
    // No readable deno.json: the plugin API and zod.
  }
  const resolved: Record<string, string> = {};
  for (const [key, value] of Object.entries(imports)) {
    resolved[key] = value.startsWith(".") ? new URL(value, DENO_JSON).href : value;
  }
  resolved["@im/server"] = new URL("./api.ts", import.meta.url).href;
  importMap = `data:application/json,${encodeURIComponent(JSON.stringify({ imports: resolved }))}`;
  return importMap;
}

interface Call {
  resolve(status: Status): void;
  sender: Connection;
  message: Message;
  timer: ReturnType<typeof setTimeout>;
}

/** A started host process. */
class Host {
  readonly process: Deno.ChildProcess;
  readonly channel: Channel;
  readonly exited: Promise<Deno.CommandStatus>;
  stderr = "";
  #waiters: ((message: HostMessage) => boolean)[] = [];
  #onMessage: (message: HostMessage) => void;
  readonly drained: Promise<void>;

  constructor(
    options: ProcessPluginOptions,
    grants: PluginPermissions | undefined,
    onMessage: (message: HostMessage) => void,
    lines: LogBudget,
  ) {
    this.#onMessage = onMessage;
    const child = new Deno.Command(options.denoPath, {
      args: [
        "run",
        "--quiet",
        "--no-prompt",
        `--config=${DENO_JSON.pathname}`,
        `--import-map=${hostImportMap()}`,
        `--v8-flags=--max-old-space-size=${grants?.maxHeapMb ?? options.maxHeapMb}`,
        ...permissionFlags(options.ownFiles, grants),
        HOST.pathname,
        options.url,
        options.file,
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    this.process = child;
    this.channel = new Channel(child.stdin);
    this.exited = child.status;
    const read = (async () => {
      try {
        for await (const message of messages(child.stdout)) {
          const host = message as HostMessage;
          const waiter = this.#waiters.findIndex((accepts) => accepts(host));
          if (waiter >= 0) this.#waiters.splice(waiter, 1);
          else onMessage(host);
        }
      } catch (error) {
        // The process died mid-message, or broke the channel's rules: it is stopped and restarted.
        if (error instanceof OversizeMessageError) {
          options.logger.error("Plugin host broke the channel: stopped", { error: error.message });
        }
        this.kill();
      }
    })();
    const errors = (async () => {
      try {
        for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) {
          this.stderr = (this.stderr + text).slice(-4096);
          for (const line of text.split("\n")) {
            if (line.trim()) lines.write("warn", "plugin", "Output", { line });
          }
        }
      } catch {
        // The process was killed mid-read.
      }
    })();
    this.drained = Promise.all([read, errors]).then(() => {});
  }

  /** The next message that `accepts` takes, or undefined if the process exits first. */
  next<T extends HostMessage>(
    accepts: (message: HostMessage) => message is T,
  ): Promise<T | undefined> {
    const got = Promise.withResolvers<T | undefined>();
    this.#waiters.push((message) => {
      if (!accepts(message)) return false;
      got.resolve(message);
      return true;
    });
    this.exited.then(() => got.resolve(undefined));
    return got.promise;
  }

  post(message: ServerMessage) {
    this.channel.post(message);
  }

  kill() {
    try {
      this.process.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }

  /** Kills it and waits until its pipes are closed. */
  async stop() {
    this.kill();
    this.channel.close();
    await this.exited;
    await this.drained;
  }

  /** Why it exited, for the 400 and the log. */
  reason(status: Deno.CommandStatus): string {
    // The host runs with NO_COLOR, but a plugin may print colors itself.
    const stderr = this.stderr.replace(ANSI, "");
    if (/heap limit|out of memory/i.test(stderr)) return "out of memory";
    const uncaught = stderr.match(/error: (Uncaught[^\n]*)/);
    if (uncaught) return uncaught[1].slice(0, 200);
    return status.signal ? `killed by ${status.signal}` : `exit code ${status.code}`;
  }
}

/** Starts a plugin's host process and reads what the plugin declares. */
export async function loadProcessPlugin(options: ProcessPluginOptions): Promise<ProcessPlugin> {
  const plugin = new ProcessPlugin(options);
  await plugin.load();
  return plugin;
}

/** A plugin running in a host process; restarts it when it dies. */
export class ProcessPlugin implements PluginUnit {
  readonly file: string;
  name = "";
  types: readonly number[] = [];
  ephemeral: ReadonlySet<number> = new Set();
  #hooks = new Set<string>();
  #options: ProcessPluginOptions;
  #host?: Host;
  #state: "loading" | "ready" | "restarting" | "closed" = "loading";
  #config: unknown;
  #calls = new Map<number, Call>();
  /** Senders of the last answered calls. */
  #answered = new Map<number, Connection>();
  #ids = 0;
  /** The plugin's log lines and output, within `plugins.logLinesPerMinute`. */
  #lines: LogBudget;
  /** `ctx.send` calls of this plugin still being accepted. */
  #sending = 0;
  #failures = 0;
  #restartTimer?: ReturnType<typeof setTimeout>;
  #probe?: ReturnType<typeof setTimeout>;
  #startedAt = 0;
  #grants?: PluginPermissions;
  #idle?: PromiseWithResolvers<void>;

  constructor(options: ProcessPluginOptions) {
    this.file = options.file;
    this.#options = options;
    this.#lines = new LogBudget(options.logger, options.logLinesPerMinute);
  }

  /** Whether the host process is up and initialized. */
  get ready(): boolean {
    return this.#state === "ready";
  }

  /** Starts the host; resolves once the plugin file is imported and valid. */
  async load(): Promise<void> {
    await this.#load();
    // Grants are known by the plugin's name, read from the file: start it again with them.
    this.#grants = this.#options.grantsFor(this.name);
    if (this.#grants && this.#grants.isolation !== "none") {
      await this.#host?.stop();
      await this.#load();
    }
  }

  /** The grants it runs with (`isolation: none` means the registry imports it instead). */
  get grants(): PluginPermissions | undefined {
    return this.#grants;
  }

  async #load(): Promise<void> {
    let host: Host;
    try {
      host = this.#spawn();
    } catch (error) {
      throw new PluginError(
        `Cannot start plugin "${this.file}": ${
          error instanceof Error ? error.message : error
        } (plugins run in their own deno process: the server needs --allow-run)`,
      );
    }
    const first = await this.#within(
      host,
      host.next((m): m is HostMessage & { t: "loaded" | "failed" } =>
        m.t === "loaded" || m.t === "failed"
      ),
      "load",
    );
    if (!first || first.t === "failed") {
      const reason = first?.t === "failed" ? undefined : host.reason(await host.exited);
      await host.stop();
      this.#host = undefined;
      throw new PluginError(
        first?.t === "failed" ? first.error : `Cannot load plugin "${this.file}": ${reason}`,
      );
    }
    this.name = first.name;
    this.types = first.types;
    this.ephemeral = new Set(first.ephemeral);
    this.#hooks = new Set(first.hooks);
  }

  /** Runs `init` with the plugin's config section. */
  async init(config: unknown): Promise<void> {
    this.#config = config;
    const host = this.#host;
    if (!host) throw new PluginError(`Plugin "${this.file}" is not loaded`);
    await this.#init(host);
  }

  async #init(host: Host): Promise<void> {
    host.post({ t: "init", config: this.#config });
    const answer = await this.#within(
      host,
      host.next((m): m is HostMessage & { t: "ready" | "initFailed" } =>
        m.t === "ready" || m.t === "initFailed"
      ),
      "init",
    );
    if (answer?.t === "ready") {
      this.#state = "ready";
      this.#startedAt = Date.now();
      return;
    }
    if (answer?.t === "initFailed" && answer.path) {
      const path = ["plugins", "config", this.name, ...answer.path].join(".");
      throw new PluginError(`Invalid config for plugin "${this.file}": ${path}: ${answer.error}`);
    }
    const reason = answer ? answer.error : host.reason(await host.exited);
    throw new PluginError(`Plugin "${this.file}" failed in init: ${reason}`);
  }

  /** Loading and `init` may take {@link START_MS} (or `timeoutMs` if longer); then the host is killed. */
  async #within<T>(host: Host, work: Promise<T>, what: string): Promise<T> {
    const ms = Math.max(START_MS, this.#options.timeoutMs);
    try {
      return await withTimeout(work, ms, `${what} did not finish within ${ms} ms`);
    } catch (error) {
      host.kill();
      throw new PluginError(`Plugin "${this.file}" failed in ${what}: ${(error as Error).message}`);
    }
  }

  #spawn(): Host {
    const host = new Host(
      this.#options,
      this.#grants,
      (message) => this.#message(host, message),
      this.#lines,
    );
    this.#host = host;
    host.exited.then((status) => this.#exited(host, status));
    return host;
  }

  handle(message: Message, sender: Connection): Promise<Status> {
    const host = this.#host;
    if (this.#state !== "ready" || !host) {
      return Promise.resolve({
        code: StatusCode.FAILED,
        msg: `Plugin "${this.name}" is restarting`,
      });
    }
    const id = ++this.#ids;
    const { promise, resolve } = Promise.withResolvers<Status>();
    const timer = setTimeout(() => this.#timedOut(host, id), this.#options.timeoutMs);
    this.#calls.set(id, { resolve, sender, message, timer });
    host.post({
      t: "call",
      id,
      message,
      sender: { userId: sender.userId, clientName: sender.clientName },
    });
    return promise;
  }

  #settle(id: number, status: Status) {
    const call = this.#calls.get(id);
    if (!call) return;
    this.#calls.delete(id);
    // A handler may still send after its answer (work it did not await), as its sender.
    this.#answered.set(id, call.sender);
    if (this.#answered.size > 1024) this.#answered.delete(this.#answered.keys().next().value!);
    clearTimeout(call.timer);
    call.resolve(status);
    if (this.#calls.size === 0) this.#idle?.resolve();
  }

  #timedOut(host: Host, id: number) {
    const call = this.#calls.get(id);
    if (!call) return;
    const { logger, observer, timeoutMs } = this.#options;
    observer?.timeout?.(this.name);
    logger.warn("Handler timed out", { id: call.message.id, type: call.message.type, timeoutMs });
    this.#settle(id, { code: StatusCode.FAILED, msg: `Plugin "${this.name}" timed out` });
    host.post({ t: "abort", id });
    // A host that does not answer a ping either is stuck (a loop): kill it; it restarts.
    if (this.#probe !== undefined) return;
    host.post({ t: "ping" });
    this.#probe = setTimeout(() => {
      this.#probe = undefined;
      if (this.#host !== host) return;
      logger.error("Plugin host does not answer: killing it", { timeoutMs });
      host.kill();
    }, Math.min(timeoutMs, 2000));
  }

  #message(host: Host, message: HostMessage) {
    const { logger, observer } = this.#options;
    switch (message.t) {
      case "result": {
        const call = this.#calls.get(message.id);
        if (!call) return;
        if (message.error) {
          observer?.error?.(this.name);
          const error = Object.assign(new Error(message.error.message), {
            stack: message.error.stack,
          });
          logger.error("Handler threw", { id: call.message.id, type: call.message.type, error });
          this.#settle(message.id, {
            code: StatusCode.FAILED,
            msg: message.error.message || "Plugin failed",
          });
          return;
        }
        const result = message.result;
        if (result === undefined || result === null) {
          this.#settle(message.id, { code: StatusCode.SUCCESS });
        } else if (typeof result !== "object" || !statusName(result.code)) {
          observer?.error?.(this.name);
          const msg = `handle() returned ${JSON.stringify(result)}, not a status`;
          logger.error("Handler threw", { id: call.message.id, error: msg });
          this.#settle(message.id, { code: StatusCode.FAILED, msg });
        } else {
          this.#settle(message.id, { code: result.code, msg: result.msg });
        }
        return;
      }
      case "send": {
        const sender = message.call === undefined
          ? undefined
          : this.#calls.get(message.call)?.sender ?? this.#answered.get(message.call);
        if (message.call !== undefined && !sender) {
          host.post({ t: "reply", rid: message.rid, error: "The frame's handling has ended" });
          return;
        }
        const cap = this.#options.maxSendsInFlight;
        if (this.#sending >= cap) {
          host.post({
            t: "reply",
            rid: message.rid,
            error: `Too many sends in flight: at most ${cap}, await them`,
          });
          return;
        }
        this.#sending++;
        this.#options.send(message.frame, sender).then(
          (value) => host.post({ t: "reply", rid: message.rid, value }),
          (error) =>
            host.post({
              t: "reply",
              rid: message.rid,
              error: error instanceof Error ? error.message : String(error),
            }),
        ).finally(() => this.#sending--);
        return;
      }
      case "isOnline":
        this.#options.isOnline(message.userId).then(
          (value) => host.post({ t: "reply", rid: message.rid, value }),
          (error) => host.post({ t: "reply", rid: message.rid, error: String(error) }),
        );
        return;
      case "log": {
        const fields = message.fields ? revive(message.fields) : undefined;
        this.#lines.write(message.level, "plugin", message.msg, fields);
        return;
      }
      case "hookError":
        observer?.error?.(this.name);
        logger.error(`${message.name}() threw`, { error: revive({ e: message.error }).e });
        return;
      case "pong":
        clearTimeout(this.#probe);
        this.#probe = undefined;
        return;
    }
  }

  async #exited(host: Host, status: Deno.CommandStatus) {
    if (this.#host !== host || this.#state === "closed" || this.#state === "loading") return;
    // Its last words (the uncaught error) may still be in the pipe.
    await settlesWithin(host.drained, 200);
    if (this.#host !== host || (this.#state as string) === "closed") return;
    clearTimeout(this.#probe);
    this.#probe = undefined;
    const { logger, observer } = this.#options;
    const reason = host.reason(status);
    observer?.crash?.(this.name);
    logger.error("Plugin host exited: restarting it", {
      reason,
      code: status.code,
      stderr: host.stderr.slice(-1000),
    });
    for (const id of [...this.#calls.keys()]) {
      this.#settle(id, {
        code: StatusCode.FAILED,
        msg: `Plugin "${this.name}" crashed: ${reason}`,
      });
    }
    host.stop();
    this.#restart();
  }

  #restart() {
    this.#state = "restarting";
    this.#host = undefined;
    if (Date.now() - this.#startedAt > 60_000) this.#failures = 0;
    const base = this.#options.backoffMs ?? 200;
    const delay = Math.min(base * 2 ** this.#failures, this.#options.maxBackoffMs ?? 30_000);
    this.#failures++;
    this.#restartTimer = setTimeout(async () => {
      this.#restartTimer = undefined;
      if (this.#state === "closed") return;
      const host = this.#spawn();
      this.#state = "loading"; // its exit while starting is a failed restart, not a crash
      try {
        const loaded = await this.#within(
          host,
          host.next((m): m is HostMessage & { t: "loaded" | "failed" } =>
            m.t === "loaded" || m.t === "failed"
          ),
          "load",
        );
        if ((this.#state as string) === "closed") return;
        if (loaded?.t !== "loaded") throw new Error(loaded?.error ?? "host exited");
        if (loaded.name !== this.name || String(loaded.types) !== String(this.types)) {
          throw new Error("its name or types changed: reload it instead");
        }
        await this.#init(host);
        this.#options.observer?.restart?.(this.name);
        this.#options.logger.info("Plugin restarted", { attempt: this.#failures });
      } catch (error) {
        this.#options.logger.error("Plugin restart failed", {
          error: error instanceof Error ? error.message : String(error),
        });
        if (this.#host === host) {
          await host.stop();
          if ((this.#state as string) !== "closed") this.#restart();
        }
      }
    }, delay);
  }

  hook(name: "onRegister" | "onDisconnect", client: ClientInfo): void {
    if (!this.#hooks.has(name) || this.#state !== "ready") return;
    this.#host?.post({
      t: "hook",
      name,
      client: { userId: client.userId, clientName: client.clientName },
    });
  }

  /** Waits for the frames in flight (at most `timeoutMs`), runs `close()`, ends the process. */
  async close(): Promise<void> {
    if (this.#calls.size > 0) {
      this.#idle = Promise.withResolvers();
      await this.#idle.promise;
    }
    const wasReady = this.#state === "ready";
    this.#state = "closed";
    clearTimeout(this.#restartTimer);
    clearTimeout(this.#probe);
    const host = this.#host;
    if (!host) return;
    if (wasReady) {
      host.post({ t: "close" });
      await settlesWithin(
        host.next((m): m is HostMessage & { t: "closed" } => m.t === "closed"),
        2000,
      );
    }
    await host.stop();
  }
}

/** Turns `{ error: { message, stack } }` fields back into errors for the log. */
function revive(fields: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(fields)) {
    const info = (value as { error?: { message?: unknown; stack?: unknown } } | null)?.error;
    if (key !== "" && info && typeof info.message === "string") {
      out[key] = Object.assign(new Error(info.message), { stack: info.stack });
    } else if (value && typeof value === "object" && "message" in value && "stack" in value) {
      out[key] = Object.assign(new Error(String((value as Error).message)), {
        stack: (value as Error).stack,
      });
    } else {
      out[key] = value;
    }
  }
  return out;
}
