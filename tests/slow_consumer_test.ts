import { assert, assertEquals } from "./_assert.ts";
import { registerRaw, startServer, TEST_USERS } from "./_helpers.ts";

Deno.test("a client that stops reading is closed with 1013 and loses nothing", async () => {
  await using srv = await startServer({ limits: { maxBufferedBytes: 262144 } });
  const { port } = srv.server;
  // bob registers over a raw TCP socket, then never reads again.
  const conn = await registerRaw(srv.url, port, TEST_USERS[1], "stuck");

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
