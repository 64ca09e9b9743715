//! The configuration file: Mosquitto's `mosquitto.conf` syntax, the subset shardmq serves.
//!
//! Owns: reading `key value` lines into `FileSettings`. Invariants: every line is either
//! understood, or a known harmless one (logging options Mosquitto has and we print
//! anyway), or an error naming the file, the line and the problem. A security option we
//! do not implement yet (`password_file`, `acl_file`, TLS files, `allow_anonymous false`)
//! is an error, never silently ignored: ignoring it would run an open broker where the
//! operator asked for a closed one. Must not touch: sockets, defaults (those live in
//! `Config`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

/// Settings read from a file; `None` means "not set here".
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileSettings {
    /// `listener PORT [ADDRESS]` lines, and `port`/`bind_address`.
    pub binds: Vec<SocketAddr>,
    /// `shards`.
    pub shards: Option<usize>,
    /// `max_inflight_messages`.
    pub max_inflight_messages: Option<u16>,
    /// `max_queued_messages`.
    pub max_queued_messages: Option<usize>,
    /// `max_queued_bytes`.
    pub max_queued_bytes: Option<usize>,
    /// `max_packet_size`.
    pub max_packet_size: Option<usize>,
    /// `max_keepalive`.
    pub max_keepalive: Option<u16>,
    /// `max_topic_alias`.
    pub max_topic_alias: Option<u16>,
    /// `connect_timeout` (shardmq).
    pub connect_timeout: Option<u32>,
    /// `max_write_buffer` (shardmq).
    pub max_write_buffer: Option<usize>,
    /// `receive_maximum` (shardmq).
    pub receive_maximum: Option<u16>,
    /// `response_information` (shardmq).
    pub response_information: Option<String>,
    /// `scram_credentials` (shardmq): the SCRAM-SHA-256 credentials file.
    pub scram_credentials: Option<std::path::PathBuf>,
    /// `allow_anonymous`.
    pub allow_anonymous: Option<bool>,
    /// `sys_interval`.
    pub sys_interval: Option<u32>,
    /// Warnings to print (accepted but ignored lines).
    pub warnings: Vec<String>,
    /// The `cluster_*` lines (`super::cluster`).
    pub cluster: super::cluster::ClusterKeys,
}

/// A configuration file problem: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The file as given.
    pub file: String,
    /// 1-based line number (0 when the file could not be read).
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.problem)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.problem)
        }
    }
}

/// Lines longer than this are refused (a configuration line, not a data file).
const LINE_BYTES_MAX: usize = 4096;
/// Mosquitto options we accept and ignore, because shardmq always logs to stderr.
const IGNORED: &[&str] = &[
    "log_dest",
    "log_type",
    "log_timestamp",
    "log_timestamp_format",
    "connection_messages",
    "pid_file",
    "user",
];
/// Mosquitto options that would make the broker stricter than we can yet be.
const UNSUPPORTED_SECURITY: &[&str] = &[
    "password_file",
    "acl_file",
    "psk_file",
    "cafile",
    "capath",
    "certfile",
    "keyfile",
    "require_certificate",
    "use_identity_as_username",
    "plugin",
    "auth_plugin",
];

/// Read and parse `path`.
pub fn load(path: &Path) -> Result<FileSettings, FileError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| FileError {
        file: name.clone(),
        line: 0,
        problem: format!("cannot read: {e}"),
    })?;
    parse(&text, &name)
}

/// Parse configuration text; `name` is used in errors.
pub fn parse(text: &str, name: &str) -> Result<FileSettings, FileError> {
    let mut s = FileSettings::default();
    let mut port: Option<u16> = None;
    let mut bind_address: Option<IpAddr> = None;
    for (i, raw) in text.lines().enumerate() {
        let err = |problem: String| FileError {
            file: name.to_string(),
            line: i + 1,
            problem,
        };
        if raw.len() > LINE_BYTES_MAX {
            return Err(err(format!("line longer than {LINE_BYTES_MAX} bytes")));
        }
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let value = value.trim();
        match key {
            "listener" => s.binds.push(listener(value).map_err(err)?),
            "port" => port = Some(number(key, value).map_err(err)?),
            "bind_address" => {
                bind_address =
                    Some(value.parse().map_err(|_| {
                        err(format!("bind_address: '{value}' is not an IP address"))
                    })?)
            }
            _ => apply(&mut s, key, value).map_err(err)?,
        }
    }
    if let Some(p) = port {
        let ip = bind_address.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        s.binds.push(SocketAddr::new(ip, p));
    }
    Ok(s)
}

/// `listener PORT [ADDRESS]`: without an address Mosquitto listens on every interface.
fn listener(value: &str) -> Result<SocketAddr, String> {
    let mut parts = value.split_whitespace();
    let port: u16 = number("listener", parts.next().unwrap_or(""))?;
    let ip = match parts.next() {
        Some(a) => a
            .parse()
            .map_err(|_| format!("listener: '{a}' is not an IP address"))?,
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    if let Some(extra) = parts.next() {
        return Err(format!("listener: unexpected '{extra}'"));
    }
    Ok(SocketAddr::new(ip, port))
}

fn apply(s: &mut FileSettings, key: &str, value: &str) -> Result<(), String> {
    match key {
        "shards" => s.shards = Some(number(key, value)?),
        "max_inflight_messages" => s.max_inflight_messages = Some(number(key, value)?),
        "max_queued_messages" => s.max_queued_messages = Some(number(key, value)?),
        "max_queued_bytes" => s.max_queued_bytes = Some(number(key, value)?),
        "max_packet_size" => s.max_packet_size = Some(number(key, value)?),
        "max_keepalive" => s.max_keepalive = Some(number(key, value)?),
        "max_topic_alias" => s.max_topic_alias = Some(number(key, value)?),
        "connect_timeout" => s.connect_timeout = Some(number(key, value)?),
        "max_write_buffer" => s.max_write_buffer = Some(number(key, value)?),
        "receive_maximum" => s.receive_maximum = Some(number(key, value)?),
        "response_information" => s.response_information = Some(value.to_string()),
        "scram_credentials" => s.scram_credentials = Some(value.into()),
        "sys_interval" => s.sys_interval = Some(number(key, value)?),
        "allow_anonymous" => match value {
            "true" => s.allow_anonymous = Some(true),
            "false" => s.allow_anonymous = Some(false),
            _ => return Err(format!("allow_anonymous: expected true or false, got '{value}'")),
        },
        "persistence" => match value {
            "false" => {}
            "true" => return Err("persistence true: shardmq keeps sessions and retained messages in memory only for now".into()),
            _ => return Err(format!("persistence: expected true or false, got '{value}'")),
        },
        k if IGNORED.contains(&k) => s.warnings.push(format!("'{k}' ignored: shardmq logs to stderr")),
        k if UNSUPPORTED_SECURITY.contains(&k) => {
            return Err(format!("'{k}' is not supported yet; refusing to start without the protection it asks for"))
        }
        k if k.starts_with("cluster_") => {
            if !s.cluster.apply(k, value)? {
                return Err(format!("unknown option '{k}'"));
            }
        }
        k => return Err(format!("unknown option '{k}'")),
    }
    Ok(())
}

/// Fuzzing entry point (`fuzz/fuzz_targets/config_file.rs`): any bytes parse to settings
/// or to an error naming a line, never a panic.
#[doc(hidden)]
pub fn fuzz_parse(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = parse(text, "fuzz.conf") {
            assert!(e.line >= 1, "a parse error names its line: {e}");
        }
    }
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{key}: '{value}' is not a valid number here"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mosquitto_style_settings() {
        let s = parse(
            "# comment\n\nlistener 1884 127.0.0.1\nlistener 1885\nmax_inflight_messages 10\nmax_queued_messages 5\nlog_type all\nshards 2\n",
            "t.conf",
        )
        .expect("valid");
        assert_eq!(
            s.binds,
            vec![
                SocketAddr::from(([127, 0, 0, 1], 1884)),
                SocketAddr::from(([0, 0, 0, 0], 1885))
            ]
        );
        assert_eq!(s.max_inflight_messages, Some(10));
        assert_eq!(s.max_queued_messages, Some(5));
        assert_eq!(s.shards, Some(2));
        assert_eq!(s.warnings.len(), 1);
    }

    #[test]
    fn port_and_bind_address_combine() {
        let s = parse("port 1999\nbind_address 127.0.0.2\n", "t.conf").expect("valid");
        assert_eq!(s.binds, vec![SocketAddr::from(([127, 0, 0, 2], 1999))]);
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "listener 99999\n",
                1,
                "listener: '99999' is not a valid number here",
            ),
            (
                "\n\nmax_queued_messages lots\n",
                3,
                "max_queued_messages: 'lots' is not a valid number here",
            ),
            ("colour blue\n", 1, "unknown option 'colour'"),
            (
                "listener 1883 nowhere\n",
                1,
                "listener: 'nowhere' is not an IP address",
            ),
            (
                "allow_anonymous maybe\n",
                1,
                "allow_anonymous: expected true or false, got 'maybe'",
            ),
        ];
        for (text, line, problem) in cases {
            let e = parse(text, "b.conf").expect_err(text);
            assert_eq!(
                (e.file.as_str(), e.line, e.problem.as_str()),
                ("b.conf", *line, *problem),
                "{text}"
            );
            assert_eq!(e.to_string(), format!("b.conf:{line}: {problem}"));
        }
    }

    #[test]
    fn security_options_we_lack_are_refused_not_ignored() {
        for text in [
            "password_file /etc/p\n",
            "acl_file /etc/a\n",
            "certfile c.pem\n",
        ] {
            let e = parse(text, "s.conf").expect_err(text);
            assert_eq!(e.line, 1);
        }
    }
}
