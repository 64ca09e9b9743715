//! A restore's peak memory: handing a recovered state's owned messages over to the
//! references a journal's shadow keeps (`LiveState::share_owned`, what
//! `Broker::restore_from_journal` runs) gives the owned messages' `Vec` back as it empties,
//! so the messages built from it never sit beside the whole of it.
//!
//! A counting wrapper around the system allocator keeps the bytes the current thread holds
//! and their peak, so the test harness's own threads cannot disturb the figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::cell::Cell;
use std::sync::Arc;

use shardmq::store::{LiveState, MessageProps, MsgId, SharedMessage, StoredMessage};

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is `System`'s; the counters are const-initialised thread-local
// `Cell`s without destructors, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: `ptr` came from `System` through `alloc`/`realloc` above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: `ptr` came from `System`; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The bytes `f` held at its peak beyond what the thread held before it.
fn peak_growth_during(f: impl FnOnce()) -> isize {
    let before = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(before));
    f();
    PEAK.with(Cell::get) - before
}

/// A stand-in for the engine's message: the stored form, taken over whole (about the size
/// of an owned entry, as the engine's message is).
struct Built(StoredMessage<'static>);

impl SharedMessage for Built {
    fn stored(&self, expires_at_unix_ms: Option<u64>) -> StoredMessage<'_> {
        StoredMessage {
            expires_at_unix_ms,
            ..self.0.clone()
        }
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }
}

fn message(n: usize) -> StoredMessage<'static> {
    StoredMessage {
        topic: Cow::Owned(format!("sensors/{n}")),
        payload: Cow::Owned(vec![7; 64]),
        qos: 1,
        retain: false,
        expires_at_unix_ms: n.is_multiple_of(3).then_some(1_000 + n as u64),
        props: MessageProps::default(),
        share_id: 0,
    }
}

#[test]
fn sharing_the_restored_messages_gives_the_owned_vec_back_as_it_goes() {
    const N: usize = 100_000;
    let mut state = LiveState::default();
    for n in 0..N {
        state.messages.insert(MsgId(10 + 2 * n as u64), message(n));
    }
    state.messages.shrink_to_fit();
    let expect = state.clone();
    let entry = std::mem::size_of::<(MsgId, StoredMessage<'static>)>() as isize;
    let reference = std::mem::size_of::<(MsgId, Arc<dyn SharedMessage>, Option<u64>)>() as isize;
    let mut order = Vec::with_capacity(N);
    let growth = peak_growth_during(|| {
        let shared = state.share_owned(|id, m| {
            order.push(id);
            Arc::new(Built(m))
        });
        assert!(shared);
    });
    // Held whole, the owned `Vec` (`entry` bytes a message) stayed beside the references
    // and every message built: growth = N × (reference + built). Given back as it goes,
    // each built message takes the room of the entry it came from (the same size, give or
    // take the `Arc`'s counts), so the growth is the references' `Vec` and the counts.
    let whole = N as isize * (reference + entry);
    assert!(
        growth < N as isize * reference + whole / 4,
        "peak growth {growth} B; {whole} B with the owned Vec held whole"
    );
    // The highest id first, every one once, and the same state.
    assert!(order.windows(2).all(|w| w[0] > w[1]));
    assert_eq!(order.len(), N);
    assert_eq!(state.messages.len(), 0);
    assert_eq!(state.shared.len(), N);
    state.own_shared();
    assert_eq!(state, expect);
}
