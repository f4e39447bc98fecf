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
//      or no frames); two voices do not fit either, so each remote's audio is clean or held back
//      (tile `.audio-paused-bandwidth`), and at least one is clean; b2/b3 unaffected.
// Exits 1 when a criterion fails (unless SHAPED_REPORT_ONLY=1) or when the harness itself finds
// the set-up broken (no join, media not over the veths): those fail even in report-only mode.

import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { promisify } from 'node:util';
import {
  NetnsTest, SAMPLE_MS, STEADY_OVER_MS, STEADY_TIMEOUT_MS, TestFailure, cpuCounters, cpuTicks, secs, sumOverNamespace,
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

const BROWSERS = Number(process.env.SHAPED_BROWSERS || 3);
const REPORT_ONLY = process.env.SHAPED_REPORT_ONLY === '1';
// SHAPED_ENFORCE=2,4: only these scenarios' criteria fail the run (the others are reported);
// '2u' names scenario 2's criteria about the uncapped viewer, '2f' its freeze count.
// CI enforces what the server meets today; run without it to hold every criterion.
const ENFORCE = process.env.SHAPED_ENFORCE
  ? new Set(process.env.SHAPED_ENFORCE.split(',').map((x) => x.trim()))
  : null;
const enforced = (scenario) => !REPORT_ONLY && (!ENFORCE || ENFORCE.has(String(scenario)));
/** Tiles must be large enough that a layer-selecting server sends full resolution: with 3 tiles
 * in a row, a 1600x900 window at device scale 2 shows each remote at about 1040 device px. */
const VIEWPORT = { width: 1600, height: 900 };
const DEVICE_SCALE = Number(process.env.SHAPED_DEVICE_SCALE || 2);

const TOTAL_BUDGET_MS = 240_000;
// The join (lib.mjs): every page must decode both others within JOIN_TIMEOUT_MS (else the harness
// fails); then the scenarios wait (up to STEADY_TIMEOUT_MS after page.goto) until every page
// decodes both others at MIN_FPS over STEADY_OVER_MS; if that never happens they run anyway.
/** Bytes on b's veth vs. RTP bytes b's page counts: at least this share must be on the wire. */
const MIN_WIRE_SHARE = 0.9;
/** Above this share of the machine's CPU in a window, its numbers get a warning. */
const CPU_WARN_SHARE = 0.95;
/** totalSamplesReceived grows at the playout rate (48 kHz for Opus) while the audio is played. */
const MIN_AUDIO_SAMPLES_PER_SEC = 8_000;

const run = promisify(execFile);
// The scratch directory, the server, the browsers, the sampling and the clean-up (lib.mjs).
const test = new NetnsTest({
  name: 'shaped', netnsId: process.env.SHAPED_NETNS_ID, netnsSh: process.env.SHAPED_NETNS_SH, rustLog: process.env.SHAPED_RUST_LOG,
});
const NETNS_ID = test.netnsId;
const log = (msg) => test.log(msg);

/** @type {{scenario: string, what: string, ok: boolean, detail: string}[]} */
const criteria = [];
/** One line per scenario for the final summary. */
const summary = [];

function criterion(scenario, what, ok, detail) {
  criteria.push({ scenario, what, ok, detail });
  log(`  ${ok ? 'pass' : enforced(scenario) ? 'FAIL' : 'FAIL (report only)'} ${what}: ${detail}`);
}

// ------------------------------------------------------------------ links (tc, ip)

/** @returns {Promise<number>} ms at which the new cap is in force */
async function setCap(k, rate) {
  if (rate) await test.netns('cap', NETNS_ID, String(k), rate);
  else await test.netns('uncap', NETNS_ID, String(k));
  test.event(`b${k} ${rate ? `capped at ${rate}` : 'uncapped'}`);
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

/** Proportional memory (PSS) of everything running in a namespace, in GiB. */
async function namespacePss(ns) {
  const kib = await sumOverNamespace(ns, (pid) => Number(/^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0));
  return kib / 1024 / 1024;
}

/** CPU time (user + system, in clock ticks of 1/100 s) of the server, of this node process and
 * of each browser (everything in its namespace). */
async function namespaceCpu() {
  const names = Array.from({ length: BROWSERS }, (_, i) => `b${i + 1}`);
  const values = await Promise.all(names.map((n) => sumOverNamespace(`${NETNS_ID}-${n}`, cpuTicks)));
  const own = process.cpuUsage();
  let serverTicks = 0;
  try {
    serverTicks = cpuTicks(test.server.proc?.pid);
  } catch { /* exited */ }
  return { server: serverTicks, node: (own.user + own.system) / 10_000, ...Object.fromEntries(names.map((n, i) => [n, values[i]])) };
}

// ------------------------------------------------------------------ pages

/**
 * Runs in the page: session state, the selected ICE path, every inbound RTP stream (with its
 * publisher's display name) and each remote tile's size and bandwidth pause. Reads only
 * RTCPeerConnection.getStats() and the DOM, so it works with any client version that exposes
 * `window.confab.session`; `window.__netns` is lib.mjs's netnsPageHelpers.
 */
async function sampleInPage() {
  const h = /** @type {any} */ (window).__netns;
  const s = /** @type {any} */ (window).confab?.session;
  const pc = s?.pc;
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
    stats.forEach((r) => {
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
      const stream = h.inbound(s, r);
      if (!stream) return;
      out.inbound.push({
        ...stream,
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
    const selected = h.path(stats);
    if (selected) out.path = { local: selected.local, remote: selected.remote };
  }
  for (const tile of document.querySelectorAll('.tile:not(.local)')) {
    const name = h.nameOf(s, /** @type {HTMLElement} */ (tile).dataset.participantId);
    if (!name) continue;
    const video = tile.querySelector('video');
    out.tiles[name] = {
      videoWidth: video?.videoWidth ?? 0,
      cssWidth: video?.clientWidth ?? 0,
      cssHeight: video?.clientHeight ?? 0,
      paused: tile.classList.contains('paused-bandwidth'),
      audioPaused: tile.classList.contains('audio-paused-bandwidth'),
    };
  }
  return out;
}

/** How every page is opened and sampled (lib.mjs's NetnsChromium). */
const PAGE = { viewport: VIEWPORT, deviceScale: DEVICE_SCALE, sampleInPage };

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
    audioPausedShare: samples.filter((s) => s.tiles[remote]?.audioPaused).length / samples.length,
    audioSamplesPerSec: d.samples / dt,
  };
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
  test.event(`window: ${title}`);
  await test.watch(windowMs);
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
  test.begin();
  const tbf = (await run('bash', [test.netnsSh, 'describe'], { timeout: 5_000 })).stdout.trim();
  log(`namespaces ${NETNS_ID}-{s,b1..b${BROWSERS}}; caps use ${tbf} (netns.sh; SHAPED_TBF_BURST, SHAPED_TBF_LATENCY)`);
  await test.startServer();

  const peers = Array.from({ length: BROWSERS }, (_, i) => test.browser(i + 1, `b${i + 1}`, PAGE));
  await test.open(peers);
  log(`${peers.length} Chromium ${peers[0].browser.version()} processes launched, one per namespace`);
  const joinStart = await test.join();

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
  const { firstAt, steadyAt } = await test.waitForJoin(joinStart, {
    first: (p) => decoding(p, 0, SAMPLE_MS),
    steady: (p) => decoding(p, MIN_FPS, STEADY_OVER_MS),
    whom: 'both others',
  });
  const joinTimes = (m) => test.joinTimes(m);
  log(`every page decodes both others; after page.goto (polled every ${SAMPLE_MS} ms), first frames of both: ${joinTimes(firstAt)}; `
    + `both at >= ${MIN_FPS} fps over ${secs(STEADY_OVER_MS)}: ${joinTimes(steadyAt)}`);
  const tile = Object.values(peers[0].samples.at(-1).tiles)[0];
  log(`remote tiles are ${tile?.cssWidth}x${tile?.cssHeight} CSS px at device scale ${DEVICE_SCALE} (viewport ${VIEWPORT.width}x${VIEWPORT.height})`);
  if (steadyAt.size < peers.length) log(`WARNING: not every page decodes steadily after ${secs(STEADY_TIMEOUT_MS)}; measuring anyway`);
  summary.push(['0 join', 'every viewer', `both remotes steady after ${joinTimes(steadyAt)}`]);
  test.checkIcePaths();

  const b1 = peers[0];
  const others = peers.slice(1);
  const remotesOf = (p) => peers.filter((o) => o !== p).map((o) => o.name);

  // 1. Baseline.
  await test.watch(BASELINE_SETTLE_MS);
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
  await test.watch(CAPPED_SETTLE_MS);
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
    await test.watch(SAMPLE_MS);
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
  await test.watch(PAUSE_SETTLE_MS);
  const s4 = await measureWindow(peers, `scenario 4: b1's downlink capped at ${CAP_PAUSE}`, PAUSE_WINDOW_MS);
  await setCap(1, null);
  for (const r of remotesOf(b1)) {
    const m = s4.result.b1[r];
    const paused = m.pausedShare >= PAUSED_MIN_SHARE || m.frames === 0;
    criterion('4', `b1<-${r} video paused`, paused,
      `tile .paused-bandwidth in ${(m.pausedShare * 100).toFixed(0)} % of samples (>= ${PAUSED_MIN_SHARE * 100}), ${m.frames} frames decoded`);
    // Two voices do not fit in 60 kbit/s: the server may hold one back (and say so), but what
    // it forwards must be clean, and b1 must hear someone.
    const held = m.audioPausedShare >= PAUSED_MIN_SHARE;
    criterion('4', `b1<-${r} audio clean (<= ${pct(MAX_CONCEALMENT_PAUSED)} % concealed) or held back`, m.concealment <= MAX_CONCEALMENT_PAUSED || held,
      `${pct(m.concealment)} % concealed; tile .audio-paused-bandwidth in ${(m.audioPausedShare * 100).toFixed(0)} % of samples`);
  }
  const heard = remotesOf(b1).filter((r) => s4.result.b1[r].concealment <= MAX_CONCEALMENT_PAUSED);
  criterion('4', 'b1 hears at least one remote clean', heard.length > 0,
    remotesOf(b1).map((r) => `<-${r} ${pct(s4.result.b1[r].concealment)} %`).join(', '));
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
  await test.stopSampling();
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

const error = await test.run(runTest, TOTAL_BUDGET_MS, async (failure) => {
  test.reportFailure(failure);
  await test.cleanup();
});
printSummary();
const criteriaFailed = criteria.some((c) => !c.ok && enforced(c.scenario));
if (error || criteriaFailed) test.reportFailure(error ?? new TestFailure('pass criteria failed (see above)'));
await test.cleanup();
console.log(`shaped: logs in ${test.tmpDir}`);
process.exit(error || criteriaFailed ? 1 : 0);
