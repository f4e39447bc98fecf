//! Helpers shared by the integration tests: an in-process server on loopback ports, waiting
//! with readable failures, and checks over the client library's statistics.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use confab::config::Config;
use confab::server::Server;
use confab::signal::protocol::TrackKind;
use confab_client::stats::TrackSnapshot;
use confab_client::synth::VideoCodec;
use confab_client::{Client, ClientConfig};

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

/// The API key the token tests configure, and its secret.
pub const TEST_KEY: &str = "testkey";
/// See [`TEST_KEY`].
pub const TEST_SECRET: &str = "test-secret-that-is-long-enough";

/// The signer of tokens under [`TEST_KEY`].
pub fn test_auth() -> confab::auth::Auth {
    confab::auth::Auth::new(std::collections::HashMap::from([(
        TEST_KEY.to_owned(),
        TEST_SECRET.to_owned(),
    )]))
}

/// A join token for `identity` in `room` (publish and data grants as `publish`), 10 minutes.
pub fn test_token(room: &str, identity: &str, publish: bool) -> String {
    test_auth()
        .issue(
            TEST_KEY,
            &confab::auth::TokenRequest {
                room: Some(room.into()),
                identity: identity.into(),
                name: Some(identity.into()),
                ttl: Duration::from_secs(600),
                can_publish: publish,
                can_subscribe: true,
                admin: false,
            },
        )
        .expect("token")
}

/// A server config bound to random loopback ports.
pub fn test_config() -> Config {
    let mut cfg = Config::default();
    cfg.http.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.media.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.media.tcp_bind = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    // Most tests close clients without `leave` and expect them gone soon; the resume tests
    // set their own grace period.
    cfg.signaling.resume_grace = Duration::from_secs(1);
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
    mut done: impl FnMut(&[confab_client::ClientEvent]) -> bool,
) -> Vec<confab_client::ClientEvent> {
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

/// A plain HTTP/1.1 GET on loopback with extra header lines (each ending in `\r\n`):
/// (status, whole response). Reads to the end, or only the head of a `101` upgrade (that
/// socket stays open).
pub async fn http_get(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    try_http_get(addr, path, headers)
        .await
        .expect("connect to the HTTP port")
}

/// [`http_get`] for a server that may not be listening yet (a process just spawned): the
/// connect error instead of a panic.
pub async fn try_http_get(
    addr: SocketAddr,
    path: &str,
    headers: &str,
) -> std::io::Result<(u16, String)> {
    try_http_request(addr, "GET", path, headers, "").await
}

/// Any HTTP/1.1 request with a body (`Content-Length` added when there is one):
/// (status, whole response).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String) {
    try_http_request(addr, method, path, headers, body)
        .await
        .expect("connect to the HTTP port")
}

async fn try_http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let length = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}{length}Connection: close\r\n\r\n{body}"
    );
    s.write_all(req.as_bytes()).await.expect("write request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.expect("read response");
        buf.extend_from_slice(&chunk[..n]);
        let upgraded = buf.starts_with(b"HTTP/1.1 101") && buf.windows(4).any(|w| w == b"\r\n\r\n");
        if n == 0 || upgraded {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, text))
}

/// Sum of all samples of metric `name` (any labels) in a Prometheus text exposition.
pub fn metric_sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A `confab` server in its own process (its `/proc` and metrics are its own); killed on drop.
pub struct ServerProcess {
    /// The process.
    pub child: std::process::Child,
    /// Its HTTP address.
    pub http: SocketAddr,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The repository (workspace) root.
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// The `confab` server binary: `$CONFAB_BIN` when set (relative to the repository root, as for
/// the browser test), else `confab` in the target directory this test runs from
/// (`target/<profile>/deps/<test>` → `target/<profile>/confab`).
///
/// Cargo builds another package's binary only for that package's own tests, so it is built by
/// `cargo test --workspace` (the server package has integration tests) and by
/// `scripts/test.sh`; for `cargo test -p confab-client` alone run `cargo build -p confab` first.
/// A binary older than the server's sources is used, with a warning (shown on failure).
pub fn confab_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("CONFAB_BIN") {
        return workspace_root().join(bin);
    }
    let exe = std::env::current_exe().expect("path of the test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable is in target/<profile>/deps");
    let bin = profile_dir.join(format!("confab{}", std::env::consts::EXE_SUFFIX));
    let built = match std::fs::metadata(&bin).and_then(|m| m.modified()) {
        Ok(t) => t,
        Err(e) => panic!(
            "{}: {e}: build the server first (cargo build -p confab; \
             cargo test --workspace and scripts/test.sh do), or set CONFAB_BIN",
            bin.display()
        ),
    };
    if let Some(newer) = newest_rs_file(&workspace_root().join("src")).filter(|(t, _)| *t > built) {
        eprintln!(
            "warning: {} is older than {}: run cargo build -p confab",
            bin.display(),
            newer.1.display()
        );
    }
    bin
}

/// The most recently modified `.rs` file under `dir`, with its modification time.
fn newest_rs_file(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            newest_rs_file(&path)
        } else if path.extension().is_some_and(|e| e == "rs") {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .map(|t| (t, path))
        } else {
            None
        };
        if let Some(c) = candidate {
            if newest.as_ref().is_none_or(|n| c.0 > n.0) {
                newest = Some(c);
            }
        }
    }
    newest
}

/// Starts the `confab` binary on random loopback ports with `extra_env`; returns once it has
/// logged its address.
pub fn spawn_server(extra_env: &[(&str, &str)]) -> ServerProcess {
    let mut cmd = std::process::Command::new(confab_bin());
    cmd.args(["--log-format", "json", "serve"])
        .env("CONFAB_HTTP__BIND", "127.0.0.1:0")
        .env("CONFAB_MEDIA__BIND", "127.0.0.1:0")
        .env("CONFAB_MEDIA__TCP_BIND", "127.0.0.1:0")
        .env("CONFAB_SIGNALING__RESUME_GRACE", "1s")
        .env("RUST_LOG", "info,rtc=warn,webrtc=warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start confab");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if let Some(a) = v["fields"]["http_addr"].as_str() {
                    let _ = tx.send(a.to_owned());
                }
            }
        }
    });
    let http = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("server reported its address")
        .parse()
        .expect("address");
    ServerProcess { child, http }
}

/// A publisher (alice) and a subscriber (bob) in `room`, once bob receives alice's audio and
/// video.
pub async fn short_call(url: &str, room: &str) -> (Client, Client) {
    let a = connect(publisher(url, room, "alice", 0)).await;
    let b = connect(subscriber(url, room, "bob")).await;
    let from = a.participant_id().to_owned();
    wait_until(
        "bob receives alice",
        MEDIA_TIMEOUT,
        || receives_av(&b, &from, 20, 20),
        || describe(&b),
    )
    .await;
    (a, b)
}

/// The value of response header `name` (case-insensitive) in a whole HTTP response.
pub fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The body of a whole HTTP response.
pub fn body_of(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}
