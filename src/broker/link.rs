//! `Link` and the connection table: one connection, as the broker sees it.
//!
//! Owns: per-connection MQTT state that dies with the socket (version, keepalive, topic
//! aliases, negotiated limits) and the table [`Links`] of this shard's connections, one
//! slab of [`Conn`]: the link, its write buffer, and the shard's own part `X` (the
//! transport and receive buffer in the event loop; whatever a simulation wants in tests).
//! Invariant: a link in `Connected` always names a session on this shard, and that session
//! names the link back; a key names one connection from `insert` to `remove`. Must not
//! touch: `X`. The broker is generic over it and never looks inside, so it never names a
//! shard or transport type and the connection state lives in a single slab.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::protocol::{ReasonCode, Version};
use crate::session::StoredWill;
use slab::Slab;

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

/// `topic` (or a filter) under `mount`: `mount` + `topic`; a shared subscription keeps its
/// `$share/GROUP/` in front. Borrowed unchanged without a mount point.
pub fn mounted<'a>(mount: Option<&str>, topic: &'a str) -> std::borrow::Cow<'a, str> {
    let Some(m) = mount else {
        return std::borrow::Cow::Borrowed(topic);
    };
    if let Some(rest) = topic.strip_prefix("$share/") {
        if let Some((group, filter)) = rest.split_once('/') {
            return std::borrow::Cow::Owned(format!("$share/{group}/{m}{filter}"));
        }
    }
    std::borrow::Cow::Owned(format!("{m}{topic}"))
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
    /// Peer address, for logs.
    pub peer: SocketAddr,
    /// True while queued on the dirty list (set and cleared only by `Effects`).
    pub(super) dirty: bool,
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
    /// Id of the listener that accepted the connection (`config::listener::Listener::id`,
    /// stable across reloads): its security settings apply.
    pub listener: usize,
    /// ACL decisions already made for this connection's identity.
    pub acl_cache: crate::auth::AclCache,
    /// A CONNECT waiting for its password check (input is not read meanwhile).
    pub pending_connect: Option<Box<PendingConnect>>,
    /// A refused PUBLISH was logged already (refusals are logged once per connection).
    pub publish_denied_logged: bool,
    /// When a QoS 0 drop to this connection was last logged (ms; 0: never).
    pub drop_logged_ms: u64,
    /// The client has sent a PUBLISH: under memory pressure it is not read.
    pub published: bool,
    /// The listener's `mount_point`: topics of this client live under it (prefixed on the
    /// way in, stripped on the way out).
    pub mount: Option<Arc<str>>,
    /// The cluster's session registry names this node for the client id (cluster only):
    /// the CONNECT may complete.
    pub claimed: bool,
    /// The link's output is not flushed: its CONNACK logged records (a stored session)
    /// that are not durable yet, and everything written after the CONNACK stays behind it
    /// (set at CONNACK, cleared when the journal releases it; drivers read it through
    /// [`Link::output_held`]).
    pub(super) output_held: bool,
    /// The link was to close while its output was held: it stays open (input ignored)
    /// until the output is released, then closes with it flushed.
    pub(super) close_deferred: bool,
}

/// A CONNECT kept while the verifier checks its password, then until its refusal is due.
#[derive(Debug)]
pub struct PendingConnect {
    /// The CONNECT, re-encoded (it borrowed from the receive buffer).
    pub connect: Vec<u8>,
    /// Set once the check failed: the CONNACK to send when the throttle delay runs out.
    pub refusal: Option<ReasonCode>,
    /// Waiting for the cluster's session registry rather than the password check.
    pub claim: bool,
    /// Claimed; waiting for the session's state from its old node (cluster).
    pub handover: bool,
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
            listener: 0,
            acl_cache: crate::auth::AclCache::new(),
            pending_connect: None,
            publish_denied_logged: false,
            drop_logged_ms: 0,
            published: false,
            mount: None,
            claimed: false,
            output_held: false,
            close_deferred: false,
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

    /// True while the link's output must not be flushed (the CONNACK waits for its
    /// session's records to be durable): a driver's flush and close paths skip it.
    pub fn output_held(&self) -> bool {
        self.output_held
    }

    /// True when deliveries may be written to this link.
    pub fn is_connected(&self) -> bool {
        self.state == LinkState::Connected
    }

    /// Who this connection is, for ACL decisions.
    pub fn acl_client(&self) -> crate::auth::Client<'_> {
        crate::auth::Client {
            username: self.username.as_deref(),
            client_id: self.client_id.as_deref().unwrap_or(""),
        }
    }
}

/// One connection: the broker's part (link state, write buffer) and the shard's part `X`.
#[derive(Debug)]
pub struct Conn<X> {
    /// Protocol state.
    pub link: Link,
    /// Encoded packets waiting for the transport.
    pub tx: TxBuf,
    /// The shard's part (transport, receive buffer), opaque to the broker.
    pub io: X,
}

/// This shard's connections, keyed by a small integer (the poll token in the event loop).
///
/// Each connection is boxed: a slot of the slab is then one pointer, not the whole
/// connection (584 bytes in the event loop). The slab grows by doubling and never shrinks,
/// so with the connections inline a shard whose count had just passed a power of two held
/// up to twice their size in empty slots: 2,000 dribbling sockets cost 1,000-1,600 bytes
/// each, by how the accepts fell between the shards (docs/robustness.md).
#[derive(Debug)]
pub struct Links<X> {
    slab: Slab<Box<Conn<X>>>,
}

impl<X> Default for Links<X> {
    fn default() -> Self {
        Links { slab: Slab::new() }
    }
}

impl<X> Links<X> {
    /// The link of connection `key`.
    pub fn get(&self, key: usize) -> Option<&Link> {
        self.slab.get(key).map(|c| &c.link)
    }

    /// The link of connection `key`, mutably.
    pub fn get_mut(&mut self, key: usize) -> Option<&mut Link> {
        self.slab.get_mut(key).map(|c| &mut c.link)
    }

    /// The whole connection `key`.
    pub fn conn(&self, key: usize) -> Option<&Conn<X>> {
        self.slab.get(key).map(Box::as_ref)
    }

    /// The whole connection `key`, mutably (fields borrow apart: link, tx, io).
    pub fn conn_mut(&mut self, key: usize) -> Option<&mut Conn<X>> {
        self.slab.get_mut(key).map(Box::as_mut)
    }

    /// Add a connection; returns its key.
    pub fn insert(&mut self, conn: Conn<X>) -> usize {
        self.slab.insert(Box::new(conn))
    }

    /// Remove connection `key`.
    pub fn remove(&mut self, key: usize) -> Option<Conn<X>> {
        self.slab.try_remove(key).map(|c| *c)
    }

    /// Connections held.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Every key with its link.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Link)> {
        self.slab.iter().map(|(k, c)| (k, &c.link))
    }

    /// Every key with its whole connection (read-only figures look at the write buffer).
    pub fn conns(&self) -> impl Iterator<Item = (usize, &Conn<X>)> {
        self.slab.iter().map(|(k, c)| (k, c.as_ref()))
    }

    /// Every connection's write buffer (the memory walk trims idle ones).
    pub fn write_buffers_mut(&mut self) -> impl Iterator<Item = &mut TxBuf> {
        self.slab.iter_mut().map(|(_, c)| &mut c.tx)
    }
}
