/**
 * DeliveryService on the memory store, through a broker that records what it
 * carries, to connections that record what reaches them.
 */
import { assert, assertEquals } from "../../tests/_assert.ts";
import { DeliveryService, type Outgoing } from "./delivery.ts";
import { type Connection, Hub } from "./hub.ts";
import type { Broker, BrokerHandler, Delivery, Kick } from "./broker.ts";
import type { MessageKey, StoredMessage } from "./store.ts";
import { MemoryStore } from "../backends/store_memory.ts";
import { createLogger } from "../log.ts";

/** A single-instance broker that keeps a copy of everything it carries. */
class RecordingBroker implements Broker {
  published: Delivery[] = [];
  kicks: Kick[] = [];
  #handler?: BrokerHandler;

  publish(delivery: Delivery): Promise<void> {
    this.published.push(delivery);
    this.#handler?.deliver(delivery);
    return Promise.resolve();
  }

  kick(kick: Kick): Promise<void> {
    this.kicks.push(kick);
    this.#handler?.kick(kick);
    return Promise.resolve();
  }

  subscribe(handler: BrokerHandler): Promise<void> {
    this.#handler = handler;
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** A connection that writes what happens to it into a shared log. */
interface FakeConnection extends Connection {
  live: string[];
  replayed: string[];
  closes: string[];
  /** What `drain()` answers. */
  room: boolean;
  drains: number;
}

let ids = 0;

function connection(userId: string, clientName = "web", log: string[] = []): FakeConnection {
  const conn: FakeConnection = {
    id: ++ids,
    userId,
    clientName,
    since: 0,
    live: [],
    replayed: [],
    closes: [],
    room: true,
    drains: 0,
    deliver(text: string, _stored?: MessageKey) {
      conn.live.push(text);
      log.push(`live ${text}`);
    },
    replay(message: StoredMessage) {
      conn.replayed.push(message.id);
      log.push(`replay ${message.id}`);
    },
    endReplay() {
      log.push("end replay");
    },
    close(code: number, reason: string) {
      conn.closes.push(`${code} ${reason}`);
    },
    drain() {
      conn.drains++;
      return Promise.resolve(conn.room);
    },
  };
  return conn;
}

function setup() {
  const logger = createLogger({ level: "error", write: () => {} });
  const hub = new Hub("i1");
  const store = new MemoryStore({});
  const broker = new RecordingBroker();
  const offline: string[][] = [];
  const sent: number[] = [];
  const delivery = new DeliveryService({
    store,
    broker,
    hub,
    instanceId: "i1",
    logger,
    observer: {
      storedForOffline: (users) => offline.push(users),
      sent: (count) => sent.push(count),
    },
  });
  delivery.start();
  return { hub, store, broker, delivery, offline, sent };
}

const message = (sender: string, id: string, recipients: string[], store?: boolean): Outgoing => ({
  sender,
  id,
  type: 2001,
  recipients,
  text: `${sender}:${id}`,
  store,
});

Deno.test("delivery.send() stores, then routes to recipients and the sender's other connections", async (t) => {
  const { hub, store, broker, delivery, offline } = setup();
  const web = connection("alice", "web");
  const phone = connection("alice", "phone");
  const bob = connection("bob");
  for (const c of [web, phone, bob]) hub.add(c);

  await t.step("every recipient connection and the sender's others; never the origin", async () => {
    assertEquals(await delivery.send(message("alice", "m1", ["bob", "carol"]), web), {
      duplicate: false,
    });
    assertEquals([bob.live, phone.live, web.live], [["alice:m1"], ["alice:m1"], []]);
    assertEquals((await store.unacknowledged("carol")).map((m) => m.id), ["m1"]);
    assertEquals(offline, [["carol"]], "carol has no connection");
    assertEquals(broker.published[0].origin, { instance: "i1", conn: web.id });
    assertEquals(broker.published[0].stored, { sender: "alice", id: "m1" });
  });
  await t.step("a repeated id is a duplicate: nothing stored or sent again", async () => {
    assertEquals(await delivery.send(message("alice", "m1", ["bob"]), web), { duplicate: true });
    assertEquals(broker.published.length, 1);
    assertEquals(bob.live, ["alice:m1"]);
  });
  await t.step("store: false sends live only", async () => {
    await delivery.send(message("alice", "typing", ["bob"], false), web);
    assertEquals(bob.live.at(-1), "alice:typing");
    assertEquals(broker.published.at(-1)!.stored, undefined);
    assertEquals((await store.unacknowledged("bob")).map((m) => m.id), ["m1"]);
  });
  await t.step("a sender among the recipients gets it once per connection", async () => {
    await delivery.send(message("alice", "m2", ["alice", "bob"]), web);
    assertEquals(phone.live.filter((x) => x === "alice:m2").length, 1);
    assertEquals(web.live, []);
  });
  await t.step("a system sender is not echoed", async () => {
    await delivery.send(message("SYSTEM", "n1", ["bob"]));
    assertEquals(broker.published.at(-1)!.echoTo, undefined);
    assertEquals(bob.live.at(-1), "SYSTEM:n1");
  });
});

Deno.test("delivery.receipt() records it and forwards it to the original sender", async (t) => {
  const { hub, store, delivery } = setup();
  const alice = connection("alice");
  const bobWeb = connection("bob", "web");
  const bobPhone = connection("bob", "phone");
  for (const c of [alice, bobWeb, bobPhone]) hub.add(c);
  await delivery.send(message("alice", "m1", ["bob"]), alice);
  await delivery.send(message("SYSTEM", "n1", ["bob"]));

  await t.step("an unknown message: false, nothing forwarded", async () => {
    const before = alice.live.length;
    assertEquals(
      await delivery.receipt("bob", { sender: "alice", id: "nope" }, "r0", bobWeb),
      false,
    );
    assertEquals(alice.live.length, before);
  });
  await t.step(
    "a known one: acknowledged, forwarded to the sender and bob's other clients",
    async () => {
      assertEquals(
        await delivery.receipt("bob", { sender: "alice", id: "m1" }, "r1", bobWeb),
        true,
      );
      assertEquals(alice.live, ["r1"]);
      assertEquals(bobPhone.live.at(-1), "r1");
      assertEquals(bobWeb.live.includes("r1"), false);
      assertEquals((await store.unacknowledged("bob")).map((m) => m.id), ["n1"]);
    },
  );
  await t.step("a receipt for a system message goes to no user", async () => {
    assertEquals(await delivery.receipt("bob", { sender: "SYSTEM", id: "n1" }, "r2", bobWeb), true);
    assertEquals(alice.live.includes("r2"), false);
    assertEquals(await store.unacknowledged("bob"), []);
  });
});

Deno.test("delivery.register() answers first, then replays oldest first, then ends the replay", async (t) => {
  await t.step("the order a client sees", async () => {
    const { delivery, hub, store } = setup();
    for (const id of ["m1", "m2", "m3"]) await delivery.send(message("alice", id, ["bob"]));
    const log: string[] = [];
    const bob = connection("bob", "web", log);
    await delivery.register(bob, () => log.push("registered"));
    assertEquals(log, ["registered", "replay m1", "replay m2", "replay m3", "end replay"]);
    assertEquals(hub.isOnline("bob"), true);
    const page = await store.history("alice", "bob", { limit: 10 });
    assertEquals(page.messages.map((m) => m.state), ["delivered", "delivered", "delivered"]);
  });
  await t.step("the same client's older connection is closed with 4001, everywhere", async () => {
    const { delivery, hub, broker } = setup();
    const old = connection("bob", "web");
    const other = connection("bob", "phone");
    hub.add(old);
    hub.add(other);
    const fresh = connection("bob", "web");
    await delivery.register(fresh, () => {});
    assertEquals([old.closes, other.closes, fresh.closes], [["4001 replaced"], [], []]);
    assertEquals(broker.kicks, [{
      userId: "bob",
      clientName: "web",
      code: 4001,
      reason: "replaced",
      except: { instance: "i1", conn: fresh.id },
    }]);
  });
  await t.step("a large backlog waits for the socket between chunks", async () => {
    const { delivery, store } = setup();
    const body = "x".repeat(10_000);
    for (let i = 0; i < 10; i++) {
      await delivery.send({ ...message("alice", `m${i}`, ["bob"]), text: body });
    }
    const bob = connection("bob");
    await delivery.register(bob, () => {});
    assertEquals(bob.replayed.length, 10);
    assert(bob.drains >= 2, `${bob.drains} waits for 100 kB in 32 kB chunks`);
    assertEquals((await store.unacknowledged("bob")).length, 10, "delivered is not acknowledged");
  });
  await t.step(
    "a connection that closes while waiting stops the replay; the rest stay pending",
    async () => {
      const { delivery, store } = setup();
      const body = "x".repeat(10_000);
      for (let i = 0; i < 10; i++) {
        await delivery.send({ ...message("alice", `m${i}`, ["bob"]), text: body });
      }
      const log: string[] = [];
      const bob = connection("bob", "web", log);
      bob.room = false;
      await delivery.register(bob, () => {});
      assertEquals(bob.replayed, ["m0", "m1", "m2", "m3"]);
      assertEquals(log.at(-1), "end replay");
      const page = await store.history("alice", "bob", { limit: 10 });
      const states = page.messages.reverse().map((m) => m.state);
      assertEquals(states, [...Array(4).fill("delivered"), ...Array(6).fill("pending")]);
    },
  );
  await t.step("a store that fails the replay still ends it", async () => {
    const { delivery, store } = setup();
    store.unacknowledged = () => Promise.reject(new Error("disk on fire"));
    const log: string[] = [];
    await delivery.register(connection("bob", "web", log), () => log.push("registered"));
    assertEquals(log, ["registered", "end replay"]);
  });
});

Deno.test("delivery.idle() resolves once the sends in flight have settled", async () => {
  const { delivery, store } = setup();
  const gate = Promise.withResolvers<void>();
  const accept = store.accept.bind(store);
  store.accept = async (m) => {
    await gate.promise;
    return accept(m);
  };
  await delivery.idle();
  let done = false;
  const sending = delivery.send(message("alice", "m1", ["bob"]));
  const idle = delivery.idle().then(() => done = true);
  await new Promise((resolve) => setTimeout(resolve, 0));
  assertEquals(done, false);
  gate.resolve();
  await sending;
  await idle;
  assertEquals(done, true);
});
