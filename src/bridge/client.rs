//! The bridge client: a sans-IO MQTT 3.1 / 3.1.1 / 5.0 client state machine.
//!
//! Owns: the link state (named for what it awaits: `Waiting` to retry, `AwaitSocket`,
//! `AwaitConnAck`, `Connected`), the receive and send buffers, packet ids, the in-flight
//! window, inbound QoS 2 ids awaiting PUBREL, keepalive and the address cursor.
//! Invariants: bytes are produced only for the current connection (`out` is cleared when a
//! connection ends); an in-flight message keeps its packet id until the remote completes
//! it; at most `Limits::out_bytes_max` bytes wait in `out` before queued messages are held
//! back. Must not touch: sockets, clocks, the broker.

use std::collections::{HashMap, VecDeque};

mod flows;
mod retire;

pub use flows::Offered;

use super::backoff::Backoff;
use super::queue::{ForwardQueue, OutMessage, Queued, Record, Restored};
use super::topics::Mapper;
use crate::config::bridge::{Address, BridgeConfig};
use crate::protocol::{
    decode, encode, Ack, ConnAck, Connect, Decoded, Packet, PacketId, Properties, QoS, ReasonCode,
    Version, Will,
};
use crate::session::ForwardedProps;

/// How long a TCP (or TLS) connect may take before the next address is tried, ms.
pub const SOCKET_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// How long the remote may take to answer CONNECT, ms.
pub const CONNACK_TIMEOUT_MS: u64 = 10_000;
/// While connected to a secondary address (no `round_robin`), how often the primary is
/// probed, ms.
pub const PRIMARY_PROBE_INTERVAL_MS: u64 = 20_000;
/// Receive Maximum we announce in 5.0: remote QoS 1/2 messages awaiting our answer.
pub const INBOUND_RECEIVE_MAX: u16 = 1024;

/// Sizes that come from the broker rather than the bridge's own section.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// In-flight window to the remote (capped by its Receive Maximum).
    pub max_inflight: u16,
    /// Largest packet accepted from the remote, bytes.
    pub packet_in_bytes_max: usize,
    /// Bytes that may wait in `output` before queued messages are held back.
    pub out_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_inflight: 20,
            packet_in_bytes_max: 16 * 1024 * 1024,
            out_bytes_max: 1024 * 1024,
        }
    }
}

/// What the bridge asks its owner to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a connection to this address now; report `socket_connected` or `socket_closed`.
    Connect(Address),
    /// Close the current connection (if any). The bridge has already planned what is next.
    Close,
    /// Try a TCP connection to the primary address and report `probe_result`.
    Probe(Address),
    /// Publish this message on the local broker.
    Local(LocalPublish),
    /// The bridge went up or down (also published locally when notifications are on).
    State {
        /// Connected and CONNACK accepted.
        up: bool,
        /// Why, for the log.
        detail: String,
    },
    /// Something the operator should see in the log.
    Log(String),
}

/// A message from the remote, renamed, to publish locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPublish {
    /// Local topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// QoS as received.
    pub qos: QoS,
    /// RETAIN as received.
    pub retain: bool,
    /// For QoS 1/2: hand back to `local_accepted` once the broker has it (durably).
    pub ack: Option<InboundAck>,
    /// MQTT 5 properties that travel with the message (5.0 remotes).
    pub props: Option<Box<ForwardedProps>>,
    /// Message Expiry Interval left, seconds (5.0 remotes).
    pub expiry_s: Option<u32>,
    /// From the remote; false for the bridge's own state notification.
    pub from_remote: bool,
}

/// The token of an inbound QoS 1/2 message awaiting local acceptance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundAck {
    generation: u64,
    packet_id: PacketId,
    qos: QoS,
}

impl InboundAck {
    /// The remote's packet id.
    pub fn packet_id(&self) -> PacketId {
        self.packet_id
    }

    /// The QoS the message came at (1 or 2).
    pub fn qos(&self) -> QoS {
        self.qos
    }
}

/// What `offer` did with a local message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// No `out` rule matches its topic.
    NotMatched,
    /// It came in over this bridge: not sent back.
    Loop,
    /// Queued or sent; for QoS 1/2 its `Enqueued` record has this sequence number.
    Accepted(Option<u64>),
    /// Dropped: queue full, or QoS 0 (any QoS with `local_cleansession`) while the remote
    /// is unreachable (counted).
    Dropped,
}

/// Counters of one bridge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages completed by the remote (QoS 0: written).
    pub forwarded: u64,
    /// Messages received from the remote.
    pub received: u64,
    /// Dropped: queue full.
    pub dropped_full: u64,
    /// Dropped: QoS 0 offered while not connected; with `local_cleansession`, any QoS
    /// offered while not connected, or queued or in flight when a connection ended.
    pub dropped_offline: u64,
    /// Dropped: larger than the remote's or our maximum packet size.
    pub dropped_too_large: u64,
    /// Refused by the remote (5.0 reason code ≥ 0x80).
    pub refused_by_remote: u64,
    /// Offers refused because the message came in over this bridge.
    pub loops_prevented: u64,
    /// Successful connections.
    pub connects: u64,
    /// Connection attempts or connections that failed.
    pub failures: u64,
    /// Dropped: their Message Expiry Interval ran out before they could be sent.
    pub expired: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// What an in-flight message awaits: PUBACK, PUBREC or PUBCOMP.
enum Stage {
    Ack,
    Rec,
    Comp,
}

#[derive(Debug, Clone)]
struct Inflight {
    seq: Option<u64>,
    id: PacketId,
    msg: OutMessage,
    stage: Stage,
    /// A stored QoS 2 message's packet (its PUBLISH in `Rec`, its PUBREL in `Comp`) is
    /// not written before its record (`Sent`, `Received`) is durable: the number of the
    /// record batch that must be (see `Bridge::records_durable`).
    held: Option<u64>,
    /// Its PUBLISH may already have reached the remote this bridge sends to under `id`:
    /// the next write of it sets DUP. False until first written, and for a message
    /// carried over by a reload to another remote (`carry_over`).
    dup: bool,
}

#[derive(Debug, Clone, Copy)]
struct Conn {
    window: usize,
    max_qos: QoS,
    retain_ok: bool,
    out_packet_max: usize,
    keepalive_ms: u64,
    last_tx_ms: u64,
    last_rx_ms: u64,
    ping_sent_ms: Option<u64>,
    probe_at_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
enum Link {
    Waiting { retry_at_ms: u64 },
    AwaitSocket { deadline_ms: u64 },
    AwaitConnAck { deadline_ms: u64 },
    Connected(Conn),
}

/// Fixed settings of one bridge, taken from its configuration.
#[derive(Debug)]
struct Settings {
    client_id: String,
    username: Option<String>,
    password: Option<String>,
    version: Version,
    clean: bool,
    /// `local_cleansession`: no queue while the remote is unreachable, none kept across
    /// a reconnect, no outbound records.
    local_clean: bool,
    keepalive_s: u16,
    notification_topic: Option<String>,
    notify_remote: bool,
    outgoing_retain: bool,
    max_packet_size: usize,
    addresses: Vec<Address>,
    round_robin: bool,
}

/// One bridge: see the module documentation.
#[derive(Debug)]
pub struct Bridge {
    set: Settings,
    limits: Limits,
    mapper: Mapper,
    link: Link,
    try_private: bool,
    cursor: usize,
    failures_in_row: usize,
    backoff: Backoff,
    queue: ForwardQueue,
    inflight: VecDeque<Inflight>,
    subscribing: Vec<PacketId>,
    next_id: u16,
    inbound_qos2: HashMap<PacketId, bool>,
    generation: u64,
    up: Option<bool>,
    rx: Vec<u8>,
    out: Vec<u8>,
    actions: VecDeque<Action>,
    records: Vec<Record>,
    stats: Stats,
    /// The highest QoS 2 routing committed, by origin shard (the shard's journal, as
    /// last learnt through `learn_commits`).
    commits: Vec<u64>,
    /// Whether its outbound records go to a log (`set_logged`): then a QoS 2 packet waits
    /// for its record (`Inflight::held`).
    logged: bool,
    /// Record batches taken so far (`take_records`), and the highest one durable.
    batches: u64,
    durable_batch: u64,
}

impl Bridge {
    /// A bridge for `cfg` that will connect at `now_ms`. `hostname` completes the default
    /// client id; `seed` drives the back-off jitter.
    pub fn new(cfg: &BridgeConfig, hostname: &str, limits: Limits, seed: u64, now_ms: u64) -> Self {
        let notification_topic = cfg.notifications.then(|| cfg.notification_topic(hostname));
        let max_packet_size = match cfg.max_packet_size {
            0 => usize::MAX,
            n => n as usize,
        };
        Bridge {
            set: Settings {
                client_id: cfg.remote_client_id(hostname),
                username: cfg.remote_username.clone(),
                password: cfg.remote_password.clone(),
                version: cfg.protocol,
                clean: cfg.cleansession,
                local_clean: cfg.local_cleansession,
                keepalive_s: cfg.keepalive_s,
                notification_topic,
                notify_remote: !cfg.notifications_local_only,
                outgoing_retain: cfg.outgoing_retain,
                max_packet_size,
                addresses: cfg.addresses.clone(),
                round_robin: cfg.round_robin,
            },
            limits,
            mapper: Mapper::new(cfg.topics.clone()),
            link: Link::Waiting {
                retry_at_ms: now_ms,
            },
            try_private: cfg.try_private,
            cursor: 0,
            failures_in_row: 0,
            backoff: Backoff::new(cfg.restart, seed),
            queue: ForwardQueue::new(cfg.max_queued_messages, cfg.max_queued_bytes),
            inflight: VecDeque::new(),
            subscribing: Vec::new(),
            next_id: 1,
            inbound_qos2: HashMap::new(),
            generation: 0,
            up: None,
            rx: Vec::new(),
            out: Vec::new(),
            actions: VecDeque::new(),
            records: Vec::new(),
            stats: Stats::default(),
            commits: Vec::new(),
            logged: false,
            batches: 0,
            durable_batch: 0,
        }
    }

    /// Rebuild the forwarding state from the store's records (before the first connect).
    /// Messages that were sent go back in flight under their packet id, to be resent with
    /// DUP; the rest are queued in order.
    pub fn restore(&mut self, restored: Restored) {
        self.inbound_qos2
            .extend(restored.inbound_held.into_iter().map(|id| (id, true)));
        let mut queued = Vec::new();
        for (seq, (msg, id, received)) in restored.messages {
            match id {
                Some(id) if msg.qos != QoS::AtMostOnce => {
                    let stage = match (msg.qos, received) {
                        (QoS::ExactlyOnce, true) => Stage::Comp,
                        (QoS::ExactlyOnce, false) => Stage::Rec,
                        _ => Stage::Ack,
                    };
                    self.inflight.push_back(Inflight {
                        seq: Some(seq),
                        id,
                        msg,
                        stage,
                        held: None,
                        dup: true,
                    });
                }
                _ => queued.push(Queued {
                    seq: Some(seq),
                    msg,
                }),
            }
        }
        self.queue.restore(queued);
    }

    /// Take over what a bridge replaced by a reload held (`retire`), as `restore` does.
    /// `same_remote` (`BridgeConfig::same_remote`): the new settings send to the same
    /// remote, so an in-flight PUBLISH is resent with DUP, as after a reconnect; when
    /// false the new remote never saw it and it goes with DUP 0 (under the same packet
    /// id, which that remote does not know either).
    ///
    /// With a log (`set_logged` first) every stored QoS 2 message in flight
    /// waits for this bridge's first record batch to be durable before its PUBLISH or
    /// PUBREL is written again. The old bridge may have held it for a record (`Sent`,
    /// `Received`) not durable yet, and the reload may have logged its records anew (a
    /// new local client id); the new batch comes after both in the log, so once it is
    /// durable they are. Without this the new bridge wrote it at its first connect, and a
    /// power cut could bring it back without its packet id (sent again under another).
    pub fn carry_over(&mut self, restored: Restored, same_remote: bool) {
        self.restore(restored);
        for f in self.inflight.iter_mut() {
            f.dup = same_remote;
        }
        if !self.logged {
            return;
        }
        let batch = self.batches + 1;
        for f in self.inflight.iter_mut() {
            if f.seq.is_some() && f.msg.qos == QoS::ExactlyOnce {
                f.held = Some(batch);
            }
        }
    }

    /// Whether record batch `batch` (the one `take_records` just handed out) must be
    /// held until durable even if it holds no record: a packet waits for it.
    pub fn waits_for_batch(&self, batch: u64) -> bool {
        batch > self.durable_batch && self.inflight.iter().any(|f| f.held == Some(batch))
    }

    /// The local filters whose messages the broker must `offer`, with their QoS.
    pub fn local_filters(&self) -> Vec<(String, QoS)> {
        self.mapper.local_filters()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        Stats {
            dropped_full: self.queue.dropped,
            ..self.stats
        }
    }

    /// Messages waiting in the queue, and in flight.
    pub fn depth(&self) -> (usize, usize) {
        (self.queue.len(), self.inflight.len())
    }

    /// Up, and every subscription sent on this connection has its SUBACK.
    pub fn subscribed(&self) -> bool {
        self.is_up() && self.subscribing.is_empty()
    }

    /// Connected and CONNACK accepted.
    pub fn is_up(&self) -> bool {
        matches!(self.link, Link::Connected(_))
    }

    /// The next action to perform, oldest first.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Records to append to the store (phase 2), oldest first. With `local_cleansession`
    /// the forwarding queue is not durable: only the inbound QoS 2 ids (the remote
    /// session's state) are recorded.
    pub fn take_records(&mut self) -> Vec<Record> {
        if self.set.local_clean {
            self.records.retain(|r| {
                matches!(
                    r,
                    Record::InboundHeld { .. } | Record::InboundReleased { .. }
                )
            });
        }
        self.batches += 1;
        std::mem::take(&mut self.records)
    }

    /// How many record batches `take_records` has handed out (the last one's number).
    pub fn record_batches(&self) -> u64 {
        self.batches
    }

    /// Bytes to write to the current connection.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// `n` bytes of `output` were written; more queued messages may now go out.
    pub fn consume(&mut self, n: usize, now_ms: u64) {
        self.out.drain(..n.min(self.out.len()));
        self.pump(now_ms);
    }

    /// When `tick` must next run.
    pub fn next_deadline_ms(&self) -> u64 {
        match self.link {
            Link::Waiting { retry_at_ms } => retry_at_ms,
            Link::AwaitSocket { deadline_ms } | Link::AwaitConnAck { deadline_ms } => deadline_ms,
            Link::Connected(c) => {
                let quiet = c.last_tx_ms.min(c.last_rx_ms) + c.keepalive_ms;
                let ping = c.ping_sent_ms.map_or(quiet, |s| s + c.keepalive_ms);
                c.probe_at_ms.map_or(ping, |p| p.min(ping))
            }
        }
    }

    /// Run the timers: retry, connect and CONNACK deadlines, keepalive, primary probe.
    pub fn tick(&mut self, now_ms: u64) {
        match self.link {
            Link::Waiting { retry_at_ms } if now_ms >= retry_at_ms => self.start_connect(now_ms),
            Link::AwaitSocket { deadline_ms } if now_ms >= deadline_ms => {
                self.fail(now_ms, "connect timed out")
            }
            Link::AwaitConnAck { deadline_ms } if now_ms >= deadline_ms => {
                self.fail(now_ms, "no CONNACK in time")
            }
            Link::Connected(c) => self.keepalive(now_ms, c),
            _ => {}
        }
    }

    fn keepalive(&mut self, now_ms: u64, mut c: Conn) {
        if let Some(sent) = c.ping_sent_ms {
            if now_ms >= sent + c.keepalive_ms {
                return self.fail(now_ms, "no answer to PINGREQ (dead peer)");
            }
        } else if now_ms >= c.last_tx_ms.min(c.last_rx_ms) + c.keepalive_ms {
            encode(&Packet::PingReq, self.set.version, &mut self.out);
            c.ping_sent_ms = Some(now_ms);
            c.last_tx_ms = now_ms;
        }
        if c.probe_at_ms.is_some_and(|at| now_ms >= at) {
            self.actions
                .push_back(Action::Probe(self.set.addresses[0].clone()));
            c.probe_at_ms = Some(now_ms + PRIMARY_PROBE_INTERVAL_MS);
        }
        self.link = Link::Connected(c);
    }

    /// The primary answered (or not) a probe made while on a secondary address: if it is
    /// back, move over to it.
    pub fn probe_result(&mut self, now_ms: u64, reachable: bool) {
        if reachable && self.is_up() && self.cursor != 0 {
            self.actions
                .push_back(Action::Log("primary address is back: moving to it".into()));
            self.end_connection(now_ms, "moving to the primary address");
            self.cursor = 0;
            self.failures_in_row = 0;
            self.link = Link::Waiting {
                retry_at_ms: now_ms,
            };
        }
    }

    fn start_connect(&mut self, now_ms: u64) {
        let addr = self.set.addresses[self.cursor % self.set.addresses.len()].clone();
        self.rx.clear();
        self.out.clear();
        self.link = Link::AwaitSocket {
            deadline_ms: now_ms + SOCKET_CONNECT_TIMEOUT_MS,
        };
        self.actions.push_back(Action::Connect(addr));
    }

    /// The connection asked for by `Action::Connect` is established: send CONNECT.
    pub fn socket_connected(&mut self, now_ms: u64) {
        if !matches!(self.link, Link::AwaitSocket { .. }) {
            return;
        }
        self.write_connect();
        self.link = Link::AwaitConnAck {
            deadline_ms: now_ms + CONNACK_TIMEOUT_MS,
        };
    }

    /// The connection failed or was closed (by the peer or an I/O error).
    pub fn socket_closed(&mut self, now_ms: u64, why: &str) {
        if !matches!(self.link, Link::Waiting { .. }) {
            self.fail(now_ms, why);
        }
    }

    fn write_connect(&mut self) {
        let will_topic = self
            .set
            .notification_topic
            .clone()
            .filter(|_| self.set.notify_remote);
        let v5 = self.set.version.is_v5();
        let properties = Properties {
            session_expiry_interval: (v5 && !self.set.clean).then_some(u32::MAX),
            receive_maximum: v5.then_some(INBOUND_RECEIVE_MAX),
            maximum_packet_size: v5
                .then(|| u32::try_from(self.limits.packet_in_bytes_max).unwrap_or(u32::MAX)),
            ..Properties::default()
        };
        let connect = Connect {
            version: self.set.version,
            clean_start: self.set.clean,
            keep_alive: self.set.keepalive_s,
            client_id: &self.set.client_id,
            will: will_topic.as_deref().map(|topic| Will {
                topic,
                payload: b"0",
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: Properties::default(),
            }),
            username: self.set.username.as_deref(),
            password: self.set.password.as_deref().map(str::as_bytes),
            properties,
        };
        let start = self.out.len();
        encode(&Packet::Connect(connect), self.set.version, &mut self.out);
        if self.try_private && !v5 {
            mark_bridge(&mut self.out[start..], self.set.version);
        }
    }

    /// End the current connection: what is in flight stays for the next one, unless the
    /// local session is clean (`local_cleansession`, as Mosquitto deletes a clean bridge's
    /// outgoing messages at each connect): then the queue and the in-flight messages go
    /// (counted as dropped offline).
    fn end_connection(&mut self, _now_ms: u64, why: &str) {
        self.actions.push_back(Action::Close);
        self.rx.clear();
        self.out.clear();
        self.subscribing.clear();
        self.generation += 1;
        if self.set.local_clean {
            let queued = std::iter::from_fn(|| self.queue.pop()).count();
            let sent = self.inflight.drain(..).filter(|f| f.seq.is_some()).count();
            self.stats.dropped_offline += (queued + sent) as u64;
        }
        self.set_up(false, why);
    }

    /// A connection attempt or connection failed: close, pick the next address, and
    /// retry at once if there is an untried address, else after the back-off.
    fn fail(&mut self, now_ms: u64, why: &str) {
        self.stats.failures += 1;
        let addr = &self.set.addresses[self.cursor % self.set.addresses.len()];
        let why = format!("{addr}: {why}");
        self.end_connection(now_ms, &why);
        self.cursor = (self.cursor + 1) % self.set.addresses.len();
        self.failures_in_row += 1;
        let wait = if self.failures_in_row < self.set.addresses.len() {
            0
        } else {
            self.failures_in_row = 0;
            self.backoff.next_ms()
        };
        self.link = Link::Waiting {
            retry_at_ms: now_ms + wait,
        };
    }

    fn set_up(&mut self, up: bool, detail: &str) {
        if self.up == Some(up) {
            return;
        }
        self.up = Some(up);
        if let Some(topic) = &self.set.notification_topic {
            self.actions.push_back(Action::Local(LocalPublish {
                topic: topic.clone(),
                payload: vec![if up { b'1' } else { b'0' }],
                qos: QoS::AtLeastOnce,
                retain: true,
                ack: None,
                props: None,
                expiry_s: None,
                from_remote: false,
            }));
        }
        self.actions.push_back(Action::State {
            up,
            detail: detail.to_string(),
        });
    }

    /// Bytes arrived from the remote.
    pub fn receive(&mut self, now_ms: u64, bytes: &[u8]) {
        if matches!(self.link, Link::Waiting { .. } | Link::AwaitSocket { .. }) {
            return;
        }
        let mut rx = std::mem::take(&mut self.rx);
        rx.extend_from_slice(bytes);
        let generation = self.generation;
        let mut start = 0;
        while self.generation == generation {
            let buf = &rx[start..];
            match decode(buf, self.set.version, self.limits.packet_in_bytes_max) {
                Ok(Decoded::Incomplete { .. }) => break,
                Ok(Decoded::Packet { packet, len }) => {
                    start += len;
                    self.handle(now_ms, packet);
                }
                Err(e) => {
                    self.fail(now_ms, &format!("bad packet from the remote: {e}"));
                    break;
                }
            }
        }
        if self.generation == generation {
            rx.drain(..start);
            self.rx = rx;
        }
        self.pump(now_ms);
    }

    fn handle(&mut self, now_ms: u64, packet: Packet<'_>) {
        match self.link {
            Link::AwaitConnAck { .. } => {
                return match packet {
                    Packet::ConnAck(a) => self.connack(now_ms, &a),
                    p => self.fail(now_ms, &format!("{} before CONNACK", p.name())),
                }
            }
            Link::Connected(ref mut c) => {
                c.last_rx_ms = now_ms;
                c.ping_sent_ms = None;
            }
            _ => return,
        }
        match packet {
            Packet::Publish(p) => self.inbound(now_ms, &p),
            Packet::PubAck(a) => self.acked(a.packet_id, Stage::Ack, a.reason),
            Packet::PubRec(a) => self.pubrec(now_ms, &a),
            Packet::PubComp(a) => self.acked(a.packet_id, Stage::Comp, a.reason),
            Packet::PubRel(a) => {
                if self.inbound_qos2.remove(&a.packet_id) == Some(true) {
                    let packet_id = a.packet_id;
                    self.records.push(Record::InboundReleased { packet_id });
                }
                self.send(now_ms, &Packet::PubComp(Ack::new(a.packet_id)));
            }
            Packet::SubAck(s) => self.suback(&s),
            Packet::UnsubAck(_) | Packet::PingResp => {}
            Packet::Disconnect(d) => {
                self.fail(now_ms, &format!("remote sent DISCONNECT ({:?})", d.reason))
            }
            p => self.fail(now_ms, &format!("unexpected {} from the remote", p.name())),
        }
    }

    fn connack(&mut self, now_ms: u64, a: &ConnAck<'_>) {
        if a.reason != ReasonCode::Success {
            if a.reason == ReasonCode::UnsupportedProtocolVersion && self.try_private {
                // Mosquitto's rule: a remote that refuses the bridge bit gets plain CONNECTs.
                self.try_private = false;
            }
            return self.fail(now_ms, &format!("CONNACK refused: {:?}", a.reason));
        }
        let p = &a.properties;
        let window = usize::from(
            self.limits
                .max_inflight
                .min(p.receive_maximum.unwrap_or(u16::MAX)),
        );
        let remote_max = p.maximum_packet_size.map_or(usize::MAX, |n| n as usize);
        let keepalive_s = p.server_keep_alive.unwrap_or(self.set.keepalive_s);
        let secondary = !self.set.round_robin && self.cursor != 0;
        self.link = Link::Connected(Conn {
            window: window.max(1),
            max_qos: match p.maximum_qos {
                Some(0) => QoS::AtMostOnce,
                Some(1) => QoS::AtLeastOnce,
                _ => QoS::ExactlyOnce,
            },
            retain_ok: p.retain_available != Some(0),
            out_packet_max: self.set.max_packet_size.min(remote_max),
            keepalive_ms: u64::from(keepalive_s.max(1)) * 1000,
            last_tx_ms: now_ms,
            last_rx_ms: now_ms,
            ping_sent_ms: None,
            probe_at_ms: secondary.then_some(now_ms + PRIMARY_PROBE_INTERVAL_MS),
        });
        self.stats.connects += 1;
        self.failures_in_row = 0;
        self.backoff.reset();
        if !a.session_present {
            // The remote forgot its side: our held ids mean nothing any more.
            for (packet_id, held) in self.inbound_qos2.drain() {
                if held {
                    self.records.push(Record::InboundReleased { packet_id });
                }
            }
        }
        self.resend_inflight(now_ms, a.session_present);
        self.subscribe(now_ms);
        self.notify_remote_up(now_ms);
        let addr = self.set.addresses[self.cursor].to_string();
        self.set_up(true, &format!("connected to {addr}"));
    }
}

/// Set the bridge bit (0x80) on the protocol level of an encoded 3.x CONNECT: Mosquitto's
/// `try_private`, which tells a Mosquitto remote this client is a bridge.
fn mark_bridge(connect: &mut [u8], version: Version) {
    let varint = connect
        .iter()
        .skip(1)
        .take(4)
        .take_while(|b| *b & 0x80 != 0)
        .count()
        + 1;
    let at = 1 + varint + 2 + version.protocol_name().len();
    if let Some(level) = connect.get_mut(at) {
        *level |= 0x80;
    }
}
