//! One shard's thread: the `mio` poll loop and the sockets it owns.
//!
//! Owns: the poll, this shard's listener handles, the scratch read buffer and this shard's
//! bus ends; through the broker's connection table, each connection's transport and
//! receive buffer (`conn::ConnIo`). One turn is: poll → due timers → bus inbox → the reads
//! the last turn's budgets deferred → read and decode in place → accept → bus outbox →
//! flush → close; every step has a budget so one busy client or peer cannot starve the
//! rest, and reads have two (per connection, per shard). A SIGHUP reload arrives as a `Control` on
//! the shard's own channel and is applied at the start of a turn, between polls
//! (`Shard::apply_config`), never in the middle of a packet. Invariant: the poll token of
//! a transport is its key in the connection table. Must not touch: MQTT semantics (it calls the broker),
//! `LinkState` (it asks the broker to close a link), other shards' state (only the bus).
#![forbid(unsafe_code)]

use std::io::{self, Read};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use super::admission::{Admission, Refused};
use super::bus::{self, Bus};
use super::cluster_port::{ClusterPort, ClusterStart};
use super::conn::ConnIo;
use super::linger::Lingering;
use super::memory::MemoryBudget;
use super::{BusMsg, Handoff};
use crate::broker::memory::MemoryPressure;
use crate::broker::{Broker, Effects, Ingested};
use crate::config::listener::Listener;
use crate::config::Config;
use crate::log::Level;
use crate::log_at;
use crate::transport::{ListenerKind, Transport};
use crate::txbuf::Flushed;
use crate::verifier::{VerifierClient, VerifierPool};

const WAKER: Token = Token(usize::MAX);
const LISTENER_BASE: usize = usize::MAX - 1024;
/// Bridges' sockets take the tokens just below the listeners'.
const BRIDGE_BASE: usize = LISTENER_BASE - 1024;
/// Events taken from one poll call.
const EVENTS_PER_TURN_MAX: usize = 1024;
/// Bytes read from one socket per turn before others get their go: one scratch buffer.
/// A busy publisher's 64 KiB of small packets is about 300 retained PUBLISHes of 200 bytes,
/// tens of milliseconds in a debug build on a loaded machine; at 256 KiB (read twice per
/// turn, before the retry list was split by turn) a retained storm held its shard's turns
/// at 50-150 ms and a canary on it at 100-300 ms (docs/robustness.md). The budget binds
/// only when more than 64 KiB wait on one socket, so a pipelined publisher pays one more
/// turn (a poll without sleeping) per 64 KiB.
const READ_BYTES_PER_TURN_MAX: usize = 64 * 1024;
/// Bytes read from all of a shard's connections in one turn: 16 connections' worth of
/// [`READ_BYTES_PER_TURN_MAX`]. Without it a turn could read 64 KiB from each of the
/// 1,024 connections one poll reports (64 MiB) before any timer, bus message or flush of
/// the next turn. A connection the budget leaves unread is remembered (the poll is
/// edge-triggered and will not report it again) and read first in the next turn, before
/// that turn's events, in the order it was deferred; one whose read the budget cut short
/// follows those. So each waits at most as many turns as it has such connections ahead
/// of it, divided by 16.
const SHARD_READ_BYTES_PER_TURN_MAX: usize = 1024 * 1024;
/// Bytes written to one socket per flush.
const FLUSH_BYTES_PER_TURN_MAX: usize = 4 * 1024 * 1024;
/// Connections accepted per listener per turn.
const ACCEPTS_PER_TURN_MAX: usize = 512;
/// The shard's scratch read buffer.
const SCRATCH_BYTES: usize = 64 * 1024;
/// Staged bus messages past which the shard stops reading client sockets.
const BUS_STAGED_MAX: usize = 64 * 1024;
/// Control messages waiting per shard (reloads; a sender past it waits for the shard).
const CONTROL_QUEUE_MAX: usize = 16;
/// Casts the outbox keeps room for once drained (it grows with a turn's burst).
const OUTBOX_IDLE_CAPACITY_MAX: usize = 1024;
/// Longest poll sleep: the clock must advance for timers even when idle.
const POLL_TIMEOUT_MAX_MS: u64 = 1000;
/// Messages taken from the cluster link per turn (gateway shard).
const CLUSTER_MESSAGES_PER_TURN_MAX: usize = 1024;
/// Password-hashing threads shared by every shard.
const VERIFIER_THREADS: usize = 2;
/// Password checks queued for those threads; past it a login is refused as busy.
const VERIFY_QUEUE_MAX: usize = 1024;
/// Password checks one shard may have in flight.
const VERIFY_PENDING_PER_SHARD_MAX: usize = 512;

/// A control message from the main thread to one shard, read at a turn boundary.
pub enum Control {
    /// Apply a new configuration: `listeners` is the whole new listening set (this shard's
    /// handles to the sockets the main thread bound or kept), in configuration order.
    Reload {
        /// The new configuration.
        cfg: Arc<Config>,
        /// Every listener, with what it speaks.
        listeners: Vec<(TcpListener, ListenerKind)>,
        /// Every bridge's TLS client settings (bridge `i` at index `i`).
        bridge_tls: Arc<Vec<super::bridges::TlsConfig>>,
    },
}

/// One listening socket the broker holds.
struct Bound {
    /// The address as configured (the listener's identity across reloads; port 0 stays 0).
    configured: SocketAddr,
    /// The address actually bound.
    local: SocketAddr,
    socket: std::net::TcpListener,
    /// What it speaks: built once per listener, shared by every shard's handle.
    kind: ListenerKind,
}

/// The running broker: its shard threads and how to stop them.
pub struct Running {
    /// Addresses actually bound (port 0 resolved).
    pub addrs: Vec<SocketAddr>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    wakers: Arc<Vec<Arc<Waker>>>,
    verifier: Option<VerifierPool>,
    /// Each shard's control channel.
    ctl: Vec<Sender<Control>>,
    /// The listening sockets, in configuration order.
    bound: Vec<Bound>,
}

impl Running {
    /// Ask every shard to shut down (DISCONNECT 0x8B to 5.0 clients, then close).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.wakers.iter() {
            let _ = w.wake();
        }
    }

    /// Apply `cfg` (already validated, see `config::reload`) to every shard at its next
    /// turn boundary. Listeners whose address is still configured keep their socket (and
    /// their backlog); new ones are bound here first, so a bind failure rejects the reload
    /// whole and nothing changes; removed ones close once every shard has let go. Returns
    /// the addresses newly opened and those closed.
    pub fn reload(&mut self, cfg: Arc<Config>) -> io::Result<(Vec<SocketAddr>, Vec<SocketAddr>)> {
        // Bridge certificate files are read first: an unusable one rejects the reload whole.
        let bridge_tls = super::bridges::tls_configs(&cfg)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let bridge_tls = Arc::new(bridge_tls);
        let mut next: Vec<Bound> = Vec::new();
        let mut opened = Vec::new();
        let mut kept = vec![false; self.bound.len()];
        for l in &cfg.listeners {
            // Several `listener 0` lines share a configured address: match them in order.
            let same = self
                .bound
                .iter()
                .enumerate()
                .find(|(i, b)| !kept[*i] && b.configured == l.addr);
            if let Some((i, _)) = same {
                kept[i] = true;
            }
            // New TLS settings and options come from the new configuration; a kept
            // listener keeps counting its open connections against max_connections.
            let mut kind = super::listeners::kind_of(l);
            match same.map(|(_, b)| b) {
                Some(b) => {
                    kind.keep_count_of(&b.kind);
                    next.push(Bound {
                        configured: b.configured,
                        local: b.local,
                        socket: b.socket.try_clone()?,
                        kind,
                    })
                }
                None => {
                    let socket = bind(l.addr, l.bind_interface.as_deref())?;
                    let local = socket.local_addr()?;
                    opened.push(local);
                    next.push(Bound {
                        configured: l.addr,
                        local,
                        socket,
                        kind,
                    });
                }
            }
        }
        let closed = self
            .bound
            .iter()
            .zip(&kept)
            .filter(|(_, k)| !**k)
            .map(|(b, _)| b.local)
            .collect();
        let mut per_shard = Vec::new();
        for _ in &self.ctl {
            per_shard.push(shard_listeners(&next)?);
        }
        for ((tx, w), listeners) in self.ctl.iter().zip(self.wakers.iter()).zip(per_shard) {
            let cfg = cfg.clone();
            let bridge_tls = bridge_tls.clone();
            // A shard that has stopped no longer needs it.
            let _ = tx.send(Control::Reload {
                cfg,
                listeners,
                bridge_tls,
            });
            let _ = w.wake();
        }
        self.addrs = next.iter().map(|b| b.local).collect();
        self.bound = next;
        Ok((opened, closed))
    }

    /// Wait for every shard thread to finish.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
        if let Some(v) = self.verifier {
            v.join();
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
pub fn run_with_store(cfg: Config, store: Option<StoreStart>) -> io::Result<Running> {
    run_node(cfg, store, None)
}

/// As [`run_with_store`], and with `cluster` (when the configuration names a cluster)
/// each shard gets its port to the cluster link, started here once the wakers exist.
pub fn run_node(
    cfg: Config,
    store: Option<StoreStart>,
    cluster: Option<ClusterStart>,
) -> io::Result<Running> {
    let cfg = Arc::new(cfg);
    let mut bound = Vec::new();
    for l in &cfg.listeners {
        let Some(socket) = bind_listener(l)? else {
            continue;
        };
        bound.push(Bound {
            configured: l.addr,
            local: socket.local_addr()?,
            socket,
            kind: super::listeners::kind_of(l),
        });
    }
    let addrs = bound.iter().map(|b| b.local).collect();
    let mut polls = Vec::new();
    let mut wakers = Vec::new();
    for _ in 0..cfg.shards {
        let poll = Poll::new()?;
        wakers.push(Arc::new(Waker::new(poll.registry(), WAKER)?));
        polls.push(poll);
    }
    let wakers = Arc::new(wakers);
    let mut ports = start_cluster(&cfg, cluster, &wakers)?;
    let bridge_tls = super::bridges::tls_configs(&cfg)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    // Open connections and accept rates, broker-wide; memory accounted per shard.
    let admission = super::admission::AdmissionBoard::new(&cfg.limits);
    let memory_board = super::memory::board(cfg.shards);
    cfg.metrics.memory_limit.set(cfg.limits.memory_limit);
    let cpus = allowed_cpus();
    let mut threads = Vec::new();
    let mut ctl = Vec::new();
    let verifier = VerifierPool::start(VERIFIER_THREADS, VERIFY_QUEUE_MAX)?;
    let mut built = Vec::new();
    for (id, (poll, bus)) in polls.into_iter().zip(bus::mesh(wakers.clone())).enumerate() {
        let mut mine = shard_listeners(&bound)?;
        register_listeners(&poll, &mut mine)?;
        let (tx, rx) = crossbeam_channel::bounded(CONTROL_QUEUE_MAX);
        ctl.push(tx);
        let waker = wakers[id].clone();
        let client = verifier.client(
            Arc::new(move || {
                let _ = waker.wake();
            }),
            VERIFY_PENDING_PER_SHARD_MAX,
        );
        let mut shard = Shard::new(id, poll, mine, bus, cfg.clone(), stop.clone(), epoch);
        shard.ctl = rx;
        shard.verifier = Some(client);
        shard.admission = Admission::new(admission.clone(), &cfg.limits);
        shard.memory = MemoryBudget::new(id, memory_board.clone(), cfg.limits.memory_limit);
        let mut shard = shard.with_bridges(&bridge_tls);
        if let (Some(port), Some(c)) = (ports.next(), cfg.cluster.as_ref()) {
            // Before the store is restored: restored subscriptions tell the link too.
            shard.broker.set_cluster(&c.node);
            shard.cluster = Some(port);
        }
        let cpu = (cfg.pin && !cpus.is_empty()).then(|| cpus[id % cpus.len()]);
        built.push((shard, cpu));
    }
    let stored = store.is_some();
    if let Some(st) = store {
        restore_all(&mut built, st, &wakers)?;
    }
    for (shard, _) in &mut built {
        if shard.cluster.is_some() {
            // The link checks these sessions' owners before it reads this node's queue.
            shard.broker.cluster_restored();
        }
    }
    if stored {
        // Every restored subscription's interest, and every restored share-group
        // membership, is applied on every shard before any runs: the rings alone do not
        // order it before client input (a connection handed over by a third shard is read
        // as soon as its handoff is drained; a drain takes at most 1,024 messages per
        // peer). Its casts follow on the rings, changing nothing.
        let interest: Vec<crate::broker::RestoredInterest> = built
            .iter()
            .map(|(shard, _)| shard.broker.restored_interest())
            .collect();
        for (shard, _) in &mut built {
            for (from, filters) in interest.iter().enumerate() {
                shard.broker.learn_restored_interest(from, filters);
            }
        }
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
        verifier: Some(verifier),
        ctl,
        bound,
    })
}

/// Start the cluster link if the configuration names a cluster: one port per shard.
fn start_cluster(
    cfg: &Config,
    cluster: Option<ClusterStart>,
    wakers: &Arc<Vec<Arc<Waker>>>,
) -> io::Result<std::vec::IntoIter<Box<dyn ClusterPort>>> {
    let (Some(start), Some(_)) = (cluster, cfg.cluster.as_ref()) else {
        return Ok(Vec::new().into_iter());
    };
    let gateway = wakers[crate::broker::cluster::GATEWAY_SHARD].clone();
    let wake: super::cluster_port::Wake = Arc::new(move || {
        let _ = gateway.wake();
    });
    let ports = start(wake, cfg.shards)?;
    if ports.len() != cfg.shards {
        return Err(io::Error::other(
            "cluster link: one port per shard expected",
        ));
    }
    Ok(ports.into_iter())
}

/// Open every shard's log and restore its part of the recovered store, each shard in its
/// own thread (the parts are independent: a shard's restore touches only its own broker
/// and the outbox its first turn sends).
fn restore_all(
    built: &mut [(Shard, Option<core_affinity::CoreId>)],
    mut st: StoreStart,
    wakers: &Arc<Vec<Arc<Waker>>>,
) -> io::Result<()> {
    let mut parts = std::mem::take(&mut st.parts).into_iter();
    let st = &st;
    std::thread::scope(|scope| {
        let jobs: Vec<_> = built
            .iter_mut()
            .enumerate()
            .map(|(id, (shard, _))| {
                let part = parts.next().unwrap_or_default();
                let waker = wakers[id].clone();
                std::thread::Builder::new()
                    .name(format!("restore-{id}"))
                    .spawn_scoped(scope, move || {
                        let bridges = open_journal(&mut shard.broker, id, st, part, waker)?;
                        shard.bridges.restore(&mut shard.broker, bridges, 0);
                        Ok(())
                    })
            })
            .collect();
        for job in jobs {
            job?.join()
                .unwrap_or_else(|_| Err(io::Error::other("restore panicked")))?;
        }
        Ok(())
    })
}

/// Open shard `id`'s log and install `part`, its part of the recovered store, in
/// `broker`; the bridges' part is returned for the shard's bridges.
fn open_journal(
    broker: &mut Broker<ConnIo>,
    id: usize,
    st: &StoreStart,
    part: crate::store::LiveState,
    waker: Arc<Waker>,
) -> io::Result<std::collections::BTreeMap<String, crate::store::BridgeState>> {
    let dir = crate::store::layout::shard_dir(&st.dir, id);
    let disk = crate::store::disk::from_env();
    let wal = crate::store::Wal::open_on(disk, &dir, st.opts, move || {
        let _ = waker.wake();
    })
    .map_err(|e| io::Error::other(e.to_string()))?;
    if let Some(m) = broker.config().metrics.shard(id) {
        m.store.store(Some(wal.figures()));
    }
    // The shadow keeps the bridges' state too (the bridges log against it).
    let bridges = part.bridges.clone();
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    // The part moves into the journal as its shadow, and the broker restores from there.
    let shards = broker.config().shards;
    let journal = crate::broker::journal::Journal::new(wal, part, shards, unix_ms);
    broker.attach_journal(journal);
    broker.restore_from_journal(&st.retained, 0);
    Ok(bridges)
}

/// One shard's handles to the listening sockets, each with what it speaks. The kinds are
/// clones of one per listener, so every shard shares its `max_connections` count and its
/// TLS configuration.
fn shard_listeners(bound: &[Bound]) -> io::Result<Vec<(TcpListener, ListenerKind)>> {
    bound
        .iter()
        .map(|b| {
            let l = TcpListener::from_std(b.socket.try_clone()?);
            Ok((l, b.kind.clone()))
        })
        .collect()
}

/// Register each listener under `LISTENER_BASE + its index`.
fn register_listeners(
    poll: &Poll,
    listeners: &mut [(TcpListener, ListenerKind)],
) -> io::Result<()> {
    for (i, (l, _)) in listeners.iter_mut().enumerate() {
        poll.registry()
            .register(l, Token(LISTENER_BASE + i), Interest::READABLE)?;
    }
    Ok(())
}

/// Bind one configured listener. `Ok(None)`: the default listener's `::1` on a host
/// without IPv6 (logged; the IPv4 loopback serves alone), the one failure tolerated.
fn bind_listener(l: &Listener) -> io::Result<Option<std::net::TcpListener>> {
    match bind(l.addr, l.bind_interface.as_deref()) {
        Ok(s) => Ok(Some(s)),
        Err(e) if l.optional => {
            log_at!(Level::Warning, "not listening on {}: {e}", l.addr);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A non-blocking listener with a deep backlog. One socket serves every shard: each shard
/// polls its own handle to it, so no other process can silently share the port the way
/// SO_REUSEPORT would allow.
fn bind(addr: SocketAddr, interface: Option<&str>) -> io::Result<std::net::TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if let Some(name) = interface {
        s.bind_device(Some(name.as_bytes())).map_err(|e| {
            io::Error::new(e.kind(), format!("bind_interface {name} for {addr}: {e}"))
        })?;
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
    /// Connections the shard's read budget left unread this turn: read first next turn,
    /// in this order, before its events.
    read_first: Vec<usize>,
    /// Connections that spent their own read budget this turn (or were cut short by the
    /// shard's, or wait for the bus or their output): read next turn after its events
    /// (moved to `read_again` when it starts), never twice in one turn.
    read_next: Vec<usize>,
    /// Bytes this turn may still read, over all connections
    /// ([`SHARD_READ_BYTES_PER_TURN_MAX`] at its start).
    read_left: usize,
    /// Each read of this turn: (connection, bytes), in order (unit tests only).
    #[cfg(test)]
    read_log: Vec<(usize, usize)>,
    /// Reused lists of keys taken from the broker's effects.
    keys: Vec<usize>,
    accept_again: bool,
    /// An inbound ring was left non-empty by the drain budget: poll without sleeping.
    inbox_again: bool,
    /// When an accept error was last logged (ms), to keep an fd shortage from flooding logs.
    accept_error_logged_ms: u64,
    /// This shard's handle on the password-hashing threads.
    verifier: Option<VerifierClient>,
    /// Verifier answers were left for the next turn: poll without sleeping.
    verify_again: bool,
    /// Closed connections draining their input so the peer reads our last packet.
    lingering: Lingering,
    /// `max_connections` and the per-address connection rate.
    admission: Admission,
    /// When a refusal at accept was last logged (ms).
    refusal_logged_ms: u64,
    /// This shard's part of `memory_limit`.
    memory: MemoryBudget,
    /// Control messages from the main thread (reload).
    ctl: Receiver<Control>,
    /// The bridges this shard runs (see `broker::bridges::bridge_owner`).
    bridges: super::bridges::Bridges,
    /// This shard's port to the cluster link (cluster only).
    cluster: Option<Box<dyn ClusterPort>>,
    /// Reused buffer of the link's messages (gateway shard).
    cluster_inbox: Vec<crate::broker::cluster::FromCluster>,
    /// The link's queue was left non-empty by the turn's budget: poll without sleeping.
    cluster_again: bool,
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
        let cfg_limits = cfg.limits;
        Shard {
            id,
            poll,
            listeners,
            bridges: super::bridges::Bridges::none(BRIDGE_BASE),
            broker: Broker::new(id, shards, cfg, 0),
            bus,
            scratch: vec![0; SCRATCH_BYTES],
            stop,
            epoch,
            inbox: Vec::new(),
            read_again: Vec::new(),
            read_first: Vec::new(),
            read_next: Vec::new(),
            read_left: SHARD_READ_BYTES_PER_TURN_MAX,
            #[cfg(test)]
            read_log: Vec::new(),
            keys: Vec::new(),
            accept_again: false,
            inbox_again: false,
            accept_error_logged_ms: 0,
            verifier: None,
            verify_again: false,
            lingering: Lingering::default(),
            admission: Admission::new(Arc::default(), &cfg_limits),
            refusal_logged_ms: 0,
            memory: MemoryBudget::new(id, super::memory::board(1), 0),
            ctl: crossbeam_channel::never(),
            cluster: None,
            cluster_inbox: Vec::new(),
            cluster_again: false,
        }
    }

    /// Run this shard's bridges (see `broker::bridges::bridge_owner`) with their TLS settings.
    fn with_bridges(mut self, tls: &[super::bridges::TlsConfig]) -> Shard {
        let now = self.now_ms();
        self.bridges =
            super::bridges::Bridges::new(self.broker.config(), tls, self.id, BRIDGE_BASE, now);
        self
    }

    /// Apply the control messages waiting (at most a few per turn; they are rare).
    fn apply_control(&mut self) {
        while let Ok(msg) = self.ctl.try_recv() {
            match msg {
                Control::Reload {
                    cfg,
                    listeners,
                    bridge_tls,
                } => self.apply_config(cfg, listeners, &bridge_tls),
            }
        }
    }

    /// A reload, at a turn boundary: swap the listening set (connections are untouched:
    /// they belong to the broker's table, not to a listener), then hand the configuration
    /// to the broker, which applies what can change live. Shard-side parts that keep
    /// configuration of their own (a listener's TLS settings, say) take it from here.
    pub(crate) fn apply_config(
        &mut self,
        cfg: Arc<Config>,
        mut listeners: Vec<(TcpListener, ListenerKind)>,
        bridge_tls: &[super::bridges::TlsConfig],
    ) {
        for (l, _) in &mut self.listeners {
            let _ = self.poll.registry().deregister(l);
        }
        if let Err(e) = register_listeners(&self.poll, &mut listeners) {
            log_at!(
                Level::Error,
                "shard {}: cannot watch the listeners after a reload: {e}",
                self.id
            );
        }
        self.listeners = listeners;
        // Edge-triggered: a backlog that built up meanwhile would not be reported again.
        self.accept_again = true;
        // `global_max_connections` and `max_connection_rate`: from the next accept.
        self.admission.reconfigure(&cfg.limits);
        // `memory_limit`: accounted against the new figure from the next tick.
        self.memory.set_limit(cfg.limits.memory_limit);
        cfg.metrics.memory_limit.set(cfg.limits.memory_limit);
        self.broker.reload(cfg);
        let now = self.now_ms();
        self.bridges
            .reconfigure(&mut self.broker, self.poll.registry(), bridge_tls, now);
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
                log_at!(Level::Error, "shard {}: poll failed: {e}", self.id);
                break;
            }
        }
        self.broker.shutdown();
        self.flush_dirty();
        self.close_pending(self.now_ms());
        self.lingering.clear();
        // The sessions' disconnect records reach the log before the shard ends.
        self.broker.journal_end_turn(self.now_ms());
    }

    fn poll_timeout(&self, now: u64) -> Duration {
        if !self.read_again.is_empty()
            || !self.read_first.is_empty()
            || !self.read_next.is_empty()
            || self.accept_again
            || self.inbox_again
            || self.cluster_again
            || self.verify_again
            || self.broker.timers_backlog()
            || self.broker.journal_unwritten()
            || self.bus.staged() > 0
            || self.bridges.busy()
            || self.broker.pending_bridge_offers()
        {
            return Duration::ZERO;
        }
        let next = self.broker.next_timer_ms().unwrap_or(u64::MAX);
        let next = next.min(self.bridges.next_deadline_ms().unwrap_or(u64::MAX));
        let linger = self.lingering.due_in_ms(now).unwrap_or(u64::MAX);
        let ms = next.saturating_sub(now).min(linger);
        Duration::from_millis(ms.min(POLL_TIMEOUT_MAX_MS))
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
        // What was due by now runs before any of this turn's input (`Broker::begin_turn`).
        self.broker.begin_turn(now);
        self.read_left = SHARD_READ_BYTES_PER_TURN_MAX;
        #[cfg(test)]
        self.read_log.clear();
        self.read_again.append(&mut self.read_next);
        self.apply_control();
        // Causality: whatever peers pushed before this poll returned (a retained message
        // whose PUBACK a client has already seen, say) is applied before any socket input.
        self.drain_bus(now);
        self.drain_cluster(now);
        // Connections the last turn's budget left unread come before this turn's events.
        self.read_carried(now);
        self.resume_links(now);
        for ev in events.iter() {
            let Token(t) = ev.token();
            if ev.token() == WAKER {
                continue;
            }
            if t >= LISTENER_BASE {
                self.accept_again = true;
                continue;
            }
            if t >= BRIDGE_BASE && self.bridges.event(t) {
                continue;
            }
            if ev.is_writable() {
                self.broker.writable(t);
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                self.read_event(t, now);
            }
        }
        if std::mem::take(&mut self.accept_again) {
            self.accept_all(now);
        }
        self.retry_reads(now);
        self.verify_answers(now);
        self.submit_checks(now);
        self.bridges
            .step(&mut self.broker, self.poll.registry(), now);
        // Held acks whose records are durable go out; this turn's records are written.
        self.broker.journal_end_turn(now);
        // The other half of causality: casts reach the rings before any client can see an
        // acknowledgement written in the same turn.
        self.push_outbox();
        self.flush_dirty();
        self.close_pending(now);
        self.push_outbox();
        self.flush_dirty();
        self.lingering.tick(now, &mut self.scratch);
        if self.memory.tick(&mut self.broker, now) {
            self.resume_publishers();
        }
        super::figures::end_turn(&self.broker, &self.bus, busy_from);
        Ok(())
    }

    /// Move the broker's casts into the bus rings and ring idle peers; hand this turn's
    /// cluster messages to the link (one wake-up).
    fn push_outbox(&mut self) {
        let outbox = &mut self.broker.effects().outbox;
        for (to, cast) in outbox.drain(..) {
            self.bus.send(to, BusMsg::Cast(cast));
        }
        // A burst (a SUBSCRIBE of many filters) gives back what it grew the outbox by.
        if outbox.capacity() > OUTBOX_IDLE_CAPACITY_MAX {
            outbox.shrink_to(OUTBOX_IDLE_CAPACITY_MAX);
        }
        self.bus.flush();
        let fx = self.broker.effects();
        if let (Some(port), false) = (self.cluster.as_mut(), fx.cluster.is_empty()) {
            port.send(&mut fx.cluster);
        }
    }

    /// Take the cluster link's news (gateway shard; a bounded number per turn), right after
    /// the bus and before any socket input, like the bus.
    fn drain_cluster(&mut self, now: u64) {
        let Some(port) = self.cluster.as_mut() else {
            return;
        };
        let mut inbox = std::mem::take(&mut self.cluster_inbox);
        self.cluster_again = port.receive(now, CLUSTER_MESSAGES_PER_TURN_MAX, &mut inbox);
        for m in inbox.drain(..) {
            self.broker.on_cluster(m, now);
        }
        self.cluster_inbox = inbox;
    }

    /// Read again the links whose paused CONNECT the broker has completed or refused (the
    /// cluster registry answered): their input waited in the receive buffer and the socket.
    fn resume_links(&mut self, now: u64) {
        let keys = std::mem::take(&mut self.broker.effects().resume);
        for key in keys {
            self.resume_input(key, now);
        }
    }

    /// Link `key` is no longer paused by the broker: process what it buffered, then read.
    fn resume_input(&mut self, key: usize, now: u64) {
        if self.broker.input_paused(key) {
            return;
        }
        let Some(c) = self.broker.links_mut().conn_mut(key) else {
            return;
        };
        c.io.paused_on_auth = false;
        let buffered = !c.io.rx.is_empty();
        if buffered {
            if let Some(ReadEnd::Closed) = self.process_rx(key, 0..0, now) {
                self.broker.close_link(key);
                return;
            }
        }
        self.defer_read(key);
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
                        if let Err(why) = self.admission.admit(peer.ip(), i, now) {
                            // Dropping the stream closes it before any byte is read.
                            self.log_refusal(peer, why, now);
                            continue;
                        }
                        match self.listeners[i].1.wrap(stream) {
                            Ok(Some(transport)) => {
                                self.broker.effects().stats.connections_accepted += 1;
                                let id = self.listeners[i].1.id;
                                self.adopt(transport, peer, Vec::new(), id, now)
                            }
                            // At the listener's max_connections: dropping the socket closes it.
                            Ok(None) => self.admission.release(),
                            Err(e) => {
                                self.admission.release();
                                log_at!(Level::Notice, "connection from {peer} refused: {e}");
                            }
                        }
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
                            log_at!(Level::Error, "accept failed: {e}");
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Log a refusal at accept, at most once a second per shard.
    fn log_refusal(&mut self, peer: SocketAddr, why: Refused, now: u64) {
        if self.refusal_logged_ms != 0 && now < self.refusal_logged_ms + 1000 {
            return;
        }
        self.refusal_logged_ms = now.max(1);
        let what = match why {
            Refused::MaxConnections => {
                format!("max_connections reached ({} open)", self.admission.open())
            }
            Refused::RateLimited => "max_connection_rate exceeded by its address".to_string(),
        };
        log_at!(Level::Notice, "Refused connection from {peer}: {what}.");
    }

    /// Register a transport (accepted here or handed over) and process any bytes it came
    /// with.
    fn adopt(
        &mut self,
        transport: Transport,
        peer: SocketAddr,
        rx: Vec<u8>,
        listener: usize,
        now: u64,
    ) {
        let mount = transport.mount_point();
        let key = self.broker.accept(peer, ConnIo::new(transport, rx), now);
        self.broker.set_listener(key, listener);
        if let Some(c) = self.broker.links_mut().conn_mut(key) {
            c.link.mount = mount;
        }
        if self.name_from_certificate(key).is_err() {
            self.broker.on_closed(key, now);
            return;
        }
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
            self.admission.release();
            return;
        }
        let partial = self
            .broker
            .links()
            .conn(key)
            .is_some_and(|c| !c.io.rx.is_empty());
        if partial {
            if let Some(ReadEnd::Closed) = self.process_rx(key, 0..0, now) {
                self.broker.close_link(key);
                return;
            }
        }
        self.defer_read(key);
    }

    /// Read `key` later in this turn (`retry_reads`).
    fn defer_read(&mut self, key: usize) {
        if let Some(c) = self.broker.links_mut().conn_mut(key) {
            if !c.io.pending_read {
                c.io.pending_read = true;
                self.read_again.push(key);
            }
        }
    }

    /// Read `key` next turn: it spent this turn's budget, or must wait for the bus.
    fn defer_read_next(&mut self, key: usize) {
        if let Some(c) = self.broker.links_mut().conn_mut(key) {
            if !c.io.pending_read {
                c.io.pending_read = true;
                self.read_next.push(key);
            }
        }
    }

    /// Read `key` first next turn: the shard's read budget for this turn is spent.
    fn defer_read_first(&mut self, key: usize) {
        if let Some(c) = self.broker.links_mut().conn_mut(key) {
            if !c.io.pending_read {
                c.io.pending_read = true;
                self.read_first.push(key);
            }
        }
    }

    /// Read the connections the last turn's shard budget left unread, in the order
    /// deferred, before this turn's events; those this turn's budget leaves unread again go
    /// back to the front of the next turn's list, in order. (Those already read last turn
    /// and cut short wait in `read_again` until after the events, so a small fresh packet,
    /// a canary's, is not queued behind a busy publisher's next 64 KiB; if the budget is
    /// spent before their turn comes, they join this list for the next turn.)
    fn read_carried(&mut self, now: u64) {
        let mut carried = std::mem::take(&mut self.read_first);
        for &key in &carried {
            if let Some(c) = self.broker.links_mut().conn_mut(key) {
                c.io.pending_read = false;
                self.read_or_defer(key, now);
            }
        }
        // The list's allocation is reused for the next turn's.
        carried.clear();
        if self.read_first.is_empty() {
            self.read_first = carried;
        }
    }

    /// A readiness event: read now, unless the connection is already listed to be read
    /// (`retry_reads` reads it this turn; reading it here too would give one busy client
    /// two budgets in one turn).
    fn read_event(&mut self, key: usize, now: u64) {
        let listed = self
            .broker
            .links()
            .conn(key)
            .is_some_and(|c| c.io.pending_read);
        if !listed {
            self.read_or_defer(key, now);
        }
    }

    /// Memory is below the pause mark again: read the publishers paused for it.
    fn resume_publishers(&mut self) {
        for key in std::mem::take(&mut self.memory.paused) {
            let was = self
                .broker
                .links_mut()
                .conn_mut(key)
                .is_some_and(|c| std::mem::take(&mut c.io.paused_on_memory));
            if was {
                self.defer_read(key);
            }
        }
    }

    /// Under memory pressure, a publisher is not read (TCP back-pressure) until the budget
    /// resumes it. True when `key` was paused.
    fn paused_for_memory(&mut self, key: usize) -> bool {
        if self.broker.memory_pressure() < MemoryPressure::PausePublishers {
            return false;
        }
        let Some(c) = self.broker.links_mut().conn_mut(key) else {
            return false;
        };
        if !c.link.published {
            return false;
        }
        if !std::mem::replace(&mut c.io.paused_on_memory, true) {
            self.memory.paused.push(key);
        }
        true
    }

    fn read_or_defer(&mut self, key: usize, now: u64) {
        if self.paused_for_memory(key) {
            return;
        }
        if self.broker.input_paused(key) {
            if let Some(c) = self.broker.links_mut().conn_mut(key) {
                c.io.paused_on_auth = true;
            }
        } else if self.broker.output_full(key) {
            if let Some(c) = self.broker.links_mut().conn_mut(key) {
                c.io.paused_on_output = true;
            }
        } else if self.bus.staged() > BUS_STAGED_MAX {
            self.defer_read_next(key);
        } else if self.read_left == 0 {
            self.defer_read_first(key);
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

    /// Read until WouldBlock or a budget (the connection's, the shard's), decoding
    /// packets in place. No read asks for more than either budget has left, so the
    /// shard's bound is exact.
    fn read_conn(&mut self, key: usize, now: u64) -> ReadEnd {
        let mut budget = READ_BYTES_PER_TURN_MAX;
        loop {
            let cap = budget.min(self.read_left).min(self.scratch.len());
            if cap == 0 || self.broker.output_full(key) || self.bus.staged() > BUS_STAGED_MAX {
                // Back through `read_or_defer` next turn, which sorts out why.
                self.defer_read_next(key);
                return ReadEnd::Open;
            }
            let step = match self.broker.links().conn(key) {
                None => return ReadEnd::Closed,
                Some(c) if c.io.rx.is_empty() => self.read_scratch(key, cap, now),
                Some(_) => self.read_partial(key, cap, now),
            };
            match step {
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    self.read_left = self.read_left.saturating_sub(n);
                    #[cfg(test)]
                    self.read_log.push((key, n));
                }
                Err(end) => return end,
            }
        }
    }

    /// No partial packet held: read at most `cap` bytes into the shared scratch buffer and
    /// decode from there. `Ok(bytes read)` to go on, `Err(end)` to stop.
    fn read_scratch(&mut self, key: usize, cap: usize, now: u64) -> Result<usize, ReadEnd> {
        let Some(c) = self.broker.links_mut().conn_mut(key) else {
            return Err(ReadEnd::Closed);
        };
        let n = match c.io.transport.read(&mut self.scratch[..cap]) {
            Ok(0) => return Err(ReadEnd::Closed),
            Ok(n) => n,
            Err(e) => return Err(self.read_failed(key, e)),
        };
        self.broker.effects().stats.bytes_in += n as u64;
        if self.first_bytes(key).is_err() {
            return Err(ReadEnd::Closed);
        }
        match self.process_scratch(key, 0, n, now) {
            Some(end) => Err(end),
            None => Ok(n),
        }
    }

    /// A read error: `WouldBlock` waits for the next edge; `Interrupted` (a transport's
    /// own per-call budget spent on handshake or control bytes) reads again next turn, like
    /// the shard's own budget; anything else closes.
    fn read_failed(&mut self, key: usize, e: io::Error) -> ReadEnd {
        if e.kind() == io::ErrorKind::Interrupted {
            self.defer_read(key);
        }
        if e.kind() == io::ErrorKind::InvalidData {
            let handshaking = self.broker.links_mut().conn_mut(key).is_some_and(|c| {
                c.io.transport.is_handshaking() && std::mem::take(&mut c.io.tls_pending)
            });
            if handshaking {
                self.broker.effects().stats.tls_handshake_failures += 1;
            }
        }
        would_block_or_closed(e)
    }

    /// Application bytes arrived, perhaps for the first time: a PROXY header's client
    /// address becomes the link's peer, and a TLS handshake that has just completed may
    /// name the user. `Err`: the connection must close.
    fn first_bytes(&mut self, key: usize) -> Result<(), ()> {
        let Some(c) = self.broker.links_mut().conn_mut(key) else {
            return Err(());
        };
        if let Some(addr) = c.io.transport.take_proxied_addr() {
            c.link.peer = addr;
        }
        if std::mem::take(&mut c.io.tls_pending) {
            // Application bytes only flow once the handshake is done.
            self.broker.effects().stats.tls_handshakes += 1;
        }
        self.name_from_certificate(key)
    }

    /// With `use_identity_as_username` / `use_subject_as_username`, the verified client
    /// certificate names the link's user once the handshake is done (again on the home
    /// shard after a handover: the link there is new). `Err`: it has no such name, and
    /// Mosquitto refuses such a client too.
    fn name_from_certificate(&mut self, key: usize) -> Result<(), ()> {
        let Some(c) = self.broker.links_mut().conn_mut(key) else {
            return Err(());
        };
        let t = &c.io.transport;
        if !c.io.name_pending || t.is_handshaking() || t.awaits_proxy_header() {
            return Ok(());
        }
        c.io.name_pending = false;
        match c.io.transport.cert_username() {
            Some(name) => {
                c.link.username = Some(name.into());
                Ok(())
            }
            None => {
                log_at!(
                    Level::Notice,
                    "{}: client certificate has no usable name; closing",
                    c.link.peer
                );
                Err(())
            }
        }
    }

    /// A partial packet is held: read into the scratch buffer. A small packet takes from
    /// the read only the bytes that complete it and is decoded from its own buffer; the
    /// rest of the read is then decoded in place from the scratch buffer, as usual, so a
    /// busy publisher's buffer holds one partial packet, not a read. A large packet still
    /// arriving takes the whole read, appended in pieces that never move (`ring`), and is
    /// decoded once whole.
    fn read_partial(&mut self, key: usize, cap: usize, now: u64) -> Result<usize, ReadEnd> {
        let needed = self.broker.links().conn(key).and_then(|c| {
            let held = c.io.rx.contiguous()?;
            Some((held.len(), self.broker.bytes_needed(key, held)))
        });
        let Some(c) = self.broker.links_mut().conn_mut(key) else {
            return Err(ReadEnd::Closed);
        };
        let n = match c.io.transport.read(&mut self.scratch[..cap]) {
            Ok(0) => return Err(ReadEnd::Closed),
            Ok(n) => n,
            Err(e) => return Err(self.read_failed(key, e)),
        };
        // `need` is 0 while the fixed header itself is incomplete: take the whole read.
        let take = match needed {
            Some((held, need)) if need > 0 => {
                c.io.rx.expect(held + need);
                need.min(n)
            }
            _ => n,
        };
        c.io.rx.extend(&self.scratch[..take]);
        let whole = c.io.rx.complete();
        self.broker.effects().stats.bytes_in += n as u64;
        if !whole {
            return Ok(n);
        }
        if let Some(end) = self.process_rx(key, take..n, now) {
            return Err(end);
        }
        if take == n {
            return Ok(n);
        }
        let end = match self.broker.links_mut().conn_mut(key) {
            None => Some(ReadEnd::Closed),
            Some(c) if c.io.rx.is_empty() => self.process_scratch(key, take, n, now),
            // Still held (only its fixed header's next byte was known to be needed, or its
            // input is paused): the rest joins it and is decoded from there.
            Some(c) => {
                c.io.rx.extend(&self.scratch[take..n]);
                self.process_rx(key, 0..0, now)
            }
        };
        match end {
            Some(end) => Err(end),
            None => Ok(n),
        }
    }

    /// Decode `scratch[from..n]`; keep a trailing partial packet in the link's RxBuf.
    fn process_scratch(&mut self, key: usize, from: usize, n: usize, now: u64) -> Option<ReadEnd> {
        let (used, outcome) = self.broker.ingest(key, &self.scratch[from..n], now);
        let used = from + used;
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
    /// handles its packets (they borrow from it) and put back after. `tail`: bytes of the
    /// scratch buffer read after it and not yet handled, which go with the connection if
    /// it is handed to another shard.
    fn process_rx(&mut self, key: usize, tail: Range<usize>, now: u64) -> Option<ReadEnd> {
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
                let mut rest = rx.take_unread();
                rest.extend_from_slice(&self.scratch[tail]);
                self.handoff(key, home, rest);
                Some(ReadEnd::Open)
            }
        }
    }

    /// Move connection `key` to shard `home`; its CONNECT is the first of `rest`.
    fn handoff(&mut self, key: usize, home: usize, rest: Vec<u8>) {
        let Some((peer, listener)) = self.broker.links().get(key).map(|l| (l.peer, l.listener))
        else {
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
            listener,
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
                    self.adopt(h.transport, h.peer, h.rx, h.listener, now);
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
        if c.link.output_held() {
            // The CONNACK waits for its session's records: only the transport's own bytes
            // (handshake, control frames) go out; the broker marks the link dirty again
            // when the output is released.
            if c.io.transport.send_pending().is_err() {
                self.broker.close_link(key);
            }
            return;
        }
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
                if self.broker.defer_close(key, now) {
                    // Its output is held: closed (output first) once released.
                    continue;
                }
                if let Some(c) = self.broker.links_mut().conn_mut(key) {
                    let t = &mut c.io.transport;
                    if let Ok(true) = t.send_pending() {
                        let _ = c.tx.flush_to(t, FLUSH_BYTES_PER_TURN_MAX);
                    }
                    let _ = t.send_pending();
                }
                if let Some(mut io) = self.broker.on_closed(key, now) {
                    let _ = self.poll.registry().deregister(&mut io.transport);
                    self.lingering.start(io.transport, now);
                    self.admission.release();
                }
            }
        }
        closing.clear();
        self.keys = closing;
    }
}

impl Shard {
    /// Hand this turn's password checks to the verifier; a saturated one refuses at once.
    fn submit_checks(&mut self, now: u64) {
        let requests = std::mem::take(&mut self.broker.effects().verify);
        for r in requests {
            let sent = match self.verifier.as_mut() {
                Some(v) => v.submit(r.token, r.file, &r.user, &r.password).is_ok(),
                None => false,
            };
            if !sent {
                self.broker.on_verified(r.token, None, now);
            }
        }
    }

    /// Take the verifier's answers (a bounded number per turn) and resume the links whose
    /// CONNECT they completed: their input waited in the receive buffer and the socket.
    fn verify_answers(&mut self, now: u64) {
        self.verify_again = false;
        for _ in 0..crate::broker::login::VERIFY_ANSWERS_PER_TURN_MAX {
            let Some(a) = self.verifier.as_mut().and_then(|v| v.try_answer()) else {
                return;
            };
            self.broker
                .on_verified(a.token, Some((a.verdict, a.generation)), now);
            let key = (a.token >> 32) as usize;
            self.resume_input(key, now);
        }
        // Budget spent: answers may wait whose doorbell has rung already.
        self.verify_again = true;
    }
}

fn would_block_or_closed(e: io::Error) -> ReadEnd {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => ReadEnd::Open,
        _ => ReadEnd::Closed,
    }
}

#[cfg(test)]
mod tests;
