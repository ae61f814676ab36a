/**
 * CORS for the HTTP routes: `server.corsOrigins` lists the browser origins
 * allowed to call them (`*` allows any, without credentials).
 *
 * @module
 */
import { jsonError } from "./errors.ts";

/** Methods a preflight allows. */
const METHODS = "GET, POST, OPTIONS";
/** Request headers a preflight allows. */
const HEADERS = "authorization, content-type, token";

/** Adds CORS headers to the responses of the HTTP routes. */
export class Cors {
  #origins: Set<string>;
  #any: boolean;

  constructor(origins: string[]) {
    this.#origins = new Set(origins);
    this.#any = this.#origins.has("*");
  }

  /** Whether CORS is on (some origin is listed). */
  get enabled(): boolean {
    return this.#origins.size > 0;
  }

  /**
   * Answers a preflight (`OPTIONS` with `Access-Control-Request-Method`): 204
   * with the allowed methods and headers, or 403 for an origin not listed.
   * Returns null for any other request.
   */
  preflight(request: Request): Response | null {
    if (!this.enabled || request.method !== "OPTIONS") return null;
    const origin = request.headers.get("origin");
    if (!origin || !request.headers.has("access-control-request-method")) return null;
    if (!this.#allows(origin)) return jsonError(403, `Origin ${origin} is not allowed`);
    const response = new Response(null, { status: 204 });
    this.#decorate(response.headers, origin);
    response.headers.set("access-control-allow-methods", METHODS);
    response.headers.set("access-control-allow-headers", HEADERS);
    response.headers.set("access-control-max-age", "600");
    return response;
  }

  /**
   * Adds the CORS headers to a route's response when the request's `origin`
   * is allowed. Read the origin before routing: after a WebSocket upgrade the
   * request's headers cannot be read, and the 101 response is left alone.
   */
  apply(origin: string | null, response: Response): Response {
    if (!this.enabled || !origin || response.status === 101) return response;
    if (this.#allows(origin)) this.#decorate(response.headers, origin);
    else response.headers.append("vary", "Origin");
    return response;
  }

  #allows(origin: string): boolean {
    return this.#any || this.#origins.has(origin);
  }

  #decorate(headers: Headers, origin: string) {
    if (this.#origins.has(origin)) {
      headers.set("access-control-allow-origin", origin);
      headers.set("access-control-allow-credentials", "true");
      headers.append("vary", "Origin");
    } else {
      headers.set("access-control-allow-origin", "*");
    }
  }
}
