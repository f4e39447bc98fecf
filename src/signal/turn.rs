//! Short-lived TURN credentials (the "TURN REST API" scheme, draft-uberti-behave-turn-rest,
//! which coturn implements as `use-auth-secret`): username `<expiry unix time>:<participant>`,
//! password base64(HMAC-SHA1(shared secret, username)). The TURN server checks the HMAC with
//! the same secret and refuses an expired username, so nothing is stored and a leaked
//! credential dies on its own. Pure: the caller gives the time.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::config::{IceServer, TurnConfig};

/// Credentials for one participant: the configured TURN URLs with a username valid until
/// `now_unix + ttl`, or until `token_expiry` if that is sooner. `None` when TURN is off.
pub fn credentials(
    cfg: &TurnConfig,
    participant: &str,
    now_unix: u64,
    token_expiry: Option<u64>,
) -> Option<IceServer> {
    let secret = cfg.secret.as_deref()?;
    if cfg.urls.is_empty() {
        return None;
    }
    let mut expiry = now_unix.saturating_add(cfg.ttl.as_secs());
    if let Some(t) = token_expiry {
        expiry = expiry.min(t);
    }
    let username = format!("{expiry}:{participant}");
    Some(IceServer {
        urls: cfg.urls.clone(),
        credential: Some(password(secret, &username)),
        username: Some(username),
    })
}

/// base64(HMAC-SHA1(secret, username)).
pub fn password(secret: &str, username: &str) -> String {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn cfg() -> TurnConfig {
        TurnConfig {
            urls: vec!["turn:10.0.0.1:3478?transport=udp".into()],
            secret: Some("north".into()),
            ttl: Duration::from_secs(600),
        }
    }

    #[test]
    fn password_is_the_turn_rest_hmac() {
        // Computed independently: printf '%s' '1700000600:alice' |
        //   openssl dgst -sha1 -hmac north -binary | base64
        assert_eq!(
            password("north", "1700000600:alice"),
            "gthUwOpcRoLI0MMCziCEBOWYnpo="
        );
    }

    #[test]
    fn username_carries_the_expiry_capped_by_the_token() {
        let c = credentials(&cfg(), "palice", 1_700_000_000, None).unwrap();
        assert_eq!(c.username.as_deref(), Some("1700000600:palice"));
        assert_eq!(
            c.credential.as_deref(),
            Some(password("north", "1700000600:palice").as_str())
        );
        let c = credentials(&cfg(), "palice", 1_700_000_000, Some(1_700_000_100)).unwrap();
        assert_eq!(c.username.as_deref(), Some("1700000100:palice"));
    }

    #[test]
    fn off_without_secret_or_urls() {
        let mut c = cfg();
        c.secret = None;
        assert!(credentials(&c, "p", 0, None).is_none());
        let mut c = cfg();
        c.urls.clear();
        assert!(credentials(&c, "p", 0, None).is_none());
    }
}
