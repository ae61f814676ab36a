/**
 * Conversation history pages (newest first, with each message's delivery
 * state), shared by `GET /{app,api}/messages` and `GET /server/messages`.
 *
 * @module
 */
import { z } from "zod";
import { HttpError, json } from "./errors.ts";
import type { MessageStore } from "../core/store.ts";
import { zodMessage } from "../util/zod_message.ts";

const Query = z.object({
  with: z.string().min(1, "is required"),
  // A store's cursor: a number, or on a Redis Cluster one per side of the conversation (`12_34`).
  before: z.string().regex(/^(\d+|\d*_\d*)$/, "must be a cursor from a previous page").optional(),
  limit: z.coerce.number().int().min(1).max(200).default(50),
});

/** A parsed history query (`with`, `before`, `limit`). */
export type HistoryQuery = z.infer<typeof Query>;

/** The history query of a request; 400 naming the parameter that is wrong. */
export function parseHistoryQuery(request: Request): HistoryQuery {
  const params = Object.fromEntries(new URL(request.url).searchParams);
  const parsed = Query.safeParse(params);
  if (!parsed.success) throw new HttpError(400, zodMessage(parsed.error, { what: "Query" }));
  return parsed.data;
}

/** One page of the conversation of `userId` with `query.with`, as the JSON answer. */
export async function historyPage(
  store: MessageStore,
  userId: string,
  query: HistoryQuery,
): Promise<Response> {
  const result = await store.history(userId, query.with, {
    before: query.before,
    limit: query.limit,
  });
  return json({
    data: {
      messages: result.messages.map((entry) => ({ ...JSON.parse(entry.text), state: entry.state })),
      next: result.next ?? null,
    },
  });
}
