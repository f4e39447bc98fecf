//! The only socket code: the shared UDP media port. One receive task reads datagrams in
//! budgeted batches, routes each through the [`Demuxer`] and hands it to its room's bounded
//! inbox with `try_send` (a slow room drops its own datagrams, never stalls the others).
//! Rooms send through [`UdpTx`] without blocking.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::demux::{Demuxer, Unrouted};
use super::tcp::{TcpLink, TcpRoutes};
use crate::ids::PeerKey;
use crate::telemetry::DropReason;
use crate::telemetry::METRICS;

/// Largest datagram accepted (above any sane MTU); longer ones are truncated and dropped.
const MAX_DATAGRAM: usize = 2048;
/// Datagrams handled per wake-up before yielding (fairness with the control channel).
const RECV_BUDGET: usize = 64;
/// Datagrams per `sendmmsg` call.
pub const SEND_BATCH: usize = 32;

/// One datagram for a room.
#[derive(Debug)]
pub struct Datagram {
    /// The peer connection it belongs to.
    pub peer: PeerKey,
    /// Source address.
    pub from: SocketAddr,
    /// Bytes.
    pub data: BytesMut,
    /// When it was read (forward latency is measured from here).
    pub at: Instant,
    /// The ICE-TCP connection it came on (`None`: the UDP port).
    pub tcp: Option<TcpLink>,
}

/// A room's datagram queue.
pub type RoomInbox = mpsc::Sender<Datagram>;

/// Where a ufrag's datagrams go.
#[derive(Clone, Debug)]
pub struct Route {
    /// The room's inbox.
    pub inbox: RoomInbox,
    /// The peer inside the room.
    pub peer: PeerKey,
}

/// Changes to the routing table, sent by rooms.
#[derive(Debug)]
pub enum DemuxCmd {
    /// Route this ufrag.
    Register(String, Route),
    /// Stop routing this ufrag (and forget its addresses).
    Unregister(String),
}

/// Handle rooms use to register peers with the receive task (and the ICE-TCP listener).
#[derive(Clone, Debug)]
pub struct DemuxHandle {
    tx: mpsc::UnboundedSender<DemuxCmd>,
    /// The same routes for ICE-TCP connections, read once per new connection.
    tcp: TcpRoutes,
}

impl DemuxHandle {
    /// A handle and the receiving end of its commands, for driving a room without the
    /// receive task (tests, benchmarks).
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<DemuxCmd>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                tx,
                tcp: TcpRoutes::default(),
            },
            rx,
        )
    }

    /// The route table the ICE-TCP listener reads.
    pub fn tcp_routes(&self) -> TcpRoutes {
        self.tcp.clone()
    }

    /// Routes `ufrag` to `route`. Takes effect before any later-read datagram is routed.
    pub fn register(&self, ufrag: String, route: Route) {
        self.tcp_table().insert(ufrag.clone(), route.clone());
        // The receiver only goes away at shutdown, when nothing needs routing any more.
        let _ = self.tx.send(DemuxCmd::Register(ufrag, route));
    }

    /// Stops routing `ufrag`.
    pub fn unregister(&self, ufrag: String) {
        self.tcp_table().remove(&ufrag);
        let _ = self.tx.send(DemuxCmd::Unregister(ufrag));
    }

    fn tcp_table(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Route>> {
        // Poisoned only by a panic inside one insert/remove: the map is still consistent.
        self.tcp.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Non-blocking sender on the shared socket.
#[derive(Clone, Debug)]
pub struct UdpTx {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
}

impl UdpTx {
    /// The socket's local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sends one datagram now or drops it (counted) when the socket buffer is full.
    pub fn send(&self, to: SocketAddr, buf: &[u8]) {
        match self.socket.try_send_to(buf, to) {
            Ok(_) => METRICS.udp_tx_datagrams.inc(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                METRICS.count_drop(DropReason::SocketFull, 1)
            }
            Err(e) => tracing::debug!(%e, %to, "udp send failed"),
        }
    }

    /// Sends every datagram in `batch` (then clears it) with as few syscalls as possible:
    /// `sendmmsg` on Linux, up to [`SEND_BATCH`] datagrams per call. Never blocks; what the
    /// socket buffer cannot take is dropped and counted.
    pub fn send_batch(&self, batch: &mut Vec<(SocketAddr, BytesMut)>) {
        #[cfg(target_os = "linux")]
        for chunk in batch.chunks(SEND_BATCH) {
            self.send_mmsg(chunk);
        }
        #[cfg(not(target_os = "linux"))]
        for (to, buf) in batch.iter() {
            self.send(*to, buf);
        }
        batch.clear();
    }

    #[cfg(target_os = "linux")]
    fn send_mmsg(&self, chunk: &[(SocketAddr, BytesMut)]) {
        use socket2::SockAddr;
        use std::os::fd::AsRawFd;

        let n = chunk.len().min(SEND_BATCH);
        let addrs: [Option<SockAddr>; SEND_BATCH] =
            std::array::from_fn(|i| chunk.get(i).map(|(a, _)| SockAddr::from(*a)));
        // SAFETY: all-zero is a valid value for these plain C structs.
        let mut iovs: [libc::iovec; SEND_BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            let (Some(addr), Some((_, buf))) = (&addrs[i], chunk.get(i)) else {
                break;
            };
            iovs[i] = libc::iovec {
                iov_base: buf.as_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            };
            hdrs[i].msg_hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
            hdrs[i].msg_hdr.msg_namelen = addr.len();
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        let fd = self.socket.as_raw_fd();
        let (mut off, mut sent) = (0, 0);
        while off < n {
            // SAFETY: `hdrs[off..n]` point at `iovs`, `addrs` and the buffers in `chunk`, all of
            // which outlive this call; the kernel only reads them.
            let r = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr().add(off), (n - off) as u32, 0) };
            if r > 0 {
                off += r as usize;
                sent += r as u64;
                continue;
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                METRICS.count_drop(DropReason::SocketFull, (n - off) as u64);
                break;
            }
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // A datagram the kernel refuses (e.g. unreachable destination): skip just it.
            tracing::debug!(%e, "udp send failed");
            off += 1;
        }
        METRICS.udp_tx_datagrams.inc_by(sent);
    }
}

/// The bound media port.
pub struct UdpTransport {
    /// Sender for rooms.
    pub tx: UdpTx,
    /// Routing-table handle for rooms.
    pub demux: DemuxHandle,
    receiver: Option<(Arc<UdpSocket>, mpsc::UnboundedReceiver<DemuxCmd>)>,
}

impl UdpTransport {
    /// Binds the media port.
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        Self::bind_with_buffers(addr, 0).await
    }

    /// Binds the media port asking the kernel for `buffer_bytes` of receive and send buffer
    /// (0: the system default). Bursts from many peers otherwise overflow the default ~200 KiB
    /// and the kernel drops datagrams before the server sees them. The kernel caps the size at
    /// `net.core.rmem_max` / `wmem_max`.
    pub async fn bind_with_buffers(addr: SocketAddr, buffer_bytes: usize) -> io::Result<Self> {
        let domain = socket2::Domain::for_address(addr);
        let raw = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        if buffer_bytes > 0 {
            if let Err(e) = raw.set_recv_buffer_size(buffer_bytes) {
                tracing::warn!(%e, "could not enlarge the UDP receive buffer");
            }
            if let Err(e) = raw.set_send_buffer_size(buffer_bytes) {
                tracing::warn!(%e, "could not enlarge the UDP send buffer");
            }
        }
        raw.set_nonblocking(true)?;
        raw.bind(&addr.into())?;
        let socket = Arc::new(UdpSocket::from_std(raw.into())?);
        let local = socket.local_addr()?;
        let (demux, rx) = DemuxHandle::channel();
        Ok(Self {
            tx: UdpTx {
                socket: socket.clone(),
                local,
            },
            demux,
            receiver: Some((socket, rx)),
        })
    }

    /// Asks a STUN server which address this socket's packets come from (before the receive
    /// task starts: it reads the answer itself).
    pub async fn discover_mapped_address(
        &self,
        server: &str,
    ) -> Result<SocketAddr, super::stun_discover::DiscoverError> {
        let Some((socket, _)) = &self.receiver else {
            return Err(io::Error::other("the receive task already owns the socket").into());
        };
        super::stun_discover::mapped_address(socket, server).await
    }

    /// Spawns the receive task; it ends when `shutdown` is cancelled.
    pub fn spawn_receiver(&mut self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let (socket, ctrl) = self
            .receiver
            .take()
            .expect("spawn_receiver is called once, by the server at start");
        tokio::spawn(receive_loop(socket, ctrl, shutdown))
    }
}

fn apply(demux: &mut Demuxer<Route>, cmd: DemuxCmd) {
    match cmd {
        DemuxCmd::Register(ufrag, route) => demux.register(ufrag, route),
        DemuxCmd::Unregister(ufrag) => demux.unregister(&ufrag),
    }
}

async fn receive_loop(
    socket: Arc<UdpSocket>,
    mut ctrl: mpsc::UnboundedReceiver<DemuxCmd>,
    shutdown: CancellationToken,
) {
    let mut demux: Demuxer<Route> = Demuxer::default();
    let mut batch = RecvBatch::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            cmd = ctrl.recv() => match cmd {
                Some(cmd) => apply(&mut demux, cmd),
                None => return,
            },
            ready = socket.readable() => {
                if let Err(e) = ready {
                    tracing::error!(%e, "media socket failed");
                    return;
                }
                // Registrations sent before a datagram arrived must apply before routing it.
                while let Ok(cmd) = ctrl.try_recv() {
                    apply(&mut demux, cmd);
                }
                let mut handled = 0;
                while handled < RECV_BUDGET {
                    match batch.recv(&socket) {
                        Ok(0) => break,
                        Ok(n) => {
                            METRICS.udp_rx_datagrams.inc_by(n as u64);
                            for (data, from) in batch.datagrams() {
                                route_one(&mut demux, data, from);
                            }
                            handled += n;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // ICMP errors (port unreachable) surface here on Linux: not fatal.
                        Err(e) => tracing::trace!(%e, "udp recv error"),
                    }
                }
            }
        }
    }
}

/// Datagrams per `recvmmsg` call.
const RECV_BATCH: usize = 32;
/// A receive slot's slab has room for this many largest datagrams (more of typical size)
/// before a new one is needed. Small on purpose: a datagram still queued in a room keeps its
/// whole slab alive, so a full inbox holds at most this many times the memory it used to.
const SLAB_DATAGRAMS: usize = 4;

/// Receive buffers: one syscall reads up to [`RECV_BATCH`] datagrams, each straight into the
/// spare capacity of its slot's slab, and is handed to the room as a `BytesMut` split off that
/// slab: no copy, and one allocation per several datagrams (a slab whose datagrams have all
/// been dropped is reused in place).
struct RecvBatch {
    slots: Vec<BytesMut>,
    got: Vec<(usize, Option<SocketAddr>)>,
}

impl RecvBatch {
    fn new() -> Self {
        Self {
            slots: (0..RECV_BATCH)
                .map(|_| BytesMut::with_capacity(SLAB_DATAGRAMS * MAX_DATAGRAM))
                .collect(),
            got: Vec::with_capacity(RECV_BATCH),
        }
    }

    /// Makes room for one more datagram in every slot.
    fn reserve(&mut self) {
        for slot in &mut self.slots {
            if slot.capacity() - slot.len() < MAX_DATAGRAM {
                slot.reserve(SLAB_DATAGRAMS * MAX_DATAGRAM);
            }
        }
    }

    /// The datagrams of the last [`recv`](Self::recv), each split off its slot (truncated or
    /// unparsable-address ones are left out and counted).
    fn datagrams(&mut self) -> impl Iterator<Item = (BytesMut, SocketAddr)> + '_ {
        self.got
            .iter()
            .zip(self.slots.iter_mut())
            .filter_map(|(&(len, from), slot)| {
                let data = slot.split_to(len.min(slot.len()));
                if len >= MAX_DATAGRAM || from.is_none() {
                    METRICS.count_drop(DropReason::BadDatagram, 1);
                    return None;
                }
                Some((data, from?))
            })
    }

    /// Reads what is queued (without waiting); returns how many datagrams.
    #[cfg(target_os = "linux")]
    fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        self.got.clear();
        self.reserve();
        let fd = socket.as_raw_fd();
        let slots = &mut self.slots;
        let got = &mut self.got;
        socket.try_io(tokio::io::Interest::READABLE, || {
            // SAFETY: all-zero is valid for these C structs.
            let mut names: [libc::sockaddr_storage; RECV_BATCH] = unsafe { std::mem::zeroed() };
            let mut iovs: [libc::iovec; RECV_BATCH] = unsafe { std::mem::zeroed() };
            let mut hdrs: [libc::mmsghdr; RECV_BATCH] = unsafe { std::mem::zeroed() };
            for (i, slot) in slots.iter_mut().enumerate() {
                let spare = slot.spare_capacity_mut();
                iovs[i] = libc::iovec {
                    iov_base: spare.as_mut_ptr() as *mut libc::c_void,
                    iov_len: MAX_DATAGRAM.min(spare.len()),
                };
                hdrs[i].msg_hdr.msg_name = &mut names[i] as *mut _ as *mut libc::c_void;
                hdrs[i].msg_hdr.msg_namelen =
                    std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
                hdrs[i].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: every header points at a live iovec and address slot above, and each
            // iovec at spare capacity of its slot (at most its length), which the kernel writes.
            let r = unsafe {
                libc::recvmmsg(
                    fd,
                    hdrs.as_mut_ptr(),
                    RECV_BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            for i in 0..r as usize {
                let truncated = hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
                let written = (hdrs[i].msg_len as usize).min(iovs[i].iov_len);
                let slot = &mut slots[i];
                // SAFETY: the kernel initialised `written` bytes of this slot's spare capacity.
                unsafe { slot.set_len(slot.len() + written) };
                let len = if truncated { MAX_DATAGRAM } else { written };
                got.push((len, sockaddr_to_std(&names[i])));
            }
            Ok(r as usize)
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.got.clear();
        let mut buf = [0u8; MAX_DATAGRAM];
        let (n, from) = socket.try_recv_from(&mut buf)?;
        self.slots[0].extend_from_slice(&buf[..n]);
        self.got.push((n, Some(from)));
        Ok(1)
    }
}

/// Converts a kernel-filled address to a `SocketAddr`.
#[cfg(target_os = "linux")]
fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::from((ip, u16::from_be(a.sin6_port))))
        }
        _ => None,
    }
}

fn route_one(demux: &mut Demuxer<Route>, data: BytesMut, from: SocketAddr) {
    if data.len() >= MAX_DATAGRAM || data.is_empty() {
        METRICS.count_drop(DropReason::BadDatagram, 1);
        return;
    }
    let route = match demux.route(from, &data) {
        Ok(r) => r,
        Err(why @ (Unrouted::UnknownUfrag | Unrouted::UnknownAddress)) => {
            tracing::trace!(%from, ?why, len = data.len(), "datagram not routed");
            METRICS.count_drop(DropReason::UnknownPeer, 1);
            return;
        }
    };
    tracing::trace!(%from, peer = route.peer.0, stun = super::demux::is_stun(&data), "datagram");
    let dgram = Datagram {
        peer: route.peer,
        from,
        data,
        at: Instant::now(),
        tcp: None,
    };
    match route.inbox.try_send(dgram) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => METRICS.count_drop(DropReason::InboxFull, 1),
        Err(mpsc::error::TrySendError::Closed(_)) => METRICS.count_drop(DropReason::RoomClosed, 1),
    }
}
