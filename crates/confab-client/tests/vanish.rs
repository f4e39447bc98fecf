//! A participant whose network goes silent (media cut, signaling still open — a network cut
//! under a long-lived WebSocket, or a frozen tab) is removed within the disconnect timeout,
//! and the others are told and renegotiated.
//!
//! Media runs through a UDP relay the test controls: the server advertises 127.0.0.2 (also
//! loopback), where the relay listens on the server's port and forwards to 127.0.0.1.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use confab_client::signaling::ServerMessage;
use confab_client::ClientEvent;
use tokio::net::UdpSocket;

/// Relays datagrams between clients (talking to `front`) and the server (`back`); drops
/// everything while `cut` is set.
async fn relay(front: Arc<UdpSocket>, back: SocketAddr, cut: Arc<AtomicBool>) {
    let mut upstream: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok((n, client)) = front.recv_from(&mut buf).await else {
            return;
        };
        if cut.load(Ordering::Relaxed) {
            continue;
        }
        let up = match upstream.get(&client) {
            Some(u) => u.clone(),
            None => {
                let u = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind upstream"));
                upstream.insert(client, u.clone());
                // Server → client direction for this client.
                let (front, cut, u2) = (front.clone(), cut.clone(), u.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 2048];
                    while let Ok(n) = u2.recv(&mut buf).await {
                        if !cut.load(Ordering::Relaxed) {
                            let _ = front.send_to(&buf[..n], client).await;
                        }
                    }
                });
                u.connect(back).await.expect("connect upstream");
                u
            }
        };
        let _ = up.send(&buf[..n]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_whose_media_goes_silent_is_removed() {
    let mut cfg = test_config();
    cfg.media.advertise_ip = Some("127.0.0.2".parse().unwrap());
    cfg.media.disconnect_timeout = Duration::from_secs(2);
    let server = start_server_with(cfg).await;
    let front = Arc::new(
        UdpSocket::bind(SocketAddr::new(
            "127.0.0.2".parse().unwrap(),
            server.media_addr.port(),
        ))
        .await
        .expect("relay binds 127.0.0.2 on the server's port"),
    );
    let cut = Arc::new(AtomicBool::new(false));
    tokio::spawn(relay(front, server.media_addr, cut.clone()));

    let url = ws_url(&server);
    let a = connect(publisher(&url, "vanish", "alice", 0)).await;
    let mut b = connect(publisher(&url, "vanish", "bob", 1)).await;
    let (a_id, b_id) = (a.participant_id().to_owned(), b.participant_id().to_owned());
    wait_until(
        "bob receives alice",
        MEDIA_TIMEOUT,
        || receives_av(&b, &a_id, 20, 20),
        || describe(&b),
    )
    .await;
    wait_until(
        "alice receives bob",
        MEDIA_TIMEOUT,
        || receives_av(&a, &b_id, 20, 20),
        || describe(&a),
    )
    .await;

    // Cut the network for everyone; alice's signaling stays up, and so does bob's. Both
    // vanish from the media plane; the server must notice on its own.
    cut.store(true, Ordering::Relaxed);
    let cut_at = Instant::now();
    let left = b
        .wait_for("participant-left", Duration::from_secs(30), |e| {
            matches!(
                e,
                ClientEvent::Signal(ServerMessage::ParticipantLeft { .. })
            ) || matches!(e, ClientEvent::Signal(ServerMessage::Error { .. }))
        })
        .await;
    let removed_after = cut_at.elapsed();
    assert!(left.is_ok(), "no removal within 30 s: {left:?}");
    println!("vanish: removed {removed_after:?} after the media cut (disconnect timeout 2 s)");
    // ICE notices silence first (seconds), then the disconnect timeout applies.
    assert!(
        removed_after < Duration::from_secs(20),
        "removal took {removed_after:?}"
    );
    wait_until(
        "the room to be empty of media sessions",
        Duration::from_secs(20),
        || server.rooms.is_empty(),
        || format!("rooms: {}", server.rooms.len()),
    )
    .await;
    a.close().await;
    b.close().await;
}
