/**
 * Presence: which users have registered connections, on any instance.
 *
 * @module
 */

/** One registered client of a user. */
export interface PresenceEntry {
  userId: string;
  clientName: string;
  /** When it registered, ms since the epoch. */
  since: number;
  /** The instance holding the connection. */
  instance: string;
}

/**
 * Registered clients across instances. The in-memory presence reads this
 * instance's hub; a shared one (Redis) sees every instance. Entries of an
 * instance that died expire (shared presence keeps a heartbeat).
 */
export interface Presence {
  /** Records a registered connection. */
  add(entry: PresenceEntry): Promise<void>;
  /** Forgets a connection that went away. */
  remove(entry: PresenceEntry): Promise<void>;
  /** The registered clients of each of `userIds` (absent: offline). */
  lookup(userIds: string[]): Promise<Map<string, PresenceEntry[]>>;
  /** Every online user (for `all online` pushes); bounded by the number online. */
  onlineUsers(): Promise<string[]>;
  close(): Promise<void>;
}
