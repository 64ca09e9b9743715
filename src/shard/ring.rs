//! `RxBuf`: the per-connection receive buffer that packets are decoded from in place.
//!
//! Owns: the bytes read from one socket that do not yet form a whole packet. Invariant:
//! `data[start..end]` is the unread part and is always contiguous, so the codec can borrow a
//! whole packet as one slice. Instead of a wrapping ring (which would split packets at the
//! wrap point and force a copy to parse them), the buffer compacts: the unread tail moves
//! to the front when the space after it runs short. Every complete packet is consumed
//! before the next read, so what is moved is at most one partial packet.
//!
//! Memory: an idle connection holds no buffer at all. The shard reads first into its own
//! scratch buffer and only a partial packet is copied here, so thousands of idle
//! connections cost no receive memory. Must not touch: sockets (the caller reads), MQTT.

/// Capacity kept across reads; a larger buffer (a big packet) is released once drained.
const RETAIN_CAPACITY_MAX: usize = 16 * 1024;

/// Smallest region `spare` offers when the caller does not know how much is coming (the
/// fixed header is still incomplete): a connection dribbling a byte at a time holds a few
/// dozen bytes, not a page.
const SPARE_BYTES_MIN: usize = 64;

/// A compacting receive buffer.
#[derive(Debug, Default)]
pub struct RxBuf {
    data: Vec<u8>,
    start: usize,
    /// Where the region handed out by `spare` begins.
    spare_at: usize,
}

impl RxBuf {
    /// True when no unread bytes are held.
    pub fn is_empty(&self) -> bool {
        self.start == self.data.len()
    }

    /// Unread bytes.
    pub fn len(&self) -> usize {
        self.data.len() - self.start
    }

    /// The unread bytes, contiguous.
    pub fn readable(&self) -> &[u8] {
        &self.data[self.start..]
    }

    /// Append bytes (a partial packet left over in the shard's scratch buffer).
    pub fn extend(&mut self, bytes: &[u8]) {
        self.compact();
        self.data.reserve_exact(bytes.len());
        self.data.extend_from_slice(bytes);
    }

    /// Bytes of memory this buffer holds (its capacity), for the memory accounting.
    pub fn capacity(&self) -> usize {
        self.data.capacity()
    }

    /// Mark `n` unread bytes as consumed.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start += n.min(self.len());
        if self.is_empty() {
            self.data.clear();
            self.start = 0;
            if self.data.capacity() > RETAIN_CAPACITY_MAX {
                self.data = Vec::new();
            }
        }
    }

    /// A writable region of at least `min` bytes after the unread data; call `filled`
    /// with the number of bytes written into it. The buffer grows by exactly what is asked
    /// (no doubling), so it never holds much more than the bytes that actually arrived.
    pub fn spare(&mut self, min: usize) -> &mut [u8] {
        self.compact();
        let len = self.data.len();
        self.spare_at = len;
        let want = len + min.max(SPARE_BYTES_MIN);
        if self.data.capacity() < want {
            self.data.reserve_exact(want - len);
        }
        let cap = self.data.capacity();
        self.data.resize(cap, 0);
        &mut self.data[len..]
    }

    /// After `spare`: keep `n` of the spare bytes as received data and drop the rest.
    pub fn filled(&mut self, n: usize) {
        let end = (self.spare_at + n).min(self.data.len());
        self.data.truncate(end);
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.data.drain(..self.start);
            self.start = 0;
        }
    }

    /// Take everything unread (for handing a connection to another shard).
    pub fn take_unread(&mut self) -> Vec<u8> {
        self.compact();
        std::mem::take(&mut self.data)
    }

    /// A buffer holding `bytes` as unread data.
    pub fn from_vec(bytes: Vec<u8>) -> RxBuf {
        RxBuf {
            data: bytes,
            start: 0,
            spare_at: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

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
            let op = next() % 3;
            if op == 0 {
                let n = (next() % 300) as usize;
                let bytes: Vec<u8> = (0..n).map(|i| (round as usize + i) as u8).collect();
                buf.extend(&bytes);
                oracle.extend(bytes);
            } else if op == 1 {
                let n = (next() % 200) as usize;
                let spare = buf.spare(n);
                let k = n.min(spare.len());
                for (i, b) in spare[..k].iter_mut().enumerate() {
                    *b = (i * 7) as u8;
                }
                buf.filled(k);
                oracle.extend((0..k).map(|i| (i * 7) as u8));
            } else {
                let n = (next() as usize) % (buf.len() + 1);
                buf.consume(n);
                oracle.drain(..n);
            }
            assert_eq!(buf.readable(), oracle.iter().copied().collect::<Vec<_>>());
        }
    }

    #[test]
    fn grows_with_the_bytes_that_arrive_not_by_doubling() {
        let mut buf = RxBuf::default();
        buf.extend(&[0x30]);
        assert!(buf.capacity() < SPARE_BYTES_MIN, "{}", buf.capacity());
        let spare = buf.spare(0);
        assert!(spare.len() <= 2 * SPARE_BYTES_MIN, "{}", spare.len());
        buf.filled(1);
        let mut held = buf.len();
        for _ in 0..100 {
            let s = buf.spare(10_000);
            s[..10_000].fill(7);
            buf.filled(10_000);
            held += 10_000;
            assert!(buf.capacity() <= held + 10_000 + SPARE_BYTES_MIN);
        }
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
