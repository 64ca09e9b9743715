//! The cluster link as the shards see it: one [`ClusterPort`] per shard.
//!
//! Owns: the conversion between the broker's values (`ToCluster`, `FromCluster`,
//! `Message`) and the link's (`ToLink`, `FromLink`, `Envelope`), and the link's lifetime
//! (the gateway shard's port holds the `LinkHandle`: the link stops when that shard ends).
//! Invariants: a shard's port never blocks (bounded queues, `try_send`/`try_recv`); what
//! arrives from NATS is checked (valid topic name) before it becomes a `Message`; an
//! inbound message never carries a retained stamp, so it never updates a replica by
//! itself (the retained bucket does). Must not touch: shard or broker internals beyond
//! those values.
#![forbid(unsafe_code)]

use std::io;
use std::sync::Arc;

use super::envelope::Envelope;
use super::link::{LinkHandle, LinkSender};
use super::{FromLink, Route, ToLink};
use crate::broker::cluster::{FromCluster, ToCluster};
use crate::config::cluster::ClusterConfig;
use crate::log::Level;
use crate::log_at;
use crate::metrics::{ClusterFigures, ClusterNodes, Metrics};
use crate::protocol::QoS;
use crate::session::Message;
use crate::shard::cluster_port::{ClusterPort, ClusterStart, Wake};

/// What `ClusterStart` needs: the link's configuration, and the figures board its
/// counters are shown on (`$SYS/broker/cluster/…`, `shardmq_cluster_…`).
pub fn starter(cfg: ClusterConfig, metrics: Arc<Metrics>) -> ClusterStart {
    Box::new(move |wake: Wake, shards: usize| {
        let handle = LinkHandle::start_for(cfg, wake, shards)?;
        let stats = handle.sender().stats().clone();
        let (s, nodes) = (stats.clone(), stats);
        let _ = metrics
            .cluster
            .set(ClusterFigures(Box::new(move || s.figures())));
        let _ = metrics
            .cluster_nodes
            .set(ClusterNodes(Box::new(move || nodes.node_ages())));
        let mut ports: Vec<Box<dyn ClusterPort>> = Vec::with_capacity(shards);
        let sender = handle.sender();
        let mut gateway = Some(handle);
        for id in 0..shards {
            let link = if id == crate::broker::cluster::GATEWAY_SHARD {
                gateway.take()
            } else {
                None
            };
            ports.push(Box::new(NodePort {
                sender: sender.clone(),
                link,
                shard: id,
            }));
        }
        if gateway.is_some() {
            return Err(io::Error::other("cluster link: no gateway shard"));
        }
        Ok(ports)
    })
}

/// One shard's port; the gateway's also holds the link and reads from it.
struct NodePort {
    sender: LinkSender,
    link: Option<LinkHandle>,
    shard: usize,
}

impl ClusterPort for NodePort {
    fn send(&mut self, out: &mut Vec<ToCluster>) {
        let shard = self.shard;
        self.sender
            .send_all(out.drain(..).map(|m| to_link(m, shard)));
    }

    fn receive(&mut self, now_ms: u64, max: usize, into: &mut Vec<FromCluster>) -> bool {
        let Some(link) = self.link.as_ref() else {
            return false;
        };
        for _ in 0..max {
            let Ok(m) = link.receiver().try_recv() else {
                return false;
            };
            if let Some(m) = from_link(m, now_ms, link) {
                into.push(m);
            }
        }
        !link.receiver().is_empty()
    }
}

fn to_link(m: ToCluster, shard: usize) -> ToLink {
    match m {
        ToCluster::Interest {
            filter,
            group,
            add: true,
            seq,
        } => ToLink::Interest {
            filter: filter.into(),
            group: group.map(Into::into),
            ack: (seq > 0).then_some((shard, seq)),
        },
        ToCluster::Interest { filter, group, .. } => ToLink::NoInterest {
            filter: filter.into(),
            group: group.map(Into::into),
        },
        ToCluster::Publish {
            msg,
            now_ms,
            ack,
            qos2_id,
            served,
        } => ToLink::Publish {
            envelope: Box::new(envelope_of(&msg, now_ms)),
            ack: (ack > 0).then_some((shard, ack)),
            msg_id: qos2_id.map(|k| k.stem()),
            served: served
                .iter()
                .filter_map(|share| super::groups::group_of(share))
                .collect(),
        },
        ToCluster::Settle { token } => ToLink::Settle { token },
        ToCluster::Return { token } => ToLink::Return { token },
        ToCluster::Handover {
            to,
            client_id,
            state,
            now_ms,
        } => ToLink::Handover {
            to: to.into(),
            client_id: client_id.into(),
            state: super::handover::encode(&state, now_ms),
        },
        ToCluster::Release { client_id } => ToLink::Release {
            client_id: client_id.into(),
        },
        ToCluster::SessionSubs {
            client_id,
            subs,
            seq,
        } => ToLink::SessionSubs {
            client_id: client_id.into(),
            state: super::handover::encode(
                &crate::broker::cluster::SessionHandover {
                    exists: true,
                    subs,
                    queued: Vec::new(),
                },
                0,
            ),
            ack: (seq > 0).then_some((shard, seq)),
        },
        ToCluster::Claim { client_id, token } => ToLink::Claim {
            client_id: client_id.into(),
            token,
        },
        ToCluster::Reclaim {
            client_id,
            from,
            filters,
        } => ToLink::Reclaim {
            client_id: client_id.into(),
            from: from.into(),
            filters: filters.into_iter().map(Into::into).collect(),
        },
        ToCluster::Restored { client_ids } => ToLink::Restored {
            client_ids: client_ids.into_iter().map(Into::into).collect(),
        },
        ToCluster::Live { client_ids } => ToLink::Live {
            client_ids: client_ids.into_iter().map(Into::into).collect(),
        },
    }
}

/// The envelope of a message accepted here (origin and sequence are the link's to set).
pub fn envelope_of(m: &Message, now_ms: u64) -> Envelope {
    Envelope {
        origin: String::new(),
        seq: 0,
        topic: m.topic.to_string(),
        qos: m.qos,
        retain: m.retain,
        // What is left of the Message Expiry Interval, rounded up; `u32::MAX` means none
        // on the wire, so the longest is one second less.
        expiry_secs: m.expires_at_ms.map(|at| {
            let left = at.saturating_sub(now_ms).div_ceil(1000);
            u32::try_from(left)
                .unwrap_or(u32::MAX - 1)
                .min(u32::MAX - 1)
        }),
        props: m.props.clone(),
        payload: m.payload.to_vec(),
    }
}

/// The message of an envelope from another node, or `None` if its topic is not a valid
/// topic name (counted as malformed by the caller).
pub fn message_of(e: Envelope, now_ms: u64) -> Option<Message> {
    if !crate::topic::valid_topic_name(&e.topic) {
        return None;
    }
    Some(Message {
        topic: e.topic.into(),
        payload: e.payload.into_boxed_slice(),
        qos: e.qos,
        retain: e.retain,
        props: e.props,
        expires_at_ms: e
            .expiry_secs
            .map(|s| now_ms.saturating_add(u64::from(s) * 1000)),
        origin: 0,
        retain_stamp: 0,
        publisher: None,
        txn: 0,
        share_id: 0,
    })
}

fn from_link(m: FromLink, now_ms: u64, link: &LinkHandle) -> Option<FromCluster> {
    let malformed = || {
        super::LinkStats::add(&link.stats().malformed);
        None
    };
    match m {
        FromLink::Message {
            route,
            envelope,
            token,
            dedupe,
        } => {
            let Some(msg) = message_of(*envelope, now_ms) else {
                // A queue message is settled all the same, or it would come forever.
                let _ = malformed();
                return token.map(|token| FromCluster::Settle {
                    token,
                    dedupe: None,
                });
            };
            let share = match route {
                Route::Plain => None,
                Route::Shared { group, filter } => Some((group.into(), filter.into())),
            };
            Some(FromCluster::Message {
                share,
                msg,
                token,
                dedupe,
            })
        }
        FromLink::Settle { token, dedupe } => Some(FromCluster::Settle { token, dedupe }),
        FromLink::Published { ack: (shard, seq) } => Some(FromCluster::Published { shard, seq }),
        FromLink::ShareRemote { share, remote } => Some(FromCluster::ShareRemote {
            share: share.into(),
            remote,
        }),
        FromLink::Retained { topic, message } => {
            let cleared = Envelope {
                origin: String::new(),
                seq: 0,
                topic,
                qos: QoS::AtMostOnce,
                retain: true,
                expiry_secs: None,
                props: None,
                payload: Vec::new(),
            };
            let e = message.map_or(cleared, |b| *b);
            let Some(msg) = message_of(e, now_ms) else {
                return malformed();
            };
            Some(FromCluster::Retained { msg })
        }
        FromLink::Claimed {
            token,
            client_id,
            previous,
        } => Some(FromCluster::Claimed {
            token,
            client_id: client_id.into(),
            ok: true,
            previous: previous.map(Into::into),
        }),
        FromLink::ClaimFailed { token, client_id } => Some(FromCluster::Claimed {
            token,
            client_id: client_id.into(),
            ok: false,
            previous: None,
        }),
        FromLink::SessionState { client_id, state } => {
            let Some(state) = super::handover::decode(&state, now_ms) else {
                return malformed();
            };
            Some(FromCluster::SessionState {
                client_id: client_id.into(),
                state,
            })
        }
        FromLink::SessionBackup { client_id, state } => {
            let Some(state) = super::handover::decode(&state, now_ms) else {
                return malformed();
            };
            Some(FromCluster::SessionBackup {
                client_id: client_id.into(),
                state,
            })
        }
        FromLink::Owed {
            client_id,
            envelopes,
            last,
        } => {
            let mut msgs = Vec::with_capacity(envelopes.len());
            for e in envelopes {
                match message_of(e, now_ms) {
                    Some(m) => msgs.push(m),
                    None => {
                        let _ = malformed();
                    }
                }
            }
            Some(FromCluster::Owed {
                client_id: client_id.into(),
                msgs,
                last,
            })
        }
        FromLink::Disowned { client_id, owner } => Some(FromCluster::Disowned {
            client_id: client_id.into(),
            owner: owner.map(Into::into),
        }),
        FromLink::ListSessions => Some(FromCluster::ListSessions),
        FromLink::Superseded { client_id, owner } => Some(FromCluster::Superseded {
            client_id: client_id.into(),
            owner: owner.map(Into::into),
        }),
        FromLink::TakenOver { client_id, by } => Some(FromCluster::TakenOver {
            client_id: client_id.into(),
            by: by.into(),
        }),
        FromLink::Up => {
            log_at!(Level::Notice, "cluster: connected to NATS.");
            None
        }
        FromLink::Down => {
            log_at!(
                Level::Warning,
                "cluster: lost the NATS connection; reconnecting (local clients are still served)."
            );
            None
        }
        FromLink::InterestRefused { filter, ack, .. } => {
            log_at!(
                Level::Warning,
                "cluster: filter '{}' stays local to this node (not a valid NATS subject, or the interest table is full).",
                filter.escape_debug()
            );
            ack.map(|(shard, seq)| FromCluster::InterestReady { shard, seq })
        }
        FromLink::InterestReady { ack, .. } => {
            ack.map(|(shard, seq)| FromCluster::InterestReady { shard, seq })
        }
        FromLink::SubsSaved { ack } => {
            ack.map(|(shard, seq)| FromCluster::SubsSaved { shard, seq })
        }
        FromLink::Released { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_survives_the_trip_through_an_envelope() {
        let m = Message {
            topic: "a/b".into(),
            payload: b"hi".to_vec().into_boxed_slice(),
            qos: QoS::AtLeastOnce,
            retain: true,
            props: None,
            expires_at_ms: Some(10_500),
            origin: 7,
            retain_stamp: 99,
            publisher: None,
            txn: 0,
            share_id: 0,
        };
        let e = envelope_of(&m, 10_000);
        assert_eq!(e.expiry_secs, Some(1), "half a second left rounds up");
        let back = message_of(e, 50_000).unwrap();
        assert_eq!((&*back.topic, &*back.payload), ("a/b", &b"hi"[..]));
        assert_eq!((back.qos, back.retain), (QoS::AtLeastOnce, true));
        assert_eq!(back.expires_at_ms, Some(51_000), "on the receiver's clock");
        assert_eq!(
            (back.origin, back.retain_stamp),
            (0, 0),
            "never a replica update"
        );
        let _ = Arc::new(back);
    }

    #[test]
    fn an_invalid_topic_from_nats_is_refused() {
        let mut e = envelope_of(&Message::plain("x", &[], QoS::AtMostOnce), 0);
        for bad in ["", "a/+", "a/#", "a\0b"] {
            e.topic = bad.into();
            assert!(message_of(e.clone(), 0).is_none(), "{bad:?}");
        }
    }
}
