/**
 * The README's shell quick start, run as pasted: every ```sh block of README.md
 * that calls curl runs in bash against `main.ts` serving the shipped
 * config.yaml (its storage in a temporary directory, port 0, `BASE` pointing
 * at it; the blocks default to the address of config.yaml when `BASE` is unset).
 */
import { assert, assertEquals } from "./_assert.ts";
import { shippedConfig, untilListening } from "./_helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const API_KEY = "readme-test-key-0123456789";

/** The ```sh blocks of a Markdown file that mention `word`. */
function shellBlocks(markdown: string, word: string): string[] {
  const blocks = [...markdown.matchAll(/^```(?:sh|bash|shell)\n([\s\S]*?)^```$/gm)]
    .map((match) => match[1]);
  return blocks.filter((block) => block.includes(word));
}

Deno.test("every curl block of the README works as pasted against a real server", async (t) => {
  const blocks = shellBlocks(await Deno.readTextFile(`${ROOT}README.md`), "curl");
  assert(blocks.length >= 2, `expected the login and push blocks, found ${blocks.length}`);
  await using config = await shippedConfig();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "main.ts", "--config", config.path],
    cwd: ROOT,
    env: { IM_PORT: "0", IM_API_KEYS: `readme:${API_KEY}`, NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const server = untilListening(child.stdout, child.stderr);
  try {
    const base = await server.url;
    for (const [index, block] of blocks.entries()) {
      await t.step(`block ${index + 1}: ${block.split("\n")[1] ?? block}`, async () => {
        const run = await new Deno.Command("bash", {
          args: ["-euo", "pipefail", "-c", block],
          env: { BASE: base, IM_API_KEY: API_KEY },
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).output();
        const out = new TextDecoder().decode(run.stdout);
        const err = new TextDecoder().decode(run.stderr);
        const context =
          `block:\n${block}\nstdout: ${out}\nstderr: ${err}\nserver:\n${server.text()}`;
        assertEquals(run.code, 0, context);
        // Each block ends in a command whose answer is {"data": …}, as its comment shows.
        const last = out.trim().split("\n").at(-1) ?? "";
        assert(last.startsWith('{"data":'), context);
        assert(!out.includes('"code":'), context);
      });
    }
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await server.drained;
  }
});
