/**
 * The Redis broker as the broker conformance suite opens it: brokers sharing
 * one presence (a broker that routes by it finds the instances holding each
 * user), on a single Redis or a Redis Cluster.
 *
 * @module
 */
import type { BrokerBackend } from "./broker_conformance.ts";
import type { Broker } from "../src/core/broker.ts";
import { RedisBroker } from "../src/backends/broker_redis.ts";
import { RedisPresence } from "../src/backends/presence_redis.ts";
import type { RedisClient, RedisLink } from "../src/backends/redis.ts";
import type { RedisLayout } from "../src/backends/redis_layout.ts";
import type { Logger } from "../src/log.ts";

/** Brokers and their presence over connections from `connect`; `after` runs at cleanup. */
export async function redisBrokerBackend(
  connect: (name: string) => Promise<RedisClient | RedisLink>,
  options: { logger: Logger; layout?: RedisLayout },
  after?: () => Promise<void>,
): Promise<BrokerBackend> {
  const brokers: Broker[] = [];
  const presence = new RedisPresence(await connect("presence"), options);
  return {
    maxInstances: 3,
    async broker() {
      const broker = new RedisBroker(await connect("publish"), await connect("read"), options);
      brokers.push(broker);
      return broker;
    },
    connected: (userId, clientName, instance) =>
      presence.add({ userId, clientName, instance, since: Date.now() }),
    async cleanup() {
      await Promise.all(brokers.map((broker) => broker.close()));
      await presence.close();
      await after?.();
    },
  };
}
