/**
 * The pipe between the server and a plugin host process: each message is JSON
 * framed by a 4-byte length. Writes made while one is in progress go out
 * together in one write.
 *
 * JSON, not `node:v8`'s structured-clone serializer: in Deno 2.9.6 a
 * `serialize`/`deserialize` round trip grows the process's RSS by ~3.5 KB that
 * is never given back (measured: 1 M small messages, 3.2 GB), and what crosses
 * here is JSON-shaped anyway (frames, config sections, statuses, log fields).
 *
 * @module
 */
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One end of the pipe. */
export class Channel {
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #queue: Uint8Array[] = [];
  #queued = 0;
  #flushing = false;
  #closed = false;

  constructor(writable: WritableStream<Uint8Array>) {
    this.#writer = writable.getWriter();
  }

  /** Queues a message; it is written with the others queued meanwhile. Throws if it is not JSON. */
  post(message: unknown): void {
    if (this.#closed) return;
    const body = encoder.encode(JSON.stringify(message));
    const head = new Uint8Array(4);
    new DataView(head.buffer).setUint32(0, body.length);
    this.#queue.push(head, body);
    this.#queued += 4 + body.length;
    if (!this.#flushing) this.#flush();
  }

  async #flush() {
    this.#flushing = true;
    try {
      while (this.#queue.length > 0 && !this.#closed) {
        const all = new Uint8Array(this.#queued);
        let at = 0;
        for (const part of this.#queue) {
          all.set(part, at);
          at += part.length;
        }
        this.#queue = [];
        this.#queued = 0;
        await this.#writer.write(all);
      }
    } catch {
      this.#closed = true; // The other end is gone; its exit is handled elsewhere.
    } finally {
      this.#flushing = false;
    }
  }

  /** Stops writing (the other end is gone or going). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#writer.close().catch(() => {});
  }
}

/** Largest message read from the other end: a frame, a config or a log line is far smaller. */
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

/** Thrown by {@link messages} when the other end announces a message over the cap. */
export class OversizeMessageError extends Error {
  override name = "OversizeMessageError";
}

/**
 * Reads the messages of a stream until it ends. A message announced larger
 * than `maxBytes` throws {@link OversizeMessageError} before any of it is
 * buffered (a host process cannot make the server hold what it likes).
 */
export async function* messages(
  readable: ReadableStream<Uint8Array>,
  maxBytes = MAX_MESSAGE_BYTES,
): AsyncGenerator<unknown> {
  let chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of readable) {
    chunks.push(chunk);
    size += chunk.length;
    if (size < 4) continue;
    let buf = chunks.length === 1 ? chunks[0] : concat(chunks, size);
    let at = 0;
    const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    while (buf.length - at >= 4) {
      const length = view.getUint32(at);
      if (length > maxBytes) {
        throw new OversizeMessageError(
          `A message of ${length} bytes is over the ${maxBytes}-byte cap`,
        );
      }
      if (buf.length - at - 4 < length) break;
      yield JSON.parse(decoder.decode(buf.subarray(at + 4, at + 4 + length)));
      at += 4 + length;
    }
    buf = buf.subarray(at);
    chunks = buf.length > 0 ? [buf] : [];
    size = buf.length;
  }
}

function concat(chunks: Uint8Array[], size: number): Uint8Array {
  const all = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    all.set(chunk, at);
    at += chunk.length;
  }
  return all;
}
