// Cluster browser test: real SDK pages behind a load balancer in front of three Confab nodes that
// share a `redis-server` (Debian package, started here). The load balancer is a TCP round robin
// written for the test (WebSocket upgrades and other connections take turns separately, so
// alice's and bob's sockets reach different nodes; a node that refuses connections is skipped,
// as a load balancer's passive health check would). Checks, in order:
//   1. alice and bob, whose signaling reaches different nodes, meet in one room and decode each
//      other's video;
//   2. SIGKILL of the room's owner: both pages notice, rejoin through the load balancer on their
//      own (the SDK: resume refused → fresh join, `unavailable` retried) and decode each other
//      again on a surviving node, within RECOVERY_MS;
//   3. SIGTERM (drain) of the new owner: its sessions are told `going-away`, both pages move to
//      the last node and decode each other again within RECOVERY_MS; the drained node exits.
// Prints each recovery time. Runs in a loopback-only network namespace, like e2e.mjs:
//
//   CONFAB_E2E_SCRIPT=cluster.mjs bash tests/browser/run.sh

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  CHROMIUM, CHROMIUM_ARGS, CLIENT_DIR, CONFAB_BIN, ServerProcess, TestFailure, envMs, runWithBudget, secs, serveClientFrom, sleep, tail,
} from './lib.mjs';

const LB_PORT = 8080;
const BASE_URL = `http://127.0.0.1:${LB_PORT}`;
const REDIS_PORT = 6390;
const NODES = [1, 2, 3].map((i) => ({ id: `n${i}`, http: `127.0.0.1:${18080 + i}`, media: `127.0.0.1:${50000 + i}` }));
const ROOM = `cluster-${process.pid}`;
/** Kill or drain → both pages decode each other again on another node. */
const RECOVERY_MS = envMs('CLUSTER_RECOVERY_MS', 20_000);
const MEET_TIMEOUT_MS = 30_000;
const BUDGET_MS = 150_000;
/** Decoded frames on the current PeerConnection that count as "decoding each other". */
const FRAMES = 30;

const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'confab-cluster-'));
const log = (msg) => console.log(`cluster [${secs(Date.now() - t0)}] ${msg}`);
const t0 = Date.now();
let passed = 0;
const pass = (what) => { passed += 1; log(`PASS ${what}`); };

const servers = NODES.map((n) => new ServerProcess({
  bin: CONFAB_BIN,
  logPath: path.join(tmpDir, `${n.id}.log`),
  env: {
    CONFAB_HTTP__BIND: n.http,
    CONFAB_MEDIA__BIND: n.media,
    CONFAB_MEDIA__TCP_BIND: n.media,
    CONFAB_CLUSTER__REDIS_URL: `redis://127.0.0.1:${REDIS_PORT}/0`,
    CONFAB_CLUSTER__NODE_ID: n.id,
    CONFAB_CLUSTER__HEARTBEAT_INTERVAL: '250ms',
    CONFAB_CLUSTER__NODE_TTL: '1s',
    CONFAB_SERVER__DRAIN_TIMEOUT: '5s',
    CONFAB_LIMITS__JOINS_PER_SECOND_PER_IP: '0',
    CONFAB_LIMITS__JOINS_PER_MINUTE_PER_IDENTITY: '0',
    RUST_LOG: process.env.CLUSTER_RUST_LOG || 'info',
  },
}));
/** @type {import('node:child_process').ChildProcess | null} */
let redis = null;
/** @type {net.Server | null} */
let lb = null;
/** @type {import('playwright-core').Browser | null} */
let browser = null;
/** Which node each WebSocket the load balancer passed reached, in order. */
const wsRoutes = [];

/** The test's load balancer: TCP round robin over the nodes; a refused backend is skipped. */
function startLoadBalancer() {
  const turn = { ws: 0, other: 0 };
  lb = net.createServer((client) => {
    client.once('data', (first) => {
      client.pause();
      const kind = first.subarray(0, 8).toString('latin1') === 'GET /ws ' || first.includes('\r\nUpgrade: websocket') ? 'ws' : 'other';
      const start = turn[kind]++;
      const attempt = (k) => {
        if (k >= NODES.length) { client.destroy(); return; }
        const node = NODES[(start + k) % NODES.length];
        const [host, port] = node.http.split(':');
        const upstream = net.connect(Number(port), host);
        upstream.once('error', () => { upstream.destroy(); attempt(k + 1); });
        upstream.once('connect', () => {
          upstream.removeAllListeners('error');
          if (kind === 'ws') wsRoutes.push(node.id);
          upstream.on('error', () => client.destroy());
          client.on('error', () => upstream.destroy());
          upstream.on('close', () => client.destroy());
          client.on('close', () => upstream.destroy());
          upstream.write(first);
          client.pipe(upstream);
          upstream.pipe(client);
          client.resume();
        });
      };
      attempt(0);
    });
    client.on('error', () => {});
  });
  return new Promise((resolve, reject) => {
    lb.once('error', reject);
    lb.listen(LB_PORT, '127.0.0.1', resolve);
  });
}

async function startRedis() {
  redis = spawn('redis-server', ['--port', String(REDIS_PORT), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  let failed = null;
  redis.on('error', (e) => { failed = e.message; });
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (failed) throw new TestFailure(`redis-server (Debian package redis-server) could not start: ${failed}`);
    const up = await new Promise((resolve) => {
      const s = net.connect(REDIS_PORT, '127.0.0.1');
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (up) return;
    if (Date.now() > deadline) throw new TestFailure('redis-server did not listen within 10 s');
    await sleep(50);
  }
}

/** Where `ROOM` is listed with members, as `GET /api/rooms` through the load balancer lists the
 * cluster, leaving out the nodes in `gone` (a draining node lists its emptied copy until it
 * exits). */
async function owner(gone = []) {
  const res = await fetch(`${BASE_URL}/api/rooms`, { signal: AbortSignal.timeout(3000) });
  const body = await res.json();
  const room = (body.rooms ?? []).find((r) => r.name === ROOM && !gone.includes(r.node) && r.participants?.length);
  return room ? { node: room.node, members: room.participants.map((p) => p.name).sort().join(',') } : null;
}

/** In the page: the session's state and what its current PeerConnection decodes. */
async function sampleInPage() {
  const s = /** @type {any} */ (window).confab?.session;
  const out = { state: s?.state ?? 'none', id: s?.participantId ?? null, reconnects: s?.reconnects ?? 0, pc: s?.pc?.connectionState ?? 'none', others: [], frames: 0 };
  if (!s) return out;
  out.others = [...s.participants.values()].map((p) => p.name);
  if (!s.pc) return out;
  try {
    (await s.pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video') out.frames += r.framesDecoded ?? 0; });
  } catch { /* closing */ }
  return out;
}

const describe = (name, s) => `${name}: state=${s.state} pc=${s.pc} id=${s.id} reconnects=${s.reconnects} others=[${s.others}] frames=${s.frames}`;

/**
 * Waits until alice and bob each see the other and decode video on their current connection;
 * with `notIds`, only sessions other than those count (a rejoin, not the old session).
 */
async function bothDecoding(pages, timeoutMs, notIds = []) {
  const deadline = Date.now() + timeoutMs;
  let last = [];
  for (;;) {
    last = await Promise.all(pages.map((p) => p.page.evaluate(sampleInPage).catch(() => null)));
    const ok = last.every((s, i) => s && s.state === 'connected' && s.pc === 'connected' && !notIds.includes(s.id)
      && s.others.includes(pages[1 - i].name) && s.frames >= FRAMES);
    if (ok) return last;
    if (Date.now() > deadline) {
      throw new TestFailure(`alice and bob do not decode each other within ${secs(timeoutMs)}:\n  ${last.map((s, i) => (s ? describe(pages[i].name, s) : `${pages[i].name}: no sample`)).join('\n  ')}`);
    }
    for (const s of servers) if (s.exit !== null && !s.expectedExit) throw new TestFailure(`a node exited unexpectedly (${s.exit})`);
    await sleep(200);
  }
}

async function body() {
  log(`server ${CONFAB_BIN}; logs in ${tmpDir}`);
  await startRedis();
  for (const s of servers) s.start();
  await Promise.all(servers.map((s, i) => s.waitHealthy(`http://${NODES[i].http}`, 30_000)));
  await startLoadBalancer();
  browser = await chromium.launch({
    executablePath: CHROMIUM, headless: true, timeout: 30_000, args: [...CHROMIUM_ARGS, '--allow-loopback-in-peer-connection'],
  });
  log(`Chromium ${browser.version()}; nodes ${NODES.map((n) => `${n.id}@${n.http}`).join(', ')}; load balancer ${BASE_URL}`);

  const pages = [];
  for (const name of ['alice', 'bob']) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
    if (CLIENT_DIR) await serveClientFrom(context, BASE_URL, CLIENT_DIR);
    const page = await context.newPage();
    page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') fs.appendFileSync(path.join(tmpDir, 'console.log'), `[${name}] ${m.text()}\n`); });
    await page.goto(`${BASE_URL}/?room=${ROOM}&name=${name}`, { waitUntil: 'domcontentloaded', timeout: 15_000 });
    pages.push({ name, page });
    // One after the other: the first socket's node places the room, the second joins it.
    const deadline = Date.now() + 15_000;
    while ((await page.evaluate(() => /** @type {any} */ (window).confab?.session?.state ?? 'none')) !== 'connected') {
      if (Date.now() > deadline) throw new TestFailure(`${name} did not join within 15 s`);
      await sleep(100);
    }
  }

  // 1. meeting across nodes
  let samples = await bothDecoding(pages, MEET_TIMEOUT_MS);
  let at = await owner();
  if (at?.members !== 'alice,bob') throw new TestFailure(`GET /api/rooms does not list ${ROOM} with alice and bob: ${JSON.stringify(at)}`);
  const sockets = wsRoutes.slice(0, 2);
  if (sockets[0] === sockets[1]) throw new TestFailure(`both sockets reached ${sockets[0]}: the load balancer did not spread them`);
  pass(`alice (socket to ${sockets[0]}) and bob (socket to ${sockets[1]}) decode each other in one room hosted by ${at.node}`);

  // 2. the owner dies
  const phases = [['SIGKILL', 'killed'], ['SIGTERM', 'drained']];
  const gone = [];
  for (const [signal, what] of phases) {
    const victim = NODES.findIndex((n) => n.id === at.node);
    if (victim < 0) throw new TestFailure(`the room's owner ${at.node} is not one of the nodes`);
    const oldIds = samples.map((s) => s.id);
    const started = Date.now();
    servers[victim].expectedExit = true;
    servers[victim].proc.kill(signal);
    gone.push(at.node);
    samples = await bothDecoding(pages, RECOVERY_MS, oldIds);
    const took = Date.now() - started;
    at = await owner(gone);
    if (at?.members !== 'alice,bob') throw new TestFailure(`after ${what} the room is not listed with alice and bob on a live node: ${JSON.stringify(at)}`);
    pass(`owner ${gone.at(-1)} ${what} (${signal}): alice and bob rejoined on their own and decode each other on ${at.node} after ${secs(took)} `
      + `(reconnects alice=${samples[0].reconnects} bob=${samples[1].reconnects})`);
  }
  // The drained node leaves once its room has moved.
  const drained = servers[NODES.findIndex((n) => n.id === gone[1])];
  const exitBy = Date.now() + 10_000;
  while (drained.exit === null && Date.now() < exitBy) await sleep(100);
  if (drained.exit === null) throw new TestFailure(`drained node ${gone[1]} still running 10 s after its room moved`);
  pass(`drained node ${gone[1]} exited (${drained.exit})`);
}

async function cleanup() {
  await browser?.close().catch(() => {});
  await Promise.all(servers.map((s) => s.stop(2000)));
  redis?.kill('SIGKILL');
  lb?.close();
}

const error = await runWithBudget(body, BUDGET_MS, async (failure) => {
  console.error(`cluster FAILED: ${failure.message}`);
  await cleanup();
});
await cleanup();
if (error) {
  console.error(`cluster FAILED: ${error instanceof TestFailure ? error.message : error?.stack ?? error}`);
  const consoleLog = path.join(tmpDir, 'console.log');
  if (fs.existsSync(consoleLog)) console.error(`--- browser console (last 30 lines) ---\n${tail(consoleLog, 30)}`);
  for (const n of NODES) console.error(`--- ${n.id} (last 25 distinct lines of ${path.join(tmpDir, `${n.id}.log`)}) ---\n${tail(path.join(tmpDir, `${n.id}.log`), 25, { distinct: true })}`);
}
console.log(`cluster: ${passed} passed, ${error ? 1 : 0} failed; websocket routes ${wsRoutes.join(' ')}; logs in ${tmpDir}`);
process.exit(error ? 1 : 0);
