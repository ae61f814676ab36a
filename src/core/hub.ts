/**
 * The hub: this instance's connections. It holds every open one (to close
 * them all at shutdown) and the registered ones by user and client (to deliver
 * frames and to kick). It knows nothing of other instances (that is the
 * broker's job) nor of the WebSocket API (the transport adapts sockets).
 *
 * @module
 */
import type { Kick } from "./broker.ts";
import type { MessageKey, StoredMessage } from "./store.ts";

/** A registered connection, as the core sees it. */
export interface Connection {
  /** Unique on this instance. */
  readonly id: number;
  readonly userId: string;
  readonly clientName: string;
  /** When it registered, ms since the epoch. */
  readonly since: number;
  /**
   * Sends a live frame; never throws. While the connection replays its stored
   * messages the frame waits until the replay ends, and is skipped when it
   * carries a `stored` message the replay already sent.
   */
  deliver(text: string, stored?: MessageKey): void;
  /** Sends a stored message during the replay. */
  replay(message: StoredMessage): void;
  /** Ends the replay: sends the live frames that waited. */
  endReplay(): void;
  /** Closes the connection; never throws. */
  close(code: number, reason: string): void;
  /**
   * Resolves once the connection has room for more (its unsent data is below
   * the cap): true, or false when it closed meanwhile.
   */
  drain(): Promise<boolean>;
}

/** An open connection, registered or not, as the hub sees it at shutdown. */
export interface OpenConnection {
  close(code: number, reason: string): void;
}

/**
 * The connections of this instance. A user's registered connections are an
 * array, not a map by clientName: a user has few, the delivery loop walks it
 * without an iterator object per recipient, and an array of one costs a third
 * of a map of one (bench/README.md).
 */
export class Hub {
  #users = new Map<string, Connection[]>();
  #count = 0;
  #open = new Set<OpenConnection>();
  /** Waiters of {@link closeAll}. */
  #drained: (() => void)[] = [];
  #instance: string;

  /** `instance`: this instance's id, to recognise a kick's `except`. */
  constructor(instance: string) {
    this.#instance = instance;
  }

  /** Number of registered connections. */
  get size(): number {
    return this.#count;
  }

  /** Number of users with at least one registered connection. */
  get userCount(): number {
    return this.#users.size;
  }

  /** Number of open connections, registered or not. */
  get openCount(): number {
    return this.#open.size;
  }

  /** A connection opened. */
  opened(conn: OpenConnection): void {
    this.#open.add(conn);
  }

  /** A connection closed. */
  closed(conn: OpenConnection): void {
    if (!this.#open.delete(conn)) return;
    if (this.#open.size === 0) { for (const resolve of this.#drained.splice(0)) resolve(); }
  }

  /** Closes every open connection; resolves once they have all closed. */
  closeAll(code: number, reason: string): Promise<void> {
    for (const conn of this.#open) conn.close(code, reason);
    if (this.#open.size === 0) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#drained.push(resolve);
    return promise;
  }

  /**
   * Adds a registered connection. Returns the connection it replaces (same
   * user and clientName), if any; the caller closes it.
   */
  add(conn: Connection): Connection | undefined {
    const clients = this.#users.get(conn.userId);
    if (!clients) {
      this.#users.set(conn.userId, [conn]);
      this.#count++;
      return undefined;
    }
    const at = clients.findIndex((c) => c.clientName === conn.clientName);
    if (at < 0) {
      clients.push(conn);
      this.#count++;
      return undefined;
    }
    const previous = clients[at];
    clients[at] = conn;
    return previous;
  }

  /** Removes a connection unless a newer one has replaced it. True when it was there. */
  remove(conn: Connection): boolean {
    const clients = this.#users.get(conn.userId);
    const at = clients ? clients.indexOf(conn) : -1;
    if (at < 0) return false;
    if (clients!.length === 1) this.#users.delete(conn.userId);
    else clients!.splice(at, 1);
    this.#count--;
    return true;
  }

  /** The registered connections of a user (a snapshot: safe to close them while iterating). */
  connectionsOf(userId: string): Iterable<Connection> {
    return this.#users.get(userId)?.slice() ?? [];
  }

  /** Whether a user has a registered connection here. */
  isOnline(userId: string): boolean {
    return this.#users.has(userId);
  }

  /**
   * Sends a frame to every connection of `userId` except `exceptId` (see
   * {@link Connection.deliver}). Returns how many connections were reached.
   */
  deliver(userId: string, text: string, exceptId = -1, stored?: MessageKey): number {
    const clients = this.#users.get(userId);
    if (!clients) return 0;
    if (clients.length === 1) {
      const conn = clients[0];
      if (conn.id === exceptId) return 0;
      conn.deliver(text, stored);
      return 1;
    }
    let reached = 0;
    // No copy: a connection leaves the list only when its socket has closed, never in `deliver`.
    for (let i = 0; i < clients.length; i++) {
      const conn = clients[i];
      if (conn.id === exceptId) continue;
      conn.deliver(text, stored);
      reached++;
    }
    return reached;
  }

  /** Closes the connections a kick names on this instance, sparing its `except`. */
  kick(kick: Kick): void {
    const spare = kick.except?.instance === this.#instance ? kick.except.conn : -1;
    for (const conn of this.connectionsOf(kick.userId)) {
      if (kick.clientName !== undefined && conn.clientName !== kick.clientName) continue;
      if (conn.id === spare) continue;
      conn.close(kick.code, kick.reason);
    }
  }
}
