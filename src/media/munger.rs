//! Sequence-number and timestamp continuity for one subscriber leg.
//!
//! A subscriber sees one RTP stream per down track whose sequence numbers and timestamps advance
//! without jumps, even when forwarding starts mid-stream (after a keyframe), when the publisher
//! restarts its stream with a new SSRC, or when the forwarder drops a packet on purpose.
//!
//! A late input packet (reordered, or the publisher's retransmission of a packet lost upstream)
//! maps to the output number it would have had in order: the offset changes (a padding probe
//! inserted, a dropped packet closed over) are remembered for a while, so a late packet fills
//! its own hole and never lands on a number already used. One from before the leg's stream
//! started (or before the last splice), or older than the remembered changes, is dropped.
//! Pure: no clock, no I/O.

/// The per-leg rewriting state.
#[derive(Debug, Clone)]
pub struct Munger {
    state: Option<Started>,
    /// First sequence number handed out (random, as RFC 3550 asks).
    initial_seq: u16,
    /// First timestamp handed out.
    initial_ts: u32,
    /// Splice the next packet on as if it came from a new SSRC (forwarding resumes after a
    /// pause, so the input skipped ahead).
    splice_next: bool,
}

/// Offset changes remembered for late packets.
const CHANGES: usize = 8;

#[derive(Debug, Clone, Copy)]
struct Started {
    in_ssrc: u32,
    seq_offset: u16,
    ts_offset: u32,
    /// Highest input sequence number seen (in wrapping order).
    highest_in_seq: u16,
    last_out_seq: u16,
    last_out_ts: u32,
    /// Inputs at or before this one are not mapped (before the start, or older than the
    /// remembered changes).
    floor: u16,
    /// Recent offset changes, oldest first: inputs up to `.0` had offset `.1`.
    changes: [(u16, u16); CHANGES],
    n_changes: usize,
}

impl Started {
    /// The sequence offset changes for inputs after the current highest one.
    fn change_offset(&mut self, new_offset: u16) {
        if self.n_changes == CHANGES {
            self.floor = self.changes[0].0;
            self.changes.copy_within(1.., 0);
            self.n_changes -= 1;
        }
        self.changes[self.n_changes] = (self.highest_in_seq, self.seq_offset);
        self.n_changes += 1;
        self.seq_offset = new_offset;
    }

    /// The offset that applied to input `in_seq` (`None`: too old to map).
    fn offset_for(&self, in_seq: u16) -> Option<u16> {
        if !seq_after(in_seq, self.floor) {
            return None;
        }
        let mut offset = self.seq_offset;
        for &(upto, before) in self.changes[..self.n_changes].iter().rev() {
            if seq_after(in_seq, upto) {
                break;
            }
            offset = before;
        }
        Some(offset)
    }
}

/// Whether `a` comes after `b` in RFC 1982 serial-number order.
fn seq_after(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

impl Munger {
    /// A munger whose output starts at the given sequence number and timestamp.
    pub fn new(initial_seq: u16, initial_ts: u32) -> Self {
        Self {
            state: None,
            initial_seq,
            initial_ts,
            splice_next: false,
        }
    }

    /// A packet the server makes up (a padding-only probe) takes the next output sequence number
    /// and the last timestamp; the input that follows continues after it. `None` before the
    /// first forwarded packet (there is no stream to continue yet).
    pub fn padding(&mut self) -> Option<(u16, u32)> {
        let st = self.state.as_mut()?;
        st.last_out_seq = st.last_out_seq.wrapping_add(1);
        st.change_offset(st.seq_offset.wrapping_add(1));
        Some((st.last_out_seq, st.last_out_ts))
    }

    /// Forwarding stopped and will resume later (at a keyframe): the next packet continues the
    /// output from where it stopped instead of leaving a hole the size of the pause.
    pub fn splice_next(&mut self) {
        self.splice_next = true;
    }

    /// Whether a packet has been forwarded yet.
    pub fn started(&self) -> bool {
        self.state.is_some()
    }

    /// Maps an input (ssrc, sequence number, timestamp) to the output pair. A new input SSRC
    /// (a simulcast layer switch, or a publisher restart) is spliced on so the output continues
    /// from where it was: the next sequence number, and the timestamp `splice_ticks` (the time
    /// since the last forwarded packet, in clock-rate ticks; at least 1) later. `None`: a late
    /// packet that cannot be placed (drop it).
    pub fn rewrite(
        &mut self,
        in_ssrc: u32,
        in_seq: u16,
        in_ts: u32,
        splice_ticks: u32,
    ) -> Option<(u16, u32)> {
        let st = match &mut self.state {
            Some(st) if st.in_ssrc == in_ssrc && !self.splice_next => st,
            prev => {
                let (next_seq, next_ts) = match prev {
                    // Continue one packet later, and as much later in time as has passed.
                    Some(p) => (
                        p.last_out_seq.wrapping_add(1),
                        p.last_out_ts.wrapping_add(splice_ticks.max(1)),
                    ),
                    None => (self.initial_seq, self.initial_ts),
                };
                *prev = Some(Started {
                    in_ssrc,
                    seq_offset: next_seq.wrapping_sub(in_seq),
                    ts_offset: next_ts.wrapping_sub(in_ts),
                    highest_in_seq: in_seq.wrapping_sub(1),
                    last_out_seq: next_seq.wrapping_sub(1),
                    last_out_ts: next_ts,
                    floor: in_seq.wrapping_sub(1),
                    changes: [(0, 0); CHANGES],
                    n_changes: 0,
                });
                self.splice_next = false;
                // Just set to Some above.
                prev.as_mut().expect("state was just initialised")
            }
        };
        let out_ts = in_ts.wrapping_add(st.ts_offset);
        if seq_after(in_seq, st.highest_in_seq) {
            let out_seq = in_seq.wrapping_add(st.seq_offset);
            st.highest_in_seq = in_seq;
            st.last_out_seq = out_seq;
            st.last_out_ts = out_ts;
            return Some((out_seq, out_ts));
        }
        let offset = st.offset_for(in_seq)?;
        Some((in_seq.wrapping_add(offset), out_ts))
    }

    /// The output timestamp of input timestamp `in_ts` of stream `in_ssrc`, if that is the
    /// stream the leg forwards now (sender reports map the publisher's clock through it).
    pub fn output_ts(&self, in_ssrc: u32, in_ts: u32) -> Option<u32> {
        self.state
            .as_ref()
            .filter(|st| st.in_ssrc == in_ssrc && !self.splice_next)
            .map(|st| in_ts.wrapping_add(st.ts_offset))
    }

    /// The forwarder dropped this input packet on purpose. If it is the next in order, the
    /// output closes the gap so the subscriber does not see (and NACK) a hole.
    pub fn skip(&mut self, in_ssrc: u32, in_seq: u16) {
        if let Some(st) = &mut self.state {
            if st.in_ssrc == in_ssrc && in_seq == st.highest_in_seq.wrapping_add(1) {
                st.change_offset(st.seq_offset.wrapping_sub(1));
                st.highest_in_seq = in_seq;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_starts_at_initial_values_and_keeps_spacing() {
        let mut m = Munger::new(1000, 5000);
        assert_eq!(m.rewrite(7, 40000, 900_000, 0), Some((1000, 5000)));
        assert_eq!(m.rewrite(7, 40002, 906_000, 0), Some((1002, 11000)));
        // A late packet fills its hole.
        assert_eq!(m.rewrite(7, 40001, 903_000, 0), Some((1001, 8000)));
        // One from before the leg's first packet was never part of its stream.
        assert_eq!(m.rewrite(7, 39999, 897_000, 0), None);
    }

    #[test]
    fn sequence_wraps_around() {
        let mut m = Munger::new(65535, 0);
        assert_eq!(m.rewrite(1, 10, 0, 0).unwrap().0, 65535);
        assert_eq!(m.rewrite(1, 11, 0, 0).unwrap().0, 0);
        assert_eq!(m.rewrite(1, 12, 0, 0).unwrap().0, 1);
    }

    #[test]
    fn a_skipped_packet_leaves_no_hole() {
        let mut m = Munger::new(100, 0);
        m.rewrite(1, 10, 0, 0);
        m.skip(1, 11);
        assert_eq!(m.rewrite(1, 12, 0, 0).unwrap().0, 101);
    }

    #[test]
    fn padding_takes_a_sequence_number_and_the_stream_continues_after_it() {
        let mut m = Munger::new(100, 0);
        assert_eq!(m.padding(), None);
        m.rewrite(1, 10, 3000, 0);
        assert_eq!(m.padding(), Some((101, 0)));
        assert_eq!(m.padding(), Some((102, 0)));
        assert_eq!(m.rewrite(1, 11, 6000, 0), Some((103, 3000)));
    }

    #[test]
    fn a_late_packet_keeps_the_number_it_had_before_padding_or_a_skip() {
        let mut m = Munger::new(100, 0);
        m.rewrite(1, 10, 0, 0); // 100
        m.rewrite(1, 12, 0, 0); // 102 (11 lost upstream)
        assert_eq!(m.padding().map(|p| p.0), Some(103));
        m.skip(1, 13); // dropped on purpose: no hole
        assert_eq!(m.rewrite(1, 14, 0, 0).map(|p| p.0), Some(104));
        // The publisher's retransmission of 11 arrives: it goes where 11 belonged.
        assert_eq!(m.rewrite(1, 11, 0, 0).map(|p| p.0), Some(101));
    }

    #[test]
    fn a_late_packet_from_before_a_splice_is_dropped() {
        let mut m = Munger::new(100, 0);
        m.rewrite(1, 10, 0, 0);
        m.rewrite(1, 12, 0, 0);
        m.splice_next();
        assert_eq!(m.rewrite(1, 500, 0, 10).map(|p| p.0), Some(103));
        assert_eq!(
            m.rewrite(1, 11, 0, 0),
            None,
            "its number is behind the splice"
        );
    }

    #[test]
    fn sender_report_mapping_follows_the_current_input_stream() {
        let mut m = Munger::new(100, 1000);
        m.rewrite(1, 10, 50, 0);
        assert_eq!(m.output_ts(1, 3050), Some(4000));
        assert_eq!(m.output_ts(2, 3050), None, "not the stream forwarded");
        m.rewrite(2, 7, 9_000_000, 3600);
        assert_eq!(m.output_ts(1, 3050), None);
        assert_eq!(m.output_ts(2, 9_003_000), Some(1000 + 3600 + 3000));
    }

    #[test]
    fn a_pause_leaves_no_hole() {
        let mut m = Munger::new(100, 0);
        m.rewrite(1, 10, 0, 0);
        m.splice_next();
        assert_eq!(m.rewrite(1, 500, 90_000, 1000), Some((101, 1000)));
        assert_eq!(m.rewrite(1, 501, 93_000, 0), Some((102, 4000)));
    }

    #[test]
    fn a_new_publisher_ssrc_continues_the_output() {
        let mut m = Munger::new(100, 1000);
        m.rewrite(1, 10, 50, 0);
        m.rewrite(1, 11, 3050, 0);
        // 40 ms later at 90 kHz.
        let (seq, ts) = m.rewrite(2, 60000, 123, 3600).unwrap();
        assert_eq!(seq, 102);
        assert_eq!(ts, 4000 + 3600, "timestamp advances by the elapsed time");
        assert_eq!(
            m.rewrite(2, 60001, 3123, 0),
            Some((103, 4000 + 3600 + 3000))
        );
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn in_order_input_gives_consecutive_output(start in any::<u16>(), n in 1usize..500, init in any::<u16>(), ssrc in any::<u32>()) {
            let mut m = Munger::new(init, 0);
            let mut prev = None;
            for i in 0..n {
                let (seq, _) = m.rewrite(ssrc, start.wrapping_add(i as u16), i as u32 * 3000, 0).expect("in order");
                if let Some(p) = prev {
                    prop_assert_eq!(seq, u16::wrapping_add(p, 1));
                }
                prev = Some(seq);
            }
        }

        #[test]
        fn arbitrary_sequences_never_panic(ops in prop::collection::vec((any::<u8>(), any::<u16>(), any::<u32>(), any::<bool>()), 0..200)) {
            let mut m = Munger::new(1, 1);
            for (ssrc, seq, ts, skip) in ops {
                if skip { m.skip(u32::from(ssrc % 3), seq) } else { let _ = m.rewrite(u32::from(ssrc % 3), seq, ts, ts % 7); }
            }
        }
    }
}
