//! The children of one retained-tree node, kept in level order: level string → child.
//!
//! Owns: the layout per node. Few children live in a small `Vec` sorted by level (a
//! lookup scans it, an insertion point is a binary search; no hashing); past [`ORDERED_SMALL_MAX`] the node switches to a `BTreeMap`, and
//! drops back to the `Vec` at [`ORDERED_SMALL_MIN`] (hysteresis, as in `Children`).
//! Invariant: each level appears at most once, and iteration is in ascending byte order of
//! the levels whatever inserts and removes came before. That order is what lets a paced
//! walk stop after any child and resume after the same level next turn
//! ([`super::retained::MatchCursor`]), however the tree changed meanwhile; a hash map's
//! order moves with every resize. A `BTreeMap` also never rehashes a wide node in one
//! insertion: the work of one insertion is `O(log n)` whatever the node's size.
//! Must not touch: the nodes' own contents. The subscription trie keeps its hashed
//! `Children`: its walks need no order and its lookups are on every publish.

use std::collections::{btree_map, BTreeMap};
use std::ops::Bound;

/// Above this many children a node switches from the sorted `Vec` to a `BTreeMap`.
pub(crate) const ORDERED_SMALL_MAX: usize = 16;
/// At or below this many children a `BTreeMap` node switches back to the `Vec`.
pub(crate) const ORDERED_SMALL_MIN: usize = 8;

/// Level → child, in level order: a sorted `Vec` while small, a boxed `BTreeMap` when wide
/// (boxed: the enum stays the size of the `Vec`).
#[derive(Debug)]
pub(crate) enum Ordered<N> {
    Small(Vec<(Box<str>, N)>),
    // Boxed on purpose: unboxed, the enum would be 32 bytes instead of 24 (the `Vec`'s
    // niche holds the tag only if the other variant is a pointer), and every node pays.
    #[allow(clippy::box_collection)]
    Big(Box<BTreeMap<Box<str>, N>>),
}

impl<N> Ordered<N> {
    pub(crate) fn new() -> Self {
        Ordered::Small(Vec::new())
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Ordered::Small(v) => v.len(),
            Ordered::Big(m) => m.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub(crate) fn get(&self, level: &str) -> Option<&N> {
        match self {
            Ordered::Small(v) => position(v, level).map(|i| &v[i].1),
            Ordered::Big(m) => m.get(level),
        }
    }

    /// The child for `level` with the level as stored (it outlives the argument).
    pub(crate) fn get_key_value(&self, level: &str) -> Option<(&str, &N)> {
        match self {
            Ordered::Small(v) => position(v, level).map(|i| (&*v[i].0, &v[i].1)),
            Ordered::Big(m) => m.get_key_value(level).map(|(k, n)| (&**k, n)),
        }
    }

    pub(crate) fn get_mut(&mut self, level: &str) -> Option<&mut N> {
        match self {
            Ordered::Small(v) => position(v, level).map(|i| &mut v[i].1),
            Ordered::Big(m) => m.get_mut(level),
        }
    }

    /// The child for `level`, created with `make` if absent.
    pub(crate) fn get_or_insert_with(&mut self, level: &str, make: impl FnOnce() -> N) -> &mut N {
        if let Ordered::Small(v) = self {
            if v.len() >= ORDERED_SMALL_MAX && find(v, level).is_err() {
                let m: BTreeMap<Box<str>, N> = std::mem::take(v).into_iter().collect();
                *self = Ordered::Big(Box::new(m));
            }
        }
        match self {
            Ordered::Small(v) => {
                let i = match find(v, level) {
                    Ok(i) => i,
                    Err(i) => {
                        // Exact growth, as in `Children`: most nodes keep one child.
                        v.reserve_exact(1);
                        v.insert(i, (level.into(), make()));
                        i
                    }
                };
                &mut v[i].1
            }
            Ordered::Big(m) => match m.entry(level.into()) {
                btree_map::Entry::Occupied(e) => e.into_mut(),
                btree_map::Entry::Vacant(e) => e.insert(make()),
            },
        }
    }

    /// Removes and returns the child for `level`.
    pub(crate) fn remove(&mut self, level: &str) -> Option<N> {
        let removed = match self {
            Ordered::Small(v) => {
                let i = position(v, level)?;
                Some(v.remove(i).1)
            }
            Ordered::Big(m) => m.remove(level),
        };
        if let Ordered::Big(m) = self {
            if m.len() <= ORDERED_SMALL_MIN {
                let v: Vec<_> = std::mem::take(&mut **m).into_iter().collect();
                *self = Ordered::Small(v);
            }
        }
        removed
    }

    /// Every `(level, child)` in level order.
    pub(crate) fn iter(&self) -> OrderedIter<'_, N> {
        self.iter_after(None)
    }

    /// The `(level, child)` pairs whose level comes after `after` (all of them for `None`),
    /// in level order. `after` need not be a level of this node.
    pub(crate) fn iter_after(&self, after: Option<&str>) -> OrderedIter<'_, N> {
        match self {
            Ordered::Small(v) => {
                let from = after.map_or(0, |a| match find(v, a) {
                    Ok(i) => i + 1,
                    Err(i) => i,
                });
                OrderedIter::Small(v[from..].iter())
            }
            Ordered::Big(m) => {
                let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
                OrderedIter::Big(m.range::<str, _>((lower, Bound::Unbounded)))
            }
        }
    }
}

/// The index of `level` in a sorted small list (at most [`ORDERED_SMALL_MAX`] entries):
/// a scan that compares first bytes inline and stops at the first greater one, so a miss
/// or a passed entry costs no `memcmp` call; only an entry with the same first byte is
/// compared whole. The binary search it replaced called `memcmp` at every probe; the
/// retained walk's exact levels are such lookups (figures in
/// docs/decisions/0002-topic-trie.md).
#[inline]
fn position<N>(v: &[(Box<str>, N)], level: &str) -> Option<usize> {
    let want = level.as_bytes();
    // `None` (the empty level) sorts before every byte, as "" before every other level.
    let first = want.first();
    for (i, (k, _)) in v.iter().enumerate() {
        let k = k.as_bytes();
        match k.first().cmp(&first) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Greater => return None,
            std::cmp::Ordering::Equal if k == want => return Some(i),
            std::cmp::Ordering::Equal => {}
        }
    }
    None
}

/// Binary search of a sorted small list by level: where `level` is or would go.
#[inline]
fn find<N>(v: &[(Box<str>, N)], level: &str) -> Result<usize, usize> {
    v.binary_search_by(|(k, _)| (**k).cmp(level))
}

/// Iterator over `(level, child)` pairs in level order.
pub(crate) enum OrderedIter<'a, N> {
    Small(std::slice::Iter<'a, (Box<str>, N)>),
    Big(btree_map::Range<'a, Box<str>, N>),
}

impl<'a, N> Iterator for OrderedIter<'a, N> {
    type Item = (&'a str, &'a N);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            OrderedIter::Small(it) => it.next().map(|(k, n)| (&**k, n)),
            OrderedIter::Big(it) => it.next().map(|(k, n)| (&**k, n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys in order through growth and shrink, and `iter_after` from present and absent
    /// levels.
    #[test]
    fn as_small_as_a_vec() {
        assert_eq!(
            std::mem::size_of::<Ordered<[u64; 4]>>(),
            std::mem::size_of::<Vec<u8>>()
        );
    }

    /// The scan finds exactly what the binary search finds, in every small list of levels
    /// drawn from short levels sharing first bytes, the empty level and non-ASCII ones.
    #[test]
    fn the_scan_agrees_with_the_binary_search() {
        let alphabet = [
            "", "a", "ab", "aa", "b", "ba", "\u{e9}", "\u{e9}t", "z", "0", "~",
        ];
        // Every subset of up to ORDERED_SMALL_MAX levels is too many; every 3rd mask of
        // 11 bits, sorted as the `Vec` keeps them, is 683 lists.
        for mask in (0u32..1 << alphabet.len()).step_by(3) {
            let mut v: Vec<(Box<str>, usize)> = alphabet
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(i, l)| (Box::from(*l), i))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            assert!(v.len() <= ORDERED_SMALL_MAX);
            for probe in alphabet.iter().chain(&["aaa", "c", "\u{e8}"]) {
                assert_eq!(
                    position(&v, probe),
                    find(&v, probe).ok(),
                    "{probe:?} in {v:?}"
                );
            }
        }
    }

    #[test]
    fn ordered_through_growth_and_shrink() {
        let mut o: Ordered<usize> = Ordered::new();
        let keys: Vec<String> = (0..40).map(|i| format!("k{:02}", (i * 17) % 40)).collect();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(*o.get_or_insert_with(k, || i), i);
            let levels: Vec<&str> = o.iter().map(|(k, _)| k).collect();
            assert!(levels.windows(2).all(|w| w[0] < w[1]), "{levels:?}");
        }
        assert!(matches!(o, Ordered::Big(_)));
        assert_eq!(o.len(), 40);
        let after: Vec<&str> = o.iter_after(Some("k37")).map(|(k, _)| k).collect();
        assert_eq!(after, ["k38", "k39"]);
        let after: Vec<&str> = o.iter_after(Some("k375")).map(|(k, _)| k).collect();
        assert_eq!(after, ["k38", "k39"]);
        for i in 0..32 {
            assert!(o.remove(&format!("k{i:02}")).is_some());
        }
        assert!(matches!(o, Ordered::Small(_)));
        assert_eq!(o.remove("k00"), None);
        let left: Vec<&str> = o.iter_after(Some("k33")).map(|(k, _)| k).collect();
        assert_eq!(left, ["k34", "k35", "k36", "k37", "k38", "k39"]);
        let left: Vec<&str> = o.iter_after(Some("a")).map(|(k, _)| k).collect();
        assert_eq!(left.len(), 8);
        *o.get_mut("k39").expect("kept") = 7;
        assert_eq!(o.get("k39"), Some(&7));
        assert_eq!(*o.get_or_insert_with("k39", || 9), 7);
    }
}
