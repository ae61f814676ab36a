/**
 * The hub: the registered connections of this instance, by user and client.
 * It knows nothing of other instances (that is the broker's job) nor of the
 * WebSocket API (the transport adapts sockets to {@link Connection}).
 *
 * @module
 */

/** A registered connection, as the core sees it. */
export interface Connection {
  /** Unique on this instance. */
  readonly id: number;
  readonly userId: string;
  readonly clientName: string;
  /** When it registered, ms since the epoch. */
  readonly since: number;
  /** Sends one text frame; never throws. */
  send(text: string): void;
  /** Closes the connection; never throws. */
  close(code: number, reason: string): void;
  /**
   * Resolves once the connection has room for more (its unsent data is below
   * the cap): true, or false when it closed meanwhile.
   */
  drain(): Promise<boolean>;
  /** Bytes sent to the connection that its socket has not written yet. */
  buffered?(): number;
}

/**
 * A connection replaying its stored messages. Live copies of stored messages
 * are not held: they are in the store, after the replay's cursor, and the
 * replay reads on until no such copy arrived during its last page. Other live
 * frames (own copies, receipts, unstored frames) wait in `buffer`.
 */
interface Replay {
  buffer: string[];
  /** Characters in `buffer`. */
  bytes: number;
  /** Live copies of stored messages that arrived since {@link Hub.pageRead}. */
  arrivals: number;
}

/** Options of {@link Hub}. */
export interface HubOptions {
  /**
   * Most characters of live frames held for a replaying connection, together
   * with what its socket has not sent yet (`limits.maxBufferedBytes`); past it
   * the connection is closed with 1013. @default 8388608
   */
  maxQueuedBytes?: number;
}

/** The registered connections of this instance. */
export class Hub {
  #users = new Map<string, Map<string, Connection>>();
  #replays = new Map<number, Replay>();
  #count = 0;
  #maxQueued: number;

  constructor(options: HubOptions = {}) {
    this.#maxQueued = options.maxQueuedBytes ?? 8 * 1024 * 1024;
  }

  /** Number of registered connections. */
  get size(): number {
    return this.#count;
  }

  /** Number of users with at least one registered connection. */
  get userCount(): number {
    return this.#users.size;
  }

  /**
   * Adds a registered connection, in replay mode (see {@link endReplay}).
   * Returns the connection it replaces (same user and clientName), if any;
   * the caller closes it.
   */
  add(conn: Connection): Connection | undefined {
    let clients = this.#users.get(conn.userId);
    if (!clients) this.#users.set(conn.userId, clients = new Map());
    const previous = clients.get(conn.clientName);
    if (previous) this.#replays.delete(previous.id);
    else this.#count++;
    clients.set(conn.clientName, conn);
    this.#replays.set(conn.id, { buffer: [], bytes: 0, arrivals: 0 });
    return previous;
  }

  /** Removes a connection unless a newer one has replaced it. True when it was there. */
  remove(conn: Connection): boolean {
    this.#replays.delete(conn.id);
    const clients = this.#users.get(conn.userId);
    if (clients?.get(conn.clientName) !== conn) return false;
    clients.delete(conn.clientName);
    if (clients.size === 0) this.#users.delete(conn.userId);
    this.#count--;
    return true;
  }

  /** The registered connections of a user. */
  connectionsOf(userId: string): Iterable<Connection> {
    return this.#users.get(userId)?.values() ?? [];
  }

  /** Whether a user has a registered connection here. */
  isOnline(userId: string): boolean {
    return this.#users.has(userId);
  }

  /** Every user with a connection here. */
  users(): Iterable<string> {
    return this.#users.keys();
  }

  /** Every registered connection. */
  *connections(): Iterable<Connection> {
    for (const clients of this.#users.values()) yield* clients.values();
  }

  /**
   * Sends a frame to every connection of `userId` except `exceptId`. `stored`:
   * the frame is a copy of a message stored for `userId`; a connection still
   * replaying gets it from its replay, and other frames after the replay.
   * Returns how many connections were reached.
   */
  deliver(userId: string, text: string, exceptId = -1, stored = false): number {
    const clients = this.#users.get(userId);
    if (!clients) return 0;
    let reached = 0;
    const replaying = this.#replays.size > 0;
    for (const conn of clients.values()) {
      if (conn.id === exceptId) continue;
      const replay = replaying ? this.#replays.get(conn.id) : undefined;
      if (!replay) conn.send(text);
      else if (stored) replay.arrivals++;
      else this.#hold(conn, replay, text);
      reached++;
    }
    return reached;
  }

  /** Holds a live frame for a replaying connection, within its budget. */
  #hold(conn: Connection, replay: Replay, text: string): void {
    replay.buffer.push(text);
    replay.bytes += text.length;
    if (replay.bytes + (conn.buffered?.() ?? 0) <= this.#maxQueued) return;
    this.#replays.delete(conn.id);
    conn.close(1013, "slow consumer");
  }

  /**
   * The replay of `conn` is about to read a page: counts live copies of stored
   * messages from now on. False when the connection is no longer replaying
   * (closed or replaced).
   */
  pageRead(conn: Connection): boolean {
    const replay = this.#replays.get(conn.id);
    if (!replay) return false;
    replay.arrivals = 0;
    return true;
  }

  /** Whether live copies of stored messages reached `conn` since its last {@link pageRead}. */
  arrived(conn: Connection): boolean {
    return (this.#replays.get(conn.id)?.arrivals ?? 0) > 0;
  }

  /** Ends the replay of `conn`: sends the live frames it held back. */
  endReplay(conn: Connection): void {
    const replay = this.#replays.get(conn.id);
    if (!replay) return;
    this.#replays.delete(conn.id);
    for (const text of replay.buffer) conn.send(text);
  }
}
