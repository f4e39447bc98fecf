//! The load test's result: one JSON object (fields documented in `docs/loadtest.md`) and a
//! human-readable table.

use std::fmt::Write as _;

use serde::Serialize;

/// p50 / p95 / max of a set of durations, in milliseconds (`null` when there were none).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Summary {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
    /// Number of samples.
    pub count: usize,
}

impl Summary {
    /// Summarises `values` (any order).
    pub fn of(mut values: Vec<f64>) -> Self {
        values.retain(|v| v.is_finite());
        values.sort_by(f64::total_cmp);
        Self {
            p50: quantile(&values, 0.50),
            p95: quantile(&values, 0.95),
            max: values.last().copied(),
            count: values.len(),
        }
    }
}

/// Nearest-rank quantile of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// One-way delay percentiles, milliseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
    /// Samples (unique packets received).
    pub count: u64,
}

/// Server-side figures over the run (deltas between its start and end).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ServerReport {
    /// Where CPU and memory came from: `"pid"`, `"metrics"` or `null`.
    pub source: Option<String>,
    /// CPU seconds the server used during the run.
    pub cpu_seconds: Option<f64>,
    /// RTP packets the server sent to subscribers during the run.
    pub forwarded_packets: Option<f64>,
    /// `cpu_seconds` × 10⁶ / `forwarded_packets`.
    pub cpu_us_per_forwarded_packet: Option<f64>,
    /// Resident memory at the end, bytes.
    pub rss_bytes: Option<u64>,
    /// Peak resident memory (VmHWM, `--server-pid` only), bytes.
    pub rss_peak_bytes: Option<u64>,
    /// Datagrams the kernel dropped on the server's UDP sockets during the run (receive buffer
    /// full; `--server-pid` only).
    pub udp_rx_drops: Option<u64>,
    /// Problems reading the figures (they do not fail the run).
    pub errors: Vec<String>,
}

/// The load generator's own memory.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ClientReport {
    /// RSS before the first connection, bytes.
    pub rss_start_bytes: Option<u64>,
    /// RSS at the end of the measurement (all connections up), bytes.
    pub rss_end_bytes: Option<u64>,
    /// Peak RSS (VmHWM), bytes.
    pub rss_peak_bytes: Option<u64>,
    /// RSS after every connection was closed, bytes.
    pub rss_after_close_bytes: Option<u64>,
    /// Client tasks still running 5 s after close (should be 0).
    pub not_stopped_after_close: usize,
    /// Datagrams the kernel dropped on the load generator's UDP sockets (receive buffer full:
    /// the load generator could not keep up), summed over its connections.
    pub udp_rx_drops: Option<u64>,
}

/// What the run was asked to do.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ConfigEcho {
    /// Signaling URL.
    pub url: String,
    /// Rooms.
    pub rooms: usize,
    /// Publishers per room.
    pub publishers: usize,
    /// Receive-only subscribers per room.
    pub subscribers: usize,
    /// Measurement duration after the ramp, seconds.
    pub duration_s: f64,
    /// Connections started per second.
    pub ramp_per_s: f64,
    /// Publishers send audio only.
    pub audio_only: bool,
    /// Video codec.
    pub codec: String,
    /// Video bitrate, bit/s.
    pub video_bitrate_bps: u64,
    /// Video frame rate.
    pub fps: u32,
    /// Loss threshold, percent.
    pub max_loss_pct: f64,
}

/// The whole result.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Report {
    /// The verdict: all tracks received, loss within the threshold, nothing corrupt.
    pub passed: bool,
    /// Why the run failed (empty when it passed).
    pub failures: Vec<String>,
    /// The run's parameters.
    pub config: ConfigEcho,
    /// Clients configured.
    pub clients: usize,
    /// Clients that failed to join.
    pub connect_errors: usize,
    /// (receiver, published track) pairs the topology implies.
    pub tracks_expected: usize,
    /// Pairs with at least one packet received.
    pub tracks_received: usize,
    /// Up to 20 missing pairs, described.
    pub missing_tracks: Vec<String>,
    /// RTP packets the publishers sent.
    pub packets_sent: u64,
    /// RTP packets the receivers got (all tracks, duplicates included).
    pub packets_received: u64,
    /// Packets the receivers should have got: per track, from its first received probe counter
    /// to the publisher's last.
    pub packets_expected: u64,
    /// `packets_expected` minus unique packets received.
    pub packets_lost: u64,
    /// `packets_lost` / `packets_expected`, percent.
    pub loss_pct: f64,
    /// Packets the load generator's WebRTC stack decrypted but dropped before its readers got
    /// them (queue overflow: the load generator lacked CPU). Counted in `packets_lost`.
    pub dropped_in_load_generator: u64,
    /// Packets received more than once.
    pub duplicates: u64,
    /// Packets received after a later one.
    pub reordered: u64,
    /// Packets whose payload failed verification.
    pub corrupt: u64,
    /// Payload bytes the publishers sent.
    pub bytes_sent: u64,
    /// Payload bytes the receivers got.
    pub bytes_received: u64,
    /// Keyframe requests (PLI/FIR) publishers received.
    pub keyframe_requests: u64,
    /// One-way delay publisher → subscriber, over every received packet.
    pub latency_ms: Latency,
    /// Mean over tracks of the RFC 3550 jitter estimate of the one-way delay, ms.
    pub jitter_ms: Option<f64>,
    /// WebSocket connect + `join` → `joined`, per client.
    pub join_ms: Summary,
    /// Per track: from the later of (receiver joined, publisher's first packet) to the first
    /// packet received.
    pub first_packet_ms: Summary,
    /// Like `first_packet_ms`, to the first keyframe (video tracks; audio when audio-only).
    pub first_keyframe_ms: Summary,
    /// Measurement time, seconds.
    pub measured_s: f64,
    /// Server figures.
    pub server: ServerReport,
    /// Load-generator figures.
    pub client: ClientReport,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |x| format!("{x:.digits$}"))
}

fn mib(v: Option<u64>) -> String {
    v.map_or_else(
        || "-".to_owned(),
        |b| format!("{:.1} MiB", b as f64 / 1048576.0),
    )
}

impl Report {
    /// Top-level JSON fields scripts rely on (documented in `docs/loadtest.md`).
    pub const TOP_LEVEL_FIELDS: [&'static str; 8] = [
        "tracks_expected",
        "tracks_received",
        "packets_sent",
        "packets_received",
        "loss_pct",
        "duplicates",
        "reordered",
        "jitter_ms",
    ];

    /// The report as one JSON object.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let c = &self.config;
        let _ = writeln!(
            t,
            "confab-loadtest: {} room(s) × ({} publishers + {} subscribers), {}, {:.0} s measured",
            c.rooms,
            c.publishers,
            c.subscribers,
            if c.audio_only {
                "audio only".to_owned()
            } else {
                format!(
                    "{} {:.2} Mb/s {} fps + audio",
                    c.codec,
                    c.video_bitrate_bps as f64 / 1e6,
                    c.fps
                )
            },
            self.measured_s
        );
        let rows: Vec<(&str, String)> = vec![
            (
                "verdict",
                if self.passed {
                    "PASS".into()
                } else {
                    format!("FAIL: {}", self.failures.join("; "))
                },
            ),
            (
                "clients",
                format!("{} ({} failed to join)", self.clients, self.connect_errors),
            ),
            (
                "tracks received",
                format!("{} / {}", self.tracks_received, self.tracks_expected),
            ),
            ("packets sent", self.packets_sent.to_string()),
            (
                "packets received",
                format!(
                    "{} (expected {})",
                    self.packets_received, self.packets_expected
                ),
            ),
            (
                "loss",
                format!(
                    "{:.3} % ({} packets; limit {} %)",
                    self.loss_pct, self.packets_lost, c.max_loss_pct
                ),
            ),
            (
                "dropped in the load generator",
                format!(
                    "{} (stack queues), {} (socket buffers)",
                    self.dropped_in_load_generator,
                    self.client
                        .udp_rx_drops
                        .map_or_else(|| "-".to_owned(), |d| d.to_string())
                ),
            ),
            (
                "server socket drops",
                self.server
                    .udp_rx_drops
                    .map_or_else(|| "-".to_owned(), |d| d.to_string()),
            ),
            (
                "duplicates / reordered / corrupt",
                format!(
                    "{} / {} / {}",
                    self.duplicates, self.reordered, self.corrupt
                ),
            ),
            (
                "latency p50 / p95 / p99 / max",
                format!(
                    "{} / {} / {} / {} ms",
                    opt(self.latency_ms.p50, 2),
                    opt(self.latency_ms.p95, 2),
                    opt(self.latency_ms.p99, 2),
                    opt(self.latency_ms.max, 2)
                ),
            ),
            ("jitter (mean)", format!("{} ms", opt(self.jitter_ms, 3))),
            (
                "join p50 / p95 / max",
                format!(
                    "{} / {} / {} ms",
                    opt(self.join_ms.p50, 1),
                    opt(self.join_ms.p95, 1),
                    opt(self.join_ms.max, 1)
                ),
            ),
            (
                "first packet p50 / p95 / max",
                format!(
                    "{} / {} / {} ms",
                    opt(self.first_packet_ms.p50, 1),
                    opt(self.first_packet_ms.p95, 1),
                    opt(self.first_packet_ms.max, 1)
                ),
            ),
            (
                "first keyframe p50 / p95 / max",
                format!(
                    "{} / {} / {} ms",
                    opt(self.first_keyframe_ms.p50, 1),
                    opt(self.first_keyframe_ms.p95, 1),
                    opt(self.first_keyframe_ms.max, 1)
                ),
            ),
            ("keyframe requests", self.keyframe_requests.to_string()),
            (
                "server cpu",
                format!(
                    "{} s ({})",
                    opt(self.server.cpu_seconds, 2),
                    self.server.source.as_deref().unwrap_or("no source")
                ),
            ),
            (
                "server forwarded packets",
                opt(self.server.forwarded_packets, 0),
            ),
            (
                "server cpu per forwarded packet",
                format!("{} µs", opt(self.server.cpu_us_per_forwarded_packet, 2)),
            ),
            ("server rss", mib(self.server.rss_bytes)),
            (
                "loadtest rss start / end / after close",
                format!(
                    "{} / {} / {}",
                    mib(self.client.rss_start_bytes),
                    mib(self.client.rss_end_bytes),
                    mib(self.client.rss_after_close_bytes)
                ),
            ),
        ];
        let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in rows {
            let _ = writeln!(t, "  {k:<w$}  {v}");
        }
        for m in &self.missing_tracks {
            let _ = writeln!(t, "  missing: {m}");
        }
        for e in &self.server.errors {
            let _ = writeln!(t, "  server figures: {e}");
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let s = Summary::of(vec![5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(s.p50, Some(3.0));
        assert_eq!(s.p95, Some(5.0));
        assert_eq!(s.max, Some(5.0));
        assert_eq!(s.count, 5);
        assert_eq!(Summary::of(vec![]).p50, None);
    }

    #[test]
    fn json_has_the_documented_fields() {
        let r = Report::default();
        let v: serde_json::Value =
            serde_json::from_str(&r.to_json().expect("encodes")).expect("parses");
        for k in Report::TOP_LEVEL_FIELDS {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert!(v["latency_ms"].get("p99").is_some());
        assert!(v["join_ms"].get("max").is_some());
        assert!(v["first_keyframe_ms"].get("p95").is_some());
        assert!(v["server"].get("cpu_us_per_forwarded_packet").is_some());
        assert!(v["server"].get("rss_bytes").is_some());
        assert!(!r.table().is_empty());
    }
}
