//! The memory a journal's shadow holds per persistent session: 100,000 sessions created
//! (one subscription each) as the log's records create them, and the bytes the thread
//! holds afterwards. The shadow's table keeps each client id once, in the session
//! (`store::Sessions`: an index of slot numbers, not a map keyed by a copy of the id).
//!
//! The bytes are counted per thread (`thread_bytes`: requested sizes, which the
//! allocator's size classes round up), so the test harness's own threads cannot disturb
//! the figure.

use std::borrow::Cow;

use shardmq::store::{LiveState, Record, Subscription};

mod shadow_fill;
mod thread_bytes;

use shadow_fill::{client_id, create_sessions};

#[global_allocator]
static GLOBAL: thread_bytes::Counting = thread_bytes::Counting;

const SESSIONS: usize = 100_000;

/// One subscription for each of the `SESSIONS` sessions.
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
    thread_bytes::growth_after(f) / SESSIONS as isize
}

#[test]
fn the_shadow_holds_a_session_with_its_client_id_once() {
    let mut state = LiveState::default();
    let sessions = held_per_session(|| create_sessions(&mut state, SESSIONS));
    assert_eq!(state.sessions.len(), SESSIONS);
    let subscribed = held_per_session(|| subscribe_each(&mut state));
    let slot = std::mem::size_of::<shardmq::store::SessionState>();
    println!(
        "shadow, {SESSIONS} sessions: {sessions} B a session ({slot} B a SessionState), \
         {subscribed} B more with one subscription each"
    );
    // Beyond its slot: with the client id held three times (a map from a copy of it to the
    // slot, a second copy in the slot beside the session, the session's own), a session
    // took 627 B here with a 376 B slot (251 B more); held once, 519 B (143 B more: the
    // id, the index and the slot `Vec`'s spare capacity). Measured beyond the slot, so a
    // field added to the session does not move the bound.
    let beyond = sessions - slot as isize;
    assert!(
        beyond <= 200,
        "{sessions} B a session, {beyond} B beyond its slot"
    );
}
