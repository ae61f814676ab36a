/**
 * One WebSocket connection's conversation with the server. Every frame, and
 * every refusal (too large, binary, rate-limited, shutting down), is answered
 * here: the checks run in the order PROTOCOL.md section 6 gives and end in
 * exactly one 9001 frame. The session also owns the connection's limits
 * (register deadline, send budget) and its replay state. The transport only
 * feeds it socket events; it never sees the socket.
 *
 * @module
 */
import {
  BUILT_IN_TYPES,
  CloseCode,
  DELIVERED_TYPES,
  MessageType,
  StatusCode,
  SYSTEM,
} from "../protocol/codes.ts";
import {
  bodyProblem,
  decodeFrame,
  type DecodeResult,
  deliveryText,
  type Message,
  parseJsonBody,
  RegisterBodySchema,
  sendStatusEncoder,
} from "../protocol/frame.ts";
import { parseRecipients } from "../protocol/recipients.ts";
import type { Connection, Hub } from "./hub.ts";
import type { DeliveryService } from "./delivery.ts";
import type { SessionStore } from "./sessions.ts";
import type { MessageKey, StoredMessage } from "./store.ts";
import { ConnectionRateLimit, type RateLimitOptions } from "./rate_limit.ts";
import { type Logger, redact } from "../log.ts";
import { BackendUnavailableError } from "./errors.ts";

/** The answer to a frame: a status code and a readable message. */
export interface Status {
  code: number;
  msg?: string;
}

/** Custom types: the plugin registry as the session sees it. */
export interface CustomTypes {
  /** Whether a plugin claims the type. */
  has(type: number): boolean;
  /** Runs the plugin for an accepted frame; resolves the status to answer. */
  handle(message: Message, sender: Connection): Promise<Status>;
}

/** Lifecycle events for plugins, metrics, webhooks and logs. */
export interface SessionEvents {
  /** A frame was answered. */
  answered?(type: number, code: number): void;
  /** A connection registered. */
  registered?(conn: Connection): void;
  /** A registered connection went away. */
  disconnected?(conn: Connection): void;
  /** A connection or a register was refused by a limit (`reason`, e.g. `user_limit`). */
  refused?(reason: string): void;
  /** A frame was refused by the rate limit. */
  rateLimited?(): void;
  /** A socket opened (+1) or closed (-1). */
  openChanged?(delta: 1 | -1): void;
}

/** The per-connection limits (config `limits` and `websocket`). */
export interface SessionLimits {
  maxFrameBytes: number;
  /** Bytes waiting for the client (socket buffer plus frames held during a replay). */
  maxBufferedBytes: number;
  registerTimeoutSeconds: number;
  maxRecipients: number;
  /** Registered connections per user on this instance (another clientName's). */
  maxConnectionsPerUser?: number;
  /** Frames per connection (token bucket); no limit when absent. */
  rateLimit?: RateLimitOptions;
  /** `limits.maxPendingBytesPerSender`, for the 400 answer's message. */
  maxPendingBytesPerSender?: number;
}

/** What every session shares. */
export interface SessionDeps {
  delivery: DeliveryService;
  sessions: SessionStore;
  hub: Hub;
  custom: CustomTypes;
  logger: Logger;
  events: SessionEvents;
  limits: SessionLimits;
  /**
   * Whether a userId exists, when the server knows every user (`auth.users`
   * without `auth.jwt`); a 2001/3001/3003 to an unknown user then answers 406.
   * Absent: any name is accepted.
   */
  knownUser?(userId: string): boolean;
  /** False once shutdown began: frames are then answered 400. */
  accepting(): boolean;
  /** A new connection id. */
  nextId(): number;
}

/** The socket as the session sees it (the transport adapts the runtime's socket). */
export interface SocketPort {
  /** Sends a text frame; does nothing once the socket is closing. */
  send(text: string): void;
  /** Closes the socket; never throws. */
  close(code: number, reason: string): void;
  /** Bytes sent but not yet written to the network. */
  readonly bufferedAmount: number;
  /** Whether frames can still be sent. */
  readonly isOpen: boolean;
}

/**
 * A replay of stored messages in progress: live frames other than copies of
 * stored messages wait in `held`; copies of stored messages are only counted
 * (the replay reads them from the store).
 */
interface Replay {
  held: string[];
  heldBytes: number;
  /** Copies of stored messages that arrived since the replay's last page read. */
  arrivals: number;
}

/** The 400 answer to a frame whose handling threw: a backend outage says so. */
function failed(error: unknown): Status {
  const msg = error instanceof BackendUnavailableError ? error.message : "Internal error";
  return { code: StatusCode.FAILED, msg };
}

const UNREGISTERED_REPLY = sendStatusEncoder("");
const encoder = new TextEncoder();
/** Bytes sent between two reads of `bufferedAmount` (a call into the runtime). */
const CHECK_EVERY = 65536;
/** Bytes a replay leaves unsent before it waits for the socket to drain. */
const REPLAY_ROOM = 256 * 1024;

/** Keys of the last stored messages a replay sent, remembered after it ends. */
const REPLAYED_KEYS = 1024;
/** Milliseconds the live copy of a message the replay sent may still arrive (and is dropped). */
const REPLAYED_GRACE_MS = 3000;

/** Handles the frames of one connection. */
export class ClientSession {
  #deps: SessionDeps;
  #socket: SocketPort;
  #conn?: Connection;
  #limiter?: ConnectionRateLimit;
  #registerTimer?: ReturnType<typeof setTimeout>;
  /** Frames that arrived while a register was in flight, handled after it. */
  #waiting?: DecodeResult[];
  /** Characters of the frames in `#waiting` (counted against `maxBufferedBytes`). */
  #waitingBytes = 0;
  #replay?: Replay;
  /**
   * The last messages the replay sent (`sender\0id`), kept for a while after
   * it ended: a live copy routed before the register but arriving after the
   * replay's last read (on a Redis Cluster the route is a second step) is
   * then not sent twice.
   */
  #replayed?: Set<string>;
  #replayedUntil = 0;
  #opened = false;
  #closed = false;
  #sentSinceCheck = 0;
  /** Encodes this connection's 9001 replies (to "" until registered). */
  #reply = UNREGISTERED_REPLY;

  constructor(deps: SessionDeps, socket: SocketPort) {
    this.#deps = deps;
    this.#socket = socket;
    const { limits } = deps;
    if (limits.rateLimit) this.#limiter = new ConnectionRateLimit(limits.rateLimit);
    this.#registerTimer = setTimeout(() => {
      if (this.#conn) return;
      this.#refuseConnection("register_timeout", CloseCode.REGISTER_TIMEOUT);
    }, limits.registerTimeoutSeconds * 1000);
    deps.hub.opened(this);
  }

  /** The registered connection, once registered. */
  get connection(): Connection | undefined {
    return this.#conn;
  }

  /** The socket is open. */
  opened(): void {
    if (this.#opened || this.#closed) return;
    this.#opened = true;
    this.#deps.events.openChanged?.(1);
  }

  /** Handles one incoming text frame. */
  receive(text: string): void {
    const { limits } = this.#deps;
    // A UTF-16 length of n is at most 3n UTF-8 bytes; measure only when it matters.
    if (text.length * 3 > limits.maxFrameBytes && byteLength(text) > limits.maxFrameBytes) {
      this.#refuseConnection("frame_too_large", CloseCode.TOO_LARGE);
      return;
    }
    const decoded = decodeFrame(text);
    if (!this.#deps.accepting()) {
      const { id, type } = peek(decoded);
      this.#answer(
        id,
        type,
        StatusCode.FAILED,
        "Server is shutting down: send it again after reconnecting",
      );
      return;
    }
    if (this.#limiter && !this.#withinRate(decoded)) return;
    if (this.#waiting) this.#wait(decoded, text.length);
    else this.#handle(decoded);
  }

  /** Keeps a frame until the register in flight ends, within the connection's budget. */
  #wait(decoded: DecodeResult, size: number): void {
    this.#waiting!.push(decoded);
    this.#waitingBytes += size;
    if (this.#waitingBytes + this.#socket.bufferedAmount > this.#deps.limits.maxBufferedBytes) {
      this.#waiting = [];
      this.#waitingBytes = 0;
      this.#refuseConnection("slow_consumer", CloseCode.SLOW_CONSUMER);
    }
  }

  /** Handles one incoming binary frame: refused, the protocol is text only. */
  receiveBinary(): void {
    this.#answer("", 0, StatusCode.MESSAGE_ERROR, "Frames must be text");
  }

  /** Closes the connection; never throws. */
  close(code: number, reason: string): void {
    this.#socket.close(code, reason);
  }

  /** The socket closed: leave the hub. Safe to call more than once. */
  closed(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#registerTimer);
    this.#replay = undefined;
    const { hub, events } = this.#deps;
    hub.closed(this);
    if (this.#opened) events.openChanged?.(-1);
    const conn = this.#conn;
    if (conn && hub.remove(conn)) events.disconnected?.(conn);
  }

  #withinRate(decoded: DecodeResult): boolean {
    const receipt = decoded.ok && decoded.message.type === MessageType.RECEIPT;
    const verdict = this.#limiter!.take(receipt);
    if (verdict === "ok") return true;
    if (verdict === "close") {
      this.#deps.logger.warn("Closing a connection over its rate limit", {
        user: this.#conn?.userId,
      });
      this.#refuseConnection("rate_limit", CloseCode.RATE_LIMIT);
      return false;
    }
    const { perSecond, burst } = this.#deps.limits.rateLimit!;
    this.#deps.events.rateLimited?.();
    const { id, type } = peek(decoded);
    this.#answer(
      id,
      type,
      StatusCode.FAILED,
      `Rate limit exceeded: at most ${perSecond} frames per second (burst ${burst})`,
    );
    return false;
  }

  #refuseConnection(reason: string, close: { code: number; reason: string }): void {
    this.#deps.events.refused?.(reason);
    this.close(close.code, close.reason);
  }

  #handle(decoded: DecodeResult): void {
    if (!decoded.ok) {
      this.#answer(decoded.id, 0, StatusCode.MESSAGE_ERROR, decoded.msg);
      return;
    }
    const { message, raw } = decoded;
    let recipients: string[] = [];
    let status = this.#check(message);
    if (!status && message.type !== MessageType.REGISTER) {
      const parsed = parseRecipients(message.to, {
        max: this.#deps.limits.maxRecipients,
        allowSystem: message.type === MessageType.RECEIPT,
      });
      if (parsed.ok) recipients = parsed.users;
      status = parsed.ok ? this.#checkRest(message, recipients) : {
        code: StatusCode.TO_ERROR,
        msg: parsed.msg,
      };
    }
    if (status) this.#answer(message.id, message.type, status.code, status.msg);
    else this.#dispatch(message, raw, recipients);
  }

  /** The checks of section 6 up to 405, in its order; undefined when they pass. */
  #check(message: Message): Status | undefined {
    const { type } = message;
    const conn = this.#conn;
    if (type !== MessageType.REGISTER && !conn) {
      return { code: StatusCode.SESSION_ERROR, msg: "Register with a 1000 frame first" };
    }
    if (type === MessageType.SEND_STATUS) {
      return { code: StatusCode.TYPE_ERROR, msg: "Type 9001 is sent by the server only" };
    }
    if (!BUILT_IN_TYPES.has(type) && !this.#deps.custom.has(type)) {
      return { code: StatusCode.TYPE_ERROR, msg: `Unknown type ${type}` };
    }
    if (message.isSystem || message.from === SYSTEM) {
      return { code: StatusCode.FROM_ERROR, msg: "Clients cannot send system frames" };
    }
    if (conn && message.from !== conn.userId) {
      return { code: StatusCode.FROM_ERROR, msg: `"from" must be ${conn.userId}` };
    }
    if (type !== MessageType.REGISTER) return undefined;
    if (conn) return { code: StatusCode.FAILED, msg: "This connection is already registered" };
    const problem = bodyProblem(type, message.body);
    return problem ? { code: StatusCode.BODY_ERROR, msg: problem } : undefined;
  }

  /** The checks after a valid `to` (406 for receipts and unknown users, then 404). */
  #checkRest(message: Message, recipients: string[]): Status | undefined {
    if (message.type === MessageType.RECEIPT && recipients.length !== 1) {
      return { code: StatusCode.TO_ERROR, msg: "A receipt goes to exactly one user" };
    }
    const known = this.#deps.knownUser;
    // A plugin's `to` may name something else (a group): only built-in deliveries are checked.
    if (known && DELIVERED_TYPES.has(message.type)) {
      for (const user of recipients) {
        if (!known(user)) return { code: StatusCode.TO_ERROR, msg: `Unknown recipient: ${user}` };
      }
    }
    const problem = bodyProblem(message.type, message.body);
    return problem ? { code: StatusCode.BODY_ERROR, msg: problem } : undefined;
  }

  #dispatch(message: Message, raw: string, recipients: string[]): void {
    const { id, type } = message;
    if (DELIVERED_TYPES.has(type)) {
      // The busiest path: one promise reaction per frame.
      const conn = this.#conn!;
      this.#deps.delivery.send({
        sender: conn.userId,
        id,
        type,
        recipients,
        text: deliveryText(message, raw),
      }, conn).then(
        ({ duplicate, overQuota }) =>
          overQuota
            ? this.#answer(id, type, StatusCode.FAILED, this.#overQuotaMsg())
            : this.#answer(
              id,
              type,
              StatusCode.SUCCESS,
              duplicate ? "Already accepted" : undefined,
            ),
        (error) => this.#failed(id, type, error),
      );
      return;
    }
    let work: Promise<Status>;
    if (type === MessageType.REGISTER) {
      this.#waiting = [];
      work = this.#register(message);
    } else if (type === MessageType.RECEIPT) {
      work = this.#receipt(message, raw);
    } else {
      work = this.#deps.custom.handle(message, this.#conn!);
    }
    work.then((status) => {
      if (type !== MessageType.REGISTER) this.#answer(id, type, status.code, status.msg);
    }, (error) => this.#failed(id, type, error));
  }

  #overQuotaMsg(): string {
    const max = this.#deps.limits.maxPendingBytesPerSender;
    return `Too many undelivered messages from ${this.#conn!.userId}: at most ${
      max ?? "the limit"
    } bytes may wait for their recipients`;
  }

  /** Answers a frame whose handling threw. */
  #failed(id: string, type: number, error: unknown): void {
    this.#deps.logger.error("Frame failed", { type, error });
    const status = failed(error);
    this.#answer(id, type, status.code, status.msg);
  }

  async #receipt(message: Message, raw: string): Promise<Status> {
    const conn = this.#conn!;
    const known = await this.#deps.delivery.receipt(
      conn.userId,
      { sender: message.to.trim(), id: message.id },
      deliveryText(message, raw),
      conn,
    );
    return known ? { code: StatusCode.SUCCESS } : {
      code: StatusCode.RECEIVE_ERROR,
      msg: `No message "${message.id}" from ${message.to.trim()} to ${conn.userId}`,
    };
  }

  async #register(message: Message): Promise<Status> {
    let status: Status;
    try {
      status = await this.#tryRegister(message);
    } catch (error) {
      this.#deps.logger.error("Register failed", { error });
      status = failed(error);
    }
    if (status.code !== StatusCode.SUCCESS) {
      this.#answer(message.id, message.type, status.code, status.msg);
    }
    const waiting = this.#waiting ?? [];
    this.#waiting = undefined;
    this.#waitingBytes = 0;
    for (const decoded of waiting) this.#handle(decoded);
    return status;
  }

  async #tryRegister(message: Message): Promise<Status> {
    const { sessionId } = parseJsonBody(message.body, RegisterBodySchema)!;
    const sessions = this.#deps.sessions;
    // Checked before it is used up: only a register answered 200 redeems a sessionId.
    const found = await sessions.peek(sessionId);
    if (found && message.from !== found.userId) {
      return { code: StatusCode.FROM_ERROR, msg: `"from" must be ${found.userId}` };
    }
    const refusal = found && this.#userLimit(found.userId, found.clientName);
    if (refusal) return refusal;
    const session = found && await sessions.redeem(sessionId, found.userId);
    if (!session) {
      this.#deps.logger.debug("Register refused: sessionId unknown, expired or used", {
        sessionId: redact(sessionId),
      });
      return { code: StatusCode.SESSION_ERROR, msg: "sessionId is unknown, expired or used" };
    }
    if (this.#closed) return { code: StatusCode.FAILED, msg: "Connection closed" };
    const conn = this.#connection(session.userId, session.clientName);
    this.#conn = conn;
    this.#reply = sendStatusEncoder(conn.userId);
    this.#replay = { held: [], heldBytes: 0, arrivals: 0 };
    clearTimeout(this.#registerTimer);
    await this.#deps.delivery.register(conn, () => {
      this.#answer(message.id, message.type, StatusCode.SUCCESS);
      this.#deps.events.registered?.(conn);
    });
    return { code: StatusCode.SUCCESS };
  }

  /** The refusal of a register past `limits.maxConnectionsPerUser`, if any. */
  #userLimit(userId: string, clientName: string): Status | undefined {
    const limit = this.#deps.limits.maxConnectionsPerUser;
    if (limit === undefined) return undefined;
    let others = 0;
    for (const c of this.#deps.hub.connectionsOf(userId)) if (c.clientName !== clientName) others++;
    if (others < limit) return undefined;
    this.#deps.events.refused?.("user_limit");
    return {
      code: StatusCode.FAILED,
      msg: `Too many connections for user ${userId}: at most ${limit}`,
    };
  }

  /** The registered connection as the hub and delivery see it. */
  #connection(userId: string, clientName: string): Connection {
    return {
      id: this.#deps.nextId(),
      userId,
      clientName,
      since: Date.now(),
      deliver: (text, stored) => {
        const replay = this.#replay;
        if (!replay) {
          if (stored && this.#replayed && this.#sentByReplay(stored)) return;
          return this.#send(text);
        }
        if (stored) {
          replay.arrivals++;
          return;
        }
        replay.held.push(text);
        replay.heldBytes += text.length;
        if (replay.heldBytes + this.#socket.bufferedAmount > this.#deps.limits.maxBufferedBytes) {
          this.#replay = undefined;
          this.#refuseConnection("slow_consumer", CloseCode.SLOW_CONSUMER);
        }
      },
      replay: (message: StoredMessage) => {
        const replayed = this.#replayed ??= new Set();
        if (replayed.size >= REPLAYED_KEYS) replayed.delete(replayed.values().next().value!);
        replayed.add(`${message.sender}\0${message.id}`);
        this.#send(message.text);
      },
      pageRead: () => {
        const replay = this.#replay;
        if (!replay || this.#closed) return false;
        replay.arrivals = 0;
        return true;
      },
      arrived: () => (this.#replay?.arrivals ?? 0) > 0,
      endReplay: () => {
        const replay = this.#replay;
        this.#replay = undefined;
        this.#replayedUntil = Date.now() + REPLAYED_GRACE_MS;
        if (!replay) return;
        for (const text of replay.held) this.#send(text);
      },
      close: (code, reason) => this.close(code, reason),
      drain: () => this.#drain(),
    };
  }

  /** Whether the replay sent the stored message `key` lately (its live copy is then dropped). */
  #sentByReplay(key: MessageKey): boolean {
    if (Date.now() > this.#replayedUntil) {
      this.#replayed = undefined;
      return false;
    }
    return this.#replayed!.delete(`${key.sender}\0${key.id}`);
  }

  /** Sends a frame, closing a client that lets more than the cap pile up (1013). */
  #send(text: string): void {
    const socket = this.#socket;
    // No open-state check here: the port's send makes it (one call into the runtime per frame).
    this.#sentSinceCheck += text.length;
    if (this.#sentSinceCheck > CHECK_EVERY) {
      this.#sentSinceCheck = 0;
      if (socket.bufferedAmount > this.#deps.limits.maxBufferedBytes) {
        this.#refuseConnection("slow_consumer", CloseCode.SLOW_CONSUMER);
        return;
      }
    }
    socket.send(text);
  }

  /**
   * Resolves once the socket's buffer is below {@link REPLAY_ROOM} (or half the
   * cap, if smaller): true, or false once closed. A replay keeps little in
   * flight, so 8 replays at once cost a few MiB, not 8 times half the budget.
   */
  async #drain(): Promise<boolean> {
    const socket = this.#socket;
    const room = Math.min(this.#deps.limits.maxBufferedBytes / 2, REPLAY_ROOM);
    while (socket.isOpen && socket.bufferedAmount > room) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    this.#sentSinceCheck = 0;
    return socket.isOpen;
  }

  #answer(id: string, type: number, code: number, msg?: string): void {
    this.#send(this.#reply(id, code, msg));
    this.#deps.events.answered?.(type, code);
  }
}

/** The id and type of a frame for its answer, as far as they could be read. */
function peek(decoded: DecodeResult): { id: string; type: number } {
  return decoded.ok
    ? { id: decoded.message.id, type: decoded.message.type }
    : { id: decoded.id, type: 0 };
}

function byteLength(text: string): number {
  return encoder.encode(text).length;
}
