/**
 * The Outbox's hold while a stream's master is unreachable: in order, capped
 * at `cluster.maxHeldDeliveries` per stream (the oldest dropped past it), sent
 * once the master answers, and dropped with a stream that is gone.
 */
import { assertEquals } from "../../tests/_assert.ts";
import { createLogger } from "../log.ts";
import type { RedisLink } from "./redis.ts";
import { Outbox } from "./route_redis.ts";

/** A link whose master is down until `up`; records the entries it was sent, per stream. */
class FakeLink implements RedisLink {
  readonly cluster = true;
  readonly isReady = true;
  down = true;
  /** What `XADD` answers: an entry id, or null for a stream that is gone. */
  reply: string | null = "1-0";
  sent = new Map<string, string[]>();

  send<T>(key: string, args: string[]): Promise<T> {
    if (this.down) return Promise.reject(new Error("The client is offline"));
    const entries = this.sent.get(key) ?? [];
    this.sent.set(key, entries);
    entries.push(args[args.indexOf("e") + 1]);
    return Promise.resolve(this.reply as T);
  }
  nodes() {
    return [];
  }
  onReady() {}
  close() {
    return Promise.resolve();
  }
  drop() {
    return Promise.resolve();
  }
}

const logger = createLogger({ level: "error", write: () => {} });

async function until(done: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!done()) {
    if (Date.now() > deadline) throw new Error("Never happened");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Appends `texts` to instance `ib`'s stream, one call each, and waits for every call. */
async function append(outbox: Outbox, texts: string[]): Promise<void> {
  await Promise.all(texts.map((text) => outbox.reserve().fill([{ instances: ["ib"], text }])));
}

Deno.test("Outbox holds appends for an unreachable stream, capped, and sends them in order", async () => {
  const link = new FakeLink();
  const outbox = new Outbox(link, 1000, logger, 10);
  try {
    // A flood while the master is down: the calls resolve (nothing waits for the failover).
    await append(outbox, Array.from({ length: 25 }, (_, i) => `m${i}`));
    assertEquals(outbox.held, 10, "at most maxHeldDeliveries per stream; the oldest go");
    link.down = false;
    // Behind the held ones, not ahead of them (and the cap still holds: m15 goes).
    await append(outbox, ["m25"]);
    await until(() => outbox.held === 0);
    const expected = Array.from({ length: 10 }, (_, i) => `m${i + 16}`);
    assertEquals(link.sent.get("im:{inst:ib}:deliveries"), expected);
  } finally {
    outbox.close();
  }
});

Deno.test("Outbox drops what it holds for a stream that is gone, and holds nothing after close", async () => {
  const link = new FakeLink();
  const outbox = new Outbox(link, 1000, logger, 10);
  await append(outbox, ["a", "b", "c"]);
  link.down = false;
  link.reply = null; // NOMKSTREAM: the instance stopped, its stream was deleted
  await until(() => outbox.held === 0);
  assertEquals(link.sent.get("im:{inst:ib}:deliveries"), ["a"], "one try finds it gone");
  link.down = true;
  outbox.close();
  await append(outbox, ["d"]);
  assertEquals(outbox.held, 0);
});
