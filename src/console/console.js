/**
 * The web console: a page that logs in as a user with the IM client, shows the
 * connection state, sends text, notices and custom frames, and shows incoming
 * frames, 9001 statuses, receipts and a log of raw frames.
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

// ---- login ----

const saved = JSON.parse(localStorage.getItem("im-console") ?? "{}");
$("username").value = saved.username ?? "";
$("client-name").value = saved.clientName ?? `console-${randomId().slice(0, 8)}`;
if (saved.to) $("to").value = saved.to;

$("login-form").addEventListener("submit", async (/** @type {Event} */ event) => {
  event.preventDefault();
  $("login-error").textContent = "";
  $("login").disabled = true;
  const username = $("username").value.trim();
  const token = $("token").value.trim();
  const clientName = $("client-name").value.trim();
  localStorage.setItem("im-console", JSON.stringify({ ...saved, username, clientName }));
  try {
    const next = new ImClient({
      url: location.origin,
      clientName,
      receipts: $("receipts").checked,
      ...(token
        ? { token, userId: $("token-user").value.trim() || undefined }
        : { username, password: $("password").value }),
    });
    watch(next);
    await next.connect();
    client = next;
    $("password").value = "";
    $("login-panel").hidden = true;
    $("compose-panel").hidden = false;
    $("logout").hidden = false;
    $("identity").textContent = `${next.userId} / ${next.clientName}`;
    $("to").focus();
  } catch (error) {
    $("login-error").textContent = describe(error);
  } finally {
    $("login").disabled = false;
  }
});

$("logout").addEventListener("click", async () => {
  const current = client;
  client = undefined;
  await current?.close();
  $("login-panel").hidden = false;
  $("compose-panel").hidden = true;
  $("logout").hidden = true;
  $("identity").textContent = "";
});

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
      $("login-panel").hidden = false;
      $("compose-panel").hidden = true;
      $("logout").hidden = true;
      if (s.reason === "replaced") {
        $("login-error").textContent = "This client name connected elsewhere (4001 replaced)";
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
  const li = el("li", "in");
  li.dataset.id = m.id;
  li.dataset.from = m.from;
  const head = el("div", "head");
  head.append(
    el("span", "who", `from ${m.from}${m.isSystem ? " (system)" : ""}`),
    el("span", "when", time(m.timestamp)),
  );
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
  } catch (error) {
    const e = /** @type {any} */ (error);
    status.textContent = typeof e?.code === "number"
      ? `${e.code} ${e.status ?? statusName(e.code) ?? ""}`
      : "not sent";
    status.title = describe(error);
    status.className = "status bad";
    $("send-error").textContent = describe(error);
  }
});

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
