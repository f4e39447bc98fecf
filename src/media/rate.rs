//! Bitrate over the last measurement window, from a running byte counter. Pure.

use std::time::{Duration, Instant};

/// Shortest window a new rate is computed over.
const WINDOW: Duration = Duration::from_secs(1);

/// Bits per second of a growing byte counter.
#[derive(Debug, Clone, Default)]
pub struct RateMeter {
    last: Option<(Instant, u64)>,
    bps: u64,
}

impl RateMeter {
    /// Feeds the counter's current total; recomputes once a window has passed.
    pub fn update(&mut self, total_bytes: u64, now: Instant) {
        match self.last {
            None => self.last = Some((now, total_bytes)),
            Some((at, bytes)) => {
                let dt = now.saturating_duration_since(at);
                if dt >= WINDOW {
                    let bits = total_bytes.saturating_sub(bytes) as f64 * 8.0;
                    self.bps = (bits / dt.as_secs_f64()) as u64;
                    self.last = Some((now, total_bytes));
                }
            }
        }
    }

    /// The latest rate in bits per second.
    pub fn bps(&self) -> u64 {
        self.bps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_bytes_over_the_window() {
        let t0 = Instant::now();
        let mut r = RateMeter::default();
        r.update(0, t0);
        r.update(500, t0 + Duration::from_millis(500));
        assert_eq!(r.bps(), 0, "not recomputed before a full window");
        r.update(250_000, t0 + Duration::from_secs(2));
        assert_eq!(r.bps(), 1_000_000);
    }
}
