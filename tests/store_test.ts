import { MemoryStore } from "../src/backends/store_memory.ts";
import { openSqliteStore } from "../src/backends/store_sqlite.ts";
import { storeConformance } from "./store_conformance.ts";

storeConformance("MemoryStore", (options) => {
  const store = new MemoryStore(options);
  return Promise.resolve({ store, cleanup: () => store.close() });
});

storeConformance("SqliteStore", async (options) => {
  const dir = await Deno.makeTempDir({ prefix: "im_store_test_" });
  const store = await openSqliteStore({ dir, ...options });
  return {
    store,
    cleanup: async () => {
      await store.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
});
