//! Inbound RTCP acted on, and the room's own reports: keyframe requests relayed to publishers,
//! NACKs answered from the tracks' retransmission caches through the subscriber's egress,
//! publishers' sender reports kept, subscribers' loss counted, and a sender report per leg
//! each [`REPORT_INTERVAL`] carrying the publisher's clock into the leg's timestamps.

use std::time::{Duration, Instant};

use rtc::rtcp::sender_report::SenderReport;

use super::peer::Drain;
use super::state::Room;
use crate::ids::PeerKey;
use crate::media::feedback::{self, Feedback};
use crate::media::forwarder::{RetransmitCounts, TrackKey};
use crate::telemetry::METRICS;

/// How often each leg gets a sender report (Chromium sends about one a second per stream).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

impl Room {
    /// One compound RTCP packet from peer `key`.
    pub(super) fn on_rtcp(
        &mut self,
        key: PeerKey,
        pkts: &[Box<dyn rtc::rtcp::Packet>],
        now: Instant,
    ) {
        let mut items = std::mem::take(&mut self.feedback);
        items.clear();
        let counts = feedback::route(pkts, |f| items.push(f));
        METRICS.pli_in.inc_by(counts.pli);
        METRICS.fir_in.inc_by(counts.fir);
        METRICS.nack_in.inc_by(counts.nack);
        let mut lost: Vec<u16> = Vec::new();
        let mut nacked: Option<(u32, TrackKey)> = None;
        let mut totals = RetransmitCounts::default();
        for f in items.drain(..) {
            match f {
                Feedback::Keyframe(ssrc) => {
                    let tk = self.peers.get(&key).and_then(|p| p.down_track_of(ssrc));
                    if let Some(request) =
                        tk.and_then(|tk| self.forwarder.request_keyframe_for(tk, key, now))
                    {
                        self.send_pli(request, now);
                    }
                }
                Feedback::Nack { ssrc, seq } => {
                    if nacked.is_some_and(|(s, _)| s != ssrc) {
                        totals.add(self.retransmit(key, nacked.take(), &mut lost, now));
                    }
                    if nacked.is_none() {
                        let Some(tk) = self.peers.get(&key).and_then(|p| p.down_track_of(ssrc))
                        else {
                            totals.unknown += 1;
                            continue;
                        };
                        nacked = Some((ssrc, tk));
                    }
                    lost.push(seq);
                }
                Feedback::SenderReport { ssrc, ntp, rtp } => {
                    self.forwarder.on_sender_report(key, ssrc, ntp, rtp, now);
                }
                Feedback::Loss {
                    ssrc,
                    fraction_lost,
                } => {
                    if self
                        .peers
                        .get(&key)
                        .is_some_and(|p| p.down_track_of(ssrc).is_some())
                    {
                        METRICS.leg_loss.observe(f64::from(fraction_lost) / 256.0);
                        self.quality.on_downstream_loss(key, fraction_lost);
                    }
                }
            }
        }
        totals.add(self.retransmit(key, nacked, &mut lost, now));
        self.feedback = items;
        if totals != RetransmitCounts::default() {
            tracing::debug!(
                sent = totals.sent,
                too_old = totals.too_old,
                unknown = totals.unknown,
                repeated = totals.repeated,
                over_budget = totals.over_budget,
                "NACK answered"
            );
        }
        if counts.pli + counts.fir > 0 {
            tracing::debug!(
                pli = counts.pli,
                fir = counts.fir,
                "keyframe asked by subscriber"
            );
        }
        METRICS.retransmitted_packets.inc_by(totals.sent);
        METRICS.retransmitted_bytes.inc_by(totals.bytes);
        let unanswered = [
            totals.too_old,
            totals.unknown,
            totals.repeated,
            totals.over_budget,
        ];
        for (c, n) in METRICS.nack_unanswered.iter().zip(unanswered) {
            c.inc_by(n);
        }
        if let (Some(bps), Some(peer)) = (counts.remb_bps, self.peers.get_mut(&key)) {
            peer.set_remb(bps);
        }
    }

    /// Sends again what `subscriber` NACKed (`lost`, on its leg of the track), within limits.
    fn retransmit(
        &mut self,
        subscriber: PeerKey,
        leg: Option<(u32, TrackKey)>,
        lost: &mut Vec<u16>,
        now: Instant,
    ) -> RetransmitCounts {
        let Some((_, tk)) = leg else {
            lost.clear();
            return RetransmitCounts::default();
        };
        let mut batch = std::mem::take(&mut self.out);
        batch.clear();
        let mut counts = self
            .forwarder
            .retransmit(tk, subscriber, lost, now, &mut batch);
        lost.clear();
        if let Some(peer) = self.peers.get_mut(&subscriber) {
            let mut written = 0;
            for o in batch.drain(..) {
                if self.egress.write(peer.pc(), o, now).is_ok() {
                    written += 1;
                }
            }
            if written < counts.sent {
                counts.unknown += counts.sent - written;
                counts.sent = written;
            }
            if written > 0 && peer.mark_queued(Drain::Writes) {
                self.dirty.push(subscriber);
            }
        }
        batch.clear();
        self.out = batch;
        counts
    }

    /// Writes every leg's sender report when they are due.
    pub(super) fn send_reports_if_due(&mut self, now: Instant) {
        if self.next_reports.is_some_and(|t| now < t) {
            return;
        }
        self.next_reports = Some(now + REPORT_INTERVAL);
        let mut reports: Vec<(PeerKey, _, SenderReport)> = Vec::new();
        self.forwarder.sender_reports(now, &mut reports);
        let mut written = 0;
        for (subscriber, sender, sr) in reports {
            if let Some(peer) = self.peers.get_mut(&subscriber) {
                peer.write_sender_rtcp(sender, vec![Box::new(sr)], now);
                written += 1;
                self.mark_dirty(subscriber);
            }
        }
        METRICS.sender_reports.inc_by(written);
    }
}
