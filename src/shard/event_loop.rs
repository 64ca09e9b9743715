//! One shard's thread: the `mio` poll loop and the sockets it owns.
//!
//! Owns: the poll, this shard's listener handles, the scratch read buffer and this shard's
//! bus ends; through the broker's connection table, each connection's transport and
//! receive buffer (`conn::ConnIo`). One turn is: poll → bus inbox → read and decode in
//! place → accept → timers → bus outbox → flush → close; every step has a budget so one
//! busy client or peer cannot starve the rest. Invariant: the poll token of a transport is
//! its key in the connection table. Must not touch: MQTT semantics (it calls the broker),
//! `LinkState` (it asks the broker to close a link), other shards' state (only the bus).
#![forbid(unsafe_code)]

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use super::bus::{self, Bus};
use super::conn::ConnIo;
use super::{BusMsg, Handoff};
use crate::broker::{Broker, Effects, Ingested};
use crate::config::Config;
use crate::log::log;
use crate::transport::{ListenerKind, Transport};
use crate::txbuf::Flushed;

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
/// Longest poll sleep: the clock must advance for timers even when idle.
const POLL_TIMEOUT_MAX_MS: u64 = 1000;

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

/// What a shard starts from when persistence is on: its part of the recovered store.
pub struct StoreStart {
    /// The store's directory (its layout installed for this shard count).
    pub dir: std::path::PathBuf,
    /// Each shard's part, in shard order.
    pub parts: Vec<crate::store::LiveState>,
    /// Every retained message, for every shard's replica.
    pub retained: Vec<crate::broker::journal::RetainedEntry>,
    /// How each shard's log runs.
    pub opts: crate::store::WalOptions,
}

/// Bind the listeners and start one thread per shard (memory only).
pub fn run(cfg: Config) -> io::Result<Running> {
    run_with_store(cfg, None)
}

/// Bind the listeners and start one thread per shard, each with its log if `store`.
pub fn run_with_store(cfg: Config, mut store: Option<StoreStart>) -> io::Result<Running> {
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
    let mut built = Vec::new();
    for (id, (poll, bus)) in polls.into_iter().zip(bus::mesh(wakers.clone())).enumerate() {
        let mut mine = Vec::new();
        for (i, l) in listeners.iter().enumerate() {
            let mut l = TcpListener::from_std(l.try_clone()?);
            poll.registry()
                .register(&mut l, Token(LISTENER_BASE + i), Interest::READABLE)?;
            mine.push((l, ListenerKind::Tcp));
        }
        let mut shard = Shard::new(id, poll, mine, bus, cfg.clone(), stop.clone(), epoch);
        if let Some(st) = store.as_mut() {
            open_journal(&mut shard.broker, id, st, wakers[id].clone())?;
        }
        let cpu = (cfg.pin && !cpus.is_empty()).then(|| cpus[id % cpus.len()]);
        built.push((shard, cpu));
    }
    if store.is_some() {
        // Every restored subscription's interest is on the rings before any shard runs:
        // a shard's first turn drains its inbox before it accepts or fires a timer.
        for (shard, _) in &mut built {
            shard.push_outbox();
        }
    }
    for (id, (shard, cpu)) in built.into_iter().enumerate() {
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

/// Open shard `id`'s log and install its part of the recovered store in `broker`.
fn open_journal(
    broker: &mut Broker<ConnIo>,
    id: usize,
    st: &mut StoreStart,
    waker: Arc<Waker>,
) -> io::Result<()> {
    let dir = crate::store::layout::shard_dir(&st.dir, id);
    let wal = crate::store::Wal::open(&dir, st.opts, move || {
        let _ = waker.wake();
    })
    .map_err(|e| io::Error::other(e.to_string()))?;
    let part = st.parts.get_mut(id).map(std::mem::take).unwrap_or_default();
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let journal = crate::broker::journal::Journal::new(wal, part.clone(), st.parts.len(), unix_ms);
    broker.attach_journal(journal);
    broker.restore(&part, &st.retained, 0);
    Ok(())
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
    /// Each listening socket with what it speaks.
    listeners: Vec<(TcpListener, ListenerKind)>,
    broker: Broker<ConnIo>,
    bus: Bus<BusMsg>,
    scratch: Vec<u8>,
    stop: Arc<AtomicBool>,
    epoch: Instant,
    inbox: Vec<BusMsg>,
    read_again: Vec<usize>,
    /// Reused lists of keys taken from the broker's effects.
    keys: Vec<usize>,
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
        listeners: Vec<(TcpListener, ListenerKind)>,
        bus: Bus<BusMsg>,
        cfg: Arc<Config>,
        stop: Arc<AtomicBool>,
        epoch: Instant,
    ) -> Shard {
        let shards = cfg.shards;
        Shard {
            id,
            poll,
            listeners,
            broker: Broker::new(id, shards, cfg, 0),
            bus,
            scratch: vec![0; SCRATCH_BYTES],
            stop,
            epoch,
            inbox: Vec::new(),
            read_again: Vec::new(),
            keys: Vec::new(),
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
                log(format_args!("shard {}: poll failed: {e}", self.id));
                break;
            }
        }
        self.broker.shutdown();
        self.flush_dirty();
        self.close_pending(self.now_ms());
        // The sessions' disconnect records reach the log before the shard ends.
        self.broker.journal_end_turn(self.now_ms());
    }

    fn poll_timeout(&self, now: u64) -> Duration {
        if !self.read_again.is_empty()
            || self.accept_again
            || self.inbox_again
            || self.broker.timers_backlog()
            || self.broker.journal_unwritten()
            || self.bus.staged() > 0
        {
            return Duration::ZERO;
        }
        let next = self.broker.next_timer_ms().unwrap_or(u64::MAX);
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
        self.broker.begin_turn(now);
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
                self.broker.writable(t);
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
        // Held acks whose records are durable go out; this turn's records are written.
        self.broker.journal_end_turn(now);
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
        for (to, cast) in self.broker.effects().outbox.drain(..) {
            self.bus.send(to, BusMsg::Cast(cast));
        }
        self.bus.flush();
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
                match self.listeners[i].0.accept() {
                    Ok((stream, peer)) => {
                        let transport = self.listeners[i].1.wrap(stream);
                        self.adopt(transport, peer, Vec::new(), now);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // EMFILE and friends: the rest stays in the backlog until the next
                        // connection event. Logged at most once a second.
                        if self.accept_error_logged_ms == 0
                            || now >= self.accept_error_logged_ms + 1000
                        {
                            self.accept_error_logged_ms = now.max(1);
                            log(format_args!("accept failed: {e}"));
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Register a transport (accepted here or handed over) and process any bytes it came
    /// with.
    fn adopt(&mut self, transport: Transport, peer: SocketAddr, rx: Vec<u8>, now: u64) {
        let key = self.broker.accept(peer, ConnIo::new(transport, rx), now);
        let registered = self.broker.links_mut().conn_mut(key).is_some_and(|c| {
            self.poll
                .registry()
                .register(
                    &mut c.io.transport,
                    Token(key),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_ok()
        });
        if !registered {
            // Not registered: forget it now (never through the closing list, whose keys
            // must name live connections).
            self.broker.on_closed(key, now);
            return;
        }
        let partial = self
            .broker
            .links()
            .conn(key)
            .is_some_and(|c| !c.io.rx.is_empty());
        if partial {
            if let Some(ReadEnd::Closed) = self.process_rx(key, now) {
                self.broker.close_link(key);
                return;
            }
        }
        self.defer_read(key);
    }

    fn defer_read(&mut self, key: usize) {
        if let Some(c) = self.broker.links_mut().conn_mut(key) {
            if !c.io.pending_read {
                c.io.pending_read = true;
                self.read_again.push(key);
            }
        }
    }

    fn read_or_defer(&mut self, key: usize, now: u64) {
        if self.broker.output_full(key) {
            if let Some(c) = self.broker.links_mut().conn_mut(key) {
                c.io.paused_on_output = true;
            }
        } else if self.bus.staged() > BUS_STAGED_MAX {
            self.defer_read(key);
        } else if let ReadEnd::Closed = self.read_conn(key, now) {
            self.broker.close_link(key);
        }
    }

    fn retry_reads(&mut self, now: u64) {
        let again = std::mem::take(&mut self.read_again);
        for key in again {
            if let Some(c) = self.broker.links_mut().conn_mut(key) {
                c.io.pending_read = false;
                self.read_or_defer(key, now);
            }
        }
    }

    /// Read until WouldBlock or the turn's budget, decoding packets in place.
    fn read_conn(&mut self, key: usize, now: u64) -> ReadEnd {
        let mut budget = READ_BYTES_PER_TURN_MAX;
        loop {
            if budget == 0 || self.broker.output_full(key) || self.bus.staged() > BUS_STAGED_MAX {
                // Back through `read_or_defer` next turn, which sorts out why.
                self.defer_read(key);
                return ReadEnd::Open;
            }
            let step = match self.broker.links().conn(key) {
                None => return ReadEnd::Closed,
                Some(c) if c.io.rx.is_empty() => self.read_scratch(key, now),
                Some(_) => self.read_partial(key, now),
            };
            match step {
                Ok(n) => budget = budget.saturating_sub(n),
                Err(end) => return end,
            }
        }
    }

    /// No partial packet held: read into the shared scratch buffer and decode from there.
    /// `Ok(bytes read)` to go on, `Err(end)` to stop.
    fn read_scratch(&mut self, key: usize, now: u64) -> Result<usize, ReadEnd> {
        let Some(c) = self.broker.links_mut().conn_mut(key) else {
            return Err(ReadEnd::Closed);
        };
        let n = match c.io.transport.read(&mut self.scratch) {
            Ok(0) => return Err(ReadEnd::Closed),
            Ok(n) => n,
            Err(e) => return Err(would_block_or_closed(e)),
        };
        self.broker.effects().stats.bytes_in += n as u64;
        match self.process_scratch(key, n, now) {
            Some(end) => Err(end),
            None => Ok(n),
        }
    }

    /// A partial packet is held: read what it still needs into its own buffer.
    fn read_partial(&mut self, key: usize, now: u64) -> Result<usize, ReadEnd> {
        let want = self
            .broker
            .links()
            .conn(key)
            .map_or(0, |c| self.broker.bytes_needed(key, c.io.rx.readable()))
            .min(SCRATCH_BYTES);
        let Some(c) = self.broker.links_mut().conn_mut(key) else {
            return Err(ReadEnd::Closed);
        };
        let io = &mut c.io;
        let spare = io.rx.spare(want);
        let n = match io.transport.read(spare) {
            Ok(0) => return Err(ReadEnd::Closed),
            Ok(n) => n,
            Err(e) => {
                io.rx.filled(0);
                return Err(would_block_or_closed(e));
            }
        };
        io.rx.filled(n);
        self.broker.effects().stats.bytes_in += n as u64;
        match self.process_rx(key, now) {
            Some(end) => Err(end),
            None => Ok(n),
        }
    }

    /// Decode from the scratch buffer; keep a trailing partial packet in the link's RxBuf.
    fn process_scratch(&mut self, key: usize, n: usize, now: u64) -> Option<ReadEnd> {
        let (used, outcome) = self.broker.ingest(key, &self.scratch[..n], now);
        match outcome {
            Ingested::More => {
                if let Some(c) = self.broker.links_mut().conn_mut(key) {
                    c.io.rx.extend(&self.scratch[used..n]);
                }
                None
            }
            Ingested::Close => Some(ReadEnd::Closed),
            Ingested::Handoff(home) => {
                let rest = self.scratch[used..n].to_vec();
                self.handoff(key, home, rest);
                Some(ReadEnd::Open)
            }
        }
    }

    /// Decode what the link's RxBuf holds. The buffer is taken out while the broker
    /// handles its packets (they borrow from it) and put back after.
    fn process_rx(&mut self, key: usize, now: u64) -> Option<ReadEnd> {
        let mut rx = std::mem::take(&mut self.broker.links_mut().conn_mut(key)?.io.rx);
        let (used, outcome) = self.broker.ingest(key, rx.readable(), now);
        rx.consume(used);
        match outcome {
            Ingested::More => {
                if let Some(c) = self.broker.links_mut().conn_mut(key) {
                    c.io.rx = rx;
                }
                None
            }
            Ingested::Close => Some(ReadEnd::Closed),
            Ingested::Handoff(home) => {
                let rest = rx.take_unread();
                self.handoff(key, home, rest);
                Some(ReadEnd::Open)
            }
        }
    }

    /// Move connection `key` to shard `home`; its CONNECT is the first of `rest`.
    fn handoff(&mut self, key: usize, home: usize, rest: Vec<u8>) {
        let Some(peer) = self.broker.links().get(key).map(|l| l.peer) else {
            return;
        };
        let Some(mut io) = self.broker.on_closed(key, self.broker.now_ms()) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut io.transport);
        let h = Handoff {
            transport: io.transport,
            rx: rest,
            peer,
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
                    self.adopt(h.transport, h.peer, h.rx, now);
                }
            }
        }
        self.inbox = inbox;
    }

    /// Write the transport's own output, then the link's buffer, within the budget.
    fn flush_one(&mut self, key: usize) {
        let (links, fx) = self.broker.links_and_effects();
        let Some(c) = links.conn_mut(key) else {
            return;
        };
        Effects::flushed(&mut c.link);
        let before = c.tx.pending();
        let flushed = match c.io.transport.send_pending() {
            Ok(true) => c.tx.flush_to(&mut c.io.transport, FLUSH_BYTES_PER_TURN_MAX),
            Ok(false) => Ok(Flushed::Partial),
            Err(e) => Err(e),
        };
        fx.stats.bytes_out += (before - c.tx.pending()) as u64;
        match flushed {
            // Bytes still inside the transport wait for the next writable edge.
            Ok(Flushed::All) if !c.io.transport.wants_write() => {
                let now = self.broker.now_ms();
                self.broker.on_drained(key, now);
            }
            Ok(_) => {}
            Err(_) => {
                self.broker.close_link(key);
                return;
            }
        }
        let output_full = self.broker.output_full(key);
        let resume = !output_full
            && self
                .broker
                .links_mut()
                .conn_mut(key)
                .is_some_and(|c| std::mem::take(&mut c.io.paused_on_output));
        if resume {
            self.defer_read(key);
        }
    }

    /// Flush every link that was written to this turn (two rounds: draining a buffer can
    /// let a session queue refill it).
    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.keys);
        for _ in 0..2 {
            self.broker.effects().take_dirty(&mut dirty);
            for &key in &dirty {
                self.flush_one(key);
            }
            if !self.broker.effects().has_dirty() {
                break;
            }
        }
        dirty.clear();
        self.keys = dirty;
    }

    /// Close every link the broker marked: last bytes out, transport shut, state released.
    fn close_pending(&mut self, now: u64) {
        let mut closing = std::mem::take(&mut self.keys);
        while self.broker.effects().has_closing() {
            self.broker.effects().take_closing(&mut closing);
            for &key in &closing {
                if let Some(c) = self.broker.links_mut().conn_mut(key) {
                    let t = &mut c.io.transport;
                    if let Ok(true) = t.send_pending() {
                        let _ = c.tx.flush_to(t, FLUSH_BYTES_PER_TURN_MAX);
                    }
                    let _ = t.send_pending();
                }
                if let Some(mut io) = self.broker.on_closed(key, now) {
                    let _ = self.poll.registry().deregister(&mut io.transport);
                    io.transport.shutdown();
                }
            }
        }
        closing.clear();
        self.keys = closing;
    }
}

fn would_block_or_closed(e: io::Error) -> ReadEnd {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => ReadEnd::Open,
        _ => ReadEnd::Closed,
    }
}
