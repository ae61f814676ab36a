/**
 * The only code that touches the runtime's WebSocket API: upgrades a request
 * and maps the socket's events onto a {@link SocketEvents} (in the server, a
 * `ClientSession`). No policy lives here: limits and answers are the session's.
 *
 * @module
 */
import type { SocketPort } from "../core/client_session.ts";

/** What happens on a socket, as the session hears it. */
export interface SocketEvents {
  opened(): void;
  receive(text: string): void;
  receiveBinary(): void;
  /** Called once, however the socket ended. */
  closed(): void;
}

/** Options of {@link acceptWebSocket}. */
export interface AcceptOptions {
  /** Seconds without incoming data before a ping; 0 sends none. */
  idleTimeoutSeconds: number;
}

/**
 * Upgrades `request` (already checked by the route) and connects the socket
 * to the events `start` returns for its port.
 */
export function acceptWebSocket(
  request: Request,
  options: AcceptOptions,
  start: (port: SocketPort) => SocketEvents,
): Response {
  const { socket, response } = Deno.upgradeWebSocket(request, {
    idleTimeout: options.idleTimeoutSeconds,
  });
  const events = start({
    send(text) {
      if (socket.readyState === WebSocket.OPEN) socket.send(text);
    },
    close(code, reason) {
      try {
        if (socket.readyState <= WebSocket.OPEN) socket.close(code, reason);
      } catch {
        // Already closing.
      }
    },
    get bufferedAmount() {
      return socket.bufferedAmount;
    },
    get isOpen() {
      return socket.readyState === WebSocket.OPEN;
    },
  });
  let done = false;
  socket.onopen = () => events.opened();
  socket.onmessage = (event) => {
    if (typeof event.data === "string") events.receive(event.data);
    else events.receiveBinary();
  };
  socket.onerror = () => {};
  // A ping timeout reports close twice (1001, then 1005): pass on the first.
  socket.onclose = () => {
    if (done) return;
    done = true;
    events.closed();
  };
  return response;
}
