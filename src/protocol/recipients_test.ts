/** parseRecipients(): the one rule for `to`, for WebSocket frames, the business API and plugins. */
import { assertEquals } from "../../tests/_assert.ts";
import { parseRecipients, type RecipientOptions } from "./recipients.ts";

const EMPTY = { ok: false, msg: '"to" is empty or has an empty entry' };

Deno.test("parseRecipients() splits, trims and deduplicates", async (t) => {
  const rows: [string, string | string[], RecipientOptions, unknown][] = [
    ["one user", "u2", { max: 500 }, { ok: true, users: ["u2"] }],
    ["entries are trimmed", " u2 ,\tu3\n", { max: 500 }, { ok: true, users: ["u2", "u3"] }],
    ["repeats count once, first place kept", "u3,u2, u3,u2", { max: 500 }, {
      ok: true,
      users: ["u3", "u2"],
    }],
    ["a list is taken as it is", [" u2", "u3 "], { max: 500 }, { ok: true, users: ["u2", "u3"] }],
    ["inner spaces are part of the name", "u 2", { max: 500 }, { ok: true, users: ["u 2"] }],
    ["exactly max distinct users", "a,b,a,c", { max: 3 }, { ok: true, users: ["a", "b", "c"] }],
    ["SYSTEM where allowed", "SYSTEM", { max: 1, allowSystem: true }, {
      ok: true,
      users: ["SYSTEM"],
    }],
  ];
  for (const [title, to, options, expected] of rows) {
    await t.step(title, () => assertEquals(parseRecipients(to, options), expected));
  }
});

Deno.test("parseRecipients() refuses a to that names no one, everyone or the system", async (t) => {
  const rows: [string, string | string[], RecipientOptions, unknown][] = [
    ["empty", "", { max: 500 }, EMPTY],
    ["blank", "  ", { max: 500 }, EMPTY],
    ["an empty entry", "u2,,u3", { max: 500 }, EMPTY],
    ["a trailing comma", "u2,", { max: 500 }, EMPTY],
    ["a blank entry", "u2, ,u3", { max: 500 }, EMPTY],
    ["an empty list", [], { max: 500 }, EMPTY],
    ["*", " * ", { max: 500 }, {
      ok: false,
      msg: '"*" is not a user: only the business API can send to every online user',
    }],
    ["* among others", "u2,*", { max: 500 }, {
      ok: false,
      msg: '"*" is not a user: only the business API can send to every online user',
    }],
    ["SYSTEM", "u2, SYSTEM", { max: 500 }, { ok: false, msg: "SYSTEM cannot receive messages" }],
    ["more than max distinct users", "a,b,c,d", { max: 3 }, {
      ok: false,
      msg: '"to" has more than 3 recipients',
    }],
    ["max counts distinct users after trimming", "a, b,c ,d,a", { max: 3 }, {
      ok: false,
      msg: '"to" has more than 3 recipients',
    }],
  ];
  for (const [title, to, options, expected] of rows) {
    await t.step(title, () => assertEquals(parseRecipients(to, options), expected));
  }
});
