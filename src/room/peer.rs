//! One participant's peer connection on the sans-IO `rtc` core, plus the negotiation state the
//! core does not keep for us: the server offer in flight, batched changes, and which side made
//! the first offer. No sockets here: datagrams come in as values, writes are drained by the room.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::tcp_type::TcpType;
use rtc::interceptor::{Registry, Slot};

/// Where a subscriber's congestion controller starts, and its floor and ceiling (bits/s). The
/// start is low enough that a slow link is not flooded before the first feedback; the floor is
/// below one audio stream, so the estimate can say "not even the lowest video layer fits".
const BWE_START_BPS: f64 = 500_000.0;
const BWE_MIN_BPS: f64 = 30_000.0;
const BWE_MAX_BPS: f64 = 20_000_000.0;
/// Payload type of `audio/red` (Chromium's choice too), its blocks Opus on 111.
const RED_PAYLOAD_TYPE: u8 = 63;
use rtc::interceptor::{CongestionControlBuilder, NackGeneratorBuilder, ReceiverReportBuilder};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_simulcast_extension_headers, configure_twcc,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind, TYPE_RTCP_FB_NACK,
};
use rtc::rtp_transceiver::{
    RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::sync::mpsc;

use super::negotiation::Negotiation;
use super::presence::TrackClaims;
use super::resume::Presence;
use super::viewers::{family, media_sections, ViewerSlot};
use super::{Advertised, Role};
use crate::auth::Grant;
use crate::ids::TrackKind;
use crate::ids::{random_alnum, DisplayName, ParticipantId, PeerKey, TrackId};
use crate::media::bwe::Bwe;
use crate::media::forwarder::TrackKey;
use crate::media::probe::Prober;
use crate::media::rtcp_tap::{sfu_feedback, RtcpTap};
use crate::media::rtx_unwrap::RtxUnwrap;
use crate::media::track::{RtpMap, FORWARDED_EXTENSIONS};
use crate::signal::protocol::ServerMsg;

/// Errors from one peer connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The `rtc` core refused an operation.
    #[error("webrtc: {0}")]
    Rtc(#[from] rtc::shared::error::Error),
    /// The SDP could not be parsed or applied.
    #[error("bad sdp: {0}")]
    BadSdp(rtc::shared::error::Error),
    /// An answer arrived with no offer outstanding.
    #[error("no server offer is outstanding")]
    UnexpectedAnswer,
}

/// One participant: identity, its peer connection, negotiation and track bookkeeping. The room
/// reads its identity and drives it through methods; only this file mutates its state.
pub struct Peer {
    key: PeerKey,
    id: ParticipantId,
    name: DisplayName,
    grant: Grant,
    /// The ICE ufrag the server minted for this peer (its demux key).
    ufrag: String,
    /// Outbound signaling (to the WebSocket session).
    signal: mpsc::Sender<ServerMsg>,
    joined_at: Instant,
    /// `participant{id}` span (child of the room's), entered for this peer's signaling and
    /// connection events (not per packet).
    span: tracing::Span,
    pc: RTCPeerConnection,
    /// The address of our first UDP host candidate. UDP datagrams are fed to the ICE agent as
    /// arriving on it (not on the socket's bind address): the agent only accepts STUN on a
    /// known local candidate, and behind NAT the bind address (private, or 0.0.0.0) is not the
    /// candidate. One socket serves every advertised IP, so which one a datagram was sent to
    /// is not known; the pair's remote side is what matters for the answer.
    udp_addr: SocketAddr,
    /// Likewise the first ICE-TCP candidate, for frames from ICE-TCP connections.
    tcp_addr: Option<SocketAddr>,
    /// The offer/answer state machine.
    negotiation: Negotiation,
    /// Published tracks by the receiver's track id (as the core reports RTP).
    published: HashMap<String, TrackKey>,
    /// Receivers already turned into published tracks (`OnTrack` repeats after renegotiation).
    seen_receivers: HashSet<RTCRtpReceiverId>,
    /// Down tracks on this peer by the SSRC the peer sees (to route its PLI/FIR).
    down_by_ssrc: HashMap<u32, TrackKey>,
    /// Connection state and what waits for it.
    connection: Connection,
    /// `poll_timeout`, cached: refreshed once per wake-up and only for peers driven since
    /// (`timeout_stale`), not per packet and not for idle peers.
    next_timeout: Option<Instant>,
    /// The peer connection was driven since `next_timeout` was read.
    timeout_stale: bool,
    /// Queued in the room's dirty list (so each peer is queued once), and how it must be
    /// drained.
    queued: Option<Drain>,
    /// The latest REMB this peer sent (its own estimate of what it can receive), bits/s.
    remb_bps: Option<u64>,
    /// Probing this peer's downlink upward.
    prober: Prober,
    /// Whether a signaling socket is attached, and the token that takes the session back.
    presence: Presence,
    /// The client's current ICE ufrag (a change in an offer is an ICE restart).
    remote_ufrag: Option<String>,
    /// The SDP of the outstanding server offer (sent again on resume).
    offer_sdp: Option<String>,
    /// What it says about its own tracks (sources, self mutes).
    claims: TrackClaims,
    /// How it takes part (WebSocket member, WHIP publisher, WHEP viewer).
    role: Role,
    /// A viewer's fixed receive slots (its offer's m-lines).
    slots: Vec<ViewerSlot>,
    /// Metadata set through the room API.
    metadata: Option<String>,
}

/// How a queued peer connection is drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Only RTP was written to it since it was last drained: collect the datagrams the writes
    /// produced (`poll_transmit`), no pipeline sweep.
    Writes,
    /// Anything else touched it: events, reads, then writes (`poll_write`).
    Full,
}

/// A client offer the peer connection took.
#[derive(Debug)]
pub struct OfferApplied {
    /// The server's answer.
    pub answer: String,
    /// The offer restarted ICE: the ufrag of the previous generation (no longer valid).
    pub restarted_from: Option<String>,
}

/// The ICE ufrag of an SDP (its first `a=ice-ufrag`, session or media level; with BUNDLE every
/// section carries the same one).
fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
        .map(str::trim)
}

/// Where the media connection is, and what waits for it.
#[derive(Debug)]
struct Connection {
    state: RTCPeerConnectionState,
    /// Since when the connection has been disconnected.
    disconnected_since: Option<Instant>,
    /// The connection has reached `connected` at least once (DTLS done, SRTP keys set): only
    /// then can packets written to it leave.
    media_ready: bool,
    /// The newest answered offer generation whose legs wait for `media_ready` to open.
    answered_unopened: Option<u64>,
    /// ICE restarted since the connection was last `connected`.
    restarted: bool,
}

/// What a connection-state change means for the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionChange {
    /// Nothing to do.
    None,
    /// Media can flow now: open the legs of this answered offer generation.
    OpenAnswered(u64),
    /// Connected again after an ICE restart or a disconnection: the subscriber's decoders
    /// lost packets meanwhile and need keyframes.
    Reconnected,
    /// The connection failed or closed: remove the participant.
    Lost,
}

fn media_engine() -> Result<(MediaEngine, Registry), PeerError> {
    let mut me = MediaEngine::default();
    me.register_default_codecs()?;
    // Audio redundancy (RFC 2198): Opus packets that also carry the previous packet, offered by
    // Chromium; forwarded as such to subscribers that take RED, as its Opus primary otherwise.
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: "audio/red".to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "111/111".to_owned(),
                rtcp_feedback: Vec::new(),
            },
            payload_type: RED_PAYLOAD_TYPE,
        },
        RtpCodecKind::Audio,
    )?;
    for uri in FORWARDED_EXTENSIONS {
        let kind = if uri.contains("audio-level") {
            RtpCodecKind::Audio
        } else {
            RtpCodecKind::Video
        };
        me.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: uri.to_owned(),
            },
            kind,
            None,
        )?;
    }
    // rtc's default chain, less two parts the room does itself for subscriber legs: answering
    // NACKs (from one cache per published track instead of a copy of every packet per leg,
    // `media::cache`) and sender reports (carrying the publisher's NTP↔RTP mapping into each
    // leg's timestamps, so browsers can sync audio and video, `room::rtcp`). Kept: the NACK
    // generator and receiver reports toward publishers, the mid/rid extensions simulcast layers
    // are told apart by. The tap sits application-ward, so the chain acts on RTCP first.
    for parameter in ["", "pli"] {
        me.register_feedback(
            RTCPFeedback {
                typ: TYPE_RTCP_FB_NACK.to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    configure_simulcast_extension_headers(&mut me)?;
    let registry = Registry::new()
        .with(Slot::from(14_000), RtcpTap::new(sfu_feedback))
        // Below the NACK generator: a restored retransmission fills its hole before the
        // generator would ask for it again.
        .with(Slot::from(6_500), RtxUnwrap::interceptor())
        .with(Slot::NackGenerator, NackGeneratorBuilder::new().build())
        .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build());
    // Transport-wide congestion control both ways: feedback to publishers (their own encoder
    // rate control needs it) and, toward subscribers, sequence numbers plus a send-side
    // estimator fed by their feedback (`media::bwe`, which says why not rtc's GCC). No pacer:
    // the room's allocator keeps each subscriber's video under the estimate by picking layers,
    // and audio is never queued behind video.
    let registry = configure_twcc(registry, &mut me)?.with(
        Slot::CongestionControl,
        CongestionControlBuilder::new(Bwe::new(BWE_START_BPS, BWE_MIN_BPS, BWE_MAX_BPS)).build(),
    );
    for (uri, id) in OFFERED_EXTENSION_IDS {
        me.set_preferred_header_extension_id(uri, id)?;
    }
    Ok((me, registry))
}

/// The ids the server's offers give its header extensions until the client has named its own:
/// those Chromium gives them. A browser whose offer crosses ours rolls it back, and Chromium
/// (156) still checks our ids against that offer's: with ids of our own (lowest free first),
/// video-orientation took 2, Chromium's abs-send-time, and the offer was refused ("RTP
/// extension ID reassignment not supported"). Once the client has offered, its ids are used,
/// and an id it gave an extension we do not use is never taken for one of ours.
const OFFERED_EXTENSION_IDS: [(&str, u16); 6] = [
    (rtc::sdp::extmap::AUDIO_LEVEL_URI, 1),
    (rtc::sdp::extmap::TRANSPORT_CC_URI, 3),
    (rtc::sdp::extmap::SDES_MID_URI, 4),
    (rtc::sdp::extmap::SDES_RTP_STREAM_ID_URI, 10),
    (rtc::sdp::extmap::SDES_REPAIR_RTP_STREAM_ID_URI, 11),
    (rtc::sdp::extmap::VIDEO_ORIENTATION_URI, 13),
];

/// Opus as the media engine registers it (rtc's defaults: payload type 111, in-band FEC).
fn opus_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: "audio/opus".to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: Vec::new(),
        },
        payload_type: 111,
    }
}

/// The UDP host candidate for `addr` (the shared socket's advertised address).
pub fn host_candidate(addr: SocketAddr) -> Result<RTCIceCandidateInit, PeerError> {
    candidate(addr, "udp", TcpType::Unspecified)
}

/// A passive ICE-TCP host candidate (RFC 6544) for the TCP listener at `addr`. Its priority is
/// below the UDP candidate's (TCP's local preference), so clients use it only without UDP.
pub fn tcp_candidate(addr: SocketAddr) -> Result<RTCIceCandidateInit, PeerError> {
    candidate(addr, "tcp", TcpType::Passive)
}

fn candidate(
    addr: SocketAddr,
    network: &str,
    tcp_type: TcpType,
) -> Result<RTCIceCandidateInit, PeerError> {
    let host = CandidateHostConfig {
        base_config: CandidateConfig {
            network: network.to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        tcp_type,
    }
    .new_candidate_host()?;
    Ok(RTCIceCandidate::from(&host).to_json()?)
}

impl Peer {
    /// Builds the peer connection: ICE-lite with a server-minted ufrag, the shared socket's
    /// address as the only (host) candidate, no mDNS, and the DTLS server role when answering so
    /// the server picks the SRTP profile (AES-GCM when offered).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: PeerKey,
        id: ParticipantId,
        name: DisplayName,
        grant: Grant,
        signal: mpsc::Sender<ServerMsg>,
        advertised: &Advertised,
        now: Instant,
    ) -> Result<Self, PeerError> {
        let ufrag = random_alnum(16);
        let pwd = random_alnum(32);
        let settings = SettingEngineBuilder::new()
            .with_lite(true)
            .with_ice_credentials(ufrag.clone(), pwd)
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .with_answering_dtls_role(RTCDtlsRole::Server)
            .with_srtp_protection_profiles(vec![
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            ])
            .build();
        let (me, registry) = media_engine()?;
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(settings)
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .build(now)?;
        let udp_addr = *advertised
            .udp
            .first()
            .ok_or(rtc::shared::error::Error::ErrNoCandidatePairs)?;
        for addr in &advertised.udp {
            pc.add_local_candidate(host_candidate(*addr)?)?;
        }
        for addr in &advertised.tcp {
            pc.add_local_candidate(tcp_candidate(*addr)?)?;
        }
        // End of gathering: the host candidates are all there is.
        pc.add_local_candidate(RTCIceCandidateInit::default())?;
        Ok(Self {
            span: tracing::info_span!("participant", id = %id),
            key,
            id,
            name,
            grant,
            ufrag,
            signal,
            joined_at: now,
            pc,
            udp_addr,
            tcp_addr: advertised.tcp.first().copied(),
            negotiation: Negotiation::default(),
            published: HashMap::new(),
            seen_receivers: HashSet::new(),
            down_by_ssrc: HashMap::new(),
            connection: Connection {
                state: RTCPeerConnectionState::New,
                disconnected_since: None,
                media_ready: false,
                answered_unopened: None,
                restarted: false,
            },
            next_timeout: None,
            timeout_stale: true,
            queued: None,
            remb_bps: None,
            prober: Prober::default(),
            presence: Presence::default(),
            remote_ufrag: None,
            offer_sdp: None,
            claims: TrackClaims::default(),
            role: Role::Member,
            slots: Vec::new(),
            metadata: None,
        })
    }

    /// The same peer, taking part as `role`.
    pub fn with_role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// What it said about its own tracks.
    pub fn claims(&self) -> &TrackClaims {
        &self.claims
    }

    /// What it says about its own tracks, to update.
    pub fn claims_mut(&mut self) -> &mut TrackClaims {
        &mut self.claims
    }

    /// Renames it (room API).
    pub fn set_name(&mut self, name: DisplayName) {
        self.name = name;
    }

    /// Metadata set through the room API.
    pub fn metadata(&self) -> Option<&str> {
        self.metadata.as_deref()
    }

    /// Sets (or clears) its metadata.
    pub fn set_metadata(&mut self, metadata: Option<String>) {
        self.metadata = metadata;
    }

    /// How it takes part.
    pub fn role(&self) -> &Role {
        &self.role
    }

    /// A viewer's slots.
    pub fn slots(&self) -> &[ViewerSlot] {
        &self.slots
    }

    /// A viewer's slots, to point.
    pub fn slots_mut(&mut self) -> &mut [ViewerSlot] {
        &mut self.slots
    }

    /// Routes the viewer's RTCP about `ssrc` (its PLIs, NACKs) to `track` (`None`: nothing).
    pub fn route_down_track(&mut self, ssrc: u32, track: Option<TrackKey>) {
        match track {
            Some(t) => self.down_by_ssrc.insert(ssrc, t),
            None => self.down_by_ssrc.remove(&ssrc),
        };
    }

    /// The connection has reached `connected` (media can flow).
    pub fn media_ready(&self) -> bool {
        self.connection.media_ready
    }

    /// Joined longer than `limit` ago and never connected.
    pub fn never_connected_for(&self, now: Instant, limit: Duration) -> bool {
        !self.connection.media_ready && now.saturating_duration_since(self.joined_at) > limit
    }

    /// A viewer's first offer: one send-only track (slot) on each m-line it receives on. The
    /// codec is left to the answer (the remote description set the transceivers' codecs).
    fn add_slot_tracks(&mut self, offer: &str) -> Result<(), PeerError> {
        for (kind, receives) in media_sections(offer) {
            if !receives {
                continue;
            }
            let ssrc: u32 = rand::random();
            let rtp_kind = match kind {
                TrackKind::Audio => RtpCodecKind::Audio,
                TrackKind::Video => RtpCodecKind::Video,
            };
            let n = self.slots.len();
            let track = MediaStreamTrack::new(
                format!("confab-{}", self.id),
                format!("slot{n}"),
                format!("slot{n}"),
                rtp_kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    ..Default::default()
                }],
            );
            let sender = self.pc.add_track(track)?;
            self.slots.push(ViewerSlot {
                kind,
                sender,
                ssrc,
                codecs: Vec::new(),
                clock_rate: 0,
                bound: None,
                parked: None,
            });
        }
        Ok(())
    }

    /// After the answer: which codecs each slot can send (its media codecs, not RTX/FEC).
    fn learn_slot_codecs(&mut self) {
        for i in 0..self.slots.len() {
            let sender = self.slots[i].sender;
            let Some(mut s) = self.pc.rtp_sender(sender) else {
                continue;
            };
            let media: Vec<(String, u32)> = s
                .get_parameters()
                .rtp_parameters
                .codecs
                .iter()
                .map(|c| &c.rtp_codec)
                .filter(|c| {
                    let m = c.mime_type.to_ascii_lowercase();
                    !m.ends_with("/rtx") && !m.ends_with("/ulpfec") && !m.ends_with("/flexfec-03")
                })
                .map(|c| (family(&c.mime_type), c.clock_rate))
                .collect();
            let slot = &mut self.slots[i];
            slot.clock_rate = media.first().map_or(0, |(_, rate)| *rate);
            slot.codecs.clear();
            for (f, _) in media {
                if !slot.codecs.contains(&f) {
                    slot.codecs.push(f);
                }
            }
        }
    }

    /// The probe scheduler for this peer's downlink.
    pub fn prober_mut(&mut self) -> &mut Prober {
        &mut self.prober
    }

    /// When this peer's probe next needs packets sent.
    pub fn probe_deadline(&self, now: Instant) -> Option<Instant> {
        self.prober.next_deadline(now)
    }

    /// Records a REMB from this peer.
    pub fn set_remb(&mut self, bps: u64) {
        self.remb_bps = Some(bps);
    }

    /// What this peer can receive, bits/s: the send-side estimate from its transport-wide
    /// feedback, else its own REMB, else (no feedback yet, or a client that gives none) the
    /// estimator's starting rate.
    pub fn estimate(&self) -> u64 {
        self.pc
            .target_bitrate()
            .map(|b| b as u64)
            .or(self.remb_bps)
            .unwrap_or(BWE_START_BPS as u64)
    }

    /// Room-local key (the demux tags datagrams with it).
    pub fn key(&self) -> PeerKey {
        self.key
    }

    /// Public id.
    pub fn id(&self) -> &ParticipantId {
        &self.id
    }

    /// Display name.
    pub fn name(&self) -> &DisplayName {
        &self.name
    }

    /// What it may do; its identity.
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// The ICE ufrag the server minted (its demux key).
    pub fn ufrag(&self) -> &str {
        &self.ufrag
    }

    /// When the join was processed.
    pub fn joined_at(&self) -> Instant {
        self.joined_at
    }

    /// The `participant{id}` span.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The offer/answer state.
    pub fn negotiation(&self) -> &Negotiation {
        &self.negotiation
    }

    /// Current connection state.
    pub fn state(&self) -> RTCPeerConnectionState {
        self.connection.state
    }

    /// Records a connection-state change; says what the room must do about it.
    pub fn on_state(&mut self, state: RTCPeerConnectionState, now: Instant) -> ConnectionChange {
        let c = &mut self.connection;
        c.state = state;
        match state {
            RTCPeerConnectionState::Disconnected => {
                c.disconnected_since.get_or_insert(now);
                ConnectionChange::None
            }
            RTCPeerConnectionState::Connected => {
                let resumed = c.media_ready
                    && (std::mem::take(&mut c.restarted) || c.disconnected_since.is_some());
                c.disconnected_since = None;
                c.media_ready = true;
                match c.answered_unopened.take() {
                    Some(generation) => ConnectionChange::OpenAnswered(generation),
                    None if resumed => ConnectionChange::Reconnected,
                    None => ConnectionChange::None,
                }
            }
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                ConnectionChange::Lost
            }
            _ => ConnectionChange::None,
        }
    }

    /// Records an ICE connection-state change; `true` when ICE is connected again after a
    /// restart (the peer connection itself may never have left `connected`: DTLS carries on),
    /// so the room asks for keyframes for this subscriber.
    pub fn on_ice_state(&mut self, state: RTCIceConnectionState) -> bool {
        let c = &mut self.connection;
        matches!(
            state,
            RTCIceConnectionState::Connected | RTCIceConnectionState::Completed
        ) && c.media_ready
            && std::mem::take(&mut c.restarted)
    }

    /// Whether the connection has been disconnected for longer than `limit`.
    pub fn disconnected_longer_than(&self, now: Instant, limit: Duration) -> bool {
        self.connection
            .disconnected_since
            .is_some_and(|since| now.saturating_duration_since(since) > limit)
    }

    /// The answer to offer `generation` arrived: returns `true` when its legs can open now,
    /// `false` when they wait for the connection (packets written before DTLS has set the SRTP
    /// keys are dropped inside the peer connection, keyframe included, after the keyframe gate
    /// has opened: the subscriber would then wait for the next keyframe).
    pub fn answered(&mut self, generation: u64) -> bool {
        if self.connection.media_ready {
            return true;
        }
        self.connection.answered_unopened = Some(generation);
        false
    }

    /// The published track of a receiver's track id.
    pub fn published(&self, track_id: &str) -> Option<TrackKey> {
        self.published.get(track_id).copied()
    }

    /// Number of tracks this peer publishes.
    pub fn published_count(&self) -> usize {
        self.published.len()
    }

    /// Records a newly published track; `false` if this receiver was seen before (`OnTrack`
    /// repeats after every renegotiation).
    pub fn first_sight(&mut self, receiver: RTCRtpReceiverId) -> bool {
        self.seen_receivers.insert(receiver)
    }

    /// Records that `track_id` (the receiver's) is published as `tk`.
    pub fn add_published(&mut self, track_id: String, tk: TrackKey) {
        self.published.insert(track_id, tk);
    }

    /// Forgets a published track.
    pub fn remove_published(&mut self, tk: TrackKey) {
        self.published.retain(|_, v| *v != tk);
    }

    /// The up track of one of this peer's down tracks, by the SSRC this peer sees.
    pub fn down_track_of(&self, ssrc: u32) -> Option<TrackKey> {
        self.down_by_ssrc.get(&ssrc).copied()
    }

    /// Queues this peer to be drained as `how` (a full drain wins over a writes-only one);
    /// `false` if it was queued already.
    pub fn mark_queued(&mut self, how: Drain) -> bool {
        match self.queued {
            None => {
                self.queued = Some(how);
                true
            }
            Some(_) if how == Drain::Full => {
                self.queued = Some(Drain::Full);
                false
            }
            Some(_) => false,
        }
    }

    /// Starts draining: it is no longer queued; returns how to drain it. After a full drain
    /// its timer must be read again.
    pub fn start_drive(&mut self) -> Drain {
        let how = self.queued.take().unwrap_or(Drain::Full);
        if how == Drain::Full {
            self.timeout_stale = true;
        }
        how
    }

    /// The peer connection's next deadline (read again only after it was driven).
    pub fn next_timeout(&mut self) -> Option<Instant> {
        if self.timeout_stale {
            self.next_timeout = self.pc.poll_timeout();
            self.timeout_stale = false;
        }
        self.next_timeout
    }

    /// Runs the peer connection's timers if due; `true` if they ran (then drive the peer).
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        if self.next_timeout.is_none_or(|t| t > now) {
            return false;
        }
        if let Err(e) = self.pc.handle_timeout(now) {
            tracing::debug!(%e, participant = %self.id, "handle_timeout failed");
        }
        self.timeout_stale = true;
        true
    }

    /// The peer connection, for draining `poll_*`.
    pub fn pc(&mut self) -> &mut RTCPeerConnection {
        &mut self.pc
    }

    /// Feeds one datagram from the shared UDP socket, or one frame from an ICE-TCP connection
    /// (`tcp`).
    pub fn handle_datagram(
        &mut self,
        from: SocketAddr,
        data: BytesMut,
        tcp: bool,
        now: Instant,
    ) -> Result<(), PeerError> {
        let (local_addr, transport_protocol) = match (tcp, self.tcp_addr) {
            (true, Some(addr)) => (addr, TransportProtocol::TCP),
            // ICE-TCP frames for a peer built without a TCP candidate: the agent refuses them.
            (true, None) => (self.udp_addr, TransportProtocol::TCP),
            (false, _) => (self.udp_addr, TransportProtocol::UDP),
        };
        self.pc.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr,
                peer_addr: from,
                ecn: None,
                transport_protocol,
            },
            message: data,
        })?;
        Ok(())
    }

    /// Applies the client's offer and returns the server's answer SDP. An offer with new ICE
    /// credentials is an ICE restart (the client's network changed, or its connection failed):
    /// the server then answers with a new ufrag of its own — the old one is returned in
    /// [`OfferApplied::restarted_from`] for the room to unroute — and DTLS, SRTP, tracks and
    /// subscriptions carry on over whatever pair the restarted checks select.
    pub fn apply_offer(&mut self, sdp: String, now: Instant) -> Result<OfferApplied, PeerError> {
        let remote_ufrag = ice_ufrag(&sdp).map(str::to_owned);
        let restart = self.remote_ufrag.is_some() && remote_ufrag != self.remote_ufrag;
        let new_ufrag = restart.then(|| random_alnum(16));
        if let Some(ufrag) = &new_ufrag {
            self.pc
                .set_ice_restart_credentials(ufrag.clone(), random_alnum(32));
        }
        let viewer_first = self.role.is_viewer() && self.remote_ufrag.is_none();
        let sections = viewer_first.then(|| sdp.clone());
        let offer = RTCSessionDescription::offer(sdp).map_err(PeerError::BadSdp)?;
        self.pc
            .set_remote_description(now, offer)
            .map_err(PeerError::BadSdp)?;
        if let Some(offer) = sections {
            self.add_slot_tracks(&offer)?;
        }
        self.remote_ufrag = remote_ufrag;
        let restarted_from = new_ufrag.map(|u| {
            self.connection.restarted = true;
            std::mem::replace(&mut self.ufrag, u)
        });
        let answer = self.pc.create_answer(None)?;
        self.pc.set_local_description(now, answer)?;
        if viewer_first {
            self.learn_slot_codecs();
        }
        self.negotiation.client_offered();
        let local = self
            .pc
            .local_description()
            .ok_or(rtc::shared::error::Error::ErrNoRemoteDescription)?;
        Ok(OfferApplied {
            answer: local.sdp,
            restarted_from,
        })
    }

    /// Creates and applies a server offer; returns its generation and SDP.
    pub fn create_offer(&mut self, now: Instant) -> Result<(u64, String), PeerError> {
        let offer = self.pc.create_offer(None)?;
        self.pc.set_local_description(now, offer)?;
        let sdp = self
            .pc
            .local_description()
            .ok_or(rtc::shared::error::Error::ErrNoRemoteDescription)?
            .sdp;
        self.offer_sdp = Some(sdp.clone());
        Ok((self.negotiation.offer_sent(now), sdp))
    }

    /// Applies the client's answer to the outstanding server offer; returns that offer's
    /// generation.
    pub fn apply_answer(&mut self, sdp: String, now: Instant) -> Result<u64, PeerError> {
        let Some(generation) = self.negotiation.in_flight() else {
            return Err(PeerError::UnexpectedAnswer);
        };
        let answer = RTCSessionDescription::answer(sdp).map_err(PeerError::BadSdp)?;
        self.pc
            .set_remote_description(now, answer)
            .map_err(PeerError::BadSdp)?;
        self.negotiation.answer_applied();
        Ok(generation)
    }

    /// Adds a trickled remote candidate.
    pub fn add_remote_candidate(&mut self, init: RTCIceCandidateInit) -> Result<(), PeerError> {
        self.pc.add_remote_candidate(init)?;
        Ok(())
    }

    /// Adds a send-only leg for another participant's track `down_of`; returns its sender and
    /// SSRC.
    /// The track's `msid` is (publisher id, track id) so the browser can tell whose it is.
    pub fn add_down_track(
        &mut self,
        publisher: &ParticipantId,
        track_id: &TrackId,
        kind: TrackKind,
        codec: RTCRtpCodec,
        down_of: TrackKey,
    ) -> Result<(RTCRtpSenderId, u32), PeerError> {
        let ssrc: u32 = rand::random();
        let rtp_kind = match kind {
            TrackKind::Audio => RtpCodecKind::Audio,
            TrackKind::Video => RtpCodecKind::Video,
        };
        let mut is_red = codec.mime_type.eq_ignore_ascii_case("audio/red");
        let codec_params = RTCRtpCodecParameters {
            rtp_codec: codec.clone(),
            payload_type: RED_PAYLOAD_TYPE,
        };
        let track = |codec: RTCRtpCodec| {
            MediaStreamTrack::new(
                publisher.as_str().to_owned(),
                track_id.as_str().to_owned(),
                format!("{publisher}/{track_id}"),
                rtp_kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    codec,
                    ..Default::default()
                }],
            )
        };
        let init = || {
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![],
                send_encodings: vec![],
            })
        };
        let transceiver = match self.pc.add_transceiver_from_track(track(codec), init()) {
            Ok(t) => t,
            // A subscriber whose offer had no RED (Firefox) cannot take a RED track at all: it
            // gets the Opus primary (the leg strips the redundancy, `media::codec::red_primary`).
            Err(e) if is_red => {
                tracing::debug!(%e, "subscriber takes no RED: plain Opus leg");
                is_red = false;
                self.pc
                    .add_transceiver_from_track(track(opus_codec().rtp_codec), init())?
            }
            Err(e) => return Err(e.into()),
        };
        if is_red {
            // RED alone would be refused by a subscriber (its blocks need their primary codec
            // negotiated too): offer RED, then the media engine's other audio codecs.
            let prefs = vec![codec_params, opus_codec()];
            if let Some(mut t) = self.pc.rtp_transceiver(transceiver) {
                if let Err(e) = t.set_codec_preferences(prefs) {
                    tracing::debug!(%e, "RED leg codec preferences refused");
                }
            }
        }
        self.negotiation.changed();
        self.down_by_ssrc.insert(ssrc, down_of);
        Ok((RTCRtpSenderId::from(transceiver), ssrc))
    }

    /// Removes a leg (its m-line becomes inactive in the next offer).
    pub fn remove_down_track(&mut self, sender: RTCRtpSenderId, ssrc: u32) {
        self.down_by_ssrc.remove(&ssrc);
        if let Err(e) = self.pc.remove_track(sender) {
            tracing::debug!(%e, "remove_track failed");
        }
        self.negotiation.changed();
    }

    /// The negotiated tables of one of this peer's senders.
    pub fn sender_rtp_map(&mut self, sender: RTCRtpSenderId) -> Option<RtpMap> {
        let mut s = self.pc.rtp_sender(sender)?;
        let p = s.get_parameters();
        Some(RtpMap::new(
            &p.rtp_parameters.codecs,
            &p.rtp_parameters.header_extensions,
        ))
    }

    /// The RTX SSRC of one of this peer's senders, when RTX is negotiated for it.
    pub fn sender_rtx_ssrc(&mut self, sender: RTCRtpSenderId) -> Option<u32> {
        let mut s = self.pc.rtp_sender(sender)?;
        let p = s.get_parameters();
        let has_rtx = p
            .rtp_parameters
            .codecs
            .iter()
            .any(|c| c.rtp_codec.mime_type.to_ascii_lowercase().ends_with("/rtx"));
        p.encodings
            .first()?
            .rtp_coding_parameters
            .rtx
            .as_ref()
            .filter(|_| has_rtx)
            .map(|r| r.ssrc)
    }

    /// Writes RTCP on one of this peer's senders (its own reports).
    pub fn write_sender_rtcp(
        &mut self,
        sender: RTCRtpSenderId,
        packets: Vec<Box<dyn rtc::rtcp::Packet>>,
        now: Instant,
    ) {
        if let Some(mut s) = self.pc.rtp_sender(sender) {
            if let Err(e) = s.write_rtcp(now, packets) {
                tracing::debug!(%e, "sender RTCP write failed");
            }
        }
    }

    /// The negotiated tables of one of this peer's receivers.
    pub fn receiver_rtp_map(&mut self, receiver: RTCRtpReceiverId) -> Option<RtpMap> {
        let mut r = self.pc.rtp_receiver(receiver)?;
        let p = r.get_parameters();
        Some(RtpMap::new(
            &p.rtp_parameters.codecs,
            &p.rtp_parameters.header_extensions,
        ))
    }

    /// Asks this peer (a publisher) for a keyframe on one of its tracks.
    pub fn send_pli(&mut self, receiver: RTCRtpReceiverId, media_ssrc: u32, now: Instant) {
        let Some(mut r) = self.pc.rtp_receiver(receiver) else {
            return;
        };
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc,
        };
        if let Err(e) = r.write_rtcp(now, vec![Box::new(pli)]) {
            tracing::debug!(%e, "PLI write failed");
        }
    }

    /// Sends a signaling message; `false` when the session cannot take it (gone or too slow),
    /// in which case the room removes the participant.
    /// While the socket is away (closed, not yet resumed) messages are dropped and `true` is
    /// returned: a resume sends the room as it is then, and the grace period ends the wait.
    pub fn send(&self, msg: ServerMsg) -> bool {
        match self.signal.try_send(msg) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => true,
            Err(mpsc::error::TrySendError::Full(_)) => false,
        }
    }

    /// Whether the signaling session is gone (closed its end of the channel).
    pub fn signal_closed(&self) -> bool {
        self.signal.is_closed()
    }

    /// Attaches a new signaling session (resume).
    pub fn set_signal(&mut self, signal: mpsc::Sender<ServerMsg>) {
        self.signal = signal;
    }

    /// Signaling presence and resume token.
    pub fn presence(&self) -> &Presence {
        &self.presence
    }

    /// Signaling presence and resume token, to change.
    pub fn presence_mut(&mut self) -> &mut Presence {
        &mut self.presence
    }

    /// The outstanding server offer's SDP, to send again; its answer timeout restarts at `now`.
    pub fn resend_offer(&mut self, now: Instant) -> Option<String> {
        self.negotiation.in_flight()?;
        self.negotiation.offer_resent(now);
        self.offer_sdp.clone()
    }

    /// Closes the peer connection.
    pub fn close(&mut self) {
        if let Err(e) = self.pc.close() {
            tracing::debug!(%e, "close failed");
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;

    fn peer() -> Peer {
        let (tx, _rx) = mpsc::channel(8);
        let advertised = Advertised::new(
            &[
                "127.0.0.1".parse().expect("ip"),
                "10.0.0.7".parse().expect("ip"),
            ],
            50000,
            Some(50001),
        );
        Peer::new(
            PeerKey(1),
            ParticipantId::mint(),
            DisplayName::parse("fuzz").expect("valid"),
            Grant::open(),
            tx,
            &advertised,
            Instant::now(),
        )
        .expect("peer")
    }

    /// A realistic offer (audio + video, sendonly) from an `rtc` client.
    fn seed_offer() -> String {
        let (me, registry) = media_engine().expect("engine");
        seed_offer_from(me, registry)
    }

    /// The same from a client with only rtc's default codecs (no `audio/red`, as Firefox).
    fn seed_offer_without_red() -> String {
        let mut me = MediaEngine::default();
        me.register_default_codecs().expect("codecs");
        seed_offer_from(me, Registry::new())
    }

    fn seed_offer_from(me: MediaEngine, registry: Registry) -> String {
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(
                SettingEngineBuilder::new()
                    .with_multicast_dns_mode(MulticastDnsMode::Disabled)
                    .build(),
            )
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .build(Instant::now())
            .expect("pc");
        for (kind, mime, rate, ch) in [
            (RtpCodecKind::Audio, "audio/opus", 48000, 2),
            (RtpCodecKind::Video, "video/VP8", 90000, 0),
        ] {
            let track = MediaStreamTrack::new(
                "s".into(),
                mime.into(),
                mime.into(),
                kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(rand::random()),
                        ..Default::default()
                    },
                    codec: RTCRtpCodec {
                        mime_type: mime.into(),
                        clock_rate: rate,
                        channels: ch,
                        ..Default::default()
                    },
                    ..Default::default()
                }],
            );
            pc.add_transceiver_from_track(
                track,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .expect("transceiver");
        }
        let offer = pc.create_offer(None).expect("offer");
        offer.sdp
    }

    /// A Chromium offer (as 156 makes them, trimmed): a data channel, and an audio m-line with
    /// `audio` as its extension lines when given.
    fn chromium_offer(audio: Option<&str>) -> String {
        let session = "a=ice-ufrag:xLfX\r\na=ice-pwd:tZ5dZOgZvaQdHnaicGQKOyVs\r\n\
            a=fingerprint:sha-256 74:03:09:8E:42:3C:81:A5:78:F5:FD:FA:FA:2E:AE:CC:AD:6D:27:85:\
            BC:B2:D8:E1:86:79:C8:56:ED:EB:27:03\r\na=setup:actpass\r\n";
        let mut sdp = format!(
            "v=0\r\no=- 438069335978319993 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
             a=group:BUNDLE 0{}\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS\r\n\
             m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n\
             {session}a=mid:0\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n",
            if audio.is_some() { " 1" } else { "" }
        );
        if let Some(extmaps) = audio {
            sdp.push_str(&format!(
                "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n{session}a=mid:1\r\n\
                 {extmaps}a=sendonly\r\na=msid:s a1\r\na=rtcp-mux\r\n\
                 a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
                 a=ssrc:3617964102 cname:c\r\n"
            ));
        }
        sdp
    }

    /// Every `a=extmap` of `sdp` as (id, URI), and whether some id names two URIs.
    fn extmaps(sdp: &str) -> (Vec<(u16, String)>, bool) {
        let mut seen: Vec<(u16, String)> = Vec::new();
        let mut clash = false;
        for rest in sdp.lines().filter_map(|l| l.strip_prefix("a=extmap:")) {
            let Some((id, uri)) = rest.split_once(' ') else {
                continue;
            };
            let id: u16 = id.parse().expect("extmap id");
            clash |= seen.iter().any(|(i, u)| *i == id && u != uri);
            if !seen.iter().any(|(i, u)| *i == id && u == uri) {
                seen.push((id, uri.to_owned()));
            }
        }
        (seen, clash)
    }

    fn offer_with_legs(p: &mut Peer) -> String {
        for (kind, codec) in [
            (TrackKind::Audio, opus_codec().rtp_codec),
            (
                TrackKind::Video,
                RTCRtpCodec {
                    mime_type: "video/VP8".into(),
                    clock_rate: 90_000,
                    ..Default::default()
                },
            ),
        ] {
            p.add_down_track(
                &ParticipantId::mint(),
                &TrackId::mint(),
                kind,
                codec,
                TrackKey(1),
            )
            .expect("leg");
        }
        p.create_offer(Instant::now()).expect("offer").1
    }

    #[test]
    fn a_server_offer_before_the_client_named_its_ids_uses_chromiums() {
        // The client joined before its camera was ready: its offer had a data channel only.
        // Its next offer (camera, microphone) may cross ours; Chromium checks our ids against
        // it, so ours must be the ones it gives the same extensions.
        let mut p = peer();
        p.apply_offer(chromium_offer(None), Instant::now())
            .expect("answer");
        let (ids, clash) = extmaps(&offer_with_legs(&mut p));
        assert!(!clash, "{ids:?}");
        for (uri, id) in OFFERED_EXTENSION_IDS {
            if uri.contains("stream-id") || uri.contains("sdes:mid") {
                continue; // the client's rid/mid, not on the server's legs
            }
            assert!(
                ids.contains(&(id, uri.to_owned())),
                "{uri} not {id}: {ids:?}"
            );
        }
    }

    #[test]
    fn a_server_offer_never_reuses_an_id_the_client_gave_another_extension() {
        // Audio negotiated with ids of the client's own (13 is toffset here, an extension the
        // server does not use; 2 is abs-send-time), video not yet: the video leg's
        // orientation must take neither, as the client's audio m-line (one BUNDLE transport)
        // uses both.
        let audio = "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
            a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
            a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
            a=extmap:13 urn:ietf:params:rtp-hdrext:toffset\r\n";
        let mut p = peer();
        p.apply_offer(chromium_offer(Some(audio)), Instant::now())
            .expect("answer");
        let (ids, clash) = extmaps(&offer_with_legs(&mut p));
        assert!(!clash, "{ids:?}");
        let orientation = ids
            .iter()
            .find(|(_, u)| u == rtc::sdp::extmap::VIDEO_ORIENTATION_URI)
            .map(|(i, _)| *i)
            .expect("video leg offers orientation");
        assert!(![1, 2, 3, 13].contains(&orientation), "{ids:?}");
        assert!(
            ids.contains(&(1, rtc::sdp::extmap::AUDIO_LEVEL_URI.to_owned())),
            "{ids:?}"
        );
    }

    #[test]
    fn a_valid_offer_is_answered() {
        let mut p = peer();
        let applied = p.apply_offer(seed_offer(), Instant::now()).expect("answer");
        let answer = applied.answer;
        assert!(answer.contains("a=ice-lite"), "{answer}");
        assert!(answer.contains("127.0.0.1 50000 typ host"), "{answer}");
        assert!(applied.restarted_from.is_none());
    }

    #[test]
    fn every_advertised_address_is_a_candidate_and_tcp_is_passive() {
        let mut p = peer();
        let answer = p
            .apply_offer(seed_offer(), Instant::now())
            .expect("answer")
            .answer;
        assert!(
            answer.contains(" 1 udp 2130706431 127.0.0.1 50000 typ host"),
            "{answer}"
        );
        assert!(answer.contains("10.0.0.7 50000 typ host"), "{answer}");
        let tcp: Vec<&str> = answer.lines().filter(|l| l.contains(" 1 tcp ")).collect();
        assert_eq!(tcp.len(), 2, "{answer}");
        for l in tcp {
            assert!(l.contains("tcptype passive"), "{l}");
        }
        // UDP ranks above TCP (clients use ICE-TCP only without UDP).
        let priority = |needle: &str| -> u64 {
            let line = answer.lines().find(|l| l.contains(needle)).expect(needle);
            line.split_whitespace()
                .nth(3)
                .and_then(|p| p.parse().ok())
                .expect("priority")
        };
        assert!(priority("127.0.0.1 50000 typ host") > priority("127.0.0.1 50001 typ host"));
    }

    #[test]
    fn a_subscriber_that_offered_no_red_gets_an_opus_leg_for_a_red_track() {
        let mut p = peer();
        let offer = seed_offer_without_red();
        assert!(!offer.contains("red/48000"), "{offer}");
        p.apply_offer(offer, Instant::now()).expect("answer");
        let red = RTCRtpCodec {
            mime_type: "audio/red".into(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "111/111".into(),
            rtcp_feedback: vec![],
        };
        let (sender, _) = p
            .add_down_track(
                &ParticipantId::mint(),
                &TrackId::mint(),
                TrackKind::Audio,
                red,
                TrackKey(1),
            )
            .expect("a RED track still gets a leg");
        assert!(p.sender_rtp_map(sender).is_some(), "the leg has a sender");
    }

    #[test]
    fn an_offer_with_new_ice_credentials_restarts_ice_with_a_new_ufrag() {
        let mut p = peer();
        let first = seed_offer();
        p.apply_offer(first.clone(), Instant::now())
            .expect("answer");
        let old = p.ufrag().to_owned();
        // The same offer again (a renegotiation): no restart.
        let again = p
            .apply_offer(first.clone(), Instant::now())
            .expect("answer");
        assert!(again.restarted_from.is_none());
        assert_eq!(p.ufrag(), old);
        // New credentials: a restart, answered with a new ufrag of ours.
        let remote = ice_ufrag(&first).expect("ufrag").to_owned();
        let restarted = first.replace(&format!("a=ice-ufrag:{remote}"), "a=ice-ufrag:newfrag1");
        let pwd_line = restarted
            .lines()
            .find(|l| l.starts_with("a=ice-pwd:"))
            .expect("pwd")
            .to_owned();
        let restarted = restarted.replace(&pwd_line, "a=ice-pwd:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        let applied = p.apply_offer(restarted, Instant::now()).expect("answer");
        assert_eq!(applied.restarted_from.as_deref(), Some(old.as_str()));
        assert_ne!(p.ufrag(), old);
        assert_eq!(
            ice_ufrag(&applied.answer),
            Some(p.ufrag()),
            "{}",
            applied.answer
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Mutated SDP (lines dropped, duplicated, truncated or replaced) is an error, never a
        /// panic.
        #[test]
        fn mutated_offers_never_panic(
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, "[ -~]{0,40}"), 1..6)
        ) {
            let seed = seed_offer();
            let mut lines: Vec<String> = seed.split("\r\n").map(str::to_owned).collect();
            for (idx, op, text) in edits {
                if lines.is_empty() { break; }
                let i = idx.index(lines.len());
                match op {
                    0 => { lines.remove(i); }
                    1 => { let l = lines[i].clone(); lines.insert(i, l); }
                    2 => { let l = &mut lines[i]; let cut = l.len() / 2; l.truncate(cut); }
                    _ => { lines[i] = text; }
                }
            }
            let mut p = peer();
            let _ = p.apply_offer(lines.join("\r\n"), Instant::now());
        }

        /// Garbage datagrams from the network are rejected, never a panic.
        #[test]
        fn arbitrary_datagrams_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400), first in 0u8..=255) {
            let mut p = peer();
            let _ = p.apply_offer(seed_offer(), Instant::now());
            let mut data = BytesMut::from(&bytes[..]);
            if !data.is_empty() { data[0] = first; }
            let from = SocketAddr::from(([127, 0, 0, 1], 40000));
            let _ = p.handle_datagram(from, data, false, Instant::now());
            while p.pc().poll_write().is_some() {}
            while p.pc().poll_event().is_some() {}
            while p.pc().poll_read().is_some() {}
        }
    }
}
