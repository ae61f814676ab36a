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
import type { Presence } from "./core/presence.ts";

/** A running server. */
export interface ImServer {
  /** Base URL, such as `http://127.0.0.1:8081`. */
  readonly url: string;
  /** The bound port (useful with port 0). */
  readonly port: number;
  /** Stops accepting, closes every connection and the storage. */
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
    await backends.presence?.close();
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
  const delivery = new DeliveryService({
    store: backends.store,
    broker: backends.broker,
    hub,
    instanceId,
    logger: logger.child("delivery"),
  });
  await delivery.start();
  const plugins = await PluginRegistry.create(loaded, {
    delivery,
    isOnline: (userId) => Promise.resolve(hub.isOnline(userId)),
    logger,
    timeoutMs: config.plugins.timeoutMs,
    config: config.plugins.config,
  });
  const custom = plugins;
  const events: SessionEvents = {
    registered: (conn) => plugins.clientRegistered(conn),
    disconnected: (conn) => plugins.clientDisconnected(conn),
  };
  let connectionIds = 0;
  const deps: SessionDeps = {
    delivery,
    sessions: backends.sessions,
    hub,
    custom,
    logger: logger.child("session"),
    events: backends.presence
      ? withPresence(events, backends.presence, instanceId, logger.child("presence"))
      : events,
    maxRecipients: config.limits.maxRecipients,
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
    tokenTtlSeconds: config.auth.tokenTtlSeconds,
  });
  const apiKeys = [...config.server.apiKeys];
  if (config.server.apiKey) apiKeys.push({ name: "default", key: config.server.apiKey });
  addServerRoutes(router, {
    apiKeys,
    delivery,
    custom,
    maxRecipients: config.limits.maxRecipients,
  });
  addHistoryRoutes(router, {
    store: backends.store,
    tokens,
    cookieName: config.auth.cookieName,
    apiKeys,
  });
  router.add("GET", "/healthz", () => json({ data: "ok" }));
  if (config.server.console) router.fallback(consoleHandler());

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
    return router.handle(request, ip, httpLogger);
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
    close() {
      closing ??= (async () => {
        clearInterval(sweeper);
        transport.closeAll(1001, "going away");
        await httpServer.shutdown();
        await plugins.close();
        await backends.broker.close();
        await backends.sessions.close();
        await backends.presence?.close();
        await backends.store.close();
      })();
      return closing;
    },
  };
}

/** `events`, plus keeping shared presence in step with this instance's connections. */
function withPresence(
  events: SessionEvents,
  presence: Presence,
  instance: string,
  logger: Logger,
): SessionEvents {
  const failed = (error: unknown) => logger.warn("Presence update failed", { error });
  const entry = (conn: { userId: string; clientName: string; since: number }) => ({
    userId: conn.userId,
    clientName: conn.clientName,
    since: conn.since,
    instance,
  });
  return {
    ...events,
    registered: (conn) => {
      events.registered?.(conn);
      presence.add(entry(conn)).catch(failed);
    },
    disconnected: (conn) => {
      events.disconnected?.(conn);
      presence.remove(entry(conn)).catch(failed);
    },
  };
}
