//! The `confab` binary: parses the command line and runs a subcommand (`serve` by default).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use confab::auth::{Auth, TokenRequest};
use confab::config::{Config, LogFormat};
use confab::server::Server;
use confab::telemetry::init_logging;

/// The packet path allocates inside the WebRTC stack for every packet (messages, buffers);
/// mimalloc's per-thread free lists make that measurably cheaper than glibc malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Confab: a selective forwarding unit for multi-party browser video calls.
#[derive(Parser, Debug)]
#[command(name = "confab", version, about)]
struct Cli {
    /// Configuration file (default: config/confab.toml when present).
    #[arg(long, global = true, env = "CONFAB_CONFIG")]
    config: Option<PathBuf>,
    /// Log format (overrides log.format).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the SFU (the default).
    Serve {
        /// Serve HTTPS with a generated self-signed certificate (development).
        #[arg(long)]
        self_signed: bool,
    },
    /// Print an access token (JWT) for joining a room, signed with a configured API key.
    Token {
        /// Room the token is for.
        #[arg(long, required_unless_present = "admin")]
        room: Option<String>,
        /// Participant identity (unique per room).
        #[arg(long, default_value = "admin")]
        identity: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, e.g. 1h, 30m.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Subscribe-only: the holder's tracks are not forwarded.
        #[arg(long)]
        no_publish: bool,
        /// Receive nothing.
        #[arg(long)]
        no_subscribe: bool,
        /// Room API access (`/api/rooms`) instead of (or besides) joining.
        #[arg(long)]
        admin: bool,
        /// API key to sign with (default: the only/first configured one).
        #[arg(long)]
        api_key: Option<String>,
    },
    /// Load-test a running server with synthetic publishers and subscribers.
    Loadtest(LoadtestArgs),
}

/// `confab loadtest` flags (see docs/loadtest.md).
#[derive(clap::Args, Debug)]
struct LoadtestArgs {
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
    #[arg(long, default_value = "10/s", value_parser = confab::loadtest::parse_rate)]
    ramp: f64,
    /// Publishers send audio only.
    #[arg(long)]
    audio_only: bool,
    /// Video bitrate per publisher (e.g. 1.5M, 800k).
    #[arg(long, default_value = "1.5M", value_parser = confab::loadtest::parse_bitrate)]
    video_bitrate: u64,
    /// Video frames per second.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Video codec: vp8 or h264.
    #[arg(long, default_value = "vp8")]
    codec: confab::client::synth::VideoCodec,
    /// Largest acceptable packet loss, percent.
    #[arg(long, default_value_t = 1.0)]
    max_loss: f64,
    /// Write the JSON report to this file ("-": stdout, the table then goes to stderr).
    #[arg(long)]
    json: Option<String>,
    /// Server process id, for CPU and memory figures from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Server metrics endpoint (e.g. http://127.0.0.1:8080/metrics).
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
    /// Test knob: this many publishers offer tracks but never send media.
    #[arg(long, default_value_t = 0, hide = true)]
    silent_publishers: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref()).context("loading configuration")?;
    let level = match &cli.command {
        // Hundreds of client connections: keep the WebRTC stack's per-connection notices out.
        Some(Command::Loadtest(_)) => "warn,rtc_dtls=error",
        _ => config.log.level.as_str(),
    };
    init_logging(level, cli.log_format.unwrap_or(config.log.format));
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    match cli.command.unwrap_or(Command::Serve { self_signed: false }) {
        Command::Serve { self_signed } => {
            let mut config = config;
            config.http.self_signed |= self_signed;
            runtime.block_on(serve(config))
        }
        Command::Token {
            room,
            identity,
            name,
            ttl,
            no_publish,
            no_subscribe,
            admin,
            api_key,
        } => {
            let key = match api_key {
                Some(k) => k,
                None => config.auth.keys.keys().next().cloned().context(
                    "no API key configured: set [auth] keys or CONFAB_API_KEY and CONFAB_API_SECRET",
                )?,
            };
            let auth = Auth::new(config.auth.keys.clone().into_iter().collect());
            let token = auth
                .issue(
                    &key,
                    &TokenRequest {
                        room,
                        identity,
                        name,
                        ttl,
                        can_publish: !no_publish,
                        can_subscribe: !no_subscribe,
                        admin,
                    },
                )
                .context("minting the token")?;
            println!("{token}");
            Ok(())
        }
        Command::Loadtest(args) => runtime.block_on(loadtest(args)),
    }
}

async fn loadtest(args: LoadtestArgs) -> anyhow::Result<()> {
    let cfg = confab::loadtest::LoadtestConfig {
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
        metrics_url: args.metrics_url,
        silent_publishers: args.silent_publishers,
        progress: !args.quiet,
        api_key: args.api_key.zip(args.api_secret),
        ..Default::default()
    };
    let report = confab::loadtest::run(&cfg).await?;
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

async fn serve(config: Config) -> anyhow::Result<()> {
    let server = Server::start(config).await?;
    let stop = server.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        stop.cancel();
    });
    server.wait().await?;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
