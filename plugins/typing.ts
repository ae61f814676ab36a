/**
 * Typing indicator: type 5101 with body `"start"` or `"stop"`, relayed live to
 * the users in `to` and never stored (an offline user has nothing to see).
 *
 * @module
 */
import { definePlugin, StatusCode } from "@im/server";

/** Type code of a typing indicator. */
export const TYPING = 5101;

export default definePlugin({
  name: "typing",
  types: [TYPING],
  ephemeral: [TYPING],
  async handle(message, ctx) {
    if (message.body !== "start" && message.body !== "stop") {
      return { code: StatusCode.BODY_ERROR, msg: 'Body must be "start" or "stop"' };
    }
    await ctx.send({
      id: message.id,
      type: TYPING,
      to: message.to,
      body: message.body,
      store: false,
    });
  },
});
