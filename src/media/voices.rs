//! Which voices a subscriber gets when its link cannot carry them all.
//!
//! Audio goes first in every allocation ([`allocator`](super::allocator)), but on a very slow
//! downlink the voices alone can exceed the estimate: two Opus streams with their packet
//! overhead are ~90 kbit/s, and a 60 kbit/s link forwarding both lost about half of every
//! stream's packets (measured in the shaped browser test: 30-58 % concealment on each voice,
//! and the signaling socket on the same link stalled behind the drops). Then fewer voices,
//! each clean, are worth more than all of them broken: the active speakers first, then those
//! who spoke most recently, as many as fit, and always at least one.
//!
//! A voice that flows keeps its place while it fits; a paused one comes back only with
//! [`RESUME_HEADROOM`] to spare, so an estimate at the edge does not toggle it.
//!
//! Pure: numbers in, choices out.

use super::forwarder::TrackKey;

/// A paused voice resumes only if this much more than its rate is free.
pub const RESUME_HEADROOM: f64 = 1.25;

/// One audio leg of a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Voice {
    /// The track.
    pub track: TrackKey,
    /// What forwarding it costs, bits/s on the wire (as it would be sent: RED or not).
    pub bps: u64,
    /// Its publisher is an active speaker now.
    pub speaking: bool,
    /// Its publisher's place in the room's speaker order (0: spoke last; `usize::MAX`:
    /// never spoke).
    pub recency: usize,
    /// It is forwarded now (not paused).
    pub flowing: bool,
}

/// For each voice, in the given order: whether to forward it within `estimate_bps`.
pub fn choose(estimate_bps: u64, voices: &[Voice]) -> Vec<bool> {
    let mut order: Vec<usize> = (0..voices.len()).collect();
    order.sort_by_key(|&i| {
        let v = &voices[i];
        (!v.speaking, v.recency, !v.flowing, v.track)
    });
    let mut left = estimate_bps as f64;
    let mut chosen = vec![false; voices.len()];
    for (n, &i) in order.iter().enumerate() {
        let v = &voices[i];
        let needed = if v.flowing {
            v.bps as f64
        } else {
            v.bps as f64 * RESUME_HEADROOM
        };
        // The first voice always: silence helps nobody, and one stream is the least a call
        // can carry.
        if n == 0 || needed <= left {
            chosen[i] = true;
            left -= v.bps as f64;
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voice(track: u64, bps: u64, speaking: bool, recency: usize, flowing: bool) -> Voice {
        Voice {
            track: TrackKey(track),
            bps,
            speaking,
            recency,
            flowing,
        }
    }

    #[test]
    fn every_voice_while_they_fit() {
        let v = [
            voice(1, 45_000, false, usize::MAX, true),
            voice(2, 45_000, true, 0, true),
        ];
        assert_eq!(choose(90_000, &v), vec![true, true]);
        assert_eq!(choose(2_000_000, &v), vec![true, true]);
    }

    #[test]
    fn a_short_link_gets_the_speaker_then_the_most_recent_one() {
        let v = [
            voice(1, 45_000, false, 2, true),
            voice(2, 45_000, false, 1, true),
            voice(3, 45_000, true, 0, true),
        ];
        // Room for two: the speaker, then who spoke before them.
        assert_eq!(choose(100_000, &v), vec![false, true, true]);
        // Room for none: the speaker anyway.
        assert_eq!(choose(30_000, &v), vec![false, false, true]);
    }

    #[test]
    fn a_paused_voice_needs_headroom_to_come_back() {
        let v = [
            voice(1, 45_000, true, 0, true),
            voice(2, 45_000, false, 1, false),
        ];
        // Both fit exactly, but the paused one needs 25 % more than its rate.
        assert_eq!(choose(90_000, &v), vec![true, false]);
        assert_eq!(choose(102_000, &v), vec![true, true]);
        // Flowing, it keeps its place at the exact fit.
        let flowing = [
            v[0],
            Voice {
                flowing: true,
                ..v[1]
            },
        ];
        assert_eq!(choose(90_000, &flowing), vec![true, true]);
    }

    #[test]
    fn a_new_speaker_takes_the_place_of_a_silent_one() {
        // 1 spoke before and still flows; 2 speaks now and was paused.
        let v = [
            voice(1, 45_000, false, 1, true),
            voice(2, 45_000, true, 0, false),
        ];
        assert_eq!(choose(60_000, &v), vec![false, true]);
    }

    #[test]
    fn ties_keep_what_flows_then_go_by_track() {
        let v = [
            voice(1, 45_000, false, usize::MAX, false),
            voice(2, 45_000, false, usize::MAX, true),
            voice(3, 45_000, false, usize::MAX, false),
        ];
        assert_eq!(choose(60_000, &v), vec![false, true, false]);
        let none_flowing = [v[0], v[2]];
        assert_eq!(choose(60_000, &none_flowing), vec![true, false]);
    }
}
