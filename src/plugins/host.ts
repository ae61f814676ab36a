/**
 * A plugin host process: imports one plugin file and runs its callbacks for
 * the server, which talks to it over stdin/stdout (see `ipc.ts`). It runs with
 * only the permissions the server gives it on its command line.
 *
 * Usage (by the server only): `deno run <flags> host.ts <plugin URL> <file name>`.
 *
 * @module
 */
// Loaded before the plugin so that its `@im/server` import (mapped here) needs no read permission.
import "./api.ts";
import { Channel, messages } from "./ipc.ts";
import { describeImportError, PluginError, validatePlugin } from "./loader.ts";
import type { ClientInfo, Plugin, PluginBaseContext, PluginSend } from "./types.ts";
import type { HostMessage, ServerMessage } from "./host_messages.ts";
import type { Logger } from "../log.ts";

const [url, file] = Deno.args;
const out = new Channel(Deno.stdout.writable);
const post = (message: HostMessage) => out.post(message);

// The server decides when this process ends (a Ctrl-C reaches the whole process group):
// it sends "close", and the end of stdin means the server is gone.
for (const signal of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(signal, () => {});

// stdout carries the protocol: console output goes to stderr, which the server logs.
for (const method of ["log", "info", "debug"] as const) console[method] = console.error;

function errorInfo(error: unknown): { message: string; stack?: string } {
  if (error instanceof Error) return { message: error.message, stack: error.stack };
  return { message: String(error) };
}

/** Fields a logger call may carry, made JSON (errors become plain objects). */
function cloneable(fields: Record<string, unknown> | undefined) {
  if (!fields) return undefined;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(fields)) {
    out[key] = value instanceof Error ? { error: errorInfo(value) } : value;
  }
  try {
    return JSON.parse(JSON.stringify(out));
  } catch {
    return { fields: "(not JSON)" };
  }
}

let rpcIds = 0;
const rpcs = new Map<number, PromiseWithResolvers<unknown>>();
function rpc(message: HostMessage & { rid: number }): Promise<unknown> {
  const pending = Promise.withResolvers<unknown>();
  rpcs.set(message.rid, pending);
  post(message);
  return pending.promise;
}

const logger: Logger = {
  debug: (msg, fields) => post({ t: "log", level: "debug", msg, fields: cloneable(fields) }),
  info: (msg, fields) => post({ t: "log", level: "info", msg, fields: cloneable(fields) }),
  warn: (msg, fields) => post({ t: "log", level: "warn", msg, fields: cloneable(fields) }),
  error: (msg, fields) => post({ t: "log", level: "error", msg, fields: cloneable(fields) }),
  child: () => logger,
};

const state = new Map<string, unknown>();

function context(config: unknown, call?: number): PluginBaseContext<unknown> {
  return {
    config,
    logger,
    state,
    async send(frame: PluginSend) {
      return await rpc({
        t: "send",
        rid: ++rpcIds,
        call,
        frame: JSON.parse(JSON.stringify(frame)),
      }) as {
        id: string;
        duplicate: boolean;
      };
    },
    async isOnline(userId: string) {
      return await rpc({ t: "isOnline", rid: ++rpcIds, userId: String(userId) }) as boolean;
    },
  };
}

let plugin: Plugin<unknown>;
try {
  plugin = validatePlugin(file, await import(url));
} catch (error) {
  post({
    t: "failed",
    error: error instanceof PluginError
      ? error.message
      : `Cannot load plugin "${file}": ${describeImportError(error)}`,
  });
  // The server ends this process; if it is gone, the end of stdin does.
  for await (const _ of Deno.stdin.readable) { /* nothing more to do */ }
  Deno.exit(0);
}
post({
  t: "loaded",
  name: plugin!.name,
  types: [...plugin!.types],
  ephemeral: [...(plugin!.ephemeral ?? [])],
  hooks: (["onRegister", "onDisconnect"] as const).filter((hook) => plugin[hook] !== undefined),
});

let base = context(undefined);
const aborts = new Map<number, AbortController>();

async function handle(id: number, message: ServerMessage & { t: "call" }) {
  const controller = new AbortController();
  aborts.set(id, controller);
  try {
    const result = await plugin.handle(message.message, {
      ...context(base.config, id),
      sender: message.sender,
      signal: controller.signal,
    });
    post({ t: "result", id, result: result ?? undefined });
  } catch (error) {
    post({ t: "result", id, error: errorInfo(error) });
  } finally {
    aborts.delete(id);
  }
}

async function hook(name: "onRegister" | "onDisconnect", client: ClientInfo) {
  try {
    await plugin[name]?.(client, base);
  } catch (error) {
    post({ t: "hookError", name, error: errorInfo(error) });
  }
}

for await (const raw of messages(Deno.stdin.readable)) {
  const message = raw as ServerMessage;
  switch (message.t) {
    case "init": {
      let config = message.config;
      if (plugin!.configSchema) {
        const parsed = plugin!.configSchema.safeParse(config ?? {});
        if (!parsed.success) {
          const issue = parsed.error.issues[0];
          post({ t: "initFailed", path: issue.path.map(String), error: issue.message });
          break;
        }
        config = parsed.data;
      }
      base = context(config);
      try {
        await plugin!.init?.(base);
        post({ t: "ready" });
      } catch (error) {
        post({ t: "initFailed", error: errorInfo(error).message });
      }
      break;
    }
    case "call":
      handle(message.id, message);
      break;
    case "abort":
      aborts.get(message.id)?.abort(new Error("Plugin timed out"));
      break;
    case "hook":
      hook(message.name, message.client);
      break;
    case "reply": {
      const pending = rpcs.get(message.rid);
      rpcs.delete(message.rid);
      if (message.error !== undefined) pending?.reject(new Error(message.error));
      else pending?.resolve(message.value);
      break;
    }
    case "ping":
      post({ t: "pong" });
      break;
    case "close":
      try {
        await plugin!.close?.();
      } catch (error) {
        logger.error("close() threw", { error });
      }
      post({ t: "closed" });
      break;
  }
}
Deno.exit(0);
