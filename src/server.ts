/**
 * The composition root: `createServer(config)` opens the backends, wires the
 * core (`server/core.ts`), builds the routes (`server/routes.ts`), serves them
 * on one port (`server/serve.ts`) and knows how to shut down
 * (`server/shutdown.ts`). `main.ts` and the tests both use it.
 *
 * @module
 */
import type { Config } from "./config/schema.ts";
import { createLogger, type Logger } from "./log.ts";
import { closeBackends, openBackends } from "./backends/mod.ts";
import { TokenService } from "./auth/tokens.ts";
import { UserDirectory } from "./auth/users.ts";
import { randomId } from "./auth/base64.ts";
import type { Metrics } from "./ops/metrics.ts";
import { type Core, wireCore } from "./server/core.ts";
import { type Auth, buildMetricsRoutes, buildRoutes, websocketPath } from "./server/routes.ts";
import { serve } from "./server/serve.ts";
import { shutdown } from "./server/shutdown.ts";
import { Deadline } from "./util/deadline.ts";

/** A running server. */
export interface ImServer {
  /** Base URL, such as `http://127.0.0.1:8081`. */
  readonly url: string;
  /** The bound port (useful with port 0). */
  readonly port: number;
  /** The server's metrics (the plugin runner reports plugin errors and timeouts here). */
  readonly metrics: Metrics;
  /**
   * Graceful stop: refuses new work (`/readyz` answers 503), waits for the
   * frames in flight, closes every connection with 1001, then the storage.
   * Every stage takes a share of `deadline` (default: `server.shutdownSeconds` from now).
   */
  close(deadline?: Deadline): Promise<void>;
}

/** Options of {@link createServer}. */
export interface ServerOptions {
  /** Logger to use; one from `config.log` when absent. */
  logger?: Logger;
  /** The config file the server was started with: no plugin may be granted it. */
  configFile?: string;
}

/** The plugins directory as a URL: relative paths are taken from the working directory,
 * or, in a compiled binary, from the embedded files. */
function pluginsUrl(dir: string): URL {
  const withSlash = dir.endsWith("/") ? dir : `${dir}/`;
  if (withSlash.startsWith("/")) return new URL(`file://${withSlash}`);
  const base = Deno.build.standalone
    ? new URL("../", import.meta.url)
    : new URL(`file://${Deno.cwd()}/`);
  return new URL(withSlash, base);
}

/**
 * The deno executable that runs plugin host processes: the running one. A
 * compiled binary has none: its plugins run in its own process.
 */
function pluginHostDeno(logger: Logger): string | undefined {
  if (Deno.build.standalone) {
    logger.warn("Compiled binary: plugins run in the server's process, without a sandbox");
    return undefined;
  }
  return Deno.execPath();
}

/** The user directory and token service, with start-up warnings about weak settings. */
function openAuth(config: Config, logger: Logger): Auth {
  const users = new UserDirectory(config.auth.users);
  const plain = users.plainTextUsers();
  if (plain.length > 0) {
    logger.warn(
      "Passwords stored in plain text: hash them with `deno task hash-password`",
      { users: plain },
    );
  }
  if (!config.auth.tokenSecret) {
    logger.info(
      "auth.tokenSecret is not set: tokens are signed with a random key and end at restart",
    );
  }
  const tokens = new TokenService({
    tokenSecret: config.auth.tokenSecret ?? randomId(32),
    ttlSeconds: config.auth.tokenTtlSeconds,
    jwt: config.auth.jwt,
  });
  return { users, tokens };
}

/** Starts a server with a validated configuration. */
export async function createServer(config: Config, options: ServerOptions = {}): Promise<ImServer> {
  const logger = options.logger ?? createLogger(config.log);
  const auth = openAuth(config, logger);
  const plugins = {
    dir: pluginsUrl(config.plugins.dir),
    optional: config.plugins.dir === "./plugins",
    configFile: options.configFile ?? "./config.yaml",
    denoPath: pluginHostDeno(logger),
  };
  const backends = await openBackends(config, logger);
  let core: Core | undefined;
  try {
    const wired = core = await wireCore(config, logger, backends, plugins, auth.users);
    const listener = await serve(config, {
      main: buildRoutes(config, wired, backends, auth, logger),
      metrics: buildMetricsRoutes(config, wired, backends, logger),
      onRefused: (reason) => wired.ops.metrics.rejected(reason),
    }, logger);
    const host = new URL(listener.url).host;
    logger.info(`listening on ${listener.url}`, {
      websocket: `ws://${host}${websocketPath(config)}`,
      ...(listener.metricsUrl ? { metrics: `${listener.metricsUrl}/metrics` } : {}),
    });
    const sweeper = setInterval(() => {
      backends.store.sweep(Date.now()).catch((error) =>
        logger.error("Retention sweep failed", { error })
      );
    }, config.storage.sweepIntervalMs);
    const running = { core, backends, listener, timers: [sweeper], logger };
    let closing: Promise<void> | undefined;
    return {
      url: listener.url,
      port: listener.port,
      metrics: core.ops.metrics,
      close(deadline = new Deadline(config.server.shutdownSeconds * 1000)) {
        return closing ??= shutdown(running, deadline);
      },
    };
  } catch (error) {
    if (core) {
      await core.plugins.close();
      await core.ops.close();
    }
    await closeBackends(backends);
    throw error;
  }
}
