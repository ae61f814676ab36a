import { loadConfig } from "./src/config/load.ts";
import { createServer } from "./src/server.ts";
const server = await createServer(await loadConfig("/tmp/bench.yaml"));
console.log("up", Deno.pid);
await new Promise((r) => setTimeout(r, Number(Deno.args[0] ?? 8000)));
await server.close();
