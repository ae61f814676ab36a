/**
 * Operations wiring: turns the core's hooks (session events and the delivery
 * observer) into metrics, presence, webhooks and log lines. The composition root calls {@link createOps} once and passes
 * what it returns to the parts.
 *
 * @module
 */
import type { Config } from "../config/schema.ts";
import type { Hub } from "../core/hub.ts";
import type { Presence, PresenceEntry } from "../core/presence.ts";
import type { MessageStore } from "../core/store.ts";
import type { SessionEvents } from "../core/client_session.ts";
import type { DeliveryObserver, Outgoing } from "../core/delivery.ts";
import type { Connection } from "../core/hub.ts";
import type { Logger } from "../log.ts";
import { Metrics } from "./metrics.ts";
import { type WebhookConfig, Webhooks } from "./webhooks.ts";
import { UserActivity } from "./user_events.ts";

/** What {@link createOps} needs. */
export interface OpsDeps {
  hub: Hub;
  presence: Presence;
  store: MessageStore;
  instanceId: string;
  logger: Logger;
}

/** The operations parts of one server. */
export interface Ops {
  metrics: Metrics;
  /** For `SessionDeps.events`. */
  events: SessionEvents;
  /** For `DeliveryOptions.observer`. */
  observer: DeliveryObserver;
  /** Stops timers and sends what the webhook queues hold (one last attempt). */
  close(): Promise<void>;
}

function entryOf(conn: Connection, instance: string): PresenceEntry {
  return { userId: conn.userId, clientName: conn.clientName, since: conn.since, instance };
}

/** Creates the metrics, webhooks and presence hooks of a server. */
export function createOps(config: Config, deps: OpsDeps): Ops {
  const { hub, presence, store, instanceId, logger } = deps;
  const metrics = new Metrics();
  const webhooks = new Webhooks(config.server.webhooks as WebhookConfig[], {
    logger: logger.child("webhooks"),
    metrics,
  });
  const activity = new UserActivity({
    presence,
    graceSeconds: config.server.offlineGraceSeconds,
    emit: (type, data) => webhooks.emit(type, data),
    logger: logger.child("webhooks"),
  });
  addGauges(metrics, hub, store, webhooks);
  const connLogger = logger.child("conn");
  const warn = (what: string) => (error: unknown) => logger.warn(what, { error });
  let open = 0;
  const events: SessionEvents = {
    answered: (type, code) => metrics.frameAnswered(type, code),
    registered(conn) {
      connLogger.info("Registered", { userId: conn.userId, clientName: conn.clientName });
      presence.add(entryOf(conn, instanceId)).catch(warn("Presence add failed"));
      activity.registered(conn.userId, conn.clientName);
    },
    disconnected(conn) {
      connLogger.info("Disconnected", { userId: conn.userId, clientName: conn.clientName });
      presence.remove(entryOf(conn, instanceId)).catch(warn("Presence remove failed"));
      activity.disconnected(conn.userId, hub.isOnline(conn.userId));
    },
    refused: (reason) => metrics.rejected(reason),
    rateLimited: () => metrics.rateLimited.inc(),
    openChanged(delta) {
      open += delta;
      metrics.connectionsOpen.set({}, open);
    },
  };
  const observer: DeliveryObserver = {
    sent: (count, acceptedAt) => metrics.framesSent(count, acceptedAt),
  };
  // Only when a webhook wants it: the delivery path then skips its per-recipient online check.
  if (webhooks.wants("message.offline")) {
    observer.storedForOffline = offlineWebhook(presence, webhooks, warn);
  }
  return {
    metrics,
    events,
    observer,
    async close() {
      activity.close();
      await webhooks.close();
    },
  };
}

/** The gauges read at scrape time. */
function addGauges(metrics: Metrics, hub: Hub, store: MessageStore, webhooks: Webhooks): void {
  metrics.addGauge({
    name: "im_connections_registered",
    help: "Registered connections on this instance.",
    read: () => hub.size,
  });
  metrics.addGauge({
    name: "im_users_online",
    help: "Users with at least one registered connection on this instance.",
    read: () => hub.userCount,
  });
  metrics.addGauge({
    name: "im_pending_offline_frames",
    help: "Stored (recipient, message) pairs not yet acknowledged, read from storage.",
    read: () => store.pendingCount(),
  });
  metrics.addGauge({
    name: "im_webhook_events_queued",
    help: "Webhook events waiting to be sent, over every webhook.",
    read: () => webhooks.queued,
  });
}

/** The `message.offline` webhook: recipients offline on every instance, found in the background. */
function offlineWebhook(
  presence: Presence,
  webhooks: Webhooks,
  warn: (what: string) => (error: unknown) => void,
): (userIds: string[], message: Outgoing) => void {
  return (userIds, message) => {
    // The hub said offline here; the presence knows every instance.
    presence.lookup(userIds).then((found) => {
      const offline = userIds.filter((user) => !found.has(user));
      if (offline.length === 0) return;
      let frame: unknown;
      try {
        frame = JSON.parse(message.text);
      } catch {
        frame = undefined;
      }
      webhooks.emit("message.offline", {
        userIds: offline,
        from: message.sender,
        messageId: message.id,
        messageType: message.type,
        frame,
      });
    }).catch(warn("Presence lookup for message.offline failed"));
  };
}
