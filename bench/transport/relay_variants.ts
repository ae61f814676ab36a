/**
 * The bare relay of `bench/peers/bare_relay.ts` behind each WebSocket transport we considered
 * (docs/TRANSPORT.md), so they can be compared with the same load generator (bare dialect):
 *
 * - `deno`: `Deno.serve` + `Deno.upgradeWebSocket` (today's path; no cap on fragmented messages)
 * - `ws`: `node:http` + npm `ws` (`maxPayload` counts fragments)
 * - `netws`: `node:net` accepts, hands each socket to `node:http` (so the server owns the raw
 *   socket before any header is parsed: header and idle deadlines), upgrades with npm `ws`
 * - `denonode`: `node:http`'s upgrade socket handed to `Deno.upgradeWebSocket({ socket, head })`
 * - `own`: `node:http` + our own frame reader and writer (`src/transport/ws_connection.ts`)
 *
 * Usage: `deno run -A bench/transport/relay_variants.ts --mode ws [--port 0] [--max-payload N]`.
 *
 * @module
 */
import http from "node:http";
import net from "node:net";
import type { Buffer } from "node:buffer";
// @ts-types="npm:@types/ws@8"
import { WebSocketServer } from "ws";
import { switchingProtocols, WsConnection } from "../../src/transport/ws_connection.ts";

const OK_BODY = JSON.stringify(JSON.stringify({ code: 200, status: "SUCCESS", msg: "ok" }));
const SESSION_BODY = JSON.stringify(
  JSON.stringify({ code: 402, status: "SESSION_ERROR", msg: "not registered" }),
);
const MESSAGE_BODY = JSON.stringify(
  JSON.stringify({ code: 401, status: "MESSAGE_ERROR", msg: "not a frame" }),
);

interface Peer {
  send(text: string): void;
  open(): boolean;
}

const users = new Map<string, Set<Peer>>();

function reply(peer: Peer, id: string, to: string, body: string): void {
  peer.send(
    `{"id":${JSON.stringify(id)},"type":9001,"isSystem":true,"from":"SYSTEM","to":${
      JSON.stringify(to)
    },"body":${body},"timestamp":${Date.now()}}`,
  );
}

/** The relay's per-connection logic; returns the message and close handlers. */
function relay(peer: Peer): { message(text: string): void; close(): void } {
  let userId = "";
  return {
    message(text: string) {
      let frame: { id?: unknown; type?: unknown; from?: unknown; to?: unknown };
      try {
        frame = JSON.parse(text);
      } catch {
        reply(peer, "", userId, MESSAGE_BODY);
        return;
      }
      const id = typeof frame.id === "string" ? frame.id : "";
      if (frame.type === 1000) {
        if (typeof frame.from !== "string" || frame.from === "") {
          reply(peer, id, userId, MESSAGE_BODY);
          return;
        }
        userId = frame.from;
        let set = users.get(userId);
        if (!set) users.set(userId, set = new Set());
        set.add(peer);
        reply(peer, id, userId, OK_BODY);
        return;
      }
      if (userId === "") {
        reply(peer, id, "", SESSION_BODY);
        return;
      }
      const to = typeof frame.to === "string" ? frame.to : "";
      for (const recipient of to.split(",")) {
        const set = users.get(recipient);
        if (!set) continue;
        for (const other of set) if (other !== peer && other.open()) other.send(text);
      }
      reply(peer, id, userId, OK_BODY);
    },
    close() {
      const set = users.get(userId);
      if (!set) return;
      for (const p of set) if (p === peer) set.delete(p);
      if (set.size === 0) users.delete(userId);
    },
  };
}

function flag(name: string, fallback: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < Deno.args.length ? Deno.args[i + 1] : fallback;
}

const mode = flag("mode", "deno");
const hostname = "127.0.0.1";
const port = Number(flag("port", "0"));
const maxPayload = Number(flag("max-payload", String(64 * 1024)));
const listening = (p: number) => console.log(`${mode} relay listening on http://${hostname}:${p}`);

function acceptDeno(socket: WebSocket) {
  const peer: Peer = {
    send: (text) => socket.send(text),
    open: () => socket.readyState === WebSocket.OPEN,
  };
  const logic = relay(peer);
  socket.onmessage = (event) => {
    const text = event.data as string;
    if (text.length > maxPayload) return socket.close(1009, "frame too large");
    logic.message(text);
  };
  socket.onclose = () => logic.close();
  socket.onerror = () => {};
}

// deno-lint-ignore no-explicit-any
function acceptWs(ws: any) {
  const peer: Peer = { send: (text) => ws.send(text), open: () => ws.readyState === 1 };
  const logic = relay(peer);
  ws.on("message", (data: Buffer, isBinary: boolean) => {
    if (!isBinary) logic.message(data.toString());
  });
  ws.on("close", () => logic.close());
  ws.on("error", (e: Error) => {
    if (Deno.env.get("RELAY_DEBUG")) console.error("ws error", e.message);
    // ws answers 1009 and then waits up to 30 s for the peer's close while it reads and
    // discards: cut the socket at once instead.
    ws.terminate();
  });
}

let stop: () => void = () => {};
if (mode === "deno") {
  const server = Deno.serve({ hostname, port, onListen: ({ port }) => listening(port) }, (req) => {
    if (req.headers.get("upgrade") !== "websocket") return new Response("relay", { status: 404 });
    const { socket, response } = Deno.upgradeWebSocket(req, { idleTimeout: 60 });
    acceptDeno(socket);
    return response;
  });
  stop = () => server.shutdown();
} else {
  const wss = new WebSocketServer({ noServer: true, maxPayload, perMessageDeflate: false });
  const server = http.createServer((_req, res) => {
    res.writeHead(404);
    res.end("relay");
  });
  server.on("upgrade", (req, socket, head) => {
    socket.on("error", () => {});
    if (mode === "own") {
      socket.write(switchingProtocols(String(req.headers["sec-websocket-key"])));
      const link: { logic?: ReturnType<typeof relay> } = {};
      const conn: WsConnection = new WsConnection(socket, {
        text: (text) => link.logic!.message(text),
        binary() {},
        activity() {},
        refused() {},
        closed: () => link.logic!.close(),
      }, maxPayload);
      link.logic = relay({ send: (text) => conn.send(text), open: () => conn.isOpen });
      conn.start(head);
      return;
    }
    if (mode === "denonode") {
      const headers = new Headers();
      for (const [k, v] of Object.entries(req.headers)) {
        if (typeof v === "string") headers.set(k, v);
      }
      const request = new Request(`http://${hostname}${req.url}`, { headers });
      // deno-lint-ignore no-explicit-any
      const { socket: ws, response } = Deno.upgradeWebSocket(request, { socket, head } as any);
      void response;
      acceptDeno(ws);
      return;
    }
    // deno-lint-ignore no-explicit-any
    wss.handleUpgrade(req, socket, head, (ws: any) => acceptWs(ws));
  });
  if (mode === "netws") {
    const front = net.createServer((socket) => {
      socket.setNoDelay(true);
      server.emit("connection", socket);
    });
    front.listen(port, hostname, () => listening((front.address() as net.AddressInfo).port));
    stop = () => front.close();
  } else {
    server.listen(port, hostname, () => listening((server.address() as net.AddressInfo).port));
    stop = () => server.close();
  }
}

Deno.addSignalListener("SIGTERM", () => {
  stop();
  setTimeout(() => Deno.exit(0), 200);
});
