import { assert, assertEquals } from "./_assert.ts";
import { login, startServer, TEST_USERS, TestClient, wsSession } from "./_helpers.ts";
import { RateLimiter } from "../src/core/rate_limit.ts";

Deno.test("RateLimiter is a token bucket that asks to close after sustained abuse", async (t) => {
  let now = 0;
  const limiter = () =>
    new RateLimiter({ perSecond: 2, burst: 3, closeAfterSeconds: 2, now: () => now });

  await t.step("a burst passes, the next frame is limited, tokens come back with time", () => {
    now = 0;
    const bucket = limiter();
    assertEquals([bucket.take(), bucket.take(), bucket.take()], ["ok", "ok", "ok"]);
    assertEquals(bucket.take(), "limited");
    now = 500; // 2 per second: one token back
    assertEquals([bucket.take(), bucket.take()], ["ok", "limited"]);
    now = 10_000; // the bucket holds at most `burst`
    assertEquals([bucket.take(), bucket.take(), bucket.take(), bucket.take()], [
      "ok",
      "ok",
      "ok",
      "limited",
    ]);
  });

  await t.step("refusals for closeAfterSeconds without a calm second answer close", () => {
    now = 0;
    const bucket = limiter();
    for (let i = 0; i < 3; i++) bucket.take();
    const verdicts = [];
    for (now = 0; now <= 2100; now += 100) verdicts.push(bucket.take());
    assert(verdicts.includes("ok"), "refills let some frames through meanwhile");
    assertEquals(verdicts.at(-1), "close");
  });

  await t.step("a calm second ends the run of refusals", () => {
    now = 0;
    const bucket = limiter();
    for (let i = 0; i < 4; i++) bucket.take(); // one refusal at 0
    now = 1500;
    for (let i = 0; i < 4; i++) bucket.take(); // refusals again from 1500
    now = 3000;
    for (let i = 0; i < 3; i++) assert(bucket.take() !== "close");
  });
});

Deno.test("per-connection rate limit: 400 over the limit, 1008 after sustained abuse", async (t) => {
  await using srv = await startServer({
    limits: { rateLimit: { perSecond: 2, burst: 3, closeAfterSeconds: 1 } },
  });
  const alice = await srv.connect("alice"); // the register took one token
  const bob = await srv.connect("bob");

  await t.step("frames beyond the burst answer 400 FAILED with a clear msg", async () => {
    const ids = Array.from({ length: 6 }, () => alice.nextId());
    for (const id of ids) {
      alice.send({ id, type: 2001, isSystem: false, from: "u1", to: "u2", body: id });
    }
    const replies = [];
    for (const id of ids) replies.push(await alice.reply(id));
    const ok = replies.filter((r) => r.code === 200);
    const limited = replies.filter((r) => r.code === 400);
    assert(ok.length >= 2 && ok.length <= 3, JSON.stringify(replies.map((r) => r.code)));
    assert(limited.length >= 3);
    assertEquals(limited[0].status, "FAILED");
    assert(limited[0].msg.startsWith("Rate limit exceeded: at most 2 frames per second"));
    // Only accepted frames were delivered.
    for (let i = 0; i < ok.length; i++) await bob.message();
    assertEquals(await bob.quiet(50), []);
  });

  await t.step("receipts have a larger allowance, so a replay can be acknowledged", async () => {
    // The frame bucket is empty now; 20 receipts fit in the receipt allowance (30).
    const ids = Array.from({ length: 20 }, (_, i) => `ack-${i}`);
    for (const id of ids) {
      alice.send({
        id,
        type: 9101,
        isSystem: false,
        from: "u1",
        to: "u2",
        body: JSON.stringify({ code: 200, status: "SUCCESS", msg: "received" }),
      });
    }
    for (const id of ids) assertEquals((await alice.reply(id)).code, 407, "checked, not limited");
    // Texts whose body mentions "type":9101 get no such allowance (10 receipts would be left).
    const sneaky = Array.from({ length: 5 }, () => alice.nextId());
    for (const id of sneaky) {
      alice.send({ id, type: 2001, isSystem: false, from: "u1", to: "u2", body: '{"type":9101}' });
    }
    const codes = [];
    for (const id of sneaky) codes.push((await alice.reply(id)).code);
    assert(codes.includes(400), JSON.stringify(codes));
    // Nor does an extra top-level field that says 9101: the limit reads the parsed type.
    const meta = Array.from({ length: 5 }, () => alice.nextId());
    for (const id of meta) {
      alice.sendRaw(
        `{"id":"${id}","type":2001,"meta":{"type":9101},"isSystem":false,"from":"u1",` +
          `"to":"u2","body":"x"}`,
      );
    }
    const metaCodes = [];
    for (const id of meta) metaCodes.push((await alice.reply(id)).code);
    assert(metaCodes.every((code) => code === 400), JSON.stringify(metaCodes));
    bob.drain();
  });

  await t.step("a connection that keeps going over the limit is closed with 1008", async () => {
    let closed: CloseEvent | undefined;
    alice.closed.then((event) => closed = event);
    for (let i = 0; i < 100 && !closed; i++) {
      alice.send({
        id: alice.nextId(),
        type: 2001,
        isSystem: false,
        from: "u1",
        to: "u2",
        body: "x",
      });
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const event = await alice.closed;
    assertEquals([event.code, event.reason], [1008, "rate limit exceeded"]);
  });

  await t.step("other connections are not affected; metrics count it", async () => {
    assertEquals((await bob.text("u3", "fine")).code, 200);
    const metrics = await (await fetch(`${srv.url}/metrics`)).text();
    assert(metrics.includes('im_connections_rejected_total{reason="rate_limit"} 1'), metrics);
    assert(/^im_rate_limited_frames_total [1-9]\d*$/m.test(metrics), metrics);
    assert(/^im_frames_in_total\{type="2001",code="400"\} [1-9]\d*$/m.test(metrics), metrics);
  });
});

/** Logs in as `username` and registers a new socket as `clientName`; returns the client and the 9001. */
async function register(url: string, wsUrl: string, username: string, clientName: string) {
  const user = TEST_USERS.find((u) => u.username === username)!;
  const token = await login(url, username, user.password);
  const sessionId = await wsSession(url, token, clientName);
  const client = await TestClient.open(wsUrl);
  const reply = await client.request({
    id: `reg-${clientName}`,
    type: 1000,
    isSystem: false,
    from: user.userId,
    to: "",
    body: JSON.stringify({ sessionId }),
  });
  client.userId = user.userId;
  return { client, reply };
}

Deno.test("limits.maxConnectionsPerUser refuses one more register, not a replacement", async () => {
  await using srv = await startServer({ limits: { maxConnectionsPerUser: 2 } });
  const phone = await srv.connect("alice", "phone");
  const web = await srv.connect("alice", "web");

  const third = await register(srv.url, srv.wsUrl, "alice", "tablet");
  assertEquals(third.reply.code, 400);
  assertEquals(third.reply.status, "FAILED");
  assertEquals(third.reply.msg, "Too many connections for user u1: at most 2");
  assertEquals((await third.client.text("u2", "x")).code, 402, "still not registered");
  await third.client.close();

  const again = await register(srv.url, srv.wsUrl, "alice", "web");
  assertEquals(again.reply.code, 200, "a replacement of the same clientName is allowed");
  assertEquals((await web.closed).code, 4001);
  assertEquals((await phone.text("u2", "phone still works")).code, 200);
  await again.client.close();

  const bob = await srv.connect("bob");
  assertEquals(bob.userId, "u2", "another user is not limited");
  const metrics = await (await fetch(`${srv.url}/metrics`)).text();
  assert(metrics.includes('im_connections_rejected_total{reason="user_limit"} 1'), metrics);
});

Deno.test("limits.maxConnectionsPerIp refuses the upgrade with 429", async () => {
  await using srv = await startServer({ limits: { maxConnectionsPerIp: 2 } });
  const first = await TestClient.open(srv.wsUrl);
  const second = await TestClient.open(srv.wsUrl);
  const refused = await fetch(srv.wsUrl.replace("ws", "http"), {
    headers: {
      upgrade: "websocket",
      connection: "Upgrade",
      "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
      "sec-websocket-version": "13",
    },
  });
  assertEquals(refused.status, 429);
  assertEquals(await refused.json(), { code: 429, msg: "Too many connections from this address" });
  let failed = false;
  try {
    const third = await TestClient.open(srv.wsUrl);
    await third.close();
  } catch {
    failed = true;
  }
  assert(failed, "a real WebSocket cannot open");
  await first.close();
  // A freed slot can be used again (the server sees the close asynchronously).
  let reopened: TestClient | undefined;
  for (let i = 0; i < 50 && !reopened; i++) {
    reopened = await TestClient.open(srv.wsUrl).catch(() => undefined);
    if (!reopened) await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert(reopened);
  await reopened.close();
  await second.close();
  const metrics = await (await fetch(`${srv.url}/metrics`)).text();
  assert(/^im_connections_rejected_total\{reason="ip_limit"\} [2-9]\d*$/m.test(metrics), metrics);
});

Deno.test("websocket.allowedOrigins: a listed Origin opens, another gets 403", async () => {
  await using srv = await startServer({
    websocket: { allowedOrigins: ["https://app.example"] },
  });
  const upgrade = (origin: string) =>
    fetch(srv.wsUrl.replace("ws", "http"), {
      headers: {
        origin,
        upgrade: "websocket",
        connection: "Upgrade",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-version": "13",
      },
    });
  const refused = await upgrade("https://evil.example");
  assertEquals(refused.status, 403);
  assertEquals(await refused.json(), {
    code: 403,
    msg: "Origin https://evil.example is not allowed",
  });

  const socket = new WebSocket(srv.wsUrl, { headers: { origin: "https://app.example" } });
  const opened = await new Promise<boolean>((resolve) => {
    socket.onopen = () => resolve(true);
    socket.onerror = () => resolve(false);
  });
  assert(opened, "the listed origin opens");
  const closed = new Promise((resolve) => socket.onclose = resolve);
  socket.close();
  await closed;

  const evil = new WebSocket(srv.wsUrl, { headers: { origin: "https://evil.example" } });
  const evilOpened = await new Promise<boolean>((resolve) => {
    evil.onopen = () => resolve(true);
    evil.onerror = () => resolve(false);
  });
  assertEquals(evilOpened, false);
  if (evil.readyState !== WebSocket.CLOSED) await new Promise((resolve) => evil.onclose = resolve);

  const metrics = await (await fetch(`${srv.url}/metrics`)).text();
  assert(metrics.includes('im_connections_rejected_total{reason="origin"} 2'), metrics);
});

Deno.test("a refused register logs the sessionId redacted, never in full", async () => {
  await using srv = await startServer();
  const client = await TestClient.open(srv.wsUrl);
  const sessionId = "abcdefghijklmnopqrstuvwxyz012345";
  const reply = await client.request({
    id: "reg",
    type: 1000,
    isSystem: false,
    from: "u1",
    to: "",
    body: JSON.stringify({ sessionId }),
  });
  assertEquals(reply.code, 402);
  await client.close();
  assert(srv.logs.some((l) => l.line.includes("abcd…(32)")), "logged redacted");
  assert(!srv.logs.some((l) => l.line.includes(sessionId)), "never in full");
});

Deno.test("registers and disconnects are logged with userId and clientName", async () => {
  await using srv = await startServer();
  const alice = await srv.connect("alice", "phone");
  await alice.close();
  for (let i = 0; i < 50 && !srv.logs.some((l) => l.line.includes("Disconnected")); i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const lines = srv.logs.filter((l) => l.line.includes("[im:conn]")).map((l) => l.line);
  assert(lines.some((l) => /Registered userId="u1" clientName="phone"/.test(l)), lines.join("\n"));
  assert(
    lines.some((l) => /Disconnected userId="u1" clientName="phone"/.test(l)),
    lines.join("\n"),
  );
});
