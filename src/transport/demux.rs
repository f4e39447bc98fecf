//! Routes each datagram on the shared UDP port to its peer connection: STUN binding requests by
//! the server half of their USERNAME (the ufrag the server minted for that peer), everything
//! else (DTLS, SRTP, SRTCP) by the source address a valid-ufrag STUN request came from.
//! Pure: generic over the route type, no sockets.

use std::collections::HashMap;
use std::net::SocketAddr;

/// STUN magic cookie (RFC 5389).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;
/// Addresses remembered per ufrag (a peer probes from a few candidates at most).
const MAX_ADDRS_PER_UFRAG: usize = 8;

/// If `buf` is a STUN message with a USERNAME attribute, the part before `:` (the receiver's
/// ufrag, which for a request to us is the one we minted).
pub fn stun_local_ufrag(buf: &[u8]) -> Option<&str> {
    if buf.len() < 20 || buf[0] & 0xc0 != 0 || buf[4..8] != MAGIC_COOKIE {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let end = 20usize.checked_add(body_len)?.min(buf.len());
    let mut i = 20;
    while i + 4 <= end {
        let ty = u16::from_be_bytes([buf[i], buf[i + 1]]);
        let len = usize::from(u16::from_be_bytes([buf[i + 2], buf[i + 3]]));
        let value = buf.get(i + 4..i + 4 + len)?;
        if ty == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        i += 4 + len.div_ceil(4) * 4;
    }
    None
}

/// Whether a datagram looks like STUN (first two bits zero and the magic cookie).
pub fn is_stun(buf: &[u8]) -> bool {
    buf.len() >= 20 && buf[0] & 0xc0 == 0 && buf[4..8] == MAGIC_COOKIE
}

/// The routing table. Keys come from peers (ufrags in STUN, source addresses), so it uses the
/// std SipHash maps.
#[derive(Debug)]
pub struct Demuxer<R> {
    by_ufrag: HashMap<String, R>,
    by_addr: HashMap<SocketAddr, R>,
    addrs_of: HashMap<String, Vec<SocketAddr>>,
}

impl<R> Default for Demuxer<R> {
    fn default() -> Self {
        Self {
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            addrs_of: HashMap::new(),
        }
    }
}

/// Why a datagram found no route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unrouted {
    /// STUN naming a ufrag nobody registered.
    UnknownUfrag,
    /// Non-STUN from an address no valid STUN came from.
    UnknownAddress,
}

impl<R: Clone> Demuxer<R> {
    /// Routes datagrams whose STUN USERNAME starts with `ufrag` to `route`.
    pub fn register(&mut self, ufrag: String, route: R) {
        self.by_ufrag.insert(ufrag, route);
    }

    /// Forgets a ufrag and every address learned for it.
    pub fn unregister(&mut self, ufrag: &str) {
        self.by_ufrag.remove(ufrag);
        for addr in self.addrs_of.remove(ufrag).unwrap_or_default() {
            self.by_addr.remove(&addr);
        }
    }

    /// Number of registered ufrags and learned addresses (for leak checks).
    pub fn len(&self) -> (usize, usize) {
        (self.by_ufrag.len(), self.by_addr.len())
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.by_ufrag.is_empty() && self.by_addr.is_empty()
    }

    /// The route for one datagram, borrowed: routing clones nothing per datagram (only a
    /// newly learned address stores a copy of its route).
    pub fn route(&mut self, from: SocketAddr, buf: &[u8]) -> Result<&R, Unrouted> {
        if is_stun(buf) {
            if let Some(ufrag) = stun_local_ufrag(buf) {
                let Some(route) = self.by_ufrag.get(ufrag) else {
                    return Err(Unrouted::UnknownUfrag);
                };
                if !self.by_addr.contains_key(&from) {
                    let addrs = self.addrs_of.entry(ufrag.to_owned()).or_default();
                    if addrs.len() >= MAX_ADDRS_PER_UFRAG {
                        let old = addrs.remove(0);
                        self.by_addr.remove(&old);
                    }
                    addrs.push(from);
                    self.by_addr.insert(from, route.clone());
                }
                return Ok(route);
            }
        }
        self.by_addr.get(&from).ok_or(Unrouted::UnknownAddress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun_request(username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attrs);
        m
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn stun_username_is_parsed() {
        assert_eq!(stun_local_ufrag(&stun_request("srv:cli")), Some("srv"));
        assert_eq!(stun_local_ufrag(&[0u8; 10]), None);
        // A USERNAME length pointing past the end does not panic.
        let mut m = stun_request("srv:cli");
        m[22] = 0xff;
        assert_eq!(stun_local_ufrag(&m), None);
    }

    #[test]
    fn stun_with_a_known_ufrag_teaches_the_address() {
        let mut d = Demuxer::default();
        d.register("abc".into(), 1u32);
        assert_eq!(
            d.route(addr(5000), b"\x80dtls-ish"),
            Err(Unrouted::UnknownAddress)
        );
        assert_eq!(d.route(addr(5000), &stun_request("abc:x")), Ok(&1));
        assert_eq!(d.route(addr(5000), b"\x80srtp"), Ok(&1));
        assert_eq!(
            d.route(addr(5001), &stun_request("zzz:x")),
            Err(Unrouted::UnknownUfrag)
        );
    }

    #[test]
    fn unregister_forgets_learned_addresses() {
        let mut d = Demuxer::default();
        d.register("abc".into(), 1u32);
        d.route(addr(5000), &stun_request("abc:x")).unwrap();
        d.unregister("abc");
        assert!(d.is_empty());
        assert_eq!(
            d.route(addr(5000), b"\x80srtp"),
            Err(Unrouted::UnknownAddress)
        );
    }

    #[test]
    fn addresses_per_ufrag_are_bounded() {
        let mut d = Demuxer::default();
        d.register("abc".into(), 1u32);
        for p in 0..100 {
            d.route(addr(6000 + p), &stun_request("abc:x")).unwrap();
        }
        assert_eq!(d.len(), (1, MAX_ADDRS_PER_UFRAG));
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        #[test]
        fn arbitrary_datagrams_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..300), stun in any::<bool>()) {
            if stun && bytes.len() >= 20 {
                bytes[0] &= 0x3f;
                bytes[4..8].copy_from_slice(&MAGIC_COOKIE);
            }
            let mut d: Demuxer<u8> = Demuxer::default();
            d.register("abc".into(), 1);
            let from = SocketAddr::from(([127, 0, 0, 1], 9));
            let _ = d.route(from, &bytes);
            let _ = stun_local_ufrag(&bytes);
        }
    }
}
