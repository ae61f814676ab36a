/**
 * Message type codes and status codes of the wire protocol. The numbers and
 * names come from the original module and never change.
 *
 * @module
 */

/** Built-in message type codes (`type` field of a frame). */
export const MessageType = {
  /** Register a connection with a sessionId. */
  REGISTER: 1000,
  /** Text message; the body is the text. */
  TEXT: 2001,
  /** Notice; the body is a NoticeBody JSON string. */
  NOTICE: 3001,
  /** Notice whose `target` the client may change. */
  TARGET_NOTICE: 3003,
  /** Send status, server to client only. */
  SEND_STATUS: 9001,
  /** Receive status (receipt), client to server to the original sender. */
  RECEIPT: 9101,
} as const;

/** Every type code the server handles itself; plugins may not claim these. */
export const BUILT_IN_TYPES: ReadonlySet<number> = new Set(Object.values(MessageType));

/** Types that are stored and delivered to users in `to`. */
export const DELIVERED_TYPES: ReadonlySet<number> = new Set([
  MessageType.TEXT,
  MessageType.NOTICE,
  MessageType.TARGET_NOTICE,
]);

/** Status codes carried in a StatusBody. */
export const StatusCode = {
  SUCCESS: 200,
  FAILED: 400,
  MESSAGE_ERROR: 401,
  SESSION_ERROR: 402,
  TYPE_ERROR: 403,
  BODY_ERROR: 404,
  FROM_ERROR: 405,
  TO_ERROR: 406,
  RECEIVE_ERROR: 407,
} as const;

/** A status name, such as `"SUCCESS"` or `"SESSION_ERROR"`. */
export type StatusName = keyof typeof StatusCode;

/** A status code number. */
export type StatusCodeValue = typeof StatusCode[StatusName];

const NAMES = new Map<number, StatusName>(
  Object.entries(StatusCode).map(([name, code]) => [code, name as StatusName]),
);

/** The name of a status code (`200` → `"SUCCESS"`), or undefined for an unknown code. */
export function statusName(code: number): StatusName | undefined {
  return NAMES.get(code);
}

/** The `from` value of frames sent by the server or by business backends. */
export const SYSTEM = "SYSTEM";

/**
 * WebSocket close codes the server sends, with their reasons. Every close the
 * server makes uses one of these; docs/CLIENT.md says what a client does on each.
 */
export const CloseCode = {
  /** The server is shutting down (or a ping went unanswered). */
  GOING_AWAY: { code: 1001, reason: "going away" },
  /** No register within `websocket.registerTimeoutSeconds`. */
  REGISTER_TIMEOUT: { code: 1008, reason: "register timeout" },
  /** Over its rate limit for `limits.rateLimit.closeAfterSeconds`. */
  RATE_LIMIT: { code: 1008, reason: "rate limit exceeded" },
  /** A frame larger than `limits.maxFrameBytes`. */
  TOO_LARGE: { code: 1009, reason: "frame too large" },
  /** More than `limits.maxBufferedBytes` waiting to be sent to it. */
  SLOW_CONSUMER: { code: 1013, reason: "slow consumer" },
  /** A newer register of the same (userId, clientName). */
  REPLACED: { code: 4001, reason: "replaced" },
  /** Kicked by the business API (`POST /server/kick`). */
  KICKED: { code: 4003, reason: "kicked" },
} as const;

/** A close code with its reason. */
export interface Close {
  readonly code: number;
  readonly reason: string;
}
