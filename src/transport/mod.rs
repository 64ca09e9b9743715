//! Byte streams under MQTT: the [`Transport`] of one connection.
//!
//! **Owns** the socket of a connection and whatever stream layers sit on it: a PROXY
//! protocol header at its start, TLS, WebSocket framing (`Tcp`, `Tls`, `Ws`, `Wss`). **Invariant:** above this
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
//! - **Read** ([`std::io::Read`]): fill `buf` with *application* bytes. A TLS variant reads
//!   ciphertext from the socket into `buf` and decrypts it there (rustls's unbuffered API),
//!   keeping only an unfinished record; a WebSocket variant pulls frames and returns their
//!   decoded payload (frames may split or join MQTT packets freely). `Ok(0)` means the peer
//!   closed the stream (TCP FIN, TLS close_notify, WebSocket Close). `WouldBlock` means
//!   *nothing more is available now, neither in the socket nor buffered inside the
//!   transport*: the event loop reads until `WouldBlock` (or its per-turn budget, after
//!   which it comes back by itself), so a variant must never keep decoded bytes while
//!   reporting `WouldBlock` or they would wait for an edge that never comes. Reading may
//!   create output of the transport's own (a TLS handshake flight, a WebSocket Pong or
//!   Close); see [`Transport::wants_write`].
//! - **Write** ([`std::io::Write::write`]): offer application bytes; the return value is
//!   how many the transport *took responsibility for* (TLS: encrypted into its own
//!   output; WebSocket: framed). It then pushes what it can to the socket at once
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
//! A variant is a socket plus sans-IO state machines (`tls.rs`, `ws.rs`, `proxy.rs`): the
//! state machines take and produce bytes, and the variant's methods above are the only
//! place where they meet the socket, stacked as views: TLS reads
//! `tls.io(&mut sock)`, WebSocket `ws.io(&mut sock)`, WSS `ws.io(&mut tls.io(&mut sock))`.
//! `read` may also answer `Interrupted`: a layer spent its per-call budget on bytes that
//! carried no application byte (handshake records, pings); the shard reads again next
//! turn. `InvalidData` means refused, with the alert or Close already queued: the shard
//! flushes and closes. A PROXY header is consumed inside [`Tcp`] before the first byte
//! reaches any layer above (so TLS and WebSocket see only what follows it); the address it
//! carries is taken by the shard ([`Transport::take_proxied_addr`]) for the link's `peer`.
//! A listener's `max_connections` slot ([`Slot`]) lives in the socket and is given back
//! when the transport is dropped, on whichever shard that happens.
#![forbid(unsafe_code)]

pub mod proxy;
mod tcp;
pub mod tls;
pub mod ws;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use arc_swap::ArcSwap;

pub use tcp::{Slot, Tcp};

use crate::config::listener::CertUsername;
use proxy::ProxyVersion;
use tls::TlsStream;
use ws::{WsConfig, WsFramer};

/// What a listener speaks: decides the [`Transport`] wrapped around each accepted socket.
/// Shared (cloned) by every shard's handle to the listener.
#[derive(Debug, Clone, Default)]
pub struct ListenerKind {
    /// TLS: the server configuration, swapped whole when certificates are reloaded (new
    /// handshakes use the new one; sessions already made keep theirs).
    pub tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
    /// Whether a verified client certificate names the user (TLS only).
    pub naming: CertUsername,
    /// WebSocket framing (over TLS when `tls` is set too).
    pub ws: Option<WsConfig>,
    /// The PROXY header every connection must start with.
    pub proxy: Option<ProxyVersion>,
    /// Without `tls`: the PROXY v2 header must carry a client certificate CN the proxy
    /// verified (TLS terminated by the proxy, `require_certificate true`); `naming` then
    /// applies to that CN.
    pub proxy_requires_cert: bool,
    /// `max_connections`: the listener's open connections (all shards) and their limit.
    pub limit: Option<(Arc<AtomicUsize>, usize)>,
    /// `mount_point`, for the links of this listener's connections.
    pub mount: Option<Arc<str>>,
    /// The listener's id (`config::listener::Listener::id`), stable across reloads: the
    /// links of its connections name it to find their security settings.
    pub id: usize,
}

impl ListenerKind {
    /// Plain MQTT over TCP, unlimited.
    pub fn tcp() -> ListenerKind {
        ListenerKind::default()
    }

    /// Across a reload: count against the connections `old` already holds open (the same
    /// listener, kept), so a reload neither frees nor loses `max_connections` slots.
    pub fn keep_count_of(&mut self, old: &ListenerKind) {
        if let (Some((count, _)), Some((old_count, _))) = (&mut self.limit, &old.limit) {
            *count = old_count.clone();
        }
    }

    /// The transport for a socket this listener accepted. `Ok(None)`: the listener is at
    /// its `max_connections` (drop the socket: that closes it).
    pub fn wrap(&self, stream: mio::net::TcpStream) -> io::Result<Option<Transport>> {
        let mut sock = Tcp::new(stream);
        if let Some((count, max)) = &self.limit {
            match Slot::take(count, *max) {
                Some(slot) => sock.hold(slot),
                None => return Ok(None),
            }
        }
        if let Some(v) = self.proxy {
            let cert = (self.tls.is_none() && self.proxy_requires_cert).then_some(self.naming);
            sock.expect_proxy(v, cert);
        }
        sock.mount = self.mount.clone();
        let tls = match &self.tls {
            Some(cfg) => {
                let stream = TlsStream::new(cfg.load_full()).map_err(io::Error::other)?;
                Some(Box::new(TlsConn {
                    stream,
                    naming: self.naming,
                }))
            }
            None => None,
        };
        let ws = self.ws.clone().map(|c| Box::new(WsFramer::new(c)));
        Ok(Some(match (tls, ws) {
            (None, None) => Transport::Tcp(sock),
            (Some(t), None) => Transport::Tls(sock, t),
            (None, Some(w)) => Transport::Ws(sock, w),
            (Some(t), Some(w)) => Transport::Wss(sock, t, w),
        }))
    }
}

/// A TLS session and what its listener makes of the client's certificate.
#[derive(Debug)]
pub struct TlsConn {
    /// The session.
    pub stream: TlsStream,
    /// Whether the certificate names the user.
    pub naming: CertUsername,
}

/// The byte stream of one connection. See the module documentation for the contract.
#[derive(Debug)]
pub enum Transport {
    /// Plain TCP.
    Tcp(Tcp),
    /// MQTT over TLS.
    Tls(Tcp, Box<TlsConn>),
    /// MQTT over WebSocket.
    Ws(Tcp, Box<WsFramer>),
    /// MQTT over WebSocket over TLS.
    Wss(Tcp, Box<TlsConn>, Box<WsFramer>),
}

impl Transport {
    /// A plain TCP transport over an accepted (non-blocking) stream.
    pub fn tcp(stream: mio::net::TcpStream) -> Transport {
        Transport::Tcp(Tcp::new(stream))
    }

    fn socket(&self) -> &Tcp {
        match self {
            Transport::Tcp(s) | Transport::Tls(s, _) | Transport::Ws(s, _) => s,
            Transport::Wss(s, _, _) => s,
        }
    }

    fn socket_mut(&mut self) -> &mut Tcp {
        match self {
            Transport::Tcp(s) | Transport::Tls(s, _) | Transport::Ws(s, _) => s,
            Transport::Wss(s, _, _) => s,
        }
    }

    /// True while the transport holds output of its own that the socket has not taken
    /// (never for TCP): the connection must be flushed again on its next writable edge.
    pub fn wants_write(&self) -> bool {
        match self {
            Transport::Tcp(_) => false,
            Transport::Tls(_, t) => t.stream.wants_write(),
            Transport::Ws(_, w) => w.wants_write(),
            Transport::Wss(_, t, w) => t.stream.wants_write() || w.wants_write(),
        }
    }

    /// Write the transport's own pending output. `Ok(true)` when none is left.
    pub fn send_pending(&mut self) -> io::Result<bool> {
        match self {
            Transport::Tcp(_) => Ok(true),
            Transport::Tls(s, t) => t.stream.send_pending(s),
            Transport::Ws(s, w) => w.io(s).send_pending(),
            Transport::Wss(s, t, w) => w.io(&mut t.stream.io(s)).send_pending(),
        }
    }

    /// End the stream in both directions (WebSocket Close, TLS close_notify, then FIN);
    /// errors do not matter any more.
    pub fn shutdown(&mut self) {
        self.end_stream();
        self.socket_mut().shutdown();
    }

    /// Close the stream layer (TLS close_notify, WebSocket close frame) and push it out.
    fn end_stream(&mut self) {
        match self {
            Transport::Tcp(_) => {}
            Transport::Tls(s, t) => {
                t.stream.close();
                let _ = t.stream.send_pending(s);
            }
            Transport::Ws(s, w) => {
                w.close();
                let _ = w.io(s).send_pending();
            }
            Transport::Wss(s, t, w) => {
                w.close();
                let _ = w.io(&mut t.stream.io(s)).send_pending();
                t.stream.close();
                let _ = t.stream.send_pending(s);
            }
        }
    }

    /// Half-close: send FIN (after any pending output) but keep reading, for a lingering
    /// close that lets the peer read our last packet before the socket goes.
    pub fn shutdown_write(&mut self) {
        self.end_stream();
        self.socket_mut().shutdown_write();
    }

    /// The remote address as the socket reports it.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.socket().peer_addr()
    }

    /// The client address a PROXY header carried, once it has been read (taken once).
    pub fn take_proxied_addr(&mut self) -> Option<SocketAddr> {
        self.socket_mut().take_proxied_addr()
    }

    /// The listener's `mount_point`, for the link (set again on every shard it moves to).
    pub fn mount_point(&self) -> Option<Arc<str>> {
        self.socket().mount.clone()
    }

    /// Whether a TLS handshake is still under way (no application byte can flow yet).
    pub fn is_handshaking(&self) -> bool {
        match self {
            Transport::Tls(_, t) | Transport::Wss(_, t, _) => t.stream.is_handshaking(),
            _ => false,
        }
    }

    /// Whether a PROXY header is still expected (nothing after it has been read yet).
    pub fn awaits_proxy_header(&self) -> bool {
        self.socket().awaits_proxy_header()
    }

    /// Whether this connection's client certificate names its user
    /// (`use_identity_as_username`, `use_subject_as_username`): the certificate of its own
    /// TLS handshake, or on a plain listener behind a TLS-terminating proxy, the CN the
    /// proxy passed in its PROXY v2 header.
    pub fn names_user(&self) -> bool {
        match self {
            Transport::Tls(_, t) | Transport::Wss(_, t, _) => t.naming != CertUsername::No,
            Transport::Tcp(s) | Transport::Ws(s, _) => s.proxy_naming() != CertUsername::No,
        }
    }

    /// The username the verified client certificate gives, after the handshake (or the
    /// PROXY header): its CN or its subject, as the listener says. `None` when the
    /// certificate has no such name.
    pub fn cert_username(&self) -> Option<String> {
        let t = match self {
            Transport::Tls(_, t) | Transport::Wss(_, t, _) => t,
            Transport::Tcp(s) | Transport::Ws(s, _) => {
                return match s.proxy_naming() {
                    CertUsername::Cn => s.proxied_cn().map(str::to_string),
                    CertUsername::No | CertUsername::Subject => None,
                }
            }
        };
        let id = t.stream.peer_identity()?;
        match t.naming {
            CertUsername::No => None,
            CertUsername::Cn => id.cn,
            CertUsername::Subject => Some(id.subject),
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.read(buf),
            Transport::Tls(s, t) => t.stream.io(s).read(buf),
            Transport::Ws(s, w) => w.io(s).read(buf),
            Transport::Wss(s, t, w) => w.io(&mut t.stream.io(s)).read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.write(buf),
            Transport::Tls(s, t) => t.stream.io(s).write(buf),
            Transport::Ws(s, w) => w.io(s).write(buf),
            Transport::Wss(s, t, w) => w.io(&mut t.stream.io(s)).write(buf),
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
        self.socket_mut()
            .stream
            .register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.socket_mut()
            .stream
            .reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        self.socket_mut().stream.deregister(registry)
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
        let mut t = ListenerKind::tcp()
            .wrap(mio::net::TcpStream::from_std(server))
            .expect("wrap")
            .expect("no limit");
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
