//! A publisher sends known payloads (audio + VP8 video); two subscribers each receive every
//! payload byte-identical and in order, video from the first keyframe on (the server gates video
//! legs on a keyframe, so what precedes it may be dropped).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use confab::signal::protocol::TrackKind;
use confab_client::synth::VideoCodec;
use confab_client::{Client, ClientConfig};

/// Compares what `sub` received from the publisher with what the publisher sent.
fn check_intact(sub: &Client, publisher: &Client, label: &str) {
    let sent: HashMap<(TrackKind, u64), Bytes> = publisher
        .sent()
        .iter()
        .flat_map(|t| {
            let log = t.log.as_ref().expect("publisher records payloads");
            let entries = log.lock().expect("log lock").clone();
            entries
                .into_iter()
                .map(move |(seq, p)| ((t.kind, seq), p))
                .collect::<Vec<_>>()
        })
        .collect();
    let tracks = sub.received().tracks();
    for kind in [TrackKind::Audio, TrackKind::Video] {
        let stats = tracks
            .iter()
            .find(|t| {
                t.lock()
                    .map(|t| t.kind == kind && t.stream_id == publisher.participant_id())
                    .unwrap_or(false)
            })
            .unwrap_or_else(|| panic!("{label} has no {kind:?} track from the publisher"));
        let stats = stats.lock().expect("stats lock");
        assert_eq!(
            stats.corrupt, 0,
            "{label} {kind:?}: corrupt payloads: {:?}",
            stats.last_error
        );
        assert_eq!(stats.duplicates, 0, "{label} {kind:?}: duplicates");
        let log = stats.payload_log();
        let start = match kind {
            TrackKind::Audio => 0,
            TrackKind::Video => {
                let key = stats
                    .first_keyframe_seq
                    .unwrap_or_else(|| panic!("{label}: no keyframe received"));
                // The server gates a new video leg on a keyframe: nothing before it arrives.
                assert_eq!(
                    stats.first_seq,
                    Some(key),
                    "{label}: video must start with a keyframe"
                );
                log.iter()
                    .position(|(s, _)| *s == key)
                    .expect("keyframe is in the log")
            }
        };
        let checked = &log[start..];
        assert!(
            checked.len() >= 50,
            "{label} {kind:?}: only {} packets to check",
            checked.len()
        );
        for (i, w) in checked.windows(2).enumerate() {
            assert_eq!(
                w[1].0,
                w[0].0 + 1,
                "{label} {kind:?}: packet {} has probe counter {} after {} (gap, reorder or duplicate)",
                start + i + 1,
                w[1].0,
                w[0].0
            );
        }
        for (seq, payload) in checked {
            let expected = sent
                .get(&(kind, *seq))
                .unwrap_or_else(|| panic!("{label} {kind:?}: counter {seq} was never sent"));
            assert_eq!(
                payload, expected,
                "{label} {kind:?}: payload {seq} differs from what was sent"
            );
        }
    }
}

/// One publisher (audio + `codec` video), `subscribers` subscribers: every payload arrives
/// intact and in order at each.
async fn forward_and_check(room: &str, codec: VideoCodec, subscribers: &[&str]) {
    let server = start_server().await;
    let url = ws_url(&server);
    let mut pcfg = ClientConfig::new(&url, room, "alice").publishing(1, true, Some(codec));
    pcfg.record_payloads = true;
    pcfg.video_bitrate_bps = 800_000;
    let publisher = connect(pcfg).await;
    let pid = publisher.participant_id().to_owned();

    let mut subs = Vec::new();
    for name in subscribers {
        let mut cfg = subscriber(&url, room, name);
        cfg.record_payloads = true;
        subs.push(connect(cfg).await);
    }

    // About 3 s of audio (50 packets/s) and a few dozen video frames.
    for (i, sub) in subs.iter().enumerate() {
        wait_until(
            &format!("subscriber {i} to receive audio and video"),
            MEDIA_TIMEOUT,
            || receives_av(sub, &pid, 150, 300),
            || describe(sub),
        )
        .await;
    }

    // Stop sending so the publisher's log and the receivers' logs are complete.
    publisher.stop_media();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (i, sub) in subs.iter().enumerate() {
        check_intact(sub, &publisher, &format!("{codec:?} subscriber {i}"));
    }
    assert_eq!(
        publisher.sent().len(),
        2,
        "publisher publishes audio and video"
    );
    for sub in subs {
        sub.close().await;
    }
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_subscribers_receive_every_payload_intact_and_in_order() {
    forward_and_check("fwd-vp8", VideoCodec::Vp8, &["bob", "carol"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_payloads_arrive_intact_and_in_order() {
    forward_and_check("fwd-h264", VideoCodec::H264, &["dave"]).await;
}
