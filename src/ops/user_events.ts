/**
 * `user.online` and `user.offline` events: a user is online from its first
 * registered connection, and offline once it has had none for the grace
 * period, so a quick reconnect (a phone changing networks) sends nothing.
 *
 * @module
 */
import type { Presence } from "../core/presence.ts";
import type { Logger } from "../log.ts";

/** What a user event goes to (the webhooks). */
export type UserEventSink = (
  type: "user.online" | "user.offline",
  data: Record<string, unknown>,
) => void;

/** Options of {@link UserActivity}. */
export interface UserActivityOptions {
  presence: Presence;
  /** Seconds a user must stay without connections before `user.offline`. */
  graceSeconds: number;
  emit: UserEventSink;
  logger: Logger;
}

/**
 * Turns connection registers and disconnects into online and offline events.
 * Its state is this instance's: with several instances, each reports the
 * users it serves (the offline check consults the shared presence, so a user
 * who moved to another instance is not reported offline).
 */
export class UserActivity {
  #options: UserActivityOptions;
  /** Users reported online and not reported offline since. */
  #online = new Set<string>();
  /** Users waiting out the grace period, with their timer. */
  #pending = new Map<string, ReturnType<typeof setTimeout>>();
  #closed = false;

  constructor(options: UserActivityOptions) {
    this.#options = options;
  }

  /** A connection of `userId` registered. */
  registered(userId: string, clientName: string): void {
    if (this.#closed) return;
    const timer = this.#pending.get(userId);
    if (timer !== undefined) {
      clearTimeout(timer);
      this.#pending.delete(userId);
    }
    if (this.#online.has(userId)) return;
    this.#online.add(userId);
    this.#options.emit("user.online", { userId, clientName });
  }

  /** A connection of `userId` went away; `stillOnline` says if it has others here. */
  disconnected(userId: string, stillOnline: boolean): void {
    if (this.#closed || stillOnline || this.#pending.has(userId)) return;
    const since = Date.now();
    const timer = setTimeout(() => {
      this.#pending.delete(userId);
      this.#check(userId, since);
    }, this.#options.graceSeconds * 1000);
    this.#pending.set(userId, timer);
  }

  async #check(userId: string, since: number) {
    try {
      const found = await this.#options.presence.lookup([userId]);
      if (this.#closed || found.has(userId) || this.#pending.has(userId)) return;
    } catch (error) {
      this.#options.logger.warn("Presence lookup failed: reporting offline anyway", {
        userId,
        error,
      });
    }
    if (!this.#online.delete(userId)) return;
    this.#options.emit("user.offline", { userId, since });
  }

  /** Stops; users waiting out their grace period are not reported. */
  close(): void {
    this.#closed = true;
    for (const timer of this.#pending.values()) clearTimeout(timer);
    this.#pending.clear();
  }
}
