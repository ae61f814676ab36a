/**
 * HTTP errors: every failure of every route is JSON `{"code", "msg"}`.
 *
 * @module
 */

/** An error with an HTTP status, answered as JSON. */
export class HttpError extends Error {
  override name = "HttpError";
  constructor(readonly status: number, message: string, readonly headers?: HeadersInit) {
    super(message);
  }
}

/** A JSON response. */
export function json(value: unknown, status = 200, headers?: HeadersInit): Response {
  const response = new Response(JSON.stringify(value), {
    status,
    headers: { "content-type": "application/json; charset=utf-8" },
  });
  if (headers) { for (const [k, v] of new Headers(headers)) response.headers.append(k, v); }
  return response;
}

/** The JSON error response `{"code", "msg"}`. */
export function jsonError(status: number, msg: string, headers?: HeadersInit): Response {
  return json({ code: status, msg }, status, headers);
}
