/**
 * One WebSocket connection's conversation with the server: every frame is
 * checked in the order PROTOCOL.md section 6 gives and answered by exactly one
 * 9001 frame. The transport feeds it text; it never sees the socket.
 *
 * @module
 */
import {
  BUILT_IN_TYPES,
  DELIVERED_TYPES,
  MessageType,
  StatusCode,
  SYSTEM,
} from "../protocol/codes.ts";
import {
  decodeFrame,
  deliveryText,
  type Message,
  NoticeBodySchema,
  parseJsonBody,
  RegisterBodySchema,
  sendStatusEncoder,
  splitRecipients,
  StatusBodySchema,
} from "../protocol/frame.ts";
import type { Connection, Hub } from "./hub.ts";
import type { DeliveryService } from "./delivery.ts";
import type { SessionStore } from "./sessions.ts";
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
  handle(message: Message, raw: string, sender: Connection): Promise<Status>;
}

/** Lifecycle events for plugins, metrics and webhooks. */
export interface SessionEvents {
  /** A frame was answered. */
  answered?(type: number, code: number): void;
  /** A connection registered. */
  registered?(conn: Connection): void;
  /** A registered connection went away. */
  disconnected?(conn: Connection): void;
  /** A register was refused by a limit (`reason`, e.g. `user_limit`). */
  refused?(reason: string): void;
}

/** What every session shares. */
export interface SessionDeps {
  delivery: DeliveryService;
  sessions: SessionStore;
  hub: Hub;
  custom: CustomTypes;
  logger: Logger;
  events: SessionEvents;
  maxRecipients: number;
  /** `limits.maxPendingBytesPerSender`, for the 400 answer's message. */
  maxPendingBytesPerSender?: number;
  /**
   * Whether a userId exists, when the server knows every user (`auth.users`
   * without `auth.jwt`); a frame to an unknown user then answers 406. Absent:
   * any name is accepted.
   */
  knownUser?(userId: string): boolean;
  /**
   * Registered connections per user on this instance; a register beyond it is
   * refused (a replacement of the same clientName does not count). No limit when absent.
   */
  maxConnectionsPerUser?: number;
  /**
   * Characters of incoming frames held while a register (and its replay) is
   * in flight; past it the connection is closed with 1013. @default 8388608
   */
  maxQueuedBytes?: number;
  /** A new connection id. */
  nextId(): number;
}

/** How the session talks back through its socket. */
export interface SocketPort {
  send(text: string): void;
  close(code: number, reason: string): void;
  /** Resolves once the socket has room again: true, or false when it closed. */
  drain?(): Promise<boolean>;
  /** Bytes sent but not yet written by the socket. */
  buffered?(): number;
}

/** The 400 answer to a frame whose handling threw: a backend outage says so. */
function failed(error: unknown): Status {
  const msg = error instanceof BackendUnavailableError ? error.message : "Internal error";
  return { code: StatusCode.FAILED, msg };
}

const UNREGISTERED_REPLY = sendStatusEncoder("");

/** Handles the frames of one connection. */
export class ClientSession {
  #deps: SessionDeps;
  #socket: SocketPort;
  #conn?: Connection;
  /** Frames that arrived while a register was in flight, handled after it. */
  #waiting?: string[];
  /** Characters in `#waiting`. */
  #waitingBytes = 0;
  #closed = false;
  /** Encodes this connection's 9001 replies (to "" until registered). */
  #reply = UNREGISTERED_REPLY;

  constructor(deps: SessionDeps, socket: SocketPort) {
    this.#deps = deps;
    this.#socket = socket;
  }

  /** The registered connection, once registered. */
  get connection(): Connection | undefined {
    return this.#conn;
  }

  /** Handles one incoming text frame. */
  receive(text: string): void {
    if (this.#waiting) {
      this.#waiting.push(text);
      this.#waitingBytes += text.length;
      if (this.#waitingBytes > (this.#deps.maxQueuedBytes ?? 8 * 1024 * 1024)) {
        this.#waiting = [];
        this.#waitingBytes = 0;
        this.#socket.close(1013, "slow consumer");
      }
      return;
    }
    const decoded = decodeFrame(text);
    if (!decoded.ok) {
      this.#answer(decoded.id, 0, StatusCode.MESSAGE_ERROR, decoded.msg);
      return;
    }
    const { message, raw } = decoded;
    const recipients = message.type === MessageType.REGISTER
      ? undefined
      : splitRecipients(message.to);
    const status = this.#check(message, recipients);
    if (status) {
      this.#answer(message.id, message.type, status.code, status.msg);
      return;
    }
    this.#dispatch(message, raw, recipients!);
  }

  /** The connection closed: leave the hub. Safe to call more than once. */
  closed(): void {
    if (this.#closed) return;
    this.#closed = true;
    const conn = this.#conn;
    if (conn && this.#deps.hub.remove(conn)) this.#deps.events.disconnected?.(conn);
  }

  /**
   * The checks of section 6 that need no I/O; undefined when they all pass.
   * `recipients`: `to` split (absent for a register).
   */
  #check(message: Message, recipients: string[] | undefined): Status | undefined {
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
    if (type === MessageType.REGISTER) {
      if (conn) return { code: StatusCode.FAILED, msg: "This connection is already registered" };
      return parseJsonBody(message.body, RegisterBodySchema) ? undefined : {
        code: StatusCode.BODY_ERROR,
        msg: 'Body must be the JSON string of {"sessionId": "…"}',
      };
    }
    if (!recipients) {
      return { code: StatusCode.TO_ERROR, msg: '"to" is empty or has an empty entry' };
    }
    if (recipients.length > this.#deps.maxRecipients) {
      return {
        code: StatusCode.TO_ERROR,
        msg: `"to" has more than ${this.#deps.maxRecipients} recipients`,
      };
    }
    if (recipients.includes(SYSTEM) && type !== MessageType.RECEIPT) {
      return { code: StatusCode.TO_ERROR, msg: "SYSTEM cannot receive messages" };
    }
    if (type === MessageType.RECEIPT && recipients.length !== 1) {
      return { code: StatusCode.TO_ERROR, msg: "A receipt goes to exactly one user" };
    }
    const known = this.#deps.knownUser;
    // A plugin's `to` may name something else (a group): only built-in deliveries are checked.
    if (known && DELIVERED_TYPES.has(type)) {
      for (const user of recipients) {
        if (!known(user)) {
          return { code: StatusCode.TO_ERROR, msg: `Unknown recipient: ${user}` };
        }
      }
    }
    return this.#checkBody(message);
  }

  #checkBody(message: Message): Status | undefined {
    switch (message.type) {
      case MessageType.TEXT:
        return message.body === ""
          ? { code: StatusCode.BODY_ERROR, msg: "Text body is empty" }
          : undefined;
      case MessageType.NOTICE:
      case MessageType.TARGET_NOTICE:
        return parseJsonBody(message.body, NoticeBodySchema) ? undefined : {
          code: StatusCode.BODY_ERROR,
          msg: "Body must be the JSON string of a NoticeBody with non-empty title and msg",
        };
      case MessageType.RECEIPT:
        return parseJsonBody(message.body, StatusBodySchema) ? undefined : {
          code: StatusCode.BODY_ERROR,
          msg: "Body must be the JSON string of a StatusBody {code, status, msg}",
        };
      default:
        return undefined;
    }
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
      work = this.#deps.custom.handle(message, raw, this.#conn!);
    }
    work.then((status) => {
      if (type !== MessageType.REGISTER) this.#answer(id, type, status.code, status.msg);
    }, (error) => this.#failed(id, type, error));
  }

  #overQuotaMsg(): string {
    const max = this.#deps.maxPendingBytesPerSender;
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
      { sender: message.to, id: message.id },
      deliveryText(message, raw),
      conn,
    );
    return known ? { code: StatusCode.SUCCESS } : {
      code: StatusCode.RECEIVE_ERROR,
      msg: `No message "${message.id}" from ${message.to} to ${conn.userId}`,
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
    for (const text of waiting) this.receive(text);
    return status;
  }

  async #tryRegister(message: Message): Promise<Status> {
    const { sessionId } = parseJsonBody(message.body, RegisterBodySchema)!;
    const session = await this.#deps.sessions.redeem(sessionId);
    if (!session) {
      this.#deps.logger.debug("Register refused: sessionId unknown, expired or used", {
        sessionId: redact(sessionId),
      });
      return { code: StatusCode.SESSION_ERROR, msg: "sessionId is unknown, expired or used" };
    }
    if (message.from !== session.userId) {
      return { code: StatusCode.FROM_ERROR, msg: `"from" must be ${session.userId}` };
    }
    if (this.#closed) return { code: StatusCode.FAILED, msg: "Connection closed" };
    const limit = this.#deps.maxConnectionsPerUser;
    if (limit !== undefined) {
      let others = 0;
      for (const c of this.#deps.hub.connectionsOf(session.userId)) {
        if (c.clientName !== session.clientName) others++;
      }
      if (others >= limit) {
        this.#deps.events.refused?.("user_limit");
        return {
          code: StatusCode.FAILED,
          msg: `Too many connections for user ${session.userId}: at most ${limit}`,
        };
      }
    }
    const socket = this.#socket;
    const conn: Connection = {
      id: this.#deps.nextId(),
      userId: session.userId,
      clientName: session.clientName,
      since: Date.now(),
      send: (text) => socket.send(text),
      close: (code, reason) => socket.close(code, reason),
      drain: () => socket.drain?.() ?? Promise.resolve(true),
      buffered: () => socket.buffered?.() ?? 0,
    };
    this.#conn = conn;
    this.#reply = sendStatusEncoder(conn.userId);
    await this.#deps.delivery.register(conn, () => {
      this.#answer(message.id, message.type, StatusCode.SUCCESS);
      this.#deps.events.registered?.(conn);
    });
    return { code: StatusCode.SUCCESS };
  }

  #answer(id: string, type: number, code: number, msg?: string): void {
    this.#socket.send(this.#reply(id, code, msg));
    this.#deps.events.answered?.(type, code);
  }
}
