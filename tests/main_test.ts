import { assert, assertEquals } from "./_assert.ts";
import { verifyPassword } from "../src/auth/password.ts";
import { shippedConfig, untilListening } from "./_helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;

function deno(args: string[], env: Record<string, string> = {}, stdin: "piped" | "null" = "null") {
  return new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    env: { NO_COLOR: "1", ...env },
    stdin,
    stdout: "piped",
    stderr: "piped",
  });
}

const RUN = [
  "run",
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-run",
  "main.ts",
];

async function badConfig(yaml: string) {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/bad.yaml`;
  await Deno.writeTextFile(path, yaml);
  const output = await deno([...RUN, "--config", path]).output();
  await Deno.remove(dir, { recursive: true });
  return { code: output.code, stderr: new TextDecoder().decode(output.stderr), path };
}

Deno.test("a bad config stops start-up naming the file, the key path and the reason", async (t) => {
  await t.step("an unknown key, with a did-you-mean hint", async () => {
    const { code, stderr, path } = await badConfig("websocket:\n  prot: 9000\n");
    assertEquals(code, 1);
    assert(stderr.includes(path), stderr);
    assert(stderr.includes('websocket.prot: unknown key (did you mean "websocket.port"?)'), stderr);
  });

  await t.step("a wrong type", async () => {
    const { code, stderr } = await badConfig("limits:\n  maxRecipients: many\n");
    assertEquals(code, 1);
    assert(stderr.includes("limits.maxRecipients"), stderr);
  });

  await t.step("keys of later features are known already", async () => {
    const { code, stderr } = await badConfig(
      "storage:\n  drivr: sqlite\nserver:\n  apiKy: x\nplugins:\n  dri: ./p\n",
    );
    assertEquals(code, 1);
    assert(stderr.includes('did you mean "storage.driver"'), stderr);
    assert(stderr.includes('did you mean "server.apiKey"'), stderr);
    assert(stderr.includes('did you mean "plugins.dir"'), stderr);
  });

  await t.step("YAML that does not parse, and a missing file", async () => {
    const broken = await badConfig("websocket: [\n");
    assertEquals(broken.code, 1);
    assert(broken.stderr.includes("line"), broken.stderr);
    const missing = await deno([...RUN, "--config", "/nonexistent/x.yaml"]).output();
    assertEquals(missing.code, 1);
    assert(
      new TextDecoder().decode(missing.stderr).includes("/nonexistent/x.yaml: file not found"),
    );
  });
});

Deno.test("main.ts serves config.yaml with IM_PORT, prints its address and stops on SIGTERM", async () => {
  await using config = await shippedConfig();
  const child = deno([...RUN, "--config", config.path], { IM_PORT: "0" }).spawn();
  const output = untilListening(child.stdout, child.stderr);
  const url = await output.url;
  assert(url.startsWith("http://127.0.0.1:"), url);
  const response = await fetch(`${url}/app/login`, {
    method: "POST",
    body: JSON.stringify({ username: "alice", password: "alice-password" }),
  });
  assertEquals(response.status, 200, output.text());
  await response.body?.cancel();
  child.kill("SIGTERM");
  const status = await child.status;
  assertEquals(status.code, 0, output.text());
  await output.drained;
});

Deno.test("hash-password prints a hash that verifies", async () => {
  const child = deno(["run", "main.ts", "hash-password"], {}, "piped").spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode("correct horse\n"));
  await writer.close();
  const output = await child.output();
  assertEquals(output.code, 0);
  const hash = new TextDecoder().decode(output.stdout).trim();
  assert(hash.startsWith("pbkdf2-sha256$"), hash);
  assert(await verifyPassword("correct horse", hash));
  assert(!await verifyPassword("correct horse!", hash));
});

Deno.test("start-up messages say what is wrong and how to fix it", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "im-messages-" });
  const config = async (extra: Record<string, unknown> = {}) => {
    const path = `${dir}/config-${crypto.randomUUID()}.json`;
    await Deno.writeTextFile(
      path,
      JSON.stringify({
        websocket: { url: "127.0.0.1", port: 0 },
        storage: { driver: "memory" },
        plugins: { dir: `${ROOT}tests/fixtures/empty` },
        ...extra,
      }),
    );
    return path;
  };
  try {
    await t.step("--help lists the environment variables", async () => {
      const output = await deno(["run", "main.ts", "--help"]).output();
      assertEquals(output.code, 0);
      const text = new TextDecoder().decode(output.stdout);
      for (const name of ["--config", "IM_CONFIG", "IM_PORT", "IM_HOST", "IM_API_KEYS"]) {
        assert(text.includes(name), `${name} missing from:\n${text}`);
      }
      assert(/LOG_TOKENS/.test(text) && /LOG_STREAM/.test(text), text);
    });

    await t.step("a busy port names the port and how to choose another", async () => {
      using busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const path = await config();
      const output = await deno([...RUN, "--config", path], { IM_PORT: String(busy.addr.port) })
        .output();
      const stderr = new TextDecoder().decode(output.stderr);
      assertEquals(output.code, 1, stderr);
      assert(stderr.includes(`port ${busy.addr.port} on 127.0.0.1 is already in use`), stderr);
      assert(stderr.includes(`IM_PORT=${busy.addr.port + 1}`), stderr);
      assert(stderr.includes("websocket.port") && stderr.includes("--config"), stderr);
      assert(!stderr.includes("os error"), stderr);
    });

    await t.step("a plugin with a syntax error names its file, line and column", async () => {
      const plugins = `${dir}/plugins`;
      await Deno.mkdir(plugins);
      await Deno.writeTextFile(
        `${plugins}/broken.ts`,
        'export default {\n  name: "broken",\n  types: [5555,\n  handle() {},\n};\n',
      );
      const output = await deno([...RUN, "--config", await config({ plugins: { dir: plugins } })])
        .output();
      const stderr = new TextDecoder().decode(output.stderr);
      assertEquals(output.code, 1, stderr);
      assert(stderr.includes(`${plugins}/broken.ts, line 4, column 12`), stderr);
      assert(stderr.includes("SyntaxError"), stderr);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
