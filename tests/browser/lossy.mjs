// Lossy-link end-to-end test: what a participant sees and hears when packets are lost on the way
// to it (its downlink) or on the way from its peer to the server (the peer's uplink), i.e. how
// well the server's NACK handling (retransmissions towards subscribers, NACKs towards publishers)
// and audio redundancy hide random loss.
//
// Run through lossy.sh (needs root), which builds the namespaces (netns.sh) and starts this
// script inside the server's namespace:
//
//   bash tests/browser/lossy.sh                            # report only
//   LOSSY_ENFORCE=1 bash tests/browser/lossy.sh            # every pass criterion fails the run
//   LOSSY_ENFORCE=video,freeze bash tests/browser/lossy.sh # only these criteria do
//   LOSSY_PHASES=0,2,4 LOSSY_JSON=/tmp/lossy.json bash tests/browser/lossy.sh
//
// Two Chromium *processes*, alice (b1) and bob (b2), each in its own network namespace with its
// own veth to the server's bridge, join one room (simulcast on, as the client defaults). Random
// UDP drops come from nftables `numgen random` rules in the server's namespace (netns.sh `loss`
// for server→bob, `uplink-loss` for alice→server). Phases, each LOSSY_SETTLE_MS (default 5 s)
// with the new condition in force but not measured, then LOSSY_PHASE_MS (default 30 s) measured:
//   0. clean baseline;
//   1. 2 % loss server→bob;   2. 5 % loss server→bob        (bob's NACKs, the server's resends)
//   3. 2 % loss alice→server; 4. 5 % loss alice→server      (the server's NACKs to alice)
// Measured at bob for alice's tracks (and at alice for bob's, the direction no rule touches),
// from RTCPeerConnection.getStats(): residual video loss, NACKs, retransmissions, freezes, fps,
// frame width, audio concealment, and lip sync (estimatedPlayoutTimestamp of audio vs video);
// plus the deltas of the server's NACK/retransmission counters on /metrics.
//
// Report only unless LOSSY_ENFORCE is set. Exits 1 when an enforced criterion fails, or when the
// harness finds the set-up broken (no join, no media, media not over the veths, the drops not
// applied or not noticed by anyone): those fail always.

import fs from 'node:fs';
import {
  CONFAB_BIN, NETNS_BASE_URL, NetnsTest, SAMPLE_MS, STEADY_OVER_MS, STEADY_TIMEOUT_MS, TestFailure, cpuCounters, cpuTicks,
  fetchMetrics, quantile, secs, sumOverNamespace,
  envMs,
} from './lib.mjs';

// ------------------------------------------------------------------ pass criteria (phases 1-4)

/** `video`: residual video loss at the viewer, what NACKs left: (Δlost − ΔretransmittedPacketsReceived)
 * / (Δreceived + Δlost). Chromium keeps a packet repaired over RTX counted in packetsLost (the
 * repair arrives on the RTX SSRC, whose packets are counted apart, in retransmittedPacketsReceived),
 * so packetsLost alone is the loss *before* repair; see `receiverMetrics`. */
const MAX_VIDEO_RESIDUAL_LOSS = 0.003;
/** `freeze`: freezes (Chromium's freezeCount) in a lossy phase's window. */
const MAX_FREEZES = 0;
/** `audio`: audio concealment (concealedSamples / totalSamplesReceived), by the phase's loss in
 * permille. At 5 % the server is expected to protect audio (RED), hence the tighter bound. */
const MAX_CONCEALMENT = { 20: 0.02, 50: 0.01 };
/** `sync`: median |audio − video| of estimatedPlayoutTimestamp, when Chromium reports it. */
const MAX_SYNC_MEDIAN_MS = 80;
const CRITERIA = ['video', 'freeze', 'audio', 'sync'];

// ------------------------------------------------------------------ phases

/** `k`: the browser whose link the rule is on; `dir`: `down` (server→k) or `up` (k→server). */
const PHASES = [
  { id: 0, permille: 0, dir: null, k: null, label: 'none' },
  { id: 1, permille: 20, dir: 'down', k: 2, label: 'server→bob' },
  { id: 2, permille: 50, dir: 'down', k: 2, label: 'server→bob' },
  { id: 3, permille: 20, dir: 'up', k: 1, label: 'alice→server' },
  { id: 4, permille: 50, dir: 'up', k: 1, label: 'alice→server' },
];

// ------------------------------------------------------------------ harness

const SETTLE_MS = envMs('LOSSY_SETTLE_MS', 5_000);
const PHASE_MS = envMs('LOSSY_PHASE_MS', 30_000);
const SELECTED = parsePhases(process.env.LOSSY_PHASES);
const ENFORCED = parseEnforce(process.env.LOSSY_ENFORCE);
const JSON_PATH = process.env.LOSSY_JSON || null;
/** 1600x900 at device scale 2: the remote tile is far over 960 device px wide, so a server that
 * picks a simulcast layer by tile size sends the top one (as in shaped.mjs). */
const VIEWPORT = { width: 1600, height: 900 };
const DEVICE_SCALE = Number(process.env.LOSSY_DEVICE_SCALE || 2);

/** Server metrics whose deltas are reported (summed over label sets; missing ones are skipped). */
const SERVER_METRICS = [
  'confab_rtcp_nack_total',
  'confab_retransmitted_packets_total',
  'confab_retransmitted_bytes_total',
  'confab_nack_unanswered_total',
  'confab_forward_drops_total',
  'confab_rtcp_pli_total',
];

/** The join (lib.mjs): both pages must decode a first frame from each other within JOIN_TIMEOUT_MS
 * (else the harness fails); then wait (up to STEADY_TIMEOUT_MS after page.goto) until both decode
 * at STEADY_FPS over STEADY_OVER_MS; if that never happens the phases run anyway. */
const STEADY_FPS = 12;
/** Start-up, join and teardown, on top of the phases, in the overall time budget. */
const BUDGET_BASE_MS = 80_000;
const TOTAL_BUDGET_MS = BUDGET_BASE_MS + SELECTED.length * (SETTLE_MS + PHASE_MS) * 1.1;
/** totalSamplesReceived grows at the playout rate (48 kHz for Opus) while audio is played out. */
const MIN_AUDIO_SAMPLES_PER_SEC = 8_000;
/** A lossy window's rules must see at least this many datagrams (else the media bypasses them). */
const MIN_SEEN_DATAGRAMS = 500;
/** Datagrams on the wire vs. RTP packets the endpoint counts: at least this share must be seen. */
const MIN_WIRE_SHARE = 0.9;
/** Measured drop ratio vs. the rule's: allowed deviation in binomial standard deviations. */
const DROP_RATIO_SIGMAS = 6;
/** Above this share of the machine's CPU in a window, its numbers get a warning. */
const CPU_WARN_SHARE = 0.95;

// The scratch directory, the server, the browsers, the sampling and the clean-up (lib.mjs).
const test = new NetnsTest({
  name: 'lossy', netnsId: process.env.LOSSY_NETNS_ID, netnsSh: process.env.LOSSY_NETNS_SH, rustLog: process.env.LOSSY_RUST_LOG,
});
const NETNS_ID = test.netnsId;
const log = (msg) => test.log(msg);

function parsePhases(v) {
  if (v === undefined || v.trim() === '') return PHASES;
  const ids = v.split(',').map((x) => x.trim()).filter(Boolean);
  const out = [];
  for (const id of ids) {
    const p = PHASES.find((q) => String(q.id) === id);
    if (!p) usage(`LOSSY_PHASES: unknown phase '${id}' (0..${PHASES.length - 1})`);
    if (!out.includes(p)) out.push(p);
  }
  return out.sort((a, b) => a.id - b.id);
}

function parseEnforce(v) {
  if (v === undefined || v.trim() === '' || v.trim() === '0') return new Set();
  if (v.trim() === '1' || v.trim() === 'all') return new Set(CRITERIA);
  const names = v.split(',').map((x) => x.trim()).filter(Boolean);
  for (const n of names) if (!CRITERIA.includes(n)) usage(`LOSSY_ENFORCE: unknown criterion '${n}' (${CRITERIA.join(', ')}, or 1 for all)`);
  return new Set(names);
}

function usage(msg) {
  console.error(`lossy: ${msg}`);
  process.exit(2);
}

/** Everything the JSON report holds; filled as the run goes. */
const report = {
  startedAt: new Date(test.startedAt).toISOString(),
  server: CONFAB_BIN,
  chromium: null,
  settleMs: SETTLE_MS,
  phaseMs: PHASE_MS,
  enforced: [...ENFORCED],
  thresholds: { MAX_VIDEO_RESIDUAL_LOSS, MAX_FREEZES, MAX_CONCEALMENT, MAX_SYNC_MEDIAN_MS },
  join: null,
  /** Which of the optional getStats fields Chromium reported at all during the run. */
  statsPresent: {},
  phases: [],
  criteria: [],
  harnessError: null,
  exitCode: null,
};

// ------------------------------------------------------------------ links (nft)

/** Sets the phase's loss rule and clears every other one (the counters restart at zero). */
async function applyLoss(phase) {
  for (const k of [1, 2]) {
    await test.netns('loss', NETNS_ID, String(k), String(phase.dir === 'down' && phase.k === k ? phase.permille : 0));
    await test.netns('uplink-loss', NETNS_ID, String(k), String(phase.dir === 'up' && phase.k === k ? phase.permille : 0));
  }
  test.event(`phase ${phase.id}: ${phase.permille / 10} % loss ${phase.label}`);
}

/** Per browser: UDP datagrams the loss rules saw and dropped, each way (netns.sh counters). */
async function nftCounters() {
  const out = {};
  for (const k of [1, 2]) {
    out[k] = {};
    for (const line of (await test.netns('counters', NETNS_ID, String(k))).trim().split('\n')) {
      const [dir, seen, dropped] = line.trim().split(/\s+/);
      out[k][dir] = { seen: Number(seen), dropped: Number(dropped) };
    }
  }
  return out;
}

/** CPU time (user + system, clock ticks) of everything in this run's namespaces: the server and
 * node in S, each browser in its own. Comparable with cpuCounters (both in USER_HZ). */
async function testCpuTicks() {
  let sum = 0;
  for (const n of ['s', 'b1', 'b2']) sum += await sumOverNamespace(`${NETNS_ID}-${n}`, cpuTicks);
  return sum;
}

async function snapshot() {
  const [nft, metrics, testTicks] = await Promise.all([nftCounters(), fetchMetrics(NETNS_BASE_URL), testCpuTicks()]);
  return { at: Date.now(), nft, metrics, cpu: { ...cpuCounters(), test: testTicks } };
}

/** Per metric of SERVER_METRICS that exists at the end: total delta and delta per label set. */
function metricDeltas(a, b) {
  const out = {};
  if (!b) return out;
  for (const name of SERVER_METRICS) {
    const after = b.get(name);
    if (!after) continue;
    const before = a?.get(name) ?? new Map();
    const byLabels = {};
    let total = 0;
    for (const [labels, v] of after) {
      const d = v - (before.get(labels) ?? 0);
      byLabels[labels] = d;
      total += d;
    }
    out[name] = { total, byLabels };
  }
  return out;
}

// ------------------------------------------------------------------ pages

/**
 * Runs in the page: session state, the selected ICE path, every inbound and outbound RTP stream
 * with the counters this test looks at (null where Chromium does not report a field), and the
 * sender reports received. Reads only RTCPeerConnection.getStats() and the session's public
 * surface (`window.confab.session`: `pc`, `participants`, `participantForTrack`) through
 * `window.__netns` (lib.mjs's netnsPageHelpers).
 */
async function sampleInPage() {
  const h = /** @type {any} */ (window).__netns;
  const s = /** @type {any} */ (window).confab?.session;
  const pc = s?.pc;
  const num = (v) => (typeof v === 'number' ? v : null);
  const out = {
    state: s?.state ?? 'none',
    pcState: pc?.connectionState ?? 'none',
    reconnects: s?.reconnects ?? 0,
    path: null,
    inbound: [],
    outbound: [],
    senderReports: [],
    /** remote name → its tile shows the server's bandwidth pause (`.paused-bandwidth`) */
    paused: {},
  };
  for (const tile of document.querySelectorAll('.tile:not(.local)')) {
    const name = h.nameOf(s, /** @type {HTMLElement} */ (tile).dataset.participantId);
    if (name) out.paused[name] = tile.classList.contains('paused-bandwidth');
  }
  if (!pc) return out;
  const stats = await pc.getStats();
  stats.forEach((r) => {
    if (r.type === 'outbound-rtp') {
      out.outbound.push({
        id: r.id,
        kind: r.kind,
        rid: r.rid ?? '',
        packets: r.packetsSent ?? 0,
        nacks: r.nackCount ?? 0,
        rtx: num(r.retransmittedPacketsSent),
        frames: r.framesEncoded ?? 0,
        width: r.frameWidth ?? 0,
        height: r.frameHeight ?? 0,
        plis: r.pliCount ?? 0,
      });
    }
    if (r.type === 'remote-outbound-rtp') {
      out.senderReports.push({ localId: r.localId, kind: r.kind, reports: r.reportsSent ?? 0 });
    }
    const stream = h.inbound(s, r);
    if (!stream) return;
    out.inbound.push({
      ...stream,
      codec: (r.codecId && stats.get(r.codecId)?.mimeType) || null,
      packets: r.packetsReceived ?? 0,
      lost: r.packetsLost ?? 0,
      discarded: r.packetsDiscarded ?? 0,
      nacks: r.nackCount ?? 0,
      // Chromium leaves the field out until the RTX stream has carried something: 0 then, as long
      // as RTX is negotiated at all (rtxSsrc); null (not reported) without RTX.
      rtx: num(r.retransmittedPacketsReceived) ?? (r.rtxSsrc !== undefined ? 0 : null),
      rtxReported: 'retransmittedPacketsReceived' in r,
      rtxSsrc: r.rtxSsrc ?? null,
      fec: num(r.fecPacketsReceived),
      frames: r.framesDecoded ?? 0,
      dropped: r.framesDropped ?? 0,
      keyframes: r.keyFramesDecoded ?? 0,
      width: r.frameWidth ?? 0,
      freezes: r.freezeCount ?? 0,
      frozen: r.totalFreezesDuration ?? 0,
      plis: r.pliCount ?? 0,
      concealed: r.concealedSamples ?? 0,
      samples: r.totalSamplesReceived ?? 0,
      concealEvents: r.concealmentEvents ?? 0,
      playout: num(r.estimatedPlayoutTimestamp),
      jbDelay: r.jitterBufferDelay ?? 0,
      jbEmitted: r.jitterBufferEmittedCount ?? 0,
    });
  });
  out.path = h.path(stats);
  return out;
}

/** How both pages are opened and sampled (lib.mjs's NetnsChromium). */
const PAGE = { viewport: VIEWPORT, deviceScale: DEVICE_SCALE, sampleInPage };

// ------------------------------------------------------------------ metrics from samples

/** A publisher's (most advanced) stream of a kind in one sample. */
function streamOf(sample, remote, kind) {
  let best = null;
  for (const r of sample.inbound) {
    if (r.kind !== kind || r.owner !== remote) continue;
    const progress = kind === 'video' ? r.frames : r.samples;
    if (!best || progress > (kind === 'video' ? best.frames : best.samples)) best = r;
  }
  return best;
}

/**
 * Sums, over a remote's inbound streams of a kind, the deltas of the given counters from the
 * first sample to the last (a stream that appears meanwhile counts from zero). A counter that is
 * null in every stream at the end (Chromium does not report it) stays null.
 */
function inboundDeltas(samples, remote, kind, keys) {
  const a = samples[0];
  const b = samples.at(-1);
  const before = new Map(a.inbound.map((r) => [r.id, r]));
  const d = Object.fromEntries(keys.map((k) => [k, null]));
  for (const r of b.inbound) {
    if (r.kind !== kind || r.owner !== remote) continue;
    const p = before.get(r.id);
    for (const k of keys) {
      if (r[k] === null || r[k] === undefined) continue;
      d[k] = (d[k] ?? 0) + r[k] - (p?.[k] ?? 0);
    }
  }
  return d;
}

/** The same for a page's own outbound streams of a kind (every simulcast layer summed). */
function outboundDeltas(samples, kind, keys) {
  const a = samples[0];
  const b = samples.at(-1);
  const before = new Map(a.outbound.map((r) => [r.id, r]));
  const d = Object.fromEntries(keys.map((k) => [k, null]));
  for (const r of b.outbound) {
    if (r.kind !== kind) continue;
    const p = before.get(r.id);
    for (const k of keys) {
      if (r[k] === null || r[k] === undefined) continue;
      d[k] = (d[k] ?? 0) + r[k] - (p?.[k] ?? 0);
    }
  }
  return d;
}

const median = (xs) => quantile(xs, 0.5);

/** What a viewer got from one remote over a window's samples. */
function receiverMetrics(samples, remote) {
  const dt = (samples.at(-1).at - samples[0].at) / 1000;
  const v = inboundDeltas(samples, remote, 'video',
    ['packets', 'lost', 'discarded', 'nacks', 'rtx', 'fec', 'frames', 'dropped', 'keyframes', 'freezes', 'frozen', 'plis']);
  const a = inboundDeltas(samples, remote, 'audio',
    ['packets', 'lost', 'discarded', 'nacks', 'rtx', 'fec', 'concealed', 'samples', 'concealEvents', 'jbDelay', 'jbEmitted']);
  const widths = samples.map((s) => streamOf(s, remote, 'video')?.width ?? 0);
  // Lip sync: per sample, audio's estimated playout time minus video's (same getStats report).
  const skew = [];
  for (const s of samples) {
    const av = streamOf(s, remote, 'audio')?.playout;
    const vv = streamOf(s, remote, 'video')?.playout;
    if (av && vv) skew.push(av - vv);
  }
  const absSkew = skew.map(Math.abs);
  const last = samples.at(-1);
  const vEnd = streamOf(last, remote, 'video');
  const aEnd = streamOf(last, remote, 'audio');
  const vjb = inboundDeltas(samples, remote, 'video', ['jbDelay', 'jbEmitted']);
  // Expected packets on the media SSRC: received + lost (RFC 3550's cumulative loss). Chromium
  // counts a packet repaired by an RTX retransmission as lost all the same (libwebrtc feeds only
  // non-recovered packets to the media SSRC's statistics), so Δlost is the loss before repair and
  // Δlost − Δrtx estimates what stayed lost (exact unless retransmissions arrived twice or too
  // late to use; unrepaired holes also show as the viewer's PLIs and as freezes). Without RTX a
  // retransmission on the media SSRC lowers packetsLost itself, and Δrtx is 0.
  const expected = v.packets + v.lost;
  return {
    seconds: dt,
    video: {
      ...v,
      preRepairLoss: expected > 0 ? v.lost / expected : NaN,
      residualLoss: expected > 0 ? Math.max(0, v.lost - (v.rtx ?? 0)) / expected : NaN,
      fps: v.frames / dt,
      widthMedian: median(widths),
      widthMin: Math.min(...widths),
      jitterBufferMs: vjb.jbEmitted > 0 ? (vjb.jbDelay / vjb.jbEmitted) * 1000 : NaN,
      codec: vEnd?.codec ?? null,
      rtxSsrc: vEnd?.rtxSsrc ?? null,
      /** share of the samples in which the remote's tile showed the server's bandwidth pause */
      pausedShare: samples.filter((s) => s.paused?.[remote]).length / samples.length,
    },
    audio: {
      ...a,
      residualLoss: a.packets + a.lost > 0 ? a.lost / (a.packets + a.lost) : NaN,
      concealment: a.samples > 0 ? a.concealed / a.samples : NaN,
      samplesPerSec: a.samples / dt,
      jitterBufferMs: a.jbEmitted > 0 ? (a.jbDelay / a.jbEmitted) * 1000 : NaN,
      codec: aEnd?.codec ?? null,
    },
    sync: {
      samples: skew.length,
      of: samples.length,
      medianAbsMs: median(absSkew),
      p95AbsMs: quantile(absSkew, 0.95),
      medianSignedMs: median(skew), // > 0: audio's playout clock is ahead of video's
    },
  };
}

/** What a page sent over a window: video NACKs received, retransmissions, layers at the end. */
function senderMetrics(samples) {
  const v = outboundDeltas(samples, 'video', ['packets', 'nacks', 'rtx', 'plis']);
  const a = outboundDeltas(samples, 'audio', ['packets', 'nacks', 'rtx']);
  const dt = (samples.at(-1).at - samples[0].at) / 1000;
  const before = new Map(samples[0].outbound.map((r) => [r.id, r]));
  const layers = samples.at(-1).outbound.filter((r) => r.kind === 'video').map((r) => ({
    rid: r.rid,
    width: r.width,
    height: r.height,
    fps: (r.frames - (before.get(r.id)?.frames ?? 0)) / dt,
  }));
  return { video: v, audio: a, layers };
}

/** Records which optional fields Chromium reports (over every sample seen so far). */
function notePresence(peers) {
  const p = report.statsPresent;
  for (const peer of peers) {
    for (const s of peer.samples) {
      for (const r of s.inbound) {
        const k = r.kind;
        p[`inbound ${k} retransmittedPacketsReceived`] ||= r.rtxReported;
        p[`inbound ${k} estimatedPlayoutTimestamp`] ||= r.playout !== null;
        p[`inbound ${k} fecPacketsReceived`] ||= r.fec !== null;
        p[`inbound ${k} rtxSsrc`] ||= r.rtxSsrc !== null;
      }
      for (const r of s.outbound) p[`outbound ${r.kind} retransmittedPacketsSent`] ||= r.rtx !== null;
      p['remote-outbound-rtp (sender reports received)'] ||= s.senderReports.some((x) => x.reports > 0);
    }
  }
}

// ------------------------------------------------------------------ reporting

const fin = (x) => x !== null && x !== undefined && Number.isFinite(x);
const f0 = (x) => (fin(x) ? x.toFixed(0) : 'n/a');
const f1 = (x) => (fin(x) ? x.toFixed(1) : 'n/a');
const pct1 = (x) => (fin(x) ? (x * 100).toFixed(1) : 'n/a');
const pct2 = (x) => (fin(x) ? (x * 100).toFixed(2) : 'n/a');
const int = (x) => (x === null || x === undefined ? 'n/a' : String(Math.round(x)));
const lossText = (phase) => `${(phase.permille / 10).toFixed(0)} %`;

function printTable(title, head, rows) {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells) => cells.map((c, i) => (i <= 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  console.log(`\n${title}\n  ${line(head)}\n${rows.map((r) => `  ${line(r)}`).join('\n')}`);
}

function wireText(r) {
  if (!r.wire) return '-';
  return `${pct2(r.wire.dropped / Math.max(1, r.wire.seen))}% of ${r.wire.seen}`;
}

function srv(r, name, scale = 1) {
  const m = r.server[name];
  return m ? String(Math.round(m.total / scale)) : '-';
}

function syncText(s) {
  return s.samples ? `${f0(s.medianAbsMs)}/${f0(s.p95AbsMs)}` : 'n/a';
}

/** The per-phase tables: bob←alice with the server's counters, then the other direction. */
function printTables(results) {
  const head = ['phase', 'loss', 'direction', 'wire drops', 'vid resid %', 'pre-rtx %', 'lost/rcvd', 'NACKs', 'RTX rx', 'PLIs',
    'freezes/s', 'fps', 'paused %', 'width med/min', 'aud conceal %', 'conc ev', 'sync med/p95 ms',
    'srv NACK', 'srv RTX pk', 'srv RTX kB', 'srv unansw', 'srv fwd drop'];
  const rows = results.map((r) => {
    const v = r.bobFromAlice.video;
    const a = r.bobFromAlice.audio;
    return [String(r.phase), lossText(r), r.label, wireText(r), pct2(v.residualLoss), pct2(v.preRepairLoss),
      `${int(v.lost)}/${int(v.packets)}`, int(v.nacks), int(v.rtx), int(v.plis), `${int(v.freezes)}/${f1(v.frozen)}`, f1(v.fps),
      f0(v.pausedShare * 100), `${f0(v.widthMedian)}/${f0(v.widthMin)}`, pct2(a.concealment), int(a.concealEvents),
      syncText(r.bobFromAlice.sync),
      srv(r, 'confab_rtcp_nack_total'), srv(r, 'confab_retransmitted_packets_total'),
      srv(r, 'confab_retransmitted_bytes_total', 1000), srv(r, 'confab_nack_unanswered_total'),
      srv(r, 'confab_forward_drops_total')];
  });
  printTable(`lossy: bob <- alice, per phase (window ${secs(PHASE_MS)} after ${secs(SETTLE_MS)} settle; srv = server /metrics deltas, summed over labels, '-' = no such metric)`,
    head, rows);
  console.log('  server deltas by label set (non-zero only):');
  for (const r of results) {
    const parts = Object.entries(r.server).flatMap(([name, m]) => Object.entries(m.byLabels)
      .filter(([, d]) => d !== 0)
      .map(([labels, d]) => `${name.replace(/^confab_/, '')}${labels ? `{${labels}}` : ''} ${Math.round(d)}`));
    console.log(`    phase ${r.phase}: ${parts.length ? parts.join(', ') : r.serverMetricsAvailable ? 'none' : '/metrics did not answer'}`);
  }

  const head2 = ['phase', 'loss', 'direction', 'vid resid %', 'pre-rtx %', 'lost/rcvd', 'NACKs', 'RTX rx', 'PLIs',
    'freezes/s', 'fps', 'paused %', 'width med/min', 'aud conceal %', 'sync med/p95 ms',
    'alice NACKed', 'alice RTX tx', 'alice vid pkts', 'bob<-alice aud loss %', 'aud codec', 'cpu % (test)'];
  const rows2 = results.map((r) => {
    const v = r.aliceFromBob.video;
    const a = r.aliceFromBob.audio;
    return [String(r.phase), lossText(r), r.label, pct2(v.residualLoss), pct2(v.preRepairLoss), `${int(v.lost)}/${int(v.packets)}`,
      int(v.nacks), int(v.rtx), int(v.plis), `${int(v.freezes)}/${f1(v.frozen)}`, f1(v.fps), f0(v.pausedShare * 100),
      `${f0(v.widthMedian)}/${f0(v.widthMin)}`, pct2(a.concealment), syncText(r.aliceFromBob.sync),
      int(r.aliceSends.video.nacks), int(r.aliceSends.video.rtx), int(r.aliceSends.video.packets),
      pct2(r.bobFromAlice.audio.residualLoss), r.bobFromAlice.audio.codec ?? '-', `${f0(r.cpuBusy * 100)} (${f0(r.cpuTest * 100)})`];
  });
  printTable('lossy: alice <- bob (no rule on this direction); what alice sent (NACKs she got from the server, her retransmissions, '
    + 'video packets incl. them, all layers); bob<-alice audio loss (no retransmission for audio); machine CPU busy (this test\'s share)', head2, rows2);
}

// ------------------------------------------------------------------ criteria

function criterion(phase, name, ok, detail) {
  const enforced = ENFORCED.has(name);
  report.criteria.push({ phase: phase.id, name, ok, enforced, detail });
  const verdict = ok === null ? 'n/a ' : ok ? 'pass' : enforced ? 'FAIL' : 'FAIL (report only)';
  log(`  phase ${phase.id} ${verdict} ${name}: ${detail}`);
}

function judge(phase, r) {
  if (phase.permille === 0) return;
  const v = r.bobFromAlice.video;
  const a = r.bobFromAlice.audio;
  const s = r.bobFromAlice.sync;
  criterion(phase, 'video', v.residualLoss <= MAX_VIDEO_RESIDUAL_LOSS, v.packets + v.lost > 0
    ? `bob<-alice residual video loss ${pct2(v.residualLoss)} % (<= ${pct2(MAX_VIDEO_RESIDUAL_LOSS)}): `
      + `${v.lost} lost of ${v.packets + v.lost} before repair, ${int(v.rtx)} retransmissions received, ${v.plis} PLIs sent`
    : `bob<-alice received no video packet in the window (tile paused in ${f0(v.pausedShare * 100)} % of the samples)`);
  criterion(phase, 'freeze', v.freezes <= MAX_FREEZES, `bob<-alice ${v.freezes} freezes (<= ${MAX_FREEZES}), ${f1(v.frozen)} s frozen`);
  const maxConceal = MAX_CONCEALMENT[phase.permille];
  criterion(phase, 'audio', a.concealment <= maxConceal, `bob<-alice audio concealment ${pct2(a.concealment)} % (<= ${pct2(maxConceal)})`);
  if (s.samples === 0) criterion(phase, 'sync', null, 'not measurable: no estimatedPlayoutTimestamp for both of alice\'s tracks at bob');
  else {
    criterion(phase, 'sync', s.medianAbsMs <= MAX_SYNC_MEDIAN_MS,
      `bob<-alice median |audio-video| ${f0(s.medianAbsMs)} ms (<= ${MAX_SYNC_MEDIAN_MS}) over ${s.samples} of ${s.of} samples, p95 ${f0(s.p95AbsMs)} ms`);
  }
}

// ------------------------------------------------------------------ harness checks

/** The set-up must be what the numbers claim: media flowing, the drops applied and noticed. */
function checkHarness(phase, r, alice, bob) {
  for (const [viewer, m] of [['bob<-alice', r.bobFromAlice], ['alice<-bob', r.aliceFromBob]]) {
    // Video must flow on the clean link; under loss the server may pause or starve it, which is a
    // finding (fps 0, the video criterion fails), not a broken harness. Audio is never paused.
    if (!(m.video.frames > 0)) {
      if (phase.permille === 0) throw new TestFailure(`phase ${phase.id}: ${viewer} decoded no video frame in the clean window: no media`);
      log(`  WARNING: phase ${phase.id}: ${viewer} decoded no video frame in the window (${m.video.packets} packets received, `
        + `tile paused in ${f0(m.video.pausedShare * 100)} % of the samples)`);
    }
    if (!(m.audio.samplesPerSec >= MIN_AUDIO_SAMPLES_PER_SEC)) {
      throw new TestFailure(`phase ${phase.id}: ${viewer} audio played out at ${f1(m.audio.samplesPerSec)} samples/s: concealment cannot be measured`);
    }
  }
  // Every rule but the phase's own is empty, so nothing else may have been dropped.
  for (const k of [1, 2]) {
    for (const dir of ['down', 'up']) {
      const d = r.nftAll[k][dir].dropped;
      if (d > 0 && !(phase.k === k && phase.dir === dir)) {
        throw new TestFailure(`phase ${phase.id}: ${d} datagrams dropped ${dir} on b${k}'s link, which should have no rule`);
      }
    }
  }
  if (phase.permille === 0) return;
  const { seen, dropped } = r.wire;
  const where = `the ${phase.label} rule (netns.sh ${phase.dir === 'down' ? 'loss' : 'uplink-loss'} on vs${phase.k})`;
  if (seen < MIN_SEEN_DATAGRAMS) throw new TestFailure(`phase ${phase.id}: ${where} saw only ${seen} UDP datagrams in ${secs(PHASE_MS)}: the media bypasses it`);
  const p = phase.permille / 1000;
  const sigma = Math.sqrt(seen * p * (1 - p));
  if (Math.abs(dropped - seen * p) > DROP_RATIO_SIGMAS * sigma + 2) {
    throw new TestFailure(`phase ${phase.id}: ${where} dropped ${dropped} of ${seen} datagrams (${pct2(dropped / seen)} %), not about ${pct1(p)} %`);
  }
  // The rule is on the media path: the datagrams it saw cover the RTP the endpoint counted.
  if (phase.dir === 'down') {
    const last = bob.samples.at(-1);
    const first = bob.samples.find((s) => s.at >= r.from);
    const before = new Map(first.inbound.map((x) => [x.id, x]));
    const rtp = last.inbound.reduce((sum, x) => sum + x.packets - (before.get(x.id)?.packets ?? 0), 0);
    if (seen - dropped < MIN_WIRE_SHARE * rtp) {
      throw new TestFailure(`phase ${phase.id}: ${where} passed ${seen - dropped} datagrams while bob received ${rtp} RTP packets: media bypasses the rule`);
    }
  } else {
    const sent = (r.aliceSends.video.packets ?? 0) + (r.aliceSends.audio.packets ?? 0);
    if (seen < MIN_WIRE_SHARE * sent) {
      throw new TestFailure(`phase ${phase.id}: ${where} saw ${seen} datagrams while alice sent ${sent} RTP packets: media bypasses the rule`);
    }
  }
  // And somebody noticed: the receiver of the lossy hop saw gaps (as loss, or by NACKing them).
  const b = r.bobFromAlice;
  const noticed = phase.dir === 'down'
    ? b.video.lost + b.video.nacks + b.audio.lost > 0
    : (r.aliceSends.video.nacks ?? 0) + b.video.lost + b.video.nacks + b.audio.lost > 0;
  if (!noticed) {
    throw new TestFailure(`phase ${phase.id}: ${where} dropped ${dropped} datagrams, yet ${phase.dir === 'down' ? 'bob' : 'neither alice (NACKs received) nor bob'} saw a lost packet or sent a NACK`);
  }
}

// ------------------------------------------------------------------ the test

async function runPhase(phase, alice, bob) {
  await applyLoss(phase);
  log(`phase ${phase.id}: ${lossText(phase)} loss${phase.dir ? ` ${phase.label}` : ''}; settling ${secs(SETTLE_MS)}`);
  await test.watch(SETTLE_MS);
  const a = await snapshot();
  const from = Date.now();
  test.event(`phase ${phase.id}: window`);
  await test.watch(PHASE_MS);
  const to = Date.now();
  const b = await snapshot();
  const bobSamples = bob.between(from, to);
  const aliceSamples = alice.between(from, to);
  for (const [p, s] of [[bob, bobSamples], [alice, aliceSamples]]) {
    if (s.length < 2) throw new TestFailure(`${p.name}: only ${s.length} samples in phase ${phase.id}'s window`);
  }
  const nftAll = {};
  for (const k of [1, 2]) {
    nftAll[k] = {};
    for (const dir of ['down', 'up']) {
      nftAll[k][dir] = { seen: b.nft[k][dir].seen - a.nft[k][dir].seen, dropped: b.nft[k][dir].dropped - a.nft[k][dir].dropped };
    }
  }
  const r = {
    phase: phase.id,
    permille: phase.permille,
    direction: phase.dir,
    label: phase.label,
    from,
    windowMs: to - from,
    wire: phase.dir ? nftAll[phase.k][phase.dir] : null,
    nftAll,
    bobFromAlice: receiverMetrics(bobSamples, 'alice'),
    aliceFromBob: receiverMetrics(aliceSamples, 'bob'),
    aliceSends: senderMetrics(aliceSamples),
    bobSends: senderMetrics(bobSamples),
    server: metricDeltas(a.metrics, b.metrics),
    serverMetricsAvailable: !!(a.metrics && b.metrics),
    cpuBusy: (b.cpu.busy - a.cpu.busy) / Math.max(1, b.cpu.total - a.cpu.total),
    /** the share of the machine this run's own processes used (the rest of cpuBusy is someone else's) */
    cpuTest: (b.cpu.test - a.cpu.test) / Math.max(1, b.cpu.total - a.cpu.total),
    states: [alice, bob].map((p) => {
      const first = p.between(from, to)[0];
      const last = p.samples.at(-1);
      return { name: p.name, pc: last.pcState, session: last.state, reconnects: last.reconnects - first.reconnects };
    }),
  };
  report.phases.push(r);
  const v = r.bobFromAlice.video;
  log(`phase ${phase.id} window done: wire ${wireText(r)} dropped; bob<-alice video ${pct2(v.residualLoss)} % residual loss `
    + `(${pct2(v.preRepairLoss)} % before repair: ${v.lost} lost, ${v.packets} received; ${v.nacks} NACKs, RTX ${int(v.rtx)}, `
    + `${v.plis} PLIs), ${f1(v.fps)} fps, ${v.freezes} freezes; `
    + `audio ${pct2(r.bobFromAlice.audio.concealment)} % concealed (${r.bobFromAlice.audio.codec}); `
    + `states ${r.states.map((s) => `${s.name} pc=${s.pc} session=${s.session} reconnects+${s.reconnects}`).join(', ')}`);
  if (!r.serverMetricsAvailable) log('  WARNING: the server\'s /metrics did not answer: no server deltas');
  if (r.cpuBusy > CPU_WARN_SHARE) {
    log(`  WARNING: the machine was ${pct1(r.cpuBusy)} % busy (this test's processes ${pct1(r.cpuTest)} %, the rest someone else's): `
      + 'frame rates and freezes may be limited by CPU, not by the network');
  }
  checkHarness(phase, r, alice, bob);
  judge(phase, r);
  return r;
}

async function runTest() {
  test.begin();
  log(`phases ${SELECTED.map((p) => p.id).join(',')}: ${secs(SETTLE_MS)} settle + ${secs(PHASE_MS)} window each; `
    + `enforced criteria: ${ENFORCED.size ? [...ENFORCED].join(',') : 'none (report only)'}; budget ${secs(TOTAL_BUDGET_MS)}`);
  await test.startServer();

  const alice = test.browser(1, 'alice', PAGE);
  const bob = test.browser(2, 'bob', PAGE);
  const peers = [alice, bob];
  await test.open(peers);
  report.chromium = alice.browser.version();
  log(`2 Chromium ${report.chromium} processes launched: alice in ${NETNS_ID}-b1, bob in ${NETNS_ID}-b2`);
  const joinStart = await test.join();

  // Both decode each other (harness check: fails even in report-only mode), then steadily.
  const fpsOver = (p, overMs) => {
    const recent = p.samples.at(-1);
    const older = recent && p.samples.findLast((s) => s.at <= recent.at - overMs);
    if (!older) return NaN;
    const other = peers.find((o) => o !== p).name;
    return receiverMetrics([older, recent], other).video.fps;
  };
  const { firstAt, steadyAt } = await test.waitForJoin(joinStart, {
    first: (p) => fpsOver(p, SAMPLE_MS) > 0,
    steady: (p) => fpsOver(p, STEADY_OVER_MS) >= STEADY_FPS,
    whom: 'the other',
  });
  const joinTimes = (m) => test.joinTimes(m);
  log(`both pages decode each other; after page.goto, first frames: ${joinTimes(firstAt)}; `
    + `at >= ${STEADY_FPS} fps over ${secs(STEADY_OVER_MS)}: ${joinTimes(steadyAt)}`);
  if (steadyAt.size < peers.length) log(`WARNING: not every page decodes steadily after ${secs(STEADY_TIMEOUT_MS)}; measuring anyway`);
  report.join = { firstFrameMs: Object.fromEntries(firstAt), steadyMs: Object.fromEntries(steadyAt) };
  test.checkIcePaths({ protocol: 'udp' });

  const results = [];
  for (const phase of SELECTED) results.push(await runPhase(phase, alice, bob));
  notePresence(peers);
  await test.stopSampling();
  return results;
}

// ------------------------------------------------------------------ lifecycle

function writeJson() {
  if (!JSON_PATH) return;
  try {
    fs.writeFileSync(JSON_PATH, `${JSON.stringify(report, (k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2)}\n`);
    console.log(`lossy: JSON report in ${JSON_PATH}`);
  } catch (e) {
    console.error(`lossy: cannot write ${JSON_PATH}: ${e.message}`);
  }
}

let results = [];
const error = await test.run(async () => { results = await runTest(); }, TOTAL_BUDGET_MS, async (failure) => {
  if (report.phases.length) printTables(report.phases);
  test.reportFailure(failure);
  await test.cleanup();
  notePresence(test.browsers);
  report.harnessError = failure.message;
  report.exitCode = 1;
  writeJson();
}, (sig, code) => {
  report.harnessError = `interrupted by ${sig}`;
  report.exitCode = code;
  writeJson();
});
if (!results.length) results = report.phases; // the phases measured before a harness error
notePresence(test.browsers);
if (results.length) printTables(results);
console.log('\nChromium reported (at any time in the run):');
for (const [k, v] of Object.entries(report.statsPresent)) console.log(`  ${v ? 'yes' : 'no '} ${k}`);
const failed = report.criteria.filter((c) => c.ok === false);
const failedEnforced = failed.filter((c) => c.enforced);
console.log(`\nlossy: ${report.criteria.filter((c) => c.ok).length} criteria passed, ${failed.length} failed`
  + ` (${failedEnforced.length} of them enforced), ${report.criteria.filter((c) => c.ok === null).length} not measurable`
  + `${ENFORCED.size ? `; enforced: ${[...ENFORCED].join(',')}` : '; report only (LOSSY_ENFORCE unset)'}`);
for (const c of failed) console.log(`  failed${c.enforced ? '' : ' (report only)'}: phase ${c.phase} ${c.name}: ${c.detail}`);
if (error) {
  report.harnessError = error.message ?? String(error);
  test.reportFailure(error);
  console.error('lossy: HARNESS ERROR (the set-up is broken, the numbers above mean nothing for the server)');
} else if (failedEnforced.length) test.reportFailure(new TestFailure('enforced pass criteria failed (see above)'));
await test.cleanup();
report.exitCode = error || failedEnforced.length ? 1 : 0;
writeJson();
console.log(`lossy: logs in ${test.tmpDir}`);
process.exit(report.exitCode);
