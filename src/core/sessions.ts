/**
 * One-time WebSocket sessionIds (PROTOCOL.md section 3): issued by the login
 * routes, redeemed by a register. The in-memory store serves one instance; the
 * Redis store serves several.
 *
 * @module
 */

/** What a sessionId stands for. */
export interface LoginSession {
  userId: string;
  clientName: string;
}

/**
 * Issues and redeems sessionIds.
 *
 * Guarantees: a sessionId is redeemed at most once, and only by its own user
 * (a register with another `from` leaves it usable: PROTOCOL.md section 10);
 * it expires `auth.sessionTtlSeconds` after it was issued, redeemed or not.
 */
export interface SessionStore {
  /** Issues a new sessionId (at least 128 random bits). */
  issue(session: LoginSession): Promise<string>;
  /** What a valid sessionId stands for, without using it up. */
  peek(sessionId: string): Promise<LoginSession | undefined>;
  /** Uses up `sessionId` when it is valid and belongs to `userId`; undefined otherwise. */
  redeem(sessionId: string, userId: string): Promise<LoginSession | undefined>;
  close(): Promise<void>;
}
