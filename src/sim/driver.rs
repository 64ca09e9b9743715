//! The adapter between the simulation and the broker: N shards driven in one thread.
//!
//! Owns: one `Broker` per shard, the simulated bus between them (one FIFO per ordered pair,
//! as the SPSC rings are), and each link's shard part (`Io`: which simulated connection it
//! is, and its undecoded input). A shard's `turn` follows `shard::event_loop`'s turn step
//! by step (due timers, bus inbox, reads, outbox, flush, close, outbox, flush) through the
//! interface the broker offers any driver (`docs/architecture.md`, "Driving a shard core
//! without mio"), with the simulation choosing what the kernel would: how many bytes a read
//! returns, how many a write takes, how many bus messages a drain takes. Invariant: the
//! broker's clock is only ever the `now` passed in. Must not touch: the clients or the
//! oracle. This is the one file that knows the broker's interface, so it is what changes
//! when that interface does.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use super::client::parse_payload;
use super::net::{ConnId, Net};
use super::rng::Source;
use crate::broker::effects::ShareLogNote;
use crate::broker::{Broker, Cast, Effects, Ingested, LinkState};
use crate::config::Config;
use crate::txbuf::Flushed;

/// Bus messages taken from one peer per turn when the drain is not cut short.
const DRAIN_PER_PEER_MAX: usize = 1024;
/// Bytes one flush writes at most (as `event_loop::FLUSH_BYTES_PER_TURN_MAX`).
const FLUSH_BYTES_PER_TURN_MAX: usize = 4 * 1024 * 1024;

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

/// The shard's part of a link: the simulated socket.
#[derive(Debug)]
pub struct Io {
    conn: ConnId,
    /// Read but not yet decoded (a partial packet), like `RxBuf`.
    rx: Vec<u8>,
    /// The link's first answer to its CONNECT (the CONNACK) has been written.
    answered: bool,
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

/// Where the simulated store lives on the simulated disk.
const SIM_DATA_DIR: &str = "/data";
/// Wall-clock time (Unix ms) at simulated time 0.
const SIM_UNIX_EPOCH_MS: u64 = 1_800_000_000_000;
/// Log bytes between checkpoints in the simulation (small, so runs write several).
const SIM_CHECKPOINT_BYTES: u64 = 16 * 1024;
/// Segment size in the simulation (small, so runs roll segments).
const SIM_SEGMENT_BYTES: u64 = 8 * 1024;

/// A simulated message: (publisher, sequence number).
pub type MsgKey = (usize, u32);

/// One shard's stored sessions' shared deliveries as its log holds them, since the shard
/// last started: the ones it restored, then [`Effects::share_log`].
#[derive(Debug, Default)]
struct ShareLedger {
    /// (client id, message id) → the message.
    ids: BTreeMap<(Box<str>, u64), MsgKey>,
    /// (client id, message) → (deliveries logged or restored, how many of them were
    /// logged gone for a move, the highest ticket of those ends).
    held: BTreeMap<(Box<str>, MsgKey), (u32, u32, crate::store::Lsn)>,
}

impl ShareLedger {
    /// A delivery of `key` held by `client` under message id `id`.
    fn placed(&mut self, client: &str, id: u64, key: MsgKey) {
        self.ids.insert((client.into(), id), key);
        self.held.entry((client.into(), key)).or_default().0 += 1;
    }

    /// The delivery `id` of `client` was logged gone for a move, by ticket `lsn`.
    fn moved_off(&mut self, client: &str, id: u64, lsn: crate::store::Lsn) {
        let Some(&key) = self.ids.get(&(client.into(), id)) else {
            return;
        };
        let e = self.held.entry((client.into(), key)).or_default();
        e.1 += 1;
        e.2 = e.2.max(lsn);
    }

    /// (client id, message) whose every logged delivery moved off, with every end durable
    /// when the log is durable up to `durable`.
    fn gone_durably(
        &self,
        durable: crate::store::Lsn,
    ) -> impl Iterator<Item = (String, MsgKey)> + '_ {
        self.held
            .iter()
            .filter(move |(_, &(n, moved, lsn))| n > 0 && moved >= n && lsn <= durable)
            .map(|((c, key), _)| (c.to_string(), *key))
    }
}

/// The simulated broker: every shard, and the bus between them.
pub struct Cluster {
    brokers: Vec<Broker<Io>>,
    /// The simulated disk under every shard's log, when persistence is simulated.
    disk: Option<crate::store::SimDisk>,
    cfg: Arc<Config>,
    /// `bus[from * n + to]`, in send order.
    bus: Vec<VecDeque<SimMsg>>,
    /// Scratch list of link keys (dirty or closing).
    keys: Vec<usize>,
    /// When false, every read, write and drain takes all it can (settling the run).
    pub chaos: bool,
    /// A drain cut short may take nothing from a peer: what it sent comes after this
    /// turn's reads (so a shard routes and moves on an older view of the share groups).
    pub late_bus: bool,
    /// A turn takes nothing from this shard's ring: what it sent is not visible yet.
    pub hold_from: Option<usize>,
    /// Client ids whose CONNACK was written to the network since the last
    /// [`Cluster::take_answered`], in order.
    answered: Vec<String>,
    /// Shared messages no member could take, or that a session held when it ended, as
    /// (publisher, sequence number), since the last [`Cluster::take_unplaced`].
    unplaced: Vec<(usize, u32)>,
    /// Shared messages placed with a session that is not stored, since the last
    /// [`Cluster::take_placed_clean`].
    placed_clean: Vec<(usize, u32)>,
    /// Settle tokens the shards issued before the last power cut.
    settle_tokens: u64,
    /// Per shard, its stored sessions' shared deliveries in its log (persistence only).
    ledgers: Vec<ShareLedger>,
    /// Shared messages (client id, message) logged for a stored session since the last
    /// [`Cluster::take_share_placed`].
    share_placed: Vec<(String, MsgKey)>,
    /// At the last power cut: (client id, message) whose every delivery to that stored
    /// member had moved to another member, the move durable (see
    /// [`Cluster::take_moved_off_durably`]).
    moved_off_durably: Vec<(String, MsgKey)>,
    /// At the last restart: (client id, message) of every shared delivery restored.
    share_restored: Vec<(String, MsgKey)>,
}

/// Shard `id` of `shards`, recording the shared messages no member could take.
fn new_broker(id: usize, shards: usize, cfg: &Arc<Config>, now_ms: u64) -> Broker<Io> {
    let mut b = Broker::new(id, shards, cfg.clone(), now_ms);
    b.effects().share_unplaced = Some(Vec::new());
    b.effects().share_clean = Some(Vec::new());
    b.effects().share_log = Some(Vec::new());
    b
}

impl Cluster {
    /// `shards` brokers sharing `cfg`, their clocks at `now_ms`.
    pub fn new(shards: usize, cfg: Config, now_ms: u64) -> Cluster {
        let cfg = Arc::new(Config { shards, ..cfg });
        let brokers = (0..shards)
            .map(|id| new_broker(id, shards, &cfg, now_ms))
            .collect();
        Cluster {
            brokers,
            disk: None,
            cfg,
            bus: (0..shards * shards).map(|_| VecDeque::new()).collect(),
            keys: Vec::new(),
            chaos: true,
            late_bus: false,
            hold_from: None,
            answered: Vec::new(),
            unplaced: Vec::new(),
            placed_clean: Vec::new(),
            settle_tokens: 0,
            ledgers: (0..shards).map(|_| ShareLedger::default()).collect(),
            share_placed: Vec::new(),
            moved_off_durably: Vec::new(),
            share_restored: Vec::new(),
        }
    }

    /// `shards` brokers with persistence on, each shard's log on `disk` (its background
    /// work run by hand: [`Cluster::background`]), started from what `disk` holds.
    pub fn with_store(
        shards: usize,
        cfg: Config,
        now_ms: u64,
        disk: crate::store::SimDisk,
    ) -> Result<Cluster, String> {
        let mut c = Cluster::new(shards, cfg, now_ms);
        c.disk = Some(disk);
        c.start_store(now_ms)?;
        Ok(c)
    }

    /// Recover the store, lay it out for this shard count, attach each shard's journal
    /// and restore its part (as `main::open_store` and `event_loop::open_journal` do).
    fn start_store(&mut self, now_ms: u64) -> Result<(), String> {
        use crate::store::{self, Background, CheckpointPolicy, SyncMode, Wal, WalOptions};
        let Some(disk) = self.disk.clone() else {
            return Ok(());
        };
        let data = std::path::Path::new(SIM_DATA_DIR);
        let n = self.brokers.len();
        let shard_of = |s: &str| crate::broker::home_shard(s, n);
        let rec = store::recover_parts_on(&disk, data, n, shard_of, shard_of)
            .map_err(|e| e.to_string())?;
        let parts = rec.parts;
        let retained: Vec<_> = parts
            .iter()
            .flat_map(|p| {
                p.retained.iter().filter_map(|(t, r)| {
                    let m = p.messages.get(&r.msg?)?.clone();
                    Some((t.clone(), m, r.stamp, r.source.clone()))
                })
            })
            .collect();
        store::install_on(&disk, data, &parts).map_err(|e| e.to_string())?;
        let opts = WalOptions {
            segment_bytes_max: SIM_SEGMENT_BYTES,
            sync: SyncMode::Always,
            checkpoint: CheckpointPolicy {
                log_bytes_max: SIM_CHECKPOINT_BYTES,
                interval_s: 0,
            },
            background: Background::Manual,
        };
        for (id, part) in parts.into_iter().enumerate() {
            let dir = store::layout::shard_dir(data, id);
            let wal = Wal::open_on(Arc::new(disk.clone()), &dir, opts, || {})
                .map_err(|e| e.to_string())?;
            let unix = SIM_UNIX_EPOCH_MS;
            let j = crate::broker::journal::Journal::new(wal, part, n, unix);
            self.brokers[id].attach_journal(j);
            self.brokers[id].restore_from_journal(&retained, now_ms);
        }
        // Every shard knows every restored interest and share-group membership before
        // any runs (as `event_loop`).
        let interest: Vec<crate::broker::RestoredInterest> =
            self.brokers.iter().map(Broker::restored_interest).collect();
        for b in &mut self.brokers {
            for (from, filters) in interest.iter().enumerate() {
                b.learn_restored_interest(from, filters);
            }
        }
        for i in 0..n {
            self.push_outbox(i);
        }
        self.ledgers_from_restore();
        Ok(())
    }

    /// Start every shard's ledger from the shared deliveries its sessions restored.
    fn ledgers_from_restore(&mut self) {
        self.share_restored.clear();
        for (i, b) in self.brokers.iter().enumerate() {
            let mut ledger = ShareLedger::default();
            for sess in b.sessions().filter(|x| x.logged) {
                let held = sess
                    .inflight()
                    .iter()
                    .map(|f| &f.out)
                    .chain(sess.queue.iter());
                for out in held.filter(|o| o.share.is_some() && o.sid != 0) {
                    if let Some(key) = parse_payload(&out.msg.payload) {
                        ledger.placed(&sess.client_id, out.sid, key);
                        self.share_restored.push((sess.client_id.to_string(), key));
                    }
                }
            }
            if let Some(l) = self.ledgers.get_mut(i) {
                *l = ledger;
            }
        }
    }

    /// Whether the shards log to a simulated disk.
    pub fn persistent(&self) -> bool {
        self.disk.is_some()
    }

    /// Shard `i`'s log does background work: a sync (`sync`) or a checkpoint write.
    pub fn background(&mut self, i: usize, sync: bool) -> bool {
        self.brokers
            .get_mut(i)
            .is_some_and(|b| b.journal_background(sync))
    }

    /// Power fails: every shard dies at once, the disk forgets what was not synced, every
    /// connection breaks; then the broker starts again from the disk at `now_ms`.
    pub fn power_cut(&mut self, now_ms: u64, net: &mut Net) -> Result<(), String> {
        let Some(disk) = self.disk.clone() else {
            return Ok(());
        };
        let n = self.brokers.len();
        for i in 0..n {
            self.collect_shared(i);
        }
        self.moved_off_durably.clear();
        for (b, ledger) in self.brokers.iter().zip(&self.ledgers) {
            let durable = b.journal_durable_lsn().unwrap_or(0);
            self.moved_off_durably.extend(ledger.gone_durably(durable));
        }
        self.settle_tokens = self.settle_tokens();
        // Dropping a log writes its batch, which the power cut then forgets.
        self.brokers.clear();
        disk.power_cut();
        for q in &mut self.bus {
            q.clear();
        }
        for k in net.conns.iter_mut() {
            k.broken = true;
            k.closed = true;
            k.to_client.clear();
            k.to_broker.clear();
        }
        self.brokers = (0..n)
            .map(|id| new_broker(id, n, &self.cfg, now_ms))
            .collect();
        self.start_store(now_ms)
    }

    /// Client ids whose CONNACK went out (to the network, not yet read) since the last
    /// call: with persistence, each stored session must be durable by then.
    pub fn take_answered(&mut self) -> Vec<String> {
        std::mem::take(&mut self.answered)
    }

    /// Shared messages (publisher, sequence number) that found no member online, or that
    /// a session held when it ended, since the last call: owed to nobody.
    pub fn take_unplaced(&mut self) -> Vec<(usize, u32)> {
        std::mem::take(&mut self.unplaced)
    }

    /// Shared messages (publisher, sequence number) placed with a session that is not
    /// stored since the last call: a power cut after this loses them with the session.
    pub fn take_placed_clean(&mut self) -> Vec<(usize, u32)> {
        std::mem::take(&mut self.placed_clean)
    }

    /// Shared messages (client id, message) logged for a stored session since the last
    /// call: placed with that member (again).
    pub fn take_share_placed(&mut self) -> Vec<(String, MsgKey)> {
        std::mem::take(&mut self.share_placed)
    }

    /// (client id, message) that, at the last power cut, the log said had left that
    /// stored member for good: every delivery of it logged for the member was logged gone
    /// for a move to another member, and the shard's log was durable past those ends.
    pub fn take_moved_off_durably(&mut self) -> Vec<(String, MsgKey)> {
        std::mem::take(&mut self.moved_off_durably)
    }

    /// (client id, message) of every shared delivery the last restart restored.
    pub fn take_share_restored(&mut self) -> Vec<(String, MsgKey)> {
        std::mem::take(&mut self.share_restored)
    }

    /// Shared deliveries the shards forwarded on with a settle token, over the run.
    pub fn settle_tokens(&self) -> u64 {
        let now: u64 = self.brokers.iter().map(Broker::settle_tokens_issued).sum();
        self.settle_tokens + now
    }

    /// Move shard `i`'s records of shared messages (unplaced, placed with a clean
    /// session) into the cluster's lists.
    fn collect_shared(&mut self, i: usize) {
        let fx = self.brokers[i].effects();
        let key = |m: &Arc<crate::session::Message>| parse_payload(&m.payload);
        if let Some(v) = fx.share_unplaced.as_mut() {
            self.unplaced.extend(v.drain(..).filter_map(|m| key(&m)));
        }
        if let Some(v) = fx.share_clean.as_mut() {
            self.placed_clean
                .extend(v.drain(..).filter_map(|m| key(&m)));
        }
        let notes: Vec<ShareLogNote> = fx
            .share_log
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        let Some(ledger) = self.ledgers.get_mut(i) else {
            return;
        };
        for note in notes {
            match note {
                ShareLogNote::Placed { client, id, msg } => {
                    if let Some(k) = key(&msg) {
                        ledger.placed(&client, id.0, k);
                        self.share_placed.push((client.to_string(), k));
                    }
                }
                ShareLogNote::MovedOff { client, id, lsn } => ledger.moved_off(&client, id.0, lsn),
            }
        }
    }

    /// Whether client `id` has a session in what the disk would keep if the power failed
    /// now (recovered from a copy of its durable part). True without a simulated disk.
    pub fn session_durable(&self, id: &str) -> Result<bool, String> {
        let Some(disk) = &self.disk else {
            return Ok(true);
        };
        let copy = Arc::new(disk.durable_copy());
        let rec = crate::store::recover_all_on(copy, std::path::Path::new(SIM_DATA_DIR))
            .map_err(|e| e.to_string())?;
        Ok(rec.state.sessions.contains_key(id))
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.brokers.len()
    }

    /// Shard `shard` accepts connection `conn` (as `accept_all` → `adopt`).
    pub fn accept(&mut self, shard: usize, conn: ConnId, now_ms: u64) {
        self.adopt(shard, conn, Vec::new(), now_ms);
    }

    /// The earliest timer deadline of any shard.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.brokers.iter().filter_map(|b| b.next_timer_ms()).min()
    }

    /// True when no bus message waits and no shard has output or closes pending.
    pub fn idle(&mut self) -> bool {
        self.bus.iter().all(VecDeque::is_empty)
            && self.brokers.iter_mut().all(|b| {
                let fx = b.effects();
                if fx.has_dirty() || fx.has_closing() {
                    return false;
                }
                let links = b.links();
                links
                    .iter()
                    .all(|(k, _)| links.conn(k).is_none_or(|c| c.tx.is_empty()))
            })
    }

    /// Connected links per client id over all shards (a client id must have at most one).
    pub fn connected_ids(&self) -> BTreeMap<String, usize> {
        let mut ids = BTreeMap::new();
        for b in &self.brokers {
            for (_, l) in b.links().iter() {
                if let (LinkState::Connected, Some(id)) = (l.state, l.client_id.as_deref()) {
                    *ids.entry(id.to_string()).or_insert(0) += 1;
                }
            }
        }
        ids
    }

    /// Per shard: (sessions held, links open).
    pub fn census(&self) -> Vec<(usize, usize)> {
        self.brokers
            .iter()
            .map(|b| (b.session_count(), b.links().len()))
            .collect()
    }

    /// Deliveries any shard dropped for a full session queue.
    pub fn dropped_queue(&mut self) -> u64 {
        self.brokers
            .iter_mut()
            .map(|b| b.effects().stats.dropped_queue)
            .sum()
    }

    /// One turn of shard `i`, in `event_loop::Shard::turn`'s order.
    pub fn turn(&mut self, i: usize, now_ms: u64, net: &mut Net, rng: &mut Source) {
        if i >= self.brokers.len() {
            return;
        }
        // Due timers run first, before the bus and the reads (`Broker::begin_turn`).
        self.brokers[i].begin_turn(now_ms);
        self.drain_bus(i, now_ms, net, rng);
        self.writable_edges(i, rng);
        let keys: Vec<usize> = self.brokers[i].links().iter().map(|(k, _)| k).collect();
        for key in keys {
            if !self.chaos || rng.chance(700) {
                self.read(i, key, now_ms, net, rng);
            }
        }
        self.brokers[i].journal_end_turn(now_ms);
        self.push_outbox(i);
        self.flush_dirty(i, now_ms, net, rng);
        self.close_pending(i, now_ms, net);
        self.push_outbox(i);
        self.flush_dirty(i, now_ms, net, rng);
        // After the closes too: a session ending there may take shared messages with it.
        self.collect_shared(i);
    }

    fn drain_bus(&mut self, i: usize, now_ms: u64, net: &mut Net, rng: &mut Source) {
        let n = self.brokers.len();
        let held = self.hold_from;
        for from in (0..n).filter(|&f| f != i && Some(f) != held) {
            // Sometimes a short budget, so a turn reads sockets with messages still queued.
            let budget = if self.chaos && rng.chance(125) {
                rng.range(u64::from(!self.late_bus), 4) as usize
            } else {
                DRAIN_PER_PEER_MAX
            };
            for _ in 0..budget {
                let Some(msg) = self.bus[from * n + i].pop_front() else {
                    break;
                };
                match msg {
                    SimMsg::Cast(c) => self.brokers[i].on_cast(c, now_ms),
                    SimMsg::Handoff { conn, rx } => {
                        if net.conns.get(conn).is_some_and(|c| !c.closed) {
                            self.adopt(i, conn, rx, now_ms);
                        }
                    }
                }
            }
        }
    }

    /// A socket with output waiting reports writable again (not always at once; a link
    /// already queued for flushing is not queued twice).
    fn writable_edges(&mut self, i: usize, rng: &mut Source) {
        let b = &mut self.brokers[i];
        let waiting: Vec<usize> = b
            .links()
            .iter()
            .filter(|&(k, _)| b.links().conn(k).is_some_and(|c| !c.tx.is_empty()))
            .map(|(k, _)| k)
            .collect();
        for key in waiting {
            if !self.chaos || rng.chance(500) {
                b.writable(key);
            }
        }
    }

    fn adopt(&mut self, i: usize, conn: ConnId, rx: Vec<u8>, now_ms: u64) {
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, (conn % 65_536) as u16));
        let pending = !rx.is_empty();
        let io = Io {
            conn,
            rx,
            answered: false,
        };
        let key = self.brokers[i].accept(peer, io, now_ms);
        if pending {
            self.ingest(i, key, now_ms);
        }
    }

    /// Read what the "kernel" returns (a random prefix of what arrived) and decode it.
    fn read(&mut self, i: usize, key: usize, now_ms: u64, net: &mut Net, rng: &mut Source) {
        let b = &mut self.brokers[i];
        if b.output_full(key) {
            return;
        }
        let Some(c) = b.links_mut().conn_mut(key) else {
            return;
        };
        let Some(conn) = net.conns.get_mut(c.io.conn) else {
            return;
        };
        if conn.broken {
            b.close_link(key);
            return;
        }
        if conn.to_broker.is_empty() {
            return;
        }
        let n = if self.chaos {
            rng.range(1, conn.to_broker.len() as u64) as usize
        } else {
            conn.to_broker.len()
        };
        c.io.rx.extend(conn.to_broker.drain(..n));
        self.ingest(i, key, now_ms);
    }

    /// Hand link `key`'s buffered input to the broker; keep the unconsumed tail.
    fn ingest(&mut self, i: usize, key: usize, now_ms: u64) {
        let b = &mut self.brokers[i];
        let Some(c) = b.links_mut().conn_mut(key) else {
            return;
        };
        let mut rx = std::mem::take(&mut c.io.rx);
        let (used, end) = b.ingest(key, &rx, now_ms);
        rx.drain(..used);
        match end {
            Ingested::Handoff(home) => self.handoff(i, key, home, rx),
            Ingested::More | Ingested::Close => {
                if let Some(c) = self.brokers[i].links_mut().conn_mut(key) {
                    c.io.rx = rx;
                }
            }
        }
    }

    /// Move link `key` to shard `home`, its unread bytes with it (`event_loop::handoff`).
    fn handoff(&mut self, i: usize, key: usize, home: usize, rest: Vec<u8>) {
        let n = self.brokers.len();
        let now = self.brokers[i].now_ms();
        let Some(io) = self.brokers[i].on_closed(key, now) else {
            return;
        };
        if let Some(q) = self.bus.get_mut(i * n + home) {
            q.push_back(SimMsg::Handoff {
                conn: io.conn,
                rx: rest,
            });
        }
    }

    fn push_outbox(&mut self, i: usize) {
        let n = self.brokers.len();
        let casts: Vec<(usize, Cast)> = self.brokers[i].effects().outbox.drain(..).collect();
        for (to, cast) in casts {
            if let Some(q) = self.bus.get_mut(i * n + to) {
                q.push_back(SimMsg::Cast(cast));
            }
        }
    }

    /// Flush every link written to (two rounds, as `flush_dirty`).
    fn flush_dirty(&mut self, i: usize, now_ms: u64, net: &mut Net, rng: &mut Source) {
        let mut keys = std::mem::take(&mut self.keys);
        for _ in 0..2 {
            self.brokers[i].effects().take_dirty(&mut keys);
            for &key in &keys {
                let room = if self.chaos && rng.chance(200) {
                    rng.range(0, 64) as usize
                } else {
                    FLUSH_BYTES_PER_TURN_MAX
                };
                self.flush_one(i, key, room, now_ms, net);
            }
            if !self.brokers[i].effects().has_dirty() {
                break;
            }
        }
        keys.clear();
        self.keys = keys;
    }

    fn flush_one(&mut self, i: usize, key: usize, room: usize, now_ms: u64, net: &mut Net) {
        let b = &mut self.brokers[i];
        let Some(c) = b.links_mut().conn_mut(key) else {
            return;
        };
        Effects::flushed(&mut c.link);
        if c.link.output_held() {
            // As `event_loop::flush_one`: nothing leaves until the broker releases it.
            return;
        }
        note_answer(c, &mut self.answered);
        let Some(conn) = net.conns.get_mut(c.io.conn) else {
            return;
        };
        let mut pipe = Pipe {
            out: &mut conn.to_client,
            room,
            broken: conn.broken,
        };
        match c.tx.flush_to(&mut pipe, FLUSH_BYTES_PER_TURN_MAX) {
            Ok(Flushed::All) => b.on_drained(key, now_ms),
            Ok(Flushed::Partial) => {}
            Err(_) => b.close_link(key),
        }
    }

    /// Close every link the broker marked: last bytes out, socket gone, state released.
    fn close_pending(&mut self, i: usize, now_ms: u64, net: &mut Net) {
        let mut keys = std::mem::take(&mut self.keys);
        let b = &mut self.brokers[i];
        while b.effects().has_closing() {
            b.effects().take_closing(&mut keys);
            for &key in &keys {
                if b.defer_close(key, now_ms) {
                    continue;
                }
                if let Some(c) = b.links_mut().conn_mut(key) {
                    note_answer(c, &mut self.answered);
                    if let Some(conn) = net.conns.get_mut(c.io.conn) {
                        let mut pipe = Pipe {
                            out: &mut conn.to_client,
                            room: FLUSH_BYTES_PER_TURN_MAX,
                            broken: conn.broken,
                        };
                        let _ = c.tx.flush_to(&mut pipe, FLUSH_BYTES_PER_TURN_MAX);
                    }
                }
                if let Some(io) = b.on_closed(key, now_ms) {
                    if let Some(conn) = net.conns.get_mut(io.conn) {
                        conn.closed = true;
                    }
                }
            }
        }
        keys.clear();
        self.keys = keys;
    }
}

/// Link `c` is about to write: if these are its first bytes after its CONNECT was taken
/// (the CONNACK), note its client id.
fn note_answer(c: &mut crate::broker::Conn<Io>, answered: &mut Vec<String>) {
    let after_connect = !matches!(
        c.link.state,
        LinkState::ExpectConnect | LinkState::AwaitAuth
    );
    if c.io.answered || c.tx.is_empty() || !after_connect {
        return;
    }
    c.io.answered = true;
    if let Some(id) = &c.link.client_id {
        answered.push(id.to_string());
    }
}
