//! One async `webrtc` peer connection per client: bound to a loopback UDP port, mDNS off,
//! Opus/VP8/H.264 registered, and an interceptor that lets keyframe requests (PLI/FIR) reach
//! the publishing code. Negotiation helpers implement the *polite* side of perfect negotiation:
//! a server offer that arrives while our own offer is outstanding rolls ours back.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::Slot;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{RTCIceCandidateInit, RTCIceServer};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState,
};
use webrtc::rtp_transceiver::RtpSender;

use super::synth::VideoCodec;
use confab::media::rtcp_tap::{keyframe_request, RtcpTap};

/// Payload types the client registers (any will do: the server maps them per leg).
const PT_VP8: u8 = 96;
const PT_H264: u8 = 102;
const PT_OPUS: u8 = 111;
/// Pause between ICE connectivity checks.
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// The H.264 flavour we send and accept (constrained baseline 3.1, packetization mode 1).
const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

/// Peer-connection failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The `webrtc` stack refused an operation.
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::error::Error),
    /// A sender has no negotiated codec of the kind it sends.
    #[error("no negotiated payload type for {0}")]
    NoPayloadType(&'static str),
    /// The stack returned no local description.
    #[error("no local description")]
    NoLocalDescription,
}

/// What the peer connection reports to its owner.
#[derive(Debug, Clone)]
pub enum PeerEvent {
    /// Connection state changed.
    ConnectionState(RTCPeerConnectionState),
    /// ICE gathering finished.
    GatheringComplete,
}

/// Called for every new remote track (on the driver task: must return quickly).
pub type TrackCallback = Arc<dyn Fn(Arc<dyn TrackRemote>) + Send + Sync>;

struct Handler {
    events: mpsc::UnboundedSender<PeerEvent>,
    on_track: TrackCallback,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.events.send(PeerEvent::ConnectionState(state));
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.events.send(PeerEvent::GatheringComplete);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        (self.on_track)(track);
    }
}

fn video_feedback() -> Vec<RTCPFeedback> {
    [("nack", ""), ("nack", "pli"), ("ccm", "fir")]
        .into_iter()
        .map(|(typ, parameter)| RTCPFeedback {
            typ: typ.to_owned(),
            parameter: parameter.to_owned(),
        })
        .collect()
}

/// The codec a local track sends.
pub fn codec_for(kind: LocalKind) -> RTCRtpCodec {
    match kind {
        LocalKind::Audio => RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        LocalKind::Video(VideoCodec::Vp8) => RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: video_feedback(),
        },
        LocalKind::Video(VideoCodec::H264) => RTCRtpCodec {
            mime_type: MIME_TYPE_H264.to_owned(),
            clock_rate: 90000,
            channels: 0,
            sdp_fmtp_line: H264_FMTP.to_owned(),
            rtcp_feedback: video_feedback(),
        },
    }
}

fn media_engine() -> Result<(MediaEngine, rtc::interceptor::Registry), PeerError> {
    let mut me = MediaEngine::default();
    for (kind, pt, ck) in [
        (LocalKind::Audio, PT_OPUS, RtpCodecKind::Audio),
        (
            LocalKind::Video(VideoCodec::Vp8),
            PT_VP8,
            RtpCodecKind::Video,
        ),
        (
            LocalKind::Video(VideoCodec::H264),
            PT_H264,
            RtpCodecKind::Video,
        ),
    ] {
        me.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: codec_for(kind),
                payload_type: pt,
            },
            ck,
        )?;
    }
    let registry = register_default_interceptors(rtc::interceptor::Registry::new(), &mut me)?;
    // Application-ward of the default chain, so its interceptors see the RTCP first.
    let registry = registry.with(Slot::from(14_000), RtcpTap::new(keyframe_request));
    Ok((me, registry))
}

/// What a local track carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LocalKind {
    /// Opus audio.
    Audio,
    /// Video in this codec.
    Video(VideoCodec),
}

/// A track we send.
#[derive(Clone)]
pub struct LocalTrack {
    /// What it carries.
    pub kind: LocalKind,
    /// Its SSRC (packets must carry it: the async layer does not rewrite SSRCs).
    pub ssrc: u32,
    /// The track packets are written to.
    pub track: Arc<TrackLocalStaticRTP>,
    /// Its sender.
    pub sender: Arc<dyn RtpSender>,
}

impl LocalTrack {
    /// The payload type negotiated for our codec (known once the answer is applied).
    pub async fn payload_type(&self) -> Result<u8, PeerError> {
        let want = codec_for(self.kind).mime_type.to_ascii_lowercase();
        let params = self.sender.get_parameters().await?;
        params
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.to_ascii_lowercase() == want)
            .map(|c| c.payload_type)
            .ok_or(PeerError::NoPayloadType(match self.kind {
                LocalKind::Audio => "audio",
                LocalKind::Video(_) => "video",
            }))
    }
}

/// Peer-connection settings.
#[derive(Clone, Debug)]
pub struct PeerOptions {
    /// Local IP the UDP socket binds (port 0).
    pub bind_ip: IpAddr,
    /// ICE servers from `joined`.
    pub ice_servers: Vec<RTCIceServer>,
}

/// One client's peer connection plus the negotiation state the stack does not expose.
pub struct Peer {
    pc: Arc<dyn PeerConnection>,
    has_local_offer: bool,
}

impl Peer {
    /// Builds the peer connection. Remote tracks are handed to `on_track`; state changes
    /// arrive on the returned channel.
    pub async fn new(
        opts: PeerOptions,
        on_track: TrackCallback,
    ) -> Result<(Self, mpsc::UnboundedReceiver<PeerEvent>), PeerError> {
        let (me, registry) = media_engine()?;
        let settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            // Connectivity checks every 50 ms like a browser (the stack's default, 200 ms, adds
            // ~200 ms to every join), up to 2 s.
            .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(40))
            .build();
        let (tx, rx) = mpsc::unbounded_channel();
        let handler = Arc::new(Handler {
            events: tx,
            on_track,
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(
                RTCConfigurationBuilder::new()
                    .with_ice_servers(opts.ice_servers)
                    .build(),
            )
            .with_media_engine(me)
            .with_setting_engine(settings)
            .with_interceptor_registry(registry)
            .with_handler(handler)
            .with_udp_addrs(vec![SocketAddr::new(opts.bind_ip, 0)])
            .build()
            .await?;
        Ok((
            Self {
                pc: Arc::new(pc),
                has_local_offer: false,
            },
            rx,
        ))
    }

    /// The underlying connection.
    pub fn connection(&self) -> &Arc<dyn PeerConnection> {
        &self.pc
    }

    /// Adds a send-only track.
    pub async fn add_local_track(
        &self,
        kind: LocalKind,
        stream_id: &str,
        track_id: &str,
    ) -> Result<LocalTrack, PeerError> {
        let ssrc: u32 = rand::random();
        let rtp_kind = match kind {
            LocalKind::Audio => RtpCodecKind::Audio,
            LocalKind::Video(_) => RtpCodecKind::Video,
        };
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            stream_id.to_owned(),
            track_id.to_owned(),
            track_id.to_owned(),
            rtp_kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: codec_for(kind),
                ..Default::default()
            }],
        )));
        let transceiver = self
            .pc
            .add_transceiver_from_track(
                track.clone() as Arc<dyn TrackLocal>,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .await?;
        let sender = transceiver
            .sender()
            .await?
            .ok_or(webrtc::error::Error::ErrRTPSenderNotExisted)?;
        Ok(LocalTrack {
            kind,
            ssrc,
            track,
            sender,
        })
    }

    /// Adds a receive-only transceiver (so a subscriber's first offer has m-lines).
    pub async fn add_recvonly(&self, kind: RtpCodecKind) -> Result<(), PeerError> {
        self.pc
            .add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .await?;
        Ok(())
    }

    /// Whether our offer awaits an answer.
    pub fn has_local_offer(&self) -> bool {
        self.has_local_offer
    }

    /// Creates and applies an offer; returns its SDP. With `gathering`, waits (bounded) for ICE
    /// gathering to finish first so the SDP carries our candidates.
    pub async fn create_offer(
        &mut self,
        gathering: Option<(&mut mpsc::UnboundedReceiver<PeerEvent>, Duration)>,
    ) -> Result<String, PeerError> {
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer).await?;
        self.has_local_offer = true;
        if let Some((events, limit)) = gathering {
            let _ = tokio::time::timeout(limit, async {
                while let Some(ev) = events.recv().await {
                    if matches!(ev, PeerEvent::GatheringComplete) {
                        break;
                    }
                }
            })
            .await;
        }
        self.pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or(PeerError::NoLocalDescription)
    }

    /// Applies the answer to our offer.
    pub async fn apply_answer(&mut self, sdp: String) -> Result<(), PeerError> {
        let answer = RTCSessionDescription::answer(sdp)?;
        self.pc.set_remote_description(answer).await?;
        self.has_local_offer = false;
        Ok(())
    }

    /// Drops our outstanding offer (the polite side yields to the server's offer).
    pub async fn rollback(&mut self) -> Result<(), PeerError> {
        if self.has_local_offer {
            let rb = RTCSessionDescription::rollback(None)?;
            self.pc.set_local_description(rb).await?;
            self.has_local_offer = false;
        }
        Ok(())
    }

    /// Answers a server offer (rolling back our own offer first if one is outstanding).
    /// Returns the answer SDP and whether a rollback happened.
    pub async fn answer_offer(&mut self, sdp: String) -> Result<(String, bool), PeerError> {
        let rolled_back = self.has_local_offer;
        self.rollback().await?;
        let offer = RTCSessionDescription::offer(sdp)?;
        self.pc.set_remote_description(offer).await?;
        let answer = self.pc.create_answer(None).await?;
        self.pc.set_local_description(answer).await?;
        let sdp = self
            .pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or(PeerError::NoLocalDescription)?;
        Ok((sdp, rolled_back))
    }

    /// Adds a remote candidate from signaling.
    pub async fn add_candidate(&self, init: RTCIceCandidateInit) -> Result<(), PeerError> {
        self.pc.add_ice_candidate(init).await?;
        Ok(())
    }

    /// Closes the connection (idempotent).
    pub async fn close(&self) {
        if let Err(e) = self.pc.close().await {
            tracing::debug!(%e, "peer connection close failed");
        }
    }
}
