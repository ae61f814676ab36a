/**
 * Finds and imports plugin files: every `.ts`/`.js` file directly in the
 * plugins directory, sorted by name, skipping `_`-prefixed files and tests.
 * Each default export is validated; every problem names its file.
 *
 * @module
 */
import { z } from "zod";
import type { Plugin } from "./types.ts";
import { CLIENT_NAME, CLIENT_NAME_RULE } from "../protocol/names.ts";
import { zodMessage } from "../util/zod_message.ts";

/** A plugin and the file it came from. */
export interface LoadedPlugin {
  file: string;
  plugin: Plugin<unknown>;
}

/** A plugin set that cannot start; the message names the file(s) and the reason. */
export class PluginError extends Error {
  override name = "PluginError";
}

/** The directory listing the loader needs; tests may pass their own. */
export interface PluginFs {
  /** File names directly in `dir`; rejects with Deno.errors.NotFound when it is missing. */
  list(dir: string): Promise<string[]>;
}

const denoFs: PluginFs = {
  async list(dir) {
    const names: string[] = [];
    for await (const entry of Deno.readDir(dir)) if (entry.isFile) names.push(entry.name);
    return names;
  },
};

/** Whether a file name is a plugin: `.ts`/`.js`, not `_x`, not a test. */
export function isPluginFile(name: string): boolean {
  return /\.(ts|js|mts|mjs)$/.test(name) && !name.startsWith("_") && !name.endsWith(".d.ts") &&
    !/[._]test\.(ts|js|mts|mjs)$/.test(name);
}

const fn = z.custom<(...args: unknown[]) => unknown>((v) => typeof v === "function", {
  message: "must be a function",
});

const PluginShape = z.looseObject({
  name: z.string().regex(CLIENT_NAME, CLIENT_NAME_RULE),
  types: z.array(z.int().min(0).max(2 ** 31 - 1)).min(1, "must list at least one type"),
  handle: fn,
  ephemeral: z.array(z.int().min(0).max(2 ** 31 - 1)).optional(),
  init: fn.optional(),
  close: fn.optional(),
  onRegister: fn.optional(),
  onDisconnect: fn.optional(),
  configSchema: z.custom((v) => typeof (v as { safeParse?: unknown })?.safeParse === "function", {
    message: "must have a safeParse method (a zod schema)",
  }).optional(),
});

const EXAMPLE =
  `export default definePlugin({ name: "my-plugin", types: [5001], handle(message, ctx) {} })`;

/** Validates a module's default export; the error names the file. */
export function validatePlugin(file: string, module: Record<string, unknown>): Plugin<unknown> {
  if (!("default" in module) || module.default === undefined) {
    throw new PluginError(
      `Cannot load plugin "${file}": default export is missing, write: ${EXAMPLE}`,
    );
  }
  const parsed = PluginShape.safeParse(module.default);
  if (!parsed.success) {
    const reason = zodMessage(parsed.error, { what: "default export" });
    throw new PluginError(`Cannot load plugin "${file}": ${reason}, write: ${EXAMPLE}`);
  }
  return module.default as Plugin<unknown>;
}

/**
 * Loads the plugins in `dir` (an absolute path or a file URL). A missing
 * directory yields no plugins when `optional`, else an error.
 */
export async function loadPlugins(
  dir: string | URL,
  options: { optional?: boolean; fs?: PluginFs; import?: (url: string) => Promise<unknown> } = {},
): Promise<LoadedPlugin[]> {
  const fs = options.fs ?? denoFs;
  const importModule = options.import ?? ((url: string) => import(url));
  const base = typeof dir === "string"
    ? new URL(`file://${dir.endsWith("/") ? dir : `${dir}/`}`)
    : dir;
  const path = decodeURIComponent(base.pathname);
  let names: string[];
  try {
    names = await fs.list(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound && options.optional) return [];
    const reason = error instanceof Deno.errors.NotFound ? "directory not found" : String(error);
    throw new PluginError(`Cannot read plugins directory ${path}: ${reason}`);
  }
  const loaded: LoadedPlugin[] = [];
  for (const name of names.filter(isPluginFile).sort()) {
    let module: Record<string, unknown>;
    try {
      module = await importModule(new URL(name, base).href) as Record<string, unknown>;
    } catch (error) {
      throw new PluginError(`Cannot load plugin "${name}": ${describeImportError(error)}`);
    }
    loaded.push({ file: name, plugin: validatePlugin(name, module) });
  }
  return loaded;
}

/**
 * Why a plugin's import failed, with the file, line and column when the error
 * names them (a syntax error, or a throw while the module runs), and the
 * excerpt of the source that Deno prints under a syntax error.
 */
export function describeImportError(error: unknown): string {
  if (!(error instanceof Error)) return `import failed: ${error}`;
  const [first, ...rest] = error.message.split("\n");
  // The first place named outside this server's own code (the loader's `import()` is no answer).
  const own = new URL("../", import.meta.url).href;
  const where = [...`${error.message}\n${error.stack ?? ""}`
    .matchAll(/(file:\/\/[^\s)]+?):(\d+):(\d+)/g)].find((match) => !match[1].startsWith(own));
  const excerpt = rest.filter((line) => !/^\s+at /.test(line) && line.trim() !== "");
  if (!where) return `import failed: ${first}`;
  const file = decodeURIComponent(new URL(where[1]).pathname);
  const lines = excerpt.length > 0 ? `\n${excerpt.join("\n")}` : "";
  return `import failed at ${file}, line ${where[2]}, column ${where[3]}: ${first}${lines}`;
}
