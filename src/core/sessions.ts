/**
 * WebSocket login sessions: a sessionId is issued after HTTP login and
 * redeemed once by a 1000 register frame.
 *
 * @module
 */

/** Who a sessionId was issued to. */
export interface LoginSession {
  userId: string;
  clientName: string;
}

/**
 * Issues and redeems sessionIds. Guarantees: an id is unguessable (≥ 128
 * random bits), redeemable once across every instance sharing the store, and
 * not after `ttlSeconds`.
 */
export interface SessionStore {
  /** A new sessionId for (userId, clientName). */
  issue(session: LoginSession): Promise<string>;
  /** The session, consumed; undefined when unknown, expired or already used. */
  redeem(sessionId: string): Promise<LoginSession | undefined>;
  close(): Promise<void>;
}
