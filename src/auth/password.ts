/**
 * Password hashes for the built-in user directory: PBKDF2-SHA256 through Web
 * Crypto, stored as `pbkdf2-sha256$<iterations>$<salt>$<hash>` (base64url).
 *
 * @module
 */
import { timingSafeEqual } from "./compare.ts";
import { decodeBase64Url, encodeBase64Url } from "./base64.ts";

const PREFIX = "pbkdf2-sha256";
const ITERATIONS = 210_000;
const encoder = new TextEncoder();

/** True when the stored value looks like a hash this module made. */
export function isPasswordHash(stored: string): boolean {
  return stored.startsWith(`${PREFIX}$`);
}

async function derive(password: string, salt: Uint8Array, iterations: number) {
  const key = await crypto.subtle.importKey("raw", encoder.encode(password), "PBKDF2", false, [
    "deriveBits",
  ]);
  const bits = await crypto.subtle.deriveBits(
    { name: "PBKDF2", hash: "SHA-256", salt: salt as BufferSource, iterations },
    key,
    256,
  );
  return new Uint8Array(bits);
}

/** Hashes a password with a fresh random salt. */
export async function hashPassword(password: string, iterations = ITERATIONS): Promise<string> {
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const hash = await derive(password, salt, iterations);
  return `${PREFIX}$${iterations}$${encodeBase64Url(salt)}$${encodeBase64Url(hash)}`;
}

const DUMMY_SALT = new Uint8Array(16);

async function digest(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(text)));
}

/** The PBKDF2 iteration count of a stored hash, or 0 for plain text or a malformed hash. */
export function iterationsOf(stored: string): number {
  if (!isPasswordHash(stored)) return 0;
  const count = Number(stored.split("$")[1]);
  return Number.isSafeInteger(count) && count > 0 ? count : 0;
}

/**
 * Runs PBKDF2 of `iterations` for nothing: the work a hashed password costs,
 * spent where there is none to check (an unknown user, a plain-text password).
 */
export async function spendHashWork(password: string, iterations: number): Promise<void> {
  if (iterations > 0) await derive(password, DUMMY_SALT, iterations);
}

/** Compares a password with a plain-text one as SHA-256 digests: constant time, any lengths. */
export async function plainTextEqual(password: string, stored: string): Promise<boolean> {
  return timingSafeEqual(await digest(password), await digest(stored));
}

/**
 * Checks a password against a stored hash, or against a plain-text password
 * (allowed, but warned about at start-up). Compares in constant time.
 */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  if (!isPasswordHash(stored)) return await plainTextEqual(password, stored);
  const [, iterations, salt, hash] = stored.split("$");
  const count = Number(iterations);
  if (!Number.isSafeInteger(count) || count < 1 || !salt || !hash) return false;
  const actual = await derive(password, decodeBase64Url(salt), count);
  return timingSafeEqual(actual, decodeBase64Url(hash));
}
