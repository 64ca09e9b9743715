//! The per-link ACL decision cache: a repeated (client, topic) decision costs a pointer
//! comparison, or at worst one hash and one string comparison, instead of a rule walk.
//!
//! Owns: two small direct-mapped tables of (topic, rule bits), allocated on first use, and
//! the generation of the [`Acl`] they were filled under.
//! * `by_ptr` ([`ACL_CACHE_PTR_SLOTS`]) is indexed by the address of the topic's shared
//!   string. A link reuses one `Arc<str>` for a repeated topic (`Link::intern_topic`) and
//!   every delivery of a message shares the message's, so a steady stream hits here: one
//!   generation compare and one address compare.
//! * `by_topic` ([`ACL_CACHE_SLOTS`]) is indexed by a hash of the topic's bytes, for the
//!   same topic arriving in another allocation (another publisher, a new message).
//!
//! Invariants: a slot answers only for its exact topic: `by_ptr` compares addresses of a
//! string the slot itself keeps alive (so the address cannot be reused by another string
//! while the slot holds it), `by_topic` compares the strings (the hash only picks the
//! slot, so a collision costs a miss, never a wrong answer); a slot answers only under the
//! `Acl` generation it was filled under, so a reload empties both tables at the next
//! decision; the client identity is fixed for a link, so it is not part of the key (a new
//! identity needs a new cache). Memory is bounded: at most `ACL_CACHE_PTR_SLOTS +
//! ACL_CACHE_SLOTS` strings are kept alive per link. Must not touch: the rules.

use std::sync::Arc;

use super::{allows, Acl, Client, READ, WRITE};

/// Slots indexed by topic contents (a power of two).
pub const ACL_CACHE_SLOTS: usize = 16;
/// Slots indexed by the address of the topic's shared string (a power of two).
pub const ACL_CACHE_PTR_SLOTS: usize = 8;

type Slot = Option<(Arc<str>, u8)>;

/// Decisions already made for one link (one client identity).
#[derive(Debug, Default, Clone)]
pub struct AclCache {
    /// Generation of the `Acl` the slots were filled under; 0 (never issued) = empty.
    generation: u64,
    by_ptr: Box<[Slot]>,
    by_topic: Box<[Slot]>,
    hits: u64,
    misses: u64,
}

impl AclCache {
    /// An empty cache; allocates nothing until the first decision.
    pub fn new() -> AclCache {
        AclCache::default()
    }

    /// [`Acl::can_publish`], cached.
    #[inline]
    pub fn can_publish(&mut self, acl: &Acl, client: Client<'_>, topic: &Arc<str>) -> bool {
        allows(self.bits(acl, client, topic), WRITE)
    }

    /// [`Acl::can_read`], cached.
    #[inline]
    pub fn can_read(&mut self, acl: &Acl, client: Client<'_>, topic: &Arc<str>) -> bool {
        allows(self.bits(acl, client, topic), READ)
    }

    /// (hits, misses) since creation.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// The rule bits for `topic`: the hot part inline, the rest out of line.
    #[inline]
    fn bits(&mut self, acl: &Acl, client: Client<'_>, topic: &Arc<str>) -> u8 {
        if self.generation == acl.generation() {
            if let Some(Some((t, bits))) = self.by_ptr.get(ptr_index(topic)) {
                if Arc::ptr_eq(t, topic) {
                    self.hits += 1;
                    return *bits;
                }
            }
        }
        self.bits_slow(acl, client, topic)
    }

    #[cold]
    #[inline(never)]
    fn bits_slow(&mut self, acl: &Acl, client: Client<'_>, topic: &Arc<str>) -> u8 {
        if self.generation != acl.generation() || self.by_topic.is_empty() {
            self.generation = acl.generation();
            self.by_ptr = vec![None; ACL_CACHE_PTR_SLOTS].into_boxed_slice();
            self.by_topic = vec![None; ACL_CACHE_SLOTS].into_boxed_slice();
        }
        let index = (topic_hash(topic.as_bytes()) as usize) & (ACL_CACHE_SLOTS - 1);
        let known = match self.by_topic.get(index) {
            Some(Some((t, bits))) if **t == **topic => Some(*bits),
            _ => None,
        };
        let bits = match known {
            Some(b) => {
                self.hits += 1;
                b
            }
            None => {
                self.misses += 1;
                let b = acl.bits_for(client, topic);
                if let Some(slot) = self.by_topic.get_mut(index) {
                    *slot = Some((topic.clone(), b));
                }
                b
            }
        };
        // The next decision on this very string is answered by address.
        if let Some(slot) = self.by_ptr.get_mut(ptr_index(topic)) {
            *slot = Some((topic.clone(), bits));
        }
        bits
    }
}

/// The `by_ptr` slot of a shared string: address bits above the allocator's alignment.
#[inline]
fn ptr_index(topic: &Arc<str>) -> usize {
    let addr = Arc::as_ptr(topic).cast::<u8>() as usize;
    ((addr >> 4) ^ (addr >> 10)) & (ACL_CACHE_PTR_SLOTS - 1)
}

/// A fast, non-cryptographic hash of a topic (FxHash's multiply-rotate over 8-byte words).
/// Only picks a slot; collisions cost a miss, never a wrong answer.
pub(crate) fn topic_hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let mut h = bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(K);
    }
    let mut b = [0u8; 8];
    let rest = words.remainder();
    b[..rest.len()].copy_from_slice(rest);
    h = (h.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(K);
    // Fold the high bits (the best mixed) into the low ones the index uses.
    h ^ (h >> 32)
}
