//! The adapter between the simulation and the broker: N shards driven in one thread.
//!
//! Owns: one `Broker` per shard, the simulated bus between them (one FIFO per ordered pair,
//! as the SPSC rings are), and which simulated connection each broker link stands for.
//! A shard's `turn` follows `shard::event_loop`'s turn step by step (bus inbox, socket
//! reads, timers, outbox, flush, close, outbox, flush), with the simulation choosing what
//! the kernel would: how many bytes a read returns, how many a write takes, how many bus
//! messages a drain takes. Invariant: every key of `Host::socks` is a live broker link and
//! the reverse; the broker's clock is only ever the `now` passed in. Must not touch: the
//! clients or the oracle. This is the one file that knows the broker's interface, so it is
//! what changes when that interface does.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use super::net::{ConnId, Net};
use super::rng::Source;
use crate::broker::{Broker, Cast, LinkState, Verdict};
use crate::config::Config;
use crate::protocol::{self, Decoded};
use crate::shard::txbuf::Flushed;

/// Largest first packet before CONNECT is accepted (as `event_loop::CONNECT_PACKET_MAX`).
const CONNECT_PACKET_MAX: usize = 1024 * 1024;
/// Bus messages taken from one peer per turn when the drain is not cut short.
const DRAIN_PER_PEER_MAX: usize = 1024;
/// Bytes one flush writes at most (as `event_loop::FLUSH_BYTES_PER_TURN_MAX`).
const FLUSH_BYTES_PER_TURN_MAX: usize = 4 * 1024 * 1024;
/// Packets decoded from one read at most, so a bug that never consumes cannot spin.
const PACKETS_PER_READ_MAX: usize = 4096;

/// What crosses between simulated shards.
#[derive(Debug)]
enum SimMsg {
    Cast(Cast),
    /// A connection moving to its session's home shard, unread bytes first.
    Handoff {
        conn: ConnId,
        rx: Vec<u8>,
    },
}

/// A simulated socket on one shard.
#[derive(Debug)]
struct Sock {
    conn: ConnId,
    /// Read but not yet decoded (a partial packet), like `RxBuf`.
    rx: Vec<u8>,
}

/// One shard: its broker and its sockets.
struct Host {
    broker: Broker,
    socks: BTreeMap<usize, Sock>,
}

/// A writer that takes at most `room` bytes, then would block (a full socket buffer).
struct Pipe<'a> {
    out: &'a mut Vec<u8>,
    room: usize,
    broken: bool,
}

impl Write for Pipe<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.broken {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = b.len().min(self.room);
        self.out.extend_from_slice(&b[..n]);
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The simulated broker: every shard, and the bus between them.
pub struct Cluster {
    hosts: Vec<Host>,
    /// `bus[from * n + to]`, in send order.
    bus: Vec<VecDeque<SimMsg>>,
    /// When false, every read, write and drain takes all it can (settling the run).
    pub chaos: bool,
}

impl Cluster {
    /// `shards` brokers sharing `cfg`, their clocks at `now_ms`.
    pub fn new(shards: usize, cfg: Config, now_ms: u64) -> Cluster {
        let cfg = Arc::new(Config { shards, ..cfg });
        let hosts = (0..shards)
            .map(|id| Host {
                broker: Broker::new(id, shards, cfg.clone(), now_ms),
                socks: BTreeMap::new(),
            })
            .collect();
        Cluster {
            hosts,
            bus: (0..shards * shards).map(|_| VecDeque::new()).collect(),
            chaos: true,
        }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.hosts.len()
    }

    /// Shard `shard` accepts connection `conn` (as `accept_all` → `adopt`).
    pub fn accept(&mut self, shard: usize, conn: ConnId, now_ms: u64) {
        self.adopt(shard, conn, Vec::new(), now_ms);
    }

    /// The earliest timer deadline of any shard.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.hosts
            .iter()
            .filter_map(|h| h.broker.timers.next_deadline_ms())
            .min()
    }

    /// True when no bus message waits and no shard has output or closes pending.
    pub fn idle(&self) -> bool {
        self.bus.iter().all(VecDeque::is_empty)
            && self.hosts.iter().all(|h| {
                h.broker.closing.is_empty()
                    && h.broker.dirty.is_empty()
                    && h.broker.links.iter().all(|(_, l)| l.tx.is_empty())
            })
    }

    /// Connected links per client id over all shards (a client id must have at most one).
    pub fn connected_ids(&self) -> BTreeMap<String, usize> {
        let mut ids = BTreeMap::new();
        for h in &self.hosts {
            for (_, l) in h.broker.links.iter() {
                if let (LinkState::Connected, Some(id)) = (l.state, l.client_id.as_deref()) {
                    *ids.entry(id.to_string()).or_insert(0) += 1;
                }
            }
        }
        ids
    }

    /// Sessions each shard holds.
    pub fn session_counts(&self) -> Vec<usize> {
        self.hosts
            .iter()
            .map(|h| h.broker.session_count())
            .collect()
    }

    /// Deliveries any shard dropped for a full session queue.
    pub fn dropped_queue(&self) -> u64 {
        self.hosts
            .iter()
            .map(|h| h.broker.stats.dropped_queue)
            .sum()
    }

    /// One turn of shard `i`, in `event_loop::Shard::turn`'s order.
    pub fn turn(&mut self, i: usize, now_ms: u64, net: &mut Net, rng: &mut Source) {
        if i >= self.hosts.len() {
            return;
        }
        self.hosts[i].broker.now_ms = now_ms;
        self.drain_bus(i, now_ms, net, rng);
        self.writable_edges(i, rng);
        let keys: Vec<usize> = self.hosts[i].socks.keys().copied().collect();
        for key in keys {
            if !self.chaos || rng.chance(700) {
                self.read(i, key, now_ms, net, rng);
            }
        }
        self.hosts[i].broker.on_timers(now_ms);
        self.push_outbox(i);
        self.flush_dirty(i, now_ms, net, rng);
        self.close_pending(i, now_ms, net);
        self.push_outbox(i);
        self.flush_dirty(i, now_ms, net, rng);
    }

    fn drain_bus(&mut self, i: usize, now_ms: u64, net: &mut Net, rng: &mut Source) {
        let n = self.hosts.len();
        for from in (0..n).filter(|&f| f != i) {
            // Sometimes a short budget, so a turn reads sockets with messages still queued.
            let budget = if self.chaos && rng.chance(125) {
                rng.range(1, 4) as usize
            } else {
                DRAIN_PER_PEER_MAX
            };
            for _ in 0..budget {
                let Some(msg) = self.bus[from * n + i].pop_front() else {
                    break;
                };
                match msg {
                    SimMsg::Cast(c) => self.hosts[i].broker.on_cast(c, now_ms),
                    SimMsg::Handoff { conn, rx } => {
                        if net.conns.get(conn).is_some_and(|c| !c.closed) {
                            self.adopt(i, conn, rx, now_ms);
                        }
                    }
                }
            }
        }
    }

    /// A socket with output waiting reports writable again (not always at once).
    fn writable_edges(&mut self, i: usize, rng: &mut Source) {
        let host = &mut self.hosts[i];
        let keys: Vec<usize> = host.socks.keys().copied().collect();
        for key in keys {
            let Some(l) = host.broker.links.get_mut(key) else {
                continue;
            };
            if !l.tx.is_empty() && !l.dirty && (!self.chaos || rng.chance(500)) {
                l.dirty = true;
                host.broker.dirty.push(key);
            }
        }
    }

    fn adopt(&mut self, i: usize, conn: ConnId, rx: Vec<u8>, now_ms: u64) {
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, (conn % 65_536) as u16));
        let host = &mut self.hosts[i];
        let key = host.broker.accept(peer, now_ms);
        let fresh = host.socks.insert(key, Sock { conn, rx }).is_none();
        debug_assert!(fresh, "a new link reused a live socket key");
        if self.hosts[i]
            .socks
            .get(&key)
            .is_some_and(|s| !s.rx.is_empty())
        {
            self.decode(i, key, now_ms);
        }
    }

    /// Read what the "kernel" returns (a random prefix of what arrived) and decode it.
    fn read(&mut self, i: usize, key: usize, now_ms: u64, net: &mut Net, rng: &mut Source) {
        let host = &mut self.hosts[i];
        let (Some(sock), Some(link)) = (host.socks.get_mut(&key), host.broker.links.get(key))
        else {
            return;
        };
        let Some(conn) = net.conns.get_mut(sock.conn) else {
            return;
        };
        if conn.broken {
            broker_close(&mut host.broker, key);
            return;
        }
        if conn.to_broker.is_empty() || link.tx.pending() > host.broker.config().max_write_buffer {
            return;
        }
        let n = if self.chaos {
            rng.range(1, conn.to_broker.len() as u64) as usize
        } else {
            conn.to_broker.len()
        };
        sock.rx.extend(conn.to_broker.drain(..n));
        self.decode(i, key, now_ms);
    }

    /// Decode and handle every whole packet of socket `key`'s buffer (`decode_all`).
    fn decode(&mut self, i: usize, key: usize, now_ms: u64) {
        let Host { broker, socks } = &mut self.hosts[i];
        let Some(sock) = socks.get_mut(&key) else {
            return;
        };
        let mut used = 0;
        let mut end = None;
        for _ in 0..PACKETS_PER_READ_MAX {
            let Some(link) = broker.links.get(key) else {
                end = Some(None);
                break;
            };
            if link.state == LinkState::Closing {
                end = Some(None);
                break;
            }
            let max = match link.state {
                LinkState::ExpectConnect => broker.config().max_packet_size.min(CONNECT_PACKET_MAX),
                _ => broker.config().max_packet_size,
            };
            match protocol::decode(&sock.rx[used..], link.version, max) {
                Ok(Decoded::Incomplete { .. }) => break,
                Ok(Decoded::Packet { packet, len }) => match broker.handle(key, &packet, now_ms) {
                    Verdict::Continue => used += len,
                    Verdict::Close => {
                        used += len;
                        end = Some(None);
                        break;
                    }
                    Verdict::Handoff { home } => {
                        end = Some(Some(home));
                        break;
                    }
                },
                Err(e) => {
                    broker.decode_error(key, &e);
                    end = Some(None);
                    break;
                }
            }
        }
        sock.rx.drain(..used);
        match end {
            None => {}
            Some(None) => broker_close(broker, key),
            Some(Some(home)) => self.handoff(i, key, home),
        }
    }

    /// Move socket `key` to shard `home`, its unread bytes with it (`event_loop::handoff`).
    fn handoff(&mut self, i: usize, key: usize, home: usize) {
        let n = self.hosts.len();
        let host = &mut self.hosts[i];
        let Some(sock) = host.socks.remove(&key) else {
            return;
        };
        let now = host.broker.now_ms;
        host.broker.on_closed(key, now);
        if let Some(q) = self.bus.get_mut(i * n + home) {
            q.push_back(SimMsg::Handoff {
                conn: sock.conn,
                rx: sock.rx,
            });
        }
    }

    fn push_outbox(&mut self, i: usize) {
        let n = self.hosts.len();
        let casts: Vec<(usize, Cast)> = self.hosts[i].broker.outbox.drain(..).collect();
        for (to, cast) in casts {
            if let Some(q) = self.bus.get_mut(i * n + to) {
                q.push_back(SimMsg::Cast(cast));
            }
        }
    }

    /// Flush every link written to (two rounds, as `flush_dirty`).
    fn flush_dirty(&mut self, i: usize, now_ms: u64, net: &mut Net, rng: &mut Source) {
        for _ in 0..2 {
            let dirty = std::mem::take(&mut self.hosts[i].broker.dirty);
            for key in dirty {
                if let Some(l) = self.hosts[i].broker.links.get_mut(key) {
                    l.dirty = false;
                }
                let room = if self.chaos && rng.chance(200) {
                    rng.range(0, 64) as usize
                } else {
                    FLUSH_BYTES_PER_TURN_MAX
                };
                self.flush_one(i, key, room, now_ms, net);
            }
            if self.hosts[i].broker.dirty.is_empty() {
                break;
            }
        }
    }

    fn flush_one(&mut self, i: usize, key: usize, room: usize, now_ms: u64, net: &mut Net) {
        let host = &mut self.hosts[i];
        let (Some(sock), Some(link)) = (host.socks.get(&key), host.broker.links.get_mut(key))
        else {
            return;
        };
        let Some(conn) = net.conns.get_mut(sock.conn) else {
            return;
        };
        let mut pipe = Pipe {
            out: &mut conn.to_client,
            room,
            broken: conn.broken,
        };
        match link.tx.flush_to(&mut pipe, FLUSH_BYTES_PER_TURN_MAX) {
            Ok(Flushed::All) => host.broker.on_drained(key, now_ms),
            Ok(Flushed::Partial) => {}
            Err(_) => broker_close(&mut host.broker, key),
        }
    }

    /// Close every link the broker marked: last bytes out, socket gone, state released.
    fn close_pending(&mut self, i: usize, now_ms: u64, net: &mut Net) {
        let host = &mut self.hosts[i];
        while !host.broker.closing.is_empty() {
            for key in std::mem::take(&mut host.broker.closing) {
                if let (Some(sock), Some(link)) =
                    (host.socks.get(&key), host.broker.links.get_mut(key))
                {
                    if let Some(conn) = net.conns.get_mut(sock.conn) {
                        let mut pipe = Pipe {
                            out: &mut conn.to_client,
                            room: FLUSH_BYTES_PER_TURN_MAX,
                            broken: conn.broken,
                        };
                        let _ = link.tx.flush_to(&mut pipe, FLUSH_BYTES_PER_TURN_MAX);
                    }
                }
                if let Some(sock) = host.socks.remove(&key) {
                    if let Some(conn) = net.conns.get_mut(sock.conn) {
                        conn.closed = true;
                    }
                }
                host.broker.on_closed(key, now_ms);
            }
        }
    }
}

/// Mark link `key` closing (as `event_loop::broker_close`).
fn broker_close(broker: &mut Broker, key: usize) {
    let Some(l) = broker.links.get_mut(key) else {
        return;
    };
    if l.state != LinkState::Closing {
        l.state = LinkState::Closing;
        broker.closing.push(key);
    }
}
