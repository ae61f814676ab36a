import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { startServer, testConfig } from "./_helpers.ts";
import { createServer } from "../src/server.ts";
import { createLogger } from "../src/log.ts";

/** Writes plugin files into a fresh temporary directory. */
async function pluginDir(files: Record<string, string>): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "im-plugins-" });
  for (const [name, text] of Object.entries(files)) {
    await Deno.writeTextFile(`${dir}/${name}`, text);
  }
  return dir;
}

const ROOT = new URL("..", import.meta.url).pathname;
const EXAMPLES = `${ROOT}plugins`;

const frame = (
  from: string,
  type: number,
  to: string,
  body: string,
  id: string = crypto.randomUUID(),
) => ({
  id,
  type,
  isSystem: false,
  from,
  to,
  body,
});

Deno.test("a custom type reaches its plugin and the plugin's frames reach users", async (t) => {
  const dir = await pluginDir({
    "shout.ts": `
      import { definePlugin, StatusCode } from "@im/server";
      let inits = 0;
      export default definePlugin({
        name: "shout",
        types: [7001, 7002],
        init() { inits++; },
        async handle(message, ctx) {
          if (message.type === 7002) return { code: StatusCode.BODY_ERROR, msg: "no 7002 today" };
          await ctx.send({
            id: message.id,
            type: 7001,
            to: message.to,
            body: { text: message.body.toUpperCase(), inits, by: ctx.sender.clientName },
          });
        },
      });`,
    "_helper.ts": `export default { not: "a plugin" };`,
    "shout_test.ts": `throw new Error("tests beside plugins are skipped");`,
    "notes.md": "not code",
  });
  await using srv = await startServer({ plugins: { dir } });
  const alice = await srv.connect("alice", "phone");
  const aliceWeb = await srv.connect("alice", "web");
  const bob = await srv.connect("bob");

  await t.step("the plugin answers 200 and its frame reaches the recipient", async () => {
    const reply = await alice.request(frame("u1", 7001, "u2", "hey", "s-1"));
    assertEquals(reply.code, 200);
    const got = await bob.message();
    assertEquals([got.id, got.type, got.from, got.isSystem], ["s-1", 7001, "u1", false]);
    assertEquals(JSON.parse(got.body), { text: "HEY", inits: 1, by: "phone" });
    assertEquals((await aliceWeb.message()).id, "s-1", "the sender's other device gets a copy");
    assertEquals(await alice.quiet(), [], "the sending connection does not");
  });

  await t.step("plugin frames are stored for offline users and take receipts", async () => {
    assertEquals((await alice.request(frame("u1", 7001, "u3", "later", "s-2"))).code, 200);
    const carol = await srv.connect("carol");
    const got = await carol.message();
    assertEquals(got.id, "s-2");
    assertEquals((await carol.receipt(got)).code, 200);
    assertEquals((await alice.next((f) => f.type === 9101)).id, "s-2");
    aliceWeb.drain();
  });

  await t.step("a plugin can answer another status", async () => {
    const reply = await alice.request(frame("u1", 7002, "u2", "x"));
    assertEquals([reply.code, reply.status, reply.msg], [404, "BODY_ERROR", "no 7002 today"]);
  });

  await t.step("the 401/402/405/406 checks come before the plugin", async () => {
    assertEquals((await alice.request(frame("u2", 7001, "u2", "x"))).code, 405);
    assertEquals((await alice.request(frame("u1", 7001, "", "x"))).code, 406);
    assertEquals((await alice.request(frame("u1", 7003, "u2", "x"))).code, 403);
  });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a throwing or slow plugin answers 400 and the server keeps serving", async () => {
  const dir = await pluginDir({
    "faulty.ts": `
      export default {
        name: "faulty",
        types: [7100, 7101],
        async handle(message, ctx) {
          if (message.type === 7100) throw new Error("database is down");
          await new Promise((resolve) => {
            const timer = setTimeout(resolve, 2000);
            ctx.signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); });
          });
        },
      };`,
  });
  await using srv = await startServer({ plugins: { dir, timeoutMs: 100 } });
  const alice = await srv.connect("alice");
  const bob = await srv.connect("bob");
  const thrown = await alice.request(frame("u1", 7100, "u2", "x"));
  assertEquals([thrown.code, thrown.msg], [400, "database is down"]);
  const logged = srv.logs.find((l) => l.line.includes("Handler threw"));
  assert(logged?.line.includes("plugin:faulty"), "the log names the plugin");
  assert(logged?.line.includes("at "), "the log has the stack trace");
  assert(!thrown.frame.body.includes("at "), "the client gets no stack trace");
  const slow = await alice.request(frame("u1", 7101, "u2", "x"));
  assertEquals([slow.code, slow.msg], [400, 'Plugin "faulty" timed out']);
  assertEquals((await alice.text("u2", "still here")).code, 200);
  assertEquals((await bob.message()).body, "still here");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("lifecycle hooks run: init, onRegister, onDisconnect, close", async () => {
  const dir = await pluginDir({
    "hooks.ts": `
      export const seen = [];
      export default {
        name: "hooks",
        types: [7200],
        init(ctx) { seen.push("init:" + ctx.config.greeting); },
        onRegister(client) { seen.push("register:" + client.userId + "/" + client.clientName); },
        onDisconnect(client) { seen.push("disconnect:" + client.userId + "/" + client.clientName); },
        handle() {},
        close() { seen.push("close"); },
      };`,
  });
  const config = testConfig({
    plugins: {
      dir,
      config: { hooks: { greeting: "hi" } },
      // In the server's process, so that this test can read the module's variable.
      permissions: { hooks: { isolation: "none" } },
    },
  });
  const server = await createServer(config, { logger: createLogger({ level: "error" }) });
  const { seen } = await import(`file://${dir}/hooks.ts`);
  const wsUrl = `${server.url.replace("http", "ws")}/websocket`;
  const { login, wsSession, TestClient } = await import("./_helpers.ts");
  const token = await login(server.url, "alice", "alice-pw");
  const client = await TestClient.open(wsUrl);
  const reply = await client.request(frame(
    "u1",
    1000,
    "",
    JSON.stringify({
      sessionId: await wsSession(server.url, token, "tab"),
    }),
  ));
  assertEquals(reply.code, 200);
  await client.close();
  while (seen.length < 3) await new Promise((resolve) => setTimeout(resolve, 10));
  await server.close();
  assertEquals(seen, ["init:hi", "register:u1/tab", "disconnect:u1/tab", "close"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("start-up stops on a bad plugin set, naming the file(s) and the reason", async (t) => {
  const cases: [string, Record<string, string>, string, Record<string, unknown>?][] = [
    [
      "two plugins claim one type",
      {
        "a.ts": `export default { name: "a", types: [7300], handle() {} };`,
        "b.ts": `export default { name: "b", types: [7300], handle() {} };`,
      },
      'Plugins "a.ts" and "b.ts" both claim type 7300',
    ],
    [
      "a plugin claims a built-in type",
      { "a.ts": `export default { name: "a", types: [2001], handle() {} };` },
      'Plugin "a.ts" claims type 2001, which is built in',
    ],
    [
      "a file fails to import",
      { "broken.ts": `import "./nowhere.ts"; export default {};` },
      'Cannot load plugin "broken.ts": import failed',
    ],
    [
      "no default export",
      { "none.ts": `export const plugin = {};` },
      'Cannot load plugin "none.ts": default export is missing',
    ],
    [
      "an export that does not fit",
      { "bad.ts": `export default { name: "bad", types: [7400] };` },
      'Cannot load plugin "bad.ts": default export "handle" is not valid: must be a function',
    ],
    [
      "two plugins with one name",
      {
        "a.ts": `export default { name: "same", types: [7500], handle() {} };`,
        "b.ts": `export default { name: "same", types: [7501], handle() {} };`,
      },
      'Plugins "a.ts" and "b.ts" are both named "same"',
    ],
    [
      "config for a plugin that is not there",
      { "a.ts": `export default { name: "alpha", types: [7600], handle() {} };` },
      'plugins.config.alhpa: no plugin is named "alhpa" (did you mean "plugins.config.alpha"?)',
      { alhpa: {} },
    ],
    [
      "a config section that fails the plugin's schema",
      // A copy: a plugin may read only its own files, so it cannot re-export another directory's.
      { "group.ts": await Deno.readTextFile(`${EXAMPLES}/group_chat.ts`) },
      "plugins.config.group-chat.groups",
      { "group-chat": { groups: { team: [] } } },
    ],
    [
      "init throws",
      {
        "a.ts":
          `export default { name: "a", types: [7700], init() { throw new Error("no db"); }, handle() {} };`,
      },
      'Plugin "a.ts" failed in init: no db',
    ],
  ];
  for (const [name, files, message, pluginConfig] of cases) {
    await t.step(name, async () => {
      const dir = await pluginDir(files);
      await assertRejects(
        () => startServer({ plugins: { dir, config: pluginConfig ?? {} } }),
        message,
      );
      await Deno.remove(dir, { recursive: true });
    });
  }
  await t.step("a configured directory that is missing", async () => {
    await assertRejects(
      () => startServer({ plugins: { dir: "/nonexistent/plugins" } }),
      "Cannot read plugins directory /nonexistent/plugins/: directory not found",
    );
  });
});

Deno.test("example plugins work end to end", async (t) => {
  await using srv = await startServer({
    plugins: {
      dir: EXAMPLES,
      config: { "group-chat": { groups: { team: ["u1", "u2", "u3"], pair: ["u2", "u3"] } } },
    },
  });
  const alice = await srv.connect("alice");
  const bob = await srv.connect("bob");

  await t.step("group-chat fans out to the other members, stored for offline ones", async () => {
    assertEquals((await alice.request(frame("u1", 5001, "team", "hi team", "g-1"))).code, 200);
    const got = await bob.message();
    assertEquals([got.id, got.from, got.to, got.body], ["g-1", "u1", "team", "hi team"]);
    const carol = await srv.connect("carol");
    assertEquals((await carol.message()).id, "g-1");
    assertEquals((await carol.receipt(got)).code, 200);
    await carol.close();
    const seen = (await alice.quiet()).map((f) => [f.type, f.id, f.from]);
    assertEquals(seen, [[9101, "g-1", "u3"]], "the sender's connection gets only the receipt");
    alice.drain();
  });

  await t.step("group-chat refuses unknown groups and non-members with 406", async () => {
    assertEquals((await alice.request(frame("u1", 5001, "nope", "x"))).code, 406);
    const reply = await alice.request(frame("u1", 5001, "pair", "x"));
    assertEquals([reply.code, reply.msg], [406, 'You are not a member of "pair"']);
  });

  await t.step("a resent group message is not delivered twice", async () => {
    assertEquals((await alice.request(frame("u1", 5001, "team", "again", "g-1"))).code, 200);
    assertEquals(await bob.quiet(), []);
  });

  await t.step("typing is relayed live and never stored", async () => {
    assertEquals((await alice.request(frame("u1", 5101, "u2,u3", "start"))).code, 200);
    const got = await bob.message();
    assertEquals([got.type, got.body], [5101, "start"]);
    assertEquals((await alice.request(frame("u1", 5101, "u2", "dancing"))).code, 404);
    const carol = await srv.connect("carol");
    assertEquals(await carol.quiet(), [], "carol was offline: nothing waits for her");
    await carol.close();
  });

  await t.step("last-seen answers who is online and when others were last seen", async () => {
    const reply = await bob.request(frame("u2", 5201, "u1,u3,u9", "?", "q-1"));
    assertEquals(reply.code, 200);
    const answer = await bob.next((f) => f.type === 5202);
    assertEquals([answer.from, answer.isSystem], ["SYSTEM", true]);
    const body = JSON.parse(answer.body);
    assertEquals(body.u1, { online: true, lastSeen: null });
    assertEquals(body.u3.online, false);
    assert(typeof body.u3.lastSeen === "number", "carol disconnected earlier");
    assertEquals(body.u9, { online: false, lastSeen: null });
  });

  await t.step("last-seen keeps each server's state apart", async () => {
    await using other = await startServer({ plugins: { dir: EXAMPLES } });
    const dave = await other.connect("bob");
    assertEquals((await dave.request(frame("u2", 5201, "u1", "?", "q-2"))).code, 200);
    const answer = await dave.next((f) => f.type === 5202);
    assertEquals(JSON.parse(answer.body).u1, { online: false, lastSeen: null });
    await dave.close();
  });

  await t.step("echo sends the body back as a system frame", async () => {
    assertEquals((await alice.request(frame("u1", 5999, "u1", "ping", "e-1"))).code, 200);
    const got = await alice.next((f) => f.type === 5999);
    assertEquals([got.id, got.body, got.from], ["e-1:echo", "ping", "SYSTEM"]);
  });
});
