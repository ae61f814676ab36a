/**
 * Login CSRF: a page on another site can POST a form to a login route (a form
 * needs no CORS preflight) and log the victim's browser in as the attacker.
 * This middleware refuses a login whose `Origin` is neither the server's own
 * nor listed in `server.corsOrigins` (`*` does not count: it allows reading
 * answers, not logging in from anywhere). Requests without an `Origin` (curl,
 * business backends, apps) pass.
 *
 * @module
 */
import type { Middleware } from "./router.ts";
import { jsonError } from "./errors.ts";

/** Refuses POSTs from a foreign Origin (403); `allowed` is `server.corsOrigins`. */
export function loginOrigin(allowed: readonly string[]): Middleware {
  const listed = new Set(allowed);
  return (request, _context, next) => {
    const origin = request.headers.get("origin");
    if (request.method !== "POST" || origin === null || listed.has(origin)) return next();
    const host = request.headers.get("host");
    const own = host !== null && (origin === `http://${host}` || origin === `https://${host}`);
    if (own) return next();
    return jsonError(
      403,
      `Login from origin ${origin} is not allowed: add it to server.corsOrigins`,
    );
  };
}
