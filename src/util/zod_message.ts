/**
 * One way to turn a zod validation error into the readable reason of an
 * answer or an error: `<where> "<path>": <what>` for the first issue.
 *
 * @module
 */

/** The part of a zod issue read here (plugins' own zod copies fit it too). */
export interface IssueLike {
  readonly path: readonly PropertyKey[];
  readonly message: string;
  readonly code?: string;
  readonly input?: unknown;
}

/** Options of {@link zodMessage}. */
export interface ZodMessageOptions {
  /** What the path is in, e.g. `Field`, `Query`, `Config key`. @default "Field" */
  what?: string;
  /** Path segments before the issue's own, e.g. `["plugins", "config", "echo"]`. */
  prefix?: readonly string[];
}

/**
 * The reason of the first issue of `error`, naming its path.
 *
 * @example
 * ```ts
 * import { z } from "zod";
 * import { zodMessage } from "./zod_message.ts";
 * const parsed = z.object({ id: z.string() }).safeParse({});
 * console.assert(!parsed.success && zodMessage(parsed.error) === 'Field "id" is missing');
 * ```
 */
export function zodMessage(
  error: { readonly issues: readonly IssueLike[] },
  options: ZodMessageOptions = {},
): string {
  return issueMessage(error.issues[0], options);
}

/** The reason of one zod issue (see {@link zodMessage}). */
export function issueMessage(issue: IssueLike, options: ZodMessageOptions = {}): string {
  const path = [...options.prefix ?? [], ...issue.path.map(String)].join(".");
  const missing = isMissing(issue);
  const reason = missing ? "is missing" : `is not valid: ${issue.message}`;
  if (path === "") return missing ? "A value is missing" : `The value ${reason}`;
  return `${options.what ?? "Field"} "${path}" ${reason}`;
}

/**
 * Whether an issue is about a missing value. zod 4 puts `input` on an issue
 * only when asked (`reportInput`), so without it the default message
 * ("… received undefined") is what tells a missing field from a wrong type.
 */
function isMissing(issue: IssueLike): boolean {
  if (issue.code !== "invalid_type") return false;
  if ("input" in issue) return issue.input === undefined;
  return issue.message.endsWith("received undefined");
}
