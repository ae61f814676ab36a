/**
 * A small route table on URLPattern: method + path → handler, with middleware
 * by path prefix (CORS, the shutdown gate, API keys) run before the route.
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
  /** The request's path. */
  path: string;
  /** Name of the API key the request carries (set by the API-key middleware). */
  apiKey?: string;
}

/** A route handler. */
export type Handler = (request: Request, context: RouteContext) => Response | Promise<Response>;

/** Runs before the route; calls `next` to go on, or answers itself. */
export type Middleware = (
  request: Request,
  context: RouteContext,
  next: () => Promise<Response>,
) => Response | Promise<Response>;

interface Route {
  method: string;
  pattern: URLPattern;
  handler: Handler;
}

/** Matches requests against routes in the order added. */
export class Router {
  #routes: Route[] = [];
  #middleware: { prefix: string; run: Middleware }[] = [];
  #fallbacks: ((request: Request) => Response | Promise<Response> | null)[] = [];
  #logger: Logger;

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  /** Adds a route; `path` is a URLPattern pathname such as `/app/login/:name`. */
  add(method: string, path: string, handler: Handler): this {
    this.#routes.push({ method, pattern: new URLPattern({ pathname: path }), handler });
    return this;
  }

  /** Runs `middleware` (in the order added) for every request whose path starts with `prefix`. */
  use(prefix: string, middleware: Middleware): this {
    this.#middleware.push({ prefix, run: middleware });
    return this;
  }

  /** Adds a handler tried when no route matches; it returns null to pass. */
  fallback(handler: (request: Request) => Response | Promise<Response> | null): this {
    this.#fallbacks.push(handler);
    return this;
  }

  /** Handles a request: middleware, then the matching route, 405 for a wrong method, else 404. */
  handle(request: Request, ip: string): Promise<Response> {
    const path = new URL(request.url).pathname;
    const context: RouteContext = { params: {}, ip, path };
    const chain = this.#middleware.filter(({ prefix }) => path.startsWith(prefix));
    const step = (index: number): Promise<Response> =>
      this.#guard(
        path,
        () =>
          index < chain.length
            ? chain[index].run(request, context, () => step(index + 1))
            : this.#route(request, context),
      );
    return step(0);
  }

  async #route(request: Request, context: RouteContext): Promise<Response> {
    let pathMatched = false;
    for (const route of this.#routes) {
      const match = route.pattern.exec({ pathname: context.path });
      if (!match) continue;
      pathMatched = true;
      if (route.method !== request.method) continue;
      context.params = match.pathname.groups;
      return await route.handler(request, context);
    }
    if (pathMatched) return jsonError(405, `Method ${request.method} is not allowed here`);
    for (const fallback of this.#fallbacks) {
      const response = await fallback(request);
      if (response) return response;
    }
    return jsonError(404, `No route for ${context.path}`);
  }

  /** Runs one step, turning what it throws into the JSON error answer. */
  async #guard(path: string, run: () => Response | Promise<Response>): Promise<Response> {
    try {
      return await run();
    } catch (error) {
      if (error instanceof HttpError) return jsonError(error.status, error.message);
      this.#logger.error("Route failed", { path, error });
      if (error instanceof BackendUnavailableError) return jsonError(503, error.message);
      return jsonError(500, "Internal server error");
    }
  }
}
