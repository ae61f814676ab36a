/**
 * The one rule for the `to` of a frame (PROTOCOL.md sections 6 and 10), used
 * alike by WebSocket frames, `POST /server/messages` and plugin sends.
 *
 * @module
 */
import { SYSTEM } from "./codes.ts";

/** The `to` of a business-API message to every online user. */
export const ALL_ONLINE = "*";

/** Options of {@link parseRecipients}. */
export interface RecipientOptions {
  /** Most distinct recipients (`limits.maxRecipients`). */
  max: number;
  /** Whether `SYSTEM` may be named (a receipt for a system frame goes to `SYSTEM`). @default false */
  allowSystem?: boolean;
}

/** Distinct userIds, or why `to` was refused. */
export type Recipients = { ok: true; users: string[] } | { ok: false; msg: string };

const EMPTY: Recipients = { ok: false, msg: '"to" is empty or has an empty entry' };
const ALL: Recipients = {
  ok: false,
  msg: '"*" is not a user: only the business API can send to every online user',
};
const TO_SYSTEM: Recipients = { ok: false, msg: "SYSTEM cannot receive messages" };

/**
 * Splits `to` (comma-separated, or a list) into distinct userIds, trimming the
 * whitespace around each entry. Refuses an empty entry, `*`, `SYSTEM` (unless
 * allowed) and more than `max` recipients.
 *
 * @example
 * ```ts
 * import { parseRecipients } from "./recipients.ts";
 * const result = parseRecipients("u2, u3,u2", { max: 500 });
 * console.assert(result.ok && result.users.join() === "u2,u3");
 * console.assert(!parseRecipients("u2,,u3", { max: 500 }).ok);
 * ```
 */
export function parseRecipients(
  to: string | readonly string[],
  options: RecipientOptions,
): Recipients {
  const list = typeof to === "string" ? to.split(",") : to;
  let users: string[] = [];
  for (const entry of list) {
    // trim() returns the same string when there is nothing to trim: no copy on the busy path.
    const user = entry.trim();
    if (user === "") return EMPTY;
    if (user === ALL_ONLINE) return ALL;
    if (user === SYSTEM && !options.allowSystem) return TO_SYSTEM;
    users.push(user);
  }
  if (users.length === 0) return EMPTY;
  if (users.length > 1) users = [...new Set(users)];
  if (users.length > options.max) {
    return { ok: false, msg: `"to" has more than ${options.max} recipients` };
  }
  return { ok: true, users };
}
