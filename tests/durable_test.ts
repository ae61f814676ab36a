import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { login, startServer, TEST_API_KEY, type TestServer } from "./_helpers.ts";
import { RedisServer, SKIP_REASON } from "./_redis.ts";
import { RedisCluster } from "./_redis_cluster.ts";

async function withDir(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "im-durable-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("SQLite keeps messages and delivery state across restarts", async () => {
  await withDir(async (dir) => {
    const storage = { driver: "sqlite" as const, dir };
    {
      await using srv = await startServer({ storage });
      const alice = await srv.connect("alice");
      for (let i = 0; i < 20; i++) {
        assertEquals((await alice.text("u2", `m${i}`, `d-${i}`)).code, 200);
      }
    }
    {
      await using srv = await startServer({ storage });
      const bob = await srv.connect("bob");
      const got = [];
      for (let i = 0; i < 20; i++) got.push(await bob.message());
      assertEquals(got.map((f) => f.id), Array.from({ length: 20 }, (_, i) => `d-${i}`));
      for (const frame of got.slice(0, 15)) assertEquals((await bob.receipt(frame)).code, 200);
    }
    {
      await using srv = await startServer({ storage });
      const bob = await srv.connect("bob");
      const again = [];
      for (let i = 0; i < 5; i++) again.push((await bob.message()).id);
      assertEquals(again, ["d-15", "d-16", "d-17", "d-18", "d-19"], "only unacknowledged ones");
      assertEquals(await bob.quiet(), []);
      const alice = await srv.connect("alice");
      assertEquals((await alice.text("u2", "resend", "d-3")).code, 200);
      assertEquals(await bob.quiet(), [], "a resent id is still known after restarts");
    }
  });
});

Deno.test("a second server on the same storage directory does not start", async () => {
  await withDir(async (dir) => {
    await using _first = await startServer({ storage: { driver: "sqlite", dir } });
    await assertRejects(
      () => startServer({ storage: { driver: "sqlite", dir } }),
      "is locked by another server",
    );
  });
});

Deno.test("history pages through a conversation, newest first, with states", async (t) => {
  for (const driver of ["memory", "sqlite", "redis", "redis cluster"] as const) {
    const redis = driver === "redis" || driver === "redis cluster";
    await t.step({
      name: driver,
      ignore: redis && SKIP_REASON !== undefined,
      fn: async () => {
        // On a Redis Cluster alice's and bob's messages are in two groups, merged page by page.
        await using deployment = driver === "redis"
          ? await RedisServer.start()
          : driver === "redis cluster"
          ? await RedisCluster.start()
          : undefined;
        await using srv = await startServer(
          deployment
            ? { cluster: { redisUrl: deployment.url } }
            : { storage: { driver: driver as "memory" | "sqlite" } },
        );
        await historyConversation(srv);
      },
    });
  }
});

/** Pages through alice's conversation with bob on `srv`, checking order, states and errors. */
async function historyConversation(srv: TestServer): Promise<void> {
  const alice = await srv.connect("alice");
  const bob = await srv.connect("bob");
  for (let i = 0; i < 5; i++) await alice.text("u2", `a${i}`, `a-${i}`);
  for (let i = 0; i < 2; i++) await bob.text("u1", `b${i}`, `b-${i}`);
  await alice.text("u3", "not in this conversation", "other");
  const first = await bob.message();
  assertEquals((await bob.receipt(first)).code, 200);
  const token = await login(srv.url, "alice", "alice-pw");
  const get = async (path: string, headers: Record<string, string>) => {
    const response = await fetch(`${srv.url}${path}`, { headers });
    return { status: response.status, body: await response.json() };
  };
  const page1 = await get("/app/messages?with=u2&limit=4", { token });
  assertEquals(page1.status, 200);
  const ids1 = page1.body.data.messages.map((m: { id: string }) => m.id);
  assertEquals(ids1, ["b-1", "b-0", "a-4", "a-3"]);
  assert(typeof page1.body.data.next === "string");
  const page2 = await get(`/app/messages?with=u2&limit=4&before=${page1.body.data.next}`, {
    token,
  });
  const entries = page2.body.data.messages;
  assertEquals(entries.map((m: { id: string }) => m.id), ["a-2", "a-1", "a-0"]);
  assertEquals(page2.body.data.next, null);
  const a0 = entries.find((m: { id: string }) => m.id === "a-0");
  assertEquals([a0.from, a0.to, a0.body, a0.state], ["u1", "u2", "a0", "acknowledged"]);
  assertEquals(entries[0].state, "delivered");

  const server = await get("/server/messages?user=u2&with=u1&limit=2", {
    authorization: `Bearer ${TEST_API_KEY}`,
  });
  assertEquals(server.body.data.messages.map((m: { id: string }) => m.id), ["b-1", "b-0"]);
  assertEquals((await get("/server/messages?user=u2&with=u1", {})).status, 401);
  assertEquals((await get("/app/messages?with=u2", {})).status, 401);
  assertEquals((await get("/app/messages", { token })).status, 400);
  assertEquals((await get("/app/messages?with=u2&limit=0", { token })).status, 400);
  assertEquals((await get("/app/messages?with=u2&before=x", { token })).status, 400);
}

Deno.test("the background sweep enforces the per-user cap", async () => {
  await using srv = await startServer({
    storage: { driver: "sqlite", maxPerUser: 3, sweepIntervalMs: 50 },
  });
  const alice = await srv.connect("alice");
  for (let i = 0; i < 6; i++) await alice.text("u2", `n${i}`, `cap-${i}`);
  while (!srv.logs.some((l) => l.level === "warn" && l.line.includes("dropped"))) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const bob = await srv.connect("bob");
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push((await bob.message()).id);
  assertEquals(ids, ["cap-3", "cap-4", "cap-5"]);
  assertEquals(await bob.quiet(), []);
});
