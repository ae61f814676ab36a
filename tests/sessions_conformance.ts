/**
 * The conformance suite every {@link SessionStore} passes: each guarantee of
 * `src/core/sessions.ts` is a step. A backend's test calls
 * {@link sessionsConformance} with a function that opens a fresh, empty store
 * whose sessionIds live `ttlSeconds`.
 *
 * @module
 */
import { assert, assertEquals } from "./_assert.ts";
import type { SessionStore } from "../src/core/sessions.ts";

/** A store opened for one step, and how to get rid of it. */
export interface OpenedSessions {
  sessions: SessionStore;
  /** Closes the store and removes what it left behind. */
  cleanup(): Promise<void>;
}

const alice = { userId: "alice", clientName: "web" };

/** Options of {@link sessionsConformance}. */
export interface SessionsTestOptions {
  /** The ttl of the expiry step (a backend with whole-second expiry needs 1). @default 1 */
  shortTtlSeconds?: number;
}

/**
 * Registers the conformance test of a session store named `name`; `open`
 * gives a fresh, empty store for each step.
 */
export function sessionsConformance(
  name: string,
  open: (ttlSeconds: number) => Promise<OpenedSessions>,
  options: SessionsTestOptions = {},
): void {
  const shortTtl = options.shortTtlSeconds ?? 1;
  Deno.test(`${name} keeps every SessionStore guarantee`, async (t) => {
    const step = (title: string, fn: (sessions: SessionStore) => Promise<void>, ttl = 60) =>
      t.step(title, async () => {
        const { sessions, cleanup } = await open(ttl);
        try {
          await fn(sessions);
        } finally {
          await cleanup();
        }
      });

    await step("issue() gives distinct ids of at least 128 random bits", async (sessions) => {
      const ids = await Promise.all(Array.from({ length: 200 }, () => sessions.issue(alice)));
      assertEquals(new Set(ids).size, ids.length);
      for (const id of ids) {
        // base64url: 6 bits a character.
        assert(/^[A-Za-z0-9_-]+$/.test(id) && id.length * 6 >= 128, id);
      }
    });

    await step("peek() tells what an id stands for, without using it up", async (sessions) => {
      const id = await sessions.issue({ userId: "alice", clientName: "phone.2" });
      const expected = { userId: "alice", clientName: "phone.2" };
      assertEquals(await sessions.peek(id), expected);
      assertEquals(await sessions.peek(id), expected);
      assertEquals(await sessions.redeem(id, "alice"), expected);
      assertEquals(await sessions.peek("unknown"), undefined);
      assertEquals(await sessions.peek(""), undefined);
    });

    await step("redeem() uses an id up, once", async (sessions) => {
      const id = await sessions.issue(alice);
      const other = await sessions.issue({ ...alice, clientName: "phone" });
      assertEquals(await sessions.redeem(id, "alice"), alice);
      assertEquals(await sessions.redeem(id, "alice"), undefined);
      assertEquals(await sessions.peek(id), undefined);
      assertEquals(await sessions.redeem("unknown", "alice"), undefined);
      assertEquals(await sessions.peek(other), { ...alice, clientName: "phone" }, "others stay");
    });

    await step("redeem() by another user fails and leaves the id usable", async (sessions) => {
      const id = await sessions.issue(alice);
      assertEquals(await sessions.redeem(id, "mallory"), undefined);
      assertEquals(await sessions.redeem(id, "Alice"), undefined);
      assertEquals(await sessions.peek(id), alice);
      assertEquals(await sessions.redeem(id, "alice"), alice);
    });

    await step("of redeems racing for one id, exactly one wins", async (sessions) => {
      const id = await sessions.issue(alice);
      const results = await Promise.all(
        Array.from({ length: 20 }, () => sessions.redeem(id, "alice")),
      );
      assertEquals(results.filter((r) => r !== undefined), [alice]);
    });

    await step("an id expires ttl after it was issued", async (sessions) => {
      const peeked = await sessions.issue(alice);
      const untouched = await sessions.issue(alice);
      assertEquals(await sessions.peek(peeked), alice);
      // Past the ttl, with a margin for an expiry kept in whole milliseconds.
      await new Promise((resolve) => setTimeout(resolve, shortTtl * 1000 + 100));
      assertEquals(await sessions.peek(peeked), undefined);
      assertEquals(await sessions.redeem(peeked, "alice"), undefined);
      assertEquals(await sessions.redeem(untouched, "alice"), undefined);
      const fresh = await sessions.issue(alice);
      assertEquals(await sessions.redeem(fresh, "alice"), alice, "new ids still work");
    }, shortTtl);
  });
}
