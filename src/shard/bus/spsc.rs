//! Bounded single-producer single-consumer ring: one per ordered pair of shards.
//!
//! **Owns** a fixed array of slots plus two monotonically increasing indices: `tail` (written
//! only by the [`Producer`]) and `head` (written only by the [`Consumer`]). Slot `i & mask`
//! holds an initialised value exactly when `head <= i < tail` (wrapping arithmetic).
//!
//! **Invariant kept:** `0 <= tail - head <= capacity`; every value pushed is popped or dropped
//! exactly once; each index lives in its own 128-byte block so the two shards do not bounce a
//! cache line on every operation, and each side caches the other's index so it reads the
//! shared line only when its cached view says "full" (producer) or "empty" (consumer).
//!
//! **Doorbell rule:** the consumer drains until [`Consumer::pop`] returns `None` (or
//! [`Consumer::pop_batch`] returns 0, or [`Consumer::is_empty`] returns `true`) and may then
//! sleep; [`Producer::push`] returns `Ok(true)` when the caller must ring the consumer's
//! doorbell. Both sides put a `SeqCst` fence between their own index store and their load of
//! the other index (a Dekker pattern), so at least one of them sees the other: either the
//! consumer sees the new item and does not sleep, or the producer sees an empty queue and
//! rings. `Ok(true)` may be spurious (one extra wake), never missing. The doorbell itself
//! must be level-triggered like an eventfd: a ring that lands between the consumer's last
//! empty check and its `epoll_wait` must still wake it. See `docs/decisions/0003-bus-spsc.md`.
//!
//! **Must not touch:** MQTT, mio, sockets or threads. This file and `shard/ring.rs` are the
//! only places in the crate allowed `unsafe`.

use std::cell::{Cell, UnsafeCell};
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Largest capacity [`channel`] accepts, in slots. A bus ring this large is a design error
/// (backpressure belongs upstream), so asking for more panics instead of allocating.
pub const CAPACITY_SLOTS_MAX: usize = 1 << 24;

/// The index the producer writes, alone on its own pair of cache lines (128 bytes covers the
/// adjacent-line prefetcher on x86 and the 128-byte lines of some ARM cores).
#[repr(align(128))]
struct ProducerIndex {
    tail: AtomicUsize,
}

/// The index the consumer writes, plus its liveness flag, alone on its own cache lines.
#[repr(align(128))]
struct ConsumerIndex {
    head: AtomicUsize,
    alive: AtomicBool,
}

/// State shared by the two ends. Freed when the second end is dropped.
struct Shared<T> {
    producer: ProducerIndex,
    consumer: ConsumerIndex,
    mask: usize,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
}

// SAFETY: the slots are only accessed under the SPSC protocol: the producer writes slot
// `tail & mask` before publishing `tail` with Release, the consumer reads slot `head & mask`
// only after observing `tail > head` with Acquire and publishes `head` with Release before
// the producer may reuse the slot. So each slot has one accessor at a time, and values of
// type `T: Send` move from one thread to the other, which is what `Send` permits.
unsafe impl<T: Send> Sync for Shared<T> {}
// SAFETY: `Shared<T>` owns `T` values and hands them to whichever thread pops them; moving
// that ownership across threads is allowed for `T: Send`.
unsafe impl<T: Send> Send for Shared<T> {}

impl<T> Shared<T> {
    fn capacity(&self) -> usize {
        self.mask + 1
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // `&mut self`: both ends are gone, so no concurrent access; plain loads suffice.
        let head = *self.consumer.head.get_mut();
        let tail = *self.producer.tail.get_mut();
        debug_assert!(tail.wrapping_sub(head) <= self.capacity());
        let mut index = head;
        while index != tail {
            let slot = self.slots[index & self.mask].get_mut();
            // SAFETY: slots in `head..tail` hold initialised values (module invariant) that
            // nobody popped; each is visited once here and never again, so each is dropped
            // exactly once.
            unsafe { slot.assume_init_drop() };
            index = index.wrapping_add(1);
        }
    }
}

/// The sending end. `Send`, not `Sync`, not `Clone`: exactly one thread pushes.
///
/// ```compile_fail
/// fn shared_between_threads<T: Sync>(_: &T) {}
/// let (producer, _consumer) = shardmq::shard::bus::spsc::channel::<u64>(4);
/// shared_between_threads(&producer); // `Producer` is not `Sync`
/// ```
pub struct Producer<T: Send> {
    shared: Arc<Shared<T>>,
    /// Our own `tail`; the atomic copy is only for the consumer.
    tail: usize,
    /// Last `head` we read; `head` only grows, so this under-reports free slots.
    head_cached: usize,
    _not_sync: PhantomData<Cell<()>>,
}

/// The receiving end. `Send`, not `Sync`, not `Clone`: exactly one thread pops.
pub struct Consumer<T: Send> {
    shared: Arc<Shared<T>>,
    /// Our own `head`; the atomic copy is only for the producer.
    head: usize,
    /// Last `tail` we read; `tail` only grows, so this under-reports available items.
    tail_cached: usize,
    _not_sync: PhantomData<Cell<()>>,
}

/// Create a ring with room for `capacity` values, rounded up to a power of two (at least 2).
///
/// # Panics
/// If `capacity` exceeds [`CAPACITY_SLOTS_MAX`].
pub fn channel<T: Send>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    assert!(
        capacity <= CAPACITY_SLOTS_MAX,
        "spsc capacity {capacity} exceeds {CAPACITY_SLOTS_MAX}"
    );
    let capacity = capacity.max(2).next_power_of_two();
    let slots = (0..capacity)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    let shared = Arc::new(Shared {
        producer: ProducerIndex {
            tail: AtomicUsize::new(0),
        },
        consumer: ConsumerIndex {
            head: AtomicUsize::new(0),
            alive: AtomicBool::new(true),
        },
        mask: capacity - 1,
        slots,
    });
    let producer = Producer {
        shared: Arc::clone(&shared),
        tail: 0,
        head_cached: 0,
        _not_sync: PhantomData,
    };
    let consumer = Consumer {
        shared,
        head: 0,
        tail_cached: 0,
        _not_sync: PhantomData,
    };
    (producer, consumer)
}

impl<T: Send> Producer<T> {
    /// Push one value.
    ///
    /// `Ok(was_empty)`: `was_empty == true` means the consumer may be about to sleep, or is
    /// asleep, on an empty queue, so the caller must ring the peer's doorbell. It may be a
    /// spurious `true` (an extra wake) but is never a missed one. `Err(value)` hands the
    /// value back when the ring is full.
    pub fn push(&mut self, value: T) -> Result<bool, T> {
        let shared = &*self.shared;
        let tail = self.tail;
        if tail.wrapping_sub(self.head_cached) == shared.capacity() {
            // Acquire pairs with the consumer's Release store of `head`: its reads of the
            // slots it freed happen-before our overwrite of them.
            self.head_cached = shared.consumer.head.load(Ordering::Acquire);
            if tail.wrapping_sub(self.head_cached) == shared.capacity() {
                return Err(value);
            }
        }
        let slot = shared.slots[tail & shared.mask].get();
        // SAFETY: `tail - head <= capacity - 1` (checked above against a `head` that can only
        // have grown since), so slot `tail & mask` is outside `head..tail`: it holds no value
        // and the consumer will not read it until we publish `tail + 1` below. We are the only
        // producer (`Producer` is neither `Clone` nor `Sync` and `push` takes `&mut self`).
        unsafe { (*slot).write(value) };
        let new_tail = tail.wrapping_add(1);
        self.tail = new_tail;
        // Release publishes the slot write to the consumer's Acquire load of `tail`.
        shared.producer.tail.store(new_tail, Ordering::Release);
        // Dekker fence, producer half: orders the `tail` store above before the `head` load
        // below. Paired with the fence in `Consumer::observe_tail`. In the single
        // total order of SeqCst fences either ours comes first, and the consumer's later load
        // of `tail` sees `new_tail` (it will not sleep), or the consumer's comes first, and our
        // load of `head` sees the consumer's final `head` store before it sleeps. In the second
        // case the first push the consumer missed finds `head == its old tail` and rings.
        fence(Ordering::SeqCst);
        // Acquire, not Relaxed: this `head` becomes `head_cached`, which later pushes trust
        // to overwrite the slots below it without reading `head` again, so the consumer's
        // reads of those slots must happen-before those writes (the same pairing as the
        // full path above). Relaxed was a data race on the slot that Miri found
        // (`consumer_woken_only_on_was_empty_never_hangs`); an ordinary load on x86.
        let head = shared.consumer.head.load(Ordering::Acquire);
        self.head_cached = head;
        // `head == tail` means the consumer had taken everything before our value: it may have
        // checked "empty" and gone to sleep. Stale reads can only make `head` look smaller, which
        // would give `false`; the fence rules out the stale read that matters (see above).
        Ok(head == tail)
    }

    /// Free slots as last seen; may under-report because it uses the cached consumer index.
    pub fn free_slots(&self) -> usize {
        self.shared.capacity() - self.tail.wrapping_sub(self.head_cached)
    }

    /// Total slots in the ring (a power of two).
    pub fn capacity(&self) -> usize {
        self.shared.capacity()
    }

    /// `false` once the [`Consumer`] has been dropped; pushed values are then only dropped.
    pub fn is_consumer_alive(&self) -> bool {
        self.shared.consumer.alive.load(Ordering::Acquire)
    }
}

impl<T: Send> Consumer<T> {
    /// Pop the oldest value, or `None` when the ring is empty.
    ///
    /// After `None` the consumer may sleep on its doorbell: the check includes the Dekker
    /// fence that pairs with [`Producer::push`].
    pub fn pop(&mut self) -> Option<T> {
        if self.head == self.tail_cached && self.observe_tail() == 0 {
            return None;
        }
        let value = self.take_slot(self.head);
        self.head = self.head.wrapping_add(1);
        // Release: our read of the slot happens-before the producer's reuse of it.
        self.shared
            .consumer
            .head
            .store(self.head, Ordering::Release);
        Some(value)
    }

    /// Pop up to `max` values into `out`, oldest first; returns how many were popped.
    ///
    /// Reads the producer's index at most once per batch (more only on the empty path) and
    /// publishes `head` once. A return of 0 with `max > 0` is a safe point to sleep, like
    /// `pop` returning `None`.
    pub fn pop_batch(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        if max == 0 {
            return 0;
        }
        let mut available = self.tail_cached.wrapping_sub(self.head);
        if available < max {
            available = self.observe_tail();
        }
        let count = available.min(max);
        if count == 0 {
            return 0;
        }
        out.reserve(count);
        for offset in 0..count {
            out.push(self.take_slot(self.head.wrapping_add(offset)));
        }
        self.head = self.head.wrapping_add(count);
        self.shared
            .consumer
            .head
            .store(self.head, Ordering::Release);
        count
    }

    /// `true` when nothing is waiting. Like `pop` returning `None`, a `true` here is a safe
    /// point to sleep on the doorbell.
    pub fn is_empty(&self) -> bool {
        let shared = &*self.shared;
        if self.head != self.tail_cached {
            return false;
        }
        if shared.producer.tail.load(Ordering::Acquire) != self.head {
            return false;
        }
        fence(Ordering::SeqCst);
        shared.producer.tail.load(Ordering::Acquire) == self.head
    }

    /// Total slots in the ring (a power of two).
    pub fn capacity(&self) -> usize {
        self.shared.capacity()
    }

    /// Refresh `tail_cached` and return how many values are available. When the first read
    /// says "empty", re-read after the Dekker fence so that an empty answer is safe to sleep
    /// on (see `Producer::push`). Our `head` store (from the previous pop) precedes the fence.
    fn observe_tail(&mut self) -> usize {
        let shared = &*self.shared;
        // Acquire pairs with the producer's Release store: slot writes become visible.
        self.tail_cached = shared.producer.tail.load(Ordering::Acquire);
        if self.tail_cached == self.head {
            // Dekker fence, consumer half; see the comment in `Producer::push`.
            fence(Ordering::SeqCst);
            self.tail_cached = shared.producer.tail.load(Ordering::Acquire);
        }
        let available = self.tail_cached.wrapping_sub(self.head);
        debug_assert!(available <= shared.capacity());
        available
    }

    /// Move the value out of slot `index`. Caller guarantees `head <= index < tail_cached`
    /// and advances `head` past it afterwards.
    fn take_slot(&self, index: usize) -> T {
        debug_assert!(index.wrapping_sub(self.head) < self.tail_cached.wrapping_sub(self.head));
        let slot = self.shared.slots[index & self.shared.mask].get();
        // SAFETY: `head <= index < tail_cached <= tail`, and `tail_cached` was read with
        // Acquire, so the producer's write of this slot happened-before this read and the slot
        // is initialised. The producer will not touch it until we publish a `head` beyond
        // `index`, and our caller advances `head` so it is never read twice.
        unsafe { (*slot).assume_init_read() }
    }
}

impl<T: Send> Drop for Consumer<T> {
    fn drop(&mut self) {
        // Drop what is queued now rather than when the producer goes away; anything pushed
        // after this is dropped by `Shared::drop`.
        self.shared.consumer.alive.store(false, Ordering::Release);
        while self.pop().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;
    use std::sync::{Condvar, Mutex};
    use std::time::{Duration, Instant};

    /// Counts drops so tests can assert "exactly once".
    struct DropCounter(Arc<AtomicUsize>);

    impl Drop for DropCounter {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn expect_push<T: Send>(producer: &mut Producer<T>, value: T) -> bool {
        match producer.push(value) {
            Ok(was_empty) => was_empty,
            Err(_) => panic!("expected push to succeed, ring was full"),
        }
    }

    #[test]
    fn capacity_rounds_up_to_power_of_two_at_least_two() {
        for (asked, got) in [(0, 2), (1, 2), (2, 2), (3, 4), (4, 4), (5, 8), (1000, 1024)] {
            let (producer, consumer) = channel::<u8>(asked);
            assert_eq!(producer.capacity(), got, "asked {asked}");
            assert_eq!(consumer.capacity(), got, "asked {asked}");
            assert_eq!(producer.free_slots(), got);
        }
    }

    #[test]
    #[should_panic(expected = "exceeds")]
    fn capacity_above_max_panics() {
        let _ = channel::<u8>(CAPACITY_SLOTS_MAX + 1);
    }

    #[test]
    fn full_ring_hands_value_back_and_fifo_holds() {
        let (mut producer, mut consumer) = channel(4);
        for value in 0..4 {
            expect_push(&mut producer, value);
        }
        assert_eq!(producer.push(99), Err(99));
        assert_eq!(producer.free_slots(), 0);
        assert_eq!(consumer.pop(), Some(0));
        expect_push(&mut producer, 4);
        let mut out = Vec::new();
        assert_eq!(consumer.pop_batch(&mut out, 10), 4);
        assert_eq!(out, vec![1, 2, 3, 4]);
        assert_eq!(consumer.pop(), None);
        assert!(consumer.is_empty());
    }

    #[test]
    fn was_empty_is_true_only_on_empty_to_non_empty() {
        let (mut producer, mut consumer) = channel(8);
        assert!(expect_push(&mut producer, 1));
        assert!(!expect_push(&mut producer, 2));
        assert_eq!(consumer.pop(), Some(1));
        assert!(!expect_push(&mut producer, 3));
        assert_eq!(consumer.pop(), Some(2));
        assert_eq!(consumer.pop(), Some(3));
        assert!(expect_push(&mut producer, 4));
    }

    #[test]
    fn pop_batch_respects_max_and_zero() {
        let (mut producer, mut consumer) = channel(8);
        for value in 0..6 {
            expect_push(&mut producer, value);
        }
        let mut out = Vec::new();
        assert_eq!(consumer.pop_batch(&mut out, 0), 0);
        assert_eq!(consumer.pop_batch(&mut out, 4), 4);
        assert_eq!(consumer.pop_batch(&mut out, 4), 2);
        assert_eq!(consumer.pop_batch(&mut out, 4), 0);
        assert_eq!(out, vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn zero_sized_values_are_counted() {
        let (mut producer, mut consumer) = channel::<()>(2);
        expect_push(&mut producer, ());
        expect_push(&mut producer, ());
        assert_eq!(producer.push(()), Err(()));
        assert_eq!(consumer.pop(), Some(()));
        assert_eq!(consumer.pop(), Some(()));
        assert_eq!(consumer.pop(), None);
    }

    #[test]
    fn dropping_consumer_first_drops_queued_and_later_values_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut producer, mut consumer) = channel(8);
        for _ in 0..5 {
            expect_push(&mut producer, DropCounter(Arc::clone(&drops)));
        }
        drop(consumer.pop());
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(producer.is_consumer_alive());
        drop(consumer);
        assert!(!producer.is_consumer_alive());
        assert_eq!(drops.load(Ordering::SeqCst), 5);
        expect_push(&mut producer, DropCounter(Arc::clone(&drops)));
        assert_eq!(drops.load(Ordering::SeqCst), 5);
        drop(producer);
        assert_eq!(drops.load(Ordering::SeqCst), 6);
    }

    #[test]
    fn dropping_producer_first_keeps_values_for_consumer_then_drops_rest_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut producer, mut consumer) = channel(8);
        // Wrap around the ring so the remaining values straddle the end of the slot array.
        for round in 0..4 {
            for _ in 0..3 {
                expect_push(&mut producer, DropCounter(Arc::clone(&drops)));
            }
            for _ in 0..2 {
                drop(consumer.pop().expect("value"));
            }
            assert_eq!(drops.load(Ordering::SeqCst), 2 * (round + 1));
        }
        drop(producer);
        assert_eq!(drops.load(Ordering::SeqCst), 8);
        drop(consumer.pop().expect("value survives producer drop"));
        assert_eq!(drops.load(Ordering::SeqCst), 9);
        drop(consumer);
        assert_eq!(drops.load(Ordering::SeqCst), 12);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u32),
        Pop,
        PopBatch(usize),
        IsEmpty,
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u32>().prop_map(Op::Push),
            2 => Just(Op::Pop),
            1 => (0usize..12).prop_map(Op::PopBatch),
            1 => Just(Op::IsEmpty),
        ]
    }

    proptest! {
        // Miri interprets proptest's machinery too: a few cases still reach every path. Its
        // isolation has no file system, so no failure file is read or written there.
        #![proptest_config(if cfg!(miri) {
            ProptestConfig { cases: 4, failure_persistence: None, ..ProptestConfig::default() }
        } else {
            ProptestConfig::default()
        })]

        /// Single-threaded differential test against `VecDeque` with the same capacity.
        #[test]
        fn matches_vecdeque(capacity in 0usize..20, ops in prop::collection::vec(op_strategy(), 0..300)) {
            let (mut producer, mut consumer) = channel(capacity);
            let capacity = producer.capacity();
            let mut model = VecDeque::new();
            let mut out = Vec::new();
            for op in ops {
                match op {
                    Op::Push(value) => {
                        let expected = if model.len() == capacity {
                            Err(value)
                        } else {
                            let was_empty = model.is_empty();
                            model.push_back(value);
                            Ok(was_empty)
                        };
                        prop_assert_eq!(producer.push(value), expected);
                    }
                    Op::Pop => prop_assert_eq!(consumer.pop(), model.pop_front()),
                    Op::PopBatch(max) => {
                        out.clear();
                        let count = consumer.pop_batch(&mut out, max);
                        let expected: Vec<u32> = model.drain(..max.min(model.len())).collect();
                        prop_assert_eq!(count, expected.len());
                        prop_assert_eq!(&out, &expected);
                    }
                    Op::IsEmpty => prop_assert_eq!(consumer.is_empty(), model.is_empty()),
                }
                prop_assert!(producer.free_slots() <= capacity - model.len());
            }
        }
    }

    /// A hang detector, not a performance bound: generous for loaded CI machines (and for
    /// Miri, whose clock is virtual but counts its slow steps).
    const STRESS_TIME_MAX: Duration = Duration::from_secs(60);

    /// Scale a thread test's count down under Miri (`cargo +nightly miri test --lib spsc`),
    /// which interprets every step: thousands of values still interleave the two threads
    /// many times under its preemptive scheduler.
    const fn scaled(native: u64, miri: u64) -> u64 {
        if cfg!(miri) {
            miri
        } else {
            native
        }
    }

    /// Two threads, about a million values through a small ring: FIFO and exactly-once.
    #[test]
    fn cross_thread_stress_is_fifo_and_exactly_once() {
        const ITEMS: u64 = scaled(1 << 20, 2_000);
        let (mut producer, mut consumer) = channel::<u64>(64);
        let started = Instant::now();
        let sender = std::thread::spawn(move || {
            let mut next = 0;
            while next < ITEMS {
                match producer.push(next) {
                    Ok(_) => next += 1,
                    Err(_) => {
                        assert!(started.elapsed() < STRESS_TIME_MAX, "producer stuck");
                        std::thread::yield_now();
                    }
                }
            }
        });
        let mut expected = 0;
        let mut batch = Vec::with_capacity(32);
        while expected < ITEMS {
            // Alternate single pops and batches so both paths see concurrent pushes.
            if expected % 3 == 0 {
                if let Some(value) = consumer.pop() {
                    assert_eq!(value, expected);
                    expected += 1;
                    continue;
                }
            } else {
                batch.clear();
                consumer.pop_batch(&mut batch, 32);
                for &value in &batch {
                    assert_eq!(value, expected);
                    expected += 1;
                }
                if !batch.is_empty() {
                    continue;
                }
            }
            assert!(
                started.elapsed() < STRESS_TIME_MAX,
                "consumer stuck at {expected}"
            );
            // Yield rather than spin: on a loaded 2-core CI machine a spinning side steals
            // the time slice the other side needs.
            std::thread::yield_now();
        }
        sender.join().expect("producer thread");
        assert_eq!(consumer.pop(), None);
    }

    /// Owned, heap-allocated values cross the ring while both ends run, and the consumer
    /// goes away mid-stream while the producer is still pushing: every value is dropped
    /// exactly once (popped, handed back by a full ring, or left in the ring) and the
    /// popped ones arrive in order. Under Miri and AddressSanitizer (`scripts/asan`) a slot
    /// read twice, read before its write, or freed while in use is reported as an error.
    #[test]
    fn owned_values_cross_threads_and_a_mid_stream_consumer_drop_drops_each_once() {
        const ITEMS: u64 = scaled(100_000, 600);
        const TAKEN: u64 = ITEMS / 2;
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut producer, mut consumer) = channel::<Box<(u64, DropCounter)>>(8);
        let started = Instant::now();
        let producer_drops = Arc::clone(&drops);
        let sender = std::thread::spawn(move || {
            // How many values were made; each is pushed, or dropped here once refused.
            let mut made = 0;
            'values: while made < ITEMS {
                let mut value = Box::new((made, DropCounter(Arc::clone(&producer_drops))));
                made += 1;
                loop {
                    match producer.push(value) {
                        Ok(_) => continue 'values,
                        // Full, and nobody will ever pop again: stop making values.
                        Err(back) if !producer.is_consumer_alive() => {
                            drop(back);
                            break 'values;
                        }
                        Err(back) => value = back,
                    }
                    assert!(started.elapsed() < STRESS_TIME_MAX, "producer stuck");
                    std::thread::yield_now();
                }
            }
            made
        });
        let mut expected = 0;
        let mut batch = Vec::with_capacity(4);
        while expected < TAKEN {
            batch.clear();
            if expected % 2 == 0 {
                batch.extend(consumer.pop());
            } else {
                consumer.pop_batch(&mut batch, (TAKEN - expected).min(4) as usize);
            }
            for value in batch.drain(..) {
                assert_eq!(value.0, expected);
                expected += 1;
            }
            assert!(
                started.elapsed() < STRESS_TIME_MAX,
                "consumer stuck at {expected}"
            );
            std::thread::yield_now();
        }
        drop(consumer);
        let made = sender.join().expect("producer thread");
        assert!(made > TAKEN && made <= ITEMS, "made {made}");
        // The producer (and with it the ring and what it still held) is gone now.
        assert_eq!(drops.load(Ordering::SeqCst) as u64, made);
    }

    /// A level-triggered doorbell, like an eventfd behind a `mio::Waker`.
    #[derive(Default)]
    struct Doorbell {
        rung: Mutex<bool>,
        cv: Condvar,
    }

    impl Doorbell {
        fn ring(&self) {
            *self.rung.lock().expect("doorbell lock") = true;
            self.cv.notify_one();
        }

        /// Sleep until rung; `false` if nobody rang within `timeout` (a lost wake-up).
        fn wait(&self, timeout: Duration) -> bool {
            let rung = self.rung.lock().expect("doorbell lock");
            let (mut rung, _) = self
                .cv
                .wait_timeout_while(rung, timeout, |rung| !*rung)
                .expect("doorbell lock");
            std::mem::replace(&mut *rung, false)
        }
    }

    /// The wake rule: a consumer that sleeps whenever the ring is empty and is woken only
    /// when `push` returns `Ok(true)` must never hang.
    #[test]
    fn consumer_woken_only_on_was_empty_never_hangs() {
        const ROUNDS: usize = scaled(40, 4) as usize;
        const ITEMS: u32 = scaled(4000, 300) as u32;
        // Generous: a lost wake-up hangs forever, so this only bounds how long failing takes.
        let wait_max = Duration::from_secs(10);
        for round in 0..ROUNDS {
            let (mut producer, mut consumer) = channel::<u32>(4);
            let bell = Arc::new(Doorbell::default());
            let producer_bell = Arc::clone(&bell);
            let sender = std::thread::spawn(move || {
                for value in 0..ITEMS {
                    let mut value = value;
                    loop {
                        match producer.push(value) {
                            Ok(true) => producer_bell.ring(),
                            Ok(false) => {}
                            Err(back) => {
                                value = back;
                                std::thread::yield_now();
                                continue;
                            }
                        }
                        break;
                    }
                    if value % 64 == (round as u32 % 64) {
                        std::thread::yield_now();
                    }
                }
            });
            let mut expected = 0;
            while expected < ITEMS {
                while let Some(value) = consumer.pop() {
                    assert_eq!(value, expected);
                    expected += 1;
                }
                if expected == ITEMS {
                    break;
                }
                assert!(
                    bell.wait(wait_max),
                    "lost wake-up: round {round}, consumer asleep at {expected} with {} queued",
                    if consumer.is_empty() {
                        "nothing"
                    } else {
                        "values"
                    }
                );
            }
            sender.join().expect("producer thread");
        }
    }
}
