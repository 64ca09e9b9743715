//! The bridges a shard runs: their sockets, timers and actions.
//!
//! Owns: for each bridge whose name hashes to this shard (`bridge_owner`), the sans-IO client
//! (`bridge::Bridge`), its outgoing TCP stream (registered with the shard's poll under
//! `token_base + 2 × slot`) and its probe stream (`+ 1`). Each turn, [`Bridges::step`]
//! offers the messages the broker routed to these bridges, reads and writes their
//! sockets, runs their timers and performs their actions; a message a bridge brings in is
//! published through the broker with the bridge's origin, and acknowledged to the remote
//! only once the broker has accepted it.
//!
//! Invariants: a stream is registered with the poll exactly while it is held here; the
//! bridge is told of every connection's end (`socket_closed`) exactly once; every wait is
//! the bridge's own deadline (`next_deadline_ms`). Must not touch: MQTT semantics of the
//! broker (it calls `Broker::publish_from_bridge`), client connections, other shards.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::bridge_tls::{self, Stream};
use super::conn::ConnIo;
use crate::bridge::{Action, Bridge, Clock, InboundAck, Limits, LocalPublish, Offered, Restored};
use crate::broker::bridges::{bridge_owner, origin_bridge, Inbound};
use crate::broker::Broker;
use crate::config::bridge::{Address, BridgeConfig};
use crate::config::Config;
use crate::log::log;
use crate::metrics::{BridgeFigures, LISTS_INTERVAL_MS};
use crate::protocol::QoS;
use crate::store::{BridgeOp, BridgeState};

/// Bytes read from one bridge socket per turn.
const READ_BYTES_PER_TURN_MAX: usize = 256 * 1024;
/// Bytes written to one bridge socket per turn.
const WRITE_BYTES_PER_TURN_MAX: usize = 4 * 1024 * 1024;
/// Actions performed per bridge per turn (a bridge's actions are few; this only bounds a
/// bug).
const ACTIONS_PER_TURN_MAX: usize = 4096;
/// Bytes the bridge may hold unwritten before it holds queued messages back.
const OUT_BYTES_MAX: usize = 1024 * 1024;
/// Poll tokens per bridge: its connection and its probe.
pub const TOKENS_PER_BRIDGE: usize = 2;

/// One running bridge.
struct Run {
    /// Its index in the configuration (origin tag).
    index: usize,
    /// Its id on this shard (held inbound acknowledgements name it).
    uid: usize,
    name: String,
    /// Its block, to tell a changed one at a reload.
    cfg: BridgeConfig,
    /// Its client id on the local broker (`local_clientid`): the key of its stored
    /// forwarding state, as Mosquitto keeps a bridge's queue in that client's session.
    local_id: String,
    /// A refused local publish was logged (once per run).
    refusal_logged: bool,
    bridge: Bridge,
    /// TLS client settings, when the bridge has `bridge_cafile`.
    tls: Option<Arc<rustls::ClientConfig>>,
    sock: Option<Stream>,
    /// `sock` is a connect in progress (no `socket_connected` yet).
    connecting: bool,
    probe: Option<TcpStream>,
    /// Poll events since the last step: the socket, the probe.
    sock_ready: bool,
    probe_ready: bool,
    /// The read budget ran out: read again next turn.
    read_again: bool,
    /// Inbound acknowledgements the log holds until the local publish is durable, oldest
    /// first (released one per `Effects::bridge_acks` entry).
    held_acks: VecDeque<InboundAck>,
}

/// This shard's bridges.
pub struct Bridges {
    runs: Vec<Run>,
    token_base: usize,
    scratch: Vec<u8>,
    /// When the figures were last published to the metrics board, and the `up` states
    /// they showed (a change is published at once).
    figures_at_ms: u64,
    figures_up: Vec<bool>,
    /// When the bridges' `$SYS` topics were last published.
    sys_at_ms: u64,
    /// `$SYS` interval, ms (0: off).
    sys_interval_ms: u64,
    /// This shard's index.
    shard: usize,
    /// This machine's host name (default client ids).
    host: String,
    /// Back-off jitter seed.
    seed: u64,
    /// The last run id given (ids are never reused, so a released ack never reaches a
    /// bridge that replaced the one it was held for).
    next_uid: usize,
}

impl Bridges {
    /// The bridges of `cfg` that shard `shard` of `cfg.shards` runs, with their TLS
    /// settings from [`tls_configs`]; their tokens start at `token_base`.
    pub fn new(
        cfg: &Config,
        tls: &[TlsConfig],
        shard: usize,
        token_base: usize,
        now_ms: u64,
    ) -> Bridges {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut b = Bridges {
            runs: Vec::new(),
            token_base,
            scratch: vec![0; 64 * 1024],
            figures_at_ms: 0,
            figures_up: Vec::new(),
            sys_at_ms: now_ms,
            sys_interval_ms: u64::from(cfg.sys_interval_s) * 1000,
            shard,
            host: hostname(),
            seed,
            next_uid: 0,
        };
        for (index, c) in mine(cfg, shard) {
            let run = b.build(cfg, index, c, tls, now_ms);
            b.runs.push(run);
        }
        b
    }

    /// A new run for bridge `index` of `cfg`.
    fn build(
        &mut self,
        cfg: &Config,
        index: usize,
        c: &BridgeConfig,
        tls: &[TlsConfig],
        now_ms: u64,
    ) -> Run {
        let limits = Limits {
            max_inflight: cfg.max_inflight,
            packet_in_bytes_max: cfg.max_packet_size,
            out_bytes_max: OUT_BYTES_MAX,
        };
        self.next_uid += 1;
        let seed = self.seed ^ self.next_uid as u64;
        Run {
            index,
            uid: self.next_uid,
            name: c.name.clone(),
            cfg: c.clone(),
            local_id: c.local_client_id(&self.host),
            refusal_logged: false,
            bridge: Bridge::new(c, &self.host, limits, seed, now_ms),
            tls: tls.get(index).cloned().flatten(),
            sock: None,
            connecting: false,
            probe: None,
            sock_ready: false,
            probe_ready: false,
            read_again: false,
            held_acks: VecDeque::new(),
        }
    }

    /// A reload, between turns: keep each bridge whose block is unchanged; replace a
    /// changed one (same name, or renamed with the same `local_clientid`) by a new bridge
    /// with the new settings that carries the old one's queue and in-flight messages over
    /// (it disconnects and connects again); add new ones;
    /// retire removed ones (DISCONNECT, state topic 0) and drop their queues, logged.
    pub fn reconfigure(
        &mut self,
        broker: &mut Broker<ConnIo>,
        registry: &Registry,
        tls: &[TlsConfig],
        now: u64,
    ) {
        let cfg = broker.config().clone();
        self.sys_interval_ms = u64::from(cfg.sys_interval_s) * 1000;
        let mut old = std::mem::take(&mut self.runs);
        for (index, c) in mine(&cfg, self.shard) {
            // Same name, or a renamed block with the same local client id (its queue).
            let local_id = c.local_client_id(&self.host);
            let at = old.iter().position(|r| r.name == c.name);
            let at = at.or_else(|| old.iter().position(|r| r.local_id == local_id));
            let Some(at) = at else {
                log(format_args!("Bridge {}: added by the reload", c.name));
                let run = self.build(&cfg, index, c, tls, now);
                self.runs.push(run);
                continue;
            };
            let mut run = old.swap_remove(at);
            let tls_now = tls.get(index).cloned().flatten();
            if run.cfg == *c {
                run.index = index;
                run.tls = tls_now;
                self.runs.push(run);
                continue;
            }
            let mut held = run.retire(broker, registry, now);
            let mut fresh = self.build(&cfg, index, c, tls, now);
            hand_over(broker, &run, &fresh, &mut held, now);
            let n = held.messages.len();
            // Logged before the carry-over: its QoS 2 packets keep waiting for their records.
            fresh
                .bridge
                .set_logged(broker.logs_bridges() && !c.local_cleansession);
            let same_remote = run.cfg.same_remote(c, &self.host);
            fresh.bridge.carry_over(held, same_remote);
            log(format_args!(
                "Bridge {}: changed by the reload; reconnecting with the new settings, {n} message(s) carried over",
                c.name
            ));
            self.runs.push(fresh);
        }
        for mut run in old {
            let held = run.retire(broker, registry, now);
            for &seq in held.messages.keys() {
                broker.log_bridge(&run.local_id, BridgeOp::Done { seq });
            }
            for &packet_id in &held.inbound_held {
                broker.log_bridge(&run.local_id, BridgeOp::InboundReleased { packet_id });
            }
            log(format_args!(
                "Bridge {}: removed by the reload; {} queued message(s) dropped",
                run.name,
                held.messages.len()
            ));
        }
        self.retoken(registry);
        // Figures are published again at the next step (the list changed).
        self.figures_up.clear();
    }

    /// Register every kept socket under its (possibly new) slot's tokens.
    fn retoken(&mut self, registry: &Registry) {
        for (slot, run) in self.runs.iter_mut().enumerate() {
            let token = self.token_base + slot * TOKENS_PER_BRIDGE;
            let both = Interest::READABLE | Interest::WRITABLE;
            if let Some(s) = run.sock.as_mut() {
                let _ = registry.reregister(&mut s.tcp, Token(token), both);
            }
            if let Some(p) = run.probe.as_mut() {
                let _ = registry.reregister(p, Token(token + 1), both);
            }
            // Look at both again next step: an event may have come under the old token.
            run.sock_ready = run.sock.is_some();
            run.probe_ready = run.probe.is_some();
        }
    }

    /// No bridges (until [`Bridges::new`] replaces it).
    pub fn none(token_base: usize) -> Bridges {
        Bridges {
            runs: Vec::new(),
            token_base,
            scratch: Vec::new(),
            figures_at_ms: 0,
            figures_up: Vec::new(),
            sys_at_ms: 0,
            sys_interval_ms: 0,
            shard: 0,
            host: String::new(),
            seed: 0,
            next_uid: 0,
        }
    }

    /// Give each bridge its forwarding state recovered from the store (before the first
    /// turn): queued messages wait in order, sent ones are resent with DUP.
    /// A bridge with `local_cleansession true` keeps none of its stored messages (left by
    /// an earlier run without it): they are dropped, logged, and forgotten by the log.
    pub fn restore(
        &mut self,
        broker: &mut Broker<ConnIo>,
        mut stored: BTreeMap<String, BridgeState>,
        now_ms: u64,
    ) {
        for run in &mut self.runs {
            let Some(st) = stored.remove(&run.local_id) else {
                continue;
            };
            let mut held = Restored::from_state(&st, clock(now_ms));
            let n = held.messages.len();
            if run.cfg.local_cleansession {
                for &seq in held.messages.keys() {
                    broker.log_bridge(&run.local_id, BridgeOp::Done { seq });
                }
                held.messages.clear();
            }
            run.bridge.restore(held);
            if n > 0 {
                let what = if run.cfg.local_cleansession {
                    "dropped (local_cleansession true)"
                } else {
                    "restored from the store"
                };
                log(format_args!("Bridge {}: {n} message(s) {what}", run.name));
            }
        }
    }

    /// True when this shard runs no bridge.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Whether `token` is one of the bridges'; if so, note the event for the next step.
    pub fn event(&mut self, token: usize) -> bool {
        let Some(rel) = token.checked_sub(self.token_base) else {
            return false;
        };
        let Some(run) = self.runs.get_mut(rel / TOKENS_PER_BRIDGE) else {
            return false;
        };
        if rel % TOKENS_PER_BRIDGE == 0 {
            run.sock_ready = true;
        } else {
            run.probe_ready = true;
        }
        true
    }

    /// The earliest bridge deadline (shard clock, ms).
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.runs.iter().map(|r| r.bridge.next_deadline_ms()).min()
    }

    /// Some bridge has work left over from this turn (read budget): poll without sleeping.
    pub fn busy(&self) -> bool {
        self.runs.iter().any(|r| r.read_again)
    }

    /// One turn of every bridge: offers, input, timers, actions, output.
    pub fn step(&mut self, broker: &mut Broker<ConnIo>, registry: &Registry, now: u64) {
        let commits = broker.qos2_commits();
        if self.runs.is_empty() {
            return;
        }
        // Before the offers: a QoS 2 message already committed is sent at once.
        for run in &mut self.runs {
            run.bridge.learn_commits(now, commits);
        }
        for (uid, batch) in broker.take_bridge_durable() {
            if let Some(run) = self.runs.iter_mut().find(|r| r.uid == uid) {
                run.bridge.records_durable(now, batch);
            }
        }
        let logs = broker.logs_bridges();
        for run in &mut self.runs {
            run.bridge.set_logged(logs && !run.cfg.local_cleansession);
        }
        self.release_acks(broker, now);
        self.offer(broker, now);
        for slot in 0..self.runs.len() {
            let token = self.token_base + slot * TOKENS_PER_BRIDGE;
            let run = &mut self.runs[slot];
            run.poll_probe(now, registry);
            run.poll_sock(now, registry, &mut self.scratch);
            if now >= run.bridge.next_deadline_ms() {
                run.bridge.tick(now);
            }
            run.perform(broker, registry, Token(token), now);
        }
        // Messages the bridges just brought in may be for a sibling bridge here.
        self.offer(broker, now);
        for slot in 0..self.runs.len() {
            let token = Token(self.token_base + slot * TOKENS_PER_BRIDGE);
            let run = &mut self.runs[slot];
            run.flush(registry, now);
            // A write error ends the connection: the bridge's next move is acted on now.
            run.perform(broker, registry, token, now);
        }
        self.report(broker, now);
        self.log_records(broker, now);
    }

    /// Append every bridge's new forwarding records to this turn's batch (dropped with
    /// persistence off). Runs before the journal's end of turn, so the acknowledgement of
    /// a local publish queued here waits for its record.
    fn log_records(&mut self, broker: &mut Broker<ConnIo>, now: u64) {
        let logs = broker.logs_bridges();
        let mut at = None;
        for run in &mut self.runs {
            let records = run.bridge.take_records();
            let batch = run.bridge.record_batches();
            let any = !records.is_empty();
            for r in records {
                if logs {
                    let c = *at.get_or_insert_with(|| clock(now));
                    broker.log_bridge(&run.local_id, r.to_op(c));
                }
            }
            // The QoS 2 packets waiting for these records go once they are durable (and
            // those a reload carried over, for this batch even if it is empty).
            let wait = any || run.bridge.waits_for_batch(batch);
            if wait && !broker.hold_bridge_records(run.uid, batch) {
                run.bridge.records_durable(now, batch);
            }
        }
    }

    /// Pass on the inbound acknowledgements the log released (each is the oldest held one
    /// of its bridge).
    fn release_acks(&mut self, broker: &mut Broker<ConnIo>, now: u64) {
        for i in broker.take_bridge_acks() {
            let Some(run) = self.runs.iter_mut().find(|r| r.uid == i) else {
                continue;
            };
            if let Some(ack) = run.held_acks.pop_front() {
                run.bridge.local_accepted(now, ack);
            }
        }
    }

    /// Publish the figures to the metrics board (every `LISTS_INTERVAL_MS`, and at once on
    /// a state change) and, every `$SYS` interval, under `$SYS/broker/bridge/NAME/`.
    fn report(&mut self, broker: &mut Broker<ConnIo>, now: u64) {
        let up: Vec<bool> = self.runs.iter().map(|r| r.bridge.is_up()).collect();
        if up != self.figures_up || now >= self.figures_at_ms + LISTS_INTERVAL_MS {
            self.figures_at_ms = now;
            self.figures_up = up;
            let figures: Vec<BridgeFigures> = self.runs.iter().map(Run::figures).collect();
            if let Some(m) = broker.config().metrics.shard(broker.shard_id()) {
                m.bridges.store(Arc::new(figures));
            }
        }
        if self.sys_interval_ms == 0 || now < self.sys_at_ms + self.sys_interval_ms {
            return;
        }
        self.sys_at_ms = now;
        for run in &self.runs {
            let f = run.figures();
            let values = [
                ("queued", f.queued),
                ("inflight", f.inflight),
                ("messages/forwarded", f.forwarded),
                ("messages/received", f.received),
                ("messages/dropped", f.dropped.iter().sum()),
                ("connects", f.connects),
            ];
            for (leaf, v) in values {
                let topic = format!("$SYS/broker/bridge/{}/{leaf}", run.name);
                let payload = v.to_string();
                let m = Inbound {
                    topic: &topic,
                    payload: payload.as_bytes(),
                    qos: QoS::AtMostOnce,
                    retain: true,
                    props: None,
                    expiry_s: None,
                    from_remote: false,
                };
                // The bridge's own figures: always a valid topic.
                let _ = broker.publish_from_bridge(run.index, m, now);
            }
        }
    }

    /// Offer the messages the broker routed to this shard's bridges.
    fn offer(&mut self, broker: &mut Broker<ConnIo>, now: u64) {
        let offers = std::mem::take(&mut broker.effects().bridge_offers);
        for (i, msg) in &offers {
            let Some(run) = self.runs.iter_mut().find(|r| r.index == *i) else {
                continue;
            };
            let payload: Arc<[u8]> = Arc::from(&msg.payload[..]);
            let looped = origin_bridge(msg.origin) == Some(*i);
            let m = Offered {
                topic: &msg.topic,
                payload: &payload,
                qos: msg.qos,
                retain: msg.retain,
                props: msg.props.as_deref(),
                expires_at_ms: msg.expires_at_ms,
                txn: msg.txn,
            };
            run.bridge.offer_message(now, &m, looped);
        }
        let mut offers = offers;
        offers.clear();
        broker.effects().bridge_offers = offers;
    }
}

/// What a changed bridge (`old` → `new`) carries over, in the log. The stored state is
/// keyed by local client id: a new id moves it. A queue is in the log only without
/// `local_cleansession`: one that becomes clean is dropped (and forgotten), one that stops
/// being clean is written under the new key. Inbound QoS 2 ids (the remote session's
/// state) are always logged.
fn hand_over(broker: &mut Broker<ConnIo>, old: &Run, new: &Run, held: &mut Restored, now: u64) {
    let (from, to) = (old.local_id.as_str(), new.local_id.as_str());
    let moved = from != to;
    let (was_logged, to_log) = (!old.cfg.local_cleansession, !new.cfg.local_cleansession);
    if was_logged && (moved || !to_log) {
        for &seq in held.messages.keys() {
            broker.log_bridge(from, BridgeOp::Done { seq });
        }
    }
    if !to_log {
        held.messages.clear();
    } else if moved || !was_logged {
        let c = clock(now);
        for (&seq, (msg, packet_id, received)) in &held.messages {
            let enq = crate::bridge::Record::Enqueued {
                seq,
                msg: msg.clone(),
            };
            broker.log_bridge(to, enq.to_op(c));
            if let Some(packet_id) = *packet_id {
                broker.log_bridge(to, BridgeOp::Sent { seq, packet_id });
            }
            if *received {
                broker.log_bridge(to, BridgeOp::Received { seq });
            }
        }
    }
    if moved {
        for &packet_id in &held.inbound_held {
            broker.log_bridge(from, BridgeOp::InboundReleased { packet_id });
            broker.log_bridge(to, BridgeOp::InboundHeld { packet_id });
        }
    }
}

/// The bridges of `cfg` that shard `shard` runs, with their configuration index.
fn mine(cfg: &Config, shard: usize) -> impl Iterator<Item = (usize, &BridgeConfig)> + '_ {
    cfg.bridges
        .iter()
        .enumerate()
        .filter(move |(_, b)| bridge_owner(&b.name, cfg.shards) == shard)
}

impl Run {
    /// Stop this bridge for good: its last words to the remote are written (best effort),
    /// its sockets closed, and what it held is returned.
    fn retire(&mut self, broker: &mut Broker<ConnIo>, registry: &Registry, now: u64) -> Restored {
        let held = self.bridge.retire(now);
        // Only local publishes and logs are left to perform; no connect follows a retire.
        self.perform(broker, registry, Token(usize::MAX), now);
        self.flush(registry, now);
        self.drop_sock(registry);
        if let Some(mut p) = self.probe.take() {
            let _ = registry.deregister(&mut p);
        }
        held
    }

    fn figures(&self) -> BridgeFigures {
        let (queued, inflight) = self.bridge.depth();
        let st = self.bridge.stats();
        BridgeFigures {
            name: self.name.clone(),
            up: self.bridge.is_up(),
            queued: queued as u64,
            inflight: inflight as u64,
            forwarded: st.forwarded,
            received: st.received,
            dropped: [st.dropped_full, st.dropped_offline, st.dropped_too_large],
            loops_prevented: st.loops_prevented,
            connects: st.connects,
            failures: st.failures,
        }
    }

    /// A probe's connect finished (or failed): report it and drop the probe.
    fn poll_probe(&mut self, now: u64, registry: &Registry) {
        if !std::mem::take(&mut self.probe_ready) {
            return;
        }
        let Some(p) = self.probe.as_mut() else {
            return;
        };
        let Some(outcome) = connect_outcome(p) else {
            return;
        };
        if let Some(mut p) = self.probe.take() {
            let _ = registry.deregister(&mut p);
        }
        self.bridge.probe_result(now, outcome.is_ok());
    }

    /// Finish a connect, or read what arrived.
    fn poll_sock(&mut self, now: u64, registry: &Registry, scratch: &mut [u8]) {
        let ready = std::mem::take(&mut self.sock_ready) | std::mem::take(&mut self.read_again);
        if !ready {
            return;
        }
        let Some(s) = self.sock.as_mut() else {
            return;
        };
        if self.connecting {
            match connect_outcome(&s.tcp) {
                None => return,
                Some(Err(e)) => return self.lost(now, registry, &e.to_string()),
                Some(Ok(())) => {
                    self.connecting = false;
                    let _ = s.tcp.set_nodelay(true);
                    // With TLS, CONNECT waits in the client connection until the
                    // handshake is done; a handshake failure ends the socket.
                    self.bridge.socket_connected(now);
                }
            }
        }
        self.read(now, registry, scratch);
    }

    /// Read until WouldBlock or the budget, feeding the bridge.
    fn read(&mut self, now: u64, registry: &Registry, scratch: &mut [u8]) {
        let mut budget = READ_BYTES_PER_TURN_MAX;
        while let Some(s) = self.sock.as_mut() {
            if budget == 0 {
                self.read_again = true;
                return;
            }
            match s.read_plain(scratch) {
                Ok(0) => return self.lost(now, registry, "closed by the remote"),
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    self.bridge.receive(now, &scratch[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.lost(now, registry, &e.to_string()),
            }
        }
    }

    /// The connection ended under the bridge: tell it.
    fn lost(&mut self, now: u64, registry: &Registry, why: &str) {
        self.drop_sock(registry);
        self.bridge.socket_closed(now, why);
    }

    fn drop_sock(&mut self, registry: &Registry) {
        if let Some(mut s) = self.sock.take() {
            let _ = registry.deregister(&mut s.tcp);
            let _ = s.tcp.shutdown(std::net::Shutdown::Both);
        }
        self.connecting = false;
    }

    /// Carry out the bridge's actions.
    fn perform(
        &mut self,
        broker: &mut Broker<ConnIo>,
        registry: &Registry,
        token: Token,
        now: u64,
    ) {
        for _ in 0..ACTIONS_PER_TURN_MAX {
            let Some(action) = self.bridge.poll_action() else {
                return;
            };
            match action {
                Action::Connect(addr) => self.connect(&addr, registry, token, now),
                Action::Close => self.drop_sock(registry),
                Action::Probe(addr) => self.start_probe(&addr, registry, Token(token.0 + 1), now),
                Action::Local(p) => self.bring_in(broker, p, now),
                Action::State { up, detail } => log(format_args!(
                    "Bridge {} {}: {detail}",
                    self.name,
                    if up { "up" } else { "down" }
                )),
                Action::Log(text) => log(format_args!("Bridge {}: {text}", self.name)),
            }
        }
    }

    fn connect(&mut self, addr: &Address, registry: &Registry, token: Token, now: u64) {
        self.drop_sock(registry);
        let opened = open(addr, registry, token).and_then(|tcp| match &self.tls {
            Some(c) => Stream::tls(tcp, c.clone(), &addr.host),
            None => Ok(Stream::plain(tcp)),
        });
        match opened {
            Ok(s) => {
                self.sock = Some(s);
                self.connecting = true;
                // A connect that completed at once still gets its writable event.
            }
            Err(e) => {
                log(format_args!(
                    "Bridge {}: cannot connect to {addr}: {e}",
                    self.name
                ));
                self.bridge.socket_closed(now, &e.to_string());
            }
        }
    }

    fn start_probe(&mut self, addr: &Address, registry: &Registry, token: Token, now: u64) {
        if let Some(mut old) = self.probe.take() {
            let _ = registry.deregister(&mut old);
        }
        match open(addr, registry, token) {
            Ok(p) => self.probe = Some(p),
            Err(_) => self.bridge.probe_result(now, false),
        }
    }

    /// Publish a message from the remote locally; acknowledge it once accepted. A topic
    /// that is not a valid local topic name is dropped (and acknowledged, or the remote
    /// would resend it for ever).
    fn bring_in(&mut self, broker: &mut Broker<ConnIo>, p: LocalPublish, now: u64) {
        let m = Inbound {
            topic: &p.topic,
            payload: &p.payload,
            qos: p.qos,
            retain: p.retain,
            props: p.props,
            expiry_s: p.expiry_s,
            from_remote: p.from_remote,
        };
        if let Err(why) = broker.publish_from_bridge(self.index, m, now) {
            if !std::mem::replace(&mut self.refusal_logged, true) {
                log(format_args!(
                    "Bridge {}: dropped a message for '{}' ({why}; further ones are not logged)",
                    self.name, p.topic
                ));
            }
        }
        let Some(ack) = p.ack else {
            return;
        };
        if ack.qos() == QoS::ExactlyOnce {
            // In the same batch as the local publish: after a crash a resend is answered,
            // never brought in twice (the bridge's own later record repeats it harmlessly).
            let packet_id = ack.packet_id();
            broker.log_bridge(&self.local_id, BridgeOp::InboundHeld { packet_id });
        }
        if broker.hold_bridge_ack(self.uid) {
            self.held_acks.push_back(ack);
        } else {
            self.bridge.local_accepted(now, ack);
        }
    }

    /// Write the bridge's output until WouldBlock or the budget.
    fn flush(&mut self, registry: &Registry, now: u64) {
        if self.connecting {
            return;
        }
        if let Some(Err(e)) = self.sock.as_mut().map(Stream::flush_tls) {
            return self.lost(now, registry, &e.to_string());
        }
        let mut budget = WRITE_BYTES_PER_TURN_MAX;
        while budget > 0 && !self.connecting && !self.bridge.output().is_empty() {
            let Some(s) = self.sock.as_mut() else {
                return;
            };
            let out = self.bridge.output();
            let n = out.len().min(budget);
            match s.write_plain(&out[..n]) {
                Ok(0) => return self.lost(now, registry, "connection closed while writing"),
                Ok(n) => {
                    budget -= n;
                    self.bridge.consume(n, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.lost(now, registry, &e.to_string()),
            }
        }
    }
}

/// A bridge's TLS client settings (`None`: plain TCP).
pub type TlsConfig = Option<Arc<rustls::ClientConfig>>;

/// Every bridge's TLS client settings, built once at start-up (bridge `i` at index `i`);
/// the first bridge whose files cannot be used is an error naming it and its line.
pub fn tls_configs(cfg: &Config) -> Result<Vec<TlsConfig>, String> {
    cfg.bridges
        .iter()
        .map(|b| {
            bridge_tls::client_config(&b.tls)
                .map_err(|e| format!("connection '{}' (line {}): {e}", b.name, b.line))
        })
        .collect()
}

/// Start a non-blocking connect to `addr`, registered under `token`. The name is resolved
/// here (a blocking lookup for a host name; immediate for an IP address).
fn open(addr: &Address, registry: &Registry, token: Token) -> io::Result<TcpStream> {
    let to: SocketAddr = (addr.host.as_str(), addr.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address for the host"))?;
    let mut s = TcpStream::connect(to)?;
    registry.register(&mut s, token, Interest::READABLE | Interest::WRITABLE)?;
    Ok(s)
}

/// Where a non-blocking connect stands: `None` still in progress, else how it ended.
fn connect_outcome(s: &TcpStream) -> Option<io::Result<()>> {
    match s.take_error() {
        Ok(Some(e)) | Err(e) => return Some(Err(e)),
        Ok(None) => {}
    }
    match s.peer_addr() {
        Ok(_) => Some(Ok(())),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => None,
        Err(e) => Some(Err(e)),
    }
}

/// The shard clock `now_ms` with the wall clock now.
fn clock(now_ms: u64) -> Clock {
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Clock { now_ms, unix_ms }
}

/// This machine's host name (for the default client ids), or `localhost`.
pub fn hostname() -> String {
    crate::config::bridge::hostname()
}
