/**
 * Loads `config.yaml`: YAML → validated {@link Config}, with errors that name
 * the file, the key path and the reason (and a "did you mean" for typos).
 *
 * @module
 */
import type { z } from "zod";
import YAML from "yaml";
import { type Config, ConfigSchema } from "./schema.ts";
import { issueMessage } from "../util/zod_message.ts";

/** A configuration that cannot be used; the message names file, key path and reason. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Reads, parses and validates a config file. */
export async function loadConfig(path: string): Promise<Config> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    const reason = error instanceof Deno.errors.NotFound ? "file not found" : String(error);
    throw new ConfigError(`Cannot read config ${path}: ${reason}`);
  }
  return parseConfigText(text, path);
}

/** Parses and validates the YAML text of a config file; `source` names it in errors. */
export function parseConfigText(text: string, source: string): Config {
  const doc = YAML.parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) {
    const error = doc.errors[0];
    const where = error.linePos ? ` (line ${error.linePos[0].line})` : "";
    const reason = error.message.split("\n")[0].replace(/ at line \d+, column \d+:?$/, "");
    throw new ConfigError(`Invalid config ${source}${where}: ${reason}`);
  }
  return parseConfig(doc.toJS() ?? {}, source);
}

/** Validates a config object; `source` names it in errors. */
export function parseConfig(value: unknown, source: string): Config {
  const parsed = ConfigSchema.safeParse(value);
  if (parsed.success) return parsed.data;
  const lines = parsed.error.issues.map((issue) => `  ${describeIssue(issue)}`);
  throw new ConfigError(`Invalid config ${source}:\n${lines.join("\n")}`);
}

function describeIssue(issue: z.core.$ZodIssue): string {
  const path = issue.path.map(String);
  if (issue.code === "unrecognized_keys") {
    return issue.keys.map((key) => {
      const known = knownKeys(path);
      const hint = closest(key, known);
      const at = [...path, key].join(".");
      return `${at}: unknown key${hint ? ` (did you mean "${[...path, hint].join(".")}"?)` : ""}`;
    }).join("\n  ");
  }
  return issueMessage(issue, { what: "Key" });
}

/** The keys the schema allows for the object at `path`. */
function knownKeys(path: string[]): string[] {
  let schema: z.core.$ZodType | undefined = ConfigSchema;
  for (const segment of [...path, ""]) {
    schema = unwrap(schema);
    if (!schema) return [];
    const def = schema._zod.def as { type: string; shape?: Record<string, z.core.$ZodType> };
    if (segment === "") return def.type === "object" ? Object.keys(def.shape ?? {}) : [];
    if (def.type === "object") schema = def.shape?.[segment];
    else if (def.type === "array") {
      schema = (def as unknown as { element: z.core.$ZodType }).element;
    } else return [];
  }
  return [];
}

function unwrap(schema: z.core.$ZodType | undefined): z.core.$ZodType | undefined {
  let current = schema;
  while (current) {
    const def = current._zod.def as { type: string; innerType?: z.core.$ZodType };
    if (!def.innerType) return current;
    current = def.innerType;
  }
  return current;
}

/** The candidate nearest to `word` by edit distance, when it is near enough. */
export function closest(word: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const distance = editDistance(word.toLowerCase(), candidate.toLowerCase());
    if (distance < bestDistance) [best, bestDistance] = [candidate, distance];
  }
  return bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost);
    }
    previous = current;
  }
  return previous[b.length];
}
