/**
 * Errors the core knows by type.
 *
 * @module
 */

/**
 * A shared backend (message store, broker, session store) cannot be reached
 * right now. Its message is written for clients: the session answers it as the
 * `msg` of a 400 FAILED instead of "Internal error".
 *
 * @example Usage
 * ```ts
 * import { BackendUnavailableError } from "./errors.ts";
 *
 * const error = new BackendUnavailableError("Storage unavailable: Redis is not reachable");
 * console.log(error.message);
 * ```
 */
export class BackendUnavailableError extends Error {
  override name = "BackendUnavailableError";
}
