#!/usr/bin/env node
// Launch shim for a WebDriver BiDi browser (Firefox) inside another network namespace, used by
// firefox.mjs as puppeteer's `executablePath` (through a generated one-line shell script):
//
//   node tests/browser/bidi-relay.mjs NS WRAPPER [ARG...]
//
// runs WRAPPER ARG... (netns.sh's wrapper: the browser inside namespace NS) and passes its output
// through, except for the line Firefox prints once its remote agent listens,
// `WebDriver BiDi listening on ws://127.0.0.1:PORT`. That address is NS's own loopback, which the
// test's node (in the server's namespace) cannot reach, and Firefox binds its remote agent to
// localhost only. So this shim listens on 127.0.0.1:PORT in its own namespace (the same port:
// Firefox's HTTP server answers 400 to a Host header naming another one), passes the line on
// (puppeteer reads it and connects there), and carries each connection into NS through a
// helper, `ip netns exec NS node -e <pipe stdin/stdout to 127.0.0.1:PORT>`. Nothing listens
// beyond loopback, in either namespace.
//
// SIGTERM, SIGINT and SIGHUP are passed to the browser; the shim exits when the browser does, with
// its code. Puppeteer kills the shim's whole process group when it gives up on a graceful close,
// and netns.sh's `down` ends whatever is left in NS.

import { spawn } from 'node:child_process';
import net from 'node:net';
import readline from 'node:readline';

const [ns, wrapper, ...args] = process.argv.slice(2);
if (!ns || !wrapper) {
  console.error('usage: node bidi-relay.mjs NS WRAPPER [ARG...]');
  process.exit(2);
}

// Runs in NS: one connection to the browser's remote agent, spliced onto stdin/stdout.
const HELPER = `const s = require('net').connect(Number(process.argv[2]), process.argv[1]);
process.stdin.pipe(s); s.pipe(process.stdout);
s.on('error', () => process.exit(1)); s.on('close', () => process.exit(0));
process.stdin.on('end', () => s.end());`;

const child = spawn(wrapper, args, { stdio: ['ignore', 'inherit', 'pipe'] });
/** @type {net.Server | null} */
let server = null;
const helpers = new Set();

function relay(host, port) {
  return new Promise((resolve, reject) => {
    const srv = net.createServer((sock) => {
      const h = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', HELPER, host, String(port)],
        { stdio: ['pipe', 'pipe', 'inherit'] });
      helpers.add(h);
      sock.pipe(h.stdin);
      h.stdout.pipe(sock);
      const end = () => { sock.destroy(); h.kill(); };
      sock.on('close', end);
      sock.on('error', end);
      h.on('exit', () => { helpers.delete(h); sock.destroy(); });
      h.stdin.on('error', end);
    });
    srv.on('error', reject);
    srv.listen(port, '127.0.0.1', () => resolve(srv));
  });
}

const LISTENING = /^WebDriver BiDi listening on ws:\/\/(127\.0\.0\.1|localhost|\[::1\]):(\d+)(.*)$/;
const lines = readline.createInterface({ input: child.stderr });
lines.on('line', async (line) => {
  const m = LISTENING.exec(line);
  if (!m || server) {
    process.stderr.write(`${line}\n`);
    return;
  }
  const host = m[1] === 'localhost' ? '127.0.0.1' : m[1].replace(/^\[|\]$/g, '');
  try {
    server = await relay(host, Number(m[2]));
    process.stderr.write(`WebDriver BiDi listening on ws://127.0.0.1:${m[2]}${m[3]}\n`);
  } catch (e) {
    process.stderr.write(`bidi-relay: cannot listen on 127.0.0.1:${m[2]}: ${e.message}\n`);
    child.kill('SIGTERM');
  }
});

for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(sig, () => child.kill(sig));
child.on('error', (e) => {
  process.stderr.write(`bidi-relay: cannot run ${wrapper}: ${e.message}\n`);
  process.exit(127);
});
child.on('exit', (code, signal) => {
  server?.close();
  for (const h of helpers) h.kill();
  process.exit(code ?? (signal ? 128 + 15 : 1));
});
