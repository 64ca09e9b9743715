//! The configuration file: Mosquitto's `mosquitto.conf` syntax, the subset shardmq serves.
//!
//! Owns: reading `key value` lines into `FileSettings`. Invariants: every line is either
//! understood, or a known harmless one (logging options Mosquitto has and we print
//! anyway), or an error naming the file, the line and the problem. A security option we
//! do not implement yet (`password_file`, `acl_file`, TLS files, `allow_anonymous false`)
//! is an error, never silently ignored: ignoring it would run an open broker where the
//! operator asked for a closed one. `password_file`, `acl_file`, `allow_anonymous` and
//! `per_listener_settings` are parsed here (the files themselves are loaded and validated
//! by `Config`). Must not touch: sockets, defaults (those live in
//! `Config`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

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
    /// `admin_listener PORT [ADDRESS]` (shardmq): the address defaults to 127.0.0.1.
    pub admin_listener: Option<SocketAddr>,
    /// `admin_password_file` (shardmq): HTTP basic auth for the admin listener.
    pub admin_password_file: Option<std::path::PathBuf>,
    /// `admin_certfile` (shardmq), with its line: HTTPS on the admin listener.
    pub admin_certfile: Option<(std::path::PathBuf, usize)>,
    /// `admin_keyfile` (shardmq), with its line.
    pub admin_keyfile: Option<(std::path::PathBuf, usize)>,
    /// `admin_cafile` (shardmq), with its line: CA certificates for client certificates.
    pub admin_cafile: Option<(std::path::PathBuf, usize)>,
    /// `admin_require_certificate` (shardmq), with its line: clients must present a
    /// certificate from `admin_cafile`.
    pub admin_require_certificate: Option<(bool, usize)>,
    /// `log_dest` lines (`None`: not given; the default applies).
    pub log_dests: Option<Vec<crate::log_sink::Dest>>,
    /// `log_type` lines (`None`: not given).
    pub log_types: Option<crate::log_sink::LevelSet>,
    /// `log_timestamp`.
    pub log_timestamp: Option<bool>,
    /// `log_timestamp_format` (strftime).
    pub log_timestamp_format: Option<String>,
    /// `log_format text|json` (shardmq).
    pub log_format: Option<crate::log_sink::Format>,
    /// `connection_messages`.
    pub connection_messages: Option<bool>,
    /// Every listener with its own options (`listener.rs`), in file order; the `port` /
    /// `bind_address` one last. `binds` holds the same addresses.
    pub listeners: Vec<super::listener::ListenerSpec>,
    /// Warnings to print (accepted but ignored lines).
    pub warnings: Vec<String>,
    /// The store's lines (issue 11).
    pub persistence: PersistenceFile,
    /// The resource limits' lines (issue 12).
    pub limits: super::limits::LimitFile,

    // --- Mosquitto password and ACL files (issue 10) ---
    /// `password_file` (global, or for the default listener with per-listener settings).
    pub password_file: Option<PathBuf>,
    /// `acl_file` (global, or for the default listener with per-listener settings).
    pub acl_file: Option<PathBuf>,
    /// `per_listener_settings`.
    pub per_listener_settings: Option<bool>,
    /// With `per_listener_settings true`: the security settings after each `listener`.
    pub listener_security: Vec<ListenerSecurity>,
    /// `check_retain_source`.
    pub check_retain_source: Option<bool>,
    // --- end of the password and ACL block ---
    /// `connection` blocks (bridges), validated.
    pub bridges: Vec<super::bridge::BridgeConfig>,
    /// The `cluster_*` lines (`super::cluster`).
    pub cluster: super::cluster::ClusterKeys,
}

/// The security settings of one listener (`per_listener_settings true`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListenerSecurity {
    /// Index into `binds` of the `listener` line these follow.
    pub bind_index: usize,
    /// `password_file` for this listener.
    pub password_file: Option<PathBuf>,
    /// `acl_file` for this listener.
    pub acl_file: Option<PathBuf>,
    /// `allow_anonymous` for this listener.
    pub allow_anonymous: Option<bool>,
}

/// The store's lines, as Mosquitto names them; `None` means "not set here".
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PersistenceFile {
    /// `persistence true|false`.
    pub enabled: Option<bool>,
    /// `persistence_location DIR`.
    pub location: Option<std::path::PathBuf>,
    /// `autosave_interval SECS`: the checkpoint period.
    pub autosave_interval: Option<u32>,
    /// `persistence_sync always|never` (shardmq): `true` for `always`.
    pub sync_always: Option<bool>,
}

/// The store's keys, parsed by [`persistence`].
const PERSISTENCE_KEYS: &[&str] = &[
    "persistence",
    "persistence_location",
    "autosave_interval",
    "autosave_on_changes",
    "persistence_sync",
];

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
/// Mosquitto options we accept and ignore.
const IGNORED: &[&str] = &["pid_file", "user"];
/// Mosquitto options that would make the broker stricter than we can yet be.
const UNSUPPORTED_SECURITY: &[&str] = &["psk_file", "plugin", "auth_plugin"];

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
    // Options before any `listener` line belong to the `port` listener, as in Mosquitto.
    let mut before_any = super::listener::spec(SocketAddr::from(([0, 0, 0, 0], 0)), false, 0);
    let mut bridges = super::bridge::BridgeParser::default();
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
        if super::bridge::is_bridge_key(key) {
            bridges.line(key, value, i + 1).map_err(err)?;
            continue;
        }
        match key {
            "admin_listener" => s.admin_listener = Some(admin_listener(value).map_err(err)?),
            "admin_password_file" => s.admin_password_file = Some(value.into()),
            "admin_certfile" => s.admin_certfile = Some((value.into(), i + 1)),
            "admin_keyfile" => s.admin_keyfile = Some((value.into(), i + 1)),
            "admin_cafile" => s.admin_cafile = Some((value.into(), i + 1)),
            "admin_require_certificate" => {
                s.admin_require_certificate = Some((boolean(key, value).map_err(err)?, i + 1))
            }
            "listener" => {
                let addr = listener(value).map_err(err)?;
                s.binds.push(addr);
                let given = value.split_whitespace().nth(1).is_some();
                s.listeners.push(super::listener::spec(addr, given, i + 1));
            }
            k if super::listener::is_listener_key(k) => {
                let current = s.listeners.last_mut().unwrap_or(&mut before_any);
                super::listener::apply(current, k, value, i + 1).map_err(err)?
            }
            "port" => {
                port = Some(number(key, value).map_err(err)?);
                before_any.line = i + 1;
            }
            "bind_address" => {
                bind_address =
                    Some(value.parse().map_err(|_| {
                        err(format!("bind_address: '{value}' is not an IP address"))
                    })?)
            }
            "password_file" | "acl_file" | "allow_anonymous" | "per_listener_settings" => {
                security(&mut s, key, value).map_err(err)?
            }
            _ => apply(&mut s, key, value).map_err(err)?,
        }
    }
    if let Some(p) = port {
        let ip = bind_address.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        s.binds.push(SocketAddr::new(ip, p));
        before_any.addr = SocketAddr::new(ip, p);
        before_any.address_given = bind_address.is_some();
        s.listeners.push(before_any);
    } else if let Some(&(key, line)) = before_any.lines.first() {
        return Err(FileError {
            file: name.to_string(),
            line,
            problem: format!("'{key}' must follow a listener line (or port)"),
        });
    }
    s.bridges = bridges.finish().map_err(|(line, problem)| FileError {
        file: name.to_string(),
        line,
        problem,
    })?;
    Ok(s)
}

/// The password and ACL keys. With `per_listener_settings true`, a key after a `listener`
/// line belongs to that listener; before any, to the default one (as in Mosquitto).
fn security(s: &mut FileSettings, key: &str, value: &str) -> Result<(), String> {
    let flag = |v: &str| match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{key}: expected true or false, got '{v}'")),
    };
    if key == "per_listener_settings" {
        if !s.binds.is_empty() {
            return Err("per_listener_settings must come before the first listener".into());
        }
        s.per_listener_settings = Some(flag(value)?);
        return Ok(());
    }
    if value.is_empty() {
        return Err(format!("{key}: missing value"));
    }
    let per_listener = s.per_listener_settings == Some(true) && !s.binds.is_empty();
    if per_listener {
        let index = s.binds.len() - 1;
        if s.listener_security.last().map(|l| l.bind_index) != Some(index) {
            s.listener_security.push(ListenerSecurity {
                bind_index: index,
                ..ListenerSecurity::default()
            });
        }
        let Some(l) = s.listener_security.last_mut() else {
            return Err("internal: no listener block".into());
        };
        match key {
            "password_file" => l.password_file = Some(value.into()),
            "acl_file" => l.acl_file = Some(value.into()),
            _ => l.allow_anonymous = Some(flag(value)?),
        }
        return Ok(());
    }
    match key {
        "password_file" => s.password_file = Some(value.into()),
        "acl_file" => s.acl_file = Some(value.into()),
        _ => s.allow_anonymous = Some(flag(value)?),
    }
    Ok(())
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

/// `admin_listener PORT [ADDRESS]`: unlike MQTT listeners, loopback unless told otherwise,
/// since the admin listener shows every client.
fn admin_listener(value: &str) -> Result<SocketAddr, String> {
    let mut parts = value.split_whitespace();
    let port: u16 = number("admin_listener", parts.next().unwrap_or(""))?;
    let ip = match parts.next() {
        Some(a) => a
            .parse()
            .map_err(|_| format!("admin_listener: '{a}' is not an IP address"))?,
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    if let Some(extra) = parts.next() {
        return Err(format!("admin_listener: unexpected '{extra}'"));
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
        "check_retain_source" => s.check_retain_source = Some(boolean(key, value)?),
        k if super::limits::FILE_KEYS.contains(&k) => s.limits.apply(k, value)?,
        k if PERSISTENCE_KEYS.contains(&k) => {
            persistence(&mut s.persistence, &mut s.warnings, k, value)?
        }
        k if k.starts_with("log_") || k == "connection_messages" => apply_log(s, k, value)?,
        k if IGNORED.contains(&k) => s.warnings.push(format!("'{k}' ignored")),
        k if UNSUPPORTED_SECURITY.contains(&k) => {
            return Err(format!(
                "'{k}' is not supported yet; refusing to start without the protection it asks for"
            ))
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

/// The logging options (Mosquitto's, plus `log_format`).
fn apply_log(s: &mut FileSettings, key: &str, value: &str) -> Result<(), String> {
    use crate::log_sink::{Dest, Format, LevelSet};
    match key {
        "log_dest" => {
            let dests = s.log_dests.get_or_insert_with(Vec::new);
            if let Some(d) = Dest::parse(value)? {
                dests.push(d);
            }
        }
        "log_type" => s.log_types.get_or_insert(LevelSet::NONE).add(value)?,
        "log_timestamp" => s.log_timestamp = Some(boolean(key, value)?),
        "connection_messages" => s.connection_messages = Some(boolean(key, value)?),
        "log_timestamp_format" => {
            if !crate::log_sink::valid_timestamp_format(value) {
                return Err(format!(
                    "log_timestamp_format: '{value}' is not a valid strftime format"
                ));
            }
            s.log_timestamp_format = Some(value.to_string());
        }
        "log_format" => {
            s.log_format = Some(match value {
                "text" => Format::Text,
                "json" => Format::Json,
                _ => return Err(format!("log_format: expected text or json, got '{value}'")),
            })
        }
        k => return Err(format!("unknown option '{k}'")),
    }
    Ok(())
}

fn boolean(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{key}: expected true or false, got '{value}'")),
    }
}

/// The store's keys. Whether the broker may honour them is `Config`'s decision.
fn persistence(
    p: &mut PersistenceFile,
    warnings: &mut Vec<String>,
    key: &str,
    value: &str,
) -> Result<(), String> {
    match key {
        "persistence" => p.enabled = Some(boolean(key, value)?),
        "persistence_location" if value.is_empty() => {
            return Err("persistence_location: expected a directory".into())
        }
        "persistence_location" => p.location = Some(value.into()),
        "autosave_interval" => p.autosave_interval = Some(number(key, value)?),
        "autosave_on_changes" => warnings.push(
            "'autosave_on_changes' ignored: shardmq logs every change and checkpoints by time and log size".into(),
        ),
        _ => {
            p.sync_always = Some(match value {
                "always" => true,
                "never" => false,
                _ => return Err(format!("{key}: expected always or never, got '{value}'")),
            })
        }
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
        assert_eq!(s.log_types, Some(crate::log_sink::LevelSet::ALL));
        assert!(s.warnings.is_empty());
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
    fn logging_options_are_read_and_checked() {
        use crate::log_sink::{Dest, Format, Level};
        let s = parse(
            "log_dest stdout\nlog_dest file /tmp/x.log\nlog_type error\nlog_type warning\nlog_timestamp false\nlog_timestamp_format %Y-%m-%dT%H:%M:%S\nlog_format json\nconnection_messages false\n",
            "l.conf",
        )
        .expect("valid");
        assert_eq!(
            s.log_dests,
            Some(vec![Dest::Stdout, Dest::File("/tmp/x.log".into())])
        );
        let types = s.log_types.expect("types");
        assert!(types.has(Level::Error) && types.has(Level::Warning) && !types.has(Level::Notice));
        assert_eq!(s.log_timestamp, Some(false));
        assert_eq!(s.log_format, Some(Format::Json));
        assert_eq!(s.connection_messages, Some(false));
        for (text, problem) in [
            (
                "log_dest carrier-pigeon\n",
                "log_dest: unknown destination 'carrier-pigeon'",
            ),
            ("log_type chatter\n", "log_type: unknown type 'chatter'"),
            (
                "log_timestamp_format %Q\n",
                "log_timestamp_format: '%Q' is not a valid strftime format",
            ),
            (
                "log_format xml\n",
                "log_format: expected text or json, got 'xml'",
            ),
            ("log_colour red\n", "unknown option 'log_colour'"),
        ] {
            let e = parse(text, "l.conf").expect_err(text);
            assert_eq!((e.line, e.problem.as_str()), (1, problem), "{text}");
        }
    }

    #[test]
    fn bridge_blocks_are_parsed() {
        let text = "listener 1883\nconnection cloud\naddress 127.0.0.1:1884\ntopic # both 1\n";
        let s = parse(text, "b.conf").expect("valid");
        assert_eq!(s.bridges.len(), 1);
        assert_eq!(s.bridges[0].name, "cloud");
        assert_eq!(s.bridges[0].line, 2);
        let e = parse("connection c\naddress h\ntopic a/#/b\n", "b.conf").expect_err("bad");
        assert_eq!(
            e.to_string(),
            "b.conf:3: topic: 'a/#/b' is not a valid topic filter"
        );
    }

    #[test]
    fn persistence_lines_parse() {
        let s = parse(
            "persistence true\npersistence_location /var/lib/shardmq/\nautosave_interval 60\nautosave_on_changes 100\npersistence_sync never\n",
            "p.conf",
        )
        .expect("valid");
        let want = PersistenceFile {
            enabled: Some(true),
            location: Some("/var/lib/shardmq/".into()),
            autosave_interval: Some(60),
            sync_always: Some(false),
        };
        assert_eq!(s.persistence, want);
        assert_eq!(
            s.warnings.len(),
            1,
            "autosave_on_changes is accepted with a warning"
        );
        for (text, problem) in [
            (
                "persistence maybe\n",
                "persistence: expected true or false, got 'maybe'",
            ),
            (
                "persistence_sync sometimes\n",
                "persistence_sync: expected always or never, got 'sometimes'",
            ),
            (
                "autosave_interval soon\n",
                "autosave_interval: 'soon' is not a valid number here",
            ),
            (
                "persistence_location\n",
                "persistence_location: expected a directory",
            ),
        ] {
            let e = parse(text, "p.conf").expect_err(text);
            assert_eq!((e.line, e.problem.as_str()), (1, problem));
        }
    }

    #[test]
    fn security_options_we_lack_are_refused_not_ignored() {
        for text in ["certfile c.pem\n", "psk_file p\n"] {
            let e = parse(text, "s.conf").expect_err(text);
            assert_eq!(e.line, 1);
        }
    }

    #[test]
    fn password_and_acl_keys_parse_globally_and_per_listener() {
        let s = parse(
            "password_file /etc/p\nacl_file /etc/a\nallow_anonymous false\n",
            "s.conf",
        )
        .expect("valid");
        assert_eq!(s.password_file, Some(PathBuf::from("/etc/p")));
        assert_eq!(s.acl_file, Some(PathBuf::from("/etc/a")));
        assert_eq!(s.allow_anonymous, Some(false));
        assert!(s.listener_security.is_empty());
        let s = parse(
            "per_listener_settings true\nlistener 1883\nallow_anonymous true\nlistener 8883\npassword_file p2\nacl_file a2\nallow_anonymous false\n",
            "s.conf",
        )
        .expect("valid");
        assert_eq!(s.password_file, None);
        let l = &s.listener_security;
        assert_eq!(l.len(), 2);
        assert_eq!((l[0].bind_index, l[0].allow_anonymous), (0, Some(true)));
        assert_eq!(l[1].bind_index, 1);
        assert_eq!(l[1].password_file, Some(PathBuf::from("p2")));
        assert_eq!(l[1].acl_file, Some(PathBuf::from("a2")));
        assert_eq!(l[1].allow_anonymous, Some(false));
        let e = parse("listener 1\nper_listener_settings true\n", "s.conf").expect_err("late");
        assert_eq!(e.line, 2);
        let e = parse("password_file\n", "s.conf").expect_err("empty");
        assert_eq!(e.problem, "password_file: missing value");
    }
}
