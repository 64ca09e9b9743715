#![forbid(unsafe_code)]
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

    /// Re-read both files from their paths (SIGHUP). On any error the caller keeps `self`
    /// in force and logs the error; on success every loaded file has a new generation,
    /// which empties every per-link ACL cache and per-shard verify cache at their next use.
    pub fn reload(&self) -> Result<AuthFiles, String> {
        AuthFiles::load(self.password_path.clone(), self.acl_path.clone())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AclCache, Client, Verdict};

    #[test]
    fn reload_swaps_in_new_generations_or_keeps_the_old_files() {
        let dir = std::env::temp_dir().join(format!("shardmq-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let (pw, acl) = (dir.join("pw"), dir.join("acl"));
        let line = crate::auth::passwd_edit::new_line(
            "alice",
            b"pw",
            crate::auth::passwd_edit::HashParams {
                salt_bytes: 12,
                iterations: 2,
            },
        )
        .expect("line");
        std::fs::write(&pw, format!("{line}\n")).expect("write");
        std::fs::write(&acl, "user alice\ntopic readwrite a/#\n").expect("write");
        let old = AuthFiles::load(Some(pw.clone()), Some(acl.clone())).expect("loads");
        let alice = Client {
            username: Some("alice"),
            client_id: "c",
        };
        let mut cache = AclCache::new();
        let old_acl = old.acl.clone().expect("acl");
        assert!(cache.can_read(&old_acl, alice, &"a/x".into()));
        std::fs::write(&acl, "user alice\ntopic write a/#\n").expect("write");
        std::fs::write(&pw, "# nobody\n").expect("write");
        let new = old.reload().expect("reloads");
        let new_acl = new.acl.clone().expect("acl");
        assert_ne!(new_acl.generation(), old_acl.generation());
        assert!(
            !cache.can_read(&new_acl, alice, &"a/x".into()),
            "read revoked at the next decision"
        );
        let new_pw = new.password_file.clone().expect("pw");
        assert_eq!(new_pw.verify("alice", b"pw"), Verdict::UnknownUser);
        std::fs::write(&acl, "bogus\n").expect("write");
        assert!(new.reload().expect_err("bad file").contains("acl:1:"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
