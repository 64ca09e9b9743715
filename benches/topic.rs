//! Criterion benches for `src/topic`, one group per hot function:
//! `trie_match` (FilterTrie::for_each_match, per publish), `retained_match`
//! (TopicTree::for_each_matching, and the paced walk SUBSCRIBE uses,
//! TopicTree::walk_matching in slices of 1,024 steps), `valid_filter` and friends (per SUBSCRIBE /
//! PUBLISH / ACL check). Each structure is also timed against a linear scan with `matches`,
//! the oracle, so the numbers in docs/decisions/0002-topic-trie.md have a baseline.

use criterion::{black_box, criterion_group, Criterion, Throughput};
use shardmq::topic::retained::MatchCursor;
use shardmq::topic::{
    matches, parse_filter, valid_filter, valid_topic_name, FilterTrie, TopicTree,
};

/// Deterministic xorshift64*, so every run benches the same workload.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

const FILTERS: usize = 10_000;
const KINDS: [&str; 4] = ["temp", "hum", "power", "door"];
const METRICS: [&str; 2] = ["value", "status"];

/// A filter from an IoT-like scheme `site/dev/kind/metric`: 60% exact, 15% `+` on the last
/// level, 15% `#` below a device, 10% `+` on the first two levels.
fn filter(rng: &mut Rng) -> String {
    let site = rng.below(10);
    let dev = rng.below(300);
    let kind = KINDS[rng.below(4) as usize];
    let metric = METRICS[rng.below(2) as usize];
    match rng.below(20) {
        0..=11 => format!("site{site}/dev{dev}/{kind}/{metric}"),
        12..=14 => format!("site{site}/dev{dev}/{kind}/+"),
        15..=17 => format!("site{site}/dev{dev}/#"),
        18 => format!("+/dev{dev}/{kind}/{metric}"),
        _ => format!("site{site}/+/{kind}/{metric}"),
    }
}

fn topic(rng: &mut Rng) -> String {
    let kind = KINDS[rng.below(4) as usize];
    let metric = METRICS[rng.below(2) as usize];
    format!(
        "site{}/dev{}/{kind}/{metric}",
        rng.below(10),
        rng.below(300)
    )
}

struct TrieWorkload {
    trie: FilterTrie<usize>,
    filters: Vec<String>,
    topics: Vec<String>,
}

fn trie_workload() -> TrieWorkload {
    let mut rng = Rng(0x5eed);
    let mut trie = FilterTrie::new();
    let mut filters = Vec::new();
    while trie.len() < FILTERS {
        let f = filter(&mut rng);
        let n = trie.len();
        trie.entry_or_insert_with(&f, || n);
        if trie.len() > n {
            filters.push(f);
        }
    }
    let topics: Vec<String> = (0..64).map(|_| topic(&mut rng)).collect();
    TrieWorkload {
        trie,
        filters,
        topics,
    }
}

fn trie_match(c: &mut Criterion) {
    let TrieWorkload {
        trie,
        filters,
        topics,
    } = trie_workload();
    let mut total = 0usize;
    for t in &topics {
        trie.for_each_match(t, |_| total += 1);
    }
    eprintln!(
        "trie_match: {FILTERS} filters, {:.2} matches per topic",
        total as f64 / 64.0
    );

    let mut g = c.benchmark_group("trie_match");
    g.throughput(Throughput::Elements(1));
    g.bench_function("10k_filters_4_levels", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % topics.len();
            let mut n = 0usize;
            trie.for_each_match(black_box(&topics[i]), |v| n += v);
            n
        })
    });
    g.bench_function("linear_scan_baseline", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % topics.len();
            let t = black_box(&topics[i]);
            filters.iter().filter(|f| matches(f, t)).count()
        })
    });
    g.finish();
}

/// 100k retained topics `{a..j}/{0..1000}/{a..j}`: `a/+/c` matches 1,000 of them.
fn retained_workload() -> (TopicTree<usize>, Vec<String>) {
    let firsts = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
    let mut tree = TopicTree::new();
    let mut topics = Vec::new();
    for first in firsts {
        for mid in 0..1000 {
            for last in firsts {
                let t = format!("{first}/{mid}/{last}");
                tree.insert(&t, topics.len());
                topics.push(t);
            }
        }
    }
    (tree, topics)
}

fn retained_match(c: &mut Criterion) {
    let (tree, topics) = retained_workload();
    let mut g = c.benchmark_group("retained_match");
    g.throughput(Throughput::Elements(1));
    g.bench_function("a_plus_c_100k_topics", |b| {
        b.iter(|| {
            let mut n = 0usize;
            tree.for_each_matching(black_box("a/+/c"), |t, _| n += t.len());
            n
        })
    });
    g.bench_function("a_plus_c_100k_topics_paced_walk", |b| {
        b.iter(|| paced_walk(&tree, black_box("a/+/c")))
    });
    g.bench_function("exact_100k_topics", |b| {
        b.iter(|| {
            let mut n = 0usize;
            tree.for_each_matching(black_box("e/512/c"), |t, _| n += t.len());
            n
        })
    });
    g.bench_function("linear_scan_baseline", |b| {
        b.iter(|| {
            topics
                .iter()
                .filter(|t| matches(black_box("a/+/c"), t))
                .count()
        })
    });
    g.finish();
}

/// What SUBSCRIBE does: the walk in slices of 1,024 steps, each slice resumed from its
/// cursor (as it would be next turn), values only.
fn paced_walk(tree: &TopicTree<usize>, filter: &str) -> usize {
    let mut cursor = MatchCursor::new(filter);
    let mut n = 0usize;
    while !tree.walk_matching(&mut cursor, 1024, |v| n += v) {}
    n
}

fn validation(c: &mut Criterion) {
    let deep = format!("{}/#", vec!["level"; 32].join("/"));
    let mut g = c.benchmark_group("valid_filter");
    g.bench_function("typical", |b| {
        b.iter(|| valid_filter(black_box("site3/dev42/+/status")))
    });
    g.bench_function("33_levels", |b| b.iter(|| valid_filter(black_box(&deep))));
    g.finish();
    c.bench_function("valid_topic_name", |b| {
        b.iter(|| valid_topic_name(black_box("site3/dev42/temp/value")))
    });
    c.bench_function("parse_filter", |b| {
        b.iter(|| parse_filter(black_box("$share/workers/site3/dev42/+/status")))
    });
    c.bench_function("matches", |b| {
        b.iter(|| {
            matches(
                black_box("site3/+/temp/#"),
                black_box("site3/dev42/temp/value"),
            )
        })
    });
}

/// Instruction-count mode, immune to the noise of a shared machine: with
/// `TOPIC_BENCH_ICOUNT=<bench>:<iterations>` the binary builds the workload, runs the hot
/// function that many times and exits. Run it under `valgrind --tool=cachegrind
/// --cache-sim=no` with 0 and with N iterations; the difference over N is instructions per
/// call.
fn icount(spec: &str) {
    let (name, iters) = spec.split_once(':').unwrap_or((spec, "0"));
    let iters: usize = iters.parse().unwrap_or(0);
    let mut sink = 0usize;
    match name {
        "trie_match" => {
            let w = trie_workload();
            for i in 0..iters {
                let t = black_box(&w.topics[i % w.topics.len()]);
                w.trie.for_each_match(t, |v| sink += v);
            }
        }
        "retained_match" => {
            let (tree, _) = retained_workload();
            for _ in 0..iters {
                tree.for_each_matching(black_box("a/+/c"), |t, _| sink += t.len());
            }
        }
        "retained_walk" => {
            let (tree, _) = retained_workload();
            for _ in 0..iters {
                sink += paced_walk(&tree, black_box("a/+/c"));
            }
        }
        "valid_topic_name" => {
            for _ in 0..iters {
                sink += usize::from(valid_topic_name(black_box("site3/dev42/temp/value")));
            }
        }
        "valid_filter" => {
            for _ in 0..iters {
                sink += usize::from(valid_filter(black_box("site3/dev42/+/status")));
            }
        }
        "valid_filter_deep" => {
            let deep = format!("{}/#", vec!["level"; 32].join("/"));
            for _ in 0..iters {
                sink += usize::from(valid_filter(black_box(&deep)));
            }
        }
        _ => eprintln!("unknown bench {name}"),
    }
    black_box(sink);
}

criterion_group!(benches, trie_match, retained_match, validation);

/// `TOPIC_BENCH_WORST_INSERT=N`: subscribes `big/0` .. `big/N-1` (one node with N children)
/// and prints the slowest single insertion, the slowest 1,024 in a row (one SUBSCRIBE's
/// worth) and the total: what a SUBSCRIBE can cost its shard in one turn as the node's
/// children map grows.
fn worst_insert(n: usize) {
    use std::time::{Duration, Instant};
    let mut trie = FilterTrie::new();
    let (mut worst, mut worst_at) = (Duration::ZERO, 0);
    let (mut packet, mut worst_packet) = (Duration::ZERO, Duration::ZERO);
    let start = Instant::now();
    for i in 0..n {
        let f = format!("big/{i}");
        let t = Instant::now();
        trie.entry_or_insert_with(&f, || i);
        let d = t.elapsed();
        if d > worst {
            (worst, worst_at) = (d, i);
        }
        packet += d;
        if i % 1024 == 1023 {
            worst_packet = worst_packet.max(packet);
            packet = Duration::ZERO;
        }
    }
    eprintln!(
        "worst_insert: {n} children, slowest insertion {worst:?} (the {worst_at}th), \
         slowest 1,024 in a row {worst_packet:?}, total {:?}",
        start.elapsed()
    );
    black_box(trie.len());
}

fn main() {
    if let Some(n) = std::env::var("TOPIC_BENCH_WORST_INSERT")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        worst_insert(n);
        return;
    }
    if let Ok(spec) = std::env::var("TOPIC_BENCH_ICOUNT") {
        icount(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
