/**
 * What `@im/server` is inside a plugin host process: the plugin API only
 * (codes, types, `definePlugin`), so that a host does not load the whole server.
 *
 * @module
 */
export {
  BUILT_IN_TYPES,
  MessageType,
  StatusCode,
  type StatusCodeValue,
  type StatusName,
  statusName,
  SYSTEM,
} from "../protocol/codes.ts";
export type { Message, NoticeBody, StatusBody } from "../protocol/frame.ts";
export {
  type ClientInfo,
  definePlugin,
  type Plugin,
  type PluginBaseContext,
  type PluginConfigSchema,
  type PluginContext,
  type PluginSend,
  type PluginStatus,
  type SendResult,
} from "./types.ts";
export type { Logger } from "../log.ts";
