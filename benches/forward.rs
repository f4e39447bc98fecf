//! The forwarding hot path without the network: one SRTP-protected publisher packet in →
//! decrypted, forwarded, rewritten and SRTP-protected packets out for N subscribers.
//!
//! A real room (`confab::room::task::Room`) is driven directly through its sans-IO inputs; the
//! publisher and subscribers are `rtc` peer connections that complete ICE and DTLS with it over
//! an in-memory datagram pump. Only `Room::on_datagram` (and discarding its output) is timed.
//! Criterion's throughput is outgoing packets: time per element = ns per outgoing packet.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use confab::auth::Grant;
use confab::config::{LimitsConfig, MediaConfig};
use confab::ids::{DisplayName, ParticipantId, PeerKey, RoomName};
use confab::room::peer::host_candidate;
use confab::room::task::Room;
use confab::room::{RoomCmd, RoomContext};
use confab::signal::protocol::ServerMsg;
use confab::transport::udp::{Datagram, UdpTransport};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::sync::{mpsc, oneshot};

struct Client {
    pc: RTCPeerConnection,
    addr: SocketAddr,
    key: PeerKey,
    id: ParticipantId,
    signal: mpsc::Receiver<ServerMsg>,
    connected: bool,
}

fn client_pc(addr: SocketAddr) -> RTCPeerConnection {
    let mut me = MediaEngine::default();
    me.register_default_codecs().expect("codecs");
    let registry = register_default_interceptors(Registry::new(), &mut me).expect("interceptors");
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(settings)
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .build(Instant::now())
        .expect("client pc");
    pc.add_local_candidate(host_candidate(addr).expect("candidate"))
        .expect("local candidate");
    pc
}

fn vp8() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "video/VP8".into(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

struct Bench {
    room: Room,
    server_addr: SocketAddr,
    clients: Vec<Client>,
    publisher_sender: RTCRtpSenderId,
    ssrc: u32,
    pt: u8,
    seq: u16,
    ts: u32,
    /// Publisher datagrams other than the RTP packet `publisher_datagram` returns (STUN
    /// consent checks, RTCP), delivered to the room by the next `pump`.
    held: Vec<Datagram>,
    _rt: tokio::runtime::Runtime,
}

impl Bench {
    fn new(subscribers: usize) -> Self {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let udp = rt
            .block_on(UdpTransport::bind(SocketAddr::from(([127, 0, 0, 1], 0))))
            .expect("bind");
        let server_addr = udp.tx.local_addr();
        let ctx = RoomContext {
            udp: udp.tx.clone(),
            demux: udp.demux.clone(),
            advertised: server_addr,
            media: MediaConfig::default(),
            ice_servers: vec![],
            // The largest case is 1 publisher + 100 subscribers: above the default room size.
            limits: LimitsConfig {
                max_participants_per_room: 1000,
                ..LimitsConfig::default()
            },
        };
        let (inbox_tx, _inbox_rx) = mpsc::channel(16);
        let room = Room::new(
            RoomName::parse("bench").expect("name"),
            1,
            ctx,
            Arc::new(dashmap::DashMap::new()),
            inbox_tx,
        );
        let mut b = Bench {
            room,
            server_addr,
            clients: Vec::new(),
            publisher_sender: RTCRtpSenderId::default(),
            ssrc: 0x1234_5678,
            pt: 96,
            seq: 1,
            ts: 0,
            held: Vec::new(),
            _rt: rt,
        };
        // The publisher: one VP8 track.
        let mut publisher = b.join(0);
        let track = MediaStreamTrack::new(
            "pub".into(),
            "video".into(),
            "video".into(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(b.ssrc),
                    ..Default::default()
                },
                codec: vp8(),
                ..Default::default()
            }],
        );
        let t = publisher
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
        b.publisher_sender = RTCRtpSenderId::from(t);
        b.clients.push(publisher);
        b.offer(0);
        for i in 1..=subscribers {
            let mut c = b.join(i);
            c.pc.add_transceiver_from_kind(RtpCodecKind::Video, None)
                .expect("recvonly");
            b.clients.push(c);
            b.offer(i);
        }
        b.pump_until(|b| b.clients.iter().all(|c| c.connected));
        if let Some(mut s) = b.clients[0].pc.rtp_sender(b.publisher_sender) {
            b.pt = s
                .get_parameters()
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case("video/VP8"))
                .map(|c| c.payload_type)
                .expect("VP8 negotiated");
        }
        // Publish (first packet raises OnTrack), let subscribers renegotiate, open with a keyframe.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let dg = b.publisher_datagram(true);
            let publisher_addr = b.clients[0].addr;
            b.room.on_datagram(dg);
            let out = b
                .room
                .transmits_mut()
                .iter()
                .filter(|(to, _)| *to != publisher_addr)
                .count();
            b.pump();
            if out >= subscribers {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "subscribers never opened ({out} of {subscribers})"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // Steady state check: one delta frame packet → one datagram per subscriber.
        let dg = b.publisher_datagram(false);
        b.room.on_datagram(dg);
        let out = b.room.transmits_mut().len();
        assert_eq!(out, subscribers, "fan-out is one packet per subscriber");
        b.room.transmits_mut().clear();
        b
    }

    fn join(&mut self, i: usize) -> Client {
        let addr = SocketAddr::from(([127, 0, 0, 1], 20000 + i as u16));
        let (signal_tx, signal_rx) = mpsc::channel(1024);
        let (reply_tx, mut reply_rx) = oneshot::channel();
        let id = ParticipantId::mint();
        self.room.on_cmd(RoomCmd::Join {
            id: id.clone(),
            name: DisplayName::parse(&format!("c{i}")).expect("name"),
            grant: Grant::open(),
            signal: signal_tx,
            reply: reply_tx,
        });
        reply_rx.try_recv().expect("reply").expect("joined");
        Client {
            pc: client_pc(addr),
            addr,
            key: PeerKey(i as u64 + 1),
            id,
            signal: signal_rx,
            connected: false,
        }
    }

    fn offer(&mut self, i: usize) {
        let c = &mut self.clients[i];
        let offer = c.pc.create_offer(None).expect("offer");
        c.pc.set_local_description(Instant::now(), offer)
            .expect("set local");
        let sdp = c.pc.local_description().expect("local").sdp;
        self.room.on_cmd(RoomCmd::Offer {
            id: c.id.clone(),
            sdp,
        });
    }

    /// A publisher RTP packet (VP8 descriptor + 1000 bytes), protected, as the server sees it.
    fn publisher_datagram(&mut self, keyframe: bool) -> Datagram {
        let mut payload = vec![0u8; 1000];
        payload[0] = 0x10; // S=1, PID=0
        payload[1] = if keyframe { 0x00 } else { 0x01 };
        let pkt = Packet {
            header: Header {
                version: 2,
                marker: true,
                payload_type: self.pt,
                sequence_number: self.seq,
                timestamp: self.ts,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: Bytes::from(payload),
        };
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(3000);
        let now = Instant::now();
        let c = &mut self.clients[0];
        c.pc.rtp_sender(self.publisher_sender)
            .expect("sender")
            .write_rtp(now, pkt)
            .expect("write_rtp");
        // The write may come out next to a STUN consent check or RTCP the publisher had due:
        // return the RTP datagram, keep the others for the room.
        let mut rtp = None;
        while let Some(t) = c.pc.poll_write() {
            let d = Datagram {
                peer: c.key,
                from: c.addr,
                data: t.message,
                at: now,
            };
            let is_rtp = d.data.first().is_some_and(|b| b >> 6 == 2)
                && d.data.get(1).is_some_and(|b| !(192..=223).contains(b));
            if is_rtp && rtp.is_none() {
                rtp = Some(d);
            } else {
                self.held.push(d);
            }
        }
        rtp.expect("publisher produced an RTP datagram")
    }

    /// One round: clients' output → room, room's output → clients, signaling, timers.
    fn pump(&mut self) {
        let now = Instant::now();
        let mut to_room: VecDeque<Datagram> = self.held.drain(..).collect();
        for c in &mut self.clients {
            if c.pc.poll_timeout().is_some_and(|t| t <= now) {
                let _ = c.pc.handle_timeout(now);
            }
            while let Some(t) = c.pc.poll_write() {
                to_room.push_back(Datagram {
                    peer: c.key,
                    from: c.addr,
                    data: t.message,
                    at: now,
                });
            }
        }
        for d in to_room {
            self.room.on_datagram(d);
        }
        self.room.on_timeout(now);
        self.room.negotiate(now);
        let out: Vec<(SocketAddr, BytesMut)> = self.room.transmits_mut().drain(..).collect();
        for (to, data) in out {
            if let Some(c) = self.clients.iter_mut().find(|c| c.addr == to) {
                let _ = c.pc.handle_read(TaggedBytesMut {
                    now,
                    transport: TransportContext {
                        local_addr: c.addr,
                        peer_addr: self.server_addr,
                        ecn: None,
                        transport_protocol: TransportProtocol::UDP,
                    },
                    message: data,
                });
            }
        }
        for c in &mut self.clients {
            while let Some(ev) = c.pc.poll_event() {
                if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) = ev {
                    c.connected = s == RTCPeerConnectionState::Connected;
                }
            }
            while c.pc.poll_read().is_some() {}
            while let Ok(msg) = c.signal.try_recv() {
                match msg {
                    ServerMsg::Answer { sdp } => {
                        let answer = RTCSessionDescription::answer(sdp).expect("answer");
                        c.pc.set_remote_description(now, answer)
                            .expect("apply answer");
                    }
                    ServerMsg::Offer { sdp } => {
                        let offer = RTCSessionDescription::offer(sdp).expect("offer");
                        c.pc.set_remote_description(now, offer)
                            .expect("apply offer");
                        let answer = c.pc.create_answer(None).expect("create answer");
                        c.pc.set_local_description(now, answer).expect("set answer");
                        let sdp = c.pc.local_description().expect("local").sdp;
                        self.room.on_cmd(RoomCmd::Answer {
                            id: c.id.clone(),
                            sdp,
                        });
                    }
                    _ => {}
                }
            }
        }
    }

    fn pump_until(&mut self, done: impl Fn(&Bench) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(self) {
            assert!(Instant::now() < deadline, "peers did not connect");
            self.pump();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));
    for n in [1usize, 10, 100] {
        let mut b = Bench::new(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(
            BenchmarkId::new("packet_to_subscribers", n),
            &n,
            |bencher, _| {
                bencher.iter_custom(|iters| {
                    // Encrypt the publisher's packets outside the timed region.
                    let datagrams: Vec<Datagram> =
                        (0..iters).map(|_| b.publisher_datagram(false)).collect();
                    let start = Instant::now();
                    for d in datagrams {
                        b.room.on_datagram(d);
                        b.room.transmits_mut().clear();
                    }
                    start.elapsed()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, fan_out);
criterion_main!(benches);
