//! Driving peer connections, and the packet path through the room.
//!
//! # The drain contract
//! After any mutation of a peer connection (a datagram, a signaling change, a timer, a packet
//! written to it), the peer is queued once; before the input returns, every queued peer is
//! drained completely in a fixed order — events, then reads, then writes — and its timer is
//! read again on the next deadline computation. A peer that only had forwarded RTP written to
//! it since its last drain is drained by collecting the datagrams those writes produced
//! ([`Drain::Writes`]): nothing else in it changed, so the full sweep is skipped per packet. Reads from a publisher are forwarded into the
//! subscribers' peer connections, which queues those in turn, so a datagram's whole fan-out
//! reaches [`Room::transmits_mut`] before the input returns.

use std::time::Instant;

use rtc::peer_connection::event::{RTCDataChannelEvent, RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::sansio::Protocol;
use tracing::{debug, trace};

use super::peer::{ConnectionChange, Drain};
use super::state::{push_transmit, Room};
use crate::ids::PeerKey;
use crate::ids::TrackKind;
use crate::media::forwarder::TrackKey;
use crate::media::simulcast::{LayerIndex, MAX_LAYERS};
use crate::signal::protocol::ErrorCode;
use crate::telemetry::{kind_index, DropReason, METRICS};

/// Index of a connection state in `METRICS.peer_connections`.
pub(super) fn pc_state_index(s: RTCPeerConnectionState) -> usize {
    match s {
        RTCPeerConnectionState::Connecting => 1,
        RTCPeerConnectionState::Connected => 2,
        RTCPeerConnectionState::Disconnected => 3,
        RTCPeerConnectionState::Failed => 4,
        RTCPeerConnectionState::Closed => 5,
        _ => 0,
    }
}

impl Room {
    /// Queues the peer with this key to be driven (once).
    pub(super) fn mark_dirty(&mut self, key: PeerKey) {
        if self
            .peers
            .get_mut(&key)
            .is_some_and(|p| p.mark_queued(Drain::Full))
        {
            self.dirty.push(key);
        }
    }

    /// Drives every queued peer until nothing is left to drain. Returns the number of packets
    /// forwarded to subscribers.
    pub(super) fn flush(&mut self, now: Instant) -> usize {
        let mut forwarded = 0;
        while let Some(key) = self.dirty.pop() {
            forwarded += self.drive(key, now);
        }
        forwarded
    }

    /// Drains one peer's events, reads and writes (in that order).
    fn drive(&mut self, key: PeerKey, now: Instant) -> usize {
        let mut forwarded = 0;
        let Some(peer) = self.peers.get_mut(&key) else {
            return 0;
        };
        if peer.start_drive() == Drain::Writes {
            // Only forwarded RTP went in: its datagrams are ready, nothing else changed.
            while let Some(t) = peer.pc().poll_transmit() {
                push_transmit(&mut self.transmits, &mut self.tcp_transmits, t);
            }
            return 0;
        }
        loop {
            let Some(peer) = self.peers.get_mut(&key) else {
                return forwarded;
            };
            let Some(ev) = peer.pc().poll_event() else {
                break;
            };
            self.on_event(key, ev, now);
        }
        loop {
            let Some(peer) = self.peers.get_mut(&key) else {
                return forwarded;
            };
            let Some(msg) = peer.pc().poll_read() else {
                break;
            };
            forwarded += self.on_message(key, msg.message, now);
        }
        if let Some(peer) = self.peers.get_mut(&key) {
            while let Some(t) = peer.pc().poll_write() {
                push_transmit(&mut self.transmits, &mut self.tcp_transmits, t);
            }
        }
        forwarded
    }

    fn on_event(&mut self, key: PeerKey, ev: RTCPeerConnectionEvent, now: Instant) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let span = peer.span().clone();
        let _entered = span.enter();
        match ev {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                METRICS.peer_connections[pc_state_index(peer.state())].dec();
                METRICS.peer_connections[pc_state_index(state)].inc();
                debug!(%state, "connection state");
                let viewer_ready =
                    peer.role().is_viewer() && state == RTCPeerConnectionState::Connected;
                match peer.on_state(state, now) {
                    ConnectionChange::None if viewer_ready => self.rebind_viewers(now),
                    ConnectionChange::None => {}
                    ConnectionChange::OpenAnswered(generation) => {
                        self.open_answered(key, generation, now)
                    }
                    ConnectionChange::Reconnected => self.refresh_subscriber(key, now),
                    ConnectionChange::Lost => self.remove_peer(
                        key,
                        Some((ErrorCode::Removed, "media connection failed")),
                        now,
                    ),
                }
            }
            RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(state) => {
                debug!(%state, "ICE connection state");
                if peer.on_ice_state(state) {
                    self.refresh_subscriber(key, now);
                }
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                self.on_track_open(key, init, now)
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose(track_id)) => {
                if let Some(tk) = peer.published(&track_id) {
                    self.unpublish(tk, now);
                }
            }
            RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnOpen(channel)) => {
                self.chat_channel_opened(key, channel, now)
            }
            RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnClose(channel)) => {
                self.chat_channel_closed(key, channel)
            }
            _ => {}
        }
    }

    fn on_message(&mut self, key: PeerKey, msg: RTCMessage, now: Instant) -> usize {
        match msg {
            RTCMessage::RtpPacket(track_id, pkt) => {
                let Some(tk) = self.peers.get(&key).and_then(|p| p.published(&track_id)) else {
                    // Not counted as audio or video: the kind of an unknown track is unknown.
                    METRICS.count_drop(DropReason::UnknownTrack, 1);
                    return 0;
                };
                self.forward(tk, &pkt, now)
            }
            RTCMessage::RtcpPacket(_, pkts) => {
                self.on_rtcp(key, &pkts, now);
                0
            }
            RTCMessage::DataChannelMessage(channel, msg) => {
                self.on_chat_frame(key, channel, msg, now);
                0
            }
            _ => 0,
        }
    }

    /// Asks the publisher of `tk` for a keyframe of `layer` (merged and throttled by the
    /// forwarder).
    pub(super) fn request_keyframe(&mut self, tk: TrackKey, layer: LayerIndex, now: Instant) {
        if let Some(request) = self.forwarder.request_keyframe(tk, layer, now) {
            self.send_pli(request, now);
        }
    }

    /// Asks for a keyframe of every video track `subscriber` receives (its connection came
    /// back after a restart or an outage: its decoders lost packets meanwhile).
    pub(super) fn refresh_subscriber(&mut self, subscriber: PeerKey, now: Instant) {
        let tracks: Vec<TrackKey> = self
            .forwarder
            .tracks()
            .filter(|(_, t)| t.downs.iter().any(|d| d.subscriber == subscriber))
            .map(|(k, _)| k)
            .collect();
        for tk in tracks {
            if let Some(request) = self.forwarder.request_keyframe_for(tk, subscriber, now) {
                self.send_pli(request, now);
            }
        }
    }

    /// Sends a PLI to a publisher (the forwarder decided it is due).
    pub(super) fn send_pli(
        &mut self,
        (publisher, receiver, ssrc): (PeerKey, RTCRtpReceiverId, u32),
        now: Instant,
    ) {
        if let Some(p) = self.peers.get_mut(&publisher) {
            debug!(parent: p.span(), ssrc, "PLI sent");
            p.send_pli(receiver, ssrc, now);
            METRICS.pli_out.inc();
        }
        self.mark_dirty(publisher);
    }

    /// The hot path: one publisher packet → every open subscriber leg, through the egress.
    fn forward(&mut self, tk: TrackKey, pkt: &Packet, now: Instant) -> usize {
        let outcome = self.forwarder.forward(tk, pkt, now, &mut self.out);
        let Some(kind) = outcome.kind else {
            METRICS.count_drop(DropReason::UnknownTrack, 1);
            return 0;
        };
        let Some(layer) = outcome.layer else {
            METRICS.count_drop(DropReason::UnknownLayer, 1);
            return 0;
        };
        if outcome.duplicate {
            METRICS.count_drop(DropReason::Duplicate, 1);
            return 0;
        }
        if outcome.keyframe {
            debug!(
                track = tk.0,
                layer,
                waiting = outcome.waiting_for_keyframe,
                forwarded = outcome.forwarded,
                "keyframe from publisher"
            );
        }
        if let Some((publisher, level)) = outcome.audio_level {
            self.speakers.observe(publisher, level, now);
        }
        let ki = kind_index(kind);
        self.counters.packets_in[ki] += 1;
        self.counters.bytes_in[ki] += pkt.payload.len() as u64;
        for (reason, n) in outcome.drops() {
            METRICS.count_drop(reason, n);
        }
        if outcome.waiting_for_keyframe > 0 {
            self.request_keyframe(tk, layer, now);
        }
        if outcome.switched > 0 {
            METRICS.layer_switches.inc_by(outcome.switched as u64);
        }
        let (mut sent, mut bytes) = (0, 0);
        let mut batch = std::mem::take(&mut self.out);
        for o in batch.drain(..) {
            let subscriber = o.subscriber;
            let Some(sub) = self.peers.get_mut(&subscriber) else {
                METRICS.count_drop(DropReason::WriteFailed, 1);
                continue;
            };
            match self.egress.write(sub.pc(), o, now) {
                Ok(len) => {
                    sent += 1;
                    bytes += len as u64;
                    if sub.mark_queued(Drain::Writes) {
                        self.dirty.push(subscriber);
                    }
                }
                Err(reason) => {
                    trace!(?reason, "egress refused a packet");
                    METRICS.count_drop(reason, 1);
                }
            }
        }
        self.out = batch;
        self.counters.packets_out[ki] += sent;
        self.counters.bytes_out[ki] += bytes;
        if kind == TrackKind::Video {
            self.counters.video_packets_by_layer[usize::from(layer).min(MAX_LAYERS - 1)] += sent;
        }
        sent as usize
    }
}
