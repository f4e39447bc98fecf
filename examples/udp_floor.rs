//! The machine's floor for forwarding: CPU per packet of bare `sendmmsg` batches of 32
//! 1216-byte datagrams on loopback, drained by a `recvmmsg` thread in the same process. It is
//! measured like the server's figure in `scripts/bench-load.sh` (CPU time / packets), so the two
//! can be set side by side: the sender thread's CPU includes the kernel's loopback delivery of
//! each datagram, as the server's does.
//!
//! `cargo run --release --example udp_floor [seconds]`

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCH: usize = 32;
const LEN: usize = 1216;

/// User + system CPU seconds of this thread (`who = RUSAGE_THREAD`) or process.
fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: `getrusage` fills the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn main() -> std::io::Result<()> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rx = UdpSocket::bind("127.0.0.1:0")?;
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    tx.connect(rx.local_addr()?)?;
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let rx_cpu = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, received, rx_cpu) = (stop.clone(), received.clone(), rx_cpu.clone());
        rx.set_read_timeout(Some(Duration::from_millis(50)))?;
        std::thread::spawn(move || {
            let mut bufs = vec![[0u8; 2048]; BATCH];
            let fd = rx.as_raw_fd();
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: zeroed C structs, each pointing at a live buffer below.
                let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
                let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
                for i in 0..BATCH {
                    iovs[i].iov_base = bufs[i].as_mut_ptr() as *mut libc::c_void;
                    iovs[i].iov_len = bufs[i].len();
                    hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
                    hdrs[i].msg_hdr.msg_iovlen = 1;
                }
                // SAFETY: the headers point at `iovs` and `bufs`, alive for the call.
                let n = unsafe {
                    libc::recvmmsg(fd, hdrs.as_mut_ptr(), BATCH as u32, 0, std::ptr::null_mut())
                };
                if n > 0 {
                    received.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            rx_cpu.store(
                (cpu_seconds(libc::RUSAGE_THREAD) * 1e9) as u64,
                Ordering::Relaxed,
            );
        })
    };
    let payload = [0x80u8; LEN];
    let fd = tx.as_raw_fd();
    let process_start = cpu_seconds(libc::RUSAGE_SELF);
    let thread_start = cpu_seconds(libc::RUSAGE_THREAD);
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut sent = 0u64;
    while Instant::now() < end {
        // SAFETY: zeroed C structs pointing at `payload`, alive for the call; the kernel only
        // reads it.
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..BATCH {
            iovs[i].iov_base = payload.as_ptr() as *mut libc::c_void;
            iovs[i].iov_len = LEN;
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: as above.
        let n = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), BATCH as u32, 0) };
        if n > 0 {
            sent += n as u64;
        }
        // Stay within the receiver's pace so the figure is not about drops.
        while sent.saturating_sub(received.load(Ordering::Relaxed)) > 256 {
            std::thread::yield_now();
        }
    }
    let sender = cpu_seconds(libc::RUSAGE_THREAD) - thread_start;
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    let process = cpu_seconds(libc::RUSAGE_SELF) - process_start;
    let got = received.load(Ordering::Relaxed);
    let us = |s: f64| s * 1e6 / sent.max(1) as f64;
    println!(
        "sendmmsg x{BATCH}, {LEN} B on loopback: {sent} sent, {got} received; \
         sender thread {:.2} us/packet, sender + receiver {:.2} us/packet (receiver thread {:.2})",
        us(sender),
        us(process),
        rx_cpu.load(Ordering::Relaxed) as f64 / 1e3 / sent.max(1) as f64,
    );
    Ok(())
}
