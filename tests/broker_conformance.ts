/**
 * The conformance suite every {@link Broker} passes: each guarantee of
 * `src/core/broker.ts` is a step. A backend's test calls
 * {@link brokerConformance} with a function that opens a fresh, empty
 * backend on which brokers of one or more instances can be started.
 *
 * Only what the interface promises is asserted: a delivery reaches every
 * instance holding a connection of its users (a broker may hand it to other
 * instances too), in the order each instance published, once; a kick reaches
 * every instance.
 *
 * @module
 */
import { assertEquals } from "./_assert.ts";
import type { Broker, Delivery, Kick } from "../src/core/broker.ts";
import { type Connection, Hub } from "../src/core/hub.ts";

/** A backend opened for one step: brokers of several instances share it. */
export interface BrokerBackend {
  /** How many instances can share this backend (1 for an in-memory broker). */
  readonly maxInstances: number;
  /** The broker of instance `instance` (not yet subscribed). */
  broker(instance: string): Promise<Broker>;
  /**
   * Records that `instance` holds a connection of `userId`, as a register
   * does (brokers that route by presence need it; others may ignore it).
   */
  connected(userId: string, clientName: string, instance: string): Promise<void>;
  /** Closes what is still open and removes what the backend left behind. */
  cleanup(): Promise<void>;
}

/** One subscribed instance: what reached it, and its hub for kicks. */
interface Instance {
  name: string;
  broker: Broker;
  hub: Hub;
  deliveries: Delivery[];
  kicks: Kick[];
}

async function start(backend: BrokerBackend, name: string): Promise<Instance> {
  const broker = await backend.broker(name);
  const hub = new Hub(name);
  const instance: Instance = { name, broker, hub, deliveries: [], kicks: [] };
  // Not a literal: routing brokers may read more fields of the handler (its instance id).
  const handler = {
    instance: name,
    deliver: (delivery: Delivery) => instance.deliveries.push(delivery),
    kick: (kick: Kick) => {
      instance.kicks.push(kick);
      hub.kick(kick);
    },
  };
  await broker.subscribe(handler);
  return instance;
}

/** Waits until `done()`; the generous bound only keeps a broken backend from hanging the test. */
async function until(done: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`Never happened: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

let connectionIds = 0;

/** A registered connection that records its closes. */
function connection(userId: string, clientName: string) {
  const closes: string[] = [];
  const conn: Connection & { closes: string[] } = {
    id: ++connectionIds,
    userId,
    clientName,
    since: Date.now(),
    closes,
    deliver() {},
    replay() {},
    endReplay() {},
    close: (code, reason) => closes.push(`${code} ${reason}`),
    drain: () => Promise.resolve(true),
  };
  return conn;
}

const texts = (deliveries: Delivery[]) => deliveries.map((d) => d.text);

/**
 * Registers the conformance test of a broker named `name`; `open` gives a
 * fresh, empty backend for each step.
 */
export function brokerConformance(name: string, open: () => Promise<BrokerBackend>): void {
  Deno.test(`${name} keeps every Broker guarantee`, async (t) => {
    let multi = true;
    const step = (
      title: string,
      fn: (backend: BrokerBackend) => Promise<void>,
      instances = 1,
    ) =>
      t.step({
        name: title,
        ignore: instances > 1 && !multi,
        fn: async () => {
          const backend = await open();
          try {
            await fn(backend);
          } finally {
            await backend.cleanup();
          }
        },
      });

    await step("publish() hands a delivery to this instance, unchanged", async (backend) => {
      multi = backend.maxInstances > 1;
      const i1 = await start(backend, "i1");
      await backend.connected("bob", "web", "i1");
      await backend.connected("alice", "phone", "i1");
      const delivery: Delivery = {
        stored: { sender: "alice", id: "m1" },
        text: '{"id":"m1","body":"é 😀 \\u0000"}',
        users: ["bob", "carol"],
        echoTo: "alice",
        origin: { instance: "i1", conn: 7 },
        acceptedAt: 1_700_000_000_123,
      };
      await i1.broker.publish(delivery);
      await until(() => i1.deliveries.length > 0, "the delivery");
      assertEquals(i1.deliveries, [delivery]);
      const bare: Delivery = { text: "receipt", users: ["bob"] };
      await i1.broker.publish(bare);
      await until(() => i1.deliveries.length > 1, "the second delivery");
      assertEquals(i1.deliveries[1], bare);
    });

    await step("deliveries arrive in the order published, each once", async (backend) => {
      const i1 = await start(backend, "i1");
      await backend.connected("bob", "web", "i1");
      const sent = Array.from({ length: 300 }, (_, i) => `d${i}`);
      // Not awaited one by one: the order must hold for publishes in flight together.
      await Promise.all(sent.map((text) => i1.broker.publish({ text, users: ["bob"] })));
      await until(() => i1.deliveries.length >= sent.length, "every delivery");
      assertEquals(texts(i1.deliveries), sent);
    });

    await step("kick() reaches this instance", async (backend) => {
      const i1 = await start(backend, "i1");
      const kick: Kick = { userId: "bob", clientName: "web", code: 4003, reason: "kicked" };
      await i1.broker.kick(kick);
      await until(() => i1.kicks.length > 0, "the kick");
      assertEquals(i1.kicks, [kick]);
    });

    await step("a delivery reaches every instance holding its users", async (backend) => {
      const [i1, i2, i3] = await Promise.all(["i1", "i2", "i3"].map((n) => start(backend, n)));
      await backend.connected("bob", "web", "i2");
      await backend.connected("carol", "web", "i3");
      // Alice sends from her web client on i1; her phone on i3 gets the echo.
      await backend.connected("alice", "web", "i1");
      await backend.connected("alice", "phone", "i3");
      await i1.broker.publish({ text: "to bob", users: ["bob"] });
      await i1.broker.publish({ text: "to both", users: ["bob", "carol"] });
      await i1.broker.publish({
        text: "echo",
        users: ["dave"],
        echoTo: "alice",
        origin: { instance: "i1", conn: 1 },
      });
      await until(() => i2.deliveries.length >= 2 && i3.deliveries.length >= 2, "deliveries");
      assertEquals(texts(i2.deliveries).filter((x) => x !== "echo"), ["to bob", "to both"]);
      assertEquals(texts(i3.deliveries).filter((x) => x !== "to bob"), ["to both", "echo"]);
    }, 3);

    await step("each publisher's order holds on every instance", async (backend) => {
      const [i1, i2] = await Promise.all(["i1", "i2"].map((n) => start(backend, n)));
      await backend.connected("bob", "web", "i1");
      await backend.connected("bob", "phone", "i2");
      const from = (instance: Instance) =>
        Array.from({ length: 150 }, (_, i) => `${instance.name}-${i}`);
      await Promise.all(
        [i1, i2].flatMap((instance) =>
          from(instance).map((text) => instance.broker.publish({ text, users: ["bob"] }))
        ),
      );
      for (const instance of [i1, i2]) {
        await until(() => instance.deliveries.length >= 300, `every delivery on ${instance.name}`);
        const got = texts(instance.deliveries);
        assertEquals(got.length, 300, "each delivery once");
        assertEquals(got.filter((x) => x.startsWith("i1-")), from(i1));
        assertEquals(got.filter((x) => x.startsWith("i2-")), from(i2));
      }
    }, 2);

    await step("a kick reaches every instance and spares its except", async (backend) => {
      const [i1, i2, i3] = await Promise.all(["i1", "i2", "i3"].map((n) => start(backend, n)));
      const web1 = connection("bob", "web");
      const web2 = connection("bob", "web");
      const phone3 = connection("bob", "phone");
      i1.hub.add(web1);
      i2.hub.add(web2);
      i3.hub.add(phone3);
      await backend.connected("bob", "web", "i1");
      await backend.connected("bob", "web", "i2");
      await backend.connected("bob", "phone", "i3");
      // The new web connection on i1 replaces the one on i2, and must survive its own kick.
      await i1.broker.kick({
        userId: "bob",
        clientName: "web",
        code: 4001,
        reason: "replaced",
        except: { instance: "i1", conn: web1.id },
      });
      await until(() => [i1, i2, i3].every((i) => i.kicks.length === 1), "the kick everywhere");
      assertEquals(i3.kicks[0].except, { instance: "i1", conn: web1.id });
      assertEquals([web1.closes, web2.closes, phone3.closes], [[], ["4001 replaced"], []]);
      await i3.broker.kick({ userId: "bob", code: 4003, reason: "kicked" });
      await until(() => [i1, i2, i3].every((i) => i.kicks.length === 2), "the second kick");
      assertEquals([web1.closes, phone3.closes], [["4003 kicked"], ["4003 kicked"]]);
    }, 3);
  });
}
