/**
 * The plugin contract: what a file in `plugins/` exports by default.
 *
 * @module
 */
import type { Message } from "../protocol/frame.ts";
import type { Logger } from "../log.ts";

/** The identity of a registered client. */
export interface ClientInfo {
  userId: string;
  clientName: string;
}

/** The answer a handler may give instead of 200 SUCCESS. */
export interface PluginStatus {
  /** A status code, such as `StatusCode.BODY_ERROR`. */
  code: number;
  /** Readable reason sent in the 9001 body. */
  msg?: string;
}

/** A frame a plugin sends to users through the normal delivery path. */
export interface PluginSend {
  /** Recipient userIds (a list, or a comma-joined string). */
  to: string | readonly string[];
  /** Type code of the frame. */
  type: number;
  /** Body: a string, or an object sent as its JSON string. */
  body: string | Record<string, unknown> | unknown[];
  /** Message id; a random one when absent. A resend with the same id is not delivered twice. */
  id?: string;
  /**
   * Send as the system (`from: "SYSTEM"`, `isSystem: true`) instead of as the
   * sender of the frame being handled. Hooks and `init` always send as the system.
   * @default false
   */
  asSystem?: boolean;
  /** The `to` field recipients see (for example a group id). @default the recipients joined by commas */
  toField?: string;
  /**
   * Store the frame for offline recipients and redeliver it until receipted.
   * `false` makes it live only (typing indicators, presence pings).
   * @default true
   */
  store?: boolean;
}

/** Result of {@link PluginBaseContext.send}. */
export interface SendResult {
  id: string;
  /** True when this id was already accepted from the same sender: nothing was sent again. */
  duplicate: boolean;
}

/** What every plugin callback gets. */
export interface PluginBaseContext<C> {
  /** The plugin's section of `plugins.config`, validated by its `configSchema`. */
  config: C;
  /** A logger whose lines carry the plugin's name. */
  logger: Logger;
  /** Sends a frame to users through the normal delivery path. */
  send(frame: PluginSend): Promise<SendResult>;
  /** Whether a user has a registered connection. */
  isOnline(userId: string): Promise<boolean>;
  /**
   * The plugin's state on this server: the same Map in `init`, `handle` and the
   * hooks, a separate one for every server (keep state here, not in module
   * variables, which every server in the process would share).
   */
  state: Map<string, unknown>;
}

/** The context of {@link Plugin.handle}. */
export interface PluginContext<C> extends PluginBaseContext<C> {
  /** Who sent the frame. */
  sender: ClientInfo;
  /** Aborted when the handler runs past `plugins.timeoutMs` (its 400 is already sent). */
  signal: AbortSignal;
}

/** A schema for the plugin's config section: zod's `safeParse` shape. */
export interface PluginConfigSchema<C> {
  safeParse(value: unknown):
    | { success: true; data: C }
    | { success: false; error: { issues: readonly { path: PropertyKey[]; message: string }[] } };
}

/**
 * A plugin: handles custom message types. The default export of a file in
 * `plugins/`. Build it with {@link definePlugin} for type inference.
 */
export interface Plugin<C = unknown> {
  /** Unique name; also the key of its section in `plugins.config`. */
  name: string;
  /** The custom type codes it handles (not the built-in ones). */
  types: readonly number[];
  /**
   * Types this plugin sends live only: the server never stores them (whatever
   * `store` says) and clients do not acknowledge them. For typing indicators
   * and answers that are useless later.
   */
  ephemeral?: readonly number[];
  /** Validates `plugins.config.<name>`; without it the section is passed as is. */
  configSchema?: PluginConfigSchema<C>;
  /** Runs once at start-up, before any frame. A throw stops start-up. */
  init?(ctx: PluginBaseContext<C>): void | Promise<void>;
  /**
   * Handles an accepted frame of one of its types (after the 401/402/405/406
   * checks). Returning nothing answers 200; returning a status answers it;
   * throwing answers 400 FAILED with the error's message.
   */
  handle(
    message: Message,
    ctx: PluginContext<C>,
  ): void | PluginStatus | Promise<void | PluginStatus>;
  /** A client registered. */
  onRegister?(client: ClientInfo, ctx: PluginBaseContext<C>): void | Promise<void>;
  /**
   * A client is no longer registered. A connection replaced by a newer register
   * of the same (userId, clientName) does not count: its client stays registered.
   */
  onDisconnect?(client: ClientInfo, ctx: PluginBaseContext<C>): void | Promise<void>;
  /** Runs at shutdown. */
  close?(): void | Promise<void>;
}

/**
 * Declares a plugin with full type inference of its config.
 *
 * @example
 * ```ts
 * import { definePlugin, StatusCode } from "@im/server";
 *
 * export default definePlugin({
 *   name: "echo",
 *   types: [5999],
 *   async handle(message, ctx) {
 *     if (message.body === "") return { code: StatusCode.BODY_ERROR, msg: "Empty body" };
 *     await ctx.send({ to: ctx.sender.userId, type: 5999, body: message.body, store: false });
 *   },
 * });
 * ```
 */
export function definePlugin<C = unknown>(plugin: Plugin<C>): Plugin<C> {
  return plugin;
}
