// Fakes of the browser's WebSocket and RTCPeerConnection for the SDK's unit tests
// (tests/client/*.test.mjs): enough of each for a Session to run, with test-side methods to
// play the server (`serverSays`, `open`) and the network (`goes`).

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
    /** @type {any} */ this.ontrack = null;
    /** @type {any} */ this.onnegotiationneeded = null;
    /** @type {any} */ this.onconnectionstatechange = null;
    /** @type {any} */ this.oniceconnectionstatechange = null;
    FakePeerConnection.all.push(this);
  }

  getTransceivers() { return []; }

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
