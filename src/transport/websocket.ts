/**
 * The only code that touches a WebSocket implementation: npm `ws` on the raw
 * socket of a `node:http` upgrade (why: docs/TRANSPORT.md). It upgrades a
 * request the front door (`transport/http_server.ts`) holds the socket of, and
 * maps the socket's events onto a {@link SocketEvents} (in the server, a
 * `ClientSession`). No policy lives here but the transport's own: a message
 * over `maxFrameBytes` is cut while it arrives (1009, counting every
 * fragment), and a peer that answers no ping is closed (1001).
 *
 * @module
 */
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { Buffer } from "node:buffer";
// @ts-types="npm:@types/ws@8"
import type { WebSocket as Ws, WebSocketServer } from "ws";
import type { SocketPort } from "../core/client_session.ts";
import { selectProtocol } from "./handshake.ts";

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

/** Milliseconds a closed socket has to finish its close handshake before it is cut. */
const CLOSE_GRACE_MS = 3000;

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

/** `ws`, loaded by {@link loadWebSocket}: it reads environment variables at import. */
let Server: typeof WebSocketServer | undefined;

/**
 * Loads `ws`. The front door calls it before listening, so that commands that
 * serve nothing (`hash-password`) need no permission for what `ws` reads at
 * import (`WS_NO_BUFFER_UTIL`, `WS_NO_UTF_8_VALIDATE`).
 */
export async function loadWebSocket(): Promise<void> {
  Server ??= ((await import("ws")) as { WebSocketServer: typeof WebSocketServer }).WebSocketServer;
}

/** One `ws` server (no listener of its own) per message cap. */
const servers = new Map<number, WebSocketServer>();

function serverFor(maxPayload: number): WebSocketServer {
  let server = servers.get(maxPayload);
  if (!server) {
    if (!Server) throw new Error("Cannot upgrade: loadWebSocket() was not awaited");
    server = new Server({
      noServer: true,
      maxPayload,
      perMessageDeflate: false,
      clientTracking: false,
      // Validated while decoding instead (one pass over the bytes, not two).
      skipUTF8Validation: true,
      handleProtocols: (offered: Set<string>) => selectProtocol(offered) ?? false,
    });
    servers.set(maxPayload, server);
  }
  return server;
}

/**
 * Upgrades `request` (already checked by the route, see `transport/handshake.ts`)
 * and connects the socket to the events `start` returns for its port. The
 * response it returns only tells the front door the socket was taken over.
 */
export function acceptWebSocket(
  request: Request,
  options: AcceptOptions,
  start: (port: SocketPort) => SocketEvents,
): Response {
  const raw = held.get(request);
  if (!raw) throw new Error("Cannot upgrade: the request has no raw socket from the front door");
  held.delete(request);
  serverFor(options.maxFrameBytes).handleUpgrade(
    raw.req,
    raw.socket,
    raw.head,
    (ws) => connect(ws, raw.socket, options, start),
  );
  const response = new Response(null, { status: 204 });
  upgraded.add(response);
  return response;
}

function connect(
  ws: Ws,
  socket: Duplex,
  options: AcceptOptions,
  start: (port: SocketPort) => SocketEvents,
): void {
  let cut: ReturnType<typeof setTimeout> | undefined;
  const cutSoon = () => cut ??= setTimeout(() => ws.terminate(), CLOSE_GRACE_MS);
  const events = start({
    send(text) {
      // One framed buffer, one write: ws.send corks, writes header and payload
      // apart and uncorks, which costs more per frame under Deno's node:net.
      // Safe beside ws's own writes: without compression its sender never queues.
      if (ws.readyState === ws.OPEN) socket.write(textFrame(text));
    },
    close(code, reason) {
      if (ws.readyState > ws.OPEN) return;
      try {
        ws.close(code, reason);
      } catch {
        // Already closing.
      }
      cutSoon();
    },
    get bufferedAmount() {
      return ws.bufferedAmount;
    },
    get isOpen() {
      return ws.readyState === ws.OPEN;
    },
  });
  const beat = heartbeat(ws, options.idleTimeoutSeconds, cutSoon);
  let done = false;
  ws.on("message", (data: Buffer, isBinary: boolean) => {
    beat.seen = true;
    if (isBinary) return events.receiveBinary();
    let text: string;
    try {
      text = utf8.decode(data);
    } catch {
      options.refused?.("protocol_error");
      ws.close(1007, "text is not UTF-8");
      return cutSoon();
    }
    events.receive(text);
  });
  ws.on("pong", () => beat.seen = true);
  ws.on("ping", () => beat.seen = true);
  // ws has already sent the close frame (1009 too large, 1007 bad UTF-8, 1002
  // bad framing) and would now read and discard for up to 30 s: stop reading
  // (the peer's TCP window fills instead of our memory) and cut it soon.
  ws.on("error", (error: Error & { code?: string }) => {
    options.refused?.(
      error.code === "WS_ERR_UNSUPPORTED_MESSAGE_LENGTH" ? "frame_too_large" : "protocol_error",
    );
    setTimeout(() => socket.pause(), 0);
    socket.end();
    cutSoon();
  });
  const finish = () => {
    if (done) return;
    done = true;
    events.closed();
  };
  ws.on("close", () => {
    clearTimeout(cut);
    beat.stop();
    finish();
  });
  // The peer's close frame ends the session at once, as it did on Deno's
  // socket; ws itself reports "close" only once TCP is gone. (`_receiver` is
  // ws's frame parser; "conclude" is its close-frame event.)
  (ws as unknown as { _receiver?: { once(event: string, f: () => void): void } })._receiver
    ?.once("conclude", finish);
  events.opened();
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** An unmasked, final text frame holding `text` (RFC 6455 section 5.2), header and payload in one buffer. */
export function textFrame(text: string): Buffer {
  const n = Buffer.byteLength(text);
  const head = n < 126 ? 2 : n < 65536 ? 4 : 10;
  const frame = Buffer.allocUnsafe(head + n);
  frame[0] = 0x81;
  if (n < 126) {
    frame[1] = n;
  } else if (n < 65536) {
    frame[1] = 126;
    frame.writeUInt16BE(n, 2);
  } else {
    frame[1] = 127;
    frame.writeUInt32BE(Math.floor(n / 2 ** 32), 2);
    frame.writeUInt32BE(n >>> 0, 6);
  }
  frame.write(text, head, "utf8");
  return frame;
}

/** A socket's liveness, checked by its group's timer. */
interface Beat {
  seen: boolean;
  pinged: boolean;
  ws: Ws;
  cutSoon(): void;
}

/** Sockets with the same idle timeout share one timer (every half timeout). */
const groups = new Map<number, { beats: Set<Beat>; timer: ReturnType<typeof setInterval> }>();

function heartbeat(
  ws: Ws,
  idleSeconds: number,
  cutSoon: () => void,
): { seen: boolean; stop(): void } {
  if (idleSeconds <= 0) return { seen: true, stop() {} };
  const ms = idleSeconds * 500;
  let group = groups.get(ms);
  if (!group) {
    const beats = new Set<Beat>();
    group = { beats, timer: setInterval(() => tick(beats), ms) };
    groups.set(ms, group);
  }
  const beat: Beat = { seen: true, pinged: false, ws, cutSoon };
  const { beats, timer } = group;
  beats.add(beat);
  return Object.assign(beat, {
    stop() {
      beats.delete(beat);
      if (beats.size === 0 && groups.get(ms)?.timer === timer) {
        clearInterval(timer);
        groups.delete(ms);
      }
    },
  });
}

/** Pings a socket silent for a half timeout; closes one silent since its ping. */
function tick(beats: Set<Beat>) {
  for (const beat of beats) {
    if (beat.seen) {
      beat.seen = false;
      beat.pinged = false;
    } else if (!beat.pinged) {
      beat.pinged = true;
      try {
        beat.ws.ping();
      } catch {
        // Closing.
      }
    } else if (beat.ws.readyState === beat.ws.OPEN) {
      beat.ws.close(1001, "No response from ping frame.");
      beat.cutSoon();
    }
  }
}
