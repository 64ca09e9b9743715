//! Server-side TLS over rustls (TLS 1.2 and 1.3, the `ring` provider), driven by the
//! caller's readiness.
//!
//! Owns: one connection's TLS state (`TlsStream`), and building a `rustls::ServerConfig`
//! from a listener's files (`settings`). The caller owns the socket, the handshake timer and
//! the buffers; this module never blocks, never spawns, never reads a clock.
//!
//! Invariants: ciphertext is taken from the socket only after the plaintext already
//! decrypted has been handed out, so rustls's receive buffers stay at one record; queued
//! plaintext is bounded by `PLAINTEXT_QUEUE_BYTES_MAX`; one read call consumes at most
//! `CIPHERTEXT_BYTES_PER_CALL_MAX`. A TLS error is returned once, with its alert queued for
//! the socket (`wants_write`). Must not touch: MQTT bytes (it moves them opaquely), sockets
//! (it takes `Read`/`Write`), shard state.
#![forbid(unsafe_code)]

pub mod settings;

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::{ServerConfig, ServerConnection};

pub use settings::{server_config, TlsOptions, TlsVersion};

/// Plaintext accepted for sending but not yet encrypted and written, per connection. The
/// shard's write buffer holds the rest (and applies its own limit).
pub const PLAINTEXT_QUEUE_BYTES_MAX: usize = 64 * 1024;
/// Ciphertext read in one `read` call that yielded no plaintext before it gives the turn
/// back (`Interrupted`), so a peer feeding handshake or empty records cannot hold a shard.
pub const CIPHERTEXT_BYTES_PER_CALL_MAX: usize = 256 * 1024;

/// Who the client is, from its verified certificate (mTLS only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject's first Common Name, for `use_identity_as_username`.
    pub cn: Option<String>,
    /// The subject in RFC 2253 form (`CN=dev1,O=Acme,C=GB`), as Mosquitto prints it for
    /// `use_subject_as_username`.
    pub subject: String,
}

/// One server-side TLS connection.
#[derive(Debug)]
pub struct TlsStream {
    conn: ServerConnection,
    /// The socket reported end of stream.
    eof: bool,
}

impl TlsStream {
    /// A connection that has just been accepted; the caller starts its handshake timer.
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        let mut conn = ServerConnection::new(config)?;
        conn.set_buffer_limit(Some(PLAINTEXT_QUEUE_BYTES_MAX));
        Ok(TlsStream { conn, eof: false })
    }

    /// Until the handshake completes, no plaintext flows; the caller's handshake timeout
    /// closes a connection still handshaking when it fires.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Ciphertext (handshake records, alerts, encrypted data) waits for the socket: keep
    /// the socket registered for writability and call `write_tls`.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Read plaintext into `out`, pulling ciphertext from `src` (the socket) as needed.
    ///
    /// `Ok(n > 0)`: plaintext. `Ok(0)`: the peer closed (close_notify or TCP end).
    /// `WouldBlock`: nothing more until the socket is readable again. `Interrupted`:
    /// `CIPHERTEXT_BYTES_PER_CALL_MAX` read without plaintext; try again next turn.
    /// `InvalidData`: a TLS error (bad record, failed handshake, refused certificate); its
    /// alert is queued, so flush with `write_tls` and close. After any call, check
    /// `wants_write` (the handshake answers through it).
    pub fn read(&mut self, src: &mut impl Read, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            // `Ok(0)` would read as the end of the stream.
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let mut ciphertext = 0usize;
        loop {
            match self.conn.reader().read(out) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // TCP closed without close_notify: a truncation, but the bytes before it
                // were authenticated; the caller sees an ordinary end of stream.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.eof {
                return Ok(0);
            }
            if ciphertext >= CIPHERTEXT_BYTES_PER_CALL_MAX {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = self.conn.read_tls(src)?;
            ciphertext += n;
            self.eof = n == 0;
            self.conn
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }

    /// Take ciphertext read before this stream existed: the bytes after a PROXY header.
    /// Only before the handshake completes (no plaintext can be pending then), and at most
    /// `CIPHERTEXT_BYTES_PER_CALL_MAX`.
    pub fn feed(&mut self, mut ciphertext: &[u8]) -> io::Result<()> {
        if !self.is_handshaking() || ciphertext.len() > CIPHERTEXT_BYTES_PER_CALL_MAX {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        while !ciphertext.is_empty() {
            self.conn.read_tls(&mut ciphertext)?;
            self.conn
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
        Ok(())
    }

    /// Queue plaintext for sending; returns how much was taken (0 when the queue is full:
    /// call `write_tls` first). Data queued during the handshake goes out after it.
    pub fn write_plaintext(&mut self, data: &[u8]) -> io::Result<usize> {
        self.conn.writer().write(data)
    }

    /// Write queued ciphertext to `dst` (the socket) until it would block or nothing is
    /// left. Returns bytes written; `WouldBlock` only if nothing could be written.
    pub fn write_tls(&mut self, dst: &mut impl Write) -> io::Result<usize> {
        let mut written = 0;
        while self.conn.wants_write() {
            match self.conn.write_tls(dst) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && written > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(written)
    }

    /// Write pending ciphertext to `dst`; `Ok(true)` when none is left, `Ok(false)` when the
    /// socket is full (wait for its writable edge).
    pub fn send_pending(&mut self, dst: &mut impl Write) -> io::Result<bool> {
        match self.write_tls(dst) {
            Ok(_) => Ok(!self.wants_write()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Queue a close_notify alert (then `write_tls` and shut the socket).
    pub fn close(&mut self) {
        self.conn.send_close_notify();
    }

    /// The verified client certificate's identity; `None` before the handshake completes
    /// or when the listener does not ask for certificates.
    pub fn peer_identity(&self) -> Option<PeerIdentity> {
        let cert = self.conn.peer_certificates()?.first()?;
        identity_of(cert.as_ref())
    }

    /// A `Read + Write` view over `socket`: reads decrypt, writes encrypt and flush. For a
    /// caller written against a plain socket (`read(&mut scratch)`, `TxBuf::flush_to`).
    pub fn io<'a, S: Read + Write>(&'a mut self, socket: &'a mut S) -> TlsIo<'a, S> {
        TlsIo { tls: self, socket }
    }
}

/// `TlsStream::io`: the stream and its socket as one `Read + Write`.
#[derive(Debug)]
pub struct TlsIo<'a, S> {
    tls: &'a mut TlsStream,
    socket: &'a mut S,
}

impl<S: Read + Write> Read for TlsIo<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.tls.read(self.socket, buf);
        // Handshake answers and alerts leave at once; a full socket keeps them for the
        // writable edge (the caller watches `wants_write`).
        match self.tls.write_tls(self.socket) {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock && r.is_ok() => Err(e),
            _ => r,
        }
    }
}

impl<S: Read + Write> Write for TlsIo<'_, S> {
    /// Encrypts what fits in the plaintext queue and pushes it to the socket. Takes
    /// nothing (`WouldBlock`) while ciphertext from before still waits for the socket, so
    /// what this layer holds stays at one write's worth and backpressure shows in the
    /// caller's buffer.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        if !self.tls.send_pending(self.socket)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.tls.write_plaintext(data)?;
        self.tls.send_pending(self.socket)?;
        match n {
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.tls.send_pending(self.socket)? {
            true => Ok(()),
            false => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// CN and RFC 2253 subject of a DER certificate.
pub fn identity_of(der: &[u8]) -> Option<PeerIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = cert.subject();
    let cn = name
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string);
    let registry = x509_parser::objects::oid_registry();
    let mut parts = Vec::new();
    // RFC 2253 writes the most specific RDN first: the reverse of the encoding order.
    for rdn in name.iter().collect::<Vec<_>>().into_iter().rev() {
        let attrs: Vec<String> = rdn
            .iter()
            .map(|a| {
                let key = x509_parser::objects::oid2abbrev(a.attr_type(), registry)
                    .map_or_else(|_| a.attr_type().to_id_string(), str::to_string);
                let value = a
                    .as_str()
                    .map_or_else(|_| hex(a.as_slice()), rfc2253_escape);
                format!("{key}={value}")
            })
            .collect();
        parts.push(attrs.join("+"));
    }
    Some(PeerIdentity {
        cn,
        subject: parts.join(","),
    })
}

fn rfc2253_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        let edge_space = c == ' ' && (i == 0 || i == last);
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || edge_space
            || (i == 0 && c == '#')
        {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn hex(b: &[u8]) -> String {
    let mut s = String::from("#");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

#[cfg(test)]
mod tests;
