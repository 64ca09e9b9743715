//! `Link`: the protocol side of one connection, as the broker sees it.
//!
//! Owns: per-connection MQTT state that dies with the socket (version, keepalive, the
//! output buffer, topic aliases, negotiated limits). Invariant: a link in `Connected`
//! always names a session on this shard, and that session names the link back. Must not
//! touch: the socket itself, which the event loop keeps beside it under the same key.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::protocol::{ReasonCode, Version};
use crate::session::StoredWill;
use crate::timer::TimerId;
use crate::txbuf::TxBuf;

/// What the connection awaits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Accepted; the first packet must be CONNECT.
    ExpectConnect,
    /// CONNECT received with an Authentication Method; only AUTH may follow.
    AwaitAuth,
    /// CONNACK sent; any packet but CONNECT.
    Connected,
    /// Being closed at the end of this turn; input is ignored.
    Closing,
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Link {
    /// Generation, so a stale timer or event for a reused key is recognised.
    pub gen: u32,
    /// What the connection awaits.
    pub state: LinkState,
    /// Protocol version from CONNECT (3.1.1 until then).
    pub version: Version,
    /// The attached session (sessions slab key), once connected.
    pub session: Option<usize>,
    /// Keep Alive × 1.5 in ms; 0 = none.
    pub keepalive_ms: u64,
    /// Last time a packet arrived (shard clock, ms).
    pub last_rx_ms: u64,
    /// Encoded packets waiting for the socket.
    pub tx: TxBuf,
    /// Peer address, for logs.
    pub peer: SocketAddr,
    /// True while queued on the broker's dirty list.
    pub dirty: bool,
    /// Publish the Will when the connection ends (cleared by DISCONNECT 0x00).
    pub publish_will: bool,
    /// The client's Maximum Packet Size (5.0).
    pub client_max_packet: usize,
    /// Inbound topic aliases (5.0), index = alias - 1.
    pub aliases_in: Vec<Option<Arc<str>>>,
    /// The topic of this client's last PUBLISH: most publishers repeat theirs, so the
    /// shared topic string is reused instead of allocated per message.
    pub last_topic: Option<Arc<str>>,
    /// The keepalive / connect-timeout timer.
    pub timer: Option<TimerId>,
    /// Reason Strings and User Properties may be sent on errors (5.0).
    pub problem_info: bool,
    /// Why the connection is closing, for the log.
    pub close_reason: Option<ReasonCode>,
    /// Client id, once known (for logs).
    pub client_id: Option<Box<str>>,
    /// Outbound topic aliases (5.0): topic → alias, at most `aliases_out_max` of them.
    pub aliases_out: Option<Box<std::collections::HashMap<Arc<str>, u16>>>,
    /// The client's Topic Alias Maximum (0 = none).
    pub aliases_out_max: u16,
    /// An enhanced-authentication exchange in progress.
    pub auth: Option<Box<super::auth::AuthFlow>>,
    /// The user proved by enhanced authentication.
    pub username: Option<Box<str>>,
    /// The server-final SCRAM message, sent in CONNACK once the CONNECT completes.
    pub auth_final: Option<Box<[u8]>>,
    /// The Will of this connection, published if it ends without a normal DISCONNECT.
    pub will: Option<Box<StoredWill>>,
}

impl Link {
    /// A freshly accepted connection.
    pub fn new(gen: u32, peer: SocketAddr, now_ms: u64) -> Link {
        Link {
            gen,
            state: LinkState::ExpectConnect,
            version: Version::V3_1_1,
            session: None,
            keepalive_ms: 0,
            last_rx_ms: now_ms,
            tx: TxBuf::default(),
            peer,
            dirty: false,
            publish_will: true,
            client_max_packet: usize::MAX,
            aliases_in: Vec::new(),
            last_topic: None,
            timer: None,
            problem_info: true,
            close_reason: None,
            client_id: None,
            will: None,
            auth: None,
            username: None,
            auth_final: None,
            aliases_out: None,
            aliases_out_max: 0,
        }
    }

    /// The shared string for `topic`, reusing the previous one when it is the same; the
    /// flag says it is new (and so not yet validated).
    pub fn intern_topic(&mut self, topic: &str) -> (Arc<str>, bool) {
        match &self.last_topic {
            Some(t) if **t == *topic => (t.clone(), false),
            _ => {
                let t: Arc<str> = topic.into();
                self.last_topic = Some(t.clone());
                (t, true)
            }
        }
    }

    /// True when deliveries may be written to this link.
    pub fn is_connected(&self) -> bool {
        self.state == LinkState::Connected
    }
}
