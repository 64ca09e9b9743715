//! The password and ACL files named by the configuration, loaded and validated at start.
//!
//! Owns: [`AuthFiles`] (paths and loaded contents, global and per listener) and the rule
//! that a named file that does not load stops the broker with its file and line. Invariant:
//! an `AuthFiles` holds only fully validated files; the paths are kept for SIGHUP reload.
//! Must not touch: sockets, shards.

use std::path::PathBuf;
use std::sync::Arc;

use crate::auth::{Acl, PasswordFile};
use crate::config::file::FileSettings;
use crate::config::Args;

/// One set of security files: global, or one listener's.
#[derive(Debug, Clone, Default)]
pub struct AuthFiles {
    /// `password_file` path, for reload.
    pub password_path: Option<PathBuf>,
    /// The loaded password file.
    pub password_file: Option<Arc<PasswordFile>>,
    /// `acl_file` path, for reload.
    pub acl_path: Option<PathBuf>,
    /// The loaded ACL.
    pub acl: Option<Arc<Acl>>,
}

impl AuthFiles {
    /// Load both files, if named.
    pub fn load(password: Option<PathBuf>, acl: Option<PathBuf>) -> Result<AuthFiles, String> {
        let password_file = match &password {
            Some(p) => Some(Arc::new(PasswordFile::load(p).map_err(|e| e.to_string())?)),
            None => None,
        };
        let acl_file = match &acl {
            Some(p) => Some(Arc::new(Acl::load(p).map_err(|e| e.to_string())?)),
            None => None,
        };
        Ok(AuthFiles {
            password_path: password,
            password_file,
            acl_path: acl,
            acl: acl_file,
        })
    }

    /// Is any file named?
    pub fn is_set(&self) -> bool {
        self.password_path.is_some() || self.acl_path.is_some()
    }
}

/// One listener's own settings (`per_listener_settings true`).
#[derive(Debug, Clone, Default)]
pub struct ListenerAuth {
    /// Index into `Config::binds`.
    pub bind_index: usize,
    /// Its files.
    pub files: AuthFiles,
    /// Its `allow_anonymous` (Mosquitto: must be set per listener in this mode).
    pub allow_anonymous: Option<bool>,
}

/// The global files (command line over file) and the per-listener ones, all loaded.
pub fn load(a: &Args, f: &FileSettings) -> Result<(AuthFiles, Vec<ListenerAuth>), String> {
    let global = AuthFiles::load(
        a.password_file.clone().or_else(|| f.password_file.clone()),
        a.acl_file.clone().or_else(|| f.acl_file.clone()),
    )?;
    let mut listeners = Vec::new();
    for l in &f.listener_security {
        listeners.push(ListenerAuth {
            bind_index: l.bind_index,
            files: AuthFiles::load(l.password_file.clone(), l.acl_file.clone())?,
            allow_anonymous: l.allow_anonymous,
        });
    }
    Ok((global, listeners))
}

/// Until the broker enforces these files (issue 10, phase 2), naming one must not start an
/// open broker: refuse, after validating them so the operator can fix the files first.
pub fn refuse_until_enforced(
    global: &AuthFiles,
    listeners: &[ListenerAuth],
    per_listener: bool,
) -> Result<(), String> {
    if global.is_set() || per_listener || listeners.iter().any(|l| l.files.is_set()) {
        return Err("password_file / acl_file / per_listener_settings: the files are valid, but this build does not enforce them yet; refusing to start rather than run without them".into());
    }
    Ok(())
}
