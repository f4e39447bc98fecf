//! A cluster for real: a `redis-server` (Debian package) started by the test and three `confab`
//! processes on loopback ports sharing it. Rooms spread by load; clients joining one room
//! through different nodes meet and exchange media; concurrent first joins through two nodes
//! agree on one node (50 times); a Redis restart mid-call drops nothing and placement refuses
//! new rooms only while Redis is away; killing the owning node lets its participants rejoin on
//! another node.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use confab_client::signaling::{self, ClientMessage, ServerMessage, SignalOptions};
use confab_client::{Client, ClientError};

/// A throwaway `redis-server` on a free loopback port, without persistence; killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Redis {
    fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) is installed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three nodes on `redis`, with a fast heartbeat (250 ms, 1 s TTL) so node loss shows quickly.
fn nodes(redis: &Redis) -> Vec<ServerProcess> {
    (1..=3)
        .map(|i| {
            let id = format!("n{i}");
            spawn_server(&[
                ("CONFAB_CLUSTER__REDIS_URL", &redis.url()),
                ("CONFAB_CLUSTER__NODE_ID", &id),
                ("CONFAB_CLUSTER__HEARTBEAT_INTERVAL", "250ms"),
                ("CONFAB_CLUSTER__NODE_TTL", "1s"),
                ("CONFAB_LIMITS__JOINS_PER_SECOND_PER_IP", "0"),
                ("CONFAB_LIMITS__JOINS_PER_MINUTE_PER_IDENTITY", "0"),
            ])
        })
        .collect()
}

fn url_of(node: &ServerProcess) -> String {
    format!("ws://{}/ws", node.http)
}

async fn get_json(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = http_get(addr, path, "").await;
    (
        status,
        serde_json::from_str(body_of(&body)).unwrap_or_default(),
    )
}

/// room → node, as `GET /api/rooms` on `addr` lists the cluster.
async fn placement(addr: SocketAddr) -> HashMap<String, String> {
    let (status, v) = get_json(addr, "/api/rooms").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["partial"], false, "every node answered: {v}");
    v["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_owned(),
                r["node"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Waits until all three nodes are registered (each sees the others when listing).
async fn wait_for_cluster(nodes: &[ServerProcess]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut up = 0;
        for n in nodes {
            let (_, m) = http_get(n.http, "/metrics", "").await;
            if metric_sum(&m, "confab_cluster_store_up") == 1.0 {
                up += 1;
            }
        }
        if up == nodes.len() {
            // One more heartbeat so every record is in.
            tokio::time::sleep(Duration::from_millis(300)).await;
            return;
        }
        assert!(Instant::now() < deadline, "the nodes did not register");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create_room(addr: SocketAddr, room: &str) -> u16 {
    let body = format!("{{\"name\":\"{room}\"}}");
    let (status, text) = http_request(
        addr,
        "POST",
        "/api/rooms",
        "Content-Type: application/json\r\n",
        &body,
    )
    .await;
    assert!(status == 200 || status == 201, "create {room}: {text}");
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_spread_by_load_and_clients_on_different_nodes_meet() {
    init_logging();
    let redis = Redis::start_on(free_port());
    let nodes = nodes(&redis);
    wait_for_cluster(&nodes).await;

    // Nine rooms created through one node land three on each (each placement counts as load).
    for i in 0..9 {
        create_room(nodes[0].http, &format!("spread{i}")).await;
    }
    let placed = placement(nodes[1].http).await;
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for node in placed.values() {
        *per_node.entry(node).or_default() += 1;
    }
    assert_eq!(placed.len(), 9, "{placed:?}");
    assert_eq!(per_node.len(), 3, "every node got rooms: {placed:?}");
    assert!(per_node.values().all(|&n| n == 3), "{per_node:?}");
    // Each node hosts its own three (its own metric says so).
    for n in &nodes {
        let (_, m) = http_get(n.http, "/metrics", "").await;
        assert_eq!(metric_sum(&m, "confab_rooms"), 3.0, "{}", n.http);
    }
    // The room API answers for any room from any node.
    let (status, room) = get_json(nodes[2].http, "/api/rooms/spread0").await;
    assert_eq!((status, room["name"].as_str()), (200, Some("spread0")));

    // A busy node gets no new room while idle ones are there: alice and bob in "meet" via two
    // different nodes, then the next room avoids the node hosting them.
    let alice = connect(publisher(&url_of(&nodes[0]), "meet", "alice", 0)).await;
    let bob = connect(subscriber(&url_of(&nodes[1]), "meet", "bob")).await;
    let from = alice.participant_id().to_owned();
    wait_until(
        "bob (via n2) receives alice (via n1)",
        MEDIA_TIMEOUT,
        || receives_av(&bob, &from, 20, 20),
        || describe(&bob),
    )
    .await;
    let placed = placement(nodes[2].http).await;
    let host = placed.get("meet").expect("meet is listed").clone();
    let (_, snapshot) = get_json(nodes[2].http, "/api/rooms/meet").await;
    assert_eq!(
        snapshot["participants"].as_array().map(Vec::len),
        Some(2),
        "both in one room: {snapshot}"
    );
    let mut relayed = 0.0;
    for n in &nodes {
        let (_, m) = http_get(n.http, "/metrics", "").await;
        relayed += metric_sum(&m, "confab_cluster_relayed_total");
        assert!(m.contains("node=\"n"), "samples carry the node label");
    }
    assert!(relayed >= 1.0, "at least one client was relayed");
    tokio::time::sleep(Duration::from_millis(600)).await; // a heartbeat publishes the load
    create_room(nodes[0].http, "after-meet").await;
    let placed = placement(nodes[0].http).await;
    assert_ne!(
        placed.get("after-meet"),
        Some(&host),
        "the next room avoided {host}, which hosts two participants more: {placed:?}"
    );
    alice.close().await;
    bob.close().await;
}

/// Joins `room` over a bare WebSocket (no media); returns the server's first answer.
async fn bare_join(
    url: &str,
    room: &str,
    name: &str,
) -> (
    signaling::SignalSender,
    signaling::SignalReceiver,
    ServerMessage,
) {
    let (tx, mut rx) = signaling::connect(
        url,
        SignalOptions {
            ping_interval: None,
        },
    )
    .await
    .expect("WebSocket connects");
    tx.send(&ClientMessage::Join {
        room: room.into(),
        name: name.into(),
        token: None,
    })
    .expect("socket open");
    let m = within("an answer to join", SIGNAL_TIMEOUT, rx.recv())
        .await
        .expect("an answer");
    (tx, rx, m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_joins_through_two_nodes_agree_on_one_node() {
    init_logging();
    let redis = Redis::start_on(free_port());
    let nodes = nodes(&redis);
    wait_for_cluster(&nodes).await;
    let (u1, u2) = (url_of(&nodes[0]), url_of(&nodes[1]));
    for i in 0..50 {
        let room = format!("race{i}");
        let (a, b) = tokio::join!(bare_join(&u1, &room, "a"), bare_join(&u2, &room, "b"));
        for (who, m) in [("a", &a.2), ("b", &b.2)] {
            assert!(
                matches!(m, ServerMessage::Joined { .. }),
                "{room}: {who} got {m:?}"
            );
        }
        let (status, snap) = get_json(nodes[2].http, &format!("/api/rooms/{room}")).await;
        assert_eq!(status, 200, "{room}: {snap}");
        assert_eq!(
            snap["participants"].as_array().map(Vec::len),
            Some(2),
            "{room}: both joins in one room: {snap}"
        );
        // Leave, so the rooms do not pile up.
        let _ = a.0.send(&ClientMessage::Leave);
        let _ = b.0.send(&ClientMessage::Leave);
    }
    let placed = placement(nodes[2].http).await;
    assert!(
        placed.keys().filter(|r| r.starts_with("race")).count() <= 50,
        "never two rooms of one name: {placed:?}"
    );
}

/// Keeps joining `room` through `url` (as the browser SDK does after a failure) until it
/// succeeds or `limit` passes.
async fn join_retrying(cfg: impl Fn() -> confab_client::ClientConfig, limit: Duration) -> Client {
    let start = Instant::now();
    loop {
        match Client::connect(cfg()).await {
            Ok(c) => return c,
            Err(ClientError::JoinRejected { code, message }) if code == "unavailable" => {
                assert!(
                    start.elapsed() < limit,
                    "still unavailable after {limit:?}: {message}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("rejoin failed: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_keeps_the_call_and_a_dead_owner_hands_its_room_over() {
    init_logging();
    let port = free_port();
    let mut redis = Redis::start_on(port);
    let mut nodes = nodes(&redis);
    wait_for_cluster(&nodes).await;
    create_room(nodes[0].http, "call").await;
    let owner = placement(nodes[0].http).await["call"].clone();
    let owner_ix: usize = owner[1..].parse::<usize>().expect("n<i>") - 1;
    // The clients come in through the two nodes that do not host the room.
    let others: Vec<usize> = (0..3).filter(|&i| i != owner_ix).collect();
    let (ua, ub) = (url_of(&nodes[others[0]]), url_of(&nodes[others[1]]));
    let alice = connect(publisher(&ua, "call", "alice", 0)).await;
    let bob = connect(subscriber(&ub, "call", "bob")).await;
    let from = alice.participant_id().to_owned();
    wait_until(
        "bob receives alice",
        MEDIA_TIMEOUT,
        || receives_av(&bob, &from, 20, 20),
        || describe(&bob),
    )
    .await;

    // Redis goes away for longer than the node TTL: the call goes on, new rooms are refused.
    redis.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = unique_from(&bob, &from);
    let (_tx, _rx, refused) = bare_join(&ua, "new-room", "carol").await;
    assert_eq!(refused.error_code(), Some("unavailable"), "{refused:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        unique_from(&bob, &from) > before + 20,
        "media kept flowing without Redis: {}",
        describe(&bob)
    );
    // Redis is back, empty: the nodes re-register and re-record their rooms within a heartbeat.
    let _redis = Redis::start_on(port);
    wait_for_cluster(&nodes).await;
    assert_eq!(
        placement(nodes[0].http).await.get("call"),
        Some(&owner),
        "the room is recorded again"
    );
    let (_tx, _rx, joined) = bare_join(&ua, "new-room", "carol").await;
    assert!(matches!(joined, ServerMessage::Joined { .. }), "{joined:?}");
    let before = unique_from(&bob, &from);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        unique_from(&bob, &from) > before + 20,
        "the call survived the restart: {}",
        describe(&bob)
    );

    // The owner dies: its entry goes stale with its heartbeat; rejoining through the surviving
    // nodes re-creates the room on one of them, and the two meet again there.
    let killed = Instant::now();
    drop(nodes.remove(owner_ix));
    let alice2 = join_retrying(
        || publisher(&ua, "call", "alice", 0),
        Duration::from_secs(10),
    )
    .await;
    let bob2 = join_retrying(|| subscriber(&ub, "call", "bob"), Duration::from_secs(10)).await;
    let from2 = alice2.participant_id().to_owned();
    wait_until(
        "bob receives alice again",
        MEDIA_TIMEOUT,
        || receives_av(&bob2, &from2, 20, 20),
        || describe(&bob2),
    )
    .await;
    let rejoined = killed.elapsed();
    let now_on = placement(nodes[0].http).await["call"].clone();
    assert_ne!(now_on, owner, "the room moved off the dead node");
    eprintln!("room moved from {owner} to {now_on}; media again {rejoined:?} after the kill");
    assert!(
        rejoined < Duration::from_secs(15),
        "rejoined in {rejoined:?}, past the SDK's reconnect time"
    );
    drop((alice, bob));
    alice2.close().await;
    bob2.close().await;
}
