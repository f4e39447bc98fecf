//! The load tester against an in-process server: a short healthy run passes with every track
//! received and a parseable JSON report; a run where a publisher never sends fails (in-process
//! verdict and the binary's exit status).

mod common;

use std::time::Duration;

use common::*;
use confab_client::loadtest::report::Report;
use confab_client::loadtest::{self, LoadtestConfig};

fn short_run(url: &str, metrics: String) -> LoadtestConfig {
    LoadtestConfig {
        url: url.to_owned(),
        rooms: 1,
        publishers: 2,
        subscribers: 2,
        duration: Duration::from_secs(5),
        ramp_per_sec: 20.0,
        video_bitrate_bps: 500_000,
        metrics_url: Some(metrics),
        server_pid: Some(std::process::id()),
        progress: false,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_loadtest_receives_every_track() {
    let server = start_server().await;
    let url = ws_url(&server);
    let cfg = short_run(&url, format!("http://{}/metrics", server.http_addr));
    let report = within(
        "the load test",
        Duration::from_secs(60),
        loadtest::run(&cfg),
    )
    .await
    .expect("load test runs");
    assert!(report.passed, "load test failed:\n{}", report.table());
    // 4 receivers (2 publishers see each other, 2 subscribers see both) × 2 publishers' tracks,
    // minus a publisher's own: 2×(1+2)×2 = 12.
    assert_eq!(report.tracks_expected, 12, "{}", report.table());
    assert_eq!(report.tracks_received, 12, "{}", report.table());
    assert!(report.packets_received > 0);
    assert_eq!(report.corrupt, 0);
    assert!(report.latency_ms.p50.is_some());
    assert!(
        report.server.forwarded_packets.unwrap_or(0.0) > 0.0,
        "metrics scraped: {:?}",
        report.server
    );

    let json = report.to_json().expect("report encodes");
    let v: serde_json::Value = serde_json::from_str(&json).expect("report JSON parses");
    for key in Report::TOP_LEVEL_FIELDS {
        assert!(v.get(key).is_some(), "JSON lacks {key}: {json}");
    }
    for (obj, keys) in [
        ("latency_ms", &["p50", "p95", "p99"][..]),
        ("join_ms", &["p50", "p95", "max"][..]),
        ("first_packet_ms", &["p50", "p95", "max"][..]),
        ("first_keyframe_ms", &["p50", "p95", "max"][..]),
        (
            "server",
            &[
                "cpu_seconds",
                "forwarded_packets",
                "cpu_us_per_forwarded_packet",
                "rss_bytes",
            ][..],
        ),
    ] {
        for k in keys {
            assert!(v[obj].get(*k).is_some(), "JSON lacks {obj}.{k}: {json}");
        }
    }
    assert_eq!(v["tracks_received"], 12);
    assert!(v["latency_ms"]["p99"].is_number());
    eprintln!("{}", report.table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_track_fails_the_run() {
    let server = start_server().await;
    let url = ws_url(&server);

    // In-process: the verdict.
    let mut cfg = short_run(&url, format!("http://{}/metrics", server.http_addr));
    cfg.duration = Duration::from_secs(2);
    cfg.silent_publishers = 1;
    let report = within(
        "the load test",
        Duration::from_secs(60),
        loadtest::run(&cfg),
    )
    .await
    .expect("load test runs");
    assert!(
        !report.passed,
        "a silent publisher must fail the run:\n{}",
        report.table()
    );
    // The silent publisher's 2 tracks are missing at its 3 receivers.
    assert_eq!(
        report.tracks_received,
        report.tracks_expected - 6,
        "{}",
        report.table()
    );
    assert!(
        report.failures.iter().any(|f| f.contains("missing")),
        "{:?}",
        report.failures
    );

    // The binary: non-zero exit status and a JSON report that says so.
    let dir = std::env::temp_dir().join(format!("confab-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let json_path = dir.join("report.json");
    let out = within(
        "the loadtest binary",
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_confab-loadtest"))
            .args([
                "--url",
                &url,
                "--publishers",
                "2",
                "--subscribers",
                "1",
                "--duration",
                "2s",
                "--ramp",
                "20/s",
                "--video-bitrate",
                "300k",
                "--quiet",
                "--silent-publishers",
                "1",
                "--json",
            ])
            .arg(&json_path)
            .output(),
    )
    .await
    .expect("binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "exit status must be non-zero when a track is missing\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let text = std::fs::read_to_string(&json_path).expect("JSON report written");
    let v: serde_json::Value = serde_json::from_str(&text).expect("report JSON parses");
    assert_eq!(v["passed"], false, "{text}");
    let expected = v["tracks_expected"].as_u64().expect("number");
    let received = v["tracks_received"].as_u64().expect("number");
    assert!(received < expected, "{text}");
    // No --metrics-url: the binary scrapes /metrics next to --url.
    assert!(
        v["server"]["forwarded_packets"].as_f64().unwrap_or(0.0) > 0.0,
        "metrics scraped from the URL derived from --url: {text}"
    );
    assert!(
        v["server"]["cpu_us_per_forwarded_packet"].is_number(),
        "{text}"
    );
    assert!(
        stdout.contains("FAIL"),
        "table shows the verdict:\n{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_minted_and_rate_limited_joins_retried() {
    let mut scfg = test_config();
    scfg.auth.keys.insert(
        "loadkey".into(),
        "a-secret-of-at-least-32-characters!!".into(),
    );
    // One join per second (bursts of 4) from 127.0.0.1: of the 1 + 6 joins below, the last
    // ones are refused with `rate_limited` and must be retried.
    scfg.limits.joins_per_second_per_ip = 1;
    let server = start_server_with(scfg).await;
    let url = ws_url(&server);
    let mut cfg = short_run(&url, format!("http://{}/metrics", server.http_addr));
    cfg.publishers = 1;
    cfg.subscribers = 5;
    cfg.audio_only = true;
    cfg.duration = Duration::from_secs(2);
    cfg.ramp_per_sec = 50.0;

    // Without a token the join is refused.
    let mut no_token = cfg.clone();
    no_token.subscribers = 0;
    let report = within(
        "the load test",
        Duration::from_secs(60),
        loadtest::run(&no_token),
    )
    .await
    .expect("load test runs");
    assert!(!report.passed);
    assert_eq!(report.connect_errors, 1, "{}", report.table());

    cfg.api_key = Some((
        "loadkey".into(),
        "a-secret-of-at-least-32-characters!!".into(),
    ));
    let report = within(
        "the load test",
        Duration::from_secs(60),
        loadtest::run(&cfg),
    )
    .await
    .expect("load test runs");
    assert!(report.passed, "{}", report.table());
    assert_eq!(report.tracks_received, 5, "{}", report.table());
}
