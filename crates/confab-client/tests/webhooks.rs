//! Webhooks end to end: a local HTTP receiver in the test (failing its first requests) gets
//! every room, participant and track event of a short call, in order, each signed with the
//! API secret, the failed one retried.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "hookkey";
const SECRET: &str = "hook-secret-that-is-long-enough";

/// One request the receiver got: its headers (lower-case names) and body.
#[derive(Debug, Clone)]
struct Delivery {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Delivery {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 receiver: answers 500 to its first `fail_first` requests, then 200.
async fn receiver(fail_first: usize) -> (SocketAddr, Arc<Mutex<Vec<Delivery>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let got: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let seen = got.clone();
    tokio::spawn(async move {
        let mut n = 0usize;
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head_end, length) = loop {
                let Ok(k) = s.read(&mut chunk).await else {
                    break (None, 0);
                };
                if k == 0 {
                    break (None, 0);
                }
                buf.extend_from_slice(&chunk[..k]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    break (Some(i + 4), length);
                }
            };
            let Some(start) = head_end else { continue };
            while buf.len() < start + length {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            }
            let head = String::from_utf8_lossy(&buf[..start]).into_owned();
            let headers = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
                .collect();
            let body = buf[start..(start + length).min(buf.len())].to_vec();
            if let Ok(mut g) = seen.lock() {
                g.push(Delivery { headers, body });
            }
            let status = if n < fail_first {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            n += 1;
            let reply =
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = s.write_all(reply.as_bytes()).await;
            let _ = s.shutdown().await;
        }
    });
    (addr, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_s_events_arrive_signed_in_order_and_failures_are_retried() {
    let (hook, got) = receiver(2).await;
    let mut cfg = test_config();
    cfg.auth.keys.insert(KEY.into(), SECRET.into());
    cfg.webhooks.urls = vec![format!("http://{hook}/confab")];
    let server = start_server_with(cfg).await;
    let admin =
        confab::auth::Auth::new([(KEY.to_owned(), SECRET.to_owned())].into_iter().collect());
    let token = |who: &str| {
        admin
            .issue(
                KEY,
                &confab::auth::TokenRequest {
                    room: Some("hooks".into()),
                    identity: who.into(),
                    name: Some(who.into()),
                    ttl: Duration::from_secs(600),
                    can_publish: true,
                    can_subscribe: true,
                    admin: false,
                },
            )
            .expect("token")
    };
    let url = ws_url(&server);
    let mut a = publisher(&url, "hooks", "alice", 0);
    a.token = Some(token("alice"));
    let alice = connect(a).await;
    // Her tracks are published (at their first packets) before bob comes.
    let api = admin
        .issue(
            KEY,
            &confab::auth::TokenRequest {
                room: None,
                identity: "ops".into(),
                name: None,
                ttl: Duration::from_secs(600),
                can_publish: false,
                can_subscribe: false,
                admin: true,
            },
        )
        .expect("admin token");
    let auth = format!("Authorization: Bearer {api}\r\n");
    for _ in 0..200 {
        let (_, resp) = http_get(server.http_addr, "/api/rooms/hooks", &auth).await;
        let room: serde_json::Value =
            serde_json::from_str(body_of(&resp)).unwrap_or(serde_json::Value::Null);
        if room["participants"][0]["published"]
            .as_array()
            .map(Vec::len)
            == Some(2)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut b = subscriber(&url, "hooks", "bob");
    b.token = Some(token("bob"));
    let bob = connect(b).await;
    let alice_id = alice.participant_id().to_owned();
    wait_until(
        "bob to receive alice",
        MEDIA_TIMEOUT,
        || receives_av(&bob, &alice_id, 5, 5),
        || describe(&bob),
    )
    .await;
    bob.leave().await;
    // Two sockets' leaves may reach the room in either order: alice leaves after bob is gone.
    for _ in 0..200 {
        let (_, resp) = http_get(server.http_addr, "/api/rooms/hooks", &auth).await;
        let room: serde_json::Value =
            serde_json::from_str(body_of(&resp)).unwrap_or(serde_json::Value::Null);
        if room["participants"].as_array().map(Vec::len) == Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    alice.leave().await;

    let events = |g: &[Delivery]| -> Vec<(String, serde_json::Value)> {
        g.iter()
            .filter_map(|d| {
                let v: serde_json::Value = serde_json::from_slice(&d.body).ok()?;
                Some((v["event"].as_str()?.to_owned(), v))
            })
            .collect()
    };
    wait_until(
        "room_finished to be delivered",
        Duration::from_secs(20),
        || {
            got.lock()
                .map(|g| {
                    g.iter()
                        .any(|d| d.header("x-confab-event") == Some("room_finished"))
                })
                .unwrap_or(false)
        },
        || format!("{:#?}", got.lock().map(|g| events(&g)).unwrap_or_default()),
    )
    .await;
    let deliveries = got.lock().expect("lock").clone();

    // Every delivery is signed with the API secret over its exact body.
    for d in &deliveries {
        let sig = d.header("x-confab-signature").expect("signed");
        assert!(
            confab::webhooks::verify(SECRET.as_bytes(), &d.body, sig),
            "bad signature on {:?}",
            String::from_utf8_lossy(&d.body)
        );
    }
    // The first event failed twice and went through on attempt 3; nothing overtook it.
    assert_eq!(deliveries[0].header("x-confab-event"), Some("room_started"));
    assert_eq!(deliveries[0].body, deliveries[2].body);
    assert_eq!(deliveries[2].header("x-confab-attempt"), Some("3"));
    let delivered: Vec<(String, serde_json::Value)> = events(&deliveries[2..]);
    let names: Vec<&str> = delivered.iter().map(|(n, _)| n.as_str()).collect();
    let who = |i: usize| delivered[i].1["participant"]["name"].as_str().unwrap_or("");
    assert_eq!(
        names,
        [
            "room_started",
            "participant_joined",
            "track_published",
            "track_published",
            "participant_joined",
            "participant_left",
            "track_unpublished",
            "track_unpublished",
            "participant_left",
            "room_finished",
        ],
        "{delivered:#?}"
    );
    assert_eq!(
        (who(1), who(4), who(5), who(8)),
        ("alice", "bob", "bob", "alice")
    );
    assert_eq!(delivered[1].1["participant"]["identity"], "alice");
    assert_eq!(delivered[1].1["participant"]["kind"], "browser");
    assert_eq!(delivered[0].1["room"]["name"], "hooks");
    let kinds: Vec<&str> = delivered[2..4]
        .iter()
        .filter_map(|(_, v)| v["track"]["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"audio") && kinds.contains(&"video"),
        "{kinds:?}"
    );
    let ids: std::collections::HashSet<&str> = delivered
        .iter()
        .filter_map(|(_, v)| v["id"].as_str())
        .collect();
    assert_eq!(ids.len(), delivered.len(), "event ids are unique");
}
