//! The cluster settings: the `cluster_*` lines of the configuration file.
//!
//! Owns: reading and validating the cluster keys into a `ClusterConfig`. Invariant: a node
//! with no `cluster_*` line has no `ClusterConfig` and so runs no NATS client; a node with
//! any has all it needs (cluster name, node name, at least one NATS URL) or does not start.
//! Must not touch: sockets, the NATS client (that is `crate::cluster`).

#![forbid(unsafe_code)]

use std::path::PathBuf;

use crate::cluster::subject::valid_cluster_name;

/// At most this many NATS URLs (a seed list: the client learns the rest from the servers).
pub const NATS_URLS_MAX: usize = 16;
/// Replicas of the JetStream buckets unless `cluster_kv_replicas` says otherwise: survives
/// the loss of one NATS server of three.
pub const KV_REPLICAS_DEFAULT: usize = 3;
/// JetStream allows at most 5 replicas.
const KV_REPLICAS_MAX: usize = 5;
/// Longest `cluster_forget_after`: the queue stream keeps a node's messages 7 days, so a
/// node silent longer has nothing left to wait for.
pub const FORGET_AFTER_S_MAX: u64 = 7 * 24 * 3600;

/// The `cluster_*` lines as read; `None` means "not set".
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClusterKeys {
    /// `cluster_name NAME`.
    pub name: Option<String>,
    /// `cluster_node NAME`.
    pub node: Option<String>,
    /// `cluster_nats URL[,URL…]`.
    pub nats: Option<String>,
    /// `cluster_nats_cafile PATH`: trust these CAs for the NATS servers (implies TLS).
    pub cafile: Option<PathBuf>,
    /// `cluster_nats_creds PATH`: a NATS credentials file (JWT + NKey seed).
    pub creds: Option<PathBuf>,
    /// `cluster_nats_user USER`.
    pub user: Option<String>,
    /// `cluster_nats_password PASSWORD`.
    pub password: Option<String>,
    /// `cluster_kv_replicas N`.
    pub kv_replicas: Option<usize>,
    /// `cluster_forget_after SECONDS` (also `--cluster-forget-after`).
    pub forget_after_s: Option<u64>,
}

impl ClusterKeys {
    /// Take one `cluster_*` line; `Ok(false)` if `key` is not a cluster key.
    pub fn apply(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let text = || {
            if value.is_empty() {
                Err(format!("{key}: expected a value"))
            } else {
                Ok(value.to_string())
            }
        };
        match key {
            "cluster_name" => self.name = Some(text()?),
            "cluster_node" => self.node = Some(text()?),
            "cluster_nats" => self.nats = Some(text()?),
            "cluster_nats_cafile" => self.cafile = Some(text()?.into()),
            "cluster_nats_creds" => self.creds = Some(text()?.into()),
            "cluster_nats_user" => self.user = Some(text()?),
            "cluster_nats_password" => self.password = Some(text()?),
            "cluster_kv_replicas" => {
                let n: usize = value
                    .parse()
                    .map_err(|_| format!("{key}: '{value}' is not a number"))?;
                if n == 0 || n > KV_REPLICAS_MAX {
                    return Err(format!("{key}: {n} is not in 1..={KV_REPLICAS_MAX}"));
                }
                self.kv_replicas = Some(n);
            }
            "cluster_forget_after" => self.forget_after_s = Some(forget_after(value)?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Whether any cluster line was given.
    pub fn any(&self) -> bool {
        *self != ClusterKeys::default()
    }
}

/// `cluster_forget_after`'s value: whole seconds, 1 to `FORGET_AFTER_S_MAX`.
pub fn forget_after(value: &str) -> Result<u64, String> {
    let s: u64 = value
        .parse()
        .map_err(|_| format!("cluster_forget_after: '{value}' is not a number of seconds"))?;
    if s == 0 || s > FORGET_AFTER_S_MAX {
        return Err(format!(
            "cluster_forget_after: {s} is not in 1..={FORGET_AFTER_S_MAX} seconds"
        ));
    }
    Ok(s)
}

/// How the node authenticates to NATS.
#[derive(Clone, PartialEq, Eq)]
pub enum NatsAuth {
    /// No credentials.
    None,
    /// A credentials file (decentralised auth).
    Creds(PathBuf),
    /// User and password.
    UserPassword(String, String),
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsAuth::None => write!(f, "None"),
            NatsAuth::Creds(p) => write!(f, "Creds({})", p.display()),
            NatsAuth::UserPassword(u, _) => write!(f, "UserPassword({u}, <hidden>)"),
        }
    }
}

/// A validated cluster configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The cluster's name: the subject prefix and bucket names.
    pub name: String,
    /// This node's name, unique in the cluster.
    pub node: String,
    /// NATS server URLs (`nats://host:port` or `tls://host:port`).
    pub nats: Vec<String>,
    /// CA file for TLS to NATS.
    pub cafile: Option<PathBuf>,
    /// Credentials.
    pub auth: NatsAuth,
    /// Replicas of the JetStream buckets.
    pub kv_replicas: usize,
    /// Remove another node silent this long (`None`: never; the default).
    pub forget_after: Option<std::time::Duration>,
}

impl ClusterConfig {
    /// `None` for a node without cluster lines; an error naming what is missing or wrong.
    pub fn from_keys(k: &ClusterKeys) -> Result<Option<ClusterConfig>, String> {
        if !k.any() {
            return Ok(None);
        }
        let name = k.name.clone().ok_or("cluster: cluster_name is required")?;
        let node = k.node.clone().ok_or("cluster: cluster_node is required")?;
        for (key, v) in [("cluster_name", &name), ("cluster_node", &node)] {
            if !valid_cluster_name(v) {
                return Err(format!("{key}: '{v}' must be 1 to 32 of A-Z a-z 0-9 _ -"));
            }
        }
        let urls = k
            .nats
            .as_deref()
            .ok_or("cluster: cluster_nats is required")?;
        let nats = urls
            .split(',')
            .map(|u| nats_url(u.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        if nats.len() > NATS_URLS_MAX {
            return Err(format!("cluster_nats: more than {NATS_URLS_MAX} URLs"));
        }
        let auth = match (&k.creds, &k.user, &k.password) {
            (None, None, None) => NatsAuth::None,
            (Some(c), None, None) => NatsAuth::Creds(c.clone()),
            (None, Some(u), Some(p)) => NatsAuth::UserPassword(u.clone(), p.clone()),
            (Some(_), _, _) => {
                return Err(
                    "cluster_nats_creds and cluster_nats_user/password exclude each other".into(),
                )
            }
            _ => return Err("cluster_nats_user and cluster_nats_password go together".into()),
        };
        Ok(Some(ClusterConfig {
            name,
            node,
            nats,
            cafile: k.cafile.clone(),
            auth,
            kv_replicas: k.kv_replicas.unwrap_or(KV_REPLICAS_DEFAULT),
            forget_after: k.forget_after_s.map(std::time::Duration::from_secs),
        }))
    }
}

/// `nats://host:port` or `tls://host:port` (the port may be left out: 4222).
fn nats_url(u: &str) -> Result<String, String> {
    let rest = u
        .strip_prefix("nats://")
        .or_else(|| u.strip_prefix("tls://"))
        .ok_or_else(|| format!("cluster_nats: '{u}' must start with nats:// or tls://"))?;
    let host_ok = !rest.is_empty()
        && !rest.contains(['/', '@', ' '])
        && match rest.rsplit_once(':') {
            Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
            None => true,
        };
    if !host_ok {
        return Err(format!("cluster_nats: '{u}' is not nats://HOST[:PORT]"));
    }
    Ok(u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(lines: &[(&str, &str)]) -> Result<Option<ClusterConfig>, String> {
        let mut k = ClusterKeys::default();
        for (key, value) in lines {
            assert!(k.apply(key, value)?, "{key} is a cluster key");
        }
        ClusterConfig::from_keys(&k)
    }

    #[test]
    fn no_cluster_lines_means_no_cluster() {
        assert_eq!(keys(&[]), Ok(None));
        assert_eq!(ClusterKeys::default().apply("listener", "1883"), Ok(false));
    }

    #[test]
    fn a_full_configuration_is_read() {
        let c = keys(&[
            ("cluster_name", "prod"),
            ("cluster_node", "a-1"),
            ("cluster_nats", "nats://127.0.0.1:4222, tls://n2:4222"),
            ("cluster_nats_user", "u"),
            ("cluster_nats_password", "p"),
            ("cluster_kv_replicas", "1"),
            ("cluster_forget_after", "300"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.forget_after, Some(std::time::Duration::from_secs(300)));
        assert_eq!(c.nats, ["nats://127.0.0.1:4222", "tls://n2:4222"]);
        assert_eq!(c.auth, NatsAuth::UserPassword("u".into(), "p".into()));
        assert_eq!(c.kv_replicas, 1);
        assert!(
            !format!("{c:?}").contains("\"p\""),
            "password hidden in Debug"
        );
    }

    #[test]
    fn incomplete_or_wrong_configurations_are_refused() {
        let base = [("cluster_name", "c"), ("cluster_node", "n")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            keys(&v)
        };
        assert!(with(&[]).unwrap_err().contains("cluster_nats is required"));
        assert!(keys(&[("cluster_nats", "nats://h")])
            .unwrap_err()
            .contains("cluster_name"));
        assert!(with(&[("cluster_nats", "http://h")])
            .unwrap_err()
            .contains("nats://"));
        assert!(with(&[("cluster_nats", "nats://h:99999")]).is_err());
        let both = [
            ("cluster_nats", "nats://h"),
            ("cluster_nats_creds", "x.creds"),
            ("cluster_nats_user", "u"),
        ];
        assert!(with(&both).unwrap_err().contains("exclude"));
        let half = [("cluster_nats", "nats://h"), ("cluster_nats_user", "u")];
        assert!(with(&half).unwrap_err().contains("together"));
        let bad_node = [
            ("cluster_name", "c"),
            ("cluster_node", "a.b"),
            ("cluster_nats", "nats://h"),
        ];
        assert!(keys(&bad_node).unwrap_err().contains("cluster_node"));
        assert!(ClusterKeys::default()
            .apply("cluster_kv_replicas", "6")
            .is_err());
        assert!(ClusterKeys::default().apply("cluster_name", "").is_err());
    }

    #[test]
    fn the_file_reads_cluster_lines_and_rejects_unknown_ones() {
        let text = "listener 1883\ncluster_name prod\ncluster_node a\ncluster_nats nats://127.0.0.1:4222\n";
        let s = super::super::file::parse(text, "c.conf").unwrap();
        assert_eq!(s.cluster.name.as_deref(), Some("prod"));
        assert!(ClusterConfig::from_keys(&s.cluster).unwrap().is_some());
        let e = super::super::file::parse("cluster_colour red\n", "c.conf").unwrap_err();
        assert_eq!(
            (e.line, e.problem.as_str()),
            (1, "unknown option 'cluster_colour'")
        );
        let e = super::super::file::parse("cluster_kv_replicas 0\n", "c.conf").unwrap_err();
        assert!(e.problem.contains("1..=5"), "{}", e.problem);
        for bad in ["0", "-1", "2.5", "604801", "soon"] {
            let text = format!("listener 1883\ncluster_forget_after {bad}\n");
            let e = super::super::file::parse(&text, "c.conf").unwrap_err();
            assert_eq!(e.line, 2, "{bad}");
            assert!(
                e.problem.starts_with("cluster_forget_after:"),
                "{}",
                e.problem
            );
        }
        let s = super::super::file::parse("cluster_forget_after 604800\n", "c.conf").unwrap();
        assert_eq!(s.cluster.forget_after_s, Some(604_800));
    }

    #[test]
    fn a_node_with_cluster_options_gets_them_in_its_configuration() {
        use clap::Parser;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.conf");
        let p = path.to_str().unwrap();
        let args = || super::super::Args::parse_from(["shardmq", "-c", p]);
        std::fs::write(
            &path,
            "cluster_name c\ncluster_node n\ncluster_nats nats://127.0.0.1\n",
        )
        .unwrap();
        let c = super::super::Config::from_args(args()).unwrap();
        let cl = c.cluster.expect("cluster settings");
        assert_eq!((cl.name.as_str(), cl.node.as_str()), ("c", "n"));
        std::fs::write(&path, "cluster_name c\n").unwrap();
        let e = super::super::Config::from_args(args()).unwrap_err();
        assert!(e.contains("cluster_node is required"), "{e}");
        std::fs::write(&path, "listener 1999 127.0.0.1\n").unwrap();
        let c = super::super::Config::from_args(args()).unwrap();
        assert!(c.cluster.is_none(), "no cluster: as before");
    }

    #[test]
    fn the_forget_after_flag_overrides_the_file_and_needs_a_cluster() {
        use clap::Parser;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.conf");
        let p = path.to_str().unwrap();
        let with = |flag: &[&str]| {
            let mut v = vec!["shardmq", "-c", p];
            v.extend_from_slice(flag);
            super::super::Config::from_args(super::super::Args::parse_from(v))
        };
        std::fs::write(
            &path,
            "cluster_name c\ncluster_node n\ncluster_nats nats://127.0.0.1\ncluster_forget_after 600\n",
        )
        .unwrap();
        let from_file = with(&[]).unwrap().cluster.unwrap().forget_after;
        assert_eq!(from_file, Some(std::time::Duration::from_secs(600)));
        let flagged = with(&["--cluster-forget-after", "2"]).unwrap();
        let flagged = flagged.cluster.unwrap().forget_after;
        assert_eq!(flagged, Some(std::time::Duration::from_secs(2)));
        std::fs::write(
            &path,
            "cluster_name c\ncluster_node n\ncluster_nats nats://h\n",
        )
        .unwrap();
        assert_eq!(
            with(&[]).unwrap().cluster.unwrap().forget_after,
            None,
            "off by default"
        );
        let bad = super::super::Args::try_parse_from(["shardmq", "--cluster-forget-after", "0"]);
        assert!(bad.is_err(), "0 is refused");
        std::fs::write(&path, "listener 1999 127.0.0.1\n").unwrap();
        let e = with(&["--cluster-forget-after", "2"]).unwrap_err();
        assert!(e.contains("cluster_* lines"), "{e}");
    }
}
