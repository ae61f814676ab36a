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

/** Deletes the session only when it belongs to ARGV[1]; returns its value either way. */
const REDEEM = `local v = redis.call("GET", KEYS[1])
if v and cjson.decode(v)[1] == ARGV[1] then redis.call("DEL", KEYS[1]) end
return v`;

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

  async peek(sessionId: string): Promise<LoginSession | undefined> {
    return parse(await guard("Session store", () => this.#client.get(PREFIX + sessionId)));
  }

  async redeem(sessionId: string, userId: string): Promise<LoginSession | undefined> {
    const value = await guard(
      "Session store",
      () => this.#client.eval(REDEEM, { keys: [PREFIX + sessionId], arguments: [userId] }),
    );
    const session = parse(value);
    return session?.userId === userId ? session : undefined;
  }

  close(): Promise<void> {
    return closeRedis(this.#client);
  }
}

function parse(value: unknown): LoginSession | undefined {
  if (typeof value !== "string") return undefined;
  const [userId, clientName] = JSON.parse(value) as [string, string];
  return { userId, clientName };
}
