/**
 * Webhooks to business backends: events are queued per webhook (bounded,
 * dropping the oldest when full), sent in the background as signed JSON
 * batches, and retried with exponential backoff. Nothing here ever blocks the
 * caller: {@link Webhooks.emit} only appends to queues.
 *
 * @module
 */
import type { Logger } from "../log.ts";
import type { Metrics } from "./metrics.ts";

/** The events a webhook may subscribe to. */
export type WebhookEventType = "message.offline" | "user.online" | "user.offline";

/** One event as sent in a batch. */
export interface WebhookEvent {
  /** Unique id of the event, for de-duplication by the receiver (retries resend it). */
  id: string;
  type: WebhookEventType;
  /** When it happened, ms since the epoch. */
  time: number;
  data: Record<string, unknown>;
}

/** A configured webhook. */
export interface WebhookConfig {
  url: string;
  events: WebhookEventType[];
  secret: string;
}

/** Options of {@link Webhooks}. */
export interface WebhookOptions {
  logger: Logger;
  metrics?: Metrics;
  /** Events kept waiting per webhook; the oldest is dropped past it. @default 10000 */
  maxQueue?: number;
  /** Events per POST. @default 100 */
  maxBatch?: number;
  /** Attempts per batch before it is given up. @default 5 */
  maxAttempts?: number;
  /** Delay before the first retry, doubled each time. @default 500 */
  backoffMs?: number;
  /** Longest delay between retries. @default 30000 */
  maxBackoffMs?: number;
  /** Milliseconds one POST may take. @default 10000 */
  timeoutMs?: number;
}

/** Header carrying `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`. */
export const SIGNATURE_HEADER = "x-im-signature";
/** Header carrying the signing time, seconds since the epoch. */
export const TIMESTAMP_HEADER = "x-im-timestamp";

const encoder = new TextEncoder();

/** The hex HMAC-SHA256 of `${timestamp}.${body}` with `secret`: what {@link SIGNATURE_HEADER} carries after `sha256=`. */
export async function signPayload(
  secret: string,
  timestamp: string,
  body: string,
): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    encoder.encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = await crypto.subtle.sign("HMAC", key, encoder.encode(`${timestamp}.${body}`));
  return [...new Uint8Array(mac)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** A label for a webhook in logs and metrics: its URL without query or credentials. */
function labelOf(url: string): string {
  const parsed = new URL(url);
  return `${parsed.protocol}//${parsed.host}${parsed.pathname}`;
}

type SenderOptions = Required<Omit<WebhookOptions, "metrics">> & { metrics?: Metrics };

/** Milliseconds the last attempt at shutdown may take. */
const FINAL_TIMEOUT_MS = 2000;

/** One webhook's queue and sender loop. */
class WebhookSender {
  readonly label: string;
  #config: WebhookConfig;
  #options: SenderOptions;
  #queue: WebhookEvent[] = [];
  #running?: Promise<void>;
  #closed = false;
  #wake?: () => void;
  #abort?: AbortController;
  #dropped = 0;

  constructor(config: WebhookConfig, options: SenderOptions) {
    this.#config = config;
    this.#options = options;
    this.label = labelOf(config.url);
  }

  wants(type: WebhookEventType): boolean {
    return this.#config.events.includes(type);
  }

  get queued(): number {
    return this.#queue.length;
  }

  push(event: WebhookEvent): void {
    if (this.#closed) return;
    const { maxQueue, metrics, logger } = this.#options;
    if (this.#queue.length >= maxQueue) {
      this.#queue.shift();
      this.#dropped++;
      metrics?.webhookEvents.inc({ webhook: this.label, outcome: "dropped" });
      // One line for the first drop, then one per 1000, so a flood does not flood the log.
      if (this.#dropped === 1 || this.#dropped % 1000 === 0) {
        logger.warn("Webhook queue full: dropped the oldest event", {
          webhook: this.label,
          dropped: this.#dropped,
        });
      }
    }
    this.#queue.push(event);
    this.#gauge();
    this.#running ??= this.#run().finally(() => this.#running = undefined);
  }

  /**
   * Stops: interrupts a wait or a POST in progress, tries what is queued once
   * more (for at most {@link FINAL_TIMEOUT_MS}), then gives up on the rest.
   */
  async close(): Promise<void> {
    this.#closed = true;
    this.#wake?.();
    this.#abort?.abort(new Error("Shutting down"));
    await this.#running;
    if (this.#queue.length > 0) {
      const batch = this.#queue.splice(0);
      const sent = await this.#post(batch, FINAL_TIMEOUT_MS).catch(() => false);
      if (!sent) this.#giveUp(batch, "at shutdown");
      this.#gauge();
    }
  }

  async #run(): Promise<void> {
    const { maxBatch, maxAttempts, backoffMs, maxBackoffMs, logger } = this.#options;
    while (this.#queue.length > 0 && !this.#closed) {
      const batch = this.#queue.splice(0, maxBatch);
      this.#gauge();
      let attempt = 0;
      while (true) {
        attempt++;
        let error: unknown;
        try {
          if (await this.#post(batch)) break;
        } catch (e) {
          error = e;
        }
        if (this.#closed) {
          this.#queue.unshift(...batch); // close() makes the last attempt
          return;
        }
        if (attempt >= maxAttempts) {
          this.#giveUp(batch, `after ${attempt} attempts`, error);
          break;
        }
        const delay = Math.min(maxBackoffMs, backoffMs * 2 ** (attempt - 1));
        logger.debug("Webhook POST failed: retrying", { webhook: this.label, attempt, delay });
        await this.#sleep(delay);
        if (this.#closed) {
          this.#queue.unshift(...batch);
          return;
        }
      }
    }
  }

  #giveUp(batch: WebhookEvent[], when: string, error?: unknown) {
    this.#options.metrics?.webhookEvents.inc(
      { webhook: this.label, outcome: "failed" },
      batch.length,
    );
    this.#options.logger.error(`Webhook events lost ${when}`, {
      webhook: this.label,
      events: batch.length,
      ...(error ? { error: error instanceof Error ? error.message : String(error) } : {}),
    });
  }

  /** POSTs one batch; true on a 2xx answer. Logs and counts each attempt. */
  async #post(batch: WebhookEvent[], timeoutMs = this.#options.timeoutMs): Promise<boolean> {
    const { metrics, logger } = this.#options;
    const body = JSON.stringify(batch);
    const timestamp = String(Math.floor(Date.now() / 1000));
    const signature = await signPayload(this.#config.secret, timestamp, body);
    const abort = this.#abort = new AbortController();
    const timer = setTimeout(() => abort.abort(new Error("Webhook timed out")), timeoutMs);
    try {
      const response = await fetch(this.#config.url, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          [SIGNATURE_HEADER]: `sha256=${signature}`,
          [TIMESTAMP_HEADER]: timestamp,
          "user-agent": "deno-im-webhooks/1",
        },
        body,
        signal: abort.signal,
      });
      await response.body?.cancel();
      const ok = response.status >= 200 && response.status < 300;
      metrics?.webhookDeliveries.inc({ webhook: this.label, result: ok ? "ok" : "error" });
      if (ok) {
        metrics?.webhookEvents.inc({ webhook: this.label, outcome: "sent" }, batch.length);
      } else {
        logger.warn("Webhook answered an error", {
          webhook: this.label,
          status: response.status,
        });
      }
      return ok;
    } catch (error) {
      metrics?.webhookDeliveries.inc({ webhook: this.label, result: "error" });
      logger.warn("Webhook POST failed", {
        webhook: this.label,
        error: error instanceof Error ? error.message : String(error),
      });
      throw error;
    } finally {
      clearTimeout(timer);
      this.#abort = undefined;
    }
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = () => {
        this.#wake = undefined;
        done();
      };
    });
  }

  #gauge() {
    this.#options.metrics?.webhookQueue.set({ webhook: this.label }, this.#queue.length);
  }
}

/**
 * Every configured webhook. {@link emit} queues an event for each webhook that
 * subscribes to its type and returns at once.
 */
export class Webhooks {
  #senders: WebhookSender[];

  constructor(configs: WebhookConfig[], options: WebhookOptions) {
    const resolved = {
      logger: options.logger,
      metrics: options.metrics,
      maxQueue: options.maxQueue ?? 10_000,
      maxBatch: options.maxBatch ?? 100,
      maxAttempts: options.maxAttempts ?? 5,
      backoffMs: options.backoffMs ?? 500,
      maxBackoffMs: options.maxBackoffMs ?? 30_000,
      timeoutMs: options.timeoutMs ?? 10_000,
    };
    this.#senders = configs.map((config) => new WebhookSender(config, resolved));
  }

  /** Whether some webhook subscribes to `type` (to skip work nobody wants). */
  wants(type: WebhookEventType): boolean {
    return this.#senders.some((sender) => sender.wants(type));
  }

  /** Queues an event for every webhook that subscribes to its type. */
  emit(type: WebhookEventType, data: Record<string, unknown>): void {
    if (!this.wants(type)) return;
    const event: WebhookEvent = { id: crypto.randomUUID(), type, time: Date.now(), data };
    for (const sender of this.#senders) if (sender.wants(type)) sender.push(event);
  }

  /** Events waiting, over every webhook. */
  get queued(): number {
    return this.#senders.reduce((sum, sender) => sum + sender.queued, 0);
  }

  /** Sends what it can of the queues (one last attempt each) and stops. */
  async close(): Promise<void> {
    await Promise.all(this.#senders.map((sender) => sender.close()));
  }
}
