//! The per-link ACL decision cache: a repeated (client, topic) decision costs one hash and
//! one string comparison instead of a rule walk.
//!
//! Owns: [`ACL_CACHE_SLOTS`] direct-mapped slots of (topic, rule bits), allocated on first
//! use, and the generation of the [`Acl`] they were computed from. Invariants: a slot
//! answers only for exactly its topic (the string is compared, the hash only picks the
//! slot) and only for the `Acl` generation it was filled under, so a reload invalidates
//! every slot at the next decision; the client identity is fixed for a link, so it is not
//! part of the key (a new identity needs a new cache); topics longer than
//! [`ACL_CACHE_TOPIC_BYTES_MAX`] are decided without caching. Must not touch: the rules.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use super::{allows, Acl, Client, READ, WRITE};

/// Slots per link (a power of two). About 16 × 40 bytes plus the cached topics.
pub const ACL_CACHE_SLOTS: usize = 16;
/// Longest topic kept in a slot.
pub const ACL_CACHE_TOPIC_BYTES_MAX: usize = 256;

#[derive(Debug, Default, Clone)]
struct Slot {
    topic: String,
    bits: u8,
    filled: bool,
}

/// Decisions already made for one link (one client identity).
#[derive(Debug, Default, Clone)]
pub struct AclCache {
    generation: u64,
    slots: Vec<Slot>,
    hits: u64,
    misses: u64,
}

impl AclCache {
    /// An empty cache; allocates nothing until the first decision.
    pub fn new() -> AclCache {
        AclCache::default()
    }

    /// [`Acl::can_publish`], cached.
    pub fn can_publish(&mut self, acl: &Acl, client: Client<'_>, topic: &str) -> bool {
        allows(self.bits(acl, client, topic), WRITE)
    }

    /// [`Acl::can_read`], cached.
    pub fn can_read(&mut self, acl: &Acl, client: Client<'_>, topic: &str) -> bool {
        allows(self.bits(acl, client, topic), READ)
    }

    /// (hits, misses) since creation.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    fn bits(&mut self, acl: &Acl, client: Client<'_>, topic: &str) -> u8 {
        if topic.len() > ACL_CACHE_TOPIC_BYTES_MAX {
            self.misses += 1;
            return acl.bits_for(client, topic);
        }
        if self.generation != acl.generation() || self.slots.is_empty() {
            self.generation = acl.generation();
            self.slots.clear();
            self.slots.resize(ACL_CACHE_SLOTS, Slot::default());
        }
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(topic);
        let index = (hash as usize) & (ACL_CACHE_SLOTS - 1);
        let Some(slot) = self.slots.get_mut(index) else {
            return acl.bits_for(client, topic);
        };
        if slot.filled && slot.topic == topic {
            self.hits += 1;
            return slot.bits;
        }
        self.misses += 1;
        let bits = acl.bits_for(client, topic);
        slot.topic.clear();
        slot.topic.push_str(topic);
        slot.bits = bits;
        slot.filled = true;
        bits
    }
}
