// End-to-end test: three headless-Chromium participants in one room through a real Confab server.
//
// Run inside a network namespace that has only loopback (see run.sh): Chromium then pairs
// 127.0.0.1 with the server's 127.0.0.1 candidate and nothing leaves the machine.
//
//   bash tests/browser/run.sh                      # = unshare -n sh -c 'ip link set lo up && node tests/browser/e2e.mjs'
//   CONFAB_BIN=target/release/confab bash tests/browser/run.sh
//   CONFAB_E2E_SIMULCAST=0 bash tests/browser/run.sh  # pages open with ?simulcast=0 (one layer)
//
// Checks, in order:
//   1. the server answers /healthz;
//   2. alice, bob and carol (one browser, three contexts, opened together) each decode video
//      from both others (inbound-rtp framesDecoded rising, per publisher) and show it in a
//      <video> with videoWidth > 0;
//   3. every page publishes its camera as the simulcast layers q, h, f (sender encodings: rid,
//      scaleResolutionDownBy 4/2/1, maxBitrate 50k/300k/900k) and its microphone as one encoding
//      (with CONFAB_E2E_SIMULCAST=0: the camera as one encoding without rid);
//   4. every page sent a `track-view` for each remote video track (the server's track id), the
//      last one visible and at the tile's rendered size in device pixels, none repeating the one
//      before it, none for an audio track; `window.confabStats()` reports decoded video and
//      received audio from both others; every page gets an `active-speakers` list (every fake
//      microphone plays a voice-like WAV the test writes, so everyone speaks) naming only room members, and marks exactly
//      their tiles `speaking` (its own id: the self-view tile), the first one `dominant`;
//      a failure here is reported and the test goes on, failing at the end;
//   5. after carol's page closes, alice and bob drop her tile and participant entry and stop
//      receiving her frames, while they keep decoding each other on a 'connected' PeerConnection;
//      their tiles grew, and the last `track-view` has the new size;
//   6. the client side of dynacast and pausing, with server messages handed to alice's session
//      through its socket: `publish-layers` sets the camera encodings' `active` (latest wins, an
//      unknown track id is ignored; the server's own `publish-layers` are held back meanwhile), `track-paused` / `track-resumed` put the `paused-bandwidth`
//      class and the overlay on bob's tile and take them off (for his audio alone:
//      `audio-paused-bandwidth` and "Audio paused — low bandwidth");
//   7. no page threw an uncaught exception and no session had to reconnect.
// Prints time-to-first-remote-frame (page.goto start → first decoded remote frame) per page.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
// CONFAB_BIN: the server binary. CLIENT_DIR (CONFAB_E2E_CLIENT_DIR), a development aid: serve the
// web client's scripts and styles from this directory instead of the server's copy (which may be
// compiled into the binary), to test client edits without rebuilding. index.html still comes
// from the server.
import { CHROMIUM, CHROMIUM_ARGS as TEST_CHROMIUM_ARGS, CLIENT_DIR, CONFAB_BIN, ROOT } from './lib.mjs';

const HTTP_BIND = '127.0.0.1:8080';
const BASE_URL = `http://${HTTP_BIND}`;
const ROOM = 'e2e';
const NAMES = ['alice', 'bob', 'carol'];
/** Every test browser's flags; here Chromium and the server both use 127.0.0.1. */
const CHROMIUM_ARGS = [...TEST_CHROMIUM_ARGS, '--allow-loopback-in-peer-connection'];

const TOTAL_BUDGET_MS = 90_000;
const HEALTH_TIMEOUT_MS = 30_000;
const MEDIA_TIMEOUT_MS = 20_000;
const LEAVE_TIMEOUT_MS = 10_000;
const POLL_MS = 100;
/** How long alice↔bob must keep decoding after carol is gone, and how many frames each must
 * decode from the other meanwhile. (A decoder that loses a reference asks for a keyframe and
 * recovers within a second or two; what this catches is video that stops for good.) */
const STEADY_MS = 5_000;
const STEADY_MIN_FRAMES = 10;
/** How long a page may take to send the `track-view` that matches its tiles (debounce: 300 ms). */
const VIEW_TIMEOUT_MS = 2_000;
/** How long every page has to hear an `active-speakers` list (once media flows). */
const SPEAKERS_TIMEOUT_MS = 8_000;
/** CONFAB_E2E_SIMULCAST=0: the pages publish one camera layer (`?simulcast=0`). */
const SIMULCAST = process.env.CONFAB_E2E_SIMULCAST !== '0';
/** The camera encodings every page must publish (client/confab.js SIMULCAST_LAYERS). */
const CAMERA_ENCODINGS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 50_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 300_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 900_000 },
];
/**
 * The camera sender's encodings, as `layersRoundTripInPage` prints them, once `active` is applied:
 * a rid is on iff named; a single encoding without rid (`-`) is on iff anything is named.
 * @param {string[]} active
 */
const cameraState = (active) => (SIMULCAST
  ? CAMERA_ENCODINGS.map(({ rid }) => `${rid}:${active.includes(rid) ? 'on' : 'off'}`).join(' ')
  : `-:${active.length ? 'on' : 'off'}`);

const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'confab-e2e-'));
const serverLogPath = path.join(tmpDir, 'server.log');
const consoleLogPath = path.join(tmpDir, 'browser-console.log');
const startedAt = Date.now();

/** @type {import('node:child_process').ChildProcess | null} */
let server = null;
/** @type {import('playwright-core').Browser | null} */
let browser = null;
/** @type {string | null} */
let serverExit = null;
/** @type {{name: string, ok: boolean, note?: string}[]} */
const checks = [];
/** @type {string[]} */
const consoleLines = [];
/** @type {string[]} */
const pageErrors = [];
/** @type {Map<string, Sample>} last sample per page, printed on failure */
const lastSamples = new Map();

class TestFailure extends Error {}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const secs = (ms) => `${(ms / 1000).toFixed(2)} s`;
const log = (msg) => console.log(`e2e [${secs(Date.now() - startedAt).padStart(7)}] ${msg}`);

function pass(name, note) {
  checks.push({ name, ok: true, note });
  log(`PASS ${name}${note ? ` — ${note}` : ''}`);
}

function fail(name, why) {
  checks.push({ name, ok: false, note: why });
  throw new TestFailure(`${name}: ${why}`);
}

/** Records a failed check but lets the test go on; `run()` fails at its end. */
function failLater(name, why) {
  checks.push({ name, ok: false, note: why });
  log(`FAIL ${name} — ${why} (going on; the test fails at its end)`);
}

function assertServerAlive() {
  if (serverExit !== null) throw new TestFailure(`the server exited during the test (${serverExit})`);
}

// ------------------------------------------------------------------ server

function startServer() {
  if (!fs.existsSync(CONFAB_BIN)) {
    throw new TestFailure(`server binary ${CONFAB_BIN} not found: build it (cargo build) or set CONFAB_BIN`);
  }
  const out = fs.openSync(serverLogPath, 'a');
  server = spawn(CONFAB_BIN, ['serve'], {
    cwd: ROOT,
    env: {
      ...process.env,
      CONFAB_HTTP__BIND: HTTP_BIND,
      CONFAB_MEDIA__BIND: '127.0.0.1:50000',
      RUST_LOG: process.env.CONFAB_E2E_RUST_LOG || 'info',
    },
    stdio: ['ignore', out, out],
  });
  fs.closeSync(out);
  server.on('exit', (code, signal) => { serverExit = signal ? `signal ${signal}` : `exit code ${code}`; });
  server.on('error', (e) => { serverExit = `spawn error: ${e.message}`; });
}

async function waitHealthy() {
  const deadline = Date.now() + HEALTH_TIMEOUT_MS;
  let last = 'no answer';
  while (Date.now() < deadline) {
    assertServerAlive();
    try {
      const res = await fetch(`${BASE_URL}/healthz`, { signal: AbortSignal.timeout(1000) });
      if (res.status === 200) return;
      last = `HTTP ${res.status}`;
    } catch (e) {
      last = e.cause?.code ?? e.message;
    }
    await sleep(100);
  }
  fail('server healthy', `GET /healthz did not answer 200 within ${HEALTH_TIMEOUT_MS / 1000} s (last: ${last})`);
}

function tail(file, lines) {
  try {
    const text = fs.readFileSync(file, 'utf8').trimEnd().split('\n');
    return text.slice(-lines).join('\n');
  } catch (e) {
    return `(cannot read ${file}: ${e.message})`;
  }
}

// ------------------------------------------------------------------ page sampling

/**
 * @typedef {object} Sample
 * @property {number} at            Date.now() on the Node side
 * @property {string} state         Session state
 * @property {string} pcState       RTCPeerConnection.connectionState
 * @property {string | null} participantId
 * @property {number} reconnects
 * @property {Record<string, string>} participants   id → name (remote members)
 * @property {Record<string, {framesDecoded: number, owner: string | null}>} inbound  video inbound-rtp by trackIdentifier
 * @property {Record<string, {videoWidth: number, videoHeight: number}>} tiles       remote tiles by participant id
 * @property {number} errors        session errors seen by the UI
 */

/** Runs in the page: a snapshot of session, PeerConnection stats and tiles. */
async function sampleInPage() {
  const c = /** @type {any} */ (window).confab;
  const s = c?.session;
  const pc = s?.pc;
  const out = {
    state: s?.state ?? 'none',
    pcState: pc?.connectionState ?? 'none',
    participantId: s?.participantId ?? null,
    reconnects: s?.reconnects ?? 0,
    participants: {},
    inbound: {},
    tiles: {},
    errors: c?.state?.errors?.length ?? 0,
  };
  if (s) for (const p of s.participants.values()) out.participants[p.id] = p.name;
  if (pc) {
    const stats = await pc.getStats();
    stats.forEach((r) => {
      if (r.type !== 'inbound-rtp' || r.kind !== 'video') return;
      out.inbound[r.trackIdentifier] = {
        framesDecoded: r.framesDecoded ?? 0,
        owner: s.participantForTrack(r.trackIdentifier) ?? null,
      };
    });
  }
  for (const tile of document.querySelectorAll('.tile:not(.local)')) {
    const v = tile.querySelector('video');
    out.tiles[tile.dataset.participantId] = { videoWidth: v?.videoWidth ?? 0, videoHeight: v?.videoHeight ?? 0 };
  }
  return out;
}

/**
 * Runs in every page before its own scripts: records the `track-view` messages the page sends
 * and keeps its WebSockets, so the test can hand the session a server message (`serverSays`).
 */
function instrumentPage() {
  const e2e = {
    views: [],
    sockets: [],
    /**
     * Message types the real server sends that are kept from the page while set (the server's
     * own dynacast can send `publish-layers` at any time; a test feeding its own must not race it).
     * Only trusted events are held: the test's `serverSays` events are synthetic.
     * @type {Set<string>}
     */
    held: new Set(),
    /** How many real server messages were held back. */
    heldCount: 0,
    /** Delivers `msg` to the page as if the server had sent it on the newest socket. */
    serverSays: (msg) => e2e.sockets.at(-1).dispatchEvent(new MessageEvent('message', { data: JSON.stringify(msg) })),
  };
  /** @type {any} */ (window).__e2e = e2e;
  const Native = window.WebSocket;
  const send = Native.prototype.send;
  Native.prototype.send = function (data) {
    if (typeof data === 'string' && data.includes('"track-view"')) {
      try {
        const m = JSON.parse(data);
        if (m.type === 'track-view') e2e.views.push(m);
      } catch { /* not JSON: not ours to judge */ }
    }
    return send.call(this, data);
  };
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      e2e.sockets.push(this);
      // Registered before the page's own listeners, so it runs first and can stop the event.
      this.addEventListener('message', (ev) => {
        if (!ev.isTrusted || e2e.held.size === 0 || typeof ev.data !== 'string') return;
        try {
          if (e2e.held.has(JSON.parse(ev.data).type)) {
            ev.stopImmediatePropagation();
            e2e.heldCount += 1;
          }
        } catch { /* not JSON: the page judges it */ }
      });
    }
  };
}

/** Runs in the page: the encodings of every sender that has a track. */
function sendersInPage() {
  const s = window.confab.session;
  return s.pc.getTransceivers().filter((t) => t.sender.track).map((t) => ({
    kind: t.sender.track.kind,
    encodings: t.sender.getParameters().encodings.map((e) => ({
      rid: e.rid ?? null,
      scaleResolutionDownBy: e.scaleResolutionDownBy ?? null,
      maxBitrate: e.maxBitrate ?? null,
    })),
  }));
}

/**
 * Runs in every page before its own scripts: records, at each `confab:active-speakers` window
 * event (app.js fires it once the tiles show an `active-speakers` list), the list and which tiles
 * are marked then, so no poll has to catch a short-lived list.
 */
function recordSpeakersInPage() {
  const rec = { events: 0, lists: /** @type {any[]} */ ([]) };
  /** @type {any} */ (window).__e2eSpeakers = rec;
  window.addEventListener('confab:active-speakers', (ev) => {
    const speakers = /** @type {CustomEvent} */ (ev).detail?.speakers;
    rec.events += 1;
    if (!Array.isArray(speakers) || !speakers.length) return;
    const marked = (cls) => [...document.querySelectorAll(`.tile.${cls}`)].map((t) => /** @type {HTMLElement} */ (t).dataset.participantId);
    rec.lists.push({ speakers, self: window.confab?.session?.participantId ?? null, speaking: marked('speaking'), dominant: marked('dominant') });
    if (rec.lists.length > 50) rec.lists.splice(1, 1); // keep the first and the latest
  });
}

/** Runs in the page: what `recordSpeakersInPage` saw, and `window.confabStats().speakers` now. */
async function speakersInPage() {
  const stats = await window.confabStats();
  return { polled: stats.speakers, ...window.__e2eSpeakers };
}

/** Runs in the page: per received video track, its tile's rendered size and the views sent. */
function viewsInPage() {
  const s = window.confab.session;
  const dpr = window.devicePixelRatio || 1;
  const sent = window.__e2e.views;
  const received = s.remoteTracks();
  const audio = new Set(received.filter((t) => t.track.kind === 'audio').map((t) => t.trackId));
  const tracks = received.filter((t) => t.track.kind === 'video').map((t) => {
    const tile = document.querySelector(`.tile[data-participant-id="${CSS.escape(t.participantId)}"]`);
    const r = tile?.querySelector('video')?.getBoundingClientRect();
    return {
      participantId: t.participantId,
      trackId: t.trackId,
      announced: s.participants.get(t.participantId)?.tracks
        .some((a) => a.track_id === t.trackId && a.kind === 'video') ?? false,
      rendered: r ? { width: Math.round(r.width * dpr), height: Math.round(r.height * dpr) } : null,
      sent: sent.filter((v) => v.track_id === t.trackId)
        .map(({ visible, width, height }) => ({ visible, width, height })),
    };
  });
  return { tracks, audioViews: sent.filter((v) => audio.has(v.track_id)).map((v) => v.track_id) };
}

/** Runs in the page: the receive-side counters of every inbound video stream (for a failure
 * report: why frames stopped). */
async function inboundVideoInPage() {
  const report = await window.confab.session.pc.getStats();
  const keys = ['packetsReceived', 'packetsLost', 'nackCount', 'pliCount', 'firCount', 'framesReceived',
    'framesDecoded', 'framesDropped', 'keyFramesDecoded', 'frameWidth', 'freezeCount', 'retransmittedPacketsReceived'];
  const out = [];
  report.forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') {
      out.push(`ssrc ${r.ssrc} ${keys.map((k) => `${k}=${r[k] ?? '-'}`).join(' ')}`);
    } else if (r.type === 'inbound-rtp') {
      out.push(`audio ssrc ${r.ssrc} packetsReceived=${r.packetsReceived}`);
    } else if (r.type === 'candidate-pair' && r.nominated) {
      out.push(`pair packetsReceived=${r.packetsReceived} bytesReceived=${r.bytesReceived}`);
    } else if (r.type === 'transport') {
      out.push(`transport packetsReceived=${r.packetsReceived} dtls=${r.dtlsState}`);
    }
  });
  return out.join(' | ') || 'none';
}

/** Runs in the page: `window.confabStats()`, the inbound stats by publisher. */
function statsInPage() {
  return window.confabStats();
}

/**
 * Runs in the page: hands alice's session `publish-layers` messages for its camera as if the
 * server sent them, and reports the sender's encodings after each is applied.
 */
async function layersRoundTripInPage() {
  const s = window.confab.session;
  const { serverSays, held } = window.__e2e;
  // The server's dynacast keeps working (a layer nobody watched for 5 s is turned off): its
  // messages are held back until the round trip is over, so only the test's are applied.
  held.add('publish-layers');
  const sender = s.pc.getSenders().find((x) => x.track?.kind === 'video');
  const layers = (active) => serverSays({ type: 'publish-layers', source_track_id: sender.track.id, active });
  const state = () => sender.getParameters().encodings.map((e) => `${e.rid ?? '-'}:${e.active ? 'on' : 'off'}`).join(' ');
  /** @type {string[]} */
  const applied = [];
  const record = (ev) => applied.push(`${ev.detail.sourceTrackId === sender.track.id ? '' : `${ev.detail.sourceTrackId} `}[${ev.detail.active.join(',')}]`);
  s.addEventListener('publish-layers', record);
  const once = (want) => new Promise((resolve) => {
    const timer = setTimeout(() => resolve(`no publish-layers event for [${want}] within 2 s`), 2000);
    const on = (ev) => {
      if (ev.detail.sender !== sender || ev.detail.active.join() !== want.join()) return;
      s.removeEventListener('publish-layers', on);
      clearTimeout(timer);
      resolve(state());
    };
    s.addEventListener('publish-layers', on);
  });
  const out = { before: state() };
  serverSays({ type: 'publish-layers', source_track_id: 'no-such-track', active: [] });
  for (const want of [['q'], []]) {
    const done = once(want);
    layers(want);
    out[`[${want}]`] = await done;
  }
  // A burst: the first is applied at once, the second is replaced by the third while it waits.
  const burst = once(['h', 'f']);
  layers(['q']);
  layers(['f']);
  layers(['h', 'f']);
  out['burst [q] [f] [h,f]'] = await burst;
  // Leave every layer on, as at the start.
  const all = once(['q', 'h', 'f']);
  layers(['q', 'h', 'f']);
  out['[q,h,f]'] = await all;
  s.removeEventListener('publish-layers', record);
  held.delete('publish-layers');
  out.applied = applied.join(' ');
  out.held = window.__e2e.heldCount;
  return out;
}

/**
 * Runs in the page: hands alice's session `track-paused` and then `track-resumed` for a
 * publisher's video, and reports its tile after each.
 * @param {string} publisherId
 */
async function pauseRoundTripInPage(publisherId) {
  const s = window.confab.session;
  const { serverSays } = window.__e2e;
  const trackId = s.participants.get(publisherId)?.tracks.find((t) => t.kind === 'video')?.track_id;
  if (!trackId) return { error: `no announced video track of ${publisherId}` };
  const tile = document.querySelector(`.tile[data-participant-id="${CSS.escape(publisherId)}"]`);
  const look = async () => {
    const note = tile?.querySelector('.paused-note');
    const stats = (await window.confabStats())[publisherId]?.video.find((v) => v.trackId === trackId);
    return {
      marked: tile?.classList.contains('paused-bandwidth') ?? false,
      overlay: note && note.checkVisibility() ? note.innerText : null,
      pausedForBandwidth: stats?.pausedForBandwidth ?? null,
    };
  };
  serverSays({ type: 'track-paused', participant_id: publisherId, track_id: trackId, reason: 'bandwidth' });
  const paused = await look();
  serverSays({ type: 'track-resumed', participant_id: publisherId, track_id: trackId });
  const resumed = await look();
  // Only the voice held back (a link too slow for every voice): the tile says so, the video
  // stays as it is.
  const audioId = s.participants.get(publisherId)?.tracks.find((t) => t.kind === 'audio')?.track_id;
  if (!audioId) return { error: `no announced audio track of ${publisherId}` };
  serverSays({ type: 'track-paused', participant_id: publisherId, track_id: audioId, kind: 'audio', reason: 'bandwidth' });
  const audioPaused = {
    ...(await look()),
    audioMarked: tile?.classList.contains('audio-paused-bandwidth') ?? false,
    kind: s.pausedTracks().find((p) => p.trackId === audioId)?.kind ?? null,
  };
  serverSays({ type: 'track-resumed', participant_id: publisherId, track_id: audioId });
  const audioResumed = { ...(await look()), audioMarked: tile?.classList.contains('audio-paused-bandwidth') ?? false };
  return { trackId, paused, resumed, audioPaused, audioResumed };
}

/** @param {{visible: boolean, width: number, height: number}} v */
const viewText = (v) => `${v.visible ? 'visible' : 'hidden'} ${v.width}x${v.height}`;

/**
 * What is wrong with a page's `track-view`s for the video it receives from `publishers`, or null.
 * @param {Peer} peer
 * @param {string[]} publishers
 * @returns {Promise<string | null>}
 */
async function viewProblem(peer, publishers) {
  const { tracks, audioViews } = await peer.page.evaluate(viewsInPage);
  if (audioViews.length) return `${peer.name} sent track-view for audio track(s) ${audioViews.join(', ')}`;
  for (const pub of publishers) {
    const videos = tracks.filter((t) => t.participantId === pub);
    if (!videos.length) return `${peer.name} receives no video track from ${pub}`;
    for (const t of videos) {
      const what = `${peer.name}'s track-view for ${pub}'s video ${t.trackId}`;
      if (!t.announced) return `${what}: the id is not a video track the server announced for ${pub}`;
      const last = t.sent.at(-1);
      if (!last) return `${what}: none sent`;
      const r = t.rendered;
      if (!r || r.width <= 0 || r.height <= 0) return `${what}: its tile has no size`;
      if (!last.visible || last.width !== r.width || last.height !== r.height) {
        return `${what}: the last one says ${viewText(last)}, the tile shows it visible at ${r.width}x${r.height}`;
      }
      const i = t.sent.findIndex((v, k) => k > 0 && viewText(v) === viewText(t.sent[k - 1]));
      if (i > 0) return `${what}: view ${i} repeats the one before it (${viewText(t.sent[i])})`;
    }
  }
  return null;
}

/**
 * Calls `check` every POLL_MS until it finds nothing wrong or `timeoutMs` has passed.
 * @param {number} timeoutMs
 * @param {() => Promise<string | null>} check  the problem, or null
 * @returns {Promise<string | null>} the last problem, or null
 */
async function settle(timeoutMs, check) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    assertServerAlive();
    const problem = await check();
    if (problem === null || Date.now() >= deadline) return problem;
    await sleep(POLL_MS);
  }
}

/**
 * Checks that every page's last `track-view` for each remote video matches its tile (see
 * `viewProblem`), allowing the debounce to run out; returns the sizes sent, for the log.
 * @param {string} name
 * @param {Peer[]} peers
 * @param {(p: Peer) => string[]} publishersOf  whose video each page must have reported
 */
async function checkViews(name, peers, publishersOf) {
  const problem = await settle(VIEW_TIMEOUT_MS, async () => {
    for (const p of peers) {
      const why = await viewProblem(p, publishersOf(p));
      if (why) return why;
    }
    return null;
  });
  if (problem) fail(name, `after ${VIEW_TIMEOUT_MS / 1000} s: ${problem}`);
  const sizes = await Promise.all(peers.map(async (p) => {
    const { tracks } = await p.page.evaluate(viewsInPage);
    return `${p.name} ${tracks.map((t) => t.sent.map((v) => `${v.width}x${v.height}`).join('→')).join(', ')}`;
  }));
  return sizes.join('; ');
}

/**
 * Polls every page's `window.confabStats().speakers` (it must be an array of ids) until each page
 * has recorded a non-empty `active-speakers` list that names only members of the room and, at
 * that moment, had exactly those members' tiles marked `speaking` (its own id: the self-view
 * tile, `local`) and the first one's `dominant`. A failure is recorded and the test goes on.
 * @param {string} name
 * @param {Peer[]} peers
 */
async function checkActiveSpeakers(name, peers) {
  const nameOf = new Map(peers.map((p) => [p.samples.at(-1)?.participantId ?? '', p.name]));
  const who = (id) => nameOf.get(id) ?? id;
  /** What is wrong with one recorded list, or null. */
  const listProblem = (l) => {
    const strangers = l.speakers.filter((id) => !nameOf.has(id));
    if (strangers.length) return `it names ${strangers.join(', ')}, not a member of the room`;
    const tileOf = (id) => (id === l.self ? 'local' : id);
    const want = l.speakers.map(tileOf);
    const tiles = (ids) => ids.map((t) => (t === 'local' ? 'self-view' : who(t))).join(', ') || 'none';
    if (!l.speaking.length) return 'no tile was marked .speaking';
    if (want.slice().sort().join() !== l.speaking.slice().sort().join()) {
      return `.speaking tiles were [${tiles(l.speaking)}], want [${tiles(want)}]`;
    }
    if (l.dominant.join() !== want[0]) return `.dominant tiles were [${tiles(l.dominant)}], want [${tiles([want[0]])}]`;
    return null;
  };
  const deadline = Date.now() + SPEAKERS_TIMEOUT_MS;
  /** @type {Map<string, {events: number, lists: any[], polled: unknown}>} */
  const last = new Map();
  /** @type {Map<string, any>} the first good list per page */
  const good = new Map();
  while (Date.now() < deadline && good.size < peers.length) {
    assertServerAlive();
    for (const p of peers) {
      if (good.has(p.name)) continue;
      const r = await p.page.evaluate(speakersInPage);
      last.set(p.name, r);
      if (!Array.isArray(r.polled) || r.polled.some((id) => typeof id !== 'string')) {
        failLater(name, `${p.name}'s window.confabStats().speakers is ${JSON.stringify(r.polled)}, not an array of participant ids`);
        return;
      }
      const ok = r.lists.find((l) => listProblem(l) === null);
      if (ok) good.set(p.name, ok);
    }
    if (good.size < peers.length) await sleep(POLL_MS);
  }
  if (good.size === peers.length) {
    pass(name, peers.map((p) => {
      const l = good.get(p.name);
      return `${p.name} heard [${l.speakers.map((id) => (id === l.self ? `${who(id)} (self)` : who(id))).join(', ')}] `
        + `(${last.get(p.name)?.events ?? 0} updates)`;
    }).join('; '));
    return;
  }
  const missing = peers.filter((p) => !good.has(p.name)).map((p) => {
    const r = last.get(p.name);
    if (!r || r.events === 0) return `${p.name} got no active-speakers message naming anyone (has the server side landed?)`;
    if (!r.lists.length) return `${p.name} got ${r.events} active-speakers update(s), every list empty`;
    const l = r.lists.at(-1);
    return `${p.name} got ${r.lists.length} non-empty list(s), none fit; the latest [${l.speakers.map(who).join(', ')}]: ${listProblem(l)}`;
  });
  // What each page's microphone and received audio carried (a silent source explains silence).
  const levels = await Promise.all(peers.map(async (p) => {
    const l = await p.page.evaluate(audioLevelsInPage).catch((e) => ({ error: String(e) }));
    return `${p.name} ${JSON.stringify(l)}`;
  }));
  failLater(name, `within ${SPEAKERS_TIMEOUT_MS / 1000} s: ${missing.join('; ')}; audio energy: ${levels.join('; ')}`);
}

/** Runs in the page: the local microphone's and each received audio stream's audio energy. */
async function audioLevelsInPage() {
  const report = await window.confab.session.pc.getStats();
  const out = { mic: [], received: [] };
  for (const r of report.values()) {
    if (r.type === 'media-source' && r.kind === 'audio') out.mic.push({ level: r.audioLevel, energy: r.totalAudioEnergy });
    if (r.type === 'inbound-rtp' && r.kind === 'audio') out.received.push({ level: r.audioLevel, energy: r.totalAudioEnergy, packets: r.packetsReceived });
  }
  return out;
}

class Peer {
  /** @param {string} name */
  constructor(name) {
    this.name = name;
    /** @type {import('playwright-core').BrowserContext | null} */
    this.context = null;
    /** @type {import('playwright-core').Page | null} */
    this.page = null;
    this.t0 = 0;
    this.firstRemoteFrameMs = /** @type {number | null} */ (null);
    /** @type {Sample[]} */
    this.samples = [];
    /** trackIdentifier → publisher participant id, remembered after the SDK forgets it */
    this.owners = new Map();
    this.closed = false;
  }

  async open(browserRef) {
    this.context = await browserRef.newContext();
    if (CLIENT_DIR) {
      await this.context.route((u) => u.origin === BASE_URL && u.pathname !== '/ws', (route) => {
        // The document itself must come from the server: Chromium's local-network-access checks
        // block the WebSocket of a page whose document Playwright fulfilled.
        if (route.request().resourceType() === 'document') return route.continue();
        const rel = new URL(route.request().url()).pathname.replace(/^\/+/, '') || 'index.html';
        const file = path.join(CLIENT_DIR, rel);
        if (!file.startsWith(CLIENT_DIR + path.sep) || !fs.existsSync(file)) return route.fulfill({ status: 404, body: 'not found' });
        return route.fulfill({ path: file });
      });
    }
    await this.context.addInitScript(instrumentPage);
    await this.context.addInitScript(recordSpeakersInPage);
    this.page = await this.context.newPage();
    this.page.on('console', (m) => consoleLines.push(`[${this.name}] ${m.type()}: ${m.text()}`));
    this.page.on('pageerror', (e) => pageErrors.push(`[${this.name}] ${e.message}`));
  }

  async goto() {
    this.t0 = Date.now();
    const url = `${BASE_URL}/?room=${ROOM}&name=${encodeURIComponent(this.name)}${SIMULCAST ? '' : '&simulcast=0'}`;
    await this.page.goto(url, { waitUntil: 'domcontentloaded', timeout: 15_000 });
  }

  /** @returns {Promise<Sample | null>} */
  async sample() {
    if (this.closed) return null;
    let s;
    try {
      s = await this.page.evaluate(sampleInPage);
    } catch (e) {
      if (this.closed) return null;
      throw new TestFailure(`${this.name}: cannot read the page: ${e.message}`);
    }
    s.at = Date.now();
    for (const [trackId, v] of Object.entries(s.inbound)) {
      if (v.owner) this.owners.set(trackId, v.owner);
      else v.owner = this.owners.get(trackId) ?? null;
    }
    this.samples.push(s);
    if (this.samples.length > 400) this.samples.splice(0, 100);
    lastSamples.set(this.name, s);
    if (this.firstRemoteFrameMs === null
      && Object.values(s.inbound).some((v) => v.owner && v.framesDecoded > 0)) {
      this.firstRemoteFrameMs = s.at - this.t0;
    }
    return s;
  }

  /** Frames decoded from one publisher in a sample (summed over its video tracks). */
  static frames(sample, publisherId) {
    let n = 0;
    for (const v of Object.values(sample.inbound)) if (v.owner === publisherId) n += v.framesDecoded;
    return n;
  }

  /** The latest sample at least `ms` older than `sample`, if any. */
  sampleBefore(sample, ms) {
    for (let i = this.samples.length - 1; i >= 0; i--) {
      if (this.samples[i].at <= sample.at - ms) return this.samples[i];
    }
    return null;
  }

  /**
   * True if this page decodes `publisherId`: frames > 0, more than in an earlier sample, and its
   * tile's <video> has a size.
   */
  decodes(sample, publisherId) {
    const now = Peer.frames(sample, publisherId);
    if (now <= 0) return false;
    const before = this.samples.find((s) => s.at < sample.at && Peer.frames(s, publisherId) > 0);
    if (!before || Peer.frames(before, publisherId) >= now) return false;
    return (sample.tiles[publisherId]?.videoWidth ?? 0) > 0;
  }
}

/**
 * Polls every page until `done(peer, sample)` holds for all of them, or fails after `timeoutMs`.
 * @param {Peer[]} peers
 * @param {number} timeoutMs
 * @param {(peer: Peer, s: Sample) => boolean} done
 * @param {(peer: Peer, s: Sample) => void} [every]  extra per-sample assertion
 * @returns {Promise<boolean>}
 */
async function pollUntil(peers, timeoutMs, done, every) {
  const deadline = Date.now() + timeoutMs;
  const ok = new Set();
  while (Date.now() < deadline) {
    assertServerAlive();
    const tick = Date.now();
    const samples = await Promise.all(peers.map((p) => p.sample()));
    peers.forEach((p, i) => {
      const s = samples[i];
      if (!s) return;
      every?.(p, s);
      if (done(p, s)) ok.add(p.name);
    });
    if (ok.size === peers.length) return true;
    await sleep(Math.max(0, POLL_MS - (Date.now() - tick)));
  }
  return false;
}

function describe(sample) {
  if (!sample) return '(no sample)';
  const inbound = Object.entries(sample.inbound)
    .map(([id, v]) => `${v.owner ?? '?'}:${v.framesDecoded}(${id.slice(0, 8)})`).join(' ');
  const tiles = Object.entries(sample.tiles).map(([id, t]) => `${id}:${t.videoWidth}x${t.videoHeight}`).join(' ');
  return `state=${sample.state} pc=${sample.pcState} id=${sample.participantId} reconnects=${sample.reconnects} `
    + `participants=${JSON.stringify(sample.participants)} inbound=[${inbound}] tiles=[${tiles}] errors=${sample.errors}`;
}

/**
 * A 4 s mono 48 kHz 16-bit WAV (Chromium loops it): a 220 Hz tone with two harmonics whose
 * loudness rises and falls four times a second, like syllables, around -20 dBFS.
 */
function voiceWav() {
  const rate = 48_000;
  const n = rate * 4;
  const data = Buffer.alloc(n * 2);
  for (let i = 0; i < n; i++) {
    const t = i / rate;
    const envelope = 0.25 + 0.2 * Math.sin(2 * Math.PI * 4 * t);
    const tone = Math.sin(2 * Math.PI * 220 * t) + 0.5 * Math.sin(2 * Math.PI * 440 * t) + 0.25 * Math.sin(2 * Math.PI * 660 * t);
    data.writeInt16LE(Math.round(32767 * envelope * tone / 1.75), i * 2);
  }
  const header = Buffer.alloc(44);
  header.write('RIFF', 0);
  header.writeUInt32LE(36 + data.length, 4);
  header.write('WAVE', 8);
  header.write('fmt ', 12);
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20); // PCM
  header.writeUInt16LE(1, 22); // mono
  header.writeUInt32LE(rate, 24);
  header.writeUInt32LE(rate * 2, 28);
  header.writeUInt16LE(2, 32);
  header.writeUInt16LE(16, 34);
  header.write('data', 36);
  header.writeUInt32LE(data.length, 40);
  return Buffer.concat([header, data]);
}

// ------------------------------------------------------------------ the test

async function run() {
  if (CLIENT_DIR) log(`serving the web client from ${CLIENT_DIR} (CONFAB_E2E_CLIENT_DIR), not from the server`);
  startServer();
  const healthStart = Date.now();
  await waitHealthy();
  pass('server healthy', `GET /healthz 200 after ${secs(Date.now() - healthStart)}`);

  // The microphones play a voice-like signal: Chromium's own fake microphone beeps for ~160 ms
  // every 500 ms, whose activity hovers at the speaker detector's threshold (no page heard an
  // active speaker in 8 of 8 runs in a row one evening, in 3 of 8 another).
  const voice = path.join(tmpDir, 'voice.wav');
  fs.writeFileSync(voice, voiceWav());
  const args = [...CHROMIUM_ARGS, `--use-file-for-fake-audio-capture=${voice}`];
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args, timeout: 30_000 });
  log(`browser ${browser.version()} launched`);
  const peers = NAMES.map((n) => new Peer(n));
  for (const p of peers) await p.open(browser);

  // Phase 1: everyone joins at once; everyone must see both others.
  await Promise.all(peers.map((p) => p.goto()));
  const ids = () => Object.fromEntries(peers.map((p) => [p.name, p.samples.at(-1)?.participantId ?? null]));
  const others = (p) => peers.filter((o) => o !== p).map((o) => o.samples.at(-1)?.participantId ?? null);
  const seesBoth = (p, s) => {
    const want = others(p);
    return want.every((id) => id !== null && p.decodes(s, id));
  };
  const allStart = Math.min(...peers.map((p) => p.t0));
  /** @type {Map<string, number>} */
  const bothAt = new Map();
  const phase1 = await pollUntil(peers, MEDIA_TIMEOUT_MS, (p, s) => {
    const ok = seesBoth(p, s);
    if (ok && !bothAt.has(p.name)) bothAt.set(p.name, s.at - p.t0);
    return ok;
  });
  if (!phase1) {
    const missing = peers.filter((p) => !bothAt.has(p.name)).map((p) => p.name);
    fail('everyone decodes both others', `after ${MEDIA_TIMEOUT_MS / 1000} s, ${missing.join(', ')} did not `
      + `(ids ${JSON.stringify(ids())})`);
  }
  pass('everyone decodes both others', `all within ${secs(Date.now() - allStart)} of the first page.goto`);

  for (const p of peers) {
    // Milestones app.js marks (ms since navigation start), to see where the time goes.
    const marks = await p.page.evaluate(() => performance.getEntriesByType('mark')
      .filter((m) => m.name.startsWith('confab:'))
      .map((m) => `${m.name.slice(7)} ${(m.startTime / 1000).toFixed(2)}`).join(', ')).catch(() => '');
    log(`${p.name}: first remote frame ${secs(p.firstRemoteFrameMs ?? NaN)}, both remotes ${secs(bothAt.get(p.name) ?? NaN)} after page.goto`
      + (marks ? ` (page marks, s after navigation start: ${marks})` : ''));
  }
  const firsts = peers.map((p) => /** @type {number} */ (p.firstRemoteFrameMs)).sort((a, b) => a - b);
  const boths = peers.map((p) => /** @type {number} */ (bothAt.get(p.name))).sort((a, b) => a - b);
  log(`time to first remote frame (page.goto → first decoded remote video frame; 3 pages opened together, polled every ${POLL_MS} ms): `
    + `min ${secs(firsts[0])} / median ${secs(firsts[1])} / max ${secs(firsts[2])}`);
  log(`time until both remotes decode: min ${secs(boths[0])} / median ${secs(boths[1])} / max ${secs(boths[2])}`);

  // Simulcast: the camera goes out as three layers (or one), the microphone as one encoding.
  const layersCheck = SIMULCAST ? 'camera published as simulcast q/h/f' : 'camera published as one layer (?simulcast=0)';
  const wantCamera = SIMULCAST ? JSON.stringify(CAMERA_ENCODINGS) : null;
  const single = (x) => x.encodings.length === 1 && x.encodings[0].rid === null;
  for (const p of peers) {
    const senders = await p.page.evaluate(sendersInPage);
    const video = senders.filter((x) => x.kind === 'video');
    const audio = senders.filter((x) => x.kind === 'audio');
    if (video.length !== 1 || (wantCamera ? JSON.stringify(video[0].encodings) !== wantCamera : !single(video[0]))) {
      fail(layersCheck, `${p.name}'s video senders have encodings ${JSON.stringify(video.map((x) => x.encodings))}, want [${wantCamera ?? 'one without rid'}]`);
    }
    if (audio.length !== 1 || !single(audio[0])) {
      fail(layersCheck, `${p.name}'s audio senders have encodings ${JSON.stringify(audio.map((x) => x.encodings))}, want one without rid`);
    }
  }
  pass(layersCheck, `every page: video encodings ${SIMULCAST ? 'q/4/50k h/2/300k f/1/900k' : 'one without rid'}, audio one encoding`);

  const viewSizes = await checkViews('track-view sent for every remote video', peers, others);
  pass('track-view sent for every remote video', `visible, at the tile size in device px (${viewSizes})`);

  // The stats accessor other tests read: decoded video and received audio from both others.
  const received = [];
  for (const p of peers) {
    const stats = await p.page.evaluate(statsInPage);
    for (const pub of others(p)) {
      const st = stats[/** @type {string} */ (pub)];
      const v = st?.video[0];
      const a = st?.audio[0];
      if (!v || v.framesDecoded <= 0 || v.frameWidth <= 0 || !a || a.totalSamplesReceived <= 0) {
        fail('confabStats() reports both others', `${p.name}'s stats for ${pub}: ${JSON.stringify(st ?? null)}`);
      }
      received.push(`${p.name}←${peers.find((o) => o.samples.at(-1)?.participantId === pub)?.name} ${v.frameWidth}x${v.frameHeight}`);
    }
  }
  pass('confabStats() reports both others', `video frames decoded and audio samples received; frame sizes ${received.join(', ')}`);

  await checkActiveSpeakers('active speakers reach every page', peers);

  // Phase 2: carol leaves by closing her page.
  const [alice, bob, carol] = peers;
  const carolId = /** @type {string} */ (carol.samples.at(-1)?.participantId);
  const aliceId = /** @type {string} */ (alice.samples.at(-1)?.participantId);
  const bobId = /** @type {string} */ (bob.samples.at(-1)?.participantId);
  carol.closed = true;
  const closedAt = Date.now();
  await carol.context?.close();
  log(`closed carol's page (${carolId})`);

  const remaining = [alice, bob];
  /** @type {Map<string, number>} */
  const goneAt = new Map();
  const stayConnected = (p, s) => {
    if (s.pcState !== 'connected') {
      fail('alice and bob stay connected', `${p.name}'s PeerConnection is '${s.pcState}' after carol left`);
    }
  };
  const carolGone = await pollUntil(remaining, LEAVE_TIMEOUT_MS, (p, s) => {
    const gone = !(carolId in s.tiles) && !(carolId in s.participants);
    if (!gone) return false;
    if (!goneAt.has(p.name)) goneAt.set(p.name, s.at - closedAt);
    // Her frames must have stopped: no increase over the last second.
    const earlier = p.sampleBefore(s, 1000);
    return earlier !== null && earlier.at >= closedAt && Peer.frames(s, carolId) === Peer.frames(earlier, carolId);
  }, stayConnected);
  if (!carolGone) {
    fail('carol removed', `within ${LEAVE_TIMEOUT_MS / 1000} s: ${remaining.map((p) => `${p.name} ${goneAt.has(p.name) ? 'removed her but still decodes her frames' : 'still shows her'}`).join('; ')}`);
  }
  pass('carol removed', remaining.map((p) => `${p.name} dropped her tile after ${secs(goneAt.get(p.name) ?? NaN)}`).join(', '));

  // alice and bob keep decoding each other, on a connected PeerConnection, for STEADY_MS more.
  const steadyFrom = Date.now();
  /** @type {Map<string, number>} */
  const startFrames = new Map([
    ['alice', Peer.frames(alice.samples.at(-1), bobId)],
    ['bob', Peer.frames(bob.samples.at(-1), aliceId)],
  ]);
  await pollUntil(remaining, STEADY_MS, () => false, stayConnected);
  const aliceGain = Peer.frames(alice.samples.at(-1), bobId) - (startFrames.get('alice') ?? 0);
  const bobGain = Peer.frames(bob.samples.at(-1), aliceId) - (startFrames.get('bob') ?? 0);
  const elapsed = (Date.now() - steadyFrom) / 1000;
  if (aliceGain < STEADY_MIN_FRAMES || bobGain < STEADY_MIN_FRAMES) {
    for (const round of [1, 2]) {
      for (const p of remaining) {
        log(`${p.name} inbound (${round}): ${await p.page.evaluate(inboundVideoInPage).catch((e) => `(stats failed: ${e})`)}`);
      }
      if (round === 1) await sleep(1000);
    }
    const metrics = await fetch(`${BASE_URL}/metrics`).then((r) => r.text()).catch((e) => `(metrics failed: ${e})`);
    const wanted = /^confab_(video_layer_packets_total|forward_drops_total|retransmitted_packets_total|nack_unanswered_total|rtcp_pli_total|layer_switches_total|probe_packets_total)/;
    log(`server counters: ${metrics.split('\n').filter((l) => wanted.test(l) && !/ 0$/.test(l)).join('; ')}`);
    fail('alice and bob keep decoding each other', `over ${elapsed.toFixed(1)} s after carol left: alice decoded ${aliceGain} frames from bob, bob ${bobGain} from alice`);
  }
  const aliceTile = alice.samples.at(-1)?.tiles[bobId]?.videoWidth ?? 0;
  const bobTile = bob.samples.at(-1)?.tiles[aliceId]?.videoWidth ?? 0;
  if (aliceTile <= 0 || bobTile <= 0) {
    fail('alice and bob keep decoding each other', `tile videoWidth: alice's bob tile ${aliceTile}, bob's alice tile ${bobTile}`);
  }
  pass('alice and bob keep decoding each other', `+${aliceGain} / +${bobGain} frames in ${elapsed.toFixed(1)} s, both PeerConnections 'connected'`);

  // Their tiles grew when carol's went away: the last view sent must say so.
  const resized = await checkViews('track-view follows the tile size', remaining, (p) => [p === alice ? bobId : aliceId]);
  pass('track-view follows the tile size', `after carol's tile went: ${resized}`);

  // Dynacast and pausing, client side: server messages handed to alice's session.
  const layers = await alice.page.evaluate(layersRoundTripInPage);
  // Before the test's own messages, the encodings are what the server's dynacast last asked
  // for (a layer nobody watched for 5 s is off), but the lowest is always on.
  if (!/^(q|-):on\b/.test(layers.before)) {
    fail('publish-layers sets the camera encodings', `before: ${layers.before} (the lowest layer must be on)`);
  }
  const wantLayers = {
    '[q]': cameraState(['q']),
    '[]': cameraState([]),
    'burst [q] [f] [h,f]': cameraState(['h', 'f']),
    '[q,h,f]': cameraState(['q', 'h', 'f']),
    applied: '[q] [] [q] [h,f] [q,h,f]',
  };
  const wrongLayers = Object.entries(wantLayers).filter(([k, want]) => layers[k] !== want);
  if (wrongLayers.length) {
    fail('publish-layers sets the camera encodings', wrongLayers.map(([k, want]) => `${k}: ${layers[k]} (want ${want})`).join('; '));
  }
  pass('publish-layers sets the camera encodings', `[q] → ${layers['[q]']}, [] → ${layers['[]']}, a burst applies the first and the last, an unknown track id is ignored (${layers.held} of the server's own publish-layers held back meanwhile)`);

  const pause = await alice.page.evaluate(pauseRoundTripInPage, bobId);
  const paused = pause.paused;
  const resumed = pause.resumed;
  if (pause.error || !paused.marked || paused.overlay !== 'Paused — low bandwidth' || paused.pausedForBandwidth !== true
    || resumed.marked || resumed.overlay !== null || resumed.pausedForBandwidth !== false) {
    fail('track-paused marks the tile', `alice's tile of bob: ${JSON.stringify(pause)}`);
  }
  pass('track-paused marks the tile', `bob's tile on alice: .paused-bandwidth and "${paused.overlay}" while paused, neither after track-resumed`);
  const { audioPaused, audioResumed } = pause;
  if (!audioPaused.audioMarked || audioPaused.marked || audioPaused.overlay !== 'Audio paused — low bandwidth' || audioPaused.kind !== 'audio'
    || audioPaused.pausedForBandwidth !== false || audioResumed.audioMarked || audioResumed.overlay !== null) {
    fail('an audio pause marks the tile as such', `alice's tile of bob: ${JSON.stringify({ audioPaused, audioResumed })}`);
  }
  pass('an audio pause marks the tile as such', `.audio-paused-bandwidth and "${audioPaused.overlay}" (video not marked), neither after track-resumed`);

  // Housekeeping checks.
  const reconnects = remaining.map((p) => `${p.name}=${p.samples.at(-1)?.reconnects}`);
  if (remaining.some((p) => (p.samples.at(-1)?.reconnects ?? 0) > 0)) {
    fail('no reconnects', `sessions reconnected during the test: ${reconnects.join(' ')}`);
  }
  pass('no reconnects');
  if (pageErrors.length) fail('no uncaught page errors', pageErrors.join(' | '));
  pass('no uncaught page errors');
  const later = checks.filter((c) => !c.ok);
  if (later.length) throw new TestFailure(later.map((c) => `${c.name}: ${c.note}`).join('; '));
}

async function cleanup() {
  if (browser) {
    const b = browser;
    browser = null;
    await Promise.race([b.close().catch(() => {}), sleep(5000)]);
  }
  if (server && serverExit === null) {
    const s = server;
    s.kill('SIGTERM');
    const deadline = Date.now() + 5000;
    while (serverExit === null && Date.now() < deadline) await sleep(50);
    if (serverExit === null) s.kill('SIGKILL');
  }
  try { fs.writeFileSync(consoleLogPath, consoleLines.join('\n') + '\n'); } catch { /* best effort */ }
}

function report(error) {
  const failed = checks.filter((c) => !c.ok).length + (error && !checks.some((c) => !c.ok) ? 1 : 0);
  const passed = checks.filter((c) => c.ok).length;
  if (error) {
    console.error(`\ne2e FAILED: ${error instanceof TestFailure ? error.message : error?.stack ?? error}`);
    for (const [name, s] of lastSamples) console.error(`  last sample ${name}: ${describe(s)}`);
    if (pageErrors.length) console.error(`  page errors:\n    ${pageErrors.join('\n    ')}`);
    console.error(`\n--- browser console (last 40 lines; all in ${consoleLogPath}) ---\n${consoleLines.slice(-40).join('\n')}`);
    console.error(`\n--- server log (last 60 lines of ${serverLogPath}) ---\n${tail(serverLogPath, 60)}\n`);
  } else {
    console.log(`e2e: logs in ${tmpDir}`);
  }
  console.log(`e2e: ${passed} passed, ${failed} failed`);
}

const watchdog = setTimeout(async () => {
  console.error(`e2e FAILED: the whole test exceeded ${TOTAL_BUDGET_MS / 1000} s`);
  report(new TestFailure('overall time budget exceeded'));
  await cleanup();
  process.exit(1);
}, TOTAL_BUDGET_MS);

let error = null;
try {
  await run();
} catch (e) {
  error = e;
}
clearTimeout(watchdog);
if (error && serverExit !== null && !(error instanceof TestFailure && error.message.includes('exited'))) {
  error = new TestFailure(`${error.message ?? error} (the server had exited: ${serverExit})`);
}
await cleanup();
report(error);
process.exit(error ? 1 : 0);
