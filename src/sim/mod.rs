#![forbid(unsafe_code)]
//! A deterministic simulation of the whole broker in one thread.
//!
//! Owns: a world of N shards (`driver`), simulated clients (`client`) over a simulated
//! network (`net`), a scheduler that picks, from one seeded stream of choices (`rng`),
//! what happens next (a shard's turn, a client reading what arrived or publishing, time
//! passing, a connection breaking, a clean disconnect, a client taking its own session
//! over), and the oracle (`oracle`) that checks the protocol's promises at the end.
//! Invariant: a run is a pure function of its seed (or fuzz input): no clock, no thread,
//! no OS randomness, no hash-order dependence; so a failing seed replays exactly. Must not
//! touch: sockets, threads, the wall clock. Only `driver` knows the broker's interface.
//!
//! A run: a chaotic phase of `steps` choices, then a settling phase (no more failures,
//! every client connects again, everything in flight is delivered), then one extra client
//! per shard reads that shard's retained store, then the oracle's checks.
//! `docs/simulation.md` says how to run many seeds and how to replay one.

pub mod client;
pub mod driver;
pub mod net;
pub mod oracle;
pub mod rng;

use std::fmt;

use client::{Client, Role};
use driver::{Cluster, MsgKey};
use net::Net;
use oracle::{Oracle, Sub};
use rng::Source;

use crate::config::Config;
use crate::protocol::{QoS, Version};

/// Rounds of the settling phase before the run is declared stuck.
const SETTLE_ROUNDS_MAX: usize = 2000;
/// A client's own publishes awaiting acknowledgement at most.
const OUTSTANDING_MAX: usize = 16;
/// Largest padding added to a payload, bytes.
const PADDING_BYTES_MAX: u64 = 300;
/// Largest single step of the clock, ms.
const TIME_STEP_MS_MAX: u64 = 3000;
/// Client ids tried to find one homed on a given shard (one in `shards` is).
const CHECKER_ID_TRIES_MAX: usize = 100_000;
/// Most recent events kept for a failure report.
const TRACE_EVENTS_MAX: usize = 40;
/// In a run with `share_reach`, one choice in this many is a share race
/// ([`World::share_race`]).
const SHARE_RACE_ONE_IN: u64 = 10;
/// Rounds (every shard turns and syncs, every client reads), at most, for a clean member
/// to connect and subscribe before a share race.
const SHARE_RACE_BACK_ROUNDS_MAX: usize = 6;
/// Turns of a clean member's shard, at most, to see its connection end in a share race.
const SHARE_RACE_CLOSE_TURNS_MAX: usize = 3;

/// How big a run is.
#[derive(Debug, Clone, Copy)]
pub struct SimConfig {
    /// Choices made in the chaotic phase.
    pub steps: u64,
    /// Shards at most (each seed picks 1..=this).
    pub shards_max: usize,
    /// Clients at most (each seed picks 3..=this).
    pub clients_max: usize,
    /// Print every event to stderr as it happens (for replaying one seed).
    pub verbose: bool,
    /// Persistence on, each shard's log on a simulated disk, and power cuts in the chaos:
    /// the whole broker dies, the disk forgets what was not synced, the broker restarts
    /// from it (see docs/simulation.md).
    pub power_cuts: bool,
    /// Share-group members may be clean sessions (the second in 40% of the share-group
    /// runs, the first in 15%): moves and forwards then meet a member that is gone.
    pub clean_members: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            steps: 400,
            shards_max: 4,
            clients_max: 7,
            verbose: false,
            power_cuts: false,
            clean_members: false,
        }
    }
}

/// What a successful run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Shards simulated.
    pub shards: usize,
    /// Clients simulated (checkers excluded).
    pub clients: usize,
    /// Messages published.
    pub published: usize,
    /// PUBLISH packets clients received.
    pub delivered: usize,
    /// Connections opened.
    pub connections: usize,
    /// A digest of everything clients saw, in order: equal for equal seeds.
    pub digest: u64,
    /// Power cuts simulated.
    pub power_cuts: usize,
    /// Shared deliveries forwarded on with a settle token (persistence only).
    pub settle_tokens: u64,
    /// (member, message) pairs a power cut found moved away from that stored member for
    /// good, durably: each must not reach the member again (the oracle's `moved_off`).
    pub moved_off_bans: usize,
}

/// A run that broke a promise (or got stuck).
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed, when the run came from one.
    pub seed: Option<u64>,
    /// What went wrong, first first.
    pub violations: Vec<String>,
    /// The last events before the end.
    pub trace: Vec<String>,
    /// The run simulated power cuts (its replay needs `SHARDMQ_SIM_POWER=1`).
    pub power: bool,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seed {
            Some(s) => writeln!(f, "simulation seed {s} failed:")?,
            None => writeln!(f, "simulation failed:")?,
        }
        for v in &self.violations {
            writeln!(f, "  - {v}")?;
        }
        writeln!(f, "last events:")?;
        for t in &self.trace {
            writeln!(f, "  {t}")?;
        }
        if let Some(s) = self.seed {
            let power = if self.power {
                "SHARDMQ_SIM_POWER=1 "
            } else {
                ""
            };
            writeln!(f, "replay: {power}{}", replay_command(s))?;
        }
        Ok(())
    }
}

/// The command that replays `seed` exactly.
pub fn replay_command(seed: u64) -> String {
    format!("SHARDMQ_SIM_SEED={seed} cargo test --test sim -- --nocapture")
}

/// Run the simulation for `seed`.
pub fn run_seed(seed: u64, cfg: &SimConfig) -> Result<Summary, Failure> {
    let mut w = World::new(Source::seeded(seed), cfg);
    w.run(cfg.steps).map_err(|mut f| {
        f.seed = Some(seed);
        f
    })
}

/// The fuzz entry point: the fuzzer's bytes are the schedule. Panics on a broken promise.
pub fn fuzz_schedule(data: &[u8]) {
    let cfg = SimConfig::default();
    let mut w = World::new(Source::bytes(data), &cfg);
    // The schedule ends where the input does; a short input is a short run.
    let steps = (data.len() as u64 / 2).min(cfg.steps * 4);
    if let Err(f) = w.run(steps) {
        panic!("{f}");
    }
}

/// Everything in one simulated run.
struct World {
    rng: Source,
    cluster: Cluster,
    net: Net,
    clients: Vec<Client>,
    /// Per client: a connection that broke before CONNACK and the broker has not closed.
    stale: Vec<Option<net::ConnId>>,
    oracle: Oracle,
    now_ms: u64,
    step: u64,
    trace: std::collections::VecDeque<String>,
    digest: u64,
    verbose: bool,
    /// Power cuts so far.
    cuts: usize,
    /// Power cuts with clean share-group members: three members spread over at least two
    /// shards, a late bus, and share races in the schedule (docs/simulation.md).
    share_reach: bool,
}

/// FNV-1a over `bytes`, continuing from `h`.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl World {
    fn new(mut rng: Source, cfg: &SimConfig) -> World {
        // With power cuts and clean members: a share group always, three members homed
        // on different shards (at least two), members at QoS 1 or 2, a bus that is
        // sometimes late, and share races, so moves and publishes meet members gone on
        // another shard (the forwards with settle tokens of docs/persistence.md,
        // "Share-group moves").
        let share_reach = cfg.power_cuts && cfg.clean_members;
        let shards_min = if share_reach { 2 } else { 1 };
        let shards_max = cfg.shards_max.max(shards_min);
        let shards = rng.range(shards_min as u64, shards_max as u64) as usize;
        let n = rng.range(3, cfg.clients_max.max(3) as u64) as usize;
        let share = rng.chance(500) || share_reach;
        let members = if share_reach { 3 } else { 2 };
        let clean_members = cfg.clean_members;
        let mut clients: Vec<Client> = (0..n)
            .map(|i| make_client(i, n, (share, members), clean_members, share_reach, &mut rng))
            .collect();
        if share_reach {
            for (i, c) in clients.iter_mut().take(members).enumerate() {
                c.id = id_homed(&c.id, i % shards, shards);
            }
        }
        let config = Config {
            verbose: false,
            ..Config::default()
        };
        let mut cluster = if cfg.power_cuts {
            // An empty simulated disk always starts; anything else is a bug worth a panic.
            Cluster::with_store(shards, config, 0, crate::store::SimDisk::default())
                .unwrap_or_else(|e| panic!("simulated store failed to start: {e}"))
        } else {
            Cluster::new(shards, config, 0)
        };
        cluster.late_bus = share_reach;
        World {
            rng,
            cluster,
            net: Net::default(),
            stale: vec![None; clients.len()],
            clients,
            oracle: Oracle::default(),
            now_ms: 0,
            step: 0,
            trace: std::collections::VecDeque::new(),
            digest: 0xcbf2_9ce4_8422_2325,
            verbose: cfg.verbose,
            cuts: 0,
            share_reach,
        }
    }

    fn log(&mut self, event: String) {
        if self.trace.len() == TRACE_EVENTS_MAX {
            self.trace.pop_front();
        }
        let line = format!("[{} t={}ms] {event}", self.step, self.now_ms);
        if self.verbose {
            eprintln!("{line}");
        }
        self.trace.push_back(line);
    }

    fn run(&mut self, steps: u64) -> Result<Summary, Failure> {
        for _ in 0..steps {
            if self.rng.exhausted() {
                break;
            }
            self.step += 1;
            if self.cluster.persistent() {
                self.store_step()?;
            } else {
                self.chaos_step();
            }
        }
        self.settle()?;
        self.check_retained()?;
        let subs = self.subscriptions();
        self.oracle.check_end(&subs);
        self.check_connections();
        if !self.oracle.violations.is_empty() {
            return Err(self.failure(Vec::new()));
        }
        Ok(Summary {
            shards: self.cluster.shards(),
            clients: self
                .clients
                .iter()
                .filter(|c| c.role != Role::Checker)
                .count(),
            published: self.oracle.msgs.len(),
            delivered: self.oracle.deliveries.len(),
            connections: self.net.conns.len(),
            digest: self.digest,
            power_cuts: self.cuts,
            settle_tokens: self.cluster.settle_tokens(),
            moved_off_bans: self.oracle.moved_off_bans,
        })
    }

    fn failure(&self, mut extra: Vec<String>) -> Failure {
        let mut violations = self.oracle.violations.clone();
        violations.append(&mut extra);
        Failure {
            seed: None,
            violations,
            trace: self.trace.iter().cloned().collect(),
            power: self.cluster.persistent(),
        }
    }

    /// One choice of the chaotic phase.
    fn chaos_step(&mut self) {
        let pick = self.rng.below(100);
        self.chaos_pick(pick);
    }

    fn chaos_pick(&mut self, pick: u64) {
        let c = self.rng.index(self.clients.len());
        match pick {
            0..=29 => {
                let s = self.rng.index(self.cluster.shards());
                self.shard_turn(s);
            }
            30..=54 => self.client_read(c),
            55..=69 => self.publish(c),
            70..=79 => self.connect(c),
            80..=81 => self.break_conn(c),
            82..=83 => self.disconnect(c),
            84 => self.take_over(c),
            85..=89 => self.advance_time(),
            _ => self.drain_abandoned(),
        }
    }

    /// One choice of the chaotic phase with persistence on: the usual choices, a shard's
    /// log syncing or writing a checkpoint, or (rarely) a power cut.
    fn store_step(&mut self) -> Result<(), Failure> {
        if self.share_reach && self.rng.below(SHARE_RACE_ONE_IN) == 0 {
            self.share_race();
            return Ok(());
        }
        let pick = self.rng.below(130);
        if pick < 100 {
            // The same weights as `chaos_step`, from this draw.
            self.chaos_pick(pick);
            return Ok(());
        }
        let s = self.rng.index(self.cluster.shards());
        match pick {
            100..=121 => {
                if self.cluster.background(s, true) {
                    self.log(format!("shard {s}'s log syncs"));
                }
            }
            122..=127 => {
                if self.cluster.background(s, false) {
                    self.log(format!("shard {s}'s checkpoint is written"));
                }
            }
            // With `share_reach`, half as many cuts: the races need connected members.
            128 if self.share_reach => {
                let c = self.rng.index(self.clients.len());
                self.publish(c);
            }
            _ => self.power_cut()?,
        }
        Ok(())
    }

    /// One turn of shard `s`. With persistence, every CONNACK it wrote to a client of a
    /// stored session must find that session durable already: were the power to fail now,
    /// the session the client was told exists would be there after the restart.
    fn shard_turn(&mut self, s: usize) {
        self.cluster
            .turn(s, self.now_ms, &mut self.net, &mut self.rng);
        self.take_shared_records();
        for id in self.cluster.take_answered() {
            let stored = self.clients.iter().any(|c| c.id == id && !c.clean);
            if !stored {
                continue;
            }
            match self.cluster.session_durable(&id) {
                Ok(true) => {}
                Ok(false) => self.oracle.violation(format!(
                    "{id} was sent a CONNACK before its session's record was durable"
                )),
                Err(e) => self
                    .oracle
                    .violation(format!("recovering the durable store failed: {e}")),
            }
        }
    }

    /// The broker's records of shared messages owed to nobody, and of those placed with
    /// clean sessions (owed to nobody once a power cut follows).
    fn take_shared_records(&mut self) {
        let unplaced = self.cluster.take_unplaced();
        let clean = self.cluster.take_placed_clean();
        let placed = self.cluster.take_share_placed();
        if self.verbose {
            self.log_shared_records(&unplaced, &clean, &placed);
        }
        self.oracle.share_unplaced.extend(unplaced);
        self.oracle.share_clean.extend(clean);
        for (id, key) in placed {
            if let Some(c) = self.client_of(&id) {
                self.oracle.share_placed(c, key);
            }
        }
    }

    /// With `SHARDMQ_SIM_VERBOSE`: the broker's records of shared messages, as events (what
    /// the oracle's share-group exemptions and bans are made of).
    fn log_shared_records(
        &mut self,
        unplaced: &[MsgKey],
        clean: &[MsgKey],
        placed: &[(String, MsgKey)],
    ) {
        for k in unplaced {
            self.log(format!("broker: {}:{} routed with no member online, or ended with a session (owed to nobody)", k.0, k.1));
        }
        for k in clean {
            self.log(format!(
                "broker: {}:{} placed with a clean member",
                k.0, k.1
            ));
        }
        for (id, k) in placed {
            self.log(format!(
                "broker: {}:{} logged for stored member {id}",
                k.0, k.1
            ));
        }
    }

    /// The index of the client with id `id`.
    fn client_of(&self, id: &str) -> Option<usize> {
        self.clients.iter().position(|c| c.id == id)
    }

    /// Power fails and comes back: the broker restarts from what its disk kept.
    fn power_cut(&mut self) -> Result<(), Failure> {
        self.cuts += 1;
        self.log(format!("power cut {}", self.cuts));
        if let Err(e) = self.cluster.power_cut(self.now_ms, &mut self.net) {
            return Err(self.failure(vec![format!("restart after a power cut failed: {e}")]));
        }
        self.take_shared_records();
        self.oracle.power_cut();
        // What the log had moved away from a stored member for good before the cut must
        // not come back to it: not restored, not delivered.
        for (id, key) in self.cluster.take_moved_off_durably() {
            if let Some(c) = self.client_of(&id) {
                self.oracle.moved_off_durably(c, key);
            }
        }
        for (id, key) in self.cluster.take_share_restored() {
            if let Some(c) = self.client_of(&id) {
                self.oracle.share_restored(c, key);
            }
        }
        for c in 0..self.clients.len() {
            self.stale[c] = None;
            self.clients[c].power_cut();
            self.disrupted(c);
        }
        Ok(())
    }

    fn connect(&mut self, c: usize) {
        if self.clients[c].conn.is_some() {
            return;
        }
        // A connection that broke before its CONNACK may still have its CONNECT read and
        // handed to the home shard; arriving after a newer one, it would rightly take the
        // session over and replay older publishes. The client waits for the broker to
        // close it, as a client backing off would.
        if let Some(old) = self.stale[c] {
            if self.net.conns.get(old).is_some_and(|k| !k.closed) {
                return;
            }
            self.stale[c] = None;
        }
        let conn = self.net.open(c);
        let shard = self.rng.index(self.cluster.shards());
        self.log(format!(
            "client {c} connects (conn {conn}) via shard {shard}"
        ));
        self.cluster.accept(shard, conn, self.now_ms);
        self.clients[c].connect(conn, self.step, &mut self.net, &mut self.oracle);
    }

    fn client_read(&mut self, c: usize) {
        let Some(conn) = self.clients[c].conn else {
            return;
        };
        let Some(k) = self.net.conns.get_mut(conn) else {
            return;
        };
        if k.to_client.is_empty() {
            if k.closed {
                self.log(format!("client {c} sees conn {conn} closed"));
                self.clients[c].will_due(&mut self.oracle);
                self.clients[c].lost();
                self.disrupted(c);
            }
            return;
        }
        let n = if self.cluster.chaos {
            self.rng.range(1, k.to_client.len() as u64) as usize
        } else {
            k.to_client.len()
        };
        let bytes: Vec<u8> = k.to_client.drain(..n).collect();
        if self.verbose {
            let what = describe(&bytes);
            self.log(format!("client {c} reads {what}"));
        }
        let before = self.oracle.deliveries.len();
        self.digest = fnv(fnv(self.digest, &(c as u64).to_be_bytes()), &bytes);
        self.clients[c].receive(&bytes, self.step, &mut self.net, &mut self.oracle);
        if self.verbose {
            let seen: Vec<String> = self.oracle.deliveries[before..]
                .iter()
                .map(|d| {
                    format!(
                        "client {c} gets {}:{} at {:?}{}{} on conn {conn}",
                        d.publisher,
                        d.seq,
                        d.qos,
                        if d.retain { " retained" } else { "" },
                        if d.app { "" } else { " (repeat)" }
                    )
                })
                .collect();
            for line in seen {
                self.log(line);
            }
        }
    }

    fn publish(&mut self, c: usize) {
        let cl = &self.clients[c];
        if cl.conn.is_none() || cl.outstanding() >= OUTSTANDING_MAX || cl.role == Role::Checker {
            return;
        }
        let (topic, qos, retain) = if self.rng.chance(150) {
            (format!("r/{c}"), QoS::AtLeastOnce, true)
        } else {
            let qos = match self.rng.below(3) {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                _ => QoS::ExactlyOnce,
            };
            (format!("t/{c}"), qos, false)
        };
        self.publish_on(c, topic, qos, retain);
    }

    /// Client `c` (connected) publishes its next message on `topic`.
    fn publish_on(&mut self, c: usize, topic: String, qos: QoS, retain: bool) {
        let padding = self.rng.below(PADDING_BYTES_MAX + 1) as usize;
        self.log(format!("client {c} publishes on {topic} at {qos:?}"));
        let cl = &mut self.clients[c];
        cl.publish(
            topic,
            qos,
            retain,
            padding,
            self.step,
            &mut self.net,
            &mut self.oracle,
        );
    }

    fn break_conn(&mut self, c: usize) {
        let Some(conn) = self.clients[c].conn else {
            return;
        };
        self.log(format!("network of client {c} fails (conn {conn})"));
        if !self.clients[c].connected {
            self.stale[c] = Some(conn);
        }
        self.net.break_conn(conn);
        self.clients[c].will_due(&mut self.oracle);
        self.clients[c].lost();
        self.disrupted(c);
    }

    /// A client gives a connection up (DISCONNECT, or a takeover) only once it has seen
    /// CONNACK on it: before that its CONNECT may still be on its way to the session's home
    /// shard and would, arriving late, legitimately take over the newer connection.
    fn may_give_up(&self, c: usize) -> bool {
        self.clients[c].conn.is_some() && self.clients[c].connected
    }

    fn disconnect(&mut self, c: usize) {
        if !self.may_give_up(c) {
            return;
        }
        self.log(format!("client {c} sends DISCONNECT"));
        self.clients[c].disconnect(&mut self.net);
        self.disrupted(c);
    }

    /// The client connects again while its old connection is still open.
    fn take_over(&mut self, c: usize) {
        let Some(old) = self.clients[c].conn.filter(|_| self.may_give_up(c)) else {
            return;
        };
        self.log(format!("client {c} takes its session over from conn {old}"));
        if let Some(k) = self.net.conns.get_mut(old) {
            k.abandoned = true;
        }
        self.clients[c].will_due(&mut self.oracle);
        self.clients[c].lost();
        self.disrupted(c);
        self.connect(c);
    }

    fn disrupted(&mut self, c: usize) {
        if matches!(self.clients[c].role, Role::Member { .. }) {
            self.oracle.member_disrupted = true;
        }
    }

    /// A share race (runs with `share_reach`): a clean member's connection ends while
    /// messages for the group are on their way to it. Its shard closes it (the session
    /// ends) and tells the others; but before that news drains, shards of other clients
    /// route their QoS 1/2 publishes to the group, or move a stored member's deliveries
    /// as it goes offline, on their older view, where the clean member is still online.
    /// What they send it reaches its shard after its session ended, which forwards it on
    /// to another member, or back to the member it was moved from: the settle tokens of
    /// `docs/persistence.md`. Every step is one the schedule could take on its own (the
    /// bus being late is a drain that finds the ring from that shard empty); the race
    /// only takes them in this order. With no clean member online, one connects.
    fn share_race(&mut self) {
        let shards = self.cluster.shards();
        let home = |w: &World, c: usize| crate::broker::home_shard(&w.clients[c].id, shards);
        let live: Vec<usize> = (0..self.clients.len())
            .filter(|&c| {
                let cl = &self.clients[c];
                matches!(cl.role, Role::Member { .. }) && cl.clean && cl.connected && cl.subscribed
            })
            .collect();
        if live.is_empty() {
            self.share_race_member_back();
            return;
        }
        let c = live[self.rng.index(live.len())];
        let y = home(self, c);
        let others: Vec<usize> = (0..self.clients.len())
            .filter(|&a| a != c && self.clients[a].connected && home(self, a) != y)
            .collect();
        if others.is_empty() {
            return;
        }
        self.log(format!("share race: clean member {c} on shard {y} leaves"));
        let mut routing = Vec::new();
        for _ in 0..self.rng.range(1, 3) {
            let a = others[self.rng.index(others.len())];
            let cl = &self.clients[a];
            let stored_member = matches!(cl.role, Role::Member { .. }) && !cl.clean;
            if cl.conn.is_none() {
                continue;
            }
            if stored_member && self.rng.chance(300) {
                self.break_conn(a);
            } else if cl.outstanding() < OUTSTANDING_MAX {
                let qos = if self.rng.chance(500) {
                    QoS::AtLeastOnce
                } else {
                    QoS::ExactlyOnce
                };
                self.publish_on(a, format!("t/{a}"), qos, false);
            }
            routing.push(home(self, a));
        }
        routing.dedup();
        let old = self.clients[c].conn;
        if self.rng.chance(500) {
            self.break_conn(c);
        } else {
            self.disconnect(c);
        }
        for _ in 0..SHARE_RACE_CLOSE_TURNS_MAX {
            self.shard_turn(y);
            if old.is_none_or(|k| self.net.conns.get(k).is_none_or(|k| k.closed)) {
                break;
            }
        }
        for x in routing {
            self.cluster.hold_from = Some(y);
            self.shard_turn(x);
            self.shard_turn(x);
            self.cluster.hold_from = None;
        }
        self.shard_turn(y);
    }

    /// No clean member is online for a share race: one connects (if it has no
    /// connection), and the shards turn, syncing, and the clients read, until it has its
    /// SUBACK ([`SHARE_RACE_BACK_ROUNDS_MAX`] rounds at most).
    fn share_race_member_back(&mut self) {
        let clean: Vec<usize> = (0..self.clients.len())
            .filter(|&c| matches!(self.clients[c].role, Role::Member { .. }))
            .filter(|&c| self.clients[c].clean)
            .collect();
        if clean.is_empty() {
            return;
        }
        let c = clean[self.rng.index(clean.len())];
        self.connect(c);
        for _ in 0..SHARE_RACE_BACK_ROUNDS_MAX {
            for s in 0..self.cluster.shards() {
                self.shard_turn(s);
                self.cluster.background(s, true);
            }
            for k in 0..self.clients.len() {
                self.client_read(k);
            }
            let cl = &self.clients[c];
            if cl.conn.is_none() || (cl.connected && cl.subscribed) {
                return;
            }
        }
    }

    fn advance_time(&mut self) {
        let by = if self.rng.chance(300) {
            self.cluster
                .next_deadline_ms()
                .map_or(1, |d| d.saturating_sub(self.now_ms).max(1))
        } else {
            self.rng.range(1, TIME_STEP_MS_MAX)
        };
        self.now_ms += by.min(60_000);
        self.log(format!("clock +{by} ms"));
    }

    /// Abandoned connections are read and what arrives is ignored.
    fn drain_abandoned(&mut self) {
        for i in 0..self.net.conns.len() {
            let k = &mut self.net.conns[i];
            if !k.abandoned || k.to_client.is_empty() {
                continue;
            }
            let bytes = std::mem::take(&mut k.to_client);
            if self.verbose {
                let what = describe(&bytes);
                self.log(format!("abandoned conn {i} drops {what}"));
            }
        }
    }

    /// Stop the chaos; let every client connect and everything in flight arrive.
    fn settle(&mut self) -> Result<(), Failure> {
        self.cluster.chaos = false;
        self.log("settling".to_string());
        for _ in 0..SETTLE_ROUNDS_MAX {
            for c in 0..self.clients.len() {
                self.connect(c);
            }
            for s in 0..self.cluster.shards() {
                self.shard_turn(s);
                // The log's threads keep up while the run settles.
                while self.cluster.background(s, true) || self.cluster.background(s, false) {}
            }
            self.drain_abandoned();
            for c in 0..self.clients.len() {
                self.client_read(c);
            }
            if self.settled() {
                return Ok(());
            }
        }
        Err(self.failure(vec![format!(
            "did not settle in {SETTLE_ROUNDS_MAX} rounds: {}",
            self.unsettled()
        )]))
    }

    fn settled(&mut self) -> bool {
        self.net.quiet() && self.cluster.idle() && self.unsettled().is_empty()
    }

    /// Which clients still wait for something, for the report.
    fn unsettled(&self) -> String {
        let mut out = String::new();
        for cl in &self.clients {
            let wants_sub = cl.role.subscription().is_some() && !cl.subscribed;
            if !cl.connected || cl.outstanding() > 0 || wants_sub {
                out.push_str(&format!(
                    "client {} (connected {}, outstanding {}, subscribed {}); ",
                    cl.index,
                    cl.connected,
                    cl.outstanding(),
                    cl.subscribed
                ));
            }
        }
        out
    }

    /// One checker per shard, homed there, reads its retained replica.
    fn check_retained(&mut self) -> Result<(), Failure> {
        let shards = self.cluster.shards();
        let first = self.clients.len();
        for s in 0..shards {
            let id = (0..CHECKER_ID_TRIES_MAX)
                .map(|i| format!("k{s}-{i}"))
                .find(|id| crate::broker::home_shard(id, shards) == s)
                .unwrap_or_default();
            self.clients
                .push(Client::new(first + s, id, Version::V5, Role::Checker, 0));
            self.stale.push(None);
        }
        self.settle()?;
        for s in 0..shards {
            self.oracle.check_retained(first + s, s);
        }
        Ok(())
    }

    /// The subscriptions the oracle checks.
    fn subscriptions(&self) -> Vec<Sub> {
        self.clients
            .iter()
            .filter_map(|cl| match &cl.role {
                Role::Subscriber { filter, qos } => Some(Sub {
                    client: cl.index,
                    filter: filter.clone(),
                    qos: *qos,
                    shared: false,
                    clean: cl.clean,
                }),
                Role::Watcher => Some(Sub {
                    client: cl.index,
                    filter: "w/#".to_string(),
                    qos: QoS::AtLeastOnce,
                    shared: false,
                    clean: cl.clean,
                }),
                Role::Member { qos } => Some(Sub {
                    client: cl.index,
                    filter: "t/#".to_string(),
                    qos: *qos,
                    shared: true,
                    clean: cl.clean,
                }),
                _ => None,
            })
            .collect()
    }

    /// Nothing leaks: with every client connected and nothing in flight, each shard holds
    /// exactly one session and one link per client homed there (clean sessions that ended
    /// are gone, handed-over and closed connections left no link behind).
    fn check_census(&mut self) {
        let shards = self.cluster.shards();
        let mut want = vec![0usize; shards];
        for cl in &self.clients {
            want[crate::broker::home_shard(&cl.id, shards)] += 1;
        }
        for (s, (&n, (sessions, links))) in want.iter().zip(self.cluster.census()).enumerate() {
            if sessions != n || links != n {
                self.oracle.violation(format!(
                    "shard {s} holds {sessions} sessions and {links} links for {n} clients"
                ));
            }
        }
    }

    /// Takeover: each client id has one connection at the end, and every connection its
    /// client gave up on was closed by the broker.
    fn check_connections(&mut self) {
        for (id, n) in self.cluster.connected_ids() {
            if n > 1 {
                self.oracle
                    .violation(format!("client id {id} has {n} connected links"));
            }
        }
        let open: Vec<usize> = (0..self.net.conns.len())
            .filter(|&i| {
                let k = &self.net.conns[i];
                k.abandoned && k.is_open()
            })
            .collect();
        for i in open {
            self.oracle.violation(format!(
                "conn {i} was taken over but the broker kept it open"
            ));
        }
        self.check_census();
        if self.cluster.dropped_queue() > 0 {
            self.oracle.violation(format!(
                "{} deliveries dropped for full queues (the run is too big for its limits)",
                self.cluster.dropped_queue()
            ));
        }
    }
}

/// Client `i` of `n`: the first `members` are share-group members when `share`; with
/// `clean_members`, each after the first is a clean session in 40% of those runs and the
/// first in 15% (a clean member's session ends with each connection: moves and bounces
/// then meet a member that is gone).
fn make_client(
    i: usize,
    n: usize,
    (share, members): (bool, usize),
    clean_members: bool,
    reach: bool,
    rng: &mut Source,
) -> Client {
    let version = match rng.below(3) {
        0 => Version::V3_1,
        1 => Version::V3_1_1,
        _ => Version::V5,
    };
    let qos = if rng.chance(200) {
        QoS::AtMostOnce
    } else if rng.chance(500) {
        QoS::AtLeastOnce
    } else {
        QoS::ExactlyOnce
    };
    let role = if share && i < members {
        // With `reach`, never QoS 0: a QoS 0 delivery is neither logged nor moved.
        let qos = if reach && qos == QoS::AtMostOnce {
            QoS::AtLeastOnce
        } else {
            qos
        };
        Role::Member { qos }
    } else if rng.chance(120) {
        Role::Watcher
    } else if rng.chance(250) {
        Role::Publisher
    } else {
        let filter = match rng.below(3) {
            0 => "t/#".to_string(),
            1 => "t/+".to_string(),
            _ => format!("t/{}", rng.below(n as u64)),
        };
        Role::Subscriber { filter, qos }
    };
    let keep_alive = if rng.chance(200) { 5 } else { 0 };
    let clean = match (&role, i) {
        (Role::Member { .. }, _) if !clean_members => false,
        // With `reach`, the second member is always clean: the races need one.
        (Role::Member { .. }, 1) if reach => true,
        (Role::Member { .. }, 0) => rng.chance(150),
        (Role::Member { .. }, _) => rng.chance(400),
        _ => rng.chance(300),
    };
    let mut c = Client::new(i, format!("c{i}"), version, role, keep_alive);
    c.clean = clean;
    c.has_will = rng.chance(300);
    c
}

/// A client id for `base` homed on `shard` of `shards`: `base` itself if it is, else the
/// first `base-k` that is.
fn id_homed(base: &str, shard: usize, shards: usize) -> String {
    (0..CHECKER_ID_TRIES_MAX)
        .map(|k| match k {
            0 => base.to_string(),
            k => format!("{base}-{k}"),
        })
        .find(|id| crate::broker::home_shard(id, shards) == shard)
        .unwrap_or_else(|| base.to_string())
}

/// The packets in `bytes` as far as they decode whole (for verbose traces).
fn describe(bytes: &[u8]) -> String {
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok(crate::protocol::Decoded::Packet { packet, len }) =
        crate::protocol::decode(&bytes[at..], Version::V5, usize::MAX)
    {
        at += len;
        match &packet {
            crate::protocol::Packet::Publish(p) => match client::parse_payload(p.payload) {
                Some((who, seq)) => out.push(format!("PUBLISH {who}:{seq}")),
                None => out.push("PUBLISH ?".to_string()),
            },
            other => out.push(other.name().to_string()),
        }
    }
    if at < bytes.len() {
        out.push(format!("{} more bytes", bytes.len() - at));
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A world of `shards` shards with persistence on and the given clients, scripted by
    /// hand (no chaos: every read, write and drain takes all it can).
    fn scripted(shards: usize, clients: Vec<Client>) -> World {
        let cfg = SimConfig {
            power_cuts: true,
            ..SimConfig::default()
        };
        let mut w = World::new(Source::seeded(0), &cfg);
        let config = Config {
            verbose: false,
            ..Config::default()
        };
        w.cluster = Cluster::with_store(shards, config, 0, crate::store::SimDisk::default())
            .unwrap_or_else(|e| panic!("simulated store: {e}"));
        w.cluster.chaos = false;
        w.stale = vec![None; clients.len()];
        w.clients = clients;
        w
    }

    /// Shard `s` takes a turn (its log writes its batch), without syncing.
    fn turn(w: &mut World, s: usize) {
        w.cluster.turn(s, w.now_ms, &mut w.net, &mut w.rng);
    }

    /// Rounds that settle a scripted step: a CONNECT handed to its home shard, its CONNACK
    /// held until the session's record syncs, then a SUBSCRIBE or PUBLISH and its held ack.
    const SETTLE_ROUNDS: usize = 10;

    /// Every shard turns and syncs, every client reads, [`SETTLE_ROUNDS`] times (more
    /// than enough for nothing to move any more).
    fn rounds(w: &mut World) {
        for _ in 0..SETTLE_ROUNDS {
            for s in 0..w.cluster.shards() {
                turn(w, s);
                while w.cluster.background(s, true) {}
            }
            for c in 0..w.clients.len() {
                w.client_read(c);
            }
        }
    }

    fn finish(mut w: World) -> Vec<String> {
        w.settle().unwrap_or_else(|f| panic!("{f}"));
        let subs = w.subscriptions();
        w.oracle.check_end(&subs);
        w.oracle.violations.clone()
    }

    /// A world of `shards` shards where `watcher` (client 0) has subscribed, then `dying`
    /// (client 1, with a Will owed to the watcher) has connected and had a publish
    /// acknowledged; the next step is the caller's.
    fn a_watched_will(shards: usize, watcher: Client, mut dying: Client) -> World {
        dying.has_will = true;
        let mut w = scripted(shards, vec![watcher, dying]);
        w.connect(0);
        rounds(&mut w);
        assert!(w.clients[0].subscribed, "the watcher's SUBACK");
        // The Will is owed to a watcher subscribed before its CONNECT was sent.
        w.step += 1;
        w.connect(1);
        rounds(&mut w);
        w.publish(1);
        rounds(&mut w);
        assert_eq!(
            w.clients[1].outstanding(),
            0,
            "the publisher is connected and acknowledged"
        );
        w.step += 1;
        w
    }

    /// A persistent session's client takes its session over: the old connection's Will
    /// is due. Its CONNECT record was durable (its CONNACK arrived), so a power cut right
    /// after the takeover's records are durable must not lose that Will.
    #[test]
    fn a_will_due_at_a_takeover_survives_a_power_cut() {
        let watcher = Client::new(0, "c0".into(), Version::V3_1_1, Role::Watcher, 0);
        let dying = Client::new(1, "c1".into(), Version::V3_1_1, Role::Publisher, 0);
        let mut w = a_watched_will(1, watcher, dying);
        w.take_over(1);
        // The new CONNECT is read and its session record written; the old connection's
        // Will must be logged before that record (it was once published only when the old
        // link closed, at the end of the turn, its delivery in the next batch).
        turn(&mut w, 0);
        while w.cluster.background(0, true) {}
        w.power_cut().unwrap_or_else(|f| panic!("{f}"));
        let violations = finish(w);
        assert!(violations.is_empty(), "{violations:?}");
    }

    /// After a power cut a shard may route a client's first publishes before it has
    /// drained the restored interest of the other shards from its rings: the connection
    /// was handed over by a third shard, whose ring it drains first. Every restored
    /// interest is known on every shard before any runs, so the subscriber gets them.
    #[test]
    fn a_publish_right_after_a_restart_reaches_a_restored_subscriber() {
        let sub = Role::Subscriber {
            filter: "t/#".into(),
            qos: QoS::AtLeastOnce,
        };
        let subscriber = Client::new(0, id_on(2, 3), Version::V5, sub, 0);
        let publisher = Client::new(1, id_on(1, 3), Version::V5, Role::Publisher, 0);
        let mut w = scripted(3, vec![subscriber, publisher]);
        w.connect(0);
        rounds(&mut w);
        assert!(w.clients[0].subscribed, "the subscriber's SUBACK");
        w.power_cut().unwrap_or_else(|f| panic!("{f}"));
        w.step += 1;
        // The publisher connects through shard 0 and publishes at once: shard 1 reads its
        // PUBLISH when it drains the handoff from shard 0, before shard 2's ring.
        let conn = w.net.open(1);
        w.cluster.accept(0, conn, w.now_ms);
        let (step, net, oracle) = (w.step, &mut w.net, &mut w.oracle);
        w.clients[1].connect(conn, step, net, oracle);
        let topic = "t/1".to_string();
        w.clients[1].publish(topic, QoS::AtLeastOnce, false, 0, step, net, oracle);
        turn(&mut w, 0);
        turn(&mut w, 1);
        let violations = finish(w);
        assert!(violations.is_empty(), "{violations:?}");
    }

    /// A client id homed on `shard` of `shards`.
    fn id_on(shard: usize, shards: usize) -> String {
        (0..CHECKER_ID_TRIES_MAX)
            .map(|i| format!("x{i}"))
            .find(|id| crate::broker::home_shard(id, shards) == shard)
            .unwrap_or_default()
    }

    /// A persistent session's connection breaks: its Will goes to a watcher homed on
    /// another shard, and the session is logged without it. That record is durable before
    /// the watcher's shard has even read the Will: a power cut then must not lose it.
    #[test]
    fn a_will_sent_to_another_shard_survives_a_power_cut() {
        let watcher = Client::new(0, id_on(0, 2), Version::V5, Role::Watcher, 0);
        let dying = Client::new(1, id_on(1, 2), Version::V3_1_1, Role::Publisher, 0);
        let mut w = a_watched_will(2, watcher, dying);
        w.break_conn(1);
        // Shard 1 sees the broken connection and closes it: the Will is cast to shard 0
        // and the session's record appended; its next turn writes them, then they sync.
        turn(&mut w, 1);
        turn(&mut w, 1);
        while w.cluster.background(1, true) {}
        w.power_cut().unwrap_or_else(|f| panic!("{f}"));
        let violations = finish(w);
        assert!(violations.is_empty(), "{violations:?}");
    }

    /// A clean session's (3.1.1, Clean Session 1) Will, due when its network fails: the
    /// broker publishes it to a watcher on another shard, and the power is cut before any
    /// of that is durable. Its CONNACK waited for the Will's own record (`WillArmed`), so
    /// it is owed across the cut: recovery publishes it.
    #[test]
    fn a_clean_sessions_will_due_before_a_power_cut_survives_it() {
        let watcher = Client::new(0, id_on(0, 2), Version::V5, Role::Watcher, 0);
        let mut dying = Client::new(1, id_on(1, 2), Version::V3_1_1, Role::Publisher, 0);
        dying.clean = true;
        let mut w = a_watched_will(2, watcher, dying);
        w.break_conn(1);
        turn(&mut w, 1);
        turn(&mut w, 1);
        w.power_cut().unwrap_or_else(|f| panic!("{f}"));
        let violations = finish(w);
        assert!(violations.is_empty(), "{violations:?}");
    }

    /// The Will of client 1's current connection.
    fn last_will(w: &World) -> u32 {
        w.oracle
            .msgs
            .iter()
            .filter(|((p, _), m)| *p == 1 && m.will)
            .map(|((_, seq), _)| *seq)
            .next_back()
            .expect("client 1 connected with a Will")
    }

    /// Whether watcher 0 got client 1's Will `seq`.
    fn watcher_got(w: &World, seq: u32) -> bool {
        w.oracle
            .deliveries
            .iter()
            .any(|d| d.client == 0 && d.publisher == 1 && d.seq == seq)
    }

    /// A clean session's connection is open when the power fails: the crash counts as its
    /// end, so recovery publishes its Will (logged at CONNECT).
    #[test]
    fn a_clean_sessions_will_is_published_after_a_crash_while_connected() {
        let watcher = Client::new(0, id_on(0, 2), Version::V5, Role::Watcher, 0);
        let mut dying = Client::new(1, id_on(1, 2), Version::V5, Role::Publisher, 0);
        dying.clean = true;
        let mut w = a_watched_will(2, watcher, dying);
        let seq = last_will(&w);
        assert!(!watcher_got(&w, seq), "not yet: the connection is open");
        w.power_cut().unwrap_or_else(|f| panic!("{f}"));
        w.settle().unwrap_or_else(|f| panic!("{f}"));
        assert!(
            watcher_got(&w, seq),
            "Will 1:{seq} published after the restart"
        );
    }

    /// Where watcher 0 first got client 1's Will `seq`, among its deliveries.
    fn watcher_got_at(w: &World, seq: u32) -> Option<usize> {
        w.oracle
            .deliveries
            .iter()
            .filter(|d| d.client == 0)
            .position(|d| d.publisher == 1 && d.seq == seq)
    }

    /// A clean client takes its session over: its old connection's Will is published
    /// (pending) and its new connection's Will armed, both durable on the client's shard,
    /// and the power fails before the watcher's shard has logged the first Will's
    /// delivery. Recovery publishes both, the older first: it once published every armed
    /// Will before every pending one, and the watcher got the newer Will first (power
    /// seed 3,563, "client 6 got 1:4 after 1:7: publisher order broken").
    #[test]
    fn a_clean_clients_two_wills_published_by_recovery_keep_their_order() {
        let watcher = Client::new(0, id_on(0, 2), Version::V5, Role::Watcher, 0);
        let mut dying = Client::new(1, id_on(1, 2), Version::V3_1_1, Role::Publisher, 0);
        dying.clean = true;
        let mut w = a_watched_will(2, watcher, dying);
        let old = last_will(&w);
        w.take_over(1);
        let new = last_will(&w);
        assert!(new > old, "the new connection has its own Will");
        // Shard 0 hands the new CONNECT over if it came in there; shard 1 takes the
        // session over, publishes the old Will to shard 0 and arms the new one, and only
        // its log syncs.
        turn(&mut w, 0);
        turn(&mut w, 1);
        turn(&mut w, 1);
        while w.cluster.background(1, true) {}
        w.power_cut().unwrap_or_else(|f| panic!("{f}"));
        w.settle().unwrap_or_else(|f| panic!("{f}"));
        let (at_old, at_new) = (watcher_got_at(&w, old), watcher_got_at(&w, new));
        assert!(at_old.is_some() && at_new.is_some(), "both Wills published");
        assert!(at_old < at_new, "Will 1:{old} first, then 1:{new}");
        let subs = w.subscriptions();
        w.oracle.check_end(&subs);
        assert!(w.oracle.violations.is_empty(), "{:?}", w.oracle.violations);
    }

    /// A stored session's client takes its session over: its old connection's Will is
    /// published (pending) and the new connection's Will goes into the session's record,
    /// both durable on the client's shard (1 of 3), and the power fails before the
    /// watcher's shard (2) has logged the first Will's delivery. At the restart both are
    /// due: the old one pending, the new one from the session record (the crash ended its
    /// connection). Recovery once put every pending Will in shard 0's part, so shard 0
    /// published the old Will while shard 1's timer published the new one: the client's
    /// shard turning first, and the watcher's shard draining its ring first, the watcher
    /// got the newer Will first [MQTT-4.6.0-5]. The pending Will names its client now, and
    /// its home shard publishes it before its session timers run.
    #[test]
    fn a_stored_clients_pending_will_goes_out_before_its_session_will_after_a_restart() {
        let watcher = Client::new(0, id_on(2, 3), Version::V5, Role::Watcher, 0);
        let dying = Client::new(1, id_on(1, 3), Version::V3_1_1, Role::Publisher, 0);
        let mut w = a_watched_will(3, watcher, dying);
        let old = last_will(&w);
        w.take_over(1);
        let new = last_will(&w);
        assert!(new > old, "the new connection has its own Will");
        // Shard 0 or 2 hands the new CONNECT over if it came in there; shard 1 takes the
        // session over, publishes the old Will to shard 2 and logs the session with the
        // new one, and only its log syncs.
        turn(&mut w, 0);
        turn(&mut w, 2);
        turn(&mut w, 1);
        turn(&mut w, 1);
        while w.cluster.background(1, true) {}
        w.power_cut().unwrap_or_else(|f| panic!("{f}"));
        // The client's shard turns first (its timer publishes the session's Will), then
        // the watcher's shard, which drains what shard 1 sent before shard 0 has turned.
        turn(&mut w, 1);
        turn(&mut w, 2);
        w.settle().unwrap_or_else(|f| panic!("{f}"));
        let (at_old, at_new) = (watcher_got_at(&w, old), watcher_got_at(&w, new));
        assert!(at_old.is_some() && at_new.is_some(), "both Wills published");
        assert!(at_old < at_new, "Will 1:{old} first, then 1:{new}");
        let subs = w.subscriptions();
        w.oracle.check_end(&subs);
        assert!(w.oracle.violations.is_empty(), "{:?}", w.oracle.violations);
    }

    /// A clean session ends with DISCONNECT: its Will is discarded, and a power cut after
    /// that is durable does not bring it back.
    #[test]
    fn a_clean_will_discarded_by_disconnect_stays_discarded_after_a_power_cut() {
        let watcher = Client::new(0, id_on(0, 2), Version::V5, Role::Watcher, 0);
        let mut dying = Client::new(1, id_on(1, 2), Version::V3_1_1, Role::Publisher, 0);
        dying.clean = true;
        let mut w = a_watched_will(2, watcher, dying);
        let seq = last_will(&w);
        w.disconnect(1);
        rounds(&mut w);
        w.power_cut().unwrap_or_else(|f| panic!("{f}"));
        w.settle().unwrap_or_else(|f| panic!("{f}"));
        assert!(
            !watcher_got(&w, seq),
            "Will 1:{seq} was discarded by the DISCONNECT"
        );
    }
}
