/**
 * The floor for this runtime: a bare `Deno.serve` WebSocket relay that parses each frame as JSON,
 * registers a connection on a 1000 frame (no session check), forwards every other frame unchanged
 * to the sockets of the users in its `to`, and answers each frame with a 9001. No storage, no
 * validation beyond what forwarding needs.
 *
 * Usage: `deno run -A bench/peers/bare_relay.ts [--host 127.0.0.1] [--port 0]`; prints
 * `listening on http://HOST:PORT` when ready.
 *
 * @module
 */

const OK_BODY = JSON.stringify(JSON.stringify({ code: 200, status: "SUCCESS", msg: "ok" }));
const SESSION_BODY = JSON.stringify(
  JSON.stringify({ code: 402, status: "SESSION_ERROR", msg: "not registered" }),
);
const MESSAGE_BODY = JSON.stringify(
  JSON.stringify({ code: 401, status: "MESSAGE_ERROR", msg: "not a frame" }),
);

/** Sockets by userId. */
const users = new Map<string, Set<WebSocket>>();

function reply(socket: WebSocket, id: string, to: string, body: string): void {
  socket.send(
    `{"id":${JSON.stringify(id)},"type":9001,"isSystem":true,"from":"SYSTEM","to":${
      JSON.stringify(to)
    },"body":${body},"timestamp":${Date.now()}}`,
  );
}

function accept(socket: WebSocket): void {
  let userId = "";
  socket.onmessage = (event) => {
    const text = event.data as string;
    let frame: { id?: unknown; type?: unknown; from?: unknown; to?: unknown };
    try {
      frame = JSON.parse(text);
    } catch {
      reply(socket, "", userId, MESSAGE_BODY);
      return;
    }
    const id = typeof frame.id === "string" ? frame.id : "";
    if (frame.type === 1000) {
      if (typeof frame.from !== "string" || frame.from === "") {
        reply(socket, id, userId, MESSAGE_BODY);
        return;
      }
      userId = frame.from;
      let set = users.get(userId);
      if (!set) users.set(userId, set = new Set());
      set.add(socket);
      reply(socket, id, userId, OK_BODY);
      return;
    }
    if (userId === "") {
      reply(socket, id, "", SESSION_BODY);
      return;
    }
    const to = typeof frame.to === "string" ? frame.to : "";
    for (const recipient of to.split(",")) {
      const set = users.get(recipient);
      if (!set) continue;
      for (const peer of set) {
        if (peer !== socket && peer.readyState === WebSocket.OPEN) peer.send(text);
      }
    }
    reply(socket, id, userId, OK_BODY);
  };
  socket.onclose = () => {
    const set = users.get(userId);
    if (!set) return;
    set.delete(socket);
    if (set.size === 0) users.delete(userId);
  };
  socket.onerror = () => {};
}

function flag(name: string, fallback: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < Deno.args.length ? Deno.args[i + 1] : fallback;
}

const hostname = flag("host", "127.0.0.1");
const server = Deno.serve({
  hostname,
  port: Number(flag("port", "0")),
  onListen: ({ port }) => console.log(`bare relay listening on http://${hostname}:${port}`),
}, (request) => {
  if (request.headers.get("upgrade") !== "websocket") {
    return new Response("bare relay: WebSocket only", { status: 404 });
  }
  const { socket, response } = Deno.upgradeWebSocket(request, { idleTimeout: 60 });
  accept(socket);
  return response;
});

Deno.addSignalListener("SIGTERM", () => {
  server.shutdown().finally(() => Deno.exit(0));
  setTimeout(() => Deno.exit(0), 1000);
});
