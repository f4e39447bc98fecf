//! Learning the server's public IP from a STUN server at start (`media.stun_discover`, off by
//! default): one Binding request from the media socket itself, so the answer is the address
//! its NAT maps that socket to (RFC 8489 §2). A few retries, then give up (the server starts
//! with the addresses it has).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use rtc::stun::message::TransactionId;
use rtc::stun::message::{Getter, Message, BINDING_REQUEST, BINDING_SUCCESS};
use rtc::stun::xoraddr::XorMappedAddress;
use tokio::net::UdpSocket;

/// Attempts, and how long each waits for the answer.
const ATTEMPTS: usize = 3;
const WAIT: Duration = Duration::from_millis(700);

/// Why no public address was learned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoverError {
    /// The server name did not resolve (or to no address of the socket's family).
    #[error("cannot resolve STUN server {0}")]
    Resolve(String),
    /// No valid answer after every attempt.
    #[error("no answer from STUN server {0}")]
    NoAnswer(String),
    /// The socket failed.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
}

/// The address `server` (`host:port`) sees `socket`'s packets come from.
pub async fn mapped_address(socket: &UdpSocket, server: &str) -> Result<SocketAddr, DiscoverError> {
    let local = socket.local_addr()?;
    let target = tokio::net::lookup_host(server)
        .await
        .map_err(|_| DiscoverError::Resolve(server.to_owned()))?
        .find(|a| a.is_ipv4() == local.is_ipv4())
        .ok_or_else(|| DiscoverError::Resolve(server.to_owned()))?;
    let mut buf = [0u8; 1500];
    for _ in 0..ATTEMPTS {
        let mut req = Message::new();
        req.build(&[Box::new(BINDING_REQUEST), Box::new(TransactionId::new())])
            .map_err(|e| io::Error::other(e.to_string()))?;
        socket.send_to(&req.raw, target).await?;
        let deadline = tokio::time::Instant::now() + WAIT;
        while let Ok(got) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
            let (n, from) = got?;
            if from != target {
                continue; // a client's packet this early: not our answer
            }
            if let Some(addr) = parse_answer(&buf[..n], &req) {
                return Ok(addr);
            }
        }
    }
    Err(DiscoverError::NoAnswer(server.to_owned()))
}

/// The XOR-MAPPED-ADDRESS of a success response to `req`, if `data` is one.
fn parse_answer(data: &[u8], req: &Message) -> Option<SocketAddr> {
    let mut m = Message::new();
    m.raw = data.to_vec();
    m.decode().ok()?;
    if m.transaction_id != req.transaction_id || m.typ != BINDING_SUCCESS {
        return None;
    }
    let mut xor = XorMappedAddress::default();
    xor.get_from(&m).ok()?;
    Some(SocketAddr::new(xor.ip, xor.port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::message::Setter;

    /// A STUN server on loopback that says every client is at 203.0.113.9:4242.
    async fn fake_server(drop_first: usize) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = s.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            let mut seen = 0;
            loop {
                let Ok((n, from)) = s.recv_from(&mut buf).await else {
                    return;
                };
                seen += 1;
                if seen <= drop_first {
                    continue;
                }
                let mut req = Message::new();
                req.raw = buf[..n].to_vec();
                if req.decode().is_err() {
                    continue;
                }
                let mut resp = Message::new();
                let xor = XorMappedAddress {
                    ip: "203.0.113.9".parse().expect("ip"),
                    port: 4242,
                };
                resp.build(&[
                    Box::new(BINDING_SUCCESS),
                    Box::new(TransactionIdSetter(req.transaction_id)),
                    Box::new(xor),
                ])
                .expect("build");
                let _ = s.send_to(&resp.raw, from).await;
            }
        });
        (addr, task)
    }

    struct TransactionIdSetter(TransactionId);
    impl Setter for TransactionIdSetter {
        fn add_to(&self, m: &mut Message) -> rtc::shared::error::Result<()> {
            m.transaction_id = self.0;
            m.write_transaction_id();
            Ok(())
        }
    }

    #[tokio::test]
    async fn learns_the_mapped_address_even_after_a_lost_request() {
        let (server, task) = fake_server(1).await;
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let got = mapped_address(&socket, &server.to_string())
            .await
            .expect("answer");
        assert_eq!(got, "203.0.113.9:4242".parse::<SocketAddr>().unwrap());
        task.abort();
    }

    #[tokio::test]
    async fn gives_up_when_nobody_answers() {
        let (server, task) = fake_server(usize::MAX).await;
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let got = mapped_address(&socket, &server.to_string()).await;
        assert!(matches!(got, Err(DiscoverError::NoAnswer(_))), "{got:?}");
        task.abort();
    }
}
