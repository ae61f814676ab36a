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
}

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
    requireApiKey(request, deps.apiKeys);
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
    const list = Array.isArray(to) ? to : to.split(",");
    const recipients = [...new Set(list.map((user) => user.trim()))];
    if (recipients.length === 0 || recipients.some((user) => user === "")) {
      throw new HttpError(400, '"to" is empty or has an empty entry');
    }
    if (recipients.includes(SYSTEM)) throw new HttpError(400, "SYSTEM cannot receive messages");
    if (recipients.length > deps.maxRecipients) {
      throw new HttpError(400, `"to" has more than ${deps.maxRecipients} recipients`);
    }
    if (
      (type === MessageType.NOTICE || type === MessageType.TARGET_NOTICE) &&
      !parseJsonBody(body, NoticeBodySchema)
    ) throw new HttpError(400, "body must be a NoticeBody with non-empty title and msg");
    if (type === MessageType.TEXT && body === "") throw new HttpError(400, "Text body is empty");
    const text = JSON.stringify({
      id,
      type,
      isSystem: true,
      from: SYSTEM,
      to: recipients.join(","),
      body,
      timestamp: Date.now(),
    });
    const { duplicate } = await deps.delivery.send({
      sender: SYSTEM,
      id,
      type,
      recipients,
      text,
    });
    return json({ data: { id, duplicate } });
  });
}
