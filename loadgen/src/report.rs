//! The result of a run: human summary and the machine-readable `RESULT` line.
//!
//! Owns: the `Summary` record, percentile extraction from the merged hdrhistogram, the
//! derived rates and ratios, and their formatting. Must not touch: sockets, threads.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Latency (or connect time) percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

impl Percentiles {
    /// Percentiles of a histogram recorded in nanoseconds; `None` when it is empty.
    pub fn from_ns(h: &Histogram<u64>) -> Option<Percentiles> {
        if h.is_empty() {
            return None;
        }
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Some(Percentiles {
            count: h.len(),
            p50: us(0.5),
            p90: us(0.9),
            p99: us(0.99),
            p999: us(0.999),
            max: h.max() as f64 / 1000.0,
        })
    }
}

/// What the broker process did during the run (from /proc).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BrokerStats {
    /// CPU seconds (user + system) spent between the start of the run and the end of the
    /// drain.
    pub cpu_s: f64,
    /// Peak resident set size in KiB (max of sampled VmRSS and the final VmHWM).
    pub peak_rss_kib: u64,
    /// Resident set growth per held connection, bytes (conns scenario).
    pub rss_per_conn_b: Option<f64>,
}

/// Connection set-up figures (storm and conns scenarios).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectStats {
    /// From the first connect to the last CONNACK.
    pub secs: f64,
    /// Successful connections.
    pub connected: u64,
    /// Time from TCP connect to CONNACK per connection.
    pub times: Option<Percentiles>,
}

/// Everything a run reports.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Scenario name.
    pub scenario: String,
    /// "3.1.1" or "5".
    pub mqtt: String,
    /// QoS level.
    pub qos: u8,
    /// Payload bytes.
    pub payload: usize,
    /// Connections opened.
    pub conns: usize,
    /// Publishers.
    pub publishers: usize,
    /// Subscribers.
    pub subscribers: usize,
    /// Load threads.
    pub threads: usize,
    /// Length of the run phase, seconds.
    pub duration_s: f64,
    /// Offered rate (messages/s, all publishers), `None` for closed loop.
    pub rate: Option<f64>,
    /// Closed-loop window per publisher.
    pub window: u64,
    /// Messages published during the run.
    pub published: u64,
    /// Deliveries counted by the end of the run phase.
    pub delivered_in_run: u64,
    /// Deliveries expected (messages sent × subscribers per message).
    pub expected: u64,
    /// Distinct deliveries by the end of the drain.
    pub unique: u64,
    /// Duplicates.
    pub dups: u64,
    /// Delivered out of order (counted in `unique`).
    pub late: u64,
    /// End-to-end latency.
    pub latency: Option<Percentiles>,
    /// Broker process figures, when its PID was given.
    pub broker: Option<BrokerStats>,
    /// Connection set-up figures.
    pub connect: Option<ConnectStats>,
    /// Connections that failed.
    pub failures: u64,
    /// Closed-loop windows forgiven after a stall (a sign of loss).
    pub stalls: u64,
    /// A few error messages.
    pub errors: Vec<String>,
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(x) => format!("{x:.decimals$}"),
        None => "na".to_string(),
    }
}

impl Summary {
    /// Deliveries expected but not received.
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.unique)
    }

    /// Messages published per second.
    pub fn pub_rate(&self) -> f64 {
        self.published as f64 / self.duration_s.max(1e-9)
    }

    /// Deliveries per second during the run phase.
    pub fn deliv_rate(&self) -> f64 {
        self.delivered_in_run as f64 / self.duration_s.max(1e-9)
    }

    /// Broker CPU microseconds per delivered message.
    pub fn cpu_us_per_msg(&self) -> Option<f64> {
        let b = self.broker?;
        (self.unique > 0).then(|| b.cpu_s * 1e6 / self.unique as f64)
    }

    /// The single machine-readable line.
    pub fn result_line(&self) -> String {
        let lat = |f: fn(&Percentiles) -> f64| opt(self.latency.as_ref().map(f), 1);
        let b = self.broker;
        let c = self.connect;
        let loss_pct =
            (self.expected > 0).then(|| self.lost() as f64 * 100.0 / self.expected as f64);
        let mut s = String::from("RESULT");
        let mut kv = |k: &str, v: String| {
            let _ = write!(s, " {k}={v}");
        };
        kv("scenario", self.scenario.clone());
        kv("mqtt", self.mqtt.clone());
        kv("qos", self.qos.to_string());
        kv("payload", self.payload.to_string());
        kv("conns", self.conns.to_string());
        kv("pubs", self.publishers.to_string());
        kv("subs", self.subscribers.to_string());
        kv("threads", self.threads.to_string());
        kv("duration_s", format!("{:.2}", self.duration_s));
        kv("rate", opt(self.rate, 0));
        kv("window", self.window.to_string());
        kv("published", self.published.to_string());
        kv("pub_per_s", format!("{:.0}", self.pub_rate()));
        kv("delivered", self.unique.to_string());
        kv("deliv_per_s", format!("{:.0}", self.deliv_rate()));
        kv("expected", self.expected.to_string());
        kv("lost", self.lost().to_string());
        kv("loss_pct", opt(loss_pct, 4));
        kv("dups", self.dups.to_string());
        kv("out_of_order", self.late.to_string());
        kv("p50_us", lat(|p| p.p50));
        kv("p90_us", lat(|p| p.p90));
        kv("p99_us", lat(|p| p.p99));
        kv("p999_us", lat(|p| p.p999));
        kv("max_us", lat(|p| p.max));
        kv("broker_cpu_s", opt(b.map(|b| b.cpu_s), 3));
        kv("broker_cpu_us_per_msg", opt(self.cpu_us_per_msg(), 3));
        kv(
            "broker_peak_rss_kib",
            opt(b.map(|b| b.peak_rss_kib as f64), 0),
        );
        kv("rss_per_conn_b", opt(b.and_then(|b| b.rss_per_conn_b), 0));
        kv("connected", opt(c.map(|c| c.connected as f64), 0));
        kv("connect_s", opt(c.map(|c| c.secs), 3));
        kv(
            "connects_per_s",
            opt(c.map(|c| c.connected as f64 / c.secs.max(1e-9)), 0),
        );
        kv("failures", self.failures.to_string());
        kv("stalls", self.stalls.to_string());
        s
    }

    /// The human-readable summary (several lines).
    pub fn human(&self) -> String {
        let mut s = String::new();
        let rate = self.rate.map_or("closed loop".to_string(), |r| {
            format!("{r:.0} msg/s offered")
        });
        let _ = writeln!(
            s,
            "{} | MQTT {} QoS {} | {} B payload | {} conns ({} pub, {} sub) | {} thread(s) | {:.2} s | {}",
            self.scenario, self.mqtt, self.qos, self.payload, self.conns, self.publishers,
            self.subscribers, self.threads, self.duration_s, rate
        );
        if self.publishers > 0 {
            let _ =
                writeln!(
                s,
                "  published {} ({:.0}/s), delivered {} ({:.0}/s in run), lost {} of {}, dups {}",
                self.published, self.pub_rate(), self.unique, self.deliv_rate(), self.lost(),
                self.expected, self.dups
            );
        }
        if let Some(p) = &self.latency {
            let _ = writeln!(
                s,
                "  latency µs: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
                p.p50, p.p90, p.p99, p.p999, p.max
            );
        }
        self.human_extra(&mut s);
        s
    }

    fn human_extra(&self, s: &mut String) {
        if let Some(c) = &self.connect {
            let _ = writeln!(
                s,
                "  connected {} of {} in {:.3} s ({:.0} connects/s)",
                c.connected,
                self.conns,
                c.secs,
                c.connected as f64 / c.secs.max(1e-9)
            );
            if let Some(p) = &c.times {
                let _ = writeln!(
                    s,
                    "  connect µs: p50 {:.0}  p99 {:.0}  max {:.0}",
                    p.p50, p.p99, p.max
                );
            }
        }
        if let Some(b) = &self.broker {
            let _ = write!(
                s,
                "  broker: {:.3} CPU s, peak RSS {} KiB",
                b.cpu_s, b.peak_rss_kib
            );
            if let Some(us) = self.cpu_us_per_msg() {
                let _ = write!(s, ", {us:.3} CPU µs/delivery");
            }
            if let Some(r) = b.rss_per_conn_b {
                let _ = write!(s, ", {r:.0} B RSS/conn");
            }
            s.push('\n');
        }
        if self.failures > 0 || self.stalls > 0 {
            let _ = writeln!(
                s,
                "  failures {}, stalled windows {}",
                self.failures, self.stalls
            );
        }
        for e in &self.errors {
            let _ = writeln!(s, "  error: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Summary {
        Summary {
            scenario: "pairs".into(),
            mqtt: "5".into(),
            qos: 1,
            payload: 64,
            conns: 16,
            publishers: 8,
            subscribers: 8,
            threads: 1,
            duration_s: 2.0,
            window: 100,
            published: 1000,
            delivered_in_run: 900,
            expected: 1000,
            unique: 990,
            dups: 3,
            late: 0,
            broker: Some(BrokerStats {
                cpu_s: 0.5,
                peak_rss_kib: 2048,
                rss_per_conn_b: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn result_line_has_every_key_once() {
        let line = sample().result_line();
        assert!(line.starts_with("RESULT scenario=pairs mqtt=5 qos=1 "));
        assert!(line.contains(" pub_per_s=500 "));
        assert!(line.contains(" deliv_per_s=450 "));
        assert!(line.contains(" lost=10 loss_pct=1.0000 dups=3 "));
        assert!(line.contains(" p99_us=na "));
        assert!(line.contains(" broker_cpu_us_per_msg=505.051 "));
        let keys: Vec<&str> = line
            .split(' ')
            .skip(1)
            .map(|kv| kv.split('=').next().unwrap())
            .collect();
        let mut dedup = keys.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(keys.len(), dedup.len());
        assert!(line.split(' ').skip(1).all(|kv| kv.split('=').count() == 2));
    }

    #[test]
    fn percentiles_in_microseconds() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for i in 1..=1000u64 {
            h.record(i * 1000).unwrap();
        }
        let p = Percentiles::from_ns(&h).unwrap();
        assert_eq!(p.count, 1000);
        assert!((p.p50 - 500.0).abs() < 1.0, "{}", p.p50);
        assert!((p.max - 1000.0).abs() < 1.0);
        assert!(Percentiles::from_ns(&Histogram::<u64>::new(3).unwrap()).is_none());
    }

    #[test]
    fn human_summary_mentions_loss() {
        let h = sample().human();
        assert!(h.contains("lost 10 of 1000"), "{h}");
        assert!(h.contains("CPU µs/delivery"), "{h}");
    }
}
