#![forbid(unsafe_code)]
//! Bridge sections of the configuration file: Mosquitto's `connection NAME` blocks.
//!
//! Owns: reading the bridge options of `mosquitto.conf` into validated `BridgeConfig`
//! values, with Mosquitto's defaults and Mosquitto's rules for `topic` lines (the `""`
//! place marker, the valid and invalid prefix combinations). Invariant: a `BridgeConfig`
//! that leaves `finish` names at least one address and one topic, every pattern is a valid
//! filter or `""` with both prefixes set, every prefix is a valid topic fragment, and every
//! number is within its limit; an error is a message the caller prefixes with file and line.
//! Must not touch: sockets, the bridge state machine (`crate::bridge` reads these values).

use std::path::PathBuf;

use crate::protocol::{QoS, Version};

/// Which way messages flow for one `topic` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Remote → local.
    In,
    /// Local → remote (Mosquitto's default).
    Out,
    /// Both ways.
    Both,
}

impl Direction {
    /// Messages from the remote are brought in.
    pub fn inbound(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }

    /// Local messages are sent out.
    pub fn outbound(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }
}

/// One `topic PATTERN [in|out|both] [QOS] [LOCAL_PREFIX] [REMOTE_PREFIX]` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRule {
    /// The pattern; empty for Mosquitto's `""` (then the prefixes are whole topics).
    pub pattern: String,
    /// Direction.
    pub direction: Direction,
    /// Subscription QoS, and the ceiling for forwarded messages.
    pub qos: QoS,
    /// Local prefix (empty for none), prepended as is: `L/` gives `L/pattern`.
    pub local_prefix: String,
    /// Remote prefix (empty for none).
    pub remote_prefix: String,
}

impl TopicRule {
    /// The filter on the local side: local prefix + pattern.
    pub fn local_filter(&self) -> String {
        format!("{}{}", self.local_prefix, self.pattern)
    }

    /// The filter on the remote side: remote prefix + pattern.
    pub fn remote_filter(&self) -> String {
        format!("{}{}", self.remote_prefix, self.pattern)
    }
}

/// One `HOST[:PORT]` of an `address` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port (1883 when not given, as Mosquitto).
    pub port: u16,
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `restart_timeout`: Mosquitto's constant form or its decorrelated-jitter back-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// `restart_timeout SECS`: always wait this long.
    Constant {
        /// Seconds.
        secs: u32,
    },
    /// `restart_timeout BASE CAP`: random waits from `base`, growing up to `cap`.
    Jitter {
        /// Seconds, the first wait.
        base: u32,
        /// Seconds, the longest wait.
        cap: u32,
    },
}

/// TLS settings of a bridge (`bridge_cafile` and friends). Using TLS at all is decided by
/// `cafile` being set, as in Mosquitto.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeTls {
    /// `bridge_cafile`: CA certificates for the remote's certificate.
    pub cafile: Option<PathBuf>,
    /// `bridge_certfile`: our client certificate.
    pub certfile: Option<PathBuf>,
    /// `bridge_keyfile`: its key.
    pub keyfile: Option<PathBuf>,
    /// `bridge_insecure`: skip the host name check.
    pub insecure: bool,
}

/// One bridge, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// `connection NAME`.
    pub name: String,
    /// The line of `connection` (for later errors).
    pub line: usize,
    /// `address`/`addresses`, in order; the first is the primary.
    pub addresses: Vec<Address>,
    /// `round_robin`.
    pub round_robin: bool,
    /// `topic` lines in order.
    pub topics: Vec<TopicRule>,
    /// `remote_clientid` (`clientid`); default `NAME.HOSTNAME`, see `remote_client_id`.
    pub remote_clientid: Option<String>,
    /// `local_clientid`; default `local.` + the remote client id.
    pub local_clientid: Option<String>,
    /// `remote_username` (`username`).
    pub remote_username: Option<String>,
    /// `remote_password` (`password`).
    pub remote_password: Option<String>,
    /// `local_username`: the bridge's user name on the local broker. When set, the ACL
    /// file applies to the bridge as to a client of that name (messages brought in are
    /// write-checked, messages sent out read-checked); unset, no ACL applies (Mosquitto).
    pub local_username: Option<String>,
    /// `local_password`: checked against the `password_file` with `local_username`.
    pub local_password: Option<String>,
    /// `cleansession` (default false).
    pub cleansession: bool,
    /// `local_cleansession` (default false, whatever `cleansession` says; Mosquitto
    /// defaults it to `cleansession`): true keeps no forwarding queue while the remote
    /// is unreachable, none across a reconnect and nothing in the store.
    pub local_cleansession: bool,
    /// `bridge_protocol_version` (default mqttv311).
    pub protocol: Version,
    /// `keepalive_interval`, seconds (default 60, at least 5).
    pub keepalive_s: u16,
    /// `restart_timeout` (default jitter 5 → 30 s).
    pub restart: Restart,
    /// `try_private` (default true).
    pub try_private: bool,
    /// `notifications` (default true).
    pub notifications: bool,
    /// `notifications_local_only` (default false).
    pub notifications_local_only: bool,
    /// `notification_topic`; default `$SYS/broker/connection/<remote client id>/state`.
    pub notification_topic: Option<String>,
    /// `bridge_outgoing_retain` (default true).
    pub outgoing_retain: bool,
    /// TLS settings.
    pub tls: BridgeTls,
    /// `bridge_max_packet_size`, bytes; 0 = unlimited (default).
    pub max_packet_size: u32,
    /// `bridge_max_queued_messages` (shardmq): forwarding queue bound, messages.
    pub max_queued_messages: usize,
    /// `bridge_max_queued_bytes` (shardmq): forwarding queue bound, payload + topic bytes.
    pub max_queued_bytes: usize,
}

/// Defaults of the bridge options.
pub mod defaults {
    /// Remote port when an address names none.
    pub const PORT: u16 = 1883;
    /// `keepalive_interval`, seconds.
    pub const KEEPALIVE_S: u16 = 60;
    /// The smallest `keepalive_interval` Mosquitto allows, seconds.
    pub const KEEPALIVE_MIN_S: u16 = 5;
    /// `restart_timeout` base, seconds.
    pub const RESTART_BASE_S: u32 = 5;
    /// `restart_timeout` cap, seconds.
    pub const RESTART_CAP_S: u32 = 30;
    /// `bridge_max_queued_messages`.
    pub const MAX_QUEUED_MESSAGES: usize = 100_000;
    /// `bridge_max_queued_bytes`.
    pub const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;
}

/// The most bridges one file may define.
pub const BRIDGES_MAX: usize = 64;
/// The most `topic` lines per bridge.
pub const TOPICS_PER_BRIDGE_MAX: usize = 1024;
/// The most addresses per bridge.
pub const ADDRESSES_PER_BRIDGE_MAX: usize = 16;
/// The longest `restart_timeout`, seconds (one day).
pub const RESTART_S_MAX: u32 = 86_400;

impl BridgeConfig {
    fn new(name: String, line: usize) -> Self {
        BridgeConfig {
            name,
            line,
            addresses: Vec::new(),
            round_robin: false,
            topics: Vec::new(),
            remote_clientid: None,
            local_clientid: None,
            remote_username: None,
            remote_password: None,
            local_username: None,
            local_password: None,
            cleansession: false,
            local_cleansession: false,
            protocol: Version::V3_1_1,
            keepalive_s: defaults::KEEPALIVE_S,
            restart: Restart::Jitter {
                base: defaults::RESTART_BASE_S,
                cap: defaults::RESTART_CAP_S,
            },
            try_private: true,
            notifications: true,
            notifications_local_only: false,
            notification_topic: None,
            outgoing_retain: true,
            tls: BridgeTls::default(),
            max_packet_size: 0,
            max_queued_messages: defaults::MAX_QUEUED_MESSAGES,
            max_queued_bytes: defaults::MAX_QUEUED_BYTES,
        }
    }

    /// The client id on the remote: `remote_clientid`, else Mosquitto's `NAME.HOSTNAME`.
    pub fn remote_client_id(&self, hostname: &str) -> String {
        match &self.remote_clientid {
            Some(id) => id.clone(),
            None => format!("{}.{hostname}", self.name),
        }
    }

    /// Whether `other` sends to the same remote as `self`: the same set of addresses (in
    /// any order; fail-over among them already treats them as one remote) and the same
    /// remote client id (the remote's key for the session). A message a reload carries over
    /// in flight is resent with DUP only then (`Bridge::carry_over`), as after a
    /// reconnect, whatever `cleansession` says: a reconnect with a clean session resends
    /// with DUP too, since that remote may have had the PUBLISH whose acknowledgement was
    /// lost.
    pub fn same_remote(&self, other: &BridgeConfig, hostname: &str) -> bool {
        let covers = |a: &[Address], b: &[Address]| a.iter().all(|x| b.contains(x));
        covers(&self.addresses, &other.addresses)
            && covers(&other.addresses, &self.addresses)
            && self.remote_client_id(hostname) == other.remote_client_id(hostname)
    }

    /// The client id on the local broker: `local_clientid`, else `local.<remote id>`.
    pub fn local_client_id(&self, hostname: &str) -> String {
        match &self.local_clientid {
            Some(id) => id.clone(),
            None => format!("local.{}", self.remote_client_id(hostname)),
        }
    }

    /// The state topic: `notification_topic`, else `$SYS/broker/connection/<id>/state`.
    pub fn notification_topic(&self, hostname: &str) -> String {
        match &self.notification_topic {
            Some(t) => t.clone(),
            None => format!(
                "$SYS/broker/connection/{}/state",
                self.remote_client_id(hostname)
            ),
        }
    }
}

/// The local logins of `bridges` against `password_file` (the one outside any `listener`
/// block): a bridge with `local_username` must name a user of that file with its
/// `local_password`, as a local client would have to. Without a password file nothing is
/// checked. An error names the line of the faulty `connection` (never the password).
pub fn check_local_logins(
    bridges: &[BridgeConfig],
    password_file: Option<&crate::auth::PasswordFile>,
) -> Result<(), (usize, String)> {
    let Some(pw) = password_file else {
        return Ok(());
    };
    for b in bridges {
        let Some(user) = b.local_username.as_deref() else {
            continue;
        };
        let password = b.local_password.as_deref().unwrap_or("").as_bytes();
        if pw.verify(user, password) != crate::auth::Verdict::Ok {
            return Err((
                b.line,
                format!(
                    "connection '{}': local_username '{user}' is refused by the password_file (unknown user or wrong local_password)",
                    b.name
                ),
            ));
        }
    }
    Ok(())
}

/// This machine's host name (for the default client ids), or `localhost`.
pub fn hostname() -> String {
    // std has no gethostname: the kernel's view, as `hostname` prints it.
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Whether `key` is a bridge option (handled by `BridgeParser`).
pub fn is_bridge_key(key: &str) -> bool {
    KEYS.contains(&key) || UNSUPPORTED.contains(&key)
}

const KEYS: &[&str] = &[
    "connection",
    "address",
    "addresses",
    "round_robin",
    "topic",
    "remote_clientid",
    "clientid",
    "local_clientid",
    "remote_username",
    "username",
    "remote_password",
    "password",
    "cleansession",
    "local_username",
    "local_password",
    "local_cleansession",
    "bridge_protocol_version",
    "keepalive_interval",
    "restart_timeout",
    "try_private",
    "notifications",
    "notifications_local_only",
    "notification_topic",
    "bridge_cafile",
    "bridge_certfile",
    "bridge_keyfile",
    "bridge_insecure",
    "bridge_max_packet_size",
    "bridge_outgoing_retain",
    "bridge_max_queued_messages",
    "bridge_max_queued_bytes",
    "start_type",
];

/// Mosquitto bridge options shardmq does not implement: refused, never ignored.
const UNSUPPORTED: &[&str] = &[
    "bridge_attempt_unsubscribe",
    "bridge_bind_address",
    "bridge_capath",
    "bridge_alpn",
    "bridge_identity",
    "bridge_psk",
    "bridge_require_ocsp",
    "bridge_tls_version",
    "idle_timeout",
    "threshold",
];

/// Collects `connection` blocks line by line.
#[derive(Debug, Default)]
pub struct BridgeParser {
    bridges: Vec<BridgeConfig>,
}

impl BridgeParser {
    /// Apply one bridge option (`is_bridge_key(key)` holds) found on line `line`.
    pub fn line(&mut self, key: &str, value: &str, line: usize) -> Result<(), String> {
        if UNSUPPORTED.contains(&key) {
            return Err(format!("'{key}' is not supported for bridges"));
        }
        if key == "connection" {
            return self.connection(value, line);
        }
        let Some(b) = self.bridges.last_mut() else {
            return Err(format!("'{key}' must follow a 'connection' line"));
        };
        apply(b, key, value)
    }

    fn connection(&mut self, value: &str, line: usize) -> Result<(), String> {
        let name = single(value, "connection")?;
        if self.bridges.len() >= BRIDGES_MAX {
            return Err(format!("more than {BRIDGES_MAX} bridges"));
        }
        if self.bridges.iter().any(|b| b.name == name) {
            return Err(format!("connection '{name}' is defined twice"));
        }
        self.bridges.push(BridgeConfig::new(name.to_string(), line));
        Ok(())
    }

    /// Every bridge, checked; an error names the line of the faulty `connection`.
    pub fn finish(self) -> Result<Vec<BridgeConfig>, (usize, String)> {
        for b in &self.bridges {
            check_block(b).map_err(|e| (b.line, e))?;
        }
        Ok(self.bridges)
    }
}

/// Checks that need the whole block.
fn check_block(b: &BridgeConfig) -> Result<(), String> {
    let name = &b.name;
    if b.addresses.is_empty() {
        return Err(format!("connection '{name}' has no address"));
    }
    if b.topics.is_empty() {
        return Err(format!("connection '{name}' has no topic"));
    }
    if b.remote_password.is_some() && b.remote_username.is_none() {
        return Err(format!(
            "connection '{name}': remote_password needs remote_username"
        ));
    }
    if b.local_password.is_some() && b.local_username.is_none() {
        return Err(format!(
            "connection '{name}': local_password needs local_username"
        ));
    }
    let t = &b.tls;
    if t.certfile.is_some() != t.keyfile.is_some() {
        return Err(format!(
            "connection '{name}': bridge_certfile and bridge_keyfile go together"
        ));
    }
    if t.cafile.is_none() && (t.certfile.is_some() || t.insecure) {
        return Err(format!(
            "connection '{name}': TLS options need bridge_cafile"
        ));
    }
    Ok(())
}

fn apply(b: &mut BridgeConfig, key: &str, value: &str) -> Result<(), String> {
    match key {
        "address" | "addresses" => b.addresses = addresses(value)?,
        "round_robin" => b.round_robin = boolean(key, value)?,
        "topic" => {
            if b.topics.len() >= TOPICS_PER_BRIDGE_MAX {
                return Err(format!("more than {TOPICS_PER_BRIDGE_MAX} topics"));
            }
            b.topics.push(topic_rule(value)?);
        }
        "remote_clientid" | "clientid" => b.remote_clientid = Some(client_id(key, value)?),
        "local_clientid" => b.local_clientid = Some(client_id(key, value)?),
        "remote_username" | "username" => b.remote_username = Some(string(key, value)?),
        "remote_password" | "password" => b.remote_password = Some(string(key, value)?),
        "cleansession" => b.cleansession = boolean(key, value)?,
        "local_username" => b.local_username = Some(string(key, value)?),
        "local_password" => b.local_password = Some(string(key, value)?),
        "local_cleansession" => b.local_cleansession = boolean(key, value)?,
        "bridge_protocol_version" => b.protocol = protocol(value)?,
        "keepalive_interval" => b.keepalive_s = keepalive(value)?,
        "restart_timeout" => b.restart = restart(value)?,
        "try_private" => b.try_private = boolean(key, value)?,
        "notifications" => b.notifications = boolean(key, value)?,
        "notifications_local_only" => b.notifications_local_only = boolean(key, value)?,
        "notification_topic" => b.notification_topic = Some(notification_topic(value)?),
        "bridge_cafile" => b.tls.cafile = Some(string(key, value)?.into()),
        "bridge_certfile" => b.tls.certfile = Some(string(key, value)?.into()),
        "bridge_keyfile" => b.tls.keyfile = Some(string(key, value)?.into()),
        "bridge_insecure" => b.tls.insecure = boolean(key, value)?,
        "bridge_max_packet_size" => b.max_packet_size = number(key, value)?,
        "bridge_outgoing_retain" => b.outgoing_retain = boolean(key, value)?,
        "bridge_max_queued_messages" => b.max_queued_messages = number(key, value)?,
        "bridge_max_queued_bytes" => b.max_queued_bytes = number(key, value)?,
        "start_type" => match value {
            "automatic" => {}
            "lazy" | "once" => return Err(format!("start_type {value} is not supported")),
            _ => return Err(format!("start_type: expected automatic, got '{value}'")),
        },
        k => return Err(format!("unknown bridge option '{k}'")),
    }
    Ok(())
}

fn single<'a>(value: &'a str, key: &str) -> Result<&'a str, String> {
    let mut parts = value.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(v), None) => Ok(v),
        (None, _) => Err(format!("{key}: a value is required")),
        (Some(_), Some(extra)) => Err(format!("{key}: unexpected '{extra}'")),
    }
}

fn string(key: &str, value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err(format!("{key}: a value is required"));
    }
    if value.len() > usize::from(u16::MAX) {
        return Err(format!("{key}: longer than 65535 bytes"));
    }
    Ok(value.to_string())
}

fn client_id(key: &str, value: &str) -> Result<String, String> {
    Ok(single(string(key, value)?.as_str(), key)?.to_string())
}

fn boolean(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{key}: expected true or false, got '{value}'")),
    }
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{key}: '{value}' is not a valid number here"))
}

fn protocol(value: &str) -> Result<Version, String> {
    match value {
        "mqttv311" => Ok(Version::V3_1_1),
        "mqttv50" => Ok(Version::V5),
        "mqttv31" => Ok(Version::V3_1),
        _ => Err(format!(
            "bridge_protocol_version: expected mqttv311, mqttv50 or mqttv31, got '{value}'"
        )),
    }
}

fn keepalive(value: &str) -> Result<u16, String> {
    let s: u16 = number("keepalive_interval", value)?;
    if s < defaults::KEEPALIVE_MIN_S {
        return Err(format!(
            "keepalive_interval: at least {} seconds, got {s}",
            defaults::KEEPALIVE_MIN_S
        ));
    }
    Ok(s)
}

/// `restart_timeout SECS` or `restart_timeout BASE CAP`.
fn restart(value: &str) -> Result<Restart, String> {
    let key = "restart_timeout";
    let parts: Vec<&str> = value.split_whitespace().collect();
    let secs = |s: &str| -> Result<u32, String> {
        let n: u32 = number(key, s)?;
        if n == 0 || n > RESTART_S_MAX {
            return Err(format!(
                "{key}: between 1 and {RESTART_S_MAX} seconds, got {n}"
            ));
        }
        Ok(n)
    };
    match parts.as_slice() {
        [one] => Ok(Restart::Constant { secs: secs(one)? }),
        [base, cap] => {
            let (base, cap) = (secs(base)?, secs(cap)?);
            if cap < base {
                return Err(format!("{key}: cap {cap} is below base {base}"));
            }
            Ok(Restart::Jitter { base, cap })
        }
        _ => Err(format!("{key}: expected SECS or BASE CAP, got '{value}'")),
    }
}

fn notification_topic(value: &str) -> Result<String, String> {
    let t = single(value, "notification_topic")?;
    if !crate::topic::valid_topic_name(t) {
        return Err(format!(
            "notification_topic: '{t}' is not a valid topic name"
        ));
    }
    Ok(t.to_string())
}

/// `HOST[:PORT] [HOST[:PORT]…]`; an IPv6 address is `[ADDR]:PORT` or, as Mosquitto reads
/// it, `ADDR:PORT` split at the last colon.
fn addresses(value: &str) -> Result<Vec<Address>, String> {
    let list: Vec<&str> = value.split_whitespace().collect();
    if list.is_empty() {
        return Err("address: at least one HOST[:PORT] is required".into());
    }
    if list.len() > ADDRESSES_PER_BRIDGE_MAX {
        return Err(format!(
            "address: more than {ADDRESSES_PER_BRIDGE_MAX} addresses"
        ));
    }
    list.into_iter().map(address).collect()
}

fn address(a: &str) -> Result<Address, String> {
    let port = |p: &str| -> Result<u16, String> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("address: bad port in '{a}'")),
        }
    };
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (host, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("address: missing ']' in '{a}'"))?;
        let p = tail
            .strip_prefix(':')
            .ok_or_else(|| format!("address: '{a}' needs ]:PORT"))?;
        (host, port(p)?)
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) => (h, port(p)?),
            None => (a, defaults::PORT),
        }
    };
    if host.is_empty() {
        return Err(format!("address: no host in '{a}'"));
    }
    Ok(Address {
        host: host.to_string(),
        port,
    })
}

/// A `""` token is Mosquitto's empty place marker.
fn token(t: &str) -> &str {
    if t == "\"\"" {
        ""
    } else {
        t
    }
}

/// `topic PATTERN [in|out|both] [QOS] [LOCAL_PREFIX] [REMOTE_PREFIX]`.
fn topic_rule(value: &str) -> Result<TopicRule, String> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    if parts.len() > 5 {
        return Err(format!("topic: unexpected '{}'", parts[5]));
    }
    let pattern = token(parts.first().ok_or("topic: a pattern is required")?);
    let direction = match parts.get(1).copied() {
        None | Some("out") => Direction::Out,
        Some("in") => Direction::In,
        Some("both") => Direction::Both,
        Some(d) => {
            return Err(format!(
                "topic: direction must be in, out or both, got '{d}'"
            ))
        }
    };
    let qos = match parts.get(2) {
        None => QoS::AtMostOnce,
        Some(q) => q
            .parse::<u8>()
            .ok()
            .and_then(QoS::from_bits)
            .ok_or_else(|| format!("topic: QoS must be 0, 1 or 2, got '{q}'"))?,
    };
    let local_prefix = prefix(parts.get(3).copied(), "local")?;
    let remote_prefix = prefix(parts.get(4).copied(), "remote")?;
    if pattern.is_empty() {
        if local_prefix.is_empty() || remote_prefix.is_empty() {
            return Err(
                "topic: an empty pattern \"\" needs both a local and a remote prefix".into(),
            );
        }
    } else if !crate::topic::valid_filter(pattern) {
        return Err(format!("topic: '{pattern}' is not a valid topic filter"));
    }
    let rule = TopicRule {
        pattern: pattern.to_string(),
        direction,
        qos,
        local_prefix,
        remote_prefix,
    };
    for f in [rule.local_filter(), rule.remote_filter()] {
        if !crate::topic::valid_filter(&f) {
            return Err(format!("topic: '{f}' is not a valid topic filter"));
        }
    }
    Ok(rule)
}

/// A prefix: `""` or absent is empty; otherwise no wildcards (Mosquitto's publish-topic
/// check), so that prefix + pattern stays a valid filter.
fn prefix(t: Option<&str>, side: &str) -> Result<String, String> {
    let p = token(t.unwrap_or(""));
    if !p.is_empty() && !crate::topic::valid_topic_name(p) {
        return Err(format!(
            "topic: {side} prefix '{p}' must not contain wildcards"
        ));
    }
    Ok(p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<BridgeConfig>, (usize, String)> {
        let mut p = BridgeParser::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (k, v) = line.split_once(' ').unwrap_or((line, ""));
            p.line(k, v.trim(), i + 1).map_err(|e| (i + 1, e))?;
        }
        p.finish()
    }

    fn rule(v: &str) -> TopicRule {
        topic_rule(v).unwrap_or_else(|e| panic!("{v}: {e}"))
    }

    #[test]
    fn a_full_block_with_mosquitto_defaults() {
        let b = parse("connection cloud\naddress broker.example:8883 10.0.0.2\ntopic sensors/# out 1 \"\" site1/\n")
            .expect("valid");
        assert_eq!(b.len(), 1);
        let b = &b[0];
        assert_eq!(b.name, "cloud");
        assert_eq!(
            b.addresses,
            vec![
                Address {
                    host: "broker.example".into(),
                    port: 8883
                },
                Address {
                    host: "10.0.0.2".into(),
                    port: 1883
                }
            ]
        );
        assert_eq!(b.protocol, Version::V3_1_1);
        assert_eq!(b.keepalive_s, 60);
        assert_eq!(b.restart, Restart::Jitter { base: 5, cap: 30 });
        assert!(b.try_private && b.notifications && !b.cleansession && !b.round_robin);
        assert!(b.local_username.is_none() && !b.local_cleansession);
        assert_eq!(b.remote_client_id("host"), "cloud.host");
        assert_eq!(b.local_client_id("host"), "local.cloud.host");
        assert_eq!(
            b.notification_topic("host"),
            "$SYS/broker/connection/cloud.host/state"
        );
    }

    #[test]
    fn every_option_is_read() {
        let text = "connection a\naddresses [::1]:1999 h\nround_robin true\ntopic # both 2\nremote_clientid rc\nlocal_clientid lc\nremote_username u\nremote_password p w\nlocal_username lu\nlocal_password l p\nlocal_cleansession true\ncleansession true\nbridge_protocol_version mqttv50\nkeepalive_interval 5\nrestart_timeout 20\ntry_private false\nnotifications false\nnotification_topic n/s\nbridge_cafile ca.pem\nbridge_certfile c.pem\nbridge_keyfile k.pem\nbridge_insecure true\nbridge_max_packet_size 1000\nbridge_max_queued_messages 7\nbridge_max_queued_bytes 9\nstart_type automatic\n";
        let b = parse(text).expect("valid").remove(0);
        assert_eq!(
            b.addresses[0],
            Address {
                host: "::1".into(),
                port: 1999
            }
        );
        assert!(b.round_robin && b.cleansession && !b.try_private && !b.notifications);
        assert_eq!(b.remote_password.as_deref(), Some("p w"));
        assert_eq!(b.local_username.as_deref(), Some("lu"));
        assert_eq!(b.local_password.as_deref(), Some("l p"));
        assert!(b.local_cleansession);
        assert_eq!(b.protocol, Version::V5);
        assert_eq!((b.keepalive_s, b.max_packet_size), (5, 1000));
        assert_eq!(b.restart, Restart::Constant { secs: 20 });
        assert_eq!(b.notification_topic("h"), "n/s");
        assert_eq!(b.local_client_id("h"), "lc");
        assert!(b.tls.insecure && b.tls.keyfile.is_some());
        assert_eq!((b.max_queued_messages, b.max_queued_bytes), (7, 9));
    }

    /// The table of `mosquitto.conf(5)`: which pattern/prefix combinations are valid.
    #[test]
    fn topic_lines_follow_mosquittos_table() {
        let valid = [
            ("pattern out 0 L/ R/", "L/pattern", "R/pattern"),
            ("pattern out 0 L/ \"\"", "L/pattern", "pattern"),
            ("pattern out 0 \"\" R/", "pattern", "R/pattern"),
            ("pattern out 0 \"\" \"\"", "pattern", "pattern"),
            ("\"\" out 0 local remote", "local", "remote"),
            ("pattern", "pattern", "pattern"),
        ];
        for (line, local, remote) in valid {
            let r = rule(line);
            assert_eq!(
                (r.local_filter().as_str(), r.remote_filter().as_str()),
                (local, remote),
                "{line}"
            );
        }
        for line in [
            "\"\" out 0 local \"\"",
            "\"\" out 0 \"\" remote",
            "\"\" out 0 \"\" \"\"",
            "\"\"",
        ] {
            assert!(topic_rule(line).is_err(), "{line} must be invalid");
        }
        let r = rule("a/+ in 2");
        assert_eq!((r.direction, r.qos), (Direction::In, QoS::ExactlyOnce));
        assert_eq!(rule("a").direction, Direction::Out);
    }

    #[test]
    fn errors_name_the_line() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "address h\n",
                1,
                "'address' must follow a 'connection' line",
            ),
            (
                "connection a\naddress h\n",
                1,
                "connection 'a' has no topic",
            ),
            (
                "connection a\ntopic #\n",
                1,
                "connection 'a' has no address",
            ),
            (
                "connection a\naddress h:0\n",
                2,
                "address: bad port in 'h:0'",
            ),
            (
                "connection a\ntopic # sideways\n",
                2,
                "topic: direction must be in, out or both, got 'sideways'",
            ),
            (
                "connection a\ntopic # in 3\n",
                2,
                "topic: QoS must be 0, 1 or 2, got '3'",
            ),
            (
                "connection a\ntopic a/#/b\n",
                2,
                "topic: 'a/#/b' is not a valid topic filter",
            ),
            (
                "connection a\ntopic # in 0 l/+/ r/\n",
                2,
                "topic: local prefix 'l/+/' must not contain wildcards",
            ),
            (
                "connection a\ntopic x out 0 a/# \"\"\n",
                2,
                "topic: local prefix 'a/#' must not contain wildcards",
            ),
            (
                "connection a\nkeepalive_interval 4\n",
                2,
                "keepalive_interval: at least 5 seconds, got 4",
            ),
            (
                "connection a\nrestart_timeout 30 10\n",
                2,
                "restart_timeout: cap 10 is below base 30",
            ),
            (
                "connection a\nrestart_timeout 0\n",
                2,
                "restart_timeout: between 1 and 86400 seconds, got 0",
            ),
            (
                "connection a\nbridge_protocol_version mqttv6\n",
                2,
                "bridge_protocol_version: expected mqttv311, mqttv50 or mqttv31, got 'mqttv6'",
            ),
            (
                "connection a\nbridge_psk 00\n",
                2,
                "'bridge_psk' is not supported for bridges",
            ),
            (
                "connection a\naddress h\ntopic #\nconnection a\n",
                4,
                "connection 'a' is defined twice",
            ),
            (
                "connection a\naddress h\ntopic #\nremote_password p\n",
                1,
                "connection 'a': remote_password needs remote_username",
            ),
            (
                "connection a\naddress h\ntopic #\nlocal_password p\n",
                1,
                "connection 'a': local_password needs local_username",
            ),
            (
                "connection a\naddress h\ntopic #\nbridge_certfile c\n",
                1,
                "connection 'a': bridge_certfile and bridge_keyfile go together",
            ),
            (
                "connection a\naddress h\ntopic #\nconnection b\n",
                4,
                "connection 'b' has no address",
            ),
        ];
        for (text, line, problem) in cases {
            let got = parse(text).expect_err(text);
            assert_eq!((got.0, got.1.as_str()), (*line, *problem), "{text}");
        }
    }

    #[test]
    fn an_unfinished_block_is_reported_at_its_own_connection_line() {
        let got = parse("connection a\naddress h\nconnection b\n").expect_err("a has no topic");
        assert_eq!(got, (1, "connection 'a' has no topic".to_string()));
    }
}
