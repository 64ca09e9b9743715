//! The memory a journal's shadow holds per subscription of a persistent session: 100,000
//! subscriptions added as their records add them, one to each of 100,000 sessions and ten
//! to each of 10,000, and the bytes the thread holds afterwards beyond the sessions'.
//!
//! The bytes are counted per thread (`thread_bytes`: requested sizes, which the
//! allocator's size classes round up), so the test harness's own threads cannot disturb
//! the figures.

use std::borrow::Cow;

use shardmq::store::{LiveState, Record, Subscription};

mod shadow_fill;
mod thread_bytes;

use shadow_fill::{client_id, create_sessions};

#[global_allocator]
static GLOBAL: thread_bytes::Counting = thread_bytes::Counting;

const SUBSCRIPTIONS: usize = 100_000;

/// A shadow holding `sessions` persistent sessions, as their records create them.
fn with_sessions(sessions: usize) -> LiveState {
    let mut state = LiveState::default();
    create_sessions(&mut state, sessions);
    state
}

/// Subscription `k` of session `n`: a filter of 15 to 23 bytes; every fifth one of a
/// session shared in a group of 6 bytes.
fn subscription(n: usize, k: usize) -> Subscription<'static> {
    Subscription {
        share_group: (k % 5 == 4).then(|| Cow::Owned(format!("grp-{:02}", k % 100))),
        filter: Cow::Owned(format!("devices/{n}/cmd/{k}")),
        qos: 1,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
        identifier: None,
    }
}

/// The bytes the shadow's thread holds more per subscription after `per_session`
/// subscriptions were added to each of `SUBSCRIPTIONS / per_session` sessions, in
/// descending order (each new one sorts first among its session's).
fn held_per_subscription(per_session: usize) -> isize {
    let sessions = SUBSCRIPTIONS / per_session;
    let mut state = with_sessions(sessions);
    let grown = thread_bytes::growth_after(|| {
        for k in (0..per_session).rev() {
            for n in 0..sessions {
                state.apply(Record::SubscriptionAdded {
                    client_id: Cow::Borrowed(&client_id(n)),
                    sub: subscription(n, k),
                });
            }
        }
    });
    let held: usize = state
        .sessions
        .iter()
        .map(|(_, s)| s.subscriptions.len())
        .sum();
    assert_eq!(held, SUBSCRIPTIONS);
    grown / SUBSCRIPTIONS as isize
}

#[test]
fn the_shadow_holds_a_subscription_in_about_its_own_bytes() {
    let one = held_per_subscription(1);
    let ten = held_per_subscription(10);
    println!(
        "shadow, {SUBSCRIPTIONS} subscriptions: {one} B a subscription with one a session, \
         {ten} B with ten a session"
    );
    // In a `BTreeMap` keyed by a copy of (group, filter), a subscription took 1,292 B
    // here with one a session (a leaf node of 11 entries for one) and 171 B with ten; in
    // a sorted `Vec` of 40 B entries holding group and filter in one boxed string, 58 B
    // and 71 B (the `Vec` grows by half: 13 entries for ten).
    assert!(one <= 80, "{one} B a subscription, one a session");
    assert!(ten <= 100, "{ten} B a subscription, ten a session");
}
