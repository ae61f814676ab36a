/**
 * Where the Redis backends keep each user's keys.
 *
 * On a single Redis every key lives together (one group, the key names of
 * earlier versions). On a Redis Cluster users are split into
 * {@link CLUSTER_GROUPS} groups by a hash of their userId; every key of a
 * group (a recipient's messages, inbox, history with others, presence)
 * carries the group's hash tag, so a script that stores a message for the
 * recipients of one group touches one slot. The groups' tags are chosen so
 * that group k's slot lies in the k-th of {@link CLUSTER_GROUPS} equal slot
 * ranges: `redis-cli --cluster create` gives each master an equal run of
 * slots, so the groups spread evenly over up to that many masters.
 *
 * @module
 */
import { KEY_PREFIX } from "./redis.ts";

/** Groups of users on a Redis Cluster (fixed: stored keys are named by it). */
export const CLUSTER_GROUPS = 16;

/** Hash slots of a Redis Cluster. */
const SLOTS = 16384;

/** CRC16-XMODEM table, as Redis Cluster hashes keys. */
const CRC_TABLE = (() => {
  const table = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let crc = i << 8;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1;
    table[i] = crc & 0xffff;
  }
  return table;
})();

/** The hash slot of `key` (of its `{tag}` when it has a non-empty one), as Redis Cluster computes it. */
export function keySlot(key: string): number {
  const open = key.indexOf("{");
  if (open >= 0) {
    const close = key.indexOf("}", open + 1);
    if (close > open + 1) key = key.slice(open + 1, close);
  }
  let crc = 0;
  for (const byte of new TextEncoder().encode(key)) {
    crc = ((crc << 8) & 0xffff) ^ CRC_TABLE[((crc >> 8) ^ byte) & 0xff];
  }
  return crc % SLOTS;
}

/** The hash tag of group `k` of `groups`: the first `g<k>.<n>` whose slot is in the k-th range. */
function groupTag(k: number, groups: number): string {
  const low = Math.floor((k * SLOTS) / groups);
  const high = Math.floor(((k + 1) * SLOTS) / groups);
  for (let n = 0;; n++) {
    const tag = `g${k}.${n}`;
    const slot = keySlot(tag);
    if (slot >= low && slot < high) return tag;
  }
}

/** The key names of the Redis backends, for a single Redis or a Redis Cluster. */
export class RedisLayout {
  /** Number of user groups (1 on a single Redis). */
  readonly groups: number;
  /** Whether scripts may append to instance streams themselves (a single Redis: no slots). */
  readonly inline: boolean;
  #store: string[];
  #presence: string[];

  private constructor(tags: (string | undefined)[], inline: boolean) {
    this.groups = tags.length;
    this.inline = inline;
    this.#store = tags.map((tag) =>
      tag === undefined ? `${KEY_PREFIX}store:` : `${KEY_PREFIX}{${tag}}:store:`
    );
    this.#presence = tags.map((tag) =>
      tag === undefined ? `${KEY_PREFIX}presence:` : `${KEY_PREFIX}{${tag}}:presence:`
    );
  }

  /** One group with the key names of a single Redis. */
  static readonly single: RedisLayout = new RedisLayout([undefined], true);

  /** {@link CLUSTER_GROUPS} hash-tagged groups (or `groups`, for tests). */
  static cluster(groups = CLUSTER_GROUPS): RedisLayout {
    if (groups === CLUSTER_GROUPS && clusterLayout) return clusterLayout;
    const layout = new RedisLayout(
      Array.from({ length: groups }, (_, k) => groupTag(k, groups)),
      false,
    );
    if (groups === CLUSTER_GROUPS) clusterLayout = layout;
    return layout;
  }

  /** The layout for a link: hash-tagged groups on a Redis Cluster. */
  static of(link: { cluster: boolean }): RedisLayout {
    return link.cluster ? RedisLayout.cluster() : RedisLayout.single;
  }

  /** The group of `userId` (FNV-1a of its UTF-16 code units). */
  group(userId: string): number {
    return this.groups === 1 ? 0 : fnv1a([userId]) % this.groups;
  }

  /** Prefix of the message keys of group `k` (a key itself: scripts declare it as KEYS[1]). */
  store(k: number): string {
    return this.#store[k];
  }

  /** Prefix of the presence keys of group `k`. */
  presence(k: number): string {
    return this.#presence[k];
  }

  /** `users` by group, in first-seen order within each group. */
  split(users: readonly string[]): Map<number, string[]> {
    const byGroup = new Map<number, string[]>();
    if (this.groups === 1) {
      if (users.length > 0) byGroup.set(0, users as string[]);
      return byGroup;
    }
    for (const user of users) {
      const k = this.group(user);
      const list = byGroup.get(k);
      if (list) list.push(user);
      else byGroup.set(k, [user]);
    }
    return byGroup;
  }
}

/** The layout of {@link CLUSTER_GROUPS} groups, made once (every backend of an instance asks). */
let clusterLayout: RedisLayout | undefined;

/**
 * FNV-1a (32 bits) over the UTF-16 code units of `parts`, with a separator
 * between parts: user groups, and the fingerprint of a recipient list.
 */
export function fnv1a(parts: readonly string[]): number {
  let hash = 0x811c9dc5;
  parts.forEach((part, index) => {
    if (index > 0) hash = Math.imul(hash ^ 0xff, 0x01000193);
    for (let i = 0; i < part.length; i++) {
      hash ^= part.charCodeAt(i);
      hash = Math.imul(hash, 0x01000193);
    }
  });
  return hash >>> 0;
}

/** The delivery stream of an instance (its own slot on a Redis Cluster). */
export const deliveryStream = (instance: string): string =>
  `${KEY_PREFIX}{inst:${instance}}:deliveries`;
