import { assert, assertEquals } from "./_assert.ts";
import { type Frame, login, startServer, TestClient, wsSession } from "./_helpers.ts";

const status = (frame: Frame) => JSON.parse(frame.body);

Deno.test("every frame gets exactly one 9001, checks in protocol order", async (t) => {
  await using srv = await startServer({ limits: { maxRecipients: 3 } });
  const alice = await srv.connect("alice");

  const expectCode = async (client: TestClient, frame: unknown, code: number, id?: string) => {
    client.sendRaw(typeof frame === "string" ? frame : JSON.stringify(frame));
    const reply = await client.next((f) => f.type === 9001);
    assertEquals(status(reply).code, code, `${JSON.stringify(frame)} → ${reply.body}`);
    if (id !== undefined) assertEquals(reply.id, id);
    assertEquals(reply.from, "SYSTEM");
    assertEquals(reply.isSystem, true);
    assert(Number.isInteger(reply.timestamp));
    return reply;
  };
  const text = (patch: Record<string, unknown> = {}) => ({
    id: crypto.randomUUID(),
    type: 2001,
    isSystem: false,
    from: "u1",
    to: "u2",
    body: "hi",
    ...patch,
  });

  await t.step("401: not JSON, not an object, missing or mistyped fields", async () => {
    await expectCode(alice, "not json", 401, "");
    await expectCode(alice, "[1,2]", 401, "");
    await expectCode(alice, '"str"', 401, "");
    await expectCode(alice, "null", 401, "");
    const { body: _, ...noBody } = text({ id: "x1" });
    await expectCode(alice, noBody, 401, "x1");
    await expectCode(alice, text({ id: "x2", type: "2001" }), 401, "x2");
    await expectCode(alice, text({ id: "x3", type: 2001.5 }), 401, "x3");
    await expectCode(alice, text({ id: "x4", isSystem: "false" }), 401, "x4");
    await expectCode(alice, text({ id: "x5", to: ["u2"] }), 401, "x5");
    await expectCode(alice, text({ id: "x6", timestamp: "now" }), 401, "x6");
    await expectCode(alice, text({ id: "" }), 401, "");
    await expectCode(alice, text({ id: 7 }), 401, "");
    const reply = await expectCode(alice, text({ id: "x8", from: undefined }), 401, "x8");
    assert(status(reply).msg.includes('"from"'), status(reply).msg);
  });

  await t.step("402: frames before register", async () => {
    const fresh = await TestClient.open(srv.wsUrl);
    const reply = await expectCode(fresh, text({ id: "early" }), 402, "early");
    assertEquals(reply.to, "");
    await fresh.close();
  });

  await t.step("403: unknown types and a client's 9001", async () => {
    await expectCode(alice, text({ id: "t1", type: 4242 }), 403, "t1");
    await expectCode(alice, text({ id: "t2", type: 9001 }), 403, "t2");
  });

  await t.step("405: system frames or a foreign from", async () => {
    await expectCode(alice, text({ isSystem: true }), 405);
    await expectCode(alice, text({ from: "SYSTEM" }), 405);
    await expectCode(alice, text({ from: "u2" }), 405);
  });

  await t.step("406: empty to, empty entry, too many recipients", async () => {
    await expectCode(alice, text({ to: "" }), 406);
    await expectCode(alice, text({ to: "u2,,u3" }), 406);
    await expectCode(alice, text({ to: "u2," }), 406);
    await expectCode(alice, text({ to: "a,b,c,d" }), 406);
    await expectCode(alice, text({ to: "SYSTEM" }), 406);
  });

  await t.step("404: bodies that do not fit their type", async () => {
    await expectCode(alice, text({ body: "" }), 404);
    await expectCode(alice, text({ type: 3001, body: "plain" }), 404);
    await expectCode(alice, text({ type: 3001, body: '{"title":"t"}' }), 404);
    await expectCode(alice, text({ type: 3003, body: '{"title":"","msg":"m"}' }), 404);
    await expectCode(alice, text({ type: 9101, body: '{"code":200}' }), 404);
    await expectCode(
      alice,
      text({ type: 9101, body: '{"code":200,"status":"FAILED","msg":""}' }),
      404,
    );
  });

  await t.step("order: the first failing check decides", async () => {
    // Unknown type and a foreign from and an empty to: 403 wins.
    await expectCode(alice, text({ type: 5555, from: "u9", to: "" }), 403);
    // Foreign from and empty to: 405 wins over 406.
    await expectCode(alice, text({ from: "u9", to: "" }), 405);
    // Empty to and bad body: 406 wins over 404.
    await expectCode(alice, text({ to: "", body: "" }), 406);
  });

  await t.step("407: a receipt for a message the server does not know", async () => {
    await expectCode(
      alice,
      text({ id: "nope", type: 9101, body: '{"code":200,"status":"SUCCESS","msg":"ok"}' }),
      407,
      "nope",
    );
  });

  await t.step("200: text, notice and targeted notice", async () => {
    await expectCode(alice, text(), 200);
    await expectCode(alice, text({ type: 3001, body: '{"title":"t","msg":"m"}' }), 200);
    await expectCode(
      alice,
      text({ type: 3003, body: '{"title":"t","msg":"m","target":"/x","serviceId":"s"}' }),
      200,
    );
  });

  await t.step("a binary frame answers 401", async () => {
    const socket = new WebSocket(srv.wsUrl);
    await new Promise((resolve) => socket.onopen = resolve);
    const reply = new Promise<MessageEvent>((resolve) => socket.onmessage = resolve);
    socket.send(new Uint8Array([1, 2, 3]));
    assertEquals(status(JSON.parse((await reply).data)).code, 401);
    const closed = new Promise((resolve) => socket.onclose = resolve);
    socket.close();
    await closed;
  });
});

Deno.test("register", async (t) => {
  await using srv = await startServer({ auth: { sessionTtlSeconds: 1 } });
  const token = await login(srv.url, "alice", "alice-pw");
  const register = (sessionId: string, from = "u1") => ({
    id: crypto.randomUUID(),
    type: 1000,
    isSystem: false,
    from,
    to: "",
    body: JSON.stringify({ sessionId }),
  });

  await t.step("a sessionId registers once; the 9001 names the user", async () => {
    const sessionId = await wsSession(srv.url, token, "web");
    const first = await TestClient.open(srv.wsUrl);
    const ok = await first.request(register(sessionId));
    assertEquals(ok.code, 200);
    assertEquals(ok.status, "SUCCESS");
    assertEquals(ok.frame.to, "u1");
    const second = await TestClient.open(srv.wsUrl);
    const again = await second.request(register(sessionId));
    assertEquals(again.code, 402);
    await first.close();
    await second.close();
  });

  await t.step("unknown sessionId 402, bad body 404, wrong from 405", async () => {
    const client = await TestClient.open(srv.wsUrl);
    assertEquals((await client.request(register("made-up"))).code, 402);
    const badBody = { ...register("x"), body: "{}" };
    assertEquals((await client.request(badBody)).code, 404);
    const sessionId = await wsSession(srv.url, token, "web");
    assertEquals((await client.request(register(sessionId, "u2"))).code, 405);
    await client.close();
  });

  await t.step("an expired sessionId answers 402", async () => {
    const sessionId = await wsSession(srv.url, token, "web");
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const client = await TestClient.open(srv.wsUrl);
    assertEquals((await client.request(register(sessionId))).code, 402);
    await client.close();
  });

  await t.step("a newer register of the same client closes the older with 4001", async () => {
    const old = await srv.connect("alice", "phone");
    const fresh = await srv.connect("alice", "phone");
    const event = await old.closed;
    assertEquals(event.code, 4001);
    assertEquals(event.reason, "replaced");
    const bob = await srv.connect("bob");
    assertEquals((await bob.text("u1", "still there?")).code, 200);
    assertEquals((await fresh.message()).body, "still there?");
  });

  await t.step("frames sent right behind the register wait for it", async () => {
    const sessionId = await wsSession(srv.url, token, "eager");
    const client = await TestClient.open(srv.wsUrl);
    client.send(register(sessionId));
    client.send({
      id: "right-behind",
      type: 2001,
      isSystem: false,
      from: "u1",
      to: "u2",
      body: "x",
    });
    assertEquals((await client.reply("right-behind")).code, 200);
    await client.close();
  });
});

Deno.test("limits close only the offending connection", async (t) => {
  await using srv = await startServer({
    limits: { maxFrameBytes: 1024 },
    websocket: { registerTimeoutSeconds: 1 },
  });
  const bob = await srv.connect("bob");

  await t.step("a frame over maxFrameBytes closes with 1009", async () => {
    const alice = await srv.connect("alice");
    alice.sendRaw(JSON.stringify({ id: "big", body: "é".repeat(600) }));
    assertEquals((await alice.closed).code, 1009);
  });

  await t.step("a connection that never registers is closed", async () => {
    const idle = await TestClient.open(srv.wsUrl);
    assertEquals((await idle.closed).code, 1008);
  });

  await t.step("other connections carry on", async () => {
    const alice = await srv.connect("alice", "second");
    assertEquals((await alice.text("u2", "after")).code, 200);
    assertEquals((await bob.message()).body, "after");
  });
});
