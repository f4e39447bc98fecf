//! The room API's write operations with real participants: each call without a token (401),
//! with a participant's token (403) and with an admin token, and what the participants see:
//! a created room's options, a server mute (forwarding stops, everyone is told, unmute
//! resumes it), a rename with metadata, a data message, a removal, a closed room.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use confab::auth::{Auth, TokenRequest};
use confab::config::Config;
use confab::signal::protocol::TrackKind;
use confab_client::signaling::ServerMessage;
use confab_client::{Client, ClientEvent};

const KEY: &str = "apikey";
const SECRET: &str = "api-secret-that-is-long-enough";

fn token(room: Option<&str>, identity: &str, admin: bool) -> String {
    Auth::new(HashMap::from([(KEY.to_owned(), SECRET.to_owned())]))
        .issue(
            KEY,
            &TokenRequest {
                room: room.map(str::to_owned),
                identity: identity.into(),
                name: Some(identity.into()),
                ttl: Duration::from_secs(600),
                can_publish: true,
                can_subscribe: true,
                admin,
            },
        )
        .expect("token")
}

fn config() -> Config {
    let mut c = test_config();
    c.auth.keys.insert(KEY.into(), SECRET.into());
    c
}

/// Calls the API three ways: no token → 401, a participant's token → 403; then with the admin
/// token, returning its (status, body).
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    room: &str,
) -> (u16, serde_json::Value) {
    let (status, resp) = http_request(addr, method, path, "", body).await;
    assert_eq!(status, 401, "{method} {path} without a token: {resp}");
    let user = format!(
        "Authorization: Bearer {}\r\n",
        token(Some(room), "mallory", false)
    );
    let (status, resp) = http_request(addr, method, path, &user, body).await;
    assert_eq!(
        status, 403,
        "{method} {path} with a participant's token: {resp}"
    );
    let admin = format!("Authorization: Bearer {}\r\n", token(None, "ops", true));
    let (status, resp) = http_request(addr, method, path, &admin, body).await;
    let json = serde_json::from_str(body_of(&resp)).unwrap_or(serde_json::Value::Null);
    (status, json)
}

async fn joined(url: &str, room: &str, name: &str, index: u32) -> Client {
    let mut cfg = publisher(url, room, name, index);
    cfg.token = Some(token(Some(room), name, false));
    connect(cfg).await
}

/// Waits for a server message matching `pred`.
async fn expect_msg(
    client: &mut Client,
    what: &str,
    pred: impl Fn(&ServerMessage) -> bool,
) -> ServerMessage {
    let events = collect_events(client, what, SIGNAL_TIMEOUT, |evs| {
        evs.iter()
            .any(|e| matches!(e, ClientEvent::Signal(m) if pred(m)))
    })
    .await;
    events
        .into_iter()
        .rev()
        .find_map(|e| match e {
            ClientEvent::Signal(m) if pred(&m) => Some(m),
            _ => None,
        })
        .expect("matched")
}

fn audio_packets(client: &Client, from: &str) -> u64 {
    tracks_from(client, from)
        .iter()
        .filter(|t| t.kind == TrackKind::Audio)
        .map(|t| t.packets)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_rooms_and_participants_see_it() {
    let server = start_server_with(config()).await;
    let addr = server.http_addr;
    let url = ws_url(&server);

    // A created room with options: open while empty, limited to two participants.
    let (status, room) = call(
        addr,
        "POST",
        "/api/rooms",
        r#"{"name":"ops","max_participants":2,"empty_timeout_seconds":60}"#,
        "ops",
    )
    .await;
    assert_eq!(status, 201, "{room}");
    assert_eq!(room["participants"], serde_json::json!([]));
    let mut alice = joined(&url, "ops", "alice", 0).await;
    let mut bob = joined(&url, "ops", "bob", 1).await;
    let mut carol_cfg = publisher(&url, "ops", "carol", 2);
    carol_cfg.token = Some(token(Some("ops"), "carol", false));
    let refused = Client::connect(carol_cfg).await;
    assert!(
        refused.is_err_and(|e| e.to_string().contains("full")),
        "the room's own limit applies"
    );
    let bob_id = bob.participant_id().to_owned();
    wait_until(
        "alice to receive bob's audio",
        MEDIA_TIMEOUT,
        || audio_packets(&alice, &bob_id) > 20,
        || describe(&alice),
    )
    .await;

    // Mute bob's audio: everyone told, forwarding stops; unmute resumes it.
    let (_, room) = call(addr, "GET", "/api/rooms/ops", "", "ops").await;
    let track = room["participants"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "bob"))
        .and_then(|p| p["published"].as_array())
        .and_then(|ts| ts.iter().find(|t| t["kind"] == "audio"))
        .and_then(|t| t["track_id"].as_str())
        .expect("bob's audio track")
        .to_owned();
    let mute_path = format!("/api/rooms/ops/participants/{bob_id}/tracks/{track}/mute");
    let (status, resp) = call(addr, "POST", &mute_path, r#"{"muted":true}"#, "ops").await;
    assert_eq!(status, 200, "{resp}");
    for c in [&mut alice, &mut bob] {
        let msg = expect_msg(c, "track-muted", |m| {
            matches!(m, ServerMessage::TrackMuted { track_id, by_server: true, .. } if *track_id == track)
        })
        .await;
        assert!(matches!(msg, ServerMessage::TrackMuted { .. }));
    }
    let (_, room) = call(addr, "GET", "/api/rooms/ops", "", "ops").await;
    assert!(
        room.to_string().contains(r#""muted":true"#),
        "the room API shows the mute: {room}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let muted_at = audio_packets(&alice, &bob_id);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        audio_packets(&alice, &bob_id) <= muted_at + 2,
        "a muted track is not forwarded"
    );
    let (status, _) = call(addr, "POST", &mute_path, r#"{"muted":false}"#, "ops").await;
    assert_eq!(status, 200);
    expect_msg(&mut alice, "track-unmuted", |m| {
        matches!(m, ServerMessage::TrackUnmuted { .. })
    })
    .await;
    wait_until(
        "bob's audio to flow again",
        MEDIA_TIMEOUT,
        || audio_packets(&alice, &bob_id) > muted_at + 20,
        || describe(&alice),
    )
    .await;
    let (status, _) = call(
        addr,
        "POST",
        &format!("/api/rooms/ops/participants/{bob_id}/tracks/tAAAAAAAAAA/mute"),
        r#"{"muted":true}"#,
        "ops",
    )
    .await;
    assert_eq!(status, 404, "an unknown track");

    // Rename with metadata; a bad body is 400.
    let path = format!("/api/rooms/ops/participants/{bob_id}");
    let (status, p) = call(
        addr,
        "PATCH",
        &path,
        r#"{"name":"Bob B.","metadata":"{\"role\":\"host\"}"}"#,
        "ops",
    )
    .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["name"], "Bob B.");
    let msg = expect_msg(&mut alice, "participant-updated", |m| {
        matches!(m, ServerMessage::ParticipantUpdated { .. })
    })
    .await;
    let ServerMessage::ParticipantUpdated { participant } = msg else {
        unreachable!()
    };
    assert_eq!(participant.name, "Bob B.");
    assert_eq!(participant.metadata.as_deref(), Some("{\"role\":\"host\"}"));
    let (status, _) = call(addr, "PATCH", &path, r#"{"nmae":"x"}"#, "ops").await;
    assert_eq!(status, 400);

    // A data message from the server to the room.
    let (status, sent) = call(
        addr,
        "POST",
        "/api/rooms/ops/data",
        r#"{"topic":"notice","payload":{"text":"recording starts"}}"#,
        "ops",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(sent["sent"], 2);
    let msg = expect_msg(&mut alice, "data", |m| {
        matches!(m, ServerMessage::Data { .. })
    })
    .await;
    assert_eq!(
        msg,
        ServerMessage::Data {
            from: None,
            topic: Some("notice".into()),
            payload: serde_json::json!({"text": "recording starts"}),
        }
    );

    // Remove bob: he is told why, alice sees him leave.
    let (status, _) = call(addr, "DELETE", &path, r#"{"reason":"bye"}"#, "ops").await;
    assert_eq!(status, 200);
    let msg = expect_msg(&mut bob, "removal", |m| m.error_code() == Some("removed")).await;
    assert!(matches!(msg, ServerMessage::Error { message, .. } if message == "bye"));
    expect_msg(&mut alice, "bob leaving", |m| matches!(m, ServerMessage::ParticipantLeft { participant_id } if *participant_id == bob_id)).await;
    let (status, _) = call(addr, "DELETE", &path, "", "ops").await;
    assert_eq!(status, 404, "already gone");

    // Close the room: alice is removed with the reason, the room is gone.
    let (status, _) = call(addr, "DELETE", "/api/rooms/ops", "", "ops").await;
    assert_eq!(status, 200);
    let msg = expect_msg(&mut alice, "room closed", |m| {
        m.error_code() == Some("removed")
    })
    .await;
    assert!(matches!(msg, ServerMessage::Error { message, .. } if message.contains("closed")));
    for _ in 0..50 {
        if call(addr, "GET", "/api/rooms/ops", "", "ops").await.0 == 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(call(addr, "GET", "/api/rooms/ops", "", "ops").await.0, 404);
    assert_eq!(
        call(addr, "DELETE", "/api/rooms/ops", "", "ops").await.0,
        404
    );
}
