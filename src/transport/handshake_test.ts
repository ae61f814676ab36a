/** The WebSocket handshake checks and the subprotocol choice (PROTOCOL.md section 10). */
import { assertEquals } from "../../tests/_assert.ts";
import { checkHandshake, offeredProtocols, selectProtocol } from "./handshake.ts";

const good = {
  upgrade: "websocket",
  connection: "Upgrade",
  "sec-websocket-version": "13",
  "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
};
const check = (headers: Record<string, string>, method = "GET") =>
  checkHandshake(method, new Headers(headers));

Deno.test("checkHandshake() accepts a well-formed upgrade, token lists and case included", () => {
  assertEquals(check(good), null);
  assertEquals(check({ ...good, connection: "keep-alive, Upgrade", upgrade: "WebSocket" }), null);
});

Deno.test("checkHandshake() answers 426 naming version 13 for a missing or other version", () => {
  const { "sec-websocket-version": _, ...noVersion } = good;
  for (const headers of [noVersion, { ...good, "sec-websocket-version": "8" }]) {
    const refusal = check(headers);
    assertEquals(refusal?.status, 426);
    assertEquals(refusal?.headers, { "sec-websocket-version": "13" });
  }
});

Deno.test("checkHandshake() answers 400 for a bad key, a Connection without Upgrade, a POST", () => {
  const { "sec-websocket-key": _, ...noKey } = good;
  assertEquals(check(noKey)?.status, 400);
  assertEquals(check({ ...good, "sec-websocket-key": "short" })?.status, 400);
  assertEquals(check({ ...good, connection: "keep-alive" })?.status, 400);
  assertEquals(check(good, "POST")?.status, 400);
});

Deno.test("checkHandshake() answers 426 to a request that is no upgrade at all", () => {
  assertEquals(check({})?.status, 426);
});

Deno.test("selectProtocol() prefers im.v1, else the first offered, else none", () => {
  assertEquals(selectProtocol(offeredProtocols("im.v1")), "im.v1");
  assertEquals(selectProtocol(offeredProtocols("foo, im.v1")), "im.v1");
  assertEquals(selectProtocol(offeredProtocols("chat")), "chat");
  assertEquals(selectProtocol(offeredProtocols(null)), undefined);
  assertEquals(selectProtocol(offeredProtocols(" , ")), undefined);
});
