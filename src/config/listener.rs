//! Listeners: Mosquitto's `listener PORT [ADDRESS]` blocks and the options inside them,
//! plus the command line's one listener.
//!
//! Owns: reading per-listener options (`ListenerSpec`, with the line each came from) and
//! validating them into a `Listener` — certificate files loaded, cipher names mapped, TLS
//! configuration built. Invariants: a `Listener` is complete and consistent (TLS options
//! only with a certificate, identity-as-username only with required client certificates,
//! an address of the family `socket_domain` asks for); every problem names the file and
//! the line of the option at fault. Must not touch: sockets (phase 2 binds them in
//! `shard`), the global options (those live in `file.rs`).
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use crate::transport::proxy::ProxyVersion;
use crate::transport::tls::{self, TlsOptions, TlsVersion};
use crate::transport::ws::WsConfig;

/// What a listener speaks above TCP (or TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// MQTT directly.
    #[default]
    Mqtt,
    /// MQTT over WebSocket.
    WebSockets,
}

/// Whose name a client certificate gives the client (mTLS listeners).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CertUsername {
    /// The certificate does not name the user; CONNECT does.
    #[default]
    No,
    /// `use_identity_as_username`: the subject's CN.
    Cn,
    /// `use_subject_as_username`: the whole subject, RFC 2253.
    Subject,
}

/// The default listener's addresses when nothing is configured: both loopbacks, as
/// Mosquitto does; `::1` being unavailable (a host without IPv6) is tolerated.
pub const DEFAULT_ADDRESSES: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::LOCALHOST),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
];
/// The default MQTT port.
pub const DEFAULT_PORT: u16 = 1883;
/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
const INTERFACE_NAME_BYTES_MAX: usize = 15;
/// A mount point is a topic prefix; keep it a short one.
const MOUNT_POINT_BYTES_MAX: usize = 256;

/// One listener's options as read, each with the line it came from (0: command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// Line of the `listener` (or `port`) line; 0 for the command line or the default.
    pub line: usize,
    /// Port and address (unspecified when none was given).
    pub addr: SocketAddr,
    /// An address was given on the `listener` line.
    pub address_given: bool,
    /// `protocol`.
    pub protocol: Protocol,
    /// `certfile`, `keyfile`, `cafile`, `capath`, `crlfile`.
    pub files: TlsFiles,
    /// `require_certificate`.
    pub require_certificate: bool,
    /// `use_identity_as_username`.
    pub use_identity_as_username: bool,
    /// `use_subject_as_username`.
    pub use_subject_as_username: bool,
    /// `tls_version`.
    pub tls_version: Option<TlsVersion>,
    /// `ciphers`.
    pub ciphers: Option<String>,
    /// `ciphers_tls1.3`.
    pub ciphers_tls13: Option<String>,
    /// `max_connections` (-1 and absent: unlimited).
    pub max_connections: Option<usize>,
    /// `mount_point`.
    pub mount_point: Option<String>,
    /// `bind_interface`.
    pub bind_interface: Option<String>,
    /// `socket_domain`: `Some(true)` for ipv6, `Some(false)` for ipv4.
    pub ipv6: Option<bool>,
    /// `enable_proxy_protocol`.
    pub proxy: Option<ProxyVersion>,
    /// `websockets_path` (shardmq): accept the upgrade on this path only.
    pub websockets_path: Option<String>,
    /// Where each option was set: (option, line).
    pub lines: Vec<(&'static str, usize)>,
}

/// The TLS files of a listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// `certfile`.
    pub certfile: Option<PathBuf>,
    /// `keyfile`.
    pub keyfile: Option<PathBuf>,
    /// `cafile`.
    pub cafile: Option<PathBuf>,
    /// `capath`.
    pub capath: Option<PathBuf>,
    /// `crlfile`.
    pub crlfile: Option<PathBuf>,
}

/// A validated listener, ready for the shards to bind (phase 2).
#[derive(Debug, Clone)]
pub struct Listener {
    /// Where to listen.
    pub addr: SocketAddr,
    /// MQTT or WebSocket.
    pub protocol: Protocol,
    /// The TLS options (kept to rebuild on SIGHUP) and the configuration built from them.
    pub tls: Option<(TlsOptions, Arc<rustls::ServerConfig>)>,
    /// Whether a client certificate names the user.
    pub cert_username: CertUsername,
    /// Connections accepted at once on this listener; `None`: unlimited.
    pub max_connections: Option<usize>,
    /// Topic prefix for this listener's clients.
    pub mount_point: Option<String>,
    /// Network interface to bind to (`SO_BINDTODEVICE`).
    pub bind_interface: Option<String>,
    /// The PROXY header every connection must start with.
    pub proxy: Option<ProxyVersion>,
    /// A listener that does not terminate TLS itself, behind a proxy that does
    /// (`enable_proxy_protocol 2` with `require_certificate true`, no `certfile`): every
    /// PROXY header must carry the CN of a client certificate the proxy verified.
    pub proxy_requires_cert: bool,
    /// WebSocket limits and path, for `Protocol::WebSockets`.
    pub ws: Option<WsConfig>,
    /// The `listener` line (0: command line or default), for messages.
    pub line: usize,
    /// The default listener's `::1`: a host without IPv6 cannot bind it, which is logged
    /// and tolerated (for this listener only).
    pub optional: bool,
    /// The listener's identity, stable across reloads: links and sessions name their
    /// listener by it (its security settings apply), so reordering `listener` blocks never
    /// hands one listener's settings to another's clients. The position in the file at
    /// start; a reload keeps the id of each listener it keeps (same configured address,
    /// matched in order, as the shards keep its socket) and gives new ones ids never used
    /// before ([`assign_ids`]).
    pub id: usize,
}

/// Give `next` (a reloaded configuration's listeners) the ids of the `running` listeners
/// they continue, matched as the shards keep sockets: same configured address, in order
/// (several `listener 0` lines share one). Listeners without a match get fresh ids from
/// `ids_next`. Returns the new `ids_next` (ids are never reused, so a session of a removed
/// listener never inherits a new listener's settings).
pub fn assign_ids(running: &[Listener], next: &mut [Listener], mut ids_next: usize) -> usize {
    let mut taken = vec![false; running.len()];
    for l in next.iter_mut() {
        let same = running
            .iter()
            .enumerate()
            .find(|(i, r)| !taken[*i] && r.addr == l.addr);
        match same {
            Some((i, r)) => {
                taken[i] = true;
                l.id = r.id;
            }
            None => {
                l.id = ids_next;
                ids_next += 1;
            }
        }
    }
    ids_next
}

/// Whether `key` is a per-listener option.
pub fn is_listener_key(key: &str) -> bool {
    matches!(
        key,
        "protocol"
            | "certfile"
            | "keyfile"
            | "cafile"
            | "capath"
            | "crlfile"
            | "require_certificate"
            | "use_identity_as_username"
            | "use_subject_as_username"
            | "tls_version"
            | "ciphers"
            | "ciphers_tls1.3"
            | "max_connections"
            | "mount_point"
            | "bind_interface"
            | "socket_domain"
            | "enable_proxy_protocol"
            | "websockets_path"
    )
}

/// `listener PORT [ADDRESS]` starting at `line`.
pub fn spec(addr: SocketAddr, address_given: bool, line: usize) -> ListenerSpec {
    ListenerSpec {
        line,
        addr,
        address_given,
        protocol: Protocol::Mqtt,
        files: TlsFiles::default(),
        require_certificate: false,
        use_identity_as_username: false,
        use_subject_as_username: false,
        tls_version: None,
        ciphers: None,
        ciphers_tls13: None,
        max_connections: None,
        mount_point: None,
        bind_interface: None,
        ipv6: None,
        proxy: None,
        websockets_path: None,
        lines: Vec::new(),
    }
}

/// Apply one per-listener option read at `line`.
pub fn apply(s: &mut ListenerSpec, key: &str, value: &str, line: usize) -> Result<(), String> {
    let path = || -> Result<Option<PathBuf>, String> {
        if value.is_empty() {
            return Err(format!("{key}: expected a file name"));
        }
        Ok(Some(PathBuf::from(value)))
    };
    match key {
        "protocol" => {
            s.protocol = match value {
                "mqtt" => Protocol::Mqtt,
                "websockets" => Protocol::WebSockets,
                _ => {
                    return Err(format!(
                        "protocol: expected mqtt or websockets, got '{value}'"
                    ))
                }
            }
        }
        "certfile" => s.files.certfile = path()?,
        "keyfile" => s.files.keyfile = path()?,
        "cafile" => s.files.cafile = path()?,
        "capath" => s.files.capath = path()?,
        "crlfile" => s.files.crlfile = path()?,
        "require_certificate" => s.require_certificate = boolean(key, value)?,
        "use_identity_as_username" => s.use_identity_as_username = boolean(key, value)?,
        "use_subject_as_username" => s.use_subject_as_username = boolean(key, value)?,
        "tls_version" => s.tls_version = Some(TlsVersion::parse(value)?),
        "ciphers" => s.ciphers = Some(value.to_string()),
        "ciphers_tls1.3" => s.ciphers_tls13 = Some(value.to_string()),
        "max_connections" => s.max_connections = max_connections(value)?,
        "mount_point" => s.mount_point = Some(mount_point(value)?),
        "bind_interface" => s.bind_interface = Some(interface(value)?),
        "socket_domain" => {
            s.ipv6 = Some(match value {
                "ipv4" => false,
                "ipv6" => true,
                _ => {
                    return Err(format!(
                        "socket_domain: expected ipv4 or ipv6, got '{value}'"
                    ))
                }
            })
        }
        "enable_proxy_protocol" => {
            s.proxy = Some(match value {
                "1" => ProxyVersion::V1,
                "2" => ProxyVersion::V2,
                _ => {
                    return Err(format!(
                        "enable_proxy_protocol: expected 1 or 2, got '{value}'"
                    ))
                }
            })
        }
        "websockets_path" if value.starts_with('/') => s.websockets_path = Some(value.into()),
        "websockets_path" => {
            return Err(format!("websockets_path: '{value}' does not start with /"))
        }
        _ => return Err(format!("unknown listener option '{key}'")),
    }
    s.lines.retain(|(k, _)| *k != key_name(key));
    s.lines.push((key_name(key), line));
    Ok(())
}

/// The option's name as a `'static` (for `lines`).
fn key_name(key: &str) -> &'static str {
    const KEYS: [&str; 18] = [
        "protocol",
        "certfile",
        "keyfile",
        "cafile",
        "capath",
        "crlfile",
        "require_certificate",
        "use_identity_as_username",
        "use_subject_as_username",
        "tls_version",
        "ciphers",
        "ciphers_tls1.3",
        "max_connections",
        "mount_point",
        "bind_interface",
        "socket_domain",
        "enable_proxy_protocol",
        "websockets_path",
    ];
    KEYS.into_iter().find(|k| *k == key).unwrap_or("listener")
}

fn boolean(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{key}: expected true or false, got '{value}'")),
    }
}

fn max_connections(value: &str) -> Result<Option<usize>, String> {
    match value.parse::<i64>() {
        Ok(-1) => Ok(None),
        Ok(n) if n >= 0 => Ok(usize::try_from(n).ok()),
        _ => Err(format!(
            "max_connections: expected -1 or a count, got '{value}'"
        )),
    }
}

fn mount_point(value: &str) -> Result<String, String> {
    if value.is_empty() || value.len() > MOUNT_POINT_BYTES_MAX {
        return Err(format!(
            "mount_point: expected 1 to {MOUNT_POINT_BYTES_MAX} bytes"
        ));
    }
    if value.contains(['+', '#', '\0']) {
        return Err(format!("mount_point: '{value}' contains a wildcard or NUL"));
    }
    Ok(value.to_string())
}

fn interface(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= INTERFACE_NAME_BYTES_MAX
        && !value.contains(['/', ' ', '\0']);
    if !ok {
        return Err(format!(
            "bind_interface: '{value}' is not an interface name"
        ));
    }
    Ok(value.to_string())
}

impl ListenerSpec {
    /// The line where `option` was set, else the `listener` line.
    fn line_of(&self, option: &str) -> usize {
        self.lines
            .iter()
            .find(|(k, _)| *k == option)
            .map_or(self.line, |(_, l)| *l)
    }

    /// `file:line: problem`, or `problem` for the command line.
    fn at(&self, file: &str, option: &str, problem: impl std::fmt::Display) -> String {
        match self.line_of(option) {
            0 => problem.to_string(),
            line => format!("{file}:{line}: {problem}"),
        }
    }

    /// Check everything and load the TLS files. `file` names the configuration file in
    /// messages. `frame_bytes_max` bounds a WebSocket frame (the largest MQTT packet).
    pub fn validate(&self, file: &str, frame_bytes_max: u64) -> Result<Listener, String> {
        let tls = self.tls_options().map_err(|(o, p)| self.at(file, o, p))?;
        let tls = match tls {
            Some(o) => {
                let built = tls::server_config(&o).map_err(|e| self.at(file, e.option, &e))?;
                Some((o, built))
            }
            None => None,
        };
        let cert_username = match (self.use_identity_as_username, self.use_subject_as_username) {
            (false, false) => CertUsername::No,
            (true, true) => {
                return Err(self.at(
                    file,
                    "use_subject_as_username",
                    "use_identity_as_username and use_subject_as_username exclude each other",
                ))
            }
            (true, false) => CertUsername::Cn,
            (false, true) => CertUsername::Subject,
        };
        let proxy_requires_cert = tls.is_none() && self.require_certificate;
        if proxy_requires_cert && cert_username == CertUsername::Subject {
            return Err(self.at(
                file,
                "use_subject_as_username",
                "use_subject_as_username needs certfile: a PROXY v2 header carries only the CN",
            ));
        }
        if cert_username != CertUsername::No && !self.require_certificate {
            let o = if self.use_identity_as_username {
                "use_identity_as_username"
            } else {
                "use_subject_as_username"
            };
            return Err(self.at(file, o, format!("{o} needs require_certificate true")));
        }
        if self.websockets_path.is_some() && self.protocol != Protocol::WebSockets {
            return Err(self.at(
                file,
                "websockets_path",
                "websockets_path needs protocol websockets",
            ));
        }
        let addr = self
            .address()
            .map_err(|p| self.at(file, "socket_domain", p))?;
        Ok(Listener {
            addr,
            protocol: self.protocol,
            tls,
            cert_username,
            max_connections: self.max_connections,
            mount_point: self.mount_point.clone(),
            bind_interface: self.bind_interface.clone(),
            proxy: self.proxy,
            proxy_requires_cert,
            ws: (self.protocol == Protocol::WebSockets).then(|| WsConfig {
                path: self.websockets_path.clone(),
                frame_bytes_max,
                ..WsConfig::default()
            }),
            line: self.line,
            optional: false,
            // Set by the caller, which knows the position (and, on reload, the history).
            id: 0,
        })
    }

    /// The TLS options, if `certfile` is set; TLS options without it are an error naming
    /// the option.
    fn tls_options(&self) -> Result<Option<TlsOptions>, (&'static str, String)> {
        let f = &self.files;
        let (certfile, keyfile) = match (&f.certfile, &f.keyfile) {
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            (Some(_), None) => return Err(("certfile", "certfile needs keyfile".into())),
            (None, Some(_)) => return Err(("keyfile", "keyfile needs certfile".into())),
            (None, None) => {
                // Behind a proxy that terminates TLS, the PROXY v2 header says whether the
                // client presented a verified certificate, and its CN.
                let proxy_v2 = self.proxy == Some(ProxyVersion::V2);
                let tls_only = [
                    ("cafile", f.cafile.is_some()),
                    ("capath", f.capath.is_some()),
                    ("crlfile", f.crlfile.is_some()),
                    ("require_certificate", self.require_certificate && !proxy_v2),
                    ("tls_version", self.tls_version.is_some()),
                    ("ciphers", self.ciphers.is_some()),
                    ("ciphers_tls1.3", self.ciphers_tls13.is_some()),
                ];
                return match tls_only.into_iter().find(|(_, set)| *set) {
                    Some((o, _)) => Err((o, format!("{o} needs certfile and keyfile (TLS)"))),
                    None => Ok(None),
                };
            }
        };
        Ok(Some(TlsOptions {
            certfile,
            keyfile,
            cafile: f.cafile.clone(),
            capath: f.capath.clone(),
            require_certificate: self.require_certificate,
            crlfile: f.crlfile.clone(),
            version: self.tls_version.unwrap_or_default(),
            ciphers: self.ciphers.clone(),
            ciphers_tls13: self.ciphers_tls13.clone(),
        }))
    }

    /// The address, with `socket_domain` choosing the family of an unspecified one.
    fn address(&self) -> Result<SocketAddr, String> {
        let port = self.addr.port();
        match (self.ipv6, self.address_given) {
            (None, _) => Ok(self.addr),
            (Some(v6), true) if v6 != self.addr.is_ipv6() => Err(format!(
                "socket_domain {} does not match the address {}",
                if v6 { "ipv6" } else { "ipv4" },
                self.addr.ip()
            )),
            (Some(_), true) => Ok(self.addr),
            (Some(true), false) => Ok(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port)),
            (Some(false), false) => Ok(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port)),
        }
    }
}

#[cfg(test)]
mod tests;
