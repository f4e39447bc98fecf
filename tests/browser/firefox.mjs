// Firefox interop test: a headless Firefox (ESR, driven over WebDriver BiDi by puppeteer-core)
// in a call with a headless Chromium (Playwright), each in its own network namespace on the
// shaped.sh topology (netns.sh: alice = Chromium in b1, fox = Firefox in b2; the server at
// 10.99.0.1, HTTP :8080, media UDP and ICE-TCP :50000).
//
// Run through firefox.sh (needs root), which builds the namespaces and starts this script inside
// the server's namespace:
//
//   bash tests/browser/firefox.sh
//
// Every phase opens fresh pages in a room of its own and leaves it (about:blank) at the end:
//   1. alice and fox join: each decodes the other's video (inbound-rtp framesDecoded rising)
//      within DECODE_TIMEOUT_MS; both over UDP from their own address to 10.99.0.1:50000; fox's
//      session reports no error. Printed: each one's time from page.goto to the first decoded
//      remote frame, what fox publishes (its camera sender's encodings, its outbound-rtp video
//      streams per rid, the codecs) and the size of fox's video at alice.
//   2. UDP blocked for fox (netns.sh block-udp, both ways, before he joins): fox's selected pair
//      is tcp 10.99.0.12 -> 10.99.0.1:50000 (Firefox's active ICE-TCP candidate against the
//      server's passive one), both decode each other within DECODE_TIMEOUT_MS, the block dropped
//      something (he tried UDP).
//   3. Mid-call, fox's signaling WebSocket is closed from his page (close(4000)): his
//      session.resumes becomes 1 within the grace period, same participant id, alice sees no
//      participant-left for him, and video never stalls more than MAX_STALL_MS either way.
// Reported, not enforced (FIREFOX_STRICT=1 enforces them too): in phase 1 each one receives the
// other's audio (Firefox cannot receive audio/red, which Chromium publishes by default, and the
// server forwards the publisher's codec as it is: fox gets no audio from alice) and video runs
// without a gap over MAX_STEADY_GAP_MS after the first frames, and alice sees fox's
// participant-left within MAX_LEAVE_MS of his page going (app.js sends `leave` on pagehide); in
// phase 3, video runs without such a gap before the close. FIREFOX_ALICE_PARAMS / FIREFOX_FOX_PARAMS add query parameters to a page's
// URL (e.g. red=0, simulcast=0).
//
// Page instrumentation (an init script, in both browsers: Playwright's addInitScript, puppeteer's
// evaluateOnNewDocument): the signaling WebSockets are kept (phase 3 closes one), the session's
// events are recorded (Session is an EventTarget; the script sees its dispatchEvent), the first
// decoded remote video frame is timed (getStats every 100 ms until then), and a frame trace
// (framesDecoded per remote every 100 ms) runs around the resume. Only the client's public
// surface is read (window.confab.session: pc, participants, participantForTrack, counters).
//
// Firefox runs in b2 but its remote agent listens on b2's loopback only: bidi-relay.mjs carries
// puppeteer's connection across (see there). Firefox's getStats has no `transport` report: the
// selected pair is the candidate-pair with `selected` (Firefox's own field), else `nominated`
// and `succeeded`.
//
// Exits 1 if any criterion fails (or the harness breaks); prints `firefox: N passed, N failed`.

import fs from 'node:fs';
import path from 'node:path';
import puppeteer from 'puppeteer-core';
import {
  CLIENT_DIR, NETNS_BASE_URL, NETNS_MEDIA_ADDR, NetnsChromium, NetnsTest, ROOT, SAMPLE_MS,
  TestFailure, secs, sleep,
  envMs,
} from './lib.mjs';

// ------------------------------------------------------------------ pass criteria

/** Pages must decode each other within this of page.goto. */
const DECODE_TIMEOUT_MS = 20_000;
/** Phase 3: the server's resume grace period (signaling.resume_grace, default 15 s). */
const RESUME_GRACE_MS = 15_000;
/** Phase 3: the longest gap between decoded frames (either direction) across the socket loss. */
const MAX_STALL_MS = envMs('FIREFOX_MAX_STALL_MS', 1_000);
/** Phase 1 (reported): the longest time between two 500 ms samples without a new decoded frame. */
const MAX_STEADY_GAP_MS = 1_500;
/** Phase 1 (reported): alice sees fox's participant-left within this of his page going. */
const MAX_LEAVE_MS = 2_000;

// ------------------------------------------------------------------ shape

const FIREFOX = process.env.FIREFOX_BIN || '/usr/bin/firefox-esr';
/** Frame traces poll getStats this often. */
const TRACE_MS = 100;
/** A gap between frame increases longer than this is listed as a stall. */
const GAP_MS = 500;
/** Phase 3: traced before the close, and after the resume. */
const BEFORE_MS = 2_000;
const AFTER_RESUME_MS = 3_000;
/** Phase 1: the call goes on this long after both decode (then what fox sends is read). */
const CALL_MS = 6_000;
/** Phase 3: before the close, both directions decode steadily (frames rising at STEADY_POLLS
 * polls 500 ms apart); waited for at most this long. */
const STEADY_WAIT_MS = 15_000;
const STEADY_POLLS = 4;
/** Phase 1: how long alice is watched for fox's participant-left after his page goes. */
const LEAVE_WATCH_MS = 4_000;
const VIEWPORT = { width: 1280, height: 720 };
const TOTAL_BUDGET_MS = 120_000;
/** Development aid: more query parameters for a page, e.g. FIREFOX_FOX_PARAMS=simulcast=0,
 * FIREFOX_ALICE_PARAMS=red=0 (app.js's knobs). */
const EXTRA_PARAMS = { alice: process.env.FIREFOX_ALICE_PARAMS ?? '', fox: process.env.FIREFOX_FOX_PARAMS ?? '' };
const roomUrl = (room, name) => `${NETNS_BASE_URL}/?room=${room}&name=${name}${EXTRA_PARAMS[name] ? `&${EXTRA_PARAMS[name]}` : ''}`;

/** Firefox's prefs: fake camera and microphone without a prompt, getUserMedia on the plain-http
 * origin http://10.99.0.1:8080 (not localhost, so not a secure context), autoplay, and less
 * background traffic (it would go nowhere: b2 has no route off the machine). ICE-TCP
 * (media.peerconnection.ice.tcp) is left at Firefox's default. */
const FIREFOX_PREFS = {
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  'media.devices.insecure.enabled': true,
  'media.getusermedia.insecure.enabled': true,
  'media.autoplay.default': 0,
  'media.autoplay.blocking_policy': 0,
  'app.normandy.enabled': false,
  'messaging-system.rsexperimentloader.enabled': false,
  'services.settings.server': 'http://127.0.0.1:9/',
  'network.connectivity-service.enabled': false,
  'network.captive-portal-service.enabled': false,
};

const test = new NetnsTest({
  name: 'firefox',
  netnsId: process.env.FIREFOX_NETNS_ID,
  netnsSh: process.env.FIREFOX_NETNS_SH,
  rustLog: process.env.FIREFOX_RUST_LOG,
});
const NETNS_ID = test.netnsId;
const log = (msg) => test.log(msg);

// ------------------------------------------------------------------ verdicts

/** @type {{phase: number, name: string, ok: boolean, detail: string}[]} */
const verdicts = [];

function criterion(phase, name, ok, detail) {
  verdicts.push({ phase, name, ok: !!ok, detail });
  log(`  phase ${phase} ${ok ? 'pass' : 'FAIL'} ${name}: ${detail}`);
}

/** Interop problems seen, reported but not enforced (FIREFOX_STRICT=1: enforced like criteria). */
const STRICT = process.env.FIREFOX_STRICT === '1';
/** @type {{phase: number, name: string, detail: string}[]} */
const issues = [];

function observe(phase, name, ok, detail) {
  if (STRICT) return criterion(phase, name, ok, detail);
  if (!ok) issues.push({ phase, name, detail });
  log(`  phase ${phase} ${ok ? 'ok' : 'ISSUE'} ${name} (reported, not enforced): ${detail}`);
}

// ------------------------------------------------------------------ in the page

/**
 * Runs in every page (both browsers) before its own scripts: `window.__ff`. Keeps the
 * WebSockets, records the session's events, times the first decoded remote video frame, runs
 * frame traces on demand, and reads the selected ICE pair in Chromium's and Firefox's getStats.
 */
function firefoxPage() {
  const c = {
    /** every WebSocket the page opened, oldest first */
    sockets: [],
    /** the session's events: {type, at (Date.now()), participantId, name, code, message} */
    events: [],
    /** Date.now() of the first decoded remote video frame, and whose it was */
    firstFrameAt: null,
    firstFrameFrom: null,
    /** @type {any[] | null} [at, {remote name: framesDecoded}] every TRACE ms */
    trace: null,
    traceTimer: null,
  };
  /** @type {any} */ (window).__ff = c;

  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      c.sockets.push(this);
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
        for (const k of ['participantId', 'code', 'message', 'fatal', 'state']) {
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

  /** The selected candidate pair: Chromium names it in the `transport` report; Firefox has no
   * transport report but marks the pair `selected` (and `nominated`). */
  c.path = (stats) => {
    let pair = null;
    stats.forEach((r) => {
      if (r.type === 'transport' && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId) ?? pair;
    });
    if (!pair) stats.forEach((r) => { if (r.type === 'candidate-pair' && r.selected === true) pair = r; });
    if (!pair) stats.forEach((r) => { if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pair = pair ?? r; });
    const local = pair && stats.get(pair.localCandidateId);
    const remote = pair && stats.get(pair.remoteCandidateId);
    return local && remote ? {
      local: local.address, remote: `${remote.address}:${remote.port}`, protocol: local.protocol,
      localType: local.candidateType, tcpType: local.tcpType ?? null, remoteProtocol: remote.protocol,
      selected: pair.selected ?? null, nominated: pair.nominated ?? null, state: pair.state ?? null,
    } : null;
  };

  /** Frames decoded per remote display name (every video stream of that name summed). */
  c.frames = async () => {
    const s = /** @type {any} */ (window).confab?.session;
    const pc = s?.pc;
    const out = {};
    if (!pc) return out;
    const stats = await pc.getStats();
    stats.forEach((r) => {
      if (r.type !== 'inbound-rtp' || r.kind !== 'video') return;
      const id = s.participantForTrack(r.trackIdentifier);
      const name = (id && s.participants.get(id)?.name) || null;
      if (name) out[name] = (out[name] ?? 0) + (r.framesDecoded ?? 0);
    });
    return out;
  };

  let busy = false;
  const firstTimer = setInterval(async () => {
    if (busy) return;
    busy = true;
    try {
      const frames = await c.frames();
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
        const frames = await c.frames();
        c.trace?.push([at, frames]);
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
}

/** Runs in the page (lib.mjs's sampler): session state, counters, ICE path, video streams. */
async function sampleInPage() {
  const c = /** @type {any} */ (window).__ff;
  const s = /** @type {any} */ (window).confab?.session;
  const pc = s?.pc;
  const out = {
    state: s?.state ?? 'none',
    pcState: pc?.connectionState ?? 'none',
    participantId: s?.participantId ?? null,
    resumes: s?.resumes ?? 0,
    path: null,
    inbound: [],
    outbound: [],
  };
  if (!c || !pc) return out;
  const stats = await pc.getStats();
  stats.forEach((r) => {
    if (r.type !== 'inbound-rtp' || r.kind !== 'video') return;
    const id = s.participantForTrack(r.trackIdentifier);
    out.inbound.push({
      id: r.id, kind: r.kind, track: r.trackIdentifier, owner: (id && s.participants.get(id)?.name) || null,
      frames: r.framesDecoded ?? 0, width: r.frameWidth ?? null, packets: r.packetsReceived ?? 0,
      keyFrames: r.keyFramesDecoded ?? null, pli: r.pliCount ?? null, nack: r.nackCount ?? null, lost: r.packetsLost ?? null,
    });
  });
  stats.forEach((r) => {
    if (r.type === 'outbound-rtp' && r.kind === 'video') {
      out.outbound.push({ rid: r.rid ?? null, frames: r.framesEncoded ?? null, bytes: r.bytesSent ?? 0, width: r.frameWidth ?? null });
    }
  });
  out.path = c.path(stats);
  return out;
}

const PAGE = { viewport: VIEWPORT, deviceScale: 1, sampleInPage };

// ------------------------------------------------------------------ Firefox

/**
 * A headless Firefox process in namespace <netnsId>-b<k>, driven by puppeteer-core over
 * WebDriver BiDi, with the NetnsChromium surface NetnsTest and this test use (`page.evaluate`,
 * `page.goto`, sample, samples, problems, close). Launched through netns.sh's wrapper behind
 * bidi-relay.mjs; Firefox's stderr goes to firefox-b<k>.log in the scratch directory.
 */
class NetnsFirefox extends NetnsChromium {
  constructor(t, k, name, page) {
    super(t, k, name, page);
    this.wrapper = path.join(t.tmpDir, `firefox-b${k}`);
    this.launcher = path.join(t.tmpDir, `firefox-b${k}-relay`);
    this.logPath = path.join(t.tmpDir, `firefox-b${k}.log`);
    this.version = '?';
  }

  async open() {
    await this.test.netns('wrapper', this.test.netnsId, String(this.k), FIREFOX, this.wrapper);
    fs.writeFileSync(this.launcher, '#!/bin/sh\n# Generated by tests/browser/firefox.mjs: Firefox in '
      + `${this.ns} behind bidi-relay.mjs.\nexec ${process.execPath} ${path.join(ROOT, 'tests/browser/bidi-relay.mjs')} `
      + `${this.ns} ${this.wrapper} "$@"\n`, { mode: 0o755 });
    const env = { ...process.env, MOZ_HEADLESS: '1', MOZ_CRASHREPORTER_DISABLE: '1' };
    for (const k of ['DBUS_SESSION_BUS_ADDRESS', 'DISPLAY', 'WAYLAND_DISPLAY']) delete env[k];
    const logFile = fs.createWriteStream(this.logPath);
    this.browser = await puppeteer.launch({
      browser: 'firefox',
      protocol: 'webDriverBiDi',
      executablePath: this.launcher,
      headless: true,
      timeout: 30_000,
      env,
      extraPrefsFirefox: FIREFOX_PREFS,
      defaultViewport: this.viewport,
      handleSIGINT: false,
      handleSIGTERM: false,
      handleSIGHUP: false,
    }).catch((e) => {
      throw new TestFailure(`${this.name}: Firefox did not start: ${e.message} (its stderr: ${this.logPath})`);
    });
    this.browser.process()?.stderr?.on('data', (d) => logFile.write(d));
    this.version = (await this.browser.version()).replace(/^firefox\//, '');
    this.page = (await this.browser.pages())[0] ?? await this.browser.newPage();
    await this.page.evaluateOnNewDocument(firefoxPage);
    if (CLIENT_DIR) await serveClientFromPuppeteer(this.page, CLIENT_DIR);
    this.page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warn') this.problems.push(`${m.type()}: ${m.text()}`);
    });
    this.page.on('pageerror', (e) => this.problems.push(`uncaught: ${e.message ?? e}`));
  }

  async goto(room) {
    await this.page.goto(roomUrl(room, this.name), { waitUntil: 'domcontentloaded', timeout: 15_000 });
  }

  async close() {
    const b = this.browser;
    this.browser = null;
    if (!b) return;
    await Promise.race([b.close().catch(() => {}), sleep(5_000)]);
    try { b.process()?.kill('SIGKILL'); } catch { /* gone */ }
  }
}

/** CONFAB_E2E_CLIENT_DIR for Firefox: the page's scripts and styles come from `clientDir`. */
async function serveClientFromPuppeteer(page, clientDir) {
  await page.setRequestInterception(true);
  page.on('request', (req) => {
    const u = new URL(req.url());
    if (u.origin !== NETNS_BASE_URL || u.pathname === '/ws' || req.resourceType() === 'document') return req.continue();
    const rel = u.pathname.replace(/^\/+/, '') || 'index.html';
    const file = path.join(clientDir, rel);
    if (!file.startsWith(clientDir + path.sep) || !fs.existsSync(file)) return req.respond({ status: 404, body: 'not found' });
    const type = { '.js': 'text/javascript', '.css': 'text/css', '.html': 'text/html' }[path.extname(file)] ?? 'application/octet-stream';
    return req.respond({ status: 200, contentType: type, body: fs.readFileSync(file) });
  });
}

// ------------------------------------------------------------------ page helpers

const evaluate = (b, fn, arg) => b.page.evaluate(fn, arg);
const conn = (b) => evaluate(b, () => {
  const c = /** @type {any} */ (window).__ff;
  const s = /** @type {any} */ (window).confab?.session;
  return {
    events: c?.events ?? [],
    sockets: c?.sockets.length ?? 0,
    firstFrameAt: c?.firstFrameAt ?? null,
    firstFrameFrom: c?.firstFrameFrom ?? null,
    participantId: s?.participantId ?? null,
    state: s?.state ?? 'none',
    pcState: s?.pc?.connectionState ?? 'none',
    resumes: s?.resumes ?? 0,
    reconnects: s?.reconnects ?? 0,
    iceRestarts: s?.iceRestarts ?? 0,
  };
});
const frames = (b) => evaluate(b, () => /** @type {any} */ (window).__ff.frames());
const startTrace = (b) => evaluate(b, (ms) => /** @type {any} */ (window).__ff.startTrace(ms), TRACE_MS);
const stopTrace = (b) => evaluate(b, () => /** @type {any} */ (window).__ff.stopTrace());

/** What the page publishes: its senders' encodings, its outbound-rtp streams, the codecs in use. */
const publishing = (b) => evaluate(b, async () => {
  const s = /** @type {any} */ (window).confab?.session;
  const pc = s?.pc;
  if (!pc) return null;
  const senders = pc.getSenders().filter((x) => x.track).map((x) => ({
    kind: x.track.kind,
    encodings: (x.getParameters().encodings ?? []).map((e) => ({
      rid: e.rid ?? null, active: e.active, scale: e.scaleResolutionDownBy ?? null, maxBitrate: e.maxBitrate ?? null,
    })),
  }));
  const stats = await pc.getStats();
  const codecs = {};
  stats.forEach((r) => { if (r.type === 'codec') codecs[r.id] = r.mimeType; });
  const outbound = [];
  const inbound = [];
  stats.forEach((r) => {
    if (r.type === 'outbound-rtp') {
      outbound.push({
        kind: r.kind, rid: r.rid ?? null, ssrc: r.ssrc, bytes: r.bytesSent ?? 0, frames: r.framesEncoded ?? null,
        width: r.frameWidth ?? null, height: r.frameHeight ?? null, codec: codecs[r.codecId] ?? null,
      });
    } else if (r.type === 'inbound-rtp') {
      const id = s.participantForTrack(r.trackIdentifier);
      inbound.push({
        kind: r.kind, from: (id && s.participants.get(id)?.name) || null, codec: codecs[r.codecId] ?? null,
        width: r.frameWidth ?? null, frames: r.framesDecoded ?? null, packets: r.packetsReceived ?? 0,
      });
    }
  });
  const caps = (kind) => [...new Set((globalThis.RTCRtpReceiver?.getCapabilities?.(kind)?.codecs ?? []).map((x) => x.mimeType))];
  return { senders, outbound, inbound, audioCodecs: caps('audio'), videoCodecs: caps('video') };
});

const unsampled = (fn) => test.unsampled(fn);
const openRoom = (browsers, room) => test.openRoom(browsers, room);
const leave = (browsers) => test.leaveRoom(browsers);

/**
 * Waits until every page in `who` (page → remote name) decodes its remote: frames rising between
 * two polls 500 ms apart. Resolves to the pages that did not within DECODE_TIMEOUT_MS of `since`
 * (name → last frame counts; empty when all did).
 * @param {Map<any, string>} who
 */
async function waitDecoding(who, since) {
  const last = new Map();
  const done = new Set();
  while (done.size < who.size && Date.now() < since + DECODE_TIMEOUT_MS) {
    await test.watch(500);
    for (const [b, remote] of who) {
      if (done.has(b)) continue;
      const now = await frames(b);
      const before = last.get(b);
      if (before && (now[remote] ?? 0) > (before[remote] ?? 0)) done.add(b);
      last.set(b, now);
    }
  }
  return new Map([...who].filter(([b]) => !done.has(b)).map(([b]) => [b.name, last.get(b) ?? {}]));
}

/** Time from page.goto to the page's first decoded remote frame, as text. */
const firstFrame = (c, t0) => (c.firstFrameAt ? `${secs(c.firstFrameAt - t0)} (of ${c.firstFrameFrom})` : 'none');
const pathText = (p) => (p ? `${p.protocol}${p.tcpType ? `/${p.tcpType}` : ''} ${p.local} -> ${p.remote} (${p.localType})` : 'none');
/** Firefox reports its host candidate by its mDNS name (it obfuscates host addresses) */
const MDNS = /\.local$/;
/** The selected pair goes from browser `b` (its own address, or an mDNS name) to the server's
 * media address over `protocol`: b<K> has no other interface than its veth (and lo), so media to
 * 10.99.0.1:50000 crosses the veth. */
const onVeth = (b, p, protocol) => !!p && p.protocol === protocol && p.remote === NETNS_MEDIA_ADDR && (p.local === b.ip || MDNS.test(p.local));

/** In `b`'s samples since `since + 1 s`: the longest time from a sample to the next one in which
 * `remote`'s decoded frames rose (to the last sample if they never rose again). */
function longestSampleGap(b, remote, since) {
  const xs = b.between(since + 1_000, Date.now()).map((x) => ({
    at: x.at, n: x.inbound.filter((i) => i.owner === remote).reduce((m, i) => m + i.frames, 0),
  }));
  let worst = 0;
  let lastRise = xs[0]?.at ?? 0;
  for (let i = 1; i < xs.length; i++) {
    if (xs[i].n > xs[i - 1].n) lastRise = xs[i].at;
    worst = Math.max(worst, xs[i].at - lastRise);
  }
  return worst;
}

/** What fox's samples since `since` say he encoded per simulcast layer, and what alice decoded of
 * him: `+1.0 s q 30/h 30/f 0 -> alice 14 (960 px)` per sample (frames since the previous one). */
function sendTrace(fox, alice, since) {
  const xs = fox.between(since, Date.now());
  const ys = alice.between(since - 500, Date.now());
  const out = [];
  for (let i = 1; i < xs.length; i++) {
    const d = xs[i].outbound.map((o) => {
      const prev = xs[i - 1].outbound.find((q) => q.rid === o.rid);
      return `${o.rid ?? '-'} ${o.frames !== null && prev?.frames != null ? o.frames - prev.frames : '?'}`;
    }).join('/');
    const y = ys.find((q) => q.at >= xs[i].at - 250);
    const yp = y && ys[ys.indexOf(y) - 1];
    const n = (q) => q.inbound.filter((r) => r.owner === 'fox').reduce((m, r) => m + r.frames, 0);
    const w = y?.inbound.find((r) => r.owner === 'fox')?.width;
    out.push(`+${secs(xs[i].at - since)} ${d}${y && yp ? ` -> alice ${n(y) - n(yp)}${w ? ` (${w} px)` : ''}` : ''}`);
  }
  return out.join('; ');
}

/** `b`'s inbound video from `remote` per sample in [from, to]: time (relative to `zero`),
 * packets received, frames decoded, key frames decoded, PLIs and NACKs sent, packets lost, width. */
function receiverTrace(b, remote, from, to, zero) {
  const sum = (x, k) => {
    const v = x.inbound.filter((i) => i.owner === remote).map((i) => i[k]);
    return v.some((n) => n === null || n === undefined) ? '?' : v.reduce((m, n) => m + n, 0);
  };
  return b.between(from, to).map((x) => `${x.at - zero >= 0 ? '+' : ''}${x.at - zero} ms: pkts ${sum(x, 'packets')} frames ${sum(x, 'frames')} `
    + `key ${sum(x, 'keyFrames')} pli ${sum(x, 'pli')} nack ${sum(x, 'nack')} lost ${sum(x, 'lost')} ${x.inbound.find((i) => i.owner === remote)?.width ?? '?'} px`).join('; ');
}

/** Waits (at most STEADY_WAIT_MS) until every page in `who` (page → remote) decodes its remote at
 * STEADY_POLLS polls 500 ms apart in a row; resolves to how long that took, or null. */
async function waitSteady(who) {
  const t0 = Date.now();
  const runs = new Map([...who.keys()].map((b) => [b, 0]));
  const last = new Map();
  while (Date.now() < t0 + STEADY_WAIT_MS) {
    await test.watch(500);
    for (const [b, remote] of who) {
      const n = (await frames(b))[remote] ?? 0;
      runs.set(b, last.has(b) && n > last.get(b) ? runs.get(b) + 1 : 0);
      last.set(b, n);
    }
    if ([...runs.values()].every((r) => r >= STEADY_POLLS)) return Date.now() - t0;
  }
  return null;
}

/** The times at which `remote`'s frame count rose in a trace. */
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

/** The longest interval without a frame increase in [from, to] (edges count), and every one over GAP_MS. */
function stalls(trace, remote, from, to) {
  const times = [from, ...increases(trace, remote).filter((t) => t >= from && t <= to), to];
  let worst = { ms: 0, from, to: from };
  const over = [];
  for (let i = 1; i < times.length; i++) {
    const g = { ms: times[i] - times[i - 1], from: times[i - 1], to: times[i] };
    if (g.ms > worst.ms) worst = g;
    if (g.ms > GAP_MS) over.push(g);
  }
  return { worst, over };
}

// ------------------------------------------------------------------ phases

/** Joins alice and fox (fresh pages), waits for decoding both ways, logs the times and paths.
 * Resolves to whether both decode, with the goto times. */
async function joinBoth({ alice, fox }, room, phase) {
  const [tA, tF] = await openRoom([alice, fox], room);
  const missing = await waitDecoding(new Map([[alice, 'fox'], [fox, 'alice']]), Math.min(tA, tF));
  const decodedAt = Date.now();
  const [a, f] = await Promise.all([conn(alice), conn(fox)]);
  log(`phase ${phase}: time from page.goto to the first decoded remote frame: alice ${firstFrame(a, tA)}, fox ${firstFrame(f, tF)}`);
  criterion(phase, 'alice decodes fox (Firefox -> Chromium)', !missing.has('alice'),
    missing.has('alice') ? `not within ${secs(DECODE_TIMEOUT_MS)}: ${JSON.stringify(missing.get('alice'))}, pc ${a.pcState}` : `first frame ${firstFrame(a, tA)}`);
  criterion(phase, 'fox decodes alice (Chromium -> Firefox)', !missing.has('fox'),
    missing.has('fox') ? `not within ${secs(DECODE_TIMEOUT_MS)}: ${JSON.stringify(missing.get('fox'))}, pc ${f.pcState}` : `first frame ${firstFrame(f, tF)}`);
  await test.watch(SAMPLE_MS * 2);
  log(`phase ${phase}: ICE pairs: alice ${pathText(alice.samples.at(-1)?.path)}; fox ${pathText(fox.samples.at(-1)?.path)}`);
  return { ok: missing.size === 0, tA, tF, decodedAt };
}

function errorsOf(c) {
  return c.events.filter((e) => e.type === 'error').map((e) => `${e.code}: ${e.message}${e.fatal ? ' (fatal)' : ''}`);
}

/** Phase 1: a plain call. */
async function phaseCall(peers, room) {
  const { alice, fox } = peers;
  log('phase 1: alice (Chromium) and fox (Firefox) join');
  const { decodedAt: joinedAt } = await joinBoth(peers, room, 1);
  await test.watch(CALL_MS); // let the layers settle before reading what fox sends
  const [pf, pa, f] = await Promise.all([publishing(fox), publishing(alice), conn(fox)]);
  const cam = pf?.senders.find((x) => x.kind === 'video');
  log(`phase 1: fox's camera sender: ${cam ? `${cam.encodings.length} encoding(s) ${JSON.stringify(cam.encodings)}` : 'none'}`);
  log(`phase 1: fox's outbound-rtp: ${(pf?.outbound ?? []).map((o) => `${o.kind}${o.rid ? ` rid ${o.rid}` : ''} ${o.codec ?? '?'} `
    + `${o.kind === 'video' ? `${o.width ?? '?'}x${o.height ?? '?'} ${o.frames ?? '?'} frames ` : ''}${o.bytes} bytes`).join('; ') || 'none'}`);
  log(`phase 1: alice receives from fox: ${(pa?.inbound ?? []).filter((i) => i.from === 'fox').map((i) => `${i.kind} ${i.codec ?? '?'}`
    + `${i.kind === 'video' ? ` ${i.width ?? '?'} px wide, ${i.frames} frames` : ''} ${i.packets} packets`).join('; ') || 'nothing'}`);
  log(`phase 1: fox receives from alice: ${(pf?.inbound ?? []).filter((i) => i.from === 'alice').map((i) => `${i.kind} ${i.codec ?? '?'}`
    + `${i.kind === 'video' ? ` ${i.width ?? '?'} px wide, ${i.frames} frames` : ''} ${i.packets} packets`).join('; ') || 'nothing'}`);
  log(`phase 1: alice sends audio as ${(pa?.outbound ?? []).filter((o) => o.kind === 'audio').map((o) => o.codec ?? '?').join(', ') || 'nothing'}; `
    + `Firefox can receive audio ${pf?.audioCodecs.join(', ')}, video ${pf?.videoCodecs.join(', ')}`);
  const heard = (p, from) => (p?.inbound ?? []).filter((i) => i.kind === 'audio' && i.from === from).reduce((n, i) => n + i.packets, 0);
  observe(1, 'fox receives alice\'s audio', heard(pf, 'alice') > 0, `${heard(pf, 'alice')} audio packets from alice`);
  observe(1, 'alice receives fox\'s audio', heard(pa, 'fox') > 0, `${heard(pa, 'fox')} audio packets from fox`);
  const gaps = [[alice, 'fox'], [fox, 'alice']].map(([b, remote]) => `${b.name}<-${remote} ${longestSampleGap(b, remote, joinedAt)} ms`);
  const worst = Math.max(...[[alice, 'fox'], [fox, 'alice']].map(([b, remote]) => longestSampleGap(b, remote, joinedAt)));
  observe(1, 'video steady after the first frames', worst <= MAX_STEADY_GAP_MS,
    `longest time without a new decoded frame (500 ms samples, from 1 s after both decoded): ${gaps.join(', ')} (<= ${MAX_STEADY_GAP_MS})`);
  if (worst > MAX_STEADY_GAP_MS) {
    log(`phase 1: fox's frames encoded per layer, and alice's decoded of fox, per sample: ${sendTrace(fox, alice, joinedAt - 3_000)}`);
    for (const [b, remote] of [[alice, 'fox'], [fox, 'alice']]) log(`phase 1: ${b.name}'s receiver of ${remote}: ${receiverTrace(b, remote, joinedAt, Date.now(), joinedAt)}`);
  }
  const videoOut = (pf?.outbound ?? []).filter((o) => o.kind === 'video' && o.bytes > 0);
  criterion(1, 'fox publishes camera video', videoOut.length >= 1,
    `${videoOut.length} outbound video stream(s) sending${videoOut.length ? ` (${videoOut.map((o) => o.rid ?? 'no rid').join(', ')})` : ''}`);
  for (const b of [alice, fox]) {
    const p = b.samples.at(-1)?.path;
    criterion(1, `${b.name}'s media goes over UDP on its veth`, onVeth(b, p, 'udp'),
      `selected pair ${pathText(p)}${p && MDNS.test(p.local) ? ' (an mDNS host candidate)' : ''}`);
  }
  const errs = errorsOf(f);
  criterion(1, 'fox\'s session reports no error', errs.length === 0, errs.join('; ') || 'none');
  // fox's page goes first (app.js sends `leave` on pagehide): how soon does alice see him go?
  const foxId = (await conn(fox)).participantId;
  const leftFrom = Date.now();
  await leave([fox]);
  let leftAt = null;
  while (leftAt === null && Date.now() < leftFrom + LEAVE_WATCH_MS) {
    await test.watch(200);
    leftAt = (await conn(alice)).events.find((e) => e.type === 'participant-left' && (e.name === 'fox' || e.participantId === foxId))?.at ?? null;
  }
  observe(1, 'alice sees fox leave when his page goes', leftAt !== null && leftAt - leftFrom <= MAX_LEAVE_MS,
    leftAt !== null ? `participant-left ${leftAt - leftFrom} ms after fox's page.goto('about:blank') (<= ${MAX_LEAVE_MS})`
      : `no participant-left within ${secs(LEAVE_WATCH_MS)} of fox's page.goto('about:blank') (the server keeps a session whose socket `
        + 'dropped without `leave` for the resume grace, signaling.resume_grace)');
  await leave([alice]);
}

/** Phase 2: UDP blocked for fox before he joins. */
async function phaseTcp(peers, room) {
  const { alice, fox } = peers;
  log('phase 2: UDP between fox and the server dropped (both ways); alice and fox join');
  await test.netns('block-udp', NETNS_ID, '2');
  try {
    await joinBoth(peers, room, 2);
    const p = fox.samples.at(-1)?.path;
    criterion(2, 'fox connects over ICE-TCP', onVeth(fox, p, 'tcp'),
      `selected pair ${pathText(p)}${p ? ` (selected ${p.selected}, nominated ${p.nominated}, ${p.state})` : ''}`);
    const dropped = Number(/udp (\d+)/.exec(await test.netns('blocked', NETNS_ID, '2'))?.[1] ?? 0);
    criterion(2, 'the block was in force', dropped > 0, `${dropped} UDP datagrams dropped on fox's link`);
    const errs = errorsOf(await conn(fox));
    if (errs.length) log(`phase 2: fox's session errors: ${errs.join('; ')}`);
    await leave([alice, fox]);
  } finally {
    await test.netns('unblock-udp', NETNS_ID, '2').catch(() => {});
  }
}

/** Phase 3: fox's WebSocket closed from his page mid-call. */
async function phaseResume(peers, room) {
  const { alice, fox } = peers;
  log('phase 3: alice and fox join; then fox\'s WebSocket is closed from his page (code 4000)');
  const { ok, decodedAt } = await joinBoth(peers, room, 3);
  if (!ok) throw new TestFailure('phase 3: no call to disrupt');
  const steadyMs = await waitSteady(new Map([[alice, 'fox'], [fox, 'alice']]));
  log(`phase 3: both decode steadily (${STEADY_POLLS} polls 500 ms apart with new frames) ${steadyMs === null ? `NOT within ${secs(STEADY_WAIT_MS)}` : `after ${secs(steadyMs)} more`}; `
    + `longest time without a new decoded frame from 1 s after both decoded: alice<-fox ${longestSampleGap(alice, 'fox', decodedAt)} ms, `
    + `fox<-alice ${longestSampleGap(fox, 'alice', decodedAt)} ms (500 ms samples)`);
  const leadIn = Math.max(longestSampleGap(alice, 'fox', decodedAt), longestSampleGap(fox, 'alice', decodedAt));
  if (steadyMs === null || leadIn > MAX_STEADY_GAP_MS) {
    log(`phase 3: fox's frames encoded per layer, and alice's decoded of fox, per sample: ${sendTrace(fox, alice, decodedAt - 1_000)}`);
    for (const [b, remote] of [[alice, 'fox'], [fox, 'alice']]) log(`phase 3: ${b.name}'s receiver of ${remote}: ${receiverTrace(b, remote, decodedAt, Date.now(), decodedAt)}`);
  }
  observe(3, 'video steady before the close', steadyMs !== null && leadIn <= MAX_STEADY_GAP_MS,
    `steady ${steadyMs === null ? 'never' : `${secs(steadyMs)} after both decoded`}; longest gap either way from 1 s after both decoded ${leadIn} ms (<= ${MAX_STEADY_GAP_MS})`);
  if (steadyMs === null) throw new TestFailure('phase 3: the call never ran steadily, so the resume cannot be judged');
  const before = await conn(fox);
  await Promise.all([startTrace(alice), startTrace(fox)]);
  await test.watch(BEFORE_MS);
  const closeAt = Date.now();
  const closed = await evaluate(fox, () => {
    const ws = /** @type {any} */ (window).__ff.sockets.findLast((w) => w.readyState === WebSocket.OPEN);
    if (!ws) return false;
    ws.close(4000, 'firefox test');
    return true;
  });
  if (!closed) throw new TestFailure('phase 3: fox\'s page has no open WebSocket to close');
  let f = before;
  let resumedAt = null;
  while (Date.now() < closeAt + RESUME_GRACE_MS + 2_000) {
    await test.watch(200);
    f = await conn(fox);
    if (f.resumes > before.resumes) {
      resumedAt = f.events.filter((e) => e.type === 'resumed').at(-1)?.at ?? Date.now();
      break;
    }
  }
  await test.watch(AFTER_RESUME_MS);
  const [traceA, traceF] = await Promise.all([stopTrace(alice), stopTrace(fox)]);
  const a = await conn(alice);
  f = await conn(fox);
  const rel = (t) => `${t - closeAt >= 0 ? '+' : ''}${t - closeAt} ms`;
  const end = Math.min(traceA.at(-1)?.[0] ?? closeAt, traceF.at(-1)?.[0] ?? closeAt);
  const from = closeAt - BEFORE_MS + 500;
  const sA = stalls(traceA, 'fox', from, end);
  const sF = stalls(traceF, 'alice', from, end);
  log(`phase 3: fox's session ${resumedAt !== null ? `resumed ${resumedAt - closeAt} ms after the close` : 'did NOT resume'} `
    + `(resumes ${before.resumes} -> ${f.resumes}, rejoins ${before.reconnects} -> ${f.reconnects}, ICE restarts ${before.iceRestarts} -> ${f.iceRestarts}, `
    + `WebSockets opened ${before.sockets} -> ${f.sockets}, state ${f.state}, pc ${f.pcState})`);
  log(`phase 3: longest video stall from ${secs(BEFORE_MS - 500)} before the close to ${secs(end - closeAt)} after: `
    + `fox<-alice ${sF.worst.ms} ms (${rel(sF.worst.from)}..${rel(sF.worst.to)}), alice<-fox ${sA.worst.ms} ms (${rel(sA.worst.from)}..${rel(sA.worst.to)}); `
    + `stalls over ${GAP_MS} ms: fox<-alice ${sF.over.map((x) => `${rel(x.from)}..${rel(x.to)}`).join(', ') || 'none'}, `
    + `alice<-fox ${sA.over.map((x) => `${rel(x.from)}..${rel(x.to)}`).join(', ') || 'none'}`);
  for (const [b, remote, st] of [[fox, 'alice', sF], [alice, 'fox', sA]]) {
    if (st.worst.ms > MAX_STALL_MS) log(`phase 3: ${b.name}'s receiver of ${remote} across its stall: ${receiverTrace(b, remote, st.worst.from - 1_000, st.worst.to + 1_000, closeAt)}`);
  }
  criterion(3, 'fox resumes once within the grace period', f.resumes - before.resumes === 1 && resumedAt !== null && resumedAt - closeAt <= RESUME_GRACE_MS,
    `resumes ${before.resumes} -> ${f.resumes}${resumedAt !== null ? `, ${resumedAt - closeAt} ms after the close` : ''} (1 within ${secs(RESUME_GRACE_MS)})`);
  criterion(3, 'fox keeps his participant id', f.participantId === before.participantId && f.participantId !== null,
    `${before.participantId} -> ${f.participantId}; rejoins +${f.reconnects - before.reconnects}`);
  const left = a.events.filter((e) => e.type === 'participant-left' && (e.name === 'fox' || e.participantId === before.participantId)).length;
  criterion(3, 'alice sees no participant-left for fox', left === 0, `${left} participant-left for fox at alice`);
  criterion(3, 'video keeps flowing both ways', sA.worst.ms <= MAX_STALL_MS && sF.worst.ms <= MAX_STALL_MS && end > closeAt + 1_000,
    `longest stall fox<-alice ${sF.worst.ms} ms, alice<-fox ${sA.worst.ms} ms (<= ${MAX_STALL_MS}), traced to ${rel(end)}`);
  const errs = errorsOf(f);
  if (errs.length) log(`phase 3: fox's session errors: ${errs.join('; ')}`);
  await leave([alice, fox]);
}

const PHASES = [
  { id: 1, title: 'Firefox and Chromium in one call', run: phaseCall },
  { id: 2, title: 'UDP blocked for Firefox -> ICE-TCP', run: phaseTcp },
  { id: 3, title: 'Firefox\'s WebSocket killed -> resume', run: phaseResume },
];

// ------------------------------------------------------------------ the test

async function runTest() {
  test.begin();
  log(`budget ${secs(TOTAL_BUDGET_MS)}; Firefox ${FIREFOX}`);
  await test.startServer();
  const alice = test.browser(1, 'alice', PAGE);
  const fox = new NetnsFirefox(test, 2, 'fox', PAGE);
  alice.goto = (room) => alice.page.goto(roomUrl(room, alice.name), { waitUntil: 'domcontentloaded', timeout: 15_000 });
  if (EXTRA_PARAMS.alice || EXTRA_PARAMS.fox) log(`extra query parameters: alice '${EXTRA_PARAMS.alice}', fox '${EXTRA_PARAMS.fox}'`);
  const started = Date.now();
  await test.open([alice, fox]);
  await alice.page.context().addInitScript(firefoxPage);
  log(`browsers up in ${secs(Date.now() - started)}: alice Chromium ${alice.browser.version()} in ${alice.ns}, fox Firefox ${fox.version} in ${fox.ns}`);
  test.startSampling();
  for (const phase of PHASES) {
    log(`--- phase ${phase.id}: ${phase.title}`);
    const t = Date.now();
    try {
      await phase.run({ alice, fox }, `firefox-${process.pid}-p${phase.id}`);
    } catch (e) {
      if (test.server.exit !== null || test.interrupted) throw e;
      criterion(phase.id, 'harness', false, e instanceof TestFailure ? e.message : e?.stack ?? String(e));
      await leave([alice, fox]);
      await test.netns('unblock-udp', NETNS_ID, '2').catch(() => {});
    }
    log(`phase ${phase.id} took ${secs(Date.now() - t)}`);
  }
  await test.stopSampling();
}

/** The tally; a harness error (the run broke off) counts as one more failure. */
function summary(harnessError) {
  const failed = verdicts.filter((v) => !v.ok);
  for (const v of issues) console.log(`  issue (not enforced; FIREFOX_STRICT=1 enforces): phase ${v.phase} ${v.name}: ${v.detail}`);
  console.log(`\nfirefox: ${verdicts.length - failed.length} passed, ${failed.length + (harnessError ? 1 : 0)} failed`);
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
console.log(`firefox: logs in ${test.tmpDir}`);
process.exit(error || verdicts.some((v) => !v.ok) ? 1 : 0);
