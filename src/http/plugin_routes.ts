/**
 * `POST /server/plugins/reload` (API key): reads the plugins directory again,
 * like the watcher does, and answers what changed.
 *
 * @module
 */
import { json } from "./errors.ts";
import type { Router } from "./router.ts";
import type { PluginRegistry } from "../plugins/registry.ts";
import type { Logger } from "../log.ts";

/** What the plugin routes need. */
export interface PluginRouteDeps {
  plugins: PluginRegistry;
  logger: Logger;
}

/** Adds `POST /server/plugins/reload`; the `/server/` middleware checks the API key. */
export function addPluginRoutes(router: Router, deps: PluginRouteDeps): void {
  router.add("POST", "/server/plugins/reload", async () => {
    const result = await deps.plugins.reload();
    deps.logger.info("Plugins reloaded on request", {
      loaded: result.loaded.length,
      replaced: result.replaced.length,
      removed: result.removed.length,
      failed: result.failed.length,
    });
    return json({ data: result });
  });
}
