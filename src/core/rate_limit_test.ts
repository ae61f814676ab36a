/** The token bucket of one connection, on a fake clock. */
import { assertEquals } from "../../tests/_assert.ts";
import { ConnectionRateLimit, RateLimiter, type RateVerdict } from "./rate_limit.ts";

function clock() {
  const time = { now: 0 };
  return { time, now: () => time.now };
}

Deno.test("RateLimiter passes a burst, then refills at perSecond", async (t) => {
  const { time, now } = clock();
  const limiter = new RateLimiter({ perSecond: 2, burst: 3, closeAfterSeconds: 10, now });
  await t.step("the burst passes, the next is limited", () => {
    const verdicts: RateVerdict[] = [];
    for (let i = 0; i < 4; i++) verdicts.push(limiter.take());
    assertEquals(verdicts, ["ok", "ok", "ok", "limited"]);
  });
  await t.step("half a second later one token is back", () => {
    time.now = 500;
    assertEquals([limiter.take(), limiter.take()], ["ok", "limited"]);
  });
  await t.step("the bucket never holds more than the burst", () => {
    time.now = 60_000;
    const verdicts: RateVerdict[] = [];
    for (let i = 0; i < 4; i++) verdicts.push(limiter.take());
    assertEquals(verdicts, ["ok", "ok", "ok", "limited"]);
  });
});

Deno.test("RateLimiter says close only after closeAfterSeconds of refusals without a calm second", async (t) => {
  await t.step("refusals every 0.9 s for 2 s: close", () => {
    const { time, now } = clock();
    const limiter = new RateLimiter({ perSecond: 0.01, burst: 1, closeAfterSeconds: 2, now });
    assertEquals(limiter.take(), "ok");
    const verdicts: RateVerdict[] = [];
    for (const at of [0, 900, 1800, 1999, 2000]) {
      time.now = at;
      verdicts.push(limiter.take());
    }
    assertEquals(verdicts, ["limited", "limited", "limited", "limited", "close"]);
  });
  await t.step("a calm second starts the count again", () => {
    const { time, now } = clock();
    const limiter = new RateLimiter({ perSecond: 0.01, burst: 1, closeAfterSeconds: 2, now });
    limiter.take();
    const verdicts: RateVerdict[] = [];
    for (const at of [0, 900, 1900, 2800, 3700, 3899, 3900]) {
      time.now = at;
      verdicts.push(limiter.take());
    }
    // The gap 900 → 1900 is a calm second: the run restarts at 1900 and lasts 2 s at 3900.
    assertEquals(verdicts, [
      "limited",
      "limited",
      "limited",
      "limited",
      "limited",
      "limited",
      "close",
    ]);
  });
});

Deno.test("ConnectionRateLimit lets receipts draw on a larger allowance", () => {
  const { now } = clock();
  const limit = new ConnectionRateLimit({ perSecond: 1, burst: 2, closeAfterSeconds: 10, now });
  assertEquals([limit.take(false), limit.take(false), limit.take(false)], ["ok", "ok", "limited"]);
  const receipts: RateVerdict[] = [];
  for (let i = 0; i < 21; i++) receipts.push(limit.take(true));
  assertEquals(receipts.filter((v) => v === "ok").length, 20, "ten times the burst");
  assertEquals(receipts.at(-1), "limited");
  assertEquals(limit.take(false), "limited", "other frames do not share the receipts' allowance");
});
