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
import type { LoadedPlugin } from "../plugins/loader.ts";
import { PluginRegistry } from "../plugins/registry.ts";
import { createOps, type Ops } from "../ops/wiring.ts";

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

/** Builds the core on opened backends and runs the plugins' `init`. */
export async function wireCore(
  config: Config,
  logger: Logger,
  backends: Backends,
  loaded: LoadedPlugin[],
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
  const plugins = await PluginRegistry.create(loaded, {
    delivery,
    isOnline: async (userId) => (await backends.presence.lookup([userId])).has(userId),
    logger,
    timeoutMs: config.plugins.timeoutMs,
    maxRecipients: config.limits.maxRecipients,
    config: config.plugins.config,
    observer: {
      error: (name) => ops.metrics.pluginError(name),
      timeout: (name) => ops.metrics.pluginTimeout(name),
    },
  });
  const gate: Gate = { accepting: true };
  let connectionIds = 0;
  const session: SessionDeps = {
    delivery,
    sessions: backends.sessions,
    hub,
    custom: plugins,
    logger: logger.child("session"),
    events: {
      ...ops.events,
      registered(conn) {
        ops.events.registered?.(conn);
        plugins.clientRegistered(conn);
      },
      disconnected(conn) {
        ops.events.disconnected?.(conn);
        plugins.clientDisconnected(conn);
      },
    },
    limits: {
      maxFrameBytes: config.limits.maxFrameBytes,
      maxBufferedBytes: config.limits.maxBufferedBytes,
      registerTimeoutSeconds: config.websocket.registerTimeoutSeconds,
      maxRecipients: config.limits.maxRecipients,
      maxConnectionsPerUser: config.limits.maxConnectionsPerUser,
      rateLimit: config.limits.rateLimit,
    },
    accepting: () => gate.accepting,
    nextId: () => ++connectionIds,
  };
  return { instanceId, hub, delivery, plugins, ops, session, gate };
}
