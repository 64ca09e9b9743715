//! `RetainedReplica`: this shard's copy of every retained message.
//!
//! Owns: the retained topic tree, the tombstones of recent deletions and the Lamport clock
//! that orders retained updates across shards. Invariant: the replica keeps, per topic,
//! the update with the highest stamp it has seen (last writer wins), so every replica
//! converges whatever order concurrent updates arrive in; an update stamped on a shard
//! after it saw another always carries a higher stamp. Must not touch: subscriptions,
//! sessions, links.

use std::collections::HashMap;
use std::sync::Arc;

use crate::session::Message;
use crate::topic::retained::{MatchCursor, TopicTree};

/// Low bits of a retained stamp that hold the shard id (shards ≤ 64).
const STAMP_SHARD_BITS: u32 = 6;
/// Deleted retained topics remembered with their stamp at most.
const TOMBSTONES_MAX: usize = 65_536;

/// One shard's replica of the retained store.
#[derive(Default)]
pub struct RetainedReplica {
    tree: TopicTree<Arc<Message>>,
    /// Stamps of recently deleted topics, so an older update in flight cannot bring one
    /// back.
    tombstones: HashMap<Arc<str>, u64>,
    lamport: u64,
    /// Payload bytes held (for `$SYS/broker/store/messages/bytes`).
    bytes: usize,
}

impl RetainedReplica {
    /// The stamp for a retained update entering the broker on shard `shard_id`.
    pub fn next_stamp(&mut self, shard_id: usize) -> u64 {
        self.lamport += 1;
        (self.lamport << STAMP_SHARD_BITS) | shard_id as u64
    }

    /// Apply a retained update (an empty payload deletes the topic) if its stamp is newer
    /// than what the replica holds for the topic.
    pub fn store(&mut self, msg: &Arc<Message>) {
        self.lamport = self.lamport.max(msg.retain_stamp >> STAMP_SHARD_BITS);
        let held = match self.tree.get(&msg.topic) {
            Some(m) => Some(m.retain_stamp),
            None => self.tombstones.get(&*msg.topic).copied(),
        };
        if held.is_some_and(|h| h >= msg.retain_stamp) {
            return;
        }
        if msg.payload.is_empty() {
            if let Some(old) = self.tree.remove(&msg.topic) {
                self.bytes -= old.payload.len();
            }
            if self.tombstones.len() >= TOMBSTONES_MAX {
                // Tombstones only guard against an older update overtaking a deletion in
                // flight between shards (microseconds); forgetting them is safe in practice.
                self.tombstones.clear();
            }
            self.tombstones.insert(msg.topic.clone(), msg.retain_stamp);
        } else {
            self.tombstones.remove(&*msg.topic);
            self.bytes += msg.payload.len();
            if let Some(old) = self.tree.insert(&msg.topic, msg.clone()) {
                self.bytes -= old.payload.len();
            }
        }
    }

    /// The retained message of `topic`.
    pub fn get(&self, topic: &str) -> Option<&Arc<Message>> {
        self.tree.get(topic)
    }

    /// Might `filter` match a retained message? False only when it surely matches none
    /// (`TopicTree::may_match`): then a SUBSCRIBE need not walk the tree at all.
    pub fn may_match(&self, filter: &str) -> bool {
        self.tree.may_match(filter)
    }

    /// The next at most `budget` steps of a paced walk over the retained messages
    /// matching a filter (`TopicTree::walk_matching`); true when it is done.
    pub fn walk_matching(
        &self,
        cursor: &mut MatchCursor,
        budget: usize,
        f: impl FnMut(&Arc<Message>),
    ) -> bool {
        self.tree.walk_matching(cursor, budget, f)
    }

    /// The clock: every message this replica has stored so far is stamped at or below it.
    pub fn clock(&self) -> u64 {
        self.lamport
    }

    /// Was `msg` stamped after the replica's clock read `clock`? Then it was stored here
    /// after that moment (every stored stamp is at or below the clock when stored).
    pub fn stamped_after(msg: &Message, clock: u64) -> bool {
        msg.retain_stamp >> STAMP_SHARD_BITS > clock
    }

    /// Retained messages held.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Payload bytes of the retained messages held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// True when none are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
