//! Bandwidth allocation and dynacast, the room's job: every [`ALLOCATION_PERIOD`], each
//! subscriber's estimate is split over the tracks it receives ([`allocator`]); legs are pointed
//! at their layers (pausing and resuming with a message to the subscriber), and each
//! publisher is told which of its simulcast layers anyone still receives.

use std::time::{Duration, Instant};

use tracing::debug;

use super::peer::Drain;
use super::state::Room;
use super::View;
use crate::ids::{ParticipantId, PeerKey, TrackId, TrackKind};
use crate::media::allocator::{self, Choice, LayerOffer, VideoDemand};
use crate::media::downtrack::DownState;
use crate::media::forwarder::TrackKey;
use crate::media::simulcast::LayerIndex;
use crate::media::voices::{self, Voice};
use crate::signal::protocol::{PauseReason, ServerMsg};
use crate::telemetry::METRICS;

/// How often allocation runs.
pub const ALLOCATION_PERIOD: Duration = Duration::from_millis(500);

/// A layer nobody receives is turned off at the publisher only after this long, so a leg
/// moving between layers does not toggle encodings.
pub const DYNACAST_OFF_DELAY: Duration = Duration::from_secs(5);

/// How long a leg waits for the keyframe of a new layer before the allocator may pick
/// another.
pub const SWITCH_PATIENCE: Duration = Duration::from_secs(2);

/// Allocations in a row that must find no room for a track before it is paused.
pub const PAUSE_AFTER: u8 = 2;

/// A subscriber's view of one track it receives, gathered for the allocator.
/// How much an active speaker's video outranks a tile of the same size.
const SPEAKER_PRIORITY: u64 = 4;

struct Leg {
    track: TrackKey,
    kind: TrackKind,
    demand: Option<VideoDemand>,
    audio_bps: u64,
    /// Audio sent as RED (RFC 2198) by its publisher.
    red: bool,
    /// Audio: its layer (the one stream), its publisher, and whether the leg flows now.
    voice: Option<(LayerIndex, PeerKey, bool)>,
}

impl Room {
    /// Input (via `on_cmd`): how a subscriber shows a track.
    pub(super) fn on_track_view(&mut self, id: &ParticipantId, track_id: &TrackId, view: View) {
        let Some(key) = self.key_of(id) else {
            return;
        };
        match self.forwarder.key_of(track_id) {
            Some(tk) if self.forwarder.set_view(tk, key, view) => {
                debug!(track = %track_id, ?view, "track view");
            }
            _ => debug!(track = %track_id, "track view for a track not received"),
        }
    }

    /// Runs allocation if due.
    pub(super) fn allocate_if_due(&mut self, now: Instant) {
        if self.next_allocation.is_some_and(|t| now < t) {
            return;
        }
        self.next_allocation = Some(now + ALLOCATION_PERIOD);
        let subscribers: Vec<PeerKey> = self.peers.keys().copied().collect();
        for key in subscribers {
            self.allocate_for(key, now);
        }
        self.dynacast(now);
        let paused = self.forwarder.paused_for_bandwidth();
        METRICS
            .paused_legs
            .add(paused as i64 - self.paused_legs as i64);
        self.paused_legs = paused;
    }

    /// Splits one subscriber's estimate over its open legs and applies the result.
    fn allocate_for(&mut self, key: PeerKey, now: Instant) {
        let Some(estimate) = self.peers.get(&key).map(|p| p.estimate()) else {
            return;
        };
        METRICS.subscriber_estimate.observe(estimate as f64);
        let legs = self.legs_of(key);
        let red_audio_bps: u64 = legs.iter().map(|l| l.audio_bps).sum();
        let video: Vec<&Leg> = legs.iter().filter(|l| l.kind == TrackKind::Video).collect();
        let demands: Vec<VideoDemand> = video.iter().filter_map(|l| l.demand.clone()).collect();
        // Audio redundancy while it fits beside the lowest video layers; primary blocks only
        // otherwise.
        let redundancy = allocator::redundancy_fits(estimate, red_audio_bps, &demands);
        // Voices first; on a link too slow for all of them, the speakers' (`media::voices`).
        let (voices, layers): (Vec<Voice>, Vec<LayerIndex>) = legs
            .iter()
            .filter_map(|l| {
                let (layer, publisher, flowing) = l.voice?;
                let bps = match (l.red, redundancy) {
                    (true, false) => (l.audio_bps as f64 * allocator::RED_PRIMARY_SHARE) as u64,
                    _ => l.audio_bps,
                };
                let voice = Voice {
                    track: l.track,
                    bps,
                    speaking: self.speakers.is_speaking(publisher),
                    recency: self
                        .speaker_order
                        .iter()
                        .position(|k| *k == publisher)
                        .unwrap_or(usize::MAX),
                    flowing,
                };
                Some((voice, layer))
            })
            .unzip();
        let heard = voices::choose(estimate, &voices);
        let audio_bps: u64 = voices
            .iter()
            .zip(&heard)
            .filter(|(_, heard)| **heard)
            .map(|(v, _)| v.bps)
            .sum();
        for ((v, layer), heard) in voices.iter().zip(layers).zip(heard) {
            let choice = if heard {
                Choice::Layer(layer)
            } else {
                Choice::NoBandwidth
            };
            self.apply(key, v.track, choice, now);
        }
        for l in legs.iter().filter(|l| l.red) {
            if let Some(d) = self.forwarder.leg_mut(l.track, key) {
                if d.redundancy != redundancy {
                    debug!(track = l.track.0, redundancy, "audio redundancy");
                    d.redundancy = redundancy;
                }
            }
        }
        let choices = allocator::allocate(estimate, audio_bps, &demands);
        if let Some(p) = self
            .peers
            .get(&key)
            .filter(|_| tracing::enabled!(tracing::Level::DEBUG))
        {
            // Per video leg: (forwarded layer, target layer, packets the leg sent so far).
            let state: Vec<_> = video
                .iter()
                .filter_map(|l| self.forwarder.track(l.track))
                .filter_map(|t| t.downs.iter().find(|d| d.subscriber == key))
                .map(|d| (d.layers(), d.packets))
                .collect();
            debug!(parent: p.span(), estimate, audio_bps, ?choices, ?state, "allocation");
        }
        for (leg, choice) in video.iter().zip(choices) {
            self.apply(key, leg.track, choice, now);
        }
        let wanted = audio_bps + allocator::wanted_bps(&demands);
        if let Some(p) = self.peers.get_mut(&key) {
            p.prober_mut().on_allocation(now, estimate, wanted);
        }
    }

    /// Sends the padding packets of running probes that are due.
    pub(super) fn send_probes(&mut self, now: Instant) {
        let keys: Vec<PeerKey> = self
            .peers
            .iter_mut()
            .filter_map(|(k, p)| p.prober_mut().probing().then_some(*k))
            .collect();
        let mut batch = std::mem::take(&mut self.out);
        for key in keys {
            let Some(n) = self
                .peers
                .get_mut(&key)
                .map(|p| p.prober_mut().packets_due(now))
            else {
                continue;
            };
            batch.clear();
            self.forwarder.probe_packets(key, n, &mut batch);
            let Some(peer) = self.peers.get_mut(&key) else {
                continue;
            };
            let mut sent = 0;
            for o in batch.drain(..) {
                if self.egress.write(peer.pc(), o, now).is_ok() {
                    sent += 1;
                }
            }
            METRICS.probe_packets.inc_by(sent);
            if sent > 0 && peer.mark_queued(Drain::Writes) {
                self.dirty.push(key);
            }
        }
        self.out = batch;
    }

    /// The open legs of `key`, with what the allocator needs of each.
    fn legs_of(&self, key: PeerKey) -> Vec<Leg> {
        let mut legs = Vec::new();
        for (tk, t) in self.forwarder.tracks() {
            let Some(d) = t
                .downs
                .iter()
                .find(|d| d.subscriber == key && d.state == DownState::Open)
            else {
                continue;
            };
            let offers: Vec<LayerOffer> = t
                .layers
                .iter()
                .map(|(slot, l)| LayerOffer {
                    layer: slot,
                    bps: l.wire_bps(slot),
                    width: l.width,
                })
                .collect();
            let (current, target) = d.layers();
            legs.push(Leg {
                track: tk,
                kind: t.kind,
                audio_bps: if t.kind == TrackKind::Audio {
                    offers.iter().map(|o| o.bps).max().unwrap_or(0)
                } else {
                    0
                },
                red: t.codec.mime_type.eq_ignore_ascii_case("audio/red"),
                voice: (t.kind == TrackKind::Audio)
                    .then(|| {
                        offers
                            .first()
                            .map(|o| (o.layer, t.publisher, !d.paused_for_bandwidth))
                    })
                    .flatten(),
                demand: (t.kind == TrackKind::Video).then(|| VideoDemand {
                    track: tk,
                    // By the size it is shown at; an active speaker's video goes first.
                    priority: u64::from(d.view.width)
                        * u64::from(d.view.height)
                        * if self.speakers.is_speaking(t.publisher) {
                            SPEAKER_PRIORITY
                        } else {
                            1
                        },
                    view: d.view,
                    layers: offers,
                    current: target.or(current),
                }),
            });
        }
        // Stable order (the forwarder's map is not).
        legs.sort_by_key(|l| l.track);
        legs
    }

    /// Points one leg at its choice; tells the subscriber when a track pauses or resumes for
    /// bandwidth.
    fn apply(&mut self, key: PeerKey, tk: TrackKey, choice: Choice, now: Instant) {
        let Some(leg) = self.forwarder.leg_mut(tk, key) else {
            return;
        };
        if choice == Choice::NoBandwidth {
            leg.starved = leg.starved.saturating_add(1);
            if leg.starved < PAUSE_AFTER && leg.layers().1.is_some() {
                return; // keep what it has until the next allocation agrees
            }
        } else {
            leg.starved = 0;
        }
        if choice.layer().is_some() && leg.switching_for(now).is_some_and(|d| d < SWITCH_PATIENCE) {
            return; // a switch is under way: let its keyframe come before changing course
        }
        if let Some(pli) = self.forwarder.set_target(tk, key, choice.layer(), now) {
            self.send_pli(pli, now);
        }
        let paused = choice == Choice::NoBandwidth;
        let Some(leg) = self.forwarder.leg_mut(tk, key) else {
            return;
        };
        if leg.paused_for_bandwidth == paused {
            return;
        }
        leg.paused_for_bandwidth = paused;
        let Some(t) = self.forwarder.track(tk) else {
            return;
        };
        let (participant_id, track_id, kind) = (t.publisher_id.clone(), t.id.clone(), t.kind);
        debug!(track = %track_id, ?kind, paused, "bandwidth pause");
        let msg = if paused {
            ServerMsg::TrackPaused {
                participant_id,
                track_id,
                kind,
                reason: PauseReason::Bandwidth,
            }
        } else {
            ServerMsg::TrackResumed {
                participant_id,
                track_id,
            }
        };
        if let Some(p) = self.peers.get(&key) {
            // A full signaling queue removes the participant on its next broadcast.
            let _ = p.send(msg);
        }
    }

    /// Dynacast: tells each simulcast publisher which layers someone receives.
    fn dynacast(&mut self, now: Instant) {
        for (publisher, source_track_id, active) in self.forwarder.dynacast(now, DYNACAST_OFF_DELAY)
        {
            let Some(p) = self.peers.get(&publisher) else {
                continue;
            };
            debug!(parent: p.span(), track = %source_track_id, ?active, "dynacast");
            METRICS.dynacast_updates.inc();
            let _ = p.send(ServerMsg::PublishLayers {
                source_track_id,
                active,
            });
        }
    }
}
