//! Who may connect and what they may do, as the broker applies it: the password and ACL
//! files of each listener (Mosquitto's `password_file`, `acl_file`, `allow_anonymous`,
//! `per_listener_settings`), in force for one shard turn at a time.
//!
//! Owns: [`AuthState`] (the files and flags in force, per listener) and the read decisions
//! on the delivery path ([`may_read`], [`may_read_link`]). Invariants: one turn sees one
//! `AuthState` (it is swapped whole, between turns, by [`super::Broker::set_auth`]); with
//! no ACL file anywhere a decision is a single branch on [`AuthState::any_acl`]; a
//! connected link decides through its own `AclCache` (identity fixed per link), an offline
//! session uncached. A reload never needs a flush: every loaded file has a new generation,
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
    /// Indexed by listener (bind index), with per-listener settings.
    listeners: Vec<(AuthFiles, bool)>,
    any_acl: bool,
    /// Some password file, ACL file or SCRAM credentials are configured: identities
    /// matter (a client id held by one user is not handed to another).
    enforcing: bool,
}

impl AuthState {
    /// The settings of `cfg` (files already loaded and validated by the configuration).
    pub fn from_config(cfg: &Config) -> AuthState {
        AuthState::new(
            cfg,
            cfg.auth_files.clone(),
            &cfg.listener_auth,
            cfg.binds.len(),
        )
    }

    /// The settings of `cfg` with these files in force (a reload re-reads only the files).
    pub fn new(
        cfg: &Config,
        global: AuthFiles,
        listener_auth: &[ListenerAuth],
        listeners: usize,
    ) -> AuthState {
        let per_listener = cfg.per_listener_settings;
        // A listener without a block of its own keeps the settings made before the first
        // `listener` line (Mosquitto's default listener).
        let mut per = vec![(global.clone(), cfg.allow_anonymous); listeners];
        if per_listener {
            for l in listener_auth {
                if let Some(slot) = per.get_mut(l.bind_index) {
                    let anon = l.allow_anonymous.unwrap_or(
                        l.files.password_path.is_none() && cfg.scram_credentials.is_none(),
                    );
                    *slot = (l.files.clone(), anon);
                }
            }
        }
        let any_acl = if per_listener {
            per.iter().any(|(f, _)| f.acl.is_some())
        } else {
            global.acl.is_some()
        };
        let any_password = if per_listener {
            per.iter().any(|(f, _)| f.password_file.is_some())
        } else {
            global.password_file.is_some()
        };
        AuthState {
            per_listener,
            allow_anonymous: cfg.allow_anonymous,
            global,
            listeners: per,
            any_acl,
            enforcing: any_acl || any_password || cfg.scram_credentials.is_some(),
        }
    }

    /// The same settings with every file re-read from its path (SIGHUP). On error the
    /// caller keeps `self` and logs the message (file and line).
    pub fn reloaded(&self, cfg: &Config) -> Result<AuthState, String> {
        let global = self.global.reload()?;
        let mut listener_auth = Vec::new();
        for (i, (files, anon)) in self.listeners.iter().enumerate() {
            listener_auth.push(ListenerAuth {
                bind_index: i,
                files: files.reload()?,
                allow_anonymous: Some(*anon),
            });
        }
        let mut next = AuthState::new(cfg, global, &listener_auth, self.listeners.len());
        next.allow_anonymous = self.allow_anonymous;
        if !self.per_listener {
            for slot in &mut next.listeners {
                slot.1 = self.allow_anonymous;
            }
        }
        Ok(next)
    }

    fn files(&self, listener: usize) -> &AuthFiles {
        match (self.per_listener, self.listeners.get(listener)) {
            (true, Some((f, _))) => f,
            (true, None) => &EMPTY,
            (false, _) => &self.global,
        }
    }

    /// May a client without a username connect on `listener`?
    pub fn allow_anonymous(&self, listener: usize) -> bool {
        match (self.per_listener, self.listeners.get(listener)) {
            (true, Some((_, a))) => *a,
            (true, None) => false,
            (false, _) => self.allow_anonymous,
        }
    }

    /// The password file of `listener`, if one is configured.
    pub fn password_file(&self, listener: usize) -> Option<&Arc<PasswordFile>> {
        self.files(listener).password_file.as_ref()
    }

    /// The ACL of `listener`, if one is configured. A single branch when none is.
    #[inline]
    pub fn acl(&self, listener: usize) -> Option<&Arc<Acl>> {
        if !self.any_acl {
            return None;
        }
        self.files(listener).acl.as_ref()
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

static EMPTY: AuthFiles = AuthFiles {
    password_path: None,
    password_file: None,
    acl_path: None,
    acl: None,
};

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
