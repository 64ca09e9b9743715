//! The check of this node's live sessions against the registry when the node is back from
//! a cut-off from NATS, or found itself removed and joined again (`docs/cluster.md`, "A
//! node back from a cut-off").
//!
//! Owns: the link loop's side of the check — whether the node is cut off, the queue
//! messages held meanwhile, the shards' lists of live sessions being gathered — and the
//! task that asks the registry who owns each listed session. Invariant: from the moment
//! the link loop learns that the connection was lost (or that this node was removed) until
//! a check started after the reconnection has reported every listed session the registry
//! gives to another node (`FromLink::Superseded`), no message of this node's queue is
//! passed on; the held ones follow the reports, in order, so a session ended by the check
//! never receives here what its new owner already copied from this node's queue, and
//! cannot hand it over again. Every NATS wait is bounded. Must not touch: the registry
//! (it only reads it; the claims stay the registry workers').
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::super::{kv, FromLink, LinkStats};
use super::{reclaim, Inbound, State, Tag, UNSETTLED_MAX};

/// Longest the link waits for every shard's list of live sessions (a shard answers on
/// its next turn); past it the check runs with the lists that came.
const LIVE_LIST_WAIT_MS: u64 = 5000;
/// Longest the registry lookups of one check run; the sessions not looked up by then are
/// kept as they are.
pub(super) const LIVE_CHECK_WAIT_MS: u64 = 10_000;

/// The check's state in the link loop.
pub(super) struct Recheck {
    /// Cut off (or removed) since the last check that completed: queue messages wait.
    cut_off: bool,
    /// Connections lost so far, as the loop last learnt.
    cutoffs: u64,
    /// A check runs (its lists are being gathered, or the registry asked).
    running: bool,
    /// `cutoffs` when the running check started.
    generation: u64,
    /// Another check is wanted once the running one ends (a removal found meanwhile).
    again: bool,
    /// The lists gathered so far, how many shards are still to send theirs, and until when
    /// the link waits for them.
    lists: Option<(Vec<String>, usize, Instant)>,
    /// Queue messages held meanwhile, in the order they came.
    held: VecDeque<Inbound>,
    /// Where a finished check reports (its generation).
    done: mpsc::Sender<u64>,
}

impl Recheck {
    /// Nothing to check yet; a check's end is reported on `done`. `cutoffs`: the
    /// connections lost before the link loop started (not cut-offs of a running node).
    pub(super) fn new(done: mpsc::Sender<u64>, cutoffs: u64) -> Recheck {
        Recheck {
            cut_off: false,
            cutoffs,
            running: false,
            generation: 0,
            again: false,
            lists: None,
            held: VecDeque::new(),
            done,
        }
    }

    /// When the link stops waiting for the shards' lists, if it waits.
    pub(super) fn lists_due(&self) -> Option<Instant> {
        self.lists.as_ref().map(|l| l.2)
    }
}

impl State {
    /// The connection was lost (`cutoffs`: the count of losses now), or this node found
    /// itself removed (`None`): hold queue messages until a check after the reconnection.
    pub(super) fn cut_off(&mut self, cutoffs: Option<u64>) {
        if let Some(n) = cutoffs {
            self.recheck.cutoffs = n;
        }
        self.recheck.cut_off = true;
        self.start_check();
    }

    /// Start a check if one is due and NATS is reachable (else at the next connection).
    pub(super) fn start_check(&mut self) {
        let connected = self.client.connection_state() == async_nats::connection::State::Connected;
        let r = &mut self.recheck;
        if !r.cut_off || !connected {
            return;
        }
        if r.running {
            r.again = true;
            return;
        }
        r.running = true;
        r.generation = r.cutoffs;
        if self.shards == 0 {
            // A link without shards (tests of the link alone) has no sessions to list.
            self.ask_registry(Vec::new());
            return;
        }
        let due = Instant::now() + Duration::from_millis(LIVE_LIST_WAIT_MS);
        r.lists = Some((Vec::new(), self.shards, due));
        self.out.push_wake(FromLink::ListSessions);
    }

    /// One shard's live sessions (`ToLink::Live`); ignored when no check gathers lists.
    pub(super) fn live_listed(&mut self, client_ids: Vec<String>) {
        let Some((all, left, _)) = self.recheck.lists.as_mut() else {
            return;
        };
        all.extend(client_ids);
        *left = left.saturating_sub(1);
        if *left == 0 {
            self.lists_done();
        }
    }

    /// Every list came, or the wait for them ended: ask the registry.
    pub(super) fn lists_done(&mut self) {
        if let Some((client_ids, _, _)) = self.recheck.lists.take() {
            self.ask_registry(client_ids);
        }
    }

    fn ask_registry(&self, client_ids: Vec<String>) {
        let js = self.js.clone();
        let [bucket, ..] = kv::bucket_names(&self.cluster);
        let (node, out) = (self.node.clone(), self.out.clone());
        let (done, generation) = (self.recheck.done.clone(), self.recheck.generation);
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_millis(LIVE_CHECK_WAIT_MS);
            let opened = tokio::time::timeout_at(deadline, js.get_key_value(bucket)).await;
            match opened {
                Ok(Ok(sessions)) => {
                    let report = |client_id, owner| FromLink::Superseded { client_id, owner };
                    let counter = &out.stats.superseded;
                    let seen = reclaim::Seen { report, counter };
                    reclaim::owned_elsewhere(&sessions, &node, client_ids, &out, seen, deadline)
                        .await;
                }
                _ => LinkStats::add(&out.stats.nats_errors),
            }
            let _ = done.send(generation).await;
        });
    }

    /// A check ended (started at `generation`): if no connection was lost since and none
    /// is wanted again, pass on the held queue messages, behind its reports.
    pub(super) fn check_done(&mut self, generation: u64) {
        let r = &mut self.recheck;
        r.running = false;
        if generation == r.cutoffs && !r.again {
            r.cut_off = false;
            let held = std::mem::take(&mut r.held);
            for m in held {
                self.inbound(m);
            }
            (self.out.wake)();
            return;
        }
        r.again = false;
        self.start_check();
    }

    /// A message of this node's queue while cut off is held (`None`); anything else, or
    /// past the bound, is given back to be passed on.
    pub(super) fn hold(&mut self, m: Inbound) -> Option<Inbound> {
        let r = &mut self.recheck;
        let queued = matches!(*m.0, Tag::Queued { .. });
        if queued && r.cut_off && r.held.len() < UNSETTLED_MAX {
            r.held.push_back(m);
            return None;
        }
        Some(m)
    }
}
