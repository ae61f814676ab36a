import { assert, assertEquals } from "./_assert.ts";
import { startServer } from "./_helpers.ts";
import { type WebhookEvent, Webhooks } from "../src/ops/webhooks.ts";
import { Metrics } from "../src/ops/metrics.ts";
import { createLogger, type LogLevel } from "../src/log.ts";

const SECRET = "webhook-secret-0123456789";

/** Verifies `X-IM-Signature` the way a receiver would, independently of the server's code. */
async function verify(secret: string, request: Request, body: string): Promise<boolean> {
  const timestamp = request.headers.get("x-im-timestamp") ?? "";
  const signature = request.headers.get("x-im-signature") ?? "";
  const hex = signature.match(/^sha256=([0-9a-f]{64})$/)?.[1];
  if (!hex || !/^\d+$/.test(timestamp)) return false;
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > 300) return false;
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["verify"],
  );
  const mac = new Uint8Array(hex.match(/../g)!.map((byte) => parseInt(byte, 16)));
  return await crypto.subtle.verify(
    "HMAC",
    key,
    mac,
    new TextEncoder().encode(`${timestamp}.${body}`),
  );
}

/** A real HTTP receiver on port 0 that records batches and checks their signature. */
function receiver(answer: (n: number) => number | Promise<number> = () => 200) {
  const batches: WebhookEvent[][] = [];
  const bad: string[] = [];
  let requests = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    const n = ++requests;
    const body = await request.text();
    if (!await verify(SECRET, request, body)) bad.push(body);
    if (request.headers.get("content-type") !== "application/json") bad.push("content-type");
    const status = await answer(n);
    if (status === 200) batches.push(JSON.parse(body));
    return new Response(null, { status });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/hooks?token=not-logged`,
    batches,
    bad,
    get requests() {
      return requests;
    },
    events: () => batches.flat(),
    close: () => server.shutdown(),
  };
}

async function until(check: () => boolean, what: string, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

Deno.test("webhooks report users online, offline after the grace period, and offline messages", async (t) => {
  const hooks = receiver();
  try {
    await using srv = await startServer({
      server: {
        offlineGraceSeconds: 1,
        webhooks: [{
          url: hooks.url,
          events: ["user.online", "user.offline", "message.offline"],
          secret: SECRET,
        }],
      },
    });

    let alice = await srv.connect("alice", "phone");

    await t.step("a first register sends user.online", async () => {
      await until(() => hooks.events().length >= 1, "user.online");
      const [event] = hooks.events();
      assertEquals(event.type, "user.online");
      assertEquals(event.data, { userId: "u1", clientName: "phone" });
      assert(typeof event.id === "string" && event.time <= Date.now());
    });

    await t.step("a frame stored for an offline user sends message.offline", async () => {
      assertEquals((await alice.text("u3", "are you there?", "q-1")).code, 200);
      await until(() => hooks.events().length >= 2, "message.offline");
      const offline = hooks.events()[1];
      assertEquals(offline.type, "message.offline");
      assertEquals(offline.data.userIds, ["u3"]);
      assertEquals(offline.data.from, "u1");
      assertEquals(offline.data.messageId, "q-1");
      assertEquals(offline.data.messageType, 2001);
      assertEquals((offline.data.frame as { body: string }).body, "are you there?");
    });

    await t.step(
      "a quick reconnect sends nothing; a real disconnect sends user.offline",
      async () => {
        await alice.close();
        alice = await srv.connect("alice", "phone");
        await alice.close();
        await until(() => hooks.events().length >= 3, "user.offline", 5000);
        assertEquals(hooks.events().map((e) => e.type), [
          "user.online",
          "message.offline",
          "user.offline",
        ]);
        assertEquals(hooks.events()[2].data.userId, "u1");
        assert(typeof hooks.events()[2].data.since === "number");
      },
    );

    await t.step("a second client of an online user sends nothing", async () => {
      const bobPhone = await srv.connect("bob", "phone");
      const bobWeb = await srv.connect("bob", "web");
      await until(() => hooks.events().length >= 4, "user.online of bob");
      await bobWeb.close();
      await new Promise((resolve) => setTimeout(resolve, 1300)); // longer than the grace period
      assertEquals(hooks.events().slice(3).map((e) => [e.type, e.data.userId]), [
        ["user.online", "u2"],
      ]);
      await bobPhone.close();
    });

    await t.step("every POST was signed and is counted", async () => {
      assertEquals(hooks.bad, []);
      const metrics = await (await fetch(`${srv.url}/metrics`)).text();
      assert(
        /im_webhook_deliveries_total\{webhook="http:\/\/127\.0\.0\.1:\d+\/hooks",result="ok"\} [1-9]/
          .test(metrics),
        metrics,
      );
      assert(!srv.logs.some((l) => l.line.includes("not-logged")), "the query is never logged");
      assert(!srv.logs.some((l) => l.line.includes(SECRET)), "the secret is never logged");
    });
  } finally {
    await hooks.close();
  }
});

function quietLogger(lines: { level: LogLevel; line: string }[] = []) {
  return createLogger({ level: "debug", write: (level, line) => lines.push({ level, line }) });
}

Deno.test("a failed POST is retried with backoff, then the batch arrives", async () => {
  const hooks = receiver((n) => n === 1 ? 500 : 200);
  const metrics = new Metrics();
  const webhooks = new Webhooks([{ url: hooks.url, events: ["user.online"], secret: SECRET }], {
    logger: quietLogger(),
    metrics,
    backoffMs: 50,
  });
  try {
    webhooks.emit("user.online", { userId: "u1" });
    const label = hooks.url.replace(/\?.*/, "");
    await until(
      () => metrics.webhookEvents.get({ webhook: label, outcome: "sent" }) === 1,
      "the retried batch",
    );
    assertEquals(hooks.requests, 2);
    assertEquals(hooks.events()[0].data, { userId: "u1" });
    assertEquals(metrics.webhookDeliveries.get({ webhook: label, result: "error" }), 1);
    assertEquals(metrics.webhookDeliveries.get({ webhook: label, result: "ok" }), 1);
    assertEquals(metrics.webhookEvents.get({ webhook: label, outcome: "sent" }), 1);
  } finally {
    await webhooks.close();
    await hooks.close();
  }
});

Deno.test("events go in batches; a full queue drops the oldest, counted and logged once", async () => {
  const release = Promise.withResolvers<void>();
  const hooks = receiver(async (n) => {
    if (n === 1) await release.promise;
    return 200;
  });
  const metrics = new Metrics();
  const lines: { level: LogLevel; line: string }[] = [];
  const webhooks = new Webhooks([{ url: hooks.url, events: ["user.online"], secret: SECRET }], {
    logger: quietLogger(lines),
    metrics,
    maxQueue: 3,
  });
  try {
    webhooks.emit("user.online", { n: 0 });
    await until(() => hooks.requests === 1, "the first POST to be in flight");
    for (let n = 1; n <= 10; n++) webhooks.emit("user.online", { n }); // returns at once
    assertEquals(webhooks.queued, 3);
    release.resolve();
    await until(() => hooks.events().length === 4, "the rest");
    assertEquals(hooks.batches.map((batch) => batch.map((e) => e.data.n)), [[0], [8, 9, 10]]);
    const label = hooks.url.replace(/\?.*/, "");
    assertEquals(metrics.webhookEvents.get({ webhook: label, outcome: "dropped" }), 7);
    assertEquals(lines.filter((l) => l.line.includes("dropped the oldest")).length, 1);
  } finally {
    release.resolve();
    await webhooks.close();
    await hooks.close();
  }
});

Deno.test("a receiver that stays down: the batch is given up after maxAttempts, counted and logged", async () => {
  const down = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response());
  const url = `http://127.0.0.1:${down.addr.port}/gone`;
  await down.shutdown();
  const metrics = new Metrics();
  const lines: { level: LogLevel; line: string }[] = [];
  const webhooks = new Webhooks([{ url, events: ["user.offline"], secret: SECRET }], {
    logger: quietLogger(lines),
    metrics,
    maxAttempts: 3,
    backoffMs: 10,
  });
  try {
    webhooks.emit("user.offline", { userId: "u1" });
    webhooks.emit("user.online", { userId: "u1" }); // not subscribed: ignored
    await until(
      () => metrics.webhookEvents.get({ webhook: url, outcome: "failed" }) === 1,
      "the give-up",
    );
    assertEquals(metrics.webhookDeliveries.get({ webhook: url, result: "error" }), 3);
    assert(lines.some((l) => l.level === "error" && l.line.includes("lost after 3 attempts")));
  } finally {
    await webhooks.close();
  }
});

Deno.test("close() interrupts a backoff wait and makes one last attempt", async () => {
  const hooks = receiver((n) => n === 1 ? 503 : 200);
  const webhooks = new Webhooks([{ url: hooks.url, events: ["user.online"], secret: SECRET }], {
    logger: quietLogger(),
    backoffMs: 60_000,
  });
  webhooks.emit("user.online", { userId: "u1" });
  await until(() => hooks.requests === 1, "the first attempt");
  await webhooks.close(); // would otherwise wait a minute
  assertEquals(hooks.events().map((e) => e.data.userId), ["u1"]);
  await hooks.close();
});
