//! The app features' server side with real peers: chat over each member's `confab` data channel
//! (stamped identity and time, spoofing refused, the `canPublishData` grant, the rate limit, the
//! history a late joiner gets), track sources (a screen share is announced as one), self mutes
//! relayed to the others and shown to later joiners, and `connection-quality`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use confab::config::Config;
use confab_client::signaling::ServerMessage;
use confab_client::synth::VideoCodec;
use confab_client::{Client, ClientConfig, ClientEvent};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

fn config() -> Config {
    let mut c = test_config();
    c.auth.keys.insert(TEST_KEY.into(), TEST_SECRET.into());
    c
}

/// A chat member of `room` (receive-only, or publishing audio + video).
fn member(url: &str, room: &str, name: &str, publish: bool) -> ClientConfig {
    let mut cfg = if publish {
        publisher(url, room, name, 0)
    } else {
        subscriber(url, room, name)
    };
    cfg.chat = true;
    cfg.token = Some(test_token(room, name, publish));
    cfg
}

/// The next chat frame of `kind` (`chat`, `chat-history`, `chat-rejected`), skipping others.
async fn next_frame(client: &mut Client, kind: &str) -> Value {
    let events = collect_events(client, kind, WAIT, |seen| {
        seen.iter()
            .any(|e| matches!(e, ClientEvent::ChatFrame(v) if v["type"] == kind))
    })
    .await;
    events
        .into_iter()
        .find_map(|e| match e {
            ClientEvent::ChatFrame(v) if v["type"] == kind => Some(v),
            _ => None,
        })
        .expect("found")
}

/// Chat frames of `kind` that arrive within `quiet`.
async fn frames_within(client: &mut Client, kind: &str, quiet: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + quiet;
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, client.next_event()).await {
        if let ClientEvent::ChatFrame(v) = ev {
            if v["type"] == kind {
                out.push(v);
            }
        }
    }
    out
}

async fn chat_member(url: &str, room: &str, name: &str, publish: bool) -> (Client, Value) {
    let mut c = connect(member(url, room, name, publish)).await;
    let history = next_frame(&mut c, "chat-history").await;
    (c, history)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_is_stamped_by_the_server_limited_and_kept_for_late_joiners() {
    let server = start_server_with(config()).await;
    let url = ws_url(&server);
    let (mut alice, history) = chat_member(&url, "chat", "alice", true).await;
    assert_eq!(
        history["messages"],
        serde_json::json!([]),
        "a new room has no history"
    );
    let (mut bob, _) = chat_member(&url, "chat", "bob", true).await;
    let (mut carol, _) = chat_member(&url, "chat", "carol", false).await;

    alice
        .chat_send(r#"{"type":"chat","text":"hello","client_id":"a1"}"#)
        .await
        .expect("send");
    let echo = next_frame(&mut alice, "chat").await;
    assert_eq!(
        echo["client_id"], "a1",
        "the sender's copy names its client id"
    );
    for (who, c) in [("bob", &mut bob), ("carol", &mut carol)] {
        let m = next_frame(c, "chat").await;
        assert_eq!(m["text"], "hello", "{who}");
        assert_eq!(m["from"], alice.participant_id(), "{who}: stamped sender");
        assert_eq!(m["name"], "alice", "{who}");
        assert!(
            m.get("client_id").is_none(),
            "{who}: only the sender sees its client id"
        );
        assert_eq!(m["id"], echo["id"]);
        let ts = m["ts"].as_u64().expect("ts");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64;
        assert!(
            ts <= now_ms && now_ms - ts < 10_000,
            "{who}: server time {ts} vs {now_ms}"
        );
    }

    // Bob pretends to be Alice: refused, and nobody sees it.
    let spoof = format!(
        r#"{{"type":"chat","text":"I am alice","from":"{}","name":"alice","client_id":"b0"}}"#,
        alice.participant_id()
    );
    bob.chat_send(&spoof).await.expect("send");
    let refused = next_frame(&mut bob, "chat-rejected").await;
    assert_eq!(refused["reason"], "spoofed");
    assert_eq!(refused["client_id"], "b0");
    bob.chat_send("not json").await.expect("send");
    assert_eq!(
        next_frame(&mut bob, "chat-rejected").await["reason"],
        "malformed"
    );

    // Carol's token has no canPublishData.
    carol
        .chat_send(r#"{"type":"chat","text":"hi"}"#)
        .await
        .expect("send");
    assert_eq!(
        next_frame(&mut carol, "chat-rejected").await["reason"],
        "not_allowed"
    );

    // A burst of five, then the limit.
    for i in 0..6 {
        let f = format!(r#"{{"type":"chat","text":"b{i}","client_id":"b{i}"}}"#);
        bob.chat_send(&f).await.expect("send");
    }
    let limited = next_frame(&mut bob, "chat-rejected").await;
    assert_eq!(limited["reason"], "rate_limited");
    assert_eq!(limited["client_id"], "b5");
    let retry = limited["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!((1..=1000).contains(&retry), "retry after {retry} ms");
    let seen = frames_within(&mut alice, "chat", Duration::from_secs(2)).await;
    let texts: Vec<&str> = seen.iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(
        texts,
        ["b0", "b1", "b2", "b3", "b4"],
        "alice saw exactly bob's allowed messages"
    );
    assert!(seen.iter().all(|m| m["from"] == bob.participant_id()));

    // A late joiner gets the history, oldest first, as stamped.
    let (_dave, history) = chat_member(&url, "chat", "dave", false).await;
    let messages = history["messages"].as_array().expect("messages");
    let texts: Vec<&str> = messages.iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(texts, ["hello", "b0", "b1", "b2", "b3", "b4"]);
    assert_eq!(messages[0]["from"], alice.participant_id());
    assert!(messages.iter().all(|m| m.get("client_id").is_none()));
    let ids: Vec<u64> = messages.iter().filter_map(|m| m["id"].as_u64()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_self_mutes_and_connection_quality_reach_the_others() {
    let server = start_server().await;
    let url = ws_url(&server);
    let mut watcher = connect(subscriber(&url, "share", "watcher")).await;
    let mut cfg =
        ClientConfig::new(&url, "share", "presenter").publishing(0, true, Some(VideoCodec::Vp8));
    cfg.video_source = Some("screen".into());
    let presenter = connect(cfg).await;
    let pid = presenter.participant_id().to_owned();

    let events = collect_events(&mut watcher, "both tracks published", WAIT, |seen| {
        seen.iter()
            .filter(|e| matches!(e, ClientEvent::Signal(ServerMessage::TrackPublished { .. })))
            .count()
            == 2
    })
    .await;
    let sources: HashMap<String, String> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Signal(ServerMessage::TrackPublished {
                participant_id,
                kind,
                source,
                ..
            }) if *participant_id == pid => Some((format!("{kind:?}"), source.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(sources.get("Video").map(String::as_str), Some("screen"));
    assert_eq!(sources.get("Audio").map(String::as_str), Some("microphone"));

    presenter.send_mute("audio0", true).expect("mute");
    let events = collect_events(&mut watcher, "the relayed self mute", WAIT, |seen| {
        seen.iter()
            .any(|e| matches!(e, ClientEvent::Signal(ServerMessage::TrackMuted { .. })))
    })
    .await;
    let muted = events.iter().find_map(|e| match e {
        ClientEvent::Signal(ServerMessage::TrackMuted {
            participant_id,
            source_track_id,
            by_server,
            ..
        }) => Some((participant_id.clone(), source_track_id.clone(), *by_server)),
        _ => None,
    });
    assert_eq!(muted, Some((pid.clone(), "audio0".to_owned(), false)));

    // A later joiner sees the screen and the muted microphone in `joined`.
    let late = connect(subscriber(&url, "share", "late")).await;
    let p = late
        .initial_participants()
        .iter()
        .find(|p| p.id == pid)
        .expect("presenter listed");
    let audio = p
        .tracks
        .iter()
        .find(|t| t.source == "microphone")
        .expect("mic");
    assert!(
        audio.self_muted && !audio.muted,
        "self muted, not by the server"
    );
    assert!(p
        .tracks
        .iter()
        .any(|t| t.source == "screen" && !t.self_muted));

    // Every member hears every member's quality; loopback is clean.
    let events = collect_events(&mut watcher, "connection-quality", WAIT, |seen| {
        seen.iter().any(|e| {
            matches!(e, ClientEvent::Signal(ServerMessage::ConnectionQuality { qualities })
                if qualities.len() == 3)
        })
    })
    .await;
    let q = events
        .iter()
        .rev()
        .find_map(|e| match e {
            ClientEvent::Signal(ServerMessage::ConnectionQuality { qualities }) => {
                Some(qualities.clone())
            }
            _ => None,
        })
        .expect("quality");
    let presenter_q = q
        .iter()
        .find(|e| e.participant_id == pid)
        .expect("presenter");
    assert_eq!(presenter_q.quality, "excellent", "{q:?}");
    assert!(presenter_q.loss < 0.02, "{q:?}");
    drop(presenter);
}
