import { assert, assertEquals } from "./_assert.ts";
import { login, startServer, TEST_USERS, testConfig } from "./_helpers.ts";
import { ConfigError } from "../src/config/load.ts";
import { SignJWT } from "jose";

const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });

Deno.test("login routes", async (t) => {
  const secret = "external-system-secret-0123456789";
  await using srv = await startServer({ auth: { jwt: { secret } } });
  const { url } = srv;

  await t.step("POST /app/login answers a token and the userId", async () => {
    const response = await post(`${url}/app/login`, { username: "alice", password: "alice-pw" });
    assertEquals(response.status, 200);
    const body = await response.json();
    assertEquals(body.data.userId, "u1");
    assert(typeof body.data.token === "string" && body.data.token.length > 20);
  });

  await t.step("a wrong password answers 401 with a JSON reason", async () => {
    const response = await post(`${url}/app/login`, { username: "alice", password: "nope" });
    assertEquals(response.status, 401);
    assertEquals(await response.json(), { code: 401, msg: "Wrong username or password" });
  });

  await t.step("an unknown user answers 401 and a missing field 400", async () => {
    const unknown = await post(`${url}/app/login`, { username: "zed", password: "x" });
    assertEquals(unknown.status, 401);
    await unknown.body?.cancel();
    const missing = await post(`${url}/app/login`, { username: "alice" });
    assertEquals(missing.status, 400);
    assertEquals((await missing.json()).code, 400);
  });

  await t.step("an overlong username or password answers 400 before any check", async () => {
    // Failed logins are counted by username: a megabyte name must not become a counter key.
    for (
      const body of [{ username: "a".repeat(257), password: "x" }, {
        username: "alice",
        password: "p".repeat(1025),
      }]
    ) {
      const response = await post(`${url}/app/login`, body);
      assertEquals(response.status, 400);
      assertEquals(
        (await response.json()).msg,
        "username is at most 256 characters and password at most 1024",
      );
    }
  });

  await t.step("bad JSON answers 400 as JSON", async () => {
    const response = await fetch(`${url}/app/login`, { method: "POST", body: "{nope" });
    assertEquals(response.status, 400);
    assertEquals(await response.json(), { code: 400, msg: "Body is not valid JSON" });
  });

  await t.step("JSON sent as a form (curl -d without a content type) logs in", async () => {
    for (const route of ["/app/login", "/api/login"]) {
      const response = await fetch(`${url}${route}`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: ' {"username":"alice","password":"alice-pw"}',
      });
      assertEquals(response.status, 200, route);
      assertEquals((await response.json()).data.userId, "u1");
    }
    const broken = await fetch(`${url}/app/login`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: '{"username":"alice"',
    });
    assertEquals(await broken.json(), { code: 400, msg: "Body is not valid JSON" });
  });

  await t.step("POST /api/login takes a form and sets an HttpOnly cookie", async () => {
    const response = await fetch(`${url}/api/login`, {
      method: "POST",
      body: new URLSearchParams({ username: "bob", password: "bob-pw" }),
    });
    assertEquals(response.status, 200);
    assertEquals((await response.json()).data, { userId: "u2" });
    const cookie = response.headers.get("set-cookie") ?? "";
    assert(cookie.startsWith("im_session="), cookie);
    assert(cookie.includes("HttpOnly"), cookie);
    const session = await fetch(`${url}/api/websocket/client/login/admin-page`, {
      headers: { cookie: cookie.split(";")[0] },
    });
    assertEquals(session.status, 200);
    assert((await session.json()).data.length >= 22);
  });

  await t.step("the APP route takes the token header or a Bearer token", async () => {
    const token = await login(url, "alice", "alice-pw");
    for (
      const headers of [{ token }, { authorization: `Bearer ${token}` }] as Record<string, string>[]
    ) {
      const response = await fetch(`${url}/app/websocket/client/login/phone`, { headers });
      assertEquals(response.status, 200);
      const { data } = await response.json();
      assert(/^[A-Za-z0-9_-]{43}$/.test(data), `sessionId ${data} carries 256 random bits`);
    }
  });

  await t.step("the WebSocket login without or with a bad credential answers 401", async () => {
    for (
      const headers of [{}, { token: "garbage" }, { authorization: "Bearer x.y.z" }] as Record<
        string,
        string
      >[]
    ) {
      const response = await fetch(`${url}/app/websocket/client/login/phone`, { headers });
      assertEquals(response.status, 401);
      assertEquals((await response.json()).code, 401);
    }
  });

  await t.step("a bad clientName answers 400", async () => {
    const token = await login(url, "alice", "alice-pw");
    for (const name of ["", "a b", "手机", "x".repeat(65), "a%2Fb", "a/b"]) {
      const response = await fetch(`${url}/app/websocket/client/login/${name}`, {
        headers: { token },
      });
      assertEquals(response.status, 400, `clientName "${name}"`);
      assertEquals((await response.json()).code, 400);
    }
  });

  await t.step("a JWT from another system is accepted; a wrong algorithm is not", async () => {
    const key = new TextEncoder().encode(secret);
    const jwt = await new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setSubject("ext-42")
      .setExpirationTime("1h").sign(key);
    const ok = await fetch(`${url}/app/websocket/client/login/ext`, { headers: { token: jwt } });
    assertEquals(ok.status, 200);
    await ok.body?.cancel();
    const none = `${btoa('{"alg":"none"}')}.${btoa('{"sub":"u1"}')}.`.replaceAll("=", "");
    const bad = await fetch(`${url}/app/websocket/client/login/ext`, { headers: { token: none } });
    assertEquals(bad.status, 401);
    await bad.body?.cancel();
    const hs512 = await new SignJWT({}).setProtectedHeader({ alg: "HS512" }).setSubject("u1")
      .sign(new TextEncoder().encode(secret + secret));
    const wrong = await fetch(`${url}/app/websocket/client/login/ext`, {
      headers: { token: hs512 },
    });
    assertEquals(wrong.status, 401);
    await wrong.body?.cancel();
  });

  await t.step("unknown routes and methods answer JSON errors", async () => {
    const missing = await fetch(`${url}/nope`);
    assertEquals(missing.status, 404);
    assertEquals((await missing.json()).code, 404);
    const method = await fetch(`${url}/app/login`);
    assertEquals(method.status, 405);
    assertEquals((await method.json()).code, 405);
  });
  assertEquals(TEST_USERS.length, 3);
});

Deno.test("plain-text passwords work and are warned about at start-up", async () => {
  await using srv = await startServer();
  const warning = srv.logs.find((l) => l.level === "warn" && l.line.includes("plain text"));
  assert(warning, "a warning names the plain-text users");
  assert(warning.line.includes("alice"));
  assert(!warning.line.includes("alice-pw"), "the password itself is never logged");
});

Deno.test("hashed passwords from hash-password log in", async () => {
  const { hashPassword } = await import("../src/auth/password.ts");
  const hash = await hashPassword("s3cret", 1000);
  await using srv = await startServer({
    auth: { users: [{ userId: "h1", username: "hana", password: hash }] },
  });
  const ok = await post(`${srv.url}/app/login`, { username: "hana", password: "s3cret" });
  assertEquals(ok.status, 200);
  await ok.body?.cancel();
  const bad = await post(`${srv.url}/app/login`, { username: "hana", password: "S3cret" });
  assertEquals(bad.status, 401);
  await bad.body?.cancel();
  assert(!srv.logs.some((l) => l.line.includes("plain text")));
});

Deno.test("the session cookie's SameSite and Secure follow auth.cookieSameSite and auth.cookieSecure", async (t) => {
  const cookieOf = async (url: string, headers: Record<string, string> = {}) => {
    const response = await post(
      `${url}/api/login`,
      { username: "bob", password: "bob-pw" },
      headers,
    );
    assertEquals(response.status, 200);
    await response.body?.cancel();
    return (response.headers.get("set-cookie") ?? "").split("; ").slice(1);
  };

  await t.step("default: Lax, Secure only when the request came over HTTPS", async () => {
    await using srv = await startServer();
    const plain = await cookieOf(srv.url);
    assert(plain.includes("SameSite=Lax") && !plain.includes("Secure"), plain.join("; "));
    const proxied = await cookieOf(srv.url, { "x-forwarded-proto": "https" });
    assert(proxied.includes("Secure"), proxied.join("; "));
  });

  await t.step("strict, and Secure turned off behind a TLS proxy", async () => {
    await using srv = await startServer({
      auth: { cookieSameSite: "strict", cookieSecure: false },
    });
    const attributes = await cookieOf(srv.url, { "x-forwarded-proto": "https" });
    assert(attributes.includes("SameSite=Strict"), attributes.join("; "));
    assert(!attributes.includes("Secure"), attributes.join("; "));
  });

  await t.step("none with Secure: the cookie a page of another site can send", async () => {
    await using srv = await startServer({
      auth: { cookieSameSite: "none", cookieSecure: true },
      server: { corsOrigins: ["https://backoffice.example"] },
    });
    const response = await post(`${srv.url}/api/login`, { username: "bob", password: "bob-pw" });
    const cookie = response.headers.get("set-cookie") ?? "";
    await response.body?.cancel();
    const attributes = cookie.split("; ").slice(1);
    assert(attributes.includes("SameSite=None") && attributes.includes("Secure"), cookie);
    // What the browser then sends from the other site: the cookie and its Origin.
    const session = await fetch(`${srv.url}/api/websocket/client/login/backoffice`, {
      headers: { cookie: cookie.split(";")[0], origin: "https://backoffice.example" },
    });
    assertEquals(session.status, 200);
    assertEquals(session.headers.get("access-control-allow-origin"), "https://backoffice.example");
    assertEquals(session.headers.get("access-control-allow-credentials"), "true");
    await session.body?.cancel();
  });

  await t.step("none without cookieSecure: true is a config error", () => {
    for (
      const auth of [{ cookieSameSite: "none" }, { cookieSameSite: "none", cookieSecure: false }]
    ) {
      const error = assertThrows(() => testConfig({ auth } as never));
      assert(error instanceof ConfigError, String(error));
      assert(
        error.message.includes("auth.cookieSameSite") &&
          error.message.includes("none needs auth.cookieSecure: true"),
        error.message,
      );
    }
  });
});

function assertThrows(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error("Expected an exception");
}

Deno.test("a logged-in user asks who is online with GET /app/presence", async () => {
  await using srv = await startServer();
  await srv.connect("alice");
  const token = await login(srv.url, "bob", "bob-pw");
  const get = async (query: string, headers: Record<string, string> = { token }) => {
    const response = await fetch(`${srv.url}/app/presence${query}`, { headers });
    return { status: response.status, body: await response.json() };
  };
  const answer = await get("?users=u1,%20u3,u1");
  assertEquals(answer.status, 200);
  assertEquals(answer.body, { data: { u1: { online: true }, u3: { online: false } } });
  const cookie = await fetch(`${srv.url}/api/presence?users=u1`, {
    headers: { authorization: `Bearer ${token}` },
  });
  assertEquals((await cookie.json()).data.u1.online, true);
  assertEquals((await get("?users=u1", {})).status, 401);
  assertEquals((await get("")).body, { code: 400, msg: 'Query "users" is required: ?users=u2,u3' });
  const many = Array.from({ length: 501 }, (_, i) => `x${i}`).join(",");
  assertEquals((await get(`?users=${many}`)).status, 400);
});
