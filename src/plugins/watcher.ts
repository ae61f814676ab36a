/**
 * Watches the plugins directory and reloads the plugins once its files have
 * been quiet for a moment (an editor's save is several events).
 *
 * @module
 */
import type { Logger } from "../log.ts";

/** A running watcher. */
export interface PluginWatcher {
  close(): Promise<void>;
}

/** Calls `reload` `debounceMs` after the last change in `dir`. */
export function watchPlugins(
  dir: string,
  reload: () => Promise<unknown>,
  logger: Logger,
  debounceMs = 150,
): PluginWatcher {
  let watcher: Deno.FsWatcher;
  try {
    watcher = Deno.watchFs(dir, { recursive: false });
  } catch (error) {
    logger.warn("Cannot watch the plugins directory: reload with POST /server/plugins/reload", {
      dir,
      error: error instanceof Error ? error.message : String(error),
    });
    return { close: () => Promise.resolve() };
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running: Promise<unknown> = Promise.resolve();
  const loop = (async () => {
    for await (const event of watcher) {
      if (event.kind === "access") continue;
      clearTimeout(timer);
      timer = setTimeout(() => {
        running = reload().catch((error) => logger.error("Plugin reload failed", { error }));
      }, debounceMs);
    }
  })();
  return {
    async close() {
      clearTimeout(timer);
      watcher.close();
      await loop.catch(() => {});
      await running;
    },
  };
}
