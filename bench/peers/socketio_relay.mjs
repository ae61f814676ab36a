/**
 * A Socket.IO 4 relay with the benchmark's semantics, run on Node 20: one room per user (joined
 * at connect from `auth.userId`, the equivalent of a 1000 register), one event `m` carrying a frame
 * object, forwarded to the rooms of every user in its `to`, and an ack per message (the
 * equivalent of a 9001 reply). Receipts (type 9101) are frames like any other.
 *
 * Usage: `node bench/peers/socketio_relay.mjs [--host 127.0.0.1] [--port 0]`; prints
 * `listening on http://HOST:PORT` when ready.
 *
 * @module
 */
import { createServer } from "node:http";
import process from "node:process";
import { Server } from "socket.io";

const args = process.argv.slice(2);
/** @param {string} name @param {string} fallback */
function flag(name, fallback) {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
}
const host = flag("host", "127.0.0.1");
const port = Number(flag("port", "0"));

const OK = { code: 200, status: "SUCCESS", msg: "ok" };
const NOT_OK = { code: 406, status: "TO_ERROR", msg: "to is empty" };

const httpServer = createServer();
const io = new Server(httpServer, {
  transports: ["websocket"],
  serveClient: false,
  perMessageDeflate: false,
  maxHttpBufferSize: 65536,
  pingInterval: 25_000,
  pingTimeout: 20_000,
});

io.on("connection", (socket) => {
  const userId = socket.handshake.auth?.userId;
  if (typeof userId !== "string" || userId === "") {
    socket.disconnect(true);
    return;
  }
  socket.join(userId);
  socket.on("m", (frame, ack) => {
    const to = typeof frame?.to === "string" ? frame.to : "";
    if (to === "") {
      if (typeof ack === "function") ack(NOT_OK);
      return;
    }
    socket.to(to.includes(",") ? to.split(",") : to).emit("m", frame);
    if (typeof ack === "function") ack(OK);
  });
});

httpServer.listen(port, host, () => {
  const address = httpServer.address();
  const bound = typeof address === "object" && address ? address.port : port;
  console.log(`socket.io relay listening on http://${host}:${bound}`);
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    io.close();
    process.exit(0);
  });
}
