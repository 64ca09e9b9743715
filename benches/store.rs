//! Benchmarks for the store's hot path (`store::frame`, `store::wal`): what a shard pays
//! per record on the publish path, before any `fdatasync` (which runs on the sync thread).
//!
//! `store_encode_frame`: encode one `MessageStored` (100-byte payload, 5.0 properties
//! absent) into a reused batch. `store_append`: `Wal::append` of a message plus the session
//! reference, with `end_turn` (one `write`) every 64 records, sync thread running.
//! `store_subscriptions`: the shadow's worst case for one session's subscriptions (a
//! sorted `Vec`, `store::state::Subscriptions`): the default most a client may hold,
//! 10,000, added in a scattered order and then removed in another, per subscription;
//! beside it the `BTreeMap` the shadow held before, for the ratio.

use std::borrow::Cow;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardmq::store::frame::encode_frame;
use shardmq::store::state::Subscriptions;
use shardmq::store::{MessageProps, MsgId, Record, StoredMessage, Subscription, Wal, WalOptions};

/// Records per simulated loop turn.
const RECORDS_PER_TURN: u64 = 64;

fn message(id: u64) -> Record<'static> {
    Record::MessageStored {
        id: MsgId(id),
        msg: StoredMessage {
            topic: Cow::Borrowed("sensors/building-7/floor-3/temperature"),
            payload: Cow::Owned(vec![0x5a; 100]),
            qos: 1,
            retain: false,
            expires_at_unix_ms: None,
            props: MessageProps::default(),
            share_id: 0,
        },
    }
}

fn store_encode_frame(c: &mut Criterion) {
    let rec = message(1);
    let mut batch = Vec::with_capacity(1 << 20);
    let mut group = c.benchmark_group("store_encode_frame");
    group.throughput(Throughput::Elements(1));
    group.bench_function("message_100b", |b| {
        let mut lsn = 0;
        b.iter(|| {
            if batch.len() > (1 << 20) - 512 {
                batch.clear();
            }
            lsn += 1;
            encode_frame(&mut batch, lsn, black_box(&rec));
        })
    });
    group.finish();
}

fn store_append(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("shardmq-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let Ok(mut wal) = Wal::open(&dir.join("shard-0"), WalOptions::default(), || {}) else {
        eprintln!("store_append: cannot open a log under {}", dir.display());
        return;
    };
    let rec = message(1);
    let queued = Record::DeliveryQueued {
        client_id: Cow::Borrowed("client-0001"),
        msg: MsgId(1),
        qos: 1,
        retain: false,
        sub_ids: Cow::Borrowed(&[]),
        txn: 0,
    };
    let mut group = c.benchmark_group("store_append");
    group.throughput(Throughput::Elements(2));
    group.bench_function("message_and_reference", |b| {
        b.iter(|| {
            black_box(wal.append(black_box(&rec)));
            let lsn = wal.append(black_box(&queued));
            if lsn % RECORDS_PER_TURN == 0 && wal.end_turn().is_err() {
                eprintln!("store_append: write failed");
            }
        })
    });
    group.finish();
    drop(wal);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Subscriptions one session may hold by default (`max_subscriptions_per_client`).
const SUBSCRIPTIONS_MAX: u64 = 10_000;

/// The `i`th of `SUBSCRIPTIONS_MAX` filters, in an order scattered by a multiplier prime
/// to the count, so adds and removals land all over the sorted `Vec`.
fn scattered_filter(i: u64, step: u64) -> String {
    format!("site/{:05}/telemetry/#", (i * step) % SUBSCRIPTIONS_MAX)
}

fn store_subscriptions(c: &mut Criterion) {
    let adds: Vec<String> = (0..SUBSCRIPTIONS_MAX)
        .map(|i| scattered_filter(i, 7_919))
        .collect();
    let removes: Vec<String> = (0..SUBSCRIPTIONS_MAX)
        .map(|i| scattered_filter(i, 3_331))
        .collect();
    let mut group = c.benchmark_group("store_subscriptions");
    group.throughput(Throughput::Elements(SUBSCRIPTIONS_MAX));
    group.bench_function("add_and_remove_10k_scattered", |b| {
        b.iter(|| {
            let mut subs = Subscriptions::default();
            for f in &adds {
                subs.insert(&Subscription {
                    share_group: None,
                    filter: Cow::Borrowed(f),
                    qos: 1,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                    identifier: None,
                });
            }
            for f in &removes {
                black_box(subs.remove(None, f));
            }
            black_box(subs.len())
        })
    });
    // What the shadow held before (a map by (group, filter)), for the ratio.
    group.bench_function("add_and_remove_10k_scattered_map_before", |b| {
        b.iter(|| {
            let mut subs = std::collections::BTreeMap::new();
            for f in &adds {
                subs.insert((None::<String>, f.clone()), (1u8, None::<u32>));
            }
            for f in &removes {
                black_box(subs.remove(&(None, f.clone())));
            }
            black_box(subs.len())
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(std::time::Duration::from_secs(2))
        .warm_up_time(std::time::Duration::from_millis(500))
        .sample_size(20);
    targets = store_encode_frame, store_append, store_subscriptions
}
criterion_main!(benches);
