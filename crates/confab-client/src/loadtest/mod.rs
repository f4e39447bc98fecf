//! `confab-loadtest`: many in-process clients ([`Client`](crate::Client)) against a
//! Confab server. Publishers send synthetic audio/video and subscribe to the other publishers
//! of their room; subscribers only receive. Every received packet is accounted by its probe,
//! so loss, duplicates, reordering and one-way delay are measured end to end.
//!
//! Phases: ramp (connections started at `ramp_per_sec`), measurement (`duration`), stop media
//! and drain, collect, close. [`run`] returns a [`Report`](report::Report) with the verdict.

pub mod report;
pub mod server_stats;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::stats::new_delay_histogram;
use crate::synth::VideoCodec;
use crate::{Client, ClientConfig, ClientHandle, SentTrack};
use confab::auth::{Auth, TokenRequest};
use confab::signal::protocol::TrackKind;

use self::report::{ClientReport, ConfigEcho, Latency, Report, ServerReport, Summary};
use self::server_stats::{fetch_metrics, sample_proc, sample_self, MetricsSample, ProcSample};

/// Load-test parameters (the `confab-loadtest` flags).
#[derive(Clone, Debug)]
pub struct LoadtestConfig {
    /// Signaling URL.
    pub url: String,
    /// Rooms.
    pub rooms: usize,
    /// Publishers per room (they also subscribe to each other).
    pub publishers: usize,
    /// Receive-only subscribers per room.
    pub subscribers: usize,
    /// Measurement time after the ramp.
    pub duration: Duration,
    /// Connections started per second.
    pub ramp_per_sec: f64,
    /// Publish audio only.
    pub audio_only: bool,
    /// Video bitrate, bit/s.
    pub video_bitrate_bps: u64,
    /// Video frame rate.
    pub fps: u32,
    /// Video codec.
    pub codec: VideoCodec,
    /// Largest acceptable loss, percent.
    pub max_loss_pct: f64,
    /// Server process to sample CPU/memory from (`/proc`).
    pub server_pid: Option<u32>,
    /// Server metrics endpoint.
    pub metrics_url: Option<String>,
    /// Test knob: this many publishers (the first ones) offer tracks but never send media.
    pub silent_publishers: usize,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// Wait after stopping media for packets in flight.
    pub drain: Duration,
    /// Room name prefix (default: `load-` + random suffix).
    pub room_prefix: Option<String>,
    /// API key and secret to mint an access token per client (servers with `[auth] keys`).
    pub api_key: Option<(String, String)>,
}

impl Default for LoadtestConfig {
    fn default() -> Self {
        Self {
            url: "ws://127.0.0.1:8080/ws".into(),
            rooms: 1,
            publishers: 2,
            subscribers: 2,
            duration: Duration::from_secs(30),
            ramp_per_sec: 10.0,
            audio_only: false,
            video_bitrate_bps: 1_500_000,
            fps: 30,
            codec: VideoCodec::Vp8,
            max_loss_pct: 1.0,
            server_pid: None,
            metrics_url: None,
            silent_publishers: 0,
            progress: true,
            drain: Duration::from_secs(1),
            room_prefix: None,
            api_key: None,
        }
    }
}

/// Why a load test could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadtestError {
    /// The parameters make no sense.
    #[error("invalid load test parameters: {0}")]
    InvalidConfig(String),
}

/// Parses a bitrate: `1.5M`, `800k`, `2000000`.
pub fn parse_bitrate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mul) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
        Some('g' | 'G') => (&t[..t.len() - 1], 1e9),
        _ => (t, 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("invalid bitrate {s:?} (e.g. 1.5M, 800k)"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("bitrate must be positive: {s:?}"));
    }
    Ok((v * mul).round() as u64)
}

/// Parses a rate: `10/s` or `10`.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let num = t.strip_suffix("/s").unwrap_or(t);
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid rate {s:?} (e.g. 10/s)"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("rate must be positive: {s:?}"));
    }
    Ok(v)
}

/// The server's Prometheus endpoint next to its signaling endpoint (both are served on
/// `http.bind`): `ws://host:port/ws` → `http://host:port/metrics`, `wss://` → `https://`. A path
/// ending in `/ws` (behind a reverse proxy: `/confab/ws`) keeps its prefix; any other path, the
/// query and the fragment are dropped. `None` for a URL that is not `ws://` or `wss://`.
pub fn metrics_url_for(signaling_url: &str) -> Option<String> {
    let (scheme, rest) = if let Some(rest) = signaling_url.strip_prefix("ws://") {
        ("http", rest)
    } else {
        ("https", signaling_url.strip_prefix("wss://")?)
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.is_empty() {
        return None;
    }
    let prefix = path.strip_suffix("/ws").unwrap_or("");
    Some(format!("{scheme}://{authority}{prefix}/metrics"))
}

/// One planned client.
#[derive(Clone, Debug)]
struct Spec {
    room: usize,
    /// Publisher index (1-based, unique across rooms) for publishers.
    publisher: Option<u32>,
    name: String,
    silent: bool,
}

/// One client that joined.
struct Member {
    spec_index: usize,
    client: Client,
    handle: ClientHandle,
}

fn plan(cfg: &LoadtestConfig) -> Vec<Spec> {
    let mut specs = Vec::new();
    let mut silent_left = cfg.silent_publishers;
    for room in 0..cfg.rooms {
        for p in 0..cfg.publishers {
            let index = (room * cfg.publishers + p + 1) as u32;
            let silent = silent_left > 0;
            silent_left = silent_left.saturating_sub(1);
            specs.push(Spec {
                room,
                publisher: Some(index),
                name: format!("pub{index}"),
                silent,
            });
        }
    }
    for room in 0..cfg.rooms {
        for s in 0..cfg.subscribers {
            specs.push(Spec {
                room,
                publisher: None,
                name: format!("sub{room}-{s}"),
                silent: false,
            });
        }
    }
    specs
}

fn client_config(
    cfg: &LoadtestConfig,
    spec: &Spec,
    room_name: &str,
) -> Result<ClientConfig, LoadtestError> {
    let mut c = ClientConfig::new(cfg.url.clone(), room_name, spec.name.clone());
    if let Some((key, secret)) = &cfg.api_key {
        let auth = Auth::new(HashMap::from([(key.clone(), secret.clone())]));
        let token = auth
            .issue(
                key,
                &TokenRequest {
                    room: Some(room_name.to_owned()),
                    identity: spec.name.clone(),
                    name: Some(spec.name.clone()),
                    ttl: cfg.duration + Duration::from_secs(600),
                    can_publish: true,
                    can_subscribe: true,
                    admin: false,
                },
            )
            .map_err(|e| LoadtestError::InvalidConfig(format!("cannot mint a token: {e}")))?;
        c.token = Some(token);
    }
    c.events = false;
    c.record_payloads = false;
    if let Some(index) = spec.publisher {
        let video = (!cfg.audio_only).then_some(cfg.codec);
        c = c.publishing(index, true, video);
        c.video_bitrate_bps = cfg.video_bitrate_bps;
        c.fps = cfg.fps;
        c.send_media = !spec.silent;
    }
    Ok(c)
}

/// Totals for the progress line.
#[derive(Default, Clone, Copy)]
struct Totals {
    bytes_out: u64,
    bytes_in: u64,
    lost: u64,
    unique: u64,
    connected: usize,
}

fn totals(handles: &[ClientHandle]) -> Totals {
    let mut t = Totals::default();
    for h in handles {
        if h.is_connected() {
            t.connected += 1;
        }
        for s in h.sent() {
            t.bytes_out += s.counters.bytes.load(Ordering::Relaxed);
        }
        for tr in h.received().tracks() {
            if let Ok(s) = tr.lock() {
                t.bytes_in += s.bytes;
                t.lost += s.lost();
                t.unique += s.unique();
            }
        }
    }
    t
}

fn spawn_progress(
    handles: Arc<Mutex<Vec<ClientHandle>>>,
    total: usize,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut prev = Totals::default();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let hs = handles.lock().map(|v| v.clone()).unwrap_or_default();
            let t = totals(&hs);
            let loss = if t.unique + t.lost > 0 {
                100.0 * t.lost as f64 / (t.unique + t.lost) as f64
            } else {
                0.0
            };
            eprintln!(
                "[{:>4.0}s] joined {}/{} connected {} | out {:.2} Mb/s in {:.2} Mb/s | loss {:.3} %",
                start.elapsed().as_secs_f64(),
                hs.len(),
                total,
                t.connected,
                t.bytes_out.saturating_sub(prev.bytes_out) as f64 * 8.0 / 1e6,
                t.bytes_in.saturating_sub(prev.bytes_in) as f64 * 8.0 / 1e6,
                loss
            );
            prev = t;
        }
    })
}

/// Start-of-run server sample.
struct ServerStart {
    proc: Option<ProcSample>,
    metrics: Option<MetricsSample>,
    udp_drops: Option<u64>,
}

async fn sample_server(cfg: &LoadtestConfig, errors: &mut Vec<String>) -> ServerStart {
    let proc = cfg.server_pid.and_then(|pid| match sample_proc(pid) {
        Ok(s) => Some(s),
        Err(e) => {
            errors.push(e.to_string());
            None
        }
    });
    let metrics = match &cfg.metrics_url {
        Some(url) => match fetch_metrics(url).await {
            Ok(m) => Some(m),
            Err(e) => {
                errors.push(e.to_string());
                None
            }
        },
        None => None,
    };
    let udp_drops = cfg
        .server_pid
        .and_then(|pid| server_stats::udp_drops(pid).ok());
    ServerStart {
        proc,
        metrics,
        udp_drops,
    }
}

fn server_report(start: &ServerStart, end: &ServerStart, errors: Vec<String>) -> ServerReport {
    let mut r = ServerReport {
        errors,
        ..Default::default()
    };
    if let (Some(a), Some(b)) = (&start.proc, &end.proc) {
        r.source = Some("pid".into());
        r.cpu_seconds = Some(b.cpu_seconds - a.cpu_seconds);
        r.rss_bytes = Some(b.rss_bytes);
        r.rss_peak_bytes = Some(b.rss_peak_bytes);
    }
    if let (Some(a), Some(b)) = (&start.metrics, &end.metrics) {
        r.forwarded_packets = Some(b.forwarded_packets - a.forwarded_packets);
        if r.source.is_none() {
            if let (Some(ca), Some(cb)) = (a.cpu_seconds, b.cpu_seconds) {
                r.source = Some("metrics".into());
                r.cpu_seconds = Some(cb - ca);
            }
            r.rss_bytes = b.rss_bytes.map(|v| v as u64);
        }
    }
    if let (Some(a), Some(b)) = (start.udp_drops, end.udp_drops) {
        r.udp_rx_drops = Some(b.saturating_sub(a));
    }
    if let (Some(cpu), Some(pkts)) = (r.cpu_seconds, r.forwarded_packets) {
        if pkts > 0.0 {
            r.cpu_us_per_forwarded_packet = Some(cpu * 1e6 / pkts);
        }
    }
    r
}

/// Runs a load test and returns its report (the verdict is `report.passed`).
pub async fn run(cfg: &LoadtestConfig) -> Result<Report, LoadtestError> {
    if cfg.rooms == 0 || cfg.publishers + cfg.subscribers == 0 {
        return Err(LoadtestError::InvalidConfig(
            "need at least one room and one client per room".into(),
        ));
    }
    if !(cfg.ramp_per_sec.is_finite() && cfg.ramp_per_sec > 0.0) || cfg.fps == 0 {
        return Err(LoadtestError::InvalidConfig(
            "ramp and fps must be positive".into(),
        ));
    }
    let prefix = cfg
        .room_prefix
        .clone()
        .unwrap_or_else(|| format!("load-{}", confab::ids::random_alnum(6)));
    let specs = plan(cfg);
    let mut server_errors = Vec::new();
    let server_start = sample_server(cfg, &mut server_errors).await;
    let rss_start = sample_self();

    // Ramp.
    let handles: Arc<Mutex<Vec<ClientHandle>>> = Arc::new(Mutex::new(Vec::new()));
    let stop_progress = tokio_util::sync::CancellationToken::new();
    let progress = cfg
        .progress
        .then(|| spawn_progress(handles.clone(), specs.len(), stop_progress.clone()));
    let period = Duration::from_secs_f64(1.0 / cfg.ramp_per_sec);
    let mut tick = tokio::time::interval(period);
    let mut joins = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        tick.tick().await;
        let ccfg = client_config(cfg, spec, &format!("{prefix}-{}", spec.room))?;
        let handles = handles.clone();
        joins.push(tokio::spawn(async move {
            let r = Client::connect(ccfg).await;
            if let Ok(c) = &r {
                if let Ok(mut v) = handles.lock() {
                    v.push(c.handle());
                }
            }
            (i, r)
        }));
    }
    let mut members = Vec::new();
    let mut connect_errors = 0;
    for j in joins {
        match j.await {
            Ok((i, Ok(client))) => {
                let handle = client.handle();
                members.push(Member {
                    spec_index: i,
                    client,
                    handle,
                });
            }
            Ok((i, Err(e))) => {
                connect_errors += 1;
                let name = specs.get(i).map_or("?", |s| s.name.as_str());
                tracing::warn!(client = name, %e, "client failed to join");
            }
            Err(e) => {
                connect_errors += 1;
                tracing::warn!(%e, "client task failed");
            }
        }
    }

    // Measure.
    let measure_start = Instant::now();
    tokio::time::sleep(cfg.duration).await;
    for m in &members {
        m.client.stop_media();
    }
    tokio::time::sleep(cfg.drain).await;
    let measured_s = measure_start.elapsed().as_secs_f64();
    stop_progress.cancel();
    if let Some(p) = progress {
        let _ = p.await;
    }

    let server_end = sample_server(cfg, &mut server_errors).await;
    let rss_end = sample_self();
    // Every client socket was opened during the run: its drop counter is the run's.
    let client_udp_drops = server_stats::udp_drops(std::process::id()).ok();
    let mut stack_received = 0u64;
    for m in &members {
        stack_received += m.client.stack_packets_received().await.unwrap_or(0);
    }
    let mut report = analyse(cfg, &specs, &members, connect_errors);
    report.dropped_in_load_generator = stack_received.saturating_sub(report.packets_received);
    let own = report.dropped_in_load_generator + client_udp_drops.unwrap_or(0);
    if own > 0 {
        if let Some(f) = report.failures.iter_mut().find(|f| f.starts_with("loss")) {
            f.push_str(&format!(
                " ({own} packets were dropped inside the load generator: it is short of CPU)"
            ));
        }
    }
    report.measured_s = measured_s;
    report.server = server_report(&server_start, &server_end, server_errors);

    // Close everything and check that it is gone.
    let closing: Vec<_> = members
        .into_iter()
        .map(|m| {
            let h = m.handle.clone();
            (tokio::spawn(m.client.close()), h)
        })
        .collect();
    let mut left = Vec::new();
    for (task, h) in closing {
        let _ = task.await;
        left.push(h);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while left.iter().any(|h| !h.is_stopped()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give dropped peer connections' drivers a moment to exit before sampling memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = sample_self();
    report.client = ClientReport {
        rss_start_bytes: rss_start.map(|s| s.rss_bytes),
        rss_end_bytes: rss_end.map(|s| s.rss_bytes),
        rss_peak_bytes: after.map(|s| s.rss_peak_bytes),
        rss_after_close_bytes: after.map(|s| s.rss_bytes),
        not_stopped_after_close: left.iter().filter(|h| !h.is_stopped()).count(),
        udp_rx_drops: client_udp_drops,
    };
    Ok(report)
}

/// Builds the report from the clients' statistics.
fn analyse(
    cfg: &LoadtestConfig,
    specs: &[Spec],
    members: &[Member],
    connect_errors: usize,
) -> Report {
    let tracks_per_pub: Vec<u8> = if cfg.audio_only { vec![0] } else { vec![0, 1] };

    // Publishers' counters by (publisher, track).
    let mut sent: HashMap<(u32, u8), SentTrack> = HashMap::new();
    for m in members {
        for s in m.handle.sent() {
            sent.insert((s.publisher, s.track), s);
        }
    }
    let mut report = Report {
        config: ConfigEcho {
            url: cfg.url.clone(),
            rooms: cfg.rooms,
            publishers: cfg.publishers,
            subscribers: cfg.subscribers,
            duration_s: cfg.duration.as_secs_f64(),
            ramp_per_s: cfg.ramp_per_sec,
            audio_only: cfg.audio_only,
            codec: format!("{:?}", cfg.codec).to_lowercase(),
            video_bitrate_bps: cfg.video_bitrate_bps,
            fps: cfg.fps,
            max_loss_pct: cfg.max_loss_pct,
        },
        clients: specs.len(),
        connect_errors,
        ..Default::default()
    };
    for s in sent.values() {
        let c = &s.counters;
        report.packets_sent += c.packets.load(Ordering::Relaxed);
        report.bytes_sent += c.bytes.load(Ordering::Relaxed);
        report.keyframe_requests += c.keyframe_requests.load(Ordering::Relaxed);
    }

    // Expected (receiver spec, publisher, track) triples.
    let mut expected: Vec<(usize, u32, u8)> = Vec::new();
    for (ri, r) in specs.iter().enumerate() {
        for p in specs.iter().filter(|p| p.room == r.room) {
            let Some(pi) = p.publisher else { continue };
            if Some(pi) == r.publisher {
                continue;
            }
            for &t in &tracks_per_pub {
                expected.push((ri, pi, t));
            }
        }
    }
    report.tracks_expected = expected.len();

    let mut agg = new_delay_histogram();
    let mut jitters = Vec::new();
    let mut first_packet = Vec::new();
    let mut first_key = Vec::new();
    let mut join_samples = Vec::new();
    let mut received: HashSet<(usize, u32, u8)> = HashSet::new();
    for m in members {
        join_samples.push(m.client.join_duration().as_secs_f64() * 1e3);
        let joined = m.client.joined_at_ns();
        for tr in m.handle.received().tracks() {
            let Ok(t) = tr.lock() else { continue };
            report.packets_received += t.packets;
            report.bytes_received += t.bytes;
            report.duplicates += t.duplicates;
            report.reordered += t.reordered;
            report.corrupt += t.corrupt;
            let (Some(pi), Some(ti), Some(first_seq)) = (t.publisher, t.track, t.first_seq) else {
                continue;
            };
            let key = (m.spec_index, pi, ti);
            if !received.insert(key) {
                continue;
            }
            let unique = t.unique();
            let (last_seq, pub_first_ns) = sent.get(&(pi, ti)).map_or((t.max_seq + 1, 0), |s| {
                (
                    s.counters.next_seq.load(Ordering::Relaxed),
                    s.counters.first_sent_ns.load(Ordering::Relaxed),
                )
            });
            let expected_here = last_seq.max(t.max_seq + 1).saturating_sub(first_seq);
            report.packets_expected += expected_here;
            report.packets_lost += expected_here.saturating_sub(unique);
            let _ = agg.add(&t.delay);
            if t.packets >= 2 {
                jitters.push(t.jitter_us / 1e3);
            }
            let base = joined.max(pub_first_ns);
            if let Some(ns) = t.first_packet_ns {
                first_packet.push(ns.saturating_sub(base) as f64 / 1e6);
            }
            let key_track = cfg.audio_only || t.kind == TrackKind::Video;
            if let (true, Some(ns)) = (key_track, t.first_keyframe_ns) {
                first_key.push(ns.saturating_sub(base) as f64 / 1e6);
            }
        }
    }
    report.tracks_received = expected.iter().filter(|k| received.contains(k)).count();
    report.missing_tracks = expected
        .iter()
        .filter(|k| !received.contains(k))
        .take(20)
        .map(|(ri, pi, ti)| {
            let r = specs.get(*ri).map_or("?", |s| s.name.as_str());
            let kind = if *ti == 0 { "audio" } else { "video" };
            format!("{r} did not receive pub{pi} {kind}")
        })
        .collect();
    report.loss_pct = if report.packets_expected > 0 {
        100.0 * report.packets_lost as f64 / report.packets_expected as f64
    } else {
        0.0
    };
    let ms = |us: u64| us as f64 / 1e3;
    if !agg.is_empty() {
        report.latency_ms = Latency {
            p50: Some(ms(agg.value_at_quantile(0.50))),
            p95: Some(ms(agg.value_at_quantile(0.95))),
            p99: Some(ms(agg.value_at_quantile(0.99))),
            max: Some(ms(agg.max())),
            count: agg.len(),
        };
    }
    report.jitter_ms =
        (!jitters.is_empty()).then(|| jitters.iter().sum::<f64>() / jitters.len() as f64);
    report.join_ms = Summary::of(join_samples);
    report.first_packet_ms = Summary::of(first_packet);
    report.first_keyframe_ms = Summary::of(first_key);

    let mut failures = Vec::new();
    if connect_errors > 0 {
        failures.push(format!("{connect_errors} client(s) failed to join"));
    }
    if report.tracks_received < report.tracks_expected {
        failures.push(format!(
            "{} of {} tracks missing",
            report.tracks_expected - report.tracks_received,
            report.tracks_expected
        ));
    }
    if report.loss_pct > cfg.max_loss_pct {
        failures.push(format!(
            "loss {:.3} % exceeds {} %",
            report.loss_pct, cfg.max_loss_pct
        ));
    }
    if report.corrupt > 0 {
        failures.push(format!("{} corrupt payloads", report.corrupt));
    }
    report.passed = failures.is_empty();
    report.failures = failures;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_url_is_derived_from_the_signaling_url() {
        // (signaling URL, derived metrics URL; "" for none)
        let cases = [
            ("ws://127.0.0.1:8080/ws", "http://127.0.0.1:8080/metrics"),
            ("wss://meet.example/ws", "https://meet.example/metrics"),
            ("ws://[::1]:18080/ws?x=1#f", "http://[::1]:18080/metrics"),
            (
                "wss://proxy.example/confab/ws",
                "https://proxy.example/confab/metrics",
            ),
            ("ws://127.0.0.1:8080", "http://127.0.0.1:8080/metrics"),
            ("ws://127.0.0.1:8080/", "http://127.0.0.1:8080/metrics"),
            (
                "ws://127.0.0.1:8080/signal",
                "http://127.0.0.1:8080/metrics",
            ),
            ("http://127.0.0.1:8080/ws", ""),
            ("ws:///ws", ""),
            ("127.0.0.1:8080", ""),
        ];
        for (url, want) in cases {
            let want = Some(want).filter(|w| !w.is_empty());
            assert_eq!(metrics_url_for(url).as_deref(), want, "{url}");
        }
    }

    #[test]
    fn bitrates_and_rates_parse() {
        assert_eq!(parse_bitrate("1.5M"), Ok(1_500_000));
        assert_eq!(parse_bitrate("800k"), Ok(800_000));
        assert_eq!(parse_bitrate("64000"), Ok(64_000));
        assert!(parse_bitrate("fast").is_err());
        assert!(parse_bitrate("-1M").is_err());
        assert_eq!(parse_rate("10/s"), Ok(10.0));
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        assert!(parse_rate("0/s").is_err());
    }

    #[test]
    fn plan_numbers_publishers_across_rooms_and_marks_silent_ones() {
        let cfg = LoadtestConfig {
            rooms: 2,
            publishers: 2,
            subscribers: 1,
            silent_publishers: 1,
            ..Default::default()
        };
        let specs = plan(&cfg);
        assert_eq!(specs.len(), 6);
        let pubs: Vec<u32> = specs.iter().filter_map(|s| s.publisher).collect();
        assert_eq!(pubs, vec![1, 2, 3, 4]);
        assert_eq!(specs.iter().filter(|s| s.silent).count(), 1);
        assert_eq!(specs[2].room, 1);
    }
}
