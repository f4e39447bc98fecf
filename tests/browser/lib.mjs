// Helpers for the browser tests (shaped.mjs, lossy.mjs; written so e2e.mjs can share them too):
// the server process, /healthz, /metrics, serving the web client from disk, log tails, quantiles,
// Chromium's flags.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

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
