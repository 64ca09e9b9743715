//! `Effects`: what one turn of the broker asks of the world outside it.
//!
//! Owns: the casts for other shards (the outbox), the links written to this turn (to be
//! flushed), the links to close at the end of the turn, and the shard's counters.
//! Invariants: a link is on the dirty list at most once (its `dirty` flag says it is), and
//! on the closing list at most once (its state is `Closing` exactly when it is there, or
//! has been and is waiting for the shard to close it, or for its held output: see
//! [`Effects::requeue_closing`]); *this type is the only place that
//! marks a link dirty or closing*, so "who flushes" and "who closes" have one answer.
//! Must not touch: sockets. The event loop (or a simulation) takes these lists after each
//! step and carries them out; a broker function never flushes or closes anything itself.

use super::link::{Link, LinkState};
use super::{Cast, Stats};

/// The broker's requests to the shard, gathered over a turn.
#[derive(Debug, Default)]
pub struct Effects {
    /// Casts for other shards: (destination, message), in the order made.
    pub outbox: Vec<(usize, Cast)>,
    dirty: Vec<usize>,
    closing: Vec<usize>,
    /// Counters of this shard.
    pub stats: Stats,
    /// Messages for this shard's bridges: (bridge index, message), in routing order.
    pub bridge_offers: Vec<(usize, std::sync::Arc<crate::session::Message>)>,
    /// Bridges whose oldest held inbound acknowledgement is durable now, one entry per ack.
    pub bridge_acks: Vec<usize>,
    /// This shard committed a QoS 2 routing since the bridges last looked: a bridge's
    /// queued QoS 2 message may now go (`Broker::qos2_commits`).
    pub bridge_commits_moved: bool,
    /// Bridges whose outbound records are durable now: (the shard's id for the bridge's
    /// run, its record batch).
    pub bridge_durable: Vec<(usize, u64)>,
    /// Password checks for the shard's verifier (answers go to `Broker::on_verified`).
    pub verify: Vec<VerifyRequest>,
    /// Messages for the cluster link, in the order made (only while a cluster runs).
    pub cluster: Vec<super::cluster::ToCluster>,
    /// Links whose input was paused for an answer that has come (the cluster registry):
    /// the shard reads them again.
    pub resume: Vec<usize>,
    /// Shared messages that no member of a matching group could take (no member online
    /// where a message routed fresh was placed: at its routing shard, or at the shard of
    /// the member picked there), or that a session held when it ended: recorded only when
    /// `Some` (the simulation's oracle owes them to nobody). A moved delivery is never
    /// recorded here: where nobody takes it, it goes back to the member it came from.
    pub share_unplaced: Option<Vec<std::sync::Arc<crate::session::Message>>>,
    /// Shared messages placed with a session that is not stored (a clean session's, or
    /// any in memory mode): nothing of them is logged, so a power cut loses them with the
    /// session. Recorded only when `Some` (the simulation's oracle owes such a message to
    /// nobody across a later cut).
    pub share_clean: Option<Vec<std::sync::Arc<crate::session::Message>>>,
    /// What the log did with stored sessions' shared deliveries: each one logged for a
    /// session, and each one logged gone from its session because it moved to another
    /// member, with that record's ticket. Recorded only when `Some` (the simulation's
    /// oracle: a message whose move was durable before a power cut must not reach its
    /// first member again after it).
    pub share_log: Option<Vec<ShareLogNote>>,
}

/// One entry of [`Effects::share_log`].
#[derive(Debug, Clone)]
pub enum ShareLogNote {
    /// A QoS 1/2 delivery of `msg` was logged for stored session `client`, under message
    /// id `id` in this shard's log.
    Placed {
        /// The session's client id.
        client: Box<str>,
        /// The delivery's message id.
        id: crate::store::MsgId,
        /// The message.
        msg: std::sync::Arc<crate::session::Message>,
    },
    /// The delivery `id` of stored session `client` was logged gone because another
    /// member took it (a move); `lsn` is the ticket of that record, or of the last record
    /// before it if the end cancelled the delivery's unwritten record instead.
    MovedOff {
        /// The session's client id.
        client: Box<str>,
        /// The delivery's message id.
        id: crate::store::MsgId,
        /// Durable once the shard's log is durable up to this ticket.
        lsn: crate::store::Lsn,
    },
}

/// One password to check off the shard loop.
pub struct VerifyRequest {
    /// Names the link (key and generation); handed back with the answer.
    pub token: u64,
    /// The password file in force when the CONNECT came.
    pub file: std::sync::Arc<crate::auth::PasswordFile>,
    /// The username.
    pub user: String,
    /// The password (kept only until the check is submitted).
    pub password: Vec<u8>,
}

impl std::fmt::Debug for VerifyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        write!(f, "VerifyRequest({:x}, user {:?})", self.token, self.user)
    }
}

impl Effects {
    /// Link `key` has new output (or the socket became writable): flush it this turn.
    pub fn mark_dirty(&mut self, key: usize, link: &mut Link) {
        if !link.dirty {
            link.dirty = true;
            self.dirty.push(key);
        }
    }

    /// Close link `key` at the end of the turn; input from it is ignored from now on.
    /// Returns false if it was already closing.
    pub fn mark_closing(&mut self, key: usize, link: &mut Link) -> bool {
        if link.state == LinkState::Closing {
            return false;
        }
        link.state = LinkState::Closing;
        self.closing.push(key);
        true
    }

    /// A closing link whose close waited for its held output (`Broker::defer_close`):
    /// close it now. Only for links taken off the closing list and not closed since.
    pub fn requeue_closing(&mut self, key: usize, link: &mut Link) {
        if link.state == LinkState::Closing && std::mem::take(&mut link.close_deferred) {
            self.closing.push(key);
        }
    }

    /// True when some link waits to be flushed.
    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Move the links to flush into `out` (emptied first). Their flags stay set until each
    /// is flushed and [`Effects::flushed`] is called: a link written to again meanwhile is
    /// not queued twice.
    pub fn take_dirty(&mut self, out: &mut Vec<usize>) {
        out.clear();
        std::mem::swap(&mut self.dirty, out);
    }

    /// Link `key` is about to be flushed: new output after this queues it again.
    pub fn flushed(link: &mut Link) {
        link.dirty = false;
    }

    /// True when some link waits to be closed.
    pub fn has_closing(&self) -> bool {
        !self.closing.is_empty()
    }

    /// Move the links to close into `out` (emptied first).
    pub fn take_closing(&mut self, out: &mut Vec<usize>) {
        out.clear();
        std::mem::swap(&mut self.closing, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> Link {
        Link::new(1, ([127, 0, 0, 1], 1).into(), 0)
    }

    /// A link is queued once per flush, and once for closing, however often it is marked.
    #[test]
    fn marks_are_deduplicated() {
        let mut fx = Effects::default();
        let mut l = link();
        fx.mark_dirty(4, &mut l);
        fx.mark_dirty(4, &mut l);
        let mut keys = Vec::new();
        fx.take_dirty(&mut keys);
        assert_eq!(keys, [4]);
        fx.mark_dirty(4, &mut l);
        assert!(!fx.has_dirty(), "still queued until flushed");
        Effects::flushed(&mut l);
        fx.mark_dirty(4, &mut l);
        assert!(fx.has_dirty());
        assert!(fx.mark_closing(4, &mut l));
        assert!(!fx.mark_closing(4, &mut l));
        assert_eq!(l.state, LinkState::Closing);
        fx.take_closing(&mut keys);
        assert_eq!(keys, [4]);
    }
}
