//! Session resume and the per-identity rejoin limit, at the signaling level: a raw WebSocket
//! participant beside a full client that watches the room.
//! - The socket drops: within the grace period a new socket with the resume token takes the
//!   session back (same participant id), and the others see no `participant-left`.
//! - The token works once; a wrong room, a wrong token or an ended session get `resume_failed`.
//! - Not resumed within the grace period: the others see it leave.
//! - An identity joining again and again is slowed down with `rate_limited` + `retry_after_ms`.

mod common;

use std::time::Duration;

use common::*;
use confab_client::signaling::ServerMessage;
use confab_client::ClientEvent;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connect")
        .0
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("ws send");
}

/// The next message of `ty` (others, e.g. `participant-joined`, are skipped), or any `error`.
async fn next_of(ws: &mut Ws, ty: &str) -> Value {
    within(&format!("a {ty} message"), SIGNAL_TIMEOUT, async {
        loop {
            let Some(Ok(Message::Text(t))) = ws.next().await else {
                panic!("socket ended while waiting for {ty}");
            };
            let v: Value = serde_json::from_str(&t).expect("json");
            if v["type"] == ty || v["type"] == "error" {
                return v;
            }
        }
    })
    .await
}

async fn join(url: &str, room: &str, name: &str) -> (Ws, Value) {
    let mut ws = open(url).await;
    send(&mut ws, json!({"type": "join", "room": room, "name": name})).await;
    let joined = next_of(&mut ws, "joined").await;
    assert_eq!(joined["type"], "joined", "{joined}");
    (ws, joined)
}

fn resume_msg(room: &str, joined: &Value, token: &Value) -> Value {
    json!({"type": "resume", "room": room, "participant_id": joined["participant_id"], "token": token})
}

/// Events `watcher` gets during `span` that say `id` left.
async fn lefts_during(watcher: &mut confab_client::Client, id: &str, span: Duration) -> usize {
    let mut n = 0;
    let deadline = tokio::time::Instant::now() + span;
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, watcher.next_event()).await {
        if let ClientEvent::Signal(ServerMessage::ParticipantLeft { participant_id }) = ev {
            if participant_id == id {
                n += 1;
            }
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_resumes_within_the_grace_period_and_nobody_sees_a_leave() {
    let mut cfg = test_config();
    cfg.signaling.resume_grace = Duration::from_secs(4);
    let server = start_server_with(cfg).await;
    let url = ws_url(&server);
    let mut watcher = connect(subscriber(&url, "resume", "watcher")).await;
    let (ws, joined) = join(&url, "resume", "carol").await;
    let id = joined["participant_id"].as_str().expect("id").to_owned();
    assert!(
        joined["resume_token"]
            .as_str()
            .is_some_and(|t| t.len() >= 32),
        "{joined}"
    );
    assert_eq!(joined["resume_grace_ms"], 4000);

    // The socket drops (no `leave`); a second passes; a new socket resumes.
    drop(ws);
    assert_eq!(
        lefts_during(&mut watcher, &id, Duration::from_secs(1)).await,
        0
    );
    let mut ws2 = open(&url).await;
    send(
        &mut ws2,
        resume_msg("resume", &joined, &joined["resume_token"]),
    )
    .await;
    let resumed = next_of(&mut ws2, "resumed").await;
    assert_eq!(resumed["type"], "resumed", "{resumed}");
    assert_eq!(resumed["participant_id"], id.as_str());
    let names: Vec<&str> = resumed["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["watcher"], "{resumed}");
    let next_token = resumed["resume_token"].clone();
    assert_ne!(next_token, joined["resume_token"], "the token rotates");
    // The resumed session is live: it answers pings and stays in the room past the grace period.
    send(&mut ws2, json!({"type": "ping"})).await;
    assert_eq!(next_of(&mut ws2, "pong").await["type"], "pong");
    assert_eq!(
        lefts_during(&mut watcher, &id, Duration::from_secs(5)).await,
        0
    );
    let snapshot = server
        .rooms
        .snapshot(&confab::ids::RoomName::parse("resume").expect("name"))
        .await
        .expect("room");
    assert_eq!(snapshot.participants.len(), 2);

    // The spent token, a wrong token and a wrong room are refused (the session is untouched).
    for (room, token) in [
        ("resume", joined["resume_token"].clone()),
        ("resume", json!("x".repeat(32))),
        ("elsewhere", next_token.clone()),
    ] {
        let mut ws3 = open(&url).await;
        send(&mut ws3, resume_msg(room, &joined, &token)).await;
        let e = next_of(&mut ws3, "resumed").await;
        assert_eq!(e["code"], "resume_failed", "{room} {token}: {e}");
    }

    // After `leave` the session is over: its last token is refused too.
    send(&mut ws2, json!({"type": "leave"})).await;
    assert_eq!(
        lefts_during(&mut watcher, &id, Duration::from_secs(2)).await,
        1
    );
    let mut ws4 = open(&url).await;
    send(&mut ws4, resume_msg("resume", &joined, &next_token)).await;
    assert_eq!(next_of(&mut ws4, "resumed").await["code"], "resume_failed");
    watcher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_over_a_half_open_socket_takes_the_session_over() {
    let server = start_server().await;
    let url = ws_url(&server);
    let mut watcher = connect(subscriber(&url, "takeover", "watcher")).await;
    let (mut old, joined) = join(&url, "takeover", "gina").await;
    let id = joined["participant_id"].as_str().expect("id").to_owned();
    // The client believes its socket dead (its address changed) and resumes on a new one while
    // the server still holds the old one open.
    let mut new = open(&url).await;
    send(
        &mut new,
        resume_msg("takeover", &joined, &joined["resume_token"]),
    )
    .await;
    assert_eq!(next_of(&mut new, "resumed").await["type"], "resumed");
    // The old socket is told and closed; the session lives on in the new one.
    assert_eq!(next_of(&mut old, "going-away").await["type"], "going-away");
    assert_eq!(
        lefts_during(&mut watcher, &id, Duration::from_secs(3)).await,
        0
    );
    send(&mut new, json!({"type": "ping"})).await;
    assert_eq!(next_of(&mut new, "pong").await["type"], "pong");
    let room = confab::ids::RoomName::parse("takeover").expect("name");
    let snapshot = server.rooms.snapshot(&room).await.expect("room");
    assert_eq!(snapshot.participants.len(), 2, "{snapshot:?}");
    watcher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_not_resumed_within_the_grace_period_leaves() {
    let mut cfg = test_config();
    cfg.signaling.resume_grace = Duration::from_millis(1500);
    let server = start_server_with(cfg).await;
    let url = ws_url(&server);
    let mut watcher = connect(subscriber(&url, "expire", "watcher")).await;
    let (ws, joined) = join(&url, "expire", "dave").await;
    let id = joined["participant_id"].as_str().expect("id").to_owned();
    drop(ws);
    let started = std::time::Instant::now();
    let mut left_after = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, watcher.next_event()).await {
        if matches!(&ev, ClientEvent::Signal(ServerMessage::ParticipantLeft { participant_id }) if *participant_id == id)
        {
            left_after = Some(started.elapsed());
            break;
        }
    }
    let after = left_after.expect("the participant was never removed");
    assert!(
        after >= Duration::from_millis(1400),
        "left after {after:?}, before the grace period"
    );
    let mut ws2 = open(&url).await;
    send(
        &mut ws2,
        resume_msg("expire", &joined, &joined["resume_token"]),
    )
    .await;
    assert_eq!(next_of(&mut ws2, "resumed").await["code"], "resume_failed");
    watcher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_rejoining_too_fast_is_slowed_down() {
    let mut cfg = test_config();
    cfg.limits.joins_per_minute_per_identity = 6; // bursts of 3
    cfg.limits.joins_per_second_per_ip = 1000;
    let server = start_server_with(cfg).await;
    let url = ws_url(&server);
    let mut refused = None;
    for attempt in 0..6 {
        let mut ws = open(&url).await;
        send(
            &mut ws,
            json!({"type": "join", "room": "storm", "name": "eve"}),
        )
        .await;
        let v = next_of(&mut ws, "joined").await;
        if v["type"] == "error" {
            assert_eq!(v["code"], "rate_limited", "{v}");
            let wait = v["retry_after_ms"].as_u64().expect("retry_after_ms");
            assert!((1..=60_000).contains(&wait), "{v}");
            refused = Some(attempt);
            break;
        }
        send(&mut ws, json!({"type": "leave"})).await;
    }
    assert_eq!(refused, Some(3), "the fourth quick join is refused");
    // Another name from the same address is a different identity.
    let (_ws, joined) = join(&url, "storm", "frank").await;
    assert_eq!(joined["type"], "joined");
}

/// Draining does not wait for sessions whose socket dropped: no resume is accepted while the
/// server drains, so they are removed at once and the process exits well before the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_server_does_not_wait_for_dropped_sessions() {
    let mut server = spawn_server(&[
        ("CONFAB_SIGNALING__RESUME_GRACE", "60s"),
        ("CONFAB_SERVER__DRAIN_TIMEOUT", "30s"),
    ]);
    let url = format!("ws://{}/ws", server.http);
    let (ws, _joined) = join(&url, "drain-detached", "hank").await;
    drop(ws);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = server.child.id() as i32;
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = server.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the drain waited for a session that cannot resume"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");
}

/// A page that goes away (close code 1001, what browsers send when a page is closed or left) or
/// a client that says it left leaves at once; a plain close (a client giving up on a socket it
/// thinks dead) waits for a resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_going_away_close_leaves_at_once_and_a_plain_close_waits_for_a_resume() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let mut cfg = test_config();
    cfg.signaling.resume_grace = Duration::from_secs(15);
    let server = start_server_with(cfg).await;
    let url = ws_url(&server);
    let mut watcher = connect(subscriber(&url, "closes", "watcher")).await;
    for (code, reason, leaves) in [
        (CloseCode::Away, "", true),
        (CloseCode::Normal, "left", true),
        (CloseCode::Normal, "no reply from the server", false),
    ] {
        let (mut ws, joined) = join(&url, "closes", "ivy").await;
        let id = joined["participant_id"].as_str().expect("id").to_owned();
        ws.close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
        .await
        .expect("close");
        let lefts = lefts_during(&mut watcher, &id, Duration::from_secs(2)).await;
        assert_eq!(lefts, usize::from(leaves), "close {code:?} {reason:?}");
    }
    watcher.close().await;
}
