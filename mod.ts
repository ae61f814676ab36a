/**
 * deno-im: a Deno-native instant-messaging server.
 *
 * For clients: {@link connect} and {@link ImClient}. For plugin authors: {@link definePlugin}, the {@link Plugin} types,
 * {@link MessageType} and {@link StatusCode}. For embedding: {@link createServer}
 * with a config from {@link loadConfig} or {@link parseConfig}.
 *
 * @example
 * ```ts
 * import { createServer, parseConfig } from "@im/server";
 *
 * const server = await createServer(parseConfig({
 *   websocket: { port: 0 },
 *   storage: { driver: "memory" },
 * }, "inline"));
 * console.log(server.url);
 * await server.close();
 * ```
 *
 * @module
 */
// The plugin API (codes, frame types, definePlugin): the same module a plugin host loads.
export * from "./src/plugins/api.ts";
export { createServer, type ImServer, type ServerOptions } from "./src/server.ts";
export { ConfigError, loadConfig, parseConfig } from "./src/config/load.ts";
export type { Config, ConfigInput } from "./src/config/schema.ts";
export {
  ClosedError,
  connect,
  HttpError as ClientHttpError,
  ImClient,
  ImError,
  login,
  randomId,
  StatusError,
  tokenSubject,
} from "./src/client/client.js";
export type {
  ClientEventMap,
  ClientOptions,
  ConnectionState,
  FrameEvent,
  NoticeEvent,
  NoticeOptions,
  ReceiptEvent,
  ReconnectOptions,
  SendOptions,
  StateEvent,
  StatusEvent,
} from "./src/client/client.js";
