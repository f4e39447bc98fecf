//! Bandwidth allocation for one subscriber: given what its link can carry and the tracks it
//! receives, which layer of each video track it gets, or whether that track is paused.
//!
//! The rules, in order:
//! 1. Audio first: the audio legs the caller forwards (every one, unless the link is too slow
//!    for all voices: [`voices`](super::voices)) cost `audio_bps`, which comes off the estimate
//!    before any video is considered.
//! 2. Never more than the subscriber renders: a hidden tile gets nothing; a tile is capped at the
//!    smallest layer at least as wide as it is drawn (when the layer's width is known).
//! 3. Video by priority (the caller's order key: larger on screen first), each first at its
//!    lowest layer; a simulcast track whose lowest layer does not fit is paused for bandwidth.
//!    A track without simulcast is forwarded as it is (its cost still counts).
//! 4. What is left raises tracks one layer at a time, in priority order, up to their cap.
//!
//! Hysteresis keeps a subscriber from flapping between layers on a noisy estimate: resuming a
//! paused track or moving up needs [`UPGRADE_HEADROOM`] more than the layer costs; keeping what
//! it has only needs the cost.
//!
//! Pure: numbers in, choices out.

use super::downtrack::View;
use super::forwarder::TrackKey;
use super::simulcast::{LayerIndex, MAX_LAYERS};

/// Moving up (or resuming) needs this much more than the layer's cost to be free.
pub const UPGRADE_HEADROOM: f64 = 1.25;

/// One layer a video track offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerOffer {
    /// Its slot.
    pub layer: LayerIndex,
    /// What forwarding it costs, bits/s on the wire.
    pub bps: u64,
    /// Its frame width, when known.
    pub width: Option<u16>,
}

/// One video track the subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoDemand {
    /// The track.
    pub track: TrackKey,
    /// Larger first.
    pub priority: u64,
    /// How the subscriber shows it.
    pub view: View,
    /// Its layers, lowest first (at most [`MAX_LAYERS`]).
    pub layers: Vec<LayerOffer>,
    /// The layer the leg targets now (`None`: paused or new).
    pub current: Option<LayerIndex>,
}

/// What a video track gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Forward this layer.
    Layer(LayerIndex),
    /// The subscriber does not show it: nothing is sent.
    Hidden,
    /// Not even its lowest layer fits: paused until the estimate recovers.
    NoBandwidth,
}

impl Choice {
    /// The layer to forward, if any.
    pub fn layer(self) -> Option<LayerIndex> {
        match self {
            Choice::Layer(l) => Some(l),
            _ => None,
        }
    }
}

/// The highest layer worth sending to a tile of this size: the smallest layer at least as wide
/// as the tile (layers of unknown width are assumed wide enough only if they are the top one).
fn cap_index(view: &View, layers: &[LayerOffer]) -> usize {
    let top = layers.len().saturating_sub(1);
    if view.width == 0 {
        return top;
    }
    layers
        .iter()
        .position(|l| l.width.is_some_and(|w| u32::from(w) >= view.width))
        .unwrap_or(top)
}

/// Whether `cost` fits in `left`, with headroom unless the leg already has at least `layer`.
fn fits(cost: u64, left: u64, layer: LayerIndex, current: Option<LayerIndex>) -> bool {
    let keeping = current.is_some_and(|c| c >= layer);
    let needed = if keeping {
        cost as f64
    } else {
        cost as f64 * UPGRADE_HEADROOM
    };
    needed <= left as f64
}

/// What the subscriber would receive with every shown track at the layer its tile needs.
pub fn wanted_bps(demands: &[VideoDemand]) -> u64 {
    demands
        .iter()
        .filter(|d| d.view.visible && !d.layers.is_empty())
        .map(|d| d.layers[cap_index(&d.view, &d.layers).min(d.layers.len() - 1)].bps)
        .sum()
}

/// Share of a RED audio stream's rate its primary blocks take (one redundant block of about
/// the same size, plus the block headers).
pub const RED_PRIMARY_SHARE: f64 = 0.55;
/// Headroom beyond audio with redundancy and the lowest layer of every shown video that keeps
/// redundancy on.
pub const REDUNDANCY_MARGIN_BPS: u64 = 100_000;

/// Whether a subscriber's audio may keep its redundancy (RED): only while the estimate also
/// carries the lowest layer of every shown video, with a margin. Otherwise redundancy would
/// take what keeps a picture alive; the audio then goes as its primary blocks alone.
pub fn redundancy_fits(estimate_bps: u64, red_audio_bps: u64, demands: &[VideoDemand]) -> bool {
    let lowest: u64 = demands
        .iter()
        .filter(|d| d.view.visible && !d.layers.is_empty())
        .map(|d| d.layers[0].bps)
        .sum();
    estimate_bps >= red_audio_bps + lowest + REDUNDANCY_MARGIN_BPS
}

/// Allocates `estimate_bps` over `audio_bps` of audio and the video `demands`; returns one
/// choice per demand, in the demands' order.
pub fn allocate(estimate_bps: u64, audio_bps: u64, demands: &[VideoDemand]) -> Vec<Choice> {
    let mut left = estimate_bps.saturating_sub(audio_bps);
    let mut choices = vec![Choice::Hidden; demands.len()];
    let mut order: Vec<usize> = (0..demands.len())
        .filter(|&i| demands[i].view.visible && !demands[i].layers.is_empty())
        .collect();
    order.sort_by(|&a, &b| {
        demands[b]
            .priority
            .cmp(&demands[a].priority)
            .then(demands[a].track.cmp(&demands[b].track))
    });
    // Each track's index into its layers (None: nothing fits).
    let mut at: Vec<Option<usize>> = vec![None; demands.len()];
    // First pass: the lowest layer of each, in priority order.
    for &i in &order {
        let d = &demands[i];
        let low = d.layers[0];
        if d.layers.len() == 1 {
            // A track without simulcast is forwarded as it is: pausing its only layer on an
            // estimate would freeze it, and there is no smaller layer to offer.
            left = left.saturating_sub(low.bps);
            at[i] = Some(0);
            choices[i] = Choice::Layer(low.layer);
            continue;
        }
        if fits(low.bps, left, low.layer, d.current) {
            left -= low.bps;
            at[i] = Some(0);
            choices[i] = Choice::Layer(low.layer);
        } else {
            choices[i] = Choice::NoBandwidth;
        }
    }
    // Then raise, one layer per track per round, in priority order, while anything moved.
    let mut moved = true;
    while moved {
        moved = false;
        for &i in &order {
            let d = &demands[i];
            let Some(k) = at[i] else {
                continue;
            };
            let cap = cap_index(&d.view, &d.layers).min(MAX_LAYERS - 1);
            if k >= cap {
                continue;
            }
            let (now, next) = (d.layers[k], d.layers[k + 1]);
            let extra = next.bps.saturating_sub(now.bps);
            if fits(extra, left, next.layer, d.current) {
                left -= extra;
                at[i] = Some(k + 1);
                choices[i] = Choice::Layer(next.layer);
                moved = true;
            }
        }
    }
    choices
}

#[cfg(test)]
mod tests {

    #[test]
    fn redundancy_stays_only_while_the_lowest_layers_fit_beside_it() {
        let d = |visible| VideoDemand {
            track: TrackKey(1),
            priority: 1,
            view: View {
                visible,
                width: 320,
                height: 180,
            },
            layers: vec![LayerOffer {
                layer: 0,
                bps: 60_000,
                width: None,
            }],
            current: None,
        };
        // Two RED streams (140k) and two shown videos at 60k each: 360k with the margin.
        assert!(redundancy_fits(400_000, 140_000, &[d(true), d(true)]));
        assert!(!redundancy_fits(300_000, 140_000, &[d(true), d(true)]));
        assert!(
            redundancy_fits(300_000, 140_000, &[d(false), d(true)]),
            "hidden tiles cost nothing"
        );
    }
    use super::*;

    fn layers() -> Vec<LayerOffer> {
        vec![
            LayerOffer {
                layer: 0,
                bps: 100_000,
                width: Some(240),
            },
            LayerOffer {
                layer: 1,
                bps: 350_000,
                width: Some(480),
            },
            LayerOffer {
                layer: 2,
                bps: 1_000_000,
                width: Some(960),
            },
        ]
    }

    fn demand(track: u64, priority: u64, current: Option<LayerIndex>) -> VideoDemand {
        VideoDemand {
            track: TrackKey(track),
            priority,
            view: View::default(),
            layers: layers(),
            current,
        }
    }

    #[test]
    fn a_wide_link_gets_every_top_layer() {
        let d = [demand(1, 1, Some(2)), demand(2, 1, Some(2))];
        assert_eq!(
            allocate(5_000_000, 100_000, &d),
            vec![Choice::Layer(2), Choice::Layer(2)]
        );
    }

    #[test]
    fn audio_comes_off_first_and_a_slow_link_gets_low_layers() {
        // 300 kbit/s with two audio streams (~100 kbit/s): two low layers fit, no more.
        let d = [demand(1, 1, Some(0)), demand(2, 1, Some(0))];
        assert_eq!(
            allocate(300_000, 100_000, &d),
            vec![Choice::Layer(0), Choice::Layer(0)]
        );
    }

    #[test]
    fn what_does_not_fit_is_paused_lowest_priority_first() {
        let d = [demand(1, 10, Some(0)), demand(2, 20, Some(0))];
        // Room for one low layer only: the higher-priority track (2) keeps it.
        assert_eq!(
            allocate(220_000, 100_000, &d),
            vec![Choice::NoBandwidth, Choice::Layer(0)]
        );
        // Below audio: everything is paused.
        assert_eq!(
            allocate(60_000, 100_000, &d),
            vec![Choice::NoBandwidth, Choice::NoBandwidth]
        );
    }

    #[test]
    fn upgrades_need_headroom_but_keeping_a_layer_does_not() {
        // 100k audio + 100k low + 250k more for the middle layer = 450k exactly.
        let up = [demand(1, 1, Some(0))];
        assert_eq!(allocate(450_000, 100_000, &up), vec![Choice::Layer(0)]);
        let keep = [demand(1, 1, Some(1))];
        assert_eq!(allocate(450_000, 100_000, &keep), vec![Choice::Layer(1)]);
        // A paused track resumes only with headroom.
        let paused = [demand(1, 1, None)];
        assert_eq!(
            allocate(200_000, 100_000, &paused),
            vec![Choice::NoBandwidth]
        );
        assert_eq!(allocate(230_000, 100_000, &paused), vec![Choice::Layer(0)]);
    }

    #[test]
    fn hidden_tiles_get_nothing_and_small_tiles_a_small_layer() {
        let mut hidden = demand(1, 1, Some(2));
        hidden.view.visible = false;
        let mut small = demand(2, 1, Some(2));
        small.view.width = 200;
        let mut medium = demand(3, 1, Some(2));
        medium.view.width = 400;
        assert_eq!(
            allocate(10_000_000, 0, &[hidden, small, medium]),
            vec![Choice::Hidden, Choice::Layer(0), Choice::Layer(1)]
        );
    }

    #[test]
    fn higher_priority_tracks_are_raised_first() {
        // After two low layers (200k) there is room to raise one track to the middle layer.
        let d = [demand(1, 1, Some(1)), demand(2, 5, Some(1))];
        assert_eq!(
            allocate(560_000, 100_000, &d),
            vec![Choice::Layer(0), Choice::Layer(1)]
        );
    }

    #[test]
    fn a_single_layer_track_is_forwarded_as_it_is_and_its_cost_counts() {
        let mut plain = demand(1, 9, Some(0));
        plain.layers.truncate(1);
        let other = demand(2, 1, Some(0));
        assert_eq!(
            allocate(50_000, 0, &[plain.clone(), other.clone()]),
            vec![Choice::Layer(0), Choice::NoBandwidth]
        );
        assert_eq!(
            allocate(300_000, 0, &[plain.clone(), other]),
            vec![Choice::Layer(0), Choice::Layer(0)]
        );
        let mut hidden = plain;
        hidden.view.visible = false;
        assert_eq!(allocate(300_000, 0, &[hidden]), vec![Choice::Hidden]);
    }

    #[test]
    fn the_want_is_every_shown_track_at_its_tile_layer() {
        let mut small = demand(1, 1, None);
        small.view.width = 200;
        let mut hidden = demand(2, 1, None);
        hidden.view.visible = false;
        let big = demand(3, 1, None);
        assert_eq!(wanted_bps(&[small, hidden, big]), 100_000 + 1_000_000);
    }
}
