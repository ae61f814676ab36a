/**
 * ClientSession against a fake socket: every row of PROTOCOL.md section 6 in
 * its order, the refusals (size, binary, rate, shutdown), the register rules
 * and the replay. The delivery path behind it is the real one, on the memory
 * store and broker.
 */
import { assert, assertEquals } from "../../tests/_assert.ts";
import {
  ClientSession,
  type CustomTypes,
  type SessionDeps,
  type SessionEvents,
  type SessionLimits,
  type SocketPort,
  type Status,
} from "./client_session.ts";
import { Hub } from "./hub.ts";
import { DeliveryService } from "./delivery.ts";
import type { LoginSession, SessionStore } from "./sessions.ts";
import type { MessageStore } from "./store.ts";
import { BackendUnavailableError } from "./errors.ts";
import { MemoryStore } from "../backends/store_memory.ts";
import { MemoryBroker } from "../backends/broker_memory.ts";
import { createLogger } from "../log.ts";

/** A socket that records what the session sends and how it closes it. */
class FakeSocket implements SocketPort {
  sent: string[] = [];
  closes: { code: number; reason: string }[] = [];
  bufferedAmount = 0;
  isOpen = true;
  /** Called after close, as the runtime reports the close later. */
  onClose?: () => void;

  send(text: string): void {
    this.sent.push(text);
  }

  close(code: number, reason: string): void {
    this.closes.push({ code, reason });
    if (!this.isOpen) return;
    this.isOpen = false;
    queueMicrotask(() => this.onClose?.());
  }

  /** The 9001 answers sent, in order. */
  answers(): Answer[] {
    return this.sent.map((text) => JSON.parse(text)).filter((f) => f.type === 9001).map((f) => {
      const body = JSON.parse(f.body);
      return { id: f.id, to: f.to, code: body.code, status: body.status, msg: body.msg };
    });
  }

  /** The frames other than 9001 answers, parsed, in order. */
  frames(): Record<string, unknown>[] {
    return this.sent.map((text) => JSON.parse(text)).filter((f) => f.type !== 9001);
  }
}

interface Answer {
  id: string;
  to: string;
  code: number;
  status: string;
  msg: string;
}

/** A session store on a map; `failing` makes every call reject as Redis would when down. */
class FakeSessions implements SessionStore {
  entries = new Map<string, LoginSession>();
  failing = false;
  #next = 0;

  issue(session: LoginSession): Promise<string> {
    const id = `sid-${++this.#next}`;
    this.entries.set(id, session);
    return Promise.resolve(id);
  }

  peek(sessionId: string): Promise<LoginSession | undefined> {
    if (this.failing) return Promise.reject(new BackendUnavailableError("Sessions unavailable"));
    return Promise.resolve(this.entries.get(sessionId));
  }

  redeem(sessionId: string, userId: string): Promise<LoginSession | undefined> {
    const found = this.entries.get(sessionId);
    if (found?.userId !== userId) return Promise.resolve(undefined);
    this.entries.delete(sessionId);
    return Promise.resolve(found);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Plugin types: 5001 answers 200, 5002 throws, 5003 answers what it is told. */
const custom: CustomTypes = {
  has: (type) => type === 5001 || type === 5002 || type === 5003,
  handle(message): Promise<Status> {
    if (message.type === 5002) return Promise.reject(new Error("secret plugin detail"));
    if (message.type === 5003) return Promise.resolve({ code: 404, msg: "Plugin says no" });
    return Promise.resolve({ code: 200 });
  },
};

const LIMITS: SessionLimits = {
  maxFrameBytes: 65536,
  maxBufferedBytes: 1 << 20,
  registerTimeoutSeconds: 30,
  maxRecipients: 3,
};

interface World {
  hub: Hub;
  store: MessageStore;
  delivery: DeliveryService;
  sessions: FakeSessions;
  deps: SessionDeps;
  gate: { accepting: boolean };
  /** Opens a connection; `session.closed()` runs when the session closes the socket. */
  open(): { session: ClientSession; socket: FakeSocket };
  /** Opens a connection and registers it as `userId`. */
  login(userId: string, clientName?: string): Promise<Conn>;
  /** Closes every connection opened. */
  dispose(): void;
}

interface Conn {
  session: ClientSession;
  socket: FakeSocket;
  /** Sends a frame (an object is JSON-encoded) and waits until it is answered. */
  send(frame: Record<string, unknown> | string): Promise<Answer>;
}

function world(
  options: { limits?: Partial<SessionLimits>; store?: MessageStore; events?: SessionEvents } = {},
): World {
  const logger = createLogger({ level: "error", write: () => {} });
  const hub = new Hub("i1");
  const store = options.store ?? new MemoryStore({});
  const delivery = new DeliveryService({
    store,
    broker: new MemoryBroker(),
    hub,
    instanceId: "i1",
    logger,
  });
  delivery.start();
  const sessions = new FakeSessions();
  const gate = { accepting: true };
  let ids = 0;
  const deps: SessionDeps = {
    delivery,
    sessions,
    hub,
    custom,
    logger,
    events: options.events ?? {},
    limits: { ...LIMITS, ...options.limits },
    accepting: () => gate.accepting,
    nextId: () => ++ids,
  };
  const opened: ClientSession[] = [];
  const open = () => {
    const socket = new FakeSocket();
    const session = new ClientSession(deps, socket);
    socket.onClose = () => session.closed();
    session.opened();
    opened.push(session);
    return { session, socket };
  };
  const connect = (session: ClientSession, socket: FakeSocket): Conn => ({
    session,
    socket,
    async send(frame) {
      const before = socket.answers().length;
      session.receive(typeof frame === "string" ? frame : JSON.stringify(frame));
      await until(() => socket.answers().length > before, "an answer");
      return socket.answers()[before];
    },
  });
  return {
    hub,
    store,
    delivery,
    sessions,
    deps,
    gate,
    open,
    async login(userId, clientName = "web") {
      const { session, socket } = open();
      const conn = connect(session, socket);
      const sessionId = await sessions.issue({ userId, clientName });
      const answer = await conn.send(register(userId, sessionId));
      assertEquals(answer.code, 200, `${userId} registers`);
      return conn;
    },
    dispose() {
      for (const session of opened) session.closed();
    },
  };
}

/** Waits, one macrotask at a time, until `done()`; the generous bound only keeps a bug from hanging. */
async function until(done: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`Never happened: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

/** A few macrotask turns, to let anything pending happen (used before asserting "nothing more"). */
async function settle(): Promise<void> {
  for (let turn = 0; turn < 5; turn++) await new Promise((resolve) => setTimeout(resolve, 0));
}

function register(from: string, sessionId: string, id = "r1"): Record<string, unknown> {
  return {
    id,
    type: 1000,
    isSystem: false,
    from,
    to: "",
    body: JSON.stringify({ sessionId }),
  };
}

const u2Web = { userId: "u2", clientName: "web" };

function text(from: string, to: string, id = "m1", body = "hi"): Record<string, unknown> {
  return { id, type: 2001, isSystem: false, from, to, body };
}

/** Sends each frame on a fresh registered connection of u1 and checks its one answer. */
async function expectAnswer(
  t: Deno.TestContext,
  title: string,
  frame: Record<string, unknown> | string,
  expected: { id?: string; code: number; msg?: string },
): Promise<void> {
  await t.step(title, async () => {
    const w = world();
    try {
      const u1 = await w.login("u1");
      const answer = await u1.send(frame);
      assertEquals(answer.code, expected.code, JSON.stringify(answer));
      if (expected.id !== undefined) assertEquals(answer.id, expected.id);
      if (expected.msg !== undefined) assertEquals(answer.msg, expected.msg);
      await settle();
      assertEquals(u1.socket.answers().length, 2, "one answer for the register, one for it");
      assertEquals(u1.socket.closes, []);
    } finally {
      w.dispose();
    }
  });
}

Deno.test("ClientSession answers 401 first: frames it cannot read", async (t) => {
  await expectAnswer(t, "not JSON", "{nope", { id: "", code: 401, msg: "Frame is not valid JSON" });
  await expectAnswer(t, "not an object", "[1,2]", { id: "", code: 401 });
  await expectAnswer(t, "null", "null", { id: "", code: 401 });
  const { body: _, ...noBody } = text("u1", "u2", "x1");
  await expectAnswer(t, "a field missing, the id still echoed", noBody, { id: "x1", code: 401 });
  await expectAnswer(
    t,
    "type of the wrong JSON type",
    { ...text("u1", "u2", "x2"), type: "2001" },
    {
      id: "x2",
      code: 401,
    },
  );
  await expectAnswer(t, "an empty id", { ...text("u1", "u2"), id: "" }, { id: "", code: 401 });
  await expectAnswer(t, "a negative timestamp", { ...text("u1", "u2", "x3"), timestamp: -1 }, {
    id: "x3",
    code: 401,
  });
  await t.step("401 comes before 402: garbage on an unregistered connection", async () => {
    const w = world();
    try {
      const { session, socket } = w.open();
      session.receive("{nope");
      await until(() => socket.answers().length === 1, "an answer");
      assertEquals(socket.answers()[0].code, 401);
      assertEquals(socket.answers()[0].to, "");
    } finally {
      w.dispose();
    }
  });
  await t.step("a binary frame is answered 401", async () => {
    const w = world();
    try {
      const u1 = await w.login("u1");
      u1.session.receiveBinary();
      await settle();
      const answers = u1.socket.answers();
      assertEquals(answers.length, 2);
      assertEquals(answers[1], {
        id: "",
        to: "u1",
        code: 401,
        status: "MESSAGE_ERROR",
        msg: "Frames must be text",
      });
    } finally {
      w.dispose();
    }
  });
});

Deno.test("ClientSession answers 402 before registering, ahead of later checks", async (t) => {
  for (
    const [title, frame] of [
      ["a text frame", text("u1", "u2")],
      ["a 9001 frame (else 403)", { ...text("u1", "u2"), type: 9001 }],
      ["an unknown type (else 403)", { ...text("u1", "u2"), type: 7777 }],
      ["a system frame (else 405)", { ...text("SYSTEM", "u2"), isSystem: true }],
      ["an empty to (else 406)", text("u1", "")],
    ] as const
  ) {
    await t.step(title, async () => {
      const w = world();
      try {
        const { session, socket } = w.open();
        session.receive(JSON.stringify(frame));
        await until(() => socket.answers().length === 1, "an answer");
        await settle();
        assertEquals(socket.answers(), [{
          id: "m1",
          to: "",
          code: 402,
          status: "SESSION_ERROR",
          msg: "Register with a 1000 frame first",
        }]);
      } finally {
        w.dispose();
      }
    });
  }
});

Deno.test("ClientSession answers 403 for types nobody handles", async (t) => {
  await expectAnswer(t, "9001 sent by a client", { ...text("u1", "u2"), type: 9001 }, {
    code: 403,
    msg: "Type 9001 is sent by the server only",
  });
  await expectAnswer(t, "an unknown type", { ...text("u1", "u2"), type: 7777 }, {
    code: 403,
    msg: "Unknown type 7777",
  });
  await expectAnswer(t, "403 comes before 405", {
    ...text("SYSTEM", "u2"),
    type: 7777,
    isSystem: true,
  }, { code: 403 });
  await expectAnswer(t, "a type a plugin claims is not 403", { ...text("u1", "u2"), type: 5001 }, {
    code: 200,
  });
});

Deno.test("ClientSession answers 405 for a from that is not the registered user", async (t) => {
  await expectAnswer(t, "isSystem true", { ...text("u1", "u2"), isSystem: true }, {
    code: 405,
    msg: "Clients cannot send system frames",
  });
  await expectAnswer(t, "from SYSTEM", text("SYSTEM", "u2"), { code: 405 });
  await expectAnswer(t, "another user", text("u9", "u2"), { code: 405, msg: '"from" must be u1' });
  await expectAnswer(t, "405 comes before 406", text("u9", ""), { code: 405 });
});

Deno.test("ClientSession answers 406 for a bad to", async (t) => {
  await expectAnswer(t, "an empty to", text("u1", ""), {
    code: 406,
    msg: '"to" is empty or has an empty entry',
  });
  await expectAnswer(t, "an empty entry", text("u1", "u2,,u3"), { code: 406 });
  await expectAnswer(t, "a blank entry", text("u1", "u2, ,u3"), { code: 406 });
  await expectAnswer(t, "*", text("u1", "*"), { code: 406 });
  await expectAnswer(t, "SYSTEM", text("u1", "u2,SYSTEM"), {
    code: 406,
    msg: "SYSTEM cannot receive messages",
  });
  await expectAnswer(t, "more than maxRecipients (3)", text("u1", "a,b,c,d"), {
    code: 406,
    msg: '"to" has more than 3 recipients',
  });
  await expectAnswer(t, "maxRecipients counts distinct trimmed users", text("u1", "a, b ,a,c, b"), {
    code: 200,
  });
  await expectAnswer(t, "a receipt to two users", {
    ...text("u1", "u2,u3"),
    type: 9101,
    body: JSON.stringify({ code: 200, status: "SUCCESS", msg: "ok" }),
  }, { code: 406, msg: "A receipt goes to exactly one user" });
  await expectAnswer(t, "406 comes before 404", text("u1", "", "m1", ""), { code: 406 });
});

Deno.test("ClientSession answers 404 for a body its type does not allow", async (t) => {
  await expectAnswer(t, "an empty text", text("u1", "u2", "m1", ""), {
    code: 404,
    msg: "Text body is empty",
  });
  await expectAnswer(t, "a notice without title", {
    ...text("u1", "u2"),
    type: 3001,
    body: JSON.stringify({ msg: "x" }),
  }, { code: 404 });
  await expectAnswer(t, "a receipt whose status does not match its code", {
    ...text("u1", "u2"),
    type: 9101,
    body: JSON.stringify({ code: 200, status: "FAILED", msg: "x" }),
  }, { code: 404 });
  await expectAnswer(t, "a plugin type's body is the plugin's to check", {
    ...text("u1", "u2", "m1", ""),
    type: 5003,
  }, { code: 404, msg: "Plugin says no" });
});

Deno.test("ClientSession checks a register in the order of section 6", async (t) => {
  const step = (
    title: string,
    fn: (w: World, conn: { session: ClientSession; socket: FakeSocket }) => Promise<void>,
  ) =>
    t.step(title, async () => {
      const w = world();
      try {
        await fn(w, w.open());
      } finally {
        w.dispose();
      }
    });
  const answer = async (socket: FakeSocket, count = 1) => {
    await until(() => socket.answers().length >= count, "an answer");
    await settle();
    assertEquals(socket.answers().length, count, "exactly one answer per frame");
    return socket.answers()[count - 1];
  };

  await step("a system register is 405", async (w, { session, socket }) => {
    const sid = await w.sessions.issue({ userId: "u1", clientName: "web" });
    session.receive(JSON.stringify({ ...register("u1", sid), isSystem: true }));
    assertEquals((await answer(socket)).code, 405);
  });
  await step("a register's to is not checked", async (w, { session, socket }) => {
    const sid = await w.sessions.issue({ userId: "u1", clientName: "web" });
    session.receive(JSON.stringify({ ...register("u1", sid), to: "" }));
    const reply = await answer(socket);
    assertEquals([reply.code, reply.to], [200, "u1"]);
  });
  await step("a register without a sessionId is 404", async (_w, { session, socket }) => {
    session.receive(JSON.stringify({ ...register("u1", "x"), body: "{}" }));
    assertEquals((await answer(socket)).code, 404);
  });
  await step("an unknown sessionId is 402", async (_w, { session, socket }) => {
    session.receive(JSON.stringify(register("u1", "nope")));
    const reply = await answer(socket);
    assertEquals([reply.code, reply.msg], [402, "sessionId is unknown, expired or used"]);
  });
  await step("a sessionId of another user is 405", async (w, { session, socket }) => {
    const sid = await w.sessions.issue({ userId: "u2", clientName: "web" });
    session.receive(JSON.stringify(register("u1", sid)));
    const reply = await answer(socket);
    assertEquals([reply.code, reply.msg], [405, '"from" must be u2']);
  });
  await step("a failed register leaves the sessionId usable", async (w, { session, socket }) => {
    const sid = await w.sessions.issue({ userId: "u2", clientName: "web" });
    session.receive(JSON.stringify(register("u1", sid, "r1")));
    assertEquals((await answer(socket, 1)).code, 405);
    session.receive(JSON.stringify(register("u2", sid, "r2")));
    const reply = await answer(socket, 2);
    assertEquals([reply.id, reply.code, reply.to], ["r2", 200, "u2"]);
    assertEquals(w.hub.isOnline("u2"), true);
  });
  await step("a used sessionId is 402 on another connection", async (w, { session, socket }) => {
    const sid = await w.sessions.issue({ userId: "u1", clientName: "web" });
    session.receive(JSON.stringify(register("u1", sid)));
    assertEquals((await answer(socket)).code, 200);
    const other = w.open();
    other.session.receive(JSON.stringify(register("u1", sid)));
    assertEquals((await answer(other.socket)).code, 402);
  });
  await step("a second register on a connection is 400", async (w, { session, socket }) => {
    const sid = await w.sessions.issue({ userId: "u1", clientName: "web" });
    session.receive(JSON.stringify(register("u1", sid, "r1")));
    assertEquals((await answer(socket, 1)).code, 200);
    const sid2 = await w.sessions.issue({ userId: "u1", clientName: "web" });
    session.receive(JSON.stringify(register("u1", sid2, "r2")));
    const reply = await answer(socket, 2);
    assertEquals([reply.code, reply.msg], [400, "This connection is already registered"]);
    assert(w.sessions.entries.has(sid2), "the second sessionId is not used up");
  });
  await step("a session store outage is 400 with its message", async (w, { session, socket }) => {
    const sid = await w.sessions.issue({ userId: "u1", clientName: "web" });
    w.sessions.failing = true;
    session.receive(JSON.stringify(register("u1", sid)));
    const reply = await answer(socket);
    assertEquals([reply.code, reply.msg], [400, "Sessions unavailable"]);
    w.sessions.failing = false;
    session.receive(JSON.stringify(register("u1", sid, "r2")));
    assertEquals((await answer(socket, 2)).code, 200);
  });
  await step(
    "frames sent during a register are answered after it",
    async (w, { session, socket }) => {
      const sid = await w.sessions.issue({ userId: "u1", clientName: "web" });
      session.receive(JSON.stringify(register("u1", sid)));
      session.receive(JSON.stringify(text("u1", "u2", "after")));
      await until(() => socket.answers().length === 2, "two answers");
      assertEquals(socket.answers().map((a) => [a.id, a.code]), [["r1", 200], ["after", 200]]);
    },
  );
});

Deno.test("ClientSession answers 407, 400 and 200 last", async (t) => {
  await expectAnswer(t, "a receipt for no known message is 407", {
    ...text("u1", "u2", "m9"),
    type: 9101,
    body: JSON.stringify({ code: 200, status: "SUCCESS", msg: "ok" }),
  }, { code: 407, msg: 'No message "m9" from u2 to u1' });
  await expectAnswer(t, "a plugin that throws is 400 without its detail", {
    ...text("u1", "u2"),
    type: 5002,
  }, { code: 400, msg: "Internal error" });
  await expectAnswer(t, "a text frame is 200", text("u1", "u2"), { code: 200, msg: "SUCCESS" });

  await t.step("a store outage is 400 with its message", async () => {
    const failing = new MemoryStore({});
    failing.accept = () => Promise.reject(new BackendUnavailableError("Storage unavailable"));
    const w = world({ store: failing });
    try {
      const u1 = await w.login("u1");
      const reply = await u1.send(text("u1", "u2"));
      assertEquals([reply.code, reply.msg], [400, "Storage unavailable"]);
    } finally {
      w.dispose();
    }
  });

  await t.step("200 delivers to every recipient and the sender's other connections", async () => {
    const w = world();
    try {
      const web = await w.login("u1", "web");
      const phone = await w.login("u1", "phone");
      const u2 = await w.login("u2");
      const reply = await web.send(text("u1", " u2 ", "m1"));
      assertEquals([reply.id, reply.code], ["m1", 200]);
      await settle();
      assertEquals(u2.socket.frames().map((f) => [f.id, f.from, f.to]), [["m1", "u1", " u2 "]]);
      assertEquals(phone.socket.frames().map((f) => f.id), ["m1"]);
      assertEquals(web.socket.frames(), [], "never back to the sending connection");
      assert(typeof u2.socket.frames()[0].timestamp === "number", "timestamp filled in");
      const again = await web.send(text("u1", "u2", "m1"));
      assertEquals([again.code, again.msg], [200, "Already accepted"]);
      await settle();
      assertEquals(u2.socket.frames().length, 1, "a resend is not delivered again");
    } finally {
      w.dispose();
    }
  });

  await t.step("a receipt is 200 and reaches the original sender", async () => {
    const w = world();
    try {
      const u1 = await w.login("u1");
      const u2 = await w.login("u2");
      await u1.send(text("u1", "u2", "m1"));
      const ok = JSON.stringify({ code: 200, status: "SUCCESS", msg: "ok" });
      const reply = await u2.send({ ...text("u2", "u1", "m1"), type: 9101, body: ok });
      assertEquals(reply.code, 200);
      await settle();
      assertEquals(u1.socket.frames().map((f) => [f.type, f.id, f.from]), [[9101, "m1", "u2"]]);
    } finally {
      w.dispose();
    }
  });
});

Deno.test("ClientSession answers every frame exactly once, in a mixed stream", async () => {
  const w = world();
  try {
    const u1 = await w.login("u1");
    const frames = [
      "{nope",
      JSON.stringify(text("u1", "u2", "a")),
      JSON.stringify({ ...text("u1", "u2", "b"), type: 7777 }),
      JSON.stringify(text("u9", "u2", "c")),
      JSON.stringify(text("u1", "", "d")),
      JSON.stringify(text("u1", "u2", "e", "")),
      JSON.stringify({ ...text("u1", "u2", "f"), type: 5002 }),
      JSON.stringify({ ...text("u1", "u2", "g"), type: 5001 }),
      JSON.stringify(text("u1", "u3", "h")),
    ];
    for (const frame of frames) u1.session.receive(frame);
    await until(() => u1.socket.answers().length === frames.length + 1, "every answer");
    await settle();
    const answers = u1.socket.answers().slice(1);
    assertEquals(answers.length, frames.length);
    assertEquals(
      answers.map((a) => `${a.id}:${a.code}`).sort(),
      [":401", "a:200", "b:403", "c:405", "d:406", "e:404", "f:400", "g:200", "h:200"],
    );
  } finally {
    w.dispose();
  }
});

Deno.test("ClientSession refuses frames during shutdown with 400", async () => {
  const w = world();
  try {
    const u1 = await w.login("u1");
    w.gate.accepting = false;
    const reply = await u1.send(text("u1", "u2", "late"));
    assertEquals(reply, {
      id: "late",
      to: "u1",
      code: 400,
      status: "FAILED",
      msg: "Server is shutting down: send it again after reconnecting",
    });
    const garbage = await u1.send("{nope");
    assertEquals([garbage.id, garbage.code], ["", 400]);
    await settle();
    assertEquals(
      (await w.store.unacknowledged("u2", { limit: 1000 })).messages,
      [],
      "nothing accepted",
    );
  } finally {
    w.dispose();
  }
});

Deno.test("ClientSession closes with 1009 on a frame over maxFrameBytes", async (t) => {
  const limits = { maxFrameBytes: 100 };
  await t.step("101 ASCII bytes", async () => {
    const w = world({ limits });
    try {
      const { session, socket } = w.open();
      session.receive("x".repeat(101));
      await settle();
      assertEquals(socket.closes, [{ code: 1009, reason: "frame too large" }]);
      assertEquals(socket.answers(), []);
    } finally {
      w.dispose();
    }
  });
  await t.step("bytes, not characters, are counted", async () => {
    const w = world({ limits });
    try {
      const { session, socket } = w.open();
      session.receive("é".repeat(50)); // 50 characters, 100 bytes: allowed
      await until(() => socket.answers().length === 1, "an answer");
      assertEquals(socket.answers()[0].code, 401);
      session.receive("€".repeat(34)); // 34 characters, 102 bytes
      await settle();
      assertEquals(socket.closes, [{ code: 1009, reason: "frame too large" }]);
      assertEquals(socket.answers().length, 1);
    } finally {
      w.dispose();
    }
  });
});

Deno.test("ClientSession answers 400 over its rate limit, then closes with 1008", async (t) => {
  let now = 0;
  const rateLimit = { perSecond: 0.1, burst: 2, closeAfterSeconds: 2, now: () => now };
  const w = world({ limits: { rateLimit } });
  try {
    const { session, socket } = w.open();
    const send = (frame: Record<string, unknown>) => session.receive(JSON.stringify(frame));
    await t.step("the burst passes, the next frame is refused", async () => {
      send(text("u1", "u2", "a"));
      send(text("u1", "u2", "b"));
      send(text("u1", "u2", "c"));
      await until(() => socket.answers().length === 3, "three answers");
      assertEquals(socket.answers().map((a) => [a.id, a.code]), [["a", 402], ["b", 402], [
        "c",
        400,
      ]]);
      assertEquals(
        socket.answers()[2].msg,
        "Rate limit exceeded: at most 0.1 frames per second (burst 2)",
      );
    });
    await t.step("a receipt draws on its own allowance, found by its parsed type", async () => {
      send({ ...text("u1", "u2", "not-a-receipt", "9101"), to: "9101" });
      send({ ...text("u1", "u2", "r"), type: 9101 });
      await until(() => socket.answers().length === 5, "two more answers");
      assertEquals(socket.answers().slice(3).map((a) => [a.id, a.code]), [
        ["not-a-receipt", 400],
        ["r", 402],
      ]);
    });
    await t.step("refused without a calm second for closeAfterSeconds: 1008", async () => {
      now = 900;
      send(text("u1", "u2", "d"));
      now = 1800;
      send(text("u1", "u2", "e"));
      await until(() => socket.answers().length === 7, "two answers");
      assertEquals(socket.answers().slice(5).map((a) => a.code), [400, 400]);
      assertEquals(socket.closes, []);
      now = 2000;
      send(text("u1", "u2", "f"));
      await settle();
      assertEquals(socket.closes, [{ code: 1008, reason: "rate limit exceeded" }]);
      assertEquals(socket.answers().length, 7, "the closing frame is not answered");
    });
  } finally {
    w.dispose();
  }
});

Deno.test("ClientSession closes with 1008 when no register comes in time", async (t) => {
  await t.step("an unregistered connection is closed", async () => {
    const w = world({ limits: { registerTimeoutSeconds: 0.01 } });
    try {
      const { socket } = w.open();
      await until(() => socket.closes.length > 0, "the close");
      assertEquals(socket.closes, [{ code: 1008, reason: "register timeout" }]);
      assertEquals(w.hub.openCount, 0, "the hub forgot it");
    } finally {
      w.dispose();
    }
  });
  await t.step("a registered connection is not", async () => {
    const w = world({ limits: { registerTimeoutSeconds: 0.05 } });
    try {
      const u1 = await w.login("u1");
      await new Promise((resolve) => setTimeout(resolve, 100));
      assertEquals(u1.socket.closes, []);
    } finally {
      w.dispose();
    }
  });
});

/** A store whose `unacknowledged(held)` waits for `release()`: that replay starts when the test says. */
function heldReplayStore(held: string): MemoryStore & { release(): void; reached: Promise<void> } {
  const store = new MemoryStore({});
  const gate = Promise.withResolvers<void>();
  const reached = Promise.withResolvers<void>();
  const unacknowledged = store.unacknowledged.bind(store);
  store.unacknowledged = async (userId, options) => {
    if (userId !== held) return unacknowledged(userId, options);
    reached.resolve();
    await gate.promise;
    return unacknowledged(userId, options);
  };
  return Object.assign(store, { release: gate.resolve, reached: reached.promise });
}

Deno.test("ClientSession replays stored messages before live frames", async (t) => {
  await t.step("live frames wait; stored ones come from the replay's pages", async () => {
    const store = heldReplayStore("u2");
    const w = world({ store });
    try {
      const u1 = await w.login("u1");
      await u1.send(text("u1", "u2", "m1")); // stored while u2 is offline
      const { session, socket } = w.open();
      session.receive(JSON.stringify(register("u2", await w.sessions.issue(u2Web))));
      await store.reached; // u2 is in the hub; its replay has not read the store
      await u1.send(text("u1", "u2", "m2")); // stored and delivered live: held
      await w.delivery.send({
        sender: "u1",
        id: "t1",
        type: 2001,
        recipients: ["u2"],
        text: "{}",
        store: false,
      });
      assertEquals(socket.frames(), [], "held during the replay");
      store.release();
      await until(() => socket.frames().length === 3, "the replay and the held frames");
      await settle();
      assertEquals(socket.sent.map((s) => JSON.parse(s).id ?? "live"), ["r1", "m1", "m2", "live"]);
    } finally {
      w.dispose();
    }
  });

  await t.step(
    "a stored copy that arrives after a page was read comes from the next page, once",
    async () => {
      const store = new MemoryStore({});
      const unacknowledged = store.unacknowledged.bind(store);
      const gate = Promise.withResolvers<void>();
      const reached = Promise.withResolvers<void>();
      let reads = 0;
      // The first page is read, then held back: m2 is accepted after the read.
      store.unacknowledged = async (userId, options) => {
        const page = await unacknowledged(userId, options);
        if (userId === "u2" && reads++ === 0) {
          reached.resolve();
          await gate.promise;
        }
        return page;
      };
      const w = world({ store });
      try {
        const u1 = await w.login("u1");
        await u1.send(text("u1", "u2", "m1"));
        const { session, socket } = w.open();
        session.receive(JSON.stringify(register("u2", await w.sessions.issue(u2Web))));
        await reached.promise;
        await u1.send(text("u1", "u2", "m2")); // stored after the page was read
        gate.resolve();
        await until(() => socket.frames().length === 2, "m1 and m2");
        await settle();
        assertEquals(socket.sent.map((s) => JSON.parse(s).id), ["r1", "m1", "m2"]);
        assertEquals(reads, 2, "the replay read on after the arrival");
      } finally {
        w.dispose();
      }
    },
  );

  await t.step(
    "a live copy of a message the replay sent, arriving after the replay ended, is dropped",
    async () => {
      const w = world();
      try {
        const u1 = await w.login("u1");
        await u1.send(text("u1", "u2", "m1")); // stored while u2 is offline
        const u2 = await w.login("u2");
        await until(() => u2.socket.frames().length === 1, "the replay of m1");
        await settle();
        // The live copy routed before the register (on a Redis Cluster, a second step) comes
        // late; a copy of another message still goes out.
        const m1 = u2.socket.frames()[0];
        w.hub.deliver("u2", JSON.stringify(m1), -1, { sender: "u1", id: "m1" });
        w.hub.deliver("u2", JSON.stringify({ ...m1, id: "m2" }), -1, { sender: "u1", id: "m2" });
        await settle();
        assertEquals(u2.socket.frames().map((f) => f.id), ["m1", "m2"]);
      } finally {
        w.dispose();
      }
    },
  );

  await t.step("held bytes count against maxBufferedBytes: 1013", async () => {
    const store = heldReplayStore("u2");
    const w = world({ store, limits: { maxBufferedBytes: 1000 } });
    try {
      const u1 = await w.login("u1");
      const { session, socket } = w.open();
      session.receive(JSON.stringify(register("u2", await w.sessions.issue(u2Web))));
      await store.reached;
      socket.bufferedAmount = 500;
      // Frames not stored for u2 are held (stored ones are left to the replay's pages).
      const live = (id: string) =>
        w.delivery.send({
          sender: "u1",
          id,
          type: 2001,
          recipients: ["u2"],
          text: "x".repeat(300),
          store: false,
        });
      await u1.send(text("u1", "u2", "stored", "x".repeat(300)));
      await live("a");
      assertEquals(socket.closes, [], "one held frame and 500 buffered bytes: under the cap");
      await live("b");
      assertEquals(socket.closes, [{ code: 1013, reason: "slow consumer" }]);
      store.release();
    } finally {
      w.dispose();
    }
  });
});

Deno.test("ClientSession closes with 1013 a client that does not read", async () => {
  const w = world({ limits: { maxBufferedBytes: 10_000 } });
  try {
    const u1 = await w.login("u1");
    const u2 = await w.login("u2");
    u2.socket.bufferedAmount = 20_000;
    const body = "x".repeat(4000);
    for (let i = 0; i < 20 && u2.socket.closes.length === 0; i++) {
      await u1.send(text("u1", "u2", `m${i}`, body));
    }
    assertEquals(u2.socket.closes, [{ code: 1013, reason: "slow consumer" }]);
    assert(u2.socket.frames().length < 20, "sends stopped at the cap");
  } finally {
    w.dispose();
  }
});

Deno.test("ClientSession leaves the hub when its socket closes", async () => {
  const w = world();
  try {
    const u1 = await w.login("u1");
    assertEquals([w.hub.size, w.hub.openCount], [1, 1]);
    u1.session.closed();
    u1.session.closed();
    assertEquals([w.hub.size, w.hub.openCount, w.hub.isOnline("u1")], [0, 0, false]);
  } finally {
    w.dispose();
  }
});

Deno.test("ClientSession reports every answer and refusal to its events", async () => {
  const seen: string[] = [];
  let now = 0;
  const w = world({
    limits: { rateLimit: { perSecond: 1, burst: 3, closeAfterSeconds: 60, now: () => now } },
    events: {
      answered: (type, code) => seen.push(`answered ${type} ${code}`),
      registered: (conn) => seen.push(`registered ${conn.userId}`),
      disconnected: (conn) => seen.push(`disconnected ${conn.userId}`),
      refused: (reason) => seen.push(`refused ${reason}`),
      rateLimited: () => seen.push("rateLimited"),
      openChanged: (delta) => seen.push(`open ${delta}`),
    },
  });
  try {
    const u1 = await w.login("u1");
    u1.session.receiveBinary();
    await u1.send(text("u1", "u2"));
    await u1.send(text("u1", "u2", "m2"));
    await u1.send(text("u1", "u2", "m3")); // over the burst of 3
    w.gate.accepting = false;
    now = 10_000;
    await u1.send(text("u1", "u2", "m4"));
    u1.session.receive("x".repeat(70_000));
    await settle();
    assertEquals(seen, [
      "open 1",
      "answered 1000 200",
      "registered u1",
      "answered 0 401",
      "answered 2001 200",
      "answered 2001 200",
      "rateLimited",
      "answered 2001 400",
      "answered 2001 400",
      "refused frame_too_large",
      "open -1",
      "disconnected u1",
    ]);
  } finally {
    w.dispose();
  }
});

Deno.test("ClientSession registers within the per-user limit and replaces its own client", async (t) => {
  await t.step(
    "another client past maxConnectionsPerUser is 400; its sessionId stays",
    async () => {
      const w = world({ limits: { maxConnectionsPerUser: 1 } });
      try {
        await w.login("u1", "web");
        const { session, socket } = w.open();
        const sid = await w.sessions.issue({ userId: "u1", clientName: "phone" });
        session.receive(JSON.stringify(register("u1", sid)));
        await until(() => socket.answers().length === 1, "an answer");
        assertEquals(socket.answers()[0].code, 400);
        assertEquals(socket.answers()[0].msg, "Too many connections for user u1: at most 1");
        assertEquals(await w.sessions.peek(sid), { userId: "u1", clientName: "phone" });
      } finally {
        w.dispose();
      }
    },
  );
  await t.step("the same client registering again replaces the old connection (4001)", async () => {
    const w = world({ limits: { maxConnectionsPerUser: 1 } });
    try {
      const old = await w.login("u1", "web");
      const fresh = await w.login("u1", "web");
      await settle();
      assertEquals(old.socket.closes, [{ code: 4001, reason: "replaced" }]);
      assertEquals(fresh.socket.closes, []);
      assertEquals([...w.hub.connectionsOf("u1")].length, 1);
      const u2 = await w.login("u2");
      await u2.send(text("u2", "u1", "to-fresh"));
      await settle();
      assertEquals(fresh.socket.frames().map((f) => f.id), ["to-fresh"]);
      assertEquals(old.socket.frames(), []);
    } finally {
      w.dispose();
    }
  });
});

Deno.test("hub.closeAll() closes every session, registered or not, and resolves", async () => {
  const w = world();
  try {
    const u1 = await w.login("u1");
    const waiting = w.open();
    assertEquals(w.hub.openCount, 2);
    await w.hub.closeAll(1001, "going away");
    assertEquals(u1.socket.closes, [{ code: 1001, reason: "going away" }]);
    assertEquals(waiting.socket.closes, [{ code: 1001, reason: "going away" }]);
    assertEquals([w.hub.openCount, w.hub.size], [0, 0]);
  } finally {
    w.dispose();
  }
});
