/**
 * Routes for business backends (section 8), guarded by API keys.
 *
 * @module
 */
import { z } from "zod";
import { HttpError, json } from "./errors.ts";
import { readJson } from "./body.ts";
import { bearer } from "./auth_routes.ts";
import type { Router } from "./router.ts";
import { timingSafeEqualText } from "../auth/compare.ts";
import type { DeliveryService } from "../core/delivery.ts";
import { BUILT_IN_TYPES, DELIVERED_TYPES, MessageType, SYSTEM } from "../protocol/codes.ts";
import { NoticeBodySchema, parseJsonBody } from "../protocol/frame.ts";
import type { CustomTypes } from "../core/session.ts";
import { randomId } from "../auth/base64.ts";
import type { Presence } from "../core/presence.ts";
import type { Logger } from "../log.ts";

/** A named API key. */
export interface ApiKey {
  name: string;
  key: string;
}

/** What the business routes need. */
export interface ServerRouteDeps {
  apiKeys: ApiKey[];
  delivery: DeliveryService;
  custom: CustomTypes;
  maxRecipients: number;
  /** Who is online, for `"to": "*"`; without it a broadcast is refused. */
  presence?: Presence;
  logger?: Logger;
  /** Called for each request with a valid key (metrics). */
  onRequest?(keyName: string, route: string): void;
}

/** The `to` of a message to every online user. */
export const ALL_ONLINE = "*";

const SendRequest = z.object({
  type: z.int(),
  to: z.union([z.string(), z.array(z.string())]),
  body: z.union([z.string(), z.record(z.string(), z.unknown()), z.array(z.unknown())]),
  id: z.string().min(1).max(256).optional(),
});

/** The name of the API key the request carries; 401 when it carries none that is valid. */
export function requireApiKey(request: Request, keys: ApiKey[]): string {
  const given = bearer(request);
  if (given === undefined) throw new HttpError(401, "Missing API key (Authorization: Bearer …)");
  let found: string | undefined;
  // Compare against every key so timing does not tell which one nearly matched.
  for (const { name, key } of keys) if (timingSafeEqualText(given, key)) found ??= name;
  if (found === undefined) throw new HttpError(401, "Invalid API key");
  return found;
}

/** Adds `POST /server/messages`. */
export function addServerRoutes(router: Router, deps: ServerRouteDeps): void {
  router.add("POST", "/server/messages", async (request) => {
    const keyName = requireApiKey(request, deps.apiKeys);
    deps.onRequest?.(keyName, "/server/messages");
    const parsed = SendRequest.safeParse(await readJson(request));
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new HttpError(400, `Field "${issue.path.join(".")}": ${issue.message}`);
    }
    const { type, to, id = randomId(16) } = parsed.data;
    const body = typeof parsed.data.body === "string"
      ? parsed.data.body
      : JSON.stringify(parsed.data.body);
    if (!DELIVERED_TYPES.has(type) && (BUILT_IN_TYPES.has(type) || !deps.custom.has(type))) {
      throw new HttpError(
        400,
        `Type ${type} cannot be sent: use 2001, 3001, 3003 or a plugin's type`,
      );
    }
    if (
      (type === MessageType.NOTICE || type === MessageType.TARGET_NOTICE) &&
      !parseJsonBody(body, NoticeBodySchema)
    ) throw new HttpError(400, "body must be a NoticeBody with non-empty title and msg");
    if (type === MessageType.TEXT && body === "") throw new HttpError(400, "Text body is empty");
    if (to === ALL_ONLINE) {
      if (!deps.presence) throw new HttpError(400, 'Sending to "*" is not available');
      const online = (await deps.presence.onlineUsers()).filter((user) => user !== SYSTEM);
      deps.logger?.info("Message to every online user", { key: keyName, id, users: online.length });
      if (online.length === 0) return json({ data: { id, duplicate: false, recipients: 0 } });
      const { duplicate } = await deps.delivery.send({
        sender: SYSTEM,
        id,
        type,
        recipients: online,
        text: systemFrame(id, type, ALL_ONLINE, body),
      });
      return json({ data: { id, duplicate, recipients: duplicate ? 0 : online.length } });
    }
    const list = Array.isArray(to) ? to : to.split(",");
    const recipients = [...new Set(list.map((user) => user.trim()))];
    if (recipients.length === 0 || recipients.some((user) => user === "")) {
      throw new HttpError(400, '"to" is empty or has an empty entry');
    }
    if (recipients.includes(ALL_ONLINE)) {
      throw new HttpError(400, '"*" must be the whole of "to" (every online user)');
    }
    if (recipients.includes(SYSTEM)) throw new HttpError(400, "SYSTEM cannot receive messages");
    if (recipients.length > deps.maxRecipients) {
      throw new HttpError(400, `"to" has more than ${deps.maxRecipients} recipients`);
    }
    deps.logger?.debug("Business message", { key: keyName, id, recipients: recipients.length });
    const text = systemFrame(id, type, recipients.join(","), body);
    const { duplicate } = await deps.delivery.send({
      sender: SYSTEM,
      id,
      type,
      recipients,
      text,
    });
    return json({ data: { id, duplicate, recipients: recipients.length } });
  });
}

function systemFrame(id: string, type: number, to: string, body: string): string {
  return JSON.stringify({
    id,
    type,
    isSystem: true,
    from: SYSTEM,
    to,
    body,
    timestamp: Date.now(),
  });
}
