/**
 * The load generator: one process, started by `bench/run.ts` with a JSON {@linkcode GenOptions}
 * as its only argument, that runs one scenario against one server and prints one JSON
 * {@linkcode GenResult} line on standard output. It reads the server's CPU time and memory from
 * `/proc/<serverPid>` and its own CPU time from `/proc/self`.
 *
 * @module
 */
import { Conn, type Dialect, type Incoming, loginIm, pool } from "./client.ts";
import { CpuMeter, machineBusySeconds, memory } from "./proc_stats.ts";
import { LatencyRecorder } from "./stats.ts";

/** The scenarios the generator knows. */
export type Scenario = "relay" | "fanout" | "open" | "idle" | "backlog";

/** What `bench/run.ts` asks the generator to do. */
export interface GenOptions {
  /** Scenario to run. */
  scenario: Scenario;
  /** Which server dialect to speak. */
  dialect: Dialect;
  /** `http://HOST:PORT` of the server. */
  origin: string;
  /** WebSocket path of our server and the bare relay. */
  path: string;
  /** Process id of the server, for CPU and memory. */
  serverPid: number;
  /**
   * Users (relay, open: senders and recipients; idle: connections; fanout, backlog: recipients +
   * 1).
   */
  users: number;
  /** Frames a sender may have without a 9001 reply (closed loop). */
  window: number;
  /** Whether recipients answer each delivered 2001 with a 9101 receipt. */
  receipts: boolean;
  /** Type of the relayed frames: 2001, or a plugin's type that the plugin relays. @default 2001 */
  frameType?: number;
  /** Milliseconds of load before measuring. */
  warmupMs: number;
  /** Milliseconds measured. */
  durationMs: number;
  /** Offered frames per second in total (open loop). */
  rate: number;
  /** Backlog: messages left waiting for offline recipients, measured (after as many warm-up). */
  messages?: number;
  /** Connections opened at once while connecting. */
  concurrency: number;
  /** Index of this generator's first user (u<offset+1>), when several generators share a cell. */
  offset: number;
  /** Number of this generator among those of the cell (keeps message ids apart). */
  gen: number;
}

/** What the generator measured. Rates are per second over the measured window. */
export interface GenResult {
  /** 2001 frames delivered to recipients per second. */
  delivered: number;
  /** 9001 replies to 2001 frames per second. */
  replies: number;
  /** 9101 receipts forwarded back to senders per second. */
  receipts: number;
  /** 2001 frames sent per second. */
  sent: number;
  /** Replies whose status was not 200. */
  errors: number;
  /** Latency from send (open loop: from the scheduled send time) to delivery, ms. */
  p50: number;
  /** 99th percentile of that latency, ms. */
  p99: number;
  /** Largest latency, ms. */
  max: number;
  /** Server CPU over the measured window, % of one core. */
  serverCpu: number;
  /**
   * Delivered frames per second of server CPU time: the server's efficiency, much steadier than
   * the rate when other processes share the machine.
   */
  perCpuSecond: number;
  /** Generator CPU over the measured window, % of one core. */
  genCpu: number;
  /** CPU used by every other process on the machine over the window, % of one core. */
  otherCpu: number;
  /** Server peak RSS (VmHWM) at the end, bytes. */
  serverPeakRss: number;
  /** Server RSS at the end, bytes. */
  serverRss: number;
  /** Idle: WebSocket connect + register per second. */
  connectRate: number;
  /** Idle (our server): HTTP login + session per second. */
  loginRate: number;
  /** Idle: server RSS growth per connection over the second half of the connections, bytes. */
  bytesPerConn: number;
  /** Idle: server RSS growth per connection over all of them (from before the first), bytes. */
  bytesPerConnAvg: number;
  /** Backlog: server RSS growth per message held for an offline recipient, bytes. */
  bytesPerMessage: number;
  /** Backlog: average length of a message's text (the frame as delivered), bytes. */
  textBytes: number;
}

const MASK = (1 << 20) - 1;

function emptyResult(): GenResult {
  return {
    delivered: NaN,
    replies: NaN,
    receipts: NaN,
    sent: NaN,
    errors: 0,
    p50: NaN,
    p99: NaN,
    max: NaN,
    serverCpu: NaN,
    perCpuSecond: NaN,
    genCpu: NaN,
    otherCpu: NaN,
    serverPeakRss: NaN,
    serverRss: NaN,
    connectRate: NaN,
    loginRate: NaN,
    bytesPerConn: NaN,
    bytesPerConnAvg: NaN,
    bytesPerMessage: NaN,
    textBytes: NaN,
  };
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Tells `run.ts` that every user is registered (a `{"ready":true}` line) and waits for a line on
 * standard input, so that several generators of one cell start their load together.
 */
async function barrier(): Promise<void> {
  console.log(JSON.stringify({ ready: true }));
  const reader = Deno.stdin.readable.getReader();
  await reader.read();
  reader.releaseLock();
}

/** Logs in (our server only) and registers `count` users; returns the connections. */
async function connectAll(
  options: GenOptions,
  count: number,
  timing?: { loginMs: number; connectMs: number },
): Promise<Conn[]> {
  const { dialect, origin, path, concurrency } = options;
  const credentials = new Array<string>(count).fill("");
  const t0 = performance.now();
  if (dialect === "im") {
    await pool(count, Math.min(concurrency, 32), async (i) => {
      credentials[i] = await loginIm(origin, options.offset + i);
    });
  }
  const t1 = performance.now();
  const conns = Array.from({ length: count }, (_, i) => new Conn(options.offset + i, dialect));
  await pool(count, concurrency, (i) => conns[i].open(origin, path, credentials[i]));
  if (timing) {
    timing.loginMs = t1 - t0;
    timing.connectMs = performance.now() - t1;
  }
  return conns;
}

/** Closed-loop relay and fan-out, and the open-loop relay. */
async function runTraffic(options: GenOptions): Promise<GenResult> {
  const { scenario, window, receipts } = options;
  const fanout = scenario === "fanout";
  const conns = await connectAll(options, options.users);
  const n = conns.length;
  const senders = fanout ? [conns[0]] : conns;
  if (fanout) {
    conns[0].setTarget(conns.slice(1).map((c) => c.userId).join(","), "hello fan-out");
  } else {
    for (let i = 0; i < n; i++) {
      conns[i].setTarget(conns[(i + 1) % n].userId, "hello relay", options.frameType);
    }
  }

  const sendTime = new Float64Array(MASK + 1);
  const senderOf = new Int32Array(MASK + 1);
  const latency = new LatencyRecorder();
  let seq = options.gen * 100_000_000;
  const offset = options.offset;
  let running = true;
  let measuring = false;
  let delivered = 0, replies = 0, receiptsIn = 0, errors = 0, sentInWindow = 0;

  const send = (conn: Conn, at: number) => {
    const s = seq++;
    sendTime[s & MASK] = at;
    senderOf[s & MASK] = conn.index;
    conn.outstanding++;
    if (measuring) sentInWindow++;
    conn.sendText(s);
  };
  const fill = (conn: Conn) => {
    while (running && conn.outstanding < window) send(conn, performance.now());
  };
  const open = scenario === "open";
  const textType = options.frameType ?? 2001;
  const onFrame = (conn: Conn, frame: Incoming) => {
    const slot = frame.seq & MASK;
    if (frame.type === 9001) {
      if (frame.seq < 0) return;
      if (!frame.ok) errors++;
      if (senderOf[slot] !== conn.index) return; // the reply to one of our receipts
      conn.outstanding--;
      if (measuring) replies++;
      if (!open) fill(conn);
    } else if (frame.type === textType) {
      if (measuring) {
        delivered++;
        latency.add(performance.now() - sendTime[slot]);
      }
      if (receipts) conn.sendReceipt(frame.seq, conns[senderOf[slot] - offset].userId);
    } else if (frame.type === 9101) {
      if (measuring) receiptsIn++;
    }
  };
  for (const conn of conns) conn.onFrame(onFrame);
  await barrier();

  let timer: ReturnType<typeof setInterval> | undefined;
  const start = performance.now();
  if (open) {
    // Open loop: frame k is due at start + k/rate, sent round robin; latency counts from then.
    const interval = 1000 / options.rate;
    let next = 0;
    timer = setInterval(() => {
      const due = Math.floor((performance.now() - start) / interval);
      while (running && next <= due) send(conns[next % n], start + next++ * interval);
    }, 1);
  } else {
    for (const conn of senders) fill(conn);
  }

  await delay(options.warmupMs);
  const serverCpu = new CpuMeter(options.serverPid);
  const genCpu = new CpuMeter("self");
  serverCpu.start();
  genCpu.start();
  const busy0 = machineBusySeconds();
  errors = 0;
  measuring = true;
  const t0 = performance.now();
  await delay(options.durationMs);
  measuring = false;
  const seconds = (performance.now() - t0) / 1000;
  const result = emptyResult();
  result.serverCpu = serverCpu.stop();
  result.genCpu = genCpu.stop();
  result.otherCpu = ((machineBusySeconds() - busy0) / seconds) * 100 - result.serverCpu -
    result.genCpu;
  running = false;
  clearInterval(timer);
  const mem = memory(options.serverPid);
  Object.assign(result, latency.summary(), {
    delivered: delivered / seconds,
    perCpuSecond: delivered / seconds / (result.serverCpu / 100),
    replies: replies / seconds,
    receipts: receiptsIn / seconds,
    sent: sentInWindow / seconds,
    errors,
    serverPeakRss: mem.peak,
    serverRss: mem.rss,
  });
  for (const conn of conns) conn.close();
  return result;
}

/** Idle: many registered connections that send nothing; memory per connection. */
async function runIdle(options: GenOptions): Promise<GenResult> {
  const settle = Math.max(1000, options.warmupMs);
  const before = memory(options.serverPid).rss;
  const serverCpu = new CpuMeter(options.serverPid);
  const genCpu = new CpuMeter("self");
  serverCpu.start();
  genCpu.start();
  const busy0 = machineBusySeconds();
  const t0 = performance.now();
  // Two halves: the RSS growth of the second half is the marginal cost of a connection, free of
  // the fixed growth (heap sizing, first allocations) that the first connections pay for.
  const half = Math.floor(options.users / 2);
  const first = { loginMs: 0, connectMs: 0 };
  const second = { loginMs: 0, connectMs: 0 };
  const conns = await connectAll(options, half, first);
  const cpuTime = performance.now() - t0;
  const result = emptyResult();
  result.serverCpu = serverCpu.stop();
  result.genCpu = genCpu.stop();
  result.otherCpu = ((machineBusySeconds() - busy0) / (cpuTime / 1000)) * 100 -
    result.serverCpu - result.genCpu;
  await delay(settle);
  const middle = memory(options.serverPid).rss;
  const rest = options.users - half;
  conns.push(...await connectAll({ ...options, offset: options.offset + half }, rest, second));
  await delay(settle);
  const mem = memory(options.serverPid);
  const n = conns.length;
  result.connectRate = n / ((first.connectMs + second.connectMs) / 1000);
  result.loginRate = options.dialect === "im" ? n / ((first.loginMs + second.loginMs) / 1000) : NaN;
  result.bytesPerConn = (mem.rss - middle) / rest;
  result.bytesPerConnAvg = (mem.rss - before) / n;
  result.serverRss = mem.rss;
  result.serverPeakRss = mem.peak;
  for (const conn of conns) conn.close();
  return result;
}

/**
 * Backlog: one sender, 100 offline recipients in turn; the server's RSS growth per message left
 * waiting for them (our server keeps each until it is acknowledged; the peers keep nothing).
 */
async function runBacklog(options: GenOptions): Promise<GenResult> {
  const settle = Math.max(1000, options.warmupMs);
  const [sender] = await connectAll(options, 1);
  const targets = Array.from({ length: options.users - 1 }, (_, i) => `u${i + 2}`);
  sender.setTargets(targets, "hello backlog");
  const count = options.messages ?? 50_000;
  let seq = 0;
  let answered = 0;
  let errors = 0;
  let goal = 0;
  let done = () => {};
  sender.onFrame((conn, frame) => {
    if (frame.type !== 9001 || frame.seq < 0) return;
    if (!frame.ok) errors++;
    conn.outstanding--;
    answered++;
    while (seq < goal && conn.outstanding < options.window) {
      conn.outstanding++;
      conn.sendText(seq++);
    }
    if (answered === goal) done();
  });
  const sendUpTo = (n: number) => {
    const { promise, resolve } = Promise.withResolvers<void>();
    done = resolve;
    goal = n;
    while (seq < goal && sender.outstanding < options.window) {
      sender.outstanding++;
      sender.sendText(seq++);
    }
    return promise;
  };
  // Warm-up: as many messages again, so the heap has grown into its working size.
  await sendUpTo(count);
  await delay(settle);
  const before = memory(options.serverPid).rss;
  const serverCpu = new CpuMeter(options.serverPid);
  const genCpu = new CpuMeter("self");
  serverCpu.start();
  genCpu.start();
  const t0 = performance.now();
  await sendUpTo(2 * count);
  const seconds = (performance.now() - t0) / 1000;
  const result = emptyResult();
  result.serverCpu = serverCpu.stop();
  result.genCpu = genCpu.stop();
  await delay(settle);
  const mem = memory(options.serverPid);
  let textBytes = 0;
  for (const to of targets) {
    const frame = `{"id":"m${count}","type":2001,"isSystem":false,"from":"u1","to":"${to}",` +
      `"body":"hello backlog","timestamp":${Date.now()}}`;
    textBytes += frame.length;
  }
  result.sent = count / seconds;
  result.replies = count / seconds;
  result.errors = errors;
  result.bytesPerMessage = (mem.rss - before) / count;
  result.textBytes = textBytes / targets.length;
  result.serverRss = mem.rss;
  result.serverPeakRss = mem.peak;
  sender.close();
  return result;
}

if (import.meta.main) {
  const options = JSON.parse(Deno.args[0]) as GenOptions;
  const timeout = setTimeout(() => {
    console.error("load generator: timed out");
    Deno.exit(2);
  }, 120_000 + options.warmupMs + options.durationMs);
  try {
    const result = options.scenario === "idle"
      ? await runIdle(options)
      : options.scenario === "backlog"
      ? await runBacklog(options)
      : await runTraffic(options);
    console.log(JSON.stringify(result));
    clearTimeout(timeout);
    await delay(50);
    Deno.exit(0);
  } catch (error) {
    console.error(`load generator: ${error instanceof Error ? error.message : error}`);
    Deno.exit(1);
  }
}
