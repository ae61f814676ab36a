import assert from "node:assert/strict";
import { WalSyncer } from "../src/backends/wal_syncer.ts";

async function until(check: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

Deno.test("WalSyncer flushes the WAL from its worker, once per burst of commits", async () => {
  const dir = await Deno.makeTempDir({ prefix: "im_walsync_" });
  const path = `${dir}/messages.db-wal`;
  const syncer = new WalSyncer(path, 10);
  try {
    syncer.touched(); // no WAL yet: the flush is skipped and nothing breaks
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(syncer.syncs, 0);
    await Deno.writeTextFile(path, "frames");
    for (let i = 0; i < 50; i++) syncer.touched();
    await until(() => syncer.syncs === 1, "the first flush");
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(syncer.syncs, 1, "50 commits within the interval make one flush");
    syncer.touched();
    await until(() => syncer.syncs === 2, "the second flush");
  } finally {
    syncer.close();
    await Deno.remove(dir, { recursive: true });
  }
  syncer.touched(); // after close: nothing starts (the test's sanitizers would see it)
});
