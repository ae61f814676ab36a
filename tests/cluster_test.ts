/**
 * Several server instances sharing one Redis (`cluster.redisUrl`): sessions,
 * delivery, kicks, presence and storage work across them, an instance that
 * dies loses nothing it answered 200, and a Redis outage answers 400 and heals.
 */
import { assert, assertEquals } from "./_assert.ts";
import {
  type Frame,
  login,
  startServer,
  TEST_API_KEY,
  TEST_USERS,
  TestClient,
  type TestServer,
  untilListening,
  wsSession,
} from "./_helpers.ts";
import { eventually, RedisServer, SKIP_REASON } from "./_redis.ts";
import { RedisCluster } from "./_redis_cluster.ts";
import { connectRedis } from "../src/backends/redis.ts";
import { RedisPresence } from "../src/backends/presence_redis.ts";
import { createLogger } from "../src/log.ts";

const ignore = SKIP_REASON !== undefined;

/**
 * The Redis deployments the tests that need only a URL run against: a
 * single Redis, and a Redis Cluster of 3 masters with a replica each.
 */
const DEPLOYMENTS: { name: string; start(): Promise<{ url: string } & AsyncDisposable> }[] = [
  { name: "", start: () => RedisServer.start() },
  { name: " (Redis Cluster)", start: () => RedisCluster.start() },
];
const quietLogger = () => createLogger({ level: "error", write: () => {} });

/** Starts `count` instances sharing `redis`. */
async function startCluster(redis: { url: string }, count: number): Promise<TestServer[]> {
  const servers: TestServer[] = [];
  for (let i = 0; i < count; i++) {
    servers.push(await startServer({ cluster: { redisUrl: redis.url } }));
  }
  return servers;
}

async function closeAll(servers: TestServer[]): Promise<void> {
  for (const server of servers.reverse()) await server[Symbol.asyncDispose]();
}

/** Logs in on `issuer`, registers on `target`'s WebSocket with that sessionId. */
async function registerAcross(
  issuer: TestServer,
  target: TestServer,
  username: string,
  clientName = "web",
): Promise<{ client: TestClient; sessionId: string }> {
  const user = TEST_USERS.find((u) => u.username === username)!;
  const token = await login(issuer.url, username, user.password);
  const sessionId = await wsSession(issuer.url, token, clientName);
  const client = await TestClient.open(target.wsUrl);
  const reply = await registerFrame(client, user.userId, sessionId);
  assertEquals(reply.code, 200, `register: ${reply.msg}`);
  client.userId = user.userId;
  return { client, sessionId };
}

function registerFrame(client: TestClient, userId: string, sessionId: string) {
  return client.request({
    id: `reg-${crypto.randomUUID()}`,
    type: 1000,
    isSystem: false,
    from: userId,
    to: "",
    body: JSON.stringify({ sessionId }),
  });
}

/** Receives `count` non-reply frames. */
async function receive(client: TestClient, count: number): Promise<Frame[]> {
  const frames = [];
  for (let i = 0; i < count; i++) frames.push(await client.message());
  return frames;
}

for (const deployment of DEPLOYMENTS) {
  Deno.test({
    name:
      `cluster: a sessionId issued by one instance is redeemed on another, once${deployment.name}`,
    ignore,
    async fn() {
      await using redis = await deployment.start();
      const [a, b, c] = await startCluster(redis, 3);
      try {
        const { client, sessionId } = await registerAcross(a, b, "alice");
        const again = await TestClient.open(c.wsUrl);
        const reply = await registerFrame(again, "u1", sessionId);
        assertEquals(reply.code, 402);
        await again.close();
        await client.close();
      } finally {
        await closeAll([a, b, c]);
      }
    },
  });
}

for (const deployment of DEPLOYMENTS) {
  Deno.test({
    name: `cluster: frames reach every instance in order, once per connection${deployment.name}`,
    ignore,
    async fn(t) {
      await using redis = await deployment.start();
      const [a, b, c] = await startCluster(redis, 3);
      try {
        const alicePhone = await a.connect("alice", "phone");
        const aliceWeb = await b.connect("alice", "web");
        const aliceDesk = await c.connect("alice", "desk");
        const bob = await b.connect("bob");
        const carol = await c.connect("carol");

        await t.step(
          "a text from A reaches recipients and the sender's devices on B and C",
          async () => {
            assertEquals((await alicePhone.text("u2,u3", "hello", "x-1")).code, 200);
            for (const client of [bob, carol, aliceWeb, aliceDesk]) {
              const frame = await client.message();
              assertEquals([frame.id, frame.from, frame.to, frame.body], [
                "x-1",
                "u1",
                "u2,u3",
                "hello",
              ]);
            }
          },
        );

        await t.step("200 frames sent in a burst arrive in order and once everywhere", async () => {
          const ids = Array.from({ length: 200 }, (_, i) => `burst-${i}`);
          for (const id of ids) {
            alicePhone.send({ id, type: 2001, isSystem: false, from: "u1", to: "u2,u3", body: id });
          }
          for (const id of ids) assertEquals((await alicePhone.reply(id)).code, 200);
          for (const client of [bob, carol, aliceWeb, aliceDesk]) {
            assertEquals((await receive(client, ids.length)).map((f) => f.id), ids);
          }
          for (const client of [alicePhone, bob, carol, aliceWeb, aliceDesk]) {
            assertEquals(await client.quiet(100), [], "nothing more, nothing twice");
          }
        });

        await t.step("a receipt from C reaches the sender on A", async () => {
          const frame = { id: "x-1", from: "u1" };
          assertEquals((await carol.receipt(frame)).code, 200);
          const forwarded = await alicePhone.next((f) => f.type === 9101);
          assertEquals([forwarded.id, forwarded.from], ["x-1", "u3"]);
        });
      } finally {
        await closeAll([a, b, c]);
      }
    },
  });
}

for (const deployment of DEPLOYMENTS) {
  Deno.test({
    name: `cluster: a register on B replaces the same client on A with 4001${deployment.name}`,
    ignore,
    async fn() {
      await using redis = await deployment.start();
      const [a, b] = await startCluster(redis, 2);
      try {
        const old = await a.connect("bob", "web");
        const other = await a.connect("bob", "phone");
        const fresh = await b.connect("bob", "web");
        const closed = await old.closed;
        assertEquals([closed.code, closed.reason], [4001, "replaced"]);
        const alice = await a.connect("alice");
        assertEquals((await alice.text("u2", "still there?", "k-1")).code, 200);
        assertEquals((await fresh.message()).id, "k-1");
        assertEquals((await other.message()).id, "k-1", "another client of the user stays");
      } finally {
        await closeAll([a, b]);
      }
    },
  });
}

Deno.test({
  name: "cluster: a broker reader that loses its connection resumes where it stopped",
  ignore,
  async fn() {
    await using redis = await RedisServer.start();
    const [a, b] = await startCluster(redis, 2);
    const logger = quietLogger();
    const admin = await connectRedis(redis.url, { logger, name: "admin" });
    try {
      const alice = await a.connect("alice");
      const bob = await b.connect("bob");
      assertEquals((await alice.text("u2", "first", "r-0")).code, 200);
      assertEquals((await bob.message()).id, "r-0");
      // Cut every instance's broker reader; writers and the store stay connected.
      const list = await admin.clientList();
      const readers = list.filter((c) => c.name === "im-read");
      assertEquals(readers.length, 2);
      for (const reader of readers) {
        await admin.sendCommand(["CLIENT", "KILL", "ID", String(reader.id)]);
      }
      const ids = Array.from({ length: 50 }, (_, i) => `r-${i + 1}`);
      for (const id of ids) assertEquals((await alice.text("u2", id, id)).code, 200);
      assertEquals((await receive(bob, ids.length)).map((f) => f.id), ids);
      assertEquals(await bob.quiet(100), []);
    } finally {
      await admin.close();
      await closeAll([a, b]);
    }
  },
});

Deno.test({
  name: "cluster: presence sees the clients of every instance",
  ignore,
  async fn(t) {
    await using redis = await RedisServer.start();
    const [a, b, c] = await startCluster(redis, 3);
    const logger = quietLogger();
    const presence = new RedisPresence(await connectRedis(redis.url, { logger, name: "t" }), {
      logger,
    });
    try {
      const alice = await a.connect("alice", "phone");
      await b.connect("alice", "web");
      const bob = await c.connect("bob");

      await t.step("lookup lists each user's clients with their instances", async () => {
        const found = await eventually(async () => {
          const map = await presence.lookup(["u1", "u2", "u3"]);
          return map.get("u1")?.length === 2 && map.has("u2") ? map : undefined;
        }, "presence entries");
        assertEquals(found.has("u3"), false);
        const instances = new Set(
          [...found.get("u1")!, ...found.get("u2")!].map((e) => e.instance),
        );
        assertEquals(instances.size, 3, "three instances");
        assertEquals(found.get("u1")!.map((e) => e.clientName).sort(), ["phone", "web"]);
        assertEquals(await presence.onlineUsers(), ["u1", "u2"]);
      });

      await t.step("GET /server/presence on any instance answers for every instance", async () => {
        for (const server of [a, b, c]) {
          const response = await fetch(`${server.url}/server/presence?users=u1,u2,u3`, {
            headers: { authorization: `Bearer ${TEST_API_KEY}` },
          });
          assertEquals(response.status, 200);
          const { data } = await response.json();
          assertEquals(
            [data.u1.online, data.u1.clients.length, data.u2.online, data.u3.online],
            [true, 2, true, false],
          );
        }
      });

      await t.step("a client that leaves is removed", async () => {
        await bob.close();
        await alice.close();
        await eventually(
          async () => (await presence.onlineUsers()).join() === "u1" ? true : undefined,
          "bob offline",
        );
        const map = await presence.lookup(["u1"]);
        assertEquals(map.get("u1")!.map((e) => e.clientName), ["web"]);
      });

      await t.step("entries of an instance that stopped its heartbeat expire", async () => {
        const dead = new RedisPresence(await connectRedis(redis.url, { logger, name: "d" }), {
          logger,
          ttlMs: 100,
          heartbeatMs: 3_600_000,
        });
        try {
          await dead.add({ userId: "u3", clientName: "x", since: Date.now(), instance: "dead" });
          assertEquals((await presence.lookup(["u3"])).has("u3"), true);
          await eventually(
            async () => (await presence.lookup(["u3"])).has("u3") ? undefined : true,
            "the dead instance's entry expires",
          );
          assertEquals((await presence.onlineUsers()).includes("u3"), false);
          // The next heartbeat of a live instance removes the keys too.
          await presence.heartbeat();
          const raw = await connectRedis(redis.url, { logger, name: "raw" });
          assertEquals(await raw.exists("im:presence:u:u3"), 0);
          await raw.close();
        } finally {
          await dead.close();
        }
      });
    } finally {
      await presence.close();
      await closeAll([a, b, c]);
    }
  },
});

for (const deployment of DEPLOYMENTS) {
  Deno.test({
    name: `cluster: offline messages are kept for any instance${deployment.name}`,
    ignore,
    async fn() {
      await using redis = await deployment.start();
      const [a, b, c] = await startCluster(redis, 3);
      try {
        const alice = await a.connect("alice");
        const ids = Array.from({ length: 5 }, (_, i) => `off-${i}`);
        for (const id of ids) assertEquals((await alice.text("u2", id, id)).code, 200);
        const bobOnC = await c.connect("bob");
        assertEquals((await receive(bobOnC, 5)).map((f) => f.id), ids);
        for (const id of ids.slice(0, 2)) {
          assertEquals((await bobOnC.receipt({ id, from: "u1" })).code, 200);
          assertEquals((await alice.next((f) => f.type === 9101)).id, id);
        }
        await bobOnC.close();
        const bobOnB = await b.connect("bob");
        assertEquals((await receive(bobOnB, 3)).map((f) => f.id), ids.slice(2));
        assertEquals(await bobOnB.quiet(100), []);
      } finally {
        await closeAll([a, b, c]);
      }
    },
  });
}

/** A server instance in a child process, killed with SIGKILL by the test. */
async function spawnInstance(redisUrl: string, dir: string) {
  const configPath = `${dir}/config.json`;
  await Deno.writeTextFile(
    configPath,
    JSON.stringify({
      websocket: { url: "127.0.0.1", port: 0 },
      auth: { users: TEST_USERS },
      storage: { driver: "memory" },
      plugins: { dir: "./tests/fixtures/empty" },
      cluster: { redisUrl },
      log: { level: "warn" },
    }),
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "main.ts", "--config", configPath],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const output = untilListening(child.stdout);
  const url = await output.url;
  const drained = output.drained;
  return {
    url,
    wsUrl: `${url.replace("http", "ws")}/websocket`,
    async kill() {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already gone.
      }
      await child.status;
      await drained;
    },
  };
}

Deno.test({
  name: "cluster: an instance killed with SIGKILL loses nothing it answered 200",
  ignore,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "im-cluster-" });
    await using redis = await RedisServer.start({ aofDir: dir });
    const [a] = await startCluster(redis, 1);
    const doomed = await spawnInstance(redis.url, dir);
    try {
      const token = await login(doomed.url, "alice", "alice-pw");
      const alice = await TestClient.open(doomed.wsUrl);
      const reg = await registerFrame(alice, "u1", await wsSession(doomed.url, token, "web"));
      assertEquals(reg.code, 200);
      alice.userId = "u1";
      const ids = Array.from({ length: 300 }, (_, i) => `kill-${i}`);
      for (const id of ids) {
        alice.send({ id, type: 2001, isSystem: false, from: "u1", to: "u2", body: id });
      }
      // Kill the instance once some sends are answered, with others still in flight.
      await alice.reply(ids[30]);
      await doomed.kill();
      await alice.closed;
      const answered = alice.drain().filter((f) =>
        f.type === 9001 &&
        JSON.parse(f.body).code === 200
      ).map((f) => f.id);
      answered.push(ids[30]);
      const bob = await a.connect("bob");
      const received = new Set<string>();
      // Everything answered 200 is delivered; what was in flight may be too. Nothing else.
      const order: string[] = [];
      while (answered.some((id) => !received.has(id))) {
        const frame = await bob.message();
        received.add(frame.id);
        order.push(frame.id);
      }
      const sorted = [...order].sort((x, y) => Number(x.slice(5)) - Number(y.slice(5)));
      assertEquals(order, sorted, "in the order they were accepted");
      assert(answered.length > 30, `answered ${answered.length}`);
      await alice.close();
    } finally {
      await doomed.kill();
      await closeAll([a]);
      await redis.kill();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "cluster: while Redis is down sends answer 400, afterwards everything works again",
  ignore,
  async fn(t) {
    const dir = await Deno.makeTempDir({ prefix: "im-cluster-" });
    await using redis = await RedisServer.start({ aofDir: dir });
    const [a, b] = await startCluster(redis, 2);
    try {
      const alice = await a.connect("alice");
      const bob = await b.connect("bob");
      assertEquals((await alice.text("u2", "before", "before-1")).code, 200);
      assertEquals((await bob.message()).id, "before-1");
      assertEquals((await alice.text("u3", "for carol", "before-2")).code, 200);

      await t.step("sends during the outage answer 400 with a clear msg", async () => {
        await redis.kill();
        const reply = await alice.text("u2", "during", "during-1");
        assertEquals(reply.code, 400);
        assert(reply.msg.includes("unavailable"), reply.msg);
        const receipt = await bob.receipt({ id: "before-1", from: "u1" });
        assertEquals(receipt.code, 400);
        // The server still answers HTTP; routes that need Redis answer 503 with the reason.
        const health = await fetch(`${a.url}/healthz`);
        assertEquals(health.status, 200);
        await health.body?.cancel();
        const token = await login(a.url, "carol", "carol-pw");
        const session = await fetch(`${a.url}/app/websocket/client/login/web`, {
          headers: { token },
        });
        assertEquals(session.status, 503);
        assert((await session.json()).msg.includes("unavailable"));
        const push = await fetch(`${b.url}/server/messages`, {
          method: "POST",
          headers: { authorization: `Bearer ${TEST_API_KEY}`, "content-type": "application/json" },
          body: JSON.stringify({ type: 2001, to: "u2", body: "from the backend" }),
        });
        assertEquals(push.status, 503);
        assert((await push.json()).msg.includes("unavailable"));
        const ready = await fetch(`${a.url}/readyz`);
        assertEquals(ready.status, 503, "the balancer takes the instance out");
        await ready.body?.cancel();
      });

      await t.step("after Redis returns, sends, delivery and registers work again", async () => {
        await redis.restart();
        // The instances reconnect by themselves; the first send answered 200 is delivered.
        let n = 0;
        const first = await eventually(async () => {
          const id = `after-${n++}`;
          return (await alice.text("u2", id, id)).code === 200 ? id : undefined;
        }, "a send answered 200 again");
        assertEquals((await bob.message()).id, first);
        const ids = Array.from({ length: 20 }, (_, i) => `again-${i}`);
        for (const id of ids) assertEquals((await alice.text("u2", id, id)).code, 200);
        assertEquals((await receive(bob, 20)).map((f) => f.id), ids);
        const reg = await a.connect("alice", "second");
        await reg.close();
        const ready = await fetch(`${a.url}/readyz`);
        assertEquals(ready.status, 200);
        await ready.body?.cancel();
        // What was answered 200 before the outage survived it (AOF).
        const carol = await b.connect("carol");
        assertEquals((await carol.message()).id, "before-2");
      });
    } finally {
      await closeAll([a, b]);
      await redis.kill();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "cluster: presence catches up with connections that came and went while Redis was away",
  ignore,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "im-presence-" });
    await using redis = await RedisServer.start({ aofDir: dir });
    const logger = quietLogger();
    const presence = new RedisPresence(await connectRedis(redis.url, { logger, name: "p" }), {
      logger,
      heartbeatMs: 3_600_000,
    });
    try {
      const gone = { userId: "u2", clientName: "web", since: Date.now(), instance: "i1" };
      await presence.add(gone);
      await redis.kill();
      const came = { userId: "u1", clientName: "web", since: Date.now(), instance: "i1" };
      let failures = 0;
      await presence.add(came).catch(() => failures++);
      await presence.remove(gone).catch(() => failures++);
      assertEquals(failures, 2, "both fail while Redis is down");
      await redis.restart();
      const online = await eventually(async () => {
        await presence.heartbeat();
        const users = await presence.onlineUsers();
        return users.join() === "u1" ? users : undefined;
      }, "the next heartbeat replays the add and the remove");
      assertEquals(online, ["u1"]);
    } finally {
      await presence.close();
      await redis.kill();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
