//! Configuration: `config/confab.toml` (or `--config PATH`), overridden by `CONFAB_*`
//! environment variables (`__` separates sections: `CONFAB_MEDIA__BIND=0.0.0.0:50000`).
//! Every key has a default, so Confab starts with no file at all.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Process lifecycle.
    pub server: ServerConfig,
    /// HTTP / WebSocket listener.
    pub http: HttpConfig,
    /// The shared UDP media port.
    pub media: MediaConfig,
    /// Signaling limits.
    pub signaling: SignalingConfig,
    /// Access tokens.
    pub auth: AuthConfig,
    /// Capacity and abuse limits.
    pub limits: LimitsConfig,
    /// STUN/TURN servers handed to clients in `joined`.
    pub ice_servers: Vec<IceServer>,
    /// A TURN server sharing a secret with Confab (short-lived credentials per participant).
    pub turn: TurnConfig,
    /// Logging.
    pub log: LogConfig,
    /// Signed HTTP callbacks on room events.
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    /// Several nodes sharing rooms through Redis (off without `redis_url`).
    pub cluster: ClusterConfig,
}

/// A cluster of nodes coordinated through Redis (see [`crate::cluster`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://host:port/db` (or `rediss://`): turns clustering on. Unset: a single node that
    /// needs no Redis.
    pub redis_url: Option<String>,
    /// This node's id (1-64 characters of A-Z a-z 0-9 _ . -), the `node` label of its metrics.
    /// Unset: `node-` and 8 random hex digits, new on every start.
    pub node_id: Option<String>,
    /// Base URL the other nodes reach this node's HTTP at (`http://confab1:8080`; plain HTTP:
    /// TLS ends at the load balancer). Unset: `http://<http.bind>`, which needs a specific
    /// `http.bind` address.
    pub signaling_url: Option<String>,
    /// Shared by all nodes: authenticates relayed requests (they carry the client's IP).
    /// Unset: derived from the first `[auth] keys` secret; with neither, relayed requests are
    /// believed as they are (an open server has nothing to protect).
    pub secret: Option<String>,
    /// How often the node refreshes its record and its rooms' entries in Redis.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A node whose record has not been refreshed for this long has dropped out; its rooms
    /// may be taken over.
    #[serde(with = "humantime_serde")]
    pub node_ttl: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            node_id: None,
            signaling_url: None,
            secret: None,
            heartbeat_interval: Duration::from_secs(1),
            node_ttl: Duration::from_secs(3),
        }
    }
}

impl ClusterConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |why: String| Err(ConfigError::Cluster(why));
        if let Some(url) = &self.redis_url {
            let ok = reqwest::Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "redis" | "rediss" | "unix" | "redis+unix"));
            if !ok {
                return invalid(format!("redis_url {url:?} is not a redis:// URL"));
            }
        }
        if let Some(id) = &self.node_id {
            if crate::ids::RoomName::parse(id).is_none() {
                return invalid(format!(
                    "node_id {id:?} must be 1-64 characters of A-Z a-z 0-9 _ . -"
                ));
            }
        }
        if let Some(url) = &self.signaling_url {
            let ok = reqwest::Url::parse(url).is_ok_and(|u| u.scheme() == "http" && u.has_host());
            if !ok {
                return invalid(format!(
                    "signaling_url {url:?} is not an http:// URL (nodes talk plain HTTP on the internal network)"
                ));
            }
        }
        if self.heartbeat_interval.is_zero() || self.node_ttl < self.heartbeat_interval * 2 {
            return invalid("node_ttl must be at least twice heartbeat_interval (> 0)".into());
        }
        Ok(())
    }
}

/// Process lifecycle.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// On SIGTERM/SIGINT: how long to wait for participants to leave before exiting anyway.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// HTTP / WebSocket listener.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the HTTP server binds (serves `/`, `/ws`, `/metrics`, `/healthz`, `/readyz`).
    pub bind: SocketAddr,
    /// PEM certificate chain: serve HTTPS/WSS when set together with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS with a freshly generated self-signed certificate (development, LAN tests);
    /// `confab serve --self-signed` sets it.
    pub self_signed: bool,
    /// `Origin`s allowed to open the signaling WebSocket (e.g. `https://meet.example.org`).
    /// Empty: any origin.
    pub allowed_origins: Vec<String>,
    /// Reverse proxies whose `X-Forwarded-For` is believed (the client IP for per-IP limits is
    /// then its last entry). Empty: the TCP peer address is the client.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_cert: None,
            tls_key: None,
            self_signed: false,
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Access tokens (JWT, HS256).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// API key → secret. Empty: the server is open (anyone may join any room; a warning is
    /// logged). `CONFAB_API_KEY` + `CONFAB_API_SECRET` add one pair.
    pub keys: BTreeMap<String, String>,
}

/// Capacity and abuse limits.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Rooms open at once.
    pub max_rooms: usize,
    /// Participants per room.
    pub max_participants_per_room: usize,
    /// Tracks one participant may publish; further tracks are not forwarded.
    pub max_tracks_per_participant: usize,
    /// Signaling messages per second per connection (bursts of twice that are allowed).
    pub ws_messages_per_second: u32,
    /// `join`s per second per client IP (bursts of four times that are allowed).
    pub joins_per_second_per_ip: u32,
    /// `join`s per minute of one participant identity (the token's identity; without tokens,
    /// the name from one IP), bursts of half that: a client in a reconnect loop is slowed down
    /// with `rate_limited`. 0: unlimited.
    pub joins_per_minute_per_identity: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_rooms: 1000,
            max_participants_per_room: 100,
            max_tracks_per_participant: 8,
            ws_messages_per_second: 50,
            joins_per_second_per_ip: 5,
            joins_per_minute_per_identity: 20,
        }
    }
}

/// The shared UDP media port and media behaviour.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Address of the single UDP socket all peer connections share.
    pub bind: SocketAddr,
    /// IP put in the host candidate clients connect to. Empty: the bind IP (which must then not
    /// be unspecified). Set it to the public IP when binding `0.0.0.0` behind NAT.
    pub advertise_ip: Option<IpAddr>,
    /// More IPs announced beside `advertise_ip` (dual stack, several interfaces, a 1:1 NAT's
    /// public and private address), each as a candidate on the same ports.
    pub advertise_ips: Vec<IpAddr>,
    /// ICE over TCP (RFC 6544, passive, RFC 4571 framing): one TCP listener for every peer
    /// connection, demultiplexed by ufrag like UDP; for clients whose UDP is blocked. `"off"`
    /// (or `""`) turns it off.
    #[serde(with = "addr_or_off")]
    pub tcp_bind: Option<SocketAddr>,
    /// Learn the public IP at start from this STUN server (`host:port`) and announce it too.
    /// Off by default; contacted once at start, never in tests.
    pub stun_discover: Option<String>,
    /// How long a peer connection may stay `disconnected` before the participant is removed.
    #[serde(with = "humantime_serde")]
    pub disconnect_timeout: Duration,
    /// Minimum interval between keyframe requests (PLI) sent for one published track.
    #[serde(with = "humantime_serde")]
    pub pli_throttle: Duration,
    /// How long the server waits for an answer to its offer before removing the participant.
    #[serde(with = "humantime_serde")]
    pub negotiation_timeout: Duration,
    /// Datagrams queued per room between the socket and the room task; beyond it they drop.
    pub room_inbox_capacity: usize,
    /// Kernel receive/send buffer of the media socket, in bytes (capped by
    /// `net.core.rmem_max`/`wmem_max`; raise those for big deployments).
    pub socket_buffer_bytes: usize,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 50000)),
            advertise_ip: None,
            advertise_ips: Vec::new(),
            tcp_bind: Some(SocketAddr::from(([127, 0, 0, 1], 50000))),
            stun_discover: None,
            disconnect_timeout: Duration::from_secs(10),
            pli_throttle: Duration::from_millis(500),
            negotiation_timeout: Duration::from_secs(10),
            room_inbox_capacity: 4096,
            socket_buffer_bytes: 4 * 1024 * 1024,
        }
    }
}

impl MediaConfig {
    /// The IP clients are told to send media to.
    pub fn advertised_ip(&self) -> IpAddr {
        self.advertise_ip.unwrap_or(self.bind.ip())
    }
}

/// Signaling limits.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SignalingConfig {
    /// Largest accepted WebSocket message, in bytes.
    pub max_message_bytes: usize,
    /// A participant whose WebSocket drops stays in the room this long (media flowing) for the
    /// client to `resume`; the others see no leave unless it does not come back.
    #[serde(with = "humantime_serde")]
    pub resume_grace: Duration,
}

impl Default for SignalingConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            resume_grace: Duration::from_secs(15),
        }
    }
}

/// A TURN server (e.g. coturn with `use-auth-secret`) sharing `secret` with Confab: each
/// participant gets its own credentials in `joined` (the TURN REST API scheme: username
/// `<expiry unix time>:<participant id>`, password base64(HMAC-SHA1(secret, username))).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// `turn:`/`turns:` URLs handed to clients. Empty: off.
    pub urls: Vec<String>,
    /// The shared secret (coturn's `static-auth-secret`).
    pub secret: Option<String>,
    /// How long minted credentials are valid (capped by the access token's expiry).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            secret: None,
            ttl: Duration::from_secs(3600),
        }
    }
}

/// Webhooks: room, participant and track events POSTed as signed JSON to each URL (see
/// [`crate::webhooks`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// `http://` / `https://` URLs every event is POSTed to. Empty: off.
    pub urls: Vec<String>,
    /// The `[auth] keys` entry whose secret signs the bodies. Unset: the first key (in sorted
    /// order).
    pub api_key: Option<String>,
    /// The signing secret when there are no `[auth] keys` at all.
    pub secret: Option<String>,
    /// Per-attempt HTTP timeout (connect + response).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per event and URL (the first included) before it is given up.
    pub max_attempts: u32,
    /// Events queued per URL; beyond it new events are dropped (and counted).
    pub queue: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            api_key: None,
            secret: None,
            timeout: Duration::from_secs(5),
            max_attempts: 6,
            queue: 1024,
        }
    }
}

impl WebhooksConfig {
    /// The secret that signs webhook bodies: `api_key`'s secret in `auth` (the first key when
    /// unset), or `secret` when there are no auth keys; `None`: bodies go unsigned.
    pub fn signing_secret(&self, auth: &AuthConfig) -> Result<Option<String>, ConfigError> {
        let invalid = |why: String| Err(ConfigError::Webhooks(why));
        if let Some(key) = &self.api_key {
            return match auth.keys.get(key) {
                Some(secret) => Ok(Some(secret.clone())),
                None => invalid(format!("api_key {key:?} is not in [auth] keys")),
            };
        }
        match (auth.keys.values().next(), &self.secret) {
            (Some(_), Some(_)) => invalid(
                "secret is only used without [auth] keys (sign with an api_key instead)".into(),
            ),
            (Some(secret), None) => Ok(Some(secret.clone())),
            (None, secret) => Ok(secret.clone()),
        }
    }

    fn validate(&self, auth: &AuthConfig) -> Result<(), ConfigError> {
        for url in &self.urls {
            let parsed = reqwest::Url::parse(url);
            let ok = parsed.is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
            if !ok {
                return Err(ConfigError::Webhooks(format!(
                    "{url:?} is not an http:// or https:// URL"
                )));
            }
        }
        if self.max_attempts == 0 || self.queue == 0 {
            return Err(ConfigError::Webhooks(
                "max_attempts and queue must be at least 1".into(),
            ));
        }
        self.signing_secret(auth).map(drop)
    }
}

/// One ICE server for clients (the W3C `RTCIceServer` shape).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// `stun:` / `turn:` / `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Confab at `info`; the WebRTC stack's own chatter (state changes per connection) at `warn`,
/// and its DTLS parser's "Unsupported Extension Type" notices at `error`, i.e. off: Chromium
/// offers 3 extensions it does not know, logged on each parse of the ClientHello (18 lines per
/// connection in the browser E2E).
pub const DEFAULT_LOG_LEVEL: &str = "info,rtc=warn,rtc_ice=warn,rtc_dtls=warn,\
    rtc_dtls::handshake::handshake_message=error,rtc_srtp=warn,rtc_sctp=warn,rtc_interceptor=warn";

/// Logging.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter (`info`, `confab=debug,info`); `RUST_LOG` wins when set.
    pub level: String,
    /// `text` (human-readable) or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: DEFAULT_LOG_LEVEL.into(),
            format: LogFormat::Text,
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// An address, or `"off"` / `""` for none (so a default that is on can be turned off).
mod addr_or_off {
    use std::net::SocketAddr;

    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(a) => s.collect_str(a),
            None => s.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        match text.trim() {
            "" | "off" => Ok(None),
            t => t.parse().map(Some).map_err(D::Error::custom),
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file or an environment variable did not fit the schema.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    /// `media.advertise_ip` is needed because `media.bind` is unspecified.
    #[error("media.bind is {0}: set media.advertise_ip to the address clients can reach")]
    NoAdvertisedIp(IpAddr),
    /// Only one of `http.tls_cert` / `http.tls_key` is set.
    #[error("http.tls_cert and http.tls_key must be set together")]
    TlsPair,
    /// `turn.urls` without `turn.secret` (or the other way round).
    #[error("turn.urls and turn.secret must be set together")]
    TurnPair,
    /// A `[webhooks]` setting is unusable.
    #[error("webhooks: {0}")]
    Webhooks(String),
    /// A `[cluster]` setting is unusable.
    #[error("cluster: {0}")]
    Cluster(String),
}

impl Config {
    /// Loads defaults, then the TOML file (when given, or `config/confab.toml` when it exists),
    /// then `CONFAB_*` environment variables.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match path {
            Some(p) => fig = fig.merge(Toml::file_exact(p)),
            None => fig = fig.merge(Toml::file("config/confab.toml")),
        }
        // Only sectioned variables (`CONFAB_<SECTION>__<KEY>`) belong to this schema; other
        // `CONFAB_*` variables (e.g. CONFAB_CONFIG, CONFAB_API_KEY) are read elsewhere.
        fig = fig.merge(
            Env::prefixed("CONFAB_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        );
        let mut cfg: Config = fig.extract().map_err(Box::new)?;
        if let (Ok(key), Ok(secret)) = (
            std::env::var("CONFAB_API_KEY"),
            std::env::var("CONFAB_API_SECRET"),
        ) {
            cfg.auth.keys.insert(key, secret);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let ip = self.media.advertised_ip();
        if ip.is_unspecified() {
            return Err(ConfigError::NoAdvertisedIp(ip));
        }
        if self.http.tls_cert.is_some() != self.http.tls_key.is_some() {
            return Err(ConfigError::TlsPair);
        }
        if self.turn.urls.is_empty() != self.turn.secret.is_none() {
            return Err(ConfigError::TurnPair);
        }
        self.webhooks.validate(&self.auth)?;
        self.cluster.validate()?;
        if self.cluster.redis_url.is_some()
            && (self.http.tls_cert.is_some() || self.http.self_signed)
        {
            return Err(ConfigError::Cluster(
                "nodes relay signaling to each other over plain HTTP: end TLS at the load balancer (unset http.tls_cert / self_signed)".into(),
            ));
        }
        if self.cluster.redis_url.is_some()
            && self.cluster.signaling_url.is_none()
            && self.http.bind.ip().is_unspecified()
        {
            return Err(ConfigError::Cluster(format!(
                "http.bind is {}: set cluster.signaling_url to the URL other nodes reach this one at",
                self.http.bind
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests {
    use super::*;

    #[test]
    fn shipped_config_file_equals_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/confab.toml");
        let from_file: Config = Figment::from(Toml::file_exact(&path)).extract().unwrap();
        assert_eq!(from_file, Config::default());
    }

    #[test]
    fn env_overrides_file() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CONFAB_MEDIA__BIND", "127.0.0.1:40000");
            jail.set_env("CONFAB_MEDIA__DISCONNECT_TIMEOUT", "3s");
            let cfg = Config::load(None).unwrap();
            assert_eq!(cfg.media.bind.port(), 40000);
            assert_eq!(cfg.media.disconnect_timeout, Duration::from_secs(3));
            Ok(())
        });
    }

    #[test]
    fn ice_tcp_is_on_by_default_and_can_be_turned_off() {
        figment::Jail::expect_with(|jail| {
            assert!(Config::load(None).unwrap().media.tcp_bind.is_some());
            jail.set_env("CONFAB_MEDIA__TCP_BIND", "off");
            assert_eq!(Config::load(None).unwrap().media.tcp_bind, None);
            jail.set_env("CONFAB_MEDIA__TCP_BIND", "127.0.0.1:4443");
            assert_eq!(
                Config::load(None).unwrap().media.tcp_bind,
                Some(SocketAddr::from(([127, 0, 0, 1], 4443)))
            );
            Ok(())
        });
    }

    #[test]
    fn unspecified_bind_needs_an_advertised_ip() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CONFAB_MEDIA__BIND", "0.0.0.0:50000");
            assert!(matches!(
                Config::load(None),
                Err(ConfigError::NoAdvertisedIp(_))
            ));
            jail.set_env("CONFAB_MEDIA__ADVERTISE_IP", "203.0.113.7");
            assert!(Config::load(None).is_ok());
            Ok(())
        });
    }
}
