//! Reloaded security settings on their way to the shards (SIGHUP).
//!
//! Owns: the latest [`AuthState`] built from re-read password and ACL files, under a
//! version number. Invariants: a shard takes a new version only at the start of a turn
//! (one turn sees one version); when nothing changed a shard pays one atomic load per
//! turn; a reload that fails (a file that does not load) changes nothing. Must not touch:
//! broker state (a shard hands the new `Arc` to its own broker), the configuration other
//! than the security files. The operations reload (issue 13) re-reads the whole
//! configuration; it can call [`AuthSlot::put`] with `AuthState::from_config(&new)`.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::broker::access::AuthState;
use crate::config::Config;

/// The security settings in force, shared by the reloading thread and the shards.
#[derive(Debug)]
pub struct AuthSlot {
    cfg: Arc<Config>,
    version: AtomicU64,
    current: Mutex<Arc<AuthState>>,
}

impl AuthSlot {
    /// The settings of `cfg`, version 0 (what every shard starts with).
    pub fn new(cfg: Arc<Config>) -> AuthSlot {
        let auth = Arc::new(AuthState::from_config(&cfg));
        AuthSlot {
            cfg,
            version: AtomicU64::new(0),
            current: Mutex::new(auth),
        }
    }

    /// Re-read every password and ACL file from its path; on success the new settings
    /// become the next version, on error nothing changes and the error names the file.
    pub fn reload(&self) -> Result<(), String> {
        let old = self.latest();
        let next = old.reloaded(&self.cfg)?;
        self.put(Arc::new(next));
        Ok(())
    }

    /// Make `auth` the next version.
    pub fn put(&self, auth: Arc<AuthState>) {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        *cur = auth;
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The settings now in force.
    pub fn latest(&self) -> Arc<AuthState> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The settings and their version, if newer than `seen`.
    pub fn newer_than(&self, seen: u64) -> Option<(u64, Arc<AuthState>)> {
        let v = self.version.load(Ordering::Acquire);
        if v == seen {
            return None;
        }
        let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        Some((self.version.load(Ordering::Acquire), cur.clone()))
    }
}
