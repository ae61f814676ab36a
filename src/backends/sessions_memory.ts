/**
 * In-memory {@link SessionStore} for a single instance.
 *
 * @module
 */
import { randomId } from "../auth/base64.ts";
import type { LoginSession, SessionStore } from "../core/sessions.ts";

interface Entry extends LoginSession {
  expiresAt: number;
}

/** Keeps sessionIds in a map; expired ones are purged as new ones are issued. */
export class MemorySessionStore implements SessionStore {
  #entries = new Map<string, Entry>();
  #ttlMs: number;

  constructor(ttlSeconds: number) {
    this.#ttlMs = ttlSeconds * 1000;
  }

  issue(session: LoginSession): Promise<string> {
    const now = Date.now();
    // Entries are in issue order, so expired ones are at the front.
    for (const [id, entry] of this.#entries) {
      if (entry.expiresAt > now) break;
      this.#entries.delete(id);
    }
    const id = randomId(32);
    this.#entries.set(id, { ...session, expiresAt: now + this.#ttlMs });
    return Promise.resolve(id);
  }

  peek(sessionId: string): Promise<LoginSession | undefined> {
    return Promise.resolve(this.#valid(sessionId));
  }

  redeem(sessionId: string, userId: string): Promise<LoginSession | undefined> {
    const session = this.#valid(sessionId);
    if (session?.userId !== userId) return Promise.resolve(undefined);
    this.#entries.delete(sessionId);
    return Promise.resolve(session);
  }

  #valid(sessionId: string): LoginSession | undefined {
    const entry = this.#entries.get(sessionId);
    if (!entry) return undefined;
    if (entry.expiresAt > Date.now()) return { userId: entry.userId, clientName: entry.clientName };
    this.#entries.delete(sessionId);
    return undefined;
  }

  close(): Promise<void> {
    this.#entries.clear();
    return Promise.resolve();
  }
}
