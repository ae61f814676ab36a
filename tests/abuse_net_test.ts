/**
 * Network-level attacks of issue 13 (items 1, 5's login CSRF, 6, 7, 9) and the
 * subprotocol handshake of PROTOCOL.md section 10, each at a size that runs in
 * seconds, against a real server on 127.0.0.1 with a bystander pair (two
 * registered users) that must keep exchanging frames throughout.
 *
 * @module
 */
import { assert, assertEquals } from "./_assert.ts";
import { openRawWebSocket, startServer, type TestServer } from "./_helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** alice and bob, registered; `exchange()` sends alice → bob and checks both ends. */
async function bystanders(srv: TestServer) {
  const alice = await srv.connect("alice");
  const bob = await srv.connect("bob");
  let n = 0;
  return {
    alice,
    bob,
    async exchange(): Promise<void> {
      const body = `still here ${++n}`;
      const reply = await alice.text("u2", body);
      assertEquals(reply.code, 200);
      const got = await bob.message();
      assertEquals(got.body, body);
    },
  };
}

function portOf(srv: TestServer): number {
  return Number(new URL(srv.url).port);
}

/** Reads what the server sends until it closes the connection or `ms` pass. */
async function readUntilClosed(
  conn: Deno.Conn,
  ms: number,
): Promise<{ closed: boolean; data: Uint8Array }> {
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(65536);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((resolve) => timer = setTimeout(() => resolve("late"), ms));
  let closed = false;
  while (true) {
    const n = await Promise.race([conn.read(buf).catch(() => null), late]);
    if (n === "late") break;
    if (n === null) {
      closed = true;
      break;
    }
    chunks.push(buf.slice(0, n));
  }
  clearTimeout(timer);
  const data = new Uint8Array(chunks.reduce((sum, c) => sum + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    data.set(chunk, offset);
    offset += chunk.length;
  }
  return { closed, data };
}

/** Sends a raw HTTP request and returns the server's answer (complete by its length, or closed). */
async function rawRequest(port: number, text: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(encoder.encode(text));
    let answer = "";
    const buf = new Uint8Array(65536);
    const deadline = Date.now() + 3000;
    while (Date.now() < deadline) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) break;
      answer += decoder.decode(buf.subarray(0, n));
      const end = answer.indexOf("\r\n\r\n");
      const length = answer.match(/\r\ncontent-length: (\d+)/i);
      if (end >= 0 && length && answer.length >= end + 4 + Number(length[1])) break;
    }
    return answer;
  } finally {
    conn.close();
  }
}

/** A masked client frame (mask key 0). */
function frame(opcode: number, fin: boolean, payload: Uint8Array): Uint8Array {
  const n = payload.length;
  const head = n < 126 ? 2 : 4;
  const out = new Uint8Array(head + 4 + n);
  out[0] = (fin ? 0x80 : 0) | opcode;
  if (n < 126) out[1] = 0x80 | n;
  else {
    out[1] = 0x80 | 126;
    out[2] = n >> 8;
    out[3] = n & 255;
  }
  out.set(payload, head + 4);
  return out;
}

/** The close code of the first close frame in `data` (server frames are unmasked), if any. */
function closeCode(data: Uint8Array): number | undefined {
  let i = 0;
  while (i + 2 <= data.length) {
    const opcode = data[i] & 0x0f;
    let len = data[i + 1] & 0x7f;
    let at = i + 2;
    if (len === 126) {
      len = (data[at] << 8) | data[at + 1];
      at += 2;
    } else if (len === 127) {
      len = Number(new DataView(data.buffer, data.byteOffset + at).getBigUint64(0));
      at += 8;
    }
    if (opcode === 0x8) return len >= 2 ? (data[at] << 8) | data[at + 1] : 1005;
    i = at + len;
  }
  return undefined;
}

/**
 * Streams one endless message as 16 KiB fragments until the server cuts the
 * socket; returns the close code it sent. The message never ends (FIN is never
 * set), so a close code means it was cut while it arrived.
 */
async function fragmentBomb(conn: Deno.TcpConn, prefix?: Uint8Array): Promise<number | undefined> {
  const fragment = new Uint8Array(16384).fill(0x61);
  const reading = readUntilClosed(conn, 10_000);
  try {
    if (prefix) await conn.write(prefix);
    await conn.write(frame(0x1, false, fragment));
    // Bounded: 64 fragments (1 MiB), far past any cap; the server cuts much earlier.
    for (let i = 0; i < 64; i++) await conn.write(frame(0x0, false, fragment));
  } catch {
    // Cut while writing: that is the point.
  }
  const { closed, data } = await reading;
  conn.close();
  assert(closed, "the server cut the connection");
  return closeCode(data);
}

Deno.test("a fragmented message over maxFrameBytes is cut while it arrives (1009)", async (t) => {
  await using srv = await startServer({ limits: { maxFrameBytes: 65536 } });
  const pair = await bystanders(srv);

  await t.step("20 unregistered sockets streaming 16 KiB fragments are each cut", async () => {
    const codes = await Promise.all(
      Array.from({ length: 20 }, async () => fragmentBomb(await openRawWebSocket(portOf(srv)))),
    );
    assertEquals(codes, new Array(20).fill(1009));
    await pair.exchange();
  });

  await t.step("a registered socket gets the same limit", async () => {
    const carol = await srv.connect("carol");
    const code = await new Promise<number>((resolve) => {
      // Deno's client sends a 200 KiB message as one frame; the cap counts it all the same.
      carol.sendRaw(JSON.stringify({ id: "big", body: "x".repeat(200_000) }));
      carol.closed.then((event) => resolve(event.code));
    });
    assertEquals(code, 1009);
    await pair.exchange();
  });

  await t.step("the bystanders never noticed", async () => {
    for (let i = 0; i < 5; i++) await pair.exchange();
    assert(srv.logs.every((l) => l.level !== "error"), "no ERROR line");
  });
});

Deno.test("a fragmented message within maxFrameBytes is delivered, a ping inside it answered", async () => {
  await using srv = await startServer();
  const pair = await bystanders(srv);
  const conn = await openRawWebSocket(portOf(srv));
  const text = JSON.stringify({
    id: "frag-1",
    type: 2001,
    isSystem: false,
    from: "u1",
    to: "u2",
    body: "x",
  });
  const bytes = encoder.encode(text);
  const third = Math.floor(bytes.length / 3);
  await conn.write(frame(0x1, false, bytes.subarray(0, third)));
  await conn.write(frame(0x9, true, encoder.encode("are you there")));
  await conn.write(frame(0x0, false, bytes.subarray(third, 2 * third)));
  await conn.write(frame(0x0, true, bytes.subarray(2 * third)));
  // Unregistered: the whole message is answered 402 with its id, after the pong.
  const received = new Uint8Array(4096);
  let data = new Uint8Array(0);
  while (!decoder.decode(data).includes("frag-1")) {
    const n = await conn.read(received);
    assert(n !== null, "the server answered before closing");
    data = new Uint8Array([...data, ...received.subarray(0, n)]);
  }
  conn.close();
  assertEquals(data[0], 0x8a, "the pong came first");
  assertEquals(decoder.decode(data.subarray(2, 15)), "are you there");
  assert(decoder.decode(data).includes('\\"code\\":402'), decoder.decode(data));
  await pair.exchange();
});

Deno.test("a frame sent a few bytes at a time is read once it is whole", async () => {
  await using srv = await startServer();
  const conn = await openRawWebSocket(portOf(srv));
  const text = JSON.stringify({
    id: "slow-1",
    type: 2001,
    isSystem: false,
    from: "u1",
    to: "u2",
    body: "x",
  });
  const bytes = frame(0x1, true, encoder.encode(text + " ".repeat(300)));
  for (let i = 0; i < bytes.length; i += 7) await conn.write(bytes.subarray(i, i + 7));
  const buf = new Uint8Array(4096);
  let answer = "";
  while (!answer.includes("slow-1")) {
    const n = await conn.read(buf);
    assert(n !== null, "answered before closing");
    answer += decoder.decode(buf.subarray(0, n));
  }
  conn.close();
  assert(answer.includes('\\"code\\":402'), answer);
});

Deno.test("slow request heads are cut at limits.headerTimeoutSeconds", async () => {
  await using srv = await startServer({ limits: { headerTimeoutSeconds: 1 } });
  const pair = await bystanders(srv);
  const head = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + "a".repeat(40);
  // 20 slowloris connections, one byte every 200 ms (a complete head would take 14 s).
  const results = await Promise.all(Array.from({ length: 20 }, async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: portOf(srv) });
    let cut = false;
    const reading = readUntilClosed(conn, 6000).then((r) => {
      cut = r.closed;
      return r;
    });
    for (const ch of head) {
      if (cut) break;
      try {
        await conn.write(encoder.encode(ch));
      } catch {
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const { closed, data } = await reading;
    conn.close();
    return { closed, answered: data.length > 0 };
  }));
  assertEquals(results.filter((r) => r.closed).length, 20);
  assertEquals(results.filter((r) => r.answered).length, 0);
  await pair.exchange();
});

Deno.test("slow request bodies are cut at limits.bodyTimeoutSeconds", async () => {
  await using srv = await startServer({ limits: { bodyTimeoutSeconds: 1 } });
  const pair = await bystanders(srv);
  const results = await Promise.all(Array.from({ length: 10 }, async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: portOf(srv) });
    await conn.write(encoder.encode(
      "POST /app/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
        "Content-Length: 1000\r\n\r\n{",
    ));
    let cut = false;
    const reading = readUntilClosed(conn, 6000).then((r) => {
      cut = r.closed;
      return r;
    });
    // One byte every 200 ms: the whole body would take 200 s.
    for (let i = 0; i < 30 && !cut; i++) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      await conn.write(encoder.encode(" ")).catch(() => cut = true);
    }
    const { closed } = await reading;
    conn.close();
    return closed;
  }));
  assertEquals(results.filter(Boolean).length, 10);
  await pair.exchange();
});

Deno.test("answered keep-alive connections are closed after limits.keepAliveTimeoutSeconds", async () => {
  await using srv = await startServer({ limits: { keepAliveTimeoutSeconds: 1 } });
  const pair = await bystanders(srv);
  const results = await Promise.all(Array.from({ length: 20 }, async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: portOf(srv) });
    await conn.write(encoder.encode("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
    const { closed, data } = await readUntilClosed(conn, 5000);
    conn.close();
    return { closed, status: decoder.decode(data).split("\r\n")[0] };
  }));
  assertEquals(results.filter((r) => r.status === "HTTP/1.1 200 OK").length, 20);
  assertEquals(results.filter((r) => r.closed).length, 20);
  await pair.exchange();

  // A connection in use is not idle: two requests one after the other on one connection.
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: portOf(srv) });
  for (let i = 0; i < 2; i++) {
    await conn.write(encoder.encode("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
    const buf = new Uint8Array(4096);
    const n = await conn.read(buf);
    assert(n !== null && decoder.decode(buf.subarray(0, n)).startsWith("HTTP/1.1 200"));
  }
  conn.close();
});

Deno.test("malformed requests answer 400/426 without an ERROR, and their log lines are capped", async (t) => {
  await using srv = await startServer({ log: { refusalsPerMinute: 3 } });
  const pair = await bystanders(srv);
  const port = portOf(srv);
  const upgrade = (lines: string[]) =>
    rawRequest(port, `GET /websocket HTTP/1.1\r\nHost: x\r\n${lines.join("\r\n")}\r\n\r\n`);
  const status = (answer: string) => answer.split("\r\n")[0];
  const before = srv.logs.length;

  await t.step("an upgrade without Sec-WebSocket-Key: 400", async () => {
    const answer = await upgrade([
      "Upgrade: websocket",
      "Connection: Upgrade",
      "Sec-WebSocket-Version: 13",
    ]);
    assertEquals(status(answer), "HTTP/1.1 400 Bad Request");
    assert(answer.includes("Sec-WebSocket-Key"), answer);
  });

  await t.step("Upgrade: websocket with Connection: keep-alive: 400", async () => {
    const answer = await upgrade([
      "Upgrade: websocket",
      "Connection: keep-alive",
      "Sec-WebSocket-Version: 13",
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    ]);
    assertEquals(status(answer), "HTTP/1.1 400 Bad Request");
  });

  await t.step("a missing or bad Sec-WebSocket-Version: 426 naming version 13", async () => {
    for (const version of [[], ["Sec-WebSocket-Version: 12"]]) {
      const answer = await upgrade([
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        ...version,
      ]);
      assertEquals(status(answer), "HTTP/1.1 426 Upgrade Required");
      assert(/\r\nsec-websocket-version: 13\r\n/i.test(answer), answer);
    }
  });

  await t.step("a multipart login without a boundary: 400", async () => {
    const body = "username=alice&password=alice-pw";
    const answer = await rawRequest(
      port,
      `POST /app/login HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data\r\n` +
        `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
    );
    assertEquals(status(answer), "HTTP/1.1 400 Bad Request");
  });

  await t.step("a request head over 16 KiB: 431", async () => {
    const answer = await rawRequest(port, `GET / HTTP/1.1\r\nX: ${"a".repeat(100_000)}\r\n\r\n`);
    assertEquals(status(answer), "HTTP/1.1 431 Request Header Fields Too Large");
  });

  await t.step("none of them wrote more than one line, and none an ERROR", () => {
    const lines = srv.logs.slice(before);
    assert(lines.length <= 6, lines.map((l) => l.line).join("\n"));
    assert(lines.every((l) => l.level !== "error"), lines.map((l) => l.line).join("\n"));
  });

  await t.step("100 requests that are not HTTP write at most refusalsPerMinute lines", async () => {
    const start = srv.logs.length;
    const answers = await Promise.all(
      Array.from({ length: 100 }, () => rawRequest(port, "NOT HTTP AT ALL\r\n\r\n")),
    );
    assertEquals(answers.filter((a) => status(a) === "HTTP/1.1 400 Bad Request").length, 100);
    // The budget is per kind and minute: 3 lines of unparsable HTTP in all, the 431 included.
    const lines = srv.logs.filter((l) => l.line.includes("Parse Error"));
    assertEquals(lines.length, 3);
    assert(srv.logs.length - start <= 3, "no line beyond the budget");
    await pair.exchange();
  });
});

Deno.test("the server selects a subprotocol as PROTOCOL.md section 10 says", async (t) => {
  await using srv = await startServer();
  const cases: [string[] | undefined, string][] = [
    [["im.v1"], "im.v1"],
    [["foo", "im.v1"], "im.v1"],
    [["chat"], "chat"],
    [undefined, ""],
  ];
  for (const [offered, selected] of cases) {
    await t.step(`offered ${JSON.stringify(offered ?? [])}: "${selected}"`, async () => {
      const socket = offered ? new WebSocket(srv.wsUrl, offered) : new WebSocket(srv.wsUrl);
      const opened = Promise.withResolvers<void>();
      const closed = Promise.withResolvers<void>();
      socket.onopen = () => opened.resolve();
      socket.onerror = () => opened.reject(new Error("handshake failed"));
      socket.onclose = () => closed.resolve();
      await opened.promise;
      assertEquals(socket.protocol, selected);
      // Frames are the same whatever was selected: an unregistered 2001 answers 402.
      const reply = Promise.withResolvers<string>();
      socket.onmessage = (event) => reply.resolve(event.data);
      socket.send(JSON.stringify({ id: "x", type: 2001, from: "u1", to: "u2", body: "hi" }));
      const answer = JSON.parse(await reply.promise);
      assertEquals([answer.type, answer.id], [9001, "x"], JSON.stringify(answer));
      socket.close();
      await closed.promise;
    });
  }
});

Deno.test("login refuses form POSTs from a foreign Origin (login CSRF)", async () => {
  await using srv = await startServer({ server: { corsOrigins: ["https://office.example"] } });
  const form = (origin?: string) =>
    fetch(`${srv.url}/app/login`, {
      method: "POST",
      headers: {
        "content-type": "application/x-www-form-urlencoded",
        ...(origin ? { origin } : {}),
      },
      body: "username=alice&password=alice-pw",
    });
  const foreign = await form("https://evil.example");
  assertEquals(foreign.status, 403);
  assert((await foreign.json()).msg.includes("https://evil.example"));
  const cookie = await fetch(`${srv.url}/api/login`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", origin: "null" },
    body: "username=alice&password=alice-pw",
  });
  assertEquals(cookie.status, 403);
  assertEquals(cookie.headers.get("set-cookie"), null);
  await cookie.body?.cancel();
  for (const origin of ["https://office.example", srv.url, undefined]) {
    const response = await form(origin);
    assertEquals(response.status, 200, `origin ${origin}`);
    await response.body?.cancel();
  }
});

Deno.test("/metrics can be served on server.metricsAddress only, behind server.metricsKey", async () => {
  const key = "metrics-key-0123456789";
  await using srv = await startServer({
    server: { metricsAddress: "127.0.0.1:0", metricsKey: key },
  });
  const line = srv.logs.find((l) => l.line.includes("listening on"))!.line;
  const metricsUrl = line.match(/metrics="(http:\/\/[^"]+)"/)![1];
  const main = await fetch(`${srv.url}/metrics`, { headers: { authorization: `Bearer ${key}` } });
  assertEquals(main.status, 404);
  await main.body?.cancel();
  const open = await fetch(metricsUrl);
  assertEquals(open.status, 401);
  await open.body?.cancel();
  const ok = await fetch(metricsUrl, { headers: { authorization: `Bearer ${key}` } });
  assertEquals(ok.status, 200);
  assert((await ok.text()).includes("im_connections_open"));
  const health = await fetch(`${srv.url}/healthz`);
  assertEquals(health.status, 200);
  await health.body?.cancel();
});

Deno.test("a peer that answers no ping is closed (1001); one that answers stays", async () => {
  await using srv = await startServer({
    websocket: { idleTimeoutSeconds: 1, registerTimeoutSeconds: 30 },
  });
  // Deno's client answers pings by itself.
  const pair = await bystanders(srv);
  // A raw socket never answers: pinged after 0.5 s of silence, closed after about 1 s more.
  const silent = await openRawWebSocket(portOf(srv));
  const { closed, data } = await readUntilClosed(silent, 8000);
  silent.close();
  assert(closed, "the silent peer was closed");
  assertEquals(data[0], 0x89, "a ping came first");
  assertEquals(closeCode(data), 1001);
  // The answering pair outlived it, silent for the same time, and still talks.
  await pair.exchange();
});

Deno.test("a text frame that is not UTF-8 closes its connection with 1007, and only it", async () => {
  await using srv = await startServer();
  const pair = await bystanders(srv);
  const conn = await openRawWebSocket(portOf(srv));
  await conn.write(frame(0x1, true, new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])));
  const { closed, data } = await readUntilClosed(conn, 6000);
  conn.close();
  assert(closed, "the server closed it");
  assertEquals(closeCode(data), 1007);
  await pair.exchange();
});
