/**
 * The durability promise, tested the hard way: a real server process takes
 * messages for an offline user, is killed with SIGKILL, and restarts on the
 * same directory. Every message that got a 200 must arrive exactly once, in
 * order.
 */
import { assert, assertEquals } from "./_assert.ts";
import {
  type Frame,
  login,
  TEST_USERS,
  TestClient,
  untilListening,
  wsSession,
} from "./_helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** Starts `main.ts` on port 0 with SQLite in `dir`; resolves with its URL and process. */
async function spawnServer(dir: string) {
  const config = `${dir}/config.yaml`;
  await Deno.writeTextFile(
    config,
    JSON.stringify({
      websocket: { url: "127.0.0.1", port: 0 },
      auth: { users: TEST_USERS },
      storage: { driver: "sqlite", dir: `${dir}/data` },
      limits: { rateLimit: { perSecond: 100000, burst: 100000 } },
      plugins: { dir: `${ROOT}tests/fixtures/empty` },
      log: { level: "warn" },
    }),
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}main.ts`, "--config", config],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = untilListening(child.stdout, child.stderr);
  const url = await output.url;
  const drained = output.drained;
  return { url, child, drained };
}

async function connect(url: string, username: string) {
  const user = TEST_USERS.find((u) => u.username === username)!;
  const token = await login(url, username, user.password);
  const client = await TestClient.open(`${url.replace("http", "ws")}/websocket`);
  const reply = await client.request({
    id: crypto.randomUUID(),
    type: 1000,
    isSystem: false,
    from: user.userId,
    to: "",
    body: JSON.stringify({ sessionId: await wsSession(url, token, "crash") }),
  });
  assertEquals(reply.code, 200);
  client.userId = user.userId;
  return client;
}

async function kill(server: Awaited<ReturnType<typeof spawnServer>>) {
  try {
    server.child.kill("SIGKILL");
  } catch {
    // Already dead.
  }
  await server.child.status;
  await server.drained;
}

/** Collects every message for bob until none comes for a while. */
async function collect(bob: TestClient): Promise<Frame[]> {
  const got: Frame[] = [];
  while (true) {
    try {
      got.push(await bob.message(1500));
    } catch {
      return got;
    }
  }
}

Deno.test("after SIGKILL every message answered 200 arrives once, in order", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "im-crash-" });
  const COUNT = 300;

  await t.step("all 200s seen, then SIGKILL", async () => {
    const server = await spawnServer(dir);
    const alice = await connect(server.url, "alice");
    const ids = Array.from({ length: COUNT }, (_, i) => `crash-${i}`);
    for (const id of ids) {
      alice.send({ id, type: 2001, isSystem: false, from: "u1", to: "u2", body: id });
    }
    for (const id of ids) assertEquals((await alice.reply(id)).code, 200);
    await kill(server);
    await alice.closed;

    const again = await spawnServer(dir);
    const bob = await connect(again.url, "bob");
    const got = await collect(bob);
    assertEquals(got.map((f) => f.id), ids, "every message, once, in order");
    for (const frame of got) assertEquals((await bob.receipt(frame)).code, 200);
    await bob.close();
    await kill(again);
  });

  await t.step("SIGKILL in the middle of a stream of sends", async () => {
    const server = await spawnServer(dir);
    const alice = await connect(server.url, "alice");
    const ids = Array.from({ length: 2000 }, (_, i) => `mid-${i}`);
    const accepted: string[] = [];
    let killed = false;
    const replies = (async () => {
      for (const id of ids) {
        try {
          const reply = await alice.reply(id);
          if (reply.code === 200) accepted.push(id);
        } catch {
          return; // The socket died with the server.
        }
        if (accepted.length === 150 && !killed) {
          killed = true;
          await kill(server);
        }
      }
    })();
    for (const id of ids) {
      alice.send({ id, type: 2001, isSystem: false, from: "u1", to: "u2", body: id });
    }
    await replies;
    assert(accepted.length >= 150, `${accepted.length} accepted before the kill`);

    const again = await spawnServer(dir);
    const bob = await connect(again.url, "bob");
    const got = (await collect(bob)).map((f) => f.id);
    assertEquals(new Set(got).size, got.length, "no message twice");
    assertEquals(got.slice(0, accepted.length), accepted, "every accepted one, in order");
    const order = got.map((id) => Number(id.slice(4)));
    assert(order.every((n, i) => i === 0 || n > order[i - 1]), "the rest in order too");
    await bob.close();
    await kill(again);
  });
  await Deno.remove(dir, { recursive: true });
});
