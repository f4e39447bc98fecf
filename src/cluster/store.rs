//! The cluster's shared state in Redis: node records with a TTL, per-node load counters, and
//! room → node entries. Every change that must be atomic across nodes is one Lua script.
//!
//! Keys (`confab:` prefix): `node:<id>` (JSON [`NodeRecord`], expires after `node_ttl`),
//! `load:<id>` (integer, same TTL), `nodes` (set of ids ever seen, pruned lazily),
//! `room:<name>` (owner id, expires after twice `node_ttl` unless its owner refreshes it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use tracing::{info, warn};

use super::load::{Candidate, NodeRecord};
use super::ClusterError;

const PREFIX: &str = "confab:";
/// Longest wait for one Redis round trip (the manager's own timeout, plus reconnecting).
const OP_TIMEOUT: Duration = Duration::from_millis(1500);

/// Records `ARGV[1]` as the owner of room `KEYS[1]` unless a live, non-draining node already
/// owns it; returns the owner. A fresh owner's load counter goes up by one, so placements
/// between two heartbeats spread out.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local rec = redis.call('GET', ARGV[3] .. 'node:' .. cur)
  if rec then
    local ok, node = pcall(cjson.decode, rec)
    if ok and not node.draining then return cur end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local load = ARGV[3] .. 'load:' .. ARGV[1]
if redis.call('EXISTS', load) == 1 then redis.call('INCR', load) end
return ARGV[1]
",
    )
});

/// The heartbeat's room refresh: for each room key in `KEYS`, (re)records `ARGV[1]` as owner
/// unless another node that is alive holds it. Returns the indexes (1-based) of the rooms another
/// live node holds.
static REFRESH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local lost = {}
for i, key in ipairs(KEYS) do
  local cur = redis.call('GET', key)
  if cur and cur ~= ARGV[1] and redis.call('EXISTS', ARGV[3] .. 'node:' .. cur) == 1 then
    table.insert(lost, i)
  else
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
  end
end
return lost
",
    )
});

/// Deletes each room key in `KEYS` that `ARGV[1]` still owns.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key); n = n + 1 end
end
return n
",
    )
});

/// A Redis connection that reconnects by itself (with backoff), and says once per outage that
/// Redis is gone.
pub struct Store {
    con: ConnectionManager,
    healthy: AtomicBool,
    url: String,
}

fn key(kind: &str, name: &str) -> String {
    format!("{PREFIX}{kind}:{name}")
}

fn ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX).max(1)
}

impl Store {
    /// A store for `url`; connects on first use, so a Redis that is down at start is not an
    /// error (placement waits for it).
    pub fn new(url: &str) -> Result<Self, ClusterError> {
        let client = redis::Client::open(url).map_err(|e| ClusterError::Config(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(2));
        let con = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| ClusterError::Config(e.to_string()))?;
        Ok(Self {
            con,
            healthy: AtomicBool::new(true),
            url: redacted(url),
        })
    }

    /// Runs one operation with a deadline, logging the transitions between reachable and not.
    async fn run<T, F>(&self, op: impl FnOnce(ConnectionManager) -> F) -> Result<T, ClusterError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let result = match tokio::time::timeout(OP_TIMEOUT, op(self.con.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_owned()),
        };
        match result {
            Ok(v) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    info!(redis = %self.url, "cluster state store reachable again");
                }
                Ok(v)
            }
            Err(why) => {
                if self.healthy.swap(false, Ordering::Relaxed) {
                    warn!(redis = %self.url, error = %why, "cluster state store (Redis) unreachable: serving current rooms, refusing new ones, reconnecting");
                }
                crate::telemetry::METRICS.cluster_store_errors.inc();
                Err(ClusterError::Unavailable(why))
            }
        }
    }

    /// Publishes this node's record and load, refreshes its rooms' entries; returns the rooms
    /// another live node owns (this node hosts a duplicate of them).
    pub async fn heartbeat(
        &self,
        record: &NodeRecord,
        rooms: &[String],
        node_ttl: Duration,
    ) -> Result<Vec<String>, ClusterError> {
        let json =
            serde_json::to_string(record).map_err(|e| ClusterError::Config(e.to_string()))?;
        let load = record.participants + record.rooms;
        let id = record.id.clone();
        let lost: Vec<usize> = self
            .run(|mut con| async move {
                redis::pipe()
                    .cmd("SET")
                    .arg(key("node", &id))
                    .arg(json)
                    .arg("PX")
                    .arg(ms(node_ttl))
                    .ignore()
                    .cmd("SET")
                    .arg(key("load", &id))
                    .arg(load)
                    .arg("PX")
                    .arg(ms(node_ttl))
                    .ignore()
                    .cmd("SADD")
                    .arg(format!("{PREFIX}nodes"))
                    .arg(&id)
                    .ignore()
                    .query_async::<()>(&mut con)
                    .await?;
                if rooms.is_empty() {
                    return Ok(Vec::new());
                }
                let mut inv = REFRESH.prepare_invoke();
                for r in rooms {
                    inv.key(key("room", r));
                }
                inv.arg(&id).arg(ms(node_ttl * 2)).arg(PREFIX);
                inv.invoke_async(&mut con).await
            })
            .await?;
        Ok(lost
            .into_iter()
            .filter_map(|i| rooms.get(i.checked_sub(1)?).cloned())
            .collect())
    }

    /// The owner of `room`, if recorded.
    pub async fn owner(&self, room: &str) -> Result<Option<String>, ClusterError> {
        let k = key("room", room);
        self.run(|mut con| async move { con.get(k).await }).await
    }

    /// Records `candidate` as owner of `room` unless a live node already is; returns the owner.
    pub async fn claim(
        &self,
        room: &str,
        candidate: &str,
        ttl: Duration,
    ) -> Result<String, ClusterError> {
        let k = key("room", room);
        let candidate = candidate.to_owned();
        self.run(|mut con| async move {
            CLAIM
                .key(k)
                .arg(candidate)
                .arg(ms(ttl))
                .arg(PREFIX)
                .invoke_async(&mut con)
                .await
        })
        .await
    }

    /// Deletes the entries of `rooms` that `node` still owns.
    pub async fn release(&self, node: &str, rooms: &[String]) -> Result<(), ClusterError> {
        if rooms.is_empty() {
            return Ok(());
        }
        let mut inv = RELEASE.prepare_invoke();
        for r in rooms {
            inv.key(key("room", r));
        }
        inv.arg(node);
        self.run(|mut con| async move { inv.invoke_async::<i64>(&mut con).await.map(drop) })
            .await
    }

    /// Removes this node's record (a clean exit: others need not wait for the TTL).
    pub async fn deregister(&self, node: &str) -> Result<(), ClusterError> {
        let (n, l) = (key("node", node), key("load", node));
        let node = node.to_owned();
        self.run(|mut con| async move {
            redis::pipe()
                .del(n)
                .ignore()
                .del(l)
                .ignore()
                .srem(format!("{PREFIX}nodes"), node)
                .ignore()
                .query_async::<()>(&mut con)
                .await
        })
        .await
    }

    /// One node's record, if it is alive.
    pub async fn node(&self, id: &str) -> Result<Option<NodeRecord>, ClusterError> {
        let k = key("node", id);
        let json: Option<String> = self.run(|mut con| async move { con.get(k).await }).await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Every live node with its load counter (ids whose record expired are pruned).
    pub async fn nodes(&self) -> Result<Vec<Candidate>, ClusterError> {
        let set = format!("{PREFIX}nodes");
        let ids: Vec<String> = {
            let set = set.clone();
            self.run(|mut con| async move { con.smembers(set).await })
                .await?
        };
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let records: Vec<Option<String>> = {
            let keys: Vec<String> = ids.iter().map(|id| key("node", id)).collect();
            self.run(|mut con| async move { con.mget(keys).await })
                .await?
        };
        let loads: Vec<Option<u64>> = {
            let keys: Vec<String> = ids.iter().map(|id| key("load", id)).collect();
            self.run(|mut con| async move { con.mget(keys).await })
                .await?
        };
        let mut out = Vec::with_capacity(ids.len());
        let mut gone = Vec::new();
        for ((id, rec), load) in ids.iter().zip(records).zip(loads) {
            match rec.and_then(|j| serde_json::from_str::<NodeRecord>(&j).ok()) {
                Some(record) => {
                    let load = load.unwrap_or(record.participants + record.rooms);
                    out.push(Candidate { record, load });
                }
                None => gone.push(id.clone()),
            }
        }
        if !gone.is_empty() {
            let _ = self
                .run(|mut con| async move { con.srem::<_, _, i64>(set, gone).await.map(drop) })
                .await;
        }
        out.sort_by(|a, b| a.record.id.cmp(&b.record.id));
        Ok(out)
    }
}

/// `url` without its password, for logs.
fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redacted("redis://:hunter2@r:6379/0"),
            "redis://:***@r:6379/0"
        );
        assert_eq!(redacted("redis://r:6379"), "redis://r:6379");
    }
}
