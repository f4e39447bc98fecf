//! A room's state and its three inputs, sans-IO: `on_cmd(now, …)`, `on_datagram(now, …)` and
//! `on_timeout(now)`. The caller (the room task, a test, a benchmark) supplies the time and
//! sends what [`Room::transmits_mut`] holds; nothing here reads a clock or touches a socket.
//!
//! Each input is handled by the job it belongs to — [`membership`](super::membership),
//! [`tracks`](super::tracks), [`negotiation`](super::negotiation) — and every peer connection
//! it touched is then driven ([`drive`](super::drive)) until its queues are empty.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tracing::info;

use super::admin::RoomOptions;
use super::chat::Chat;
use super::peer::{Drain, Peer};
use super::quality::Links;
use super::{Role, RoomCmd, RoomSettings};
use crate::ids::{ParticipantId, PeerKey, RoomName};
use crate::media::egress::Egress;
use crate::media::feedback::Feedback;
use crate::media::forwarder::{Forwarder, Outgoing};
use crate::media::speaker::SpeakerObserver;
use crate::signal::protocol::{ErrorCode, ServerMsg};
use crate::telemetry::{kind_index, DropReason, LocalCounters, METRICS};
use crate::transport::tcp::TcpLinks;
use crate::transport::udp::{Datagram, DemuxHandle, RoomInbox};
use crate::webhooks::{EventKind, ParticipantRef, TrackRef, WebhookEvent};

/// Housekeeping period when nothing else is due (rates, counters flushed to the metrics).
pub const HOUSEKEEPING: Duration = Duration::from_millis(250);

/// How long a WHIP or WHEP session may take to connect its media before it is removed (its
/// client has no signaling channel to notice otherwise).
pub const HTTP_SESSION_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Queues what a peer connection produced for the socket (`udp`) or ICE-TCP connection
/// (`tcp`) it belongs to. Takes the two queues, not the room, so it can be called while a peer
/// is borrowed.
pub(super) fn push_transmit(
    udp: &mut Vec<(SocketAddr, BytesMut)>,
    tcp: &mut Vec<(SocketAddr, BytesMut)>,
    t: rtc::shared::TaggedBytesMut,
) {
    if t.transport.transport_protocol == rtc::shared::TransportProtocol::TCP {
        tcp.push((t.transport.peer_addr, t.message));
    } else {
        udp.push((t.transport.peer_addr, t.message));
    }
}

/// One room: its peers, its forwarding plane, what it wants sent.
pub struct Room {
    pub(super) name: RoomName,
    pub(super) settings: RoomSettings,
    /// The server drains: sessions whose socket dropped are not waited for.
    pub(super) draining: bool,
    pub(super) demux: DemuxHandle,
    /// This room's inbox (registered with the demux for each peer's ufrag).
    pub(super) inbox: RoomInbox,
    pub(super) peers: HashMap<PeerKey, Peer>,
    pub(super) by_id: HashMap<ParticipantId, PeerKey>,
    pub(super) forwarder: Forwarder,
    pub(super) egress: Egress,
    /// Reused per inbound packet: the forwarder's output.
    pub(super) out: Vec<Outgoing>,
    pub(super) next_key: u64,
    /// Peers to drive before the input returns (each queued once, see `Peer::mark_queued`).
    pub(super) dirty: Vec<PeerKey>,
    /// Datagrams to send, batched per wake-up (one `sendmmsg`).
    pub(super) transmits: Vec<(SocketAddr, BytesMut)>,
    /// Packets for peers on ICE-TCP, sent through `tcp_links` per wake-up.
    pub(super) tcp_transmits: Vec<(SocketAddr, BytesMut)>,
    /// The ICE-TCP connections of this room's peers.
    pub(super) tcp_links: TcpLinks,
    /// Read time of the oldest datagram whose forwarded packets are in `transmits`.
    pub(super) oldest_forwarded: Option<Instant>,
    /// Hot-path counters, added to the shared metrics on the housekeeping tick.
    pub(super) counters: LocalCounters,
    /// Some peer's negotiation state changed since `negotiate` last looked (so a datagram
    /// does not scan every peer).
    pub(super) negotiate_due: bool,
    /// When bandwidth allocation runs next (`None`: at the next timeout).
    pub(super) next_allocation: Option<Instant>,
    /// Legs this room has paused for bandwidth (its share of the `paused_legs` gauge).
    pub(super) paused_legs: usize,
    /// Reused per inbound RTCP packet: what it asks for.
    pub(super) feedback: Vec<Feedback>,
    /// When the legs' sender reports are due (`None`: at the next timeout).
    pub(super) next_reports: Option<Instant>,
    /// Who is speaking.
    pub(super) speakers: SpeakerObserver,
    /// Publishers by how recently they were among the active speakers (viewers' slots follow).
    pub(super) speaker_order: Vec<PeerKey>,
    /// Options set through the room API.
    pub(super) options: RoomOptions,
    /// Since when nobody is in the room (its empty timeout runs from here).
    pub(super) empty_since: Option<Instant>,
    /// Closed through the room API.
    pub(super) closed: bool,
    /// Events for the webhooks, taken by the task after each input.
    pub(super) events: Vec<WebhookEvent>,
    /// Chat over the members' data channels.
    pub(super) chat: Chat,
    /// Each member's connection quality.
    pub(super) quality: Links,
}

impl Room {
    /// A room with no participants yet. `inbox` is where the demux sends its datagrams.
    pub fn new(
        name: RoomName,
        settings: RoomSettings,
        demux: DemuxHandle,
        inbox: RoomInbox,
    ) -> Self {
        METRICS.rooms.inc();
        Self {
            forwarder: Forwarder::new(settings.media.pli_throttle),
            name,
            settings,
            draining: false,
            demux,
            inbox,
            peers: HashMap::new(),
            by_id: HashMap::new(),
            egress: Egress,
            out: Vec::with_capacity(64),
            next_key: 1,
            dirty: Vec::with_capacity(16),
            transmits: Vec::with_capacity(256),
            tcp_transmits: Vec::new(),
            tcp_links: TcpLinks::default(),
            oldest_forwarded: None,
            counters: LocalCounters::default(),
            negotiate_due: false,
            next_allocation: None,
            paused_legs: 0,
            feedback: Vec::with_capacity(32),
            next_reports: None,
            speakers: SpeakerObserver::default(),
            speaker_order: Vec::new(),
            options: RoomOptions::default(),
            empty_since: None,
            closed: false,
            events: Vec::new(),
            chat: Chat::default(),
            quality: Links::default(),
        }
    }

    /// The webhook events since the last call.
    pub fn take_events(&mut self) -> Vec<WebhookEvent> {
        std::mem::take(&mut self.events)
    }

    /// Records a webhook event about this room.
    pub(super) fn event(
        &mut self,
        kind: EventKind,
        participant: Option<ParticipantRef>,
        track: Option<TrackRef>,
    ) {
        let mut e = WebhookEvent::new(kind, self.name.as_str());
        e.participant = participant;
        e.track = track;
        self.events.push(e);
    }

    /// A participant as webhooks describe it.
    pub(super) fn participant_ref(peer: &Peer) -> ParticipantRef {
        ParticipantRef {
            id: peer.id().to_string(),
            name: peer.name().as_str().to_owned(),
            identity: peer.grant().identity.clone(),
            kind: peer.role().as_str().to_owned(),
        }
    }

    /// The room's name.
    pub fn name(&self) -> &RoomName {
        &self.name
    }

    /// Datagrams the room wants sent; the caller sends (or discards) and clears them.
    pub fn transmits_mut(&mut self) -> &mut Vec<(SocketAddr, BytesMut)> {
        &mut self.transmits
    }

    /// Hands the packets for ICE-TCP peers to their connections (non-blocking: a connection
    /// that cannot keep up drops, counted).
    pub fn send_tcp(&mut self) {
        if !self.tcp_transmits.is_empty() {
            self.tcp_links.send_all(&mut self.tcp_transmits);
        }
    }

    /// Read time of the oldest datagram forwarded since the last call (for the latency metric).
    pub fn take_oldest_forwarded(&mut self) -> Option<Instant> {
        self.oldest_forwarded.take()
    }

    /// Number of participants.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the room has no participants.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The earliest time `on_timeout` has work: peer connection timers, keyframe retries,
    /// negotiation and disconnect timeouts, housekeeping.
    pub fn next_deadline(&mut self, now: Instant) -> Instant {
        let media = &self.settings.media;
        let mut deadline = now + HOUSEKEEPING;
        for p in self.peers.values_mut() {
            let timers = [
                p.next_timeout(),
                p.negotiation().deadline(media.negotiation_timeout),
                p.presence().deadline(self.settings.resume_grace),
            ];
            for t in timers.into_iter().flatten() {
                deadline = deadline.min(t);
            }
        }
        if let Some(t) = self.forwarder.next_deadline() {
            deadline = deadline.min(t);
        }
        for p in self.peers.values() {
            if let Some(t) = p.probe_deadline(now) {
                deadline = deadline.min(t);
            }
        }
        let timers = [
            self.next_allocation,
            self.next_reports,
            self.speakers.next_deadline(),
        ];
        for t in timers.into_iter().flatten() {
            deadline = deadline.min(t);
        }
        deadline
    }

    /// The room-local key of a participant (the demux tags its datagrams with it).
    pub fn key_of(&self, id: &ParticipantId) -> Option<PeerKey> {
        self.by_id.get(id).copied()
    }

    /// The span of the participant with this id (disabled if unknown).
    fn span_of(&self, id: &ParticipantId) -> tracing::Span {
        self.key_of(id)
            .and_then(|k| self.peers.get(&k))
            .map_or_else(tracing::Span::none, |p| p.span().clone())
    }

    /// Input: a signaling command.
    pub fn on_cmd(&mut self, now: Instant, cmd: RoomCmd) {
        let span = match &cmd {
            RoomCmd::Offer { id, .. }
            | RoomCmd::SelfMute { id, .. }
            | RoomCmd::Answer { id, .. }
            | RoomCmd::Candidate { id, .. }
            | RoomCmd::TrackView { id, .. }
            | RoomCmd::Leave { id }
            | RoomCmd::Detach { id }
            | RoomCmd::Resume { id, .. } => self.span_of(id),
            _ => tracing::Span::none(),
        };
        let _entered = span.entered();
        match cmd {
            RoomCmd::Join {
                id,
                name,
                grant,
                role,
                signal,
                reply,
            } => {
                let result = self.join(id, name, grant, role, signal, now);
                let _ = reply.send(result);
            }
            RoomCmd::Offer { id, sdp, sources } => {
                if let Some(p) = self.key_of(&id).and_then(|k| self.peers.get_mut(&k)) {
                    p.claims_mut().set_sources(sources);
                }
                self.on_offer(&id, sdp, now)
            }
            RoomCmd::SelfMute {
                id,
                track_id,
                muted,
            } => self.self_mute(&id, &track_id, muted, now),
            RoomCmd::Answer { id, sdp } => self.on_answer(&id, sdp, now),
            RoomCmd::Candidate { id, candidate } => self.on_candidate(&id, candidate),
            RoomCmd::TrackView { id, track_id, view } => {
                self.on_track_view(&id, &track_id, view);
                // Applied at the next allocation; no negotiation change.
                return;
            }
            RoomCmd::Leave { id } => {
                if let Some(key) = self.key_of(&id) {
                    self.remove_peer(key, None, now);
                }
            }
            RoomCmd::Detach { id } => self.detach(&id, now),
            RoomCmd::Resume {
                id,
                token,
                signal,
                reply,
            } => {
                let result = self.resume(&id, &token, signal, now);
                let _ = reply.send(result);
            }
            RoomCmd::Drain => {
                self.draining = true;
                self.expire_detached(now);
            }
            RoomCmd::Snapshot { reply } => {
                let _ = reply.send(self.snapshot(now));
            }
            RoomCmd::Configure { options } => self.configure(options, now),
            RoomCmd::Close { reason } => self.close(&reason, now),
            RoomCmd::Remove { id, reason, reply } => {
                let _ = reply.send(self.remove(&id, &reason, now));
            }
            RoomCmd::Mute {
                id,
                track_id,
                muted,
                reply,
            } => {
                let _ = reply.send(self.mute(&id, &track_id, muted, now));
            }
            RoomCmd::Update {
                id,
                name,
                metadata,
                reply,
            } => {
                let _ = reply.send(self.update(&id, name, metadata, now));
            }
            RoomCmd::SendData {
                topic,
                payload,
                to,
                reply,
            } => {
                let _ = reply.send(self.send_data(topic, payload, &to, now));
            }
            #[cfg(test)]
            RoomCmd::Panic => panic!("injected fault"),
        }
        self.negotiate_due = true;
        self.flush(now);
        self.negotiate(now);
    }

    /// Input: a datagram for one of this room's peers.
    pub fn on_datagram(&mut self, now: Instant, d: Datagram) {
        let Some(peer) = self.peers.get_mut(&d.peer) else {
            // Routed to this room just before its peer left.
            METRICS.count_drop(DropReason::UnknownPeer, 1);
            return;
        };
        if let Some(link) = &d.tcp {
            self.tcp_links.learn(d.from, link);
        }
        if let Err(e) = peer.handle_datagram(d.from, d.data, d.tcp.is_some(), now) {
            METRICS.count_drop(DropReason::BadDatagram, 1);
            tracing::trace!(%e, "datagram rejected");
        }
        self.mark_dirty(d.peer);
        if self.flush(now) > 0 && self.oldest_forwarded.is_none() {
            self.oldest_forwarded = Some(d.at);
        }
        self.negotiate(now);
    }

    /// Input: time passed (peer connection timers, keyframe retries, timeouts, housekeeping).
    pub fn on_timeout(&mut self, now: Instant) {
        let media = &self.settings.media;
        let mut to_remove = Vec::new();
        for (key, peer) in self.peers.iter_mut() {
            if peer.handle_timeout(now) && peer.mark_queued(Drain::Full) {
                self.dirty.push(*key);
            }
            if peer.signal_closed() {
                // The session ended without saying so (its `Detach` may still be queued).
                peer.presence_mut().detach(now);
            }
            // An answer cannot come while the socket is away: the grace period rules then.
            if !peer.presence().is_detached()
                && peer.negotiation().overdue(now, media.negotiation_timeout)
            {
                to_remove.push((
                    *key,
                    ErrorCode::NegotiationTimeout,
                    "no answer to the server offer",
                ));
            } else if peer.disconnected_longer_than(now, media.disconnect_timeout) {
                to_remove.push((*key, ErrorCode::Removed, "media connection lost"));
            } else if *peer.role() != Role::Member
                && peer.never_connected_for(now, HTTP_SESSION_CONNECT_TIMEOUT)
            {
                // WHIP/WHEP clients have no signaling to notice a session that never came up.
                to_remove.push((*key, ErrorCode::Removed, "media never connected"));
            }
        }
        self.forwarder.update_rates(now);
        self.counters.flush();
        self.tcp_links.prune();
        self.allocate_if_due(now);
        self.send_probes(now);
        self.send_reports_if_due(now);
        self.announce_speakers(now);
        self.evaluate_quality(now);
        for request in self.forwarder.due_keyframe_requests(now) {
            self.send_pli(request, now);
        }
        self.flush(now);
        self.expire_detached(now);
        for (key, code, why) in to_remove {
            let span = self
                .peers
                .get(&key)
                .map_or_else(tracing::Span::none, |p| p.span().clone());
            let _entered = span.enter();
            info!(?code, why, "removing participant");
            self.remove_peer(key, Some((code, why)), now);
        }
        self.flush(now);
        self.negotiate(now);
    }
}

impl Drop for Room {
    /// Runs on normal exit and when the task panics: nothing of the room may outlive it.
    fn drop(&mut self) {
        self.counters.flush();
        for (_, mut peer) in self.peers.drain() {
            self.demux.unregister(peer.ufrag().to_owned());
            METRICS.peer_connections[super::drive::pc_state_index(peer.state())].dec();
            METRICS.participants.dec();
            let _ = peer.send(ServerMsg::error(ErrorCode::Removed, "the room was closed"));
            peer.close();
        }
        for (_, t) in self.forwarder.tracks() {
            METRICS.tracks[kind_index(t.kind)].dec();
        }
        METRICS.paused_legs.sub(self.paused_legs as i64);
        METRICS.rooms.dec();
    }
}
