// Unit tests of the SDK's handling of the server's `active-speakers` (client/confab.js).
//
//   node --test tests/client/
//
// The pure parts (`parseActiveSpeakers`, `sameSpeakers`) are tested directly; the Session is
// driven through a fake WebSocket (and a fake RTCPeerConnection, for `joined`), so no browser
// and no server are needed.

import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';

import { parseActiveSpeakers, sameSpeakers, Session } from '../../client/confab.js';
import { FakePeerConnection, FakeWebSocket, recordEvents } from './fakes.mjs';

describe('parseActiveSpeakers', () => {
  test('converts entries and keeps the server order (loudest first)', () => {
    assert.deepEqual(parseActiveSpeakers([
      { participant_id: 'pbbbbbbbbbb', level: 0.62 },
      { participant_id: 'paaaaaaaaaa', level: 0.9 },
    ]), [
      { participantId: 'pbbbbbbbbbb', level: 0.62 },
      { participantId: 'paaaaaaaaaa', level: 0.9 },
    ]);
  });

  test('an empty list means nobody speaks', () => {
    assert.deepEqual(parseActiveSpeakers([]), []);
  });

  test('not an array: null (the message changes nothing)', () => {
    for (const wire of [undefined, null, 'p1', 3, {}, { participant_id: 'p1', level: 1 }]) {
      assert.equal(parseActiveSpeakers(wire), null, JSON.stringify(wire));
    }
  });

  test('skips malformed entries, keeps the rest', () => {
    assert.deepEqual(parseActiveSpeakers([
      null,
      'p1',
      7,
      [],
      {},
      { level: 0.5 },
      { participant_id: '', level: 0.5 },
      { participant_id: 42, level: 0.5 },
      { participant_id: 'pnolevel' },
      { participant_id: 'pstrlevel', level: '0.5' },
      { participant_id: 'pnulllevel', level: null },
      { participant_id: 'pgood', level: 0.25 },
    ]), [{ participantId: 'pgood', level: 0.25 }]);
  });

  test('ignores unknown fields', () => {
    assert.deepEqual(parseActiveSpeakers([{ participant_id: 'p1', level: 0.5, name: 'alice', extra: { x: 1 } }]),
      [{ participantId: 'p1', level: 0.5 }]);
  });

  test('clamps level to 0..1', () => {
    assert.deepEqual(parseActiveSpeakers([
      { participant_id: 'p1', level: 3 },
      { participant_id: 'p2', level: -0.1 },
      { participant_id: 'p3', level: 0 },
      { participant_id: 'p4', level: 1 },
    ]).map((s) => s.level), [1, 0, 0, 1]);
  });

  test('a repeated id keeps its first (louder) place', () => {
    assert.deepEqual(parseActiveSpeakers([
      { participant_id: 'p1', level: 0.8 },
      { participant_id: 'p2', level: 0.5 },
      { participant_id: 'p1', level: 0.3 },
    ]), [{ participantId: 'p1', level: 0.8 }, { participantId: 'p2', level: 0.5 }]);
  });
});

describe('sameSpeakers', () => {
  const a = { participantId: 'p1', level: 0.5 };
  const b = { participantId: 'p2', level: 0.4 };
  test('same ids, order and levels', () => {
    assert.equal(sameSpeakers([], []), true);
    assert.equal(sameSpeakers([a, b], [{ ...a }, { ...b }]), true);
  });
  test('differs in length, order or level', () => {
    assert.equal(sameSpeakers([a], []), false);
    assert.equal(sameSpeakers([a, b], [b, a]), false);
    assert.equal(sameSpeakers([a], [{ ...a, level: 0.6 }]), false);
  });
});

// ------------------------------------------------------------------ Session, with fakes

const globals = /** @type {any} */ (globalThis);
const saved = { WebSocket: globals.WebSocket, RTCPeerConnection: globals.RTCPeerConnection };
/** @type {Session[]} */
const sessions = [];

afterEach(() => {
  for (const s of sessions.splice(0)) s.leave();
  globals.WebSocket = saved.WebSocket;
  globals.RTCPeerConnection = saved.RTCPeerConnection;
  FakeWebSocket.all = [];
  FakePeerConnection.all = [];
});

const SELF = 'pself000000';
const BOB = 'pbob0000000';
const CAROL = 'pcarol00000';

/**
 * A session that has joined a room with bob and carol, and every event it emits from then on.
 * @param {Partial<import('../../client/confab.js').SessionOptions>} [options]
 */
async function joinedSession(options = {}) {
  globals.WebSocket = FakeWebSocket;
  globals.RTCPeerConnection = FakePeerConnection;
  const session = new Session({ url: 'ws://test/ws', room: 'r', name: 'me', ...options });
  sessions.push(session);
  const events = recordEvents(session);
  const joined = session.join();
  const ws = FakeWebSocket.all.at(-1);
  assert.ok(ws, 'the session opened a socket');
  ws.open();
  ws.serverSays({
    type: 'joined',
    participant_id: SELF,
    room: 'r',
    participants: [{ id: BOB, name: 'bob', tracks: [] }, { id: CAROL, name: 'carol', tracks: [] }],
    ice_servers: [],
  });
  await joined;
  events.length = 0;
  return { session, ws, events };
}

/** @param {{type: string, detail: any}[]} events */
const speakerEvents = (events) => events.filter((e) => e.type === 'active-speakers').map((e) => e.detail);

describe('Session and active-speakers', () => {
  test('nobody speaks until the server says so', async () => {
    const { session } = await joinedSession();
    assert.deepEqual(session.activeSpeakers(), []);
  });

  test('keeps the list, returns it from activeSpeakers() and emits active-speakers', async () => {
    const { session, ws, events } = await joinedSession();
    ws.serverSays({
      type: 'active-speakers',
      speakers: [{ participant_id: BOB, level: 0.62 }, { participant_id: SELF, level: 0.3 }],
    });
    const want = [{ participantId: BOB, level: 0.62 }, { participantId: SELF, level: 0.3 }];
    assert.deepEqual(session.activeSpeakers(), want);
    assert.deepEqual(speakerEvents(events), [{ speakers: want }]);
    assert.deepEqual(events.map((e) => e.type), ['active-speakers']);

    // The returned list is a copy.
    session.activeSpeakers()[0].level = 0;
    session.activeSpeakers().pop();
    assert.deepEqual(session.activeSpeakers(), want);

    ws.serverSays({ type: 'active-speakers', speakers: [] });
    assert.deepEqual(session.activeSpeakers(), []);
    assert.deepEqual(speakerEvents(events).at(-1), { speakers: [] });
  });

  test('the same list again emits nothing', async () => {
    const { ws, events } = await joinedSession();
    const msg = { type: 'active-speakers', speakers: [{ participant_id: BOB, level: 0.5 }] };
    ws.serverSays(msg);
    ws.serverSays(msg);
    assert.equal(speakerEvents(events).length, 1);
    ws.serverSays({ type: 'active-speakers', speakers: [{ participant_id: BOB, level: 0.7 }] });
    assert.equal(speakerEvents(events).length, 2);
  });

  test('malformed messages never throw and change nothing; malformed entries are skipped', async () => {
    const { session, ws, events } = await joinedSession();
    ws.serverSays({ type: 'active-speakers', speakers: [{ participant_id: BOB, level: 0.5 }] });
    events.length = 0;
    for (const bad of [
      { type: 'active-speakers' },
      { type: 'active-speakers', speakers: null },
      { type: 'active-speakers', speakers: 'pbob0000000' },
      { type: 'active-speakers', speakers: { participant_id: CAROL, level: 1 } },
    ]) {
      assert.doesNotThrow(() => ws.serverSays(bad));
    }
    assert.deepEqual(events, [], 'no event, no error');
    assert.deepEqual(session.activeSpeakers(), [{ participantId: BOB, level: 0.5 }]);

    ws.serverSays({
      type: 'active-speakers',
      speakers: [null, { participant_id: CAROL, level: 0.9, future: true }, { level: 1 }, { participant_id: BOB }],
      future_field: 1,
    });
    assert.deepEqual(session.activeSpeakers(), [{ participantId: CAROL, level: 0.9 }]);
    assert.deepEqual(events.map((e) => e.type), ['active-speakers']);
  });

  test('an unknown message type is ignored', async () => {
    const { session, ws, events } = await joinedSession();
    ws.serverSays({ type: 'no-such-message', speakers: [{ participant_id: BOB, level: 1 }] });
    ws.serverSays({ type: 'active_speakers', speakers: [{ participant_id: BOB, level: 1 }] });
    ws.serverSays({ speakers: [{ participant_id: BOB, level: 1 }] });
    ws.serverSays('not json');
    assert.deepEqual(events, []);
    assert.deepEqual(session.activeSpeakers(), []);
    assert.equal(session.state, 'connected');
  });

  test('a member who leaves is taken off the list', async () => {
    const { session, ws, events } = await joinedSession();
    ws.serverSays({
      type: 'active-speakers',
      speakers: [{ participant_id: CAROL, level: 0.8 }, { participant_id: BOB, level: 0.4 }],
    });
    events.length = 0;
    ws.serverSays({ type: 'participant-left', participant_id: CAROL });
    assert.deepEqual(session.activeSpeakers(), [{ participantId: BOB, level: 0.4 }]);
    assert.deepEqual(speakerEvents(events), [{ speakers: [{ participantId: BOB, level: 0.4 }] }]);
    // The server's own update that follows changes nothing more.
    ws.serverSays({ type: 'active-speakers', speakers: [{ participant_id: BOB, level: 0.4 }] });
    assert.equal(speakerEvents(events).length, 1);
  });

  test('the list is emptied, with one event, when the socket drops', async () => {
    const { session, ws, events } = await joinedSession({ reconnect: false });
    ws.serverSays({
      type: 'active-speakers',
      speakers: [{ participant_id: SELF, level: 0.8 }, { participant_id: BOB, level: 0.4 }],
    });
    events.length = 0;
    ws.drop();
    assert.deepEqual(session.activeSpeakers(), []);
    assert.deepEqual(speakerEvents(events), [{ speakers: [] }]);
    const order = events.map((e) => e.type).filter((t) => t === 'active-speakers' || t === 'participant-left');
    assert.deepEqual(order, ['active-speakers', 'participant-left', 'participant-left']);
  });
});
