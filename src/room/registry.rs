//! The room directory: name → handle of the room's task. Touched at signaling rate only (join),
//! never on the packet path. Rooms are created on first join and remove themselves when empty;
//! a join that races with a closing room is retried on a fresh one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tracing::error;

use super::task::Room;
use super::{JoinAccepted, JoinError, RoomCmd, RoomContext, RoomSnapshot};
use crate::auth::Grant;
use crate::ids::{DisplayName, ParticipantId, RoomName};
use crate::signal::protocol::ServerMsg;
use crate::telemetry::METRICS;

/// Commands queued per room before senders wait.
const ROOM_CMD_CAPACITY: usize = 256;

/// A running room, as the directory knows it.
#[derive(Clone, Debug)]
pub struct RoomHandle {
    /// Commands to the room task.
    pub cmds: mpsc::Sender<RoomCmd>,
    /// Tells this room apart from a later one with the same name.
    pub generation: u64,
}

/// The shared directory map (rooms remove themselves from it).
pub type RoomsMap = Arc<DashMap<RoomName, RoomHandle>>;

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

    /// Whether no room is open.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn spawn(&self, name: RoomName) -> RoomHandle {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let (cmd_tx, cmd_rx) = mpsc::channel(ROOM_CMD_CAPACITY);
        let (inbox_tx, inbox_rx) = mpsc::channel(self.ctx.media.room_inbox_capacity);
        let room = Room::new(
            name.clone(),
            generation,
            self.ctx.clone(),
            self.map.clone(),
            inbox_tx,
        );
        // A panic inside one room is contained here: its `Drop` frees its state (routes,
        // gauges, participants' sessions), other rooms run on.
        tokio::spawn(async move {
            let run = std::panic::AssertUnwindSafe(room.run(cmd_rx, inbox_rx));
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

    /// Joins `room` (creating it if needed). Returns the room's handle and what the room said.
    pub async fn join(
        &self,
        room: &RoomName,
        id: ParticipantId,
        name: DisplayName,
        grant: Grant,
        signal: mpsc::Sender<ServerMsg>,
    ) -> Result<(RoomHandle, JoinAccepted), JoinError> {
        for _ in 0..3 {
            if !self.map.contains_key(room) && self.map.len() >= self.ctx.limits.max_rooms {
                return Err(JoinError::ServerFull);
            }
            let handle = self
                .map
                .entry(room.clone())
                .or_insert_with(|| self.spawn(room.clone()))
                .clone();
            let (reply_tx, reply_rx) = oneshot::channel();
            let cmd = RoomCmd::Join {
                id: id.clone(),
                name: name.clone(),
                grant: grant.clone(),
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
