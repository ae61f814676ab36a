/**
 * The typed client of the IM server: log in, register a WebSocket connection,
 * send text, notices and custom frames, receive them with receipts, and keep the
 * connection alive across network drops and server restarts.
 *
 * The implementation is the plain ES module `client.js` (no build step, so a
 * browser can load it as it is); these are its types.
 *
 * @example Send and receive
 * ```ts
 * import { connect } from "./client.js";
 *
 * const client = await connect({
 *   url: "http://127.0.0.1:8081",
 *   clientName: "cli",
 *   username: "alice",
 *   password: "secret",
 * });
 * client.on("message", (m) => console.log(`${m.from}: ${m.body}`));
 * const status = await client.send("u2", "hello"); // { id, code: 200, status: "SUCCESS", msg }
 * console.log(status.code);
 * await client.close();
 * ```
 *
 * @module
 */

/** Built-in message type codes (the `type` field of a frame). */
export declare const MessageType: Readonly<{
  /** Register a connection with a sessionId. */
  REGISTER: 1000;
  /** Text message; the body is the text. */
  TEXT: 2001;
  /** Notice; the body is a {@link NoticeBody} JSON string. */
  NOTICE: 3001;
  /** Notice whose `target` the client may change. */
  TARGET_NOTICE: 3003;
  /** Send status, server to client only: the answer to every frame a client sends. */
  SEND_STATUS: 9001;
  /** Receive status (receipt). */
  RECEIPT: 9101;
}>;

/** Status codes carried in a StatusBody. */
export declare const StatusCode: Readonly<{
  SUCCESS: 200;
  FAILED: 400;
  MESSAGE_ERROR: 401;
  SESSION_ERROR: 402;
  TYPE_ERROR: 403;
  BODY_ERROR: 404;
  FROM_ERROR: 405;
  TO_ERROR: 406;
  RECEIVE_ERROR: 407;
}>;

/** A status name, such as `"SUCCESS"` or `"SESSION_ERROR"`. */
export type StatusName = keyof typeof StatusCode;

/** The `from` value of frames sent by the server or by business backends. */
export declare const SYSTEM: "SYSTEM";

/**
 * The name of a status code, or undefined for an unknown code.
 *
 * @example
 * ```ts
 * import { statusName } from "./client.js";
 * statusName(402); // "SESSION_ERROR"
 * ```
 */
export declare function statusName(code: number): StatusName | undefined;

/**
 * A random RFC 4122 version 4 id. Unlike `crypto.randomUUID` it also works in
 * pages that are not a secure context.
 *
 * @example
 * ```ts
 * import { randomId } from "./client.js";
 * const id = randomId(); // "3b241101-e2bb-4255-8caf-4136c566a962"
 * ```
 */
export declare function randomId(): string;

/**
 * The `sub` claim of a JWT, or undefined when the token is not a readable JWT.
 * The signature is not checked: this only tells the client its own userId.
 *
 * @example
 * ```ts
 * import { tokenSubject } from "./client.js";
 * tokenSubject("not a jwt"); // undefined
 * ```
 */
export declare function tokenSubject(token: string): string | undefined;

/** One frame of the wire protocol, as sent and received. */
export interface Message {
  /** Message id chosen by the sender; a message is known by its sender and its id. */
  id: string;
  /** Type code: one of {@link MessageType} or a custom type handled by a plugin. */
  type: number;
  /** True only for frames sent by the system. */
  isSystem: boolean;
  /** Sender's userId, or `SYSTEM`. */
  from: string;
  /** Recipient userId, or several joined by commas. */
  to: string;
  /** Content; its format depends on `type`. */
  body: string;
  /** Milliseconds since the epoch; filled in by the server. */
  timestamp?: number;
}

/** Body of 3001 and 3003 notices. */
export interface NoticeBody {
  /** Non-empty title. */
  title: string;
  /** Non-empty text. */
  msg: string;
  /** Where the notice leads (the client may change it for 3003). */
  target?: string;
  /** Business service the notice comes from. */
  serviceId?: string;
}

/** Body of 9001 and 9101 frames. */
export interface StatusBody {
  /** Status code, such as 200 or 402. */
  code: number;
  /** Its name, such as `"SUCCESS"`. */
  status: StatusName | string;
  /** Readable detail. */
  msg: string;
}

/**
 * What a send resolves with: the 9001 answer of the server. Always code 200 for
 * `send`, `notice`, `sendCustom` and `receipt` (other codes reject with
 * {@link StatusError}).
 */
export interface SendResult extends StatusBody {
  /** The id of the frame that was answered. */
  id: string;
}

/**
 * Connection states:
 * - `idle`: created, `connect()` not called yet (sends are queued);
 * - `connecting`: first login and register;
 * - `open`: registered, frames flow;
 * - `reconnecting`: the connection was lost, waiting or trying again (sends are queued);
 * - `closed`: final, after `close()`, a 4001 replacement, a 4003 kick, a refused credential or
 *   a failed first connect.
 */
export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

/** Detail of the `state` event. */
export interface StateEvent {
  /** The new state. */
  state: ConnectionState;
  /** The state before. */
  previous: ConnectionState;
  /** With `open`: the sessionId this registration used. */
  sessionId?: string;
  /** With `reconnecting`: the attempt number, 1 for the first retry. */
  attempt?: number;
  /** With `reconnecting`: milliseconds until the next attempt. */
  delayMs?: number;
  /**
   * With `reconnecting`: the close code of the lost connection, when it closed. With `closed`
   * after a 4001 replacement or a 4003 kick: that code.
   */
  code?: number;
  /**
   * With `reconnecting` or `closed`: why (`"closed"`, `"replaced"`, `"kicked"`, `"failed"`, a
   * close reason).
   */
  reason?: string;
  /** With `reconnecting` after a failed attempt, or `closed` after a fatal error: the error. */
  error?: unknown;
}

/** Detail of the `notice` event (3001 and 3003 frames). */
export interface NoticeEvent {
  /** The frame as delivered. */
  message: Message;
  /** The parsed body, or undefined when it is not a valid NoticeBody. */
  notice: NoticeBody | undefined;
  /** True for 3003 (the client may change `target`). */
  targeted: boolean;
}

/** Detail of the `receipt` event: a recipient acknowledged a frame this user sent. */
export interface ReceiptEvent extends StatusBody {
  /** The id of the acknowledged message. */
  id: string;
  /** The recipient that acknowledged it. */
  from: string;
  /** The 9101 frame. */
  message: Message;
}

/** Detail of the `status` event: one 9001 answer from the server. */
export interface StatusEvent extends StatusBody {
  /** The id of the answered frame (`""` when the server could not read it). */
  id: string;
  /** The type of the answered frame, when this client sent it. */
  type: number | undefined;
}

/** Detail of the `frame` event: every frame in or out, for logs. */
export interface FrameEvent {
  /** `"in"` from the server, `"out"` to the server. */
  direction: "in" | "out";
  /** The parsed frame; undefined for an incoming text that is not a frame. */
  frame: Message | undefined;
  /** The text on the wire. */
  raw: string;
}

/** The events of {@link ImClient} and their details. */
export interface ClientEventMap {
  /** A text message (2001), after deduplication. */
  message: Message;
  /** A notice (3001 or 3003), after deduplication. */
  notice: NoticeEvent;
  /** A receipt (9101) for a frame this user sent. */
  receipt: ReceiptEvent;
  /** A frame of any other type (custom types of plugins). */
  custom: Message;
  /** A 9001 answer to a frame this client sent (register, receipts and unknown ids included). */
  status: StatusEvent;
  /** The connection state changed, or a reconnect attempt was scheduled. */
  state: StateEvent;
  /** Any frame in or out. */
  frame: FrameEvent;
  /** A frame dropped because its (from, id) was already delivered. */
  duplicate: Message;
  /** A reconnect attempt failed, or the client closed because of an error. */
  error: unknown;
}

/** Reconnection with exponential backoff and jitter. */
export interface ReconnectOptions {
  /** Delay before the first retry. @default {500} */
  minDelayMs?: number;
  /** Longest delay. @default {30000} */
  maxDelayMs?: number;
  /** Each retry waits this many times longer. @default {2} */
  factor?: number;
  /** Part of the delay that is random: 0.5 waits between 50% and 100% of it. @default {0.5} */
  jitter?: number;
}

/** Options of {@link ImClient} and {@link connect}. */
export interface ClientOptions {
  /** HTTP base URL of the server, such as `http://127.0.0.1:8081` or `location.origin`. */
  url: string;
  /** Name of this client (app or device): 1 to 64 characters of `A-Z a-z 0-9 _ . -`. */
  clientName: string;
  /** Username for `POST /app/login` (with `password`). */
  username?: string;
  /** Password for `POST /app/login`; also used to log in again when the token expires. */
  password?: string;
  /** A token instead of a password (issued by `/app/login`, or a JWT from another system). */
  token?: string;
  /** The userId of `token`; read from the JWT's `sub` claim when absent. */
  userId?: string;
  /** WebSocket path on the server (`websocket.context`). @default {"websocket"} */
  context?: string;
  /** Full WebSocket URL, overriding `url` + `context`. */
  wsUrl?: string;
  /**
   * Answer every delivered frame (2001/3001/3003 and plugin types) with a 9101 receipt
   * automatically. @default {true}
   */
  receipts?: boolean;
  /**
   * Types never stored by the server (a plugin's `ephemeral` types, such as typing
   * indicators): not acknowledged. A receipt for one would only be answered 407. @default {[]}
   */
  ephemeralTypes?: readonly number[];
  /** Reconnect settings, or `false` to close instead of reconnecting. */
  reconnect?: ReconnectOptions | false;
  /**
   * Milliseconds to wait for the 9001 of a sent frame before the connection is taken as
   * dead and replaced (the frame is then resent). @default {15000}
   */
  ackTimeoutMs?: number;
  /** Milliseconds to wait for the answer to the register frame. @default {10000} */
  registerTimeoutMs?: number;
  /** Most frames waiting for an answer (sent or queued); more reject at once. @default {1000} */
  maxQueued?: number;
  /** Largest frame in bytes (`limits.maxFrameBytes`); larger sends reject at once. @default {65536} */
  maxFrameBytes?: number;
  /** How many (from, id) pairs are remembered to drop duplicates. @default {10000} */
  dedupeSize?: number;
  /** The fetch to use. @default {globalThis.fetch} */
  fetch?: typeof fetch;
  /** The WebSocket class to use. @default {globalThis.WebSocket} */
  WebSocket?: typeof WebSocket;
}

/** Options of a send. */
export interface SendOptions {
  /** The frame id; a random UUID when absent. Reusing an id makes the server treat it as a resend. */
  id?: string;
}

/** Options of {@link ImClient.notice}. */
export interface NoticeOptions extends SendOptions {
  /** Send a 3003 (the recipient may change `target`) instead of a 3001. @default {false} */
  targeted?: boolean;
}

/** Base class of every error of this client. */
export declare class ImError extends Error {
  constructor(message: string, options?: ErrorOptions);
}

/**
 * The server answered a frame with a status other than 200.
 *
 * @example
 * ```ts
 * import { ImClient, StatusError } from "./client.js";
 * async function trySend(client: ImClient) {
 *   try {
 *     await client.send("", "to nobody");
 *   } catch (error) {
 *     if (error instanceof StatusError) console.log(error.code, error.status); // 406 "TO_ERROR"
 *   }
 * }
 * ```
 */
export declare class StatusError extends ImError {
  constructor(id: string, body: StatusBody);
  /** The id of the refused frame. */
  readonly id: string;
  /** The status code, such as 406. */
  readonly code: number;
  /** The status name, such as `"TO_ERROR"`. */
  readonly status: StatusName | string;
  /** The server's readable reason. */
  readonly msg: string;
}

/** An HTTP call (login or WebSocket login) answered with a non-2xx status, such as 401. */
export declare class HttpError extends ImError {
  constructor(what: string, code: number, msg: string);
  /** The HTTP status. */
  readonly code: number;
  /** The server's readable reason. */
  readonly msg: string;
}

/** The client is closed; frames that were not answered reject with this. */
export declare class ClosedError extends ImError {
  constructor(reason: string, options?: ErrorOptions);
  /**
   * `"closed"` (by `close()`), `"replaced"` (4001: the same client connected elsewhere),
   * `"kicked"` (4003: `POST /server/kick`) or `"failed"`.
   */
  readonly reason: string;
}

/**
 * Logs in with a username and password (`POST /app/login`).
 *
 * @example
 * ```ts
 * import { login } from "./client.js";
 * const { token, userId } = await login("http://127.0.0.1:8081", "alice", "secret");
 * ```
 */
export declare function login(
  url: string,
  username: string,
  password: string,
  options?: { fetch?: typeof fetch; signal?: AbortSignal },
): Promise<{ token: string; userId: string }>;

/**
 * A connection to the IM server for one user and one client name.
 *
 * - Logs in (`POST /app/login`) or uses a given token, gets a fresh sessionId
 *   (`GET /app/websocket/client/login/{clientName}`), opens the WebSocket and registers.
 * - Every send resolves with its 9001 answer, or rejects with {@link StatusError}.
 * - Frames not answered when the connection drops are resent with the same id after the
 *   next register (the server answers 200 again and does not deliver twice).
 * - Reconnects with exponential backoff and jitter; drops duplicate incoming frames by
 *   (from, id); sends a 9101 receipt for every delivered frame (plugin types included, but
 *   not `ephemeralTypes`) unless `receipts: false`.
 *
 * @example Events and async iteration
 * ```ts
 * import { ImClient } from "./client.js";
 *
 * const client = new ImClient({ url: "http://127.0.0.1:8081", clientName: "bot", token: "…", userId: "u2" });
 * client.on("state", (s) => console.log("state", s.state));
 * client.on("receipt", (r) => console.log(`${r.from} read ${r.id}`));
 * await client.connect();
 * for await (const message of client.messages()) {
 *   if (message.body === "ping") await client.send(message.from, "pong");
 * }
 * ```
 */
export declare class ImClient extends EventTarget {
  constructor(options: ClientOptions);
  /** The current connection state. */
  readonly state: ConnectionState;
  /** The user id, known after login (or from the token). */
  readonly userId: string | undefined;
  /** The token in use, known after login. */
  readonly token: string | undefined;
  /** The client name given in the options. */
  readonly clientName: string;
  /** The sessionId of the current (or last) registration. */
  readonly sessionId: string | undefined;
  /** Frames sent or queued that have no answer yet. */
  readonly pending: number;
  /** Logs in with the options' username and password, unless a token was given. */
  login(): Promise<{ token: string; userId: string }>;
  /**
   * Logs in if needed, connects and registers. Rejects, and closes the client, when this
   * first attempt fails (with {@link HttpError} 401 for a bad credential); later drops
   * are repaired by reconnecting.
   */
  connect(): Promise<void>;
  /** Sends a text message (2001) to one user, or several (array or comma-joined). */
  send(to: string | string[], text: string, options?: SendOptions): Promise<SendResult>;
  /** Sends a notice: 3001, or 3003 with `targeted: true`. */
  notice(to: string | string[], notice: NoticeBody, options?: NoticeOptions): Promise<SendResult>;
  /** Sends a frame of any type; an object body is sent as its JSON string. */
  sendCustom(
    type: number,
    to: string | string[],
    body: string | unknown,
    options?: SendOptions,
  ): Promise<SendResult>;
  /** Sends a 9101 receipt for a delivered frame (automatic unless `receipts: false`). */
  receipt(message: Message, code?: number, msg?: string): Promise<SendResult>;
  /** Listens to an event; returns a function that removes the listener. */
  on<K extends keyof ClientEventMap>(
    type: K,
    listener: (detail: ClientEventMap[K]) => void,
  ): () => void;
  /** Events of one kind as an async iterator that ends when the client closes. */
  stream<K extends keyof ClientEventMap>(type: K): AsyncIterableIterator<ClientEventMap[K]>;
  /** Text messages (2001) as an async iterator that ends when the client closes. */
  messages(): AsyncIterableIterator<Message>;
  /**
   * Closes for good: stops reconnecting, rejects unanswered frames with
   * {@link ClosedError}, ends the iterators. Resolves when the socket is closed.
   */
  close(): Promise<void>;
  /** Drops the current socket as a network failure would; the client reconnects. For tests. */
  dropConnection(): void;
}

/**
 * Creates an {@link ImClient}, logs in, connects and registers.
 *
 * @example
 * ```ts
 * import { connect } from "./client.js";
 * const client = await connect({
 *   url: "http://127.0.0.1:8081",
 *   clientName: "web",
 *   username: "alice",
 *   password: "secret",
 * });
 * await client.notice("u2", { title: "Build", msg: "Build 42 passed" }, { targeted: false });
 * await client.close();
 * ```
 */
export declare function connect(options: ClientOptions): Promise<ImClient>;
