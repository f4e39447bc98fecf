//! Several Confab nodes sharing one namespace of rooms through Redis. Each room lives on exactly
//! one node; every node registers itself with a TTL heartbeat ([`load::NodeRecord`]); the first
//! join of a room places it on the least-loaded live node and records room → node atomically
//! (`store`); a join, WHIP/WHEP request or room-API call that reaches another node is relayed
//! to the owner (`signal::relay`, `http::forward`), so clients need one address only.
//!
//! Redis holds nothing a node cannot rebuild: each heartbeat rewrites the node's record and its
//! rooms' entries, so a Redis restart (even without persistence) heals within one heartbeat,
//! and while Redis is unreachable a node keeps serving the rooms it hosts.

pub mod load;
mod store;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use load::NodeRecord;
use load::{pick, Candidate, CpuSampler};
use store::Store;

use crate::config::ClusterConfig;
use crate::ids::RoomName;
use crate::room::registry::Rooms;
use crate::telemetry::METRICS;

/// Header naming the node that relays a request.
pub const RELAY_NODE_HEADER: &str = "x-confab-relay-node";
/// Header proving the relaying node knows the cluster secret.
pub const RELAY_KEY_HEADER: &str = "x-confab-relay-key";
/// Header carrying the client's IP on a relayed request.
pub const CLIENT_IP_HEADER: &str = "x-confab-client-ip";

/// Why the cluster could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// Redis is unreachable (or timed out): no new room can be placed.
    #[error("the cluster state store is unreachable ({0}); retry shortly")]
    Unavailable(String),
    /// A setting is unusable.
    #[error("cluster configuration: {0}")]
    Config(String),
}

/// Where a room lives.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// On this node.
    Local,
    /// On another live node.
    Remote(NodeRecord),
    /// Nowhere (a lookup of a room no live node hosts).
    Nowhere,
}

/// What the server tells the cluster about this node at start.
pub struct NodeIdentity {
    /// The node id.
    pub id: String,
    /// The URL other nodes reach this node's HTTP at.
    pub signaling_url: String,
    /// The media addresses announced to clients.
    pub media: Vec<String>,
    /// The cluster secret (`cluster.secret`, else derived from an auth secret).
    pub secret: Option<String>,
}

/// A handle on this node's membership in the cluster (cheap to clone).
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    me: NodeIdentity,
    key_tag: String,
    store: Store,
    rooms: Arc<Rooms>,
    heartbeat_interval: Duration,
    node_ttl: Duration,
    draining: AtomicBool,
    /// Wakes the heartbeat early (drain).
    beat_now: Notify,
    stop: CancellationToken,
    stopped: Notify,
}

/// A fresh node id: `node-` and 8 hex digits.
pub fn random_node_id() -> String {
    format!("node-{:08x}", rand::random::<u32>())
}

/// The value of [`RELAY_KEY_HEADER`] for `secret` (empty: no secret).
fn key_tag(secret: Option<&str>) -> String {
    match secret {
        Some(s) => hex::encode(Sha256::digest(format!("confab-cluster-relay:{s}"))),
        None => String::new(),
    }
}

impl Cluster {
    /// Joins the cluster: starts the heartbeat (registering at once when Redis is reachable;
    /// retrying with backoff when not).
    pub fn start(
        config: &ClusterConfig,
        redis_url: &str,
        me: NodeIdentity,
        rooms: Arc<Rooms>,
    ) -> Result<Self, ClusterError> {
        let store = Store::new(redis_url)?;
        let cluster = Self {
            inner: Arc::new(Inner {
                key_tag: key_tag(me.secret.as_deref()),
                me,
                store,
                rooms,
                heartbeat_interval: config.heartbeat_interval,
                node_ttl: config.node_ttl,
                draining: AtomicBool::new(false),
                beat_now: Notify::new(),
                stop: CancellationToken::new(),
                stopped: Notify::new(),
            }),
        };
        info!(node = %cluster.node_id(), url = %cluster.inner.me.signaling_url, "joining the cluster");
        tokio::spawn(cluster.clone().heartbeat());
        Ok(cluster)
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.me.id
    }

    /// Whether the request headers `node` / `key` mark a request relayed by a cluster node.
    pub fn trusts(&self, node: Option<&str>, key: Option<&str>) -> bool {
        node.is_some_and(|n| !n.is_empty()) && key.unwrap_or("") == self.inner.key_tag
    }

    /// The headers of a request this node relays on behalf of `client_ip`.
    pub fn relay_headers(&self, client_ip: std::net::IpAddr) -> [(&'static str, String); 3] {
        [
            (RELAY_NODE_HEADER, self.inner.me.id.clone()),
            (RELAY_KEY_HEADER, self.inner.key_tag.clone()),
            (CLIENT_IP_HEADER, client_ip.to_string()),
        ]
    }

    /// Whether this node drains.
    pub fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    /// Where `room` lives. `create`: place it when no live node hosts it (a join); otherwise a
    /// lookup (resume, room API) that never places.
    pub async fn place(&self, room: &RoomName, create: bool) -> Result<Placement, ClusterError> {
        let me = self.node_id();
        let draining = self.draining();
        if !draining && self.inner.rooms.handle(room).is_some() {
            return Ok(Placement::Local);
        }
        let store = &self.inner.store;
        let owner = store.owner(room.as_str()).await?;
        if let Some(o) = &owner {
            if o == me {
                if !draining || !create {
                    return Ok(Placement::Local);
                }
            } else if let Some(rec) = store.node(o).await? {
                if !rec.draining || !create {
                    return Ok(Placement::Remote(rec));
                }
            }
        }
        if !create {
            return Ok(Placement::Nowhere);
        }
        let mut candidates = store.nodes().await?;
        if !draining && !candidates.iter().any(|c| c.record.id == me) {
            // Our own record has not reached Redis yet (just started, or Redis just came back).
            let record = self.record(0.0);
            let load = record.participants + record.rooms;
            candidates.push(Candidate { record, load });
        }
        let Some(choice) = pick(&candidates, room.as_str()) else {
            return Err(ClusterError::Unavailable(
                "no live node accepts new rooms".into(),
            ));
        };
        let ttl = self.inner.node_ttl * 2;
        let winner = store.claim(room.as_str(), &choice.record.id, ttl).await?;
        let placement = if winner == me {
            Placement::Local
        } else if winner == choice.record.id {
            Placement::Remote(choice.record.clone())
        } else {
            match store.node(&winner).await? {
                Some(rec) => Placement::Remote(rec),
                None => return Err(ClusterError::Unavailable("the room's node vanished".into())),
            }
        };
        let kind = if placement == Placement::Local {
            "local"
        } else {
            "remote"
        };
        METRICS.cluster_placements.with_label_values(&[kind]).inc();
        Ok(placement)
    }

    /// Every live node's record (this one included).
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, ClusterError> {
        Ok(self
            .inner
            .store
            .nodes()
            .await?
            .into_iter()
            .map(|c| c.record)
            .collect())
    }

    /// Marks this node draining in Redis now: new rooms go elsewhere.
    pub fn drain(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
        self.inner.beat_now.notify_one();
    }

    /// Leaves the cluster: the heartbeat stops, this node's room entries and record are deleted
    /// so the others need not wait for them to expire.
    pub async fn leave(&self) {
        let stopped = self.inner.stopped.notified();
        self.inner.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), stopped).await;
        let rooms: Vec<String> = self
            .inner
            .rooms
            .names()
            .iter()
            .map(|r| r.to_string())
            .collect();
        let store = &self.inner.store;
        let _ = store.release(self.node_id(), &rooms).await;
        if store.deregister(self.node_id()).await.is_ok() {
            info!(node = %self.node_id(), "left the cluster");
        }
    }

    fn record(&self, cpu_percent: f64) -> NodeRecord {
        NodeRecord {
            id: self.inner.me.id.clone(),
            signaling_url: self.inner.me.signaling_url.clone(),
            media: self.inner.me.media.clone(),
            participants: METRICS.participants.get().max(0) as u64,
            tracks: METRICS.tracks.iter().map(|g| g.get().max(0) as u64).sum(),
            rooms: self.inner.rooms.len() as u64,
            cpu_percent,
            draining: self.draining(),
        }
    }

    /// Every `heartbeat_interval`: publish the record, refresh the rooms' entries, release the
    /// entries of rooms that closed, and hand over duplicates. After a failure it retries
    /// sooner than the TTL (backoff capped at twice the interval).
    async fn heartbeat(self) {
        let inner = &self.inner;
        let mut cpu = CpuSampler::new();
        let mut recorded: HashSet<String> = HashSet::new();
        let mut delay = Duration::ZERO;
        loop {
            tokio::select! {
                _ = inner.stop.cancelled() => break,
                _ = inner.beat_now.notified() => {}
                _ = tokio::time::sleep(delay) => {}
            }
            let record = self.record(cpu.sample(Instant::now()));
            let rooms: Vec<String> = inner.rooms.names().iter().map(|r| r.to_string()).collect();
            match inner.store.heartbeat(&record, &rooms, inner.node_ttl).await {
                Ok(lost) => {
                    delay = inner.heartbeat_interval;
                    METRICS.cluster_store_up.set(1);
                    let current: HashSet<String> = rooms.into_iter().collect();
                    let closed: Vec<String> = recorded.difference(&current).cloned().collect();
                    if inner.store.release(&record.id, &closed).await.is_ok() {
                        recorded = current;
                    }
                    for room in lost {
                        recorded.remove(&room);
                        self.hand_over(&room).await;
                    }
                }
                Err(_) => {
                    METRICS.cluster_store_up.set(0);
                    delay =
                        (delay * 2).clamp(Duration::from_millis(250), inner.heartbeat_interval * 2);
                }
            }
        }
        inner.stopped.notify_one();
    }

    /// This node hosts `room`, but another live node owns its entry (both placed it while Redis
    /// was away): its members are removed with a rejoinable reason and rejoin the owner.
    async fn hand_over(&self, room: &str) {
        if self.draining() {
            return;
        }
        let Some(name) = RoomName::parse(room) else {
            return;
        };
        warn!(%room, "another node owns this room; moving its members there");
        METRICS.cluster_room_handovers.inc();
        self.inner.rooms.close(&name, "moved to another node").await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_requests_need_the_secret_when_there_is_one() {
        let tag = key_tag(Some("s3cret"));
        assert_eq!(tag.len(), 64);
        assert_ne!(tag, key_tag(Some("other")));
        assert_eq!(key_tag(None), "");
    }
}
