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
