//! `Sessions`: the sessions whose home is this shard, and the index by client id.
//!
//! Owns: every `Session` of this shard, keyed by a slab index, and the client id → key
//! map. Invariants: a client id names at most one session, and the map and the slab agree
//! (both change only here); a session's `uid` is unique on this broker for its lifetime
//! (shard id in the top byte, a counter below), so a reused slab key is never mistaken
//! for the session that held it. A session ended with more subscriptions than one turn
//! may remove is *retiring*: out of the client-id map (a new session may take the id at
//! once), inert (no link, expiry 0, nothing queued, so no delivery reaches it), and kept in
//! the slab, so its key is not reused while the trie still names it, until the broker has
//! taken its last filter. Must not touch: links, routes, the bus.

use std::collections::{HashMap, VecDeque};

use slab::Slab;

use crate::session::Session;

/// This shard's sessions.
#[derive(Debug)]
pub struct Sessions {
    slab: Slab<Session>,
    by_client: HashMap<Box<str>, usize>,
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
            by_client: HashMap::new(),
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
        self.by_client.get(id).copied()
    }

    /// A new session for client `id`, which must have none.
    pub fn create(&mut self, id: &str, expiry_s: u32) -> usize {
        let uid = ((self.shard_id as u64) << 56) | self.next_nonce();
        let s = self.slab.insert(Session::new(id, uid, expiry_s));
        self.by_client.insert(id.into(), s);
        s
    }

    /// Retire session `s`: give up its client id and make it inert; its subscriptions are
    /// then taken one at a time with [`Sessions::next_retiring_filter`].
    pub fn retire(&mut self, s: usize) {
        let Some(sess) = self.slab.get_mut(s) else {
            return;
        };
        if self.by_client.get(&sess.client_id) == Some(&s) {
            self.by_client.remove(&sess.client_id);
        }
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
        self.by_client.remove(&sess.client_id);
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
