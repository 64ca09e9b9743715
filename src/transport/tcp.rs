//! Plain TCP: the socket is the stream.
//!
//! Owns: one non-blocking `mio` TCP stream. Invariant: bytes pass through unchanged and
//! nothing is ever buffered here, so `wants_write` is always false. Must not touch: MQTT.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

/// A plain TCP connection.
#[derive(Debug)]
pub struct Tcp {
    pub(super) stream: mio::net::TcpStream,
}

impl Tcp {
    /// Wrap an accepted stream; Nagle is turned off (packets are batched per turn already).
    pub fn new(stream: mio::net::TcpStream) -> Tcp {
        // Failure only costs latency.
        let _ = stream.set_nodelay(true);
        Tcp { stream }
    }

    pub(super) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }

    pub(super) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
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
}
