//! Listeners as the shards serve them: what each configured listener wraps around the
//! sockets it accepts, and reloading TLS certificates while the broker runs.
//!
//! Owns: turning a validated `config::listener::Listener` into a `ListenerKind` (shared by
//! every shard's handle to that listener, with its connection count) and the swappable
//! TLS server configuration of each TLS listener. Invariant: a reload replaces a
//! listener's `rustls::ServerConfig` whole or not at all, so new handshakes see either the
//! old certificates or the new ones, and sessions already made are never touched. Must not
//! touch: sockets, connections, the broker.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::listener::Listener;
use crate::config::Config;
use crate::log::log;
use crate::transport::tls::{self, TlsOptions};
use crate::transport::ListenerKind;

/// What `listener` wraps around each socket it accepts.
pub fn kind_of(listener: &Listener) -> ListenerKind {
    ListenerKind {
        tls: listener
            .tls
            .as_ref()
            .map(|(_, cfg)| Arc::new(ArcSwap::new(cfg.clone()))),
        naming: listener.cert_username,
        ws: listener.ws.clone(),
        proxy: listener.proxy,
        limit: listener
            .max_connections
            .map(|max| (Arc::new(AtomicUsize::new(0)), max)),
        mount: listener.mount_point.as_deref().map(Arc::from),
    }
}

/// One TLS listener's certificate settings and the configuration its shards use.
#[derive(Debug, Clone)]
pub struct TlsReload {
    /// The listener's configured address, to match it in a new configuration.
    pub addr: SocketAddr,
    /// The files and options the configuration was built from.
    pub options: TlsOptions,
    /// The configuration every shard's handle to the listener hands to new handshakes.
    pub config: Arc<ArcSwap<rustls::ServerConfig>>,
}

/// Re-read every TLS listener's certificate, key, CA and CRL files (SIGHUP). A listener
/// whose files do not build keeps its current configuration, and the reason is logged.
/// Returns how many listeners were reloaded.
pub fn reload_tls(listeners: &[TlsReload]) -> usize {
    let mut reloaded = 0;
    for l in listeners {
        match tls::server_config(&l.options) {
            Ok(cfg) => {
                l.config.store(cfg);
                reloaded += 1;
            }
            Err(e) => log(format_args!(
                "listener {}: TLS files not reloaded, keeping the previous ones: {e}",
                l.addr
            )),
        }
    }
    if reloaded > 0 {
        log(format_args!(
            "TLS certificates reloaded on {reloaded} listener(s)"
        ));
    }
    reloaded
}

/// Take the TLS configurations of a new, already validated `Config` (a configuration
/// reload): each running TLS listener whose address is still configured with TLS gets the
/// new configuration built there. Listeners cannot be added or removed this way.
pub fn adopt_tls(listeners: &[TlsReload], cfg: &Config) {
    for l in listeners {
        let new = cfg.listeners.iter().find(|n| n.addr == l.addr);
        match new.and_then(|n| n.tls.as_ref()) {
            Some((_, built)) => l.config.store(built.clone()),
            None => log(format_args!(
                "listener {}: no longer TLS in the new configuration; restart to change it",
                l.addr
            )),
        }
    }
}
