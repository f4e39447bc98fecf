//! The room state machine on virtual time: real `rtc` peers, no sockets, no sleeps, the clock a
//! value the harness advances (`tests/harness`). Forwarding, renegotiation, keyframe gating and
//! timeouts.

mod harness;

use std::time::Duration;

use confab::config::MediaConfig;
use confab::signal::protocol::{ErrorCode, ServerMsg};
use harness::Harness;

fn errors(h: &Harness, i: usize) -> Vec<ErrorCode> {
    h.clients[i]
        .received
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Error { code, .. } => Some(*code),
            _ => None,
        })
        .collect()
}

#[test]
fn subscribers_receive_every_packet_in_order_on_one_ssrc() {
    let mut h = Harness::fan_out(2);
    for c in &mut h.clients {
        c.rtp.clear();
    }
    for _ in 0..300 {
        h.send_video(0, false);
        h.deliver();
    }
    for s in 1..=2 {
        let rtp = &h.clients[s].rtp;
        assert_eq!(rtp.len(), 300, "subscriber {s} got every packet");
        assert!(rtp.iter().all(|p| p.0 == rtp[0].0), "one SSRC per leg");
        assert_ne!(
            rtp[0].0, 0x1000_0000,
            "the leg has its own SSRC, not the publisher's"
        );
        for w in rtp.windows(2) {
            assert_eq!(
                w[1].1,
                w[0].1.wrapping_add(1),
                "contiguous sequence numbers"
            );
        }
        assert!(rtp.iter().all(|p| p.2 == 1000), "payload intact");
    }
}

#[test]
fn a_new_subscriber_waits_for_a_keyframe_and_the_publisher_is_asked_for_one() {
    let mut h = Harness::fan_out(1);
    let plis_before = h.clients[0].plis;
    let late = h.join();
    h.add_receiver(late);
    h.offer(late);
    h.pump_until(Duration::from_secs(20), |h| h.clients[late].connected);
    // The server offers it the existing track; once it has answered, its leg opens and waits.
    h.run_for(Duration::from_millis(200));
    for _ in 0..20 {
        h.send_video(0, false);
        h.pump();
    }
    assert!(
        h.clients[late].rtp.is_empty(),
        "no delta frame before a keyframe"
    );
    assert!(
        h.clients[0].plis > plis_before,
        "the publisher was asked for a keyframe"
    );
    h.send_video(0, true);
    h.send_video(0, false);
    h.deliver();
    assert_eq!(
        h.clients[late].rtp.len(),
        2,
        "the keyframe and what follows flow"
    );
}

#[test]
fn a_leaving_publisher_is_unpublished_and_its_subscribers_renegotiated() {
    let mut h = Harness::fan_out(2);
    let offers = |h: &Harness, i: usize| {
        h.clients[i]
            .received
            .iter()
            .filter(|m| matches!(m, ServerMsg::Offer { .. }))
            .count()
    };
    let before = [offers(&h, 1), offers(&h, 2)];
    h.leave(0);
    h.run_for(Duration::from_millis(100));
    assert_eq!(h.room.len(), 2);
    for (s, before) in [(1, before[0]), (2, before[1])] {
        let got = &h.clients[s].received;
        assert!(got
            .iter()
            .any(|m| matches!(m, ServerMsg::TrackUnpublished { .. })));
        assert!(got
            .iter()
            .any(|m| matches!(m, ServerMsg::ParticipantLeft { .. })));
        assert_eq!(offers(&h, s), before + 1, "one offer removes the track");
    }
    // The answers were applied: nothing is in flight any more.
    let snapshot = h.room.snapshot(h.now);
    assert!(snapshot.participants.iter().all(|p| !p.negotiating));
}

#[test]
fn an_unanswered_server_offer_removes_the_participant_after_the_timeout() {
    let media = MediaConfig {
        negotiation_timeout: Duration::from_secs(3),
        ..MediaConfig::default()
    };
    let mut h = Harness::with_media(3, media);
    let s = h.join();
    h.add_receiver(s);
    h.offer(s);
    h.pump_until(Duration::from_secs(20), |h| h.clients[s].connected);
    h.clients[s].answers_offers = false;
    // A publisher arrives: the server offers its track to `s`, which never answers.
    let p = h.join();
    h.add_video(p);
    h.offer(p);
    h.pump_until(Duration::from_secs(20), |h| h.clients[p].connected);
    h.send_video(p, true);
    h.pump_until(Duration::from_secs(5), |h| {
        h.room
            .snapshot(h.now)
            .participants
            .iter()
            .any(|x| x.negotiating)
    });
    h.run_for(Duration::from_secs(2));
    assert_eq!(h.room.len(), 2, "still inside the timeout");
    h.run_for(Duration::from_millis(1500));
    assert_eq!(h.room.len(), 1, "removed once the timeout passed");
    assert!(errors(&h, s).contains(&ErrorCode::NegotiationTimeout));
}

#[test]
fn a_peer_whose_media_goes_silent_is_removed_after_the_disconnect_timeout() {
    let media = MediaConfig {
        disconnect_timeout: Duration::from_secs(2),
        ..MediaConfig::default()
    };
    let mut h = Harness::with_media(3, media);
    let a = h.join();
    h.add_receiver(a);
    h.offer(a);
    let b = h.join();
    h.add_receiver(b);
    h.offer(b);
    h.pump_until(Duration::from_secs(20), |h| {
        h.clients.iter().all(|c| c.connected)
    });
    h.clients[a].silent = true;
    h.step = Duration::from_millis(50);
    h.pump_until(Duration::from_secs(60), |h| h.room.len() == 1);
    assert!(errors(&h, a).contains(&ErrorCode::Removed));
    assert!(h.clients[b]
        .received
        .iter()
        .any(|m| matches!(m, ServerMsg::ParticipantLeft { .. })));
}

/// The patched `RTCRtpSender::write_rtp` (patches/rtc, change 1) checks packets against bit
/// sets instead of scanning parameters: the same packets must be refused as before.
#[test]
fn write_rtp_refuses_what_the_sender_did_not_negotiate() {
    use bytes::Bytes;
    use rtc::rtp::header::{Extension, Header};
    use rtc::rtp::packet::Packet;

    let mut h = Harness::fan_out(1);
    h.send_video(0, false); // learns the negotiated payload type
    let (sender, ssrc, pt) = h.clients[0].video.expect("publisher");
    let now = h.now;
    let packet = |ssrc: u32, pt: u8, ext: Option<u8>| Packet {
        header: Header {
            version: 2,
            payload_type: pt,
            sequence_number: 1,
            ssrc,
            extension: ext.is_some(),
            extension_profile: 0xBEDE,
            extensions: ext
                .map(|id| {
                    vec![Extension {
                        id,
                        payload: Bytes::from_static(&[1]),
                    }]
                })
                .unwrap_or_default(),
            ..Default::default()
        },
        payload: Bytes::from_static(&[0x10, 0x01, 0, 0]),
    };
    let pc = &mut h.clients[0].pc;
    let mut write = |p: Packet| pc.rtp_sender(sender).expect("sender").write_rtp(now, p);
    assert!(write(packet(ssrc, pt, None)).is_ok());
    assert!(
        write(packet(ssrc ^ 1, pt, None)).is_err(),
        "an SSRC not of this sender"
    );
    assert!(
        write(packet(ssrc, 127, None)).is_err(),
        "a payload type not negotiated"
    );
    assert!(
        write(packet(ssrc, 200, None)).is_err(),
        "not a payload type at all"
    );
    assert!(
        write(packet(ssrc, pt, Some(14))).is_err(),
        "an extension id not negotiated"
    );
}

#[test]
fn an_ice_restart_moves_a_subscriber_to_its_new_address_with_a_new_ufrag_and_a_keyframe() {
    use confab::transport::udp::DemuxCmd;
    let mut h = Harness::fan_out(1);
    while h.demux.try_recv().is_ok() {}
    let plis_before = h.clients[0].plis;
    let offers = |h: &Harness| {
        h.clients[1]
            .received
            .iter()
            .filter(|m| matches!(m, ServerMsg::Answer { .. }))
            .count()
    };
    let answers_before = offers(&h);

    // The subscriber's network changes: a new address, the old one gone; it restarts ICE.
    let new_addr = std::net::SocketAddr::from(([127, 0, 0, 1], 30001));
    h.clients[1].addr = new_addr;
    h.clients[1]
        .pc
        .add_local_candidate(confab::room::peer::host_candidate(new_addr).expect("candidate"))
        .expect("local candidate");
    h.clients[1].pc.restart_ice();
    h.offer(1);
    h.deliver();
    assert_eq!(
        offers(&h),
        answers_before + 1,
        "the restart offer is answered"
    );
    let answer = h.clients[1]
        .received
        .iter()
        .rev()
        .find_map(|m| match m {
            ServerMsg::Answer { sdp } => Some(sdp.clone()),
            _ => None,
        })
        .expect("answer");
    // The room routes the new ufrag and retires the old one.
    let cmds: Vec<DemuxCmd> = std::iter::from_fn(|| h.demux.try_recv().ok()).collect();
    let registered: Vec<&String> = cmds
        .iter()
        .filter_map(|c| match c {
            DemuxCmd::Register(u, _) => Some(u),
            _ => None,
        })
        .collect();
    let retired: Vec<&String> = cmds
        .iter()
        .filter_map(|c| match c {
            DemuxCmd::Unregister(u) => Some(u),
            _ => None,
        })
        .collect();
    assert_eq!(registered.len(), 1, "{cmds:?}");
    assert_eq!(retired.len(), 1, "{cmds:?}");
    assert_ne!(registered[0], retired[0]);
    assert!(
        answer.contains(&format!("a=ice-ufrag:{}", registered[0])),
        "the answer carries the new ufrag"
    );

    // Media reaches the new address; the publisher is asked for a keyframe for it.
    h.clients[1].rtp.clear();
    h.pump_until(Duration::from_secs(10), |h| h.clients[1].connected);
    for _ in 0..50 {
        h.send_video(0, false);
        h.pump();
    }
    assert!(
        h.clients[1].rtp.len() >= 40,
        "forwarding resumed at the new address: {} packets",
        h.clients[1].rtp.len()
    );
    // Keyframe requests are throttled per track (500 ms): give the request its slot.
    h.run_for(Duration::from_secs(1));
    assert!(
        h.clients[0].plis > plis_before,
        "the publisher was asked for a keyframe after the restart"
    );
    for i in 0..2 {
        assert!(
            !h.clients[i]
                .received
                .iter()
                .any(|m| matches!(m, ServerMsg::ParticipantLeft { .. })),
            "client {i} saw a participant leave"
        );
        assert!(errors(&h, i).is_empty(), "client {i}: {:?}", errors(&h, i));
    }
}

#[test]
fn a_viewer_slot_follows_the_room_on_one_ssrc_with_continuous_sequence_numbers() {
    let mut h = Harness::new(8);
    let (a, b) = (h.join(), h.join());
    for p in [a, b] {
        h.add_video(p);
        h.offer(p);
    }
    let v = h.join_as(confab::room::Role::Viewer { of: None });
    h.add_receiver(v);
    h.offer(v);
    h.pump_until(Duration::from_secs(20), |h| {
        h.clients.iter().all(|c| c.connected)
    });
    // Both publish; nobody speaks, so the slot shows the newest track (b's).
    for _ in 0..3 {
        for p in [a, b] {
            h.send_video(p, true);
        }
        h.pump();
    }
    for _ in 0..50 {
        h.send_video(a, false);
        h.send_video(b, false);
        h.deliver();
    }
    let before = h.clients[v].rtp.len();
    assert!(before >= 50, "the viewer receives one source: {before}");
    assert!(
        h.clients[v]
            .received
            .iter()
            .all(|m| !matches!(m, ServerMsg::Offer { .. })),
        "a viewer is never sent an offer"
    );
    // b leaves: the slot is re-pointed to a, which is asked for a keyframe (past the PLI
    // throttle of the request a got when it was the only source).
    h.run_for(Duration::from_millis(600));
    let plis = h.clients[a].plis;
    h.leave(b);
    h.run_for(Duration::from_millis(50));
    assert!(
        h.clients[a].plis > plis,
        "the new source was asked for a keyframe"
    );
    for _ in 0..5 {
        h.send_video(a, false);
        h.deliver();
    }
    assert_eq!(
        h.clients[v].rtp.len(),
        before,
        "no delta frame before the keyframe"
    );
    h.send_video(a, true);
    for _ in 0..20 {
        h.send_video(a, false);
    }
    h.deliver();
    let rtp = &h.clients[v].rtp;
    assert_eq!(rtp.len(), before + 21, "a's keyframe and what follows");
    assert!(rtp.iter().all(|p| p.0 == rtp[0].0), "one SSRC for the slot");
    for w in rtp.windows(2) {
        assert_eq!(
            w[1].1,
            w[0].1.wrapping_add(1),
            "sequence continues across the switch"
        );
    }
    // Not a participant: the others were never told about it, and the snapshot counts it apart.
    let snapshot = h.room.snapshot(h.now);
    assert_eq!((snapshot.participants.len(), snapshot.viewers), (1, 1));
    assert!(h.clients[a].received.iter().all(|m| !matches!(
        m,
        ServerMsg::ParticipantJoined { participant } if participant.id == h.clients[v].id
    )));
}

#[test]
fn media_alone_keeps_a_peer_that_rarely_checks_consent_connected() {
    // libnice (GStreamer's webrtcbin, a WHIP encoder) sends its connectivity checks and then
    // only a Binding Indication every 25 s; its media is what shows it is there. It was
    // declared disconnected 5 s after connecting and removed 10 s later, media flowing.
    let mut h = Harness::new(4);
    h.client_keepalive = Some(Duration::from_secs(25));
    let p = h.join();
    h.add_video(p);
    h.offer(p);
    h.client_keepalive = None;
    let s = h.join();
    h.add_receiver(s);
    h.offer(s);
    h.pump_until(Duration::from_secs(20), |h| {
        h.clients.iter().all(|c| c.connected)
    });
    h.send_video(p, true);
    let start = h.now;
    while h.now < start + Duration::from_secs(20) {
        h.send_video(p, false);
        for _ in 0..6 {
            h.pump();
        }
    }
    let snapshot = h.room.snapshot(h.now);
    let publisher = snapshot
        .participants
        .iter()
        .find(|x| x.id == h.clients[p].id)
        .expect("the publisher is still in the room");
    assert_eq!(publisher.connection_state, "connected");
    assert!(errors(&h, p).is_empty(), "{:?}", errors(&h, p));
}
