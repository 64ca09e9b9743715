//! Resource limits a client cannot push past (issue 12): how many subscriptions, how long
//! and deep a filter, how many connections, how fast one address may connect, and the
//! memory the whole broker may account for (`memory_limit`).
//!
//! Owns: these options' command-line flags, their `mosquitto.conf` lines and their
//! defaults, resolved into [`ResourceLimits`]. Invariant: every limit has a finite default
//! (0 means "no limit" only where the operator writes it). Must not touch: the other
//! options (`Config`), sockets, the broker (which only reads [`ResourceLimits`]).

use clap::Args as ClapArgs;

use crate::topic::TOPIC_LEVELS_MAX;

/// The defaults, with why.
pub mod defaults {
    /// Subscriptions per session: far above any device or app (a bridge holds a few
    /// hundred), low enough that one client cannot hold gigabytes of filters.
    pub const MAX_SUBSCRIPTIONS_PER_CLIENT: usize = 10_000;
    /// Bytes of a topic filter: real schemes stay under 256 (AWS IoT's own cap); 65,535
    /// would let 10,000 filters cost 655 MB for one client.
    pub const MAX_FILTER_LENGTH: usize = 4_096;
    /// Levels of a topic filter: the hard bound every trie walk relies on.
    pub const MAX_TOPIC_LEVELS: usize = super::TOPIC_LEVELS_MAX;
    /// Connections open at once, broker-wide (0: no limit but the file descriptors).
    pub const MAX_CONNECTIONS: usize = 0;
    /// New connections per second from one source address (0: no limit). Generous, for
    /// NAT: it stops a reconnect storm from one host, not a fleet behind one gateway.
    pub const MAX_CONNECTION_RATE: u32 = 0;
    /// Share of the machine's memory (or of the cgroup's limit, if lower) that
    /// `memory_limit` defaults to, percent: the rest is for the kernel's socket buffers,
    /// the allocator's slack and other processes.
    pub const MEMORY_LIMIT_PERCENT: u64 = 50;
}

/// The command-line flags of these limits (flattened into `Args`).
#[derive(ClapArgs, Debug, Clone, Default)]
pub struct LimitArgs {
    /// Subscriptions one session may hold; past it SUBACK says 0x97 Quota exceeded
    /// (3.x: 0x80). 0 = no limit [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_subscriptions_per_client: Option<usize>,
    /// Longest topic filter accepted in SUBSCRIBE, bytes [default: 4096].
    #[arg(long, value_name = "BYTES")]
    pub max_filter_length: Option<usize>,
    /// Most levels in a topic filter, 1 to 128 [default: 128].
    #[arg(long, value_name = "N")]
    pub max_topic_levels: Option<usize>,
    /// Connections open at once over all listeners; past it new sockets are closed at
    /// accept. 0 = no limit [default: 0].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// New connections per second accepted from one source address; the excess is closed
    /// at accept. 0 = no limit [default: 0].
    #[arg(long, value_name = "PER_SEC")]
    pub max_connection_rate: Option<u32>,
    /// Memory the broker may account for (queues, buffers, partial packets, retained
    /// messages, subscriptions), bytes; 0 = no limit [default: half the machine's or
    /// cgroup's memory].
    #[arg(long, value_name = "BYTES")]
    pub memory_limit: Option<u64>,
}

/// The same options as read from a configuration file (`None`: not given there).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LimitFile {
    /// `max_subscriptions_per_client`.
    pub max_subscriptions_per_client: Option<usize>,
    /// `max_filter_length`.
    pub max_filter_length: Option<usize>,
    /// `max_topic_levels`.
    pub max_topic_levels: Option<usize>,
    /// `global_max_connections` (`max_connections` is a listener option, as in Mosquitto).
    pub max_connections: Option<usize>,
    /// `max_connection_rate`.
    pub max_connection_rate: Option<u32>,
    /// `memory_limit` (Mosquitto's word).
    pub memory_limit: Option<u64>,
}

/// The file keys of this module.
pub const FILE_KEYS: &[&str] = &[
    "max_subscriptions_per_client",
    "max_filter_length",
    "max_topic_levels",
    "global_max_connections",
    "max_connection_rate",
    "memory_limit",
];

impl LimitFile {
    /// Apply one of [`FILE_KEYS`].
    pub fn apply(&mut self, key: &str, value: &str) -> Result<(), String> {
        let n = || -> Result<usize, String> {
            value
                .trim()
                .parse()
                .map_err(|_| format!("{key}: '{value}' is not a number"))
        };
        match key {
            "max_subscriptions_per_client" => self.max_subscriptions_per_client = Some(n()?),
            "max_filter_length" => self.max_filter_length = Some(n()?),
            "max_topic_levels" => self.max_topic_levels = Some(n()?),
            "global_max_connections" => self.max_connections = Some(n()?),
            "max_connection_rate" => {
                self.max_connection_rate =
                    Some(u32::try_from(n()?).map_err(|_| format!("{key}: too large"))?)
            }
            "memory_limit" => self.memory_limit = Some(n()? as u64),
            _ => return Err(format!("unknown option '{key}'")),
        }
        Ok(())
    }
}

/// The resolved limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceLimits {
    /// Subscriptions per session (`usize::MAX`: none).
    pub max_subscriptions_per_client: usize,
    /// Bytes of a topic filter.
    pub max_filter_length: usize,
    /// Levels of a topic filter.
    pub max_topic_levels: usize,
    /// Connections at once, broker-wide (`usize::MAX`: none).
    pub max_connections: usize,
    /// New connections per second per source address (0: none).
    pub max_connection_rate: u32,
    /// Bytes the broker may account for (0: no limit).
    pub memory_limit: u64,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        ResourceLimits::resolve(&LimitArgs::default(), &LimitFile::default())
            .unwrap_or_else(|_| unreachable!("the defaults are valid"))
    }
}

impl ResourceLimits {
    /// The command line's value, else the file's, else the default; checked.
    pub fn resolve(a: &LimitArgs, f: &LimitFile) -> Result<ResourceLimits, String> {
        let unlimited_if_0 = |n: usize| if n == 0 { usize::MAX } else { n };
        let levels = a
            .max_topic_levels
            .or(f.max_topic_levels)
            .unwrap_or(defaults::MAX_TOPIC_LEVELS);
        if !(1..=TOPIC_LEVELS_MAX).contains(&levels) {
            return Err(format!(
                "max_topic_levels must be between 1 and {TOPIC_LEVELS_MAX}, got {levels}"
            ));
        }
        let filter_len = a
            .max_filter_length
            .or(f.max_filter_length)
            .unwrap_or(defaults::MAX_FILTER_LENGTH);
        if filter_len == 0 {
            return Err("max_filter_length must be at least 1".into());
        }
        Ok(ResourceLimits {
            max_subscriptions_per_client: unlimited_if_0(
                a.max_subscriptions_per_client
                    .or(f.max_subscriptions_per_client)
                    .unwrap_or(defaults::MAX_SUBSCRIPTIONS_PER_CLIENT),
            ),
            max_filter_length: filter_len,
            max_topic_levels: levels,
            max_connections: unlimited_if_0(
                a.max_connections
                    .or(f.max_connections)
                    .unwrap_or(defaults::MAX_CONNECTIONS),
            ),
            max_connection_rate: a
                .max_connection_rate
                .or(f.max_connection_rate)
                .unwrap_or(defaults::MAX_CONNECTION_RATE),
            memory_limit: a
                .memory_limit
                .or(f.memory_limit)
                .unwrap_or_else(default_memory_limit),
        })
    }

    /// Whether `filter` (the part after any `$share/group/`) is within the length and
    /// depth limits.
    pub fn filter_within(&self, filter: &str) -> bool {
        filter.len() <= self.max_filter_length
            && filter.bytes().filter(|&b| b == b'/').count() < self.max_topic_levels
    }
}

/// [`defaults::MEMORY_LIMIT_PERCENT`] of the machine's memory, or of the cgroup (v2)
/// limit when that is lower; 0 (no limit) if neither can be read.
fn default_memory_limit() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib * 1024);
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    let machine = match (total, cgroup) {
        (Some(t), Some(c)) => t.min(c),
        (Some(t), None) => t,
        (None, Some(c)) => c,
        (None, None) => return 0,
    };
    machine / 100 * defaults::MEMORY_LIMIT_PERCENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_finite_and_zero_means_no_limit() {
        let l = ResourceLimits::default();
        assert_eq!(l.max_subscriptions_per_client, 10_000);
        assert_eq!(l.max_connections, usize::MAX);
        assert!(l.memory_limit > 0, "half the machine's memory by default");
        let a = LimitArgs {
            max_subscriptions_per_client: Some(0),
            ..LimitArgs::default()
        };
        let l = ResourceLimits::resolve(&a, &LimitFile::default()).expect("valid");
        assert_eq!(l.max_subscriptions_per_client, usize::MAX);
    }

    #[test]
    fn command_line_wins_and_bad_values_are_refused() {
        let mut f = LimitFile::default();
        f.apply("max_subscriptions_per_client", "7")
            .expect("number");
        f.apply("global_max_connections", "9").expect("number");
        assert!(f.apply("max_topic_levels", "many").is_err());
        let a = LimitArgs {
            max_subscriptions_per_client: Some(3),
            ..LimitArgs::default()
        };
        let l = ResourceLimits::resolve(&a, &f).expect("valid");
        assert_eq!((l.max_subscriptions_per_client, l.max_connections), (3, 9));
        f.max_topic_levels = Some(129);
        assert!(ResourceLimits::resolve(&a, &f).is_err());
    }

    #[test]
    fn filter_limits_count_bytes_and_levels() {
        let l = ResourceLimits {
            max_filter_length: 8,
            max_topic_levels: 2,
            ..ResourceLimits::default()
        };
        assert!(l.filter_within("a/b"));
        assert!(!l.filter_within("a/b/c"));
        assert!(!l.filter_within("abcdefghi"));
    }
}
