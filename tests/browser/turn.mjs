// TURN end-to-end test (run through turn.sh, which makes the namespaces): coturn in b3 at
// 10.99.0.13:3478 with a shared secret; Confab configured with that secret and URL, so every
// `joined` carries credentials of its own (TURN REST scheme). Checks, in order:
//   1. coturn accepts the credentials Confab minted and refuses a forged or expired one
//      (tests/interop/turn_credentials.py);
//   2. alice (b1, `?relay=1`: iceTransportPolicy 'relay') and bob (b2, direct) decode each
//      other's video, and alice's selected ICE pair is a relay candidate at coturn;
//   3. coturn's log shows the allocation for alice's participant id.
// Prints the time from page load to alice's first decoded remote frame. Exits 1 on failure.

import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';

import { NETNS_BASE_URL, NetnsTest, ROOT, TestFailure, secs, sleep } from './lib.mjs';

const run = promisify(execFile);
const SECRET = `turn-test-${process.pid}-${Math.random().toString(36).slice(2)}`;
const TURN_IP = '10.99.0.13';
const TURN_URL = `turn:${TURN_IP}:3478?transport=udp`;
const BUDGET_MS = 120_000;
const DECODE_TIMEOUT_MS = 30_000;

const test = new NetnsTest({ name: 'turn', netnsId: process.env.TURN_NETNS_ID, netnsSh: process.env.TURN_NETNS_SH });
Object.assign(test.server.env, {
  CONFAB_TURN__URLS: `["${TURN_URL}"]`,
  CONFAB_TURN__SECRET: SECRET,
  CONFAB_TURN__TTL: '10m',
});

let passed = 0;
const pass = (what) => { passed += 1; test.log(`PASS ${what}`); };

/** In the page: decoded frames per remote, and the selected pair's local candidate. */
async function sampleInPage() {
  const s = /** @type {any} */ (window).confab?.session;
  const pc = s?.pc;
  const out = { pcState: pc?.connectionState ?? 'none', frames: 0, local: null, remote: null, inbound: [] };
  if (!pc) return out;
  const stats = await pc.getStats();
  let pairId = null;
  stats.forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') out.frames += r.framesDecoded ?? 0;
    if (r.type === 'transport' && r.selectedCandidatePairId) pairId = r.selectedCandidatePairId;
  });
  const pair = pairId && stats.get(pairId);
  const l = pair && stats.get(pair.localCandidateId);
  const r = pair && stats.get(pair.remoteCandidateId);
  if (l) out.local = { type: l.candidateType, address: l.address, relayProtocol: l.relayProtocol ?? null, url: l.url ?? null };
  if (r) out.remote = { type: r.candidateType, address: `${r.address}:${r.port}` };
  return out;
}

const PAGE = { viewport: { width: 1280, height: 720 }, deviceScale: 1, sampleInPage };

async function body() {
  test.begin();
  const turnLog = path.join(test.tmpDir, 'coturn.log');
  const coturn = spawn('ip', ['netns', 'exec', `${test.netnsId}-b3`, 'turnserver', '-n', '--no-cli',
    `--listening-ip=${TURN_IP}`, `--relay-ip=${TURN_IP}`, '--listening-port=3478',
    '--min-port=49152', '--max-port=49400', '--use-auth-secret', `--static-auth-secret=${SECRET}`,
    '--realm=confab.test', '--no-tls', '--no-dtls', '--fingerprint', '--simple-log',
    `--log-file=${turnLog}`, '--verbose'], { stdio: 'ignore' });
  test.cleanupExtra = () => coturn.kill('SIGTERM');
  await test.startServer();
  await sleep(500); // coturn binds

  // 1. the credentials, against coturn
  try {
    const { stdout } = await run('python3', [path.join(ROOT, 'tests/interop/turn_credentials.py'), `ws://${NETNS_BASE_URL.slice(7)}/ws`, SECRET], { timeout: 60_000 });
    process.stdout.write(stdout);
    pass('coturn accepts the minted credentials and refuses forged and expired ones');
  } catch (e) {
    throw new TestFailure(`credential check failed:\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }

  // 2. media through the relay
  const alice = test.browser(1, 'alice', PAGE);
  const bob = test.browser(2, 'bob', PAGE);
  await test.open([alice, bob]);
  const room = `turn-${process.pid}`;
  const t0 = Date.now();
  await Promise.all([
    alice.page.goto(`${NETNS_BASE_URL}/?room=${room}&name=alice&relay=1`, { waitUntil: 'domcontentloaded' }),
    bob.page.goto(`${NETNS_BASE_URL}/?room=${room}&name=bob`, { waitUntil: 'domcontentloaded' }),
  ]);
  let firstAt = null;
  let a; let b;
  while (Date.now() < t0 + DECODE_TIMEOUT_MS) {
    [a, b] = await Promise.all([alice.sample(), bob.sample()]);
    if (firstAt === null && a.frames > 0) firstAt = Date.now() - t0;
    if (a.frames > 30 && b.frames > 30) break;
    await sleep(250);
  }
  if (!(a.frames > 30 && b.frames > 30)) {
    throw new TestFailure(`no media both ways within ${DECODE_TIMEOUT_MS / 1000} s: alice ${JSON.stringify(a)}, bob ${JSON.stringify(b)}`);
  }
  test.log(`alice (relay): first remote frame ${secs(firstAt)} after page load; selected pair ${JSON.stringify(a.local)} -> ${JSON.stringify(a.remote)}`);
  test.log(`bob (direct): selected pair ${JSON.stringify(b.local)} -> ${JSON.stringify(b.remote)}`);
  if (a.local?.type !== 'relay' || a.local?.address !== TURN_IP) {
    throw new TestFailure(`alice's media is not relayed by coturn: local candidate ${JSON.stringify(a.local)}`);
  }
  if (b.local?.type === 'relay') throw new TestFailure('bob, not asked to relay, uses a relay candidate');
  pass('alice decodes bob and bob decodes alice with alice relayed through coturn');

  // 3. coturn saw alice's allocation under her own credentials (<expiry>:<participant id>)
  const id = await alice.page.evaluate(() => /** @type {any} */ (window).confab?.session?.participantId);
  const log = fs.existsSync(turnLog) ? fs.readFileSync(turnLog, 'utf8') : '';
  if (!id || !log.includes(`:${id}`)) {
    throw new TestFailure(`coturn's log has no allocation for alice (${id}); log tail:\n${log.split('\n').slice(-20).join('\n')}`);
  }
  pass(`coturn authenticated alice as her own participant (${id})`);
}

const error = await test.run(body, BUDGET_MS, async (failure) => {
  test.reportFailure(failure);
  test.cleanupExtra?.();
  await test.cleanup();
});
test.cleanupExtra?.();
if (error) test.reportFailure(error);
await test.cleanup();
console.log(`turn: ${passed} passed, ${error ? 1 : 0} failed`);
process.exit(error ? 1 : 0);
