//! Logging setup and the Prometheus metrics. Every handle is resolved once (no label lookups on
//! the packet path); labels are bounded enums, never room or participant ids, so cardinality
//! stays fixed however many rooms run.

use std::io::IsTerminal;
use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Label values of `confab_ice_tcp_closed_total`.
pub const TCP_CLOSE_REASONS: [&str; 6] = ["eof", "error", "unrouted", "bad_frame", "idle", "full"];
use crate::ids::TrackKind;
use crate::signal::chat::Rejection;
use crate::signal::protocol::{ErrorCode, Quality};

/// Initialises `tracing` on stderr: `RUST_LOG` wins over `level`. ANSI colours only when stderr
/// is a terminal (and `NO_COLOR` is unset): journald, files and pipes get plain text.
pub fn init_logging(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let ansi = std::io::stderr().is_terminal() && !no_color;
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = log_subscriber(filter, format, ansi, std::io::stderr).try_init();
}

/// The `tracing` subscriber `init_logging` installs, writing to `writer`.
fn log_subscriber<W>(
    filter: EnvFilter,
    format: LogFormat,
    ansi: bool,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(builder.json().finish()),
    }
}

/// Per-direction, per-kind counter pair.
pub struct DirKind {
    /// `direction="in"`.
    pub in_: [IntCounter; 2],
    /// `direction="out"`.
    pub out: [IntCounter; 2],
}

impl DirKind {
    fn new(vec: &IntCounterVec) -> Self {
        let h = |d: &str, k: TrackKind| vec.with_label_values(&[d, k.as_str()]);
        Self {
            in_: [h("in", TrackKind::Audio), h("in", TrackKind::Video)],
            out: [h("out", TrackKind::Audio), h("out", TrackKind::Video)],
        }
    }
}

/// Packet and byte counts a room accumulates on its hot path and adds to the shared counters
/// on its housekeeping tick (plain integers: no atomic traffic per packet).
#[derive(Debug, Default)]
pub struct LocalCounters {
    /// Packets from publishers, by kind index.
    pub packets_in: [u64; 2],
    /// Payload bytes from publishers.
    pub bytes_in: [u64; 2],
    /// Packets to subscribers.
    pub packets_out: [u64; 2],
    /// Payload bytes to subscribers.
    pub bytes_out: [u64; 2],
    /// Video packets to subscribers, by simulcast layer slot (0 = lowest).
    pub video_packets_by_layer: [u64; 3],
}

impl LocalCounters {
    /// Adds everything to [`METRICS`] and resets.
    pub fn flush(&mut self) {
        let m = &*METRICS;
        for k in 0..2 {
            m.rtp_packets.in_[k].inc_by(self.packets_in[k]);
            m.rtp_bytes.in_[k].inc_by(self.bytes_in[k]);
            m.rtp_packets.out[k].inc_by(self.packets_out[k]);
            m.rtp_bytes.out[k].inc_by(self.bytes_out[k]);
        }
        for (l, n) in self.video_packets_by_layer.iter().enumerate() {
            m.video_packets_by_layer[l].inc_by(*n);
        }
        *self = Self::default();
    }
}

/// Index of a kind in the `[audio, video]` arrays.
pub fn kind_index(kind: TrackKind) -> usize {
    match kind {
        TrackKind::Audio => 0,
        TrackKind::Video => 1,
    }
}

/// Peer connection states, as the `state` label.
pub const PC_STATES: [&str; 6] = [
    "new",
    "connecting",
    "connected",
    "disconnected",
    "failed",
    "closed",
];

/// All of Confab's metrics.
pub struct Metrics {
    /// Registry `/metrics` renders.
    pub registry: Registry,
    /// Open rooms.
    pub rooms: IntGauge,
    /// Joined participants.
    pub participants: IntGauge,
    /// WHIP publishers (participants that joined over WHIP).
    pub whip_sessions: IntGauge,
    /// WHEP viewers (receive-only, not participants).
    pub whep_sessions: IntGauge,
    /// Chat messages relayed (each counted once, however many members got it).
    pub chat_messages: IntCounter,
    /// Chat messages refused, by reason (indexed like [`Rejection::ALL`]).
    pub chat_rejections: Vec<IntCounter>,
    /// Chat frames not written to a member's channel (gone, or backed up).
    pub chat_undelivered: IntCounter,
    /// Members by the server's connection-quality level (indexed like [`Quality::ALL`]).
    pub connection_quality: Vec<IntGauge>,
    /// Published tracks by kind.
    pub tracks: [IntGauge; 2],
    /// Peer connections by state (index into [`PC_STATES`]).
    pub peer_connections: Vec<IntGauge>,
    /// RTP packets by direction and kind.
    pub rtp_packets: DirKind,
    /// RTP payload bytes by direction and kind.
    pub rtp_bytes: DirKind,
    /// PLIs received from subscribers (`in`) and sent to publishers (`out`).
    pub pli_in: IntCounter,
    /// See `pli_in`.
    pub pli_out: IntCounter,
    /// FIR entries received from subscribers.
    pub fir_in: IntCounter,
    /// NACKs received from subscribers (`in`).
    pub nack_in: IntCounter,
    /// Datagram read → rewritten packets handed to the socket.
    pub forward_latency: Histogram,
    /// Drops by reason (indexed like [`DropReason::ALL`]).
    pub drops: Vec<IntCounter>,
    /// Signaling messages received, by type.
    pub signaling_messages: IntCounterVec,
    /// Signaling errors sent, by code.
    pub signaling_errors: IntCounterVec,
    /// Open WebSocket connections.
    pub ws_connections: IntGauge,
    /// `join` received → `joined` sent.
    pub join_duration: Histogram,
    /// Sessions taken back with a resume token after their socket dropped.
    pub session_resumes: IntCounter,
    /// Participants whose socket dropped, waiting for a resume (media still flowing).
    pub sessions_awaiting_resume: IntGauge,
    /// ICE restarts accepted (a client offer with new ICE credentials).
    pub ice_restarts: IntCounter,
    /// ICE-TCP connections open on the media TCP port.
    pub tcp_connections: IntGauge,
    /// ICE-TCP connections closed, by why (`eof`, `error`, `unrouted`, `bad_frame`, `idle`, `full`).
    pub tcp_closed: IntCounterVec,
    /// Frames received / sent on ICE-TCP connections.
    pub tcp_rx_frames: IntCounter,
    /// Frames sent on ICE-TCP connections.
    pub tcp_tx_frames: IntCounter,
    /// UDP datagrams received on the media port.
    pub udp_rx_datagrams: IntCounter,
    /// UDP datagrams sent on the media port.
    pub udp_tx_datagrams: IntCounter,
    /// Room tasks that panicked (contained).
    pub room_panics: IntCounter,
    /// Live tokio tasks (sampled when `/metrics` is rendered).
    pub runtime_tasks: IntGauge,
    /// Video packets forwarded, by simulcast layer slot (`q`, `h`, `f`).
    pub video_packets_by_layer: [IntCounter; 3],
    /// Layer switches completed on subscriber legs (including a leg's first layer).
    pub layer_switches: IntCounter,
    /// Video legs paused because the subscriber's bandwidth cannot carry even the lowest layer.
    pub paused_legs: IntGauge,
    /// Subscribers' bandwidth estimates, sampled at each allocation.
    pub subscriber_estimate: Histogram,
    /// Dynacast: `publish-layers` messages sent to publishers.
    pub dynacast_updates: IntCounter,
    /// Padding-only packets sent to probe subscribers' links.
    pub probe_packets: IntCounter,
    /// Packets sent again in answer to subscribers' NACKs.
    pub retransmitted_packets: IntCounter,
    /// Payload bytes of those.
    pub retransmitted_bytes: IntCounter,
    /// NACKed packets not sent again, by reason (see [`NACK_UNANSWERED`]).
    pub nack_unanswered: [IntCounter; 4],
    /// Subscribers' loss per leg, from their receiver reports (after retransmission).
    pub leg_loss: Histogram,
    /// Sender reports written on subscriber legs.
    pub sender_reports: IntCounter,
    /// Changes of a room's dominant speaker.
    pub speaker_changes: IntCounter,
    /// Cluster: Redis operations that failed (unreachable, timed out).
    pub cluster_store_errors: IntCounter,
    /// Cluster: 1 while the last heartbeat reached Redis.
    pub cluster_store_up: IntGauge,
    /// Cluster: rooms placed, by where (`local`, `remote`).
    pub cluster_placements: IntCounterVec,
    /// Cluster: signaling sockets and HTTP requests relayed to the owning node, by kind (`ws`,
    /// `http`).
    pub cluster_relayed: IntCounterVec,
    /// Cluster: relayed signaling sockets open now.
    pub cluster_relay_sessions: IntGauge,
    /// Cluster: duplicate rooms handed over to the node that owns them.
    pub cluster_room_handovers: IntCounter,
    /// The `node` label added to every sample (`cluster.node_id`, with clustering on).
    node: std::sync::OnceLock<String>,
}

/// Label values of `confab_nack_unanswered_total{reason}`: older than the cache keeps, never
/// sent on the leg or never received from the publisher, sent again just before (or three
/// times already), the leg's retransmission budget spent.
pub const NACK_UNANSWERED: [&str; 4] = ["too_old", "unknown", "repeated", "over_budget"];

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        // Registration of these static definitions cannot fail except by a programming error
        // (a duplicate name), which the unit test below catches.
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m;
                registry
                    .register(Box::new(m.clone()))
                    .expect("metric definitions are unique");
                m
            }};
        }
        let gauge = |n: &str, h: &str| IntGauge::new(n, h).expect("valid metric");
        let counter = |n: &str, h: &str| IntCounter::new(n, h).expect("valid metric");
        let gauge_vec = |n: &str, h: &str, l: &[&str]| {
            IntGaugeVec::new(Opts::new(n, h), l).expect("valid metric")
        };
        let counter_vec = |n: &str, h: &str, l: &[&str]| {
            IntCounterVec::new(Opts::new(n, h), l).expect("valid metric")
        };

        let tracks_vec = reg!(IntGaugeVec::new(
            Opts::new("confab_tracks", "Published tracks by kind"),
            &["kind"]
        )
        .expect("valid metric"));
        let pc_vec = reg!(IntGaugeVec::new(
            Opts::new("confab_peer_connections", "Peer connections by state"),
            &["state"]
        )
        .expect("valid metric"));
        let pkts = reg!(counter_vec(
            "confab_rtp_packets_total",
            "RTP packets by direction (in: from publishers, out: to subscribers) and kind",
            &["direction", "kind"]
        ));
        let bytes = reg!(counter_vec(
            "confab_rtp_bytes_total",
            "RTP payload bytes by direction and kind",
            &["direction", "kind"]
        ));
        let pli = reg!(counter_vec(
            "confab_rtcp_pli_total",
            "Picture loss indications: in = from subscribers, out = sent to publishers",
            &["direction"]
        ));
        let fir = reg!(counter_vec(
            "confab_rtcp_fir_total",
            "Full intra requests (one per FCI entry) received from subscribers (in)",
            &["direction"]
        ));
        let nack = reg!(counter_vec(
            "confab_rtcp_nack_total",
            "NACK packets received from subscribers (in)",
            &["direction"]
        ));
        let drops_vec = reg!(counter_vec(
            "confab_forward_drops_total",
            "Packets or datagrams not forwarded, by reason",
            &["reason"]
        ));
        let layer_pkts = reg!(counter_vec(
            "confab_video_layer_packets_total",
            "Video packets forwarded to subscribers, by simulcast layer (q lowest, f highest)",
            &["layer"]
        ));
        let build_info = reg!(IntGaugeVec::new(
            Opts::new("confab_build_info", "Build information"),
            &["version"]
        )
        .expect("valid metric"));
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            // Standard `process_*` metrics (CPU seconds, resident memory, open fds).
            let _ = registry.register(Box::new(pc));
        }

        Self {
            rooms: reg!(gauge("confab_rooms", "Open rooms")),
            participants: reg!(gauge("confab_participants", "Joined participants")),
            whip_sessions: reg!(gauge(
                "confab_whip_sessions",
                "WHIP publishing sessions (also counted as participants)"
            )),
            whep_sessions: reg!(gauge(
                "confab_whep_sessions",
                "WHEP viewing sessions (not counted as participants)"
            )),
            chat_messages: reg!(counter(
                "confab_chat_messages_total",
                "Chat messages relayed to a room"
            )),
            chat_rejections: {
                let v = reg!(counter_vec(
                    "confab_chat_rejected_total",
                    "Chat messages refused, by reason",
                    &["reason"]
                ));
                Rejection::ALL
                    .iter()
                    .map(|r| v.with_label_values(&[r.as_str()]))
                    .collect()
            },
            chat_undelivered: reg!(counter(
                "confab_chat_undelivered_total",
                "Chat frames not written to a member's data channel (closed or backed up)"
            )),
            connection_quality: {
                let v = reg!(gauge_vec(
                    "confab_connection_quality",
                    "Members by the server's view of their connection quality",
                    &["quality"]
                ));
                Quality::ALL
                    .iter()
                    .map(|q| v.with_label_values(&[q.as_str()]))
                    .collect()
            },
            tracks: [
                tracks_vec.with_label_values(&["audio"]),
                tracks_vec.with_label_values(&["video"]),
            ],
            peer_connections: PC_STATES
                .iter()
                .map(|s| pc_vec.with_label_values(&[s]))
                .collect(),
            rtp_packets: DirKind::new(&pkts),
            rtp_bytes: DirKind::new(&bytes),
            pli_in: pli.with_label_values(&["in"]),
            pli_out: pli.with_label_values(&["out"]),
            fir_in: fir.with_label_values(&["in"]),
            nack_in: nack.with_label_values(&["in"]),
            forward_latency: reg!(Histogram::with_opts(
                HistogramOpts::new(
                    "confab_forward_latency_seconds",
                    "Datagram read to rewritten packets handed to the socket"
                )
                .buckets(vec![
                    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                    0.01, 0.025, 0.05
                ])
            )
            .expect("valid metric")),
            drops: DropReason::ALL
                .iter()
                .map(|r| drops_vec.with_label_values(&[r.as_str()]))
                .collect(),
            signaling_messages: reg!(counter_vec(
                "confab_signaling_messages_total",
                "Signaling messages received, by type",
                &["type"]
            )),
            signaling_errors: reg!(counter_vec(
                "confab_signaling_errors_total",
                "Signaling error replies sent, by code",
                &["code"]
            )),
            ws_connections: reg!(gauge("confab_ws_connections", "Open signaling WebSockets")),
            join_duration: reg!(Histogram::with_opts(
                HistogramOpts::new(
                    "confab_join_duration_seconds",
                    "join received to joined sent"
                )
                .buckets(prometheus::exponential_buckets(0.0005, 2.0, 14).expect("valid"))
            )
            .expect("valid metric")),
            session_resumes: reg!(counter(
                "confab_session_resumes_total",
                "Sessions taken back with a resume token after their WebSocket dropped"
            )),
            sessions_awaiting_resume: reg!(gauge(
                "confab_sessions_awaiting_resume",
                "Participants whose WebSocket dropped, kept for a resume (media flowing)"
            )),
            ice_restarts: reg!(counter(
                "confab_ice_restarts_total",
                "ICE restarts accepted (client offers with new ICE credentials)"
            )),
            tcp_connections: reg!(gauge(
                "confab_ice_tcp_connections",
                "ICE-TCP connections open on the media TCP port"
            )),
            tcp_closed: {
                let v = reg!(IntCounterVec::new(
                    Opts::new(
                        "confab_ice_tcp_closed_total",
                        "ICE-TCP connections closed, by reason"
                    ),
                    &["reason"]
                )
                .expect("valid metric"));
                for r in TCP_CLOSE_REASONS {
                    v.with_label_values(&[r]);
                }
                v
            },
            tcp_rx_frames: reg!(counter(
                "confab_ice_tcp_rx_frames_total",
                "RFC 4571 frames received on ICE-TCP connections"
            )),
            tcp_tx_frames: reg!(counter(
                "confab_ice_tcp_tx_frames_total",
                "RFC 4571 frames sent on ICE-TCP connections"
            )),
            udp_rx_datagrams: reg!(counter(
                "confab_udp_rx_datagrams_total",
                "Datagrams received on the media port"
            )),
            udp_tx_datagrams: reg!(counter(
                "confab_udp_tx_datagrams_total",
                "Datagrams sent on the media port"
            )),
            runtime_tasks: reg!(gauge(
                "confab_runtime_tasks",
                "Live async tasks (sessions, rooms, sockets); flat when idle means nothing leaks"
            )),
            cluster_store_errors: reg!(counter(
                "confab_cluster_store_errors_total",
                "Redis operations that failed (unreachable or timed out)"
            )),
            cluster_store_up: reg!(gauge(
                "confab_cluster_store_up",
                "1 while the last cluster heartbeat reached Redis"
            )),
            cluster_placements: reg!(counter_vec(
                "confab_cluster_placements_total",
                "Rooms placed by this node, by where: local, remote",
                &["where"]
            )),
            cluster_relayed: reg!(counter_vec(
                "confab_cluster_relayed_total",
                "Signaling sockets (ws) and HTTP requests (http) relayed to the room's node",
                &["kind"]
            )),
            cluster_relay_sessions: reg!(gauge(
                "confab_cluster_relay_sessions",
                "Relayed signaling sockets open now"
            )),
            cluster_room_handovers: reg!(counter(
                "confab_cluster_room_handovers_total",
                "Duplicate rooms whose members were moved to the node owning the room"
            )),
            node: std::sync::OnceLock::new(),
            room_panics: reg!(counter(
                "confab_room_panics_total",
                "Room tasks that panicked and were closed"
            )),
            video_packets_by_layer: ["q", "h", "f"].map(|l| layer_pkts.with_label_values(&[l])),
            layer_switches: reg!(counter(
                "confab_layer_switches_total",
                "Simulcast layer switches completed on subscriber legs"
            )),
            paused_legs: reg!(gauge(
                "confab_paused_video_legs",
                "Video legs paused because the subscriber's estimate fits no layer"
            )),
            subscriber_estimate: reg!(Histogram::with_opts(
                HistogramOpts::new(
                    "confab_subscriber_estimate_bps",
                    "Subscribers' bandwidth estimates (bits/s), sampled at each allocation"
                )
                .buckets(vec![
                    50e3, 100e3, 200e3, 300e3, 500e3, 750e3, 1e6, 1.5e6, 2e6, 3e6, 5e6, 10e6
                ])
            )
            .expect("valid metric")),
            dynacast_updates: reg!(counter(
                "confab_dynacast_updates_total",
                "publish-layers messages sent to publishers (layers turned on or off)"
            )),
            probe_packets: reg!(counter(
                "confab_probe_packets_total",
                "Padding-only packets sent to probe subscribers' downlinks"
            )),
            retransmitted_packets: reg!(counter(
                "confab_retransmitted_packets_total",
                "Packets sent again to subscribers in answer to their NACKs (RTX or plain)"
            )),
            retransmitted_bytes: reg!(counter(
                "confab_retransmitted_bytes_total",
                "Payload bytes of the packets sent again to subscribers"
            )),
            nack_unanswered: {
                let v = reg!(counter_vec(
                    "confab_nack_unanswered_total",
                    "NACKed packets not sent again, by reason",
                    &["reason"]
                ));
                NACK_UNANSWERED.map(|r| v.with_label_values(&[r]))
            },
            leg_loss: reg!(Histogram::with_opts(
                HistogramOpts::new(
                    "confab_subscriber_leg_loss_ratio",
                    "Loss subscribers report per leg (fraction lost after retransmission, per receiver report)"
                )
                .buckets(vec![0.0, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5])
            )
            .expect("valid metric")),
            sender_reports: reg!(counter(
                "confab_sender_reports_total",
                "RTCP sender reports written on subscriber legs"
            )),
            speaker_changes: reg!(counter(
                "confab_active_speaker_changes_total",
                "Changes of a room's active speakers list"
            )),
            registry,
        }
    }

    /// Creates every bounded label value up front, so dashboards see zeros rather than gaps.
    fn init_labels(&self) {
        for t in crate::signal::protocol::CLIENT_MSG_TYPES {
            self.signaling_messages.with_label_values(&[t]);
        }
        for w in ["local", "remote"] {
            self.cluster_placements.with_label_values(&[w]);
        }
        for k in ["ws", "http"] {
            self.cluster_relayed.with_label_values(&[k]);
        }
        for c in ErrorCode::ALL {
            self.signaling_errors.with_label_values(&[c.as_str()]);
        }
    }

    /// Counts a drop.
    pub fn count_drop(&self, reason: DropReason, n: u64) {
        if let Some(i) = DropReason::ALL.iter().position(|r| *r == reason) {
            self.drops[i].inc_by(n);
        }
    }

    /// Counts a refused chat message.
    pub fn chat_rejected(&self, reason: Rejection) {
        if let Some(c) = Rejection::ALL
            .iter()
            .position(|r| *r == reason)
            .and_then(|i| self.chat_rejections.get(i))
        {
            c.inc();
        }
    }

    /// Counts an error reply.
    pub fn signaling_error(&self, code: ErrorCode) {
        self.signaling_errors
            .with_label_values(&[code.as_str()])
            .inc();
    }

    /// Adds `node="<id>"` to every sample from now on (once; later calls are ignored).
    pub fn set_node(&self, id: &str) {
        let _ = self.node.set(id.to_owned());
    }

    /// Renders the text exposition format.
    pub fn render(&self) -> String {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            self.runtime_tasks
                .set(rt.metrics().num_alive_tasks() as i64);
        }
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        let mut families = self.registry.gather();
        if let Some(node) = self.node.get() {
            for family in &mut families {
                for metric in family.mut_metric() {
                    let mut labels = metric.take_label();
                    let mut pair = prometheus::proto::LabelPair::new();
                    pair.set_name("node".to_owned());
                    pair.set_value(node.clone());
                    labels.push(pair);
                    metric.set_label(labels);
                }
            }
        }
        if let Err(e) = encoder.encode(&families, &mut buf) {
            tracing::warn!(%e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let m = Metrics::new();
    m.init_labels();
    m
});

/// Why a packet (or datagram) was not forwarded. Each is counted in
/// `confab_forward_drops_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// RTP for a track the room does not know (e.g. before its `OnTrack`).
    UnknownTrack,
    /// The subscriber leg is not negotiated yet.
    NotNegotiated,
    /// The subscriber did not negotiate the publisher's codec.
    CodecNotNegotiated,
    /// The subscriber leg waits for a keyframe.
    WaitingForKeyframe,
    /// The peer connection refused the packet.
    WriteFailed,
    /// The room's datagram queue was full.
    InboxFull,
    /// A datagram from an address/ufrag no room knows.
    UnknownPeer,
    /// The UDP socket send buffer was full.
    SocketFull,
    /// A datagram the peer connection could not process.
    BadDatagram,
    /// A track the publisher may not publish (grant or track limit).
    NotPermitted,
    /// A datagram routed to a room whose task has ended (it is closing).
    RoomClosed,
    /// RTP of a known track on an SSRC that is none of its layers (e.g. a repair stream).
    UnknownLayer,
    /// A late packet a leg cannot place (from before its stream started or its last splice).
    TooLate,
    /// A second copy of a packet already received from the publisher.
    Duplicate,
}

impl DropReason {
    /// Every reason, for pre-resolving metric handles.
    pub const ALL: [DropReason; 14] = [
        DropReason::UnknownTrack,
        DropReason::NotNegotiated,
        DropReason::CodecNotNegotiated,
        DropReason::WaitingForKeyframe,
        DropReason::WriteFailed,
        DropReason::InboxFull,
        DropReason::UnknownPeer,
        DropReason::SocketFull,
        DropReason::BadDatagram,
        DropReason::NotPermitted,
        DropReason::RoomClosed,
        DropReason::UnknownLayer,
        DropReason::TooLate,
        DropReason::Duplicate,
    ];

    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::UnknownTrack => "unknown_track",
            DropReason::NotNegotiated => "not_negotiated",
            DropReason::CodecNotNegotiated => "codec_not_negotiated",
            DropReason::WaitingForKeyframe => "waiting_for_keyframe",
            DropReason::WriteFailed => "write_failed",
            DropReason::InboxFull => "inbox_full",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::SocketFull => "socket_full",
            DropReason::BadDatagram => "bad_datagram",
            DropReason::NotPermitted => "not_permitted",
            DropReason::RoomClosed => "room_closed",
            DropReason::UnknownLayer => "unknown_layer",
            DropReason::TooLate => "too_late",
            DropReason::Duplicate => "duplicate",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_LOG_LEVEL;
    use std::sync::{Arc, Mutex};

    /// Log output captured in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `log_subscriber(level, Text, ansi)` prints for a few representative events: Confab's
    /// own, the DTLS unknown-extension notice (many per connection, from the `log` crate with its
    /// module as target), a DTLS handshake failure and an ICE state change.
    fn logged(level: &str, ansi: bool) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = log_subscriber(EnvFilter::new(level), LogFormat::Text, ansi, move || {
            writer.clone()
        });
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "confab::server", "confab listening");
            tracing::warn!(
                target: "rtc_dtls::handshake::handshake_message_client_hello",
                "Unsupported Extension Type 0 23"
            );
            tracing::warn!(
                target: "rtc_dtls::handshaker",
                "[handshake:server] current_retransmit_count 8 > maximum_retransmit_number 7"
            );
            tracing::info!(target: "rtc_ice::agent", "ICE connection state changed");
        });
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn default_filter_drops_dtls_extension_notices_but_keeps_warnings() {
        let text = logged(DEFAULT_LOG_LEVEL, false);
        assert!(text.contains("confab listening"), "{text}");
        assert!(text.contains("maximum_retransmit_number"), "{text}");
        assert!(!text.contains("Unsupported Extension Type"), "{text}");
        assert!(!text.contains("ICE connection state"), "{text}");
        // An explicit filter (log.level, RUST_LOG) can still show them.
        let text = logged("info,rtc_dtls=warn", false);
        assert!(text.contains("Unsupported Extension Type"), "{text}");
    }

    #[test]
    fn ansi_colours_only_when_asked() {
        let plain = logged("info", false);
        assert!(plain.contains("INFO"), "{plain}");
        assert!(!plain.contains('\x1b'), "{plain:?}");
        assert!(logged("info", true).contains('\x1b'));
    }

    #[test]
    fn metrics_register_and_render_with_prefix() {
        METRICS.rooms.set(0);
        METRICS.count_drop(DropReason::InboxFull, 1);
        let text = METRICS.render();
        assert!(text.contains("confab_rooms"), "{text}");
        assert!(text.contains("confab_forward_drops_total{reason=\"inbox_full\"}"));
        assert!(text.contains("confab_build_info"));
    }
}
