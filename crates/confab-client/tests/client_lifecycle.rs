//! Closed clients release what they hold: after rounds of joining, exchanging media and closing,
//! the process is back to its baseline of open file descriptors (UDP sockets of the peer
//! connections, WebSockets on both sides) and the room is gone. Guards the load tester against
//! the async WebRTC layer keeping closed connections alive (webrtc-rs/webrtc#906).
//! Alone in its test binary, so no other test's sockets disturb the count.

mod common;

use std::time::Duration;

use common::*;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_clients_release_their_sockets() {
    let server = start_server().await;
    let url = ws_url(&server);
    // Let the server's listeners settle before taking the baseline.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = open_fds();
    for round in 0..3 {
        let a = connect(publisher(&url, "life", "a", 1)).await;
        let b = connect(publisher(&url, "life", "b", 2)).await;
        let s = connect(subscriber(&url, "life", "s")).await;
        let (a_id, b_id) = (a.participant_id().to_owned(), b.participant_id().to_owned());
        wait_until(
            &format!("round {round}: media to flow"),
            MEDIA_TIMEOUT,
            || receives_av(&s, &a_id, 5, 5) && receives_av(&s, &b_id, 5, 5),
            || describe(&s),
        )
        .await;
        assert!(open_fds() > baseline, "connections hold sockets while open");
        for c in [a, b, s] {
            c.close().await;
        }
        wait_until(
            &format!("round {round}: sockets to be released"),
            Duration::from_secs(10),
            || open_fds() <= baseline && server.rooms.is_empty(),
            || {
                format!(
                    "{} fds open (baseline {baseline}), {} rooms",
                    open_fds(),
                    server.rooms.len()
                )
            },
        )
        .await;
    }
}
