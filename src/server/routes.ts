/**
 * The route table: which handler answers which URL, and the middleware in
 * front of them. A route's code lives in the file named by its prefix:
 * `/app` and `/api` in `http/client_routes.ts`, `/server` in
 * `http/server_routes.ts`, health in `http/health_routes.ts`, the WebSocket
 * in `http/websocket_route.ts`, and `/` (the console) in `console/serve.ts`.
 *
 * @module
 */
import type { Config } from "../config/schema.ts";
import type { Logger } from "../log.ts";
import type { Backends } from "../backends/mod.ts";
import type { Core } from "./core.ts";
import { Router } from "../http/router.ts";
import { apiKeys, cors, shutdownGate } from "../http/middleware.ts";
import { Cors } from "../http/cors.ts";
import type { ApiKey } from "../http/credentials.ts";
import { addClientRoutes } from "../http/client_routes.ts";
import { addServerRoutes } from "../http/server_routes.ts";
import { addHealthRoutes, HEALTH_PATHS } from "../http/health_routes.ts";
import { addPluginRoutes } from "../http/plugin_routes.ts";
import { websocketRoute } from "../http/websocket_route.ts";
import { consoleHandler } from "../console/serve.ts";
import { loginOrigin } from "../http/login_origin.ts";
import type { TokenService } from "../auth/tokens.ts";
import type { UserDirectory } from "../auth/users.ts";
import { LoginGuard } from "../auth/login_guard.ts";

/** Who logs in: the user directory and the token service. */
export interface Auth {
  users: UserDirectory;
  tokens: TokenService;
}

/** The WebSocket path of `websocket.context`, with one leading slash. */
export function websocketPath(config: Config): string {
  return `/${config.websocket.context.replace(/^\/+/, "")}`;
}

/** The API keys of `server.apiKey` and `server.apiKeys`. */
function keysOf(config: Config): ApiKey[] {
  const keys = [...config.server.apiKeys];
  if (config.server.apiKey) keys.push({ name: "default", key: config.server.apiKey });
  return keys;
}

/** Every route of the server, behind its middleware. */
export function buildRoutes(
  config: Config,
  core: Core,
  backends: Backends,
  auth: Auth,
  logger: Logger,
): Router {
  const { ops, gate } = core;
  const api = logger.child("api");
  const router = new Router(logger.child("http"))
    .use("/", cors(new Cors(config.server.corsOrigins)))
    .use("/", shutdownGate(() => gate.accepting, HEALTH_PATHS))
    .use("/server/", apiKeys(keysOf(config), (key, route) => ops.metrics.apiRequest(key, route)))
    .use("/app/login", loginOrigin(config.server.corsOrigins))
    .use("/api/login", loginOrigin(config.server.corsOrigins));

  router.add(
    "GET",
    websocketPath(config),
    websocketRoute({
      session: core.session,
      allowedOrigins: config.websocket.allowedOrigins,
      maxConnectionsPerIp: config.limits.maxConnectionsPerIp,
      idleTimeoutSeconds: config.websocket.idleTimeoutSeconds,
      maxFrameBytes: config.limits.maxFrameBytes,
    }),
  );
  addClientRoutes(router, {
    ...auth,
    sessions: backends.sessions,
    store: backends.store,
    presence: backends.presence,
    maxUsers: config.limits.maxRecipients,
    cookieName: config.auth.cookieName,
    cookieSameSite: config.auth.cookieSameSite,
    cookieSecure: config.auth.cookieSecure,
    tokenTtlSeconds: config.auth.tokenTtlSeconds,
    guard: new LoginGuard({
      maxFailuresPerIp: config.auth.login.maxFailuresPerIp,
      maxFailuresPerUsername: config.auth.login.maxFailuresPerUsername,
      windowSeconds: config.auth.login.windowSeconds,
      maxConcurrentHashes: config.auth.login.maxConcurrentHashes,
      maxQueuedLogins: config.auth.login.maxQueued,
    }),
  });
  addServerRoutes(router, {
    delivery: core.delivery,
    broker: backends.broker,
    custom: core.plugins,
    presence: backends.presence,
    store: backends.store,
    maxRecipients: config.limits.maxRecipients,
    logger: api,
  });
  addHealthRoutes(router, {
    store: backends.store,
    metrics: ops.metrics,
    logger: api,
    metricsKey: config.server.metricsKey,
    serveMetrics: config.server.metricsAddress === undefined,
    accepting: () => gate.accepting,
    details: () => {
      const failed = core.plugins.failures;
      return Object.keys(failed).length > 0 ? { plugins: { failed } } : undefined;
    },
  });
  addPluginRoutes(router, { plugins: core.plugins, logger: api });
  if (config.server.console) router.fallback(consoleHandler());
  return router;
}

/** The routes of `server.metricsAddress` (health and metrics only); none when it is not set. */
export function buildMetricsRoutes(
  config: Config,
  core: Core,
  backends: Backends,
  logger: Logger,
): Router | undefined {
  if (config.server.metricsAddress === undefined) return undefined;
  const router = new Router(logger.child("metrics"));
  addHealthRoutes(router, {
    store: backends.store,
    metrics: core.ops.metrics,
    logger: logger.child("api"),
    metricsKey: config.server.metricsKey,
    accepting: () => core.gate.accepting,
    details: () => {
      const failed = core.plugins.failures;
      return Object.keys(failed).length > 0 ? { plugins: { failed } } : undefined;
    },
  });
  return router;
}
