import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { startServer, TEST_API_KEY, type TestClient, type TestServer } from "./_helpers.ts";
import { connect } from "../src/client/client.js";

/** Writes plugin files into a fresh temporary directory. */
async function pluginDir(files: Record<string, string>): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "im-sandbox-" });
  for (const [name, text] of Object.entries(files)) {
    await Deno.writeTextFile(`${dir}/${name}`, text);
  }
  return dir;
}

const frame = (from: string, type: number, to: string, body: string) => ({
  id: crypto.randomUUID(),
  type,
  isSystem: false,
  from,
  to,
  body,
});

/** Waits (bounded) until `check` holds; fails with `what` otherwise. */
async function until(what: string, check: () => boolean | Promise<boolean>, tries = 200) {
  for (let i = 0; i < tries; i++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`Never happened: ${what}`);
}

/** The value of one metric series, 0 when absent. */
async function metric(srv: TestServer, series: string): Promise<number> {
  const text = await srv.server.metrics.render();
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line ? Number(line.split(" ")[1]) : 0;
}

/** A bystander pair still exchanges a text, and /healthz answers. */
async function bystanders(srv: TestServer, alice: TestClient, bob: TestClient, body: string) {
  assertEquals((await fetch(`${srv.url}/healthz`).then((r) => r.json())).data, "ok");
  assertEquals((await alice.text("u2", body)).code, 200);
  assertEquals((await bob.message()).body, body);
}

const FAULTY = `
  import { definePlugin } from "@im/server";
  export default definePlugin({
    name: "faulty",
    types: [7800],
    init(ctx) { ctx.logger.info("init ran"); },
    async handle(message) {
      const hang = () => new Promise(() => {});
      switch (message.body) {
        case "loop": while (true) {}
        case "oom": { const keep = []; while (true) keep.push(new Array(1e5).fill(Math.random())); }
        case "reject": Promise.reject(new Error("nobody catches this")); return await hang();
        case "timer": setTimeout(() => { throw new Error("thrown in a timer"); }, 0); return await hang();
        case "read": await Deno.readTextFile(message.to === "u2" ? "./config.yaml" : "/etc/hostname"); return;
        case "net": (await Deno.connect({ hostname: "127.0.0.1", port: 8080 })).close(); return;
        case "env": Deno.env.get("HOME"); return;
      }
    },
  });`;

Deno.test("a plugin that loops, runs out of memory or crashes costs only itself", async (t) => {
  const dir = await pluginDir({ "faulty.ts": FAULTY });
  await using srv = await startServer({
    plugins: { dir, timeoutMs: 500, maxHeapMb: 64, watch: false },
  });
  const alice = await srv.connect("alice");
  const bob = await srv.connect("bob");
  const inits = () => srv.logs.filter((l) => l.line.includes("init ran")).length;
  const restarts = () => metric(srv, 'im_plugin_restarts_total{plugin="faulty"}');
  assertEquals(inits(), 1);

  const cases: [string, string][] = [
    ["loop", 'Plugin "faulty" timed out'],
    ["oom", 'Plugin "faulty" crashed: out of memory'],
    ["reject", "nobody catches this"],
    ["timer", "thrown in a timer"],
  ];
  for (const [body, msg] of cases) {
    await t.step(`${body}: 400, restart with init, bystanders unaffected`, async () => {
      const before = await restarts();
      const initsBefore = inits();
      const pending = alice.request(frame("u1", 7800, "u2", body));
      await bystanders(srv, alice, bob, `while ${body}`);
      const reply = await pending;
      assertEquals(reply.code, 400);
      assert(reply.msg?.includes(msg), `${reply.msg} includes ${msg}`);
      await until("the plugin restarted", async () => await restarts() === before + 1);
      assertEquals(inits(), initsBefore + 1, "init ran again");
      assert(await metric(srv, 'im_plugin_crashes_total{plugin="faulty"}') >= before + 1);
      assert(srv.logs.some((l) => l.line.includes("Plugin host exited: restarting it")));
      assertEquals((await alice.request(frame("u1", 7800, "u2", "fine"))).code, 200);
      await bystanders(srv, alice, bob, `after ${body}`);
    });
  }

  await t.step("reading the config file, connecting out or reading env is refused", async () => {
    for (const [body, to] of [["read", "u2"], ["read", "u3"], ["net", "u2"], ["env", "u2"]]) {
      const reply = await alice.request(frame("u1", 7800, to, body));
      assertEquals(reply.code, 400, body);
      assert(/Requires (read|net|env) access/.test(reply.msg ?? ""), reply.msg);
    }
    assertEquals((await alice.request(frame("u1", 7800, "u2", "fine"))).code, 200);
    await bystanders(srv, alice, bob, "after the refusals");
  });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("plugins.permissions grants what it names, and never the server's files", async (t) => {
  const upstream = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response("from crm"),
  );
  const port = upstream.addr.port;
  const dir = await pluginDir({
    "crm.ts": `
      export default {
        name: "crm",
        types: [7850],
        async handle(message) {
          const text = await (await fetch(message.body)).text();
          return { code: 200, msg: text };
        },
      };`,
  });
  try {
    await t.step("a granted host is reachable, another is not", async () => {
      await using srv = await startServer({
        plugins: { dir, watch: false, permissions: { crm: { net: [`127.0.0.1:${port}`] } } },
      });
      const alice = await srv.connect("alice");
      const ok = await alice.request(frame("u1", 7850, "u2", `http://127.0.0.1:${port}/`));
      assertEquals([ok.code, ok.msg], [200, "from crm"]);
      const refused = await alice.request(frame("u1", 7850, "u2", `${srv.url}/healthz`));
      assertEquals(refused.code, 400);
      assert(refused.msg?.includes("Requires net access"), refused.msg);
    });
    await t.step(
      "grants that reach the config file or storage are refused at start-up",
      async () => {
        await assertRejects(
          () => startServer({ plugins: { dir, permissions: { crm: { read: ["."] } } } }),
          'plugins.permissions.crm.read[0]: "." reaches the server\'s storage directory',
        );
        await assertRejects(
          () =>
            startServer({ plugins: { dir, permissions: { crm: { write: ["./config.yaml"] } } } }),
          'plugins.permissions.crm.write[0]: "./config.yaml" reaches the server\'s config file',
        );
        await assertRejects(
          () => startServer({ plugins: { dir, permissions: { crm: { env: ["IM_API_KEYS"] } } } }),
          'plugins.permissions.crm.env[0]: "IM_API_KEYS" is the server\'s own setting',
        );
        await assertRejects(
          () => startServer({ plugins: { dir, permissions: { cmr: { net: ["x:1"] } } } }),
          'plugins.permissions.cmr: no plugin is named "cmr" (did you mean "plugins.permissions.crm"?)',
        );
      },
    );
  } finally {
    await upstream.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

const versioned = (version: string, type = 7900) => `
  export default {
    name: "live-${type}",
    types: [${type}],
    async handle(message) {
      if (message.body === "slow") await new Promise((resolve) => setTimeout(resolve, 600));
      return { code: 200, msg: "${version}" };
    },
  };`;

async function reload(srv: TestServer) {
  const response = await fetch(`${srv.url}/server/plugins/reload`, {
    method: "POST",
    headers: { authorization: `Bearer ${TEST_API_KEY}` },
  });
  assertEquals(response.status, 200);
  return (await response.json()).data;
}

Deno.test("POST /server/plugins/reload adds, swaps, refuses and removes without closing connections", async (t) => {
  const dir = await pluginDir({ "a.ts": versioned("v1") });
  await using srv = await startServer({ plugins: { dir, watch: false } });
  const alice = await srv.connect("alice");
  const bob = await srv.connect("bob");
  const ask = async (type: number, body = "?") => {
    const reply = await alice.request(frame("u1", type, "u2", body));
    return reply.code === 200 ? reply.msg : reply.code;
  };
  assertEquals(await ask(7900), "v1");

  await t.step("the reload route needs the API key", async () => {
    const response = await fetch(`${srv.url}/server/plugins/reload`, { method: "POST" });
    await response.body?.cancel();
    assertEquals(response.status, 401);
  });

  await t.step("a new file loads and its type works", async () => {
    assertEquals(await ask(7901), 403);
    await Deno.writeTextFile(`${dir}/b.ts`, versioned("b1", 7901));
    assertEquals((await reload(srv)).loaded, ["b.ts"]);
    assertEquals(await ask(7901), "b1");
  });

  await t.step(
    "a changed file is swapped; a frame in flight finishes on the old version",
    async () => {
      const slow = alice.request(frame("u1", 7900, "u2", "slow"));
      await new Promise((resolve) => setTimeout(resolve, 100));
      await Deno.writeTextFile(`${dir}/a.ts`, versioned("v2"));
      assertEquals((await reload(srv)).replaced, ["a.ts"]);
      assertEquals(await ask(7900), "v2");
      assertEquals((await slow).msg, "v1");
    },
  );

  await t.step("a broken change is refused and the old version keeps serving", async () => {
    await Deno.writeTextFile(`${dir}/a.ts`, "export default {{ broken");
    const result = await reload(srv);
    assertEquals(result.failed.map((f: { file: string }) => f.file), ["a.ts"]);
    assertEquals(await ask(7900), "v2");
    const ready = await fetch(`${srv.url}/readyz`).then((r) => r.json());
    assertEquals(ready.data, "ready");
    assert(ready.details.plugins.failed["a.ts"].includes("Cannot load plugin"), ready);
    assertEquals(await metric(srv, 'im_plugin_load_failures_total{file="a.ts"}'), 1);
    assert(srv.logs.some((l) => l.level === "error" && l.line.includes("Plugin not loaded")));
    await Deno.writeTextFile(`${dir}/a.ts`, versioned("v3"));
    assertEquals((await reload(srv)).replaced, ["a.ts"]);
    assertEquals(await ask(7900), "v3");
    const healed = await fetch(`${srv.url}/readyz`).then((r) => r.json());
    assertEquals(healed.details, undefined);
  });

  await t.step("a type claimed twice is refused at swap time", async () => {
    await Deno.writeTextFile(`${dir}/c.ts`, versioned("c1", 7901).replace("live-7901", "other"));
    const result = await reload(srv);
    assertEquals(result.failed, [{
      file: "c.ts",
      error: 'Plugins "b.ts" and "c.ts" both claim type 7901',
    }]);
    assertEquals(await ask(7901), "b1");
    await Deno.remove(`${dir}/c.ts`);
  });

  await t.step("a removed file unloads", async () => {
    await Deno.remove(`${dir}/b.ts`);
    assertEquals((await reload(srv)).removed, ["b.ts"]);
    assertEquals(await ask(7901), 403);
  });

  await t.step("no connection was closed", async () => {
    await bystanders(srv, alice, bob, "still connected");
  });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("the watcher loads a new file and a change without a request", async () => {
  const dir = await pluginDir({ "a.ts": versioned("w1", 7950) });
  await using srv = await startServer({ plugins: { dir } });
  const alice = await srv.connect("alice");
  const ask = async (type: number) => {
    const reply = await alice.request(frame("u1", type, "u2", "?"));
    return reply.code === 200 ? reply.msg : reply.code;
  };
  await Deno.writeTextFile(`${dir}/b.ts`, versioned("w2", 7951));
  await until("b.ts loaded", async () => await ask(7951) === "w2");
  await Deno.writeTextFile(`${dir}/a.ts`, versioned("w3", 7950));
  await until("a.ts swapped", async () => await ask(7950) === "w3");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("receipts end the redelivery of plugin frames; ephemeral types are never stored", async () => {
  const dir = await pluginDir({
    "relay.ts": `
      export default {
        name: "relay",
        types: [7960, 7961],
        ephemeral: [7961],
        async handle(message, ctx) {
          await ctx.send({ id: message.id, type: message.type, to: message.to, body: message.body });
        },
      };`,
  });
  await using srv = await startServer({ plugins: { dir, watch: false } });
  const alice = await srv.connect("alice");
  assertEquals((await alice.request(frame("u1", 7960, "u2", "stored"))).code, 200);
  assertEquals((await alice.request(frame("u1", 7961, "u2", "live only"))).code, 200);

  const options = {
    url: srv.url,
    clientName: "web",
    username: "bob",
    password: "bob-pw",
    reconnect: false as const,
  };
  const bob = await connect(options);
  const got = await new Promise<{ type: number; body: string }>((resolve) =>
    bob.on("custom", (message) => resolve(message))
  );
  assertEquals([got.type, got.body], [7960, "stored"], "the ephemeral frame was not kept");
  await until("bob's receipt reached alice", async () => {
    const frames = await alice.quiet(50);
    return frames.some((f) => f.type === 9101);
  });
  await bob.close();

  const again = await connect(options);
  let redelivered = 0;
  again.on("custom", () => redelivered++);
  await new Promise((resolve) => setTimeout(resolve, 300));
  await again.close();
  assertEquals(redelivered, 0, "the receipted plugin frame is not delivered again");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a plugin that sends in a loop without awaiting is refused past the in-flight cap", async () => {
  const dir = await pluginDir({
    "flood.ts": `export default {
      name: "flood",
      types: [7900],
      async handle(message, ctx) {
        const sends = Array.from({ length: 5000 }, (_, i) =>
          ctx.send({ to: "u3", type: 7901, body: String(i), id: message.id + ":" + i }));
        const refused = (await Promise.allSettled(sends)).filter((r) => r.status === "rejected");
        if (refused.length > 0) return { code: 400, msg: refused.length + " " + refused[0].reason.message };
      },
    };`,
    "sink.ts": `export default { name: "sink", types: [7901], handle() {} };`,
  });
  const storage = await Deno.makeTempDir({ prefix: "im-flood-" });
  await using srv = await startServer({
    plugins: { dir, timeoutMs: 20_000, watch: false, maxSendsInFlight: 8 },
    storage: { driver: "sqlite", dir: storage },
  });
  const alice = await srv.connect("alice");
  const bob = await srv.connect("bob");
  const reply = await alice.request(frame("u1", 7900, "u2", "go"));
  assertEquals(reply.code, 400);
  assert(reply.msg?.includes("Too many sends in flight: at most 8"), reply.msg);
  const refused = Number(reply.msg!.split(" ")[0]);
  assert(refused > 0 && refused < 5000, `${refused} of 5000 refused: the rest were accepted`);
  await bystanders(srv, alice, bob, "after the flood");
  await Deno.remove(dir, { recursive: true });
  await Deno.remove(storage, { recursive: true });
});

Deno.test("a plugin that logs in a loop writes at most plugins.logLinesPerMinute lines", async () => {
  const dir = await pluginDir({
    "chatty.ts": `export default {
      name: "chatty",
      types: [7950],
      handle(message, ctx) {
        for (let i = 0; i < 2000; i++) ctx.logger.info("chatty line " + i);
        for (let i = 0; i < 500; i++) console.log("printed line " + i);
      },
    };`,
  });
  await using srv = await startServer({
    plugins: { dir, watch: false, logLinesPerMinute: 50 },
    log: { level: "info" },
  });
  const alice = await srv.connect("alice");
  const bob = await srv.connect("bob");
  assertEquals((await alice.request(frame("u1", 7950, "u2", "go"))).code, 200);
  await bystanders(srv, alice, bob, "after the chatter");
  const lines = () =>
    srv.logs.filter((l) => l.line.includes("chatty line") || l.line.includes("printed line"))
      .length;
  await until("some lines arrived", () => lines() > 0);
  await new Promise((resolve) => setTimeout(resolve, 300)); // Let the rest arrive, if any.
  assert(lines() <= 50, `${lines()} plugin lines written`);
  await Deno.remove(dir, { recursive: true });
});
