//! `$SYS` statistics, black box: figures from every shard are summed and published as
//! retained messages under Mosquitto's names; clients cannot publish into `$SYS`.

mod common;

use std::time::{Duration, Instant};

use common::{spread_ids, Broker, RawClient, WAIT};

/// Wait (bounded) until `topic` carries `want`. The reader stays connected throughout, so
/// it is counted the same way in every report: first the retained copy, then each update.
fn wait_for_value(b: &Broker, topic: &str, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    let mut c = RawClient::clean(b.addr(), &format!("sys-reader-{}", topic.len()));
    c.subscribe(topic, 0);
    let mut last = String::new();
    while Instant::now() < deadline {
        last = c.expect_publish(WAIT).text();
        if last == want {
            return;
        }
    }
    panic!("{topic}: last value {last:?}, wanted {want:?}");
}

#[test]
fn statistics_sum_every_shard() {
    let b = Broker::start(&["--shards", "4", "--sys-interval", "1"]);
    let ids = spread_ids("sys", 5, 4);
    let clients: Vec<RawClient> = ids
        .iter()
        .map(|id| RawClient::clean(b.addr(), id))
        .collect();
    // Five clients on four shards, plus the reader itself while it reads.
    wait_for_value(
        &b,
        "$SYS/broker/clients/connected",
        "6",
        Duration::from_secs(8),
    );
    wait_for_value(&b, "$SYS/broker/shards", "4", Duration::from_secs(3));
    drop(clients);
}

#[test]
fn clients_cannot_publish_into_sys() {
    let b = Broker::start(&["--shards", "2", "--sys-interval", "1"]);
    let mut watcher = RawClient::clean(b.addr(), "sys-watch");
    watcher.subscribe("$SYS/forged", 1);
    let mut c = RawClient::clean(b.addr(), "sys-forger");
    // A 3.1.1 client gets its PUBACK (the only answer it knows) but nothing is routed.
    c.publish("$SYS/forged", b"fake", 1, true);
    watcher.expect_nothing(Duration::from_millis(400));
    let mut late = RawClient::clean(b.addr(), "sys-late");
    late.subscribe("$SYS/forged", 1);
    late.expect_nothing(Duration::from_millis(300));
    // The real figures are there all the same.
    wait_for_value(&b, "$SYS/broker/shards", "2", Duration::from_secs(4));
}

#[test]
fn figures_are_retained_for_new_subscribers() {
    let b = Broker::start(&["--shards", "2", "--sys-interval", "1"]);
    wait_for_value(&b, "$SYS/broker/shards", "2", Duration::from_secs(4));
    // A new subscriber gets the value as a retained message (RETAIN=1) right after its
    // SUBACK; live updates of later intervals (RETAIN=0) may come too.
    let mut c = RawClient::clean(b.addr(), "sys-retained");
    c.subscribe("$SYS/broker/version", 0);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let m = c.expect_publish(WAIT);
        assert!(m.text().starts_with("shardmq version"), "{:?}", m.text());
        seen.push(m.retain);
        if m.retain {
            return;
        }
    }
    panic!("no retained copy among {seen:?}");
}

/// Every topic Mosquitto's `$SYS` tree has that exporters read, seen by `mosquitto_sub`.
#[test]
fn mosquitto_sub_sees_the_whole_tree() {
    let b = Broker::start(&["--shards", "2", "--sys-interval", "1"]);
    let mut keep = RawClient::clean(b.addr(), "sys-tree");
    keep.subscribe("x/y", 1);
    keep.publish("r/kept", b"12345", 1, true);
    // The keeper and the reader: the figures now count this test's traffic.
    wait_for_value(
        &b,
        "$SYS/broker/clients/maximum",
        "2",
        Duration::from_secs(4),
    );
    let port = b.addr().port().to_string();
    // Retained values arrive at once: -C stops after that many, -W bounds the wait.
    let out = std::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-t", "$SYS/#", "-v"])
        .args(["-C", "45", "-W", "10", "-i", "sys-mosquitto-sub"])
        .output()
        .expect("run mosquitto_sub");
    let text = String::from_utf8_lossy(&out.stdout);
    // Topic names may hold spaces ("retained messages/count"): split at the last one.
    let values: std::collections::HashMap<&str, &str> =
        text.lines().filter_map(|l| l.rsplit_once(' ')).collect();
    let mut want: Vec<String> = [
        "clients/connected",
        "clients/total",
        "clients/maximum",
        "clients/disconnected",
        "clients/expired",
        "messages/stored",
        "messages/received",
        "messages/sent",
        "store/messages/count",
        "store/messages/bytes",
        "subscriptions/count",
        "retained messages/count",
        "heap/current",
        "memory/accounted",
        "memory/limit",
        "publish/messages/received",
        "publish/messages/sent",
        "publish/bytes/received",
        "bytes/received",
        "bytes/sent",
    ]
    .iter()
    .map(|t| format!("$SYS/broker/{t}"))
    .collect();
    for kind in ["messages", "bytes", "publish"] {
        for dir in ["received", "sent"] {
            for w in ["1min", "5min", "15min"] {
                want.push(format!("$SYS/broker/load/{kind}/{dir}/{w}"));
            }
        }
    }
    for t in &want {
        assert!(
            values.contains_key(t.as_str()),
            "{t} missing from:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let num = |t: &str| -> f64 {
        values[format!("$SYS/broker/{t}").as_str()]
            .parse()
            .unwrap_or_else(|_| panic!("{t} is not a number"))
    };
    assert!(num("store/messages/bytes") >= 5.0, "the retained payload");
    assert!(num("subscriptions/count") >= 1.0);
    assert!(num("heap/current") > 1e6, "resident bytes");
    assert!(num("clients/maximum") >= num("clients/connected"));
    assert!(num("load/publish/received/1min") > 0.0);
    // The two values with spaces of their own.
    assert!(
        text.lines().any(|l| l
            .strip_prefix("$SYS/broker/uptime ")
            .and_then(|v| v.strip_suffix(" seconds"))
            .is_some_and(|n| n.parse::<u64>().is_ok())),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "$SYS/broker/version shardmq version {}\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
}
