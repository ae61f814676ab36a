/**
 * Repeated top-level keys (PROTOCOL.md section 10, "One value per field").
 * `JSON.parse` keeps the last value of a repeated key, other parsers the
 * first, so a frame forwarded as its raw text could say one thing to the
 * server and another to a recipient. Such a frame is refused with 401.
 *
 * Measured against re-encoding every frame with `JSON.stringify` of the parsed
 * object (docs/SECURITY.md has the figures): counting the members of the raw
 * text costs less, and keeps the raw text as the one thing forwarded.
 *
 * @module
 */

const QUOTE = 34, BACKSLASH = 92, COMMA = 44;
const OPEN_BRACE = 123, CLOSE_BRACE = 125, OPEN_BRACKET = 91, CLOSE_BRACKET = 93;

/**
 * The number of members of the top-level object in `text`, which must be
 * valid JSON whose value is an object (as `JSON.parse` accepted it): the
 * commas at depth 1, plus one unless the object is empty.
 */
export function countTopLevelMembers(text: string): number {
  let depth = 0;
  let commas = 0;
  let empty = true;
  const length = text.length;
  for (let i = 0; i < length; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      if (depth === 1) empty = false;
      // Skip the string: find its closing quote, not preceded by an odd run of backslashes.
      let end = text.indexOf('"', i + 1);
      while (end !== -1) {
        let slashes = 0;
        for (let j = end - 1; text.charCodeAt(j) === BACKSLASH; j--) slashes++;
        if ((slashes & 1) === 0) break;
        end = text.indexOf('"', end + 1);
      }
      if (end === -1) return -1;
      i = end;
    } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      depth++;
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      depth--;
    } else if (c === COMMA && depth === 1) {
      commas++;
    }
  }
  return empty ? 0 : commas + 1;
}

/**
 * Whether the JSON object text `text`, parsed as `value`, repeats a top-level
 * key: its raw members outnumber the parsed object's keys.
 */
export function repeatsTopLevelKey(text: string, value: object): boolean {
  let keys = 0;
  for (const _ in value) keys++;
  return countTopLevelMembers(text) !== keys;
}
