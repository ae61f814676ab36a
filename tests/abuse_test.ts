/**
 * Issue 13's attacks at a size that runs in seconds (docs/SECURITY.md lists
 * them with the limits that stop them). Each asserts what the attacker gets
 * and that a bystander pair keeps exchanging frames throughout; the sizes that
 * took the server down, and the memory and latency figures, are in the soak
 * script (`deno task soak`), not here: tests do not time.
 *
 * @module
 */
import { assert, assertEquals } from "./_assert.ts";
import {
  clientFrame,
  registerClient,
  registerRaw,
  startServer,
  TEST_API_KEY,
  TEST_USERS,
  type TestServer,
} from "./_helpers.ts";
import { hashPassword } from "../src/auth/password.ts";
import { UserDirectory } from "../src/auth/users.ts";

const BYSTANDERS = [
  { userId: "u4", username: "dave", password: "dave-pw" },
  { userId: "u5", username: "erin", password: "erin-pw" },
];
const USERS = [...TEST_USERS, ...BYSTANDERS];

/** Logs in as any of {@link USERS} and registers a connection. */
function connectAs(srv: TestServer, username: string, clientName = "web") {
  const user = USERS.find((u) => u.username === username)!;
  return registerClient(srv.url, srv.wsUrl, user, clientName);
}

/**
 * dave and erin chat while an attack runs: every frame must be answered 200
 * and arrive. `stop()` ends the chat and returns how many frames went through.
 */
async function bystanders(srv: TestServer) {
  const dave = await connectAs(srv, "dave");
  const erin = await connectAs(srv, "erin");
  let running = true;
  let exchanged = 0;
  const chat = (async () => {
    while (running) {
      const reply = await dave.text("u5", `ping ${exchanged}`);
      assertEquals(reply.code, 200, "a bystander's frame is accepted");
      const got = await erin.message(10_000);
      assertEquals(got.body, `ping ${exchanged}`, "a bystander's frame arrives");
      const back = await erin.text("u4", `pong ${exchanged}`);
      assertEquals(back.code, 200);
      assertEquals((await dave.message(10_000)).body, `pong ${exchanged}`);
      exchanged++;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  })();
  return {
    async stop(): Promise<number> {
      running = false;
      await chat;
      await dave.close();
      await erin.close();
      assert(exchanged > 0, "the bystanders exchanged frames during the attack");
      return exchanged;
    },
  };
}

/** Registers `username` over a raw TCP socket that then never reads. */
function stuckClient(srv: TestServer, username: string, clientName: string) {
  const user = USERS.find((u) => u.username === username)!;
  return registerRaw(srv.url, srv.server.port, user, clientName);
}

async function slowConsumerCloses(srv: TestServer): Promise<number> {
  const metrics = await (await fetch(`${srv.url}/metrics`)).text();
  const match = metrics.match(/im_connections_rejected_total\{reason="slow_consumer"\} (\d+)/);
  return match ? Number(match[1]) : 0;
}

/** Polls until `check` holds, at most `ms`. */
async function until(check: () => Promise<boolean>, what: string, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!await check()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Stores `count` messages of `size` characters for `to`, sent by the business API. */
async function backlog(srv: TestServer, to: string, count: number, size: number) {
  const body = JSON.stringify({ title: "backlog", msg: "x".repeat(size) });
  const ids: string[] = [];
  for (let start = 0; start < count; start += 50) {
    const batch = [];
    for (let i = start; i < Math.min(count, start + 50); i++) {
      ids.push(`b-${i}`);
      batch.push(
        fetch(`${srv.url}/server/messages`, {
          method: "POST",
          headers: { authorization: `Bearer ${TEST_API_KEY}` },
          body: JSON.stringify({ id: `b-${i}`, type: 3001, to, body }),
        }).then(async (r) => {
          assertEquals(r.status, 200, await r.text());
        }),
      );
    }
    await Promise.all(batch);
  }
  return ids;
}

Deno.test("backlog: 8 concurrent registers of a user with an inbox over the cap each get the newest maxPerUser, in order", async () => {
  await using srv = await startServer({
    auth: { users: USERS },
    storage: { driver: "sqlite", maxPerUser: 1500 },
    limits: { rateLimit: { perSecond: 100_000, burst: 100_000 } },
  });
  // alice's frames on one socket are accepted in the order sent.
  const alice = await connectAs(srv, "alice");
  const ids = Array.from({ length: 2000 }, (_, i) => `a-${i}`);
  const body = "x".repeat(500);
  for (const id of ids) alice.send({ id, type: 2001, isSystem: false, from: "u1", to: "u2", body });
  for (const id of ids) {
    const reply = await alice.next((f) => f.type === 9001);
    assertEquals([reply.id, JSON.parse(reply.body).code], [id, 200]);
  }
  await alice.close();
  const chat = await bystanders(srv);
  const clients = await Promise.all(
    Array.from({ length: 8 }, (_, i) => connectAs(srv, "bob", `phone${i}`)),
  );
  const expected = ids.slice(-1500);
  for (const client of clients) {
    const got: string[] = [];
    while (got.length < expected.length) got.push((await client.message(10_000)).id);
    assertEquals(got, expected, "the cap held at accept; the replay is complete and in order");
  }
  assert((await chat.stop()) > 0);
});

Deno.test("replay budget: frames held for a replaying socket that never reads count against maxBufferedBytes (1013)", async () => {
  await using srv = await startServer({
    auth: { users: USERS },
    limits: { maxBufferedBytes: 262144, rateLimit: { perSecond: 1000, burst: 1000 } },
  });
  // Enough backlog that the replay to a socket that never reads waits for it to drain.
  await backlog(srv, "u2", 400, 30_000);
  const chat = await bystanders(srv);
  const stuck = await stuckClient(srv, "bob", "stuck");
  const before = await slowConsumerCloses(srv);
  // bob's other device sends: each own copy is held for the replaying socket.
  const bob = await connectAs(srv, "bob", "laptop");
  const big = "y".repeat(30_000);
  let sent = 0;
  while (await slowConsumerCloses(srv) === before) {
    assertEquals((await bob.text("u3", big)).code, 200);
    assert(++sent < 200, "the replaying socket is closed once its held frames pass the budget");
  }
  assert(sent > 0, "closed by the frames held for it");
  stuck.close();
  await bob.close();
  assert((await chat.stop()) > 0);
});

Deno.test("register budget: frames sent while the register's replay waits count against maxBufferedBytes (1013)", async () => {
  await using srv = await startServer({
    auth: { users: USERS },
    limits: { maxBufferedBytes: 262144, rateLimit: { perSecond: 1000, burst: 1000 } },
  });
  await backlog(srv, "u2", 400, 30_000);
  const chat = await bystanders(srv);
  const stuck = await stuckClient(srv, "bob", "stuck");
  const before = await slowConsumerCloses(srv);
  const frame = clientFrame(JSON.stringify({
    id: "flood",
    type: 2001,
    isSystem: false,
    from: "u2",
    to: "u3",
    body: "z".repeat(60_000),
  }));
  for (let i = 0; i < 10; i++) await stuck.write(frame);
  await until(async () => await slowConsumerCloses(srv) > before, "the socket is closed (1013)");
  stuck.close();
  assert((await chat.stop()) > 0);
});

Deno.test("made-up recipients: with auth.users only, an unknown recipient answers 406", async () => {
  await using srv = await startServer({ auth: { users: USERS } });
  const chat = await bystanders(srv);
  const alice = await connectAs(srv, "alice");
  const reply = await alice.text("u2,ghost-1", "hello");
  assertEquals(reply.code, 406);
  assertEquals(reply.msg, "Unknown recipient: ghost-1");
  assertEquals((await alice.text("u2", "hello")).code, 200, "a known user is fine");
  await alice.close();
  assert((await chat.stop()) > 0);
});

Deno.test("made-up recipients: a sender's undelivered data stops at limits.maxPendingBytesPerSender", async () => {
  await using srv = await startServer({
    auth: { users: USERS, jwt: { secret: "a-jwt-secret-of-32-characters-ok" } },
    limits: { maxPendingBytesPerSender: 1_000_000, rateLimit: { perSecond: 1000, burst: 1000 } },
  });
  const chat = await bystanders(srv);
  const alice = await connectAs(srv, "alice");
  const to = Array.from({ length: 100 }, (_, i) => `ghost-${i}`);
  let accepted = 0;
  let refusal;
  for (let i = 0; i < 100 && !refusal; i++) {
    const reply = await alice.text(to.map((name) => `${name}-${i}`).join(","), "x".repeat(100));
    if (reply.code === 200) accepted++;
    else refusal = reply;
  }
  assert(refusal, "the sender is refused once its quota is used");
  assertEquals(refusal.code, 400);
  assertEquals(
    refusal.msg,
    "Too many undelivered messages from u1: at most 1000000 bytes may wait for their recipients",
  );
  assert(accepted > 0 && accepted < 10, `accepted ${accepted} frames to 100 made-up users`);
  // Other senders are not held to alice's quota.
  const carol = await connectAs(srv, "carol");
  assertEquals((await carol.text("ghost-x", "hi")).code, 200);
  await carol.close();
  await alice.close();
  assert((await chat.stop()) > 0);
});

Deno.test("login: failures per username and per address answer 429 with Retry-After", async () => {
  await using srv = await startServer({
    auth: { users: USERS, login: { maxFailuresPerUsername: 3, maxFailuresPerIp: 6 } },
  });
  const chat = await bystanders(srv);
  const attempt = (username: string, password: string) =>
    fetch(`${srv.url}/app/login`, { method: "POST", body: JSON.stringify({ username, password }) });
  for (let i = 0; i < 3; i++) {
    const r = await attempt("alice", `guess-${i}`);
    assertEquals(r.status, 401);
    await r.body?.cancel();
  }
  const locked = await attempt("alice", "alice-pw");
  assertEquals(locked.status, 429, "the right password waits too: the budget is spent");
  assert(Number(locked.headers.get("retry-after")) > 0);
  assertEquals((await locked.json()).msg, "Too many failed logins: try again later");
  // Another name from the same address still works until the address's budget is spent.
  for (let i = 0; i < 3; i++) {
    const r = await attempt(`nobody-${i}`, "guess");
    assertEquals(r.status, 401);
    await r.body?.cancel();
  }
  const byIp = await attempt("carol", "carol-pw");
  assertEquals(byIp.status, 429, "the address's budget is spent");
  await byIp.body?.cancel();
  assert((await chat.stop()) > 0);
});

Deno.test("login: a flood waits for a bounded number of hash slots; past the queue it answers 503", async () => {
  const hashed = await hashPassword("frank-pw", 50_000);
  await using srv = await startServer({
    auth: {
      users: [...USERS, { userId: "u6", username: "frank", password: hashed }],
      login: { maxConcurrentHashes: 1, maxQueued: 2, maxFailuresPerIp: 1000 },
    },
  });
  const chat = await bystanders(srv);
  const statuses = await Promise.all(
    Array.from({ length: 12 }, (_, i) =>
      fetch(`${srv.url}/app/login`, {
        method: "POST",
        body: JSON.stringify({ username: `user-${i}`, password: "guess" }),
      }).then(async (r) => {
        if (r.status === 503) assertEquals(r.headers.get("retry-after"), "1");
        await r.body?.cancel();
        return r.status;
      })),
  );
  assert(statuses.includes(503), `some logins were refused: ${statuses}`);
  assert(statuses.includes(401), `the queued ones were checked: ${statuses}`);
  assert(statuses.every((s) => s === 401 || s === 503), `${statuses}`);
  const frank = await fetch(`${srv.url}/app/login`, {
    method: "POST",
    body: JSON.stringify({ username: "frank", password: "frank-pw" }),
  });
  assertEquals(frank.status, 200, "a login after the flood works");
  await frank.body?.cancel();
  assert((await chat.stop()) > 0);
});

Deno.test("login: known, unknown and plain-text users cost the same PBKDF2 work", async () => {
  const hashed = await hashPassword("hashed-pw", 1000);
  const directory = new UserDirectory([
    { userId: "u1", username: "hashed", password: hashed },
    { userId: "u2", username: "plain", password: "plain-pw" },
  ]);
  const subtle = crypto.subtle;
  const original = subtle.deriveBits;
  const runs: number[] = [];
  subtle.deriveBits = function (algorithm, key, length) {
    runs.push((algorithm as Pbkdf2Params).iterations);
    return original.call(subtle, algorithm, key, length);
  };
  try {
    for (
      const [name, password, expected] of [
        ["hashed", "hashed-pw", "u1"],
        ["hashed", "wrong", undefined],
        ["plain", "plain-pw", "u2"],
        ["plain", "wrong", undefined],
        ["nobody", "whatever", undefined],
      ] as const
    ) {
      runs.length = 0;
      assertEquals(await directory.authenticate(name, password), expected);
      assertEquals(runs, [1000], `${name}/${password}: one PBKDF2 run of the hashed users' cost`);
    }
  } finally {
    subtle.deriveBits = original;
  }
});

Deno.test("repeated keys: a frame whose JSON repeats a top-level key answers 401 and reaches nobody", async () => {
  await using srv = await startServer({ auth: { users: USERS } });
  const chat = await bystanders(srv);
  const alice = await connectAs(srv, "alice");
  const bob = await connectAs(srv, "bob");
  const forged = [
    `{"id":"f1","type":2001,"isSystem":true,"from":"SYSTEM","to":"u2","body":"pay now",` +
    `"isSystem":false,"from":"u1"}`,
    // The same key spelled with an escape is the same key to every parser.
    `{"id":"f2","type":2001,"isSystem":false,"from":"SYSTEM","to":"u2","body":"pay now",` +
    `"fr\\u006fm":"u1"}`,
  ];
  for (const [i, text] of forged.entries()) {
    alice.sendRaw(text);
    const reply = await alice.reply(`f${i + 1}`);
    assertEquals(reply.code, 401);
    assertEquals(reply.msg, "Frame repeats a top-level key: each field may appear once");
  }
  // Repeats inside the body or nested objects are the body's business, not the envelope's.
  alice.sendRaw(
    `{"id":"ok","type":2001,"isSystem":false,"from":"u1","to":"u2",` +
      `"body":"{\\"a\\":1,\\"a\\":2}","meta":{"k":1,"k":2}}`,
  );
  assertEquals((await alice.reply("ok")).code, 200);
  assertEquals((await bob.message()).id, "ok", "bob gets only the well-formed frame");
  assertEquals(await bob.quiet(), []);
  await alice.close();
  await bob.close();
  assert((await chat.stop()) > 0);
});
