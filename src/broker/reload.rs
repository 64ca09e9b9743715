//! A new configuration, applied between turns (SIGHUP): the broker's side of a reload.
//!
//! Owns: deciding what of a new `Config` the broker's parts take live. Invariant: called
//! only at a turn boundary, so no packet is half-handled under the old settings and half
//! under the new; connections, sessions, subscriptions and retained messages are never
//! touched by a reload, only the settings they are served under. Must not touch: what
//! cannot change live (the shard count; `config::reload` keeps the running values of
//! those in the new `Config` and names them in the log), sockets (the shard swaps
//! listeners before calling in here).
//!
//! Each part that keeps settings of its own gets one hook call in [`Broker::reload`].

use std::sync::Arc;

use super::{session_limits, Broker};
use crate::config::Config;

impl<X> Broker<X> {
    /// Apply `cfg`, the validated configuration a reload produced. Takes effect at once:
    /// session limits (in-flight window, queue bounds: a queue longer than a new, smaller
    /// bound is not trimmed, it only takes no more until it drains below it), packet and
    /// buffer limits for what arrives next, `$SYS` interval (the timer is re-armed from
    /// now), and every other setting the broker reads from its configuration per packet.
    pub fn reload(&mut self, cfg: Arc<Config>) {
        let sys_changed = cfg.sys_interval_s != self.cfg.sys_interval_s;
        if cfg.bridges != self.cfg.bridges {
            self.bridges =
                super::bridges::BridgeRoutes::new(&cfg.bridges, self.shard_id, self.shards);
        }
        self.limits = session_limits(&cfg);
        if self.pressure == super::memory::MemoryPressure::Full {
            // Still full until the next accounting says otherwise (`set_memory`).
            self.limits.queue_max = 0;
        }
        self.cfg = cfg;
        if sys_changed {
            self.rearm_sys_timer(self.now_ms);
        }
        // Password and ACL files (re-read by the reload, so with new generations: every
        // cached decision and password check misses from now on), `allow_anonymous`,
        // per-listener settings. Connected clients stay; deliveries are decided anew.
        self.set_auth(Arc::new(super::access::AuthState::from_config(&self.cfg)));
        // Hooks of the parts with settings of their own go here (auth files, bridges): each
        // takes what it needs from `self.cfg`.
    }
}
