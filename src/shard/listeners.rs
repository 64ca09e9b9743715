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

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::listener::Listener;
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
        proxy_requires_cert: listener.proxy_requires_cert,
        limit: listener
            .max_connections
            .map(|max| (Arc::new(AtomicUsize::new(0)), max)),
        mount: listener.mount_point.as_deref().map(Arc::from),
        id: listener.id,
    }
}
