//! [`Sessions`]: a state's sessions by client id, in slots that a caller may name directly.
//!
//! Owns: the sessions (each in a slot of a `Vec`), an index of slot numbers hashed by the
//! client id of the session in the slot, and the free slots. Invariants: the index names
//! exactly the occupied slots, each once, under the hash of its session's client id; a
//! free slot is listed once in `free`. A session's client id (`info.client_id`) is its key
//! and the only copy of it here: a caller may change anything else in a session it is
//! handed, never that. A [`SessionSlot`] is a hint, never trusted: [`Sessions::at_mut`]
//! answers only when the slot holds the very client id asked for, so a stale slot (its
//! session ended, the slot taken by another) costs a lookup, never a wrong session.
//!
//! Why slots: a journal's shadow applies two delivery records per durable QoS 1 message,
//! and hashing the client id to find the session was ≈ 6% of the broker's instructions in
//! the durable pairs (`docs/benchmarks.md`, "ninth round"); the broker's session keeps the
//! slot its shadow session was found in, and a slot is checked with one comparison of
//! the client id. Why an index of slot numbers: a map from client id to slot held each id
//! twice more, beside the session's own (`docs/benchmarks.md`, "Sessions held once"). The
//! index is hashed with a per-map seed ([`SeededHash`]: client ids come from the
//! network). Iteration follows the slots, in no meaningful order. Must not touch: what a
//! session holds (`super::LiveState` applies records to it).

use std::cell::Cell;
use std::fmt;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::hash::SeededHash;

use super::SessionState;

/// Where a session was found in a [`Sessions`] (a hint: see [`Sessions::at_mut`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSlot(u32);

impl SessionSlot {
    /// No slot known yet.
    pub const NONE: SessionSlot = SessionSlot(u32::MAX);
}

impl Default for SessionSlot {
    fn default() -> Self {
        SessionSlot::NONE
    }
}

/// Sessions by client id (see the module doc); `S` hashes the client ids.
#[derive(Clone, Default)]
pub struct Sessions<S = SeededHash> {
    slots: Vec<Option<SessionState>>,
    index: HashTable<u32>,
    free: Vec<u32>,
    hash: S,
}

/// A session's key: its client id.
fn key(s: &SessionState) -> &str {
    &s.info.client_id
}

/// Whether slot `i` of `slots` holds the session of client `client_id`.
fn holds(slots: &[Option<SessionState>], i: u32, client_id: &str) -> bool {
    matches!(slots.get(i as usize), Some(Some(s)) if key(s) == client_id)
}

impl<S: BuildHasher> Sessions<S> {
    /// How many sessions.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether client `client_id` has a session.
    pub fn contains_key(&self, client_id: &str) -> bool {
        self.find(client_id).is_some()
    }

    /// The session of client `client_id`.
    pub fn get(&self, client_id: &str) -> Option<&SessionState> {
        let i = self.find(client_id)?;
        self.slots.get(i as usize)?.as_ref()
    }

    /// The session of client `client_id`, to change.
    pub fn get_mut(&mut self, client_id: &str) -> Option<&mut SessionState> {
        let i = self.find(client_id)?;
        self.slots.get_mut(i as usize)?.as_mut()
    }

    /// The session of client `client_id`, found in slot `slot` when it is there (one
    /// comparison of the client id), else looked up; `slot` is set to where it was found.
    pub fn at_mut(
        &mut self,
        slot: &Cell<SessionSlot>,
        client_id: &str,
    ) -> Option<&mut SessionState> {
        let i = if holds(&self.slots, slot.get().0, client_id) {
            slot.get().0
        } else {
            let i = self.find(client_id)?;
            slot.set(SessionSlot(i));
            i
        };
        self.slots.get_mut(i as usize)?.as_mut()
    }

    /// Give session `s` to its client (`s.info.client_id`), returning the session it
    /// replaces (whose slot it takes).
    pub fn insert(&mut self, s: SessionState) -> Option<SessionState> {
        let hash = self.hash.hash_one(key(&s));
        let slots = &self.slots;
        if let Some(&i) = self.index.find(hash, |&i| holds(slots, i, key(&s))) {
            let old = self.slots.get_mut(i as usize)?;
            return old.replace(s);
        }
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                // A slot number is a u32 and `NONE` is never one.
                let i = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                assert!(i < u32::MAX, "more than 2^32 - 1 sessions");
                self.slots.push(None);
                i
            }
        };
        self.slots[i as usize] = Some(s);
        let (slots, h) = (&self.slots, &self.hash);
        // Every slot the index names holds a session: growing rehashes their client ids.
        let rehash = |&j: &u32| match slots.get(j as usize) {
            Some(Some(s)) => h.hash_one(key(s)),
            _ => 0,
        };
        self.index.insert_unique(hash, i, rehash);
        None
    }

    /// End client `client_id`'s session, returning it (its slot is free for another).
    pub fn remove(&mut self, client_id: &str) -> Option<SessionState> {
        let hash = self.hash.hash_one(client_id);
        let slots = &self.slots;
        let found = self.index.find_entry(hash, |&i| holds(slots, i, client_id));
        let (i, _) = found.ok()?.remove();
        let s = self.slots.get_mut(i as usize)?.take();
        if self.index.is_empty() {
            // Nothing left to name a slot: start again from none.
            self.slots.clear();
            self.free.clear();
        } else {
            self.free.push(i);
        }
        s
    }

    fn find(&self, client_id: &str) -> Option<u32> {
        let hash = self.hash.hash_one(client_id);
        let slots = &self.slots;
        self.index
            .find(hash, |&i| holds(slots, i, client_id))
            .copied()
    }
}

impl<S> Sessions<S> {
    /// (client id, session), in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SessionState)> {
        self.slots.iter().flatten().map(|s| (key(s), s))
    }

    /// The client ids, in slot order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().flatten().map(key)
    }

    /// The sessions, in slot order.
    pub fn values(&self) -> impl Iterator<Item = &SessionState> {
        self.slots.iter().flatten()
    }

    /// The sessions to change (never their client ids), in slot order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut SessionState> {
        self.slots.iter_mut().flatten()
    }
}

/// Equal when both hold the same sessions (slots aside).
impl<S: BuildHasher> PartialEq for Sessions<S> {
    fn eq(&self, other: &Sessions<S>) -> bool {
        self.len() == other.len() && self.iter().all(|(c, s)| other.get(c) == Some(s))
    }
}

impl<S: BuildHasher> Eq for Sessions<S> {}

impl<S> fmt::Debug for Sessions<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
impl std::ops::Index<&str> for Sessions {
    type Output = SessionState;

    /// Panics when client `client_id` has no session (as a map's index does).
    fn index(&self, client_id: &str) -> &SessionState {
        self.get(client_id).expect("no session for this client id")
    }
}

#[cfg(test)]
impl std::ops::Index<&String> for Sessions {
    type Output = SessionState;

    fn index(&self, client_id: &String) -> &SessionState {
        &self[client_id.as_str()]
    }
}

/// Sessions, each under its own client id (a later one replaces an earlier one's).
impl<S: BuildHasher + Default> FromIterator<SessionState> for Sessions<S> {
    fn from_iter<I: IntoIterator<Item = SessionState>>(iter: I) -> Sessions<S> {
        let mut sessions = Sessions::default();
        for s in iter {
            sessions.insert(s);
        }
        sessions
    }
}

impl<S> IntoIterator for Sessions<S> {
    type Item = SessionState;
    type IntoIter = std::iter::Flatten<std::vec::IntoIter<Option<SessionState>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.slots.into_iter().flatten()
    }
}

impl<'a, S> IntoIterator for &'a Sessions<S> {
    type Item = (&'a str, &'a SessionState);
    type IntoIter = Box<dyn Iterator<Item = (&'a str, &'a SessionState)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::BTreeMap;
    use std::hash::Hasher;

    use super::*;
    use crate::store::testutil::session;
    use crate::store::LiveState;

    /// A session as a `SessionCreated` record leaves it, told apart by its expiry.
    fn state(client: &str, expiry_s: u32) -> SessionState {
        let mut s = LiveState::default();
        s.apply(session(client, true));
        let mut st = s.sessions.remove(client).expect("created");
        st.info.expiry_interval_s = expiry_s;
        st
    }

    /// Every client id hashes alike: the index tells sessions apart by their ids alone.
    #[derive(Clone, Default)]
    struct Collide;

    struct CollideHasher;

    impl Hasher for CollideHasher {
        fn write(&mut self, _: &[u8]) {}

        fn finish(&self) -> u64 {
            0x1234_5678
        }
    }

    impl BuildHasher for Collide {
        type Hasher = CollideHasher;

        fn build_hasher(&self) -> CollideHasher {
            CollideHasher
        }
    }

    /// The slot a session of client `id` is in.
    fn slot_of<S: BuildHasher>(got: &mut Sessions<S>, id: &str) -> u32 {
        let slot = Cell::new(SessionSlot::NONE);
        got.at_mut(&slot, id).expect("present");
        slot.get().0
    }

    /// Sessions against a `BTreeMap` oracle: inserts, removals and lookups by a slot kept
    /// per client (stale once its session ended or moved) answer as the map does.
    fn answer_as_a_map_does<S: BuildHasher + Default + Clone>() {
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut got = Sessions::<S>::default();
        let mut want: BTreeMap<String, SessionState> = BTreeMap::new();
        let slots: Vec<Cell<SessionSlot>> = (0..12).map(|_| Cell::default()).collect();
        for step in 0..4000u32 {
            let k = (next() % 12) as usize;
            let id = format!("client-{k}");
            match next() % 4 {
                0 => {
                    let s = state(&id, step);
                    assert_eq!(got.insert(s.clone()), want.insert(id.clone(), s));
                }
                1 => assert_eq!(got.remove(&id), want.remove(&id)),
                2 => {
                    let found = got.at_mut(&slots[k], &id).map(|s| s.clone());
                    assert_eq!(found.as_ref(), want.get(&id), "step {step}");
                    if found.is_some() {
                        assert!(holds(&got.slots, slots[k].get().0, &id));
                    }
                }
                _ => {
                    // Another client's slot names a session, never the wrong one.
                    let other = &slots[(k + 1) % 12];
                    let found = got.at_mut(&Cell::new(other.get()), &id).map(|s| s.clone());
                    assert_eq!(found.as_ref(), want.get(&id), "step {step}");
                }
            }
            assert_eq!(got.len(), want.len());
            assert_eq!(got.get(&id), want.get(&id));
            assert_eq!(got.contains_key(&id), want.contains_key(&id));
        }
        let mut listed: Vec<SessionState> = got.clone().into_iter().collect();
        listed.sort_by(|a, b| key(a).cmp(key(b)));
        assert_eq!(listed, want.into_values().collect::<Vec<_>>());
        let rebuilt: Sessions<S> = listed.into_iter().rev().collect();
        assert!(rebuilt == got, "equal whatever the slots");
    }

    #[test]
    fn slots_answer_as_a_map_does() {
        answer_as_a_map_does::<SeededHash>();
    }

    #[test]
    fn slots_answer_as_a_map_does_when_every_hash_collides() {
        answer_as_a_map_does::<Collide>();
    }

    /// Inserts, a removal whose slot the next insert reuses, and lookups of ids whose
    /// hashes all collide, before and after the removal of another of them.
    #[test]
    fn a_removed_slot_is_reused_and_colliding_ids_stay_found() {
        let mut got = Sessions::<Collide>::default();
        for (n, id) in ["a", "b", "c"].into_iter().enumerate() {
            assert_eq!(got.insert(state(id, n as u32)), None);
        }
        assert_eq!(
            ["a", "b", "c"].map(|id| slot_of(&mut got, id)),
            [0, 1, 2],
            "new slots in order"
        );
        // Replacing a session keeps its slot and hands back the old one.
        let old = got.insert(state("b", 10)).expect("replaced");
        assert_eq!(old.info.expiry_interval_s, 1);
        assert_eq!(slot_of(&mut got, "b"), 1);

        let removed = got.remove("b").expect("removed");
        assert_eq!(removed.info.expiry_interval_s, 10);
        assert_eq!(got.remove("b"), None, "removed once");
        assert!(got.get("b").is_none());
        // The other colliding ids are still found, by lookup and by their slots.
        assert_eq!(got.get("a").map(|s| s.info.expiry_interval_s), Some(0));
        assert_eq!(got.get("c").map(|s| s.info.expiry_interval_s), Some(2));
        let stale = Cell::new(SessionSlot(1));
        assert!(
            got.at_mut(&stale, "b").is_none(),
            "a free slot names no one"
        );
        assert_eq!(stale.get(), SessionSlot(1), "not moved by a miss");

        // The next new session takes the free slot; a stale slot of "b" does not find it.
        assert_eq!(got.insert(state("d", 3)), None);
        assert_eq!(slot_of(&mut got, "d"), 1);
        assert!(got.at_mut(&Cell::new(SessionSlot(1)), "b").is_none());
        let c = Cell::new(SessionSlot(1));
        assert_eq!(
            got.at_mut(&c, "c").map(|s| s.info.expiry_interval_s),
            Some(2)
        );
        assert_eq!(
            c.get(),
            SessionSlot(2),
            "found by lookup, the hint corrected"
        );
        assert_eq!(got.len(), 3);
        let mut ids: Vec<&str> = got.keys().collect();
        ids.sort_unstable();
        assert_eq!(ids, ["a", "c", "d"]);

        // Emptied, it starts again from slot 0.
        for id in ["a", "c", "d"] {
            assert!(got.remove(id).is_some());
        }
        assert!(got.is_empty() && got.slots.is_empty() && got.free.is_empty());
        assert_eq!(got.insert(state("e", 4)), None);
        assert_eq!(slot_of(&mut got, "e"), 0);
    }
}
