/**
 * Graceful shutdown under one deadline (`server.shutdownSeconds`, shared with
 * `main.ts`, which exits 1 if the deadline passes): stop taking work, let the
 * frames in flight get their answers and deliveries, close every connection
 * with 1001, then stop listening and release plugins, hooks and storage.
 *
 * @module
 */
import type { Logger } from "../log.ts";
import { type Backends, closeBackends } from "../backends/mod.ts";
import type { Core } from "./core.ts";
import type { Listener } from "./serve.ts";
import { CloseCode } from "../protocol/codes.ts";
import type { Deadline } from "../util/deadline.ts";

/** What a shutdown stops. */
export interface Running {
  core: Core;
  backends: Backends;
  listener: Listener;
  /** Timers to clear first (the retention sweep). */
  timers: ReturnType<typeof setInterval>[];
  logger: Logger;
}

/** Shuts a running server down; every wait takes a share of what is left of `deadline`. */
export async function shutdown(running: Running, deadline: Deadline): Promise<void> {
  const { core, logger } = running;
  for (const timer of running.timers) clearInterval(timer);
  core.gate.accepting = false;
  // Frames accepted before the stop get their 200 and their delivery first.
  if (!await deadline.settles(core.delivery.idle(), 0.5)) {
    logger.warn("Frames still in flight at shutdown: closing anyway");
  }
  await new Promise((resolve) => setTimeout(resolve, 0)); // Let the 9001 answers go out.
  // Wait for the close handshakes: the HTTP shutdown would cut them short.
  const { code, reason } = CloseCode.GOING_AWAY;
  await deadline.settles(core.hub.closeAll(code, reason), 0.5);
  await running.listener.shutdown();
  await core.plugins.close();
  await core.ops.close();
  await closeBackends(running.backends);
}
