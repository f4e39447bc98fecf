//! The `confab-loadtest` binary: load-tests a running Confab server with synthetic publishers
//! and subscribers, prints a table and optionally a JSON report (see docs/loadtest.md).

use anyhow::Context;
use clap::Parser;
use confab::config::LogFormat;
use confab::telemetry::init_logging;
use confab_client::loadtest::{self, LoadtestConfig};
use confab_client::synth::VideoCodec;

/// The load generator allocates inside the async WebRTC stack for every packet; mimalloc keeps
/// that cheap (and the figures comparable with earlier runs, which used the server binary).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hundreds of client connections: keep the WebRTC stack's per-connection notices out.
const LOG_LEVEL: &str = "warn,rtc_dtls=error";

/// Load-test a running Confab server with synthetic publishers and subscribers.
#[derive(Parser, Debug)]
#[command(name = "confab-loadtest", version)]
struct Args {
    /// Signaling URL of the server under test.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Number of rooms.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Publishers per room (each also receives the other publishers).
    #[arg(long, default_value_t = 2)]
    publishers: usize,
    /// Receive-only subscribers per room.
    #[arg(long, default_value_t = 2)]
    subscribers: usize,
    /// Measurement time after the ramp (e.g. 30s, 2m).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: std::time::Duration,
    /// Connections started per second (e.g. 10/s).
    #[arg(long, default_value = "10/s", value_parser = loadtest::parse_rate)]
    ramp: f64,
    /// Publishers send audio only.
    #[arg(long)]
    audio_only: bool,
    /// Video bitrate per publisher (e.g. 1.5M, 800k).
    #[arg(long, default_value = "1.5M", value_parser = loadtest::parse_bitrate)]
    video_bitrate: u64,
    /// Video frames per second.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Video codec: vp8 or h264.
    #[arg(long, default_value = "vp8")]
    codec: VideoCodec,
    /// Largest acceptable packet loss, percent.
    #[arg(long, default_value_t = 1.0)]
    max_loss: f64,
    /// Write the JSON report to this file ("-": stdout, the table then goes to stderr).
    #[arg(long)]
    json: Option<String>,
    /// Server process id, for CPU and memory figures from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Server metrics endpoint [default: /metrics next to --url, e.g.
    /// ws://127.0.0.1:8080/ws → http://127.0.0.1:8080/metrics].
    #[arg(long)]
    metrics_url: Option<String>,
    /// Do not print a progress line every second.
    #[arg(long)]
    quiet: bool,
    /// API key for minting per-client access tokens (servers with [auth] keys).
    #[arg(long, env = "CONFAB_API_KEY", requires = "api_secret")]
    api_key: Option<String>,
    /// Secret of --api-key.
    #[arg(long, env = "CONFAB_API_SECRET", hide_env_values = true)]
    api_secret: Option<String>,
    /// Log format of the load generator's own log lines.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Test knob: this many publishers offer tracks but never send media.
    #[arg(long, default_value_t = 0, hide = true)]
    silent_publishers: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(LOG_LEVEL, args.log_format);
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let metrics_url = args
        .metrics_url
        .or_else(|| loadtest::metrics_url_for(&args.url));
    let cfg = LoadtestConfig {
        url: args.url,
        rooms: args.rooms,
        publishers: args.publishers,
        subscribers: args.subscribers,
        duration: args.duration,
        ramp_per_sec: args.ramp,
        audio_only: args.audio_only,
        video_bitrate_bps: args.video_bitrate,
        fps: args.fps,
        codec: args.codec,
        max_loss_pct: args.max_loss,
        server_pid: args.server_pid,
        metrics_url,
        silent_publishers: args.silent_publishers,
        progress: !args.quiet,
        api_key: args.api_key.zip(args.api_secret),
        ..Default::default()
    };
    let report = loadtest::run(&cfg).await?;
    let json = report.to_json().context("encoding the JSON report")?;
    match args.json.as_deref() {
        Some("-") => {
            eprint!("{}", report.table());
            println!("{json}");
        }
        Some(path) => {
            std::fs::write(path, format!("{json}\n"))
                .with_context(|| format!("writing the JSON report to {path}"))?;
            print!("{}", report.table());
        }
        None => print!("{}", report.table()),
    }
    if !report.passed {
        anyhow::bail!("loadtest failed: {}", report.failures.join("; "));
    }
    Ok(())
}
