// Fakes of the browser's WebSocket, RTCPeerConnection, RTCDataChannel, local media and
// `navigator.mediaDevices` for the SDK's unit tests (tests/client/*.test.mjs): enough of each
// for a Session to run, with test-side methods to play the server (`serverSays`, `open`) and
// the network (`goes`); and a harness for a session that publishes (`joinedSession`).

import { afterEach, beforeEach, mock } from 'node:test';

import { Session } from '../../client/confab.js';

export class FakeWebSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;
  /** @type {FakeWebSocket[]} */
  static all = [];

  /** @param {string} url */
  constructor(url) {
    this.url = url;
    this.readyState = FakeWebSocket.CONNECTING;
    /** @type {any[]} */
    this.sent = [];
    /** The fake server answers `ping` with `pong` (keeps the dead-socket check quiet). */
    this.autoPong = true;
    /** @type {((ev?: any) => void) | null} */
    this.onopen = null;
    /** @type {((ev: any) => void) | null} */
    this.onmessage = null;
    /** @type {((ev: any) => void) | null} */
    this.onclose = null;
    /** @type {((ev?: any) => void) | null} */
    this.onerror = null;
    FakeWebSocket.all.push(this);
  }

  /** @param {string} data */
  send(data) {
    const msg = JSON.parse(data);
    this.sent.push(msg);
    if (msg.type === 'ping' && this.autoPong && !this.silent) this.serverSays({ type: 'pong' });
  }

  /** Like a browser's: a silent (dead) socket is stuck `CLOSING` and never fires `close`. */
  close() {
    this.closeCalls = (this.closeCalls ?? 0) + 1;
    this.readyState = this.silent ? FakeWebSocket.CLOSING : FakeWebSocket.CLOSED;
  }

  /** The path went away without a word (an address change): the socket stays `OPEN`, what is
   * sent is lost (still recorded in `sent`), nothing arrives, and no `close` comes. */
  goSilent() { this.silent = true; }

  open() {
    this.readyState = FakeWebSocket.OPEN;
    this.onopen?.();
  }

  /** @param {unknown} msg */
  serverSays(msg) {
    this.onmessage?.({ data: typeof msg === 'string' ? msg : JSON.stringify(msg) });
  }

  /** The connection breaks (or never opens). */
  drop() {
    this.readyState = FakeWebSocket.CLOSED;
    this.onclose?.({ code: 1006, reason: '' });
  }

  /** Sent messages of a type. @param {string} type */
  sentOf(type) { return this.sent.filter((m) => m.type === type); }
}

export class FakePeerConnection {
  /** @type {FakePeerConnection[]} */
  static all = [];

  /** @param {any} config */
  constructor(config) {
    this.config = { ...config };
    /** @type {any[]} */
    this.setConfigurations = [];
    this.connectionState = 'new';
    this.iceConnectionState = 'new';
    this.signalingState = 'stable';
    /** @type {{type: string, sdp: string} | null} */
    this.localDescription = null;
    /** @type {{type: string, sdp: string} | null} */
    this.remoteDescription = null;
    this.restartIceCalls = 0;
    this.closed = false;
    this.offers = 0;
    /** Test side: what `getStats()` reports. `inbound`: an `inbound-rtp` stream exists;
     * `bytesReceived` of the selected candidate pair `pairId` (and of its transport);
     * `statsFail`: 'throw' throws, 'reject' rejects, 'hang' never settles. */
    this.inbound = false;
    this.bytesReceived = 0;
    this.pairId = 'CP1';
    /** @type {null | 'throw' | 'reject' | 'hang'} */
    this.statsFail = null;
    this.getStatsCalls = 0;
    /** @type {FakeDataChannel[]} */
    this.dataChannels = [];
    /** @type {any} */ this.ontrack = null;
    /** @type {any} */ this.onnegotiationneeded = null;
    /** @type {any} */ this.onconnectionstatechange = null;
    /** @type {any} */ this.oniceconnectionstatechange = null;
    FakePeerConnection.all.push(this);
  }

  getTransceivers() { return []; }

  /** Like a browser's: the channel starts `connecting`; the test opens it (`open()`).
   * @param {string} label @param {any} [init] */
  createDataChannel(label, init) {
    const dc = new FakeDataChannel(label, init);
    this.dataChannels.push(dc);
    return dc;
  }

  getSenders() { return []; }

  getConfiguration() { return { ...this.config }; }

  /** @param {any} config */
  setConfiguration(config) {
    this.config = { ...config };
    this.setConfigurations.push(config);
  }

  /** Like Chrome: marks the restart and fires `negotiationneeded`. */
  restartIce() {
    this.restartIceCalls += 1;
    queueMicrotask(() => this.onnegotiationneeded?.());
  }

  async createOffer() {
    this.offers += 1;
    return { type: 'offer', sdp: `v=0\r\no=- fake-offer-${this.offers}\r\n` };
  }

  /** @param {{type: string, sdp?: string}} [desc] */
  async setLocalDescription(desc) {
    if (!desc) desc = { type: 'answer', sdp: 'v=0\r\no=- fake-answer\r\n' };
    if (desc.type === 'rollback') {
      this.localDescription = null;
      this.signalingState = 'stable';
      return;
    }
    this.localDescription = { type: desc.type, sdp: desc.sdp ?? '' };
    this.signalingState = desc.type === 'offer' ? 'have-local-offer' : 'stable';
  }

  /** @param {{type: string, sdp: string}} desc */
  async setRemoteDescription(desc) {
    this.remoteDescription = desc;
    this.signalingState = desc.type === 'offer' ? 'have-remote-offer' : 'stable';
  }

  async addIceCandidate() {}

  /** A stats report like Chrome's: a transport, its selected candidate pair, maybe an inbound stream. */
  getStats() {
    this.getStatsCalls += 1;
    if (this.statsFail === 'throw') throw new Error('getStats broke');
    if (this.statsFail === 'reject') return Promise.reject(new Error('getStats failed'));
    if (this.statsFail === 'hang') return new Promise(() => {});
    /** @type {Map<string, any>} */
    const report = new Map();
    report.set('T01', { id: 'T01', type: 'transport', selectedCandidatePairId: this.pairId, bytesReceived: this.bytesReceived });
    report.set(this.pairId, { id: this.pairId, type: 'candidate-pair', state: 'succeeded', nominated: true, bytesReceived: this.bytesReceived });
    if (this.inbound) {
      report.set('IT01', { id: 'IT01', type: 'inbound-rtp', kind: 'audio', trackIdentifier: 'rt1', bytesReceived: this.bytesReceived });
    }
    return Promise.resolve(report);
  }

  /** Test side: a remote track of `participantId` arrives (`track` event).
   * @param {string} participantId @param {string} trackId @param {'audio' | 'video'} [kind] */
  receives(participantId, trackId, kind = 'audio') {
    const track = { id: trackId, kind, onended: null, onmute: null, onunmute: null };
    this.ontrack?.({ track, streams: [{ id: participantId, onremovetrack: null }], transceiver: { mid: null }, receiver: {} });
    return track;
  }

  close() {
    this.closed = true;
    this.connectionState = 'closed';
  }

  /** Test side: the connection (and its ICE transport) changes state. @param {string} state */
  goes(state) {
    this.connectionState = state;
    this.iceConnectionState = state === 'connecting' ? 'checking' : state;
    this.oniceconnectionstatechange?.();
    this.onconnectionstatechange?.();
  }
}

/** An `RTCDataChannel`: records what is sent; the test plays the server (`serverSends`). */
export class FakeDataChannel {
  /** @param {string} label @param {any} [init] */
  constructor(label, init) {
    this.label = label;
    this.init = init;
    this.readyState = 'connecting';
    /** @type {any[]} */
    this.sent = [];
    /** @type {any} */ this.onopen = null;
    /** @type {any} */ this.onclose = null;
    /** @type {any} */ this.onmessage = null;
  }

  /** @param {string} data */
  send(data) {
    if (this.readyState !== 'open') throw new Error('InvalidStateError: channel not open');
    this.sent.push(JSON.parse(data));
  }

  close() {
    if (this.readyState === 'closed') return;
    this.readyState = 'closed';
    this.onclose?.();
  }

  /** Test side. */
  open() {
    this.readyState = 'open';
    this.onopen?.();
  }

  /** Test side: a frame from the server (an object is sent as JSON). @param {unknown} msg */
  serverSends(msg) {
    this.onmessage?.({ data: typeof msg === 'string' ? msg : JSON.stringify(msg) });
  }
}

/** A local `MediaStreamTrack`, as far as the SDK uses one (an EventTarget: `ended`). */
export class FakeLocalTrack extends EventTarget {
  /** @param {string} id @param {'audio' | 'video'} kind @param {any} [constraints] */
  constructor(id, kind, constraints = {}) {
    super();
    this.id = id;
    this.kind = kind;
    this.enabled = true;
    this.readyState = 'live';
    this.contentHint = '';
    this.constraints = constraints;
  }

  getConstraints() { return { ...this.constraints }; }

  /** Like a browser's: ends the track without an `ended` event. */
  stop() { this.readyState = 'ended'; }

  /** Test side: the browser ends it (its own "stop sharing", a device unplugged). */
  endByBrowser() {
    this.readyState = 'ended';
    this.dispatchEvent(new Event('ended'));
  }
}

/** A local `MediaStream`. */
export class FakeStream {
  /** @param {FakeLocalTrack[]} tracks */
  constructor(tracks) { this.tracks = [...tracks]; }
  getTracks() { return [...this.tracks]; }
  getAudioTracks() { return this.tracks.filter((t) => t.kind === 'audio'); }
  getVideoTracks() { return this.tracks.filter((t) => t.kind === 'video'); }
  /** @param {FakeLocalTrack} t */
  removeTrack(t) { this.tracks = this.tracks.filter((x) => x !== t); }
  /** @param {FakeLocalTrack} t */
  addTrack(t) { this.tracks.push(t); }
}

/** The fake PeerConnection, able to send: `addTransceiver`, `removeTrack` and the senders'
 * `replaceTrack` (set `failReplace` to make it reject) and `get`/`setParameters` as the SDK
 * uses them. */
export class SendingPeerConnection extends FakePeerConnection {
  /** @param {any} config */
  constructor(config) {
    super(config);
    /** @type {any[]} */
    this.transceivers = [];
    /** @type {any[]} */
    this.removedSenders = [];
    this.failReplace = false;
  }

  getTransceivers() { return [...this.transceivers]; }

  /** @param {any} track @param {any} init */
  addTransceiver(track, init = {}) {
    const kind = typeof track === 'string' ? track : track.kind;
    const pc = this;
    const t = {
      mid: null,
      init,
      direction: init.direction ?? 'sendrecv',
      currentDirection: null,
      sender: {
        track: typeof track === 'string' ? null : track,
        /** @param {any} n */
        async replaceTrack(n) {
          if (pc.failReplace) throw new Error('InvalidModificationError');
          t.sender.track = n;
        },
        encodings: (init.sendEncodings ?? [{}]).map((/** @type {any} */ e) => ({ active: true, ...e })),
        getParameters() { return { encodings: t.sender.encodings.map((/** @type {any} */ e) => ({ ...e })) }; },
        /** @param {any} params */
        async setParameters(params) { t.sender.encodings = params.encodings.map((/** @type {any} */ e) => ({ ...e })); },
      },
      receiver: { track: { kind } },
    };
    this.transceivers.push(t);
    return t;
  }

  /** Like a browser's: the sender stops sending (its m-line goes `recvonly`/`inactive`).
   * @param {any} sender */
  removeTrack(sender) {
    const t = this.transceivers.find((x) => x.sender === sender);
    if (!t) throw new Error('InvalidAccessError: not a sender of this connection');
    sender.track = null;
    t.direction = 'inactive';
    this.removedSenders.push(sender);
  }
}

/** `navigator.mediaDevices`: `getUserMedia` / `getDisplayMedia` hand out fake tracks and
 * record their constraints; `devices` is what `enumerateDevices` lists. */
export class FakeMediaDevices {
  constructor() {
    /** @type {any[]} */
    this.userMediaCalls = [];
    /** @type {any[]} */
    this.displayMediaCalls = [];
    /** @type {any[]} */
    this.devices = [];
    this.made = 0;
    /** Set to make the next `getDisplayMedia` reject (the user cancelled). */
    this.denyDisplay = false;
  }

  /** @param {any} constraints */
  async getUserMedia(constraints) {
    this.userMediaCalls.push(constraints);
    const kind = constraints.audio ? 'audio' : 'video';
    return new FakeStream([new FakeLocalTrack(`dev-${kind}-${++this.made}`, kind)]);
  }

  /** @param {any} constraints */
  async getDisplayMedia(constraints) {
    this.displayMediaCalls.push(constraints);
    if (this.denyDisplay) throw new Error('NotAllowedError');
    return new FakeStream([new FakeLocalTrack(`screen-${++this.made}`, 'video')]);
  }

  async enumerateDevices() { return [...this.devices]; }
}

// ------------------------------------------------------------------ harness

export const SELF = 'pself000000';
export const BOB = 'pbob0000000';
export const CAROL = 'pcarol00000';

const globals = /** @type {any} */ (globalThis);
const saved = { WebSocket: globals.WebSocket, RTCPeerConnection: globals.RTCPeerConnection, navigator: globals.navigator };
/** Sessions made by `joinedSession`, left by `cleanUp`. @type {Session[]} */
const sessions = [];

/** After each test: leaves every session `joinedSession` made and puts the globals back. */
export function cleanUp() {
  for (const s of sessions.splice(0)) s.leave();
  globals.WebSocket = saved.WebSocket;
  globals.RTCPeerConnection = saved.RTCPeerConnection;
  Object.defineProperty(globalThis, 'navigator', { value: saved.navigator, configurable: true, writable: true });
  FakeWebSocket.all = [];
  FakePeerConnection.all = [];
}

/** The newest socket. */
export const lastSocket = () => /** @type {FakeWebSocket} */ (FakeWebSocket.all.at(-1));

/** Lets queued promise work (the negotiation queue) run. Real `setImmediate`: not mocked. */
export const settle = async () => {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
};

/** @param {{type: string, detail: any}[]} events @param {string} type */
export const ofType = (events, type) => events.filter((e) => e.type === type).map((e) => e.detail);

/** The server's `joined`: bob (microphone, camera) and carol (microphone, metadata).
 * @param {Record<string, unknown>} [extra] */
export function joinedMsg(extra = {}) {
  return {
    type: 'joined',
    participant_id: SELF,
    room: 'r',
    participants: [
      { id: BOB, name: 'bob', tracks: [{ track_id: 'tb1', kind: 'audio' }, { track_id: 'tb2', kind: 'video' }] },
      { id: CAROL, name: 'carol', metadata: '{"role":"host"}', tracks: [{ track_id: 'tc1', kind: 'audio' }] },
    ],
    ice_servers: [],
    resume_token: 'tok1',
    resume_grace_ms: 15_000,
    ...extra,
  };
}

/**
 * A new Session on the fakes (`SendingPeerConnection`, `FakeMediaDevices`), not joined yet,
 * with every event it emits; `cleanUp()` leaves it.
 * @param {Partial<import('../../client/confab.js').SessionOptions>} [options]
 */
export function newSession(options = {}) {
  globals.WebSocket = FakeWebSocket;
  globals.RTCPeerConnection = SendingPeerConnection;
  const devices = new FakeMediaDevices();
  Object.defineProperty(globalThis, 'navigator', { value: { mediaDevices: devices }, configurable: true, writable: true });
  const session = new Session({ url: 'ws://test/ws', room: 'r', name: 'me', random: () => 0.5, ...options });
  sessions.push(session);
  return { session, events: recordEvents(session), devices };
}

/** Every event `session` emits from now on, in order. @param {EventTarget} session */
export function recordEvents(session) {
  /** @type {{type: string, detail: any}[]} */
  const events = [];
  const dispatch = session.dispatchEvent.bind(session);
  session.dispatchEvent = (ev) => {
    events.push({ type: ev.type, detail: /** @type {CustomEvent} */ (ev).detail });
    return dispatch(ev);
  };
  return events;
}

/** Runs each test of the file on node:test's mock timers (setTimeout, setInterval, Date) and
 * calls `cleanUp()` after it. Call once at the top of a test file. */
export function useMockTimersAndCleanUp() {
  beforeEach(() => {
    mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'] });
  });
  afterEach(() => {
    cleanUp();
    mock.timers.reset();
  });
}

/** Advances the mock clock in steps of at most 100 ms (a timer that a timer callback arms
 * then runs as it would in real time). @param {number} ms */
export const tick = (ms) => {
  for (let left = ms; left > 0; left -= 100) mock.timers.tick(Math.min(100, left));
};

/** Joins `session`: its socket opens and the server answers `joined` (a message of
 * `joinedMsg`). Returns the socket. @param {Session} session @param {Record<string, unknown>} joined */
export async function joinNow(session, joined) {
  const done = session.join();
  const ws = lastSocket();
  ws.open();
  ws.serverSays(joined);
  await done;
  return ws;
}

/**
 * A session joined to room `r` with bob and carol, publishing a microphone and a camera
 * (`navigator.mediaDevices` is a `FakeMediaDevices`), and every event it emits from then on.
 * Use with node:test's mock timers, and `cleanUp()` after each test.
 * @param {Partial<import('../../client/confab.js').SessionOptions>} [options]
 * @param {Record<string, unknown>} [joined]  fields of the server's `joined`
 */
export async function joinedSession(options = {}, joined = {}) {
  const { session, events, devices } = newSession(options);
  const mic = new FakeLocalTrack('local-mic-1', 'audio');
  const cam = new FakeLocalTrack('local-cam-1', 'video', { width: 1280, deviceId: 'cam-a' });
  const stream = new FakeStream([mic, cam]);
  await session.publish(/** @type {any} */ (stream));
  const ws = await joinNow(session, joinedMsg(joined));
  const pc = /** @type {SendingPeerConnection} */ (/** @type {unknown} */ (session.pc));
  events.length = 0;
  return { session, ws, pc, events, mic, cam, stream, devices };
}
