/**
 * PROTOCOL.md section 10 (v1.1): the points two client authors read
 * differently, each settled and tested against a real server.
 */
import { assert, assertEquals } from "./_assert.ts";
import { login, startServer, TestClient, wsSession } from "./_helpers.ts";

const text = (from: string, to: string, id: string = crypto.randomUUID()) => ({
  id,
  type: 2001,
  isSystem: false,
  from,
  to,
  body: "hi",
});

Deno.test("section 10: entries of to, register, receipts, own copies", async (t) => {
  await using srv = await startServer();
  const alice = await srv.connect("alice");
  const bob = await srv.connect("bob");

  await t.step("whitespace around entries of to is trimmed", async () => {
    assertEquals((await alice.request(text("u1", "u2, u3 ", "trim-1"))).code, 200);
    assertEquals((await bob.message()).id, "trim-1");
    const carol = await srv.connect("carol");
    assertEquals((await carol.message()).id, "trim-1", "u3 got it, not a user named ' u3 '");
    await carol.close();
  });

  await t.step("an entry empty after trimming answers 406", async () => {
    const reply = await alice.request(text("u1", "u2,  ,u3"));
    assertEquals(reply.code, 406);
  });

  await t.step("* from a client answers 406", async () => {
    const reply = await alice.request(text("u1", "*"));
    assertEquals([reply.code, reply.msg.includes("business API")], [406, true]);
    assertEquals((await alice.request(text("u1", "u2,*"))).code, 406);
  });

  await t.step("to on a 1000 must be a string (it may be empty)", async () => {
    const token = await login(srv.url, "bob", "bob-pw");
    const fresh = await TestClient.open(srv.wsUrl);
    const body = JSON.stringify({ sessionId: await wsSession(srv.url, token, "t1") });
    const noTo = { id: "r0", type: 1000, isSystem: false, from: "u2", body };
    assertEquals((await fresh.request(noTo)).code, 401);
    assertEquals((await fresh.request({ ...noTo, id: "r1", to: "" })).code, 200);
    await fresh.close();
  });

  await t.step("a failed register does not use up its sessionId", async () => {
    const token = await login(srv.url, "bob", "bob-pw");
    const sessionId = await wsSession(srv.url, token, "t2");
    const fresh = await TestClient.open(srv.wsUrl);
    const register = (id: string, from: string) => ({
      id,
      type: 1000,
      isSystem: false,
      from,
      to: "",
      body: JSON.stringify({ sessionId }),
    });
    assertEquals((await fresh.request(register("a", "u1"))).code, 405, "foreign from");
    assertEquals((await fresh.request(register("b", "u2"))).code, 200, "still usable");
    const again = await TestClient.open(srv.wsUrl);
    assertEquals((await again.request(register("c", "u2"))).code, 402, "used up by the 200");
    await fresh.close();
    await again.close();
  });

  await t.step("any 9101 stops redelivery and is forwarded as sent", async () => {
    assertEquals((await alice.request(text("u1", "u2", "nack-1"))).code, 200);
    const got = await bob.message();
    const refusal = JSON.stringify({ code: 404, status: "BODY_ERROR", msg: "cannot show it" });
    const reply = await bob.request({
      id: got.id,
      type: 9101,
      isSystem: false,
      from: "u2",
      to: "u1",
      body: refusal,
    });
    assertEquals(reply.code, 200);
    const forwarded = await alice.next((f) => f.type === 9101 && f.id === "nack-1");
    assertEquals(forwarded.body, refusal);
    await bob.close();
    const back = await srv.connect("bob");
    const redelivered = (await back.quiet()).filter((f) => f.id === "nack-1");
    assertEquals(redelivered, [], "not delivered again after a non-200 receipt");
    await back.close();
  });

  await t.step("a receipt for an own copy answers 407", async () => {
    const phone = await srv.connect("alice", "phone");
    assertEquals((await alice.request(text("u1", "u2", "own-1"))).code, 200);
    const copy = await phone.message();
    assert(copy.from === "u1" && copy.id === "own-1", JSON.stringify(copy));
    const reply = await phone.request({
      id: copy.id,
      type: 9101,
      isSystem: false,
      from: "u1",
      to: "u1",
      body: JSON.stringify({ code: 200, status: "SUCCESS", msg: "ok" }),
    });
    assertEquals(reply.code, 407);
    await phone.close();
  });
});
