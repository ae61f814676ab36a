/**
 * In-memory {@link Presence} for a single instance.
 *
 * @module
 */
import type { Presence, PresenceEntry } from "../core/presence.ts";

/**
 * Registered clients of this instance, by user and client. An entry is
 * removed only by the connection that added it (same instance, clientName and
 * `since`), so the late disconnect of a replaced connection keeps the newer one.
 */
export class MemoryPresence implements Presence {
  #users = new Map<string, Map<string, PresenceEntry>>();

  add(entry: PresenceEntry): Promise<void> {
    let clients = this.#users.get(entry.userId);
    if (!clients) this.#users.set(entry.userId, clients = new Map());
    clients.set(clientKey(entry), { ...entry });
    return Promise.resolve();
  }

  remove(entry: PresenceEntry): Promise<void> {
    const clients = this.#users.get(entry.userId);
    const key = clientKey(entry);
    if (clients?.get(key)?.since === entry.since) {
      clients.delete(key);
      if (clients.size === 0) this.#users.delete(entry.userId);
    }
    return Promise.resolve();
  }

  lookup(userIds: string[]): Promise<Map<string, PresenceEntry[]>> {
    const found = new Map<string, PresenceEntry[]>();
    for (const userId of userIds) {
      const clients = this.#users.get(userId);
      if (clients) found.set(userId, [...clients.values()].map((entry) => ({ ...entry })));
    }
    return Promise.resolve(found);
  }

  onlineUsers(): Promise<string[]> {
    return Promise.resolve([...this.#users.keys()]);
  }

  close(): Promise<void> {
    this.#users.clear();
    return Promise.resolve();
  }
}

function clientKey(entry: PresenceEntry): string {
  return `${entry.instance}/${entry.clientName}`;
}
