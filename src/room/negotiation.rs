//! Negotiation: the offer/answer state machine each [`Peer`](super::peer::Peer) owns
//! ([`Negotiation`]), and the room's handling of offers, answers and candidates.
//!
//! Rules (see `docs/protocol.md`): the client makes the first offer; the server is the
//! impolite side (a client offer while a server offer is outstanding gets `offer_collision`);
//! one server offer is in flight at a time, and changes made meanwhile are batched into the
//! next one; an offer not answered within `media.negotiation_timeout` removes the participant.

use std::time::{Duration, Instant};

use rtc::peer_connection::transport::RTCIceCandidateInit;
use tracing::{debug, info, warn};

use super::peer::PeerError;
use super::state::Room;
use crate::ids::{ParticipantId, PeerKey};
use crate::signal::protocol::{CandidateInit, ErrorCode, ServerMsg};
use crate::telemetry::METRICS;
use crate::transport::udp::Route;

/// One peer connection's offer/answer state. Its gates are methods, so the room asks instead of
/// reading flags.
#[derive(Debug)]
pub struct Negotiation {
    /// A server offer with this generation, sent at that time, awaits the answer.
    in_flight: Option<(u64, Instant)>,
    /// Generation of the next server offer.
    next_generation: u64,
    /// Changes (tracks added or removed) wait for the next server offer.
    needs_offer: bool,
    /// The client has made its first offer (the server never makes the first offer).
    client_negotiated: bool,
}

impl Default for Negotiation {
    fn default() -> Self {
        Self {
            in_flight: None,
            next_generation: 1,
            needs_offer: false,
            client_negotiated: false,
        }
    }
}

impl Negotiation {
    /// A change for the next server offer.
    pub fn changed(&mut self) {
        self.needs_offer = true;
    }

    /// The client's offer was applied.
    pub fn client_offered(&mut self) {
        self.client_negotiated = true;
    }

    /// All gates open: changes wait, the client has negotiated, no offer is in flight.
    pub fn ready_to_offer(&self) -> bool {
        self.needs_offer && self.client_negotiated && self.in_flight.is_none()
    }

    /// A server offer went out now; returns its generation.
    pub fn offer_sent(&mut self, now: Instant) -> u64 {
        let generation = self.next_generation;
        self.next_generation += 1;
        self.in_flight = Some((generation, now));
        self.needs_offer = false;
        generation
    }

    /// The outstanding offer was sent again (a resumed session): its timeout restarts.
    pub fn offer_resent(&mut self, now: Instant) {
        if let Some((_, sent)) = self.in_flight.as_mut() {
            *sent = now;
        }
    }

    /// The generation of the outstanding server offer.
    pub fn in_flight(&self) -> Option<u64> {
        self.in_flight.map(|(g, _)| g)
    }

    /// The answer to the outstanding offer was applied.
    pub fn answer_applied(&mut self) {
        self.in_flight = None;
    }

    /// Whether the outstanding offer has waited longer than `timeout`.
    pub fn overdue(&self, now: Instant, timeout: Duration) -> bool {
        self.in_flight
            .is_some_and(|(_, sent)| now.saturating_duration_since(sent) > timeout)
    }

    /// When the outstanding offer times out.
    pub fn deadline(&self, timeout: Duration) -> Option<Instant> {
        self.in_flight.map(|(_, sent)| sent + timeout)
    }
}

impl Room {
    pub(super) fn on_offer(&mut self, id: &ParticipantId, sdp: String, now: Instant) {
        let Some(key) = self.key_of(id) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if peer.negotiation().in_flight().is_some() {
            // The server is impolite: its offer wins; the browser rolls back and re-offers.
            self.send_to(
                key,
                ServerMsg::error(
                    ErrorCode::OfferCollision,
                    "a server offer is outstanding; answer it first",
                ),
                now,
            );
            return;
        }
        tracing::trace!(%sdp, "client offer");
        let offered = sdp.clone();
        let mut applied_ok = false;
        let reply = match peer.apply_offer(sdp, now) {
            Ok(applied) => {
                if let Some(old) = applied.restarted_from {
                    // The new generation's checks carry the new ufrag; the old one is retired
                    // with the addresses learned under it.
                    info!(old_ufrag = %old, "ICE restart");
                    METRICS.ice_restarts.inc();
                    self.demux.register(
                        peer.ufrag().to_owned(),
                        Route {
                            inbox: self.inbox.clone(),
                            peer: key,
                        },
                    );
                    self.demux.unregister(old);
                }
                applied_ok = true;
                tracing::trace!(sdp = %applied.answer, "server answer");
                ServerMsg::Answer {
                    sdp: applied.answer,
                }
            }
            Err(PeerError::BadSdp(e)) => {
                ServerMsg::error(ErrorCode::BadSdp, format!("offer rejected: {e}"))
            }
            Err(e) => ServerMsg::error(
                ErrorCode::BadSdp,
                format!("offer could not be applied: {e}"),
            ),
        };
        debug!("client offer handled");
        self.mark_dirty(key);
        self.send_to(key, reply, now);
        if applied_ok {
            self.unpublish_withdrawn(key, &offered, now);
        }
    }

    pub(super) fn on_answer(&mut self, id: &ParticipantId, sdp: String, now: Instant) {
        let Some(key) = self.key_of(id) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        tracing::trace!(%sdp, "client answer");
        let result = peer.apply_answer(sdp, now);
        self.mark_dirty(key);
        if let Err(e) = &result {
            tracing::trace!(%e, "answer rejected");
        }
        let generation = match result {
            Ok(g) => g,
            Err(PeerError::UnexpectedAnswer) => {
                let msg = ServerMsg::error(
                    ErrorCode::UnexpectedAnswer,
                    "no server offer is outstanding",
                );
                self.send_to(key, msg, now);
                return;
            }
            Err(e) => {
                let msg = ServerMsg::error(ErrorCode::BadSdp, format!("answer rejected: {e}"));
                self.send_to(key, msg, now);
                return;
            }
        };
        debug!(generation, "answer applied");
        let open_now = self
            .peers
            .get_mut(&key)
            .is_some_and(|p| p.answered(generation));
        if open_now {
            self.open_answered(key, generation, now);
        }
    }

    /// Opens the legs of `key` in the answered offer `generation`; video legs ask their
    /// publisher for a keyframe.
    pub(super) fn open_answered(&mut self, key: PeerKey, generation: u64, now: Instant) {
        for (tk, sender) in self.forwarder.answered(key, generation) {
            let Some((sub_map, rtx_ssrc)) = self
                .peers
                .get_mut(&key)
                .and_then(|p| Some((p.sender_rtp_map(sender)?, p.sender_rtx_ssrc(sender))))
            else {
                continue;
            };
            let keyframe_of = self.forwarder.open(tk, key, &sub_map, rtx_ssrc);
            debug!(generation, ?keyframe_of, "subscriber leg open");
            if let Some(layer) = keyframe_of {
                self.request_keyframe(tk, layer, now);
            }
        }
    }

    pub(super) fn on_candidate(&mut self, id: &ParticipantId, candidate: Option<CandidateInit>) {
        let Some(key) = self.key_of(id) else {
            return;
        };
        let Some(c) = candidate else { return }; // end of candidates: nothing to do (ICE-lite)
        let init = RTCIceCandidateInit {
            candidate: c.candidate,
            sdp_mid: c.sdp_mid,
            sdp_mline_index: c.sdp_m_line_index,
            username_fragment: c.username_fragment,
            url: None,
        };
        if let Some(peer) = self.peers.get_mut(&key) {
            if let Err(e) = peer.add_remote_candidate(init) {
                // ICE-lite learns addresses from connectivity checks; a bad candidate is harmless.
                debug!(%e, "remote candidate ignored");
            }
        }
        self.mark_dirty(key);
    }

    /// Sends a server offer to every peer whose gates are open; runs after each input.
    pub(super) fn negotiate(&mut self, now: Instant) {
        if !std::mem::take(&mut self.negotiate_due) {
            return;
        }
        let ready: Vec<PeerKey> = self
            .peers
            .values()
            .filter(|p| p.negotiation().ready_to_offer())
            .map(|p| p.key())
            .collect();
        for key in ready {
            let Some(peer) = self.peers.get_mut(&key) else {
                continue;
            };
            let span = peer.span().clone();
            let _entered = span.enter();
            match peer.create_offer(now) {
                Ok((generation, sdp)) => {
                    self.forwarder.mark_offered(key, generation);
                    debug!(generation, "server offer sent");
                    tracing::trace!(generation, %sdp, "server offer");
                    self.mark_dirty(key);
                    self.send_to(key, ServerMsg::Offer { sdp }, now);
                }
                Err(e) => {
                    warn!(%e, "could not create offer");
                    self.remove_peer(
                        key,
                        Some((ErrorCode::Internal, "renegotiation failed")),
                        now,
                    );
                }
            }
        }
        self.flush(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_offers_only_after_the_client_and_one_at_a_time() {
        let t0 = Instant::now();
        let mut n = Negotiation::default();
        n.changed();
        assert!(!n.ready_to_offer(), "never the first offer");
        n.client_offered();
        assert!(n.ready_to_offer());
        assert_eq!(n.offer_sent(t0), 1);
        n.changed();
        assert!(!n.ready_to_offer(), "one offer in flight");
        assert_eq!(n.in_flight(), Some(1));
        n.answer_applied();
        assert!(n.ready_to_offer(), "the batched change goes next");
        assert_eq!(n.offer_sent(t0), 2);
    }

    #[test]
    fn an_unanswered_offer_is_overdue_after_the_timeout() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(10);
        let mut n = Negotiation::default();
        assert!(!n.overdue(t0 + timeout * 2, timeout));
        n.client_offered();
        n.changed();
        n.offer_sent(t0);
        assert!(!n.overdue(t0 + timeout, timeout));
        assert!(n.overdue(t0 + timeout + Duration::from_millis(1), timeout));
        assert_eq!(n.deadline(timeout), Some(t0 + timeout));
    }
}
