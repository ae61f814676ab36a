/**
 * Serves the web console: a static page at `/` that uses the client module,
 * which is served too at `/client.js` (with its types at `/client.d.ts`).
 *
 * @module
 */

/** Files of the console, by URL path. */
const ASSETS: ReadonlyMap<string, { file: URL; type: string }> = new Map([
  ["/", { file: new URL("./index.html", import.meta.url), type: "text/html; charset=utf-8" }],
  ["/index.html", {
    file: new URL("./index.html", import.meta.url),
    type: "text/html; charset=utf-8",
  }],
  ["/console.js", {
    file: new URL("./console.js", import.meta.url),
    type: "text/javascript; charset=utf-8",
  }],
  ["/console.css", {
    file: new URL("./console.css", import.meta.url),
    type: "text/css; charset=utf-8",
  }],
  ["/client.js", {
    file: new URL("../client/client.js", import.meta.url),
    type: "text/javascript; charset=utf-8",
  }],
  ["/client.d.ts", {
    file: new URL("../client/client.d.ts", import.meta.url),
    type: "application/typescript; charset=utf-8",
  }],
]);

/** The page may load only its own scripts and styles, and connect only to this server. */
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
  "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

interface Asset {
  body: Uint8Array<ArrayBuffer>;
  headers: Headers;
}

/** A request handler for the console's paths; null for any other path. */
export type ConsoleHandler = (req: Request) => Response | Promise<Response> | null;

/**
 * Creates the handler of the web console. It answers `GET` and `HEAD` of `/`,
 * `/index.html`, `/console.js`, `/console.css`, `/client.js` and `/client.d.ts`,
 * and returns null for anything else so the router can go on. The files are
 * read once, on the first request, from beside this module (`file:` or `https:`).
 *
 * @example Wiring it into a router
 * ```ts
 * import { consoleHandler } from "./serve.ts";
 *
 * const serveConsole = consoleHandler();
 * async function handler(req: Request): Promise<Response> {
 *   return await serveConsole(req) ?? Response.json({ code: 404, msg: "Not found" }, { status: 404 });
 * }
 * const res = await handler(new Request("http://localhost/console.css"));
 * await res.body?.cancel();
 * ```
 */
export function consoleHandler(): ConsoleHandler {
  let loaded: Promise<Map<string, Asset>> | undefined;
  return (req) => {
    if (req.method !== "GET" && req.method !== "HEAD") return null;
    const path = new URL(req.url).pathname;
    if (!ASSETS.has(path)) return null;
    loaded ??= loadAssets().catch((error) => {
      loaded = undefined;
      throw error;
    });
    return loaded.then(
      (assets) => respond(req, assets.get(path)!),
      (error) =>
        Response.json({ code: 500, msg: `Cannot load the console: ${error}` }, { status: 500 }),
    );
  };
}

function respond(req: Request, asset: Asset): Response {
  const headers = new Headers(asset.headers);
  if (req.headers.get("if-none-match") === headers.get("etag")) {
    return new Response(null, { status: 304, headers });
  }
  return new Response(req.method === "HEAD" ? null : asset.body, { status: 200, headers });
}

async function loadAssets(): Promise<Map<string, Asset>> {
  const byFile = new Map<string, Promise<Uint8Array<ArrayBuffer>>>();
  const assets = new Map<string, Asset>();
  for (const [path, { file, type }] of ASSETS) {
    let body = byFile.get(file.href);
    if (!body) {
      body = readAsset(file);
      byFile.set(file.href, body);
    }
    const bytes = await body;
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    const etag = `"${
      Array.from(digest.slice(0, 12), (b) => b.toString(16).padStart(2, "0")).join("")
    }"`;
    const headers = new Headers({
      "content-type": type,
      "content-length": String(bytes.byteLength),
      "cache-control": "no-cache",
      "etag": etag,
      "x-content-type-options": "nosniff",
      "referrer-policy": "no-referrer",
    });
    if (type.startsWith("text/html")) {
      headers.set("content-security-policy", CSP);
      headers.set("x-frame-options", "DENY");
    }
    if (path === "/client.js") headers.set("x-typescript-types", "/client.d.ts");
    if (path.startsWith("/client.")) headers.set("access-control-allow-origin", "*");
    assets.set(path, { body: bytes, headers });
  }
  return assets;
}

async function readAsset(file: URL): Promise<Uint8Array<ArrayBuffer>> {
  if (file.protocol === "file:") return await Deno.readFile(file);
  const res = await fetch(file);
  if (!res.ok) {
    await res.body?.cancel();
    throw new Error(`Cannot fetch ${file.href}: ${res.status}`);
  }
  return new Uint8Array(await res.arrayBuffer());
}
