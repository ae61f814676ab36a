/**
 * Frames and bodies: the zod schemas that define them, `decodeFrame` for the
 * first check of every incoming message, and the encoders for server frames.
 *
 * @module
 */
import { z } from "zod";
import { MessageType, type StatusName, statusName, SYSTEM } from "./codes.ts";
import { zodMessage } from "../util/zod_message.ts";

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
  /** Milliseconds since the epoch; filled in by the server when absent. */
  timestamp?: number;
}

/** The envelope every frame must have. Extra fields are kept and forwarded. */
export const MessageSchema = z.looseObject({
  id: z.string().min(1, "must be a non-empty string"),
  type: z.int(),
  isSystem: z.boolean(),
  from: z.string(),
  to: z.string(),
  body: z.string(),
  timestamp: z.int().nonnegative().nullish(),
});

/** Body of a 1000 register frame. */
export const RegisterBodySchema = z.object({ sessionId: z.string().min(1) });

/** Body of 3001 and 3003 notices. */
export const NoticeBodySchema = z.object({
  title: z.string().min(1),
  msg: z.string().min(1),
  target: z.string().optional(),
  serviceId: z.string().optional(),
});

/** A NoticeBody. */
export type NoticeBody = z.infer<typeof NoticeBodySchema>;

/** Body of 9001 and 9101 frames: a status code with its name and a readable message. */
export const StatusBodySchema = z.object({
  code: z.int(),
  status: z.string(),
  msg: z.string(),
}).refine((body) => statusName(body.code) === body.status, {
  message: "status must be the name of a known code",
});

/** A StatusBody. */
export interface StatusBody {
  code: number;
  status: StatusName;
  msg: string;
}

/** Result of {@link decodeFrame}. */
export type DecodeResult =
  | { ok: true; message: Message; raw: string }
  | { ok: false; id: string; msg: string };

/**
 * The hot-path form of {@link MessageSchema}: the same rules without building
 * a copy or issues. `src/protocol/frame_test.ts` checks that the two always agree.
 */
function isEnvelope(v: Record<string, unknown>): boolean {
  const ts = v.timestamp;
  return typeof v.id === "string" && v.id !== "" && Number.isSafeInteger(v.type) &&
    typeof v.isSystem === "boolean" && typeof v.from === "string" && typeof v.to === "string" &&
    typeof v.body === "string" &&
    (ts === undefined || ts === null || (Number.isSafeInteger(ts) && (ts as number) >= 0));
}

/**
 * Parses one incoming text frame and checks its envelope (the 401 MESSAGE_ERROR
 * check). On failure it still returns the frame's id when that could be read.
 */
export function decodeFrame(text: string): DecodeResult {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, id: "", msg: "Frame is not valid JSON" };
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return { ok: false, id: "", msg: "Frame is not a JSON object" };
  }
  if (isEnvelope(value as Record<string, unknown>)) {
    const message = value as Message;
    if (message.timestamp === null) delete message.timestamp;
    return { ok: true, message, raw: text };
  }
  // Not a valid envelope: let the schema say what is wrong.
  const parsed = MessageSchema.safeParse(value);
  if (!parsed.success) {
    const rawId = (value as { id?: unknown }).id;
    return { ok: false, id: typeof rawId === "string" ? rawId : "", msg: zodMessage(parsed.error) };
  }
  const message = parsed.data as Message;
  if (message.timestamp === null) delete message.timestamp;
  return { ok: true, message, raw: text };
}

/** Parses a JSON body with a schema; returns undefined when it does not fit. */
export function parseJsonBody<T>(body: string, schema: z.ZodType<T>): T | undefined {
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    return undefined;
  }
  const parsed = schema.safeParse(value);
  return parsed.success ? parsed.data : undefined;
}

/** The JSON text of a StatusBody for a code. */
export function statusBody(code: number, msg?: string): string {
  const status = statusName(code) ?? "FAILED";
  return JSON.stringify({ code, status, msg: msg ?? status });
}

/** `body` values of 9001 frames with the default msg, already JSON-encoded as strings. */
const DEFAULT_BODIES = new Map<number, string>();

/** The `body` of a 9001 frame, JSON-encoded (a JSON string holding the StatusBody's JSON). */
function sendStatusBody(code: number, msg?: string): string {
  let body = msg === undefined ? DEFAULT_BODIES.get(code) : undefined;
  if (body === undefined) {
    body = JSON.stringify(statusBody(code, msg));
    if (msg === undefined) DEFAULT_BODIES.set(code, body);
  }
  return body;
}

/**
 * An encoder of 9001 replies to one user (a connection's): the constant part
 * of the frame is built once, so a reply costs one `JSON.stringify` of its id.
 */
export function sendStatusEncoder(to: string): (id: string, code: number, msg?: string) => string {
  const middle = `,"type":${MessageType.SEND_STATUS},"isSystem":true,"from":"${SYSTEM}",` +
    `"to":${JSON.stringify(to)},"body":`;
  return (id, code, msg) =>
    `{"id":${JSON.stringify(id)}${middle}${sendStatusBody(code, msg)},"timestamp":${Date.now()}}`;
}

/** Encodes the 9001 reply to a frame. */
export function encodeSendStatus(id: string, to: string, code: number, msg?: string): string {
  return sendStatusEncoder(to)(id, code, msg);
}

/**
 * The text to deliver for an accepted frame: the original text unchanged when
 * it has a timestamp, otherwise the frame with the server's timestamp added.
 */
export function deliveryText(message: Message, raw: string): string {
  if (message.timestamp !== undefined && message.timestamp !== null) return raw;
  message.timestamp = Date.now();
  return JSON.stringify(message);
}

/**
 * Why a body is not valid for its built-in type (the 404 BODY_ERROR check),
 * or undefined when it is (or the type is not built in: plugins check theirs).
 */
export function bodyProblem(type: number, body: string): string | undefined {
  switch (type) {
    case MessageType.TEXT:
      return body === "" ? "Text body is empty" : undefined;
    case MessageType.NOTICE:
    case MessageType.TARGET_NOTICE:
      return parseJsonBody(body, NoticeBodySchema)
        ? undefined
        : "Body must be the JSON string of a NoticeBody with non-empty title and msg";
    case MessageType.RECEIPT:
      return parseJsonBody(body, StatusBodySchema)
        ? undefined
        : "Body must be the JSON string of a StatusBody {code, status, msg}";
    case MessageType.REGISTER:
      return parseJsonBody(body, RegisterBodySchema)
        ? undefined
        : 'Body must be the JSON string of {"sessionId": "…"}';
    default:
      return undefined;
  }
}

/**
 * Encodes a frame the server builds (business API, plugins) with every field
 * in one order, `timestamp` defaulting to now; callers never hand-build frame JSON.
 */
export function encodeFrame(frame: Message): string {
  return JSON.stringify({
    id: frame.id,
    type: frame.type,
    isSystem: frame.isSystem,
    from: frame.from,
    to: frame.to,
    body: frame.body,
    timestamp: frame.timestamp ?? Date.now(),
  });
}

/** Encodes a frame sent by the system (`isSystem: true`, `from: "SYSTEM"`). */
export function encodeSystemFrame(id: string, type: number, to: string, body: string): string {
  return encodeFrame({ id, type, isSystem: true, from: SYSTEM, to, body });
}
