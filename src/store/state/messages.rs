//! [`Messages`]: a state's stored messages by id, in a `Vec` sorted by id.
//!
//! Owns: the messages. Invariant: `items` is sorted by id with no id twice. Ids are taken
//! in increasing order (a journal numbers each message it stores after the last, a merge
//! renumbers past the highest), so an insert is a push at the end; one below the highest
//! is placed by a binary search (recovery only). A sweep ([`Messages::retain`]) keeps the
//! entries in place in one pass.
//!
//! Why not an ordered map: a journal's shadow state inserts every durable message and
//! sweeps most of them out again; the map's node inserts, and its rebuild at each sweep,
//! were ≈ 9% of the broker's instructions per durable QoS 1 message (`docs/benchmarks.md`,
//! "fourth round").
//!
//! [`SharedMessages`] beside it: the messages a journal's shadow refers to instead of
//! copying them (the engine's own `Arc` messages, rendered at a checkpoint): the copy into
//! the shadow and its freeing at the sweep were ≈ 6.6% of the broker's instructions per
//! durable QoS 1 message ("fifth round"), and the shadow held every message a second time.
//! Must not touch: deliveries, files.

use std::ops::Index;
use std::sync::Arc;

use crate::store::record::{MsgId, StoredMessage};

/// An entry: the id and its message.
type Entry = (MsgId, StoredMessage<'static>);

/// Stored messages by id, in id order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Messages {
    items: Vec<Entry>,
}

impl Messages {
    /// Store `m` as `id`, returning the message it replaces.
    pub fn insert(
        &mut self,
        id: MsgId,
        m: StoredMessage<'static>,
    ) -> Option<StoredMessage<'static>> {
        if self.items.last().is_none_or(|(last, _)| *last < id) {
            self.items.push((id, m));
            return None;
        }
        match self.items.binary_search_by_key(&id, |e| e.0) {
            Ok(i) => Some(std::mem::replace(&mut self.items[i].1, m)),
            Err(i) => {
                self.items.insert(i, (id, m));
                None
            }
        }
    }

    /// Make room for `additional` more messages at once, if the allocator grants it
    /// (nothing happens if not: the `Vec` then grows as it would). Recovery reserves an
    /// upper bound on the messages its files can hold, so the 1M-entry `Vec` is not
    /// grown and copied while it is read (≈ 9% of a 1M-message recovery's CPU:
    /// `docs/benchmarks.md`, "Recovery without the rebuild"); the room never used is
    /// address space only, never touched, and given back by [`Messages::shrink_to_fit`].
    pub fn try_reserve(&mut self, additional: usize) -> bool {
        self.items.try_reserve_exact(additional).is_ok()
    }

    /// Give back the room beyond the messages held.
    pub fn shrink_to_fit(&mut self) {
        self.items.shrink_to_fit();
    }

    /// How many messages fit without growing.
    pub fn capacity(&self) -> usize {
        self.items.capacity()
    }

    /// Message `id`.
    pub fn get(&self, id: &MsgId) -> Option<&StoredMessage<'static>> {
        let i = self.items.binary_search_by_key(id, |e| e.0).ok()?;
        self.items.get(i).map(|e| &e.1)
    }

    /// Whether message `id` is stored.
    pub fn contains_key(&self, id: &MsgId) -> bool {
        self.items.binary_search_by_key(id, |e| e.0).is_ok()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The entries in id order.
    pub fn iter(&self) -> Iter<'_> {
        self.items.iter().map(as_pair)
    }

    /// The ids in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &MsgId> + '_ {
        self.items.iter().map(|e| &e.0)
    }

    /// The messages in id order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &StoredMessage<'static>> + '_ {
        self.items.iter().map(|e| &e.1)
    }

    /// Keep the entries for which `keep` is true, visited in id order.
    pub fn retain(&mut self, mut keep: impl FnMut(&MsgId, &StoredMessage<'static>) -> bool) {
        self.items.retain(|(id, m)| keep(id, m));
    }

    /// Every entry, taken out the highest id first, the `Vec` given back to the
    /// allocator as it empties ([`Draining`]).
    pub fn drain_from_back(self) -> Draining {
        Draining { items: self.items }
    }
}

/// Bytes of emptied room a [`Draining`] lets build up before it gives them back.
const DRAIN_SHRINK_BYTES: usize = 1 << 20;

/// The entries of a [`Messages`], taken out the highest id first. Every
/// [`DRAIN_SHRINK_BYTES`] of room emptied at the end goes back to the allocator (a shrink
/// in place: nothing is copied), so the entries already taken stop holding memory.
///
/// Why: a restore turns each of 1M recovered messages into the engine's form; taken in
/// order through the `Vec`'s own iterator, the whole `Vec` (184 bytes an entry) stayed
/// allocated until the last one, beside every message already built
/// (`docs/benchmarks.md`, "Recovery, eleventh round"). From the back, the room it gives
/// back is where the next built messages go.
#[derive(Debug)]
pub struct Draining {
    items: Vec<Entry>,
}

impl Draining {
    /// Entries the buffer has room for now (taken ones included until the next shrink).
    pub fn capacity(&self) -> usize {
        self.items.capacity()
    }

    /// The most emptied entries a [`Draining`] holds room for before it shrinks.
    pub fn slack_max() -> usize {
        (DRAIN_SHRINK_BYTES / std::mem::size_of::<Entry>()).max(1)
    }
}

impl Iterator for Draining {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        let e = self.items.pop();
        if self.items.capacity() - self.items.len() >= Draining::slack_max() {
            self.items.shrink_to_fit();
        }
        e
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.items.len(), Some(self.items.len()))
    }
}

/// The entries of a [`Messages`] by reference, in id order.
pub type Iter<'a> =
    std::iter::Map<std::slice::Iter<'a, Entry>, fn(&Entry) -> (&MsgId, &StoredMessage<'static>)>;

fn as_pair(e: &Entry) -> (&MsgId, &StoredMessage<'static>) {
    (&e.0, &e.1)
}

impl<'a> IntoIterator for &'a Messages {
    type Item = (&'a MsgId, &'a StoredMessage<'static>);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl IntoIterator for Messages {
    type Item = Entry;
    type IntoIter = std::vec::IntoIter<Entry>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

/// Collected as an ordered map would be: sorted by id, the last entry of an id kept.
impl FromIterator<Entry> for Messages {
    fn from_iter<I: IntoIterator<Item = Entry>>(iter: I) -> Self {
        let mut items: Vec<Entry> = iter.into_iter().collect();
        if !items.windows(2).all(|w| w[0].0 < w[1].0) {
            // Stable: of equal ids the last collected ends last, and is the one kept.
            items.sort_by_key(|e| e.0);
            let mut kept: Vec<Entry> = Vec::with_capacity(items.len());
            for e in items {
                match kept.last_mut() {
                    Some(last) if last.0 == e.0 => *last = e,
                    _ => kept.push(e),
                }
            }
            items = kept;
        }
        Messages { items }
    }
}

impl Index<&MsgId> for Messages {
    type Output = StoredMessage<'static>;

    fn index(&self, id: &MsgId) -> &StoredMessage<'static> {
        match self.get(id) {
            Some(m) => m,
            None => panic!("no message {id:?}"),
        }
    }
}

impl std::fmt::Debug for Messages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// A message a state refers to instead of holding a copy of it: a journal's shadow keeps
/// the engine's own message (immutable and reference counted) and renders its stored form
/// only when a checkpoint is written. The rendering must be the very form that was logged
/// (the journal encodes the `MessageStored` record from the same function).
pub trait SharedMessage: Send + Sync {
    /// The stored form, with the expiry fixed when it was logged.
    fn stored(&self, expires_at_unix_ms: Option<u64>) -> StoredMessage<'_>;

    /// The reference as `Any`, so that its owner can take back a message a sweep dropped
    /// (the engine's message pool reuses its allocation).
    fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync>;
}

/// A shared message: its id, the message, the expiry it was logged with.
type SharedEntry = (MsgId, Arc<dyn SharedMessage>, Option<u64>);

/// Messages kept by reference ([`SharedMessage`]), in increasing id order.
///
/// Owns: the references. Invariant: ids strictly increase and none is also in the state's
/// [`Messages`] (a state keeps each id in one of the two). Only a journal's shadow holds
/// any: every state recovery builds, merges or splits holds its messages owned
/// ([`super::LiveState::own_shared`]).
#[derive(Clone, Default)]
pub struct SharedMessages {
    items: Vec<SharedEntry>,
}

impl SharedMessages {
    /// Keep `m` as `id`, unless `id` is not above every id held: then `m` comes back.
    pub fn push(
        &mut self,
        id: MsgId,
        m: Arc<dyn SharedMessage>,
        expires: Option<u64>,
    ) -> Result<(), Arc<dyn SharedMessage>> {
        if self.items.last().is_some_and(|(last, _, _)| *last >= id) {
            return Err(m);
        }
        self.items.push((id, m, expires));
        Ok(())
    }

    /// Make room for `additional` more references.
    pub fn reserve(&mut self, additional: usize) {
        self.items.reserve_exact(additional);
    }

    /// Whether message `id` is held.
    pub fn contains_key(&self, id: &MsgId) -> bool {
        self.items.binary_search_by_key(id, |e| e.0).is_ok()
    }

    /// Message `id`'s reference.
    pub fn get(&self, id: &MsgId) -> Option<&Arc<dyn SharedMessage>> {
        let i = self.items.binary_search_by_key(id, |e| e.0).ok()?;
        self.items.get(i).map(|e| &e.1)
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The highest id held.
    pub fn last_id(&self) -> Option<MsgId> {
        self.items.last().map(|e| e.0)
    }

    /// The messages in id order, in their stored form (borrowing from the references).
    pub fn iter(&self) -> impl Iterator<Item = (MsgId, StoredMessage<'_>)> + '_ {
        self.items.iter().map(|(id, m, exp)| (*id, m.stored(*exp)))
    }

    /// Keep the entries for which `keep` is true, visited in id order; the references
    /// of the others go to `dropped`.
    pub fn retain(
        &mut self,
        mut keep: impl FnMut(&MsgId) -> bool,
        dropped: &mut Vec<Arc<dyn SharedMessage>>,
    ) {
        let items = std::mem::take(&mut self.items);
        self.items.reserve(items.len());
        for (id, m, exp) in items {
            if keep(&id) {
                self.items.push((id, m, exp));
            } else {
                dropped.push(m);
            }
        }
    }

    /// Hold `items`, given in decreasing id order (as [`Messages::drain_from_back`]
    /// hands them out); they come back, none kept, if any is already held or the ids do
    /// not strictly decrease.
    pub fn set_from_back(&mut self, mut items: Vec<SharedEntry>) -> Result<(), Vec<SharedEntry>> {
        if !self.items.is_empty() || !items.windows(2).all(|w| w[0].0 > w[1].0) {
            return Err(items);
        }
        items.reverse();
        self.items = items;
        Ok(())
    }

    /// Take every message out as an owned copy, in id order.
    pub fn take_owned(&mut self) -> Vec<Entry> {
        let items = std::mem::take(&mut self.items);
        items
            .into_iter()
            .map(|(id, m, exp)| (id, m.stored(exp).into_owned()))
            .collect()
    }
}

/// Equal when they hold the same ids with the same stored forms.
impl PartialEq for SharedMessages {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for SharedMessages {}

impl std::fmt::Debug for SharedMessages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::store::testutil::message;

    /// Inserts in and out of order, replacements, sweeps and collects: the same as an
    /// ordered map after every step.
    #[test]
    fn messages_match_an_ordered_map() {
        let (mut v, mut m) = (Messages::default(), BTreeMap::new());
        let ids = [5u64, 6, 9, 3, 9, 12, 1, 13, 14, 7, 14, 20];
        for (n, &id) in ids.iter().enumerate() {
            let msg = message(&format!("t/{n}"), b"x", false);
            assert_eq!(v.insert(MsgId(id), msg.clone()), m.insert(MsgId(id), msg));
            assert!(v.iter().eq(m.iter()));
            assert_eq!((v.len(), v.is_empty()), (m.len(), m.is_empty()));
            assert_eq!(v.get(&MsgId(id)), m.get(&MsgId(id)));
            assert!(!v.contains_key(&MsgId(id + 100)));
        }
        v.retain(|id, _| id.0 % 3 != 0);
        m.retain(|id, _| id.0 % 3 != 0);
        assert!(v.iter().eq(m.iter()));
        assert_eq!(v.keys().next_back(), m.keys().next_back());
        let shuffled: Vec<_> = m.clone().into_iter().rev().chain(m.clone()).collect();
        let back: Messages = shuffled.clone().into_iter().collect();
        let map: BTreeMap<_, _> = shuffled.into_iter().collect();
        assert!(back.iter().eq(map.iter()));
    }

    /// Drained from the back: every entry once, the highest id first, and the room of the
    /// entries taken never more than [`Draining::slack_max`] (a `Vec`'s own iterator
    /// keeps all of it until the end).
    #[test]
    fn draining_gives_the_room_back_as_it_empties() {
        let mut v = Messages::default();
        let n = 5 * Draining::slack_max() + 7;
        for id in 0..n as u64 {
            v.insert(MsgId(3 * id), message(&format!("t/{id}"), b"x", false));
        }
        let expect: Vec<_> = v.clone().into_iter().rev().collect();
        let mut d = v.drain_from_back();
        let mut got = Vec::new();
        while let Some(e) = d.next() {
            got.push(e);
            let left = n - got.len();
            assert_eq!(d.size_hint(), (left, Some(left)));
            assert!(
                d.capacity() < left + Draining::slack_max(),
                "{}",
                d.capacity()
            );
        }
        assert_eq!(got, expect);
    }
}
