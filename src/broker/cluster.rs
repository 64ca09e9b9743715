//! The node's side of a cluster, as the broker sees it (`docs/cluster.md`).
//!
//! Owns: the plain values a shard exchanges with the cluster link ([`ToCluster`] out,
//! [`FromCluster`] in; the broker never sees NATS), the session-registry step of CONNECT
//! (claim the client id, wait for a moved session's state, then complete), and what news
//! from the link does here: a message from another node, a retained update from the
//! bucket, a takeover by another node (which gets the session's [`SessionHandover`]).
//!
//! Invariants:
//! - A message that came from the cluster is never handed back to it: only messages that
//!   enter the broker on this node (`publish_shared`) produce `ToCluster::Publish`.
//! - Only the gateway shard (0) receives from the link. It routes a message from another
//!   node exactly as if a local client had published it on shard 0 (interest trie, casts
//!   to the other shards), minus the cluster and minus share groups, whose one member per
//!   message NATS queue groups choose (`Route::Shared` arrives here as `share`).
//! - The retained bucket is the order of retained updates across nodes: each update the
//!   watch reports (this node's own included) is stamped again on the gateway and applied
//!   to every replica, so all nodes converge on the bucket's last value. A message from
//!   another node never touches the retained replica itself (`retain_stamp` 0).
//! - A CONNECT completes only after the registry names this node (`Claimed`), and, when it
//!   displaced another node's persistent session, after that session's state came or
//!   `HANDOVER_WAIT_MS` passed; meanwhile the link reads no input (`pending_connect` with
//!   `claim` or `handover`), like a password check. Every wait has a deadline.
//!
//! Must not touch: threads, queues or the link itself; the shard carries these values.

use std::sync::Arc;

use super::connect::{timer_key, TIMER_LINK};
use super::link::PendingConnect;
use super::{home_shard, Broker, Cast, Verdict};
use crate::log::Level;
use crate::log_at;
use crate::protocol::QoS;
use crate::protocol::{self, Connect, Packet, ReasonCode};
use crate::session::{FlightState, Message, Outgoing, SubState};

/// A session's state as it moves to another node: its subscriptions (full filters, with
/// `$share/G/`) and the messages owed to the client (unacknowledged ones first, then the
/// queue), each with its delivery QoS.
#[derive(Debug, Default)]
pub struct SessionHandover {
    /// The old node had a session for the client id (otherwise the rest is empty and the
    /// new session is not "present").
    pub exists: bool,
    /// Subscriptions.
    pub subs: Vec<(Box<str>, SubState)>,
    /// Messages owed.
    pub queued: Vec<(Arc<Message>, QoS)>,
}

/// The id of a stored publisher's new QoS 2 message that its node's power cut does not
/// change: the publisher's resend of a message whose commit was not durable gets the same
/// one. The link stores the message in other nodes' queues under it (`Nats-Msg-Id`
/// `<node>.<stem>.<target>`), so JetStream's duplicate window drops the resend's second
/// store (`docs/cluster.md`, "QoS 1/2 between nodes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qos2Id {
    /// A hash of the publisher's client id (FNV-1a).
    pub client: u64,
    /// The message's number in its session (`Record::Qos2Numbering`: a random start per
    /// session, one more per new QoS 2 message, logged with each commit).
    pub number: u64,
    /// Its packet id.
    pub pid: u16,
    /// CRC-32C of its topic and payload: a client that forgot an unacknowledged message
    /// and sends another under the same packet id at the same place gets another id.
    pub crc: u32,
}

impl Qos2Id {
    /// The id of the `number`-th QoS 2 message of client `client_id`, packet id `pid`.
    pub fn new(client_id: &str, number: u64, pid: u16, topic: &str, payload: &[u8]) -> Qos2Id {
        let client = client_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let crc = crc32c::crc32c_append(crc32c::crc32c(topic.as_bytes()), payload);
        Qos2Id {
            client,
            number,
            pid,
            crc,
        }
    }

    /// Its text in the message id (after the node's name; NATS header-safe).
    pub fn stem(&self) -> String {
        format!(
            "q2.{:016x}.{:x}.{}.{:08x}",
            self.client, self.number, self.pid, self.crc
        )
    }
}

/// What a shard tells the cluster link.
#[derive(Debug)]
pub enum ToCluster {
    /// One local subscription more (`add`) or fewer to `filter` (the filter after
    /// `$share/G/` for a shared one, with `group: Some(G)`).
    Interest {
        /// MQTT filter.
        filter: Box<str>,
        /// Share group.
        group: Option<Box<str>>,
        /// Gained or lost.
        add: bool,
        /// For a gain, the shard's cluster sequence (`SubAckGate::next_cluster_seq`): the
        /// link answers `FromCluster::InterestReady` with it once NATS has the interest.
        seq: u64,
    },
    /// A message that entered the broker on this node, for the nodes that want it (and
    /// the retained bucket if it is retained). `now_ms` is the shard clock, for expiry.
    Publish {
        /// The message.
        msg: Arc<Message>,
        /// When it was handed over (shard clock).
        now_ms: u64,
        /// Non-zero: the shard's cluster-ack sequence of a QoS ≥ 1 publish whose
        /// acknowledgement waits (`ClusterAckGate`); answered by `FromCluster::Published`.
        ack: u64,
        /// A stored publisher's QoS 2 message: its id across a power cut of this node.
        qos2_id: Option<Qos2Id>,
        /// The share groups (`$share/G/F`) delivered to here because this node has all of
        /// their members (`Broker::remote_shares`): the cluster leaves them out.
        served: Vec<Arc<str>>,
    },
    /// A message from this node's queue (`FromCluster::Message` with a token, or
    /// `FromCluster::Settle`) is safe here: the link acknowledges it to JetStream.
    Settle {
        /// As received.
        token: u64,
    },
    /// A share group's queue message (`FromCluster::Message` with `share` and a token)
    /// found no online member here: the link gives it back to the group's queue.
    Return {
        /// As received.
        token: u64,
    },
    /// The session of `client_id` ended here: drop its registry entry if it still names
    /// this node (a claim by another node meanwhile is left alone).
    Release {
        /// MQTT client id.
        client_id: Box<str>,
    },
    /// The subscriptions of persistent session `client_id` changed: the link keeps a
    /// copy in the subscriptions bucket, for a new owner when this node is dead.
    SessionSubs {
        /// MQTT client id.
        client_id: Box<str>,
        /// Its subscriptions (full filters).
        subs: Vec<(Box<str>, SubState)>,
        /// The shard's backup sequence: the link answers `FromCluster::SubsSaved` with
        /// it once the bucket has the copy.
        seq: u64,
    },
    /// Node `to` took `client_id` over: send it the session's state.
    Handover {
        /// The new owner.
        to: Box<str>,
        /// MQTT client id.
        client_id: Box<str>,
        /// The state.
        state: SessionHandover,
        /// When it was taken (shard clock, for the messages' expiry).
        now_ms: u64,
    },
    /// Record this node as the owner of `client_id`; answered with `FromCluster::Claimed`.
    Claim {
        /// MQTT client id.
        client_id: Box<str>,
        /// Names the link (key and generation); echoed in the answer.
        token: u64,
    },
    /// Session `client_id` was taken over here from node `from`, which sent no state (it
    /// is dead): copy the messages waiting for it in `from`'s queue (`FromCluster::Owed`).
    Reclaim {
        /// MQTT client id.
        client_id: Box<str>,
        /// The old owner.
        from: Box<str>,
        /// The session's plain filters.
        filters: Vec<Box<str>>,
    },
    /// This shard's persistent sessions restored from the store, once at start: the link
    /// checks their owners before it reads this node's queue (`FromCluster::Disowned`).
    Restored {
        /// Their client ids.
        client_ids: Vec<Box<str>>,
    },
    /// This shard's live sessions, listed because the link came back from a cut-off
    /// (`FromCluster::ListSessions`): the link checks their owners (`FromCluster::Superseded`).
    Live {
        /// Their client ids.
        client_ids: Vec<Box<str>>,
    },
}

/// What the cluster link tells the gateway shard.
#[derive(Debug)]
pub enum FromCluster {
    /// A message from another node; `share`: NATS chose this node for share group
    /// (group, filter).
    Message {
        /// Plain (`None`) or for one member of (group, filter).
        share: Option<(Box<str>, Box<str>)>,
        /// The message (origin 0, `retain_stamp` 0).
        msg: Message,
        /// From this node's queue: settle it (`ToCluster::Settle`) once it is routed and,
        /// with persistence on, durable here.
        token: Option<u64>,
        /// A QoS 2 message from this node's queue: its id (a hash of its `Nats-Msg-Id`).
        /// With persistence on, its routing is committed with the id logged before it is
        /// settled, and a copy under an id logged already is settled without routing.
        dedupe: Option<u128>,
    },
    /// A copy from this node's queue of a message already routed: settle it once what
    /// was routed before is durable (a QoS 2 copy whose first is under way: once that
    /// one's commit is).
    Settle {
        /// As in `Message`.
        token: u64,
        /// As in `Message`.
        dedupe: Option<u128>,
    },
    /// The message of shard `shard`'s publish numbered `seq` is in the queue of every
    /// other node that wants it (or that failed, or was not needed): its acknowledgement
    /// may go.
    Published {
        /// The publishing shard.
        shard: usize,
        /// Its cluster-ack sequence.
        seq: u64,
    },
    /// Share group `share` has members on another node (`remote`), or no longer has.
    ShareRemote {
        /// `$share/G/F`.
        share: Box<str>,
        /// Members on another node.
        remote: bool,
    },
    /// The retained bucket changed: `msg` is the topic's new retained message (an empty
    /// payload clears it).
    Retained {
        /// The update.
        msg: Message,
    },
    /// The answer to `ToCluster::Claim`: `ok` false when the registry could not be
    /// updated (NATS or JetStream unreachable).
    Claimed {
        /// As sent.
        token: u64,
        /// MQTT client id.
        client_id: Box<str>,
        /// Whether the registry now names this node.
        ok: bool,
        /// The node that held it before (it has been told to hand the state over).
        previous: Option<Box<str>>,
    },
    /// Messages owed to session `client_id` copied from its dead old node's queue
    /// (`ToCluster::Reclaim`); `last` on the final batch.
    Owed {
        /// MQTT client id.
        client_id: Box<str>,
        /// The messages (origin 0, `retain_stamp` 0).
        msgs: Vec<Message>,
        /// No more batches follow.
        last: bool,
    },
    /// Session `client_id`, restored from this node's store, belongs to `owner` now (or
    /// to nobody): hand it its owed messages and end it here.
    Disowned {
        /// MQTT client id.
        client_id: Box<str>,
        /// The node the registry names.
        owner: Option<Box<str>>,
    },
    /// The state of a session taken over from another node.
    SessionState {
        /// MQTT client id.
        client_id: Box<str>,
        /// The state.
        state: SessionHandover,
    },
    /// The link is back from a cut-off from NATS: every shard lists its live sessions
    /// (`ToCluster::Live`).
    ListSessions,
    /// Session `client_id`, listed after a cut-off, belongs to `owner` now (or to nobody):
    /// unless claimed here since the list, disconnect it (0x8E), hand it over and end it.
    Superseded {
        /// MQTT client id.
        client_id: Box<str>,
        /// The node the registry names.
        owner: Option<Box<str>>,
    },
    /// Node `by` took `client_id` over: disconnect it here (0x8E) and end its session.
    TakenOver {
        /// MQTT client id.
        client_id: Box<str>,
        /// The node that owns it now.
        by: Box<str>,
    },
    /// The subscriptions bucket's copy of a session whose id a claim took from another
    /// node: used if that node sends no state in time (it is dead).
    SessionBackup {
        /// MQTT client id.
        client_id: Box<str>,
        /// The subscriptions (no messages).
        state: SessionHandover,
    },
    /// The link's NATS server has every interest of shard `shard` up to `seq` (or the link
    /// refused it: it stays local). That shard's SUBACKs waiting for it may go.
    InterestReady {
        /// The shard that sent the interest.
        shard: usize,
        /// Its cluster sequence.
        seq: u64,
    },
    /// The subscriptions bucket has the copy numbered `seq` of shard `shard` (or the
    /// link gave up writing it). That shard's SUBACKs waiting for it may go.
    SubsSaved {
        /// The shard that sent the copy.
        shard: usize,
        /// Its backup sequence.
        seq: u64,
    },
}

/// Cluster news the gateway passes to the shard it concerns.
#[derive(Debug)]
pub enum ClusterCast {
    /// Apply a retained update (stamped by the gateway) to this shard's replica.
    Retain(Arc<Message>),
    /// The registry answer for a CONNECT on this shard.
    Claimed {
        /// As in `FromCluster::Claimed`.
        token: u64,
        /// As in `FromCluster::Claimed`.
        client_id: Box<str>,
        /// As in `FromCluster::Claimed`.
        ok: bool,
        /// As in `FromCluster::Claimed`.
        previous: Option<Box<str>>,
    },
    /// As `FromCluster::Owed`, for the client id's home shard.
    Owed {
        /// MQTT client id.
        client_id: Box<str>,
        /// The messages.
        msgs: Vec<Arc<Message>>,
    },
    /// As `FromCluster::Disowned`, for the client id's home shard.
    Disowned {
        /// MQTT client id.
        client_id: Box<str>,
        /// The node the registry names.
        owner: Option<Box<str>>,
    },
    /// As `FromCluster::SessionBackup`, for the client id's home shard.
    Backup {
        /// MQTT client id.
        client_id: Box<str>,
        /// The subscriptions.
        state: Box<SessionHandover>,
    },
    /// As `FromCluster::SessionState`, for the client id's home shard.
    State {
        /// MQTT client id.
        client_id: Box<str>,
        /// The state.
        state: Box<SessionHandover>,
    },
    /// As `FromCluster::ListSessions`, for every shard.
    ListSessions,
    /// As `FromCluster::Superseded`, for the client id's home shard.
    Superseded {
        /// MQTT client id.
        client_id: Box<str>,
        /// The node the registry names.
        owner: Option<Box<str>>,
    },
    /// As `FromCluster::TakenOver`, for the client id's home shard.
    TakenOver {
        /// MQTT client id.
        client_id: Box<str>,
        /// The node that owns it now.
        by: Box<str>,
    },
    /// As `FromCluster::InterestReady`, for the shard that sent the interest.
    InterestReady {
        /// Its cluster sequence.
        seq: u64,
    },
    /// As `FromCluster::SubsSaved`, for the shard that sent the copy.
    SubsSaved {
        /// Its backup sequence.
        seq: u64,
    },
    /// As `FromCluster::Published`, for the shard that published.
    Published {
        /// Its cluster-ack sequence.
        seq: u64,
    },
    /// As `FromCluster::ShareRemote`, for every shard.
    ShareRemote {
        /// `$share/G/F`.
        share: Box<str>,
        /// Members on another node.
        remote: bool,
    },
}

/// The shard that receives from the link.
pub const GATEWAY_SHARD: usize = 0;
/// Share groups with members on other nodes a shard keeps track of; past it a group is
/// taken as local-only (its messages reach a member here, never none).
const REMOTE_SHARES_MAX: usize = 100_000;
/// Sessions' subscription copies a shard keeps while their CONNECTs wait for the old
/// node's state.
const BACKUPS_MAX: usize = 4096;
/// Longest wait for a session's state from its old node after the claim, before the
/// CONNECT completes with a new session.
pub const HANDOVER_WAIT_MS: u64 = 3000;
/// Longest wait for the session registry at CONNECT before the client is refused with
/// 0x88 (the registry unreachable: NATS down, or JetStream without quorum).
pub const CLAIM_WAIT_MS: u64 = 5000;

impl<X> Broker<X> {
    /// This node is `node` of a cluster whose link the shard carries: from now on interest,
    /// local publishes and CONNECT claims go out as [`ToCluster`] in `Effects::cluster`.
    pub fn set_cluster(&mut self, node: &str) {
        self.cluster = Some(node.into());
    }

    /// This node's name, when it runs in a cluster.
    pub fn cluster_node(&self) -> Option<&str> {
        self.cluster.as_deref()
    }

    /// Queue `m` for the link (nothing when no cluster runs).
    pub(super) fn tell_cluster(&mut self, m: ToCluster) {
        if self.cluster.is_some() {
            self.fx.cluster.push(m);
        }
    }

    /// Tell the link about one local subscription more or fewer to (`filter`, `group`). A
    /// gain is numbered, so the SUBACKs held from now on wait until the link confirms it.
    pub(super) fn tell_interest(&mut self, filter: &str, group: Option<&str>, add: bool) {
        if self.cluster.is_none() {
            return;
        }
        let seq = if add { self.gate.next_cluster_seq() } else { 0 };
        self.fx.cluster.push(ToCluster::Interest {
            filter: filter.into(),
            group: group.map(Into::into),
            add,
            seq,
        });
    }

    /// Hand a message that entered the broker here to the cluster. Returns whether it was
    /// (`$SYS` topics stay on their node: each node publishes its own figures). A QoS ≥ 1
    /// message from a client's PUBLISH (`acks.wanted`) is numbered: its acknowledgement
    /// waits for the link (`cluster_ack`).
    /// Whether a message on `topic` goes to the cluster (`forward_to_cluster`).
    pub(super) fn clustered(&self, topic: &str) -> bool {
        self.cluster.is_some() && !super::sys::is_sys_topic(topic)
    }

    /// Hand a message that entered here to the link; `served`: the share groups it was
    /// delivered to here (`Broker::dispatch_local_shared`).
    pub(super) fn forward_to_cluster(
        &mut self,
        msg: &Arc<Message>,
        now_ms: u64,
        served: Vec<Arc<str>>,
    ) -> bool {
        if !self.clustered(&msg.topic) {
            return false;
        }
        let ack = if self.acks.wanted && msg.qos != QoS::AtMostOnce {
            let seq = self.acks.next_seq();
            self.acks.numbered = Some(seq);
            seq
        } else {
            0
        };
        let qos2_id = self.acks.qos2_id.take();
        self.fx.cluster.push(ToCluster::Publish {
            msg: msg.clone(),
            now_ms,
            ack,
            qos2_id,
            served,
        });
        true
    }

    /// A share group's members on other nodes came or went: every shard is told.
    fn share_remote(&mut self, share: Box<str>, remote: bool, now_ms: u64) {
        for to in (0..self.shards).filter(|&t| t != self.shard_id) {
            let c = ClusterCast::ShareRemote {
                share: share.clone(),
                remote,
            };
            self.fx.outbox.push((to, Cast::Cluster(Box::new(c))));
        }
        self.on_cluster_cast(ClusterCast::ShareRemote { share, remote }, now_ms);
    }

    /// News from the link (gateway shard only).
    pub fn on_cluster(&mut self, m: FromCluster, now_ms: u64) {
        match m {
            FromCluster::Message {
                share: None,
                msg,
                token: Some(token),
                dedupe: Some(id),
            } if self.journal.is_some() => self.receive_qos2(msg, token, id, now_ms),
            FromCluster::Message {
                share: None,
                msg,
                token,
                ..
            } => {
                self.publish_from_cluster(Arc::new(msg), now_ms);
                if let Some(token) = token {
                    self.settle_when_durable(token);
                }
            }
            FromCluster::Message {
                share: Some((group, filter)),
                msg,
                token,
                ..
            } => {
                let landed = self.deliver_cluster_shared(Arc::new(msg), &group, &filter, now_ms);
                match token {
                    Some(token) if landed => self.settle_when_durable(token),
                    // No online member here: another node of the group may have one.
                    Some(token) => self.tell_cluster(ToCluster::Return { token }),
                    None => {}
                }
            }
            FromCluster::Settle { token, dedupe } => {
                let waits = dedupe.is_some_and(|id| {
                    self.journal
                        .as_mut()
                        .is_some_and(|j| j.settle_with(id, token))
                });
                if !waits {
                    self.settle_when_durable(token);
                }
            }
            FromCluster::Published { shard, seq } => {
                let c = ClusterCast::Published { seq };
                if shard == self.shard_id {
                    self.on_cluster_cast(c, now_ms);
                } else if shard < self.shards {
                    self.fx.outbox.push((shard, Cast::Cluster(Box::new(c))));
                }
            }
            FromCluster::ShareRemote { share, remote } => self.share_remote(share, remote, now_ms),
            FromCluster::Retained { mut msg } => {
                msg.retain = true;
                msg.retain_stamp = self.retained.next_stamp(self.shard_id);
                let msg = Arc::new(msg);
                self.retained.store(&msg);
                for to in (0..self.shards).filter(|&t| t != self.shard_id) {
                    let c = ClusterCast::Retain(msg.clone());
                    self.fx.outbox.push((to, Cast::Cluster(Box::new(c))));
                }
            }
            FromCluster::Claimed {
                token,
                client_id,
                ok,
                previous,
            } => {
                let c = ClusterCast::Claimed {
                    token,
                    client_id: client_id.clone(),
                    ok,
                    previous,
                };
                self.send_home(&client_id, c, now_ms)
            }
            FromCluster::SessionState { client_id, state } => {
                let c = ClusterCast::State {
                    client_id: client_id.clone(),
                    state: Box::new(state),
                };
                self.send_home(&client_id, c, now_ms)
            }
            FromCluster::SessionBackup { client_id, state } => {
                let c = ClusterCast::Backup {
                    client_id: client_id.clone(),
                    state: Box::new(state),
                };
                self.send_home(&client_id, c, now_ms)
            }
            FromCluster::Owed {
                client_id, msgs, ..
            } => {
                let msgs = msgs.into_iter().map(Arc::new).collect();
                let c = ClusterCast::Owed {
                    client_id: client_id.clone(),
                    msgs,
                };
                self.send_home(&client_id, c, now_ms)
            }
            FromCluster::Disowned { client_id, owner } => {
                let c = ClusterCast::Disowned {
                    client_id: client_id.clone(),
                    owner,
                };
                self.send_home(&client_id, c, now_ms)
            }
            FromCluster::ListSessions => {
                for to in (0..self.shards).filter(|&t| t != self.shard_id) {
                    let c = ClusterCast::ListSessions;
                    self.fx.outbox.push((to, Cast::Cluster(Box::new(c))));
                }
                self.list_live();
            }
            FromCluster::Superseded { client_id, owner } => {
                let c = ClusterCast::Superseded {
                    client_id: client_id.clone(),
                    owner,
                };
                self.send_home(&client_id, c, now_ms)
            }
            FromCluster::TakenOver { client_id, by } => {
                let c = ClusterCast::TakenOver {
                    client_id: client_id.clone(),
                    by,
                };
                self.send_home(&client_id, c, now_ms)
            }
            FromCluster::InterestReady { shard, seq } => {
                self.send_to_shard(shard, ClusterCast::InterestReady { seq }, now_ms)
            }
            FromCluster::SubsSaved { shard, seq } => {
                self.send_to_shard(shard, ClusterCast::SubsSaved { seq }, now_ms)
            }
        }
    }

    /// Apply `c` here if it is for this shard, otherwise cast it to `shard`.
    fn send_to_shard(&mut self, shard: usize, c: ClusterCast, now_ms: u64) {
        if shard == self.shard_id {
            self.on_cluster_cast(c, now_ms);
        } else if shard < self.shards {
            self.fx.outbox.push((shard, Cast::Cluster(Box::new(c))));
        }
    }

    /// Apply `c` here if `client_id` lives on this shard, otherwise cast it to its home.
    fn send_home(&mut self, client_id: &str, c: ClusterCast, now_ms: u64) {
        let home = home_shard(client_id, self.shards);
        if home == self.shard_id {
            self.on_cluster_cast(c, now_ms);
        } else {
            self.fx.outbox.push((home, Cast::Cluster(Box::new(c))));
        }
    }

    /// Cluster news passed on by the gateway.
    pub(super) fn on_cluster_cast(&mut self, c: ClusterCast, now_ms: u64) {
        match c {
            ClusterCast::Retain(msg) => self.retained.store(&msg),
            ClusterCast::Claimed {
                token,
                client_id,
                ok,
                previous,
            } => self.on_claim_answer(token, &client_id, ok, previous, now_ms),
            ClusterCast::State { client_id, state } => {
                self.backups.remove(&client_id);
                self.on_session_state(&client_id, *state, now_ms)
            }
            ClusterCast::Backup { client_id, state } => {
                if self.backups.len() < BACKUPS_MAX {
                    self.backups.insert(client_id, state);
                }
            }
            ClusterCast::TakenOver { client_id, by } => self.on_taken_over(&client_id, &by, now_ms),
            ClusterCast::ListSessions => self.list_live(),
            ClusterCast::Superseded { client_id, owner } => {
                self.on_superseded(&client_id, owner.as_deref(), now_ms)
            }
            ClusterCast::Owed { client_id, msgs } => self.deliver_owed(&client_id, msgs, now_ms),
            ClusterCast::Disowned { client_id, owner } => {
                self.on_disowned(&client_id, owner.as_deref(), now_ms)
            }
            ClusterCast::InterestReady { seq } => {
                self.gate.cluster_acked(seq);
                self.release_subacks(now_ms);
            }
            ClusterCast::SubsSaved { seq } => {
                self.gate.backup_saved(seq);
                self.release_subacks(now_ms);
            }
            ClusterCast::Published { seq } => {
                self.acks.answered(seq);
                self.release_cluster_acks(now_ms);
            }
            ClusterCast::ShareRemote { share, remote } => {
                if !remote {
                    self.remote_shares.remove(&share);
                } else if self.remote_shares.len() < REMOTE_SHARES_MAX {
                    self.remote_shares.insert(share);
                }
            }
        }
    }

    /// A QoS 2 message from this node's queue (token `token`, id `id`), with a log: routed
    /// as a numbered routing of the gateway's own (`Journal::next_received_txn`), whose
    /// deliveries recovery drops unless it is committed; the commit logs `id`
    /// (`HeldAck::ClusterIn`) once the routing is durable everywhere here, and the
    /// message is settled once the commit is durable. A copy whose id is logged or under
    /// way (JetStream handed it out again: this node crashed before its acknowledgement
    /// arrived, or its publisher's resend was stored again) is settled without routing:
    /// delivered once across a crash or power cut of this node.
    fn receive_qos2(&mut self, mut msg: Message, token: u64, id: u128, now_ms: u64) {
        let me = self.shard_id;
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        if j.settle_with(id, token) {
            // The first copy is being routed: this one is settled with its commit.
            return;
        }
        if j.was_received(id) {
            self.settle_when_durable(token);
            return;
        }
        j.receiving(id);
        msg.txn = j.next_received_txn(me);
        let txn = msg.txn;
        self.publish_from_cluster(Arc::new(msg), now_ms);
        if let Some(j) = self.journal.as_mut() {
            j.hold(super::journal::HeldAck::ClusterIn { token, txn, id });
        }
    }

    /// A message from another node: to this node's plain subscribers, wherever they live.
    fn publish_from_cluster(&mut self, msg: Arc<Message>, now_ms: u64) {
        let mut mask = 0u64;
        if self.shards > 1 {
            mask = self.routes.remote_mask(&msg.topic, self.shard_id)
                | self.bridges.remote_mask(&msg.topic, self.shard_id);
        }
        for to in (0..self.shards).filter(|&t| mask & (1u64 << t) != 0) {
            self.fx.outbox.push((to, Cast::Publish(msg.clone())));
        }
        self.route_local(&msg, now_ms);
    }

    /// A CONNECT that passed authentication: ask the registry for its client id first.
    pub(super) fn claim(&mut self, key: usize, c: &Connect<'_>, id: &str) -> Verdict {
        let Some(link) = self.links.get_mut(key) else {
            return Verdict::Close;
        };
        let mut connect = Vec::new();
        protocol::encode(&Packet::Connect(c.clone()), c.version, &mut connect);
        link.pending_connect = Some(Box::new(PendingConnect {
            connect,
            refusal: None,
            claim: true,
            handover: false,
        }));
        let gen = link.gen;
        let token = ((key as u64) << 32) | u64::from(gen);
        // The CONNECT deadline has done its work; the registry gets its own.
        if let Some(t) = link.timer.take() {
            self.timers.cancel(t);
        }
        let deadline = self.now_ms + CLAIM_WAIT_MS;
        let t = self
            .timers
            .insert(deadline, timer_key(TIMER_LINK, gen, key));
        if let Some(link) = self.links.get_mut(key) {
            link.timer = Some(t);
        }
        // Claimed here from now on: a check of the sessions listed before must not end it.
        self.listed.remove(id);
        self.tell_cluster(ToCluster::Claim {
            client_id: id.into(),
            token,
        });
        Verdict::Continue
    }

    /// The link timer of link `key` fired: if it still waits for the registry, refuse it
    /// (0x88) and return true.
    pub(super) fn claim_expired(&mut self, key: usize, now_ms: u64) -> bool {
        let Some(link) = self.links.get_mut(key) else {
            return false;
        };
        if link.pending_connect.as_ref().is_some_and(|p| p.handover) {
            // The old node did not send the state in time (it is dead, say): the copy of
            // its subscriptions from the bucket if there is one, else a new session.
            let token = ((key as u64) << 32) | u64::from(link.gen);
            let (mut backup, mut from) = (None, None);
            let id = link.client_id.clone();
            if let Some(id) = &id {
                from = self.awaiting_state.remove(id).map(|(_, from)| from);
                backup = self.backups.remove(id);
            }
            let subs_known = backup.is_some();
            self.finish_handover(token, backup.map(|b| *b), now_ms);
            if let (Some(id), Some(from), true) = (id, from, subs_known) {
                self.reclaim_owed(&id, &from);
            }
            return true;
        }
        if !link.pending_connect.as_ref().is_some_and(|p| p.claim) {
            return false;
        }
        link.pending_connect = None;
        self.refuse(
            key,
            ReasonCode::ServerUnavailable,
            "cluster session registry did not answer",
        );
        true
    }

    /// Session `s` ends on this node with no connection (clean disconnect, expiry): its
    /// registry entry goes, so the bucket holds only live sessions.
    pub(super) fn release_claim(&mut self, s: usize) {
        if self.cluster.is_none() {
            return;
        }
        if let Some(sess) = self.sessions.get(s) {
            let client_id = sess.client_id.clone();
            self.tell_cluster(ToCluster::Release { client_id });
        }
    }

    /// Whether CONNECT `c` must wait for the registry before it completes on link `key`.
    pub(super) fn needs_claim(&self, key: usize, c: &Connect<'_>) -> bool {
        // An id this node assigned names this node and cannot be in use elsewhere.
        self.cluster.is_some()
            && !c.client_id.is_empty()
            && self.links.get(key).is_some_and(|l| !l.claimed)
    }

    /// The registry's answer for link `token`: complete its CONNECT, or refuse it (0x88 /
    /// 3.x "server unavailable") when the registry could not be reached: two nodes must
    /// never both believe they hold one client id.
    /// An answer no CONNECT waits for any more is kept for the client's retry
    /// (`cluster_late`).
    fn on_claim_answer(
        &mut self,
        token: u64,
        client_id: &str,
        ok: bool,
        previous: Option<Box<str>>,
        now_ms: u64,
    ) {
        let Some((key, version, pending)) = self.take_pending_connect(token, |p| p.claim) else {
            self.claim_came_late(client_id, ok, previous.as_deref(), now_ms);
            return;
        };
        self.fx.resume.push(key);
        let Some(c) = self.stored_connect(key, &pending.connect, version) else {
            return;
        };
        if !ok {
            // 0x88 for 5.0; 3.x's "server unavailable" (3).
            self.refuse(
                key,
                ReasonCode::ServerUnavailable,
                "cluster session registry unreachable",
            );
            return;
        }
        let Some(link) = self.links.get_mut(key) else {
            return;
        };
        link.claimed = true;
        let id = link.client_id.clone();
        // An earlier late claim's record is used now or never: another node claimed the
        // id since, or the client wants a new session, or the session lives here.
        let late = id
            .as_deref()
            .and_then(|id| self.late_claims.take(id, now_ms));
        let late = late.filter(|_| previous.is_none() && !c.clean_start);
        if (previous.is_none() || c.clean_start)
            && self.complete_lost(key, &c, id.as_deref(), late, now_ms)
        {
            return;
        }
        let Some(link) = self.links.get_mut(key) else {
            return;
        };
        if let (Some(from), false) = (previous, c.clean_start) {
            // The old node was told to send the session's state: wait for it (bounded).
            link.pending_connect = Some(Box::new(PendingConnect {
                connect: pending.connect,
                refusal: None,
                claim: false,
                handover: true,
            }));
            self.fx.resume.retain(|&k| k != key);
            self.rearm_link_timer(key, now_ms + HANDOVER_WAIT_MS);
            if let Some(id) = self.links.get(key).and_then(|l| l.client_id.clone()) {
                self.awaiting_state.insert(id, (token, from));
            }
            return;
        }
        self.complete_connect(key, &c, now_ms);
    }

    /// Replace link `key`'s timer with one due at `at`.
    fn rearm_link_timer(&mut self, key: usize, at: u64) {
        let Some(link) = self.links.get_mut(key) else {
            return;
        };
        let gen = link.gen;
        if let Some(t) = link.timer.take() {
            self.timers.cancel(t);
        }
        let t = self.timers.insert(at, timer_key(TIMER_LINK, gen, key));
        if let Some(link) = self.links.get_mut(key) {
            link.timer = Some(t);
        }
    }

    /// The state of a session this node took over: complete the CONNECT waiting for it
    /// with the session rebuilt (Session Present 1).
    /// A state that comes when no CONNECT waits for it (its old node was slow, or it is
    /// the store of a restarted node handing over what it owed, `on_disowned`) brings only
    /// messages: they go to the session if it lives here.
    fn on_session_state(&mut self, client_id: &str, state: SessionHandover, now_ms: u64) {
        let Some((token, _)) = self.awaiting_state.remove(client_id) else {
            let msgs = state.queued.into_iter().map(|(m, _)| m).collect();
            self.deliver_owed(client_id, msgs, now_ms);
            return;
        };
        self.finish_handover(token, Some(state), now_ms);
    }

    /// Complete the CONNECT of link `token` that waited for a session's state, with it
    /// (`Some`) or without (it did not come in time).
    fn finish_handover(&mut self, token: u64, state: Option<SessionHandover>, now_ms: u64) {
        let Some((key, version, pending)) = self.take_pending_connect(token, |p| p.handover) else {
            return;
        };
        self.fx.resume.push(key);
        let Some(c) = self.stored_connect(key, &pending.connect, version) else {
            return;
        };
        self.handover_in = state.map(Box::new);
        self.complete_connect(key, &c, now_ms);
        self.handover_in = None;
    }

    /// Rebuild session `s` from the state its old node sent: its subscriptions join the
    /// routes (and the cluster's interest), its messages wait in its queue.
    pub(super) fn install_handover(&mut self, s: usize, h: SessionHandover) {
        for (full, st) in &h.subs {
            match crate::topic::parse_filter(full) {
                Ok(crate::topic::FilterKind::Shared(sh)) => {
                    self.add_shared(s, full, sh.group, sh.filter, *st)
                }
                Ok(_) => {
                    self.add_subscription(s, full, *st);
                }
                Err(_) => {}
            }
        }
        let Some(sess) = self.sessions.get_mut(s) else {
            return;
        };
        for (msg, qos) in h.queued {
            let out = Outgoing {
                msg,
                qos,
                retain: false,
                sub_ids: Default::default(),
                share: None,
                sid: 0,
                moved: false,
            };
            if !sess.enqueue(out, &self.limits) {
                self.fx.stats.dropped_queue += 1;
            }
        }
    }

    /// Keep the cluster's copy of persistent session `s`'s subscriptions up to date (a
    /// session that ends with its connection has none to keep).
    pub(super) fn backup_subs(&mut self, s: usize) {
        if self.cluster.is_none() {
            return;
        }
        let Some(sess) = self.sessions.get(s).filter(|x| x.expiry_s > 0) else {
            return;
        };
        let subs = sess.subs.iter().map(|(f, st)| (f.clone(), *st)).collect();
        let client_id = sess.client_id.clone();
        // Numbered, so the SUBACKs held from now on wait until the bucket has the copy:
        // an acknowledged subscription outlives this node.
        let seq = self.gate.next_backup_seq();
        self.tell_cluster(ToCluster::SessionSubs {
            client_id,
            subs,
            seq,
        });
    }

    /// The state of session `s`, for the node taking it over.
    pub(super) fn session_state(&self, s: usize) -> SessionHandover {
        let Some(sess) = self.sessions.get(s) else {
            return SessionHandover::default();
        };
        let subs = sess.subs.iter().map(|(f, st)| (f.clone(), *st)).collect();
        // A QoS 2 delivery awaiting PUBCOMP has reached the client: not owed again.
        let unacked = sess
            .inflight()
            .iter()
            .filter(|f| f.state != FlightState::AwaitComp)
            .map(|f| &f.out);
        let queued = unacked
            .chain(sess.queue.iter())
            .map(|o| (o.msg.clone(), o.qos))
            .collect();
        SessionHandover {
            exists: true,
            subs,
            queued,
        }
    }

    /// Node `by` owns `client_id` now: disconnect its connection here with 0x8E (a plain
    /// close for 3.x), send its state to `by`, and end it here.
    pub(super) fn on_taken_over(&mut self, client_id: &str, by: &str, now_ms: u64) {
        let Some(s) = self.sessions.find(client_id) else {
            if self.late_claims.take(client_id, now_ms).is_some() {
                // Never here: a claim of this node answered late moved the id here from a
                // node that may be dead. "No session" would make the new node start a new
                // one; silence makes it take the bucket's copy, as after a dead node.
                return;
            }
            // Nothing to hand over; say so, so the new node need not wait.
            self.tell_cluster(ToCluster::Handover {
                to: by.into(),
                client_id: client_id.into(),
                state: SessionHandover::default(),
                now_ms,
            });
            return;
        };
        let state = self.session_state(s);
        self.tell_cluster(ToCluster::Handover {
            to: by.into(),
            client_id: client_id.into(),
            state,
            now_ms,
        });
        if let Some(old) = self.sessions.get_mut(s).and_then(|x| x.link.take()) {
            if let Some(l) = self.links.get_mut(old) {
                l.session = None;
            }
            let why = format!("session taken over by cluster node {by}");
            self.close(old, Some(ReasonCode::SessionTakenOver), &why);
        }
        if crate::log_sink::connection_messages() {
            log_at!(
                Level::Notice,
                "Client {} moved to cluster node {by}; its session here ends.",
                client_id.escape_debug()
            );
        }
        self.end_session_reconnected(s);
    }
}
