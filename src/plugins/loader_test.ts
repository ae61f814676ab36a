/**
 * The plugin loader through its seams: an in-memory directory listing
 * (`PluginFs`) and an `import` that hands out modules from a table, so no
 * file is read and no module is really imported.
 */
import { assertEquals, assertRejects } from "../../tests/_assert.ts";
import { isPluginFile, loadPlugins, type PluginFs } from "./loader.ts";

const handle = () => {};

/** A directory listing of `names`; `missing` makes it reject like a missing directory. */
function fakeFs(names: string[], missing = false): PluginFs & { listed: string[] } {
  const listed: string[] = [];
  return {
    listed,
    list(dir) {
      listed.push(dir);
      if (missing) return Promise.reject(new Deno.errors.NotFound(`No such directory: ${dir}`));
      return Promise.resolve(names);
    },
  };
}

/** An `import` that serves `modules` by file name and records what was asked for. */
function fakeImport(modules: Record<string, unknown>) {
  const imported: string[] = [];
  const load = (url: string) => {
    imported.push(url);
    const name = url.slice(url.lastIndexOf("/") + 1);
    if (!(name in modules)) return Promise.reject(new Error(`Module not found "${url}"`));
    const module = modules[name];
    return module instanceof Error ? Promise.reject(module) : Promise.resolve(module);
  };
  return { imported, load };
}

const plugin = (name: string, types = [5001]) => ({ default: { name, types, handle } });

Deno.test("loadPlugins() imports plugin files sorted by name", async () => {
  const fs = fakeFs(["zeta.ts", "alpha.js", "Mid.mts", "beta.ts"]);
  const { imported, load } = fakeImport({
    "zeta.ts": plugin("zeta"),
    "alpha.js": plugin("alpha"),
    "Mid.mts": plugin("mid"),
    "beta.ts": plugin("beta"),
  });
  const loaded = await loadPlugins("/srv/plugins", { fs, import: load });
  assertEquals(loaded.map((p) => [p.file, p.plugin.name]), [
    ["Mid.mts", "mid"],
    ["alpha.js", "alpha"],
    ["beta.ts", "beta"],
    ["zeta.ts", "zeta"],
  ]);
  assertEquals(fs.listed, ["/srv/plugins/"]);
  assertEquals(imported, [
    "file:///srv/plugins/Mid.mts",
    "file:///srv/plugins/alpha.js",
    "file:///srv/plugins/beta.ts",
    "file:///srv/plugins/zeta.ts",
  ]);
});

Deno.test("loadPlugins() skips private files, tests, declarations and other files", async (t) => {
  const skipped = [
    "_shared.ts",
    "echo_test.ts",
    "echo.test.ts",
    "echo_test.js",
    "types.d.ts",
    "README.md",
    "config.json",
    "echo.ts.bak",
  ];
  await t.step("isPluginFile() says which", () => {
    for (const name of skipped) assertEquals(isPluginFile(name), false, name);
    for (const name of ["echo.ts", "echo.js", "echo.mts", "echo.mjs", "test.ts", "latest.ts"]) {
      assertEquals(isPluginFile(name), true, name);
    }
  });
  await t.step("none of them is imported", async () => {
    const { imported, load } = fakeImport({ "echo.ts": plugin("echo") });
    const loaded = await loadPlugins("/p/", { fs: fakeFs([...skipped, "echo.ts"]), import: load });
    assertEquals(loaded.map((p) => p.file), ["echo.ts"]);
    assertEquals(imported, ["file:///p/echo.ts"]);
  });
});

Deno.test("loadPlugins() finds the directory as a path or a file URL", async (t) => {
  for (
    const [title, dir, listed] of [
      ["a path without a slash", "/srv/my plugins", "/srv/my plugins/"],
      ["a file URL", new URL("file:///srv/my%20plugins/"), "/srv/my plugins/"],
    ] as const
  ) {
    await t.step(title, async () => {
      const fs = fakeFs(["a.ts"]);
      const { imported, load } = fakeImport({ "a.ts": plugin("a") });
      await loadPlugins(dir, { fs, import: load });
      assertEquals(fs.listed, [listed]);
      assertEquals(imported, ["file:///srv/my%20plugins/a.ts"]);
    });
  }
});

Deno.test("loadPlugins() treats a missing directory as optional only when told", async (t) => {
  await t.step("optional: no plugins", async () => {
    const loaded = await loadPlugins("/none", { fs: fakeFs([], true), optional: true });
    assertEquals(loaded, []);
  });
  await t.step("required: an error naming the directory", async () => {
    await assertRejects(
      () => loadPlugins("/none", { fs: fakeFs([], true) }),
      "Cannot read plugins directory /none/: directory not found",
    );
  });
});

Deno.test("loadPlugins() names the file in every validation message", async (t) => {
  const write = 'write: export default definePlugin({ name: "my-plugin"';
  const cases: [string, unknown, string][] = [
    ["no default export", { other: 1 }, 'Cannot load plugin "bad.ts": default export is missing'],
    [
      "a default export that is not an object",
      { default: "echo" },
      'Cannot load plugin "bad.ts": ',
    ],
    [
      "a name that is not a clientName",
      plugin("my plugin"),
      'Cannot load plugin "bad.ts": default export "name" is not valid: must be 1 to 64 characters',
    ],
    [
      "no types",
      plugin("p", []),
      'Cannot load plugin "bad.ts": default export "types" is not valid: must list at least one type',
    ],
    [
      "a type that is not an integer",
      plugin("p", [5001.5]),
      'Cannot load plugin "bad.ts": default export "types.0" is not valid',
    ],
    [
      "a handle that is not a function",
      { default: { name: "p", types: [5001], handle: "yes" } },
      'Cannot load plugin "bad.ts": default export "handle" is not valid: must be a function',
    ],
    [
      "no handle",
      { default: { name: "p", types: [5001] } },
      'Cannot load plugin "bad.ts": default export "handle" is not valid: must be a function',
    ],
    [
      "a configSchema that is not a zod schema",
      { default: { name: "p", types: [5001], handle, configSchema: {} } },
      'Cannot load plugin "bad.ts": default export "configSchema" is not valid: must have a safeParse method',
    ],
    [
      "an import that fails: its first line",
      new SyntaxError("Unexpected token '}'\n    at bad.ts:3:1"),
      `Cannot load plugin "bad.ts": import failed: Unexpected token '}'`,
    ],
  ];
  for (const [title, module, expected] of cases) {
    await t.step(title, async () => {
      const { load } = fakeImport({ "a.ts": plugin("a"), "bad.ts": module });
      const error = await assertRejects(
        () => loadPlugins("/p", { fs: fakeFs(["a.ts", "bad.ts"]), import: load }),
        expected,
      );
      assertEquals(error.name, "PluginError");
      if (!title.startsWith("an import")) {
        assertEquals(error.message.includes(write), true, "shows a correct export");
      } else {
        assertEquals(error.message.includes("\n"), false, "one line");
      }
    });
  }
  await t.step("an import that fails at a place in the plugin: file, line and column", async () => {
    const error = new SyntaxError(
      "Expected ';', got 'y' at file:///p/bad.ts:3:11\n\n  const x y = 1;\n          ~",
    );
    const { load } = fakeImport({ "bad.ts": error });
    await assertRejects(
      () => loadPlugins("/p", { fs: fakeFs(["bad.ts"]), import: load }),
      `Cannot load plugin "bad.ts": import failed at /p/bad.ts, line 3, column 11: Expected ';'`,
    );
  });
});
