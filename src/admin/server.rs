//! The admin listener's connections: accept, a fixed pool of workers, optional TLS, one
//! request per connection, read against a deadline and a size cap.
//!
//! Owns: the listening socket, the accept thread and `WORKERS` worker threads. Invariants:
//! at most `WORKERS` connections are being served and at most `QUEUED_MAX` wait for a
//! worker; a connection past that is closed at once, so a flood or a slowloris holds a
//! fixed number of threads and at most `HEAD_BYTES_MAX` of request per connection. Each
//! connection has `CONNECTION_DEADLINE` from its accept for its whole exchange (time in
//! the queue, TLS handshake, request head, answer) and is closed when it passes. Request heads are parsed by `httparse`;
//! bodies are never read (the API is GET only). Must not touch: what a request means
//! (the handler given to `Server::start` decides), shard state, MQTT.
//! Why not `tiny_http`: `docs/decisions/0011-admin-http.md`.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, TrySendError};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// Connections served at once (worker threads).
pub const WORKERS: usize = 8;
/// Accepted connections waiting for a worker; past this they are closed.
pub const QUEUED_MAX: usize = 32;
/// Time for a connection's whole exchange: TLS handshake, request head and answer.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(5);
/// Largest request head (request line and headers), bytes.
pub const HEAD_BYTES_MAX: usize = 8 * 1024;
/// Most headers in a request.
const HEADERS_MAX: usize = 32;
/// Pause after a failed `accept` (out of descriptors, say) before the next one.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// A request head, as the handler sees it.
#[derive(Debug)]
pub struct Head {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The request target: path and query.
    pub target: String,
    /// The `Authorization` header's value, if any.
    pub authorization: Option<String>,
}

/// An answer: status, content type, body, and at most one more header.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body (not sent for HEAD).
    pub body: Vec<u8>,
    /// One more header, name and value.
    pub header: Option<(&'static str, &'static str)>,
}

impl Reply {
    /// A reply with this body.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            content_type,
            body: body.into(),
            header: None,
        }
    }

    /// A plain-text reply.
    pub fn text(status: u16, body: &str) -> Reply {
        Reply::new(status, "text/plain; charset=utf-8", body)
    }

    /// The same reply with one more header.
    pub fn with_header(mut self, name: &'static str, value: &'static str) -> Reply {
        self.header = Some((name, value));
        self
    }
}

/// What the admin listener counts about its own connections (written by its threads with
/// `fetch_add`: they are not on any shard's path).
#[derive(Debug, Default)]
pub struct ServerFigures {
    /// Requests answered (counted just before the answer is written).
    pub requests: AtomicU64,
    /// Connections closed at accept: every worker busy and the queue full.
    pub turned_away: AtomicU64,
    /// Connections closed at their deadline.
    pub timed_out: AtomicU64,
    /// Connections whose TLS handshake or records failed.
    pub tls_failures: AtomicU64,
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// What answers a request (runs on a worker thread).
pub type Handler = dyn Fn(&Head) -> Reply + Send + Sync;

/// The TLS configuration the workers use, replaceable while running (certificate renewal).
pub type SharedTls = Arc<ArcSwap<ServerConfig>>;

/// The running listener.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    tls: Option<SharedTls>,
}

impl Server {
    /// Serve `listener` with `handler`, over TLS when `tls` is given.
    pub fn start(
        listener: TcpListener,
        tls: Option<Arc<ServerConfig>>,
        handler: Arc<Handler>,
        figures: Arc<ServerFigures>,
    ) -> io::Result<Server> {
        let addr = listener.local_addr()?;
        let tls: Option<SharedTls> = tls.map(|c| Arc::new(ArcSwap::new(c)));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = crossbeam_channel::bounded::<Accepted>(QUEUED_MAX);
        let mut threads = Vec::with_capacity(WORKERS + 1);
        for i in 0..WORKERS {
            let (rx, tls, handler) = (rx.clone(), tls.clone(), handler.clone());
            let f = figures.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("admin-{i}"))
                    .spawn(move || work(&rx, tls.as_ref(), &*handler, &f))?,
            );
        }
        let s = stop.clone();
        let plain = tls.is_none();
        threads.push(
            std::thread::Builder::new()
                .name("admin".into())
                .spawn(move || accept_loop(&listener, &tx, &s, plain, &figures))?,
        );
        Ok(Server {
            addr,
            stop,
            threads,
            tls,
        })
    }

    /// Serve new connections with `cfg` (a renewed certificate); false when this listener
    /// speaks plain HTTP (switching needs a restart).
    pub fn set_tls(&self, cfg: Arc<ServerConfig>) -> bool {
        match &self.tls {
            Some(t) => {
                t.store(cfg);
                true
            }
            None => false,
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting, let the workers finish what they hold (each within its deadline),
    /// and wait for every thread. If the accept cannot be woken (our own connection
    /// refused), the threads are left to end with the process rather than waited for.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        if TcpStream::connect_timeout(&wake_addr(self.addr), CONNECTION_DEADLINE).is_err() {
            return;
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Where to connect to reach our own listener (an unspecified address means loopback).
fn wake_addr(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, a.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, a.port()).into(),
        _ => a,
    }
}

/// Accept until stopped; hand each connection to a worker, or close it when all are busy
/// and the queue is full (plain HTTP first gets a `503`, written without waiting).
fn accept_loop(
    listener: &TcpListener,
    tx: &crossbeam_channel::Sender<Accepted>,
    stop: &AtomicBool,
    plain: bool,
    figures: &ServerFigures,
) {
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((sock, _)) => match tx.try_send((sock, Instant::now())) {
                Ok(()) => {}
                Err(TrySendError::Full((sock, _))) => {
                    bump(&figures.turned_away);
                    turn_away(sock, plain);
                }
                Err(TrySendError::Disconnected(_)) => return,
            },
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Out of descriptors or memory: the condition outlasts a retry, so pause.
            Err(_) => std::thread::sleep(ACCEPT_ERROR_PAUSE),
        }
    }
}

/// Close a connection no worker can take; plain HTTP clients are told why.
fn turn_away(sock: TcpStream, plain: bool) {
    if plain && sock.set_nonblocking(true).is_ok() {
        let mut s = &sock;
        let _ = s.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n",
        );
    }
}

/// A connection and when it was accepted.
type Accepted = (TcpStream, Instant);

fn work(
    rx: &Receiver<Accepted>,
    tls: Option<&SharedTls>,
    handler: &Handler,
    figures: &ServerFigures,
) {
    while let Ok((sock, at)) = rx.recv() {
        // A client that misbehaves or goes away is its own problem; the worker counts it
        // and moves on.
        let cfg = tls.map(|t| t.load_full());
        serve(
            sock,
            at + CONNECTION_DEADLINE,
            cfg.as_ref(),
            handler,
            figures,
        );
    }
}

/// One connection: optional TLS, one request, one answer, close; all by `deadline`. How it
/// ended is counted before the socket closes, so a client that sees the close finds it
/// counted in the next `/metrics`.
fn serve(
    sock: TcpStream,
    deadline: Instant,
    tls: Option<&Arc<ServerConfig>>,
    handler: &Handler,
    figures: &ServerFigures,
) {
    let _ = sock.set_nodelay(true);
    let mut stream = Deadline { sock, at: deadline };
    let ended = match tls {
        None => exchange(&mut stream, handler, &figures.requests),
        Some(cfg) => exchange_tls(&mut stream, cfg, handler, &figures.requests),
    };
    match ended {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            bump(&figures.timed_out)
        }
        // rustls reports a failed handshake or a bad record as InvalidData.
        Err(e) if tls.is_some() && e.kind() == io::ErrorKind::InvalidData => {
            bump(&figures.tls_failures)
        }
        Err(_) => {}
    }
    drop(stream);
}

/// `exchange` inside a TLS session, closed with a close_notify.
fn exchange_tls(
    stream: &mut Deadline,
    cfg: &Arc<ServerConfig>,
    handler: &Handler,
    answered: &AtomicU64,
) -> io::Result<()> {
    let conn = ServerConnection::new(cfg.clone()).map_err(io::Error::other)?;
    let mut s = StreamOwned::new(conn, stream);
    exchange(&mut s, handler, answered)?;
    s.conn.send_close_notify();
    s.flush()
}

/// Read the request head, answer it, flush. The request is counted in `answered` before
/// its answer goes out, so a client holding an answer finds it in the next `/metrics`.
fn exchange<S: Read + Write>(mut s: S, handler: &Handler, answered: &AtomicU64) -> io::Result<()> {
    let (reply, bodyless) = match read_head(&mut s)? {
        Ok(head) => (handler(&head), head.method == "HEAD"),
        Err(refusal) => (refusal, false),
    };
    bump(answered);
    write_reply(&mut s, &reply, bodyless)
}

/// The request head, or the reply refusing it (too large, malformed). An I/O error (the
/// deadline passed, the peer left, TLS failed) ends the connection without an answer.
fn read_head<S: Read>(s: &mut S) -> io::Result<Result<Head, Reply>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if buf.len() >= HEAD_BYTES_MAX {
            return Ok(Err(Reply::text(431, "request head too large\n")));
        }
        let room = (HEAD_BYTES_MAX - buf.len()).min(chunk.len());
        let n = s.read(&mut chunk[..room])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => return Ok(Ok(head_of(&req))),
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => {
                return Ok(Err(Reply::text(431, "too many headers\n")))
            }
            Err(_) => return Ok(Err(Reply::text(400, "bad request\n"))),
        }
    }
}

fn head_of(req: &httparse::Request<'_, '_>) -> Head {
    let authorization = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("authorization"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::to_string);
    Head {
        method: req.method.unwrap_or_default().to_string(),
        target: req.path.unwrap_or_default().to_string(),
        authorization,
    }
}

fn write_reply<S: Write>(s: &mut S, r: &Reply, bodyless: bool) -> io::Result<()> {
    let mut out = Vec::with_capacity(256 + r.body.len());
    let extra = r
        .header
        .map_or(String::new(), |(n, v)| format!("{n}: {v}\r\n"));
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{extra}Connection: close\r\n\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    if !bodyless {
        out.extend_from_slice(&r.body);
    }
    s.write_all(&out)?;
    s.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// A socket whose reads and writes all end by one instant: each call gets the time left as
/// its timeout, and fails with `TimedOut` once it is gone.
struct Deadline {
    sock: TcpStream,
    at: Instant,
}

impl Deadline {
    fn left(&self) -> io::Result<Duration> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        Ok(left)
    }
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.set_read_timeout(Some(self.left()?))?;
        self.sock.read(buf)
    }
}

impl Write for Deadline {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.set_write_timeout(Some(self.left()?))?;
        self.sock.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8]) -> Result<Head, Reply> {
        read_head(&mut &bytes[..]).expect("no I/O error")
    }

    #[test]
    fn heads_are_read_whole_and_bad_ones_refused() {
        let h = head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nauthorization: Basic YTpi\r\n\r\n")
            .expect("a head");
        assert_eq!(
            (h.method.as_str(), h.target.as_str()),
            ("GET", "/metrics?x=1")
        );
        assert_eq!(h.authorization.as_deref(), Some("Basic YTpi"));
        assert_eq!(
            head(b"GET / HTTP/1.1\r\n\x01\r\n\r\n")
                .err()
                .map(|r| r.status),
            Some(400)
        );
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(HEAD_BYTES_MAX + 10, b'a');
        assert_eq!(head(&big).err().map(|r| r.status), Some(431));
        let many: String = (0..HEADERS_MAX + 1)
            .map(|i| format!("H{i}: v\r\n"))
            .collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(head(many.as_bytes()).err().map(|r| r.status), Some(431));
        let cut = read_head(&mut &b"GET / HTTP/1.1\r\nHost"[..]);
        assert!(
            cut.is_err(),
            "a head cut short is an I/O error, not a request"
        );
    }

    /// A stream that notes what the answered count was when the first answer byte left.
    struct Noting<'a> {
        input: &'a [u8],
        answered: &'a AtomicU64,
        seen: Option<u64>,
    }

    impl Read for Noting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Noting<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.seen
                .get_or_insert(self.answered.load(Ordering::Relaxed));
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_request_is_counted_before_its_answer_leaves() {
        let answered = AtomicU64::new(0);
        let handler: &Handler = &|_| Reply::text(200, "ok\n");
        for (i, input) in [
            &b"GET /healthz HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\n\x01\r\n\r\n",
        ]
        .into_iter()
        .enumerate()
        {
            let mut s = Noting {
                input,
                answered: &answered,
                seen: None,
            };
            exchange(&mut s, handler, &answered).expect("exchange");
            assert_eq!(s.seen, Some(i as u64 + 1), "answer {i} went out uncounted");
        }
    }

    /// A connection's end is counted before its socket closes: by the time a client sees
    /// the close, the figure is there (the slowloris test compared them and once lost).
    #[test]
    fn a_connection_is_counted_before_it_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let figures = ServerFigures::default();
        let handler: &Handler = &|_| Reply::text(200, "ok\n");
        std::thread::scope(|sc| {
            let client = sc.spawn(|| {
                let mut idle = TcpStream::connect(addr).expect("connect");
                let mut got = Vec::new();
                let _ = idle.read_to_end(&mut got);
                // The server closed this one at its deadline: it is counted already.
                let timed_out = figures.timed_out.load(Ordering::SeqCst);
                let mut asked = TcpStream::connect(addr).expect("connect");
                asked
                    .write_all(b"GET /healthz HTTP/1.1\r\n\r\n")
                    .expect("ask");
                got.clear();
                let _ = asked.read_to_end(&mut got);
                (timed_out, figures.requests.load(Ordering::SeqCst), got)
            });
            let (idle, _) = listener.accept().expect("accept");
            serve(
                idle,
                Instant::now() + Duration::from_millis(50),
                None,
                handler,
                &figures,
            );
            let (asked, _) = listener.accept().expect("accept");
            serve(
                asked,
                Instant::now() + Duration::from_secs(10),
                None,
                handler,
                &figures,
            );
            let (timed_out, requests, got) = client.join().expect("client");
            assert_eq!(timed_out, 1, "the idle connection's deadline was counted");
            assert_eq!(requests, 1);
            assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
        });
    }

    #[test]
    fn head_answers_carry_no_body() {
        let mut out = Vec::new();
        write_reply(&mut out, &Reply::text(200, "hello\n"), true).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains("Content-Length: 6\r\n") && text.ends_with("\r\n\r\n"),
            "{text}"
        );
    }
}
