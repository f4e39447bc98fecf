//! One participant's peer connection on the sans-IO `rtc` core, plus the negotiation state the
//! core does not keep for us: the server offer in flight, batched changes, and which side made
//! the first offer. No sockets here: datagrams come in as values, writes are drained by the room.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{
    RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::sync::mpsc;

use crate::auth::Grant;
use crate::ids::{random_alnum, DisplayName, ParticipantId, PeerKey, TrackId};
use crate::media::forwarder::TrackKey;
use crate::media::rtcp_tap::{sfu_feedback, RtcpTap};
use crate::media::track::{RtpMap, FORWARDED_EXTENSIONS};
use crate::signal::protocol::{ServerMsg, TrackKind};

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

/// One participant: identity, its peer connection, negotiation and track bookkeeping.
pub struct Peer {
    /// Room-local key (the demux tags datagrams with it).
    pub key: PeerKey,
    /// Public id.
    pub id: ParticipantId,
    /// Display name.
    pub name: DisplayName,
    /// What it may do; its identity.
    pub grant: Grant,
    /// The ICE ufrag the server minted for this peer (its demux key).
    pub ufrag: String,
    /// Outbound signaling (to the WebSocket session).
    pub signal: mpsc::Sender<ServerMsg>,
    /// When `join` was processed.
    pub joined_at: Instant,
    /// `participant{id}` span (child of the room's), entered for this peer's signaling and
    /// connection events (not per packet).
    pub span: tracing::Span,
    pc: RTCPeerConnection,
    /// The address of our host candidate. Datagrams are fed to the ICE agent as arriving on
    /// it (not on the socket's bind address): the agent only accepts STUN on a known local
    /// candidate, and behind NAT the bind address (private, or 0.0.0.0) is not the candidate.
    candidate_addr: SocketAddr,

    /// A server offer with this generation, sent at that time, awaits the answer.
    pub offer_in_flight: Option<(u64, Instant)>,
    next_generation: u64,
    /// Changes wait for the next server offer.
    pub needs_offer: bool,
    /// The client has made its first offer (the server never makes the first offer).
    pub client_negotiated: bool,

    /// Published tracks by the receiver's track id (as the core reports RTP).
    pub published: HashMap<String, TrackKey>,
    /// Receivers already turned into published tracks (`OnTrack` repeats after renegotiation).
    pub seen_receivers: HashSet<RTCRtpReceiverId>,
    /// Down tracks on this peer by the SSRC the peer sees (to route its PLI/FIR).
    pub down_by_ssrc: HashMap<u32, TrackKey>,

    /// Current connection state.
    pub state: RTCPeerConnectionState,
    /// `poll_timeout`, cached: refreshed once per wake-up and only for peers driven since
    /// (`timeout_stale`), not per packet and not for idle peers.
    pub next_timeout: Option<Instant>,
    /// The peer connection was driven since `next_timeout` was read.
    pub timeout_stale: bool,
    /// Queued in the room's dirty list (so each peer is queued once).
    pub dirty: bool,
    /// Since when the connection has been disconnected.
    pub disconnected_since: Option<Instant>,
    /// The connection has reached `connected` at least once (DTLS done, SRTP keys set): only
    /// then can packets written to it leave.
    pub media_ready: bool,
    /// The newest answered offer generation whose legs wait for `media_ready` to open.
    pub answered_unopened: Option<u64>,
    /// Latest remote address datagrams came from.
    pub remote_addr: Option<SocketAddr>,
}

fn media_engine() -> Result<(MediaEngine, Registry), PeerError> {
    let mut me = MediaEngine::default();
    me.register_default_codecs()?;
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
    // Application-ward of the default chain, so NACK/report interceptors act first.
    let registry = Registry::new().with(Slot::from(14_000), RtcpTap::new(sfu_feedback));
    let registry = register_default_interceptors(registry, &mut me)?;
    Ok((me, registry))
}

/// The UDP host candidate for `addr` (the shared socket's advertised address).
pub fn host_candidate(addr: SocketAddr) -> Result<RTCIceCandidateInit, PeerError> {
    let host = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
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
        advertised: SocketAddr,
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
        pc.add_local_candidate(host_candidate(advertised)?)?;
        // End of gathering: the host candidate is all there is.
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
            candidate_addr: advertised,
            offer_in_flight: None,
            next_generation: 1,
            needs_offer: false,
            client_negotiated: false,
            published: HashMap::new(),
            seen_receivers: HashSet::new(),
            down_by_ssrc: HashMap::new(),
            state: RTCPeerConnectionState::New,
            next_timeout: None,
            timeout_stale: true,
            dirty: false,
            disconnected_since: None,
            media_ready: false,
            answered_unopened: None,
            remote_addr: None,
        })
    }

    /// The peer connection, for draining `poll_*`.
    pub fn pc(&mut self) -> &mut RTCPeerConnection {
        &mut self.pc
    }

    /// Feeds one datagram from the shared socket.
    pub fn handle_datagram(
        &mut self,
        from: SocketAddr,
        data: BytesMut,
        now: Instant,
    ) -> Result<(), PeerError> {
        self.remote_addr = Some(from);
        self.pc.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.candidate_addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: data,
        })?;
        Ok(())
    }

    /// Applies the client's offer and returns the server's answer SDP.
    pub fn apply_offer(&mut self, sdp: String, now: Instant) -> Result<String, PeerError> {
        let offer = RTCSessionDescription::offer(sdp).map_err(PeerError::BadSdp)?;
        self.pc
            .set_remote_description(now, offer)
            .map_err(PeerError::BadSdp)?;
        let answer = self.pc.create_answer(None)?;
        self.pc.set_local_description(now, answer)?;
        self.client_negotiated = true;
        let local = self
            .pc
            .local_description()
            .ok_or(rtc::shared::error::Error::ErrNoRemoteDescription)?;
        Ok(local.sdp)
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
        let generation = self.next_generation;
        self.next_generation += 1;
        self.offer_in_flight = Some((generation, now));
        self.needs_offer = false;
        Ok((generation, sdp))
    }

    /// Applies the client's answer to the outstanding server offer; returns that offer's
    /// generation.
    pub fn apply_answer(&mut self, sdp: String, now: Instant) -> Result<u64, PeerError> {
        let Some((generation, _)) = self.offer_in_flight else {
            return Err(PeerError::UnexpectedAnswer);
        };
        let answer = RTCSessionDescription::answer(sdp).map_err(PeerError::BadSdp)?;
        self.pc
            .set_remote_description(now, answer)
            .map_err(PeerError::BadSdp)?;
        self.offer_in_flight = None;
        Ok(generation)
    }

    /// Adds a trickled remote candidate.
    pub fn add_remote_candidate(&mut self, init: RTCIceCandidateInit) -> Result<(), PeerError> {
        self.pc.add_remote_candidate(init)?;
        Ok(())
    }

    /// Adds a send-only leg for another participant's track; returns its sender and SSRC.
    /// The track's `msid` is (publisher id, track id) so the browser can tell whose it is.
    pub fn add_down_track(
        &mut self,
        publisher: &ParticipantId,
        track_id: &TrackId,
        kind: TrackKind,
        codec: RTCRtpCodec,
    ) -> Result<(RTCRtpSenderId, u32), PeerError> {
        let ssrc: u32 = rand::random();
        let rtp_kind = match kind {
            TrackKind::Audio => RtpCodecKind::Audio,
            TrackKind::Video => RtpCodecKind::Video,
        };
        let track = MediaStreamTrack::new(
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
        );
        let transceiver = self.pc.add_transceiver_from_track(
            track,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![],
                send_encodings: vec![],
            }),
        )?;
        self.needs_offer = true;
        Ok((RTCRtpSenderId::from(transceiver), ssrc))
    }

    /// Removes a leg (its m-line becomes inactive in the next offer).
    pub fn remove_down_track(&mut self, sender: RTCRtpSenderId, ssrc: u32) {
        self.down_by_ssrc.remove(&ssrc);
        if let Err(e) = self.pc.remove_track(sender) {
            tracing::debug!(%e, "remove_track failed");
        }
        self.needs_offer = true;
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
    pub fn send(&self, msg: ServerMsg) -> bool {
        self.signal.try_send(msg).is_ok()
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
        let addr = SocketAddr::from(([127, 0, 0, 1], 50000));
        Peer::new(
            PeerKey(1),
            ParticipantId::mint(),
            DisplayName::parse("fuzz").expect("valid"),
            Grant::open(),
            tx,
            addr,
            Instant::now(),
        )
        .expect("peer")
    }

    /// A realistic offer (audio + video, sendonly) from an `rtc` client.
    fn seed_offer() -> String {
        let (me, registry) = media_engine().expect("engine");
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

    #[test]
    fn a_valid_offer_is_answered() {
        let mut p = peer();
        let answer = p.apply_offer(seed_offer(), Instant::now()).expect("answer");
        assert!(answer.contains("a=ice-lite"), "{answer}");
        assert!(answer.contains("127.0.0.1 50000 typ host"), "{answer}");
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
            let _ = p.handle_datagram(from, data, Instant::now());
            while p.pc().poll_write().is_some() {}
            while p.pc().poll_event().is_some() {}
            while p.pc().poll_read().is_some() {}
        }
    }
}
