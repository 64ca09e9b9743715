//! `BridgeRoutes`: which local messages the bridges must see, and messages they bring in.
//!
//! Owns: the bridges' local filters (`out`/`both` rules) as two tries built once from the
//! configuration (the same on every shard, so nothing is replicated at run time): every
//! filter → the shards owning a bridge that wants it (a bridge lives on the shard its
//! name hashes to, [`bridge_owner`]), and this shard's own bridges' filters → the bridges that want them. A
//! message that matches a bridge is cast to its owner shard like one for a subscriber; on
//! the owner, `route_local` adds it to `Effects::bridge_offers` for the shard to offer.
//!
//! Invariants: a message reaches each bridge's offer list at most once (on the owner shard
//! only, whether it entered there or came over the bus); a message a bridge brought in
//! carries that bridge's origin (`bridge_origin`), which no session uid ever equals, so
//! the bridge recognises it and does not send it back. A bridge with `local_username`
//! (its `LocalLogin`) is under the ACL like a client of that name: a message is offered
//! to it only if it may read the topic, and a message it brings in from the remote is
//! published only if it may write it; a bridge without one is checked against nothing
//! (Mosquitto's rule). Must not touch: bridge clients or sockets (the shard owns them),
//! sessions, the subscription trie.

use std::sync::Arc;

use super::journal::HeldAck;
use super::{Broker, Effects};
use crate::auth::{Acl, AclCache, Client};
use crate::bridge::Mapper;
use crate::config::bridge::BridgeConfig;
use crate::protocol::QoS;
use crate::session::{ForwardedProps, Message};
use crate::store::{BridgeOp, Record};
use crate::topic::trie::FilterTrie;

/// Origins at and above this value name bridges (session uids stay below 2^62).
const BRIDGE_ORIGIN_BASE: u64 = u64::MAX - 64;

/// The origin tag of messages brought in by bridge `i`.
pub fn bridge_origin(i: usize) -> u64 {
    BRIDGE_ORIGIN_BASE + i as u64
}

/// The bridge whose origin tag `origin` is, if it is one.
pub fn origin_bridge(origin: u64) -> Option<usize> {
    (origin >= BRIDGE_ORIGIN_BASE).then(|| (origin - BRIDGE_ORIGIN_BASE) as usize)
}

/// The shard that runs the bridge named `name` in a broker with `shards` shards: a hash
/// of the name, so that adding or removing other bridges by a reload never moves it (its
/// socket and queue stay where they are).
pub fn bridge_owner(name: &str, shards: usize) -> usize {
    super::home_shard(name, shards)
}

/// A bridge's identity on the local broker (`local_username`, `local_clientid`), with
/// the cache of its ACL decisions.
struct LocalLogin {
    username: String,
    client_id: String,
    cache: AclCache,
}

/// The bridges' local filters, as seen from one shard.
#[derive(Default)]
pub struct BridgeRoutes {
    /// Filter → bitmask of the shards owning a bridge that offers it.
    owners: FilterTrie<u64>,
    /// Filter → bitmask of this shard's bridges that offer it.
    mine: FilterTrie<u64>,
    /// By bridge index: its local login, when it has a `local_username`.
    logins: Vec<Option<LocalLogin>>,
}

impl BridgeRoutes {
    /// The filters of `bridges` for shard `me` of `shards`.
    pub fn new(bridges: &[BridgeConfig], me: usize, shards: usize) -> BridgeRoutes {
        let mut r = BridgeRoutes::default();
        let host = bridges
            .iter()
            .any(|b| b.local_username.is_some())
            .then(crate::config::bridge::hostname)
            .unwrap_or_default();
        for (i, b) in bridges.iter().enumerate().take(64) {
            r.logins.push(b.local_username.as_ref().map(|u| LocalLogin {
                username: u.clone(),
                client_id: b.local_client_id(&host),
                cache: AclCache::new(),
            }));
            let owner = bridge_owner(&b.name, shards);
            for (filter, _qos) in Mapper::new(b.topics.clone()).local_filters() {
                *r.owners.entry_or_insert_with(&filter, || 0) |= 1u64 << owner;
                if owner == me {
                    *r.mine.entry_or_insert_with(&filter, || 0) |= 1u64 << i;
                }
            }
        }
        r
    }

    /// Whether this shard runs a bridge with an `out`/`both` rule.
    pub fn any_here(&self) -> bool {
        !self.mine.is_empty()
    }

    /// The shards (other than `me`) that run a bridge wanting `topic`.
    pub fn remote_mask(&self, topic: &str, me: usize) -> u64 {
        let mut mask = 0u64;
        if !self.owners.is_empty() {
            self.owners.for_each_match(topic, |m| mask |= *m);
        }
        mask & !(1u64 << me)
    }

    /// Add `msg` to the offer list of each of this shard's bridges that wants it and,
    /// under `acl` (the ACL of the settings outside any listener), may read it. Returns
    /// whether any does.
    pub fn offer(&mut self, msg: &Arc<Message>, acl: Option<&Acl>, fx: &mut Effects) -> bool {
        if self.mine.is_empty() {
            return false;
        }
        let mut bridges = 0u64;
        self.mine.for_each_match(&msg.topic, |m| bridges |= *m);
        let mut any = false;
        let mut i = 0;
        while bridges != 0 {
            if bridges & 1 != 0 && self.may(i, acl, |c, acl, who| c.can_read(acl, who, &msg.topic))
            {
                fx.bridge_offers.push((i, msg.clone()));
                any = true;
            }
            bridges >>= 1;
            i += 1;
        }
        any
    }

    /// May bridge `i` publish `topic` locally (a message from its remote) under `acl`?
    pub fn may_publish(&mut self, i: usize, acl: Option<&Acl>, topic: &Arc<str>) -> bool {
        self.may(i, acl, |c, acl, who| c.can_publish(acl, who, topic))
    }

    /// `decide` for bridge `i`'s login, or true when it has none or there is no ACL.
    fn may(
        &mut self,
        i: usize,
        acl: Option<&Acl>,
        decide: impl FnOnce(&mut AclCache, &Acl, Client<'_>) -> bool,
    ) -> bool {
        let (Some(acl), Some(Some(login))) = (acl, self.logins.get_mut(i)) else {
            return true;
        };
        let LocalLogin {
            username,
            client_id,
            cache,
        } = login;
        let who = Client {
            username: Some(username),
            client_id,
        };
        decide(cache, acl, who)
    }
}

/// A message a bridge brings in, renamed to its local topic.
#[derive(Debug)]
pub struct Inbound<'a> {
    /// Local topic.
    pub topic: &'a str,
    /// Payload.
    pub payload: &'a [u8],
    /// QoS as received.
    pub qos: QoS,
    /// RETAIN as received.
    pub retain: bool,
    /// MQTT 5 properties from the remote.
    pub props: Option<Box<ForwardedProps>>,
    /// Message Expiry Interval left, seconds.
    pub expiry_s: Option<u32>,
    /// It came from the remote (write-checked against the bridge's `local_username`);
    /// false for the bridge's own state and figures.
    pub from_remote: bool,
}

/// Why a message a bridge brought in was not published locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a valid topic name.
    InvalidTopic,
    /// The ACL does not let the bridge's `local_username` publish it.
    Denied,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::InvalidTopic => "not a valid topic name",
            Refused::Denied => "its local_username may not publish it under the ACL",
        })
    }
}

impl<X> Broker<X> {
    /// Messages routed to this shard's bridges that the shard has not offered yet, or
    /// released inbound acknowledgements it has not passed on.
    pub fn pending_bridge_offers(&self) -> bool {
        !self.fx.bridge_offers.is_empty()
            || !self.fx.bridge_acks.is_empty()
            || self.fx.bridge_commits_moved
            || !self.fx.bridge_durable.is_empty()
    }

    /// Hold a notice that bridge run `uid`'s outbound records up to its batch `batch`
    /// (appended this turn) are durable; it comes back in `Effects::bridge_durable`.
    /// False with persistence off: they are as durable as they will be.
    pub fn hold_bridge_records(&mut self, uid: usize, batch: u64) -> bool {
        match self.journal.as_mut() {
            Some(j) => {
                j.hold(HeldAck::BridgeRecords { bridge: uid, batch });
                true
            }
            None => false,
        }
    }

    /// Take the released record notices (see `hold_bridge_records`), oldest first.
    pub fn take_bridge_durable(&mut self) -> Vec<(usize, u64)> {
        std::mem::take(&mut self.fx.bridge_durable)
    }

    /// The highest QoS 2 routing committed, by origin shard (empty without a log, where
    /// no routing is numbered): what a bridge's queued QoS 2 messages wait for
    /// (`Bridge::learn_commits`). Clears `Effects::bridge_commits_moved`.
    pub fn qos2_commits(&mut self) -> &[u64] {
        self.fx.bridge_commits_moved = false;
        self.journal.as_ref().map_or(&[], |j| j.commits())
    }

    /// Whether bridge records go to a log (persistence on).
    pub fn logs_bridges(&self) -> bool {
        self.journal.is_some()
    }

    /// Append a change to bridge `name`'s forwarding state to this turn's batch. A local
    /// publisher's acknowledgement held this turn (or a peer's barrier answered after it)
    /// then covers it.
    pub fn log_bridge(&mut self, name: &str, op: BridgeOp<'_>) {
        if let Some(j) = self.journal.as_mut() {
            j.log(Record::Bridge {
                bridge: name.into(),
                op,
            });
        }
    }

    /// Hold the acknowledgement of a message the bridge run `uid` (the shard's id for it)
    /// just brought in until this turn's records (and the peers it was published to) are
    /// durable; `uid` comes back in `Effects::bridge_acks`. False with persistence off:
    /// acknowledge at once.
    pub fn hold_bridge_ack(&mut self, uid: usize) -> bool {
        match self.journal.as_mut() {
            Some(j) => {
                j.hold(HeldAck::Bridge { bridge: uid });
                true
            }
            None => false,
        }
    }

    /// Take the released inbound acknowledgements (bridge indices, oldest first).
    pub fn take_bridge_acks(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.fx.bridge_acks)
    }

    /// Publish a message brought in by bridge `i` (or its state notification) as if a
    /// local client had sent it, tagged with the bridge's origin. Like Mosquitto's
    /// bridges, a bridge without `local_username` is not checked against the ACL (the
    /// remote decided who may publish it); with one, a message from the remote is
    /// write-checked as that user's. Local subscribers still read only what their rights
    /// allow. Nothing is routed when the topic is not a valid topic name or is refused.
    pub fn publish_from_bridge(
        &mut self,
        i: usize,
        m: Inbound<'_>,
        now_ms: u64,
    ) -> Result<(), Refused> {
        if !crate::topic::valid_topic_name(m.topic) {
            return Err(Refused::InvalidTopic);
        }
        let topic: Arc<str> = Arc::from(m.topic);
        if m.from_remote && !self.bridges.may_publish(i, self.auth.bridge_acl(), &topic) {
            return Err(Refused::Denied);
        }
        self.fx.stats.publish_in += 1;
        let msg = Message {
            topic,
            payload: m.payload.into(),
            qos: m.qos,
            retain: m.retain,
            props: m.props,
            expires_at_ms: m
                .expiry_s
                .map(|s| now_ms.saturating_add(u64::from(s) * 1000)),
            origin: bridge_origin(i),
            retain_stamp: 0,
            publisher: None,
            txn: 0,
            share_id: 0,
        };
        self.publish_message(msg, now_ms);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::bridge::BridgeParser;

    fn bridges(text: &str) -> Vec<BridgeConfig> {
        let mut p = BridgeParser::default();
        for (n, line) in text.lines().enumerate() {
            let (k, v) = line.split_once(' ').unwrap_or((line, ""));
            p.line(k, v, n + 1).expect("valid line");
        }
        p.finish().expect("valid bridges")
    }

    fn msg(topic: &str, origin: u64) -> Arc<Message> {
        Arc::new(Message {
            origin,
            ..Message::plain(topic, &[], QoS::AtLeastOnce)
        })
    }

    #[test]
    fn owner_shards_and_offers() {
        let b = bridges(
            "connection a\naddress 127.0.0.1\ntopic s/# out 1 site/\n\
             connection b\naddress 127.0.0.1\ntopic s/x both 1\ntopic cmd/# in 1",
        );
        let mut on0 = BridgeRoutes::new(&b, 0, 2);
        let mut on1 = BridgeRoutes::new(&b, 1, 2);
        assert_eq!(on0.remote_mask("site/s/x", 0), 0, "bridge a is on shard 0");
        assert_eq!(
            on1.remote_mask("site/s/x", 1),
            1,
            "from shard 1 it goes to 0"
        );
        assert_eq!(on0.remote_mask("s/x", 0), 2, "bridge b is on shard 1");
        assert_eq!(on0.remote_mask("cmd/go", 0), 0, "`in` rules offer nothing");
        let mut fx = Effects::default();
        assert!(on1.offer(&msg("s/x", 0), None, &mut fx));
        assert!(!on1.offer(&msg("site/s/x", 0), None, &mut fx));
        assert!(on0.offer(&msg("site/s/x", 0), None, &mut fx));
        let got: Vec<usize> = fx.bridge_offers.iter().map(|(i, _)| *i).collect();
        assert_eq!(got, vec![1, 0]);
    }

    #[test]
    fn a_local_username_puts_the_bridge_under_the_acl() {
        let b = bridges(
            "connection a\naddress 127.0.0.1\ntopic # both 1\nlocal_username site\n\
             local_clientid lc\n\
             connection b\naddress 127.0.0.1\ntopic # both 1",
        );
        let acl = Acl::parse(
            "user site\ntopic read out/ok/#\ntopic write in/ok/#\npattern read %c/#\n",
            "acl",
        )
        .expect("valid ACL");
        let mut r = BridgeRoutes::new(&b, 0, 1);
        let offered = |r: &mut BridgeRoutes, topic: &str| {
            let mut fx = Effects::default();
            r.offer(&msg(topic, 0), Some(&acl), &mut fx);
            fx.bridge_offers.iter().map(|(i, _)| *i).collect::<Vec<_>>()
        };
        assert_eq!(offered(&mut r, "out/ok/1"), vec![0, 1]);
        assert_eq!(offered(&mut r, "out/secret"), vec![1], "a may not read it");
        assert_eq!(offered(&mut r, "lc/x"), vec![0, 1], "%c is local_clientid");
        let t = |s: &str| -> Arc<str> { Arc::from(s) };
        assert!(r.may_publish(0, Some(&acl), &t("in/ok/1")));
        assert!(!r.may_publish(0, Some(&acl), &t("in/secret")));
        assert!(
            !r.may_publish(0, Some(&acl), &t("out/ok/1")),
            "read is not write"
        );
        assert!(
            r.may_publish(1, Some(&acl), &t("in/secret")),
            "b has no login"
        );
        assert!(r.may_publish(0, None, &t("in/secret")), "no ACL file");
    }

    #[test]
    fn bridge_origins_are_never_session_uids() {
        assert_eq!(origin_bridge(bridge_origin(63)), Some(63));
        assert_eq!(origin_bridge((63u64 << 56) | 0xff_ffff_ffff), None);
        assert_eq!(origin_bridge(0), None);
    }
}
