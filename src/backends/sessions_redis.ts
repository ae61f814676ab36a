/**
 * Redis {@link SessionStore}: a sessionId issued by any instance is redeemable
 * once on any instance.
 *
 * @module
 */
import { randomId } from "../auth/base64.ts";
import type { LoginSession, SessionStore } from "../core/sessions.ts";
import { closeRedis, guard, KEY_PREFIX, type RedisClient } from "./redis.ts";

const PREFIX = `${KEY_PREFIX}session:`;

/**
 * Keeps each sessionId as a key with an expiry (`SET … EX`); redeeming reads
 * and deletes it in one command (`GETDEL`), so two instances racing for the
 * same id cannot both win.
 */
export class RedisSessionStore implements SessionStore {
  #client: RedisClient;
  #ttlSeconds: number;

  /** Takes ownership of `client` (closed by {@link close}). */
  constructor(client: RedisClient, ttlSeconds: number) {
    this.#client = client;
    this.#ttlSeconds = ttlSeconds;
  }

  async issue(session: LoginSession): Promise<string> {
    const id = randomId(32);
    const value = JSON.stringify([session.userId, session.clientName]);
    await guard("Session store", () =>
      this.#client.set(PREFIX + id, value, {
        expiration: { type: "EX", value: this.#ttlSeconds },
      }));
    return id;
  }

  async redeem(sessionId: string): Promise<LoginSession | undefined> {
    const value = await guard("Session store", () => this.#client.getDel(PREFIX + sessionId));
    if (typeof value !== "string") return undefined;
    const [userId, clientName] = JSON.parse(value) as [string, string];
    return { userId, clientName };
  }

  close(): Promise<void> {
    return closeRedis(this.#client);
  }
}
