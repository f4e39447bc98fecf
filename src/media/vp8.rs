//! VP8 payload descriptors (RFC 7741 §4.2) kept continuous across a leg's layer switches.
//!
//! Each simulcast encoding numbers its pictures (PictureID) and its base-layer pictures
//! (TL0PICIDX) on its own, and a receiver orders frames by those numbers (Chromium's frame
//! reference finder). Forwarded unchanged, a switch to a layer whose numbers are behind the
//! last ones sent makes the receiver take the new layer's frames for old ones: it decodes the
//! keyframe and drops the delta frames after it until the numbers catch up. Seen in the e2e
//! test in about 1 run in 3: after a tile grew, a leg switched from `h` to `f` and the page
//! decoded 4–6 frames in the next 5 s; the Firefox test saw ~3 s freezes after a switch up.
//!
//! So each leg shifts both numbers per layer: at a switch (the new layer's keyframe) the
//! layer's offsets are set so that its first picture follows the last one sent.
//!
//! Pure: bytes in, bytes out.

use bytes::{Bytes, BytesMut};

use super::codec::vp8_descriptor;
use super::simulcast::{LayerIndex, MAX_LAYERS};

/// Rewritten payloads are copied into a shared buffer grown by this much at a time, so that a
/// packet costs a copy but (almost) never an allocation of its own.
pub const ARENA_CHUNK: usize = 64 * 1024;

fn mask(long: bool) -> u16 {
    if long {
        0x7fff
    } else {
        0x7f
    }
}

fn read_picture_id(p: &[u8], at: usize, long: bool) -> Option<u16> {
    let hi = u16::from(*p.get(at)? & 0x7f);
    if long {
        Some(hi << 8 | u16::from(*p.get(at + 1)?))
    } else {
        Some(hi)
    }
}

fn write_picture_id(p: &mut [u8], at: usize, long: bool, id: u16) {
    if long {
        if let Some(b) = p.get_mut(at..at + 2) {
            b[0] = 0x80 | (id >> 8) as u8;
            b[1] = id as u8;
        }
    } else if let Some(b) = p.get_mut(at) {
        *b = (id & 0x7f) as u8;
    }
}

/// `a` comes after `b` in `mask`'s serial-number space.
fn ahead(a: u16, b: u16, mask: u16) -> bool {
    let d = a.wrapping_sub(b) & mask;
    d != 0 && d <= mask / 2
}

/// One leg's VP8 numbering.
#[derive(Debug, Clone, Default)]
pub struct Vp8Numbers {
    /// Per layer: added (wrapping) to its PictureID and TL0PICIDX.
    offsets: [(u16, u8); MAX_LAYERS],
    /// The last (newest) PictureID sent, and its width flag.
    last_picture_id: Option<(u16, bool)>,
    /// The last TL0PICIDX sent.
    last_tl0: Option<u8>,
}

impl Vp8Numbers {
    /// At the first packet of a layer's keyframe that starts it on this leg: the layer's
    /// numbers continue from the last ones sent (on the leg's first layer nothing is shifted).
    pub fn align(&mut self, layer: LayerIndex, payload: &[u8]) {
        let (Some(f), Some(slot)) = (
            vp8_descriptor(payload),
            self.offsets.get_mut(usize::from(layer)),
        ) else {
            return;
        };
        if let (Some((at, long)), Some((last, _))) = (f.picture_id, self.last_picture_id) {
            if let Some(id) = read_picture_id(payload, at, long) {
                slot.0 = last.wrapping_add(1).wrapping_sub(id) & mask(long);
            }
        }
        if let (Some(at), Some(last)) = (f.tl0, self.last_tl0) {
            if let Some(&tl0) = payload.get(at) {
                slot.1 = last.wrapping_add(1).wrapping_sub(tl0);
            }
        }
    }

    /// A packet of `layer` as this leg sends it: `None` when its numbers stay as they are,
    /// else a copy (in `arena`) with them shifted. The newest numbers sent are remembered.
    pub fn rewrite(
        &mut self,
        layer: LayerIndex,
        payload: &Bytes,
        arena: &mut BytesMut,
    ) -> Option<Bytes> {
        self.shift(layer, payload, arena, true)
    }

    /// As [`rewrite`](Self::rewrite), for a retransmission: nothing is remembered.
    pub fn rewrite_again(
        &mut self,
        layer: LayerIndex,
        payload: &Bytes,
        arena: &mut BytesMut,
    ) -> Option<Bytes> {
        self.shift(layer, payload, arena, false)
    }

    fn shift(
        &mut self,
        layer: LayerIndex,
        payload: &Bytes,
        arena: &mut BytesMut,
        remember: bool,
    ) -> Option<Bytes> {
        let f = vp8_descriptor(payload)?;
        let (pid_offset, tl0_offset) = *self.offsets.get(usize::from(layer))?;
        let picture_id = f.picture_id.and_then(|(at, long)| {
            let id = read_picture_id(payload, at, long)?.wrapping_add(pid_offset) & mask(long);
            Some((at, long, id))
        });
        let tl0 = f
            .tl0
            .and_then(|at| Some((at, payload.get(at)?.wrapping_add(tl0_offset))));
        if remember {
            if let Some((_, long, id)) = picture_id {
                let newer = self
                    .last_picture_id
                    .is_none_or(|(last, l)| l != long || ahead(id, last, mask(long)));
                if newer {
                    self.last_picture_id = Some((id, long));
                }
            }
            if let Some((_, t)) = tl0 {
                if self
                    .last_tl0
                    .is_none_or(|last| ahead(u16::from(t), u16::from(last), 0xff))
                {
                    self.last_tl0 = Some(t);
                }
            }
        }
        if (pid_offset == 0 && tl0_offset == 0) || (picture_id.is_none() && tl0.is_none()) {
            return None;
        }
        if arena.capacity() - arena.len() < payload.len() {
            arena.reserve(ARENA_CHUNK.max(payload.len()));
        }
        arena.extend_from_slice(payload);
        if let Some((at, long, id)) = picture_id {
            write_picture_id(arena, at, long, id);
        }
        if let Some((at, t)) = tl0 {
            if let Some(b) = arena.get_mut(at) {
                *b = t;
            }
        }
        Some(arena.split().freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 payload with a 15-bit PictureID and a TL0PICIDX, then `body`.
    fn vp8(picture_id: u16, tl0: u8, body: &[u8]) -> Bytes {
        let mut p = vec![
            0x90,
            0xc0,
            0x80 | (picture_id >> 8) as u8,
            picture_id as u8,
            tl0,
        ];
        p.extend_from_slice(body);
        Bytes::from(p)
    }

    fn numbers(p: &[u8]) -> (u16, u8) {
        let f = vp8_descriptor(p).unwrap();
        let (at, long) = f.picture_id.unwrap();
        (read_picture_id(p, at, long).unwrap(), p[f.tl0.unwrap()])
    }

    #[test]
    fn the_first_layer_goes_as_it_is() {
        let mut n = Vp8Numbers::default();
        let mut arena = BytesMut::new();
        let p = vp8(1000, 7, b"key");
        n.align(1, &p);
        assert_eq!(n.rewrite(1, &p, &mut arena), None);
        assert_eq!(n.rewrite(1, &vp8(1001, 8, b"delta"), &mut arena), None);
    }

    #[test]
    fn a_switch_continues_the_numbers_whichever_way_they_were() {
        let mut n = Vp8Numbers::default();
        let mut arena = BytesMut::new();
        for i in 0..5 {
            n.rewrite(1, &vp8(5000 + i, 40 + i as u8, b"h"), &mut arena);
        }
        // The top layer numbers from far behind: its keyframe becomes picture 5005, TL0 45.
        let key = vp8(120, 250, b"f key");
        n.align(2, &key);
        let out = n.rewrite(2, &key, &mut arena).unwrap();
        assert_eq!(numbers(&out), (5005, 45));
        assert_eq!(&out[5..], b"f key", "the rest untouched");
        let out = n
            .rewrite(2, &vp8(121, 251, b"f delta"), &mut arena)
            .unwrap();
        assert_eq!(numbers(&out), (5006, 46));
        // Back down to the middle layer, which moved on meanwhile (5001 + 9).
        let key = vp8(5010, 50, b"h key");
        n.align(1, &key);
        assert_eq!(
            numbers(&n.rewrite(1, &key, &mut arena).unwrap()),
            (5007, 47)
        );
        // A retransmission of the top layer's delta keeps its sent numbers and moves nothing.
        let again = n
            .rewrite_again(2, &vp8(121, 251, b"f delta"), &mut arena)
            .unwrap();
        assert_eq!(numbers(&again), (5006, 46));
        let next = n.rewrite(1, &vp8(5011, 51, b"h"), &mut arena).unwrap();
        assert_eq!(numbers(&next), (5008, 48));
    }

    #[test]
    fn picture_ids_wrap_at_15_bits() {
        let mut n = Vp8Numbers::default();
        let mut arena = BytesMut::new();
        n.rewrite(0, &vp8(0x7ffe, 1, b""), &mut arena);
        let key = vp8(300, 9, b"");
        n.align(1, &key);
        assert_eq!(numbers(&n.rewrite(1, &key, &mut arena).unwrap()).0, 0x7fff);
        assert_eq!(
            numbers(&n.rewrite(1, &vp8(301, 10, b""), &mut arena).unwrap()).0,
            0
        );
    }

    #[test]
    fn short_broken_or_bare_descriptors_are_left_alone() {
        let mut n = Vp8Numbers::default();
        let mut arena = BytesMut::new();
        n.rewrite(0, &vp8(10, 1, b""), &mut arena);
        n.align(1, &vp8(500, 1, b""));
        for p in [
            Bytes::new(),
            Bytes::from_static(&[0x90]),
            Bytes::from_static(&[0x90, 0x80, 0x81]),
            Bytes::from_static(&[0x10, 0x00]),
        ] {
            assert_eq!(n.rewrite(1, &p, &mut arena), None, "{p:?}");
        }
        // A 7-bit PictureID shifts within 7 bits.
        let short = Bytes::from_static(&[0x90, 0x80, 0x05]);
        let out = n.rewrite(1, &short, &mut arena).unwrap();
        assert_eq!(out[2] & 0x80, 0);
    }

    #[test]
    fn copies_share_the_arena() {
        let mut n = Vp8Numbers::default();
        let mut arena = BytesMut::new();
        n.rewrite(0, &vp8(10, 1, b""), &mut arena);
        n.align(1, &vp8(500, 1, b""));
        let a = n.rewrite(1, &vp8(500, 1, &[1; 100]), &mut arena).unwrap();
        let cap = arena.capacity();
        let b = n.rewrite(1, &vp8(501, 2, &[2; 100]), &mut arena).unwrap();
        assert!(cap >= ARENA_CHUNK - 200 && arena.capacity() < cap);
        assert_eq!((a.len(), b.len()), (105, 105));
    }
}
