//! One signaling WebSocket: parses client messages, enforces the protocol's rules (join first,
//! size limit, own session only), forwards session commands to the participant's room and
//! relays the room's messages back. Generic over the socket halves so tests can drive it with
//! channels.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::Quota;

use axum::extract::ws::{CloseFrame, Message};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, Instrument};

use super::protocol::{parse_client_msg, ClientMsg, ErrorCode, ServerMsg};
use super::relay::{self, Upstream};
use super::turn;
use crate::auth::Auth;
use crate::cluster::{Cluster, NodeRecord, Placement};
use crate::config::{IceServer, TurnConfig};
use crate::ids::{DisplayName, ParticipantId, RoomName};
use crate::room::registry::{RoomHandle, Rooms};
use crate::room::resume::refused;
use crate::room::{RoomCmd, View};
use crate::telemetry::METRICS;

/// Messages the room may queue for one session before the participant counts as stuck.
const SIGNAL_QUEUE: usize = 256;
/// A client that sends nothing (not even `ping`) for this long is disconnected.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Per-IP join limiter.
pub type JoinLimiter = governor::DefaultKeyedRateLimiter<IpAddr>;

/// Per-identity join limiter (keys: the token's identity, or name@IP without tokens).
pub type IdentityLimiter = governor::DefaultKeyedRateLimiter<String>;

/// Builds the per-identity join limiter (`None`: unlimited): `per_minute` joins a minute,
/// bursts of half that (at least one).
pub fn identity_limiter(per_minute: u32) -> Option<IdentityLimiter> {
    let rate = NonZeroU32::new(per_minute)?;
    let burst = NonZeroU32::new((per_minute / 2).max(1))?;
    Some(governor::RateLimiter::keyed(
        Quota::per_minute(rate).allow_burst(burst),
    ))
}

/// Builds the per-IP join limiter (`None`: unlimited).
pub fn join_limiter(per_second: u32) -> Option<JoinLimiter> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(per_second.saturating_mul(4))?;
    Some(governor::RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

/// Who is on the other end of one WebSocket.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// Client IP.
    pub ip: IpAddr,
    /// Token from the query string (`access_token`) or `Authorization: Bearer`.
    pub token: Option<String>,
    /// Relayed by another cluster node (so never relayed again).
    pub relayed: bool,
}

/// What every session needs.
pub struct SessionContext {
    /// The room directory.
    pub rooms: Arc<Rooms>,
    /// Token verification.
    pub auth: Auth,
    /// Signaling messages per second per connection (0: unlimited).
    pub messages_per_second: u32,
    /// Joins per second per IP.
    pub join_limiter: Option<JoinLimiter>,
    /// Joins per minute per participant identity.
    pub identity_limiter: Option<IdentityLimiter>,
    /// ICE servers handed out in `joined`.
    pub ice_servers: Vec<IceServer>,
    /// TURN server with a shared secret: per-participant credentials added to `ice_servers`.
    pub turn: TurnConfig,
    /// How long a dropped session may be resumed.
    pub resume_grace: Duration,
    /// Largest accepted text message.
    pub max_message_bytes: usize,
    /// Cancelled when the server drains.
    pub shutdown: CancellationToken,
    /// This node's cluster membership (`None`: a single node).
    pub cluster: Option<Cluster>,
}

struct Joined {
    id: ParticipantId,
    room: RoomHandle,
    signal_rx: mpsc::Receiver<ServerMsg>,
}

enum Flow {
    Continue,
    /// The session ends; the participant leaves the room.
    Close(&'static str),
    /// The room lives on another node: the rest of the session is piped to it.
    Relay(Box<Upstream>),
}

/// What the participant's room is told when the session ends: a client that said `leave` (or
/// the server is draining) leaves; one whose socket simply dropped may resume (`Detach`); and
/// when the room itself ended the session — it removed the participant, or a resume on another
/// socket took the session over — there is nothing to say (a `Leave` would remove the session
/// that took over).
fn on_end(reason: &str, id: ParticipantId) -> Option<RoomCmd> {
    match reason {
        "removed from room" => None,
        "connection closed" | "idle timeout" | "send failed" | "client closed" => {
            Some(RoomCmd::Detach { id })
        }
        _ => Some(RoomCmd::Leave { id }),
    }
}

/// Runs one session until either side closes.
pub async fn run<S, R>(mut tx: S, mut rx: R, ctx: Arc<SessionContext>, conn: ConnInfo)
where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    METRICS.ws_connections.inc();
    let mut joined: Option<Joined> = None;
    let limiter = NonZeroU32::new(ctx.messages_per_second).and_then(|rate| {
        let burst = NonZeroU32::new(ctx.messages_per_second.saturating_mul(2))?;
        Some(governor::RateLimiter::direct(
            Quota::per_second(rate).allow_burst(burst),
        ))
    });
    let mut limited_streak = 0u32;
    let mut span = info_span!("session", participant = tracing::field::Empty);
    let mut relay_to: Option<(Box<Upstream>, String)> = None;
    let close_reason: &'static str = loop {
        let stays_on_drain = joined.is_none() && ctx.cluster.is_some();
        let recv_signal = async {
            match joined.as_mut() {
                Some(j) => j.signal_rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // In a cluster a draining node still relays new sockets to the other nodes.
            _ = ctx.shutdown.cancelled(), if !stays_on_drain => {
                let _ = send(&mut tx, &ServerMsg::GoingAway { reason: "server shutting down".into() }).await;
                break "server shutting down";
            }
            msg = recv_signal => match msg {
                Some(m) => {
                    let fatal = matches!(&m, ServerMsg::Error { code: ErrorCode::Removed | ErrorCode::NegotiationTimeout | ErrorCode::Internal, .. });
                    if send(&mut tx, &m).await.is_err() { break "send failed"; }
                    if fatal { break "removed from room"; }
                }
                None => {
                    // The room dropped us: removed, the room closed, or a resume on another
                    // socket took the session over (then the room said so first).
                    let _ = send(&mut tx, &ServerMsg::error(ErrorCode::Removed, "removed from the room")).await;
                    break "removed from room";
                }
            },
            incoming = tokio::time::timeout(IDLE_TIMEOUT, rx.next()) => {
                let frame = match incoming {
                    Err(_) => break "idle timeout",
                    Ok(None) | Ok(Some(Err(_))) => break "connection closed",
                    Ok(Some(Ok(f))) => f,
                };
                let text = match frame {
                    Message::Text(t) => t,
                    Message::Binary(_) => {
                        reply_error(&mut tx, ErrorCode::BadMessage, "binary frames are not part of the protocol").await;
                        continue;
                    }
                    // A page that goes away (closed, navigated: code 1001) or a client that says
                    // it left is gone; any other close may be a client giving up on a socket it
                    // thinks dead, and resuming on another.
                    Message::Close(Some(f)) if f.code == 1001 || f.reason.as_str() == "left" => break "left",
                    Message::Close(_) => break "client closed",
                    Message::Ping(_) | Message::Pong(_) => continue,
                };
                if limiter.as_ref().is_some_and(|l| l.check().is_err()) {
                    // Tell the client once per streak; a flood gets dropped, not answered.
                    if limited_streak == 0 {
                        reply_error(&mut tx, ErrorCode::RateLimited, "too many messages; slow down").await;
                    }
                    limited_streak += 1;
                    continue;
                }
                limited_streak = 0;
                if text.len() > ctx.max_message_bytes {
                    reply_error(&mut tx, ErrorCode::MessageTooLarge, &format!("message of {} bytes exceeds the {} byte limit", text.len(), ctx.max_message_bytes)).await;
                    continue;
                }
                let msg = match parse_client_msg(text.as_str()) {
                    Ok(m) => m,
                    Err((code, message)) => {
                        reply_error(&mut tx, code, &message).await;
                        continue;
                    }
                };
                match handle(&mut tx, &ctx, &conn, &mut joined, msg).instrument(span.clone()).await {
                    Flow::Relay(up) => {
                        relay_to = Some((up, text.to_string()));
                        break "relayed";
                    }
                    Flow::Continue => {
                        if let Some(j) = &joined {
                            if span.is_disabled() || span.metadata().is_some() {
                                span.record("participant", tracing::field::display(&j.id));
                            }
                        }
                    }
                    Flow::Close(reason) => break reason,
                }
            }
        }
    };
    if let Some((up, first)) = relay_to {
        let reason = relay::pipe(tx, rx, *up, first)
            .instrument(span.clone())
            .await;
        debug!(parent: &span, reason, "session ended");
        METRICS.ws_connections.dec();
        return;
    }
    if let Some(j) = joined.take() {
        if let Some(cmd) = on_end(close_reason, j.id) {
            let _ = j.room.cmds.send(cmd).await;
        }
    }
    let _ = tx
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: close_reason.into(),
        })))
        .await;
    debug!(parent: &span, reason = close_reason, "session ended");
    span = tracing::Span::none();
    drop(span);
    METRICS.ws_connections.dec();
}

async fn send<S: Sink<Message> + Unpin>(tx: &mut S, msg: &ServerMsg) -> Result<(), ()> {
    let text = serde_json::to_string(msg).map_err(|_| ())?;
    tx.send(Message::Text(text.into())).await.map_err(|_| ())
}

async fn reply_error<S: Sink<Message> + Unpin>(tx: &mut S, code: ErrorCode, message: &str) {
    METRICS.signaling_error(code);
    let _ = send(tx, &ServerMsg::error(code, message)).await;
}

/// Largest rendered tile size a `track-view` may claim (device pixels, each side).
const MAX_VIEW_PIXELS: u32 = 16_384;

fn type_name(m: &ClientMsg) -> &'static str {
    match m {
        ClientMsg::Join { .. } => "join",
        ClientMsg::Resume { .. } => "resume",
        ClientMsg::Offer { .. } => "offer",
        ClientMsg::Answer { .. } => "answer",
        ClientMsg::Candidate { .. } => "candidate",
        ClientMsg::TrackView { .. } => "track-view",
        ClientMsg::Mute { .. } => "mute",
        ClientMsg::Leave => "leave",
        ClientMsg::Ping => "ping",
    }
}

async fn handle<S: Sink<Message> + Unpin>(
    tx: &mut S,
    ctx: &SessionContext,
    conn: &ConnInfo,
    joined: &mut Option<Joined>,
    msg: ClientMsg,
) -> Flow {
    METRICS
        .signaling_messages
        .with_label_values(&[type_name(&msg)])
        .inc();
    let cmd = match (msg, joined.as_ref()) {
        (ClientMsg::Ping, _) => {
            let _ = send(tx, &ServerMsg::Pong).await;
            return Flow::Continue;
        }
        (ClientMsg::Join { .. } | ClientMsg::Resume { .. }, Some(_)) => {
            reply_error(
                tx,
                ErrorCode::AlreadyJoined,
                "this socket has already joined a room",
            )
            .await;
            return Flow::Continue;
        }
        (ClientMsg::Join { room, name, token }, None) => {
            let token = token.or_else(|| conn.token.clone());
            return join(tx, ctx, conn, joined, &room, &name, token.as_deref()).await;
        }
        (
            ClientMsg::Resume {
                room,
                participant_id,
                token,
            },
            None,
        ) => return resume(tx, ctx, conn, joined, &room, participant_id, &token).await,
        (_, None) => {
            reply_error(tx, ErrorCode::NotJoined, "send join first").await;
            return Flow::Continue;
        }
        (ClientMsg::Offer { sdp, sources }, Some(j)) => RoomCmd::Offer {
            id: j.id.clone(),
            sdp,
            sources,
        },
        (ClientMsg::Mute { track_id, muted }, Some(j)) => RoomCmd::SelfMute {
            id: j.id.clone(),
            track_id,
            muted,
        },
        (ClientMsg::Answer { sdp }, Some(j)) => RoomCmd::Answer {
            id: j.id.clone(),
            sdp,
        },
        (ClientMsg::Candidate { candidate }, Some(j)) => RoomCmd::Candidate {
            id: j.id.clone(),
            candidate,
        },
        (
            ClientMsg::TrackView {
                track_id,
                visible,
                width,
                height,
            },
            Some(j),
        ) => RoomCmd::TrackView {
            id: j.id.clone(),
            track_id,
            view: View {
                visible,
                width: width.min(MAX_VIEW_PIXELS),
                height: height.min(MAX_VIEW_PIXELS),
            },
        },
        (ClientMsg::Leave, Some(_)) => return Flow::Close("left"),
    };
    let Some(j) = joined.as_ref() else {
        return Flow::Continue;
    };
    if j.room.cmds.send(cmd).await.is_err() {
        let _ = send(
            tx,
            &ServerMsg::error(ErrorCode::Removed, "the room is gone"),
        )
        .await;
        return Flow::Close("room gone");
    }
    Flow::Continue
}

#[allow(clippy::too_many_arguments)]
async fn join<S: Sink<Message> + Unpin>(
    tx: &mut S,
    ctx: &SessionContext,
    conn: &ConnInfo,
    joined: &mut Option<Joined>,
    room: &str,
    name: &str,
    token: Option<&str>,
) -> Flow {
    let started = Instant::now();
    if ctx.shutdown.is_cancelled() && ctx.cluster.is_none() {
        reply_error(
            tx,
            ErrorCode::Unavailable,
            "the server is shutting down; retry shortly",
        )
        .await;
        return Flow::Close("draining");
    }
    if ctx
        .join_limiter
        .as_ref()
        .is_some_and(|l| l.check_key(&conn.ip).is_err())
    {
        reply_error(
            tx,
            ErrorCode::RateLimited,
            "too many joins from this address; retry shortly",
        )
        .await;
        return Flow::Continue;
    }
    let Some(room_name) = RoomName::parse(room) else {
        reply_error(
            tx,
            ErrorCode::InvalidRoom,
            "room must be 1-64 characters of A-Z a-z 0-9 _ . -",
        )
        .await;
        return Flow::Continue;
    };
    // Nothing about the room is revealed before the token checks out.
    let grant = match ctx.auth.grant_for_join(token, room_name.as_str()) {
        Ok(g) => g,
        Err(e) => {
            reply_error(tx, ErrorCode::Unauthorized, &e.to_string()).await;
            return Flow::Close("unauthorized");
        }
    };
    let name = grant.name.as_deref().unwrap_or(name);
    let grant_expiry = grant.expires_at;
    let Some(display) = DisplayName::parse(name) else {
        reply_error(
            tx,
            ErrorCode::InvalidName,
            "name must be 1-64 characters without control characters",
        )
        .await;
        return Flow::Continue;
    };
    // A client in a reconnect loop (one identity joining again and again) is slowed down: each
    // join is a leave + join + renegotiation for everyone else in the room.
    let identity = grant
        .identity
        .clone()
        .unwrap_or_else(|| format!("{}@{}", display.as_str(), conn.ip));
    if let Some(limiter) = &ctx.identity_limiter {
        if let Err(not_until) = limiter.check_key(&identity) {
            use governor::clock::Clock;
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            METRICS.signaling_error(ErrorCode::RateLimited);
            let msg = ServerMsg::rate_limited(
                format!(
                    "this participant joins too often; retry in {:.1} s",
                    wait.as_secs_f64()
                ),
                wait,
            );
            let _ = send(tx, &msg).await;
            return Flow::Continue;
        }
        if limiter.len() > 10_000 {
            limiter.retain_recent();
        }
    }
    if let Some(cluster) = &ctx.cluster {
        let token = token.map(str::to_owned).or_else(|| conn.token.clone());
        match place(tx, cluster, conn, &room_name, true, token.as_deref()).await {
            Ok(Some(up)) => return Flow::Relay(up),
            Ok(None) => {}
            Err(()) => return Flow::Continue,
        }
    }
    let id = ParticipantId::mint();
    let (signal_tx, signal_rx) = mpsc::channel(SIGNAL_QUEUE);
    match ctx
        .rooms
        .join(
            &room_name,
            id.clone(),
            display,
            grant,
            crate::room::Role::Member,
            signal_tx,
        )
        .await
    {
        Ok((handle, accepted)) => {
            let msg = ServerMsg::Joined {
                ice_servers: ice_servers(ctx, &id, grant_expiry),
                participant_id: id.clone(),
                room: room_name.to_string(),
                participants: accepted.participants,
                resume_token: accepted.resume_token,
                resume_grace_ms: grace_ms(ctx),
            };
            if send(tx, &msg).await.is_err() {
                let _ = handle.cmds.send(RoomCmd::Leave { id }).await;
                return Flow::Close("send failed");
            }
            METRICS
                .join_duration
                .observe(started.elapsed().as_secs_f64());
            *joined = Some(Joined {
                id,
                room: handle,
                signal_rx,
            });
            Flow::Continue
        }
        Err(e) => {
            reply_error(tx, e.code(), &e.to_string()).await;
            Flow::Continue
        }
    }
}

/// The ICE servers for one participant: the configured ones, plus TURN credentials of its own.
pub(crate) fn ice_servers(
    ctx: &SessionContext,
    id: &ParticipantId,
    expiry: Option<u64>,
) -> Vec<IceServer> {
    let mut servers = ctx.ice_servers.clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    servers.extend(turn::credentials(&ctx.turn, id.as_str(), now, expiry));
    servers
}

fn grace_ms(ctx: &SessionContext) -> u64 {
    ctx.resume_grace.as_millis().try_into().unwrap_or(u64::MAX)
}

/// In a cluster: where the join (`create`) or resume of `room` goes. `Ok(None)`: here;
/// `Ok(Some)`: relayed to the owning node; `Err`: refused (the client was told why).
async fn place<S: Sink<Message> + Unpin>(
    tx: &mut S,
    cluster: &Cluster,
    conn: &ConnInfo,
    room: &RoomName,
    create: bool,
    token: Option<&str>,
) -> Result<Option<Box<Upstream>>, ()> {
    // A join that cannot go where its room is retries (`unavailable`); a resume that cannot
    // joins afresh (`resume_failed`).
    let refusal = if create {
        ErrorCode::Unavailable
    } else {
        ErrorCode::ResumeFailed
    };
    let node: NodeRecord = match cluster.place(room, create).await {
        Ok(Placement::Local) => return Ok(None),
        Ok(Placement::Remote(node)) if !conn.relayed => node,
        Ok(Placement::Nowhere) => {
            let why = "no node hosts this session; join afresh";
            reply_error(tx, ErrorCode::ResumeFailed, why).await;
            return Err(());
        }
        Ok(Placement::Remote(_)) => {
            // A relayed request whose room moved meanwhile: the client retries via any node.
            let why = "the room is moving to another node; retry shortly";
            reply_error(tx, refusal, why).await;
            return Err(());
        }
        Err(e) => {
            reply_error(tx, ErrorCode::Unavailable, &e.to_string()).await;
            return Err(());
        }
    };
    match relay::connect(cluster, &node, conn.ip, token).await {
        Ok(up) => Ok(Some(Box::new(up))),
        Err(e) => {
            reply_error(tx, refusal, &format!("{e}; retry shortly")).await;
            Err(())
        }
    }
}

/// A new socket takes a dropped session back (see `room::resume`).
async fn resume<S: Sink<Message> + Unpin>(
    tx: &mut S,
    ctx: &SessionContext,
    conn: &ConnInfo,
    joined: &mut Option<Joined>,
    room: &str,
    id: ParticipantId,
    token: &str,
) -> Flow {
    if let (Some(cluster), Some(name)) = (&ctx.cluster, RoomName::parse(room)) {
        match place(tx, cluster, conn, &name, false, conn.token.as_deref()).await {
            Ok(Some(up)) => return Flow::Relay(up),
            Ok(None) => {}
            Err(()) => return Flow::Continue,
        }
    }
    if ctx.shutdown.is_cancelled() {
        // Nothing here lives on: the client joins afresh (elsewhere, or once we are back).
        METRICS.signaling_error(ErrorCode::ResumeFailed);
        let _ = send(
            tx,
            &ServerMsg::error(
                ErrorCode::ResumeFailed,
                "the server is shutting down; join afresh",
            ),
        )
        .await;
        return Flow::Close("draining");
    }
    let (signal_tx, signal_rx) = mpsc::channel(SIGNAL_QUEUE);
    let result = match RoomName::parse(room) {
        Some(name) => ctx.rooms.resume(&name, id.clone(), token, signal_tx).await,
        None => Err(crate::room::resume::ResumeError::UnknownSession),
    };
    match result {
        Ok((handle, accepted)) => {
            METRICS.session_resumes.inc();
            let msg = ServerMsg::Resumed {
                // The access token's expiry is not known here; TURN credentials get the TTL.
                ice_servers: ice_servers(ctx, &id, None),
                participant_id: id.clone(),
                room: room.to_owned(),
                participants: accepted.participants,
                resume_token: accepted.resume_token,
                resume_grace_ms: grace_ms(ctx),
            };
            if send(tx, &msg).await.is_err() {
                let _ = handle.cmds.send(RoomCmd::Detach { id }).await;
                return Flow::Close("send failed");
            }
            *joined = Some(Joined {
                id,
                room: handle,
                signal_rx,
            });
        }
        Err(e) => {
            METRICS.signaling_error(ErrorCode::ResumeFailed);
            let _ = send(tx, &refused(e)).await;
        }
    }
    Flow::Continue
}
