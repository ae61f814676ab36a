/**
 * Group chat: type 5001, addressed to a group id. Members come from this
 * plugin's config; the frame fans out to every other member through the normal
 * delivery path (stored for offline members, receipts work, the sender's other
 * devices get a copy).
 *
 * ```yaml
 * plugins:
 *   config:
 *     group-chat:
 *       groups:
 *         team-a: [u1, u2, u3]
 * ```
 *
 * Send `{"id":"g1","type":5001,"isSystem":false,"from":"u1","to":"team-a","body":"hello"}`;
 * members receive the frame with `to: "team-a"` and acknowledge it with a 9101
 * to `u1` like any message.
 *
 * @module
 */
import { z } from "zod";
import { definePlugin, StatusCode } from "@im/server";

/** Type code of a group message. */
export const GROUP_MESSAGE = 5001;

export default definePlugin({
  name: "group-chat",
  types: [GROUP_MESSAGE],
  configSchema: z.object({
    groups: z.record(z.string(), z.array(z.string().min(1)).min(1)).default({}),
  }),
  init(ctx) {
    const count = Object.keys(ctx.config.groups).length;
    ctx.logger.info("Groups configured", { count });
  },
  async handle(message, ctx) {
    const members = ctx.config.groups[message.to];
    if (!members) return { code: StatusCode.TO_ERROR, msg: `Unknown group "${message.to}"` };
    if (!members.includes(ctx.sender.userId)) {
      return { code: StatusCode.TO_ERROR, msg: `You are not a member of "${message.to}"` };
    }
    if (message.body === "") return { code: StatusCode.BODY_ERROR, msg: "Text body is empty" };
    const others = members.filter((member) => member !== ctx.sender.userId);
    if (others.length === 0) return;
    await ctx.send({
      id: message.id,
      type: GROUP_MESSAGE,
      to: others,
      toField: message.to,
      body: message.body,
    });
  },
});
