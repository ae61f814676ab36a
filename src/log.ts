/**
 * One-line logger: text or JSON lines, a level from config, a name per part.
 *
 * @module
 */

/** Log levels, least to most severe. */
export type LogLevel = "debug" | "info" | "warn" | "error";

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Writes one line per event. */
export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /** A logger whose lines carry `name`. */
  child(name: string): Logger;
}

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  /** Lowest level written. @default "info" */
  level?: LogLevel;
  /** JSON lines instead of text. @default false */
  json?: boolean;
  /** Where lines go. @default console.error for warn/error, console.log otherwise */
  write?: (level: LogLevel, line: string) => void;
}

function defaultWrite(level: LogLevel, line: string) {
  if (RANK[level] >= RANK.warn) console.error(line);
  else console.log(line);
}

/** Creates a logger. */
export function createLogger(options: LoggerOptions = {}, name = "im"): Logger {
  const min = RANK[options.level ?? "info"];
  const write = options.write ?? defaultWrite;
  const json = options.json ?? false;
  const line = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => {
    if (RANK[level] < min) return;
    const time = new Date().toISOString();
    if (json) {
      write(level, JSON.stringify({ time, level, name, msg, ...fields }, errorReplacer));
      return;
    }
    let text = `${time} ${level.toUpperCase().padEnd(5)} [${name}] ${msg}`;
    if (fields) {
      for (const [key, value] of Object.entries(fields)) {
        text += ` ${key}=${
          value instanceof Error ? value.stack ?? value.message : JSON.stringify(value)
        }`;
      }
    }
    write(level, text);
  };
  return {
    debug: (msg, fields) => line("debug", msg, fields),
    info: (msg, fields) => line("info", msg, fields),
    warn: (msg, fields) => line("warn", msg, fields),
    error: (msg, fields) => line("error", msg, fields),
    child: (child) => createLogger(options, `${name}:${child}`),
  };
}

function errorReplacer(_key: string, value: unknown) {
  return value instanceof Error ? { message: value.message, stack: value.stack } : value;
}

/** A secret shortened for logs: its first 4 characters and its length. */
export function redact(secret: string): string {
  return secret.length <= 4 ? "****" : `${secret.slice(0, 4)}…(${secret.length})`;
}
