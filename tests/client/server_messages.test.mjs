// Unit tests of the SDK's handling of the server's room-API messages (client/confab.js):
// `track-muted` / `track-unmuted` (our own tracks and other members'), `participant-updated`,
// `data`, and `error {code: 'removed'}` that ends the session for good.
//
//   node --test tests/client/
//
// The Session is driven through the fakes of fakes.mjs (its `joinedSession` publishes a
// microphone and a camera), on node:test's mock timers, with `random: () => 0.5` (no jitter).
// No browser, no server.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { isRejoinableRemoval, JoinError } from '../../client/confab.js';
import {
  BOB, CAROL, FakeLocalTrack, FakeWebSocket, joinedSession, lastSocket, newSession, ofType, SELF, tick, useMockTimersAndCleanUp,
} from './fakes.mjs';

// ------------------------------------------------------------------ harness

useMockTimersAndCleanUp();

/** A `track-muted` / `track-unmuted` as the server sends it.
 * @param {boolean} muted @param {string} participantId @param {string} trackId @param {string} sourceTrackId */
const muteMsg = (muted, participantId, trackId, sourceTrackId) => ({
  type: muted ? 'track-muted' : 'track-unmuted',
  participant_id: participantId,
  track_id: trackId,
  source_track_id: sourceTrackId,
  by_server: true,
});

// ------------------------------------------------------------------ our own tracks

describe('our own track muted by the server', () => {
  test('disables the local track, remembers it and emits local-muted-by-server', async () => {
    const { session, ws, events, mic, cam } = await joinedSession();
    assert.deepEqual(session.mutedByServer, { audio: false, video: false });
    ws.serverSays(muteMsg(true, SELF, 'tself-a', mic.id));
    assert.equal(mic.enabled, false);
    assert.equal(cam.enabled, true, 'only the named track');
    assert.equal(session.micEnabled, false);
    assert.deepEqual(session.mutedByServer, { audio: true, video: false });
    assert.equal(session.isMuted(SELF, 'audio'), true);
    assert.equal(session.isMuted(SELF, 'video'), false);
    assert.deepEqual(ofType(events, 'local-muted-by-server'), [
      { kind: 'audio', trackId: 'tself-a', sourceTrackId: mic.id, track: mic },
    ]);
    assert.deepEqual(ofType(events, 'track-muted'), [], 'our own track is not a member\'s');
    assert.deepEqual(session.mutedTracks(), []);

    // A repeat: disabled again, no second event.
    mic.enabled = true;
    ws.serverSays(muteMsg(true, SELF, 'tself-a', mic.id));
    assert.equal(mic.enabled, false);
    assert.equal(ofType(events, 'local-muted-by-server').length, 1);
  });

  test('track-unmuted lifts the state but never re-enables the track; the user unmutes', async () => {
    const { session, ws, events, mic } = await joinedSession();
    ws.serverSays(muteMsg(true, SELF, 'tself-a', mic.id));
    ws.serverSays(muteMsg(false, SELF, 'tself-a', mic.id));
    assert.equal(mic.enabled, false, 'the server never turns the microphone back on');
    assert.equal(session.micEnabled, false);
    assert.deepEqual(session.mutedByServer, { audio: false, video: false });
    assert.deepEqual(ofType(events, 'local-unmuted-by-server'), [
      { kind: 'audio', trackId: 'tself-a', sourceTrackId: mic.id, track: mic, cause: 'server' },
    ]);
    // A repeat (or an unmute of a track not muted) emits nothing.
    ws.serverSays(muteMsg(false, SELF, 'tself-a', mic.id));
    assert.equal(ofType(events, 'local-unmuted-by-server').length, 1);
    assert.equal(mic.enabled, false);

    session.setMicEnabled(true);
    assert.equal(mic.enabled, true);
    assert.equal(session.micEnabled, true);
  });

  test('unmuting locally while still muted by the server is allowed; the state stays', async () => {
    const { session, ws, mic } = await joinedSession();
    ws.serverSays(muteMsg(true, SELF, 'tself-a', mic.id));
    session.setMicEnabled(true);
    assert.equal(mic.enabled, true);
    assert.deepEqual(session.mutedByServer, { audio: true, video: false });
  });

  test('the camera: video kind', async () => {
    const { session, ws, events, mic, cam } = await joinedSession();
    ws.serverSays(muteMsg(true, SELF, 'tself-v', cam.id));
    assert.equal(cam.enabled, false);
    assert.equal(mic.enabled, true);
    assert.equal(session.cameraEnabled, false);
    assert.deepEqual(session.mutedByServer, { audio: false, video: true });
    assert.equal(ofType(events, 'local-muted-by-server')[0].kind, 'video');
  });

  test('a track replaced since (replaceTrack) is found through its m-line msid', async () => {
    const { session, ws, pc, events, stream, mic } = await joinedSession();
    const audio = pc.transceivers.find((t) => t.receiver.track.kind === 'audio');
    audio.mid = '0';
    pc.localDescription = {
      type: 'offer',
      sdp: `v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=msid:stream ${mic.id}\r\n`,
    };
    const mic2 = new FakeLocalTrack('local-mic-2', 'audio');
    stream.removeTrack(mic);
    stream.addTrack(mic2);
    audio.sender.track = mic2;
    ws.serverSays(muteMsg(true, SELF, 'tself-a', mic.id));
    assert.equal(mic2.enabled, false, 'the track sent on that m-line now');
    assert.deepEqual(ofType(events, 'local-muted-by-server'), [
      { kind: 'audio', trackId: 'tself-a', sourceTrackId: mic.id, track: mic2 },
    ]);
    assert.equal(session.mutedByServer.audio, true);
  });

  test('a full rejoin ends the mute (new participant): local-unmuted-by-server, track left off', async () => {
    const { session, ws, events, mic } = await joinedSession();
    ws.serverSays(muteMsg(true, SELF, 'tself-a', mic.id));
    ws.serverSays({ type: 'error', code: 'removed', message: 'media connection failed' });
    assert.deepEqual(ofType(events, 'local-unmuted-by-server'), [
      { kind: 'audio', trackId: 'tself-a', sourceTrackId: mic.id, track: mic, cause: 'session-ended' },
    ]);
    assert.equal(mic.enabled, false);
    assert.deepEqual(session.mutedByServer, { audio: false, video: false });
  });

  test('leave() forgets the mute without an event', async () => {
    const { session, ws, events, mic } = await joinedSession();
    ws.serverSays(muteMsg(true, SELF, 'tself-a', mic.id));
    session.leave();
    assert.deepEqual(ofType(events, 'local-unmuted-by-server'), []);
    assert.deepEqual(session.mutedByServer, { audio: false, video: false });
  });
});

// ------------------------------------------------------------------ other members' tracks

describe("another member's track muted by the server", () => {
  test('a mute from before we joined comes in the member list (muted: true)', async () => {
    const { session } = await joinedSession({}, {
      participants: [
        { id: BOB, name: 'bob', tracks: [{ track_id: 'tb1', kind: 'audio', muted: true }, { track_id: 'tb2', kind: 'video' }] },
      ],
    });
    assert.deepEqual(session.participants.get(BOB)?.muted, { audio: true, video: false });
    assert.equal(session.isMuted(BOB, 'audio'), true);
    assert.deepEqual(session.mutedTracks(), [{ participantId: BOB, trackId: 'tb1', kind: 'audio' }]);
  });

  test('track-muted / track-unmuted events with byServer, and the state to read', async () => {
    const { session, ws, events } = await joinedSession();
    ws.serverSays(muteMsg(true, BOB, 'tb1', 'bob-mic'));
    assert.deepEqual(ofType(events, 'track-muted'), [{
      participantId: BOB, trackId: 'tb1', kind: 'audio', byServer: true, sourceTrackId: 'bob-mic',
      track: null, stream: null, receiver: null,
    }]);
    assert.deepEqual(session.participants.get(BOB)?.muted, { audio: true, video: false });
    assert.deepEqual(session.participants.get(CAROL)?.muted, { audio: false, video: false });
    assert.deepEqual(session.mutedTracks(), [{ participantId: BOB, trackId: 'tb1', kind: 'audio' }]);
    assert.equal(session.isMuted(BOB, 'audio'), true);
    assert.equal(session.isMuted(BOB, 'video'), false);
    assert.deepEqual(ofType(events, 'local-muted-by-server'), []);

    ws.serverSays(muteMsg(true, BOB, 'tb1', 'bob-mic'));
    assert.equal(ofType(events, 'track-muted').length, 1, 'a repeat emits nothing');

    ws.serverSays(muteMsg(false, BOB, 'tb1', 'bob-mic'));
    assert.deepEqual(ofType(events, 'track-unmuted'), [{
      participantId: BOB, trackId: 'tb1', kind: 'audio', byServer: true, sourceTrackId: 'bob-mic',
      track: null, stream: null, receiver: null,
    }]);
    assert.deepEqual(session.participants.get(BOB)?.muted, { audio: false, video: false });
    assert.deepEqual(session.mutedTracks(), []);
    ws.serverSays(muteMsg(false, BOB, 'tb1', 'bob-mic'));
    assert.equal(ofType(events, 'track-unmuted').length, 1, 'a repeat emits nothing');
  });

  test('a received track comes with the event; its own mute/unmute is byServer: false', async () => {
    const { ws, pc, events } = await joinedSession();
    const track = pc.receives(BOB, 'tb2', 'video');
    ws.serverSays(muteMsg(true, BOB, 'tb2', 'bob-cam'));
    const [muted] = ofType(events, 'track-muted');
    assert.equal(muted.track, track);
    assert.equal(muted.stream.id, BOB);
    assert.equal(muted.kind, 'video');
    assert.equal(muted.byServer, true);

    events.length = 0;
    /** @type {any} */ (track).onmute();
    const [local] = ofType(events, 'track-muted');
    assert.equal(local.byServer, false);
    assert.equal(local.kind, 'video');
    assert.equal(local.sourceTrackId, null);
    assert.equal(local.track, track);
    assert.equal(local.participantId, BOB);
    assert.equal(local.trackId, 'tb2');
  });

  test('the state goes with the track (unpublished) and with the member (left)', async () => {
    const { session, ws } = await joinedSession();
    ws.serverSays(muteMsg(true, BOB, 'tb1', 'bob-mic'));
    ws.serverSays(muteMsg(true, BOB, 'tb2', 'bob-cam'));
    ws.serverSays(muteMsg(true, CAROL, 'tc1', 'carol-mic'));
    assert.deepEqual(session.participants.get(BOB)?.muted, { audio: true, video: true });
    ws.serverSays({ type: 'track-unpublished', participant_id: BOB, track_id: 'tb2' });
    assert.deepEqual(session.participants.get(BOB)?.muted, { audio: true, video: false });
    ws.serverSays({ type: 'participant-left', participant_id: CAROL });
    assert.deepEqual(session.mutedTracks(), [{ participantId: BOB, trackId: 'tb1', kind: 'audio' }]);
  });

  test('a mute that overtakes the announcement shows on the member once it joins', async () => {
    const { session, ws, events } = await joinedSession();
    ws.serverSays(muteMsg(true, 'pdave000000', 'td1', 'dave-mic'));
    assert.equal(ofType(events, 'track-muted')[0].kind, null, 'kind not known yet');
    ws.serverSays({
      type: 'participant-joined',
      participant: { id: 'pdave000000', name: 'dave', tracks: [{ track_id: 'td1', kind: 'audio' }] },
    });
    assert.deepEqual(session.participants.get('pdave000000')?.muted, { audio: true, video: false });
    assert.deepEqual(session.mutedTracks(), [{ participantId: 'pdave000000', trackId: 'td1', kind: 'audio' }]);
  });

  test('malformed messages change nothing and never throw', async () => {
    const { session, ws, events } = await joinedSession();
    ws.serverSays({ type: 'track-muted' });
    ws.serverSays({ type: 'track-muted', participant_id: 7, track_id: 'tb1' });
    ws.serverSays({ type: 'track-unmuted', participant_id: BOB });
    assert.deepEqual(session.mutedTracks(), []);
    assert.deepEqual(events.filter((e) => e.type !== 'active-speakers'), []);
  });
});

// ------------------------------------------------------------------ participant-updated

describe('participant-updated', () => {
  test('joined and participant-joined carry metadata', async () => {
    const { session, ws } = await joinedSession();
    assert.equal(session.participants.get(BOB)?.metadata, null);
    assert.equal(session.participants.get(CAROL)?.metadata, '{"role":"host"}');
    ws.serverSays({ type: 'participant-joined', participant: { id: 'pdave000000', name: 'dave', metadata: 'x', tracks: [] } });
    assert.equal(session.participants.get('pdave000000')?.metadata, 'x');
  });

  test("updates a member's name and metadata and emits participant-updated", async () => {
    const { session, ws, events } = await joinedSession();
    const bob = session.participants.get(BOB);
    ws.serverSays({ type: 'participant-updated', participant: { id: BOB, name: 'Robert', metadata: '{"hand":true}', tracks: [] } });
    assert.equal(bob?.name, 'Robert');
    assert.equal(bob?.metadata, '{"hand":true}');
    assert.deepEqual(bob?.tracks.map((t) => t.track_id), ['tb1', 'tb2'], 'tracks are left alone');
    assert.deepEqual(ofType(events, 'participant-updated'), [{
      participantId: BOB, local: false, name: 'Robert', metadata: '{"hand":true}', changed: ['name', 'metadata'], participant: bob,
    }]);

    // The same again: nothing changed, nothing emitted.
    ws.serverSays({ type: 'participant-updated', participant: { id: BOB, name: 'Robert', metadata: '{"hand":true}', tracks: [] } });
    assert.equal(ofType(events, 'participant-updated').length, 1);

    // No metadata: it was cleared.
    ws.serverSays({ type: 'participant-updated', participant: { id: BOB, name: 'Robert', tracks: [] } });
    assert.equal(bob?.metadata, null);
    assert.deepEqual(ofType(events, 'participant-updated').at(-1).changed, ['metadata']);
  });

  test('our own id updates name and metadata of the session (local: true)', async () => {
    const { session, ws, events } = await joinedSession();
    ws.serverSays({ type: 'participant-updated', participant: { id: SELF, name: 'Me, renamed', metadata: 'm', tracks: [] } });
    assert.equal(session.name, 'Me, renamed');
    assert.equal(session.metadata, 'm');
    assert.deepEqual(ofType(events, 'participant-updated'), [{
      participantId: SELF, local: true, name: 'Me, renamed', metadata: 'm', changed: ['name', 'metadata'], participant: null,
    }]);
    assert.equal(session.participants.has(SELF), false);
  });

  test('an unknown member or a malformed message is ignored', async () => {
    const { ws, events } = await joinedSession();
    ws.serverSays({ type: 'participant-updated', participant: { id: 'pnobody0000', name: 'x', tracks: [] } });
    ws.serverSays({ type: 'participant-updated' });
    ws.serverSays({ type: 'participant-updated', participant: 'bob' });
    assert.deepEqual(ofType(events, 'participant-updated'), []);
    assert.deepEqual(ofType(events, 'error'), []);
  });
});

// ------------------------------------------------------------------ data

describe('data', () => {
  test('emits data with from, topic and payload', async () => {
    const { ws, events } = await joinedSession();
    ws.serverSays({ type: 'data', from: null, topic: 'poll', payload: { question: 'Lunch?', options: ['yes', 'no'] } });
    ws.serverSays({ type: 'data', from: null, payload: 'The meeting ends in 5 minutes' });
    ws.serverSays({ type: 'data', from: BOB, topic: 'chat', payload: 42 });
    assert.deepEqual(ofType(events, 'data'), [
      { from: null, topic: 'poll', payload: { question: 'Lunch?', options: ['yes', 'no'] } },
      { from: null, topic: null, payload: 'The meeting ends in 5 minutes' },
      { from: BOB, topic: 'chat', payload: 42 },
    ]);
  });
});

// ------------------------------------------------------------------ removal

describe('removed by the server', () => {
  test('isRejoinableRemoval: connection trouble and replacement rejoin, anything else ends', () => {
    for (const m of ['media connection failed', 'media connection lost', 'media never connected',
      'replaced by a new session with the same identity', 'moved to another node']) {
      assert.equal(isRejoinableRemoval(m), true, m);
    }
    for (const m of ['removed from the room', 'the room was closed', 'the room is gone', 'spamming the chat', '']) {
      assert.equal(isRejoinableRemoval(m), false, m);
    }
  });

  for (const reason of ['removed from the room', 'the room was closed', 'Please behave']) {
    test(`"${reason}": the session ends with the reason and never rejoins or resumes`, async () => {
      const { session, ws, pc, events } = await joinedSession();
      ws.serverSays({ type: 'error', code: 'removed', message: reason });
      assert.equal(session.state, 'disconnected');
      assert.equal(session.removedReason, reason);
      assert.equal(pc.closed, true);
      assert.equal(session.pc, null);
      assert.deepEqual(ofType(events, 'participant-left').map((d) => d.participantId), [BOB, CAROL]);
      assert.deepEqual(ofType(events, 'error'), [{ code: 'removed', message: reason, fatal: true }]);
      assert.deepEqual(ofType(events, 'removed'), [{ reason }]);
      assert.deepEqual(ofType(events, 'reconnecting'), []);
      assert.equal(ws.sentOf('leave').length, 0, 'nothing to leave: the server dropped us');
      const types = events.map((e) => e.type);
      assert.ok(types.indexOf('removed') < types.lastIndexOf('connection-state'), types.join());
      assert.deepEqual(ofType(events, 'connection-state').at(-1), { state: 'disconnected', previous: 'connected' });

      // The server closes the socket: still no new one, however long we wait.
      ws.drop();
      tick(120_000);
      assert.equal(FakeWebSocket.all.length, 1, 'no new socket');
      assert.deepEqual(ofType(events, 'reconnecting'), []);
      session.leave(); // harmless afterwards
      assert.equal(ws.sentOf('leave').length, 0);
    });
  }

  test('removed while resuming (a new socket): ends too, no further attempts', async () => {
    const { session, ws, events } = await joinedSession();
    ws.drop();
    assert.equal(ofType(events, 'reconnecting')[0].resuming, true);
    tick(250);
    const ws2 = lastSocket();
    ws2.open();
    assert.equal(ws2.sent[0].type, 'resume');
    ws2.serverSays({ type: 'error', code: 'removed', message: 'the room was closed' });
    assert.equal(session.state, 'disconnected');
    assert.deepEqual(ofType(events, 'removed'), [{ reason: 'the room was closed' }]);
    tick(120_000);
    assert.equal(FakeWebSocket.all.length, 2);
  });

  test('removed before joined: join() rejects with code removed', async () => {
    const { session } = newSession();
    const done = session.join();
    lastSocket().open();
    lastSocket().serverSays({ type: 'error', code: 'removed', message: 'the room was closed' });
    await assert.rejects(done, (e) => e instanceof JoinError && e.code === 'removed' && e.message === 'the room was closed');
    tick(60_000);
    assert.equal(FakeWebSocket.all.length, 1);
  });

  test('an empty message still ends the session, with a reason to show', async () => {
    const { session, ws, events } = await joinedSession();
    ws.serverSays({ type: 'error', code: 'removed', message: '' });
    assert.equal(session.removedReason, 'removed from the room');
    assert.deepEqual(ofType(events, 'removed'), [{ reason: 'removed from the room' }]);
  });

  test('a removal for a media failure still rejoins (a fresh join may work)', async () => {
    const { session, ws, events } = await joinedSession();
    ws.serverSays({ type: 'error', code: 'removed', message: 'media connection failed' });
    assert.deepEqual(ofType(events, 'removed'), []);
    assert.equal(session.state, 'reconnecting');
    const last = ofType(events, 'reconnecting').at(-1);
    assert.equal(last.resuming, false);
    tick(last.delayMs);
    lastSocket().open();
    assert.equal(lastSocket().sent[0].type, 'join');
  });
});
