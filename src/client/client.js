// @ts-self-types="./client.d.ts"
/**
 * The typed client of the IM server. A plain ES module with no imports, so it
 * runs unchanged in browsers (the web console loads it from `/client.js`),
 * Deno and Node 22+. Its types are in `client.d.ts`; its documentation is in
 * `docs/CLIENT.md`.
 *
 * @module
 */

/** Built-in message type codes; equal to `MessageType` of `src/protocol/codes.ts`. */
export const MessageType = Object.freeze({
  REGISTER: 1000,
  TEXT: 2001,
  NOTICE: 3001,
  TARGET_NOTICE: 3003,
  SEND_STATUS: 9001,
  RECEIPT: 9101,
});

/** Status codes of a StatusBody; equal to `StatusCode` of `src/protocol/codes.ts`. */
export const StatusCode = Object.freeze({
  SUCCESS: 200,
  FAILED: 400,
  MESSAGE_ERROR: 401,
  SESSION_ERROR: 402,
  TYPE_ERROR: 403,
  BODY_ERROR: 404,
  FROM_ERROR: 405,
  TO_ERROR: 406,
  RECEIVE_ERROR: 407,
});

/** The `from` of frames sent by the server or by business backends. */
export const SYSTEM = "SYSTEM";

/** @type {Map<number, string>} */
const NAMES = new Map(Object.entries(StatusCode).map(([name, code]) => [code, name]));

/**
 * The name of a status code (`200` → `"SUCCESS"`), or undefined for an unknown code.
 * @param {number} code
 */
export function statusName(code) {
  return NAMES.get(code);
}

/** Base class of every error this client throws or rejects with. */
export class ImError extends Error {
  /** @param {string} message @param {ErrorOptions} [options] */
  constructor(message, options) {
    super(message, options);
    this.name = "ImError";
  }
}

/** The server answered a frame with a 9001 status other than 200. */
export class StatusError extends ImError {
  /**
   * @param {string} id
   * @param {{code: number, status: string, msg: string}} body
   */
  constructor(id, body) {
    super(`Frame "${id}" was refused: ${body.code} ${body.status}: ${body.msg}`);
    this.name = "StatusError";
    this.id = id;
    this.code = body.code;
    this.status = body.status;
    this.msg = body.msg;
  }
}

/** An HTTP call (login, WebSocket login) failed with a non-2xx status. */
export class HttpError extends ImError {
  /** @param {string} what @param {number} code @param {string} msg */
  constructor(what, code, msg) {
    super(`${what} failed: ${code} ${msg}`);
    this.name = "HttpError";
    this.code = code;
    this.msg = msg;
  }
}

/** The client was closed (by `close()`, by a newer connection, or by a fatal error). */
export class ClosedError extends ImError {
  /** @param {string} reason @param {ErrorOptions} [options] */
  constructor(reason, options) {
    super(`Client is closed: ${reason}`, options);
    this.name = "ClosedError";
    this.reason = reason;
  }
}

const DEFAULTS = {
  context: "websocket",
  receipts: true,
  ackTimeoutMs: 15_000,
  registerTimeoutMs: 10_000,
  maxQueued: 1000,
  maxFrameBytes: 65536,
  dedupeSize: 10_000,
  reconnect: { minDelayMs: 500, maxDelayMs: 30_000, factor: 2, jitter: 0.5, enabled: true },
};

/** Close code the server uses when a newer connection of the same client replaces this one. */
const CLOSE_REPLACED = 4001;
/** Close code of `POST /server/kick`: a business backend ended this user's connection. */
const CLOSE_KICKED = 4003;
/**
 * Closes after which reconnecting would be wrong: the client closes for good with this reason.
 * (Two clients with one name would replace each other forever; a kicked user must stay out.)
 * @type {Map<number, string>}
 */
const FINAL_CLOSES = new Map([[CLOSE_REPLACED, "replaced"], [CLOSE_KICKED, "kicked"]]);
/** Close code of a server that got a frame over its size limit. */
const CLOSE_TOO_LARGE = 1009;
/** Close code this client uses when it gives up on a connection that stopped answering. */
const CLOSE_NO_ANSWER = 4000;

/**
 * A random id usable in any browser context (`crypto.randomUUID` needs a secure context).
 * @returns {string}
 */
export function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${
    hex.slice(20)
  }`;
}

/**
 * @param {string} base
 * @param {string} path
 */
function joinUrl(base, path) {
  return base.replace(/\/+$/, "") + path;
}

/**
 * Reads a JSON response; throws HttpError for non-2xx statuses.
 * @param {Response} res
 * @param {string} what
 */
async function readJson(res, what) {
  const text = await res.text();
  /** @type {any} */
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    value = undefined;
  }
  if (!res.ok) {
    const msg = value && typeof value.msg === "string" ? value.msg : res.statusText || text;
    throw new HttpError(what, res.status, msg);
  }
  if (value === undefined) throw new HttpError(what, res.status, "response is not JSON");
  return value;
}

/**
 * Logs in with a username and password (`POST /app/login`).
 * @param {string} url
 * @param {string} username
 * @param {string} password
 * @param {{fetch?: typeof fetch, signal?: AbortSignal}} [options]
 * @returns {Promise<{token: string, userId: string}>}
 */
export async function login(url, username, password, options = {}) {
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  const res = await doFetch(joinUrl(url, "/app/login"), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password }),
    signal: options.signal,
  });
  const value = await readJson(res, "Login");
  const data = value?.data;
  if (!data || typeof data.token !== "string" || typeof data.userId !== "string") {
    throw new HttpError("Login", res.status, "response has no data.token and data.userId");
  }
  return { token: data.token, userId: data.userId };
}

/**
 * The `sub` claim of a JWT, or undefined when the token is not a readable JWT.
 * @param {string} token
 */
export function tokenSubject(token) {
  const part = token.split(".")[1];
  if (!part) return undefined;
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const json = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
    const bytes = Uint8Array.from(json, (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return typeof claims?.sub === "string" && claims.sub !== "" ? claims.sub : undefined;
  } catch {
    return undefined;
  }
}

/**
 * @param {unknown} value
 * @returns {value is {code: number, status: string, msg: string}}
 */
function isStatusBody(value) {
  return typeof value === "object" && value !== null &&
    typeof (/** @type {any} */ (value).code) === "number" &&
    typeof (/** @type {any} */ (value).status) === "string";
}

/** @param {string} body */
function parseStatus(body) {
  try {
    const value = JSON.parse(body);
    if (isStatusBody(value)) {
      return { code: value.code, status: value.status, msg: String(value.msg ?? value.status) };
    }
  } catch {
    // fall through
  }
  return { code: StatusCode.FAILED, status: "FAILED", msg: `Unreadable status body: ${body}` };
}

/** @param {string} body */
function parseNotice(body) {
  try {
    const value = JSON.parse(body);
    if (value && typeof value.title === "string" && typeof value.msg === "string") return value;
  } catch {
    // fall through
  }
  return undefined;
}

/**
 * The entries of a frame's `to`, trimmed, empty ones left out.
 * @param {string} to
 */
function recipients(to) {
  return to.split(",").map((entry) => entry.trim()).filter((entry) => entry !== "");
}

/**
 * @param {unknown} value
 * @returns {value is import("./client.d.ts").Message}
 */
function isFrame(value) {
  if (typeof value !== "object" || value === null) return false;
  const f = /** @type {any} */ (value);
  return typeof f.id === "string" && typeof f.type === "number" &&
    typeof f.from === "string" && typeof f.to === "string" && typeof f.body === "string";
}

/**
 * A connection to the IM server for one user and one client name. It logs in,
 * registers, answers delivered frames with receipts, drops duplicates and
 * reconnects by itself; see `docs/CLIENT.md`.
 */
export class ImClient extends EventTarget {
  /** @type {any} */
  #options;
  /** @type {typeof fetch} */
  #fetch;
  /** @type {typeof WebSocket} */
  #WebSocket;
  /** @type {string | undefined} */
  #token;
  /** @type {string | undefined} */
  #userId;
  /** @type {string | undefined} */
  #sessionId;
  /** @type {import("./client.d.ts").ConnectionState} */
  #state = "idle";
  /** @type {WebSocket | undefined} */
  #ws;
  /** Frames waiting for their 9001, in the order they were first sent. @type {Set<any>} */
  #outbox = new Set();
  /** The same entries by id (several per id are possible). @type {Map<string, any[]>} */
  #byId = new Map();
  /** Keys of frames already delivered, oldest first. @type {Set<string>} */
  #seen = new Set();
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #retryTimer;
  /** @type {(() => void) | undefined} */
  #wakeRetry;
  #attempt = 0;
  /** Sockets being closed; close() waits for them. @type {Set<Promise<void>>} */
  #closing = new Set();
  /** @type {Promise<void> | undefined} */
  #connecting;
  /** @type {AbortController} */
  #abort = new AbortController();
  /** Frames received right after a register, not dispatched yet. @type {any[] | undefined} */
  #held;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #heldTimer;
  /** Why the client closed (`"closed"`, `"replaced"`, `"kicked"`, `"failed"`). */
  #closedReason = "closed";

  /** @param {import("./client.d.ts").ClientOptions} options */
  constructor(options) {
    super();
    if (!options || typeof options.url !== "string") throw new TypeError("options.url is required");
    if (
      typeof options.clientName !== "string" || !/^[A-Za-z0-9_.-]{1,64}$/.test(options.clientName)
    ) {
      throw new TypeError(
        "options.clientName must be 1 to 64 characters of A-Z a-z 0-9 _ . -",
      );
    }
    this.#options = {
      ...DEFAULTS,
      ...options,
      reconnect: { ...DEFAULTS.reconnect, ...(options.reconnect ?? {}) },
    };
    if (options.reconnect === false) this.#options.reconnect.enabled = false;
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.#token = options.token;
    if ("document" in globalThis && typeof globalThis.addEventListener === "function") {
      globalThis.addEventListener("online", this.#onOnline);
    }
    this.#userId = options.userId ?? (options.token ? tokenSubject(options.token) : undefined);
  }

  /** The current connection state. */
  get state() {
    return this.#state;
  }

  /** The user id, known after login (or from the token). */
  get userId() {
    return this.#userId;
  }

  /** The token in use, known after login. */
  get token() {
    return this.#token;
  }

  /** The client name given in the options. */
  get clientName() {
    return this.#options.clientName;
  }

  /** The sessionId of the current (or last) registration. */
  get sessionId() {
    return this.#sessionId;
  }

  /** Number of sent frames still waiting for their 9001. */
  get pending() {
    return this.#outbox.size;
  }

  /**
   * Logs in with the username and password of the options (unless a token was given).
   * @returns {Promise<{token: string, userId: string}>}
   */
  async login() {
    const { username, password } = this.#options;
    if (this.#token && this.#userId) return { token: this.#token, userId: this.#userId };
    if (this.#token) {
      throw new ImError("options.userId is required with a token that is not a JWT with a sub");
    }
    if (typeof username !== "string" || typeof password !== "string") {
      throw new ImError("options.username and options.password, or options.token, are required");
    }
    const result = await login(this.#options.url, username, password, {
      fetch: this.#fetch,
      signal: this.#abort.signal,
    });
    this.#token = result.token;
    this.#userId = result.userId;
    return result;
  }

  /**
   * Logs in if needed, then connects and registers. Resolves once registered;
   * rejects (and closes the client) when that first attempt fails. Later drops are
   * repaired by reconnecting.
   * @returns {Promise<void>}
   */
  connect() {
    if (this.#state === "closed") return Promise.reject(new ClosedError("closed"));
    if (this.#connecting) return this.#connecting;
    if (this.#state === "open") return Promise.resolve();
    if (this.#state === "reconnecting") {
      // Already retrying by itself: wait for the outcome.
      return new Promise((resolve, reject) => {
        const off = this.on("state", (s) => {
          if (s.state === "open") {
            off();
            resolve();
          } else if (s.state === "closed") {
            off();
            reject(s.error ?? new ClosedError(s.reason ?? "closed"));
          }
        });
      });
    }
    this.#setState("connecting");
    this.#connecting = this.#attemptOnce().then(
      () => {
        this.#connecting = undefined;
      },
      async (error) => {
        this.#connecting = undefined;
        await this.#shutdown(error instanceof ClosedError ? error.reason : "failed", error);
        throw error;
      },
    );
    return this.#connecting;
  }

  /**
   * Sends a text message (2001).
   * @param {string | string[]} to
   * @param {string} text
   * @param {{id?: string}} [options]
   */
  send(to, text, options) {
    return this.#sendFrame(MessageType.TEXT, to, String(text), options?.id);
  }

  /**
   * Sends a notice (3001, or 3003 with `targeted`).
   * @param {string | string[]} to
   * @param {import("./client.d.ts").NoticeBody} notice
   * @param {{targeted?: boolean, id?: string}} [options]
   */
  notice(to, notice, options) {
    const type = options?.targeted ? MessageType.TARGET_NOTICE : MessageType.NOTICE;
    return this.#sendFrame(type, to, JSON.stringify(notice), options?.id);
  }

  /**
   * Sends a frame of any type (custom types are handled by server plugins).
   * @param {number} type
   * @param {string | string[]} to
   * @param {unknown} body
   * @param {{id?: string}} [options]
   */
  sendCustom(type, to, body, options) {
    if (!Number.isInteger(type)) return Promise.reject(new TypeError("type must be an integer"));
    const text = typeof body === "string" ? body : JSON.stringify(body);
    return this.#sendFrame(type, to, text, options?.id);
  }

  /**
   * Acknowledges a delivered frame with a 9101 receipt (done automatically
   * unless `receipts: false`).
   * @param {import("./client.d.ts").Message} message
   * @param {number} [code]
   * @param {string} [msg]
   */
  receipt(message, code = StatusCode.SUCCESS, msg) {
    return this.#sendFrame(
      MessageType.RECEIPT,
      message.from,
      JSON.stringify({ code, status: statusName(code) ?? "FAILED", msg: msg ?? statusName(code) }),
      message.id,
    );
  }

  /**
   * Listens to one event; returns a function that removes the listener.
   * @param {string} type
   * @param {(detail: any) => void} listener
   */
  on(type, listener) {
    /** @param {Event} event */
    const wrapped = (event) => listener(/** @type {CustomEvent} */ (event).detail);
    this.addEventListener(type, wrapped);
    return () => this.removeEventListener(type, wrapped);
  }

  /**
   * Events of one kind as an async iterator; it ends when the client closes
   * (or when the loop breaks).
   * @param {string} type
   */
  stream(type) {
    /** @type {any[]} */
    const queue = [];
    /** @type {((result: IteratorResult<any>) => void) | undefined} */
    let wake;
    let done = this.#state === "closed";
    const finish = () => {
      done = true;
      offEvent();
      offState();
      if (wake) {
        const w = wake;
        wake = undefined;
        w({ value: undefined, done: true });
      }
    };
    const offEvent = this.on(type, (detail) => {
      if (wake) {
        const w = wake;
        wake = undefined;
        w({ value: detail, done: false });
      } else queue.push(detail);
    });
    const offState = this.on("state", (detail) => {
      if (detail.state === "closed") finish();
    });
    if (done) finish();
    return {
      next() {
        if (queue.length > 0) return Promise.resolve({ value: queue.shift(), done: false });
        if (done) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => (wake = resolve));
      },
      return() {
        queue.length = 0;
        finish();
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  /** Text messages (2001) as an async iterator. */
  messages() {
    return this.stream("message");
  }

  /**
   * Closes the connection for good: rejects unanswered frames with ClosedError,
   * stops reconnecting and ends the iterators. Resolves when the socket is closed.
   * @returns {Promise<void>}
   */
  close() {
    return this.#shutdown("closed");
  }

  /** Closes the current socket as if the network dropped; the client reconnects. For tests. */
  dropConnection() {
    if (this.#ws) this.#lost(this.#ws, CLOSE_NO_ANSWER, "dropped by dropConnection()");
  }

  // ---- internals ----

  /**
   * @param {import("./client.d.ts").ConnectionState} state
   * @param {Record<string, unknown>} [extra]
   */
  #setState(state, extra = {}) {
    const previous = this.#state;
    if (previous === state && state !== "reconnecting") return;
    this.#state = state;
    this.#emit("state", { state, previous, ...extra });
  }

  /** @param {string} type @param {unknown} detail */
  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /**
   * @param {number} type
   * @param {string | string[]} to
   * @param {string} body
   * @param {string | undefined} id
   * @param {boolean} [resend]
   */
  #sendFrame(type, to, body, id, resend = true) {
    if (this.#state === "closed") return Promise.reject(new ClosedError(this.#closedReason));
    if (this.#outbox.size >= this.#options.maxQueued) {
      return Promise.reject(new ImError(`Send queue is full: ${this.#outbox.size} frames`));
    }
    const frame = {
      id: id ?? randomId(),
      type,
      isSystem: false,
      from: this.#userId ?? "",
      to: Array.isArray(to) ? to.join(",") : String(to),
      body,
    };
    return new Promise((resolve, reject) => {
      const entry = {
        frame,
        text: "",
        resolve,
        reject,
        resend,
        timer: undefined,
        sentOn: undefined,
      };
      entry.text = JSON.stringify(frame);
      const size = new TextEncoder().encode(entry.text).length;
      if (size > this.#options.maxFrameBytes) {
        reject(
          new ImError(`Frame is too large: ${size} bytes, limit ${this.#options.maxFrameBytes}`),
        );
        return;
      }
      this.#outbox.add(entry);
      const list = this.#byId.get(frame.id);
      if (list) list.push(entry);
      else this.#byId.set(frame.id, [entry]);
      if (this.#state === "open") this.#transmit(entry);
    });
  }

  /** @param {any} entry */
  #transmit(entry) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== 1) return;
    if (!entry.frame.from) entry.frame.from = this.#userId ?? "";
    entry.text = JSON.stringify(entry.frame);
    entry.sentOn = ws;
    ws.send(entry.text);
    this.#emit("frame", { direction: "out", frame: entry.frame, raw: entry.text });
    clearTimeout(entry.timer);
    entry.timer = setTimeout(() => {
      entry.timer = undefined;
      if (this.#ws === ws && entry.sentOn === ws) {
        this.#lost(ws, CLOSE_NO_ANSWER, `no answer to frame "${entry.frame.id}"`);
      }
    }, this.#options.ackTimeoutMs);
  }

  /** @param {any} entry */
  #forget(entry) {
    clearTimeout(entry.timer);
    entry.timer = undefined;
    this.#outbox.delete(entry);
    const list = this.#byId.get(entry.frame.id);
    if (list) {
      const i = list.indexOf(entry);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) this.#byId.delete(entry.frame.id);
    }
  }

  /** One full attempt: token, sessionId, socket, register. */
  async #attemptOnce() {
    if (!this.#token || !this.#userId) await this.login();
    let sessionId;
    try {
      sessionId = await this.#fetchSession();
    } catch (error) {
      // A stale token: log in again once when a password is known.
      if (
        error instanceof HttpError && error.code === 401 &&
        typeof this.#options.password === "string" && !this.#options.token
      ) {
        this.#token = undefined;
        await this.login();
        sessionId = await this.#fetchSession();
      } else throw error;
    }
    if (this.#state === "closed") throw new ClosedError("closed");
    this.#sessionId = sessionId;
    await this.#openAndRegister(sessionId);
  }

  async #fetchSession() {
    const url = joinUrl(
      this.#options.url,
      `/app/websocket/client/login/${encodeURIComponent(this.#options.clientName)}`,
    );
    const res = await this.#fetch(url, {
      headers: { token: /** @type {string} */ (this.#token) },
      signal: this.#abort.signal,
    });
    const value = await readJson(res, "WebSocket login");
    if (typeof value?.data !== "string") {
      throw new HttpError("WebSocket login", res.status, "response has no data sessionId");
    }
    return value.data;
  }

  #wsUrl() {
    if (this.#options.wsUrl) return this.#options.wsUrl;
    const url = new URL(this.#options.url);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.pathname = url.pathname.replace(/\/+$/, "") + "/" +
      String(this.#options.context).replace(/^\/+/, "");
    url.search = "";
    url.hash = "";
    return url.href;
  }

  /** @param {string} sessionId */
  #openAndRegister(sessionId) {
    return new Promise((resolve, reject) => {
      const ws = new this.#WebSocket(this.#wsUrl());
      this.#ws = ws;
      const registerId = randomId();
      let settled = false;
      /** @param {Error | undefined} error */
      const settle = (error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (error) reject(error);
        else resolve(undefined);
      };
      const timer = setTimeout(() => {
        settle(new ImError("Register timed out"));
        this.#lost(ws, CLOSE_NO_ANSWER, "register timed out");
      }, this.#options.registerTimeoutMs);

      /** @type {Promise<void>} */
      const closed = new Promise((done) => {
        ws.addEventListener("close", (event) => {
          this.#closing.delete(closed);
          done();
          if (!settled) {
            const final = FINAL_CLOSES.get(event.code);
            settle(
              final
                ? new ClosedError(final)
                : new ImError(`Connection closed before register: ${event.code} ${event.reason}`),
            );
          }
          if (this.#ws === ws) this.#onClose(ws, event.code, event.reason);
        });
      });
      this.#closing.add(closed);
      ws.addEventListener("error", () => {
        // A close event always follows; nothing to do here.
      });
      ws.addEventListener("open", () => {
        const frame = {
          id: registerId,
          type: MessageType.REGISTER,
          isSystem: false,
          from: this.#userId,
          to: "",
          body: JSON.stringify({ sessionId }),
        };
        const text = JSON.stringify(frame);
        ws.send(text);
        this.#emit("frame", { direction: "out", frame, raw: text });
      });
      ws.addEventListener("message", (event) => {
        if (this.#ws !== ws) return;
        const raw = typeof event.data === "string" ? event.data : "";
        /** @type {unknown} */
        let value;
        try {
          value = JSON.parse(raw);
        } catch {
          value = undefined;
        }
        if (!isFrame(value)) {
          this.#emit("frame", { direction: "in", frame: undefined, raw });
          return;
        }
        this.#emit("frame", { direction: "in", frame: value, raw });
        if (!settled && value.type === MessageType.SEND_STATUS && value.id === registerId) {
          const status = parseStatus(value.body);
          this.#emit("status", { id: value.id, type: MessageType.REGISTER, ...status });
          if (status.code === StatusCode.SUCCESS) {
            this.#onRegistered(ws);
            settle(undefined);
          } else {
            settle(new StatusError(registerId, status));
            this.#lost(ws, 1000, "register refused");
          }
          return;
        }
        if (this.#held) this.#held.push(value);
        else this.#onFrame(value);
      });
    });
  }

  /** @param {WebSocket} ws */
  #onRegistered(ws) {
    this.#attempt = 0;
    // Frames right after the register (offline messages) wait one macrotask, so that code
    // after `await connect()` can add its listeners before they are dispatched.
    this.#held = [];
    this.#heldTimer = setTimeout(() => this.#release(), 0);
    this.#setState("open", { sessionId: this.#sessionId });
    for (const entry of [...this.#outbox]) {
      if (this.#ws !== ws || this.#state !== "open") break;
      this.#transmit(entry);
    }
  }

  /** Dispatches the frames held after a register. */
  #release() {
    clearTimeout(this.#heldTimer);
    this.#heldTimer = undefined;
    const held = this.#held ?? [];
    this.#held = undefined;
    for (const frame of held) this.#onFrame(frame);
  }

  /**
   * Gives up on a socket: closes it and handles it as a dropped connection.
   * @param {WebSocket} ws
   * @param {number} code
   * @param {string} reason
   */
  #lost(ws, code, reason) {
    try {
      ws.close(code, reason);
    } catch {
      // already closing
    }
    if (this.#ws === ws) this.#onClose(ws, code, reason);
  }

  /**
   * The current socket is gone.
   * @param {WebSocket} ws
   * @param {number} code
   * @param {string} reason
   */
  #onClose(ws, code, reason) {
    if (this.#ws !== ws) return;
    this.#ws = undefined;
    this.#release();
    for (const entry of this.#outbox) {
      clearTimeout(entry.timer);
      entry.timer = undefined;
      entry.sentOn = undefined;
      if (!entry.resend) {
        // Automatic receipts are not resent: the server redelivers the message instead.
        this.#forget(entry);
        entry.resolve({ id: entry.frame.id, code: 0, status: "NOT_SENT", msg: "connection lost" });
      }
    }
    if (this.#state === "closed" || this.#state === "connecting") return;
    if (code === CLOSE_TOO_LARGE) this.#dropTooLarge();
    const final = FINAL_CLOSES.get(code);
    if (final) {
      this.#shutdown(final, new ClosedError(final), { code });
      return;
    }
    if (!this.#options.reconnect.enabled) {
      this.#shutdown("disconnected", new ImError(`Connection closed: ${code} ${reason}`));
      return;
    }
    this.#scheduleReconnect({ code, reason });
  }

  /**
   * The server closed with 1009: a frame was over its limit. Resending it would
   * loop, so the largest unanswered frame is refused and the limit lowered.
   */
  #dropTooLarge() {
    let largest;
    for (const entry of this.#outbox) {
      if (!largest || entry.text.length > largest.text.length) largest = entry;
    }
    if (!largest) return;
    const size = new TextEncoder().encode(largest.text).length;
    this.#options.maxFrameBytes = Math.min(this.#options.maxFrameBytes, size - 1);
    this.#forget(largest);
    largest.reject(new ImError(`Frame is too large for the server: ${size} bytes (closed 1009)`));
  }

  /** Tries again at once, when the browser says the network is back. */
  #onOnline = () => {
    if (this.#state === "reconnecting" && this.#wakeRetry) {
      this.#wakeRetry();
      this.#attempt = 0;
      this.#reconnect();
    }
  };

  /** @param {Record<string, unknown>} why */
  #scheduleReconnect(why) {
    if (this.#state === "closed" || this.#retryTimer !== undefined) return;
    const { minDelayMs, maxDelayMs, factor, jitter } = this.#options.reconnect;
    this.#attempt++;
    const base = Math.min(maxDelayMs, minDelayMs * factor ** (this.#attempt - 1));
    const delayMs = Math.round(base * (1 - jitter * Math.random()));
    this.#setState("reconnecting", { attempt: this.#attempt, delayMs, ...why });
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#wakeRetry = undefined;
      this.#reconnect();
    }, delayMs);
    this.#wakeRetry = () => {
      clearTimeout(this.#retryTimer);
      this.#retryTimer = undefined;
      this.#wakeRetry = undefined;
    };
  }

  async #reconnect() {
    if (this.#state === "closed") return;
    try {
      await this.#attemptOnce();
    } catch (error) {
      if (/** @type {string} */ (this.#state) === "closed") return;
      const fatal = error instanceof ClosedError ||
        (error instanceof HttpError && (error.code === 401 || error.code === 400)) ||
        (error instanceof StatusError && error.code === StatusCode.FROM_ERROR) ||
        (error instanceof ImError && !(error instanceof HttpError) &&
          !(error instanceof StatusError) && /required/.test(error.message));
      if (fatal) {
        await this.#shutdown(error instanceof ClosedError ? error.reason : "failed", error);
        return;
      }
      this.#emit("error", error);
      if (this.#ws) {
        const ws = this.#ws;
        this.#ws = undefined;
        try {
          ws.close(1000, "retrying");
        } catch {
          // ignore
        }
      }
      this.#scheduleReconnect({ error });
    }
  }

  /**
   * @param {string} reason
   * @param {unknown} [error]
   * @param {Record<string, unknown>} [extra] more fields of the `closed` state event
   */
  async #shutdown(reason, error, extra = {}) {
    if (this.#state !== "closed") {
      this.#abort.abort();
      this.#release();
      if ("document" in globalThis && typeof globalThis.removeEventListener === "function") {
        globalThis.removeEventListener("online", this.#onOnline);
      }
      if (this.#wakeRetry) this.#wakeRetry();
      const ws = this.#ws;
      this.#ws = undefined;
      if (ws) {
        try {
          ws.close(1000, "client closed");
        } catch {
          // ignore
        }
      }
      const closedError = error instanceof ClosedError ? error : new ClosedError(reason, {
        cause: error,
      });
      for (const entry of [...this.#outbox]) {
        this.#forget(entry);
        if (entry.resend) entry.reject(closedError);
        else entry.resolve({ id: entry.frame.id, code: 0, status: "NOT_SENT", msg: reason });
      }
      if (error !== undefined && reason !== "closed") this.#emit("error", error);
      this.#closedReason = reason;
      this.#setState("closed", { reason, error, ...extra });
    }
    await Promise.all([...this.#closing]);
  }

  /** @param {import("./client.d.ts").Message} frame */
  #onFrame(frame) {
    if (frame.type === MessageType.SEND_STATUS) {
      const status = parseStatus(frame.body);
      const list = this.#byId.get(frame.id);
      // Only a frame sent on the current socket can be answered on it.
      const entry = list?.find((e) => e.sentOn !== undefined);
      this.#emit("status", { id: frame.id, type: entry?.frame.type, ...status });
      if (!entry) return;
      this.#forget(entry);
      const result = { id: frame.id, ...status };
      if (status.code === StatusCode.SUCCESS || !entry.resend) entry.resolve(result);
      else entry.reject(new StatusError(frame.id, status));
      return;
    }
    const kind = frame.type === MessageType.RECEIPT ? "r" : "m";
    const key = `${kind}\u0000${frame.from}\u0000${frame.id}`;
    // Every delivered frame is acknowledged (plugin types too), except types declared ephemeral.
    const delivered = frame.type !== MessageType.RECEIPT &&
      !(this.#options.ephemeralTypes ?? []).includes(frame.type);
    if (this.#seen.has(key)) {
      this.#emit("duplicate", frame);
      if (delivered) this.#autoReceipt(frame);
      return;
    }
    this.#seen.add(key);
    if (this.#seen.size > this.#options.dedupeSize) {
      this.#seen.delete(/** @type {string} */ (this.#seen.values().next().value));
    }
    if (frame.type === MessageType.TEXT) {
      this.#emit("message", frame);
    } else if (frame.type === MessageType.NOTICE || frame.type === MessageType.TARGET_NOTICE) {
      this.#emit("notice", {
        message: frame,
        notice: parseNotice(frame.body),
        targeted: frame.type === MessageType.TARGET_NOTICE,
      });
    } else if (frame.type === MessageType.RECEIPT) {
      this.#emit("receipt", {
        id: frame.id,
        from: frame.from,
        message: frame,
        ...parseStatus(frame.body),
      });
    } else {
      this.#emit("custom", frame);
    }
    if (delivered) this.#autoReceipt(frame);
  }

  /** @param {import("./client.d.ts").Message} frame */
  #autoReceipt(frame) {
    if (!this.#options.receipts) return;
    // A copy of this user's own send (from = self, self not in `to`) is not acknowledged: the
    // server would answer 407 (PROTOCOL.md section 10). `to` entries are trimmed, as the server does.
    if (frame.from === this.#userId && !recipients(frame.to).includes(this.#userId ?? "")) return;
    const body = JSON.stringify({ code: 200, status: "SUCCESS", msg: "SUCCESS" });
    this.#sendFrame(MessageType.RECEIPT, frame.from, body, frame.id, false).catch(() => {});
  }
}

/**
 * Creates a client, logs in, connects and registers.
 * @param {import("./client.d.ts").ClientOptions} options
 */
export async function connect(options) {
  const client = new ImClient(options);
  await client.connect();
  return client;
}
