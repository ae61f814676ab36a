/**
 * The client against a real server on port 0: login, send and receive,
 * receipts, refused frames, duplicates, resends and reconnects.
 */
import { deepStrictEqual, ok } from "node:assert/strict";
import {
  type ClientEventMap,
  type ClientOptions,
  ClosedError,
  connect,
  HttpError,
  ImClient,
  login,
  type Message,
  MessageType as ClientMessageType,
  type NoticeEvent,
  type ReceiptEvent,
  StatusCode as ClientStatusCode,
  StatusError,
  statusName as clientStatusName,
  SYSTEM as CLIENT_SYSTEM,
} from "../src/client/client.js";
import { MessageType, StatusCode, statusName, SYSTEM } from "../src/protocol/codes.ts";
import { createServer, type ImServer } from "../src/server.ts";
import { startServer, TEST_API_KEY, testConfig } from "./_helpers.ts";
import { createLogger } from "../src/log.ts";

const FAST = { minDelayMs: 20, maxDelayMs: 200, factor: 2, jitter: 0.5 };
const PASSWORDS: Record<string, string> = { alice: "alice-pw", bob: "bob-pw", carol: "carol-pw" };

function client(
  url: string,
  username: string,
  extra: Partial<ClientOptions> = {},
) {
  return new ImClient({
    url,
    clientName: extra.clientName ?? "test",
    username,
    password: PASSWORDS[username],
    reconnect: FAST,
    ...extra,
  });
}

/** Resolves with the next detail of an event that passes the filter. */
function next<K extends keyof ClientEventMap>(
  c: ImClient,
  type: K,
  filter: (detail: ClientEventMap[K]) => boolean = () => true,
  timeoutMs = 5000,
): Promise<ClientEventMap[K]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`Timed out waiting for "${type}"`));
    }, timeoutMs);
    const off = c.on(type, (detail) => {
      if (!filter(detail)) return;
      clearTimeout(timer);
      off();
      resolve(detail);
    });
  });
}

function assert(value: unknown, message?: string): asserts value {
  ok(value, message);
}

function assertEquals<T>(actual: T, expected: T, message?: string) {
  deepStrictEqual(actual, expected, message);
}

/** Awaits a rejection of the given class (and message part); returns the error. */
async function assertRejects<E extends Error>(
  fn: () => Promise<unknown>,
  // deno-lint-ignore no-explicit-any
  ErrorClass: new (...args: any[]) => E,
  includes?: string,
): Promise<E> {
  try {
    await fn();
  } catch (error) {
    assert(error instanceof ErrorClass, `Expected ${ErrorClass.name}, got ${error}`);
    if (includes) {
      assert(error.message.includes(includes), `"${error.message}" lacks "${includes}"`);
    }
    return error;
  }
  throw new Error(`Expected a rejection with ${ErrorClass.name}`);
}

function delay(ms: number) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

Deno.test("client constants equal the server's protocol codes", () => {
  assertEquals({ ...ClientMessageType }, { ...MessageType });
  assertEquals({ ...ClientStatusCode }, { ...StatusCode });
  assertEquals(CLIENT_SYSTEM, SYSTEM);
  for (const code of [...Object.values(StatusCode), 0, 201, 499]) {
    assertEquals(clientStatusName(code), statusName(code));
  }
});

Deno.test("client logs in, sends, receives and gets a receipt", async (t) => {
  await using server = await startServer();
  const alice = await connect({
    url: server.url,
    clientName: "web",
    username: "alice",
    password: "alice-pw",
  });
  const bob = await connect({
    url: server.url,
    clientName: "web",
    username: "bob",
    password: "bob-pw",
  });
  try {
    await t.step("connect() registers with the userId from login", () => {
      assertEquals(alice.state, "open");
      assertEquals(alice.userId, "u1");
      assert(alice.sessionId);
    });

    await t.step(
      "send() resolves with the 9001 SUCCESS and the recipient gets the text",
      async () => {
        const received = next(bob, "message");
        const receipt = next(alice, "receipt");
        const result = await alice.send("u2", "hello bob");
        assertEquals(result.code, 200);
        assertEquals(result.status, "SUCCESS");
        const message: Message = await received;
        assertEquals(message.id, result.id);
        assertEquals(message.from, "u1");
        assertEquals(message.body, "hello bob");
        assertEquals(message.type, 2001);
        assert(typeof message.timestamp === "number");
        const r: ReceiptEvent = await receipt;
        assertEquals(r.id, result.id);
        assertEquals(r.from, "u2");
        assertEquals(r.code, 200);
      },
    );

    await t.step("notice() sends 3001 and, when targeted, 3003", async () => {
      const plain = next(bob, "notice");
      await alice.notice("u2", { title: "Build", msg: "Build 42 passed" });
      const n1: NoticeEvent = await plain;
      assertEquals(n1.message.type, 3001);
      assertEquals(n1.notice, { title: "Build", msg: "Build 42 passed" });
      assertEquals(n1.targeted, false);
      const targeted = next(bob, "notice");
      await alice.notice("u2", { title: "Order", msg: "Shipped", target: "/orders/7" }, {
        targeted: true,
      });
      const n2: NoticeEvent = await targeted;
      assertEquals(n2.message.type, 3003);
      assertEquals(n2.notice?.target, "/orders/7");
      assertEquals(n2.targeted, true);
    });

    await t.step("a non-200 status rejects with StatusError carrying code and name", async () => {
      const empty = await assertRejects(() => alice.send("", "to nobody"), StatusError);
      assertEquals([empty.code, empty.status], [406, "TO_ERROR"]);
      const badNotice = await assertRejects(
        () => alice.notice("u2", { title: "", msg: "" }),
        StatusError,
      );
      assertEquals([badNotice.code, badNotice.status], [404, "BODY_ERROR"]);
      const custom = await assertRejects(() => alice.sendCustom(4242, "u2", { x: 1 }), StatusError);
      assertEquals([custom.code, custom.status], [403, "TYPE_ERROR"]);
      assertEquals(alice.pending, 0);
      assertEquals(alice.state, "open");
    });

    await t.step("messages() iterates text messages", async () => {
      const iterator = bob.messages();
      await alice.send(["u2"], "one");
      await alice.send("u2", "two");
      const first = await iterator.next();
      const second = await iterator.next();
      assertEquals([first.value?.body, second.value?.body], ["one", "two"]);
      await iterator.return?.();
    });

    await t.step("frames to several users reach each of them", async () => {
      const carol = await connect({
        url: server.url,
        clientName: "web",
        username: "carol",
        password: "carol-pw",
      });
      try {
        const toBob = next(bob, "message", (m) => m.body === "to both");
        const toCarol = next(carol, "message", (m) => m.body === "to both");
        await alice.send(["u2", "u3"], "to both");
        await Promise.all([toBob, toCarol]);
      } finally {
        await carol.close();
      }
    });
  } finally {
    await alice.close();
    await bob.close();
  }
  assertEquals(alice.state, "closed");
});

Deno.test("client login failures", async (t) => {
  await using server = await startServer();

  await t.step("a wrong password rejects connect() with HttpError 401 and closes", async () => {
    const c = client(server.url, "alice", { password: "wrong" });
    const error = await assertRejects(() => c.connect(), HttpError);
    assertEquals(error.code, 401);
    assertEquals(c.state, "closed");
    await assertRejects(() => c.send("u2", "x"), ClosedError);
  });

  await t.step("a bad token rejects connect() with HttpError 401", async () => {
    const c = new ImClient({ url: server.url, clientName: "t", token: "nope", userId: "u1" });
    const error = await assertRejects(() => c.connect(), HttpError);
    assertEquals(error.code, 401);
  });

  await t.step("a token from login() connects without a password", async () => {
    const { token, userId } = await login(server.url, "bob", "bob-pw");
    const c = await connect({ url: server.url, clientName: "tok", token, userId });
    assertEquals(c.userId, "u2");
    await c.close();
  });

  await t.step("an invalid clientName throws at once", () => {
    let thrown = false;
    try {
      new ImClient({ url: server.url, clientName: "no spaces", username: "a", password: "b" });
    } catch (error) {
      thrown = error instanceof TypeError;
    }
    assert(thrown);
  });
});

Deno.test("client drops duplicate deliveries by (from, id)", async () => {
  await using server = await startServer();
  const alice = await connect({
    url: server.url,
    clientName: "web",
    username: "alice",
    password: "alice-pw",
    reconnect: FAST,
  });
  // Bob does not acknowledge, so the server delivers the message again at his next register.
  const bob = client(server.url, "bob", { receipts: false });
  await bob.connect();
  try {
    const messages: Message[] = [];
    bob.on("message", (m) => messages.push(m));
    const first = next(bob, "message");
    const sent = await alice.send("u2", "once");
    await first;
    const duplicate = next(bob, "duplicate");
    bob.dropConnection();
    const again: Message = await duplicate;
    assertEquals(again.id, sent.id);
    assertEquals(messages.map((m) => m.body), ["once"]);
    // A manual receipt stops the redelivery.
    const receipt = next(alice, "receipt");
    const ack = await bob.receipt(again);
    assertEquals(ack.code, 200);
    assertEquals((await receipt).id, sent.id);
  } finally {
    await alice.close();
    await bob.close();
  }
});

Deno.test("client reconnects with a fresh session when the server restarts on the same port", async () => {
  const logger = createLogger({ level: "error", write: () => {} });
  let server: ImServer = await createServer(testConfig(), { logger });
  const port = server.port;
  const alice = client(server.url, "alice");
  const bob = client(server.url, "bob");
  // Only a token, no password: tokens of a server without auth.tokenSecret end at its restart.
  const { token } = await login(server.url, "carol", "carol-pw");
  const carol = new ImClient({ url: server.url, clientName: "tok", token, reconnect: FAST });
  await alice.connect();
  await bob.connect();
  await carol.connect();
  assertEquals(carol.userId, "u3", "the userId is read from the token");
  const carolClosed = next(carol, "state", (s) => s.state === "closed");
  const firstSession = alice.sessionId;
  try {
    const down = next(alice, "state", (s) => s.state === "reconnecting");
    await server.close();
    await down;
    // Sent while the server is down: queued and sent after the next register.
    const queued = alice.send("u2", "sent while down");
    const reopened = alice.connect(); // while reconnecting: waits for the outcome
    await delay(100);
    server = await createServer(testConfig({ websocket: { port } }), { logger });
    const received = next(bob, "message", (m) => m.body === "sent while down");
    await reopened;
    const result = await queued;
    assertEquals(result.code, 200);
    await received;
    assertEquals(alice.state, "open");
    assert(alice.sessionId !== firstSession, "a fresh sessionId is used");
    const closed = await carolClosed;
    assert(closed.error instanceof HttpError && closed.error.code === 401, String(closed.error));
  } finally {
    await carol.close();
    await alice.close();
    await bob.close();
    await server.close();
  }
});

Deno.test("client resends unanswered frames with the same id and they arrive once", async () => {
  await using server = await startServer();
  await using proxy = new TcpProxy(server.server.port);
  const wsUrl = `ws://127.0.0.1:${proxy.port}/websocket`;
  const alice = client(server.url, "alice", { wsUrl, ackTimeoutMs: 300 });
  const bob = client(server.url, "bob");
  await alice.connect();
  await bob.connect();
  try {
    const messages: Message[] = [];
    bob.on("message", (m) => messages.push(m));
    // The server gets the frame but its 9001 never reaches Alice.
    proxy.holdReplies = true;
    const sending = alice.send("u2", "exactly once");
    const dropped = next(alice, "state", (s) => s.state === "reconnecting");
    await next(bob, "message", (m) => m.body === "exactly once");
    await dropped;
    proxy.holdReplies = false;
    proxy.cut();
    const result = await sending;
    assertEquals(result.code, 200);
    await delay(200);
    assertEquals(messages.map((m) => m.body), ["exactly once"]);
    assertEquals(messages[0].id, result.id);
  } finally {
    await alice.close();
    await bob.close();
  }
});

Deno.test("client closes for good when a newer connection replaces it (4001)", async () => {
  await using server = await startServer();
  const first = client(server.url, "alice", { clientName: "phone" });
  await first.connect();
  const closed = next(first, "state", (s) => s.state === "closed");
  const second = client(server.url, "alice", { clientName: "phone" });
  await second.connect();
  try {
    const state = await closed;
    assertEquals(state.reason, "replaced");
    await assertRejects(() => first.send("u2", "x"), ClosedError);
    assertEquals(second.state, "open");
  } finally {
    await first.close();
    await second.close();
  }
});

Deno.test("client closes for good when a business backend kicks it (4003)", async () => {
  await using server = await startServer();
  const alice = client(server.url, "alice", { clientName: "phone" });
  const states: ClientEventMap["state"][] = [];
  alice.on("state", (s) => states.push(s));
  await alice.connect();
  const closed = next(alice, "state", (s) => s.state === "closed");
  const errored = next(alice, "error");
  const kick = await fetch(`${server.url}/server/kick`, {
    method: "POST",
    headers: { authorization: `Bearer ${TEST_API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ userId: "u1", clientName: "phone" }),
  });
  assertEquals((await kick.json()).data.kicked, 1);
  try {
    const state = await closed;
    assertEquals([state.reason, state.code], ["kicked", 4003]);
    assert(await errored instanceof ClosedError);
    await assertRejects(() => alice.send("u2", "x"), ClosedError, "kicked");
    // Longer than its whole reconnect backoff: the user is still offline.
    await delay(FAST.maxDelayMs * 3);
    assertEquals(states.map((s) => s.state), ["connecting", "open", "closed"]);
    const presence = await fetch(`${server.url}/server/presence?users=u1`, {
      headers: { authorization: `Bearer ${TEST_API_KEY}` },
    });
    assertEquals((await presence.json()).data.u1.online, false);
  } finally {
    await alice.close();
  }
});

Deno.test("client does not acknowledge copies of its user's own sends", async () => {
  await using server = await startServer();
  const web = client(server.url, "alice", { clientName: "web" });
  await web.connect();
  const phone = client(server.url, "alice", { clientName: "phone" });
  const bob = client(server.url, "bob");
  const receiptsOut: string[] = [];
  phone.on("frame", (f) => {
    if (f.direction === "out" && f.frame?.type === ClientMessageType.RECEIPT) {
      receiptsOut.push(f.frame.id);
    }
  });
  const refused: string[] = [];
  phone.on("status", (s) => {
    if (s.type === ClientMessageType.RECEIPT && s.code !== 200) refused.push(`${s.id} ${s.code}`);
  });
  await phone.connect();
  await bob.connect();
  try {
    // A copy: from alice, alice not in `to`.
    const copy = next(phone, "message", (m) => m.body === "to bob");
    const { id: copyId } = await web.send("u2", "to bob");
    assertEquals((await copy).from, "u1");
    await delay(0); // the receipt, if any, goes out right after the event
    assertEquals(receiptsOut, [], "no 9101 for an own copy");

    // Alice is a recipient too: the phone acknowledges, and the server accepts it.
    const both = next(phone, "message", (m) => m.body === "to both");
    const accepted = next(phone, "status", (s) => s.type === ClientMessageType.RECEIPT);
    const { id } = await web.send(["u2", "u1"], "to both");
    await both;
    assertEquals((await accepted).code, 200);
    assertEquals(receiptsOut, [id]);

    // `to` entries are trimmed, by the server and the client alike: " u1" is alice.
    const spaced = next(phone, "message", (m) => m.body === "spaced");
    const acceptedSpaced = next(phone, "status", (s) => s.type === ClientMessageType.RECEIPT);
    const { id: spacedId } = await web.send("u2, u1", "spaced");
    await spaced;
    assertEquals((await acceptedSpaced).code, 200);
    assertEquals(receiptsOut, [id, spacedId]);
    assert(!receiptsOut.includes(copyId));
    assertEquals(refused, []);
  } finally {
    await web.close();
    await phone.close();
    await bob.close();
  }
});

Deno.test("client close() rejects queued frames and ends iterators", async () => {
  await using server = await startServer();
  const c = client(server.url, "alice");
  const queued = c.send("u2", "never sent");
  const iterator = c.messages();
  await c.close();
  await assertRejects(() => queued, ClosedError);
  assertEquals((await iterator.next()).done, true);
});

Deno.test("client refuses frames larger than maxFrameBytes without sending them", async () => {
  await using server = await startServer();
  const c = await connect({
    url: server.url,
    clientName: "web",
    username: "alice",
    password: "alice-pw",
    maxFrameBytes: 1024,
  });
  try {
    await assertRejects(() => c.send("u2", "x".repeat(2000)), Error, "too large");
    assertEquals(c.state, "open");
  } finally {
    await c.close();
  }
});

/**
 * A TCP proxy in front of the server that can hold back the server's replies
 * and cut every connection, to play a network failure.
 */
class TcpProxy implements AsyncDisposable {
  /** Drop what the server sends while true. */
  holdReplies = false;
  readonly port: number;
  #listener: Deno.TcpListener;
  #conns = new Set<Deno.Conn>();
  #tasks = new Set<Promise<void>>();
  #accepting: Promise<void>;

  constructor(targetPort: number) {
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.port = this.#listener.addr.port;
    this.#accepting = this.#accept(targetPort);
  }

  async #accept(targetPort: number) {
    try {
      for await (const inbound of this.#listener) {
        let outbound: Deno.Conn;
        try {
          outbound = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
        } catch {
          inbound.close();
          continue;
        }
        this.#conns.add(inbound).add(outbound);
        const task = Promise.all([
          this.#pump(inbound, outbound, false),
          this.#pump(outbound, inbound, true),
        ]).then(() => {
          this.#tasks.delete(task);
        });
        this.#tasks.add(task);
      }
    } catch {
      // listener closed
    }
  }

  async #pump(from: Deno.Conn, to: Deno.Conn, replies: boolean) {
    const buffer = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await from.read(buffer);
        if (n === null) break;
        if (replies && this.holdReplies) continue;
        let written = 0;
        while (written < n) written += await to.write(buffer.subarray(written, n));
      }
    } catch {
      // closed by cut()
    } finally {
      this.#close(from);
      this.#close(to);
    }
  }

  #close(conn: Deno.Conn) {
    if (!this.#conns.delete(conn)) return;
    try {
      conn.close();
    } catch {
      // already closed
    }
  }

  /** Closes every proxied connection. */
  cut() {
    for (const conn of [...this.#conns]) this.#close(conn);
  }

  async [Symbol.asyncDispose]() {
    this.#listener.close();
    this.cut();
    await this.#accepting;
    await Promise.all([...this.#tasks]);
  }
}

Deno.test("client gets frames sent while it was offline after it registers", async () => {
  await using server = await startServer();
  const alice = client(server.url, "alice");
  await alice.connect();
  try {
    await alice.send("u2", "first while away");
    await alice.send("u2", "second while away");
    const receiptIds = new Set<string>();
    const bothReceipts = next(alice, "receipt", (r) => receiptIds.add(r.id).size === 2);
    // Listeners added after `await connect()` still see the frames queued for Bob.
    const bob = await connect({
      url: server.url,
      clientName: "web",
      username: "bob",
      password: "bob-pw",
    });
    try {
      const bodies: string[] = [];
      const second = next(bob, "message", (m) => m.body === "second while away");
      bob.on("message", (m) => bodies.push(m.body));
      await second;
      assertEquals(bodies, ["first while away", "second while away"]);
      await bothReceipts;
    } finally {
      await bob.close();
    }
  } finally {
    await alice.close();
  }
});

Deno.test("client refuses a frame the server closed on with 1009 and goes on", async () => {
  await using server = await startServer({ limits: { maxFrameBytes: 2048 } });
  const alice = client(server.url, "alice");
  await alice.connect();
  try {
    const reconnected = next(alice, "state", (s) => s.state === "open");
    await assertRejects(() => alice.send("u2", "x".repeat(4000)), Error, "1009");
    await reconnected;
    assertEquals((await alice.send("u2", "small")).code, 200);
    await assertRejects(() => alice.send("u2", "y".repeat(3000)), Error, "too large");
  } finally {
    await alice.close();
  }
});
