// End-to-end test: three headless-Chromium participants in one room through a real Confab server.
//
// Run inside a network namespace that has only loopback (see run.sh): Chromium then pairs
// 127.0.0.1 with the server's 127.0.0.1 candidate and nothing leaves the machine.
//
//   bash tests/browser/run.sh                      # = unshare -n sh -c 'ip link set lo up && node tests/browser/e2e.mjs'
//   CONFAB_BIN=target/release/confab bash tests/browser/run.sh
//
// Checks, in order:
//   1. the server answers /healthz;
//   2. alice, bob and carol (one browser, three contexts, opened together) each decode video
//      from both others (inbound-rtp framesDecoded rising, per publisher) and show it in a
//      <video> with videoWidth > 0;
//   3. after carol's page closes, alice and bob drop her tile and participant entry and stop
//      receiving her frames, while they keep decoding each other on a 'connected' PeerConnection;
//   4. no page threw an uncaught exception and no session had to reconnect.
// Prints time-to-first-remote-frame (page.goto start → first decoded remote frame) per page.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CONFAB_BIN = path.resolve(ROOT, process.env.CONFAB_BIN || 'target/debug/confab');
// Development aid: serve the web client's scripts and styles from this directory instead of the
// server's copy (which may be compiled into the binary), to test client edits without
// rebuilding. index.html still comes from the server.
const CLIENT_DIR = process.env.CONFAB_E2E_CLIENT_DIR ? path.resolve(ROOT, process.env.CONFAB_E2E_CLIENT_DIR) : null;
const HTTP_BIND = '127.0.0.1:8080';
const BASE_URL = `http://${HTTP_BIND}`;
const ROOM = 'e2e';
const NAMES = ['alice', 'bob', 'carol'];
const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--autoplay-policy=no-user-gesture-required',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
  '--disable-sync',
  '--disable-quic',
];

const TOTAL_BUDGET_MS = 90_000;
const HEALTH_TIMEOUT_MS = 30_000;
const MEDIA_TIMEOUT_MS = 20_000;
const LEAVE_TIMEOUT_MS = 10_000;
const POLL_MS = 100;
/** How long alice↔bob must keep decoding after carol is gone. */
const STEADY_MS = 2_000;

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
    this.page = await this.context.newPage();
    this.page.on('console', (m) => consoleLines.push(`[${this.name}] ${m.type()}: ${m.text()}`));
    this.page.on('pageerror', (e) => pageErrors.push(`[${this.name}] ${e.message}`));
  }

  async goto() {
    this.t0 = Date.now();
    const url = `${BASE_URL}/?room=${ROOM}&name=${encodeURIComponent(this.name)}`;
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

// ------------------------------------------------------------------ the test

async function run() {
  if (CLIENT_DIR) log(`serving the web client from ${CLIENT_DIR} (CONFAB_E2E_CLIENT_DIR), not from the server`);
  startServer();
  const healthStart = Date.now();
  await waitHealthy();
  pass('server healthy', `GET /healthz 200 after ${secs(Date.now() - healthStart)}`);

  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 });
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
  if (aliceGain <= 0 || bobGain <= 0) {
    fail('alice and bob keep decoding each other', `over ${elapsed.toFixed(1)} s after carol left: alice decoded ${aliceGain} frames from bob, bob ${bobGain} from alice`);
  }
  const aliceTile = alice.samples.at(-1)?.tiles[bobId]?.videoWidth ?? 0;
  const bobTile = bob.samples.at(-1)?.tiles[aliceId]?.videoWidth ?? 0;
  if (aliceTile <= 0 || bobTile <= 0) {
    fail('alice and bob keep decoding each other', `tile videoWidth: alice's bob tile ${aliceTile}, bob's alice tile ${bobTile}`);
  }
  pass('alice and bob keep decoding each other', `+${aliceGain} / +${bobGain} frames in ${elapsed.toFixed(1)} s, both PeerConnections 'connected'`);

  // Housekeeping checks.
  const reconnects = remaining.map((p) => `${p.name}=${p.samples.at(-1)?.reconnects}`);
  if (remaining.some((p) => (p.samples.at(-1)?.reconnects ?? 0) > 0)) {
    fail('no reconnects', `sessions reconnected during the test: ${reconnects.join(' ')}`);
  }
  pass('no reconnects');
  if (pageErrors.length) fail('no uncaught page errors', pageErrors.join(' | '));
  pass('no uncaught page errors');
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
