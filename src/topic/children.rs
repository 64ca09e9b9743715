//! The exact-level children of one trie node: level string → child node.
//!
//! Owns: the choice of layout per node. Few children (the common case below the first
//! couple of levels) live in a small unsorted boxed slice scanned linearly, exactly as long
//! as the children (no spare capacity, no capacity word): 56 bytes per entry, no hashing.
//! Past [`SMALL_CHILDREN_MAX`] the node switches to a `HashMap` with a fast seeded hasher,
//! past [`SEGMENT_MAX`] to [`Wide`] (the same maps in segments, so it never grows in one
//! big step), and drops back to the slice at [`SMALL_CHILDREN_MIN`] (hysteresis, so
//! sub/unsub churn at the boundary does not rebuild the map each time).
//! Invariant: each level appears at most once. Must not touch: wildcard children (`+`, `#`
//! have their own slots in the nodes that use them) and the nodes' own contents.
//! Why these numbers: docs/decisions/0002-topic-trie.md.

use std::collections::HashMap;

use crate::hash::SeededHash;

use super::wide::{Wide, WideIter, SEGMENT_MAX};

/// Above this many children a node switches from the linear slice to a `HashMap`.
pub(crate) const SMALL_CHILDREN_MAX: usize = 8;
/// At or below this many children a map-backed node switches back to the slice.
pub(crate) const SMALL_CHILDREN_MIN: usize = 4;

/// A map of level → child with the per-map seeded hash.
pub(crate) type LevelMap<N> = HashMap<Box<str>, N, SeededHash>;

/// Level → child, as a small boxed slice or a boxed map. Two variants, both a non-null
/// pointer first, so the enum is 16 bytes (the tag is the slice pointer's null niche) and
/// a node 40; a third variant would need a tag word. The walk's `get` is then a scan or
/// one out-of-line call ([`Big::get`]), which keeps it free of a frame on the scan path.
#[derive(Debug)]
pub(crate) enum Children<N> {
    Small(Box<[(Box<str>, N)]>),
    Big(Box<Big<N>>),
}

/// The wide layouts, behind one box. The plain map stays below [`SEGMENT_MAX`] children,
/// so the nodes most walks meet cost no more than before `Wide` existed.
#[derive(Debug)]
pub(crate) enum Big<N> {
    Map(LevelMap<N>),
    Wide(Wide<N>),
}

impl<N> Big<N> {
    fn len(&self) -> usize {
        match self {
            Big::Map(m) => m.len(),
            Big::Wide(w) => w.len(),
        }
    }

    /// Out of line: [`Children::get`] runs on every publish and stays a scan plus, for
    /// wide nodes, this one call.
    #[inline(never)]
    fn get(&self, level: &str) -> Option<&N> {
        match self {
            Big::Map(m) => m.get(level),
            Big::Wide(w) => w.get(level),
        }
    }
}

impl<N> Children<N> {
    pub(crate) fn new() -> Self {
        Children::Small(Box::default())
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Children::Small(v) => v.len(),
            Children::Big(b) => b.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub(crate) fn get(&self, level: &str) -> Option<&N> {
        match self {
            Children::Small(v) => v.iter().find(|(k, _)| same_level(k, level)).map(|(_, n)| n),
            Children::Big(b) => b.get(level),
        }
    }

    pub(crate) fn get_mut(&mut self, level: &str) -> Option<&mut N> {
        match self {
            Children::Small(v) => v.iter_mut().find(|(k, _)| &**k == level).map(|(_, n)| n),
            Children::Big(b) => match &mut **b {
                Big::Map(m) => m.get_mut(level),
                Big::Wide(w) => w.get_mut(level),
            },
        }
    }

    /// The child for `level`, created with `make` if absent.
    pub(crate) fn get_or_insert_with(&mut self, level: &str, make: impl FnOnce() -> N) -> &mut N {
        if let Children::Small(v) = self {
            if v.len() >= SMALL_CHILDREN_MAX && !v.iter().any(|(k, _)| &**k == level) {
                self.grow();
            }
        }
        if let Children::Big(b) = self {
            if let Big::Map(m) = &mut **b {
                if m.len() >= SEGMENT_MAX && !m.contains_key(level) {
                    let map = std::mem::replace(m, LevelMap::with_hasher(SeededHash::new()));
                    // The full map becomes the first segment (no entry moves here; the
                    // next insertion splits it).
                    **b = Big::Wide(Wide::from_map(map));
                }
            }
        }
        match self {
            Children::Small(v) => {
                let i = match v.iter().position(|(k, _)| &**k == level) {
                    Some(i) => i,
                    None => {
                        // Exact growth: one slot more, so the slice stays as long as the
                        // children (`Vec::push` alone would make room for four at the
                        // first, and most nodes keep one). `into_boxed_slice` then has no
                        // spare capacity to give back.
                        let mut all = std::mem::take(v).into_vec();
                        all.reserve_exact(1);
                        all.push((level.into(), make()));
                        *v = all.into_boxed_slice();
                        v.len() - 1
                    }
                };
                &mut v[i].1
            }
            // The owned key is allocated even when the child exists; this runs at
            // subscribe time only, and avoids a second lookup.
            Children::Big(b) => match &mut **b {
                Big::Map(m) => m.entry(level.into()).or_insert_with(make),
                Big::Wide(w) => w.get_or_insert_with(level, make),
            },
        }
    }

    /// Removes and returns the child for `level`.
    pub(crate) fn remove(&mut self, level: &str) -> Option<N> {
        let removed = match self {
            Children::Small(v) => {
                let i = v.iter().position(|(k, _)| &**k == level)?;
                // The slice is rebuilt one shorter (a reallocation, at unsubscribe only),
                // so a node keeps no room for children it no longer has.
                let mut all = std::mem::take(v).into_vec();
                let (_, n) = all.swap_remove(i);
                *v = all.into_boxed_slice();
                Some(n)
            }
            Children::Big(b) => match &mut **b {
                Big::Map(m) => m.remove(level),
                Big::Wide(w) => w.remove(level),
            },
        };
        if !matches!(self, Children::Small(_)) && self.len() <= SMALL_CHILDREN_MIN {
            self.shrink();
        }
        removed
    }

    pub(crate) fn iter(&self) -> ChildIter<'_, N> {
        match self {
            Children::Small(v) => ChildIter::Small(v.iter()),
            Children::Big(b) => match &**b {
                Big::Map(m) => ChildIter::Map(m.iter()),
                Big::Wide(w) => ChildIter::Wide(w.iter()),
            },
        }
    }

    fn grow(&mut self) {
        if let Children::Small(v) = self {
            let mut m = LevelMap::with_capacity_and_hasher(v.len() * 2, SeededHash::new());
            m.extend(std::mem::take(v).into_vec());
            *self = Children::Big(Box::new(Big::Map(m)));
        }
    }

    fn shrink(&mut self) {
        let v: Vec<_> = match self {
            Children::Small(_) => return,
            Children::Big(b) => match &mut **b {
                Big::Map(m) => m.drain().collect(),
                Big::Wide(w) => w.drain().collect(),
            },
        };
        *self = Children::Small(v.into_boxed_slice());
    }
}

/// Iterator over `(level, child)` pairs, in no particular order.
pub(crate) enum ChildIter<'a, N> {
    Small(std::slice::Iter<'a, (Box<str>, N)>),
    Map(std::collections::hash_map::Iter<'a, Box<str>, N>),
    Wide(WideIter<'a, N>),
}

impl<'a, N> Iterator for ChildIter<'a, N> {
    type Item = (&'a str, &'a N);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            ChildIter::Small(it) => it.next().map(|(k, n)| (&**k, n)),
            ChildIter::Map(it) => it.next().map(|(k, n)| (&**k, n)),
            ChildIter::Wide(it) => it.next(),
        }
    }
}

/// `a == b`, testing the length and the last byte before the whole string: siblings
/// (`dev/17`, `dev/18`) mostly differ at their end, so most misses cost no `memcmp`.
#[inline]
fn same_level(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.as_bytes().last() == b.as_bytes().last() && a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_map_and_shrinks_back() {
        let mut c: Children<usize> = Children::new();
        for i in 0..=SMALL_CHILDREN_MAX {
            *c.get_or_insert_with(&i.to_string(), || i) += 0;
        }
        assert!(matches!(&c, Children::Big(b) if matches!(**b, Big::Map(_))));
        assert_eq!(c.len(), SMALL_CHILDREN_MAX + 1);
        for i in 0..=SMALL_CHILDREN_MAX {
            assert_eq!(c.get(&i.to_string()), Some(&i));
        }
        for i in 0..SMALL_CHILDREN_MAX - SMALL_CHILDREN_MIN {
            assert_eq!(c.remove(&i.to_string()), Some(i));
            assert!(matches!(c, Children::Big(_)));
        }
        assert_eq!(
            c.remove(&(SMALL_CHILDREN_MAX - SMALL_CHILDREN_MIN).to_string()),
            Some(SMALL_CHILDREN_MAX - SMALL_CHILDREN_MIN)
        );
        assert!(matches!(&c, Children::Small(v) if v.len() == SMALL_CHILDREN_MIN));
        assert_eq!(c.len(), SMALL_CHILDREN_MIN);
        assert_eq!(c.iter().count(), SMALL_CHILDREN_MIN);
        assert_eq!(c.remove("missing"), None);
    }

    #[test]
    fn existing_child_is_not_replaced() {
        let mut c: Children<u32> = Children::new();
        *c.get_or_insert_with("a", || 1) = 7;
        assert_eq!(*c.get_or_insert_with("a", || 2), 7);
        assert_eq!(c.get_mut("a").copied(), Some(7));
    }
}
