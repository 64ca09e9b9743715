//! The children of a wide trie node: level → child, in a hash map that never grows in one
//! big step.
//!
//! Owns: extendible hashing over bounded segments. A directory of `2^depth` slots, indexed
//! by bits of the level's hash, points at segments; each segment is a `HashMap` of at most
//! [`SEGMENT_MAX`] entries. A segment that would pass it splits in two by the next hash
//! bit (doubling the directory first when needed). So the work of one insertion is bounded
//! by one segment's entries plus the directory (4 bytes per 1,344 or more children), never
//! by the node's size: a plain `HashMap` of a million children rehashes all of them in
//! one insertion, a stall for every client of the shard. Segments also shrink their table
//! as they empty, so a node that was wide gives memory back before it is small again.
//! Each segment splits at its own limit, drawn from the node's seed and the segment's
//! place, between 3/4 and all of [`SEGMENT_MAX`]: with one limit for all, a uniform hash
//! brings every segment of one depth to it together, and the splits come in a wave.
//!
//! Invariants: a key lives in the segment its hash's directory bits point to; a segment of
//! local depth `d` owns exactly the directory slots that agree with its `bits` on the low
//! `d` bits; `len` is the sum of the segments' lengths. Must not touch: the nodes.
//! Why: docs/decisions/0002-topic-trie.md ("Wide nodes").

use std::hash::BuildHasher;

use super::children::LevelMap;
use crate::hash::SeededHash;

/// Entries of one segment at most (while it can split): 7/8 of 4,096 buckets, the load at
/// which its table would double.
pub(crate) const SEGMENT_MAX: usize = 3_584;
/// A segment's own split limit is `SEGMENT_MAX` less up to this many (so between 2,688
/// and 3,584 entries).
const LIMIT_SPREAD: usize = SEGMENT_MAX / 4;
/// The directory's depth at most (16 Mi slots, 64 MiB): past it a segment grows as a plain
/// map. With a per-node random seed no client can choose levels that get there; it takes
/// billions of children otherwise.
const DEPTH_MAX: u32 = 24;
/// Directory bits are taken from the hash above the bits a segment's table uses for its
/// buckets (the low ones) and below the 7 it uses as tags (the top ones).
const DIR_SHIFT: u32 = 24;

type Map<N> = LevelMap<N>;

#[derive(Debug)]
struct Segment<N> {
    /// Local depth: the number of low directory bits all its keys share.
    depth: u32,
    /// The entries at which it splits ([`Wide::limit`]).
    limit: u32,
    /// Those bits.
    bits: usize,
    map: Map<N>,
}

/// A map of level → child that grows in steps of at most one segment.
#[derive(Debug)]
pub(crate) struct Wide<N> {
    hasher: SeededHash,
    /// Global depth: the directory has `2^depth` slots.
    depth: u32,
    dir: Vec<u32>,
    segs: Vec<Segment<N>>,
    len: usize,
}

impl<N> Wide<N> {
    /// A map of one segment, `map` (its hasher is the map's from now on).
    pub(crate) fn from_map(map: Map<N>) -> Self {
        let hasher = map.hasher().clone();
        let limit = limit(&hasher, 0, 0);
        Wide {
            hasher,
            depth: 0,
            len: map.len(),
            dir: vec![0],
            segs: vec![Segment {
                depth: 0,
                limit,
                bits: 0,
                map,
            }],
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The segment holding `level`. A single-segment map needs no hash for it.
    #[inline]
    fn segment_of(&self, level: &str) -> usize {
        if self.depth == 0 {
            return 0;
        }
        let slot = (self.hasher.hash_one(level) >> DIR_SHIFT) as usize & (self.dir.len() - 1);
        self.dir[slot] as usize
    }

    /// Inlined into [`super::children::Big::get`], which is the out-of-line call, so that
    /// [`super::children::Children::get`] (on every publish) stays a scan and one call.
    #[inline]
    pub(crate) fn get(&self, level: &str) -> Option<&N> {
        self.segs[self.segment_of(level)].map.get(level)
    }

    pub(crate) fn get_mut(&mut self, level: &str) -> Option<&mut N> {
        let s = self.segment_of(level);
        self.segs[s].map.get_mut(level)
    }

    /// The child for `level`, created with `make` if absent. Splits its segment first when
    /// full: at most one split per call in practice, and each moves at most
    /// [`SEGMENT_MAX`] entries.
    pub(crate) fn get_or_insert_with(&mut self, level: &str, make: impl FnOnce() -> N) -> &mut N {
        let mut s = self.segment_of(level);
        if !self.segs[s].map.contains_key(level) {
            // A split may leave every key on one side (rare: the hash decides); try again.
            while self.segs[s].map.len() >= self.segs[s].limit as usize && self.split(s) {
                s = self.segment_of(level);
            }
            self.len += 1;
        }
        self.segs[s].map.entry(level.into()).or_insert_with(make)
    }

    pub(crate) fn remove(&mut self, level: &str) -> Option<N> {
        let s = self.segment_of(level);
        let map = &mut self.segs[s].map;
        let removed = map.remove(level)?;
        self.len -= 1;
        // Give memory back as a segment empties; bounded by one segment's entries.
        if map.capacity() > 64 && map.len() * 4 < map.capacity() {
            map.shrink_to(map.len() * 2);
        }
        Some(removed)
    }

    /// Splits segment `s` by its next directory bit; false if it is at [`DEPTH_MAX`].
    fn split(&mut self, s: usize) -> bool {
        let depth = self.segs[s].depth;
        if depth >= DEPTH_MAX {
            return false;
        }
        if depth == self.depth {
            // Each slot's twin (the slot plus 2^depth) points where it does.
            self.dir.extend_from_within(..);
            self.depth += 1;
        }
        let bit = 1usize << depth;
        // Room for a whole segment in each half: each gets about half the entries, and a
        // table sized for that half is full at once, so both would soon double again,
        // rehashing another 3,584 entries in all. The tables end up this size either
        // way (docs/decisions/0002-topic-trie.md, "the split wave").
        let old = std::mem::replace(
            &mut self.segs[s].map,
            Map::with_capacity_and_hasher(SEGMENT_MAX, self.hasher.clone()),
        );
        let mut moved = Map::with_capacity_and_hasher(SEGMENT_MAX, self.hasher.clone());
        for (k, v) in old {
            if (self.hasher.hash_one(&*k) >> DIR_SHIFT) as usize & bit == 0 {
                self.segs[s].map.insert(k, v);
            } else {
                moved.insert(k, v);
            }
        }
        let bits = self.segs[s].bits | bit;
        self.segs[s].depth = depth + 1;
        self.segs[s].limit = limit(&self.hasher, depth + 1, self.segs[s].bits);
        let new = u32::try_from(self.segs.len()).expect("fewer than 2^32 segments");
        self.segs.push(Segment {
            depth: depth + 1,
            limit: limit(&self.hasher, depth + 1, bits),
            bits,
            map: moved,
        });
        // The slots whose low depth+1 bits are `bits` move to the new segment.
        let mut slot = bits;
        while slot < self.dir.len() {
            self.dir[slot] = new;
            slot += bit << 1;
        }
        true
    }

    /// Every `(level, child)`, in no particular order.
    pub(crate) fn iter(&self) -> WideIter<'_, N> {
        WideIter {
            segs: self.segs.iter(),
            cur: None,
        }
    }

    /// Takes every entry out, leaving the map empty.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (Box<str>, N)> + '_ {
        self.len = 0;
        self.segs.iter_mut().flat_map(|s| s.map.drain())
    }

    /// The number of segments and the directory's depth, for tests.
    #[cfg(test)]
    pub(crate) fn shape(&self) -> (usize, u32) {
        (self.segs.len(), self.depth)
    }
}

/// The split limit of the segment of local depth `depth` and directory bits `bits`: between
/// `SEGMENT_MAX - LIMIT_SPREAD` and `SEGMENT_MAX`, a function of the node's seed and the
/// segment's place only (so the same node splits the same way whatever the timing), and
/// spread evenly over that range from one segment to the next. The two halves of a split
/// get two independent limits, so segments that were equal drift apart: the splits of one
/// depth spread over a quarter of the node's growth, and further over the next depths.
/// The cost: segments split a little emptier (at 7/8 of [`SEGMENT_MAX`] on average), in
/// tables of the same size.
fn limit(hasher: &SeededHash, depth: u32, bits: usize) -> u32 {
    let h = hasher.hash_one((depth, bits));
    // The high bits: the folded multiply mixes them best.
    let spread = ((h >> 32) as usize) % (LIMIT_SPREAD + 1);
    (SEGMENT_MAX - spread) as u32
}

/// Iterator over a [`Wide`] map's entries.
pub(crate) struct WideIter<'a, N> {
    segs: std::slice::Iter<'a, Segment<N>>,
    cur: Option<std::collections::hash_map::Iter<'a, Box<str>, N>>,
}

impl<'a, N> Iterator for WideIter<'a, N> {
    type Item = (&'a str, &'a N);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((k, n)) = self.cur.as_mut().and_then(Iterator::next) {
                return Some((&**k, n));
            }
            self.cur = Some(self.segs.next()?.map.iter());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The segments split at their own limits, so the splits of one depth do not come
    /// together: no 4,096 insertions in a row (four SUBSCRIBEs of 1,024) split more than a
    /// few segments (10-11 seen, bound 20). With one limit for all (spread 0) the 64
    /// segments of the last depth here split within a few per cent of the node's growth:
    /// 30 in 4,096 insertions when tried.
    #[test]
    fn splits_spread_out() {
        let mut w: Wide<u32> = Wide::from_map(Map::with_hasher(SeededHash::new()));
        let n = SEGMENT_MAX * 64;
        let mut splits_at = Vec::new();
        for i in 0..n {
            let before = w.segs.len();
            w.get_or_insert_with(&format!("big/{i}"), || 0);
            splits_at.extend((before..w.segs.len()).map(|_| i));
        }
        let range = (SEGMENT_MAX - LIMIT_SPREAD) as u32..=SEGMENT_MAX as u32;
        assert!(w.segs.iter().all(|s| range.contains(&s.limit)));
        assert!(w.segs.iter().all(|s| s.map.len() <= s.limit as usize));
        // Past the first few depths (whose few segments split alone anyway).
        let late: Vec<usize> = splits_at.into_iter().filter(|&i| i >= n / 8).collect();
        let most = late
            .iter()
            .enumerate()
            .map(|(k, &i)| late[k..].iter().take_while(|&&j| j < i + 4_096).count())
            .max()
            .unwrap_or(0);
        assert!(most <= 20, "{most} splits within 4,096 insertions");
        let limits: std::collections::HashSet<u32> = w.segs.iter().map(|s| s.limit).collect();
        assert!(limits.len() > w.segs.len() / 2, "{} limits", limits.len());
    }

    /// Against a `BTreeMap`, across several splits and back down.
    #[test]
    fn wide_map_matches_btreemap_through_splits() {
        let mut w: Wide<u32> = Wide::from_map(Map::with_hasher(SeededHash::new()));
        let mut oracle = BTreeMap::new();
        let n = SEGMENT_MAX as u32 * 9;
        for i in 0..n {
            let k = format!("dev{}", i.wrapping_mul(2_654_435_761) % (n * 2));
            let v = *w.get_or_insert_with(&k, || i);
            assert_eq!(v, *oracle.entry(k).or_insert(i));
        }
        assert_eq!(w.len(), oracle.len());
        let (segs, depth) = w.shape();
        assert!(segs >= 4 && depth >= 2, "{segs} segments, depth {depth}");
        assert!(w.segs.iter().all(|s| s.map.len() <= SEGMENT_MAX));
        // A split's halves have room for a whole segment: none doubles before it splits.
        assert!(w.segs.iter().all(|s| s.map.capacity() >= SEGMENT_MAX));
        for (k, v) in &oracle {
            assert_eq!(w.get(k), Some(v));
        }
        assert_eq!(w.get("absent"), None);
        let mut all: Vec<_> = w.iter().map(|(k, &v)| (k.to_string(), v)).collect();
        all.sort();
        assert_eq!(all, oracle.clone().into_iter().collect::<Vec<_>>());
        let keys: Vec<String> = oracle.keys().cloned().collect();
        for k in keys.iter().step_by(2) {
            assert_eq!(w.remove(k), oracle.remove(k));
            assert_eq!(w.remove(k), None);
        }
        assert_eq!(w.len(), oracle.len());
        for (k, v) in &oracle {
            *w.get_mut(k).expect("kept") += 1;
            assert_eq!(w.get(k), Some(&(v + 1)));
        }
        let drained = w.drain().count();
        assert_eq!((drained, w.len(), w.iter().count()), (oracle.len(), 0, 0));
    }
}
