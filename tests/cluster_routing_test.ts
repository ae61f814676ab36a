/**
 * Routed deliveries (`cluster.redisUrl`): an instance reads only the
 * deliveries for connections it holds, and a register on one instance while
 * a message to that user is in flight from another loses nothing (duplicates
 * are allowed, losses are not). docs/CLUSTER.md has the ordering argument.
 */
import { assertEquals } from "./_assert.ts";
import { type Frame, startServer, type TestClient, type TestServer } from "./_helpers.ts";
import { eventually, RedisServer, SKIP_REASON } from "./_redis.ts";
import { connectRedis, type RedisClient } from "../src/backends/redis.ts";
import { deliveryStream, RedisBroker } from "../src/backends/broker_redis.ts";
import { RedisPresence } from "../src/backends/presence_redis.ts";
import { RedisStore } from "../src/backends/store_redis.ts";
import { DeliveryService } from "../src/core/delivery.ts";
import { type Connection, Hub } from "../src/core/hub.ts";
import { createLogger } from "../src/log.ts";

const ignore = SKIP_REASON !== undefined;
const quietLogger = () => createLogger({ level: "error", write: () => {} });

/** Entries ever appended to a stream (0 when it does not exist). */
async function entriesAdded(client: RedisClient, key: string): Promise<number> {
  if (!await client.exists(key)) return 0;
  const reply = await client.sendCommand(["XINFO", "STREAM", key]) as unknown[];
  return Number(reply[reply.indexOf("entries-added") + 1]);
}

Deno.test({
  name: "routing: an instance reads only the deliveries for the connections it holds",
  ignore,
  async fn() {
    await using redis = await RedisServer.start();
    const servers: TestServer[] = [];
    const admin = await connectRedis(redis.url, { logger: quietLogger(), name: "admin" });
    const presence = new RedisPresence(
      await connectRedis(redis.url, { logger: quietLogger(), name: "p" }),
      { logger: quietLogger() },
    );
    try {
      for (let i = 0; i < 3; i++) {
        servers.push(await startServer({ cluster: { redisUrl: redis.url } }));
      }
      const [a, b, c] = servers;
      const alice = await a.connect("alice");
      const bob = await b.connect("bob");
      const carol = await c.connect("carol");
      const found = await presence.lookup(["u1", "u2", "u3"]);
      const instanceOf = (user: string) => found.get(user)![0].instance;
      const streams = ["u1", "u2", "u3"].map((user) => deliveryStream(instanceOf(user)));
      const before = await Promise.all(streams.map((key) => entriesAdded(admin, key)));

      const ids = Array.from({ length: 30 }, (_, i) => `route-${i}`);
      for (const id of ids) assertEquals((await alice.text("u2", id, id)).code, 200);
      assertEquals((await Promise.all(ids.map(() => bob.message()))).map((f) => f.id), ids);

      const after = await Promise.all(streams.map((key) => entriesAdded(admin, key)));
      const added = after.map((n, i) => n - before[i]);
      assertEquals(
        added,
        [0, 30, 0],
        "only bob's instance got entries (alice has no other device)",
      );
      assertEquals(await carol.quiet(50), []);
    } finally {
      await presence.close();
      await admin.close();
      for (const server of servers.reverse()) await server[Symbol.asyncDispose]();
    }
  },
});

/**
 * A registered connection of the core, recording what it is sent: live frames
 * wait while it replays; copies of stored messages are left to the replay (read from the store).
 */
function recordingConnection(id: number, userId: string): Connection & { texts: string[] } {
  const texts: string[] = [];
  let waiting: string[] | undefined = [];
  let arrivals = 0;
  return {
    id,
    userId,
    clientName: "web",
    since: Date.now(),
    texts,
    deliver(text, stored) {
      if (!waiting) texts.push(text);
      else if (stored) arrivals++; // the replay reads it from the store
      else waiting.push(text);
    },
    replay(message) {
      texts.push(message.text);
    },
    pageRead() {
      arrivals = 0;
      return waiting !== undefined;
    },
    arrived: () => arrivals > 0,
    endReplay() {
      for (const text of waiting ?? []) texts.push(text);
      waiting = undefined;
    },
    close: () => {},
    drain: () => Promise.resolve(true),
  };
}

Deno.test({
  name: "routing: a register while a message to the user is in flight gets it (presence add held)",
  ignore,
  async fn() {
    await using redis = await RedisServer.start();
    const logger = quietLogger();
    const open = (name: string) => connectRedis(redis.url, { logger, name });
    // Instance B's presence connection holds its commands until released, so the message
    // below is accepted and published while B's presence entry of u2 is not written yet.
    const presenceClient = await open("presence-b");
    const send = presenceClient.sendCommand.bind(presenceClient);
    const held = Promise.withResolvers<void>();
    presenceClient.sendCommand = ((...args: Parameters<typeof send>) =>
      held.promise.then(() => send(...args))) as typeof send;
    const presenceB = new RedisPresence(presenceClient, { logger });
    const storeB = new RedisStore(await open("store-b"), {
      logger,
      beforeReplay: (userId) => presenceB.added(userId),
    });
    // As the server sets them up: A accepts and publishes in one script.
    const storeA = new RedisStore(await open("store-a"), { logger, publish: { maxLength: 1000 } });
    const brokerA = new RedisBroker(await open("pub-a"), await open("read-a"), { logger });
    const brokerB = new RedisBroker(await open("pub-b"), await open("read-b"), { logger });
    const hubB = new Hub("ib");
    const deliveryA = new DeliveryService({
      store: storeA,
      broker: brokerA,
      hub: new Hub("ia"),
      instanceId: "ia",
      logger,
    });
    const deliveryB = new DeliveryService({
      store: storeB,
      broker: brokerB,
      hub: hubB,
      instanceId: "ib",
      logger,
    });
    try {
      await deliveryA.start();
      await deliveryB.start();
      const conn = recordingConnection(1, "u2");
      const calledBack = Promise.withResolvers<void>();
      let adding: Promise<void> | undefined;
      const registering = deliveryB.register(conn, () => {
        // What the server's `registered` event does: add the presence entry, not awaited.
        adding = presenceB.add({
          userId: "u2",
          clientName: "web",
          since: conn.since,
          instance: "ib",
        });
        calledBack.resolve();
      });
      await calledBack.promise;
      // A replay that did not wait for the presence entry would read the store now (and miss
      // the message below): give it the time to, so that this test fails if it does not wait.
      await new Promise((resolve) => setTimeout(resolve, 50));
      const text = JSON.stringify({ id: "race-1", from: "u1", to: "u2", body: "in flight" });
      const sent = await deliveryA.send({
        sender: "u1",
        id: "race-1",
        type: 2001,
        recipients: ["u2"],
        text,
      });
      assertEquals(sent.duplicate, false);
      held.resolve();
      await adding;
      await registering;
      const got = await eventually(
        () => Promise.resolve(conn.texts.includes(text) ? conn.texts : undefined),
        "the message reaches the registering connection",
      );
      assertEquals(got.filter((t) => t === text).length, 1, "once: replayed, not also live");
      // And a message sent after the register arrives live.
      const later = JSON.stringify({ id: "race-2", from: "u1", to: "u2", body: "after" });
      await deliveryA.send({
        sender: "u1",
        id: "race-2",
        type: 2001,
        recipients: ["u2"],
        text: later,
      });
      await eventually(
        () => Promise.resolve(conn.texts.includes(later) || undefined),
        "a later message arrives live",
      );
    } finally {
      held.resolve();
      await brokerA.close();
      await brokerB.close();
      await presenceB.close();
      await storeA.close();
      await storeB.close();
    }
  },
});

Deno.test({
  name: "routing: registers on other instances during a burst lose no message answered 200",
  ignore,
  async fn() {
    await using redis = await RedisServer.start();
    const servers: TestServer[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        servers.push(await startServer({ cluster: { redisUrl: redis.url } }));
      }
      const alice = await servers[0].connect("alice");
      for (let round = 0; round < 4; round++) {
        // Bob is offline; alice sends to him one message after another while he logs in and
        // registers on B or C, and a few more after: his register overlaps the sends.
        const ids: string[] = [];
        let registered = false;
        const sending = (async () => {
          for (let after = 0; after < 20; after += registered ? 1 : 0) {
            const id = `r${round}-${ids.length}`;
            ids.push(id);
            assertEquals((await alice.text("u2", id, id)).code, 200);
          }
        })();
        const bob: TestClient = await servers[1 + round % 2].connect("bob");
        registered = true;
        await sending;
        // Every accepted message reaches this connection, live or replayed; first copies in order.
        const first = new Map<string, Frame>();
        while (first.size < ids.length) {
          const frame = await bob.message();
          if (!first.has(frame.id)) first.set(frame.id, frame);
        }
        assertEquals([...first.keys()], ids, `round ${round}: all arrived, in order`);
        // Acknowledged, so that the next round's replay starts empty.
        for (const frame of first.values()) assertEquals((await bob.receipt(frame)).code, 200);
        await bob.close();
      }
    } finally {
      for (const server of servers.reverse()) await server[Symbol.asyncDispose]();
    }
  },
});

Deno.test({
  name: "routing: the stream of an instance that stops or stops renewing is deleted",
  ignore,
  async fn() {
    await using redis = await RedisServer.start();
    const logger = quietLogger();
    const open = (name: string) => connectRedis(redis.url, { logger, name });
    const admin = await open("admin");
    const handler = (instance: string) => ({ instance, deliver() {}, kick() {} });
    // A renews every 50 ms with a 200 ms lifetime.
    const a = new RedisBroker(await open("pub-a"), await open("read-a"), {
      logger,
      ttlMs: 200,
      renewMs: 50,
    });
    const b = new RedisBroker(await open("pub-b"), await open("read-b"), { logger });
    const c = new RedisBroker(await open("pub-c"), await open("read-c"), { logger });
    try {
      await a.subscribe(handler("ia"));
      await b.subscribe(handler("ib"));
      await c.subscribe(handler("ic"));
      // A kick reaches every live instance's stream (after the entry that opened it).
      await a.kick({ userId: "u1", code: 4001, reason: "replaced" });
      for (const id of ["ia", "ib", "ic"]) {
        assertEquals(await entriesAdded(admin, deliveryStream(id)), 2, `kick in ${id}'s stream`);
      }
      // B and C leave cleanly: their streams go at once.
      await b.close();
      await c.close();
      assertEquals(await admin.exists(deliveryStream("ib")), 0, "a closed instance's stream");
      // An instance killed without leaving: its entry expired, its stream is still there.
      await admin.sendCommand(["ZADD", "im:broker:instances", "0", "dead"]);
      await admin.sendCommand(["XADD", deliveryStream("dead"), "*", "e", "left over"]);
      await eventually(
        async () => (await admin.exists(deliveryStream("dead"))) === 0 || undefined,
        "the expired instance's stream is deleted by another instance's renewal",
      );
      await a.kick({ userId: "u1", code: 4001, reason: "replaced" });
      assertEquals(await admin.exists(deliveryStream("dead")), 0, "no kick goes to it any more");
    } finally {
      await a.close();
      await admin.close();
    }
  },
});
