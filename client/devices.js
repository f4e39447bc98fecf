// @ts-check
/**
 * Devices: the camera/microphone/speaker choice, shown on the join screen with a camera preview
 * and a microphone level meter, and during the call in the devices panel (`#btn-devices`),
 * where a change switches the device with `Session.switchDevice` (`replaceTrack`: no
 * renegotiation) and the speaker with `setSinkId` where the browser has it.
 *
 * DOM: `#device-selects` (moved between `#prejoin-devices` and `#devices-panel`) holding
 * `#sel-camera`, `#sel-mic`, `#sel-speaker` (its label hidden without `setSinkId`);
 * `#preview-video`, `#mic-level` (a <meter>, 0..1) on the join screen.
 */

import { listDevices } from './confab.js';

/** @param {string} id */
function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`#${id} missing from index.html`);
  return node;
}

/** The browser can choose where audio plays. */
const CAN_PICK_SPEAKER = typeof HTMLMediaElement !== 'undefined' && 'setSinkId' in HTMLMediaElement.prototype;

export class Devices {
  /** @type {MediaStream | null} */
  #preview = null;
  /** @type {AudioContext | null} */
  #audio = null;
  /** @type {number | null} */
  #meterFrame = null;
  /** @type {import('./confab.js').Session | null} */
  #session = null;
  /** Bumped by every start/stop of the preview, so a late getUserMedia does not restart it. */
  #previewRun = 0;

  /**
   * @param {{cameraConstraints: MediaTrackConstraints, onSwitched?: (kind: string, track: MediaStreamTrack) => void}} opts
   */
  constructor(opts) {
    this.opts = opts;
    this.selects = byId('device-selects');
    this.camera = /** @type {HTMLSelectElement} */ (byId('sel-camera'));
    this.mic = /** @type {HTMLSelectElement} */ (byId('sel-mic'));
    this.speaker = /** @type {HTMLSelectElement} */ (byId('sel-speaker'));
    this.previewVideo = /** @type {HTMLVideoElement} */ (byId('preview-video'));
    this.meter = /** @type {HTMLMeterElement} */ (byId('mic-level'));
    this.panel = byId('devices-panel');
    /** @type {HTMLElement} */ (this.speaker.closest('label')).hidden = !CAN_PICK_SPEAKER;
    this.camera.addEventListener('change', () => this.#changed('videoinput', this.camera.value));
    this.mic.addEventListener('change', () => this.#changed('audioinput', this.mic.value));
    this.speaker.addEventListener('change', () => this.applySpeaker());
    navigator.mediaDevices?.addEventListener?.('devicechange', () => void this.refresh());
  }

  /** The constraints for the chosen devices. */
  constraints() {
    const video = { ...this.opts.cameraConstraints, ...(this.camera.value ? { deviceId: { exact: this.camera.value } } : {}) };
    const audio = this.mic.value ? { deviceId: { exact: this.mic.value } } : true;
    return { audio, video };
  }

  /** Fills the selects (labels appear once a permission was given). */
  async refresh() {
    let found;
    try {
      found = await listDevices();
    } catch {
      return;
    }
    const fill = (/** @type {HTMLSelectElement} */ sel, /** @type {{deviceId: string, label: string}[]} */ list, /** @type {string} */ what) => {
      const keep = sel.value;
      sel.replaceChildren(...list.map((d, i) => {
        const o = document.createElement('option');
        o.value = d.deviceId;
        o.textContent = d.label || `${what} ${i + 1}`;
        return o;
      }));
      if (list.some((d) => d.deviceId === keep)) sel.value = keep;
      sel.disabled = list.length === 0;
    };
    fill(this.camera, found.videoinput, 'Camera');
    fill(this.mic, found.audioinput, 'Microphone');
    fill(this.speaker, found.audiooutput, 'Speaker');
  }

  /** The join screen: preview and meter until the call starts. */
  async startPreview() {
    byId('prejoin-devices').append(this.selects);
    this.stopPreview();
    const run = this.#previewRun;
    try {
      if (!navigator.mediaDevices) throw new Error('no media devices');
      const stream = await navigator.mediaDevices.getUserMedia(this.constraints());
      if (run !== this.#previewRun || this.#session) {
        // Joined (or another preview started) meanwhile: the call opens its own.
        for (const t of stream.getTracks()) t.stop();
        return;
      }
      this.#preview = stream;
      this.previewVideo.hidden = false;
      this.previewVideo.srcObject = stream;
      this.previewVideo.play().catch(() => {});
      this.#startMeter(stream);
    } catch {
      this.previewVideo.srcObject = null;
      this.previewVideo.hidden = true;
    }
    await this.refresh();
  }

  stopPreview() {
    this.#previewRun++;
    if (this.#meterFrame !== null) cancelAnimationFrame(this.#meterFrame);
    this.#meterFrame = null;
    this.#audio?.close().catch(() => {});
    this.#audio = null;
    for (const t of this.#preview?.getTracks() ?? []) t.stop();
    this.#preview = null;
    this.previewVideo.srcObject = null;
    this.previewVideo.hidden = true;
    this.meter.value = 0;
  }

  /**
   * The call started: the selects move to the devices panel (under its heading). The call
   * ended (null): back to the join screen, without a preview (the camera stays off until the
   * user picks a device or reloads).
   * @param {import('./confab.js').Session | null} session
   */
  attach(session) {
    this.#session = session;
    if (session) {
      this.stopPreview();
      const heading = this.panel.querySelector('header') ?? this.panel.querySelector('h2');
      if (heading) heading.after(this.selects);
      else this.panel.prepend(this.selects);
      void this.refresh();
    } else {
      byId('prejoin-devices').append(this.selects);
    }
  }

  /** Plays remote audio on the chosen speaker (where the browser can). @param {ParentNode} [root] */
  applySpeaker(root = document) {
    if (!CAN_PICK_SPEAKER || !this.speaker.value) return;
    for (const media of root.querySelectorAll('video, audio')) {
      const m = /** @type {any} */ (media);
      if (m.sinkId !== this.speaker.value) m.setSinkId(this.speaker.value).catch(() => {});
    }
  }

  /** @param {MediaStream} stream */
  #startMeter(stream) {
    if (!stream.getAudioTracks().length || typeof AudioContext === 'undefined') return;
    const ctx = new AudioContext();
    this.#audio = ctx;
    if (ctx.state === 'suspended') {
      // No user gesture yet (autoplay policy): the meter starts with the first one.
      const wake = () => { if (this.#audio === ctx) ctx.resume().catch(() => {}); };
      for (const type of ['pointerdown', 'keydown']) document.addEventListener(type, wake, { once: true, capture: true });
    }
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 512;
    ctx.createMediaStreamSource(stream).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const tick = () => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const s of samples) sum += s * s;
      // RMS on a rough log scale: speech lands in the middle of the meter.
      const rms = Math.sqrt(sum / samples.length);
      this.meter.value = Math.min(1, Math.max(0, 1 + Math.log10(rms + 1e-6) / 3));
      this.#meterFrame = requestAnimationFrame(tick);
    };
    tick();
  }

  /** @param {'audioinput' | 'videoinput'} kind @param {string} deviceId */
  async #changed(kind, deviceId) {
    const session = this.#session;
    if (!session) {
      await this.startPreview();
      return;
    }
    try {
      const track = await session.switchDevice(kind, deviceId);
      this.opts.onSwitched?.(kind, track);
    } catch (e) {
      console.warn(`confab: could not switch ${kind}: ${e}`);
    }
  }
}
