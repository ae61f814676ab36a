/**
 * Wiring the core: the hub, the delivery path, the plugins, the operations
 * hooks, and what every WebSocket session shares. Nothing here listens.
 *
 * @module
 */
import type { Config } from "../config/schema.ts";
import type { Logger } from "../log.ts";
import type { Backends } from "../backends/mod.ts";
import { Hub } from "../core/hub.ts";
import { DeliveryService } from "../core/delivery.ts";
import type { SessionDeps } from "../core/client_session.ts";
import { randomId } from "../auth/base64.ts";
import { PluginRegistry } from "../plugins/registry.ts";
import { checkPermissions } from "../plugins/permissions.ts";
import { createOps, type Ops } from "../ops/wiring.ts";
import type { UserDirectory } from "../auth/users.ts";

/** Whether the server still takes new work (false once shutdown began). */
export interface Gate {
  accepting: boolean;
}

/** The wired core of one server. */
export interface Core {
  instanceId: string;
  hub: Hub;
  delivery: DeliveryService;
  plugins: PluginRegistry;
  ops: Ops;
  /** What every WebSocket session shares. */
  session: SessionDeps;
  gate: Gate;
}

/** Where the plugins are and what they must never reach. */
export interface PluginSetup {
  /** The plugins directory as a `file:` URL ending in `/`. */
  dir: URL;
  /** A missing directory means no plugins. */
  optional: boolean;
  /** The server's config file, which no plugin may be granted. */
  configFile?: string;
  /** The deno executable for plugin host processes; absent in a compiled binary. */
  denoPath?: string;
}

/** Builds the core on opened backends and runs the plugins' `init`. */
export async function wireCore(
  config: Config,
  logger: Logger,
  backends: Backends,
  plugins: PluginSetup,
  users?: UserDirectory,
): Promise<Core> {
  const instanceId = randomId(6);
  const hub = new Hub(instanceId);
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
  const registry = await openPlugins(config, logger, backends, plugins, { delivery, ops });
  if (config.plugins.watch && !Deno.build.standalone) registry.watch();
  const gate: Gate = { accepting: true };
  const session = sessionDeps(config, {
    backends,
    hub,
    delivery,
    registry,
    ops,
    gate,
    users,
    logger: logger.child("session"),
  });
  return { instanceId, hub, delivery, plugins: registry, ops, session, gate };
}

/** Checks the plugins' grants, then loads the plugins and runs their `init`. */
async function openPlugins(
  config: Config,
  logger: Logger,
  backends: Backends,
  plugins: PluginSetup,
  { delivery, ops }: { delivery: DeliveryService; ops: Ops },
): Promise<PluginRegistry> {
  checkPermissions(config.plugins.permissions, {
    configFile: plugins.configFile,
    storageDir: config.storage.dir,
  });
  const metrics = ops.metrics;
  return await PluginRegistry.create({
    delivery,
    isOnline: async (userId) => (await backends.presence.lookup([userId])).has(userId),
    logger,
    dir: plugins.dir,
    optional: plugins.optional,
    timeoutMs: config.plugins.timeoutMs,
    maxRecipients: config.limits.maxRecipients,
    config: config.plugins.config,
    permissions: config.plugins.permissions,
    maxHeapMb: config.plugins.maxHeapMb,
    maxSendsInFlight: config.plugins.maxSendsInFlight,
    logLinesPerMinute: config.plugins.logLinesPerMinute,
    denoPath: plugins.denoPath,
    observer: {
      error: (name) => metrics.pluginError(name),
      timeout: (name) => metrics.pluginTimeout(name),
      crash: (plugin) => metrics.pluginCrashes.inc({ plugin }),
      restart: (plugin) => metrics.pluginRestarts.inc({ plugin }),
      loadFailure: (file) => metrics.pluginLoadFailures.inc({ file }),
    },
  });
}

/** What every WebSocket session shares: the core's parts, the hooks and the limits. */
function sessionDeps(
  config: Config,
  parts: {
    backends: Backends;
    hub: Hub;
    delivery: DeliveryService;
    registry: PluginRegistry;
    ops: Ops;
    gate: Gate;
    users?: UserDirectory;
    logger: Logger;
  },
): SessionDeps {
  const { backends, hub, delivery, registry, ops, gate, users, logger } = parts;
  let connectionIds = 0;
  return {
    delivery,
    sessions: backends.sessions,
    hub,
    custom: registry,
    logger,
    events: {
      ...ops.events,
      registered(conn) {
        ops.events.registered?.(conn);
        registry.clientRegistered(conn);
      },
      disconnected(conn) {
        ops.events.disconnected?.(conn);
        registry.clientDisconnected(conn);
      },
    },
    limits: {
      maxFrameBytes: config.limits.maxFrameBytes,
      maxBufferedBytes: config.limits.maxBufferedBytes,
      registerTimeoutSeconds: config.websocket.registerTimeoutSeconds,
      maxRecipients: config.limits.maxRecipients,
      maxConnectionsPerUser: config.limits.maxConnectionsPerUser,
      rateLimit: config.limits.rateLimit,
      maxPendingBytesPerSender: config.limits.maxPendingBytesPerSender,
    },
    // Only where the server knows every user: no JWTs from another system.
    knownUser: users && !config.auth.jwt ? (userId) => users.hasUserId(userId) : undefined,
    accepting: () => gate.accepting,
    nextId: () => ++connectionIds,
  };
}
