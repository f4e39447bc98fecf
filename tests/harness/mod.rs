//! A room driven on virtual time, without sockets or sleeps: the server's [`Room`] state machine
//! and `rtc` client peer connections exchange datagrams and signaling in memory, and the clock
//! is a value the harness advances. Shared by the virtual-time tests and the forwarding bench
//! (`#[path]`-included there).
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use confab::auth::Grant;
use confab::config::{LimitsConfig, MediaConfig};
use confab::ids::{DisplayName, ParticipantId, PeerKey, RoomName, TrackSource};
use confab::media::rtcp_tap::{keyframe_request, RtcpTap};
use confab::room::peer::host_candidate;
use confab::room::state::Room;
use confab::room::{Advertised, RoomCmd, RoomSettings};
use confab::signal::protocol::ServerMsg;
use confab::transport::udp::{Datagram, DemuxCmd, DemuxHandle};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::sync::{mpsc, oneshot};

/// The server's (virtual) address.
pub const SERVER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50000);

/// One client: an `rtc` peer connection plus its signaling inbox.
pub struct Client {
    pub pc: RTCPeerConnection,
    pub addr: SocketAddr,
    pub key: PeerKey,
    pub id: ParticipantId,
    signal: mpsc::Receiver<ServerMsg>,
    /// Every signaling message received, in order.
    pub received: Vec<ServerMsg>,
    pub connected: bool,
    /// Answer server offers (turn off to test the negotiation timeout).
    pub answers_offers: bool,
    /// Sends nothing (its network went away).
    pub silent: bool,
    /// RTP packets received, per SSRC, in order: (sequence number, payload length).
    pub rtp: Vec<(u32, u16, usize)>,
    /// PLIs received (as a publisher).
    pub plis: usize,
    /// Its published video track's sender and SSRC, if it publishes.
    pub video: Option<(RTCRtpSenderId, u32, u8)>,
    seq: u16,
    ts: u32,
}

/// A room and its clients on one virtual clock.
pub struct Harness {
    pub room: Room,
    pub clients: Vec<Client>,
    pub now: Instant,
    /// Virtual time per [`pump`](Self::pump) round.
    pub step: Duration,
    /// Datagrams on their way to the room (delivered by the next pump).
    to_room: VecDeque<Datagram>,
    pub demux: mpsc::UnboundedReceiver<DemuxCmd>,
    /// Datagrams the room sent to an address no client has.
    pub unrouted: usize,
    /// ICE keepalive interval of clients joining from now on (`None`: the stack's default).
    pub client_keepalive: Option<Duration>,
}

fn client_pc(addr: SocketAddr, now: Instant, keepalive: Option<Duration>) -> RTCPeerConnection {
    let mut me = MediaEngine::default();
    me.register_default_codecs().expect("codecs");
    // Let keyframe requests reach the application (the default chain consumes inbound RTCP).
    let registry = Registry::new().with(Slot::from(14_000), RtcpTap::new(keyframe_request));
    let registry = register_default_interceptors(registry, &mut me).expect("interceptors");
    let mut settings =
        SettingEngineBuilder::new().with_multicast_dns_mode(MulticastDnsMode::Disabled);
    if let Some(k) = keepalive {
        // A client that checks consent rarely (libnice: a Binding Indication every 25 s).
        settings = settings.with_ice_timeouts(None, Some(Duration::from_secs(3600)), Some(k));
    }
    let settings = settings.build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(settings)
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .build(now)
        .expect("client pc");
    pc.add_local_candidate(host_candidate(addr).expect("candidate"))
        .expect("local candidate");
    pc
}

/// VP8 as the synthetic publishers send it.
pub fn vp8() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "video/VP8".into(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

impl Harness {
    /// An empty room with default media settings and room for `max_participants`.
    pub fn new(max_participants: usize) -> Self {
        Self::with_media(max_participants, MediaConfig::default())
    }

    /// An empty room with these media settings.
    pub fn with_media(max_participants: usize, media: MediaConfig) -> Self {
        let (demux, demux_rx) = DemuxHandle::channel();
        let (inbox_tx, _inbox_rx) = mpsc::channel(16);
        let settings = RoomSettings {
            advertised: Advertised::udp_only(SERVER),
            resume_grace: std::time::Duration::from_secs(15),
            epoch: confab::room::WallClock::new(Instant::now(), 1_700_000_000_000),
            media,
            limits: LimitsConfig {
                max_participants_per_room: max_participants,
                ..LimitsConfig::default()
            },
        };
        let room = Room::new(
            RoomName::parse("harness").expect("name"),
            settings,
            demux,
            inbox_tx,
        );
        Self {
            room,
            clients: Vec::new(),
            now: Instant::now(),
            step: Duration::from_millis(5),
            to_room: VecDeque::new(),
            demux: demux_rx,
            unrouted: 0,
            client_keepalive: None,
        }
    }

    /// Joins a new client; returns its index.
    pub fn join(&mut self) -> usize {
        self.join_as(confab::room::Role::Member)
    }

    /// Joins a new client taking part as `role` (a WHEP viewer, a WHIP publisher).
    pub fn join_as(&mut self, role: confab::room::Role) -> usize {
        let i = self.clients.len();
        let addr = SocketAddr::from(([127, 0, 0, 1], 20000 + i as u16));
        let (signal_tx, signal_rx) = mpsc::channel(1024);
        let (reply_tx, mut reply_rx) = oneshot::channel();
        let id = ParticipantId::mint();
        self.room.on_cmd(
            self.now,
            RoomCmd::Join {
                id: id.clone(),
                name: DisplayName::parse(&format!("c{i}")).expect("name"),
                grant: Grant::open(),
                role,
                signal: signal_tx,
                reply: reply_tx,
            },
        );
        reply_rx.try_recv().expect("reply").expect("joined");
        let key = self.room.key_of(&id).expect("joined peer has a key");
        self.clients.push(Client {
            pc: client_pc(addr, self.now, self.client_keepalive),
            addr,
            key,
            id,
            signal: signal_rx,
            received: Vec::new(),
            connected: false,
            answers_offers: true,
            silent: false,
            rtp: Vec::new(),
            plis: 0,
            video: None,
            seq: 1,
            ts: 0,
        });
        i
    }

    /// Client `i` adds a VP8 send track (before its next offer).
    pub fn add_video(&mut self, i: usize) {
        let ssrc: u32 = 0x1000_0000 + i as u32;
        let track = MediaStreamTrack::new(
            format!("pub{i}"),
            "video".into(),
            "video".into(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: vp8(),
                ..Default::default()
            }],
        );
        let t = self.clients[i]
            .pc
            .add_transceiver_from_track(
                track,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .expect("transceiver");
        self.clients[i].video = Some((RTCRtpSenderId::from(t), ssrc, 0));
    }

    /// Client `i` offers to receive video (a recvonly transceiver, as a subscriber offers).
    pub fn add_receiver(&mut self, i: usize) {
        self.clients[i]
            .pc
            .add_transceiver_from_kind(RtpCodecKind::Video, None)
            .expect("recvonly");
    }

    /// Client `i` makes an offer.
    pub fn offer(&mut self, i: usize) {
        self.offer_with_sources(i, HashMap::new());
    }

    /// Client `i` makes an offer saying what its tracks are (`offer.sources`).
    pub fn offer_with_sources(&mut self, i: usize, sources: HashMap<String, TrackSource>) {
        let now = self.now;
        let c = &mut self.clients[i];
        let offer = c.pc.create_offer(None).expect("offer");
        c.pc.set_local_description(now, offer).expect("set local");
        let sdp = c.pc.local_description().expect("local").sdp;
        let id = c.id.clone();
        self.room.on_cmd(now, RoomCmd::Offer { id, sdp, sources });
    }

    /// Client `i` leaves.
    pub fn leave(&mut self, i: usize) {
        let id = self.clients[i].id.clone();
        self.room.on_cmd(self.now, RoomCmd::Leave { id });
    }

    /// One RTP packet from publisher `i` (VP8 descriptor + 1000 bytes), protected, as the server
    /// sees it. Other datagrams the publisher had due are queued for the room.
    pub fn publisher_datagram(&mut self, i: usize, keyframe: bool) -> Datagram {
        let now = self.now;
        let c = &mut self.clients[i];
        let (sender, ssrc, mut pt) = c.video.expect("client publishes video");
        if pt == 0 {
            let mut s = c.pc.rtp_sender(sender).expect("sender");
            pt = s
                .get_parameters()
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case("video/VP8"))
                .map(|c| c.payload_type)
                .expect("VP8 negotiated");
            c.video = Some((sender, ssrc, pt));
        }
        let mut payload = vec![0u8; 1000];
        payload[0] = 0x10; // S=1, PID=0
        payload[1] = if keyframe { 0x00 } else { 0x01 };
        let pkt = Packet {
            header: Header {
                version: 2,
                marker: true,
                payload_type: pt,
                sequence_number: c.seq,
                timestamp: c.ts,
                ssrc,
                ..Default::default()
            },
            payload: Bytes::from(payload),
        };
        c.seq = c.seq.wrapping_add(1);
        c.ts = c.ts.wrapping_add(3000);
        c.pc.rtp_sender(sender)
            .expect("sender")
            .write_rtp(now, pkt)
            .expect("write_rtp");
        let mut rtp = None;
        while let Some(t) = c.pc.poll_write() {
            let d = Datagram {
                peer: c.key,
                from: c.addr,
                data: t.message,
                at: now,
                tcp: None,
            };
            let is_rtp = d.data.first().is_some_and(|b| b >> 6 == 2)
                && d.data.get(1).is_some_and(|b| !(192..=223).contains(b));
            if is_rtp && rtp.is_none() {
                rtp = Some(d);
            } else {
                self.to_room.push_back(d);
            }
        }
        rtp.expect("publisher produced an RTP datagram")
    }

    /// Publisher `i` sends one packet now (delivered to the room at once).
    pub fn send_video(&mut self, i: usize, keyframe: bool) {
        let d = self.publisher_datagram(i, keyframe);
        self.room.on_datagram(self.now, d);
    }

    /// One round on the virtual clock: time advances by `step`; clients' output reaches the
    /// room, the room's output reaches the clients, signaling is answered, timers run.
    pub fn pump(&mut self) {
        self.now += self.step;
        let now = self.now;
        for c in &mut self.clients {
            if c.pc.poll_timeout().is_some_and(|t| t <= now) {
                let _ = c.pc.handle_timeout(now);
            }
            while let Some(t) = c.pc.poll_write() {
                if c.silent {
                    continue;
                }
                self.to_room.push_back(Datagram {
                    peer: c.key,
                    from: c.addr,
                    data: t.message,
                    at: now,
                    tcp: None,
                });
            }
        }
        while let Some(d) = self.to_room.pop_front() {
            self.room.on_datagram(now, d);
        }
        if self.room.next_deadline(now) <= now {
            self.room.on_timeout(now);
        }
        self.deliver();
    }

    /// Delivers what the room queued to the clients and handles their signaling.
    pub fn deliver(&mut self) {
        let now = self.now;
        let out: Vec<(SocketAddr, BytesMut)> = self.room.transmits_mut().drain(..).collect();
        for (to, data) in out {
            let Some(c) = self.clients.iter_mut().find(|c| c.addr == to) else {
                self.unrouted += 1;
                continue;
            };
            let _ = c.pc.handle_read(TaggedBytesMut {
                now,
                transport: TransportContext {
                    local_addr: c.addr,
                    peer_addr: SERVER,
                    ecn: None,
                    transport_protocol: TransportProtocol::UDP,
                },
                message: data,
            });
        }
        let mut answers = Vec::new();
        for c in &mut self.clients {
            while let Some(ev) = c.pc.poll_event() {
                if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) = ev {
                    c.connected = s == RTCPeerConnectionState::Connected;
                }
            }
            while let Some(m) = c.pc.poll_read() {
                match m.message {
                    RTCMessage::RtpPacket(_, p) => {
                        c.rtp
                            .push((p.header.ssrc, p.header.sequence_number, p.payload.len()))
                    }
                    RTCMessage::RtcpPacket(_, pkts) => {
                        c.plis += pkts
                            .iter()
                            .filter(|p| p.as_any().is::<PictureLossIndication>())
                            .count()
                    }
                    _ => {}
                }
            }
            while let Ok(msg) = c.signal.try_recv() {
                match &msg {
                    ServerMsg::Answer { sdp } => {
                        let answer = RTCSessionDescription::answer(sdp.clone()).expect("answer");
                        c.pc.set_remote_description(now, answer)
                            .expect("apply answer");
                    }
                    ServerMsg::Offer { sdp } if c.answers_offers => {
                        let offer = RTCSessionDescription::offer(sdp.clone()).expect("offer");
                        c.pc.set_remote_description(now, offer)
                            .expect("apply offer");
                        let answer = c.pc.create_answer(None).expect("create answer");
                        c.pc.set_local_description(now, answer).expect("set answer");
                        let sdp = c.pc.local_description().expect("local").sdp;
                        answers.push(RoomCmd::Answer {
                            id: c.id.clone(),
                            sdp,
                        });
                    }
                    _ => {}
                }
                c.received.push(msg);
            }
        }
        for a in answers {
            self.room.on_cmd(now, a);
        }
    }

    /// Pumps until `done` holds; panics after `max` virtual time.
    pub fn pump_until(&mut self, max: Duration, done: impl Fn(&Harness) -> bool) {
        let deadline = self.now + max;
        while !done(self) {
            assert!(
                self.now < deadline,
                "condition not reached in {max:?} of virtual time"
            );
            self.pump();
        }
    }

    /// Pumps for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.pump();
        }
    }

    /// A publisher (client 0, one VP8 track) and `subscribers` receive-only clients, all
    /// connected, every subscriber leg open and past its first keyframe.
    pub fn fan_out(subscribers: usize) -> Self {
        // Room for a few latecomers.
        let mut h = Harness::new(subscribers + 4);
        let p = h.join();
        h.add_video(p);
        h.offer(p);
        for _ in 0..subscribers {
            let s = h.join();
            h.add_receiver(s);
            h.offer(s);
        }
        h.pump_until(Duration::from_secs(20), |h| {
            h.clients.iter().all(|c| c.connected)
        });
        // Publish (the first packet raises OnTrack); subscribers renegotiate and open with a
        // keyframe.
        let deadline = h.now + Duration::from_secs(20);
        loop {
            let d = h.publisher_datagram(p, true);
            h.room.on_datagram(h.now, d);
            let out = h
                .room
                .transmits_mut()
                .iter()
                .filter(|(to, _)| *to != h.clients[p].addr)
                .count();
            h.deliver();
            if out >= subscribers {
                break;
            }
            assert!(
                h.now < deadline,
                "subscribers never opened ({out} of {subscribers})"
            );
            h.pump();
        }
        h
    }
}
