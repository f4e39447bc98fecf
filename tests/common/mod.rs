//! Helpers shared by the integration tests: an in-process server on loopback ports, waiting
//! with readable failures, and checks over the client library's statistics.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use confab::client::stats::TrackSnapshot;
use confab::client::synth::VideoCodec;
use confab::client::{Client, ClientConfig};
use confab::config::Config;
use confab::server::Server;
use confab::signal::protocol::TrackKind;

/// Generous limit for media to show up (slow CI machines, debug builds).
pub const MEDIA_TIMEOUT: Duration = Duration::from_secs(20);
/// Limit for signaling round trips.
pub const SIGNAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Logs to stderr when `RUST_LOG` is set (e.g. `RUST_LOG=confab=debug`).
pub fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        confab::telemetry::init_logging("info", confab::config::LogFormat::Text);
    }
}

/// A server config bound to random loopback ports.
pub fn test_config() -> Config {
    let mut cfg = Config::default();
    cfg.http.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.media.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg
}

/// Starts an in-process server on random loopback ports.
pub async fn start_server() -> Server {
    start_server_with(test_config()).await
}

/// Starts an in-process server with `cfg`.
pub async fn start_server_with(cfg: Config) -> Server {
    init_logging();
    Server::start(cfg).await.expect("server starts on loopback")
}

/// The signaling URL of `server`.
pub fn ws_url(server: &Server) -> String {
    format!("ws://{}/ws", server.http_addr)
}

/// Awaits `fut` for at most `limit`, panicking with `what` on timeout.
pub async fn within<T>(what: &str, limit: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Polls `cond` every 50 ms until it holds, panicking with `what` (and `detail()`) after
/// `limit`.
pub async fn wait_until(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> bool,
    detail: impl Fn() -> String,
) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            panic!(
                "timed out after {limit:?} waiting for {what}; state: {}",
                detail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A publisher of audio + video (VP8) with the given probe index.
pub fn publisher(url: &str, room: &str, name: &str, index: u32) -> ClientConfig {
    ClientConfig::new(url, room, name).publishing(index, true, Some(VideoCodec::Vp8))
}

/// A receive-only subscriber.
pub fn subscriber(url: &str, room: &str, name: &str) -> ClientConfig {
    ClientConfig::new(url, room, name)
}

/// Connects a client, panicking with a readable message on failure.
pub async fn connect(cfg: ClientConfig) -> Client {
    let name = cfg.name.clone();
    match within(
        &format!("{name} to join"),
        SIGNAL_TIMEOUT * 2,
        Client::connect(cfg),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => panic!("{name} could not join: {e}"),
    }
}

/// The received tracks of `client` published by participant `from`.
pub fn tracks_from(client: &Client, from: &str) -> Vec<TrackSnapshot> {
    client
        .received()
        .snapshots()
        .into_iter()
        .filter(|t| t.stream_id == from)
        .collect()
}

/// Whether `client` receives audio and video from `from`, each with at least `min_audio` /
/// `min_video` unique packets.
pub fn receives_av(client: &Client, from: &str, min_audio: u64, min_video: u64) -> bool {
    let tracks = tracks_from(client, from);
    let has = |k: TrackKind, min: u64| {
        tracks
            .iter()
            .any(|t| t.kind == k && !t.ended && t.unique >= min)
    };
    has(TrackKind::Audio, min_audio) && has(TrackKind::Video, min_video)
}

/// A one-line description of what a client receives, for failure messages.
pub fn describe(client: &Client) -> String {
    let mut out = format!(
        "[{} connected={}]",
        client.participant_id(),
        client.is_connected()
    );
    for t in client.received().snapshots() {
        out.push_str(&format!(
            " {}/{}:{:?} pkts={} unique={} lost={} dup={} corrupt={} key={:?} ended={};",
            t.stream_id,
            t.track_id,
            t.kind,
            t.packets,
            t.unique,
            t.lost,
            t.duplicates,
            t.corrupt,
            t.first_keyframe_seq,
            t.ended
        ));
    }
    out
}

/// Unique packets `client` has received from `from` so far, summed over its tracks.
pub fn unique_from(client: &Client, from: &str) -> u64 {
    tracks_from(client, from).iter().map(|t| t.unique).sum()
}

/// Collects `client`'s events until `done(&events)` holds; panics with `what` and the events
/// seen so far after `limit`.
pub async fn collect_events(
    client: &mut Client,
    what: &str,
    limit: std::time::Duration,
    mut done: impl FnMut(&[confab::client::ClientEvent]) -> bool,
) -> Vec<confab::client::ClientEvent> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if done(&seen) {
            return seen;
        }
        match tokio::time::timeout_at(deadline, client.next_event()).await {
            Ok(Some(ev)) => seen.push(ev),
            Ok(None) => panic!("client stopped while waiting for {what}; events: {seen:#?}"),
            Err(_) => panic!("timed out after {limit:?} waiting for {what}; events: {seen:#?}"),
        }
    }
}

/// Asserts that the video `client` receives from `from` began with a keyframe (the server
/// gates new video legs on one, so no delta frame may precede it).
pub fn assert_video_starts_with_keyframe(client: &Client, from: &str, label: &str) {
    let video: Vec<TrackSnapshot> = tracks_from(client, from)
        .into_iter()
        .filter(|t| t.kind == TrackKind::Video)
        .collect();
    assert!(
        !video.is_empty(),
        "{label}: no video track; {}",
        describe(client)
    );
    for t in video {
        assert!(
            t.first_keyframe_seq.is_some() && t.first_keyframe_seq == t.first_seq,
            "{label}: video began with probe counter {:?} but the first keyframe is {:?}",
            t.first_seq,
            t.first_keyframe_seq
        );
    }
}
