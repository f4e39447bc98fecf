// Connectivity end-to-end test: does a call connect, and survive, when the network gets in the
// way? ICE-TCP when UDP is blocked, ICE restart when a participant's address changes, session
// resume when the signaling WebSocket drops, and no reconnect storm when media can never connect.
//
// Run through connectivity.sh (needs root), which builds the namespaces (netns.sh) and starts
// this script inside the server's namespace:
//
//   bash tests/browser/connectivity.sh
//   CONNECTIVITY_PHASES=1,3 bash tests/browser/connectivity.sh     # only these phases
//
// Three Chromium *processes*, alice (b1), bob (b2) and carol (b3), each in its own network
// namespace with its own veth to the server's bridge (the server: HTTP 10.99.0.1:8080, media UDP
// and ICE-TCP both on 10.99.0.1:50000). Every phase opens fresh pages in a room of its own:
//   1. UDP blocked for bob (netns.sh block-udp, both ways, before he joins): he must connect over
//      ICE-TCP (selected pair tcp), and alice and he decode each other; the time from page.goto
//      (and from the SDK's `joined`) to his first decoded remote frame; the server's
//      confab_ice_tcp_connections >= 1 while he is connected.
//   2. Mid-call, bob's address changes (netns.sh move: 10.99.0.12 -> 10.99.0.22): both decode each
//      other again within MAX_RECOVERY_MS of the move, bob keeps his participant id, alice sees
//      no participant-left, and bob's session restarted ICE (or resumed) at least once.
//   3. Mid-call, bob's signaling WebSocket is closed from the page: his session resumes once
//      (session.resumes 1) within the grace period, same participant id, no participant-left at
//      alice, and video never stalls more than MAX_STALL_MS either way.
//   4. carol joins alice and bob with her media port blocked (UDP and TCP to 10.99.0.1:50000,
//      netns.sh block-media) and stays STORM_WINDOW_MS: only a handful of joins and ICE restarts
//      (server /metrics deltas and her SDK's counters), at growing intervals, and alice and bob
//      each see at most one participant-left for her. Prints what her banner said.
//
// Page instrumentation (an init script): the signaling WebSockets are kept (phase 3 closes one),
// every session event is recorded with its time (Session is an EventTarget; the script sees its
// dispatchEvent), the first decoded remote video frame is timed (getStats every 100 ms until
// then), and a frame trace (framesDecoded per remote every 100 ms) runs around each disruption.
//
// Exits 1 if any criterion fails (or the harness breaks); prints `connectivity: N passed, N failed`.

import {
  NETNS_BASE_URL, NETNS_MEDIA_ADDR, NetnsTest, SAMPLE_MS, TestFailure, fetchMetrics, secs, sleep,
  envMs,
} from './lib.mjs';

// ------------------------------------------------------------------ pass criteria

/** Phase 2: after the move, each direction decodes again within this. */
const MAX_RECOVERY_MS = envMs('CONNECTIVITY_MAX_RECOVERY_MS', 5_000);
/** Phase 3: the longest gap between decoded frames (either direction) across the socket loss. */
const MAX_STALL_MS = 1_000;
/** Phase 3: the server's resume grace period (signaling.resume_grace, default 15 s). */
const RESUME_GRACE_MS = 15_000;
/** Phase 4: over STORM_WINDOW_MS, at most this many joins and ICE restarts from carol. */
const MAX_STORM_JOINS = 2;
const MAX_STORM_RESTARTS = 8;
/** Phase 4: at most this many participant-left for carol at each of alice and bob. */
const MAX_STORM_LEAVES = 1;
/** Phase 4: "growing delays": each interval between carol's attempts (ICE restarts and joins) is
 * at least this share of the one before (the SDK jitters its backoff by ±30 %, and doubles it). */
const MIN_INTERVAL_GROWTH = 0.7;

// ------------------------------------------------------------------ shape

const STORM_WINDOW_MS = envMs('CONNECTIVITY_STORM_MS', 60_000);
/** Pages must decode each other within this of page.goto (else the phase fails). */
const DECODE_TIMEOUT_MS = 20_000;
/** Frame traces poll getStats this often. */
const TRACE_MS = 100;
/** A gap between frame increases longer than this is a stall (the trace's jitter is below it). */
const GAP_MS = 500;
/** "Decoding steadily again": frames rising without a GAP_MS gap for this long. */
const STEADY_MS = 2_000;
/** Phase 2 keeps watching this long after the move (past MAX_RECOVERY_MS, to report the time). */
const MOVE_WATCH_MS = envMs('CONNECTIVITY_MOVE_WATCH_MS', 15_000);
/** Development aid, not a criterion: phase 2 closes bob's WebSocket this long after the move and
 * hands his session the `close` event (as an SDK that noticed its socket died with the address
 * would see it), to see what recovery would take then. */
const MOVE_CLOSE_WS_MS = process.env.CONNECTIVITY_MOVE_CLOSE_WS_MS ? envMs('CONNECTIVITY_MOVE_CLOSE_WS_MS', 0) : null;
/** Decoding before a disruption, traced as the baseline. */
const BEFORE_MS = 2_000;
/** After the resume, phase 3 keeps tracing this long. */
const AFTER_RESUME_MS = envMs('CONNECTIVITY_AFTER_RESUME_MS', 3_000);
const VIEWPORT = { width: 1280, height: 720 };
const DEVICE_SCALE = 1;

const PHASES = [
  { id: 1, title: 'UDP blocked -> ICE-TCP', run: phaseTcp, budgetMs: 40_000 },
  { id: 2, title: 'address change -> ICE restart', run: phaseMove, budgetMs: 40_000 },
  { id: 3, title: 'WebSocket killed -> resume', run: phaseResume, budgetMs: 40_000 },
  { id: 4, title: 'media always fails -> no storm', run: phaseStorm, budgetMs: 25_000 + STORM_WINDOW_MS },
];
const SELECTED = parsePhases(process.env.CONNECTIVITY_PHASES);
/** Browser start, server start and teardown, on top of the phases. */
const BUDGET_BASE_MS = 40_000;
const TOTAL_BUDGET_MS = BUDGET_BASE_MS + SELECTED.reduce((sum, p) => sum + p.budgetMs, 0);

const test = new NetnsTest({
  name: 'connectivity',
  netnsId: process.env.CONNECTIVITY_NETNS_ID,
  netnsSh: process.env.CONNECTIVITY_NETNS_SH,
  rustLog: process.env.CONNECTIVITY_RUST_LOG,
});
const NETNS_ID = test.netnsId;
const log = (msg) => test.log(msg);

function parsePhases(v) {
  if (v === undefined || v.trim() === '') return PHASES;
  const out = [];
  for (const id of v.split(',').map((x) => x.trim()).filter(Boolean)) {
    const p = PHASES.find((q) => String(q.id) === id);
    if (!p) usage(`CONNECTIVITY_PHASES: unknown phase '${id}' (1..${PHASES.length})`);
    if (!out.includes(p)) out.push(p);
  }
  return out.sort((a, b) => a.id - b.id);
}

function usage(msg) {
  console.error(`connectivity: ${msg}`);
  process.exit(2);
}

// ------------------------------------------------------------------ verdicts

/** @type {{phase: number, name: string, ok: boolean, detail: string}[]} */
const verdicts = [];

function criterion(phase, name, ok, detail) {
  verdicts.push({ phase, name, ok: !!ok, detail });
  log(`  phase ${phase} ${ok ? 'pass' : 'FAIL'} ${name}: ${detail}`);
}

// ------------------------------------------------------------------ in the page

/**
 * Runs in every page before its own scripts: `window.__conn`. Keeps the WebSockets, records the
 * session's events, times the first decoded remote video frame, and runs frame traces on demand.
 * Reads only the session's public surface (`window.confab.session`: `pc`, `participants`,
 * `participantForTrack`, the counters) and getStats().
 */
function connectivityPage() {
  const c = {
    /** every WebSocket the page opened, oldest first */
    sockets: [],
    /** per socket: when it was made, opened, last received and sent a message, closed (and the code) */
    socketLog: [],
    /** the session's events: {type, at (Date.now()), and the detail's plain fields} */
    events: [],
    /** Date.now() of the first decoded remote video frame, and whose it was */
    firstFrameAt: null,
    firstFrameFrom: null,
    /** @type {any[] | null} [at, {remote name: framesDecoded}, pc connectionState] every TRACE ms */
    trace: null,
    traceTimer: null,
  };
  /** @type {any} */ (window).__conn = c;

  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      c.sockets.push(this);
      const info = { opened: Date.now(), open: null, lastRx: null, lastTx: null, closed: null, code: null };
      c.socketLog.push(info);
      this.addEventListener('open', () => { info.open = Date.now(); });
      this.addEventListener('message', () => { info.lastRx = Date.now(); });
      this.addEventListener('close', (ev) => { info.closed = Date.now(); info.code = ev.code; });
      const send = this.send;
      this.send = (data) => { info.lastTx = Date.now(); return send.call(this, data); };
    }
  };

  // Session extends EventTarget and emits CustomEvents through dispatchEvent.
  const dispatch = EventTarget.prototype.dispatchEvent;
  EventTarget.prototype.dispatchEvent = function (ev) {
    try {
      const s = /** @type {any} */ (window).confab?.session;
      if (s && this === s && ev instanceof CustomEvent && ev.type !== 'active-speakers') {
        const d = ev.detail ?? {};
        const e = { type: ev.type, at: Date.now() };
        for (const k of ['participantId', 'attempt', 'delayMs', 'reason', 'resuming', 'restarts', 'state', 'code', 'message', 'reconnected']) {
          if (d[k] !== undefined && (typeof d[k] !== 'object' || d[k] === null)) e[k] = d[k];
        }
        if (d.participant?.name) e.name = d.participant.name;
        else if (d.participantId && s.participants?.get(d.participantId)) e.name = s.participants.get(d.participantId).name;
        c.events.push(e);
        if (c.events.length > 1000) c.events.splice(0, 100);
      }
    } catch { /* never break the page */ }
    return dispatch.call(this, ev);
  };

  /** Frames decoded per remote display name (every video stream of that name summed). */
  c.frames = async () => {
    const s = /** @type {any} */ (window).confab?.session;
    const pc = s?.pc;
    const out = {};
    if (!pc) return { frames: out, pc: 'none' };
    const stats = await pc.getStats();
    stats.forEach((r) => {
      if (r.type !== 'inbound-rtp' || r.kind !== 'video') return;
      const id = s.participantForTrack(r.trackIdentifier);
      const name = (id && s.participants.get(id)?.name) || null;
      if (name) out[name] = (out[name] ?? 0) + (r.framesDecoded ?? 0);
    });
    return { frames: out, pc: pc.connectionState };
  };

  let busy = false;
  const firstTimer = setInterval(async () => {
    if (busy) return;
    busy = true;
    try {
      const { frames } = await c.frames();
      const who = Object.keys(frames).find((n) => frames[n] > 0);
      if (who) {
        c.firstFrameAt = Date.now();
        c.firstFrameFrom = who;
        clearInterval(firstTimer);
      }
    } catch { /* not ready */ } finally {
      busy = false;
    }
  }, 100);

  c.startTrace = (ms) => {
    c.trace = [];
    let tracing = false;
    c.traceTimer = setInterval(async () => {
      if (tracing) return;
      tracing = true;
      try {
        const at = Date.now();
        const { frames, pc } = await c.frames();
        c.trace?.push([at, frames, pc]);
        if (c.trace && c.trace.length > 1000) c.trace.shift();
      } catch { /* keep going */ } finally {
        tracing = false;
      }
    }, ms);
  };
  c.stopTrace = () => {
    clearInterval(c.traceTimer);
    const t = c.trace;
    c.trace = null;
    return t ?? [];
  };

  /** Every text the recovery banner showed (app.js's `state.banner`), and the status line, with
   * when it first did (digits in countdowns read as N, so a ticking countdown is one text). */
  c.banners = [];
  let lastBanner = null;
  setInterval(() => {
    const text = /** @type {any} */ (window).confab?.state?.banner ?? null;
    const status = document.getElementById('status-text')?.textContent ?? '';
    const key = `${text ?? ''}|${status}`.replace(/\d+/g, 'N');
    if (key === lastBanner) return;
    lastBanner = key;
    c.banners.push({ at: Date.now(), banner: text, status });
    if (c.banners.length > 200) c.banners.splice(0, 50);
  }, 200);

  /** Epoch ms of app.js's `confab:joined` mark (performance marks count from navigation start). */
  c.joinedAt = () => {
    const m = performance.getEntriesByName('confab:joined', 'mark')[0];
    return m ? performance.timeOrigin + m.startTime : null;
  };
}

/** Runs in the page (lib.mjs's sampler): session state, counters, banner, ICE path, video streams. */
async function sampleInPage() {
  const h = /** @type {any} */ (window).__netns;
  const s = /** @type {any} */ (window).confab?.session;
  const pc = s?.pc;
  const out = {
    state: s?.state ?? 'none',
    pcState: pc?.connectionState ?? 'none',
    participantId: s?.participantId ?? null,
    reconnects: s?.reconnects ?? 0,
    resumes: s?.resumes ?? 0,
    iceRestarts: s?.iceRestarts ?? 0,
    banner: /** @type {any} */ (window).confab?.state?.banner ?? null,
    path: null,
    inbound: [],
  };
  if (!h || !pc) return out;
  const stats = await pc.getStats();
  stats.forEach((r) => {
    const stream = h.inbound(s, r);
    if (stream && r.kind === 'video') out.inbound.push({ ...stream, frames: r.framesDecoded ?? 0 });
  });
  out.path = h.path(stats);
  return out;
}

const PAGE = { viewport: VIEWPORT, deviceScale: DEVICE_SCALE, sampleInPage };

// ------------------------------------------------------------------ page helpers

const evaluate = (b, fn, arg) => b.page.evaluate(fn, arg);
const conn = (b) => evaluate(b, () => {
  const c = /** @type {any} */ (window).__conn;
  const s = /** @type {any} */ (window).confab?.session;
  return {
    events: c?.events ?? [],
    firstFrameAt: c?.firstFrameAt ?? null,
    firstFrameFrom: c?.firstFrameFrom ?? null,
    joinedAt: c?.joinedAt() ?? null,
    participantId: s?.participantId ?? null,
    state: s?.state ?? 'none',
    pcState: s?.pc?.connectionState ?? 'none',
    resumes: s?.resumes ?? 0,
    iceRestarts: s?.iceRestarts ?? 0,
    reconnects: s?.reconnects ?? 0,
    banner: /** @type {any} */ (window).confab?.state?.banner ?? null,
    sockets: c?.socketLog ?? [],
    banners: c?.banners ?? [],
    bannerDom: document.getElementById('conn-banner')?.hidden === false ? document.getElementById('conn-banner')?.innerText ?? null : null,
  };
});
const frames = (b) => evaluate(b, () => /** @type {any} */ (window).__conn.frames());
const startTrace = (b) => evaluate(b, (ms) => /** @type {any} */ (window).__conn.startTrace(ms), TRACE_MS);
const stopTrace = (b) => evaluate(b, () => /** @type {any} */ (window).__conn.stopTrace());
const peekTrace = (b) => evaluate(b, () => [...(/** @type {any} */ (window).__conn.trace ?? [])]);

const unsampled = (fn) => test.unsampled(fn);
const openRoom = (browsers, room) => test.openRoom(browsers, room);
const leave = (browsers) => test.leaveRoom(browsers);

/**
 * Waits until every page in `who` (page → remote names) decodes each of its remotes: frames
 * rising between two polls 500 ms apart. Throws after DECODE_TIMEOUT_MS since `since`.
 * @param {Map<any, string[]>} who
 */
async function waitDecoding(who, since, what) {
  const last = new Map();
  const done = new Set();
  while (done.size < who.size) {
    if (Date.now() > since + DECODE_TIMEOUT_MS) {
      const missing = [...who].filter(([b]) => !done.has(b)).map(([b, r]) => `${b.name} (of ${r.join(', ')}: ${JSON.stringify(last.get(b) ?? {})})`);
      throw new TestFailure(`${what}: not decoding within ${secs(DECODE_TIMEOUT_MS)}: ${missing.join('; ')}`);
    }
    await test.watch(500);
    for (const [b, remotes] of who) {
      if (done.has(b)) continue;
      const now = (await frames(b)).frames;
      const before = last.get(b);
      if (before && remotes.every((r) => (now[r] ?? 0) > (before[r] ?? 0))) done.add(b);
      last.set(b, now);
    }
  }
  return Date.now();
}

/** The times at which `remote`'s frame count rose in a trace (a counter that went down — a new
 * PeerConnection — counts as rising if it is above 0). */
function increases(trace, remote) {
  const out = [];
  let prev = null;
  for (const [at, f] of trace) {
    const n = f[remote] ?? 0;
    if (prev !== null && (n > prev || (n < prev && n > 0))) out.push(at);
    prev = n;
  }
  return out;
}

/** Every interval without a frame increase longer than `minMs` in [from, to] (edges count). */
function stalls(trace, remote, from, to, minMs = GAP_MS) {
  const times = [from, ...increases(trace, remote).filter((t) => t >= from && t <= to), to];
  const out = [];
  for (let i = 1; i < times.length; i++) if (times[i] - times[i - 1] > minMs) out.push({ from: times[i - 1], to: times[i], ms: times[i] - times[i - 1] });
  return out;
}

/** The longest interval without a frame increase in [from, to] (edges count). */
function longestStall(trace, remote, from, to) {
  const times = increases(trace, remote).filter((t) => t >= from && t <= to);
  let worst = { ms: (times[0] ?? to) - from, from, to: times[0] ?? to };
  for (let i = 1; i < times.length; i++) {
    if (times[i] - times[i - 1] > worst.ms) worst = { ms: times[i] - times[i - 1], from: times[i - 1], to: times[i] };
  }
  const tailMs = to - (times.at(-1) ?? from);
  if (tailMs > worst.ms) worst = { ms: tailMs, from: times.at(-1) ?? from, to };
  return worst;
}

/**
 * After an event at `at`: when did `remote` decode steadily again? The end of the last stall
 * (gap > GAP_MS) that ended after `at`, provided frames then rose without a stall for STEADY_MS
 * up to the trace's end; `{recovered: false}` otherwise. No stall after `at`: 0 ms.
 */
function recovery(trace, remote, at) {
  const times = increases(trace, remote);
  const end = trace.at(-1)?.[0] ?? at;
  let resumedAt = null;
  let stallFrom = null;
  for (let i = 1; i < times.length; i++) {
    if (times[i] > at && times[i] - Math.max(times[i - 1], at - GAP_MS) > GAP_MS && times[i] - times[i - 1] > GAP_MS) {
      resumedAt = times[i];
      stallFrom = times[i - 1];
    }
  }
  const lastInc = times.at(-1) ?? -Infinity;
  const stalledNow = end - lastInc > GAP_MS;
  if (stalledNow) return { recovered: false, stallFrom: Math.max(lastInc, at), lastInc };
  const since = resumedAt ?? times.find((t) => t > at - GAP_MS) ?? null;
  if (since === null || end - since < STEADY_MS) return { recovered: false, stallFrom, lastInc, pending: true };
  return { recovered: true, ms: resumedAt === null ? 0 : resumedAt - at, stallFrom, resumedAt };
}

const metricValue = (m, name, labels = '') => m?.get(name)?.get(labels) ?? 0;
const metricSum = (m, name) => [...(m?.get(name)?.values() ?? [])].reduce((a, b) => a + b, 0);
const JOIN_LABEL = 'type="join"';
const RESUME_LABEL = 'type="resume"';

async function blocked(k) {
  const out = {};
  for (const line of (await test.netns('blocked', NETNS_ID, String(k))).trim().split('\n')) {
    const [what, n] = line.trim().split(/\s+/);
    out[what] = Number(n);
  }
  return out;
}

const eventsOf = (info, type) => info.events.filter((e) => e.type === type);
const leftFor = (info, name) => info.events.filter((e) => e.type === 'participant-left' && e.name === name);

// ------------------------------------------------------------------ phases

/** Phase 1: bob's UDP is blocked before he joins; he must come in over ICE-TCP. */
async function phaseTcp({ alice, bob }, room) {
  await test.netns('block-udp', NETNS_ID, '2');
  test.event('phase 1: UDP blocked for bob');
  log('phase 1: all UDP between bob and the server dropped (netns.sh block-udp); both join');
  const [tA, tB] = await openRoom([alice, bob], room);
  const decodingAt = await waitDecoding(new Map([[alice, ['bob']], [bob, ['alice']]]), tA, 'phase 1');
  await test.watch(SAMPLE_MS * 2);
  const [a, b] = await Promise.all([conn(alice), conn(bob)]);
  const metrics = await fetchMetrics(NETNS_BASE_URL);
  const drops = await blocked(2);
  const pathB = bob.samples.at(-1)?.path;
  const pathA = alice.samples.at(-1)?.path;
  const fromGoto = b.firstFrameAt !== null ? b.firstFrameAt - tB : NaN;
  const fromJoined = b.firstFrameAt !== null && b.joinedAt !== null ? b.firstFrameAt - b.joinedAt : NaN;
  log(`phase 1: bob's first decoded remote frame (${b.firstFrameFrom}) ${secs(fromGoto)} after page.goto, `
    + `${secs(fromJoined)} after \`joined\`; alice's (${a.firstFrameFrom}) ${secs(a.firstFrameAt - tA)} after page.goto, `
    + `${secs(a.firstFrameAt - a.joinedAt)} after \`joined\`; both decoding each other ${secs(decodingAt - tA)} after the first page.goto`);
  log(`phase 1: ICE pairs: bob ${JSON.stringify(pathB)}, alice ${JSON.stringify(pathA)}; bob's ICE restarts ${b.iceRestarts}, `
    + `rejoins ${b.reconnects}; UDP datagrams the block dropped: ${drops.udp}; server confab_ice_tcp_connections `
    + `${metrics ? metricValue(metrics, 'confab_ice_tcp_connections') : '(no /metrics)'}`);
  criterion(1, 'bob over ICE-TCP', pathB?.protocol === 'tcp' && pathB.local === bob.ip && pathB.remote === NETNS_MEDIA_ADDR,
    `bob's selected pair ${pathB ? `${pathB.protocol} ${pathB.local} -> ${pathB.remote}` : 'none'} (want tcp ${bob.ip} -> ${NETNS_MEDIA_ADDR})`);
  criterion(1, 'both decode', true, `alice decodes bob and bob decodes alice ${secs(decodingAt - tA)} after page.goto`);
  criterion(1, 'server counts the TCP connection', metricValue(metrics, 'confab_ice_tcp_connections') >= 1,
    `confab_ice_tcp_connections ${metrics ? metricValue(metrics, 'confab_ice_tcp_connections') : 'n/a (no /metrics)'} (>= 1)`);
  criterion(1, 'the block was in force', drops.udp > 0, `${drops.udp} UDP datagrams dropped on bob's link (> 0: he tried UDP)`);
  await leave([alice, bob]);
  await test.netns('unblock-udp', NETNS_ID, '2');
}

/** Phase 2: mid-call, bob's address changes. */
async function phaseMove({ alice, bob }, room) {
  log(`phase 2: alice and bob join (bob at ${bob.ip}); then bob's address changes`);
  const [tA] = await openRoom([alice, bob], room);
  await waitDecoding(new Map([[alice, ['bob']], [bob, ['alice']]]), tA, 'phase 2');
  await test.watch(SAMPLE_MS * 2);
  test.checkIcePaths({ protocol: 'udp', browsers: [alice, bob] });
  const before = await conn(bob);
  const m0 = await fetchMetrics(NETNS_BASE_URL);
  await Promise.all([startTrace(alice), startTrace(bob)]);
  await test.watch(BEFORE_MS);
  const oldIp = bob.ip;
  const moveAt = Date.now();
  bob.ip = (await test.netns('move', NETNS_ID, '2')).trim();
  const movedMs = Date.now() - moveAt;
  test.event(`phase 2: bob moved ${oldIp} -> ${bob.ip}`);
  log(`phase 2: bob moved ${oldIp} -> ${bob.ip} (netns.sh move took ${movedMs} ms; times below count from its start)`);
  let rA = { recovered: false };
  let rB = { recovered: false };
  let kicked = MOVE_CLOSE_WS_MS === null;
  while (Date.now() < moveAt + MOVE_WATCH_MS) {
    if (!kicked && Date.now() >= moveAt + MOVE_CLOSE_WS_MS) {
      kicked = true;
      // Its TCP connection is dead: close() alone would leave it CLOSING (no close frame comes
      // back), so the session is handed the `close` event an SDK noticing the loss would act on.
      await evaluate(bob, () => {
        const ws = /** @type {any} */ (window).__conn.sockets.findLast((w) => w.readyState === WebSocket.OPEN);
        ws?.close(4000, 'test');
        ws?.dispatchEvent(new CloseEvent('close', { code: 1006, reason: 'connectivity test' }));
      });
      log(`phase 2: (CONNECTIVITY_MOVE_CLOSE_WS_MS) told bob's session its WebSocket closed, ${Date.now() - moveAt} ms after the move`);
    }
    await test.watch(500);
    const [ta, tb] = await Promise.all([peekTrace(alice), peekTrace(bob)]);
    rA = recovery(ta, 'bob', moveAt);
    rB = recovery(tb, 'alice', moveAt);
    // A stall may start a moment after the move (the jitter buffer drains first): wait a while.
    if (rA.recovered && rB.recovered && Date.now() > moveAt + 4_000) break;
  }
  const [traceA, traceB] = await Promise.all([stopTrace(alice), stopTrace(bob)]);
  rA = recovery(traceA, 'bob', moveAt);
  rB = recovery(traceB, 'alice', moveAt);
  const [a, b] = await Promise.all([conn(alice), conn(bob)]);
  const m1 = await fetchMetrics(NETNS_BASE_URL);
  await test.watch(SAMPLE_MS * 2);
  const pathB = bob.samples.at(-1)?.path;
  const rel = (t) => (t === null || t === undefined ? '-' : `${t - moveAt >= 0 ? '+' : ''}${t - moveAt} ms`);
  const bobEvents = b.events.filter((e) => e.at >= moveAt - 500 && ['media-state', 'media-reconnecting', 'media-connected', 'reconnecting', 'resumed', 'joined', 'connection-state'].includes(e.type))
    .map((e) => `${rel(e.at)} ${e.type}${e.state ? ` ${e.state}` : ''}${e.attempt ? ` #${e.attempt}` : ''}${e.delayMs !== undefined ? ` (next in ${e.delayMs} ms)` : ''}`);
  log(`phase 2: bob's session events after the move: ${bobEvents.join('; ') || 'none'}`);
  log(`phase 2: bob's WebSockets: ${b.sockets.filter((w) => (w.closed ?? Infinity) > moveAt - 5_000).map((w) => `opened ${rel(w.opened)}, `
    + `last received ${rel(w.lastRx)}, last sent ${rel(w.lastTx)}, ${w.closed ? `closed ${rel(w.closed)} (${w.code})` : 'still open'}`).join('; ')}`);
  const stall = (tr, remote) => longestStall(tr, remote, moveAt, tr.at(-1)?.[0] ?? moveAt);
  const sA = stall(traceA, 'bob');
  const sB = stall(traceB, 'alice');
  log(`phase 2: recovery after the move: bob decodes alice again ${rB.recovered ? `after ${rB.ms} ms` : 'NOT'} `
    + `(longest stall ${sB.ms} ms, ${rel(sB.from)}..${rel(sB.to)}); alice decodes bob again ${rA.recovered ? `after ${rA.ms} ms` : 'NOT'} `
    + `(longest stall ${sA.ms} ms, ${rel(sA.from)}..${rel(sA.to)}); watched ${secs((traceA.at(-1)?.[0] ?? moveAt) - moveAt)}`);
  log(`phase 2: bob's session: iceRestarts ${before.iceRestarts} -> ${b.iceRestarts}, resumes ${before.resumes} -> ${b.resumes}, `
    + `rejoins ${before.reconnects} -> ${b.reconnects}; server: ice_restarts +${metricSum(m1, 'confab_ice_restarts_total') - metricSum(m0, 'confab_ice_restarts_total')}, `
    + `resumes +${metricSum(m1, 'confab_session_resumes_total') - metricSum(m0, 'confab_session_resumes_total')}; bob's ICE pair now ${JSON.stringify(pathB)}`);
  criterion(2, 'bob decodes alice again', rB.recovered && rB.ms <= MAX_RECOVERY_MS,
    rB.recovered ? `${rB.ms} ms after the move (<= ${MAX_RECOVERY_MS})` : `not decoding steadily ${secs(MOVE_WATCH_MS)} after the move`);
  criterion(2, 'alice decodes bob again', rA.recovered && rA.ms <= MAX_RECOVERY_MS,
    rA.recovered ? `${rA.ms} ms after the move (<= ${MAX_RECOVERY_MS})` : `not decoding steadily ${secs(MOVE_WATCH_MS)} after the move`);
  criterion(2, 'bob keeps his participant id', b.participantId === before.participantId && b.participantId !== null,
    `${before.participantId} -> ${b.participantId}`);
  const left = leftFor(a, 'bob').length + a.events.filter((e) => e.type === 'participant-left' && e.participantId === before.participantId && e.name !== 'bob').length;
  criterion(2, 'alice sees no participant-left', left === 0, `${left} participant-left for bob at alice`);
  criterion(2, 'bob restarted ICE or resumed', b.iceRestarts - before.iceRestarts + b.resumes - before.resumes >= 1,
    `iceRestarts +${b.iceRestarts - before.iceRestarts}, resumes +${b.resumes - before.resumes}`);
  criterion(2, 'bob\'s media uses his new address', pathB?.local === bob.ip,
    `selected pair ${pathB ? `${pathB.protocol} ${pathB.local} -> ${pathB.remote}` : 'none'}`);
  await leave([alice, bob]);
}

/** Phase 3: mid-call, bob's signaling WebSocket is closed from the page. */
async function phaseResume({ alice, bob }, room) {
  log('phase 3: alice and bob join; then bob\'s WebSocket is closed from his page (code 4000)');
  const [tA] = await openRoom([alice, bob], room);
  await waitDecoding(new Map([[alice, ['bob']], [bob, ['alice']]]), tA, 'phase 3');
  await test.watch(SAMPLE_MS * 2);
  const before = await conn(bob);
  const m0 = await fetchMetrics(NETNS_BASE_URL);
  await Promise.all([startTrace(alice), startTrace(bob)]);
  await test.watch(BEFORE_MS);
  const closeAt = Date.now();
  const closed = await evaluate(bob, () => {
    const ws = /** @type {any} */ (window).__conn.sockets.findLast((w) => w.readyState === WebSocket.OPEN);
    if (!ws) return false;
    ws.close(4000, 'connectivity test');
    return true;
  });
  if (!closed) throw new TestFailure('phase 3: bob\'s page has no open WebSocket to close');
  test.event('phase 3: bob\'s WebSocket closed');
  let b = await conn(bob);
  let resumedAt = null;
  while (Date.now() < closeAt + RESUME_GRACE_MS + 2_000) {
    await test.watch(200);
    b = await conn(bob);
    if (b.resumes > before.resumes) {
      resumedAt = eventsOf(b, 'resumed').at(-1)?.at ?? Date.now();
      break;
    }
  }
  await test.watch(AFTER_RESUME_MS);
  const [traceA, traceB] = await Promise.all([stopTrace(alice), stopTrace(bob)]);
  const a = await conn(alice);
  b = await conn(bob);
  const m1 = await fetchMetrics(NETNS_BASE_URL);
  const end = Math.min(traceA.at(-1)?.[0] ?? closeAt, traceB.at(-1)?.[0] ?? closeAt);
  const from = closeAt - BEFORE_MS + 500;
  const sA = longestStall(traceA, 'bob', from, end);
  const sB = longestStall(traceB, 'alice', from, end);
  const rel = (t) => `${t - closeAt >= 0 ? '+' : ''}${t - closeAt} ms`;
  const reconnecting = eventsOf(b, 'reconnecting').filter((e) => e.at >= closeAt);
  log(`phase 3: bob's session ${resumedAt !== null ? `resumed ${resumedAt - closeAt} ms after the close` : 'did NOT resume'} `
    + `(resumes ${before.resumes} -> ${b.resumes}, rejoins ${before.reconnects} -> ${b.reconnects}, ICE restarts ${before.iceRestarts} -> ${b.iceRestarts}; `
    + `reconnecting events: ${reconnecting.map((e) => `${rel(e.at)} #${e.attempt} resuming=${e.resuming} in ${e.delayMs} ms`).join(', ') || 'none'}); `
    + `server: resumes +${metricSum(m1, 'confab_session_resumes_total') - metricSum(m0, 'confab_session_resumes_total')}, `
    + `resume messages +${metricValue(m1, 'confab_signaling_messages_total', RESUME_LABEL) - metricValue(m0, 'confab_signaling_messages_total', RESUME_LABEL)}, `
    + `join messages +${metricValue(m1, 'confab_signaling_messages_total', JOIN_LABEL) - metricValue(m0, 'confab_signaling_messages_total', JOIN_LABEL)}`);
  log(`phase 3: longest video stall from ${secs(BEFORE_MS - 500)} before the close to ${secs(end - closeAt)} after: `
    + `bob<-alice ${sB.ms} ms (${rel(sB.from)}..${rel(sB.to)}), alice<-bob ${sA.ms} ms (${rel(sA.from)}..${rel(sA.to)}); traced every ${TRACE_MS} ms`);
  const list = (tr, remote) => stalls(tr, remote, from, end).map((x) => `${rel(x.from)}..${rel(x.to)}`).join(', ') || 'none';
  log(`phase 3: stalls over ${GAP_MS} ms: bob<-alice ${list(traceB, 'alice')}; alice<-bob ${list(traceA, 'bob')}`);
  criterion(3, 'bob resumes once within the grace period', b.resumes - before.resumes === 1 && resumedAt !== null && resumedAt - closeAt <= RESUME_GRACE_MS,
    `resumes +${b.resumes - before.resumes}${resumedAt !== null ? `, ${resumedAt - closeAt} ms after the close` : ''} (1 within ${secs(RESUME_GRACE_MS)})`);
  criterion(3, 'bob keeps his participant id', b.participantId === before.participantId && b.participantId !== null,
    `${before.participantId} -> ${b.participantId}; rejoins +${b.reconnects - before.reconnects}`);
  const left = leftFor(a, 'bob').length;
  criterion(3, 'alice sees no participant-left', left === 0, `${left} participant-left for bob at alice`);
  criterion(3, 'video keeps flowing both ways', sA.ms <= MAX_STALL_MS && sB.ms <= MAX_STALL_MS,
    `longest stall bob<-alice ${sB.ms} ms, alice<-bob ${sA.ms} ms (<= ${MAX_STALL_MS})`);
  await leave([alice, bob]);
}

/** Phase 4: carol's media port is blocked; she stays STORM_WINDOW_MS. */
async function phaseStorm({ alice, bob, carol }, room) {
  log('phase 4: alice and bob join; then carol, whose media port traffic is dropped (UDP and TCP to 10.99.0.1:50000)');
  const [tA] = await openRoom([alice, bob], room);
  await waitDecoding(new Map([[alice, ['bob']], [bob, ['alice']]]), tA, 'phase 4');
  await test.netns('block-media', NETNS_ID, '3');
  test.event('phase 4: media blocked for carol');
  const m0 = await fetchMetrics(NETNS_BASE_URL);
  const [t0] = await openRoom([carol], room);
  await test.watch(STORM_WINDOW_MS - (Date.now() - t0));
  const m1 = await fetchMetrics(NETNS_BASE_URL);
  const [a, b, c] = await Promise.all([conn(alice), conn(bob), conn(carol)]);
  const drops = await blocked(3);
  const joins = metricValue(m1, 'confab_signaling_messages_total', JOIN_LABEL) - metricValue(m0, 'confab_signaling_messages_total', JOIN_LABEL);
  const restartsSrv = metricSum(m1, 'confab_ice_restarts_total') - metricSum(m0, 'confab_ice_restarts_total');
  const rel = (t) => `${((t - t0) / 1000).toFixed(1)} s`;
  const restarts = eventsOf(c, 'media-reconnecting');
  const joinedEv = eventsOf(c, 'joined');
  const rejoining = eventsOf(c, 'reconnecting');
  const attempts = [...joinedEv.map((e) => ({ at: e.at, what: 'joined' })), ...restarts.map((e) => ({ at: e.at, what: `restart #${e.attempt}` }))]
    .sort((x, y) => x.at - y.at);
  const intervals = attempts.slice(1).map((x, i) => x.at - attempts[i].at);
  log(`phase 4: over ${secs(STORM_WINDOW_MS)} after carol's page.goto: server join messages +${joins}, ICE restarts +${restartsSrv}, `
    + `resumes +${metricSum(m1, 'confab_session_resumes_total') - metricSum(m0, 'confab_session_resumes_total')}; carol's SDK: `
    + `iceRestarts ${c.iceRestarts}, rejoins ${c.reconnects}, resumes ${c.resumes}, state ${c.state}, pc ${c.pcState}; `
    + `media-port packets dropped on her link ${drops.media}`);
  log(`phase 4: carol's attempts (after page.goto): ${attempts.map((x) => `${rel(x.at)} ${x.what}`).join(', ') || 'none'}; `
    + `intervals ${intervals.map((x) => secs(x)).join(', ') || '-'}`);
  log(`phase 4: carol's restarts said: ${restarts.map((e) => `#${e.attempt} next in ${e.delayMs} ms`).join(', ') || '-'}; `
    + `socket reconnects: ${rejoining.map((e) => `${rel(e.at)} #${e.attempt} resuming=${e.resuming} in ${e.delayMs} ms (${e.reason})`).join('; ') || 'none'}`);
  const errors = eventsOf(c, 'error').map((e) => `${rel(e.at)} ${e.code}: ${e.message}`);
  if (errors.length) log(`phase 4: carol's session errors: ${errors.join('; ')}`);
  log(`phase 4: what carol's page told her (recovery banner | status line, as they changed):`);
  for (const x of c.banners.filter((x) => x.at >= t0)) log(`    ${rel(x.at).padStart(7)}: banner ${JSON.stringify(x.banner)} | status ${JSON.stringify(x.status)}`);
  log(`phase 4: carol's banner at the end: ${JSON.stringify(c.banner)}${c.bannerDom ? ` (DOM: ${JSON.stringify(c.bannerDom)})` : ''}`);
  const leftA = leftFor(a, 'carol').length;
  const leftB = leftFor(b, 'carol').length;
  const joinedA = a.events.filter((e) => e.type === 'participant-joined' && e.name === 'carol').length;
  const joinedB = b.events.filter((e) => e.type === 'participant-joined' && e.name === 'carol').length;
  log(`phase 4: carol came and went: at alice ${joinedA} participant-joined / ${leftA} participant-left, at bob ${joinedB} / ${leftB}`);
  criterion(4, 'few joins', joins >= 1 && joins <= MAX_STORM_JOINS, `${joins} join messages at the server (1..${MAX_STORM_JOINS}); carol's SDK rejoined ${c.reconnects} times`);
  criterion(4, 'few ICE restarts', restartsSrv <= MAX_STORM_RESTARTS && c.iceRestarts <= MAX_STORM_RESTARTS,
    `server +${restartsSrv}, carol's SDK ${c.iceRestarts} (<= ${MAX_STORM_RESTARTS})`);
  const shrinking = intervals.slice(1).map((x, i) => ({ x, prev: intervals[i] })).filter(({ x, prev }) => x < MIN_INTERVAL_GROWTH * prev);
  criterion(4, 'growing delays', attempts.length >= 2 && shrinking.length === 0,
    attempts.length < 2 ? `only ${attempts.length} attempt(s) seen` : shrinking.length
      ? `intervals shrank: ${shrinking.map(({ x, prev }) => `${secs(prev)} -> ${secs(x)}`).join(', ')} (each >= ${MIN_INTERVAL_GROWTH} x the one before)`
      : `intervals ${intervals.map((x) => secs(x)).join(', ')} (each >= ${MIN_INTERVAL_GROWTH} x the one before)`);
  criterion(4, 'others see carol leave at most once', leftA <= MAX_STORM_LEAVES && leftB <= MAX_STORM_LEAVES,
    `participant-left for carol: alice ${leftA}, bob ${leftB} (<= ${MAX_STORM_LEAVES} each)`);
  criterion(4, 'the block was in force', drops.media > 0 && c.pcState !== 'connected',
    `${drops.media} media-port packets dropped on carol's link, her PeerConnection ${c.pcState}`);
  await leave([alice, bob, carol]);
  await test.netns('unblock-media', NETNS_ID, '3');
}

// ------------------------------------------------------------------ the test

async function runTest() {
  test.begin();
  log(`phases ${SELECTED.map((p) => p.id).join(',')}; budget ${secs(TOTAL_BUDGET_MS)}`);
  await test.startServer();
  const peers = { alice: test.browser(1, 'alice', PAGE), bob: test.browser(2, 'bob', PAGE), carol: test.browser(3, 'carol', PAGE) };
  const needed = SELECTED.some((p) => p.id === 4) ? [peers.alice, peers.bob, peers.carol] : [peers.alice, peers.bob];
  await test.open(needed);
  for (const b of needed) await b.page.context().addInitScript(connectivityPage);
  log(`${needed.length} Chromium ${needed[0].browser.version()} processes: ${needed.map((b) => `${b.name} in ${b.ns}`).join(', ')}`);
  test.startSampling();
  for (const phase of SELECTED) {
    log(`--- phase ${phase.id}: ${phase.title}`);
    const started = Date.now();
    try {
      await phase.run(peers, `connectivity-${process.pid}-p${phase.id}`);
    } catch (e) {
      if (test.server.exit !== null || test.interrupted) throw e;
      criterion(phase.id, 'harness', false, e instanceof TestFailure ? e.message : e?.stack ?? String(e));
      await leave(needed);
      for (const [cmd, k] of [['unblock-udp', 2], ['unblock-media', 3]]) await test.netns(cmd, NETNS_ID, String(k)).catch(() => {});
    }
    log(`phase ${phase.id} took ${secs(Date.now() - started)}`);
  }
  await test.stopSampling();
}

/** The tally; a harness error (the run broke off) counts as one more failure. */
function summary(harnessError) {
  const failed = verdicts.filter((v) => !v.ok);
  console.log(`\nconnectivity: ${verdicts.length - failed.length} passed, ${failed.length + (harnessError ? 1 : 0)} failed`);
  for (const v of failed) console.log(`  failed: phase ${v.phase} ${v.name}: ${v.detail}`);
  if (harnessError) console.log(`  failed: harness: ${harnessError.message ?? harnessError}`);
}

const error = await test.run(runTest, TOTAL_BUDGET_MS, async (failure) => {
  test.reportFailure(failure);
  await test.cleanup();
  summary(failure);
});

if (error) test.reportFailure(error);
else if (verdicts.some((v) => !v.ok)) test.reportFailure(new TestFailure('criteria failed (see above)'));
await test.cleanup();
summary(error);
console.log(`connectivity: logs in ${test.tmpDir}`);
process.exit(error || verdicts.some((v) => !v.ok) ? 1 : 0);
