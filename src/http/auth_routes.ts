/**
 * Login routes (section 2) and WebSocket login routes (section 3).
 *
 * @module
 */
import { z } from "zod";
import { HttpError, json } from "./errors.ts";
import { readFields } from "./body.ts";
import type { Router } from "./router.ts";
import type { TokenService } from "../auth/tokens.ts";
import type { UserDirectory } from "../auth/users.ts";
import type { SessionStore } from "../core/sessions.ts";

/** What the auth routes need. */
export interface AuthRouteDeps {
  users: UserDirectory;
  tokens: TokenService;
  sessions: SessionStore;
  cookieName: string;
  /** `SameSite` attribute of the cookie. */
  cookieSameSite: "lax" | "strict" | "none";
  /** `Secure` attribute: always, never, or (undefined) when the request came over HTTPS. */
  cookieSecure?: boolean;
  tokenTtlSeconds: number;
}

const SAME_SITE = { lax: "Lax", strict: "Strict", none: "None" } as const;

const Credentials = z.object({
  username: z.string().min(1),
  password: z.string().min(1),
});

const CLIENT_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/** The bearer token of `Authorization: Bearer …`, if any. */
export function bearer(request: Request): string | undefined {
  const header = request.headers.get("authorization");
  const match = header?.match(/^Bearer\s+(\S+)$/i);
  return match?.[1];
}

function cookie(request: Request, name: string): string | undefined {
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
  deps: { tokens: TokenService; cookieName: string },
): Promise<string> {
  const token = credentialOf(request, kind, deps.cookieName);
  const userId = token ? await deps.tokens.verify(token) : undefined;
  if (!userId) throw new HttpError(401, "Log in first: missing or invalid credential");
  return userId;
}

/** Adds the login and WebSocket login routes. */
export function addAuthRoutes(router: Router, deps: AuthRouteDeps): void {
  const login = async (request: Request) => {
    const parsed = Credentials.safeParse(await readFields(request));
    if (!parsed.success) throw new HttpError(400, "username and password are required");
    const userId = await deps.users.authenticate(parsed.data.username, parsed.data.password);
    if (!userId) throw new HttpError(401, "Wrong username or password");
    return userId;
  };

  router.add("POST", "/app/login", async (request) => {
    const userId = await login(request);
    return json({ data: { token: await deps.tokens.issue(userId), userId } });
  });

  router.add("POST", "/api/login", async (request) => {
    const userId = await login(request);
    const token = await deps.tokens.issue(userId);
    const secure = deps.cookieSecure ?? (new URL(request.url).protocol === "https:" ||
      request.headers.get("x-forwarded-proto") === "https");
    const cookieValue = [
      `${deps.cookieName}=${token}`,
      "HttpOnly",
      "Path=/",
      `SameSite=${SAME_SITE[deps.cookieSameSite]}`,
      `Max-Age=${deps.tokenTtlSeconds}`,
      ...(secure ? ["Secure"] : []),
    ].join("; ");
    return json({ data: { userId } }, 200, { "set-cookie": cookieValue });
  });

  for (const kind of ["api", "app"] as const) {
    router.add("GET", `/${kind}/websocket/client/login/:clientName(.*)`, async (request, ctx) => {
      const clientName = ctx.params.clientName ?? "";
      if (!CLIENT_NAME.test(clientName)) {
        throw new HttpError(400, "clientName must be 1 to 64 characters of A-Z a-z 0-9 _ . -");
      }
      const userId = await requireUser(request, kind, deps);
      return json({ data: await deps.sessions.issue({ userId, clientName }) });
    });
  }
}
