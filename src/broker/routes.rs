//! `Routes`: where a publish goes from this shard.
//!
//! Owns: the local subscription trie (filter → this shard's subscribers), the replicated
//! interest trie (filter → bitmask of shards with subscribers), the replicated share-group
//! membership, and the scratch list of one publish's matches. Invariants: a filter is in
//! the local trie exactly when some local session subscribes to it, and this shard's bit
//! is set for it in every shard's interest trie once they have applied the change; a
//! session appears at most once per filter. Must not touch: sessions' state (matching
//! only marks them to merge overlapping subscriptions), links, the bus.

use super::sessions::Sessions;
use super::shared::ShareGroups;
use super::{Hit, Subscriber, Subscribers};
use crate::session::{Message, SubIds};
use crate::topic::trie::FilterTrie;

/// This shard's routing state.
#[derive(Default)]
pub struct Routes {
    subs: FilterTrie<Subscribers>,
    interest: FilterTrie<u64>,
    shared: FilterTrie<ShareGroups>,
    hits: Vec<Hit>,
    route_seq: u64,
}

impl Routes {
    /// Add or update session `entry.session()`'s subscription to `filter`. Returns true if
    /// it is the shard's first subscriber to it (peers must learn of the interest).
    pub fn add_local(&mut self, filter: &str, entry: Subscriber) -> bool {
        match self.subs.get_mut(filter) {
            Some(list) => {
                match list.iter_mut().find(|x| x.session() == entry.session()) {
                    Some(x) => *x = entry,
                    None => list.push(entry),
                }
                false
            }
            None => {
                self.subs
                    .entry_or_insert_with(filter, || Subscribers::from_elem(entry, 1));
                true
            }
        }
    }

    /// Remove session `s`'s subscription to `filter`. Returns (it was there, it was the
    /// last one: peers must learn the interest is gone).
    pub fn remove_local(&mut self, s: usize, filter: &str) -> (bool, bool) {
        let Some(list) = self.subs.get_mut(filter) else {
            return (false, false);
        };
        let before = list.len();
        list.retain(|x| x.session() != s);
        let removed = list.len() != before;
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
}
