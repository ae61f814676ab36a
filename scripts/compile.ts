/**
 * `deno task compile`: one executable in `dist/` with the console, the client
 * and the plugins, built by `deno compile` with the start task's flags.
 *
 * `deno compile` needs Deno's base runtime (denort) for the target. It
 * downloads it once into DENO_DIR, or takes the file DENORT_BIN names. When
 * that download fails (no internet), this prints what to do instead of the
 * raw network error, and removes a `dist/` that the failed build left empty.
 *
 * ```sh
 * deno task compile                          # dist/im-server
 * deno task compile --output /tmp/im-server  # elsewhere
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";

const FLAGS = [
  "--v8-flags=--min-semi-space-size=16",
  "--allow-net",
  "--allow-read",
  "--allow-write=./data",
  "--allow-env=IM_CONFIG,IM_PORT,IM_HOST,LOG_TOKENS,LOG_STREAM,IM_API_KEYS",
  "--include",
  "plugins/",
  "--include",
  "src/console/",
  "--include",
  "src/client/",
];

/** The cause lines of a failed download, e.g. "dns error: failed to lookup address …". */
function downloadFailure(stderr: string): string | undefined {
  if (!/Setting up base binary|denort/.test(stderr)) return undefined;
  if (!/error sending request|dns error|tcp connect error|timed out|certificate/i.test(stderr)) {
    return undefined;
  }
  const causes = [...stderr.matchAll(/^\s+\d+: (.+)$/gm)].map((m) => m[1])
    .filter((line) => line !== "<unknown>");
  return causes.at(-1) ?? "the download failed";
}

async function isEmptyDir(path: string): Promise<boolean> {
  try {
    for await (const _ of Deno.readDir(path)) return false;
    return true;
  } catch {
    return false;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { output: { type: "string", short: "o" } },
  });
  const output = values.output ?? "dist/im-server";
  const dir = output.includes("/") ? output.slice(0, output.lastIndexOf("/")) || "/" : ".";
  const dirExisted = await exists(dir);
  console.error(`Compiling main.ts to ${output} (the first build downloads Deno's base runtime)`);
  const child = new Deno.Command(Deno.execPath(), {
    args: ["compile", ...FLAGS, "--output", output, "main.ts"],
    stdin: "null",
    stdout: "inherit",
    stderr: "piped",
  }).spawn();
  const stderr = new TextDecoder().decode((await child.output()).stderr);
  const { code } = await child.status;
  if (code === 0) {
    Deno.stderr.writeSync(new TextEncoder().encode(stderr));
    console.log(`Built ${output}`);
    return 0;
  }
  if (!dirExisted && await isEmptyDir(dir)) await Deno.remove(dir).catch(() => {});
  const failure = downloadFailure(stderr);
  if (!failure) {
    Deno.stderr.writeSync(new TextEncoder().encode(stderr));
    return code;
  }
  console.error(
    `Cannot compile: deno compile needs Deno's base runtime (denort ${Deno.version.deno} for ` +
      `${Deno.build.target}) and could not download it: ${failure}\n` +
      `  - run \`deno task compile\` once on a machine with internet access: the runtime is ` +
      `then cached in DENO_DIR and later builds work offline\n` +
      `  - or set DENORT_BIN to a denort binary of Deno ${Deno.version.deno} ` +
      `(from the denort-${Deno.build.target}.zip of that release)`,
  );
  return 1;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
