//! What a packet does: connect, publish routing, subscribe, retained messages, wills.
//!
//! Owns: one shard's MQTT state, in parts that own their own state:
//! - [`Links`] (`link`): the connection table, one slab of `Conn { link, tx, io: X }`;
//!   `X` is the shard's part (transport, receive buffer) and is never looked into here.
//! - [`sessions::Sessions`]: sessions whose client id hashes to this shard.
//! - [`routes::Routes`]: the local trie, the replicated interest trie (filter → shards)
//!   and the replicated share-group membership.
//! - [`retained::RetainedReplica`], [`gate::SubAckGate`], the timer wheel.
//! - [`Effects`]: what a step asks of the shard (casts, links to flush, links to close,
//!   counters); the only way a link is marked dirty or closing.
//!
//! `Broker` coordinates the parts for the cold paths (connect, subscribe, close, timers);
//! the per-message path (`deliver`) is free functions over exactly the parts it touches.
//! Entry points for a driver (event loop, simulation, fuzzer): [`Broker::accept`],
//! [`Broker::ingest`], [`Broker::on_cast`], [`Broker::on_timers`], [`Broker::writable`],
//! [`Broker::close_link`], [`Broker::on_closed`], then [`Broker::effects`] and the `tx` of
//! each dirty link in [`Broker::links_mut`]; [`Broker::reload`] between turns (SIGHUP).
//!
//! Invariants: a session lives only on its home shard `home_shard(client_id)`; a SUBACK is
//! released only once every peer shard has applied the interest change it caused, so a
//! publish accepted anywhere after the SUBACK reaches the new subscriber. Must not touch:
//! sockets, polls, threads, shard or transport types: it writes into link buffers and
//! records effects for the driver to carry out.
#![forbid(unsafe_code)]

pub mod access;
mod auth;
pub mod bridges;
mod close;
pub mod cluster;
pub mod cluster_ack;
mod cluster_late;
mod cluster_owed;
mod connect;
mod deliver;
pub mod effects;
pub mod gate;
pub mod hot_topics;
pub mod ingest;
pub mod journal;
pub mod link;
pub mod login;
pub mod memory;
mod pacing;
mod persist;
mod publish;
mod reload;
pub mod retained;
pub mod routes;
pub mod sessions;
pub mod shared;
mod subscribe;
pub mod sys;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use crate::config::Config;
use crate::log::Level;
use crate::log_at;
pub use crate::metrics::RefuseReason;
use crate::protocol::{self, Packet, ReasonCode, Version};
use crate::session::{Limits, Message, MessagePool, Session, SubIds};
use crate::timer::TimerWheel;
use deliver::Sink;
pub use effects::Effects;
use gate::SubAckGate;
pub use ingest::Ingested;
pub use link::{Conn, Link, LinkState, Links};
pub use persist::RestoredInterest;
use retained::RetainedReplica;
use routes::Routes;
use sessions::Sessions;

/// A message between shards at the broker level.
#[derive(Debug)]
pub enum Cast {
    /// Route to local subscribers (and update the retained replica if it is retained).
    Publish(Arc<Message>),
    /// Shard `from` gained (`add`) or lost interest in `filter`; answer with `InterestAck`.
    Interest {
        /// The shard whose subscriptions changed.
        from: usize,
        /// The topic filter.
        filter: Box<str>,
        /// Gained or lost.
        add: bool,
        /// Sequence number of the change at `from`.
        seq: u64,
    },
    /// Shard `from` changed a share group's membership; answer with `InterestAck`.
    Share {
        /// The member's shard.
        from: usize,
        /// Group name.
        group: Box<str>,
        /// Topic filter.
        filter: Box<str>,
        /// The member.
        member: shared::ShareMember,
        /// What changed.
        op: shared::ShareOp,
        /// Sequence number of the change at `from` (shared with interest changes).
        seq: u64,
    },
    /// A message for one member of a share group whose session lives on the receiver.
    ShareDeliver(Box<shared::ShareDelivery>),
    /// Shard `from`'s statistics for `$SYS` (sent to shard 0).
    Sys {
        /// The reporting shard.
        from: usize,
        /// Its figures.
        report: Box<sys::SysReport>,
    },
    /// Every publish shard `from` sent before this is applied; answer `BarrierDone` once
    /// this shard's log holds them durably (persistence only).
    Barrier {
        /// The sending shard.
        from: usize,
        /// Its barrier sequence number.
        seq: u64,
    },
    /// Shard `from` has made everything before the receiver's barrier `seq` durable.
    BarrierDone {
        /// The answering shard.
        from: usize,
        /// The barrier answered.
        seq: u64,
    },
    /// The shared delivery the receiver forwarded to shard `from` under settle token
    /// `token` is durable wherever it landed (persistence only; `shared::SettleToken`).
    Settled {
        /// The answering shard.
        from: usize,
        /// The receiver's token.
        token: u64,
    },
    /// Origin `from` has committed its QoS 2 routings up to `txn` (persistence only):
    /// their PUBLISHes may go out (`journal::Journal::committed`). An origin is a shard's
    /// client routings (`from` = the shard) or, for the gateway, its routings of messages
    /// from the cluster queue (`from` = shards + the shard).
    Qos2Committed {
        /// The committing origin.
        from: usize,
        /// Its highest routing committed.
        txn: u64,
    },
    /// Cluster news the gateway shard passes on (`cluster::ClusterCast`).
    Cluster(Box<cluster::ClusterCast>),
    /// Shard `from` has applied every interest change up to `seq` of the receiver.
    InterestAck {
        /// The acknowledging shard.
        from: usize,
        /// Highest applied sequence number.
        seq: u64,
    },
}

/// What the event loop must do with a connection after a packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep reading.
    Continue,
    /// Close it at the end of the turn (the link is already `Closing`).
    Close,
    /// Move it, unread bytes and all, to shard `home`.
    Handoff {
        /// The session's home shard.
        home: usize,
    },
}

/// One local subscription in the trie: 12 bytes (there is one per subscription, so its
/// size is part of every subscription's cost; docs/robustness.md).
#[derive(Debug, Clone, Copy)]
pub struct Subscriber {
    /// Sessions slab key (a slab of more than 2^32 sessions would not fit in memory).
    session: u32,
    /// Options granted.
    pub options: protocol::SubscriptionOptions,
    /// Subscription Identifier (5.0); never 0, which the protocol forbids.
    sub_id: Option<std::num::NonZeroU32>,
}

impl Subscriber {
    /// Session `session`'s subscription with these options and identifier.
    ///
    /// # Panics
    /// If the session key does not fit in 32 bits: every session costs hundreds of bytes,
    /// so 2^32 of them cannot exist.
    pub fn new(
        session: usize,
        options: protocol::SubscriptionOptions,
        sub_id: Option<u32>,
    ) -> Self {
        Subscriber {
            session: u32::try_from(session).expect("session slab keys fit in 32 bits"),
            options,
            sub_id: sub_id.and_then(std::num::NonZeroU32::new),
        }
    }

    /// The session's slab key.
    pub fn session(&self) -> usize {
        self.session as usize
    }

    /// The Subscription Identifier (5.0).
    pub fn sub_id(&self) -> Option<u32> {
        self.sub_id.map(std::num::NonZeroU32::get)
    }
}

/// Subscribers of one filter. Two fit inline in the same 32 bytes as the heap form's
/// pointer, length and capacity (one inline would leave 24 bytes, which the allocator
/// rounds to the same 32-byte class).
pub type Subscribers = smallvec::SmallVec<[Subscriber; 2]>;

/// Counters of one shard.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// PUBLISH packets received from clients.
    pub publish_in: u64,
    /// PUBLISH packets written to clients.
    pub publish_out: u64,
    /// QoS 0 deliveries dropped because the subscriber's buffer was full.
    pub dropped_qos0: u64,
    /// Deliveries dropped because a session queue was full.
    pub dropped_queue: u64,
    /// Deliveries dropped because they exceeded the client's Maximum Packet Size.
    pub dropped_too_large: u64,
    /// Bytes read from client sockets (counted by the event loop).
    pub bytes_in: u64,
    /// Bytes written to client sockets (counted by the event loop).
    pub bytes_out: u64,
    /// Operations refused by the ACL: PUBLISH and SUBSCRIBE (deliveries are not counted).
    pub acl_denied: u64,
    /// MQTT packets decoded from clients, every kind.
    pub packets_in: u64,
    /// MQTT packets written to clients, every kind.
    pub packets_out: u64,
    /// PUBLISH packets received, by QoS.
    pub publish_in_qos: [u64; 3],
    /// Payload bytes of PUBLISH packets received, by QoS.
    pub publish_in_bytes_qos: [u64; 3],
    /// PUBLISH packets written, by QoS.
    pub publish_out_qos: [u64; 3],
    /// Payload bytes of PUBLISH packets written, by QoS.
    pub publish_out_bytes_qos: [u64; 3],
    /// Connections this shard accepted (handed-over ones are counted where accepted).
    pub connections_accepted: u64,
    /// CONNECTs refused, by [`RefuseReason`] (see [`refuse_reason`]).
    pub connections_refused: [u64; RefuseReason::ALL.len()],
    /// Failed authentications (bad credentials, a failed AUTH exchange): the auth part
    /// increments it.
    pub auth_failures: u64,
    /// TLS handshakes completed: the listeners part increments it.
    pub tls_handshakes: u64,
    /// TLS handshakes that failed: the listeners part increments it.
    pub tls_handshake_failures: u64,
    /// Sessions that ended because their expiry interval ran out.
    pub sessions_expired: u64,
}

/// The `reason` label of a refusing CONNACK code.
pub fn refuse_reason(code: ReasonCode) -> RefuseReason {
    match code {
        ReasonCode::UnsupportedProtocolVersion
        | ReasonCode::ClientIdentifierNotValid
        | ReasonCode::ProtocolError
        | ReasonCode::MalformedPacket => RefuseReason::Protocol,
        ReasonCode::BadUserNameOrPassword
        | ReasonCode::NotAuthorized
        | ReasonCode::BadAuthenticationMethod
        | ReasonCode::Banned => RefuseReason::NotAuthorized,
        ReasonCode::ServerUnavailable
        | ReasonCode::ServerBusy
        | ReasonCode::ServerMoved
        | ReasonCode::UseAnotherServer => RefuseReason::Unavailable,
        _ => RefuseReason::Limit,
    }
}

/// One match of a publish, merged per session (overlapping subscriptions → one delivery).
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    session: usize,
    /// The session's link, read while its cache line is hot: QoS 0 deliveries go straight
    /// to the link without touching the session again.
    link: Option<usize>,
    qos: protocol::QoS,
    retain_as_published: bool,
    sub_ids: SubIds,
}

/// One shard's broker state: a coordinator over parts that own their state. `X` is the
/// shard's part of each connection (see [`link::Links`]); the broker never looks inside.
pub struct Broker<X> {
    shard_id: usize,
    shards: usize,
    cfg: Arc<Config>,
    limits: Limits,
    /// Connections of this shard.
    links: Links<X>,
    /// Sessions whose home is this shard.
    sessions: Sessions,
    /// Local trie, interest, share groups.
    routes: Routes,
    /// This shard's replica of the retained store.
    retained: RetainedReplica,
    /// Retained messages written per session per turn (SUBSCRIBE backlogs).
    pacing: pacing::RetainedPacing,
    /// Subscriptions of ended sessions removed from the routes this turn
    /// (`close::UNROUTES_PER_TURN_MAX` bounds it).
    unrouted: usize,
    /// SUBACKs waiting for peers to apply routing changes.
    gate: SubAckGate,
    /// Publishers' acknowledgements waiting for the cluster link's queue stores.
    acks: cluster_ack::ClusterAckGate,
    /// Timers of this shard.
    timers: TimerWheel,
    /// What this turn asks of the shard: casts, flushes, closes, counters.
    fx: Effects,
    next_gen: u32,
    fired: Vec<u64>,
    /// The shard clock at the start of this turn (ms).
    now_ms: u64,
    /// Password and ACL files in force (swapped whole on reload, between turns).
    auth: Arc<access::AuthState>,
    /// Successful password checks of this shard (`None` if no random key was available).
    verify_cache: Option<crate::auth::VerifyCache>,
    /// Failed logins per source address.
    throttle: crate::auth::LoginThrottle,
    /// `$SYS`: the timer's generation, and on shard 0 every shard's latest report.
    sys: sys::SysState,
    /// Sampled publish counts per topic (the dashboard's busiest topics).
    hot: hot_topics::HotTopics,
    /// Where the broker stands against `memory_limit` (set by the driver).
    pressure: memory::MemoryPressure,
    /// Accounted bytes, broker-wide, as last reported by the driver.
    memory_used: u64,
    /// The bridges' local filters: which messages go to which bridge's shard.
    bridges: bridges::BridgeRoutes,
    /// The store's log, when persistence is on.
    journal: Option<journal::Journal>,
    /// Message allocations kept for reuse.
    msg_pool: MessagePool,
    /// This node's name when it runs in a cluster whose link the shard carries.
    cluster: Option<Box<str>>,
    /// Links waiting for a session's state from its old node: client id → (link token,
    /// that node).
    awaiting_state: std::collections::HashMap<Box<str>, (u64, Box<str>)>,
    /// The state to install in the session `complete_connect` is making (a handover).
    handover_in: Option<Box<cluster::SessionHandover>>,
    /// Copies of sessions' subscriptions from the cluster, by client id, for CONNECTs
    /// waiting for an old node's state that may not come.
    backups: std::collections::HashMap<Box<str>, Box<cluster::SessionHandover>>,
    /// Claims answered after their CONNECT gave up: the node each took its id from, for
    /// the client's retry here (`cluster_late`).
    late_claims: cluster_late::LateClaims,
    /// Share groups (`$share/G/F`) with members on other nodes, as the link's interest
    /// view last said (`FromCluster::ShareRemote`); the others' messages are delivered to
    /// a member here without the cluster (`Broker::dispatch_local_shared`).
    remote_shares: std::collections::HashSet<Box<str>>,
    /// Sessions listed for the link's check after a cut-off from NATS, by client id (the
    /// incarnation listed); an id leaves it when a claim for it is made here
    /// (`cluster_owed::on_superseded`).
    listed: std::collections::HashMap<Box<str>, u64>,
}

/// The session limits derived from the configuration (config knows no sessions).
fn session_limits(cfg: &Config) -> Limits {
    Limits {
        window: cfg.max_inflight,
        queue_max: cfg.max_queued_messages,
        queue_bytes_max: cfg.max_queued_bytes,
    }
}

/// The home shard of a client id: FNV-1a, stable across runs and threads.
pub fn home_shard(client_id: &str, shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in client_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % shards.max(1) as u64) as usize
}

impl<X> Broker<X> {
    /// Empty state for shard `shard_id` of `shards`.
    pub fn new(shard_id: usize, shards: usize, cfg: Arc<Config>, now_ms: u64) -> Broker<X> {
        let auth = Arc::new(access::AuthState::from_config(&cfg));
        let bridges = bridges::BridgeRoutes::new(&cfg.bridges, shard_id, shards);
        let mut b = Broker {
            shard_id,
            shards,
            limits: session_limits(&cfg),
            cfg,
            links: Links::default(),
            sessions: Sessions::new(shard_id),
            routes: Routes::default(),
            retained: RetainedReplica::default(),
            pacing: pacing::RetainedPacing::default(),
            unrouted: 0,
            gate: SubAckGate::new(shard_id, shards),
            acks: cluster_ack::ClusterAckGate::default(),
            timers: TimerWheel::new(now_ms),
            fx: Effects::default(),
            next_gen: 0,
            fired: Vec::new(),
            now_ms,
            auth,
            verify_cache: crate::auth::VerifyCache::new().ok(),
            throttle: crate::auth::LoginThrottle::new(),
            sys: sys::SysState::new(shards),
            hot: hot_topics::HotTopics::default(),
            pressure: memory::MemoryPressure::Normal,
            memory_used: 0,
            bridges,
            journal: None,
            msg_pool: MessagePool::default(),
            cluster: None,
            awaiting_state: std::collections::HashMap::new(),
            handover_in: None,
            backups: std::collections::HashMap::new(),
            late_claims: cluster_late::LateClaims::default(),
            remote_shares: std::collections::HashSet::new(),
            listed: std::collections::HashMap::new(),
        };
        b.arm_sys_timer(now_ms);
        b
    }

    /// A turn starts at `now_ms` (shard clock; never goes backwards), and what was due by
    /// then runs first ([`Broker::on_timers`]), before any input of the turn: bytes read,
    /// a bus message or a handed-over CONNECT. A timer's effect must not depend on whether
    /// its deadline fell just before the poll returned or just after: a keepalive that ran
    /// out closes the link even with a PINGREQ in its socket [MQTT-3.1.2-22], a session
    /// that expired is not resumed by a CONNECT that arrived later, and a Will already due
    /// is published, not cancelled by its client's reconnect [MQTT-3.1.3-9]. Every driver
    /// (`shard::event_loop`, `sim::driver`, the unit tests) starts its turns here.
    pub fn begin_turn(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        self.pacing.begin_turn();
        self.unrouted = 0;
        self.on_timers(self.now_ms);
    }

    /// The shard clock as of the current turn (ms).
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// When the next timer is due (shard clock, ms), for the poll timeout.
    pub fn next_timer_ms(&self) -> Option<u64> {
        self.timers.next_deadline_ms()
    }

    /// This shard's index.
    pub fn shard_id(&self) -> usize {
        self.shard_id
    }

    /// The parts a delivery needs, borrowed apart: routes, sessions, and where to write.
    fn parts(&mut self) -> (&mut Routes, &mut Sessions, Sink<'_, X>) {
        let sink = Sink {
            links: &mut self.links,
            fx: &mut self.fx,
            limits: &self.limits,
            max_buf: self.cfg.max_write_buffer,
            auth: &self.auth,
            journal: self.journal.as_mut(),
            pacing: &mut self.pacing,
        };
        (&mut self.routes, &mut self.sessions, sink)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// This shard's connections.
    pub fn links(&self) -> &Links<X> {
        &self.links
    }

    /// This shard's connections, mutably: the shard reaches its own part (`io`) and the
    /// write buffer here. Marking a link dirty or closing goes through [`Broker::effects`].
    pub fn links_mut(&mut self) -> &mut Links<X> {
        &mut self.links
    }

    /// What the broker has asked of the shard so far this turn.
    pub fn effects(&mut self) -> &mut Effects {
        &mut self.fx
    }

    /// The connections and the effects together (they borrow apart).
    pub fn links_and_effects(&mut self) -> (&mut Links<X>, &mut Effects) {
        (&mut self.links, &mut self.fx)
    }

    /// Sessions held by this shard.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Sessions held by this shard, for read-only figures (metrics, the admin lists).
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.iter().map(|(_, s)| s)
    }

    /// This shard's counters so far (read-only figures).
    pub fn stats(&self) -> &Stats {
        &self.fx.stats
    }

    /// Retained messages in this shard's replica.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// The busiest topics published to on this shard (sampled estimates, busiest first).
    pub fn hot_topics(&self, n: usize) -> Vec<(Arc<str>, u64)> {
        self.hot.top(n)
    }

    /// Payload bytes of the retained messages in this shard's replica.
    pub fn retained_bytes(&self) -> usize {
        self.retained.bytes()
    }

    /// Handle one decoded packet from link `key`.
    pub fn handle(&mut self, key: usize, packet: &Packet<'_>, now_ms: u64) -> Verdict {
        let Some(link) = self.links.get_mut(key) else {
            return Verdict::Close;
        };
        link.last_rx_ms = now_ms;
        match link.state {
            LinkState::Closing => return Verdict::Close,
            LinkState::ExpectConnect => {
                return match packet {
                    Packet::Connect(c) => self.on_connect(key, c, now_ms),
                    _ => self.close(key, None, "first packet was not CONNECT"),
                };
            }
            LinkState::AwaitAuth => {
                return match packet {
                    Packet::Auth(a) => self.on_auth(key, a, now_ms),
                    _ => self.protocol_error(
                        key,
                        "only AUTH may follow a CONNECT with an Authentication Method",
                    ),
                };
            }
            LinkState::Connected => {}
        }
        self.log_packet(key, packet);
        match packet {
            Packet::Publish(p) => self.on_publish(key, p, now_ms),
            Packet::PubAck(a) => self.on_puback(key, a.packet_id, now_ms),
            Packet::PubRec(a) => self.on_pubrec(key, a, now_ms),
            Packet::PubRel(a) => self.on_pubrel(key, a.packet_id),
            Packet::PubComp(a) => self.on_pubcomp(key, a.packet_id, now_ms),
            Packet::Subscribe(s) => self.on_subscribe(key, s, now_ms),
            Packet::Unsubscribe(u) => self.on_unsubscribe(key, u),
            Packet::PingReq => {
                // After any held ack: the link's answers keep their order.
                self.send_durable(key, &Packet::PingResp);
                Verdict::Continue
            }
            Packet::Disconnect(d) => self.on_disconnect(key, d),
            Packet::Connect(_) => self.protocol_error(key, "second CONNECT"),
            Packet::Auth(a) => self.on_auth(key, a, now_ms),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                self.protocol_error(key, "server-only packet from a client")
            }
        }
    }

    /// A packet from link `key` failed to decode: answer per its version and close.
    pub fn decode_error(&mut self, key: usize, err: &protocol::DecodeError) -> Verdict {
        let Some(link) = self.links.get(key) else {
            return Verdict::Close;
        };
        let reason = err.reason_code();
        let why = format!("bad packet: {err}");
        match link.state {
            LinkState::ExpectConnect => {
                // An unsupported protocol version is answered, so the client knows to retry
                // with another level [MQTT-3.1.2-2] (3.x gets return code 1 for it), and so
                // is any error in a CONNECT that names 5.0 [MQTT-4.13.1-1]. Other 3.x errors
                // and errors before the version is known are a plain close.
                if reason == ReasonCode::UnsupportedProtocolVersion || link.version.is_v5() {
                    self.send_connack(key, false, reason, None);
                }
                self.close(key, None, &why)
            }
            _ => self.close(key, Some(reason), &why),
        }
    }

    /// Append `packet` to link `key`'s output buffer.
    fn send(&mut self, key: usize, packet: &Packet<'_>) {
        let Some(c) = self.links.conn_mut(key) else {
            return;
        };
        protocol::encode(packet, c.link.version, c.tx.buf());
        self.fx.stats.packets_out += 1;
        if crate::log_sink::enabled(Level::Debug) {
            log_packet_line("Sending", "to", &c.link, packet);
        }
        self.fx.mark_dirty(key, &mut c.link);
    }

    /// Mark link `key` closing. With `reason` and a 5.0 client, send DISCONNECT first.
    fn close(&mut self, key: usize, reason: Option<ReasonCode>, why: &str) -> Verdict {
        let Some(link) = self.links.get_mut(key) else {
            return Verdict::Close;
        };
        if link.state == LinkState::Closing {
            return Verdict::Close;
        }
        let v5_connected = link.version == Version::V5 && link.state == LinkState::Connected;
        if let (Some(r), true) = (reason, v5_connected) {
            // A Reason String is always allowed on DISCONNECT [MQTT-3.1.2-29], but never
            // past the client's Maximum Packet Size [MQTT-3.1.2-24]: then it is left out.
            let max = link.client_max_packet;
            let mut d = protocol::Disconnect {
                reason: r,
                properties: protocol::Properties {
                    reason_string: Some(why),
                    ..protocol::Properties::default()
                },
            };
            if protocol::encoded_len(&Packet::Disconnect(d.clone()), Version::V5) > max {
                d.properties.reason_string = None;
            }
            self.send(key, &Packet::Disconnect(d));
        }
        let Some(link) = self.links.get_mut(key) else {
            return Verdict::Close;
        };
        self.fx.mark_closing(key, link);
        link.close_reason = reason;
        if crate::log_sink::connection_messages() {
            log_at!(
                Level::Notice,
                "Client {} ({}) closing: {why}.",
                link.client_id.as_deref().unwrap_or("<unknown>"),
                link.peer
            );
        }
        Verdict::Close
    }

    fn protocol_error(&mut self, key: usize, why: &str) -> Verdict {
        self.close(key, Some(ReasonCode::ProtocolError), why)
    }

    /// `Received ... from ...` at debug level, as `mosquitto -v` writes it.
    fn log_packet(&self, key: usize, packet: &Packet<'_>) {
        if !crate::log_sink::enabled(Level::Debug) {
            return;
        }
        let Some(link) = self.links.get(key) else {
            return;
        };
        log_packet_line("Received", "from", link, packet);
    }
}

/// One packet trace line: `Sending PUBLISH to id (d0, q1, r0, m3, 'a/b', ... (5 bytes))`,
/// `Received SUBSCRIBE from id`. Callers check that debug is enabled first.
pub(crate) fn log_packet_line(verb: &str, dir: &str, link: &Link, packet: &Packet<'_>) {
    let id = link.client_id.as_deref().unwrap_or("<unknown>");
    match packet {
        Packet::Publish(p) => log_at!(
            Level::Debug,
            "{verb} PUBLISH {dir} {id} (d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
            u8::from(p.dup),
            p.qos as u8,
            u8::from(p.retain),
            p.packet_id.map_or(0, |m| m.get()),
            p.topic,
            p.payload.len()
        ),
        other => log_at!(Level::Debug, "{verb} {} {dir} {id}", other.name()),
    }
}
