/**
 * The Redis backends on a real Redis Cluster (3 masters, a replica each,
 * started by `tests/_redis_cluster.ts`): the store, broker, presence and
 * session conformance suites (the same as on a single Redis), the user
 * groups spread over every master, and a failover: with `cluster.redisWait`
 * every message answered 200 survives the loss of the master that held it,
 * and a running instance carries on with the promoted replica.
 */
import { assert, assertEquals } from "./_assert.ts";
import { startServer } from "./_helpers.ts";
import { eventually, SKIP_REASON } from "./_redis.ts";
import { RedisCluster, redisCommand } from "./_redis_cluster.ts";
import { brokerConformance } from "./broker_conformance.ts";
import { redisBrokerBackend } from "./_redis_broker.ts";
import { presenceConformance } from "./presence_conformance.ts";
import { sessionsConformance } from "./sessions_conformance.ts";
import { storeConformance } from "./store_conformance.ts";
import { RedisPresence } from "../src/backends/presence_redis.ts";
import { openRedis, type RedisLink } from "../src/backends/redis.ts";
import { CLUSTER_GROUPS, RedisLayout } from "../src/backends/redis_layout.ts";
import { RedisSessionStore } from "../src/backends/sessions_redis.ts";
import { RedisStore } from "../src/backends/store_redis.ts";
import { createLogger } from "../src/log.ts";

const ignore = SKIP_REASON !== undefined;
const logger = createLogger({ level: "error", write: () => {} });
const layout = RedisLayout.cluster();

/** One cluster for the conformance suites (each step starts from an empty one). */
let shared: Promise<RedisCluster> | undefined;
function sharedCluster(): Promise<RedisCluster> {
  return shared ??= RedisCluster.start();
}
// The last test stops it; this covers a run that stops before (the kills are synchronous).
globalThis.addEventListener("unload", () => {
  shared?.then((cluster) => cluster.stop());
});

/** The shared cluster, emptied (every master flushed). */
async function emptyCluster(): Promise<RedisCluster> {
  const cluster = await sharedCluster();
  for (const node of cluster.nodes) {
    if (node.role === "master") await redisCommand(node.port, ["FLUSHALL"]);
  }
  return cluster;
}

const open = async (name: string): Promise<RedisLink> =>
  await openRedis((await sharedCluster()).url, { logger, name });

// Started and stopped in tests of their own: its processes outlive each suite's test.
Deno.test({
  name: "Redis Cluster: a cluster for the conformance suites is started",
  ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await sharedCluster();
  },
});

if (!ignore) {
  storeConformance("RedisStore on a Redis Cluster", async (options) => {
    await emptyCluster();
    const link = await open("store");
    assert(link.cluster, "openRedis finds the cluster");
    const store = new RedisStore(link, options);
    return { store, cleanup: () => store.close() };
  }, {
    quotaRecipients: (count) => {
      const names: string[] = [];
      for (let i = 0; names.length < count; i++) {
        if (layout.group(`x${i}`) === layout.group("x0")) names.push(`x${i}`);
      }
      return names;
    },
  });

  brokerConformance("RedisBroker on a Redis Cluster", async () => {
    await emptyCluster();
    return await redisBrokerBackend(open, { logger });
  });

  sessionsConformance("RedisSessionStore on a Redis Cluster", async (ttlSeconds) => {
    await emptyCluster();
    const sessions = new RedisSessionStore(await open("sessions"), ttlSeconds);
    return { sessions, cleanup: () => sessions.close() };
  });
}

Deno.test({
  name: "RedisPresence on a Redis Cluster passes the presence conformance suite",
  ignore,
  async fn(t) {
    await presenceConformance(t, async () => {
      await emptyCluster();
      return new RedisPresence(await open("presence"), { logger });
    });
  },
});

Deno.test({
  name: "Redis Cluster: the user groups spread over every master, and so do the messages",
  ignore,
  async fn() {
    const cluster = await emptyCluster();
    const masters = new Map<number, number>();
    for (let k = 0; k < CLUSTER_GROUPS; k++) {
      const port = await cluster.masterOf(layout.store(k));
      masters.set(port, (masters.get(port) ?? 0) + 1);
      assertEquals(await cluster.masterOf(layout.presence(k)), port, "presence in the same slot");
    }
    // redis-cli gives each of the 3 masters a third of the slots: 5 or 6 groups each.
    assertEquals(masters.size, 3, "every master holds groups");
    for (const count of masters.values()) assert(count >= 5 && count <= 6, `${count} groups`);
    const store = new RedisStore(await open("store"), { logger });
    try {
      for (let i = 0; i < 64; i++) {
        const message = {
          sender: `s${i}`,
          id: `m${i}`,
          type: 2001,
          recipients: [`r${i}`, `r${i + 1}`],
          text: `text ${i}`,
          acceptedAt: Date.now(),
        };
        assertEquals(await store.accept(message), { duplicate: false });
      }
      for (const port of masters.keys()) {
        const keys = await redisCommand(port, ["DBSIZE"]) as number;
        assert(keys > 0, `master ${port} holds messages`);
      }
    } finally {
      await store.close();
    }
  },
});

Deno.test({
  name: "Redis Cluster: the conformance suites' cluster is stopped",
  ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await (await shared)?.stop();
    shared = undefined;
  },
});

Deno.test({
  name: "Redis Cluster failover: with redisWait every 200 survives, and the instance carries on",
  ignore,
  async fn(t) {
    await using cluster = await RedisCluster.start();
    await using server = await startServer({
      cluster: { redisUrl: cluster.url, redisWait: 1, redisWaitTimeoutMs: 500 },
    });
    const alice = await server.connect("alice");
    const answered: string[] = [];
    /** Sends until answered 200 (a 400 during the failover says to try again). */
    const send = async (id: string) => {
      await eventually(async () => {
        const reply = await alice.text("u2", id, id);
        if (reply.code === 200) return true;
        assertEquals(reply.code, 400, reply.msg);
        await new Promise((resolve) => setTimeout(resolve, 50));
        return undefined;
      }, `${id} answered 200`);
      answered.push(id);
    };
    // bob (u2) is offline: his messages wait in his group, on one master.
    const bobsKey = layout.store(layout.group("u2"));
    const master = await cluster.masterOf(bobsKey);
    const replica = cluster.nodes.find((node) => node.replicaOf === master)!;

    await t.step("every send is answered 200 once a replica holds it", async () => {
      for (let i = 0; i < 10; i++) await send(`f-${i}`);
    });

    await t.step("a send no replica confirms in time answers 400", async () => {
      replica.server.pause();
      try {
        const reply = await alice.text("u2", "lost-0", "lost-0");
        assertEquals(reply.code, 400);
        assert(/replica/i.test(reply.msg), reply.msg);
      } finally {
        replica.server.resume();
      }
    });

    await t.step(
      "the master dies: its replica takes over, the instance carries on",
      async () => {
        const failover = await cluster.killMasterOf(bobsKey);
        assertEquals(failover.killed, master);
        // The promoted replica has no replica of its own: nothing can be confirmed, and the
        // instance says so rather than answer 200.
        const alone = await eventually(async () => {
          const reply = await alice.text("u2", "alone-0", "alone-0");
          return /replica/i.test(reply.msg) ? reply : undefined;
        }, "the instance reaches the promoted replica");
        assertEquals(alone.code, 400);
        // The dead master comes back, as a replica of the one that took its place.
        await cluster.nodes.find((node) => node.port === master)!.server.restart();
        for (let i = 10; i < 20; i++) await send(`f-${i}`);
      },
    );

    await t.step("bob gets every message answered 200, in order, once", async () => {
      const bob = await server.connect("bob");
      const got: string[] = [];
      while (got.length < answered.length) {
        const frame = await bob.message();
        // Sends answered 400 were written on a master: a replica may have them too.
        if (!/^(lost|alone)-0$/.test(frame.id)) got.push(frame.id);
      }
      assertEquals(got, answered);
      const more = (await bob.quiet(200)).map((frame) => frame.id);
      assertEquals(
        more.filter((id) => !/^(lost|alone)-0$/.test(id)),
        [],
        "nothing more, nothing twice",
      );
    });
  },
});

Deno.test({
  name: "Redis Cluster failover: a connected recipient gets every 200 live while its instance's " +
    "stream moves to the promoted replica",
  ignore,
  async fn() {
    await using cluster = await RedisCluster.start();
    await using server = await startServer({ cluster: { redisUrl: cluster.url } });
    const alice = await server.connect("alice");
    const bob = await server.connect("bob");
    // The instance's delivery stream, and the master that holds it.
    const instancesKey = "im:broker:instances";
    const [instance] = await redisCommand(
      await cluster.masterOf(instancesKey),
      ["ZRANGE", instancesKey, "0", "-1"],
    ) as string[];
    const stream = `im:{inst:${instance}}:deliveries`;
    const answered: string[] = [];
    let sending = true;
    // Sends go on through the failover (a 400 while a group's master is away is sent again).
    const sender = (async () => {
      for (let i = 0; sending; i++) {
        const id = `s-${i}`;
        while ((await alice.text("u2", id, id)).code !== 200) {
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        answered.push(id);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    await eventually(
      () => Promise.resolve(answered.length >= 5 || undefined),
      "sends before the kill",
    );
    await cluster.killMasterOf(stream);
    const after = answered.length;
    await eventually(
      () => Promise.resolve(answered.length >= after + 10 || undefined),
      "sends after it",
    );
    sending = false;
    await sender;
    const got: string[] = [];
    while (got.length < answered.length) {
      const frame = await bob.message(30_000);
      // A delivery whose append was cut off in flight may come twice: clients drop those.
      if (!got.includes(frame.id)) got.push(frame.id);
    }
    assertEquals(got, answered, "every message answered 200, live, in order");
  },
});
