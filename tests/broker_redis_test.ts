import { brokerConformance } from "./broker_conformance.ts";
import { RedisServer, SKIP_REASON } from "./_redis.ts";
import { redisBrokerBackend } from "./_redis_broker.ts";
import { connectRedis } from "../src/backends/redis.ts";
import { RedisLayout } from "../src/backends/redis_layout.ts";
import { createLogger } from "../src/log.ts";

if (SKIP_REASON === undefined) {
  for (
    const [name, layout] of [["", undefined], [" (cluster layout)", RedisLayout.cluster()]] as const
  ) {
    brokerConformance(`RedisBroker${name}`, async () => {
      const redis = await RedisServer.start();
      const logger = createLogger({ level: "error", write: () => {} });
      const connect = (name: string) => connectRedis(redis.url, { logger, name });
      return await redisBrokerBackend(connect, { logger, layout }, () => redis.kill());
    });
  }
} else {
  Deno.test({ name: "RedisBroker keeps every Broker guarantee", ignore: true, fn() {} });
}
