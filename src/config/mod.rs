//! Settings: the command line, turned into one `Config` read once at start-up.
//!
//! Owns: every tunable and its default. Invariant: a `Config` is validated when built and
//! then only read; it is handed to each shard by value (`Arc`), never a global. Must not
//! touch: sockets or threads.

use std::net::SocketAddr;

use clap::Parser;

/// Command-line arguments of `shardmq`.
#[derive(Debug, Parser)]
#[command(
    name = "shardmq",
    version,
    about = "A shard-per-core MQTT 3.1 / 3.1.1 / 5.0 broker"
)]
pub struct Args {
    /// Address to listen on (repeatable). Default: 127.0.0.1:1883, local only, like Mosquitto.
    #[arg(long = "bind", value_name = "ADDR:PORT")]
    pub bind: Vec<SocketAddr>,
    /// Number of shards (threads). Default: the number of available cores.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Log connects, packets and disconnects, in the spirit of `mosquitto -v`.
    #[arg(short, long)]
    pub verbose: bool,
    /// Do not pin shard threads to cores.
    #[arg(long)]
    pub no_pin: bool,
    /// Maximum in-flight QoS 1/2 messages per client.
    #[arg(long, default_value_t = 20)]
    pub max_inflight_messages: u16,
    /// Maximum queued QoS 1/2 messages per client (beyond the in-flight window).
    #[arg(long, default_value_t = 1000)]
    pub max_queued_messages: usize,
    /// Maximum queued bytes per client.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub max_queued_bytes: usize,
    /// Maximum packet size accepted from clients, bytes.
    #[arg(long, default_value_t = crate::protocol::REMAINING_LENGTH_MAX + 5)]
    pub max_packet_size: usize,
    /// Largest Keep Alive accepted, seconds (5.0 clients are told; 3.x clients above it are refused).
    #[arg(long, default_value_t = 65535)]
    pub max_keepalive: u16,
    /// Seconds a new connection may take to send CONNECT.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u32,
    /// Per-connection output buffer limit, bytes: past it QoS 0 deliveries are dropped and
    /// QoS 1/2 deliveries wait in the session queue.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_write_buffer: usize,
    /// Topic Alias Maximum offered to 5.0 clients.
    #[arg(long, default_value_t = 10)]
    pub max_topic_alias: u16,
    /// Receive Maximum offered to 5.0 clients: QoS 2 messages awaiting PUBREL per client.
    #[arg(long, default_value_t = 65535)]
    pub receive_maximum: u16,
    /// Response Information sent to 5.0 clients that ask for it (the client id is appended).
    #[arg(long, value_name = "PREFIX")]
    pub response_information: Option<String>,
    /// Print the bound address(es) to stdout once listening (used by tests with port 0).
    #[arg(long, hide = true)]
    pub print_bound: bool,
}

/// Validated broker settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen addresses.
    pub binds: Vec<SocketAddr>,
    /// Shard count.
    pub shards: usize,
    /// Verbose logging.
    pub verbose: bool,
    /// Pin shard threads to cores.
    pub pin: bool,
    /// In-flight window per client.
    pub max_inflight: u16,
    /// Queue bound per client, messages.
    pub max_queued_messages: usize,
    /// Queue bound per client, bytes.
    pub max_queued_bytes: usize,
    /// Largest packet accepted, bytes.
    pub max_packet_size: usize,
    /// Largest Keep Alive accepted, seconds.
    pub max_keepalive: u16,
    /// CONNECT deadline after accept, ms.
    pub connect_timeout_ms: u64,
    /// Output buffer limit per connection, bytes.
    pub max_write_buffer: usize,
    /// Topic Alias Maximum offered to clients.
    pub max_topic_alias: u16,
    /// Receive Maximum offered to clients.
    pub receive_maximum: u16,
    /// Response Information prefix, if any.
    pub response_information: Option<String>,
    /// Print bound addresses on stdout.
    pub print_bound: bool,
}

/// The largest shard count: shard sets are 64-bit masks.
pub const SHARDS_MAX: usize = 64;

impl Default for Config {
    fn default() -> Self {
        Config::from_args(Args::parse_from(["shardmq"])).unwrap_or_else(|_| unreachable!())
    }
}

impl Config {
    /// Validate arguments into a configuration.
    pub fn from_args(a: Args) -> Result<Config, String> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shards = a.shards.unwrap_or(cores);
        if shards == 0 || shards > SHARDS_MAX {
            return Err(format!(
                "--shards must be between 1 and {SHARDS_MAX}, got {shards}"
            ));
        }
        if a.max_inflight_messages == 0 {
            return Err("--max-inflight-messages must be at least 1".into());
        }
        if a.receive_maximum == 0 {
            return Err("--receive-maximum must be at least 1".into());
        }
        if a.max_packet_size < 16 {
            return Err("--max-packet-size must be at least 16 bytes".into());
        }
        let binds = if a.bind.is_empty() {
            vec![SocketAddr::from(([127, 0, 0, 1], 1883))]
        } else {
            a.bind
        };
        Ok(Config {
            binds,
            shards,
            verbose: a.verbose,
            pin: !a.no_pin,
            max_inflight: a.max_inflight_messages,
            max_queued_messages: a.max_queued_messages,
            max_queued_bytes: a.max_queued_bytes,
            max_packet_size: a.max_packet_size,
            max_keepalive: a.max_keepalive,
            connect_timeout_ms: u64::from(a.connect_timeout.max(1)) * 1000,
            max_write_buffer: a.max_write_buffer.max(4096),
            max_topic_alias: a.max_topic_alias,
            receive_maximum: a.receive_maximum,
            response_information: a.response_information,
            print_bound: a.print_bound,
        })
    }

    /// The session limits derived from this configuration.
    pub fn session_limits(&self) -> crate::session::Limits {
        crate::session::Limits {
            window: self.max_inflight,
            queue_max: self.max_queued_messages,
            queue_bytes_max: self.max_queued_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_listen_locally_like_mosquitto() {
        let c = Config::default();
        assert_eq!(c.binds, vec![SocketAddr::from(([127, 0, 0, 1], 1883))]);
        assert_eq!(c.max_inflight, 20);
        assert_eq!(c.max_queued_messages, 1000);
    }

    #[test]
    fn rejects_bad_shard_counts() {
        let a = Args::parse_from(["shardmq", "--shards", "0"]);
        assert!(Config::from_args(a).is_err());
        let a = Args::parse_from(["shardmq", "--shards", "65"]);
        assert!(Config::from_args(a).is_err());
    }
}
