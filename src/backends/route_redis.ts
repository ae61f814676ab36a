/**
 * Routing deliveries to the instances that hold their users, shared by the
 * Redis store (which stores and routes in one script) and the Redis broker.
 *
 * Presence (`presence_redis.ts`) keeps, per user, a hash whose fields are
 * `<instance>\0<clientName>`: the routing table. {@link ROUTE_LUA} looks up
 * the instances holding a delivery's users in the same script that stores the
 * message, so a register's presence entry is either seen by that script or
 * written after it (and then the register's replay finds the message).
 *
 * On a single Redis the script appends the entry to those instances' streams
 * itself (`inline`). On a Redis Cluster each instance's stream lives in its
 * own slot, which a script of a user group's slot cannot touch: the script
 * returns the instances, and {@link Outbox} appends the entries right after,
 * in the order the calls were made. What that second step can lose (the
 * accepting instance dying between the two) is a live copy only: the message
 * is stored and its recipient gets it from the replay of their next register.
 *
 * Streams are written with `NOMKSTREAM`: an instance creates its own stream
 * when it starts, and the stream of an instance that stopped (deleted when it
 * leaves or expires) is not brought back by a late append.
 *
 * @module
 */
import type { Delivery } from "../core/broker.ts";
import type { MessageKey } from "../core/store.ts";
import type { Logger } from "../log.ts";
import { isUnavailable, KEY_PREFIX, type RedisLink, RedisScripts } from "./redis.ts";
import { deliveryStream, type RedisLayout } from "./redis_layout.ts";

/**
 * A stored message's key as read from a stream entry the store routed: with
 * its sequence and text bytes (the delivery mark then needs no lookup).
 */
export type SequencedKey = MessageKey & { seq?: string; bytes?: string };

/** The text of a stream entry carrying `delivery`. */
export const deliveryEntry = (delivery: Delivery): string => JSON.stringify(["d", delivery]);

/**
 * The text of a stream entry carrying the delivery of a stored message whose
 * frame text `body` goes in a field of its own (not escaped into the JSON).
 */
export const storedEntry = (delivery: Delivery): string =>
  JSON.stringify(["d", { ...delivery, text: undefined }]);

/**
 * Lua: `route(PP, mode, text, max, origin, echo, users, first, seq)` finds
 * the instances holding a presence entry (under prefix `PP`) of
 * `users[first..]`, or of the `echo` user (the sender's other devices, ''
 * for none; the origin's instance is skipped for it when its only entry
 * there is the origin connection itself). With mode 'i' it appends the entry
 * `text` (for a stored message, with its `seq`, text `bytes` and the frame
 * `body` itself, which the entry then leaves out) to their streams. `known`
 * (or nil) maps users to `route_holders` already looked up. Returns the
 * instances.
 */
export const ROUTE_LUA = `
local ROUTE_STREAM = ${JSON.stringify(`${KEY_PREFIX}{inst:`)}
local function route_holders(PP, user)
  local counts = {}
  for _, field in ipairs(redis.call('HKEYS', PP .. 'u:' .. user)) do
    local cut = string.find(field, '\\0', 1, true)
    if cut then
      local instance = string.sub(field, 1, cut - 1)
      counts[instance] = (counts[instance] or 0) + 1
    end
  end
  return counts
end
local function route(PP, mode, text, max, origin, echo, users, first, seq, bytes, body, known)
  local targets = {}
  local recipient = {}
  for i = first, #users do
    recipient[users[i]] = true
    local holders = known and known[users[i]] or route_holders(PP, users[i])
    for instance in pairs(holders) do targets[instance] = true end
  end
  -- A sender with one entry has no other device: that entry is the sending connection's.
  if echo ~= '' and not recipient[echo] and (origin == '' or
      redis.call('HLEN', PP .. 'u:' .. echo) > 1) then
    for instance, n in pairs(route_holders(PP, echo)) do
      if instance ~= origin or n > 1 then targets[instance] = true end
    end
  end
  local out = {}
  for instance in pairs(targets) do
    if mode == 'i' then
      local key = ROUTE_STREAM .. instance .. '}:deliveries'
      if seq then
        redis.call('XADD', key, 'NOMKSTREAM', 'MAXLEN', '~', max, '*', 'e', text, 't', body, 's',
          seq, 'b', bytes)
      else
        redis.call('XADD', key, 'NOMKSTREAM', 'MAXLEN', '~', max, '*', 'e', text)
      end
    end
    out[#out + 1] = instance
  end
  return out
end
`;

/** KEYS[1]: presence prefix of a group. ARGV: mode, entry text, max length, origin, echo, users…. */
const ROUTE = ROUTE_LUA + `
return route(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV, 6, nil)
`;

/** Entries to append once a call's turn comes: the same text (and seq) to each instance. */
export interface Append {
  instances: string[];
  text: string;
  /** The stored message's sequence and text bytes in its group (the delivery mark's). */
  seq?: string;
  bytes?: string;
  /** The frame text, when `text` (a {@link storedEntry}) leaves it out. */
  body?: string;
}

/** Milliseconds between attempts to hand held entries to a stream. */
const RETRY_MS = 250;

/**
 * Appends entries to instance streams in the order their calls were made
 * (`reserve` at the call, `fill` when its scripts answered), so that two
 * messages from one sender reach a stream in the order they were sent even
 * when their scripts ran on different masters.
 *
 * An append that fails because the stream's master is unreachable (it died,
 * and its replica is not serving yet) is held, with every later entry for
 * that stream (up to `cluster.maxHeldDeliveries` per stream, the oldest
 * dropped past it), and tried again every 250 ms until it goes through: the
 * recipients connected to that instance still get their messages live once
 * the failover is done, in order. An instance that stopped meanwhile has no
 * stream any more (`NOMKSTREAM` answers nil): its held entries are dropped.
 */
export class Outbox {
  #link: RedisLink;
  #maxLength: string;
  #logger: Logger;
  #queue: { appends?: Append[]; done: PromiseWithResolvers<void> }[] = [];
  /** Appends (their XADD arguments) waiting for their stream's master, by stream. */
  #held = new Map<string, string[][]>();
  #timer?: ReturnType<typeof setTimeout>;
  #retrying = false;
  #closed = false;
  /** Entries held for one stream while its master cannot be reached, at most (the oldest go). */
  #maxHeld: number;

  constructor(link: RedisLink, maxLength: number, logger: Logger, maxHeld = 10_000) {
    this.#link = link;
    this.#maxLength = String(maxLength);
    this.#logger = logger;
    this.#maxHeld = maxHeld;
  }

  /**
   * Takes the next place in line. Call `fill` on it exactly once (with [] when
   * nothing is to be appended); the promise it returns resolves when its
   * appends are answered or held (a held append is not an error: see above).
   */
  reserve(): { fill(appends: Append[]): Promise<void> } {
    const slot: { appends?: Append[]; done: PromiseWithResolvers<void> } = {
      done: Promise.withResolvers<void>(),
    };
    this.#queue.push(slot);
    return {
      fill: (appends) => {
        slot.appends = appends;
        this.#flush();
        return slot.done.promise;
      },
    };
  }

  /** Entries held for streams whose master could not be reached (for tests and metrics). */
  get held(): number {
    let count = 0;
    for (const entries of this.#held.values()) count += entries.length;
    return count;
  }

  /** Stops retrying; held entries are dropped (their messages are stored). */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#held.clear();
  }

  #flush(): void {
    while (this.#queue.length > 0 && this.#queue[0].appends !== undefined) {
      const { appends, done } = this.#queue.shift()!;
      const sent: Promise<unknown>[] = [];
      for (const { instances, text, seq, bytes, body } of appends!) {
        for (const instance of instances) {
          const stream = deliveryStream(instance);
          const args = [
            "XADD",
            stream,
            "NOMKSTREAM",
            "MAXLEN",
            "~",
            this.#maxLength,
            "*",
            "e",
            text,
          ];
          if (body !== undefined) args.push("t", body);
          if (seq !== undefined) args.push("s", seq, "b", bytes ?? "");
          // Behind entries already held for this stream: they go first.
          if (this.#held.has(stream)) this.#hold(stream, args);
          else sent.push(this.#link.send(stream, args).catch((error) => this.#failed(args, error)));
        }
      }
      if (sent.length === 0) done.resolve();
      else Promise.all(sent).then(() => done.resolve());
    }
  }

  /** An append failed: held for a retry when its master is unreachable, else dropped. */
  #failed(args: string[], error: unknown): void {
    if (this.#closed) return;
    if (!isUnavailable(error)) {
      this.#logger.warn(
        "Could not hand a delivery to an instance: its recipients get it at their next register",
        { error },
      );
      return;
    }
    if (!this.#held.has(args[1])) {
      this.#logger.warn("An instance's stream is unreachable: holding its deliveries", {
        stream: args[1],
        error: error instanceof Error ? error.message : String(error),
      });
    }
    this.#hold(args[1], args);
  }

  #hold(stream: string, args: string[]): void {
    let entries = this.#held.get(stream);
    if (!entries) this.#held.set(stream, entries = []);
    entries.push(args);
    if (entries.length > this.#maxHeld) {
      entries.shift();
      this.#logger.warn(
        "Too many deliveries held for an unreachable stream: the oldest is dropped " +
          "(its recipients get it at their next register)",
        { stream },
      );
    }
    this.#retrySoon();
  }

  #retrySoon(): void {
    if (this.#timer !== undefined || this.#retrying || this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#retry();
    }, RETRY_MS);
  }

  /** Hands each stream's held entries over, oldest first, until one fails again. */
  async #retry(): Promise<void> {
    this.#retrying = true;
    try {
      for (const [stream, entries] of this.#held) {
        while (entries.length > 0 && !this.#closed) {
          try {
            // nil: the stream is gone (its instance stopped); its entries with it.
            if (await this.#link.send(stream, entries[0]) === null) entries.length = 0;
            else entries.shift();
          } catch {
            break;
          }
        }
        if (entries.length === 0) {
          this.#held.delete(stream);
          this.#logger.info("An instance's stream is reachable again: held deliveries sent", {
            stream,
          });
        }
      }
    } finally {
      this.#retrying = false;
      if (this.#held.size > 0) this.#retrySoon();
    }
  }
}

/**
 * Routes deliveries that are not stored (or parts of stored ones whose
 * users live in other groups): one ROUTE script per group of users, then
 * the appends through an {@link Outbox} on a cluster, or inline on a single
 * Redis.
 */
export class Router {
  #layout: RedisLayout;
  #scripts: RedisScripts<"ROUTE">;
  #maxLength: string;
  readonly outbox: Outbox;

  constructor(
    link: RedisLink,
    layout: RedisLayout,
    maxLength: number,
    logger: Logger,
    maxHeld?: number,
  ) {
    this.#layout = layout;
    this.#maxLength = String(maxLength);
    this.#scripts = new RedisScripts(link, "Broker", { ROUTE }, logger);
    this.outbox = new Outbox(link, maxLength, logger, maxHeld);
  }

  /**
   * The instances of group `k` holding `users` (all in group k) or `echo`
   * ('' for none, or a user of group k); appended to at once when inline.
   */
  async lookup(
    k: number,
    users: string[],
    echo: string,
    delivery: Delivery,
    text: string,
  ): Promise<string[]> {
    const inline = this.#layout.inline;
    return await this.#scripts.run("ROUTE", this.#layout.presence(k), [
      inline ? "i" : "r",
      inline ? text : "",
      this.#maxLength,
      delivery.origin?.instance ?? "",
      echo,
      ...users,
    ]) as string[];
  }

  /** Routes `delivery` to every instance holding its users or its echo user. */
  async publish(delivery: Delivery): Promise<void> {
    const layout = this.#layout;
    const echo = delivery.echoTo ?? "";
    const groups = layout.split(delivery.users);
    const echoGroup = echo === "" ? -1 : layout.group(echo);
    if (echoGroup >= 0 && !groups.has(echoGroup)) groups.set(echoGroup, []);
    if (layout.inline) {
      const [k, users] = groups.entries().next().value ?? [0, []];
      if (users.length > 0 || echo !== "") {
        await this.lookup(k, users, echo, delivery, deliveryEntry(delivery));
      }
      return;
    }
    const slot = this.outbox.reserve();
    const instances = new Set<string>();
    const results = await Promise.allSettled([...groups].map(async ([k, users]) => {
      const found = await this.lookup(k, users, k === echoGroup ? echo : "", delivery, "");
      for (const instance of found) instances.add(instance);
    }));
    // Once per instance, whole: each instance delivers to the users (and echo user) it holds.
    await slot.fill(
      instances.size > 0 ? [{ instances: [...instances], text: deliveryEntry(delivery) }] : [],
    );
    for (const result of results) if (result.status === "rejected") throw result.reason;
  }
}
