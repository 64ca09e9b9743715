//! The admin listener, black box: health, the JSON API, the default-port fallback, an
//! explicit address that cannot bind, basic auth, and `shardmq check`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use shardmq::config::AdminListen;
use shardmq::metrics::Metrics;

/// One HTTP/1.1 GET with `Connection: close`: (status, body). Bounded by `WAIT`.
fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("connect to admin");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let auth = auth.map_or(String::new(), |a| format!("Authorization: Basic {a}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("send request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("header end");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (status, body.to_string())
}

/// GET `path` until `pred` holds for the body (bounded by `WAIT`).
fn get_until(
    addr: SocketAddr,
    path: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = get(addr, path, None);
        assert_eq!(status, 200, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{path} never matched; last: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn health_stats_and_lists_follow_traffic() {
    let b = Broker::with_shards(2, &["--admin", "127.0.0.1:0"]);
    let admin = b.admin_addr().expect("admin address printed");
    assert_eq!(get(admin, "/healthz", None), (200, "ok\n".into()));
    get_until(admin, "/api/v1/stats", |v| v["ready"] == true);
    assert_eq!(get(admin, "/readyz", None).0, 200);
    let mut sub = RawClient::clean(b.addr(), "admin-sub");
    sub.subscribe("admin/t", 0);
    let mut publ = RawClient::clean(b.addr(), "admin-pub");
    for _ in 0..5 {
        publ.publish("admin/t", b"x", 0, false);
    }
    for _ in 0..5 {
        sub.expect_publish(WAIT);
    }
    let v = get_until(admin, "/api/v1/stats", |v| {
        v["totals"]["messages_received"] == 5 && v["totals"]["messages_sent"] == 5
    });
    assert_eq!(v["shards"], 2);
    let v = get_until(admin, "/api/v1/clients?limit=10&q=admin-", |v| {
        v["total"] == 2
    });
    let ids: Vec<&str> = v["clients"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["client_id"].as_str())
        .collect();
    assert!(
        ids.contains(&"admin-sub") && ids.contains(&"admin-pub"),
        "{v}"
    );
    let v = get_until(admin, "/api/v1/clients?limit=1", |v| v["total"] == 2);
    assert_eq!(v["returned"], 1, "limit honoured: {v}");
    let v = get_until(admin, "/api/v1/subscriptions", |v| v["total"] == 1);
    assert_eq!(v["subscriptions"][0]["filter"], "admin/t");
    let (status, text) = get(admin, "/metrics", None);
    assert_eq!(status, 200);
    assert!(text.contains("# TYPE shardmq_messages_received_total counter"));
    let (status, page) = get(admin, "/", None);
    assert!(
        status == 200 && page.contains("<canvas id=\"chart\""),
        "{page}"
    );
    assert_eq!(get(admin, "/nope", None).0, 404);
}

#[test]
fn taken_default_port_is_skipped_with_a_warning() {
    // Hold the default port (or find it already held by someone else: taken either way).
    let _held = TcpListener::bind(shardmq::config::defaults::ADMIN_LISTENER).ok();
    let mut child = Command::new(Broker::bin())
        .args([
            "--bind",
            "127.0.0.1:0",
            "--print-bound",
            "--no-pin",
            "--no-persistence",
            "--shards",
            "1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("first line");
    assert!(
        line.starts_with("listening "),
        "broker did not start: {line:?}"
    );
    signal(child.id(), libc::SIGTERM);
    let st = wait_exit(&mut child, WAIT).expect("exits on SIGTERM");
    assert!(st.success(), "{st:?}");
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    assert!(
        err.contains("Warning: admin listener on 127.0.0.1:18083 not started"),
        "{err}"
    );
}

#[test]
fn explicit_admin_address_that_cannot_bind_is_an_error() {
    let held = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = held.local_addr().expect("addr").to_string();
    let mut child = Command::new(Broker::bin())
        .args([
            "--bind",
            "127.0.0.1:0",
            "--no-pin",
            "--no-persistence",
            "--shards",
            "1",
            "--admin",
            &addr,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let st = wait_exit(&mut child, WAIT).expect("exits at once");
    assert!(!st.success());
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    assert!(
        err.contains(&format!("cannot start the admin listener on {addr}")),
        "{err}"
    );
}

#[test]
fn basic_auth_guards_everything_but_the_probes() {
    let metrics = Arc::new(Metrics::new(1));
    let check = |u: &str, p: &str| u == "ops" && p == "pw";
    let started = shardmq::admin::start(
        AdminListen::Explicit("127.0.0.1:0".parse().expect("addr")),
        metrics,
        Some(Arc::new(check)),
        None,
    )
    .expect("start");
    let shardmq::admin::Started::Running(admin) = started else {
        panic!("not running");
    };
    let a = admin.addr();
    assert_eq!(get(a, "/api/v1/stats", None).0, 401);
    assert_eq!(get(a, "/metrics", Some("b3BzOndyb25n")).0, 401, "ops:wrong");
    assert_eq!(get(a, "/metrics", Some("b3BzOnB3")).0, 200, "ops:pw");
    assert_eq!(get(a, "/healthz", None).0, 200);
    assert_eq!(get(a, "/readyz", None).0, 503, "no shard has run");
    admin.stop();
}

#[test]
fn check_validates_a_file_without_starting() {
    let dir = std::env::temp_dir().join(format!("shardmq-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let good = dir.join("good.conf");
    std::fs::write(&good, "listener 1883 127.0.0.1\nadmin_listener 18083\n").expect("write");
    let bad = dir.join("bad.conf");
    std::fs::write(&bad, "listener 1883\n\nadmin_listener 18083 nowhere\n").expect("write");
    let run = |p: &std::path::Path| {
        Command::new(Broker::bin())
            .args(["check", "-c"])
            .arg(p)
            .output()
            .expect("run check")
    };
    let out = run(&good);
    assert!(out.status.success(), "{out:?}");
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.conf:3: admin_listener: 'nowhere' is not an IP address"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `admin_password_file` (a file made by `shardmq passwd`) guards the admin listener of a
/// running broker; the probes stay open for health checkers.
#[test]
fn admin_password_file_guards_the_running_admin_listener() {
    let dir = std::env::temp_dir().join(format!("shardmq-admin-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let pw = dir.join("admin.pw");
    let made = Command::new(env!("CARGO_BIN_EXE_shardmq"))
        .args(["passwd", "-c", "-b"])
        .arg(&pw)
        .args(["ops", "pw"])
        .status()
        .expect("run shardmq passwd");
    assert!(made.success(), "shardmq passwd failed");
    let conf = dir.join("admin.conf");
    std::fs::write(&conf, format!("admin_password_file {}\n", pw.display())).expect("conf");
    let conf = conf.to_string_lossy().into_owned();
    let b = Broker::with_shards(1, &["-c", &conf, "--admin", "127.0.0.1:0"]);
    let admin = b.admin_addr().expect("admin address printed");
    assert_eq!(get(admin, "/api/v1/stats", None).0, 401);
    assert_eq!(
        get(admin, "/metrics", Some("b3BzOndyb25n")).0,
        401,
        "ops:wrong"
    );
    assert_eq!(get(admin, "/metrics", Some("b3BzOnB3")).0, 200, "ops:pw");
    assert_eq!(get(admin, "/healthz", None).0, 200);
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A CA and a server certificate for 127.0.0.1 and localhost signed by it, written to
/// `dir` as `ca.pem`, `admin.pem` and `admin.key`; an operator's client certificate from
/// the same CA (`client.pem`/`.key`) and a stranger's, self-signed (`stranger.pem`/`.key`).
fn admin_pki(dir: &std::path::Path) {
    use common::pki::{ca, leaf, LeafSpec};
    let ca = ca("Admin test CA");
    let server = LeafSpec {
        san: &["127.0.0.1", "localhost"],
        ..LeafSpec::cn("localhost")
    };
    let files = [
        ("admin", leaf(Some(&ca), &server)),
        ("client", leaf(Some(&ca), &LeafSpec::cn("operator"))),
        ("stranger", leaf(None, &LeafSpec::cn("stranger"))),
    ];
    std::fs::write(dir.join("ca.pem"), &ca.pem).expect("write");
    for (name, l) in files {
        std::fs::write(dir.join(format!("{name}.pem")), &l.pem).expect("write");
        std::fs::write(dir.join(format!("{name}.key")), &l.key).expect("write");
    }
}

/// curl with a 10 s bound: (exit code, body).
fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `admin_certfile`/`admin_keyfile`: the admin listener speaks HTTPS only, and a client
/// that verifies the CA (curl) gets the figures; one that does not trust it is refused. A
/// certificate renewed in the same files is served after SIGHUP.
#[test]
fn admin_listener_speaks_https_with_its_certificate() {
    let dir = std::env::temp_dir().join(format!("shardmq-admin-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    admin_pki(&dir);
    let conf = dir.join("admin.conf");
    std::fs::write(
        &conf,
        format!(
            "admin_certfile {}\nadmin_keyfile {}\n",
            dir.join("admin.pem").display(),
            dir.join("admin.key").display()
        ),
    )
    .expect("conf");
    let conf_s = conf.to_string_lossy().into_owned();
    let b = Broker::with_shards(1, &["-c", &conf_s, "--admin", "127.0.0.1:0"]);
    let admin = b.admin_addr().expect("admin address printed");
    let ca = dir.join("ca.pem").to_string_lossy().into_owned();
    let url = format!("https://{admin}/metrics");
    let (code, body) = curl(&["--cacert", &ca, &url]);
    assert_eq!(code, 0, "curl over TLS failed: {body}");
    assert!(body.contains("# TYPE shardmq_build_info gauge"), "{body}");
    let (code, body) = curl(&[
        "--cacert",
        &ca,
        &format!("https://localhost:{}/healthz", admin.port()),
    ]);
    assert_eq!((code, body.as_str()), (0, "ok\n"), "by name too");
    let (code, _) = curl(&[&url]);
    assert_eq!(
        code, 60,
        "a client that does not trust the CA refuses the certificate"
    );
    let (code, _) = curl(&[&format!("http://{admin}/healthz")]);
    assert_ne!(code, 0, "no plain HTTP on an HTTPS listener");
    let (code, body) = curl(&["--cacert", &ca, &url]);
    assert_eq!(code, 0, "{body}");
    let tls_failures = body
        .lines()
        .find_map(|l| l.strip_prefix("shardmq_admin_connections_dropped_total{reason=\"tls\"} "))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("tls failure count");
    assert!(
        tls_failures >= 1,
        "the plain HTTP attempt is a TLS failure: {tls_failures}"
    );
    // A renewed certificate (here from another CA) in the same files: SIGHUP serves it.
    std::fs::rename(dir.join("ca.pem"), dir.join("old-ca.pem")).expect("keep the old CA");
    admin_pki(&dir);
    signal(b.pid(), libc::SIGHUP);
    let deadline = Instant::now() + WAIT * 2;
    while curl(&["--cacert", &ca, &url]).0 != 0 {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let old = dir.join("old-ca.pem").to_string_lossy().into_owned();
    // 60 (not trusted) or 35 (the same CA name, a signature that does not verify).
    let (code, _) = curl(&["--cacert", &old, &url]);
    assert!(
        code == 60 || code == 35,
        "the old certificate is gone: curl exit {code}"
    );
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `admin_cafile` + `admin_require_certificate true`: only a client with a certificate
/// from that CA gets an answer; one without a certificate, or with a stranger's, fails
/// in the handshake.
#[test]
fn admin_listener_can_require_client_certificates() {
    let dir = std::env::temp_dir().join(format!("shardmq-admin-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    admin_pki(&dir);
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let conf = dir.join("admin.conf");
    std::fs::write(
        &conf,
        format!(
            "admin_certfile {}\nadmin_keyfile {}\nadmin_cafile {}\nadmin_require_certificate true\n",
            path("admin.pem"),
            path("admin.key"),
            path("ca.pem")
        ),
    )
    .expect("conf");
    let conf_s = conf.to_string_lossy().into_owned();
    let b = Broker::with_shards(1, &["-c", &conf_s, "--admin", "127.0.0.1:0"]);
    let admin = b.admin_addr().expect("admin address printed");
    let url = format!("https://{admin}/metrics");
    let ca = path("ca.pem");
    let with = |cert: &str, key: &str| curl(&["--cacert", &ca, "--cert", cert, "--key", key, &url]);
    let (code, body) = with(&path("client.pem"), &path("client.key"));
    assert_eq!(code, 0, "the operator's certificate is accepted: {body}");
    assert!(body.contains("# TYPE shardmq_build_info gauge"), "{body}");
    let (code, body) = curl(&["--cacert", &ca, &url]);
    assert_ne!(code, 0, "no client certificate: refused ({body})");
    assert!(!body.contains("shardmq_build_info"), "{body}");
    let (code, body) = with(&path("stranger.pem"), &path("stranger.key"));
    assert_ne!(code, 0, "a stranger's certificate: refused ({body})");
    assert!(!body.contains("shardmq_build_info"), "{body}");
    let (code, body) = with(&path("client.pem"), &path("client.key"));
    assert_eq!(code, 0, "{body}");
    let tls_failures = body
        .lines()
        .find_map(|l| l.strip_prefix("shardmq_admin_connections_dropped_total{reason=\"tls\"} "))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("tls failure count");
    assert!(
        tls_failures >= 2,
        "both refusals are TLS failures: {tls_failures}"
    );
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bad admin TLS settings stop `shardmq check` (and a start) with the file and line.
#[test]
fn admin_tls_settings_are_checked_with_file_and_line() {
    let dir = std::env::temp_dir().join(format!("shardmq-admin-tls-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    admin_pki(&dir);
    let pem = dir.join("admin.pem").display().to_string();
    let cases = [
        (
            format!("\nadmin_certfile {pem}\n"),
            ":2: admin_certfile needs admin_keyfile",
        ),
        (
            format!("admin_keyfile {pem}\nadmin_certfile {pem}\n"),
            ":1: admin_keyfile: ",
        ),
        (
            format!(
                "admin_certfile {}\nadmin_keyfile {}\n",
                dir.join("missing.pem").display(),
                dir.join("admin.key").display()
            ),
            ":1: admin_certfile: ",
        ),
        (
            format!(
                "admin_certfile {pem}\nadmin_keyfile {}\nadmin_require_certificate true\n",
                dir.join("admin.key").display()
            ),
            ":3: admin_require_certificate true needs admin_cafile",
        ),
        (
            format!("admin_cafile {pem}\n"),
            ":1: admin_cafile and admin_require_certificate need admin_certfile and admin_keyfile",
        ),
        (
            format!(
                "admin_certfile {pem}\nadmin_keyfile {}\nadmin_cafile {}\nadmin_require_certificate true\n",
                dir.join("admin.key").display(),
                dir.join("missing-ca.pem").display()
            ),
            ":3: admin_cafile: ",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let conf = dir.join(format!("bad{i}.conf"));
        std::fs::write(&conf, text).expect("conf");
        let out = Command::new(Broker::bin())
            .args(["check", "-c"])
            .arg(&conf)
            .output()
            .expect("run check");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(
            err.contains(&format!("bad{i}.conf{want}")),
            "{text}: want {want:?} in {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Threads of process `pid` whose name starts with `prefix`, from /proc.
fn threads_named(pid: u32, prefix: &str) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("proc tasks");
    tasks
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|n| n.starts_with(prefix))
        })
        .count()
}

/// Read from `s` until the server closes it (or `within` passes): what it sent.
fn until_closed(s: &mut TcpStream, within: Duration) -> Option<String> {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(String::from_utf8_lossy(&got).into_owned())
            }
            Err(_) => return None,
        }
    }
}

/// A slowloris on the admin port (many connections, each sending a request head a few
/// bytes at a time) holds no more threads than the fixed pool; connections past the
/// pool and its queue are turned away at once, the slow ones are cut at their deadline,
/// and the listener answers again afterwards. An oversized head is refused with 431.
#[test]
fn admin_listener_bounds_threads_and_request_size_under_a_slowloris() {
    use shardmq::admin::server::{CONNECTION_DEADLINE, HEAD_BYTES_MAX, QUEUED_MAX, WORKERS};
    let b = Broker::with_shards(1, &["--admin", "127.0.0.1:0"]);
    let admin = b.admin_addr().expect("admin address printed");
    assert_eq!(get(admin, "/healthz", None).0, 200);
    // The admin listener's threads: its acceptor ("admin") and its pool ("admin-N").
    // (The process's whole count also has threads started lazily, such as jemalloc's
    // background purgers, which made a before/after figure flaky.)
    // A spawned thread names itself once it runs, so a pool thread still starting shows
    // under the process's name for a moment: wait (bounded) for all of them.
    let named_by = Instant::now() + WAIT;
    let mut before = threads_named(b.pid(), "admin");
    while before < WORKERS + 1 && Instant::now() < named_by {
        std::thread::sleep(Duration::from_millis(20));
        before = threads_named(b.pid(), "admin");
    }
    assert_eq!(before, WORKERS + 1, "the acceptor and the pool");
    let slow_n = WORKERS + QUEUED_MAX + 20;
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..slow_n)
        .map(|_| {
            let mut s = TcpStream::connect_timeout(&admin, WAIT).expect("connect");
            s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
                .expect("first bytes");
            s
        })
        .collect();
    // Drip a byte on each for a while: a slowloris keeps every connection busy.
    for _ in 0..3 {
        for s in &mut slow {
            let _ = s.write_all(b"a");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    // The fixed pool: no thread per connection.
    let during = threads_named(b.pid(), "admin");
    assert_eq!(
        during, before,
        "admin threads with {slow_n} slow connections, {before} before"
    );
    // Still open now (within the deadline): at most the pool and its queue.
    let mut open = 0;
    for s in &mut slow {
        s.set_nonblocking(true).expect("nonblocking");
        let r = s.read(&mut [0u8; 64]);
        if matches!(r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
            open += 1;
        }
        s.set_nonblocking(false).expect("blocking");
    }
    assert!(
        started.elapsed() < CONNECTION_DEADLINE,
        "the drip took too long to judge"
    );
    assert!(
        (WORKERS..=WORKERS + QUEUED_MAX).contains(&open),
        "{open} of {slow_n} connections held open"
    );
    // Every one is closed by the server by its deadline (counted from its accept).
    for s in &mut slow {
        let left = (CONNECTION_DEADLINE + WAIT).saturating_sub(started.elapsed());
        let got = until_closed(s, left.max(Duration::from_millis(1)));
        assert!(got.is_some(), "a slow connection outlived its deadline");
    }
    assert_eq!(get(admin, "/healthz", None).0, 200, "serves again");
    let (_, text) = get(admin, "/metrics", None);
    let figure = |line: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line} in /metrics"))
    };
    let busy = figure("shardmq_admin_connections_dropped_total{reason=\"busy\"}");
    let deadline = figure("shardmq_admin_connections_dropped_total{reason=\"deadline\"}");
    assert!(
        busy >= (slow_n - WORKERS - QUEUED_MAX) as u64,
        "busy {busy}"
    );
    assert_eq!(
        busy + deadline,
        slow_n as u64,
        "each slow connection counted once"
    );
    assert!(figure("shardmq_admin_requests_total") >= 2);
    let mut big = TcpStream::connect_timeout(&admin, WAIT).expect("connect");
    let mut head = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
    head.resize(HEAD_BYTES_MAX, b'a');
    big.write_all(&head).expect("send the head");
    let got = until_closed(&mut big, WAIT).expect("closed");
    assert!(got.starts_with("HTTP/1.1 431"), "{got}");
}

/// The store's figures after QoS 1 traffic, read with Prometheus' own text parser
/// (`prometheus_client`): counts grow, histograms are well formed, per shard.
#[test]
fn store_figures_parse_with_prometheus_client() {
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/admin/store_metrics_check.py"
        ))
        .arg(Broker::bin())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
