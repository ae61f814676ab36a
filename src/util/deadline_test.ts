/** Time limits on promises: withTimeout, settlesWithin and a shared Deadline. */
import { assert, assertEquals, assertRejects } from "../../tests/_assert.ts";
import { Deadline, settlesWithin, TimeoutError, withTimeout } from "./deadline.ts";

const never = new Promise<never>(() => {});

Deno.test("withTimeout() resolves like its work, or rejects with the message", async (t) => {
  await t.step("work that settles in time: its value, and no timer left behind", async () => {
    assertEquals(await withTimeout(Promise.resolve(7), 10_000, "too slow"), 7);
  });
  await t.step("work that fails in time: its error", async () => {
    await assertRejects(() => withTimeout(Promise.reject(new Error("boom")), 10_000, "x"), "boom");
  });
  await t.step("work that does not settle: a TimeoutError", async () => {
    const error = await assertRejects(() => withTimeout(never, 5, "Plugin timed out: echo"), "");
    assert(error instanceof TimeoutError);
    assertEquals(error.message, "Plugin timed out: echo");
  });
  await t.step("a negative limit counts as zero", async () => {
    await assertRejects(() => withTimeout(never, -5, "late"), "late");
  });
});

Deno.test("settlesWithin() tells whether work settles, either way", async () => {
  assertEquals(await settlesWithin(Promise.resolve(), 10_000), true);
  assertEquals(await settlesWithin(Promise.reject(new Error("x")), 10_000), true);
  assertEquals(await settlesWithin(never, 5), false);
});

Deno.test("Deadline shares one budget between stages", async () => {
  const past = new Deadline(1000, Date.now() - 5000);
  assertEquals(past.remaining(), 0, "never negative");
  assertEquals(await past.settles(never), false);
  const future = new Deadline(60_000);
  assert(future.remaining() > 0 && future.remaining() <= 60_000);
  assertEquals(await future.settles(Promise.resolve(), 0.5), true);
});
