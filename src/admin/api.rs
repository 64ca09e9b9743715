//! `/api/v1/*`: the figures board and the shards' lists as JSON, for the dashboard and
//! for scripts.
//!
//! Owns: the JSON shapes (documented in `docs/operations.md`). Invariants: every list is
//! bounded by `limit` (default `LIMIT_DEFAULT`, at most `LIMIT_MAX`) and says how many
//! entries there were in all; waiting for fresh lists is bounded by `LISTS_WAIT_MS`.
//! Must not touch: shard state (it asks for lists through the board and reads the slots).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::metrics::{Metrics, ShardLists, LISTS_INTERVAL_MS};

/// The JSON content type.
pub const JSON: &str = "application/json";
/// Entries returned when no `limit` is given.
const LIMIT_DEFAULT: usize = 100;
/// Topics returned by `/api/v1/topics` unless `limit` says.
const TOPICS_DEFAULT: usize = 10;
/// Entries returned at most.
const LIMIT_MAX: usize = 10_000;
/// Longest wait for shards to publish fresh lists, ms.
const LISTS_WAIT_MS: u64 = 2_500;
/// Pause between looks at the slots while waiting, ms.
const LISTS_POLL_MS: u64 = 20;
/// Longest search string, bytes.
const SEARCH_BYTES_MAX: usize = 256;

/// `/api/v1/stats`: totals and per-shard figures.
pub fn stats(m: &Metrics) -> String {
    let per_shard: Vec<Value> = m
        .shards()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "shard": i,
                "connections": s.connections.get(),
                "clients_connected": s.clients_connected.get(),
                "sessions": s.sessions.get(),
                "subscriptions": s.subscriptions.get(),
                "queued_messages": s.queued_messages.get(),
                "inflight_messages": s.inflight_messages.get(),
                "messages_received": s.messages_received.get(),
                "messages_sent": s.messages_sent.get(),
                "bytes_received": s.bytes_received.get(),
                "bytes_sent": s.bytes_sent.get(),
                "messages_dropped": s.dropped_total(),
                "busy_seconds": s.busy_ns.get() as f64 / 1e9,
                "turns": s.turns.get(),
                "bus_staged": s.bus_staged.get(),
            })
        })
        .collect();
    let sum =
        |f: fn(&crate::metrics::ShardMetrics) -> u64| -> u64 { m.shards().iter().map(f).sum() };
    let retained = m
        .shards()
        .iter()
        .map(|s| s.retained_messages.get())
        .max()
        .unwrap_or(0);
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": m.epoch.elapsed().as_secs_f64(),
        "ready": m.ready(),
        "shards": m.shards().len(),
        "totals": {
            "connections": sum(|s| s.connections.get()),
            "clients_connected": sum(|s| s.clients_connected.get()),
            "sessions": sum(|s| s.sessions.get()),
            "subscriptions": sum(|s| s.subscriptions.get()),
            "queued_messages": sum(|s| s.queued_messages.get()),
            "messages_received": sum(|s| s.messages_received.get()),
            "messages_sent": sum(|s| s.messages_sent.get()),
            "bytes_received": sum(|s| s.bytes_received.get()),
            "bytes_sent": sum(|s| s.bytes_sent.get()),
            "messages_dropped": sum(|s| s.dropped_total()),
            "retained_messages": retained,
        },
        "per_shard": per_shard,
    })
    .to_string()
}

/// `/api/v1/bridges`: every bridge's state and counters, by name (each bridge's shard
/// publishes its figures at least once a second, and at once when its state changes).
pub fn bridges(m: &Metrics) -> String {
    let mut out = Vec::new();
    for (shard, s) in m.shards().iter().enumerate() {
        for b in s.bridges.load().iter() {
            let [full, offline, too_large] = b.dropped;
            out.push(json!({
                "name": &b.name,
                "shard": shard,
                "up": b.up,
                "queued": b.queued,
                "inflight": b.inflight,
                "forwarded": b.forwarded,
                "received": b.received,
                "dropped": { "queue_full": full, "offline_qos0": offline, "too_large": too_large },
                "loops_prevented": b.loops_prevented,
                "connects": b.connects,
                "failures": b.failures,
            }));
        }
    }
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    json!({ "bridges": out }).to_string()
}

/// `/api/v1/clients?limit=N&q=TEXT`: connected clients, optionally those whose client id
/// or username contains `q`.
pub fn clients(m: &Metrics, query: &str) -> String {
    let limit = limit(query);
    let q = param(query, "q").unwrap_or_default();
    let lists = fresh_lists(m);
    let mut total = 0;
    let mut out = Vec::new();
    for l in &lists {
        total += l.clients_total;
        for c in &l.clients {
            let hit = q.is_empty()
                || c.client_id.contains(q.as_str())
                || c.username
                    .as_deref()
                    .is_some_and(|u| u.contains(q.as_str()));
            if hit && out.len() < limit {
                out.push(json!({
                    "client_id": &*c.client_id,
                    "username": c.username.as_deref(),
                    "peer": c.peer.to_string(),
                    "version": c.version,
                    "shard": c.shard,
                    "subscriptions": c.subscriptions,
                    "queued": c.queued,
                    "inflight": c.inflight,
                    "pending_bytes": c.pending_bytes,
                }));
            }
        }
    }
    json!({ "total": total, "returned": out.len(), "clients": out }).to_string()
}

/// `/api/v1/subscriptions?limit=N&q=TEXT`: subscriptions, optionally those whose filter or
/// client id contains `q`.
pub fn subscriptions(m: &Metrics, query: &str) -> String {
    let limit = limit(query);
    let q = param(query, "q").unwrap_or_default();
    let lists = fresh_lists(m);
    let mut total = 0;
    let mut out = Vec::new();
    for l in &lists {
        total += l.subscriptions_total;
        for s in &l.subscriptions {
            let hit =
                q.is_empty() || s.filter.contains(q.as_str()) || s.client_id.contains(q.as_str());
            if hit && out.len() < limit {
                out.push(json!({
                    "client_id": &*s.client_id,
                    "filter": &*s.filter,
                    "qos": s.qos,
                    "shard": s.shard,
                }));
            }
        }
    }
    json!({ "total": total, "returned": out.len(), "subscriptions": out }).to_string()
}

/// `/api/v1/topics?limit=N`: the busiest topics over every shard, busiest first, with
/// estimated publish counts (sampled, decaying: a ranking, not an exact count).
pub fn topics(m: &Metrics, query: &str) -> String {
    let limit = param(query, "limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(TOPICS_DEFAULT)
        .min(LIMIT_MAX);
    let mut merged: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    let lists = fresh_lists(m);
    for l in &lists {
        for (t, n) in &l.topics {
            *merged.entry(t).or_default() += n;
        }
    }
    let mut v: Vec<(&str, u64)> = merged.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    v.truncate(limit);
    let out: Vec<_> = v
        .iter()
        .map(|(t, n)| json!({ "topic": t, "messages": n }))
        .collect();
    json!({ "returned": out.len(), "sampled": true, "topics": out }).to_string()
}

/// Every shard's lists, fresh (taken within two intervals) unless the wait ran out.
fn fresh_lists(m: &Metrics) -> Vec<std::sync::Arc<ShardLists>> {
    m.want_lists();
    let asked_ns = m.now_ns();
    let stale_ns = 2 * LISTS_INTERVAL_MS * 1_000_000;
    let deadline = Instant::now() + Duration::from_millis(LISTS_WAIT_MS);
    loop {
        let lists: Vec<_> = m.shards().iter().map(|s| s.lists.load_full()).collect();
        let fresh = lists
            .iter()
            .all(|l| l.taken_at_ns > 0 && l.taken_at_ns + stale_ns >= asked_ns);
        if fresh || Instant::now() >= deadline {
            return lists;
        }
        std::thread::sleep(Duration::from_millis(LISTS_POLL_MS));
    }
}

fn limit(query: &str) -> usize {
    param(query, "limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(LIMIT_DEFAULT)
        .min(LIMIT_MAX)
}

/// The value of `name` in a query string, percent-decoded (`+` is a space).
fn param(query: &str, name: &str) -> Option<String> {
    let raw = query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)?
        .1;
    let raw = &raw[..raw.len().min(SEARCH_BYTES_MAX * 3)];
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded_and_limits_capped() {
        assert_eq!(param("limit=5&q=a%2Fb+c", "q").as_deref(), Some("a/b c"));
        assert_eq!(param("q=%zz", "q").as_deref(), Some("%zz"));
        assert_eq!(param("q=%4", "q").as_deref(), Some("%4"));
        assert_eq!(param("q", "q").as_deref(), Some(""));
        assert_eq!(param("x=1", "q"), None);
        assert_eq!(limit("limit=5"), 5);
        assert_eq!(limit("limit=99999999"), LIMIT_MAX);
        assert_eq!(limit("limit=-1"), LIMIT_DEFAULT);
        assert_eq!(limit(""), LIMIT_DEFAULT);
    }

    #[test]
    fn stats_sum_shards_and_take_the_largest_retained_replica() {
        let m = Metrics::new(2);
        m.shards()[0].messages_received.set(3);
        m.shards()[1].messages_received.set(4);
        m.shards()[0].retained_messages.set(2);
        m.shards()[1].retained_messages.set(2);
        let v: Value = serde_json::from_str(&stats(&m)).unwrap_or(Value::Null);
        assert_eq!(v["totals"]["messages_received"], 7);
        assert_eq!(v["totals"]["retained_messages"], 2);
        assert_eq!(v["per_shard"][1]["messages_received"], 4);
    }
}
