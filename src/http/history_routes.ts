/**
 * Conversation history: pages of the messages between two users, newest
 * first, with each message's delivery state.
 *
 * - `GET /app/messages?with=u2&before=CURSOR&limit=50` (token), and the same under `/api` (cookie)
 * - `GET /server/messages?user=u1&with=u2&before=CURSOR&limit=50` (API key)
 *
 * @module
 */
import { z } from "zod";
import { HttpError, json } from "./errors.ts";
import type { Router } from "./router.ts";
import { requireUser } from "./auth_routes.ts";
import { type ApiKey, requireApiKey } from "./server_routes.ts";
import type { TokenService } from "../auth/tokens.ts";
import type { MessageStore } from "../core/store.ts";

/** What the history routes need. */
export interface HistoryRouteDeps {
  store: MessageStore;
  tokens: TokenService;
  cookieName: string;
  apiKeys: ApiKey[];
}

const Query = z.object({
  with: z.string().min(1, "is required"),
  before: z.string().regex(/^\d+$/, "must be a cursor from a previous page").optional(),
  limit: z.coerce.number().int().min(1).max(200).default(50),
});

function parseQuery(request: Request) {
  const params = Object.fromEntries(new URL(request.url).searchParams);
  const parsed = Query.safeParse(params);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new HttpError(400, `Query "${issue.path.join(".")}" ${issue.message}`);
  }
  return parsed.data;
}

/** Adds the history routes. */
export function addHistoryRoutes(router: Router, deps: HistoryRouteDeps): void {
  const page = async (userId: string, query: ReturnType<typeof parseQuery>) => {
    const result = await deps.store.history(userId, query.with, {
      before: query.before,
      limit: query.limit,
    });
    return json({
      data: {
        messages: result.messages.map((entry) => ({
          ...JSON.parse(entry.text),
          state: entry.state,
        })),
        next: result.next ?? null,
      },
    });
  };
  for (const kind of ["app", "api"] as const) {
    router.add("GET", `/${kind}/messages`, async (request) => {
      const userId = await requireUser(request, kind, deps);
      return page(userId, parseQuery(request));
    });
  }
  router.add("GET", "/server/messages", (request) => {
    requireApiKey(request, deps.apiKeys);
    const user = new URL(request.url).searchParams.get("user");
    if (!user) throw new HttpError(400, 'Query "user" is required');
    return page(user, parseQuery(request));
  });
}
