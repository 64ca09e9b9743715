//! Benchmarks for the shard timer wheel (`timer`), at 100k pending timers, about a
//! busy shard's keepalive and retransmission load.
//!
//! `timer_insert_cancel`: one insert plus one cancel against a loaded wheel (a keepalive
//! reset). `timer_advance/fire_100k`: advance 10 ms at a time until all 100k timers spread
//! over 100 s have fired, per timer. `timer_advance/idle_tick`: one 10 ms advance where
//! nothing is due, the cost every loop turn pays.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shardmq::timer::TimerWheel;
use std::hint::black_box;

const TIMERS: u64 = 100_000;
const START_MS: u64 = 1_700_000_000_000;
const DECADE_MS: u64 = 10 * 365 * 24 * 3_600_000;

/// Deterministic xorshift so runs are comparable without a rand dependency.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A wheel at `START_MS` holding `TIMERS` timers with deadlines spread over `spread_ms`.
fn loaded_wheel(spread_ms: u64) -> TimerWheel {
    let mut wheel = TimerWheel::new(START_MS);
    let mut state = 0x9E37_79B9_7F4A_7C15;
    for key in 0..TIMERS {
        wheel.insert(START_MS + 1 + next_random(&mut state) % spread_ms, key);
    }
    wheel
}

fn timer_insert_cancel(c: &mut Criterion) {
    let mut wheel = loaded_wheel(3_600_000);
    let mut state = 42;
    let mut group = c.benchmark_group("timer_insert_cancel");
    group.throughput(Throughput::Elements(1));
    group.bench_function("100k_pending", |b| {
        b.iter(|| {
            let deadline_ms = START_MS + next_random(&mut state) % 3_600_000;
            let id = wheel.insert(black_box(deadline_ms), 7);
            black_box(wheel.cancel(id))
        })
    });
    group.finish();
}

fn timer_advance(c: &mut Criterion) {
    let mut group = c.benchmark_group("timer_advance");
    group.throughput(Throughput::Elements(TIMERS));
    group.sample_size(10);
    group.bench_function("fire_100k", |b| {
        b.iter_batched(
            || (loaded_wheel(100_000), Vec::with_capacity(TIMERS as usize)),
            |(mut wheel, mut out)| {
                let mut now_ms = START_MS;
                while !wheel.is_empty() {
                    now_ms += 10;
                    wheel.advance(now_ms, &mut out);
                }
                assert_eq!(out.len() as u64, TIMERS);
                (wheel, out)
            },
            BatchSize::LargeInput,
        )
    });
    group.throughput(Throughput::Elements(1));
    group.sample_size(100);
    // Deadlines ten years out: even a billion 10 ms steps (four months) never reach them.
    let mut wheel = TimerWheel::new(START_MS);
    let mut state = 7;
    for key in 0..TIMERS {
        wheel.insert(
            START_MS + DECADE_MS + next_random(&mut state) % 3_600_000,
            key,
        );
    }
    let mut out = Vec::new();
    let mut now_ms = START_MS;
    group.bench_function("idle_tick", |b| {
        b.iter(|| {
            now_ms += 10;
            wheel.advance(black_box(now_ms), &mut out);
        })
    });
    assert!(out.is_empty(), "idle_tick fired a timer");
    group.finish();
}

criterion_group!(benches, timer_insert_cancel, timer_advance);
criterion_main!(benches);
