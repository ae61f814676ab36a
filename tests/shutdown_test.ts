import { assert, assertEquals } from "./_assert.ts";
import {
  type Frame,
  login,
  TEST_API_KEY,
  TEST_USERS,
  TestClient,
  untilListening,
  wsSession,
} from "./_helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** main.ts as a child process with a temporary config; its output is collected. */
async function spawnMain(extraYaml = "", env: Record<string, string> = {}) {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/config.yaml`;
  const users = TEST_USERS.map((u) =>
    `    - { userId: ${u.userId}, username: ${u.username}, password: ${u.password} }`
  ).join("\n");
  await Deno.writeTextFile(
    path,
    `websocket: { url: 127.0.0.1, port: 0 }
auth:
  users:
${users}
storage: { driver: memory }
plugins: { dir: ./tests/fixtures/empty }
${extraYaml}`,
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-read", "--allow-env", "main.ts", "--config", path],
    cwd: ROOT,
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = untilListening(child.stdout, child.stderr);
  const url = await output.url;
  return {
    url,
    child,
    output: output.text,
    async finish() {
      const status = await child.status;
      await output.drained;
      await Deno.remove(dir, { recursive: true });
      return status;
    },
  };
}

async function register(url: string, username: string, clientName = "web"): Promise<TestClient> {
  const user = TEST_USERS.find((u) => u.username === username)!;
  const sessionId = await wsSession(url, await login(url, username, user.password), clientName);
  const client = await TestClient.open(`${url.replace("http", "ws")}/websocket`);
  const reply = await client.request({
    id: "reg",
    type: 1000,
    isSystem: false,
    from: user.userId,
    to: "",
    body: JSON.stringify({ sessionId }),
  });
  assertEquals(reply.code, 200);
  client.userId = user.userId;
  return client;
}

Deno.test("SIGTERM: clients see 1001, accepted frames are delivered first, exit 0", async () => {
  const main = await spawnMain(`server: { apiKey: ${TEST_API_KEY}, shutdownSeconds: 10 }`, {
    IM_API_KEYS: "crm:crm-key-0123456789abc",
  });
  const alice = await register(main.url, "alice");
  const bob = await register(main.url, "bob");
  const presence = await fetch(`${main.url}/server/presence?users=u1`, {
    headers: { authorization: "Bearer crm-key-0123456789abc" },
  });
  assertEquals(presence.status, 200, "a key from IM_API_KEYS works");
  assertEquals((await presence.json()).data.u1.online, true);

  // A stream of frames, with SIGTERM in the middle of it.
  const ids = Array.from({ length: 200 }, (_, i) => `s-${i}`);
  for (const id of ids.slice(0, 100)) {
    alice.send({ id, type: 2001, isSystem: false, from: "u1", to: "u2", body: id });
  }
  assertEquals((await alice.reply("s-0")).code, 200);
  main.child.kill("SIGTERM");
  for (const id of ids.slice(100)) {
    try {
      alice.send({ id, type: 2001, isSystem: false, from: "u1", to: "u2", body: id });
    } catch {
      break; // The socket is closing.
    }
  }

  const aliceClosed = await alice.closed;
  const bobClosed = await bob.closed;
  // Alice was still sending when the server closed: Deno's server-side close then sometimes
  // ends in an abnormal closure on the client (denoland/deno#21642, open; seen here in 2 of 10
  // runs before and after the restructure). The idle bob always gets the clean 1001.
  assert(
    (aliceClosed.code === 1001 && aliceClosed.reason === "going away") || aliceClosed.code === 0,
    `alice closed with ${aliceClosed.code} ${aliceClosed.reason}`,
  );
  assertEquals([bobClosed.code, bobClosed.reason], [1001, "going away"]);

  const frames = alice.drain();
  const replies = new Map<string, number>(
    frames.filter((f: Frame) => f.type === 9001).map((f: Frame) => [f.id, JSON.parse(f.body).code]),
  );
  // s-0 was answered 200 before the SIGTERM. Whether s-1… were read before the stop depends on
  // how the socket's bytes arrive (on node:http often after it: then all are 400, as they should).
  replies.set("s-0", 200);
  const received = new Set(
    bob.drain().filter((f: Frame) => f.type === 2001).map((f: Frame) => f.id),
  );
  // s-0's 200 was taken off the queue by reply() above. Under load the server may read every
  // later frame only after SIGTERM, and then answers them all 400: s-0 is then the only 200.
  replies.set("s-0", 200);
  const accepted = ids.filter((id) => replies.get(id) === 200);
  assert(accepted.length > 0);
  for (const id of accepted) {
    assert(received.has(id), `${id} got 200 and reached bob before the close`);
  }
  for (const [id, code] of replies) {
    assert(code === 200 || code === 400, `${id}: ${code}`);
    if (code === 400) assert(!received.has(id), `${id} refused, so not delivered`);
  }

  const status = await main.finish();
  assertEquals(status.code, 0, main.output());
  assert(main.output().includes("Shutting down"), main.output());
  assert(main.output().includes("Stopped"), main.output());
});

Deno.test("a shutdown longer than server.shutdownSeconds is forced: exit 1 with a log line", async () => {
  // A webhook receiver that never answers keeps the last webhook attempt busy for 2 s.
  const hang = Promise.withResolvers<void>();
  const receiver = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async () => {
    await hang.promise;
    return new Response();
  });
  const main = await spawnMain(`server:
  shutdownSeconds: 1
  webhooks:
    - url: http://127.0.0.1:${receiver.addr.port}/hook
      events: [user.online]
      secret: webhook-secret-0123456789`);
  try {
    const alice = await register(main.url, "alice");
    main.child.kill("SIGTERM");
    assertEquals((await alice.closed).code, 1001);
    const status = await main.finish();
    assertEquals(status.code, 1, main.output());
    assert(
      main.output().includes(
        "Shutdown took longer than 1 s (server.shutdownSeconds): forcing exit",
      ),
      main.output(),
    );
  } finally {
    hang.resolve();
    await receiver.shutdown();
  }
});

Deno.test("IM_API_KEYS adds named keys; a malformed entry stops start-up without echoing the key", async () => {
  const { parseApiKeys } = await import("../main.ts");
  assertEquals(parseApiKeys("crm:crm-key-0123456789abc, ops:ops-key-0123456789abc"), [
    { name: "crm", key: "crm-key-0123456789abc" },
    { name: "ops", key: "ops-key-0123456789abc" },
  ]);
  const short = parseApiKeys("crm:short-secret");
  assert(typeof short === "string" && short.includes('entry 1 ("crm")'), String(short));
  assert(!String(short).includes("short-secret"));
  assert(String(parseApiKeys("no-colon-here")).includes("expected name:key"));
});
