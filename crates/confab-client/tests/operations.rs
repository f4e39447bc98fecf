//! Operations: every metric the Grafana dashboard and the Prometheus rules use exists after a
//! short call; a real Prometheus scrapes a running server; SIGTERM drains a call and exits 0.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use confab_client::signaling::ServerMessage;
use confab_client::ClientEvent;

/// Metric names referenced by PromQL expressions in a file.
fn referenced_metrics(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    for prefix in ["confab_", "process_"] {
        let mut from = 0;
        while let Some(i) = text[from..].find(prefix) {
            let start = from + i;
            let boundary = start == 0
                || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            let end = text[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(text.len(), |e| start + e);
            if boundary {
                out.insert(text[start..end].to_owned());
            }
            from = end;
        }
    }
    out
}

/// Metric names present in a text exposition: every sample name, plus each family name from
/// `# TYPE` (a histogram's family `x` is exported as `x_bucket`, `x_sum`, `x_count`).
fn exposed_metrics(exposition: &str) -> BTreeSet<String> {
    let samples = exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next());
    let families = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next());
    samples.chain(families).map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_use_is_exported() {
    let server = start_server().await;
    let (a, b) = short_call(&ws_url(&server), "metrics").await;
    // Counters reach the shared registry on the rooms' housekeeping tick.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, body) = http_get(server.http_addr, "/metrics", "").await;
    assert_eq!(status, 200);
    let exposed = exposed_metrics(&body);
    let root = workspace_root();
    let mut missing = Vec::new();
    for file in [
        "deploy/grafana/confab.json",
        "deploy/prometheus/prometheus.yml",
        "deploy/prometheus/alerts.yml",
    ] {
        let text = std::fs::read_to_string(root.join(file)).expect(file);
        let refs = referenced_metrics(&text);
        if file.ends_with("confab.json") {
            assert!(
                refs.len() > 10,
                "the dashboard references metrics: {refs:?}"
            );
        }
        for m in refs {
            if !exposed.contains(&m) {
                missing.push(format!("{file}: {m}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "referenced but not exported: {missing:#?}"
    );
    a.close().await;
    b.close().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Prometheus (Debian package `prometheus`, installed by `scripts/test.sh`) scrapes a running
/// Confab during a call; its HTTP API then reports participants and forwarded packets above zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_participants_and_forwarded_packets() {
    let prometheus =
        std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "/usr/bin/prometheus".into());
    assert!(
        Path::new(&prometheus).exists(),
        "{prometheus} not found: install the Debian package `prometheus` (scripts/test.sh does)"
    );
    let server = start_server().await;
    let dir = std::env::temp_dir().join(format!("confab-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: confab\n    static_configs:\n      - targets: ['{}']\n",
        server.http_addr
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let mut child = Command::new(&prometheus)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).expect("prometheus log"))
        .spawn()
        .expect("start prometheus");
    let prom: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    let (a, b) = short_call(&ws_url(&server), "scrape").await;
    let query = |q: &'static str| async move {
        let path = format!("/api/v1/query?query={q}");
        // Prometheus takes a moment to listen after it is spawned (seconds on a cold machine).
        let (status, text) = try_http_get(prom, &path, "").await.ok()?;
        if status != 200 {
            return None;
        }
        let body = text.split_once("\r\n\r\n")?.1;
        let v: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
        let result = v["data"]["result"].as_array()?.clone();
        let total: f64 = result
            .iter()
            .filter_map(|r| r["value"][1].as_str()?.parse::<f64>().ok())
            .sum();
        Some(total)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut participants, mut forwarded) = (None, None);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
            panic!("prometheus exited early ({status}):\n{log}");
        }
        participants = query("confab_participants").await;
        forwarded = query("sum(confab_rtp_packets_total%7Bdirection%3D%22out%22%7D)").await;
        if participants.unwrap_or(0.0) > 0.0 && forwarded.unwrap_or(0.0) > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    a.close().await;
    b.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        participants.unwrap_or(0.0) > 0.0,
        "confab_participants via Prometheus: {participants:?}"
    );
    assert!(
        forwarded.unwrap_or(0.0) > 0.0,
        "forwarded packets via Prometheus: {forwarded:?}"
    );
}

/// SIGTERM during a call: clients get `going-away`, readiness fails, the process exits 0 within
/// the drain deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_call_and_exits_zero() {
    let mut server = spawn_server(&[("CONFAB_SERVER__DRAIN_TIMEOUT", "5s")]);
    let http = server.http;
    let url = format!("ws://{http}/ws");
    let (mut a, mut b) = short_call(&url, "drain").await;
    assert_eq!(http_get(http, "/readyz", "").await.0, 200);

    let pid = server.child.id() as i32;
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let started = Instant::now();
    for c in [&mut a, &mut b] {
        let got = c
            .wait_for("going-away", Duration::from_secs(5), |e| {
                matches!(e, ClientEvent::Signal(ServerMessage::GoingAway { .. }))
            })
            .await;
        assert!(got.is_ok(), "client did not get going-away: {got:?}");
    }
    let status = loop {
        if let Some(s) = server.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(9),
            "did not exit within the drain deadline"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    a.close().await;
    b.close().await;
}
