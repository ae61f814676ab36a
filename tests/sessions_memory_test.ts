import { sessionsConformance } from "./sessions_conformance.ts";
import { MemorySessionStore } from "../src/backends/sessions_memory.ts";

sessionsConformance("MemorySessionStore", (ttlSeconds) => {
  const sessions = new MemorySessionStore(ttlSeconds);
  return Promise.resolve({ sessions, cleanup: () => sessions.close() });
}, { shortTtlSeconds: 0.1 });
