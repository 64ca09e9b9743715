//! Settings: the command line and an optional Mosquitto-style file, turned into one `Config`.
//!
//! Owns: every tunable and its default. Invariant: a `Config` is validated when built and
//! then only read; it is handed to each shard by value (`Arc`), never a global. The command
//! line wins over the file, the file over the defaults. Must not touch: sockets or threads.

pub mod cluster;
pub mod file;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Defaults, shared by `--help` and the file.
pub mod defaults {
    /// In-flight window per client.
    pub const MAX_INFLIGHT_MESSAGES: u16 = 20;
    /// Queue bound per session, messages.
    pub const MAX_QUEUED_MESSAGES: usize = 1000;
    /// Queue bound per session, bytes.
    pub const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;
    /// Largest packet accepted.
    pub const MAX_PACKET_SIZE: usize = crate::protocol::REMAINING_LENGTH_MAX + 5;
    /// Largest Keep Alive accepted.
    pub const MAX_KEEPALIVE: u16 = 65535;
    /// Seconds to send CONNECT.
    pub const CONNECT_TIMEOUT: u32 = 10;
    /// Output buffer limit per connection.
    pub const MAX_WRITE_BUFFER: usize = 1024 * 1024;
    /// Topic Alias Maximum offered.
    pub const MAX_TOPIC_ALIAS: u16 = 10;
    /// Receive Maximum offered.
    pub const RECEIVE_MAXIMUM: u16 = 65535;
    /// Seconds between `$SYS` updates, as Mosquitto's `sys_interval`.
    pub const SYS_INTERVAL: u32 = 10;
}

/// Command-line arguments of `shardmq`.
#[derive(Debug, Parser)]
#[command(
    name = "shardmq",
    version,
    about = "A shard-per-core MQTT 3.1 / 3.1.1 / 5.0 broker"
)]
pub struct Args {
    /// Configuration file in mosquitto.conf syntax (the subset documented in docs/configuration.md).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
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
    /// Maximum in-flight QoS 1/2 messages per client [default: 20].
    #[arg(long)]
    pub max_inflight_messages: Option<u16>,
    /// Maximum queued QoS 1/2 messages per client beyond the in-flight window [default: 1000].
    #[arg(long)]
    pub max_queued_messages: Option<usize>,
    /// Maximum queued bytes per client [default: 67108864].
    #[arg(long)]
    pub max_queued_bytes: Option<usize>,
    /// Maximum packet size accepted from clients, bytes [default: 268435460].
    #[arg(long)]
    pub max_packet_size: Option<usize>,
    /// Largest Keep Alive accepted, seconds (5.0 clients are told; 3.x clients above it are refused) [default: 65535].
    #[arg(long)]
    pub max_keepalive: Option<u16>,
    /// Seconds a new connection may take to send CONNECT [default: 10].
    #[arg(long)]
    pub connect_timeout: Option<u32>,
    /// Per-connection output buffer limit, bytes: past it QoS 0 deliveries are dropped and
    /// QoS 1/2 deliveries wait in the session queue [default: 1048576].
    #[arg(long)]
    pub max_write_buffer: Option<usize>,
    /// Topic Alias Maximum offered to 5.0 clients [default: 10].
    #[arg(long)]
    pub max_topic_alias: Option<u16>,
    /// Receive Maximum offered to 5.0 clients: QoS 2 messages awaiting PUBREL per client [default: 65535].
    #[arg(long)]
    pub receive_maximum: Option<u16>,
    /// Response Information sent to 5.0 clients that ask for it (the client id is appended).
    #[arg(long, value_name = "PREFIX")]
    pub response_information: Option<String>,
    /// SCRAM-SHA-256 credentials file for MQTT 5 enhanced authentication (see docs/configuration.md).
    #[arg(long, value_name = "FILE")]
    pub scram_credentials: Option<PathBuf>,
    /// Accept clients that do not authenticate [default: true, or false with --scram-credentials].
    #[arg(long, value_name = "BOOL")]
    pub allow_anonymous: Option<bool>,
    /// Send every connecting client elsewhere: 5.0 clients get CONNACK 0x9C (Use another
    /// server) with this Server Reference, 3.x clients "server unavailable" (for maintenance).
    #[arg(long, value_name = "REF")]
    pub redirect: Option<String>,
    /// With --redirect: the move is permanent (0x9D Server moved).
    #[arg(long, requires = "redirect")]
    pub redirect_permanent: bool,
    /// Seconds between `$SYS/broker/...` updates; 0 turns them off [default: 10].
    #[arg(long, value_name = "SECS")]
    pub sys_interval: Option<u32>,
    /// Print a credentials-file line for USER, with the password read from standard input
    /// (its first line), and exit. Keeps the password out of the process list.
    #[arg(long, value_name = "USER")]
    pub scram_entry: Option<String>,
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
    /// Warnings from reading the configuration, to print at start-up.
    pub warnings: Vec<String>,
    /// SCRAM-SHA-256 credentials, when enhanced authentication is enabled.
    pub scram_credentials: Option<std::sync::Arc<crate::auth::ScramCredentials>>,
    /// Accept clients that do not authenticate.
    pub allow_anonymous: bool,
    /// Seconds between `$SYS` updates (0 = off).
    pub sys_interval_s: u32,
    /// Where to send connecting clients instead of serving them, and whether for good.
    pub redirect: Option<(String, bool)>,
}

/// The command line's value, else the file's, else the default.
fn pick<T>(cli: Option<T>, file: Option<T>, default: T) -> T {
    cli.or(file).unwrap_or(default)
}

/// The SCRAM credentials file, loaded and checked, if one is named.
fn load_credentials(
    path: Option<&PathBuf>,
) -> Result<Option<std::sync::Arc<crate::auth::ScramCredentials>>, String> {
    path.map(|p| {
        crate::auth::ScramCredentials::load(p)
            .map(std::sync::Arc::new)
            .map_err(|e| e.to_string())
    })
    .transpose()
}

/// The largest shard count: shard sets are 64-bit masks.
pub const SHARDS_MAX: usize = 64;

impl Default for Config {
    fn default() -> Self {
        Config::from_args(Args::parse_from(["shardmq"])).unwrap_or_else(|_| unreachable!())
    }
}

impl Config {
    /// Validate arguments (and the file they name) into a configuration. The command line
    /// wins over the file, the file over the defaults.
    pub fn from_args(a: Args) -> Result<Config, String> {
        let f = match &a.config {
            Some(path) => file::load(path).map_err(|e| e.to_string())?,
            None => file::FileSettings::default(),
        };
        if cluster::ClusterConfig::from_keys(&f.cluster)?.is_some() {
            return Err("cluster options are valid, but this build does not run the cluster link yet (it is not wired into the shards); refusing to start a node that would silently stay single".into());
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let scram_credentials = load_credentials(
            a.scram_credentials
                .as_ref()
                .or(f.scram_credentials.as_ref()),
        )?;
        let binds = match (a.bind.is_empty(), f.binds.is_empty()) {
            (false, _) => a.bind,
            (true, false) => f.binds,
            (true, true) => vec![SocketAddr::from(([127, 0, 0, 1], 1883))],
        };
        let connect_timeout = pick(
            a.connect_timeout,
            f.connect_timeout,
            defaults::CONNECT_TIMEOUT,
        );
        let c = Config {
            binds,
            shards: pick(a.shards, f.shards, cores),
            verbose: a.verbose,
            pin: !a.no_pin,
            max_inflight: pick(
                a.max_inflight_messages,
                f.max_inflight_messages,
                defaults::MAX_INFLIGHT_MESSAGES,
            ),
            max_queued_messages: pick(
                a.max_queued_messages,
                f.max_queued_messages,
                defaults::MAX_QUEUED_MESSAGES,
            ),
            max_queued_bytes: pick(
                a.max_queued_bytes,
                f.max_queued_bytes,
                defaults::MAX_QUEUED_BYTES,
            ),
            max_packet_size: pick(
                a.max_packet_size,
                f.max_packet_size,
                defaults::MAX_PACKET_SIZE,
            ),
            max_keepalive: pick(a.max_keepalive, f.max_keepalive, defaults::MAX_KEEPALIVE),
            connect_timeout_ms: u64::from(connect_timeout.max(1)) * 1000,
            max_write_buffer: pick(
                a.max_write_buffer,
                f.max_write_buffer,
                defaults::MAX_WRITE_BUFFER,
            )
            .max(4096),
            max_topic_alias: pick(
                a.max_topic_alias,
                f.max_topic_alias,
                defaults::MAX_TOPIC_ALIAS,
            ),
            receive_maximum: pick(
                a.receive_maximum,
                f.receive_maximum,
                defaults::RECEIVE_MAXIMUM,
            ),
            response_information: a.response_information.or(f.response_information),
            print_bound: a.print_bound,
            warnings: f.warnings,
            allow_anonymous: pick(
                a.allow_anonymous,
                f.allow_anonymous,
                scram_credentials.is_none(),
            ),
            scram_credentials,
            sys_interval_s: pick(a.sys_interval, f.sys_interval, defaults::SYS_INTERVAL),
            redirect: a.redirect.map(|r| (r, a.redirect_permanent)),
        };
        c.validate()?;
        Ok(c)
    }

    /// The checks no single option can make alone.
    fn validate(&self) -> Result<(), String> {
        if self.shards == 0 || self.shards > SHARDS_MAX {
            return Err(format!(
                "--shards must be between 1 and {SHARDS_MAX}, got {}",
                self.shards
            ));
        }
        if self.max_inflight == 0 {
            return Err("--max-inflight-messages must be at least 1".into());
        }
        if self.receive_maximum == 0 {
            return Err("--receive-maximum must be at least 1".into());
        }
        if self.max_packet_size < 16 {
            return Err("--max-packet-size must be at least 16 bytes".into());
        }
        if !self.allow_anonymous && self.scram_credentials.is_none() {
            return Err("allow_anonymous false needs credentials (--scram-credentials); refusing to start a broker nobody can use".into());
        }
        Ok(())
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

    #[test]
    fn command_line_wins_over_file_and_file_over_defaults() {
        let dir = std::env::temp_dir().join(format!("shardmq-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("m.conf");
        std::fs::write(
            &path,
            "listener 1999 127.0.0.1\nmax_queued_messages 7\nmax_inflight_messages 3\n",
        )
        .expect("write");
        let p = path.to_str().expect("utf-8 path");
        let c = Config::from_args(Args::parse_from([
            "shardmq",
            "-c",
            p,
            "--max-inflight-messages",
            "9",
        ]))
        .expect("valid");
        assert_eq!(c.binds, vec![SocketAddr::from(([127, 0, 0, 1], 1999))]);
        assert_eq!(c.max_queued_messages, 7);
        assert_eq!(c.max_inflight, 9);
        std::fs::write(&path, "max_queued_messages 7\nbogus 1\n").expect("write");
        let e = Config::from_args(Args::parse_from(["shardmq", "-c", p])).expect_err("bad file");
        assert!(e.ends_with("m.conf:2: unknown option 'bogus'"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
