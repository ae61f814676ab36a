/**
 * The only code that touches a WebSocket: our own RFC 6455 framing
 * (`ws_connection.ts`) on the raw socket of a `node:http` upgrade (why:
 * docs/TRANSPORT.md). It upgrades a request the front door
 * (`transport/http_server.ts`) holds the socket of, and maps the socket's
 * events onto a {@link SocketEvents} (in the server, a `ClientSession`). No
 * policy lives here but the transport's own: a message over `maxFrameBytes` is
 * cut while it arrives (1009, counting every fragment), and a peer that
 * answers no ping is closed (1001).
 *
 * @module
 */
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import type { Buffer } from "node:buffer";
import type { SocketPort } from "../core/client_session.ts";
import { offeredProtocols, selectProtocol } from "./handshake.ts";
import { switchingProtocols, WsConnection } from "./ws_connection.ts";

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
  /** Seconds without incoming data before a ping; twice that closes (1001); 0 sends none. */
  idleTimeoutSeconds: number;
  /** Largest message in bytes, all its fragments counted; a larger one closes with 1009. */
  maxFrameBytes: number;
  /** Told why the transport itself closed a socket (`frame_too_large`, `protocol_error`). */
  refused?(reason: string): void;
}

/** The raw upgrade of a request, as `node:http`'s `upgrade` event gives it. */
export interface RawUpgrade {
  req: IncomingMessage;
  socket: Duplex;
  head: Buffer;
}

const held = new WeakMap<Request, RawUpgrade>();
const upgraded = new WeakSet<Response>();

/** Called by the front door: `request` is an upgrade whose raw socket is `raw`. */
export function holdUpgrade(request: Request, raw: RawUpgrade): void {
  held.set(request, raw);
}

/** Whether `response` stands for a socket {@link acceptWebSocket} took over (nothing to write). */
export function isUpgraded(response: Response): boolean {
  return upgraded.has(response);
}

/**
 * Upgrades `request` (already checked by the route, see `transport/handshake.ts`)
 * and connects the socket to the events `start` returns for its port; `start`
 * is not called when the peer left during the upgrade. The response it returns
 * only tells the front door the socket was taken over.
 */
export function acceptWebSocket(
  request: Request,
  options: AcceptOptions,
  start: (port: SocketPort) => SocketEvents,
): Response {
  const raw = held.get(request);
  if (!raw) throw new Error("Cannot upgrade: the request has no raw socket from the front door");
  held.delete(request);
  const response = new Response(null, { status: 204 });
  upgraded.add(response);
  const { socket, head } = raw;
  if (!socket.writable || socket.destroyed) {
    socket.destroy();
    return response;
  }
  const key = request.headers.get("sec-websocket-key")!.trim();
  const protocol = selectProtocol(offeredProtocols(request.headers.get("sec-websocket-protocol")));
  socket.write(switchingProtocols(key, protocol));
  // The connection reports to the session, which needs the connection's port first.
  const link: { events?: SocketEvents; beat?: Beat } = {};
  const conn: WsConnection = new WsConnection(socket, {
    text: (text) => link.events!.receive(text),
    binary: () => link.events!.receiveBinary(),
    activity() {
      if (link.beat) link.beat.seen = true;
    },
    refused: (code) => options.refused?.(code === 1009 ? "frame_too_large" : "protocol_error"),
    closed() {
      link.beat?.stop();
      link.events?.closed();
    },
  }, options.maxFrameBytes);
  const events = link.events = start({
    send: (text) => conn.send(text),
    close: (code, reason) => conn.close(code, reason),
    get bufferedAmount() {
      return conn.bufferedAmount;
    },
    get isOpen() {
      return conn.isOpen;
    },
  });
  link.beat = heartbeat(conn, options.idleTimeoutSeconds);
  events.opened();
  conn.start(head);
  return response;
}

/** A socket's liveness, checked by its group's timer. */
interface Beat {
  seen: boolean;
  pinged: boolean;
  conn: WsConnection;
  stop(): void;
}

/** Sockets with the same idle timeout share one timer (every half timeout). */
const groups = new Map<number, { beats: Set<Beat>; timer: ReturnType<typeof setInterval> }>();

function heartbeat(conn: WsConnection, idleSeconds: number): Beat | undefined {
  if (idleSeconds <= 0) return undefined;
  const ms = idleSeconds * 500;
  let group = groups.get(ms);
  if (!group) {
    const beats = new Set<Beat>();
    group = { beats, timer: setInterval(() => tick(beats), ms) };
    groups.set(ms, group);
  }
  const { beats, timer } = group;
  const beat: Beat = {
    seen: true,
    pinged: false,
    conn,
    stop() {
      beats.delete(beat);
      if (beats.size === 0 && groups.get(ms)?.timer === timer) {
        clearInterval(timer);
        groups.delete(ms);
      }
    },
  };
  beats.add(beat);
  return beat;
}

/** Pings a socket silent for a half timeout; closes one silent since its ping. */
function tick(beats: Set<Beat>) {
  for (const beat of beats) {
    if (beat.seen) {
      beat.seen = false;
      beat.pinged = false;
    } else if (!beat.pinged) {
      beat.pinged = true;
      beat.conn.ping();
    } else {
      beat.conn.close(1001, "No response from ping frame.");
    }
  }
}
