/**
 * Frames: the envelope fast path inside `decodeFrame` against the zod
 * `MessageSchema` it stands for, the encoders round-tripped through the
 * decoder, and the body checks of each built-in type.
 */
import { assert, assertEquals } from "../../tests/_assert.ts";
import {
  bodyProblem,
  decodeFrame,
  deliveryText,
  encodeFrame,
  encodeSendStatus,
  encodeSystemFrame,
  type Message,
  MessageSchema,
  sendStatusEncoder,
  StatusBodySchema,
} from "./frame.ts";
import { statusName } from "./codes.ts";

const VALID: Message = {
  id: "m1",
  type: 2001,
  isSystem: false,
  from: "u1",
  to: "u2",
  body: "hi",
};

/** Values of each envelope field, valid and invalid alike (`undefined`: the field is left out). */
const FIELD_VALUES: Record<string, unknown[]> = {
  id: ["m1", "", " ", "é", 1, null, true, [], {}, undefined],
  type: [2001, 0, -1, 5001, 2001.5, 1e300, 2 ** 53, 2 ** 53 - 1, -0, "2001", null, undefined],
  isSystem: [false, true, "false", 0, null, undefined],
  from: ["u1", "", "SYSTEM", 1, null, undefined],
  to: ["u2", "", "u2,u3", ["u2"], null, undefined],
  body: ["hi", "", "{}", 0, {}, null, undefined],
  timestamp: [undefined, null, 0, 1_700_000_000_000, -1, 1.5, "1", 2 ** 53, 1e21, false],
};

/** A table of envelopes: each field's values on an otherwise valid frame, and some extras. */
function table(): { name: string; value: unknown }[] {
  const rows: { name: string; value: unknown }[] = [{ name: "valid", value: VALID }];
  for (const [field, values] of Object.entries(FIELD_VALUES)) {
    for (const v of values) {
      const value: Record<string, unknown> = { ...VALID };
      if (v === undefined) delete value[field];
      else value[field] = v;
      rows.push({ name: `${field}: ${JSON.stringify(v) ?? "missing"}`, value });
    }
  }
  rows.push({ name: "extra fields kept", value: { ...VALID, extra: { a: 1 }, seq: 3 } });
  rows.push({ name: "an array", value: [VALID] });
  rows.push({ name: "a string", value: "frame" });
  rows.push({ name: "a number", value: 7 });
  rows.push({ name: "null", value: null });
  rows.push({ name: "empty object", value: {} });
  return rows;
}

/** A deterministic generator (mulberry32), so a failure can be reproduced. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `count` envelopes with each field drawn at random from its values. */
function generated(count: number, seed: number): { name: string; value: unknown }[] {
  const next = random(seed);
  const rows: { name: string; value: unknown }[] = [];
  for (let i = 0; i < count; i++) {
    const value: Record<string, unknown> = {};
    for (const [field, values] of Object.entries(FIELD_VALUES)) {
      const v = values[Math.floor(next() * values.length)];
      if (v !== undefined) value[field] = v;
    }
    rows.push({ name: `generated #${i} (seed ${seed}): ${JSON.stringify(value)}`, value });
  }
  return rows;
}

/**
 * Decodes the JSON of `value` and says whether the schema was consulted: the
 * fast path must take every valid envelope without it and let no invalid one through.
 */
function decodeCounting(value: unknown) {
  const original = MessageSchema.safeParse;
  let calls = 0;
  MessageSchema.safeParse = ((...args: Parameters<typeof original>) => {
    calls++;
    return original(...args);
  }) as typeof original;
  try {
    return { result: decodeFrame(JSON.stringify(value)), schemaCalls: calls };
  } finally {
    MessageSchema.safeParse = original;
  }
}

function assertAgrees(name: string, value: unknown): void {
  // The schema sees what the server sees: the value after a JSON round trip.
  const parsed = JSON.parse(JSON.stringify(value));
  const expected = MessageSchema.safeParse(parsed).success;
  const { result, schemaCalls } = decodeCounting(value);
  assertEquals(result.ok, expected, `${name}: decodeFrame and MessageSchema agree`);
  if (expected) assertEquals(schemaCalls, 0, `${name}: a valid envelope takes the fast path`);
}

Deno.test("decodeFrame() agrees with MessageSchema on every envelope", async (t) => {
  await t.step("a table of valid and invalid envelopes", () => {
    const rows = table();
    for (const { name, value } of rows) assertAgrees(name, value);
    // The table must hold both kinds, or agreement proves little.
    const valid = rows.filter((r) => MessageSchema.safeParse(r.value).success).length;
    assert(valid >= 10 && rows.length - valid >= 30, `${valid} valid of ${rows.length}`);
  });
  await t.step("500 generated envelopes", () => {
    for (const { name, value } of generated(500, 20261201)) assertAgrees(name, value);
  });
});

Deno.test("decodeFrame() says what is wrong with a frame", async (t) => {
  await t.step("not JSON, with no id", () => {
    assertEquals(decodeFrame("{"), { ok: false, id: "", msg: "Frame is not valid JSON" });
  });
  await t.step("not an object", () => {
    for (const text of ["[]", "null", "1", '"x"']) {
      assertEquals(decodeFrame(text), { ok: false, id: "", msg: "Frame is not a JSON object" });
    }
  });
  await t.step("a bad field is named, and the id kept when it is a string", () => {
    const result = decodeFrame(JSON.stringify({ ...VALID, type: "2001" }));
    assert(!result.ok);
    assertEquals(result.id, "m1");
    assert(result.msg.startsWith('Field "type" is not valid'), result.msg);
    const missing = decodeFrame(JSON.stringify({ ...VALID, body: undefined }));
    assertEquals(missing, { ok: false, id: "m1", msg: 'Field "body" is missing' });
    const numericId = decodeFrame(JSON.stringify({ ...VALID, id: 7 }));
    assert(!numericId.ok && numericId.id === "");
  });
  await t.step("a null timestamp is dropped; the raw text is kept", () => {
    const text = JSON.stringify({ ...VALID, timestamp: null, extra: 1 });
    const result = decodeFrame(text);
    assert(result.ok);
    assertEquals(result.raw, text);
    assertEquals("timestamp" in result.message, false);
    assertEquals((result.message as unknown as { extra: number }).extra, 1);
  });
});

Deno.test("encodeFrame() round-trips through decodeFrame()", async (t) => {
  await t.step("every field, in one key order", () => {
    const frame = { ...VALID, to: 'u2,"u3"', body: "line\n\u2028 é 😀", timestamp: 5 };
    const text = encodeFrame(frame);
    assertEquals(Object.keys(JSON.parse(text)), [
      "id",
      "type",
      "isSystem",
      "from",
      "to",
      "body",
      "timestamp",
    ]);
    const decoded = decodeFrame(text);
    assert(decoded.ok);
    assertEquals(decoded.message, frame);
  });
  await t.step("a missing timestamp is now", () => {
    const before = Date.now();
    const decoded = decodeFrame(encodeFrame(VALID));
    assert(decoded.ok);
    assert(decoded.message.timestamp! >= before && decoded.message.timestamp! <= Date.now());
  });
  await t.step("fields a frame must not carry are left out", () => {
    const text = encodeFrame({ ...VALID, extra: "x" } as Message);
    assertEquals("extra" in JSON.parse(text), false);
  });
  await t.step("encodeSystemFrame() sends from SYSTEM", () => {
    const decoded = decodeFrame(encodeSystemFrame("n1", 3001, "u2,u3", '{"title":"t","msg":"m"}'));
    assert(decoded.ok);
    const { timestamp: _, ...rest } = decoded.message;
    assertEquals(rest, {
      id: "n1",
      type: 3001,
      isSystem: true,
      from: "SYSTEM",
      to: "u2,u3",
      body: '{"title":"t","msg":"m"}',
    });
  });
});

Deno.test("sendStatusEncoder() builds 9001 frames the decoder and StatusBodySchema accept", async (t) => {
  const encode = sendStatusEncoder('u"1');
  await t.step("the default msg is the status name", () => {
    const decoded = decodeFrame(encode("m1", 200));
    assert(decoded.ok);
    const { timestamp, ...rest } = decoded.message;
    assert(typeof timestamp === "number");
    assertEquals(rest, {
      id: "m1",
      type: 9001,
      isSystem: true,
      from: "SYSTEM",
      to: 'u"1',
      body: JSON.stringify({ code: 200, status: "SUCCESS", msg: "SUCCESS" }),
    });
  });
  await t.step("every status code, ids and messages that need escaping", () => {
    for (const code of [200, 400, 401, 402, 403, 404, 405, 406, 407]) {
      for (const [id, msg] of [["x", undefined], ['a"b\\c', 'say "no"\n'], ["é😀", "ü"]] as const) {
        const decoded = decodeFrame(encode(id, code, msg));
        assert(decoded.ok, `${code} ${id}`);
        assertEquals(decoded.message.id, id);
        const body = StatusBodySchema.parse(JSON.parse(decoded.message.body));
        assertEquals(body, { code, status: statusName(code)!, msg: msg ?? statusName(code) });
      }
    }
  });
  await t.step('the answer to an unreadable frame has the id ""', () => {
    assertEquals(JSON.parse(encode("", 401)).id, "");
  });
  await t.step("encodeSendStatus() is the same frame", () => {
    const a = JSON.parse(encodeSendStatus("m1", "u2", 406, "bad to"));
    const b = JSON.parse(sendStatusEncoder("u2")("m1", 406, "bad to"));
    assertEquals({ ...a, timestamp: 0 }, { ...b, timestamp: 0 });
  });
});

Deno.test("deliveryText() keeps the raw text unless it must add a timestamp", () => {
  const raw = JSON.stringify({ ...VALID, timestamp: 9, extra: true });
  const withTime = decodeFrame(raw);
  assert(withTime.ok);
  assertEquals(deliveryText(withTime.message, raw), raw);
  const bare = JSON.stringify({ ...VALID, extra: true });
  const without = decodeFrame(bare);
  assert(without.ok);
  const delivered = JSON.parse(deliveryText(without.message, bare));
  assertEquals(typeof delivered.timestamp, "number");
  assertEquals(delivered.extra, true, "extra fields are forwarded");
});

Deno.test("bodyProblem() checks the body of each built-in type", async (t) => {
  const notice = (value: unknown) => JSON.stringify(value);
  const ok = JSON.stringify({ code: 200, status: "SUCCESS", msg: "ok" });
  const rows: [string, number, string, boolean][] = [
    ["a text", 2001, "hi", true],
    ["an empty text", 2001, "", false],
    ["a notice", 3001, notice({ title: "t", msg: "m" }), true],
    [
      "a notice with target and serviceId",
      3001,
      notice({ title: "t", msg: "m", target: "x", serviceId: "s" }),
      true,
    ],
    ["a notice without title", 3001, notice({ msg: "m" }), false],
    ["a notice with an empty msg", 3001, notice({ title: "t", msg: "" }), false],
    ["a notice that is not JSON", 3001, "title", false],
    ["a target notice", 3003, notice({ title: "t", msg: "m" }), true],
    [
      "a target notice with a numeric target",
      3003,
      notice({ title: "t", msg: "m", target: 1 }),
      false,
    ],
    ["a receipt", 9101, ok, true],
    [
      "a receipt of an unknown code",
      9101,
      notice({ code: 299, status: "SUCCESS", msg: "" }),
      false,
    ],
    [
      "a receipt whose status is not its code's",
      9101,
      notice({ code: 200, status: "FAILED", msg: "" }),
      false,
    ],
    ["a register", 1000, notice({ sessionId: "abc" }), true],
    ["a register with an empty sessionId", 1000, notice({ sessionId: "" }), false],
    ["a register that is not JSON", 1000, "abc", false],
    ["a plugin type: not checked here", 5001, "", true],
  ];
  for (const [title, type, body, valid] of rows) {
    await t.step(title, () => {
      const problem = bodyProblem(type, body);
      assertEquals(problem === undefined, valid, problem);
    });
  }
});
