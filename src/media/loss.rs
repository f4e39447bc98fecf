//! How many packets a received stream should have delivered: the span of its sequence numbers,
//! extended past 16-bit wrap-around. With the count of packets that did arrive, this gives the
//! upstream loss the room shows as connection quality. Constant time, no allocation.

/// Packets arrived before the first one are allowed this far back (then counted as expected).
const BASE: u64 = 1 << 32;

/// The extended sequence-number span of one stream.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SeqSpan {
    /// Lowest extended sequence number seen (`None`: nothing yet).
    first: Option<u64>,
    /// Highest extended sequence number seen.
    highest: u64,
}

impl SeqSpan {
    /// Takes one packet's sequence number (in any order; duplicates are the caller's to drop).
    pub fn on_packet(&mut self, seq: u16) {
        let Some(first) = self.first else {
            let ext = BASE + u64::from(seq);
            self.first = Some(ext);
            self.highest = ext;
            return;
        };
        let delta = seq.wrapping_sub(self.highest as u16) as i16;
        if delta > 0 {
            self.highest += delta as u16 as u64;
        } else {
            let ext = self.highest.saturating_sub(u64::from(delta.unsigned_abs()));
            if ext < first {
                self.first = Some(ext);
            }
        }
    }

    /// Packets the span covers (sent, as far as the receiver can tell).
    pub fn expected(&self) -> u64 {
        self.first.map_or(0, |f| self.highest - f + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(seqs: impl IntoIterator<Item = u16>) -> SeqSpan {
        let mut s = SeqSpan::default();
        for q in seqs {
            s.on_packet(q);
        }
        s
    }

    #[test]
    fn a_gap_counts_and_wrap_around_extends() {
        assert_eq!(SeqSpan::default().expected(), 0);
        assert_eq!(span([7]).expected(), 1);
        assert_eq!(span([10, 11, 14]).expected(), 5);
        assert_eq!(span([65534, 65535, 0, 1]).expected(), 4);
        let long = span((0..200_000u32).map(|i| i as u16));
        assert_eq!(long.expected(), 200_000);
    }

    #[test]
    fn reordering_does_not_inflate_the_span() {
        assert_eq!(span([10, 12, 11, 13]).expected(), 4);
        assert_eq!(
            span([10, 9, 8, 11]).expected(),
            4,
            "late packets before the first"
        );
        assert_eq!(
            span([0, 65535, 1]).expected(),
            3,
            "late packet across the wrap"
        );
    }
}
