//! One MQTT client connection as a state machine driven by mio readiness.
//!
//! Owns: the socket of one connection, its read and write buffers, the CONNECT → CONNACK →
//! SUBSCRIBE → SUBACK handshake, publishing under a window (closed loop) or a schedule
//! (open loop), and the QoS 1/2 acknowledgement flows in both roles. Writes are only
//! appended to the write buffer here; the engine flushes every dirty connection once per
//! loop turn, so many messages share one `write` call. Nothing read from the network is
//! trusted: a malformed packet closes the connection with an error, never a panic.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;

use crate::proto::{
    decode, encode, Ack, Connect, Decoded, Disconnect, Packet, PacketId, Properties, Publish, QoS,
    ReasonCode, Subscribe, Subscription, SubscriptionList, SubscriptionOptions, Version,
};
use crate::stats::{MsgHeader, SeqTrack, Shared, HEADER_LEN};
use crate::ws::{upgrade_request, WsClient};

/// The largest packet accepted from a broker.
const MAX_PACKET: usize = 1 << 20;
/// Stop adding publishes while this many bytes wait to be written.
const WBUF_HIGH: usize = 256 * 1024;
/// Most publishes added by one top-up call.
const BURST: u64 = 512;
/// Reads per readiness event before yielding to other connections.
const READS_PER_TURN: usize = 8;
/// A closed-loop window that made no progress for this long forgives its outstanding
/// messages (they were lost), so a lossy broker cannot stall a publisher forever.
const STALL: Duration = Duration::from_secs(5);

/// What a connection does.
#[derive(Debug, Clone)]
pub enum Role {
    /// Publishes to `topic`; `id` indexes the per-publisher counters.
    Publisher {
        /// Publisher index.
        id: u32,
        /// Topic name.
        topic: String,
    },
    /// Subscribes to `filter` and expects messages from publishers `first..first + count`.
    Subscriber {
        /// Topic filter.
        filter: String,
        /// First publisher index it receives from.
        first: u32,
        /// Number of publishers it receives from.
        count: u32,
    },
    /// Connects and stays idle.
    Idle,
}

/// How to open one connection.
#[derive(Debug, Clone)]
pub struct ConnSpec {
    /// Its role.
    pub role: Role,
    /// MQTT client identifier.
    pub client_id: String,
    /// Source address to bind (several loopback addresses multiply the port space).
    pub src: Option<Ipv4Addr>,
}

/// Parameters common to every connection of a run.
#[derive(Debug, Clone)]
pub struct Params {
    /// Broker address.
    pub broker: SocketAddr,
    /// Where subscribers connect (`--sub-port`: the far side of a bridge); else `broker`.
    pub sub_broker: Option<SocketAddr>,
    /// Protocol version.
    pub version: Version,
    /// QoS of publishes and subscriptions.
    pub qos: QoS,
    /// Payload size in bytes (at least `HEADER_LEN`).
    pub payload: usize,
    /// Closed-loop window: messages sent but not delivered, per publisher.
    pub window: u64,
    /// Subscribers receiving each publisher's messages.
    pub fanout: u64,
    /// Open-loop rate per publisher (messages/s); `None` means closed loop.
    pub rate_per_pub: Option<f64>,
    /// Keep Alive sent in CONNECT.
    pub keep_alive: u16,
    /// Connect with persistent sessions (Clean Start 0; 5.0: Session Expiry 1 h), so a
    /// broker with a store logs their messages.
    pub persistent: bool,
    /// `--tls`: the client configuration (the CA from `--cafile`); `None` for plain TCP.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// `--ws`: MQTT over WebSocket, upgrading on this path (over TLS too with `tls`).
    pub ws_path: Option<String>,
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// TCP connect in progress.
    Connecting,
    /// WebSocket upgrade request sent.
    AwaitUpgrade,
    /// CONNECT sent.
    AwaitConnAck,
    /// SUBSCRIBE sent.
    AwaitSubAck,
    /// Set up: publishing, receiving or idle.
    Ready,
}

/// What the engine must do after a readiness event.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    /// The connection just became `Ready`.
    pub became_ready: bool,
    /// It received a successful CONNACK.
    pub connacked: bool,
    /// The read budget ran out: read again next turn.
    pub more: bool,
}

/// A server → client packet reduced to what the load generator needs (owned, so the
/// read buffer is free again while it is handled).
enum In {
    ConnAck(ReasonCode, Option<u16>),
    SubAck(bool),
    Publish(QoS, Option<PacketId>, Option<MsgHeader>),
    /// PUBACK or PUBCOMP: one message fewer in flight.
    Acked,
    PubRec(PacketId),
    PubRel(PacketId),
    PingResp,
    Disconnect(ReasonCode),
    Other(&'static str),
}

impl In {
    fn from_packet(p: &Packet<'_>) -> In {
        match p {
            Packet::ConnAck(c) => In::ConnAck(c.reason, c.properties.receive_maximum),
            Packet::SubAck(s) => In::SubAck(s.codes.iter().all(|&c| c < 0x80)),
            Packet::Publish(p) => In::Publish(p.qos, p.packet_id, MsgHeader::read(p.payload)),
            Packet::PubAck(_) | Packet::PubComp(_) => In::Acked,
            Packet::PubRec(a) => In::PubRec(a.packet_id),
            Packet::PubRel(a) => In::PubRel(a.packet_id),
            Packet::PingResp => In::PingResp,
            Packet::Disconnect(d) => In::Disconnect(d.reason),
            other => In::Other(other.name()),
        }
    }
}

/// Per-call context lent by the engine.
pub struct Ctx<'a> {
    /// Run parameters.
    pub params: &'a Params,
    /// Cross-thread counters.
    pub shared: &'a Shared,
    /// This thread's latency histogram (nanoseconds).
    pub hist: &'a mut Histogram<u64>,
    /// Receive time of the bytes being parsed (one clock read per `read` call).
    pub now_ns: u64,
}

/// One client connection.
pub struct Conn {
    /// The socket, registered with the engine's poll.
    pub sock: TcpStream,
    /// Life cycle state.
    pub state: State,
    /// What it was opened as.
    pub spec: ConnSpec,
    /// When the TCP connect started.
    pub started: Instant,
    /// Queued in the engine's dirty list.
    pub dirty: bool,
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    wbuf: Vec<u8>,
    wpos: usize,
    next_pid: u16,
    inflight: u64,
    max_inflight: u64,
    /// Messages published (publisher).
    pub sent: u64,
    forgiven: u64,
    last_deliv: u64,
    last_progress: Instant,
    /// Windows forgiven after a stall (publisher).
    pub stalls: u64,
    /// The encoded PUBLISH of this publisher, patched per message.
    template: Vec<u8>,
    /// Per-publisher sequence tracking (subscriber).
    pub tracks: Vec<SeqTrack>,
    /// The TLS session (`--tls`): `wbuf` is its plaintext, `rbuf` gets its plaintext.
    tls: Option<Box<rustls::ClientConnection>>,
    /// The WebSocket layer (`--ws`): `wbuf` is framed in place before each flush; `rbuf`
    /// gets deframed payload.
    ws: Option<Box<WsClient>>,
}

/// Reads wire bytes (plaintext, or decrypted by `tls`) from `sock` into `buf`.
fn read_wire(
    sock: &mut TcpStream,
    tls: &mut Option<Box<rustls::ClientConnection>>,
    buf: &mut [u8],
) -> io::Result<usize> {
    let Some(tls) = tls.as_mut() else {
        return sock.read(buf);
    };
    loop {
        match tls.reader().read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if tls.read_tls(sock)? == 0 {
            return Ok(0);
        }
        tls.process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    }
}

/// A PUBLISH of `p.payload` zero bytes to `topic` encoded by the project's codec, with
/// packet identifier 1 when QoS > 0. The payload is last; in 5.0 an empty property block
/// (one 0 byte) precedes it, and the packet identifier precedes that.
pub fn publish_template(topic: &str, p: &Params) -> Vec<u8> {
    let payload = vec![0u8; p.payload.max(HEADER_LEN)];
    let publish = Publish {
        dup: false,
        qos: p.qos,
        retain: false,
        topic,
        packet_id: (p.qos != QoS::AtMostOnce).then_some(PacketId::MIN),
        properties: Properties::default(),
        payload: &payload,
    };
    let mut out = Vec::new();
    encode(&Packet::Publish(publish), p.version, &mut out);
    out
}

/// Opens a non-blocking TCP connection to `broker` from `src`.
fn open_socket(broker: SocketAddr, src: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    sock.set_nodelay(true)?;
    if let Some(ip) = src {
        let one: libc::c_int = 1;
        // SAFETY: valid fd, option value points to a live c_int of the given size.
        // IP_BIND_ADDRESS_NO_PORT defers the port choice to connect(), so the port space
        // is per (source, destination) pair rather than per source address.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        sock.bind(&SocketAddr::V4(SocketAddrV4::new(ip, 0)).into())?;
    }
    match sock.connect(&broker.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(sock.into()))
}

impl Conn {
    /// Starts connecting `spec` to the broker.
    pub fn open(spec: ConnSpec, params: &Params) -> io::Result<Conn> {
        let to = match (&spec.role, params.sub_broker) {
            (Role::Subscriber { .. }, Some(sub)) => sub,
            _ => params.broker,
        };
        let sock = open_socket(to, spec.src)?;
        let tls = match &params.tls {
            Some(cfg) => {
                let name = rustls_pki_types::ServerName::from(to.ip());
                let c =
                    rustls::ClientConnection::new(cfg.clone(), name).map_err(io::Error::other)?;
                Some(Box::new(c))
            }
            None => None,
        };
        let now = Instant::now();
        let window = params.window.max(1);
        Ok(Conn {
            sock,
            state: State::Connecting,
            spec,
            started: now,
            dirty: false,
            rbuf: vec![0; 16 * 1024],
            rstart: 0,
            rend: 0,
            wbuf: Vec::new(),
            wpos: 0,
            next_pid: 0,
            inflight: 0,
            max_inflight: window.min(65_000),
            sent: 0,
            forgiven: 0,
            last_deliv: 0,
            last_progress: now,
            stalls: 0,
            template: Vec::new(),
            tracks: Vec::new(),
            tls,
            ws: params.ws_path.as_ref().map(|_| Box::default()),
        })
    }

    /// True if bytes wait to be written.
    pub fn wants_write(&self) -> bool {
        self.wpos < self.wbuf.len() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Handles writability: finishes the TCP connect (queuing CONNECT) if pending.
    /// Returns true if the connection has bytes to flush.
    pub fn on_writable(&mut self, params: &Params) -> Result<bool, String> {
        if self.state == State::Connecting {
            if let Some(e) = self.sock.take_error().map_err(|e| e.to_string())? {
                return Err(format!("connect: {e}"));
            }
            match self.sock.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
                Err(e) => return Err(format!("connect: {e}")),
            }
            match (&mut self.ws, &params.ws_path) {
                (Some(ws), Some(path)) => {
                    let host = params.broker.to_string();
                    self.wbuf.extend_from_slice(&upgrade_request(&host, path));
                    ws.framed = self.wbuf.len();
                    self.state = State::AwaitUpgrade;
                }
                _ => self.queue_connect(params),
            }
        }
        Ok(self.wants_write())
    }

    /// After the broker's 101 answer: CONNECT, in a frame.
    fn after_upgrade(&mut self, params: &Params) {
        if self.state == State::AwaitUpgrade && self.ws.as_ref().is_some_and(|w| w.upgraded) {
            self.queue_connect(params);
        }
    }

    fn queue_connect(&mut self, params: &Params) {
        let mut properties = Properties::default();
        if params.version.is_v5() {
            properties.receive_maximum = Some(65_535);
            if params.persistent {
                properties.session_expiry_interval = Some(3600);
            }
        }
        let connect = Connect {
            version: params.version,
            clean_start: !params.persistent,
            keep_alive: params.keep_alive,
            client_id: &self.spec.client_id,
            will: None,
            username: None,
            password: None,
            properties,
        };
        encode(&Packet::Connect(connect), params.version, &mut self.wbuf);
        self.state = State::AwaitConnAck;
    }

    /// Writes as much of the write buffer as the socket takes. Ok(true) when drained.
    pub fn flush(&mut self) -> Result<bool, String> {
        if self.state == State::Connecting {
            return Ok(false);
        }
        let Some(ws) = self.ws.as_mut() else {
            return self.flush_wire();
        };
        ws.frame_pending(&mut self.wbuf);
        let before = self.wbuf.len();
        let r = self.flush_wire();
        // `flush_wire` clears or drains the written front of `wbuf`.
        if let Some(ws) = self.ws.as_mut() {
            ws.consumed(before - self.wbuf.len());
        }
        r
    }

    /// `flush` of wire-ready bytes (plain, or the plaintext of TLS).
    fn flush_wire(&mut self) -> Result<bool, String> {
        if self.tls.is_some() {
            return self.flush_tls();
        }
        while self.wpos < self.wbuf.len() {
            match self.sock.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err("write: connection closed".into()),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
            return Ok(true);
        }
        if self.wpos > WBUF_HIGH {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        Ok(false)
    }

    /// `flush` over TLS: plaintext from `wbuf` into the session, records to the socket.
    fn flush_tls(&mut self) -> Result<bool, String> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(true);
        };
        loop {
            if self.wpos < self.wbuf.len() {
                let n = tls
                    .writer()
                    .write(&self.wbuf[self.wpos..])
                    .map_err(|e| format!("tls write: {e}"))?;
                self.wpos += n;
            }
            if !tls.wants_write() {
                break;
            }
            match tls.write_tls(&mut self.sock) {
                Ok(0) => return Err("write: connection closed".into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
            return Ok(!tls.wants_write());
        }
        if self.wpos > WBUF_HIGH {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        Ok(false)
    }

    /// Application bytes into `rbuf[rend..]`: from the socket, or decrypted by the session,
    /// or deframed by the WebSocket layer.
    fn read_app(&mut self) -> io::Result<usize> {
        let Some(ws) = self.ws.as_mut() else {
            return read_wire(&mut self.sock, &mut self.tls, &mut self.rbuf[self.rend..]);
        };
        let mut raw = [0u8; 16 * 1024];
        loop {
            let n = ws.take(&mut self.rbuf[self.rend..]);
            if n > 0 {
                return Ok(n);
            }
            let k = read_wire(&mut self.sock, &mut self.tls, &mut raw)?;
            if k == 0 {
                return Ok(0);
            }
            ws.feed(&raw[..k])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }

    /// Reads and handles packets until the socket would block or the budget runs out.
    ///
    /// A read shorter than the free space means the socket's receive queue was empty at
    /// that moment; with edge-triggered epoll, data arriving later raises a new event, so
    /// the extra read that would only return `WouldBlock` is skipped.
    pub fn on_readable(&mut self, ctx: &mut Ctx<'_>) -> Result<Outcome, String> {
        let mut out = Outcome::default();
        for _ in 0..READS_PER_TURN {
            self.make_room();
            let space = self.rbuf.len() - self.rend;
            let drained = match self.read_app() {
                Ok(0) => return Err("closed by broker".into()),
                Ok(n) => {
                    self.rend += n;
                    ctx.now_ns = ctx.shared.now_ns();
                    // TLS and WebSocket may hold bytes still undecoded: read on to
                    // WouldBlock.
                    n < space && self.tls.is_none() && self.ws.is_none()
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.after_upgrade(ctx.params);
                    return Ok(out);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read: {e}")),
            };
            self.parse_all(ctx, &mut out)?;
            if drained {
                return Ok(out);
            }
        }
        out.more = true;
        Ok(out)
    }

    /// Compacts the read buffer, growing it when one packet needs more room.
    fn make_room(&mut self) {
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        } else if self.rend == self.rbuf.len() && self.rstart > 0 {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
        }
        if self.rend == self.rbuf.len() {
            let len = (self.rbuf.len() * 2).min(MAX_PACKET + 8);
            self.rbuf.resize(len, 0);
        }
    }

    fn parse_all(&mut self, ctx: &mut Ctx<'_>, out: &mut Outcome) -> Result<(), String> {
        let version = ctx.params.version;
        while self.rstart < self.rend {
            let input = match decode(&self.rbuf[self.rstart..self.rend], version, MAX_PACKET) {
                Ok(Decoded::Incomplete { .. }) => return Ok(()),
                Ok(Decoded::Packet { packet, len }) => (In::from_packet(&packet), len),
                Err(e) => return Err(format!("malformed packet from broker: {e:?}")),
            };
            self.rstart += input.1;
            self.handle(input.0, ctx, out)?;
        }
        Ok(())
    }

    fn handle(&mut self, input: In, ctx: &mut Ctx<'_>, out: &mut Outcome) -> Result<(), String> {
        let v = ctx.params.version;
        match input {
            In::ConnAck(reason, recv_max) => self.on_connack(reason, recv_max, ctx.params, out)?,
            In::SubAck(true) if self.state == State::AwaitSubAck => {
                self.state = State::Ready;
                out.became_ready = true;
            }
            In::SubAck(_) => return Err("subscription refused".into()),
            In::Publish(qos, pid, hdr) => self.on_publish(qos, pid, hdr, ctx)?,
            In::Acked => self.inflight = self.inflight.saturating_sub(1),
            In::PubRec(id) => encode(&Packet::PubRel(Ack::new(id)), v, &mut self.wbuf),
            In::PubRel(id) => encode(&Packet::PubComp(Ack::new(id)), v, &mut self.wbuf),
            In::PingResp => {}
            In::Disconnect(r) => return Err(format!("broker sent DISCONNECT {r:?}")),
            In::Other(name) => return Err(format!("unexpected {name} from broker")),
        }
        Ok(())
    }

    fn on_connack(
        &mut self,
        reason: ReasonCode,
        recv_max: Option<u16>,
        params: &Params,
        out: &mut Outcome,
    ) -> Result<(), String> {
        if self.state != State::AwaitConnAck {
            return Err("unexpected CONNACK".into());
        }
        if reason.is_error() {
            return Err(format!("connection refused: {reason:?}"));
        }
        out.connacked = true;
        if let Some(m) = recv_max {
            self.max_inflight = self.max_inflight.min(u64::from(m));
        }
        match &self.spec.role {
            Role::Subscriber { filter, count, .. } => {
                self.tracks = vec![SeqTrack::default(); *count as usize];
                let subs = [Subscription {
                    filter,
                    options: SubscriptionOptions {
                        qos: params.qos,
                        ..Default::default()
                    },
                }];
                let subscribe = Subscribe {
                    packet_id: PacketId::MIN,
                    properties: Properties::default(),
                    filters: SubscriptionList::Slice(&subs),
                };
                encode(
                    &Packet::Subscribe(subscribe),
                    params.version,
                    &mut self.wbuf,
                );
                self.state = State::AwaitSubAck;
            }
            _ => {
                self.state = State::Ready;
                out.became_ready = true;
            }
        }
        Ok(())
    }

    fn on_publish(
        &mut self,
        qos: QoS,
        pid: Option<PacketId>,
        hdr: Option<MsgHeader>,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), String> {
        let v = ctx.params.version;
        match (qos, pid) {
            (QoS::AtMostOnce, _) => {}
            (QoS::AtLeastOnce, Some(id)) => {
                encode(&Packet::PubAck(Ack::new(id)), v, &mut self.wbuf)
            }
            (QoS::ExactlyOnce, Some(id)) => {
                encode(&Packet::PubRec(Ack::new(id)), v, &mut self.wbuf)
            }
            _ => return Err("PUBLISH without packet id".into()),
        }
        let (Some(h), Role::Subscriber { first, .. }) = (hdr, &self.spec.role) else {
            return Ok(());
        };
        let Some(track) = h
            .publisher
            .checked_sub(*first)
            .and_then(|i| self.tracks.get_mut(i as usize))
        else {
            return Ok(());
        };
        if track.record(h.seq) {
            let shared = ctx.shared;
            shared.delivered.fetch_add(1, Ordering::Relaxed);
            if let Some(c) = shared.pub_delivered.get(h.publisher as usize) {
                c.fetch_add(1, Ordering::Relaxed);
            }
            let lat = ctx.now_ns.saturating_sub(h.sent_ns).max(1);
            ctx.hist.saturating_record(lat);
        }
        Ok(())
    }

    /// How many messages a publisher may add now, by window (closed loop) or schedule
    /// (open loop), bounded by the QoS in-flight limit and the write buffer.
    fn allowance(&mut self, id: u32, ctx: &Ctx<'_>, now: Instant) -> u64 {
        if self.wbuf.len() - self.wpos >= WBUF_HIGH {
            return 0;
        }
        let p = ctx.params;
        let mut n = BURST;
        if p.qos != QoS::AtMostOnce {
            n = n.min(self.max_inflight.saturating_sub(self.inflight));
        }
        if let Some(rate) = p.rate_per_pub {
            let start = ctx.shared.run_start_ns.load(Ordering::Relaxed);
            let secs = ctx.shared.now_ns().saturating_sub(start) as f64 / 1e9;
            let due = (secs * rate) as u64 + 1;
            return n.min(due.saturating_sub(self.sent));
        }
        let deliv = ctx.shared.pub_delivered[id as usize].load(Ordering::Relaxed);
        if deliv != self.last_deliv {
            self.last_deliv = deliv;
            self.last_progress = now;
        }
        let k = p.fanout;
        let outstanding = (self.sent * k).saturating_sub(deliv + self.forgiven);
        let room = (p.window * k).saturating_sub(outstanding) / k;
        if room == 0 && now.duration_since(self.last_progress) > STALL {
            self.forgiven = (self.sent * k).saturating_sub(deliv);
            self.last_progress = now;
            self.stalls += 1;
        }
        n.min(room)
    }

    /// Publisher: appends as many publishes as allowed. Returns how many were added.
    pub fn top_up(&mut self, ctx: &Ctx<'_>, now: Instant) -> u64 {
        let Role::Publisher { id, .. } = self.spec.role else {
            return 0;
        };
        if self.state != State::Ready {
            return 0;
        }
        let n = self.allowance(id, ctx, now);
        let p = ctx.params;
        let start = ctx.shared.run_start_ns.load(Ordering::Relaxed);
        let now_ns = ctx.shared.now_ns();
        for _ in 0..n {
            let sent_ns = match p.rate_per_pub {
                Some(rate) => start + (self.sent as f64 * 1e9 / rate) as u64,
                None => now_ns,
            };
            let hdr = MsgHeader {
                publisher: id,
                seq: self.sent,
                sent_ns,
            };
            self.publish_one(hdr, p);
        }
        n
    }

    /// Appends one PUBLISH: a copy of the codec-encoded template with the message header
    /// (and the packet identifier) patched in, so the hot path is one memcpy.
    fn publish_one(&mut self, hdr: MsgHeader, p: &Params) {
        if self.template.is_empty() {
            let Role::Publisher { topic, .. } = &self.spec.role else {
                return;
            };
            self.template = publish_template(topic, p);
        }
        let start = self.wbuf.len();
        self.wbuf.extend_from_slice(&self.template);
        let packet = &mut self.wbuf[start..];
        let payload_at = packet.len() - p.payload;
        hdr.write(&mut packet[payload_at..]);
        if p.qos != QoS::AtMostOnce {
            self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
            self.inflight += 1;
            let pid_at = payload_at - usize::from(p.version.is_v5()) - 2;
            packet[pid_at..pid_at + 2].copy_from_slice(&self.next_pid.to_be_bytes());
        }
        self.sent += 1;
    }

    /// Queues a PINGREQ.
    pub fn ping(&mut self, version: Version) {
        encode(&Packet::PingReq, version, &mut self.wbuf);
    }

    /// Queues a DISCONNECT and tries once to write everything out.
    pub fn disconnect(&mut self, version: Version) {
        if matches!(self.state, State::Connecting | State::AwaitUpgrade) {
            return;
        }
        let d = Disconnect {
            reason: ReasonCode::NormalDisconnection,
            properties: Properties::default(),
        };
        encode(&Packet::Disconnect(d), version, &mut self.wbuf);
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(version: Version, qos: QoS) -> Params {
        Params {
            broker: "127.0.0.1:1883".parse().unwrap(),
            sub_broker: None,
            version,
            qos,
            payload: 64,
            window: 10,
            fanout: 1,
            rate_per_pub: None,
            tls: None,
            ws_path: None,
            keep_alive: 60,
            persistent: false,
        }
    }

    /// `--persistent` connects with Clean Start 0 (5.0: Session Expiry 1 h) whatever the
    /// role, so a fan-out's subscribers are stored sessions too; without it, Clean Start 1
    /// and no expiry.
    #[test]
    fn persistent_sessions_connect_without_clean_start() {
        let sock = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let roles = [
            Role::Subscriber {
                filter: "t/f".into(),
                first: 0,
                count: 1,
            },
            Role::Publisher {
                id: 0,
                topic: "t/f".into(),
            },
        ];
        for version in [Version::V3_1_1, Version::V5] {
            for persistent in [false, true] {
                for role in roles.clone() {
                    let mut p = params(version, QoS::AtLeastOnce);
                    p.broker = sock.local_addr().unwrap();
                    p.persistent = persistent;
                    let spec = ConnSpec {
                        role,
                        client_id: "c".into(),
                        src: None,
                    };
                    let mut conn = Conn::open(spec, &p).unwrap();
                    conn.queue_connect(&p);
                    let Ok(Decoded::Packet {
                        packet: Packet::Connect(c),
                        ..
                    }) = decode(&conn.wbuf, version, MAX_PACKET)
                    else {
                        panic!("{version:?}: not a CONNECT");
                    };
                    assert_eq!(c.clean_start, !persistent, "{version:?} {persistent}");
                    let expiry = c.properties.session_expiry_interval;
                    let want = (persistent && version.is_v5()).then_some(3600);
                    assert_eq!(expiry, want, "{version:?} {persistent}");
                }
            }
        }
    }

    /// The patched template decodes, through the codec, to the intended packet.
    #[test]
    fn patched_template_decodes() {
        for version in [Version::V3_1_1, Version::V5] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let p = params(version, qos);
                let spec = ConnSpec {
                    role: Role::Publisher {
                        id: 3,
                        topic: "a/b".into(),
                    },
                    client_id: "x".into(),
                    src: None,
                };
                let sock = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let mut p2 = p.clone();
                p2.broker = sock.local_addr().unwrap();
                let mut conn = Conn::open(spec, &p2).unwrap();
                conn.next_pid = 700;
                let hdr = MsgHeader {
                    publisher: 3,
                    seq: 99,
                    sent_ns: 12345,
                };
                conn.publish_one(hdr, &p);
                let Ok(Decoded::Packet {
                    packet: Packet::Publish(got),
                    len,
                }) = decode(&conn.wbuf, version, MAX_PACKET)
                else {
                    panic!("{version:?} {qos:?}: not a PUBLISH");
                };
                assert_eq!(len, conn.wbuf.len());
                assert_eq!(got.topic, "a/b");
                assert_eq!(got.qos, qos);
                assert_eq!(got.payload.len(), 64);
                assert_eq!(MsgHeader::read(got.payload), Some(hdr));
                let want = (qos != QoS::AtMostOnce).then(|| PacketId::new(701).unwrap());
                assert_eq!(got.packet_id, want);
            }
        }
    }
}
