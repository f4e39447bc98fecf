//! The per-room task: the one owner of a room's peers and forwarding plane.
//!
//! # The run loop
//! One input at a time — a datagram, a signaling command, or a timer — then every peer connection
//! that input touched is *driven*: its events, reads and writes are drained completely
//! (`poll_event`, `poll_read`, `poll_write`) before the next input. Reads from a publisher are
//! forwarded into subscribers' peer connections, which are then drained in turn, so a datagram's
//! whole fan-out reaches the socket before the loop waits again. The task then sleeps until the
//! next datagram, command, or the earliest deadline (peer connection timers, keyframe retries,
//! negotiation and disconnect timeouts).
//!
//! No locks: the room's state lives in this task alone; other tasks talk to it by channels.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn, Instrument};

use super::peer::{Peer, PeerError};
use super::registry::RoomsMap;
use super::{
    JoinAccepted, JoinError, ParticipantSnapshot, RoomCmd, RoomContext, RoomSnapshot, TrackSnapshot,
};
use crate::auth::Grant;
use crate::ids::{ParticipantId, PeerKey, RoomName};
use crate::media::downtrack::DownTrack;
use crate::media::forwarder::{Forwarder, Outgoing, TrackKey};
use crate::media::DropReason;
use crate::signal::protocol::{ErrorCode, ParticipantInfo, ServerMsg, TrackInfo, TrackKind};
use crate::telemetry::{kind_index, LocalCounters, METRICS};
use crate::transport::udp::{Datagram, Route};

/// Datagrams handled per wake-up before commands and timers get a turn.
const INBOX_BUDGET: usize = 64;
/// Shortest interval between two timer passes.
const MIN_TIMER_INTERVAL: Duration = Duration::from_millis(1);
/// Housekeeping period when nothing else is due.
const HOUSEKEEPING: Duration = Duration::from_millis(250);

fn pc_state_index(s: RTCPeerConnectionState) -> usize {
    match s {
        RTCPeerConnectionState::Connecting => 1,
        RTCPeerConnectionState::Connected => 2,
        RTCPeerConnectionState::Disconnected => 3,
        RTCPeerConnectionState::Failed => 4,
        RTCPeerConnectionState::Closed => 5,
        _ => 0,
    }
}

/// One room's state, owned by its task.
pub struct Room {
    name: RoomName,
    /// Distinguishes this room from a later one with the same name in the registry.
    generation: u64,
    ctx: RoomContext,
    rooms: RoomsMap,
    inbox_tx: mpsc::Sender<Datagram>,
    peers: HashMap<PeerKey, Peer>,
    by_id: HashMap<ParticipantId, PeerKey>,
    forwarder: Forwarder,
    next_key: u64,
    /// Reused per packet: the forwarder's output.
    out: Vec<Outgoing>,
    /// Reused: peers written to while handling the current input.
    dirty: Vec<PeerKey>,
    /// Datagrams to send, batched per wake-up (one `sendmmsg`).
    transmits: Vec<(SocketAddr, BytesMut)>,
    /// Read time of the oldest datagram whose forwarded packets are in `transmits`.
    oldest_forwarded: Option<Instant>,
    /// Hot-path counters, added to the shared metrics on the housekeeping tick.
    counters: LocalCounters,
    /// When timers were last run (see `MIN_TIMER_INTERVAL`).
    last_timer_pass: Instant,
}

impl Room {
    /// A room with no participants yet.
    pub fn new(
        name: RoomName,
        generation: u64,
        ctx: RoomContext,
        rooms: RoomsMap,
        inbox_tx: mpsc::Sender<Datagram>,
    ) -> Self {
        let forwarder = Forwarder::new(ctx.media.pli_throttle);
        METRICS.rooms.inc();
        Self {
            name,
            generation,
            ctx,
            rooms,
            inbox_tx,
            peers: HashMap::new(),
            by_id: HashMap::new(),
            forwarder,
            next_key: 1,
            out: Vec::with_capacity(64),
            dirty: Vec::with_capacity(16),
            transmits: Vec::with_capacity(256),
            oldest_forwarded: None,
            counters: LocalCounters::default(),
            last_timer_pass: Instant::now(),
        }
    }

    /// Runs until the last participant leaves; then deregisters the room.
    pub async fn run(
        mut self,
        mut cmds: mpsc::Receiver<RoomCmd>,
        mut inbox: mpsc::Receiver<Datagram>,
    ) {
        let span = info_span!("room", name = %self.name);
        async move {
            info!("room opened");
            loop {
                // At most one timer pass per millisecond, even if a peer connection keeps
                // reporting a deadline in the past.
                let deadline = self
                    .next_deadline(Instant::now())
                    .max(self.last_timer_pass + MIN_TIMER_INTERVAL);
                // Datagrams before the timer (a timer that is always due, e.g. a peer connection
                // reporting a past deadline, must not starve the inbox); due timers then run
                // after whatever woke us, so a busy inbox cannot starve RTCP, retransmissions and
                // timeouts either.
                tokio::select! {
                    biased;
                    cmd = cmds.recv() => match cmd {
                        Some(cmd) => self.on_cmd(cmd),
                        None => break,
                    },
                    Some(d) = inbox.recv() => {
                        self.on_datagram(d);
                        for _ in 1..INBOX_BUDGET {
                            match inbox.try_recv() {
                                Ok(d) => self.on_datagram(d),
                                Err(_) => break,
                            }
                        }
                    }
                    _ = tokio::time::sleep_until(deadline.into()) => {}
                }
                let now = Instant::now();
                if now >= deadline {
                    self.last_timer_pass = now;
                    self.on_timeout(now);
                }
                self.negotiate(Instant::now());
                self.send_transmits();
                if self.peers.is_empty() {
                    // Leave the directory first so new joins create a fresh room, then turn
                    // away joins that raced into this one.
                    self.rooms
                        .remove_if(&self.name, |_, h| h.generation == self.generation);
                    cmds.close();
                    while let Ok(cmd) = cmds.try_recv() {
                        if let RoomCmd::Join { reply, .. } = cmd {
                            let _ = reply.send(Err(JoinError::Closing));
                        }
                    }
                    break;
                }
            }
            info!("room closed");
        }
        .instrument(span)
        .await
    }

    /// Sends every queued datagram in one batch and records the forward latency.
    fn send_transmits(&mut self) {
        self.ctx.udp.send_batch(&mut self.transmits);
        if let Some(t) = self.oldest_forwarded.take() {
            METRICS.forward_latency.observe(t.elapsed().as_secs_f64());
        }
    }

    /// Datagrams the room wants sent (drained by the run loop; benchmarks discard them).
    pub fn transmits_mut(&mut self) -> &mut Vec<(SocketAddr, BytesMut)> {
        &mut self.transmits
    }

    /// Number of participants.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the room has no participants.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    fn next_deadline(&mut self, now: Instant) -> Instant {
        let mut deadline = now + HOUSEKEEPING;
        for p in self.peers.values_mut() {
            if p.timeout_stale {
                p.next_timeout = p.pc().poll_timeout();
                p.timeout_stale = false;
            }
            if let Some(t) = p.next_timeout {
                deadline = deadline.min(t);
            }
        }
        if let Some(t) = self.forwarder.next_deadline() {
            deadline = deadline.min(t);
        }
        deadline
    }

    // ----- inputs -------------------------------------------------------------------------

    /// The span of the participant with this id (disabled if unknown).
    fn span_of(&self, id: &ParticipantId) -> tracing::Span {
        self.by_id
            .get(id)
            .and_then(|k| self.peers.get(k))
            .map_or_else(tracing::Span::none, |p| p.span.clone())
    }

    /// Input: a signaling command.
    pub fn on_cmd(&mut self, cmd: RoomCmd) {
        let now = Instant::now();
        let span = match &cmd {
            RoomCmd::Offer { id, .. }
            | RoomCmd::Answer { id, .. }
            | RoomCmd::Candidate { id, .. }
            | RoomCmd::Leave { id } => self.span_of(id),
            _ => tracing::Span::none(),
        };
        let _entered = span.entered();
        match cmd {
            RoomCmd::Join {
                id,
                name,
                grant,
                signal,
                reply,
            } => {
                let result = self.join(id, name, grant, signal, now);
                let _ = reply.send(result);
            }
            RoomCmd::Offer { id, sdp } => self.on_offer(&id, sdp, now),
            RoomCmd::Answer { id, sdp } => self.on_answer(&id, sdp, now),
            RoomCmd::Candidate { id, candidate } => self.on_candidate(&id, candidate),
            RoomCmd::Leave { id } => {
                if let Some(&key) = self.by_id.get(&id) {
                    self.remove_peer(key, None, now);
                }
            }
            RoomCmd::Snapshot { reply } => {
                let _ = reply.send(self.snapshot(now));
            }
            #[cfg(test)]
            RoomCmd::Panic => panic!("injected fault"),
        }
        self.flush(now);
    }

    /// Input: a datagram for one of this room's peers.
    pub fn on_datagram(&mut self, d: Datagram) {
        let now = Instant::now();
        let Some(peer) = self.peers.get_mut(&d.peer) else {
            METRICS.count_drop(DropReason::UnknownPeer, 1);
            return;
        };
        if let Err(e) = peer.handle_datagram(d.from, d.data, now) {
            METRICS.count_drop(DropReason::BadDatagram, 1);
            tracing::trace!(%e, "datagram rejected");
        }
        self.mark_dirty(d.peer);
        if self.flush(now) > 0 && self.oldest_forwarded.is_none() {
            self.oldest_forwarded = Some(d.at);
        }
    }

    /// Input: time passed (drives timers, keyframe retries, timeouts).
    pub fn on_timeout(&mut self, now: Instant) {
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        let mut to_remove = Vec::new();
        for key in keys {
            let Some(peer) = self.peers.get_mut(&key) else {
                continue;
            };
            if peer.next_timeout.is_some_and(|t| t <= now) {
                if let Err(e) = peer.pc().handle_timeout(now) {
                    debug!(%e, participant = %peer.id, "handle_timeout failed");
                }
                Self::queue(&mut self.dirty, peer);
            }
            if let Some((_, sent)) = peer.offer_in_flight {
                if now.saturating_duration_since(sent) > self.ctx.media.negotiation_timeout {
                    to_remove.push((
                        key,
                        ErrorCode::NegotiationTimeout,
                        "no answer to the server offer",
                    ));
                }
            }
            if let Some(since) = peer.disconnected_since {
                if now.saturating_duration_since(since) > self.ctx.media.disconnect_timeout {
                    to_remove.push((key, ErrorCode::Removed, "media connection lost"));
                }
            }
        }
        self.forwarder.update_rates(now);
        self.counters.flush();
        for request in self.forwarder.due_keyframe_requests(now) {
            self.send_pli(request, now);
        }
        self.flush(now);
        for (key, code, why) in to_remove {
            info!(?code, why, "removing participant");
            self.remove_peer(key, Some((code, why)), now);
        }
        self.flush(now);
    }

    /// The room as the room API shows it.
    pub fn snapshot(&self, now: Instant) -> RoomSnapshot {
        let mut participants: Vec<ParticipantSnapshot> = self
            .peers
            .values()
            .map(|p| {
                let published = self
                    .forwarder
                    .tracks_of(p.key)
                    .into_iter()
                    .filter_map(|tk| self.forwarder.track(tk))
                    .map(|t| TrackSnapshot {
                        track_id: t.id.clone(),
                        kind: t.kind,
                        codec: t.codec.mime_type.clone(),
                        bitrate_in_bps: t.rate.bps(),
                        packets_in: t.packets_in,
                        subscribers: t.downs.len(),
                    })
                    .collect();
                let (subscribed_tracks, bitrate_out_bps) = self
                    .forwarder
                    .tracks()
                    .flat_map(|(_, t)| t.downs.iter())
                    .filter(|d| d.subscriber == p.key)
                    .fold((0, 0), |(n, bps), d| (n + 1, bps + d.rate.bps()));
                ParticipantSnapshot {
                    id: p.id.clone(),
                    name: p.name.as_str().to_owned(),
                    connection_state: p.state.to_string(),
                    joined_seconds: now.saturating_duration_since(p.joined_at).as_secs(),
                    negotiating: p.offer_in_flight.is_some(),
                    published,
                    subscribed_tracks,
                    bitrate_out_bps,
                }
            })
            .collect();
        participants.sort_by(|a, b| a.id.cmp(&b.id));
        RoomSnapshot {
            name: self.name.to_string(),
            participants,
        }
    }

    // ----- membership ---------------------------------------------------------------------

    fn join(
        &mut self,
        id: ParticipantId,
        name: crate::ids::DisplayName,
        grant: Grant,
        signal: mpsc::Sender<ServerMsg>,
        now: Instant,
    ) -> Result<JoinAccepted, JoinError> {
        // One session per identity: a second join (a reload, another device) replaces the first.
        if let Some(identity) = &grant.identity {
            let previous = self
                .peers
                .values()
                .find(|p| p.grant.identity.as_ref() == Some(identity))
                .map(|p| p.key);
            if let Some(old) = previous {
                info!(
                    identity,
                    "identity rejoined; replacing the previous session"
                );
                self.remove_peer(
                    old,
                    Some((
                        ErrorCode::Removed,
                        "replaced by a new session with the same identity",
                    )),
                    now,
                );
            }
        }
        if self.peers.len() >= self.ctx.limits.max_participants_per_room {
            return Err(JoinError::RoomFull);
        }
        let key = PeerKey(self.next_key);
        self.next_key += 1;
        let mut peer = Peer::new(
            key,
            id.clone(),
            name,
            grant,
            signal,
            self.ctx.advertised,
            now,
        )
        .map_err(|e| JoinError::PeerConnection(e.to_string()))?;
        self.ctx.demux.register(
            peer.ufrag.clone(),
            Route {
                inbox: self.inbox_tx.clone(),
                peer: key,
            },
        );
        METRICS.peer_connections[pc_state_index(peer.state)].inc();
        METRICS.participants.inc();

        // Existing tracks become pending legs of the newcomer (offered after its first offer).
        let existing: Vec<TrackKey> = self.forwarder.tracks().map(|(k, _)| k).collect();
        for tk in existing {
            self.attach(tk, &mut peer);
        }
        let participants = self.participant_infos(None);
        let info = ParticipantInfo {
            id: id.clone(),
            name: peer.name.as_str().to_owned(),
            tracks: vec![],
        };
        info!(participant = %id, name = peer.name.as_str(), "joined");
        self.peers.insert(key, peer);
        self.by_id.insert(id, key);
        self.mark_dirty(key);
        self.broadcast(key, ServerMsg::ParticipantJoined { participant: info });
        Ok(JoinAccepted { participants })
    }

    /// Members as others see them (optionally excluding one).
    fn participant_infos(&self, except: Option<PeerKey>) -> Vec<ParticipantInfo> {
        let mut list: Vec<ParticipantInfo> = self
            .peers
            .values()
            .filter(|p| Some(p.key) != except)
            .map(|p| ParticipantInfo {
                id: p.id.clone(),
                name: p.name.as_str().to_owned(),
                tracks: self
                    .forwarder
                    .tracks_of(p.key)
                    .into_iter()
                    .filter_map(|tk| self.forwarder.track(tk))
                    .map(|t| TrackInfo {
                        track_id: t.id.clone(),
                        kind: t.kind,
                    })
                    .collect(),
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// Sends `msg` to everyone but `except`; anyone who cannot take it is removed afterwards.
    fn broadcast(&mut self, except: PeerKey, msg: ServerMsg) {
        let mut stuck = Vec::new();
        for p in self.peers.values() {
            if p.key != except && !p.send(msg.clone()) {
                stuck.push(p.key);
            }
        }
        for key in stuck {
            warn!("signaling queue full or closed; removing participant");
            self.remove_peer(key, None, Instant::now());
        }
    }

    fn send_to(&mut self, key: PeerKey, msg: ServerMsg) {
        if let Some(code) = match &msg {
            ServerMsg::Error { code, .. } => Some(*code),
            _ => None,
        } {
            METRICS.signaling_error(code);
        }
        let ok = self.peers.get(&key).is_none_or(|p| p.send(msg));
        if !ok {
            self.remove_peer(key, None, Instant::now());
        }
    }

    /// Removes a participant: its tracks leave every subscriber (renegotiated), its legs are
    /// dropped, its ufrag is unrouted, its peer connection closed.
    fn remove_peer(&mut self, key: PeerKey, reason: Option<(ErrorCode, &str)>, _now: Instant) {
        let Some(mut peer) = self.peers.remove(&key) else {
            return;
        };
        self.by_id.remove(&peer.id);
        self.ctx.demux.unregister(peer.ufrag.clone());
        for tk in self.forwarder.tracks_of(key) {
            self.unpublish(tk);
        }
        self.forwarder.drop_subscriber(key);
        if let Some((code, message)) = reason {
            METRICS.signaling_error(code);
            let _ = peer.send(ServerMsg::error(code, message));
        }
        peer.close();
        while let Some(t) = peer.pc().poll_write() {
            self.transmits.push((t.transport.peer_addr, t.message));
        }
        METRICS.peer_connections[pc_state_index(peer.state)].dec();
        METRICS.participants.dec();
        info!(participant = %peer.id, "left");
        let id = peer.id.clone();
        drop(peer);
        self.broadcast(key, ServerMsg::ParticipantLeft { participant_id: id });
    }

    // ----- tracks -------------------------------------------------------------------------

    /// Adds a pending leg of track `tk` to `peer`.
    fn attach(&mut self, tk: TrackKey, peer: &mut Peer) {
        let Some(t) = self.forwarder.track(tk) else {
            return;
        };
        if t.publisher == peer.key || !peer.grant.can_subscribe {
            return;
        }
        let (publisher_id, track_id, kind) = (t.publisher_id.clone(), t.id.clone(), t.kind);
        let codec = t.codec.clone();
        match peer.add_down_track(&publisher_id, &track_id, kind, codec) {
            Ok((sender, ssrc)) => {
                peer.down_by_ssrc.insert(ssrc, tk);
                self.forwarder
                    .subscribe(tk, DownTrack::new(peer.key, sender, ssrc));
            }
            Err(e) => warn!(%e, track = %track_id, "could not add track for subscriber"),
        }
    }

    /// A publisher's receiver produced its first packet: publish it to the room.
    fn on_track_open(
        &mut self,
        key: PeerKey,
        init: rtc::peer_connection::event::RTCTrackEventInit,
    ) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if !peer.seen_receivers.insert(init.receiver_id) {
            return; // repeated after renegotiation
        }
        let published = peer.published.len();
        if !peer.grant.can_publish || published >= self.ctx.limits.max_tracks_per_participant {
            // Its packets then count as `unknown_track` drops; nothing is forwarded.
            warn!(participant = %peer.id, published, "track refused (no publish grant or track limit)");
            METRICS.count_drop(DropReason::NotPermitted, 1);
            return;
        }
        let Some(receiver) = peer.pc().rtp_receiver(init.receiver_id) else {
            return;
        };
        let kind = match receiver.track().kind() {
            RtpCodecKind::Audio => TrackKind::Audio,
            RtpCodecKind::Video => TrackKind::Video,
            _ => return,
        };
        // The codec the publisher actually sends (known: OnOpen follows the first packet).
        let Some(codec) = receiver.track().codec(init.ssrc).cloned() else {
            return;
        };
        let Some(rtp_map) = peer.receiver_rtp_map(init.receiver_id) else {
            return;
        };
        let publisher_id = peer.id.clone();
        let tk = self.forwarder.publish(
            key,
            publisher_id.clone(),
            kind,
            init.receiver_id,
            init.ssrc,
            codec,
            rtp_map,
        );
        peer.published.insert(init.track_id.clone(), tk);
        METRICS.tracks[kind_index(kind)].inc();
        let track_id = match self.forwarder.track(tk) {
            Some(t) => t.id.clone(),
            None => return,
        };
        info!(participant = %publisher_id, track = %track_id, ?kind, "track published");
        let others: Vec<PeerKey> = self.peers.keys().copied().filter(|k| *k != key).collect();
        for k in others {
            if let Some(mut sub) = self.peers.remove(&k) {
                self.attach(tk, &mut sub);
                self.peers.insert(k, sub);
            }
        }
        self.broadcast(
            key,
            ServerMsg::TrackPublished {
                participant_id: publisher_id,
                track_id,
                kind,
            },
        );
    }

    /// Removes a published track from the room and from every subscriber.
    fn unpublish(&mut self, tk: TrackKey) {
        let Some(t) = self.forwarder.unpublish(tk) else {
            return;
        };
        METRICS.tracks[kind_index(t.kind)].dec();
        for d in &t.downs {
            if let Some(sub) = self.peers.get_mut(&d.subscriber) {
                sub.remove_down_track(d.sender, d.ssrc);
            }
        }
        if let Some(p) = self.peers.get_mut(&t.publisher) {
            p.published.retain(|_, v| *v != tk);
        }
        info!(participant = %t.publisher_id, track = %t.id, "track unpublished");
        self.broadcast(
            t.publisher,
            ServerMsg::TrackUnpublished {
                participant_id: t.publisher_id.clone(),
                track_id: t.id.clone(),
            },
        );
    }

    // ----- negotiation --------------------------------------------------------------------

    fn on_offer(&mut self, id: &ParticipantId, sdp: String, now: Instant) {
        let Some(&key) = self.by_id.get(id) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if peer.offer_in_flight.is_some() {
            // The server is impolite: its offer wins; the browser rolls back and re-offers.
            self.send_to(
                key,
                ServerMsg::error(
                    ErrorCode::OfferCollision,
                    "a server offer is outstanding; answer it first",
                ),
            );
            return;
        }
        let reply = match peer.apply_offer(sdp, now) {
            Ok(answer) => ServerMsg::Answer { sdp: answer },
            Err(PeerError::BadSdp(e)) => {
                ServerMsg::error(ErrorCode::BadSdp, format!("offer rejected: {e}"))
            }
            Err(e) => ServerMsg::error(
                ErrorCode::BadSdp,
                format!("offer could not be applied: {e}"),
            ),
        };
        debug!(participant = %id, "client offer handled");
        self.mark_dirty(key);
        self.send_to(key, reply);
    }

    fn on_answer(&mut self, id: &ParticipantId, sdp: String, now: Instant) {
        let Some(&key) = self.by_id.get(id) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let generation = match peer.apply_answer(sdp, now) {
            Ok(g) => g,
            Err(PeerError::UnexpectedAnswer) => {
                self.send_to(
                    key,
                    ServerMsg::error(
                        ErrorCode::UnexpectedAnswer,
                        "no server offer is outstanding",
                    ),
                );
                return;
            }
            Err(e) => {
                self.send_to(
                    key,
                    ServerMsg::error(ErrorCode::BadSdp, format!("answer rejected: {e}")),
                );
                return;
            }
        };
        debug!(participant = %id, generation, "answer applied");
        Self::queue(&mut self.dirty, peer);
        if !peer.media_ready {
            // Packets written before DTLS has set the SRTP keys are dropped inside the peer
            // connection, keyframe included, after the keyframe gate has opened: the subscriber
            // would then wait for the next keyframe. Open once the connection is up.
            peer.answered_unopened = Some(generation);
            return;
        }
        self.open_answered(key, generation, now);
    }

    /// Opens the legs of `key` in the answered offer `generation`; video legs ask their
    /// publisher for a keyframe.
    fn open_answered(&mut self, key: PeerKey, generation: u64, now: Instant) {
        for (tk, sender) in self.forwarder.answered(key, generation) {
            let Some(sub_map) = self
                .peers
                .get_mut(&key)
                .and_then(|p| p.sender_rtp_map(sender))
            else {
                continue;
            };
            let needs_keyframe = self.forwarder.open(tk, key, &sub_map);
            debug!(generation, needs_keyframe, "subscriber leg open");
            if needs_keyframe {
                self.request_keyframe(tk, now);
            }
        }
    }

    fn on_candidate(
        &mut self,
        id: &ParticipantId,
        candidate: Option<crate::signal::protocol::CandidateInit>,
    ) {
        let Some(&key) = self.by_id.get(id) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&key) else {
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
        if let Err(e) = peer.add_remote_candidate(init) {
            // ICE-lite learns addresses from connectivity checks; a bad candidate is harmless.
            debug!(%e, "remote candidate ignored");
        }
        Self::queue(&mut self.dirty, peer);
    }

    /// Sends a server offer to every peer with batched changes and none in flight; call after
    /// each input.
    pub fn negotiate(&mut self, now: Instant) {
        let ready: Vec<PeerKey> = self
            .peers
            .values()
            .filter(|p| p.needs_offer && p.client_negotiated && p.offer_in_flight.is_none())
            .map(|p| p.key)
            .collect();
        for key in ready {
            let Some(peer) = self.peers.get_mut(&key) else {
                continue;
            };
            match peer.create_offer(now) {
                Ok((generation, sdp)) => {
                    Self::queue(&mut self.dirty, peer);
                    self.forwarder.mark_offered(key, generation);
                    debug!(participant = %peer.id, generation, "server offer sent");
                    self.send_to(key, ServerMsg::Offer { sdp });
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

    fn request_keyframe(&mut self, tk: TrackKey, now: Instant) {
        if let Some(request) = self.forwarder.request_keyframe(tk, now) {
            self.send_pli(request, now);
        }
    }

    /// Sends a PLI to a publisher (the forwarder decided it is due).
    fn send_pli(
        &mut self,
        (publisher, receiver, ssrc): (PeerKey, rtc::rtp_transceiver::RTCRtpReceiverId, u32),
        now: Instant,
    ) {
        if let Some(p) = self.peers.get_mut(&publisher) {
            debug!(participant = %p.id, ssrc, "PLI sent");
            p.send_pli(receiver, ssrc, now);
            METRICS.pli_out.inc();
            Self::queue(&mut self.dirty, p);
        }
    }

    // ----- driving peer connections -------------------------------------------------------

    /// Queues a peer to be driven (once).
    fn queue(dirty: &mut Vec<PeerKey>, peer: &mut Peer) {
        if !peer.dirty {
            peer.dirty = true;
            dirty.push(peer.key);
        }
    }

    /// Queues the peer with this key to be driven.
    fn mark_dirty(&mut self, key: PeerKey) {
        if let Some(peer) = self.peers.get_mut(&key) {
            Self::queue(&mut self.dirty, peer);
        }
    }

    /// Drives every dirty peer until nothing is left to drain. Returns the number of packets
    /// forwarded to subscribers.
    fn flush(&mut self, now: Instant) -> usize {
        let mut forwarded = 0;
        while let Some(key) = self.dirty.pop() {
            forwarded += self.drive(key, now);
        }
        forwarded
    }

    /// Drains one peer's events, reads and writes (in that order).
    fn drive(&mut self, key: PeerKey, now: Instant) -> usize {
        let mut forwarded = 0;
        if let Some(peer) = self.peers.get_mut(&key) {
            peer.dirty = false;
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
                self.transmits.push((t.transport.peer_addr, t.message));
            }
            peer.timeout_stale = true;
        }
        forwarded
    }

    fn on_event(&mut self, key: PeerKey, ev: RTCPeerConnectionEvent, now: Instant) {
        let span = self
            .peers
            .get(&key)
            .map_or_else(tracing::Span::none, |p| p.span.clone());
        let _entered = span.entered();
        match ev {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                let Some(peer) = self.peers.get_mut(&key) else {
                    return;
                };
                METRICS.peer_connections[pc_state_index(peer.state)].dec();
                METRICS.peer_connections[pc_state_index(state)].inc();
                peer.state = state;
                debug!(participant = %peer.id, %state, "connection state");
                match state {
                    RTCPeerConnectionState::Disconnected => {
                        peer.disconnected_since.get_or_insert(now);
                    }
                    RTCPeerConnectionState::Connected => {
                        peer.disconnected_since = None;
                        peer.media_ready = true;
                        if let Some(generation) = peer.answered_unopened.take() {
                            self.open_answered(key, generation, now);
                        }
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        self.remove_peer(
                            key,
                            Some((ErrorCode::Removed, "media connection failed")),
                            now,
                        );
                    }
                    _ => {}
                }
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                self.on_track_open(key, init)
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose(track_id)) => {
                let tk = self
                    .peers
                    .get(&key)
                    .and_then(|p| p.published.get(&track_id).copied());
                if let Some(tk) = tk {
                    self.unpublish(tk);
                }
            }
            _ => {}
        }
    }

    fn on_message(&mut self, key: PeerKey, msg: RTCMessage, now: Instant) -> usize {
        match msg {
            RTCMessage::RtpPacket(track_id, pkt) => {
                let Some(tk) = self
                    .peers
                    .get(&key)
                    .and_then(|p| p.published.get(&track_id).copied())
                else {
                    METRICS.count_drop(DropReason::UnknownTrack, 1);
                    return 0;
                };
                self.forward(tk, &pkt, now)
            }
            RTCMessage::RtcpPacket(_, pkts) => {
                for p in &pkts {
                    let any = p.as_any();
                    if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                        METRICS.pli_in.inc();
                        self.keyframe_for_subscriber(key, pli.media_ssrc, now);
                    } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                        METRICS.pli_in.inc();
                        for e in &fir.fir {
                            self.keyframe_for_subscriber(key, e.ssrc, now);
                        }
                    } else if any.is::<TransportLayerNack>() {
                        METRICS.nack_in.inc();
                    }
                }
                0
            }
            _ => 0,
        }
    }

    /// A subscriber asked for a keyframe on one of its down tracks.
    fn keyframe_for_subscriber(&mut self, key: PeerKey, ssrc: u32, now: Instant) {
        let tk = self
            .peers
            .get(&key)
            .and_then(|p| p.down_by_ssrc.get(&ssrc).copied());
        if let Some(tk) = tk {
            self.request_keyframe(tk, now);
        }
    }

    /// The hot path: one publisher packet → every open subscriber leg.
    fn forward(&mut self, tk: TrackKey, pkt: &rtc::rtp::packet::Packet, now: Instant) -> usize {
        self.out.clear();
        let outcome = self.forwarder.forward(tk, pkt, &mut self.out);
        if outcome.keyframe {
            debug!(
                track = tk.0,
                forwarded = outcome.forwarded,
                "keyframe from publisher"
            );
        }
        let ki = kind_index(outcome.kind.unwrap_or(TrackKind::Video));
        self.counters.packets_in[ki] += 1;
        self.counters.bytes_in[ki] += pkt.payload.len() as u64;
        if outcome.dropped > 0 {
            if let Some(r) = outcome.last_drop {
                METRICS.count_drop(r, outcome.dropped as u64);
            }
        }
        if outcome.waiting_for_keyframe > 0 {
            METRICS.count_drop(
                DropReason::WaitingForKeyframe,
                outcome.waiting_for_keyframe as u64,
            );
            self.request_keyframe(tk, now);
        }
        let mut sent = 0usize;
        let mut bytes = 0u64;
        let mut out = std::mem::take(&mut self.out);
        for o in out.drain(..) {
            let Some(sub) = self.peers.get_mut(&o.subscriber) else {
                continue;
            };
            let Some(mut sender) = sub.pc().rtp_sender(o.sender) else {
                METRICS.count_drop(DropReason::WriteFailed, 1);
                continue;
            };
            let len = o.packet.payload.len() as u64;
            match sender.write_rtp(now, o.packet) {
                Ok(()) => {
                    sent += 1;
                    bytes += len;
                    Self::queue(&mut self.dirty, sub);
                }
                Err(e) => {
                    METRICS.count_drop(DropReason::WriteFailed, 1);
                    tracing::trace!(%e, "write_rtp failed");
                }
            }
        }
        self.out = out;
        self.counters.packets_out[ki] += sent as u64;
        self.counters.bytes_out[ki] += bytes;
        sent
    }
}

impl Drop for Room {
    /// Runs on normal exit and when the task panics: nothing of the room may outlive it.
    fn drop(&mut self) {
        self.counters.flush();
        for (_, mut peer) in self.peers.drain() {
            self.ctx.demux.unregister(peer.ufrag.clone());
            METRICS.peer_connections[pc_state_index(peer.state)].dec();
            METRICS.participants.dec();
            let _ = peer.send(ServerMsg::error(ErrorCode::Removed, "the room was closed"));
            peer.close();
        }
        for (_, t) in self.forwarder.tracks() {
            METRICS.tracks[kind_index(t.kind)].dec();
        }
        self.rooms
            .remove_if(&self.name, |_, h| h.generation == self.generation);
        METRICS.rooms.dec();
    }
}
