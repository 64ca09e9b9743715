//! Persistent sessions put into a journal's shadow as the log's records create them, for
//! the memory tests (`sessions_memory.rs`, `subscriptions_memory.rs`).

use std::borrow::Cow;

use shardmq::store::{LiveState, Record, SessionInfo};

/// A client id of 20 bytes, as devices name themselves.
pub fn client_id(n: usize) -> String {
    format!("device-{n:08}-home")
}

/// Sessions `0..count` (by [`client_id`]) created in `state`, persistent, with no Will.
pub fn create_sessions(state: &mut LiveState, count: usize) {
    for n in 0..count {
        state.apply(Record::SessionCreated(SessionInfo {
            client_id: Cow::Borrowed(&client_id(n)),
            protocol: 4,
            expiry_interval_s: u32::MAX,
            will: None,
        }));
    }
}
