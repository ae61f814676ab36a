/**
 * A plugin is a plain object: its unit tests call `handle` with a context of
 * their own, with no server and no host process.
 */
import { assertEquals } from "./_assert.ts";
import groupChat from "../plugins/group_chat.ts";
import type { PluginContext, PluginSend } from "../mod.ts";

function context(config: unknown, sent: PluginSend[]) {
  const logger = { debug() {}, info() {}, warn() {}, error() {}, child: () => logger };
  return {
    config,
    logger,
    state: new Map(),
    sender: { userId: "u1", clientName: "web" },
    signal: new AbortController().signal,
    isOnline: () => Promise.resolve(true),
    send(frame: PluginSend) {
      sent.push(frame);
      return Promise.resolve({ id: frame.id ?? "x", duplicate: false });
    },
  };
}

Deno.test("group-chat's handle fans out to the other members, without a server", async () => {
  const sent: PluginSend[] = [];
  const config = groupChat.configSchema!.safeParse({ groups: { team: ["u1", "u2", "u3"] } });
  if (!config.success) throw new Error("config");
  const ctx = context(config.data, sent) as PluginContext<typeof config.data>;
  const message = {
    id: "g-1",
    type: 5001,
    isSystem: false,
    from: "u1",
    to: "team",
    body: "hi",
    timestamp: 0,
  };
  assertEquals(await groupChat.handle(message, ctx), undefined);
  assertEquals(sent.map((f) => [f.to, f.toField, f.body]), [[["u2", "u3"], "team", "hi"]]);
  const unknown = await groupChat.handle({ ...message, to: "nope" }, ctx);
  assertEquals(unknown?.code, 406);
});
