/**
 * The front door: one listener for HTTP and the WebSocket upgrade on
 * `websocket.url`:`websocket.port` (`transport/http_server.ts`, on
 * `node:http`: docs/TRANSPORT.md says why), and, when
 * `server.metricsAddress` is set, a second `Deno.serve` listener there that
 * serves only the health routes.
 *
 * @module
 */
import type { Config } from "../config/schema.ts";
import type { Logger } from "../log.ts";
import type { Router } from "../http/router.ts";
import { jsonError } from "../http/errors.ts";
import { listen } from "../transport/http_server.ts";
import { LogBudget } from "../util/log_budget.ts";

/** A listening front door. */
export interface Listener {
  /** Base URL, such as `http://127.0.0.1:8081`. */
  url: string;
  port: number;
  /** Base URL of the metrics listener, when `server.metricsAddress` is set. */
  metricsUrl?: string;
  /** Stops listening and ends open HTTP requests. */
  shutdown(): Promise<void>;
}

/** What {@link serve} serves. */
export interface Routes {
  /** Every route of the main port. */
  main: Router;
  /** The routes of `server.metricsAddress`, when set. */
  metrics?: Router;
  /** Told of connections cut by a deadline or refused as malformed (for metrics). */
  onRefused?(reason: string): void;
}

/** `host:port` of `server.metricsAddress`. */
export function parseAddress(address: string): { hostname: string; port: number } {
  const match = address.match(/^\[?([^\]]*)\]?:(\d+)$/);
  if (!match) throw new Error(`Invalid address "${address}": expected host:port`);
  return { hostname: match[1], port: Number(match[2]) };
}

/** Listens on the configured addresses and hands every request to its router. */
export async function serve(config: Config, routes: Routes, logger: Logger): Promise<Listener> {
  const http = logger.child("http");
  const front = await listen({
    hostname: config.websocket.url,
    port: config.websocket.port,
    headerTimeoutSeconds: config.limits.headerTimeoutSeconds,
    keepAliveTimeoutSeconds: config.limits.keepAliveTimeoutSeconds,
    bodyTimeoutSeconds: config.limits.bodyTimeoutSeconds,
    logs: new LogBudget(http, config.log.refusalsPerMinute),
    onCut: routes.onRefused,
    handle: (request, ip) => routes.main.handle(request, ip),
  });
  if (!config.server.metricsAddress || !routes.metrics) {
    return { url: front.url, port: front.port, shutdown: front.shutdown };
  }
  const metricsRouter = routes.metrics;
  const ready = Promise.withResolvers<Deno.NetAddr>();
  let metrics: Deno.HttpServer;
  try {
    metrics = Deno.serve(
      {
        ...parseAddress(config.server.metricsAddress),
        onListen: (addr) => ready.resolve(addr as Deno.NetAddr),
        onError: (error) => {
          http.error("Metrics request failed", { error });
          return jsonError(500, "Internal server error");
        },
      },
      (request, info) => metricsRouter.handle(request, (info.remoteAddr as Deno.NetAddr).hostname),
    );
  } catch (error) {
    await front.shutdown();
    throw new Error(
      `Cannot listen on server.metricsAddress ${config.server.metricsAddress}: ${
        (error as Error).message
      }`,
    );
  }
  const addr = await ready.promise;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return {
    url: front.url,
    port: front.port,
    metricsUrl: `http://${host}:${addr.port}`,
    async shutdown() {
      await front.shutdown();
      await metrics.shutdown();
    },
  };
}
