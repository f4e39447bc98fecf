//! Probing a subscriber's link upward.
//!
//! The estimate ([`bwe`](super::bwe)) only rises above what a subscriber has been seen to
//! receive when more gets through, and the allocator only sends more when the estimate allows:
//! without probes a subscriber that once got low layers would keep them. A probe sends a short
//! burst of padding-only packets on top of the media; if the link carries them without queueing,
//! the estimate follows what arrived and the allocator raises layers; if not, the probe cost
//! at most [`PROBE_DURATION`] of extra queue, and the next one waits longer (backoff).
//!
//! Pure: instants in, packet counts out.

use std::time::{Duration, Instant};

/// How long one probe lasts.
pub const PROBE_DURATION: Duration = Duration::from_millis(200);
/// Packets are spread over the probe at this tick.
pub const PROBE_TICK: Duration = Duration::from_millis(10);
/// On the wire, one padding-only probe packet: IPv4 + UDP + RTP + TWCC extension + 4 bytes of
/// padding + SRTP tag, in bits.
pub const PROBE_PACKET_BITS: u64 = (20 + 8 + 12 + 8 + 4 + 16) * 8;
/// First probe this long after a subscriber starts receiving; after a probe that worked, the
/// next one after this long.
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// After a failed probe the wait doubles, up to this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// A probe worked if the estimate rose by this factor.
pub const SUCCESS_GAIN: f64 = 1.15;
/// An estimate below this share of the previous one is falling (congestion: no probe).
const FALLING: f64 = 0.9;
/// A probe aims this far above the want (the allocator moves up only with headroom).
const PROBE_HEADROOM: f64 = 1.3;
/// Probe rate floor and ceiling (bits/s).
const MIN_PROBE_BPS: u64 = 100_000;
const MAX_PROBE_BPS: u64 = 2_000_000;
/// Most probe packets per tick (bounds a late tick's burst).
const MAX_PACKETS_PER_TICK: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Active {
    started: Instant,
    bps: u64,
    sent_bits: u64,
}

/// Probe scheduling for one subscriber.
#[derive(Debug, Clone)]
pub struct Prober {
    next_at: Option<Instant>,
    backoff: Duration,
    active: Option<Active>,
    /// The estimate when the last probe started (to judge it), if one awaits judging.
    judging: Option<u64>,
    last_estimate: Option<u64>,
    /// Probes sent, and how many raised the estimate.
    pub probes: u64,
    /// See `probes`.
    pub successes: u64,
}

impl Default for Prober {
    fn default() -> Self {
        Self {
            next_at: None,
            backoff: MIN_BACKOFF,
            active: None,
            judging: None,
            last_estimate: None,
            probes: 0,
            successes: 0,
        }
    }
}

impl Prober {
    /// After each allocation: judges the last probe, and starts one when the subscriber wants
    /// more than its estimate (`wanted_bps`: every shown track at the layer its tile needs) and
    /// the estimate is not falling.
    pub fn on_allocation(&mut self, now: Instant, estimate: u64, wanted_bps: u64) {
        let falling = self
            .last_estimate
            .is_some_and(|e| (estimate as f64) < e as f64 * FALLING);
        self.last_estimate = Some(estimate);
        if self
            .active
            .is_some_and(|a| now < a.started + PROBE_DURATION)
        {
            return;
        }
        self.active = None;
        if let Some(before) = self.judging.take() {
            if estimate as f64 >= before as f64 * SUCCESS_GAIN {
                self.successes += 1;
                self.backoff = MIN_BACKOFF;
            } else {
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
            self.next_at = Some(now + self.backoff);
        }
        let next_at = *self.next_at.get_or_insert(now + MIN_BACKOFF);
        if now < next_at || falling || wanted_bps <= estimate {
            return;
        }
        // Enough to show room for the want plus the allocator's upgrade headroom, at most
        // doubling what is sent: below [`MIN_PROBE_BPS`] the floor gives way, or a 60 kbit/s
        // link already full of one voice got 100 kbit/s of padding on top every few seconds.
        let bps = ((wanted_bps as f64 * PROBE_HEADROOM) as u64)
            .saturating_sub(estimate)
            .clamp(MIN_PROBE_BPS, MAX_PROBE_BPS)
            .min(estimate);
        self.active = Some(Active {
            started: now,
            bps,
            sent_bits: 0,
        });
        self.judging = Some(estimate);
        self.probes += 1;
    }

    /// How many probe packets to send now (spread evenly over the probe).
    pub fn packets_due(&mut self, now: Instant) -> usize {
        let Some(a) = self.active.as_mut() else {
            return 0;
        };
        let elapsed = now.saturating_duration_since(a.started).min(PROBE_DURATION);
        let due_bits = (a.bps as f64 * elapsed.as_secs_f64()) as u64;
        let n = (due_bits.saturating_sub(a.sent_bits) / PROBE_PACKET_BITS) as usize;
        let n = n.min(MAX_PACKETS_PER_TICK);
        a.sent_bits += n as u64 * PROBE_PACKET_BITS;
        n
    }

    /// When packets are next due, while a probe runs.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let a = self.active?;
        let end = a.started + PROBE_DURATION;
        (now < end).then(|| (now + PROBE_TICK).min(end))
    }

    /// Whether a probe is running.
    pub fn probing(&self) -> bool {
        self.active.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the probe started at `start` to its end: the padding it sent, in bits.
    fn probe_bits(p: &mut Prober, start: Instant) -> u64 {
        let mut sent = 0;
        let mut now = start;
        while let Some(next) = p.next_deadline(now) {
            now = next;
            sent += p.packets_due(now);
        }
        sent as u64 * PROBE_PACKET_BITS
    }

    #[test]
    fn a_subscriber_that_wants_more_is_probed_after_a_settle_and_the_burst_is_spread() {
        let mut p = Prober::default();
        let t0 = Instant::now();
        p.on_allocation(t0, 300_000, 2_000_000);
        assert!(!p.probing(), "not before the first settle");
        let t1 = t0 + MIN_BACKOFF;
        p.on_allocation(t1, 300_000, 2_000_000);
        assert!(p.probing());
        // 300 kbit/s (capped at the estimate) for 200 ms = 60 kbit of padding.
        let bits = probe_bits(&mut p, t1);
        assert!((55_000..=60_000).contains(&bits), "{bits} bits");
    }

    #[test]
    fn a_probe_never_more_than_doubles_a_small_estimate() {
        let mut p = Prober::default();
        let t0 = Instant::now();
        p.on_allocation(t0, 40_000, 2_000_000);
        p.on_allocation(t0 + MIN_BACKOFF, 40_000, 2_000_000);
        assert!(p.probing());
        // 40 kbit/s for 200 ms = 8 kbit, not the 20 kbit of the 100 kbit/s floor.
        let bits = probe_bits(&mut p, t0 + MIN_BACKOFF);
        assert!((7_000..=8_000).contains(&bits), "{bits} bits");
    }

    #[test]
    fn failed_probes_back_off_and_a_success_probes_again_soon() {
        let mut p = Prober::default();
        let mut now = Instant::now();
        p.on_allocation(now, 300_000, 2_000_000);
        now += MIN_BACKOFF;
        p.on_allocation(now, 300_000, 2_000_000);
        assert_eq!(p.probes, 1);
        // The estimate did not rise: the next probe waits 2 s, then 4 s.
        now += Duration::from_millis(500);
        p.on_allocation(now, 300_000, 2_000_000);
        assert!(!p.probing());
        now += Duration::from_millis(1_500);
        p.on_allocation(now, 300_000, 2_000_000);
        assert!(!p.probing(), "backed off to 2 s");
        now += Duration::from_millis(500);
        p.on_allocation(now, 300_000, 2_000_000);
        assert_eq!(p.probes, 2);
        // This one worked: next probe a second later.
        now += Duration::from_millis(500);
        p.on_allocation(now, 600_000, 2_000_000);
        assert_eq!(p.successes, 1);
        now += MIN_BACKOFF;
        p.on_allocation(now, 600_000, 2_000_000);
        assert_eq!(p.probes, 3);
    }

    #[test]
    fn no_probe_when_the_estimate_covers_the_want_or_is_falling() {
        let mut p = Prober::default();
        let t0 = Instant::now();
        p.on_allocation(t0, 3_000_000, 2_000_000);
        p.on_allocation(t0 + MIN_BACKOFF, 3_000_000, 2_000_000);
        assert!(!p.probing(), "nothing more to want");
        p.on_allocation(t0 + MIN_BACKOFF * 2, 250_000, 2_000_000);
        assert!(!p.probing(), "falling estimate: congestion, not room");
    }
}
