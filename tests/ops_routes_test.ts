import { assert, assertEquals } from "./_assert.ts";
import { startServer, TEST_API_KEY } from "./_helpers.ts";
import { Router } from "../src/http/router.ts";
import { addHealthRoutes } from "../src/http/health_routes.ts";
import { Metrics } from "../src/ops/metrics.ts";
import { createLogger } from "../src/log.ts";
import type { MessageStore } from "../src/core/store.ts";

/** Calls a route with an API key; returns the status and the parsed JSON body. */
async function api(
  url: string,
  path: string,
  options: { method?: string; body?: unknown; key?: string | null } = {},
) {
  const headers: Record<string, string> = { "content-type": "application/json" };
  const key = options.key === undefined ? TEST_API_KEY : options.key;
  if (key !== null) headers.authorization = `Bearer ${key}`;
  const response = await fetch(`${url}${path}`, {
    method: options.method ?? (options.body === undefined ? "GET" : "POST"),
    headers,
    body: options.body === undefined
      ? undefined
      : typeof options.body === "string"
      ? options.body
      : JSON.stringify(options.body),
  });
  // deno-lint-ignore no-explicit-any
  const body: any = await response.json();
  return { status: response.status, body, headers: response.headers };
}

Deno.test('POST /server/messages with to "*" reaches every online user', async (t) => {
  await using srv = await startServer();

  await t.step("nobody online: 200 with no recipient", async () => {
    const { status, body } = await api(srv.url, "/server/messages", {
      body: { type: 2001, to: "*", body: "anyone?", id: "b-0" },
    });
    assertEquals(status, 200);
    assertEquals(body.data, { id: "b-0", duplicate: false, recipients: 0 });
  });

  const alicePhone = await srv.connect("alice", "phone");
  const aliceWeb = await srv.connect("alice", "web");
  const bob = await srv.connect("bob");

  await t.step('every connection of every online user gets one frame with to "*"', async () => {
    const { status, body } = await api(srv.url, "/server/messages", {
      body: { type: 3001, to: "*", body: { title: "Maintenance", msg: "at 22:00" } },
    });
    assertEquals(status, 200);
    assertEquals(body.data.recipients, 2);
    assertEquals(body.data.duplicate, false);
    assert(typeof body.data.id === "string" && body.data.id.length > 0);
    for (const client of [alicePhone, aliceWeb, bob]) {
      const frame = await client.message();
      assertEquals(frame.id, body.data.id);
      assertEquals([frame.from, frame.to, frame.isSystem, frame.type], ["SYSTEM", "*", true, 3001]);
      assertEquals(JSON.parse(frame.body).title, "Maintenance");
    }
    assertEquals(await bob.quiet(50), []);
  });

  await t.step("the same id again is a duplicate, delivered nothing", async () => {
    const first = await api(srv.url, "/server/messages", {
      body: { type: 2001, to: "*", body: "once", id: "b-once" },
    });
    assertEquals(first.body.data.recipients, 2);
    await bob.message();
    alicePhone.drain();
    aliceWeb.drain();
    const again = await api(srv.url, "/server/messages", {
      body: { type: 2001, to: "*", body: "once", id: "b-once" },
    });
    assertEquals(again.body.data, { id: "b-once", duplicate: true, recipients: 0 });
    assertEquals(await bob.quiet(100), []);
  });

  await t.step('"*" inside a list is refused', async () => {
    const { status, body } = await api(srv.url, "/server/messages", {
      body: { type: 2001, to: "u1,*", body: "x" },
    });
    assertEquals(status, 400);
    assert(body.msg.includes('"*"'), body.msg);
  });

  await t.step("a broadcast needs a valid key too", async () => {
    const { status } = await api(srv.url, "/server/messages", {
      key: "wrong-key-0123456789",
      body: { type: 2001, to: "*", body: "x" },
    });
    assertEquals(status, 401);
  });
});

Deno.test("GET and POST /server/presence", async (t) => {
  await using srv = await startServer();
  const before = Date.now();
  await srv.connect("alice", "phone");
  await srv.connect("alice", "web");
  const bob = await srv.connect("bob");

  await t.step("GET lists each user's clients and since when", async () => {
    const { status, body } = await api(srv.url, "/server/presence?users=u1,u2,u3,nobody");
    assertEquals(status, 200);
    assertEquals(body.data.u1.online, true);
    assertEquals(
      body.data.u1.clients.map((c: { clientName: string }) => c.clientName).sort(),
      ["phone", "web"],
    );
    for (const client of body.data.u1.clients) {
      assert(client.since >= before && client.since <= Date.now());
      assertEquals(typeof client.instance, "string");
    }
    assertEquals(body.data.u2.clients.length, 1);
    assertEquals(body.data.u3, { online: false, clients: [] });
    assertEquals(body.data.nobody, { online: false, clients: [] });
  });

  await t.step("POST takes a list", async () => {
    const { status, body } = await api(srv.url, "/server/presence", {
      body: { users: ["u2", "u3"] },
    });
    assertEquals(status, 200);
    assertEquals(Object.keys(body.data), ["u2", "u3"]);
    assertEquals(body.data.u2.online, true);
  });

  await t.step("a user who disconnects is offline", async () => {
    await bob.close();
    let online = true;
    for (let i = 0; i < 50 && online; i++) {
      online = (await api(srv.url, "/server/presence?users=u2")).body.data.u2.online;
      if (online) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assertEquals(online, false);
  });

  await t.step("failures: no key 401, wrong key 401, no users 400, bad body 400", async () => {
    assertEquals((await api(srv.url, "/server/presence?users=u1", { key: null })).status, 401);
    assertEquals(
      (await api(srv.url, "/server/presence?users=u1", { key: "nope-nope-nope-nope" })).status,
      401,
    );
    const none = await api(srv.url, "/server/presence");
    assertEquals(none.status, 400);
    assert(none.body.msg.includes("users"), none.body.msg);
    assertEquals((await api(srv.url, "/server/presence", { body: { users: [] } })).status, 400);
    assertEquals((await api(srv.url, "/server/presence", { body: { users: "u1" } })).status, 400);
    assertEquals((await api(srv.url, "/server/presence", { body: "not json" })).status, 400);
    const posted = await api(srv.url, "/server/presence", { key: null, body: { users: ["u1"] } });
    assertEquals(posted.status, 401);
  });

  await t.step("too many users in one query: 400", async () => {
    const users = Array.from({ length: 501 }, (_, i) => `x${i}`).join(",");
    const { status, body } = await api(srv.url, `/server/presence?users=${users}`);
    assertEquals(status, 400);
    assert(body.msg.includes("500"), body.msg);
  });
});

Deno.test("POST /server/kick closes connections with 4003 kicked", async (t) => {
  await using srv = await startServer();
  const alicePhone = await srv.connect("alice", "phone");
  const aliceWeb = await srv.connect("alice", "web");
  const bob = await srv.connect("bob");

  await t.step("one clientName: only that connection closes", async () => {
    const { status, body } = await api(srv.url, "/server/kick", {
      body: { userId: "u1", clientName: "phone" },
    });
    assertEquals(status, 200);
    assertEquals(body.data, { userId: "u1", clientName: "phone", kicked: 1 });
    const closed = await alicePhone.closed;
    assertEquals([closed.code, closed.reason], [4003, "kicked"]);
    assertEquals((await aliceWeb.text("u2", "still here")).code, 200);
    await bob.message();
  });

  await t.step("without clientName: every connection of the user closes", async () => {
    const aliceTab = await srv.connect("alice", "tab");
    const { body } = await api(srv.url, "/server/kick", { body: { userId: "u1" } });
    assertEquals(body.data.kicked, 2);
    for (const client of [aliceWeb, aliceTab]) {
      const closed = await client.closed;
      assertEquals([closed.code, closed.reason], [4003, "kicked"]);
    }
    assertEquals((await bob.text("u3", "bob is fine")).code, 200);
  });

  await t.step("a user with no connection: 200 with kicked 0", async () => {
    const { status, body } = await api(srv.url, "/server/kick", { body: { userId: "u3" } });
    assertEquals(status, 200);
    assertEquals(body.data.kicked, 0);
  });

  await t.step("the key name is logged, never the key", () => {
    const line = srv.logs.find((l) => l.line.includes("Kick"));
    assert(line, "a kick is logged");
    assert(line.line.includes('key="default"'), line.line);
    assert(!srv.logs.some((l) => l.line.includes(TEST_API_KEY)), "the key never appears");
  });

  await t.step(
    "failures: no key 401, no userId 400, bad clientName 400, unknown field 400",
    async () => {
      assertEquals(
        (await api(srv.url, "/server/kick", { key: null, body: { userId: "u2" } })).status,
        401,
      );
      assertEquals((await api(srv.url, "/server/kick", { body: {} })).status, 400);
      const bad = await api(srv.url, "/server/kick", { body: { userId: "u2", clientName: "a b" } });
      assertEquals(bad.status, 400);
      assert(bad.body.msg.includes("clientName"), bad.body.msg);
      assertEquals(
        (await api(srv.url, "/server/kick", { body: { userId: "u2", x: 1 } })).status,
        400,
      );
      assertEquals((await api(srv.url, "/server/kick")).status, 405);
    },
  );
});

Deno.test("several named API keys work side by side; each call logs its key's name", async () => {
  await using srv = await startServer({
    server: {
      apiKeys: [
        { name: "crm", key: "crm-key-0123456789abcdef" },
        { name: "billing", key: "billing-key-0123456789ab" },
      ],
    },
  });
  for (
    const [name, key] of [["crm", "crm-key-0123456789abcdef"], [
      "billing",
      "billing-key-0123456789ab",
    ], [
      "default",
      TEST_API_KEY,
    ]]
  ) {
    const { status } = await api(srv.url, "/server/kick", { key, body: { userId: "u9" } });
    assertEquals(status, 200);
    assert(srv.logs.some((l) => l.line.includes("Kick") && l.line.includes(`key="${name}"`)), name);
  }
  assertEquals(
    (await api(srv.url, "/server/kick", {
      key: "crm-key-0123456789abcdeX",
      body: { userId: "u9" },
    }))
      .status,
    401,
  );
  const metrics = await (await fetch(`${srv.url}/metrics`)).text();
  assert(metrics.includes('im_api_requests_total{key="crm",route="/server/kick"} 1'), metrics);
  for (const key of ["crm-key-0123456789abcdef", "billing-key-0123456789ab", TEST_API_KEY]) {
    assert(!srv.logs.some((l) => l.line.includes(key)), "keys never appear in logs");
  }
});

Deno.test("GET /healthz and /readyz", async (t) => {
  await t.step("a running server is alive and ready", async () => {
    await using srv = await startServer();
    assertEquals(await (await fetch(`${srv.url}/healthz`)).json(), { data: "ok" });
    const ready = await fetch(`${srv.url}/readyz`);
    assertEquals(ready.status, 200);
    assertEquals(await ready.json(), { data: "ready" });
  });

  const routes = (store: Partial<MessageStore>, accepting: boolean) => {
    const router = new Router(createLogger({ write: () => {} }));
    addHealthRoutes(router, {
      store: store as MessageStore,
      metrics: new Metrics(),
      logger: createLogger({ write: () => {} }),
      accepting: () => accepting,
      readyTimeoutMs: 20,
    });
    return router;
  };
  const readyz = async (router: Router) => {
    const response = await router.handle(new Request("http://x/readyz"), "127.0.0.1");
    return { status: response.status, body: await response.json() };
  };

  await t.step("503 while shutting down", async () => {
    const { status, body } = await readyz(
      routes({ pendingCount: () => Promise.resolve(0) }, false),
    );
    assertEquals(status, 503);
    assertEquals(body, { code: 503, msg: "Server is shutting down" });
  });

  await t.step("503 when storage does not answer in time or fails", async () => {
    const hang = Promise.withResolvers<number>();
    const slow = await readyz(routes({ pendingCount: () => hang.promise }, true));
    assertEquals(slow.status, 503);
    assertEquals(slow.body.msg, "Storage is not reachable");
    hang.resolve(0);
    const failing = await readyz(
      routes({ pendingCount: () => Promise.reject(new Error("disk gone")) }, true),
    );
    assertEquals(failing.status, 503);
  });
});

Deno.test("CORS on the HTTP routes", async (t) => {
  await using srv = await startServer({
    server: { corsOrigins: ["https://app.example"] },
  });

  await t.step("a preflight from a listed origin gets 204 with the allowed methods", async () => {
    const response = await fetch(`${srv.url}/server/messages`, {
      method: "OPTIONS",
      headers: {
        origin: "https://app.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
      },
    });
    await response.body?.cancel();
    assertEquals(response.status, 204);
    assertEquals(response.headers.get("access-control-allow-origin"), "https://app.example");
    assertEquals(response.headers.get("access-control-allow-credentials"), "true");
    assert(response.headers.get("access-control-allow-methods")?.includes("POST"));
    assert(response.headers.get("access-control-allow-headers")?.includes("authorization"));
  });

  await t.step("a preflight from another origin gets 403", async () => {
    const response = await fetch(`${srv.url}/app/login`, {
      method: "OPTIONS",
      headers: { origin: "https://evil.example", "access-control-request-method": "POST" },
    });
    assertEquals(response.status, 403);
    assertEquals((await response.json()).code, 403);
    assertEquals(response.headers.get("access-control-allow-origin"), null);
  });

  await t.step("responses carry the header for a listed origin only", async () => {
    const listed = await fetch(`${srv.url}/healthz`, {
      headers: { origin: "https://app.example" },
    });
    await listed.body?.cancel();
    assertEquals(listed.headers.get("access-control-allow-origin"), "https://app.example");
    const error = await fetch(`${srv.url}/nope`, { headers: { origin: "https://app.example" } });
    await error.body?.cancel();
    assertEquals(error.status, 404);
    assertEquals(error.headers.get("access-control-allow-origin"), "https://app.example");
    const other = await fetch(`${srv.url}/healthz`, {
      headers: { origin: "https://evil.example" },
    });
    await other.body?.cancel();
    assertEquals(other.headers.get("access-control-allow-origin"), null);
  });

  await t.step("WebSocket connections still work with CORS on", async () => {
    const alice = await srv.connect("alice");
    assertEquals(alice.userId, "u1");
  });

  await t.step("without corsOrigins no CORS header is sent and OPTIONS is 405", async () => {
    await using plain = await startServer();
    const response = await fetch(`${plain.url}/app/login`, {
      method: "OPTIONS",
      headers: { origin: "https://app.example", "access-control-request-method": "POST" },
    });
    assertEquals(response.status, 405);
    assertEquals(response.headers.get("access-control-allow-origin"), null);
    await response.body?.cancel();
  });
});

Deno.test("server.metricsKey guards /metrics", async () => {
  await using srv = await startServer({ server: { metricsKey: "metrics-key-0123456789" } });
  const none = await fetch(`${srv.url}/metrics`);
  assertEquals(none.status, 401);
  assertEquals((await none.json()).code, 401);
  const wrong = await fetch(`${srv.url}/metrics`, { headers: { authorization: "Bearer nope" } });
  assertEquals(wrong.status, 401);
  await wrong.body?.cancel();
  const right = await fetch(`${srv.url}/metrics`, {
    headers: { authorization: "Bearer metrics-key-0123456789" },
  });
  assertEquals(right.status, 200);
  assert(right.headers.get("content-type")?.startsWith("text/plain; version=0.0.4"));
  assert((await right.text()).includes("im_connections_open"));
});
