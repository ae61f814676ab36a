/**
 * `deno task compile` builds one executable with the server, the console and
 * the plugins present at compile time. Building needs Deno's base runtime
 * (denort): it is downloaded from the internet, or taken from DENORT_BIN. This
 * test runs only where DENORT_BIN points at one.
 */
import { assert, assertEquals } from "./_assert.ts";
import { login, TestClient, untilListening, wsSession } from "./_helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const denort = Deno.env.get("DENORT_BIN");
const reason = "DENORT_BIN is not set: deno compile needs a base runtime (denort), and this " +
  "machine cannot download one";
if (!denort) console.warn(`compile_test.ts skipped: ${reason}`);

Deno.test({
  name: "deno task compile builds a binary that serves with its embedded plugins",
  ignore: !denort,
  async fn() {
    const built = await new Deno.Command(Deno.execPath(), {
      args: ["task", "compile"],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(built.code, 0, new TextDecoder().decode(built.stderr));
    const dir = await Deno.makeTempDir();
    await Deno.writeTextFile(
      `${dir}/config.yaml`,
      [
        "websocket: { port: 0 }",
        "auth: { users: [{ userId: u1, username: alice, password: alice-pw }] }",
        "storage: { driver: memory }",
      ].join("\n"),
    );
    const child = new Deno.Command(`${ROOT}dist/im-server`, {
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const output = untilListening(child.stdout, child.stderr);
    const url = await output.url;
    const page = await fetch(`${url}/`);
    assertEquals(page.status, 200, "the console is embedded");
    await page.body?.cancel();
    const token = await login(url, "alice", "alice-pw");
    const client = await TestClient.open(`${url.replace("http", "ws")}/websocket`);
    const register = await client.request({
      id: "r",
      type: 1000,
      isSystem: false,
      from: "u1",
      to: "",
      body: JSON.stringify({ sessionId: await wsSession(url, token, "bin") }),
    });
    assertEquals(register.code, 200);
    const echo = await client.request({
      id: "e",
      type: 5999,
      isSystem: false,
      from: "u1",
      to: "u1",
      body: "embedded",
    });
    assertEquals(echo.code, 200, "the echo plugin was embedded and loaded");
    await client.close();
    child.kill("SIGTERM");
    assertEquals((await child.status).code, 0);
    await output.drained;
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test("deno task compile without internet says how to get the runtime and leaves no empty dist/", async () => {
  const dir = await Deno.makeTempDir({ prefix: "im-compile-" });
  const env: Record<string, string> = {
    // A proxy that refuses every connection: offline, even on a machine with internet.
    HTTPS_PROXY: "http://127.0.0.1:9",
    HTTP_PROXY: "http://127.0.0.1:9",
    NO_COLOR: "1",
  };
  for (const name of ["PATH", "HOME", "DENO_DIR", "XDG_CACHE_HOME"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  try {
    const built = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "scripts/compile.ts", "--output", `${dir}/dist/im-server`],
      cwd: ROOT,
      clearEnv: true, // without DENORT_BIN
      env,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(built.stderr);
    if (built.code === 0) {
      // The runtime was cached in DENO_DIR by an earlier build: nothing to download.
      console.warn("compile_test.ts: denort is cached here; the offline message is not exercised");
      await Deno.stat(`${dir}/dist/im-server`);
      return;
    }
    assertEquals(built.code, 1, stderr);
    assert(stderr.includes("Cannot compile: deno compile needs Deno's base runtime"), stderr);
    assert(stderr.includes("DENORT_BIN"), stderr);
    assert(!stderr.includes("Stack backtrace"), stderr);
    const left = [];
    for await (const entry of Deno.readDir(dir)) left.push(entry.name);
    assertEquals(left, [], "no empty dist/ is left behind");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
