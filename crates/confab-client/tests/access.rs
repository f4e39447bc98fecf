//! Access control: token cases on the signaling socket (none, expired, bad signature, wrong
//! room, valid), subscribe-only grants enforced on the media path, one session per identity,
//! the room API behind tokens, and the WebSocket `Origin` check.

mod common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use confab::auth::{Auth, Claims, TokenRequest};
use confab::config::Config;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = TEST_KEY;
const SECRET: &str = TEST_SECRET;

fn auth() -> Auth {
    test_auth()
}

fn token(room: &str, identity: &str, publish: bool) -> String {
    test_token(room, identity, publish)
}

fn config() -> Config {
    let mut c = test_config();
    c.auth.keys.insert(KEY.into(), SECRET.into());
    c.http.allowed_origins = vec!["https://meet.example".into()];
    c
}

/// Sends `join` with `token` and returns the first reply and whether the socket then closed.
async fn join_with(url: &str, room: &str, token: Option<&str>) -> (serde_json::Value, bool) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    let mut join = serde_json::json!({"type": "join", "room": room, "name": "x"});
    if let Some(t) = token {
        join["token"] = serde_json::Value::from(t);
    }
    ws.send(Message::text(join.to_string())).await.unwrap();
    let first = within("reply", SIGNAL_TIMEOUT, ws.next())
        .await
        .expect("a reply")
        .expect("frame");
    let reply: serde_json::Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    let closed = matches!(
        tokio::time::timeout(Duration::from_secs(3), ws.next()).await,
        Ok(None) | Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_)))
    );
    (reply, closed)
}

fn expired_token(room: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = Claims {
        iss: KEY.into(),
        sub: "late".into(),
        name: None,
        nbf: now - 7200,
        exp: now - 3600,
        video: confab::auth::VideoGrant {
            room: Some(room.into()),
            room_join: true,
            ..Default::default()
        },
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_need_a_valid_token_for_that_room() {
    let server = start_server_with(config()).await;
    let url = ws_url(&server);
    let forged = Auth::new(HashMap::from([(
        KEY.to_owned(),
        "another-secret".to_owned(),
    )]))
    .issue(
        KEY,
        &TokenRequest {
            room: Some("r".into()),
            identity: "mallory".into(),
            name: None,
            ttl: Duration::from_secs(600),
            can_publish: true,
            can_subscribe: true,
            admin: false,
        },
    )
    .unwrap();
    let cases = [
        ("no token", None, "required"),
        ("expired", Some(expired_token("r")), "expired"),
        ("bad signature", Some(forged), "signature"),
        ("wrong room", Some(token("other", "alice", true)), "room"),
        ("garbage", Some("abc.def.ghi".to_owned()), "malformed"),
    ];
    for (label, t, needle) in cases {
        let (reply, closed) = join_with(&url, "r", t.as_deref()).await;
        assert_eq!(reply["type"], "error", "{label}: {reply}");
        assert_eq!(reply["code"], "unauthorized", "{label}: {reply}");
        assert!(
            reply["message"].as_str().unwrap_or("").contains(needle),
            "{label}: {reply}"
        );
        assert!(closed, "{label}: the socket must close after unauthorized");
    }
    assert!(
        server.rooms.is_empty(),
        "no room was created by refused joins"
    );
    let (reply, _) = join_with(&url, "r", Some(&token("r", "alice", true))).await;
    assert_eq!(reply["type"], "joined", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_only_grants_are_enforced_on_the_media_path() {
    let server = start_server_with(config()).await;
    let url = ws_url(&server);
    let mut silent = publisher(&url, "grants", "viewer", 1);
    silent.token = Some(token("grants", "viewer", false));
    let mut speaker = publisher(&url, "grants", "speaker", 0);
    speaker.token = Some(token("grants", "speaker", true));
    let mut watcher = subscriber(&url, "grants", "watcher");
    watcher.token = Some(token("grants", "watcher", true));
    let silent = connect(silent).await;
    let speaker = connect(speaker).await;
    let watcher = connect(watcher).await;
    let speaker_id = speaker.participant_id().to_owned();
    let silent_id = silent.participant_id().to_owned();
    wait_until(
        "watcher receives the speaker",
        MEDIA_TIMEOUT,
        || receives_av(&watcher, &speaker_id, 20, 20),
        || describe(&watcher),
    )
    .await;
    // The subscribe-only participant still receives, but nothing of it is forwarded.
    wait_until(
        "the subscribe-only participant receives the speaker",
        MEDIA_TIMEOUT,
        || receives_av(&silent, &speaker_id, 20, 20),
        || describe(&silent),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        silent.sent().iter().any(|t| t
            .counters
            .packets
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0),
        "the subscribe-only client did try to publish"
    );
    assert_eq!(
        unique_from(&watcher, &silent_id),
        0,
        "media of a no-publish grant was forwarded: {}",
        describe(&watcher)
    );
    silent.close().await;
    speaker.close().await;
    watcher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_join_with_the_same_identity_replaces_the_first() {
    let server = start_server_with(config()).await;
    let url = ws_url(&server);
    let (mut first, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let join = serde_json::json!({"type": "join", "room": "id", "name": "a", "token": token("id", "alice", true)});
    first.send(Message::text(join.to_string())).await.unwrap();
    let joined = within("joined", SIGNAL_TIMEOUT, first.next())
        .await
        .unwrap()
        .unwrap();
    assert!(joined.to_text().unwrap().contains("joined"));
    let (reply, _) = join_with(&url, "id", Some(&token("id", "alice", true))).await;
    assert_eq!(reply["type"], "joined");
    let mut removed = false;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), first.next()).await {
        if m.to_text().unwrap_or("").contains(r#""code":"removed""#) {
            removed = true;
            break;
        }
    }
    assert!(removed, "the first session was not told it was replaced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_api_needs_an_admin_token_and_shows_the_call() {
    let server = start_server_with(config()).await;
    let url = ws_url(&server);
    let mut a = publisher(&url, "api", "alice", 0);
    a.token = Some(token("api", "alice", true));
    let a = connect(a).await;
    let (status, _) = http_get(server.http_addr, "/api/rooms", "").await;
    assert_eq!(status, 401);
    let (status, _) = http_get(
        server.http_addr,
        "/api/rooms",
        &format!("Authorization: Bearer {}\r\n", token("api", "alice", true)),
    )
    .await;
    assert_eq!(
        status, 403,
        "a join token is valid but not an admin token: forbidden, not unauthenticated"
    );
    let admin = auth()
        .issue(
            KEY,
            &TokenRequest {
                room: None,
                identity: "ops".into(),
                name: None,
                ttl: Duration::from_secs(60),
                can_publish: false,
                can_subscribe: false,
                admin: true,
            },
        )
        .unwrap();
    let bearer = format!("Authorization: Bearer {admin}\r\n");
    let deadline = std::time::Instant::now() + MEDIA_TIMEOUT;
    let body = loop {
        let (status, text) = http_get(server.http_addr, "/api/rooms/api", &bearer).await;
        if status == 200 && text.contains(r#""kind":"video""#) && text.contains("connected") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "room API never showed the call: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(body.contains(a.participant_id()), "{body}");
    assert!(body.contains(r#""connection_state":"connected""#), "{body}");
    let (status, list) = http_get(server.http_addr, "/api/rooms", &bearer).await;
    assert_eq!(status, 200);
    assert!(list.contains(r#""name":"api""#), "{list}");
    let (status, _) = http_get(server.http_addr, "/api/rooms/nope", &bearer).await;
    assert_eq!(status, 404);
    a.close().await;
}

#[tokio::test]
async fn websocket_origin_must_be_allowed() {
    let server = start_server_with(config()).await;
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let (status, _) = http_get(
        server.http_addr,
        "/ws",
        &format!("{upgrade}Origin: https://evil.example\r\n"),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = http_get(
        server.http_addr,
        "/ws",
        &format!("{upgrade}Origin: https://meet.example\r\n"),
    )
    .await;
    assert_eq!(status, 101);
}
