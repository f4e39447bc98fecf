//! Signaling error handling over a plain WebSocket (no WebRTC): each malformed or out-of-order
//! message gets its error code, and the same connection still answers `ping` afterwards. Also:
//! an empty room is deleted once its last participant has left.

mod common;

use std::time::Duration;

use common::*;
use confab_client::signaling::{
    self, ClientMessage, ServerMessage, SignalOptions, SignalReceiver, SignalSender,
};

async fn open(url: &str) -> (SignalSender, SignalReceiver) {
    // No automatic pings: every reply on this socket must be one the test asked for.
    within(
        "the WebSocket to open",
        SIGNAL_TIMEOUT,
        signaling::connect(
            url,
            SignalOptions {
                ping_interval: None,
            },
        ),
    )
    .await
    .expect("WebSocket connects")
}

async fn next(rx: &mut SignalReceiver, what: &str) -> ServerMessage {
    match within(what, SIGNAL_TIMEOUT, rx.recv()).await {
        Ok(m) => m,
        Err(e) => panic!("waiting for {what}: {e}"),
    }
}

/// The next message must be `error {code}`; then `ping` must still get `pong`.
async fn expect_error_then_pong(tx: &SignalSender, rx: &mut SignalReceiver, code: &str) {
    let m = next(rx, &format!("error {code}")).await;
    assert_eq!(
        m.error_code(),
        Some(code),
        "expected error {code}, got {m:?}"
    );
    tx.send(&ClientMessage::Ping).expect("socket open");
    let m = next(rx, &format!("pong after {code}")).await;
    assert_eq!(
        m,
        ServerMessage::Pong,
        "after {code} the connection must answer ping"
    );
}

fn join(room: &str, name: &str) -> ClientMessage {
    ClientMessage::Join {
        room: room.into(),
        name: name.into(),
        token: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_keeps_the_connection_usable() {
    let server = start_server().await;
    let url = ws_url(&server);
    let (tx, mut rx) = open(&url).await;

    tx.send_text("{this is not json").expect("send");
    expect_error_then_pong(&tx, &mut rx, "bad_message").await;

    tx.send_text(r#"{"type":"dance","steps":3}"#).expect("send");
    expect_error_then_pong(&tx, &mut rx, "unknown_type").await;

    tx.send_binary(vec![1, 2, 3]).expect("send");
    expect_error_then_pong(&tx, &mut rx, "bad_message").await;

    let big = format!(
        r#"{{"type":"offer","sdp":"{}"}}"#,
        "a".repeat(64 * 1024 + 1)
    );
    tx.send_text(big).expect("send");
    expect_error_then_pong(&tx, &mut rx, "message_too_large").await;

    tx.send(&ClientMessage::Offer {
        sdp: "v=0\r\n".into(),
        sources: Default::default(),
    })
    .expect("send");
    expect_error_then_pong(&tx, &mut rx, "not_joined").await;

    tx.send(&join("bad room!", "alice")).expect("send");
    expect_error_then_pong(&tx, &mut rx, "invalid_room").await;

    tx.send(&join("errors", "alice")).expect("send");
    let m = next(&mut rx, "joined").await;
    assert!(
        matches!(m, ServerMessage::Joined { .. }),
        "expected joined, got {m:?}"
    );
    assert_eq!(server.rooms.len(), 1);

    tx.send(&join("errors", "alice")).expect("send");
    expect_error_then_pong(&tx, &mut rx, "already_joined").await;

    tx.send(&ClientMessage::Offer {
        sdp: "this is not an SDP".into(),
        sources: Default::default(),
    })
    .expect("send");
    expect_error_then_pong(&tx, &mut rx, "bad_sdp").await;

    tx.send(&ClientMessage::Mute {
        track_id: "no-such-track".into(),
        muted: true,
    })
    .expect("send");
    expect_error_then_pong(&tx, &mut rx, "unknown_track").await;

    tx.send(&ClientMessage::Answer {
        sdp: "v=0\r\n".into(),
    })
    .expect("send");
    expect_error_then_pong(&tx, &mut rx, "unexpected_answer").await;

    // Closing the socket removes the participant; the empty room goes away.
    tx.close();
    wait_until(
        "the empty room to be deleted",
        Duration::from_secs(5),
        || server.rooms.is_empty(),
        || format!("{} rooms", server.rooms.len()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_is_deleted_after_the_last_participant_leaves() {
    let server = start_server().await;
    let url = ws_url(&server);
    let (tx1, mut rx1) = open(&url).await;
    let (tx2, mut rx2) = open(&url).await;
    tx1.send(&join("lobby", "one")).expect("send");
    assert!(matches!(
        next(&mut rx1, "joined").await,
        ServerMessage::Joined { .. }
    ));
    tx2.send(&join("lobby", "two")).expect("send");
    assert!(matches!(
        next(&mut rx2, "joined").await,
        ServerMessage::Joined { .. }
    ));
    let m = next(&mut rx1, "participant-joined").await;
    assert!(
        matches!(m, ServerMessage::ParticipantJoined { .. }),
        "{m:?}"
    );
    assert_eq!(server.rooms.len(), 1);

    // The first leaves politely: the room stays for the second.
    tx1.send(&ClientMessage::Leave).expect("send");
    let m = next(&mut rx2, "participant-left").await;
    assert!(matches!(m, ServerMessage::ParticipantLeft { .. }), "{m:?}");
    assert_eq!(server.rooms.len(), 1, "one member left: the room stays");

    // The second leaves too: the room is deleted.
    tx2.send(&ClientMessage::Leave).expect("send");
    wait_until(
        "the empty room to be deleted",
        Duration::from_secs(5),
        || server.rooms.is_empty(),
        || format!("{} rooms", server.rooms.len()),
    )
    .await;

    // The name can be used again (a fresh room).
    let (tx3, mut rx3) = open(&url).await;
    tx3.send(&join("lobby", "three")).expect("send");
    let m = next(&mut rx3, "joined").await;
    assert!(
        matches!(&m, ServerMessage::Joined { participants, .. } if participants.is_empty()),
        "a fresh room has no members: {m:?}"
    );
}
