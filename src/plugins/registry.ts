/**
 * The plugin registry: claims types, validates each plugin's config section,
 * runs handlers isolated from the server (a throw or a timeout answers 400 and
 * nothing else), and calls lifecycle hooks.
 *
 * @module
 */
import { BUILT_IN_TYPES, MessageType, StatusCode, statusName, SYSTEM } from "../protocol/codes.ts";
import { encodeFrame, type Message } from "../protocol/frame.ts";
import { parseRecipients } from "../protocol/recipients.ts";
import type { Connection } from "../core/hub.ts";
import type { DeliveryService } from "../core/delivery.ts";
import type { CustomTypes, Status } from "../core/client_session.ts";
import { TimeoutError, withTimeout } from "../util/deadline.ts";
import { zodMessage } from "../util/zod_message.ts";
import type { Logger } from "../log.ts";
import { randomId } from "../auth/base64.ts";
import { closest } from "../config/load.ts";
import { type LoadedPlugin, PluginError } from "./loader.ts";
import type { ClientInfo, Plugin, PluginBaseContext, PluginSend, SendResult } from "./types.ts";

/** Counts plugin failures (metrics). */
export interface PluginObserver {
  error?(plugin: string): void;
  timeout?(plugin: string): void;
}

/** What the registry needs from the server. */
export interface PluginRuntime {
  delivery: DeliveryService;
  isOnline(userId: string): Promise<boolean>;
  logger: Logger;
  /** Milliseconds a handler may take. */
  timeoutMs: number;
  /** `limits.maxRecipients`, for `ctx.send`. */
  maxRecipients: number;
  /** `plugins.config`: sections by plugin name. */
  config: Record<string, unknown>;
  observer?: PluginObserver;
}

interface Entry {
  file: string;
  plugin: Plugin<unknown>;
  base: PluginBaseContext<unknown>;
  logger: Logger;
}

const NOT_SENDABLE = new Set<number>([
  MessageType.REGISTER,
  MessageType.SEND_STATUS,
  MessageType.RECEIPT,
]);

/** Plugins by type; implements the session's {@link CustomTypes}. */
export class PluginRegistry implements CustomTypes {
  #byType = new Map<number, Entry>();
  #entries: Entry[] = [];
  #runtime: PluginRuntime;

  private constructor(runtime: PluginRuntime) {
    this.#runtime = runtime;
  }

  /**
   * Checks the plugin set (types, names, config sections), then runs every
   * `init`. Any problem stops start-up with a {@link PluginError}.
   */
  static async create(loaded: LoadedPlugin[], runtime: PluginRuntime): Promise<PluginRegistry> {
    const registry = new PluginRegistry(runtime);
    const names = new Map<string, string>();
    for (const { file, plugin } of loaded) {
      const other = names.get(plugin.name);
      if (other) {
        throw new PluginError(`Plugins "${other}" and "${file}" are both named "${plugin.name}"`);
      }
      names.set(plugin.name, file);
    }
    for (const key of Object.keys(runtime.config)) {
      if (names.has(key)) continue;
      const hint = closest(key, [...names.keys()]);
      throw new PluginError(
        `plugins.config.${key}: no plugin is named "${key}"${
          hint ? ` (did you mean "plugins.config.${hint}"?)` : ""
        }`,
      );
    }
    for (const { file, plugin } of loaded) {
      const logger = runtime.logger.child(`plugin:${plugin.name}`);
      const entry: Entry = {
        file,
        plugin,
        logger,
        base: registry.#context(
          { logger, state: new Map() },
          pluginConfig(file, plugin, runtime.config),
        ),
      };
      for (const type of plugin.types) {
        if (BUILT_IN_TYPES.has(type)) {
          throw new PluginError(`Plugin "${file}" claims type ${type}, which is built in`);
        }
        const owner = registry.#byType.get(type);
        if (owner) {
          throw new PluginError(`Plugins "${owner.file}" and "${file}" both claim type ${type}`);
        }
        registry.#byType.set(type, entry);
      }
      registry.#entries.push(entry);
    }
    for (const entry of registry.#entries) {
      try {
        await entry.plugin.init?.(entry.base);
      } catch (error) {
        throw new PluginError(
          `Plugin "${entry.file}" failed in init: ${
            error instanceof Error ? error.message : error
          }`,
        );
      }
      entry.logger.info("Plugin loaded", { file: entry.file, types: entry.plugin.types });
    }
    return registry;
  }

  has(type: number): boolean {
    return this.#byType.has(type);
  }

  async handle(message: Message, sender: Connection): Promise<Status> {
    const entry = this.#byType.get(message.type);
    if (!entry) return { code: StatusCode.TYPE_ERROR, msg: `Unknown type ${message.type}` };
    const { plugin, logger } = entry;
    const { observer, timeoutMs } = this.#runtime;
    const controller = new AbortController();
    const ctx = {
      ...this.#context(entry.base, entry.base.config, sender),
      sender: { userId: sender.userId, clientName: sender.clientName },
      signal: controller.signal,
    };
    const run = (async (): Promise<Status> => {
      const result = await plugin.handle(message, ctx);
      if (result === undefined || result === null) return { code: StatusCode.SUCCESS };
      if (typeof result !== "object" || !statusName(result.code)) {
        throw new Error(`handle() returned ${JSON.stringify(result)}, not a status`);
      }
      return { code: result.code, msg: result.msg };
    })();
    try {
      return await withTimeout(run, timeoutMs, `Plugin "${plugin.name}" timed out`);
    } catch (error) {
      if (error instanceof TimeoutError) {
        controller.abort(error);
        observer?.timeout?.(plugin.name);
        logger.warn("Handler timed out", { id: message.id, type: message.type, timeoutMs });
        return { code: StatusCode.FAILED, msg: error.message };
      }
      observer?.error?.(plugin.name);
      logger.error("Handler threw", { id: message.id, type: message.type, error });
      const msg = error instanceof Error ? error.message : String(error);
      return { code: StatusCode.FAILED, msg: msg || "Plugin failed" };
    }
  }

  /** Calls every plugin's `onRegister`. */
  clientRegistered(client: ClientInfo): void {
    this.#hook("onRegister", client);
  }

  /** Calls every plugin's `onDisconnect`. */
  clientDisconnected(client: ClientInfo): void {
    this.#hook("onDisconnect", client);
  }

  /** Calls every plugin's `close`, logging failures. */
  async close(): Promise<void> {
    for (const { plugin, logger } of this.#entries) {
      try {
        await plugin.close?.();
      } catch (error) {
        logger.error("close() threw", { error });
      }
    }
  }

  #hook(name: "onRegister" | "onDisconnect", client: ClientInfo) {
    for (const { plugin, base, logger } of this.#entries) {
      const hook = plugin[name];
      if (!hook) continue;
      const info = { userId: client.userId, clientName: client.clientName };
      Promise.resolve().then(() => hook.call(plugin, info, base)).catch((error) => {
        this.#runtime.observer?.error?.(plugin.name);
        logger.error(`${name}() threw`, { error });
      });
    }
  }

  #context(
    { logger, state }: { logger: Logger; state: Map<string, unknown> },
    config: unknown,
    sender?: Connection,
  ): PluginBaseContext<unknown> {
    const { delivery, isOnline, maxRecipients } = this.#runtime;
    return {
      config,
      logger,
      isOnline,
      state,
      async send(frame: PluginSend): Promise<SendResult> {
        if (NOT_SENDABLE.has(frame.type)) throw new Error(`Plugins cannot send type ${frame.type}`);
        const parsed = parseRecipients(frame.to, { max: maxRecipients });
        if (!parsed.ok) {
          throw new Error(`Cannot send to ${JSON.stringify(frame.to)}: ${parsed.msg}`);
        }
        const recipients = parsed.users;
        const id = frame.id ?? randomId(16);
        const system = frame.asSystem === true || !sender;
        const from = system ? SYSTEM : sender.userId;
        const text = encodeFrame({
          id,
          type: frame.type,
          isSystem: system,
          from,
          to: frame.toField ?? recipients.join(","),
          body: typeof frame.body === "string" ? frame.body : JSON.stringify(frame.body),
        });
        const { duplicate } = await delivery.send(
          { sender: from, id, type: frame.type, recipients, text, store: frame.store !== false },
          system ? undefined : sender,
        );
        return { id, duplicate };
      },
    };
  }
}

function pluginConfig(file: string, plugin: Plugin<unknown>, all: Record<string, unknown>) {
  const section = all[plugin.name];
  if (!plugin.configSchema) return section;
  const parsed = plugin.configSchema.safeParse(section ?? {});
  if (parsed.success) return parsed.data;
  const reason = zodMessage(parsed.error, {
    what: "Key",
    prefix: ["plugins", "config", plugin.name],
  });
  throw new PluginError(`Invalid config for plugin "${file}": ${reason}`);
}
