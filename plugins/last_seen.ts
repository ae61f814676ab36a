/**
 * Presence and "last seen": type 5201 asks about the users in `to`; the
 * answer comes back to the asking user's connections as a system frame of type 5202 whose
 * body is `{"<userId>": {"online": bool, "lastSeen": ms | null}}`. It keeps
 * its state from the register and disconnect hooks (this instance only).
 *
 * @module
 */
import { definePlugin } from "@im/server";

/** Type code of a presence query. */
export const PRESENCE_QUERY = 5201;
/** Type code of the answer. */
export const PRESENCE_ANSWER = 5202;

/** Registered clientNames per user. */
const online = new Map<string, Set<string>>();
const lastSeen = new Map<string, number>();

export default definePlugin({
  name: "last-seen",
  types: [PRESENCE_QUERY],
  onRegister(client) {
    let clients = online.get(client.userId);
    if (!clients) online.set(client.userId, clients = new Set());
    clients.add(client.clientName);
  },
  onDisconnect(client) {
    const clients = online.get(client.userId);
    clients?.delete(client.clientName);
    if (clients?.size === 0) online.delete(client.userId);
    lastSeen.set(client.userId, Date.now());
  },
  async handle(message, ctx) {
    const answer: Record<string, { online: boolean; lastSeen: number | null }> = {};
    for (const user of message.to.split(",")) {
      answer[user] = { online: online.has(user), lastSeen: lastSeen.get(user) ?? null };
    }
    await ctx.send({
      id: `${message.id}:answer`,
      type: PRESENCE_ANSWER,
      to: ctx.sender.userId,
      body: answer,
      asSystem: true,
      store: false,
    });
  },
  close() {
    online.clear();
    lastSeen.clear();
  },
});
