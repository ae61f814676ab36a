/**
 * The command line:
 *
 * ```sh
 * deno task start                      # serve with ./config.yaml
 * deno run … main.ts --config FILE     # serve with another file
 * deno task hash-password [PASSWORD]   # print a hash for auth.users[].password
 * ```
 *
 * Environment: `IM_CONFIG` (config path), `IM_HOST` and `IM_PORT` (override
 * `websocket.url` and `websocket.port`), `IM_API_KEYS` (`name1:key1,name2:key2`,
 * added to `server.apiKeys`), `LOG_TOKENS` and `LOG_STREAM` (read by the YAML
 * parser: debug output). `--help` lists them.
 *
 * SIGINT or SIGTERM stops the server gracefully and exits 0; when that takes
 * longer than `server.shutdownSeconds`, it exits 1. A second signal exits 1 at once.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { ConfigError, loadConfig } from "./src/config/load.ts";
import { createServer } from "./src/server.ts";
import { hashPassword } from "./src/auth/password.ts";
import { createLogger } from "./src/log.ts";
import { ApiKeySchema } from "./src/config/schema.ts";
import { zodMessage } from "./src/util/zod_message.ts";
import { Deadline } from "./src/util/deadline.ts";

const USAGE = `Usage:
  main.ts [--config FILE]        start the server (default ./config.yaml, or $IM_CONFIG)
  main.ts hash-password [PASS]   print a password hash (reads stdin when PASS is absent)

Environment:
  IM_CONFIG     config file when --config is absent (default ./config.yaml)
  IM_PORT       port to listen on, instead of websocket.port (0 picks a free one)
  IM_HOST       address to bind, instead of websocket.url
  IM_API_KEYS   API keys added to server.apiKeys: name1:key1,name2:key2
  LOG_TOKENS, LOG_STREAM
                debug output of the YAML parser while it reads the config file

Every config key and its default: docs/CONFIG.md`;

async function readPassword(): Promise<string> {
  if (Deno.stdin.isTerminal()) {
    Deno.stdout.writeSync(new TextEncoder().encode("Password: "));
  }
  const buffer = new Uint8Array(4096);
  const n = await Deno.stdin.read(buffer);
  return new TextDecoder().decode(buffer.subarray(0, n ?? 0)).replace(/\r?\n$/, "");
}

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // Not granted: treat as unset.
  }
}

/** Parses `IM_API_KEYS` (`name1:key1,name2:key2`); an error message names the entry, never the key. */
export function parseApiKeys(text: string): { name: string; key: string }[] | string {
  const keys = [];
  for (const [index, entry] of text.split(",").entries()) {
    if (entry.trim() === "") continue;
    const colon = entry.indexOf(":");
    const name = colon < 0 ? "" : entry.slice(0, colon).trim();
    const parsed = ApiKeySchema.safeParse({ name, key: entry.slice(colon + 1).trim() });
    if (colon < 0 || !parsed.success) {
      const why = colon < 0 ? "expected name:key" : zodMessage(parsed.error!);
      return `Invalid IM_API_KEYS entry ${index + 1}${name ? ` ("${name}")` : ""}: ${why}`;
    }
    keys.push(parsed.data);
  }
  return keys;
}

async function main(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: { config: { type: "string", short: "c" }, help: { type: "boolean", short: "h" } },
    allowPositionals: true,
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (positionals[0] === "hash-password") {
    const password = positionals[1] ?? await readPassword();
    if (!password) {
      console.error("Password is empty");
      return 2;
    }
    console.log(await hashPassword(password));
    return 0;
  }
  if (positionals.length > 0) {
    console.error(`Unknown command "${positionals[0]}"\n${USAGE}`);
    return 2;
  }
  const path = values.config ?? env("IM_CONFIG") ?? "./config.yaml";
  let config;
  try {
    config = await loadConfig(path);
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      return 1;
    }
    throw error;
  }
  const port = env("IM_PORT");
  if (port !== undefined) {
    const value = Number(port);
    if (!Number.isInteger(value) || value < 0 || value > 65535) {
      console.error(`Invalid IM_PORT "${port}": must be a port number`);
      return 1;
    }
    config.websocket.port = value;
  }
  config.websocket.url = env("IM_HOST") ?? config.websocket.url;
  const envKeys = env("IM_API_KEYS");
  if (envKeys !== undefined) {
    const keys = parseApiKeys(envKeys);
    if (typeof keys === "string") {
      console.error(keys);
      return 1;
    }
    config.server.apiKeys.push(...keys);
  }

  const logger = createLogger(config.log);
  let server;
  try {
    server = await createServer(config, { logger, configFile: path });
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) {
      const { url, port } = config.websocket;
      console.error(
        `Cannot start: port ${port} on ${url} is already in use (another server, or a ` +
          `'deno task start' still running?): stop it, or choose another port with ` +
          `IM_PORT=${port === 65535 ? 8082 : port + 1} or websocket.port in the config file ` +
          `(${path}, another one with --config FILE or IM_CONFIG)`,
      );
      return 1;
    }
    console.error(`Cannot start: ${error instanceof Error ? error.message : error}`);
    return 1;
  }
  console.log(`listening on ${server.url}`);
  const stopped = Promise.withResolvers<number>();
  let stopping = false;
  const stop = (signal: Deno.Signal) => () => {
    if (stopping) {
      logger.error(`${signal} during shutdown: exiting now`);
      stopped.resolve(1);
      return;
    }
    stopping = true;
    const seconds = config.server.shutdownSeconds;
    logger.info("Shutting down", { signal, withinSeconds: seconds });
    // One deadline for the server's stages and for this process.
    const deadline = new Deadline(seconds * 1000);
    const timer = setTimeout(() => {
      logger.error(`Shutdown took longer than ${seconds} s (server.shutdownSeconds): forcing exit`);
      stopped.resolve(1);
    }, deadline.remaining());
    server.close(deadline).then(() => {
      clearTimeout(timer);
      logger.info("Stopped");
      stopped.resolve(0);
    }, (error) => {
      clearTimeout(timer);
      logger.error("Shutdown failed", { error });
      stopped.resolve(1);
    });
  };
  Deno.addSignalListener("SIGINT", stop("SIGINT"));
  Deno.addSignalListener("SIGTERM", stop("SIGTERM"));
  return await stopped.promise;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
