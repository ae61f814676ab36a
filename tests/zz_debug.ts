import { RedisCluster } from "./_redis_cluster.ts";
import { openRedis } from "../src/backends/redis.ts";
import { createLogger } from "../src/log.ts";
await using cluster = await RedisCluster.start();
const logger = createLogger({
  level: "debug",
  write: (_l, line) => console.log(line.slice(0, 200)),
});
const link = await openRedis(cluster.url, { logger, name: "dbg" });
const key = "im:{g3.0}:x";
await link.send(key, ["SET", key, "1"]);
await link.send(key, ["WAIT", "1", "1000"]);
const t0 = Date.now();
const killing = cluster.killMasterOf(key).then((f) => console.log("failover", f, Date.now() - t0));
for (let i = 0; i < 60; i++) {
  try {
    const v = await link.send(key, ["GET", key]);
    console.log(Date.now() - t0, "ok", v);
    if (i > 5) { const f = await killing; }
  } catch (e) {
    console.log(
      Date.now() - t0,
      "err",
      (e as Error).constructor.name,
      (e as Error).message.slice(0, 100),
    );
  }
  await new Promise((r) => setTimeout(r, 250));
}
await killing;
await link.drop();
