//! The MQTT control packets as borrowed views.
//!
//! Owns: the shape of every packet of MQTT 3.1, 3.1.1 and 5.0. A `Packet<'a>` borrows its
//! strings, binary fields and lists from the buffer it was decoded from (or, when built for
//! encoding, from whatever the caller holds). Invariant: a value produced by `decode` has
//! already passed every check of the specification that can be made without session
//! state, so callers never re-validate UTF-8, flags or lengths. Must not touch: sockets,
//! clocks, sessions, allocation.

use std::num::NonZeroU16;

use super::properties::Properties;
use super::reason::ReasonCode;

/// A packet identifier: never zero on the wire [MQTT-2.2.1-3].
pub type PacketId = NonZeroU16;

/// The protocol level carried in CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// MQTT 3.1, protocol name `MQIsdp`, level 3.
    V3_1,
    /// MQTT 3.1.1, protocol name `MQTT`, level 4.
    V3_1_1,
    /// MQTT 5.0, protocol name `MQTT`, level 5.
    V5,
}

impl Version {
    /// The protocol level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            Version::V3_1 => 3,
            Version::V3_1_1 => 4,
            Version::V5 => 5,
        }
    }

    /// The protocol name of CONNECT.
    pub fn protocol_name(self) -> &'static str {
        match self {
            Version::V3_1 => "MQIsdp",
            Version::V3_1_1 | Version::V5 => "MQTT",
        }
    }

    /// True for MQTT 5.0: packets carry properties and reason codes.
    pub fn is_v5(self) -> bool {
        self == Version::V5
    }
}

/// Quality of service. QoS 3 is unrepresentable: it is a malformed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum QoS {
    /// Fire and forget.
    #[default]
    AtMostOnce = 0,
    /// Acknowledged by PUBACK; may be duplicated.
    AtLeastOnce = 1,
    /// PUBREC/PUBREL/PUBCOMP; delivered exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for the two-bit value `bits`, or `None` for 3.
    pub fn from_bits(bits: u8) -> Option<QoS> {
        match bits {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// Every control packet, borrowing from its source buffer.
// CONNECT is the largest variant; boxing it would allocate per decode, and a `Packet`
// lives only on the stack between decode and dispatch.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Client → server: open a session.
    Connect(Connect<'a>),
    /// Server → client: the answer to CONNECT.
    ConnAck(ConnAck<'a>),
    /// Either direction: an application message.
    Publish(Publish<'a>),
    /// QoS 1 acknowledgement.
    PubAck(Ack<'a>),
    /// QoS 2, step 1.
    PubRec(Ack<'a>),
    /// QoS 2, step 2.
    PubRel(Ack<'a>),
    /// QoS 2, step 3.
    PubComp(Ack<'a>),
    /// Client → server: add subscriptions.
    Subscribe(Subscribe<'a>),
    /// Server → client: one reason code per requested filter.
    SubAck(SubAck<'a>),
    /// Client → server: remove subscriptions.
    Unsubscribe(Unsubscribe<'a>),
    /// Server → client: the answer to UNSUBSCRIBE.
    UnsubAck(UnsubAck<'a>),
    /// Client → server keepalive probe.
    PingReq,
    /// Server → client keepalive answer.
    PingResp,
    /// Either direction (server → client only in 5.0).
    Disconnect(Disconnect<'a>),
    /// 5.0 enhanced authentication exchange.
    Auth(Auth<'a>),
}

impl Packet<'_> {
    /// The packet type number of the fixed header (1 = CONNECT … 15 = AUTH).
    pub fn type_id(&self) -> u8 {
        match self {
            Packet::Connect(_) => 1,
            Packet::ConnAck(_) => 2,
            Packet::Publish(_) => 3,
            Packet::PubAck(_) => 4,
            Packet::PubRec(_) => 5,
            Packet::PubRel(_) => 6,
            Packet::PubComp(_) => 7,
            Packet::Subscribe(_) => 8,
            Packet::SubAck(_) => 9,
            Packet::Unsubscribe(_) => 10,
            Packet::UnsubAck(_) => 11,
            Packet::PingReq => 12,
            Packet::PingResp => 13,
            Packet::Disconnect(_) => 14,
            Packet::Auth(_) => 15,
        }
    }

    /// The upper-case packet name, for logs.
    pub fn name(&self) -> &'static str {
        packet_name(self.type_id())
    }
}

/// The upper-case name of packet type `type_id`, for logs.
pub fn packet_name(type_id: u8) -> &'static str {
    const NAMES: [&str; 16] = [
        "RESERVED",
        "CONNECT",
        "CONNACK",
        "PUBLISH",
        "PUBACK",
        "PUBREC",
        "PUBREL",
        "PUBCOMP",
        "SUBSCRIBE",
        "SUBACK",
        "UNSUBSCRIBE",
        "UNSUBACK",
        "PINGREQ",
        "PINGRESP",
        "DISCONNECT",
        "AUTH",
    ];
    NAMES[usize::from(type_id & 0x0f)]
}

/// CONNECT. The version is read from the packet itself, never from the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect<'a> {
    /// Protocol level and name.
    pub version: Version,
    /// Clean Session (3.x) / Clean Start (5.0).
    pub clean_start: bool,
    /// Keep Alive in seconds; 0 disables it.
    pub keep_alive: u16,
    /// The client identifier; may be empty.
    pub client_id: &'a str,
    /// The Will, when the Will Flag is set.
    pub will: Option<Will<'a>>,
    /// User Name, when its flag is set.
    pub username: Option<&'a str>,
    /// Password, when its flag is set.
    pub password: Option<&'a [u8]>,
    /// 5.0 CONNECT properties (empty for 3.x).
    pub properties: Properties<'a>,
}

/// The Will carried in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will<'a> {
    /// Will Topic (a topic name: no wildcards).
    pub topic: &'a str,
    /// Will Payload.
    pub payload: &'a [u8],
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// 5.0 Will properties (empty for 3.x).
    pub properties: Properties<'a>,
}

/// CONNACK. In 3.x the one-byte return code is mapped to and from the matching 5.0 reason
/// code (1 ↔ 0x84, 2 ↔ 0x85, 3 ↔ 0x88, 4 ↔ 0x86, 5 ↔ 0x87).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck<'a> {
    /// Session Present flag.
    pub session_present: bool,
    /// Connect reason code.
    pub reason: ReasonCode,
    /// 5.0 CONNACK properties.
    pub properties: Properties<'a>,
}

/// PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish<'a> {
    /// DUP flag: this may be a redelivery.
    pub dup: bool,
    /// QoS of this transfer.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name; empty only in 5.0 together with a Topic Alias property.
    pub topic: &'a str,
    /// Present exactly when `qos` > 0.
    pub packet_id: Option<PacketId>,
    /// 5.0 PUBLISH properties.
    pub properties: Properties<'a>,
    /// Application payload, borrowed.
    pub payload: &'a [u8],
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share one shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack<'a> {
    /// The packet being acknowledged.
    pub packet_id: PacketId,
    /// 5.0 reason code; `Success` in 3.x (and when omitted on the wire).
    pub reason: ReasonCode,
    /// 5.0 properties (Reason String, User Properties).
    pub properties: Properties<'a>,
}

impl<'a> Ack<'a> {
    /// A plain success acknowledgement of `packet_id`.
    pub fn new(packet_id: PacketId) -> Ack<'a> {
        Ack {
            packet_id,
            reason: ReasonCode::Success,
            properties: Properties::default(),
        }
    }
}

/// Retain Handling, subscription option bits 4–5 (5.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// Send retained messages at subscribe time.
    #[default]
    SendAtSubscribe,
    /// Send them only if the subscription did not exist.
    SendIfNew,
    /// Never send retained messages for this subscribe.
    DoNotSend,
}

/// The options byte of one SUBSCRIBE entry (3.x uses only the QoS bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS granted for deliveries.
    pub qos: QoS,
    /// 5.0 No Local: do not deliver this client's own publishes.
    pub no_local: bool,
    /// 5.0 Retain As Published.
    pub retain_as_published: bool,
    /// 5.0 Retain Handling.
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// The options byte on the wire.
    pub fn to_byte(self) -> u8 {
        let rh = match self.retain_handling {
            RetainHandling::SendAtSubscribe => 0,
            RetainHandling::SendIfNew => 1,
            RetainHandling::DoNotSend => 2,
        };
        (self.qos as u8)
            | (u8::from(self.no_local) << 2)
            | (u8::from(self.retain_as_published) << 3)
            | (rh << 4)
    }
}

/// One requested subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription<'a> {
    /// Topic filter as sent (UTF-8 checked; filter syntax is checked by the broker,
    /// which answers a bad filter with a failure code rather than a closed connection).
    pub filter: &'a str,
    /// Subscription options.
    pub options: SubscriptionOptions,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe<'a> {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// 5.0 properties (Subscription Identifier, User Properties).
    pub properties: Properties<'a>,
    /// The requested filters; never empty [MQTT-3.8.3-2].
    pub filters: SubscriptionList<'a>,
}

/// The filters of a SUBSCRIBE: wire bytes when decoded (validated, iterated lazily, so
/// decoding allocates nothing), or a caller's slice when built for encoding.
#[derive(Debug, Clone, Copy)]
pub enum SubscriptionList<'a> {
    /// Validated wire bytes: repeated (UTF-8 string, options byte).
    Wire(&'a [u8]),
    /// Built by the caller.
    Slice(&'a [Subscription<'a>]),
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe<'a> {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// 5.0 properties (User Properties).
    pub properties: Properties<'a>,
    /// The filters to remove; never empty [MQTT-3.10.3-2].
    pub filters: StrList<'a>,
}

/// A list of strings: wire bytes (validated UTF-8 strings back to back) or a caller's slice.
#[derive(Debug, Clone, Copy)]
pub enum StrList<'a> {
    /// Validated wire bytes: repeated length-prefixed UTF-8 strings.
    Wire(&'a [u8]),
    /// Built by the caller.
    Slice(&'a [&'a str]),
}

/// SUBACK: one code per filter (3.x: 0, 1, 2 or 0x80; 5.0: any SUBACK reason code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck<'a> {
    /// Packet identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// 5.0 properties.
    pub properties: Properties<'a>,
    /// Raw return / reason code bytes, validated when decoded.
    pub codes: &'a [u8],
}

/// UNSUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck<'a> {
    /// Packet identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// 5.0 properties.
    pub properties: Properties<'a>,
    /// 5.0 reason code bytes, one per filter; empty in 3.x.
    pub codes: &'a [u8],
}

/// DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect<'a> {
    /// 5.0 reason code; `NormalDisconnection` in 3.x.
    pub reason: ReasonCode,
    /// 5.0 properties.
    pub properties: Properties<'a>,
}

/// AUTH (5.0 only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth<'a> {
    /// 0x00 Success, 0x18 Continue authentication or 0x19 Re-authenticate.
    pub reason: ReasonCode,
    /// Authentication Method / Data and friends.
    pub properties: Properties<'a>,
}
