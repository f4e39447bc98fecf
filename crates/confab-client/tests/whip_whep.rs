//! WHIP and WHEP over HTTP against an in-process server: session semantics (201, Location,
//! ETag, DELETE, PATCH 405, the documented 4xx), grants, a WHEP viewer receiving a publisher's
//! media on fixed slots that follow the room (re-pointed when its source leaves), and no leak
//! in the room API and metrics after DELETE. Interop with clients we did not write (GStreamer,
//! aiortc, Chromium) is `tests/interop/whip_whep.sh`.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use confab::auth::{Auth, TokenRequest};
use confab_client::peer::{LocalKind, Peer, PeerOptions};
use confab_client::synth::VideoCodec;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use webrtc::media_stream::track_remote::TrackRemoteEvent;

const KEY: &str = "testkey";
const SECRET: &str = "test-secret-that-is-long-enough";

fn token(room: &str, publish: bool, subscribe: bool) -> String {
    Auth::new(HashMap::from([(KEY.to_owned(), SECRET.to_owned())]))
        .issue(
            KEY,
            &TokenRequest {
                room: Some(room.into()),
                identity: format!("id-{publish}-{subscribe}"),
                name: Some("encoder".into()),
                ttl: Duration::from_secs(600),
                can_publish: publish,
                can_subscribe: subscribe,
                admin: false,
            },
        )
        .expect("token")
}

/// Packets received per SSRC on a viewer's tracks.
#[derive(Default)]
struct Received {
    video: AtomicU64,
    audio: AtomicU64,
    ssrcs: Mutex<Vec<u32>>,
}

/// A peer connection whose offer receives `recv` and sends `send` (tracks that stay silent);
/// returns it and its offer SDP (candidates included).
async fn offerer(
    recv: &[RtpCodecKind],
    send: &[LocalKind],
    received: Arc<Received>,
) -> (Peer, String) {
    let on_track = Arc::new(
        move |track: Arc<dyn webrtc::media_stream::track_remote::TrackRemote>| {
            let received = received.clone();
            tokio::spawn(async move {
                let video = track.kind().await == RtpCodecKind::Video;
                while let Some(ev) = track.poll().await {
                    if let TrackRemoteEvent::OnRtpPacket(pkt) = ev {
                        if pkt.payload.is_empty() {
                            continue;
                        }
                        let counter = if video {
                            &received.video
                        } else {
                            &received.audio
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut s) = received.ssrcs.lock() {
                            if !s.contains(&pkt.header.ssrc) {
                                s.push(pkt.header.ssrc);
                            }
                        }
                    }
                }
            });
        },
    );
    let (mut peer, mut events) = Peer::new(
        PeerOptions {
            bind_ip: "127.0.0.1".parse().expect("ip"),
            ice_servers: vec![],
        },
        on_track,
    )
    .await
    .expect("peer");
    for kind in recv {
        peer.add_recvonly(*kind).await.expect("transceiver");
    }
    for (i, kind) in send.iter().enumerate() {
        peer.add_local_track(*kind, "encoder", &format!("t{i}"))
            .await
            .expect("track");
    }
    let sdp = peer
        .create_offer(Some((&mut events, Duration::from_secs(2))))
        .await
        .expect("offer");
    // Keep the event channel drained for the connection's lifetime.
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    (peer, sdp)
}

const AV: [RtpCodecKind; 2] = [RtpCodecKind::Audio, RtpCodecKind::Video];
const SEND_AV: [LocalKind; 2] = [LocalKind::Audio, LocalKind::Video(VideoCodec::Vp8)];

async fn post_sdp(addr: SocketAddr, path: &str, sdp: &str, extra: &str) -> (u16, String) {
    let headers = format!("Content-Type: application/sdp\r\n{extra}");
    http_request(addr, "POST", path, &headers, sdp).await
}

async fn room_json(addr: SocketAddr, room: &str) -> serde_json::Value {
    let (status, resp) = http_get(addr, &format!("/api/rooms/{room}"), "").await;
    if status != 200 {
        return serde_json::Value::Null;
    }
    serde_json::from_str(body_of(&resp)).unwrap_or(serde_json::Value::Null)
}

async fn gauge(addr: SocketAddr, name: &str) -> f64 {
    let (_, body) = http_get(addr, "/metrics", "").await;
    metric_sum(&body, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_sessions_follow_rfc_9725_and_errors_are_clear() {
    // Its own process: the gauges checked for leaks are the server's alone.
    let server = spawn_server(&[]);
    let addr = server.http;
    let (mut peer, offer) = offerer(&[], &SEND_AV, Arc::default()).await;

    // Wrong content type, garbage, an offer without media, one in codecs nobody knows.
    let (status, _) = http_request(
        addr,
        "POST",
        "/whip/w",
        "Content-Type: text/plain\r\n",
        &offer,
    )
    .await;
    assert_eq!(status, 415);
    let (status, resp) = post_sdp(addr, "/whip/w", "not sdp", "").await;
    assert_eq!(status, 400, "{resp}");
    let unknown: String = offer
        .lines()
        .map(|l| match l.strip_prefix("a=rtpmap:") {
            Some(rest) => format!("a=rtpmap:{}", rest.replacen(' ', " X-UNKNOWN", 1)),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\r\n");
    let (status, resp) = post_sdp(addr, "/whip/w", &format!("{unknown}\r\n"), "").await;
    assert_eq!(status, 400, "{resp}");
    assert!(resp.contains("codec"), "{resp}");
    assert_eq!(
        room_json(addr, "w").await,
        serde_json::Value::Null,
        "refused offers leave nothing"
    );

    // A good offer: 201, the answer, Location, ETag.
    let (status, resp) = post_sdp(addr, "/whip/w?name=obs", &offer, "").await;
    assert_eq!(status, 201, "{resp}");
    assert_eq!(header(&resp, "content-type"), Some("application/sdp"));
    let location = header(&resp, "location").expect("Location").to_owned();
    assert!(location.starts_with("/whip/w/session/"), "{location}");
    assert!(header(&resp, "etag").is_some_and(|e| e.starts_with('"')));
    peer.apply_answer(body_of(&resp).to_owned())
        .await
        .expect("answer applies");
    let room = room_json(addr, "w").await;
    assert_eq!(room["participants"][0]["name"], "obs", "{room}");
    assert_eq!(room["participants"][0]["kind"], "whip", "{room}");
    assert_eq!(gauge(addr, "confab_whip_sessions").await, 1.0);

    // PATCH: 405 (no trickle needed); unknown sessions 404.
    let (status, resp) = http_request(
        addr,
        "PATCH",
        &location,
        "Content-Type: application/trickle-ice-sdpfrag\r\n",
        "a=ice-ufrag:x\r\n",
    )
    .await;
    assert_eq!(status, 405, "{resp}");
    assert!(header(&resp, "allow").is_some());
    let (status, _) = http_request(addr, "DELETE", "/whip/w/session/nope", "", "").await;
    assert_eq!(status, 404);
    let (status, _) = http_request(
        addr,
        "OPTIONS",
        "/whip/w",
        "Origin: https://x.example\r\n",
        "",
    )
    .await;
    assert_eq!(status, 204);

    // DELETE frees it: no participant, gauges back to zero, a second DELETE is 404.
    let (status, _) = http_request(addr, "DELETE", &location, "", "").await;
    assert_eq!(status, 200);
    wait_for_room_gone(addr, "w").await;
    assert_eq!(gauge(addr, "confab_whip_sessions").await, 0.0);
    assert_eq!(gauge(addr, "confab_participants").await, 0.0);
    let (status, _) = http_request(addr, "DELETE", &location, "", "").await;
    assert_eq!(status, 404);
    peer.close().await;
}

async fn wait_for_room_gone(addr: SocketAddr, room: &str) {
    for _ in 0..100 {
        if room_json(addr, room).await.is_null() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("room {room} still open: {}", room_json(addr, room).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_and_whep_need_the_grants_when_keys_are_configured() {
    let mut cfg = test_config();
    cfg.auth.keys.insert(KEY.into(), SECRET.into());
    let server = start_server_with(cfg).await;
    let addr = server.http_addr;
    let (_peer, offer) = offerer(&[], &SEND_AV, Arc::default()).await;
    let bearer = |t: &str| format!("Authorization: Bearer {t}\r\n");
    let (status, resp) = post_sdp(addr, "/whip/g", &offer, "").await;
    assert_eq!(status, 401, "{resp}");
    assert_eq!(header(&resp, "www-authenticate"), Some("Bearer"));
    let (status, _) = post_sdp(addr, "/whip/g", &offer, &bearer("garbage")).await;
    assert_eq!(status, 401);
    let (status, _) = post_sdp(
        addr,
        "/whip/g",
        &offer,
        &bearer(&token("other", true, true)),
    )
    .await;
    assert_eq!(status, 403, "a token for another room");
    let (status, resp) = post_sdp(addr, "/whip/g", &offer, &bearer(&token("g", false, true))).await;
    assert_eq!(status, 403, "no canPublish: {resp}");
    let (status, resp) = post_sdp(addr, "/whip/g", &offer, &bearer(&token("g", true, false))).await;
    assert_eq!(status, 201, "{resp}");
    assert_eq!(
        room_json(addr, "g").await,
        serde_json::Value::Null,
        "the room API needs a token too"
    );
    let (_viewer, view_offer) = offerer(&AV, &[], Arc::default()).await;
    let (status, _) = post_sdp(
        addr,
        "/whep/g",
        &view_offer,
        &bearer(&token("g", true, false)),
    )
    .await;
    assert_eq!(status, 403, "no canSubscribe");
    let (status, resp) = post_sdp(
        addr,
        "/whep/g",
        &view_offer,
        &bearer(&token("g", false, true)),
    )
    .await;
    assert_eq!(status, 201, "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whep_viewer_follows_the_room_on_fixed_slots() {
    let server = spawn_server(&[]);
    let addr = server.http;
    let url = format!("ws://{addr}/ws");
    let alice = connect(publisher(&url, "v", "alice", 0)).await;

    // One participant's view: a participant that does not exist is 404.
    let received = Arc::new(Received::default());
    let (_p, offer) = offerer(&AV, &[], Arc::default()).await;
    let (status, _) = post_sdp(addr, "/whep/v/pAAAAAAAAAA", &offer, "").await;
    assert_eq!(status, 404);

    let (mut viewer, offer) = offerer(&AV, &[], received.clone()).await;
    let (status, resp) = post_sdp(addr, "/whep/v", &offer, "").await;
    assert_eq!(status, 201, "{resp}");
    let location = header(&resp, "location").expect("Location").to_owned();
    viewer
        .apply_answer(body_of(&resp).to_owned())
        .await
        .expect("answer applies");
    let packets = |r: &Received| {
        (
            r.audio.load(Ordering::Relaxed),
            r.video.load(Ordering::Relaxed),
        )
    };
    wait_until(
        "the viewer to receive alice's audio and video",
        MEDIA_TIMEOUT,
        || packets(&received).0 > 20 && packets(&received).1 > 20,
        || format!("{:?}", packets(&received)),
    )
    .await;
    // Not a participant: alice was not told, the room API counts it as a viewer.
    let room = room_json(addr, "v").await;
    assert_eq!(room["viewers"], 1, "{room}");
    assert_eq!(
        room["participants"].as_array().map(Vec::len),
        Some(1),
        "{room}"
    );
    assert_eq!(gauge(addr, "confab_whep_sessions").await, 1.0);
    assert_eq!(gauge(addr, "confab_participants").await, 1.0);

    // Bob publishes, alice leaves: the slots carry bob now, on the same SSRCs.
    let bob = connect(publisher(&url, "v", "bob", 1)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    alice.leave().await;
    let after_alice = packets(&received);
    wait_until(
        "the viewer's slots to carry bob",
        MEDIA_TIMEOUT,
        || {
            let now = packets(&received);
            now.0 > after_alice.0 + 50 && now.1 > after_alice.1 + 50
        },
        || {
            format!(
                "{:?} (at alice's leave {after_alice:?})",
                packets(&received)
            )
        },
    )
    .await;
    let ssrcs = received.ssrcs.lock().map(|s| s.len()).unwrap_or(0);
    assert_eq!(ssrcs, 2, "one SSRC per slot whatever the source");

    let (status, _) = http_request(addr, "DELETE", &location, "", "").await;
    assert_eq!(status, 200);
    for _ in 0..50 {
        if room_json(addr, "v").await["viewers"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(room_json(addr, "v").await["viewers"], 0);
    assert_eq!(gauge(addr, "confab_whep_sessions").await, 0.0);
    bob.leave().await;
    viewer.close().await;
}
