/**
 * Routes under `/app` (APP callers, `token` header) and `/api` (back-office
 * pages, session cookie): login (PROTOCOL.md section 2), WebSocket login
 * (section 3) and conversation history. Both prefixes have the same routes and
 * differ only in where the credential is read.
 *
 * - `POST /app/login`, `POST /api/login`
 * - `GET /{app,api}/websocket/client/login/{clientName}`
 * - `GET /{app,api}/messages?with=u2&before=CURSOR&limit=50`
 * - `GET /{app,api}/presence?users=u2,u3`: whether each user is online (nothing more)
 *
 * @module
 */
import { z } from "zod";
import { HttpError, json } from "./errors.ts";
import { readFields } from "./body.ts";
import type { Router } from "./router.ts";
import { requireUser } from "./credentials.ts";
import { historyPage, parseHistoryQuery } from "./history.ts";
import type { TokenService } from "../auth/tokens.ts";
import type { UserDirectory } from "../auth/users.ts";
import type { LoginGuard, LoginRefusal } from "../auth/login_guard.ts";
import type { SessionStore } from "../core/sessions.ts";
import type { MessageStore } from "../core/store.ts";
import type { Presence } from "../core/presence.ts";
import { CLIENT_NAME, CLIENT_NAME_RULE } from "../protocol/names.ts";

/** What the client routes need. */
export interface ClientRouteDeps {
  users: UserDirectory;
  tokens: TokenService;
  sessions: SessionStore;
  store: MessageStore;
  presence: Presence;
  /** `limits.maxRecipients`: most users in one presence query. */
  maxUsers: number;
  cookieName: string;
  /** `SameSite` attribute of the cookie. */
  cookieSameSite: "lax" | "strict" | "none";
  /** `Secure` attribute: always, never, or (undefined) when the request came over HTTPS. */
  cookieSecure?: boolean;
  tokenTtlSeconds: number;
  /** Failure budgets and the bounded password-check queue (`auth.login`). */
  guard: LoginGuard;
}

const SAME_SITE = { lax: "Lax", strict: "Strict", none: "None" } as const;

/** Longest username and password read: failed logins are counted by username (memory). */
const MAX_USERNAME = 256;
const MAX_PASSWORD = 1024;

const Credentials = z.object({
  username: z.string().min(1).max(MAX_USERNAME),
  password: z.string().min(1).max(MAX_PASSWORD),
});

/** Adds the `/app` and `/api` routes. */
export function addClientRoutes(router: Router, deps: ClientRouteDeps): void {
  const { guard } = deps;
  const refuse = (refusal: LoginRefusal | undefined) => {
    if (!refusal) return;
    throw new HttpError(refusal.status, refusal.msg, { "retry-after": String(refusal.retryAfter) });
  };
  const login = async (request: Request, ip: string) => {
    // An address over its budget costs no body reading.
    refuse(guard.check(ip));
    const parsed = Credentials.safeParse(await readFields(request));
    if (!parsed.success) {
      const tooLong = parsed.error.issues.some((issue) => issue.code === "too_big");
      throw new HttpError(
        400,
        tooLong
          ? `username is at most ${MAX_USERNAME} characters and password at most ${MAX_PASSWORD}`
          : "username and password are required",
      );
    }
    const { username, password } = parsed.data;
    refuse(guard.check(ip, username));
    const userId = await deps.users.authenticate(username, password, (hash) => guard.hashing(hash));
    if (!userId) {
      guard.failed(ip, username);
      throw new HttpError(401, "Wrong username or password");
    }
    guard.succeeded(username);
    return userId;
  };

  router.add("POST", "/app/login", async (request, { ip }) => {
    const userId = await login(request, ip);
    return json({ data: { token: await deps.tokens.issue(userId), userId } });
  });

  router.add("POST", "/api/login", async (request, { ip }) => {
    const userId = await login(request, ip);
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
      if (!CLIENT_NAME.test(clientName)) throw new HttpError(400, `clientName ${CLIENT_NAME_RULE}`);
      const userId = await requireUser(request, kind, deps);
      return json({ data: await deps.sessions.issue({ userId, clientName }) });
    });

    router.add("GET", `/${kind}/messages`, async (request) => {
      const userId = await requireUser(request, kind, deps);
      return historyPage(deps.store, userId, parseHistoryQuery(request));
    });

    router.add("GET", `/${kind}/presence`, async (request) => {
      await requireUser(request, kind, deps);
      const users = [
        ...new Set(
          (new URL(request.url).searchParams.get("users") ?? "").split(",")
            .map((user) => user.trim()).filter((user) => user !== ""),
        ),
      ];
      if (users.length === 0) throw new HttpError(400, 'Query "users" is required: ?users=u2,u3');
      if (users.length > deps.maxUsers) {
        throw new HttpError(400, `At most ${deps.maxUsers} users per query`);
      }
      const found = await deps.presence.lookup(users);
      const data: Record<string, { online: boolean }> = {};
      for (const user of users) data[user] = { online: (found.get(user)?.length ?? 0) > 0 };
      return json({ data });
    });
  }
}
