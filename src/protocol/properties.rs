//! MQTT 5.0 properties as one flat, borrowed struct.
//!
//! Owns: the property identifiers, their wire types, which packet may carry which, and the
//! duplicate rule (only User Property and Subscription Identifier may repeat). Invariant:
//! a decoded `Properties` holds only properties allowed in its packet, each at most once
//! unless repeatable, with every string valid UTF-8. Repeated properties are kept as the
//! validated wire bytes of the whole property block and iterated on demand, so decoding
//! never allocates. Must not touch: anything outside the property block.
//!
//! Limit: at most `REPEATED_PROPERTIES_MAX` User Properties (and as many Subscription
//! Identifiers) per block, so a flood of them (CVE-2021-41039) is refused after a bounded,
//! linear scan; every other property may appear once, so a block holds a bounded count.

use super::error::DecodeError;
use super::wire::{bin_len, put_bin, put_varint, varint_len, Reader};

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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

/// The most User Properties, and separately the most Subscription Identifiers, one
/// property block may carry. More is refused with 0x83 (our limit, not the spec's).
pub const REPEATED_PROPERTIES_MAX: usize = 1024;

/// Which packet a property block belongs to: decides which ids are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PropKind {
    Connect,
    Will,
    ConnAck,
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    Ack,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

const fn bits(ids: &[u8]) -> u64 {
    let mut mask = 0u64;
    let mut i = 0;
    while i < ids.len() {
        mask |= 1u64 << ids[i];
        i += 1;
    }
    mask
}

impl PropKind {
    /// The property ids allowed in this packet (MQTT 5.0 §2.2.2.2), one bit per id.
    fn allowed(self) -> u64 {
        use id::*;
        const MESSAGE: u64 = bits(&[
            PAYLOAD_FORMAT_INDICATOR,
            MESSAGE_EXPIRY_INTERVAL,
            CONTENT_TYPE,
            RESPONSE_TOPIC,
            CORRELATION_DATA,
            USER_PROPERTY,
        ]);
        const ACK: u64 = bits(&[REASON_STRING, USER_PROPERTY]);
        match self {
            PropKind::Connect => bits(&[
                SESSION_EXPIRY_INTERVAL,
                AUTHENTICATION_METHOD,
                AUTHENTICATION_DATA,
                REQUEST_PROBLEM_INFORMATION,
                REQUEST_RESPONSE_INFORMATION,
                RECEIVE_MAXIMUM,
                TOPIC_ALIAS_MAXIMUM,
                USER_PROPERTY,
                MAXIMUM_PACKET_SIZE,
            ]),
            PropKind::Will => MESSAGE | bits(&[WILL_DELAY_INTERVAL]),
            PropKind::ConnAck => bits(&[
                SESSION_EXPIRY_INTERVAL,
                ASSIGNED_CLIENT_IDENTIFIER,
                SERVER_KEEP_ALIVE,
                AUTHENTICATION_METHOD,
                AUTHENTICATION_DATA,
                RESPONSE_INFORMATION,
                SERVER_REFERENCE,
                REASON_STRING,
                RECEIVE_MAXIMUM,
                TOPIC_ALIAS_MAXIMUM,
                MAXIMUM_QOS,
                RETAIN_AVAILABLE,
                USER_PROPERTY,
                MAXIMUM_PACKET_SIZE,
                WILDCARD_SUBSCRIPTION_AVAILABLE,
                SUBSCRIPTION_IDENTIFIER_AVAILABLE,
                SHARED_SUBSCRIPTION_AVAILABLE,
            ]),
            PropKind::Publish => MESSAGE | bits(&[SUBSCRIPTION_IDENTIFIER, TOPIC_ALIAS]),
            PropKind::Ack | PropKind::SubAck | PropKind::UnsubAck => ACK,
            PropKind::Subscribe => bits(&[SUBSCRIPTION_IDENTIFIER, USER_PROPERTY]),
            PropKind::Unsubscribe => bits(&[USER_PROPERTY]),
            PropKind::Disconnect => ACK | bits(&[SESSION_EXPIRY_INTERVAL, SERVER_REFERENCE]),
            PropKind::Auth => ACK | bits(&[AUTHENTICATION_METHOD, AUTHENTICATION_DATA]),
        }
    }
}

/// One property value as it sits on the wire.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Byte(u8),
    U16(u16),
    U32(u32),
    Varint(u32),
    Str(&'a str),
    Bin(&'a [u8]),
    Pair(&'a str, &'a str),
}

impl Value<'_> {
    /// Encoded size including the one-byte identifier.
    fn len(&self) -> usize {
        1 + match self {
            Value::Byte(_) => 1,
            Value::U16(_) => 2,
            Value::U32(_) => 4,
            Value::Varint(v) => varint_len(*v as usize),
            Value::Str(s) => bin_len(s.as_bytes()),
            Value::Bin(b) => bin_len(b),
            Value::Pair(k, v) => bin_len(k.as_bytes()) + bin_len(v.as_bytes()),
        }
    }

    fn put(&self, id: u8, out: &mut Vec<u8>) {
        out.push(id);
        match self {
            Value::Byte(v) => out.push(*v),
            Value::U16(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::U32(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Varint(v) => put_varint(out, *v as usize),
            Value::Str(s) => put_bin(out, s.as_bytes()),
            Value::Bin(b) => put_bin(out, b),
            Value::Pair(k, v) => {
                put_bin(out, k.as_bytes());
                put_bin(out, v.as_bytes());
            }
        }
    }
}

/// Read the value of known property `id` from a validated block, for iteration.
fn read_value<'a>(r: &mut Reader<'a>, id: u8) -> Result<Value<'a>, DecodeError> {
    use id::*;
    Ok(match id {
        SERVER_KEEP_ALIVE | RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | TOPIC_ALIAS => {
            Value::U16(r.u16()?)
        }
        MESSAGE_EXPIRY_INTERVAL
        | SESSION_EXPIRY_INTERVAL
        | WILL_DELAY_INTERVAL
        | MAXIMUM_PACKET_SIZE => Value::U32(r.u32()?),
        SUBSCRIPTION_IDENTIFIER => Value::Varint(r.varint()? as u32),
        RESPONSE_TOPIC => {
            let topic = r.topic_name()?;
            if topic.is_empty() {
                return Err(DecodeError::EmptyTopicName);
            }
            Value::Str(topic)
        }
        CONTENT_TYPE
        | ASSIGNED_CLIENT_IDENTIFIER
        | AUTHENTICATION_METHOD
        | RESPONSE_INFORMATION
        | SERVER_REFERENCE
        | REASON_STRING => Value::Str(r.str()?),
        CORRELATION_DATA | AUTHENTICATION_DATA => Value::Bin(r.binary()?),
        USER_PROPERTY => Value::Pair(r.str()?, r.str()?),
        _ => Value::Byte(r.u8()?),
    })
}

/// Read the value of property `id` straight into `p`, applying its range rule: flags are
/// 0 or 1, maxima, aliases and identifiers are never 0 (0x82). One match, no intermediate
/// value: this runs for every property of every packet.
fn read_into<'a>(r: &mut Reader<'a>, p: &mut Properties<'a>, id: u8) -> Result<(), DecodeError> {
    use id::*;
    let bad = DecodeError::InvalidPropertyValue { id };
    let flag = |v: u8| if v <= 1 { Ok(Some(v)) } else { Err(bad) };
    let nonzero_u16 = |v: u16| if v != 0 { Ok(Some(v)) } else { Err(bad) };
    match id {
        PAYLOAD_FORMAT_INDICATOR => p.payload_format_indicator = flag(r.u8()?)?,
        MESSAGE_EXPIRY_INTERVAL => p.message_expiry_interval = Some(r.u32()?),
        CONTENT_TYPE => p.content_type = Some(r.str()?),
        RESPONSE_TOPIC => match r.topic_name()? {
            "" => return Err(DecodeError::EmptyTopicName),
            topic => p.response_topic = Some(topic),
        },
        CORRELATION_DATA => p.correlation_data = Some(r.binary()?),
        // Subscription Identifiers stay in the block (they may repeat); check the value.
        SUBSCRIPTION_IDENTIFIER => {
            if r.varint()? == 0 {
                return Err(bad);
            }
        }
        SESSION_EXPIRY_INTERVAL => p.session_expiry_interval = Some(r.u32()?),
        ASSIGNED_CLIENT_IDENTIFIER => p.assigned_client_identifier = Some(r.str()?),
        SERVER_KEEP_ALIVE => p.server_keep_alive = Some(r.u16()?),
        AUTHENTICATION_METHOD => p.authentication_method = Some(r.str()?),
        AUTHENTICATION_DATA => p.authentication_data = Some(r.binary()?),
        REQUEST_PROBLEM_INFORMATION => p.request_problem_information = flag(r.u8()?)?,
        WILL_DELAY_INTERVAL => p.will_delay_interval = Some(r.u32()?),
        REQUEST_RESPONSE_INFORMATION => p.request_response_information = flag(r.u8()?)?,
        RESPONSE_INFORMATION => p.response_information = Some(r.str()?),
        SERVER_REFERENCE => p.server_reference = Some(r.str()?),
        REASON_STRING => p.reason_string = Some(r.str()?),
        RECEIVE_MAXIMUM => p.receive_maximum = nonzero_u16(r.u16()?)?,
        TOPIC_ALIAS_MAXIMUM => p.topic_alias_maximum = Some(r.u16()?),
        TOPIC_ALIAS => p.topic_alias = nonzero_u16(r.u16()?)?,
        MAXIMUM_QOS => p.maximum_qos = flag(r.u8()?)?,
        RETAIN_AVAILABLE => p.retain_available = flag(r.u8()?)?,
        USER_PROPERTY => {
            r.str()?;
            r.str()?;
        }
        MAXIMUM_PACKET_SIZE => match r.u32()? {
            0 => return Err(bad),
            v => p.maximum_packet_size = Some(v),
        },
        WILDCARD_SUBSCRIPTION_AVAILABLE => p.wildcard_subscription_available = flag(r.u8()?)?,
        SUBSCRIPTION_IDENTIFIER_AVAILABLE => p.subscription_identifier_available = flag(r.u8()?)?,
        SHARED_SUBSCRIPTION_AVAILABLE => p.shared_subscription_available = flag(r.u8()?)?,
        _ => return Err(DecodeError::InvalidPropertyId { id }),
    }
    Ok(())
}

/// Counts of what a block holds so far, for the duplicate and flood rules.
#[derive(Default)]
struct Seen {
    once: u64,
    user: usize,
    sub_ids: usize,
}

impl Seen {
    fn note(&mut self, id: u8, kind: PropKind) -> Result<(), DecodeError> {
        let count = match id {
            id::USER_PROPERTY => &mut self.user,
            id::SUBSCRIPTION_IDENTIFIER if kind == PropKind::Publish => &mut self.sub_ids,
            _ => {
                let bit = 1u64 << id;
                if self.once & bit != 0 {
                    return Err(DecodeError::DuplicateProperty { id });
                }
                self.once |= bit;
                return Ok(());
            }
        };
        *count += 1;
        if *count > REPEATED_PROPERTIES_MAX {
            return Err(DecodeError::TooManyProperties { id });
        }
        Ok(())
    }
}

/// Decode a property block (length prefix included) for a packet of `kind`.
#[inline]
pub(crate) fn decode_properties<'a>(
    r: &mut Reader<'a>,
    kind: PropKind,
) -> Result<Properties<'a>, DecodeError> {
    let len = r.varint()?;
    let block = r.bytes(len)?;
    if block.is_empty() {
        return Ok(Properties::default());
    }
    decode_block(block, kind)
}

fn decode_block(block: &[u8], kind: PropKind) -> Result<Properties<'_>, DecodeError> {
    let mut props = Properties::default();
    let allowed = kind.allowed();
    let mut seen = Seen::default();
    let mut r = Reader::new(block);
    while !r.is_empty() {
        let id = r.u8()?;
        if id >= 64 || allowed & (1u64 << id) == 0 {
            return Err(DecodeError::InvalidPropertyId { id });
        }
        seen.note(id, kind)?;
        read_into(&mut r, &mut props, id)?;
    }
    if seen.user > 0 {
        props.user_properties = UserProperties::Wire(block);
    }
    if seen.once & (1u64 << id::SUBSCRIPTION_IDENTIFIER) != 0 || seen.sub_ids > 0 {
        props.subscription_identifiers = SubscriptionIds::Wire(block);
    }
    if props.authentication_data.is_some() && props.authentication_method.is_none() {
        return Err(DecodeError::AuthDataWithoutMethod);
    }
    Ok(props)
}

/// Call `f` for every property present, in identifier order. Straight-line: this runs on
/// every encode, so it must cost one branch per absent property and nothing else.
#[inline]
fn for_each<'a>(p: &Properties<'a>, mut f: impl FnMut(u8, Value<'a>)) {
    use id::*;
    macro_rules! emit {
        ($field:ident, $id:expr, $variant:ident) => {
            if let Some(v) = p.$field {
                f($id, Value::$variant(v));
            }
        };
    }
    emit!(payload_format_indicator, PAYLOAD_FORMAT_INDICATOR, Byte);
    emit!(message_expiry_interval, MESSAGE_EXPIRY_INTERVAL, U32);
    emit!(content_type, CONTENT_TYPE, Str);
    emit!(response_topic, RESPONSE_TOPIC, Str);
    emit!(correlation_data, CORRELATION_DATA, Bin);
    for v in p.subscription_identifiers.iter() {
        f(SUBSCRIPTION_IDENTIFIER, Value::Varint(v));
    }
    emit!(session_expiry_interval, SESSION_EXPIRY_INTERVAL, U32);
    emit!(assigned_client_identifier, ASSIGNED_CLIENT_IDENTIFIER, Str);
    emit!(server_keep_alive, SERVER_KEEP_ALIVE, U16);
    emit!(authentication_method, AUTHENTICATION_METHOD, Str);
    emit!(authentication_data, AUTHENTICATION_DATA, Bin);
    emit!(
        request_problem_information,
        REQUEST_PROBLEM_INFORMATION,
        Byte
    );
    emit!(will_delay_interval, WILL_DELAY_INTERVAL, U32);
    emit!(
        request_response_information,
        REQUEST_RESPONSE_INFORMATION,
        Byte
    );
    emit!(response_information, RESPONSE_INFORMATION, Str);
    emit!(server_reference, SERVER_REFERENCE, Str);
    emit!(reason_string, REASON_STRING, Str);
    emit!(receive_maximum, RECEIVE_MAXIMUM, U16);
    emit!(topic_alias_maximum, TOPIC_ALIAS_MAXIMUM, U16);
    emit!(topic_alias, TOPIC_ALIAS, U16);
    emit!(maximum_qos, MAXIMUM_QOS, Byte);
    emit!(retain_available, RETAIN_AVAILABLE, Byte);
    for (k, v) in p.user_properties.iter() {
        f(USER_PROPERTY, Value::Pair(k, v));
    }
    emit!(maximum_packet_size, MAXIMUM_PACKET_SIZE, U32);
    emit!(
        wildcard_subscription_available,
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        Byte
    );
    emit!(
        subscription_identifier_available,
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        Byte
    );
    emit!(
        shared_subscription_available,
        SHARED_SUBSCRIPTION_AVAILABLE,
        Byte
    );
}

impl Properties<'_> {
    /// Bytes of the property block's content, without its length prefix.
    pub fn content_len(&self) -> usize {
        let mut n = 0;
        for_each(self, |_, v| n += v.len());
        n
    }

    /// True when no property is set (3.x packets, or a bare 5.0 packet).
    pub fn is_empty(&self) -> bool {
        self.content_len() == 0
    }
}

/// Encoded size of a property block with content `content` bytes, prefix included.
#[inline]
pub(crate) fn block_len(content: usize) -> usize {
    varint_len(content) + content
}

/// Append a property block: its length `content` (from `content_len`), then the content.
pub(crate) fn put_properties(out: &mut Vec<u8>, p: &Properties<'_>, content: usize) {
    put_varint(out, content);
    if content > 0 {
        for_each(p, |id, v| v.put(id, out));
    }
}

/// Iterates a validated property block; stops at the first byte that does not parse
/// (which a block built by `decode` never has).
#[derive(Debug, Clone)]
struct BlockIter<'a> {
    r: Reader<'a>,
}

impl<'a> Iterator for BlockIter<'a> {
    type Item = (u8, Value<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let id = self.r.u8().ok()?;
        // Unknown ids never reach a decoded block; stop rather than guess a width.
        let parsed = if is_known(id) {
            read_value(&mut self.r, id).ok()
        } else {
            None
        };
        if parsed.is_none() {
            self.r = Reader::new(&[]);
        }
        parsed.map(|v| (id, v))
    }
}

/// True for the 27 property identifiers MQTT 5.0 defines.
fn is_known(id: u8) -> bool {
    const KNOWN: u64 = bits(&[
        id::PAYLOAD_FORMAT_INDICATOR,
        id::MESSAGE_EXPIRY_INTERVAL,
        id::CONTENT_TYPE,
        id::RESPONSE_TOPIC,
        id::CORRELATION_DATA,
        id::SUBSCRIPTION_IDENTIFIER,
        id::SESSION_EXPIRY_INTERVAL,
        id::ASSIGNED_CLIENT_IDENTIFIER,
        id::SERVER_KEEP_ALIVE,
        id::AUTHENTICATION_METHOD,
        id::AUTHENTICATION_DATA,
        id::REQUEST_PROBLEM_INFORMATION,
        id::WILL_DELAY_INTERVAL,
        id::REQUEST_RESPONSE_INFORMATION,
        id::RESPONSE_INFORMATION,
        id::SERVER_REFERENCE,
        id::REASON_STRING,
        id::RECEIVE_MAXIMUM,
        id::TOPIC_ALIAS_MAXIMUM,
        id::TOPIC_ALIAS,
        id::MAXIMUM_QOS,
        id::RETAIN_AVAILABLE,
        id::USER_PROPERTY,
        id::MAXIMUM_PACKET_SIZE,
        id::WILDCARD_SUBSCRIPTION_AVAILABLE,
        id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        id::SHARED_SUBSCRIPTION_AVAILABLE,
    ]);
    id < 64 && KNOWN & (1u64 << id) != 0
}

#[derive(Debug, Clone)]
enum PairsInner<'a> {
    Wire(BlockIter<'a>),
    Slice(std::slice::Iter<'a, (&'a str, &'a str)>),
}

/// Iterator over User Properties as (name, value), in order.
#[derive(Debug, Clone)]
pub struct UserPropertiesIter<'a>(PairsInner<'a>);

impl<'a> Iterator for UserPropertiesIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            PairsInner::Slice(it) => it.next().copied(),
            PairsInner::Wire(it) => it.find_map(|(_, v)| match v {
                Value::Pair(k, v) => Some((k, v)),
                _ => None,
            }),
        }
    }
}

impl<'a> UserProperties<'a> {
    /// The (name, value) pairs in wire order.
    pub fn iter(&self) -> UserPropertiesIter<'a> {
        match *self {
            UserProperties::Wire(block) => UserPropertiesIter(PairsInner::Wire(BlockIter {
                r: Reader::new(block),
            })),
            UserProperties::Slice(s) => UserPropertiesIter(PairsInner::Slice(s.iter())),
        }
    }

    /// True when there is no User Property.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// The number of User Properties (a scan for the wire form).
    pub fn len(&self) -> usize {
        match self {
            UserProperties::Slice(s) => s.len(),
            UserProperties::Wire(_) => self.iter().count(),
        }
    }
}

impl PartialEq for UserProperties<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for UserProperties<'_> {}

#[derive(Debug, Clone)]
enum IdsInner<'a> {
    Wire(BlockIter<'a>),
    Slice(std::slice::Iter<'a, u32>),
}

/// Iterator over Subscription Identifiers, in order.
#[derive(Debug, Clone)]
pub struct SubscriptionIdsIter<'a>(IdsInner<'a>);

impl Iterator for SubscriptionIdsIter<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        match &mut self.0 {
            IdsInner::Slice(it) => it.next().copied(),
            IdsInner::Wire(it) => it.find_map(|(_, v)| match v {
                Value::Varint(v) => Some(v),
                _ => None,
            }),
        }
    }
}

impl<'a> SubscriptionIds<'a> {
    /// The identifiers in wire order.
    pub fn iter(&self) -> SubscriptionIdsIter<'a> {
        match *self {
            SubscriptionIds::Wire(block) => SubscriptionIdsIter(IdsInner::Wire(BlockIter {
                r: Reader::new(block),
            })),
            SubscriptionIds::Slice(s) => SubscriptionIdsIter(IdsInner::Slice(s.iter())),
        }
    }

    /// True when there is no Subscription Identifier.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// The number of identifiers (a scan for the wire form).
    pub fn len(&self) -> usize {
        match self {
            SubscriptionIds::Slice(s) => s.len(),
            SubscriptionIds::Wire(_) => self.iter().count(),
        }
    }
}

impl PartialEq for SubscriptionIds<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for SubscriptionIds<'_> {}

#[cfg(test)]
mod tests {
    use super::super::{decode, put_varint, DecodeError, Decoded, Packet, Version};
    use super::*;

    /// A 5.0 PUBACK carrying `n` copies of the User Property ("k", "v").
    fn puback_with_user_properties(n: usize) -> Vec<u8> {
        let mut block = Vec::new();
        for _ in 0..n {
            block.extend_from_slice(&[id::USER_PROPERTY, 0, 1, b'k', 0, 1, b'v']);
        }
        let mut body = vec![0, 1, 0];
        put_varint(&mut body, block.len());
        body.extend_from_slice(&block);
        let mut out = vec![0x40];
        put_varint(&mut out, body.len());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn user_property_flood_is_capped() {
        let ok = puback_with_user_properties(REPEATED_PROPERTIES_MAX);
        let Ok(Decoded::Packet {
            packet: Packet::PubAck(a),
            ..
        }) = decode(&ok, Version::V5, usize::MAX)
        else {
            panic!("cap-sized block refused");
        };
        assert_eq!(a.properties.user_properties.len(), REPEATED_PROPERTIES_MAX);
        // CVE-2021-41039: 10,000 user properties are refused after a bounded scan.
        let flood = puback_with_user_properties(10_000);
        let err = decode(&flood, Version::V5, usize::MAX);
        assert_eq!(
            err,
            Err(DecodeError::TooManyProperties {
                id: id::USER_PROPERTY
            })
        );
        assert_eq!(err.map(|_| ()).unwrap_err().reason_code().to_u8(), 0x83);
    }

    #[test]
    fn wire_and_slice_lists_compare_by_items() {
        let block = [
            id::USER_PROPERTY,
            0,
            1,
            b'a',
            0,
            1,
            b'b',
            id::SUBSCRIPTION_IDENTIFIER,
            5,
        ];
        assert_eq!(
            UserProperties::Wire(&block),
            UserProperties::Slice(&[("a", "b")])
        );
        assert_ne!(UserProperties::Wire(&block), UserProperties::Slice(&[]));
        assert_eq!(SubscriptionIds::Wire(&block), SubscriptionIds::Slice(&[5]));
        assert!(SubscriptionIds::Wire(&[id::USER_PROPERTY, 0, 0, 0, 0]).is_empty());
    }

    #[test]
    fn every_allowed_property_is_known() {
        for kind in [
            PropKind::Connect,
            PropKind::Will,
            PropKind::ConnAck,
            PropKind::Publish,
            PropKind::Ack,
            PropKind::Subscribe,
            PropKind::SubAck,
            PropKind::Unsubscribe,
            PropKind::UnsubAck,
            PropKind::Disconnect,
            PropKind::Auth,
        ] {
            for id in 0..64u8 {
                if kind.allowed() & (1 << id) != 0 {
                    assert!(is_known(id), "{kind:?} allows unknown {id:#x}");
                }
            }
        }
    }
}
