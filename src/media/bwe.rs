//! A subscriber's bandwidth estimate, from its transport-wide congestion feedback.
//!
//! `rtc`'s congestion-control interceptor records every packet sent to the subscriber and, when
//! the subscriber's TWCC feedback comes back, hands this estimator one [`PacketReport`] per
//! packet: when it left, when (on the receiver's clock) it arrived, or that it did not.
//!
//! Why not `rtc`'s bundled GCC: read and measured against what an SFU needs, it recovers too
//! slowly — after one backoff it only adds 12 kbit/s per 200 ms near the old ceiling, forever
//! (a subscriber whose link recovers from 300 kbit/s needs half a minute to reach 2 Mbit/s),
//! and it has no notion of probing. This estimator is small and tuned for a forwarder whose
//! sending rate moves in layer-sized steps:
//!
//! - **Delivered rate** `R`: bytes the receiver reports over the last [`RATE_WINDOW`] of its own
//!   arrival clock.
//! - **Queueing delay**: one-way delay (arrival − departure, on two unrelated clocks) minus its
//!   minimum over the last [`BASELINE_WINDOW`]; the constant clock offset cancels out.
//! - **Overuse** — loss above [`OVERUSE_LOSS`], a standing queue above [`STANDING_QUEUE`], or a
//!   queue above [`OVERUSE_QUEUE`] *while less arrives than was sent* (the link is the
//!   bottleneck; a busy CPU on either end delays packets too, but then as much arrives as was
//!   sent): the target drops to [`BACKOFF`] × `R`, at most once per [`BACKOFF_HOLD`].
//! - **Clear** (little loss, what was sent arrives): the target is at least
//!   [`TRACK_DELIVERED`] × `R` over [`SHORT_WINDOW`] — so a probe that got through raises it at
//!   once — and grows by [`GROWTH_PER_S`] per second, but growth stops at 1.5 × `R` +
//!   [`GROWTH_SLACK`]: beyond what has been seen to arrive, only a probe raises it. Only
//!   overuse lowers it.
//! - **Capacity memory**: each backoff remembers the delivered rate, smoothed, as the link's
//!   capacity `C`. While it is remembered the target grows fast only up to [`NEAR_CAPACITY`] ×
//!   `C`, then by [`ADDITIVE_PER_S`] × `C` per second, and never beyond [`OVER_CAPACITY`] × `C`:
//!   without it the target regrew by 8 % a second to 1.5 × `R`, the allocator stepped a layer up
//!   into a full link, and a 300 kbit/s subscriber lost 5-50 % of its packets every 4-5 s
//!   (measured in the shaped browser test). The memory is dropped when more than
//!   [`CAPACITY_EXCEEDED`] × `C` arrives over [`RATE_WINDOW`] on a clear link without a queue
//!   forming (a probe got through: the link is bigger now), and after an outage (the path may be new).
//!
//! Pure: instants come in as arguments.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::interceptor::{BandwidthEstimator, PacketReport};

/// Delivered rate window (receiver clock).
pub const RATE_WINDOW: Duration = Duration::from_millis(500);
/// A shorter window for the "a probe got through" rule.
pub const SHORT_WINDOW: Duration = Duration::from_millis(200);
/// How long the delay minimum is remembered.
pub const BASELINE_WINDOW: Duration = Duration::from_secs(10);
/// Queueing delay that means the link is full.
pub const OVERUSE_QUEUE: Duration = Duration::from_millis(40);
/// Queueing delay that means the link is full whatever the rates say.
pub const STANDING_QUEUE: Duration = Duration::from_millis(150);
/// Delivered below this share of the sending rate (with a queue) means the link is full.
pub const BOTTLENECK_SHARE: f64 = 0.85;
/// Delivered at least this share of the sending rate means the link keeps up.
pub const CLEAR_SHARE: f64 = 0.9;
/// Loss fraction (over the last second) that means the link is full.
pub const OVERUSE_LOSS: f64 = 0.10;
/// Loss fraction under which growth is allowed.
pub const CLEAR_LOSS: f64 = 0.03;
/// On overuse the target becomes this much of the delivered rate.
pub const BACKOFF: f64 = 0.85;
/// No second backoff within this long (its effect has not been seen yet).
pub const BACKOFF_HOLD: Duration = Duration::from_millis(500);
/// Under a clear link, the target follows this share of the delivered rate upward.
pub const TRACK_DELIVERED: f64 = 0.95;
/// Multiplicative growth per second while the link is clear.
pub const GROWTH_PER_S: f64 = 1.08;
/// Growth beyond 1.5 × delivered is allowed up to this many bits/s.
pub const GROWTH_SLACK: f64 = 100_000.0;

/// With a capacity remembered, fast growth stops at this share of it.
pub const NEAR_CAPACITY: f64 = 0.9;
/// Near the remembered capacity the target grows by this share of it per second.
pub const ADDITIVE_PER_S: f64 = 0.03;
/// Without a probe the target stays at most this share of the remembered capacity.
pub const OVER_CAPACITY: f64 = 1.1;
/// Delivered above this share of the remembered capacity (clear link) forgets it.
pub const CAPACITY_EXCEEDED: f64 = 1.3;
/// Forgetting the capacity also needs the queueing delay under this (a link that absorbs a
/// burst in its queue is not bigger).
pub const FORGET_QUEUE: Duration = Duration::from_millis(20);
/// Weight of a new backoff's delivered rate in the remembered capacity (when it is close).
pub const CAPACITY_SMOOTHING: f64 = 0.4;
/// Arrivals this much faster than the departures of the same packets are the receiver's
/// timestamps bunching up (a busy receiver reading a backlog), not a bigger link.
pub const MAX_ARRIVAL_SPEEDUP: f64 = 1.2;

/// No feedback for this long is an outage (the client's path went away, e.g. its address
/// changed), not congestion: what was sent meanwhile says nothing about the link's capacity.
pub const OUTAGE: Duration = Duration::from_millis(1500);

/// Bytes a packet takes on the wire beyond what the send history records (its RTP size): IPv4
/// and UDP headers and the SRTP authentication tag. Estimates are of what the link carries.
pub const PACKET_OVERHEAD_BYTES: usize = 20 + 8 + 16;

/// What the estimator currently thinks of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Not enough feedback yet.
    Unknown,
    /// Room to spare.
    Clear,
    /// Neither clear nor full.
    Steady,
    /// Queueing or losing.
    Overused,
}

/// The estimator.
#[derive(Debug)]
pub struct Bwe {
    target: f64,
    min: f64,
    max: f64,
    /// Departures are measured from here.
    epoch: Option<Instant>,
    /// (arrival on the receiver clock, one-way delay in µs, size) of recent arrivals.
    arrivals: VecDeque<(Duration, i64, usize)>,
    /// (departure since the epoch, size) of recent reports, arrived or not.
    sent: VecDeque<(Duration, usize)>,
    /// (when the report came, arrived?) for the loss window.
    fates: VecDeque<(Instant, bool)>,
    /// (bucket start on the receiver clock, minimum delay in the bucket) for the baseline.
    minima: VecDeque<(Duration, i64)>,
    last_backoff: Option<Instant>,
    /// The link's capacity as seen at the backoffs (bits/s), until a probe shows more.
    capacity: Option<f64>,
    last_update: Option<Instant>,
    state: LinkState,
    /// Arrivals reported so far.
    seen: u64,
    /// When the state was last logged (`debug`, once a second).
    last_log: Option<Instant>,
    /// When feedback last came.
    last_feedback: Option<Instant>,
    /// After an outage: reports of packets that departed before this are ignored.
    ignore_before: Option<Instant>,
}

impl Bwe {
    /// An estimator starting at `initial`, held within `min..=max` (bits/s).
    pub fn new(initial: f64, min: f64, max: f64) -> Self {
        Self {
            target: initial.clamp(min, max),
            min,
            max,
            epoch: None,
            arrivals: VecDeque::new(),
            sent: VecDeque::new(),
            fates: VecDeque::new(),
            minima: VecDeque::new(),
            last_backoff: None,
            capacity: None,
            last_update: None,
            state: LinkState::Unknown,
            seen: 0,
            last_log: None,
            last_feedback: None,
            ignore_before: None,
        }
    }

    /// Feedback resumed after an outage of more than [`OUTAGE`]: the history is dropped (the
    /// packets sent into the outage are reported lost, and the path may be a new one), the
    /// target is kept, and only packets sent from now on are judged.
    fn after_outage(&mut self, now: Instant) {
        self.arrivals.clear();
        self.sent.clear();
        self.fates.clear();
        self.minima.clear();
        self.seen = 0;
        self.epoch = None;
        self.last_update = None;
        self.capacity = None;
        self.state = LinkState::Unknown;
        self.ignore_before = Some(now);
        tracing::debug!(
            target = self.target as u64,
            "bwe: feedback resumed after an outage; history dropped, target kept"
        );
    }

    /// The capacity remembered from the backoffs, if any (bits/s).
    pub fn capacity(&self) -> Option<f64> {
        self.capacity
    }

    fn remember_capacity(&mut self, delivered: f64) {
        self.capacity = Some(match self.capacity {
            Some(c) if (0.6 * c..=1.5 * c).contains(&delivered) => {
                (1.0 - CAPACITY_SMOOTHING) * c + CAPACITY_SMOOTHING * delivered
            }
            _ => delivered,
        });
        tracing::debug!(
            delivered = delivered as u64,
            capacity = self.capacity.map(|c| c as u64),
            "bwe: backoff"
        );
    }

    /// The link as last judged.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// Bits per second the receiver saw arrive over the last `window` of its clock.
    pub fn delivered_bps(&self, window: Duration) -> f64 {
        let Some(&(last, _, _)) = self.arrivals.back() else {
            return 0.0;
        };
        let from = last.saturating_sub(window);
        let bytes: usize = self
            .arrivals
            .iter()
            .rev()
            .take_while(|(at, _, _)| *at >= from)
            .map(|(_, _, size)| *size)
            .sum();
        bytes as f64 * 8.0 / window.as_secs_f64()
    }

    /// Bits per second sent over the last `window` (by departure) of the reported packets.
    pub fn sent_bps(&self, window: Duration) -> f64 {
        let Some(&(last, _)) = self.sent.back() else {
            return 0.0;
        };
        let from = last.saturating_sub(window);
        let bytes: usize = self
            .sent
            .iter()
            .rev()
            .take_while(|(at, _)| *at >= from)
            .map(|(_, size)| *size)
            .sum();
        bytes as f64 * 8.0 / window.as_secs_f64()
    }

    /// Queueing delay now: recent delay over the remembered minimum.
    pub fn queue_delay(&self) -> Duration {
        let Some(&(last, _, _)) = self.arrivals.back() else {
            return Duration::ZERO;
        };
        let base = self.minima.iter().map(|(_, d)| *d).min().unwrap_or(0);
        let (sum, n) = self
            .arrivals
            .iter()
            .rev()
            .take_while(|(at, _, _)| *at + Duration::from_millis(100) >= last)
            .fold((0i64, 0i64), |(sum, n), (_, d, _)| (sum + d, n + 1));
        if n == 0 {
            return Duration::ZERO;
        }
        let mean = sum / n;
        Duration::from_micros(mean.saturating_sub(base).max(0) as u64)
    }

    /// Fraction of packets reported lost over the last second.
    pub fn loss(&self) -> f64 {
        if self.fates.is_empty() {
            return 0.0;
        }
        let lost = self.fates.iter().filter(|(_, arrived)| !arrived).count();
        lost as f64 / self.fates.len() as f64
    }

    fn record(&mut self, now: Instant, reports: &[PacketReport]) {
        let epoch = *self
            .epoch
            .get_or_insert_with(|| reports.first().map_or(now, |r| r.departure));
        // A packet no feedback named has an unknown fate (the feedback covering it was lost, or
        // the receiver did not count it): it is neither loss nor delivery, so it is left out.
        // (An outage is seen anyway: nothing arrives at all.)
        if tracing::enabled!(tracing::Level::TRACE) {
            let lost: Vec<(u32, u16, usize)> = reports
                .iter()
                .filter(|r| r.acknowledged && !r.arrived)
                .map(|r| (r.ssrc, r.rtp_sequence_number, r.size))
                .collect();
            if !lost.is_empty() {
                tracing::trace!(?lost, of = reports.len(), "reported lost");
            }
        }
        for r in reports.iter().filter(|r| r.acknowledged) {
            self.fates.push_back((now, r.arrived));
            let size = r.size + PACKET_OVERHEAD_BYTES;
            self.sent
                .push_back((r.departure.saturating_duration_since(epoch), size));
            let (true, Some(arrival)) = (r.arrived, r.arrival) else {
                continue;
            };
            let departed = r.departure.saturating_duration_since(epoch);
            let delay = arrival.as_micros() as i64 - departed.as_micros() as i64;
            self.arrivals.push_back((arrival, delay, size));
            self.seen += 1;
            let bucket = Duration::from_millis(arrival.as_millis() as u64 / 100 * 100);
            match self.minima.back_mut() {
                Some((b, d)) if *b == bucket => *d = (*d).min(delay),
                _ => self.minima.push_back((bucket, delay)),
            }
        }
        while self
            .fates
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > Duration::from_secs(1))
        {
            self.fates.pop_front();
        }
        if let Some(&(last, _)) = self.sent.back() {
            let keep = last.saturating_sub(RATE_WINDOW);
            while self.sent.front().is_some_and(|(at, _)| *at < keep) {
                self.sent.pop_front();
            }
        }
        if let Some(&(last, _, _)) = self.arrivals.back() {
            let keep = last.saturating_sub(RATE_WINDOW.max(Duration::from_millis(100)));
            while self.arrivals.front().is_some_and(|(at, _, _)| *at < keep) {
                self.arrivals.pop_front();
            }
            let keep = last.saturating_sub(BASELINE_WINDOW);
            while self.minima.front().is_some_and(|(b, _)| *b < keep) {
                self.minima.pop_front();
            }
        }
    }
}

impl BandwidthEstimator for Bwe {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        if reports.is_empty() {
            return;
        }
        if self
            .last_feedback
            .is_some_and(|t| now.saturating_duration_since(t) > OUTAGE)
        {
            self.after_outage(now);
        }
        self.last_feedback = Some(now);
        if let Some(cut) = self.ignore_before {
            if reports.iter().all(|r| r.departure < cut) {
                return;
            }
            let fresh: Vec<PacketReport> = reports
                .iter()
                .filter(|r| r.departure >= cut)
                .cloned()
                .collect();
            if reports.last().is_some_and(|r| r.departure >= cut) && fresh.len() == reports.len() {
                self.ignore_before = None;
            }
            self.record(now, &fresh);
        } else {
            self.record(now, reports);
        }
        if self.seen < 10 {
            self.state = LinkState::Unknown;
            return;
        }
        let dt = self
            .last_update
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
            .min(Duration::from_secs(1));
        self.last_update = Some(now);
        let (queue, loss) = (self.queue_delay(), self.loss());
        let delivered = self.delivered_bps(RATE_WINDOW);
        let sent = self.sent_bps(RATE_WINDOW);
        let bottleneck = delivered < BOTTLENECK_SHARE * sent;
        if loss > OVERUSE_LOSS || queue > STANDING_QUEUE || (queue > OVERUSE_QUEUE && bottleneck) {
            self.state = LinkState::Overused;
            let held = self
                .last_backoff
                .is_some_and(|t| now.saturating_duration_since(t) < BACKOFF_HOLD);
            if !held {
                self.target = (BACKOFF * delivered).min(self.target);
                self.last_backoff = Some(now);
                self.remember_capacity(delivered);
            }
        } else if loss < CLEAR_LOSS && delivered >= CLEAR_SHARE * sent {
            self.state = LinkState::Clear;
            if self.capacity.is_some_and(|c| {
                delivered > CAPACITY_EXCEEDED * c
                    && delivered <= MAX_ARRIVAL_SPEEDUP * sent
                    && queue < FORGET_QUEUE
            }) {
                tracing::debug!(
                    delivered = delivered as u64,
                    sent = sent as u64,
                    target = self.target as u64,
                    capacity = self.capacity.map(|c| c as u64),
                    "bwe: more got through than the remembered capacity; forgotten"
                );
                self.capacity = None;
            }
            let got_through = TRACK_DELIVERED * self.delivered_bps(SHORT_WINDOW);
            let ceiling = 1.5 * delivered + GROWTH_SLACK;
            self.target = match self.capacity {
                // Growth stops at what is known to get through (plus a margin); beyond that
                // only a probe — what just got through — raises it.
                None => {
                    let grown = self.target * GROWTH_PER_S.powf(dt.as_secs_f64());
                    self.target.max(got_through).max(grown.min(ceiling))
                }
                // Near a full link: slowly, and not far past where it filled.
                Some(c) => {
                    let grown = if self.target < NEAR_CAPACITY * c {
                        (self.target * GROWTH_PER_S.powf(dt.as_secs_f64())).min(NEAR_CAPACITY * c)
                    } else {
                        self.target + ADDITIVE_PER_S * c * dt.as_secs_f64()
                    };
                    let bound = (OVER_CAPACITY * c).min(ceiling);
                    self.target
                        .max(got_through.min(bound))
                        .max(grown.min(bound))
                }
            };
            // Only congestion lowers it.
        } else {
            self.state = LinkState::Steady;
        }
        self.target = self.target.clamp(self.min, self.max);
        if self
            .last_log
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
        {
            self.last_log = Some(now);
            tracing::debug!(
                state = ?self.state,
                queue_ms = queue.as_millis() as u64,
                loss = format_args!("{loss:.3}"),
                delivered = delivered as u64,
                sent = sent as u64,
                target = self.target as u64,
                capacity = self.capacity.map(|c| c as u64),
                "bwe"
            );
        }
    }

    fn target_bitrate(&self) -> f64 {
        self.target
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;

    /// A link of `capacity` bits/s with a drop-tail queue of `queue_limit`, fed `sent` bits/s
    /// in 1000-byte packets for `secs` seconds; feedback every 100 ms.
    struct Link {
        t0: Instant,
        now: Duration,
        /// When the link is next free (receiver clock).
        busy_until: Duration,
        capacity: f64,
        queue_limit: Duration,
        id: u64,
        /// Packets the queue dropped so far.
        lost: u64,
    }

    impl Link {
        fn new(capacity: f64) -> Self {
            Self {
                t0: Instant::now(),
                now: Duration::ZERO,
                busy_until: Duration::ZERO,
                capacity,
                queue_limit: Duration::from_millis(200),
                id: 0,
                lost: 0,
            }
        }

        fn run(&mut self, bwe: &mut Bwe, sent: impl Fn(f64) -> f64, secs: f64) {
            self.run_timed(bwe, |target, _| sent(target), secs);
        }

        /// As `run`, the sending rate also a function of the time since the start.
        fn run_timed(&mut self, bwe: &mut Bwe, sent: impl Fn(f64, Duration) -> f64, secs: f64) {
            let end = self.now + Duration::from_secs_f64(secs);
            while self.now < end {
                let mut batch = Vec::new();
                let step_end = self.now + Duration::from_millis(100);
                while self.now < step_end {
                    let rate = sent(bwe.target_bitrate(), self.now).max(8_000.0);
                    let gap = Duration::from_secs_f64(8000.0 / rate);
                    let start = self.busy_until.max(self.now);
                    let arrived = start - self.now <= self.queue_limit;
                    let arrival = start + Duration::from_secs_f64(8000.0 / self.capacity);
                    if arrived {
                        self.busy_until = arrival;
                    } else {
                        self.lost += 1;
                    }
                    self.id += 1;
                    // The receiver's clock is offset from ours by an arbitrary constant.
                    batch.push(report(
                        self.id,
                        self.t0 + self.now,
                        arrived.then_some(arrival + Duration::from_secs(1000)),
                    ));
                    self.now += gap;
                }
                bwe.on_reports(self.t0 + self.now, &batch);
            }
        }
    }

    fn report(id: u64, departure: Instant, arrival: Option<Duration>) -> PacketReport {
        PacketReport {
            ssrc: 1,
            id,
            rtp_sequence_number: id as u16,
            is_twcc: true,
            twcc_sequence_number: id as u16,
            size: 1000,
            arrived: arrival.is_some(),
            departure,
            arrival,
            ecn: Ecn::NotEct,
            acknowledged: true,
        }
    }

    fn bwe() -> Bwe {
        Bwe::new(500_000.0, 30_000.0, 20_000_000.0)
    }

    #[test]
    fn an_overfull_link_brings_the_target_under_its_capacity() {
        let mut b = bwe();
        let mut link = Link::new(300_000.0);
        // The sender keeps sending 600 kbit/s whatever the estimate: a layer too big.
        link.run(&mut b, |_| 600_000.0, 3.0);
        let t = b.target_bitrate();
        assert!(t < 300_000.0, "target {t} must fall below the 300k link");
        assert!(
            t > 150_000.0,
            "target {t} backs off from what arrives, not to zero"
        );
    }

    #[test]
    fn an_outage_is_not_congestion() {
        let mut b = bwe();
        let mut link = Link::new(1_000_000.0);
        link.run(&mut b, |target| target, 10.0);
        let before = b.target_bitrate();
        assert!(before > 600_000.0, "settled at {before}");
        // 4 s without feedback: everything sent meanwhile is lost (the path is gone); then the
        // feedback resumes and reports it lost.
        let mut lost = Vec::new();
        for _ in 0..200 {
            link.id += 1;
            lost.push(report(link.id, link.t0 + link.now, None));
            link.now += Duration::from_millis(20);
        }
        link.busy_until = link.now;
        b.on_reports(link.t0 + link.now, &lost);
        // The allocation reads the estimate every 500 ms: it must not dip at any of them.
        for _ in 0..4 {
            let now = b.target_bitrate();
            assert!(
                now >= 0.8 * before,
                "the estimate collapsed after an outage: {before} -> {now}"
            );
            link.run(&mut b, |target| target, 0.5);
        }
    }

    #[test]
    fn a_sender_that_follows_the_target_settles_near_capacity() {
        let mut b = bwe();
        let mut link = Link::new(1_000_000.0);
        link.run(&mut b, |target| target, 20.0);
        let t = b.target_bitrate();
        assert!((700_000.0..1_150_000.0).contains(&t), "target {t}");
    }

    #[test]
    fn growth_is_bounded_by_what_arrives_until_a_probe_shows_more() {
        let mut b = Bwe::new(100_000.0, 30_000.0, 20_000_000.0);
        let mut link = Link::new(10_000_000.0);
        // A sender stuck at 200 kbit/s (it has nothing more to send).
        link.run(&mut b, |_| 200_000.0, 10.0);
        let t = b.target_bitrate();
        // (The delivered-rate window counts a packet or two more than the nominal rate.)
        let wire = 200_000.0 * (1000 + PACKET_OVERHEAD_BYTES) as f64 / 1000.0;
        assert!(t <= 1.6 * wire + GROWTH_SLACK, "target {t}");
        // A probe at 2 Mbit/s that gets through raises the target at once.
        link.run(&mut b, |_| 2_000_000.0, 0.3);
        let t = b.target_bitrate();
        assert!(t > 1_500_000.0, "target {t} after a probe that got through");
        assert_eq!(b.state(), LinkState::Clear);
        // Back to 200 kbit/s: what the probe proved is kept (only congestion lowers it).
        link.run(&mut b, |_| 200_000.0, 2.0);
        assert!(b.target_bitrate() >= t, "{}", b.target_bitrate());
    }

    #[test]
    fn delay_without_a_bottleneck_is_not_congestion() {
        // 400 kbit/s sent; every 10th batch the receiver is stalled for 80 ms (a busy CPU),
        // then everything arrives: delay jumps, but as much arrives as was sent.
        let mut b = bwe();
        let t0 = Instant::now();
        let mut id = 0u64;
        for step in 0..100u64 {
            let stall = if step % 10 == 5 { 80_000 } else { 0 };
            let reports: Vec<PacketReport> = (0..5)
                .map(|i| {
                    id += 1;
                    let sent_us = id * 20_000;
                    report(
                        id,
                        t0 + Duration::from_micros(sent_us),
                        Some(Duration::from_micros(sent_us + 5_000 + stall * (5 - i) / 5)),
                    )
                })
                .collect();
            b.on_reports(t0 + Duration::from_micros(id * 20_000 + 100_000), &reports);
            assert_ne!(b.state(), LinkState::Overused, "step {step}");
        }
        assert!(b.target_bitrate() >= 400_000.0, "{}", b.target_bitrate());
    }

    #[test]
    fn a_lost_feedback_packet_is_not_loss() {
        let mut b = bwe();
        let t0 = Instant::now();
        let mut reports = Vec::new();
        for i in 0..200u64 {
            // 40 packets never named by feedback (it was lost), 1 in 50 reported lost.
            let mut r = report(
                i,
                t0 + Duration::from_millis(i * 10),
                (i % 50 != 7).then(|| Duration::from_millis(i * 10 + 30)),
            );
            if (100..140).contains(&i) {
                r.arrived = false;
                r.arrival = None;
                r.acknowledged = false;
            }
            reports.push(r);
        }
        b.on_reports(t0 + Duration::from_secs(2), &reports);
        assert_ne!(b.state(), LinkState::Overused);
        assert!(b.loss() < 0.05, "{}", b.loss());
    }

    #[test]
    fn loss_alone_backs_off() {
        let mut b = bwe();
        let t0 = Instant::now();
        let mut reports = Vec::new();
        for i in 0..200u64 {
            reports.push(report(
                i,
                t0 + Duration::from_millis(i * 40),
                (i % 4 != 0).then(|| Duration::from_millis(i * 40 + 30)),
            ));
        }
        // 200 kbit/s sent, a quarter lost, no queueing.
        b.on_reports(t0 + Duration::from_secs(8), &reports);
        assert_eq!(b.state(), LinkState::Overused);
        assert!(b.target_bitrate() < 500_000.0);
    }

    /// What an allocator sends to a 300 kbit/s subscriber: audio and the lowest layers
    /// (190 kbit/s), or a layer more (420 kbit/s) once the target allows it.
    fn layered(target: f64) -> f64 {
        if target >= 350_000.0 {
            420_000.0
        } else {
            190_000.0
        }
    }

    #[test]
    fn a_full_link_is_not_refilled_every_few_seconds() {
        let mut b = bwe();
        let mut link = Link::new(300_000.0);
        link.run(&mut b, layered, 10.0);
        let c = b.capacity().expect("the first overuse is remembered");
        assert!((200_000.0..350_000.0).contains(&c), "capacity {c}");
        let (lost, sent) = (link.lost, link.id);
        link.run(&mut b, layered, 30.0);
        let (lost, sent) = (link.lost - lost, link.id - sent);
        // Growing 8 % a second to 1.5 x what arrives, the target stepped the layer up every
        // 4-5 s and each time the queue overflowed.
        assert_eq!(
            lost, 0,
            "{lost} of {sent} packets lost after the first backoff"
        );
        assert!(b.target_bitrate() < 350_000.0, "{}", b.target_bitrate());
    }

    #[test]
    fn a_probe_through_a_bigger_link_lifts_the_remembered_capacity() {
        let mut b = bwe();
        let mut link = Link::new(300_000.0);
        link.run(&mut b, layered, 10.0);
        assert!(b.capacity().is_some());
        // The link grows; the sender probes for 200 ms of every second at twice the target.
        link.capacity = 5_000_000.0;
        let probing = |target: f64, t: Duration| {
            if t.subsec_millis() < 200 {
                2.0 * target
            } else {
                layered(target).max(target.min(2_000_000.0))
            }
        };
        link.run_timed(&mut b, probing, 6.0);
        // (Forgotten, or remembered again where the bigger link filled.)
        assert!(
            b.capacity().is_none_or(|c| c > 3_000_000.0),
            "{:?}",
            b.capacity()
        );
        assert!(b.target_bitrate() > 1_500_000.0, "{}", b.target_bitrate());
    }
}
