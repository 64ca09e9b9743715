//! Server-side TLS over rustls (TLS 1.2 and 1.3, the `ring` provider), driven by the
//! caller's readiness.
//!
//! Owns: one connection's TLS state (`TlsStream`), and building a `rustls::ServerConfig`
//! from a listener's files (`settings`). The caller owns the socket, the handshake timer and
//! the buffers; this module never blocks, never spawns, never reads a clock.
//!
//! rustls runs unbuffered (`UnbufferedServerConnection`): it keeps keys and handshake
//! state, and every byte buffer is this module's. Ciphertext is read into the caller's
//! buffer and decrypted there, its plaintext moved to the front of that same buffer; only an
//! unfinished record (or handshake fragments being joined) is copied into the stream's own
//! `rx`, plaintext that did not fit into `plain`, and ciphertext the socket has not taken
//! into `tx`.
//!
//! Invariants: each of `rx`, `plain` and `tx` gives its allocation back when it empties, so
//! an idle connection holds no buffer; ciphertext is taken from the socket only after the
//! plaintext already decrypted has been handed out, and rustls is run over what `rx` holds
//! until it needs more, so `rx` never holds a whole record between calls; rustls is always
//! shown the ciphertext it has not discarded (it points into it while joining handshake
//! messages); one write encrypts at most `PLAINTEXT_QUEUE_BYTES_MAX`; one read call consumes
//! at most `CIPHERTEXT_BYTES_PER_CALL_MAX`. A TLS error is returned with its alert queued for
//! the socket (`wants_write`); later reads return it again. Must not touch: MQTT bytes (it
//! moves them opaquely), sockets (it takes `Read`/`Write`), shard state.
#![forbid(unsafe_code)]

pub mod settings;

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncodeTlsData, EncryptError, WriteTraffic};
use rustls::ServerConfig;

pub use settings::{server_config, TlsOptions, TlsVersion};

/// Plaintext encrypted by one `write_plaintext` call. The shard's write buffer holds the
/// rest (and applies its own limit).
pub const PLAINTEXT_QUEUE_BYTES_MAX: usize = 64 * 1024;
/// Ciphertext read in one `read` call that yielded no plaintext before it gives the turn
/// back (`Interrupted`), so a peer feeding handshake or empty records cannot hold a shard.
pub const CIPHERTEXT_BYTES_PER_CALL_MAX: usize = 256 * 1024;
/// Below this much free room in the caller's buffer (after a held partial record),
/// ciphertext is read into the connection's own buffer instead.
const IN_PLACE_BYTES_MIN: usize = 1024;
/// Ciphertext read per call into the connection's own buffer.
const RX_READ_BYTES: usize = 4096;
/// rustls states handled by one call that only moves output (bounded; a few suffice).
const STATES_PER_CALL_MAX: usize = 16;
/// The largest plaintext in one TLS record.
const RECORD_PAYLOAD_BYTES_MAX: usize = 16 * 1024;
/// Header, explicit nonce, content type and tag of one record, rounded up.
const RECORD_OVERHEAD_BYTES_MAX: usize = 64;

/// Who the client is, from its verified certificate (mTLS only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject's first Common Name, for `use_identity_as_username`.
    pub cn: Option<String>,
    /// The subject in RFC 2253 form (`CN=dev1,O=Acme,C=GB`), as Mosquitto prints it for
    /// `use_subject_as_username`.
    pub subject: String,
}

/// One server-side TLS connection: rustls's unbuffered state machine plus the few bytes
/// that are between records.
pub struct TlsStream {
    conn: UnbufferedServerConnection,
    /// Ciphertext rustls has not consumed yet: a partial record, or handshake fragments
    /// being joined. Empty, with no allocation, while the peer is between records.
    rx: Vec<u8>,
    /// Decrypted plaintext the caller's buffer had no room for. Empty at rest.
    plain: Vec<u8>,
    /// Ciphertext (handshake flights, records, alerts) the socket has not taken yet.
    /// Empty, with no allocation, once written.
    tx: Vec<u8>,
    /// The socket reported end of stream.
    eof: bool,
    /// The peer sent close_notify: no more plaintext comes.
    peer_closed: bool,
    /// A TLS error was returned; its alert is in `tx`, nothing else will flow.
    failed: bool,
}

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("handshaking", &self.conn.is_handshaking())
            .field("rx", &self.rx.len())
            .field("plain", &self.plain.len())
            .field("tx", &self.tx.len())
            .field("eof", &self.eof)
            .field("peer_closed", &self.peer_closed)
            .field("failed", &self.failed)
            .finish()
    }
}

/// What one pass of rustls over the received ciphertext asks for next.
enum Step {
    /// Ask again: rustls produced output or an event and may have more.
    Again,
    /// A record was decrypted: take its plaintext.
    Plaintext,
    /// Nothing more until more ciphertext arrives.
    Wait,
}

impl TlsStream {
    /// A connection that has just been accepted; the caller starts its handshake timer.
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        Ok(TlsStream {
            conn: UnbufferedServerConnection::new(config)?,
            rx: Vec::new(),
            plain: Vec::new(),
            tx: Vec::new(),
            eof: false,
            peer_closed: false,
            failed: false,
        })
    }

    /// Until the handshake completes, no plaintext flows; the caller's handshake timeout
    /// closes a connection still handshaking when it fires.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Ciphertext (handshake records, alerts, encrypted data) waits for the socket: keep
    /// the socket registered for writability and call `write_tls`.
    pub fn wants_write(&self) -> bool {
        !self.tx.is_empty()
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
            if !self.plain.is_empty() {
                return Ok(self.take_plain(out));
            }
            if self.failed {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "TLS failed"));
            }
            // TCP closed without close_notify is a truncation, but the bytes before it
            // were authenticated; the caller sees an ordinary end of stream.
            if self.peer_closed || self.eof {
                return Ok(0);
            }
            if ciphertext >= CIPHERTEXT_BYTES_PER_CALL_MAX {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let (n, plaintext) = if self.rx.len() + IN_PLACE_BYTES_MIN <= out.len() {
                self.read_in_place(src, out)?
            } else {
                (self.read_into_rx(src)?, 0)
            };
            ciphertext += n;
            if plaintext > 0 {
                return Ok(plaintext);
            }
        }
    }

    /// The common case: ciphertext (after what `rx` held) is read into `out` and decrypted
    /// there; plaintext is moved to the front of `out`, behind the ciphertext already
    /// consumed, and only an unfinished record is kept in `rx`. Returns (ciphertext read,
    /// plaintext at the front of `out`).
    fn read_in_place(&mut self, src: &mut impl Read, out: &mut [u8]) -> io::Result<(usize, usize)> {
        let held = self.rx.len();
        out[..held].copy_from_slice(&self.rx);
        let n = src.read(&mut out[held..])?;
        if n == 0 {
            self.eof = true;
            return Ok((0, 0));
        }
        let (plaintext, consumed) = self.decrypt(out, held + n).map_err(tls_error)?;
        self.rx.clear();
        self.rx.extend_from_slice(&out[consumed..held + n]);
        release_if_empty(&mut self.rx);
        Ok((n, plaintext))
    }

    /// When `out` is too small to hold what `rx` keeps (a large handshake flight, or the
    /// caller asks for a few bytes): read into `rx` itself; plaintext goes to `plain`.
    fn read_into_rx(&mut self, src: &mut impl Read) -> io::Result<usize> {
        let held = self.rx.len();
        self.rx.resize(held + RX_READ_BYTES, 0);
        let n = match src.read(&mut self.rx[held..]) {
            Ok(n) => n,
            Err(e) => {
                self.rx.truncate(held);
                release_if_empty(&mut self.rx);
                return Err(e);
            }
        };
        self.rx.truncate(held + n);
        if n == 0 {
            self.eof = true;
            return Ok(0);
        }
        self.decrypt_rx().map_err(tls_error)?;
        Ok(n)
    }

    /// Run rustls over what `rx` holds; plaintext goes to `plain`.
    fn decrypt_rx(&mut self) -> Result<(), rustls::Error> {
        let mut rx = std::mem::take(&mut self.rx);
        let filled = rx.len();
        let result = self.decrypt(&mut rx, filled);
        if let Ok((plaintext, consumed)) = result {
            // Plaintext kept in `rx` came before any that overflowed into `plain`.
            self.plain.splice(0..0, rx[..plaintext].iter().copied());
            rx.drain(..consumed);
        }
        release_if_empty(&mut rx);
        self.rx = rx;
        result.map(|_| ())
    }

    /// Run rustls over the ciphertext `buf[..filled]` until it needs more. Plaintext is
    /// written to the front of `buf`, never past the ciphertext rustls has consumed (the
    /// rest overflows into `plain`). Returns (plaintext at the front, ciphertext consumed).
    fn decrypt(&mut self, buf: &mut [u8], filled: usize) -> Result<(usize, usize), rustls::Error> {
        let (mut plaintext, mut consumed) = (0, 0);
        loop {
            let status = self.conn.process_tls_records(&mut buf[consumed..filled]);
            let discard = status.discard;
            let step = match status.state {
                Err(e) => {
                    self.failed = true;
                    drain_output(&mut self.conn, &mut self.tx);
                    return Err(e);
                }
                Ok(state) => step_of(state, &mut self.tx, &mut self.peer_closed)?,
            };
            consumed += discard;
            match step {
                Step::Again => {}
                Step::Wait => return Ok((plaintext, consumed)),
                Step::Plaintext => {
                    plaintext = self.take_records(buf, plaintext, consumed, filled);
                }
            }
        }
    }

    /// Move the records rustls has decrypted to `buf[at..room_end]`, the rest to `plain`;
    /// `buf[room_end..filled]` is ciphertext not consumed yet. Returns the new end of the
    /// plaintext in `buf`.
    fn take_records(
        &mut self,
        buf: &mut [u8],
        mut at: usize,
        room_end: usize,
        filled: usize,
    ) -> usize {
        // rustls must always be shown the ciphertext it has not discarded.
        let (room, held) = buf.split_at_mut(room_end);
        let status = self
            .conn
            .process_tls_records(&mut held[..filled - room_end]);
        debug_assert_eq!(status.discard, 0, "decrypted records are handed out first");
        if let Ok(ConnectionState::ReadTraffic(mut records)) = status.state {
            while let Some(Ok(record)) = records.next_record() {
                let free = if self.plain.is_empty() {
                    room_end - at
                } else {
                    0
                };
                let k = record.payload.len().min(free);
                room[at..at + k].copy_from_slice(&record.payload[..k]);
                at += k;
                self.plain.extend_from_slice(&record.payload[k..]);
            }
        }
        at
    }

    fn take_plain(&mut self, out: &mut [u8]) -> usize {
        let k = out.len().min(self.plain.len());
        out[..k].copy_from_slice(&self.plain[..k]);
        self.plain.drain(..k);
        release_if_empty(&mut self.plain);
        k
    }

    /// Take ciphertext read before this stream existed: the bytes after a PROXY header.
    /// Only before the handshake completes (no plaintext can be pending then), and at most
    /// `CIPHERTEXT_BYTES_PER_CALL_MAX`.
    pub fn feed(&mut self, ciphertext: &[u8]) -> io::Result<()> {
        if !self.is_handshaking() || ciphertext.len() > CIPHERTEXT_BYTES_PER_CALL_MAX {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        self.rx.extend_from_slice(ciphertext);
        self.decrypt_rx().map_err(tls_error)
    }

    /// Encrypt plaintext for sending; returns how much was taken (0 while the handshake
    /// is under way: nothing can be encrypted yet). At most `PLAINTEXT_QUEUE_BYTES_MAX`
    /// is taken per call.
    pub fn write_plaintext(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "TLS failed"));
        }
        let data = &data[..data.len().min(PLAINTEXT_QUEUE_BYTES_MAX)];
        for _ in 0..STATES_PER_CALL_MAX {
            // `rx` holds no whole record (reads run rustls until it needs more), but rustls
            // must always be shown what it has not discarded.
            let status = self.conn.process_tls_records(&mut self.rx);
            let discard = status.discard;
            let step = match status.state.map_err(tls_error)? {
                ConnectionState::WriteTraffic(mut w) => {
                    encrypt(&mut w, data, &mut self.tx)?;
                    return Ok(data.len());
                }
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(Ok(record)) = records.next_record() {
                        self.plain.extend_from_slice(record.payload);
                    }
                    Step::Again
                }
                state => step_of(state, &mut self.tx, &mut self.peer_closed).map_err(tls_error)?,
            };
            self.rx.drain(..discard);
            if let Step::Wait = step {
                return Ok(0);
            }
        }
        Ok(0)
    }

    /// Write queued ciphertext to `dst` (the socket) until it would block or nothing is
    /// left. Returns bytes written; `WouldBlock` only if nothing could be written.
    pub fn write_tls(&mut self, dst: &mut impl Write) -> io::Result<usize> {
        let mut written = 0;
        while written < self.tx.len() {
            match dst.write(&self.tx[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && written > 0 => break,
                Err(e) => {
                    self.tx.drain(..written);
                    return Err(e);
                }
            }
        }
        self.tx.drain(..written);
        release_if_empty(&mut self.tx);
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

    /// Queue a close_notify alert (then `write_tls` and shut the socket). A connection
    /// still handshaking has no keys to send one with and just closes.
    pub fn close(&mut self) {
        if self.failed {
            return;
        }
        for _ in 0..STATES_PER_CALL_MAX {
            let status = self.conn.process_tls_records(&mut self.rx);
            let discard = status.discard;
            let step = match status.state {
                Ok(ConnectionState::WriteTraffic(mut w)) => {
                    // Too small on purpose: the alert is queued and comes out below.
                    let _ = w.queue_close_notify(&mut []);
                    Step::Wait
                }
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    while let Some(Ok(record)) = records.next_record() {
                        self.plain.extend_from_slice(record.payload);
                    }
                    Step::Again
                }
                Ok(state) => {
                    step_of(state, &mut self.tx, &mut self.peer_closed).unwrap_or(Step::Wait)
                }
                Err(_) => Step::Wait,
            };
            self.rx.drain(..discard);
            if let Step::Wait = step {
                break;
            }
        }
        drain_output(&mut self.conn, &mut self.tx);
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

/// Handle a state that carries no plaintext: handshake output goes to `tx` (it is sent
/// from there, so rustls is told at once that it was transmitted).
fn step_of(
    state: ConnectionState<'_, '_, ServerConnectionData>,
    tx: &mut Vec<u8>,
    peer_closed: &mut bool,
) -> Result<Step, rustls::Error> {
    Ok(match state {
        ConnectionState::ReadTraffic(_) => Step::Plaintext,
        ConnectionState::EncodeTlsData(mut d) => {
            encode(&mut d, tx);
            Step::Again
        }
        ConnectionState::TransmitTlsData(t) => {
            t.done();
            Step::Again
        }
        ConnectionState::PeerClosed => {
            *peer_closed = true;
            Step::Again
        }
        // The configuration never accepts early data; rustls would offer it forever.
        ConnectionState::ReadEarlyData(_) => {
            return Err(rustls::Error::General("unexpected early data".into()))
        }
        _ => Step::Wait,
    })
}

/// Move rustls's queued output (handshake flights, alerts) into `tx`. While output is
/// queued rustls hands it out before it looks at any input, so none is shown: after an
/// error, input would be parsed again (a second alert), or be missing where rustls still
/// points into it.
fn drain_output(conn: &mut UnbufferedServerConnection, tx: &mut Vec<u8>) {
    for _ in 0..STATES_PER_CALL_MAX {
        if !conn.wants_write() {
            return;
        }
        match conn.process_tls_records(&mut []).state {
            Ok(ConnectionState::EncodeTlsData(mut d)) => encode(&mut d, tx),
            _ => return,
        }
    }
}

fn encode(d: &mut EncodeTlsData<'_, ServerConnectionData>, tx: &mut Vec<u8>) {
    let need = match d.encode(&mut []) {
        Err(EncodeError::InsufficientSize(s)) => s.required_size,
        _ => return,
    };
    let at = tx.len();
    tx.resize(at + need, 0);
    let n = d.encode(&mut tx[at..]).unwrap_or(0);
    tx.truncate(at + n);
}

/// Encrypt `data` into the end of `tx`, sized for it (records of at most 16 KiB, each
/// with a header, a nonce and a tag) and grown if rustls asks for more (a key update
/// going out first).
fn encrypt(
    w: &mut WriteTraffic<'_, ServerConnectionData>,
    data: &[u8],
    tx: &mut Vec<u8>,
) -> io::Result<()> {
    let at = tx.len();
    let mut need =
        data.len() + (data.len() / RECORD_PAYLOAD_BYTES_MAX + 1) * RECORD_OVERHEAD_BYTES_MAX;
    for _ in 0..2 {
        tx.resize(at + need, 0);
        match w.encrypt(data, &mut tx[at..]) {
            Ok(n) => {
                tx.truncate(at + n);
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(s)) => need = s.required_size,
            Err(e) => {
                tx.truncate(at);
                return Err(io::Error::other(e));
            }
        }
    }
    tx.truncate(at);
    Err(io::ErrorKind::WriteZero.into())
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// An idle connection keeps no buffer: an empty vector gives its allocation back.
fn release_if_empty(v: &mut Vec<u8>) {
    if v.is_empty() && v.capacity() > 0 {
        *v = Vec::new();
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
