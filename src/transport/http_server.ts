/**
 * The front door: one `node:http` listener for HTTP and the WebSocket upgrade
 * on one port. `node:http` rather than `Deno.serve` because it hands over the
 * raw socket of a connection and of an upgrade (docs/TRANSPORT.md): that is
 * what lets the server cut a slow request head (`limits.headerTimeoutSeconds`)
 * or body (`limits.bodyTimeoutSeconds`), an idle keep-alive connection (`limits.keepAliveTimeoutSeconds`), and a
 * fragmented WebSocket message while it arrives (`transport/websocket.ts`).
 * Requests reach the routes as web `Request`s and leave as `Response`s.
 *
 * @module
 */
import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import type { Duplex } from "node:stream";
import { Buffer } from "node:buffer";
import { holdUpgrade, isUpgraded } from "./websocket.ts";
import type { LogBudget } from "../util/log_budget.ts";

/** Options of {@link listen}. */
export interface FrontDoorOptions {
  hostname: string;
  port: number;
  /** Seconds a connection has to send a complete request head. */
  headerTimeoutSeconds: number;
  /** Seconds an answered connection may stay idle before its next request head is complete. */
  keepAliveTimeoutSeconds: number;
  /** Seconds a request body has to arrive in full once its head is complete. */
  bodyTimeoutSeconds: number;
  /** Where refusals of malformed input are logged, within a budget. */
  logs: LogBudget;
  /** Told of every connection cut by a deadline (`header_timeout`, `keepalive_timeout`). */
  onCut?(reason: string): void;
  /** Answers a request; an upgrade's route takes the socket over with `acceptWebSocket`. */
  handle(request: Request, ip: string): Promise<Response>;
}

/** A listening front door. */
export interface FrontDoor {
  /** Base URL, such as `http://127.0.0.1:8081`. */
  url: string;
  port: number;
  /** Stops listening, lets requests in progress finish (briefly), and closes every connection. */
  shutdown(): Promise<void>;
}

const BODYLESS = new Set(["GET", "HEAD"]);

/** One timer per socket: a socket that misses its deadline is destroyed. */
class Deadlines {
  #timers = new Map<Socket, ReturnType<typeof setTimeout>>();
  #onCut?: (reason: string) => void;

  constructor(onCut?: (reason: string) => void) {
    this.#onCut = onCut;
  }

  /** Gives `socket` `ms` to get to the next step, replacing its current deadline. */
  arm(socket: Socket, ms: number, reason: string): void {
    this.disarm(socket);
    this.#timers.set(
      socket,
      setTimeout(() => {
        this.#timers.delete(socket);
        this.#onCut?.(reason);
        socket.destroy();
      }, ms),
    );
  }

  /** Runs `then` once the body has arrived, unless another deadline replaced this one. */
  disarmAfter(socket: Socket, done: (end: () => void) => void): void {
    const timer = this.#timers.get(socket);
    done(() => {
      if (this.#timers.get(socket) === timer) this.disarm(socket);
    });
  }

  disarm(socket: Socket): void {
    clearTimeout(this.#timers.get(socket));
    this.#timers.delete(socket);
  }

  clear(): void {
    for (const timer of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
  }
}

/** Listens on `hostname:port`; rejects when the address cannot be bound. */
export async function listen(options: FrontDoorOptions): Promise<FrontDoor> {
  const server = http.createServer();
  // Our own deadlines are the ones that count; node's stay out of their way.
  server.keepAliveTimeout = (options.keepAliveTimeoutSeconds + 5) * 1000;
  const deadlines = new Deadlines(options.onCut);
  const sockets = new Set<Socket>();
  const busy = new Set<Socket>();
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.setNoDelay(true);
    socket.on("error", () => {}); // A reset peer; the close below cleans up.
    socket.on("close", () => {
      deadlines.disarm(socket);
      sockets.delete(socket);
      busy.delete(socket);
    });
    deadlines.arm(socket, options.headerTimeoutSeconds * 1000, "header_timeout");
  });
  server.on("request", onRequest(options, deadlines, busy));
  server.on("upgrade", onUpgrade(options, deadlines));
  server.on("clientError", onClientError(options));
  const addr = await bind(server, options);
  const host = addr.address.includes(":") ? `[${addr.address}]` : addr.address;
  return {
    url: `http://${host}:${addr.port}`,
    port: addr.port,
    async shutdown() {
      server.close();
      for (const socket of sockets) if (!busy.has(socket)) socket.destroy();
      for (let waited = 0; busy.size > 0 && waited < 2000; waited += 10) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      for (const socket of sockets) socket.destroy();
      deadlines.clear();
      // Let the destroyed sockets' close callbacks run.
      await new Promise((resolve) => setTimeout(resolve, 0));
    },
  };
}

/** Plain HTTP requests: body and keep-alive deadlines around the route's answer. */
function onRequest(options: FrontDoorOptions, deadlines: Deadlines, busy: Set<Socket>) {
  return (req: http.IncomingMessage, res: http.ServerResponse) => {
    const socket = req.socket;
    deadlines.disarm(socket);
    busy.add(socket);
    // A body must arrive within its own deadline (a slow body is slowloris too).
    if (!BODYLESS.has(req.method ?? "GET")) {
      deadlines.arm(socket, options.bodyTimeoutSeconds * 1000, "body_timeout");
      deadlines.disarmAfter(socket, (end) => req.once("end", end));
    }
    res.on("close", () => {
      busy.delete(socket);
      if (!socket.destroyed) {
        deadlines.arm(socket, options.keepAliveTimeoutSeconds * 1000, "keepalive_timeout");
      }
    });
    const ip = socket.remoteAddress ?? "";
    let request: Request;
    try {
      request = toRequest(req, options.hostname);
    } catch (error) {
      refuse(options.logs, "bad_request", (error as Error).message, ip);
      res.writeHead(400, { "content-type": "application/json; charset=utf-8" });
      res.end(JSON.stringify({ code: 400, msg: `Bad request: ${(error as Error).message}` }));
      return;
    }
    options.handle(request, ip).then(
      (response) => send(req, res, response),
      () => {
        res.writeHead(500);
        res.end();
      },
    );
  };
}

/** Upgrade requests: the route either takes the socket over or answers on it. */
function onUpgrade(options: FrontDoorOptions, deadlines: Deadlines) {
  return (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    const tcp = socket as Socket;
    deadlines.disarm(tcp);
    const ip = tcp.remoteAddress ?? "";
    let request: Request;
    try {
      request = toRequest(req, options.hostname);
    } catch (error) {
      refuse(options.logs, "bad_request", (error as Error).message, ip);
      writeRaw(socket, new Response(null, { status: 400 }));
      return;
    }
    holdUpgrade(request, { req, socket, head });
    options.handle(request, ip).then(
      (response) => isUpgraded(response) ? undefined : writeRaw(socket, response),
      () => socket.destroy(),
    );
  };
}

/** Bytes that are not HTTP: 400, or 431 for a head over the limit, logged within the budget. */
function onClientError(options: FrontDoorOptions) {
  // Deno's node:http may report one bad request twice: answer and log it once.
  const refused = new WeakSet<Duplex>();
  return (error: Error & { code?: string }, socket: Duplex) => {
    if (refused.has(socket)) return;
    refused.add(socket);
    const tooLarge = error.code === "HPE_HEADER_OVERFLOW";
    refuse(options.logs, "bad_http", error.message, (socket as Socket).remoteAddress ?? "");
    if (!socket.writable) return socket.destroy();
    socket.end(
      tooLarge
        ? "HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
        : "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
    );
  };
}

/** Binds the listener; the same errors as Deno.serve's, so callers need not know node's codes. */
async function bind(server: http.Server, options: FrontDoorOptions): Promise<AddressInfo> {
  const { promise, resolve, reject } = Promise.withResolvers<AddressInfo>();
  const failed = (error: Error & { code?: string }) =>
    reject(
      error.code === "EADDRINUSE"
        ? new Deno.errors.AddrInUse(error.message)
        : error.code === "EADDRNOTAVAIL"
        ? new Deno.errors.AddrNotAvailable(error.message)
        : error,
    );
  server.once("error", failed);
  server.listen(options.port, options.hostname, () => resolve(server.address() as AddressInfo));
  try {
    return await promise;
  } finally {
    server.off("error", failed);
  }
}

/** One refused input on the log, within its budget (an attacker cannot flood it). */
function refuse(logs: LogBudget, kind: string, detail: string, ip: string) {
  logs.write("info", kind, `Refused a malformed request: ${detail}`, { ip });
}

/** The web `Request` of a `node:http` request; its body streams with backpressure. */
function toRequest(req: http.IncomingMessage, hostname: string): Request {
  const target = req.url ?? "";
  if (!target.startsWith("/")) throw new Error(`request target must be a path: ${target}`);
  const headers = new Headers();
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) headers.append(raw[i], raw[i + 1]);
  const host = hostname.includes(":") ? `[${hostname}]` : hostname;
  const url = `http://${host}:${req.socket.localPort}${target}`;
  const method = req.method ?? "GET";
  if (BODYLESS.has(method)) return new Request(url, { method, headers });
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      req.on("data", (chunk: Buffer) => {
        controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
        if ((controller.desiredSize ?? 0) <= 0) req.pause();
      });
      req.on("end", () => controller.close());
      req.on("error", (error) => controller.error(error));
    },
    pull() {
      req.resume();
    },
    cancel() {
      req.destroy();
    },
  }, { highWaterMark: 65536, size: (chunk) => chunk.byteLength });
  return new Request(url, { method, headers, body });
}

/** Writes a route's response (small JSON or console files: read whole, sent with a length). */
async function send(req: http.IncomingMessage, res: http.ServerResponse, response: Response) {
  let body: Uint8Array;
  try {
    body = new Uint8Array(await response.arrayBuffer());
  } catch {
    res.destroy();
    return;
  }
  const headers: Record<string, string | string[]> = {};
  for (const [name, value] of response.headers) {
    if (name !== "set-cookie") headers[name] = value;
  }
  const cookies = response.headers.getSetCookie();
  if (cookies.length > 0) headers["set-cookie"] = cookies;
  headers["content-length"] = String(body.length);
  res.writeHead(response.status, headers);
  res.end(body);
  // A body the route did not read (a 413, a refusal) is not read for it: close instead.
  if (!req.complete) {
    res.once("finish", () => {
      const socket = req.socket;
      socket.end();
      const timer = setTimeout(() => socket.destroy(), 2000);
      socket.once("close", () => clearTimeout(timer));
    });
  }
}

/** Writes a response on a raw socket (a refused upgrade) and closes it. */
async function writeRaw(socket: Duplex, response: Response) {
  const body = Buffer.from(await response.arrayBuffer());
  let head = `HTTP/1.1 ${response.status} ${http.STATUS_CODES[response.status] ?? ""}\r\n`;
  for (const [name, value] of response.headers) head += `${name}: ${value}\r\n`;
  head += `content-length: ${body.length}\r\nconnection: close\r\n\r\n`;
  if (!socket.writable) return socket.destroy();
  socket.end(Buffer.concat([Buffer.from(head), body]));
}
