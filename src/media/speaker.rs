//! Active speakers: who is talking in a room, from the audio level each publisher's packets carry
//! (RFC 6464 `ssrc-audio-level`: the level in -dBov, 0 loudest, 127 silence).
//!
//! Each publisher's level becomes a voice activity in 0..1 (levels below [`QUIET_DBOV`] count
//! as silence), smoothed over a few hundred milliseconds so a word's syllables and a cough do not
//! flicker the highlight. A publisher starts speaking when its activity rises above
//! [`START`] and stops when it falls below [`STOP`] (hysteresis) or its audio stops arriving.
//! The room asks at most every [`EVALUATE_EVERY`] for the speakers, loudest first (at most
//! [`MAX_SPEAKERS`]), and is told only when the set or its order changed.
//!
//! Pure: no clock, no I/O; the caller feeds levels and instants.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::ids::PeerKey;

/// Levels quieter than this (-dBov) are silence: background noise, breathing.
pub const QUIET_DBOV: u8 = 70;
/// Smoothing time constant of the activity.
pub const SMOOTHING: Duration = Duration::from_millis(300);
/// Activity at which a publisher starts speaking…
pub const START: f32 = 0.30;
/// …and below which it stops.
pub const STOP: f32 = 0.15;
/// How often the room re-evaluates.
pub const EVALUATE_EVERY: Duration = Duration::from_millis(300);
/// A publisher whose audio stopped this long ago is not speaking.
pub const SILENT_AFTER: Duration = Duration::from_millis(600);
/// Speakers reported at once.
pub const MAX_SPEAKERS: usize = 3;

#[derive(Debug, Clone, Copy)]
struct Voice {
    activity: f32,
    speaking: bool,
    last: Instant,
}

/// The room's speaker detection.
#[derive(Debug, Default)]
pub struct SpeakerObserver {
    voices: HashMap<PeerKey, Voice>,
    /// Last list reported.
    reported: Vec<PeerKey>,
    next_evaluation: Option<Instant>,
}

/// The activity one level stands for: 0 at [`QUIET_DBOV`] and below, 1 at 0 dBov... scaled so
/// ordinary speech (-35..-20 dBov) sits around 0.5..0.7.
fn activity_of(level_dbov: u8) -> f32 {
    let level = level_dbov.min(127);
    if level >= QUIET_DBOV {
        return 0.0;
    }
    f32::from(QUIET_DBOV - level) / f32::from(QUIET_DBOV)
}

impl SpeakerObserver {
    /// A packet of `publisher`'s audio with this level (-dBov) arrived at `now`.
    pub fn observe(&mut self, publisher: PeerKey, level_dbov: u8, now: Instant) {
        let x = activity_of(level_dbov);
        let v = self.voices.entry(publisher).or_insert(Voice {
            activity: 0.0,
            speaking: false,
            last: now,
        });
        let dt = now.saturating_duration_since(v.last).as_secs_f32();
        // Exponential smoothing whatever the packet spacing (20 ms for Opus, longer with DTX).
        let alpha = 1.0 - (-dt.max(0.02) / SMOOTHING.as_secs_f32()).exp();
        v.activity += alpha * (x - v.activity);
        v.last = now;
        if !v.speaking && v.activity >= START {
            v.speaking = true;
        } else if v.speaking && v.activity < STOP {
            v.speaking = false;
        }
    }

    /// The publisher left: forget it.
    pub fn forget(&mut self, publisher: PeerKey) {
        self.voices.remove(&publisher);
    }

    /// Whether this publisher is among the speakers last reported.
    pub fn is_speaking(&self, publisher: PeerKey) -> bool {
        self.reported.contains(&publisher)
    }

    /// When [`evaluate`](Self::evaluate) has work next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_evaluation
            .filter(|_| !self.voices.is_empty() || !self.reported.is_empty())
    }

    /// At most every [`EVALUATE_EVERY`]: the speakers, loudest first, with their activity, if
    /// that list (its members or their order) changed since the last report.
    pub fn evaluate(&mut self, now: Instant) -> Option<Vec<(PeerKey, f32)>> {
        if self.next_evaluation.is_some_and(|t| now < t) {
            return None;
        }
        self.next_evaluation = Some(now + EVALUATE_EVERY);
        let mut speaking: Vec<(PeerKey, f32)> = self
            .voices
            .iter_mut()
            .filter_map(|(k, v)| {
                if now.saturating_duration_since(v.last) > SILENT_AFTER {
                    v.speaking = false;
                    v.activity = 0.0;
                }
                v.speaking.then_some((*k, v.activity))
            })
            .collect();
        speaking.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        speaking.truncate(MAX_SPEAKERS);
        let keys: Vec<PeerKey> = speaking.iter().map(|(k, _)| *k).collect();
        if keys == self.reported {
            return None;
        }
        self.reported = keys;
        Some(speaking)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `publisher` 20 ms packets at `level` from `from` for `ms`.
    fn talk(o: &mut SpeakerObserver, publisher: u64, level: u8, from: Instant, ms: u64) {
        for i in 0..ms / 20 {
            o.observe(
                PeerKey(publisher),
                level,
                from + Duration::from_millis(i * 20),
            );
        }
    }

    #[test]
    fn a_voice_becomes_a_speaker_after_a_moment_and_silence_ends_it() {
        let t0 = Instant::now();
        let mut o = SpeakerObserver::default();
        talk(&mut o, 1, 127, t0, 1000);
        assert_eq!(o.evaluate(t0 + Duration::from_secs(1)), None, "silence");
        // Speech at -25 dBov: speaking within ~half a second.
        let t1 = t0 + Duration::from_secs(1);
        talk(&mut o, 1, 25, t1, 100);
        assert_eq!(
            o.evaluate(t1 + Duration::from_millis(400)),
            None,
            "100 ms is not yet speech"
        );
        talk(&mut o, 1, 25, t1 + Duration::from_millis(100), 500);
        let got = o
            .evaluate(t1 + Duration::from_millis(700))
            .expect("speaking");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, PeerKey(1));
        assert!(got[0].1 > 0.4 && got[0].1 < 0.8, "{}", got[0].1);
        // A short pause between words keeps the highlight.
        let t2 = t1 + Duration::from_millis(600);
        talk(&mut o, 1, 127, t2, 120);
        assert_eq!(o.evaluate(t2 + Duration::from_millis(400)), None);
        assert!(o.is_speaking(PeerKey(1)));
        // Lasting silence ends it.
        talk(&mut o, 1, 127, t2 + Duration::from_millis(120), 1500);
        let got = o.evaluate(t2 + Duration::from_secs(2)).expect("changed");
        assert!(got.is_empty());
    }

    #[test]
    fn the_loudest_comes_first_and_a_publisher_that_goes_quiet_drops_out() {
        let t0 = Instant::now();
        let mut o = SpeakerObserver::default();
        for i in 0..50u64 {
            let at = t0 + Duration::from_millis(i * 20);
            o.observe(PeerKey(1), 40, at);
            o.observe(PeerKey(2), 15, at);
            o.observe(PeerKey(3), 127, at);
        }
        let got = o.evaluate(t0 + Duration::from_secs(1)).expect("speakers");
        let keys: Vec<u64> = got.iter().map(|(k, _)| k.0).collect();
        assert_eq!(
            keys,
            vec![2, 1],
            "louder first; the silent one is not listed"
        );
        // No change: nothing to report.
        assert_eq!(o.evaluate(t0 + Duration::from_millis(1400)), None);
        // 2's audio stops arriving (muted, or left).
        for i in 50..100u64 {
            o.observe(PeerKey(1), 40, t0 + Duration::from_millis(i * 20));
        }
        let got = o.evaluate(t0 + Duration::from_secs(2)).expect("changed");
        assert_eq!(got.iter().map(|(k, _)| k.0).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn at_most_three_are_reported_and_evaluation_is_rate_limited() {
        let t0 = Instant::now();
        let mut o = SpeakerObserver::default();
        for i in 0..50u64 {
            for p in 1..=5u64 {
                o.observe(
                    PeerKey(p),
                    10 + p as u8 * 5,
                    t0 + Duration::from_millis(i * 20),
                );
            }
        }
        let at = t0 + Duration::from_secs(1);
        let got = o.evaluate(at).expect("speakers");
        assert_eq!(
            got.iter().map(|(k, _)| k.0).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        o.forget(PeerKey(1));
        assert_eq!(
            o.evaluate(at + Duration::from_millis(100)),
            None,
            "too soon"
        );
        let got = o.evaluate(at + EVALUATE_EVERY).expect("1 is gone");
        assert_eq!(
            got.iter().map(|(k, _)| k.0).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
    }
}
