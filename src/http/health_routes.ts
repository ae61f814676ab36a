/**
 * Health routes for load balancers and monitoring: `/healthz` (the process
 * answers), `/readyz` (it accepts work and its storage answers) and
 * `/metrics` (Prometheus text). They stay open during shutdown.
 *
 * @module
 */
import { json, jsonError } from "./errors.ts";
import type { Router } from "./router.ts";
import { requireKey } from "./credentials.ts";
import type { MessageStore } from "../core/store.ts";
import type { Metrics } from "../ops/metrics.ts";
import type { Logger } from "../log.ts";
import { withTimeout } from "../util/deadline.ts";

/** The paths of the health routes (open while shutting down). */
export const HEALTH_PATHS = ["/healthz", "/readyz", "/metrics"] as const;

/** What the health routes need. */
export interface HealthRouteDeps {
  store: MessageStore;
  metrics: Metrics;
  logger: Logger;
  /** Bearer key that guards `/metrics`; open when absent. */
  metricsKey?: string;
  /** False once shutdown began. */
  accepting(): boolean;
  /** Whether to serve `/metrics` (not on the main port when `server.metricsAddress` is set). @default true */
  serveMetrics?: boolean;
  /** Details `/readyz` adds when there are any (plugins that failed to load). */
  details?(): Record<string, unknown> | undefined;
  /** Milliseconds the storage check of `/readyz` may take. @default 2000 */
  readyTimeoutMs?: number;
}

/** Adds `/healthz`, `/readyz` and `/metrics`. */
export function addHealthRoutes(router: Router, deps: HealthRouteDeps): void {
  const readyTimeoutMs = deps.readyTimeoutMs ?? 2000;

  router.add("GET", "/healthz", () => json({ data: "ok" }));

  router.add("GET", "/readyz", async () => {
    if (!deps.accepting()) return jsonError(503, "Server is shutting down");
    try {
      await withTimeout(
        deps.store.pendingCount(),
        readyTimeoutMs,
        `No answer within ${readyTimeoutMs} ms`,
      );
    } catch (error) {
      deps.logger.warn("Readiness check: storage is not reachable", { error });
      return jsonError(503, "Storage is not reachable");
    }
    const details = deps.details?.();
    return json(details ? { data: "ready", details } : { data: "ready" });
  });

  if (deps.serveMetrics === false) return;
  router.add("GET", "/metrics", async (request) => {
    if (deps.metricsKey !== undefined) requireKey(request, deps.metricsKey, "metrics key");
    return new Response(await deps.metrics.render(), {
      headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
    });
  });
}
