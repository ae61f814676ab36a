import { assert, assertEquals } from "./_assert.ts";
import { startServer, TEST_API_KEY } from "./_helpers.ts";

Deno.test("live delivery", async (t) => {
  await using srv = await startServer();
  const alicePhone = await srv.connect("alice", "phone");
  const aliceWeb = await srv.connect("alice", "web");
  const bob = await srv.connect("bob");
  const carol = await srv.connect("carol");

  await t.step("a text reaches the recipient unchanged, with the server's timestamp", async () => {
    const before = Date.now();
    assertEquals((await alicePhone.text("u2", "hello bob", "hello-1")).code, 200);
    const frame = await bob.message();
    assertEquals(frame.id, "hello-1");
    assertEquals(frame.type, 2001);
    assertEquals(frame.from, "u1");
    assertEquals(frame.to, "u2");
    assertEquals(frame.body, "hello bob");
    assertEquals(frame.isSystem, false);
    assert(frame.timestamp >= before && frame.timestamp <= Date.now());
    assertEquals(await aliceWeb.message(), frame, "alice's other device gets the same frame");
  });

  await t.step("a frame with a timestamp is forwarded byte for byte", async () => {
    const raw = '{"id":"raw-1","type":2001,"isSystem":false,"from":"u2","to":"u3",' +
      '"body":"ünïcode ✓","timestamp":1700000000000,"extra":{"kept":true}}';
    bob.sendRaw(raw);
    assertEquals((await bob.reply("raw-1")).code, 200);
    const frame = await carol.message();
    assertEquals(JSON.stringify(frame), JSON.stringify(JSON.parse(raw)));
    assertEquals(await bob.quiet(50), []);
  });

  await t.step("the sender's other devices get a copy, the sending one does not", async () => {
    await alicePhone.text("u2", "synced", "sync-1");
    assertEquals((await aliceWeb.message()).id, "sync-1");
    assertEquals((await bob.message()).id, "sync-1");
    assertEquals(await alicePhone.quiet(), []);
  });

  await t.step("a comma list reaches every recipient once", async () => {
    await bob.text("u1,u3,u1", "to many", "many-1");
    assertEquals((await alicePhone.message()).id, "many-1");
    assertEquals((await aliceWeb.message()).id, "many-1");
    assertEquals((await carol.message()).id, "many-1");
    assertEquals(await alicePhone.quiet(), []);
    assertEquals(await bob.quiet(50), []);
  });

  await t.step("a user may send to itself: its other devices get it", async () => {
    await aliceWeb.text("u1", "note to self", "self-1");
    assertEquals((await alicePhone.message()).id, "self-1");
    assertEquals(await aliceWeb.quiet(), []);
  });

  await t.step("notices reach users", async () => {
    const body = JSON.stringify({ title: "Hi", msg: "There", target: "/page/1" });
    const reply = await carol.request({
      id: "notice-1",
      type: 3003,
      isSystem: false,
      from: "u3",
      to: "u2",
      body,
    });
    assertEquals(reply.code, 200);
    const frame = await bob.message();
    assertEquals([frame.type, frame.body], [3003, body]);
  });

  await t.step("frames between a pair arrive in the order they were accepted", async () => {
    const ids = Array.from({ length: 200 }, (_, i) => `order-${i}`);
    for (const id of ids) {
      alicePhone.send({ id, type: 2001, isSystem: false, from: "u1", to: "u3", body: id });
    }
    for (const id of ids) assertEquals((await carol.message()).id, id);
    for (const id of ids) assertEquals((await alicePhone.reply(id)).code, 200);
    aliceWeb.drain();
  });
});

Deno.test("offline delivery, receipts and redelivery", async (t) => {
  await using srv = await startServer();
  const alice = await srv.connect("alice");

  await t.step("frames for an offline user arrive at its next register, oldest first", async () => {
    for (let i = 0; i < 5; i++) {
      assertEquals((await alice.text("u2", `m${i}`, `off-${i}`)).code, 200);
    }
    const bob = await srv.connect("bob");
    const got = [];
    for (let i = 0; i < 5; i++) got.push((await bob.message()).id);
    assertEquals(got, ["off-0", "off-1", "off-2", "off-3", "off-4"]);
    await bob.close();
  });

  await t.step("unacknowledged frames come again at the next register", async () => {
    const bob = await srv.connect("bob");
    const first = await bob.message();
    assertEquals(first.id, "off-0");
    const receipt = await bob.receipt(first);
    assertEquals(receipt.code, 200);
    const forwarded = await alice.next((f) => f.type === 9101);
    assertEquals([forwarded.id, forwarded.from, forwarded.to], ["off-0", "u2", "u1"]);
    assertEquals(JSON.parse(forwarded.body).status, "SUCCESS");
    for (let i = 1; i < 5; i++) assertEquals((await bob.message()).id, `off-${i}`);
    await bob.close();
    const again = await srv.connect("bob");
    const ids = [];
    for (let i = 1; i < 5; i++) ids.push((await again.message()).id);
    assertEquals(ids, ["off-1", "off-2", "off-3", "off-4"]);
    for (const id of ids) {
      assertEquals((await again.receipt({ id, from: "u1" })).code, 200);
    }
    await again.close();
    const done = await srv.connect("bob");
    assertEquals(await done.quiet(), []);
    await done.close();
  });

  await t.step("a receipt goes to the original sender only when the message exists", async () => {
    const bob = await srv.connect("bob");
    // bob never got a message "x" from u3.
    const reply = await bob.request({
      id: "off-1",
      type: 9101,
      isSystem: false,
      from: "u2",
      to: "u3",
      body: JSON.stringify({ code: 200, status: "SUCCESS", msg: "ok" }),
    });
    assertEquals(reply.code, 407);
    await bob.close();
  });

  await t.step("stored frames come before live ones after a register", async () => {
    await alice.text("u3", "stored", "before-live");
    const carol = await srv.connect("carol");
    await alice.text("u3", "live", "after-live");
    assertEquals((await carol.message()).id, "before-live");
    assertEquals((await carol.message()).id, "after-live");
    assertEquals(await carol.quiet(), []);
    await carol.close();
  });
});

Deno.test("a resent id is answered 200 and not delivered twice", async () => {
  await using srv = await startServer();
  const alice = await srv.connect("alice");
  const bob = await srv.connect("bob");
  assertEquals((await alice.text("u2", "once", "dup-1")).code, 200);
  const again = await alice.text("u2", "once", "dup-1");
  assertEquals(again.code, 200);
  assertEquals((await bob.message()).id, "dup-1");
  assertEquals(await bob.quiet(), []);
  // Another user may use the same id: a message is known by sender and id.
  assertEquals((await bob.text("u1", "mine", "dup-1")).code, 200);
  assertEquals((await alice.message()).body, "mine");
});

Deno.test("the in-memory store is bounded per user and logs drops", async () => {
  await using srv = await startServer({ storage: { maxPerUser: 3 } });
  const alice = await srv.connect("alice");
  for (let i = 0; i < 5; i++) await alice.text("u2", `n${i}`, `cap-${i}`);
  const bob = await srv.connect("bob");
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push((await bob.message()).id);
  assertEquals(ids, ["cap-2", "cap-3", "cap-4"]);
  assertEquals(await bob.quiet(), []);
  const drops = srv.logs.filter((l) => l.line.includes("dropped an unacknowledged message"));
  assertEquals(drops.length, 2);
});

Deno.test("POST /server/messages sends as SYSTEM", async (t) => {
  await using srv = await startServer();
  const bob = await srv.connect("bob");
  const post = (body: unknown, key = TEST_API_KEY) =>
    fetch(`${srv.url}/server/messages`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });

  await t.step("a notice with an object body reaches online and offline users", async () => {
    const response = await post({ type: 3001, to: ["u2", "u3"], body: { title: "T", msg: "M" } });
    assertEquals(response.status, 200);
    const { data } = await response.json();
    assert(typeof data.id === "string" && data.id.length > 0);
    const frame = await bob.message();
    assertEquals([frame.id, frame.from, frame.isSystem, frame.type], [
      data.id,
      "SYSTEM",
      true,
      3001,
    ]);
    assertEquals(JSON.parse(frame.body), { title: "T", msg: "M" });
    const carol = await srv.connect("carol");
    assertEquals((await carol.message()).id, data.id);
    assertEquals((await carol.receipt(frame)).code, 200);
    await carol.close();
  });

  await t.step("a text with a chosen id is not delivered twice", async () => {
    for (let i = 0; i < 2; i++) {
      const response = await post({ type: 2001, to: "u2", body: "hello", id: "sys-1" });
      assertEquals((await response.json()).data.id, "sys-1");
    }
    assertEquals((await bob.message()).id, "sys-1");
    assertEquals(await bob.quiet(), []);
  });

  await t.step("wrong key 401; bad input 400 with a reason", async () => {
    const denied = await post({ type: 2001, to: "u2", body: "x" }, "wrong-key-wrong-key");
    assertEquals(denied.status, 401);
    assertEquals((await denied.json()).code, 401);
    for (
      const bad of [
        { type: 2001, to: "", body: "x" },
        { type: 2001, to: [], body: "x" },
        { type: 4040, to: "u2", body: "x" },
        { type: 9001, to: "u2", body: "x" },
        { type: 3001, to: "u2", body: { title: "no msg" } },
        { to: "u2", body: "x" },
      ]
    ) {
      const response = await post(bad);
      assertEquals(response.status, 400, JSON.stringify(bad));
      const body = await response.json();
      assertEquals(body.code, 400);
      assert(body.msg.length > 0);
    }
    const notJson = await fetch(`${srv.url}/server/messages`, {
      method: "POST",
      headers: { authorization: `Bearer ${TEST_API_KEY}` },
      body: "{",
    });
    assertEquals(notJson.status, 400);
    await notJson.body?.cancel();
  });
});
