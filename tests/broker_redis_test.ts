import { brokerConformance } from "./broker_conformance.ts";
import { RedisServer, SKIP_REASON } from "./_redis.ts";
import type { Broker } from "../src/core/broker.ts";
import { RedisBroker } from "../src/backends/broker_redis.ts";
import { RedisPresence } from "../src/backends/presence_redis.ts";
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
      const brokers: Broker[] = [];
      // Shared presence: a broker that routes by it finds the instances holding each user.
      const presence = new RedisPresence(await connect("presence"), { logger, layout });
      return {
        maxInstances: 3,
        async broker() {
          const broker = new RedisBroker(await connect("publish"), await connect("read"), {
            logger,
            layout,
          });
          brokers.push(broker);
          return broker;
        },
        connected: (userId, clientName, instance) =>
          presence.add({ userId, clientName, instance, since: Date.now() }),
        async cleanup() {
          await Promise.all(brokers.map((broker) => broker.close()));
          await presence.close();
          await redis.kill();
        },
      };
    });
  }
} else {
  Deno.test({ name: "RedisBroker keeps every Broker guarantee", ignore: true, fn() {} });
}
