/**
 * The conformance suite every {@link Presence} passes. A backend's test calls
 * {@link presenceConformance} with a factory for fresh, empty instances.
 *
 * @module
 */
import { assertEquals } from "./_assert.ts";
import type { Presence, PresenceEntry } from "../src/core/presence.ts";

const entry = (
  userId: string,
  clientName: string,
  since: number,
  instance = "i1",
): PresenceEntry => ({ userId, clientName, since, instance });

const names = (entries: PresenceEntry[] | undefined) =>
  (entries ?? []).map((e) => `${e.instance}/${e.clientName}`).sort();

/** Runs the shared presence cases as steps of `t`. */
export async function presenceConformance(
  t: Deno.TestContext,
  open: () => Promise<Presence>,
): Promise<void> {
  await t.step("add and lookup: clients by user, absent users left out", async () => {
    const presence = await open();
    try {
      await presence.add(entry("u1", "phone", 1));
      await presence.add(entry("u1", "web", 2));
      await presence.add(entry("u2", "web", 3, "i2"));
      const found = await presence.lookup(["u1", "u2", "u3"]);
      assertEquals(names(found.get("u1")), ["i1/phone", "i1/web"]);
      assertEquals(found.get("u2"), [entry("u2", "web", 3, "i2")]);
      assertEquals(found.has("u3"), false);
      assertEquals((await presence.onlineUsers()).sort(), ["u1", "u2"]);
    } finally {
      await presence.close();
    }
  });

  await t.step("remove forgets a client; the last one takes the user offline", async () => {
    const presence = await open();
    try {
      await presence.add(entry("u1", "phone", 1));
      await presence.add(entry("u1", "web", 2));
      await presence.remove(entry("u1", "phone", 1));
      assertEquals(names((await presence.lookup(["u1"])).get("u1")), ["i1/web"]);
      await presence.remove(entry("u1", "web", 2));
      assertEquals((await presence.lookup(["u1"])).has("u1"), false);
      assertEquals(await presence.onlineUsers(), []);
    } finally {
      await presence.close();
    }
  });

  await t.step("a replaced client's late remove keeps the newer registration", async () => {
    const presence = await open();
    try {
      await presence.add(entry("u1", "phone", 1));
      await presence.add(entry("u1", "phone", 5)); // the same client registered again
      await presence.remove(entry("u1", "phone", 1)); // the old connection's disconnect
      assertEquals((await presence.lookup(["u1"])).get("u1"), [entry("u1", "phone", 5)]);
    } finally {
      await presence.close();
    }
  });

  await t.step("the same clientName on two instances is two entries", async () => {
    const presence = await open();
    try {
      await presence.add(entry("u1", "web", 1, "i1"));
      await presence.add(entry("u1", "web", 2, "i2"));
      assertEquals(names((await presence.lookup(["u1"])).get("u1")), ["i1/web", "i2/web"]);
    } finally {
      await presence.close();
    }
  });
}
