import { sessionsConformance } from "./sessions_conformance.ts";
import { RedisServer, SKIP_REASON } from "./_redis.ts";
import { RedisSessionStore } from "../src/backends/sessions_redis.ts";
import { connectRedis } from "../src/backends/redis.ts";
import { createLogger } from "../src/log.ts";

if (SKIP_REASON === undefined) {
  sessionsConformance("RedisSessionStore", async (ttlSeconds) => {
    const redis = await RedisServer.start();
    const logger = createLogger({ level: "error", write: () => {} });
    const client = await connectRedis(redis.url, { logger, name: "sessions" });
    const sessions = new RedisSessionStore(client, ttlSeconds);
    return {
      sessions,
      async cleanup() {
        await sessions.close();
        await redis.kill();
      },
    };
  });
} else {
  Deno.test({
    name: "RedisSessionStore keeps every SessionStore guarantee",
    ignore: true,
    fn() {},
  });
}
