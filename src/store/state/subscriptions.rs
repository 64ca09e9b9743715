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
//! "Subscriptions in the shadow"). The cost: adding or removing one moves the entries
//! after it, at most `max_subscriptions_per_client` (10,000 by default) of 40 B, 400 KB,
//! a few tens of µs (by arithmetic); a restore adds them in order, at the end. The `Vec`
//! grows by half its length (so one subscription holds one entry) and gives back room as
//! it empties.

use std::fmt;

use crate::store::Subscription;

/// A session's subscriptions, in (share group, filter) order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Subscriptions(Vec<Held>);

/// One subscription as held: 40 B beside its text.
#[derive(Clone, PartialEq, Eq)]
struct Held {
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

impl Subscriptions {
    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// None at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The subscriptions in (share group, filter) order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Subscription<'_>> {
        self.0.iter().map(Held::get)
    }

    /// The subscription of `filter` in `group`, if the session has it.
    pub fn get(&self, group: Option<&str>, filter: &str) -> Option<Subscription<'_>> {
        let i = self.find(group, filter).ok()?;
        self.0.get(i).map(Held::get)
    }

    /// Adds `sub`, or replaces the options of the one of its group and filter.
    pub fn insert(&mut self, sub: &Subscription<'_>) {
        match self.find(sub.share_group.as_deref(), &sub.filter) {
            Ok(i) => self.0[i].set_options(sub),
            Err(i) => {
                if self.0.len() == self.0.capacity() {
                    self.0.reserve_exact((self.0.len() / 2).max(1));
                }
                self.0.insert(i, Held::new(sub));
            }
        }
    }

    /// Removes the subscription of `filter` in `group`; false if there was none.
    pub fn remove(&mut self, group: Option<&str>, filter: &str) -> bool {
        let Ok(i) = self.find(group, filter) else {
            return false;
        };
        self.0.remove(i);
        if self.0.len() * 4 <= self.0.capacity() {
            self.0.shrink_to(self.0.len() * 2);
        }
        true
    }

    /// Where (group, filter) is, or where it would go.
    fn find(&self, group: Option<&str>, filter: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|h| h.key().cmp(&(group, filter)))
    }
}

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

    /// One subscription holds one entry, and a session that unsubscribes gives room back.
    #[test]
    fn room_follows_the_count() {
        assert_eq!(std::mem::size_of::<Held>(), 40);
        let mut s = Subscriptions::default();
        s.insert(&sub(None, "a", 1));
        assert_eq!(s.0.capacity(), 1);
        for n in 0..100 {
            s.insert(&sub(Some("g"), &format!("f/{n}"), 0));
        }
        assert!(s.0.capacity() <= 101 + 101 / 2);
        for n in 0..100 {
            assert!(s.remove(Some("g"), &format!("f/{n}")));
        }
        assert_eq!(s.len(), 1);
        assert!(s.0.capacity() <= 4);
        assert!(s.remove(None, "a"));
        assert_eq!(s.0.capacity(), 0);
    }
}
