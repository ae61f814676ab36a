/** WebSocket framing: the handshake key, and text frames at each length boundary. */
import { assert, assertEquals } from "../../tests/_assert.ts";
import { Buffer } from "node:buffer";
import type { Duplex } from "node:stream";
import {
  acceptKey,
  PONG_BACKLOG_BYTES,
  switchingProtocols,
  textFrame,
  WsConnection,
} from "./ws_connection.ts";

Deno.test("acceptKey() gives RFC 6455's example answer", () => {
  assertEquals(acceptKey("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
});

Deno.test("switchingProtocols() names the subprotocol only when one was selected", () => {
  const key = "dGhlIHNhbXBsZSBub25jZQ==";
  assertEquals(switchingProtocols(key).includes("Sec-WebSocket-Protocol"), false);
  assertEquals(
    switchingProtocols(key, "im.v1").includes("Sec-WebSocket-Protocol: im.v1\r\n"),
    true,
  );
});

Deno.test("textFrame() uses the 7-bit, 16-bit and 64-bit lengths at their boundaries", () => {
  for (const [length, head] of [[0, 2], [125, 2], [126, 4], [65535, 4], [65536, 10]]) {
    const frame = textFrame("a".repeat(length));
    assertEquals([frame[0], frame.length], [0x81, head + length]);
    const announced = head === 2
      ? frame[1]
      : head === 4
      ? frame.readUInt16BE(2)
      : frame.readUInt32BE(6);
    assertEquals(announced, length);
  }
  // Lengths are bytes, not characters.
  assertEquals(textFrame("é€").subarray(2).toString("utf8"), "é€");
  assertEquals(textFrame("é€")[1], 5);
});

Deno.test("textFrame() encodes a text once for consecutive sends, and anew for another text", () => {
  const text = JSON.stringify({ id: "fan-1", body: "to many sockets" });
  const first = textFrame(text);
  assert(textFrame(text) === first, "the same bytes for the same text");
  assert(textFrame(`${text}`.slice(0)) === first, "an equal string hits too");
  const other = textFrame(JSON.stringify({ id: "fan-2", body: "to many sockets" }));
  assert(other !== first);
  assertEquals(other.subarray(2).toString("utf8"), '{"id":"fan-2","body":"to many sockets"}');
  assertEquals(first.subarray(2).toString("utf8"), text, "an earlier frame is never changed");
});

Deno.test("a peer that sends pings and never reads gets no more pongs once PONG_BACKLOG_BYTES wait", () => {
  // A socket whose peer never reads: everything written stays queued.
  let queued = 0;
  let pongs = 0;
  const handlers = new Map<string, (chunk: Buffer) => void>();
  const socket = {
    writable: true,
    destroyed: false,
    get writableLength() {
      return queued;
    },
    on(event: string, listener: (chunk: Buffer) => void) {
      handlers.set(event, listener);
      return socket;
    },
    write(frame: Uint8Array) {
      queued += frame.length;
      if ((frame[0] & 0x0f) === 0xa) pongs++;
      return false;
    },
  };
  new WsConnection(socket as unknown as Duplex, {
    text() {},
    binary() {},
    activity() {},
    refused() {},
    closed() {},
  }, 65536);
  // 10,000 masked pings of 125 bytes each (a zero mask leaves the payload as is).
  const ping = Buffer.concat([Buffer.from([0x89, 0x80 | 125, 0, 0, 0, 0]), Buffer.alloc(125)]);
  for (let i = 0; i < 100; i++) handlers.get("data")!(Buffer.concat(Array(100).fill(ping)));
  assert(pongs > 0, "pings are answered while little waits");
  assert(queued <= PONG_BACKLOG_BYTES + 127, `queued ${queued} bytes of pongs`);
  assert(pongs < 10_000);
});
