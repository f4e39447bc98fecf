// Unit tests of the SDK's app features (client/confab.js): chat over the "confab" data channel,
// `offer.sources` and screen sharing, self mute (`mute`; other members' self mutes apart from
// the server's), `source` of remote tracks, `connection-quality`, and `switchDevice`.
//
//   node --test tests/client/
//
// Pure parts (`parseChatFrame`, `mergeChat`, `chatTextProblem`, `parseConnectionQuality`) are
// tested directly; the Session through the fakes of fakes.mjs, on node:test's mock timers.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  CHAT_TIMEOUT_MS, ChatError, chatTextProblem, listDevices, MAX_CHAT_CHARS, MAX_CHAT_KEPT, mergeChat,
  parseChatFrame, parseConnectionQuality,
} from '../../client/confab.js';
import {
  BOB, CAROL, FakeLocalTrack, FakeMediaDevices, FakeStream, FakeWebSocket, joinedMsg, joinedSession, joinNow,
  lastSocket, newSession, ofType, SELF, settle, tick, useMockTimersAndCleanUp,
} from './fakes.mjs';

useMockTimersAndCleanUp();

/** A stamped chat message as the server sends it. @param {number} id @param {Record<string, unknown>} [extra] */
const chat = (id, extra = {}) => ({ type: 'chat', id, from: BOB, name: 'bob', ts: 1_764_680_000_000 + id, text: `m${id}`, ...extra });

/** The session's chat channel, opened. @param {any} pc */
const openChannel = (pc) => {
  const dc = pc.dataChannels[0];
  dc.open();
  return dc;
};

/** Lets the session offer (`negotiationneeded`) and returns the offer it sent, answered
 * unless `answer` is false. @param {any} pc @param {FakeWebSocket} ws */
async function offer(pc, ws, answer = true) {
  pc.onnegotiationneeded?.();
  await settle();
  const sent = ws.sentOf('offer').at(-1);
  if (answer) {
    ws.serverSays({ type: 'answer', sdp: 'v=0\r\n' });
    await settle();
  }
  return sent;
}

/** The session's own `mute` messages. @param {FakeWebSocket} ws */
const mutes = (ws) => ws.sentOf('mute').map(({ track_id: id, muted }) => [id, muted]);

/** Resumes the session on a new socket; returns it. */
function resume() {
  lastSocket().drop();
  tick(250);
  const ws = lastSocket();
  ws.open();
  ws.serverSays({ ...joinedMsg(), type: 'resumed' });
  return ws;
}

// ------------------------------------------------------------------ chat: pure parts

describe('parseChatFrame', () => {
  test('a stamped chat, with the echoed client_id; self when from is our id', () => {
    const frame = parseChatFrame(JSON.stringify({ ...chat(17, { from: SELF, name: 'me' }), client_id: 'c1' }), SELF);
    assert.deepEqual(frame, {
      type: 'chat',
      clientId: 'c1',
      message: { id: 17, from: SELF, name: 'me', ts: 1_764_680_000_017, text: 'm17', self: true },
    });
    assert.equal(parseChatFrame(JSON.stringify(chat(18)), SELF)?.type, 'chat');
    assert.equal(/** @type {any} */ (parseChatFrame(JSON.stringify(chat(18)), SELF)).message.self, false);
    assert.equal(/** @type {any} */ (parseChatFrame(JSON.stringify(chat(18)), SELF)).clientId, null);
  });

  test('history keeps its valid messages; rejected carries retryAfterMs for rate_limited only', () => {
    const history = parseChatFrame(JSON.stringify({ type: 'chat-history', messages: [chat(1), { id: 'x' }, null, chat(2)] }), SELF);
    assert.deepEqual(/** @type {any} */ (history).messages.map((/** @type {any} */ m) => m.id), [1, 2]);
    assert.deepEqual(parseChatFrame('{"type":"chat-rejected","reason":"rate_limited","client_id":"c9","retry_after_ms":900}', SELF),
      { type: 'chat-rejected', reason: 'rate_limited', clientId: 'c9', retryAfterMs: 900 });
    assert.deepEqual(parseChatFrame('{"type":"chat-rejected","reason":"too_long","retry_after_ms":5}', SELF),
      { type: 'chat-rejected', reason: 'too_long', clientId: null, retryAfterMs: null });
  });

  test('anything else is null and never throws', () => {
    for (const bad of ['', 'not json', '{', 'null', '42', '"chat"', '[]', '{"type":"chat"}', '{"type":"hello"}',
      '{"type":"chat","id":"1","from":"p","text":"t"}', '{"type":"chat","id":1,"from":"p"}',
      '{"type":"chat-history","messages":{}}', '{"type":"chat-rejected"}']) {
      assert.equal(parseChatFrame(bad, SELF), null, bad);
    }
    assert.equal(parseChatFrame(new ArrayBuffer(4), SELF), null);
    assert.equal(parseChatFrame(undefined, SELF), null);
  });
});

describe('chatTextProblem and mergeChat', () => {
  test('empty after trimming; longer than 2000 code points (not UTF-16 units)', () => {
    assert.equal(chatTextProblem(''), 'empty');
    assert.equal(chatTextProblem(' \n\t '), 'empty');
    assert.equal(chatTextProblem(' hi '), null);
    assert.equal(MAX_CHAT_CHARS, 2000);
    assert.equal(chatTextProblem('😀'.repeat(2000)), null, '4000 UTF-16 units, 2000 code points');
    assert.equal(chatTextProblem('a'.repeat(2001)), 'too_long');
    assert.equal(chatTextProblem('😀'.repeat(2001)), 'too_long');
  });

  test('merges by id: sorted, never twice, the newest kept; added lists what was new', () => {
    const m = (/** @type {number} */ id, text = `m${id}`) => ({ id, from: BOB, name: 'bob', ts: id, text, self: false });
    const { list, added } = mergeChat([m(2), m(5)], [m(4), m(2, 'changed'), m(1), m(4)]);
    assert.deepEqual(list.map((x) => x.id), [1, 2, 4, 5]);
    assert.equal(list[1].text, 'm2', 'the message already there stays');
    assert.deepEqual(added.map((x) => x.id), [1, 4]);
    const capped = mergeChat([m(1), m(2)], [m(3), m(0)], 3);
    assert.deepEqual(capped.list.map((x) => x.id), [1, 2, 3]);
    assert.deepEqual(capped.added.map((x) => x.id), [3], 'an old one past the cap is not added');
  });
});

// ------------------------------------------------------------------ chat: the session

describe('chat over the data channel', () => {
  test('one ordered "confab" channel per PeerConnection, made before its first offer', async () => {
    const { pc, ws } = await joinedSession();
    assert.equal(pc.dataChannels.length, 1);
    assert.equal(pc.dataChannels[0].label, 'confab');
    assert.deepEqual(pc.dataChannels[0].init, { ordered: true });
    assert.equal(ws.sentOf('offer').length, 0, 'before any offer');
  });

  test('a receive-only session gets one too', async () => {
    const { session } = newSession();
    session.receiveOnly();
    await joinNow(session, joinedMsg());
    const pc = /** @type {any} */ (session.pc);
    assert.equal(pc.dataChannels.length, 1);
    assert.equal(pc.dataChannels[0].label, 'confab');
  });

  test('chat-state on open and close; sendChat before open rejects not_connected', async () => {
    const { session, pc, events } = await joinedSession();
    assert.equal(session.chatReady, false);
    await assert.rejects(session.sendChat('hi'), (e) => e instanceof ChatError && e.reason === 'not_connected');
    const dc = openChannel(pc);
    assert.equal(session.chatReady, true);
    const pending = session.sendChat('hi');
    dc.close();
    await assert.rejects(pending, (e) => e instanceof ChatError && e.reason === 'not_connected');
    assert.equal(session.chatReady, false);
    assert.deepEqual(ofType(events, 'chat-state'), [{ ready: true }, { ready: false }]);
  });

  test('sendChat resolves with the stamped echo matched by client_id; chat emitted once', async () => {
    const { session, pc, events } = await joinedSession();
    const dc = openChannel(pc);
    const first = session.sendChat('  hello  ');
    const second = session.sendChat('again');
    assert.equal(dc.sent.length, 2);
    const [a, b] = dc.sent;
    assert.deepEqual(Object.keys(a).sort(), ['client_id', 'text', 'type']);
    assert.equal(a.type, 'chat');
    assert.equal(a.text, '  hello  ', 'sent as given');
    assert.ok(typeof a.client_id === 'string' && a.client_id.length > 0 && a.client_id.length <= 64);
    assert.notEqual(a.client_id, b.client_id);

    // The echo of the second comes first: each resolves with its own.
    dc.serverSends({ ...chat(8, { from: SELF, name: 'me', text: 'again' }), client_id: b.client_id });
    dc.serverSends({ ...chat(7, { from: SELF, name: 'me', text: '  hello  ' }), client_id: a.client_id });
    assert.deepEqual(await first, { id: 7, from: SELF, name: 'me', ts: 1_764_680_000_007, text: '  hello  ', self: true });
    assert.equal((await second).id, 8);
    dc.serverSends(chat(7, { from: SELF, name: 'me', text: '  hello  ' })); // a repeat
    assert.deepEqual(ofType(events, 'chat').map((m) => m.id), [8, 7]);
    assert.deepEqual(session.chatMessages().map((m) => m.id), [7, 8]);
  });

  test('chat-rejected: the send rejects with the reason (retryAfterMs for rate_limited) and is emitted', async () => {
    const { session, pc, events } = await joinedSession();
    const dc = openChannel(pc);
    const limited = session.sendChat('one too many');
    const denied = session.sendChat('no grant');
    dc.serverSends({ type: 'chat-rejected', reason: 'rate_limited', client_id: dc.sent[0].client_id, retry_after_ms: 900 });
    dc.serverSends({ type: 'chat-rejected', reason: 'not_allowed', client_id: dc.sent[1].client_id });
    await assert.rejects(limited, (e) => e instanceof ChatError && e.reason === 'rate_limited' && e.retryAfterMs === 900);
    await assert.rejects(denied, (e) => e instanceof ChatError && e.reason === 'not_allowed' && e.retryAfterMs === null);
    assert.deepEqual(ofType(events, 'chat-rejected'), [
      { reason: 'rate_limited', clientId: dc.sent[0].client_id, retryAfterMs: 900 },
      { reason: 'not_allowed', clientId: dc.sent[1].client_id, retryAfterMs: null },
    ]);
    assert.deepEqual(session.chatMessages(), []);
  });

  test('no reply within 10 s: timeout (a late echo still shows as a message)', async () => {
    const { session, pc, events } = await joinedSession();
    const dc = openChannel(pc);
    let outcome = null;
    session.sendChat('anyone?').catch((e) => { outcome = e; });
    tick(CHAT_TIMEOUT_MS - 100);
    await settle();
    assert.equal(outcome, null);
    tick(100);
    await settle();
    assert.ok(outcome instanceof ChatError);
    assert.equal(/** @type {any} */ (outcome).reason, 'timeout');
    dc.serverSends({ ...chat(3, { from: SELF }), client_id: dc.sent[0].client_id });
    assert.deepEqual(ofType(events, 'chat').map((m) => m.id), [3]);
  });

  test('invalid text is refused locally: nothing sent', async () => {
    const { session, pc } = await joinedSession();
    const dc = openChannel(pc);
    await assert.rejects(session.sendChat('   '), (e) => e instanceof ChatError && e.reason === 'empty');
    await assert.rejects(session.sendChat('x'.repeat(2001)), (e) => e instanceof ChatError && e.reason === 'too_long');
    assert.deepEqual(dc.sent, []);
  });

  test('history merges with live messages: by id, deduplicated, at most 200 kept', async () => {
    const { session, pc, events } = await joinedSession();
    const dc = openChannel(pc);
    dc.serverSends(chat(60));
    dc.serverSends({ type: 'chat-history', messages: [chat(58), chat(59), chat(60)].map(({ type, ...m }) => m) });
    assert.deepEqual(ofType(events, 'chat-history').map((d) => d.messages.map((/** @type {any} */ m) => m.id)), [[58, 59, 60]]);
    assert.deepEqual(ofType(events, 'chat').map((m) => m.id), [60], 'history is not emitted as chat');
    assert.deepEqual(session.chatMessages().map((m) => m.id), [58, 59, 60]);

    for (let id = 61; id < 61 + MAX_CHAT_KEPT; id++) dc.serverSends(chat(id));
    const kept = session.chatMessages();
    assert.equal(kept.length, MAX_CHAT_KEPT);
    assert.equal(kept[0].id, 61);
    assert.equal(kept.at(-1)?.id, 260);
  });

  test('malformed frames are ignored without an error', async () => {
    const { session, pc, events } = await joinedSession();
    const dc = openChannel(pc);
    for (const bad of ['nope', '{"type":"chat","id":1}', '{"type":"chat-history"}', '[1,2]', '{"type":"future"}']) dc.serverSends(bad);
    dc.onmessage({ data: new ArrayBuffer(2) });
    assert.deepEqual(session.chatMessages(), []);
    assert.deepEqual(events.filter((e) => e.type !== 'chat-state'), []);
  });

  test('a full rejoin closes the channel (pending sends fail) and opens one on the new PeerConnection', async () => {
    const { session, pc, ws, events } = await joinedSession();
    const dc = openChannel(pc);
    const pending = session.sendChat('lost');
    ws.serverSays({ type: 'error', code: 'removed', message: 'media connection failed' });
    await assert.rejects(pending, (e) => e instanceof ChatError && e.reason === 'not_connected');
    assert.equal(dc.readyState, 'closed');
    tick(ofType(events, 'reconnecting').at(-1).delayMs);
    lastSocket().open();
    lastSocket().serverSays(joinedMsg({ participant_id: 'pself2' }));
    const next = /** @type {any} */ (session.pc);
    assert.notEqual(next, pc);
    assert.equal(next.dataChannels.length, 1);
    assert.deepEqual(ofType(events, 'chat-state'), [{ ready: true }, { ready: false }]);
  });
});

// ------------------------------------------------------------------ sources and screen share

describe('offer.sources and screen sharing', () => {
  test('the first offer names every track we send', async () => {
    const { pc, ws } = await joinedSession();
    const sent = await offer(pc, ws);
    assert.deepEqual(sent.sources, { 'local-mic-1': 'microphone', 'local-cam-1': 'camera' });
  });

  test('shareScreen: its own transceiver, no simulcast, contentHint detail, named screen in every offer', async () => {
    const { session, pc, ws, events, devices } = await joinedSession();
    await offer(pc, ws);
    const screen = await session.shareScreen();
    assert.deepEqual(devices.displayMediaCalls, [{ video: true, audio: false }]);
    assert.equal(session.screenTrack, screen);
    assert.equal(/** @type {any} */ (screen).contentHint, 'detail');
    assert.deepEqual(ofType(events, 'local-screen'), [{ track: screen }]);
    const camera = pc.transceivers.find((t) => t.sender.track?.id === 'local-cam-1');
    const shared = pc.transceivers.find((t) => t.sender.track === screen);
    assert.equal(camera.init.sendEncodings.length, 3, 'the camera keeps its simulcast layers');
    assert.equal(shared.init.sendEncodings, undefined, 'the screen has one encoding');
    assert.equal(shared.direction, 'sendonly');
    const sent = await offer(pc, ws);
    assert.deepEqual(sent.sources, { 'local-mic-1': 'microphone', 'local-cam-1': 'camera', [screen.id]: 'screen' });
    assert.equal(await session.shareScreen(), screen, 'already sharing: the same track');
    assert.equal(devices.displayMediaCalls.length, 1);
  });

  /** A joined session that publishes only a microphone. */
  async function micOnlySession() {
    const { session } = newSession();
    const mic = new FakeLocalTrack('mic-only', 'audio');
    await session.publish(/** @type {any} */ (new FakeStream([mic])));
    await joinNow(session, joinedMsg());
    return { session, mic, pc: /** @type {any} */ (session.pc) };
  }

  test('a camera published while sharing gets its own transceiver, never the screen\'s', async () => {
    const { session, mic, pc } = await micOnlySession();
    const screen = await session.shareScreen();
    const cam = new FakeLocalTrack('late-cam', 'video');
    await session.publish(/** @type {any} */ (new FakeStream([mic, cam])));
    await settle();
    assert.equal(pc.transceivers.length, 3);
    assert.ok(pc.transceivers.some((/** @type {any} */ t) => t.sender.track === screen), 'still sharing');
    const sent = await offer(pc, lastSocket());
    assert.deepEqual(sent.sources, { 'mic-only': 'microphone', [screen.id]: 'screen', 'late-cam': 'camera' });
  });

  test('nor the m-line of a screen share that ended', async () => {
    const { session, mic, pc } = await micOnlySession();
    const screen = await session.shareScreen();
    await session.stopScreenShare();
    const cam = new FakeLocalTrack('late-cam', 'video');
    await session.publish(/** @type {any} */ (new FakeStream([mic, cam])));
    await settle();
    assert.equal(pc.transceivers.length, 3);
    const sent = await offer(pc, lastSocket());
    assert.deepEqual(sent.sources, { 'mic-only': 'microphone', 'late-cam': 'camera' });
    assert.equal(sent.sources[screen.id], undefined);
  });

  test('an ICE-restart offer carries the sources too', async () => {
    const { session, pc, ws } = await joinedSession();
    const screen = await session.shareScreen();
    pc.goes('failed');
    await settle();
    assert.equal(pc.restartIceCalls, 1);
    assert.deepEqual(ws.sentOf('offer').at(-1).sources,
      { 'local-mic-1': 'microphone', 'local-cam-1': 'camera', [screen.id]: 'screen' });
  });

  test('stopScreenShare (or the browser ending it) removes the sender; the next offer no longer names it', async () => {
    const { session, pc, ws, events } = await joinedSession();
    const screen = /** @type {any} */ (await session.shareScreen());
    const shared = pc.transceivers.find((t) => t.sender.track === screen);
    screen.endByBrowser();
    await settle();
    assert.equal(session.screenTrack, null);
    assert.deepEqual(pc.removedSenders, [shared.sender]);
    assert.deepEqual(ofType(events, 'local-screen'), [{ track: screen }, { track: null }]);
    const sent = await offer(pc, ws);
    assert.deepEqual(sent.sources, { 'local-mic-1': 'microphone', 'local-cam-1': 'camera' });

    // Again, stopped by the app this time; the camera never takes the screen's m-line.
    const again = /** @type {any} */ (await session.shareScreen());
    await session.stopScreenShare();
    assert.equal(again.readyState, 'ended', 'the track is stopped');
    assert.equal(pc.removedSenders.length, 2);
    await session.stopScreenShare(); // nothing to stop
    assert.equal(ofType(events, 'local-screen').length, 4);
  });

  test('a full rejoin shares the screen again on the new PeerConnection', async () => {
    const { session, ws, events } = await joinedSession();
    const screen = await session.shareScreen();
    ws.serverSays({ type: 'error', code: 'removed', message: 'media connection failed' });
    tick(ofType(events, 'reconnecting').at(-1).delayMs);
    const ws2 = lastSocket();
    ws2.open();
    ws2.serverSays(joinedMsg());
    const pc2 = /** @type {any} */ (session.pc);
    assert.ok(pc2.transceivers.some((/** @type {any} */ t) => t.sender.track === screen));
    assert.equal((await offer(pc2, ws2)).sources[screen.id], 'screen');
  });

  test('the offer re-sent after a resume carries the sources', async () => {
    const { pc, ws } = await joinedSession();
    await offer(pc, ws, false); // never answered
    const ws2 = resume();
    await settle();
    assert.deepEqual(ws2.sentOf('offer').map((o) => o.sources), [{ 'local-mic-1': 'microphone', 'local-cam-1': 'camera' }]);
  });
});

// ------------------------------------------------------------------ self mute

describe('self mute', () => {
  test('setMicEnabled / setCameraEnabled send mute by source id, once per change', async () => {
    const { session, pc, ws } = await joinedSession();
    await offer(pc, ws);
    session.setMicEnabled(false);
    session.setMicEnabled(false);
    session.setCameraEnabled(false);
    session.setMicEnabled(true);
    assert.deepEqual(mutes(ws), [['local-mic-1', true], ['local-cam-1', true], ['local-mic-1', false]]);
  });

  test('a track turned off before the offer named it is reported right after that offer', async () => {
    const { session, pc, ws } = await joinedSession();
    session.setMicEnabled(false);
    assert.deepEqual(mutes(ws), [], 'the server does not know the track yet');
    await offer(pc, ws);
    const types = ws.sent.map((m) => m.type).filter((t) => t === 'offer' || t === 'mute');
    assert.deepEqual(types, ['offer', 'mute']);
    assert.deepEqual(mutes(ws), [['local-mic-1', true]]);
    await offer(pc, ws);
    assert.equal(mutes(ws).length, 1, 'a later offer does not repeat it');
  });

  test('after a resume, mute: true again for every track that is off (and what changed meanwhile)', async () => {
    const { session, pc, ws } = await joinedSession();
    await offer(pc, ws);
    session.setCameraEnabled(false);
    lastSocket().drop();
    session.setMicEnabled(false); // while the socket is down: nothing can go
    tick(250);
    const ws2 = lastSocket();
    ws2.open();
    assert.deepEqual(mutes(ws2), []);
    ws2.serverSays({ ...joinedMsg(), type: 'resumed' });
    assert.deepEqual(mutes(ws2).sort(), [['local-cam-1', true], ['local-mic-1', true]]);
  });

  test('after a full rejoin the new member reports its tracks that are off after its first offer', async () => {
    const { session, pc, ws, events } = await joinedSession();
    await offer(pc, ws);
    session.setMicEnabled(false);
    ws.serverSays({ type: 'error', code: 'removed', message: 'media connection failed' });
    tick(ofType(events, 'reconnecting').at(-1).delayMs);
    const ws2 = lastSocket();
    ws2.open();
    ws2.serverSays(joinedMsg());
    assert.deepEqual(mutes(ws2), []);
    await offer(/** @type {any} */ (session.pc), ws2);
    assert.deepEqual(mutes(ws2), [['local-mic-1', true]]);
  });

  test('a track an offer no longer names is reported again once an offer names it again', async () => {
    const { session, pc, ws, mic, stream } = await joinedSession();
    await offer(pc, ws);
    session.setMicEnabled(false);
    await session.unpublish(/** @type {any} */ (mic));
    assert.equal((await offer(pc, ws)).sources['local-mic-1'], undefined);
    stream.addTrack(mic);
    await session.publish(/** @type {any} */ (stream));
    await settle();
    assert.equal((await offer(pc, ws)).sources['local-mic-1'], 'microphone');
    assert.deepEqual(mutes(ws), [['local-mic-1', true], ['local-mic-1', true]], 'the server forgot it with the track');
  });

  test('a server mute of ours is reported as off too (so it stays off for the others after the server lifts it)', async () => {
    const { pc, ws, mic } = await joinedSession();
    await offer(pc, ws);
    ws.serverSays({ type: 'track-muted', participant_id: SELF, track_id: 'ts1', source_track_id: mic.id, by_server: true });
    assert.deepEqual(mutes(ws), [['local-mic-1', true]]);
    ws.serverSays({ type: 'track-muted', participant_id: SELF, track_id: 'ts1', source_track_id: mic.id, by_server: false });
    assert.equal(mic.enabled, false);
    assert.equal(mutes(ws).length, 1);
  });

  test('mutedBy / isMuted for our own id', async () => {
    const { session, ws, mic } = await joinedSession();
    assert.deepEqual(session.mutedBy(SELF, 'audio'), { server: false, self: false });
    session.setMicEnabled(false);
    assert.deepEqual(session.mutedBy(SELF, 'audio'), { server: false, self: true });
    assert.equal(session.isMuted(SELF, 'audio'), true);
    assert.equal(session.isMuted(SELF, 'video'), false);
    ws.serverSays({ type: 'track-muted', participant_id: SELF, track_id: 'ts1', source_track_id: mic.id, by_server: true });
    assert.deepEqual(session.mutedBy(SELF, 'microphone'), { server: true, self: true });
  });
});

describe("another member's self mute", () => {
  /** @param {boolean} muted @param {boolean} byServer @param {string} [trackId] */
  const msg = (muted, byServer, trackId = 'tb1') => ({
    type: muted ? 'track-muted' : 'track-unmuted', participant_id: BOB, track_id: trackId, source_track_id: 'bob-mic', by_server: byServer,
  });

  test('by_server: false is a self mute: events with byServer false, its own flag', async () => {
    const { session, ws, events } = await joinedSession();
    ws.serverSays(msg(true, false));
    assert.deepEqual(ofType(events, 'track-muted').map((d) => [d.trackId, d.kind, d.byServer, d.sourceTrackId]),
      [['tb1', 'audio', false, 'bob-mic']]);
    assert.deepEqual(session.mutedBy(BOB, 'audio'), { server: false, self: true });
    assert.equal(session.isMuted(BOB, 'audio'), true);
    assert.deepEqual(session.participants.get(BOB)?.muted, { audio: true, video: false });
    assert.deepEqual(session.mutedTracks(), [], 'mutedTracks lists server mutes only');
    ws.serverSays(msg(true, false));
    assert.equal(ofType(events, 'track-muted').length, 1, 'a repeat emits nothing');
  });

  test('a server unmute leaves the self mute, and a self unmute leaves the server mute', async () => {
    const { session, ws, events } = await joinedSession();
    ws.serverSays(msg(true, false));
    ws.serverSays(msg(true, true));
    assert.deepEqual(session.mutedBy(BOB, 'audio'), { server: true, self: true });
    ws.serverSays(msg(false, true));
    assert.deepEqual(session.mutedBy(BOB, 'audio'), { server: false, self: true });
    assert.equal(session.isMuted(BOB, 'audio'), true);
    assert.deepEqual(session.participants.get(BOB)?.muted, { audio: true, video: false });
    ws.serverSays(msg(false, false));
    assert.equal(session.isMuted(BOB, 'audio'), false);
    assert.deepEqual(session.participants.get(BOB)?.muted, { audio: false, video: false });

    ws.serverSays(msg(true, true));
    ws.serverSays(msg(false, false)); // not self-muted: nothing to lift
    assert.deepEqual(session.mutedBy(BOB, 'audio'), { server: true, self: false });
    ws.serverSays(msg(true, false));
    ws.serverSays(msg(false, false));
    assert.deepEqual(session.mutedBy(BOB, 'audio'), { server: true, self: false });
    assert.deepEqual(ofType(events, 'track-unmuted').map((d) => d.byServer), [true, false, false]);
  });

  test('self_muted in joined, resumed and participant-joined', async () => {
    const { session, ws, events } = await joinedSession({}, {
      participants: [{ id: BOB, name: 'bob', tracks: [
        { track_id: 'tb1', kind: 'audio', source: 'microphone', self_muted: true },
        { track_id: 'tb2', kind: 'video', source: 'camera', muted: true, self_muted: true },
      ] }],
    });
    assert.deepEqual(session.mutedBy(BOB, 'audio'), { server: false, self: true });
    assert.deepEqual(session.mutedBy(BOB, 'video'), { server: true, self: true });

    // The member list of `resumed` is the state now: what it does not say is lifted.
    lastSocket().drop();
    tick(250);
    const ws2 = lastSocket();
    ws2.open();
    ws2.serverSays({ ...joinedMsg(), type: 'resumed', participants: [{ id: BOB, name: 'bob', tracks: [
      { track_id: 'tb1', kind: 'audio', source: 'microphone' },
      { track_id: 'tb2', kind: 'video', source: 'camera', self_muted: true },
    ] }] });
    assert.deepEqual(session.mutedBy(BOB, 'audio'), { server: false, self: false });
    assert.deepEqual(session.mutedBy(BOB, 'video'), { server: false, self: true });
    assert.deepEqual(ofType(events, 'track-unmuted').map((d) => [d.trackId, d.byServer]), [['tb1', false], ['tb2', true]]);

    ws2.serverSays({ type: 'participant-joined', participant: { id: 'pdave000000', name: 'dave', tracks: [
      { track_id: 'td1', kind: 'audio', source: 'microphone', self_muted: true },
    ] } });
    assert.deepEqual(session.mutedBy('pdave000000', 'audio'), { server: false, self: true });
    assert.deepEqual(session.participants.get('pdave000000')?.muted, { audio: true, video: false });
    assert.equal(ws.sentOf('mute').length + ws2.sentOf('mute').length, 0);
  });

  test('by source: a muted screen is not the camera', async () => {
    const { session, ws } = await joinedSession();
    ws.serverSays({ type: 'track-published', participant_id: BOB, track_id: 'tb3', kind: 'video', source: 'screen' });
    ws.serverSays(msg(true, false, 'tb3'));
    assert.deepEqual(session.mutedBy(BOB, 'screen'), { server: false, self: true });
    assert.deepEqual(session.mutedBy(BOB, 'camera'), { server: false, self: false });
    assert.equal(session.isMuted(BOB, 'video'), true, 'a kind asks about any track of it');
  });
});

// ------------------------------------------------------------------ remote source

describe('source of remote tracks', () => {
  test('from track-published and member lists, else the default of the kind', async () => {
    const { session, ws, pc, events } = await joinedSession({}, {
      participants: [{ id: BOB, name: 'bob', tracks: [{ track_id: 'tb1', kind: 'audio', source: 'microphone' }, { track_id: 'tb2', kind: 'video' }] },
        { id: CAROL, name: 'carol', tracks: [{ track_id: 'tc9', kind: 'video', source: 'screen' }] }],
    });
    ws.serverSays({ type: 'track-published', participant_id: BOB, track_id: 'tb3', kind: 'video', source: 'screen' });
    ws.serverSays({ type: 'track-published', participant_id: BOB, track_id: 'tb4', kind: 'audio', source: 'bogus' });
    assert.deepEqual(ofType(events, 'track-published'), [
      { participantId: BOB, trackId: 'tb3', kind: 'video', source: 'screen' },
      { participantId: BOB, trackId: 'tb4', kind: 'audio', source: 'microphone' },
    ]);
    assert.deepEqual(session.participants.get(BOB)?.tracks.map((t) => t.source), ['microphone', 'camera', 'screen', 'microphone']);
    pc.receives(BOB, 'tb3', 'video');
    pc.receives(BOB, 'tb2', 'video');
    pc.receives(CAROL, 'tc9', 'video');
    assert.deepEqual(ofType(events, 'track').map((d) => [d.trackId, d.source]), [['tb3', 'screen'], ['tb2', 'camera'], ['tc9', 'screen']]);
    assert.deepEqual(session.remoteTracks().map((d) => d.source), ['screen', 'camera', 'screen']);
  });
});

// ------------------------------------------------------------------ connection quality

describe('connection-quality', () => {
  test('parseConnectionQuality keeps valid entries, clamps loss, null for a non-array', () => {
    assert.deepEqual(parseConnectionQuality([
      { participant_id: 'pa', quality: 'good', loss: 0.031 },
      { participant_id: 'pb', quality: 'lost', loss: 7 },
      { participant_id: 'pc', quality: 'poor' },
      { participant_id: 'pd', quality: 'meh', loss: 0 },
      { participant_id: '', quality: 'good', loss: 0 },
      null,
    ]), { pa: { quality: 'good', loss: 0.031 }, pb: { quality: 'lost', loss: 1 }, pc: { quality: 'poor', loss: 0 } });
    assert.equal(parseConnectionQuality(undefined), null);
    assert.equal(parseConnectionQuality({}), null);
  });

  test('emits the ratings and keeps them per participant, ours too; a member who leaves is forgotten', async () => {
    const { session, ws, events } = await joinedSession();
    assert.equal(session.connectionQuality(SELF), null);
    ws.serverSays({ type: 'connection-quality', qualities: [
      { participant_id: SELF, quality: 'excellent', loss: 0 },
      { participant_id: BOB, quality: 'poor', loss: 0.12 },
    ] });
    assert.deepEqual(ofType(events, 'connection-quality'), [{ qualities: {
      [SELF]: { quality: 'excellent', loss: 0 }, [BOB]: { quality: 'poor', loss: 0.12 },
    } }]);
    assert.deepEqual(session.connectionQuality(SELF), { quality: 'excellent', loss: 0 });
    assert.deepEqual(session.connectionQuality(BOB), { quality: 'poor', loss: 0.12 });
    assert.equal(session.connectionQuality(CAROL), null);
    ws.serverSays({ type: 'connection-quality' });
    ws.serverSays({ type: 'connection-quality', qualities: 'bad' });
    assert.equal(ofType(events, 'connection-quality').length, 1, 'malformed: nothing changes');
    ws.serverSays({ type: 'participant-left', participant_id: BOB });
    assert.equal(session.connectionQuality(BOB), null);
    assert.deepEqual(session.connectionQuality(SELF), { quality: 'excellent', loss: 0 });
  });
});

// ------------------------------------------------------------------ devices

describe('switchDevice', () => {
  test('replaceTrack to the new device; mute state, stream place and the source id carry over', async () => {
    const { session, pc, ws, events, devices, cam, stream } = await joinedSession();
    await offer(pc, ws);
    session.setCameraEnabled(false);
    const camera = pc.transceivers.find((t) => t.sender.track === cam);
    const next = await session.switchDevice('videoinput', 'cam-b');
    assert.deepEqual(devices.userMediaCalls, [{ video: { width: 1280, deviceId: { exact: 'cam-b' } } }]);
    assert.equal(camera.sender.track, next, 'the same sender, no new transceiver');
    assert.equal(pc.transceivers.length, 2);
    assert.equal(next.enabled, false, 'still off');
    assert.equal(cam.readyState, 'ended', 'the old track is stopped');
    assert.deepEqual(stream.getVideoTracks(), [next]);
    assert.deepEqual(ofType(events, 'local-track-replaced'), [{ kind: 'videoinput', track: next, previous: cam }]);

    // Everything still speaks of the original id.
    session.setCameraEnabled(true);
    assert.deepEqual(mutes(ws).at(-1), ['local-cam-1', false]);
    assert.deepEqual((await offer(pc, ws)).sources, { 'local-mic-1': 'microphone', 'local-cam-1': 'camera' });
    ws.serverSays({ type: 'track-muted', participant_id: SELF, track_id: 'ts2', source_track_id: 'local-cam-1', by_server: true });
    assert.equal(next.enabled, false, 'a server mute finds the new track');
    assert.equal(ofType(events, 'local-muted-by-server')[0].track, next);
    ws.serverSays({ type: 'publish-layers', source_track_id: 'local-cam-1', active: ['q'] });
    await settle();
    assert.deepEqual(camera.sender.encodings.map((/** @type {any} */ e) => [e.rid, e.active]), [['q', true], ['h', false], ['f', false]]);
  });

  test('a server mute from before the switch ends (full rejoin) naming the new track', async () => {
    const { session, ws, events, mic } = await joinedSession();
    ws.serverSays({ type: 'track-muted', participant_id: SELF, track_id: 'ts1', source_track_id: mic.id, by_server: true });
    const next = await session.switchDevice('audioinput', 'mic-b');
    assert.equal(next.enabled, false);
    ws.serverSays({ type: 'error', code: 'removed', message: 'media connection failed' });
    assert.deepEqual(ofType(events, 'local-unmuted-by-server').map((d) => [d.sourceTrackId, d.track, d.cause]),
      [[mic.id, next, 'session-ended']]);
  });

  test('a sender that refuses the track: rejects, the old track stays', async () => {
    const { session, pc, mic, stream } = await joinedSession();
    pc.failReplace = true;
    await assert.rejects(session.switchDevice('audioinput', 'mic-b'));
    assert.deepEqual(stream.getAudioTracks(), [mic]);
    assert.equal(mic.readyState, 'live');
    assert.equal(pc.transceivers.find((t) => t.receiver.track.kind === 'audio').sender.track, mic);
  });

  test('listDevices groups enumerateDevices by kind', async () => {
    const devices = new FakeMediaDevices();
    devices.devices = [
      { deviceId: 'm1', groupId: 'g1', kind: 'audioinput', label: 'Mic' },
      { deviceId: 'c1', groupId: 'g2', kind: 'videoinput', label: 'Cam' },
      { deviceId: 's1', groupId: 'g1', kind: 'audiooutput', label: 'Speaker' },
      { deviceId: 'x', groupId: '', kind: 'other', label: '' },
    ];
    Object.defineProperty(globalThis, 'navigator', { value: { mediaDevices: devices }, configurable: true, writable: true });
    assert.deepEqual(await listDevices(), {
      audioinput: [{ deviceId: 'm1', groupId: 'g1', kind: 'audioinput', label: 'Mic' }],
      videoinput: [{ deviceId: 'c1', groupId: 'g2', kind: 'videoinput', label: 'Cam' }],
      audiooutput: [{ deviceId: 's1', groupId: 'g1', kind: 'audiooutput', label: 'Speaker' }],
    });
  });
});
