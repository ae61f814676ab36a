/**
 * One loaded plugin as the registry sees it, wherever it runs: in its own
 * host process (`process_plugin.ts`) or, as a trusted opt-in, in the server's
 * process ({@link InProcessPlugin}).
 *
 * @module
 */
import { StatusCode, statusName } from "../protocol/codes.ts";
import type { Message } from "../protocol/frame.ts";
import type { Connection } from "../core/hub.ts";
import type { Status } from "../core/client_session.ts";
import type { Logger } from "../log.ts";
import { PluginError } from "./loader.ts";
import type { ClientInfo, Plugin, PluginBaseContext, PluginSend, SendResult } from "./types.ts";

/** Counts plugin failures and restarts (metrics). */
export interface PluginObserver {
  error?(plugin: string): void;
  timeout?(plugin: string): void;
  /** Its host process died (loop killed, out of memory, uncaught error). */
  crash?(plugin: string): void;
  restart?(plugin: string): void;
  /** A new version could not be loaded (the old one, if any, keeps serving). */
  loadFailure?(file: string): void;
}

/** A loaded plugin. */
export interface PluginUnit {
  readonly file: string;
  readonly name: string;
  readonly types: readonly number[];
  /** Types it sends live only: never stored, never receipted. */
  readonly ephemeral: ReadonlySet<number>;
  /** Validates its config section and runs `init`; throws a {@link PluginError}. */
  init(config: unknown): Promise<void>;
  /** Runs `handle` for an accepted frame; never rejects. */
  handle(message: Message, sender: Connection): Promise<Status>;
  hook(name: "onRegister" | "onDisconnect", client: ClientInfo): void;
  /** Lets the frames in flight finish, then runs `close()`. */
  close(): Promise<void>;
}

/** What an in-process plugin needs (a host process needs more: `ProcessPluginOptions`). */
export interface InProcessOptions {
  /** The plugin's file name (for messages). */
  file: string;
  /** Milliseconds a handler may take (`plugins.timeoutMs`). */
  timeoutMs: number;
  logger: Logger;
  observer?: PluginObserver;
  /** Sends a frame for the plugin; `sender` absent means as the system. */
  send(frame: PluginSend, sender: Connection | undefined): Promise<SendResult>;
  isOnline(userId: string): Promise<boolean>;
}

/**
 * A plugin in the server's own process (`isolation: none`): fastest, but a
 * loop freezes the server, an out-of-memory kills it, an uncaught error in a
 * timer ends it, and it has the server's permissions.
 */
export class InProcessPlugin implements PluginUnit {
  readonly file: string;
  readonly name: string;
  readonly types: readonly number[];
  readonly ephemeral: ReadonlySet<number>;
  #plugin: Plugin<unknown>;
  #options: InProcessOptions;
  #base: PluginBaseContext<unknown>;
  #inFlight = 0;
  #state = new Map<string, unknown>();
  #idle?: PromiseWithResolvers<void>;

  constructor(plugin: Plugin<unknown>, options: InProcessOptions) {
    this.#plugin = plugin;
    this.#options = options;
    this.file = options.file;
    this.name = plugin.name;
    this.types = plugin.types;
    this.ephemeral = new Set(plugin.ephemeral ?? []);
    this.#base = this.#context(undefined);
  }

  async init(section: unknown): Promise<void> {
    const plugin = this.#plugin;
    let config = section;
    if (plugin.configSchema) {
      const parsed = plugin.configSchema.safeParse(section ?? {});
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        const path = ["plugins", "config", plugin.name, ...issue.path.map(String)].join(".");
        throw new PluginError(
          `Invalid config for plugin "${this.file}": ${path}: ${issue.message}`,
        );
      }
      config = parsed.data;
    }
    this.#base = this.#context(config);
    try {
      await plugin.init?.(this.#base);
    } catch (error) {
      throw new PluginError(
        `Plugin "${this.file}" failed in init: ${error instanceof Error ? error.message : error}`,
      );
    }
  }

  async handle(message: Message, sender: Connection): Promise<Status> {
    const plugin = this.#plugin;
    const { observer, timeoutMs, logger } = this.#options;
    const controller = new AbortController();
    const ctx = {
      ...this.#context(this.#base.config, sender),
      sender: { userId: sender.userId, clientName: sender.clientName },
      signal: controller.signal,
    };
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<Status>((resolve) => {
      timer = setTimeout(() => {
        controller.abort(new Error("Plugin timed out"));
        observer?.timeout?.(plugin.name);
        logger.warn("Handler timed out", { id: message.id, type: message.type, timeoutMs });
        resolve({ code: StatusCode.FAILED, msg: `Plugin "${plugin.name}" timed out` });
      }, timeoutMs);
    });
    const run = (async (): Promise<Status> => {
      const result = await plugin.handle(message, ctx);
      if (result === undefined || result === null) return { code: StatusCode.SUCCESS };
      if (typeof result !== "object" || !statusName(result.code)) {
        throw new Error(`handle() returned ${JSON.stringify(result)}, not a status`);
      }
      return { code: result.code, msg: result.msg };
    })().catch((error) => {
      observer?.error?.(plugin.name);
      logger.error("Handler threw", { id: message.id, type: message.type, error });
      const msg = error instanceof Error ? error.message : String(error);
      return { code: StatusCode.FAILED, msg: msg || "Plugin failed" };
    });
    this.#inFlight++;
    try {
      return await Promise.race([run, timedOut]);
    } finally {
      clearTimeout(timer);
      if (--this.#inFlight === 0) this.#idle?.resolve();
    }
  }

  hook(name: "onRegister" | "onDisconnect", client: ClientInfo): void {
    const hook = this.#plugin[name];
    if (!hook) return;
    const info = { userId: client.userId, clientName: client.clientName };
    Promise.resolve().then(() => hook.call(this.#plugin, info, this.#base)).catch((error) => {
      this.#options.observer?.error?.(this.name);
      this.#options.logger.error(`${name}() threw`, { error });
    });
  }

  async close(): Promise<void> {
    if (this.#inFlight > 0) {
      this.#idle = Promise.withResolvers();
      await this.#idle.promise;
    }
    try {
      await this.#plugin.close?.();
    } catch (error) {
      this.#options.logger.error("close() threw", { error });
    }
  }

  #context(config: unknown, sender?: Connection): PluginBaseContext<unknown> {
    const { send, isOnline, logger } = this.#options;
    return {
      config,
      logger,
      isOnline,
      state: this.#state,
      send: (frame) => send(frame, sender),
    };
  }
}
