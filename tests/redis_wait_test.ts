/**
 * `cluster.redisWait`: a 200 is sent only once a Redis replica holds the
 * message (`WAIT`), so what was answered 200 survives the loss of the
 * primary; when no replica confirms in time the send answers 400 and a resend
 * answers 200 once one does.
 */
import { assert, assertEquals } from "./_assert.ts";
import { startServer, type TestServer } from "./_helpers.ts";
import { eventually, freePort, RedisServer, SKIP_REASON } from "./_redis.ts";
import { connectRedis } from "../src/backends/redis.ts";
import { createLogger } from "../src/log.ts";

const ignore = SKIP_REASON !== undefined;
const logger = createLogger({ level: "error", write: () => {} });
/** Replicas a 200 waits for in these tests. */
const WAIT = 1;

/** A primary (no persistence) and a replica of it, the replica in sync. */
async function primaryAndReplica(): Promise<[RedisServer, RedisServer]> {
  const primary = await RedisServer.start();
  const replica = await RedisServer.start({ replicaOf: primary.port });
  const client = await connectRedis(replica.url, { logger, name: "probe" });
  try {
    await eventually(async () => {
      const info = await client.info("replication");
      return info.includes("master_link_status:up") || undefined;
    }, "the replica is in sync");
  } finally {
    await client.close();
  }
  return [primary, replica];
}

Deno.test({
  name: "redisWait: what was answered 200 survives the loss of the primary",
  ignore,
  async fn() {
    const [primary, replica] = await primaryAndReplica();
    await using _primary = primary;
    await using _replica = replica;
    const servers: TestServer[] = [];
    try {
      const a = await startServer({
        cluster: { redisUrl: primary.url, redisWait: WAIT, redisWaitTimeoutMs: 300 },
      });
      servers.push(a);
      const alice = await a.connect("alice");
      const answered: string[] = [];
      for (let i = 0; i < 10; i++) {
        const id = `w-${i}`;
        if ((await alice.text("u2", id, id)).code === 200) answered.push(id);
      }
      // The replica stops following (it keeps its data), more sends go out, and the primary
      // dies with everything it held (no AOF).
      const admin = await connectRedis(replica.url, { logger, name: "admin" });
      await admin.sendCommand(["REPLICAOF", "127.0.0.1", String(freePort())]);
      for (let i = 10; i < 14; i++) {
        const id = `w-${i}`;
        if ((await alice.text("u2", id, id)).code === 200) answered.push(id);
      }
      // (The instance stops first: its clients would otherwise keep retrying the dead primary.)
      await servers.pop()![Symbol.asyncDispose]();
      await primary.kill();
      await admin.sendCommand(["REPLICAOF", "NO", "ONE"]);
      await admin.close();
      const b = await startServer({ cluster: { redisUrl: replica.url } });
      servers.push(b);
      const bob = await b.connect("bob");
      // Every message answered 200 is replayed from the new primary (a missing one times out).
      const got = [];
      for (const _ of answered) got.push((await bob.message()).id);
      assertEquals(got, answered, "every 200 is on the new primary, in order");
      assertEquals(answered.length >= 10, true, "the sends before the replica stopped got 200");
    } finally {
      for (const server of servers.reverse()) await server[Symbol.asyncDispose]();
    }
  },
});

Deno.test({
  name: "redisWait: a send no replica confirms in time answers 400, its resend 200",
  ignore,
  async fn() {
    const [primary, replica] = await primaryAndReplica();
    await using _primary = primary;
    await using _replica = replica;
    await using server = await startServer({
      cluster: { redisUrl: primary.url, redisWait: 1, redisWaitTimeoutMs: 300 },
    });
    const alice = await server.connect("alice");
    assertEquals((await alice.text("u2", "before", "p-0")).code, 200);
    replica.pause();
    try {
      const refused = await alice.text("u2", "not copied", "p-1");
      assertEquals(refused.code, 400);
      assert(
        refused.msg?.startsWith("Storage unavailable: copied to 0 of 1 Redis replicas in time"),
        refused.msg,
      );
    } finally {
      replica.resume();
    }
    const again = await alice.text("u2", "not copied", "p-1");
    assertEquals([again.code, again.msg], [200, "Already accepted"]);
  },
});
