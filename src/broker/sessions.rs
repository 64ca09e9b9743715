//! `Sessions`: the sessions whose home is this shard, and the index by client id.
//!
//! Owns: every `Session` of this shard, keyed by a slab index, and the index by client
//! id: slab keys hashed by the client id of their session (which holds the only copy of
//! it). Invariants: a client id names at most one session in the index, and the index and
//! the slab agree (both change only here; a session's `client_id` never changes); a
//! session's `uid` is unique on this broker for its lifetime
//! (shard id in the top byte, a counter below), so a reused slab key is never mistaken
//! for the session that held it. A session ended with more subscriptions than one turn
//! may remove is *retiring*: out of the client-id map (a new session may take the id at
//! once), inert (no link, expiry 0, nothing queued, so no delivery reaches it), and kept in
//! the slab, so its key is not reused while the trie still names it, until the broker has
//! taken its last filter. Must not touch: links, routes, the bus.

use std::collections::VecDeque;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use slab::Slab;

use crate::hash::SeededHash;
use crate::session::Session;

/// This shard's sessions.
#[derive(Debug)]
pub struct Sessions {
    slab: Slab<Session>,
    /// Slab keys of the sessions that are not retiring, by their client ids.
    by_client: HashTable<usize>,
    hash: SeededHash,
    next_uid: u64,
    shard_id: usize,
    /// Retiring sessions, oldest first.
    retiring: VecDeque<usize>,
}

impl Sessions {
    /// No sessions yet, on shard `shard_id`.
    pub fn new(shard_id: usize) -> Sessions {
        Sessions {
            slab: Slab::new(),
            by_client: HashTable::new(),
            hash: SeededHash::new(),
            next_uid: 0,
            shard_id,
            retiring: VecDeque::new(),
        }
    }

    /// Session `s`.
    pub fn get(&self, s: usize) -> Option<&Session> {
        self.slab.get(s)
    }

    /// Session `s`, mutably.
    pub fn get_mut(&mut self, s: usize) -> Option<&mut Session> {
        self.slab.get_mut(s)
    }

    /// The session of client `id`.
    pub fn find(&self, id: &str) -> Option<usize> {
        let slab = &self.slab;
        let is_id = |&s: &usize| slab.get(s).is_some_and(|x| *x.client_id == *id);
        self.by_client.find(self.hash.hash_one(id), is_id).copied()
    }

    /// A new session for client `id`, which must have none.
    pub fn create(&mut self, id: &str, expiry_s: u32) -> usize {
        let uid = ((self.shard_id as u64) << 56) | self.next_nonce();
        let s = self.slab.insert(Session::new(id, uid, expiry_s));
        let (slab, h) = (&self.slab, &self.hash);
        // Every key the index holds names a session: growing rehashes their client ids.
        let rehash = |&k: &usize| slab.get(k).map_or(0, |x| h.hash_one(&*x.client_id));
        self.by_client.insert_unique(h.hash_one(id), s, rehash);
        s
    }

    /// Retire session `s`: give up its client id and make it inert; its subscriptions are
    /// then taken one at a time with [`Sessions::next_retiring_filter`].
    pub fn retire(&mut self, s: usize) {
        let Some(sess) = self.slab.get_mut(s) else {
            return;
        };
        unindex(&mut self.by_client, &self.hash, s, &sess.client_id);
        sess.link = None;
        sess.expiry_s = 0;
        sess.will = None;
        sess.clear_queues();
        // Its end is logged when it retires: a delivery that still matches one of its
        // filters is neither queued nor stored.
        sess.logged = false;
        self.retiring.push_back(s);
    }

    /// The next subscription of the oldest retiring session, as (session, uid, filter),
    /// removed from it; a session left with none is removed from the slab.
    pub fn next_retiring_filter(&mut self) -> Option<(usize, u64, Box<str>)> {
        while let Some(&s) = self.retiring.front() {
            let Some(sess) = self.slab.get_mut(s) else {
                self.retiring.pop_front();
                continue;
            };
            if let Some((filter, _)) = sess.pop_sub() {
                return Some((s, sess.uid, filter));
            }
            self.slab.remove(s);
            self.retiring.pop_front();
        }
        None
    }

    /// True while some retiring session still has subscriptions to remove.
    pub fn has_retiring(&self) -> bool {
        !self.retiring.is_empty()
    }

    /// Remove session `s` and its client id.
    pub fn remove(&mut self, s: usize) -> Option<Session> {
        let sess = self.slab.try_remove(s)?;
        unindex(&mut self.by_client, &self.hash, s, &sess.client_id);
        Some(sess)
    }

    /// A number never returned before on this shard (session uids, generated client ids).
    pub fn next_nonce(&mut self) -> u64 {
        self.next_uid += 1;
        self.next_uid
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// True when none are held.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Every session with its key.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Session)> {
        self.slab.iter()
    }
}

/// Take key `s` of client `id` out of the index, if the index names it: a retired
/// session's id may name a newer session by now, whose entry stays.
fn unindex(by_client: &mut HashTable<usize>, hash: &SeededHash, s: usize, id: &str) {
    if let Ok(e) = by_client.find_entry(hash.hash_one(id), |&k| k == s) {
        e.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index names each client's live session by its own client id; a retiring
    /// session keeps its id (in the session) without being found by it, and removing it
    /// leaves the index entry of the session that took the id since.
    #[test]
    fn a_client_id_names_its_live_session_only() {
        let mut sessions = Sessions::new(0);
        let a = sessions.create("a", 0);
        let b = sessions.create("b", 0);
        assert_eq!((sessions.find("a"), sessions.find("b")), (Some(a), Some(b)));
        assert_eq!(sessions.find("c"), None);
        sessions.retire(a);
        assert_eq!(sessions.find("a"), None, "retired");
        let again = sessions.create("a", 0);
        assert_ne!(again, a);
        assert_eq!(sessions.find("a"), Some(again));
        // Before the index held slab keys, removing the retired session took the id's
        // entry whichever session it named.
        assert!(sessions.remove(a).is_some());
        assert_eq!(sessions.find("a"), Some(again), "still the new session's");
        assert!(sessions.remove(again).is_some());
        assert_eq!(sessions.find("a"), None);
        assert_eq!(sessions.find("b"), Some(b));
        // Many more: found after the index grew.
        let keys: Vec<usize> = (0..1000)
            .map(|n| sessions.create(&format!("c{n}"), 0))
            .collect();
        assert!((0..1000).all(|n| sessions.find(&format!("c{n}")) == Some(keys[n])));
        assert_eq!(sessions.len(), 1001);
    }
}
