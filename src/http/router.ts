/**
 * A small route table on URLPattern: method + path → handler.
 *
 * @module
 */
import { HttpError, jsonError } from "./errors.ts";
import type { Logger } from "../log.ts";
import { BackendUnavailableError } from "../core/errors.ts";

/** What a handler gets besides the request. */
export interface RouteContext {
  /** Named groups of the path pattern. */
  params: Record<string, string | undefined>;
  /** The client's IP address. */
  ip: string;
}

/** A route handler. */
export type Handler = (request: Request, context: RouteContext) => Response | Promise<Response>;

interface Route {
  method: string;
  pattern: URLPattern;
  handler: Handler;
}

/** Matches requests against routes in the order added. */
export class Router {
  #routes: Route[] = [];
  #fallbacks: ((request: Request) => Response | Promise<Response> | null)[] = [];

  /** Adds a route; `path` is a URLPattern pathname such as `/app/login/:name`. */
  add(method: string, path: string, handler: Handler): this {
    this.#routes.push({ method, pattern: new URLPattern({ pathname: path }), handler });
    return this;
  }

  /** Adds a handler tried when no route matches; it returns null to pass. */
  fallback(handler: (request: Request) => Response | Promise<Response> | null): this {
    this.#fallbacks.push(handler);
    return this;
  }

  /** Handles a request: the matching route, 405 for a wrong method, else 404. */
  async handle(request: Request, ip: string, logger: Logger): Promise<Response> {
    const url = new URL(request.url);
    let pathMatched = false;
    try {
      for (const route of this.#routes) {
        const match = route.pattern.exec({ pathname: url.pathname });
        if (!match) continue;
        pathMatched = true;
        if (route.method !== request.method) continue;
        return await route.handler(request, { params: match.pathname.groups, ip });
      }
      if (pathMatched) return jsonError(405, `Method ${request.method} is not allowed here`);
      for (const fallback of this.#fallbacks) {
        const response = await fallback(request);
        if (response) return response;
      }
      return jsonError(404, `No route for ${url.pathname}`);
    } catch (error) {
      if (error instanceof HttpError) return jsonError(error.status, error.message, error.headers);
      logger.error("Route failed", { path: url.pathname, error });
      if (error instanceof BackendUnavailableError) return jsonError(503, error.message);
      return jsonError(500, "Internal server error");
    }
  }
}
