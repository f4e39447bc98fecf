//! Access tokens: HS256 JWTs in the shape LiveKit users know. The API key is the issuer (`iss`),
//! the identity is the subject (`sub`), and the `video` grant names the room and what the holder
//! may do there. Without configured keys the server runs open (dev mode).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// What a token allows (`video` claim).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct VideoGrant {
    /// The room the token is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// May join `room`.
    pub room_join: bool,
    /// May list rooms (`GET /api/rooms`).
    pub room_list: bool,
    /// May inspect rooms (`GET /api/rooms/{room}`; all rooms when `room` is unset).
    pub room_admin: bool,
    /// May publish media (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_publish: Option<bool>,
    /// May receive others' media (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_subscribe: Option<bool>,
    /// May publish data (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_publish_data: Option<bool>,
}

/// The token's claims.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// API key that signed the token.
    pub iss: String,
    /// Participant identity (unique per room).
    #[serde(default)]
    pub sub: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Not valid before (seconds since the epoch).
    #[serde(default)]
    pub nbf: u64,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// Grants.
    #[serde(default)]
    pub video: VideoGrant,
}

/// Why a token was refused. The messages are shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token where one is required.
    #[error("an access token is required")]
    Missing,
    /// Not a JWT, or claims missing.
    #[error("malformed access token")]
    Malformed,
    /// Issuer is not a configured API key.
    #[error("unknown API key")]
    UnknownKey,
    /// Signature does not verify.
    #[error("invalid token signature")]
    BadSignature,
    /// Past `exp` (or before `nbf`).
    #[error("access token expired or not yet valid")]
    Expired,
    /// The grant is for another room.
    #[error("access token is not valid for this room")]
    WrongRoom,
    /// The grant does not allow this action.
    #[error("access token does not allow this")]
    NotAllowed,
}

/// What a verified (or open-mode) participant may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Identity (unique per room); `None` in open mode, where every join is distinct.
    pub identity: Option<String>,
    /// Display name from the token, if any.
    pub name: Option<String>,
    /// May publish.
    pub can_publish: bool,
    /// May subscribe.
    pub can_subscribe: bool,
    /// May publish data.
    pub can_publish_data: bool,
    /// When the access token expires (Unix seconds); `None` in open mode.
    pub expires_at: Option<u64>,
}

impl Grant {
    /// Everything allowed (server without keys).
    pub fn open() -> Self {
        Self {
            identity: None,
            name: None,
            can_publish: true,
            can_subscribe: true,
            can_publish_data: true,
            expires_at: None,
        }
    }
}

/// Options for minting a token.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// Room (None: any room, only sensible for admin tokens).
    pub room: Option<String>,
    /// Identity.
    pub identity: String,
    /// Display name.
    pub name: Option<String>,
    /// Lifetime.
    pub ttl: Duration,
    /// Publish allowed.
    pub can_publish: bool,
    /// Subscribe allowed.
    pub can_subscribe: bool,
    /// Room API access.
    pub admin: bool,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The configured API keys.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    keys: HashMap<String, String>,
}

impl Auth {
    /// Keys: API key → secret.
    pub fn new(keys: HashMap<String, String>) -> Self {
        Self { keys }
    }

    /// Whether tokens are required.
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Mints a token signed with `api_key`'s secret.
    pub fn issue(&self, api_key: &str, req: &TokenRequest) -> Result<String, AuthError> {
        let secret = self.keys.get(api_key).ok_or(AuthError::UnknownKey)?;
        let now = now_secs();
        let claims = Claims {
            iss: api_key.to_owned(),
            sub: req.identity.clone(),
            name: req.name.clone(),
            nbf: now.saturating_sub(10),
            exp: now + req.ttl.as_secs(),
            video: VideoGrant {
                room: req.room.clone(),
                room_join: req.room.is_some(),
                room_list: req.admin,
                room_admin: req.admin,
                can_publish: Some(req.can_publish),
                can_subscribe: Some(req.can_subscribe),
                can_publish_data: Some(req.can_publish),
            },
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .map_err(|_| AuthError::Malformed)
    }

    /// Verifies a token: known issuer, HS256 signature, time window.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let unverified = jsonwebtoken::dangerous::insecure_decode::<Claims>(token)
            .map_err(|_| AuthError::Malformed)?;
        let secret = self
            .keys
            .get(&unverified.claims.iss)
            .ok_or(AuthError::UnknownKey)?;
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[&unverified.claims.iss]);
        v.set_required_spec_claims(&["exp", "iss"]);
        v.validate_nbf = true;
        v.leeway = 5;
        use jsonwebtoken::errors::ErrorKind;
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret.as_bytes()), &v)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                _ => AuthError::Malformed,
            })
    }

    /// Verifies a token for joining `room`.
    pub fn grant_for_join(&self, token: Option<&str>, room: &str) -> Result<Grant, AuthError> {
        if !self.enabled() {
            return Ok(Grant::open());
        }
        let claims = self.verify(token.ok_or(AuthError::Missing)?)?;
        let v = &claims.video;
        if !v.room_join {
            return Err(AuthError::NotAllowed);
        }
        if v.room.as_deref() != Some(room) {
            return Err(AuthError::WrongRoom);
        }
        if claims.sub.is_empty() {
            return Err(AuthError::Malformed);
        }
        Ok(Grant {
            identity: Some(claims.sub.clone()),
            name: claims.name.clone(),
            can_publish: v.can_publish.unwrap_or(true),
            can_subscribe: v.can_subscribe.unwrap_or(true),
            can_publish_data: v.can_publish_data.unwrap_or(true),
            expires_at: Some(claims.exp),
        })
    }

    /// Verifies a token for the room API (`room`: a specific room, or `None` for the list).
    pub fn check_api(&self, token: Option<&str>, room: Option<&str>) -> Result<(), AuthError> {
        if !self.enabled() {
            return Ok(());
        }
        let claims = self.verify(token.ok_or(AuthError::Missing)?)?;
        let v = &claims.video;
        let allowed = match room {
            None => v.room_list || (v.room_admin && v.room.is_none()),
            Some(r) => v.room_admin && v.room.as_deref().is_none_or(|g| g == r),
        };
        if allowed {
            Ok(())
        } else {
            Err(AuthError::NotAllowed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(HashMap::from([(
            "key1".to_owned(),
            "s3cret-s3cret-s3cret".to_owned(),
        )]))
    }

    fn req(room: &str) -> TokenRequest {
        TokenRequest {
            room: Some(room.into()),
            identity: "alice".into(),
            name: Some("Alice".into()),
            ttl: Duration::from_secs(3600),
            can_publish: true,
            can_subscribe: true,
            admin: false,
        }
    }

    #[test]
    fn issued_tokens_verify_for_their_room_only() {
        let a = auth();
        let t = a.issue("key1", &req("standup")).unwrap();
        let g = a.grant_for_join(Some(&t), "standup").unwrap();
        assert_eq!(g.identity.as_deref(), Some("alice"));
        assert!(g.can_publish);
        assert_eq!(
            a.grant_for_join(Some(&t), "other"),
            Err(AuthError::WrongRoom)
        );
        assert_eq!(a.grant_for_join(None, "standup"), Err(AuthError::Missing));
    }

    #[test]
    fn tampered_expired_and_foreign_tokens_are_refused() {
        let a = auth();
        let other = Auth::new(HashMap::from([(
            "key1".to_owned(),
            "another-secret".to_owned(),
        )]));
        let forged = other.issue("key1", &req("r")).unwrap();
        assert_eq!(a.verify(&forged), Err(AuthError::BadSignature));
        let mut r = req("r");
        r.ttl = Duration::ZERO;
        let t = a.issue("key1", &r).unwrap();
        // exp == now, leeway 5 s: craft a clearly expired one instead.
        let mut claims = jsonwebtoken::dangerous::insecure_decode::<Claims>(&t)
            .unwrap()
            .claims;
        claims.exp = now_secs() - 3600;
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"s3cret-s3cret-s3cret"),
        )
        .unwrap();
        assert_eq!(a.verify(&expired), Err(AuthError::Expired));
        assert_eq!(a.verify("not.a.jwt"), Err(AuthError::Malformed));
        let unknown = Auth::new(HashMap::from([("key2".to_owned(), "x".to_owned())]))
            .issue("key2", &req("r"))
            .unwrap();
        assert_eq!(a.verify(&unknown), Err(AuthError::UnknownKey));
    }

    #[test]
    fn subscribe_only_grant_and_admin_checks() {
        let a = auth();
        let mut r = req("r");
        r.can_publish = false;
        let t = a.issue("key1", &r).unwrap();
        assert!(!a.grant_for_join(Some(&t), "r").unwrap().can_publish);
        assert_eq!(a.check_api(Some(&t), None), Err(AuthError::NotAllowed));
        let admin = a
            .issue(
                "key1",
                &TokenRequest {
                    room: None,
                    admin: true,
                    ..req("x")
                },
            )
            .unwrap();
        assert!(a.check_api(Some(&admin), None).is_ok());
        assert!(a.check_api(Some(&admin), Some("any")).is_ok());
        assert!(Auth::default().check_api(None, None).is_ok(), "open mode");
    }
}
