/**
 * The middleware of the HTTP front door, each a factory `(options) => Middleware`:
 * CORS, the shutdown gate, and the API-key check of the business routes
 * (which also counts requests per key for the metrics).
 *
 * @module
 */
import type { Middleware } from "./router.ts";
import { jsonError } from "./errors.ts";
import type { Cors } from "./cors.ts";
import { type ApiKey, requireApiKey } from "./credentials.ts";

/** CORS headers on every answer, and preflights answered (see {@link Cors}). */
export function cors(policy: Cors): Middleware {
  return async (request, _context, next) => {
    if (!policy.enabled) return next();
    const preflight = policy.preflight(request);
    if (preflight) return preflight;
    // Read before routing: after a WebSocket upgrade the request's headers are gone.
    const origin = request.headers.get("origin");
    return policy.apply(origin, await next());
  };
}

/** Once `accepting()` is false, 503 for everything but the paths in `alwaysOpen`. */
export function shutdownGate(accepting: () => boolean, alwaysOpen: readonly string[]): Middleware {
  const open = new Set(alwaysOpen);
  return (_request, context, next) => {
    if (accepting() || open.has(context.path)) return next();
    return jsonError(503, "Server is shutting down");
  };
}

/**
 * 401 without a valid API key; otherwise names the key in the context and
 * reports the request (`onRequest(keyName, path)`, for metrics).
 */
export function apiKeys(
  keys: readonly ApiKey[],
  onRequest?: (keyName: string, path: string) => void,
): Middleware {
  return (request, context, next) => {
    context.apiKey = requireApiKey(request, keys);
    onRequest?.(context.apiKey, context.path);
    return next();
  };
}
