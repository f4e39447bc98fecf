// The app's in-call features in real headless Chromium: three participants (one browser, three
// contexts) in one room through a real Confab server, driven through the UI.
//
//   CONFAB_E2E_SCRIPT=app.mjs bash tests/browser/run.sh     (a network namespace with only loopback)
//
// Checks, in order:
//   1. chat: alice sends from the chat panel; bob sees it stamped with alice's id and name and an
//      unread count on his closed panel; carol opens `?room=` alone and gets the join screen
//      (camera preview with frames, the microphone meter moving, device lists; screenshots),
//      joins with its form and finds the message in the history; bob's reply reaches alice and
//      carol as bob's; carol's raw frame on the data channel claiming to be from bob is refused
//      (`chat-rejected`: spoofed) and nobody shows it; a burst from carol is rate limited and
//      the panel says "Slow down", keeping the text;
//   2. screen share: alice shares (the button; Chromium's fake capture); bob and carol show it
//      as a large tile (speaker view) with decoded frames, alice too; alice stops (the button)
//      and it is gone everywhere; again with the `s` key, stopped as the browser's own "Stop
//      sharing" does (the track ends);
//   3. mutes, keyboard, layout: typing m/v/s/l in the chat input only types; Escape closes the
//      chat; alice's mic off (button) and camera off (`v`) show on bob's tile of alice as her own
//      mutes (badges, "microphone muted", her avatar instead of the picture); Ctrl+D and the
//      button undo them; `l` toggles bob between speaker view (one tile large, the others in a
//      strip) and the grid;
//   4. devices: alice switches camera and microphone in the devices panel (replaceTrack): her
//      sender and self view get the new tracks, her local description is unchanged (no
//      renegotiation), bob keeps decoding her, the call stays connected;
//   5. connection quality shows on the tiles (a member's and the self view) with its label;
//   6. the invite button copies `?room=` (clipboard) and says "Link copied";
//   7. screenshots (join screen, call, chat, screen share, camera off, devices) at 1280×800 and
//      390×844 go to artifacts/screenshots/ (CI keeps them), each checked for the elements that
//      must show, for an accessible name on every visible control and aria-pressed on the
//      toggles, and at 390 px for no horizontal overflow (the chat a full-width overlay);
//   8. no page threw an uncaught exception.
//
// Each page's RTCPeerConnection.createDataChannel is wrapped (an init script) so the test can
// send on the SDK's chat channel what the UI never would.

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

const T0 = Date.now();
const at = () => `${((Date.now() - T0) / 1000).toFixed(1)} s`;

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

/**
 * Opens the app as `name`: with `?room=&name=` it joins at once; `viaForm` opens `?room=` only
 * and checks the join screen (camera preview with frames, microphone meter moving, device
 * lists, screenshots) before joining with its form.
 */
async function join(name, { viaForm = false } = {}) {
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
  if (viaForm) {
    await page.goto(`${BASE_URL}/?room=${ROOM}`);
    check(await page.isVisible('#join-view') && !(await page.isVisible('#call-view')), `${name}: ?room= alone shows the join screen, not the call`);
    await until(page, `${name}'s join screen previews the camera`, () => document.getElementById('preview-video').videoWidth > 0);
    // The fake microphone beeps: the meter moves off zero within a few seconds.
    const level = await until(page, `${name}'s microphone meter moves`, () => {
      const m = /** @type {HTMLMeterElement} */ (document.getElementById('mic-level'));
      return m.value > 0.05 ? m.value : 0;
    });
    check(level > 0.05, `${name}'s microphone meter shows a level (${level.toFixed(2)})`);
    const lists = await page.evaluate(() => ['sel-camera', 'sel-mic'].map((id) => document.getElementById(id).options.length));
    check(lists.every((n) => n > 0), `${name}'s join screen lists cameras and microphones (${lists.join(', ')})`);
    await screenshot({ name, page }, 'desktop-prejoin.png', ['#preview-video', '#mic-level', '#sel-camera', '#sel-mic', '#join-name', '#join-form button[type=submit]'], false);
    await screenshot({ name, page }, 'phone-prejoin.png', ['#preview-video', '#mic-level', '#sel-camera', '#join-name', '#join-form button[type=submit]'], true);
    await page.setViewportSize(DESKTOP);
    await page.fill('#join-name', name);
    await page.click('#join-form button[type=submit]');
  } else {
    await page.goto(`${BASE_URL}/?room=${ROOM}&name=${name}`);
  }
  const id = await until(page, `${name} joins`, () => window.confab.state.participantId);
  if (viaForm) {
    const preview = await page.evaluate(() => document.getElementById('preview-video').srcObject);
    check(preview === null, `${name}: the preview closed once in the call`);
  }
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

/**
 * Every page is still the participant it joined as (no rejoin) and its SDK reported no
 * negotiation error: a lost offer collision ends in the server removing the member and a
 * rejoin under a new id, which would otherwise surface as some tile missing.
 */
async function stable(pages, what) {
  for (const p of pages) {
    const st = await p.page.evaluate(() => ({ id: window.confab.state.participantId, errors: window.confab.state.errors, reconnects: window.confab.session?.reconnects }));
    if (st.id !== p.id || st.errors.some((e) => e.code === 'negotiation')) {
      throw new TestFailure(`${what}: ${p.name} ${st.id !== p.id ? `rejoined (was ${p.id}, now ${st.id})` : 'still the same participant'}; errors: ${JSON.stringify(st.errors)}`);
    }
  }
  console.log(`  ok: ${what}: ${pages.map((p) => p.name).join(', ')} kept their sessions, no negotiation errors`);
}

/** Every tile of `p` plays video with frames, except those with the camera off. */
async function tilesShowVideo(p, what) {
  try {
    await p.page.waitForFunction(() => [...document.querySelectorAll('#tiles .tile')].every((t) => {
      if (t.classList.contains('cam-muted')) return true;
      const v = t.querySelector('video');
      return !t.classList.contains('no-video') && v.videoWidth > 0;
    }), null, { timeout: WAIT_MS, polling: 100 });
  } catch {
    const tiles = await p.page.evaluate(() => [...document.querySelectorAll('#tiles .tile')].map((t) => {
      const v = t.querySelector('video');
      const s = v.srcObject;
      return { id: t.dataset.participantId, cls: t.className, w: v.videoWidth, paused: v.paused, ready: v.readyState,
        tracks: s ? s.getTracks().map((x) => `${x.kind}:${x.readyState}:${x.muted ? 'muted' : 'live'}:${x.enabled ? 'on' : 'off'}`) : null };
    }));
    const stats = await p.page.evaluate(() => window.confabStats());
    throw new TestFailure(`${what}: a tile at ${p.name} shows no video: ${JSON.stringify(tiles)}; stats ${JSON.stringify(stats)}`);
  }
  console.log(`  ok: ${what}: every tile at ${p.name} plays video`);
}

async function screenshot(p, file, required, phone) {
  await p.page.setViewportSize(phone ? PHONE : DESKTOP);
  await sleep(400); // layout and tile-view debounce
  for (const sel of required) {
    const visible = await p.page.locator(sel).first().isVisible();
    if (!visible) {
      const tiles = await p.page.evaluate(() => ({
        tiles: [...document.querySelectorAll('#tiles .tile')].map((t) => ({ id: t.dataset.participantId, cls: t.className, rect: t.getBoundingClientRect().toJSON() })),
        participants: Object.keys(window.confab.state.participants), layout: window.confab.state.layout, speakerView: window.confab.state.speakerView,
        events: window.confab.state.events.slice(-12).map((e) => e.type),
      }));
      throw new TestFailure(`${file}: ${sel} is not visible at ${phone ? '390' : '1280'} px at ${p.name}: ${JSON.stringify(tiles)}`);
    }
  }
  // Every control shown has an accessible name (text, aria-label or a <label>).
  const nameless = await p.page.evaluate(() => [...document.querySelectorAll('button, input, select, meter')]
    .filter((e) => e.checkVisibility() && !(e.getAttribute('aria-label') || e.textContent.trim() || e.labels?.length || e.getAttribute('aria-labelledby')))
    .map((e) => e.id || e.outerHTML.slice(0, 60)));
  if (nameless.length) throw new TestFailure(`${file}: controls without an accessible name: ${nameless.join(', ')}`);
  const toggles = await p.page.evaluate(() => ['btn-mic', 'btn-cam', 'btn-share', 'btn-layout'].map((id) => document.getElementById(id).getAttribute('aria-pressed')));
  if (toggles.some((v) => v !== 'true' && v !== 'false')) throw new TestFailure(`${file}: a toggle lacks aria-pressed (${toggles})`);
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

  console.log(`1. chat (at ${at()})`);
  const alice = await join('alice');
  const bob = await join('bob');
  await sendFromPanel(alice, 'hello from alice');
  await waitForMessage(bob, 'hello from alice', alice.id);
  const seen = (await shown(bob)).find((m) => m.text === 'hello from alice');
  check(seen.name === 'alice' && seen.from === alice.id, 'bob shows alice\'s message under her server-stamped id and name');
  const unread = await bob.page.textContent('#chat-unread');
  check(unread === '1', `bob's closed chat shows 1 unread (${unread})`);
  const carol = await join('carol', { viaForm: true });
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
  // Too many at once: the server's rate limit (a burst of 5, then 1 a second). Five from the
  // SDK and, in the same tick, one from the panel: the panel's is refused and says "Slow down".
  await setChat(carol, true);
  await carol.page.fill('#chat-input', 'one too many');
  const burst = await carol.page.evaluate(() => {
    const sends = [1, 2, 3, 4, 5].map((i) => window.confab.session.sendChat(`burst ${i}`));
    /** @type {HTMLButtonElement} */ (document.querySelector('#chat-form button[type=submit]')).click();
    return Promise.allSettled(sends).then((rs) => rs.map((r) => (r.status === 'fulfilled' ? 'ok' : r.reason.reason)));
  });
  check(burst.every((r) => r === 'ok'), `a burst of five from carol is accepted (${burst.join(', ')})`);
  await until(carol.page, 'carol\'s panel says to slow down', () => window.confab.state.chatError === 'rate_limited' && /^Slow down/.test(document.getElementById('chat-error').textContent) && document.getElementById('chat-error').checkVisibility());
  const kept = await carol.page.inputValue('#chat-input');
  check(kept === 'one too many', 'carol\'s refused message shows "Slow down" and stays in the input');
  await setChat(carol, false);
  await sleep(1000);
  for (const p of [alice, bob, carol]) {
    const fake = (await shown(p)).some((m) => m.text === 'I am bob');
    check(!fake, `${p.name} does not show the spoofed message`);
  }
  await stable([alice, bob, carol], 'three in the call');
  await tilesShowVideo(alice, 'three in the call');
  await screenshot(alice, 'desktop-chat.png', ['#chat-panel', '#chat-input', '.chat-msg', '#tiles .tile', '#btn-mic'], false);
  await setChat(alice, false);
  await screenshot(alice, 'desktop-call.png', ['#tiles .tile.local', `.tile[data-participant-id="${bob.id}"]`, '#btn-mic', '#btn-cam', '#btn-share', '#btn-chat', '#btn-leave'], false);

  console.log(`2. screen share (at ${at()})`);
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
  await until(alice.page, 'alice sees her own screen large', () => document.querySelector('.tile.screen.stage[data-participant-id="screen:local"] video')?.videoWidth > 0);
  await setChat(bob, false);
  const screenTile = `.tile.screen[data-participant-id="screen:${alice.id}"]`;
  await screenshot(bob, 'desktop-screenshare.png', [`${screenTile} video`, '.tile.stage', '#tiles .tile:not(.stage)', '#btn-share', '#btn-leave'], false);
  await screenshot(bob, 'phone-screenshare.png', [`${screenTile} video`, '#btn-mic', '#btn-chat', '#btn-leave'], true);
  await bob.page.setViewportSize(DESKTOP);
  await alice.page.click('#btn-share');
  const dropped = async (how) => {
    for (const p of [bob, carol]) {
      await until(p.page, `${p.name} drops alice's screen (${how})`, () => !document.querySelector('.tile.screen') && window.confab.state.screenShares.length === 0 && !window.confab.state.speakerView);
    }
    await until(alice.page, `alice's share button is released (${how})`, () => document.getElementById('btn-share').getAttribute('aria-pressed') === 'false' && !document.querySelector('.tile.screen'));
    check(true, `the screen tile is gone at bob and carol (and alice) after alice stops (${how})`);
  };
  await dropped('stop button');
  // Again with the `s` key, stopped by the browser (its "Stop sharing" ends the track).
  await alice.page.locator('body').press('s');
  await until(bob.page, 'bob shows alice\'s second share', (sel) => document.querySelector(`${sel} video`)?.videoWidth > 0, screenTile);
  await alice.page.evaluate(() => {
    const track = window.confab.session.screenTrack;
    track.stop(); // stop() alone fires no `ended`; the browser's button does both
    track.dispatchEvent(new Event('ended'));
  });
  await dropped('browser stop');

  console.log(`3. mutes, keyboard, layout (at ${at()})`);
  const tileOfAlice = `.tile[data-participant-id="${alice.id}"]`;
  const pressed = (p, id) => p.page.evaluate((i) => document.getElementById(i).getAttribute('aria-pressed'), id);
  // Letter shortcuts do nothing while typing in the chat input.
  await setChat(alice, true);
  await alice.page.locator('#chat-input').pressSequentially('mvsl');
  const typed = await alice.page.evaluate(() => ({
    text: document.getElementById('chat-input').value,
    mic: window.confab.session.micEnabled, cam: window.confab.session.cameraEnabled,
    sharing: !!window.confab.session.screenTrack, layout: window.confab.state.layout, chat: window.confab.state.chatOpen,
  }));
  check(typed.text === 'mvsl' && typed.mic && typed.cam && !typed.sharing && typed.layout === 'grid' && typed.chat,
    `typing m, v, s, l in the chat input only types (${JSON.stringify(typed)})`);
  await alice.page.fill('#chat-input', '');
  await alice.page.keyboard.press('Escape');
  check(!(await alice.page.evaluate(() => window.confab.state.chatOpen)), 'Escape closes the chat panel');
  // Mic off with the button, camera off with the `v` key.
  await alice.page.click('#btn-mic');
  check(await pressed(alice, 'btn-mic') === 'true', 'alice\'s mic button is pressed (aria-pressed) after a click');
  await until(bob.page, 'bob shows alice\'s mic muted', (sel) => {
    const t = document.querySelector(sel);
    return t?.classList.contains('mic-muted') && t.querySelector('.badge-muted[data-kind="audio"][data-by="self"]')?.checkVisibility()
      && /microphone muted/.test(t.getAttribute('aria-label')) && !/by the host/.test(t.getAttribute('aria-label'));
  }, tileOfAlice);
  check(true, 'alice\'s own mic mute shows on bob\'s tile (a visible badge; "microphone muted", not "by the host")');
  await alice.page.locator('body').press('v');
  await until(alice.page, 'the v key turns alice\'s camera off', () => document.getElementById('btn-cam').getAttribute('aria-pressed') === 'true');
  await until(bob.page, 'bob shows alice\'s camera off with her avatar', (sel) => {
    const t = document.querySelector(sel);
    return t?.classList.contains('cam-muted') && t.classList.contains('no-video') && t.dataset.initial === 'A'
      && getComputedStyle(t, '::after').content === '"A"' && getComputedStyle(t.querySelector('video')).visibility === 'hidden';
  }, tileOfAlice);
  check(true, 'alice\'s camera off shows her avatar ("A", the picture hidden) on bob\'s tile');
  await screenshot(bob, 'desktop-camera-off.png', [tileOfAlice, `${tileOfAlice} .badge-muted`], false);
  // Back on: Ctrl+D for the mic (works from any focus), the button for the camera.
  await alice.page.keyboard.press('Control+d');
  await until(alice.page, 'Ctrl+D unmutes alice', () => document.getElementById('btn-mic').getAttribute('aria-pressed') === 'false' && window.confab.session.micEnabled);
  await alice.page.click('#btn-cam');
  await until(bob.page, 'bob shows alice unmuted again, with her picture', (sel) => {
    const t = document.querySelector(sel);
    return t && !t.classList.contains('mic-muted') && !t.classList.contains('cam-muted') && !t.classList.contains('no-video');
  }, tileOfAlice);
  check(true, 'alice\'s unmutes reach bob (badges gone, picture back)');
  // Speaker view by the `l` key: one tile large, the others in a strip; `l` again: the grid.
  await bob.page.locator('body').press('l');
  const view = await until(bob.page, 'bob switches to speaker view', () => {
    const st = window.confab.state;
    const stage = document.querySelectorAll('#tiles .tile.stage');
    if (st.layout !== 'speaker' || !st.speakerView || stage.length !== 1 || document.getElementById('btn-layout').getAttribute('aria-pressed') !== 'true') return null;
    const big = stage[0].getBoundingClientRect();
    const others = [...document.querySelectorAll('#tiles .tile:not(.stage)')].map((t) => t.getBoundingClientRect());
    return { big: big.width * big.height, largestOther: Math.max(...others.map((r) => r.width * r.height)), others: others.length };
  });
  check(view.others === 2 && view.big > 4 * view.largestOther, `speaker view: one tile large, two in the strip (${Math.round(view.big)} vs ${Math.round(view.largestOther)} px²)`);
  await bob.page.locator('body').press('l');
  await until(bob.page, 'bob is back to the grid', () => window.confab.state.layout === 'grid' && !document.querySelector('#tiles .tile.stage') && document.getElementById('tiles').classList.contains('layout-grid'));
  check(true, 'the l key toggles back to the grid');
  await tilesShowVideo(bob, 'after the mutes');
  await screenshot(bob, 'phone-call.png', ['#tiles .tile.local', tileOfAlice, '#btn-mic', '#btn-cam', '#btn-share', '#btn-chat', '#btn-leave'], true);
  await setChat(bob, true);
  await screenshot(bob, 'phone-chat.png', ['#chat-panel', '#chat-input', '.chat-msg', '#chat-form button[type=submit]'], true);
  const cover = await bob.page.evaluate(() => document.getElementById('chat-panel').getBoundingClientRect().width);
  check(cover === 390, `at 390 px the chat is a full-width overlay (${cover} px)`);
  await setChat(bob, false);
  await bob.page.setViewportSize(DESKTOP);

  console.log(`4. devices (at ${at()})`);
  const senderTrack = (p, kind) => p.page.evaluate((k) => window.confab.session.pc.getSenders().find((s) => s.track?.kind === k)?.track?.id ?? null, kind);
  const before = {
    sdp: await alice.page.evaluate(() => window.confab.session.pc.localDescription.sdp),
    video: await senderTrack(alice, 'video'),
    audio: await senderTrack(alice, 'audio'),
  };
  check(before.video && before.audio, 'alice sends a camera and a microphone track');
  await alice.page.click('#btn-devices');
  check(await alice.page.isVisible('#devices-panel #sel-camera') && await alice.page.getAttribute('#btn-devices', 'aria-expanded') === 'true',
    'the devices button opens the panel with the camera choice');
  const cameras = await alice.page.$$eval('#sel-camera option', (os) => os.map((o) => o.value));
  const mics = await alice.page.$$eval('#sel-mic option', (os) => os.map((o) => o.value));
  check(cameras.length > 0 && mics.length > 0, `the devices panel lists ${cameras.length} camera(s), ${mics.length} microphone(s) (Chromium's fake devices)`);
  await screenshot(alice, 'desktop-devices.png', ['#devices-panel', '#sel-camera', '#sel-mic', '.shortcuts'], false);
  // The fake camera may be the only one: choosing it again still opens a new track and
  // replaces the sent one, which is what must not disturb the call.
  await alice.page.selectOption('#sel-camera', cameras[cameras.length - 1]);
  await until(alice.page, 'alice\'s camera sender gets a new live track', (old) => {
    const s = window.confab.session.pc.getSenders().find((x) => x.track?.kind === 'video' && x.track.id !== old);
    const self = document.querySelector('.tile.local video')?.srcObject;
    return !!s && s.track.readyState === 'live' && self?.getVideoTracks().includes(s.track)
      && window.confab.state.events.some((e) => e.type === 'local-track-replaced');
  }, before.video);
  check(true, 'the switch replaced the camera track in the sender and the self view (local-track-replaced)');
  const framesAtSwitch = await framesFrom(bob, alice);
  await alice.page.selectOption('#sel-mic', mics[mics.length - 1]);
  await until(alice.page, 'alice\'s microphone sender gets a new live track', (old) => {
    const s = window.confab.session.pc.getSenders().find((x) => x.track?.kind === 'audio' && x.track.id !== old);
    return !!s && s.track.readyState === 'live';
  }, before.audio);
  const after = await alice.page.evaluate(() => ({ sdp: window.confab.session.pc.localDescription.sdp, signaling: window.confab.session.pc.signalingState }));
  check(after.sdp === before.sdp && after.signaling === 'stable', 'switching camera and microphone did not renegotiate (same local description)');
  const deadline = Date.now() + WAIT_MS;
  let framesAfter = framesAtSwitch;
  while (Date.now() < deadline && framesAfter < framesAtSwitch + 30) {
    await sleep(300);
    framesAfter = await framesFrom(bob, alice);
  }
  check(framesAfter >= framesAtSwitch + 30, `bob keeps decoding alice's camera after the switch (${framesAtSwitch} → ${framesAfter} frames)`);
  const state = await alice.page.evaluate(() => window.confab.session.pc.connectionState);
  check(state === 'connected', `alice's call stayed up (${state})`);
  await alice.page.keyboard.press('Escape');
  check(!(await alice.page.isVisible('#devices-panel')), 'Escape closes the devices panel');

  console.log(`5. connection quality (at ${at()})`);
  await until(bob.page, 'bob shows alice\'s connection quality', (sel) => document.querySelector(`${sel} .quality`)?.dataset.quality, tileOfAlice);
  const q = await bob.page.evaluate((sel) => document.querySelector(`${sel} .quality`).getAttribute('aria-label'), tileOfAlice);
  check(/^Connection (excellent|good|poor|lost)$/.test(q), `alice's tile at bob says "${q}"`);
  const own = await until(bob.page, 'bob shows his own connection quality', () => document.querySelector('.tile.local .quality')?.dataset.quality);
  const inState = await bob.page.evaluate((id) => window.confab.state.quality[id], alice.id);
  check(own && inState === q.replace('Connection ', ''), `bob's self view shows his own quality (${own}); state.quality has alice's (${inState})`);

  console.log(`6. invite link (at ${at()})`);
  await alice.page.click('#btn-invite');
  await until(alice.page, 'the invite link is copied', () => document.getElementById('invite-status').textContent === 'Link copied');
  const link = await alice.page.evaluate(() => navigator.clipboard.readText());
  check(link === `${BASE_URL}/?room=${ROOM}`, `the invite link names the room only (${link})`);

  await stable([alice, bob, carol], 'at the end');
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
  console.log(`app.mjs: PASS (${at()})`);
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
