//! Decode errors: which rule of the specification a packet broke, and the reason code.
//!
//! Owns: the mapping from a broken rule to the reason code the broker sends (0x81
//! Malformed Packet, 0x82 Protocol Error, 0x84 Unsupported Protocol Version, 0x95 Packet
//! Too Large, 0x83 for our own limits). Invariant: every error is a small `Copy` value, so
//! reporting one never allocates. Must not touch: the decision to close a connection or to
//! answer with CONNACK/DISCONNECT, which belongs to the broker.

use std::fmt;

use super::reason::ReasonCode;

/// Why `decode` refused a packet. Each variant names one rule; `reason_code` gives the
/// code to report in 5.0 (a 3.x broker just closes the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// Fixed header + remaining length exceed the configured maximum (0x95).
    PacketTooLarge {
        /// Size announced by the fixed header, in bytes.
        size: usize,
        /// The configured maximum, in bytes.
        max: usize,
    },
    /// CONNECT protocol name is neither `MQTT` nor `MQIsdp` (0x84).
    UnsupportedProtocolName,
    /// CONNECT protocol level does not match a known version for its name (0x84).
    UnsupportedProtocolLevel {
        /// The level byte received.
        level: u8,
    },
    /// Packet type 0, or 15 (AUTH) before 5.0 (0x81).
    ReservedPacketType {
        /// The packet type number.
        type_id: u8,
    },
    /// Fixed-header flag bits differ from the ones fixed for the type (0x81).
    InvalidHeaderFlags {
        /// The packet type number.
        type_id: u8,
        /// The low nibble received.
        flags: u8,
    },
    /// A variable byte integer with a continuation bit on its 4th byte (0x81).
    VarintTooLong,
    /// A variable byte integer not in its shortest form (0x81).
    VarintNotMinimal,
    /// A field runs past the end of the packet (0x81).
    UnexpectedEnd,
    /// Bytes left over after the last field (0x81).
    TrailingBytes,
    /// A string is not valid UTF-8 (0x81).
    InvalidUtf8,
    /// A string contains U+0000 (0x81).
    NullCharacter,
    /// QoS 3 in PUBLISH, a Will or a subscription option (0x81).
    InvalidQoS,
    /// PUBLISH with DUP set and QoS 0 (0x81).
    DupWithQoS0,
    /// A topic name (PUBLISH, Will, Response Topic) contains `+` or `#` (0x81).
    WildcardInTopicName,
    /// An empty topic name where one is required (0x81).
    EmptyTopicName,
    /// An empty topic filter in SUBSCRIBE or UNSUBSCRIBE (0x81).
    EmptyTopicFilter,
    /// CONNECT flags bit 0 is set (0x81).
    ConnectReservedFlag,
    /// Will QoS or Will Retain set without the Will Flag (0x81).
    WillFlagsWithoutWill,
    /// Password flag without User Name flag before 5.0 (0x81).
    PasswordWithoutUsername,
    /// CONNACK acknowledge flags bits 7..1 are not zero (0x81).
    ConnAckReservedFlags,
    /// Reserved bits of a subscription options byte are set (0x81).
    ReservedSubscriptionOptions,
    /// A property id unknown or not allowed in this packet (0x81).
    InvalidPropertyId {
        /// The property identifier.
        id: u8,
    },
    /// A reason or return code not allowed in this packet (0x81).
    InvalidReasonCode {
        /// The code received.
        code: u8,
    },
    /// A packet identifier of zero (0x82).
    ZeroPacketId,
    /// A property that may appear once appears twice (0x82).
    DuplicateProperty {
        /// The property identifier.
        id: u8,
    },
    /// A property value out of range: 0 where forbidden, or not 0/1 for a flag (0x82).
    InvalidPropertyValue {
        /// The property identifier.
        id: u8,
    },
    /// A 5.0 PUBLISH with an empty topic and no Topic Alias (0x82).
    MissingTopicAlias,
    /// Retain Handling 3 in a subscription option (0x82).
    InvalidRetainHandling,
    /// No Local set on a `$share/` subscription [MQTT-3.8.3-4] (0x82).
    NoLocalOnSharedSubscription,
    /// SUBSCRIBE, UNSUBSCRIBE, SUBACK or 5.0 UNSUBACK without any entry (0x82).
    EmptyPayload {
        /// The packet type number.
        type_id: u8,
    },
    /// Authentication Data without Authentication Method (0x82).
    AuthDataWithoutMethod,
    /// CONNACK with Session Present set and a failure code (0x82).
    SessionPresentWithError,
    /// More repeated properties (User Property or Subscription Identifier) than
    /// `properties::REPEATED_PROPERTIES_MAX` (0x83, our own limit).
    TooManyProperties {
        /// The property identifier.
        id: u8,
    },
}

impl DecodeError {
    /// The reason code to report for this error.
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            // [MQTT-3.3.2-8]: Topic Alias 0 is answered with 0x94, not the generic 0x82.
            InvalidPropertyValue {
                id: crate::protocol::properties::id::TOPIC_ALIAS,
            } => ReasonCode::TopicAliasInvalid,
            UnsupportedProtocolName | UnsupportedProtocolLevel { .. } => {
                ReasonCode::UnsupportedProtocolVersion
            }
            ZeroPacketId
            | DuplicateProperty { .. }
            | InvalidPropertyValue { .. }
            | MissingTopicAlias
            | InvalidRetainHandling
            | NoLocalOnSharedSubscription
            | EmptyPayload { .. }
            | AuthDataWithoutMethod
            | SessionPresentWithError => ReasonCode::ProtocolError,
            TooManyProperties { .. } => ReasonCode::ImplementationSpecificError,
            _ => ReasonCode::MalformedPacket,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.reason_code().to_u8();
        write!(f, "{self:?} (reason 0x{code:02X})")
    }
}

impl std::error::Error for DecodeError {}
