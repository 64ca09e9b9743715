//! One load thread: a mio poll loop over its share of the connections.
//!
//! Owns: opening connections with a bounded number of TCP handshakes in flight, dispatching
//! readiness to `client::Conn`, topping up publishers once per turn, flushing every dirty
//! connection once per turn (batched writes), keepalive pings, and the orderly
//! DISCONNECT at the end. It follows the phase set by the monitor in `Shared` and reports
//! its setup through `Shared::ready_threads`. Every loop is bounded: it exits on the STOP
//! phase, which the monitor always sets within its deadlines.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::client::{Conn, ConnSpec, Ctx, Params, Role, State};
use crate::stats::{phase, Shared};

/// Keepalive in seconds announced in CONNECT; pings go out at half of it.
pub const KEEP_ALIVE: u16 = 60;
/// Open-loop pacing granularity: the most a message waits for its scheduled send.
const OPEN_LOOP_TICK: Duration = Duration::from_micros(50);
/// At most this many errors are kept verbatim per thread.
const MAX_ERRORS: usize = 5;

/// What one thread hands back when it ends.
pub struct ThreadOut {
    /// End-to-end latency (ns) of the messages its subscribers received, or connect
    /// times (ns) in the storm scenario.
    pub hist: Histogram<u64>,
    /// Distinct deliveries counted by its subscribers.
    pub unique: u64,
    /// Duplicates seen by its subscribers.
    pub dups: u64,
    /// Sequence gaps seen by its subscribers.
    pub gaps: u64,
    /// Messages its subscribers received out of order (filling a gap).
    pub late: u64,
    /// (publisher id, messages sent) of its publishers.
    pub sent: Vec<(u32, u64)>,
    /// Windows forgiven after stalls.
    pub stalls: u64,
    /// Connections that failed or were closed.
    pub failures: u64,
    /// The first few error messages.
    pub errors: Vec<String>,
    /// Nanoseconds since the epoch when all its connections were set up.
    pub ready_ns: u64,
}

/// The event loop state of one thread.
struct Engine {
    poll: Poll,
    conns: Slab<Conn>,
    pending: VecDeque<ConnSpec>,
    concurrency: usize,
    handshaking: usize,
    ready: usize,
    total: usize,
    dirty: Vec<usize>,
    again: Vec<usize>,
    publishers: Vec<usize>,
    last_tick: Instant,
    params: Arc<Params>,
    shared: Arc<Shared>,
    out: ThreadOut,
    storm: bool,
    deadline: Instant,
}

/// Runs one load thread to completion: until the monitor sets STOP, and in any case no
/// later than `deadline`.
pub fn run(
    specs: Vec<ConnSpec>,
    params: Arc<Params>,
    shared: Arc<Shared>,
    concurrency: usize,
    storm: bool,
    deadline: Instant,
) -> ThreadOut {
    let hist = Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("static bounds");
    let out = ThreadOut {
        hist,
        unique: 0,
        dups: 0,
        gaps: 0,
        late: 0,
        sent: Vec::new(),
        stalls: 0,
        failures: 0,
        errors: Vec::new(),
        ready_ns: 0,
    };
    let poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            shared.failed.store(true, Ordering::Release);
            let mut out = out;
            out.errors.push(format!("poll: {e}"));
            return out;
        }
    };
    let mut engine = Engine {
        poll,
        conns: Slab::with_capacity(specs.len()),
        total: specs.len(),
        pending: specs.into(),
        concurrency: concurrency.max(1),
        handshaking: 0,
        ready: 0,
        dirty: Vec::new(),
        again: Vec::new(),
        publishers: Vec::new(),
        last_tick: Instant::now(),
        params,
        shared,
        out,
        storm,
        deadline,
    };
    engine.run_loop();
    engine.finish()
}

impl Engine {
    fn run_loop(&mut self) {
        let mut events = Events::with_capacity(1024);
        let mut reported = false;
        let mut last_ping = Instant::now();
        loop {
            let ph = self.shared.phase();
            if ph == phase::STOP || Instant::now() > self.deadline {
                break;
            }
            self.start_connects();
            let timeout = self.timeout(ph);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    self.error(format!("poll: {e}"));
                    break;
                }
            }
            for ev in events.iter() {
                self.on_event(ev.token().0, ev.is_readable(), ev.is_writable());
            }
            for key in std::mem::take(&mut self.again) {
                self.on_event(key, true, false);
            }
            if ph == phase::RUN {
                self.top_up();
            }
            self.flush_dirty();
            if !reported && self.pending.is_empty() && self.handshaking == 0 {
                reported = true;
                self.out.ready_ns = self.shared.now_ns();
                self.shared.ready_threads.fetch_add(1, Ordering::AcqRel);
            }
            if last_ping.elapsed() >= Duration::from_secs(u64::from(KEEP_ALIVE / 2)) {
                last_ping = Instant::now();
                self.ping_all();
            }
        }
    }

    fn timeout(&self, ph: u8) -> Duration {
        if !self.again.is_empty() {
            Duration::ZERO
        } else if ph == phase::RUN && !self.publishers.is_empty() {
            if self.params.rate_per_pub.is_some() {
                Duration::ZERO
            } else {
                Duration::from_millis(1)
            }
        } else {
            Duration::from_millis(5)
        }
    }

    fn start_connects(&mut self) {
        while self.handshaking < self.concurrency {
            let Some(spec) = self.pending.pop_front() else {
                return;
            };
            self.handshaking += 1;
            let conn = match Conn::open(spec, &self.params) {
                Ok(c) => c,
                Err(e) => {
                    self.handshaking -= 1;
                    self.error(format!("connect: {e}"));
                    continue;
                }
            };
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            let conn = entry.insert(conn);
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut conn.sock, Token(key), interest)
            {
                self.close(key, format!("register: {e}"));
            }
        }
    }

    fn on_event(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if writable {
            match conn.on_writable(&self.params) {
                Ok(true) => self.mark_dirty(key),
                Ok(false) => {}
                Err(e) => return self.close(key, e),
            }
        }
        if readable {
            self.on_readable(key);
        }
    }

    fn on_readable(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.state == State::Connecting {
            return;
        }
        let mut ctx = Ctx {
            params: &self.params,
            shared: &self.shared,
            hist: &mut self.out.hist,
            now_ns: 0,
        };
        let outcome = match conn.on_readable(&mut ctx) {
            Ok(o) => o,
            Err(e) => return self.close(key, e),
        };
        if outcome.connacked {
            self.shared.connected.fetch_add(1, Ordering::Relaxed);
            if self.storm {
                let ns = conn.started.elapsed().as_nanos() as u64;
                self.out.hist.saturating_record(ns.max(1));
            }
        }
        if outcome.became_ready {
            self.handshaking -= 1;
            self.ready += 1;
            if matches!(conn.spec.role, Role::Publisher { .. }) {
                self.publishers.push(key);
            }
        }
        if outcome.more {
            self.again.push(key);
        }
        if conn.wants_write() {
            self.mark_dirty(key);
        }
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Adds publishes to every ready publisher. Open loop spins but releases messages in
    /// ticks of `OPEN_LOOP_TICK`, so each write carries a batch rather than one message
    /// (timestamps stay the scheduled send times).
    fn top_up(&mut self) {
        let now = Instant::now();
        if self.params.rate_per_pub.is_some() {
            if now.duration_since(self.last_tick) < OPEN_LOOP_TICK {
                return;
            }
            self.last_tick = now;
        }
        let ctx = Ctx {
            params: &self.params,
            shared: &self.shared,
            hist: &mut self.out.hist,
            now_ns: 0,
        };
        let mut added = 0;
        for &key in &self.publishers {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let n = conn.top_up(&ctx, now);
            if n > 0 {
                added += n;
                if !conn.dirty {
                    conn.dirty = true;
                    self.dirty.push(key);
                }
            }
        }
        if added > 0 {
            self.shared.published.fetch_add(added, Ordering::Relaxed);
        }
    }

    fn flush_dirty(&mut self) {
        for key in std::mem::take(&mut self.dirty) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.dirty = false;
            if let Err(e) = conn.flush() {
                self.close(key, e);
            }
        }
    }

    fn ping_all(&mut self) {
        let version = self.params.version;
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(conn) = self.conns.get_mut(key) {
                if conn.state == State::Ready {
                    conn.ping(version);
                    self.mark_dirty(key);
                }
            }
        }
    }

    fn error(&mut self, msg: String) {
        self.out.failures += 1;
        self.shared.failures.fetch_add(1, Ordering::Relaxed);
        if self.out.errors.len() < MAX_ERRORS {
            self.out.errors.push(msg);
        }
    }

    /// Drops a failed connection, keeping its counters.
    fn close(&mut self, key: usize, msg: String) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.sock);
        if conn.state != State::Ready {
            self.handshaking -= 1;
        }
        self.publishers.retain(|&k| k != key);
        self.collect(&conn);
        self.error(format!("{}: {msg}", conn.spec.client_id));
    }

    fn collect(&mut self, conn: &Conn) {
        for t in &conn.tracks {
            self.out.unique += t.unique;
            self.out.dups += t.dups;
            self.out.gaps += t.gaps;
            self.out.late += t.late;
        }
        if let Role::Publisher { id, .. } = conn.spec.role {
            self.out.sent.push((id, conn.sent));
            self.out.stalls += conn.stalls;
        }
    }

    fn finish(mut self) -> ThreadOut {
        let version = self.params.version;
        let conns = std::mem::take(&mut self.conns);
        for (_, mut conn) in conns {
            conn.disconnect(version);
            let _ = self.poll.registry().deregister(&mut conn.sock);
            self.collect(&conn);
        }
        let _ = self.ready;
        let _ = self.total;
        self.out
    }
}
