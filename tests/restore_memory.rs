//! A restore's peak memory: handing a recovered state's owned messages over to the
//! references a journal's shadow keeps (`LiveState::share_owned`, what
//! `Broker::restore_from_journal` runs) gives the owned messages' `Vec` back as it empties,
//! so the messages built from it never sit beside the whole of it.
//!
//! The bytes are counted per thread (`thread_bytes`), so the test harness's own threads
//! cannot disturb the figures.

use std::borrow::Cow;
use std::sync::Arc;

use shardmq::store::{LiveState, MessageProps, MsgId, SharedMessage, StoredMessage};

mod thread_bytes;

use thread_bytes::peak_growth_during;

#[global_allocator]
static GLOBAL: thread_bytes::Counting = thread_bytes::Counting;

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
