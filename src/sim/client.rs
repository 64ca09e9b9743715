//! A simulated MQTT client: scripted packets over a simulated connection.
//!
//! Owns: one client's protocol state as a correct client keeps it: its outgoing QoS 1/2
//! publishes until acknowledged (resent with DUP on every new connection), the QoS 2
//! packet ids it has received and not yet released (so it hands each message to the
//! application once), its subscription, and whether it has ever been connected. Every
//! packet is built with `protocol`'s encoders and every byte from the broker is decoded
//! with `protocol::decode`. Invariant: sessions are persistent (never expire), so whatever
//! the client does not yet have acknowledged is the broker's to keep. Must not touch: the
//! broker; it only writes bytes into its connection and reports what it saw to the oracle.

use std::collections::{BTreeSet, VecDeque};
use std::num::NonZeroU16;

use super::net::{ConnId, Net};
use super::oracle::{Delivery, Oracle};
use crate::protocol::{
    self, Ack, Connect, Decoded, Packet, Properties, Publish, QoS, ReasonCode, Subscribe,
    Subscription, SubscriptionList, SubscriptionOptions, Version,
};

/// Largest packet a simulated client accepts.
const PACKET_BYTES_MAX: usize = 1 << 20;
/// Packet id of the client's one SUBSCRIBE (publish ids stay below it).
const SUBSCRIBE_PID: u16 = 60_000;
/// Highest packet id used for publishes.
const PUBLISH_PID_MAX: u16 = 30_000;
/// Magic prefix of a simulated payload: `SM`, publisher index, sequence number.
const PAYLOAD_MAGIC: [u8; 2] = *b"SM";

/// What a client subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Publishes only.
    Publisher,
    /// Subscribes to `filter` at `qos` (and publishes too).
    Subscriber {
        /// A filter over `t/…`.
        filter: String,
        /// Requested QoS.
        qos: QoS,
    },
    /// A member of the share group `$share/g/t/#` at `qos` (and publishes too).
    Member {
        /// Requested QoS.
        qos: QoS,
    },
    /// Reads the retained store at the end: subscribes to `r/#`, never publishes.
    Checker,
    /// Watches the Wills: subscribes to `w/#` at QoS 1 (and publishes too).
    Watcher,
}

impl Role {
    /// The filter and QoS to subscribe to, if any.
    pub fn subscription(&self) -> Option<(String, QoS)> {
        match self {
            Role::Publisher => None,
            Role::Subscriber { filter, qos } => Some((filter.clone(), *qos)),
            Role::Member { qos } => Some(("$share/g/t/#".to_string(), *qos)),
            Role::Checker => Some(("r/#".to_string(), QoS::AtLeastOnce)),
            Role::Watcher => Some(("w/#".to_string(), QoS::AtLeastOnce)),
        }
    }
}

/// The acknowledgement an outgoing QoS 1/2 publish awaits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Ack,
    Rec,
    Comp,
}

/// One of the client's own publishes, kept until its flow completes.
#[derive(Debug, Clone)]
struct Out {
    pid: NonZeroU16,
    seq: u32,
    topic: String,
    qos: QoS,
    retain: bool,
    payload: Vec<u8>,
    stage: Stage,
}

/// A simulated client.
#[derive(Debug)]
pub struct Client {
    /// Index in the world's client list (also the publisher number in payloads).
    pub index: usize,
    /// Client identifier.
    pub id: String,
    /// Protocol version it speaks.
    pub version: Version,
    /// What it subscribes to.
    pub role: Role,
    /// Keep Alive it asks for, seconds.
    pub keep_alive: u16,
    /// Every connection starts a new session (Clean Start 1, no expiry), which the client
    /// starts afresh too: it subscribes again and gives up its unfinished publishes.
    pub clean: bool,
    /// Every CONNECT carries a Will (QoS 1 on `w/<index>`, no delay).
    pub has_will: bool,
    /// The sequence number of the Will of the current connection.
    will_seq: Option<u32>,
    /// The connection in use.
    pub conn: Option<ConnId>,
    /// A successful CONNACK arrived on `conn`.
    pub connected: bool,
    /// A successful CONNACK arrived on some connection before.
    ever_connected: bool,
    /// The SUBACK arrived (the subscription is in the session for good).
    pub subscribed: bool,
    rx: Vec<u8>,
    next_pid: u16,
    next_seq: u32,
    outgoing: VecDeque<Out>,
    qos2_in: BTreeSet<u16>,
}

/// Encode `packet` for `version` and queue it on `conn`.
fn send(net: &mut Net, conn: ConnId, version: Version, packet: &Packet<'_>) {
    if let Some(c) = net.conns.get_mut(conn) {
        if c.is_open() {
            protocol::encode(packet, version, &mut c.to_broker);
        }
    }
}

/// The publisher and sequence number a simulated payload carries.
pub fn parse_payload(p: &[u8]) -> Option<(usize, u32)> {
    if p.get(..2)? != PAYLOAD_MAGIC {
        return None;
    }
    let publisher = u32::from_be_bytes(p.get(2..6)?.try_into().ok()?);
    let seq = u32::from_be_bytes(p.get(6..10)?.try_into().ok()?);
    Some((publisher as usize, seq))
}

impl Client {
    /// A client that has never connected.
    pub fn new(index: usize, id: String, version: Version, role: Role, keep_alive: u16) -> Self {
        Client {
            index,
            id,
            version,
            role,
            keep_alive,
            clean: false,
            has_will: false,
            will_seq: None,
            conn: None,
            connected: false,
            ever_connected: false,
            subscribed: false,
            rx: Vec::new(),
            next_pid: 0,
            next_seq: 0,
            outgoing: VecDeque::new(),
            qos2_in: BTreeSet::new(),
        }
    }

    /// Publishes not yet acknowledged.
    pub fn outstanding(&self) -> usize {
        self.outgoing.len()
    }

    /// Start a session on the new connection `conn`: CONNECT, then every unfinished flow
    /// again (PUBLISH with DUP, or PUBREL), in the order first sent.
    pub fn connect(&mut self, conn: ConnId, step: u64, net: &mut Net, oracle: &mut Oracle) {
        self.conn = Some(conn);
        self.connected = false;
        self.rx.clear();
        if self.clean {
            self.subscribed = false;
            self.qos2_in.clear();
            for o in self.outgoing.drain(..) {
                oracle.abandoned(self.index, o.seq);
            }
        }
        let props = Properties {
            session_expiry_interval: (!self.clean).then_some(u32::MAX),
            ..Properties::default()
        };
        let will_topic = format!("w/{}", self.index);
        self.will_seq = None;
        let mut will_payload = Vec::new();
        if self.has_will {
            let seq = self.next_payload(0, &mut will_payload);
            oracle.published(self.index, seq, &will_topic, QoS::AtLeastOnce, false, step);
            oracle.will(self.index, seq);
            self.will_seq = Some(seq);
        }
        let c = Connect {
            version: self.version,
            clean_start: self.clean,
            keep_alive: self.keep_alive,
            client_id: &self.id,
            will: self.will_seq.map(|_| protocol::Will {
                topic: &will_topic,
                payload: &will_payload,
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Properties::default(),
            }),
            username: None,
            password: None,
            properties: if self.version.is_v5() {
                props
            } else {
                Properties::default()
            },
        };
        send(net, conn, self.version, &Packet::Connect(c));
        for o in &self.outgoing {
            match o.stage {
                Stage::Comp => {
                    send(net, conn, self.version, &Packet::PubRel(Ack::new(o.pid)));
                }
                _ => {
                    oracle.resent(self.index, o.seq);
                    send(net, conn, self.version, &Packet::Publish(o.publish(true)));
                }
            }
        }
    }

    /// The current connection ended without DISCONNECT after its CONNACK: its Will is due.
    pub fn will_due(&mut self, oracle: &mut Oracle) {
        if let (true, Some(seq)) = (self.connected, self.will_seq.take()) {
            oracle.will_due(self.index, seq);
        }
    }

    /// The next sequence number, and its payload (with `padding` bytes) in `payload`.
    fn next_payload(&mut self, padding: usize, payload: &mut Vec<u8>) -> u32 {
        let seq = self.next_seq;
        self.next_seq += 1;
        payload.clear();
        payload.extend_from_slice(&PAYLOAD_MAGIC);
        payload.extend_from_slice(&(self.index as u32).to_be_bytes());
        payload.extend_from_slice(&seq.to_be_bytes());
        payload.resize(10 + padding, b'.');
        seq
    }

    /// The broker lost power: the connection is gone. A persistent session whose CONNACK
    /// arrived is not: CONNACK leaves only once the session's record is durable
    /// (docs/persistence.md), so the next CONNACK must say Session Present 1.
    pub fn power_cut(&mut self) {
        self.lost();
    }

    /// The connection ended (closed by the broker, broken, or given up).
    pub fn lost(&mut self) {
        self.will_seq = None;
        self.conn = None;
        self.connected = false;
        self.rx.clear();
    }

    fn alloc_pid(&mut self) -> Option<NonZeroU16> {
        for _ in 0..PUBLISH_PID_MAX {
            self.next_pid = if self.next_pid >= PUBLISH_PID_MAX {
                1
            } else {
                self.next_pid + 1
            };
            let pid = NonZeroU16::new(self.next_pid)?;
            if !self.outgoing.iter().any(|o| o.pid == pid) {
                return Some(pid);
            }
        }
        None
    }

    /// Publish the next message on `topic`: recorded with the oracle, sent now.
    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &mut self,
        topic: String,
        qos: QoS,
        retain: bool,
        padding: usize,
        step: u64,
        net: &mut Net,
        oracle: &mut Oracle,
    ) {
        let Some(conn) = self.conn else { return };
        let mut payload = Vec::with_capacity(10 + padding);
        let seq = self.next_payload(padding, &mut payload);
        oracle.published(self.index, seq, &topic, qos, retain, step);
        let pid = match qos {
            QoS::AtMostOnce => None,
            _ => self.alloc_pid(),
        };
        let out = Out {
            pid: pid.unwrap_or(NonZeroU16::MIN),
            seq,
            topic,
            qos,
            retain,
            payload,
            stage: if qos == QoS::ExactlyOnce {
                Stage::Rec
            } else {
                Stage::Ack
            },
        };
        send(
            net,
            conn,
            self.version,
            &Packet::Publish(out.publish(false)),
        );
        if qos != QoS::AtMostOnce && pid.is_some() {
            self.outgoing.push_back(out);
        }
    }

    /// Send DISCONNECT (normal) and stop using the connection.
    pub fn disconnect(&mut self, net: &mut Net) {
        if let Some(conn) = self.conn {
            let d = protocol::Disconnect {
                reason: ReasonCode::Success,
                properties: Properties::default(),
            };
            send(net, conn, self.version, &Packet::Disconnect(d));
            if let Some(c) = net.conns.get_mut(conn) {
                c.abandoned = true;
            }
        }
        self.lost();
    }

    /// Take `bytes` from the connection and act on every whole packet in them.
    pub fn receive(&mut self, bytes: &[u8], step: u64, net: &mut Net, oracle: &mut Oracle) {
        self.rx.extend_from_slice(bytes);
        let mut used = 0;
        let rx = std::mem::take(&mut self.rx);
        loop {
            match protocol::decode(&rx[used..], self.version, PACKET_BYTES_MAX) {
                Ok(Decoded::Incomplete { .. }) => break,
                Ok(Decoded::Packet { packet, len }) => {
                    used += len;
                    self.on_packet(&packet, step, net, oracle);
                }
                Err(e) => {
                    oracle.violation(format!(
                        "{} could not decode the broker's bytes: {e}",
                        self.id
                    ));
                    used = rx.len();
                    break;
                }
            }
            if self.conn.is_none() {
                break;
            }
        }
        if self.conn.is_some() {
            self.rx = rx;
            self.rx.drain(..used);
        }
    }

    fn on_packet(&mut self, packet: &Packet<'_>, step: u64, net: &mut Net, oracle: &mut Oracle) {
        let Some(conn) = self.conn else { return };
        match packet {
            Packet::ConnAck(a) => self.on_connack(a, conn, net, oracle),
            Packet::SubAck(s) => {
                let granted_ok = s.codes.iter().all(|&c| c < 0x80);
                if !granted_ok {
                    oracle.violation(format!("{} SUBACK refused: {:?}", self.id, s.codes));
                }
                if !self.subscribed {
                    self.subscribed = true;
                    oracle.subscribed(self.index, step, self.clean);
                }
            }
            Packet::Publish(p) => self.on_publish(p, conn, step, net, oracle),
            Packet::PubRel(a) => {
                self.qos2_in.remove(&a.packet_id.get());
                send(
                    net,
                    conn,
                    self.version,
                    &Packet::PubComp(Ack::new(a.packet_id)),
                );
            }
            Packet::PubAck(a) => self.on_ack(a, Stage::Ack, conn, net, oracle),
            Packet::PubRec(a) => self.on_ack(a, Stage::Rec, conn, net, oracle),
            Packet::PubComp(a) => self.on_ack(a, Stage::Comp, conn, net, oracle),
            Packet::Disconnect(_) | Packet::PingResp | Packet::UnsubAck(_) => {}
            other => oracle.violation(format!(
                "{} got a {} from the broker",
                self.id,
                other.name()
            )),
        }
    }

    fn on_connack(
        &mut self,
        a: &protocol::ConnAck<'_>,
        conn: ConnId,
        net: &mut Net,
        oracle: &mut Oracle,
    ) {
        if a.reason.is_error() {
            oracle.violation(format!("{} CONNACK refused: {:?}", self.id, a.reason));
            return;
        }
        if self.clean && a.session_present {
            oracle.violation(format!(
                "{} asked for a clean start but CONNACK says Session Present 1",
                self.id
            ));
        } else if !self.clean && self.ever_connected && !a.session_present {
            oracle.violation(format!(
                "{} resumed a session that never expires but CONNACK says Session Present 0",
                self.id
            ));
        }
        self.ever_connected = true;
        // Were the Will of this connection due later, it is owed across power cuts: this
        // CONNACK waited for the records of its CONNECT, the Will among them.
        self.connected = true;
        if let (false, Some((filter, qos))) = (self.subscribed, self.role.subscription()) {
            let subs = [Subscription {
                filter: &filter,
                options: SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
            }];
            let s = Subscribe {
                packet_id: NonZeroU16::new(SUBSCRIBE_PID).unwrap_or(NonZeroU16::MIN),
                properties: Properties::default(),
                filters: SubscriptionList::Slice(&subs),
            };
            send(net, conn, self.version, &Packet::Subscribe(s));
        }
    }

    fn on_publish(
        &mut self,
        p: &Publish<'_>,
        conn: ConnId,
        step: u64,
        net: &mut Net,
        oracle: &mut Oracle,
    ) {
        let Some((publisher, seq)) = parse_payload(p.payload) else {
            oracle.violation(format!(
                "{} got a payload nobody published on {}",
                self.id, p.topic
            ));
            return;
        };
        let app = match (p.qos, p.packet_id) {
            (QoS::ExactlyOnce, Some(pid)) => {
                send(net, conn, self.version, &Packet::PubRec(Ack::new(pid)));
                self.qos2_in.insert(pid.get())
            }
            (QoS::AtLeastOnce, Some(pid)) => {
                send(net, conn, self.version, &Packet::PubAck(Ack::new(pid)));
                true
            }
            _ => true,
        };
        oracle.delivered(Delivery {
            client: self.index,
            publisher,
            seq,
            qos: p.qos,
            retain: p.retain,
            app,
            step,
        });
    }

    fn on_ack(
        &mut self,
        a: &Ack<'_>,
        stage: Stage,
        conn: ConnId,
        net: &mut Net,
        oracle: &mut Oracle,
    ) {
        // A PUBCOMP 0x92 answers a PUBREL resent after the broker had already released the
        // id (its first PUBCOMP was lost with the connection): the flow is complete.
        if a.reason.is_error() && stage != Stage::Comp {
            oracle.violation(format!(
                "{} publish {} refused: {:?}",
                self.id, a.packet_id, a.reason
            ));
        }
        let Some(i) = self.outgoing.iter().position(|o| o.pid == a.packet_id) else {
            oracle.violation(format!(
                "{} got an ack for unknown packet id {}",
                self.id, a.packet_id
            ));
            return;
        };
        let o = &mut self.outgoing[i];
        match (stage, o.stage) {
            (Stage::Ack, Stage::Ack) | (Stage::Comp, Stage::Comp) => {
                oracle.acked(self.index, o.seq);
                self.outgoing.remove(i);
            }
            (Stage::Rec, Stage::Rec | Stage::Comp) => {
                oracle.acked(self.index, o.seq);
                o.stage = Stage::Comp;
                send(
                    net,
                    conn,
                    self.version,
                    &Packet::PubRel(Ack::new(a.packet_id)),
                );
            }
            _ => oracle.violation(format!(
                "{} got the wrong ack for packet id {} ({:?} awaited)",
                self.id, a.packet_id, o.stage
            )),
        }
    }
}

impl Out {
    fn publish(&self, dup: bool) -> Publish<'_> {
        Publish {
            dup: dup && self.qos != QoS::AtMostOnce,
            qos: self.qos,
            retain: self.retain,
            topic: &self.topic,
            packet_id: (self.qos != QoS::AtMostOnce).then_some(self.pid),
            properties: Properties::default(),
            payload: &self.payload,
        }
    }
}
