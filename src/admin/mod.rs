//! The admin HTTP listener: Prometheus metrics, health, a small JSON API and the dashboard.
//!
//! Owns: one listening socket, the `tiny_http` server on it and one thread (`admin`) that
//! answers requests one by one. Invariants: it only *reads* the figures board
//! (`metrics::Metrics`) that shards publish into, so a scrape never takes a lock a shard
//! could wait for and never stalls a shard; every answer is built from figures at most one
//! turn old (lists: at most `LISTS_INTERVAL_MS` old). A listener at the *default* address
//! that cannot bind is skipped with a warning (several brokers on one machine still start);
//! an explicitly requested one that cannot bind is an error. Must not touch: shard state,
//! sockets other than its own, MQTT.
#![forbid(unsafe_code)]

mod api;
mod assets;
mod auth;
mod prom;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;

use tiny_http::{Header, Method, Request, Response, Server};

pub use auth::{basic_credentials, CredentialCheck};

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
    addr: SocketAddr,
    server: Arc<Server>,
    thread: Option<JoinHandle<()>>,
}

impl Admin {
    /// The bound address (port 0 resolved).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop serving and wait for the thread.
    pub fn stop(mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What every request handler may read.
struct Ctx {
    metrics: Arc<Metrics>,
    auth: Option<Arc<dyn CredentialCheck>>,
}

/// Bind and start the admin listener as `listen` asks.
pub fn start(
    listen: AdminListen,
    metrics: Arc<Metrics>,
    auth: Option<Arc<dyn CredentialCheck>>,
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
    let addr = listener
        .local_addr()
        .map_err(|e| format!("admin listener: {e}"))?;
    let server =
        Server::from_listener(listener, None).map_err(|e| format!("admin listener: {e}"))?;
    let server = Arc::new(server);
    let ctx = Ctx { metrics, auth };
    let s = server.clone();
    let thread = std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || serve(&s, &ctx))
        .map_err(|e| format!("admin listener thread: {e}"))?;
    Ok(Started::Running(Admin {
        addr,
        server,
        thread: Some(thread),
    }))
}

/// Answer requests until `unblock`.
fn serve(server: &Server, ctx: &Ctx) {
    loop {
        match server.recv() {
            Ok(req) => {
                // A client that went away mid-answer is its own problem.
                let _ = answer(req, ctx);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// A response body with its content type.
pub(crate) struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Reply {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            content_type,
            body: body.into(),
        }
    }

    fn text(status: u16, body: &str) -> Reply {
        Reply::new(status, "text/plain; charset=utf-8", body)
    }
}

/// `r` with one more header (the names and values here are constant ASCII).
fn with_header<R: io::Read>(r: Response<R>, name: &str, value: &str) -> Response<R> {
    match Header::from_bytes(name.as_bytes(), value.as_bytes()) {
        Ok(h) => r.with_header(h),
        Err(()) => r,
    }
}

fn answer(req: Request, ctx: &Ctx) -> io::Result<()> {
    let url = req.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let reply = if url.len() > URL_BYTES_MAX {
        Reply::text(414, "URL too long\n")
    } else if !matches!(req.method(), Method::Get | Method::Head) {
        Reply::text(405, "only GET\n")
    } else if !authorised(&req, path, ctx) {
        let r = Response::from_string("authentication required\n").with_status_code(401);
        return req.respond(with_header(
            r,
            "WWW-Authenticate",
            "Basic realm=\"shardmq admin\"",
        ));
    } else {
        route(path, query, ctx)
    };
    let r = Response::from_data(reply.body).with_status_code(reply.status);
    let r = with_header(r, "Content-Type", reply.content_type);
    req.respond(with_header(r, "Cache-Control", "no-store"))
}

/// Probes stay open (they reveal nothing); everything else needs the password when one is set.
fn authorised(req: &Request, path: &str, ctx: &Ctx) -> bool {
    let Some(check) = &ctx.auth else {
        return true;
    };
    if path == "/healthz" || path == "/readyz" {
        return true;
    }
    req.headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .and_then(|h| basic_credentials(h.value.as_str()))
        .is_some_and(|(user, pass)| check.check(&user, &pass))
}

fn route(path: &str, query: &str, ctx: &Ctx) -> Reply {
    let m = &ctx.metrics;
    match path {
        "/metrics" => Reply::new(200, prom::CONTENT_TYPE, prom::render(m)),
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
