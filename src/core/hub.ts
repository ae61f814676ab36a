/**
 * The hub: the registered connections of this instance, by user and client.
 * It knows nothing of other instances (that is the broker's job) nor of the
 * WebSocket API (the transport adapts sockets to {@link Connection}).
 *
 * @module
 */
import type { MessageKey } from "./store.ts";

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
}

/** Live frames held back while a connection replays its stored messages. */
interface Replay {
  buffer: { stored?: MessageKey; text: string }[];
  /** `sender\0id` of every message the replay sent. */
  replayed: Set<string>;
}

const keyOf = (key: MessageKey) => `${key.sender}\u0000${key.id}`;

/** The registered connections of this instance. */
export class Hub {
  #users = new Map<string, Map<string, Connection>>();
  #replays = new Map<number, Replay>();
  #count = 0;

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
    this.#replays.set(conn.id, { buffer: [], replayed: new Set() });
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
   * Sends a frame to every connection of `userId` except `exceptId`. A
   * connection still replaying stored messages gets it after the replay, unless
   * the replay already carried the `stored` message. Returns how many
   * connections were reached.
   */
  deliver(userId: string, text: string, exceptId = -1, stored?: MessageKey): number {
    const clients = this.#users.get(userId);
    if (!clients) return 0;
    let reached = 0;
    const replaying = this.#replays.size > 0;
    for (const conn of clients.values()) {
      if (conn.id === exceptId) continue;
      const replay = replaying ? this.#replays.get(conn.id) : undefined;
      if (replay) replay.buffer.push({ stored, text });
      else conn.send(text);
      reached++;
    }
    return reached;
  }

  /** Sends a stored message during the replay of `conn` and remembers it. */
  replay(conn: Connection, message: MessageKey & { text: string }): void {
    this.#replays.get(conn.id)?.replayed.add(keyOf(message));
    conn.send(message.text);
  }

  /** Ends the replay of `conn`: sends the live frames it held back, skipping replayed ones. */
  endReplay(conn: Connection): void {
    const replay = this.#replays.get(conn.id);
    if (!replay) return;
    this.#replays.delete(conn.id);
    for (const { stored, text } of replay.buffer) {
      if (!stored || !replay.replayed.has(keyOf(stored))) conn.send(text);
    }
  }
}
