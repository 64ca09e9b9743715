//! `/metrics`: the figures board in the Prometheus text exposition format (0.0.4).
//!
//! Owns: metric names, help texts and labels (`docs/operations.md` lists them). Invariants:
//! names follow `RESEARCH.md` §5.2 (`shardmq_` prefix, `_total` on counters, base units);
//! labels are only `shard`, `reason`, `result`, `state`, `kind`, `from_shard`/`to_shard`
//! and `version`, never a client id or a topic. Must not touch: anything but the board.

use std::fmt::Write;

use crate::metrics::{
    DropReason, Figure, Histogram, MemoryKind, Metrics, RefuseReason, ShardMetrics, StoreFigures,
};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const NS_PER_S: f64 = 1e9;

/// One family written per shard: name, type, help, how to read the shard's value.
type PerShard = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ShardMetrics) -> u64,
);

const PER_SHARD: &[PerShard] = &[
    (
        "shardmq_connections",
        "gauge",
        "Client sockets owned by the shard, in any state.",
        |s| s.connections.get(),
    ),
    (
        "shardmq_connections_opened_total",
        "counter",
        "Connections accepted.",
        |s| s.connections_accepted.get(),
    ),
    (
        "shardmq_subscriptions",
        "gauge",
        "Subscriptions held by the shard's sessions.",
        |s| s.subscriptions.get(),
    ),
    (
        "shardmq_queued_messages",
        "gauge",
        "Messages waiting in session queues.",
        |s| s.queued_messages.get(),
    ),
    (
        "shardmq_inflight_messages",
        "gauge",
        "QoS 1/2 deliveries awaiting acknowledgement.",
        |s| s.inflight_messages.get(),
    ),
    (
        "shardmq_packets_received_total",
        "counter",
        "MQTT packets of every kind received from clients.",
        |s| s.packets_received.get(),
    ),
    (
        "shardmq_packets_sent_total",
        "counter",
        "MQTT packets of every kind written to clients.",
        |s| s.packets_sent.get(),
    ),
    (
        "shardmq_queued_bytes",
        "gauge",
        "Bytes of the messages waiting in session queues.",
        |s| s.queued_bytes.get(),
    ),
    (
        "shardmq_sessions_expired_total",
        "counter",
        "Sessions ended by their expiry interval.",
        |s| s.sessions_expired.get(),
    ),
    (
        "shardmq_bytes_received_total",
        "counter",
        "Bytes read from client sockets.",
        |s| s.bytes_received.get(),
    ),
    (
        "shardmq_bytes_sent_total",
        "counter",
        "Bytes written to client sockets.",
        |s| s.bytes_sent.get(),
    ),
    (
        "shardmq_bus_staged_messages",
        "gauge",
        "Cross-shard messages waiting for room in a ring.",
        |s| s.bus_staged.get(),
    ),
    (
        "shardmq_loop_turns_total",
        "counter",
        "Event-loop turns completed.",
        |s| s.turns.get(),
    ),
];

/// Render every family.
pub fn render(m: &Metrics) -> String {
    let mut o = String::with_capacity(16 * 1024);
    let shards = m.shards();
    family(
        &mut o,
        "shardmq_build_info",
        "gauge",
        "Always 1; the version is a label.",
    );
    let _ = writeln!(
        o,
        "shardmq_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    family(
        &mut o,
        "shardmq_uptime_seconds",
        "gauge",
        "Seconds since the broker started.",
    );
    let _ = writeln!(
        o,
        "shardmq_uptime_seconds {}",
        m.epoch.elapsed().as_secs_f64()
    );
    family(
        &mut o,
        "shardmq_ready",
        "gauge",
        "1 when every shard runs and nothing holds readiness back.",
    );
    let _ = writeln!(o, "shardmq_ready {}", u8::from(m.ready()));
    family(
        &mut o,
        "shardmq_shards",
        "gauge",
        "Shards (event-loop threads).",
    );
    let _ = writeln!(o, "shardmq_shards {}", shards.len());
    for (name, kind, help, get) in PER_SHARD {
        family(&mut o, name, kind, help);
        for (i, s) in shards.iter().enumerate() {
            let _ = writeln!(o, "{name}{{shard=\"{i}\"}} {}", get(s));
        }
    }
    sessions(&mut o, shards);
    by_qos(&mut o, shards);
    labelled(&mut o, shards);
    reloads(&mut o, m);
    retained(&mut o, shards);
    bus(&mut o, shards);
    turn_time(&mut o, shards);
    store(&mut o, shards);
    bridges(&mut o, shards);
    cluster(&mut o, m);
    memory(&mut o, m);
    o
}

/// The cluster link's counters, `shardmq_cluster_<name>_total` (a cluster node only).
fn cluster(o: &mut String, m: &Metrics) {
    let Some(f) = m.cluster.get() else {
        return;
    };
    for (name, help, value) in (f.0)() {
        let name = format!("shardmq_cluster_{name}_total");
        family(o, &name, "counter", help);
        let _ = writeln!(o, "{name} {value}");
    }
    let Some(nodes) = m.cluster_nodes.get() else {
        return;
    };
    let name = "shardmq_cluster_node_heartbeat_age_seconds";
    family(
        o,
        name,
        "gauge",
        "Seconds since each node's heartbeat key last changed, as this node saw it, by node and state (alive, forgetting, forgotten).",
    );
    for (node, age, state) in (nodes.0)() {
        let _ = writeln!(o, "{name}{{node=\"{node}\",state=\"{state}\"}} {age:.3}");
    }
}

/// The admin listener's own families (it is not a shard: no `shard` label).
pub fn render_admin(o: &mut String, f: &super::ServerFigures) {
    let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    family(
        o,
        "shardmq_admin_requests_total",
        "counter",
        "Requests the admin listener answered.",
    );
    let _ = writeln!(o, "shardmq_admin_requests_total {}", get(&f.requests));
    family(
        o,
        "shardmq_admin_connections_dropped_total",
        "counter",
        "Admin connections closed without an answer: busy (every worker busy, queue full), deadline, tls.",
    );
    for (reason, v) in [
        ("busy", &f.turned_away),
        ("deadline", &f.timed_out),
        ("tls", &f.tls_failures),
    ] {
        let _ = writeln!(
            o,
            "shardmq_admin_connections_dropped_total{{reason=\"{reason}\"}} {}",
            get(v)
        );
    }
}

/// A label value, escaped as the exposition format wants.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Bridge families, labelled by bridge name (each bridge is on one shard).
fn bridges(o: &mut String, shards: &[ShardMetrics]) {
    let all: Vec<_> = shards.iter().map(|s| s.bridges.load_full()).collect();
    let each = || all.iter().flat_map(|v| v.iter());
    type Get = fn(&crate::metrics::BridgeFigures) -> u64;
    let families: [(&str, &str, &str, Get); 7] = [
        (
            "shardmq_bridge_up",
            "gauge",
            "1 while the bridge is connected.",
            |b| u64::from(b.up),
        ),
        (
            "shardmq_bridge_queued_messages",
            "gauge",
            "Messages waiting in the bridge's queue.",
            |b| b.queued,
        ),
        (
            "shardmq_bridge_inflight_messages",
            "gauge",
            "QoS 1/2 messages sent, not yet completed.",
            |b| b.inflight,
        ),
        (
            "shardmq_bridge_messages_forwarded_total",
            "counter",
            "Messages completed by the remote.",
            |b| b.forwarded,
        ),
        (
            "shardmq_bridge_messages_received_total",
            "counter",
            "Messages brought in from the remote.",
            |b| b.received,
        ),
        (
            "shardmq_bridge_connects_total",
            "counter",
            "Connections made.",
            |b| b.connects,
        ),
        (
            "shardmq_bridge_failures_total",
            "counter",
            "Connection attempts or connections that failed.",
            |b| b.failures,
        ),
    ];
    for (name, kind, help, get) in families {
        family(o, name, kind, help);
        for b in each() {
            let _ = writeln!(o, "{name}{{bridge=\"{}\"}} {}", label(&b.name), get(b));
        }
    }
    let name = "shardmq_bridge_messages_dropped_total";
    family(
        o,
        name,
        "counter",
        "Messages the bridge dropped, by reason.",
    );
    for b in each() {
        for (reason, v) in ["queue_full", "offline_qos0", "too_large"]
            .iter()
            .zip(b.dropped)
        {
            let bridge = label(&b.name);
            let _ = writeln!(o, "{name}{{bridge=\"{bridge}\",reason=\"{reason}\"}} {v}");
        }
    }
}

fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sessions(o: &mut String, shards: &[ShardMetrics]) {
    family(
        o,
        "shardmq_sessions",
        "gauge",
        "Sessions held, by whether a client is connected.",
    );
    for (i, s) in shards.iter().enumerate() {
        let online = s.clients_connected.get();
        let offline = s.sessions.get().saturating_sub(online);
        let _ = writeln!(
            o,
            "shardmq_sessions{{shard=\"{i}\",state=\"online\"}} {online}"
        );
        let _ = writeln!(
            o,
            "shardmq_sessions{{shard=\"{i}\",state=\"offline\"}} {offline}"
        );
    }
}

/// One counter family with a `qos` label.
type ByQos = (
    &'static str,
    &'static str,
    fn(&ShardMetrics) -> &[Figure; 3],
);

const BY_QOS: &[ByQos] = &[
    (
        "shardmq_messages_received_total",
        "PUBLISH packets received from clients, by QoS.",
        |s| &s.messages_received_qos,
    ),
    (
        "shardmq_messages_sent_total",
        "PUBLISH packets written to clients, by QoS.",
        |s| &s.messages_sent_qos,
    ),
    (
        "shardmq_payload_bytes_received_total",
        "Payload bytes of the PUBLISH packets received, by QoS.",
        |s| &s.payload_bytes_received_qos,
    ),
    (
        "shardmq_payload_bytes_sent_total",
        "Payload bytes of the PUBLISH packets written, by QoS.",
        |s| &s.payload_bytes_sent_qos,
    ),
];

fn by_qos(o: &mut String, shards: &[ShardMetrics]) {
    for (name, help, get) in BY_QOS {
        family(o, name, "counter", help);
        for (i, s) in shards.iter().enumerate() {
            for (q, f) in get(s).iter().enumerate() {
                let _ = writeln!(o, "{name}{{shard=\"{i}\",qos=\"{q}\"}} {}", f.get());
            }
        }
    }
}

fn reloads(o: &mut String, m: &Metrics) {
    family(
        o,
        "shardmq_config_reloads_total",
        "counter",
        "Configuration reloads (SIGHUP), by result.",
    );
    let _ = writeln!(
        o,
        "shardmq_config_reloads_total{{result=\"success\"}} {}",
        m.reloads_applied.get()
    );
    let _ = writeln!(
        o,
        "shardmq_config_reloads_total{{result=\"failure\"}} {}",
        m.reloads_refused.get()
    );
}

/// The counters with a `reason` or `result` label.
fn labelled(o: &mut String, shards: &[ShardMetrics]) {
    family(
        o,
        "shardmq_messages_dropped_total",
        "counter",
        "Deliveries dropped, by reason.",
    );
    for (i, s) in shards.iter().enumerate() {
        for r in DropReason::ALL {
            let v = s.dropped[r as usize].get();
            let _ = writeln!(
                o,
                "shardmq_messages_dropped_total{{shard=\"{i}\",reason=\"{}\"}} {v}",
                r.label()
            );
        }
    }
    family(
        o,
        "shardmq_connections_refused_total",
        "counter",
        "CONNECTs refused, by reason.",
    );
    for (i, s) in shards.iter().enumerate() {
        for r in RefuseReason::ALL {
            let v = s.connections_refused[r as usize].get();
            let _ = writeln!(
                o,
                "shardmq_connections_refused_total{{shard=\"{i}\",reason=\"{}\"}} {v}",
                r.label()
            );
        }
    }
    family(
        o,
        "shardmq_auth_attempts_total",
        "counter",
        "Authentications, by result (failures only so far).",
    );
    for (i, s) in shards.iter().enumerate() {
        let _ = writeln!(
            o,
            "shardmq_auth_attempts_total{{shard=\"{i}\",result=\"failure\"}} {}",
            s.auth_failures.get()
        );
    }
    family(
        o,
        "shardmq_persist_write_errors_total",
        "counter",
        "Store log writes that failed (disk full, I/O error); each retry counts.",
    );
    for (i, s) in shards.iter().enumerate() {
        let _ = writeln!(
            o,
            "shardmq_persist_write_errors_total{{shard=\"{i}\"}} {}",
            s.store_write_errors.get()
        );
    }
    family(
        o,
        "shardmq_persist_publishes_refused_total",
        "counter",
        "QoS 1/2 publishes refused (5.0: 0x97) or 3.x connections closed while the store could not write.",
    );
    for (i, s) in shards.iter().enumerate() {
        let _ = writeln!(
            o,
            "shardmq_persist_publishes_refused_total{{shard=\"{i}\"}} {}",
            s.publishes_refused_store.get()
        );
    }
    family(
        o,
        "shardmq_tls_handshakes_total",
        "counter",
        "TLS handshakes, by result.",
    );
    for (i, s) in shards.iter().enumerate() {
        let _ = writeln!(
            o,
            "shardmq_tls_handshakes_total{{shard=\"{i}\",result=\"success\"}} {}",
            s.tls_handshakes.get()
        );
        let _ = writeln!(
            o,
            "shardmq_tls_handshakes_total{{shard=\"{i}\",result=\"failure\"}} {}",
            s.tls_failures.get()
        );
    }
}

/// Every shard holds a replica of all retained messages: the node's count is the largest
/// replica, not the sum.
fn retained(o: &mut String, shards: &[ShardMetrics]) {
    family(
        o,
        "shardmq_retained_messages",
        "gauge",
        "Retained messages (every shard holds all of them).",
    );
    let n = shards
        .iter()
        .map(|s| s.retained_messages.get())
        .max()
        .unwrap_or(0);
    let _ = writeln!(o, "shardmq_retained_messages {n}");
    family(
        o,
        "shardmq_retained_bytes",
        "gauge",
        "Payload bytes of the retained messages (every shard holds all of them).",
    );
    let n = shards
        .iter()
        .map(|s| s.retained_bytes.get())
        .max()
        .unwrap_or(0);
    let _ = writeln!(o, "shardmq_retained_bytes {n}");
}

fn bus(o: &mut String, shards: &[ShardMetrics]) {
    family(
        o,
        "shardmq_bus_queue_depth",
        "gauge",
        "Messages in the ring from one shard to another.",
    );
    for (from, s) in shards.iter().enumerate() {
        for (to, d) in s
            .bus_ring_depth
            .iter()
            .enumerate()
            .filter(|(to, _)| *to != from)
        {
            let _ = writeln!(
                o,
                "shardmq_bus_queue_depth{{from_shard=\"{from}\",to_shard=\"{to}\"}} {}",
                d.get()
            );
        }
    }
    family(
        o,
        "shardmq_bus_staged_to_messages",
        "gauge",
        "Messages staged from one shard for another's full ring.",
    );
    for (from, s) in shards.iter().enumerate() {
        for (to, d) in s
            .bus_staged_to
            .iter()
            .enumerate()
            .filter(|(to, _)| *to != from)
        {
            let _ = writeln!(
                o,
                "shardmq_bus_staged_to_messages{{from_shard=\"{from}\",to_shard=\"{to}\"}} {}",
                d.get()
            );
        }
    }
}

/// Turn work time as a histogram, and busy time as a counter: `rate()` of the counter is
/// the busy fraction.
fn turn_time(o: &mut String, shards: &[ShardMetrics]) {
    family(
        o,
        "shardmq_loop_busy_seconds_total",
        "counter",
        "Time the shard spent working (rate = busy fraction).",
    );
    for (i, s) in shards.iter().enumerate() {
        let v = s.busy_ns.get() as f64 / NS_PER_S;
        let _ = writeln!(o, "shardmq_loop_busy_seconds_total{{shard=\"{i}\"}} {v}");
    }
    family(
        o,
        "shardmq_loop_turn_seconds",
        "histogram",
        "Work time of one event-loop turn.",
    );
    for (i, s) in shards.iter().enumerate() {
        histogram(
            o,
            "shardmq_loop_turn_seconds",
            &format!("shard=\"{i}\""),
            &s.turn_time,
            NS_PER_S,
        );
    }
}

/// The samples of one histogram series: bounds and sum divided by `scale` (`NS_PER_S` for
/// times observed in ns, 1 for sizes).
fn histogram(o: &mut String, name: &str, labels: &str, h: &Histogram, scale: f64) {
    let cumulative = h.cumulative();
    for (le, n) in h.bounds().iter().zip(&cumulative) {
        let le = *le as f64 / scale;
        let _ = writeln!(o, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
    }
    let count = cumulative.last().copied().unwrap_or(0);
    let _ = writeln!(o, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(o, "{name}_sum{{{labels}}} {}", h.sum() as f64 / scale);
    let _ = writeln!(o, "{name}_count{{{labels}}} {count}");
}

/// Histogram families of the write-ahead logs: name, help, which one, scale.
type StoreHist = (
    &'static str,
    &'static str,
    fn(&StoreFigures) -> &Histogram,
    f64,
);

const STORE_HISTOGRAMS: &[StoreHist] = &[
    (
        "shardmq_persist_write_seconds",
        "Time of one group commit's write to the log.",
        |f| &f.write_time,
        NS_PER_S,
    ),
    (
        "shardmq_persist_fsync_seconds",
        "Time of one fdatasync round of the log's sync thread.",
        |f| &f.sync_time,
        NS_PER_S,
    ),
    (
        "shardmq_persist_batch_records",
        "Records per group commit.",
        |f| &f.batch_records,
        1.0,
    ),
    (
        "shardmq_persist_batch_bytes",
        "Bytes per group commit.",
        |f| &f.batch_bytes,
        1.0,
    ),
    (
        "shardmq_persist_checkpoint_seconds",
        "Duration of a checkpoint, from encoding to the covered segments deleted.",
        |f| &f.checkpoint_time,
        NS_PER_S,
    ),
];

/// Gauge and counter families of the write-ahead logs: name, type, help, value.
type StoreFig = (
    &'static str,
    &'static str,
    &'static str,
    fn(&StoreFigures) -> u64,
);

const STORE_FIGURES: &[StoreFig] = &[
    (
        "shardmq_persist_disk_bytes",
        "gauge",
        "Bytes of the shard's log segments and checkpoint on disk.",
        |f| f.disk_bytes.get(),
    ),
    (
        "shardmq_persist_checkpoint_bytes",
        "gauge",
        "Size of the shard's latest checkpoint file.",
        |f| f.checkpoint_bytes.get(),
    ),
    (
        "shardmq_persist_checkpoint_failures_total",
        "counter",
        "Checkpoints that failed.",
        |f| f.checkpoint_failures.get(),
    ),
];

/// The write-ahead log families, for the shards that have a log (none without persistence).
fn store(o: &mut String, shards: &[ShardMetrics]) {
    let logs: Vec<(usize, std::sync::Arc<StoreFigures>)> = shards
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some((i, s.store.load_full()?)))
        .collect();
    if logs.is_empty() {
        return;
    }
    for (name, help, get, scale) in STORE_HISTOGRAMS {
        family(o, name, "histogram", help);
        for (i, f) in &logs {
            histogram(o, name, &format!("shard=\"{i}\""), get(f), *scale);
        }
    }
    for (name, kind, help, get) in STORE_FIGURES {
        family(o, name, kind, help);
        for (i, f) in &logs {
            let _ = writeln!(o, "{name}{{shard=\"{i}\"}} {}", get(f));
        }
    }
}

/// The process's memory as the kernel and the allocator see it (read now, once per
/// scrape), and what each shard accounts against `memory_limit`.
fn memory(o: &mut String, m: &Metrics) {
    if let Some(rss) = crate::alloc::process_resident_bytes() {
        family(
            o,
            "shardmq_process_resident_memory_bytes",
            "gauge",
            "Resident set size of the broker process.",
        );
        let _ = writeln!(o, "shardmq_process_resident_memory_bytes {rss}");
    }
    if let Some(a) = crate::alloc::allocator_figures() {
        let figures = [
            (
                "allocated",
                "Bytes allocated by the broker and not freed.",
                a.allocated,
            ),
            (
                "resident",
                "Bytes in pages the allocator holds resident.",
                a.resident,
            ),
            (
                "retained",
                "Bytes the allocator keeps mapped but not resident.",
                a.retained,
            ),
        ];
        for (what, help, v) in figures {
            let name = format!("shardmq_allocator_{what}_bytes");
            family(o, &name, "gauge", help);
            let _ = writeln!(o, "{name} {v}");
        }
    }
    family(
        o,
        "shardmq_memory_limit_bytes",
        "gauge",
        "memory_limit: the bytes the shards may account for clients (0: none).",
    );
    let _ = writeln!(o, "shardmq_memory_limit_bytes {}", m.memory_limit.get());
    family(
        o,
        "shardmq_memory_accounted_bytes",
        "gauge",
        "Bytes held for clients at the shard's last memory walk, by what holds them.",
    );
    for (i, s) in m.shards().iter().enumerate() {
        for k in MemoryKind::ALL {
            let v = s.memory_accounted[k as usize].get();
            let kind = k.label();
            let _ = writeln!(
                o,
                "shardmq_memory_accounted_bytes{{shard=\"{i}\",kind=\"{kind}\"}} {v}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_declared_once_and_every_sample_belongs_to_one() {
        let m = Metrics::new(2);
        m.shards()[1].messages_received_qos[1].set(7);
        m.shards()[0].record_turn(20_000);
        let log = std::sync::Arc::new(StoreFigures::default());
        log.batch_records.observe(3);
        log.sync_time.observe(2_000_000);
        m.shards()[1].store.store(Some(log));
        let text = render(&m);
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or_default();
                assert!(declared.insert(name.to_string()), "{name} declared twice");
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|b| declared.contains(*b)))
                    .unwrap_or(name);
                assert!(declared.contains(base), "sample {line} has no family");
            }
        }
        assert!(text.contains("shardmq_messages_received_total{shard=\"1\",qos=\"1\"} 7\n"));
        assert!(text.contains("shardmq_loop_turn_seconds_bucket{shard=\"0\",le=\"0.00005\"} 1\n"));
        assert!(text.contains("shardmq_loop_turn_seconds_count{shard=\"0\"} 1\n"));
        assert!(text.contains("shardmq_memory_accounted_bytes{shard=\"1\",kind=\"queues\"} 0\n"));
        assert!(text.contains("shardmq_persist_batch_records_bucket{shard=\"1\",le=\"4\"} 1\n"));
        assert!(text.contains("shardmq_persist_batch_records_bucket{shard=\"1\",le=\"2\"} 0\n"));
        assert!(text.contains("shardmq_persist_fsync_seconds_sum{shard=\"1\"} 0.002\n"));
        assert!(
            !text.contains("shardmq_persist_disk_bytes{shard=\"0\"}"),
            "shard 0 has no log"
        );
        assert!(
            !text.contains("from_shard=\"0\",to_shard=\"0\""),
            "no self-pair"
        );
    }
}
