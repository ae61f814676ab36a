/** The front door's middleware, each on a real router: CORS, the shutdown gate, API keys. */
import { assertEquals } from "../../tests/_assert.ts";
import { Router } from "./router.ts";
import { json } from "./errors.ts";
import { Cors } from "./cors.ts";
import { apiKeys, cors, shutdownGate } from "./middleware.ts";
import { captureLogger } from "../../tests/store_conformance.ts";

const ok = () => json({ ok: true });

function request(path: string, init: RequestInit = {}): Request {
  return new Request(`http://127.0.0.1${path}`, init);
}

Deno.test("shutdownGate() answers 503 once shutdown began, except on its open paths", async () => {
  let accepting = true;
  const router = new Router(captureLogger())
    .use("/", shutdownGate(() => accepting, ["/healthz"]))
    .add("GET", "/healthz", ok)
    .add("POST", "/server/messages", ok);
  assertEquals(
    (await router.handle(request("/server/messages", { method: "POST" }), "")).status,
    200,
  );
  accepting = false;
  const refused = await router.handle(request("/server/messages", { method: "POST" }), "");
  assertEquals([refused.status, await refused.json()], [503, {
    code: 503,
    msg: "Server is shutting down",
  }]);
  assertEquals((await router.handle(request("/healthz"), "")).status, 200);
  assertEquals((await router.handle(request("/healthz/x"), "")).status, 503, "exact paths only");
});

Deno.test("apiKeys() lets through a known key, names it and counts the request", async (t) => {
  const counted: string[] = [];
  const router = new Router(captureLogger())
    .use(
      "/server/",
      apiKeys(
        [{ name: "crm", key: "k-crm" }, { name: "ops", key: "k-ops" }],
        (key, path) => counted.push(`${key} ${path}`),
      ),
    )
    .add("GET", "/server/who", (_r, context) => json({ key: context.apiKey }))
    .add("GET", "/public", ok);
  const get = (path: string, authorization?: string) =>
    router.handle(request(path, { headers: authorization ? { authorization } : {} }), "");

  await t.step("a known key", async () => {
    const response = await get("/server/who", "Bearer k-ops");
    assertEquals([response.status, await response.json()], [200, { key: "ops" }]);
    assertEquals(counted, ["ops /server/who"]);
  });
  await t.step("no key: 401, not counted", async () => {
    const response = await get("/server/who");
    assertEquals([response.status, await response.json()], [401, {
      code: 401,
      msg: "Missing API key (Authorization: Bearer …)",
    }]);
    assertEquals(counted.length, 1);
  });
  await t.step("a wrong key, or a key not sent as a bearer token: 401", async () => {
    for (const header of ["Bearer k-crm2", "Bearer k-cr", "k-crm", "Basic k-crm"]) {
      assertEquals((await get("/server/who", header)).status, 401, header);
    }
    assertEquals(counted.length, 1);
  });
  await t.step("paths outside its prefix need no key", async () => {
    assertEquals((await get("/public")).status, 200);
  });
});

Deno.test("cors() answers preflights and decorates answers for listed origins", async (t) => {
  const router = new Router(captureLogger())
    .use("/", cors(new Cors(["https://app.example"])))
    .add("GET", "/api/x", ok);
  await t.step("a preflight from a listed origin: 204 with the allowed methods", async () => {
    const response = await router.handle(
      request("/api/x", {
        method: "OPTIONS",
        headers: { origin: "https://app.example", "access-control-request-method": "GET" },
      }),
      "",
    );
    assertEquals(response.status, 204);
    assertEquals(response.headers.get("access-control-allow-origin"), "https://app.example");
    assertEquals(response.headers.get("access-control-allow-credentials"), "true");
  });
  await t.step("a preflight from another origin: 403", async () => {
    const response = await router.handle(
      request("/api/x", {
        method: "OPTIONS",
        headers: { origin: "https://evil.example", "access-control-request-method": "GET" },
      }),
      "",
    );
    assertEquals(response.status, 403);
  });
  await t.step("an answer to a listed origin carries the headers, to others not", async () => {
    const listed = await router.handle(
      request("/api/x", { headers: { origin: "https://app.example" } }),
      "",
    );
    assertEquals(listed.headers.get("access-control-allow-origin"), "https://app.example");
    const other = await router.handle(
      request("/api/x", { headers: { origin: "https://evil.example" } }),
      "",
    );
    assertEquals(other.headers.get("access-control-allow-origin"), null);
    assertEquals(other.headers.get("vary"), "Origin");
  });
  await t.step("errors get the headers too", async () => {
    const response = await router.handle(
      request("/nope", { headers: { origin: "https://app.example" } }),
      "",
    );
    assertEquals(response.status, 404);
    assertEquals(response.headers.get("access-control-allow-origin"), "https://app.example");
  });
  await t.step("with no origin listed, nothing is added", async () => {
    const off = new Router(captureLogger()).use("/", cors(new Cors([]))).add("GET", "/api/x", ok);
    const response = await off.handle(
      request("/api/x", { headers: { origin: "https://app.example" } }),
      "",
    );
    assertEquals(response.headers.get("access-control-allow-origin"), null);
  });
});
