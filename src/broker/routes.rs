//! `Routes`: where a publish goes from this shard.
//!
//! Owns: the local subscription trie (filter → this shard's subscribers), the replicated
//! interest trie (filter → bitmask of shards with subscribers), the replicated share-group
//! membership, and the scratch list of one publish's matches. Invariants: a filter is in
//! the local trie exactly when some local session subscribes to it, and this shard's bit
//! is set for it in every shard's interest trie once they have applied the change; a
//! session appears at most once per filter, and a filter's list has an index from
//! session to position exactly when it is longer than [`SCAN_LEN_MAX`]. Must not touch:
//! sessions' state (matching only marks them to merge overlapping subscriptions), links,
//! the bus.
//!
//! Why the index: a subscription storm of n sessions to one filter found each one's place
//! by a scan of the list, O(n²) over the storm (75M instructions at 5,000 subscribers,
//! `docs/benchmarks.md`, "Subscription storm and sessions, eleventh round"). The index
//! sits beside the trie, not in the lists, so the publish path walks the same lists as
//! before; a short list is scanned (cheaper than hashing) and keeps its order on removal,
//! a long one loses it (the last entry takes the removed one's place).

use std::collections::HashMap;

use super::sessions::Sessions;
use super::shared::ShareGroups;
use super::{Hit, Subscriber, Subscribers};
use crate::hash::SeededHash;
use crate::session::{Message, SubIds};
use crate::topic::trie::FilterTrie;

/// Subscribers of one filter found by a scan; a longer list has an index.
pub const SCAN_LEN_MAX: usize = 16;

/// A long list's positions: session key → index in the filter's list.
type Positions = HashMap<u32, u32, SeededHash>;

/// This shard's routing state.
#[derive(Default)]
pub struct Routes {
    subs: FilterTrie<Subscribers>,
    interest: FilterTrie<u64>,
    shared: FilterTrie<ShareGroups>,
    /// Each list longer than [`SCAN_LEN_MAX`]'s positions, by filter (filters are chosen
    /// by clients: a seeded hash).
    positions: HashMap<Box<str>, Positions, SeededHash>,
    hits: Vec<Hit>,
    route_seq: u64,
    /// Entries compared by the scans of `add_local` and `remove_local` (for the tests).
    #[cfg(test)]
    scanned: u64,
}

impl Routes {
    /// Add or update session `entry.session()`'s subscription to `filter`. Returns true if
    /// it is the shard's first subscriber to it (peers must learn of the interest).
    pub fn add_local(&mut self, filter: &str, entry: Subscriber) -> bool {
        let Some(list) = self.subs.get_mut(filter) else {
            self.subs
                .entry_or_insert_with(filter, || Subscribers::from_elem(entry, 1));
            return true;
        };
        if list.len() > SCAN_LEN_MAX {
            let positions = index_of(&mut self.positions, filter, list);
            match positions
                .get(&entry.session)
                .and_then(|&i| list.get_mut(i as usize))
            {
                Some(x) => *x = entry,
                None => {
                    positions.insert(entry.session, list.len() as u32);
                    list.push(entry);
                }
            }
            return false;
        }
        #[cfg(test)]
        {
            self.scanned += list.len() as u64;
        }
        match list.iter_mut().find(|x| x.session == entry.session) {
            Some(x) => *x = entry,
            None => {
                list.push(entry);
                if list.len() > SCAN_LEN_MAX {
                    index_of(&mut self.positions, filter, list);
                }
            }
        }
        false
    }

    /// Remove session `s`'s subscription to `filter`. Returns (it was there, it was the
    /// last one: peers must learn the interest is gone).
    pub fn remove_local(&mut self, s: usize, filter: &str) -> (bool, bool) {
        let Some(list) = self.subs.get_mut(filter) else {
            return (false, false);
        };
        let removed = if list.len() > SCAN_LEN_MAX {
            let positions = index_of(&mut self.positions, filter, list);
            let at = u32::try_from(s).ok().and_then(|s| positions.remove(&s));
            if let Some(i) = at.map(|i| i as usize).filter(|&i| i < list.len()) {
                list.swap_remove(i);
                if let Some(moved) = list.get(i) {
                    positions.insert(moved.session, i as u32);
                }
                if list.len() <= SCAN_LEN_MAX {
                    self.positions.remove(filter);
                }
            }
            at.is_some()
        } else {
            #[cfg(test)]
            {
                self.scanned += list.len() as u64;
            }
            let at = list.iter().position(|x| x.session() == s);
            if let Some(i) = at {
                list.remove(i);
            }
            at.is_some()
        };
        if list.is_empty() {
            self.subs.remove(filter);
            return (removed, true);
        }
        (removed, false)
    }

    /// Apply shard `from`'s interest change to the interest trie.
    pub fn apply_interest(&mut self, from: usize, filter: &str, add: bool) {
        let bit = 1u64 << from;
        if add {
            *self.interest.entry_or_insert_with(filter, || 0) |= bit;
        } else if let Some(mask) = self.interest.get_mut(filter) {
            *mask &= !bit;
            if *mask == 0 {
                self.interest.remove(filter);
            }
        }
    }

    /// Every filter some local session subscribes to (not shared ones): the interest this
    /// shard has told, or tells, its peers. Allocates; for start-up, not the publish path.
    pub fn local_filters(&self) -> Vec<String> {
        self.subs.iter().map(|(f, _)| f).collect()
    }

    /// The shards other than `me` with a subscriber matching `topic`.
    pub fn remote_mask(&self, topic: &str, me: usize) -> u64 {
        let mut mask = 0u64;
        if !self.interest.is_empty() {
            self.interest.for_each_match(topic, |m| mask |= *m);
        }
        mask & !(1u64 << me)
    }

    /// The share groups, by filter.
    pub fn share_groups(&self) -> &FilterTrie<ShareGroups> {
        &self.shared
    }

    /// The key `$share/{group}/{filter}` of a group: the group's own (shared, not copied)
    /// when this shard knows it, else a new one.
    pub fn share_key(&self, group: &str, filter: &str) -> std::sync::Arc<str> {
        let known = self
            .shared
            .get(filter)
            .and_then(|gs| gs.iter().find(|g| &*g.name == group));
        match known {
            Some(g) => g.key.clone(),
            None => format!("$share/{group}/{filter}").into(),
        }
    }

    /// The share groups, by filter, mutably (membership changes).
    pub fn share_groups_mut(&mut self) -> &mut FilterTrie<ShareGroups> {
        &mut self.shared
    }

    /// Match `msg` against the local trie: one `Hit` per session, overlapping
    /// subscriptions merged (highest QoS, every Subscription Identifier). The list is
    /// borrowed from `Routes`; give it back with [`Routes::recycle`] so no publish
    /// allocates one.
    pub(super) fn match_local(&mut self, sessions: &mut Sessions, msg: &Message) -> Vec<Hit> {
        self.route_seq += 1;
        let seq = self.route_seq;
        let mut hits = std::mem::take(&mut self.hits);
        hits.clear();
        self.subs.for_each_match(&msg.topic, |list| {
            for sub in list {
                let Some(sess) = sessions.get_mut(sub.session()) else {
                    continue;
                };
                if sub.options.no_local && sess.uid == msg.origin {
                    continue;
                }
                let qos = msg.qos.min(sub.options.qos);
                if sess.route_mark == seq {
                    if let Some(h) = hits.get_mut(sess.route_slot as usize) {
                        h.qos = h.qos.max(qos);
                        h.retain_as_published |= sub.options.retain_as_published;
                        h.sub_ids.extend(sub.sub_id());
                    }
                    continue;
                }
                sess.route_mark = seq;
                sess.route_slot = hits.len() as u32;
                let mut sub_ids = SubIds::new();
                if let Some(id) = sub.sub_id() {
                    sub_ids.push(id);
                }
                hits.push(Hit {
                    session: sub.session(),
                    link: sess.link,
                    qos,
                    retain_as_published: sub.options.retain_as_published,
                    sub_ids,
                });
            }
        });
        hits
    }

    /// Give back the list `match_local` lent.
    pub(super) fn recycle(&mut self, hits: Vec<Hit>) {
        self.hits = hits;
    }
}

/// The index of `filter`'s `list`, built from the list if it has none yet.
fn index_of<'a>(
    positions: &'a mut HashMap<Box<str>, Positions, SeededHash>,
    filter: &str,
    list: &Subscribers,
) -> &'a mut Positions {
    if !positions.contains_key(filter) {
        let index = list.iter().enumerate().map(|(i, x)| (x.session, i as u32));
        positions.insert(filter.into(), index.collect());
    }
    positions
        .get_mut(filter)
        .expect("inserted above when it was missing")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_is_twelve_bytes_and_two_fit_inline() {
        assert_eq!(std::mem::size_of::<Subscriber>(), 12);
        assert_eq!(std::mem::size_of::<Subscribers>(), 32);
        let opts = crate::protocol::SubscriptionOptions::default();
        let s = Subscriber::new(7, opts, Some(268_435_455));
        assert_eq!((s.session(), s.sub_id()), (7, Some(268_435_455)));
        assert_eq!(Subscriber::new(7, opts, None).sub_id(), None);
    }

    fn sub(session: usize, qos: u8, sub_id: Option<u32>) -> Subscriber {
        let opts = crate::protocol::SubscriptionOptions {
            qos: crate::protocol::QoS::from_bits(qos).expect("0, 1 or 2"),
            ..Default::default()
        };
        Subscriber::new(session, opts, sub_id)
    }

    /// (session, QoS, identifier) of `filter`'s subscribers, sorted: the order of a long
    /// list is not kept.
    fn listed(r: &Routes, filter: &str) -> Vec<(usize, u8, Option<u32>)> {
        let mut v: Vec<_> = r.subs.get(filter).map_or(Vec::new(), |l| {
            l.iter()
                .map(|x| (x.session(), x.options.qos as u8, x.sub_id()))
                .collect()
        });
        v.sort_unstable();
        v
    }

    /// Every long list has an index naming each of its entries' positions, no short one has.
    fn assert_indexed(r: &Routes) {
        for (filter, list) in r.subs.iter() {
            let index = r.positions.get(filter.as_str());
            assert_eq!(index.is_some(), list.len() > SCAN_LEN_MAX, "{filter}");
            if let Some(p) = index {
                assert_eq!(p.len(), list.len(), "{filter}");
                for (i, x) in list.iter().enumerate() {
                    assert_eq!(p.get(&x.session), Some(&(i as u32)), "{filter}");
                }
            }
        }
        assert!(r.positions.len() <= r.subs.iter().count());
    }

    /// Adds (new, or again with other options), removals (present or not) over three
    /// filters, the lists growing past the scan's length and back: the routes answer as a
    /// map of maps does, and each long list's index stays exact.
    #[test]
    fn add_and_remove_answer_as_a_map_does() {
        use std::collections::BTreeMap;
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let filters = ["a/b", "a/+", "#"];
        let mut r = Routes::default();
        let mut want: BTreeMap<&str, BTreeMap<usize, (u8, Option<u32>)>> = BTreeMap::new();
        for step in 0..20_000u32 {
            let filter = filters[(next() % 3) as usize];
            // Grow for a while, then shrink, so lists cross the scan's length both ways.
            let sessions = if (step / 2_000) % 2 == 0 { 60 } else { 12 };
            let s = (next() % sessions) as usize;
            let subs = want.entry(filter).or_default();
            if next() % 3 == 0 || (step / 2_000) % 2 == 1 && next() % 2 == 0 {
                let was = subs.remove(&s).is_some();
                let last = was && subs.is_empty();
                assert_eq!(r.remove_local(s, filter), (was, last), "step {step}");
            } else {
                let (qos, id) = (
                    (next() % 3) as u8,
                    Some(step + 1).filter(|_| next() % 2 == 0),
                );
                let first = subs.is_empty();
                subs.insert(s, (qos, id));
                assert_eq!(r.add_local(filter, sub(s, qos, id)), first, "step {step}");
            }
            let want_list: Vec<_> = subs.iter().map(|(&s, &(q, i))| (s, q, i)).collect();
            assert_eq!(listed(&r, filter), want_list, "step {step}");
            assert_indexed(&r);
        }
    }

    /// n sessions subscribe to one filter, one changes its options, then all leave: O(n)
    /// entries compared in all, where a scan of the list for each was n²/2 (12.5M for
    /// 5,000), the storm's cost in `docs/benchmarks.md`.
    #[test]
    fn a_storm_of_subscribers_to_one_filter_is_not_quadratic() {
        let n = 5_000;
        let mut r = Routes::default();
        for s in 0..n {
            assert_eq!(r.add_local("storm/#", sub(s, 1, None)), s == 0);
        }
        r.add_local("storm/#", sub(77, 2, Some(5)));
        assert_eq!(listed(&r, "storm/#")[77], (77, 2, Some(5)));
        assert_eq!(listed(&r, "storm/#").len(), n);
        assert_indexed(&r);
        for s in (0..n).rev().step_by(2).chain((0..n).step_by(2)) {
            assert_eq!(r.remove_local(s, "storm/#"), (true, s == n - 2), "{s}");
        }
        assert!(r.subs.is_empty() && r.positions.is_empty());
        // Only the short list at either end is scanned: about SCAN_LEN_MAX² in all.
        assert!(r.scanned <= n as u64, "{} entries compared", r.scanned);
    }
}
