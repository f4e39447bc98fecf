// Helpers for the browser tests (shaped.mjs, lossy.mjs; written so e2e.mjs can share them too):
// the server process, /healthz, /metrics, serving the web client from disk, log tails, quantiles,
// Chromium's flags; and the frame of the tests that run in netns.sh's namespaces (NetnsTest: the
// scratch directory, the server, the browsers, NetnsChromium, the sampling loop, the join, the
// clean-up, the failure report).

import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CHROMIUM = '/usr/bin/chromium';
/** Flags every test browser gets: fake camera and microphone, no prompts, no background traffic. */
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
  '--disable-sync',
  '--disable-quic',
];

/** A failed check (as opposed to a bug in the test). */
export class TestFailure extends Error {}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A duration in ms from environment variable `name` (`dflt` when unset or empty); anything but
 * a non-negative number ends the process with exit code 2 (a usage error, not a test failure). */
export function envMs(name, dflt) {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) {
    console.error(`${path.basename(process.argv[1] ?? 'test')}: ${name}=${v} is not a number of ms`);
    process.exit(2);
  }
  return n;
}
export const secs = (ms) => `${(ms / 1000).toFixed(2)} s`;

/**
 * The last `lines` lines of a file, or why it cannot be read. With `distinct`, a line whose text
 * after its leading timestamp already appeared later in the file is left out (say the DTLS
 * handshake's warnings repeated per connection), so the tail reaches further back.
 */
export function tail(file, lines, { distinct = false } = {}) {
  let all;
  try {
    all = fs.readFileSync(file, 'utf8').trimEnd().split('\n');
  } catch (e) {
    return `(cannot read ${file}: ${e.message})`;
  }
  if (!distinct) return all.slice(-lines).join('\n');
  const seen = new Set();
  const kept = [];
  let skipped = 0;
  for (let i = all.length - 1; i >= 0 && kept.length < lines; i--) {
    const text = all[i].replace(/^\S+\s+/, '');
    if (seen.has(text)) skipped++;
    else {
      seen.add(text);
      kept.push(all[i]);
    }
  }
  return `${skipped ? `(${skipped} repeated lines left out)\n` : ''}${kept.reverse().join('\n')}`;
}

/** `confab serve` with its output appended to a log file. */
export class ServerProcess {
  /**
   * @param {object} o
   * @param {string} o.bin      path of the confab binary
   * @param {string} o.logPath  stdout and stderr go here
   * @param {Record<string, string>} o.env  added to the environment (binds, RUST_LOG, …)
   */
  constructor({ bin, logPath, env }) {
    this.bin = bin;
    this.logPath = logPath;
    this.env = env;
    /** @type {import('node:child_process').ChildProcess | null} */
    this.proc = null;
    /** null while running; how it ended otherwise */
    this.exit = /** @type {string | null} */ (null);
  }

  start() {
    if (!fs.existsSync(this.bin)) {
      throw new TestFailure(`server binary ${this.bin} not found: build it (cargo build) or set CONFAB_BIN`);
    }
    const out = fs.openSync(this.logPath, 'a');
    this.proc = spawn(this.bin, ['serve'], { cwd: ROOT, env: { ...process.env, ...this.env }, stdio: ['ignore', out, out] });
    fs.closeSync(out);
    this.proc.on('exit', (code, signal) => { this.exit = signal ? `signal ${signal}` : `exit code ${code}`; });
    this.proc.on('error', (e) => { this.exit = `spawn error: ${e.message}`; });
  }

  assertAlive() {
    if (this.exit !== null) throw new TestFailure(`the server exited during the test (${this.exit})`);
  }

  /** Polls `${baseUrl}/healthz` until it answers 200; throws after `timeoutMs`. */
  async waitHealthy(baseUrl, timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    let last = 'no answer';
    while (Date.now() < deadline) {
      this.assertAlive();
      try {
        const res = await fetch(`${baseUrl}/healthz`, { signal: AbortSignal.timeout(1000) });
        if (res.status === 200) return;
        last = `HTTP ${res.status}`;
      } catch (e) {
        last = e.cause?.code ?? e.message;
      }
      await sleep(100);
    }
    throw new TestFailure(`GET ${baseUrl}/healthz did not answer 200 within ${timeoutMs / 1000} s (last: ${last})`);
  }

  /** `error`, or a TestFailure that also says the server had exited (if it had, and the error does not say so). */
  explain(error) {
    if (!error || this.exit === null || String(error.message).includes('exited')) return error;
    return new TestFailure(`${error.message ?? error} (the server had exited: ${this.exit})`);
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 5000) {
    if (!this.proc || this.exit !== null) return;
    this.proc.kill('SIGTERM');
    const deadline = Date.now() + graceMs;
    while (this.exit === null && Date.now() < deadline) await sleep(50);
    if (this.exit === null) this.proc.kill('SIGKILL');
  }
}

/**
 * Development aid: a context's pages load the web client's scripts and styles from `clientDir`
 * instead of the server's copy (which may be compiled into the binary). The document itself
 * still comes from the server: Chromium's local-network-access checks block the WebSocket of a
 * page whose document Playwright fulfilled.
 * @param {import('playwright-core').BrowserContext} context
 * @param {string} baseUrl
 * @param {string} clientDir  absolute
 */
export async function serveClientFrom(context, baseUrl, clientDir) {
  await context.route((u) => u.origin === baseUrl && u.pathname !== '/ws', (route) => {
    if (route.request().resourceType() === 'document') return route.continue();
    const rel = new URL(route.request().url()).pathname.replace(/^\/+/, '') || 'index.html';
    const file = path.join(clientDir, rel);
    if (!file.startsWith(clientDir + path.sep) || !fs.existsSync(file)) return route.fulfill({ status: 404, body: 'not found' });
    return route.fulfill({ path: file });
  });
}

/**
 * Runs the test body under an overall time budget. Past `budgetMs`, `onTimeout(failure)` runs
 * (report, clean up) and the process exits 1. Resolves to what the body threw, or null.
 * @param {() => Promise<void>} body
 * @param {number} budgetMs
 * @param {(failure: TestFailure) => Promise<void>} onTimeout
 */
export async function runWithBudget(body, budgetMs, onTimeout) {
  const watchdog = setTimeout(async () => {
    await onTimeout(new TestFailure(`the whole test exceeded ${budgetMs / 1000} s`));
    process.exit(1);
  }, budgetMs);
  try {
    await body();
    return null;
  } catch (e) {
    return e;
  } finally {
    clearTimeout(watchdog);
  }
}

/**
 * Parses Prometheus text exposition into metric name → label set (the text between the braces,
 * '' for none) → value. Comments, blank lines and lines that do not parse are skipped; a
 * histogram's or summary's series keep their own names (`_bucket`, `_sum`, `_count`).
 * @param {string} text
 * @returns {Map<string, Map<string, number>>}
 */
export function parsePrometheus(text) {
  const out = new Map();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$/.exec(line);
    if (!m) continue;
    const value = Number(m[4] === '+Inf' ? Infinity : m[4] === '-Inf' ? -Infinity : m[4]);
    if (Number.isNaN(value)) continue;
    if (!out.has(m[1])) out.set(m[1], new Map());
    out.get(m[1]).set(m[3] ?? '', value);
  }
  return out;
}

/**
 * GET `${baseUrl}/metrics`, parsed (parsePrometheus); null if it does not answer 200 in time.
 * @param {string} baseUrl
 * @param {number} [timeoutMs]
 */
export async function fetchMetrics(baseUrl, timeoutMs = 3000) {
  try {
    const res = await fetch(`${baseUrl}/metrics`, { signal: AbortSignal.timeout(timeoutMs) });
    if (res.status !== 200) return null;
    return parsePrometheus(await res.text());
  } catch {
    return null;
  }
}

/**
 * The q-quantile (0..1) of the finite numbers in `xs` by the nearest-rank method; NaN if none.
 * @param {number[]} xs
 * @param {number} q
 */
export function quantile(xs, q) {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (!s.length) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}

/** Busy and total jiffies of the whole machine (/proc/stat). */
export function cpuCounters() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - f[3] - (f[4] ?? 0), total };
}

/** CPU time (user + system, in clock ticks of 1/100 s, as /proc/stat counts) of one process. */
export function cpuTicks(pid) {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(f[11]) + Number(f[12]);
}

const run = promisify(execFile);

/** Sums `read(pid)` over the processes running in a network namespace (processes that exit meanwhile count 0). */
export async function sumOverNamespace(ns, read) {
  const { stdout } = await run('ip', ['netns', 'pids', ns], { timeout: 5_000 });
  let sum = 0;
  for (const pid of stdout.split(/\s+/).filter(Boolean)) {
    try {
      sum += read(pid);
    } catch { /* exited meanwhile */ }
  }
  return sum;
}

// ------------------------------------------------------------------ tests in netns.sh's namespaces

// netns.sh's addresses: the server's namespace S has the bridge at NETNS_SERVER_IP, browser k's
// namespace b<k> the address netnsBrowserIp(k).
export const NETNS_SERVER_IP = '10.99.0.1';
export const NETNS_BASE_URL = `http://${NETNS_SERVER_IP}:8080`;
export const NETNS_MEDIA_ADDR = `${NETNS_SERVER_IP}:50000`;
export const netnsBrowserIp = (k) => `10.99.0.1${k}`;

/** The server binary: CONFAB_BIN (relative to the repository), else the debug build. */
export const CONFAB_BIN = path.resolve(ROOT, process.env.CONFAB_BIN || 'target/debug/confab');
/** CONFAB_E2E_CLIENT_DIR: the pages load the web client's scripts and styles from there (serveClientFrom). */
export const CLIENT_DIR = process.env.CONFAB_E2E_CLIENT_DIR ? path.resolve(ROOT, process.env.CONFAB_E2E_CLIENT_DIR) : null;

const HEALTH_TIMEOUT_MS = 30_000;
/** Every page must decode a first frame from every other within this (else the harness fails). */
const JOIN_TIMEOUT_MS = 30_000;
/** Then the tests wait (up to this long after page.goto) until every page decodes every other
 * steadily over STEADY_OVER_MS; if that never happens they measure anyway. */
export const STEADY_TIMEOUT_MS = 45_000;
export const STEADY_OVER_MS = 2_000;
/** Every page is sampled this often. */
export const SAMPLE_MS = 500;
/** A page that does not answer a sample within this fails the run. */
const EVALUATE_TIMEOUT_MS = 5_000;

/**
 * The frame of a test that runs in netns.sh's namespaces (shaped.mjs, lossy.mjs), started by
 * netns-run.sh beside the server in S: its scratch directory and log, the server (bound to S's
 * addresses), its events (written to samples.json), the browsers, the sampling loop, the join,
 * the clean-up and the failure report.
 */
export class NetnsTest {
  /**
   * @param {object} o
   * @param {string} o.name      `shaped`, `lossy`: log prefix, scratch directory confab-<name>-…,
   *                             room <name>-<pid>, the .sh that runs it
   * @param {string | undefined} o.netnsId  the namespaces' prefix (netns-run.sh exports it)
   * @param {string | undefined} o.netnsSh  netns.sh's path (likewise)
   * @param {string | undefined} o.rustLog  the server's RUST_LOG (default `info`)
   */
  constructor({ name, netnsId, netnsSh, rustLog }) {
    this.name = name;
    this.netnsId = netnsId;
    this.netnsSh = netnsSh;
    this.tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), `confab-${name}-`));
    this.serverLogPath = path.join(this.tmpDir, 'server.log');
    this.startedAt = Date.now();
    this.server = new ServerProcess({
      bin: CONFAB_BIN,
      logPath: this.serverLogPath,
      env: {
        CONFAB_HTTP__BIND: `${NETNS_SERVER_IP}:8080`,
        CONFAB_MEDIA__BIND: NETNS_MEDIA_ADDR,
        CONFAB_MEDIA__TCP_BIND: NETNS_MEDIA_ADDR,
        RUST_LOG: rustLog || 'info',
      },
    });
    /** Link changes and window starts, ms since the start (written to samples.json). */
    this.events = /** @type {{t: number, what: string}[]} */ ([]);
    /** @type {NetnsChromium[]} the browsers opened (cleanup closes them) */
    this.browsers = [];
    /** Set on SIGINT/SIGTERM: the run is being stopped, so what breaks meanwhile is not a finding. */
    this.interrupted = false;
    this.sampling = false;
    /** @type {Error | null} */
    this.samplerError = null;
    /** @type {Promise<void>} */
    this.samplerDone = Promise.resolve();
    /** @type {Promise<void> | null} */
    this.cleaning = null;
  }

  log(msg) {
    console.log(`${this.name} [${secs(Date.now() - this.startedAt).padStart(8)}] ${msg}`);
  }

  event(what) {
    this.events.push({ t: Date.now() - this.startedAt, what });
  }

  /** `bash netns.sh ARGS…`; resolves to its stdout. */
  async netns(...args) {
    return (await run('bash', [this.netnsSh, ...args], { timeout: 10_000 })).stdout;
  }

  /**
   * A browser in namespace b<k> (not open yet).
   * @param {number} k
   * @param {string} name  display name
   * @param {{viewport: {width: number, height: number}, deviceScale: number, sampleInPage: () => Promise<any>}} page
   */
  browser(k, name, page) {
    return new NetnsChromium(this, k, name, page);
  }

  /** Refuses to run without the namespaces; logs the server, the web client and the machine. */
  begin() {
    if (!this.netnsId || !this.netnsSh) throw new TestFailure(`run me through tests/browser/${this.name}.sh (it makes the namespaces)`);
    this.log(`server ${CONFAB_BIN}${CLIENT_DIR ? `, web client from ${CLIENT_DIR}` : ''}; logs in ${this.tmpDir}`);
    this.log(`machine: ${os.cpus().length} cores, load average ${os.loadavg().map((x) => x.toFixed(1)).join(' ')} at the start`);
  }

  async startServer() {
    this.server.start();
    await this.server.waitHealthy(NETNS_BASE_URL, HEALTH_TIMEOUT_MS);
    this.log('server healthy');
  }

  /** @param {NetnsChromium[]} browsers  opened together, closed by cleanup */
  async open(browsers) {
    this.browsers = browsers;
    await Promise.all(browsers.map((b) => b.open()));
  }

  /** Every page joins one room, then the sampling starts. Resolves to when the pages began to load. */
  async join() {
    const room = `${this.name}-${process.pid}`;
    const joinStart = Date.now();
    await Promise.all(this.browsers.map((b) => b.goto(room)));
    this.startSampling();
    return joinStart;
  }

  /** Runs `fn` with the sampling loop stopped (a page being navigated cannot be sampled). */
  async unsampled(fn) {
    await this.stopSampling();
    try {
      return await fn();
    } finally {
      this.samplerError = null;
      this.startSampling();
    }
  }

  /** Opens the room's page in each browser at once; resolves to Date.now() just before each page.goto. */
  openRoom(browsers, room) {
    return this.unsampled(() => Promise.all(browsers.map(async (b) => {
      const t0 = Date.now();
      await b.goto(room);
      return t0;
    })));
  }

  /** Leaves: about:blank (app.js leaves the room on pagehide). */
  leaveRoom(browsers) {
    return this.unsampled(() => Promise.all(browsers.map((b) => b.page.goto('about:blank', { timeout: 10_000 }).catch(() => {}))));
  }

  /** Samples every page every SAMPLE_MS until stopSampling; a page that fails stops it (watch throws). */
  startSampling() {
    this.sampling = true;
    this.samplerDone = (async () => {
      while (this.sampling) {
        const tick = Date.now();
        try {
          await Promise.all(this.browsers.map((b) => b.sample()));
        } catch (e) {
          this.samplerError = e;
          return;
        }
        await sleep(Math.max(0, SAMPLE_MS - (Date.now() - tick)));
      }
    })();
  }

  /** Resolves once the sampling loop has ended. */
  stopSampling() {
    this.sampling = false;
    return this.samplerDone;
  }

  /** Waits `ms` while the pages are sampled, failing early if the server or a page broke. */
  async watch(ms) {
    const until = Date.now() + ms;
    while (Date.now() < until) {
      this.server.assertAlive();
      if (this.samplerError) throw this.samplerError;
      await sleep(Math.min(200, until - Date.now()));
    }
    this.server.assertAlive();
    if (this.samplerError) throw this.samplerError;
  }

  /**
   * Waits until each page passes `first` (it decodes its remotes at all; a harness check: a page
   * still failing it JOIN_TIMEOUT_MS after `joinStart` fails the run, saying it does not decode
   * `whom`), then `steady`; gives up on `steady` STEADY_TIMEOUT_MS after `joinStart`.
   * @param {number} joinStart
   * @param {{first: (b: NetnsChromium) => boolean, steady: (b: NetnsChromium) => boolean, whom: string}} o
   * @returns {Promise<{firstAt: Map<string, number>, steadyAt: Map<string, number>}>} name → ms after joinStart
   */
  async waitForJoin(joinStart, { first, steady, whom }) {
    const firstAt = new Map();
    const steadyAt = new Map();
    const all = this.browsers;
    while (steadyAt.size < all.length && Date.now() < joinStart + STEADY_TIMEOUT_MS) {
      for (const b of all) {
        if (!firstAt.has(b.name) && first(b)) firstAt.set(b.name, Date.now() - joinStart);
        if (!steadyAt.has(b.name) && steady(b)) steadyAt.set(b.name, Date.now() - joinStart);
      }
      if (firstAt.size < all.length && Date.now() > joinStart + JOIN_TIMEOUT_MS) {
        throw new TestFailure(`not every page decodes ${whom} within ${JOIN_TIMEOUT_MS / 1000} s: `
          + all.filter((b) => !firstAt.has(b.name)).map((b) => b.name).join(', '));
      }
      await this.watch(SAMPLE_MS);
    }
    return { firstAt, steadyAt };
  }

  /** `b1 1.50 s, b2 > 45.00 s`: each page's time in `m` (from waitForJoin). */
  joinTimes(m) {
    return this.browsers.map((b) => `${b.name} ${m.has(b.name) ? secs(m.get(b.name)) : `> ${secs(STEADY_TIMEOUT_MS)}`}`).join(', ');
  }

  /**
   * Harness check: every page's selected ICE pair goes from its own address (`b.ip`) to the
   * server's media address (over `protocol`, if given), so the media crosses its veth. Logs the
   * pairs.
   * @param {{protocol?: string, browsers?: NetnsChromium[]}} [o]  `browsers`: only these (default all)
   */
  checkIcePaths({ protocol, browsers = this.browsers } = {}) {
    for (const b of browsers) {
      const now = b.samples.at(-1)?.path;
      if (!now || now.local !== b.ip || now.remote !== NETNS_MEDIA_ADDR || (protocol && now.protocol !== protocol)) {
        throw new TestFailure(`${b.name}'s selected ICE pair is ${JSON.stringify(now)}, `
          + `not ${protocol ? `${protocol} ` : ''}${b.ip} -> ${NETNS_MEDIA_ADDR}: media would bypass its veth`);
      }
    }
    this.log(`ICE paths: ${browsers.map((b) => {
      const p = b.samples.at(-1).path;
      return `${b.name} ${p.protocol} ${p.local} -> ${p.remote}`;
    }).join(', ')}`);
  }

  /** Once: writes samples.json (every sample of every page, ms since the start, raw counters, and
   * the events), closes the browsers, stops the server. */
  cleanup() {
    this.cleaning ??= (async () => {
      this.sampling = false;
      try {
        const dump = Object.fromEntries(this.browsers.map((b) => [b.name, b.samples.map((x) => ({ ...x, t: x.at - this.startedAt }))]));
        fs.writeFileSync(path.join(this.tmpDir, 'samples.json'), JSON.stringify({ events: this.events, samples: dump }));
      } catch { /* best effort */ }
      await Promise.all(this.browsers.map((b) => b.close()));
      await this.server.stop();
    })();
    return this.cleaning;
  }

  /** Why the run failed, each page's last sample and console problems, the server log's tail
   * (nothing once interrupted: what breaks then is not a finding). */
  reportFailure(error) {
    if (this.interrupted) return;
    console.error(`\n${this.name} FAILED: ${error instanceof TestFailure ? error.message : error?.stack ?? error}`);
    for (const b of this.browsers) {
      const last = b.samples.at(-1);
      // `tiles` where the samples have them (JSON leaves an undefined one out).
      const brief = last && { state: last.state, pc: last.pcState, path: last.path, tiles: last.tiles };
      console.error(`\n--- ${b.name}: last sample ${brief ? JSON.stringify(brief) : '(none)'}`);
      console.error(b.problems.length ? b.problems.slice(-20).join('\n') : '(no console errors)');
    }
    console.error(`\n--- server log (last 60 distinct lines of ${this.serverLogPath}) ---\n${tail(this.serverLogPath, 60, { distinct: true })}\n`);
  }

  /**
   * Runs `body` under the time budget (runWithBudget), with SIGINT and SIGTERM handled: they clean
   * up, call `onSignal(sig, code)` and exit 130 / 143 (then this never resolves). Resolves to
   * what the body threw (server.explain'ed), or null.
   * @param {() => Promise<void>} body
   * @param {number} budgetMs
   * @param {(failure: TestFailure) => Promise<void>} onTimeout
   * @param {(sig: string, code: number) => void} [onSignal]
   */
  async run(body, budgetMs, onTimeout, onSignal = () => {}) {
    for (const sig of ['SIGINT', 'SIGTERM']) {
      process.on(sig, async () => {
        this.interrupted = true;
        console.error(`${this.name}: ${sig}, cleaning up`);
        await this.cleanup();
        const code = sig === 'SIGINT' ? 130 : 143;
        onSignal(sig, code);
        process.exit(code);
      });
    }
    const error = this.server.explain(await runWithBudget(body, budgetMs, onTimeout));
    if (this.interrupted) await new Promise(() => {}); // the signal handler cleans up and exits
    return error;
  }
}

/**
 * Runs in every page before its own scripts (NetnsChromium installs it): `window.__netns`, what
 * the tests' in-page samplers share. Reads only the session's public surface (`participants`,
 * `participantForTrack`) and the getStats() report it is given.
 */
function netnsPageHelpers() {
  const nameOf = (s, id) => (id && s?.participants.get(id)?.name) ?? null;
  /** @type {any} */ (window).__netns = {
    /** A participant's display name in session `s`, or null. */
    nameOf,
    /** For an audio or video inbound-rtp report, the fields NetnsChromium.sample relies on (`owner`:
     * the publisher's display name in session `s`, or null); null for any other report. */
    inbound: (s, r) => (r.type !== 'inbound-rtp' || (r.kind !== 'video' && r.kind !== 'audio') ? null : {
      id: r.id,
      kind: r.kind,
      track: r.trackIdentifier,
      owner: nameOf(s, s.participantForTrack(r.trackIdentifier)),
    }),
    /** The selected ICE candidate pair in a getStats() report: local address, remote address:port
     * and the local candidate's protocol; null before there is one. */
    path(stats) {
      let pairId = null;
      stats.forEach((r) => {
        if (r.type === 'transport' && r.selectedCandidatePairId) pairId = r.selectedCandidatePairId;
      });
      const pair = pairId && stats.get(pairId);
      const local = pair && stats.get(pair.localCandidateId);
      const remote = pair && stats.get(pair.remoteCandidateId);
      return local && remote ? { local: local.address, remote: `${remote.address}:${remote.port}`, protocol: local.protocol } : null;
    },
  };
}

/**
 * One headless Chromium *process* in network namespace <netnsId>-b<k> (launched through
 * netns.sh's wrapper), with one page on the server (NETNS_BASE_URL) and its samples.
 */
export class NetnsChromium {
  /**
   * @param {NetnsTest} test
   * @param {number} k     namespace b<k>
   * @param {string} name  display name (the page's ?name=)
   * @param {object} page
   * @param {{width: number, height: number}} page.viewport
   * @param {number} page.deviceScale
   * @param {() => Promise<any>} page.sampleInPage  runs in the page (it sees nothing of this module
   *   but `window.__netns`, netnsPageHelpers) and returns a sample: `inbound` lists streams with
   *   `track` and `owner` (window.__netns.inbound; an owner the session no longer knows is kept
   *   here from earlier samples)
   */
  constructor(test, k, name, { viewport, deviceScale, sampleInPage }) {
    this.test = test;
    this.k = k;
    this.name = name;
    this.ns = `${test.netnsId}-b${k}`;
    /** The browser's address on its veth: netnsBrowserIp(k) unless the test moved it (`netns.sh move`). */
    this.ip = netnsBrowserIp(k);
    this.wrapper = path.join(test.tmpDir, `chromium-b${k}`);
    this.viewport = viewport;
    this.deviceScale = deviceScale;
    this.sampleInPage = sampleInPage;
    /** @type {import('playwright-core').Browser | null} */
    this.browser = null;
    /** @type {import('playwright-core').Page | null} */
    this.page = null;
    /** @type {any[]} */
    this.samples = [];
    /** inbound stream's trackIdentifier → publisher name, kept when the session forgets it */
    this.owners = new Map();
    /** console errors and warnings, uncaught exceptions */
    this.problems = /** @type {string[]} */ ([]);
  }

  async open() {
    await this.test.netns('wrapper', this.test.netnsId, String(this.k), CHROMIUM, this.wrapper);
    this.browser = await chromium.launch({
      executablePath: this.wrapper,
      headless: true,
      timeout: 30_000,
      args: [...CHROMIUM_ARGS, `--unsafely-treat-insecure-origin-as-secure=${NETNS_BASE_URL}`],
    });
    const context = await this.browser.newContext({ viewport: this.viewport, deviceScaleFactor: this.deviceScale });
    await context.addInitScript(netnsPageHelpers);
    if (CLIENT_DIR) await serveClientFrom(context, NETNS_BASE_URL, CLIENT_DIR);
    this.page = await context.newPage();
    this.page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') this.problems.push(`${m.type()}: ${m.text()}`);
    });
    this.page.on('pageerror', (e) => this.problems.push(`uncaught: ${e.message}`));
  }

  async goto(room) {
    await this.page.goto(`${NETNS_BASE_URL}/?room=${room}&name=${this.name}`, { waitUntil: 'domcontentloaded', timeout: 15_000 });
  }

  async sample() {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${EVALUATE_TIMEOUT_MS} ms`)), EVALUATE_TIMEOUT_MS);
    });
    let s;
    try {
      s = await Promise.race([this.page.evaluate(this.sampleInPage), timeout]);
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
