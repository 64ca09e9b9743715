//! Scenarios: who connects as what, and the monitor that drives a run through its phases.
//!
//! Owns: turning the command line into connection specs (topics, client ids, source
//! addresses), spreading them over load threads, the phase timeline (setup → run → drain →
//! stop) with its deadlines, per-second progress on stderr, broker /proc sampling and
//! assembling the `Summary`. Every wait here has a deadline, so a run always ends.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::client::{ConnSpec, Params, Role};
use crate::engine::{self, ThreadOut, KEEP_ALIVE};
use crate::proto::{QoS, Version};
use crate::report::{BrokerStats, ConnectStats, Percentiles, Summary};
use crate::stats::{phase, sample_procs, ProcSample, Shared};
use crate::{Args, Mqtt, Scenario};

/// The connections of a scenario.
#[derive(Debug)]
pub struct Plan {
    /// One spec per connection, subscribers first.
    pub specs: Vec<ConnSpec>,
    /// Number of publishers.
    pub publishers: usize,
    /// Number of subscribers.
    pub subscribers: usize,
    /// Subscribers receiving each message.
    pub fanout: u64,
}

/// The default size of each scenario.
pub fn default_count(s: Scenario) -> usize {
    match s {
        Scenario::Pairs => 8,
        Scenario::Fanout | Scenario::Fanin => 1000,
        Scenario::Latency => 1,
        Scenario::Conns | Scenario::Storm => 10_000,
    }
}

/// The largest size whose connections fit in `fd_limit` descriptors (64 kept spare).
pub fn max_count(s: Scenario, fd_limit: u64) -> usize {
    let conns = fd_limit.saturating_sub(64) as usize;
    match s {
        Scenario::Pairs | Scenario::Latency => conns / 2,
        Scenario::Fanout | Scenario::Fanin => conns.saturating_sub(1),
        Scenario::Conns | Scenario::Storm => conns,
    }
}

/// Builds the connection specs of scenario `s` with size `n`; `tag` keeps topics and client
/// ids of concurrent or successive runs apart.
pub fn plan(s: Scenario, n: usize, tag: &str, src_addrs: u8) -> Plan {
    let sub = |filter: String, first: u32, count: u32| Role::Subscriber {
        filter,
        first,
        count,
    };
    let publisher = |id: usize, topic: String| Role::Publisher {
        id: id as u32,
        topic,
    };
    let (roles, publishers, fanout): (Vec<Role>, usize, u64) = match s {
        Scenario::Pairs | Scenario::Latency => {
            let subs = (0..n).map(|i| sub(format!("{tag}/p/{i}"), i as u32, 1));
            let pubs = (0..n).map(|i| publisher(i, format!("{tag}/p/{i}")));
            (subs.chain(pubs).collect(), n, 1)
        }
        Scenario::Fanout => {
            let subs = (0..n).map(|_| sub(format!("{tag}/f"), 0, 1));
            let pubs = std::iter::once(publisher(0, format!("{tag}/f")));
            (subs.chain(pubs).collect(), 1, n as u64)
        }
        Scenario::Fanin => {
            let subs = std::iter::once(sub(format!("{tag}/in/+"), 0, n as u32));
            let pubs = (0..n).map(|i| publisher(i, format!("{tag}/in/{i}")));
            (subs.chain(pubs).collect(), n, 1)
        }
        Scenario::Conns | Scenario::Storm => ((0..n).map(|_| Role::Idle).collect(), 0, 0),
    };
    let subscribers = roles
        .iter()
        .filter(|r| matches!(r, Role::Subscriber { .. }))
        .count();
    let specs = roles
        .into_iter()
        .enumerate()
        .map(|(i, role)| ConnSpec {
            role,
            client_id: format!("{tag}-{i}"),
            src: (src_addrs > 0)
                .then(|| Ipv4Addr::new(127, 0, 0, 1 + (i % src_addrs as usize) as u8)),
        })
        .collect();
    Plan {
        specs,
        publishers,
        subscribers,
        fanout,
    }
}

/// Every subscriber becomes a member of share group `group` on its filter
/// (`$share/<group>/<filter>`), the only member of its group.
fn share_filters(plan: &mut Plan, group: &str) {
    for spec in &mut plan.specs {
        if let Role::Subscriber { filter, .. } = &mut spec.role {
            *filter = format!("$share/{group}/{filter}");
        }
    }
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    addrs
        .into_iter()
        .find(|a| matches!(a.ip(), IpAddr::V4(ip) if ip.is_loopback()))
        .ok_or_else(|| {
            format!("{host} is not an IPv4 loopback address; loadgen only drives loopback")
        })
}

fn fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_cur
}

fn params(args: &Args, broker: SocketAddr, plan: &Plan) -> Params {
    let rate = match (args.rate, args.scenario) {
        (Some(r), _) => Some(r),
        (None, Scenario::Latency) => Some(10_000.0),
        (None, _) => None,
    };
    Params {
        broker,
        sub_broker: None,
        version: match args.mqtt {
            Mqtt::V311 => Version::V3_1_1,
            Mqtt::V5 => Version::V5,
        },
        qos: QoS::from_bits(args.qos).unwrap_or_default(),
        payload: args.payload as usize,
        window: args.window.max(1),
        fanout: plan.fanout.max(1),
        rate_per_pub: rate.map(|r| r / plan.publishers.max(1) as f64),
        keep_alive: KEEP_ALIVE,
        persistent: args.persistent,
        tls: None,
        ws_path: args.ws.then(|| args.ws_path.clone()),
    }
}

/// The TLS client configuration for `--tls`: TLS 1.2 and 1.3 (ring), the CA from `cafile`.
fn tls_config(cafile: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    let path = cafile.ok_or("--tls needs --cafile")?;
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("--cafile {}: {e}", path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("--cafile {}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("--cafile {}: {e}", path.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Runs the scenario described by `args` and returns its summary.
pub fn run(args: &Args) -> Result<Summary, String> {
    let broker = resolve(&args.host, args.port)?;
    let limit = fd_limit();
    let n = match args.count {
        Some(0) => max_count(args.scenario, limit),
        Some(n) => n,
        None => default_count(args.scenario),
    }
    .max(1);
    let tag = format!("lg{}", std::process::id());
    let mut plan = plan(args.scenario, n, &tag, args.src_addrs);
    if let Some(group) = &args.share {
        share_filters(&mut plan, group);
    }
    if plan.specs.len() as u64 + 64 > limit {
        return Err(format!(
            "{} connections need more descriptors than the limit of {limit} (keep 64 spare)",
            plan.specs.len()
        ));
    }
    let mut params = params(args, broker, &plan);
    if let Some(port) = args.sub_port {
        params.sub_broker = Some(resolve(&args.host, port)?);
    }
    if args.tls {
        params.tls = Some(tls_config(args.cafile.as_deref())?);
    }
    let params = Arc::new(params);
    let shared = Arc::new(Shared::new(plan.publishers));
    let threads = args.threads.clamp(1, plan.specs.len().max(1));
    let storm = args.scenario == Scenario::Storm;
    let concurrency = match (args.connect_concurrency, storm) {
        (Some(n), _) => n,
        (None, true) => usize::MAX,
        (None, false) => 512,
    };
    let mut buckets: Vec<Vec<ConnSpec>> = vec![Vec::new(); threads];
    for (i, spec) in plan.specs.iter().cloned().enumerate() {
        buckets[i % threads].push(spec);
    }
    let base = sample_procs(&args.broker_pid);
    // A hard stop for the load threads even if this monitor never reached STOP.
    let deadline = Instant::now()
        + Duration::from_secs_f64(args.setup_timeout.max(0.1) + args.duration.max(0.0) + 60.0);
    let setup_start_ns = shared.now_ns();
    let handles: Vec<_> = buckets
        .into_iter()
        .map(|specs| {
            let (p, s) = (params.clone(), shared.clone());
            thread::spawn(move || engine::run(specs, p, s, concurrency, storm, deadline))
        })
        .collect();
    let mon = Monitor {
        args,
        shared: &shared,
        threads,
        total: plan.specs.len(),
        peak_rss: 0,
    };
    let timeline = mon.drive(&plan, base);
    let outs: Vec<ThreadOut> = handles
        .into_iter()
        .map(|h| h.join().map_err(|_| "load thread panicked".to_string()))
        .collect::<Result<_, _>>()?;
    let timeline =
        timeline.map_err(
            |e| match outs.iter().flat_map(|o| o.errors.first()).next() {
                Some(first) => format!("{e}; first error: {first}"),
                None => e,
            },
        )?;
    Ok(summarize(
        args,
        &plan,
        &params,
        threads,
        setup_start_ns,
        timeline,
        outs,
    ))
}

/// What the monitor observed.
struct Timeline {
    run_secs: f64,
    delivered_in_run: u64,
    published: u64,
    cpu_before: Option<ProcSample>,
    cpu_after: Option<ProcSample>,
    peak_rss_kib: u64,
    rss_per_conn_b: Option<f64>,
    /// Set when setup did not complete (storm, conns): the time it was given.
    setup_secs: Option<f64>,
    connected: usize,
}

struct Monitor<'a> {
    args: &'a Args,
    shared: &'a Shared,
    threads: usize,
    total: usize,
    peak_rss: u64,
}

impl Monitor<'_> {
    fn sample(&mut self) -> Option<ProcSample> {
        let s = sample_procs(&self.args.broker_pid)?;
        self.peak_rss = self.peak_rss.max(s.rss_kib).max(s.hwm_kib.min(s.rss_kib));
        Some(s)
    }

    /// Runs the phases; always leaves the phase at STOP.
    fn drive(mut self, plan: &Plan, base: Option<ProcSample>) -> Result<Timeline, String> {
        let r = self.phases(plan, base);
        self.shared.phase.store(phase::STOP, Ordering::Release);
        r
    }

    fn phases(&mut self, plan: &Plan, base: Option<ProcSample>) -> Result<Timeline, String> {
        let setup = Instant::now();
        let complete = self.wait_setup()?;
        let setup_secs = setup.elapsed().as_secs_f64();
        let connected = self.shared.connected.load(Ordering::Relaxed);
        let setup_cpu = matches!(self.args.scenario, Scenario::Storm | Scenario::Conns);
        let before = if setup_cpu { base } else { self.sample() };
        let held = self.run_phase();
        let delivered_in_run = self.shared.delivered.load(Ordering::Relaxed);
        let published = self.shared.published.load(Ordering::Relaxed);
        let run_secs =
            (self.shared.now_ns() - self.shared.run_start_ns.load(Ordering::Relaxed)) as f64 / 1e9;
        self.drain(plan.fanout);
        let after = self.sample();
        let per_conn = match (self.args.scenario, base, held) {
            (Scenario::Conns, Some(b), Some(h)) if connected > 0 => {
                Some((h.rss_kib as f64 - b.rss_kib as f64) * 1024.0 / connected as f64)
            }
            _ => None,
        };
        Ok(Timeline {
            run_secs,
            delivered_in_run,
            published,
            cpu_before: before,
            cpu_after: after,
            peak_rss_kib: self.peak_rss.max(after.map_or(0, |a| a.hwm_kib)),
            rss_per_conn_b: per_conn,
            setup_secs: (!complete).then_some(setup_secs),
            connected,
        })
    }

    /// Waits until every thread has set up its connections. Ok(false) when the deadline
    /// passed in a scenario that reports partial set-up (storm, conns).
    fn wait_setup(&mut self) -> Result<bool, String> {
        let start = Instant::now();
        let deadline = Duration::from_secs_f64(self.args.setup_timeout.max(0.1));
        let mut next_print = Duration::from_secs(1);
        while self.shared.ready_threads.load(Ordering::Acquire) < self.threads {
            if self.shared.failed.load(Ordering::Acquire) {
                return Err("a load thread failed during setup".into());
            }
            let el = start.elapsed();
            if el > deadline {
                if matches!(self.args.scenario, Scenario::Storm | Scenario::Conns) {
                    return Ok(false);
                }
                return Err(format!(
                    "setup timed out after {:.1} s: {} of {} connected",
                    el.as_secs_f64(),
                    self.shared.connected.load(Ordering::Relaxed),
                    self.total
                ));
            }
            if el >= next_print && !self.args.quiet {
                next_print += Duration::from_secs(1);
                let c = self.shared.connected.load(Ordering::Relaxed);
                eprintln!(
                    "[setup {:>4.1}s] connected {c}/{}",
                    el.as_secs_f64(),
                    self.total
                );
            }
            thread::sleep(Duration::from_millis(1));
        }
        let failed = self.shared.failures.load(Ordering::Relaxed);
        let partial_ok = matches!(self.args.scenario, Scenario::Storm | Scenario::Conns);
        if failed > 0 && !partial_ok {
            return Err(format!(
                "{failed} of {} connections failed during setup",
                self.total
            ));
        }
        Ok(true)
    }

    /// The run phase; returns the broker sample taken at its end (for `conns`).
    fn run_phase(&mut self) -> Option<ProcSample> {
        if self.args.scenario == Scenario::Storm {
            self.shared
                .run_start_ns
                .store(self.shared.now_ns(), Ordering::Release);
            return None;
        }
        self.shared
            .run_start_ns
            .store(self.shared.now_ns(), Ordering::Release);
        self.shared.phase.store(phase::RUN, Ordering::Release);
        let start = Instant::now();
        let dur = Duration::from_secs_f64(self.args.duration.max(0.0));
        let mut next_print = Duration::from_secs(1);
        let (mut last_p, mut last_d) = (0u64, 0u64);
        while start.elapsed() < dur {
            thread::sleep(Duration::from_millis(50).min(dur.saturating_sub(start.elapsed())));
            self.sample();
            if start.elapsed() >= next_print && !self.args.quiet {
                next_print += Duration::from_secs(1);
                let p = self.shared.published.load(Ordering::Relaxed);
                let d = self.shared.delivered.load(Ordering::Relaxed);
                eprintln!(
                    "[run {:>5.1}s] published {p} ({}/s)  delivered {d} ({}/s)  broker RSS {} KiB",
                    start.elapsed().as_secs_f64(),
                    p - last_p,
                    d - last_d,
                    self.peak_rss
                );
                (last_p, last_d) = (p, d);
            }
        }
        self.sample()
    }

    /// Stops publishing and waits until every message published so far has reached all of
    /// its subscribers, or deliveries stop progressing for `--drain` seconds (at most
    /// `--drain-max`, 30 s unless given).
    fn drain(&mut self, fanout: u64) {
        if fanout == 0 {
            return;
        }
        self.shared.phase.store(phase::DRAIN, Ordering::Release);
        let start = Instant::now();
        let idle_limit = Duration::from_secs_f64(self.args.drain.max(0.0));
        let (mut last, mut last_change) = (0, Instant::now());
        let max = Duration::from_secs_f64(self.args.drain_max.clamp(0.0, 3600.0));
        while start.elapsed() < max {
            thread::sleep(Duration::from_millis(5));
            self.sample();
            let expected = self.shared.published.load(Ordering::Relaxed) * fanout;
            let delivered = self.shared.delivered.load(Ordering::Relaxed);
            if delivered >= expected || last_change.elapsed() >= idle_limit {
                return;
            }
            if delivered != last {
                (last, last_change) = (delivered, Instant::now());
            }
        }
    }
}

fn summarize(
    args: &Args,
    plan: &Plan,
    params: &Params,
    threads: usize,
    setup_start_ns: u64,
    t: Timeline,
    outs: Vec<ThreadOut>,
) -> Summary {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000_000, 3).expect("static bounds");
    let mut s = Summary {
        scenario: format!("{:?}", args.scenario).to_lowercase(),
        mqtt: match args.mqtt {
            Mqtt::V311 => "3.1.1".into(),
            Mqtt::V5 => "5".into(),
        },
        qos: args.qos,
        payload: params.payload,
        conns: plan.specs.len(),
        publishers: plan.publishers,
        subscribers: plan.subscribers,
        threads,
        duration_s: t.run_secs,
        rate: params.rate_per_pub.map(|r| r * plan.publishers as f64),
        window: params.window,
        published: t.published,
        delivered_in_run: t.delivered_in_run,
        ..Default::default()
    };
    let mut sent_total = 0;
    let mut ready_ns = 0;
    for o in outs {
        let _ = hist.add(&o.hist);
        sent_total += o.sent.iter().map(|&(_, n)| n).sum::<u64>();
        s.unique += o.unique;
        s.dups += o.dups;
        s.late += o.late;
        s.stalls += o.stalls;
        s.failures += o.failures;
        ready_ns = ready_ns.max(o.ready_ns);
        s.errors.extend(o.errors);
    }
    s.errors.truncate(5);
    s.expected = sent_total * plan.fanout;
    let times = Percentiles::from_ns(&hist);
    if matches!(args.scenario, Scenario::Storm | Scenario::Conns) {
        s.connect = Some(ConnectStats {
            secs: t
                .setup_secs
                .unwrap_or(ready_ns.saturating_sub(setup_start_ns) as f64 / 1e9),
            connected: t.connected as u64,
            times: if args.scenario == Scenario::Storm {
                times
            } else {
                None
            },
        });
    } else {
        s.latency = times;
    }
    if let (Some(b), Some(a)) = (t.cpu_before, t.cpu_after) {
        s.broker = Some(BrokerStats {
            cpu_s: a.cpu_secs - b.cpu_secs,
            peak_rss_kib: t.peak_rss_kib,
            rss_per_conn_b: t.rss_per_conn_b,
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_have_the_right_shape() {
        let p = plan(Scenario::Pairs, 3, "t", 2);
        assert_eq!(
            (p.specs.len(), p.publishers, p.subscribers, p.fanout),
            (6, 3, 3, 1)
        );
        let f = plan(Scenario::Fanout, 10, "t", 0);
        assert_eq!((f.specs.len(), f.publishers, f.fanout), (11, 1, 10));
        assert!(f.specs[0].src.is_none());
        let i = plan(Scenario::Fanin, 5, "t", 4);
        assert!(
            matches!(&i.specs[0].role, Role::Subscriber { filter, count: 5, .. } if filter == "t/in/+")
        );
        assert_eq!(i.specs[3].src, Some(Ipv4Addr::new(127, 0, 0, 4)));
        assert_eq!(max_count(Scenario::Fanout, 20_000), 19_935);
        assert_eq!(max_count(Scenario::Pairs, 20_000), 9_968);
        let c = plan(Scenario::Storm, 7, "t", 1);
        assert_eq!((c.specs.len(), c.publishers), (7, 0));
    }

    #[test]
    fn share_makes_every_subscriber_a_group_member() {
        let mut p = plan(Scenario::Pairs, 2, "t", 0);
        share_filters(&mut p, "g");
        let filters: Vec<&str> = p
            .specs
            .iter()
            .filter_map(|s| match &s.role {
                Role::Subscriber { filter, .. } => Some(filter.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(filters, ["$share/g/t/p/0", "$share/g/t/p/1"]);
    }

    #[test]
    fn persistent_reaches_every_connection_of_a_fanout() {
        use clap::Parser;
        let broker: SocketAddr = "127.0.0.1:1883".parse().unwrap();
        for (extra, want) in [(None, false), (Some("--persistent"), true)] {
            let argv = ["shardmq-loadgen", "fanout", "-n", "3", "-q", "1"];
            let args = Args::parse_from(argv.into_iter().chain(extra));
            let p = plan(args.scenario, 3, "t", 0);
            let params = params(&args, broker, &p);
            assert_eq!(params.persistent, want);
            assert_eq!((params.fanout, params.qos), (3, QoS::AtLeastOnce));
        }
    }

    #[test]
    fn refuses_non_loopback() {
        assert!(resolve("127.0.0.1", 1883).is_ok());
        assert!(resolve("192.0.2.1", 1883).is_err());
    }
}
