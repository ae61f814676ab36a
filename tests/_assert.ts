/**
 * Assertions from `node:assert/strict`, named the way Deno tests read.
 *
 * @module
 */
import assertModule from "node:assert/strict";

/** Asserts deep strict equality. */
export function assertEquals<T>(actual: unknown, expected: T, message?: string): void {
  assertModule.deepStrictEqual(actual, expected, message);
}

/** Asserts a truthy value. */
export function assert(value: unknown, message?: string): asserts value {
  assertModule.ok(value, message);
}

/** Asserts that `fn` rejects with an error whose message includes `includes`. */
export async function assertRejects(
  fn: () => Promise<unknown>,
  includes: string,
): Promise<Error> {
  try {
    await fn();
  } catch (error) {
    assert(error instanceof Error, "rejects with an Error");
    assert(
      error.message.includes(includes),
      `message ${JSON.stringify(error.message)} includes ${JSON.stringify(includes)}`,
    );
    return error;
  }
  throw new assertModule.AssertionError({ message: "expected a rejection" });
}
