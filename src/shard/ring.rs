//! `RxBuf`: the per-connection receive buffer that packets are decoded from in place.
//!
//! Owns: the bytes read from one socket that do not yet form a whole packet. Invariant:
//! whenever a whole packet is held, `readable` gives it as one contiguous slice, so the
//! codec can borrow it. Two forms:
//!
//! - **Small** (the common case): `data[start..]` is the unread part, contiguous. Instead
//!   of a wrapping ring (which would split packets at the wrap point and force a copy to
//!   parse them), the buffer compacts: the unread tail moves to the front before it grows.
//!   Every complete packet is consumed before the next read, so what is moved is at most
//!   one partial packet, and it grows by exactly the bytes appended (no doubling, no
//!   zero-fill).
//! - **Chunked**: once a packet is known to be longer than [`CHUNK_BYTES`] (its fixed
//!   header says so, [`RxBuf::expect`]) and [`CHUNK_BYTES`] of it are held, further bytes go
//!   into a list of chunks of at most [`CHUNK_BYTES`] each, never past the packet's end, so
//!   the buffer grows without moving what it holds and holds about the bytes received
//!   (the last chunk's spare room is at most what is still to come, and never more than
//!   one chunk). The pieces are joined into one allocation of exactly the held bytes only
//!   when the packet is whole ([`RxBuf::complete`]), to decode it.
//!
//! A buffer that grew by moving (`Vec::reserve`) left a freed copy behind at each step,
//! which the allocator returns to the OS only after its decay time: 40 partial packets of
//! 1 MiB held RSS at 1.5 times the bytes received for seconds (docs/robustness.md).
//!
//! Memory: an idle connection holds no buffer at all. The shard reads into its own scratch
//! buffer and only a partial packet is copied here, so thousands of idle connections cost
//! no receive memory. Must not touch: sockets (the caller reads), MQTT (the caller tells
//! it a packet's length).

/// Capacity kept across reads; a larger buffer (a big packet) is released once drained.
const RETAIN_CAPACITY_MAX: usize = 16 * 1024;

/// Largest piece of a chunked partial packet, and the held bytes past which a packet
/// known to be longer is kept in pieces rather than grown in place.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// A receive buffer: contiguous for small packets, chunked for large partial ones.
///
/// 40 bytes: the chunked form's state is boxed, since every connection holds an `RxBuf`
/// and few ever hold a packet over [`CHUNK_BYTES`] (inline, it made every connection 32
/// bytes larger; `the_buffer_itself_stays_small`).
#[derive(Debug, Default)]
pub struct RxBuf {
    /// The unread bytes from `start` (all of them in the small form; the first piece in
    /// the chunked form).
    data: Vec<u8>,
    start: usize,
    /// The packet at the front when it is longer than [`CHUNK_BYTES`], and its pieces.
    large: Option<Box<Large>>,
}

/// A large packet at the front of an [`RxBuf`].
#[derive(Debug, Default)]
struct Large {
    /// Its total length (from its fixed header); 0 once it is no longer expected.
    packet: usize,
    /// The pieces after `data`, in order.
    chunks: Vec<Vec<u8>>,
    /// Bytes held in `chunks`.
    chunked: usize,
}

impl RxBuf {
    /// True when no unread bytes are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Unread bytes.
    pub fn len(&self) -> usize {
        self.data.len() - self.start + self.large.as_ref().map_or(0, |l| l.chunked)
    }

    /// Length of the large packet expected at the front (0: none).
    fn packet(&self) -> usize {
        self.large.as_ref().map_or(0, |l| l.packet)
    }

    /// True while no piece is held past `data`.
    fn unchunked(&self) -> bool {
        self.large.as_ref().is_none_or(|l| l.chunks.is_empty())
    }

    /// The unread bytes, contiguous (joined first if they are held in pieces: call it
    /// when [`RxBuf::complete`] says a whole packet is there, or to hand the bytes over).
    pub fn readable(&mut self) -> &[u8] {
        self.join();
        &self.data[self.start..]
    }

    /// Append bytes (read into the shard's scratch buffer): in place when small, as
    /// pieces once a large packet's first [`CHUNK_BYTES`] are held.
    pub fn extend(&mut self, mut bytes: &[u8]) {
        let held = self.len();
        let Some(large) = self
            .large
            .as_mut()
            .filter(|l| l.packet != 0 && !(l.chunks.is_empty() && held < CHUNK_BYTES))
        else {
            self.compact();
            self.data.reserve_exact(bytes.len());
            self.data.extend_from_slice(bytes);
            return;
        };
        let mut held = held;
        while !bytes.is_empty() {
            let room = large.chunks.last().map_or(0, |c| c.capacity() - c.len());
            if room == 0 {
                // At most one chunk, and never past the packet's end (a read may run past
                // it: the next packet's first bytes get a piece of their own size).
                let to_come = large.packet.saturating_sub(held);
                let size = to_come.clamp(bytes.len().min(CHUNK_BYTES), CHUNK_BYTES);
                large.chunks.push(Vec::with_capacity(size));
                continue;
            }
            let n = room.min(bytes.len());
            if let Some(last) = large.chunks.last_mut() {
                last.extend_from_slice(&bytes[..n]);
            }
            large.chunked += n;
            held += n;
            bytes = &bytes[n..];
        }
    }

    /// The packet at the front is `total` bytes long (from its fixed header) and not yet
    /// whole: if it is longer than [`CHUNK_BYTES`], the rest of it is kept in pieces.
    pub fn expect(&mut self, total: usize) {
        if total > CHUNK_BYTES {
            self.large.get_or_insert_with(Box::default).packet = total;
        } else if self.unchunked() {
            self.large = None;
        } else if let Some(l) = self.large.as_mut() {
            l.packet = 0;
        }
    }

    /// The held bytes while they are in one piece (None once a large packet is held in
    /// pieces): the caller reads the packet's length from their fixed header.
    pub fn contiguous(&self) -> Option<&[u8]> {
        self.unchunked().then(|| &self.data[self.start..])
    }

    /// False while a large packet is still arriving (decoding would only ask for more);
    /// true otherwise.
    pub fn complete(&self) -> bool {
        let packet = self.packet();
        packet == 0 || self.len() >= packet
    }

    /// Bytes of memory this buffer holds (its capacity), for the memory accounting.
    pub fn capacity(&self) -> usize {
        let chunks = self
            .large
            .as_ref()
            .map_or(0, |l| l.chunks.iter().map(Vec::capacity).sum::<usize>());
        self.data.capacity() + chunks
    }

    /// Mark `n` unread bytes as consumed (they were decoded from [`RxBuf::readable`]).
    pub fn consume(&mut self, n: usize) {
        self.join();
        debug_assert!(n <= self.len());
        self.start += n.min(self.len());
        self.large = None;
        if self.is_empty() {
            self.data.clear();
            self.start = 0;
            if self.data.capacity() > RETAIN_CAPACITY_MAX {
                self.data = Vec::new();
            }
        }
    }

    /// Join the pieces into one allocation of exactly the held bytes.
    fn join(&mut self) {
        if self.unchunked() {
            return;
        }
        let mut whole = Vec::with_capacity(self.len());
        whole.extend_from_slice(&self.data[self.start..]);
        if let Some(l) = self.large.as_mut() {
            for c in l.chunks.drain(..) {
                whole.extend_from_slice(&c);
            }
            l.chunks = Vec::new();
            l.chunked = 0;
        }
        self.data = whole;
        self.start = 0;
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.data.drain(..self.start);
            self.start = 0;
        }
    }

    /// Take everything unread (for handing a connection to another shard).
    pub fn take_unread(&mut self) -> Vec<u8> {
        self.join();
        self.compact();
        self.large = None;
        std::mem::take(&mut self.data)
    }

    /// A buffer holding `bytes` as unread data.
    pub fn from_vec(bytes: Vec<u8>) -> RxBuf {
        RxBuf {
            data: bytes,
            ..RxBuf::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A random sequence of appends, declared packet lengths and consumes gives the same
    /// bytes as a `VecDeque`, in both forms.
    #[test]
    fn matches_a_vecdeque_oracle() {
        let mut buf = RxBuf::default();
        let mut oracle: VecDeque<u8> = VecDeque::new();
        let mut seed = 0x2545_f491_u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for round in 0..5_000u32 {
            let op = next() % 4;
            if op == 0 {
                let n = (next() % 300) as usize;
                let bytes: Vec<u8> = (0..n).map(|i| (round as usize + i) as u8).collect();
                buf.extend(&bytes);
                oracle.extend(bytes);
            } else if op == 1 {
                let n = (next() % 40_000) as usize;
                let bytes: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
                buf.extend(&bytes);
                oracle.extend(bytes);
            } else if op == 2 {
                buf.expect(buf.len() + (next() % 300_000) as usize);
                assert!(buf.complete() || buf.len() < buf.packet());
            } else {
                let n = (next() as usize) % (buf.len() + 1);
                assert_eq!(buf.readable(), oracle.iter().copied().collect::<Vec<_>>());
                buf.consume(n);
                oracle.drain(..n);
            }
            assert_eq!(buf.len(), oracle.len());
        }
        assert_eq!(buf.readable(), oracle.iter().copied().collect::<Vec<_>>());
    }

    #[test]
    fn small_packets_grow_in_place_by_the_bytes_that_arrive() {
        let mut buf = RxBuf::default();
        buf.extend(&[0x30]);
        assert!(buf.capacity() < 64, "{}", buf.capacity());
        buf.expect(10_001);
        let mut held = buf.len();
        for _ in 0..100 {
            buf.extend(&[7; 100]);
            held += 100;
            assert!(buf.unchunked());
            assert!(buf.capacity() <= held + 64, "{} for {held}", buf.capacity());
        }
        assert!(buf.complete());
    }

    /// A 1 MiB packet arriving in reads of 10,000 bytes: past the first chunk's worth, the
    /// held pieces never move (the first piece keeps its address) and the buffer's
    /// capacity stays within one chunk of what arrived; it is joined, exactly, when whole.
    #[test]
    fn a_large_packet_is_held_in_pieces_that_never_move() {
        const TOTAL: usize = 1024 * 1024;
        let mut buf = RxBuf::default();
        let mut sent = 0;
        let mut first_piece = None;
        while sent < TOTAL {
            let n = 10_000.min(TOTAL - sent);
            let bytes: Vec<u8> = (sent..sent + n).map(|i| i as u8).collect();
            buf.extend(&bytes);
            sent += n;
            buf.expect(TOTAL);
            assert_eq!(buf.complete(), sent == TOTAL);
            assert!(
                buf.capacity() <= sent + CHUNK_BYTES,
                "{} for {sent}",
                buf.capacity()
            );
            let chunks = buf.large.as_ref().map_or(&[][..], |l| &l.chunks[..]);
            if let Some(c) = chunks.first() {
                let at = c.as_ptr();
                assert_eq!(*first_piece.get_or_insert(at), at, "a piece moved");
                assert!(chunks.iter().all(|c| c.capacity() <= CHUNK_BYTES));
            }
        }
        let pieces = buf.large.as_ref().map_or(0, |l| l.chunks.len());
        assert!(pieces >= (TOTAL - 2 * CHUNK_BYTES) / CHUNK_BYTES);
        let whole = buf.readable().to_vec();
        assert_eq!(whole.len(), TOTAL);
        assert!(whole.iter().enumerate().all(|(i, &b)| b == i as u8));
        assert_eq!(buf.capacity(), TOTAL);
        buf.consume(TOTAL);
        assert_eq!(buf.capacity(), 0);
    }

    /// A read that runs past the large packet's end: the next packet's first bytes are
    /// kept after it, in a piece of their own size.
    #[test]
    fn bytes_past_a_large_packet_follow_it() {
        let total = 3 * CHUNK_BYTES + 5;
        let mut buf = RxBuf::default();
        buf.extend(&vec![1; CHUNK_BYTES]);
        buf.expect(total);
        buf.extend(&vec![1; 2 * CHUNK_BYTES]);
        let mut tail = vec![1; 5];
        tail.extend_from_slice(&[0xc0, 0x00, 0x30]);
        buf.extend(&tail);
        assert!(buf.complete());
        assert_eq!(buf.capacity(), total + 3);
        assert_eq!(&buf.readable()[total..], &[0xc0, 0x00, 0x30]);
        buf.consume(total);
        assert_eq!(buf.readable(), &[0xc0, 0x00, 0x30]);
        assert!(buf.complete());
    }

    /// Every connection holds one: the chunked form's state must stay out of line.
    #[test]
    fn the_buffer_itself_stays_small() {
        assert!(std::mem::size_of::<RxBuf>() <= 40);
        let mut buf = RxBuf::default();
        buf.extend(&[0x10]);
        buf.expect(CHUNK_BYTES + 1);
        assert!(buf.large.is_some());
        buf.consume(1);
        assert!(buf.large.is_none());
    }

    #[test]
    fn releases_large_capacity_when_drained() {
        let mut buf = RxBuf::default();
        buf.extend(&vec![1; 100_000]);
        buf.consume(100_000);
        assert!(buf.is_empty());
        assert_eq!(buf.data.capacity(), 0);
    }
}
