/**
 * Echo: type 5999 sends the body back to the sending user as a system frame.
 * Handy when writing a client.
 *
 * @module
 */
import { definePlugin, StatusCode } from "@im/server";

export default definePlugin({
  name: "echo",
  types: [5999],
  ephemeral: [5999],
  async handle(message, ctx) {
    if (message.body === "") return { code: StatusCode.BODY_ERROR, msg: "Empty body" };
    await ctx.send({
      id: `${message.id}:echo`,
      type: 5999,
      to: ctx.sender.userId,
      body: message.body,
      asSystem: true,
      store: false,
    });
  },
});
