/**
 * The load generator's connections. One class speaks three dialects with the same meaning:
 *
 * - `im`: our server (HTTP login, session, WebSocket, 1000 register, frames, 9001 replies);
 * - `bare`: the bare Deno relay (WebSocket, 1000 register without a session check);
 * - `sio`: the Socket.IO relay, spoken as raw Engine.IO 4 / Socket.IO 5 packets over a
 *   WebSocket (`40{auth}` registers, `42<ack>["m",frame]` sends, `43<ack>[status]` replies), so
 *   the generator costs the same for every target.
 *
 * Frames are built by string concatenation from pre-encoded parts, and incoming frames are read
 * by string search (the `type` and the numeric part of the `id`), never by `JSON.parse`.
 *
 * @module
 */
import { RawWs } from "./raw_ws.ts";

/** Which server a connection talks to. */
export type Dialect = "im" | "bare" | "sio";

/** What the generator needs to know about one incoming frame. */
export interface Incoming {
  /** 9001 for a reply (or a Socket.IO ack), otherwise the frame's type (2001, 9101). */
  type: number;
  /** The numeric part of the id (`m<seq>`), or -1. */
  seq: number;
  /** For a 9001: whether its status is 200. */
  ok: boolean;
}

/** Called for every incoming frame after the connection registered. */
export type FrameHandler = (conn: Conn, frame: Incoming) => void;

const RECEIPT_BODY = JSON.stringify(JSON.stringify({ code: 200, status: "SUCCESS", msg: "ok" }));
const OK_ESCAPED = '\\"code\\":200';
const OK_PLAIN = '"code":200';

/** One registered user connection. */
export class Conn {
  /** Index of this user (u<index+1>). */
  readonly index: number;
  /** userId, `u<index+1>`. */
  readonly userId: string;
  /** Frames sent and not yet answered by a 9001. */
  outstanding = 0;
  #ws!: RawWs;
  #dialect: Dialect;
  #textPrefix = "";
  /** One prefix per recipient when frames go to several targets in turn (`setTargets`). */
  #textPrefixes?: string[];
  #receiptPrefix = "";
  #onFrame: FrameHandler = () => {};

  /** A connection for user `u<index+1>` in a dialect; call `open()` next. */
  constructor(index: number, dialect: Dialect) {
    this.index = index;
    this.userId = `u${index + 1}`;
    this.#dialect = dialect;
  }

  /** Sets the recipients of `sendText` and pre-encodes the frame around the id and timestamp. */
  setTarget(to: string, body: string, type = 2001): void {
    this.#textPrefix =
      `","type":${type},"isSystem":false,"from":"${this.userId}","to":"${to}","body":${
        JSON.stringify(body)
      },"timestamp":`;
    this.#receiptPrefix =
      `","type":9101,"isSystem":false,"from":"${this.userId}","body":${RECEIPT_BODY},"to":"`;
  }

  /** Sends frame `m<seq>` to one of `targets` in turn (by `seq`), each frame to one of them. */
  setTargets(targets: string[], body: string): void {
    this.#textPrefixes = targets.map((to) => {
      this.setTarget(to, body);
      return this.#textPrefix;
    });
  }

  /** Sends text frame `m<seq>` to the target set by `setTarget` (or `setTargets`). */
  sendText(seq: number): void {
    const prefixes = this.#textPrefixes;
    const prefix = prefixes ? prefixes[seq % prefixes.length] : this.#textPrefix;
    const frame = '{"id":"m' + seq + prefix + Date.now() + "}";
    this.#ws.send(this.#dialect === "sio" ? "42" + seq + '["m",' + frame + "]" : frame);
  }

  /** Sends a 200 receipt (9101) for message `m<seq>` sent by `to`. */
  sendReceipt(seq: number, to: string): void {
    const frame = '{"id":"m' + seq + this.#receiptPrefix + to + '"}';
    this.#ws.send(this.#dialect === "sio" ? "42" + seq + '["m",' + frame + "]" : frame);
  }

  /**
   * Opens the WebSocket and registers: `credential` is the sessionId for `im`, ignored
   * otherwise. Resolves when the server accepted the registration.
   */
  async open(origin: string, path: string, credential: string, timeoutMs = 30_000): Promise<void> {
    const { hostname, port } = new URL(origin);
    const ws = this.#ws = await RawWs.connect(
      hostname,
      Number(port),
      this.#dialect === "sio" ? "/socket.io/?EIO=4&transport=websocket" : `/${path}`,
    );
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    const timer = setTimeout(
      () => fail(new Error(`Register timed out: ${this.userId}`)),
      timeoutMs,
    );
    const fail = (error: Error) => {
      clearTimeout(timer);
      reject(error);
      ws.close();
    };
    const done = () => {
      clearTimeout(timer);
      ws.onclose = () => {};
      ws.onmessage = (text) => this.#dispatch(text);
      resolve();
    };
    ws.onclose = (code) => fail(new Error(`Closed before register: ${code}`));
    if (this.#dialect === "sio") {
      ws.onmessage = (text) => {
        if (text.startsWith("0")) ws.send(`40{"userId":"${this.userId}"}`);
        else if (text.startsWith("40")) done();
        else if (text.startsWith("44")) {
          fail(new Error(`Socket.IO refused ${this.userId}: ${text}`));
        }
      };
    } else {
      ws.onmessage = (text) => {
        if (text.indexOf('"type":9001') < 0) return;
        if (text.indexOf(OK_ESCAPED) >= 0) done();
        else fail(new Error(`Register refused for ${this.userId}: ${text}`));
      };
      ws.send(
        `{"id":"r${this.index}","type":1000,"isSystem":false,"from":"${this.userId}","to":"","body":${
          JSON.stringify(JSON.stringify({ sessionId: credential }))
        }}`,
      );
    }
    return await promise;
  }

  /** Sets the handler for frames after registration. */
  onFrame(handler: FrameHandler): void {
    this.#onFrame = handler;
  }

  /** Closes the connection. */
  close(): void {
    this.#ws.onclose = () => {};
    this.#ws.close();
  }

  #dispatch(text: string): void {
    if (this.#dialect === "sio") {
      const c0 = text.charCodeAt(0);
      if (c0 === 50 /* "2" ping */ && text.length === 1) {
        this.#ws.send("3");
        return;
      }
      if (c0 !== 52 /* "4" */) return;
      const c1 = text.charCodeAt(1);
      if (c1 === 51 /* "3" ack */) {
        this.#onFrame(this, { type: 9001, seq: digits(text, 2), ok: text.indexOf(OK_PLAIN) >= 0 });
        return;
      }
      if (c1 !== 50 /* "2" event */) return;
    }
    const at = text.indexOf('"type":');
    if (at < 0) return;
    const type = digits(text, at + 7);
    const id = text.indexOf('"id":"m');
    const seq = id < 0 ? -1 : digits(text, id + 7);
    this.#onFrame(this, { type, seq, ok: type === 9001 && text.indexOf(OK_ESCAPED) >= 0 });
  }
}

/**
 * Reads a non-negative decimal integer starting at `from`; -1 when there is none.
 *
 * @example
 * ```ts
 * digits("43017[{}]", 2); // 17
 * ```
 */
export function digits(text: string, from: number): number {
  let value = 0;
  let i = from;
  for (; i < text.length; i++) {
    const c = text.charCodeAt(i) - 48;
    if (c < 0 || c > 9) break;
    value = value * 10 + c;
  }
  return i === from ? -1 : value;
}

/**
 * Logs user `u<index+1>` in to our server over HTTP and returns a fresh sessionId
 * (`POST /app/login`, then `GET /app/websocket/client/login/{clientName}`).
 */
export async function loginIm(origin: string, index: number): Promise<string> {
  const login = await fetch(`${origin}/app/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: `user${index + 1}`, password: "pw" }),
  });
  const loginBody = await login.json();
  if (!login.ok) throw new Error(`Login failed for user${index + 1}: ${JSON.stringify(loginBody)}`);
  const session = await fetch(`${origin}/app/websocket/client/login/bench`, {
    headers: { token: loginBody.data.token },
  });
  const sessionBody = await session.json();
  if (!session.ok) {
    throw new Error(`Session failed for user${index + 1}: ${JSON.stringify(sessionBody)}`);
  }
  return sessionBody.data as string;
}

/**
 * Runs `task(i)` for i in [0, count) with at most `concurrency` in flight.
 *
 * @example
 * ```ts
 * await pool(10, 4, async (i) => console.log(i));
 * ```
 */
export async function pool(
  count: number,
  concurrency: number,
  task: (index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}
