//! The admin HTTP listener: Prometheus metrics, health, a small JSON API and the dashboard.
//!
//! Owns: the admin listener (`server`: accept, a fixed pool of workers, optional TLS) and
//! what each request means (`route`). Invariants: it only *reads* the figures board
//! (`metrics::Metrics`) that shards publish into, so a scrape never takes a lock a shard
//! could wait for and never stalls a shard; every answer is built from figures at most one
//! turn old (lists: at most `LISTS_INTERVAL_MS` old); the threads and memory it uses are
//! bounded whatever clients do (see `server`). A listener at the *default* address that
//! cannot bind is skipped with a warning (several brokers on one machine still start); an
//! explicitly requested one that cannot bind is an error. Must not touch: shard state,
//! sockets other than its own, MQTT.
#![forbid(unsafe_code)]

mod api;
mod assets;
mod auth;
mod prom;
pub mod server;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

pub use auth::{basic_credentials, CredentialCheck};
pub(crate) use server::Reply;
pub use server::ServerFigures;
use server::{Head, Server};

use crate::config::AdminListen;
use crate::metrics::Metrics;

/// Request bodies are never read; URLs past this are refused.
const URL_BYTES_MAX: usize = 2048;

/// What `start` did.
pub enum Started {
    /// Serving on this listener.
    Running(Admin),
    /// The default address was unavailable: run without it (the warning says why).
    Skipped(String),
    /// Turned off.
    Off,
}

/// The running admin listener.
pub struct Admin {
    server: Server,
    tls: bool,
}

impl Admin {
    /// The bound address (port 0 resolved).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Whether it speaks HTTPS.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// Serve new connections with this TLS configuration (a reload re-read the same
    /// `admin_certfile`/`admin_keyfile`); false if the listener speaks plain HTTP.
    pub fn set_tls(&self, cfg: Arc<rustls::ServerConfig>) -> bool {
        self.server.set_tls(cfg)
    }

    /// Stop serving and wait for its threads.
    pub fn stop(self) {
        self.server.stop();
    }
}

/// What every request handler may read.
struct Ctx {
    metrics: Arc<Metrics>,
    auth: Option<Arc<dyn CredentialCheck>>,
    /// The listener's own counters.
    server: Arc<ServerFigures>,
}

/// Bind and start the admin listener as `listen` asks; HTTPS when `tls` is given.
pub fn start(
    listen: AdminListen,
    metrics: Arc<Metrics>,
    auth: Option<Arc<dyn CredentialCheck>>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<Started, String> {
    let (addr, explicit) = match listen {
        AdminListen::Off => return Ok(Started::Off),
        AdminListen::Default(a) => (a, false),
        AdminListen::Explicit(a) => (a, true),
    };
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) if !explicit => {
            return Ok(Started::Skipped(format!(
                "admin listener on {addr} not started ({e}); running without it (--admin ADDR:PORT or --admin off to choose)"
            )))
        }
        Err(e) => return Err(format!("cannot start the admin listener on {addr}: {e}")),
    };
    let figures = Arc::new(ServerFigures::default());
    let ctx = Ctx {
        metrics,
        auth,
        server: figures.clone(),
    };
    let https = tls.is_some();
    let handler = Arc::new(move |h: &Head| answer(h, &ctx));
    let server = Server::start(listener, tls, handler, figures)
        .map_err(|e| format!("admin listener: {e}"))?;
    Ok(Started::Running(Admin { server, tls: https }))
}

fn answer(h: &Head, ctx: &Ctx) -> Reply {
    let (path, query) = h.target.split_once('?').unwrap_or((&h.target, ""));
    if h.target.len() > URL_BYTES_MAX {
        Reply::text(414, "URL too long\n")
    } else if h.method != "GET" && h.method != "HEAD" {
        Reply::text(405, "only GET\n").with_header("Allow", "GET, HEAD")
    } else if !authorised(h, path, ctx) {
        Reply::text(401, "authentication required\n")
            .with_header("WWW-Authenticate", "Basic realm=\"shardmq admin\"")
    } else {
        route(path, query, ctx)
    }
}

/// Probes stay open (they reveal nothing); everything else needs the password when one is set.
fn authorised(h: &Head, path: &str, ctx: &Ctx) -> bool {
    let Some(check) = &ctx.auth else {
        return true;
    };
    if path == "/healthz" || path == "/readyz" {
        return true;
    }
    h.authorization
        .as_deref()
        .and_then(basic_credentials)
        .is_some_and(|(user, pass)| check.check(&user, &pass))
}

fn route(path: &str, query: &str, ctx: &Ctx) -> Reply {
    let m = &ctx.metrics;
    match path {
        "/metrics" => {
            let mut text = prom::render(m);
            prom::render_admin(&mut text, &ctx.server);
            Reply::new(200, prom::CONTENT_TYPE, text)
        }
        "/healthz" => Reply::text(200, "ok\n"),
        "/readyz" if m.ready() => Reply::text(200, "ready\n"),
        "/readyz" => Reply::text(503, "not ready\n"),
        "/api/v1/stats" => Reply::new(200, api::JSON, api::stats(m)),
        "/api/v1/clients" => Reply::new(200, api::JSON, api::clients(m, query)),
        "/api/v1/subscriptions" => Reply::new(200, api::JSON, api::subscriptions(m, query)),
        "/api/v1/topics" => Reply::new(200, api::JSON, api::topics(m, query)),
        "/api/v1/bridges" => Reply::new(200, api::JSON, api::bridges(m)),
        _ => match assets::get(path) {
            Some((content_type, body)) => Reply::new(200, content_type, body),
            None => Reply::text(404, "not found\n"),
        },
    }
}
