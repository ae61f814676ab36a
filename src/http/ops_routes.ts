/**
 * Operations routes (`/readyz`, `/metrics`) and the business routes for
 * presence and kicks (`/server/presence`, `/server/kick`).
 *
 * @module
 */
import { z } from "zod";
import { HttpError, json, jsonError } from "./errors.ts";
import { readJson } from "./body.ts";
import { bearer } from "./auth_routes.ts";
import type { Router } from "./router.ts";
import { type ApiKey, requireApiKey } from "./server_routes.ts";
import { timingSafeEqualText } from "../auth/compare.ts";
import type { DeliveryService } from "../core/delivery.ts";
import type { Presence } from "../core/presence.ts";
import type { MessageStore } from "../core/store.ts";
import type { Metrics } from "../ops/metrics.ts";
import type { Logger } from "../log.ts";

/** Close code and reason of a connection kicked by the business API. */
export const KICK_CLOSE = { code: 4003, reason: "kicked" } as const;

/** What the operations routes need. */
export interface OpsRouteDeps {
  apiKeys: ApiKey[];
  delivery: DeliveryService;
  presence: Presence;
  store: MessageStore;
  metrics: Metrics;
  logger: Logger;
  /** Bearer key that guards `/metrics`; open when absent. */
  metricsKey?: string;
  /** Most users in one presence query. */
  maxUsers: number;
  /** False once shutdown began. */
  accepting(): boolean;
  /** Milliseconds the storage check of `/readyz` may take. @default 2000 */
  readyTimeoutMs?: number;
}

const KickRequest = z.strictObject({
  userId: z.string().min(1).max(256),
  clientName: z.string().regex(
    /^[A-Za-z0-9_.-]{1,64}$/,
    "must be 1 to 64 characters of A-Z a-z 0-9 _ . -",
  )
    .optional(),
});

const PresenceRequest = z.strictObject({
  users: z.array(z.string().min(1).max(256)).min(1),
});

function badRequest(error: z.ZodError): HttpError {
  const issue = error.issues[0];
  const path = issue.path.join(".");
  return new HttpError(400, path ? `Field "${path}": ${issue.message}` : issue.message);
}

/** Resolves `work`, or rejects when it takes longer than `ms`. */
async function within<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`No answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Adds `/readyz`, `/metrics`, `/server/presence` and `/server/kick`. */
export function addOpsRoutes(router: Router, deps: OpsRouteDeps): void {
  const readyTimeoutMs = deps.readyTimeoutMs ?? 2000;

  router.add("GET", "/readyz", async () => {
    if (!deps.accepting()) return jsonError(503, "Server is shutting down");
    try {
      await within(deps.store.pendingCount(), readyTimeoutMs);
    } catch (error) {
      deps.logger.warn("Readiness check: storage is not reachable", { error });
      return jsonError(503, "Storage is not reachable");
    }
    return json({ data: "ready" });
  });

  router.add("GET", "/metrics", async (request) => {
    if (deps.metricsKey !== undefined) {
      const given = bearer(request);
      if (given === undefined || !timingSafeEqualText(given, deps.metricsKey)) {
        throw new HttpError(401, "Missing or invalid metrics key (Authorization: Bearer …)");
      }
    }
    return new Response(await deps.metrics.render(), {
      headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
    });
  });

  const presence = async (request: Request, users: string[]) => {
    const key = requireApiKey(request, deps.apiKeys);
    deps.metrics.apiRequests.inc({ key, route: "/server/presence" });
    const unique = [...new Set(users)];
    if (unique.length > deps.maxUsers) {
      throw new HttpError(400, `At most ${deps.maxUsers} users per query`);
    }
    const found = await deps.presence.lookup(unique);
    deps.logger.debug("Presence query", { key, users: unique.length });
    const data: Record<string, unknown> = {};
    for (const userId of unique) {
      const clients = found.get(userId) ?? [];
      data[userId] = {
        online: clients.length > 0,
        clients: clients.map(({ clientName, since, instance }) => ({
          clientName,
          since,
          instance,
        })),
      };
    }
    return json({ data });
  };

  router.add("GET", "/server/presence", (request) => {
    const param = new URL(request.url).searchParams.get("users");
    const users = param?.split(",").map((user) => user.trim()).filter((user) => user !== "");
    if (!users || users.length === 0) {
      requireApiKey(request, deps.apiKeys);
      throw new HttpError(400, 'Query "users" is required: ?users=u1,u2');
    }
    return presence(request, users);
  });

  router.add("POST", "/server/presence", async (request) => {
    requireApiKey(request, deps.apiKeys);
    const parsed = PresenceRequest.safeParse(await readJson(request));
    if (!parsed.success) throw badRequest(parsed.error);
    return presence(request, parsed.data.users);
  });

  router.add("POST", "/server/kick", async (request) => {
    const key = requireApiKey(request, deps.apiKeys);
    const parsed = KickRequest.safeParse(await readJson(request));
    if (!parsed.success) throw badRequest(parsed.error);
    const { userId, clientName } = parsed.data;
    deps.metrics.apiRequests.inc({ key, route: "/server/kick" });
    const found = (await deps.presence.lookup([userId])).get(userId) ?? [];
    const kicked = found.filter((entry) =>
      clientName === undefined || entry.clientName === clientName
    )
      .length;
    await deps.delivery.kick({ userId, clientName, ...KICK_CLOSE });
    deps.logger.info("Kick", { key, userId, clientName, connections: kicked });
    return json({ data: { userId, clientName, kicked } });
  });
}
