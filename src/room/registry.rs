//! The room directory: name → handle of the room's task. Touched at signaling rate only (join),
//! never on the packet path. Rooms are created on first join and remove themselves when empty;
//! a join that races with a closing room is retried on a fresh one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tracing::error;

use super::admin::RoomOptions;
use super::lease::DirectoryLease;
pub use super::lease::{RoomHandle, RoomsMap};
use super::resume::{ResumeAccepted, ResumeError};
use super::state::Room;
use super::{task, JoinAccepted, JoinError, Role, RoomCmd, RoomContext, RoomSnapshot};
use crate::auth::Grant;
use crate::ids::{DisplayName, ParticipantId, RoomName};
use crate::signal::protocol::ServerMsg;
use crate::telemetry::METRICS;
use crate::webhooks::{EventKind, WebhookEvent};

/// Commands queued per room before senders wait.
const ROOM_CMD_CAPACITY: usize = 256;

/// All rooms of this server.
pub struct Rooms {
    map: RoomsMap,
    ctx: RoomContext,
    next_generation: AtomicU64,
}

impl Rooms {
    /// An empty directory.
    pub fn new(ctx: RoomContext) -> Self {
        Self {
            map: Arc::new(DashMap::new()),
            ctx,
            next_generation: AtomicU64::new(1),
        }
    }

    /// The server's room context.
    pub fn context(&self) -> &RoomContext {
        &self.ctx
    }

    /// Number of open rooms.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Names of the open rooms.
    pub fn names(&self) -> Vec<RoomName> {
        self.map.iter().map(|e| e.key().clone()).collect()
    }

    /// Whether no room is open.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn spawn(&self, name: RoomName, options: Option<RoomOptions>) -> RoomHandle {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let (cmd_tx, cmd_rx) = mpsc::channel(ROOM_CMD_CAPACITY);
        let (inbox_tx, inbox_rx) = mpsc::channel(self.ctx.media.room_inbox_capacity);
        let mut room = Room::new(
            name.clone(),
            self.ctx.settings(),
            self.ctx.demux.clone(),
            inbox_tx,
        );
        if let Some(options) = options {
            room.on_cmd(std::time::Instant::now(), RoomCmd::Configure { options });
        }
        let lease = DirectoryLease::new(self.map.clone(), name.clone(), generation);
        let udp = self.ctx.udp.clone();
        let webhooks = self.ctx.webhooks.clone();
        webhooks.emit(WebhookEvent::new(EventKind::RoomStarted, name.as_str()));
        // A panic inside one room is contained here: its `Drop` frees its state (routes,
        // gauges, participants' sessions) and its lease its directory entry; other rooms run on.
        tokio::spawn(async move {
            let run = task::run(room, lease, udp, webhooks, cmd_rx, inbox_rx);
            let run = std::panic::AssertUnwindSafe(run);
            if let Err(panic) = run.catch_unwind().await {
                METRICS.room_panics.inc();
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                error!(room = %name, panic = %what, "room task panicked; room closed");
            }
        });
        RoomHandle {
            cmds: cmd_tx,
            generation,
        }
    }

    /// Tells every room that the server drains (see [`RoomCmd::Drain`]).
    pub async fn drain(&self) {
        let handles: Vec<RoomHandle> = self.map.iter().map(|e| e.value().clone()).collect();
        for h in handles {
            let _ = h.cmds.send(RoomCmd::Drain).await;
        }
    }

    /// Snapshots of every room (rooms that do not answer within a second are skipped).
    pub async fn snapshots(&self) -> Vec<RoomSnapshot> {
        let handles: Vec<RoomHandle> = self.map.iter().map(|e| e.value().clone()).collect();
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            if let Some(s) = Self::ask_snapshot(&h).await {
                out.push(s);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Snapshot of one room, if it exists.
    pub async fn snapshot(&self, room: &RoomName) -> Option<RoomSnapshot> {
        let h = self.map.get(room)?.value().clone();
        Self::ask_snapshot(&h).await
    }

    async fn ask_snapshot(h: &RoomHandle) -> Option<RoomSnapshot> {
        let (tx, rx) = oneshot::channel();
        h.cmds.send(RoomCmd::Snapshot { reply: tx }).await.ok()?;
        tokio::time::timeout(std::time::Duration::from_secs(1), rx)
            .await
            .ok()?
            .ok()
    }

    /// Creates a room with `options`, or applies them to the room of that name. Returns
    /// whether it was created.
    pub async fn create(&self, room: &RoomName, options: RoomOptions) -> Result<bool, JoinError> {
        if let Some(h) = self.handle(room) {
            if h.cmds
                .send(RoomCmd::Configure {
                    options: options.clone(),
                })
                .await
                .is_ok()
            {
                return Ok(false);
            }
            self.map
                .remove_if(room, |_, e| e.generation == h.generation);
        }
        if self.map.len() >= self.ctx.limits.max_rooms {
            return Err(JoinError::ServerFull);
        }
        let mut created = false;
        self.map.entry(room.clone()).or_insert_with(|| {
            created = true;
            self.spawn(room.clone(), Some(options.clone()))
        });
        if !created {
            // Created by a join meanwhile: it takes the options.
            if let Some(h) = self.handle(room) {
                let _ = h.cmds.send(RoomCmd::Configure { options }).await;
            }
        }
        Ok(created)
    }

    /// The handle of a room, if it is open.
    pub fn handle(&self, room: &RoomName) -> Option<RoomHandle> {
        self.map.get(room).map(|e| e.value().clone())
    }

    /// Sends a command built around a reply channel to `room` and waits (up to a second) for
    /// the reply; `None` if the room is not open or does not answer.
    pub async fn ask<T>(
        &self,
        room: &RoomName,
        cmd: impl FnOnce(oneshot::Sender<T>) -> RoomCmd,
    ) -> Option<T> {
        let h = self.handle(room)?;
        let (tx, rx) = oneshot::channel();
        h.cmds.send(cmd(tx)).await.ok()?;
        tokio::time::timeout(std::time::Duration::from_secs(1), rx)
            .await
            .ok()?
            .ok()
    }

    /// Closes a room, removing everyone with `reason`; `false` if it is not open.
    pub async fn close(&self, room: &RoomName, reason: &str) -> bool {
        let Some(h) = self.handle(room) else {
            return false;
        };
        let reason = reason.to_owned();
        h.cmds.send(RoomCmd::Close { reason }).await.is_ok()
    }

    /// Takes back the session of `id` in `room` with its resume token.
    pub async fn resume(
        &self,
        room: &RoomName,
        id: ParticipantId,
        token: &str,
        signal: mpsc::Sender<ServerMsg>,
    ) -> Result<(RoomHandle, ResumeAccepted), ResumeError> {
        let handle = self
            .map
            .get(room)
            .map(|e| e.value().clone())
            .ok_or(ResumeError::UnknownSession)?;
        let (reply_tx, reply_rx) = oneshot::channel();
        let cmd = RoomCmd::Resume {
            id,
            token: token.to_owned(),
            signal,
            reply: reply_tx,
        };
        handle
            .cmds
            .send(cmd)
            .await
            .map_err(|_| ResumeError::Closing)?;
        let accepted = reply_rx.await.map_err(|_| ResumeError::Closing)??;
        Ok((handle, accepted))
    }

    /// Joins `room` (creating it if needed). Returns the room's handle and what the room said.
    pub async fn join(
        &self,
        room: &RoomName,
        id: ParticipantId,
        name: DisplayName,
        grant: Grant,
        role: Role,
        signal: mpsc::Sender<ServerMsg>,
    ) -> Result<(RoomHandle, JoinAccepted), JoinError> {
        for _ in 0..3 {
            if !self.map.contains_key(room) && self.map.len() >= self.ctx.limits.max_rooms {
                return Err(JoinError::ServerFull);
            }
            let handle = self
                .map
                .entry(room.clone())
                .or_insert_with(|| self.spawn(room.clone(), None))
                .clone();
            let (reply_tx, reply_rx) = oneshot::channel();
            let cmd = RoomCmd::Join {
                id: id.clone(),
                name: name.clone(),
                grant: grant.clone(),
                role: role.clone(),
                signal: signal.clone(),
                reply: reply_tx,
            };
            if handle.cmds.send(cmd).await.is_err() {
                self.map
                    .remove_if(room, |_, h| h.generation == handle.generation);
                continue;
            }
            match reply_rx.await {
                Ok(Ok(accepted)) => return Ok((handle, accepted)),
                Ok(Err(JoinError::Closing)) | Err(_) => {
                    self.map
                        .remove_if(room, |_, h| h.generation == handle.generation);
                }
                Ok(Err(e)) => return Err(e),
            }
        }
        Err(JoinError::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::auth::Grant;
    use crate::config::{LimitsConfig, MediaConfig};
    use crate::transport::udp::UdpTransport;

    async fn rooms() -> (Rooms, UdpTransport) {
        let udp = UdpTransport::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let ctx = RoomContext {
            udp: udp.tx.clone(),
            demux: udp.demux.clone(),
            advertised: crate::room::Advertised::udp_only(udp.tx.local_addr()),
            media: MediaConfig::default(),
            ice_servers: vec![],
            resume_grace: Duration::from_secs(15),
            webhooks: crate::webhooks::Webhooks::disabled(),
            limits: LimitsConfig {
                max_rooms: 2,
                max_participants_per_room: 1,
                ..LimitsConfig::default()
            },
        };
        (Rooms::new(ctx), udp)
    }

    async fn join(
        rooms: &Rooms,
        room: &str,
    ) -> Result<(RoomHandle, mpsc::Receiver<ServerMsg>), JoinError> {
        let (tx, rx) = mpsc::channel(16);
        let name = RoomName::parse(room).expect("valid");
        rooms
            .join(
                &name,
                ParticipantId::mint(),
                DisplayName::parse("x").expect("valid"),
                Grant::open(),
                Role::Member,
                tx,
            )
            .await
            .map(|(h, _)| (h, rx))
    }

    #[tokio::test]
    async fn a_panicking_room_is_closed_and_others_keep_running() {
        let (rooms, _udp) = rooms().await;
        let (doomed, mut doomed_signal) = join(&rooms, "doomed").await.expect("join");
        let (_ok, _ok_signal) = join(&rooms, "healthy").await.expect("join");
        let panics_before = METRICS.room_panics.get();
        doomed.cmds.send(RoomCmd::Panic).await.expect("send");
        // The participant's signaling channel is told (or simply closed) as the room unwinds.
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            while doomed_signal.recv().await.is_some() {}
        })
        .await;
        assert!(
            closed.is_ok(),
            "the panicked room's participant was not released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(METRICS.room_panics.get(), panics_before + 1);
        assert!(rooms
            .snapshot(&RoomName::parse("doomed").unwrap())
            .await
            .is_none());
        let healthy = rooms.snapshot(&RoomName::parse("healthy").unwrap()).await;
        assert_eq!(healthy.map(|s| s.participants.len()), Some(1));
    }

    #[tokio::test]
    async fn room_and_server_capacity_limits_are_enforced() {
        let (rooms, _udp) = rooms().await;
        let _a = join(&rooms, "a").await.expect("join");
        assert!(matches!(join(&rooms, "a").await, Err(JoinError::RoomFull)));
        let _b = join(&rooms, "b").await.expect("join");
        assert!(matches!(
            join(&rooms, "c").await,
            Err(JoinError::ServerFull)
        ));
    }
}
