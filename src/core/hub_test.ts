/**
 * The hub on its own: registered connections by user and client, delivery to
 * them, kicks, and the open connections closed at shutdown.
 */
import { assert, assertEquals } from "../../tests/_assert.ts";
import { type Connection, Hub, type OpenConnection } from "./hub.ts";
import type { MessageKey } from "./store.ts";

/** A connection that records what reaches it. */
interface FakeConnection extends Connection {
  delivered: { text: string; stored?: MessageKey }[];
  closes: { code: number; reason: string }[];
}

let nextId = 0;

function connection(userId: string, clientName: string): FakeConnection {
  const conn: FakeConnection = {
    id: ++nextId,
    userId,
    clientName,
    since: 0,
    delivered: [],
    closes: [],
    deliver(text, stored) {
      conn.delivered.push({ text, stored });
    },
    replay() {},
    endReplay() {},
    close(code, reason) {
      conn.closes.push({ code, reason });
    },
    drain: () => Promise.resolve(true),
  };
  return conn;
}

Deno.test("hub.add() keeps one connection per user and clientName", async (t) => {
  const hub = new Hub("i1");
  const web = connection("u1", "web");
  const phone = connection("u1", "phone");
  await t.step("a new client is added", () => {
    assertEquals(hub.add(web), undefined);
    assertEquals(hub.add(phone), undefined);
    assertEquals([hub.size, hub.userCount, hub.isOnline("u1")], [2, 1, true]);
    assertEquals([...hub.connectionsOf("u1")], [web, phone]);
  });
  const newer = connection("u1", "web");
  await t.step("the same client again replaces it and returns the old one", () => {
    assertEquals(hub.add(newer), web);
    assertEquals(hub.size, 2);
    assertEquals([...hub.connectionsOf("u1")].map((c) => c.id).sort(), [newer.id, phone.id].sort());
  });
  await t.step("the replaced connection's late remove() keeps the newer one", () => {
    assertEquals(hub.remove(web), false);
    assertEquals(hub.size, 2);
    assert([...hub.connectionsOf("u1")].includes(newer));
  });
  await t.step("removing the last connection takes the user offline", () => {
    assertEquals(hub.remove(newer), true);
    assertEquals(hub.remove(phone), true);
    assertEquals([hub.size, hub.userCount, hub.isOnline("u1")], [0, 0, false]);
    assertEquals([...hub.connectionsOf("u1")], []);
  });
});

Deno.test("hub.deliver() skips the sending connection", async (t) => {
  const hub = new Hub("i1");
  const web = connection("u1", "web");
  const phone = connection("u1", "phone");
  hub.add(web);
  hub.add(phone);
  await t.step("every other connection of the user gets the frame", () => {
    assertEquals(hub.deliver("u1", "f1", web.id), 1);
    assertEquals(web.delivered, []);
    assertEquals(phone.delivered, [{ text: "f1", stored: undefined }]);
  });
  await t.step("without an exception, every connection gets it, with its stored key", () => {
    const key = { sender: "u2", id: "m1" };
    assertEquals(hub.deliver("u1", "f2", undefined, key), 2);
    assertEquals(web.delivered, [{ text: "f2", stored: key }]);
    assertEquals(phone.delivered.at(-1), { text: "f2", stored: key });
  });
  await t.step("a user without connections reaches nobody", () => {
    assertEquals(hub.deliver("u9", "f3"), 0);
  });
});

Deno.test("hub.kick() closes the named connections and spares `except`", async (t) => {
  const setup = () => {
    const hub = new Hub("i1");
    const web = connection("u1", "web");
    const phone = connection("u1", "phone");
    const other = connection("u2", "web");
    for (const c of [web, phone, other]) hub.add(c);
    return { hub, web, phone, other };
  };
  await t.step("every connection of the user, no one else's", () => {
    const { hub, web, phone, other } = setup();
    hub.kick({ userId: "u1", code: 4003, reason: "kicked" });
    assertEquals(web.closes, [{ code: 4003, reason: "kicked" }]);
    assertEquals(phone.closes, [{ code: 4003, reason: "kicked" }]);
    assertEquals(other.closes, []);
  });
  await t.step("only the named client", () => {
    const { hub, web, phone } = setup();
    hub.kick({ userId: "u1", clientName: "phone", code: 4003, reason: "kicked" });
    assertEquals([web.closes.length, phone.closes.length], [0, 1]);
  });
  await t.step("the connection in `except` on this instance is spared", () => {
    const { hub, web, phone } = setup();
    hub.kick({
      userId: "u1",
      code: 4001,
      reason: "replaced",
      except: { instance: "i1", conn: web.id },
    });
    assertEquals([web.closes.length, phone.closes.length], [0, 1]);
  });
  await t.step("an `except` on another instance spares nothing here", () => {
    const { hub, web, phone } = setup();
    hub.kick({
      userId: "u1",
      code: 4001,
      reason: "replaced",
      except: { instance: "i2", conn: web.id },
    });
    assertEquals([web.closes.length, phone.closes.length], [1, 1]);
  });
});

Deno.test("hub.closeAll() resolves once every open connection has closed", async (t) => {
  await t.step("with nothing open it resolves at once", async () => {
    await new Hub("i1").closeAll(1001, "going away");
  });
  await t.step("it waits for the last close", async () => {
    const hub = new Hub("i1");
    const closes: string[] = [];
    const open: OpenConnection[] = ["a", "b", "c"].map((name) => ({
      close: (code, reason) => closes.push(`${name} ${code} ${reason}`),
    }));
    for (const conn of open) hub.opened(conn);
    assertEquals(hub.openCount, 3);
    let resolved = false;
    const all = hub.closeAll(1001, "going away").then(() => resolved = true);
    assertEquals(closes, ["a 1001 going away", "b 1001 going away", "c 1001 going away"]);
    hub.closed(open[0]);
    hub.closed(open[1]);
    hub.closed(open[1]); // a second close report changes nothing
    await new Promise((resolve) => setTimeout(resolve, 0));
    assertEquals([resolved, hub.openCount], [false, 1]);
    hub.closed(open[2]);
    await all;
    assertEquals([resolved, hub.openCount], [true, 0]);
  });
});
