/**
 * The WebSocket route (`/{websocket.context}`): who may upgrade (a WebSocket
 * request, while the server accepts work, from an allowed Origin, within the
 * per-address connection cap), then one {@link ClientSession} per socket.
 *
 * @module
 */
import { jsonError } from "./errors.ts";
import type { Handler } from "./router.ts";
import { ClientSession, type SessionDeps } from "../core/client_session.ts";
import { acceptWebSocket } from "../transport/websocket.ts";
import { checkHandshake } from "../transport/handshake.ts";

/** What the WebSocket route needs. */
export interface WebSocketRouteDeps {
  session: SessionDeps;
  /** `websocket.allowedOrigins`; any Origin when empty. */
  allowedOrigins: readonly string[];
  /** `limits.maxConnectionsPerIp`. */
  maxConnectionsPerIp: number;
  /** `websocket.idleTimeoutSeconds`. */
  idleTimeoutSeconds: number;
  /** `limits.maxFrameBytes`: the transport cuts a longer message while it arrives. */
  maxFrameBytes: number;
}

/** The handler of the WebSocket route. */
export function websocketRoute(deps: WebSocketRouteDeps): Handler {
  const perIp = new Map<string, number>();
  const { events } = deps.session;
  const refuse = (reason: string, status: number, msg: string) => {
    events.refused?.(reason);
    return jsonError(status, msg);
  };
  return (request, { ip }) => {
    const bad = checkHandshake(request.method, request.headers);
    if (bad) {
      const response = jsonError(bad.status, bad.msg);
      for (const [name, value] of Object.entries(bad.headers ?? {})) {
        response.headers.set(name, value);
      }
      return response;
    }
    if (!deps.session.accepting()) {
      return refuse("shutting_down", 503, "Server is shutting down");
    }
    const origin = request.headers.get("origin");
    if (origin && deps.allowedOrigins.length > 0 && !deps.allowedOrigins.includes(origin)) {
      return refuse("origin", 403, `Origin ${origin} is not allowed`);
    }
    const count = perIp.get(ip) ?? 0;
    if (count >= deps.maxConnectionsPerIp) {
      return refuse("ip_limit", 429, "Too many connections from this address");
    }
    const options = {
      idleTimeoutSeconds: deps.idleTimeoutSeconds,
      maxFrameBytes: deps.maxFrameBytes,
      refused: events.refused,
    };
    return acceptWebSocket(request, options, (port) => {
      // Counted once the socket is ours (a peer gone during the upgrade never is).
      perIp.set(ip, (perIp.get(ip) ?? 0) + 1);
      const session = new ClientSession(deps.session, port);
      return {
        opened: () => session.opened(),
        receive: (text) => session.receive(text),
        receiveBinary: () => session.receiveBinary(),
        closed() {
          const left = (perIp.get(ip) ?? 1) - 1;
          if (left <= 0) perIp.delete(ip);
          else perIp.set(ip, left);
          session.closed();
        },
      };
    });
  };
}
