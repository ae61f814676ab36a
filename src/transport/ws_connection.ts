/**
 * The server side of one WebSocket (RFC 6455) on a raw `node:net` socket: the
 * handshake answer, a frame reader that counts a message's size over its
 * fragments as they arrive, and text, ping, pong and close frames out. Only
 * what this server needs: no extensions, no binary sends; a binary message is
 * reported, not delivered.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import type { Duplex } from "node:stream";
import { CloseCode } from "../protocol/codes.ts";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`. */
export function acceptKey(key: string): string {
  return createHash("sha1").update(key + GUID).digest("base64");
}

/** The 101 answer to a checked upgrade request. */
export function switchingProtocols(key: string, protocol?: string): string {
  return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
    `Sec-WebSocket-Accept: ${acceptKey(key)}\r\n` +
    (protocol ? `Sec-WebSocket-Protocol: ${protocol}\r\n` : "") + "\r\n";
}

/** What a {@link WsConnection} reports. */
export interface WsHandlers {
  text(text: string): void;
  binary(): void;
  /** Any frame from the peer (for liveness). */
  activity(): void;
  /** The connection closed itself on bad input: 1002 framing, 1007 not UTF-8, 1009 too large. */
  refused(code: number): void;
  /** Once, when the peer's close frame arrives or the socket is gone, whichever is first. */
  closed(): void;
}

/** Milliseconds a closing socket has to finish the close handshake before it is cut. */
const CLOSE_GRACE_MS = 3000;
/**
 * Unsent bytes above which a ping gets no pong: a peer that sends pings and
 * never reads cannot make the server queue pongs for it (RFC 6455 5.5.3 lets an
 * endpoint answer only the latest ping). Data frames have their own cap,
 * `limits.maxBufferedBytes`, in the session.
 */
export const PONG_BACKLOG_BYTES = 65536;
const utf8 = new TextDecoder("utf-8", { fatal: true });
const EMPTY = Buffer.alloc(0);

/** One server-side WebSocket on an upgraded socket. */
export class WsConnection {
  #socket: Duplex;
  #handlers: WsHandlers;
  #maxMessageBytes: number;
  /** Received bytes not parsed yet: kept as chunks until the next frame can be complete. */
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  /** Bytes the frame at the start of `#pending` needs before it can be parsed further. */
  #need = 2;
  /** Fragments of the message being received (text or binary by `#fragmentOp`). */
  #fragments: Buffer[] = [];
  #fragmentBytes = 0;
  #fragmentOp = 0;
  #closeSent = false;
  #ended = false;
  #cut: ReturnType<typeof setTimeout> | undefined;

  constructor(socket: Duplex, handlers: WsHandlers, maxMessageBytes: number) {
    this.#socket = socket;
    this.#handlers = handlers;
    this.#maxMessageBytes = maxMessageBytes;
    socket.on("data", this.#onData);
    socket.on("close", () => {
      clearTimeout(this.#cut);
      this.#end();
    });
    socket.on("error", () => {}); // Followed by close.
  }

  /** Whether frames can still be sent. */
  get isOpen(): boolean {
    return !this.#closeSent && !this.#ended && this.#socket.writable;
  }

  /**
   * Bytes written but not yet handed to the network; 0 once closing (nothing
   * more is sent, so nothing counts against a cap: a slow consumer is refused once).
   */
  get bufferedAmount(): number {
    if (!this.isOpen) return 0;
    return (this.#socket as Duplex & { writableLength: number }).writableLength;
  }

  /** Reads `head` (bytes that came with the upgrade request) as the first data. */
  start(head: Buffer): void {
    if (head.length > 0) this.#onData(head);
  }

  /** Sends a text frame; nothing once closing. */
  send(text: string): void {
    if (this.isOpen) this.#socket.write(textFrame(text));
  }

  /** Sends a ping. */
  ping(): void {
    if (this.isOpen) this.#socket.write(controlFrame(0x9, EMPTY));
  }

  /** Sends a close frame and cuts the socket if the peer does not close within 3 s. */
  close(code: number, reason = ""): void {
    if (this.#closeSent || this.#socket.destroyed) return;
    this.#closeSent = true;
    const body = Buffer.alloc(2 + Buffer.byteLength(reason));
    body.writeUInt16BE(code, 0);
    body.write(reason, 2, "utf8");
    this.#socket.write(controlFrame(0x8, body.subarray(0, Math.min(body.length, 125))));
    this.#cut ??= setTimeout(() => this.#socket.destroy(), CLOSE_GRACE_MS);
  }

  /** Closes with `code` on bad input: stop reading (the peer's TCP window fills, not our memory). */
  #fail(code: number, reason: string) {
    this.#socket.off("data", this.#onData);
    this.#socket.pause();
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#fragments = [];
    this.#handlers.refused(code);
    this.close(code, reason);
    this.#socket.end();
    this.#end();
  }

  #end() {
    if (this.#ended) return;
    this.#ended = true;
    this.#handlers.closed();
  }

  #onData = (chunk: Buffer) => {
    this.#handlers.activity();
    // A frame trickling in byte by byte is gathered, not copied again at every chunk.
    this.#pending.push(chunk);
    this.#pendingBytes += chunk.length;
    if (this.#pendingBytes < this.#need) return;
    let buf = this.#pending.length === 1 ? chunk : Buffer.concat(this.#pending);
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#need = 2;
    while (buf.length >= 2) {
      const b0 = buf[0];
      const b1 = buf[1];
      const fin = (b0 & 0x80) !== 0;
      const opcode = b0 & 0x0f;
      if ((b0 & 0x70) !== 0) return this.#fail(1002, "reserved bits set");
      if ((b1 & 0x80) === 0) return this.#fail(1002, "client frames must be masked");
      let length = b1 & 0x7f;
      let at = 2;
      if (length === 126) {
        if (buf.length < 4) {
          this.#need = 4;
          break;
        }
        length = buf.readUInt16BE(2);
        at = 4;
      } else if (length === 127) {
        if (buf.length < 10) {
          this.#need = 10;
          break;
        }
        if (buf.readUInt32BE(2) !== 0) {
          return this.#fail(CloseCode.TOO_LARGE.code, CloseCode.TOO_LARGE.reason);
        }
        length = buf.readUInt32BE(6);
        at = 10;
      }
      const control = opcode >= 0x8;
      if (control && (length > 125 || !fin)) {
        return this.#fail(1002, "bad control frame");
      }
      // The cap counts the whole message, before its payload is read.
      if (!control && this.#fragmentBytes + length > this.#maxMessageBytes) {
        return this.#fail(CloseCode.TOO_LARGE.code, CloseCode.TOO_LARGE.reason);
      }
      if (buf.length < at + 4 + length) {
        this.#need = at + 4 + length;
        break;
      }
      const payload = buf.subarray(at + 4, at + 4 + length);
      unmask(payload, buf, at);
      buf = buf.subarray(at + 4 + length);
      if (this.#frame(opcode, fin, payload) === false) return;
    }
    if (buf.length > 0) {
      this.#pending = [Buffer.from(buf)];
      this.#pendingBytes = buf.length;
    }
  };

  /** Handles one frame; false when the connection ended. */
  #frame(opcode: number, fin: boolean, payload: Buffer): boolean {
    switch (opcode) {
      case 0x1:
      case 0x2:
        if (this.#fragmentOp !== 0) {
          return this.#fail(1002, "a new message inside a message"), false;
        }
        if (fin) return this.#message(opcode, payload);
        this.#fragmentOp = opcode;
        this.#fragments.push(Buffer.from(payload));
        this.#fragmentBytes = payload.length;
        return true;
      case 0x0: {
        if (this.#fragmentOp === 0) {
          return this.#fail(1002, "a continuation without a message"), false;
        }
        this.#fragments.push(Buffer.from(payload));
        this.#fragmentBytes += payload.length;
        if (!fin) return true;
        const whole = Buffer.concat(this.#fragments);
        const op = this.#fragmentOp;
        this.#fragments = [];
        this.#fragmentBytes = 0;
        this.#fragmentOp = 0;
        return this.#message(op, whole);
      }
      case 0x8: {
        const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1000;
        this.close(code === 1005 || code < 1000 ? 1000 : code);
        this.#socket.end();
        this.#end();
        return false;
      }
      case 0x9:
        if (this.isOpen && this.bufferedAmount <= PONG_BACKLOG_BYTES) {
          this.#socket.write(controlFrame(0xa, payload));
        }
        return true;
      case 0xa:
        return true;
      default:
        return this.#fail(1002, `unknown opcode ${opcode}`), false;
    }
  }

  #message(opcode: number, payload: Buffer): boolean {
    if (this.#closeSent) return true;
    if (opcode === 0x2) {
      this.#handlers.binary();
      return !this.#ended;
    }
    let text: string;
    try {
      text = utf8.decode(payload);
    } catch {
      this.#fail(1007, "text is not UTF-8");
      return false;
    }
    this.#handlers.text(text);
    return !this.#ended;
  }
}

/** XORs `payload` with the 4-byte mask at `buf[at..at+4]`, in place. */
function unmask(payload: Buffer, buf: Buffer, at: number) {
  const m0 = buf[at], m1 = buf[at + 1], m2 = buf[at + 2], m3 = buf[at + 3];
  if ((m0 | m1 | m2 | m3) === 0) return;
  const n = payload.length;
  let i = 0;
  for (; i + 3 < n; i += 4) {
    payload[i] ^= m0;
    payload[i + 1] ^= m1;
    payload[i + 2] ^= m2;
    payload[i + 3] ^= m3;
  }
  const mask = [m0, m1, m2, m3];
  for (; i < n; i++) payload[i] ^= mask[i & 3];
}

/**
 * The last frame built and its text: a fan-out sends one text to many sockets
 * in a row, and a server's frames are unmasked, so they can share the bytes
 * (sockets only read what they are given).
 */
let lastText: string | undefined;
let lastFrame: Buffer = EMPTY;

/**
 * An unmasked, final text frame holding `text` (RFC 6455 section 5.2), in one
 * buffer; encoded once for consecutive sends of the same text.
 */
export function textFrame(text: string): Buffer {
  if (text === lastText) return lastFrame;
  const frame = buildTextFrame(text);
  lastText = text;
  lastFrame = frame;
  return frame;
}

function buildTextFrame(text: string): Buffer {
  const n = Buffer.byteLength(text);
  const head = n < 126 ? 2 : n < 65536 ? 4 : 10;
  const frame = Buffer.allocUnsafe(head + n);
  frame[0] = 0x81;
  if (n < 126) {
    frame[1] = n;
  } else if (n < 65536) {
    frame[1] = 126;
    frame.writeUInt16BE(n, 2);
  } else {
    frame[1] = 127;
    frame.writeUInt32BE(Math.floor(n / 2 ** 32), 2);
    frame.writeUInt32BE(n >>> 0, 6);
  }
  frame.write(text, head, "utf8");
  return frame;
}

function controlFrame(opcode: number, payload: Buffer): Buffer {
  const frame = Buffer.allocUnsafe(2 + payload.length);
  frame[0] = 0x80 | opcode;
  frame[1] = payload.length;
  payload.copy(frame, 2);
  return frame;
}
