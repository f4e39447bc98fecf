//! ICE-TCP (RFC 6544, passive only): one TCP listener beside the UDP port for clients whose UDP
//! is blocked. Each accepted connection carries RFC 4571 frames ([`super::framing`]); its first
//! frame must be a STUN request naming a registered ufrag, which binds the whole connection to
//! that peer (as the first STUN binds an address on UDP). Frames then go to the room's inbox
//! as [`Datagram`]s carrying the connection's [`TcpLink`], through which the room answers.
//!
//! Limits: at most [`MAX_CONNECTIONS`] connections; a connection that does not identify itself
//! within `HELLO_TIMEOUT` (10 s), sends nothing for `IDLE_TIMEOUT` (60 s), sends a frame no
//! packet can be, or cannot keep up with what is sent to it, is closed. Nothing here blocks a
//! room.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use super::demux::{is_stun, stun_local_ufrag};
use super::framing::{encode, FrameDecoder};
use super::udp::{Datagram, Route};
use crate::telemetry::{DropReason, METRICS};

/// Open connections at most; more are closed at once.
pub const MAX_CONNECTIONS: usize = 10_000;
/// The first frame (a STUN request) must arrive within this.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection silent this long is closed (ICE consent checks come every few seconds).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Packets queued toward one connection; beyond, they are dropped (counted) like a full socket.
const SEND_QUEUE: usize = 512;
/// Bytes written per `write_all` at most (several frames per syscall).
const WRITE_BATCH: usize = 64 * 1024;

/// The ufrag → route table the TCP side reads, kept by [`super::udp::DemuxHandle`] beside the
/// UDP demultiplexer's own. Locked once per new connection, never per packet.
pub type TcpRoutes = Arc<Mutex<HashMap<String, Route>>>;

/// Sending half of one ICE-TCP connection, held by the room that owns its peer.
#[derive(Clone, Debug)]
pub struct TcpLink {
    tx: mpsc::Sender<BytesMut>,
}

impl TcpLink {
    /// Queues one packet (framed by the writer). `false` when the connection is gone.
    pub fn send(&self, packet: BytesMut) -> bool {
        match self.tx.try_send(packet) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                METRICS.count_drop(DropReason::SocketFull, 1);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// The ICE-TCP connections a room's peers use, by remote address.
#[derive(Debug, Default)]
pub struct TcpLinks {
    by_addr: HashMap<SocketAddr, TcpLink>,
}

impl TcpLinks {
    /// Remembers the connection a datagram came on (a new one replaces an old one).
    pub fn learn(&mut self, from: SocketAddr, link: &TcpLink) {
        match self.by_addr.get(&from) {
            Some(l) if l.tx.same_channel(&link.tx) => {}
            _ => {
                self.by_addr.insert(from, link.clone());
            }
        }
    }

    /// Sends `packets` (then clears the list) on their connections; packets for a closed or
    /// unknown connection are dropped and its entry forgotten.
    pub fn send_all(&mut self, packets: &mut Vec<(SocketAddr, BytesMut)>) {
        for (to, p) in packets.drain(..) {
            let alive = self.by_addr.get(&to).is_some_and(|l| l.send(p));
            if !alive {
                self.by_addr.remove(&to);
                METRICS.count_drop(DropReason::UnknownPeer, 1);
            }
        }
    }

    /// Forgets connections that have closed.
    pub fn prune(&mut self) {
        self.by_addr.retain(|_, l| !l.tx.is_closed());
    }

    /// Number of connections known.
    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    /// Whether none are known.
    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }
}

/// The bound ICE-TCP listener.
pub struct TcpTransport {
    listener: TcpListener,
    local: SocketAddr,
}

impl TcpTransport {
    /// Binds the ICE-TCP port.
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        Ok(Self { listener, local })
    }

    /// The listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Spawns the accept loop; it (and every connection) ends when `shutdown` is cancelled.
    pub fn spawn(
        self,
        routes: TcpRoutes,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(accept_loop(self.listener, routes, shutdown))
    }
}

async fn accept_loop(listener: TcpListener, routes: TcpRoutes, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, from) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(%e, "ice-tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            METRICS.tcp_closed.with_label_values(&["full"]).inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let routes = routes.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            METRICS.tcp_connections.inc();
            let why = tokio::select! {
                _ = shutdown.cancelled() => "eof",
                why = connection(stream, from, routes) => why,
            };
            tracing::debug!(%from, why, "ice-tcp connection closed");
            METRICS.tcp_closed.with_label_values(&[why]).inc();
            METRICS.tcp_connections.dec();
            drop(permit);
        });
    }
}

/// Serves one connection; returns why it ended (a `confab_ice_tcp_closed_total` label).
async fn connection(stream: TcpStream, from: SocketAddr, routes: TcpRoutes) -> &'static str {
    let (mut rd, wr) = stream.into_split();
    let mut decoder = FrameDecoder::default();
    let mut route: Option<Route> = None;
    let (tx, rx) = mpsc::channel(SEND_QUEUE);
    let link = TcpLink { tx };
    let writer = tokio::spawn(write_loop(wr, rx));
    let why = loop {
        let timeout = if route.is_some() {
            IDLE_TIMEOUT
        } else {
            HELLO_TIMEOUT
        };
        match tokio::time::timeout(timeout, rd.read_buf(decoder.buffer())).await {
            Err(_) => break "idle",
            Ok(Err(_)) => break "error",
            Ok(Ok(0)) => break "eof",
            Ok(Ok(_)) => {}
        }
        let mut closed = None;
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%from, %e, "ice-tcp: bad frame");
                    closed = Some("bad_frame");
                    break;
                }
            };
            METRICS.tcp_rx_frames.inc();
            if route.is_none() {
                route = first_route(&frame, &routes);
                if route.is_none() {
                    closed = Some("unrouted");
                    break;
                }
            }
            let Some(r) = &route else { break };
            let d = Datagram {
                peer: r.peer,
                from,
                data: frame,
                at: Instant::now(),
                tcp: Some(link.clone()),
            };
            match r.inbox.try_send(d) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    METRICS.count_drop(DropReason::InboxFull, 1)
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    closed = Some("eof");
                    break;
                }
            }
        }
        if let Some(why) = closed {
            break why;
        }
    };
    writer.abort();
    why
}

/// The route of a connection's first frame: a STUN request whose USERNAME names a ufrag we
/// minted.
fn first_route(frame: &[u8], routes: &TcpRoutes) -> Option<Route> {
    if !is_stun(frame) {
        return None;
    }
    let ufrag = stun_local_ufrag(frame)?;
    // Poisoning only follows a panic while holding the lock (a bug elsewhere); the map is
    // still consistent (each operation is one insert or remove).
    let map = routes.lock().unwrap_or_else(|p| p.into_inner());
    map.get(ufrag).cloned()
}

/// Writes queued packets as frames, several per syscall.
async fn write_loop(mut wr: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<BytesMut>) {
    let mut out = BytesMut::with_capacity(WRITE_BATCH);
    while let Some(p) = rx.recv().await {
        out.clear();
        let mut frames = u64::from(encode(&p, &mut out));
        while out.len() < WRITE_BATCH {
            let Ok(p) = rx.try_recv() else { break };
            frames += u64::from(encode(&p, &mut out));
        }
        if wr.write_all(&out).await.is_err() {
            return;
        }
        METRICS.tcp_tx_frames.inc_by(frames);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::PeerKey;
    use crate::transport::udp::DemuxHandle;

    /// A STUN binding request whose USERNAME is `username` (enough for routing).
    fn stun_request(username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&0x0006u16.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attrs);
        m
    }

    fn framed(p: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode(p, &mut out);
        out.to_vec()
    }

    struct Fixture {
        addr: SocketAddr,
        inbox: mpsc::Receiver<Datagram>,
        shutdown: CancellationToken,
        _demux: DemuxHandle,
    }

    async fn fixture() -> Fixture {
        let (demux, _rx) = DemuxHandle::channel();
        let (tx, inbox) = mpsc::channel(64);
        demux.register(
            "srvufrag".into(),
            Route {
                inbox: tx,
                peer: PeerKey(7),
            },
        );
        let t = TcpTransport::bind("127.0.0.1:0".parse().unwrap())
            .await
            .expect("bind");
        let addr = t.local_addr();
        let shutdown = CancellationToken::new();
        t.spawn(demux.tcp_routes(), shutdown.clone());
        Fixture {
            addr,
            inbox,
            shutdown,
            _demux: demux,
        }
    }

    #[tokio::test]
    async fn a_connection_is_routed_by_its_first_stun_and_answered_through_its_link() {
        let mut f = fixture().await;
        let mut c = TcpStream::connect(f.addr).await.expect("connect");
        let stun = stun_request("srvufrag:cli");
        // One frame split over two writes, then a second frame (DTLS-ish bytes).
        let mut bytes = framed(&stun);
        bytes.extend(framed(b"\x16\xfe\xfd dtls"));
        c.write_all(&bytes[..5]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.write_all(&bytes[5..]).await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), f.inbox.recv())
            .await
            .expect("a datagram")
            .expect("open");
        assert_eq!(first.peer, PeerKey(7));
        assert_eq!(&first.data[..], &stun[..]);
        assert_eq!(first.from, c.local_addr().unwrap());
        let second = f.inbox.recv().await.expect("second");
        assert_eq!(&second.data[..], b"\x16\xfe\xfd dtls");
        // The room answers through the link: the client reads one frame.
        let link = second.tcp.expect("a TCP datagram carries its link");
        let mut links = TcpLinks::default();
        links.learn(second.from, &link);
        let mut out = vec![(second.from, BytesMut::from(&b"answer"[..]))];
        links.send_all(&mut out);
        let mut got = [0u8; 8];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut got))
            .await
            .expect("answer in time")
            .unwrap();
        assert_eq!(&got, b"\x00\x06answer");
        f.shutdown.cancel();
    }

    async fn closed(c: &mut TcpStream) -> bool {
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn garbage_an_unknown_ufrag_or_an_oversize_frame_closes_the_connection() {
        let mut f = fixture().await;
        for bytes in [
            framed(b"not stun at all, just bytes"),
            framed(&stun_request("nobody:cli")),
            vec![0xff, 0xff, 1, 2, 3],
        ] {
            let mut c = TcpStream::connect(f.addr).await.expect("connect");
            c.write_all(&bytes).await.unwrap();
            assert!(closed(&mut c).await, "{bytes:?}");
        }
        assert!(f.inbox.try_recv().is_err(), "nothing reached the room");
        // A routed connection that later sends an oversize length is closed too.
        let mut c = TcpStream::connect(f.addr).await.expect("connect");
        c.write_all(&framed(&stun_request("srvufrag:cli")))
            .await
            .unwrap();
        c.write_all(&[0x40, 0x00]).await.unwrap();
        assert!(closed(&mut c).await);
        assert!(
            f.inbox.recv().await.is_some(),
            "the valid first frame was routed"
        );
        f.shutdown.cancel();
    }

    #[tokio::test]
    async fn links_of_closed_connections_are_forgotten() {
        let (tx, rx) = mpsc::channel(1);
        let link = TcpLink { tx };
        let mut links = TcpLinks::default();
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        links.learn(a, &link);
        assert_eq!(links.len(), 1);
        drop(rx);
        links.prune();
        assert!(links.is_empty());
        links.learn(a, &link);
        let mut out = vec![(a, BytesMut::from(&b"x"[..]))];
        links.send_all(&mut out);
        assert!(links.is_empty(), "a failed send forgets the link");
    }
}
