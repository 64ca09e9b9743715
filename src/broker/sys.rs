//! `$SYS` topics: broker statistics as retained messages, named as Mosquitto names them.
//!
//! Owns: collecting each shard's counters, the load averages, and publishing the totals.
//! Every `sys_interval` seconds each shard sends a `SysReport` to shard 0, which publishes
//! the latest totals under `$SYS/broker/...` as retained QoS 0 messages (so a new
//! `mosquitto_sub -t '$SYS/#'` sees them at once). Invariants: clients cannot publish into
//! `$SYS` (their publishes there are refused, never routed or retained); the figures are
//! at most one interval old; a timer armed under an older `sys_interval` (before a reload)
//! is ignored when it fires, so one interval runs at a time. Must not touch: the counters'
//! owners; it only reads them.

use super::connect::timer_key;
use super::{Broker, Cast, Stats};
use crate::protocol::QoS;
use crate::session::Message;

/// Timer kind for the statistics interval.
pub(super) const TIMER_SYS: u64 = 4;
/// The three load-average windows, seconds (Mosquitto's 1, 5 and 15 minutes).
const LOAD_WINDOWS_S: [u64; 3] = [60, 300, 900];
/// Their topic names.
const LOAD_WINDOW_NAMES: [&str; 3] = ["1min", "5min", "15min"];

/// One shard's figures at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct SysReport {
    /// Connections with an accepted CONNECT.
    pub clients_connected: u64,
    /// Sessions held, connected or not.
    pub sessions: u64,
    /// Subscriptions held by those sessions.
    pub subscriptions: u64,
    /// Messages waiting in session queues or in flight.
    pub stored: u64,
    /// Bytes of the queued messages.
    pub stored_bytes: u64,
    /// Counters since start.
    pub stats: Stats,
}

/// The load averages of one quantity: messages, bytes or publishes, in or out.
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    /// The counter at the previous interval.
    last: u64,
    /// Per-minute rates averaged over each window.
    avg: [f64; 3],
}

impl Load {
    /// Fold in the counter's value `now` after `dt_s` seconds (Mosquitto's formula: an
    /// exponentially decaying average of the per-minute rate).
    fn update(&mut self, now: u64, dt_s: f64) {
        if dt_s <= 0.0 {
            return;
        }
        let per_min = now.saturating_sub(self.last) as f64 * 60.0 / dt_s;
        self.last = now;
        for (avg, window) in self.avg.iter_mut().zip(LOAD_WINDOWS_S) {
            let k = (-dt_s / window as f64).exp();
            *avg = *avg * k + per_min * (1.0 - k);
        }
    }
}

/// The six loads: messages, bytes, publish × received, sent.
const LOAD_NAMES: [&str; 6] = [
    "messages/received",
    "messages/sent",
    "bytes/received",
    "bytes/sent",
    "publish/received",
    "publish/sent",
];

/// `$SYS` state of one shard (reports and loads are used on shard 0 only).
#[derive(Debug, Clone)]
pub(super) struct SysState {
    /// Generation of the armed timer; a fired timer of another generation is stale.
    gen: u32,
    /// Latest report of every shard.
    reports: Vec<SysReport>,
    loads: [Load; 6],
    /// When the loads were last updated (shard clock, ms).
    loads_at_ms: u64,
    /// Most clients connected at once, as sampled each interval.
    clients_max: u64,
}

impl SysState {
    pub(super) fn new(shards: usize) -> SysState {
        SysState {
            gen: 0,
            reports: vec![SysReport::default(); shards],
            loads: [Load::default(); 6],
            loads_at_ms: 0,
            clients_max: 0,
        }
    }
}

/// True for topics only the broker may publish to.
pub fn is_sys_topic(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS/")
}

/// The process's resident memory, bytes (`$SYS/broker/heap/current`): read from
/// `/proc/self/status`, 0 where that does not exist.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Sum of every shard's report.
fn total(reports: &[SysReport]) -> SysReport {
    let mut t = SysReport::default();
    for r in reports {
        t.clients_connected += r.clients_connected;
        t.sessions += r.sessions;
        t.subscriptions += r.subscriptions;
        t.stored += r.stored;
        t.stored_bytes += r.stored_bytes;
        let (a, s) = (&mut t.stats, &r.stats);
        a.publish_in += s.publish_in;
        a.publish_out += s.publish_out;
        a.bytes_in += s.bytes_in;
        a.bytes_out += s.bytes_out;
        a.packets_in += s.packets_in;
        a.packets_out += s.packets_out;
        a.dropped_qos0 += s.dropped_qos0;
        a.dropped_queue += s.dropped_queue;
        a.dropped_too_large += s.dropped_too_large;
        a.sessions_expired += s.sessions_expired;
        for q in 0..3 {
            a.publish_in_bytes_qos[q] += s.publish_in_bytes_qos[q];
            a.publish_out_bytes_qos[q] += s.publish_out_bytes_qos[q];
        }
    }
    t
}

impl<X> Broker<X> {
    /// Arm the statistics timer of the current generation.
    pub(super) fn arm_sys_timer(&mut self, now_ms: u64) {
        let interval = u64::from(self.cfg.sys_interval_s) * 1000;
        if interval > 0 {
            self.timers
                .insert(now_ms + interval, timer_key(TIMER_SYS, self.sys.gen, 0));
        }
    }

    /// The interval changed (reload): forget the armed timer and start a new one from now.
    pub(super) fn rearm_sys_timer(&mut self, now_ms: u64) {
        self.sys.gen = (self.sys.gen + 1) & 0x00ff_ffff;
        self.arm_sys_timer(now_ms);
    }

    /// The interval ran out: report to shard 0 (and, on shard 0, publish), then re-arm.
    pub(super) fn sys_timer(&mut self, gen: u32, now_ms: u64) {
        if gen != self.sys.gen {
            return;
        }
        let report = self.sys_report();
        if self.shard_id == 0 {
            self.on_sys_report(0, report);
            self.publish_sys(now_ms);
        } else {
            self.fx.outbox.push((
                0,
                Cast::Sys {
                    from: self.shard_id,
                    report: Box::new(report),
                },
            ));
        }
        self.arm_sys_timer(now_ms);
    }

    fn sys_report(&self) -> SysReport {
        let (mut subscriptions, mut stored, mut stored_bytes) = (0, 0, 0);
        for (_, s) in self.sessions.iter() {
            subscriptions += s.subs.len() as u64;
            stored += (s.queue.len() + s.inflight().len()) as u64;
            stored_bytes += s.queued_bytes() as u64;
        }
        SysReport {
            clients_connected: self.links.iter().filter(|(_, l)| l.is_connected()).count() as u64,
            sessions: self.sessions.len() as u64,
            subscriptions,
            stored,
            stored_bytes,
            stats: self.fx.stats,
        }
    }

    /// Keep shard `from`'s latest report (shard 0 only).
    pub(super) fn on_sys_report(&mut self, from: usize, report: SysReport) {
        if let Some(slot) = self.sys.reports.get_mut(from) {
            *slot = report;
        }
    }

    /// Fold the totals into the load averages.
    fn update_loads(&mut self, t: &SysReport, now_ms: u64) {
        let dt_s = now_ms.saturating_sub(self.sys.loads_at_ms) as f64 / 1000.0;
        self.sys.loads_at_ms = now_ms;
        let s = &t.stats;
        let values = [
            s.packets_in,
            s.packets_out,
            s.bytes_in,
            s.bytes_out,
            s.publish_in,
            s.publish_out,
        ];
        for (load, v) in self.sys.loads.iter_mut().zip(values) {
            load.update(v, dt_s);
        }
    }

    /// Every `$SYS/broker/...` value, named as Mosquitto names it.
    fn sys_values(&mut self, now_ms: u64) -> Vec<(String, String)> {
        let t = total(&self.sys.reports);
        self.update_loads(&t, now_ms);
        self.sys.clients_max = self.sys.clients_max.max(t.clients_connected);
        let s = &t.stats;
        let dropped = s.dropped_qos0 + s.dropped_queue + s.dropped_too_large;
        let retained = self.retained.len() as u64;
        let pub_bytes_in: u64 = s.publish_in_bytes_qos.iter().sum();
        let pub_bytes_out: u64 = s.publish_out_bytes_qos.iter().sum();
        let stored = t.stored + retained;
        let stored_bytes = t.stored_bytes + self.retained.bytes() as u64;
        let cluster = self.cfg.metrics.cluster.get().map(|f| (f.0)());
        let mut v: Vec<(String, String)> = [
            (
                "version",
                format!("shardmq version {}", env!("CARGO_PKG_VERSION")),
            ),
            ("uptime", format!("{} seconds", now_ms / 1000)),
            ("shards", self.shards.to_string()),
            ("clients/connected", t.clients_connected.to_string()),
            ("clients/active", t.clients_connected.to_string()),
            (
                "clients/disconnected",
                t.sessions.saturating_sub(t.clients_connected).to_string(),
            ),
            (
                "clients/inactive",
                t.sessions.saturating_sub(t.clients_connected).to_string(),
            ),
            ("clients/total", t.sessions.to_string()),
            ("clients/maximum", self.sys.clients_max.to_string()),
            ("clients/expired", s.sessions_expired.to_string()),
            ("messages/received", s.packets_in.to_string()),
            ("messages/sent", s.packets_out.to_string()),
            ("messages/stored", stored.to_string()),
            ("store/messages/count", stored.to_string()),
            ("store/messages/bytes", stored_bytes.to_string()),
            ("publish/messages/received", s.publish_in.to_string()),
            ("publish/messages/sent", s.publish_out.to_string()),
            ("publish/messages/dropped", dropped.to_string()),
            ("publish/bytes/received", pub_bytes_in.to_string()),
            ("publish/bytes/sent", pub_bytes_out.to_string()),
            ("bytes/received", s.bytes_in.to_string()),
            ("bytes/sent", s.bytes_out.to_string()),
            ("subscriptions/count", t.subscriptions.to_string()),
            ("retained messages/count", retained.to_string()),
            ("heap/current", resident_bytes().to_string()),
            // Bytes accounted against `memory_limit` (shardmq's own), and the limit.
            ("memory/accounted", self.memory_used.to_string()),
            ("memory/limit", self.cfg.limits.memory_limit.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (load, name) in self.sys.loads.iter().zip(LOAD_NAMES) {
            for (avg, window) in load.avg.iter().zip(LOAD_WINDOW_NAMES) {
                v.push((format!("load/{name}/{window}"), format!("{avg:.2}")));
            }
        }
        for (name, _, value) in cluster.into_iter().flatten() {
            v.push((format!("cluster/{name}"), value.to_string()));
        }
        v
    }

    fn publish_sys(&mut self, now_ms: u64) {
        for (name, value) in self.sys_values(now_ms) {
            let msg = Message {
                topic: format!("$SYS/broker/{name}").into(),
                payload: value.into_bytes().into_boxed_slice(),
                qos: QoS::AtMostOnce,
                retain: true,
                props: None,
                expires_at_ms: None,
                origin: 0,
                retain_stamp: 0,
                publisher: None,
                txn: 0,
                share_id: 0,
            };
            self.publish_message(msg, now_ms);
        }
    }
}
