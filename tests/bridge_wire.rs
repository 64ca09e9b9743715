//! Bridges run by the broker, black box: a shardmq process with `connection` blocks in
//! its configuration file, against Debian's `mosquitto` and against a second shardmq, over
//! loopback. Every child process is stopped by its PID when its guard drops.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::mosquitto::Mosquitto;
use common::{Broker, Got, RawClient};

/// Bound on every wait in this file.
const WAIT: Duration = Duration::from_secs(20);

/// A scratch directory removed on drop.
struct Dir(std::path::PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!(
            "shardmq-bridgewire-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&d).expect("temp dir");
        common::mosquitto::world_writable(&d);
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A mosquitto on `port` with its database (and log) in `dir`, ready for the
/// store-and-forward tests' volumes; killed on drop.
fn start_mosquitto(port: u16, dir: &Dir) -> Mosquitto {
    let extra = "autosave_interval 3600\nmax_queued_messages 100000\n";
    Mosquitto::persistent(port, &dir.0, extra, WAIT)
}

/// Start shardmq with `conf` (bridge blocks) written into `dir`, plus `args`.
fn shardmq(dir: &Dir, conf: &str, shards: usize, args: &[&str]) -> Broker {
    let path = dir.0.join(format!("shardmq-{}.conf", free_port()));
    std::fs::write(&path, conf).expect("write conf");
    let path = path.display().to_string();
    let mut all = vec!["-c", path.as_str()];
    all.extend_from_slice(args);
    Broker::with_shards(shards, &all)
}

/// One HTTP/1.1 GET with `Connection: close`: the body. Bounded by `WAIT`.
fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("connect to admin");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read response");
    raw.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .expect("a body")
}

/// The value of the metric line starting with `sample` (name and labels).
fn metric(text: &str, sample: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample))
        .and_then(|v| v.trim().parse().ok())
}

/// Wait until `c` (subscribed to the state topic) sees the state `want` ("1" or "0").
fn await_state(c: &mut RawClient, topic: &str, want: &[u8]) {
    c.expect_where(
        WAIT,
        "bridge state",
        |g| matches!(g, Got::Publish(m) if m.topic == topic && m.payload == want),
    );
}

/// A subscriber to the bridge's state topic on `addr`, returning once the bridge is up.
fn state_watcher(addr: SocketAddr, id: &str, topic: &str) -> RawClient {
    let mut w = RawClient::clean(addr, id);
    w.subscribe(topic, 0);
    await_state(&mut w, topic, b"1");
    w
}

fn seq_of(m: &common::Msg) -> u32 {
    std::str::from_utf8(&m.payload)
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("a numbered payload")
}

/// QoS 1 `out/N` messages numbered `range`, each acknowledged by shardmq.
fn publish_numbered(publisher: &mut RawClient, range: std::ops::Range<u32>) {
    for i in range {
        let topic = format!("out/{}", i % 7);
        publisher.publish(&topic, i.to_string().as_bytes(), 1, false);
    }
}

/// In: mosquitto (`maddr`) cmd/... → shardmq (`addr`) local/cmd/..., to a subscriber on
/// the shard that does not run the bridge (bridge 0 is on shard 0): 200 QoS 1 messages in
/// order. Returns the remote publisher, still connected.
fn bring_in_200_in_order(addr: SocketAddr, maddr: SocketAddr) -> RawClient {
    let sub_id = common::id_on("local-sub", 1, 2);
    let mut local_sub = RawClient::clean(addr, &sub_id);
    local_sub.subscribe("local/#", 1);
    let mut remote_pub = RawClient::clean(maddr, "remote-pub");
    // The bridge subscribes right after CONNACK; wait for it by retrying a marker.
    let deadline = Instant::now() + WAIT;
    loop {
        remote_pub.publish("cmd/valve", b"open", 1, false);
        if local_sub.try_packet(Duration::from_millis(200)).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "nothing came in over the bridge");
    }
    for i in 0..200u32 {
        remote_pub.publish("cmd/seq", i.to_string().as_bytes(), 1, false);
    }
    let mut came_in = Vec::new();
    while came_in.len() < 200 {
        let m = local_sub.expect_publish_acked(WAIT);
        if m.topic == "local/cmd/seq" {
            came_in.push(seq_of(&m));
        }
    }
    assert_eq!(
        came_in,
        (0..200).collect::<Vec<_>>(),
        "QoS 1 in order, once each"
    );

    remote_pub
}

/// While the remote is down, `$SYS` and the metrics show the bridge down with its queue.
fn status_shows_down_with_queue(addr: SocketAddr, admin: SocketAddr) {
    let mut sys = RawClient::clean(addr, "sys");
    sys.subscribe("$SYS/broker/bridge/cloud/queued", 0);
    sys.expect_where(
        WAIT,
        "queue depth in $SYS",
        |g| matches!(g, Got::Publish(m) if seq_of(m) >= 300),
    );
    // The board is refreshed every second: poll it, bounded.
    let deadline = Instant::now() + WAIT;
    let queued = |t: &str| metric(t, "shardmq_bridge_queued_messages{bridge=\"cloud\"}");
    let mut text = http_get(admin, "/metrics");
    while queued(&text).is_none_or(|q| q < 300) {
        assert!(Instant::now() < deadline, "queue depth never shown: {text}");
        std::thread::sleep(Duration::from_millis(100));
        text = http_get(admin, "/metrics");
    }
    assert_eq!(
        metric(&text, "shardmq_bridge_up{bridge=\"cloud\"}"),
        Some(0),
        "{text}"
    );
    // The dashboard's JSON: the same figures, by bridge.
    let api: serde_json::Value =
        serde_json::from_str(&http_get(admin, "/api/v1/bridges")).expect("JSON");
    let cloud = &api["bridges"][0];
    assert_eq!(cloud["name"], "cloud", "{api}");
    assert_eq!(cloud["up"], false, "{api}");
    assert!(cloud["queued"].as_u64().is_some_and(|q| q >= 300), "{api}");
    assert!(cloud["forwarded"].as_u64().is_some_and(|f| f > 0), "{api}");
    let page = http_get(admin, "/");
    assert!(
        page.contains("id=\"bridges\""),
        "the dashboard has a bridges panel"
    );
    let js = http_get(admin, "/dashboard.js");
    assert!(js.contains("/api/v1/bridges"), "and fills it from the API");
}

/// Both directions with prefixes against mosquitto, QoS 1 in order; then the remote is
/// killed with SIGKILL mid-stream: what was published meanwhile arrives, in order, once it
/// is back.
#[test]
fn shardmq_to_mosquitto_and_back_survives_a_remote_kill() {
    let dir = Dir::new("mq");
    let port = free_port();
    // The remote's subscriber keeps a session that mosquitto has saved (SIGTERM), so the
    // restarted remote queues for it whatever the bridge delivers before it reconnects.
    let m = start_mosquitto(port, &dir);
    let maddr: SocketAddr = ([127, 0, 0, 1], port).into();
    let (mut sink, _) = RawClient::connect_v311(maddr, "sink", false, 60, None);
    sink.subscribe("site/#", 1);
    sink.disconnect();
    m.stop(WAIT);
    let m = start_mosquitto(port, &dir);

    let conf = format!(
        "connection cloud\naddress 127.0.0.1:{port}\nremote_clientid site1\ncleansession false\n\
         restart_timeout 1\nkeepalive_interval 5\n\
         topic out/# out 1 \"\" site/\ntopic cmd/# in 1 local/ \"\"\n"
    );
    let admin = format!("127.0.0.1:{}", free_port());
    let s = shardmq(&dir, &conf, 2, &["--sys-interval", "1", "--admin", &admin]);
    let admin: SocketAddr = admin.parse().expect("admin address");
    let state = "$SYS/broker/connection/site1/state";
    let mut watch = state_watcher(s.addr(), "watch", state);

    let remote_pub = bring_in_200_in_order(s.addr(), maddr);

    // Out, with the remote alive then killed: 0..300 while up, kill, 300..600 while down,
    // from a publisher on the other shard.
    let pub_id = common::id_on("publisher", 1, 2);
    let mut publisher = RawClient::clean(s.addr(), &pub_id);
    publish_numbered(&mut publisher, 0..300);
    drop(remote_pub);
    m.kill9(WAIT);
    await_state(&mut watch, state, b"0");
    publish_numbered(&mut publisher, 300..600);
    status_shows_down_with_queue(s.addr(), admin);
    let _m = start_mosquitto(port, &dir);
    await_state(&mut watch, state, b"1");

    let (mut sink, present) = RawClient::connect_v311(maddr, "sink", false, 60, None);
    assert!(present, "the remote kept the sink's session");
    let mut got = Vec::new();
    while got.last().copied() != Some(599) {
        let msg = sink.expect_publish_acked(WAIT);
        assert!(
            msg.topic.starts_with("site/out/"),
            "prefix rewritten: {}",
            msg.topic
        );
        got.push(seq_of(&msg));
    }
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, no repeats: {got:?}"
    );
    let down: Vec<u32> = got.into_iter().filter(|&i| i >= 300).collect();
    assert_eq!(
        down,
        (300..600).collect::<Vec<_>>(),
        "everything queued while down"
    );
}

/// shardmq ↔ shardmq over an MQTT 5 bridge with `both` on one pattern: each message is
/// seen exactly once on each side (No Local and the origin tag stop the loop).
#[test]
fn shardmq_to_shardmq_both_without_loops() {
    let dir = Dir::new("ss");
    let remote = Broker::with_shards(2, &[]);
    let conf = format!(
        "connection peer\naddress {}\nremote_clientid a-to-b\nbridge_protocol_version mqttv50\n\
         restart_timeout 1\ntopic loop/# both 1\n",
        remote.addr()
    );
    let a = shardmq(&dir, &conf, 3, &[]);
    let _watch = state_watcher(a.addr(), "watch", "$SYS/broker/connection/a-to-b/state");
    let mut on_a = RawClient::clean(a.addr(), "on-a");
    on_a.subscribe("loop/#", 1);
    let mut on_b = RawClient::clean(remote.addr(), "on-b");
    on_b.subscribe("loop/#", 1);
    // B → A first: it proves the bridge's remote subscription is in place.
    let mut pub_b = RawClient::clean(remote.addr(), "pub-b");
    let deadline = Instant::now() + WAIT;
    loop {
        pub_b.publish("loop/probe", b"p", 1, false);
        on_b.expect_publish_acked(WAIT);
        if let Ok(Got::Publish(m)) = on_a.try_packet(Duration::from_millis(300)) {
            on_a.ack(&m);
            break;
        }
        assert!(Instant::now() < deadline, "nothing came in over the bridge");
    }
    // Earlier probes may still be on their way to A: let them land.
    while let Ok(Got::Publish(m)) = on_a.try_packet(Duration::from_millis(500)) {
        assert_eq!(m.topic, "loop/probe");
        on_a.ack(&m);
    }
    let mut pub_a = RawClient::clean(a.addr(), "pub-a");
    pub_a.publish("loop/from-a", b"a", 1, false);
    pub_b.publish("loop/from-b", b"b", 1, false);
    let mut seen_a: Vec<String> = Vec::new();
    let mut seen_b: Vec<String> = Vec::new();
    for _ in 0..2 {
        seen_a.push(on_a.expect_publish_acked(WAIT).topic);
        seen_b.push(on_b.expect_publish_acked(WAIT).topic);
    }
    seen_a.sort();
    seen_b.sort();
    assert_eq!(seen_a, vec!["loop/from-a", "loop/from-b"]);
    assert_eq!(seen_b, vec!["loop/from-a", "loop/from-b"]);
    on_a.expect_nothing(Duration::from_millis(500));
    on_b.expect_nothing(Duration::from_millis(300));
}

/// Bridged-in messages are trusted like Mosquitto's bridges (no write check against the
/// ACL: the remote broker decided who may publish them), and local subscribers still read
/// only what their own rights allow.
#[test]
fn bridged_in_messages_skip_the_write_check_but_not_the_readers() {
    let dir = Dir::new("acl");
    let remote = Broker::with_shards(1, &[]);
    // Nobody may publish under in/ locally; anonymous readers may read in/ok only.
    let acl = dir.0.join("acl");
    std::fs::write(&acl, "topic read in/ok\ntopic read $SYS/#\n").expect("write acl");
    let conf = format!(
        "acl_file {}\nallow_anonymous true\nconnection peer\naddress {}\n\
         remote_clientid acl-bridge\nrestart_timeout 1\ntopic in/# in 0\n",
        acl.display(),
        remote.addr()
    );
    let a = shardmq(&dir, &conf, 2, &[]);
    let mut on_a = RawClient::clean(a.addr(), "on-a");
    on_a.subscribe("in/#", 0);
    let mut local = RawClient::clean(a.addr(), "local-writer");
    local.publish("in/ok", b"local", 0, false);
    local.ping();
    let mut pub_b = RawClient::clean(remote.addr(), "pub-b");
    let deadline = Instant::now() + WAIT;
    loop {
        pub_b.publish("in/ok", b"probe", 0, false);
        if let Ok(Got::Publish(m)) = on_a.try_packet(Duration::from_millis(300)) {
            assert_eq!((m.topic.as_str(), m.text().as_str()), ("in/ok", "probe"));
            break;
        }
        assert!(Instant::now() < deadline, "nothing came in over the bridge");
    }
    while let Ok(Got::Publish(m)) = on_a.try_packet(Duration::from_millis(500)) {
        assert_eq!(m.text(), "probe", "the local writer was refused");
    }
    pub_b.publish("in/secret", b"not for on-a", 0, false);
    pub_b.publish("in/ok", b"after", 0, false);
    let m = on_a.expect_publish(WAIT);
    assert_eq!((m.topic.as_str(), m.text().as_str()), ("in/ok", "after"));
    on_a.expect_nothing(Duration::from_millis(500));
}

/// A password file with one user, made by `shardmq passwd -c -b`.
fn passwd_file(dir: &Dir, user: &str, password: &str) -> std::path::PathBuf {
    let file = dir.0.join("passwd");
    let st = Command::new(Broker::bin())
        .args(["passwd", "-c", "-b"])
        .arg(&file)
        .args([user, password])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("shardmq passwd runs");
    assert!(st.success(), "shardmq passwd");
    file
}

/// `local_username` puts a bridge under the ACL as that user (Mosquitto passes it to its
/// ACL plugins; shardmq's ACL file is where it applies): what the bridge brings in is
/// write-checked, what it sends out read-checked, and `%c` is its `local_clientid`. A
/// second bridge without one, on the same topics, is checked against nothing. A wrong
/// `local_password` stops the start, naming the `connection` line.
#[test]
fn a_local_username_puts_the_bridge_under_the_acl() {
    let dir = Dir::new("localuser");
    let remote = Broker::with_shards(1, &[]);
    let pw = passwd_file(&dir, "site", "s3cret");
    let acl = dir.0.join("acl");
    std::fs::write(
        &acl,
        "topic readwrite in/#\ntopic readwrite out/#\ntopic read $SYS/#\n\
         user site\ntopic write in/ok/#\ntopic read out/ok/#\npattern read out/%c/#\n",
    )
    .expect("write acl");
    let log = dir.0.join("site.log");
    let conf = |password: &str| {
        format!(
            "log_dest file {}\nacl_file {}\npassword_file {}\nallow_anonymous true\n\
             connection checked\naddress {}\nremote_clientid checked\nrestart_timeout 1\n\
             local_username site\nlocal_password {password}\nlocal_clientid site-local\n\
             topic in/# in 1\ntopic out/# out 1\n\
             connection open\naddress {}\nremote_clientid open\nrestart_timeout 1\n\
             topic out/# out 1 \"\" open/\n",
            log.display(),
            acl.display(),
            pw.display(),
            remote.addr(),
            remote.addr()
        )
    };
    let path = dir.0.join("wrong.conf");
    std::fs::write(&path, conf("wrong")).expect("write conf");
    let mut child = Command::new(Broker::bin())
        .arg("-c")
        .arg(&path)
        .args([
            "--bind",
            "127.0.0.1:0",
            "--admin",
            "off",
            "--no-persistence",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shardmq");
    let status = common::wait_exit(&mut child, WAIT).expect("a refused start exits");
    assert!(!status.success());
    let mut err = String::new();
    use std::io::Read;
    let _ = child.stderr.take().expect("piped").read_to_string(&mut err);
    assert!(
        err.contains("wrong.conf:5: connection 'checked': local_username 'site' is refused"),
        "{err}"
    );

    let a = shardmq(&dir, &conf("s3cret"), 2, &[]);
    let mut on_a = RawClient::clean(a.addr(), "on-a");
    on_a.subscribe("in/#", 1);
    let mut on_b = RawClient::clean(remote.addr(), "on-b");
    on_b.subscribe("out/#", 1);
    on_b.subscribe("open/#", 1);
    let mut pub_b = RawClient::clean(remote.addr(), "pub-b");
    let deadline = Instant::now() + WAIT;
    loop {
        pub_b.publish("in/ok/probe", b"probe", 1, false);
        if let Ok(Got::Publish(m)) = on_a.try_packet(Duration::from_millis(300)) {
            assert_eq!(m.topic, "in/ok/probe");
            break;
        }
        assert!(Instant::now() < deadline, "nothing came in over the bridge");
    }
    while let Ok(Got::Publish(m)) = on_a.try_packet(Duration::from_millis(300)) {
        assert_eq!(m.topic, "in/ok/probe", "only probes so far");
    }
    // In: the bridge may write in/ok/# only. The refused message is still acknowledged
    // to the remote (the next one comes through) and logged once.
    pub_b.publish("in/secret", b"refused", 1, false);
    pub_b.publish("in/ok/after", b"allowed", 1, false);
    let m = on_a.expect_publish_acked(WAIT);
    assert_eq!(
        (m.topic.as_str(), m.text().as_str()),
        ("in/ok/after", "allowed")
    );
    await_log(&log, "Bridge checked: dropped a message for 'in/secret'", 1);
    // Out: the bridge may read out/ok/# and out/site-local/# only; the open bridge
    // forwards everything.
    let mut pub_a = RawClient::clean(a.addr(), "pub-a");
    for topic in ["out/secret", "out/ok/1", "out/site-local/2"] {
        pub_a.publish(topic, topic.as_bytes(), 1, false);
    }
    let mut got = Vec::new();
    while got.len() < 5 {
        got.push(on_b.expect_publish_acked(WAIT).topic);
    }
    got.sort();
    assert_eq!(
        got,
        [
            "open/out/ok/1",
            "open/out/secret",
            "open/out/site-local/2",
            "out/ok/1",
            "out/site-local/2"
        ]
    );
    on_b.expect_nothing(Duration::from_millis(500));
    on_a.expect_nothing(Duration::from_millis(200));
}

/// `local_cleansession true` (Mosquitto's meaning: the bridge's local session is clean)
/// keeps no queue while the remote is unreachable; the default keeps it, even with
/// `cleansession true` (shardmq does not tie the two as Mosquitto does: see
/// docs/bridges.md).
#[test]
fn a_clean_local_session_queues_nothing_for_an_unreachable_remote() {
    let dir = Dir::new("localclean");
    let port = free_port();
    let raddr: SocketAddr = ([127, 0, 0, 1], port).into();
    // The remote's subscriber keeps a session, so the restarted remote queues for it.
    let r = Remote::start(false, &dir, port);
    let (mut sink, _) = RawClient::connect_v311(raddr, "sink", false, 60, None);
    sink.subscribe("clean/#", 1);
    sink.subscribe("kept/#", 1);
    sink.disconnect();
    r.stop();
    let conf = format!(
        "connection clean\naddress {raddr}\nremote_clientid clean\nrestart_timeout 1\n\
         local_cleansession true\ntopic q/# out 1 \"\" clean/\n\
         connection kept\naddress {raddr}\nremote_clientid kept\nrestart_timeout 1\n\
         cleansession true\ntopic q/# out 1 \"\" kept/\n"
    );
    let s = shardmq(&dir, &conf, 2, &[]);
    let mut p = RawClient::clean(s.addr(), "p");
    for i in 0..3 {
        p.publish("q/x", format!("down-{i}").as_bytes(), 1, false);
    }
    let _r = Remote::start(false, &dir, port);
    let _clean = state_watcher(s.addr(), "w-clean", "$SYS/broker/connection/clean/state");
    let _kept = state_watcher(s.addr(), "w-kept", "$SYS/broker/connection/kept/state");
    p.publish("q/x", b"up", 1, false);
    let (mut sink, present) = RawClient::connect_v311(raddr, "sink", false, 60, None);
    assert!(present, "the remote kept the sink's session");
    let mut got = Vec::new();
    while got.len() < 5 {
        let m = sink.expect_publish_acked(WAIT);
        got.push(format!("{} {}", m.topic, m.text()));
    }
    let of = |prefix: &str| -> Vec<&str> {
        got.iter()
            .filter_map(|g| g.strip_prefix(prefix))
            .collect::<Vec<_>>()
    };
    assert_eq!(of("kept/q/x "), ["down-0", "down-1", "down-2", "up"]);
    assert_eq!(of("clean/q/x "), ["up"]);
    sink.expect_nothing(Duration::from_millis(500));
}

/// Messages an earlier run stored for a bridge (no `local_cleansession`) are dropped,
/// logged and forgotten when it restarts with `local_cleansession true`: they never reach
/// the remote, and a third run (without it again) finds nothing stored.
#[test]
fn stored_messages_are_dropped_by_a_restart_with_local_cleansession() {
    let dir = Dir::new("localclean-restart");
    let port = free_port();
    let raddr: SocketAddr = ([127, 0, 0, 1], port).into();
    let r = Remote::start(false, &dir, port);
    let (mut sink, _) = RawClient::connect_v311(raddr, "sink", false, 60, None);
    sink.subscribe("site/#", 1);
    sink.disconnect();
    r.stop();
    let data = dir.0.join("site-data").display().to_string();
    let log = dir.0.join("site.log");
    let conf = format!(
        "log_dest file {}\nconnection cloud\naddress {raddr}\nremote_clientid site1\n\
         restart_timeout 1\ntopic out/# out 1 \"\" site/\n",
        log.display()
    );
    let mut s = shardmq(&dir, &conf, 2, &["--data-dir", &data]);
    let mut p = RawClient::clean(s.addr(), "p");
    for i in 0..5 {
        p.publish("out/x", format!("old-{i}").as_bytes(), 1, false);
    }
    kill9(&mut s);
    drop((p, s));
    let clean = conf.replace(
        "restart_timeout 1\n",
        "restart_timeout 1\nlocal_cleansession true\n",
    );
    let mut s = shardmq(&dir, &clean, 2, &["--data-dir", &data]);
    await_log(
        &log,
        "Bridge cloud: 5 message(s) dropped (local_cleansession true)",
        1,
    );
    // A clean stop: the records of the drop are written before it exits.
    assert!(s.terminate(WAIT).is_some(), "shardmq stops");
    drop(s);
    let s = shardmq(&dir, &conf, 2, &["--data-dir", &data]);
    let _r = Remote::start(false, &dir, port);
    let _up = state_watcher(s.addr(), "w", "$SYS/broker/connection/site1/state");
    let mut p = RawClient::clean(s.addr(), "p2");
    p.publish("out/x", b"new", 1, false);
    let (mut sink, present) = RawClient::connect_v311(raddr, "sink", false, 60, None);
    assert!(present, "the remote kept the sink's session");
    let m = sink.expect_publish_acked(WAIT);
    assert_eq!((m.topic.as_str(), m.text().as_str()), ("site/out/x", "new"));
    sink.expect_nothing(Duration::from_millis(500));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains("restored from the store"), "{text}");
}

/// A CA `NAME.pem` in `dir`, from the test PKI; returned to sign with.
fn make_ca(dir: &Dir, name: &str) -> common::pki::Ca {
    let ca = common::pki::ca(name);
    std::fs::write(dir.0.join(format!("{name}.pem")), &ca.pem).expect("write CA");
    ca
}

/// A TLS mosquitto: `tls_port` (certificate for 127.0.0.1 signed by `ca`) and a plain
/// `port` for the test's own clients.
fn tls_mosquitto(dir: &Dir, tls_port: u16, port: u16) -> Mosquitto {
    let ca = make_ca(dir, "ca");
    let spec = common::pki::LeafSpec {
        san: &["127.0.0.1", "localhost"],
        ..common::pki::LeafSpec::cn("localhost")
    };
    let srv = common::pki::leaf(Some(&ca), &spec);
    std::fs::write(dir.0.join("srv.pem"), &srv.pem).expect("write certificate");
    std::fs::write(dir.0.join("srv.key"), &srv.key).expect("write key");
    use std::os::unix::fs::PermissionsExt;
    for f in ["ca.pem", "srv.pem", "srv.key"] {
        let mode = std::fs::Permissions::from_mode(0o644);
        std::fs::set_permissions(dir.0.join(f), mode).expect("chmod");
    }
    let d = dir.0.display();
    let text = format!(
        "per_listener_settings false\nallow_anonymous true\nlistener {port} 127.0.0.1\n\
         listener {tls_port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/srv.pem\nkeyfile {d}/srv.key\n"
    );
    let conf = dir.0.join("tls.conf");
    std::fs::write(&conf, text).expect("write conf");
    Mosquitto::spawn(&conf, tls_port, WAIT)
}

/// Over TLS: with the remote's CA the bridge comes up and forwards; with another CA it
/// does not, and the log and the state topic say so.
#[test]
fn tls_bridge_and_a_bad_certificate() {
    let dir = Dir::new("tls");
    let (tls_port, port) = (free_port(), free_port());
    let _remote = tls_mosquitto(&dir, tls_port, port);
    make_ca(&dir, "other");
    let d = dir.0.display();
    let good = format!(
        "connection good\naddress 127.0.0.1:{tls_port}\nremote_clientid good\n\
         bridge_cafile {d}/ca.pem\nrestart_timeout 1\ntopic t/# out 1 \"\" tls/\n"
    );
    let s = shardmq(&dir, &good, 1, &[]);
    let _w = state_watcher(s.addr(), "w", "$SYS/broker/connection/good/state");
    let maddr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut sub = RawClient::clean(maddr, "sub");
    sub.subscribe("tls/#", 1);
    let mut p = RawClient::clean(s.addr(), "p");
    p.publish("t/x", b"over tls", 1, false);
    let m = sub.expect_publish_acked(WAIT);
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("tls/t/x", &b"over tls"[..])
    );

    let log = dir.0.join("bad.log");
    let bad = format!(
        "log_dest file {}\nconnection bad\naddress 127.0.0.1:{tls_port}\nremote_clientid bad\n\
         bridge_cafile {d}/other.pem\nrestart_timeout 1\ntopic t/# out 1\n",
        log.display()
    );
    let b = shardmq(&dir, &bad, 1, &[]);
    let state = "$SYS/broker/connection/bad/state";
    let mut w = RawClient::clean(b.addr(), "w");
    w.subscribe(state, 0);
    await_state(&mut w, state, b"0");
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("Bridge bad") && text.contains("certificate") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no certificate error logged: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    w.expect_nothing(Duration::from_millis(500));
}

/// Wrong credentials: the remote refuses the CONNECT; the log names the refusal and the
/// state topic says `0`.
#[test]
fn wrong_credentials_are_reported() {
    let dir = Dir::new("auth");
    let port = free_port();
    let pw = dir.0.join("pw");
    let st = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&pw)
        .args(["site", "right"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("mosquitto_passwd is installed");
    assert!(st.success(), "mosquitto_passwd");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let conf = dir.0.join("auth.conf");
    let text = format!(
        "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
        pw.display()
    );
    std::fs::write(&conf, text).expect("write conf");
    let _m = Mosquitto::spawn(&conf, port, WAIT);
    let log = dir.0.join("shardmq.log");
    let bridge = format!(
        "log_dest file {}\nconnection cloud\naddress 127.0.0.1:{port}\nremote_clientid site\n\
         remote_username site\nremote_password wrong\nrestart_timeout 1\ntopic t/# out 1\n",
        log.display()
    );
    let s = shardmq(&dir, &bridge, 1, &[]);
    let state = "$SYS/broker/connection/site/state";
    let mut w = RawClient::clean(s.addr(), "w");
    w.subscribe(state, 0);
    await_state(&mut w, state, b"0");
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("Bridge cloud") && text.contains("CONNACK refused") {
            break;
        }
        assert!(Instant::now() < deadline, "no refusal logged: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    w.expect_nothing(Duration::from_millis(500));
}

/// A scripted remote: reads packets from the bridge's connection.
struct FakeRemote {
    sock: TcpStream,
    buf: Vec<u8>,
}

/// What the scripted remote saw.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Connect,
    Publish {
        payload: Vec<u8>,
        dup: bool,
        pid: u16,
    },
    Other(String),
}

impl FakeRemote {
    fn accept(l: &TcpListener) -> FakeRemote {
        l.set_nonblocking(false).expect("blocking");
        let (sock, _) = l.accept().expect("the bridge connects");
        sock.set_read_timeout(Some(WAIT)).expect("timeout");
        FakeRemote {
            sock,
            buf: Vec::new(),
        }
    }

    fn next(&mut self) -> Seen {
        use shardmq::protocol::{decode, Decoded, Packet, Version};
        use std::io::Read;
        loop {
            if let Ok(Decoded::Packet { packet, len }) = decode(&self.buf, Version::V3_1_1, 1 << 20)
            {
                let seen = match packet {
                    Packet::Connect(_) => Seen::Connect,
                    Packet::Publish(p) => Seen::Publish {
                        payload: p.payload.to_vec(),
                        dup: p.dup,
                        pid: p.packet_id.map_or(0, |x| x.get()),
                    },
                    other => Seen::Other(other.name().to_string()),
                };
                self.buf.drain(..len);
                return seen;
            }
            let mut chunk = [0u8; 4096];
            let n = self.sock.read(&mut chunk).expect("read from the bridge");
            assert!(n > 0, "the bridge closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// CONNACK accepted, with Session Present.
    fn connack(&mut self) {
        use std::io::Write;
        self.sock
            .write_all(&[0x20, 0x02, 0x01, 0x00])
            .expect("CONNACK");
    }
}

/// The remote drops the connection with a QoS 1 message unacknowledged: after the
/// reconnect the bridge sends it again with DUP and the same packet id, before the next.
#[test]
fn in_flight_message_is_resent_with_dup_after_the_remote_drops() {
    let dir = Dir::new("dup");
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let conf = format!(
        "connection fake\naddress 127.0.0.1:{port}\nremote_clientid fake\ntry_private false\n\
         notifications_local_only true\nrestart_timeout 1\ntopic t/# out 1\n"
    );
    let s = shardmq(&dir, &conf, 2, &[]);
    let state = "$SYS/broker/connection/fake/state";
    let mut w = RawClient::clean(s.addr(), "w");
    w.subscribe(state, 0);
    let mut r = FakeRemote::accept(&l);
    assert_eq!(r.next(), Seen::Connect);
    r.connack();
    await_state(&mut w, state, b"1");
    let mut p = RawClient::clean(s.addr(), "p");
    p.publish("t/a", b"first", 1, false);
    let first = r.next();
    let Seen::Publish {
        dup: false, pid, ..
    } = first
    else {
        panic!("expected a first PUBLISH, got {first:?}");
    };
    // Acknowledged locally, never by the remote: the remote goes away. Once the bridge
    // has seen it go, the next message waits in the queue.
    drop(r);
    await_state(&mut w, state, b"0");
    p.publish("t/a", b"second", 1, false);
    let mut r = FakeRemote::accept(&l);
    assert_eq!(r.next(), Seen::Connect);
    r.connack();
    assert_eq!(
        r.next(),
        Seen::Publish {
            payload: b"first".to_vec(),
            dup: true,
            pid
        },
        "resent with DUP and its packet id"
    );
    let Seen::Publish { payload, dup, .. } = r.next() else {
        panic!("the queued message follows");
    };
    assert_eq!((payload.as_slice(), dup), (&b"second"[..], false));
}

/// QoS 0, 1 and 2 both ways between two shardmq over a 3.1.1 bridge with prefixes: each
/// arrives once, at the lower of its QoS and the rule's, with the topic renamed.
#[test]
fn shardmq_to_shardmq_every_qos_both_ways() {
    let dir = Dir::new("qos");
    let remote = Broker::with_shards(2, &[]);
    let conf = format!(
        "connection peer\naddress {}\nremote_clientid qos-peer\nrestart_timeout 1\n\
         topic up/# out 2 site/ hq/\ntopic down/# in 2 site/ hq/\n",
        remote.addr()
    );
    let a = shardmq(&dir, &conf, 2, &[]);
    let _w = state_watcher(a.addr(), "w", "$SYS/broker/connection/qos-peer/state");
    let mut on_a = RawClient::clean(a.addr(), "on-a");
    on_a.subscribe("site/down/#", 2);
    let mut on_b = RawClient::clean(remote.addr(), "on-b");
    on_b.subscribe("hq/up/#", 2);
    // In first, retried until the bridge's subscription on the remote is in place.
    let mut pub_b = RawClient::clean(remote.addr(), "pub-b");
    let deadline = Instant::now() + WAIT;
    loop {
        pub_b.publish("hq/down/probe", b"p", 1, false);
        if let Ok(Got::Publish(m)) = on_a.try_packet(Duration::from_millis(300)) {
            on_a.ack(&m);
            break;
        }
        assert!(Instant::now() < deadline, "nothing came in over the bridge");
    }
    while let Ok(Got::Publish(m)) = on_a.try_packet(Duration::from_millis(500)) {
        on_a.ack(&m);
    }
    let mut pub_a = RawClient::clean(a.addr(), "pub-a");
    for q in 0..=2u8 {
        let t = format!("site/up/q{q}");
        pub_a.publish(&t, &[q], q, false);
        let m = on_b.expect_publish_acked(WAIT);
        assert_eq!(
            (m.topic.as_str(), m.qos, &m.payload[..]),
            (&format!("hq/up/q{q}")[..], q, &[q][..])
        );
        let t = format!("hq/down/q{q}");
        pub_b.publish(&t, &[q], q, false);
        let m = on_a.expect_publish_acked(WAIT);
        assert_eq!(
            (m.topic.as_str(), m.qos, &m.payload[..]),
            (&format!("site/down/q{q}")[..], q, &[q][..])
        );
    }
    on_a.expect_nothing(Duration::from_millis(300));
    on_b.expect_nothing(Duration::from_millis(300));
}

/// SIGKILL, then a bounded wait for the exit.
fn kill9(b: &mut Broker) {
    common::signal(b.pid(), libc::SIGKILL);
    assert!(b.wait(WAIT).is_some(), "shardmq dies");
}

/// The central broker of the store-and-forward tests, on a fixed port, with a store.
enum Remote {
    Shardmq(Broker),
    Mosquitto(Mosquitto),
}

impl Remote {
    fn start(mosquitto: bool, dir: &Dir, port: u16) -> Remote {
        if mosquitto {
            return Remote::Mosquitto(start_mosquitto(port, dir));
        }
        let bind = format!("127.0.0.1:{port}");
        let data = dir.0.join("remote-data").display().to_string();
        Remote::Shardmq(Broker::start(&["--bind", &bind, "--data-dir", &data]))
    }

    /// A clean stop: the remote keeps its sessions.
    fn stop(self) {
        match self {
            Remote::Shardmq(mut b) => {
                assert!(b.terminate(WAIT).is_some(), "remote shardmq stops");
            }
            Remote::Mosquitto(m) => m.stop(WAIT),
        }
    }
}

/// Every (publisher letter, number) in `got`, split by publisher, in arrival order.
fn by_publisher(got: &[common::Msg], letter: char) -> Vec<u32> {
    got.iter()
        .filter_map(|m| m.text().strip_prefix(letter)?.parse().ok())
        .collect()
}

/// QoS 1 messages queued for an unreachable remote, from publishers on both shards (the
/// bridge's own and the other one), are acknowledged, survive `kill -9` of shardmq (and a
/// renamed `connection` with the same `local_clientid`), and reach the remote in order
/// per publisher once it is up.
fn queued_messages_survive_kill9(mosquitto: bool) {
    const N: u32 = 200;
    let dir = Dir::new(if mosquitto { "sf-mq" } else { "sf-smq" });
    let port = free_port();
    let raddr: SocketAddr = ([127, 0, 0, 1], port).into();
    // The remote's subscriber keeps a session, so the restarted remote queues for it.
    let r = Remote::start(mosquitto, &dir, port);
    let (mut sink, _) = RawClient::connect_v311(raddr, "sink", false, 60, None);
    sink.subscribe("site/#", 1);
    sink.disconnect();
    r.stop();

    let data = dir.0.join("site-data").display().to_string();
    let conf = format!(
        "connection cloud\naddress 127.0.0.1:{port}\nremote_clientid site1\n\
         local_clientid site1-local\ncleansession false\nrestart_timeout 1\n\
         topic out/# out 1 \"\" site/\n"
    );
    let mut s = shardmq(&dir, &conf, 2, &["--data-dir", &data]);
    let mut pa = RawClient::clean(s.addr(), &common::id_on("pa", 0, 2));
    let mut pb = RawClient::clean(s.addr(), &common::id_on("pb", 1, 2));
    for i in 0..N {
        // `publish` returns once shardmq has acknowledged the message.
        pa.publish("out/a", format!("a{i}").as_bytes(), 1, false);
        pb.publish("out/b", format!("b{i}").as_bytes(), 1, false);
    }
    kill9(&mut s);
    drop((pa, pb, s));

    // The queue belongs to the local client id (as in Mosquitto): it survives a renamed
    // `connection` too.
    let renamed = conf.replace("connection cloud", "connection cloud-renamed");
    let s = shardmq(&dir, &renamed, 2, &["--data-dir", &data]);
    let _r = Remote::start(mosquitto, &dir, port);
    let mut watch = RawClient::clean(s.addr(), "watch");
    let state = "$SYS/broker/connection/site1/state";
    watch.subscribe(state, 0);
    await_state(&mut watch, state, b"1");
    let (mut sink, present) = RawClient::connect_v311(raddr, "sink", false, 60, None);
    assert!(present, "the remote kept the sink's session");
    let mut got = Vec::new();
    let done = |got: &[common::Msg]| {
        by_publisher(got, 'a').last() == Some(&(N - 1))
            && by_publisher(got, 'b').last() == Some(&(N - 1))
    };
    while !done(&got) {
        got.push(sink.expect_publish_acked(WAIT));
    }
    let all: Vec<u32> = (0..N).collect();
    assert_eq!(
        by_publisher(&got, 'a'),
        all,
        "publisher on the bridge's shard"
    );
    assert_eq!(by_publisher(&got, 'b'), all, "publisher on the other shard");
    assert!(got.iter().all(|m| m.topic.starts_with("site/out/")));
}

#[test]
fn queued_messages_survive_kill9_of_shardmq_to_a_shardmq_remote() {
    queued_messages_survive_kill9(false);
}

#[test]
fn queued_messages_survive_kill9_of_shardmq_to_a_mosquitto_remote() {
    queued_messages_survive_kill9(true);
}

/// Messages in flight to the remote (sent, never acknowledged) when shardmq is killed
/// are sent again after the restart, first, in order, with DUP and their packet ids.
#[test]
fn in_flight_messages_are_resent_with_dup_after_kill9_of_shardmq() {
    let dir = Dir::new("sf-dup");
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let data = dir.0.join("site-data").display().to_string();
    let conf = format!(
        "connection fake\naddress 127.0.0.1:{port}\nremote_clientid fake\ntry_private false\n\
         notifications_local_only true\nrestart_timeout 1\ntopic t/# out 1\n"
    );
    let mut s = shardmq(&dir, &conf, 2, &["--data-dir", &data]);
    let mut r = FakeRemote::accept(&l);
    assert_eq!(r.next(), Seen::Connect);
    r.connack();
    let mut p = RawClient::clean(s.addr(), &common::id_on("p", 1, 2));
    let mut sent = Vec::new();
    for i in 0..3 {
        let payload = format!("m{i}").into_bytes();
        p.publish("t/a", &payload, 1, false);
        match r.next() {
            Seen::Publish {
                payload: got,
                dup: false,
                pid,
            } => {
                assert_eq!(got, payload);
                sent.push(pid);
            }
            other => panic!("expected a PUBLISH, got {other:?}"),
        }
    }
    kill9(&mut s);
    drop((r, p, s));
    let s = shardmq(&dir, &conf, 2, &["--data-dir", &data]);
    let mut r = FakeRemote::accept(&l);
    assert_eq!(r.next(), Seen::Connect);
    r.connack();
    for (i, pid) in sent.iter().enumerate() {
        let want = Seen::Publish {
            payload: format!("m{i}").into_bytes(),
            dup: true,
            pid: *pid,
        };
        assert_eq!(r.next(), want, "resent with DUP and its packet id");
    }
    let mut p = RawClient::clean(s.addr(), "p2");
    p.publish("t/a", b"new", 1, false);
    let Seen::Publish { payload, dup, .. } = r.next() else {
        panic!("the new message follows");
    };
    assert_eq!((payload.as_slice(), dup), (&b"new"[..], false));
}

/// Wait (bounded) until the log file holds `needle` at least `n` times.
fn await_log(log: &std::path::Path, needle: &str, n: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches(needle).count() >= n {
            return;
        }
        assert!(Instant::now() < deadline, "no {needle:?} (x{n}) in: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGHUP adds, changes and removes bridges: an added one connects and forwards, a changed
/// one reconnects to its new address, a removed one disconnects (its state goes to 0 on
/// both sides) and forwards nothing more; a bad bridge block keeps the running ones.
#[test]
fn bridges_are_added_changed_and_removed_by_sighup() {
    let dir = Dir::new("hup");
    // The first remote is mosquitto, which takes the bridge's state topic under `$SYS`.
    let port = free_port();
    let _m = start_mosquitto(port, &dir);
    let r1_addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let r2 = Broker::with_shards(1, &[]);
    let mut sink1 = RawClient::clean(r1_addr, "sink1");
    sink1.subscribe("a/#", 1);
    sink1.subscribe("b/#", 1);
    let mut sink2 = RawClient::clean(r2.addr(), "sink2");
    sink2.subscribe("a/#", 1);
    let mut r1_state = RawClient::clean(r1_addr, "r1-state");
    r1_state.subscribe("$SYS/broker/connection/two/state", 0);
    let log = dir.0.join("site.log");
    let head = format!("log_dest file {}\n", log.display());
    let one = |to: SocketAddr| {
        format!("connection one\naddress {to}\nremote_clientid one\nrestart_timeout 1\ntopic a/# out 1\n")
    };
    let two = format!(
        "connection two\naddress {r1_addr}\nremote_clientid two\nrestart_timeout 1\ntopic b/# out 1\n"
    );
    let path = dir.0.join("site.conf");
    std::fs::write(&path, format!("{head}{}", one(r1_addr))).expect("write conf");
    let path_arg = path.display().to_string();
    let s = Broker::with_shards(2, &["-c", &path_arg]);
    let mut w = RawClient::clean(s.addr(), "w");
    w.subscribe("$SYS/broker/connection/+/state", 0);
    await_state(&mut w, "$SYS/broker/connection/one/state", b"1");
    let mut p = RawClient::clean(s.addr(), "p");
    p.publish("a/1", b"before", 1, false);
    assert_eq!(sink1.expect_publish_acked(WAIT).text(), "before");

    // Change `one` to the second remote, add `two` to the first.
    std::fs::write(&path, format!("{head}{}{two}", one(r2.addr()))).expect("write conf");
    common::signal(s.pid(), libc::SIGHUP);
    await_state(&mut w, "$SYS/broker/connection/two/state", b"1");
    await_state(&mut r1_state, "$SYS/broker/connection/two/state", b"1");
    p.publish("b/1", b"added", 1, false);
    p.publish("a/1", b"changed", 1, false);
    assert_eq!(sink1.expect_publish_acked(WAIT).text(), "added");
    // `before` may have been unacknowledged (R1's PUBACK not yet read) when `one` changed:
    // it is carried over and sent to R2 (at least once), with DUP 0 whether it was still
    // queued or already in flight at the change: R2 is another remote and never saw it
    // (docs/bridges.md, "SIGHUP"). Nothing else comes first.
    let mut m = sink2.expect_publish_acked(WAIT);
    if m.text() == "before" {
        assert!(!m.dup, "carried over to another remote: {m:?}");
        m = sink2.expect_publish_acked(WAIT);
    }
    assert_eq!(m.text(), "changed");
    sink1.expect_nothing(Duration::from_millis(300));
    await_log(&log, "Bridge one: changed by the reload", 1);

    // Remove `two`: state 0 here and on its remote, nothing forwarded any more.
    std::fs::write(&path, format!("{head}{}", one(r2.addr()))).expect("write conf");
    common::signal(s.pid(), libc::SIGHUP);
    await_state(&mut w, "$SYS/broker/connection/two/state", b"0");
    await_state(&mut r1_state, "$SYS/broker/connection/two/state", b"0");
    await_log(&log, "Bridge two: removed by the reload", 1);
    p.publish("b/1", b"removed", 1, false);
    sink1.expect_nothing(Duration::from_millis(500));

    // A bad block: the reload is refused whole and `one` keeps forwarding.
    let bad = format!(
        "{head}{}connection three\ntopic c/# out 1\n",
        one(r2.addr())
    );
    std::fs::write(&path, bad).expect("write conf");
    common::signal(s.pid(), libc::SIGHUP);
    await_log(&log, "reload refused", 1);
    p.publish("a/1", b"kept", 1, false);
    assert_eq!(sink2.expect_publish_acked(WAIT).text(), "kept");
}

/// MQTT 5 properties (user properties in order, content type, response topic,
/// correlation data, message expiry) cross an mqttv50 bridge in both directions, checked
/// by paho-mqtt clients on each side.
#[test]
fn mqtt5_properties_cross_an_mqttv50_bridge_both_ways() {
    let dir = Dir::new("props");
    let central = Broker::with_shards(2, &[]);
    let conf = format!(
        "connection peer\naddress {}\nremote_clientid props-peer\nbridge_protocol_version mqttv50\n\
         restart_timeout 1\ntopic p/# out 1\ntopic q/# in 1\n",
        central.addr()
    );
    let site = shardmq(&dir, &conf, 2, &[]);
    let _w = state_watcher(site.addr(), "w", "$SYS/broker/connection/props-peer/state");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/bridge_props.py");
    let (site_port, central_port) = (
        site.addr().port().to_string(),
        central.addr().port().to_string(),
    );
    let mut child = Command::new("python3")
        .args([script, &site_port, &central_port])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 with paho-mqtt");
    let mut out = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let status = common::wait_exit(&mut child, Duration::from_secs(60));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let text = reader.join().unwrap_or_default();
    assert!(status.is_some_and(|s| s.success()), "{text}");
    assert_eq!(text.trim(), "OK");
}

/// QoS 2 over a bridge with persistence on flows exactly once. The publishers have stored
/// sessions on both shards (the bridge's own and the other), so each message is a
/// numbered QoS 2 routing that the bridge may send only once its commit is durable
/// (`docs/persistence.md`); the remote is Debian's mosquitto with a QoS 2 subscriber:
/// every message arrives at QoS 2, once, in order per publisher, and nothing more.
#[test]
fn qos2_over_a_bridge_with_persistence_arrives_exactly_once() {
    const N: u32 = 40;
    let dir = Dir::new("q2");
    let port = free_port();
    let _m = start_mosquitto(port, &dir);
    let raddr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut sink = RawClient::clean(raddr, "q2-sink");
    sink.subscribe("site/#", 2);
    let data = dir.0.join("site-data").display().to_string();
    let conf = format!(
        "connection cloud\naddress 127.0.0.1:{port}\nremote_clientid q2site\n\
         cleansession false\nrestart_timeout 1\ntopic q2/# out 2 \"\" site/\n"
    );
    let s = shardmq(&dir, &conf, 2, &["--data-dir", &data]);
    let _w = state_watcher(s.addr(), "w", "$SYS/broker/connection/q2site/state");
    let stored = |id: String| RawClient::connect_v311(s.addr(), &id, false, 60, None).0;
    let mut pa = stored(common::id_on("q2a", 0, 2));
    let mut pb = stored(common::id_on("q2b", 1, 2));
    for i in 0..N {
        // `publish` returns after PUBREC, PUBREL and PUBCOMP.
        pa.publish("q2/a", format!("a{i}").as_bytes(), 2, false);
        pb.publish("q2/b", format!("b{i}").as_bytes(), 2, false);
    }
    let got = sink.collect_acked(2 * N as usize, WAIT);
    sink.expect_nothing(Duration::from_millis(500));
    let all: Vec<u32> = (0..N).collect();
    assert_eq!(
        by_publisher(&got, 'a'),
        all,
        "the bridge's shard, once each"
    );
    assert_eq!(by_publisher(&got, 'b'), all, "the other shard, once each");
    assert!(got.iter().all(|m| m.qos == 2 && !m.dup), "{got:?}");
}
