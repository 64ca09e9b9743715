//! Settings: the command line and an optional Mosquitto-style file, turned into one `Config`.
//!
//! Owns: every tunable and its default. Invariant: a `Config` is validated when built and
//! then only read; it is handed to each shard by value (`Arc`), never a global. The command
//! line wins over the file, the file over the defaults. Must not touch: sockets or threads.
#![forbid(unsafe_code)]

pub mod admin_tls;
pub mod auth_files;
pub mod bridge;
pub mod cluster;
pub mod file;
pub mod limits;
mod passwd_args;
pub mod reload;

pub use passwd_args::{PasswdAction, PasswdArgs};
pub mod listener;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Defaults, shared by `--help` and the file.
pub mod defaults {
    /// In-flight window per client.
    pub const MAX_INFLIGHT_MESSAGES: u16 = 20;
    /// Queue bound per session, messages: far above the byte bound for ordinary
    /// messages, so the bytes decide (Mosquitto's 1,000 lost 7,072 of 10,000 messages to a
    /// subscriber slower than its publisher); it only caps floods of tiny messages.
    pub const MAX_QUEUED_MESSAGES: usize = 100_000;
    /// Queue bound per session, bytes.
    pub const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;
    /// Largest packet accepted, bytes: 2 MiB. The protocol's 256 MiB let 100 clients make
    /// the broker hold gigabytes of half-received packets; Mosquitto 2.1 moved its
    /// `max_packet_size` default from unlimited to 2,000,000 for the same reason (EMQX
    /// uses 1 MB). Telemetry, JSON and small images fit; firmware goes in chunks or with
    /// `max_packet_size` raised. Advertised to 5.0 clients in CONNACK.
    pub const MAX_PACKET_SIZE: usize = 2 * 1024 * 1024;
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
    /// Whether the store is on when nothing says. Issue 11 makes it `true`; it stays
    /// `false` until the broker writes to the store (phase 2), so that neither `--help`
    /// nor the broker claims a durability it does not have yet.
    pub const PERSISTENCE: bool = true;
    /// The store's directory, relative to the working directory.
    pub const PERSISTENCE_LOCATION: &str = "shardmq-data/";
    /// Seconds between checkpoints of the store (`autosave_interval`).
    pub const AUTOSAVE_INTERVAL: u32 = 300;
    /// The admin listener (metrics, health, API, dashboard): loopback only.
    pub const ADMIN_LISTENER: std::net::SocketAddr =
        std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 18083);
}

/// Where the admin HTTP listener goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminListen {
    /// The default address: if it is taken, the broker warns and runs without it.
    Default(SocketAddr),
    /// Asked for explicitly: failing to bind it is an error.
    Explicit(SocketAddr),
    /// No admin listener.
    Off,
}

/// `--admin ADDR:PORT` or `--admin off`.
fn parse_admin(v: &str) -> Result<AdminListen, String> {
    if v == "off" {
        return Ok(AdminListen::Off);
    }
    v.parse()
        .map(AdminListen::Explicit)
        .map_err(|_| format!("'{v}' is neither ADDR:PORT nor off"))
}

/// Subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Validate a configuration file without starting the broker (exit 0 if valid, 2 if not).
    Check {
        /// The configuration file.
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
    },
    /// Manage a Mosquitto-compatible password file (mosquitto_passwd's flags).
    Passwd(PasswdArgs),
    /// Remove a cluster node that will never return: its interest entries, its queue
    /// consumer and its queued messages (refused while the node answers on NATS). Exit 0
    /// when done, 1 if refused or NATS failed, 2 for a bad file.
    ClusterForget {
        /// The configuration file whose `cluster_*` lines say how to reach NATS.
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
        /// The node to remove (its `cluster_node` name).
        node: String,
    },
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
    /// Maximum queued QoS 1/2 messages per client beyond the in-flight window [default: 100000].
    #[arg(long)]
    pub max_queued_messages: Option<usize>,
    /// Maximum queued bytes per client [default: 67108864].
    #[arg(long)]
    pub max_queued_bytes: Option<usize>,
    /// Maximum packet size accepted from clients, bytes [default: 2097152].
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
    /// Admin HTTP listener (metrics, health, API, dashboard): ADDR:PORT, or `off`
    /// [default: 127.0.0.1:18083, skipped with a warning if that port is taken].
    #[arg(long, value_name = "ADDR:PORT|off", value_parser = parse_admin)]
    pub admin: Option<AdminListen>,
    /// Cluster: remove another node that has been silent (no heartbeat) this long, as
    /// `shardmq cluster-forget` does, but keeping its queued messages; overrides the
    /// file's `cluster_forget_after` and needs its `cluster_*` lines [default: never].
    #[arg(long, value_name = "SECONDS", value_parser = cluster::forget_after)]
    pub cluster_forget_after: Option<u64>,
    /// A subcommand instead of running the broker.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Port of the default listener (127.0.0.1), as `mosquitto -p` [default: 1883].
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    pub port: Option<u16>,
    /// TLS: the server certificate chain (PEM) of the command-line listener.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS: the server's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// TLS: CA certificates (PEM) for client certificates.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
    /// TLS: clients must present a certificate signed by --tls-ca (mutual TLS).
    #[arg(long, requires = "tls_ca")]
    pub require_certificate: bool,
    /// Speak MQTT over WebSocket on the command-line listener.
    #[arg(long)]
    pub websocket: bool,
    /// Print the bound address(es) to stdout once listening (used by tests with port 0).
    #[arg(long, hide = true)]
    pub print_bound: bool,

    // --- Mosquitto password and ACL files (issue 10) ---
    /// Mosquitto password file (`mosquitto_passwd` format; see docs/security.md).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Mosquitto ACL file (see docs/security.md).
    #[arg(long, value_name = "FILE")]
    pub acl_file: Option<PathBuf>,
    // --- end of the password and ACL block ---
    /// Directory of the store (write-ahead logs and checkpoints) [default: shardmq-data/].
    #[arg(long, alias = "persistence-location", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep sessions and messages in memory only (nothing survives a restart).
    #[arg(long)]
    pub no_persistence: bool,
    /// Resource limits (issue 12).
    #[command(flatten)]
    pub limits: limits::LimitArgs,
}

/// The store's settings (issue 11), resolved from the command line, the file and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persistence {
    /// Whether the broker keeps a store.
    pub enabled: bool,
    /// The store's directory.
    pub location: PathBuf,
    /// Seconds between checkpoints.
    pub autosave_interval_s: u32,
    /// `fdatasync` before acknowledging (`persistence_sync always`).
    pub sync_always: bool,
}

impl Persistence {
    /// Resolve the store's settings: on by default, `--no-persistence` or
    /// `persistence false` turn it off.
    fn resolve(a: &Args, f: &file::PersistenceFile) -> Result<Persistence, String> {
        let enabled = if a.no_persistence {
            false
        } else {
            f.enabled.unwrap_or(defaults::PERSISTENCE)
        };
        Ok(Persistence {
            enabled,
            location: a
                .data_dir
                .clone()
                .or_else(|| f.location.clone())
                .unwrap_or_else(|| defaults::PERSISTENCE_LOCATION.into()),
            autosave_interval_s: f.autosave_interval.unwrap_or(defaults::AUTOSAVE_INTERVAL),
            sync_always: f.sync_always.unwrap_or(true),
        })
    }
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
    /// The admin HTTP listener.
    pub admin: AdminListen,
    /// Password file protecting the admin listener with HTTP basic auth.
    pub admin_password_file: Option<PathBuf>,
    /// `admin_certfile` + `admin_keyfile`: the admin listener speaks HTTPS (and, with
    /// `admin_cafile` + `admin_require_certificate true`, wants client certificates).
    pub admin_tls: Option<admin_tls::AdminTls>,
    /// Where the log goes and what it holds.
    pub log: crate::log_sink::Settings,
    /// The figures board shards write and the admin listener reads (shared, not settings:
    /// one board per running broker, sized for `shards`).
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,

    // --- Mosquitto password and ACL files (issue 10) ---
    /// The global `password_file` and `acl_file`, loaded (or, with per-listener settings,
    /// those of the default listener).
    pub auth_files: auth_files::AuthFiles,
    /// `per_listener_settings`.
    pub per_listener_settings: bool,
    /// `check_retain_source` (default true, stricter than Mosquitto's false): a retained
    /// message is sent to a new subscriber only while its publisher may still publish it.
    pub check_retain_source: bool,
    /// Each listener's own files and `allow_anonymous`, with per-listener settings.
    pub listener_auth: Vec<auth_files::ListenerAuth>,
    // --- end of the password and ACL block ---
    /// Every listener with its options, validated (`binds` are their addresses).
    pub listeners: Vec<listener::Listener>,
    /// The next unused listener id (`listener::Listener::id`; kept across reloads).
    pub listener_ids_next: usize,
    /// The store's settings (parsed only until the broker writes to the store).
    pub persistence: Persistence,
    /// Subscription, filter and connection limits (issue 12).
    pub limits: limits::ResourceLimits,
    /// `connection` blocks: the bridges, in file order (each runs on the shard its name hashes to).
    pub bridges: Vec<bridge::BridgeConfig>,
    /// The `cluster_*` lines: this node's place in a cluster over NATS (`None`: a single
    /// node, no NATS client runs).
    pub cluster: Option<cluster::ClusterConfig>,
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

/// The log settings: the file's, with `-v` adding every level (as `mosquitto -v` does).
fn log_settings(f: &file::FileSettings, verbose: bool) -> crate::log_sink::Settings {
    let d = crate::log_sink::Settings::default();
    crate::log_sink::Settings {
        dests: f.log_dests.clone().unwrap_or(d.dests),
        levels: match (verbose, f.log_types) {
            (true, _) => crate::log_sink::LevelSet::ALL,
            (false, Some(t)) => t,
            (false, None) => d.levels,
        },
        timestamp: f.log_timestamp.unwrap_or(d.timestamp),
        timestamp_format: f.log_timestamp_format.clone(),
        format: f.log_format.unwrap_or(d.format),
        connection_messages: f.connection_messages.unwrap_or(d.connection_messages),
    }
}

/// Every listener, validated; refused if the shards cannot serve it yet.
fn build_listeners(a: &Args, f: &file::FileSettings) -> Result<Vec<listener::Listener>, String> {
    let file_name = a
        .config
        .as_ref()
        .map_or(String::new(), |p| p.display().to_string());
    let frame_max = pick(
        a.max_packet_size,
        f.max_packet_size,
        defaults::MAX_PACKET_SIZE,
    );
    let mut listeners = listener_specs(a, f)?
        .iter()
        .map(|s| s.validate(&file_name, frame_max as u64))
        .collect::<Result<Vec<_>, _>>()?;
    if a.bind.is_empty() && f.listeners.is_empty() {
        // The default listener: its IPv6 loopback may be missing on this host.
        for l in &mut listeners {
            l.optional = l.addr.is_ipv6();
        }
    }
    for (i, l) in listeners.iter_mut().enumerate() {
        l.id = i;
    }
    Ok(listeners)
}

/// The listeners asked for: `--bind` addresses (or, with no file listener, the default one
/// on `-p`'s port) carrying the command line's TLS and WebSocket flags; else the file's.
fn listener_specs(a: &Args, f: &file::FileSettings) -> Result<Vec<listener::ListenerSpec>, String> {
    let cli_flags = a.tls_cert.is_some() || a.websocket;
    if a.bind.is_empty() && !f.listeners.is_empty() {
        if cli_flags || a.port.is_some() {
            return Err("-p, --tls-* and --websocket set up the command-line listener; with listeners in the file, add --bind or configure them there".into());
        }
        return Ok(f.listeners.clone());
    }
    if a.port.is_some() && !a.bind.is_empty() {
        return Err("-p sets the port of the default listener; --bind takes ADDR:PORT".into());
    }
    let port = a.port.unwrap_or(listener::DEFAULT_PORT);
    let addrs = match a.bind.is_empty() {
        true => listener::DEFAULT_ADDRESSES
            .iter()
            .map(|ip| SocketAddr::new(*ip, port))
            .collect(),
        false => a.bind.clone(),
    };
    let mut specs = Vec::new();
    for addr in addrs {
        let mut s = listener::spec(addr, true, 0);
        let flags = [
            ("certfile", a.tls_cert.as_ref()),
            ("keyfile", a.tls_key.as_ref()),
            ("cafile", a.tls_ca.as_ref()),
        ];
        for (key, path) in flags {
            if let Some(p) = path {
                listener::apply(&mut s, key, &p.display().to_string(), 0)?;
            }
        }
        s.require_certificate = a.require_certificate;
        if a.websocket {
            s.protocol = listener::Protocol::WebSockets;
        }
        specs.push(s);
    }
    Ok(specs)
}

/// The `cluster_*` lines with the command line's `--cluster-forget-after` over them.
fn cluster_config(
    a: &Args,
    keys: &cluster::ClusterKeys,
) -> Result<Option<cluster::ClusterConfig>, String> {
    let Some(s) = a.cluster_forget_after else {
        return cluster::ClusterConfig::from_keys(keys);
    };
    if !keys.any() {
        return Err(
            "--cluster-forget-after needs the cluster_* lines of a configuration file".into(),
        );
    }
    let keys = cluster::ClusterKeys {
        forget_after_s: Some(s),
        ..keys.clone()
    };
    cluster::ClusterConfig::from_keys(&keys)
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
        let log = log_settings(&f, a.verbose);
        let persistence = Persistence::resolve(&a, &f.persistence)?;
        let cluster = cluster_config(&a, &f.cluster)?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let scram_credentials = load_credentials(
            a.scram_credentials
                .as_ref()
                .or(f.scram_credentials.as_ref()),
        )?;
        let (auth_files, listener_auth) = auth_files::load(&a, &f)?;
        bridge::check_local_logins(&f.bridges, auth_files.password_file.as_deref()).map_err(
            |(line, problem)| {
                let file = a.config.as_ref().map(|p| p.display().to_string());
                format!("{}:{line}: {problem}", file.unwrap_or_default())
            },
        )?;
        let listeners = build_listeners(&a, &f)?;
        let admin_tls = admin_tls::load(
            &a.config
                .as_ref()
                .map_or(String::new(), |p| p.display().to_string()),
            &admin_tls::AdminTlsLines {
                certfile: f.admin_certfile.as_ref(),
                keyfile: f.admin_keyfile.as_ref(),
                cafile: f.admin_cafile.as_ref(),
                require_certificate: f.admin_require_certificate.as_ref(),
            },
        )?;
        let binds = listeners.iter().map(|l| l.addr).collect();
        let listener_ids_next = listeners.len();
        let connect_timeout = pick(
            a.connect_timeout,
            f.connect_timeout,
            defaults::CONNECT_TIMEOUT,
        );
        let shards = pick(a.shards, f.shards, cores);
        let c = Config {
            binds,
            shards,
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
                scram_credentials.is_none() && auth_files.password_path.is_none(),
            ),
            scram_credentials,
            sys_interval_s: pick(a.sys_interval, f.sys_interval, defaults::SYS_INTERVAL),
            redirect: a.redirect.map(|r| (r, a.redirect_permanent)),
            admin: a
                .admin
                .or(f.admin_listener.map(AdminListen::Explicit))
                .unwrap_or(AdminListen::Default(defaults::ADMIN_LISTENER)),
            admin_password_file: f.admin_password_file,
            admin_tls,
            log,
            metrics: std::sync::Arc::new(crate::metrics::Metrics::new(shards.min(SHARDS_MAX))),
            auth_files,
            per_listener_settings: f.per_listener_settings.unwrap_or(false),
            check_retain_source: f.check_retain_source.unwrap_or(true),
            listener_auth,
            listeners,
            listener_ids_next,
            persistence,
            limits: limits::ResourceLimits::resolve(&a.limits, &f.limits)?,
            bridges: f.bridges,
            cluster,
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
        if let Some(p) = &self.admin_password_file {
            // Checked here so that a bad file stops the start (and `check`) with its line.
            crate::auth::passwd::PasswordFile::load(p).map_err(|e| e.to_string())?;
        }
        let has_password_file = self.auth_files.password_file.is_some()
            || self
                .listener_auth
                .iter()
                .any(|l| l.files.password_file.is_some());
        // Client certificates (or a proxy's verified CN) that name users are credentials too.
        let certificates_name_users = self
            .listeners
            .iter()
            .any(|l| l.cert_username != listener::CertUsername::No);
        if !self.allow_anonymous
            && self.scram_credentials.is_none()
            && !has_password_file
            && !certificates_name_users
            && !self.per_listener_settings
        {
            return Err("allow_anonymous false needs credentials (password_file, --scram-credentials or use_identity_as_username); refusing to start a broker nobody can use".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_listen_locally_like_mosquitto() {
        let c = Config::default();
        let both = vec![
            SocketAddr::from(([127, 0, 0, 1], 1883)),
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 1883)),
        ];
        assert_eq!(c.binds, both);
        assert_eq!(c.max_inflight, 20);
        assert_eq!(c.max_queued_messages, 100_000);
    }

    #[test]
    fn rejects_bad_shard_counts() {
        let a = Args::parse_from(["shardmq", "--shards", "0"]);
        assert!(Config::from_args(a).is_err());
        let a = Args::parse_from(["shardmq", "--shards", "65"]);
        assert!(Config::from_args(a).is_err());
    }

    #[test]
    fn persistence_is_on_by_default_and_can_be_turned_off() {
        let c = Config::from_args(Args::parse_from(["shardmq"])).expect("defaults");
        assert!(c.persistence.enabled, "on by default");
        assert_eq!(c.persistence.location, PathBuf::from("shardmq-data/"));
        let a = Args::parse_from(["shardmq", "--no-persistence", "--data-dir", "d"]);
        let c = Config::from_args(a).expect("memory mode with a location is fine");
        assert_eq!(
            (c.persistence.enabled, c.persistence.location),
            (false, "d".into())
        );
        let c = Config::from_args(Args::parse_from(["shardmq", "--persistence-location", "d"]))
            .expect("a location");
        assert_eq!(
            (c.persistence.enabled, c.persistence.location),
            (true, "d".into())
        );
        let f = file::PersistenceFile {
            enabled: Some(false),
            location: Some("x".into()),
            ..Default::default()
        };
        let a = Args::parse_from(["shardmq"]);
        assert!(!Persistence::resolve(&a, &f).expect("resolves").enabled);
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

    #[test]
    fn password_and_acl_files_are_validated_and_loaded() {
        let dir = std::env::temp_dir().join(format!("shardmq-cfg-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let acl = dir.join("a.acl");
        let pw = dir.join("pw");
        std::fs::write(&acl, "topic read a/#\nbogus\n").expect("write");
        std::fs::write(&pw, "alice:plaintext\n").expect("write");
        let run = |args: &[&str]| {
            let mut all = vec!["shardmq"];
            all.extend_from_slice(args);
            Config::from_args(Args::parse_from(all)).expect_err("refused")
        };
        let (acl_s, pw_s) = (acl.to_str().expect("utf-8"), pw.to_str().expect("utf-8"));
        assert!(run(&["--acl-file", acl_s])
            .ends_with("a.acl:2: unknown keyword 'bogus' (expected user, topic or pattern)"));
        assert!(run(&["--password-file", pw_s]).contains("pw:1: user 'alice': plaintext password"));
        std::fs::write(&acl, "topic read a/#\n").expect("write");
        let c = Config::from_args(Args::parse_from(["shardmq", "--acl-file", acl_s]))
            .expect("valid ACL starts");
        assert!(c.auth_files.acl.is_some());
        let conf = dir.join("m.conf");
        std::fs::write(&conf, format!("acl_file {acl_s}\nallow_anonymous false\n")).expect("write");
        let e = run(&["-c", conf.to_str().expect("utf-8")]);
        assert!(e.contains("allow_anonymous false needs credentials"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bridge_local_login_is_checked_against_the_password_file() {
        let dir = std::env::temp_dir().join(format!("shardmq-cfg-bridge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let pw = dir.join("pw");
        let params = crate::auth::passwd_edit::HashParams {
            salt_bytes: 12,
            iterations: 2,
        };
        let line = crate::auth::passwd_edit::new_line("site", b"s3cret", params).expect("line");
        std::fs::write(&pw, format!("{line}\n")).expect("write");
        let conf = dir.join("b.conf");
        let with = |login: &str| {
            let text = format!(
                "password_file {}\nconnection up\naddress 127.0.0.1:1\ntopic t/# out 1\n{login}",
                pw.display()
            );
            std::fs::write(&conf, text).expect("write");
            let c = conf.to_str().expect("utf-8 path");
            Config::from_args(Args::parse_from(["shardmq", "-c", c, "--admin", "off"]))
        };
        with("local_username site\nlocal_password s3cret\n").expect("the right password");
        with("").expect("no local_username: nothing to check (Mosquitto)");
        for bad in [
            "local_username site\nlocal_password not-it\n",
            "local_username site\n",
            "local_username nobody\nlocal_password s3cret\n",
        ] {
            let e = with(bad).expect_err(bad);
            assert!(
                e.contains("b.conf:2: connection 'up': local_username"),
                "{e}"
            );
            assert!(
                !e.contains("s3cret") && !e.contains("not-it"),
                "no password in {e}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
