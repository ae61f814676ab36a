/** The router: middleware by path prefix, routes, 404/405, and errors turned into JSON. */
import { assert, assertEquals } from "../../tests/_assert.ts";
import { Router } from "./router.ts";
import { HttpError, json } from "./errors.ts";
import { BackendUnavailableError } from "../core/errors.ts";
import { captureLogger } from "../../tests/store_conformance.ts";

const request = (path: string, method = "GET") =>
  new Request(`http://127.0.0.1${path}`, { method });

async function body(response: Response): Promise<unknown> {
  assertEquals(response.headers.get("content-type"), "application/json; charset=utf-8");
  return await response.json();
}

Deno.test("router.handle() runs the middleware of every matching prefix, in the order added", async (t) => {
  const seen: string[] = [];
  const logger = captureLogger();
  const router = new Router(logger)
    .use("/", async (_r, _c, next) => {
      seen.push("all");
      return await next();
    })
    .use("/server/", async (_r, _c, next) => {
      seen.push("server");
      const response = await next();
      seen.push("server after");
      return response;
    })
    .use("/server/kick", (_r, context, next) => {
      seen.push("kick");
      context.apiKey = "ops";
      return next();
    })
    .use("/app/", () => {
      seen.push("app");
      return json({ refused: true }, 403);
    })
    .add("POST", "/server/kick", (_r, context) => {
      seen.push(`route (key ${context.apiKey})`);
      return json({ ok: true });
    })
    .add("GET", "/server/users/:userId", (_r, context) => {
      seen.push("route");
      return json({ user: context.params.userId, ip: context.ip, path: context.path });
    })
    .add("GET", "/app/info", () => {
      seen.push("never");
      return json({});
    });

  await t.step("outer middleware wraps inner, then the route", async () => {
    seen.length = 0;
    const response = await router.handle(request("/server/kick", "POST"), "127.0.0.1");
    assertEquals(response.status, 200);
    assertEquals(seen, ["all", "server", "kick", "route (key ops)", "server after"]);
  });
  await t.step(
    "a prefix that does not match is skipped; params and ip reach the route",
    async () => {
      seen.length = 0;
      const response = await router.handle(request("/server/users/u%201"), "10.0.0.1");
      assertEquals(await body(response), {
        user: "u%201",
        ip: "10.0.0.1",
        path: "/server/users/u%201",
      });
      assertEquals(seen, ["all", "server", "route", "server after"]);
    },
  );
  await t.step("a middleware that answers stops the chain", async () => {
    seen.length = 0;
    const response = await router.handle(request("/app/info"), "127.0.0.1");
    assertEquals([response.status, await body(response)], [403, { refused: true }]);
    assertEquals(seen, ["all", "app"]);
  });
  await t.step("middleware runs for paths with no route too", async () => {
    seen.length = 0;
    const response = await router.handle(request("/server/nothing"), "127.0.0.1");
    assertEquals(response.status, 404);
    assertEquals(seen, ["all", "server", "server after"]);
  });
});

Deno.test("router.handle() answers 404 and 405 as JSON", async (t) => {
  const router = new Router(captureLogger())
    .add("GET", "/healthz", () => new Response("ok"))
    .add("POST", "/healthz/:x", () => new Response("ok"));
  await t.step("no route for the path: 404", async () => {
    const response = await router.handle(request("/nope"), "127.0.0.1");
    assertEquals([response.status, await body(response)], [404, {
      code: 404,
      msg: "No route for /nope",
    }]);
  });
  await t.step("a route for the path but not the method: 405", async () => {
    const response = await router.handle(request("/healthz", "DELETE"), "127.0.0.1");
    assertEquals([response.status, await body(response)], [405, {
      code: 405,
      msg: "Method DELETE is not allowed here",
    }]);
  });
  await t.step("a fallback is tried before 404; null passes", async () => {
    const tried: string[] = [];
    router.fallback((r) => {
      tried.push(new URL(r.url).pathname);
      return null;
    });
    router.fallback((r) => new URL(r.url).pathname === "/console" ? new Response("console") : null);
    const console = await router.handle(request("/console"), "127.0.0.1");
    assertEquals(await console.text(), "console");
    const none = await router.handle(request("/other"), "127.0.0.1");
    assertEquals(none.status, 404);
    assertEquals(tried, ["/console", "/other"]);
  });
  await t.step("a fallback is not tried for a 405", async () => {
    const response = await router.handle(request("/healthz", "PUT"), "127.0.0.1");
    assertEquals(response.status, 405);
  });
});

Deno.test("router.handle() turns what a handler throws into a JSON answer", async (t) => {
  const logger = captureLogger();
  const router = new Router(logger)
    .use("/guarded", () => {
      throw new HttpError(401, "Missing API key: send it as a bearer token");
    })
    .add("GET", "/http-error", () => {
      throw new HttpError(409, "Already there: pick another name");
    })
    .add("GET", "/bug", () => {
      throw new Error("secret detail at /srv/db.ts:42");
    })
    .add("GET", "/async-bug", () => Promise.reject(new TypeError("secret token abc")))
    .add("GET", "/backend", () => {
      throw new BackendUnavailableError("Storage unavailable: Redis is not reachable");
    })
    .add("GET", "/guarded/x", () => json({}));

  await t.step("an HttpError: its status and message", async () => {
    const response = await router.handle(request("/http-error"), "127.0.0.1");
    assertEquals([response.status, await body(response)], [409, {
      code: 409,
      msg: "Already there: pick another name",
    }]);
  });
  await t.step("an HttpError from a middleware", async () => {
    const response = await router.handle(request("/guarded/x"), "127.0.0.1");
    assertEquals([response.status, await body(response)], [401, {
      code: 401,
      msg: "Missing API key: send it as a bearer token",
    }]);
  });
  await t.step("any other error: 500, logged, its detail not sent", async () => {
    for (const path of ["/bug", "/async-bug"]) {
      logger.lines.length = 0;
      const response = await router.handle(request(path), "127.0.0.1");
      const text = await response.text();
      assertEquals([response.status, JSON.parse(text)], [500, {
        code: 500,
        msg: "Internal server error",
      }]);
      assert(!text.includes("secret"), text);
      assertEquals(logger.lines.map((l) => [l.level, l.msg, l.fields?.path]), [[
        "error",
        "Route failed",
        path,
      ]]);
      assert(String(logger.lines[0].fields?.error).includes("secret"), "the log keeps the detail");
    }
  });
  await t.step("a backend outage: 503 with its message", async () => {
    const response = await router.handle(request("/backend"), "127.0.0.1");
    assertEquals([response.status, await body(response)], [503, {
      code: 503,
      msg: "Storage unavailable: Redis is not reachable",
    }]);
  });
});
