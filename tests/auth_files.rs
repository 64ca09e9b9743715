//! Mosquitto password and ACL files enforced by the broker, black box over real sockets:
//! RELIABILITY rows A1–A9 and R11, the §4 CVE-class rows about access (wildcard
//! identities, Will bypass, retained after revoke, per-listener ACL, prefix match, `$`
//! topics, an empty ACL), reload by SIGHUP, and a storm of wrong passwords beside a
//! working client. Password files are made by Debian's `mosquitto_passwd` when it is
//! installed (`.ci/run` installs it), else by `shardmq passwd`.

mod common;
#[path = "v5/mod.rs"]
mod v5;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Broker, ConnectOpts, RawClient, WAIT};
use shardmq::protocol::Properties;
use v5::*;

const SHARDMQ: &str = env!("CARGO_BIN_EXE_shardmq");

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shardmq-auth-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// `mosquitto_passwd`, if installed (PATH or the sbin directories).
fn mosquitto_passwd() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let sbin = ["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(sbin)
        .map(|d| d.join("mosquitto_passwd"))
        .find(|p| p.exists())
}

/// A password file for `users`, made by `mosquitto_passwd -b` (else `shardmq passwd -b`).
fn password_file(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let file = dir.join("passwd");
    let _ = std::fs::remove_file(&file);
    let tool = mosquitto_passwd();
    for (i, (user, pw)) in users.iter().enumerate() {
        let mut cmd = match &tool {
            Some(t) => Command::new(t),
            None => {
                let mut c = Command::new(SHARDMQ);
                c.arg("passwd");
                c
            }
        };
        if i == 0 {
            cmd.arg("-c");
        }
        let out = cmd
            .arg("-b")
            .arg(&file)
            .args([user, pw])
            .output()
            .expect("password tool runs");
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    file
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).expect("write");
    path.to_path_buf()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// 3.1.1 options for `id`.
fn v311(id: &str) -> ConnectOpts<'_> {
    ConnectOpts::v311(id)
}

/// A 3.1.1 login; asserts the CONNACK code and returns the client.
fn login311(addr: SocketAddr, id: &str, user: &str, pw: &str, want: u8) -> RawClient {
    let (c, code) = RawClient::handshake_login(addr, &v311(id), Some(user), Some(pw.as_bytes()));
    assert_eq!(code, want, "[{id}] CONNACK for user {user}");
    c
}

/// A 5.0 login; asserts the CONNACK reason and returns the client.
fn login5(addr: SocketAddr, id: &str, user: &str, pw: &str, want: u8) -> Client5 {
    let (c, ack) = Client5::handshake(addr, &Conn5::new(id).login(user, pw));
    assert_eq!(ack.reason, want, "[{id}] CONNACK for user {user}: {ack:?}");
    c
}

/// A refused 5.0 client: nothing but the close follows its CONNACK.
fn closed5(mut c: Client5) {
    let after = c.wait_closed(WAIT);
    assert!(after.is_empty(), "[{}] after a refusal: {after:?}", c.id);
}

const USERS: &[(&str, &str)] = &[("alice", "wonder"), ("bob", "builder"), ("eve", "spy")];

/// A broker with `USERS` and the ACL `acl` (anonymous clients refused).
fn broker_with_acl(dir: &Path, acl: &str, shards: usize) -> (Broker, PathBuf, PathBuf) {
    let pw = password_file(dir, USERS);
    let acl = write(&dir.join("acl"), acl);
    let b = Broker::with_shards(
        shards,
        &[
            "--password-file",
            s(&pw),
            "--acl-file",
            s(&acl),
            "--allow-anonymous",
            "false",
        ],
    );
    (b, pw, acl)
}

#[test]
fn passwords_admit_and_refuse_with_mosquittos_codes() {
    let dir = scratch("login");
    let pw = password_file(&dir, USERS);
    for shards in [1, 2] {
        let b = Broker::with_shards(shards, &["--password-file", s(&pw)]);
        let a = b.addr();
        login311(a, "a1", "alice", "wonder", 0).disconnect();
        login5(a, "a2", "alice", "wonder", 0).disconnect();
        // Wrong password: 5 (3.x, as Mosquitto answers) / 0x86, then closed.
        login311(a, "a3", "alice", "Wonder", 5).expect_closed(WAIT);
        closed5(login5(a, "a4", "alice", "", 0x86));
        // Unknown user: refused the same way.
        login311(a, "a5", "mallory", "wonder", 5).expect_closed(WAIT);
        // allow_anonymous defaults to false with a password file.
        let (mut c, code) = RawClient::handshake(a, &v311("anon")).into_code();
        assert_eq!(code, 5, "anonymous refused");
        c.expect_closed(WAIT);
        let (c5, ack) = Client5::handshake(a, &Conn5::new("anon5"));
        assert_eq!(ack.reason, 0x87, "anonymous refused (5.0)");
        closed5(c5);
    }
    // allow_anonymous true: anonymous in, but a username missing from the file is refused.
    let b = Broker::start(&["--password-file", s(&pw), "--allow-anonymous", "true"]);
    RawClient::clean(b.addr(), "anon").disconnect();
    login311(b.addr(), "m", "mallory", "x", 5).expect_closed(WAIT);
    closed5(login5(b.addr(), "m5", "mallory", "x", 0x86));
}

/// (client, code) of a plain handshake, for anonymous tests.
trait IntoCode {
    fn into_code(self) -> (RawClient, u8);
}

impl IntoCode for (RawClient, bool, u8) {
    fn into_code(self) -> (RawClient, u8) {
        (self.0, self.2)
    }
}

/// A1: rights on `a/+` only: wide subscriptions are granted but deliver only what may be
/// read; a publish outside the rights gets 0x87 (5.0).
#[test]
fn a1_wide_subscriptions_deliver_only_readable_topics() {
    let dir = scratch("a1");
    let (b, _, _) = broker_with_acl(
        &dir,
        "user alice\ntopic readwrite a/+\nuser bob\ntopic write #\n",
        2,
    );
    let a = b.addr();
    let mut alice = login5(a, "alice-1", "alice", "wonder", 0);
    let codes = alice.subscribe_opts(
        &[
            ("#", opts(1, false, false, 0)),
            ("a/#", opts(1, false, false, 0)),
            ("+/x", opts(1, false, false, 0)),
            ("b/#", opts(1, false, false, 0)),
        ],
        None,
    );
    assert_eq!(codes, vec![1, 1, 1, 0x87], "b/# can never be read");
    assert_eq!(alice.publish("a/b/c", b"no", 1, false), 0x87);
    assert_eq!(alice.publish("a/b", b"mine", 1, false), 0);
    let m = alice.expect_publish_acked(WAIT);
    assert_eq!(m.topic, "a/b");
    let mut bob = login5(a, "bob-1", "bob", "builder", 0);
    bob.publish("b/x", b"secret", 1, false);
    bob.publish("a/b/c", b"deep", 1, false);
    bob.publish("a/x", b"ok", 1, false);
    let m = alice.expect_publish_acked(WAIT);
    assert_eq!((m.topic.as_str(), m.text().as_str()), ("a/x", "ok"));
    alice.expect_nothing(common::QUIET);
}

/// A2: `#` does not reach `$` topics; publishing under `$SYS` is refused; `$SYS` is read
/// only with a `$SYS` rule.
#[test]
fn a2_dollar_topics_need_dollar_rules() {
    let dir = scratch("a2");
    let pw = password_file(&dir, USERS);
    let acl = write(
        &dir.join("acl"),
        "user alice\ntopic readwrite #\nuser eve\ntopic read $SYS/#\n",
    );
    let b = Broker::start(&[
        "--password-file",
        s(&pw),
        "--acl-file",
        s(&acl),
        "--sys-interval",
        "1",
    ]);
    let mut alice = login5(b.addr(), "alice-2", "alice", "wonder", 0);
    let codes = alice.subscribe_opts(
        &[
            ("#", opts(0, false, false, 0)),
            ("$SYS/#", opts(0, false, false, 0)),
        ],
        None,
    );
    assert_eq!(codes, vec![0, 0x87]);
    assert_eq!(alice.publish("$SYS/broker/fake", b"x", 1, false), 0x87);
    let mut eve = login5(b.addr(), "eve-2", "eve", "spy", 0);
    eve.subscribe("$SYS/#", 0);
    let m = eve.expect_publish(Duration::from_secs(5));
    assert!(m.topic.starts_with("$SYS/"), "{m:?}");
    alice.expect_nothing(common::QUIET);
}

/// A3: a Will on a forbidden topic refuses the CONNECT; a Will from a failed login and a
/// Will whose right was revoked (SIGHUP) before the connection ended are never published.
#[test]
fn a3_wills_never_bypass_the_acl() {
    let dir = scratch("a3");
    let acl_text = "user alice\ntopic write w/#\nuser bob\ntopic read #\n";
    let (b, _, acl) = broker_with_acl(&dir, acl_text, 2);
    let a = b.addr();
    let mut bob = login311(a, "bob-3", "bob", "builder", 0);
    bob.subscribe("#", 0);
    let will = |id: &'static str, topic: &'static str| ConnectOpts {
        will: Some((topic, b"will".as_slice(), 0, false)),
        ..ConnectOpts::v311(id)
    };
    let (mut c, code) = RawClient::handshake_login(
        a,
        &will("alice-3a", "secret/w"),
        Some("alice"),
        Some(b"wonder"),
    );
    assert_eq!(code, 5, "Will topic not writable");
    c.expect_closed(WAIT);
    let (mut c, code) =
        RawClient::handshake_login(a, &will("alice-3b", "w/1"), Some("alice"), Some(b"bad"));
    assert_eq!(code, 5);
    c.expect_closed(WAIT);
    let (c, code) =
        RawClient::handshake_login(a, &will("alice-3c", "w/2"), Some("alice"), Some(b"wonder"));
    assert_eq!(code, 0);
    write(
        &acl,
        "user alice\ntopic write x/#\nuser bob\ntopic read #\n",
    );
    common::signal(b.pid(), libc::SIGHUP);
    // The reload is in force once a client refused by the new rules is refused.
    wait_until(|| {
        let mut probe = login311(a, "alice-3p", "alice", "wonder", 0);
        probe.send_publish("w/probe", b"p", 0, false, false, None);
        probe.ping();
        probe.disconnect();
        bob.try_packet(Duration::from_millis(200)).is_err()
    });
    c.drop_tcp();
    bob.expect_nothing(common::QUIET);
    let mut alice = login311(a, "alice-3d", "alice", "wonder", 0);
    alice.publish("x/ok", b"fine", 0, false);
    let m = bob.expect_publish(WAIT);
    assert_eq!(m.topic, "x/ok", "no Will came before it");
}

/// Poll `f` (each call bounded by its own timeouts) until it holds, at most 10 s.
fn wait_until(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "condition not reached within 10 s"
        );
    }
}

/// A4: a retained message outside the reader's rights is not delivered at subscribe time.
#[test]
fn a4_retained_messages_follow_the_readers_rights() {
    let dir = scratch("a4");
    let (b, _, acl) = broker_with_acl(
        &dir,
        "user alice\ntopic read r/#\ntopic deny r/secret\nuser bob\ntopic write r/#\n",
        2,
    );
    let a = b.addr();
    let mut bob = login5(a, "bob-4", "bob", "builder", 0);
    bob.publish("r/open", b"o", 1, true);
    bob.publish("r/secret", b"s", 1, true);
    let mut alice = login5(a, "alice-4", "alice", "wonder", 0);
    alice.subscribe("r/#", 1);
    let m = alice.expect_publish_acked(WAIT);
    assert_eq!(m.topic, "r/open");
    alice.expect_nothing(common::QUIET);
    assert_eq!(
        alice.subscribe_opts(&[("r/secret", opts(1, false, false, 0))], None),
        vec![0x87]
    );
    // The publisher loses its right (SIGHUP): its retained message is no longer given out.
    write(
        &acl,
        "user alice\ntopic read r/#\ntopic deny r/secret\nuser bob\ntopic write q/#\n",
    );
    common::signal(b.pid(), libc::SIGHUP);
    wait_until(|| bob.publish("r/probe", b"p", 1, false) == 0x87);
    let mut alice = login5(a, "alice-4b", "alice", "wonder", 0);
    alice.subscribe("r/#", 1);
    alice.expect_nothing(common::QUIET);
}

/// A4 across a restart: a retained message's publisher is kept in the store, so after a
/// `kill -9` and a restart under an ACL that revoked bob's right, bob's retained message is
/// no longer given out, while eve's (still allowed) is.
#[test]
fn a4_the_retained_publisher_check_survives_a_restart() {
    let dir = scratch("a4-restart");
    let pw = password_file(&dir, USERS);
    let acl = write(
        &dir.join("acl"),
        "user alice\ntopic read r/#\nuser bob\ntopic write r/#\nuser eve\ntopic write r/#\n",
    );
    let data = dir.join("data");
    let args = [
        "--password-file",
        s(&pw),
        "--acl-file",
        s(&acl),
        "--allow-anonymous",
        "false",
        "--data-dir",
        s(&data),
    ];
    let mut b = Broker::with_shards(2, &args);
    let mut bob = login5(b.addr(), "bob-ar", "bob", "builder", 0);
    // 0x10 (no subscribers) is a success: the message is acknowledged, so durable.
    assert!(bob.publish("r/bob", b"b", 1, true) < 0x80);
    let mut eve = login5(b.addr(), "eve-ar", "eve", "spy", 0);
    assert!(eve.publish("r/eve", b"e", 1, true) < 0x80);
    common::signal(b.pid(), libc::SIGKILL);
    assert!(b.wait(WAIT).is_some(), "shardmq dies");
    drop((bob, eve, b));
    write(
        &acl,
        "user alice\ntopic read r/#\nuser bob\ntopic write q/#\nuser eve\ntopic write r/#\n",
    );
    let b = Broker::with_shards(2, &args);
    let mut alice = login5(b.addr(), "alice-ar", "alice", "wonder", 0);
    alice.subscribe("r/#", 1);
    let m = alice.expect_publish_acked(WAIT);
    assert_eq!((m.topic.as_str(), m.retain), ("r/eve", true));
    alice.expect_nothing(common::QUIET);
}

/// `check_retain_source false` (Mosquitto's default): a retained message stays available
/// to readers after its publisher lost the right to publish it.
#[test]
fn check_retain_source_false_keeps_retained_after_the_publisher_lost_its_right() {
    let dir = scratch("retain-source");
    let pw = password_file(&dir, USERS);
    let acl = write(
        &dir.join("acl"),
        "user alice\ntopic read r/#\nuser bob\ntopic write r/#\n",
    );
    let conf = write(&dir.join("c.conf"), "check_retain_source false\n");
    let b = Broker::with_shards(
        2,
        &[
            "-c",
            s(&conf),
            "--password-file",
            s(&pw),
            "--acl-file",
            s(&acl),
            "--allow-anonymous",
            "false",
        ],
    );
    let a = b.addr();
    let mut bob = login5(a, "bob-rs", "bob", "builder", 0);
    bob.publish("r/open", b"o", 1, true);
    write(
        &acl,
        "user alice\ntopic read r/#\nuser bob\ntopic write q/#\n",
    );
    common::signal(b.pid(), libc::SIGHUP);
    wait_until(|| bob.publish("r/probe", b"p", 1, false) == 0x87);
    let mut alice = login5(a, "alice-rs", "alice", "wonder", 0);
    alice.subscribe("r/#", 1);
    let m = alice.expect_publish_acked(WAIT);
    assert_eq!((m.topic.as_str(), m.retain), ("r/open", true));
}

/// A5: shared subscriptions are checked on their filter; malformed ones refused; a later
/// publish still works.
#[test]
fn a5_shared_subscriptions_are_checked() {
    let dir = scratch("a5");
    let (b, _, _) = broker_with_acl(
        &dir,
        "user alice\ntopic readwrite open/#\nuser bob\ntopic write #\n",
        2,
    );
    let a = b.addr();
    let mut alice = login5(a, "alice-5", "alice", "wonder", 0);
    let codes = alice.subscribe_opts(
        &[
            ("$share/g/secret", opts(1, false, false, 0)),
            ("$share/ab", opts(1, false, false, 0)),
            ("$share//t", opts(1, false, false, 0)),
            ("$share/g", opts(1, false, false, 0)),
            ("$share/g/open/#", opts(1, false, false, 0)),
        ],
        None,
    );
    assert_eq!(codes, vec![0x87, 0x8F, 0x8F, 0x8F, 1]);
    let mut bob = login5(a, "bob-5", "bob", "builder", 0);
    bob.publish("secret", b"s", 1, false);
    bob.publish("open/1", b"o", 1, false);
    let m = alice.expect_publish_acked(WAIT);
    assert_eq!(m.topic, "open/1");
}

/// A6: the ACL is checked on the topic a Topic Alias resolves to, also after re-binding.
#[test]
fn a6_topic_aliases_resolve_before_the_check() {
    let dir = scratch("a6");
    let (b, _, _) = broker_with_acl(
        &dir,
        "user alice\ntopic readwrite ok/#\nuser bob\ntopic read #\n",
        1,
    );
    let a = b.addr();
    let mut bob = login5(a, "bob-6", "bob", "builder", 0);
    bob.subscribe("#", 1);
    let mut alice = login5(a, "alice-6", "alice", "wonder", 0);
    let alias = |n| Properties {
        topic_alias: Some(n),
        ..Properties::default()
    };
    assert_eq!(alice.publish_props("ok/1", b"1", 1, false, alias(1)), 0);
    assert_eq!(alice.publish_props("", b"2", 1, false, alias(1)), 0);
    assert_eq!(
        alice.publish_props("secret", b"3", 1, false, alias(1)),
        0x87
    );
    assert_eq!(alice.publish_props("", b"4", 1, false, alias(1)), 0x87);
    let got: Vec<String> = (0..2)
        .map(|_| bob.expect_publish_acked(WAIT).text())
        .collect();
    assert_eq!(got, ["1", "2"]);
    sentinel(&mut alice, &mut bob, "ok/end");
}

/// A7 (CVE-2017-7650): a username or client id with `+`, `#` or `/` gains no wildcard
/// rights through `%u` / `%c` patterns.
#[test]
fn a7_wildcard_identities_gain_nothing_from_patterns() {
    let dir = scratch("a7");
    let acl = write(
        &dir.join("acl"),
        "pattern readwrite u/%u/#\npattern readwrite c/%c/#\nuser watch\ntopic read #\n",
    );
    // No password file: usernames are taken as given (allow_anonymous decides).
    let b = Broker::start(&["--acl-file", s(&acl), "--allow-anonymous", "true"]);
    let a = b.addr();
    let (mut watch, code) = RawClient::handshake_login(a, &v311("watch"), Some("watch"), None);
    assert_eq!(code, 0);
    watch.subscribe("#", 0);
    for (id, user) in [
        ("plain", "#"),
        ("plain2", "+"),
        ("plain3", "x/y"),
        ("+", "n"),
        ("#", "n2"),
    ] {
        let (mut c, code) = RawClient::handshake_login(a, &v311(id), Some(user), None);
        assert_eq!(code, 0);
        let codes = c.subscribe_many(&[("u/alice/#", 0), ("c/alice/#", 0)]);
        assert_eq!(codes, vec![0x80, 0x80], "id {id} user {user}");
        c.publish("u/alice/x", b"forged", 0, false);
        c.publish("c/alice/x", b"forged", 0, false);
        c.ping();
    }
    let (mut alice, _) = RawClient::handshake_login(a, &v311("alice"), Some("alice"), None);
    alice.publish("u/alice/x", b"own", 0, false);
    let m = watch.expect_publish(WAIT);
    assert_eq!((m.topic.as_str(), m.text().as_str()), ("u/alice/x", "own"));
}

/// A8 + reload: revoking a read right stops deliveries to a subscribed session at once;
/// a user removed from the password file cannot connect again; nobody is disconnected.
#[test]
fn a8_reload_revokes_reads_and_users_without_disconnecting() {
    let dir = scratch("a8");
    let (b, pw, acl) = broker_with_acl(
        &dir,
        "user alice\ntopic read a/#\nuser bob\ntopic write #\ntopic read #\n",
        2,
    );
    let a = b.addr();
    let mut alice = login311(a, "alice-8", "alice", "wonder", 0);
    alice.subscribe("a/#", 1);
    let mut bob = login311(a, "bob-8", "bob", "builder", 0);
    bob.publish("a/1", b"before", 1, false);
    assert_eq!(alice.expect_publish_acked(WAIT).text(), "before");
    write(
        &acl,
        "user alice\ntopic read z/#\nuser bob\ntopic write #\ntopic read #\n",
    );
    password_file(&dir, &[("alice", "wonder")]);
    assert!(pw.exists());
    common::signal(b.pid(), libc::SIGHUP);
    wait_until(|| {
        let (c, code) =
            RawClient::handshake_login(a, &v311("bob-8p"), Some("bob"), Some(b"builder"));
        if code == 0 {
            c.disconnect();
        }
        code == 5
    });
    bob.publish("a/2", b"after", 1, false);
    bob.ping();
    alice.expect_nothing(common::QUIET);
    alice.ping();
    bob.ping();
    login311(a, "alice-8b", "alice", "wonder", 0).disconnect();
}

/// A9: a literal rule matches only itself, never a prefix.
#[test]
fn a9_literal_rules_are_not_prefixes() {
    let dir = scratch("a9");
    let (b, _, _) = broker_with_acl(&dir, "user alice\ntopic readwrite allowed\n", 1);
    let mut alice = login5(b.addr(), "alice-9", "alice", "wonder", 0);
    assert_eq!(alice.publish("allowed/secret", b"x", 1, false), 0x87);
    assert_eq!(
        alice.subscribe_opts(&[("allowed/#", opts(0, false, false, 0))], None),
        vec![0]
    );
    assert_eq!(alice.publish("allowed", b"y", 1, false), 0);
    let m = alice.expect_publish_acked(WAIT);
    assert_eq!(m.topic, "allowed");
}

/// R11: a client id held by one user is refused to another; the session stays with its
/// owner.
#[test]
fn r11_client_id_of_another_user_is_refused() {
    let dir = scratch("r11");
    let (b, _, _) = broker_with_acl(
        &dir,
        "user alice\ntopic readwrite #\nuser bob\ntopic readwrite #\n",
        2,
    );
    let a = b.addr();
    let o = ConnectOpts {
        clean: false,
        ..ConnectOpts::v311("device-1")
    };
    let (mut alice, code) = RawClient::handshake_login(a, &o, Some("alice"), Some(b"wonder"));
    assert_eq!(code, 0);
    alice.subscribe("t/#", 1);
    let (mut bob, code) = RawClient::handshake_login(a, &o, Some("bob"), Some(b"builder"));
    assert_eq!(code, 5, "another user's client id");
    bob.expect_closed(WAIT);
    alice.publish("t/1", b"still mine", 1, false);
    assert_eq!(alice.expect_publish_acked(WAIT).text(), "still mine");
    alice.drop_tcp();
    let (mut bob, code) = RawClient::handshake_login(a, &o, Some("bob"), Some(b"builder"));
    assert_eq!(code, 5, "also while the owner is offline");
    bob.expect_closed(WAIT);
    let (_alice, code) = RawClient::handshake_login(a, &o, Some("alice"), Some(b"wonder"));
    assert_eq!(code, 0);
}

/// §4: an empty ACL file denies everything (CVE-2018-12550).
#[test]
fn an_empty_acl_denies_everything() {
    let dir = scratch("empty");
    let (b, _, _) = broker_with_acl(&dir, "", 1);
    let mut alice = login311(b.addr(), "alice-e", "alice", "wonder", 0);
    assert_eq!(
        alice.subscribe_many(&[("#", 0), ("a", 1)]),
        vec![0x80, 0x80]
    );
    alice.publish("a", b"x", 1, false);
    alice.ping();
}

/// paho's 3.1.1 test suite: subscribing to `test/nosubscribe` must fail with 0x80.
#[test]
fn paho_subscribe_failure_case() {
    let dir = scratch("paho");
    let acl = write(
        &dir.join("acl"),
        "topic readwrite #\ntopic deny test/nosubscribe\n",
    );
    let b = Broker::start(&["--acl-file", s(&acl), "--allow-anonymous", "true"]);
    let mut c = RawClient::clean(b.addr(), "paho");
    assert_eq!(c.subscribe_many(&[("test/nosubscribe", 2)]), vec![0x80]);
    assert_eq!(c.subscribe_many(&[("test/other", 2)]), vec![2]);
}

/// Start a broker on a configuration file whose listeners use port 0; returns the child
/// and the bound addresses in listener order.
fn start_conf(conf: &Path, listeners: usize) -> (ChildGuard, Vec<SocketAddr>) {
    let (guard, addrs, _) = start_conf_lines(conf, listeners);
    (guard, addrs)
}

/// As [`start_conf`], also returning the rest of the broker's output lines (a reload
/// prints the listeners it opens).
fn start_conf_lines(
    conf: &Path,
    listeners: usize,
) -> (
    ChildGuard,
    Vec<SocketAddr>,
    std::sync::mpsc::Receiver<String>,
) {
    let mut child = Command::new(SHARDMQ)
        // No store: brokers of parallel tests would otherwise share the default data
        // directory, and the second one exits on its lock.
        .args([
            "-c",
            s(conf),
            "--print-bound",
            "--no-pin",
            "--admin",
            "off",
            "--no-persistence",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn shardmq");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let guard = ChildGuard(child);
    let mut addrs = Vec::new();
    while addrs.len() < listeners {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("listening line");
        if let Some(a) = line.strip_prefix("listening ") {
            addrs.push(a.trim().parse().expect("address"));
        }
    }
    (guard, addrs, rx)
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// §4 (CVE-2018-20145): with `per_listener_settings true`, each listener's own password
/// file, ACL and `allow_anonymous` are enforced.
#[test]
fn per_listener_settings_enforce_each_listeners_files() {
    let dir = scratch("per-listener");
    let pw = password_file(&dir, USERS);
    let acl_a = write(&dir.join("acl-a"), "user alice\ntopic readwrite a/#\n");
    let acl_b = write(&dir.join("acl-b"), "topic readwrite b/#\n");
    let conf = write(
        &dir.join("m.conf"),
        &format!(
            "per_listener_settings true\nlistener 0 127.0.0.1\npassword_file {}\nacl_file {}\nallow_anonymous false\nlistener 0 127.0.0.1\nacl_file {}\nallow_anonymous true\n",
            s(&pw),
            s(&acl_a),
            s(&acl_b)
        ),
    );
    let (_b, addrs) = start_conf(&conf, 2);
    let mut a = login311(addrs[0], "alice-pl", "alice", "wonder", 0);
    assert_eq!(a.subscribe_many(&[("a/#", 0), ("b/#", 0)]), vec![0, 0x80]);
    let (mut anon, code) = RawClient::handshake(addrs[0], &v311("anon-a")).into_code();
    assert_eq!(code, 5, "listener A refuses anonymous clients");
    anon.expect_closed(WAIT);
    let mut anon = RawClient::clean(addrs[1], "anon-b");
    assert_eq!(
        anon.subscribe_many(&[("a/#", 0), ("b/#", 0)]),
        vec![0x80, 0]
    );
    anon.publish("a/1", b"x", 0, false);
    anon.publish("b/1", b"y", 0, false);
    assert_eq!(anon.expect_publish(WAIT).topic, "b/1");
    a.expect_nothing(common::QUIET);
}

/// Per-listener settings follow the listener, not its position: a reload that swaps the
/// two `listener` blocks leaves every connected client under its own listener's ACL.
#[test]
fn per_listener_settings_survive_a_reload_that_reorders_listeners() {
    let dir = scratch("reorder");
    let acl_a = write(&dir.join("acl-a"), "topic readwrite a/#\n");
    let acl_b = write(&dir.join("acl-b"), "topic readwrite b/#\n");
    let block = |ip: &str, acl: &Path| {
        format!(
            "listener 0 {ip}\nacl_file {}\nallow_anonymous true\n",
            s(acl)
        )
    };
    let head = "per_listener_settings true\nshards 1\n";
    let conf = write(
        &dir.join("r.conf"),
        &format!(
            "{head}{}{}",
            block("127.0.0.1", &acl_a),
            block("127.0.0.2", &acl_b)
        ),
    );
    let (b, addrs, lines) = start_conf_lines(&conf, 2);
    let mut x = RawClient::clean(addrs[0], "x-on-a");
    assert_eq!(x.subscribe_many(&[("a/#", 0)]), vec![0]);
    let mut y = RawClient::clean(addrs[1], "y-on-b");
    assert_eq!(y.subscribe_many(&[("#", 0)]), vec![0]);
    // Swapped, and a third listener whose first CONNACK shows the reload is applied.
    write(
        &conf,
        &format!(
            "{head}{}{}{}",
            block("127.0.0.2", &acl_b),
            block("127.0.0.1", &acl_a),
            block("127.0.0.3", &acl_a)
        ),
    );
    common::signal(b.0.id(), libc::SIGHUP);
    let third: SocketAddr = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("the reload opens the third listener");
        if let Some(a) = line.strip_prefix("listening ") {
            break a.trim().parse().expect("address");
        }
    };
    RawClient::clean(third, "probe").disconnect();
    x.publish("a/x", b"from x", 0, false);
    assert_eq!(
        x.expect_publish(WAIT).topic,
        "a/x",
        "x keeps listener A's rights"
    );
    y.publish("b/y", b"from y", 0, false);
    assert_eq!(
        y.expect_publish(WAIT).topic,
        "b/y",
        "y keeps listener B's rights"
    );
    y.expect_nothing(common::QUIET);
    let mut x2 = RawClient::clean(addrs[0], "x2-on-a");
    x2.publish("a/z", b"new client on A", 0, false);
    assert_eq!(x.expect_publish(WAIT).topic, "a/z");
    y.expect_nothing(common::QUIET);
}

/// 1,000 wrong passwords (checked against a `mosquitto_passwd` file) while a canary QoS 1 client
/// keeps publishing to itself: its round trips stay short (the hashing is off the loop).
#[test]
fn a_storm_of_wrong_passwords_leaves_others_served() {
    let dir = scratch("storm");
    let file = password_file(&dir, USERS);
    let b = Broker::with_shards(
        2,
        &["--password-file", s(&file), "--connect-timeout", "120"],
    );
    let a = b.addr();
    let mut canary = login311(a, "canary", "alice", "wonder", 0);
    canary.subscribe("canary", 1);
    // The storm, then a login of another user: its check queues behind every storm
    // check (one FIFO queue), so when it is answered the storm has been hashed.
    let storm = std::thread::spawn(move || {
        let connect = ConnectOpts::v311("storm");
        for i in 0..1000 {
            let mut c = RawClient::connect(a);
            let id = format!("storm-{i}");
            let o = ConnectOpts {
                id: &id,
                ..connect.clone()
            };
            c.send_connect_login(&o, Some("alice"), Some(b"wrong"));
            c.drop_tcp();
        }
        let mut c = RawClient::connect(a);
        c.send_connect_login(&ConnectOpts::v311("drain"), Some("bob"), Some(b"builder"));
        let got = c.expect_packet(Duration::from_secs(120));
        assert!(
            matches!(got, common::Got::ConnAck { code: 0 | 3, .. }),
            "bob after the storm: {got:?}"
        );
        drop(c);
    });
    let mut rtts = Vec::new();
    let started = Instant::now();
    while !storm.is_finished() && started.elapsed() < Duration::from_secs(120) {
        let t = Instant::now();
        canary.publish("canary", b"c", 1, false);
        canary.expect_publish_acked(WAIT);
        rtts.push(t.elapsed());
    }
    storm.join().expect("storm thread");
    rtts.sort();
    assert!(!rtts.is_empty());
    let p99 = rtts[(rtts.len() * 99 / 100).min(rtts.len() - 1)];
    eprintln!(
        "canary: {} round trips during the storm ({:?}), p99 {p99:?}, max {:?}",
        rtts.len(),
        started.elapsed(),
        rtts[rtts.len() - 1]
    );
    assert!(p99 < Duration::from_millis(500), "canary p99 {p99:?}");
    login311(a, "after", "alice", "wonder", 0).disconnect();
}
