//! Chat: messages a member sends on its `confab` data channel, stamped by the room with the
//! sender's identity and time and relayed to every member's channel. Sans-IO: the time comes in
//! as `now`, Unix time from the room's [`WallClock`](super::WallClock).
//!
//! A sender needs the `canPublishData` grant and is held to a burst of [`BURST`] messages, then
//! one per [`REFILL`]. The last [`HISTORY`] messages are kept for members whose channel opens
//! later. A member whose channel has more than [`MAX_BUFFERED`] bytes unsent (a stalled link)
//! misses messages rather than growing the server's memory; the history fills the gap when it
//! reconnects.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rtc::data_channel::{RTCDataChannelId, RTCDataChannelMessage};
use tracing::debug;

use super::state::Room;
use super::Role;
use crate::ids::PeerKey;
use crate::signal::chat::{self, ChatMessage, Rejection};
use crate::telemetry::METRICS;

/// Messages kept for late joiners.
pub const HISTORY: usize = 50;
/// Messages a member may send at once.
pub const BURST: u32 = 5;
/// Time to earn one more message.
pub const REFILL: Duration = Duration::from_secs(1);
/// Unsent bytes on a member's channel beyond which it misses messages.
pub const MAX_BUFFERED: usize = 256 * 1024;

/// A sender's allowance (a token bucket on the room's clock).
#[derive(Debug, Clone, Copy)]
struct Allowance {
    tokens: u32,
    since: Instant,
}

impl Allowance {
    fn new(now: Instant) -> Self {
        Self {
            tokens: BURST,
            since: now,
        }
    }

    /// Takes one message's worth, or says how long until one is earned.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let earned = now.saturating_duration_since(self.since).as_nanos() / REFILL.as_nanos();
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(earned).min(BURST);
            self.since += REFILL * earned.min(BURST);
            if self.tokens == BURST {
                self.since = now;
            }
        }
        if self.tokens == 0 {
            return Err((self.since + REFILL).saturating_duration_since(now));
        }
        self.tokens -= 1;
        Ok(())
    }
}

/// The room's chat: history, each member's channel and allowance.
#[derive(Debug, Default)]
pub struct Chat {
    history: VecDeque<ChatMessage>,
    next_id: u64,
    channels: HashMap<PeerKey, RTCDataChannelId>,
    allowances: HashMap<PeerKey, Allowance>,
}

impl Chat {
    /// Forgets a member that left.
    pub fn forget(&mut self, key: PeerKey) {
        self.channels.remove(&key);
        self.allowances.remove(&key);
    }

    /// The messages kept, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &ChatMessage> {
        self.history.iter()
    }

    fn record(&mut self, message: ChatMessage) -> &ChatMessage {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(message);
        &self.history[self.history.len() - 1]
    }
}

impl Room {
    /// A member's data channel opened: if it is the chat channel, the member gets the history.
    pub(super) fn chat_channel_opened(
        &mut self,
        key: PeerKey,
        channel: RTCDataChannelId,
        now: Instant,
    ) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if *peer.role() != Role::Member {
            return;
        }
        let label = peer
            .pc()
            .data_channel(channel)
            .map(|dc| dc.label().to_owned());
        if label.as_deref() != Some(chat::CHANNEL_LABEL) {
            debug!(parent: peer.span(), ?label, "data channel ignored");
            return;
        }
        debug!(parent: peer.span(), channel, "chat channel open");
        self.chat.channels.insert(key, channel);
        let frame = chat::history_frame(self.chat.history());
        self.chat_send(key, frame, now);
    }

    /// A member's data channel closed.
    pub(super) fn chat_channel_closed(&mut self, key: PeerKey, channel: RTCDataChannelId) {
        if self.chat.channels.get(&key) == Some(&channel) {
            self.chat.channels.remove(&key);
        }
    }

    /// A frame on a member's data channel.
    pub(super) fn on_chat_frame(
        &mut self,
        key: PeerKey,
        channel: RTCDataChannelId,
        msg: RTCDataChannelMessage,
        now: Instant,
    ) {
        if self.chat.channels.get(&key) != Some(&channel) {
            return;
        }
        let Some(peer) = self.peers.get(&key) else {
            return;
        };
        let span = peer.span().clone();
        let _entered = span.enter();
        let parsed = chat::parse(&msg.data, msg.is_string);
        let allowed = peer.grant().can_publish_data;
        let (from, name) = (peer.id().clone(), peer.name().as_str().to_owned());
        let send = match parsed {
            Err(refused) => {
                let client_id = refused.client_id.as_deref();
                return self.chat_refuse(key, refused.reason, client_id, None, now);
            }
            Ok(send) if !allowed => {
                let client_id = send.client_id.as_deref();
                return self.chat_refuse(key, Rejection::NotAllowed, client_id, None, now);
            }
            Ok(send) => send,
        };
        let allowance = self
            .chat
            .allowances
            .entry(key)
            .or_insert_with(|| Allowance::new(now));
        if let Err(wait) = allowance.take(now) {
            let retry = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
            let client_id = send.client_id.as_deref();
            return self.chat_refuse(key, Rejection::RateLimited, client_id, Some(retry), now);
        }
        self.chat.next_id += 1;
        let message = ChatMessage {
            id: self.chat.next_id,
            from,
            name,
            ts: self.settings.epoch.unix_ms(now),
            text: send.text,
        };
        let message = self.chat.record(message).clone();
        METRICS.chat_messages.inc();
        let everyone = chat::chat_frame(&message, None);
        let recipients: Vec<PeerKey> = self.chat.channels.keys().copied().collect();
        for to in recipients {
            let frame = if to == key {
                chat::chat_frame(&message, send.client_id.as_deref())
            } else {
                everyone.clone()
            };
            self.chat_send(to, frame, now);
        }
    }

    fn chat_refuse(
        &mut self,
        key: PeerKey,
        reason: Rejection,
        client_id: Option<&str>,
        retry_after_ms: Option<u64>,
        now: Instant,
    ) {
        debug!(reason = reason.as_str(), "chat message refused");
        METRICS.chat_rejected(reason);
        let frame = chat::rejected_frame(reason, client_id, retry_after_ms);
        self.chat_send(key, frame, now);
    }

    /// Writes one frame on a member's chat channel (dropped, and counted, if its channel is
    /// gone or backed up).
    fn chat_send(&mut self, key: PeerKey, frame: String, now: Instant) {
        let Some(&channel) = self.chat.channels.get(&key) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let sent = match peer.pc().data_channel(channel) {
            Some(mut dc) if dc.outstanding_bytes() <= MAX_BUFFERED => dc
                .send_text(now, frame)
                .map_err(|e| debug!(parent: peer.span(), %e, "chat frame not sent")),
            _ => Err(()),
        };
        if sent.is_err() {
            METRICS.chat_undelivered.inc();
        }
        self.mark_dirty(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_refill() {
        let t0 = Instant::now();
        let mut a = Allowance::new(t0);
        for _ in 0..BURST {
            assert!(a.take(t0).is_ok());
        }
        let wait = a.take(t0).expect_err("burst spent");
        assert_eq!(wait, REFILL);
        let half = t0 + REFILL / 2;
        assert_eq!(a.take(half).expect_err("not yet"), REFILL / 2);
        assert!(a.take(t0 + REFILL).is_ok(), "one earned");
        assert!(a.take(t0 + REFILL).is_err(), "only one");
        // A long pause refills to the burst, not beyond.
        let later = t0 + REFILL * 100;
        for _ in 0..BURST {
            assert!(a.take(later).is_ok());
        }
        assert!(a.take(later).is_err());
    }

    #[test]
    fn history_keeps_the_last_messages_in_order() {
        let mut chat = Chat::default();
        let from = crate::ids::ParticipantId::mint();
        for id in 1..=(HISTORY as u64 + 7) {
            chat.record(ChatMessage {
                id,
                from: from.clone(),
                name: "a".into(),
                ts: id,
                text: "t".into(),
            });
        }
        let ids: Vec<u64> = chat.history().map(|m| m.id).collect();
        assert_eq!(ids.len(), HISTORY);
        assert_eq!(ids.first(), Some(&8));
        assert_eq!(ids.last(), Some(&(HISTORY as u64 + 7)));
    }
}
