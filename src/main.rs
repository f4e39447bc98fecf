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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref()).context("loading configuration")?;
    init_logging(
        &config.log.level,
        cli.log_format.unwrap_or(config.log.format),
    );
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
    }
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
