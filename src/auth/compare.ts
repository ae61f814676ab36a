/**
 * Constant-time comparison for secrets.
 *
 * @module
 */

const encoder = new TextEncoder();

/**
 * Compares two byte arrays in time that depends only on their lengths, never
 * on where they differ.
 */
export function timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean {
  const length = Math.max(a.length, b.length);
  let diff = a.length ^ b.length;
  for (let i = 0; i < length; i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}

/** Compares two strings in constant time (for their length). */
export function timingSafeEqualText(a: string, b: string): boolean {
  return timingSafeEqual(encoder.encode(a), encoder.encode(b));
}
