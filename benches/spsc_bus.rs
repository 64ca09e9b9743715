//! Benchmarks for the cross-shard SPSC ring (`shard::bus::spsc`).
//!
//! `spsc_push_pop`: one thread, push then pop, the uncontended cost of the two operations.
//! `spsc_push_pop_batch`: one thread, 64 pushes then one `pop_batch`.
//! `spsc_cross_thread`: a producer (this thread) and a consumer thread on another core,
//! reported in items per second; measures the cache-line traffic the layout is built to cut.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardmq::shard::bus::spsc::{channel, Consumer};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

const RING_SLOTS: usize = 1024;
const BATCH_MAX: usize = 64;
/// Sent by the bench to stop the consumer thread.
const STOP: u64 = u64::MAX;
/// Busy-wait this many rounds before yielding, so an oversubscribed machine still progresses.
const SPINS_BEFORE_YIELD: u32 = 128;

/// Back off while waiting for the other thread: spin first, then give the core away.
fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < SPINS_BEFORE_YIELD {
        std::hint::spin_loop();
    } else {
        *spins = 0;
        std::thread::yield_now();
    }
}

/// Pin the calling thread to the `cpu`-th CPU this process may use, if there is one;
/// otherwise run unpinned.
fn pin_to_cpu(cpu: usize) {
    if let Some(core) = core_affinity::get_core_ids().and_then(|ids| ids.get(cpu).copied()) {
        core_affinity::set_for_current(core);
    }
}

fn spsc_push_pop(c: &mut Criterion) {
    let (mut producer, mut consumer) = channel::<u64>(RING_SLOTS);
    let mut group = c.benchmark_group("spsc_push_pop");
    group.throughput(Throughput::Elements(1));
    group.bench_function("u64", |b| {
        b.iter(|| {
            let _ = black_box(producer.push(black_box(7)));
            black_box(consumer.pop())
        })
    });
    group.finish();
}

fn spsc_push_pop_batch(c: &mut Criterion) {
    let (mut producer, mut consumer) = channel::<u64>(RING_SLOTS);
    let mut out = Vec::with_capacity(BATCH_MAX);
    let mut group = c.benchmark_group("spsc_push_pop_batch");
    group.throughput(Throughput::Elements(BATCH_MAX as u64));
    group.bench_function("u64x64", |b| {
        b.iter(|| {
            for value in 0..BATCH_MAX as u64 {
                let _ = producer.push(black_box(value));
            }
            out.clear();
            black_box(consumer.pop_batch(&mut out, BATCH_MAX))
        })
    });
    group.finish();
}

/// Drain `consumer` in batches on CPU 1, publishing how many values it has seen.
fn spawn_consumer(mut consumer: Consumer<u64>, seen: Arc<AtomicU64>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        pin_to_cpu(1);
        let mut out = Vec::with_capacity(BATCH_MAX);
        let mut count = 0;
        let mut spins = 0;
        loop {
            out.clear();
            if consumer.pop_batch(&mut out, BATCH_MAX) == 0 {
                backoff(&mut spins);
                continue;
            }
            if out.last() == Some(&STOP) {
                return;
            }
            count += out.len() as u64;
            seen.store(count, Ordering::Release);
        }
    })
}

fn spsc_cross_thread(c: &mut Criterion) {
    pin_to_cpu(0);
    let (mut producer, consumer) = channel::<u64>(RING_SLOTS);
    let seen = Arc::new(AtomicU64::new(0));
    let drainer = spawn_consumer(consumer, Arc::clone(&seen));
    let mut sent = 0u64;
    let mut group = c.benchmark_group("spsc_cross_thread");
    group.throughput(Throughput::Elements(1));
    group.bench_function("u64", |b| {
        b.iter_custom(|iters| {
            let started = std::time::Instant::now();
            let mut spins = 0;
            for value in 0..iters {
                while producer.push(value).is_err() {
                    backoff(&mut spins);
                }
            }
            sent += iters;
            while seen.load(Ordering::Acquire) < sent {
                backoff(&mut spins);
            }
            started.elapsed()
        })
    });
    group.finish();
    while producer.push(STOP).is_err() {
        std::hint::spin_loop();
    }
    drainer.join().expect("consumer thread");
}

criterion_group!(
    benches,
    spsc_push_pop,
    spsc_push_pop_batch,
    spsc_cross_thread
);
criterion_main!(benches);
