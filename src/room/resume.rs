//! Session resume: a participant whose signaling socket dropped stays in the room (its peer
//! connection, tracks and subscriptions untouched, media flowing) for the resume grace period;
//! a new socket presenting the participant's current resume token takes the session back, and
//! the other members see nothing. After the grace period the participant is removed as if it
//! had left. Sans-IO: the room calls these with `now`.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::info;

use super::state::Room;
use crate::ids::{random_alnum, ParticipantId};
use crate::signal::protocol::{ErrorCode, ParticipantInfo, ServerMsg};
use crate::telemetry::METRICS;

/// Length of a resume token (62^32 ≈ 2^190 possibilities).
const TOKEN_LEN: usize = 32;

/// A single-use secret that lets a new socket take over a participant's session. Rotated on
/// every successful resume, so a token seen once (e.g. in a log) cannot be replayed.
#[derive(Clone)]
pub struct ResumeToken(String);

impl std::fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResumeToken(..)")
    }
}

impl ResumeToken {
    /// A fresh random token.
    pub fn mint() -> Self {
        Self(random_alnum(TOKEN_LEN))
    }

    /// The token as sent to the client.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, compared in constant time (the token is a secret).
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Where a participant's signaling is.
#[derive(Debug)]
pub struct Presence {
    token: ResumeToken,
    /// Since when no socket is attached.
    detached_since: Option<Instant>,
}

impl Default for Presence {
    fn default() -> Self {
        Self {
            token: ResumeToken::mint(),
            detached_since: None,
        }
    }
}

impl Presence {
    /// The current token.
    pub fn token(&self) -> &ResumeToken {
        &self.token
    }

    /// The socket went away at `now` (kept: the earliest time). Counted in
    /// `confab_sessions_awaiting_resume` until attached again or dropped.
    pub fn detach(&mut self, now: Instant) {
        if self.detached_since.is_none() {
            METRICS.sessions_awaiting_resume.inc();
            self.detached_since = Some(now);
        }
    }

    /// Whether no socket is attached.
    pub fn is_detached(&self) -> bool {
        self.detached_since.is_some()
    }

    /// Whether the participant has been away longer than `grace`.
    pub fn expired(&self, now: Instant, grace: Duration) -> bool {
        self.detached_since
            .is_some_and(|since| now.saturating_duration_since(since) > grace)
    }

    /// When the grace period ends.
    pub fn deadline(&self, grace: Duration) -> Option<Instant> {
        self.detached_since.map(|since| since + grace)
    }

    /// A socket presented `token`: if it is the current one, the session is attached and the
    /// token rotated (the old one is spent). `false` leaves everything as it was.
    pub fn attach(&mut self, presented: &str) -> bool {
        if !self.token.matches(presented) {
            return false;
        }
        self.token = ResumeToken::mint();
        if self.detached_since.take().is_some() {
            METRICS.sessions_awaiting_resume.dec();
        }
        true
    }
}

impl Drop for Presence {
    /// A participant removed while away leaves the gauge.
    fn drop(&mut self) {
        if self.detached_since.is_some() {
            METRICS.sessions_awaiting_resume.dec();
        }
    }
}

/// A resume the room accepted.
#[derive(Debug)]
pub struct ResumeAccepted {
    /// The other members now.
    pub participants: Vec<ParticipantInfo>,
    /// The next token.
    pub resume_token: String,
}

/// Why a resume was refused (all are `resume_failed` on the wire: the client joins afresh).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeError {
    /// No such participant in this room (never was, left, or its grace period ended).
    #[error("no such session in this room (it ended, or the grace period passed)")]
    UnknownSession,
    /// The token is not the session's current one (wrong, or already spent).
    #[error("the resume token is not valid for this session")]
    BadToken,
    /// The room is closing.
    #[error("the room is closing")]
    Closing,
}

impl Room {
    /// The participant's socket dropped without `leave`: keep it for the grace period.
    pub(super) fn detach(&mut self, id: &ParticipantId, now: Instant) {
        let Some(key) = self.key_of(id) else { return };
        if let Some(peer) = self.peers.get_mut(&key) {
            info!(parent: peer.span(), grace = ?self.settings.resume_grace, "signaling lost; awaiting resume");
            peer.presence_mut().detach(now);
        }
    }

    /// A new socket takes the session of `id` back with `token`.
    pub(super) fn resume(
        &mut self,
        id: &ParticipantId,
        token: &str,
        signal: mpsc::Sender<ServerMsg>,
        now: Instant,
    ) -> Result<ResumeAccepted, ResumeError> {
        let key = self.key_of(id).ok_or(ResumeError::UnknownSession)?;
        let peer = self
            .peers
            .get_mut(&key)
            .ok_or(ResumeError::UnknownSession)?;
        let was_attached = !peer.presence().is_detached();
        if !peer.presence_mut().attach(token) {
            return Err(ResumeError::BadToken);
        }
        // A socket still attached (a half-open one the client gave up on) is replaced: it is
        // told why, then its channel closes and that session ends without touching this one.
        if was_attached {
            let _ = peer.send(ServerMsg::GoingAway {
                reason: "this session was resumed on another connection".into(),
            });
        }
        peer.set_signal(signal);
        info!(parent: peer.span(), "session resumed");
        let resume_token = peer.presence_mut().token().as_str().to_owned();
        // An offer sent while the socket was away may never have arrived: send it again (the
        // client applies an offer it already has just the same), its timeout counted afresh.
        if let Some(sdp) = peer.resend_offer(now) {
            self.send_to(key, ServerMsg::Offer { sdp }, now);
        }
        Ok(ResumeAccepted {
            participants: self.participant_infos(Some(key)),
            resume_token,
        })
    }

    /// Removes the participants whose grace period has passed.
    pub(super) fn expire_detached(&mut self, now: Instant) {
        let grace = self.settings.resume_grace;
        let draining = self.draining;
        let expired: Vec<_> = self
            .peers
            .values()
            .filter(|p| {
                let away = p.presence();
                away.expired(now, grace) || (draining && away.is_detached())
            })
            .map(|p| p.key())
            .collect();
        for key in expired {
            if let Some(p) = self.peers.get(&key) {
                info!(parent: p.span(), draining = self.draining, "not resumed within the grace period");
            }
            self.remove_peer(key, None, now);
        }
    }
}

/// The error a refused resume gets on the wire.
pub fn refused(e: ResumeError) -> ServerMsg {
    ServerMsg::error(ErrorCode::ResumeFailed, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_works_once() {
        let mut p = Presence::default();
        let t0 = Instant::now();
        let first = p.token().as_str().to_owned();
        p.detach(t0);
        assert!(p.attach(&first));
        assert!(!p.is_detached());
        assert!(!p.attach(&first), "a spent token is refused");
        let second = p.token().as_str().to_owned();
        assert_ne!(first, second);
        assert!(p.attach(&second));
    }

    #[test]
    fn a_wrong_token_changes_nothing() {
        let mut p = Presence::default();
        let t0 = Instant::now();
        let good = p.token().as_str().to_owned();
        p.detach(t0);
        for bad in ["", "x", &good[..TOKEN_LEN - 1], &format!("{good}x")] {
            assert!(!p.attach(bad), "{bad:?}");
        }
        let mut flipped = good.clone().into_bytes();
        flipped[5] = if flipped[5] == b'a' { b'b' } else { b'a' };
        assert!(!p.attach(std::str::from_utf8(&flipped).unwrap()));
        assert!(p.is_detached());
        assert!(p.attach(&good));
    }

    #[test]
    fn the_grace_period_counts_from_the_first_detach() {
        let mut p = Presence::default();
        let grace = Duration::from_secs(15);
        let t0 = Instant::now();
        assert!(!p.expired(t0 + grace * 10, grace), "attached never expires");
        p.detach(t0);
        p.detach(t0 + Duration::from_secs(10));
        assert_eq!(p.deadline(grace), Some(t0 + grace));
        assert!(!p.expired(t0 + grace, grace));
        assert!(p.expired(t0 + grace + Duration::from_millis(1), grace));
    }

    #[test]
    fn the_token_is_not_printed() {
        let t = ResumeToken::mint();
        assert!(!format!("{t:?}").contains(t.as_str()));
    }
}
