//! Newtype identifiers. Peer-chosen strings are validated once, at the signaling edge, and never
//! travel as raw `String`s past it.

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Characters allowed in minted identifiers and ICE credentials (ICE `ice-char` is a superset).
const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// Whether `s` is an id as the server mints them: `prefix` + 10 alphanumerics.
fn is_minted(s: &str, prefix: char) -> bool {
    s.strip_prefix(prefix)
        .is_some_and(|rest| rest.len() == 10 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// A random alphanumeric string of `len` characters.
pub fn random_alnum(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char)
        .collect()
}

/// A room name: 1–64 characters of `[A-Za-z0-9_.-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RoomName(String);

impl RoomName {
    /// Validates a client-supplied room name.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        ok.then(|| Self(s.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A display name chosen by the participant: 1–64 characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DisplayName(String);

impl DisplayName {
    /// Validates a client-supplied display name (trimmed).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let ok = !s.is_empty() && s.chars().count() <= 64 && !s.chars().any(char::is_control);
        ok.then(|| Self(s.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A participant id minted by the server (`p` + 10 alphanumerics). It is also the `msid` stream
/// id of every track that participant publishes, so browsers can map tracks to people.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ParticipantId(String);

impl ParticipantId {
    /// Mints a fresh random id.
    pub fn mint() -> Self {
        Self(format!("p{}", random_alnum(10)))
    }

    /// An id as a client names it (`p` + 10 alphanumerics); `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        is_minted(s, 'p').then(|| Self(s.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A published track's id, minted by the server (`t` + 10 alphanumerics); the `msid` track id
/// subscribers see.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TrackId(String);

impl TrackId {
    /// Mints a fresh random id.
    pub fn mint() -> Self {
        Self(format!("t{}", random_alnum(10)))
    }

    /// An id as a client names it (`t` + 10 alphanumerics); `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        is_minted(s, 't').then(|| Self(s.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TrackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The room-local key of one peer connection, minted by the room from a counter. Cheap to copy
/// and hash; it is what the demuxer tags datagrams with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey(pub u64);

/// The kind of a track.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum TrackKind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

impl TrackKind {
    /// Label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            TrackKind::Audio => "audio",
            TrackKind::Video => "video",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_validated() {
        assert!(RoomName::parse("standup").is_some());
        assert!(RoomName::parse("a.b_c-1").is_some());
        assert!(RoomName::parse("").is_none());
        assert!(RoomName::parse("has space").is_none());
        assert!(RoomName::parse(&"x".repeat(65)).is_none());
        assert!(RoomName::parse("ünï").is_none());
    }

    #[test]
    fn display_names_are_trimmed_and_bounded() {
        assert_eq!(DisplayName::parse("  alice ").unwrap().as_str(), "alice");
        assert!(DisplayName::parse("   ").is_none());
        assert!(DisplayName::parse("a\u{0}b").is_none());
        assert!(DisplayName::parse(&"é".repeat(64)).is_some());
        assert!(DisplayName::parse(&"é".repeat(65)).is_none());
    }

    #[test]
    fn minted_ids_are_distinct() {
        assert_ne!(ParticipantId::mint(), ParticipantId::mint());
        assert!(TrackId::mint().as_str().starts_with('t'));
    }
}

/// What a published track carries.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum TrackSource {
    /// A camera (or any video not said to be a screen).
    #[default]
    Camera,
    /// A microphone (or any audio not said to be a screen's).
    Microphone,
    /// A screen, window or tab being shared.
    Screen,
    /// The audio of a shared screen or tab.
    ScreenAudio,
}

impl TrackSource {
    /// The source a track of `kind` has when its publisher said nothing.
    pub fn default_for(kind: TrackKind) -> Self {
        match kind {
            TrackKind::Audio => TrackSource::Microphone,
            TrackKind::Video => TrackSource::Camera,
        }
    }

    /// The source claimed for a track of `kind`, if it fits the kind; else the default.
    pub fn checked(claimed: Option<TrackSource>, kind: TrackKind) -> Self {
        match (claimed, kind) {
            (Some(s @ (TrackSource::Camera | TrackSource::Screen)), TrackKind::Video)
            | (Some(s @ (TrackSource::Microphone | TrackSource::ScreenAudio)), TrackKind::Audio) => {
                s
            }
            _ => TrackSource::default_for(kind),
        }
    }
}
