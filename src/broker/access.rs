//! Who may connect and what they may do, as the broker applies it: the password and ACL
//! files of each listener (Mosquitto's `password_file`, `acl_file`, `allow_anonymous`,
//! `per_listener_settings`), in force for one shard turn at a time.
//!
//! Owns: [`AuthState`] (the files and flags in force, per listener id: stable across
//! reloads, so reordering `listener` blocks moves no client to another's settings) and the
//! read decisions on the delivery path ([`may_read`], [`may_read_link`]). Invariants: one
//! turn sees one `AuthState` (it is swapped whole, between turns, by
//! [`super::Broker::set_auth`]); with no ACL file anywhere a decision is a single branch on
//! [`AuthState::any_acl`]; a connected link decides through its own `AclCache` (identity
//! fixed per link, keyed by the message's shared topic string), an offline session
//! uncached. A reload never needs a flush: every loaded file has a new generation,
//! which the caches compare. Must not touch: the hashing (the shard's verifier does it),
//! the rules themselves (`crate::auth::acl`), sockets.

use std::sync::Arc;

use super::deliver::Sink;
use super::sessions::Sessions;
use crate::auth::{Acl, Client, PasswordFile};
use crate::config::auth_files::{AuthFiles, ListenerAuth};
use crate::config::Config;

/// The security settings in force on a shard.
#[derive(Debug, Default)]
pub struct AuthState {
    per_listener: bool,
    global: AuthFiles,
    allow_anonymous: bool,
    /// Indexed by listener id (`config::listener::Listener::id`, stable across reloads),
    /// with per-listener settings; `None`: no listener has that id any more.
    listeners: Vec<Option<(AuthFiles, bool)>>,
    /// The files of a listener a reload removed, with per-listener settings: no password
    /// file (nobody new logs in there) and, when ACLs are in use, an ACL that denies
    /// everything (its clients keep their connections but get no rights).
    gone: AuthFiles,
    any_acl: bool,
    /// Some password file, ACL file or SCRAM credentials are configured: identities
    /// matter (a client id held by one user is not handed to another).
    enforcing: bool,
}

impl AuthState {
    /// The settings of `cfg` (files already loaded and validated by the configuration).
    pub fn from_config(cfg: &Config) -> AuthState {
        AuthState::new(cfg, cfg.auth_files.clone(), &cfg.listener_auth)
    }

    /// The settings of `cfg` with these files in force. Per-listener settings are keyed
    /// by listener id, so a link or session names its listener correctly whatever order
    /// a reload puts the `listener` blocks in.
    pub fn new(cfg: &Config, global: AuthFiles, listener_auth: &[ListenerAuth]) -> AuthState {
        let per_listener = cfg.per_listener_settings;
        let ids = cfg
            .listeners
            .iter()
            .map(|l| l.id + 1)
            .max()
            .unwrap_or(0)
            .max(cfg.listener_ids_next);
        // A listener without a block of its own keeps the settings made before the first
        // `listener` line (Mosquitto's default listener).
        let mut per: Vec<Option<(AuthFiles, bool)>> = vec![None; ids];
        for l in &cfg.listeners {
            if let Some(slot) = per.get_mut(l.id) {
                *slot = Some((global.clone(), cfg.allow_anonymous));
            }
        }
        if per_listener {
            for la in listener_auth {
                let id = cfg.listeners.get(la.bind_index).map(|l| l.id);
                if let Some(slot) = id.and_then(|id| per.get_mut(id)) {
                    let anon = la.allow_anonymous.unwrap_or(
                        la.files.password_path.is_none() && cfg.scram_credentials.is_none(),
                    );
                    *slot = Some((la.files.clone(), anon));
                }
            }
        }
        let present = || per.iter().flatten();
        let any_acl = if per_listener {
            present().any(|(f, _)| f.acl.is_some())
        } else {
            global.acl.is_some()
        };
        let any_password = if per_listener {
            present().any(|(f, _)| f.password_file.is_some())
        } else {
            global.password_file.is_some()
        };
        let gone = AuthFiles {
            acl: any_acl.then(|| Arc::new(Acl::deny_all())),
            ..AuthFiles::default()
        };
        AuthState {
            per_listener,
            allow_anonymous: cfg.allow_anonymous,
            global,
            listeners: per,
            gone,
            any_acl,
            enforcing: any_acl || any_password || cfg.scram_credentials.is_some(),
        }
    }

    fn files(&self, listener: usize) -> &AuthFiles {
        match (self.per_listener, self.listeners.get(listener)) {
            (true, Some(Some((f, _)))) => f,
            (true, _) => &self.gone,
            (false, _) => &self.global,
        }
    }

    /// May a client without a username connect on `listener` (its id)?
    pub fn allow_anonymous(&self, listener: usize) -> bool {
        match (self.per_listener, self.listeners.get(listener)) {
            (true, Some(Some((_, a)))) => *a,
            (true, _) => false,
            (false, _) => self.allow_anonymous,
        }
    }

    /// The password file of `listener` (its id), if one is configured.
    pub fn password_file(&self, listener: usize) -> Option<&Arc<PasswordFile>> {
        self.files(listener).password_file.as_ref()
    }

    /// The ACL of `listener` (its id), if one is configured. A single branch when none is.
    #[inline]
    pub fn acl(&self, listener: usize) -> Option<&Arc<Acl>> {
        if !self.any_acl {
            return None;
        }
        self.files(listener).acl.as_ref()
    }

    /// The ACL a bridge's `local_username` is under: the one given outside any
    /// `listener` block (a bridge comes in through no listener).
    #[inline]
    pub fn bridge_acl(&self) -> Option<&Acl> {
        self.global.acl.as_deref()
    }

    /// True when some listener has an ACL file.
    #[inline]
    pub fn any_acl(&self) -> bool {
        self.any_acl
    }

    /// True when identities matter (some password, ACL or SCRAM credentials file).
    pub fn enforcing(&self) -> bool {
        self.enforcing
    }
}

/// May connected link `key` receive a message on `topic`? Decided through its cache.
#[inline]
pub(super) fn may_read_link<X>(sink: &mut Sink<'_, X>, key: usize, topic: &Arc<str>) -> bool {
    if !sink.auth.any_acl() {
        return true;
    }
    let Some(c) = sink.links.conn_mut(key) else {
        return false;
    };
    let link = &mut c.link;
    let Some(acl) = sink.auth.acl(link.listener) else {
        return true;
    };
    let client = Client {
        username: link.username.as_deref(),
        client_id: link.client_id.as_deref().unwrap_or(""),
    };
    link.acl_cache.can_read(acl, client, topic)
}

/// May session `s` receive a message on `topic`? Through its link's cache when it is
/// connected, otherwise decided against the session's identity and listener.
#[inline]
pub(super) fn may_read<X>(
    sessions: &Sessions,
    sink: &mut Sink<'_, X>,
    s: usize,
    topic: &Arc<str>,
) -> bool {
    if !sink.auth.any_acl() {
        return true;
    }
    let Some(sess) = sessions.get(s) else {
        return false;
    };
    let linked = sess.link.filter(|&k| {
        sink.links
            .get(k)
            .is_some_and(|l| l.is_connected() && l.session == Some(s))
    });
    if let Some(key) = linked {
        return may_read_link(sink, key, topic);
    }
    let Some(acl) = sink.auth.acl(sess.listener) else {
        return true;
    };
    let client = Client {
        username: sess.username.as_deref(),
        client_id: &sess.client_id,
    };
    acl.can_read(client, topic)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::reload::reread;
    use crate::config::Args;
    use clap::Parser;
    use std::ffi::OsString;

    fn anon() -> Client<'static> {
        Client {
            username: None,
            client_id: "c",
        }
    }

    #[test]
    fn settings_follow_listener_ids_and_a_removed_listener_gets_nothing() {
        let dir = std::env::temp_dir().join(format!("shardmq-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let (acl_a, acl_b) = (dir.join("a.acl"), dir.join("b.acl"));
        std::fs::write(&acl_a, "topic readwrite a/#\n").expect("write");
        std::fs::write(&acl_b, "topic readwrite b/#\n").expect("write");
        let block = |ip: &str, acl: &std::path::Path, anon: bool| {
            format!(
                "listener 0 {ip}\nacl_file {}\nallow_anonymous {anon}\n",
                acl.display()
            )
        };
        let a = block("127.0.0.1", &acl_a, true);
        let b = block("127.0.0.2", &acl_b, false);
        let conf = dir.join("c.conf");
        let write = |text: String| {
            std::fs::write(&conf, format!("per_listener_settings true\n{text}")).expect("write")
        };
        write(format!("{a}{b}"));
        let argv: Vec<OsString> = [
            "shardmq",
            "-c",
            conf.to_str().expect("utf-8"),
            "--admin",
            "off",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let running = Config::from_args(Args::parse_from(&argv)).expect("valid");
        let reads = |st: &AuthState, id: usize, topic: &str| {
            st.acl(id).is_some_and(|acl| acl.can_read(anon(), topic))
        };
        let st = AuthState::from_config(&running);
        assert!(reads(&st, 0, "a/x") && st.allow_anonymous(0));
        assert!(reads(&st, 1, "b/x") && !st.allow_anonymous(1));
        // Swapped blocks: ids 0 and 1 keep their own files.
        write(format!("{b}{a}"));
        let swapped = reread(&running, &argv).expect("valid").config;
        let st = AuthState::from_config(&swapped);
        assert!(reads(&st, 0, "a/x") && !reads(&st, 0, "b/x") && st.allow_anonymous(0));
        assert!(reads(&st, 1, "b/x") && !reads(&st, 1, "a/x") && !st.allow_anonymous(1));
        // Listener 0 removed: its clients and sessions get nothing.
        write(b.clone());
        let removed = reread(&swapped, &argv).expect("valid").config;
        let st = AuthState::from_config(&removed);
        assert!(!reads(&st, 0, "a/x") && !reads(&st, 0, "b/x"));
        assert!(!st.allow_anonymous(0) && st.password_file(0).is_none());
        assert!(reads(&st, 1, "b/x"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
