// The app's in-call features in real headless Chromium: three participants (one browser, three
// contexts) in one room through a real Confab server, driven through the UI.
//
//   CONFAB_E2E_SCRIPT=app.mjs bash tests/browser/run.sh     (a network namespace with only loopback)
//
// Checks, in order:
//   1. chat: alice sends from the chat panel; bob sees it stamped with alice's id and name and an
//      unread count on his closed panel; carol joins later and finds it in the history; bob's
//      reply reaches alice and carol as bob's; carol's raw frame on the data channel claiming to
//      be from bob is refused (`chat-rejected`: spoofed) and nobody shows it;
//   2. screen share: alice shares (Chromium's fake capture); bob and carol show it as a large
//      tile (speaker view) with decoded frames; alice stops and it is gone at both;
//   3. mutes: alice's mic off (keyboard `m`) and camera off (button) show on bob's tile of alice
//      as her own mutes (badges, the initial instead of the picture), and go again when she
//      turns them back on;
//   4. devices: alice switches camera in the devices panel (replaceTrack): her local description
//      is unchanged (no renegotiation), her sender has the new track, and bob keeps decoding her;
//   5. connection quality shows on the tiles;
//   6. screenshots of the call, the chat and a screen share at 1280×800 and 390×844 go to
//      artifacts/screenshots/ (CI keeps them), each checked for the elements that must show, and
//      at 390 px for no horizontal overflow;
//   7. no page threw an uncaught exception.

import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, CONFAB_BIN, ROOT, ServerProcess, TestFailure, runWithBudget, sleep } from './lib.mjs';

const HTTP_BIND = '127.0.0.1:8080';
const BASE_URL = `http://${HTTP_BIND}`;
const ROOM = 'app';
const TOTAL_BUDGET_MS = 150_000;
const WAIT_MS = 20_000;
const SHOTS = path.join(ROOT, 'artifacts', 'screenshots');
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

const logDir = fs.mkdtempSync(path.join(ROOT, 'target', 'app-e2e-'));
const server = new ServerProcess({
  bin: CONFAB_BIN,
  logPath: path.join(logDir, 'server.log'),
  env: { CONFAB_HTTP__BIND: HTTP_BIND, CONFAB_MEDIA__BIND: '127.0.0.1:50000', RUST_LOG: process.env.CONFAB_E2E_RUST_LOG || 'info' },
});
/** @type {string[]} */
const pageErrors = [];
/** @type {import('playwright-core').Browser | null} */
let browser = null;

function check(cond, what) {
  if (!cond) throw new TestFailure(what);
  console.log(`  ok: ${what}`);
}

/** Polls `fn` in the page until it returns truthy. */
async function until(page, what, fn, arg, timeout = WAIT_MS) {
  try {
    return await (await page.waitForFunction(fn, arg, { timeout, polling: 100 })).jsonValue();
  } catch (e) {
    throw new TestFailure(`${what}: not within ${timeout / 1000} s (${String(e.message).split('\n')[0]})`);
  }
}

async function join(name) {
  const context = await browser.newContext({ viewport: DESKTOP });
  await context.grantPermissions(['camera', 'microphone', 'clipboard-read', 'clipboard-write'], { origin: BASE_URL });
  // Tests reach the chat channel the SDK opened (to send a frame the UI never would).
  await context.addInitScript(() => {
    const create = RTCPeerConnection.prototype.createDataChannel;
    RTCPeerConnection.prototype.createDataChannel = function (...args) {
      const dc = create.apply(this, args);
      /** @type {any} */ (window).__confabDc = dc;
      return dc;
    };
  });
  const page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(`${name}: ${e.message}`));
  await page.goto(`${BASE_URL}/?room=${ROOM}&name=${name}`);
  const id = await until(page, `${name} joins`, () => window.confab.state.participantId);
  await until(page, `${name}'s chat channel opens`, () => window.confab.session?.chatReady === true).catch(async (e) => {
    const st = await page.evaluate(() => ({ media: window.confab.state.mediaState, conn: window.confab.state.connectionState, errors: window.confab.state.errors, events: window.confab.state.events.slice(-3), pc: window.confab.session.pc?.connectionState, ice: window.confab.session.pc?.iceConnectionState, sig: window.confab.session.pc?.signalingState, remote: window.confab.session.pc?.remoteDescription?.sdp, local: window.confab.session.pc?.localDescription?.sdp }));
    throw new TestFailure(`${e.message}; page state: ${JSON.stringify(st)}`);
  });
  return { name, page, id };
}

/** The chat messages a page shows. */
const shown = (p) => p.page.evaluate(() => window.confab.state.chat);

/** Opens or closes a page's chat panel (through its button). */
async function setChat(p, open) {
  const isOpen = await p.page.evaluate(() => !document.getElementById('chat-panel').hidden);
  if (isOpen !== open) await p.page.click(open ? '#btn-chat' : '#chat-close');
}

async function sendFromPanel(p, text) {
  await setChat(p, true);
  await p.page.fill('#chat-input', text);
  await p.page.click('#chat-form button[type=submit]');
}

async function waitForMessage(p, text, from) {
  await until(p.page, `${p.name} shows "${text}"`, ([t, f]) => window.confab.state.chat.some((m) => m.text === t && m.from === f), [text, from]);
}

/** Frames `viewer` decoded from `publisher`'s video so far (camera and screen). */
async function framesFrom(viewer, publisher) {
  const stats = await viewer.page.evaluate(() => window.confabStats());
  return (stats[publisher.id]?.video ?? []).reduce((n, v) => n + v.framesDecoded, 0);
}

async function screenshot(p, file, required, phone) {
  await p.page.setViewportSize(phone ? PHONE : DESKTOP);
  await sleep(400); // layout and tile-view debounce
  for (const sel of required) {
    const visible = await p.page.locator(sel).first().isVisible();
    if (!visible) throw new TestFailure(`${file}: ${sel} is not visible at ${phone ? '390' : '1280'} px`);
  }
  if (phone) {
    const overflow = await p.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (overflow > 0) throw new TestFailure(`${file}: the page is ${overflow} px wider than a 390 px phone`);
  }
  await p.page.screenshot({ path: path.join(SHOTS, file) });
  console.log(`  ok: ${file} (${required.join(', ')} visible${phone ? ', no horizontal overflow' : ''})`);
}

async function main() {
  fs.mkdirSync(SHOTS, { recursive: true });
  server.start();
  await server.waitHealthy(BASE_URL, 30_000);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: [...CHROMIUM_ARGS, '--allow-loopback-in-peer-connection'] });

  console.log('1. chat');
  const alice = await join('alice');
  const bob = await join('bob');
  await sendFromPanel(alice, 'hello from alice');
  await waitForMessage(bob, 'hello from alice', alice.id);
  const seen = (await shown(bob)).find((m) => m.text === 'hello from alice');
  check(seen.name === 'alice' && seen.from === alice.id, 'bob shows alice\'s message under her server-stamped id and name');
  const unread = await bob.page.textContent('#chat-unread');
  check(unread === '1', `bob's closed chat shows 1 unread (${unread})`);
  const carol = await join('carol');
  await waitForMessage(carol, 'hello from alice', alice.id);
  check(true, 'carol, joining later, got the message in the history');
  await sendFromPanel(bob, 'hi from bob');
  await waitForMessage(alice, 'hi from bob', bob.id);
  await waitForMessage(carol, 'hi from bob', bob.id);
  const rejected = await carol.page.evaluate((bobId) => new Promise((resolve) => {
    const dc = /** @type {any} */ (window).__confabDc;
    const t = setTimeout(() => resolve('no answer'), 5000);
    dc.addEventListener('message', (ev) => {
      const m = JSON.parse(ev.data);
      if (m.type === 'chat-rejected') { clearTimeout(t); resolve(m.reason); }
    });
    dc.send(JSON.stringify({ type: 'chat', text: 'I am bob', from: bobId, name: 'bob' }));
  }), bob.id);
  check(rejected === 'spoofed', `carol's frame claiming to be bob was refused (${rejected})`);
  await sleep(1000);
  for (const p of [alice, bob, carol]) {
    const fake = (await shown(p)).some((m) => m.text === 'I am bob');
    check(!fake, `${p.name} does not show the spoofed message`);
  }
  await screenshot(alice, 'desktop-chat.png', ['#chat-panel', '#chat-input', '.chat-msg', '#tiles .tile', '#btn-mic'], false);
  await setChat(alice, false);
  await screenshot(alice, 'desktop-call.png', ['#tiles .tile.local', `.tile[data-participant-id="${bob.id}"]`, '#btn-mic', '#btn-cam', '#btn-share', '#btn-chat', '#btn-leave'], false);

  console.log('2. screen share');
  await alice.page.click('#btn-share');
  await until(alice.page, 'alice shows her share button pressed', () => document.getElementById('btn-share').getAttribute('aria-pressed') === 'true');
  for (const p of [bob, carol]) {
    await until(p.page, `${p.name} shows alice's screen as a large tile with frames`, (id) => {
      const tile = document.querySelector(`.tile.screen[data-participant-id="screen:${id}"]`);
      const video = tile?.querySelector('video');
      return !!tile && tile.classList.contains('stage') && video.videoWidth > 0 && window.confab.state.speakerView;
    }, alice.id);
  }
  check(true, 'bob and carol show alice\'s screen large (speaker view), decoding');
  await screenshot(bob, 'desktop-screenshare.png', ['.tile.screen video', '.tile.stage', '#btn-leave'], false);
  await setChat(bob, false);
  await screenshot(bob, 'phone-screenshare.png', ['.tile.screen video', '#btn-mic', '#btn-leave'], true);
  await screenshot(bob, 'phone-call.png', ['#tiles .tile', '#btn-mic', '#btn-cam', '#btn-chat'], true);
  await setChat(bob, true);
  await screenshot(bob, 'phone-chat.png', ['#chat-panel', '#chat-input', '.chat-msg'], true);
  await setChat(bob, false);
  await bob.page.setViewportSize(DESKTOP);
  await alice.page.click('#btn-share');
  for (const p of [bob, carol]) {
    await until(p.page, `${p.name} drops alice's screen`, () => !document.querySelector('.tile.screen') && window.confab.state.screenShares.length === 0);
  }
  check(true, 'the screen tile is gone at bob and carol after alice stops');

  console.log('3. mutes');
  const tileOfAlice = `.tile[data-participant-id="${alice.id}"]`;
  await alice.page.locator('body').press('m');
  await until(alice.page, 'the m key mutes alice', () => document.getElementById('btn-mic').getAttribute('aria-pressed') === 'true');
  await until(bob.page, 'bob shows alice\'s mic muted', (sel) => {
    const t = document.querySelector(sel);
    return t?.classList.contains('mic-muted') && t.querySelector('.badge-muted[data-kind="audio"][data-by="self"]');
  }, tileOfAlice);
  check(true, 'alice\'s own mic mute shows on bob\'s tile (badge, not "by the host")');
  await alice.page.click('#btn-cam');
  await until(bob.page, 'bob shows alice\'s camera off with her initial', (sel) => {
    const t = document.querySelector(sel);
    return t?.classList.contains('cam-muted') && t.classList.contains('no-video') && t.dataset.initial === 'A';
  }, tileOfAlice);
  check(true, 'alice\'s camera off shows her initial on bob\'s tile');
  await alice.page.locator('body').press('m');
  await alice.page.click('#btn-cam');
  await until(bob.page, 'bob shows alice unmuted again', (sel) => {
    const t = document.querySelector(sel);
    return t && !t.classList.contains('mic-muted') && !t.classList.contains('cam-muted');
  }, tileOfAlice);
  check(true, 'alice\'s unmute reaches bob');

  console.log('4. devices');
  const before = await alice.page.evaluate(() => ({
    sdp: window.confab.session.pc.localDescription.sdp,
    track: window.confab.session.pc.getSenders().find((s) => s.track?.kind === 'video')?.track?.id,
  }));
  const framesBefore = await framesFrom(bob, alice);
  await alice.page.click('#btn-devices');
  const cameras = await alice.page.$$eval('#sel-camera option', (os) => os.map((o) => o.value));
  check(cameras.length > 0, `the devices panel lists ${cameras.length} camera(s)`);
  const target = cameras[cameras.length - 1];
  await alice.page.evaluate((id) => {
    const sel = /** @type {HTMLSelectElement} */ (document.getElementById('sel-camera'));
    sel.value = id;
    sel.dispatchEvent(new Event('change'));
  }, target);
  await until(alice.page, 'alice\'s camera sender gets a new track', (old) => {
    const s = window.confab.session.pc.getSenders().find((x) => x.track?.kind === 'video' && x.track.id !== old);
    return !!s && s.track.readyState === 'live';
  }, before.track);
  const sdpAfter = await alice.page.evaluate(() => window.confab.session.pc.localDescription.sdp);
  check(sdpAfter === before.sdp, 'switching the camera did not renegotiate (same local description)');
  const deadline = Date.now() + WAIT_MS;
  let framesAfter = framesBefore;
  while (Date.now() < deadline && framesAfter < framesBefore + 30) {
    await sleep(300);
    framesAfter = await framesFrom(bob, alice);
  }
  check(framesAfter >= framesBefore + 30, `bob keeps decoding alice after the switch (${framesBefore} → ${framesAfter} frames)`);
  const state = await alice.page.evaluate(() => window.confab.session.pc.connectionState);
  check(state === 'connected', `alice's call stayed up (${state})`);

  console.log('5. connection quality');
  await until(bob.page, 'bob shows alice\'s connection quality', (sel) => document.querySelector(`${sel} .quality`)?.dataset.quality, tileOfAlice);
  const q = await bob.page.evaluate((sel) => document.querySelector(`${sel} .quality`).getAttribute('aria-label'), tileOfAlice);
  check(/^Connection (excellent|good|poor|lost)$/.test(q), `alice's tile at bob says "${q}"`);

  console.log('6. invite link');
  await alice.page.click('#btn-invite');
  await until(alice.page, 'the invite link is copied', () => document.getElementById('invite-status').textContent === 'Link copied');
  const link = await alice.page.evaluate(() => navigator.clipboard.readText());
  check(link === `${BASE_URL}/?room=${ROOM}`, `the invite link names the room only (${link})`);

  check(pageErrors.length === 0, `no uncaught page errors${pageErrors.length ? `: ${pageErrors.join('; ')}` : ''}`);
}

let code = 0;
try {
  const failed = await runWithBudget(main, TOTAL_BUDGET_MS, async (f) => {
    console.error(`app.mjs: FAIL: ${f.message}`);
    await browser?.close().catch(() => {});
    await server.stop();
  });
  if (failed) throw failed;
  console.log('app.mjs: PASS');
} catch (e) {
  code = 1;
  console.error(`app.mjs: FAIL: ${server.explain(e)?.message ?? e}`);
  if (!(e instanceof TestFailure)) console.error(e);
  console.error(`server log: ${path.join(logDir, 'server.log')}`);
} finally {
  await browser?.close().catch(() => {});
  await server.stop();
}
process.exit(code);
