// @ts-check
/**
 * Confab browser SDK: one signaling WebSocket and exactly one RTCPeerConnection per session.
 *
 * This module touches no DOM, so any UI (or a test) can drive it. It speaks the protocol in
 * `docs/protocol.md`:
 * - The browser is the *polite* peer in perfect negotiation. A server `offer` always wins: if we
 *   have an offer of our own outstanding, we roll it back (explicitly, before
 *   `setRemoteDescription`), answer, and offer again once stable.
 * - Remote ICE candidates are queued until a remote description is set.
 * - A ping every 10 s; 30 s without any server frame means the socket is dead.
 * - **Session resume.** `joined` and `resumed` carry a `resume_token` (each `resumed` a new one)
 *   and `resume_grace_ms`. If the socket drops while joined (not after `leave()`), the session
 *   keeps its PeerConnection, local and remote tracks and member list (media keeps flowing),
 *   reports `reconnecting` (`resuming: true`) and opens a new socket (first after
 *   `resumeRetryMs`, then doubling up to `resumeRetryMaxMs`) whose first message is
 *   `{type: 'resume', room, participant_id, token: <resume token>}`. On `resumed` it reconciles
 *   the member list (events only for what changed), re-sends what the server may have missed
 *   (an outstanding offer of ours, candidates, track views) and emits `resumed`; the
 *   participant id stays the same and `joined` is not emitted again.
 * - **Full rejoin.** If resuming is impossible (no token, `error {code: 'resume-failed'}`, the
 *   grace period since the socket was lost is over, or the server `removed` us because our media
 *   connection failed or another session replaced ours; see `isRejoinableRemoval`), the session
 *   closes its PeerConnection, removes every member (with `participant-left`), and joins
 *   afresh (on the same socket after `resume-failed`, else on a new one after an exponential,
 *   jittered backoff: `backoffBaseMs` × 2^attempt up to `backoffMaxMs`, ±`backoffJitter`),
 *   re-publishing the same local stream. The server hands out a new participant id on every
 *   join. The attempt counter is reset only once media has flowed after a join (the
 *   PeerConnection reached `connected`), not on `joined`. `rate_limited` in reply to a join
 *   backs off for at least the error's `retry_after_ms`.
 * - **ICE restart.** When the PeerConnection fails, or stays `disconnected` for
 *   `iceDisconnectedMs`, the session calls `pc.restartIce()` on the same PeerConnection (the
 *   new offer goes out the usual way), emits `media-reconnecting`, and, while it is still not
 *   `connected`, restarts again after `iceRestartBaseMs` × 2^n (up to `iceRestartMaxMs`,
 *   ±`iceRestartJitter`). Same session, same participant id: the others see no leave or join.
 *   `media-connected` follows once it is `connected` again.
 * - **Socket probe.** An address change can leave the socket `OPEN` without a `close` event
 *   (the old path is gone, nothing says so) until the `deadAfterMs` check; every offer sent on
 *   it is lost. So whenever the media is in trouble (a restart is decided, or the
 *   PeerConnection is first seen `disconnected`/`failed`), the session sends a `ping`; a
 *   restart decided then waits for the answer. No server frame within `socketProbeMs` means
 *   the socket is lost (handlers detached, `close()` called, its `close` event not awaited):
 *   the session resumes on a new socket and restarts ICE after `resumed` (an offer of ours
 *   still unanswered is sent again there).
 * - **Stall watchdog.** While the PeerConnection is `connected` and media is received (an
 *   `inbound-rtp` stream and a remote track exist; the server sends RTCP sender reports every
 *   second per forwarded track, so a live path always delivers bytes), `pc.getStats()` is
 *   polled every `stallCheckMs`. If the selected candidate pair's (else the transport's)
 *   `bytesReceived` has not grown for `stallMs`, that counts as `disconnected` for
 *   `iceDisconnectedMs` already: probe the socket and restart ICE (reason "no media received
 *   for 2 s"); `media-connected` follows once bytes arrive again.
 * - **Connect timeout.** A PeerConnection not `connected` `connectTimeoutMs` after its first
 *   offer/answer exchange (Chromium may stay `connecting` ~30 s when every media port is
 *   blocked) counts as `failed`: ICE restart on the same PeerConnection, same participant id,
 *   the reason saying UDP and TCP may be blocked. Each restart after that waits at least
 *   `connectTimeoutMs` as well (the first attempt had that long) before the backoff above
 *   grows past it.
 * - Camera video is published as three simulcast layers (rids `q`, `h`, `f`; see
 *   `SIMULCAST_LAYERS`) unless the session was made with `simulcast: false`. The server turns
 *   layers on and off with `publish-layers` (dynacast); the session applies that to the sender.
 * - `setTrackView()` tells the server how large, and whether visible, a remote video is shown,
 *   so it can pick a layer for it (`track-view`); repeats are dropped and changes debounced.
 * - The server names the dominant speakers (`active-speakers`, loudest first, our own id
 *   included while we speak); `activeSpeakers()` returns the current list. It is emptied when
 *   the socket drops, and a member who leaves is taken off it.
 * - **Removed for good.** Any other `error {code: 'removed'}` (an admin removed us through the
 *   room API, or the room was closed: "removed from the room", "the room was closed", or the
 *   admin's own reason) ends the session like `leave()` without a rejoin or resume: `error`
 *   (`fatal: true`), then `removed` with the server's reason (also `removedReason`), then
 *   `connection-state` `disconnected`.
 * - **Muted by the server.** `track-muted` / `track-unmuted` (`by_server`) for one of our own
 *   tracks (its `source_track_id` is the local `MediaStreamTrack.id`) disables that local track
 *   (`enabled = false`) and emits `local-muted-by-server`; `track-unmuted` only lifts that state
 *   (`local-unmuted-by-server`) and never re-enables the track: the user unmutes with
 *   `setMicEnabled`/`setCameraEnabled` as usual (allowed while still muted by the server, but
 *   nobody hears or sees it until the server forwards the track again). `mutedByServer` tells
 *   which kinds are muted now. For another member's track the session emits `track-muted` /
 *   `track-unmuted` with `byServer: true`, and `mutedTracks()`, `isMuted()` and each
 *   `Participant.muted` hold the current state. A server mute of ours also counts as our own
 *   (the track is off; see the next point), so the others still see it off after the server
 *   lifts it, until the user turns it on.
 * - **Self mute.** `setMicEnabled` / `setCameraEnabled` (and a server mute of ours) send
 *   `{type: 'mute', track_id, muted}` for each track whose state changed, by the id the server
 *   knows it by, once an offer of ours has named that track in its `sources` (a new join: after
 *   its first offer; a `mute` before would be refused); after `resumed` a `mute: true` goes
 *   again for every track that is off. Another member's self mute arrives as `track-muted` /
 *   `track-unmuted` with `byServer: false` (and a `sourceTrackId`), or as `self_muted` in a
 *   member list. The server's and the member's own mute are kept apart (`mutedBy()`); a track
 *   is muted (`isMuted()`, `Participant.muted`) while either holds.
 * - **Sources.** Every offer of ours carries `sources`: each track we send, by the id the
 *   server knows it by (the `msid` of its m-line), as `camera`, `microphone` or `screen`.
 *   Another member's tracks carry `source` (`track-published`, `track` details,
 *   `remoteTracks()`, `Participant.tracks`), the default by kind when not announced.
 * - **Screen share.** `shareScreen()` sends the display on a transceiver of its own (one
 *   encoding, `contentHint = 'detail'`); `stopScreenShare()` (also on the track's `ended`)
 *   removes its sender. `local-screen` tells the UI. It is sent again after a full rejoin.
 * - **Devices.** `switchDevice()` replaces the microphone or camera track without
 *   renegotiating (`replaceTrack`; mute state kept); the new local track maps to the id the
 *   server knows (the first track's), for `mute`, server mutes and `publish-layers`.
 *   `listDevices()` lists the devices by kind.
 * - **Chat.** Every new PeerConnection opens the data channel `confab` (ordered, reliable)
 *   before its first offer; a resume keeps it. `sendChat()` resolves with the server-stamped
 *   message (matched by a generated `client_id`) or rejects with a `ChatError`;
 *   `chatMessages()` keeps the last `MAX_CHAT_KEPT` (history included, by id). Frames that
 *   are not valid JSON chat messages are ignored.
 * - **Connection quality.** `connection-quality` from the server (every member, ours too)
 *   emits `connection-quality`; `connectionQuality(id)` reads the latest rating.
 * - `participant-updated` (a name or metadata set through the room API) updates the member (or,
 *   for our own id, `name` and `metadata`) and emits `participant-updated`; `data` from the
 *   server emits `data`.
 *
 * Events (all `CustomEvent`s; see the typedefs below for each `detail`):
 * `joined`, `participant-joined`, `participant-left`, `track-published`, `track-unpublished`,
 * `track`, `track-ended`, `track-muted`, `track-unmuted`, `track-paused`, `track-resumed`,
 * `publish-layers`, `active-speakers`, `connection-state`, `media-state`, `error`, `going-away`,
 * `reconnecting`, `resumed`, `media-reconnecting`, `media-connected`, `local-muted-by-server`,
 * `local-unmuted-by-server`, `participant-updated`, `data`, `removed`, `local-screen`,
 * `local-track-replaced`, `chat` (detail: a `ChatMessage`; each new message once, ours
 * included), `chat-history`, `chat-rejected`, `chat-state`, `connection-quality`.
 */

/**
 * What a published track carries (`offer.sources`, `TrackInfo.source`).
 * @typedef {'camera' | 'microphone' | 'screen' | 'screen-audio'} TrackSource
 * A kind (any track of it) or a source, for `isMuted` / `mutedBy`.
 * @typedef {'audio' | 'video' | TrackSource} MuteQuery
 * A member's track as this session knows it: `source` as announced (default by kind).
 * @typedef {{track_id: string, kind: 'audio' | 'video', source?: TrackSource}} WireTrack
 * @typedef {{id: string, name: string, metadata?: string, tracks: WireTrack[]}} WireParticipant
 * @typedef {{urls: string | string[], username?: string, credential?: string}} WireIceServer
 * @typedef {{candidate: string, sdp_mid?: string | null, sdp_m_line_index?: number | null,
 *            username_fragment?: string | null}} WireCandidate
 */

/**
 * A remote member of the room as this session knows it.
 * @typedef {object} Participant
 * @property {string} id            participant id (also the id of the MediaStream we receive)
 * @property {string} name
 * @property {string | null} metadata  application metadata set through the room API (free
 *           text, often JSON); null when none
 * @property {WireTrack[]} tracks   tracks the server announced for this participant
 * @property {MediaStream | null} stream  the stream carrying its received tracks, once one arrived
 * @property {{audio: boolean, video: boolean}} muted  whether a track of that kind is muted, by
 *           the server or by the member itself (see `Session.mutedBy` for which)
 */

/**
 * Another member's muted track (see `Session#remoteMuted`).
 * @typedef {{participantId: string, kind: 'audio' | 'video' | null, sourceTrackId: string | null,
 *            server: boolean, self: boolean}} RemoteMute
 */

/**
 * A chat message as the server stamped it. `self`: sent by us (`from` is our participant id
 * when it arrived).
 * @typedef {{id: number, from: string, name: string, ts: number, text: string, self: boolean}} ChatMessage
 * The server's rating of a member's link: loss 0..1 of what it sends us and we send it.
 * @typedef {{quality: 'excellent' | 'good' | 'poor' | 'lost', loss: number}} ConnectionQuality
 * A media device (`listDevices`).
 * @typedef {{deviceId: string, groupId: string, kind: string, label: string}} DeviceEntry
 */

/**
 * @typedef {'idle' | 'connecting' | 'connected' | 'reconnecting' | 'disconnected' | 'failed'} ConnectionState
 */

/**
 * Event details.
 * @typedef {{participantId: string, room: string, participants: Participant[], reconnected: boolean}} JoinedDetail
 * @typedef {{participant: Participant}} ParticipantJoinedDetail
 * @typedef {{participantId: string, participant: Participant | undefined}} ParticipantLeftDetail
 * @typedef {{participantId: string, trackId: string, kind?: string, source?: TrackSource}} TrackPublicationDetail
 *            `kind` and `source` on `track-published` only (`source` as the publisher said, else
 *            the default of the kind: `microphone` / `camera`)
 * @typedef {{participantId: string, trackId: string, track: MediaStreamTrack, stream: MediaStream,
 *            receiver: RTCRtpReceiver, source: TrackSource}} TrackDetail  `trackId` is the server's
 *            id of the track (as in `track-published`; the `msid` track id of its m-line), not
 *            `track.id`; `source` what it carries (as announced, else the default of its kind)
 * @typedef {{participantId: string, trackId: string, kind: 'audio' | 'video' | null, byServer: boolean,
 *            sourceTrackId: string | null, track: MediaStreamTrack | null, stream: MediaStream | null,
 *            receiver: RTCRtpReceiver | null}} TrackMuteDetail  `track-muted` / `track-unmuted`
 *            of another member's track. `byServer: true`: the server stopped (or resumed)
 *            forwarding it (room API; `sourceTrackId` is the publisher's own track id; `track`,
 *            `stream`, `receiver` are those of the received track, null while none is
 *            received). `byServer: false` with a `sourceTrackId`: the publisher turned it off
 *            (on) itself (`mute`; `track`… as for the server's). `byServer: false` with
 *            `sourceTrackId` null: the received `MediaStreamTrack` fired `mute` / `unmute` (no
 *            media arriving, or arriving again); `track`, `stream`, `receiver` are set. The
 *            server's and the publisher's mute are separate: after a `track-unmuted` of one the
 *            track may still be muted by the other (`Session.isMuted` / `mutedBy`)
 * @typedef {{kind: 'audio' | 'video' | null, trackId: string, sourceTrackId: string,
 *            track: MediaStreamTrack | null}} LocalMutedDetail  `local-muted-by-server`: the
 *            server no longer forwards our track `sourceTrackId` (the local
 *            `MediaStreamTrack.id`; `trackId` is the server's id of it); the session has set
 *            `track.enabled = false` (`track` null if no local track has that id)
 * @typedef {{kind: 'audio' | 'video' | null, trackId: string, sourceTrackId: string,
 *            track: MediaStreamTrack | null, cause: 'server' | 'session-ended'}} LocalUnmutedDetail
 *            `local-unmuted-by-server`: the user may unmute again. The local track stays
 *            disabled (`track.enabled` untouched). `cause: 'server'`: the server's
 *            `track-unmuted`; `'session-ended'`: the session the mute applied to is gone (a
 *            full rejoin: the server's mute does not carry over to the new participant)
 * @typedef {{participantId: string, local: boolean, name: string, metadata: string | null,
 *            changed: ('name' | 'metadata')[], participant: Participant | null}} ParticipantUpdatedDetail
 *            a member's (or, `local: true`, our own) name and/or metadata changed; `participant`
 *            is the updated member (null for ourselves); `changed` is never empty
 * @typedef {{from: string | null, topic: string | null, payload: unknown}} DataDetail  a data
 *            message: `from` null means the server (room API); `payload` any JSON value
 * @typedef {{track: MediaStreamTrack | null}} LocalScreenDetail  `local-screen`: the screen now
 *            shared (`shareScreen`), or null once sharing stopped
 * @typedef {{kind: 'audioinput' | 'videoinput', track: MediaStreamTrack,
 *            previous: MediaStreamTrack | null}} LocalTrackReplacedDetail  `local-track-replaced`:
 *            `switchDevice(kind)` put `track` in place of `previous` (stopped; null if there was none)
 * @typedef {{ready: boolean}} ChatStateDetail  `chat-state`: the chat data channel opened or closed
 * @typedef {{messages: ChatMessage[]}} ChatHistoryDetail  `chat-history`: the room's last messages
 *            as the server sent them when the channel opened, oldest first (also merged into
 *            `chatMessages()`; not emitted as `chat` too)
 * @typedef {{reason: string, clientId: string | null, retryAfterMs: number | null}} ChatRejectedDetail
 *            `chat-rejected`: the server refused a message of ours (its `sendChat` rejects too)
 * @typedef {{qualities: Record<string, ConnectionQuality>}} ConnectionQualityDetail
 *            `connection-quality`: every member's link (ours too), by participant id
 * @typedef {{reason: string}} RemovedDetail  the server removed us for good (admin removal or
 *            room closed); the session is over and will not rejoin
 * @typedef {{participantId: string, trackId: string, kind: 'audio' | 'video' | null}} MutedTrack
 * @typedef {{participantId: string, trackId: string, kind: 'audio' | 'video', reason: string}} TrackPausedDetail
 *            `kind`: as the server says, else as the track was announced (`video` if unknown)
 * @typedef {{participantId: string, trackId: string}} TrackResumedDetail
 * @typedef {{sourceTrackId: string, active: string[], sender: RTCRtpSender,
 *            encodings: {rid: string | null, active: boolean}[]}} PublishLayersDetail
 *            emitted once the sender's parameters are set; `encodings` as now applied
 * @typedef {{state: ConnectionState, previous: ConnectionState}} ConnectionStateDetail
 * @typedef {{state: RTCPeerConnectionState}} MediaStateDetail
 * @typedef {{code: string, message: string, fatal: boolean}} ErrorDetail
 * @typedef {{reason: string}} GoingAwayDetail
 * @typedef {{speakers: ActiveSpeaker[]}} ActiveSpeakersDetail  the new list, loudest first;
 *            emitted when it changes (also to `[]` when the socket drops)
 * @typedef {{attempt: number, delayMs: number, reason: string, resuming: boolean}} ReconnectingDetail
 *            a new socket is opened in `delayMs` (0: a `join` goes out on the open socket now);
 *            `resuming`: it will ask to resume the same session (same participant id, no
 *            leave/join for anyone) rather than join afresh; `attempt` counts from 1 (resume
 *            attempts and full rejoins are counted separately); `reason` is why, for people
 * @typedef {{participantId: string, room: string}} ResumedDetail  the session survived a lost
 *            socket; member changes meanwhile were emitted just before as the usual events
 * @typedef {{attempt: number, delayMs: number, reason: string}} MediaReconnectingDetail
 *            `pc.restartIce()` was just called (`attempt` counts from 1 since the media was
 *            last connected); if the PeerConnection is not `connected` within `delayMs`, the
 *            next restart follows; `reason` is a sentence for people ("media connection
 *            failed; …; UDP may be blocked by the network")
 * @typedef {{restarts: number}} MediaConnectedDetail  the PeerConnection reached `connected`;
 *            `restarts`: ICE restarts it took since it was last connected (0 on first connect)
 */

/**
 * A participant the server hears speaking (`active-speakers`).
 * @typedef {object} ActiveSpeaker
 * @property {string} participantId  a member of the room, or our own `participantId`
 * @property {number} level          smoothed voice activity, 0..1 (1 = loud)
 */

/**
 * @typedef {object} SessionOptions
 * @property {string} url        WebSocket URL of the signaling endpoint, e.g. `wss://host/ws`
 * @property {string} room       room name (1–64 chars of `[A-Za-z0-9_.-]`)
 * @property {string} name       display name (1–64 chars)
 * @property {string} [token]    optional auth token for deployments with auth
 * @property {boolean} [reconnect=true]        resume or re-join automatically when the socket drops
 * @property {number} [maxReconnectAttempts=Infinity]  consecutive full rejoins (without media
 *           connecting in between) before `failed`
 * @property {number} [backoffBaseMs=500]      delay before the first full rejoin; doubles per attempt
 * @property {number} [backoffMaxMs=30000]     cap of the full-rejoin delay
 * @property {number} [backoffJitter=0.5]      ± fraction of random jitter on each full-rejoin delay
 * @property {number[]} [backoffMs]  legacy: explicit full-rejoin delays (the last one repeats, each
 *           jittered by ±50 %); when given it replaces `backoffBaseMs`/`backoffMaxMs`
 * @property {number} [resumeRetryMs=250]      delay before the first resume attempt; doubles per attempt
 * @property {number} [resumeRetryMaxMs=4000]  cap of the resume delay (all within the grace period)
 * @property {number} [iceDisconnectedMs=1500] how long the PeerConnection may stay `disconnected`
 *           before an ICE restart (`failed` restarts at once)
 * @property {number} [iceRestartBaseMs=1000]  wait after the first ICE restart before the next; doubles
 * @property {number} [iceRestartMaxMs=30000]  cap of that wait
 * @property {number} [iceRestartJitter=0.3]   ± fraction of random jitter on it
 * @property {number} [socketProbeMs=1000]  when the media is in trouble, a `ping` that gets no
 *           server frame back within this means the socket is lost (resume); 0 turns it off
 * @property {number} [stallCheckMs=500]  how often `getStats()` is polled for received bytes
 *           while `connected` with media coming in; 0 turns the stall watchdog off
 * @property {number} [stallMs=1500]  received bytes flat this long while `connected` (with an
 *           inbound stream) count as a media stall: socket probe and ICE restart
 * @property {number} [connectTimeoutMs=10000]  a PeerConnection not `connected` this long after
 *           its first offer/answer exchange counts as `failed` (ICE restart); later restarts
 *           wait at least this long; 0 turns it off
 * @property {() => number} [random=Math.random]  source of jitter in [0, 1) (tests pass a fixed one)
 * @property {number} [pingIntervalMs=10000]
 * @property {number} [deadAfterMs=30000]     silence after which the socket is considered dead
 * @property {number} [joinTimeoutMs=10000]   no `joined` (or `resumed`) within this time: drop and retry
 * @property {boolean} [red=true]  publish the microphone as RED (RFC 2198: each packet also
 *   carries the previous one, so a lost packet is rebuilt from the next) where the browser can
 * @property {RTCIceTransportPolicy} [iceTransportPolicy='all']  `'relay'` uses only TURN
 *           relays (from the server's `ice_servers`): for networks that allow nothing else, and
 *           to test a TURN deployment
 * @property {boolean} [simulcast=true]  publish camera video as the layers of
 *           `SIMULCAST_LAYERS`; false publishes one encoding
 * @property {number} [trackViewDebounceMs=300] how long a changed `setTrackView()` waits, for
 *           further changes, before it is sent (the first view of a track is sent at once)
 */

/**
 * How a remote video is shown (see `Session.setTrackView`).
 * @typedef {object} TrackView
 * @property {boolean} visible  on screen: in the viewport, displayed, and the page not hidden
 * @property {number} width     rendered width in device pixels (CSS px × devicePixelRatio)
 * @property {number} height    rendered height in device pixels
 */

/**
 * Inbound statistics of one received track (from its `inbound-rtp` report). Counters are
 * cumulative over the receiver's life; the server may recycle a receiver for another track.
 * @typedef {object} InboundVideoStats
 * @property {string} trackId              the server's track id
 * @property {string} trackIdentifier      the receiving `MediaStreamTrack.id`
 * @property {boolean} pausedForBandwidth  the server said `track-paused` and not yet `track-resumed`
 * @property {number} packetsReceived
 * @property {number} packetsLost
 * @property {number} bytesReceived
 * @property {number} framesDecoded
 * @property {number} framesDropped
 * @property {number} frameWidth           0 before the first decoded frame
 * @property {number} frameHeight
 * @property {number} framesPerSecond
 * @property {number} freezeCount
 * @property {number} totalFreezesDuration seconds
 * @property {number} pauseCount
 * @property {number} totalPausesDuration  seconds
 * @property {number} keyFramesDecoded
 *
 * @typedef {object} InboundAudioStats
 * @property {string} trackId
 * @property {string} trackIdentifier
 * @property {boolean} pausedForBandwidth
 * @property {number} packetsReceived
 * @property {number} packetsLost
 * @property {number} bytesReceived
 * @property {number} concealedSamples
 * @property {number} totalSamplesReceived
 * @property {number} jitter               seconds
 *
 * @typedef {{video: InboundVideoStats[], audio: InboundAudioStats[]}} ParticipantInboundStats
 */

/**
 * The simulcast layers of camera video, lowest first: the `rid`, how much the capture is scaled
 * down, and the layer's bitrate cap in bit/s. The server names them in `publish-layers`.
 */
/**
 * Puts `audio/red` first in the microphone transceiver's codec preferences, so the offer asks
 * for audio redundancy (RFC 2198) and the browser sends it once the server accepts it; the plain
 * codecs follow as fallback. A browser without RED or `setCodecPreferences` sends plain Opus.
 * @param {RTCRtpTransceiver} transceiver
 */
function preferRed(transceiver) {
  const codecs = globalThis.RTCRtpSender?.getCapabilities?.('audio')?.codecs;
  if (!codecs || typeof transceiver.setCodecPreferences !== 'function') return;
  const red = codecs.filter((c) => c.mimeType.toLowerCase() === 'audio/red');
  if (!red.length) return;
  const rest = codecs.filter((c) => c.mimeType.toLowerCase() !== 'audio/red');
  try {
    transceiver.setCodecPreferences([...red, ...rest]);
  } catch {
    // Keep the browser's default order.
  }
}

export const SIMULCAST_LAYERS = Object.freeze([
  Object.freeze({ rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 50_000 }),
  Object.freeze({ rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 300_000 }),
  Object.freeze({ rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 900_000 }),
]);

/** Error codes after which the server closes the socket and retrying cannot help. */
const FATAL_CODES = new Set(['room_full', 'server_full', 'unauthorized', 'invalid_room', 'invalid_name']);

/** Error codes after which the server closes the socket and ends the session, but a fresh join
 * may succeed (so there is nothing to resume). */
const CLOSING_CODES = new Set(['negotiation_timeout', 'internal', 'removed']);

/**
 * Whether an `error {code: 'removed'}` with this message is about a problem a fresh join may
 * fix, so the session rejoins: the server removed us because our media connection failed
 * ("media connection failed", "media connection lost", "media never connected"), a session
 * with the same identity replaced ours ("replaced by …"), or, in a cluster, the room moved to
 * the node that owns it ("moved to another node"). Every other removal (an admin
 * removed us through the room API, with the default "removed from the room" or a reason of
 * their own; the room was closed, "the room was closed" / "the room is gone") ends the session
 * for good. The server's `removed` carries no machine-readable reason, so this goes by the
 * message; a removal the client does not recognise ends the session rather than fight an admin.
 * @param {string} message
 */
export function isRejoinableRemoval(message) {
  return /^\s*(media\b|replaced\b|moved\b)/i.test(message);
}

/** Errors in reply to `resume` that mean the server will not resume this session (an older
 * server does not know `resume` at all): join afresh. Compared with `-` read as `_`. */
const RESUME_REFUSED_CODES = new Set(['resume_failed', 'unknown_type', 'bad_message', 'not_joined']);

/** Grace period assumed when the server's `joined` names none. */
const DEFAULT_RESUME_GRACE_MS = 15_000;

/** At most this many of our ICE candidates are kept while the socket is down. */
const MAX_UNSENT_CANDIDATES = 64;

/**
 * The delay before retry number `attempt` (0 for the first): `baseMs` × 2^attempt, capped at
 * `maxMs`, then jittered by ±`jitter` (a fraction; 0.5 = ±50 %) and capped at `maxMs` again.
 * `random` returns a number in [0, 1); 0.5 gives the exact unjittered value. Never negative.
 * @param {number} attempt
 * @param {{baseMs: number, maxMs: number, jitter?: number}} opts
 * @param {() => number} [random=Math.random]
 * @returns {number} milliseconds, rounded
 */
export function backoffDelay(attempt, { baseMs, maxMs, jitter = 0 }, random = Math.random) {
  const n = Math.max(0, Math.floor(Number.isFinite(attempt) ? attempt : 0));
  const raw = Math.min(maxMs, baseMs * 2 ** Math.min(n, 52));
  const factor = 1 + jitter * (2 * random() - 1);
  return Math.max(0, Math.round(Math.min(maxMs, raw * factor)));
}

/**
 * What changed between the member list a session knows and the one the server sends with
 * `resumed`: members gone, members new, and per remaining member the track ids added and
 * removed (in the server's order). Pure; `next` entries are wire participants or `Participant`s.
 * @param {ReadonlyMap<string, {tracks: WireTrack[]}>} current
 * @param {readonly {id: string, tracks: WireTrack[]}[]} next
 * @returns {{left: string[], joined: string[], published: {participantId: string, track: WireTrack}[],
 *            unpublished: {participantId: string, trackId: string}[]}}
 */
export function diffParticipants(current, next) {
  const ids = new Set(next.map((p) => p.id));
  /** @type {ReturnType<typeof diffParticipants>} */
  const out = { left: [], joined: [], published: [], unpublished: [] };
  for (const id of current.keys()) if (!ids.has(id)) out.left.push(id);
  for (const p of next) {
    const known = current.get(p.id);
    if (!known) {
      out.joined.push(p.id);
      continue;
    }
    const before = new Set(known.tracks.map((t) => t.track_id));
    const after = new Set(p.tracks.map((t) => t.track_id));
    for (const t of known.tracks) {
      if (!after.has(t.track_id)) out.unpublished.push({ participantId: p.id, trackId: t.track_id });
    }
    for (const t of p.tracks) if (!before.has(t.track_id)) out.published.push({ participantId: p.id, track: t });
  }
  return out;
}

/**
 * The sentence `media-reconnecting` carries: what happened, what happens next, and (once it keeps
 * failing) the likely cause.
 * @param {string} cause            e.g. 'media connection failed'
 * @param {number} attempt          the restart just made, from 1
 * @param {number} delayMs          until the next one if this does not help
 * @param {boolean} everConnected   whether this PeerConnection was ever connected
 */
export function describeMediaFailure(cause, attempt, delayMs, everConnected) {
  const secs = Math.max(1, Math.round(delayMs / 1000));
  let text = `${cause}; reconnecting (attempt ${attempt}), retrying in ${secs} s if that does not help`;
  if (attempt >= 2) {
    text += everConnected
      ? ' — the network may be unstable, or UDP is blocked by the network'
      : ' — UDP may be blocked by the network (firewall or VPN), and no relay over TCP is reachable';
  }
  return text;
}

/** Thrown by `join()` when the server refuses the join for good, or when `leave()` was called. */
export class JoinError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    this.name = 'JoinError';
    this.code = code;
  }
}

/** The longest chat text, in code points (Unicode scalar values, as the server counts). */
export const MAX_CHAT_CHARS = 2000;
/** Chat messages a session keeps (the newest). */
export const MAX_CHAT_KEPT = 200;
/** How long `sendChat` waits for the server's stamped echo. */
export const CHAT_TIMEOUT_MS = 10_000;

const SOURCES = new Set(['camera', 'microphone', 'screen', 'screen-audio']);
const QUALITIES = new Set(['excellent', 'good', 'poor', 'lost']);

/** What a track of `kind` carries when nobody said. @param {'audio' | 'video'} kind @returns {TrackSource} */
function defaultSource(kind) {
  return kind === 'audio' ? 'microphone' : 'camera';
}

/** A wire `source`, or the default of `kind` when it is missing or unknown.
 * @param {unknown} value @param {'audio' | 'video'} kind @returns {TrackSource} */
function toSource(value, kind) {
  return typeof value === 'string' && SOURCES.has(value) ? /** @type {TrackSource} */ (value) : defaultSource(kind);
}

/** Whether a track of `kind` carrying `source` is what `query` asks about (a kind or a source).
 * @param {MuteQuery} query @param {string} kind @param {TrackSource} source */
function matchesQuery(query, kind, source) {
  return query === kind || query === source;
}

/** `navigator.mediaDevices`, or an error saying there is none (not a browser, or not a secure
 * context). @returns {MediaDevices} */
function mediaDevices() {
  const devices = globalThis.navigator?.mediaDevices;
  if (!devices) throw new Error('navigator.mediaDevices is not available (a secure context is needed)');
  return devices;
}

/**
 * The media devices, by kind (`enumerateDevices()`; labels are empty until the page may use
 * the camera or microphone). Each entry is `{deviceId, groupId, kind, label}`.
 * @returns {Promise<{audioinput: DeviceEntry[], videoinput: DeviceEntry[], audiooutput: DeviceEntry[]}>}
 */
export async function listDevices() {
  /** @type {{audioinput: DeviceEntry[], videoinput: DeviceEntry[], audiooutput: DeviceEntry[]}} */
  const out = { audioinput: [], videoinput: [], audiooutput: [] };
  for (const d of await mediaDevices().enumerateDevices()) {
    const list = out[/** @type {keyof typeof out} */ (d.kind)];
    if (list) list.push({ deviceId: d.deviceId, groupId: d.groupId, kind: d.kind, label: d.label });
  }
  return out;
}

/** Why `sendChat` failed: `reason` is a `chat-rejected` reason of the server (`rate_limited`,
 * `too_long`, `empty`, `not_allowed`, `malformed`, `spoofed`), or `not_connected` / `timeout`;
 * `retryAfterMs` the server's wait for `rate_limited`, else null. */
export class ChatError extends Error {
  /** @param {string} reason @param {number | null} [retryAfterMs=null] */
  constructor(reason, retryAfterMs = null) {
    super(`chat message not sent: ${reason}${retryAfterMs !== null ? ` (retry in ${retryAfterMs} ms)` : ''}`);
    this.name = 'ChatError';
    this.reason = reason;
    this.retryAfterMs = retryAfterMs;
  }
}

/** Why the server would refuse `text` (`empty`, `too_long`), or null if it would not.
 * @param {string} text */
export function chatTextProblem(text) {
  if (!text.trim()) return 'empty';
  let n = 0;
  for (const _ of text) if (++n > MAX_CHAT_CHARS) return 'too_long';
  return null;
}

/** A stamped chat message of the server, or null if it is not one.
 * @param {unknown} wire @param {string | null} selfId @returns {ChatMessage | null} */
function toChatMessage(wire, selfId) {
  if (!wire || typeof wire !== 'object') return null;
  const { id, from, name, ts, text } = /** @type {Record<string, unknown>} */ (wire);
  if (typeof id !== 'number' || !Number.isFinite(id) || typeof from !== 'string' || typeof text !== 'string') return null;
  return {
    id,
    from,
    name: typeof name === 'string' ? name : from,
    ts: typeof ts === 'number' && Number.isFinite(ts) ? ts : 0,
    text,
    self: selfId !== null && from === selfId,
  };
}

/**
 * Reads one frame of the server on the chat data channel: a stamped `chat` (with the
 * `client_id` echoed to its sender, else null), a `chat-history` (its valid messages), or a
 * `chat-rejected` (`retryAfterMs` a number for `rate_limited` only, else null). Null for
 * anything else: not text, bad JSON, an unknown type, a message without a numeric `id`, a
 * string `from` and `text`. Never throws.
 * @param {unknown} data
 * @param {string | null} selfId  our participant id (sets `ChatMessage.self`)
 * @returns {{type: 'chat', message: ChatMessage, clientId: string | null}
 *   | {type: 'chat-history', messages: ChatMessage[]}
 *   | {type: 'chat-rejected', reason: string, clientId: string | null, retryAfterMs: number | null} | null}
 */
export function parseChatFrame(data, selfId) {
  if (typeof data !== 'string') return null;
  /** @type {any} */
  let msg;
  try { msg = JSON.parse(data); } catch { return null; }
  if (!msg || typeof msg !== 'object') return null;
  const clientId = typeof msg.client_id === 'string' && msg.client_id ? msg.client_id : null;
  if (msg.type === 'chat') {
    const message = toChatMessage(msg, selfId);
    return message ? { type: 'chat', message, clientId } : null;
  }
  if (msg.type === 'chat-history') {
    if (!Array.isArray(msg.messages)) return null;
    const messages = /** @type {ChatMessage[]} */ (msg.messages.map((/** @type {unknown} */ m) => toChatMessage(m, selfId)).filter(Boolean));
    return { type: 'chat-history', messages };
  }
  if (msg.type === 'chat-rejected') {
    if (typeof msg.reason !== 'string' || !msg.reason) return null;
    const after = msg.retry_after_ms;
    const retryAfterMs = msg.reason === 'rate_limited' && typeof after === 'number' && Number.isFinite(after) && after >= 0
      ? after : null;
    return { type: 'chat-rejected', reason: msg.reason, clientId, retryAfterMs };
  }
  return null;
}

/**
 * Merges chat messages into a list: ordered by id, an id already there kept as it is (never
 * twice), the newest `max` kept. Pure. `added` are the messages of `incoming` that were new
 * (and are still kept), in id order.
 * @param {readonly ChatMessage[]} list  sorted by id
 * @param {readonly ChatMessage[]} incoming
 * @param {number} [max=MAX_CHAT_KEPT]
 * @returns {{list: ChatMessage[], added: ChatMessage[]}}
 */
export function mergeChat(list, incoming, max = MAX_CHAT_KEPT) {
  /** @type {Map<number, ChatMessage>} */
  const byId = new Map(list.map((m) => [m.id, m]));
  /** @type {Set<ChatMessage>} */
  const fresh = new Set();
  for (const m of incoming) {
    if (byId.has(m.id)) continue;
    byId.set(m.id, m);
    fresh.add(m);
  }
  const merged = [...byId.values()].sort((a, b) => a.id - b.id).slice(-max);
  return { list: merged, added: merged.filter((m) => fresh.has(m)) };
}

/**
 * Converts the `qualities` of a `connection-quality` message: participant id → `{quality,
 * loss}`. An entry counts if it has a non-empty string `participant_id` and a known `quality`
 * (`excellent`, `good`, `poor`, `lost`); `loss` is clamped to 0..1 (0 when missing). Null when
 * `list` is not an array (the message is malformed and should change nothing). Never throws.
 * @param {unknown} list
 * @returns {Record<string, ConnectionQuality> | null}
 */
export function parseConnectionQuality(list) {
  if (!Array.isArray(list)) return null;
  /** @type {Map<string, ConnectionQuality>} */
  const out = new Map();
  for (const entry of list) {
    if (!entry || typeof entry !== 'object') continue;
    const { participant_id: id, quality, loss } = /** @type {Record<string, unknown>} */ (entry);
    if (typeof id !== 'string' || !id || typeof quality !== 'string' || !QUALITIES.has(quality)) continue;
    const l = typeof loss === 'number' && Number.isFinite(loss) ? Math.min(1, Math.max(0, loss)) : 0;
    out.set(id, { quality: /** @type {ConnectionQuality['quality']} */ (quality), loss: l });
  }
  return Object.fromEntries(out);
}

export class Session extends EventTarget {
  /** @type {Required<Omit<SessionOptions, 'token' | 'backoffMs'>> & {token?: string, backoffMs?: number[]}} */
  #opts;
  /** @type {WebSocket | null} */
  #ws = null;
  /** @type {RTCPeerConnection | null} */
  #pc = null;
  /** @type {ConnectionState} */
  #state = 'idle';
  /** @type {string | null} */
  #participantId = null;
  /** @type {Map<string, Participant>} */
  #participants = new Map();
  /** @type {MediaStream | null} */
  #localStream = null;
  /** @type {RTCIceServer[]} */
  #iceServers = [];

  /** Signaling operations on the PeerConnection run one at a time, in arrival order. */
  #queue = Promise.resolve();
  /** Remote candidates that arrived before any remote description. */
  /** @type {(RTCIceCandidateInit | null)[]} */
  #pendingCandidates = [];

  /** Which participant each received track belongs to (the track object is reused by Chrome
   * when the server recycles a transceiver, so this is updated on every `track` event).
   * `trackId` is the server's id of the track (the `msid` track id of its m-line).
   * `announced` is false while the stream id names no participant we know of: its `track`
   * event waits for the participant's announcement, so a UI never shows an unknown member.
   * @type {Map<MediaStreamTrack, RemoteTrackInfo>} */
  #remoteTracks = new Map();

  /** The last view sent with `track-view`, per server track id. Forgotten with the socket (the
   * server forgets it too) and when the track ends.
   * @type {Map<string, TrackView>} */
  #sentViews = new Map();
  /** Changed views waiting out the debounce, per server track id.
   * @type {Map<string, ReturnType<typeof setTimeout>>} */
  #viewTimers = new Map();
  /** The server's last `active-speakers`, loudest first. Emptied with the socket.
   * @type {ActiveSpeaker[]} */
  #speakers = [];
  /** Received tracks the server paused for bandwidth: server track id → owner, kind, reason.
   * @type {Map<string, {participantId: string, kind: 'audio' | 'video', reason: string}>} */
  #paused = new Map();
  /** Per sender of ours: whether `setParameters` is running, and the latest `publish-layers`
   * still to apply (older ones waiting are dropped: the latest wins).
   * @type {WeakMap<RTCRtpSender, {busy: boolean, next: {sourceTrackId: string, active: string[]} | null}>} */
  #layerWork = new WeakMap();
  /** Other members' muted tracks: server track id → owner, kind, the publisher's own id of it,
   * and who muted it: `server` (`track-muted` with `by_server`, not yet `track-unmuted`) and/or
   * `self` (its publisher turned it off: `by_server: false`, or `self_muted` in a member list).
   * An entry with neither flag is removed. Gone with the track, its owner, or the session (a
   * full rejoin).
   * @type {Map<string, RemoteMute>} */
  #remoteMuted = new Map();
  /** Our own tracks the server muted: the local `MediaStreamTrack.id` (the message's
   * `source_track_id`) → the server's id of it, its kind, and the local track (null if none has
   * that id). Cleared (with `local-unmuted-by-server`) by `track-unmuted` or a full rejoin.
   * @type {Map<string, {trackId: string, kind: 'audio' | 'video' | null, track: MediaStreamTrack | null}>} */
  #localMuted = new Map();
  /** Our own metadata, as the server's last `participant-updated` for us said. @type {string | null} */
  #metadata = null;
  /** Why the server removed us for good (see `removed`), once it did. @type {string | null} */
  #removedReason = null;

  /** What each of our sending transceivers of the current PeerConnection carries: the id the
   * server knows its track by (the `MediaStreamTrack.id` of the track it was created with, the
   * `msid` of its m-line; kept across `replaceTrack`, so after `switchDevice` the new local
   * track still maps to it) and its `offer.sources` value.
   * @type {WeakMap<RTCRtpTransceiver, {id: string, source: TrackSource}>} */
  #senderInfo = new WeakMap();
  /** Source ids of our latest offer's `sources` on this server session: a `mute` for any other
   * would be refused (`unknown_track`), so it waits for the offer naming it. @type {Set<string>} */
  #announced = new Set();
  /** What this server session was last told with `mute`, per source id (absent: not muted).
   * @type {Map<string, boolean>} */
  #sentMutes = new Map();
  /** The screen being shared (`shareScreen`), and the transceiver sending it on the current
   * PeerConnection. @type {MediaStreamTrack | null} */
  #screenTrack = null;
  /** @type {RTCRtpTransceiver | null} */
  #screenTransceiver = null;
  /** The "confab" data channel of the current PeerConnection (chat). @type {RTCDataChannel | null} */
  #chatChannel = null;
  #chatReady = false;
  /** Chat messages received (history included): by id, oldest first, at most `MAX_CHAT_KEPT`.
   * Kept across rejoins (the same room). @type {ChatMessage[]} */
  #chat = [];
  /** `sendChat` calls waiting for their stamped echo, by `client_id`.
   * @type {Map<string, {resolve: (m: ChatMessage) => void, reject: (e: ChatError) => void, timer: ReturnType<typeof setTimeout>}>} */
  #chatPending = new Map();
  #chatSeq = 0;
  /** The server's last `connection-quality`, per participant id (our own too). Emptied by a
   * full rejoin. @type {Map<string, ConnectionQuality>} */
  #quality = new Map();

  #left = false;
  #everJoined = false;
  /** Full rejoins since media last connected after a join (drives the rejoin backoff). */
  #reconnectAttempt = 0;
  #reconnects = 0;
  /** What the current socket waits for: the reply to our `join` or `resume`, or nothing.
   * @type {'join' | 'resume' | null} */
  #awaiting = null;
  /** The token the next `resume` sends (from the last `joined`/`resumed`). @type {string | null} */
  #resumeToken = null;
  #resumeGraceMs = DEFAULT_RESUME_GRACE_MS;
  /** Between losing the socket and `resumed` (or giving up on resuming). */
  #resumePending = false;
  /** Sockets opened (or scheduled) for the pending resume. */
  #resumeAttempt = 0;
  /** Ends the pending resume when the grace period is over. @type {ReturnType<typeof setTimeout> | null} */
  #graceTimer = null;
  #resumes = 0;
  /** Our ICE candidates gathered while the socket was down, for the resumed socket.
   * @type {Record<string, unknown>[]} */
  #unsentCandidates = [];
  /** ICE restarts since the media was last connected. */
  #iceAttempt = 0;
  #iceRestarts = 0;
  /** The next ICE restart if the media is still down then. @type {ReturnType<typeof setTimeout> | null} */
  #iceTimer = null;
  /** `disconnected` for `iceDisconnectedMs` means restart. @type {ReturnType<typeof setTimeout> | null} */
  #disconnectedTimer = null;
  /** A restart that waits for signaling (the socket was down): its cause. @type {string | null} */
  #iceRestartDeferred = null;
  /** The current PeerConnection is `connected`, and has been at some point. */
  #mediaUp = false;
  #mediaEverUp = false;
  /** No `restartIce()` in this browser: the next offer asks for an ICE restart itself. */
  #iceRestartOffer = false;
  /** Restarts of this episode wait at least this long (set by the connect timeout). */
  #iceFloorMs = 0;
  /** No `connected` within `connectTimeoutMs` of the first offer/answer exchange.
   * @type {ReturnType<typeof setTimeout> | null} */
  #connectTimer = null;
  /** The connect timer was armed for the current PeerConnection. */
  #connectArmed = false;
  /** A `ping` sent because the media is in trouble; fires if no server frame answers it.
   * @type {ReturnType<typeof setTimeout> | null} */
  #probeTimer = null;
  /** Polls received bytes while `connected` (see `#pollStall`). @type {ReturnType<typeof setInterval> | null} */
  #stallTimer = null;
  /** The last received-bytes sample: which pair/transport, the count, since when it is flat.
   * @type {{key: string, bytes: number, since: number} | null} */
  #stallSample = null;
  /** The `getStats()` in flight for the watchdog, if any. @type {{at: number} | null} */
  #stallPoll = null;
  /** The watchdog saw no bytes for `stallMs` while `connected`; cleared once bytes arrive (or
   * the PeerConnection itself reports trouble). */
  #stalled = false;
  /** @type {ReturnType<typeof setTimeout> | null} */
  #reconnectTimer = null;
  /** @type {ReturnType<typeof setInterval> | null} */
  #pingTimer = null;
  /** @type {ReturnType<typeof setTimeout> | null} */
  #joinTimer = null;
  #lastRx = 0;
  /** Increments on every socket; callbacks from an older socket are ignored. */
  #generation = 0;

  /** @type {{resolve: (d: JoinedDetail) => void, reject: (e: Error) => void} | null} */
  #joinWaiter = null;

  /** @param {SessionOptions} options */
  constructor(options) {
    super();
    if (!options || !options.url || !options.room || !options.name) {
      throw new TypeError('Session needs {url, room, name}');
    }
    this.#opts = {
      reconnect: true,
      maxReconnectAttempts: Infinity,
      backoffBaseMs: 500,
      backoffMaxMs: 30_000,
      backoffJitter: 0.5,
      resumeRetryMs: 250,
      resumeRetryMaxMs: 4_000,
      iceDisconnectedMs: 1_500,
      iceRestartBaseMs: 1_000,
      iceRestartMaxMs: 30_000,
      iceRestartJitter: 0.3,
      socketProbeMs: 1_000,
      stallCheckMs: 500,
      stallMs: 1_500,
      connectTimeoutMs: 10_000,
      random: Math.random,
      pingIntervalMs: 10_000,
      deadAfterMs: 30_000,
      joinTimeoutMs: 10_000,
      simulcast: true,
      red: true,
      trackViewDebounceMs: 300,
      ...options,
    };
  }

  // ---------------------------------------------------------------- public state

  /** The current RTCPeerConnection (null before `joined` and while re-joining; kept while
   * resuming). */
  get pc() { return this.#pc; }
  /** @returns {ConnectionState} */
  get state() { return this.#state; }
  /** Our participant id for the current join (kept by a resume, new after a full rejoin). */
  get participantId() { return this.#participantId; }
  /** The other members of the room, keyed by participant id. Read-only view. */
  get participants() { return /** @type {ReadonlyMap<string, Participant>} */ (this.#participants); }
  /** The stream passed to `publish()`, if any. */
  get localStream() { return this.#localStream; }
  /** Successful full re-joins (new participant id) after a dropped connection. */
  get reconnects() { return this.#reconnects; }
  /** Successful resumes (same participant id) after a dropped socket. */
  get resumes() { return this.#resumes; }
  /** `restartIce()` calls made on this session's PeerConnections. */
  get iceRestarts() { return this.#iceRestarts; }
  get room() { return this.#opts.room; }
  /** Our display name: the one given, or the one the server last set (`participant-updated`
   * for our own id, e.g. a rename through the room API; a later rejoin uses it too). */
  get name() { return this.#opts.name; }
  /** Our own metadata as the server last set it (`participant-updated`), null when none. */
  get metadata() { return this.#metadata; }
  /** The server's reason when it removed us for good (`removed`); null otherwise. */
  get removedReason() { return this.#removedReason; }

  /** Which kinds of our own tracks the server has muted (`local-muted-by-server`, not yet
   * followed by `local-unmuted-by-server`). While true, the track may be enabled again locally
   * but the server forwards nothing of it. @returns {{audio: boolean, video: boolean}} */
  get mutedByServer() {
    const kinds = [...this.#localMuted.values()].map((m) => m.kind);
    return { audio: kinds.includes('audio'), video: kinds.includes('video') };
  }

  /** Other members' tracks the server has muted (`track-muted` with `byServer`, not yet
   * `track-unmuted`); self mutes are not listed (see `mutedBy`). @returns {MutedTrack[]} */
  mutedTracks() {
    return [...this.#remoteMuted].filter(([, m]) => m.server).map(([trackId, m]) => ({
      participantId: m.participantId, trackId, kind: m.kind ?? this.#kindOf(m.participantId, trackId),
    }));
  }

  /**
   * Whether a track of `kind` of this participant is muted, by the server or by its publisher
   * (`mutedBy` tells which). Our own `participantId` asks about our own tracks.
   * @param {string} participantId
   * @param {MuteQuery} kind
   */
  isMuted(participantId, kind) {
    const by = this.mutedBy(participantId, kind);
    return by.server || by.self;
  }

  /**
   * Who muted a track of `kind` of this participant: `server` (room API) and/or `self` (its
   * publisher turned it off). `kind` is `'audio'` / `'video'` (any track of that kind, screen
   * included) or a source (`'camera'`, `'microphone'`, `'screen'`, `'screen-audio'`). For our
   * own `participantId`: `server` as `mutedByServer`, `self` when a local track of it is
   * disabled (a server mute disables it too, and we then tell the others it is off).
   * @param {string} participantId
   * @param {MuteQuery} kind
   * @returns {{server: boolean, self: boolean}}
   */
  mutedBy(participantId, kind) {
    if (participantId === this.#participantId) {
      const server = [...this.#localMuted.values()].some((m) => m.track
        ? matchesQuery(kind, m.track.kind, this.#localSourceOf(m.track)) : m.kind === kind);
      const tracks = this.#localSendTracks().filter((t) => matchesQuery(kind, t.kind, this.#localSourceOf(t)));
      return { server, self: tracks.some((t) => !t.enabled) };
    }
    const out = { server: false, self: false };
    for (const [trackId, m] of this.#remoteMuted) {
      if (m.participantId !== participantId) continue;
      const trackKind = m.kind ?? this.#kindOf(participantId, trackId);
      if (!trackKind || !matchesQuery(kind, trackKind, this.#remoteSource(participantId, trackId, trackKind))) continue;
      out.server ||= m.server;
      out.self ||= m.self;
    }
    return out;
  }

  /** The link quality of a participant (our own id too) as the server last rated it
   * (`connection-quality`); null before it named it. @param {string} participantId
   * @returns {ConnectionQuality | null} */
  connectionQuality(participantId) {
    const q = this.#quality.get(participantId);
    return q ? { ...q } : null;
  }

  /** Chat messages received so far (the room's history included), oldest first, deduplicated
   * by id, at most `MAX_CHAT_KEPT` (the newest). @returns {ChatMessage[]} */
  chatMessages() {
    return this.#chat.map((m) => ({ ...m }));
  }

  /** Whether the chat data channel is open (`sendChat` can send). */
  get chatReady() { return this.#chatReady; }

  /** The screen being shared (`shareScreen`), null when none. */
  get screenTrack() { return this.#screenTrack; }

  /**
   * The participant a received track belongs to.
   * @param {MediaStreamTrack | string} track a track or a track id (as in `inbound-rtp.trackIdentifier`)
   * @returns {string | undefined}
   */
  participantForTrack(track) {
    return this.#remoteInfo(track)?.participantId;
  }

  /** Every track currently received, with its owner and the server's id for it. */
  remoteTracks() {
    return [...this.#remoteTracks].map(([track, info]) => this.#trackDetail(track, info));
  }

  /** Received tracks the server has paused for bandwidth (`track-paused` not yet followed by
   * `track-resumed`). @returns {TrackPausedDetail[]} */
  pausedTracks() {
    return [...this.#paused].map(([trackId, { participantId, kind, reason }]) => ({ participantId, trackId, kind, reason }));
  }

  /** Who is speaking, loudest first, as the server last said (`active-speakers`); our own
   * `participantId` is listed while we speak. Empty until the server names anyone, and after
   * the socket drops. @returns {ActiveSpeaker[]} */
  activeSpeakers() {
    return this.#speakers.map((s) => ({ ...s }));
  }

  /**
   * Inbound statistics of every track received from an announced member, keyed by the
   * publisher's participant id (one `getStats()` of the PeerConnection).
   * @returns {Promise<Record<string, ParticipantInboundStats>>}
   */
  async inboundStats() {
    /** @type {Record<string, ParticipantInboundStats>} */
    const out = {};
    const pc = this.#pc;
    if (!pc) return out;
    const report = await pc.getStats();
    report.forEach((r) => {
      if (r.type !== 'inbound-rtp') return;
      const info = this.#remoteInfo(r.trackIdentifier);
      if (!info || !info.announced) return;
      const per = out[info.participantId] ??= { video: [], audio: [] };
      const common = {
        trackId: info.trackId,
        trackIdentifier: String(r.trackIdentifier),
        pausedForBandwidth: this.#paused.has(info.trackId),
        packetsReceived: r.packetsReceived ?? 0,
        packetsLost: r.packetsLost ?? 0,
        bytesReceived: r.bytesReceived ?? 0,
      };
      if (r.kind === 'video') {
        per.video.push({
          ...common,
          framesDecoded: r.framesDecoded ?? 0,
          framesDropped: r.framesDropped ?? 0,
          frameWidth: r.frameWidth ?? 0,
          frameHeight: r.frameHeight ?? 0,
          framesPerSecond: r.framesPerSecond ?? 0,
          freezeCount: r.freezeCount ?? 0,
          totalFreezesDuration: r.totalFreezesDuration ?? 0,
          pauseCount: r.pauseCount ?? 0,
          totalPausesDuration: r.totalPausesDuration ?? 0,
          keyFramesDecoded: r.keyFramesDecoded ?? 0,
        });
      } else {
        per.audio.push({
          ...common,
          concealedSamples: r.concealedSamples ?? 0,
          totalSamplesReceived: r.totalSamplesReceived ?? 0,
          jitter: r.jitter ?? 0,
        });
      }
    });
    return out;
  }

  /**
   * What we know of a received track.
   * @param {MediaStreamTrack | string} track a track or a track id (`MediaStreamTrack.id`)
   * @returns {RemoteTrackInfo | undefined}
   */
  #remoteInfo(track) {
    for (const [t, info] of this.#remoteTracks) {
      if (t === track || t.id === track) return info;
    }
    return undefined;
  }

  /** @param {MediaStreamTrack} track @param {RemoteTrackInfo} info @returns {TrackDetail} */
  #trackDetail(track, { participantId, trackId, stream, receiver }) {
    const source = this.#remoteSource(participantId, trackId, track.kind === 'audio' ? 'audio' : 'video');
    return { participantId, trackId, track, stream, receiver, source };
  }

  /** What another member's track carries: as announced (`track-published`, member lists),
   * else the default of its kind. @param {string} participantId @param {string} trackId
   * @param {'audio' | 'video'} kind @returns {TrackSource} */
  #remoteSource(participantId, trackId, kind) {
    const announced = this.#participants.get(participantId)?.tracks.find((t) => t.track_id === trackId);
    return announced?.source ?? defaultSource(kind);
  }

  /** Every local track we send or mean to send: the published stream's and the screen. */
  #localSendTracks() {
    const tracks = [...(this.#localStream?.getTracks() ?? [])];
    if (this.#screenTrack) tracks.push(this.#screenTrack);
    return tracks;
  }

  /** What a local track carries. @param {MediaStreamTrack} track @returns {TrackSource} */
  #localSourceOf(track) {
    if (track === this.#screenTrack) return 'screen';
    return defaultSource(track.kind === 'audio' ? 'audio' : 'video');
  }

  // ---------------------------------------------------------------- public API

  /**
   * Connects and joins the room. Resolves with the first `joined`; if the server is unreachable
   * it keeps retrying (state `reconnecting`) and resolves once a join succeeds. Rejects with a
   * `JoinError` if the server refuses the join for good or `leave()` is called first.
   * @returns {Promise<JoinedDetail>}
   */
  join() {
    if (this.#left) return Promise.reject(new JoinError('left', 'session already left'));
    if (this.#joinWaiter || this.#everJoined) {
      return Promise.reject(new JoinError('already_joined', 'join() may be called once'));
    }
    const p = new Promise((resolve, reject) => { this.#joinWaiter = { resolve, reject }; });
    this.#setState('connecting');
    this.#connect();
    return /** @type {Promise<JoinedDetail>} */ (p);
  }

  /**
   * Publishes the tracks of `stream` (camera and/or microphone). May be called before `join()`
   * (the tracks are sent once the PeerConnection exists) or later: a track whose kind is already
   * being sent replaces it without renegotiation, a new kind adds a sendonly transceiver.
   * The same stream is re-published after every reconnect.
   * @param {MediaStream} stream
   */
  async publish(stream) {
    this.#localStream = stream;
    if (this.#pc) this.#attachLocalTracks(this.#pc);
  }

  /**
   * Receives without publishing anything (e.g. no camera or microphone). The server makes no
   * offer until the client has made one, so this offers one recvonly audio and one recvonly
   * video m-line; the server may use them for the first tracks it forwards. Kept across
   * reconnects; a later `publish()` adds its own sendonly m-lines as usual.
   */
  receiveOnly() {
    this.#receiveOnly = true;
    if (this.#pc) this.#ensureReceiving(this.#pc);
  }

  /**
   * Stops sending `track`: the sender keeps its m-line but goes inactive (renegotiates).
   * @param {MediaStreamTrack} track
   */
  async unpublish(track) {
    this.#localStream?.removeTrack(track);
    const pc = this.#pc;
    if (!pc) return;
    for (const t of pc.getTransceivers()) {
      if (t.sender.track === track && !isStopped(t)) {
        await t.sender.replaceTrack(null);
        t.direction = 'inactive';
      }
    }
  }

  /** Mutes or unmutes the microphone (track.enabled; no renegotiation) and tells the server
   * (`mute`, see `#syncMutes`), which tells the others. Unmuting is allowed while the server
   * has muted it (`mutedByServer.audio`), but nobody hears it until the server forwards it
   * again (`local-unmuted-by-server`). @param {boolean} on */
  setMicEnabled(on) {
    for (const t of this.#localStream?.getAudioTracks() ?? []) t.enabled = on;
    this.#syncMutes(false);
  }

  /**
   * Tells the server how a received video track is shown, so it can forward a simulcast layer
   * that fits (`track-view`). Call it whenever the view may have changed: the first view of a
   * track is sent at once, a changed one once it has held for `trackViewDebounceMs`, and a view
   * equal to the last one sent is not sent again. Returns false (and sends nothing) when
   * `trackId` names no video track this session receives.
   * @param {string} trackId the server's track id (`TrackDetail.trackId`)
   * @param {TrackView} view
   * @returns {boolean}
   */
  setTrackView(trackId, view) {
    if (!this.#receivesVideo(trackId)) return false;
    /** @type {TrackView} */
    const next = { visible: !!view.visible, width: devicePx(view.width), height: devicePx(view.height) };
    const waiting = this.#viewTimers.get(trackId);
    if (waiting) clearTimeout(waiting);
    this.#viewTimers.delete(trackId);
    const sent = this.#sentViews.get(trackId);
    if (!sent) {
      this.#sendView(trackId, next);
    } else if (sent.visible !== next.visible || sent.width !== next.width || sent.height !== next.height) {
      this.#viewTimers.set(trackId, setTimeout(() => {
        this.#viewTimers.delete(trackId);
        if (this.#receivesVideo(trackId)) this.#sendView(trackId, next);
      }, this.#opts.trackViewDebounceMs));
    }
    return true;
  }

  /** Sends a view and remembers it (also while the socket is down: a resumed socket re-sends
   * every view remembered, a full rejoin forgets them). @param {string} trackId @param {TrackView} view */
  #sendView(trackId, view) {
    if (this.#signalingReady()) this.#send({ type: 'track-view', track_id: trackId, ...view });
    this.#sentViews.set(trackId, view);
  }

  /** @param {string} trackId */
  #receivesVideo(trackId) {
    for (const [t, info] of this.#remoteTracks) {
      if (info.trackId === trackId && info.announced && t.kind === 'video') return true;
    }
    return false;
  }

  /** Drops the view state of one track, or of all. @param {string} [trackId] */
  #forgetViews(trackId) {
    for (const [id, timer] of this.#viewTimers) {
      if (trackId === undefined || id === trackId) {
        clearTimeout(timer);
        this.#viewTimers.delete(id);
      }
    }
    if (trackId === undefined) this.#sentViews.clear();
    else this.#sentViews.delete(trackId);
  }

  /** Turns the camera on or off (track.enabled; sends black frames; no renegotiation) and tells
   * the server (`mute`). As with the microphone, turning it on while `mutedByServer.video`
   * shows nothing to the others.
   * @param {boolean} on */
  setCameraEnabled(on) {
    for (const t of this.#localStream?.getVideoTracks() ?? []) t.enabled = on;
    this.#syncMutes(false);
  }

  /**
   * Tells the server which of our tracks are off (`mute`), so it can tell the others: for every
   * track we send whose source id our latest offer named (the server refuses others; they are
   * told after the offer that names them), `muted: !track.enabled` when that differs from what
   * this server session was last told, and with `resend` also `muted: true` again for every
   * track that is off (after a resume: a `mute` may have been lost with the old socket).
   * Nothing is sent while signaling is down.
   * @param {boolean} resend
   */
  #syncMutes(resend) {
    const pc = this.#pc;
    if (!pc || !this.#signalingReady()) return;
    for (const t of this.#ownTransceivers) {
      const track = t.sender.track;
      if (isStopped(t) || !track) continue;
      const id = this.#sourceIdOf(pc, t);
      if (!this.#announced.has(id)) continue;
      const muted = !track.enabled;
      if (muted === (this.#sentMutes.get(id) ?? false) && !(resend && muted)) continue;
      this.#send({ type: 'mute', track_id: id, muted });
      this.#sentMutes.set(id, muted);
    }
  }

  /**
   * Shares the screen: `getDisplayMedia({video, audio: false})`, sent on a transceiver of its
   * own (one encoding: no simulcast; `contentHint = 'detail'`), named `screen` in the `sources`
   * of every offer from then on. The browser's own "stop sharing" (the track's `ended`) calls
   * `stopScreenShare()`. Kept across reconnects (a full rejoin sends it on the new
   * PeerConnection). Resolves with the track (the current one if already sharing); rejects as
   * `getDisplayMedia` does (e.g. the user cancelled). Emits `local-screen`.
   * @param {{video?: boolean | MediaTrackConstraints}} [opts]
   * @returns {Promise<MediaStreamTrack>}
   */
  async shareScreen(opts = {}) {
    if (this.#screenTrack) return this.#screenTrack;
    const media = await mediaDevices().getDisplayMedia({ video: opts.video ?? true, audio: false });
    const track = media.getVideoTracks()[0];
    for (const t of media.getTracks()) if (t !== track) t.stop();
    if (!track) throw new Error('getDisplayMedia gave no video track');
    if (this.#left || this.#screenTrack) {
      track.stop();
      if (this.#screenTrack) return this.#screenTrack;
      throw new Error('session already left');
    }
    try { track.contentHint = 'detail'; } catch { /* read-only in some browsers */ }
    this.#screenTrack = track;
    track.addEventListener('ended', () => {
      if (this.#screenTrack === track) this.stopScreenShare();
    });
    if (this.#pc) this.#attachScreen(this.#pc);
    this.#emit('local-screen', /** @type {LocalScreenDetail} */ ({ track }));
    return track;
  }

  /** Stops sharing the screen: stops the track, removes its sender (`pc.removeTrack`; the
   * offer that follows no longer names it) and emits `local-screen` with `track: null`. Does
   * nothing when not sharing. @returns {Promise<void>} */
  async stopScreenShare() {
    const track = this.#screenTrack;
    if (!track) return;
    this.#screenTrack = null;
    const transceiver = this.#screenTransceiver;
    this.#screenTransceiver = null;
    track.stop();
    const pc = this.#pc;
    if (pc && transceiver) {
      this.#ownTransceivers.delete(transceiver);
      if (!isStopped(transceiver)) {
        try {
          pc.removeTrack(transceiver.sender);
        } catch (e) {
          this.#emitError('client', `removeTrack: ${e}`, false);
        }
      }
    }
    this.#emit('local-screen', /** @type {LocalScreenDetail} */ ({ track: null }));
  }

  /** Sends the shared screen on `pc`. @param {RTCPeerConnection} pc */
  #attachScreen(pc) {
    const track = this.#screenTrack;
    if (!track || track.readyState === 'ended') return;
    const stream = this.#localStream;
    const transceiver = pc.addTransceiver(track, { direction: 'sendonly', streams: stream ? [stream] : [] });
    this.#addOwnTransceiver(transceiver, track, 'screen');
    this.#screenTransceiver = transceiver;
  }

  /** Counts `transceiver` as one of ours, sending `track` as `source`.
   * @param {RTCRtpTransceiver} transceiver @param {MediaStreamTrack} track @param {TrackSource} source */
  #addOwnTransceiver(transceiver, track, source) {
    this.#ownTransceivers.add(transceiver);
    this.#senderInfo.set(transceiver, { id: track.id, source });
  }

  /**
   * Switches the microphone (`audioinput`) or camera (`videoinput`) to another device without
   * renegotiating: `getUserMedia` for that device only (the old track's other constraints
   * kept), the new track takes the old one's `enabled` (mute) state and place in the local
   * stream, the sender `replaceTrack`s to it, the old track is stopped. The server still knows
   * the track by its original id, and so does the session (`mute`, server mutes,
   * `publish-layers`). Emits `local-track-replaced`. With no track of that kind in the local
   * stream, the new one is added and published. Rejects (the old track kept) if the device
   * cannot be opened or the sender refuses it.
   * @param {'audioinput' | 'videoinput'} kind
   * @param {string} deviceId
   * @returns {Promise<MediaStreamTrack>}
   */
  async switchDevice(kind, deviceId) {
    if (kind !== 'audioinput' && kind !== 'videoinput') throw new TypeError(`switchDevice: bad kind ${kind}`);
    const stream = this.#localStream;
    if (!stream) throw new Error('switchDevice: nothing published');
    const audio = kind === 'audioinput';
    const previous = (audio ? stream.getAudioTracks() : stream.getVideoTracks())[0] ?? null;
    const { deviceId: _old, groupId: _group, ...kept } = previous?.getConstraints?.() ?? {};
    const constraints = { ...kept, deviceId: { exact: deviceId } };
    const media = await mediaDevices().getUserMedia(audio ? { audio: constraints } : { video: constraints });
    const track = (audio ? media.getAudioTracks() : media.getVideoTracks())[0];
    for (const t of media.getTracks()) if (t !== track) t.stop();
    if (!track) throw new Error(`getUserMedia gave no ${audio ? 'audio' : 'video'} track`);
    if (this.#localStream !== stream || (previous && !stream.getTracks().includes(previous))) {
      track.stop(); // published or switched again meanwhile
      throw new Error('switchDevice: the local stream changed meanwhile');
    }
    if (!previous) {
      stream.addTrack(track);
      if (this.#pc) this.#attachLocalTracks(this.#pc);
    } else {
      track.enabled = previous.enabled;
      // The stream first: a PeerConnection made meanwhile (a full rejoin) sends the new track.
      stream.removeTrack(previous);
      stream.addTrack(track);
      const pc = this.#pc;
      const transceiver = pc ? [...this.#ownTransceivers].find((t) => t.sender.track === previous && !isStopped(t)) : undefined;
      try {
        await transceiver?.sender.replaceTrack(track);
      } catch (e) {
        stream.removeTrack(track);
        stream.addTrack(previous);
        track.stop();
        throw e;
      }
      for (const m of this.#localMuted.values()) if (m.track === previous) m.track = track;
      previous.stop();
    }
    this.#emit('local-track-replaced', /** @type {LocalTrackReplacedDetail} */ ({ kind, track, previous }));
    return track;
  }

  /**
   * Sends a chat message on the data channel. Resolves with the message as the server stamped
   * it (matched by a generated `client_id`); rejects with a `ChatError`: `empty` (nothing but
   * whitespace) or `too_long` (over `MAX_CHAT_CHARS` code points, as the server counts) before
   * sending, `not_connected` when the channel is not open (or closes before the reply),
   * `timeout` after `CHAT_TIMEOUT_MS` without a reply, or the server's `chat-rejected` reason
   * (`retryAfterMs` set for `rate_limited`). The text is sent as given (not trimmed). The
   * stamped message is also emitted as `chat`, like everyone's.
   * @param {string} text
   * @returns {Promise<ChatMessage>}
   */
  sendChat(text) {
    const body = String(text ?? '');
    const invalid = chatTextProblem(body);
    if (invalid) return Promise.reject(new ChatError(invalid));
    const dc = this.#chatChannel;
    if (!dc || !this.#chatReady || dc.readyState !== 'open') return Promise.reject(new ChatError('not_connected'));
    const clientId = `c${(++this.#chatSeq).toString(36)}${Math.random().toString(36).slice(2, 10)}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.#chatPending.delete(clientId)) reject(new ChatError('timeout'));
      }, CHAT_TIMEOUT_MS);
      this.#chatPending.set(clientId, { resolve, reject, timer });
      try {
        dc.send(JSON.stringify({ type: 'chat', text: body, client_id: clientId }));
      } catch {
        this.#settleChat(clientId, new ChatError('not_connected'));
      }
    });
  }

  get micEnabled() {
    return (this.#localStream?.getAudioTracks() ?? []).some((t) => t.enabled);
  }

  get cameraEnabled() {
    return (this.#localStream?.getVideoTracks() ?? []).some((t) => t.enabled);
  }

  /**
   * Leaves the room for good: tells the server, closes the socket and the PeerConnection.
   * Local tracks are not stopped (the caller owns them).
   */
  leave() {
    if (this.#left) return;
    this.#left = true;
    if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    if (this.#signalingReady()) {
      // Queued frames are flushed before the close frame, so the server sees `leave` first.
      this.#send({ type: 'leave' });
    }
    this.#teardown('left');
    this.#rejectJoin(new JoinError('left', 'leave() called before joined'));
    this.#setState('disconnected');
  }

  // ---------------------------------------------------------------- connection lifecycle

  #connect() {
    const generation = ++this.#generation;
    /** @type {WebSocket} */
    let ws;
    try {
      ws = new WebSocket(this.#opts.url);
    } catch (e) {
      // A malformed URL can never work.
      this.#fail('bad_url', String(e));
      return;
    }
    this.#ws = ws;
    this.#awaiting = null;
    const current = () => generation === this.#generation && !this.#left;

    ws.onopen = () => {
      if (!current()) return;
      this.#lastRx = Date.now();
      if (this.#resumePending && this.#resumeToken && this.#participantId) {
        // The first message asks for the same session back; the access token is not needed.
        this.#awaiting = 'resume';
        this.#send({
          type: 'resume',
          room: this.#opts.room,
          participant_id: this.#participantId,
          token: this.#resumeToken,
        });
      } else {
        this.#sendJoin();
      }
      this.#startPing();
      this.#armReplyTimer();
    };
    ws.onmessage = (ev) => {
      if (!current()) return;
      this.#lastRx = Date.now();
      if (this.#probeTimer) this.#onProbeAnswered();
      if (typeof ev.data !== 'string') return;
      /** @type {any} */
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return;
      try {
        this.#dispatch(msg);
      } catch (e) {
        this.#emitError('client', `handling ${msg.type}: ${e}`, false);
      }
    };
    ws.onclose = (ev) => {
      if (!current()) return;
      this.#onSocketLost(`connection to the server closed (${ev.code}${ev.reason ? ` ${ev.reason}` : ''})`);
    };
    // `error` is always followed by `close`; nothing to do here.
    ws.onerror = () => {};
  }

  /** Sends `join` on the open socket and waits for `joined`. */
  #sendJoin() {
    /** @type {Record<string, unknown>} */
    const join = { type: 'join', room: this.#opts.room, name: this.#opts.name };
    if (this.#opts.token) join.token = this.#opts.token;
    this.#awaiting = 'join';
    this.#send(join);
  }

  /** No `joined`/`resumed` within `joinTimeoutMs`: the socket is as good as lost. */
  #armReplyTimer() {
    if (this.#joinTimer) clearTimeout(this.#joinTimer);
    const generation = this.#generation;
    this.#joinTimer = setTimeout(() => {
      this.#joinTimer = null;
      if (generation !== this.#generation || this.#left || !this.#awaiting) return;
      this.#onSocketLost(`no reply to ${this.#awaiting} within ${Math.round(this.#opts.joinTimeoutMs / 1000)} s`);
    }, this.#opts.joinTimeoutMs);
  }

  #startPing() {
    this.#stopPing();
    this.#pingTimer = setInterval(() => {
      if (Date.now() - this.#lastRx > this.#opts.deadAfterMs) {
        this.#onSocketLost(`no frame from the server for ${Math.round(this.#opts.deadAfterMs / 1000)} s`);
        return;
      }
      this.#send({ type: 'ping' });
    }, this.#opts.pingIntervalMs);
  }

  #stopPing() {
    if (this.#pingTimer) clearInterval(this.#pingTimer);
    this.#pingTimer = null;
  }

  /** Joined (or resumed) on the current socket: offers, answers, candidates and views may go. */
  #signalingReady() {
    const ws = this.#ws;
    return !!ws && ws.readyState === WebSocket.OPEN && this.#awaiting === null && this.#participantId !== null;
  }

  /**
   * The socket is gone (closed, dead, no reply, or the server ended the session): resume the
   * session on a new socket if we may, else join afresh with backoff.
   * @param {string} why
   * @param {number} [minDelayMs=0]  wait at least this long before the next socket
   */
  #onSocketLost(why, minDelayMs = 0) {
    if (this.#left) return;
    if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    const canResume = this.#opts.reconnect && this.#resumeToken !== null && this.#participantId !== null
      && this.#pc !== null && this.#awaiting !== 'join';
    if (canResume) {
      this.#scheduleResume(why, minDelayMs);
      return;
    }
    this.#teardown(why);
    if (!this.#opts.reconnect) {
      this.#left = true;
      this.#rejectJoin(new JoinError('disconnected', why));
      this.#setState('disconnected');
      return;
    }
    this.#scheduleRejoin(why, minDelayMs);
  }

  /**
   * Drops the socket but keeps the session (PeerConnection, tracks, members) and opens a new
   * socket to resume it; gives up once the grace period since the socket was lost is over.
   * @param {string} why @param {number} minDelayMs
   */
  #scheduleResume(why, minDelayMs) {
    this.#dropSocket(why);
    // Nobody tells us who speaks meanwhile; a stale list would light tiles up for nothing.
    this.#setSpeakers([]);
    if (!this.#resumePending) {
      this.#resumePending = true;
      this.#resumeAttempt = 0;
      const grace = this.#resumeGraceMs;
      this.#graceTimer = setTimeout(() => {
        this.#graceTimer = null;
        if (!this.#resumePending || this.#left) return;
        if (this.#awaiting === 'resume') {
          // A `resume` is in flight: its reply decides (`resumed`, or `resume-failed` and a join
          // on this socket); if none comes, the reply timer ends the socket and, with the token
          // gone, the session joins afresh. Dropping it now could leave a resumed ghost behind.
          this.#resumeToken = null;
          return;
        }
        const reason = `could not resume the session within ${Math.round(grace / 1000)} s (${why})`;
        this.#giveUpResume();
        this.#onSocketLost(reason);
      }, grace);
    }
    const delayMs = Math.max(minDelayMs, backoffDelay(this.#resumeAttempt,
      { baseMs: this.#opts.resumeRetryMs, maxMs: this.#opts.resumeRetryMaxMs, jitter: 0.2 }, this.#opts.random));
    this.#resumeAttempt += 1;
    this.#setState('reconnecting');
    this.#emit('reconnecting', /** @type {ReconnectingDetail} */ ({
      attempt: this.#resumeAttempt, delayMs, reason: why, resuming: true,
    }));
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = null;
      if (!this.#left) this.#connect();
    }, delayMs);
  }

  /** The pending resume (if any) will not happen: forget the token. */
  #giveUpResume() {
    this.#resumePending = false;
    this.#resumeAttempt = 0;
    this.#resumeToken = null;
    if (this.#graceTimer) clearTimeout(this.#graceTimer);
    this.#graceTimer = null;
  }

  /**
   * Everything of the session is gone (see `#teardown`): join afresh on a new socket after the
   * rejoin backoff, or fail once `maxReconnectAttempts` rejoins brought no media.
   * @param {string} why @param {number} minDelayMs
   */
  #scheduleRejoin(why, minDelayMs) {
    if (this.#reconnectAttempt >= this.#opts.maxReconnectAttempts) {
      this.#fail('reconnect_failed', `giving up after ${this.#reconnectAttempt} attempts: ${why}`);
      return;
    }
    const delayMs = Math.max(minDelayMs, this.#rejoinDelay(this.#reconnectAttempt));
    this.#reconnectAttempt += 1;
    this.#setState('reconnecting');
    this.#emit('reconnecting', /** @type {ReconnectingDetail} */ ({
      attempt: this.#reconnectAttempt, delayMs, reason: why, resuming: false,
    }));
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = null;
      if (!this.#left) this.#connect();
    }, delayMs);
  }

  /** The delay before full rejoin number `attempt` (from 0). @param {number} attempt */
  #rejoinDelay(attempt) {
    const steps = this.#opts.backoffMs;
    if (Array.isArray(steps) && steps.length) {
      const base = steps[Math.min(attempt, steps.length - 1)];
      return Math.round(base * (0.5 + this.#opts.random())); // legacy: ±50 % jitter
    }
    return backoffDelay(attempt, {
      baseMs: this.#opts.backoffBaseMs, maxMs: this.#opts.backoffMaxMs, jitter: this.#opts.backoffJitter,
    }, this.#opts.random);
  }

  /**
   * The server will not resume this session (`resume-failed`): drop it and join afresh, on the
   * same socket when this is the first rejoin since media last flowed, else after backoff.
   * @param {string} why
   */
  #resumeRefused(why) {
    this.#giveUpResume();
    const ws = this.#ws;
    if (this.#reconnectAttempt === 0 && ws && ws.readyState === WebSocket.OPEN && this.#opts.reconnect) {
      this.#dropSession();
      this.#reconnectAttempt += 1;
      this.#setState('reconnecting');
      this.#emit('reconnecting', /** @type {ReconnectingDetail} */ ({
        attempt: this.#reconnectAttempt, delayMs: 0, reason: why, resuming: false,
      }));
      this.#sendJoin();
      this.#armReplyTimer();
      return;
    }
    this.#awaiting = null;
    this.#onSocketLost(why);
  }

  /** Drops the socket, the PeerConnection and everything learned from the server. Emits
   * `participant-left` for every known member so a UI can rebuild from events alone.
   * @param {string} why */
  #teardown(why) {
    this.#dropSocket(why);
    this.#dropSession();
  }

  /** Closes the socket (if any) and silences its callbacks. @param {string} why */
  #dropSocket(why) {
    this.#generation += 1; // silence callbacks of the old socket
    this.#awaiting = null;
    this.#stopPing();
    if (this.#joinTimer) clearTimeout(this.#joinTimer);
    this.#joinTimer = null;
    if (this.#probeTimer) clearTimeout(this.#probeTimer);
    this.#probeTimer = null;
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try { ws.close(1000, why.slice(0, 100)); } catch { /* already closed */ }
    }
  }

  /** Drops the session on the server side of things: PeerConnection, members (with events),
   * our participant id, views, and any resume. */
  #dropSession() {
    this.#giveUpResume();
    this.#closePc();
    // Before the members go (one event, not one per member); the next join has a new
    // participant id, and the server tells that session who speaks.
    this.#setSpeakers([]);
    for (const id of [...this.#participants.keys()]) this.#removeParticipant(id);
    this.#participantId = null;
    // The next server knows none of our views; received tracks are gone anyway.
    this.#forgetViews();
    this.#paused.clear();
    // The server's mutes applied to this participant id; the next join is a new one.
    this.#forgetMutes();
    this.#quality.clear();
  }

  #closePc() {
    const pc = this.#pc;
    this.#pc = null;
    this.#queue = Promise.resolve();
    this.#pendingCandidates = [];
    this.#unsentCandidates = [];
    this.#clearIceTimers();
    this.#iceAttempt = 0;
    this.#iceFloorMs = 0;
    this.#iceRestartDeferred = null;
    this.#iceRestartOffer = false;
    this.#mediaUp = false;
    this.#mediaEverUp = false;
    this.#stopStallWatch();
    this.#screenTransceiver = null;
    this.#closeChat();
    if (!pc) return;
    pc.onnegotiationneeded = pc.onicecandidate = pc.ontrack = null;
    pc.onconnectionstatechange = pc.oniceconnectionstatechange = null;
    pc.close();
  }

  /** @param {string} code @param {string} message */
  #fail(code, message) {
    this.#left = true;
    if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    this.#teardown(code);
    this.#emitError(code, message, true);
    this.#rejectJoin(new JoinError(code, message));
    this.#setState('failed');
  }

  /**
   * The server removed us for good (an admin, or the room closed): end the session as `leave()`
   * does (nothing is sent: the server already dropped us), without a rejoin or resume. Emits
   * `error` (`fatal: true`), then `removed`, then `connection-state` `disconnected`.
   * @param {string} message the server's reason
   */
  #endRemoved(message) {
    const reason = message.trim() || 'removed from the room';
    this.#left = true;
    this.#removedReason = reason;
    if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    this.#teardown('removed');
    this.#emitError('removed', reason, true);
    this.#emit('removed', /** @type {RemovedDetail} */ ({ reason }));
    this.#rejectJoin(new JoinError('removed', reason));
    this.#setState('disconnected');
  }

  /** @param {Error} err */
  #rejectJoin(err) {
    const w = this.#joinWaiter;
    this.#joinWaiter = null;
    w?.reject(err);
  }

  // ---------------------------------------------------------------- server messages

  /** @param {any} msg */
  #dispatch(msg) {
    switch (msg.type) {
      case 'joined': return this.#onJoined(msg);
      case 'resumed': return this.#onResumed(msg);
      case 'offer': return this.#enqueue(() => this.#onServerOffer(String(msg.sdp)));
      case 'answer': return this.#enqueue(() => this.#onServerAnswer(String(msg.sdp)));
      case 'candidate': return this.#onServerCandidate(msg.candidate);
      case 'participant-joined':
        this.#onParticipantJoined(msg.participant);
        this.#applyAnnouncedMutes(msg.participant, false);
        return;
      case 'participant-left': return this.#removeParticipant(String(msg.participant_id));
      case 'track-published': return this.#onTrackPublished(msg);
      case 'track-unpublished': return this.#onTrackUnpublished(msg);
      case 'track-paused': return this.#onTrackPaused(msg);
      case 'track-resumed': return this.#onTrackResumed(msg);
      case 'publish-layers': return this.#onPublishLayers(msg);
      case 'active-speakers': return this.#onActiveSpeakers(msg);
      case 'track-muted': return this.#onTrackMuteChange(msg, true);
      case 'track-unmuted': return this.#onTrackMuteChange(msg, false);
      case 'participant-updated': return this.#onParticipantUpdated(msg.participant);
      case 'data': return this.#onData(msg);
      case 'connection-quality': return this.#onConnectionQuality(msg);
      case 'error': return this.#onServerError(String(msg.code), String(msg.message ?? ''), msg);
      case 'going-away':
        this.#emit('going-away', /** @type {GoingAwayDetail} */ ({ reason: String(msg.reason ?? '') }));
        return;
      case 'pong': return;
      default: return; // newer server, unknown message: ignore
    }
  }

  /** Stores the resume token and grace period of a `joined` or `resumed`. @param {any} msg */
  #takeResumeToken(msg) {
    this.#resumeToken = typeof msg.resume_token === 'string' && msg.resume_token ? msg.resume_token : null;
    const grace = Number(msg.resume_grace_ms);
    this.#resumeGraceMs = Number.isFinite(grace) && grace > 0 ? grace : DEFAULT_RESUME_GRACE_MS;
  }

  /** @param {any} msg */
  #onJoined(msg) {
    if (this.#awaiting !== 'join') return; // not in reply to a join of ours
    if (this.#joinTimer) clearTimeout(this.#joinTimer);
    this.#joinTimer = null;
    this.#awaiting = null;
    const reconnected = this.#everJoined;
    this.#participantId = String(msg.participant_id);
    this.#takeResumeToken(msg);
    this.#iceServers = toIceServers(msg.ice_servers);
    for (const p of Array.isArray(msg.participants) ? msg.participants : []) {
      this.#participants.set(String(p.id), toParticipant(p));
    }
    this.#createPc();
    if (reconnected) this.#reconnects += 1;
    this.#everJoined = true;
    // Not `#reconnectAttempt = 0`: a join whose media never connects must not reset the rejoin
    // backoff (that made a client whose media always failed rejoin every 0.5 s forever).
    this.#setState('connected');
    /** @type {JoinedDetail} */
    const detail = {
      participantId: this.#participantId,
      room: String(msg.room ?? this.#opts.room),
      participants: [...this.#participants.values()],
      reconnected,
    };
    this.#emit('joined', detail);
    for (const p of detail.participants) {
      this.#emit('participant-joined', /** @type {ParticipantJoinedDetail} */ ({ participant: p }));
    }
    for (const p of Array.isArray(msg.participants) ? msg.participants : []) this.#applyAnnouncedMutes(p);
    const w = this.#joinWaiter;
    this.#joinWaiter = null;
    w?.resolve(detail);
  }

  /**
   * The server resumed our session on this socket: same participant id, same PeerConnection.
   * Brings the member list up to date with events for the differences only, then re-sends what
   * the server may have missed while the socket was down.
   * @param {any} msg
   */
  #onResumed(msg) {
    if (this.#awaiting !== 'resume') return;
    if (this.#joinTimer) clearTimeout(this.#joinTimer);
    this.#joinTimer = null;
    this.#awaiting = null;
    this.#resumePending = false;
    this.#resumeAttempt = 0;
    if (this.#graceTimer) clearTimeout(this.#graceTimer);
    this.#graceTimer = null;
    this.#takeResumeToken(msg);
    if (typeof msg.participant_id === 'string' && msg.participant_id) this.#participantId = msg.participant_id;
    const pc = this.#pc;
    if (pc && Array.isArray(msg.ice_servers)) {
      this.#iceServers = toIceServers(msg.ice_servers);
      try {
        pc.setConfiguration({ ...pc.getConfiguration(), iceServers: this.#iceServers });
      } catch (e) {
        this.#emitError('client', `setConfiguration: ${e}`, false);
      }
    }
    if (Array.isArray(msg.participants)) this.#reconcileParticipants(msg.participants);
    this.#resumes += 1;
    this.#setState('connected');
    /** @type {ResumedDetail} */
    const detail = { participantId: /** @type {string} */ (this.#participantId), room: String(msg.room ?? this.#opts.room) };
    this.#emit('resumed', detail);

    // What the server may have missed while the socket was down.
    for (const c of this.#unsentCandidates.splice(0)) this.#send(c);
    for (const [trackId, view] of this.#sentViews) {
      if (this.#receivesVideo(trackId)) this.#send({ type: 'track-view', track_id: trackId, ...view });
    }
    this.#enqueue(async () => {
      const now = this.#pc;
      if (!now || !this.#signalingReady()) return;
      const desc = now.localDescription;
      if (now.signalingState === 'have-local-offer' && desc) {
        // Our offer may never have arrived; an answer to it may have been lost. Offer it again.
        this.#sendOffer(now, desc.sdp);
      } else {
        await this.#offerIfNeeded();
      }
    });
    // A `mute` may have been lost with the old socket: say again what is off.
    this.#syncMutes(true);
    const deferred = this.#iceRestartDeferred;
    this.#iceRestartDeferred = null;
    if (!pc) return;
    // A fresh socket that just answered: no need to probe it before the restart.
    if (deferred && this.#mediaDown(pc)) this.#restartIce(deferred, true);
    else this.#onMediaStateChange(pc);
  }

  /** `resumed` named these members: emit `participant-left`, `participant-joined`,
   * `track-unpublished` and `track-published` for the differences. @param {any[]} list */
  #reconcileParticipants(list) {
    const next = list.filter((p) => p && p.id != null).map(toParticipant);
    const diff = diffParticipants(this.#participants, next);
    for (const id of diff.left) this.#removeParticipant(id);
    for (const { participantId, trackId } of diff.unpublished) {
      this.#onTrackUnpublished({ participant_id: participantId, track_id: trackId });
    }
    for (const { participantId, track } of diff.published) {
      this.#onTrackPublished({ participant_id: participantId, track_id: track.track_id, kind: track.kind, source: track.source });
    }
    for (const p of next) {
      const known = this.#participants.get(p.id);
      if (known) {
        known.tracks = p.tracks;
        this.#updateParticipant(known, p.name, p.metadata);
      }
    }
    for (const id of diff.joined) {
      const p = next.find((q) => q.id === id);
      if (p) this.#onParticipantJoined(p);
    }
    for (const p of list) if (p && p.id != null) this.#applyAnnouncedMutes(p);
  }

  /** A member as `joined` / `resumed` / `participant-joined` lists it says which of its tracks
   * are muted: by the server (`muted: true`) and/or by itself (`self_muted: true`); a mute from
   * before we joined, or while our socket was away. The same state and events as the
   * `track-muted` / `track-unmuted` messages (`byServer` true and false). `lift`: a mute it
   * does not list is lifted (the lists of `joined` / `resumed` are the state now; a
   * `participant-joined` may have been overtaken by a `track-muted`, so it only adds).
   * @param {any} wire @param {boolean} [lift=true] */
  #applyAnnouncedMutes(wire, lift = true) {
    if (!wire || wire.id == null || !Array.isArray(wire.tracks)) return;
    const participantId = String(wire.id);
    for (const t of wire.tracks) {
      if (!t || t.track_id == null) continue;
      const trackId = String(t.track_id);
      for (const [byServer, muted] of [[true, t.muted === true], [false, t.self_muted === true]]) {
        const entry = this.#remoteMuted.get(trackId);
        if (muted === !!entry?.[byServer ? 'server' : 'self'] || (!muted && !lift)) continue;
        this.#onTrackMuteChange({ participant_id: participantId, track_id: trackId, by_server: byServer }, muted);
      }
    }
  }

  /** @param {any} wire */
  #onParticipantJoined(wire) {
    if (!wire || typeof wire.id !== 'string') return;
    const existing = this.#participants.get(wire.id);
    const p = toParticipant(wire);
    if (existing) {
      existing.tracks = p.tracks;
      this.#updateParticipant(existing, p.name, p.metadata);
      return;
    }
    this.#participants.set(p.id, p);
    this.#refreshMuted(p.id); // a `track-muted` that overtook the announcement
    this.#emit('participant-joined', /** @type {ParticipantJoinedDetail} */ ({ participant: p }));
    // Media that overtook the announcement.
    for (const [track, info] of this.#remoteTracks) {
      if (info.participantId !== p.id || info.announced) continue;
      info.announced = true;
      p.stream = info.stream;
      this.#emit('track', this.#trackDetail(track, info));
    }
  }

  /** @param {string} id */
  #removeParticipant(id) {
    const participant = this.#participants.get(id);
    this.#participants.delete(id);
    for (const [track, info] of [...this.#remoteTracks]) {
      if (info.participantId === id) this.#endRemoteTrack(track);
    }
    for (const [trackId, p] of [...this.#paused]) {
      if (p.participantId === id) this.#paused.delete(trackId);
    }
    for (const [trackId, m] of [...this.#remoteMuted]) {
      if (m.participantId === id) this.#remoteMuted.delete(trackId);
    }
    this.#quality.delete(id);
    this.#emit('participant-left', /** @type {ParticipantLeftDetail} */ ({ participantId: id, participant }));
    // Normally the server's next `active-speakers` says so too; do not wait for it.
    this.#setSpeakers(this.#speakers.filter((s) => s.participantId !== id));
  }

  /** The dominant speakers changed. A message without a `speakers` array changes nothing.
   * @param {any} msg */
  #onActiveSpeakers(msg) {
    const speakers = parseActiveSpeakers(msg.speakers);
    if (speakers) this.#setSpeakers(speakers);
  }

  /** Makes `speakers` the current list; emits `active-speakers` if that changes it.
   * @param {ActiveSpeaker[]} speakers */
  #setSpeakers(speakers) {
    if (sameSpeakers(this.#speakers, speakers)) return;
    this.#speakers = speakers;
    this.#emit('active-speakers', /** @type {ActiveSpeakersDetail} */ ({ speakers: this.activeSpeakers() }));
  }

  /** @param {any} msg */
  #onTrackPublished(msg) {
    const id = String(msg.participant_id);
    const p = this.#participants.get(id);
    const trackId = String(msg.track_id);
    const kind = msg.kind === 'audio' ? 'audio' : 'video';
    const source = toSource(msg.source, kind);
    const known = p?.tracks.find((t) => t.track_id === trackId);
    if (known) known.source = source;
    else p?.tracks.push({ track_id: trackId, kind, source });
    this.#emit('track-published', /** @type {TrackPublicationDetail} */ ({ participantId: id, trackId, kind, source }));
  }

  /** @param {any} msg */
  #onTrackUnpublished(msg) {
    const id = String(msg.participant_id);
    const trackId = String(msg.track_id);
    const p = this.#participants.get(id);
    if (p) p.tracks = p.tracks.filter((t) => t.track_id !== trackId);
    this.#paused.delete(trackId);
    if (this.#remoteMuted.delete(trackId)) this.#refreshMuted(id);
    this.#emit('track-unpublished', /** @type {TrackPublicationDetail} */ ({ participantId: id, trackId }));
  }

  /** The server stopped forwarding a track to us because our downlink is short. @param {any} msg */
  #onTrackPaused(msg) {
    const participantId = String(msg.participant_id);
    const trackId = String(msg.track_id);
    const reason = typeof msg.reason === 'string' && msg.reason ? msg.reason : 'bandwidth';
    const announced = this.#participants.get(participantId)?.tracks.find((t) => t.track_id === trackId)?.kind;
    const kind = msg.kind === 'audio' || msg.kind === 'video' ? msg.kind : announced === 'audio' ? 'audio' : 'video';
    this.#paused.set(trackId, { participantId, kind, reason });
    this.#emit('track-paused', /** @type {TrackPausedDetail} */ ({ participantId, trackId, kind, reason }));
  }

  /** @param {any} msg */
  #onTrackResumed(msg) {
    const participantId = String(msg.participant_id);
    const trackId = String(msg.track_id);
    this.#paused.delete(trackId);
    this.#emit('track-resumed', /** @type {TrackResumedDetail} */ ({ participantId, trackId }));
  }

  // ---------------------------------------------------------------- room API: mute, update, data

  /**
   * `track-muted` / `track-unmuted`: the server stopped (or resumed) forwarding a published
   * track (room API, `by_server`), or (`by_server: false`) its publisher turned it off (on).
   * One of ours (only ever `by_server`): see `#onOwnMuteChange`. Another member's: keep the
   * state (server and self flags apart) and emit `track-muted` / `track-unmuted` with
   * `byServer` as sent. A repeat changes nothing and emits nothing; so does a `track-unmuted`
   * for a track not known to be muted that way.
   * @param {any} msg @param {boolean} muted
   */
  #onTrackMuteChange(msg, muted) {
    const participantId = typeof msg.participant_id === 'string' ? msg.participant_id : '';
    const trackId = msg.track_id != null ? String(msg.track_id) : '';
    const sourceTrackId = typeof msg.source_track_id === 'string' && msg.source_track_id ? msg.source_track_id : null;
    const byServer = msg.by_server !== false;
    if (!participantId || !trackId) return;
    if (participantId === this.#participantId) {
      // `by_server: false` would only echo what we did ourselves.
      if (byServer) this.#onOwnMuteChange(trackId, sourceTrackId ?? trackId, muted);
      return;
    }
    // The server's and the publisher's mute are separate: lifting one leaves the other.
    const flag = byServer ? 'server' : 'self';
    let entry = this.#remoteMuted.get(trackId);
    if (muted) {
      if (entry?.[flag]) return;
      if (!entry) {
        entry = { participantId, kind: this.#kindOf(participantId, trackId), sourceTrackId, server: false, self: false };
        this.#remoteMuted.set(trackId, entry);
      }
      entry[flag] = true;
      entry.sourceTrackId ??= sourceTrackId;
    } else {
      if (!entry?.[flag]) return;
      entry[flag] = false;
      if (!entry.server && !entry.self) this.#remoteMuted.delete(trackId);
    }
    this.#refreshMuted(participantId);
    const received = [...this.#remoteTracks].find(([, info]) => info.trackId === trackId && info.announced);
    /** @type {TrackMuteDetail} */
    const detail = {
      participantId,
      trackId,
      kind: this.#kindOf(participantId, trackId),
      byServer,
      sourceTrackId,
      track: received ? received[0] : null,
      stream: received ? received[1].stream : null,
      receiver: received ? received[1].receiver : null,
    };
    this.#emit(muted ? 'track-muted' : 'track-unmuted', detail);
  }

  /**
   * The server muted (or unmuted) one of our own tracks. Muted: the local track is disabled
   * (`enabled = false`, again on a repeat) and `local-muted-by-server` emitted. Unmuted: only the
   * state is lifted (`local-unmuted-by-server`); the track stays as it is, the user turns it
   * back on (privacy: the server never turns a microphone or camera on).
   * @param {string} trackId the server's id
   * @param {string} sourceTrackId the local `MediaStreamTrack.id`
   * @param {boolean} muted
   */
  #onOwnMuteChange(trackId, sourceTrackId, muted) {
    const track = this.#localTrackFor(sourceTrackId);
    const known = this.#localMuted.get(sourceTrackId);
    /** @type {'audio' | 'video' | null} */
    const kind = track ? (track.kind === 'audio' ? 'audio' : 'video') : known?.kind ?? null;
    if (muted) {
      if (track) track.enabled = false;
      // It is off now: the others are told so, and it stays so after the server unmutes it.
      this.#syncMutes(false);
      if (known) return;
      this.#localMuted.set(sourceTrackId, { trackId, kind, track });
      this.#emit('local-muted-by-server', /** @type {LocalMutedDetail} */ ({ kind, trackId, sourceTrackId, track }));
      return;
    }
    if (!known) return;
    this.#localMuted.delete(sourceTrackId);
    this.#emit('local-unmuted-by-server', /** @type {LocalUnmutedDetail} */ ({
      kind, trackId, sourceTrackId, track: track ?? known.track, cause: 'server',
    }));
  }

  /** The local track whose id the server knows as `sourceTrackId`: a track of the published
   * stream with that id, else the track our sender of that m-line sends now (after
   * `replaceTrack` the m-line keeps the first track's id). @param {string} sourceTrackId */
  #localTrackFor(sourceTrackId) {
    for (const t of this.#localStream?.getTracks() ?? []) if (t.id === sourceTrackId) return t;
    const pc = this.#pc;
    return (pc && this.#ownTransceiverFor(pc, sourceTrackId)?.sender.track) || null;
  }

  /** The kind of another member's track: as announced, else as received, else unknown.
   * @param {string} participantId @param {string} trackId @returns {'audio' | 'video' | null} */
  #kindOf(participantId, trackId) {
    const announced = this.#participants.get(participantId)?.tracks.find((t) => t.track_id === trackId);
    if (announced) return announced.kind;
    for (const [t, info] of this.#remoteTracks) {
      if (info.trackId === trackId) return t.kind === 'audio' ? 'audio' : 'video';
    }
    return this.#remoteMuted.get(trackId)?.kind ?? null;
  }

  /** Brings `Participant.muted` of one member up to date. @param {string} participantId */
  #refreshMuted(participantId) {
    const p = this.#participants.get(participantId);
    if (p) p.muted = { audio: this.isMuted(participantId, 'audio'), video: this.isMuted(participantId, 'video') };
  }

  /** Forgets every server mute: another member's silently (the members go too), ours with
   * `local-unmuted-by-server` (`cause: 'session-ended'`) unless the session is over. */
  #forgetMutes() {
    this.#remoteMuted.clear();
    const own = [...this.#localMuted];
    this.#localMuted.clear();
    if (this.#left) return;
    for (const [sourceTrackId, m] of own) {
      this.#emit('local-unmuted-by-server', /** @type {LocalUnmutedDetail} */ ({
        kind: m.kind, trackId: m.trackId, sourceTrackId, track: m.track, cause: 'session-ended',
      }));
    }
  }

  /** `participant-updated`: a member's (or our own) name and/or metadata changed. A member we
   * do not know is ignored (its `participant-joined` carries both). @param {any} wire */
  #onParticipantUpdated(wire) {
    if (!wire || typeof wire !== 'object' || wire.id == null) return;
    const id = String(wire.id);
    const name = typeof wire.name === 'string' && wire.name ? wire.name : null;
    // The server sends the participant as it is now: no `metadata` means none.
    const metadata = typeof wire.metadata === 'string' && wire.metadata ? wire.metadata : null;
    if (id === this.#participantId) {
      /** @type {('name' | 'metadata')[]} */
      const changed = [];
      if (name !== null && name !== this.#opts.name) {
        this.#opts.name = name;
        changed.push('name');
      }
      if (metadata !== this.#metadata) {
        this.#metadata = metadata;
        changed.push('metadata');
      }
      if (!changed.length) return;
      this.#emit('participant-updated', /** @type {ParticipantUpdatedDetail} */ ({
        participantId: id, local: true, name: this.#opts.name, metadata, changed, participant: null,
      }));
      return;
    }
    const p = this.#participants.get(id);
    if (p) this.#updateParticipant(p, name ?? p.name, metadata);
  }

  /** Sets a member's name and metadata; emits `participant-updated` if that changes either.
   * @param {Participant} p @param {string} name @param {string | null} metadata */
  #updateParticipant(p, name, metadata) {
    /** @type {('name' | 'metadata')[]} */
    const changed = [];
    if (name !== p.name) {
      p.name = name;
      changed.push('name');
    }
    if (metadata !== p.metadata) {
      p.metadata = metadata;
      changed.push('metadata');
    }
    if (!changed.length) return;
    this.#emit('participant-updated', /** @type {ParticipantUpdatedDetail} */ ({
      participantId: p.id, local: false, name: p.name, metadata: p.metadata, changed, participant: p,
    }));
  }

  /** `data`: a data message (from the server when `from` is null). @param {any} msg */
  #onData(msg) {
    this.#emit('data', /** @type {DataDetail} */ ({
      from: typeof msg.from === 'string' && msg.from ? msg.from : null,
      topic: typeof msg.topic === 'string' ? msg.topic : null,
      payload: msg.payload === undefined ? null : msg.payload,
    }));
  }

  /** `connection-quality`: the server's rating of every member's link (ours too). A message
   * without a `qualities` array changes nothing. @param {any} msg */
  #onConnectionQuality(msg) {
    const qualities = parseConnectionQuality(msg.qualities);
    if (!qualities) return;
    this.#quality = new Map(Object.entries(qualities));
    this.#emit('connection-quality', /** @type {ConnectionQualityDetail} */ ({ qualities }));
  }

  // ---------------------------------------------------------------- chat (data channel)

  /** Opens the "confab" data channel on a new PeerConnection (before its first offer).
   * @param {RTCPeerConnection} pc */
  #openChat(pc) {
    if (typeof pc.createDataChannel !== 'function') return;
    /** @type {RTCDataChannel} */
    let dc;
    try {
      dc = pc.createDataChannel('confab', { ordered: true });
    } catch (e) {
      this.#emitError('client', `createDataChannel: ${e}`, false);
      return;
    }
    this.#chatChannel = dc;
    dc.onopen = () => { if (this.#chatChannel === dc) this.#setChatReady(true); };
    dc.onclose = () => { if (this.#chatChannel === dc) this.#chatClosed(); };
    dc.onmessage = (ev) => { if (this.#chatChannel === dc) this.#onChatFrame(ev.data); };
  }

  /** Closes the chat channel with its PeerConnection. */
  #closeChat() {
    const dc = this.#chatChannel;
    this.#chatChannel = null;
    if (dc) {
      dc.onopen = dc.onclose = dc.onmessage = null;
      try { dc.close(); } catch { /* already closed */ }
    }
    this.#chatClosed();
  }

  /** The channel is gone: every send still waiting fails with `not_connected`. */
  #chatClosed() {
    for (const clientId of [...this.#chatPending.keys()]) this.#settleChat(clientId, new ChatError('not_connected'));
    this.#setChatReady(false);
  }

  /** @param {boolean} ready */
  #setChatReady(ready) {
    if (ready === this.#chatReady) return;
    this.#chatReady = ready;
    this.#emit('chat-state', /** @type {ChatStateDetail} */ ({ ready }));
  }

  /** Ends the pending send `clientId` (if any) with its stamped message or an error.
   * @param {string} clientId @param {ChatMessage | ChatError} outcome */
  #settleChat(clientId, outcome) {
    const pending = this.#chatPending.get(clientId);
    if (!pending) return;
    this.#chatPending.delete(clientId);
    clearTimeout(pending.timer);
    if (outcome instanceof ChatError) pending.reject(outcome);
    else pending.resolve({ ...outcome });
  }

  /** A frame from the server on the chat channel; anything malformed is ignored.
   * @param {unknown} data */
  #onChatFrame(data) {
    const frame = parseChatFrame(data, this.#participantId);
    if (!frame) return;
    if (frame.type === 'chat-rejected') {
      const { reason, clientId, retryAfterMs } = frame;
      if (clientId) this.#settleChat(clientId, new ChatError(reason, retryAfterMs));
      this.#emit('chat-rejected', /** @type {ChatRejectedDetail} */ ({ reason, clientId, retryAfterMs }));
      return;
    }
    const incoming = frame.type === 'chat' ? [frame.message] : frame.messages;
    const { list, added } = mergeChat(this.#chat, incoming);
    this.#chat = list;
    if (frame.type === 'chat') {
      if (frame.clientId) this.#settleChat(frame.clientId, frame.message);
      if (added.length) this.#emit('chat', { ...frame.message });
    } else {
      this.#emit('chat-history', /** @type {ChatHistoryDetail} */ ({ messages: frame.messages.map((m) => ({ ...m })) }));
    }
  }

  /** Dynacast: the server names the simulcast layers of one of our tracks anyone needs.
   * @param {any} msg */
  #onPublishLayers(msg) {
    const pc = this.#pc;
    if (!pc) return;
    const sourceTrackId = String(msg.source_track_id);
    const active = Array.isArray(msg.active) ? msg.active.map(String) : [];
    const transceiver = this.#ownTransceiverFor(pc, sourceTrackId);
    if (!transceiver) return; // not (or no longer) ours: ignore
    const sender = transceiver.sender;
    let work = this.#layerWork.get(sender);
    if (!work) {
      work = { busy: false, next: null };
      this.#layerWork.set(sender, work);
    }
    work.next = { sourceTrackId, active };
    if (!work.busy) this.#applyLayers(pc, sender, work);
  }

  /**
   * Applies `work.next` to the sender's encodings until nothing is waiting, one `setParameters`
   * at a time. An encoding with a rid is active iff the set names it; a single encoding without
   * a rid (`simulcast: false`) is active iff the set is not empty.
   * @param {RTCPeerConnection} pc
   * @param {RTCRtpSender} sender
   * @param {{busy: boolean, next: {sourceTrackId: string, active: string[]} | null}} work
   */
  async #applyLayers(pc, sender, work) {
    work.busy = true;
    try {
      while (work.next && this.#pc === pc) {
        const { sourceTrackId, active } = work.next;
        work.next = null;
        try {
          const params = sender.getParameters();
          let changed = false;
          for (const enc of params.encodings) {
            const on = enc.rid ? active.includes(enc.rid) : active.length > 0;
            if (enc.active !== on) {
              enc.active = on;
              changed = true;
            }
          }
          if (changed) await sender.setParameters(params);
          if (this.#pc !== pc) return;
          const encodings = sender.getParameters().encodings.map((e) => ({ rid: e.rid ?? null, active: e.active }));
          this.#emit('publish-layers', /** @type {PublishLayersDetail} */ ({ sourceTrackId, active, sender, encodings }));
        } catch (e) {
          this.#emitError('client', `setParameters: ${e}`, false);
        }
      }
    } finally {
      work.busy = false;
    }
  }

  /**
   * The transceiver of ours that sends `trackId`: the track it sends has that id, or its m-line
   * names it as `msid` track id (after `replaceTrack` the m-line keeps the first track's id,
   * which is the one the server knows).
   * @param {RTCPeerConnection} pc
   * @param {string} trackId
   */
  #ownTransceiverFor(pc, trackId) {
    const msids = msidTrackIds(pc.localDescription?.sdp ?? '');
    for (const t of this.#ownTransceivers) {
      if (isStopped(t)) continue;
      if (t.sender.track?.id === trackId || this.#senderInfo.get(t)?.id === trackId
        || (t.mid !== null && msids.get(t.mid) === trackId)) return t;
    }
    return undefined;
  }

  /** @param {string} code @param {string} message @param {any} msg */
  #onServerError(code, message, msg) {
    const key = code.replace(/-/g, '_');
    if (this.#awaiting === 'resume' && RESUME_REFUSED_CODES.has(key)) {
      this.#emitError(code, message, false);
      this.#resumeRefused(`the server could not resume the session${message ? ` (${message})` : ''}`);
      return;
    }
    if ((key === 'rate_limited' || key === 'unavailable') && this.#awaiting) {
      // Refused our join (or resume) for now (limited, draining, or the cluster cannot place
      // the room yet): back off, at least as long as the server asks.
      this.#emitError(code, message, false);
      const after = Number(msg?.retry_after_ms);
      this.#onSocketLost('the server is limiting connection attempts', Number.isFinite(after) && after > 0 ? after : 0);
      return;
    }
    if (FATAL_CODES.has(code)) {
      // Before `joined` these refuse the join; the server may or may not close the socket.
      this.#fail(code, message);
      return;
    }
    if (code === 'offer_collision') {
      // The server's offer won. It was sent before this error, so it has already rolled our
      // offer back and been answered; the re-offer is under way (see #onServerOffer).
      return;
    }
    if (code === 'bad_sdp') {
      // The server could not use our offer (or answer). Roll our offer back so we are not stuck
      // waiting for an answer; give up on this connection if it keeps happening.
      this.#emitError(code, message, false);
      this.#badSdp += 1;
      if (this.#badSdp > 3) {
        this.#fail(code, `the server rejected our SDP ${this.#badSdp} times: ${message}`);
        return;
      }
      this.#enqueue(async () => {
        const pc = this.#pc;
        if (pc && pc.signalingState === 'have-local-offer') {
          await pc.setLocalDescription({ type: 'rollback' });
        }
      });
      return;
    }
    if (key === 'removed' && !isRejoinableRemoval(message)) {
      this.#endRemoved(message);
      return;
    }
    const closing = CLOSING_CODES.has(key);
    this.#emitError(code, message, false);
    if (closing) {
      // The server ends the session with these: nothing to resume, join afresh.
      this.#resumeToken = null;
      this.#giveUpResume();
      this.#onSocketLost(key === 'removed' ? `removed by the server${message ? ` (${message})` : ''}` : `server error ${code}`);
    }
  }

  // ---------------------------------------------------------------- negotiation

  #createPc() {
    this.#closePc();
    const pc = new RTCPeerConnection({
      iceServers: this.#iceServers,
      iceTransportPolicy: this.#opts.iceTransportPolicy === 'relay' ? 'relay' : 'all',
      bundlePolicy: 'max-bundle',
      rtcpMuxPolicy: 'require',
    });
    this.#pc = pc;
    this.#offerWanted = false;
    this.#ownTransceivers = new Set();
    // A new PeerConnection is a new member on the server: it knows none of our tracks yet.
    this.#announced = new Set();
    this.#sentMutes = new Map();
    this.#badSdp = 0;
    this.#connectArmed = false;
    this.#startStallWatch(pc);

    pc.onnegotiationneeded = () => {
      if (this.#pc !== pc) return;
      this.#offerWanted = true;
      this.#enqueue(() => this.#offerIfNeeded());
    };
    pc.onicecandidate = (ev) => {
      if (this.#pc !== pc) return;
      const c = ev.candidate;
      // Chrome signals end-of-candidates with `null` (an empty candidate string means the same).
      const msg = {
        type: 'candidate',
        candidate: c && c.candidate
          ? {
            candidate: c.candidate,
            sdp_mid: c.sdpMid,
            sdp_m_line_index: c.sdpMLineIndex,
            username_fragment: c.usernameFragment,
          }
          : null,
      };
      if (this.#signalingReady()) this.#send(msg);
      else if (this.#unsentCandidates.length < MAX_UNSENT_CANDIDATES) this.#unsentCandidates.push(msg);
    };
    pc.ontrack = (ev) => this.#onTrack(pc, ev);
    pc.onconnectionstatechange = () => {
      if (this.#pc !== pc) return;
      this.#emit('media-state', /** @type {MediaStateDetail} */ ({ state: pc.connectionState }));
      this.#onMediaStateChange(pc);
    };
    pc.oniceconnectionstatechange = () => {
      if (this.#pc === pc) this.#onMediaStateChange(pc);
    };
    // Before the first offer, so that offer carries it (`negotiationneeded` fires async).
    this.#openChat(pc);
    this.#attachLocalTracks(pc);
    this.#attachScreen(pc);
    if (this.#receiveOnly) this.#ensureReceiving(pc);
  }

  // ---------------------------------------------------------------- ICE restarts

  /** Reacts to the PeerConnection's (or its ICE transport's) state. @param {RTCPeerConnection} pc */
  #onMediaStateChange(pc) {
    if (this.#pc !== pc) return;
    const conn = pc.connectionState;
    const ice = pc.iceConnectionState;
    if (conn === 'connected') {
      // After a stall the state may never have left `connected`: only bytes tell it is back.
      if (!this.#stalled) this.#onMediaConnected();
    } else if (conn === 'failed' || ice === 'failed') {
      this.#mediaUp = false;
      this.#stalled = false; // the PeerConnection says so itself now
      if (this.#disconnectedTimer) clearTimeout(this.#disconnectedTimer);
      this.#disconnectedTimer = null;
      // A restart under way has its own next step (`#iceTimer`): let it run its course.
      if (!this.#iceTimer) this.#restartIce('media connection failed');
      else this.#probeSocket();
    } else if (conn === 'disconnected' || ice === 'disconnected') {
      this.#mediaUp = false;
      this.#stalled = false;
      // The socket may have died with the same network change, silently: find out now.
      if (!this.#disconnectedTimer) this.#probeSocket();
      if (this.#iceTimer || this.#disconnectedTimer) return;
      this.#disconnectedTimer = setTimeout(() => {
        this.#disconnectedTimer = null;
        if (this.#pc === pc && pc.connectionState !== 'connected' && !this.#iceTimer) {
          this.#restartIce(`media connection lost for ${seconds(this.#opts.iceDisconnectedMs)}`);
        }
      }, this.#opts.iceDisconnectedMs);
    }
  }

  /** Whether the media of `pc` needs (another) restart: not `connected`, or stalled.
   * @param {RTCPeerConnection} pc */
  #mediaDown(pc) {
    return pc.connectionState !== 'connected' || this.#stalled;
  }

  /** Media flows (again): the ICE restarts and the rejoin backoff start over. */
  #onMediaConnected() {
    this.#clearIceTimers();
    this.#iceRestartDeferred = null;
    this.#stalled = false;
    this.#iceFloorMs = 0;
    // Only now did the last join work: the next rejoin starts from the shortest delay.
    this.#reconnectAttempt = 0;
    if (this.#mediaUp) return;
    this.#mediaUp = true;
    this.#mediaEverUp = true;
    const restarts = this.#iceAttempt;
    this.#iceAttempt = 0;
    this.#emit('media-connected', /** @type {MediaConnectedDetail} */ ({ restarts }));
  }

  #clearIceTimers() {
    if (this.#iceTimer) clearTimeout(this.#iceTimer);
    this.#iceTimer = null;
    if (this.#disconnectedTimer) clearTimeout(this.#disconnectedTimer);
    this.#disconnectedTimer = null;
    if (this.#connectTimer) clearTimeout(this.#connectTimer);
    this.#connectTimer = null;
  }

  /**
   * Restarts ICE on the same PeerConnection (the offer follows through `negotiationneeded`),
   * and again after a growing delay while it is still down. Waits for the socket while it is
   * down, or suspect (a probe is out): the new offer needs it.
   * @param {string} cause
   * @param {boolean} [socketKnownGood=false]  the socket just proved alive: do not probe it
   */
  #restartIce(cause, socketKnownGood = false) {
    const pc = this.#pc;
    if (!pc || this.#left) return;
    if (this.#disconnectedTimer) clearTimeout(this.#disconnectedTimer);
    this.#disconnectedTimer = null;
    if (this.#connectTimer) clearTimeout(this.#connectTimer);
    this.#connectTimer = null;
    if (!this.#signalingReady()) {
      this.#iceRestartDeferred = cause; // `resumed` restarts it
      return;
    }
    if (!socketKnownGood) this.#probeSocket();
    if (this.#probeTimer) {
      // An offer on a dead socket is lost: wait for a frame (`#onProbeAnswered` restarts) or
      // for the probe to give up on the socket (`resumed` restarts).
      this.#iceRestartDeferred = cause;
      return;
    }
    this.#iceRestartDeferred = null;
    const attempt = ++this.#iceAttempt;
    this.#iceRestarts += 1;
    if (typeof pc.restartIce === 'function') {
      pc.restartIce();
    } else {
      this.#iceRestartOffer = true;
      this.#offerWanted = true;
      this.#enqueue(() => this.#offerIfNeeded());
    }
    const delayMs = Math.max(this.#iceFloorMs, backoffDelay(attempt - 1, {
      baseMs: this.#opts.iceRestartBaseMs, maxMs: this.#opts.iceRestartMaxMs, jitter: this.#opts.iceRestartJitter,
    }, this.#opts.random));
    this.#iceTimer = setTimeout(() => {
      this.#iceTimer = null;
      if (this.#pc === pc && this.#mediaDown(pc)) this.#restartIce('media connection still down');
    }, delayMs);
    this.#emit('media-reconnecting', /** @type {MediaReconnectingDetail} */ ({
      attempt, delayMs, reason: describeMediaFailure(cause, attempt, delayMs, this.#mediaEverUp),
    }));
  }

  // ---------------------------------------------------------------- socket probe

  /**
   * The media is in trouble, and the socket may have died with it without a `close` (an
   * address change): send a `ping`; no server frame within `socketProbeMs` means it is lost.
   * Does nothing while a probe is out, or when there is no joined socket to probe.
   */
  #probeSocket() {
    if (this.#probeTimer || !this.#signalingReady() || !(this.#opts.socketProbeMs > 0)) return;
    const generation = this.#generation;
    this.#probeTimer = setTimeout(() => {
      this.#probeTimer = null;
      if (generation !== this.#generation || this.#left) return;
      this.#onSocketLost(`no reply from the server within ${seconds(this.#opts.socketProbeMs)} while the media connection is down`);
    }, this.#opts.socketProbeMs);
    // Armed first: a reply may come back before `send` returns (it does in tests).
    this.#send({ type: 'ping' });
  }

  /** A server frame arrived while a probe was out: the socket works. Runs the restart that
   * waited for it, if the media is still down. */
  #onProbeAnswered() {
    if (this.#probeTimer) clearTimeout(this.#probeTimer);
    this.#probeTimer = null;
    const cause = this.#iceRestartDeferred;
    const pc = this.#pc;
    if (!cause || !pc || this.#iceTimer || !this.#signalingReady()) return;
    this.#iceRestartDeferred = null;
    if (this.#mediaDown(pc)) this.#restartIce(cause, true);
  }

  // ---------------------------------------------------------------- connect timeout

  /** The first offer/answer exchange of `pc` is done: it has `connectTimeoutMs` to connect.
   * @param {RTCPeerConnection} pc */
  #armConnectTimer(pc) {
    if (this.#pc !== pc || this.#connectArmed) return;
    this.#connectArmed = true;
    const ms = this.#opts.connectTimeoutMs;
    if (!(ms > 0) || this.#mediaEverUp || pc.connectionState === 'connected' || this.#iceTimer) return;
    this.#connectTimer = setTimeout(() => {
      this.#connectTimer = null;
      if (this.#pc !== pc || this.#left || pc.connectionState === 'connected' || this.#iceTimer) return;
      this.#mediaUp = false;
      // It had this long; restarts that follow get at least as long (TCP or a relay may be slow).
      this.#iceFloorMs = ms;
      this.#restartIce(`media connection not established within ${seconds(ms)} (UDP and TCP to the media server may be blocked by the network)`);
    }, ms);
  }

  // ---------------------------------------------------------------- stall watchdog

  /** Polls `pc`'s received bytes every `stallCheckMs` (see `#pollStall`). @param {RTCPeerConnection} pc */
  #startStallWatch(pc) {
    this.#stopStallWatch();
    const every = this.#opts.stallCheckMs;
    if (!(every > 0) || !(this.#opts.stallMs > 0)) return;
    this.#stallTimer = setInterval(() => this.#pollStall(pc), every);
  }

  #stopStallWatch() {
    if (this.#stallTimer) clearInterval(this.#stallTimer);
    this.#stallTimer = null;
    this.#stallSample = null;
    this.#stallPoll = null;
    this.#stalled = false;
  }

  /** One watchdog sample: only while `connected` with remote media; one `getStats()` at a
   * time (a hung one is given up after four periods). Never throws. @param {RTCPeerConnection} pc */
  #pollStall(pc) {
    if (this.#pc !== pc || this.#left) return; // `#closePc` stops it; a newer pc has its own
    if (pc.connectionState !== 'connected') {
      this.#stallSample = null;
      return;
    }
    if (this.#remoteTracks.size === 0) {
      this.#onStallSample(pc, null); // nothing to measure
      return;
    }
    const now = Date.now();
    if (this.#stallPoll && now - this.#stallPoll.at < 4 * this.#opts.stallCheckMs) return;
    const poll = { at: now };
    this.#stallPoll = poll;
    /** @type {Promise<RTCStatsReport>} */
    let stats;
    try {
      stats = Promise.resolve(pc.getStats());
    } catch {
      this.#stallPoll = null;
      return;
    }
    stats.then((report) => {
      if (this.#stallPoll !== poll) return; // given up on, or the watchdog was reset
      this.#stallPoll = null;
      if (this.#pc !== pc || this.#left || pc.connectionState !== 'connected') return;
      this.#onStallSample(pc, receivedBytes(report));
    }, () => {
      if (this.#stallPoll === poll) this.#stallPoll = null;
    }).catch((e) => this.#emitError('client', `stall check: ${e}`, false));
  }

  /**
   * @param {RTCPeerConnection} pc
   * @param {{key: string, bytes: number} | null} sample  null: no inbound stream or no counter
   */
  #onStallSample(pc, sample) {
    const now = Date.now();
    const last = this.#stallSample;
    if (!sample) {
      this.#stallSample = null;
      // Nothing is received any more (say, everyone left): bytes cannot tell, the state can.
      if (this.#stalled) {
        this.#stalled = false;
        this.#onMediaConnected();
      }
      return;
    }
    if (!last || last.key !== sample.key || sample.bytes < last.bytes) {
      // First sample, or another candidate pair (after a restart): a new baseline.
      this.#stallSample = { ...sample, since: now };
      return;
    }
    if (sample.bytes > last.bytes) {
      last.bytes = sample.bytes;
      last.since = now;
      if (this.#stalled) {
        this.#stalled = false;
        this.#onMediaConnected();
      }
      return;
    }
    if (this.#stalled || now - last.since < this.#opts.stallMs) return;
    // As if `disconnected` for `iceDisconnectedMs` already.
    this.#stalled = true;
    this.#mediaUp = false;
    if (this.#disconnectedTimer) clearTimeout(this.#disconnectedTimer);
    this.#disconnectedTimer = null;
    if (this.#iceTimer) this.#probeSocket();
    else this.#restartIce(`no media received for ${seconds(this.#opts.stallMs)}`);
  }

  /** Set by `receiveOnly()`. */
  #receiveOnly = false;

  /** Gives a PeerConnection that publishes nothing something to offer (see `receiveOnly`).
   * @param {RTCPeerConnection} pc */
  #ensureReceiving(pc) {
    if (pc.getTransceivers().length > 0) return; // already negotiating something
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addTransceiver('video', { direction: 'recvonly' });
  }

  /** Set when `negotiationneeded` fired and no offer of ours has covered it yet. */
  #offerWanted = false;
  /** `bad_sdp` errors on the current PeerConnection. */
  #badSdp = 0;

  /** Transceivers this session created to send its own media (the server's are recvonly).
   * @type {Set<RTCRtpTransceiver>} */
  #ownTransceivers = new Set();

  /**
   * Sends every live track of the local stream: a track already sent is left alone, a track of a
   * kind we already send replaces the old one (no renegotiation; the transceiver keeps its
   * encodings, so simulcast layers and what `publish-layers` turned off), anything else gets a
   * new sendonly transceiver (renegotiates via `negotiationneeded`); a new video one gets the
   * `SIMULCAST_LAYERS` as encodings unless `simulcast` is off.
   * @param {RTCPeerConnection} pc
   */
  #attachLocalTracks(pc) {
    const stream = this.#localStream;
    if (!stream) return;
    const current = stream.getTracks();
    // The screen's transceiver is not the camera's to reuse.
    const own = [...this.#ownTransceivers].filter((t) => !isStopped(t) && t !== this.#screenTransceiver);
    for (const track of current) {
      if (track.readyState === 'ended') continue;
      if (own.some((t) => t.sender.track === track)) continue;
      // Reuse a transceiver of the same kind whose track is no longer part of the stream.
      const reusable = own.find((t) => t.receiver.track.kind === track.kind
        && !(t.sender.track && current.includes(t.sender.track)));
      if (reusable) {
        reusable.sender.replaceTrack(track)
          .catch((e) => this.#emitError('client', `replaceTrack: ${e}`, false));
        if (reusable.direction !== 'sendonly') reusable.direction = 'sendonly';
      } else {
        /** @type {RTCRtpTransceiverInit} */
        const init = { direction: 'sendonly', streams: [stream] };
        if (track.kind === 'video' && this.#opts.simulcast) {
          init.sendEncodings = SIMULCAST_LAYERS.map((layer) => ({ ...layer }));
        }
        const transceiver = pc.addTransceiver(track, init);
        if (track.kind === 'audio' && this.#opts.red) preferRed(transceiver);
        this.#addOwnTransceiver(transceiver, track, defaultSource(track.kind === 'audio' ? 'audio' : 'video'));
      }
    }
  }

  /**
   * Runs `fn` after every signaling operation queued before it. Errors are reported, not thrown,
   * and never stall the queue.
   * @param {() => Promise<void>} fn
   */
  #enqueue(fn) {
    const pc = this.#pc;
    this.#queue = this.#queue.then(async () => {
      if (!pc || this.#pc !== pc) return; // a newer PeerConnection replaced this one
      try {
        await fn();
      } catch (e) {
        this.#emitError('negotiation', String(e), false);
      }
    });
  }

  async #offerIfNeeded() {
    const pc = this.#pc;
    if (!pc || !this.#offerWanted) return;
    // Not stable: our offer is outstanding (its answer comes next). Once stable again, Chrome
    // re-fires `negotiationneeded` if a change is still unsent.
    if (pc.signalingState !== 'stable') return;
    // No socket (resuming): offer once it is back (`#onResumed`).
    if (!this.#signalingReady()) return;
    this.#offerWanted = false;
    const iceRestart = this.#iceRestartOffer;
    this.#iceRestartOffer = false;
    const offer = await pc.createOffer(iceRestart ? { iceRestart: true } : undefined);
    await pc.setLocalDescription({ type: 'offer', sdp: fixBundleExtmapCollisions(offer.sdp ?? '') });
    const desc = pc.localDescription;
    // A server offer handled meanwhile may have rolled this offer back already.
    const now = /** @type {RTCSignalingState} */ (pc.signalingState);
    if (this.#pc !== pc || now !== 'have-local-offer' || !desc) return;
    this.#sendOffer(pc, desc.sdp);
  }

  /**
   * Sends an offer of ours with the `sources` of every track we send (by the id the server
   * knows it by), then the `mute`s its tracks wait for (see `#syncMutes`).
   * @param {RTCPeerConnection} pc @param {string} sdp
   */
  #sendOffer(pc, sdp) {
    const sources = this.#offerSources(pc);
    if (!this.#send({ type: 'offer', sdp, sources })) return;
    this.#announced = new Set(Object.keys(sources));
    // The server forgets the self mutes of tracks an offer no longer names.
    for (const id of [...this.#sentMutes.keys()]) if (!this.#announced.has(id)) this.#sentMutes.delete(id);
    this.#syncMutes(false);
  }

  /** `offer.sources`: source id → what it carries, for every track we send on `pc`.
   * @param {RTCPeerConnection} pc @returns {Record<string, TrackSource>} */
  #offerSources(pc) {
    /** @type {Record<string, TrackSource>} */
    const out = {};
    for (const t of this.#ownTransceivers) {
      const track = t.sender.track;
      if (isStopped(t) || !track) continue;
      out[this.#sourceIdOf(pc, t)] = this.#senderInfo.get(t)?.source ?? defaultSource(track.kind === 'audio' ? 'audio' : 'video');
    }
    return out;
  }

  /** The id the server knows the track of our transceiver by: its m-line's `msid` track id
   * once negotiated, else the id of the track it was made with, else its track's id.
   * @param {RTCPeerConnection} pc @param {RTCRtpTransceiver} t */
  #sourceIdOf(pc, t) {
    const msid = t.mid !== null ? msidTrackIds(pc.localDescription?.sdp ?? '').get(t.mid) : undefined;
    return msid ?? this.#senderInfo.get(t)?.id ?? t.sender.track?.id ?? '';
  }

  /** @param {string} sdp */
  async #onServerOffer(sdp) {
    const pc = /** @type {RTCPeerConnection} */ (this.#pc);
    const hadLocalOffer = pc.signalingState === 'have-local-offer';
    // Polite peer: an outstanding offer of ours is rolled back, explicitly: with the implicit
    // rollback Chromium (156) checks the server's header-extension ids against our pending offer
    // too and may refuse it ("RTP extension ID reassignment not supported"), leaving the offer
    // unanswered until the server gives up on us. Even the explicit rollback leaves that check
    // in place; the server's offers therefore use Chromium's ids (`OFFERED_EXTENSION_IDS`).
    if (hadLocalOffer) await pc.setLocalDescription({ type: 'rollback' });
    await pc.setRemoteDescription({ type: 'offer', sdp });
    await this.#flushCandidates(pc);
    await pc.setLocalDescription();
    const desc = pc.localDescription;
    if (this.#pc !== pc || !desc) return;
    this.#send({ type: 'answer', sdp: desc.sdp });
    this.#armConnectTimer(pc);
    if (hadLocalOffer) {
      // Our offer was discarded; make sure it is made again even if Chrome does not re-fire
      // `negotiationneeded` (it normally does once stable).
      this.#offerWanted = true;
      this.#enqueue(() => this.#offerIfNeeded());
    }
  }

  /** @param {string} sdp */
  async #onServerAnswer(sdp) {
    const pc = /** @type {RTCPeerConnection} */ (this.#pc);
    // An answer to an offer we already rolled back is stale: ignore it.
    if (pc.signalingState !== 'have-local-offer') return;
    await pc.setRemoteDescription({ type: 'answer', sdp });
    await this.#flushCandidates(pc);
    this.#armConnectTimer(pc);
  }

  /** @param {WireCandidate | null | undefined} wire */
  #onServerCandidate(wire) {
    /** @type {RTCIceCandidateInit | null} */
    const init = wire && typeof wire.candidate === 'string'
      ? {
        candidate: wire.candidate,
        sdpMid: wire.sdp_mid ?? null,
        sdpMLineIndex: wire.sdp_m_line_index ?? null,
        usernameFragment: wire.username_fragment ?? null,
      }
      : null;
    if (init && init.sdpMid == null && init.sdpMLineIndex == null) init.sdpMLineIndex = 0;
    this.#pendingCandidates.push(init);
    this.#enqueue(async () => {
      const pc = this.#pc;
      if (pc && pc.remoteDescription) await this.#flushCandidates(pc);
    });
  }

  /** @param {RTCPeerConnection} pc */
  async #flushCandidates(pc) {
    const list = this.#pendingCandidates;
    this.#pendingCandidates = [];
    for (const c of list) {
      try {
        if (c) await pc.addIceCandidate(c);
        else await pc.addIceCandidate();
      } catch (e) {
        this.#emitError('candidate', `addIceCandidate: ${e}`, false);
      }
    }
  }

  // ---------------------------------------------------------------- received media

  /** @param {RTCPeerConnection} pc @param {RTCTrackEvent} ev */
  #onTrack(pc, ev) {
    if (this.#pc !== pc) return;
    const stream = ev.streams[0];
    if (!stream) return; // the server always sets a stream id (the publisher); ignore others
    const track = ev.track;
    const participantId = stream.id;
    // The remote description is already applied when `track` fires; its msid names the track.
    const mid = ev.transceiver.mid;
    const trackId = (mid !== null && msidTrackIds(pc.remoteDescription?.sdp ?? '').get(mid)) || track.id;
    const previous = this.#remoteTracks.get(track);
    if (previous && (previous.participantId !== participantId || previous.trackId !== trackId)) {
      // The server recycled this transceiver for another track.
      this.#endRemoteTrack(track);
    }
    const participant = this.#participants.get(participantId);
    /** @type {RemoteTrackInfo} */
    const info = { participantId, trackId, stream, receiver: ev.receiver, announced: !!participant };
    this.#remoteTracks.set(track, info);

    const mine = () => this.#remoteTracks.get(track) === info;
    const owns = () => mine() && info.announced;
    stream.onremovetrack = (e) => {
      // The server made the m-line inactive (unpublished or publisher left).
      if (this.#remoteTracks.get(e.track)?.stream === stream) this.#endRemoteTrack(e.track);
    };
    track.onended = () => { if (mine()) this.#endRemoteTrack(track); };
    // No media arriving (or arriving again) on the received track: `byServer: false`.
    const muteDetail = () => /** @type {TrackMuteDetail} */ ({
      ...this.#trackDetail(track, info), kind: track.kind === 'audio' ? 'audio' : 'video', byServer: false, sourceTrackId: null,
    });
    track.onmute = () => { if (owns()) this.#emit('track-muted', muteDetail()); };
    track.onunmute = () => { if (owns()) this.#emit('track-unmuted', muteDetail()); };
    // A stream id that names no known member: wait for its announcement (`participant-joined`).
    if (!participant) return;
    participant.stream = stream;
    this.#emit('track', this.#trackDetail(track, info));
  }

  /** @param {MediaStreamTrack} track */
  #endRemoteTrack(track) {
    const info = this.#remoteTracks.get(track);
    if (!info) return;
    this.#remoteTracks.delete(track);
    this.#forgetViews(info.trackId);
    if (!info.announced) return;
    this.#emit('track-ended', this.#trackDetail(track, info));
  }

  // ---------------------------------------------------------------- plumbing

  /** @param {Record<string, unknown>} msg */
  #send(msg) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(msg));
    return true;
  }

  /** @param {ConnectionState} state */
  #setState(state) {
    if (state === this.#state) return;
    const previous = this.#state;
    this.#state = state;
    this.#emit('connection-state', /** @type {ConnectionStateDetail} */ ({ state, previous }));
  }

  /** @param {string} code @param {string} message @param {boolean} fatal */
  #emitError(code, message, fatal) {
    this.#emit('error', /** @type {ErrorDetail} */ ({ code, message, fatal }));
  }

  /** @param {string} type @param {unknown} detail */
  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/**
 * What a session knows of a received track (see `Session#remoteTracks`).
 * @typedef {{participantId: string, trackId: string, stream: MediaStream, receiver: RTCRtpReceiver,
 *            announced: boolean}} RemoteTrackInfo
 */


/** `ms` as seconds for people: "2 s", "1.5 s". @param {number} ms */
function seconds(ms) {
  return `${Number((ms / 1000).toFixed(1))} s`;
}

/**
 * What the stall watchdog reads from a `getStats()` report: the bytes received on the selected
 * candidate pair of each transport (else the transport's own count; without transport stats,
 * the selected or nominated pair), and which pairs/transports those were. Null when the report
 * has no `inbound-rtp` stream (nothing is received, so nothing can stall) or no byte counter.
 * Never throws.
 * @param {any} report  an `RTCStatsReport` (or any Map-like of stats)
 * @returns {{key: string, bytes: number} | null}
 */
export function receivedBytes(report) {
  /** @type {any[]} */
  const all = [];
  try {
    if (report && typeof report.forEach === 'function') report.forEach((/** @type {any} */ r) => all.push(r));
  } catch {
    return null;
  }
  const stats = all.filter((r) => r && typeof r === 'object');
  if (!stats.some((r) => r.type === 'inbound-rtp')) return null;
  /** @type {Map<string, any>} */
  const pairs = new Map();
  for (const r of stats) if (r.type === 'candidate-pair') pairs.set(String(r.id), r);
  const finite = (/** @type {unknown} */ n) => typeof n === 'number' && Number.isFinite(n);
  let key = '';
  let bytes = 0;
  for (const t of stats) {
    if (t.type !== 'transport') continue;
    const pair = t.selectedCandidatePairId != null ? pairs.get(String(t.selectedCandidatePairId)) : undefined;
    if (pair && finite(pair.bytesReceived)) {
      key += `pair:${pair.id};`;
      bytes += pair.bytesReceived;
    } else if (finite(t.bytesReceived)) {
      key += `transport:${t.id};`;
      bytes += t.bytesReceived;
    }
  }
  if (!key) {
    for (const p of pairs.values()) {
      if ((p.selected || (p.nominated && p.state === 'succeeded')) && finite(p.bytesReceived)) {
        key += `pair:${p.id};`;
        bytes += p.bytesReceived;
      }
    }
  }
  return key ? { key, bytes } : null;
}

/** A size in device pixels for `track-view`: a whole number, 0 for anything not positive.
 * @param {number} n */
function devicePx(n) {
  return Number.isFinite(n) && n > 0 ? Math.round(n) : 0;
}

/**
 * The `msid` track id of every m-section of `sdp` that has one, by its `a=mid`.
 * @param {string} sdp
 * @returns {Map<string, string>}
 */
export function msidTrackIds(sdp) {
  /** @type {Map<string, string>} */
  const out = new Map();
  /** @type {string | null} */
  let mid = null;
  /** @type {string | null} */
  let trackId = null;
  const flush = () => {
    if (mid !== null && trackId !== null) out.set(mid, trackId);
    mid = trackId = null;
  };
  for (const line of sdp.split(/\r?\n/)) {
    if (line.startsWith('m=')) flush();
    else if (line.startsWith('a=mid:')) mid = line.slice(6).trim();
    else if (line.startsWith('a=msid:')) {
      const [, appdata] = line.slice(7).trim().split(/\s+/);
      if (appdata && trackId === null) trackId = appdata;
    }
  }
  flush();
  return out;
}

/** @param {RTCRtpTransceiver} t */
function isStopped(t) {
  return t.currentDirection === 'stopped' || t.direction === 'stopped';
}

/**
 * Converts the server's `ice_servers` into `RTCIceServer`s, dropping malformed entries.
 * @param {unknown} list
 * @returns {RTCIceServer[]}
 */
export function toIceServers(list) {
  if (!Array.isArray(list)) return [];
  /** @type {RTCIceServer[]} */
  const out = [];
  for (const s of /** @type {WireIceServer[]} */ (list)) {
    if (!s || (typeof s.urls !== 'string' && !Array.isArray(s.urls))) continue;
    /** @type {RTCIceServer} */
    const server = { urls: s.urls };
    if (typeof s.username === 'string') server.username = s.username;
    if (typeof s.credential === 'string') server.credential = s.credential;
    out.push(server);
  }
  return out;
}

/**
 * Makes every `a=extmap` id mean one URI across the whole (bundled) offer.
 *
 * Works around a Chromium bug (seen in 156): after an offer of ours is rolled back by a server
 * offer, the next `createOffer()` keeps the header-extension ids the rolled-back offer gave our
 * new m-lines, even where the server's m-lines now use that id for another extension; the offer
 * then fails `setLocalDescription` ("A BUNDLE group contains a codec collision for header
 * extension id=1"). The first m-line to use an id keeps it (m-lines already negotiated come
 * first); a later m-line that reuses it for another URI gets the URI's id from elsewhere in the
 * offer, or an unused one. Returns `sdp` unchanged when there is no collision.
 * @param {string} sdp
 * @returns {string}
 */
export function fixBundleExtmapCollisions(sdp) {
  const eol = sdp.includes('\r\n') ? '\r\n' : '\n';
  const lines = sdp.split(eol);
  const extmap = /^a=extmap:(\d+)(\/[a-z]+)? (\S+)(.*)$/;
  /** @type {Set<number>} */
  const everywhere = new Set();
  for (const line of lines) {
    const m = extmap.exec(line);
    if (m) everywhere.add(Number(m[1]));
  }
  const twoByte = lines.includes('a=extmap-allow-mixed');
  /** @type {Map<number, string>} */
  const uriOf = new Map();
  /** @type {Map<string, number>} */
  const idOf = new Map();
  /** @type {Set<number>} */
  let inSection = new Set();
  let changed = false;
  const free = () => {
    const max = twoByte ? 255 : 14;
    for (let id = 1; id <= max; id++) {
      if (!uriOf.has(id) && !everywhere.has(id) && !inSection.has(id)) return id;
    }
    return null;
  };
  const out = lines.map((line) => {
    if (line.startsWith('m=')) inSection = new Set();
    const m = extmap.exec(line);
    if (!m) return line;
    let id = Number(m[1]);
    const uri = m[3];
    const owner = uriOf.get(id);
    if (owner !== undefined && owner !== uri) {
      const known = idOf.get(uri);
      const next = known !== undefined && !inSection.has(known) ? known : free();
      if (next === null) return line; // nothing free: leave it for Chrome to reject
      id = next;
      everywhere.add(id);
      changed = true;
    }
    uriOf.set(id, uri);
    if (!idOf.has(uri)) idOf.set(uri, id);
    inSection.add(id);
    return `a=extmap:${id}${m[2] ?? ''} ${uri}${m[4]}`;
  });
  return changed ? out.join(eol) : sdp;
}

/**
 * Converts the `speakers` of an `active-speakers` message, keeping the server's order (loudest
 * first). An entry counts if it is an object with a non-empty string `participant_id` and a
 * numeric `level` (clamped to 0..1); other entries, and repeats of an id already listed, are
 * skipped, and unknown fields ignored. Returns null when `list` is not an array (the message
 * is malformed and should change nothing). Never throws.
 * @param {unknown} list
 * @returns {ActiveSpeaker[] | null}
 */
export function parseActiveSpeakers(list) {
  if (!Array.isArray(list)) return null;
  /** @type {ActiveSpeaker[]} */
  const out = [];
  for (const entry of list) {
    if (!entry || typeof entry !== 'object') continue;
    const { participant_id: participantId, level } = /** @type {Record<string, unknown>} */ (entry);
    if (typeof participantId !== 'string' || !participantId) continue;
    if (typeof level !== 'number' || !Number.isFinite(level)) continue;
    if (out.some((s) => s.participantId === participantId)) continue;
    out.push({ participantId, level: Math.min(1, Math.max(0, level)) });
  }
  return out;
}

/**
 * Whether two speaker lists name the same participants in the same order with the same levels.
 * @param {readonly ActiveSpeaker[]} a
 * @param {readonly ActiveSpeaker[]} b
 */
export function sameSpeakers(a, b) {
  return a.length === b.length
    && a.every((s, i) => s.participantId === b[i].participantId && s.level === b[i].level);
}

/** @param {any} wire @returns {Participant} */
function toParticipant(wire) {
  return {
    id: String(wire.id),
    name: typeof wire.name === 'string' && wire.name ? wire.name : String(wire.id),
    tracks: Array.isArray(wire.tracks)
      ? wire.tracks.map((/** @type {any} */ t) => {
        const kind = t.kind === 'audio' ? 'audio' : 'video';
        return { track_id: String(t.track_id), kind, source: toSource(t.source, kind) };
      })
      : [],
    stream: null,
    metadata: typeof wire.metadata === 'string' && wire.metadata ? wire.metadata : null,
    muted: { audio: false, video: false },
  };
}
