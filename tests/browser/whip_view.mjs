// The browser half of tests/interop/whip_whep.sh: one headless Chromium (Debian's, fake camera and
// microphone) on the web app of a Confab server that whip_whep.sh started, run by node *inside the
// client network namespace* (`ip netns exec <ns> node tests/browser/whip_view.mjs ...`), so
// Chromium's candidates are the namespace's veth address. Two modes:
//
//   node tests/browser/whip_view.mjs view --base http://10.98.1.1:8080 --room whip --publisher gst \
//        --width 640 --height 360 --seconds 20
//     Joins the room as `chromium` and must DECODE the WHIP publisher `--publisher` (a
//     participant of that display name, e.g. GStreamer's webrtcbin): its video inbound-rtp
//     `framesDecoded` rising, at --width x --height, and its audio received (packets, samples and
//     audio energy rising: a sine tone is not silence). Then it keeps watching for --seconds
//     (from the first decoded frame): the video must keep decoding throughout (no stall longer
//     than STALL_MS) and the publisher must still be in the room at the end.
//
//   node tests/browser/whip_view.mjs publish --base ... --room whep --name cam --seconds 60
//     Joins the room as `--name` and publishes its fake camera and microphone; once the camera
//     is being sent (outbound-rtp video framesEncoded > 0 and the peer connection connected) it
//     prints `whip_view: publishing {"participantId": ...}` and stays until SIGTERM/SIGINT or
//     --seconds, then leaves (the page goes to about:blank) and exits 0 (1 if the connection
//     broke meanwhile).
//
// Prints `whip_view: ...` progress lines with timings (from page.goto), a JSON summary line
// `whip_view: summary {...}`, PASS/FAIL lines; exits 1 on a failed check, 2 on a usage error. Hard
// cap on the whole run: --seconds + 60 s.

import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, TestFailure, secs, sleep } from './lib.mjs';

const SAMPLE_MS = 500;
/** The publisher must be decoded within this of page.goto. */
const FIRST_FRAME_TIMEOUT_MS = 20_000;
/** In view mode, the video must not stop decoding for longer than this. */
const STALL_MS = 3_000;
/** Minimum decoded frame rate over the watch window (the test pattern is 30 fps). */
const MIN_FPS = 10;
/** Opus in 20 ms frames is 50 packets/s; accept a busy machine's jitter. */
const MIN_AUDIO_PPS = 25;
const EVALUATE_TIMEOUT_MS = 5_000;

const log = (msg) => console.log(`whip_view: ${msg}`);

function usage(msg) {
  console.error(`whip_view.mjs: ${msg}\nusage: whip_view.mjs view|publish --base URL --room ROOM [--publisher NAME] [--name NAME] `
    + '[--width W --height H] [--seconds S]');
  process.exit(2);
}

function parseArgs(argv) {
  const [mode, ...rest] = argv;
  if (mode !== 'view' && mode !== 'publish') usage(`mode must be view or publish, not ${mode ?? '(none)'}`);
  const o = { mode, base: null, room: null, publisher: 'gst', name: mode === 'view' ? 'chromium' : 'cam', width: 0, height: 0, seconds: mode === 'view' ? 15 : 60 };
  for (let i = 0; i < rest.length; i += 2) {
    const k = rest[i]?.replace(/^--/, '');
    const v = rest[i + 1];
    if (!(k in o) || k === 'mode' || v === undefined) usage(`bad argument ${rest[i]}`);
    o[k] = ['width', 'height', 'seconds'].includes(k) ? Number(v) : v;
    if (typeof o[k] === 'number' && !Number.isFinite(o[k])) usage(`--${k} must be a number`);
  }
  if (!o.base || !o.room) usage('--base and --room are required');
  return o;
}

/** In the page: the session's state and the inbound/outbound RTP streams, with publisher names. */
async function sampleInPage() {
  const w = /** @type {any} */ (window);
  const s = w.confab?.session;
  const pc = s?.pc;
  const out = {
    participantId: s?.participantId ?? null,
    pcState: pc?.connectionState ?? 'none',
    participants: s ? [...s.participants.entries()].map(([id, p]) => ({ id, name: p.name })) : [],
    inbound: [],
    outbound: [],
    tiles: {},
  };
  for (const t of document.querySelectorAll('[data-participant-id]')) {
    const v = t.querySelector('video');
    out.tiles[t.dataset.participantId] = v ? { videoWidth: v.videoWidth, videoHeight: v.videoHeight } : null;
  }
  if (!pc) return out;
  const stats = await pc.getStats();
  stats.forEach((r) => {
    if (r.type === 'inbound-rtp' && (r.kind === 'video' || r.kind === 'audio')) {
      const id = s.participantForTrack(r.trackIdentifier);
      out.inbound.push({
        id: r.id,
        kind: r.kind,
        owner: (id && s.participants.get(id)?.name) ?? null,
        codec: stats.get(r.codecId)?.mimeType ?? null,
        framesDecoded: r.framesDecoded ?? 0,
        frameWidth: r.frameWidth ?? 0,
        frameHeight: r.frameHeight ?? 0,
        packetsReceived: r.packetsReceived ?? 0,
        packetsLost: r.packetsLost ?? 0,
        totalSamplesReceived: r.totalSamplesReceived ?? 0,
        concealedSamples: r.concealedSamples ?? 0,
        totalAudioEnergy: r.totalAudioEnergy ?? 0,
      });
    }
    if (r.type === 'outbound-rtp' && (r.kind === 'video' || r.kind === 'audio')) {
      out.outbound.push({ kind: r.kind, rid: r.rid ?? null, framesEncoded: r.framesEncoded ?? 0, bytesSent: r.bytesSent ?? 0 });
    }
  });
  return out;
}

class Page {
  constructor(o) {
    this.o = o;
    this.browser = null;
    this.page = null;
    this.problems = [];
    this.samples = [];
  }

  async open() {
    this.browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      timeout: 30_000,
      // Our own SIGTERM/SIGINT handling leaves the room first (about:blank) and then closes the
      // browser; Playwright's would kill Chromium at once, and the server would keep the
      // participant for its resume grace.
      handleSIGTERM: false,
      handleSIGINT: false,
      handleSIGHUP: false,
      args: [...CHROMIUM_ARGS, `--unsafely-treat-insecure-origin-as-secure=${this.o.base}`],
    });
    const context = await this.browser.newContext({ viewport: { width: 1280, height: 720 } });
    this.page = await context.newPage();
    this.page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') this.problems.push(`${m.type()}: ${m.text()}`);
    });
    this.page.on('pageerror', (e) => this.problems.push(`uncaught: ${e.message}`));
  }

  async goto() {
    const url = `${this.o.base}/?room=${encodeURIComponent(this.o.room)}&name=${encodeURIComponent(this.o.name)}`;
    this.t0 = Date.now();
    await this.page.goto(url, { waitUntil: 'domcontentloaded', timeout: 15_000 });
  }

  async sample() {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${EVALUATE_TIMEOUT_MS} ms`)), EVALUATE_TIMEOUT_MS);
    });
    try {
      const s = await Promise.race([this.page.evaluate(sampleInPage), timeout]);
      s.at = Date.now();
      this.samples.push(s);
      return s;
    } catch (e) {
      throw new TestFailure(`cannot read the page: ${e.message}`);
    } finally {
      clearTimeout(timer);
    }
  }

  async close() {
    const b = this.browser;
    this.browser = null;
    if (!b) return;
    // Leave the room first (app.js leaves on pagehide), so the server sees a prompt leave.
    await Promise.race([this.page?.goto('about:blank', { timeout: 5_000 }).catch(() => {}), sleep(5_000)]);
    await Promise.race([b.close().catch(() => {}), sleep(5_000)]);
  }
}

/** The publisher's inbound streams of one kind in a sample (summed: a re-pointed track is a new stream). */
function streams(s, owner, kind) {
  return s.inbound.filter((r) => r.kind === kind && r.owner === owner);
}
function sum(rs, field) {
  return rs.reduce((a, r) => a + (r[field] ?? 0), 0);
}

async function view(p, o) {
  await p.goto();
  log(`page.goto ${o.base}/?room=${o.room}&name=${o.name}; waiting for ${o.publisher}'s video`);
  let first = null;
  let s;
  let joinedAt = null;
  let seenAt = null; // when the publisher was first a participant
  let seenStreams = []; // its inbound streams, last seen
  while (Date.now() < p.t0 + FIRST_FRAME_TIMEOUT_MS) {
    s = await p.sample();
    if (joinedAt === null && s.participantId) joinedAt = s.at - p.t0;
    if (seenAt === null && s.participants.some((x) => x.name === o.publisher)) seenAt = s.at - p.t0;
    const mine = s.inbound.filter((r) => r.owner === o.publisher);
    if (mine.length) seenStreams = mine;
    const v = streams(s, o.publisher, 'video');
    if (v.some((r) => r.framesDecoded > 0)) {
      first = s;
      break;
    }
    await sleep(100);
  }
  if (!first) {
    const names = s?.participants.map((x) => x.name).join(', ') || 'nobody';
    const streamsSeen = seenStreams.map((r) => `${r.kind} ${r.codec ?? '?'}: ${r.packetsReceived} packets, ${r.framesDecoded} frames`).join('; ');
    throw new TestFailure(`no decoded video from ${o.publisher} within ${FIRST_FRAME_TIMEOUT_MS / 1000} s of page.goto `
      + `(pc ${s?.pcState}; ${o.publisher} ${seenAt === null ? 'never appeared as a participant' : `a participant from ${secs(seenAt)}`}; `
      + `its streams: ${streamsSeen || 'none'}; participants now: ${names})`);
  }
  const firstMs = first.at - p.t0;
  log(`first decoded frame of ${o.publisher}: ${secs(firstMs)} after page.goto (joined ${joinedAt === null ? '?' : secs(joinedAt)})`);
  console.log(`PASS chromium decodes ${o.publisher}'s video (first frame ${secs(firstMs)} after page.goto)`);

  // Watch: the video keeps decoding, the audio keeps arriving.
  const end = first.at + o.seconds * 1000;
  let lastGrowthAt = first.at;
  let lastFrames = sum(streams(first, o.publisher, 'video'), 'framesDecoded');
  let longestStall = 0;
  let last = first;
  while (Date.now() < end) {
    await sleep(SAMPLE_MS);
    last = await p.sample();
    const frames = sum(streams(last, o.publisher, 'video'), 'framesDecoded');
    if (frames > lastFrames) {
      lastGrowthAt = last.at;
      lastFrames = frames;
    }
    longestStall = Math.max(longestStall, last.at - lastGrowthAt);
    if (longestStall > STALL_MS) {
      const still = last.participants.some((x) => x.name === o.publisher);
      throw new TestFailure(`${o.publisher}'s video stopped decoding ${secs(lastGrowthAt - first.at)} after the first frame `
        + `(${secs(longestStall)} without a new frame; ${o.publisher} ${still ? 'is still' : 'is no longer'} a participant; pc ${last.pcState})`);
    }
  }
  const dt = (last.at - first.at) / 1000;
  const v0 = streams(first, o.publisher, 'video');
  const v1 = streams(last, o.publisher, 'video');
  const a0 = streams(first, o.publisher, 'audio');
  const a1 = streams(last, o.publisher, 'audio');
  const cur = v1.find((r) => r.framesDecoded > 0) ?? v1[0];
  const fps = (sum(v1, 'framesDecoded') - sum(v0, 'framesDecoded')) / dt;
  const aPps = (sum(a1, 'packetsReceived') - sum(a0, 'packetsReceived')) / dt;
  const aSamples = sum(a1, 'totalSamplesReceived') - sum(a0, 'totalSamplesReceived');
  const aEnergy = sum(a1, 'totalAudioEnergy') - sum(a0, 'totalAudioEnergy');
  const aConcealed = sum(a1, 'concealedSamples') - sum(a0, 'concealedSamples');
  const pub = last.participants.find((x) => x.name === o.publisher);
  const tile = pub ? last.tiles[pub.id] : null;
  const summary = {
    mode: 'view',
    room: o.room,
    publisher: o.publisher,
    publisherId: pub?.id ?? null,
    firstFrameMs: firstMs,
    joinedMs: joinedAt,
    watchedS: Number(dt.toFixed(1)),
    videoCodec: cur?.codec ?? null,
    frameWidth: cur?.frameWidth ?? 0,
    frameHeight: cur?.frameHeight ?? 0,
    tile,
    fps: Number(fps.toFixed(1)),
    longestStallMs: longestStall,
    audioCodec: a1[0]?.codec ?? null,
    audioPacketsPerS: Number(aPps.toFixed(1)),
    audioSamples: aSamples,
    audioConcealedPct: aSamples > 0 ? Number(((100 * aConcealed) / aSamples).toFixed(2)) : null,
    audioEnergy: Number(aEnergy.toFixed(4)),
    pcState: last.pcState,
  };
  log(`summary ${JSON.stringify(summary)}`);
  const failures = [];
  const check = (ok, what) => {
    console.log(`${ok ? 'PASS' : 'FAIL'} ${what}`);
    if (!ok) failures.push(what);
  };
  check(fps >= MIN_FPS, `chromium decodes ${o.publisher}'s video steadily: ${summary.fps} fps over ${summary.watchedS} s (>= ${MIN_FPS}), longest gap ${longestStall} ms`);
  if (o.width && o.height) {
    check(summary.frameWidth === o.width && summary.frameHeight === o.height,
      `decoded frames are the test pattern's ${o.width}x${o.height}: ${summary.frameWidth}x${summary.frameHeight} (${summary.videoCodec}; tile <video> ${tile ? `${tile.videoWidth}x${tile.videoHeight}` : 'none'})`);
  }
  check(aPps >= MIN_AUDIO_PPS && aSamples > 0, `chromium receives ${o.publisher}'s audio: ${summary.audioPacketsPerS} packets/s, ${aSamples} samples (${summary.audioCodec})`);
  check(aEnergy > 0, `${o.publisher}'s audio is not silence: audio energy +${summary.audioEnergy}`);
  check(Boolean(pub), `${o.publisher} is still a participant after ${summary.watchedS} s`);
  if (failures.length) throw new TestFailure(`${failures.length} check(s) failed`);
  return summary;
}

let stop = false;

async function publish(p, o) {
  await p.goto();
  let s;
  let ready = null;
  while (Date.now() < p.t0 + FIRST_FRAME_TIMEOUT_MS && !stop) {
    s = await p.sample();
    if (s.participantId && s.pcState === 'connected' && s.outbound.some((r) => r.kind === 'video' && r.framesEncoded > 0)) {
      ready = s;
      break;
    }
    await sleep(100);
  }
  if (!ready) throw new TestFailure(`not publishing ${FIRST_FRAME_TIMEOUT_MS / 1000} s after page.goto (pc ${s?.pcState}, outbound ${JSON.stringify(s?.outbound ?? [])})`);
  const readyMs = ready.at - p.t0;
  console.log(`whip_view: publishing ${JSON.stringify({ participantId: ready.participantId, room: o.room, name: o.name, readyMs })}`);
  const end = Date.now() + o.seconds * 1000;
  let last = ready;
  while (!stop && Date.now() < end) {
    await sleep(SAMPLE_MS);
    if (stop) break;
    last = await p.sample();
    if (last.pcState === 'failed' || last.pcState === 'closed') throw new TestFailure(`the publisher's connection ${last.pcState}`);
  }
  const sent = (x) => sum(x.outbound.filter((r) => r.kind === 'video'), 'bytesSent');
  const summary = { mode: 'publish', room: o.room, participantId: ready.participantId, readyMs, publishedS: Number(((last.at - ready.at) / 1000).toFixed(1)), videoBytesSent: sent(last) };
  log(`summary ${JSON.stringify(summary)}`);
  return summary;
}

const o = parseArgs(process.argv.slice(2));
const p = new Page(o);
// publish mode: SIGTERM/SIGINT end the run normally (leave, exit 0); view mode: the run fails.
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, async () => {
    if (o.mode === 'publish') {
      stop = true;
      return;
    }
    console.log(`FAIL whip_view (view): ${sig}`);
    await Promise.race([p.close(), sleep(8_000)]);
    process.exit(1);
  });
}
const watchdog = setTimeout(async () => {
  console.log(`FAIL whip_view (${o.mode}): the whole run exceeded ${o.seconds + 60} s`);
  await Promise.race([p.close(), sleep(5_000)]);
  process.exit(1);
}, (o.seconds + 60) * 1000);
let rc = 0;
try {
  await p.open();
  if (o.mode === 'view') await view(p, o);
  else await publish(p, o);
} catch (e) {
  rc = 1;
  console.log(`FAIL whip_view (${o.mode}): ${e instanceof TestFailure ? e.message : e?.stack ?? e}`);
  if (p.problems.length) console.log(`whip_view: page console:\n${p.problems.slice(-15).join('\n')}`);
}
clearTimeout(watchdog);
await p.close();
process.exit(rc);
