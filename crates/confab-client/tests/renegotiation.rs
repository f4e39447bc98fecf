//! Join/leave renegotiation and offer collisions:
//! - A and B publish; C joins later and receives both.
//! - B closes its socket: A and C get `participant-left` and `track-unpublished`, then a new
//!   server offer, and A↔C media keeps flowing.
//! - C's offer crosses a server offer: the server answers `offer_collision`, C (polite) rolls
//!   back, answers, offers again, and media keeps flowing.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use confab_client::signaling::ServerMessage;
use confab_client::{Client, ClientEvent};

fn is_signal(ev: &ClientEvent, f: impl Fn(&ServerMessage) -> bool) -> bool {
    matches!(ev, ClientEvent::Signal(m) if f(m))
}

/// Waits until `rx` has received at least `more` further packets from `from`.
async fn keeps_flowing(rx: &Client, from: &str, more: u64, label: &str) {
    let start = unique_from(rx, from);
    wait_until(
        &format!("{label}: {more} more packets"),
        MEDIA_TIMEOUT,
        || unique_from(rx, from) >= start + more,
        || describe(rx),
    )
    .await;
}

/// What `client` must see when `left` (which published `tracks`) leaves: track-unpublished
/// for each track, participant-left, then a server offer that it answers.
async fn sees_departure(client: &mut Client, left: &str, tracks: &HashSet<String>, label: &str) {
    let left = left.to_owned();
    let events = collect_events(
        client,
        &format!("{label} to see the departure and answer the new offer"),
        SIGNAL_TIMEOUT,
        |evs| {
            let gone = evs.iter().position(|e| {
                is_signal(e, |m| matches!(m, ServerMessage::ParticipantLeft { participant_id } if *participant_id == left))
            });
            let unpublished: HashSet<String> = evs
                .iter()
                .filter_map(|e| match e {
                    ClientEvent::Signal(ServerMessage::TrackUnpublished { participant_id, track_id })
                        if *participant_id == left => Some(track_id.clone()),
                    _ => None,
                })
                .collect();
            let answered_after = gone.is_some_and(|g| {
                evs[g..]
                    .iter()
                    .any(|e| matches!(e, ClientEvent::ServerOfferAnswered { .. }))
            });
            answered_after && unpublished.is_superset(tracks)
        },
    )
    .await;
    // The offer itself came as a signal too.
    assert!(
        events
            .iter()
            .any(|e| is_signal(e, |m| matches!(m, ServerMessage::Offer { .. }))),
        "{label}: no server offer after the departure"
    );
    assert!(
        !events.iter().any(|e| matches!(e, ClientEvent::Failure(_))),
        "{label}: negotiation failed: {events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_leave_and_offer_collision() {
    let server = start_server().await;
    let url = ws_url(&server);

    let mut a = connect(publisher(&url, "reneg", "a", 1)).await;
    let b = connect(publisher(&url, "reneg", "b", 2)).await;
    let (a_id, b_id) = (a.participant_id().to_owned(), b.participant_id().to_owned());
    wait_until(
        "A to receive B",
        MEDIA_TIMEOUT,
        || receives_av(&a, &b_id, 10, 10),
        || describe(&a),
    )
    .await;
    wait_until(
        "B to receive A",
        MEDIA_TIMEOUT,
        || receives_av(&b, &a_id, 10, 10),
        || describe(&b),
    )
    .await;

    // C joins later and receives both.
    let mut c = connect(publisher(&url, "reneg", "c", 3)).await;
    let c_id = c.participant_id().to_owned();
    assert_eq!(
        c.initial_participants().len(),
        2,
        "joined lists A and B: {:?}",
        c.initial_participants()
    );
    wait_until(
        "C to receive A",
        MEDIA_TIMEOUT,
        || receives_av(&c, &a_id, 10, 10),
        || describe(&c),
    )
    .await;
    wait_until(
        "C to receive B",
        MEDIA_TIMEOUT,
        || receives_av(&c, &b_id, 10, 10),
        || describe(&c),
    )
    .await;
    wait_until(
        "A to receive C",
        MEDIA_TIMEOUT,
        || receives_av(&a, &c_id, 10, 10),
        || describe(&a),
    )
    .await;
    assert_video_starts_with_keyframe(&c, &a_id, "C (late joiner) from A");
    assert_video_starts_with_keyframe(&c, &b_id, "C (late joiner) from B");
    assert_video_starts_with_keyframe(&a, &c_id, "A from C");

    // B leaves by closing its socket.
    let b_tracks: HashSet<String> = tracks_from(&a, &b_id)
        .into_iter()
        .map(|t| t.track_id)
        .collect();
    assert_eq!(b_tracks.len(), 2, "A knows B's two tracks");
    b.close().await;
    sees_departure(&mut a, &b_id, &b_tracks, "A").await;
    sees_departure(&mut c, &b_id, &b_tracks, "C").await;
    keeps_flowing(&c, &a_id, 100, "A→C after B left").await;
    keeps_flowing(&a, &c_id, 100, "C→A after B left").await;

    // Offer collision: C's offer crosses the server offer that D's tracks cause.
    c.force_glare();
    let d = connect(publisher(&url, "reneg", "d", 4)).await;
    let d_id = d.participant_id().to_owned();
    let events = collect_events(
        &mut c,
        "C to get offer_collision and then an answer",
        SIGNAL_TIMEOUT,
        |evs| {
            evs.iter()
                .position(|e| is_signal(e, |m| m.error_code() == Some("offer_collision")))
                .is_some_and(|i| {
                    evs[i..]
                        .iter()
                        .any(|e| matches!(e, ClientEvent::OfferAnswered))
                })
        },
    )
    .await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ClientEvent::ServerOfferAnswered { rolled_back: true })),
        "C rolled back its offer for the server's: {events:#?}"
    );
    assert!(
        !events.iter().any(|e| matches!(e, ClientEvent::Failure(_))),
        "C's negotiation failed: {events:#?}"
    );
    wait_until(
        "C to receive D",
        MEDIA_TIMEOUT,
        || receives_av(&c, &d_id, 10, 10),
        || describe(&c),
    )
    .await;
    keeps_flowing(&c, &a_id, 100, "A→C after the collision").await;
    keeps_flowing(&a, &c_id, 100, "C→A after the collision").await;
    keeps_flowing(&d, &c_id, 50, "C→D after the collision").await;
    assert_video_starts_with_keyframe(&d, &a_id, "D (late joiner) from A");
    assert_video_starts_with_keyframe(&d, &c_id, "D (late joiner) from C");
    assert_video_starts_with_keyframe(&c, &d_id, "C from D");

    // No negotiation failures anywhere, and nobody was removed.
    for (name, client) in [("A", &a), ("C", &c), ("D", &d)] {
        assert!(!client.is_stopped(), "{name} was disconnected");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    d.close().await;
    c.close().await;
    a.close().await;
}
