//! WebSocket server framing for MQTT over WebSocket (RFC 6455, MQTT 5 §6), sans-IO.
//!
//! Owns: the HTTP upgrade of one connection, then the frame stream in both directions. The
//! caller hands in bytes it read (from TCP, or plaintext from TLS) and gets the MQTT byte
//! stream **appended** to its receive buffer: binary and continuation payloads are unmasked
//! and appended as they arrive, whatever the frame sizes and however they are fragmented,
//! so MQTT packets decode in place as over TCP. Nothing is buffered per frame.
//!
//! Invariants: bytes buffered here are bounded — the upgrade request by
//! `handshake_bytes_max`, a partial frame header by 14 bytes, a control payload by 125
//! bytes, output waiting for the socket by `OUTPUT_BYTES_MAX`. A frame longer than
//! `frame_bytes_max` is refused from its header, before any of its payload is taken. Every
//! error queues the answer the peer is owed (an HTTP status or a Close frame) before it is
//! returned, so the caller flushes `output()` and closes. Frame headers are parsed by
//! tungstenite, the accept key is derived by tungstenite; the request by httparse.
//! Must not touch: sockets, TLS, MQTT packets.
#![forbid(unsafe_code)]

use std::io::{self, Cursor, Read, Write};

use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// Limits and the path of one WebSocket listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsConfig {
    /// The request path to accept (`/mqtt`), or `None` for any path, as Mosquitto does.
    pub path: Option<String>,
    /// The largest upgrade request, bytes.
    pub handshake_bytes_max: usize,
    /// The largest payload of one frame, bytes.
    pub frame_bytes_max: u64,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            path: None,
            handshake_bytes_max: HANDSHAKE_BYTES_MAX,
            frame_bytes_max: FRAME_BYTES_MAX,
        }
    }
}

/// Default cap on the upgrade request.
pub const HANDSHAKE_BYTES_MAX: usize = 8 * 1024;
/// Default cap on one frame's payload: the largest MQTT packet plus its fixed header.
pub const FRAME_BYTES_MAX: u64 = 256 * 1024 * 1024 + 5;
/// Output (handshake answer, pongs, close) waiting for the socket; a client that pings and
/// never reads is refused past it.
pub const OUTPUT_BYTES_MAX: usize = 64 * 1024;
/// The largest binary frame `WsIo::write` makes; a longer write is taken in parts.
pub const WRITE_FRAME_BYTES_MAX: usize = 64 * 1024;
/// Socket reads one `WsIo::read` makes that yield no MQTT byte (pings, empty frames)
/// before it gives the turn back with `Interrupted`.
const READS_PER_CALL_MAX: usize = 64;
/// Headers taken from the upgrade request.
const HEADERS_MAX: usize = 32;
/// The longest frame header (RFC 6455 §5.2).
const FRAME_HEADER_BYTES_MAX: usize = 14;
/// The longest control payload (RFC 6455 §5.5).
const CONTROL_BYTES_MAX: usize = 125;
/// Subprotocols we speak, in order of preference.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Why a connection is refused; the peer's answer is already queued in `output()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsError {
    /// The upgrade request is malformed or asks for something we do not serve.
    Handshake(&'static str),
    /// The upgrade request or a frame is larger than the listener allows.
    TooLarge,
    /// A frame breaks RFC 6455 or MQTT's use of it.
    Protocol(&'static str),
    /// The client does not read what we owe it (pongs piling up).
    OutputFull,
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WsError::Handshake(why) => write!(f, "websocket upgrade refused: {why}"),
            WsError::TooLarge => write!(f, "websocket upgrade or frame too large"),
            WsError::Protocol(why) => write!(f, "websocket protocol error: {why}"),
            WsError::OutputFull => write!(f, "websocket peer does not read"),
        }
    }
}

impl std::error::Error for WsError {}

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the whole HTTP upgrade request.
    ExpectUpgrade,
    /// Upgraded: frames flow.
    Open,
    /// A Close was received or sent (or an error queued): flush `output()` and close.
    Closed,
}

/// What the frame being read is, once its header is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Data,
    Ping,
    Pong,
    Close,
}

/// The frame whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct InFrame {
    kind: Kind,
    remaining: u64,
    mask: [u8; 4],
    /// Payload bytes of this frame seen so far, mod 4: the mask position.
    mask_at: usize,
    /// FIN was set (for control frames: always).
    last: bool,
}

/// One WebSocket connection, server side.
#[derive(Debug)]
pub struct WsFramer {
    cfg: WsConfig,
    phase: Phase,
    /// The upgrade request so far (empty once open).
    request: Vec<u8>,
    head: [u8; FRAME_HEADER_BYTES_MAX],
    head_len: usize,
    frame: Option<InFrame>,
    /// Inside a fragmented data message (a continuation is expected).
    in_message: bool,
    control: Vec<u8>,
    out: Vec<u8>,
    out_sent: usize,
    subprotocol: Option<&'static str>,
}

impl WsFramer {
    /// A connection that has just been accepted (or has just finished its TLS handshake).
    pub fn new(cfg: WsConfig) -> Self {
        WsFramer {
            cfg,
            phase: Phase::ExpectUpgrade,
            request: Vec::new(),
            head: [0; FRAME_HEADER_BYTES_MAX],
            head_len: 0,
            frame: None,
            in_message: false,
            control: Vec::new(),
            out: Vec::new(),
            out_sent: 0,
            subprotocol: None,
        }
    }

    /// Where the connection stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The subprotocol agreed in the upgrade, if the client offered one.
    pub fn subprotocol(&self) -> Option<&'static str> {
        self.subprotocol
    }

    /// Take bytes read from the peer. MQTT bytes are appended to `rx`; answers owed to the
    /// peer (upgrade response, pongs, close) are queued in `output()`. All of `input` is
    /// taken. After `Phase::Closed`, input is ignored.
    pub fn feed(&mut self, input: &[u8], rx: &mut Vec<u8>) -> Result<(), WsError> {
        let r = match self.phase {
            Phase::ExpectUpgrade => self.feed_upgrade(input, rx),
            Phase::Open => self.feed_frames(input, rx),
            Phase::Closed => Ok(()),
        };
        if r.is_err() {
            self.phase = Phase::Closed;
        }
        r
    }

    /// `feed` without a copy: `buf` holds bytes just read; the MQTT bytes they carry are
    /// unmasked and moved to `buf[..k]` (they never lie after their own frame bytes), and
    /// `k` is returned. This keeps the TCP read path: read into the scratch buffer, call
    /// this, decode `scratch[..k]` in place. During the upgrade (once per connection) it
    /// goes through `feed`.
    pub fn feed_in_place(&mut self, buf: &mut [u8]) -> Result<usize, WsError> {
        if self.phase != Phase::Open {
            let mut rx = Vec::new();
            let input = buf.to_vec();
            self.feed(&input, &mut rx)?;
            buf[..rx.len()].copy_from_slice(&rx);
            return Ok(rx.len());
        }
        let r = self.frames_in_place(buf);
        if r.is_err() {
            self.phase = Phase::Closed;
        }
        r
    }

    fn frames_in_place(&mut self, buf: &mut [u8]) -> Result<usize, WsError> {
        let (mut r, mut w) = (0, 0);
        while r < buf.len() && self.phase == Phase::Open {
            match self.frame {
                None => r += self.take_header(&buf[r..])?,
                Some(mut f) if f.kind == Kind::Data => {
                    let left = buf.len() - r;
                    let n = usize::try_from(f.remaining).map_or(left, |x| x.min(left));
                    buf.copy_within(r..r + n, w);
                    unmask(&mut buf[w..w + n], f.mask, f.mask_at);
                    f.mask_at = (f.mask_at + n) % 4;
                    f.remaining -= n as u64;
                    self.frame = Some(f);
                    (r, w) = (r + n, w + n);
                    if f.remaining == 0 {
                        self.end_frame(f)?;
                    }
                }
                // Control payloads go to their own small buffer, never to `rx`.
                Some(f) => r += self.take_payload(f, &buf[r..], &mut Vec::new())?,
            }
        }
        Ok(w)
    }

    /// A `Read + Write` view over `inner` (the socket, or a `TlsIo` for WSS): reads return
    /// MQTT bytes, writes are framed as binary frames. Answers owed to the peer (upgrade,
    /// pongs, close) are written as they arise; whatever the socket does not take waits
    /// in `output()` (watch `wants_write`).
    pub fn io<'a, S: Read + Write>(&'a mut self, inner: &'a mut S) -> WsIo<'a, S> {
        WsIo { ws: self, inner }
    }

    /// Frame `payload` (MQTT bytes) as one binary frame into `out`. Server frames are not
    /// masked (RFC 6455 §5.1).
    pub fn encode_binary(payload: &[u8], out: &mut Vec<u8>) {
        Self::encode(OpCode::Data(Data::Binary), payload, out);
    }

    /// Queue `payload` as one binary frame in `output()` (for a caller without its own
    /// framed buffer). Refused unless open.
    pub fn send(&mut self, payload: &[u8]) -> Result<(), WsError> {
        if self.phase != Phase::Open {
            return Err(WsError::Protocol("not open"));
        }
        Self::encode_binary(payload, &mut self.out);
        Ok(())
    }

    /// Queue a Close frame (normal closure) and stop; for a broker-side disconnect.
    pub fn close(&mut self) {
        if self.phase == Phase::Open {
            Self::encode(
                OpCode::Control(Control::Close),
                &1000u16.to_be_bytes(),
                &mut self.out,
            );
        }
        self.phase = Phase::Closed;
    }

    /// Bytes waiting for the socket.
    pub fn output(&self) -> &[u8] {
        &self.out[self.out_sent..]
    }

    /// Whether anything waits for the socket.
    pub fn wants_write(&self) -> bool {
        self.out_sent < self.out.len()
    }

    /// `n` bytes of `output()` reached the socket.
    pub fn consume_output(&mut self, n: usize) {
        self.out_sent = (self.out_sent + n).min(self.out.len());
        if self.out_sent == self.out.len() {
            self.out.clear();
            self.out_sent = 0;
            if self.out.capacity() > OUTPUT_BYTES_MAX {
                self.out = Vec::new();
            }
        }
    }

    fn encode(op: OpCode, payload: &[u8], out: &mut Vec<u8>) {
        let h = FrameHeader {
            is_final: true,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode: op,
            mask: None,
        };
        // Writing into a Vec cannot fail.
        let _ = h.format(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    fn feed_upgrade(&mut self, input: &[u8], rx: &mut Vec<u8>) -> Result<(), WsError> {
        let room = self
            .cfg
            .handshake_bytes_max
            .saturating_sub(self.request.len());
        let take = input.len().min(room);
        self.request.extend_from_slice(&input[..take]);
        let Some(end) = find_double_crlf(&self.request) else {
            if take < input.len() || self.request.len() >= self.cfg.handshake_bytes_max {
                return Err(self.refuse_http(431, WsError::TooLarge));
            }
            return Ok(());
        };
        let request = std::mem::take(&mut self.request);
        match self.answer_upgrade(&request[..end]) {
            Ok(()) => {}
            Err((status, e)) => return Err(self.refuse_http(status, e)),
        }
        self.phase = Phase::Open;
        // Frames pipelined behind the request (a client may send CONNECT at once).
        self.feed_frames(&request[end..], rx)?;
        self.feed_frames(&input[take..], rx)
    }

    /// Check the request; queue the 101 answer.
    fn answer_upgrade(&mut self, request: &[u8]) -> Result<(), (u16, WsError)> {
        let bad = |why| (400, WsError::Handshake(why));
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(request) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return Err(bad("malformed HTTP request")),
        }
        if req.method != Some("GET") || req.version != Some(1) {
            return Err(bad("not an HTTP/1.1 GET"));
        }
        let path = req.path.unwrap_or("");
        let path = path.split('?').next().unwrap_or(path);
        if self.cfg.path.as_deref().is_some_and(|p| p != path) {
            return Err((404, WsError::Handshake("wrong path")));
        }
        let h = &*req.headers;
        let tokens = |name: &str| header_tokens(h, name);
        if !tokens("upgrade")
            .iter()
            .any(|t| t.eq_ignore_ascii_case("websocket"))
        {
            return Err(bad("no Upgrade: websocket"));
        }
        if !tokens("connection")
            .iter()
            .any(|t| t.eq_ignore_ascii_case("upgrade"))
        {
            return Err(bad("no Connection: upgrade"));
        }
        if tokens("sec-websocket-version") != ["13"] {
            return Err(bad("Sec-WebSocket-Version is not 13"));
        }
        let key = tokens("sec-websocket-key").first().copied().unwrap_or("");
        if key.len() != 24 {
            return Err(bad("Sec-WebSocket-Key is not a 16-byte nonce"));
        }
        let offered = tokens("sec-websocket-protocol");
        let chosen = SUBPROTOCOLS.into_iter().find(|p| offered.contains(p));
        if !offered.is_empty() && chosen.is_none() {
            return Err(bad("no MQTT subprotocol offered"));
        }
        self.subprotocol = chosen;
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let proto = chosen.map_or(String::new(), |p| {
            format!("Sec-WebSocket-Protocol: {p}\r\n")
        });
        self.out.extend_from_slice(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{proto}\r\n"
            )
            .as_bytes(),
        );
        Ok(())
    }

    fn refuse_http(&mut self, status: u16, e: WsError) -> WsError {
        let reason = match status {
            404 => "Not Found",
            431 => "Request Header Fields Too Large",
            _ => "Bad Request",
        };
        self.out.extend_from_slice(
            format!("HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                .as_bytes(),
        );
        self.request = Vec::new();
        e
    }

    /// Queue a Close with `code`, and return `e`.
    fn refuse_frame(&mut self, code: u16, e: WsError) -> WsError {
        Self::encode(
            OpCode::Control(Control::Close),
            &code.to_be_bytes(),
            &mut self.out,
        );
        e
    }

    fn feed_frames(&mut self, mut input: &[u8], rx: &mut Vec<u8>) -> Result<(), WsError> {
        while !input.is_empty() && self.phase == Phase::Open {
            let used = match self.frame {
                None => self.take_header(input)?,
                Some(f) => self.take_payload(f, input, rx)?,
            };
            input = &input[used..];
        }
        Ok(())
    }

    /// Gather header bytes; once whole, check it and start the frame. Returns bytes used.
    fn take_header(&mut self, input: &[u8]) -> Result<usize, WsError> {
        let had = self.head_len;
        let take = input.len().min(FRAME_HEADER_BYTES_MAX - had);
        self.head[had..had + take].copy_from_slice(&input[..take]);
        self.head_len += take;
        let mut cur = Cursor::new(&self.head[..self.head_len]);
        let parsed = FrameHeader::parse(&mut cur);
        let header_len = cur.position() as usize;
        match parsed {
            Ok(None) => Ok(take),
            Err(_) => Err(self.refuse_frame(1002, WsError::Protocol("reserved opcode"))),
            Ok(Some((h, len))) => {
                self.head_len = 0;
                self.start_frame(&h, len)?;
                Ok(header_len - had)
            }
        }
    }

    fn start_frame(&mut self, h: &FrameHeader, len: u64) -> Result<(), WsError> {
        let protocol = |why| (1002, WsError::Protocol(why));
        let checked = (|| {
            if h.rsv1 || h.rsv2 || h.rsv3 {
                return Err(protocol("reserved bits set"));
            }
            let Some(mask) = h.mask else {
                return Err(protocol("client frame not masked"));
            };
            let kind = match h.opcode {
                OpCode::Data(Data::Binary) if !self.in_message => Kind::Data,
                OpCode::Data(Data::Continue) if self.in_message => Kind::Data,
                OpCode::Data(Data::Binary) => {
                    return Err(protocol("new message inside a fragmented one"))
                }
                OpCode::Data(Data::Continue) => {
                    return Err(protocol("continuation without a message"))
                }
                OpCode::Data(_) => return Err(protocol("text frames are not MQTT")),
                OpCode::Control(Control::Ping) => Kind::Ping,
                OpCode::Control(Control::Pong) => Kind::Pong,
                OpCode::Control(Control::Close) => Kind::Close,
                OpCode::Control(_) => return Err(protocol("reserved opcode")),
            };
            if kind != Kind::Data && (len > CONTROL_BYTES_MAX as u64 || !h.is_final) {
                return Err(protocol("control frame too long or fragmented"));
            }
            if len > self.cfg.frame_bytes_max {
                return Err((1009, WsError::TooLarge));
            }
            Ok((kind, mask))
        })();
        let (kind, mask) = match checked {
            Ok(k) => k,
            Err((code, e)) => return Err(self.refuse_frame(code, e)),
        };
        if kind == Kind::Data {
            self.in_message = !h.is_final;
        }
        let f = InFrame {
            kind,
            remaining: len,
            mask,
            mask_at: 0,
            last: h.is_final,
        };
        self.control.clear();
        self.frame = Some(f);
        if len == 0 {
            self.end_frame(f)?;
        }
        Ok(())
    }

    /// Unmask payload bytes into `rx` (data) or the control buffer. Returns bytes used.
    fn take_payload(
        &mut self,
        mut f: InFrame,
        input: &[u8],
        rx: &mut Vec<u8>,
    ) -> Result<usize, WsError> {
        let n = usize::try_from(f.remaining).map_or(input.len(), |r| r.min(input.len()));
        let dst = if f.kind == Kind::Data {
            &mut *rx
        } else {
            &mut self.control
        };
        let start = dst.len();
        dst.extend_from_slice(&input[..n]);
        unmask(&mut dst[start..], f.mask, f.mask_at);
        f.mask_at = (f.mask_at + n) % 4;
        f.remaining -= n as u64;
        self.frame = Some(f);
        if f.remaining == 0 {
            self.end_frame(f)?;
        }
        Ok(n)
    }

    fn end_frame(&mut self, f: InFrame) -> Result<(), WsError> {
        self.frame = None;
        debug_assert!(f.kind == Kind::Data || f.last);
        match f.kind {
            Kind::Data | Kind::Pong => Ok(()),
            Kind::Ping => {
                if self.output().len() + self.control.len() > OUTPUT_BYTES_MAX {
                    return Err(self.refuse_frame(1008, WsError::OutputFull));
                }
                let payload = std::mem::take(&mut self.control);
                Self::encode(OpCode::Control(Control::Pong), &payload, &mut self.out);
                self.control = payload;
                Ok(())
            }
            Kind::Close => {
                // Echo the status code (RFC 6455 §5.5.1); a 1-byte body is malformed.
                if self.control.len() == 1 {
                    self.phase = Phase::Closed;
                    return Err(self.refuse_frame(1002, WsError::Protocol("close frame of 1 byte")));
                }
                let code = self.control.get(..2).map_or(Vec::new(), <[u8]>::to_vec);
                Self::encode(OpCode::Control(Control::Close), &code, &mut self.out);
                self.phase = Phase::Closed;
                Ok(())
            }
        }
    }
}

/// `WsFramer::io`: the framer and the stream under it as one `Read + Write`.
#[derive(Debug)]
pub struct WsIo<'a, S> {
    ws: &'a mut WsFramer,
    inner: &'a mut S,
}

impl<S: Read + Write> WsIo<'_, S> {
    /// Write this layer's output, then the inner layer's (`flush`: TLS records for WSS).
    /// `Ok(true)` when nothing is left anywhere, `Ok(false)` when the socket is full.
    pub fn send_pending(&mut self) -> io::Result<bool> {
        let r = self.drain().and_then(|()| self.inner.flush());
        match r {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Write queued output; `WouldBlock` if some is left.
    fn drain(&mut self) -> io::Result<()> {
        while self.ws.wants_write() {
            match self.inner.write(self.ws.output())? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => self.ws.consume_output(n),
            }
        }
        Ok(())
    }
}

impl<S: Read + Write> Read for WsIo<'_, S> {
    /// MQTT bytes into `buf`. `Ok(0)`: the stream ended or a Close arrived (its echo is
    /// queued). `InvalidData`: refused (the answer is queued); flush and close.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        for _ in 0..READS_PER_CALL_MAX {
            let n = self.inner.read(buf)?;
            if n == 0 {
                return Ok(0);
            }
            let fed = self.ws.feed_in_place(&mut buf[..n]);
            match self.drain() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock && fed.is_ok() => return Err(e),
                _ => {}
            }
            match fed {
                Ok(0) if self.ws.phase() == Phase::Closed => return Ok(0),
                Ok(0) => {}
                Ok(k) => return Ok(k),
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        }
        Err(io::ErrorKind::Interrupted.into())
    }
}

impl<S: Read + Write> Write for WsIo<'_, S> {
    /// Frames up to `WRITE_FRAME_BYTES_MAX` of `data` once earlier output has gone out.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        self.drain()?;
        if self.ws.phase() != Phase::Open {
            return Err(io::ErrorKind::NotConnected.into());
        }
        let n = data.len().min(WRITE_FRAME_BYTES_MAX);
        WsFramer::encode_binary(&data[..n], &mut self.ws.out);
        match self.drain() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.drain()?;
        self.inner.flush()
    }
}

/// XOR `buf` with `mask`, starting at mask position `at`, a word at a time.
fn unmask(buf: &mut [u8], mask: [u8; 4], at: usize) {
    let m = [
        mask[at % 4],
        mask[(at + 1) % 4],
        mask[(at + 2) % 4],
        mask[(at + 3) % 4],
    ];
    let word = u32::from_ne_bytes(m);
    let mut words = buf.chunks_exact_mut(4);
    for w in &mut words {
        let v = u32::from_ne_bytes([w[0], w[1], w[2], w[3]]) ^ word;
        w.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, k) in words.into_remainder().iter_mut().zip(m) {
        *b ^= k;
    }
}

/// The comma-separated tokens of every header called `name`, trimmed.
fn header_tokens<'a>(headers: &[httparse::Header<'a>], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect()
}

fn find_double_crlf(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Fuzzing entry point (`fuzz/fuzz_targets/ws.rs`): an upgrade followed by arbitrary bytes,
/// fed at a split point; never a panic, and never more buffered than the limits allow.
#[doc(hidden)]
pub fn fuzz_feed(data: &[u8]) {
    const UPGRADE: &[u8] = b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";
    let cfg = WsConfig {
        frame_bytes_max: 1 << 16,
        ..WsConfig::default()
    };
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    for prefix in [UPGRADE, b""] {
        let mut ws = WsFramer::new(cfg.clone());
        let mut rx = Vec::new();
        let stream = [prefix, data].concat();
        let (a, b) = stream.split_at(split.min(stream.len()));
        if ws.feed(a, &mut rx).is_ok() {
            let _ = ws.feed(b, &mut rx);
        }
        assert!(rx.len() <= data.len());
        assert!(ws.request.len() <= cfg.handshake_bytes_max);
        assert!(ws.output().len() <= OUTPUT_BYTES_MAX + 256);
    }
}

#[cfg(test)]
mod tests;
