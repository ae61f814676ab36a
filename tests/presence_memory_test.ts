import { presenceConformance } from "./presence_conformance.ts";
import { MemoryPresence } from "../src/backends/presence_memory.ts";

Deno.test("MemoryPresence passes the presence conformance suite", async (t) => {
  await presenceConformance(t, () => Promise.resolve(new MemoryPresence()));
});
