// Unit tests of the SDK's recovery (client/confab.js): rejoin backoff, session resume, and ICE
// restarts on the same PeerConnection.
//
//   node --test tests/client/
//
// The pure parts (`backoffDelay`, `diffParticipants`, `describeMediaFailure`) are tested
// directly; the Session is driven through a fake WebSocket and a fake RTCPeerConnection, on
// node:test's mock timers (setTimeout, setInterval and Date), with `random: () => 0.5` so every
// delay is exact (no jitter). No browser, no server, no real waiting.

import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, mock, test } from 'node:test';

import { backoffDelay, describeMediaFailure, diffParticipants, receivedBytes, Session } from '../../client/confab.js';
import {
  BOB, CAROL, FakePeerConnection, FakeWebSocket, joinedMsg as sharedJoinedMsg, joinNow, lastSocket, ofType, recordEvents,
  SELF, settle, tick,
} from './fakes.mjs';

// ------------------------------------------------------------------ pure helpers

describe('backoffDelay', () => {
  const rejoin = { baseMs: 500, maxMs: 30_000, jitter: 0.5 };
  const exact = () => 0.5;

  test('doubles per attempt from the base and is capped', () => {
    assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 20, 1000].map((n) => backoffDelay(n, rejoin, exact)),
      [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000, 30_000, 30_000]);
    const ice = { baseMs: 1000, maxMs: 30_000, jitter: 0.3 };
    assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map((n) => backoffDelay(n, ice, exact)),
      [1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]);
  });

  test('jitter stays within ±jitter of the value, and never above the cap', () => {
    assert.equal(backoffDelay(0, rejoin, () => 0), 250);
    assert.equal(backoffDelay(0, rejoin, () => 0.999999), 750);
    assert.equal(backoffDelay(2, { baseMs: 1000, maxMs: 30_000, jitter: 0.3 }, () => 0), 2800);
    assert.equal(backoffDelay(2, { baseMs: 1000, maxMs: 30_000, jitter: 0.3 }, () => 0.999999), 5200);
    let seed = 42;
    const rng = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let attempt = 0; attempt < 40; attempt++) {
      const nominal = Math.min(30_000, 500 * 2 ** attempt);
      for (let i = 0; i < 50; i++) {
        const d = backoffDelay(attempt, rejoin, rng);
        assert.ok(d >= nominal * 0.5 - 1 && d <= Math.min(30_000, nominal * 1.5) + 1, `attempt ${attempt}: ${d}`);
      }
    }
  });

  test('no jitter given: exact; a bad attempt counts as the first', () => {
    assert.equal(backoffDelay(3, { baseMs: 250, maxMs: 4000 }, () => 0), 2000);
    assert.equal(backoffDelay(-2, rejoin, exact), 500);
    assert.equal(backoffDelay(Number.NaN, rejoin, exact), 500);
  });
});

describe('diffParticipants', () => {
  test('names exactly who left, who joined, and track changes of the others', () => {
    const current = new Map([
      ['pa', { tracks: [{ track_id: 't1', kind: /** @type {const} */ ('audio') }, { track_id: 't2', kind: /** @type {const} */ ('video') }] }],
      ['pb', { tracks: [] }],
      ['pc', { tracks: [{ track_id: 't3', kind: /** @type {const} */ ('audio') }] }],
    ]);
    const diff = diffParticipants(current, [
      { id: 'pa', tracks: [{ track_id: 't1', kind: 'audio' }, { track_id: 't4', kind: 'video' }] },
      { id: 'pc', tracks: [{ track_id: 't3', kind: 'audio' }] },
      { id: 'pd', tracks: [{ track_id: 't5', kind: 'audio' }] },
    ]);
    assert.deepEqual(diff, {
      left: ['pb'],
      joined: ['pd'],
      published: [{ participantId: 'pa', track: { track_id: 't4', kind: 'video' } }],
      unpublished: [{ participantId: 'pa', trackId: 't2' }],
    });
  });

  test('the same list: no differences', () => {
    const current = new Map([['pa', { tracks: [{ track_id: 't1', kind: /** @type {const} */ ('audio') }] }]]);
    assert.deepEqual(diffParticipants(current, [{ id: 'pa', tracks: [{ track_id: 't1', kind: 'audio' }] }]),
      { left: [], joined: [], published: [], unpublished: [] });
  });
});

describe('describeMediaFailure', () => {
  test('says what happens next, and names UDP blocking once it keeps failing', () => {
    const first = describeMediaFailure('media connection failed', 1, 1000, false);
    assert.match(first, /^media connection failed; /);
    assert.match(first, /retrying in 1 s/);
    assert.doesNotMatch(first, /UDP/);
    const third = describeMediaFailure('media connection still down', 3, 4000, false);
    assert.match(third, /retrying in 4 s/);
    assert.match(third, /UDP may be blocked by the network/);
    assert.match(describeMediaFailure('media connection failed', 2, 2000, true), /UDP/);
  });
});

describe('receivedBytes', () => {
  const inbound = { id: 'I1', type: 'inbound-rtp', bytesReceived: 5 };
  test('the selected pair of each transport, else the transport; null without inbound-rtp', () => {
    const report = new Map([
      ['T1', { id: 'T1', type: 'transport', selectedCandidatePairId: 'P2', bytesReceived: 900 }],
      ['P1', { id: 'P1', type: 'candidate-pair', bytesReceived: 100 }],
      ['P2', { id: 'P2', type: 'candidate-pair', bytesReceived: 700 }],
      ['I1', inbound],
    ]);
    assert.deepEqual(receivedBytes(report), { key: 'pair:P2;', bytes: 700 });
    report.delete('P2');
    assert.deepEqual(receivedBytes(report), { key: 'transport:T1;', bytes: 900 });
    report.delete('I1');
    assert.equal(receivedBytes(report), null);
  });

  test('without transport stats: the selected or nominated pair; junk gives null, never throws', () => {
    assert.deepEqual(receivedBytes(new Map([
      ['P1', { id: 'P1', type: 'candidate-pair', nominated: true, state: 'succeeded', bytesReceived: 42 }],
      ['P2', { id: 'P2', type: 'candidate-pair', nominated: false, state: 'failed', bytesReceived: 1 }],
      ['I1', inbound],
    ])), { key: 'pair:P1;', bytes: 42 });
    assert.equal(receivedBytes(new Map([['I1', inbound]])), null);
    assert.equal(receivedBytes(null), null);
    assert.equal(receivedBytes({ forEach() { throw new Error('x'); } }), null);
    assert.equal(receivedBytes(new Map([['a', null], ['I1', inbound], ['T', { type: 'transport', bytesReceived: 'n/a' }]])), null);
  });
});

// ------------------------------------------------------------------ harness

const globals = /** @type {any} */ (globalThis);
const saved = { WebSocket: globals.WebSocket, RTCPeerConnection: globals.RTCPeerConnection };
/** @type {Session[]} */
const sessions = [];

beforeEach(() => {
  mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'] });
});

afterEach(() => {
  for (const s of sessions.splice(0)) s.leave();
  mock.timers.reset();
  globals.WebSocket = saved.WebSocket;
  globals.RTCPeerConnection = saved.RTCPeerConnection;
  FakeWebSocket.all = [];
  FakePeerConnection.all = [];
});

const DAVE = 'pdave000000';

/**
 * The `joined` (or `resumed`) a server sends: without a resume token unless `extra` has one.
 * @param {Record<string, unknown>} [extra]
 */
const joinedMsg = (extra = {}) => sharedJoinedMsg({ resume_token: undefined, resume_grace_ms: undefined, ...extra });

/**
 * A session joined to room `r` with bob and carol, and every event it emits from then on.
 * @param {Partial<import('../../client/confab.js').SessionOptions>} [options]
 * @param {Record<string, unknown>} [joined]  fields of the server's `joined`
 */
async function joinedSession(options = {}, joined = { resume_token: 'tok1', resume_grace_ms: 15_000 }) {
  globals.WebSocket = FakeWebSocket;
  globals.RTCPeerConnection = FakePeerConnection;
  // The watchdog timings the tests were written for (the SDK's defaults may move).
  const session = new Session({
    url: 'ws://test/ws', room: 'r', name: 'me', random: () => 0.5, socketProbeMs: 1500, stallMs: 2000, ...options,
  });
  sessions.push(session);
  const events = recordEvents(session);
  const ws = await joinNow(session, joinedMsg(joined));
  const pc = /** @type {FakePeerConnection} */ (/** @type {unknown} */ (session.pc));
  events.length = 0;
  return { session, ws, pc, events };
}


// ------------------------------------------------------------------ rejoin backoff

describe('full rejoin backoff', () => {
  test('grows ×2 from 500 ms per failed attempt and is capped at 30 s', async () => {
    const { events } = await joinedSession({}, {}); // no resume token: every loss is a rejoin
    lastSocket().drop();
    for (let i = 0; i < 9; i++) {
      const { delayMs } = ofType(events, 'reconnecting').at(-1);
      const before = FakeWebSocket.all.length;
      tick(delayMs - 1);
      assert.equal(FakeWebSocket.all.length, before, 'no socket before the delay is over');
      tick(1);
      assert.equal(FakeWebSocket.all.length, before + 1, 'a socket once it is over');
      lastSocket().drop(); // never opens
    }
    const reconnecting = ofType(events, 'reconnecting');
    assert.deepEqual(reconnecting.map((d) => d.delayMs),
      [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000, 30_000]);
    assert.deepEqual(reconnecting.map((d) => d.attempt), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.ok(reconnecting.every((d) => d.resuming === false && typeof d.reason === 'string' && d.reason));
  });

  test('the attempt counter is not reset by `joined`, only once the PeerConnection is connected', async () => {
    const { session, events } = await joinedSession({}, {});
    lastSocket().drop();
    tick(500);
    lastSocket().open();
    assert.deepEqual(lastSocket().sent[0], { type: 'join', room: 'r', name: 'me' });
    lastSocket().serverSays(joinedMsg());
    assert.equal(session.reconnects, 1);
    assert.equal(ofType(events, 'joined').at(-1).reconnected, true);

    // Joined, but media never connected: the next rejoin waits longer.
    lastSocket().drop();
    assert.deepEqual(ofType(events, 'reconnecting').map((d) => d.delayMs), [500, 1000]);
    tick(1000);
    lastSocket().open();
    lastSocket().serverSays(joinedMsg());
    assert.equal(session.reconnects, 2);

    // Media flows after this join: the backoff starts over.
    /** @type {FakePeerConnection} */ (FakePeerConnection.all.at(-1)).goes('connected');
    assert.equal(ofType(events, 'media-connected').length, 1);
    lastSocket().drop();
    assert.deepEqual(ofType(events, 'reconnecting').map((d) => d.delayMs), [500, 1000, 500]);
  });

  test('the legacy `backoffMs` steps still work', async () => {
    const { events } = await joinedSession({ backoffMs: [100, 200] }, {});
    lastSocket().drop();
    tick(100);
    lastSocket().drop();
    tick(200);
    lastSocket().drop();
    assert.deepEqual(ofType(events, 'reconnecting').map((d) => d.delayMs), [100, 200, 200]);
  });

  test('`rate_limited` in reply to a join waits at least `retry_after_ms`', async () => {
    const { events } = await joinedSession({}, {});
    lastSocket().drop();
    tick(500);
    const ws = lastSocket();
    ws.open();
    ws.serverSays({ type: 'error', code: 'rate_limited', message: 'too many joins', retry_after_ms: 7000 });
    const last = ofType(events, 'reconnecting').at(-1);
    assert.equal(last.delayMs, 7000);
    assert.equal(ws.readyState, FakeWebSocket.CLOSED, 'the refused socket is closed');
    const count = FakeWebSocket.all.length;
    tick(6999);
    assert.equal(FakeWebSocket.all.length, count);
    tick(1);
    assert.equal(FakeWebSocket.all.length, count + 1);

    // Without the field: the normal backoff (the third attempt: 2 s).
    lastSocket().open();
    lastSocket().serverSays({ type: 'error', code: 'rate_limited', message: 'too many joins' });
    assert.equal(ofType(events, 'reconnecting').at(-1).delayMs, 2000);
  });

  test('`unavailable` in reply to a join (draining server, cluster cannot place the room) retries', async () => {
    const { session, events } = await joinedSession({}, {});
    lastSocket().drop();
    tick(500);
    const ws = lastSocket();
    ws.open();
    ws.serverSays({ type: 'error', code: 'unavailable', message: 'the server is shutting down; retry shortly' });
    assert.equal(ws.readyState, FakeWebSocket.CLOSED, 'the refused socket is closed');
    assert.equal(session.state, 'reconnecting', 'not a fatal error');
    const count = FakeWebSocket.all.length;
    tick(ofType(events, 'reconnecting').at(-1).delayMs);
    assert.equal(FakeWebSocket.all.length, count + 1, 'a new attempt went out');
  });

  test('`rate_limited` while joined (message rate) is only reported', async () => {
    const { session, ws, events } = await joinedSession();
    ws.serverSays({ type: 'error', code: 'rate_limited', message: 'slow down' });
    assert.equal(session.state, 'connected');
    assert.deepEqual(events.map((e) => e.type), ['error']);
  });
});

// ------------------------------------------------------------------ session resume

describe('session resume', () => {
  test('a dropped socket keeps the session and resumes it with the token on a new socket', async () => {
    const { session, ws, pc, events } = await joinedSession({ token: 'access-jwt' });
    assert.equal(ws.sent[0].token, 'access-jwt', 'the access token goes in the join as before');
    ws.drop();

    assert.equal(session.state, 'reconnecting');
    assert.deepEqual(ofType(events, 'reconnecting'), [{
      attempt: 1, delayMs: 250, reason: 'connection to the server closed (1006)', resuming: true,
    }]);
    assert.equal(session.pc, pc, 'same PeerConnection');
    assert.equal(pc.closed, false);
    assert.equal(session.participantId, SELF);
    assert.deepEqual([...session.participants.keys()], [BOB, CAROL]);
    assert.deepEqual(ofType(events, 'participant-left'), []);

    tick(249);
    assert.equal(FakeWebSocket.all.length, 1);
    tick(1);
    const ws2 = lastSocket();
    assert.notEqual(ws2, ws);
    ws2.open();
    assert.deepEqual(ws2.sent, [{ type: 'resume', room: 'r', participant_id: SELF, token: 'tok1' }]);

    ws2.serverSays({
      ...joinedMsg({ resume_token: 'tok2', resume_grace_ms: 15_000, ice_servers: [{ urls: 'stun:stun.example:3478' }] }),
      type: 'resumed',
    });
    assert.equal(session.state, 'connected');
    assert.deepEqual(ofType(events, 'resumed'), [{ participantId: SELF, room: 'r' }]);
    const types = events.map((e) => e.type);
    for (const t of ['joined', 'participant-left', 'participant-joined', 'track-published', 'track-unpublished']) {
      assert.ok(!types.includes(t), `no ${t}: ${types}`);
    }
    assert.equal(session.resumes, 1);
    assert.equal(session.reconnects, 0);
    assert.equal(session.pc, pc);
    assert.deepEqual(pc.setConfigurations.at(-1).iceServers, [{ urls: 'stun:stun.example:3478' }]);
    assert.equal(pc.setConfigurations.at(-1).bundlePolicy, 'max-bundle', 'the rest of the configuration is kept');

    // The next resume uses the new token.
    ws2.drop();
    tick(250);
    lastSocket().open();
    assert.deepEqual(lastSocket().sent[0], { type: 'resume', room: 'r', participant_id: SELF, token: 'tok2' });
  });

  test('a socket that fails to open is retried with growing delays while resuming', async () => {
    const { events } = await joinedSession();
    lastSocket().drop();
    for (let i = 0; i < 4; i++) {
      tick(ofType(events, 'reconnecting').at(-1).delayMs);
      lastSocket().drop();
    }
    assert.deepEqual(ofType(events, 'reconnecting').map((d) => [d.attempt, d.delayMs, d.resuming]),
      [[1, 250, true], [2, 500, true], [3, 1000, true], [4, 2000, true], [5, 4000, true]]);
    assert.deepEqual(ofType(events, 'participant-left'), []);
  });

  test('`resumed` with a changed member list emits exactly the differences', async () => {
    const { session, ws, events } = await joinedSession();
    ws.drop();
    tick(250);
    const ws2 = lastSocket();
    ws2.open();
    events.length = 0;
    ws2.serverSays({
      type: 'resumed',
      participant_id: SELF,
      room: 'r',
      participants: [
        // bob: tb2 ended, tb3 new; carol: gone; dave: new
        { id: BOB, name: 'bob', tracks: [{ track_id: 'tb1', kind: 'audio' }, { track_id: 'tb3', kind: 'video' }] },
        { id: DAVE, name: 'dave', tracks: [{ track_id: 'td1', kind: 'audio' }] },
      ],
      resume_token: 'tok2',
      resume_grace_ms: 15_000,
      ice_servers: [],
    });
    assert.deepEqual(events.map((e) => e.type),
      ['participant-left', 'track-unpublished', 'track-published', 'participant-joined', 'connection-state', 'resumed']);
    assert.equal(events[0].detail.participantId, CAROL);
    assert.deepEqual(events[1].detail, { participantId: BOB, trackId: 'tb2' });
    assert.deepEqual(events[2].detail, { participantId: BOB, trackId: 'tb3', kind: 'video', source: 'camera' });
    assert.equal(events[3].detail.participant.id, DAVE);
    assert.deepEqual([...session.participants.keys()].sort(), [BOB, DAVE].sort());
    assert.deepEqual(session.participants.get(BOB)?.tracks.map((t) => t.track_id), ['tb1', 'tb3']);
  });

  test('`resume-failed` tears the session down and joins afresh on the same socket', async () => {
    const { session, ws, pc, events } = await joinedSession();
    ws.drop();
    tick(250);
    const ws2 = lastSocket();
    ws2.open();
    ws2.serverSays({ type: 'error', code: 'resume-failed', message: 'unknown session' });

    assert.equal(pc.closed, true, 'the old PeerConnection is closed');
    assert.equal(session.pc, null);
    assert.deepEqual(ofType(events, 'participant-left').map((d) => d.participantId), [BOB, CAROL]);
    assert.equal(FakeWebSocket.all.length, 2, 'no new socket');
    assert.deepEqual(ws2.sent.at(-1), { type: 'join', room: 'r', name: 'me' });
    assert.equal(ofType(events, 'reconnecting').at(-1).resuming, false);

    ws2.serverSays(joinedMsg({ participant_id: 'pnew0000000', resume_token: 'tok9' }));
    assert.equal(session.participantId, 'pnew0000000');
    assert.equal(ofType(events, 'joined').at(-1).reconnected, true);
    assert.equal(session.reconnects, 1);
    assert.equal(session.resumes, 0);
    assert.notEqual(session.pc, pc);
    assert.equal(session.state, 'connected');
  });

  test('once the grace period is over, the session joins afresh', async () => {
    const { session, pc, events } = await joinedSession({}, { resume_token: 'tok1', resume_grace_ms: 3000 });
    lastSocket().drop();
    // The server stays unreachable: 250 + 500 + 1000 ms of resume attempts, then the grace ends.
    tick(250);
    lastSocket().drop();
    tick(500);
    lastSocket().drop();
    tick(1000);
    lastSocket().drop();
    assert.deepEqual(ofType(events, 'participant-left'), []);
    tick(3000 - 1750 - 1);
    assert.equal(pc.closed, false);
    tick(1);
    assert.equal(pc.closed, true);
    assert.deepEqual(ofType(events, 'participant-left').map((d) => d.participantId), [BOB, CAROL]);
    const last = ofType(events, 'reconnecting').at(-1);
    assert.equal(last.resuming, false);
    assert.match(last.reason, /could not resume/);
    tick(last.delayMs);
    lastSocket().open();
    assert.deepEqual(lastSocket().sent[0], { type: 'join', room: 'r', name: 'me' });
    lastSocket().serverSays(joinedMsg({ participant_id: 'pnew0000000' }));
    assert.equal(session.participantId, 'pnew0000000');
  });

  test('`removed` ends the session: a full rejoin, not a resume', async () => {
    const { ws, pc, events } = await joinedSession();
    ws.serverSays({ type: 'error', code: 'removed', message: 'replaced by a newer session' });
    assert.equal(pc.closed, true);
    assert.deepEqual(ofType(events, 'participant-left').map((d) => d.participantId), [BOB, CAROL]);
    const last = ofType(events, 'reconnecting').at(-1);
    assert.equal(last.resuming, false);
    tick(last.delayMs);
    lastSocket().open();
    assert.equal(lastSocket().sent[0].type, 'join');
  });

  test('without a resume token (older server) a dropped socket is a full rejoin', async () => {
    const { pc, events } = await joinedSession({}, {});
    lastSocket().drop();
    assert.equal(pc.closed, true);
    assert.equal(ofType(events, 'participant-left').length, 2);
    assert.equal(ofType(events, 'reconnecting')[0].resuming, false);
  });

  test('an offer of ours cut off by the drop is sent again after `resumed`; an offer applied twice works', async () => {
    const { ws, pc } = await joinedSession();
    pc.onnegotiationneeded();
    await settle();
    assert.equal(ws.sentOf('offer').length, 1);
    ws.drop(); // the answer never came
    tick(250);
    const ws2 = lastSocket();
    ws2.open();
    ws2.serverSays({ ...joinedMsg({ resume_token: 'tok2' }), type: 'resumed' });
    await settle();
    assert.equal(ws2.sentOf('offer').length, 1, 'the outstanding offer is sent on the new socket');
    assert.equal(ws2.sentOf('offer')[0].sdp, pc.localDescription?.sdp);

    // The server re-sends an offer it had outstanding (twice, even): each is answered.
    const offer = { type: 'offer', sdp: 'v=0\r\no=- server-offer\r\n' };
    ws2.serverSays(offer);
    await settle();
    ws2.serverSays(offer);
    await settle();
    assert.equal(ws2.sentOf('answer').length, 2);
  });

  test('candidates gathered while the socket is down are sent once resumed', async () => {
    const { ws, pc } = await joinedSession();
    ws.drop();
    /** @type {any} */ (pc).onicecandidate({ candidate: { candidate: 'candidate:1 1 udp 1 10.0.0.1 5000 typ host', sdpMid: '0', sdpMLineIndex: 0, usernameFragment: 'u' } });
    tick(250);
    const ws2 = lastSocket();
    ws2.open();
    assert.deepEqual(ws2.sentOf('candidate'), [], 'nothing before `resumed`');
    ws2.serverSays({ ...joinedMsg({ resume_token: 'tok2' }), type: 'resumed' });
    assert.equal(ws2.sentOf('candidate').length, 1);
    assert.equal(ws2.sentOf('candidate')[0].candidate.username_fragment, 'u');
  });

  test('leave() while resuming stops for good', async () => {
    const { session, pc } = await joinedSession();
    lastSocket().drop();
    session.leave();
    assert.equal(session.state, 'disconnected');
    assert.equal(pc.closed, true);
    const count = FakeWebSocket.all.length;
    tick(60_000);
    assert.equal(FakeWebSocket.all.length, count);
  });
});

// ------------------------------------------------------------------ ICE restarts

describe('ICE restart on the same PeerConnection', () => {
  test('`failed` restarts ICE at once, then again with growing delays; same session throughout', async () => {
    const { session, ws, pc, events } = await joinedSession();
    pc.goes('connected');
    pc.goes('failed');
    assert.equal(pc.restartIceCalls, 1);
    await settle();
    assert.equal(ws.sentOf('offer').length, 1, 'the restart offer goes out the usual way');

    // It never comes back (say, UDP is blocked): restarts after 1, 2, 4, 8, 16, 30 s.
    let elapsed = 0;
    const times = [0];
    while (elapsed < 60_000) {
      const before = pc.restartIceCalls;
      tick(1000);
      elapsed += 1000;
      if (pc.restartIceCalls > before) times.push(elapsed);
    }
    assert.deepEqual(times, [0, 1000, 3000, 7000, 15_000, 31_000]);
    assert.ok(pc.restartIceCalls <= 7, `a handful in 60 s, not ${pc.restartIceCalls}`);
    assert.equal(session.iceRestarts, pc.restartIceCalls);
    const detail = ofType(events, 'media-reconnecting');
    assert.deepEqual(detail.map((d) => [d.attempt, d.delayMs]),
      [[1, 1000], [2, 2000], [3, 4000], [4, 8000], [5, 16_000], [6, 30_000]]);
    assert.match(detail[0].reason, /media connection failed/);
    assert.match(detail.at(-1).reason, /UDP/);

    // Same participant, same socket, same PeerConnection, nobody left.
    assert.equal(session.participantId, SELF);
    assert.equal(session.pc, pc);
    assert.equal(pc.closed, false);
    assert.equal(FakeWebSocket.all.length, 1);
    assert.deepEqual(ofType(events, 'participant-left'), []);
    assert.deepEqual(ofType(events, 'joined'), []);
    assert.deepEqual(ofType(events, 'reconnecting'), []);
    assert.equal(session.state, 'connected');
  });

  test('a connection that never connects is restarted too, without a rejoin', async () => {
    const { session, pc, events } = await joinedSession();
    pc.goes('connecting');
    pc.goes('failed');
    tick(60_000);
    assert.ok(pc.restartIceCalls >= 3 && pc.restartIceCalls <= 7, String(pc.restartIceCalls));
    assert.equal(session.participantId, SELF);
    assert.equal(FakeWebSocket.all.length, 1);
    assert.match(ofType(events, 'media-reconnecting').at(-1).reason, /UDP may be blocked/);
  });

  test('`connected` resets the restart counter (and only that does)', async () => {
    const { pc, events } = await joinedSession();
    pc.goes('failed');
    tick(1000);
    pc.goes('failed'); // fails again while a restart is pending: no extra restart
    assert.equal(pc.restartIceCalls, 2);
    pc.goes('connected');
    assert.deepEqual(ofType(events, 'media-connected').at(-1), { restarts: 2 });
    tick(60_000);
    assert.equal(pc.restartIceCalls, 2, 'no restarts while connected');
    pc.goes('failed');
    assert.equal(pc.restartIceCalls, 3);
    assert.deepEqual(ofType(events, 'media-reconnecting').map((d) => [d.attempt, d.delayMs]),
      [[1, 1000], [2, 2000], [1, 1000]]);
  });

  test('`disconnected` for 1.5 s restarts; a shorter blip does not', async () => {
    const { pc } = await joinedSession();
    pc.goes('connected');
    pc.goes('disconnected');
    tick(1400);
    pc.goes('connected');
    tick(5000);
    assert.equal(pc.restartIceCalls, 0);
    pc.goes('disconnected');
    tick(1499);
    assert.equal(pc.restartIceCalls, 0);
    tick(1);
    assert.equal(pc.restartIceCalls, 1);
  });

  test('media failing while the socket is down is restarted once resumed', async () => {
    const { session, pc, events } = await joinedSession();
    pc.goes('connected');
    lastSocket().drop();
    pc.goes('failed');
    assert.equal(pc.restartIceCalls, 0, 'no offer can go out without a socket');
    tick(250);
    lastSocket().open();
    lastSocket().serverSays({ ...joinedMsg({ resume_token: 'tok2' }), type: 'resumed' });
    assert.equal(pc.restartIceCalls, 1);
    await settle();
    assert.equal(lastSocket().sentOf('offer').length, 1);
    assert.equal(session.participantId, SELF);
    assert.equal(ofType(events, 'media-reconnecting').length, 1);
  });

  test('media connecting resets the rejoin backoff, a restart does not rejoin', async () => {
    const { session, pc, events } = await joinedSession({}, {});
    pc.goes('failed');
    tick(10_000);
    assert.equal(ofType(events, 'reconnecting').length, 0, 'no rejoin for failed media');
    assert.equal(session.reconnects, 0);
  });
});

describe('grace period and a resume in flight', () => {
  test('the reply to a `resume` sent before the grace ended still counts', async () => {
    const { session, pc, events } = await joinedSession({}, { resume_token: 'tok1', resume_grace_ms: 1000 });
    lastSocket().drop();
    tick(250);
    const ws2 = lastSocket();
    ws2.open(); // `resume` sent at 250 ms; the server is slow
    tick(1000);
    assert.equal(pc.closed, false);
    ws2.serverSays({ ...joinedMsg({ resume_token: 'tok2' }), type: 'resumed' });
    assert.equal(session.resumes, 1);
    assert.equal(session.participantId, SELF);
    assert.deepEqual(ofType(events, 'participant-left'), []);
  });

  test('no reply to that `resume` at all: a full rejoin, not another resume', async () => {
    const { pc, events } = await joinedSession({ joinTimeoutMs: 5000 }, { resume_token: 'tok1', resume_grace_ms: 1000 });
    lastSocket().drop();
    tick(250);
    lastSocket().open();
    tick(5000);
    assert.equal(pc.closed, true);
    assert.equal(ofType(events, 'reconnecting').at(-1).resuming, false);
    tick(ofType(events, 'reconnecting').at(-1).delayMs);
    lastSocket().open();
    assert.equal(lastSocket().sent[0].type, 'join');
  });
});

// ------------------------------------------------------------------ media trouble: socket probe, stalls, connect timeout

/** Advances the mock clock in 100 ms steps, letting promise work (getStats) run after each.
 * @param {number} ms */
const advance = async (ms) => {
  for (let left = ms; left > 0; left -= 100) {
    mock.timers.tick(Math.min(100, left));
    await settle();
  }
};

/** The server's `resumed` on `ws`. @param {FakeWebSocket} ws */
const resumed = (ws) => ws.serverSays({ ...joinedMsg({ resume_token: 'tok2' }), type: 'resumed' });

describe('socket probe while the media is in trouble', () => {
  test('a silent socket is given up after socketProbeMs when `disconnected`; the restart goes out after `resumed`', async () => {
    const { session, ws, pc, events } = await joinedSession();
    pc.goes('connected');
    ws.goSilent(); // the address changed: no close, nothing arrives, what is sent is lost
    const pings = ws.sentOf('ping').length;
    pc.goes('disconnected');
    assert.equal(ws.sentOf('ping').length, pings + 1, 'one probe at once (not one per state event)');
    tick(1499);
    assert.equal(FakeWebSocket.all.length, 1);
    assert.deepEqual(ofType(events, 'reconnecting'), []);
    tick(1);
    // Given up within socketProbeMs, without waiting for a `close` that never comes.
    const lost = ofType(events, 'reconnecting');
    assert.equal(lost.length, 1);
    assert.equal(lost[0].resuming, true);
    assert.match(lost[0].reason, /no reply from the server within 1\.5 s/);
    assert.equal(ws.closeCalls, 1);
    assert.equal(ws.readyState, FakeWebSocket.CLOSING, 'still closing: its close event never came');
    assert.equal(ws.onmessage, null, 'handlers detached');
    // `disconnected` for 1.5 s decided a restart meanwhile: it waits for the new socket.
    assert.equal(pc.restartIceCalls, 0);
    assert.deepEqual(ws.sentOf('offer'), [], 'nothing offered on the dead socket');

    tick(250);
    const ws2 = lastSocket();
    assert.notEqual(ws2, ws);
    ws2.open();
    assert.deepEqual(ws2.sent, [{ type: 'resume', room: 'r', participant_id: SELF, token: 'tok1' }]);
    await settle();
    assert.equal(pc.restartIceCalls, 0, 'no restart before `resumed`');
    resumed(ws2);
    assert.equal(pc.restartIceCalls, 1);
    await settle();
    assert.equal(ws2.sentOf('offer').length, 1, 'the restart offer goes out on the resumed socket');
    assert.equal(ws2.sent.findIndex((m) => m.type === 'offer') > 0, true);
    assert.equal(session.participantId, SELF);
    assert.equal(session.resumes, 1);
    assert.equal(session.pc, pc);
    assert.equal(ofType(events, 'media-reconnecting').length, 1);
    assert.deepEqual(ofType(events, 'participant-left'), []);
  });

  test('a restart offer already lost on a dead socket is sent again after `resumed`', async () => {
    const { ws, pc } = await joinedSession();
    pc.goes('connected');
    pc.goes('failed'); // the socket still answers: the restart goes out at once
    assert.equal(pc.restartIceCalls, 1);
    await settle();
    assert.equal(ws.sentOf('offer').length, 1);
    const lostOffer = ws.sentOf('offer')[0].sdp;

    ws.goSilent(); // and now the socket dies too, silently
    tick(1000); // the next restart is due: probe first, hold the restart
    assert.equal(pc.restartIceCalls, 1, 'no restart offered into a socket that does not answer');
    tick(1500);
    assert.equal(FakeWebSocket.all.length, 1);
    tick(250);
    const ws2 = lastSocket();
    ws2.open();
    resumed(ws2);
    assert.equal(pc.restartIceCalls, 2, 'the held restart is made once resumed');
    await settle();
    assert.equal(ws2.sentOf('offer')[0]?.sdp, lostOffer, 'the unanswered offer is sent again');
    assert.equal(pc.signalingState, 'have-local-offer');
  });

  test('a slow but live socket: the restart waits for its first frame, then goes out on it', async () => {
    const { ws, pc } = await joinedSession();
    pc.goes('connected');
    ws.autoPong = false;
    pc.goes('failed');
    assert.equal(pc.restartIceCalls, 0, 'held while the probe is out');
    tick(400);
    ws.serverSays({ type: 'pong' });
    assert.equal(pc.restartIceCalls, 1);
    await settle();
    assert.equal(ws.sentOf('offer').length, 1);
    ws.autoPong = true; // answers the probes of later restarts in time
    tick(5000);
    assert.equal(FakeWebSocket.all.length, 1, 'the socket is kept');
  });

  test('no probe while the media is fine', async () => {
    const { ws, pc } = await joinedSession();
    ws.autoPong = false;
    pc.goes('connected');
    tick(9000);
    assert.deepEqual(ws.sentOf('ping'), []);
  });
});

describe('stall watchdog', () => {
  /** Joined, connected, and receiving bob's audio (bytes grow by 1000 per 500 ms until told). */
  async function receiving(options = {}, joined = undefined) {
    const s = await joinedSession(options, joined);
    s.pc.goes('connected');
    s.pc.receives(BOB, 'tb1', 'audio');
    s.pc.inbound = true;
    s.events.length = 0; // the first media-connected
    return s;
  }

  /** Advances `ms`, the bytes growing by 1000 every 500 ms. @param {FakePeerConnection} pc @param {number} ms */
  const flowing = async (pc, ms) => {
    for (let t = 0; t < ms; t += 500) {
      pc.bytesReceived += 1000;
      await advance(500);
    }
  };

  test('bytes flat for 2 s while connected: socket probe and ICE restart; bytes again: media-connected', async () => {
    const { session, ws, pc, events } = await receiving();
    await flowing(pc, 10_000);
    assert.equal(pc.restartIceCalls, 0, 'no restart while bytes grow');
    assert.ok(pc.getStatsCalls >= 15, `polled every 500 ms (${pc.getStatsCalls})`);

    // The path goes away; Chromium still says `connected`.
    const pings = ws.sentOf('ping').length;
    await advance(1900);
    assert.equal(pc.restartIceCalls, 0, 'not before 2 s without bytes');
    await advance(100);
    assert.equal(pc.restartIceCalls, 1);
    assert.equal(ws.sentOf('ping').length, pings + 1, 'the socket was probed');
    const [first] = ofType(events, 'media-reconnecting');
    assert.match(first.reason, /^no media received for 2 s; /);
    assert.equal(first.delayMs, 1000);

    // Still nothing: the backoff goes on although the state says `connected`.
    await advance(1000);
    assert.equal(pc.restartIceCalls, 2);
    pc.goes('connected'); // ICE reconnected after the restart, but still no bytes
    assert.deepEqual(ofType(events, 'media-connected'), [], 'a state event alone does not end a stall');

    await flowing(pc, 1000);
    assert.deepEqual(ofType(events, 'media-connected'), [{ restarts: 2 }]);
    await flowing(pc, 30_000);
    assert.equal(pc.restartIceCalls, 2, 'no restarts once bytes flow');
    assert.equal(session.participantId, SELF);
    assert.equal(FakeWebSocket.all.length, 1);
  });

  test('a stall with a silent socket: resumed within socketProbeMs, then the restart on the new socket', async () => {
    const { ws, pc, events } = await receiving();
    await flowing(pc, 2000);
    ws.goSilent();
    await advance(2500); // stall noticed: restart decided, held for the probe
    assert.equal(pc.restartIceCalls, 0);
    assert.equal(ws.sentOf('ping').at(-1)?.type, 'ping');
    await advance(1500);
    assert.equal(ofType(events, 'reconnecting').length, 1, 'socket given up');
    await advance(300);
    const ws2 = lastSocket();
    ws2.open();
    resumed(ws2);
    assert.equal(pc.restartIceCalls, 1, 'restarted after `resumed` although the state says connected');
    await settle();
    assert.equal(ws2.sentOf('offer').length, 1);
    assert.deepEqual(ws.sentOf('offer'), []);
  });

  test('not triggered without an inbound stream, without remote tracks, or while not connected', async () => {
    const { pc } = await joinedSession();
    pc.goes('connected');
    pc.inbound = true; // but no remote track
    await advance(5000);
    assert.equal(pc.getStatsCalls, 0, 'no getStats without remote tracks');
    pc.receives(BOB, 'tb1');
    pc.inbound = false; // a track, but nothing ever received
    await advance(10_000);
    assert.ok(pc.getStatsCalls > 0);
    assert.equal(pc.restartIceCalls, 0);

    pc.inbound = true;
    pc.goes('connecting'); // not connected: the watchdog waits (the state machine rules)
    const calls = pc.getStatsCalls;
    await advance(5000);
    assert.equal(pc.getStatsCalls, calls);
    assert.equal(pc.restartIceCalls, 0);
  });

  test('getStats that throws, rejects or hangs stalls nothing and breaks nothing', async () => {
    const { pc, events } = await receiving();
    for (const fail of /** @type {const} */ (['throw', 'reject'])) {
      pc.statsFail = fail;
      await advance(5000);
      assert.equal(pc.restartIceCalls, 0, fail);
    }
    pc.statsFail = 'hang';
    const calls = pc.getStatsCalls;
    await advance(1900);
    assert.equal(pc.getStatsCalls, calls + 1, 'one at a time');
    await advance(5000);
    assert.ok(pc.getStatsCalls > calls + 1, 'a hung getStats is given up on');
    assert.deepEqual(ofType(events, 'error'), []);
    // Working again, and flat: a stall is still noticed.
    pc.statsFail = null;
    await advance(5000);
    assert.ok(pc.restartIceCalls >= 1, 'restarted');
    assert.match(ofType(events, 'media-reconnecting')[0].reason, /no media received/);
  });

  test('a stall ends when nothing is left to receive (everyone left)', async () => {
    const { ws, pc, events } = await receiving();
    await flowing(pc, 1000);
    await advance(2500);
    assert.equal(pc.restartIceCalls, 1);
    ws.serverSays({ type: 'participant-left', participant_id: BOB });
    await advance(500);
    assert.deepEqual(ofType(events, 'media-connected'), [{ restarts: 1 }]);
    await advance(60_000);
    assert.equal(pc.restartIceCalls, 1);
  });

  test('another candidate pair is a new baseline, not a stall', async () => {
    const { pc } = await receiving();
    await flowing(pc, 2000);
    pc.pairId = 'CP2';
    pc.bytesReceived = 0;
    await flowing(pc, 5000);
    assert.equal(pc.restartIceCalls, 0);
  });

  test('stops with the PeerConnection: on leave, and on a full rejoin', async () => {
    const { session, pc } = await receiving({}, {});
    await flowing(pc, 1000);
    lastSocket().drop(); // no resume token: the pc is closed
    const calls = pc.getStatsCalls;
    await advance(5000);
    assert.equal(pc.getStatsCalls, calls);
    session.leave();
    await advance(5000);
    assert.equal(pc.getStatsCalls, calls);
  });

  test('stallCheckMs: 0 turns it off', async () => {
    const { pc } = await receiving({ stallCheckMs: 0 });
    await advance(10_000);
    assert.equal(pc.getStatsCalls, 0);
    assert.equal(pc.restartIceCalls, 0);
  });
});

describe('connect timeout', () => {
  /** Joined, our offer answered, the PeerConnection `connecting`. */
  async function answered(options = {}) {
    const s = await joinedSession(options);
    s.pc.onnegotiationneeded();
    await settle();
    s.ws.serverSays({ type: 'answer', sdp: 'v=0\r\no=- server-answer\r\n' });
    await settle();
    s.pc.goes('connecting');
    return s;
  }

  test('never connected: restart after connectTimeoutMs, then with a growing backoff; same participant', async () => {
    const { session, pc, events } = await answered();
    tick(9999);
    assert.equal(pc.restartIceCalls, 0);
    tick(1);
    assert.equal(pc.restartIceCalls, 1);
    const [first] = ofType(events, 'media-reconnecting');
    assert.match(first.reason, /not established within 10 s/);
    assert.match(first.reason, /UDP and TCP .*may be blocked/);

    const times = [10_000];
    for (let elapsed = 10_000; elapsed < 100_000;) {
      const before = pc.restartIceCalls;
      tick(1000);
      elapsed += 1000;
      if (pc.restartIceCalls > before) times.push(elapsed);
      if (elapsed === 35_000) pc.goes('failed'); // Chromium gives up on its own: no extra restart
    }
    // Each attempt gets at least as long as the first (10 s), then the backoff grows past it.
    assert.deepEqual(times, [10_000, 20_000, 30_000, 40_000, 50_000, 66_000, 96_000]);
    const delays = ofType(events, 'media-reconnecting').map((d) => d.delayMs);
    assert.deepEqual(delays, [10_000, 10_000, 10_000, 10_000, 16_000, 30_000, 30_000]);
    for (let i = 1; i < delays.length; i++) assert.ok(delays[i] >= delays[i - 1], 'never shorter');
    assert.match(ofType(events, 'media-reconnecting').at(-1).reason, /UDP may be blocked/);

    assert.equal(session.participantId, SELF);
    assert.equal(session.pc, pc);
    assert.equal(FakeWebSocket.all.length, 1);
    assert.deepEqual(ofType(events, 'reconnecting'), []);
    assert.deepEqual(ofType(events, 'participant-left'), []);

    // It connects at last: everything starts over (a later failure restarts after 1 s).
    pc.goes('connected');
    assert.deepEqual(ofType(events, 'media-connected'), [{ restarts: 7 }]);
    pc.goes('failed');
    assert.equal(ofType(events, 'media-reconnecting').at(-1).delayMs, 1000);
  });

  test('connecting in time, or a `failed` first: no connect-timeout restart', async () => {
    const a = await answered();
    tick(9000);
    a.pc.goes('connected');
    tick(60_000);
    assert.equal(a.pc.restartIceCalls, 0);

    const b = await answered();
    tick(3000);
    b.pc.goes('failed'); // the usual backoff from 1 s takes over
    tick(1000);
    assert.deepEqual(ofType(b.events, 'media-reconnecting').map((d) => d.delayMs), [1000, 2000]);
  });

  test('no connect timer before the first offer/answer exchange, and none with connectTimeoutMs: 0', async () => {
    const { pc } = await joinedSession();
    pc.goes('connecting');
    tick(30_000);
    assert.equal(pc.restartIceCalls, 0);
    const off = await answered({ connectTimeoutMs: 0 });
    tick(30_000);
    assert.equal(off.pc.restartIceCalls, 0);
  });
});
