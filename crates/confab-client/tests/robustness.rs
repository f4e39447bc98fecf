//! Robustness: join/leave churn leaves nothing behind; hostile datagrams and signaling floods
//! during a call are dropped and counted while the call goes on.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn metric_labeled(exposition: &str, name_and_labels: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(name_and_labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[derive(Debug, Clone, Copy)]
struct Usage {
    rooms: f64,
    participants: f64,
    tasks: f64,
    fds: f64,
    rss_mib: f64,
}

async fn usage(http: SocketAddr) -> Usage {
    let m = http_get(http, "/metrics", "").await.1;
    Usage {
        rooms: metric_sum(&m, "confab_rooms"),
        participants: metric_sum(&m, "confab_participants"),
        tasks: metric_sum(&m, "confab_runtime_tasks"),
        fds: metric_sum(&m, "process_open_fds"),
        rss_mib: metric_sum(&m, "process_resident_memory_bytes") / 1048576.0,
    }
}

/// One participant's life: join, connect (publishers also send), then leave politely or vanish.
async fn cycle(url: String, i: usize) {
    let room = format!("churn-{}", i % 5);
    let cfg = if i.is_multiple_of(2) {
        publisher(&url, &room, &format!("p{i}"), i as u32)
    } else {
        subscriber(&url, &room, &format!("s{i}"))
    };
    let c = connect(cfg).await;
    let connected = Instant::now() + Duration::from_secs(10);
    while !c.is_connected() && Instant::now() < connected {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100 + (i % 7) as u64 * 30)).await;
    if i.is_multiple_of(3) {
        c.close().await; // abrupt: no `leave`, sockets just go
    } else {
        c.leave().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_of_200_participants_leaves_nothing_behind() {
    let server = spawn_server(&[
        ("CONFAB_LIMITS__JOINS_PER_SECOND_PER_IP", "0"),
        ("CONFAB_MEDIA__DISCONNECT_TIMEOUT", "2s"),
    ]);
    let url = format!("ws://{}/ws", server.http);
    // Warm up once so lazily created state (metrics, pools) is in the baseline.
    cycle(url.clone(), 1).await;
    cycle(url.clone(), 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = usage(server.http).await;

    const CYCLES: usize = 200;
    const CONCURRENT: usize = 8;
    let started = Instant::now();
    for batch in (0..CYCLES).collect::<Vec<_>>().chunks(CONCURRENT) {
        let tasks: Vec<_> = batch
            .iter()
            .map(|&i| tokio::spawn(cycle(url.clone(), i)))
            .collect();
        for t in tasks {
            t.await.expect("cycle");
        }
    }
    let churn_secs = started.elapsed().as_secs_f64();

    // Everything returns to the baseline (abrupt leavers included).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut after = usage(server.http).await;
    while Instant::now() < deadline
        && (after.rooms > 0.0
            || after.participants > 0.0
            || after.tasks > before.tasks
            || after.fds > before.fds)
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = usage(server.http).await;
    }
    println!(
        "churn: {CYCLES} cycles in {churn_secs:.1} s; before {before:?}; after {after:?}; RSS growth {:.1} MiB",
        after.rss_mib - before.rss_mib
    );
    assert_eq!(after.rooms, 0.0, "rooms left: {after:?}");
    assert_eq!(after.participants, 0.0, "participants left: {after:?}");
    assert!(
        after.tasks <= before.tasks,
        "tasks leaked: {before:?} -> {after:?}"
    );
    assert!(
        after.fds <= before.fds,
        "fds leaked: {before:?} -> {after:?}"
    );
    assert!(
        after.rss_mib - before.rss_mib < 64.0,
        "resident memory grew by {:.1} MiB over {CYCLES} cycles",
        after.rss_mib - before.rss_mib
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_datagrams_and_signaling_floods_do_not_disturb_a_call() {
    let server = start_server().await;
    let url = ws_url(&server);
    let (a, b) = short_call(&url, "hostile").await;
    let from = a.participant_id().to_owned();
    let before = http_get(server.http_addr, "/metrics", "").await.1;

    // Garbage, STUN for a ufrag nobody has, oversize datagrams, then a flood — all from an
    // address the server never learned.
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let media = server.media_addr;
    let mut stun = vec![0x00, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[9; 12]);
    stun.extend_from_slice(&[0x00, 0x06, 0x00, 0x08]);
    stun.extend_from_slice(b"nobody:x");
    for i in 0..2000u32 {
        let garbage: Vec<u8> = (0..(40 + i % 200))
            .map(|j| (i * 31 + j * 7) as u8)
            .collect();
        let _ = sock.send_to(&garbage, media).await;
        if i % 4 == 0 {
            let _ = sock.send_to(&stun, media).await;
        }
        if i % 10 == 0 {
            let _ = sock.send_to(&[0x80u8; 4000], media).await;
            // Paced so the kernel buffer keeps up (these counts are asserted below).
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let flood_until = Instant::now() + Duration::from_secs(2);
    let mut flood = 0u64;
    while Instant::now() < flood_until {
        for _ in 0..200 {
            let _ = sock
                .send_to(&[0x90, 0x60, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], media)
                .await;
            flood += 1;
        }
        tokio::task::yield_now().await;
    }

    // A signaling flood from a third participant: excess is refused with rate_limited, and the
    // connection still answers afterwards.
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    ws.send(Message::text(
        r#"{"type":"join","room":"hostile","name":"flooder"}"#,
    ))
    .await
    .unwrap();
    for _ in 0..500 {
        ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    }
    let mut limited = false;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && !limited {
        if let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
            limited |= m.to_text().unwrap_or("").contains("rate_limited");
        }
    }
    assert!(limited, "a ping flood got no rate_limited error");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    let mut pong = false;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && !pong {
        if let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
            pong |= m.to_text().unwrap_or("").contains("pong");
        }
    }
    assert!(pong, "the flooding connection is no longer usable");

    // The call went on: bob keeps receiving alice.
    let seen = unique_from(&b, &from);
    wait_until(
        "bob still receives alice after the attack",
        MEDIA_TIMEOUT,
        || unique_from(&b, &from) > seen + 50,
        || describe(&b),
    )
    .await;
    assert!(a.is_connected() && b.is_connected());
    let after = http_get(server.http_addr, "/metrics", "").await.1;
    let counted = |label: &str| {
        metric_labeled(
            &after,
            &format!("confab_forward_drops_total{{reason=\"{label}\"}}"),
        ) - metric_labeled(
            &before,
            &format!("confab_forward_drops_total{{reason=\"{label}\"}}"),
        )
    };
    let unknown = counted("unknown_peer");
    let bad = counted("bad_datagram");
    println!(
        "hostile: flood of {flood} datagrams; counted unknown_peer +{unknown}, bad_datagram +{bad}"
    );
    assert!(
        unknown >= 2000.0,
        "unknown-address datagrams counted: {unknown}"
    );
    assert!(bad >= 100.0, "oversize datagrams counted: {bad}");
    a.close().await;
    b.close().await;
}
