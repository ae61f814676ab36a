/**
 * Metrics in the Prometheus text exposition format (version 0.0.4), written
 * by hand: counters and gauges with labels, one histogram, and gauges read at
 * scrape time. {@link Metrics} is the one object every part reports to.
 *
 * @module
 */

/** Distinct frame types given their own label in `im_frames_in_total`. */
export const MAX_TYPE_LABELS = 64;

/** The business API routes counted by name in `im_api_requests_total`. */
const API_ROUTES = new Set([
  "/server/messages",
  "/server/presence",
  "/server/kick",
  "/server/plugins/reload",
]);

/** Label names and values of one series. */
export type Labels = Record<string, string>;

/** Bucket upper bounds of the delivery latency histogram, in seconds. */
export const LATENCY_BUCKETS = [
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
];

function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function labelText(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return parts.length > 0 ? `{${parts.join(",")}}` : "";
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

function header(name: string, help: string, type: string): string {
  return `# HELP ${name} ${
    help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")
  }\n# TYPE ${name} ${type}\n`;
}

/** A counter or gauge with labels; series are kept in first-use order. */
export class Series {
  readonly #values = new Map<string, { labels: Labels; value: number }>();
  #unlabelled = true;

  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: "counter" | "gauge",
  ) {}

  /** Adds `by` (default 1) to the series with `labels`. */
  inc(labels: Labels = {}, by = 1): void {
    this.series(labels).value += by;
  }

  /**
   * The series with `labels`, created at 0: hot paths keep it and add to
   * `value` directly instead of building the label text per event.
   */
  series(labels: Labels): { value: number } {
    const key = labelText(labels);
    let entry = this.#values.get(key);
    if (!entry) this.#values.set(key, entry = { labels: { ...labels }, value: 0 });
    return entry;
  }

  /** Sets the series with `labels` (gauges). */
  set(labels: Labels, value: number): void {
    this.#values.set(labelText(labels), { labels: { ...labels }, value });
  }

  /** The value of one series (0 when never touched). */
  get(labels: Labels = {}): number {
    return this.#values.get(labelText(labels))?.value ?? 0;
  }

  /** The exposition text of this metric. */
  render(): string {
    let text = header(this.name, this.help, this.type);
    const entries = this.#values.size > 0 ? [...this.#values.values()] : (
      // An unlabelled metric shows 0 before its first event.
      this.#unlabelled ? [{ labels: {}, value: 0 }] : []
    );
    for (const { labels, value } of entries) {
      text += `${this.name}${labelText(labels)} ${formatValue(value)}\n`;
    }
    return text;
  }

  /** Marks this metric as labelled: it shows no series before its first event. */
  labelled(): this {
    this.#unlabelled = false;
    return this;
  }
}

/** A histogram without labels. */
export class Histogram {
  readonly #counts: number[];
  #sum = 0;
  #count = 0;

  constructor(readonly name: string, readonly help: string, readonly buckets: number[]) {
    this.#counts = buckets.map(() => 0);
  }

  /** Records one observation. */
  observe(value: number): void {
    this.#sum += value;
    this.#count++;
    for (let i = 0; i < this.buckets.length; i++) {
      if (value <= this.buckets[i]) {
        this.#counts[i]++;
        break;
      }
    }
  }

  /** Number of observations. */
  get count(): number {
    return this.#count;
  }

  /** The exposition text (cumulative buckets, `_sum`, `_count`). */
  render(): string {
    let text = header(this.name, this.help, "histogram");
    let cumulative = 0;
    for (let i = 0; i < this.buckets.length; i++) {
      cumulative += this.#counts[i];
      text += `${this.name}_bucket{le="${this.buckets[i]}"} ${cumulative}\n`;
    }
    text += `${this.name}_bucket{le="+Inf"} ${this.#count}\n`;
    text += `${this.name}_sum ${this.#sum}\n${this.name}_count ${this.#count}\n`;
    return text;
  }
}

/** A gauge read when scraped; `read` may be async and may fail (the gauge is then left out). */
export interface ScrapeGauge {
  name: string;
  help: string;
  read(): number | Promise<number>;
}

/** Options of {@link Metrics}. */
export interface MetricsOptions {
  /**
   * Milliseconds a scrape-time gauge (such as the pending count, read from
   * storage) may take before it is left out of the scrape.
   * @default 2000
   */
  readTimeoutMs?: number;
}

/**
 * Every metric of the server. Parts report through its methods (the plugin
 * runner calls {@link Metrics.pluginError} and {@link Metrics.pluginTimeout});
 * `GET /metrics` serves {@link Metrics.render}.
 *
 * @example
 * ```ts
 * import { Metrics } from "./metrics.ts";
 * const metrics = new Metrics();
 * metrics.pluginError("echo");
 * const text = await metrics.render();
 * console.assert(text.includes('im_plugin_errors_total{plugin="echo"} 1'));
 * ```
 */
export class Metrics {
  readonly connectionsOpen = new Series(
    "im_connections_open",
    "Open WebSocket connections on this instance, registered or not.",
    "gauge",
  );
  readonly connectionsRejected = new Series(
    "im_connections_rejected_total",
    "Connections refused (origin, ip_limit, user_limit, shutting_down) or closed by a limit (rate_limit, frame_too_large, slow_consumer, register_timeout), by reason.",
    "counter",
  ).labelled();
  readonly framesIn = new Series(
    "im_frames_in_total",
    "Frames received from clients, by frame type and the status code of the 9001 answer.",
    "counter",
  ).labelled();
  readonly framesOut = new Series(
    "im_frames_out_total",
    "Frames sent to connections on this instance: kind=status (9001 answers), kind=message (delivered frames, receipts and replays).",
    "counter",
  ).labelled();
  readonly rateLimited = new Series(
    "im_rate_limited_frames_total",
    "Frames refused by the per-connection rate limit.",
    "counter",
  );
  readonly deliveryLatency = new Histogram(
    "im_delivery_latency_seconds",
    "Time from a message's acceptance to its sending to connections on this instance.",
    LATENCY_BUCKETS,
  );
  readonly pluginErrors = new Series(
    "im_plugin_errors_total",
    "Plugin handlers that threw, by plugin.",
    "counter",
  ).labelled();
  readonly pluginTimeouts = new Series(
    "im_plugin_timeouts_total",
    "Plugin handlers that timed out, by plugin.",
    "counter",
  ).labelled();
  readonly pluginCrashes = new Series(
    "im_plugin_crashes_total",
    "Plugin host processes that died (a loop killed, out of memory, an uncaught error), by plugin.",
    "counter",
  ).labelled();
  readonly pluginRestarts = new Series(
    "im_plugin_restarts_total",
    "Plugin host processes started again after a crash (init ran again), by plugin.",
    "counter",
  ).labelled();
  readonly pluginLoadFailures = new Series(
    "im_plugin_load_failures_total",
    "Plugin files refused at a reload (the old version kept serving), by file.",
    "counter",
  ).labelled();
  readonly apiRequests = new Series(
    "im_api_requests_total",
    "Business API requests accepted, by API key name and route.",
    "counter",
  ).labelled();
  readonly webhookDeliveries = new Series(
    "im_webhook_deliveries_total",
    "Webhook POSTs, by webhook and result (ok, error).",
    "counter",
  ).labelled();
  readonly webhookEvents = new Series(
    "im_webhook_events_total",
    "Webhook events by webhook and outcome (sent, failed after every retry, dropped from a full queue).",
    "counter",
  ).labelled();
  readonly webhookQueue = new Series(
    "im_webhook_queue_length",
    "Webhook events waiting to be sent, by webhook.",
    "gauge",
  ).labelled();
  readonly #gauges: ScrapeGauge[] = [];
  readonly #types = new Set<string>();
  /** Series of `framesIn` by `type * 1000 + code`. */
  readonly #answered = new Map<number, { value: number }>();
  readonly #statusOut = this.framesOut.series({ kind: "status" });
  readonly #messageOut = this.framesOut.series({ kind: "message" });
  readonly #readTimeoutMs: number;
  readonly #startTime = Date.now() / 1000;

  constructor(options: MetricsOptions = {}) {
    this.#readTimeoutMs = options.readTimeoutMs ?? 2000;
  }

  /** Adds a gauge read at scrape time (registered connections, pending frames…). */
  addGauge(gauge: ScrapeGauge): void {
    this.#gauges.push(gauge);
  }

  /** A plugin handler threw. */
  /**
   * Counts a business API request under its key name and route; a path that
   * is not a route is counted as `other`, so unknown paths cannot grow the series.
   */
  apiRequest(key: string, path: string): void {
    this.apiRequests.inc({ key, route: API_ROUTES.has(path) ? path : "other" });
  }

  pluginError(plugin: string): void {
    this.pluginErrors.inc({ plugin });
  }

  /** A plugin handler timed out. */
  pluginTimeout(plugin: string): void {
    this.pluginTimeouts.inc({ plugin });
  }

  /**
   * A client frame was answered with `code`. Clients choose `type`, so only
   * the first {@link MAX_TYPE_LABELS} distinct types get their own label; the
   * rest count as `type="other"`.
   */
  frameAnswered(type: number, code: number): void {
    const key = type * 1000 + code;
    let series = this.#answered.get(key);
    if (!series) {
      let label = String(type);
      if (!this.#types.has(label)) {
        if (this.#types.size < MAX_TYPE_LABELS) this.#types.add(label);
        else label = "other";
      }
      series = this.framesIn.series({ type: label, code: String(code) });
      if (label !== "other") this.#answered.set(key, series);
    }
    series.value++;
    this.#statusOut.value++;
  }

  /** `count` frames were sent to connections; `acceptedAt` (ms epoch) feeds the latency. */
  framesSent(count: number, acceptedAt?: number): void {
    this.#messageOut.value += count;
    if (acceptedAt !== undefined) {
      this.deliveryLatency.observe(Math.max(0, Date.now() - acceptedAt) / 1000);
    }
  }

  /** A connection was refused or closed by a limit. */
  rejected(reason: string): void {
    this.connectionsRejected.inc({ reason });
  }

  /** The whole exposition text. */
  async render(): Promise<string> {
    const fixed = [
      this.connectionsOpen,
      this.connectionsRejected,
      this.framesIn,
      this.framesOut,
      this.rateLimited,
      this.pluginErrors,
      this.pluginTimeouts,
      this.pluginCrashes,
      this.pluginRestarts,
      this.pluginLoadFailures,
      this.apiRequests,
      this.webhookDeliveries,
      this.webhookEvents,
      this.webhookQueue,
    ];
    const read = await Promise.all(this.#gauges.map((gauge) => this.#read(gauge)));
    let text = "";
    for (let i = 0; i < this.#gauges.length; i++) {
      const value = read[i];
      if (value === undefined) continue;
      const { name, help } = this.#gauges[i];
      text += `${header(name, help, "gauge")}${name} ${formatValue(value)}\n`;
    }
    for (const series of fixed) text += series.render();
    text += this.deliveryLatency.render();
    text += header("process_resident_memory_bytes", "Resident memory size in bytes.", "gauge") +
      `process_resident_memory_bytes ${Deno.memoryUsage().rss}\n`;
    text += header(
      "process_start_time_seconds",
      "Start time of the process since the epoch, in seconds.",
      "gauge",
    ) + `process_start_time_seconds ${this.#startTime}\n`;
    return text;
  }

  async #read(gauge: ScrapeGauge): Promise<number | undefined> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const timeout = new Promise<undefined>((resolve) => {
        timer = setTimeout(() => resolve(undefined), this.#readTimeoutMs);
      });
      return await Promise.race([Promise.resolve(gauge.read()), timeout]);
    } catch {
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  }
}
