/**
 * Redis {@link SessionStore}: a sessionId issued by any instance is redeemable
 * once on any instance.
 *
 * @module
 */
import { randomId } from "../auth/base64.ts";
import type { LoginSession, SessionStore } from "../core/sessions.ts";
import { guard, KEY_PREFIX, linkOf, type RedisClient, type RedisLink } from "./redis.ts";

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
  #link: RedisLink;
  #ttlSeconds: number;

  /** Takes ownership of `client` (closed by {@link close}). */
  constructor(client: RedisClient | RedisLink, ttlSeconds: number) {
    this.#link = linkOf(client);
    this.#ttlSeconds = ttlSeconds;
  }

  async issue(session: LoginSession): Promise<string> {
    const id = randomId(32);
    const value = JSON.stringify([session.userId, session.clientName]);
    const key = PREFIX + id;
    await guard(
      "Session store",
      () => this.#link.send(key, ["SET", key, value, "EX", String(this.#ttlSeconds)]),
    );
    return id;
  }

  async peek(sessionId: string): Promise<LoginSession | undefined> {
    const key = PREFIX + sessionId;
    return parse(await guard("Session store", () => this.#link.send(key, ["GET", key])));
  }

  async redeem(sessionId: string, userId: string): Promise<LoginSession | undefined> {
    const key = PREFIX + sessionId;
    const value = await guard(
      "Session store",
      () => this.#link.send(key, ["EVAL", REDEEM, "1", key, userId]),
    );
    const session = parse(value);
    return session?.userId === userId ? session : undefined;
  }

  close(): Promise<void> {
    return this.#link.close();
  }
}

function parse(value: unknown): LoginSession | undefined {
  if (typeof value !== "string") return undefined;
  const [userId, clientName] = JSON.parse(value) as [string, string];
  return { userId, clientName };
}
