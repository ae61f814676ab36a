/**
 * Routes under `/server`, for business backends (PROTOCOL.md section 8). The
 * API-key middleware has checked the key before any of them runs.
 *
 * - `POST /server/messages` send as SYSTEM; `GET /server/messages` history
 * - `GET|POST /server/presence` who is online
 * - `POST /server/kick` close a user's connections (4003)
 *
 * @module
 */
import { z } from "zod";
import { HttpError, json } from "./errors.ts";
import { readJson } from "./body.ts";
import type { Router } from "./router.ts";
import { historyPage, parseHistoryQuery } from "./history.ts";
import type { DeliveryService } from "../core/delivery.ts";
import type { Broker } from "../core/broker.ts";
import type { CustomTypes } from "../core/client_session.ts";
import type { Presence } from "../core/presence.ts";
import type { MessageStore } from "../core/store.ts";
import { BUILT_IN_TYPES, CloseCode, DELIVERED_TYPES, SYSTEM } from "../protocol/codes.ts";
import { bodyProblem, encodeSystemFrame } from "../protocol/frame.ts";
import { ALL_ONLINE, parseRecipients } from "../protocol/recipients.ts";
import { CLIENT_NAME, CLIENT_NAME_RULE } from "../protocol/names.ts";
import { randomId } from "../auth/base64.ts";
import type { Logger } from "../log.ts";
import { zodMessage } from "../util/zod_message.ts";

/** What the business routes need. */
export interface ServerRouteDeps {
  delivery: DeliveryService;
  broker: Broker;
  custom: CustomTypes;
  presence: Presence;
  store: MessageStore;
  /** `limits.maxRecipients`: most users in one message or presence query. */
  maxRecipients: number;
  logger: Logger;
}

const SendRequest = z.object({
  type: z.int(),
  to: z.union([z.string(), z.array(z.string())]),
  body: z.union([z.string(), z.record(z.string(), z.unknown()), z.array(z.unknown())]),
  id: z.string().min(1).max(256).optional(),
});

const KickRequest = z.strictObject({
  userId: z.string().min(1).max(256),
  clientName: z.string().regex(CLIENT_NAME, CLIENT_NAME_RULE).optional(),
});

const PresenceRequest = z.strictObject({
  users: z.array(z.string().min(1).max(256)).min(1),
});

/** Parses a JSON body with `schema`; 400 naming the field that is wrong. */
async function parseBody<T>(request: Request, schema: z.ZodType<T>): Promise<T> {
  const parsed = schema.safeParse(await readJson(request));
  if (!parsed.success) throw new HttpError(400, zodMessage(parsed.error));
  return parsed.data;
}

/** Adds the `/server` routes. */
export function addServerRoutes(router: Router, deps: ServerRouteDeps): void {
  router.add("POST", "/server/messages", (request, { apiKey }) => send(deps, request, apiKey));
  router.add("GET", "/server/messages", (request) => {
    const user = new URL(request.url).searchParams.get("user");
    if (!user) throw new HttpError(400, 'Query "user" is required');
    return historyPage(deps.store, user, parseHistoryQuery(request));
  });
  router.add("GET", "/server/presence", (request, { apiKey }) => {
    const param = new URL(request.url).searchParams.get("users");
    const users = param?.split(",").map((user) => user.trim()).filter((user) => user !== "");
    if (!users || users.length === 0) {
      throw new HttpError(400, 'Query "users" is required: ?users=u1,u2');
    }
    return presence(deps, users, apiKey);
  });
  router.add("POST", "/server/presence", async (request, { apiKey }) => {
    return presence(deps, (await parseBody(request, PresenceRequest)).users, apiKey);
  });
  router.add("POST", "/server/kick", async (request, { apiKey }) => {
    const { userId, clientName } = await parseBody(request, KickRequest);
    const found = (await deps.presence.lookup([userId])).get(userId) ?? [];
    const kicked = found.filter((entry) =>
      clientName === undefined || entry.clientName === clientName
    ).length;
    await deps.broker.kick({ userId, clientName, ...CloseCode.KICKED });
    deps.logger.info("Kick", { key: apiKey, userId, clientName, connections: kicked });
    return json({ data: { userId, clientName, kicked } });
  });
}

/** `POST /server/messages`: checks the message, then sends it as SYSTEM. */
async function send(deps: ServerRouteDeps, request: Request, apiKey?: string): Promise<Response> {
  const parsed = await parseBody(request, SendRequest);
  const { type, to, id = randomId(16) } = parsed;
  const body = typeof parsed.body === "string" ? parsed.body : JSON.stringify(parsed.body);
  if (!DELIVERED_TYPES.has(type) && (BUILT_IN_TYPES.has(type) || !deps.custom.has(type))) {
    throw new HttpError(
      400,
      `Type ${type} cannot be sent: use 2001, 3001, 3003 or a plugin's type`,
    );
  }
  const problem = bodyProblem(type, body);
  if (problem) throw new HttpError(400, problem);
  let users: string[];
  if (to === ALL_ONLINE) {
    users = (await deps.presence.onlineUsers()).filter((user) => user !== SYSTEM);
    deps.logger.info("Message to every online user", { key: apiKey, id, users: users.length });
    if (users.length === 0) return json({ data: { id, duplicate: false, recipients: 0 } });
  } else {
    users = recipientsOf(to, deps.maxRecipients);
    deps.logger.debug("Business message", { key: apiKey, id, recipients: users.length });
  }
  const text = encodeSystemFrame(id, type, to === ALL_ONLINE ? ALL_ONLINE : users.join(","), body);
  const { duplicate } = await deps.delivery.send({
    sender: SYSTEM,
    id,
    type,
    recipients: users,
    text,
  });
  return json({ data: { id, duplicate, recipients: duplicate ? 0 : users.length } });
}

/** The recipients of a business message; 400 with the reason when `to` is refused. */
function recipientsOf(to: string | string[], max: number): string[] {
  const recipients = parseRecipients(to, { max });
  if (recipients.ok) return recipients.users;
  const list = Array.isArray(to) ? to : to.split(",");
  throw new HttpError(
    400,
    list.some((user) => user.trim() === ALL_ONLINE)
      ? '"*" must be the whole of "to" (every online user)'
      : recipients.msg,
  );
}

/** `GET|POST /server/presence`: the clients of each user, on every instance. */
async function presence(
  deps: ServerRouteDeps,
  users: string[],
  apiKey?: string,
): Promise<Response> {
  const unique = [...new Set(users)];
  if (unique.length > deps.maxRecipients) {
    throw new HttpError(400, `At most ${deps.maxRecipients} users per query`);
  }
  const found = await deps.presence.lookup(unique);
  deps.logger.debug("Presence query", { key: apiKey, users: unique.length });
  const data: Record<string, unknown> = {};
  for (const userId of unique) {
    const clients = found.get(userId) ?? [];
    data[userId] = {
      online: clients.length > 0,
      clients: clients.map(({ clientName, since, instance }) => ({ clientName, since, instance })),
    };
  }
  return json({ data });
}
