//! One shard's thread: the `mio` poll loop and the sockets it owns.
//!
//! Owns: the poll, this shard's listener handles, the sockets (`Sock`, keyed like the
//! broker's links), the scratch read buffer and this shard's bus ends. One turn is:
//! poll → accept → read and decode in place → bus inbox → timers → flush → close → bus
//! outbox; every step has a budget so one busy client or peer cannot starve the rest.
//! Invariant: `socks` and the broker's `links` hold the same keys at all times. Must not
//! touch: MQTT semantics (it calls the broker) or other shards' state (only the bus).

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::bus::{self, Bus, BusMsg, Handoff};
use super::ring::RxBuf;
use super::txbuf::Flushed;
use crate::broker::{Broker, Verdict};
use crate::config::Config;
use crate::protocol::{self, Decoded};

const WAKER: Token = Token(usize::MAX);
const LISTENER_BASE: usize = usize::MAX - 1024;
/// Events taken from one poll call.
const EVENTS_PER_TURN_MAX: usize = 1024;
/// Bytes read from one socket per turn before others get their go.
const READ_BYTES_PER_TURN_MAX: usize = 256 * 1024;
/// Bytes written to one socket per flush.
const FLUSH_BYTES_PER_TURN_MAX: usize = 4 * 1024 * 1024;
/// Connections accepted per listener per turn.
const ACCEPTS_PER_TURN_MAX: usize = 512;
/// The shard's scratch read buffer.
const SCRATCH_BYTES: usize = 64 * 1024;
/// Staged bus messages past which the shard stops reading client sockets.
const BUS_STAGED_MAX: usize = 64 * 1024;
/// Largest first packet (CONNECT) from a client nobody has authenticated yet: a Will
/// payload bigger than this is refused, so unauthenticated sockets cannot make the broker
/// buffer hundreds of megabytes each.
const CONNECT_PACKET_MAX: usize = 1024 * 1024;
/// Longest poll sleep: the clock must advance for timers even when idle.
const POLL_TIMEOUT_MAX_MS: u64 = 1000;

/// A socket owned by this shard.
#[derive(Debug)]
struct Sock {
    stream: TcpStream,
    rx: RxBuf,
    /// Queued on `read_again` (budget hit or paused), so edge-triggered input is not lost.
    pending_read: bool,
    /// Not being read because its own output is over the limit (the client does not read
    /// what we send it); resumed by `flush_one` once the output drains, not by polling.
    paused_on_output: bool,
}

/// The running broker: its shard threads and how to stop them.
pub struct Running {
    /// Addresses actually bound (port 0 resolved).
    pub addrs: Vec<SocketAddr>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    wakers: Arc<Vec<Arc<Waker>>>,
}

impl Running {
    /// Ask every shard to shut down (DISCONNECT 0x8B to 5.0 clients, then close).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.wakers.iter() {
            let _ = w.wake();
        }
    }

    /// Wait for every shard thread to finish.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Bind the listeners and start one thread per shard.
pub fn run(cfg: Config) -> io::Result<Running> {
    let cfg = Arc::new(cfg);
    let mut listeners = Vec::new();
    for addr in &cfg.binds {
        listeners.push(bind(*addr)?);
    }
    let addrs = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<io::Result<Vec<_>>>()?;
    let mut polls = Vec::new();
    let mut wakers = Vec::new();
    for _ in 0..cfg.shards {
        let poll = Poll::new()?;
        wakers.push(Arc::new(Waker::new(poll.registry(), WAKER)?));
        polls.push(poll);
    }
    let wakers = Arc::new(wakers);
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let cpus = allowed_cpus();
    let mut threads = Vec::new();
    for (id, (poll, bus)) in polls.into_iter().zip(bus::mesh(wakers.clone())).enumerate() {
        let mut mine = Vec::new();
        for (i, l) in listeners.iter().enumerate() {
            let mut l = TcpListener::from_std(l.try_clone()?);
            poll.registry()
                .register(&mut l, Token(LISTENER_BASE + i), Interest::READABLE)?;
            mine.push(l);
        }
        let shard = Shard::new(id, poll, mine, bus, cfg.clone(), stop.clone(), epoch);
        let cpu = (cfg.pin && !cpus.is_empty()).then(|| cpus[id % cpus.len()]);
        threads.push(
            std::thread::Builder::new()
                .name(format!("shard-{id}"))
                .spawn(move || shard.run(cpu))?,
        );
    }
    Ok(Running {
        addrs,
        threads,
        stop,
        wakers,
    })
}

/// A non-blocking listener with a deep backlog. One socket serves every shard: each shard
/// polls its own handle to it, so no other process can silently share the port the way
/// SO_REUSEPORT would allow.
fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    s.listen(4096)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// CPUs this process may run on (respecting `taskset`), in order.
fn allowed_cpus() -> Vec<core_affinity::CoreId> {
    core_affinity::get_core_ids().unwrap_or_default()
}

/// What reading a connection led to.
enum ReadEnd {
    /// Drained to WouldBlock or paused; the connection lives on.
    Open,
    /// It must close (EOF, error, protocol violation).
    Closed,
}

struct Shard {
    id: usize,
    poll: Poll,
    listeners: Vec<TcpListener>,
    socks: Slab<Sock>,
    broker: Broker,
    bus: Bus,
    scratch: Vec<u8>,
    stop: Arc<AtomicBool>,
    epoch: Instant,
    inbox: Vec<BusMsg>,
    read_again: Vec<usize>,
    accept_again: bool,
    /// An inbound ring was left non-empty by the drain budget: poll without sleeping.
    inbox_again: bool,
    /// When an accept error was last logged (ms), to keep an fd shortage from flooding logs.
    accept_error_logged_ms: u64,
}

impl Shard {
    fn new(
        id: usize,
        poll: Poll,
        listeners: Vec<TcpListener>,
        bus: Bus,
        cfg: Arc<Config>,
        stop: Arc<AtomicBool>,
        epoch: Instant,
    ) -> Shard {
        let shards = cfg.shards;
        Shard {
            id,
            poll,
            listeners,
            socks: Slab::new(),
            broker: Broker::new(id, shards, cfg, 0),
            bus,
            scratch: vec![0; SCRATCH_BYTES],
            stop,
            epoch,
            inbox: Vec::new(),
            read_again: Vec::new(),
            accept_again: false,
            inbox_again: false,
            accept_error_logged_ms: 0,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn run(mut self, cpu: Option<core_affinity::CoreId>) {
        if let Some(cpu) = cpu {
            // Failure only means the thread stays unpinned.
            let _ = core_affinity::set_for_current(cpu);
        }
        let mut events = Events::with_capacity(EVENTS_PER_TURN_MAX);
        while !self.stop.load(Ordering::Relaxed) {
            if let Err(e) = self.turn(&mut events) {
                crate::broker::log(format_args!("shard {}: poll failed: {e}", self.id));
                break;
            }
        }
        self.broker.shutdown();
        self.flush_dirty();
        self.close_pending(self.now_ms());
    }

    fn poll_timeout(&self, now: u64) -> Duration {
        if !self.read_again.is_empty()
            || self.accept_again
            || self.inbox_again
            || self.bus.staged() > 0
        {
            return Duration::ZERO;
        }
        let next = self.broker.timers.next_deadline_ms().unwrap_or(u64::MAX);
        Duration::from_millis(next.saturating_sub(now).min(POLL_TIMEOUT_MAX_MS))
    }

    fn turn(&mut self, events: &mut Events) -> io::Result<()> {
        let timeout = self.poll_timeout(self.now_ms());
        match self.poll.poll(events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        let busy_from = Instant::now();
        let now = self.now_ms();
        self.broker.now_ms = now;
        // Causality: whatever peers pushed before this poll returned (a retained message
        // whose PUBACK a client has already seen, say) is applied before any socket input.
        self.drain_bus(now);
        for ev in events.iter() {
            let Token(t) = ev.token();
            if ev.token() == WAKER {
                continue;
            }
            if t >= LISTENER_BASE {
                self.accept_again = true;
                continue;
            }
            if ev.is_writable() {
                self.mark_dirty(t);
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                self.read_or_defer(t, now);
            }
        }
        if std::mem::take(&mut self.accept_again) {
            self.accept_all(now);
        }
        self.retry_reads(now);
        self.broker.on_timers(now);
        // The other half of causality: casts reach the rings before any client can see an
        // acknowledgement written in the same turn.
        self.push_outbox();
        self.flush_dirty();
        self.close_pending(now);
        self.push_outbox();
        self.flush_dirty();
        super::figures::end_turn(&self.broker, &self.bus, busy_from);
        Ok(())
    }

    /// Move the broker's casts into the bus rings and ring idle peers.
    fn push_outbox(&mut self) {
        for (to, cast) in self.broker.outbox.drain(..) {
            self.bus.send(to, BusMsg::Cast(cast));
        }
        self.bus.flush();
    }

    /// Queue link `key` for this turn's flush (a writable edge, or new output).
    fn mark_dirty(&mut self, key: usize) {
        if let Some(l) = self.broker.links.get_mut(key) {
            if !l.dirty {
                l.dirty = true;
                self.broker.dirty.push(key);
            }
        }
    }

    /// Accept from every listener until WouldBlock or the budget. A listener left with a
    /// backlog is retried next turn: edge-triggered polling would not report it again.
    fn accept_all(&mut self, now: u64) {
        for i in 0..self.listeners.len() {
            let mut budget = ACCEPTS_PER_TURN_MAX;
            loop {
                if budget == 0 {
                    self.accept_again = true;
                    break;
                }
                budget -= 1;
                match self.listeners[i].accept() {
                    Ok((stream, peer)) => self.adopt(stream, peer, Vec::new(), None, now),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // EMFILE and friends: the rest stays in the backlog until the next
                        // connection event. Logged at most once a second.
                        if self.accept_error_logged_ms == 0
                            || now >= self.accept_error_logged_ms + 1000
                        {
                            self.accept_error_logged_ms = now.max(1);
                            crate::broker::log(format_args!("accept failed: {e}"));
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Register a socket (accepted here or handed over) and process any bytes it came with.
    fn adopt(
        &mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        rx: Vec<u8>,
        id: Option<Box<str>>,
        now: u64,
    ) {
        let _ = stream.set_nodelay(true);
        let key = self.broker.accept(peer, now);
        let entry = self.socks.vacant_entry();
        if entry.key() != key
            || self
                .poll
                .registry()
                .register(
                    &mut stream,
                    Token(key),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
        {
            // The two slabs move in lockstep; a mismatch is a bug, so refuse the socket.
            debug_assert_eq!(entry.key(), key, "socks and links out of step");
            self.broker.on_closed(key, now);
            return;
        }
        entry.insert(Sock {
            stream,
            rx: RxBuf::from_vec(rx),
            pending_read: false,
            paused_on_output: false,
        });
        if let Some(id) = id {
            self.broker.set_assigned_id(key, id);
        }
        if self.socks.get(key).is_some_and(|s| !s.rx.is_empty()) {
            if let Some(ReadEnd::Closed) = self.process_rx(key, now) {
                self.broker_close(key);
                return;
            }
        }
        self.defer_read(key);
    }

    fn defer_read(&mut self, key: usize) {
        if let Some(s) = self.socks.get_mut(key) {
            if !s.pending_read {
                s.pending_read = true;
                self.read_again.push(key);
            }
        }
    }

    fn read_or_defer(&mut self, key: usize, now: u64) {
        if self.output_full(key) {
            if let Some(s) = self.socks.get_mut(key) {
                s.paused_on_output = true;
            }
        } else if self.bus.staged() > BUS_STAGED_MAX {
            self.defer_read(key);
        } else if let ReadEnd::Closed = self.read_conn(key, now) {
            self.broker_close(key);
        }
    }

    fn retry_reads(&mut self, now: u64) {
        let again = std::mem::take(&mut self.read_again);
        for key in again {
            if let Some(s) = self.socks.get_mut(key) {
                s.pending_read = false;
                self.read_or_defer(key, now);
            }
        }
    }

    /// The client is not reading its own output: stop reading its input too.
    fn output_full(&self, key: usize) -> bool {
        let max = self.broker.config().max_write_buffer;
        self.broker
            .links
            .get(key)
            .is_some_and(|l| l.tx.pending() > max)
    }

    fn broker_close(&mut self, key: usize) {
        if let Some(l) = self.broker.links.get(key) {
            if l.state != crate::broker::LinkState::Closing {
                self.broker.closing.push(key);
                if let Some(l) = self.broker.links.get_mut(key) {
                    l.state = crate::broker::LinkState::Closing;
                }
            }
        }
    }

    /// Read until WouldBlock or the turn's budget, decoding packets in place.
    fn read_conn(&mut self, key: usize, now: u64) -> ReadEnd {
        let mut budget = READ_BYTES_PER_TURN_MAX;
        loop {
            if budget == 0 || self.output_full(key) || self.bus.staged() > BUS_STAGED_MAX {
                // Back through `read_or_defer` next turn, which sorts out why.
                self.defer_read(key);
                return ReadEnd::Open;
            }
            let partial = self.socks.get(key).is_some_and(|s| !s.rx.is_empty());
            let want = if partial {
                self.needed(key).min(SCRATCH_BYTES)
            } else {
                0
            };
            let Some(sock) = self.socks.get_mut(key) else {
                return ReadEnd::Closed;
            };
            let n = if sock.rx.is_empty() {
                match sock.stream.read(&mut self.scratch) {
                    Ok(0) => return ReadEnd::Closed,
                    Ok(n) => {
                        budget = budget.saturating_sub(n);
                        self.broker.stats.bytes_in += n as u64;
                        match self.process_scratch(key, n, now) {
                            Some(end) => return end,
                            None => continue,
                        }
                    }
                    Err(e) => return would_block_or_closed(e),
                }
            } else {
                let spare = sock.rx.spare(want);
                let r = sock.stream.read(spare);
                match r {
                    Ok(0) => return ReadEnd::Closed,
                    Ok(n) => {
                        sock.rx.filled(n);
                        self.broker.stats.bytes_in += n as u64;
                        n
                    }
                    Err(e) => {
                        sock.rx.filled(0);
                        return would_block_or_closed(e);
                    }
                }
            };
            budget = budget.saturating_sub(n);
            if let Some(end) = self.process_rx(key, now) {
                return end;
            }
        }
    }

    /// Bytes still missing for the partial packet held by `key`, from its header.
    fn needed(&self, key: usize) -> usize {
        let Some(sock) = self.socks.get(key) else {
            return 0;
        };
        let Some(link) = self.broker.links.get(key) else {
            return 0;
        };
        let max = packet_size_max(self.broker.config(), link);
        let version = link.version;
        match protocol::decode(sock.rx.readable(), version, max) {
            Ok(Decoded::Incomplete { needed }) => needed.saturating_sub(sock.rx.len()),
            _ => 0,
        }
    }

    /// Decode from the scratch buffer; keep a trailing partial packet in the socket's RxBuf.
    fn process_scratch(&mut self, key: usize, n: usize, now: u64) -> Option<ReadEnd> {
        let Shard {
            scratch,
            broker,
            socks,
            ..
        } = self;
        let (used, outcome) = decode_all(broker, key, &scratch[..n], now);
        match outcome {
            Outcome::More => {
                if let Some(sock) = socks.get_mut(key) {
                    sock.rx.extend(&scratch[used..n]);
                }
                None
            }
            Outcome::Close => Some(ReadEnd::Closed),
            Outcome::Handoff(home) => {
                let rest = scratch[used..n].to_vec();
                self.handoff(key, home, rest);
                Some(ReadEnd::Open)
            }
        }
    }

    /// Decode what the socket's RxBuf holds.
    fn process_rx(&mut self, key: usize, now: u64) -> Option<ReadEnd> {
        let Shard { broker, socks, .. } = self;
        let sock = socks.get_mut(key)?;
        let (used, outcome) = decode_all(broker, key, sock.rx.readable(), now);
        sock.rx.consume(used);
        match outcome {
            Outcome::More => None,
            Outcome::Close => Some(ReadEnd::Closed),
            Outcome::Handoff(home) => {
                let rest = sock.rx.take_unread();
                self.handoff(key, home, rest);
                Some(ReadEnd::Open)
            }
        }
    }

    /// Move connection `key` to shard `home`; its CONNECT is the first of `rest`.
    fn handoff(&mut self, key: usize, home: usize, rest: Vec<u8>) {
        let Some(mut sock) = self.socks.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut sock.stream);
        let peer = self.broker.links.get(key).map(|l| l.peer);
        self.broker.on_closed(key, self.broker.now_ms);
        let Some(peer) = peer else { return };
        let h = Handoff {
            stream: sock.stream,
            rx: rest,
            peer,
            assigned_id: None,
        };
        self.bus.send(home, BusMsg::Handoff(Box::new(h)));
    }

    fn drain_bus(&mut self, now: u64) {
        let mut inbox = std::mem::take(&mut self.inbox);
        self.inbox_again = self.bus.drain(&mut inbox);
        for msg in inbox.drain(..) {
            match msg {
                BusMsg::Cast(c) => self.broker.on_cast(c, now),
                BusMsg::Handoff(h) => {
                    let h = *h;
                    self.adopt(h.stream, h.peer, h.rx, h.assigned_id, now);
                }
            }
        }
        self.inbox = inbox;
    }

    fn flush_one(&mut self, key: usize) {
        let Some(sock) = self.socks.get_mut(key) else {
            return;
        };
        let Some(link) = self.broker.links.get_mut(key) else {
            return;
        };
        let before = link.tx.pending();
        let flushed = link.tx.flush_to(&mut sock.stream, FLUSH_BYTES_PER_TURN_MAX);
        self.broker.stats.bytes_out += (before - link.tx.pending()) as u64;
        match flushed {
            Ok(Flushed::All) => {
                let now = self.broker.now_ms;
                self.broker.on_drained(key, now);
            }
            Ok(Flushed::Partial) => {}
            Err(_) => {
                self.broker_close(key);
                return;
            }
        }
        let resume = !self.output_full(key)
            && self
                .socks
                .get_mut(key)
                .is_some_and(|s| std::mem::take(&mut s.paused_on_output));
        if resume {
            self.defer_read(key);
        }
    }

    /// Flush every link that was written to this turn (two rounds: draining a buffer can
    /// let a session queue refill it).
    fn flush_dirty(&mut self) {
        for _ in 0..2 {
            let dirty = std::mem::take(&mut self.broker.dirty);
            for &key in &dirty {
                if let Some(l) = self.broker.links.get_mut(key) {
                    l.dirty = false;
                }
                self.flush_one(key);
            }
            let mut dirty = dirty;
            dirty.clear();
            if self.broker.dirty.is_empty() {
                self.broker.dirty = dirty;
                break;
            }
        }
    }

    /// Close every link the broker marked: last bytes out, socket shut, state released.
    fn close_pending(&mut self, now: u64) {
        while !self.broker.closing.is_empty() {
            let closing = std::mem::take(&mut self.broker.closing);
            for key in closing {
                if let (Some(sock), Some(link)) =
                    (self.socks.get_mut(key), self.broker.links.get_mut(key))
                {
                    let _ = link.tx.flush_to(&mut sock.stream, FLUSH_BYTES_PER_TURN_MAX);
                }
                if let Some(mut sock) = self.socks.try_remove(key) {
                    let _ = self.poll.registry().deregister(&mut sock.stream);
                    let _ = sock.stream.shutdown(std::net::Shutdown::Both);
                }
                self.broker.on_closed(key, now);
            }
        }
    }
}

/// The packet size limit for a link: lower until CONNECT has been accepted.
fn packet_size_max(cfg: &Config, link: &crate::broker::Link) -> usize {
    match link.state {
        crate::broker::LinkState::ExpectConnect => cfg.max_packet_size.min(CONNECT_PACKET_MAX),
        _ => cfg.max_packet_size,
    }
}

fn would_block_or_closed(e: io::Error) -> ReadEnd {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => ReadEnd::Open,
        _ => ReadEnd::Closed,
    }
}

/// Where decoding a buffer stopped.
enum Outcome {
    /// Need more bytes; everything before `used` was consumed.
    More,
    /// Close the connection.
    Close,
    /// Hand the connection (from `used` on) to this shard.
    Handoff(usize),
}

/// Decode and handle every complete packet at the start of `buf`.
fn decode_all(broker: &mut Broker, key: usize, buf: &[u8], now: u64) -> (usize, Outcome) {
    let mut used = 0;
    loop {
        let Some(link) = broker.links.get(key) else {
            return (used, Outcome::Close);
        };
        if link.state == crate::broker::LinkState::Closing {
            return (used, Outcome::Close);
        }
        let version = link.version;
        let max = packet_size_max(broker.config(), link);
        match protocol::decode(&buf[used..], version, max) {
            Ok(Decoded::Incomplete { .. }) => return (used, Outcome::More),
            Ok(Decoded::Packet { packet, len }) => match broker.handle(key, &packet, now) {
                Verdict::Continue => used += len,
                Verdict::Close => return (used + len, Outcome::Close),
                Verdict::Handoff { home } => return (used, Outcome::Handoff(home)),
            },
            Err(e) => {
                broker.decode_error(key, &e);
                return (used, Outcome::Close);
            }
        }
    }
}
