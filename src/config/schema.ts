/**
 * The configuration schema. Every key the server knows is here, with its
 * default; `docs/CONFIG.md` documents them. Unknown keys are errors.
 *
 * @module
 */
import { z } from "zod";
import { PluginPermissionsSchema } from "../plugins/permissions.ts";

const port = z.int().min(0).max(65535);
const positiveInt = z.int().positive();

/** One user of the built-in directory. */
export const UserSchema = z.strictObject({
  userId: z.string().min(1),
  username: z.string().min(1),
  password: z.string().min(1),
});

/** A named API key for business backends. */
export const ApiKeySchema = z.strictObject({
  name: z.string().min(1),
  key: z.string().min(16, "must be at least 16 characters"),
});

/** A webhook to a business backend. */
export const WebhookSchema = z.strictObject({
  url: z.url(),
  events: z.array(z.enum(["message.offline", "user.online", "user.offline"])).min(1),
  secret: z.string().min(16, "must be at least 16 characters"),
});

const LogLevel = z.enum(["debug", "info", "warn", "error"]);

/** The whole configuration file. */
export const ConfigSchema = z.strictObject({
  websocket: z.strictObject({
    /** Address to bind. */
    url: z.string().min(1).default("127.0.0.1"),
    /** Port for HTTP and WebSocket; 0 picks a free one. */
    port: port.default(8081),
    /** WebSocket path, without the leading slash. */
    context: z.string().regex(/^[A-Za-z0-9_.\-/]+$/, "must be a path segment").default(
      "websocket",
    ),
    /** Seconds a new connection has to register. */
    registerTimeoutSeconds: positiveInt.default(10),
    /** Seconds without any incoming data before a ping; twice that closes. 0 disables. */
    idleTimeoutSeconds: z.int().min(0).default(60),
    /** Browser Origins allowed to open a WebSocket; empty allows any. */
    allowedOrigins: z.array(z.string()).default([]),
  }).prefault({}),
  auth: z.strictObject({
    /** The built-in user directory. */
    users: z.array(UserSchema).default([]),
    /** Tokens issued by another system (HS256, `sub` = userId). */
    jwt: z.strictObject({
      secret: z.string().min(16, "must be at least 16 characters"),
      issuer: z.string().optional(),
      audience: z.string().optional(),
    }).optional(),
    /** Secret for the tokens and cookies this server issues; random per start when absent. */
    tokenSecret: z.string().min(16, "must be at least 16 characters").optional(),
    /** Lifetime of issued tokens and cookies. */
    tokenTtlSeconds: positiveInt.default(86400),
    /** Name of the session cookie set by `POST /api/login`. */
    cookieName: z.string().regex(/^[A-Za-z0-9_-]+$/).default("im_session"),
    /** `SameSite` of the session cookie: `none` lets pages of another site use it (needs Secure). */
    cookieSameSite: z.enum(["lax", "strict", "none"]).default("lax"),
    /** `Secure` on the session cookie: absent = when the request came over HTTPS. */
    cookieSecure: z.boolean().optional(),
    /** Seconds a sessionId stays redeemable. */
    sessionTtlSeconds: positiveInt.default(60),
    /** Limits of the login routes (docs/SECURITY.md). */
    login: z.strictObject({
      /** Failed logins from one address per window; more answer 429 with Retry-After. */
      maxFailuresPerIp: positiveInt.default(20),
      /** Failed logins for one username per window; more answer 429 with Retry-After. */
      maxFailuresPerUsername: positiveInt.default(10),
      /** Length of a failure window. */
      windowSeconds: positiveInt.default(300),
      /** Password hashes computed at once (each takes a core for ~45 ms). */
      maxConcurrentHashes: positiveInt.default(1),
      /** Logins waiting for a hash; more answer 503 with Retry-After. */
      maxQueued: positiveInt.default(64),
    }).prefault({}),
  }).refine((auth) => auth.cookieSameSite !== "none" || auth.cookieSecure === true, {
    message: "none needs auth.cookieSecure: true (browsers drop a SameSite=None cookie that " +
      "is not Secure)",
    path: ["cookieSameSite"],
  }).prefault({}),
  limits: z.strictObject({
    /** Most entries in `to`. */
    maxRecipients: positiveInt.default(500),
    /** Largest frame in bytes; a larger one closes the connection with 1009. */
    maxFrameBytes: positiveInt.default(65536),
    /** Bytes queued to a slow client before it is closed (1013); its frames are redelivered. */
    maxBufferedBytes: z.int().min(262144, "must be at least 262144 (256 KiB)").default(
      8 * 1024 * 1024,
    ),
    /**
     * Bytes of messages a sender may have waiting for their recipients (the
     * frame's length once per recipient not yet reached); a send past it
     * answers 400. Business-API messages (from SYSTEM) do not count.
     */
    maxPendingBytesPerSender: positiveInt.default(64 * 1024 * 1024),
    /** Open connections per user. */
    maxConnectionsPerUser: positiveInt.default(16),
    /** Seconds a connection has to send a complete HTTP request head (slow clients are cut). */
    headerTimeoutSeconds: positiveInt.default(10),
    /** Seconds a request body has to arrive in full once the head is complete. */
    bodyTimeoutSeconds: positiveInt.default(30),
    /** Seconds an answered HTTP connection may stay idle before it is closed. */
    keepAliveTimeoutSeconds: positiveInt.default(5),
    /** Open connections per client IP address. */
    maxConnectionsPerIp: positiveInt.default(1000),
    /** Frames per second per connection (token bucket). */
    rateLimit: z.strictObject({
      perSecond: positiveInt.default(200),
      burst: positiveInt.default(400),
      /** Seconds over the limit before the connection is closed with 1008. */
      closeAfterSeconds: positiveInt.default(10),
    }).prefault({}),
  }).prefault({}),
  storage: z.strictObject({
    /** `sqlite` (durable, default) or `memory`. */
    driver: z.enum(["sqlite", "memory"]).default("sqlite"),
    /** Directory of the SQLite file. */
    dir: z.string().min(1).default("./data"),
    /** Days a message is kept. */
    retentionDays: positiveInt.default(30),
    /** Stored messages kept per recipient; the oldest are dropped (and logged) past it. */
    maxPerUser: positiveInt.default(10000),
    /** Milliseconds between retention sweeps. */
    sweepIntervalMs: positiveInt.default(60_000),
  }).prefault({}),
  server: z.strictObject({
    /** API key for `/server/...` routes (Bearer). */
    apiKey: z.string().min(16, "must be at least 16 characters").optional(),
    /** More named API keys, so one can be rotated while another works. */
    apiKeys: z.array(ApiKeySchema).default([]),
    /** Seconds graceful shutdown may take. */
    shutdownSeconds: positiveInt.default(10),
    /** Key that guards `/metrics` (Authorization: Bearer); open when absent. */
    metricsKey: z.string().min(16, "must be at least 16 characters").optional(),
    /**
     * `host:port` of a second listener for `/metrics`, `/healthz` and `/readyz`;
     * when set, the main port no longer serves `/metrics`.
     */
    metricsAddress: z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/, "must be host:port")
      .optional(),
    /** Origins allowed by CORS on the HTTP routes; empty sends no CORS headers. */
    corsOrigins: z.array(z.string()).default([]),
    /** Serve the web console at `/`. */
    console: z.boolean().default(true),
    /** Webhooks to business backends. */
    webhooks: z.array(WebhookSchema).default([]),
    /** Seconds a user must stay disconnected before `user.offline` fires. */
    offlineGraceSeconds: z.int().min(0).default(30),
  }).prefault({}),
  plugins: z.strictObject({
    /** Directory whose `.ts`/`.js` files are loaded as plugins. */
    dir: z.string().min(1).default("./plugins"),
    /** Milliseconds a plugin handler may take before it answers 400. */
    timeoutMs: positiveInt.default(5000),
    /** Per-plugin settings, by plugin name. */
    config: z.record(z.string(), z.unknown()).default({}),
    /**
     * Per-plugin permissions and isolation, by plugin name: by default a plugin
     * runs in its own process and may read only its own file(s).
     */
    permissions: z.record(z.string(), PluginPermissionsSchema).default({}),
    /** Heap limit of each plugin's host process, in MiB. */
    maxHeapMb: z.int().min(16).max(16384).default(128),
    /** `ctx.send` calls of one plugin being accepted at once; one more is refused. */
    maxSendsInFlight: z.int().min(1).max(1_000_000).default(1024),
    /** Log lines (and output lines) of one sandboxed plugin written per minute; the rest are counted. */
    logLinesPerMinute: z.int().min(1).max(1_000_000).default(600),
    /** Watch `dir` and reload plugins when its files change. */
    watch: z.boolean().default(true),
  }).prefault({}),
  cluster: z.strictObject({
    /** Redis URL; when set, instances share sessions, delivery and storage. */
    redisUrl: z.string().optional(),
    /**
     * Replicas that must hold a copy of a message (Redis `WAIT`) before its
     * 200 is sent; 0: answer once the primary has it.
     */
    redisWait: z.number().int().min(0).max(16).default(0),
    /** Most milliseconds a 200 waits for those replicas; past it the send answers 400. */
    redisWaitTimeoutMs: z.number().int().min(1).max(60_000).default(1000),
    /**
     * Deliveries held per instance stream while the Redis Cluster master holding it is unreachable
     * (a failover), sent once it is back; past it the oldest are dropped (their messages are stored).
     */
    maxHeldDeliveries: z.number().int().min(0).max(1_000_000).default(10_000),
  }).prefault({}),
  log: z.strictObject({
    level: LogLevel.default("info"),
    /** One JSON object per line instead of text. */
    json: z.boolean().default(false),
    /** Lines per minute about each kind of refused input (malformed requests); the rest are counted. */
    refusalsPerMinute: positiveInt.default(10),
  }).prefault({}),
});

/** The validated configuration, defaults filled in. */
export type Config = z.infer<typeof ConfigSchema>;

/** The configuration as written in a file: every key optional. */
export type ConfigInput = z.input<typeof ConfigSchema>;
