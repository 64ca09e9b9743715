//! Claims the registry answered after their CONNECT gave up (`docs/cluster.md`, the
//! session registry and "A session whose node died").
//!
//! Owns: what the home shard of a client id remembers of such a claim — the node the
//! registry named before it moved the entry here — and the use of it: the client's next
//! CONNECT here, whose claim finds the entry naming this node already and no session
//! here, takes the session over from that node exactly as the first CONNECT would have
//! (the bucket's copy of its subscriptions, then the old node's queue scanned,
//! `reclaim_owed`). Also the CONNECT whose claim finds the entry naming this node with no
//! session here and no record (`complete_lost`): the bucket's copy alone. A node that
//! takes the id over from this one while a record is held gets no state at all (not an
//! empty one, which would make it start a new session): it waits out its handover and
//! takes the bucket's copy (`on_taken_over`; the record is spent).
//!
//! Invariants: a record is used at most once — taken by the first CONNECT of its id
//! whose claim this shard sees answered — so the old node's queue is scanned once for
//! it, whatever the number of retries. It is used only when the registry's answer named
//! this node (no other node claimed the id since), the CONNECT asks for its session
//! (Clean Start 0) and no session of that id lives here; otherwise it is dropped unused,
//! so a node that owns the session, or owned it after the late claim, is never scanned
//! for it. Bounded: `LATE_CLAIMS_MAX` records, each kept `LATE_CLAIM_KEEP_MS`. Held in
//! memory only: a restart of this node forgets them. Must not touch: the link or NATS
//! (only `ToCluster` values, through `reclaim_owed`).

use std::collections::HashMap;

use super::Broker;
use crate::log::Level;
use crate::log_at;
use crate::protocol::Connect;

/// Late claims a shard remembers at once; past it a new one is not kept (logged).
const LATE_CLAIMS_MAX: usize = 1024;
/// How long a late claim waits for its client's retry. Until the retry no node routes
/// the session's filters but the old one, whose interest entries stay while it is dead
/// or cut off, so its queue keeps storing for the session and a later scan copies those
/// messages too: the bound is for memory, not for what the scan may find.
const LATE_CLAIM_KEEP_MS: u64 = 600_000;

/// The node a late claim took a client id from, and until when it is kept.
#[derive(Debug)]
struct LateClaim {
    from: Box<str>,
    until_ms: u64,
}

/// The late claims of one shard, by client id.
#[derive(Debug, Default)]
pub struct LateClaims {
    by_id: HashMap<Box<str>, LateClaim>,
}

impl LateClaims {
    /// Remember that a claim of `client_id` answered too late took it from `from`.
    /// Returns false when the table is full of records still kept (nothing stored).
    pub fn remember(&mut self, client_id: &str, from: &str, now_ms: u64) -> bool {
        if self.by_id.len() >= LATE_CLAIMS_MAX && !self.by_id.contains_key(client_id) {
            self.by_id.retain(|_, l| l.until_ms > now_ms);
            if self.by_id.len() >= LATE_CLAIMS_MAX {
                return false;
            }
        }
        let late = LateClaim {
            from: from.into(),
            until_ms: now_ms + LATE_CLAIM_KEEP_MS,
        };
        self.by_id.insert(client_id.into(), late);
        true
    }

    /// Take `client_id`'s record (it is gone afterwards): the node it names, unless it
    /// outlived `LATE_CLAIM_KEEP_MS`.
    pub fn take(&mut self, client_id: &str, now_ms: u64) -> Option<Box<str>> {
        let late = self.by_id.remove(client_id)?;
        (late.until_ms > now_ms).then_some(late.from)
    }
}

impl<X> Broker<X> {
    /// The registry moved `client_id` to this node from `previous` for a CONNECT that no
    /// longer waits (it gave up at `CLAIM_WAIT_MS`, or its connection closed): keep
    /// `previous` for the client's retry here. An answer naming this node already, or a
    /// failed claim, leaves an earlier record as it is (its retry may come yet).
    pub(super) fn claim_came_late(
        &mut self,
        client_id: &str,
        ok: bool,
        previous: Option<&str>,
        now_ms: u64,
    ) {
        let (true, Some(from)) = (ok, previous) else {
            return;
        };
        if !self.late_claims.remember(client_id, from, now_ms) {
            log_at!(
                Level::Warning,
                "Client {}: the cluster registry moved its session here from node {from} after its CONNECT gave up, and {LATE_CLAIMS_MAX} such claims are kept already: its retry here will not scan that node's queue.",
                client_id.escape_debug()
            );
            return;
        }
        log_at!(
            Level::Notice,
            "Client {}: the cluster registry moved its session here from node {from} after its CONNECT gave up; its next CONNECT here takes it over from there.",
            client_id.escape_debug()
        );
    }

    /// The claim of CONNECT `c` on link `key` (client `id`) found the registry naming
    /// this node already, or nobody, or the client asked for a new session. If it asks
    /// for its session and none is here, an earlier claim of this node moved the entry
    /// here after its CONNECT gave up (the client retried): complete it as that CONNECT
    /// would have — taken over from the node `late` names, or, without a record (this
    /// node restarted since, say), from the bucket's copy of its subscriptions as after a
    /// dead node. Returns whether the CONNECT was completed here.
    pub(super) fn complete_lost(
        &mut self,
        key: usize,
        c: &Connect<'_>,
        id: Option<&str>,
        late: Option<Box<str>>,
        now_ms: u64,
    ) -> bool {
        let backup = id.and_then(|id| self.backups.remove(id));
        let lost = id.is_some_and(|id| self.sessions.find(id).is_none());
        let Some(id) = id.filter(|_| lost && !c.clean_start) else {
            return false;
        };
        if let Some(from) = late {
            self.complete_late_takeover(key, c, id, &from, backup, now_ms);
            return true;
        }
        let Some(b) = backup else {
            return false;
        };
        self.handover_in = Some(b);
        self.complete_connect(key, c, now_ms);
        self.handover_in = None;
        true
    }

    /// The claim of CONNECT `c` on link `key` (client `id`, Clean Start 0, no session
    /// here) found the registry naming this node already, moved here from node `from` by
    /// an earlier claim answered after its CONNECT gave up: complete as that CONNECT
    /// would have, from the bucket's copy `backup`, then scan `from`'s queue.
    fn complete_late_takeover(
        &mut self,
        key: usize,
        c: &Connect<'_>,
        id: &str,
        from: &str,
        backup: Option<Box<super::cluster::SessionHandover>>,
        now_ms: u64,
    ) {
        let subs_known = backup.is_some();
        self.handover_in = backup;
        self.complete_connect(key, c, now_ms);
        self.handover_in = None;
        if subs_known {
            self.reclaim_owed(id, from);
        }
        log_at!(
            Level::Notice,
            "Client {}: its session taken over from cluster node {from} by an earlier claim answered late; {}.",
            id.escape_debug(),
            if subs_known {
                "that node's queue is scanned for it"
            } else {
                "no copy of its subscriptions, so nothing to scan for"
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_taken_once_and_not_after_its_time() {
        let mut late = LateClaims::default();
        assert!(late.remember("x", "b", 0));
        assert_eq!(late.take("x", 1).as_deref(), Some("b"));
        assert_eq!(late.take("x", 2), None, "taken once");
        assert!(late.remember("y", "b", 0));
        assert_eq!(late.take("y", LATE_CLAIM_KEEP_MS), None, "past its time");
        assert!(late.by_id.is_empty());
    }

    #[test]
    fn a_full_table_makes_room_only_from_expired_records() {
        let mut late = LateClaims::default();
        for i in 0..LATE_CLAIMS_MAX {
            assert!(late.remember(&format!("c{i}"), "b", i as u64));
        }
        assert!(!late.remember("new", "b", 10), "full of live records");
        assert!(late.remember("c0", "c", 10), "an id held is replaced");
        assert!(late.remember("new", "b", LATE_CLAIM_KEEP_MS + 5));
        assert_eq!(
            late.by_id.len(),
            LATE_CLAIMS_MAX - 4,
            "c1..c5 expired and went"
        );
    }
}
