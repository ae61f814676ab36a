/**
 * The messages between the server and a plugin host process.
 *
 * @module
 */
import type { Message } from "../protocol/frame.ts";
import type { LogLevel } from "../log.ts";
import type { ClientInfo, PluginSend, PluginStatus } from "./types.ts";

/** An error as it crosses the pipe. */
export interface ErrorInfo {
  message: string;
  stack?: string;
}

/** From the server to the host. */
export type ServerMessage =
  | { t: "init"; config: unknown }
  | { t: "call"; id: number; message: Message; sender: ClientInfo }
  | { t: "abort"; id: number }
  | { t: "hook"; name: "onRegister" | "onDisconnect"; client: ClientInfo }
  | { t: "reply"; rid: number; value?: unknown; error?: string }
  | { t: "ping" }
  | { t: "close" };

/** From the host to the server. */
export type HostMessage =
  | {
    t: "loaded";
    name: string;
    types: number[];
    ephemeral: number[];
    hooks: ("onRegister" | "onDisconnect")[];
  }
  | { t: "failed"; error: string }
  | { t: "ready" }
  | { t: "initFailed"; error: string; path?: string[] }
  | { t: "result"; id: number; result?: PluginStatus | void; error?: ErrorInfo }
  | { t: "hookError"; name: string; error: ErrorInfo }
  | { t: "send"; rid: number; call?: number; frame: PluginSend }
  | { t: "isOnline"; rid: number; userId: string }
  | { t: "log"; level: LogLevel; msg: string; fields?: Record<string, unknown> }
  | { t: "pong" }
  | { t: "closed" };
