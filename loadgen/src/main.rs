//! `shardmq-loadgen`: a mio-based MQTT load generator for shardmq, Mosquitto and rumqttd.
//!
//! Owns: the command line (clap derive) and the exit status. `scenario` builds and runs a
//! scenario, `engine` is one load thread's poll loop, `client` one connection's state
//! machine, `stats` the shared counters and /proc sampling, `report` the output, `proto`
//! the re-exported project codec.

mod client;
mod engine;
mod proto;
mod report;
mod scenario;
mod stats;
mod ws;

use clap::{Parser, ValueEnum};

/// The traffic pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// N publishers → N subscribers, one topic per pair.
    Pairs,
    /// 1 publisher → N subscribers on one topic.
    Fanout,
    /// N publishers → 1 subscriber on a wildcard.
    Fanin,
    /// N pairs at a fixed open-loop rate; end-to-end percentiles.
    Latency,
    /// N idle connections held for the duration, then released.
    Conns,
    /// N clients connecting at once: connects/s and time to all connected.
    Storm,
}

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mqtt {
    /// MQTT 3.1.1.
    #[value(name = "3.1.1", alias = "3", alias = "4")]
    V311,
    /// MQTT 5.0.
    #[value(name = "5", alias = "5.0")]
    V5,
}

/// Command line.
#[derive(Debug, Clone, Parser)]
#[command(version, about = "MQTT load generator (loopback only)")]
pub struct Args {
    /// Scenario to run.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Size: pairs (pairs, latency), subscribers (fanout), publishers (fanin),
    /// connections (conns, storm). Defaults: 8, 1000, 1000, 1, 10000, 10000. 0 means as
    /// many as the open-file limit allows.
    #[arg(short = 'n', long)]
    pub count: Option<usize>,
    /// Broker host (must resolve to a loopback address).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(short, long, default_value_t = 1883)]
    pub port: u16,
    /// Subscribers connect to this port instead (on `--host`): the far side of a bridge
    /// from the publishers' broker, to measure forwarding through it.
    #[arg(long)]
    pub sub_port: Option<u16>,
    /// Subscribe as members of this share group (`$share/<GROUP>/<filter>`), each
    /// subscriber the only member of its group: the shared subscriptions' path.
    #[arg(long, value_name = "GROUP")]
    pub share: Option<String>,
    /// Persistent sessions (Clean Start 0; 5.0 Session Expiry 1 h): with a broker store,
    /// QoS 1/2 messages to the subscribers are logged before they are acknowledged.
    #[arg(long)]
    pub persistent: bool,
    /// QoS of publishes and subscriptions.
    #[arg(short, long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Payload bytes (the first 20 carry publisher id, sequence and timestamp).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(20..=1_000_000))]
    pub payload: u32,
    /// Protocol version.
    #[arg(long, value_enum, default_value = "5")]
    pub mqtt: Mqtt,
    /// Seconds of load (or of holding connections in `conns`).
    #[arg(short, long, default_value_t = 5.0)]
    pub duration: f64,
    /// Open-loop offered rate, messages/s over all publishers (default for `latency`:
    /// 10000). Without it, runs are closed-loop.
    #[arg(short, long)]
    pub rate: Option<f64>,
    /// Closed-loop window: messages a publisher may have sent but not yet delivered.
    /// Also bounds QoS 1/2 messages in flight.
    #[arg(short, long, default_value_t = 100)]
    pub window: u64,
    /// Load threads.
    #[arg(short, long, default_value_t = 1)]
    pub threads: usize,
    /// Broker PID: report its CPU time and peak RSS from /proc. Several, comma-separated
    /// (the nodes of a cluster and its NATS servers): their sums.
    #[arg(long, value_delimiter = ',')]
    pub broker_pid: Vec<u32>,
    /// Source addresses 127.0.0.1..=127.0.0.K used in rotation (more port space).
    #[arg(long, default_value_t = 4)]
    pub src_addrs: u8,
    /// TCP/MQTT handshakes in flight per thread while setting up. Default 512; storm:
    /// all at once unless given (a TLS storm from one thread is best bounded, so each
    /// handshake finishes within the broker's connect timeout).
    #[arg(long)]
    pub connect_concurrency: Option<usize>,
    /// Seconds allowed for connecting and subscribing.
    #[arg(long, default_value_t = 60.0)]
    pub setup_timeout: f64,
    /// After the run, wait for messages in flight until deliveries stall this many seconds.
    #[arg(long, default_value_t = 2.0)]
    pub drain: f64,
    /// The drain ends after this many seconds whatever happens (a cluster's JetStream
    /// queue redelivers a message its node lost 30 s after it handed it out).
    #[arg(long, default_value_t = 30.0)]
    pub drain_max: f64,
    /// No per-second progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Connect over TLS (rustls), verifying the broker's certificate against `--cafile`
    /// for the broker's IP address. The handshake is part of the connect time (`storm`).
    #[arg(long, requires = "cafile")]
    pub tls: bool,
    /// CA certificates (PEM) for `--tls`.
    #[arg(long, value_name = "FILE")]
    pub cafile: Option<std::path::PathBuf>,
    /// MQTT over WebSocket (`ws://`): an HTTP upgrade on `--ws-path` with subprotocol
    /// `mqtt`, then MQTT in masked binary frames. With `--tls`: `wss://`.
    #[arg(long)]
    pub ws: bool,
    /// MQTT over secure WebSocket: `--ws --tls` (needs `--cafile`).
    #[arg(long, requires = "cafile")]
    pub wss: bool,
    /// The WebSocket request path.
    #[arg(long, default_value = "/mqtt")]
    pub ws_path: String,
}

fn main() {
    let mut args = Args::parse();
    if args.wss {
        args.ws = true;
        args.tls = true;
    }
    match scenario::run(&args) {
        Ok(summary) => {
            print!("{}", summary.human());
            println!("{}", summary.result_line());
            if summary.failures > 0 {
                std::process::exit(2);
            }
        }
        Err(e) => {
            eprintln!("shardmq-loadgen: {e}");
            std::process::exit(1);
        }
    }
}
