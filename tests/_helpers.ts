/**
 * Test helpers: a real server on port 0 and real HTTP and WebSocket clients.
 *
 * @module
 */
import { parseConfig } from "../src/config/load.ts";
import type { ConfigInput } from "../src/config/schema.ts";
import { createServer, type ImServer } from "../src/server.ts";
import { createLogger, type LogLevel } from "../src/log.ts";
import YAML from "yaml";

/** Users every test server knows: alice/u1, bob/u2, carol/u3. */
export const TEST_USERS = [
  { userId: "u1", username: "alice", password: "alice-pw" },
  { userId: "u2", username: "bob", password: "bob-pw" },
  { userId: "u3", username: "carol", password: "carol-pw" },
];

/** An API key for `/server/...` routes in test servers. */
export const TEST_API_KEY = "test-api-key-0123456789";

/** Log lines a test server wrote, for assertions. */
export interface LogLine {
  level: LogLevel;
  line: string;
}

/** A running test server. */
export interface TestServer extends AsyncDisposable {
  server: ImServer;
  url: string;
  wsUrl: string;
  logs: LogLine[];
  /** Logs in and opens a registered connection. */
  connect(username: string, clientName?: string): Promise<TestClient>;
}

type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };

function merge(base: Record<string, unknown>, patch: Record<string, unknown>) {
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(patch)) {
    const current = out[key];
    out[key] = value && typeof value === "object" && !Array.isArray(value) && current &&
        typeof current === "object" && !Array.isArray(current)
      ? merge(current as Record<string, unknown>, value as Record<string, unknown>)
      : value;
  }
  return out;
}

/** The config of a test server, with `patch` merged in. */
export function testConfig(patch: DeepPartial<ConfigInput> = {}) {
  const base = {
    websocket: { url: "127.0.0.1", port: 0 },
    auth: { users: TEST_USERS },
    storage: { driver: "memory" },
    server: { apiKey: TEST_API_KEY },
    plugins: { dir: "./tests/fixtures/empty" },
    log: { level: "debug" },
  };
  return parseConfig(merge(base, patch as Record<string, unknown>), "test");
}

/** Starts a server on port 0; dispose it with `await using`. */
export async function startServer(patch: DeepPartial<ConfigInput> = {}): Promise<TestServer> {
  const config = testConfig(patch);
  // SQLite without a directory: a temporary one, removed with the server.
  let tempDir: string | undefined;
  if (config.storage.driver === "sqlite" && patch.storage?.dir === undefined) {
    tempDir = await Deno.makeTempDir({ prefix: "im-test-data-" });
    config.storage.dir = tempDir;
  }
  const logs: LogLine[] = [];
  const logger = createLogger({
    level: "debug",
    write: (level, line) => logs.push({ level, line }),
  });
  const server = await createServer(config, { logger });
  const url = server.url;
  const wsUrl = `${url.replace("http", "ws")}/${config.websocket.context}`;
  const clients: TestClient[] = [];
  return {
    server,
    url,
    wsUrl,
    logs,
    async connect(username: string, clientName = "web") {
      const user = TEST_USERS.find((u) => u.username === username)!;
      const client = await registerClient(url, wsUrl, user, clientName);
      clients.push(client);
      return client;
    },
    async [Symbol.asyncDispose]() {
      for (const client of clients) await client.close();
      await server.close();
      if (tempDir) await Deno.remove(tempDir, { recursive: true });
    },
  };
}

/**
 * The shipped config.yaml, written to a temporary file with its storage moved
 * to a temporary directory: a `deno task start` running in this checkout holds
 * `./data` and port 8081, and a test must not touch either.
 */
export async function shippedConfig(
  patch: (config: Record<string, Record<string, unknown>>) => void = () => {},
) {
  const dir = await Deno.makeTempDir({ prefix: "im-main-test-" });
  const config = YAML.parse(await Deno.readTextFile(new URL("../config.yaml", import.meta.url)));
  config.storage = { ...config.storage, dir: `${dir}/data` };
  patch(config);
  const path = `${dir}/config.yaml`;
  await Deno.writeTextFile(path, YAML.stringify(config));
  return { path, dir, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

/** A server process's output, read by {@link untilListening}. */
export interface ProcessOutput {
  /** The URL of its `listening on http://…` line; rejects if the output ends first. */
  url: Promise<string>;
  /** Everything it printed so far. */
  text(): string;
  /** Settles when every stream has ended (the process exited or closed them). */
  drained: Promise<void>;
}

/**
 * Reads a server process's streams until its `listening on` line, and keeps
 * draining them afterwards so the child never blocks on a full pipe. Pass
 * stderr as well as stdout: when the process exits before listening, the
 * rejection carries everything it printed, so a failing test shows why (a
 * locked storage directory, a busy port, a bad config).
 */
export function untilListening(...streams: ReadableStream<Uint8Array>[]): ProcessOutput {
  let out = "";
  const listening = Promise.withResolvers<string>();
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    try {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        out += chunk;
        const match = out.match(/listening on (http:\/\/[^\s/]+)/);
        if (match) listening.resolve(match[1]);
      }
    } catch {
      // The process was killed mid-read.
    }
  };
  const drained = Promise.all(streams.map(collect)).then(() => {
    listening.reject(new Error(`The process exited before listening:\n${out}`));
  });
  listening.promise.catch(() => {}); // a caller that got its URL may not wait for the end
  return { url: listening.promise, text: () => out, drained };
}

/** POST /app/login; returns the token. */
export async function login(url: string, username: string, password: string): Promise<string> {
  const response = await fetch(`${url}/app/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password }),
  });
  const body = await response.json();
  if (response.status !== 200) throw new Error(`Login failed: ${JSON.stringify(body)}`);
  return body.data.token;
}

/** GET /app/websocket/client/login/{clientName}; returns the sessionId. */
export async function wsSession(url: string, token: string, clientName: string): Promise<string> {
  const response = await fetch(`${url}/app/websocket/client/login/${clientName}`, {
    headers: { token },
  });
  const body = await response.json();
  if (response.status !== 200) throw new Error(`WS login failed: ${JSON.stringify(body)}`);
  return body.data;
}

/** A frame as received, parsed. */
// deno-lint-ignore no-explicit-any
export type Frame = Record<string, any>;

/** A 9001 reply: the frame plus its decoded status. */
export interface Reply {
  frame: Frame;
  code: number;
  status: string;
  msg: string;
}

/** A raw WebSocket client that queues every frame it receives. */
export class TestClient {
  userId = "";
  #socket: WebSocket;
  #frames: Frame[] = [];
  #waiters: (() => void)[] = [];
  #closed = Promise.withResolvers<CloseEvent>();
  #seq = 0;

  private constructor(socket: WebSocket) {
    this.#socket = socket;
    socket.onmessage = (event) => {
      this.#frames.push(JSON.parse(event.data));
      for (const wake of this.#waiters.splice(0)) wake();
    };
    socket.onclose = (event) => {
      this.#closed.resolve(event);
      for (const wake of this.#waiters.splice(0)) wake();
    };
  }

  /** Opens a socket (not registered). */
  static async open(wsUrl: string): Promise<TestClient> {
    const socket = new WebSocket(wsUrl);
    const opened = Promise.withResolvers<void>();
    socket.onopen = () => opened.resolve();
    socket.onerror = () => opened.reject(new Error("WebSocket failed to open"));
    await opened.promise;
    return new TestClient(socket);
  }

  /** Resolves with the close event when the server closes the socket. */
  get closed(): Promise<CloseEvent> {
    return this.#closed.promise;
  }

  /** Sends raw text. */
  sendRaw(text: string): void {
    this.#socket.send(text);
  }

  /** Sends a frame object. */
  send(frame: Frame): void {
    this.#socket.send(JSON.stringify(frame));
  }

  /** A fresh message id. */
  nextId(): string {
    return `m${++this.#seq}-${crypto.randomUUID().slice(0, 8)}`;
  }

  /** Sends a frame and waits for the 9001 with its id. */
  async request(frame: Frame): Promise<Reply> {
    this.send(frame);
    return await this.reply(frame.id);
  }

  /** Waits for the 9001 reply with this id. */
  async reply(id: string): Promise<Reply> {
    const frame = await this.next((f) => f.type === 9001 && f.id === id);
    return { frame, ...JSON.parse(frame.body) };
  }

  /** Sends a 2001 text frame and waits for its 9001. */
  text(to: string, body: string, id = this.nextId()): Promise<Reply> {
    return this.request({ id, type: 2001, isSystem: false, from: this.userId, to, body });
  }

  /** Sends a 9101 receipt for a received frame and waits for its 9001. */
  receipt(frame: Frame): Promise<Reply> {
    return this.request({
      id: frame.id,
      type: 9101,
      isSystem: false,
      from: this.userId,
      to: frame.from,
      body: JSON.stringify({ code: 200, status: "SUCCESS", msg: "received" }),
    });
  }

  /** Waits for and removes the first frame matching `match`. */
  async next(match: (frame: Frame) => boolean = () => true, timeoutMs = 5000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const index = this.#frames.findIndex(match);
      if (index >= 0) return this.#frames.splice(index, 1)[0];
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `No matching frame in ${timeoutMs} ms; have ${JSON.stringify(this.#frames)}`,
        );
      }
      const woken = Promise.withResolvers<void>();
      this.#waiters.push(woken.resolve);
      const timer = setTimeout(woken.resolve, left);
      await woken.promise;
      clearTimeout(timer);
    }
  }

  /** Waits for the next frame that is not a 9001. */
  message(timeoutMs?: number): Promise<Frame> {
    return this.next((f) => f.type !== 9001, timeoutMs);
  }

  /** Every queued frame (removed from the queue). */
  drain(): Frame[] {
    return this.#frames.splice(0);
  }

  /** Waits `ms` then returns the queued frames that are not 9001 replies. */
  async quiet(ms = 150): Promise<Frame[]> {
    await new Promise((resolve) => setTimeout(resolve, ms));
    return this.#frames.filter((f) => f.type !== 9001);
  }

  /** Closes the socket and waits for the close. */
  async close(): Promise<void> {
    if (this.#socket.readyState === WebSocket.OPEN) this.#socket.close(1000, "bye");
    if (this.#socket.readyState !== WebSocket.CLOSED) await this.#closed.promise;
  }
}

const frameEncoder = new TextEncoder();

/** A WebSocket text frame from a client (masked with a zero key), for raw-socket tests. */
export function clientFrame(text: string): Uint8Array {
  const payload = frameEncoder.encode(text);
  const n = payload.length;
  const head = n < 126 ? [0x81, 0x80 | n] : n < 65536 ? [0x81, 0x80 | 126, n >> 8, n & 0xff] : [
    0x81,
    0x80 | 127,
    0,
    0,
    0,
    0,
    (n >>> 24) & 0xff,
    (n >> 16) & 0xff,
    (n >> 8) & 0xff,
    n & 0xff,
  ];
  return new Uint8Array([...head, 0, 0, 0, 0, ...payload]);
}

/** A user to log in as: `userId`, `username`, `password`. */
export interface TestUser {
  userId: string;
  username: string;
  password: string;
}

/** Logs `user` in and returns a fresh sessionId for `clientName`. */
async function sessionFor(url: string, user: TestUser, clientName: string): Promise<string> {
  return await wsSession(url, await login(url, user.username, user.password), clientName);
}

/** The 1000 frame that registers with `sessionId` as `userId`. */
function registerFrame(userId: string, sessionId: string, id = `reg-${crypto.randomUUID()}`) {
  return {
    id,
    type: 1000,
    isSystem: false,
    from: userId,
    to: "",
    body: JSON.stringify({ sessionId }),
  };
}

/** Logs in as `user` and registers a {@link TestClient} as `clientName`. */
export async function registerClient(
  url: string,
  wsUrl: string,
  user: TestUser,
  clientName: string,
): Promise<TestClient> {
  const sessionId = await sessionFor(url, user, clientName);
  const client = await TestClient.open(wsUrl);
  const reply = await client.request(registerFrame(user.userId, sessionId));
  if (reply.code !== 200) throw new Error(`Register failed: ${JSON.stringify(reply)}`);
  client.userId = user.userId;
  return client;
}

/** Opens a WebSocket by hand on 127.0.0.1:`port`; returns the connection after the 101. */
export async function openRawWebSocket(port: number): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(frameEncoder.encode(
    `GET /websocket HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n` +
      `Sec-WebSocket-Version: 13\r\n\r\n`,
  ));
  const buffer = new Uint8Array(1024);
  const decoder = new TextDecoder();
  let head = "";
  while (!head.includes("\r\n\r\n")) {
    const n = await conn.read(buffer);
    if (n === null) {
      throw new Error(`Upgrade refused: connection closed after ${JSON.stringify(head)}`);
    }
    head += decoder.decode(buffer.subarray(0, n));
  }
  if (!head.startsWith("HTTP/1.1 101")) throw new Error(`Upgrade refused: ${head}`);
  return conn;
}

/** Registers `user` over a raw TCP socket that then never reads (a stuck client). */
export async function registerRaw(
  url: string,
  port: number,
  user: TestUser,
  clientName: string,
): Promise<Deno.Conn> {
  const sessionId = await sessionFor(url, user, clientName);
  const conn = await openRawWebSocket(port);
  await conn.write(clientFrame(JSON.stringify(registerFrame(user.userId, sessionId, "reg"))));
  return conn;
}
