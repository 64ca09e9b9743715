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
