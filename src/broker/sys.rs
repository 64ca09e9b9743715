//! `$SYS` topics: broker statistics as retained messages, named as Mosquitto names them.
//!
//! Owns: collecting each shard's counters and publishing the totals. Every
//! `--sys-interval` seconds each shard sends a `SysReport` to shard 0, which publishes the
//! latest totals under `$SYS/broker/...` as retained QoS 0 messages (so a new
//! `mosquitto_sub -t '$SYS/#'` sees them at once). Invariants: clients cannot publish into
//! `$SYS` (their publishes there are refused, never routed or retained), and the figures
//! are at most one interval old. Must not touch: the counters' owners; it only reads them.

use super::connect::timer_key;
use super::{Broker, Cast, Stats};
use crate::protocol::QoS;
use crate::session::Message;

/// Timer kind for the statistics interval.
pub(super) const TIMER_SYS: u64 = 4;

/// One shard's figures at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct SysReport {
    /// Connections with an accepted CONNECT.
    pub clients_connected: u64,
    /// Sessions held, connected or not.
    pub sessions: u64,
    /// Subscriptions held by those sessions.
    pub subscriptions: u64,
    /// Counters since start.
    pub stats: Stats,
}

/// True for topics only the broker may publish to.
pub fn is_sys_topic(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS/")
}

impl<X> Broker<X> {
    /// Arm the first statistics timer (called once at start).
    pub(super) fn arm_sys_timer(&mut self, now_ms: u64) {
        let interval = u64::from(self.cfg.sys_interval_s) * 1000;
        if interval > 0 {
            self.timers
                .insert(now_ms + interval, timer_key(TIMER_SYS, 0, 0));
        }
    }

    /// The interval ran out: report to shard 0 (and, on shard 0, publish), then re-arm.
    pub(super) fn sys_timer(&mut self, now_ms: u64) {
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
        SysReport {
            clients_connected: self.links.iter().filter(|(_, l)| l.is_connected()).count() as u64,
            sessions: self.sessions.len() as u64,
            subscriptions: self.sessions.iter().map(|(_, s)| s.subs.len() as u64).sum(),
            stats: self.fx.stats,
        }
    }

    /// Keep shard `from`'s latest report (shard 0 only).
    pub(super) fn on_sys_report(&mut self, from: usize, report: SysReport) {
        if let Some(slot) = self.sys_reports.get_mut(from) {
            *slot = report;
        }
    }

    fn publish_sys(&mut self, now_ms: u64) {
        let mut t = SysReport::default();
        for r in &self.sys_reports {
            t.clients_connected += r.clients_connected;
            t.sessions += r.sessions;
            t.subscriptions += r.subscriptions;
            t.stats.publish_in += r.stats.publish_in;
            t.stats.publish_out += r.stats.publish_out;
            t.stats.bytes_in += r.stats.bytes_in;
            t.stats.bytes_out += r.stats.bytes_out;
            t.stats.dropped_qos0 += r.stats.dropped_qos0;
            t.stats.dropped_queue += r.stats.dropped_queue;
            t.stats.dropped_too_large += r.stats.dropped_too_large;
        }
        let dropped = t.stats.dropped_qos0 + t.stats.dropped_queue + t.stats.dropped_too_large;
        let values: [(&str, String); 17] = [
            (
                "version",
                format!("shardmq version {}", env!("CARGO_PKG_VERSION")),
            ),
            ("uptime", format!("{} seconds", now_ms / 1000)),
            ("shards", self.shards.to_string()),
            ("clients/connected", t.clients_connected.to_string()),
            (
                "clients/disconnected",
                t.sessions.saturating_sub(t.clients_connected).to_string(),
            ),
            ("clients/total", t.sessions.to_string()),
            ("messages/received", t.stats.publish_in.to_string()),
            ("messages/sent", t.stats.publish_out.to_string()),
            ("publish/messages/received", t.stats.publish_in.to_string()),
            ("publish/messages/sent", t.stats.publish_out.to_string()),
            ("publish/messages/dropped", dropped.to_string()),
            ("bytes/received", t.stats.bytes_in.to_string()),
            ("bytes/sent", t.stats.bytes_out.to_string()),
            ("subscriptions/count", t.subscriptions.to_string()),
            ("retained messages/count", self.retained.len().to_string()),
            // Mosquitto's name; here the bytes accounted against `memory_limit`.
            ("heap/current", self.memory_used.to_string()),
            ("memory/limit", self.cfg.limits.memory_limit.to_string()),
        ];
        for (name, value) in values {
            let msg = Message {
                topic: format!("$SYS/broker/{name}").into(),
                payload: value.into_bytes().into_boxed_slice(),
                qos: QoS::AtMostOnce,
                retain: true,
                props: None,
                expires_at_ms: None,
                origin: 0,
                retain_stamp: 0,
            };
            self.publish_message(msg, now_ms);
        }
    }
}
