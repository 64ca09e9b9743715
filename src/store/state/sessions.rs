//! [`Sessions`]: a state's sessions by client id, in slots that a caller may name directly.
//!
//! Owns: the sessions (each in a slot of a `Vec`, with its client id), an index from
//! client id to slot, and the free slots. Invariants: the index names exactly the occupied
//! slots, each under the client id its slot holds; a free slot is listed once in `free`.
//! A [`SessionSlot`] is a hint, never trusted: [`Sessions::at_mut`] answers only when the
//! slot holds the very client id asked for, so a stale slot (its session ended, the slot
//! taken by another) costs a lookup, never a wrong session.
//!
//! Why slots: a journal's shadow applies two delivery records per durable QoS 1 message,
//! and hashing the client id to find the session was ≈ 6% of the broker's instructions in
//! the durable pairs (`docs/benchmarks.md`, "ninth round"); the broker's session keeps the
//! slot its shadow session was found in, and a slot is checked with one comparison of
//! the client id. The index is hashed with a per-map seed ([`SeededHash`]: client ids come
//! from the network). Iteration follows the slots, in no meaningful order. Must not touch:
//! what a session holds (`super::LiveState` applies records to it).

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;

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

/// Sessions by client id (see the module doc).
#[derive(Clone, Default)]
pub struct Sessions {
    slots: Vec<Option<(String, SessionState)>>,
    index: HashMap<String, u32, SeededHash>,
    free: Vec<u32>,
}

impl Sessions {
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
        self.index.contains_key(client_id)
    }

    /// The session of client `client_id`.
    pub fn get(&self, client_id: &str) -> Option<&SessionState> {
        let i = *self.index.get(client_id)?;
        self.entry(i).map(|(_, s)| s)
    }

    /// The session of client `client_id`, to change.
    pub fn get_mut(&mut self, client_id: &str) -> Option<&mut SessionState> {
        let i = *self.index.get(client_id)?;
        self.entry_mut(i).map(|(_, s)| s)
    }

    /// The session of client `client_id`, found in slot `slot` when it is there (one
    /// comparison of the client id), else looked up; `slot` is set to where it was found.
    pub fn at_mut(
        &mut self,
        slot: &Cell<SessionSlot>,
        client_id: &str,
    ) -> Option<&mut SessionState> {
        let hit = matches!(
            self.slots.get(slot.get().0 as usize),
            Some(Some((c, _))) if c == client_id
        );
        let i = if hit {
            slot.get().0
        } else {
            let i = *self.index.get(client_id)?;
            slot.set(SessionSlot(i));
            i
        };
        self.entry_mut(i).map(|(_, s)| s)
    }

    /// Give client `client_id` session `s`, returning the one it replaces (which keeps
    /// its slot).
    pub fn insert(&mut self, client_id: String, s: SessionState) -> Option<SessionState> {
        if let Some(&i) = self.index.get(&client_id) {
            let old = self.entry_mut(i)?;
            return Some(std::mem::replace(&mut old.1, s));
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
        self.index.insert(client_id.clone(), i);
        self.slots[i as usize] = Some((client_id, s));
        None
    }

    /// End client `client_id`'s session, returning it (its slot is free for another).
    pub fn remove(&mut self, client_id: &str) -> Option<SessionState> {
        let i = self.index.remove(client_id)?;
        let (_, s) = self.slots.get_mut(i as usize)?.take()?;
        if self.index.is_empty() {
            // Nothing left to name a slot: start again from none.
            self.slots.clear();
            self.free.clear();
        } else {
            self.free.push(i);
        }
        Some(s)
    }

    /// (client id, session), in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &SessionState)> {
        self.slots.iter().flatten().map(|(c, s)| (c, s))
    }

    /// (client id, session to change), in slot order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&String, &mut SessionState)> {
        self.slots.iter_mut().flatten().map(|(c, s)| (&*c, s))
    }

    /// The client ids, in slot order.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.iter().map(|(c, _)| c)
    }

    /// The sessions, in slot order.
    pub fn values(&self) -> impl Iterator<Item = &SessionState> {
        self.iter().map(|(_, s)| s)
    }

    /// The sessions to change, in slot order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut SessionState> {
        self.iter_mut().map(|(_, s)| s)
    }

    fn entry(&self, i: u32) -> Option<&(String, SessionState)> {
        self.slots.get(i as usize)?.as_ref()
    }

    fn entry_mut(&mut self, i: u32) -> Option<&mut (String, SessionState)> {
        self.slots.get_mut(i as usize)?.as_mut()
    }
}

/// Equal when both hold the same sessions under the same client ids (slots aside).
impl PartialEq for Sessions {
    fn eq(&self, other: &Sessions) -> bool {
        self.len() == other.len() && self.iter().all(|(c, s)| other.get(c) == Some(s))
    }
}

impl Eq for Sessions {}

impl fmt::Debug for Sessions {
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

impl FromIterator<(String, SessionState)> for Sessions {
    fn from_iter<I: IntoIterator<Item = (String, SessionState)>>(iter: I) -> Sessions {
        let mut sessions = Sessions::default();
        for (c, s) in iter {
            sessions.insert(c, s);
        }
        sessions
    }
}

impl IntoIterator for Sessions {
    type Item = (String, SessionState);
    type IntoIter = std::iter::Flatten<std::vec::IntoIter<Option<(String, SessionState)>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.slots.into_iter().flatten()
    }
}

impl<'a> IntoIterator for &'a Sessions {
    type Item = (&'a String, &'a SessionState);
    type IntoIter = Box<dyn Iterator<Item = (&'a String, &'a SessionState)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::BTreeMap;

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

    /// Sessions against a `BTreeMap` oracle: inserts, removals and lookups by a slot kept
    /// per client (stale once its session ended or moved) answer as the map does.
    #[test]
    fn slots_answer_as_a_map_does() {
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut got = Sessions::default();
        let mut want: BTreeMap<String, SessionState> = BTreeMap::new();
        let slots: Vec<Cell<SessionSlot>> = (0..12).map(|_| Cell::default()).collect();
        for step in 0..4000u32 {
            let k = (next() % 12) as usize;
            let id = format!("client-{k}");
            match next() % 4 {
                0 => {
                    let s = state(&id, step);
                    assert_eq!(
                        got.insert(id.clone(), s.clone()),
                        want.insert(id.clone(), s)
                    );
                }
                1 => assert_eq!(got.remove(&id), want.remove(&id)),
                2 => {
                    let found = got.at_mut(&slots[k], &id).map(|s| s.clone());
                    assert_eq!(found.as_ref(), want.get(&id), "step {step}");
                    if found.is_some() {
                        assert!(
                            matches!(&got.slots[slots[k].get().0 as usize], Some((c, _)) if *c == id)
                        );
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
        }
        let mut listed: Vec<(String, SessionState)> = got.clone().into_iter().collect();
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(listed, want.into_iter().collect::<Vec<_>>());
        let rebuilt: Sessions = listed.into_iter().rev().collect();
        assert_eq!(rebuilt, got, "equal whatever the slots");
    }
}
