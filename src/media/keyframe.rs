//! Keyframe requests for one published video track: merges requests from many subscribers,
//! sends at most one PLI per throttle interval, and re-asks until a keyframe actually arrives.
//! Pure: the caller passes `now` and sends the PLI when told to.

use std::time::{Duration, Instant};

/// Per-track keyframe request state.
#[derive(Debug, Clone)]
pub struct KeyframeRequester {
    throttle: Duration,
    last_sent: Option<Instant>,
    /// Someone is waiting for a keyframe.
    pending: bool,
}

impl KeyframeRequester {
    /// A requester sending at most one PLI per `throttle`.
    pub fn new(throttle: Duration) -> Self {
        Self {
            throttle,
            last_sent: None,
            pending: false,
        }
    }

    fn may_send(&self, now: Instant) -> bool {
        self.last_sent
            .is_none_or(|t| now.saturating_duration_since(t) >= self.throttle)
    }

    /// A subscriber needs a keyframe. Returns `true` when a PLI should be sent now; otherwise
    /// the request is remembered and [`poll`](Self::poll) sends it when the throttle allows.
    pub fn request(&mut self, now: Instant) -> bool {
        self.pending = true;
        self.poll(now)
    }

    /// Returns `true` when a PLI is due now: a request is outstanding and the throttle allows
    /// (also re-asks once per interval while no keyframe has come).
    pub fn poll(&mut self, now: Instant) -> bool {
        if self.pending && self.may_send(now) {
            self.last_sent = Some(now);
            return true;
        }
        false
    }

    /// A keyframe arrived from the publisher: outstanding requests are satisfied.
    pub fn on_keyframe(&mut self) {
        self.pending = false;
    }

    /// When [`poll`](Self::poll) next needs calling, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.pending {
            return None;
        }
        // `request` sends at once when nothing was sent yet, so a pending request always has
        // a `last_sent` (no clock is read here: this module is sans-IO).
        self.last_sent.map(|t| t + self.throttle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(500);

    #[test]
    fn requests_within_the_throttle_are_merged() {
        let t0 = Instant::now();
        let mut k = KeyframeRequester::new(T);
        assert!(k.request(t0));
        assert!(!k.request(t0 + Duration::from_millis(100)));
        assert!(!k.poll(t0 + Duration::from_millis(499)));
        assert!(k.poll(t0 + T), "the deferred request goes out once allowed");
    }

    #[test]
    fn a_keyframe_ends_the_retries() {
        let t0 = Instant::now();
        let mut k = KeyframeRequester::new(T);
        assert!(k.request(t0));
        k.on_keyframe();
        assert!(!k.poll(t0 + T * 4));
        assert_eq!(k.next_deadline(), None);
    }

    #[test]
    fn no_keyframe_means_asking_again_each_interval() {
        let t0 = Instant::now();
        let mut k = KeyframeRequester::new(T);
        assert!(k.request(t0));
        assert_eq!(k.next_deadline(), Some(t0 + T));
        assert!(k.poll(t0 + T));
        assert!(!k.poll(t0 + T + Duration::from_millis(10)));
        assert!(k.poll(t0 + T * 2));
    }
}
