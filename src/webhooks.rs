//! Webhooks: room, participant and track events POSTed as signed JSON to the URLs in
//! `[webhooks]` ([`WebhooksConfig`]).
//!
//! [`Webhooks::emit`] never blocks: it puts the event on a bounded queue per URL (dropping and
//! counting it when that queue is full). One task per URL delivers its queue **in order, one
//! event at a time**: a failed attempt (not 2xx, a timeout, a connection error) is retried with
//! exponential backoff (250 ms × 2ⁿ, capped at 10 s, ±20 % jitter) until it succeeds or
//! `max_attempts` are spent, before the next event is sent. On shutdown each task keeps
//! delivering what is queued for at most 2 s, then stops.
//!
//! # What a receiver gets
//! `POST` with `Content-Type: application/json`, a [`WebhookEvent`] body, and the headers
//! - `X-Confab-Signature: sha256=<lowercase hex HMAC-SHA256(secret, body)>` (absent when no
//!   secret is configured): compute it over the **raw body bytes** and compare in constant
//!   time, as [`verify`] does;
//! - `X-Confab-Event`: the [`EventKind`] (`room_started`, …);
//! - `X-Confab-Event-Id`: the event's unique id — the same on every attempt, so a receiver
//!   that answered too slowly and sees the event again can drop the repeat;
//! - `X-Confab-Attempt`: 1 for the first attempt, 2 for the first retry, …;
//! - `User-Agent: confab/<version>`.
//!
//! Redirects are not followed (a 3xx is a failed attempt).
//!
//! # Metrics
//! Registered on [`crate::telemetry::METRICS`]' registry (so they appear on `/metrics`), summed
//! over every [`Webhooks`] in the process; [`Webhooks::stats`] has one instance's own counts:
//! - `confab_webhooks_delivered_total`: events a URL answered with 2xx;
//! - `confab_webhooks_failed_total`: events given up (attempts spent, or cut off at shutdown);
//! - `confab_webhooks_retries_total`: attempts after the first;
//! - `confab_webhooks_dropped_total`: events not queued (queue full, delivery stopped) or still
//!   queued when the shutdown flush ended.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use prometheus::IntCounter;
use rand::distr::Alphanumeric;
use rand::Rng;
use reqwest::header::CONTENT_TYPE;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use crate::config::WebhooksConfig;
use crate::telemetry::METRICS;

/// Header carrying `sha256=<hex HMAC-SHA256(secret, body)>`.
pub const SIGNATURE_HEADER: &str = "x-confab-signature";
/// Header carrying the [`EventKind`].
pub const EVENT_HEADER: &str = "x-confab-event";
/// Header carrying the event id.
pub const EVENT_ID_HEADER: &str = "x-confab-event-id";
/// Header carrying the attempt number (1-based).
pub const ATTEMPT_HEADER: &str = "x-confab-attempt";

/// `User-Agent` of every webhook request.
const USER_AGENT_VALUE: &str = concat!("confab/", env!("CARGO_PKG_VERSION"));
/// Backoff before the first retry; doubled for each further one.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Longest backoff (before jitter).
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// How long the tasks keep delivering after shutdown.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Most of a response body read (so the connection can be reused); the rest is discarded.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// What happened.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A room was opened (its first participant is joining).
    RoomStarted,
    /// A room was closed (its last participant left).
    RoomFinished,
    /// A participant joined a room.
    ParticipantJoined,
    /// A participant left a room.
    ParticipantLeft,
    /// A participant started publishing a track.
    TrackPublished,
    /// A published track ended.
    TrackUnpublished,
}

impl EventKind {
    /// The kind as it appears in the body and in `X-Confab-Event` (`room_started`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoomStarted => "room_started",
            Self::RoomFinished => "room_finished",
            Self::ParticipantJoined => "participant_joined",
            Self::ParticipantLeft => "participant_left",
            Self::TrackPublished => "track_published",
            Self::TrackUnpublished => "track_unpublished",
        }
    }
}

/// The room an event belongs to.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoomInfo {
    /// The room's name.
    pub name: String,
}

/// The participant a participant or track event is about.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ParticipantRef {
    /// The participant id the server minted.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The access token's identity (`null` on an open server).
    #[serde(default)]
    pub identity: Option<String>,
    /// How it joined: `"browser"` (signaling WebSocket) or `"whip"`.
    pub kind: String,
}

/// The track a track event is about.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrackRef {
    /// The track id the server minted.
    pub id: String,
    /// `"audio"` or `"video"`.
    pub kind: String,
    /// Codec name (`"opus"`, `"VP8"`, …).
    pub codec: String,
}

/// One webhook body.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WebhookEvent {
    /// What happened.
    pub event: EventKind,
    /// Where.
    pub room: RoomInfo,
    /// Who (participant and track events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<ParticipantRef>,
    /// Which track (track events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<TrackRef>,
    /// Unique, random event id (`e` + 20 alphanumerics); the same on every delivery attempt.
    pub id: String,
    /// When the event happened, in Unix milliseconds.
    pub created_at: u64,
}

impl WebhookEvent {
    /// An event of `room` happening now, with a fresh id.
    pub fn new(event: EventKind, room: &str) -> Self {
        let id: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(20)
            .map(char::from)
            .collect();
        let created_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            event,
            room: RoomInfo { name: room.into() },
            participant: None,
            track: None,
            id: format!("e{id}"),
            created_at,
        }
    }

    /// Sets the participant the event is about.
    pub fn participant(mut self, participant: ParticipantRef) -> Self {
        self.participant = Some(participant);
        self
    }

    /// Sets the track the event is about.
    pub fn track(mut self, track: TrackRef) -> Self {
        self.track = Some(track);
        self
    }
}

fn mac(secret: &[u8], body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts a key of any length (longer keys are hashed), so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac
}

/// The `X-Confab-Signature` value of `body`: `sha256=<lowercase hex HMAC-SHA256(secret, body)>`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, body).finalize().into_bytes())
    )
}

/// Whether `header` (an `X-Confab-Signature` value) is the signature of `body` under `secret`.
/// The comparison is constant-time; anything malformed is `false`. A receiver does the same:
/// HMAC-SHA256 over the raw request body, compared in constant time to the hex after `sha256=`.
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_tag) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(tag) = hex::decode(hex_tag) else {
        return false;
    };
    mac(secret, body).verify_slice(&tag).is_ok()
}

/// One [`Webhooks`] instance's delivery counts (see the module docs for what each counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WebhookStats {
    /// Events delivered (2xx).
    pub delivered: u64,
    /// Events given up.
    pub failed: u64,
    /// Attempts after the first.
    pub retries: u64,
    /// Events dropped without an attempt.
    pub dropped: u64,
}

/// The process-wide counters on the `/metrics` registry.
struct Counters {
    delivered: IntCounter,
    failed: IntCounter,
    retries: IntCounter,
    dropped: IntCounter,
}

static COUNTERS: LazyLock<Counters> = LazyLock::new(|| {
    let counter = |name: &str, help: &str| {
        let c = IntCounter::new(name, help).expect("valid metric");
        if let Err(e) = METRICS.registry.register(Box::new(c.clone())) {
            warn!(%e, name, "registering a webhook metric failed");
        }
        c
    };
    Counters {
        delivered: counter(
            "confab_webhooks_delivered_total",
            "Webhook events delivered (2xx)",
        ),
        failed: counter(
            "confab_webhooks_failed_total",
            "Webhook events given up after their last attempt",
        ),
        retries: counter(
            "confab_webhooks_retries_total",
            "Webhook delivery attempts after the first",
        ),
        dropped: counter(
            "confab_webhooks_dropped_total",
            "Webhook events dropped unsent (queue full, delivery stopped, or left at shutdown)",
        ),
    }
});

/// One instance's counts, mirrored into [`COUNTERS`].
#[derive(Default)]
struct Stats {
    delivered: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    dropped: AtomicU64,
}

impl Stats {
    fn add_delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        COUNTERS.delivered.inc();
    }

    fn add_failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        COUNTERS.failed.inc();
    }

    fn add_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        COUNTERS.retries.inc();
    }

    /// Returns the instance's dropped count so far.
    fn add_dropped(&self, n: u64) -> u64 {
        COUNTERS.dropped.inc_by(n);
        self.dropped.fetch_add(n, Ordering::Relaxed) + n
    }

    fn snapshot(&self) -> WebhookStats {
        WebhookStats {
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// Delivery timings and TLS roots the tests change.
#[derive(Clone, Debug)]
pub(crate) struct Tuning {
    /// Backoff before the first retry.
    pub(crate) backoff_base: Duration,
    /// Longest backoff before jitter.
    pub(crate) backoff_cap: Duration,
    /// How long to keep delivering after shutdown.
    pub(crate) flush: Duration,
    /// A root certificate trusted beside the built-in and system roots.
    pub(crate) extra_root: Option<reqwest::Certificate>,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            backoff_base: BACKOFF_BASE,
            backoff_cap: BACKOFF_CAP,
            flush: FLUSH_TIMEOUT,
            extra_root: None,
        }
    }
}

/// One URL's queue, as [`Webhooks::emit`] sees it.
struct Queue {
    tx: mpsc::Sender<Arc<WebhookEvent>>,
    /// The URL without query, credentials or fragment, for logs.
    label: Arc<str>,
}

struct Inner {
    queues: Vec<Queue>,
    stats: Arc<Stats>,
    /// Delivery tasks still running.
    running: watch::Receiver<usize>,
}

/// The webhook sender: a handle to one delivery task per URL. Cheap to clone; every clone
/// feeds the same queues.
#[derive(Clone)]
pub struct Webhooks {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self
            .inner
            .iter()
            .flat_map(|i| i.queues.iter().map(|q| &*q.label))
            .collect();
        f.debug_struct("Webhooks").field("urls", &urls).finish()
    }
}

impl Webhooks {
    /// Webhooks that are off: [`emit`](Self::emit) does nothing.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Starts one delivery task per URL in `cfg.urls` (none, and [`disabled`](Self::disabled),
    /// when the list is empty), signing bodies with `secret` (see
    /// [`WebhooksConfig::signing_secret`]; `None`: unsigned, with a warning). The tasks stop
    /// when `shutdown` is cancelled, after delivering what is queued for at most 2 s; await
    /// [`finished`](Self::finished) for that. URLs that do not parse are skipped (logged);
    /// configuration loading already rejects them.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn start(
        cfg: &WebhooksConfig,
        secret: Option<String>,
        shutdown: CancellationToken,
    ) -> Self {
        Self::start_tuned(cfg, secret, shutdown, Tuning::default())
    }

    pub(crate) fn start_tuned(
        cfg: &WebhooksConfig,
        secret: Option<String>,
        shutdown: CancellationToken,
        tuning: Tuning,
    ) -> Self {
        LazyLock::force(&COUNTERS);
        if cfg.urls.is_empty() {
            return Self::disabled();
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT_VALUE)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(root) = tuning.extra_root.clone() {
            builder = builder.add_root_certificate(root);
        }
        let client = match builder.build() {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %error_chain(&e), "webhooks: cannot build the HTTP client; webhooks are off");
                return Self::disabled();
            }
        };
        if secret.is_none() {
            warn!("webhooks: no signing secret ([auth] keys or webhooks.secret); bodies are sent unsigned");
        }
        let secret: Option<Arc<[u8]>> = secret.map(|s| Arc::from(s.into_bytes()));
        let stats = Arc::new(Stats::default());
        let (running_tx, running) = watch::channel(0usize);
        let running_tx = Arc::new(running_tx);
        let mut queues = Vec::new();
        for url in &cfg.urls {
            let url = match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => u,
                _ => {
                    warn!(url, "webhooks: not an http(s) URL; skipped");
                    continue;
                }
            };
            let label: Arc<str> = Arc::from(redacted(&url));
            let (tx, rx) = mpsc::channel(cfg.queue.max(1));
            running_tx.send_modify(|n| *n += 1);
            let task = Delivery {
                client: client.clone(),
                url,
                label: label.clone(),
                rx,
                secret: secret.clone(),
                max_attempts: cfg.max_attempts.max(1),
                tuning: tuning.clone(),
                stats: stats.clone(),
                shutdown: shutdown.clone(),
                in_flight: None,
                _running: RunningGuard(running_tx.clone()),
            };
            tokio::spawn(task.run());
            queues.push(Queue { tx, label });
        }
        if queues.is_empty() {
            return Self::disabled();
        }
        info!(
            urls = queues.len(),
            signed = secret.is_some(),
            "webhooks on"
        );
        Self {
            inner: Some(Arc::new(Inner {
                queues,
                stats,
                running,
            })),
        }
    }

    /// Queues `event` for every URL. Never blocks and never waits: when a URL's queue is full
    /// (or its delivery has stopped) the event is dropped for that URL and counted.
    pub fn emit(&self, event: WebhookEvent) {
        let Some(inner) = &self.inner else {
            return;
        };
        let event = Arc::new(event);
        for queue in &inner.queues {
            if queue.tx.try_send(event.clone()).is_err() {
                let dropped = inner.stats.add_dropped(1);
                // Logged at 1, 2, 4, 8, … drops: visible, but no flood while a URL is down.
                if dropped.is_power_of_two() {
                    warn!(url = %queue.label, dropped, "webhook queue full; event dropped");
                }
            }
        }
    }

    /// Whether any URL is configured.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// This instance's delivery counts so far.
    pub fn stats(&self) -> WebhookStats {
        self.inner
            .as_ref()
            .map(|i| i.stats.snapshot())
            .unwrap_or_default()
    }

    /// Resolves when every delivery task has stopped (after `shutdown` fired and the flush
    /// ended, or once every handle is dropped); at once when disabled. Await it before the
    /// process exits so the flush gets its time.
    pub async fn finished(&self) {
        if let Some(inner) = &self.inner {
            let mut running = inner.running.clone();
            // An error means every task (each holding a sender) is gone: finished too.
            let _ = running.wait_for(|n| *n == 0).await;
        }
    }
}

/// Counts a delivery task out of `running` when it ends, however it ends.
struct RunningGuard(Arc<watch::Sender<usize>>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    /// The receiver answered, but not with 2xx.
    #[error("HTTP {0}")]
    Status(reqwest::StatusCode),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// Connecting, TLS, or the exchange failed.
    #[error("{0}")]
    Transport(String),
}

impl From<reqwest::Error> for AttemptError {
    fn from(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            Self::Timeout
        } else {
            Self::Transport(error_chain(&e))
        }
    }
}

/// `e` and its sources, without the URL (which may hold credentials).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = match e.downcast_ref::<reqwest::Error>() {
        // reqwest's own message names the URL; its sources say what went wrong.
        Some(r) if r.url().is_some() => {
            String::from(if r.is_connect() { "connect" } else { "request" })
        }
        _ => e.to_string(),
    };
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `url` for logs: no credentials, query or fragment.
fn redacted(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// The backoff before retry `retry` (0 = the first retry): `base × 2^retry`, at most `cap`,
/// times `jitter` (drawn from 0.8..=1.2).
fn backoff(base: Duration, cap: Duration, retry: u32, jitter: f64) -> Duration {
    base.saturating_mul(2u32.saturating_pow(retry))
        .min(cap)
        .mul_f64(jitter)
}

/// One URL's delivery task.
struct Delivery {
    client: reqwest::Client,
    url: reqwest::Url,
    label: Arc<str>,
    rx: mpsc::Receiver<Arc<WebhookEvent>>,
    secret: Option<Arc<[u8]>>,
    max_attempts: u32,
    tuning: Tuning,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    /// The event being delivered (to count it if the shutdown flush cuts it off).
    in_flight: Option<Arc<WebhookEvent>>,
    _running: RunningGuard,
}

impl Delivery {
    async fn run(mut self) {
        let shutdown = self.shutdown.clone();
        let flush = self.tuning.flush;
        let flush_over = async move {
            shutdown.cancelled().await;
            tokio::time::sleep(flush).await;
        };
        let flushed = tokio::select! {
            () = self.work() => true,
            () = flush_over => false,
        };
        if flushed {
            debug!(url = %self.label, "webhook delivery stopped");
            return;
        }
        let cut = self.in_flight.take();
        if let Some(event) = &cut {
            self.stats.add_failed();
            warn!(url = %self.label, event = event.event.as_str(), id = %event.id,
                "webhook given up: shutdown flush timed out");
        }
        self.rx.close();
        let mut left = 0;
        while self.rx.try_recv().is_ok() {
            left += 1;
        }
        if left > 0 {
            self.stats.add_dropped(left);
            warn!(url = %self.label, left, "webhook events not sent: shutdown flush timed out");
        }
    }

    /// Delivers queued events until the queue closes or, after shutdown, is empty.
    async fn work(&mut self) {
        loop {
            let event = if self.shutdown.is_cancelled() {
                match self.rx.try_recv() {
                    Ok(e) => e,
                    Err(_) => return,
                }
            } else {
                tokio::select! {
                    e = self.rx.recv() => match e {
                        Some(e) => e,
                        None => return,
                    },
                    () = self.shutdown.cancelled() => continue,
                }
            };
            self.in_flight = Some(event.clone());
            self.deliver(&event).await;
            self.in_flight = None;
        }
    }

    /// Attempts `event` until it is delivered or `max_attempts` are spent.
    async fn deliver(&self, event: &WebhookEvent) {
        let body = match serde_json::to_vec(event) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                self.stats.add_failed();
                warn!(url = %self.label, id = %event.id, %e, "webhook body not serializable");
                return;
            }
        };
        let signature = self.secret.as_deref().map(|s| sign(s, &body));
        let mut attempt = 1;
        loop {
            match self
                .attempt(event, &body, signature.as_deref(), attempt)
                .await
            {
                Ok(()) => {
                    self.stats.add_delivered();
                    debug!(url = %self.label, event = event.event.as_str(), id = %event.id,
                        attempt, "webhook delivered");
                    return;
                }
                Err(error) if attempt >= self.max_attempts => {
                    self.stats.add_failed();
                    warn!(url = %self.label, event = event.event.as_str(), id = %event.id,
                        attempts = attempt, %error, "webhook given up");
                    return;
                }
                Err(error) => {
                    let jitter = rand::rng().random_range(0.8..=1.2);
                    let wait = backoff(
                        self.tuning.backoff_base,
                        self.tuning.backoff_cap,
                        attempt - 1,
                        jitter,
                    );
                    debug!(url = %self.label, id = %event.id, attempt, %error, ?wait,
                        "webhook attempt failed; retrying");
                    tokio::time::sleep(wait).await;
                    self.stats.add_retry();
                    attempt += 1;
                }
            }
        }
    }

    async fn attempt(
        &self,
        event: &WebhookEvent,
        body: &Bytes,
        signature: Option<&str>,
        attempt: u32,
    ) -> Result<(), AttemptError> {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(EVENT_HEADER, event.event.as_str())
            .header(EVENT_ID_HEADER, event.id.as_str())
            .header(ATTEMPT_HEADER, attempt.to_string())
            .body(body.clone());
        if let Some(signature) = signature {
            request = request.header(SIGNATURE_HEADER, signature);
        }
        let mut response = request.send().await?;
        let status = response.status();
        // Read (a bounded part of) the answer so the connection can be reused; its content
        // and any error reading it do not matter.
        let mut read = 0;
        while let Ok(Some(chunk)) = response.chunk().await {
            read += chunk.len();
            if read > MAX_RESPONSE_BODY {
                break;
            }
        }
        if status.is_success() {
            Ok(())
        } else {
            Err(AttemptError::Status(status))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;
    use std::time::Instant;

    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use axum::Router;

    use super::*;
    use crate::config::{AuthConfig, ConfigError};

    const SECRET: &str = "webhook-test-secret";

    /// One request the receiver saw.
    #[derive(Clone, Debug)]
    struct Seen {
        headers: HeaderMap,
        body: Bytes,
        status: StatusCode,
    }

    impl Seen {
        fn header(&self, name: &str) -> &str {
            self.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        }
    }

    /// A webhook receiver on loopback that fails the first `fail_first` requests with 500 and
    /// makes the first `slow_first` wait `slow` before answering.
    #[derive(Clone, Default)]
    struct Receiver {
        seen: Arc<Mutex<Vec<Seen>>>,
        count: Arc<AtomicUsize>,
        fail_first: usize,
        slow_first: usize,
        slow: Duration,
    }

    async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
        let n = r.count.fetch_add(1, Ordering::SeqCst);
        let status = if n < r.fail_first {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::NO_CONTENT
        };
        r.seen.lock().unwrap().push(Seen {
            headers,
            body,
            status,
        });
        if n < r.slow_first {
            tokio::time::sleep(r.slow).await;
        }
        status
    }

    impl Receiver {
        fn router(&self) -> Router {
            Router::new()
                .route("/hook", post(hook))
                .with_state(self.clone())
        }

        /// Serves over plain HTTP; returns the hook URL.
        async fn serve(&self) -> String {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let app = self.router();
            tokio::spawn(async move { axum::serve(listener, app).await });
            format!("http://{addr}/hook?token=abc")
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }

        /// Waits (at most 10 s) until `n` requests were answered with 2xx.
        async fn wait_delivered(&self, n: usize) -> Vec<Seen> {
            let start = Instant::now();
            loop {
                let seen = self.seen();
                if seen.iter().filter(|s| s.status.is_success()).count() >= n {
                    return seen;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "only {} requests: {seen:?}",
                    seen.len()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    /// The delivery task counts a delivery when the response has come back, a moment after the
    /// receiver recorded the request: waits (at most 2 s) until the counters satisfy `done`.
    async fn stats_when(hooks: &Webhooks, done: impl Fn(&WebhookStats) -> bool) -> WebhookStats {
        let start = Instant::now();
        loop {
            let stats = hooks.stats();
            if done(&stats) || start.elapsed() > Duration::from_secs(2) {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn config(url: String) -> WebhooksConfig {
        WebhooksConfig {
            urls: vec![url],
            ..WebhooksConfig::default()
        }
    }

    fn fast() -> Tuning {
        Tuning {
            backoff_base: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(100),
            flush: Duration::from_millis(300),
            extra_root: None,
        }
    }

    fn start(cfg: &WebhooksConfig, tuning: Tuning) -> (Webhooks, CancellationToken) {
        let shutdown = CancellationToken::new();
        let hooks = Webhooks::start_tuned(cfg, Some(SECRET.into()), shutdown.clone(), tuning);
        (hooks, shutdown)
    }

    /// A few events of every shape.
    fn events() -> Vec<WebhookEvent> {
        let alice = ParticipantRef {
            id: "pAAAAAAAAAA".into(),
            name: "alice".into(),
            identity: Some("alice@example.org".into()),
            kind: "browser".into(),
        };
        let track = TrackRef {
            id: "tBBBBBBBBBB".into(),
            kind: "video".into(),
            codec: "VP8".into(),
        };
        vec![
            WebhookEvent::new(EventKind::RoomStarted, "standup"),
            WebhookEvent::new(EventKind::ParticipantJoined, "standup").participant(alice.clone()),
            WebhookEvent::new(EventKind::TrackPublished, "standup")
                .participant(alice.clone())
                .track(track.clone()),
            WebhookEvent::new(EventKind::TrackUnpublished, "standup")
                .participant(alice.clone())
                .track(track),
            WebhookEvent::new(EventKind::ParticipantLeft, "standup").participant(alice),
            WebhookEvent::new(EventKind::RoomFinished, "standup"),
        ]
    }

    /// Checks that `seen` (the 2xx requests) carry `sent`, in order, signed, with the headers.
    fn assert_delivered_in_order(seen: &[Seen], sent: &[WebhookEvent]) {
        let ok: Vec<&Seen> = seen.iter().filter(|s| s.status.is_success()).collect();
        assert_eq!(ok.len(), sent.len());
        for (s, event) in ok.iter().zip(sent) {
            assert!(
                verify(SECRET.as_bytes(), &s.body, s.header(SIGNATURE_HEADER)),
                "bad signature on {event:?}"
            );
            assert_eq!(s.header("content-type"), "application/json");
            assert_eq!(
                s.header("user-agent"),
                format!("confab/{}", env!("CARGO_PKG_VERSION"))
            );
            assert_eq!(s.header(EVENT_HEADER), event.event.as_str());
            assert_eq!(s.header(EVENT_ID_HEADER), event.id);
            let got: WebhookEvent = serde_json::from_slice(&s.body).unwrap();
            assert_eq!(&got, event);
        }
    }

    #[tokio::test]
    async fn events_arrive_in_order_signed() {
        let receiver = Receiver::default();
        let url = receiver.serve().await;
        let (hooks, shutdown) = start(&config(url), fast());
        let sent = events();
        for e in &sent {
            hooks.emit(e.clone());
        }
        let seen = receiver.wait_delivered(sent.len()).await;
        assert_delivered_in_order(&seen, &sent);
        assert!(seen.iter().all(|s| s.header(ATTEMPT_HEADER) == "1"));

        // The wire format: snake_case kinds, absent participant/track, ids, Unix ms.
        let first: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
        assert_eq!(first["event"], "room_started");
        assert_eq!(first["room"]["name"], "standup");
        assert!(first.get("participant").is_none() && first.get("track").is_none());
        let id = first["id"].as_str().unwrap();
        assert!(id.len() == 21 && id.starts_with('e'));
        let created = first["created_at"].as_u64().unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!(now.as_millis().abs_diff(u128::from(created)) < 60_000);
        let third: serde_json::Value = serde_json::from_slice(&seen[2].body).unwrap();
        assert_eq!(third["event"], "track_published");
        assert_eq!(third["participant"]["identity"], "alice@example.org");
        assert_eq!(third["participant"]["kind"], "browser");
        assert_eq!(third["track"]["kind"], "video");
        assert_eq!(third["track"]["codec"], "VP8");
        let ids: std::collections::HashSet<&str> = sent.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), sent.len());

        assert_eq!(
            stats_when(&hooks, |s| s.delivered >= sent.len() as u64).await,
            WebhookStats {
                delivered: sent.len() as u64,
                ..WebhookStats::default()
            }
        );
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(1), hooks.finished())
            .await
            .expect("delivery stops at shutdown");
    }

    #[tokio::test]
    async fn failed_attempts_are_retried_in_order() {
        let receiver = Receiver {
            fail_first: 2,
            ..Receiver::default()
        };
        let url = receiver.serve().await;
        let (hooks, _shutdown) = start(&config(url), fast());
        let sent = events();
        for e in &sent {
            hooks.emit(e.clone());
        }
        let seen = receiver.wait_delivered(sent.len()).await;
        assert_eq!(seen.len(), sent.len() + 2);
        // The first event three times (500, 500, delivered), then each of the others once.
        for (s, attempt) in seen[..3].iter().zip(["1", "2", "3"]) {
            assert_eq!(s.header(EVENT_ID_HEADER), sent[0].id);
            assert_eq!(s.header(ATTEMPT_HEADER), attempt);
            assert!(verify(
                SECRET.as_bytes(),
                &s.body,
                s.header(SIGNATURE_HEADER)
            ));
        }
        assert_eq!(
            seen[0].body, seen[2].body,
            "every attempt sends the same bytes"
        );
        assert!(seen[3..].iter().all(|s| s.header(ATTEMPT_HEADER) == "1"));
        assert_delivered_in_order(&seen, &sent);
        let stats = stats_when(&hooks, |s| s.delivered >= 6).await;
        assert_eq!((stats.delivered, stats.retries, stats.failed), (6, 2, 0));
    }

    #[tokio::test]
    async fn a_timeout_is_retried() {
        let receiver = Receiver {
            slow_first: 1,
            slow: Duration::from_secs(3),
            ..Receiver::default()
        };
        let url = receiver.serve().await;
        let cfg = WebhooksConfig {
            timeout: Duration::from_millis(200),
            ..config(url)
        };
        let (hooks, _shutdown) = start(&cfg, fast());
        let event = WebhookEvent::new(EventKind::RoomStarted, "r");
        hooks.emit(event.clone());
        let seen = receiver.wait_delivered(2).await;
        assert_eq!(seen[1].header(EVENT_ID_HEADER), event.id);
        assert_eq!(seen[1].header(ATTEMPT_HEADER), "2");
        // The receiver answered the first attempt 2xx, too late: delivered once, retried once.
        let stats = stats_when(&hooks, |s| s.delivered > 0).await;
        assert_eq!((stats.delivered, stats.retries), (1, 1));
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts_then_sends_the_next() {
        let receiver = Receiver {
            fail_first: 3,
            ..Receiver::default()
        };
        let url = receiver.serve().await;
        let cfg = WebhooksConfig {
            max_attempts: 3,
            ..config(url)
        };
        let (hooks, _shutdown) = start(&cfg, fast());
        let sent = events();
        for e in &sent {
            hooks.emit(e.clone());
        }
        let seen = receiver.wait_delivered(sent.len() - 1).await;
        assert_eq!(seen.len(), sent.len() + 2);
        assert!(seen[..3]
            .iter()
            .all(|s| s.header(EVENT_ID_HEADER) == sent[0].id));
        assert_delivered_in_order(&seen, &sent[1..]);
        let stats = stats_when(&hooks, |s| s.delivered >= 5).await;
        assert_eq!((stats.delivered, stats.failed, stats.retries), (5, 1, 2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn emit_never_blocks_and_counts_drops_when_the_receiver_is_down() {
        // A port nothing listens on.
        let closed: SocketAddr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let cfg = WebhooksConfig {
            queue: 16,
            ..config(format!("http://{closed}/hook"))
        };
        let (hooks, shutdown) = start(&cfg, fast());
        let events: Vec<_> = (0..10_000)
            .map(|_| WebhookEvent::new(EventKind::ParticipantJoined, "r"))
            .collect();
        let start = Instant::now();
        for event in events {
            hooks.emit(event);
        }
        let took = start.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "10 000 emits took {took:?}"
        );
        let stats = hooks.stats();
        // 16 fit in the queue, the delivery task may have taken one or two out meanwhile.
        assert!(
            (10_000 - 16 - 2..=10_000 - 16).contains(&stats.dropped),
            "{stats:?}"
        );
        assert_eq!(stats.delivered, 0);

        // Shutdown ends delivery within the flush time and counts what was left.
        shutdown.cancel();
        let start = Instant::now();
        tokio::time::timeout(Duration::from_secs(2), hooks.finished())
            .await
            .expect("delivery stops after the flush time");
        assert!(start.elapsed() >= Duration::from_millis(250));
        let stats = hooks.stats();
        assert_eq!(stats.delivered, 0);
        assert_eq!(stats.dropped + stats.failed, 10_000, "{stats:?}");
        // Once stopped, emit still returns at once and counts the drop.
        hooks.emit(WebhookEvent::new(EventKind::RoomFinished, "r"));
        assert_eq!(hooks.stats().dropped, stats.dropped + 1);
    }

    #[tokio::test]
    async fn shutdown_flushes_what_is_queued() {
        let receiver = Receiver::default();
        let url = receiver.serve().await;
        let (hooks, shutdown) = start(&config(url), Tuning::default());
        let sent = events();
        for e in &sent {
            hooks.emit(e.clone());
        }
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(3), hooks.finished())
            .await
            .expect("delivery stops");
        assert_delivered_in_order(&receiver.seen(), &sent);
    }

    #[tokio::test]
    async fn https_urls_work() {
        let receiver = Receiver::default();
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let key = rcgen::generate_simple_self_signed(names).unwrap();
        let cert = key.cert.pem();
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
            cert.clone().into_bytes(),
            key.signing_key.serialize_pem().into_bytes(),
        )
        .await
        .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = axum_server::from_tcp_rustls(listener, tls).unwrap();
        let app = receiver.router();
        tokio::spawn(async move { server.serve(app.into_make_service()).await });

        let tuning = Tuning {
            extra_root: Some(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap()),
            ..fast()
        };
        let (hooks, _shutdown) = start(&config(format!("https://{addr}/hook")), tuning);
        let sent = events();
        for e in &sent {
            hooks.emit(e.clone());
        }
        let seen = receiver.wait_delivered(sent.len()).await;
        assert_delivered_in_order(&seen, &sent);
    }

    #[tokio::test]
    async fn unsigned_without_a_secret() {
        let receiver = Receiver::default();
        let url = receiver.serve().await;
        let hooks = Webhooks::start_tuned(&config(url), None, CancellationToken::new(), fast());
        hooks.emit(WebhookEvent::new(EventKind::RoomStarted, "r"));
        let seen = receiver.wait_delivered(1).await;
        assert!(seen[0].headers.get(SIGNATURE_HEADER).is_none());
    }

    #[tokio::test]
    async fn disabled_and_empty_do_nothing() {
        let off = Webhooks::disabled();
        off.emit(WebhookEvent::new(EventKind::RoomStarted, "r"));
        assert!(!off.is_enabled());
        assert_eq!(off.stats(), WebhookStats::default());
        off.finished().await;
        let empty = Webhooks::start(
            &WebhooksConfig::default(),
            Some(SECRET.into()),
            CancellationToken::new(),
        );
        assert!(!empty.is_enabled());
    }

    #[test]
    fn sign_and_verify() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let body = br#"{"event":"room_started","room":{"name":"r"}}"#;
        let header = sign(b"secret", body);
        assert!(verify(b"secret", body, &header));
        assert!(!verify(
            b"secret",
            br#"{"event":"room_started","room":{"name":"R"}}"#,
            &header
        ));
        assert!(!verify(b"secret", &body[..body.len() - 1], &header));
        assert!(!verify(b"Secret", body, &header));
        assert!(!verify(b"", body, &header));
        // Malformed headers.
        let hex_part = header.trim_start_matches("sha256=");
        assert!(!verify(b"secret", body, hex_part));
        assert!(!verify(b"secret", body, &format!("sha1={hex_part}")));
        assert!(!verify(b"secret", body, &header[..header.len() - 2]));
        assert!(!verify(b"secret", body, &format!("{header}00")));
        assert!(!verify(b"secret", body, "sha256=zz"));
        assert!(!verify(b"secret", body, ""));
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let (base, cap) = (BACKOFF_BASE, BACKOFF_CAP);
        let ms = |retry, jitter| backoff(base, cap, retry, jitter).as_millis();
        assert_eq!(
            (0..8).map(|r| ms(r, 1.0)).collect::<Vec<_>>(),
            [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000]
        );
        assert_eq!(ms(40, 1.0), 10_000);
        assert_eq!(ms(0, 0.8), 200);
        assert_eq!(ms(6, 1.2), 12_000);
    }

    #[test]
    fn signing_secret_follows_auth_keys() {
        let keys = |pairs: &[(&str, &str)]| AuthConfig {
            keys: pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect::<BTreeMap<_, _>>(),
        };
        let two = keys(&[("zed", "z-secret"), ("abc", "a-secret")]);
        let cfg = WebhooksConfig::default();
        assert_eq!(
            cfg.signing_secret(&two).unwrap().as_deref(),
            Some("a-secret")
        );
        let chosen = WebhooksConfig {
            api_key: Some("zed".into()),
            ..WebhooksConfig::default()
        };
        assert_eq!(
            chosen.signing_secret(&two).unwrap().as_deref(),
            Some("z-secret")
        );
        let missing = WebhooksConfig {
            api_key: Some("nope".into()),
            ..WebhooksConfig::default()
        };
        assert!(matches!(
            missing.signing_secret(&two),
            Err(ConfigError::Webhooks(_))
        ));
        let own = WebhooksConfig {
            secret: Some("own".into()),
            ..WebhooksConfig::default()
        };
        assert_eq!(
            own.signing_secret(&keys(&[])).unwrap().as_deref(),
            Some("own")
        );
        assert!(own.signing_secret(&two).is_err());
        assert_eq!(cfg.signing_secret(&keys(&[])).unwrap(), None);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature
    fn config_loading_checks_the_section() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "CONFAB_WEBHOOKS__URLS",
                r#"["https://hooks.example.org/in"]"#,
            );
            jail.set_env("CONFAB_WEBHOOKS__TIMEOUT", "750ms");
            let cfg = crate::config::Config::load(None).unwrap();
            assert_eq!(cfg.webhooks.urls, ["https://hooks.example.org/in"]);
            assert_eq!(cfg.webhooks.timeout, Duration::from_millis(750));
            assert_eq!(cfg.webhooks.max_attempts, 6);
            for bad in [
                r#"["ftp://hooks.example.org/in"]"#,
                r#"["hooks.example.org"]"#,
            ] {
                jail.set_env("CONFAB_WEBHOOKS__URLS", bad);
                assert!(matches!(
                    crate::config::Config::load(None),
                    Err(ConfigError::Webhooks(_))
                ));
            }
            jail.set_env("CONFAB_WEBHOOKS__URLS", "[]");
            jail.set_env("CONFAB_WEBHOOKS__API_KEY", "missing");
            assert!(crate::config::Config::load(None).is_err());
            Ok(())
        });
    }

    #[test]
    fn urls_are_redacted_in_logs() {
        let url =
            reqwest::Url::parse("https://user:pw@hooks.example.org:8443/in?token=x#f").unwrap();
        assert_eq!(redacted(&url), "https://hooks.example.org:8443/in");
    }
}
