import { assert, assertEquals } from "./_assert.ts";
import { eventually, RedisServer, SKIP_REASON } from "./_redis.ts";
import type { MessageStore, NewMessage } from "../src/core/store.ts";
import { MemoryStore } from "../src/backends/store_memory.ts";
import { RedisStore } from "../src/backends/store_redis.ts";
import { connectRedis } from "../src/backends/redis.ts";
import { RedisLayout } from "../src/backends/redis_layout.ts";
import { createLogger, type Logger } from "../src/log.ts";
import { allUnacknowledged, storeConformance } from "./store_conformance.ts";

if (SKIP_REASON === undefined) {
  // The key layout of a Redis Cluster (users in hash-tagged groups, a message stored in the
  // group of each recipient, history merged across groups) runs on a single Redis too.
  for (
    const [name, layout] of [["", undefined], [" (cluster layout)", RedisLayout.cluster()]] as const
  ) {
    storeConformance(`RedisStore${name}`, async (options) => {
      const redis = await RedisServer.start();
      const client = await connectRedis(redis.url, { logger: options.logger, name: "test" });
      const store = new RedisStore(client, { ...options, layout });
      return {
        store,
        async cleanup() {
          await store.close();
          await redis.kill();
        },
      };
    }, { quotaRecipients: layout && ((count) => sameGroup(layout, count)) });
  }
} else {
  Deno.test({ name: "RedisStore keeps every MessageStore guarantee", ignore: true, fn() {} });
}

/** `count` userIds in one group of `layout` (a sender's quota is per group on a Redis Cluster). */
function sameGroup(layout: RedisLayout, count: number): string[] {
  const names: string[] = [];
  for (let i = 0; names.length < count; i++) {
    if (layout.group(`x${i}`) === layout.group("x0")) names.push(`x${i}`);
  }
  return names;
}

/** A store with the cluster's key layout on `redis` (a single Redis). */
async function clusterLayoutStore(
  redis: RedisServer,
  options: { maxPendingBytesPerSender?: number } = {},
): Promise<{ store: RedisStore; layout: RedisLayout }> {
  const { logger } = capture();
  const layout = RedisLayout.cluster();
  const client = await connectRedis(redis.url, { logger, name: "test" });
  return { store: new RedisStore(client, { ...options, logger, layout }), layout };
}

interface Opened {
  store: MessageStore;
  logs: string[];
  close(): Promise<void>;
}

interface Options {
  maxPerUser?: number;
  retentionDays?: number;
}

function capture(): { logger: Logger; logs: string[] } {
  const logs: string[] = [];
  return { logs, logger: createLogger({ level: "debug", write: (_l, line) => logs.push(line) }) };
}

/** Every backend these tests run against: the reference (memory) and Redis. */
const BACKENDS: { name: string; ignore: boolean; open(o: Options): Promise<Opened> }[] = [
  {
    name: "MemoryStore",
    ignore: false,
    open(options) {
      const { logger, logs } = capture();
      const store = new MemoryStore({ ...options, logger });
      return Promise.resolve({ store, logs, close: () => store.close() });
    },
  },
  {
    name: "RedisStore",
    ignore: SKIP_REASON !== undefined,
    async open(options) {
      const redis = await RedisServer.start();
      const { logger, logs } = capture();
      const client = await connectRedis(redis.url, { logger, name: "test" });
      const store = new RedisStore(client, { ...options, logger });
      return {
        store,
        logs,
        async close() {
          await store.close();
          await redis.kill();
        },
      };
    },
  },
];

let clock = 1_700_000_000_000;
function message(sender: string, id: string, recipients: string[], at = ++clock): NewMessage {
  return {
    sender,
    id,
    type: 2001,
    recipients,
    text: JSON.stringify({ id, from: sender, to: recipients.join(","), body: `body of ${id}` }),
    acceptedAt: at,
  };
}

const ids = (list: { id: string }[]) => list.map((m) => m.id);

for (const backend of BACKENDS) {
  Deno.test({
    name: `${backend.name} keeps the MessageStore guarantees`,
    ignore: backend.ignore,
    async fn(t) {
      const opened = await backend.open({});
      const { store } = opened;
      try {
        await t.step("accept stores a message for each recipient, oldest first", async () => {
          const m1 = message("u1", "a1", ["u2", "u3"]);
          assertEquals(await store.accept(m1), { duplicate: false });
          assertEquals(await store.accept(message("u3", "a2", ["u2"])), { duplicate: false });
          const inbox = await allUnacknowledged(store, "u2");
          assertEquals(ids(inbox), ["a1", "a2"]);
          assertEquals(inbox[0], {
            sender: "u1",
            id: "a1",
            type: 2001,
            text: m1.text,
            acceptedAt: m1.acceptedAt,
          });
          assertEquals(ids(await allUnacknowledged(store, "u3")), ["a1"]);
          assertEquals(await allUnacknowledged(store, "nobody"), []);
          assertEquals(await store.pendingCount(), 3);
        });

        await t.step("a second accept of (sender, id) changes nothing", async () => {
          const again = { ...message("u1", "a1", ["u9"]), text: "other" };
          assertEquals(await store.accept(again), { duplicate: true });
          assertEquals(await allUnacknowledged(store, "u9"), []);
          assertEquals((await allUnacknowledged(store, "u2"))[0].text.includes("body of a1"), true);
          assertEquals(await store.pendingCount(), 3);
          // The same id from another sender is another message.
          assertEquals(await store.accept(message("u2", "a1", ["u1"])), { duplicate: false });
          assertEquals(await store.pendingCount(), 4);
        });

        await t.step("acknowledge is per recipient and known messages only", async () => {
          assertEquals(await store.acknowledge("u2", { sender: "u1", id: "a1" }), true);
          assertEquals(await store.acknowledge("u2", { sender: "u1", id: "a1" }), true);
          assertEquals(await store.acknowledge("u4", { sender: "u1", id: "a1" }), false);
          assertEquals(await store.acknowledge("u2", { sender: "u1", id: "nope" }), false);
          assertEquals(await store.acknowledge("u2", { sender: "u9", id: "a1" }), false);
          assertEquals(ids(await allUnacknowledged(store, "u2")), ["a2"]);
          assertEquals(ids(await allUnacknowledged(store, "u3")), ["a1"]);
          assertEquals(await store.pendingCount(), 3);
        });

        await t.step("markDelivered moves pending to delivered, seen in history", async () => {
          await store.markDelivered("u3", [{ sender: "u1", id: "a1" }, { sender: "x", id: "y" }]);
          await store.markDelivered("u3", []);
          const page = await store.history("u1", "u3", { limit: 10 });
          assertEquals(page.messages.map((m) => [m.id, m.state]), [["a1", "delivered"]]);
          // Delivered is still unacknowledged.
          assertEquals(ids(await allUnacknowledged(store, "u3")), ["a1"]);
          // An acknowledged message is not moved back.
          await store.markDelivered("u2", [{ sender: "u1", id: "a1" }]);
          const u2 = await store.history("u1", "u2", { limit: 10 });
          assertEquals(u2.messages.map((m) => [m.sender, m.id, m.state]), [
            ["u2", "a1", "pending"],
            ["u1", "a1", "acknowledged"],
          ]);
        });
      } finally {
        await opened.close();
      }
    },
  });

  Deno.test({
    name: `${backend.name} pages history between two users, newest first`,
    ignore: backend.ignore,
    async fn() {
      const opened = await backend.open({});
      const { store } = opened;
      try {
        for (let i = 0; i < 7; i++) {
          const [from, to] = i % 2 === 0 ? ["u1", "u2"] : ["u2", "u1"];
          await store.accept(message(from, `h${i}`, [to]));
          await store.accept(message(from, `x${i}`, ["u3"]));
        }
        await store.accept(message("u1", "group", ["u2", "u3"]));
        await store.acknowledge("u2", { sender: "u1", id: "h0" });
        const first = await store.history("u1", "u2", { limit: 3 });
        assertEquals(ids(first.messages), ["group", "h6", "h5"]);
        assertEquals(first.messages[0].recipients, ["u2", "u3"]);
        assert(first.next !== undefined, "a next cursor");
        const second = await store.history("u1", "u2", { limit: 3, before: first.next });
        assertEquals(ids(second.messages), ["h4", "h3", "h2"]);
        const third = await store.history("u1", "u2", { limit: 3, before: second.next });
        assertEquals(ids(third.messages), ["h1", "h0"]);
        assertEquals(third.next, undefined);
        // State is that of the other party: u2 acknowledged h0; u1 has not acknowledged h1.
        assertEquals(third.messages.map((m) => m.state), ["pending", "acknowledged"]);
        // Seen from the other side, the same conversation.
        const mirror = await store.history("u2", "u1", { limit: 100 });
        assertEquals(ids(mirror.messages), ["group", "h6", "h5", "h4", "h3", "h2", "h1", "h0"]);
        assertEquals(mirror.messages.at(-1)!.state, "acknowledged");
        assertEquals((await store.history("u3", "u4", { limit: 10 })).messages, []);
        const withU3 = await store.history("u3", "u1", { limit: 10 });
        assertEquals(ids(withU3.messages), ["group", "x6", "x4", "x2", "x0"]);
        const exact = await store.history("u1", "u2", { limit: 8 });
        assertEquals(exact.next, undefined);
      } finally {
        await opened.close();
      }
    },
  });

  Deno.test({
    name: `${backend.name} drops the oldest past maxPerUser and logs the drop`,
    ignore: backend.ignore,
    async fn() {
      const opened = await backend.open({ maxPerUser: 3 });
      const { store, logs } = opened;
      try {
        for (let i = 0; i < 5; i++) await store.accept(message("u1", `c${i}`, ["u2"]));
        assertEquals(ids(await allUnacknowledged(store, "u2")), ["c2", "c3", "c4"]);
        assertEquals(await store.pendingCount(), 3);
        assertEquals(logs.filter((line) => line.includes("Per-user cap reached")).length, 2);
        // A dropped message is forgotten: its id may be accepted again.
        assertEquals(await store.accept(message("u1", "c0", ["u2"])), { duplicate: false });
        assertEquals(await store.acknowledge("u2", { sender: "u1", id: "c2" }), false);
        // An acknowledged message is dropped silently.
        assertEquals(await store.acknowledge("u2", { sender: "u1", id: "c3" }), true);
        const before = logs.length;
        await store.accept(message("u1", "c5", ["u2"]));
        assertEquals(logs.slice(before).filter((l) => l.includes("Per-user cap")).length, 0);
        assertEquals(ids(await allUnacknowledged(store, "u2")), ["c4", "c0", "c5"]);
        assertEquals(await store.acknowledge("u2", { sender: "u1", id: "c1" }), false);
        assertEquals(ids((await store.history("u2", "u1", { limit: 10 })).messages), [
          "c5",
          "c0",
          "c4",
        ]);
      } finally {
        await opened.close();
      }
    },
  });

  Deno.test({
    name: `${backend.name} sweeps messages older than the retention period`,
    ignore: backend.ignore,
    async fn() {
      const opened = await backend.open({ retentionDays: 1 });
      const { store } = opened;
      try {
        const now = 1_800_000_000_000;
        const day = 86_400_000;
        await store.accept(message("u1", "old1", ["u2", "u3"], now - 3 * day));
        await store.accept(message("u1", "old2", ["u2"], now - 2 * day));
        await store.accept(message("u1", "new1", ["u2"], now - day / 2));
        await store.acknowledge("u3", { sender: "u1", id: "old1" });
        assertEquals(await store.pendingCount(), 3);
        assertEquals(await store.sweep(now), 2);
        assertEquals(ids(await allUnacknowledged(store, "u2")), ["new1"]);
        assertEquals(await store.pendingCount(), 1);
        assertEquals(ids((await store.history("u1", "u2", { limit: 10 })).messages), ["new1"]);
        assertEquals(await store.sweep(now), 0);
        // A swept id is forgotten.
        assertEquals(await store.accept(message("u1", "old1", ["u2"], now)), { duplicate: false });
      } finally {
        await opened.close();
      }
    },
  });

  Deno.test({
    name: `${backend.name} resolves accepts in the order they were made`,
    ignore: backend.ignore,
    async fn() {
      const opened = await backend.open({});
      const { store } = opened;
      try {
        const order: number[] = [];
        const calls = Array.from(
          { length: 300 },
          (_, i) =>
            store.accept(message(`s${i % 7}`, `o${i}`, [`r${i % 5}`, "all"])).then(() => {
              order.push(i);
            }),
        );
        await Promise.all(calls);
        assertEquals(order, Array.from({ length: 300 }, (_, i) => i));
        const all = await allUnacknowledged(store, "all");
        assertEquals(ids(all), Array.from({ length: 300 }, (_, i) => `o${i}`));
        assertEquals(await store.pendingCount(), 600);
      } finally {
        await opened.close();
      }
    },
  });
}

Deno.test({
  name: "RedisStore keeps what it answered across a Redis kill (AOF)",
  ignore: SKIP_REASON !== undefined,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "im-redis-aof-" });
    const redis = await RedisServer.start({ aofDir: dir });
    const { logger } = capture();
    const client = await connectRedis(redis.url, { logger, name: "test" });
    const store = new RedisStore(client, { logger });
    try {
      const accepted = await Promise.all(
        Array.from({ length: 200 }, (_, i) => store.accept(message("u1", `d${i}`, ["u2"]))),
      );
      assert(accepted.every((r) => !r.duplicate));
      await redis.kill();
      await redis.restart();
      // The client reconnects by itself; a command may fail until it has.
      const inbox = await eventually(() => allUnacknowledged(store, "u2"), "Redis is back");
      assertEquals(ids(inbox), Array.from({ length: 200 }, (_, i) => `d${i}`));
      assertEquals(await store.pendingCount(), 200);
    } finally {
      await store.close();
      await redis.kill();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "RedisStore answers unavailable, not out of order, when Redis lost its scripts",
  ignore: SKIP_REASON !== undefined,
  async fn() {
    await using redis = await RedisServer.start();
    const { logger } = capture();
    const client = await connectRedis(redis.url, { logger, name: "test" });
    const admin = await connectRedis(redis.url, { logger, name: "admin" });
    const store = new RedisStore(client, { logger });
    try {
      await store.accept(message("u1", "s0", ["u2"]));
      await admin.scriptFlush();
      const first = await store.accept(message("u1", "s1", ["u2"])).then(
        () => "accepted",
        (error: Error) => error.name,
      );
      assertEquals(first, "BackendUnavailableError");
      // The scripts are loaded again: the resend is accepted.
      await eventually(() => store.accept(message("u1", "s1", ["u2"])), "scripts reloaded");
      assertEquals(ids(await allUnacknowledged(store, "u2")), ["s0", "s1"]);
    } finally {
      await store.close();
      await admin.close();
    }
  },
});

Deno.test({
  name: "RedisStore (cluster layout): a resend completes the groups a refused send missed",
  ignore: SKIP_REASON !== undefined,
  async fn() {
    await using redis = await RedisServer.start();
    // 100-character texts, 150 bytes of quota per sender and group.
    const { store, layout } = await clusterLayoutStore(redis, { maxPendingBytesPerSender: 150 });
    const [b, c] = sameGroup(layout, 2);
    let a = "a0";
    for (let i = 1; layout.group(a) === layout.group(b); i++) a = `a${i}`;
    const frame = (id: string, to: string[]) => ({
      ...message("s", id, to),
      text: "x".repeat(100),
    });
    try {
      assertEquals(await store.accept(frame("m0", [c])), { duplicate: false });
      // a's group stores m1; b's group is past the quota.
      assertEquals(await store.accept(frame("m1", [a, b])), { duplicate: false, overQuota: true });
      assertEquals(ids(await allUnacknowledged(store, a)), ["m1"]);
      assertEquals(ids(await allUnacknowledged(store, b)), []);
      await store.markDelivered(c, [{ sender: "s", id: "m0" }]);
      // The same message again: b's group stores it now, a's answers duplicate (no second copy).
      assertEquals(await store.accept(frame("m1", [a, b])), { duplicate: false });
      assertEquals(ids(await allUnacknowledged(store, a)), ["m1"]);
      assertEquals(ids(await allUnacknowledged(store, b)), ["m1"]);
      assertEquals(await store.accept(frame("m1", [a, b])), { duplicate: true });
      // Its id to other recipients is a duplicate, stored nowhere.
      assertEquals(await store.accept(frame("m1", [c])), { duplicate: true });
      assertEquals(ids(await allUnacknowledged(store, c)), ["m0"]);
    } finally {
      await store.close();
    }
  },
});

Deno.test({
  name: "RedisStore (cluster layout): the claim rides with the copy in the sender's own group",
  ignore: SKIP_REASON !== undefined,
  async fn() {
    await using redis = await RedisServer.start();
    const { store, layout } = await clusterLayoutStore(redis);
    // s and b share a group; c is in another.
    const [s, b] = sameGroup(layout, 2);
    let c = "c0";
    for (let i = 1; layout.group(c) === layout.group(s); i++) c = `c${i}`;
    try {
      assertEquals(await store.accept(message(s, "m1", [b])), { duplicate: false });
      assertEquals(await store.accept(message(s, "m1", [b])), { duplicate: true });
      // Its id to other recipients (another group) is a duplicate, stored nowhere.
      assertEquals(await store.accept(message(s, "m1", [b, c])), { duplicate: true });
      assertEquals(ids(await allUnacknowledged(store, c)), []);
      // And the other way round: claimed by a script of its own, refused in the sender's group.
      assertEquals(await store.accept(message(s, "m2", [c])), { duplicate: false });
      assertEquals(await store.accept(message(s, "m2", [b])), { duplicate: true });
      assertEquals(ids(await allUnacknowledged(store, b)), ["m1"]);
      assertEquals(await store.pendingCount(), 2);
    } finally {
      await store.close();
    }
  },
});
