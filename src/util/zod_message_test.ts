/** zodMessage(): one readable reason per zod error, naming where it is. */
import { z } from "zod";
import { assertEquals } from "../../tests/_assert.ts";
import { zodMessage } from "./zod_message.ts";

const Schema = z.object({ id: z.string(), limits: z.object({ max: z.int().positive() }) });

function reason(value: unknown, options?: Parameters<typeof zodMessage>[1]): string {
  const parsed = Schema.safeParse(value);
  if (parsed.success) throw new Error("expected a failure");
  return zodMessage(parsed.error, options);
}

Deno.test("zodMessage() tells a missing field from a wrong one", async (t) => {
  await t.step("a missing field", () => {
    assertEquals(reason({ limits: { max: 1 } }), 'Field "id" is missing');
  });
  await t.step("a field of the wrong type is not called missing", () => {
    assertEquals(
      reason({ id: 7, limits: { max: 1 } }),
      'Field "id" is not valid: Invalid input: expected string, received number',
    );
    assertEquals(
      reason({ id: null, limits: { max: 1 } }),
      'Field "id" is not valid: Invalid input: expected string, received null',
    );
  });
  await t.step("the same when zod reports the input", () => {
    const parsed = Schema.safeParse({ id: 7, limits: {} }, { reportInput: true });
    assertEquals(
      zodMessage(parsed.error!),
      'Field "id" is not valid: Invalid input: expected string, received number',
    );
    const missing = Schema.safeParse({ limits: { max: 1 } }, { reportInput: true });
    assertEquals(zodMessage(missing.error!), 'Field "id" is missing');
  });
  await t.step("a nested path, with what and prefix", () => {
    assertEquals(
      reason({ id: "a", limits: { max: 0 } }, { what: "Key", prefix: ["server"] }),
      'Key "server.limits.max" is not valid: Too small: expected number to be >0',
    );
  });
  await t.step("the value itself", () => {
    const parsed = z.string().safeParse(undefined);
    assertEquals(zodMessage(parsed.error!), "A value is missing");
    const wrong = z.string().safeParse(1);
    assertEquals(
      zodMessage(wrong.error!),
      "The value is not valid: Invalid input: expected string, received number",
    );
  });
});
