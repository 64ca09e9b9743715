//! [`Subscriptions`]: one session's subscriptions in a state, by (share group, filter).
//!
//! Owns: the subscriptions, each with its group and filter in one boxed string, in a `Vec`
//! sorted by (share group, filter) with no key twice (an unshared one sorts before every
//! shared one, as `None` before `Some`: the order of the `BTreeMap` this was, which a
//! checkpoint's records and a restore follow). Must not touch: the session around it.
//!
//! Why not the map: a `BTreeMap` keeps a whole leaf node (room for 11 entries) for a
//! session's one subscription, and its key was a second copy of the group and filter; a
//! subscription took 1,292 B of the shadow where this takes 58 B (`docs/benchmarks.md`,
//! "Subscriptions in the shadow"). The `Vec` grows by half its length (so one
//! subscription holds one entry) and gives back room as it empties. Adding or removing
//! one moves the entries after it, so past `MANY` entries (40 KB to move at most) the
//! session's subscriptions go into an ordered set instead, and back into a `Vec` below
//! `FEW`: a session with `max_subscriptions_per_client` 0 (no limit) and a million
//! filters pays a logarithm per change, not a move of megabytes (`benches/store.rs`,
//! `store_subscriptions`).

use std::cmp::Ordering;
use std::collections::{btree_set, BTreeSet};
use std::fmt;

use crate::store::Subscription;

/// Past this many subscriptions a session's are held in an ordered set.
const MANY: usize = 1024;
/// Below this many a set of them goes back into a `Vec`.
const FEW: usize = MANY / 4;

/// A session's subscriptions, in (share group, filter) order.
#[derive(Clone)]
pub enum Subscriptions {
    /// Sorted, no key twice: every session with up to `MANY`.
    Few(Vec<Held>),
    /// A session with more.
    Many(BTreeSet<Held>),
}

impl Default for Subscriptions {
    fn default() -> Subscriptions {
        Subscriptions::Few(Vec::new())
    }
}

impl PartialEq for Subscriptions {
    fn eq(&self, other: &Subscriptions) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Subscriptions {}

/// One subscription as held: 40 B beside its text. Equal and ordered by (share group,
/// filter) alone, as the set needs.
#[derive(Clone)]
pub struct Held {
    /// The share group (if any) and then the filter.
    text: Box<str>,
    /// The length of the share group at the front of `text` (`None`: not shared). A group
    /// comes from one packet or one record, which bound its length to `u32`.
    group_len: Option<u32>,
    identifier: Option<u32>,
    qos: u8,
    no_local: bool,
    retain_as_published: bool,
    retain_handling: u8,
}

impl Held {
    fn new(sub: &Subscription<'_>) -> Held {
        let group = sub.share_group.as_deref();
        let text = match group {
            Some(g) => [g, sub.filter.as_ref()].concat().into_boxed_str(),
            None => Box::from(sub.filter.as_ref()),
        };
        let mut held = Held {
            text,
            group_len: group.map(|g| u32::try_from(g.len()).unwrap_or(u32::MAX)),
            identifier: None,
            qos: 0,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        };
        held.set_options(sub);
        held
    }

    /// (group, filter) with no options: a key to look up in the set (allocates; the set
    /// holds large sessions only).
    fn bare(group: Option<&str>, filter: &str) -> Held {
        Held::new(&Subscription {
            share_group: group.map(Into::into),
            filter: filter.into(),
            qos: 0,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
            identifier: None,
        })
    }

    fn set_options(&mut self, sub: &Subscription<'_>) {
        self.identifier = sub.identifier;
        self.qos = sub.qos;
        self.no_local = sub.no_local;
        self.retain_as_published = sub.retain_as_published;
        self.retain_handling = sub.retain_handling;
    }

    /// (share group, filter).
    fn key(&self) -> (Option<&str>, &str) {
        let Some(n) = self.group_len else {
            return (None, &self.text);
        };
        let n = usize::try_from(n)
            .unwrap_or(usize::MAX)
            .min(self.text.len());
        match self.text.split_at_checked(n) {
            Some((g, f)) => (Some(g), f),
            // Not reached: `new` split a group and a filter at a char boundary.
            None => (Some(""), &self.text),
        }
    }

    fn get(&self) -> Subscription<'_> {
        let (group, filter) = self.key();
        Subscription {
            share_group: group.map(Into::into),
            filter: filter.into(),
            qos: self.qos,
            no_local: self.no_local,
            retain_as_published: self.retain_as_published,
            retain_handling: self.retain_handling,
            identifier: self.identifier,
        }
    }
}

impl PartialEq for Held {
    fn eq(&self, other: &Held) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Held) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    fn cmp(&self, other: &Held) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl Subscriptions {
    /// How many.
    pub fn len(&self) -> usize {
        match self {
            Subscriptions::Few(v) => v.len(),
            Subscriptions::Many(m) => m.len(),
        }
    }

    /// None at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The subscriptions in (share group, filter) order.
    pub fn iter(&self) -> Iter<'_> {
        match self {
            Subscriptions::Few(v) => Iter::Few(v.iter()),
            Subscriptions::Many(m) => Iter::Many(m.iter()),
        }
    }

    /// The subscription of `filter` in `group`, if the session has it.
    pub fn get(&self, group: Option<&str>, filter: &str) -> Option<Subscription<'_>> {
        match self {
            Subscriptions::Few(v) => {
                let i = find(v, group, filter).ok()?;
                v.get(i).map(Held::get)
            }
            Subscriptions::Many(m) => m.get(&Held::bare(group, filter)).map(Held::get),
        }
    }

    /// Adds `sub`, or replaces the options of the one of its group and filter.
    pub fn insert(&mut self, sub: &Subscription<'_>) {
        match self {
            Subscriptions::Few(v) => match find(v, sub.share_group.as_deref(), &sub.filter) {
                Ok(i) => v[i].set_options(sub),
                Err(i) if v.len() < MANY => {
                    if v.len() == v.capacity() {
                        v.reserve_exact((v.len() / 2).max(1));
                    }
                    v.insert(i, Held::new(sub));
                }
                Err(_) => {
                    let mut m: BTreeSet<Held> = std::mem::take(v).into_iter().collect();
                    m.insert(Held::new(sub));
                    *self = Subscriptions::Many(m);
                }
            },
            // A held one is equal to its replacement: `replace` puts the new options in.
            Subscriptions::Many(m) => {
                m.replace(Held::new(sub));
            }
        }
    }

    /// Removes the subscription of `filter` in `group`; false if there was none.
    pub fn remove(&mut self, group: Option<&str>, filter: &str) -> bool {
        match self {
            Subscriptions::Few(v) => {
                let Ok(i) = find(v, group, filter) else {
                    return false;
                };
                v.remove(i);
                if v.len() * 4 <= v.capacity() {
                    v.shrink_to(v.len() * 2);
                }
            }
            Subscriptions::Many(m) => {
                if !m.remove(&Held::bare(group, filter)) {
                    return false;
                }
                if m.len() < FEW {
                    // In order already: the `Vec` is sorted as it is filled.
                    let mut v = Vec::with_capacity(m.len() + m.len() / 2);
                    v.extend(std::mem::take(m));
                    *self = Subscriptions::Few(v);
                }
            }
        }
        true
    }
}

/// Where (group, filter) is in the sorted `v`, or where it would go.
fn find(v: &[Held], group: Option<&str>, filter: &str) -> Result<usize, usize> {
    v.binary_search_by(|h| h.key().cmp(&(group, filter)))
}

/// The subscriptions of a session, in order.
pub enum Iter<'a> {
    /// Of a `Vec`.
    Few(std::slice::Iter<'a, Held>),
    /// Of a set.
    Many(btree_set::Iter<'a, Held>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = Subscription<'a>;

    fn next(&mut self) -> Option<Subscription<'a>> {
        match self {
            Iter::Few(i) => i.next().map(Held::get),
            Iter::Many(i) => i.next().map(Held::get),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Iter::Few(i) => i.size_hint(),
            Iter::Many(i) => i.size_hint(),
        }
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::collections::BTreeMap;

    use super::*;

    fn sub(group: Option<&str>, filter: &str, qos: u8) -> Subscription<'static> {
        Subscription {
            share_group: group.map(|g| Cow::Owned(g.to_owned())),
            filter: Cow::Owned(filter.to_owned()),
            qos,
            no_local: qos == 2,
            retain_as_published: qos == 1,
            retain_handling: qos,
            identifier: (qos > 0).then_some(u32::from(qos) * 7),
        }
    }

    /// Subscriptions against the `BTreeMap` they replace: inserts (new and replacing),
    /// removals (present and absent) and lookups, with groups that are prefixes of one
    /// another and of filters, and the empty group; the order and the contents agree
    /// after every step.
    #[test]
    fn answer_as_the_map_did() {
        let groups = [None, Some(""), Some("a"), Some("a/b"), Some("ab")];
        let filters = ["", "b", "a/b", "b/c", "#", "ab"];
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            usize::try_from(rng % 1024).unwrap_or(0)
        };
        let mut got = Subscriptions::default();
        let mut want: BTreeMap<(Option<String>, String), Subscription<'static>> = BTreeMap::new();
        for _ in 0..5_000 {
            let (g, f) = (
                groups[next() % groups.len()],
                filters[next() % filters.len()],
            );
            let key = (g.map(str::to_owned), f.to_owned());
            match next() % 3 {
                0 | 1 => {
                    let s = sub(g, f, u8::try_from(next() % 3).unwrap_or(0));
                    got.insert(&s);
                    want.insert(key, s);
                }
                _ => assert_eq!(got.remove(g, f), want.remove(&key).is_some()),
            }
            assert_eq!(
                got.get(g, f).as_ref(),
                want.get(&(g.map(str::to_owned), f.into()))
            );
            assert_eq!(got.len(), want.len());
            assert!(got.iter().eq(want.values().cloned()));
        }
    }

    fn capacity(s: &Subscriptions) -> usize {
        match s {
            Subscriptions::Few(v) => v.capacity(),
            Subscriptions::Many(_) => usize::MAX,
        }
    }

    /// A session that grows past `MANY` and shrinks below `FEW`, more than once, answers
    /// as the map did throughout, changing options of held ones in either form.
    #[test]
    fn many_and_few_answer_as_the_map_did() {
        let mut got = Subscriptions::default();
        let mut want: BTreeMap<(Option<String>, String), Subscription<'static>> = BTreeMap::new();
        let key = |n: usize| {
            let g = n.is_multiple_of(3).then(|| format!("g{}", n % 7));
            (g, format!("f/{}", (n * 7_919) % 5_000))
        };
        let mut forms = Vec::new();
        for round in 0..2 {
            for n in 0..MANY + 200 {
                let (g, f) = key(n);
                let s = sub(g.as_deref(), &f, u8::try_from((n + round) % 3).unwrap_or(0));
                got.insert(&s);
                want.insert((g, f), s);
            }
            forms.push(matches!(got, Subscriptions::Many(_)));
            assert!(got.iter().eq(want.values().cloned()));
            for n in 0..MANY + 200 - FEW / 2 {
                let (g, f) = key(n);
                assert_eq!(
                    got.remove(g.as_deref(), &f),
                    want.remove(&(g.clone(), f.clone())).is_some()
                );
                assert_eq!(got.get(g.as_deref(), &f), None);
            }
            forms.push(matches!(got, Subscriptions::Many(_)));
            assert_eq!(got.len(), want.len());
            assert_eq!(got.iter().len(), want.len());
            assert!(got.iter().eq(want.values().cloned()));
            for ((g, f), w) in &want {
                assert_eq!(got.get(g.as_deref(), f).as_ref(), Some(w));
            }
        }
        assert_eq!(
            forms,
            [true, false, true, false],
            "a set past MANY, a Vec below FEW"
        );
    }

    /// One subscription holds one entry, and a session that unsubscribes gives room back.
    #[test]
    fn room_follows_the_count() {
        assert_eq!(std::mem::size_of::<Held>(), 40);
        let mut s = Subscriptions::default();
        s.insert(&sub(None, "a", 1));
        assert_eq!(capacity(&s), 1);
        for n in 0..100 {
            s.insert(&sub(Some("g"), &format!("f/{n}"), 0));
        }
        assert!(capacity(&s) <= 101 + 101 / 2);
        for n in 0..100 {
            assert!(s.remove(Some("g"), &format!("f/{n}")));
        }
        assert_eq!(s.len(), 1);
        assert!(capacity(&s) <= 4);
        assert!(s.remove(None, "a"));
        assert_eq!(capacity(&s), 0);
    }
}
