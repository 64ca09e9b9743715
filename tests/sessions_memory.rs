//! The memory a journal's shadow holds per persistent session: 100,000 sessions created
//! (one subscription each) as the log's records create them, and the bytes the thread
//! holds afterwards. The shadow's table keeps each client id once, in the session
//! (`store::Sessions`: an index of slot numbers, not a map keyed by a copy of the id).
//!
//! A counting wrapper around the system allocator keeps the bytes the current thread holds
//! (requested sizes: the allocator's size classes round them up), so the test harness's
//! own threads cannot disturb the figure.

use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::cell::Cell;

use shardmq::store::{LiveState, Record, SessionInfo, Subscription};

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = LIVE.try_with(|live| live.set(live.get() + delta));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is `System`'s; the counter is a const-initialised thread-local
// `Cell` without a destructor, which never allocates.
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

const SESSIONS: usize = 100_000;

/// A client id of 20 bytes, as devices name themselves.
fn client_id(n: usize) -> String {
    format!("device-{n:08}-home")
}

/// `SESSIONS` persistent sessions created in a shadow, as their records create them.
fn create_sessions(state: &mut LiveState) {
    for n in 0..SESSIONS {
        state.apply(Record::SessionCreated(SessionInfo {
            client_id: Cow::Borrowed(&client_id(n)),
            protocol: 4,
            expiry_interval_s: u32::MAX,
            will: None,
        }));
    }
}

/// One subscription for each session of [`create_sessions`].
fn subscribe_each(state: &mut LiveState) {
    for n in 0..SESSIONS {
        state.apply(Record::SubscriptionAdded {
            client_id: Cow::Borrowed(&client_id(n)),
            sub: Subscription {
                share_group: None,
                filter: Cow::Owned(format!("devices/{n}/cmd")),
                qos: 1,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
                identifier: None,
            },
        });
    }
}

/// The bytes a thread holds more after `f` than before it, per session.
fn held_per_session(f: impl FnOnce()) -> isize {
    let before = LIVE.with(Cell::get);
    f();
    (LIVE.with(Cell::get) - before) / SESSIONS as isize
}

#[test]
fn the_shadow_holds_a_session_with_its_client_id_once() {
    let mut state = LiveState::default();
    let sessions = held_per_session(|| create_sessions(&mut state));
    assert_eq!(state.sessions.len(), SESSIONS);
    let subscribed = held_per_session(|| subscribe_each(&mut state));
    let slot = std::mem::size_of::<shardmq::store::SessionState>();
    println!(
        "shadow, {SESSIONS} sessions: {sessions} B a session ({slot} B a SessionState), \
         {subscribed} B more with one subscription each"
    );
    // With the client id held three times (a map from a copy of it to the slot, a second
    // copy in the slot beside the session, the session's own), a session took 627 B here;
    // held once, 519 B (of which the slot, 376 B, times the `Vec`'s spare capacity).
    assert!(sessions <= 560, "{sessions} B a session");
}
