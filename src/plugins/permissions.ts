/**
 * Least privilege per plugin: what `plugins.permissions.<name>` may grant,
 * checked at start-up, and the `--allow-*` flags of its host process.
 *
 * @module
 */
import { z } from "zod";
import { PluginError } from "./loader.ts";

/** One plugin's section of `plugins.permissions`. */
export const PluginPermissionsSchema = z.strictObject({
  /**
   * `process` (default): its own host process with only these grants.
   * `none`: in the server's process with the server's permissions (trusted code only).
   */
  isolation: z.enum(["process", "none"]).default("process"),
  /** Paths it may read besides its own file(s). */
  read: z.array(z.string().min(1)).default([]),
  /** Paths it may write. */
  write: z.array(z.string().min(1)).default([]),
  /** Hosts (`host` or `host:port`) it may connect to. */
  net: z.array(
    z.string().regex(/^[A-Za-z0-9.\-_]+(:\d{1,5})?$|^\[[0-9a-fA-F:.]+\](:\d{1,5})?$/, {
      message: "must be a host or host:port",
    }),
  ).default([]),
  /** Environment variables it may read. */
  env: z.array(
    z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, {
      message: "must be an environment variable name",
    }),
  ).default([]),
  /** Heap limit of its host process in MiB; `plugins.maxHeapMb` when absent. */
  maxHeapMb: z.int().min(16).max(16384).optional(),
});

/** One plugin's permissions, defaults filled in. */
export type PluginPermissions = z.output<typeof PluginPermissionsSchema>;

/** What no plugin may be granted. */
export interface Protected {
  /** The server's config file. */
  configFile?: string;
  /** The storage directory. */
  storageDir: string;
}

function absolute(path: string): string {
  const joined = path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
  const parts: string[] = [];
  for (const part of joined.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") parts.pop();
    else parts.push(part);
  }
  return `/${parts.join("/")}`;
}

/** Whether one path is the other or lies inside it. */
function overlaps(a: string, b: string): boolean {
  const inside = (child: string, parent: string) =>
    child === parent || child.startsWith(parent === "/" ? "/" : `${parent}/`);
  return inside(a, b) || inside(b, a);
}

const SERVER_ENV = /^(IM_|LOG_TOKENS$|LOG_STREAM$)/;

/**
 * Refuses grants that reach the server's config file or storage directory,
 * or its own environment; the message names the key path.
 */
export function checkPermissions(
  all: Record<string, PluginPermissions>,
  guarded: Protected,
): void {
  const fence: [string, string][] = [[absolute(guarded.storageDir), "storage directory"]];
  if (guarded.configFile) fence.push([absolute(guarded.configFile), "config file"]);
  for (const [name, grants] of Object.entries(all)) {
    for (const kind of ["read", "write"] as const) {
      grants[kind].forEach((path, index) => {
        const key = `plugins.permissions.${name}.${kind}[${index}]`;
        if (path.includes(",")) throw new PluginError(`${key}: a path cannot contain a comma`);
        for (const [guardedPath, what] of fence) {
          if (overlaps(absolute(path), guardedPath)) {
            throw new PluginError(
              `${key}: "${path}" reaches the server's ${what} ${guardedPath}: plugins never get it`,
            );
          }
        }
      });
    }
    grants.env.forEach((variable, index) => {
      if (SERVER_ENV.test(variable)) {
        throw new PluginError(
          `plugins.permissions.${name}.env[${index}]: "${variable}" is the server's own setting: plugins never get it`,
        );
      }
    });
  }
}

/** The host process's permission flags: its own file(s) to read, plus the grants. */
export function permissionFlags(ownFiles: string[], grants: PluginPermissions | undefined) {
  const read = [...ownFiles, ...(grants?.read ?? []).map(absolute)];
  const flags = [`--allow-read=${read.join(",")}`];
  if (grants?.write.length) flags.push(`--allow-write=${grants.write.map(absolute).join(",")}`);
  if (grants?.net.length) flags.push(`--allow-net=${grants.net.join(",")}`);
  if (grants?.env.length) flags.push(`--allow-env=${grants.env.join(",")}`);
  return flags;
}
