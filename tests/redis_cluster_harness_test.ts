/**
 * The Redis Cluster test harness (`tests/_redis_cluster.ts`) with node-redis's
 * cluster client: keys spread over every master, and a key whose master is
 * killed is read from the replica promoted in its place (by a fresh client;
 * the client that was connected during the outage only after a rediscovery).
 */
import { createCluster } from "redis";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { SKIP_REASON } from "./_redis.ts";
import { RedisCluster, redisCommand } from "./_redis_cluster.ts";

const ignore = SKIP_REASON !== undefined;
/** Wait between a cluster client's reconnections to a node. */
const RETRY_MS = 100;

/** One key per master, told apart by hash tags. */
async function keyPerMaster(cluster: RedisCluster): Promise<Map<number, string>> {
  const keys = new Map<number, string>();
  const masters = cluster.nodes.filter((n) => n.role === "master").length;
  for (let i = 0; keys.size < masters && i < 1000; i++) {
    const key = `{room:${i}}:messages`;
    const master = await cluster.masterOf(key);
    if (!keys.has(master)) keys.set(master, key);
  }
  return keys;
}

Deno.test({
  name: "RedisCluster: a key is read from the promoted replica after its master is killed",
  ignore,
  async fn(t) {
    await using cluster = await RedisCluster.start();
    const masters = cluster.nodes.filter((n) => n.role === "master");
    assertEquals(masters.length, 3, "3 masters");
    assertEquals(cluster.nodes.filter((n) => n.role === "replica").length, 3, "3 replicas");
    const keys = await keyPerMaster(cluster);
    assertEquals([...keys.keys()].sort(), masters.map((n) => n.port).sort(), "a key per master");

    const nodeErrors: string[] = [];
    // Without an offline queue a command for a dead node rejects at once instead of waiting.
    // node-redis's wait between reconnections outlives destroy(): the test waits it out.
    let retryUntil = 0;
    const client = createCluster({
      rootNodes: [{ url: cluster.url }],
      defaults: {
        disableOfflineQueue: true,
        socket: {
          reconnectStrategy: () => {
            retryUntil = Date.now() + RETRY_MS;
            return RETRY_MS;
          },
        },
      },
    });
    client.on("node-error", (error: Error) => nodeErrors.push(error.message));
    await client.connect();
    try {
      await t.step("SET and GET reach every master", async () => {
        for (const key of keys.values()) await client.set(key, `value of ${key}`);
        for (const key of keys.values()) assertEquals(await client.get(key), `value of ${key}`);
        for (const [port, key] of keys) {
          assertEquals(await redisCommand(port, ["GET", key]), `value of ${key}`, "stored there");
        }
      });

      const [victim, key] = [...keys][0];
      await client.set(key, "before the failover");
      // WAIT counts the writes of its own connection: it goes to the key's master like the SET.
      const acks = await client.sendCommand(key, false, ["WAIT", "1", "1000"]);
      assertEquals(acks, 1, "a replica has it");
      const replicas = cluster.nodes.filter((n) => n.replicaOf === victim).map((n) => n.port);
      const { killed, promoted } = await cluster.killMasterOf(key);
      assertEquals(killed, victim);
      assert(replicas.includes(promoted), `${promoted} was a replica of ${victim}`);
      assertEquals(await cluster.masterOf(key), promoted);
      assertEquals(cluster.nodes.find((n) => n.port === promoted)?.role, "master");

      await t.step("a fresh cluster client reads the key from the promoted replica", async () => {
        const fresh = createCluster({ rootNodes: [{ url: cluster.url }] });
        await fresh.connect();
        try {
          assertEquals(await fresh.get(key), "before the failover");
          for (const other of keys.values()) {
            if (other !== key) assertEquals(await fresh.get(other), `value of ${other}`);
          }
          await fresh.set(key, "after the failover");
          assertEquals(await redisCommand(promoted, ["GET", key]), "after the failover");
        } finally {
          fresh.destroy();
        }
      });

      await t.step("the connected client keeps the dead master until it rediscovers", async () => {
        // node-redis rediscovers the slots only on a MOVED or ASK reply, which a dead node never
        // sends: the slot still points at it.
        await assertRejects(() => client.get(key), "The client is offline");
        assert(nodeErrors.some((m) => m.includes("ECONNREFUSED")), "it kept reconnecting");
        const live = client.masters.find((m) => m.port !== killed);
        assert(live, "a live master is known");
        await client._slots.rediscover(await client.nodeClient(live));
        assertEquals(await client.get(key), "after the failover");
        for (const other of keys.values()) {
          if (other !== key) assertEquals(await client.get(other), `value of ${other}`);
        }
      });
    } finally {
      client.destroy();
      await new Promise((resolve) => setTimeout(resolve, retryUntil - Date.now() + 50));
    }
  },
});

Deno.test({
  name: "RedisCluster.stop() ends every node and a failed start leaves nothing running",
  ignore,
  async fn() {
    const cluster = await RedisCluster.start({ masters: 3, replicasPerMaster: 0 });
    try {
      assertEquals(cluster.nodes.length, 3);
      assertEquals(await redisCommand(cluster.nodes[0].port, ["PING"]), "PONG");
    } finally {
      await cluster.stop();
    }
    assert(cluster.nodes.every((n) => !n.server.running), "no node runs");
    for (const node of cluster.nodes) {
      await assertRejects(() => redisCommand(node.port, ["PING"]), "");
    }
    await assertRejects(() => RedisCluster.start({ masters: 2 }), "at least 3 masters");
  },
});
