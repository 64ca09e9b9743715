//! Plain TCP: the socket under every variant, with what sits at its very start.
//!
//! Owns: one non-blocking `mio` TCP stream; the PROXY header stage of a listener that
//! requires one (`enable_proxy_protocol`), the bytes read past that header, the client
//! address it carried (and, behind a TLS-terminating proxy, the client certificate CN it
//! vouched for, refusing a header without one when the listener requires it), and the
//! listener's connection slot (released when this is dropped,
//! wherever the connection has moved). Invariant: after the PROXY header, bytes pass
//! through unchanged, the ones read past the header first; nothing else is buffered here,
//! and nothing is ever written on the socket's behalf. Must not touch: MQTT, TLS, WebSocket
//! framing (those layers read and write through this one).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::proxy::{Pending, ProxyVersion};
use crate::config::listener::CertUsername;

/// One connection counted against its listener's `max_connections`; the count drops when
/// the connection's transport is dropped.
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// Take a slot of `count` if fewer than `max` are taken.
    pub fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        let before = count.fetch_add(1, Ordering::AcqRel);
        if before >= max {
            count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A plain TCP connection (and the socket of every other variant).
#[derive(Debug)]
pub struct Tcp {
    pub(super) stream: mio::net::TcpStream,
    /// The PROXY header still expected, if the listener requires one.
    proxy: Option<Box<Pending>>,
    /// Bytes read past the PROXY header, returned before the socket is read again.
    prefix: Vec<u8>,
    /// The client address from the PROXY header, until the shard takes it.
    proxied: Option<SocketAddr>,
    /// The CN of the client certificate a TLS-terminating proxy verified (PROXY v2 TLV);
    /// kept for the connection's life, so it names the user again on its home shard.
    proxied_cn: Option<Box<str>>,
    /// `Some`: the PROXY header must carry such a CN (else the connection is refused),
    /// and the listener's naming rule applies to it.
    proxy_cert: Option<CertUsername>,
    /// The listener's connection count, if it has a limit.
    _slot: Option<Slot>,
    /// The listener's `mount_point` (the shard copies it to the link).
    pub(super) mount: Option<Arc<str>>,
}

impl Tcp {
    /// Wrap an accepted stream; Nagle is turned off (packets are batched per turn already).
    pub fn new(stream: mio::net::TcpStream) -> Tcp {
        // Failure only costs latency.
        let _ = stream.set_nodelay(true);
        Tcp {
            stream,
            proxy: None,
            prefix: Vec::new(),
            proxied: None,
            proxied_cn: None,
            proxy_cert: None,
            _slot: None,
            mount: None,
        }
    }

    /// Expect a PROXY header of `version` before anything else. `cert`: the header must
    /// carry a verified client certificate CN (v2 TLVs), named into a user by this rule.
    pub fn expect_proxy(&mut self, version: ProxyVersion, cert: Option<CertUsername>) {
        self.proxy = Some(Box::new(Pending::new(version)));
        self.proxy_cert = cert;
    }

    /// Whether the PROXY header is still expected.
    pub(super) fn awaits_proxy_header(&self) -> bool {
        self.proxy.is_some()
    }

    /// How a CN from the PROXY header names the user (`No` without such a requirement).
    pub(super) fn proxy_naming(&self) -> CertUsername {
        self.proxy_cert.unwrap_or(CertUsername::No)
    }

    /// The verified client certificate CN the PROXY header carried.
    pub(super) fn proxied_cn(&self) -> Option<&str> {
        self.proxied_cn.as_deref()
    }

    /// Count this connection against its listener's limit.
    pub fn hold(&mut self, slot: Slot) {
        self._slot = Some(slot);
    }

    /// The client address a PROXY header carried, once (for the link's `peer`).
    pub fn take_proxied_addr(&mut self) -> Option<SocketAddr> {
        self.proxied.take()
    }

    pub(super) fn shutdown(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    pub(super) fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }

    pub(super) fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }

    /// Read the PROXY header if one is still expected; `Ok(())` once it is done.
    fn read_proxy_header(&mut self) -> io::Result<()> {
        let Some(pending) = self.proxy.as_mut() else {
            return Ok(());
        };
        let header = pending.read_header(&mut self.stream)?;
        if self.proxy_cert.is_some() && header.tlv_cn.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "PROXY v2 header carries no client certificate verified by the proxy",
            ));
        }
        self.proxy = None;
        self.proxied = header.addr;
        self.proxied_cn = header.tlv_cn.map(String::into_boxed_str);
        self.prefix = header.rest;
        Ok(())
    }
}

impl Read for Tcp {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.read_proxy_header() {
            Ok(()) => {}
            // The peer left before its header was whole: an ordinary end of stream.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) => return Err(e),
        }
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.len());
            buf[..n].copy_from_slice(&self.prefix[..n]);
            self.prefix.drain(..n);
            if self.prefix.is_empty() {
                self.prefix = Vec::new();
            }
            return Ok(n);
        }
        self.stream.read(buf)
    }
}

impl Write for Tcp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
