/**
 * The only code that touches Deno's WebSocket API: upgrades a request, adapts
 * the socket for a {@link ClientSession}, and enforces the per-socket limits
 * (frame size, register timeout, slow consumers, connections per IP).
 *
 * @module
 */
import { ClientSession, type SessionDeps } from "../core/session.ts";
import { encodeSendStatus } from "../protocol/frame.ts";
import { StatusCode } from "../protocol/codes.ts";
import type { Logger } from "../log.ts";
import { ConnectionRateLimit, type RateLimitOptions } from "../ops/rate_limit.ts";

/** Options of {@link WebSocketTransport}. */
export interface TransportOptions {
  deps: SessionDeps;
  logger: Logger;
  maxFrameBytes: number;
  maxBufferedBytes: number;
  registerTimeoutSeconds: number;
  idleTimeoutSeconds: number;
  maxConnectionsPerIp: number;
  maxConnectionsPerUser: number;
  allowedOrigins: string[];
  /** Frames per connection (token bucket); no limit when absent. */
  rateLimit?: RateLimitOptions;
  /** Called for every connection refused before or at upgrade. */
  onRejected?(reason: string): void;
  /** Called for every frame refused by the rate limit. */
  onRateLimited?(): void;
  /** Called when a socket opens or closes. */
  onOpenChange?(delta: 1 | -1): void;
}

/** An error answer for a refused upgrade. */
export interface Refusal {
  status: number;
  msg: string;
}

/** Upgrades requests to WebSockets and runs a session on each. */
export class WebSocketTransport {
  #options: TransportOptions;
  #perIp = new Map<string, number>();
  #sockets = new Set<WebSocket>();
  #stopped = false;
  /** Waiters of {@link closeAll}. */
  #drained: (() => void)[] = [];

  constructor(options: TransportOptions) {
    this.#options = options;
  }

  /** Number of open sockets. */
  get size(): number {
    return this.#sockets.size;
  }

  /** Upgrades `request`, or returns why it was refused. */
  upgrade(request: Request, ip: string): Response | Refusal {
    const options = this.#options;
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return { status: 426, msg: "Expected a WebSocket upgrade" };
    }
    if (this.#stopped) {
      options.onRejected?.("shutting_down");
      return { status: 503, msg: "Server is shutting down" };
    }
    const origin = request.headers.get("origin");
    if (origin && options.allowedOrigins.length > 0 && !options.allowedOrigins.includes(origin)) {
      options.onRejected?.("origin");
      return { status: 403, msg: `Origin ${origin} is not allowed` };
    }
    const count = this.#perIp.get(ip) ?? 0;
    if (count >= options.maxConnectionsPerIp) {
      options.onRejected?.("ip_limit");
      return { status: 429, msg: "Too many connections from this address" };
    }
    const { socket, response } = Deno.upgradeWebSocket(request, {
      idleTimeout: options.idleTimeoutSeconds,
    });
    this.#perIp.set(ip, count + 1);
    this.#run(socket, ip);
    return response;
  }

  /**
   * Stops accepting: upgrades are refused (503) and frames on open sockets are
   * answered 400 FAILED, so nothing new is accepted while in-flight work ends.
   */
  stopAccepting(): void {
    this.#stopped = true;
  }

  /** Closes every socket with `code`; resolves once they have all closed. */
  closeAll(code: number, reason: string): Promise<void> {
    for (const socket of this.#sockets) safeClose(socket, code, reason);
    if (this.#sockets.size === 0) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#drained.push(resolve);
    return promise;
  }

  #run(socket: WebSocket, ip: string) {
    const options = this.#options;
    const { deps } = options;
    let open = false;
    // Reading bufferedAmount is a call into the runtime: look only after every
    // 64 KiB sent, which bounds the overshoot of the cap by that much.
    let sentSinceCheck = 0;
    const port = {
      send(text: string) {
        if (socket.readyState !== WebSocket.OPEN) return;
        sentSinceCheck += text.length;
        if (sentSinceCheck > 65536) {
          sentSinceCheck = 0;
          if (socket.bufferedAmount > options.maxBufferedBytes) {
            options.onRejected?.("slow_consumer");
            safeClose(socket, 1013, "slow consumer");
            return;
          }
        }
        socket.send(text);
      },
      close: (code: number, reason: string) => {
        // The core closes over a budget (held replay frames, waiting frames) with 1013.
        if (code === 1013 && socket.readyState === WebSocket.OPEN) {
          options.onRejected?.("slow_consumer");
        }
        safeClose(socket, code, reason);
      },
      async drain(): Promise<boolean> {
        // A replay keeps little in flight: its memory is per connection, and 8 replays at
        // once should cost a few MiB, not 8 times half the slow-consumer budget.
        const room = Math.min(options.maxBufferedBytes / 2, REPLAY_ROOM);
        while (socket.readyState === WebSocket.OPEN && socket.bufferedAmount > room) {
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
        sentSinceCheck = 0;
        return socket.readyState === WebSocket.OPEN;
      },
      buffered: () => socket.bufferedAmount,
    };
    const session = new ClientSession(deps, port);
    const limiter = options.rateLimit ? new ConnectionRateLimit(options.rateLimit) : undefined;
    const refuse = (data: string, msg: string) => {
      const { id, type } = peek(data);
      port.send(encodeSendStatus(id, session.connection?.userId ?? "", StatusCode.FAILED, msg));
      deps.events.answered?.(type, StatusCode.FAILED);
    };
    const timer = setTimeout(() => {
      if (session.connection) return;
      options.onRejected?.("register_timeout");
      safeClose(socket, 1008, "register timeout");
    }, options.registerTimeoutSeconds * 1000);
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      this.#sockets.delete(socket);
      if (this.#sockets.size === 0) { for (const resolve of this.#drained.splice(0)) resolve(); }
      const left = (this.#perIp.get(ip) ?? 1) - 1;
      if (left <= 0) this.#perIp.delete(ip);
      else this.#perIp.set(ip, left);
      if (open) options.onOpenChange?.(-1);
      session.closed();
    };
    socket.onopen = () => {
      open = true;
      this.#sockets.add(socket);
      options.onOpenChange?.(1);
    };
    socket.onmessage = (event) => {
      const data = event.data;
      if (typeof data !== "string") {
        port.send(
          encodeSendStatus(
            "",
            session.connection?.userId ?? "",
            StatusCode.MESSAGE_ERROR,
            "Frames must be text",
          ),
        );
        return;
      }
      // A UTF-16 length of n is at most 3n UTF-8 bytes; measure only when it matters.
      if (data.length * 3 > options.maxFrameBytes && byteLength(data) > options.maxFrameBytes) {
        options.onRejected?.("frame_too_large");
        safeClose(socket, 1009, "frame too large");
        return;
      }
      if (this.#stopped) {
        refuse(data, "Server is shutting down: send it again after reconnecting");
        return;
      }
      const verdict = limiter?.take(data);
      if (verdict === "limited") {
        const { perSecond, burst } = options.rateLimit!;
        options.onRateLimited?.();
        refuse(
          data,
          `Rate limit exceeded: at most ${perSecond} frames per second (burst ${burst})`,
        );
        return;
      }
      if (verdict === "close") {
        options.onRejected?.("rate_limit");
        options.logger.warn("Closing a connection over its rate limit", {
          user: session.connection?.userId,
        });
        safeClose(socket, 1008, "rate limit exceeded");
        return;
      }
      try {
        session.receive(data);
      } catch (error) {
        options.logger.error("Frame handling threw", { error });
      }
    };
    socket.onerror = () => {};
    socket.onclose = finish;
  }
}

const encoder = new TextEncoder();

/** Bytes a replay leaves unsent before it waits for the socket to drain. */
const REPLAY_ROOM = 256 * 1024;

/** The id and type of a frame refused before decoding, for its 9001 answer. */
function peek(text: string): { id: string; type: number } {
  try {
    const value = JSON.parse(text);
    return {
      id: typeof value?.id === "string" ? value.id : "",
      type: Number.isInteger(value?.type) ? value.type : 0,
    };
  } catch {
    return { id: "", type: 0 };
  }
}

function byteLength(text: string): number {
  return encoder.encode(text).length;
}

function safeClose(socket: WebSocket, code: number, reason: string) {
  try {
    if (socket.readyState === WebSocket.OPEN || socket.readyState === WebSocket.CONNECTING) {
      socket.close(code, reason);
    }
  } catch {
    // Already closing.
  }
}
