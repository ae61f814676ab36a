/**
 * Presence and "last seen": type 5201 asks about the users in `to`; the
 * answer comes back to the asking user's connections as a system frame of type 5202 whose
 * body is `{"<userId>": {"online": bool, "lastSeen": ms | null}}`. It keeps
 * its state from the register and disconnect hooks (this instance only), in
 * `ctx.state`, so two servers in one process keep theirs apart.
 *
 * @module
 */
import { definePlugin, type PluginBaseContext } from "@im/server";

/** Type code of a presence query. */
export const PRESENCE_QUERY = 5201;
/** Type code of the answer. */
export const PRESENCE_ANSWER = 5202;

interface Seen {
  /** Registered clientNames per user. */
  online: Map<string, Set<string>>;
  /** When each user's last client went away, ms since the epoch. */
  lastSeen: Map<string, number>;
}

/** This server's state of the plugin, made on first use. */
function seen(ctx: PluginBaseContext<unknown>): Seen {
  let state = ctx.state.get("seen") as Seen | undefined;
  if (!state) ctx.state.set("seen", state = { online: new Map(), lastSeen: new Map() });
  return state;
}

export default definePlugin({
  name: "last-seen",
  types: [PRESENCE_QUERY],
  ephemeral: [PRESENCE_ANSWER],
  onRegister(client, ctx) {
    const { online } = seen(ctx);
    let clients = online.get(client.userId);
    if (!clients) online.set(client.userId, clients = new Set());
    clients.add(client.clientName);
  },
  onDisconnect(client, ctx) {
    const { online, lastSeen } = seen(ctx);
    const clients = online.get(client.userId);
    clients?.delete(client.clientName);
    if (clients?.size === 0) online.delete(client.userId);
    lastSeen.set(client.userId, Date.now());
  },
  async handle(message, ctx) {
    const { online, lastSeen } = seen(ctx);
    const answer: Record<string, { online: boolean; lastSeen: number | null }> = {};
    for (const entry of message.to.split(",")) {
      const user = entry.trim();
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
});
