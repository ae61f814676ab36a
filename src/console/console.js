/**
 * The web console: a page that logs in as a user with the IM client, shows the
 * connection state, sends text, notices and custom frames, and shows incoming
 * frames, 9001 statuses, receipts and a log of raw frames.
 *
 * The login lasts as long as the tab: the token, user and client name are kept
 * in sessionStorage, so a reload connects again without a password, and
 * logging out (or a kick) forgets them. Opening a conversation (a single user
 * in "To", or a click on a sender) loads its history from `GET /app/messages`.
 *
 * @module
 */
import { ImClient, MessageType, randomId, statusName } from "/client.js";

const MAX_LOG = 500;
const TYPE_NAMES = new Map(Object.entries(MessageType).map(([name, code]) => [code, name]));

/** @param {string} id */
function $(id) {
  const element = document.getElementById(id);
  if (!element) throw new Error(`Missing element #${id}`);
  return /** @type {any} */ (element);
}

/**
 * @param {string} tag
 * @param {string} [className]
 * @param {string} [text]
 */
function el(tag, className, text) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text !== undefined) element.textContent = text;
  return element;
}

function time(ms = Date.now()) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

/** @type {import("/client.js").ImClient | undefined} */
let client;
/** Conversation entries of frames this page sent, by id. @type {Map<string, HTMLElement>} */
const sent = new Map();
/** Conversation entries of delivered frames, by id. @type {Map<string, HTMLElement>} */
const received = new Map();
/** (from, id) of every message in the conversation list, so history adds no duplicates. */
const shown = new Set();
/** The user whose history was loaded last. */
let historyPeer = "";

// ---- login ----

const SESSION_KEY = "im-console-session";
const saved = JSON.parse(localStorage.getItem("im-console") ?? "{}");
$("username").value = saved.username ?? "";
$("client-name").value = saved.clientName ?? `console-${randomId().slice(0, 8)}`;
if (saved.to) $("to").value = saved.to;

/**
 * Connects with these client options and shows the compose panel; on failure shows why.
 * @param {import("/client.js").ClientOptions} options
 */
async function start(options) {
  $("login-error").textContent = "";
  $("login").disabled = true;
  try {
    const next = new ImClient({ url: location.origin, ...options });
    watch(next);
    await next.connect();
    client = next;
    // The tab keeps the login (not the password) until it closes or the user logs out.
    sessionStorage.setItem(
      SESSION_KEY,
      JSON.stringify({
        token: next.token,
        userId: next.userId,
        clientName: next.clientName,
        receipts: options.receipts,
      }),
    );
    $("password").value = "";
    $("login-panel").hidden = true;
    $("compose-panel").hidden = false;
    $("logout").hidden = false;
    $("identity").textContent = `${next.userId} / ${next.clientName}`;
    $("to").focus();
    openConversation();
  } catch (error) {
    sessionStorage.removeItem(SESSION_KEY);
    $("login-error").textContent = describe(error);
  } finally {
    $("login").disabled = false;
  }
}

$("login-form").addEventListener("submit", (/** @type {Event} */ event) => {
  event.preventDefault();
  const username = $("username").value.trim();
  const token = $("token").value.trim();
  const clientName = $("client-name").value.trim();
  localStorage.setItem("im-console", JSON.stringify({ ...saved, username, clientName }));
  start({
    clientName,
    receipts: $("receipts").checked,
    ...(token
      ? { token, userId: $("token-user").value.trim() || undefined }
      : { username, password: $("password").value }),
  });
});

$("logout").addEventListener("click", async () => {
  const current = client;
  client = undefined;
  sessionStorage.removeItem(SESSION_KEY);
  await current?.close();
  $("login-panel").hidden = false;
  $("compose-panel").hidden = true;
  $("logout").hidden = true;
  $("identity").textContent = "";
});

// A reload of this tab: connect again with the kept token.
const kept = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? "null");
if (kept?.token) {
  $("client-name").value = kept.clientName;
  $("receipts").checked = kept.receipts !== false;
  start({
    clientName: kept.clientName,
    token: kept.token,
    userId: kept.userId,
    receipts: kept.receipts !== false,
  });
}

/** @param {unknown} error */
function describe(error) {
  if (error && typeof error === "object" && "code" in error && "message" in error) {
    return String(error.message);
  }
  return error instanceof Error ? error.message : String(error);
}

// ---- client events ----

/** @param {import("/client.js").ImClient} c */
function watch(c) {
  c.on("state", (s) => {
    if (c !== client && client !== undefined) return;
    const badge = $("state");
    badge.dataset.state = s.state;
    badge.className = `state state-${s.state}`;
    let text = s.state;
    if (s.state === "reconnecting" && s.delayMs !== undefined) {
      text += ` (attempt ${s.attempt}, in ${(s.delayMs / 1000).toFixed(1)} s)`;
    }
    if (s.state === "closed" && s.reason && s.reason !== "closed") text += ` (${s.reason})`;
    badge.textContent = text;
    if (s.state === "closed" && c === client) {
      sessionStorage.removeItem(SESSION_KEY);
      $("login-panel").hidden = false;
      $("compose-panel").hidden = true;
      $("logout").hidden = true;
      if (s.reason === "replaced") {
        $("login-error").textContent = "This client name connected elsewhere (4001 replaced)";
      } else if (s.reason === "kicked") {
        $("login-error").textContent = "The server ended this session (4003 kicked)";
      } else if (s.error) $("login-error").textContent = describe(s.error);
    }
  });
  c.on("frame", (f) => logFrame(f));
  c.on("message", (m) => addReceived(m, m.body));
  c.on("notice", (n) => {
    const body = n.notice
      ? `${n.notice.title}: ${n.notice.msg}` +
        (n.notice.target ? ` → ${n.notice.target}` : "") +
        (n.notice.serviceId ? ` [${n.notice.serviceId}]` : "")
      : n.message.body;
    addReceived(n.message, body, n.targeted ? "notice 3003" : "notice 3001");
  });
  c.on("custom", (m) => addReceived(m, m.body, `type ${m.type}`));
  c.on("receipt", (r) => {
    const entry = sent.get(r.id);
    if (!entry) return;
    const receipts = /** @type {HTMLElement} */ (entry.querySelector(".receipts"));
    const item = el(
      "span",
      r.code === 200 ? "receipt ok" : "receipt bad",
      r.code === 200 ? `✓ ${r.from}` : `✗ ${r.from} ${r.code} ${r.status}`,
    );
    item.title = `Receipt from ${r.from} at ${time()}: ${r.code} ${r.status} ${r.msg}`;
    receipts.append(item);
  });
  c.on("status", (s) => {
    if (s.type !== MessageType.RECEIPT) return;
    const entry = received.get(s.id);
    if (!entry) return;
    const status = /** @type {HTMLElement} */ (entry.querySelector(".status"));
    status.textContent = `receipt ${s.code} ${s.status}`;
    status.className = s.code === 200 ? "status ok" : "status bad";
  });
}

// ---- conversation ----

/**
 * @param {import("/client.js").Message} m
 * @param {string} text
 * @param {string} [kind]
 */
function addReceived(m, text, kind) {
  shown.add(`${m.from}\u0000${m.id}`);
  const li = el("li", "in");
  li.dataset.id = m.id;
  li.dataset.from = m.from;
  const head = el("div", "head");
  const who = el("button", "who", `from ${m.from}${m.isSystem ? " (system)" : ""}`);
  who.type = "button";
  who.title = `Open the conversation with ${m.from}`;
  who.addEventListener("click", () => {
    $("to").value = m.from;
    openConversation();
  });
  head.append(who, el("span", "when", time(m.timestamp)));
  if (kind) head.append(el("span", "kind", kind));
  head.append(el("span", "status", $("receipts").checked ? "receipt…" : ""));
  li.append(head, el("div", "text", text));
  received.set(m.id, li);
  append($("messages"), li);
}

/**
 * @param {string} id
 * @param {string} to
 * @param {string} text
 * @param {string} [kind]
 */
function addSent(id, to, text, kind) {
  shown.add(`${client?.userId}\u0000${id}`);
  const li = el("li", "out");
  li.dataset.id = id;
  const head = el("div", "head");
  head.append(el("span", "who", `to ${to}`), el("span", "when", time()));
  if (kind) head.append(el("span", "kind", kind));
  head.append(el("span", "status pending", "sending…"), el("span", "receipts"));
  li.append(head, el("div", "text", text));
  sent.set(id, li);
  append($("messages"), li);
  return li;
}

/**
 * @param {HTMLElement} list
 * @param {HTMLElement} item
 */
function append(list, item) {
  list.append(item);
  while (list.children.length > MAX_LOG) list.firstElementChild?.remove();
  item.scrollIntoView({ block: "nearest" });
}

// ---- compose ----

function showKindFields() {
  const kind = $("kind").value;
  $("text-fields").hidden = kind !== "2001";
  $("notice-fields").hidden = kind !== "3001" && kind !== "3003";
  $("custom-fields").hidden = kind !== "custom";
}
$("kind").addEventListener("change", showKindFields);
showKindFields();

$("compose-form").addEventListener("submit", async (/** @type {Event} */ event) => {
  event.preventDefault();
  if (!client) return;
  $("send-error").textContent = "";
  const to = $("to").value.split(",").map((/** @type {string} */ s) => s.trim()).filter(Boolean)
    .join(",");
  const kind = $("kind").value;
  const id = randomId();
  saved.to = to;
  localStorage.setItem("im-console", JSON.stringify({ ...saved }));
  /** @type {Promise<import("/client.js").SendResult>} */
  let result;
  /** @type {HTMLElement} */
  let entry;
  if (kind === "2001") {
    const text = $("text").value;
    entry = addSent(id, to, text);
    result = client.send(to, text, { id });
    $("text").value = "";
  } else if (kind === "3001" || kind === "3003") {
    /** @type {import("/client.js").NoticeBody} */
    const notice = { title: $("notice-title").value, msg: $("notice-msg").value };
    if ($("notice-target").value) notice.target = $("notice-target").value;
    if ($("notice-service").value) notice.serviceId = $("notice-service").value;
    entry = addSent(id, to, `${notice.title}: ${notice.msg}`, `notice ${kind}`);
    result = client.notice(to, notice, { id, targeted: kind === "3003" });
  } else {
    const type = Number($("custom-type").value);
    const body = $("custom-body").value;
    entry = addSent(id, to, body, `type ${type}`);
    result = client.sendCustom(type, to, body, { id });
  }
  $(kind === "2001" ? "text" : "to").focus();
  const status = /** @type {HTMLElement} */ (entry.querySelector(".status"));
  try {
    const answer = await result;
    status.textContent = `${answer.code} ${answer.status}`;
    status.className = "status ok";
    noteOffline(entry, to);
  } catch (error) {
    const e = /** @type {any} */ (error);
    const refused = typeof e?.code === "number";
    status.textContent = refused ? `${e.code} ${e.status ?? statusName(e.code) ?? ""}` : "not sent";
    status.title = describe(error);
    status.className = "status bad";
    // A refused frame is not in the conversation: it says so, with the server's reason.
    entry.classList.add("refused");
    entry.append(
      el(
        "div",
        "refusal",
        refused
          ? `Refused, not delivered: ${e.code} ${e.status ?? ""}: ${e.msg ?? describe(error)}`
          : `Not sent: ${describe(error)}`,
      ),
    );
    $("send-error").textContent = describe(error);
  }
});

/**
 * Under an accepted message, says which recipients are not online: the server keeps the
 * message and delivers it when they connect (`GET /app/presence`).
 * @param {HTMLElement} entry
 * @param {string} to
 */
async function noteOffline(entry, to) {
  const users = to.split(",").filter((user) => user !== client?.userId);
  if (!client?.token || users.length === 0) return;
  try {
    const response = await fetch(`/app/presence?users=${encodeURIComponent(users.join(","))}`, {
      headers: { token: client.token },
    });
    if (!response.ok) return;
    const { data } = await response.json();
    const offline = users.filter((user) => data[user] && !data[user].online);
    if (offline.length === 0) return;
    entry.append(
      el(
        "div",
        "offline",
        `${offline.join(", ")} ${offline.length === 1 ? "is" : "are"} not online: the message ` +
          "is stored and delivered when they connect",
      ),
    );
  } catch {
    // Presence is a hint; the 200 stands without it.
  }
}

// ---- history ----

$("to").addEventListener("change", () => openConversation());

/**
 * Loads the last messages with the user in "To" (when it names one user) into the
 * conversation, above what is there, skipping messages already shown.
 */
async function openConversation() {
  const peer = $("to").value.trim();
  if (!client?.token || !peer || peer.includes(",") || peer === historyPeer) return;
  historyPeer = peer;
  const me = client.userId;
  try {
    const response = await fetch(`/app/messages?with=${encodeURIComponent(peer)}&limit=50`, {
      headers: { token: client.token },
    });
    const body = await response.json();
    if (!response.ok) throw new Error(`${body.code} ${body.msg}`);
    /** @type {any[]} */
    const messages = body.data.messages.filter((/** @type {any} */ m) =>
      !shown.has(`${m.from}\u0000${m.id}`)
    ).reverse();
    if (messages.length === 0) return;
    const list = $("messages");
    const items = [
      el("li", "divider", `history with ${peer}: ${messages.length} earlier message(s)`),
    ];
    for (const m of messages) {
      shown.add(`${m.from}\u0000${m.id}`);
      const li = el("li", `${m.from === me ? "out" : "in"} history`);
      li.dataset.id = m.id;
      li.dataset.from = m.from;
      const head = el("div", "head");
      head.append(
        el("span", "who", m.from === me ? `to ${m.to}` : `from ${m.from}`),
        el("span", "when", time(m.timestamp)),
        el("span", "delivery", m.state),
      );
      if (m.type !== MessageType.TEXT) head.append(el("span", "kind", `type ${m.type}`));
      li.append(head, el("div", "text", m.body));
      items.push(li);
    }
    list.prepend(...items);
  } catch (error) {
    historyPeer = "";
    $("send-error").textContent = `History with ${peer} did not load: ${describe(error)}`;
  }
}

// ---- raw frame log ----

/** @param {import("/client.js").FrameEvent} f */
function logFrame(f) {
  const li = el("li", f.direction);
  const frame = f.frame;
  let summary = "unreadable frame";
  if (frame) {
    const name = TYPE_NAMES.get(/** @type {any} */ (frame.type)) ?? "custom";
    summary = `${frame.type} ${name} id=${frame.id} from=${frame.from} to=${frame.to}`;
    if (frame.type === MessageType.SEND_STATUS || frame.type === MessageType.RECEIPT) {
      try {
        const body = JSON.parse(frame.body);
        summary += ` → ${body.code} ${body.status}`;
      } catch {
        // keep the summary
      }
    }
  }
  li.append(
    el("span", "when", time()),
    el("span", "dir", f.direction === "in" ? "⇐ in" : "⇒ out"),
    el("span", "summary", summary),
    el("code", "raw", f.raw),
  );
  append($("log"), li);
}

$("clear-log").addEventListener("click", () => $("log").replaceChildren());

// Exposed for automated tests and for poking around in the browser's devtools.
Object.defineProperty(globalThis, "imConsole", { get: () => ({ client }) });
