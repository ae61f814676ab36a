import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import {
  DB_FILE,
  HELD_CACHE,
  openSqliteStore,
  SCHEMA_VERSION,
  SWEEP_CHUNK,
} from "../src/backends/store_sqlite.ts";
import { allUnacknowledged, captureLogger, message } from "./store_conformance.ts";

const CHILD = new URL("./_store_child.ts", import.meta.url).pathname;
const DAY = 86_400_000;

/** Runs `fn` with a fresh temporary directory, removed afterwards. */
async function withDir(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "im_sqlite_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A child process running `_store_child.ts` with access to `dir` only. */
function child(mode: string, dir: string, ...args: string[]) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", `--allow-read=${dir}`, `--allow-write=${dir}`, CHILD, mode, dir, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
}

/** Output of a child that runs to its end. */
async function run(mode: string, dir: string, permissionDir = dir) {
  const process = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      `--allow-read=${permissionDir}`,
      `--allow-write=${permissionDir}`,
      CHILD,
      mode,
      dir,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
  const { code, stdout } = await process.output();
  return { code, out: new TextDecoder().decode(stdout).trim() };
}

/** Reads lines of a child's stdout, calling `onLine` until it returns true, then all the rest. */
async function readLines(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => boolean | void,
) {
  let buffer = "";
  let stopped = false;
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buffer += chunk;
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + 1);
      if (!stopped && onLine(line) === true) stopped = true;
    }
  }
}

Deno.test("SqliteStore keeps messages and their states across a reopen", async () => {
  await withDir(async (dir) => {
    const first = await openSqliteStore({ dir });
    await first.accept(message("alice", "m1", ["bob", "carol"], 1000));
    await first.accept(message("alice", "m2", ["bob"], 2000));
    await first.accept(message("bob", "m3", ["alice"], 3000));
    await first.markDelivered("bob", [{ sender: "alice", id: "m1" }]);
    await first.acknowledge("bob", { sender: "alice", id: "m2" });
    await first.close();

    const logger = captureLogger();
    const store = await openSqliteStore({ dir, maxPerUser: 1, logger });
    try {
      assert.equal(await store.pendingCount(), 3);
      assert.deepEqual((await allUnacknowledged(store, "bob")).map((m) => m.id), ["m1"]);
      const history = await store.history("bob", "alice", { limit: 10 });
      assert.deepEqual(
        history.messages.map((m) => [m.id, m.state, m.acceptedAt]),
        [["m3", "pending", 3000], ["m2", "acknowledged", 2000], ["m1", "delivered", 1000]],
      );
      assert.deepEqual(await store.accept(message("alice", "m1", ["bob"])), { duplicate: true });
      // Per-user counts are rebuilt at open: bob holds 2 > maxPerUser 1.
      assert.equal(await store.sweep(0), 1);
      assert.deepEqual((await allUnacknowledged(store, "bob")).map((m) => m.id), []);
      assert.ok(logger.lines.some((line) => line.level === "warn"));
    } finally {
      await store.close();
    }
  });
});

Deno.test("SqliteStore refuses a database with a newer schema version", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/${DB_FILE}`;
    const db = new DatabaseSync(path);
    db.exec(`PRAGMA user_version = ${SCHEMA_VERSION + 1}`);
    db.close();
    await assert.rejects(
      () => openSqliteStore({ dir }),
      new Error(
        `Storage ${path} has schema version ${
          SCHEMA_VERSION + 1
        }, newer than this server's ${SCHEMA_VERSION}: upgrade the server`,
      ),
    );
    const after = new DatabaseSync(path);
    assert.equal(
      (after.prepare("PRAGMA user_version").get() as { user_version: number }).user_version,
      SCHEMA_VERSION + 1,
    );
    after.close();
  });
});

Deno.test("SqliteStore lets one server at a time open a directory", async (t) => {
  await t.step("a second opener in the same process is refused", async () => {
    await withDir(async (dir) => {
      const store = await openSqliteStore({ dir });
      await assert.rejects(
        () => openSqliteStore({ dir }),
        new Error(`Storage ${dir} is locked by another server (pid ${Deno.pid})`),
      );
      await store.close();
      const again = await openSqliteStore({ dir });
      await again.close();
    });
  });

  await t.step("another process is refused while this one holds it", async () => {
    await withDir(async (dir) => {
      const store = await openSqliteStore({ dir });
      await store.accept(message("alice", "m1", ["bob"]));
      const refused = await run("open", dir);
      assert.deepEqual(refused, {
        code: 1,
        out: `Storage ${dir} is locked by another server (pid ${Deno.pid})`,
      });
      await store.close();
      assert.deepEqual(await run("open", dir), { code: 0, out: "opened" });
    });
  });

  await t.step("this process is refused while another holds it, until it is killed", async () => {
    await withDir(async (dir) => {
      const holder = child("hold", dir);
      let ready!: () => void;
      const isReady = new Promise<void>((resolve) => ready = resolve);
      const reading = readLines(holder.stdout, (line) => {
        if (line === "ready") ready();
      });
      await isReady;
      await assert.rejects(
        () => openSqliteStore({ dir }),
        new Error(`Storage ${dir} is locked by another server (pid ${holder.pid})`),
      );
      holder.kill("SIGKILL");
      await reading;
      assert.equal((await holder.status).signal, "SIGKILL");
      const store = await openSqliteStore({ dir });
      await store.close();
    });
  });
});

Deno.test("SqliteStore explains a directory it cannot use", async (t) => {
  await withDir(async (dir) => {
    const file = `${dir}/file`;
    await Deno.writeTextFile(file, "");
    await t.step("a path that is a file", async () => {
      await assert.rejects(
        () => openSqliteStore({ dir: file }),
        new Error(`Cannot open storage ${file}: not a directory`),
      );
    });
    await t.step("a path under a file", async () => {
      await assert.rejects(
        () => openSqliteStore({ dir: `${file}/data` }),
        (error: Error) => error.message.startsWith(`Cannot open storage ${file}/data: `),
      );
    });
    await t.step("a file that is not a database", async () => {
      const junk = `${dir}/junk`;
      await Deno.mkdir(junk);
      await Deno.writeTextFile(`${junk}/${DB_FILE}`, "not a database ".repeat(100));
      await assert.rejects(
        () => openSqliteStore({ dir: junk }),
        new Error(`Cannot open storage ${junk}/${DB_FILE}: file is not a database`),
      );
    });
    await t.step("a directory without write permission", async () => {
      const other = `${dir}/other`;
      await Deno.mkdir(other);
      const { code, out } = await run("open", `${dir}/store`, other);
      assert.equal(code, 1);
      assert.match(out, new RegExp(`^Cannot open storage ${dir}/store: .*write access`));
    });
  });
});

Deno.test("SqliteStore keeps every accepted message when the process is killed with SIGKILL", async () => {
  await withDir(async (dir) => {
    const writer = child("write", dir);
    const printed: number[] = [];
    await readLines(writer.stdout, (line) => {
      const match = /^accepted (\d+)$/.exec(line);
      assert.ok(match, `unexpected line ${line}`);
      printed.push(Number(match[1]));
      if (printed.length === 5000) {
        writer.kill("SIGKILL");
        return true;
      }
    });
    assert.equal((await writer.status).signal, "SIGKILL");
    assert.ok(printed.length >= 5000);
    assert.deepEqual(printed, printed.map((_, i) => i), "accepts resolved in call order");

    const store = await openSqliteStore({ dir });
    try {
      const stored = (await allUnacknowledged(store, "reader")).map((m) => Number(m.id.slice(1)));
      assert.deepEqual(stored, stored.map((_, i) => i), "stored in order, no gaps");
      assert.ok(
        stored.length >= printed.length,
        `${printed.length} accepted, only ${stored.length} stored`,
      );
    } finally {
      await store.close();
    }
  });
});

Deno.test("SqliteStore sweeps retention in chunks past the chunk size", async () => {
  await withDir(async (dir) => {
    const logger = captureLogger();
    const store = await openSqliteStore({ dir, retentionDays: 1, maxPerUser: 100, logger });
    try {
      const now = Date.now();
      const n = SWEEP_CHUNK * 2 + 500;
      await Promise.all(
        Array.from(
          { length: n },
          (_, i) => store.accept(message("a", `old${i}`, [`b${i % 50}`], now - 2 * DAY)),
        ),
      );
      await Promise.all(
        Array.from({ length: n }, (_, i) => store.accept(message("a", `new${i}`, ["c"], now))),
      );
      // The cap holds at accept: only retention is left to the sweep.
      assert.equal(await store.pendingCount(), n + 100);
      const ticks = countTicks();
      assert.equal(await store.sweep(now), n);
      assert.ok(ticks.stop() >= 2, "the sweep yields to the event loop between chunks");
      assert.deepEqual(await allUnacknowledged(store, "b0"), []);
      const left = (await allUnacknowledged(store, "c")).map((m) => m.id);
      assert.deepEqual(left, Array.from({ length: 100 }, (_, i) => `new${n - 100 + i}`));
      assert.equal(await store.pendingCount(), 100);
      assert.equal(await store.sweep(now), 0);
    } finally {
      await store.close();
    }
  });
});

/** Counts event-loop turns (macrotasks) until `stop()`. */
function countTicks() {
  let ticks = 0;
  let stopped = false;
  const tick = () => {
    if (stopped) return;
    ticks++;
    timer = setTimeout(tick, 0);
  };
  let timer = setTimeout(tick, 0);
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      return ticks;
    },
  };
}

Deno.test("SqliteStore fails only the write that cannot be stored, not its whole batch", async () => {
  await withDir(async (dir) => {
    const logger = captureLogger();
    const store = await openSqliteStore({ dir, logger });
    try {
      const bad = { ...message("alice", "bad", ["bob"]), text: null as unknown as string };
      const results = await Promise.allSettled([
        store.accept(message("alice", "m1", ["bob"])),
        store.accept(bad),
        store.accept(message("alice", "m2", ["bob"])),
      ]);
      assert.deepEqual(results.map((r) => r.status), ["fulfilled", "rejected", "fulfilled"]);
      assert.deepEqual((await allUnacknowledged(store, "bob")).map((m) => m.id), ["m1", "m2"]);
      assert.equal(await store.pendingCount(), 2);
      assert.ok(logger.lines.some((line) => line.level === "error"));
    } finally {
      await store.close();
    }
  });
});

Deno.test("SqliteStore keeps the cap with more recipients than its count cache holds", async () => {
  await withDir(async (dir) => {
    const store = await openSqliteStore({ dir, maxPerUser: 2 });
    try {
      for (let i = 0; i < 3; i++) await store.accept(message("a", `early${i}`, ["victim"]));
      // Made-up names push "victim" out of the count cache.
      const names = Array.from({ length: HELD_CACHE + 10 }, (_, i) => `ghost${i}`);
      for (let start = 0; start < names.length; start += 500) {
        await store.accept(message("a", `spam${start}`, names.slice(start, start + 500)));
      }
      await store.accept(message("a", "late", ["victim"]));
      assert.deepEqual((await allUnacknowledged(store, "victim")).map((m) => m.id), [
        "early2",
        "late",
      ]);
    } finally {
      await store.close();
    }
  });
});

Deno.test("SqliteStore counts a sender's pending bytes again after a reopen", async () => {
  await withDir(async (dir) => {
    const frame = (id: string) => ({ ...message("mallory", id, ["x"]), text: "x".repeat(100) });
    const first = await openSqliteStore({ dir, maxPendingBytesPerSender: 250 });
    await first.accept(frame("m0"));
    await first.accept(frame("m1"));
    await first.close();
    const store = await openSqliteStore({ dir, maxPendingBytesPerSender: 250 });
    try {
      assert.equal((await store.accept(frame("m2"))).overQuota, true);
      await store.markDelivered("x", [{ sender: "mallory", id: "m0" }]);
      await store.pendingCount(); // delivery marks wait MARK_DELAY_MS; a read writes them
      assert.deepEqual(await store.accept(frame("m2")), { duplicate: false });
    } finally {
      await store.close();
    }
  });
});
