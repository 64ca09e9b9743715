//! MQTT 5.0 properties as one flat, borrowed struct.
//!
//! Owns: the property identifiers, their wire types, which packet may carry which, and the
//! duplicate rule (only User Property and Subscription Identifier may repeat). Invariant:
//! a decoded `Properties` holds only properties allowed in its packet, each at most once
//! unless repeatable, with every string valid UTF-8. Repeated properties are kept as the
//! validated wire bytes of the whole property block and iterated on demand, so decoding
//! never allocates. Must not touch: anything outside the property block.

/// Property identifiers (MQTT 5.0 §2.2.2.2).
#[allow(missing_docs)]
pub mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// Every MQTT 5.0 property. `Default` is "no properties", which is also what every 3.x
/// packet carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Properties<'a> {
    /// 0x01, PUBLISH and Will: 0 = bytes, 1 = UTF-8.
    pub payload_format_indicator: Option<u8>,
    /// 0x02, PUBLISH and Will, seconds.
    pub message_expiry_interval: Option<u32>,
    /// 0x03, PUBLISH and Will.
    pub content_type: Option<&'a str>,
    /// 0x08, PUBLISH and Will (a topic name).
    pub response_topic: Option<&'a str>,
    /// 0x09, PUBLISH and Will.
    pub correlation_data: Option<&'a [u8]>,
    /// 0x0B, PUBLISH (server → client, repeatable) and SUBSCRIBE (once).
    pub subscription_identifiers: SubscriptionIds<'a>,
    /// 0x11, CONNECT, CONNACK, DISCONNECT, seconds.
    pub session_expiry_interval: Option<u32>,
    /// 0x12, CONNACK.
    pub assigned_client_identifier: Option<&'a str>,
    /// 0x13, CONNACK, seconds.
    pub server_keep_alive: Option<u16>,
    /// 0x15, CONNECT, CONNACK, AUTH.
    pub authentication_method: Option<&'a str>,
    /// 0x16, CONNECT, CONNACK, AUTH.
    pub authentication_data: Option<&'a [u8]>,
    /// 0x17, CONNECT: 0 or 1.
    pub request_problem_information: Option<u8>,
    /// 0x18, Will, seconds.
    pub will_delay_interval: Option<u32>,
    /// 0x19, CONNECT: 0 or 1.
    pub request_response_information: Option<u8>,
    /// 0x1A, CONNACK.
    pub response_information: Option<&'a str>,
    /// 0x1C, CONNACK, DISCONNECT.
    pub server_reference: Option<&'a str>,
    /// 0x1F, every ack, CONNACK, DISCONNECT, AUTH.
    pub reason_string: Option<&'a str>,
    /// 0x21, CONNECT, CONNACK: never 0.
    pub receive_maximum: Option<u16>,
    /// 0x22, CONNECT, CONNACK.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23, PUBLISH: never 0.
    pub topic_alias: Option<u16>,
    /// 0x24, CONNACK: 0 or 1.
    pub maximum_qos: Option<u8>,
    /// 0x25, CONNACK: 0 or 1.
    pub retain_available: Option<u8>,
    /// 0x26, every packet with properties, repeatable, order kept.
    pub user_properties: UserProperties<'a>,
    /// 0x27, CONNECT, CONNACK: never 0.
    pub maximum_packet_size: Option<u32>,
    /// 0x28, CONNACK: 0 or 1.
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29, CONNACK: 0 or 1.
    pub subscription_identifier_available: Option<u8>,
    /// 0x2A, CONNACK: 0 or 1.
    pub shared_subscription_available: Option<u8>,
}

/// User Properties in order: either the validated wire bytes of a property block (entries
/// other than 0x26 are skipped when iterating) or a caller's slice of pairs.
#[derive(Debug, Clone, Copy)]
pub enum UserProperties<'a> {
    /// A validated property block; only its 0x26 entries are User Properties.
    Wire(&'a [u8]),
    /// Built by the caller: (name, value) pairs in order.
    Slice(&'a [(&'a str, &'a str)]),
}

impl Default for UserProperties<'_> {
    fn default() -> Self {
        UserProperties::Slice(&[])
    }
}

/// Subscription Identifiers in order: validated wire bytes of a property block (entries
/// other than 0x0B skipped) or a caller's slice.
#[derive(Debug, Clone, Copy)]
pub enum SubscriptionIds<'a> {
    /// A validated property block; only its 0x0B entries are Subscription Identifiers.
    Wire(&'a [u8]),
    /// Built by the caller; each value in 1..=268_435_455.
    Slice(&'a [u32]),
}

impl Default for SubscriptionIds<'_> {
    fn default() -> Self {
        SubscriptionIds::Slice(&[])
    }
}
