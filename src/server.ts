/**
 * The composition root: `createServer(config)` wires the parts and serves
 * HTTP and WebSocket on one port. `main.ts` and the tests both use it.
 *
 * @module
 */
import type { Config } from "./config/schema.ts";
import { createLogger, type Logger } from "./log.ts";
import { type Backends, openBackends } from "./backends/mod.ts";
import { Hub } from "./core/hub.ts";
import { DeliveryService } from "./core/delivery.ts";
import type { SessionDeps, SessionEvents } from "./core/session.ts";
import { WebSocketTransport } from "./transport/websocket.ts";
import { Router } from "./http/router.ts";
import { json, jsonError } from "./http/errors.ts";
import { addAuthRoutes } from "./http/auth_routes.ts";
import { addServerRoutes } from "./http/server_routes.ts";
import { addHistoryRoutes } from "./http/history_routes.ts";
import { TokenService } from "./auth/tokens.ts";
import { UserDirectory } from "./auth/users.ts";
import { randomId } from "./auth/base64.ts";
import { type LoadedPlugin, loadPlugins } from "./plugins/loader.ts";
import { PluginRegistry } from "./plugins/registry.ts";
import { consoleHandler } from "./console/serve.ts";
import { createOps } from "./ops/wiring.ts";
import type { Metrics } from "./ops/metrics.ts";
import { addOpsRoutes } from "./http/ops_routes.ts";
import { Cors } from "./http/cors.ts";

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
   */
  close(): Promise<void>;
}

/** Options of {@link createServer}. */
export interface ServerOptions {
  /** Logger to use; one from `config.log` when absent. */
  logger?: Logger;
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

/** Starts a server with a validated configuration. */
export async function createServer(config: Config, options: ServerOptions = {}): Promise<ImServer> {
  const logger = options.logger ?? createLogger(config.log);
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
  const loaded = await loadPlugins(pluginsUrl(config.plugins.dir), {
    optional: config.plugins.dir === "./plugins",
  });
  const backends = await openBackends(config, logger);
  try {
    return await start(config, logger, tokens, users, loaded, backends);
  } catch (error) {
    await backends.broker.close();
    await backends.sessions.close();
    await backends.presence.close();
    await backends.store.close();
    throw error;
  }
}

async function start(
  config: Config,
  logger: Logger,
  tokens: TokenService,
  users: UserDirectory,
  loaded: LoadedPlugin[],
  backends: Backends,
): Promise<ImServer> {
  const hub = new Hub();
  const instanceId = randomId(6);
  const ops = createOps(config, {
    hub,
    presence: backends.presence,
    store: backends.store,
    instanceId,
    logger,
  });
  const delivery = new DeliveryService({
    store: backends.store,
    broker: backends.broker,
    hub,
    instanceId,
    logger: logger.child("delivery"),
    observer: ops.observer,
  });
  await delivery.start();
  const plugins = await PluginRegistry.create(loaded, {
    delivery,
    isOnline: async (userId) => (await backends.presence.lookup([userId])).has(userId),
    logger,
    timeoutMs: config.plugins.timeoutMs,
    config: config.plugins.config,
    observer: {
      error: (name) => ops.metrics.pluginError(name),
      timeout: (name) => ops.metrics.pluginTimeout(name),
    },
  });
  const custom = plugins;
  const events: SessionEvents = {
    ...ops.events,
    registered(conn) {
      ops.events.registered?.(conn);
      plugins.clientRegistered(conn);
    },
    disconnected(conn) {
      ops.events.disconnected?.(conn);
      plugins.clientDisconnected(conn);
    },
  };
  let connectionIds = 0;
  const deps: SessionDeps = {
    delivery,
    sessions: backends.sessions,
    hub,
    custom,
    logger: logger.child("session"),
    events,
    maxRecipients: config.limits.maxRecipients,
    maxConnectionsPerUser: config.limits.maxConnectionsPerUser,
    nextId: () => ++connectionIds,
  };
  const transport = new WebSocketTransport({
    deps,
    logger: logger.child("ws"),
    maxFrameBytes: config.limits.maxFrameBytes,
    maxBufferedBytes: config.limits.maxBufferedBytes,
    registerTimeoutSeconds: config.websocket.registerTimeoutSeconds,
    idleTimeoutSeconds: config.websocket.idleTimeoutSeconds,
    maxConnectionsPerIp: config.limits.maxConnectionsPerIp,
    maxConnectionsPerUser: config.limits.maxConnectionsPerUser,
    allowedOrigins: config.websocket.allowedOrigins,
    rateLimit: config.limits.rateLimit,
    ...ops.transport,
  });

  const router = new Router();
  const wsPath = `/${config.websocket.context.replace(/^\/+/, "")}`;
  router.add("GET", wsPath, (request, { ip }) => {
    const result = transport.upgrade(request, ip);
    return result instanceof Response ? result : jsonError(result.status, result.msg);
  });
  addAuthRoutes(router, {
    users,
    tokens,
    sessions: backends.sessions,
    cookieName: config.auth.cookieName,
    cookieSameSite: config.auth.cookieSameSite,
    cookieSecure: config.auth.cookieSecure,
    tokenTtlSeconds: config.auth.tokenTtlSeconds,
  });
  const apiKeys = [...config.server.apiKeys];
  if (config.server.apiKey) apiKeys.push({ name: "default", key: config.server.apiKey });
  addServerRoutes(router, {
    apiKeys,
    delivery,
    custom,
    maxRecipients: config.limits.maxRecipients,
    presence: backends.presence,
    logger: logger.child("api"),
    onRequest: (key, route) => ops.metrics.apiRequests.inc({ key, route }),
  });
  addHistoryRoutes(router, {
    store: backends.store,
    tokens,
    cookieName: config.auth.cookieName,
    apiKeys,
  });
  router.add("GET", "/healthz", () => json({ data: "ok" }));
  if (config.server.console) router.fallback(consoleHandler());
  let accepting = true;
  addOpsRoutes(router, {
    apiKeys,
    delivery,
    presence: backends.presence,
    store: backends.store,
    metrics: ops.metrics,
    logger: logger.child("api"),
    metricsKey: config.server.metricsKey,
    maxUsers: config.limits.maxRecipients,
    accepting: () => accepting,
  });
  const cors = new Cors(config.server.corsOrigins);
  const alwaysOpen = new Set(["/healthz", "/readyz", "/metrics"]);

  const httpLogger = logger.child("http");
  const ready = Promise.withResolvers<Deno.NetAddr>();
  const httpServer = Deno.serve({
    hostname: config.websocket.url,
    port: config.websocket.port,
    onListen: (addr) => ready.resolve(addr as Deno.NetAddr),
    onError: (error) => {
      httpLogger.error("Request failed", { error });
      return jsonError(500, "Internal server error");
    },
  }, (request, info) => {
    const ip = (info.remoteAddr as Deno.NetAddr).hostname;
    const preflight = cors.preflight(request);
    if (preflight) return preflight;
    if (!accepting && !alwaysOpen.has(new URL(request.url).pathname)) {
      return cors.apply(request.headers.get("origin"), jsonError(503, "Server is shutting down"));
    }
    // Read before routing: after a WebSocket upgrade the request's headers are gone.
    const origin = cors.enabled ? request.headers.get("origin") : null;
    const handled = router.handle(request, ip, httpLogger);
    return origin ? handled.then((response) => cors.apply(origin, response)) : handled;
  });
  const addr = await ready.promise;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  const url = `http://${host}:${addr.port}`;
  logger.info(`listening on ${url}`, { websocket: `ws://${host}:${addr.port}${wsPath}` });

  const sweeper = setInterval(() => {
    backends.store.sweep(Date.now()).catch((error) =>
      logger.error("Retention sweep failed", { error })
    );
  }, config.storage.sweepIntervalMs);

  let closing: Promise<void> | undefined;
  return {
    url,
    port: addr.port,
    metrics: ops.metrics,
    close() {
      closing ??= (async () => {
        clearInterval(sweeper);
        accepting = false;
        transport.stopAccepting();
        // Frames accepted before the stop get their 200 and their delivery first.
        const drainMs = config.server.shutdownSeconds * 500;
        if (!await settlesWithin(delivery.idle(), drainMs)) {
          logger.warn("Frames still in flight at shutdown: closing anyway", { waitedMs: drainMs });
        }
        await new Promise((resolve) => setTimeout(resolve, 0)); // Let the 9001 answers go out.
        // Wait for the close handshakes: the HTTP shutdown would cut them short.
        const handshakeMs = Math.max(1000, config.server.shutdownSeconds * 250);
        await settlesWithin(transport.closeAll(1001, "going away"), handshakeMs);
        await httpServer.shutdown();
        await plugins.close();
        await ops.close();
        await backends.broker.close();
        await backends.sessions.close();
        await backends.presence.close();
        await backends.store.close();
      })();
      return closing;
    },
  };
}

/** Whether `work` settles within `ms`. */
async function settlesWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), ms));
  try {
    return await Promise.race([work.then(() => true, () => true), late]);
  } finally {
    clearTimeout(timer);
  }
}
