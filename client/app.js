// @ts-check
/**
 * Confab UI: join screen (camera preview, microphone meter, device choice), tiles in a grid or
 * speaker view, chat, screen sharing, device settings, mute/camera/share/leave buttons and a
 * connection indicator. All signaling and WebRTC lives in `confab.js`; this file and its two
 * helpers (`chat.js`: the chat panel, `devices.js`: device choice, preview and level meter)
 * only render its events.
 *
 * URL parameters: `?room=NAME&name=YOU` joins at once (no click, no preview); `&token=...` is
 * passed on; `&simulcast=0` publishes the camera as one encoding instead of three simulcast
 * layers. Without both the join screen shows, with `#preview-video` (the chosen camera,
 * mirrored), `#mic-level` (a <meter> 0..1 fed by a WebAudio AnalyserNode) and `#sel-camera`,
 * `#sel-mic`, `#sel-speaker` (`enumerateDevices`; the speaker only where `setSinkId` exists);
 * the call opens the devices chosen there.
 * For tests, `window.confab = {session, state}` exposes the live Session (e.g. `session.pc`)
 * and a plain snapshot of what the UI shows (`AppState` below: e.g. `chat`, the messages
 * shown; `chatUnread`, `chatError`; `screenShares`; `layout` / `speakerView`; `quality` per
 * participant id; `invite`); `window.confabStats()` resolves to the inbound
 * stats of every received track by publisher participant id (`Session.inboundStats()`; no
 * entries without a session) plus `speakers`, the ids of the active speakers, loudest first
 * (`Session.activeSpeakers()`; participant ids start with `p`, so never clash with it). After
 * every `active-speakers` event, once the tiles show it, the window gets a
 * `confab:active-speakers` event (`detail: {speakers: [participantId…]}`).
 *
 * Each remote tile reports how its video is shown (`Session.setTrackView`): its rendered size
 * in device pixels (ResizeObserver) and whether it is visible (IntersectionObserver, the page
 * not hidden, the element displayed). A tile whose track the server paused for bandwidth gets
 * the class `paused-bandwidth` and a "Paused — low bandwidth" overlay; one whose audio alone
 * is paused (a link too slow for every voice) the class `audio-paused-bandwidth` and "Audio
 * paused — low bandwidth".
 *
 * The tile of each active speaker (the server's `active-speakers`; the self-view tile when our
 * own id is listed) gets the class `speaking`, the loudest one also `dominant`, and its
 * accessible name says "(speaking)"; nothing is announced as the list changes.
 *
 * While the session recovers, a banner (`#conn-banner`) says why and what happens next: the
 * socket line for `reconnecting` ("Reconnecting in 3 s: …", counting down; "the call continues"
 * while the session is resumed), cleared once `connected` again; the media line for
 * `media-reconnecting` (its `reason`, e.g. that UDP may be blocked), cleared on
 * `media-connected`. `state.banner` holds its text; `state.recovery` the session's counters.
 *
 * Chat (`#btn-chat` toggles `#chat-panel`; aria-expanded; `#chat-unread` counts messages from
 * others while it is closed): `#chat-log` lists the messages as the server stamped them
 * (`li.chat-msg[data-id][data-from]`, sender name and time; ours `.self`; history first, so a
 * late joiner sees the last 50), never the text a client claims before the server echoes it.
 * `#chat-form` / `#chat-input` send with `Session.sendChat`; a refused send stays in the input
 * and `#chat-error` says why ("Slow down: too many messages — try again in 1 s" for
 * `rate_limited`). On a narrow screen (≤ 600 px) the panel covers the tiles, full width.
 *
 * Screen sharing (`#btn-share`, aria-pressed; "Stop sharing" while on): `Session.shareScreen`;
 * the browser's own stop button ends it the same way. A shared screen (ours or a member's,
 * `source` `screen`) is a tile of its own (`.tile.screen`, `data-participant-id="screen:<id>"`,
 * ours `screen:local`), shown large: while any screen is shared the layout is speaker view.
 *
 * Layout (`#btn-layout`, aria-pressed = speaker view): the grid, or speaker view: one tile
 * large (`.stage`: the first shared screen, else the loudest speaker, else the first other
 * member), the rest in a strip below. Tiles keep reporting their size and visibility (below).
 *
 * Devices (`#btn-devices` opens `#devices-panel`, which gets the same selects): a camera or
 * microphone change calls `Session.switchDevice` (`replaceTrack`, no renegotiation); the
 * speaker applies `setSinkId` to every tile. The panel also lists the keyboard shortcuts.
 *
 * Presence on each tile: a member's own mic/camera mute (`track-muted` with `byServer: false`)
 * shows like the host's below but says "muted" instead of "muted by the host" (`.badge-muted`
 * has `data-by` = `self` or `host`); a tile without a picture (camera off, or none yet) shows an
 * avatar with the initials (`data-initial`) in a colour of the name; `.quality` (role="img",
 * aria-label "Connection good"; ●●● excellent, ●●○ good, ●○○ poor, ○○○ lost; `data-quality` on
 * it and on the tile, whose accessible name says it too) shows the server's
 * `connection-quality` for that member, ours on the self view, as soon as the event arrives.
 *
 * Invite (`#btn-invite`): copies `…/?room=NAME` (no name or token) with `navigator.clipboard`
 * (else a selected input and `execCommand('copy')`); `#invite-status` says "Link copied" (or
 * shows the link if copying failed) for 4 s.
 *
 * Keyboard, in the call: `m` or Ctrl/⌘+D microphone, `v` or Ctrl/⌘+E camera, `s` share
 * screen, `c` chat, `l` layout, Escape closes the chat or devices panel. The letter keys do
 * nothing while typing in a field (the chat input); buttons carry `aria-keyshortcuts`. Every
 * control has an accessible name; toggles have aria-pressed, panels' buttons aria-expanded.
 * The controls wrap on a narrow screen (390 px: no horizontal scrolling).
 *
 * Room API (the host, through the server):
 * - A member's track muted by the host: its tile gets the class `mic-muted` / `cam-muted`, a
 *   "Mic muted" / "Camera off" badge (in `.badges`), and its accessible name says so; a camera
 *   off shows the avatar instead of the frozen picture. Our own tile does the same.
 * - Our own track muted by the host: the notice `#host-notice` (an assertive live region) says
 *   "Muted by the host" ("… (camera)", "… (microphone and camera)"), the mic (camera) button
 *   shows the muted state; the user may still unmute. `track-unmuted` only changes the notice to
 *   "The host allowed you to unmute" (gone after 10 s or once the user unmutes): the microphone
 *   stays off until the user turns it on. `state.hostNotice` holds the text, `state.hostMuted`
 *   the kinds muted.
 * - A rename (or new metadata) shows at once on the tile (ours too).
 * - A data message from the host appears as a toast in `#toasts` (a polite live region): the
 *   topic, and the payload as text if it is a string, else as JSON; gone after 10 s or when
 *   dismissed. `state.messages` keeps them.
 * - Removed by the host or the room closed (`removed`): the call ends with the reason on the
 *   join form ("You are no longer in the call: the room was closed."); no rejoin.
 *   `state.removedReason` holds it.
 */
import { Session } from './confab.js';
import { ChatPanel } from './chat.js';
import { Devices } from './devices.js';

/**
 * @typedef {object} AppState
 * @property {string} connectionState  the Session's state ('idle' before joining)
 * @property {string} mediaState       the RTCPeerConnection's connectionState
 * @property {string | null} participantId
 * @property {string | null} room
 * @property {string | null} name
 * @property {boolean} receiveOnly     true when camera/microphone could not be opened
 * @property {Record<string, {id: string, name: string, metadata: string | null,
 *           muted: {audio: boolean, video: boolean}}>} participants  remote members shown
 *           (`muted`: by the host)
 * @property {Record<string, string[]>} sendingLayers  per local track id, the rids the server's
 *           last `publish-layers` left on (no entry: every layer, as after joining)
 * @property {string[]} speakers       participant ids of the active speakers, loudest first
 *           (our own id too while we speak)
 * @property {{type: string, at: number, detail?: unknown}[]} events  recent session events
 * @property {{code: string, message: string, fatal: boolean}[]} errors
 * @property {string | null} banner    the recovery banner's text as shown (null: hidden)
 * @property {{reconnects: number, resumes: number, iceRestarts: number}} recovery  the session's
 *           counters (`Session.reconnects`, `resumes`, `iceRestarts`), as of its last event
 * @property {{audio: boolean, video: boolean}} hostMuted  our own tracks muted by the host
 * @property {string | null} hostNotice  the text of `#host-notice` (null: none)
 * @property {{from: string | null, topic: string | null, text: string, at: number}[]} messages
 *           data messages shown as toasts, oldest first (`text`: the payload as shown)
 * @property {string | null} removedReason  why the server ended our session (`removed`)
 * @property {{id: number, from: string, name: string, text: string, self: boolean}[]} chat
 *           the chat messages shown, by id (`client/chat.js`)
 * @property {boolean} chatOpen   the chat panel is open
 * @property {number} chatUnread  the unread count on the chat button
 * @property {string | null} chatError  the reason of the last refused send (`ChatError.reason`,
 *           e.g. 'rate_limited'), null once a send succeeds
 * @property {string[]} screenShares  participant ids whose screen is shown ('local': ours)
 * @property {Record<string, string>} quality  the server's connection quality per participant
 *           id (ours under our own id): excellent, good, poor, lost
 * @property {'grid' | 'speaker'} layout  the layout chosen (a screen share shows speaker view)
 * @property {boolean} speakerView  speaker view shown now (chosen, or a screen is shared)
 * @property {string | null} invite  the last invite link copied
 */

/** @type {AppState} */
const state = {
  connectionState: 'idle',
  mediaState: 'new',
  participantId: null,
  room: null,
  name: null,
  receiveOnly: false,
  participants: {},
  sendingLayers: {},
  speakers: [],
  events: [],
  errors: [],
  banner: null,
  recovery: { reconnects: 0, resumes: 0, iceRestarts: 0 },
  hostMuted: { audio: false, video: false },
  hostNotice: null,
  messages: [],
  removedReason: null,
  get chat() {
    return chat.messages;
  },
  get chatOpen() {
    return chat.open;
  },
  get chatUnread() {
    return chat.unread;
  },
  get chatError() {
    return chat.lastError;
  },
  screenShares: [],
  quality: {},
  layout: 'grid',
  speakerView: false,
  invite: null,
};

/** @type {{session: Session | null, state: AppState}} */
const exposed = { session: null, state };
/** @type {any} */ (window).confab = exposed;
/** @type {any} */ (window).confabStats = async () => {
  const session = exposed.session;
  const stats = session ? await session.inboundStats() : {};
  return { ...stats, speakers: session ? session.activeSpeakers().map((s) => s.participantId) : [] };
};

/** What the camera is asked for: the top simulcast layer's size (the others scale it down). */
const CAMERA_CONSTRAINTS = { width: { ideal: 960 }, height: { ideal: 540 } };

const PAUSED_TEXT = 'Paused — low bandwidth';
/** The overlay while only the participant's audio is held back (a link too slow for every voice). */
const AUDIO_PAUSED_TEXT = 'Audio paused — low bandwidth';

/** How long "The host allowed you to unmute" and a data toast stay. */
const HOST_ALLOWED_MS = 10_000;
const TOAST_MS = 10_000;
/** At most this many toasts at once (the oldest goes). */
const MAX_TOASTS = 4;
/** A data payload longer than this is cut for display. */
const MAX_TOAST_CHARS = 500;

/** @type {MediaStream | null} */
let localStream = null;

const STATUS_TEXT = /** @type {Record<string, string>} */ ({
  idle: 'Not connected',
  connecting: 'Connecting…',
  connected: 'Connected',
  reconnecting: 'Reconnecting…',
  disconnected: 'Disconnected',
  failed: 'Connection failed',
});

/**
 * Records a startup milestone once (performance marks are relative to navigation start), so
 * tests and developers can see where time-to-first-frame goes.
 * @param {string} name
 */
function mark(name) {
  if (performance.getEntriesByName(name, 'mark').length === 0) performance.mark(name);
}

// ------------------------------------------------------------------ DOM helpers

/**
 * @template {HTMLElement} T
 * @param {string} id
 * @param {new () => T} type
 * @returns {T}
 */
function el(id, type) {
  const node = document.getElementById(id);
  if (!(node instanceof type)) throw new Error(`#${id} missing from index.html`);
  return node;
}

const ui = {
  joinView: el('join-view', HTMLElement),
  joinForm: el('join-form', HTMLFormElement),
  joinRoom: el('join-room', HTMLInputElement),
  joinName: el('join-name', HTMLInputElement),
  joinError: el('join-error', HTMLElement),
  callView: el('call-view', HTMLElement),
  roomLabel: el('room-label', HTMLElement),
  status: el('status', HTMLElement),
  statusText: el('status-text', HTMLElement),
  notice: el('notice', HTMLElement),
  hostNotice: el('host-notice', HTMLElement),
  toasts: el('toasts', HTMLElement),
  banner: el('conn-banner', HTMLElement),
  bannerSocket: el('conn-banner-socket', HTMLElement),
  bannerMedia: el('conn-banner-media', HTMLElement),
  tiles: el('tiles', HTMLElement),
  btnMic: el('btn-mic', HTMLButtonElement),
  btnCam: el('btn-cam', HTMLButtonElement),
  btnLeave: el('btn-leave', HTMLButtonElement),
  btnShare: el('btn-share', HTMLButtonElement),
  btnChat: el('btn-chat', HTMLButtonElement),
  btnLayout: el('btn-layout', HTMLButtonElement),
  btnDevices: el('btn-devices', HTMLButtonElement),
  btnInvite: el('btn-invite', HTMLButtonElement),
  inviteStatus: el('invite-status', HTMLElement),
  devicesPanel: el('devices-panel', HTMLElement),
};

const chat = new ChatPanel();
const devices = new Devices({ cameraConstraints: CAMERA_CONSTRAINTS });

/** The SDK put a new track in our stream (`switchDevice`): the self view shows it. */
function refreshSelfView() {
  const tile = findTile('local');
  if (!tile || !localStream) return;
  const video = tileVideo(tile);
  if (video.srcObject !== localStream) video.srcObject = localStream; // it follows the stream's tracks
  video.play().catch(() => {});
  updateVideoPresence(tile, localStream);
}

/** @param {string | null} text */
function showNotice(text) {
  ui.notice.textContent = text ?? '';
  ui.notice.hidden = !text;
}

// ------------------------------------------------------------------ recovery banner

/**
 * What the banner says: the socket line (a reconnect in progress: why, and when the next try
 * is) and the media line (an ICE restart in progress: why).
 * @type {{socket: {reason: string, at: number, resuming: boolean} | null, media: string | null}}
 */
const banner = { socket: null, media: null };
/** @type {ReturnType<typeof setInterval> | null} */
let bannerTick = null;

/** @param {string} text */
function capitalize(text) {
  return text ? text[0].toUpperCase() + text.slice(1) : text;
}

function renderBanner() {
  const { socket, media } = banner;
  /** @type {string | null} */
  let socketText = null;
  if (socket) {
    const left = Math.ceil((socket.at - Date.now()) / 1000);
    const lead = socket.resuming ? 'Reconnecting to the server' : 'Reconnecting';
    const countdown = `${lead}${left > 0 ? ` in ${left} s` : ''}`;
    const rest = `: ${socket.reason}${socket.resuming ? ' (the call continues meanwhile)' : ''}`;
    // The countdown ticks every second, hidden from screen readers; they read the line once.
    const spoken = `${lead}${rest}`;
    if (ui.bannerSocket.dataset.spoken !== spoken) {
      const ticking = document.createElement('span');
      ticking.setAttribute('aria-hidden', 'true');
      const hidden = document.createElement('span');
      hidden.className = 'visually-hidden';
      hidden.textContent = lead;
      ui.bannerSocket.replaceChildren(ticking, hidden, document.createTextNode(rest));
      ui.bannerSocket.dataset.spoken = spoken;
    }
    /** @type {HTMLElement} */ (ui.bannerSocket.firstElementChild).textContent = countdown;
    socketText = `${countdown}${rest}`;
    if (left <= 0 && bannerTick) {
      clearInterval(bannerTick);
      bannerTick = null;
    }
  } else if (ui.bannerSocket.dataset.spoken !== undefined) {
    ui.bannerSocket.replaceChildren();
    delete ui.bannerSocket.dataset.spoken;
  }
  const mediaText = media ? capitalize(media) : null;
  if (ui.bannerMedia.textContent !== (mediaText ?? '')) ui.bannerMedia.textContent = mediaText ?? '';
  ui.bannerSocket.hidden = !socketText;
  ui.bannerMedia.hidden = !mediaText;
  ui.banner.hidden = !socketText && !mediaText;
  state.banner = [socketText, mediaText].filter(Boolean).join('\n') || null;
}

/** @param {{reason: string, at: number, resuming: boolean} | null} socket */
function setSocketBanner(socket) {
  banner.socket = socket;
  if (bannerTick) clearInterval(bannerTick);
  bannerTick = socket && socket.at > Date.now() ? setInterval(renderBanner, 1000) : null;
  renderBanner();
}

/** @param {string | null} media */
function setMediaBanner(media) {
  banner.media = media;
  renderBanner();
}

function renderStatus() {
  const s = state.connectionState;
  let text = STATUS_TEXT[s] ?? s;
  if (s === 'connected' && state.mediaState !== 'connected' && state.mediaState !== 'new') {
    text = `Connected (media ${state.mediaState})`;
  }
  ui.status.dataset.state = s;
  ui.statusText.textContent = text;
}

/** @param {string} id  participant id, or 'local' @returns {HTMLElement | null} */
function findTile(id) {
  return ui.tiles.querySelector(`.tile[data-participant-id="${CSS.escape(id)}"]`);
}

/** @param {HTMLElement} tile */
function tileVideo(tile) {
  return /** @type {HTMLVideoElement} */ (tile.querySelector('video'));
}

/**
 * Finds or creates the tile of a participant. A remote tile's video is observed for
 * `track-view` from the start, so its first view is known when its track arrives.
 * @param {string} id  participant id, or 'local'
 * @param {string} name
 * @param {boolean} local
 */
function ensureTile(id, name, local = false) {
  let tile = findTile(id);
  if (!tile) {
    tile = document.createElement('div');
    tile.className = local ? 'tile local no-video' : 'tile no-video';
    tile.dataset.participantId = id;
    tile.setAttribute('role', 'group');
    const video = document.createElement('video');
    video.autoplay = true;
    video.playsInline = true;
    video.muted = local; // never play our own microphone back
    const label = document.createElement('div');
    label.className = 'label';
    const badges = document.createElement('div');
    badges.className = 'badges';
    tile.append(video, label, badges);
    if (local) {
      ui.tiles.prepend(tile);
    } else {
      const paused = document.createElement('div');
      paused.className = 'paused-note';
      paused.textContent = PAUSED_TEXT;
      tile.append(paused);
      ui.tiles.append(tile);
      tileViews.set(video, { trackIds: new Set(), intersecting: null, width: 0, height: 0 });
      resizeObserver.observe(video);
      intersectionObserver.observe(video);
    }
  }
  const labelNode = /** @type {HTMLElement} */ (tile.querySelector('.label'));
  labelNode.textContent = local ? `${name} (you)` : name;
  tile.dataset.initial = initials(name);
  tile.dataset.name = name;
  tile.style.setProperty('--avatar-hue', String(hue(name)));
  renderQuality(tile); // also names the tile (renderSpeaking)
  return tile;
}

/** What a tile without a picture shows: the first letters of the first and last word. @param {string} name */
function initials(name) {
  const words = name.replace(/\s*\((you|screen)\)$/, '').trim().split(/\s+/).filter(Boolean);
  const first = (/** @type {string} */ w) => Array.from(w)[0] ?? '';
  const text = words.length > 1 ? first(words[0]) + first(words[words.length - 1]) : first(words[0] ?? '');
  return text.toUpperCase() || '?';
}

/** A stable colour per name for the avatar (0..359). @param {string} name */
function hue(name) {
  let h = 0;
  for (const c of name) h = (h * 31 + (c.codePointAt(0) ?? 0)) % 360;
  return h;
}

/** @param {string} id */
function removeTile(id) {
  const tile = findTile(id);
  if (!tile) return;
  const video = tileVideo(tile);
  resizeObserver.unobserve(video);
  intersectionObserver.unobserve(video);
  video.srcObject = null;
  tile.remove();
}

// ------------------------------------------------------------------ tile views

/**
 * How a remote tile's <video> is shown, as the observers last reported it.
 * @typedef {object} TileView
 * @property {Set<string>} trackIds        server ids of the video tracks the tile plays
 * @property {boolean | null} intersecting IntersectionObserver's last word (null: none yet)
 * @property {number} width                the video's content box, CSS px
 * @property {number} height
 */

/** @type {WeakMap<Element, TileView>} keyed by the remote tile's <video> */
const tileViews = new WeakMap();

const resizeObserver = new ResizeObserver((entries) => {
  for (const e of entries) updateView(e.target, { width: e.contentRect.width, height: e.contentRect.height });
});

const intersectionObserver = new IntersectionObserver((entries) => {
  for (const e of entries) updateView(e.target, { intersecting: e.isIntersecting });
});

/**
 * Records what an observer saw of a remote video and tells the session (which drops repeats
 * and debounces changes).
 * @param {Element} video
 * @param {Partial<TileView>} change
 */
function updateView(video, change) {
  const view = tileViews.get(video);
  const session = exposed.session;
  if (!view) return;
  Object.assign(view, change);
  if (!session || view.intersecting === null) return;
  const visible = view.intersecting && document.visibilityState === 'visible' && video.checkVisibility();
  const dpr = window.devicePixelRatio || 1;
  for (const trackId of view.trackIds) {
    session.setTrackView(trackId, { visible, width: view.width * dpr, height: view.height * dpr });
  }
}

function updateAllViews() {
  for (const tile of ui.tiles.querySelectorAll('.tile:not(.local)')) updateView(tileVideo(/** @type {HTMLElement} */ (tile)), {});
}

// A hidden page shows nothing; a new devicePixelRatio (zoom, another screen) changes every size.
document.addEventListener('visibilitychange', updateAllViews);
function watchPixelRatio() {
  matchMedia(`(resolution: ${window.devicePixelRatio}dppx)`).addEventListener('change', () => {
    updateAllViews();
    watchPixelRatio();
  }, { once: true });
}
watchPixelRatio();

/**
 * Marks a participant's tile while the server holds one of its tracks back for bandwidth.
 * @param {Session} session
 * @param {string} participantId
 */
function renderPaused(session, participantId) {
  const tile = findTile(participantId);
  if (!tile) return;
  const paused = session.pausedTracks().filter((p) => p.participantId === participantId);
  const video = paused.some((p) => p.kind === 'video');
  const audio = paused.some((p) => p.kind === 'audio');
  tile.classList.toggle('paused-bandwidth', video);
  tile.classList.toggle('audio-paused-bandwidth', audio);
  const note = tile.querySelector('.paused-note');
  if (note) note.textContent = video ? PAUSED_TEXT : AUDIO_PAUSED_TEXT;
}

// ------------------------------------------------------------------ active speakers

/** The tile id (`data-participant-id`) a speaker's participant id is shown in. @param {string} id */
function speakerTileId(id) {
  return id === state.participantId ? 'local' : id;
}

/**
 * Puts `speaking` (and, for the loudest, `dominant`) on a tile as `state.speakers` says, and
 * names the tile accordingly. A role="group" name is not a live region: screen readers hear it
 * when they reach the tile, not on every change.
 * @param {HTMLElement} tile
 */
function renderSpeaking(tile) {
  const id = tile.dataset.participantId;
  const rank = state.speakers.findIndex((s) => speakerTileId(s) === id);
  tile.classList.toggle('speaking', rank >= 0);
  tile.classList.toggle('dominant', rank === 0);
  const notes = [
    ...(tile.classList.contains('local') ? ['you'] : []),
    ...(rank >= 0 ? ['speaking'] : []),
    ...(tile.classList.contains('mic-muted') ? [tile.dataset.micBy === 'host' ? 'microphone muted by the host' : 'microphone muted'] : []),
    ...(tile.classList.contains('cam-muted') ? [tile.dataset.camBy === 'host' ? 'camera turned off by the host' : 'camera off'] : []),
    ...(tile.dataset.quality ? [`connection ${tile.dataset.quality}`] : []),
  ];
  const name = `${tile.dataset.name ?? ''}${notes.length ? ` (${notes.join(', ')})` : ''}`;
  if (tile.getAttribute('aria-label') !== name) tile.setAttribute('aria-label', name);
}

function renderAllSpeaking() {
  for (const tile of ui.tiles.querySelectorAll('.tile')) renderSpeaking(/** @type {HTMLElement} */ (tile));
}

/** A camera the host turned off shows the initial, not the last frame it sent.
 * @param {HTMLElement} tile @param {MediaStream} stream */
function updateVideoPresence(tile, stream) {
  const live = stream.getVideoTracks().some((t) => t.readyState === 'live' && !t.muted && t.enabled);
  tile.classList.toggle('no-video', !live || tile.classList.contains('cam-muted'));
}

// ------------------------------------------------------------------ muted by the host

const SVG_NS = 'http://www.w3.org/2000/svg';

/** A small icon with a slash across it (aria-hidden). @param {'audio' | 'video'} kind */
function mutedIcon(kind) {
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('viewBox', '0 0 16 16');
  svg.setAttribute('width', '12');
  svg.setAttribute('height', '12');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  const shapes = kind === 'audio'
    ? ['M8 1.5a2.5 2.5 0 0 0-2.5 2.5v4a2.5 2.5 0 0 0 5 0V4A2.5 2.5 0 0 0 8 1.5z',
      'M3.5 7.5a4.5 4.5 0 0 0 9 0M8 12v2.5']
    : ['M1.5 4.5h8.5v7H1.5z', 'M10 7l4.5-2.5v7L10 9'];
  for (const d of [...shapes, 'M2 2l12 12']) {
    const path = document.createElementNS(SVG_NS, 'path');
    path.setAttribute('d', d);
    path.setAttribute('fill', 'none');
    path.setAttribute('stroke', 'currentColor');
    path.setAttribute('stroke-width', '1.5');
    path.setAttribute('stroke-linecap', 'round');
    svg.append(path);
  }
  return svg;
}

/**
 * Shows on a tile which of its tracks the host muted: classes `mic-muted` / `cam-muted`, one
 * badge per kind (hidden from screen readers: the tile's accessible name says it), and no
 * frozen picture for a camera turned off.
 * @param {Session} session
 * @param {string} id  participant id, or 'local'
 */
function renderMuted(session, id) {
  const tile = findTile(id);
  if (!tile) return;
  const p = id === 'local' ? null : session.participants.get(id);
  const muted = id === 'local' ? session.mutedByServer : p?.muted ?? { audio: false, video: false };
  tile.classList.toggle('mic-muted', muted.audio);
  tile.classList.toggle('cam-muted', muted.video);
  const by = (/** @type {'audio' | 'video'} */ kind) =>
    id === 'local' || session.mutedBy(id, kind).server ? 'host' : 'self';
  tile.dataset.micBy = by('audio');
  tile.dataset.camBy = by('video');
  const badges = /** @type {HTMLElement} */ (tile.querySelector('.badges'));
  badges.setAttribute('aria-hidden', 'true');
  /** @type {('audio' | 'video')[]} */
  const want = [...(muted.audio ? /** @type {const} */ (['audio']) : []), ...(muted.video ? /** @type {const} */ (['video']) : [])];
  const have = [...badges.querySelectorAll('.badge-muted')].map((b) => /** @type {HTMLElement} */ (b).dataset.kind);
  const key = want.map((k) => `${k}:${by(k)}`).join();
  if (want.join() !== have.join() || badges.dataset.key !== key) {
    badges.dataset.key = key;
    badges.querySelectorAll('.badge-muted').forEach((b) => b.remove());
    for (const kind of want) {
      const badge = document.createElement('span');
      badge.className = 'badge badge-muted';
      badge.dataset.kind = kind;
      badge.dataset.by = by(kind);
      const host = by(kind) === 'host';
      badge.title = kind === 'audio' ? `Microphone muted${host ? ' by the host' : ''}` : `Camera turned off${host ? ' by the host' : ''}`;
      badge.append(mutedIcon(kind), document.createTextNode(kind === 'audio' ? 'Mic muted' : 'Camera off'));
      badges.append(badge);
    }
  }
  const stream = tileVideo(tile).srcObject;
  if (stream instanceof MediaStream) updateVideoPresence(tile, stream);
  renderSpeaking(tile); // the accessible name
}

const HOST_ALLOWED_TEXT = 'The host allowed you to unmute';
/** Clears `HOST_ALLOWED_TEXT` after `HOST_ALLOWED_MS`. @type {ReturnType<typeof setTimeout> | null} */
let hostNoticeTimer = null;

/**
 * What `#host-notice` says about our own tracks: "Muted by the host" while the host has one
 * muted (and, if the user turned it on anyway, that nobody hears or sees it yet); after the
 * host lifted it (`allowed`), "The host allowed you to unmute" for `HOST_ALLOWED_MS` or until
 * the user unmutes. Rewritten only when the text changes (the region is assertive).
 * @param {Session} session
 * @param {boolean} [allowed=false]  the host just lifted a mute
 */
function renderHostNotice(session, allowed = false) {
  const m = session.mutedByServer;
  state.hostMuted = { ...m };
  /** @type {string | null} */
  let text = null;
  if (m.audio || m.video) {
    text = `Muted by the host${m.audio && m.video ? ' (microphone and camera)' : m.video ? ' (camera)' : ''}`;
    // Turned on anyway (allowed): say that it reaches nobody yet.
    const heard = m.audio && session.micEnabled;
    const seen = m.video && session.cameraEnabled;
    if (heard || seen) {
      text += ` — the others will not ${heard && seen ? 'hear or see' : heard ? 'hear' : 'see'} you until the host allows it`;
    }
  } else if (allowed || state.hostNotice === HOST_ALLOWED_TEXT) {
    text = HOST_ALLOWED_TEXT; // stays until its timer ends or the user unmutes
  }
  if (hostNoticeTimer && (text !== HOST_ALLOWED_TEXT || allowed)) {
    clearTimeout(hostNoticeTimer);
    hostNoticeTimer = null;
  }
  if (text === HOST_ALLOWED_TEXT && !hostNoticeTimer) {
    hostNoticeTimer = setTimeout(() => {
      hostNoticeTimer = null;
      if (state.hostNotice === HOST_ALLOWED_TEXT) setHostNotice(null);
    }, HOST_ALLOWED_MS);
  }
  setHostNotice(text);
  ui.btnMic.title = m.audio ? 'Muted by the host: you may unmute, but nobody hears you until the host allows it' : '';
  ui.btnCam.title = m.video ? 'Turned off by the host: you may turn it on, but nobody sees it until the host allows it' : '';
}

/** @param {string | null} text */
function setHostNotice(text) {
  if (state.hostNotice === text) return;
  state.hostNotice = text;
  if (!text) {
    ui.hostNotice.replaceChildren();
    return;
  }
  const p = document.createElement('p');
  p.className = text === HOST_ALLOWED_TEXT ? 'host-notice allowed' : 'host-notice';
  p.textContent = text;
  ui.hostNotice.replaceChildren(p);
}

/** The user turned a microphone or camera on: "The host allowed you to unmute" has done its job. */
function dismissHostAllowed() {
  if (state.hostNotice !== HOST_ALLOWED_TEXT) return;
  if (hostNoticeTimer) clearTimeout(hostNoticeTimer);
  hostNoticeTimer = null;
  setHostNotice(null);
}

/** The mic and camera buttons as the local tracks are now (the host may have turned one off). */
function syncMediaButtons() {
  const session = exposed.session;
  if (!session || !localStream) return;
  setPressed(ui.btnMic, !session.micEnabled, 'Mute', 'Unmute');
  setPressed(ui.btnCam, !session.cameraEnabled, 'Camera off', 'Camera on');
  const tile = findTile('local');
  if (tile) updateVideoPresence(tile, localStream);
}

// ------------------------------------------------------------------ data messages

/** A payload as shown: a string as it is, anything else as JSON. @param {unknown} payload */
function payloadText(payload) {
  let text;
  if (typeof payload === 'string') text = payload;
  else {
    try { text = JSON.stringify(payload) ?? String(payload); } catch { text = String(payload); }
  }
  return text.length > MAX_TOAST_CHARS ? `${text.slice(0, MAX_TOAST_CHARS)}…` : text;
}

/**
 * Shows a data message as a toast in `#toasts` (a polite live region: it is read once).
 * @param {Session} session
 * @param {import('./confab.js').DataDetail} d
 */
function showToast(session, d) {
  const text = payloadText(d.payload);
  state.messages.push({ from: d.from, topic: d.topic, text, at: Date.now() });
  if (state.messages.length > 50) state.messages.shift();
  const from = d.from === null ? 'Host' : session.participants.get(d.from)?.name ?? d.from;
  const toast = document.createElement('div');
  toast.className = 'toast';
  const head = document.createElement('p');
  head.className = 'toast-head';
  const who = document.createElement('span');
  who.className = 'toast-from';
  who.textContent = from;
  head.append(who);
  if (d.topic) {
    const topic = document.createElement('span');
    topic.className = 'toast-topic';
    topic.textContent = d.topic;
    head.append(document.createTextNode(' · '), topic);
  }
  const body = document.createElement('p');
  body.className = 'toast-body';
  body.textContent = text;
  const close = document.createElement('button');
  close.type = 'button';
  close.className = 'toast-close';
  close.setAttribute('aria-label', 'Dismiss message');
  close.textContent = '×';
  const timer = setTimeout(() => toast.remove(), TOAST_MS);
  close.addEventListener('click', () => {
    clearTimeout(timer);
    toast.remove();
  });
  toast.append(head, body, close);
  ui.toasts.append(toast);
  while (ui.toasts.children.length > MAX_TOASTS) ui.toasts.firstElementChild?.remove();
}

/**
 * Plays a remote tile. Browsers may refuse audible autoplay without a user gesture; then we
 * play muted and unmute on the next click.
 * @param {HTMLVideoElement} video
 */
function playRemote(video) {
  video.play().catch((e) => {
    if (!(e instanceof DOMException) || e.name !== 'NotAllowedError') return;
    video.muted = true;
    video.play().catch(() => {});
    showNotice('Click anywhere to turn on sound.');
    document.addEventListener('click', () => {
      for (const v of ui.tiles.querySelectorAll('.tile:not(.local) video')) {
        /** @type {HTMLVideoElement} */ (v).muted = false;
      }
      showNotice(null);
    }, { once: true });
  });
}

function syncParticipants() {
  const session = exposed.session;
  state.participants = {};
  if (!session) return;
  for (const p of session.participants.values()) {
    state.participants[p.id] = { id: p.id, name: p.name, metadata: p.metadata, muted: { ...p.muted } };
  }
}

/** @param {string} type @param {unknown} [detail] */
function logEvent(type, detail) {
  state.events.push({ type, at: Date.now(), detail });
  if (state.events.length > 200) state.events.splice(0, state.events.length - 200);
}

// ------------------------------------------------------------------ call lifecycle

/**
 * @param {string} room @param {string} name @param {string | null} token
 * @param {boolean} simulcast  publish the camera as simulcast layers
 */
async function startCall(room, name, token, simulcast) {
  state.room = room;
  state.name = name;
  state.removedReason = null;
  ui.joinView.hidden = true;
  ui.callView.hidden = false;
  ui.roomLabel.hidden = false;
  ui.roomLabel.textContent = `Room ${room}`;
  document.title = `${room} · Confab`;
  showNotice(null);
  ui.btnMic.disabled = true;
  ui.btnCam.disabled = true;
  ui.btnShare.disabled = !navigator.mediaDevices?.getDisplayMedia;

  mark('confab:call-start');
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const session = new Session({
    url: `${scheme}://${location.host}/ws`,
    room,
    name,
    simulcast,
    // `?red=0` publishes plain Opus (no RFC 2198 redundancy).
    red: !['0', 'false', 'off'].includes(new URLSearchParams(location.search).get('red')?.trim().toLowerCase() ?? ''),
    // `?relay=1` connects through the TURN server only (iceTransportPolicy 'relay').
    ...(['1', 'true', 'on'].includes(new URLSearchParams(location.search).get('relay')?.trim().toLowerCase() ?? '') ? { iceTransportPolicy: /** @type {const} */ ('relay') } : {}),
    ...(token ? { token } : {}),
  });
  exposed.session = session;
  wireSession(session);
  chat.attach(session);
  devices.attach(session);
  // Join while the camera starts (or while the user answers the permission prompt): we see the
  // others sooner, and our tracks follow in their own offer as soon as they exist.
  const joined = session.join().then(() => true, (e) => {
    // Refused for good (bad room/name, auth, full) or left before joining: back to the form.
    if (exposed.session === session) {
      const detail = /** @type {any} */ (e);
      endCall(detail.code === 'left' ? null : `Could not join: ${detail.message ?? e}`);
    }
    return false;
  });

  /** @type {MediaStream | null} */
  let stream = null;
  try {
    // `mediaDevices` only exists in secure contexts (https://, or http://localhost).
    if (!navigator.mediaDevices) throw new Error('the page is not served over HTTPS');
    stream = await navigator.mediaDevices.getUserMedia(devices.constraints());
    mark('confab:local-media');
  } catch (e) {
    const why = e instanceof DOMException ? e.name : e instanceof Error ? e.message : String(e);
    if (exposed.session === session) {
      showNotice(`Camera and microphone are unavailable (${why}). You joined receive-only.`);
      session.receiveOnly();
    }
  }
  if (exposed.session !== session) {
    // The call ended while the camera was starting.
    for (const t of stream?.getTracks() ?? []) t.stop();
    return;
  }
  localStream = stream;
  state.receiveOnly = !stream;
  ui.btnMic.disabled = !stream?.getAudioTracks().length;
  ui.btnCam.disabled = !stream?.getVideoTracks().length;
  setPressed(ui.btnMic, false, 'Mute', 'Unmute');
  setPressed(ui.btnCam, false, 'Camera off', 'Camera on');
  if (stream) {
    const tile = ensureTile('local', name, true);
    const video = tileVideo(tile);
    video.srcObject = stream;
    updateVideoPresence(tile, stream);
    video.play().catch(() => {});
    await session.publish(stream);
  }
  await joined;
}

/** @param {Session} session */
function wireSession(session) {
  /**
   * @template T
   * @param {string} type
   * @param {(detail: T) => void} fn
   * @param {boolean} [log=true]  record it in `state.events`
   */
  const on = (type, fn, log = true) => session.addEventListener(type, (ev) => {
    if (exposed.session !== session) return;
    const detail = /** @type {CustomEvent<T>} */ (ev).detail;
    if (log) logEvent(type, summarize(detail));
    fn(detail);
  });

  const counters = () => {
    state.recovery = { reconnects: session.reconnects, resumes: session.resumes, iceRestarts: session.iceRestarts };
  };
  on('connection-state', (/** @type {import('./confab.js').ConnectionStateDetail} */ d) => {
    state.connectionState = d.state;
    // A resume keeps the PeerConnection (media may still flow); a rejoin starts a new one.
    state.mediaState = session.pc ? session.pc.connectionState : 'new';
    if (d.state === 'connected' || d.state === 'failed' || d.state === 'disconnected') setSocketBanner(null);
    if (!session.pc) setMediaBanner(null);
    renderStatus();
  });
  on('media-state', (/** @type {import('./confab.js').MediaStateDetail} */ d) => {
    state.mediaState = d.state;
    renderStatus();
  });
  on('reconnecting', (/** @type {import('./confab.js').ReconnectingDetail} */ d) => {
    setSocketBanner({ reason: d.reason, at: Date.now() + d.delayMs, resuming: d.resuming });
    counters();
  });
  on('resumed', () => {
    setSocketBanner(null);
    if (ui.notice.textContent?.startsWith('The server')) showNotice(null);
    syncParticipants();
    renderAllSpeaking();
    counters();
  });
  on('media-reconnecting', (/** @type {import('./confab.js').MediaReconnectingDetail} */ d) => {
    setMediaBanner(d.reason);
    counters();
  });
  on('media-connected', () => {
    setMediaBanner(null);
    counters();
  });
  on('joined', (/** @type {import('./confab.js').JoinedDetail} */ d) => {
    mark('confab:joined');
    setSocketBanner(null);
    setMediaBanner(null); // a new PeerConnection
    counters();
    state.participantId = d.participantId;
    state.sendingLayers = {}; // a new PeerConnection sends every layer
    if (ui.notice.textContent?.startsWith('The server')) showNotice(null);
    syncParticipants();
    renderAllSpeaking(); // our own id changed
  });
  on('participant-joined', (/** @type {import('./confab.js').ParticipantJoinedDetail} */ d) => {
    ensureTile(d.participant.id, d.participant.name);
    renderMuted(session, d.participant.id); // a mute may have come first
    syncParticipants();
  });
  on('participant-left', (/** @type {import('./confab.js').ParticipantLeftDetail} */ d) => {
    removeTile(d.participantId);
    for (const [trackId, owner] of screenTiles) if (owner === d.participantId) removeScreenTile(trackId);
    syncParticipants();
  });
  on('track', (/** @type {import('./confab.js').TrackDetail} */ d) => {
    mark('confab:first-remote-track');
    const p = session.participants.get(d.participantId);
    const screen = isScreen(d);
    const tile = screen
      ? showScreenTile(d.participantId, d.trackId, p?.name ?? d.participantId)
      : ensureTile(d.participantId, p?.name ?? d.participantId);
    const video = tileVideo(tile);
    const stream = tileStream(tile, d.track);
    if (video.srcObject !== stream) video.srcObject = stream;
    updateVideoPresence(tile, stream);
    if (screen) {
      // A screen's frames start (and pause, while nothing changes on it) as its track says.
      for (const type of ['mute', 'unmute']) d.track.addEventListener(type, () => updateVideoPresence(tile, stream));
    }
    renderPaused(session, d.participantId);
    renderQuality(tile);
    devices.applySpeaker(tile);
    playRemote(video);
    if (d.track.kind === 'video') {
      tileViews.get(video)?.trackIds.add(d.trackId);
      updateView(video, {});
    }
  });
  on('track-ended', (/** @type {import('./confab.js').TrackDetail} */ d) => {
    if (removeScreenTile(d.trackId)) return;
    const tile = findTile(d.participantId);
    if (!tile) return;
    tileViews.get(tileVideo(tile))?.trackIds.delete(d.trackId);
    const stream = tileVideo(tile).srcObject;
    if (stream instanceof MediaStream) {
      if (d.track) stream.removeTrack(d.track);
      updateVideoPresence(tile, stream);
    }
  });
  const muteChanged = (/** @type {import('./confab.js').TrackMuteDetail} */ d) => {
    const tile = findTile(d.participantId);
    const stream = tile && tileVideo(tile).srcObject;
    if (tile && stream instanceof MediaStream) updateVideoPresence(tile, stream);
    if (d.byServer || d.sourceTrackId) {
      // The host's mute or the member's own: both show on the tile.
      renderMuted(session, d.participantId);
      syncParticipants();
    }
  };
  on('track-muted', muteChanged);
  on('track-unmuted', muteChanged);
  on('local-muted-by-server', () => {
    // The SDK has turned the track off; the buttons and the self view say so.
    syncMediaButtons();
    renderMuted(session, 'local');
    renderHostNotice(session);
  });
  on('local-unmuted-by-server', (/** @type {import('./confab.js').LocalUnmutedDetail} */ d) => {
    // The track stays off: the user turns it back on (the buttons already say "Unmute").
    syncMediaButtons();
    renderMuted(session, 'local');
    renderHostNotice(session, d.cause === 'server');
  });
  on('participant-updated', (/** @type {import('./confab.js').ParticipantUpdatedDetail} */ d) => {
    if (d.local) {
      state.name = d.name;
      if (findTile('local')) ensureTile('local', d.name, true);
      if (findTile('screen:local')) ensureTile('screen:local', `${d.name} (screen)`);
      return;
    }
    if (findTile(d.participantId)) ensureTile(d.participantId, d.name);
    if (findTile(`screen:${d.participantId}`)) ensureTile(`screen:${d.participantId}`, `${d.name} (screen)`);
    syncParticipants();
  });
  on('data', (/** @type {import('./confab.js').DataDetail} */ d) => showToast(session, d));
  on('removed', (/** @type {import('./confab.js').RemovedDetail} */ d) => {
    // The host removed us or closed the room: the session is over (the SDK does not rejoin).
    state.removedReason = d.reason;
    const reason = d.reason.trim();
    endCall(`You are no longer in the call: ${reason}${/[.!?]$/.test(reason) ? '' : '.'}`, 'disconnected');
  });
  const paused = (/** @type {{participantId: string}} */ d) => renderPaused(session, d.participantId);
  on('track-paused', paused);
  on('track-resumed', paused);
  on('track-unpublished', (/** @type {{participantId: string, trackId: string}} */ d) => {
    removeScreenTile(d.trackId);
    paused(d);
    renderMuted(session, d.participantId); // its mute went with it
    syncParticipants();
  });
  on('publish-layers', (/** @type {import('./confab.js').PublishLayersDetail} */ d) => {
    state.sendingLayers[d.sourceTrackId] = d.encodings.filter((e) => e.active).map((e) => e.rid ?? '');
  });
  on('active-speakers', (/** @type {import('./confab.js').ActiveSpeakersDetail} */ d) => {
    state.speakers = d.speakers.map((s) => s.participantId);
    renderAllSpeaking();
    applyLayout();
    window.dispatchEvent(new CustomEvent('confab:active-speakers', { detail: { speakers: [...state.speakers] } }));
  }, false); // several a second while people talk: would crowd everything else out of `state.events`
  on('connection-quality', (/** @type {import('./confab.js').ConnectionQualityDetail} */ d) => {
    state.quality = Object.fromEntries(Object.entries(d.qualities).map(([id, q]) => [id, q.quality]));
    for (const tile of ui.tiles.querySelectorAll('.tile')) renderQuality(/** @type {HTMLElement} */ (tile));
  }, false);
  on('local-track-replaced', () => {
    refreshSelfView();
    syncMediaButtons(); // the mute state went over to the new track
  });
  on('local-screen', (/** @type {import('./confab.js').LocalScreenDetail} */ d) => {
    setPressed(ui.btnShare, !!d.track, 'Share screen', 'Stop sharing');
    if (d.track) {
      const tile = showScreenTile('local', d.track.id, state.name ?? 'You');
      tile.classList.add('local-screen');
      const video = tileVideo(tile);
      video.muted = true;
      video.srcObject = new MediaStream([d.track]);
      tile.classList.remove('no-video');
      video.play().catch(() => {});
    } else {
      for (const [trackId, owner] of screenTiles) if (owner === 'local') removeScreenTile(trackId);
    }
  });
  on('error', (/** @type {import('./confab.js').ErrorDetail} */ d) => {
    state.errors.push(d);
    if (state.errors.length > 50) state.errors.shift();
    console.warn(`confab: ${d.code}: ${d.message}`);
  });
  on('going-away', (/** @type {import('./confab.js').GoingAwayDetail} */ d) => {
    showNotice(`The server is restarting${d.reason ? ` (${d.reason})` : ''}; reconnecting…`);
  });
}

// ------------------------------------------------------------------ screens, layout, quality

/** Screen tiles shown: track id → owner participant id ('local': our own share). @type {Map<string, string>} */
const screenTiles = new Map();

/** The streams tiles made for themselves. @type {WeakSet<MediaStream>} */
const tileStreams = new WeakSet();

/** A shared screen (or its audio). @param {{source?: string}} d */
function isScreen(d) {
  return d.source === 'screen' || d.source === 'screen-audio';
}

/**
 * The stream a tile plays: its own, holding one track per kind (a member's camera and
 * microphone arrive in one stream with its screen; each tile shows only its own).
 * @param {HTMLElement} tile
 * @param {MediaStreamTrack} track
 */
function tileStream(tile, track) {
  const video = tileVideo(tile);
  let stream = video.srcObject instanceof MediaStream && tileStreams.has(video.srcObject) ? video.srcObject : null;
  if (!stream) {
    stream = new MediaStream();
    tileStreams.add(stream);
  }
  for (const t of stream.getTracks()) if (t.kind === track.kind && t !== track) stream.removeTrack(t);
  if (!stream.getTracks().includes(track)) stream.addTrack(track);
  return stream;
}

/** Shows a shared screen as its own large tile. @param {string} owner @param {string} trackId @param {string} name */
function showScreenTile(owner, trackId, name) {
  const id = `screen:${owner}`;
  const tile = ensureTile(id, `${name} (screen)`, false);
  tile.classList.add('screen');
  screenTiles.set(trackId, owner);
  state.screenShares = [...new Set(screenTiles.values())];
  applyLayout();
  return tile;
}

/** Removes a screen tile; false if `trackId` was not a shared screen. @param {string} trackId */
function removeScreenTile(trackId) {
  const owner = screenTiles.get(trackId);
  if (owner === undefined) return false;
  screenTiles.delete(trackId);
  if (![...screenTiles.values()].includes(owner)) removeTile(`screen:${owner}`);
  state.screenShares = [...new Set(screenTiles.values())];
  applyLayout();
  return true;
}

/**
 * Grid, or speaker view: one tile large (the first shared screen, else the loudest speaker,
 * else the first other member), the rest in a strip. A shared screen always shows speaker view.
 */
function applyLayout() {
  const speaker = state.layout === 'speaker' || screenTiles.size > 0;
  state.speakerView = speaker;
  ui.tiles.classList.toggle('layout-speaker', speaker);
  ui.tiles.classList.toggle('layout-grid', !speaker);
  const screen = ui.tiles.querySelector('.tile.screen');
  const loudest = state.speakers[0] ? findTile(speakerTileId(state.speakers[0])) : null;
  const stage = speaker ? (screen ?? loudest ?? ui.tiles.querySelector('.tile:not(.local)') ?? ui.tiles.querySelector('.tile')) : null;
  // CSS puts the stage first (`order`): the DOM order stays, so no video is moved and
  // restarted, and a screen reader's order does not change with every new speaker.
  for (const tile of ui.tiles.querySelectorAll('.tile')) tile.classList.toggle('stage', tile === stage);
  updateAllViews(); // tile sizes changed: the server picks layers for them
}

const QUALITY_TEXT = /** @type {Record<string, string>} */ ({ excellent: '●●●', good: '●●○', poor: '●○○', lost: '○○○' });

/** The connection-quality mark on a member's tile (ours on the self view). @param {HTMLElement} tile */
function renderQuality(tile) {
  let id = tile.dataset.participantId ?? '';
  if (id.startsWith('screen:')) return;
  if (id === 'local') id = state.participantId ?? '';
  const q = state.quality[id];
  let mark = /** @type {HTMLElement | null} */ (tile.querySelector('.quality'));
  if (!q) {
    mark?.remove();
    delete tile.dataset.quality;
  } else {
    if (!mark) {
      mark = document.createElement('span');
      mark.className = 'quality';
      mark.setAttribute('role', 'img');
      tile.append(mark);
    }
    mark.dataset.quality = q;
    mark.textContent = QUALITY_TEXT[q] ?? '';
    mark.setAttribute('aria-label', `Connection ${q}`);
    mark.title = `Connection ${q}`;
    tile.dataset.quality = q;
  }
  renderSpeaking(tile);
}

/** Copies a link to this room (without our name or token). */
async function copyInvite() {
  const url = `${location.origin}${location.pathname}?room=${encodeURIComponent(state.room ?? '')}`;
  let ok = false;
  try {
    await navigator.clipboard.writeText(url);
    ok = true;
  } catch {
    const input = document.createElement('input');
    input.value = url;
    document.body.append(input);
    input.select();
    ok = document.execCommand('copy');
    input.remove();
  }
  ui.inviteStatus.textContent = ok ? 'Link copied' : `Copy this link: ${url}`;
  state.invite = url;
  setTimeout(() => { ui.inviteStatus.textContent = ''; }, 4000);
}

/**
 * Makes a short, serialisable summary of an event detail for `state.events`.
 * @param {any} d
 */
function summarize(d) {
  if (!d || typeof d !== 'object') return d;
  /** @type {Record<string, unknown>} */
  const out = {};
  for (const [k, v] of Object.entries(d)) {
    if (v instanceof MediaStreamTrack) out[k] = `${v.kind}:${v.id}`;
    else if (v instanceof MediaStream) out[k] = `stream:${v.id}`;
    else if (typeof v !== 'object' || v === null) out[k] = v;
    else if (Array.isArray(v) && v.every((x) => typeof x !== 'object')) out[k] = [...v];
  }
  return out;
}

/**
 * Stops the call and shows the join form again.
 * @param {string | null} message
 * @param {string} [finalState]  the connection state shown (default: 'failed' with a message,
 *   else 'disconnected')
 */
function endCall(message, finalState = message ? 'failed' : 'disconnected') {
  const session = exposed.session;
  exposed.session = null;
  session?.leave();
  for (const t of localStream?.getTracks() ?? []) t.stop();
  localStream = null;
  resizeObserver.disconnect();
  intersectionObserver.disconnect();
  banner.media = null;
  setSocketBanner(null);
  ui.tiles.replaceChildren();
  state.participants = {};
  state.sendingLayers = {};
  state.speakers = [];
  state.participantId = null;
  if (hostNoticeTimer) clearTimeout(hostNoticeTimer);
  hostNoticeTimer = null;
  setHostNotice(null);
  state.hostMuted = { audio: false, video: false };
  ui.btnMic.title = ui.btnCam.title = '';
  ui.toasts.replaceChildren();
  chat.attach(null);
  chat.toggle(false);
  devices.attach(null);
  setDevicesOpen(false);
  screenTiles.clear();
  state.screenShares = [];
  state.quality = {};
  setPressed(ui.btnShare, false, 'Share screen', 'Stop sharing');
  state.connectionState = finalState;
  state.mediaState = 'new';
  renderStatus();
  ui.callView.hidden = true;
  ui.joinView.hidden = false;
  ui.roomLabel.hidden = true;
  document.title = 'Confab';
  ui.joinRoom.value = state.room ?? '';
  ui.joinName.value = state.name ?? '';
  ui.joinError.textContent = message ?? 'You left the room.';
  ui.joinError.hidden = false;
  // A reload should show the form, not silently re-join.
  const params = new URLSearchParams(location.search);
  params.delete('name');
  params.delete('token');
  history.replaceState(null, '', `${location.pathname}${params.size ? `?${params}` : ''}`);
}

/**
 * @param {HTMLButtonElement} button
 * @param {boolean} pressed
 * @param {string} offLabel  label while not pressed
 * @param {string} onLabel   label while pressed
 */
function setPressed(button, pressed, offLabel, onLabel) {
  button.setAttribute('aria-pressed', String(pressed));
  button.textContent = pressed ? onLabel : offLabel;
}

// ------------------------------------------------------------------ wiring

ui.btnMic.addEventListener('click', () => {
  const session = exposed.session;
  if (!session) return;
  const enable = !session.micEnabled;
  session.setMicEnabled(enable);
  setPressed(ui.btnMic, !enable, 'Mute', 'Unmute');
  if (enable) dismissHostAllowed();
  renderHostNotice(session); // still muted by the host: say that nobody hears it yet
});

ui.btnCam.addEventListener('click', () => {
  const session = exposed.session;
  if (!session) return;
  const enable = !session.cameraEnabled;
  session.setCameraEnabled(enable);
  setPressed(ui.btnCam, !enable, 'Camera off', 'Camera on');
  if (enable) dismissHostAllowed();
  renderHostNotice(session);
  const tile = /** @type {HTMLElement | null} */ (ui.tiles.querySelector('.tile.local'));
  if (tile && localStream) updateVideoPresence(tile, localStream);
});

ui.btnLeave.addEventListener('click', () => endCall(null));

ui.btnShare.addEventListener('click', async () => {
  const session = exposed.session;
  if (!session) return;
  try {
    if (session.screenTrack) await session.stopScreenShare();
    else await session.shareScreen();
  } catch (e) {
    const why = e instanceof DOMException ? e.name : String(e);
    if (why !== 'NotAllowedError') showNotice(`Screen sharing failed (${why}).`);
  }
});

/** Shows or hides the devices panel (one panel at a time: it closes the chat). @param {boolean} open */
function setDevicesOpen(open) {
  ui.devicesPanel.hidden = !open;
  ui.btnDevices.setAttribute('aria-expanded', String(open));
  if (open) {
    chat.toggle(false);
    /** @type {HTMLElement | null} */ (ui.devicesPanel.querySelector('select:not(:disabled)'))?.focus();
  }
}

ui.btnChat.addEventListener('click', () => {
  // The chat panel toggled itself (client/chat.js); it takes the devices panel's place.
  if (chat.open) setDevicesOpen(false);
});

ui.btnLayout.addEventListener('click', () => {
  state.layout = state.layout === 'grid' ? 'speaker' : 'grid';
  setPressed(ui.btnLayout, state.layout === 'speaker', 'Speaker view', 'Grid view');
  applyLayout();
});

ui.btnDevices.addEventListener('click', () => setDevicesOpen(ui.devicesPanel.hidden));

el('devices-close', HTMLButtonElement).addEventListener('click', () => {
  setDevicesOpen(false);
  ui.btnDevices.focus();
});

ui.btnInvite.addEventListener('click', () => void copyInvite());

/** Single-key shortcuts (not while typing in a field). */
const KEYS = /** @type {Record<string, HTMLButtonElement>} */ ({ m: ui.btnMic, v: ui.btnCam, c: ui.btnChat, s: ui.btnShare, l: ui.btnLayout });
/** Ctrl (⌘ on a Mac) shortcuts, as other meeting apps have them: they work in a field too. */
const CTRL_KEYS = /** @type {Record<string, HTMLButtonElement>} */ ({ d: ui.btnMic, e: ui.btnCam });

// Keyboard (in the call): m or Ctrl/⌘+D microphone, v or Ctrl/⌘+E camera, c chat, s share
// screen, l layout; Escape closes the chat or devices panel.
document.addEventListener('keydown', (ev) => {
  if (!exposed.session || ui.callView.hidden || ev.repeat || ev.altKey || ev.isComposing) return;
  const key = ev.key.toLowerCase();
  const target = /** @type {HTMLElement | null} */ (ev.target);
  const typing = !!target?.closest('input, textarea, select, [contenteditable]');
  /** @type {HTMLButtonElement | undefined} */
  let button;
  if (ev.ctrlKey !== ev.metaKey) button = ev.shiftKey ? undefined : CTRL_KEYS[key];
  else if (!ev.ctrlKey && !ev.shiftKey && !typing) button = KEYS[key];
  if (key === 'escape' && !ev.ctrlKey && !ev.metaKey) {
    if (chat.open) {
      chat.toggle(false);
      ui.btnChat.focus();
    } else if (!ui.devicesPanel.hidden) {
      setDevicesOpen(false);
      ui.btnDevices.focus();
    }
    return;
  }
  if (button && !button.disabled) {
    ev.preventDefault(); // Ctrl+D would bookmark, Ctrl+E search
    button.click();
  }
});

ui.joinForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const room = ui.joinRoom.value.trim();
  const name = ui.joinName.value.trim();
  if (!room || !name) return;
  ui.joinError.hidden = true;
  const params = new URLSearchParams({ room, name });
  const simulcast = simulcastWanted(new URLSearchParams(location.search));
  if (!simulcast) params.set('simulcast', '0');
  history.pushState(null, '', `${location.pathname}?${params}`);
  startCall(room, name, null, simulcast);
});

/** `?simulcast=0` (or `false`, `off`) turns simulcast off. @param {URLSearchParams} params */
function simulcastWanted(params) {
  return !['0', 'false', 'off'].includes(params.get('simulcast')?.trim().toLowerCase() ?? '');
}

// Leaving the page leaves the room, so the others drop our tile at once.
window.addEventListener('pagehide', () => exposed.session?.leave());

function main() {
  renderStatus();
  const params = new URLSearchParams(location.search);
  const room = params.get('room')?.trim() ?? '';
  const name = params.get('name')?.trim() ?? '';
  const token = params.get('token');
  if (room && name) {
    startCall(room, name, token, simulcastWanted(params));
  } else {
    ui.joinRoom.value = room;
    ui.joinName.value = name;
    ui.joinView.hidden = false;
    (room ? ui.joinName : ui.joinRoom).focus();
    void devices.startPreview();
  }
}

main();
