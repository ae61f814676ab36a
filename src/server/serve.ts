/**
 * The front door: one `Deno.serve` listener for HTTP and the WebSocket
 * upgrade on `websocket.url`:`websocket.port`.
 *
 * @module
 */
import type { Config } from "../config/schema.ts";
import type { Logger } from "../log.ts";
import type { Router } from "../http/router.ts";
import { jsonError } from "../http/errors.ts";

/** A listening front door. */
export interface Listener {
  /** Base URL, such as `http://127.0.0.1:8081`. */
  url: string;
  port: number;
  /** Stops listening and ends open HTTP requests. */
  shutdown(): Promise<void>;
}

/** Listens on the configured address and hands every request to `router`. */
export async function serve(config: Config, router: Router, logger: Logger): Promise<Listener> {
  const ready = Promise.withResolvers<Deno.NetAddr>();
  const server = Deno.serve({
    hostname: config.websocket.url,
    port: config.websocket.port,
    onListen: (addr) => ready.resolve(addr as Deno.NetAddr),
    onError: (error) => {
      logger.error("Request failed", { error });
      return jsonError(500, "Internal server error");
    },
  }, (request, info) => router.handle(request, (info.remoteAddr as Deno.NetAddr).hostname));
  const addr = await ready.promise;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return { url: `http://${host}:${addr.port}`, port: addr.port, shutdown: () => server.shutdown() };
}
