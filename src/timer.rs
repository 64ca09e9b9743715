//! Hashed, hierarchical timer wheel for one shard: keepalive, retransmission, message and
//! session expiry, will delay.
//!
//! **Owns** every pending timer of its shard: a `u64` key (what to do is the caller's
//! business) and a deadline in milliseconds. It is pure: it never reads a clock; the event
//! loop passes time in, and time never goes backwards (an older `now_ms` is treated as the
//! latest one seen).
//!
//! **Layout.** Time is cut into ticks of [`TICK_MS`]. [`LEVELS`] levels of 64 slots each:
//! level `l` slot `s` holds timers whose deadline tick shares all digits above `l` with the
//! current tick and has base-64 digit `s` at position `l`, so level 0 spans 640 ms, level 1
//! about 41 s, level 2 about 44 min, level 3 about 47 h, level 4 about 124 days and level 5
//! about 21.8 years. Later deadlines sit in one overflow list that is re-bucketed once per
//! 21.8-year epoch. Timers whose deadline tick has been reached sit in the *current* list,
//! which [`TimerWheel::advance`] checks against the exact millisecond.
//!
//! **Invariants kept:** a timer fires exactly once, in the first `advance` whose `now_ms`
//! is at or past its deadline, never earlier; every level-`l` timer is due before every
//! level-`l+1` timer, so the earliest deadline is in the lowest occupied slot; a cancelled
//! or fired [`TimerId`] never matches again (ids carry a generation). Entries live in one
//! [`Slab`] linked into intrusive doubly-linked lists, so insert and cancel are O(1) and
//! allocate nothing once the slab has grown. The work of one `advance` is
//! O(fired + moved × [`LEVELS`]), independent of how far time jumped.
//!
//! **Must not touch:** clocks, sockets, sessions or the bus.
#![forbid(unsafe_code)]

use slab::Slab;

/// Wheel granularity in milliseconds. Deadlines are still honoured to the millisecond:
/// the tick only decides when a timer reaches the exactly-checked current list.
pub const TICK_MS: u64 = 10;
/// Hierarchy depth: [`LEVELS`] × 6 bits of ticks, about 21.8 years at [`TICK_MS`].
pub const LEVELS: usize = 6;
/// Most timers one wheel holds; indices are `u32` with one value reserved for "none".
pub const TIMERS_MAX: usize = u32::MAX as usize - 1;

const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const HORIZON_BITS: u32 = SLOT_BITS * LEVELS as u32;
const WHEEL_LISTS: usize = LEVELS * SLOTS;
/// Timers whose deadline tick is at or before the wheel's tick; checked to the millisecond.
const LIST_CURRENT: usize = WHEEL_LISTS;
/// Timers beyond the top level's span.
const LIST_OVERFLOW: usize = WHEEL_LISTS + 1;
const LISTS: usize = WHEEL_LISTS + 2;
const NIL: u32 = u32::MAX;

/// Handle to a pending timer, for [`TimerWheel::cancel`]. Stale handles (fired or
/// cancelled) are recognised by their generation and cancel nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: u32,
    generation: u64,
}

struct Entry {
    deadline_ms: u64,
    key: u64,
    generation: u64,
    prev: u32,
    next: u32,
    list: u16,
}

/// One shard's timers. See the module documentation for layout and guarantees.
pub struct TimerWheel {
    entries: Slab<Entry>,
    /// First entry of each list, or `NIL`.
    heads: Vec<u32>,
    /// Per list, a lower bound of its deadlines (exact unless a timer was cancelled since the
    /// list was last emptied or rescanned); `u64::MAX` when empty.
    list_min_ms: Vec<u64>,
    /// Bit `s` of `occupied[l]` is set when level `l` slot `s` is non-empty.
    occupied: [u64; LEVELS],
    /// Latest time passed to `new` or `advance`.
    now_ms: u64,
    /// Every wheel slot that starts at or before this tick has been emptied.
    tick: u64,
    next_generation: u64,
}

fn tick_of(ms: u64) -> u64 {
    ms / TICK_MS
}

/// The level at which a deadline tick `due` is filed when the wheel stands at `tick`:
/// the position of the highest base-64 digit in which they differ.
fn level_for(tick: u64, due: u64) -> usize {
    let masked = (tick ^ due) | (SLOTS as u64 - 1);
    let significant = 63 - masked.leading_zeros();
    (significant / SLOT_BITS) as usize
}

impl TimerWheel {
    /// An empty wheel whose clock starts at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        TimerWheel {
            entries: Slab::new(),
            heads: vec![NIL; LISTS],
            list_min_ms: vec![u64::MAX; LISTS],
            occupied: [0; LEVELS],
            now_ms,
            tick: tick_of(now_ms),
            next_generation: 0,
        }
    }

    /// Schedule `key` to fire at `deadline_ms`. A deadline at or before the latest `now_ms`
    /// fires on the next [`advance`](Self::advance).
    ///
    /// # Panics
    /// If the wheel already holds [`TIMERS_MAX`] timers.
    pub fn insert(&mut self, deadline_ms: u64, key: u64) -> TimerId {
        assert!(self.entries.len() < TIMERS_MAX, "timer wheel full");
        let generation = self.next_generation;
        self.next_generation += 1;
        let index = self.entries.insert(Entry {
            deadline_ms,
            key,
            generation,
            prev: NIL,
            next: NIL,
            list: 0,
        }) as u32;
        self.place(index);
        TimerId { index, generation }
    }

    /// Cancel a pending timer in O(1). `false` if it already fired or was cancelled.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        match self.entries.get(id.index as usize) {
            Some(entry) if entry.generation == id.generation => {
                self.unlink(id.index);
                self.entries.remove(id.index as usize);
                true
            }
            _ => false,
        }
    }

    /// Move time to `now_ms` and push the key of every timer with `deadline_ms <= now_ms`
    /// onto `out`, each exactly once, in no particular order.
    pub fn advance(&mut self, now_ms: u64, out: &mut Vec<u64>) {
        let now_ms = now_ms.max(self.now_ms);
        let target = tick_of(now_ms);
        self.now_ms = now_ms;
        // Empty, in time order, every slot whose span starts by `target`. Each pass moves
        // entries to a lower level or to the current list, so the loop runs at most
        // once per occupied slot plus once per entry level, however far time jumped.
        while let Some((list, start)) = self.next_list_start() {
            if start > target {
                break;
            }
            debug_assert!(start >= self.tick, "wheel slot behind its clock");
            self.tick = start;
            self.rebucket(list);
        }
        self.tick = target;
        self.fire_current(now_ms, out);
    }

    /// A lower bound of the earliest pending deadline, for the poll timeout: exact unless a
    /// timer was cancelled from the earliest slot (then early, costing one spurious wake-up),
    /// never late. `None` when nothing is pending.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        if self.heads[LIST_CURRENT] != NIL {
            return Some(self.list_min_ms[LIST_CURRENT]);
        }
        if let Some(level) = self.occupied.iter().position(|&bits| bits != 0) {
            let slot = self.occupied[level].trailing_zeros() as usize;
            return Some(self.list_min_ms[level * SLOTS + slot]);
        }
        if self.heads[LIST_OVERFLOW] != NIL {
            return Some(self.list_min_ms[LIST_OVERFLOW]);
        }
        None
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` when no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The earliest non-empty wheel or overflow list and the tick at which it must be
    /// emptied. The current list is not considered: `fire_current` handles it.
    fn next_list_start(&self) -> Option<(usize, u64)> {
        if let Some(level) = self.occupied.iter().position(|&bits| bits != 0) {
            // Every occupied digit is above the clock's digit at that level and shares the
            // digits above it, so the lowest set bit is the next slot and never wraps.
            let slot = self.occupied[level].trailing_zeros() as u64;
            let span_bits = SLOT_BITS * (level as u32 + 1);
            let start =
                (self.tick >> span_bits << span_bits) | (slot << (SLOT_BITS * level as u32));
            debug_assert!(start > self.tick);
            return Some((level * SLOTS + slot as usize, start));
        }
        if self.heads[LIST_OVERFLOW] == NIL {
            return None;
        }
        // With the wheel empty, nothing is due before the next epoch or before the epoch of
        // the earliest overflow deadline, whichever is later; jumping there keeps a jump of
        // centuries to a couple of passes.
        let next_epoch = ((self.tick >> HORIZON_BITS) + 1) << HORIZON_BITS;
        let min_tick = tick_of(self.list_min_ms[LIST_OVERFLOW]);
        let min_epoch = min_tick >> HORIZON_BITS << HORIZON_BITS;
        Some((LIST_OVERFLOW, next_epoch.max(min_epoch)))
    }

    /// Detach `list` and file each of its entries again relative to the current tick.
    fn rebucket(&mut self, list: usize) {
        let mut index = self.heads[list];
        self.heads[list] = NIL;
        self.list_min_ms[list] = u64::MAX;
        if list < WHEEL_LISTS {
            self.occupied[list / SLOTS] &= !(1 << (list % SLOTS));
        }
        while index != NIL {
            let next = self.entries[index as usize].next;
            self.place(index);
            index = next;
        }
    }

    /// Fire every current-list entry due by `now_ms`; keep the rest (due later this tick).
    fn fire_current(&mut self, now_ms: u64, out: &mut Vec<u64>) {
        if self.list_min_ms[LIST_CURRENT] > now_ms {
            return;
        }
        let mut index = self.heads[LIST_CURRENT];
        let mut kept_min_ms = u64::MAX;
        while index != NIL {
            let entry = &self.entries[index as usize];
            let (next, deadline_ms) = (entry.next, entry.deadline_ms);
            if deadline_ms <= now_ms {
                self.unlink(index);
                out.push(self.entries.remove(index as usize).key);
            } else {
                debug_assert_eq!(tick_of(deadline_ms), self.tick);
                kept_min_ms = kept_min_ms.min(deadline_ms);
            }
            index = next;
        }
        self.list_min_ms[LIST_CURRENT] = kept_min_ms;
    }

    /// File entry `index` in the list its deadline belongs to at the current tick.
    fn place(&mut self, index: u32) {
        let due = tick_of(self.entries[index as usize].deadline_ms);
        let list = if due <= self.tick {
            LIST_CURRENT
        } else {
            match level_for(self.tick, due) {
                level if level < LEVELS => {
                    let slot = (due >> (SLOT_BITS * level as u32)) as usize & (SLOTS - 1);
                    level * SLOTS + slot
                }
                _ => LIST_OVERFLOW,
            }
        };
        self.link(index, list);
    }

    fn link(&mut self, index: u32, list: usize) {
        let head = self.heads[list];
        let entry = &mut self.entries[index as usize];
        entry.prev = NIL;
        entry.next = head;
        entry.list = list as u16;
        let deadline_ms = entry.deadline_ms;
        if head != NIL {
            self.entries[head as usize].prev = index;
        }
        self.heads[list] = index;
        self.list_min_ms[list] = self.list_min_ms[list].min(deadline_ms);
        if list < WHEEL_LISTS {
            self.occupied[list / SLOTS] |= 1 << (list % SLOTS);
        }
    }

    fn unlink(&mut self, index: u32) {
        let entry = &self.entries[index as usize];
        let (prev, next, list) = (entry.prev, entry.next, entry.list as usize);
        if prev == NIL {
            debug_assert_eq!(self.heads[list], index);
            self.heads[list] = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
        if self.heads[list] == NIL {
            self.list_min_ms[list] = u64::MAX;
            if list < WHEEL_LISTS {
                self.occupied[list / SLOTS] &= !(1 << (list % SLOTS));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Advance and return the fired keys, sorted.
    fn expect_fired(wheel: &mut TimerWheel, now_ms: u64) -> Vec<u64> {
        let mut out = Vec::new();
        wheel.advance(now_ms, &mut out);
        out.sort_unstable();
        out
    }

    #[test]
    fn deadline_equal_to_now_fires_on_that_advance() {
        let mut wheel = TimerWheel::new(1_000);
        wheel.insert(1_005, 7);
        assert_eq!(expect_fired(&mut wheel, 1_004), Vec::<u64>::new());
        assert_eq!(expect_fired(&mut wheel, 1_005), vec![7]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn past_and_present_deadlines_fire_on_next_advance() {
        let mut wheel = TimerWheel::new(50_000);
        wheel.insert(10, 1);
        wheel.insert(50_000, 2);
        assert_eq!(wheel.next_deadline_ms(), Some(10));
        assert_eq!(expect_fired(&mut wheel, 50_000), vec![1, 2]);
    }

    #[test]
    fn never_fires_early_within_a_tick() {
        let mut wheel = TimerWheel::new(0);
        for deadline_ms in 0..40 {
            wheel.insert(deadline_ms, deadline_ms);
        }
        for now_ms in 0..40 {
            assert_eq!(expect_fired(&mut wheel, now_ms), vec![now_ms]);
        }
    }

    #[test]
    fn far_future_deadlines_cascade_and_fire_exactly() {
        let day_ms = 24 * 3600 * 1000;
        let century_ms = 100 * 365 * day_ms;
        let mut wheel = TimerWheel::new(123);
        wheel.insert(123 + day_ms, 1);
        wheel.insert(123 + 40 * day_ms, 2);
        wheel.insert(123 + century_ms, 3);
        assert_eq!(wheel.next_deadline_ms(), Some(123 + day_ms));
        assert_eq!(expect_fired(&mut wheel, 122 + day_ms), Vec::<u64>::new());
        assert_eq!(wheel.next_deadline_ms(), Some(123 + day_ms));
        assert_eq!(expect_fired(&mut wheel, 123 + day_ms), vec![1]);
        assert_eq!(expect_fired(&mut wheel, 122 + century_ms), vec![2]);
        assert_eq!(wheel.next_deadline_ms(), Some(123 + century_ms));
        assert_eq!(expect_fired(&mut wheel, 123 + century_ms), vec![3]);
        assert_eq!(wheel.next_deadline_ms(), None);
    }

    #[test]
    fn extreme_deadline_and_jump_terminate() {
        let mut wheel = TimerWheel::new(0);
        wheel.insert(u64::MAX, 1);
        wheel.insert(u64::MAX / 2, 2);
        assert_eq!(expect_fired(&mut wheel, u64::MAX - 1), vec![2]);
        assert_eq!(expect_fired(&mut wheel, u64::MAX), vec![1]);
    }

    #[test]
    fn cancel_after_fire_or_twice_returns_false() {
        let mut wheel = TimerWheel::new(0);
        let fired = wheel.insert(10, 1);
        let cancelled = wheel.insert(20, 2);
        assert!(wheel.cancel(cancelled));
        assert!(!wheel.cancel(cancelled));
        assert_eq!(expect_fired(&mut wheel, 30), vec![1]);
        assert!(!wheel.cancel(fired));
        assert!(wheel.is_empty());
    }

    #[test]
    fn stale_id_cannot_cancel_a_timer_reusing_its_slot() {
        let mut wheel = TimerWheel::new(0);
        let old = wheel.insert(10, 1);
        assert!(wheel.cancel(old));
        let new = wheel.insert(10, 2);
        assert_eq!(new.index, old.index, "slab slot is reused");
        assert!(!wheel.cancel(old));
        assert_eq!(wheel.len(), 1);
        assert!(wheel.cancel(new));
    }

    #[test]
    fn time_going_backwards_is_ignored() {
        let mut wheel = TimerWheel::new(1_000);
        wheel.insert(1_500, 1);
        assert_eq!(expect_fired(&mut wheel, 2_000), vec![1]);
        wheel.insert(1_800, 2);
        assert_eq!(expect_fired(&mut wheel, 1_000), vec![2]);
    }

    #[test]
    fn next_deadline_is_exact_across_levels() {
        let mut wheel = TimerWheel::new(0);
        for deadline_ms in [5_000_000, 77, 640, 3_000_000_000] {
            wheel.insert(deadline_ms, deadline_ms);
        }
        let mut fired = Vec::new();
        while let Some(next_ms) = wheel.next_deadline_ms() {
            let before = fired.len();
            wheel.advance(next_ms, &mut fired);
            assert_eq!(fired.len(), before + 1, "no spurious wake-up at {next_ms}");
            assert_eq!(fired[before], next_ms);
        }
        assert_eq!(fired, vec![77, 640, 5_000_000, 3_000_000_000]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64),
        Cancel(usize),
        Advance(u64),
    }

    /// Offsets from "now" spanning the current tick up to past the overflow horizon.
    fn offset_ms() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..30,
            0u64..2_000,
            0u64..200_000,
            0u64..20_000_000,
            0u64..2_000_000_000_000,
        ]
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => offset_ms().prop_map(Op::Insert),
            1 => any::<usize>().prop_map(Op::Cancel),
            3 => offset_ms().prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Differential test against a `BTreeMap` of pending (deadline, key) pairs: the same
        /// keys fire at the same `advance`, never early, never twice, never after cancel.
        #[test]
        fn matches_btreemap_oracle(
            start_ms in 0u64..1_000_000_000_000,
            ops in prop::collection::vec(op_strategy(), 0..200),
        ) {
            let mut wheel = TimerWheel::new(start_ms);
            let mut oracle: BTreeMap<(u64, u64), ()> = BTreeMap::new();
            let mut ids = Vec::new();
            let mut now_ms = start_ms;
            for (key, op) in (0u64..).zip(ops) {
                match op {
                    Op::Insert(offset) => {
                        // Half the inserts land in the past relative to now.
                        let deadline_ms = if offset % 2 == 0 { now_ms + offset } else { now_ms.saturating_sub(offset) };
                        ids.push((wheel.insert(deadline_ms, key), deadline_ms, key));
                        oracle.insert((deadline_ms, key), ());
                    }
                    Op::Cancel(pick) if !ids.is_empty() => {
                        let (id, deadline_ms, key) = ids[pick % ids.len()];
                        let pending = oracle.remove(&(deadline_ms, key)).is_some();
                        prop_assert_eq!(wheel.cancel(id), pending);
                    }
                    Op::Cancel(_) => {}
                    Op::Advance(offset) => {
                        now_ms += offset;
                        let fired = expect_fired(&mut wheel, now_ms);
                        let still_pending = oracle.split_off(&(now_ms + 1, 0));
                        let mut expected: Vec<u64> = oracle.keys().map(|&(_, key)| key).collect();
                        expected.sort_unstable();
                        oracle = still_pending;
                        prop_assert_eq!(fired, expected, "advance to {}", now_ms);
                    }
                }
                prop_assert_eq!(wheel.len(), oracle.len());
                let earliest_ms = oracle.keys().next().map(|&(deadline_ms, _)| deadline_ms);
                match (wheel.next_deadline_ms(), earliest_ms) {
                    (Some(bound_ms), Some(earliest_ms)) => prop_assert!(bound_ms <= earliest_ms),
                    (bound, earliest) => prop_assert_eq!(bound, earliest),
                }
            }
        }
    }
}
