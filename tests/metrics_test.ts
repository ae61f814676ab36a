import { assert, assertEquals } from "./_assert.ts";
import { startServer, TEST_API_KEY } from "./_helpers.ts";
import { MAX_TYPE_LABELS, Metrics } from "../src/ops/metrics.ts";

/** One sample of a scrape. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** A scrape, parsed: samples plus each metric family's type. */
interface Scrape {
  samples: Sample[];
  types: Map<string, string>;
  /** Sum of the samples of `name` whose labels include `labels`. */
  value(name: string, labels?: Record<string, string>): number;
}

const NAME = "[a-zA-Z_:][a-zA-Z0-9_:]*";
const SAMPLE = new RegExp(`^(${NAME})(?:\\{(.*)\\})? (\\S+)$`);
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)/y;

/** Parses the Prometheus text format strictly enough to catch malformed output. */
function parse(text: string): Scrape {
  assert(text.endsWith("\n"), "ends with a newline");
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  const helps = new Set<string>();
  for (const line of text.slice(0, -1).split("\n")) {
    if (line.startsWith("#")) {
      const help = line.match(new RegExp(`^# HELP (${NAME}) (.+)$`));
      const type = line.match(
        new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`),
      );
      assert(help || type, `a well-formed comment: ${line}`);
      if (help) {
        assert(!helps.has(help[1]), `one HELP for ${help[1]}`);
        helps.add(help[1]);
      }
      if (type) {
        assert(!types.has(type[1]), `one TYPE for ${type[1]}`);
        types.set(type[1], type[2]);
      }
      continue;
    }
    const match = line.match(SAMPLE);
    assert(match, `a well-formed sample: ${JSON.stringify(line)}`);
    const [, name, labelText = "", valueText] = match;
    const labels: Record<string, string> = {};
    LABEL.lastIndex = 0;
    while (LABEL.lastIndex < labelText.length) {
      const label = LABEL.exec(labelText);
      assert(label, `well-formed labels: ${line}`);
      labels[label[1]] = label[2];
    }
    const value = Number(valueText.replace("+Inf", "Infinity"));
    assert(!Number.isNaN(value) || valueText === "NaN", `a number: ${line}`);
    const family = name.replace(/_(bucket|sum|count)$/, "");
    assert(types.has(name) || types.get(family) === "histogram", `a TYPE before ${name}`);
    samples.push({ name, labels, value });
  }
  return {
    samples,
    types,
    value(name, wanted = {}) {
      return samples
        .filter((s) =>
          s.name === name && Object.entries(wanted).every(([k, v]) => s.labels[k] === v)
        )
        .reduce((sum, s) => sum + s.value, 0);
    },
  };
}

async function scrape(url: string): Promise<Scrape> {
  const response = await fetch(`${url}/metrics`);
  assertEquals(response.status, 200);
  assert(response.headers.get("content-type")?.startsWith("text/plain; version=0.0.4"));
  return parse(await response.text());
}

Deno.test("GET /metrics is well-formed Prometheus text and its counters move", async (t) => {
  await using srv = await startServer();
  const before = await scrape(srv.url);

  await t.step("every documented family is there, with its type", () => {
    const expected: Record<string, string> = {
      im_connections_open: "gauge",
      im_connections_registered: "gauge",
      im_users_online: "gauge",
      im_pending_offline_frames: "gauge",
      im_connections_rejected_total: "counter",
      im_frames_in_total: "counter",
      im_frames_out_total: "counter",
      im_rate_limited_frames_total: "counter",
      im_delivery_latency_seconds: "histogram",
      im_plugin_errors_total: "counter",
      im_plugin_timeouts_total: "counter",
      im_api_requests_total: "counter",
      im_webhook_deliveries_total: "counter",
      im_webhook_events_total: "counter",
      im_webhook_queue_length: "gauge",
      im_webhook_events_queued: "gauge",
      process_resident_memory_bytes: "gauge",
      process_start_time_seconds: "gauge",
    };
    for (const [name, type] of Object.entries(expected)) {
      assertEquals(before.types.get(name), type, name);
    }
    assertEquals(before.value("im_connections_open"), 0);
    assertEquals(before.value("im_delivery_latency_seconds_count"), 0);
  });

  const alice = await srv.connect("alice");
  const bob = await srv.connect("bob");

  await t.step("connections, frames, latency and pending frames move", async () => {
    for (let i = 0; i < 5; i++) assertEquals((await alice.text("u2", `hi ${i}`)).code, 200);
    for (let i = 0; i < 5; i++) await bob.message();
    assertEquals((await alice.text("u3", "carol is offline")).code, 200);
    assertEquals(
      (await alice.request({
        id: "bad",
        type: 4242,
        isSystem: false,
        from: "u1",
        to: "u2",
        body: "",
      })).code,
      403,
    );
    const after = await scrape(srv.url);
    assertEquals(after.value("im_connections_open"), 2);
    assertEquals(after.value("im_connections_registered"), 2);
    assertEquals(after.value("im_users_online"), 2);
    assertEquals(after.value("im_frames_in_total", { type: "2001", code: "200" }), 6);
    assertEquals(after.value("im_frames_in_total", { type: "1000", code: "200" }), 2);
    assertEquals(after.value("im_frames_in_total", { type: "4242", code: "403" }), 1);
    assertEquals(after.value("im_frames_out_total", { kind: "status" }), 9);
    assertEquals(after.value("im_frames_out_total", { kind: "message" }), 5);
    assertEquals(after.value("im_delivery_latency_seconds_count"), 5);
    assertEquals(after.value("im_delivery_latency_seconds_bucket", { le: "+Inf" }), 5);
    // Buckets are cumulative.
    const buckets = after.samples.filter((s) => s.name === "im_delivery_latency_seconds_bucket");
    for (let i = 1; i < buckets.length; i++) assert(buckets[i].value >= buckets[i - 1].value);
    // Five to bob (not yet acknowledged) and one to carol.
    assertEquals(after.value("im_pending_offline_frames"), 6);
    assert(after.value("process_resident_memory_bytes") > 0);
  });

  await t.step("receipts lower the pending count; business calls count by key", async () => {
    const response = await fetch(`${srv.url}/server/messages`, {
      method: "POST",
      headers: { authorization: `Bearer ${TEST_API_KEY}` },
      body: JSON.stringify({ type: 2001, to: "u2", body: "from the backend" }),
    });
    await response.body?.cancel();
    const frame = await bob.message();
    assertEquals((await bob.receipt(frame)).code, 200);
    const after = await scrape(srv.url);
    assertEquals(after.value("im_pending_offline_frames"), 6);
    assertEquals(
      after.value("im_api_requests_total", { key: "default", route: "/server/messages" }),
      1,
    );
  });

  await t.step("a disconnect lowers the gauges", async () => {
    await alice.close();
    let after = await scrape(srv.url);
    for (let i = 0; i < 50 && after.value("im_connections_open") !== 1; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      after = await scrape(srv.url);
    }
    assertEquals(after.value("im_connections_open"), 1);
    assertEquals(after.value("im_connections_registered"), 1);
  });
});

Deno.test("Metrics: plugin counters, label escaping, and a failing gauge is left out", async () => {
  const metrics = new Metrics({ readTimeoutMs: 20 });
  metrics.pluginError("echo");
  metrics.pluginError("echo");
  metrics.pluginTimeout('we"ird\\name\n');
  metrics.addGauge({ name: "broken", help: "Fails.", read: () => Promise.reject(new Error("x")) });
  const hang = Promise.withResolvers<number>();
  metrics.addGauge({ name: "slow", help: "Never answers.", read: () => hang.promise });
  const scraped = parse(await metrics.render());
  hang.resolve(0);
  assertEquals(scraped.value("im_plugin_errors_total", { plugin: "echo" }), 2);
  assertEquals(
    scraped.samples.find((s) => s.name === "im_plugin_timeouts_total")?.labels.plugin,
    'we\\"ird\\\\name\\n',
  );
  assert(!scraped.types.has("broken") && !scraped.types.has("slow"));
});

Deno.test("Metrics: client-chosen frame types cannot grow the label set without bound", () => {
  const metrics = new Metrics();
  for (let type = 0; type < 1000; type++) metrics.frameAnswered(type, 403);
  metrics.frameAnswered(5, 403); // a type seen early keeps its label
  assertEquals(metrics.framesIn.get({ type: "5", code: "403" }), 2);
  assertEquals(metrics.framesIn.get({ type: "other", code: "403" }), 1000 - MAX_TYPE_LABELS);
});
