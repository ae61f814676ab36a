import { presenceConformance } from "./presence_conformance.ts";
import { RedisServer, SKIP_REASON } from "./_redis.ts";
import { connectRedis } from "../src/backends/redis.ts";
import { RedisLayout } from "../src/backends/redis_layout.ts";
import { RedisPresence } from "../src/backends/presence_redis.ts";
import { createLogger } from "../src/log.ts";

for (
  const [name, layout] of [["", undefined], [" (cluster layout)", RedisLayout.cluster()]] as const
) {
  Deno.test({
    name: `RedisPresence passes the presence conformance suite${name}`,
    ignore: SKIP_REASON !== undefined,
    async fn(t) {
      await using redis = await RedisServer.start();
      const logger = createLogger({ level: "error", write: () => {} });
      const admin = await connectRedis(redis.url, { logger, name: "admin" });
      try {
        await presenceConformance(t, async () => {
          await admin.flushAll();
          return new RedisPresence(await connectRedis(redis.url, { logger, name: "p" }), {
            logger,
            layout,
          });
        });
      } finally {
        await admin.close();
      }
    },
  });
}
