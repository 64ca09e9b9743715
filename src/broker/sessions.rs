//! `Sessions`: the sessions whose home is this shard, and the index by client id.
//!
//! Owns: every `Session` of this shard, keyed by a slab index, and the client id → key
//! map. Invariants: a client id names at most one session, and the map and the slab agree
//! (both change only here); a session's `uid` is unique on this broker for its lifetime
//! (shard id in the top byte, a counter below), so a reused slab key is never mistaken
//! for the session that held it. Must not touch: links, routes, the bus.

use std::collections::HashMap;

use slab::Slab;

use crate::session::Session;

/// This shard's sessions.
#[derive(Debug)]
pub struct Sessions {
    slab: Slab<Session>,
    by_client: HashMap<Box<str>, usize>,
    next_uid: u64,
    shard_id: usize,
}

impl Sessions {
    /// No sessions yet, on shard `shard_id`.
    pub fn new(shard_id: usize) -> Sessions {
        Sessions {
            slab: Slab::new(),
            by_client: HashMap::new(),
            next_uid: 0,
            shard_id,
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
