/**
 * The WebSocket opening handshake as RFC 6455 section 4.2.1 asks the server to
 * check it, and the subprotocol choice of PROTOCOL.md section 10. Pure
 * functions of the request's headers, so every refusal is a clear HTTP answer
 * (400 or 426) rather than an exception in the upgrade.
 *
 * @module
 */

/** The subprotocol this server speaks; chosen whenever a client offers it. */
export const SUBPROTOCOL = "im.v1";

/** Why an upgrade request is refused. */
export interface HandshakeRefusal {
  status: 400 | 426;
  msg: string;
  /** Extra response headers (`Sec-WebSocket-Version` on a 426). */
  headers?: Record<string, string>;
}

/** A token list header (`Connection: keep-alive, Upgrade`) as lower-case names. */
function tokens(value: string | null): string[] {
  return (value ?? "").split(",").map((token) => token.trim().toLowerCase()).filter(Boolean);
}

/** Whether a request asks for a WebSocket (`Upgrade: websocket`), well formed or not. */
export function wantsWebSocket(headers: Headers): boolean {
  return tokens(headers.get("upgrade")).includes("websocket");
}

/** A 16-byte nonce in base64: exactly 24 characters ending in `==`. */
const KEY = /^[A-Za-z0-9+/]{22}==$/;

/**
 * Checks a WebSocket upgrade request; null when it is well formed. A missing or
 * unsupported `Sec-WebSocket-Version` answers 426 with `Sec-WebSocket-Version: 13`
 * (RFC 6455 section 4.4); anything else malformed answers 400.
 *
 * @example
 * ```ts
 * import { checkHandshake } from "./handshake.ts";
 * const refusal = checkHandshake("GET", new Headers({ upgrade: "websocket" }));
 * console.log(refusal?.status); // 426: no Sec-WebSocket-Version
 * ```
 */
export function checkHandshake(method: string, headers: Headers): HandshakeRefusal | null {
  if (method !== "GET") return { status: 400, msg: "A WebSocket upgrade must be a GET" };
  if (!wantsWebSocket(headers)) {
    return { status: 426, msg: "Expected a WebSocket upgrade", headers: { upgrade: "websocket" } };
  }
  if (headers.get("sec-websocket-version")?.trim() !== "13") {
    return {
      status: 426,
      msg: "Unsupported WebSocket version: send Sec-WebSocket-Version: 13",
      headers: { "sec-websocket-version": "13" },
    };
  }
  if (!tokens(headers.get("connection")).includes("upgrade")) {
    return {
      status: 400,
      msg: "Bad WebSocket upgrade: the Connection header must include Upgrade",
    };
  }
  if (!KEY.test(headers.get("sec-websocket-key")?.trim() ?? "")) {
    return {
      status: 400,
      msg: "Bad WebSocket upgrade: Sec-WebSocket-Key must be a base64 16-byte nonce",
    };
  }
  return null;
}

/** The names a client offers in `Sec-WebSocket-Protocol`, in its order. */
export function offeredProtocols(header: string | null): string[] {
  return (header ?? "").split(",").map((name) => name.trim()).filter(Boolean);
}

/**
 * The subprotocol to answer (PROTOCOL.md section 10): `im.v1` when offered,
 * else the first name offered; none (undefined) when none is offered.
 *
 * @example
 * ```ts
 * import { selectProtocol } from "./handshake.ts";
 * console.log(selectProtocol(["foo", "im.v1"])); // "im.v1"
 * console.log(selectProtocol(["chat"])); // "chat"
 * console.log(selectProtocol([])); // undefined
 * ```
 */
export function selectProtocol(offered: Iterable<string>): string | undefined {
  let first: string | undefined;
  for (const name of offered) {
    if (name === SUBPROTOCOL) return name;
    first ??= name;
  }
  return first;
}
