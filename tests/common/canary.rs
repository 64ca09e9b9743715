//! The canary of the storm tests and the malformed-input matrix: a QoS 1 publisher and
//! subscriber on different shards that publish one message every 10 ms on a thread of their
//! own while a test runs its storm, every message delivered in order; then either the raw
//! latencies ([`Canary::latencies`]) or a printed p99 and max held to a bound
//! ([`Canary::finish`]: `SHARDMQ_ROBUST_CANARY_P99_MS`, 250 ms by default, generous
//! because the tests run as debug builds on shared machines).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{id_on, Broker, RawClient, WAIT};

/// Round trips kept at most; past it the canary stops publishing (a test never runs that
/// long: 100,000 × 10 ms is over 16 minutes).
const SAMPLES_MAX: usize = 100_000;

/// A running canary; `finish` stops it and checks its latencies.
pub struct Canary {
    tag: String,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Duration>>,
}

/// The canary's figures, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub round_trips: usize,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Canary {
    /// Connect the pair (subscriber on shard 0, publisher on shard 1 of `shards`) and
    /// start publishing; returns once the subscription is acknowledged.
    pub fn start(b: &Broker, tag: &str, shards: usize) -> Canary {
        let topic = format!("canary/{tag}");
        let mut sub = RawClient::clean(b.addr(), &id_on(&format!("canary-sub-{tag}"), 0, shards));
        sub.subscribe(&topic, 1);
        let mut publ = RawClient::clean(b.addr(), &id_on(&format!("canary-pub-{tag}"), 1, shards));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut lat = Vec::new();
            let mut n = 0u32;
            // At least one round trip, so a canary stopped at once still proves liveness.
            while lat.is_empty() || (!flag.load(Ordering::Relaxed) && lat.len() < SAMPLES_MAX) {
                n += 1;
                let t = Instant::now();
                publ.publish(&topic, &n.to_be_bytes(), 1, false);
                let m = sub.expect_publish(WAIT);
                assert_eq!(
                    m.payload,
                    n.to_be_bytes(),
                    "canary message {n} lost or late"
                );
                sub.ack(&m);
                lat.push(t.elapsed());
                // Pacing, not waiting for anything: a steady trickle through the storm.
                std::thread::sleep(Duration::from_millis(10));
            }
            publ.ping();
            sub.ping();
            lat
        });
        Canary {
            tag: tag.to_owned(),
            stop,
            thread,
        }
    }

    /// Stop the canary and return its round-trip times, shortest first (never empty).
    pub fn latencies(self) -> Vec<Duration> {
        self.stop.store(true, Ordering::Relaxed);
        let mut lat = match self.thread.join() {
            Ok(lat) => lat,
            Err(e) => std::panic::resume_unwind(e),
        };
        lat.sort_unstable();
        lat
    }

    /// Stop the canary, print its p99 and max, and assert the p99 bound.
    pub fn finish(self) -> Report {
        let tag = self.tag.clone();
        let lat = self.latencies();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let idx = (lat.len() * 99).div_ceil(100).saturating_sub(1);
        let report = Report {
            round_trips: lat.len(),
            p99_ms: ms(lat[idx]),
            max_ms: lat.last().map_or(0.0, |d| ms(*d)),
        };
        eprintln!(
            "canary [{}]: {} QoS 1 round trips, p99 {:.1} ms, max {:.1} ms",
            tag, report.round_trips, report.p99_ms, report.max_ms
        );
        let bound = std::env::var("SHARDMQ_ROBUST_CANARY_P99_MS")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(250.0);
        assert!(
            report.p99_ms <= bound,
            "canary [{}] p99 {:.1} ms over {bound} ms",
            tag,
            report.p99_ms
        );
        report
    }
}
