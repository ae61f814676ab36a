/**
 * A minimal WebSocket client over `Deno.connect`, for the load generator only.
 *
 * Why not the built-in `WebSocket`: Deno 2.9's client socket turns Nagle's algorithm on
 * (`setsockopt(TCP_NODELAY, 0)`, seen with strace), so a client that sends small frames while an
 * earlier one is unacknowledged waits for the peer's delayed ACK (up to 40 ms on Linux). That made
 * the generator, not the server, set the pace (throughput swinging 8k–26k frames/s with both
 * processes half idle). This client sets `TCP_NODELAY`, writes all frames queued in one task with
 * one `write`, and masks with a zero key (valid per RFC 6455 framing; a real client should use a
 * random key, which only matters against proxies).
 *
 * Text frames only, no extensions; answers pings; `onmessage` gets whole messages.
 *
 * @module
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A connected WebSocket client. */
export class RawWs {
  /** Called with each complete text message. */
  onmessage: (text: string) => void = () => {};
  /** Called once when the connection ends, with the close code (1006 if none). */
  onclose: (code: number) => void = () => {};
  #conn: Deno.TcpConn;
  #out = new Uint8Array(16384);
  #spare = new Uint8Array(16384);
  #outLen = 0;
  #writing = false;
  #scheduled = false;
  #closed = false;
  #closeAfterFlush = false;
  #scratch = new Uint8Array(4096);
  #fragments: Uint8Array[] = [];

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
  }

  /**
   * Connects to `ws://host:port/path` (`path` starts with `/`) and completes the handshake.
   *
   * @example
   * ```ts
   * const ws = await RawWs.connect("127.0.0.1", 8081, "/websocket");
   * ws.onmessage = (text) => console.log(text);
   * ws.send("{}");
   * ```
   */
  static async connect(hostname: string, port: number, path: string): Promise<RawWs> {
    const conn = await Deno.connect({ hostname, port });
    conn.setNoDelay(true);
    const request = `GET ${path} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n` +
      `Sec-WebSocket-Version: 13\r\n\r\n`;
    await writeAll(conn, encoder.encode(request));
    let buf = new Uint8Array(4096);
    let end = 0;
    let headerEnd = -1;
    while (headerEnd < 0) {
      if (end === buf.length) {
        const bigger = new Uint8Array(buf.length * 2);
        bigger.set(buf);
        buf = bigger;
      }
      const n = await conn.read(buf.subarray(end));
      if (n === null) {
        conn.close();
        throw new Error("Connection closed during the WebSocket handshake");
      }
      end += n;
      headerEnd = indexOfCrlfCrlf(buf, end);
    }
    const head = decoder.decode(buf.subarray(0, headerEnd));
    if (!/^HTTP\/1\.1 101/.test(head)) {
      conn.close();
      throw new Error(`WebSocket handshake refused: ${head.split("\r\n")[0]}`);
    }
    const ws = new RawWs(conn);
    // Start reading after the caller has set its handlers: bytes that came with the 101
    // (Socket.IO's open packet does) would otherwise reach the default no-op `onmessage`.
    const initial = buf.slice(headerEnd + 4, end);
    setTimeout(() => ws.#readLoop(initial), 0);
    return ws;
  }

  /** Queues a text message; everything queued in one task goes out in one write. */
  send(text: string): void {
    if (this.#closed) return;
    if (this.#scratch.length < text.length * 3) this.#scratch = new Uint8Array(text.length * 3);
    const len = encoder.encodeInto(text, this.#scratch).written;
    this.#frame(0x81, this.#scratch.subarray(0, len));
  }

  /** Sends a close frame (1000) and closes the TCP connection once it is written. */
  close(): void {
    if (this.#closed) return;
    this.#frame(0x88, new Uint8Array([0x03, 0xe8]));
    this.#closeAfterFlush = true;
    this.#closed = true;
  }

  #frame(first: number, payload: Uint8Array): void {
    const len = payload.length;
    const header = len < 126 ? 6 : len < 65536 ? 8 : 14;
    const need = this.#outLen + header + len;
    if (need > this.#out.length) {
      const bigger = new Uint8Array(Math.max(need, this.#out.length * 2));
      bigger.set(this.#out.subarray(0, this.#outLen));
      this.#out = bigger;
    }
    const out = this.#out;
    let at = this.#outLen;
    out[at++] = first;
    if (len < 126) {
      out[at++] = 0x80 | len;
    } else if (len < 65536) {
      out[at++] = 0x80 | 126;
      out[at++] = len >> 8;
      out[at++] = len & 0xff;
    } else {
      out[at++] = 0x80 | 127;
      out.fill(0, at, at + 4);
      at += 4;
      out[at++] = (len >>> 24) & 0xff;
      out[at++] = (len >> 16) & 0xff;
      out[at++] = (len >> 8) & 0xff;
      out[at++] = len & 0xff;
    }
    out.fill(0, at, at + 4); // zero masking key: the payload stays as it is
    at += 4;
    out.set(payload, at);
    this.#outLen = at + len;
    if (!this.#writing && !this.#scheduled) {
      this.#scheduled = true;
      queueMicrotask(() => {
        this.#scheduled = false;
        this.#flush();
      });
    }
  }

  async #flush(): Promise<void> {
    if (this.#writing) return;
    this.#writing = true;
    try {
      while (this.#outLen > 0) {
        const data = this.#out.subarray(0, this.#outLen);
        const spare = this.#spare;
        this.#spare = this.#out;
        this.#out = spare;
        this.#outLen = 0;
        await writeAll(this.#conn, data);
      }
      if (this.#closeAfterFlush) this.#end(1000);
    } catch {
      this.#end(1006);
    } finally {
      this.#writing = false;
    }
  }

  #ended = false;
  #end(code: number): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
    this.onclose(code);
  }

  async #readLoop(initial: Uint8Array): Promise<void> {
    let buf = new Uint8Array(Math.max(65536, initial.length));
    buf.set(initial);
    let start = 0;
    let end = initial.length;
    let need = 2; // bytes the next frame needs from `start`
    let code = 1006;
    try {
      while (true) {
        // Parse every complete frame in [start, end).
        while (end - start >= 2) {
          const b0 = buf[start];
          const b1 = buf[start + 1];
          let len = b1 & 127;
          let header = 2;
          if (len === 126) {
            if (end - start < 4) break;
            len = (buf[start + 2] << 8) | buf[start + 3];
            header = 4;
          } else if (len === 127) {
            if (end - start < 10) break;
            len = buf[start + 6] * 2 ** 24 + ((buf[start + 7] << 16) | (buf[start + 8] << 8) |
              buf[start + 9]);
            header = 10;
          }
          const masked = (b1 & 0x80) !== 0;
          if (masked) header += 4;
          need = header + len;
          if (end - start < need) break;
          const payload = buf.subarray(start + header, start + need);
          if (masked) {
            for (let i = 0; i < len; i++) payload[i] ^= buf[start + header - 4 + (i & 3)];
          }
          start += need;
          need = 2;
          const opcode = b0 & 0x0f;
          const fin = (b0 & 0x80) !== 0;
          if (opcode === 0x1 && fin) {
            this.onmessage(decoder.decode(payload));
          } else if (opcode === 0x1 || opcode === 0x0) {
            this.#fragments.push(payload.slice());
            if (fin) {
              const whole = new Uint8Array(this.#fragments.reduce((n, f) => n + f.length, 0));
              let at = 0;
              for (const f of this.#fragments) {
                whole.set(f, at);
                at += f.length;
              }
              this.#fragments = [];
              this.onmessage(decoder.decode(whole));
            }
          } else if (opcode === 0x9) {
            this.#frame(0x8a, payload.slice());
          } else if (opcode === 0x8) {
            code = len >= 2 ? (payload[0] << 8) | payload[1] : 1005;
            this.#end(code);
            return;
          }
        }
        if (start === end) {
          start = end = 0;
        } else if (buf.length - start < need) {
          const bigger = new Uint8Array(Math.max(buf.length, need * 2));
          bigger.set(buf.subarray(start, end));
          end -= start;
          start = 0;
          buf = bigger;
        } else if (end === buf.length) {
          buf.copyWithin(0, start, end);
          end -= start;
          start = 0;
        }
        const n = await this.#conn.read(buf.subarray(end));
        if (n === null) break;
        end += n;
      }
    } catch { /* reset or closed by us */ }
    this.#end(code);
  }
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

function indexOfCrlfCrlf(buf: Uint8Array, end: number): number {
  for (let i = 0; i + 3 < end; i++) {
    if (buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 && buf[i + 3] === 10) return i;
  }
  return -1;
}
