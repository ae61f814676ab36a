import { assertEquals } from "../../tests/_assert.ts";
import { LoginGuard } from "./login_guard.ts";

Deno.test("LoginGuard counts failures per address and per username in fixed windows", async (t) => {
  let now = 1_000_000;
  const guard = new LoginGuard({
    maxFailuresPerIp: 3,
    maxFailuresPerUsername: 2,
    windowSeconds: 60,
    now: () => now,
  });
  await t.step("the username's budget is spent first; Retry-After is the window's rest", () => {
    guard.failed("1.1.1.1", "alice");
    assertEquals(guard.check("1.1.1.1", "alice"), undefined);
    now += 10_000;
    guard.failed("1.1.1.1", "alice");
    assertEquals(guard.check("2.2.2.2", "alice"), {
      status: 429,
      msg: "Too many failed logins: try again later",
      retryAfter: 50,
    });
    assertEquals(guard.check("1.1.1.1", "bob"), undefined, "bob from the same address is fine");
  });
  await t.step("the address's budget stops every name from it", () => {
    guard.failed("1.1.1.1", "bob");
    assertEquals(guard.check("1.1.1.1", "carol")?.status, 429);
    assertEquals(guard.check("3.3.3.3", "carol"), undefined);
  });
  await t.step("a correct password clears the username's count, not the address's", () => {
    guard.succeeded("alice");
    assertEquals(guard.check("2.2.2.2", "alice"), undefined);
    assertEquals(guard.check("1.1.1.1", "alice")?.status, 429);
  });
  await t.step("a window that ended starts again", () => {
    now += 60_000;
    assertEquals(guard.check("1.1.1.1", "carol"), undefined);
  });
});

Deno.test("LoginGuard tracks at most maxTracked addresses and usernames", () => {
  const guard = new LoginGuard({ maxFailuresPerUsername: 1, maxTracked: 100 });
  for (let i = 0; i < 1000; i++) guard.failed(`10.0.${i >> 8}.${i & 255}`, `user${i}`);
  assertEquals(guard.tracked, { ips: 100, usernames: 100 });
  assertEquals(guard.check("9.9.9.9", "user999")?.status, 429, "the newest are kept");
  assertEquals(guard.check("9.9.9.9", "user0"), undefined, "the oldest went first");
});

Deno.test("LoginGuard runs at most maxConcurrentHashes checks, in arrival order; 503 past the queue", async () => {
  const guard = new LoginGuard({ maxConcurrentHashes: 1, maxQueuedLogins: 2 });
  const order: string[] = [];
  const gates = new Map<string, PromiseWithResolvers<void>>();
  const run = (name: string) => {
    const gate = Promise.withResolvers<void>();
    gates.set(name, gate);
    return guard.hashing(async () => {
      order.push(`start ${name}`);
      await gate.promise;
      order.push(`end ${name}`);
    });
  };
  const a = run("a");
  const b = run("b");
  const c = run("c");
  assertEquals(guard.check("1.1.1.1", "x"), {
    status: 503,
    msg: "Too many logins in progress: try again later",
    retryAfter: 1,
  });
  await Promise.resolve();
  gates.get("a")!.resolve();
  await a;
  gates.get("b")!.resolve();
  await b;
  gates.get("c")!.resolve();
  await c;
  assertEquals(order, ["start a", "end a", "start b", "end b", "start c", "end c"]);
  assertEquals(guard.check("1.1.1.1", "x"), undefined, "the queue is empty again");
});
