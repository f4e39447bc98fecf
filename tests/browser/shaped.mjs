// Shaped-network end-to-end test: what participants see when one of them has a slow downlink.
//
// Run through shaped.sh (needs root), which builds the namespaces (netns.sh) and starts this
// script inside the server's namespace:
//
//   bash tests/browser/shaped.sh
//   SHAPED_REPORT_ONLY=1 bash tests/browser/shaped.sh     # print the numbers, never fail on them
//   SHAPED_ENFORCE=2 bash tests/browser/shaped.sh         # fail only on scenario 2's criteria
//   CONFAB_BIN=target/release/confab bash tests/browser/shaped.sh
//
// Three Chromium *processes* (b1, b2, b3), each in its own network namespace with its own veth to
// the server's bridge, join one room. The server→browser direction of b1's link is capped with
// tc tbf on the server side of its veth. Scenarios, each measured from RTCPeerConnection.getStats()
// in every page, per remote participant:
//   1. uncapped baseline;
//   2. b1's downlink capped at 300 kbit/s: b1 should still see smooth (lower-quality) video and
//      clean audio from everyone, while uncapped b2 keeps full resolution;
//   3. the cap lifted: how long until b1 gets full resolution again;
//   4. b1's downlink capped at 60 kbit/s: b1's video should be paused (tile `.paused-bandwidth`,
//      or no frames), its audio clean, and b2/b3 unaffected.
// Exits 1 when a criterion fails (unless SHAPED_REPORT_ONLY=1) or when the harness itself finds
// the set-up broken (no join, media not over the veths): those fail even in report-only mode.

import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';
import {
  CHROMIUM, CHROMIUM_ARGS, ROOT, ServerProcess, TestFailure, runWithBudget, secs, serveClientFrom, sleep, tail,
} from './lib.mjs';

// ------------------------------------------------------------------ pass criteria

/** Decoded frames per second a viewer must get from each remote. */
const MIN_FPS = 12;
/** "Full resolution": the decoded frameWidth (median over the window). */
const MIN_WIDTH = 640;
/** Freezes (Chromium's freezeCount) per remote over the capped window. */
const MAX_FREEZES = 1;
/** Audio concealment (concealedSamples / totalSamplesReceived) under the 300 kbit/s cap. */
const MAX_CONCEALMENT_CAPPED = 0.02;
/** Audio concealment under the 60 kbit/s cap (video paused). */
const MAX_CONCEALMENT_PAUSED = 0.03;
/** After the cap is lifted: time until b1 gets every remote at MIN_WIDTH and MIN_FPS again. */
const MAX_RECOVERY_MS = 10_000;
/** A video counts as paused if its tile has `.paused-bandwidth` in this share of the samples
 * (or if no frame at all was decoded in the window). */
const PAUSED_MIN_SHARE = 0.9;

// ------------------------------------------------------------------ scenario shape

const CAP_LOW = '300kbit';
const CAP_PAUSE = '60kbit';
const BASELINE_SETTLE_MS = 10_000; // Chromium's send-side estimate ramps up after the join
const BASELINE_WINDOW_MS = 20_000;
const CAPPED_SETTLE_MS = 10_000;
const CAPPED_WINDOW_MS = 30_000;
/** Scenario 3 keeps polling this long (beyond MAX_RECOVERY_MS) to report the actual time. */
const RECOVERY_TIMEOUT_MS = 20_000;
/** "Receiving at full resolution" is judged over this trailing interval. */
const RECOVERY_FPS_WINDOW_MS = 1_000;
const PAUSE_SETTLE_MS = 10_000;
const PAUSE_WINDOW_MS = 20_000;

// ------------------------------------------------------------------ harness

const NETNS_ID = process.env.SHAPED_NETNS_ID;
const NETNS_SH = process.env.SHAPED_NETNS_SH;
const BROWSERS = Number(process.env.SHAPED_BROWSERS || 3);
const REPORT_ONLY = process.env.SHAPED_REPORT_ONLY === '1';
// SHAPED_ENFORCE=2,4: only these scenarios' criteria fail the run (the others are reported);
// '2u' names scenario 2's criteria about the uncapped viewer, '2f' its freeze count.
// CI enforces what the server meets today; run without it to hold every criterion.
const ENFORCE = process.env.SHAPED_ENFORCE
  ? new Set(process.env.SHAPED_ENFORCE.split(',').map((x) => x.trim()))
  : null;
const enforced = (scenario) => !REPORT_ONLY && (!ENFORCE || ENFORCE.has(String(scenario)));
const CONFAB_BIN = path.resolve(ROOT, process.env.CONFAB_BIN || 'target/debug/confab');
const CLIENT_DIR = process.env.CONFAB_E2E_CLIENT_DIR ? path.resolve(ROOT, process.env.CONFAB_E2E_CLIENT_DIR) : null;
const SERVER_IP = '10.99.0.1';
const BASE_URL = `http://${SERVER_IP}:8080`;
const MEDIA_ADDR = `${SERVER_IP}:50000`;
const browserIp = (k) => `10.99.0.1${k}`;
/** Tiles must be large enough that a layer-selecting server sends full resolution: with 3 tiles
 * in a row, a 1600x900 window at device scale 2 shows each remote at about 1040 device px. */
const VIEWPORT = { width: 1600, height: 900 };
const DEVICE_SCALE = Number(process.env.SHAPED_DEVICE_SCALE || 2);

const TOTAL_BUDGET_MS = 240_000;
const HEALTH_TIMEOUT_MS = 30_000;
/** Every page must decode a first frame from every other within this (else the harness fails). */
const JOIN_TIMEOUT_MS = 30_000;
/** Then the scenarios wait (up to this long after page.goto) until every page decodes every
 * other at MIN_FPS over STEADY_OVER_MS; if that never happens they run anyway. */
const STEADY_TIMEOUT_MS = 45_000;
const STEADY_OVER_MS = 2_000;
const SAMPLE_MS = 500;
const EVALUATE_TIMEOUT_MS = 5_000;
/** Bytes on b's veth vs. RTP bytes b's page counts: at least this share must be on the wire. */
const MIN_WIRE_SHARE = 0.9;
/** Above this share of the machine's CPU in a window, its numbers get a warning. */
const CPU_WARN_SHARE = 0.95;
/** totalSamplesReceived grows at the playout rate (48 kHz for Opus) while the audio is played. */
const MIN_AUDIO_SAMPLES_PER_SEC = 8_000;

const run = promisify(execFile);
const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'confab-shaped-'));
const serverLogPath = path.join(tmpDir, 'server.log');
const startedAt = Date.now();
const log = (msg) => console.log(`shaped [${secs(Date.now() - startedAt).padStart(8)}] ${msg}`);

const server = new ServerProcess({
  bin: CONFAB_BIN,
  logPath: serverLogPath,
  env: {
    CONFAB_HTTP__BIND: `${SERVER_IP}:8080`,
    CONFAB_MEDIA__BIND: MEDIA_ADDR,
    RUST_LOG: process.env.SHAPED_RUST_LOG || 'info',
  },
});

/** @type {{scenario: string, what: string, ok: boolean, detail: string}[]} */
const criteria = [];
/** One line per scenario for the final summary. */
const summary = [];
/** Cap changes and phase starts, ms since the start (written to samples.json). */
const events = [];
const event = (what) => events.push({ t: Date.now() - startedAt, what });

function criterion(scenario, what, ok, detail) {
  criteria.push({ scenario, what, ok, detail });
  log(`  ${ok ? 'pass' : enforced(scenario) ? 'FAIL' : 'FAIL (report only)'} ${what}: ${detail}`);
}

// ------------------------------------------------------------------ links (tc, ip)

async function netns(...args) {
  await run('bash', [NETNS_SH, ...args], { timeout: 10_000 });
}

/** @returns {Promise<number>} ms at which the new cap is in force */
async function setCap(k, rate) {
  if (rate) await netns('cap', NETNS_ID, String(k), rate);
  else await netns('uncap', NETNS_ID, String(k));
  event(`b${k} ${rate ? `capped at ${rate}` : 'uncapped'}`);
  return Date.now();
}

/**
 * Per browser k: bytes and packets that left the server's namespace on vs<k> (i.e. reached
 * b<k>'s side of the link), and the root qdisc's counters. Also the machine's CPU counters.
 */
async function linkSnapshot() {
  const ns = `${NETNS_ID}-s`;
  const [links, qdiscs] = await Promise.all([
    run('ip', ['-n', ns, '-s', '-j', 'link', 'show'], { timeout: 5_000 }),
    run('tc', ['-n', ns, '-s', '-j', 'qdisc', 'show'], { timeout: 5_000 }),
  ]);
  const out = { at: Date.now(), cpu: cpuCounters(), nsCpu: await namespaceCpu(), links: {} };
  for (const l of JSON.parse(links.stdout)) {
    const m = /^vs(\d+)$/.exec(l.ifname);
    if (m) out.links[m[1]] = { bytes: l.stats64.tx.bytes, packets: l.stats64.tx.packets, qdisc: 'none', drops: 0, qPackets: 0 };
  }
  for (const q of JSON.parse(qdiscs.stdout)) {
    const m = /^vs(\d+)$/.exec(q.dev ?? '');
    if (m && q.root && out.links[m[1]]) Object.assign(out.links[m[1]], { qdisc: q.kind, drops: q.drops, qPackets: q.packets });
  }
  return out;
}

/** Busy and total jiffies of the whole machine (/proc/stat). */
function cpuCounters() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - f[3] - (f[4] ?? 0), total };
}

/** Sums `read(pid)` over the processes running in a namespace (processes that exit meanwhile count 0). */
async function sumOverNamespace(ns, read) {
  const { stdout } = await run('ip', ['netns', 'pids', ns], { timeout: 5_000 });
  let sum = 0;
  for (const pid of stdout.split(/\s+/).filter(Boolean)) {
    try {
      sum += read(pid);
    } catch { /* exited meanwhile */ }
  }
  return sum;
}

/** Proportional memory (PSS) of everything running in a namespace, in GiB. */
async function namespacePss(ns) {
  const kib = await sumOverNamespace(ns, (pid) => Number(/^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0));
  return kib / 1024 / 1024;
}

/** CPU time (user + system, in clock ticks of 1/100 s) of the server, of this node process and
 * of each browser (everything in its namespace). */
async function namespaceCpu() {
  const ticks = (pid) => {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return Number(f[11]) + Number(f[12]);
  };
  const names = Array.from({ length: BROWSERS }, (_, i) => `b${i + 1}`);
  const values = await Promise.all(names.map((n) => sumOverNamespace(`${NETNS_ID}-${n}`, ticks)));
  const own = process.cpuUsage();
  let serverTicks = 0;
  try {
    serverTicks = ticks(server.proc?.pid);
  } catch { /* exited */ }
  return { server: serverTicks, node: (own.user + own.system) / 10_000, ...Object.fromEntries(names.map((n, i) => [n, values[i]])) };
}

// ------------------------------------------------------------------ pages

/**
 * Runs in the page: session state, the selected ICE path, every inbound RTP stream (with its
 * publisher's display name) and each remote tile's size and bandwidth pause. Reads only
 * RTCPeerConnection.getStats() and the DOM, so it works with any client version that exposes
 * `window.confab.session`.
 */
async function sampleInPage() {
  const c = /** @type {any} */ (window).confab;
  const s = c?.session;
  const pc = s?.pc;
  const nameOf = (id) => (id && s?.participants.get(id)?.name) ?? null;
  const out = {
    state: s?.state ?? 'none',
    pcState: pc?.connectionState ?? 'none',
    participantId: s?.participantId ?? null,
    reconnects: s?.reconnects ?? 0,
    path: null,
    inbound: [],
    outbound: [],
    tiles: {},
  };
  if (pc) {
    const stats = await pc.getStats();
    let pairId = null;
    stats.forEach((r) => {
      if (r.type === 'transport' && r.selectedCandidatePairId) pairId = r.selectedCandidatePairId;
      if (r.type === 'outbound-rtp' && r.kind === 'video') {
        // What this page sends (one entry per simulcast layer): explains what the others get.
        out.outbound.push({
          id: r.id,
          rid: r.rid ?? '',
          bytes: r.bytesSent ?? 0,
          frames: r.framesEncoded ?? 0,
          width: r.frameWidth ?? 0,
          height: r.frameHeight ?? 0,
          limited: r.qualityLimitationDurations ?? {},
        });
      }
      if (r.type !== 'inbound-rtp' || (r.kind !== 'video' && r.kind !== 'audio')) return;
      out.inbound.push({
        id: r.id,
        kind: r.kind,
        track: r.trackIdentifier,
        owner: nameOf(s.participantForTrack(r.trackIdentifier)),
        bytes: r.bytesReceived ?? 0,
        packets: r.packetsReceived ?? 0,
        lost: r.packetsLost ?? 0,
        frames: r.framesDecoded ?? 0,
        width: r.frameWidth ?? 0,
        freezes: r.freezeCount ?? 0,
        frozen: r.totalFreezesDuration ?? 0,
        pauses: r.pauseCount ?? 0,
        concealed: r.concealedSamples ?? 0,
        samples: r.totalSamplesReceived ?? 0,
      });
    });
    const pair = pairId && stats.get(pairId);
    const local = pair && stats.get(pair.localCandidateId);
    const remote = pair && stats.get(pair.remoteCandidateId);
    if (local && remote) out.path = { local: local.address, remote: `${remote.address}:${remote.port}` };
  }
  for (const tile of document.querySelectorAll('.tile:not(.local)')) {
    const name = nameOf(/** @type {HTMLElement} */ (tile).dataset.participantId);
    if (!name) continue;
    const video = tile.querySelector('video');
    out.tiles[name] = {
      videoWidth: video?.videoWidth ?? 0,
      cssWidth: video?.clientWidth ?? 0,
      cssHeight: video?.clientHeight ?? 0,
      paused: tile.classList.contains('paused-bandwidth'),
    };
  }
  return out;
}

class Peer {
  /** @param {number} k */
  constructor(k) {
    this.k = k;
    this.name = `b${k}`;
    this.ns = `${NETNS_ID}-b${k}`;
    this.wrapper = path.join(tmpDir, `chromium-b${k}`);
    /** @type {import('playwright-core').Browser | null} */
    this.browser = null;
    /** @type {import('playwright-core').Page | null} */
    this.page = null;
    /** @type {any[]} */
    this.samples = [];
    /** inbound stream's trackIdentifier → publisher name, kept when the SDK forgets it */
    this.owners = new Map();
    /** console errors and warnings, uncaught exceptions */
    this.problems = /** @type {string[]} */ ([]);
  }

  async open() {
    await netns('wrapper', NETNS_ID, String(this.k), CHROMIUM, this.wrapper);
    this.browser = await chromium.launch({
      executablePath: this.wrapper,
      headless: true,
      timeout: 30_000,
      args: [...CHROMIUM_ARGS, `--unsafely-treat-insecure-origin-as-secure=${BASE_URL}`],
    });
    const context = await this.browser.newContext({ viewport: VIEWPORT, deviceScaleFactor: DEVICE_SCALE });
    if (CLIENT_DIR) await serveClientFrom(context, BASE_URL, CLIENT_DIR);
    this.page = await context.newPage();
    this.page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') this.problems.push(`${m.type()}: ${m.text()}`);
    });
    this.page.on('pageerror', (e) => this.problems.push(`uncaught: ${e.message}`));
  }

  async goto(room) {
    await this.page.goto(`${BASE_URL}/?room=${room}&name=${this.name}`, { waitUntil: 'domcontentloaded', timeout: 15_000 });
  }

  async sample() {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${EVALUATE_TIMEOUT_MS} ms`)), EVALUATE_TIMEOUT_MS);
    });
    let s;
    try {
      s = await Promise.race([this.page.evaluate(sampleInPage), timeout]);
    } catch (e) {
      throw new TestFailure(`${this.name}: cannot read the page: ${e.message}`);
    } finally {
      clearTimeout(timer);
    }
    s.at = Date.now();
    for (const r of s.inbound) {
      if (r.owner) this.owners.set(r.track, r.owner);
      else r.owner = this.owners.get(r.track) ?? null;
    }
    this.samples.push(s);
    return s;
  }

  /** Samples taken in [from, to]. */
  between(from, to) {
    return this.samples.filter((s) => s.at >= from && s.at <= to);
  }

  async close() {
    const b = this.browser;
    this.browser = null;
    if (b) await Promise.race([b.close().catch(() => {}), sleep(5_000)]);
  }
}

const median = (xs) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

/** The decoded width of a remote's (most advanced) video stream in one sample. */
function widthIn(sample, remote) {
  let best = null;
  for (const r of sample.inbound) {
    if (r.kind === 'video' && r.owner === remote && (!best || r.frames > best.frames)) best = r;
  }
  return best ? best.width : 0;
}

/**
 * What a viewer got from one remote over a run of samples (first → last). Counter deltas are
 * taken per stream (a stream that appears meanwhile counts from zero) and summed per publisher.
 */
function remoteMetrics(samples, remote) {
  const a = samples[0];
  const b = samples.at(-1);
  const dt = (b.at - a.at) / 1000;
  const before = new Map(a.inbound.map((r) => [r.id, r]));
  const d = { frames: 0, vbytes: 0, freezes: 0, frozen: 0, pauses: 0, concealed: 0, samples: 0, alost: 0, apackets: 0 };
  for (const r of b.inbound) {
    if (r.owner !== remote) continue;
    const p = before.get(r.id);
    const delta = (key) => r[key] - (p?.[key] ?? 0);
    if (r.kind === 'video') {
      d.frames += delta('frames');
      d.vbytes += delta('bytes');
      d.freezes += delta('freezes');
      d.frozen += delta('frozen');
      d.pauses += delta('pauses');
    } else {
      d.concealed += delta('concealed');
      d.samples += delta('samples');
      d.alost += delta('lost');
      d.apackets += delta('packets');
    }
  }
  const widths = samples.map((s) => widthIn(s, remote));
  return {
    seconds: dt,
    fps: d.frames / dt,
    frames: d.frames,
    widthMedian: median(widths),
    widthMin: Math.min(...widths),
    freezes: d.freezes,
    frozen: d.frozen,
    pauses: d.pauses,
    videoKbps: (d.vbytes * 8) / dt / 1000,
    audioLoss: d.alost + d.apackets > 0 ? d.alost / (d.alost + d.apackets) : NaN,
    concealment: d.samples > 0 ? d.concealed / d.samples : NaN,
    pausedShare: samples.filter((s) => s.tiles[remote]?.paused).length / samples.length,
    audioSamplesPerSec: d.samples / dt,
  };
}

// ------------------------------------------------------------------ sampling loop

let sampling = false;
/** @type {Error | null} */
let samplerError = null;

async function sampler(peers) {
  sampling = true;
  while (sampling) {
    const tick = Date.now();
    try {
      await Promise.all(peers.map((p) => p.sample()));
    } catch (e) {
      samplerError = e;
      return;
    }
    await sleep(Math.max(0, SAMPLE_MS - (Date.now() - tick)));
  }
}

/** Waits `ms` while the pages are sampled, failing early if the server or a page broke. */
async function watch(ms) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    server.assertAlive();
    if (samplerError) throw samplerError;
    await sleep(Math.min(200, until - Date.now()));
  }
  server.assertAlive();
  if (samplerError) throw samplerError;
}

// ------------------------------------------------------------------ reporting

const f1 = (x) => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');
const pct = (x) => (Number.isFinite(x) ? `${(x * 100).toFixed(1)}` : 'n/a');

function printTable(title, rows) {
  const head = ['viewer<-remote', 'fps', 'width med/min', 'freezes', 'frozen s', 'pauses', 'video kbit/s', 'audio loss %', 'conceal %', 'paused %'];
  const body = rows.map(({ viewer, remote, m }) => [
    `${viewer}<-${remote}`, f1(m.fps), `${m.widthMedian}/${m.widthMin}`, String(m.freezes), f1(m.frozen), String(m.pauses),
    m.videoKbps.toFixed(0), pct(m.audioLoss), pct(m.concealment), (m.pausedShare * 100).toFixed(0),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => r[i].length)));
  const line = (cells) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  console.log(`\n${title}\n  ${line(head)}\n${body.map((r) => `  ${line(r)}`).join('\n')}`);
}

function linkLine(a, b) {
  const dt = (b.at - a.at) / 1000;
  const parts = Object.keys(b.links).map((k) => {
    const x = a.links[k];
    const y = b.links[k];
    const kbps = ((y.bytes - x.bytes) * 8) / dt / 1000;
    const sent = y.packets - x.packets;
    const drops = y.qdisc === x.qdisc ? y.drops - x.drops : y.drops;
    const q = y.qdisc === 'tbf' ? `, tbf dropped ${drops} of ${sent + drops} packets (${pct(drops / Math.max(1, sent + drops))} %)` : '';
    return `vs${k} ${kbps.toFixed(0)} kbit/s${q}`;
  });
  const cpu = (b.cpu.busy - a.cpu.busy) / Math.max(1, b.cpu.total - a.cpu.total);
  // /proc/stat and /proc/<pid>/stat both count in USER_HZ (100 per second on Linux).
  const nsCpu = Object.keys(b.nsCpu).map((n) => `${n} ${(((b.nsCpu[n] - a.nsCpu[n]) / 100 / dt) * 100).toFixed(0)} %`);
  return `  server->browser on the wire: ${parts.join('; ')}\n`
    + `  CPU (100 % = one core): ${nsCpu.join(', ')}; whole machine busy ${pct(cpu)} % of ${os.cpus().length} cores`;
}

/**
 * What one page sent over a run of samples, per encoding: frame size at the end, fps, bit rate,
 * and the share of the time libwebrtc limited the quality for CPU or for bandwidth.
 */
function senderLine(samples) {
  const a = samples[0];
  const b = samples.at(-1);
  const dt = (b.at - a.at) / 1000;
  const before = new Map(a.outbound.map((r) => [r.id, r]));
  const parts = b.outbound.map((r) => {
    const p = before.get(r.id);
    const lim = (k) => (r.limited[k] ?? 0) - (p?.limited[k] ?? 0);
    const total = ['none', 'cpu', 'bandwidth', 'other'].reduce((sum, k) => sum + lim(k), 0);
    const share = (k) => (total > 0 ? `${((lim(k) / total) * 100).toFixed(0)}` : 'n/a');
    return `${r.rid ? `${r.rid} ` : ''}${r.width}x${r.height} ${f1((r.frames - (p?.frames ?? 0)) / dt)} fps `
      + `${((((r.bytes - (p?.bytes ?? 0)) * 8) / dt) / 1000).toFixed(0)} kbit/s (limited: cpu ${share('cpu')} %, bandwidth ${share('bandwidth')} %)`;
  });
  return parts.length ? parts.join('; ') : 'nothing';
}

/** Samples every page over `windowMs`; prints the table; returns per viewer → remote metrics. */
async function measureWindow(peers, title, windowMs) {
  const linksA = await linkSnapshot();
  const from = Date.now();
  event(`window: ${title}`);
  await watch(windowMs);
  const to = Date.now();
  const linksB = await linkSnapshot();
  /** @type {Record<string, Record<string, ReturnType<typeof remoteMetrics>>>} */
  const result = {};
  const rows = [];
  for (const p of peers) {
    const samples = p.between(from, to);
    if (samples.length < 2) throw new TestFailure(`${p.name}: only ${samples.length} samples in the ${title} window`);
    result[p.name] = {};
    for (const o of peers) {
      if (o === p) continue;
      const m = remoteMetrics(samples, o.name);
      result[p.name][o.name] = m;
      rows.push({ viewer: p.name, remote: o.name, m });
    }
  }
  printTable(`${title} (window ${secs(to - from)})`, rows);
  for (const p of peers) console.log(`  ${p.name} sends ${senderLine(p.between(from, to))}`);
  console.log(linkLine(linksA, linksB));
  const busy = (linksB.cpu.busy - linksA.cpu.busy) / Math.max(1, linksB.cpu.total - linksA.cpu.total);
  if (busy > CPU_WARN_SHARE) {
    console.log(`  WARNING: the machine was ${pct(busy)} % busy: frame rates and sizes above may be limited by CPU, not by the network`);
  }
  const states = peers.map((p) => {
    const first = p.between(from, to)[0];
    const last = p.samples.at(-1);
    return `${p.name} pc=${last.pcState} session=${last.state} reconnects+${last.reconnects - first.reconnects}`;
  });
  console.log(`  ${states.join('; ')}`);
  return { result, linksA, linksB };
}

// ------------------------------------------------------------------ the test

async function runTest() {
  if (!NETNS_ID || !NETNS_SH) throw new TestFailure('run me through tests/browser/shaped.sh (it makes the namespaces)');
  log(`server ${CONFAB_BIN}${CLIENT_DIR ? `, web client from ${CLIENT_DIR}` : ''}; logs in ${tmpDir}`);
  log(`machine: ${os.cpus().length} cores, load average ${os.loadavg().map((x) => x.toFixed(1)).join(' ')} at the start`);
  const tbf = (await run('bash', [NETNS_SH, 'describe'], { timeout: 5_000 })).stdout.trim();
  log(`namespaces ${NETNS_ID}-{s,b1..b${BROWSERS}}; caps use ${tbf} (netns.sh; SHAPED_TBF_BURST, SHAPED_TBF_LATENCY)`);
  server.start();
  await server.waitHealthy(BASE_URL, HEALTH_TIMEOUT_MS);
  log('server healthy');

  const peers = Array.from({ length: BROWSERS }, (_, i) => new Peer(i + 1));
  openPeers = peers;
  await Promise.all(peers.map((p) => p.open()));
  log(`${peers.length} Chromium ${peers[0].browser.version()} processes launched, one per namespace`);
  const room = `shaped-${process.pid}`;
  const joinStart = Date.now();
  await Promise.all(peers.map((p) => p.goto(room)));
  const samplerDone = sampler(peers);

  // Everyone decodes everyone (harness check: fails even in report-only mode), then steadily.
  const decoding = (p, minFps, overMs) => {
    const recent = p.samples.at(-1);
    const older = recent && p.samples.findLast((s) => s.at <= recent.at - overMs);
    return !!older && peers.every((o) => {
      if (o === p) return true;
      const m = remoteMetrics([older, recent], o.name);
      return m.frames > 0 && m.fps >= minFps;
    });
  };
  const firstAt = new Map();
  const steadyAt = new Map();
  while (steadyAt.size < peers.length && Date.now() < joinStart + STEADY_TIMEOUT_MS) {
    for (const p of peers) {
      if (!firstAt.has(p.name) && decoding(p, 0, SAMPLE_MS)) firstAt.set(p.name, Date.now() - joinStart);
      if (!steadyAt.has(p.name) && decoding(p, MIN_FPS, STEADY_OVER_MS)) steadyAt.set(p.name, Date.now() - joinStart);
    }
    if (firstAt.size < peers.length && Date.now() > joinStart + JOIN_TIMEOUT_MS) {
      throw new TestFailure(`not every page decodes both others within ${JOIN_TIMEOUT_MS / 1000} s: `
        + peers.filter((p) => !firstAt.has(p.name)).map((p) => p.name).join(', '));
    }
    await watch(SAMPLE_MS);
  }
  const joinTimes = (m) => peers.map((p) => `${p.name} ${m.has(p.name) ? secs(m.get(p.name)) : `> ${secs(STEADY_TIMEOUT_MS)}`}`).join(', ');
  log(`every page decodes both others; after page.goto (polled every ${SAMPLE_MS} ms), first frames of both: ${joinTimes(firstAt)}; `
    + `both at >= ${MIN_FPS} fps over ${secs(STEADY_OVER_MS)}: ${joinTimes(steadyAt)}`);
  const tile = Object.values(peers[0].samples.at(-1).tiles)[0];
  log(`remote tiles are ${tile?.cssWidth}x${tile?.cssHeight} CSS px at device scale ${DEVICE_SCALE} (viewport ${VIEWPORT.width}x${VIEWPORT.height})`);
  if (steadyAt.size < peers.length) log(`WARNING: not every page decodes steadily after ${secs(STEADY_TIMEOUT_MS)}; measuring anyway`);
  summary.push(['0 join', 'every viewer', `both remotes steady after ${joinTimes(steadyAt)}`]);
  for (const p of peers) {
    const pathNow = p.samples.at(-1).path;
    if (!pathNow || pathNow.local !== browserIp(p.k) || pathNow.remote !== MEDIA_ADDR) {
      throw new TestFailure(`${p.name}'s selected ICE pair is ${JSON.stringify(pathNow)}, not ${browserIp(p.k)} -> ${MEDIA_ADDR}: media would bypass its veth`);
    }
  }
  log(`ICE paths: ${peers.map((p) => `${p.name} ${p.samples.at(-1).path.local} -> ${p.samples.at(-1).path.remote}`).join(', ')}`);

  const b1 = peers[0];
  const others = peers.slice(1);
  const remotesOf = (p) => peers.filter((o) => o !== p).map((o) => o.name);

  // 1. Baseline.
  await watch(BASELINE_SETTLE_MS);
  const s1 = await measureWindow(peers, 'scenario 1: uncapped baseline', BASELINE_WINDOW_MS);
  for (const p of peers) {
    // Harness check: what the page received crossed its veth (so a cap on the veth applies).
    const rtpBytes = remotesOf(p).reduce((sum, r) => {
      const m = s1.result[p.name][r];
      return sum + (m.videoKbps * 1000 * m.seconds) / 8;
    }, 0);
    const wire = s1.linksB.links[p.k].bytes - s1.linksA.links[p.k].bytes;
    if (wire < MIN_WIRE_SHARE * rtpBytes) {
      throw new TestFailure(`${p.name}: only ${wire} bytes left the server on vs${p.k} while the page received ${rtpBytes.toFixed(0)} bytes of video: media bypasses the veth`);
    }
    // Harness check: concealment means something only if the page plays the audio out.
    for (const r of remotesOf(p)) {
      const rate = s1.result[p.name][r].audioSamplesPerSec;
      if (!(rate >= MIN_AUDIO_SAMPLES_PER_SEC)) {
        throw new TestFailure(`${p.name}<-${r}: audio played out at ${f1(rate)} samples/s: concealment cannot be measured`);
      }
    }
  }
  for (const p of peers) {
    for (const r of remotesOf(p)) {
      const m = s1.result[p.name][r];
      criterion('1', `${p.name}<-${r} smooth at full resolution`,
        m.fps >= MIN_FPS && m.widthMedian >= MIN_WIDTH && m.concealment <= MAX_CONCEALMENT_CAPPED,
        `${f1(m.fps)} fps (>= ${MIN_FPS}), median frameWidth ${m.widthMedian} (>= ${MIN_WIDTH}), `
        + `concealment ${pct(m.concealment)} % (<= ${pct(MAX_CONCEALMENT_CAPPED)})`);
    }
  }
  summary.push(['1 baseline', 'every viewer', summarize(s1.result, peers.map((p) => p.name))]);
  const mem = await Promise.all(peers.map((p) => namespacePss(p.ns)));
  log(`memory (PSS): ${peers.map((p, i) => `${p.name} ${mem[i].toFixed(2)} GiB`).join(', ')}`);

  // 2. b1 capped at CAP_LOW.
  await setCap(1, CAP_LOW);
  log(`b1's downlink capped at ${CAP_LOW}`);
  await watch(CAPPED_SETTLE_MS);
  const s2 = await measureWindow(peers, `scenario 2: b1's downlink capped at ${CAP_LOW}`, CAPPED_WINDOW_MS);
  for (const r of remotesOf(b1)) {
    const m = s2.result.b1[r];
    criterion('2', `b1<-${r} decoded >= ${MIN_FPS} fps`, m.fps >= MIN_FPS, `${f1(m.fps)} fps`);
    criterion('2f', `b1<-${r} freezes <= ${MAX_FREEZES}`, m.freezes <= MAX_FREEZES, `${m.freezes} freezes, ${f1(m.frozen)} s frozen`);
    criterion('2', `b1<-${r} audio concealment <= ${pct(MAX_CONCEALMENT_CAPPED)} %`, m.concealment <= MAX_CONCEALMENT_CAPPED, `${pct(m.concealment)} %`);
  }
  const b2 = peers[1];
  for (const r of remotesOf(b2)) {
    const m = s2.result.b2[r];
    // '2u': the uncapped viewer's half of scenario 2 (enforceable apart from the capped one).
    criterion('2u', `b2<-${r} full resolution`, m.widthMedian >= MIN_WIDTH && m.fps >= MIN_FPS,
      `median frameWidth ${m.widthMedian} (>= ${MIN_WIDTH}) at ${f1(m.fps)} fps (>= ${MIN_FPS})`);
  }
  summary.push([`2 cap ${CAP_LOW}`, 'b1', summarize({ b1: s2.result.b1 }, ['b1'])]);
  summary.push(['', 'b2, b3', summarize(Object.fromEntries(others.map((p) => [p.name, s2.result[p.name]])), others.map((p) => p.name))]);

  // 3. Cap lifted: time to full resolution again.
  const liftedAt = await setCap(1, null);
  log('b1\'s cap lifted');
  /** @type {Map<string, number>} remote → ms after the tc change */
  const recovered = new Map();
  const recoveryDeadline = liftedAt + RECOVERY_TIMEOUT_MS;
  while (recovered.size < remotesOf(b1).length && Date.now() < recoveryDeadline) {
    await watch(SAMPLE_MS);
    const last = b1.samples.at(-1);
    const older = b1.samples.findLast((s) => s.at <= last.at - RECOVERY_FPS_WINDOW_MS && s.at >= liftedAt);
    if (!older) continue;
    for (const r of remotesOf(b1)) {
      if (recovered.has(r)) continue;
      const m = remoteMetrics([older, last], r);
      if (m.fps >= MIN_FPS && widthIn(last, r) >= MIN_WIDTH) recovered.set(r, last.at - liftedAt);
    }
  }
  console.log(`\nscenario 3: b1's cap lifted — time from the tc change until b1 decodes the remote at >= ${MIN_WIDTH} px wide and >= ${MIN_FPS} fps over the last ${secs(RECOVERY_FPS_WINDOW_MS)} (polled every ${SAMPLE_MS} ms)`);
  for (const r of remotesOf(b1)) {
    const ms = recovered.get(r);
    console.log(`  b1<-${r}: ${ms === undefined ? `not within ${secs(RECOVERY_TIMEOUT_MS)}` : secs(ms)}`);
    criterion('3', `b1<-${r} back to full resolution within ${secs(MAX_RECOVERY_MS)}`, ms !== undefined && ms <= MAX_RECOVERY_MS,
      ms === undefined ? `not within ${secs(RECOVERY_TIMEOUT_MS)}` : secs(ms));
  }
  summary.push(['3 cap lifted', 'b1', remotesOf(b1).map((r) => `<-${r} ${recovered.has(r) ? secs(recovered.get(r)) : `> ${secs(RECOVERY_TIMEOUT_MS)}`}`).join(', ')]);

  // 4. b1 capped at CAP_PAUSE: its video should pause, its audio stay clean, the others unharmed.
  await setCap(1, CAP_PAUSE);
  log(`b1's downlink capped at ${CAP_PAUSE}`);
  await watch(PAUSE_SETTLE_MS);
  const s4 = await measureWindow(peers, `scenario 4: b1's downlink capped at ${CAP_PAUSE}`, PAUSE_WINDOW_MS);
  await setCap(1, null);
  for (const r of remotesOf(b1)) {
    const m = s4.result.b1[r];
    const paused = m.pausedShare >= PAUSED_MIN_SHARE || m.frames === 0;
    criterion('4', `b1<-${r} video paused`, paused,
      `tile .paused-bandwidth in ${(m.pausedShare * 100).toFixed(0)} % of samples (>= ${PAUSED_MIN_SHARE * 100}), ${m.frames} frames decoded`);
    criterion('4', `b1<-${r} audio concealment <= ${pct(MAX_CONCEALMENT_PAUSED)} %`, m.concealment <= MAX_CONCEALMENT_PAUSED, `${pct(m.concealment)} %`);
  }
  for (const p of others) {
    for (const r of remotesOf(p)) {
      const m = s4.result[p.name][r];
      criterion('4', `${p.name}<-${r} unaffected`, m.fps >= MIN_FPS && m.widthMedian >= MIN_WIDTH,
        `${f1(m.fps)} fps (>= ${MIN_FPS}), median frameWidth ${m.widthMedian} (>= ${MIN_WIDTH})`);
    }
  }
  const pausedShares = remotesOf(b1).map((r) => `<-${r} paused ${(s4.result.b1[r].pausedShare * 100).toFixed(0)} %, ${s4.result.b1[r].frames} frames`);
  summary.push([`4 cap ${CAP_PAUSE}`, 'b1', `${pausedShares.join(', ')}; ${summarize({ b1: s4.result.b1 }, ['b1'])}`]);
  summary.push(['', 'b2, b3', summarize(Object.fromEntries(others.map((p) => [p.name, s4.result[p.name]])), others.map((p) => p.name))]);

  const memEnd = await Promise.all(peers.map((p) => namespacePss(p.ns)));
  log(`memory (PSS) at the end: ${peers.map((p, i) => `${p.name} ${memEnd[i].toFixed(2)} GiB`).join(', ')}`);
  sampling = false;
  await samplerDone;
}

/** Worst values over the given viewers' remotes: min fps, min median width, max freezes, max concealment. */
function summarize(result, viewers) {
  const ms = viewers.flatMap((v) => Object.values(result[v]));
  const minFps = Math.min(...ms.map((m) => m.fps));
  const minWidth = Math.min(...ms.map((m) => m.widthMedian));
  const maxFreezes = Math.max(...ms.map((m) => m.freezes));
  const maxConceal = Math.max(...ms.map((m) => (Number.isFinite(m.concealment) ? m.concealment : 1)));
  const kbps = ms.map((m) => m.videoKbps.toFixed(0)).join('/');
  return `min ${f1(minFps)} fps, min width ${minWidth}, max ${maxFreezes} freezes, max concealment ${pct(maxConceal)} %, video ${kbps} kbit/s`;
}

// ------------------------------------------------------------------ lifecycle

/** @type {Peer[]} */
let openPeers = [];
let cleaning = null;

function cleanup() {
  cleaning ??= (async () => {
    sampling = false;
    try {
      // Every sample of every page, for a closer look (ms since the start, raw counters).
      const dump = Object.fromEntries(openPeers.map((p) => [p.name, p.samples.map((x) => ({ ...x, t: x.at - startedAt }))]));
      fs.writeFileSync(path.join(tmpDir, 'samples.json'), JSON.stringify({ events, samples: dump }));
    } catch { /* best effort */ }
    await Promise.all(openPeers.map((p) => p.close()));
    await server.stop();
  })();
  return cleaning;
}

function reportFailure(error) {
  if (interrupted) return;
  console.error(`\nshaped FAILED: ${error instanceof TestFailure ? error.message : error?.stack ?? error}`);
  for (const p of openPeers) {
    const last = p.samples.at(-1);
    console.error(`\n--- ${p.name}: last sample ${last ? JSON.stringify({ state: last.state, pc: last.pcState, path: last.path, tiles: last.tiles }) : '(none)'}`);
    console.error(p.problems.length ? p.problems.slice(-20).join('\n') : '(no console errors)');
  }
  console.error(`\n--- server log (last 60 distinct lines of ${serverLogPath}) ---\n${tail(serverLogPath, 60, { distinct: true })}\n`);
}

function printSummary() {
  if (!summary.length) return;
  const w0 = Math.max(...summary.map((r) => r[0].length));
  const w1 = Math.max(...summary.map((r) => r[1].length));
  console.log(`\nsummary (${REPORT_ONLY ? 'report only' : 'criteria enforced'}):`);
  for (const [a, b, c] of summary) console.log(`  ${a.padEnd(w0)}  ${b.padEnd(w1)}  ${c}`);
  const failed = criteria.filter((c) => !c.ok);
  console.log(`\nshaped: ${criteria.length - failed.length} criteria passed, ${failed.length} failed${REPORT_ONLY && failed.length ? ' (report only: not an error)' : ''}`);
  for (const c of failed) console.log(`  failed: scenario ${c.scenario}: ${c.what}: ${c.detail}`);
  if (failed.some((c) => c.scenario === '1')) {
    console.log('  the uncapped baseline was not clean (busy machine?): the verdicts of scenarios 2-4 say little');
  }
}

/** Set on SIGINT/SIGTERM: the run is being stopped, so what breaks meanwhile is not a finding. */
let interrupted = false;

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, async () => {
    interrupted = true;
    console.error(`shaped: ${sig}, cleaning up`);
    await cleanup();
    process.exit(sig === 'SIGINT' ? 130 : 143);
  });
}

const error = server.explain(await runWithBudget(runTest, TOTAL_BUDGET_MS, async (failure) => {
  reportFailure(failure);
  await cleanup();
}));
if (interrupted) await new Promise(() => {}); // the signal handler cleans up and exits
printSummary();
const criteriaFailed = criteria.some((c) => !c.ok && enforced(c.scenario));
if (error || criteriaFailed) reportFailure(error ?? new TestFailure('pass criteria failed (see above)'));
await cleanup();
console.log(`shaped: logs in ${tmpDir}`);
process.exit(error || criteriaFailed ? 1 : 0);
