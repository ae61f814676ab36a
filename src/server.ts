/**
 * The composition root: `createServer(config)` wires the parts and serves
 * HTTP and WebSocket on one port. `main.ts` and the tests both use it.
 *
 * @module
 */
import type { Config } from "./config/schema.ts";
import { createLogger, type Logger } from "./log.ts";
import { openBackends } from "./backends/mod.ts";
import { Hub } from "./core/hub.ts";
import { DeliveryService } from "./core/delivery.ts";
import type { CustomTypes, SessionDeps } from "./core/session.ts";
import { WebSocketTransport } from "./transport/websocket.ts";
import { Router } from "./http/router.ts";
import { json, jsonError } from "./http/errors.ts";
import { addAuthRoutes } from "./http/auth_routes.ts";
import { addServerRoutes } from "./http/server_routes.ts";
import { TokenService } from "./auth/tokens.ts";
import { UserDirectory } from "./auth/users.ts";
import { randomId } from "./auth/base64.ts";
import { StatusCode } from "./protocol/codes.ts";
import type { Presence } from "./core/presence.ts";
import type { SessionEvents } from "./core/session.ts";

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

const NO_PLUGINS: CustomTypes = {
  has: () => false,
  handle: () => Promise.resolve({ code: StatusCode.TYPE_ERROR }),
};

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
  const backends = await openBackends(config, logger);
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
  const custom = NO_PLUGINS;
  let connectionIds = 0;
  const deps: SessionDeps = {
    delivery,
    sessions: backends.sessions,
    hub,
    custom,
    logger: logger.child("session"),
    events: backends.presence
      ? presenceEvents(backends.presence, instanceId, logger.child("presence"))
      : {},
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
  router.add("GET", "/healthz", () => json({ data: "ok" }));

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

  let closing: Promise<void> | undefined;
  return {
    url,
    port: addr.port,
    close() {
      closing ??= (async () => {
        transport.closeAll(1001, "going away");
        await httpServer.shutdown();
        await backends.broker.close();
        await backends.sessions.close();
        await backends.presence?.close();
        await backends.store.close();
      })();
      return closing;
    },
  };
}

/** Keeps shared presence in step with this instance's registered connections. */
function presenceEvents(presence: Presence, instance: string, logger: Logger): SessionEvents {
  const failed = (error: unknown) => logger.warn("Presence update failed", { error });
  return {
    registered: (conn) =>
      presence.add({
        userId: conn.userId,
        clientName: conn.clientName,
        since: conn.since,
        instance,
      })
        .catch(failed),
    disconnected: (conn) =>
      presence.remove({
        userId: conn.userId,
        clientName: conn.clientName,
        since: conn.since,
        instance,
      }).catch(failed),
  };
}
