//! The per-room task: the I/O shell around the sans-IO [`Room`]. It owns the room, its inbox and
//! command channel, its directory lease and the socket sender; it reads the clock and hands the
//! time to every input.
//!
//! # The run loop
//! Wait for a command, a datagram or the room's next deadline; feed it to the room with the
//! current time (up to [`INBOX_BUDGET`] datagrams per wake-up, then commands and timers get a
//! turn); run due timers; send everything the room queued in one batch (`sendmmsg`); record the
//! forward latency. When the room is empty it leaves the directory, turns away joins that raced
//! into it, and ends. No locks: the room's state lives in this task alone.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{info, info_span, Instrument};

use super::lease::DirectoryLease;
use super::state::Room;
use super::{JoinError, RoomCmd};
use crate::telemetry::METRICS;
use crate::transport::udp::{Datagram, UdpTx};
use crate::webhooks::{EventKind, WebhookEvent, Webhooks};

/// Datagrams handled per wake-up before commands and timers get a turn.
pub const INBOX_BUDGET: usize = 64;
/// Shortest interval between two timer passes.
const MIN_TIMER_INTERVAL: Duration = Duration::from_millis(1);

/// Runs `room` until its last participant leaves.
pub async fn run(
    mut room: Room,
    lease: DirectoryLease,
    udp: UdpTx,
    webhooks: Webhooks,
    mut cmds: mpsc::Receiver<RoomCmd>,
    mut inbox: mpsc::Receiver<Datagram>,
) {
    let span = info_span!("room", name = %lease.name());
    async move {
        info!("room opened");
        let mut last_timer_pass = Instant::now();
        loop {
            // At most one timer pass per millisecond, even if a peer connection keeps reporting
            // a deadline in the past.
            let deadline = room
                .next_deadline(Instant::now())
                .max(last_timer_pass + MIN_TIMER_INTERVAL);
            // Datagrams before the timer (a timer that is always due must not starve the
            // inbox); due timers then run after whatever woke us, so a busy inbox cannot starve
            // RTCP, retransmissions and timeouts either.
            tokio::select! {
                biased;
                cmd = cmds.recv() => match cmd {
                    Some(cmd) => room.on_cmd(Instant::now(), cmd),
                    None => break,
                },
                Some(d) = inbox.recv() => {
                    room.on_datagram(Instant::now(), d);
                    for _ in 1..INBOX_BUDGET {
                        match inbox.try_recv() {
                            Ok(d) => room.on_datagram(Instant::now(), d),
                            Err(_) => break,
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                last_timer_pass = now;
                room.on_timeout(now);
            }
            udp.send_batch(room.transmits_mut());
            room.send_tcp();
            for event in room.take_events() {
                webhooks.emit(event);
            }
            if let Some(t) = room.take_oldest_forwarded() {
                METRICS.forward_latency.observe(t.elapsed().as_secs_f64());
            }
            if room.should_close(now) {
                // Leave the directory first so new joins create a fresh room, then turn away
                // joins that raced into this one.
                lease.release();
                cmds.close();
                while let Ok(cmd) = cmds.try_recv() {
                    if let RoomCmd::Join { reply, .. } = cmd {
                        let _ = reply.send(Err(JoinError::Closing));
                    }
                }
                break;
            }
        }
        for event in room.take_events() {
            webhooks.emit(event);
        }
        webhooks.emit(WebhookEvent::new(
            EventKind::RoomFinished,
            room.name().as_str(),
        ));
        // The room's `Drop` frees its peers, routes and gauges; then the lease's, its entry.
        drop(room);
        info!("room closed");
    }
    .instrument(span)
    .await
}
