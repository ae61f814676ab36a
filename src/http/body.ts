/**
 * Request bodies read with a size cap, as JSON or form fields.
 *
 * @module
 */
import { HttpError } from "./errors.ts";

/** Largest request body accepted by any route. */
export const MAX_BODY_BYTES = 1024 * 1024;

/** Reads the body as text, refusing more than `max` bytes (413). */
export async function readText(request: Request, max = MAX_BODY_BYTES): Promise<string> {
  const declared = Number(request.headers.get("content-length") ?? "0");
  if (declared > max) throw new HttpError(413, `Body is larger than ${max} bytes`);
  if (!request.body) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of request.body) {
    size += chunk.length;
    if (size > max) throw new HttpError(413, `Body is larger than ${max} bytes`);
    chunks.push(chunk);
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  return new TextDecoder().decode(bytes);
}

/** Reads a JSON body; 400 when it is not JSON. */
export async function readJson(request: Request): Promise<unknown> {
  return parseJson(await readText(request));
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new HttpError(400, "Body is not valid JSON");
  }
}

/**
 * Reads a JSON object or a form (urlencoded or multipart) as string fields.
 *
 * A urlencoded body that starts with `{` is read as JSON: that is what
 * `curl -d '{"username":…}'` sends (curl labels every `-d` body as a form), and
 * such a body is never a useful form (its one field name would be the whole JSON).
 */
export async function readFields(request: Request): Promise<Record<string, unknown>> {
  const type = request.headers.get("content-type") ?? "";
  let value: unknown;
  if (type.includes("multipart/form-data")) {
    const text = await readText(request);
    let form: FormData;
    try {
      form = await new Response(text, { headers: { "content-type": type } }).formData();
    } catch (error) {
      // No boundary, or a body that does not follow it.
      throw new HttpError(
        400,
        `Body is not valid multipart form data: ${(error as Error).message}`,
      );
    }
    return Object.fromEntries([...form].filter(([, v]) => typeof v === "string"));
  } else if (type.includes("application/x-www-form-urlencoded")) {
    const text = await readText(request);
    if (!text.trimStart().startsWith("{")) return Object.fromEntries(new URLSearchParams(text));
    value = parseJson(text);
  } else {
    value = await readJson(request);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new HttpError(400, "Body must be a JSON object");
  }
  return value as Record<string, unknown>;
}
