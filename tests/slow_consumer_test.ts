import { assert, assertEquals } from "./_assert.ts";
import { login, startServer, wsSession } from "./_helpers.ts";

const encoder = new TextEncoder();

/** A WebSocket text frame from a client (masked with a zero key). */
function clientFrame(text: string): Uint8Array {
  const payload = encoder.encode(text);
  const head = payload.length < 126 ? [0x81, 0x80 | payload.length] : [
    0x81,
    0x80 | 126,
    payload.length >> 8,
    payload.length & 0xff,
  ];
  return new Uint8Array([...head, 0, 0, 0, 0, ...payload]);
}

Deno.test("a client that stops reading is closed with 1013 and loses nothing", async () => {
  await using srv = await startServer({ limits: { maxBufferedBytes: 262144 } });
  const { port } = srv.server;
  // bob registers over a raw TCP socket, then never reads again.
  const token = await login(srv.url, "bob", "bob-pw");
  const sessionId = await wsSession(srv.url, token, "stuck");
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(encoder.encode(
    `GET /websocket HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n` +
      `Sec-WebSocket-Version: 13\r\n\r\n`,
  ));
  const buffer = new Uint8Array(4096);
  const head = new TextDecoder().decode(buffer.subarray(0, (await conn.read(buffer)) ?? 0));
  assert(head.startsWith("HTTP/1.1 101"), head);
  await conn.write(clientFrame(JSON.stringify({
    id: "reg",
    type: 1000,
    isSystem: false,
    from: "u2",
    to: "",
    body: JSON.stringify({ sessionId }),
  })));

  const alice = await srv.connect("alice");
  const big = "x".repeat(30_000);
  const ids: string[] = [];
  // Keep sending until the server gives up on bob (the kernel buffers fill first).
  for (let i = 0; i < 2000; i++) {
    const reply = await alice.text("u2", big, `big-${i}`);
    assertEquals(reply.code, 200);
    ids.push(`big-${i}`);
    if (srv.logs.some((l) => l.line.includes("slow_consumer")) || i % 50 === 49) {
      const metrics = await (await fetch(`${srv.url}/metrics`)).text();
      if (/im_connections_rejected_total\{reason="slow_consumer"\} [1-9]/.test(metrics)) break;
    }
  }
  const metrics = await (await fetch(`${srv.url}/metrics`)).text();
  assert(/im_connections_rejected_total\{reason="slow_consumer"\} 1/.test(metrics), "bob closed");
  conn.close();

  // Everything accepted for bob is still there for his next register, in order.
  const bob = await srv.connect("bob");
  const got: string[] = [];
  for (let i = 0; i < ids.length; i++) got.push((await bob.message()).id);
  assertEquals(got, ids);
});
