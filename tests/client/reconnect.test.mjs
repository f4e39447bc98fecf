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

import { backoffDelay, describeMediaFailure, diffParticipants, Session } from '../../client/confab.js';
import { FakePeerConnection, FakeWebSocket } from './fakes.mjs';

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

const SELF = 'pself000000';
const BOB = 'pbob0000000';
const CAROL = 'pcarol00000';
const DAVE = 'pdave000000';

/** Lets queued promise work (the negotiation queue) run. Real `setImmediate`: not mocked. */
const settle = async () => {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
};

/** Advances the mock clock, in steps of at most 100 ms (a timer that a timer callback arms,
 * and the 10 s pings answered by the fake server, then run as they would in real time).
 * @param {number} ms */
const tick = (ms) => {
  for (let left = ms; left > 0; left -= 100) mock.timers.tick(Math.min(100, left));
};

/** The newest socket. */
const lastSocket = () => /** @type {FakeWebSocket} */ (FakeWebSocket.all.at(-1));

/**
 * The `joined` (or `resumed`) a server sends.
 * @param {Record<string, unknown>} [extra]
 */
function joinedMsg(extra = {}) {
  return {
    type: 'joined',
    participant_id: SELF,
    room: 'r',
    participants: [
      { id: BOB, name: 'bob', tracks: [{ track_id: 'tb1', kind: 'audio' }, { track_id: 'tb2', kind: 'video' }] },
      { id: CAROL, name: 'carol', tracks: [{ track_id: 'tc1', kind: 'audio' }] },
    ],
    ice_servers: [],
    ...extra,
  };
}

/**
 * A session joined to room `r` with bob and carol, and every event it emits from then on.
 * @param {Partial<import('../../client/confab.js').SessionOptions>} [options]
 * @param {Record<string, unknown>} [joined]  fields of the server's `joined`
 */
async function joinedSession(options = {}, joined = { resume_token: 'tok1', resume_grace_ms: 15_000 }) {
  globals.WebSocket = FakeWebSocket;
  globals.RTCPeerConnection = FakePeerConnection;
  const session = new Session({ url: 'ws://test/ws', room: 'r', name: 'me', random: () => 0.5, ...options });
  sessions.push(session);
  /** @type {{type: string, detail: any}[]} */
  const events = [];
  const dispatch = session.dispatchEvent.bind(session);
  session.dispatchEvent = (ev) => {
    events.push({ type: ev.type, detail: /** @type {CustomEvent} */ (ev).detail });
    return dispatch(ev);
  };
  const done = session.join();
  const ws = lastSocket();
  ws.open();
  ws.serverSays(joinedMsg(joined));
  await done;
  const pc = /** @type {FakePeerConnection} */ (/** @type {unknown} */ (session.pc));
  events.length = 0;
  return { session, ws, pc, events };
}

/** @param {{type: string, detail: any}[]} events @param {string} type */
const ofType = (events, type) => events.filter((e) => e.type === type).map((e) => e.detail);

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
    assert.deepEqual(events[2].detail, { participantId: BOB, trackId: 'tb3', kind: 'video' });
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
