/**
 * Child process for `store_sqlite_test.ts`: `deno run <perms> _store_child.ts MODE DIR [N]`.
 *
 * - `open`: opens the store and closes it; prints `opened` or the error message (exit 1).
 * - `hold`: opens the store, prints `ready` and keeps it open until killed.
 * - `write`: opens the store and accepts messages `m0`, `m1`, … from `writer` to
 *   `reader` with 32 in flight, printing `accepted <i>` as each resolves, N in all.
 *
 * @module
 */
import { openSqliteStore } from "../src/backends/store_sqlite.ts";

const [mode, dir, count = "1000000"] = Deno.args;
const encoder = new TextEncoder();
const print = (line: string) => Deno.stdout.writeSync(encoder.encode(line + "\n"));

let store;
try {
  store = await openSqliteStore({ dir });
} catch (error) {
  print((error as Error).message);
  Deno.exit(1);
}
if (mode === "open") {
  await store.close();
  print("opened");
} else if (mode === "hold") {
  print("ready");
  setInterval(() => {}, 60_000);
} else if (mode === "write") {
  const total = Number(count);
  let next = 0;
  const writer = async () => {
    while (next < total) {
      const i = next++;
      const text = JSON.stringify({ type: 2001, id: `m${i}`, from: "writer", to: ["reader"] });
      await store.accept({
        sender: "writer",
        id: `m${i}`,
        type: 2001,
        recipients: ["reader"],
        text,
        acceptedAt: Date.now(),
      });
      print(`accepted ${i}`);
    }
  };
  await Promise.all(Array.from({ length: 32 }, writer));
  await store.close();
}
