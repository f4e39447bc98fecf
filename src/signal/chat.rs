//! The chat wire format, spoken on each member's `confab` data channel (see
//! `docs/protocol.md`, "Chat"). Pure: parsing a client frame and writing the server's frames.
//!
//! A client sends only `{"type":"chat","text":…,"client_id"?:…}`. Identity (`from`, `name`),
//! time (`ts`) and order (`id`) are the server's to stamp: a frame that carries any of them is
//! refused as [`Rejection::Spoofed`], anything else unexpected as [`Rejection::Malformed`].

use serde::{Deserialize, Serialize};

use crate::ids::ParticipantId;

/// The data channel label the web client opens for chat.
pub const CHANNEL_LABEL: &str = "confab";
/// Longest message text, in characters (Unicode scalar values).
pub const MAX_TEXT_CHARS: usize = 2000;
/// Largest frame read at all (a 2000-character text is at most 8000 bytes of UTF-8, plus JSON).
pub const MAX_FRAME_BYTES: usize = 16 * 1024;
/// Longest `client_id` echoed back.
pub const MAX_CLIENT_ID_CHARS: usize = 64;
/// Fields only the server writes.
const SERVER_FIELDS: [&str; 4] = ["from", "name", "ts", "id"];

/// Why a chat message was not relayed (the `reason` of `chat-rejected`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// More than the burst in too short a time.
    RateLimited,
    /// Longer than [`MAX_TEXT_CHARS`] (or the frame larger than [`MAX_FRAME_BYTES`]).
    TooLong,
    /// Nothing but white space.
    Empty,
    /// The participant's token lacks the `canPublishData` grant.
    NotAllowed,
    /// Not a chat frame (bad JSON, unknown type or field, binary).
    Malformed,
    /// The frame names a sender, a time or an id: only the server stamps those.
    Spoofed,
}

impl Rejection {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::RateLimited => "rate_limited",
            Rejection::TooLong => "too_long",
            Rejection::Empty => "empty",
            Rejection::NotAllowed => "not_allowed",
            Rejection::Malformed => "malformed",
            Rejection::Spoofed => "spoofed",
        }
    }

    /// Every reason, in metric-label order.
    pub const ALL: [Rejection; 6] = [
        Rejection::RateLimited,
        Rejection::TooLong,
        Rejection::Empty,
        Rejection::NotAllowed,
        Rejection::Malformed,
        Rejection::Spoofed,
    ];
}

/// A client's chat message, as parsed (not yet allowed or stamped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatSend {
    /// The text, as sent (not trimmed).
    pub text: String,
    /// The client's own id for it, echoed to it in the stamped message.
    pub client_id: Option<String>,
}

/// A refused frame: why, and the client's id for it when one could be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// Why.
    pub reason: Rejection,
    /// The frame's `client_id`, when it had a usable one.
    pub client_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
enum ClientFrame {
    Chat {
        text: String,
        /// Read (length-checked) from the raw object; here only so it is a known field.
        #[serde(default, rename = "client_id")]
        _client_id: Option<serde::de::IgnoredAny>,
    },
}

/// Parses one data channel frame from a client.
pub fn parse(frame: &[u8], is_text: bool) -> Result<ChatSend, Refused> {
    let refuse = |reason, client_id| Refused { reason, client_id };
    if frame.len() > MAX_FRAME_BYTES {
        return Err(refuse(Rejection::TooLong, None));
    }
    if !is_text {
        return Err(refuse(Rejection::Malformed, None));
    }
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(frame)
    else {
        return Err(refuse(Rejection::Malformed, None));
    };
    let client_id = map
        .get("client_id")
        .and_then(|v| v.as_str())
        .filter(|s| s.chars().count() <= MAX_CLIENT_ID_CHARS)
        .map(str::to_owned);
    if SERVER_FIELDS.iter().any(|f| map.contains_key(*f)) {
        return Err(refuse(Rejection::Spoofed, client_id));
    }
    let Ok(ClientFrame::Chat { text, .. }) =
        serde_json::from_value::<ClientFrame>(serde_json::Value::Object(map))
    else {
        return Err(refuse(Rejection::Malformed, client_id));
    };
    if text.trim().is_empty() {
        return Err(refuse(Rejection::Empty, client_id));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(refuse(Rejection::TooLong, client_id));
    }
    Ok(ChatSend { text, client_id })
}

/// A relayed message, as the server stamped it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// Order in the room (increasing).
    pub id: u64,
    /// The sender.
    pub from: ParticipantId,
    /// The sender's display name when it sent it.
    pub name: String,
    /// When the server relayed it, Unix milliseconds.
    pub ts: u64,
    /// The text.
    pub text: String,
}

/// Frames the server sends on a member's chat channel.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum ServerFrame<'a> {
    Chat {
        #[serde(flatten)]
        message: &'a ChatMessage,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<&'a str>,
    },
    ChatHistory {
        messages: Vec<&'a ChatMessage>,
    },
    ChatRejected {
        reason: Rejection,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

fn to_text(frame: &ServerFrame<'_>) -> String {
    // Serializing these plain structs cannot fail; an empty frame would be ignored by clients.
    serde_json::to_string(frame).unwrap_or_default()
}

/// A `chat` frame (`client_id` only for the sender).
pub fn chat_frame(message: &ChatMessage, client_id: Option<&str>) -> String {
    to_text(&ServerFrame::Chat { message, client_id })
}

/// The `chat-history` frame a member gets when its channel opens.
pub fn history_frame<'a>(messages: impl IntoIterator<Item = &'a ChatMessage>) -> String {
    to_text(&ServerFrame::ChatHistory {
        messages: messages.into_iter().collect(),
    })
}

/// A `chat-rejected` frame.
pub fn rejected_frame(
    reason: Rejection,
    client_id: Option<&str>,
    retry_after_ms: Option<u64>,
) -> String {
    to_text(&ServerFrame::ChatRejected {
        reason,
        client_id,
        retry_after_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(frame: &str) -> Rejection {
        parse(frame.as_bytes(), true).expect_err("refused").reason
    }

    #[test]
    fn a_plain_chat_frame_is_read_with_its_client_id() {
        let m = parse(br#"{"type":"chat","text":"hi","client_id":"c1"}"#, true).expect("ok");
        assert_eq!(m.text, "hi");
        assert_eq!(m.client_id.as_deref(), Some("c1"));
        let m = parse(br#"{"type":"chat","text":"hi"}"#, true).expect("ok");
        assert_eq!(m.client_id, None);
    }

    #[test]
    fn identity_time_or_order_fields_are_spoofing() {
        for f in [
            r#"{"type":"chat","text":"x","from":"pAAAAAAAAAA"}"#,
            r#"{"type":"chat","text":"x","name":"Bob"}"#,
            r#"{"type":"chat","text":"x","ts":1}"#,
            r#"{"type":"chat","text":"x","id":9,"client_id":"k"}"#,
        ] {
            assert_eq!(reason(f), Rejection::Spoofed, "{f}");
        }
        let r = parse(
            br#"{"type":"chat","text":"x","id":9,"client_id":"k"}"#,
            true,
        );
        assert_eq!(r.expect_err("refused").client_id.as_deref(), Some("k"));
    }

    #[test]
    fn other_bad_frames_are_malformed_never_a_panic() {
        for f in [
            "",
            "null",
            "[1]",
            "{",
            r#"{"type":"chat"}"#,
            r#"{"type":"chat","text":5}"#,
            r#"{"type":"file","text":"x"}"#,
            r#"{"type":"chat","text":"x","extra":1}"#,
            r#"{"text":"x"}"#,
        ] {
            assert_eq!(reason(f), Rejection::Malformed, "{f:?}");
        }
        let binary = parse(br#"{"type":"chat","text":"x"}"#, false);
        assert_eq!(binary.expect_err("refused").reason, Rejection::Malformed);
        let junk = parse(&[0xff, 0xfe, 0x00], true);
        assert_eq!(junk.expect_err("refused").reason, Rejection::Malformed);
    }

    #[test]
    fn empty_and_long_texts_are_refused_by_characters_not_bytes() {
        assert_eq!(
            reason(r#"{"type":"chat","text":"  \n\t"}"#),
            Rejection::Empty
        );
        let at_limit = "é".repeat(MAX_TEXT_CHARS);
        let f = format!(r#"{{"type":"chat","text":"{at_limit}"}}"#);
        assert!(
            parse(f.as_bytes(), true).is_ok(),
            "2000 two-byte characters fit"
        );
        let over = "a".repeat(MAX_TEXT_CHARS + 1);
        let f = format!(r#"{{"type":"chat","text":"{over}"}}"#);
        assert_eq!(reason(&f), Rejection::TooLong);
        let huge = vec![b' '; MAX_FRAME_BYTES + 1];
        assert_eq!(
            parse(&huge, true).expect_err("refused").reason,
            Rejection::TooLong
        );
    }

    #[test]
    fn a_too_long_client_id_is_not_echoed() {
        let id = "k".repeat(MAX_CLIENT_ID_CHARS + 1);
        let f = format!(r#"{{"type":"chat","text":"x","client_id":"{id}","ts":1}}"#);
        let r = parse(f.as_bytes(), true).expect_err("refused");
        assert_eq!(r.client_id, None);
    }

    #[test]
    fn server_frames_carry_the_stamp() {
        let m = ChatMessage {
            id: 3,
            from: ParticipantId::parse("pabcdefghij").expect("id"),
            name: "Alice".into(),
            ts: 1_700_000_000_000,
            text: "hi".into(),
        };
        let v: serde_json::Value = serde_json::from_str(&chat_frame(&m, Some("c"))).expect("json");
        assert_eq!(v["type"], "chat");
        assert_eq!(v["id"], 3);
        assert_eq!(v["from"], "pabcdefghij");
        assert_eq!(v["name"], "Alice");
        assert_eq!(v["ts"], 1_700_000_000_000u64);
        assert_eq!(v["client_id"], "c");
        let v: serde_json::Value = serde_json::from_str(&chat_frame(&m, None)).expect("json");
        assert!(v.get("client_id").is_none());
        let v: serde_json::Value = serde_json::from_str(&history_frame([&m, &m])).expect("json");
        assert_eq!(v["type"], "chat-history");
        assert_eq!(v["messages"].as_array().map(Vec::len), Some(2));
        let v: serde_json::Value = serde_json::from_str(&rejected_frame(
            Rejection::RateLimited,
            Some("c"),
            Some(900),
        ))
        .expect("json");
        assert_eq!(v["reason"], "rate_limited");
        assert_eq!(v["retry_after_ms"], 900);
    }
}
