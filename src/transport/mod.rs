//! Byte streams under MQTT: the [`Transport`] of one connection.
//!
//! **Owns** the socket of a connection and whatever stream layer sits on it (today plain
//! TCP; next TLS, WebSocket framing, a PROXY protocol header). **Invariant:** above this
//! module there are only application bytes, the MQTT byte stream, in order, exactly as
//! the client sent them; below it only the socket. **Must not touch:** MQTT packets,
//! links, sessions or the bus. Only `shard` names this module; the broker never does.
//!
//! # The interface every variant implements
//!
//! A transport is a non-blocking, edge-triggered byte pipe, driven by the shard's poll loop.
//! The enum dispatches by `match` (no `dyn`, no allocation per call), so adding a variant
//! costs one arm per method and never touches the broker or the event loop's logic.
//!
//! - **Read** ([`std::io::Read`]): fill `buf` with *application* bytes. A TLS variant first
//!   pulls ciphertext from the socket (`read_tls`), runs `process_new_packets`, then reads
//!   plaintext from its `reader()`; a WebSocket variant pulls frames and returns their
//!   decoded payload (frames may split or join MQTT packets freely). `Ok(0)` means the peer
//!   closed the stream (TCP FIN, TLS close_notify, WebSocket Close). `WouldBlock` means
//!   *nothing more is available now, neither in the socket nor buffered inside the
//!   transport*: the event loop reads until `WouldBlock` (or its per-turn budget, after
//!   which it comes back by itself), so a variant must never keep decoded bytes while
//!   reporting `WouldBlock` or they would wait for an edge that never comes. Reading may
//!   create output of the transport's own (a TLS handshake flight, a WebSocket Pong or
//!   Close); see [`Transport::wants_write`].
//! - **Write** ([`std::io::Write::write`]): offer application bytes; the return value is
//!   how many the transport *took responsibility for* (TLS: accepted into the session's
//!   `writer()`; WebSocket: framed). It then pushes what it can to the socket at once
//!   (`write_tls`, framed bytes). A variant holding undelivered output of its own takes no
//!   new bytes and answers `WouldBlock`, so its own buffer stays bounded by one write's
//!   worth (the event loop's flush budget), and backpressure still shows in the
//!   connection's `TxBuf`, which the broker sees. `flush` is a no-op: flushing is
//!   [`Transport::send_pending`].
//! - **Own output** ([`Transport::wants_write`], [`Transport::send_pending`]): bytes the
//!   transport must still write that are not in the `TxBuf` (TLS records already
//!   encrypted, a handshake flight, a partial WebSocket frame header). The event loop calls
//!   `send_pending` before writing the `TxBuf` on every flush, and keeps a connection
//!   whose transport still `wants_write` registered for writability (it is flushed again
//!   on the next writable edge). TCP never has any.
//! - **Readiness** ([`mio::event::Source`]): the socket's registration. Every variant sits on
//!   one socket, so it registers that socket; interest is always readable + writable
//!   (edge-triggered), so a transport never needs to change its interest.
//! - **Moving** : a `Transport` is `Send` and carries all of its state (a TLS session, a
//!   WebSocket decoder midway through a frame), so a connection handed to its session's
//!   home shard moves whole; the receiving shard registers it and reads on.
//! - **Closing** ([`Transport::shutdown`]): end the stream (TLS: close_notify, then FIN).
//!
//! A listener's [`ListenerKind`] decides which variant wraps each socket it accepts, so a
//! new transport is one variant in each enum plus its listener configuration.
//!
//! A variant is a socket plus a sans-IO state machine (`tls.rs`, `ws.rs`, `proxy.rs`): the
//! state machine takes and produces bytes, and the variant's methods above are the only
//! place where it meets the socket. A PROXY header is consumed before the first byte is
//! returned by `read`; the address it carries is for the shard to pass on to the link.
#![forbid(unsafe_code)]

pub mod proxy;
mod tcp;
pub mod tls;
pub mod ws;

use std::io;
use std::net::SocketAddr;

pub use tcp::Tcp;

/// What a listener speaks: decides the [`Transport`] wrapped around each accepted socket.
/// A TLS listener will carry its (shared, immutable) server configuration here.
#[derive(Debug, Clone)]
pub enum ListenerKind {
    /// Plain MQTT over TCP.
    Tcp,
}

impl ListenerKind {
    /// The transport for a socket this listener accepted.
    pub fn wrap(&self, stream: mio::net::TcpStream) -> Transport {
        match self {
            ListenerKind::Tcp => Transport::tcp(stream),
        }
    }
}

/// The byte stream of one connection. See the module documentation for the contract.
#[derive(Debug)]
pub enum Transport {
    /// Plain TCP.
    Tcp(Tcp),
}

impl Transport {
    /// A plain TCP transport over an accepted (non-blocking) stream.
    pub fn tcp(stream: mio::net::TcpStream) -> Transport {
        Transport::Tcp(Tcp::new(stream))
    }

    /// True while the transport holds output of its own that the socket has not taken
    /// (never for TCP): the connection must be flushed again on its next writable edge.
    pub fn wants_write(&self) -> bool {
        match self {
            Transport::Tcp(_) => false,
        }
    }

    /// Write the transport's own pending output. `Ok(true)` when none is left.
    pub fn send_pending(&mut self) -> io::Result<bool> {
        match self {
            Transport::Tcp(_) => Ok(true),
        }
    }

    /// End the stream in both directions; errors do not matter any more.
    pub fn shutdown(&mut self) {
        match self {
            Transport::Tcp(t) => t.shutdown(),
        }
    }

    /// Half-close: send FIN (after any pending output) but keep reading, for a lingering
    /// close that lets the peer read our last packet before the socket goes.
    pub fn shutdown_write(&mut self) {
        match self {
            Transport::Tcp(t) => t.shutdown_write(),
        }
    }

    /// The remote address as the socket reports it.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Transport::Tcp(t) => t.peer_addr(),
        }
    }
}

impl io::Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(t) => t.read(buf),
        }
    }
}

impl io::Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl mio::event::Source for Transport {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        match self {
            Transport::Tcp(t) => t.stream.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        match self {
            Transport::Tcp(t) => t.stream.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        match self {
            Transport::Tcp(t) => t.stream.deregister(registry),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    use super::*;

    /// Read until `n` bytes or EOF, retrying `WouldBlock` until a bounded deadline.
    fn read_n(t: &mut Transport, n: usize) -> (Vec<u8>, bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.len() < n {
            match t.read(&mut buf) {
                Ok(0) => return (got, true),
                Ok(k) => got.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no bytes within 5 s");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("read failed: {e}"),
            }
        }
        (got, false)
    }

    /// The TCP variant keeps the contract: bytes both ways in order, `WouldBlock` when
    /// nothing is there, `Ok(0)` at the peer's close, never output of its own.
    #[test]
    fn tcp_passes_bytes_through_and_reports_close() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let mut client = std::net::TcpStream::connect(addr).expect("connect");
        let bound = Some(Duration::from_secs(5));
        client.set_read_timeout(bound).expect("read timeout");
        let (server, _) = listener.accept().expect("accept");
        server.set_nonblocking(true).expect("nonblocking");
        let mut t = ListenerKind::Tcp.wrap(mio::net::TcpStream::from_std(server));
        let mut buf = [0u8; 8];
        let idle = t.read(&mut buf).map_err(|e| e.kind());
        assert_eq!(idle, Err(io::ErrorKind::WouldBlock));
        client.write_all(b"\x10\x0cMQTT").expect("client write");
        assert_eq!(read_n(&mut t, 6), (b"\x10\x0cMQTT".to_vec(), false));
        assert_eq!(t.write(b"\x20\x02\x00\x00").expect("write"), 4);
        assert!(!t.wants_write());
        assert!(t.send_pending().expect("nothing pending"));
        let mut answer = [0u8; 4];
        client.read_exact(&mut answer).expect("client read");
        assert_eq!(&answer, b"\x20\x02\x00\x00");
        drop(client);
        assert_eq!(read_n(&mut t, 1), (Vec::new(), true), "EOF is Ok(0)");
    }
}
