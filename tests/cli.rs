//! The command line: help, argument validation, signals, bind failures.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

/// Run the binary with `args` to completion (bounded: it is killed after 10 s).
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(Broker::bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shardmq");
    if wait_exit(&mut child, Duration::from_secs(10)).is_none() {
        let _ = child.kill();
    }
    child.wait_with_output().expect("output")
}

#[test]
fn help_lists_the_flags() {
    let out = run(&["--help"]);
    assert!(out.status.success(), "--help exit status {:?}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--bind",
        "--shards",
        "--no-pin",
        "--connect-timeout",
        "--max-inflight-messages",
        "--max-queued-messages",
        "--max-write-buffer",
        "--verbose",
        "--admin",
    ] {
        assert!(
            text.contains(flag),
            "--help does not mention {flag}:\n{text}"
        );
    }
}

#[test]
fn version_is_printed() {
    let out = run(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(env!("CARGO_PKG_VERSION")),
        "--version printed {text:?}"
    );
}

#[test]
fn zero_shards_is_refused_naming_the_flag() {
    let out = run(&["--bind", "127.0.0.1:0", "--shards", "0"]);
    assert!(!out.status.success(), "--shards 0 must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--shards"),
        "error must name --shards: {err:?}"
    );
}

#[test]
fn bad_values_are_refused() {
    for args in [
        &["--shards", "65"][..],
        &["--shards", "many"],
        &["--bind", "not-an-address"],
        &["--max-inflight-messages", "0"],
        &["--no-such-flag"],
    ] {
        let mut all = vec!["--bind", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let out = run(&all);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(!out.stderr.is_empty(), "{args:?}: no error message");
    }
}

#[test]
fn sigterm_exits_cleanly() {
    let mut b = Broker::start(&["--shards", "2"]);
    // With a connected client and a session, still a clean exit.
    let mut c = RawClient::clean(b.addr(), "sigterm-client");
    c.subscribe("x/#", 1);
    let st = b
        .terminate(Duration::from_secs(5))
        .expect("broker still running 5 s after SIGTERM");
    assert!(st.success(), "exit status after SIGTERM: {st:?}");
    c.wait_closed(WAIT);
}

#[test]
fn sigterm_right_after_listening_exits_cleanly() {
    // `listening ADDR` tells a supervisor the broker is up; a SIGTERM from then on must be
    // a clean shutdown, not the default action of the signal.
    for round in 0..5 {
        let mut b = Broker::start(&["--shards", "1"]);
        let st = b
            .terminate(Duration::from_secs(5))
            .expect("broker still running 5 s after SIGTERM");
        assert!(
            st.success(),
            "round {round}: SIGTERM just after `listening` gave {st:?}"
        );
    }
}

#[test]
fn sigint_exits_cleanly() {
    let mut b = Broker::start(&["--shards", "1"]);
    signal(b.pid(), libc::SIGINT);
    let st = b
        .wait(Duration::from_secs(5))
        .expect("broker still running 5 s after SIGINT");
    assert!(st.success(), "exit status after SIGINT: {st:?}");
}

#[test]
fn bind_to_an_address_in_use_fails_clearly() {
    let b = Broker::start(&["--shards", "1"]);
    let addr = b.addr().to_string();
    let out = run(&[
        "--bind",
        &addr,
        "--shards",
        "1",
        "--no-pin",
        "--no-persistence",
    ]);
    assert!(!out.status.success(), "second broker on {addr} must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr), "error should name {addr}: {err:?}");
    assert!(
        err.to_lowercase().contains("in use"),
        "error should say the address is in use: {err:?}"
    );
    // The first broker is unaffected.
    RawClient::clean(b.addr(), "still-there").ping();
}

/// `cluster-forget` refuses a file without `cluster_*` lines (2) and a node name that is
/// not one (1, before any NATS connection), and fails (1) within its bound when no NATS
/// server answers; it removes nothing in each case.
#[test]
fn cluster_forget_refuses_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.conf");
    std::fs::write(&plain, "listener 1883\n").unwrap();
    let out = run(&["cluster-forget", "-c", plain.to_str().unwrap(), "B"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no cluster_* lines"));
    // A port nothing listens on: bound, then freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.path().join("cluster.conf");
    std::fs::write(
        &conf,
        format!("cluster_name c\ncluster_node A\ncluster_nats nats://127.0.0.1:{port}\n"),
    )
    .unwrap();
    let conf = conf.to_str().unwrap();
    let out = run(&["cluster-forget", "-c", conf, "B.>"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a node name"));
    let out = run(&["cluster-forget", "-c", conf, "B"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to NATS"), "{err}");
    assert!(out.stdout.is_empty(), "nothing reported done");
}
