//! The simulated network: one byte pipe each way per connection.
//!
//! Owns: bytes in flight between simulated clients and the broker, and whether each
//! connection is broken or closed. Invariant: bytes leave a pipe only from its front, so
//! each direction is an ordered stream as TCP gives; a broken connection loses what was
//! in flight both ways. Must not touch: the broker or the clients' protocol state.

/// Index of a connection in `Net::conns`.
pub type ConnId = usize;

/// One simulated TCP connection.
#[derive(Debug, Default)]
pub struct Conn {
    /// The client that opened it.
    pub client: usize,
    /// Written by the client, not yet read by the broker.
    pub to_broker: Vec<u8>,
    /// Written by the broker, not yet read by the client.
    pub to_client: Vec<u8>,
    /// The network failed: the broker's next read sees an error.
    pub broken: bool,
    /// The broker closed it: the client sees end-of-stream once it has read `to_client`.
    pub closed: bool,
    /// The client stopped using it (it connected again to take its own session over); what
    /// arrives on it is read and ignored.
    pub abandoned: bool,
}

impl Conn {
    /// Neither broken nor closed.
    pub fn is_open(&self) -> bool {
        !self.broken && !self.closed
    }
}

/// Every connection ever opened in one run (ids are never reused).
#[derive(Debug, Default)]
pub struct Net {
    /// Indexed by `ConnId`.
    pub conns: Vec<Conn>,
}

impl Net {
    /// Open a connection for `client`.
    pub fn open(&mut self, client: usize) -> ConnId {
        self.conns.push(Conn {
            client,
            ..Conn::default()
        });
        self.conns.len() - 1
    }

    /// The network under `id` fails: in-flight bytes both ways are lost.
    pub fn break_conn(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(id) {
            c.broken = true;
            c.to_broker.clear();
            c.to_client.clear();
        }
    }

    /// True when no byte is in flight that someone will still read.
    pub fn quiet(&self) -> bool {
        self.conns
            .iter()
            .all(|c| c.broken || (c.to_client.is_empty() && (c.closed || c.to_broker.is_empty())))
    }
}
