/**
 * The one conformance suite every {@link MessageStore} passes: each guarantee
 * of `src/core/store.ts` is a step. A backend's test file calls
 * {@link storeConformance} with a function that opens a fresh, empty store.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { MessageStore, NewMessage, StoredMessage } from "../src/core/store.ts";
import type { Logger, LogLevel } from "../src/log.ts";

/** Options a conformance step opens its store with. */
export interface StoreTestOptions {
  /** Messages kept per recipient. */
  maxPerUser: number;
  /** Days a message is kept. */
  retentionDays: number;
  /** Receives the store's log lines. */
  logger: Logger;
  /** Length of pending copies a sender may have; no limit when absent. */
  maxPendingBytesPerSender?: number;
}

/** A store opened for one step, and how to get rid of it. */
export interface OpenedStore {
  store: MessageStore;
  /** Closes the store if still open and removes whatever it left behind. */
  cleanup(): Promise<void>;
}

/** A logged line as captured by {@link captureLogger}. */
export interface LogLine {
  level: LogLevel;
  msg: string;
  fields?: Record<string, unknown>;
}

/** A logger that keeps its lines in `lines`. */
export function captureLogger(lines: LogLine[] = []): Logger & { lines: LogLine[] } {
  const at = (level: LogLevel) => (msg: string, fields?: Record<string, unknown>) => {
    lines.push({ level, msg, fields });
  };
  const logger: Logger & { lines: LogLine[] } = {
    lines,
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    child: () => logger,
  };
  return logger;
}

const DAY = 86_400_000;

/** A message from `sender` with id `id` to `recipients`. */
export function message(
  sender: string,
  id: string,
  recipients: string[],
  acceptedAt = Date.now(),
): NewMessage {
  return {
    sender,
    id,
    type: 2001,
    recipients,
    text: JSON.stringify({ type: 2001, id, from: sender, to: recipients }),
    acceptedAt,
  };
}

/** Every unacknowledged message to `user`, read page by page. */
export async function allUnacknowledged(
  store: MessageStore,
  user: string,
  limit = 3,
): Promise<StoredMessage[]> {
  const all: StoredMessage[] = [];
  let after: string | undefined;
  while (true) {
    const page = await store.unacknowledged(user, { after, limit });
    assert.ok(page.messages.length <= limit, "a page holds at most limit messages");
    all.push(...page.messages);
    after = page.cursor ?? after;
    if (!page.more) return all;
  }
}

const keys = (list: { sender: string; id: string }[]) => list.map((m) => `${m.sender}/${m.id}`);

/**
 * Registers the conformance test of a store named `name`; `open` gives a fresh,
 * empty store for each step.
 */
export function storeConformance(
  name: string,
  open: (options: StoreTestOptions) => Promise<OpenedStore>,
  scope: {
    /**
     * `count` recipients whose copies count against one quota of a sender
     * (on a Redis Cluster the quota is per user group). @default x0, x1, …
     */
    quotaRecipients?: (count: number) => string[];
  } = {},
): void {
  Deno.test(`${name} keeps every MessageStore guarantee`, async (t) => {
    /** Runs `fn` as a step against a fresh store. */
    const step = (
      title: string,
      fn: (store: MessageStore, log: LogLine[]) => Promise<void>,
      options: Partial<Omit<StoreTestOptions, "logger">> = {},
    ) =>
      t.step(title, async () => {
        const logger = captureLogger();
        const { store, cleanup } = await open({
          maxPerUser: options.maxPerUser ?? 10000,
          retentionDays: options.retentionDays ?? 30,
          maxPendingBytesPerSender: options.maxPendingBytesPerSender,
          logger,
        });
        try {
          await fn(store, logger.lines);
        } finally {
          await cleanup();
        }
      });

    await step("accept() stores a message and answers a repeat as duplicate", async (store) => {
      const first = message("alice", "m1", ["bob"]);
      assert.deepEqual(await store.accept(first), { duplicate: false });
      const repeat = { ...first, text: "changed", recipients: ["bob", "carol"] };
      assert.deepEqual(await store.accept(repeat), { duplicate: true });
      assert.deepEqual(await store.accept(message("carol", "m1", ["bob"])), { duplicate: false });
      const { sender, id, type, text, acceptedAt } = first;
      const [stored] = await allUnacknowledged(store, "bob");
      assert.deepEqual({ ...stored }, { sender, id, type, text, acceptedAt });
      assert.deepEqual(await allUnacknowledged(store, "carol"), []);
      assert.equal(await store.pendingCount(), 2);
    });

    await step("accept() finds duplicates within one batch", async (store) => {
      const m = message("alice", "m1", ["bob"]);
      const results = await Promise.all([
        store.accept(m),
        store.accept(m),
        store.accept(message("alice", "m2", ["bob"])),
        store.accept({ ...m, text: "other" }),
      ]);
      assert.deepEqual(results.map((r) => r.duplicate), [false, true, false, true]);
      assert.deepEqual(keys(await allUnacknowledged(store, "bob")), ["alice/m1", "alice/m2"]);
      assert.equal((await allUnacknowledged(store, "bob"))[0].text, m.text);
    });

    await step(
      "accept() still answers duplicate once the message is acknowledged",
      async (store) => {
        const m = message("alice", "m1", ["bob"]);
        await store.accept(m);
        assert.equal(await store.acknowledge("bob", m), true);
        assert.deepEqual(await store.accept(m), { duplicate: true });
        assert.deepEqual(await allUnacknowledged(store, "bob"), []);
        assert.equal(await store.pendingCount(), 0);
      },
    );

    await step("concurrent accepts resolve in call order", async (store) => {
      const order: number[] = [];
      // Calls 600..999 repeat calls 0..399 (same sender, same id): duplicates.
      const calls = Array.from(
        { length: 1000 },
        (_, i) =>
          store.accept(message(`s${i % 3}`, `m${i % 600}`, [`u${i % 4}`]))
            .then((result) => {
              order.push(i);
              return result.duplicate;
            }),
      );
      const duplicates = await Promise.all(calls);
      assert.deepEqual(order, Array.from({ length: 1000 }, (_, i) => i));
      assert.deepEqual(duplicates, Array.from({ length: 1000 }, (_, i) => i >= 600));
      assert.equal(await store.pendingCount(), 600);
    });

    await step(
      "unacknowledged() lists messages in acceptance order across senders",
      async (store) => {
        const accepted: string[] = [];
        const calls: Promise<unknown>[] = [];
        for (let i = 0; i < 300; i++) {
          const sender = `sender${(i * 7) % 13}`;
          const recipients = i % 5 === 0 ? ["carol", "dave"] : ["dave"];
          calls.push(store.accept(message(sender, `m${i}`, recipients)));
          accepted.push(`${sender}/m${i}`);
          if (i % 50 === 0) await Promise.all(calls);
        }
        await Promise.all(calls);
        const all = await allUnacknowledged(store, "dave");
        assert.deepEqual(keys(all), accepted);
        assert.deepEqual(
          keys(await allUnacknowledged(store, "carol")),
          accepted.filter((_, i) => i % 5 === 0),
        );
        // Delivered messages are still unacknowledged; acknowledged ones leave the list.
        await store.markDelivered("dave", all.slice(0, 100));
        for (const m of all.filter((_, i) => i % 3 === 0)) {
          assert.equal(await store.acknowledge("dave", m), true);
        }
        assert.deepEqual(
          keys(await allUnacknowledged(store, "dave")),
          accepted.filter((_, i) => i % 3 !== 0),
        );
        assert.deepEqual(await allUnacknowledged(store, "nobody"), []);
      },
    );

    await step(
      "unacknowledged() reads pages of at most limit; a later accept comes after the cursor",
      async (store) => {
        for (let i = 0; i < 5; i++) await store.accept(message("alice", `m${i}`, ["bob"]));
        await store.acknowledge("bob", { sender: "alice", id: "m1" });
        const first = await store.unacknowledged("bob", { limit: 2 });
        assert.deepEqual(keys(first.messages), ["alice/m0", "alice/m2"]);
        assert.equal(first.more, true);
        assert.ok(first.cursor !== undefined);
        const second = await store.unacknowledged("bob", { after: first.cursor, limit: 2 });
        assert.deepEqual(keys(second.messages), ["alice/m3", "alice/m4"]);
        assert.equal(second.more, false);
        await store.accept(message("carol", "late", ["bob"]));
        const third = await store.unacknowledged("bob", { after: second.cursor, limit: 2 });
        assert.deepEqual(keys(third.messages), ["carol/late"]);
        assert.equal(third.more, false);
        const empty = await store.unacknowledged("bob", { after: third.cursor, limit: 2 });
        assert.deepEqual(empty, { messages: [], cursor: undefined, more: false });
        assert.deepEqual(await store.unacknowledged("nobody", { limit: 2 }), {
          messages: [],
          cursor: undefined,
          more: false,
        });
      },
    );

    await step(
      "accept() refuses a sender's message past maxPendingBytesPerSender until copies are delivered",
      async (store) => {
        // Every text is 100 characters: 4 pending copies fit, not 5.
        const [x0, x1, x2, x3, x4, x5, x6] = scope.quotaRecipients?.(7) ??
          Array.from({ length: 7 }, (_, i) => `x${i}`);
        const frame = (id: string, to: string[]) => ({
          ...message("mallory", id, to),
          text: "x".repeat(100),
        });
        assert.deepEqual(await store.accept(frame("m0", [x0, x1])), { duplicate: false });
        assert.deepEqual(await store.accept(frame("m1", [x2, x3])), { duplicate: false });
        const refused = await store.accept(frame("m2", [x4]));
        assert.deepEqual(refused, { duplicate: false, overQuota: true });
        assert.deepEqual(await allUnacknowledged(store, x4), [], "nothing was stored");
        assert.equal(await store.pendingCount(), 4);
        // Other senders and SYSTEM are not held to mallory's quota.
        assert.deepEqual(await store.accept(message("alice", "a0", [x4])), { duplicate: false });
        const system = message("SYSTEM", "s0", [x0, x1, x2, x3, x4, x5]);
        assert.deepEqual(await store.accept(system), { duplicate: false });
        // A delivered, acknowledged or dropped copy stops counting.
        await store.markDelivered(x0, [{ sender: "mallory", id: "m0" }]);
        await store.pendingCount(); // a store may write marks late; a read writes them
        assert.deepEqual(await store.accept(frame("m2", [x4])), { duplicate: false });
        assert.equal((await store.accept(frame("m3", [x5]))).overQuota, true);
        assert.equal(await store.acknowledge(x1, { sender: "mallory", id: "m0" }), true);
        assert.deepEqual(await store.accept(frame("m3", [x5])), { duplicate: false });
        assert.equal((await store.accept(frame("m4", [x6]))).overQuota, true);
      },
      { maxPendingBytesPerSender: 450 },
    );

    await step("the per-user cap holds when accept resolves", async (store, log) => {
      const now = Date.now();
      for (let i = 0; i < 7; i++) await store.accept(message("alice", `m${i}`, ["bob"], now));
      assert.deepEqual(keys(await allUnacknowledged(store, "bob")), [
        "alice/m4",
        "alice/m5",
        "alice/m6",
      ]);
      assert.equal(await store.pendingCount(), 3);
      assert.ok(log.some((line) => line.level === "warn"), "the drops are logged");
      assert.equal(await store.sweep(now), 0, "nothing is left for the sweep");
    }, { maxPerUser: 3 });

    await step("reads see the writes made before them", async (store) => {
      const m = message("alice", "m1", ["bob"]);
      const accepted = store.accept(m);
      assert.deepEqual(keys(await allUnacknowledged(store, "bob")), ["alice/m1"]);
      assert.equal(await store.pendingCount(), 1);
      const acked = store.acknowledge("bob", m);
      assert.deepEqual(await allUnacknowledged(store, "bob"), []);
      const page = await store.history("bob", "alice", { limit: 10 });
      assert.equal(page.messages[0].state, "acknowledged");
      assert.deepEqual(await accepted, { duplicate: false });
      assert.equal(await acked, true);
    });

    await step("acknowledge() right after accept() sees the message", async (store) => {
      const m = message("alice", "m1", ["bob"]);
      const [accepted, acked] = await Promise.all([
        store.accept(m),
        store.acknowledge("bob", m),
      ]);
      assert.deepEqual(accepted, { duplicate: false });
      assert.equal(acked, true);
      assert.equal(await store.pendingCount(), 0);
    });

    await step(
      "acknowledge() answers false unless the message is addressed to the user",
      async (store) => {
        const m = message("alice", "m1", ["bob", "carol"]);
        await store.accept(m);
        assert.equal(await store.acknowledge("bob", { sender: "alice", id: "nope" }), false);
        assert.equal(await store.acknowledge("bob", { sender: "mallory", id: "m1" }), false);
        assert.equal(await store.acknowledge("alice", m), false, "the sender is no recipient");
        assert.equal(await store.acknowledge("dave", m), false);
        assert.equal(await store.pendingCount(), 2);
        assert.equal(await store.acknowledge("bob", m), true);
        assert.equal(await store.acknowledge("bob", m), true, "idempotent");
        assert.equal(await store.pendingCount(), 1);
        assert.deepEqual(keys(await allUnacknowledged(store, "carol")), ["alice/m1"]);
        assert.deepEqual(await allUnacknowledged(store, "bob"), []);
      },
    );

    await step("markDelivered() moves pending to delivered, never back", async (store) => {
      const [m1, m2, m3] = ["m1", "m2", "m3"].map((id) => message("alice", id, ["bob"]));
      for (const m of [m1, m2, m3]) await store.accept(m);
      await store.acknowledge("bob", m3);
      await store.markDelivered("bob", [m1, m3, { sender: "alice", id: "unknown" }]);
      await store.markDelivered("carol", [m2]);
      const states = async () =>
        Object.fromEntries(
          (await store.history("bob", "alice", { limit: 10 })).messages.map((m) => [m.id, m.state]),
        );
      assert.deepEqual(await states(), { m1: "delivered", m2: "pending", m3: "acknowledged" });
      await store.markDelivered("bob", [m1, m2]);
      assert.deepEqual(await states(), { m1: "delivered", m2: "delivered", m3: "acknowledged" });
      assert.equal(await store.pendingCount(), 2, "delivered is still unacknowledged");
      assert.deepEqual(keys(await allUnacknowledged(store, "bob")), ["alice/m1", "alice/m2"]);
    });

    await step("markDeliveredTo() marks one message for many users at once", async (store) => {
      const users = Array.from({ length: 40 }, (_, i) => `user${i}`);
      const wide = message("alice", "wide", users);
      const other = message("alice", "other", ["user1"]);
      await store.accept(wide);
      await store.accept(other);
      await store.acknowledge("user3", wide);
      // Out of order, with a gap, an acknowledged user and users it is not addressed to.
      await store.markDeliveredTo(wide, ["user5", "user1", "user2", "user3", "nobody", "user39"]);
      await store.markDeliveredTo({ sender: "alice", id: "unknown" }, ["user1"]);
      await store.markDeliveredTo(other, []);
      const stateFor = async (user: string, id = "wide") =>
        (await store.history(user, "alice", { limit: 10 })).messages.find((m) => m.id === id)
          ?.state;
      assert.equal(await stateFor("user0"), "pending");
      assert.equal(await stateFor("user1"), "delivered");
      assert.equal(await stateFor("user2"), "delivered");
      assert.equal(await stateFor("user3"), "acknowledged", "never back from acknowledged");
      assert.equal(await stateFor("user4"), "pending");
      assert.equal(await stateFor("user5"), "delivered");
      assert.equal(await stateFor("user39"), "delivered");
      assert.equal(await stateFor("user1", "other"), "pending", "only the message named");
      assert.equal(await store.pendingCount(), 40, "delivered is still unacknowledged");
      // The whole recipient list, in its order: the path of a live delivery.
      await store.markDeliveredTo(wide, users);
      for (const user of ["user0", "user4", "user20"]) {
        assert.equal(await stateFor(user), "delivered", user);
      }
      assert.equal(await stateFor("user3"), "acknowledged");
      assert.equal((await allUnacknowledged(store, "user20")).length, 1);
    });

    await step("markDeliveredTo() with a single user", async (store) => {
      const m = message("alice", "m1", ["bob"]);
      await store.accept(m);
      await store.markDeliveredTo(m, ["bob"]);
      const page = await store.history("bob", "alice", { limit: 10 });
      assert.equal(page.messages[0].state, "delivered");
    });

    await step("each of many recipients has a state of its own", async (store) => {
      const users = Array.from({ length: 40 }, (_, i) => `user${i}`);
      const m = message("alice", "wide", users);
      await store.accept(m);
      await store.markDelivered("user0", [m]);
      await store.markDelivered("user25", [m]);
      assert.equal(await store.acknowledge("user25", m), true);
      assert.equal(await store.acknowledge("user39", m), true);
      assert.equal(await store.acknowledge("nobody", m), false);
      const stateFor = async (user: string) =>
        (await store.history(user, "alice", { limit: 1 })).messages[0]?.state;
      assert.equal(await stateFor("user0"), "delivered");
      assert.equal(await stateFor("user1"), "pending");
      assert.equal(await stateFor("user25"), "acknowledged");
      assert.equal(await stateFor("user39"), "acknowledged");
      assert.equal(await store.pendingCount(), 38);
      assert.deepEqual(await allUnacknowledged(store, "user25"), []);
      assert.deepEqual(keys(await allUnacknowledged(store, "user24")), ["alice/wide"]);
      assert.deepEqual(
        (await store.history("alice", "user7", { limit: 1 })).messages[0].recipients,
        users,
      );
    });

    await step("history() pages newest first between two users, with states", async (store) => {
      await store.accept(message("alice", "a1", ["bob"]));
      await store.accept(message("bob", "b1", ["alice"]));
      await store.accept(message("alice", "c1", ["carol"]));
      await store.accept(message("carol", "c2", ["bob"]));
      await store.accept(message("alice", "g1", ["bob", "carol"]));
      await store.accept(message("bob", "b2", ["alice", "carol"]));
      await store.accept(message("alice", "a2", ["bob"]));
      await store.markDelivered("bob", [{ sender: "alice", id: "a1" }]);
      await store.acknowledge("bob", { sender: "alice", id: "a2" });
      await store.acknowledge("alice", { sender: "bob", id: "b1" });

      const ids: string[] = [];
      const states: string[] = [];
      let before: string | undefined;
      let pages = 0;
      do {
        const page = await store.history("alice", "bob", { limit: 2, before });
        assert.ok(page.messages.length <= 2);
        for (const m of page.messages) {
          ids.push(m.id);
          states.push(m.state);
        }
        before = page.next;
        pages++;
      } while (before !== undefined && pages < 10);
      assert.deepEqual(ids, ["a2", "b2", "g1", "b1", "a1"]);
      assert.deepEqual(states, ["acknowledged", "pending", "pending", "acknowledged", "delivered"]);
      assert.equal(pages, 3);

      const fromBob = await store.history("bob", "alice", { limit: 10 });
      assert.deepEqual(fromBob.messages.map((m) => m.id), ["a2", "b2", "g1", "b1", "a1"]);
      assert.equal(fromBob.next, undefined);
      const group = fromBob.messages.find((m) => m.id === "g1")!;
      assert.deepEqual(group.recipients, ["bob", "carol"]);
      assert.equal(group.sender, "alice");
      assert.equal(group.type, 2001);
      assert.equal(group.text, message("alice", "g1", ["bob", "carol"]).text);

      const exact = await store.history("alice", "bob", { limit: 5 });
      assert.equal(exact.messages.length, 5);
      assert.equal(exact.next, undefined, "no cursor when nothing older is left");
      assert.deepEqual(
        (await store.history("carol", "alice", { limit: 10 })).messages.map((m) => m.id),
        ["g1", "c1"],
      );
      assert.deepEqual((await store.history("alice", "dave", { limit: 10 })).messages, []);
    });

    await step("pendingCount() counts unacknowledged (recipient, message) pairs", async (store) => {
      assert.equal(await store.pendingCount(), 0);
      await store.accept(message("alice", "m1", ["bob", "carol", "dave"]));
      await store.accept(message("alice", "m2", ["bob"]));
      await store.accept(message("alice", "m2", ["bob"]));
      assert.equal(await store.pendingCount(), 4);
      await store.markDelivered("bob", [{ sender: "alice", id: "m1" }]);
      assert.equal(await store.pendingCount(), 4);
      await store.acknowledge("carol", { sender: "alice", id: "m1" });
      await store.acknowledge("carol", { sender: "alice", id: "m1" });
      assert.equal(await store.pendingCount(), 3);
    });

    await step("the per-user cap drops the oldest messages and logs it", async (store, log) => {
      const now = Date.now();
      for (let i = 0; i < 8; i++) {
        await store.accept(message("alice", `m${i}`, i === 1 ? ["bob", "carol"] : ["bob"], now));
      }
      await store.acknowledge("bob", { sender: "alice", id: "m0" });
      await store.accept(message("alice", "x", ["carol"], now));
      await store.sweep(now); // stores that cap lazily do it here
      const expected = ["m3", "m4", "m5", "m6", "m7"].map((id) => `alice/${id}`);
      assert.deepEqual(keys(await allUnacknowledged(store, "bob")), expected);
      assert.deepEqual(keys(await allUnacknowledged(store, "carol")), ["alice/m1", "alice/x"]);
      assert.equal(await store.pendingCount(), 7);
      const history = await store.history("bob", "alice", { limit: 100 });
      assert.deepEqual(history.messages.map((m) => m.id), ["m7", "m6", "m5", "m4", "m3"]);
      assert.ok(
        log.some((line) => line.level === "warn" && JSON.stringify(line.fields).includes("bob")),
        "a warn line names the user whose unacknowledged messages were dropped",
      );
      assert.equal(
        await store.acknowledge("bob", { sender: "alice", id: "m1" }),
        false,
        "bob's copy of m1 was dropped, though carol still holds it",
      );
      // m1 is still kept for carol, so it is still a duplicate; m0 and m2 are gone.
      assert.deepEqual(await store.accept(message("alice", "m1", ["bob"])), { duplicate: true });
      assert.deepEqual(await store.accept(message("alice", "m2", ["bob"])), { duplicate: false });
    }, { maxPerUser: 5 });

    await step("sweep() drops messages older than the retention period", async (store, log) => {
      const now = Date.now();
      for (let i = 0; i < 3; i++) {
        await store.accept(message("alice", `old${i}`, ["bob", "carol"], now - 3 * DAY + i));
      }
      for (let i = 0; i < 2; i++) {
        await store.accept(message("alice", `new${i}`, ["bob"], now - DAY + i));
      }
      await store.acknowledge("bob", { sender: "alice", id: "old0" });
      assert.equal(await store.pendingCount(), 7);
      assert.equal(await store.sweep(now), 3);
      assert.deepEqual(keys(await allUnacknowledged(store, "bob")), ["alice/new0", "alice/new1"]);
      assert.deepEqual(await allUnacknowledged(store, "carol"), []);
      assert.equal(await store.pendingCount(), 2);
      assert.equal(await store.acknowledge("bob", { sender: "alice", id: "old1" }), false);
      assert.equal((await store.history("bob", "alice", { limit: 10 })).messages.length, 2);
      assert.ok(
        log.some((line) => line.level === "warn"),
        "dropping unacknowledged messages is logged as a warning",
      );
      assert.equal(await store.sweep(now), 0);
      assert.deepEqual(await store.accept(message("alice", "old1", ["bob"])), { duplicate: false });
    }, { retentionDays: 2 });
  });
}
