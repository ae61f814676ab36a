/**
 * Every credential check of the HTTP routes: users' tokens and cookies
 * (`/app`, `/api`), and the business API keys (`/server`).
 *
 * @module
 */
import { HttpError } from "./errors.ts";
import { timingSafeEqualText } from "../auth/compare.ts";
import type { TokenService } from "../auth/tokens.ts";

/** A named API key (`server.apiKeys`). */
export interface ApiKey {
  name: string;
  key: string;
}

/** The bearer token of `Authorization: Bearer …`, if any. */
export function bearer(request: Request): string | undefined {
  const header = request.headers.get("authorization");
  const match = header?.match(/^Bearer\s+(\S+)$/i);
  return match?.[1];
}

/** The value of cookie `name`, if the request carries it. */
export function cookie(request: Request, name: string): string | undefined {
  const header = request.headers.get("cookie");
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return undefined;
}

/** Where a route reads its credential: APP routes or back-office (`/api`) routes. */
export type CredentialKind = "app" | "api";

/** What {@link requireUser} needs. */
export interface UserAuth {
  tokens: TokenService;
  cookieName: string;
}

/** The credential of a request: a `token` header (APP) or the cookie (api), else a Bearer. */
export function credentialOf(
  request: Request,
  kind: CredentialKind,
  cookieName: string,
): string | undefined {
  const own = kind === "app"
    ? request.headers.get("token") ?? undefined
    : cookie(request, cookieName);
  return own ?? bearer(request);
}

/** The userId of a request's credential; 401 when it has none that is valid. */
export async function requireUser(
  request: Request,
  kind: CredentialKind,
  auth: UserAuth,
): Promise<string> {
  const token = credentialOf(request, kind, auth.cookieName);
  const userId = token ? await auth.tokens.verify(token) : undefined;
  if (!userId) throw new HttpError(401, "Log in first: missing or invalid credential");
  return userId;
}

/** The name of the API key the request carries; 401 when it carries none that is valid. */
export function requireApiKey(request: Request, keys: readonly ApiKey[]): string {
  const given = bearer(request);
  if (given === undefined) throw new HttpError(401, "Missing API key (Authorization: Bearer …)");
  let found: string | undefined;
  // Compare against every key so timing does not tell which one nearly matched.
  for (const { name, key } of keys) if (timingSafeEqualText(given, key)) found ??= name;
  if (found === undefined) throw new HttpError(401, "Invalid API key");
  return found;
}

/** 401 unless the request carries `key` as its bearer token. */
export function requireKey(request: Request, key: string, what: string): void {
  const given = bearer(request);
  if (given === undefined || !timingSafeEqualText(given, key)) {
    throw new HttpError(401, `Missing or invalid ${what} (Authorization: Bearer …)`);
  }
}
