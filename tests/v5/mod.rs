//! MQTT 5.0 test helpers on top of `tests/common`: a raw 5.0 client that keeps every
//! property of what it receives (the shared `RawClient` summarises packets 3.x-style),
//! owned property sets, and rumqttc v5 helpers.
//!
//! Every wait is bounded; `expect_nothing` windows are at most 500 ms.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use shardmq::protocol::{
    self, Ack, Connect, Decoded, Packet, Properties, Publish, QoS, ReasonCode, RetainHandling,
    StrList, Subscribe, Subscription, SubscriptionIds, SubscriptionList, SubscriptionOptions,
    Unsubscribe, UserProperties, Version, Will,
};

use crate::common::{WaitError, WAIT};

/// Every property a server may send, owned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Vec<u8>>,
    pub subscription_identifiers: Vec<u32>,
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<String>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<String>,
    pub response_information: Option<String>,
    pub server_reference: Option<String>,
    pub reason_string: Option<String>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    pub user_properties: Vec<(String, String)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifier_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

impl Props {
    fn own(p: &Properties<'_>) -> Props {
        Props {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            content_type: p.content_type.map(str::to_string),
            response_topic: p.response_topic.map(str::to_string),
            correlation_data: p.correlation_data.map(<[u8]>::to_vec),
            subscription_identifiers: p.subscription_identifiers.iter().collect(),
            session_expiry_interval: p.session_expiry_interval,
            assigned_client_identifier: p.assigned_client_identifier.map(str::to_string),
            server_keep_alive: p.server_keep_alive,
            authentication_method: p.authentication_method.map(str::to_string),
            response_information: p.response_information.map(str::to_string),
            server_reference: p.server_reference.map(str::to_string),
            reason_string: p.reason_string.map(str::to_string),
            receive_maximum: p.receive_maximum,
            topic_alias_maximum: p.topic_alias_maximum,
            topic_alias: p.topic_alias,
            maximum_qos: p.maximum_qos,
            retain_available: p.retain_available,
            user_properties: p
                .user_properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            maximum_packet_size: p.maximum_packet_size,
            wildcard_subscription_available: p.wildcard_subscription_available,
            subscription_identifier_available: p.subscription_identifier_available,
            shared_subscription_available: p.shared_subscription_available,
        }
    }
}

/// A received 5.0 PUBLISH with its properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg5 {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub dup: bool,
    pub pid: Option<u16>,
    pub props: Props,
}

impl Msg5 {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// An owned 5.0 packet received from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum P5 {
    ConnAck {
        present: bool,
        reason: u8,
        props: Props,
    },
    Publish(Msg5),
    PubAck {
        pid: u16,
        reason: u8,
        props: Props,
    },
    PubRec {
        pid: u16,
        reason: u8,
        props: Props,
    },
    PubRel {
        pid: u16,
        reason: u8,
    },
    PubComp {
        pid: u16,
        reason: u8,
    },
    SubAck {
        pid: u16,
        codes: Vec<u8>,
        props: Props,
    },
    UnsubAck {
        pid: u16,
        codes: Vec<u8>,
        props: Props,
    },
    PingResp,
    Disconnect {
        reason: u8,
        props: Props,
    },
    Auth {
        reason: u8,
    },
    Other(&'static str),
}

impl P5 {
    /// A one-line summary for assertion messages.
    pub fn brief(&self) -> String {
        match self {
            P5::Publish(m) => format!(
                "PUBLISH({} {:?} q{} r{} d{} pid {:?})",
                m.topic,
                m.text(),
                m.qos,
                u8::from(m.retain),
                u8::from(m.dup),
                m.pid
            ),
            P5::ConnAck {
                present, reason, ..
            } => {
                format!("CONNACK(present {present}, 0x{reason:02x})")
            }
            P5::PubAck { pid, reason, .. } => format!("PUBACK({pid}, 0x{reason:02x})"),
            P5::SubAck { pid, codes, .. } => format!("SUBACK({pid}, {codes:02x?})"),
            P5::UnsubAck { pid, codes, .. } => format!("UNSUBACK({pid}, {codes:02x?})"),
            P5::Disconnect { reason, .. } => format!("DISCONNECT(0x{reason:02x})"),
            other => format!("{other:?}"),
        }
    }
}

/// Summaries of several packets.
pub fn briefs(ps: &[P5]) -> Vec<String> {
    ps.iter().map(P5::brief).collect()
}

fn own(p: &Packet<'_>) -> P5 {
    match p {
        Packet::ConnAck(c) => P5::ConnAck {
            present: c.session_present,
            reason: c.reason.to_u8(),
            props: Props::own(&c.properties),
        },
        Packet::Publish(p) => P5::Publish(Msg5 {
            topic: p.topic.to_string(),
            payload: p.payload.to_vec(),
            qos: p.qos as u8,
            retain: p.retain,
            dup: p.dup,
            pid: p.packet_id.map(NonZeroU16::get),
            props: Props::own(&p.properties),
        }),
        Packet::PubAck(a) => P5::PubAck {
            pid: a.packet_id.get(),
            reason: a.reason.to_u8(),
            props: Props::own(&a.properties),
        },
        Packet::PubRec(a) => P5::PubRec {
            pid: a.packet_id.get(),
            reason: a.reason.to_u8(),
            props: Props::own(&a.properties),
        },
        Packet::PubRel(a) => P5::PubRel {
            pid: a.packet_id.get(),
            reason: a.reason.to_u8(),
        },
        Packet::PubComp(a) => P5::PubComp {
            pid: a.packet_id.get(),
            reason: a.reason.to_u8(),
        },
        Packet::SubAck(s) => P5::SubAck {
            pid: s.packet_id.get(),
            codes: s.codes.to_vec(),
            props: Props::own(&s.properties),
        },
        Packet::UnsubAck(u) => P5::UnsubAck {
            pid: u.packet_id.get(),
            codes: u.codes.to_vec(),
            props: Props::own(&u.properties),
        },
        Packet::PingResp => P5::PingResp,
        Packet::Disconnect(d) => P5::Disconnect {
            reason: d.reason.to_u8(),
            props: Props::own(&d.properties),
        },
        Packet::Auth(a) => P5::Auth {
            reason: a.reason.to_u8(),
        },
        other => P5::Other(other.name()),
    }
}

/// A Will for `Conn5`.
#[derive(Debug, Clone, Default)]
pub struct Will5 {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub delay_s: Option<u32>,
    pub message_expiry_s: Option<u32>,
    pub payload_format_indicator: Option<u8>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Vec<u8>>,
    pub user_properties: Vec<(String, String)>,
}

/// How a 5.0 raw client connects. `Conn5::new(id)`: Clean Start 1, keep alive 60, no
/// properties.
#[derive(Debug, Clone)]
pub struct Conn5 {
    pub id: String,
    pub clean: bool,
    pub keep_alive: u16,
    pub session_expiry: Option<u32>,
    pub receive_maximum: Option<u16>,
    pub maximum_packet_size: Option<u32>,
    pub topic_alias_maximum: Option<u16>,
    pub request_response_information: Option<u8>,
    pub request_problem_information: Option<u8>,
    pub will: Option<Will5>,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
}

impl Conn5 {
    pub fn new(id: &str) -> Conn5 {
        Conn5 {
            id: id.to_string(),
            clean: true,
            keep_alive: 60,
            session_expiry: None,
            receive_maximum: None,
            maximum_packet_size: None,
            topic_alias_maximum: None,
            request_response_information: None,
            request_problem_information: None,
            will: None,
            username: None,
            password: None,
        }
    }
    pub fn login(mut self, user: &str, password: &str) -> Self {
        self.username = Some(user.to_string());
        self.password = Some(password.as_bytes().to_vec());
        self
    }
    pub fn clean(mut self, c: bool) -> Self {
        self.clean = c;
        self
    }
    pub fn expiry(mut self, s: u32) -> Self {
        self.session_expiry = Some(s);
        self
    }
    pub fn keep_alive(mut self, k: u16) -> Self {
        self.keep_alive = k;
        self
    }
    pub fn receive_max(mut self, n: u16) -> Self {
        self.receive_maximum = Some(n);
        self
    }
    pub fn max_packet(mut self, n: u32) -> Self {
        self.maximum_packet_size = Some(n);
        self
    }
    pub fn alias_max(mut self, n: u16) -> Self {
        self.topic_alias_maximum = Some(n);
        self
    }
    pub fn will(mut self, w: Will5) -> Self {
        self.will = Some(w);
        self
    }
}

/// The CONNACK a 5.0 client got.
#[derive(Debug, Clone)]
pub struct ConnAck5 {
    pub present: bool,
    pub reason: u8,
    pub props: Props,
}

/// Options of one SUBSCRIBE entry.
pub fn opts(q: u8, no_local: bool, rap: bool, rh: u8) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: QoS::from_bits(q).expect("QoS"),
        no_local,
        retain_as_published: rap,
        retain_handling: match rh {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            _ => RetainHandling::DoNotSend,
        },
    }
}

fn nz(p: u16) -> NonZeroU16 {
    NonZeroU16::new(p).expect("nonzero packet id")
}

/// A hand-driven MQTT 5.0 connection on the project's codec, keeping every property.
pub struct Client5 {
    stream: TcpStream,
    buf: Vec<u8>,
    stash: VecDeque<P5>,
    next_pid: u16,
    pub id: String,
    /// Size in bytes of every packet received so far, in order.
    pub sizes: Vec<usize>,
}

impl Client5 {
    /// Open the TCP connection only.
    pub fn tcp(addr: SocketAddr) -> Client5 {
        let stream = TcpStream::connect(addr).expect("tcp connect");
        stream.set_nodelay(true).expect("nodelay");
        Client5 {
            stream,
            buf: Vec::new(),
            stash: VecDeque::new(),
            next_pid: 0,
            id: String::new(),
            sizes: Vec::new(),
        }
    }

    /// CONNECT as described and return the CONNACK (any reason).
    pub fn handshake(addr: SocketAddr, o: &Conn5) -> (Client5, ConnAck5) {
        Client5::handshake_within(addr, o, WAIT)
    }

    /// `handshake`, waiting up to `wait` for the CONNACK.
    pub fn handshake_within(addr: SocketAddr, o: &Conn5, wait: Duration) -> (Client5, ConnAck5) {
        let mut c = Client5::tcp(addr);
        c.id = o.id.clone();
        let users: Vec<(&str, &str)> = o
            .will
            .as_ref()
            .map(|w| {
                w.user_properties
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        let will = o.will.as_ref().map(|w| Will {
            topic: &w.topic,
            payload: &w.payload,
            qos: QoS::from_bits(w.qos).expect("QoS"),
            retain: w.retain,
            properties: Properties {
                will_delay_interval: w.delay_s,
                message_expiry_interval: w.message_expiry_s,
                payload_format_indicator: w.payload_format_indicator,
                content_type: w.content_type.as_deref(),
                response_topic: w.response_topic.as_deref(),
                correlation_data: w.correlation_data.as_deref(),
                user_properties: UserProperties::Slice(&users),
                ..Properties::default()
            },
        });
        let connect = Connect {
            version: Version::V5,
            clean_start: o.clean,
            keep_alive: o.keep_alive,
            client_id: &o.id,
            will,
            username: o.username.as_deref(),
            password: o.password.as_deref(),
            properties: Properties {
                session_expiry_interval: o.session_expiry,
                receive_maximum: o.receive_maximum,
                maximum_packet_size: o.maximum_packet_size,
                topic_alias_maximum: o.topic_alias_maximum,
                request_response_information: o.request_response_information,
                request_problem_information: o.request_problem_information,
                ..Properties::default()
            },
        };
        c.send(&Packet::Connect(connect));
        match c.expect(wait) {
            P5::ConnAck {
                present,
                reason,
                props,
            } => (
                c,
                ConnAck5 {
                    present,
                    reason,
                    props,
                },
            ),
            other => panic!("[{}] expected CONNACK, got {other:?}", o.id),
        }
    }

    /// Connect and require CONNACK Success.
    pub fn open(addr: SocketAddr, o: &Conn5) -> (Client5, ConnAck5) {
        let (c, ack) = Client5::handshake(addr, o);
        assert_eq!(ack.reason, 0, "[{}] CONNACK reason: {ack:?}", o.id);
        (c, ack)
    }

    /// Clean start, no session expiry, keep alive 60.
    pub fn clean(addr: SocketAddr, id: &str) -> Client5 {
        Client5::open(addr, &Conn5::new(id)).0
    }

    pub fn send(&mut self, p: &Packet<'_>) {
        let mut out = Vec::new();
        protocol::encode(p, Version::V5, &mut out);
        let _ = self.stream.write_all(&out);
    }

    pub fn send_bytes(&mut self, b: &[u8]) {
        let _ = self.stream.write_all(b);
    }

    /// Send raw bytes and report whether the write succeeded.
    pub fn try_send_bytes(&mut self, b: &[u8]) -> io::Result<()> {
        self.stream.write_all(b)
    }

    /// Close the TCP connection without DISCONNECT.
    pub fn drop_tcp(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    pub fn next_pid(&mut self) -> u16 {
        self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
        self.next_pid
    }

    fn next_wire(&mut self, deadline: Instant) -> Result<P5, WaitError> {
        loop {
            match protocol::decode(&self.buf, Version::V5, usize::MAX) {
                Ok(Decoded::Packet { packet, len }) => {
                    let got = own(&packet);
                    self.buf.drain(..len);
                    self.sizes.push(len);
                    return Ok(got);
                }
                Ok(Decoded::Incomplete { .. }) => {}
                Err(e) => {
                    return Err(WaitError::Garbage(format!(
                        "{e} in {:02x?}",
                        &self.buf[..self.buf.len().min(32)]
                    )))
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(WaitError::Timeout);
            }
            self.stream
                .set_read_timeout(Some(left))
                .expect("set read timeout");
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(WaitError::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(WaitError::Timeout)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(WaitError::Closed),
            }
        }
    }

    /// The next packet (stash first).
    pub fn recv(&mut self, timeout: Duration) -> Result<P5, WaitError> {
        if let Some(g) = self.stash.pop_front() {
            return Ok(g);
        }
        self.next_wire(Instant::now() + timeout)
    }

    pub fn expect(&mut self, timeout: Duration) -> P5 {
        match self.recv(timeout) {
            Ok(p) => p,
            Err(e) => panic!("[{}] expected a packet within {timeout:?}: {e:?}", self.id),
        }
    }

    /// The first packet satisfying `want`; others are stashed in order.
    pub fn expect_where(
        &mut self,
        timeout: Duration,
        what: &str,
        mut want: impl FnMut(&P5) -> bool,
    ) -> P5 {
        if let Some(i) = self.stash.iter().position(&mut want) {
            return self.stash.remove(i).expect("in range");
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_wire(deadline) {
                Ok(g) if want(&g) => return g,
                Ok(g) => self.stash.push_back(g),
                Err(e) => panic!(
                    "[{}] waiting {timeout:?} for {what}: {e:?}; meanwhile got {:?}",
                    self.id, self.stash
                ),
            }
        }
    }

    /// The next packet must be a PUBLISH.
    pub fn expect_publish(&mut self, timeout: Duration) -> Msg5 {
        match self.expect(timeout) {
            P5::Publish(m) => m,
            other => panic!("[{}] expected PUBLISH, got {other:?}", self.id),
        }
    }

    /// The next packet must be a PUBLISH; acknowledge it.
    pub fn expect_publish_acked(&mut self, timeout: Duration) -> Msg5 {
        let m = self.expect_publish(timeout);
        self.ack(&m);
        m
    }

    /// Receive `n` PUBLISHes (other packets stashed), acknowledging each.
    pub fn collect(&mut self, n: usize) -> Vec<Msg5> {
        (0..n)
            .map(|_| {
                let m = match self.expect_where(WAIT, "PUBLISH", |g| matches!(g, P5::Publish(_))) {
                    P5::Publish(m) => m,
                    _ => unreachable!(),
                };
                self.ack(&m);
                m
            })
            .collect()
    }

    /// PUBACK, or PUBREC → PUBREL → PUBCOMP.
    pub fn ack(&mut self, m: &Msg5) {
        match (m.qos, m.pid) {
            (1, Some(p)) => self.send(&Packet::PubAck(Ack::new(nz(p)))),
            (2, Some(p)) => {
                self.send(&Packet::PubRec(Ack::new(nz(p))));
                self.expect_where(
                    WAIT,
                    "PUBREL",
                    |g| matches!(g, P5::PubRel { pid, .. } if *pid == p),
                );
                self.send(&Packet::PubComp(Ack::new(nz(p))));
            }
            _ => {}
        }
    }

    /// No packet and no close for `dur` (≤ 500 ms).
    pub fn expect_nothing(&mut self, dur: Duration) {
        assert!(
            dur <= Duration::from_millis(500),
            "keep quiet windows short"
        );
        if let Some(g) = self.stash.pop_front() {
            panic!("[{}] expected nothing, had {g:?} pending", self.id);
        }
        match self.next_wire(Instant::now() + dur) {
            Err(WaitError::Timeout) => {}
            other => panic!("[{}] expected nothing for {dur:?}, got {other:?}", self.id),
        }
    }

    /// Wait for a server DISCONNECT (other packets before it are skipped) and the close
    /// after it; returns (reason, reason string).
    pub fn expect_disconnect(&mut self, timeout: Duration) -> (u8, Option<String>) {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        while let Some(g) = self.stash.pop_front() {
            if let P5::Disconnect { reason, props } = g {
                self.expect_eof(deadline);
                return (reason, props.reason_string);
            }
            skipped.push(g);
        }
        loop {
            match self.next_wire(deadline) {
                Ok(P5::Disconnect { reason, props }) => {
                    self.expect_eof(deadline);
                    return (reason, props.reason_string);
                }
                Ok(g) => skipped.push(g),
                Err(e) => panic!(
                    "[{}] expected DISCONNECT within {timeout:?}, got {e:?} after {:?}",
                    self.id,
                    briefs(&skipped)
                ),
            }
        }
    }

    /// Expect a server DISCONNECT with `reason` carrying a Reason String.
    pub fn expect_disconnect_reason(&mut self, reason: u8) {
        let (got, why) = self.expect_disconnect(WAIT);
        assert_eq!(
            got, reason,
            "[{}] DISCONNECT reason 0x{got:02x} (want 0x{reason:02x}), reason string {why:?}",
            self.id
        );
        assert!(
            why.as_deref().is_some_and(|s| !s.is_empty()),
            "[{}] server DISCONNECT 0x{got:02x} without a Reason String",
            self.id
        );
    }

    fn expect_eof(&mut self, deadline: Instant) {
        loop {
            match self.next_wire(deadline) {
                Err(WaitError::Closed) => return,
                Err(WaitError::Timeout) => {
                    panic!("[{}] connection still open after DISCONNECT", self.id)
                }
                Err(WaitError::Garbage(_)) => self.buf.clear(),
                Ok(g) => panic!("[{}] packet after DISCONNECT: {g:?}", self.id),
            }
        }
    }

    /// Wait until the broker closes the connection, returning what came before.
    pub fn wait_closed(&mut self, timeout: Duration) -> Vec<P5> {
        let mut got: Vec<P5> = self.stash.drain(..).collect();
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_wire(deadline) {
                Ok(g) => got.push(g),
                Err(WaitError::Closed) => return got,
                Err(WaitError::Garbage(_)) => self.buf.clear(),
                Err(WaitError::Timeout) => {
                    panic!("[{}] still open after {timeout:?}; got {got:?}", self.id)
                }
            }
        }
    }

    // ---- operations ------------------------------------------------------------------

    /// SUBSCRIBE with per-filter options and an optional Subscription Identifier; returns
    /// the SUBACK reason codes.
    pub fn subscribe_opts(
        &mut self,
        filters: &[(&str, SubscriptionOptions)],
        sub_id: Option<u32>,
    ) -> Vec<u8> {
        let subs: Vec<Subscription<'_>> = filters
            .iter()
            .map(|&(filter, options)| Subscription { filter, options })
            .collect();
        let ids: Vec<u32> = sub_id.into_iter().collect();
        let p = self.next_pid();
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: nz(p),
            properties: Properties {
                subscription_identifiers: SubscriptionIds::Slice(&ids),
                ..Properties::default()
            },
            filters: SubscriptionList::Slice(&subs),
        }));
        match self.expect_where(
            WAIT,
            "SUBACK",
            |g| matches!(g, P5::SubAck { pid, .. } if *pid == p),
        ) {
            P5::SubAck { codes, .. } => {
                assert_eq!(codes.len(), filters.len(), "[{}] SUBACK codes", self.id);
                codes
            }
            _ => unreachable!(),
        }
    }

    /// Subscribe to one filter at `q` (default options); asserts it is granted.
    pub fn subscribe(&mut self, filter: &str, q: u8) {
        let codes = self.subscribe_opts(&[(filter, opts(q, false, false, 0))], None);
        assert_eq!(codes, vec![q], "[{}] SUBACK for {filter}", self.id);
    }

    /// Subscribe with a Subscription Identifier; asserts it is granted.
    pub fn subscribe_id(&mut self, filter: &str, q: u8, id: u32) {
        let codes = self.subscribe_opts(&[(filter, opts(q, false, false, 0))], Some(id));
        assert_eq!(codes, vec![q], "[{}] SUBACK for {filter}", self.id);
    }

    /// UNSUBSCRIBE; returns the UNSUBACK reason codes.
    pub fn unsubscribe(&mut self, filters: &[&str]) -> Vec<u8> {
        let p = self.next_pid();
        self.send(&Packet::Unsubscribe(Unsubscribe {
            packet_id: nz(p),
            properties: Properties::default(),
            filters: StrList::Slice(filters),
        }));
        match self.expect_where(
            WAIT,
            "UNSUBACK",
            |g| matches!(g, P5::UnsubAck { pid, .. } if *pid == p),
        ) {
            P5::UnsubAck { codes, .. } => codes,
            _ => unreachable!(),
        }
    }

    /// Send a PUBLISH with properties (no waiting). `pid` is required for QoS > 0.
    pub fn send_publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        q: u8,
        retain: bool,
        pid: Option<u16>,
        props: Properties<'_>,
    ) {
        self.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::from_bits(q).expect("QoS"),
            retain,
            topic,
            packet_id: pid.map(nz),
            properties: props,
            payload,
        }));
    }

    /// PUBLISH with properties and complete the flow; returns the PUBACK/PUBREC reason
    /// (0 for QoS 0).
    pub fn publish_props(
        &mut self,
        topic: &str,
        payload: &[u8],
        q: u8,
        retain: bool,
        props: Properties<'_>,
    ) -> u8 {
        let p = if q > 0 { self.next_pid() } else { 0 };
        self.send_publish(topic, payload, q, retain, (q > 0).then_some(p), props);
        match q {
            1 => match self.expect_where(
                WAIT,
                "PUBACK",
                |g| matches!(g, P5::PubAck { pid, .. } if *pid == p),
            ) {
                P5::PubAck { reason, .. } => reason,
                _ => unreachable!(),
            },
            2 => {
                let reason = match self.expect_where(
                    WAIT,
                    "PUBREC",
                    |g| matches!(g, P5::PubRec { pid, .. } if *pid == p),
                ) {
                    P5::PubRec { reason, .. } => reason,
                    _ => unreachable!(),
                };
                self.send(&Packet::PubRel(Ack::new(nz(p))));
                self.expect_where(
                    WAIT,
                    "PUBCOMP",
                    |g| matches!(g, P5::PubComp { pid, .. } if *pid == p),
                );
                reason
            }
            _ => 0,
        }
    }

    /// PUBLISH without properties; returns the ack reason.
    pub fn publish(&mut self, topic: &str, payload: &[u8], q: u8, retain: bool) -> u8 {
        self.publish_props(topic, payload, q, retain, Properties::default())
    }

    pub fn ping(&mut self) {
        self.send(&Packet::PingReq);
        self.expect_where(WAIT, "PINGRESP", |g| *g == P5::PingResp);
    }

    /// DISCONNECT with `reason` and an optional Session Expiry Interval, then wait for
    /// the close (whatever comes before it is returned).
    pub fn disconnect_with(mut self, reason: ReasonCode, expiry: Option<u32>) -> Vec<P5> {
        self.send(&Packet::Disconnect(protocol::Disconnect {
            reason,
            properties: Properties {
                session_expiry_interval: expiry,
                ..Properties::default()
            },
        }));
        self.wait_closed(WAIT)
    }

    /// Normal DISCONNECT.
    pub fn disconnect(self) {
        self.disconnect_with(ReasonCode::NormalDisconnection, None);
    }
}

/// Publish a sentinel and require it to be the next PUBLISH `sub` gets: everything
/// published before it and not yet received was not delivered.
pub fn sentinel(publ: &mut Client5, sub: &mut Client5, topic: &str) {
    publ.publish(topic, b"sentinel", 1, false);
    let m = sub.expect_publish_acked(WAIT);
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        (topic, &b"sentinel"[..]),
        "[{}] expected only the sentinel, got {m:?}",
        sub.id
    );
}

// ---------------------------------------------------------------------------------------
// rumqttc v5
// ---------------------------------------------------------------------------------------

pub use rumqttc::v5 as rq;

/// rumqttc v5 options for `id` against `addr`.
pub fn rq_options(addr: SocketAddr, id: &str) -> rq::MqttOptions {
    let mut o = rq::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// Connect a sync rumqttc v5 client; returns (client, connection, CONNACK).
pub fn rq_connect(
    opts: rq::MqttOptions,
) -> (rq::Client, rq::Connection, rq::mqttbytes::v5::ConnAck) {
    let (client, mut conn) = rq::Client::new(opts, 64);
    let ack = rq_until(&mut conn, WAIT, "CONNACK", |p| match p {
        rq::mqttbytes::v5::Packet::ConnAck(a) => Some(a.clone()),
        _ => None,
    });
    assert_eq!(
        ack.code,
        rq::mqttbytes::v5::ConnectReturnCode::Success,
        "rumqttc v5 CONNACK"
    );
    (client, conn, ack)
}

/// Drive `conn` until `want` accepts an incoming packet.
pub fn rq_until<T>(
    conn: &mut rq::Connection,
    timeout: Duration,
    what: &str,
    mut want: impl FnMut(&rq::mqttbytes::v5::Packet) -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.recv_timeout(left) {
            Ok(Ok(rq::Event::Incoming(p))) => {
                if let Some(t) = want(&p) {
                    return t;
                }
            }
            Ok(Ok(rq::Event::Outgoing(_))) => {}
            Ok(Err(e)) => panic!("rumqttc v5 error while waiting for {what}: {e:?}"),
            Err(e) => panic!("rumqttc v5: no {what} within {timeout:?}: {e:?}"),
        }
    }
}

/// Drive `conn` until a PUBLISH arrives.
pub fn rq_publish(conn: &mut rq::Connection) -> rq::mqttbytes::v5::Publish {
    rq_until(conn, WAIT, "PUBLISH", |p| match p {
        rq::mqttbytes::v5::Packet::Publish(p) => Some(p.clone()),
        _ => None,
    })
}

/// Drive `conn` until the SUBACK; returns its reason codes.
pub fn rq_suback(conn: &mut rq::Connection) -> Vec<rq::mqttbytes::v5::SubscribeReasonCode> {
    rq_until(conn, WAIT, "SUBACK", |p| match p {
        rq::mqttbytes::v5::Packet::SubAck(s) => Some(s.return_codes.clone()),
        _ => None,
    })
}

/// Drive `conn` until the PUBACK of a QoS 1 publish; returns its reason.
pub fn rq_puback(conn: &mut rq::Connection) -> rq::mqttbytes::v5::PubAckReason {
    rq_until(conn, WAIT, "PUBACK", |p| match p {
        rq::mqttbytes::v5::Packet::PubAck(a) => Some(a.reason),
        _ => None,
    })
}

/// A rumqttc connection that must stay quiet (no PUBLISH) for `dur`.
pub fn rq_no_publish(conn: &mut rq::Connection, dur: Duration) {
    let deadline = Instant::now() + dur;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match conn.recv_timeout(left) {
            Ok(Ok(rq::Event::Incoming(rq::mqttbytes::v5::Packet::Publish(p)))) => {
                panic!("unexpected PUBLISH {p:?}")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("rumqttc v5 error: {e:?}"),
            Err(_) => return,
        }
    }
}
