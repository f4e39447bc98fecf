//! `confab-client`: a Rust client for Confab (async webrtc-rs), used by the integration tests,
//! and the load tester built on it (the `confab-loadtest` binary). It lives outside the server
//! crate so that the server does not link the async WebRTC stack.
//!
//! One [`Client`] = one signaling WebSocket + one `webrtc` peer connection. It joins a room,
//! publishes synthetic audio/video (or receives only), answers server offers as the *polite*
//! side of perfect negotiation, and accounts every received packet by its probe.
//!
//! - [`signaling`]: the WebSocket protocol client.
//! - [`peer`]: the peer connection (loopback UDP, no mDNS, PLI/FIR delivered to the app).
//! - [`synth`]: synthetic VP8/H.264/Opus packets and their real-time pacing.
//! - [`probe`]: the per-packet probe (publisher, track, counter, send time, checksum).
//! - [`stats`]: receiver-side accounting.
//! - [`loadtest`]: many clients against one server, and the report (`confab-loadtest`).

pub mod loadtest;
pub mod peer;
pub mod probe;
pub mod signaling;
pub mod stats;
pub mod synth;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::peer_connection::transport::{RTCIceCandidateInit, RTCIceServer};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::RTCPeerConnectionState;

use self::peer::{LocalKind, LocalTrack, Peer, PeerError, PeerEvent, PeerOptions};
use self::signaling::{
    ClientMessage, Participant, ServerMessage, SignalError, SignalOptions, SignalReceiver,
    SignalSender,
};
use self::stats::{ReceiveStats, TrackStats};
use self::synth::{
    AudioSynth, Pacing, PayloadCodec, SendCounters, SentLog, StreamParams, VideoCodec, VideoParams,
    VideoSynth,
};
use confab::signal::chat::CHANNEL_LABEL as CHAT_LABEL;
use confab::signal::protocol::TrackKind;

/// Client failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Signaling failed.
    #[error(transparent)]
    Signal(#[from] SignalError),
    /// The peer connection failed.
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// The server refused the join.
    #[error("join rejected: {code}: {message}")]
    JoinRejected {
        /// Error code.
        code: String,
        /// Explanation.
        message: String,
    },
    /// Something did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The client's task has stopped.
    #[error("the client has stopped")]
    Stopped,
}

/// How a client behaves.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Signaling URL (`ws://127.0.0.1:8080/ws`).
    pub url: String,
    /// Room to join.
    pub room: String,
    /// Display name.
    pub name: String,
    /// Publish Opus audio.
    pub audio: bool,
    /// Publish video in this codec.
    pub video: Option<VideoCodec>,
    /// Video bitrate target, bit/s.
    pub video_bitrate_bps: u64,
    /// Video frame rate.
    pub fps: u32,
    /// Periodic keyframe interval.
    pub keyframe_interval: Duration,
    /// Publisher index written into the probes.
    pub publisher_index: u32,
    /// Offer the tracks but never send media (a test knob: the server never sees the tracks).
    pub send_media: bool,
    /// Keep every sent and received payload (for tests).
    pub record_payloads: bool,
    /// Produce [`ClientEvent`]s (disable for load tests).
    pub events: bool,
    /// IP the peer connection binds.
    pub bind_ip: IpAddr,
    /// How long to wait for `joined`.
    pub join_timeout: Duration,
    /// `ping` interval.
    pub ping_interval: Option<Duration>,
    /// Access token for servers with API keys (sent in `join`).
    pub token: Option<String>,
    /// What the video track is said to be in `offer.sources` (`None`: nothing said, a camera).
    pub video_source: Option<String>,
    /// Open the `confab` chat data channel before the first offer; its frames arrive as
    /// [`ClientEvent::ChatFrame`], [`Client::chat_send`] writes one.
    pub chat: bool,
}

impl ClientConfig {
    /// A receive-only client.
    pub fn new(url: impl Into<String>, room: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            room: room.into(),
            name: name.into(),
            audio: false,
            video: None,
            video_bitrate_bps: 500_000,
            fps: 30,
            keyframe_interval: Duration::from_secs(2),
            publisher_index: 0,
            send_media: true,
            record_payloads: false,
            events: true,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            join_timeout: Duration::from_secs(10),
            ping_interval: Some(signaling::PING_INTERVAL),
            token: None,
            video_source: None,
            chat: false,
        }
    }

    /// `offer.sources` for this client's tracks.
    fn sources(&self) -> HashMap<String, String> {
        let i = self.publisher_index;
        let mut sources = HashMap::new();
        if self.audio {
            sources.insert(format!("audio{i}"), "microphone".to_owned());
        }
        if self.video.is_some() {
            let source = self.video_source.as_deref().unwrap_or("camera");
            sources.insert(format!("video{i}"), source.to_owned());
        }
        sources
    }

    /// Publishes audio and/or video (publisher index `index`).
    pub fn publishing(mut self, index: u32, audio: bool, video: Option<VideoCodec>) -> Self {
        self.publisher_index = index;
        self.audio = audio;
        self.video = video;
        self
    }

    fn publishes(&self) -> bool {
        self.audio || self.video.is_some()
    }
}

/// Something the client saw (only produced with [`ClientConfig::events`]).
#[derive(Clone, Debug)]
pub enum ClientEvent {
    /// A server message (every one except `pong`).
    Signal(ServerMessage),
    /// The peer connection changed state.
    ConnectionState(RTCPeerConnectionState),
    /// A remote track started.
    TrackStarted {
        /// Its stream id (the publisher's participant id).
        stream_id: String,
        /// Its track id.
        track_id: String,
        /// Audio or video.
        kind: TrackKind,
    },
    /// A remote track ended.
    TrackEnded {
        /// Its track id.
        track_id: String,
    },
    /// The answer to our offer was applied.
    OfferAnswered,
    /// We answered a server offer (`rolled_back`: our own offer yielded to it).
    ServerOfferAnswered {
        /// Whether our outstanding offer was rolled back.
        rolled_back: bool,
    },
    /// A text frame on the chat data channel (`chat`, `chat-history`, `chat-rejected`).
    ChatFrame(serde_json::Value),
    /// The chat data channel opened.
    ChatOpen,
    /// A negotiation step failed.
    Failure(String),
    /// The client stopped.
    Closed(String),
}

/// One published track's counters.
#[derive(Clone, Debug)]
pub struct SentTrack {
    /// Audio or video.
    pub kind: TrackKind,
    /// Publisher index.
    pub publisher: u32,
    /// Track index (0 audio, 1 video).
    pub track: u8,
    /// Counters.
    pub counters: Arc<SendCounters>,
    /// Sent payloads (with [`ClientConfig::record_payloads`]).
    pub log: Option<SentLog>,
}

const STATE_CONNECTED: u8 = 2;

fn state_code(s: RTCPeerConnectionState) -> u8 {
    match s {
        RTCPeerConnectionState::Connecting => 1,
        RTCPeerConnectionState::Connected => STATE_CONNECTED,
        RTCPeerConnectionState::Disconnected => 3,
        RTCPeerConnectionState::Failed => 4,
        RTCPeerConnectionState::Closed => 5,
        _ => 0,
    }
}

struct Shared {
    received: ReceiveStats,
    sent: Mutex<Vec<SentTrack>>,
    state: AtomicU8,
    stopped: AtomicBool,
    events: Option<mpsc::UnboundedSender<ClientEvent>>,
    record_payloads: bool,
}

impl Shared {
    fn is_connected(&self) -> bool {
        self.state.load(Ordering::Relaxed) == STATE_CONNECTED
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    fn sent(&self) -> Vec<SentTrack> {
        self.sent.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn emit(&self, ev: ClientEvent) {
        if let Some(tx) = &self.events {
            let _ = tx.send(ev);
        }
    }
}

enum Cmd {
    Mute(String, bool),
    StopMedia,
    Renegotiate,
    ArmGlare,
    Leave,
    Close,
}

/// A joined client. Dropping it stops it (abruptly, like a closed browser tab).
pub struct Client {
    participant_id: String,
    /// Weak: the client's task owns the connection; this must not keep it alive.
    pc: std::sync::Weak<dyn webrtc::peer_connection::PeerConnection>,
    participants: Vec<Participant>,
    join_duration: Duration,
    joined_at_ns: u64,
    events: Option<mpsc::UnboundedReceiver<ClientEvent>>,
    cmds: mpsc::UnboundedSender<Cmd>,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
    chat: Option<Arc<dyn webrtc::data_channel::DataChannel>>,
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.cmds.send(Cmd::Close);
    }
}

impl Client {
    /// Connects, joins, builds the peer connection, sends the first offer and starts the
    /// client's task. Returns once `joined` has arrived and the offer is sent.
    pub async fn connect(cfg: ClientConfig) -> Result<Self, ClientError> {
        let started = Instant::now();
        let (sig_tx, mut sig_rx) = signaling::connect(
            &cfg.url,
            SignalOptions {
                ping_interval: cfg.ping_interval,
            },
        )
        .await?;
        let join = ClientMessage::Join {
            room: cfg.room.clone(),
            name: cfg.name.clone(),
            token: cfg.token.clone(),
        };
        let (participant_id, participants, ice) =
            tokio::time::timeout(cfg.join_timeout, join_room(&sig_tx, &mut sig_rx, &join))
                .await
                .map_err(|_| ClientError::Timeout("joined"))??;
        let join_duration = started.elapsed();
        let joined_at_ns = synth::unix_ns();

        let (ev_tx, ev_rx) = if cfg.events {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let shared = Arc::new(Shared {
            received: ReceiveStats::default(),
            sent: Mutex::new(Vec::new()),
            state: AtomicU8::new(0),
            stopped: AtomicBool::new(false),
            events: ev_tx,
            record_payloads: cfg.record_payloads,
        });

        let on_track_shared = shared.clone();
        let (mut peer, mut peer_events) = Peer::new(
            PeerOptions {
                bind_ip: cfg.bind_ip,
                ice_servers: ice,
            },
            Arc::new(move |track| spawn_reader(on_track_shared.clone(), track)),
        )
        .await?;

        let mut local = Vec::new();
        if cfg.audio {
            local.push(
                peer.add_local_track(
                    LocalKind::Audio,
                    &format!("pub{}", cfg.publisher_index),
                    &format!("audio{}", cfg.publisher_index),
                )
                .await?,
            );
        }
        if let Some(codec) = cfg.video {
            local.push(
                peer.add_local_track(
                    LocalKind::Video(codec),
                    &format!("pub{}", cfg.publisher_index),
                    &format!("video{}", cfg.publisher_index),
                )
                .await?,
            );
        }
        if !cfg.publishes() {
            peer.add_recvonly(RtpCodecKind::Audio).await?;
            peer.add_recvonly(RtpCodecKind::Video).await?;
        }
        let chat = if cfg.chat {
            let dc = peer
                .connection()
                .create_data_channel(CHAT_LABEL, None)
                .await
                .map_err(|e| ClientError::Peer(PeerError::from(e)))?;
            tokio::spawn(read_chat(dc.clone(), shared.clone()));
            Some(dc)
        } else {
            None
        };
        let sdp = peer
            .create_offer(Some((&mut peer_events, Duration::from_secs(2))))
            .await?;
        sig_tx.send(&ClientMessage::Offer {
            sdp,
            sources: cfg.sources(),
        })?;

        let pc = Arc::downgrade(peer.connection());
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let run = Run {
            cfg,
            shared: shared.clone(),
            peer,
            sig_tx,
            local,
            pacing_cancel: CancellationToken::new(),
            publishing: false,
            answered: false,
            connected: false,
            want_offer: false,
            glare_armed: false,
            collisions_expected: 0,
        };
        let task = tokio::spawn(run.run(sig_rx, peer_events, cmd_rx));
        Ok(Self {
            participant_id,
            pc,
            participants,
            join_duration,
            joined_at_ns,
            events: ev_rx,
            cmds: cmd_tx,
            shared,
            task: Some(task),
            chat,
        })
    }

    /// Writes one text frame on the chat data channel (any text: tests send bad ones too).
    pub async fn chat_send(&self, frame: &str) -> Result<(), ClientError> {
        let dc = self.chat.as_ref().ok_or(ClientError::Stopped)?;
        dc.send_text(frame)
            .await
            .map_err(|e| ClientError::Peer(PeerError::from(e)))
    }

    /// Sends `mute` for one of our own tracks (`audio{i}` / `video{i}`).
    pub fn send_mute(&self, track_id: &str, muted: bool) -> Result<(), ClientError> {
        let _ = self.cmds.send(Cmd::Mute(track_id.to_owned(), muted));
        Ok(())
    }

    /// Our participant id.
    pub fn participant_id(&self) -> &str {
        &self.participant_id
    }

    /// The other members at join time.
    pub fn initial_participants(&self) -> &[Participant] {
        &self.participants
    }

    /// `join` sent → `joined` received (including the WebSocket handshake).
    pub fn join_duration(&self) -> Duration {
        self.join_duration
    }

    /// UNIX ns when `joined` arrived.
    pub fn joined_at_ns(&self) -> u64 {
        self.joined_at_ns
    }

    /// Whether the peer connection is connected.
    pub fn is_connected(&self) -> bool {
        self.shared.is_connected()
    }

    /// Whether the client's task has stopped.
    pub fn is_stopped(&self) -> bool {
        self.shared.is_stopped()
    }

    /// Received-track statistics.
    pub fn received(&self) -> &ReceiveStats {
        &self.shared.received
    }

    /// Published tracks (filled once publishing starts).
    pub fn sent(&self) -> Vec<SentTrack> {
        self.shared.sent()
    }

    /// The next event (`None` when events are disabled or the client stopped).
    pub async fn next_event(&mut self) -> Option<ClientEvent> {
        self.events.as_mut()?.recv().await
    }

    /// Waits up to `limit` for an event matching `pred`, discarding others. The error names
    /// `what` for a readable test failure.
    pub async fn wait_for(
        &mut self,
        what: &'static str,
        limit: Duration,
        mut pred: impl FnMut(&ClientEvent) -> bool,
    ) -> Result<ClientEvent, ClientError> {
        let rx = self.events.as_mut().ok_or(ClientError::Stopped)?;
        tokio::time::timeout(limit, async {
            while let Some(ev) = rx.recv().await {
                if pred(&ev) {
                    return Ok(ev);
                }
            }
            Err(ClientError::Stopped)
        })
        .await
        .map_err(|_| ClientError::Timeout(what))?
    }

    /// RTP packets the WebRTC stack decrypted on our inbound streams (its `inbound-rtp`
    /// statistics), if the connection is still open. More than the sum of
    /// [`received`](Self::received) packets means the stack dropped packets before our
    /// readers got them (its per-track queue overflowed: this process was short of CPU).
    pub async fn stack_packets_received(&self) -> Option<u64> {
        let pc = self.pc.upgrade()?;
        let report = pc
            .get_stats(Instant::now(), webrtc::peer_connection::StatsSelector::None)
            .await;
        Some(
            report
                .inbound_rtp_streams()
                .map(|s| s.received_rtp_stream_stats.packets_received)
                .sum(),
        )
    }

    /// A cheap, cloneable view of this client's statistics.
    pub fn handle(&self) -> ClientHandle {
        ClientHandle {
            shared: self.shared.clone(),
        }
    }

    /// Stops sending media (the connection stays up).
    pub fn stop_media(&self) {
        let _ = self.cmds.send(Cmd::StopMedia);
    }

    /// Makes a new offer now (or as soon as the current one is answered).
    pub fn renegotiate(&self) {
        let _ = self.cmds.send(Cmd::Renegotiate);
    }

    /// Test knob: on the next server offer, first send an offer of our own (as if it had
    /// crossed the server's on the wire), then handle the server's offer politely.
    pub fn force_glare(&self) {
        let _ = self.cmds.send(Cmd::ArmGlare);
    }

    /// Sends `leave` and stops (waits for the task).
    pub async fn leave(mut self) {
        let _ = self.cmds.send(Cmd::Leave);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// Closes the socket and the peer connection without `leave` (waits for the task).
    pub async fn close(mut self) {
        let _ = self.cmds.send(Cmd::Close);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// A cloneable view of a client's statistics and state.
#[derive(Clone)]
pub struct ClientHandle {
    shared: Arc<Shared>,
}

impl ClientHandle {
    /// Received-track statistics.
    pub fn received(&self) -> &ReceiveStats {
        &self.shared.received
    }

    /// Published tracks.
    pub fn sent(&self) -> Vec<SentTrack> {
        self.shared.sent()
    }

    /// Whether the peer connection is connected.
    pub fn is_connected(&self) -> bool {
        self.shared.is_connected()
    }

    /// Whether the client's task has stopped.
    pub fn is_stopped(&self) -> bool {
        self.shared.is_stopped()
    }
}

/// Pause before re-sending a `join` the server rate-limited.
const JOIN_RETRY: Duration = Duration::from_millis(250);

/// Sends `join` and waits for `joined`, re-sending after `rate_limited` (the connection stays
/// open; the server limits joins per client IP).
async fn join_room(
    tx: &SignalSender,
    rx: &mut SignalReceiver,
    join: &ClientMessage,
) -> Result<(String, Vec<Participant>, Vec<RTCIceServer>), ClientError> {
    loop {
        tx.send(join)?;
        match wait_joined(rx).await {
            Err(ClientError::JoinRejected { code, .. }) if code == "rate_limited" => {
                tokio::time::sleep(JOIN_RETRY).await;
            }
            other => return other,
        }
    }
}

async fn wait_joined(
    rx: &mut SignalReceiver,
) -> Result<(String, Vec<Participant>, Vec<RTCIceServer>), ClientError> {
    loop {
        match rx.recv().await {
            Ok(ServerMessage::Joined {
                participant_id,
                participants,
                ice_servers,
                ..
            }) => {
                let ice = ice_servers
                    .into_iter()
                    .map(|s| RTCIceServer {
                        urls: s.urls,
                        username: s.username.unwrap_or_default(),
                        credential: s.credential.unwrap_or_default(),
                    })
                    .collect();
                return Ok((participant_id, participants, ice));
            }
            Ok(ServerMessage::Error { code, message }) => {
                return Err(ClientError::JoinRejected { code, message })
            }
            Ok(_) | Err(SignalError::Decode { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn kind_of(k: RtpCodecKind) -> TrackKind {
    match k {
        RtpCodecKind::Audio => TrackKind::Audio,
        _ => TrackKind::Video,
    }
}

/// Reads a remote track promptly (its buffer holds only 256 packets) into the statistics.
fn spawn_reader(shared: Arc<Shared>, track: Arc<dyn TrackRemote>) {
    tokio::spawn(async move {
        let stream_id = track.stream_id().await;
        let track_id = track.track_id().await;
        let kind = kind_of(track.kind().await);
        let mut codec = None;
        if let Some(ssrc) = track.ssrcs().await.first() {
            codec = track
                .codec(*ssrc)
                .await
                .and_then(|c| PayloadCodec::from_mime(&c.mime_type));
        }
        let mut t = TrackStats::new(
            stream_id.clone(),
            track_id.clone(),
            kind,
            shared.record_payloads,
        );
        t.codec = codec;
        let stats = shared.received.add(t);
        shared.emit(ClientEvent::TrackStarted {
            stream_id,
            track_id: track_id.clone(),
            kind,
        });
        while let Some(ev) = track.poll().await {
            match ev {
                TrackRemoteEvent::OnRtpPacket(pkt) => {
                    // Padding-only packets (the server's bandwidth probes) carry no media: a
                    // receiver discards them, as browsers do.
                    if pkt.payload.is_empty() {
                        continue;
                    }
                    let now = synth::unix_ns();
                    if let Ok(mut s) = stats.lock() {
                        s.on_payload(&pkt.payload, now);
                    }
                }
                TrackRemoteEvent::OnEnded => break,
                _ => {}
            }
        }
        if let Ok(mut s) = stats.lock() {
            s.ended = true;
        }
        shared.emit(ClientEvent::TrackEnded { track_id });
    });
}

/// Turns PLI/FIR on a local track into a keyframe request for its generator.
fn spawn_rtcp_reader(track: LocalTrack, counters: Arc<SendCounters>, wanted: Arc<AtomicBool>) {
    tokio::spawn(async move {
        while let Some(TrackLocalEvent::OnRtcpPacket(pkts)) = track.track.poll().await {
            let n = pkts
                .iter()
                .filter(|p| {
                    let any = p.as_any();
                    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
                })
                .count() as u64;
            if n > 0 {
                counters.keyframe_requests.fetch_add(n, Ordering::Relaxed);
                wanted.store(true, Ordering::Relaxed);
            }
        }
    });
}

/// The client's task state.
struct Run {
    cfg: ClientConfig,
    shared: Arc<Shared>,
    peer: Peer,
    sig_tx: SignalSender,
    local: Vec<LocalTrack>,
    pacing_cancel: CancellationToken,
    publishing: bool,
    answered: bool,
    connected: bool,
    want_offer: bool,
    glare_armed: bool,
    /// Offers we rolled back whose `offer_collision` error is still to come.
    collisions_expected: u32,
}

impl Run {
    async fn run(
        mut self,
        mut sig_rx: SignalReceiver,
        mut peer_events: mpsc::UnboundedReceiver<PeerEvent>,
        mut cmds: mpsc::UnboundedReceiver<Cmd>,
    ) {
        let reason = loop {
            tokio::select! {
                msg = sig_rx.recv() => match msg {
                    Ok(m) => {
                        if let Err(e) = self.on_signal(m).await {
                            tracing::debug!(%e, "negotiation step failed");
                            self.shared.emit(ClientEvent::Failure(e.to_string()));
                        }
                    }
                    Err(SignalError::Decode { text, .. }) => {
                        tracing::debug!(%text, "undecodable server message");
                    }
                    Err(e) => break format!("signaling ended: {e}"),
                },
                ev = peer_events.recv() => match ev {
                    Some(PeerEvent::ConnectionState(s)) => {
                        self.shared.state.store(state_code(s), Ordering::Relaxed);
                        self.shared.emit(ClientEvent::ConnectionState(s));
                        match s {
                            RTCPeerConnectionState::Connected => self.connected = true,
                            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                                break format!("peer connection {s}");
                            }
                            _ => {}
                        }
                    }
                    Some(PeerEvent::GatheringComplete) => {}
                    None => break "peer connection gone".to_owned(),
                },
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::StopMedia) => self.pacing_cancel.cancel(),
                    Some(Cmd::Mute(track_id, muted)) => {
                        let _ = self.sig_tx.send(&ClientMessage::Mute { track_id, muted });
                    }
                    Some(Cmd::Renegotiate) => self.want_offer = true,
                    Some(Cmd::ArmGlare) => self.glare_armed = true,
                    Some(Cmd::Leave) => {
                        let _ = self.sig_tx.send(&ClientMessage::Leave);
                        break "left".to_owned();
                    }
                    Some(Cmd::Close) | None => break "closed".to_owned(),
                },
            }
            if let Err(e) = self.after_input().await {
                self.shared.emit(ClientEvent::Failure(e.to_string()));
            }
        };
        self.pacing_cancel.cancel();
        self.sig_tx.close();
        self.peer.close().await;
        self.shared.state.store(
            state_code(RTCPeerConnectionState::Closed),
            Ordering::Relaxed,
        );
        self.shared.stopped.store(true, Ordering::Relaxed);
        self.shared.emit(ClientEvent::Closed(reason));
    }

    async fn on_signal(&mut self, msg: ServerMessage) -> Result<(), ClientError> {
        if msg != ServerMessage::Pong {
            self.shared.emit(ClientEvent::Signal(msg.clone()));
        }
        match msg {
            ServerMessage::Offer { sdp } => {
                if std::mem::take(&mut self.glare_armed) && !self.peer.has_local_offer() {
                    let ours = self.peer.create_offer(None).await?;
                    self.sig_tx.send(&ClientMessage::Offer {
                        sdp: ours,
                        sources: self.cfg.sources(),
                    })?;
                }
                let (answer, rolled_back) = self.peer.answer_offer(sdp).await?;
                self.sig_tx.send(&ClientMessage::Answer { sdp: answer })?;
                if rolled_back {
                    // Our offer was dropped by the server (it answers `offer_collision`);
                    // offer again once stable, as a browser's negotiationneeded would.
                    self.collisions_expected += 1;
                    self.want_offer = true;
                }
                self.shared
                    .emit(ClientEvent::ServerOfferAnswered { rolled_back });
            }
            ServerMessage::Answer { sdp } => {
                if self.peer.has_local_offer() {
                    self.peer.apply_answer(sdp).await?;
                    self.answered = true;
                    self.shared.emit(ClientEvent::OfferAnswered);
                } else {
                    tracing::debug!("answer without an outstanding offer ignored");
                }
            }
            ServerMessage::Candidate { candidate: Some(c) } => {
                self.peer
                    .add_candidate(RTCIceCandidateInit {
                        candidate: c.candidate,
                        sdp_mid: c.sdp_mid,
                        sdp_mline_index: c.sdp_m_line_index,
                        username_fragment: c.username_fragment,
                        url: None,
                    })
                    .await?;
            }
            ServerMessage::Error { code, .. } if code == "offer_collision" => {
                if self.collisions_expected > 0 {
                    self.collisions_expected -= 1;
                } else {
                    // The server ignored our offer; its own offer is on the way.
                    self.peer.rollback().await?;
                    self.want_offer = true;
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn after_input(&mut self) -> Result<(), ClientError> {
        if self.want_offer && !self.peer.has_local_offer() {
            self.want_offer = false;
            let sdp = self.peer.create_offer(None).await?;
            self.sig_tx.send(&ClientMessage::Offer {
                sdp,
                sources: self.cfg.sources(),
            })?;
        }
        if !self.publishing && self.answered && self.connected {
            self.publishing = true;
            self.start_publishing().await?;
        }
        Ok(())
    }

    async fn start_publishing(&mut self) -> Result<(), ClientError> {
        for lt in self.local.clone() {
            let (kind, track_idx) = match lt.kind {
                LocalKind::Audio => (TrackKind::Audio, 0u8),
                LocalKind::Video(_) => (TrackKind::Video, 1u8),
            };
            let counters = Arc::new(SendCounters::default());
            let log: Option<SentLog> = self
                .cfg
                .record_payloads
                .then(|| Arc::new(Mutex::new(Vec::new())));
            if let Ok(mut sent) = self.shared.sent.lock() {
                sent.push(SentTrack {
                    kind,
                    publisher: self.cfg.publisher_index,
                    track: track_idx,
                    counters: counters.clone(),
                    log: log.clone(),
                });
            }
            if !self.cfg.send_media {
                continue;
            }
            let stream = StreamParams {
                ssrc: lt.ssrc,
                payload_type: lt.payload_type().await?,
                publisher: self.cfg.publisher_index,
                track: track_idx,
            };
            let wanted = Arc::new(AtomicBool::new(false));
            spawn_rtcp_reader(lt.clone(), counters.clone(), wanted.clone());
            let pacing = Pacing {
                counters,
                keyframe_wanted: wanted,
                log,
                cancel: self.pacing_cancel.clone(),
            };
            match lt.kind {
                LocalKind::Audio => {
                    tokio::spawn(synth::run_audio(
                        lt.track.clone(),
                        AudioSynth::new(stream),
                        pacing,
                    ));
                }
                LocalKind::Video(codec) => {
                    let synth = VideoSynth::new(
                        stream,
                        VideoParams {
                            codec,
                            bitrate_bps: self.cfg.video_bitrate_bps,
                            fps: self.cfg.fps,
                            keyframe_interval: self.cfg.keyframe_interval,
                        },
                    );
                    tokio::spawn(synth::run_video(lt.track.clone(), synth, pacing));
                }
            }
        }
        Ok(())
    }
}

/// Forwards the chat channel's text frames as events until it closes.
async fn read_chat(dc: Arc<dyn webrtc::data_channel::DataChannel>, shared: Arc<Shared>) {
    use webrtc::data_channel::DataChannelEvent;
    while let Some(ev) = dc.poll().await {
        match ev {
            DataChannelEvent::OnOpen => shared.emit(ClientEvent::ChatOpen),
            DataChannelEvent::OnMessage(msg) => {
                match serde_json::from_slice::<serde_json::Value>(&msg.data) {
                    Ok(v) => shared.emit(ClientEvent::ChatFrame(v)),
                    Err(e) => tracing::debug!(%e, "undecodable chat frame"),
                }
            }
            DataChannelEvent::OnClose => break,
            _ => {}
        }
    }
}
