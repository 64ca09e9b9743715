//! The cross-shard bus: one bounded SPSC ring per ordered pair of shards, plus a doorbell.
//!
//! Owns: moving messages between shard threads; it is generic over the message type `M`
//! and knows nothing of what the messages mean. Invariants: per ordered pair of shards
//! messages arrive in the order sent; a peer's doorbell (its `mio::Waker`) is rung only when
//! a push found its ring empty, so a busy peer is never woken per message; a full ring never
//! blocks the sender: messages wait in a local staging queue and the sender stops reading
//! its sockets until they drain (backpressure, not memory growth). Must not touch: MQTT.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod spsc;

use std::collections::VecDeque;
use std::sync::Arc;

/// Slots per ring.
pub const RING_SLOTS: usize = 4096;
/// Messages taken from one inbound ring per turn.
pub const DRAIN_PER_PEER_MAX: usize = 1024;
/// Capacity (messages) a staging queue keeps once it has drained: a burst that staged
/// more (100,000 subscriptions make as many interest casts) gives the rest back.
pub const STAGING_IDLE_CAPACITY_MAX: usize = 1024;

/// Ring producer toward one peer.
type Tx<M> = spsc::Producer<M>;
/// Ring consumer from one peer.
type Rx<M> = spsc::Consumer<M>;

/// One shard's ends of the mesh.
pub struct Bus<M: Send> {
    id: usize,
    outs: Vec<Option<Tx<M>>>,
    ins: Vec<Option<Rx<M>>>,
    staging: Vec<VecDeque<M>>,
    wakers: Arc<Vec<Arc<mio::Waker>>>,
    staged: usize,
}

impl<M: Send> std::fmt::Debug for Bus<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("id", &self.id)
            .field("staged", &self.staged)
            .finish()
    }
}

/// Build the full mesh for `wakers.len()` shards; element `i` belongs to shard `i`.
pub fn mesh<M: Send>(wakers: Arc<Vec<Arc<mio::Waker>>>) -> Vec<Bus<M>> {
    let n = wakers.len();
    let mut outs: Vec<Vec<Option<Tx<M>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut ins: Vec<Vec<Option<Rx<M>>>> = (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    for from in 0..n {
        for to in 0..n {
            if from != to {
                let (p, c) = spsc::channel(RING_SLOTS);
                outs[from][to] = Some(p);
                ins[to][from] = Some(c);
            }
        }
    }
    outs.into_iter()
        .zip(ins)
        .enumerate()
        .map(|(id, (outs, ins))| Bus {
            id,
            outs,
            ins,
            staging: (0..n).map(|_| VecDeque::new()).collect(),
            wakers: wakers.clone(),
            staged: 0,
        })
        .collect()
}

impl<M: Send> Bus<M> {
    /// Queue `msg` for shard `to` (sent by `flush`).
    pub fn send(&mut self, to: usize, msg: M) {
        debug_assert_ne!(to, self.id);
        if let Some(q) = self.staging.get_mut(to) {
            q.push_back(msg);
            self.staged += 1;
        }
    }

    /// Messages staged but not yet in a ring.
    pub fn staged(&self) -> usize {
        self.staged
    }

    /// Load toward peer `to`: (messages in its ring as the producer last saw it, an upper
    /// bound; messages staged for it).
    pub fn peer_load(&self, to: usize) -> (usize, usize) {
        let ring = self.outs.get(to).and_then(Option::as_ref);
        let depth = ring.map_or(0, |p| p.capacity() - p.free_slots());
        (depth, self.staging.get(to).map_or(0, VecDeque::len))
    }

    /// Move staged messages into the rings, then ring each peer that was found idle.
    pub fn flush(&mut self) {
        if self.staged == 0 {
            return;
        }
        for to in 0..self.staging.len() {
            let Some(out) = self.outs[to].as_mut() else {
                continue;
            };
            let mut ring = false;
            while let Some(msg) = self.staging[to].pop_front() {
                match out.push(msg) {
                    Ok(was_empty) => {
                        ring |= was_empty;
                        self.staged -= 1;
                    }
                    Err(msg) => {
                        self.staging[to].push_front(msg);
                        ring = true;
                        break;
                    }
                }
            }
            let q = &mut self.staging[to];
            if q.is_empty() && q.capacity() > STAGING_IDLE_CAPACITY_MAX {
                q.shrink_to(STAGING_IDLE_CAPACITY_MAX);
            }
            if ring {
                // A failed wake leaves the peer to its poll timeout; it cannot lose messages.
                let _ = self.wakers[to].wake();
            }
        }
    }

    /// Take up to `DRAIN_PER_PEER_MAX` messages from every inbound ring. Returns true if a
    /// ring may still hold messages: the caller must not sleep then, because its peers ring
    /// the doorbell only when they find a ring empty.
    pub fn drain(&mut self, out: &mut Vec<M>) -> bool {
        let mut more = false;
        for rx in self.ins.iter_mut().flatten() {
            more |= rx.pop_batch(out, DRAIN_PER_PEER_MAX) == DRAIN_PER_PEER_MAX;
        }
        more
    }
}
