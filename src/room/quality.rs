//! Connection quality as the server sees it: for each member, the loss of what it sends (the
//! sequence-number spans of its published layers against what arrived) and of what it receives
//! (the `fraction lost` of its receiver reports), smoothed over [`WINDOW`]s into a level. Every
//! member is told all levels (`connection-quality`) when one changes and after a join. Sans-IO.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rtc::peer_connection::state::RTCPeerConnectionState;

use super::state::Room;
use super::Role;
use crate::ids::PeerKey;
use crate::signal::protocol::{Quality, QualityInfo, ServerMsg};
use crate::telemetry::METRICS;

/// How often levels are evaluated.
pub const WINDOW: Duration = Duration::from_secs(2);
/// Loss below this is `excellent`.
const EXCELLENT_BELOW: f64 = 0.02;
/// Loss below this is `good`; above, `poor`.
const GOOD_BELOW: f64 = 0.08;
/// Windows with fewer packets than this say nothing about upstream loss.
const MIN_EXPECTED: u64 = 20;
/// Weight of the newest window in the smoothed loss.
const NEW_WEIGHT: f64 = 0.5;

/// The level a loss fraction maps to (for a connected member).
pub fn level(loss: f64) -> Quality {
    if loss < EXCELLENT_BELOW {
        Quality::Excellent
    } else if loss < GOOD_BELOW {
        Quality::Good
    } else {
        Quality::Poor
    }
}

/// One member's link.
#[derive(Debug, Clone, Copy)]
struct Link {
    /// Upstream totals at the last evaluation (expected, received).
    up: (u64, u64),
    /// Receiver-report loss fractions since the last evaluation (sum, count).
    down: (f64, u32),
    /// Smoothed loss.
    loss: f64,
    level: Quality,
}

impl Default for Link {
    fn default() -> Self {
        Self {
            up: (0, 0),
            down: (0.0, 0),
            loss: 0.0,
            level: Quality::Excellent,
        }
    }
}

/// Every member's link, and when to evaluate next.
#[derive(Debug, Default)]
pub struct Links {
    links: HashMap<PeerKey, Link>,
    next: Option<Instant>,
    /// Someone joined: the next evaluation announces even without a change.
    announce: bool,
}

impl Links {
    /// A receiver report from `key` said this fraction (0..=255 of 256) of a leg was lost.
    pub fn on_downstream_loss(&mut self, key: PeerKey, fraction_lost: u8) {
        let l = self.links.entry(key).or_default();
        l.down.0 += f64::from(fraction_lost) / 256.0;
        l.down.1 += 1;
    }

    /// A member joined: everyone (it too) hears all levels at the next evaluation.
    pub fn joined(&mut self, key: PeerKey) {
        if !self.links.contains_key(&key) {
            METRICS.connection_quality[0].inc();
        }
        self.links.entry(key).or_default();
        self.announce = true;
    }

    /// A member left.
    pub fn forget(&mut self, key: PeerKey) {
        if let Some(l) = self.links.remove(&key) {
            METRICS.connection_quality[index(l.level)].dec();
        }
    }

    /// Updates one link from its window; whether its level changed.
    fn evaluate(&mut self, key: PeerKey, up: (u64, u64), connected: bool) -> bool {
        let l = self.links.entry(key).or_default();
        let (expected, received) = (up.0.saturating_sub(l.up.0), up.1.saturating_sub(l.up.1));
        // A track that ended takes its counts with it: that window says nothing upstream.
        let shrank = up.0 < l.up.0 || up.1 < l.up.1;
        l.up = up;
        let up_loss = (!shrank && expected >= MIN_EXPECTED)
            .then(|| 1.0 - (received as f64 / expected as f64).min(1.0));
        let down_loss = (l.down.1 > 0).then(|| l.down.0 / f64::from(l.down.1));
        l.down = (0.0, 0);
        let window = match (up_loss, down_loss) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0).max(b.unwrap_or(0.0))),
        };
        if let Some(w) = window {
            l.loss = l.loss * (1.0 - NEW_WEIGHT) + w * NEW_WEIGHT;
        }
        let new = if connected {
            level(l.loss)
        } else {
            Quality::Lost
        };
        let changed = new != l.level;
        if changed {
            METRICS.connection_quality[index(l.level)].dec();
            METRICS.connection_quality[index(new)].inc();
            l.level = new;
        }
        changed
    }

    /// Every member's level.
    fn infos(&self, room: &Room) -> Vec<QualityInfo> {
        let mut list: Vec<QualityInfo> = self
            .links
            .iter()
            .filter_map(|(key, l)| {
                let peer = room.peers.get(key)?;
                Some(QualityInfo {
                    participant_id: peer.id().clone(),
                    quality: l.level,
                    loss: ((l.loss * 1000.0).round() / 1000.0) as f32,
                })
            })
            .collect();
        list.sort_by(|a, b| a.participant_id.cmp(&b.participant_id));
        list
    }
}

fn index(q: Quality) -> usize {
    Quality::ALL.iter().position(|x| *x == q).unwrap_or(0)
}

impl Room {
    /// Evaluates every member's link when a window is over; tells everyone on a change.
    pub(super) fn evaluate_quality(&mut self, now: Instant) {
        let next = *self.quality.next.get_or_insert(now + WINDOW);
        if now < next {
            return;
        }
        self.quality.next = Some(now + WINDOW);
        let mut changed = std::mem::take(&mut self.quality.announce);
        let members: Vec<(PeerKey, bool)> = self
            .peers
            .values()
            .filter(|p| !p.role().is_viewer())
            .map(|p| {
                let connected = !matches!(
                    p.state(),
                    RTCPeerConnectionState::Disconnected | RTCPeerConnectionState::Failed
                );
                (p.key(), connected)
            })
            .collect();
        for (key, connected) in members {
            let up = self.forwarder.upstream_totals(key);
            changed |= self.quality.evaluate(key, up, connected);
        }
        if !changed {
            return;
        }
        let qualities = self.quality.infos(self);
        let members: Vec<PeerKey> = self
            .peers
            .values()
            .filter(|p| *p.role() == Role::Member)
            .map(|p| p.key())
            .collect();
        for key in members {
            let msg = ServerMsg::ConnectionQuality {
                qualities: qualities.clone(),
            };
            self.send_to(key, msg, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_loss() {
        assert_eq!(level(0.0), Quality::Excellent);
        assert_eq!(level(0.019), Quality::Excellent);
        assert_eq!(level(0.05), Quality::Good);
        assert_eq!(level(0.2), Quality::Poor);
    }

    #[test]
    fn upstream_loss_moves_the_level_smoothly_and_a_down_link_is_lost() {
        let mut links = Links::default();
        let k = PeerKey(1);
        links.joined(k);
        // A clean window: 100 expected, 100 arrived.
        assert!(!links.evaluate(k, (100, 100), true));
        // 30 % lost in one window: smoothed to 15 %, poor.
        assert!(links.evaluate(k, (200, 170), true));
        assert_eq!(links.links[&k].level, Quality::Poor);
        // Clean again: 7.5 % (good), then 3.75 % (good), then 1.9 % (excellent).
        assert!(links.evaluate(k, (300, 270), true));
        assert_eq!(links.links[&k].level, Quality::Good);
        assert!(!links.evaluate(k, (400, 370), true));
        assert!(links.evaluate(k, (500, 470), true));
        assert_eq!(links.links[&k].level, Quality::Excellent);
        assert!(links.evaluate(k, (700, 670), false));
        assert_eq!(links.links[&k].level, Quality::Lost);
    }

    #[test]
    fn downstream_reports_count_and_a_quiet_window_says_nothing() {
        let mut links = Links::default();
        let k = PeerKey(2);
        links.joined(k);
        links.on_downstream_loss(k, 64); // 25 %
        links.on_downstream_loss(k, 0);
        assert!(
            links.evaluate(k, (5, 5), true),
            "12.5 % averaged, 6.25 % smoothed"
        );
        assert_eq!(links.links[&k].level, Quality::Good);
        // Nothing reported, too few packets: the loss stays where it was.
        assert!(!links.evaluate(k, (10, 8), true));
        assert_eq!(links.links[&k].level, Quality::Good);
        // An ended track shrinks the totals: no upstream verdict, no underflow.
        assert!(!links.evaluate(k, (0, 0), true));
    }
}
