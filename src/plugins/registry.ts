/**
 * The plugin registry: finds plugin files, starts each plugin (in its own host
 * process by default), claims types, validates config sections, routes frames
 * and hooks, and reloads the directory live: new files load, changed ones are
 * swapped in once their `init` succeeds, broken ones are refused while the old
 * version keeps serving, removed ones unload.
 *
 * @module
 */
import { BUILT_IN_TYPES, MessageType, StatusCode, SYSTEM } from "../protocol/codes.ts";
import { encodeFrame, type Message } from "../protocol/frame.ts";
import { parseRecipients } from "../protocol/recipients.ts";
import type { Connection } from "../core/hub.ts";
import type { DeliveryService } from "../core/delivery.ts";
import type { CustomTypes, Status } from "../core/client_session.ts";
import type { Logger } from "../log.ts";
import { randomId } from "../auth/base64.ts";
import { closest } from "../config/load.ts";
import { describeImportError, isPluginFile, PluginError, validatePlugin } from "./loader.ts";
import type { ClientInfo, PluginSend, SendResult } from "./types.ts";
import { InProcessPlugin, type PluginObserver, type PluginUnit } from "./unit.ts";
import { loadProcessPlugin, type ProcessPluginOptions } from "./process_plugin.ts";
import type { PluginPermissions } from "./permissions.ts";
import { type PluginWatcher, watchPlugins } from "./watcher.ts";

export type { PluginObserver } from "./unit.ts";

/** What the registry needs from the server. */
export interface PluginRuntime {
  delivery: DeliveryService;
  isOnline(userId: string): Promise<boolean>;
  logger: Logger;
  /** The plugins directory (a `file:` URL ending in `/`). */
  dir: URL;
  /** A missing directory means no plugins (the default directory). */
  optional: boolean;
  /** Milliseconds a handler may take. */
  timeoutMs: number;
  /** `limits.maxRecipients`, for `ctx.send`. */
  maxRecipients: number;
  /** `plugins.config`: sections by plugin name. */
  config: Record<string, unknown>;
  /** `plugins.permissions`: grants and isolation by plugin name. */
  permissions: Record<string, PluginPermissions>;
  /** Heap limit of a host process in MiB. */
  maxHeapMb: number;
  /** `plugins.maxSendsInFlight`: a host plugin's `ctx.send` calls being accepted at once. */
  maxSendsInFlight: number;
  /** `plugins.logLinesPerMinute`. */
  logLinesPerMinute: number;
  /** The deno executable for host processes; absent: every plugin runs in process. */
  denoPath?: string;
  observer?: PluginObserver;
}

/** What a reload did. */
export interface ReloadResult {
  loaded: string[];
  replaced: string[];
  removed: string[];
  failed: { file: string; error: string }[];
}

const NOT_SENDABLE = new Set<number>([
  MessageType.REGISTER,
  MessageType.SEND_STATUS,
  MessageType.RECEIPT,
]);

interface Entry {
  unit: PluginUnit;
  version: string;
}

/** Plugins by type; implements the session's {@link CustomTypes}. */
export class PluginRegistry implements CustomTypes {
  #byType = new Map<number, PluginUnit>();
  #entries = new Map<string, Entry>();
  #failures = new Map<string, string>();
  #runtime: PluginRuntime;
  #reloading: Promise<unknown> = Promise.resolve();
  #retiring = new Set<Promise<void>>();
  #closed = false;
  #versions = 0;
  #watcher?: PluginWatcher;

  private constructor(runtime: PluginRuntime) {
    this.#runtime = runtime;
  }

  /**
   * Loads every plugin file, checks the set (types, names, config and
   * permission sections), then runs every `init`. Any problem stops start-up
   * with a {@link PluginError}.
   */
  static async create(runtime: PluginRuntime): Promise<PluginRegistry> {
    const registry = new PluginRegistry(runtime);
    const files = await registry.#list();
    const started: Entry[] = [];
    const stopAll = () => Promise.all(started.map(({ unit }) => unit.close()));
    try {
      const results = await Promise.allSettled(files.map(async ([file, version]) => {
        const unit = await registry.#start(file, version);
        started.push({ unit, version });
        return { unit, version };
      }));
      const failed = results.find((r) => r.status === "rejected");
      if (failed) throw (failed as PromiseRejectedResult).reason;
      const entries = results.map((r) => (r as PromiseFulfilledResult<Entry>).value);
      const names = new Map<string, string>();
      for (const { unit } of entries) {
        const other = names.get(unit.name);
        if (other) {
          throw new PluginError(
            `Plugins "${other}" and "${unit.file}" are both named "${unit.name}"`,
          );
        }
        names.set(unit.name, unit.file);
      }
      for (const section of ["config", "permissions"] as const) {
        for (const key of Object.keys(runtime[section])) {
          if (names.has(key)) continue;
          const hint = closest(key, [...names.keys()]);
          throw new PluginError(
            `plugins.${section}.${key}: no plugin is named "${key}"${
              hint ? ` (did you mean "plugins.${section}.${hint}"?)` : ""
            }`,
          );
        }
      }
      for (const entry of entries) {
        registry.#claim(entry.unit);
        registry.#entries.set(entry.unit.file, entry);
      }
      await Promise.all(entries.map(({ unit }) => unit.init(runtime.config[unit.name])));
      for (const { unit } of entries) {
        runtime.logger.child(`plugin:${unit.name}`).info("Plugin loaded", {
          file: unit.file,
          types: unit.types,
        });
      }
    } catch (error) {
      await stopAll();
      throw error;
    }
    return registry;
  }

  /** Names, files and types of the loaded plugins. */
  get plugins(): { name: string; file: string; types: readonly number[] }[] {
    return [...this.#entries.values()].map(({ unit }) => ({
      name: unit.name,
      file: unit.file,
      types: unit.types,
    }));
  }

  /** Files whose last load failed, with the reason (the old version, if any, still serves). */
  get failures(): Record<string, string> {
    return Object.fromEntries(this.#failures);
  }

  has(type: number): boolean {
    return this.#byType.has(type);
  }

  handle(message: Message, sender: Connection): Promise<Status> {
    const unit = this.#byType.get(message.type);
    if (!unit) {
      return Promise.resolve({ code: StatusCode.TYPE_ERROR, msg: `Unknown type ${message.type}` });
    }
    return unit.handle(message, sender);
  }

  /** Calls every plugin's `onRegister`. */
  clientRegistered(client: ClientInfo): void {
    for (const { unit } of this.#entries.values()) unit.hook("onRegister", client);
  }

  /** Calls every plugin's `onDisconnect`. */
  clientDisconnected(client: ClientInfo): void {
    for (const { unit } of this.#entries.values()) unit.hook("onDisconnect", client);
  }

  /**
   * Reads the directory again: loads new files, swaps changed ones once their
   * `init` succeeds, unloads removed ones. A file that fails keeps its old
   * version (if any) and is listed in {@link failures}. Calls run one at a time.
   */
  reload(): Promise<ReloadResult> {
    const run = this.#reloading.then(() => this.#reload());
    this.#reloading = run.catch(() => {});
    return run;
  }

  async #reload(): Promise<ReloadResult> {
    const result: ReloadResult = { loaded: [], replaced: [], removed: [], failed: [] };
    if (this.#closed) return result;
    const { logger, observer } = this.#runtime;
    let files: [string, string][];
    try {
      files = await this.#list();
    } catch (error) {
      const msg = error instanceof Error ? error.message : String(error);
      logger.error("Plugin reload failed", { error: msg });
      result.failed.push({ file: ".", error: msg });
      return result;
    }
    const present = new Set(files.map(([file]) => file));
    for (const [file, entry] of [...this.#entries]) {
      if (present.has(file)) continue;
      this.#entries.delete(file);
      this.#failures.delete(file);
      this.#rebuild();
      this.#retire(entry.unit);
      result.removed.push(file);
      logger.child(`plugin:${entry.unit.name}`).info("Plugin unloaded", { file });
    }
    for (const file of [...this.#failures.keys()]) {
      if (!present.has(file)) this.#failures.delete(file);
    }
    for (const [file, version] of files) {
      const old = this.#entries.get(file);
      if (old?.version === version) continue;
      let unit: PluginUnit | undefined;
      try {
        unit = await this.#start(file, version);
        this.#check(unit, file);
        await unit.init(this.#runtime.config[unit.name]);
      } catch (error) {
        const msg = error instanceof Error ? error.message : String(error);
        if (unit) await unit.close();
        if (this.#failures.get(file) !== msg) {
          observer?.loadFailure?.(file);
          logger.error("Plugin not loaded: the running version (if any) keeps serving", {
            file,
            error: msg,
          });
        }
        this.#failures.set(file, msg);
        result.failed.push({ file, error: msg });
        continue;
      }
      if (this.#closed) {
        await unit.close();
        return result;
      }
      this.#entries.set(file, { unit, version });
      this.#failures.delete(file);
      this.#rebuild();
      if (old) this.#retire(old.unit);
      (old ? result.replaced : result.loaded).push(file);
      logger.child(`plugin:${unit.name}`).info(old ? "Plugin replaced" : "Plugin loaded", {
        file,
        types: unit.types,
      });
    }
    return result;
  }

  /** Whether `unit` may join the running set in place of the version of `file`. */
  #check(unit: PluginUnit, file: string) {
    for (const [other, { unit: running }] of this.#entries) {
      if (other === file) continue;
      if (running.name === unit.name) {
        throw new PluginError(`Plugins "${other}" and "${file}" are both named "${unit.name}"`);
      }
      for (const type of unit.types) {
        if (running.types.includes(type)) {
          throw new PluginError(`Plugins "${other}" and "${file}" both claim type ${type}`);
        }
      }
    }
    for (const type of unit.types) {
      if (BUILT_IN_TYPES.has(type)) {
        throw new PluginError(`Plugin "${file}" claims type ${type}, which is built in`);
      }
    }
  }

  #claim(unit: PluginUnit) {
    for (const type of unit.types) {
      if (BUILT_IN_TYPES.has(type)) {
        throw new PluginError(`Plugin "${unit.file}" claims type ${type}, which is built in`);
      }
      const owner = this.#byType.get(type);
      if (owner) {
        throw new PluginError(`Plugins "${owner.file}" and "${unit.file}" both claim type ${type}`);
      }
      this.#byType.set(type, unit);
    }
  }

  #rebuild() {
    const byType = new Map<number, PluginUnit>();
    for (const { unit } of this.#entries.values()) {
      for (const type of unit.types) byType.set(type, unit);
    }
    this.#byType = byType;
  }

  /** Closes a replaced or removed version once its frames in flight are answered. */
  #retire(unit: PluginUnit) {
    const done = unit.close().catch((error) =>
      this.#runtime.logger.error("Plugin close failed", { file: unit.file, error })
    ).finally(() => this.#retiring.delete(done));
    this.#retiring.add(done);
  }

  /** Plugin files in the directory, sorted, each with a version (a hash of its text). */
  async #list(): Promise<[string, string][]> {
    const { dir, optional } = this.#runtime;
    const path = decodeURIComponent(dir.pathname);
    const names: string[] = [];
    try {
      for await (const entry of Deno.readDir(path)) {
        if (entry.isFile && isPluginFile(entry.name)) names.push(entry.name);
      }
    } catch (error) {
      if (error instanceof Deno.errors.NotFound && optional) return [];
      const reason = error instanceof Deno.errors.NotFound ? "directory not found" : String(error);
      throw new PluginError(`Cannot read plugins directory ${path}: ${reason}`);
    }
    names.sort();
    return await Promise.all(names.map(async (name): Promise<[string, string]> => {
      try {
        const bytes = await Deno.readFile(`${path}${name}`);
        const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
        return [
          name,
          Array.from(hash.slice(0, 12), (b) => b.toString(16).padStart(2, "0")).join(""),
        ];
      } catch {
        return [name, `unreadable-${++this.#versions}`];
      }
    }));
  }

  /** Starts one plugin file: its host process, or an import for `isolation: none`. */
  async #start(file: string, version: string): Promise<PluginUnit> {
    const runtime = this.#runtime;
    const url = new URL(file, runtime.dir).href;
    const base = runtime.logger.child(`plugin:${file}`);
    let unit: PluginUnit | undefined;
    const options = {
      file,
      timeoutMs: runtime.timeoutMs,
      observer: runtime.observer,
      get logger() {
        return unit?.name ? runtime.logger.child(`plugin:${unit.name}`) : base;
      },
      send: (frame: PluginSend, sender: Connection | undefined) => this.#send(unit!, frame, sender),
      isOnline: runtime.isOnline,
    };
    const path = decodeURIComponent(runtime.dir.pathname);
    if (runtime.denoPath) {
      const own = [`${path}${file}`];
      for await (const entry of Deno.readDir(path)) {
        if (entry.name.startsWith("_")) own.push(`${path}${entry.name}`);
      }
      const hosted = await loadProcessPlugin(Object.defineProperties({
        url,
        denoPath: runtime.denoPath,
        maxHeapMb: runtime.maxHeapMb,
        maxSendsInFlight: runtime.maxSendsInFlight,
        logLinesPerMinute: runtime.logLinesPerMinute,
        ownFiles: own,
        grantsFor: (name: string) => runtime.permissions[name],
      }, Object.getOwnPropertyDescriptors(options)) as ProcessPluginOptions);
      unit = hosted;
      if (hosted.grants?.isolation !== "none") return hosted;
      await hosted.close(); // trusted: it runs in the server's process
    }
    // A changed file gets a new URL, or the module cache would hand back the old version.
    const versioned = this.#entries.has(file) || this.#failures.has(file)
      ? `${url}?v=${version}`
      : url;
    let module: Record<string, unknown>;
    try {
      module = await import(versioned);
    } catch (error) {
      throw new PluginError(`Cannot load plugin "${file}": ${describeImportError(error)}`);
    }
    unit = new InProcessPlugin(validatePlugin(file, module), options);
    return unit;
  }

  async #send(unit: PluginUnit, frame: PluginSend, sender?: Connection): Promise<SendResult> {
    const { delivery, maxRecipients } = this.#runtime;
    if (NOT_SENDABLE.has(frame.type)) throw new Error(`Plugins cannot send type ${frame.type}`);
    const parsed = parseRecipients(frame.to, { max: maxRecipients });
    if (!parsed.ok) throw new Error(`Cannot send to ${JSON.stringify(frame.to)}: ${parsed.msg}`);
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
    const store = frame.store !== false && !unit.ephemeral.has(frame.type);
    const { duplicate, overQuota } = await delivery.send(
      { sender: from, id, type: frame.type, recipients, text, store },
      system ? undefined : sender,
    );
    if (overQuota) {
      throw new Error(
        `Too many undelivered messages from ${from}: limits.maxPendingBytesPerSender`,
      );
    }
    return { id, duplicate };
  }

  /** Reloads whenever the directory changes (`plugins.watch`). */
  watch(): void {
    if (this.#watcher || this.#closed) return;
    const path = decodeURIComponent(this.#runtime.dir.pathname);
    this.#watcher = watchPlugins(path, () => this.reload(), this.#runtime.logger.child("plugins"));
  }

  /** Calls every plugin's `close`, after the frames in flight. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#watcher?.close();
    await this.#reloading;
    const units = [...this.#entries.values()].map(({ unit }) => unit);
    this.#entries.clear();
    this.#byType.clear();
    await Promise.all([...units.map((unit) => unit.close()), ...this.#retiring]);
  }
}
