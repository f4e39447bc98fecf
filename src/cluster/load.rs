//! What a node reports about itself, and how placement ranks nodes by it: a pure function of the
//! node records, tested without Redis.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One node as recorded in Redis (JSON), refreshed every heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's id (`cluster.node_id`).
    pub id: String,
    /// Base URL the other nodes reach its HTTP at (`cluster.signaling_url`).
    pub signaling_url: String,
    /// The media addresses it announces to clients (`ip:port/udp`, `ip:port/tcp`).
    pub media: Vec<String>,
    /// Joined participants.
    pub participants: u64,
    /// Published tracks.
    pub tracks: u64,
    /// Open rooms.
    pub rooms: u64,
    /// Process CPU over the last heartbeat, percent of all cores (0-100).
    pub cpu_percent: f64,
    /// Draining (SIGTERM): no new rooms go to it.
    pub draining: bool,
}

/// A candidate for a new room: its record and the load counter placement increments.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The node.
    pub record: NodeRecord,
    /// Participants + rooms at its last heartbeat, plus rooms placed on it since.
    pub load: u64,
}

/// CPU above this (percent of all cores) counts as busy: such a node gets new rooms only when
/// every node is.
const BUSY_CPU_PERCENT: f64 = 80.0;

/// The least-loaded candidate for `room` (draining nodes never): fewest participants + rooms,
/// busy CPU last; ties broken by a hash of room and node id, so equal nodes share new rooms.
pub fn pick<'a>(candidates: &'a [Candidate], room: &str) -> Option<&'a Candidate> {
    candidates
        .iter()
        .filter(|c| !c.record.draining)
        .min_by_key(|c| {
            let busy = c.record.cpu_percent >= BUSY_CPU_PERCENT;
            (busy, c.load, tie_break(room, &c.record.id))
        })
}

/// FNV-1a of `room` + `node`: stable across processes (unlike `std`'s random hasher).
fn tie_break(room: &str, node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.bytes().chain([0]).chain(node.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// This process's CPU use between two samples, from `getrusage`.
pub struct CpuSampler {
    last: Option<(Instant, Duration)>,
    cores: f64,
}

impl Default for CpuSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuSampler {
    /// A sampler; the first [`sample`](Self::sample) reports 0.
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            last: None,
            cores: cores as f64,
        }
    }

    /// Percent of all cores used since the previous call.
    pub fn sample(&mut self, now: Instant) -> f64 {
        let cpu = process_cpu_time();
        let pct = match self.last {
            Some((t, c)) => {
                let wall = now.saturating_duration_since(t).as_secs_f64();
                if wall > 0.0 {
                    (cpu.saturating_sub(c).as_secs_f64() / wall / self.cores * 100.0)
                        .clamp(0.0, 100.0)
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        self.last = Some((now, cpu));
        (pct * 10.0).round() / 10.0
    }
}

fn process_cpu_time() -> Duration {
    // SAFETY: getrusage writes a `rusage` we own; RUSAGE_SELF is always valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, load: u64, cpu: f64, draining: bool) -> Candidate {
        Candidate {
            record: NodeRecord {
                id: id.into(),
                signaling_url: format!("http://{id}"),
                media: vec![],
                participants: load,
                tracks: 0,
                rooms: 0,
                cpu_percent: cpu,
                draining,
            },
            load,
        }
    }

    #[test]
    fn the_least_loaded_live_node_wins() {
        let c = [
            node("a", 5, 10.0, false),
            node("b", 2, 10.0, false),
            node("c", 0, 0.0, true),
        ];
        assert_eq!(pick(&c, "r").unwrap().record.id, "b");
    }

    #[test]
    fn a_busy_cpu_goes_last_and_draining_never() {
        let c = [node("a", 0, 95.0, false), node("b", 9, 10.0, false)];
        assert_eq!(pick(&c, "r").unwrap().record.id, "b");
        assert!(pick(&[node("a", 0, 0.0, true)], "r").is_none());
    }

    #[test]
    fn equal_nodes_share_new_rooms() {
        let c = [
            node("a", 0, 0.0, false),
            node("b", 0, 0.0, false),
            node("c", 0, 0.0, false),
        ];
        let mut seen = std::collections::HashSet::new();
        for i in 0..30 {
            seen.insert(pick(&c, &format!("room{i}")).unwrap().record.id.clone());
        }
        assert_eq!(seen.len(), 3, "ties all went to {seen:?}");
    }

    #[test]
    fn cpu_is_a_percentage() {
        let mut s = CpuSampler::new();
        let t = Instant::now();
        assert_eq!(s.sample(t), 0.0);
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        let p = s.sample(t + Duration::from_millis(50));
        assert!((0.0..=100.0).contains(&p), "{p}");
    }
}
