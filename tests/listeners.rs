//! Listeners served by the shard loops, black box: TLS and mutual TLS with the mosquitto
//! clients and rumqttc, WebSocket and secure WebSocket with paho-mqtt, PROXY headers,
//! `max_connections`, IPv6 loopbacks, refusals of the wrong protocol, the handshake
//! timeout, and certificate reload on SIGHUP. Certificates come from the test PKI
//! (`common::pki`, rcgen).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------

/// A test's directory of certificate files and configuration, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d =
            std::env::temp_dir().join(format!("shardmq-listeners-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).expect("tmp dir");
        Dir(d)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write file");
        p.display().to_string()
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

use common::pki::{ca, Ca};

/// (certificate PEM, key PEM) signed by `ca` (or self-signed with `None`): a server
/// certificate for the loopbacks, or a client one.
fn leaf(ca: Option<&Ca>, cn: &str, server: bool, expired: bool) -> (String, String) {
    let san: &[&str] = if server {
        &["localhost", "127.0.0.1", "::1"]
    } else {
        &[]
    };
    let spec = common::pki::LeafSpec {
        cn,
        org: Some("Acme"),
        san,
        serial: None,
        expired,
        server: Some(server),
    };
    let l = common::pki::leaf(ca, &spec);
    (l.pem, l.key)
}

/// A CA, a server certificate for the loopbacks, and client certificates good and bad,
/// written to `dir` as `ca.pem`, `server.pem`/`server.key`, `NAME.pem`/`NAME.key`.
fn pki(dir: &Dir) -> Ca {
    let ca1 = ca("Test CA");
    dir.write("ca.pem", &ca1.pem);
    let (c, k) = leaf(Some(&ca1), "localhost", true, false);
    dir.write("server.pem", &c);
    dir.write("server.key", &k);
    let other = ca("Other CA");
    let clients = [
        ("good", leaf(Some(&ca1), "dev1", false, false)),
        ("expired", leaf(Some(&ca1), "dev2", false, true)),
        ("selfsigned", leaf(None, "dev3", false, false)),
        ("otherca", leaf(Some(&other), "dev4", false, false)),
    ];
    for (name, (c, k)) in clients {
        dir.write(&format!("{name}.pem"), &c);
        dir.write(&format!("{name}.key"), &k);
    }
    ca1
}

// ---------------------------------------------------------------------------------------
// A broker started from a configuration file, with every listener's address
// ---------------------------------------------------------------------------------------

struct Proc {
    child: Child,
    addrs: Vec<SocketAddr>,
    admin: Option<SocketAddr>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Start `shardmq ARGS --print-bound` and wait for `listeners` addresses.
    fn start(args: &[&str], listeners: usize) -> Proc {
        let admin: &[&str] = if args.contains(&"--admin") {
            &[]
        } else {
            &["--admin", "off"]
        };
        let mut child = Command::new(Broker::bin())
            .args(["--print-bound", "--no-pin", "--no-persistence"])
            .args(admin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shardmq");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let keep = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                keep.lock().expect("stderr lines").push(line);
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + WAIT;
        let mut addrs = Vec::new();
        let mut admin = None;
        let want_admin = args.windows(2).any(|w| w[0] == "--admin" && w[1] != "off");
        while addrs.len() < listeners || (want_admin && admin.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("listening ") {
                        addrs.push(a.trim().parse().expect("bound address"));
                    } else if let Some(a) = line.strip_prefix("admin ") {
                        admin = Some(a.trim().parse().expect("admin address"));
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "broker did not print {listeners} addresses: {:?}",
                        lines.lock().expect("stderr lines")
                    );
                }
            }
        }
        Proc {
            child,
            addrs,
            admin,
            stderr: lines,
        }
    }

    fn port(&self, i: usize) -> String {
        self.addrs[i].port().to_string()
    }

    fn log_has(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self
                .stderr
                .lock()
                .expect("stderr lines")
                .iter()
                .any(|l| l.contains(needle))
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Seconds of CPU the broker has used (user + system).
    fn cpu_s(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("read /proc/PID/stat");
        let after = &stat[stat.rfind(')').expect("comm") + 2..];
        let f: Vec<&str> = after.split(' ').collect();
        let ticks: f64 =
            f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
        // SAFETY: sysconf has no preconditions.
        ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a command to completion within `within`; (exit status, stdout). Killed if late.
fn run(cmd: &str, args: &[&str], within: Duration) -> (Option<ExitStatus>, String) {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    let mut out = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let status = wait_exit(&mut child, within);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    (status, reader.join().unwrap_or_default())
}

fn ok(st: Option<ExitStatus>) -> bool {
    st.is_some_and(|s| s.success())
}

/// `mosquitto_pub -r` over TLS; true when it exited 0.
fn tls_pub(port: &str, ca: &str, client: Option<(&str, &str)>, topic: &str, msg: &str) -> bool {
    let mut args = vec![
        "-h",
        "127.0.0.1",
        "-p",
        port,
        "--cafile",
        ca,
        "-t",
        topic,
        "-m",
        msg,
        "-r",
        "-q",
        "1",
    ];
    if let Some((c, k)) = client {
        args.extend(["--cert", c, "--key", k]);
    }
    ok(run("mosquitto_pub", &args, WAIT).0)
}

/// `mosquitto_sub -C 1` over TLS for up to `wait_s` seconds: the first payload, if any.
fn tls_sub_one(
    port: &str,
    ca: &str,
    client: Option<(&str, &str)>,
    topic: &str,
    wait_s: &str,
) -> Option<String> {
    let mut args = vec![
        "-h",
        "127.0.0.1",
        "-p",
        port,
        "--cafile",
        ca,
        "-t",
        topic,
        "-C",
        "1",
        "-W",
        wait_s,
    ];
    if let Some((c, k)) = client {
        args.extend(["--cert", c, "--key", k]);
    }
    let (st, out) = run("mosquitto_sub", &args, WAIT + Duration::from_secs(5));
    ok(st).then(|| out.trim().to_string())
}

/// A TLS ClientHello as rustls writes it, for the raw-socket tests.
fn client_hello() -> Vec<u8> {
    let roots = rustls::RootCertStore::empty();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut c = rustls::ClientConnection::new(Arc::new(cfg), name).expect("client");
    let mut out = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut out).expect("write hello");
    }
    out
}

/// Read from `s` until the peer closes it (EOF or reset); how long that took.
fn time_to_close(s: &mut TcpStream, within: Duration) -> Duration {
    let start = Instant::now();
    s.set_read_timeout(Some(within)).expect("read timeout");
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("still open after {within:?}")
            }
            Err(_) => return start.elapsed(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// mosquitto_pub/mosquitto_sub with `--cafile` against a TLS listener started from the
/// command line; the same clients without TLS are refused.
#[test]
fn tls_with_mosquitto_clients() {
    let d = Dir::new("tls");
    pki(&d);
    let (cert, key, ca) = (d.path("server.pem"), d.path("server.key"), d.path("ca.pem"));
    let b = Proc::start(
        &[
            "--shards",
            "2",
            "--bind",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
        1,
    );
    let port = b.port(0);
    assert!(
        tls_pub(&port, &ca, None, "tls/t", "over tls"),
        "mosquitto_pub --cafile"
    );
    let got = tls_sub_one(&port, &ca, None, "tls/t", "5");
    assert_eq!(got.as_deref(), Some("over tls"));
    let plain = ["-h", "127.0.0.1", "-p", &port, "-t", "x", "-m", "y"];
    assert!(
        !ok(run("mosquitto_pub", &plain, WAIT).0),
        "plain MQTT on a TLS port"
    );
}

/// A `require_certificate` listener: a client certificate from the CA is served; one that
/// is expired, self-signed, from another CA or missing is refused before any MQTT (its
/// retained PUBLISH never lands).
#[test]
fn mutual_tls_refuses_bad_client_certificates() {
    let d = Dir::new("mtls");
    pki(&d);
    let conf = d.write(
        "m.conf",
        &format!(
            "listener 0 127.0.0.1\ncertfile {}\nkeyfile {}\ncafile {}\nrequire_certificate true\nuse_identity_as_username true\n",
            d.path("server.pem"),
            d.path("server.key"),
            d.path("ca.pem")
        ),
    );
    let b = Proc::start(&["-c", &conf], 1);
    let (port, ca) = (b.port(0), d.path("ca.pem"));
    let good = (d.path("good.pem"), d.path("good.key"));
    let good = Some((good.0.as_str(), good.1.as_str()));
    for bad in ["expired", "selfsigned", "otherca"] {
        let (c, k) = (d.path(&format!("{bad}.pem")), d.path(&format!("{bad}.key")));
        let topic = format!("bad/{bad}");
        assert!(
            !tls_pub(&port, &ca, Some((&c, &k)), &topic, bad),
            "{bad} certificate accepted"
        );
    }
    assert!(
        !tls_pub(&port, &ca, None, "bad/none", "none"),
        "no certificate accepted"
    );
    assert!(
        tls_pub(&port, &ca, good, "good/t", "mtls"),
        "good certificate refused"
    );
    assert_eq!(
        tls_sub_one(&port, &ca, good, "good/t", "5").as_deref(),
        Some("mtls")
    );
    // Nothing the refused clients sent was processed as MQTT.
    assert_eq!(tls_sub_one(&port, &ca, good, "bad/#", "1"), None);
}

/// The same refusals over secure WebSocket, with paho-mqtt.
#[test]
fn mutual_tls_over_wss_refuses_bad_client_certificates() {
    let d = Dir::new("mwss");
    pki(&d);
    let conf = d.write(
        "m.conf",
        &format!(
            "listener 0 127.0.0.1\nprotocol websockets\ncertfile {}\nkeyfile {}\ncafile {}\nrequire_certificate true\n",
            d.path("server.pem"),
            d.path("server.key"),
            d.path("ca.pem")
        ),
    );
    let b = Proc::start(&["-c", &conf], 1);
    let (port, ca) = (b.port(0), d.path("ca.pem"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/listeners/paho_cert.py");
    let connect = |name: Option<&str>| {
        let files = name.map(|n| (d.path(&format!("{n}.pem")), d.path(&format!("{n}.key"))));
        let mut args = vec![script, port.as_str(), ca.as_str()];
        if let Some((c, k)) = &files {
            args.extend([c.as_str(), k.as_str()]);
        }
        ok(run("python3", &args, Duration::from_secs(20)).0)
    };
    assert!(connect(Some("good")), "good certificate refused over WSS");
    for bad in [Some("expired"), Some("selfsigned"), Some("otherca"), None] {
        assert!(!connect(bad), "{bad:?} accepted over WSS");
    }
}

/// `bind_interface lo`: the listener is bound to the loopback device and serves on it.
#[test]
fn bind_interface_loopback() {
    let d = Dir::new("iface");
    let conf = d.write("m.conf", "listener 0 127.0.0.1\nbind_interface lo\n");
    let mut child = Command::new(Broker::bin())
        .args([
            "--print-bound",
            "--no-pin",
            "--no-persistence",
            "--admin",
            "off",
            "-c",
            &conf,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // SO_BINDTODEVICE may need CAP_NET_RAW: then the broker must refuse to start, naming it.
    if let Some(st) = wait_exit(&mut child, Duration::from_millis(500)) {
        let mut err = String::new();
        let _ = child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err);
        assert!(!st.success() && err.contains("bind_interface lo"), "{err}");
        eprintln!("bind_interface not permitted here; refusal checked");
        return;
    }
    let _ = child.kill();
    let _ = child.wait();
    let b = Proc::start(&["-c", &conf], 1);
    let mut c = RawClient::clean(b.addrs[0], "on-lo");
    c.ping();
}

/// `GET path` from the admin listener: the body.
fn admin_get(addr: SocketAddr, path: &str) -> String {
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
        .unwrap_or_default()
}

/// `use_identity_as_username` / `use_subject_as_username`: the client certificate names
/// the user (no username in CONNECT), also after the connection moved to its home shard.
#[test]
fn client_certificate_names_the_user() {
    let d = Dir::new("ident");
    pki(&d);
    let (cert, key, ca) = (d.path("server.pem"), d.path("server.key"), d.path("ca.pem"));
    let conf = d.write(
        "m.conf",
        &format!(
            "listener 0 127.0.0.1\ncertfile {cert}\nkeyfile {key}\ncafile {ca}\nrequire_certificate true\nuse_identity_as_username true\n\
             listener 0 127.0.0.1\ncertfile {cert}\nkeyfile {key}\ncafile {ca}\nrequire_certificate true\nuse_subject_as_username true\n"
        ),
    );
    let b = Proc::start(&["-c", &conf, "--shards", "2", "--admin", "127.0.0.1:0"], 2);
    let admin = b.admin.expect("admin address");
    let (c, k) = (d.path("good.pem"), d.path("good.key"));
    let mut subs = Vec::new();
    let clients = [
        (0, id_on("cn", 0, 2), "dev1"),
        (0, id_on("cn", 1, 2), "dev1"),
        (1, id_on("subject", 1, 2), "CN=dev1,O=Acme"),
    ];
    for (listener, id, _) in &clients {
        let port = b.port(*listener);
        let args = [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "--cafile",
            &ca,
            "--cert",
            &c,
            "--key",
            &k,
            "-t",
            "never",
            "-i",
            id,
            "-W",
            "20",
        ];
        subs.push(
            Command::new("mosquitto_sub")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn mosquitto_sub"),
        );
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let body = admin_get(admin, "/api/v1/clients");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let rows = v["clients"].as_array().cloned().unwrap_or_default();
        let named = |id: &str, user: &str| {
            rows.iter()
                .any(|r| r["client_id"] == id && r["username"] == user)
        };
        if clients.iter().all(|(_, id, user)| named(id, user)) {
            break;
        }
        assert!(Instant::now() < deadline, "usernames never matched: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The handshakes are counted; a plain MQTT CONNECT on the TLS port is a refused one.
    let mut plain = TcpStream::connect(b.addrs[0]).expect("connect");
    plain
        .write_all(&connect_v311_bytes("plain"))
        .expect("send connect");
    time_to_close(&mut plain, WAIT);
    let total = |result: &str| -> u64 {
        admin_get(admin, "/metrics")
            .lines()
            .filter(|l| {
                l.starts_with("shardmq_tls_handshakes_total")
                    && l.contains(&format!("result=\"{result}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let deadline = Instant::now() + WAIT;
    while total("success") < 3 || total("failure") < 1 {
        assert!(Instant::now() < deadline, "TLS handshakes not counted");
        std::thread::sleep(Duration::from_millis(100));
    }
    for mut s in subs {
        let _ = s.kill();
        let _ = s.wait();
    }
}

/// paho-mqtt over TCP, TLS, WebSocket and WSS on one broker with two shards: a TCP publish
/// reaches the TLS, WS and WSS subscribers on the other shard, and their publishes reach
/// a TCP subscriber back.
#[test]
fn paho_over_every_transport_across_shards() {
    let d = Dir::new("paho");
    pki(&d);
    let (cert, key) = (d.path("server.pem"), d.path("server.key"));
    let conf = d.write(
        "m.conf",
        &format!(
            "listener 0 127.0.0.1\n\
             listener 0 127.0.0.1\ncertfile {cert}\nkeyfile {key}\n\
             listener 0 127.0.0.1\nprotocol websockets\nwebsockets_path /mqtt\n\
             listener 0 127.0.0.1\nprotocol websockets\ncertfile {cert}\nkeyfile {key}\n"
        ),
    );
    let b = Proc::start(&["-c", &conf, "--shards", "2"], 4);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/listeners/paho_transports.py"
    );
    let ids = [
        id_on("pub", 0, 2),
        id_on("tls", 1, 2),
        id_on("ws", 1, 2),
        id_on("wss", 1, 2),
        id_on("back", 0, 2),
    ];
    let ca = d.path("ca.pem");
    let ports: Vec<String> = (0..4).map(|i| b.port(i)).collect();
    let mut args: Vec<&str> = vec![script];
    args.extend(ports.iter().map(String::as_str));
    args.push(&ca);
    args.extend(ids.iter().map(String::as_str));
    let (st, out) = run("python3", &args, Duration::from_secs(60));
    assert!(ok(st), "paho script: {out}");
    assert!(out.contains("OK"), "{out}");
}

/// rumqttc over rustls: subscribe and publish through a TLS listener.
#[test]
fn rumqttc_over_rustls() {
    let d = Dir::new("rumq");
    let ca = pki(&d);
    let (cert, key) = (d.path("server.pem"), d.path("server.key"));
    let b = Proc::start(
        &[
            "--bind",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
        1,
    );
    let mut o = rumq_options(b.addrs[0], "rumq-tls", true);
    // Larger than a TLS record (16 KiB): the packet spans records both ways.
    o.set_max_packet_size(64 * 1024, 64 * 1024);
    o.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Simple {
        ca: ca.pem.into_bytes(),
        alpn: None,
        client_auth: None,
    }));
    let (client, mut conn, _) = rumq_connect(o);
    client
        .subscribe("r/#", rumqttc::QoS::AtLeastOnce)
        .expect("subscribe");
    rumq_suback(&mut conn);
    client
        .publish("r/1", rumqttc::QoS::AtLeastOnce, false, vec![7u8; 20_000])
        .expect("publish");
    let p = rumq_publish(&mut conn, WAIT);
    assert_eq!((p.topic.as_str(), p.payload.len()), ("r/1", 20_000));
}

/// Plain MQTT to a TLS port and a TLS ClientHello to a plain port are both closed at once.
#[test]
fn wrong_protocol_is_closed_promptly() {
    let d = Dir::new("wrong");
    pki(&d);
    let conf = d.write(
        "m.conf",
        &format!(
            "listener 0 127.0.0.1\nlistener 0 127.0.0.1\ncertfile {}\nkeyfile {}\n",
            d.path("server.pem"),
            d.path("server.key")
        ),
    );
    let b = Proc::start(&["-c", &conf], 2);
    let mut to_tls = TcpStream::connect(b.addrs[1]).expect("connect tls");
    to_tls
        .write_all(&connect_v311_bytes("plain-on-tls"))
        .expect("send connect");
    assert!(time_to_close(&mut to_tls, WAIT) < Duration::from_secs(2));
    let mut to_plain = TcpStream::connect(b.addrs[0]).expect("connect plain");
    to_plain.write_all(&client_hello()).expect("send hello");
    assert!(time_to_close(&mut to_plain, WAIT) < Duration::from_secs(2));
}

/// A ClientHello trickled at one byte a second is closed by the handshake (CONNECT)
/// timeout, and the broker does not spin meanwhile (RELIABILITY T1–T3).
#[test]
fn trickled_client_hello_is_closed_by_the_timeout_without_spinning() {
    let d = Dir::new("trickle");
    pki(&d);
    let (cert, key) = (d.path("server.pem"), d.path("server.key"));
    let b = Proc::start(
        &[
            "--bind",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--connect-timeout",
            "2",
        ],
        1,
    );
    let mut s = TcpStream::connect(b.addrs[0]).expect("connect");
    let mut w = s.try_clone().expect("clone");
    let hello = client_hello();
    let cpu_before = b.cpu_s();
    let trickler = std::thread::spawn(move || {
        for byte in hello.iter().take(10) {
            if w.write_all(std::slice::from_ref(byte)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let took = time_to_close(&mut s, Duration::from_secs(8));
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    let cpu = b.cpu_s() - cpu_before;
    assert!(
        cpu < 0.5,
        "broker used {cpu:.2} s of CPU while the hello trickled"
    );
    let _ = trickler.join();
}

/// IPv6: a client on ::1 and a client on 127.0.0.1 talk through one broker; the default
/// listener (no --bind, -p PORT) listens on both loopbacks.
#[test]
fn ipv6_and_ipv4_loopbacks_talk() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this host; skipped");
        return;
    }
    let b = Proc::start(
        &[
            "--bind",
            "127.0.0.1:0",
            "--bind",
            "[::1]:0",
            "--shards",
            "2",
        ],
        2,
    );
    assert!(b.addrs[1].is_ipv6());
    let mut sub = RawClient::clean(b.addrs[1], &id_on("v6", 1, 2));
    sub.subscribe("six/#", 1);
    let mut pubr = RawClient::clean(b.addrs[0], &id_on("v4", 0, 2));
    let deadline = Instant::now() + WAIT;
    let got = loop {
        pubr.publish("six/x", b"from v4", 1, false);
        if let Ok(g) = sub.try_packet(Duration::from_millis(300)) {
            break g;
        }
        assert!(Instant::now() < deadline, "no publish over ::1");
    };
    assert!(format!("{got:?}").contains("six/x"), "{got:?}");

    // The default listener: -p PORT on both loopbacks (a port free on both, just now).
    let port = loop {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind v4");
        let p = v4.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("::1", p)).is_ok() {
            break p;
        }
    };
    let p = port.to_string();
    let d = Proc::start(&["-p", &p], 2);
    assert!(d.addrs.iter().any(SocketAddr::is_ipv4) && d.addrs.iter().any(SocketAddr::is_ipv6));
    let args = ["-h", "::1", "-p", &p, "-t", "d", "-m", "over ::1", "-r"];
    assert!(
        ok(run("mosquitto_pub", &args, WAIT).0),
        "mosquitto_pub -h ::1"
    );
    let args = ["-h", "127.0.0.1", "-p", &p, "-t", "d", "-C", "1", "-W", "5"];
    let (st, out) = run("mosquitto_sub", &args, WAIT);
    assert!(ok(st));
    assert_eq!(out.trim(), "over ::1");
}

/// `max_connections`: the listener's limit holds across shards; a slot comes back when a
/// connection closes.
#[test]
fn max_connections_per_listener() {
    let d = Dir::new("maxconn");
    let conf = d.write("m.conf", "listener 0 127.0.0.1\nmax_connections 2\n");
    let b = Proc::start(&["-c", &conf, "--shards", "2"], 1);
    let a1 = RawClient::clean(b.addrs[0], "m1");
    let _a2 = RawClient::clean(b.addrs[0], "m2");
    let mut third = TcpStream::connect(b.addrs[0]).expect("connect");
    assert!(time_to_close(&mut third, WAIT) < Duration::from_secs(2));
    a1.disconnect();
    // The slot is released when the broker closes the first connection.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut c = RawClient::connect(b.addrs[0]);
        c.send_bytes(&connect_v311_bytes("m3"));
        if c.try_packet(Duration::from_millis(500)).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "slot never released");
    }
}

/// `enable_proxy_protocol 1`: the client address comes from the header; a connection
/// without one is closed.
#[test]
fn proxy_protocol_header_sets_the_peer() {
    let d = Dir::new("proxy");
    let conf = d.write("m.conf", "listener 0 127.0.0.1\nenable_proxy_protocol 1\n");
    let b = Proc::start(&["-c", &conf, "-v"], 1);
    let mut c = RawClient::connect(b.addrs[0]);
    let mut bytes = b"PROXY TCP4 192.0.2.7 127.0.0.1 4242 1883\r\n".to_vec();
    bytes.extend(connect_v311_bytes("proxied"));
    c.send_bytes(&bytes);
    let g = c.expect_packet(WAIT);
    assert!(format!("{g:?}").contains("ConnAck"), "{g:?}");
    assert!(
        b.log_has("192.0.2.7:4242", WAIT),
        "proxied address not logged"
    );
    let mut bare = TcpStream::connect(b.addrs[0]).expect("connect");
    bare.write_all(&connect_v311_bytes("bare")).expect("send");
    assert!(time_to_close(&mut bare, WAIT) < Duration::from_secs(2));
}

/// A PROXY v2 header from 192.0.2.9:12345, with a `PP2_TYPE_SSL` TLV when `ssl` is
/// `(client flags, verify result, CN)`, as HAProxy sends after terminating TLS.
fn proxy_v2(ssl: Option<(u8, u32, &str)>) -> Vec<u8> {
    let mut body = vec![192, 0, 2, 9, 127, 0, 0, 1, 0x30, 0x39, 0x07, 0x5b];
    if let Some((client, verify, cn)) = ssl {
        let mut v = vec![client];
        v.extend(verify.to_be_bytes());
        v.push(0x22); // PP2_SUBTYPE_SSL_CN
        v.extend((cn.len() as u16).to_be_bytes());
        v.extend(cn.as_bytes());
        body.push(0x20); // PP2_TYPE_SSL
        body.extend((v.len() as u16).to_be_bytes());
        body.extend(v);
    }
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend([0x21, 0x11]); // v2 PROXY, TCP over IPv4
    h.extend((body.len() as u16).to_be_bytes());
    h.extend(body);
    h
}

/// TLS terminated by a proxy (`enable_proxy_protocol 2`, `require_certificate true`,
/// `use_identity_as_username true`, no `certfile`): the client certificate CN of the
/// header's SSL TLV is the username (no password needed, anonymous clients refused), also
/// after the connection moved to its home shard; a
/// header whose certificate the proxy did not verify, or without one, is refused before
/// any MQTT is answered.
#[test]
fn proxy_v2_client_certificate_cn_names_the_user() {
    let d = Dir::new("proxycn");
    let conf = d.write(
        "m.conf",
        "allow_anonymous false\nlistener 0 127.0.0.1\nenable_proxy_protocol 2\nrequire_certificate true\nuse_identity_as_username true\n",
    );
    let b = Proc::start(&["-c", &conf, "--shards", "2", "--admin", "127.0.0.1:0"], 1);
    let admin = b.admin.expect("admin address");
    let clients = [(id_on("pcn", 0, 2), "dev-a"), (id_on("pcn", 1, 2), "dev-b")];
    let mut held = Vec::new();
    for (id, cn) in &clients {
        let mut c = RawClient::connect(b.addrs[0]);
        // SSL, certificate in this connection, verified (0).
        let mut bytes = proxy_v2(Some((0x01 | 0x02, 0, cn)));
        bytes.extend(connect_v311_bytes(id));
        c.send_bytes(&bytes);
        // Accepted without a password although anonymous clients are not allowed.
        let g = c.expect_packet(WAIT);
        assert!(matches!(g, Got::ConnAck { code: 0, .. }), "{cn}: {g:?}");
        held.push(c);
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let body = admin_get(admin, "/api/v1/clients");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let rows = v["clients"].as_array().cloned().unwrap_or_default();
        let named = |id: &str, user: &str| {
            rows.iter()
                .any(|r| r["client_id"] == id && r["username"] == user)
        };
        if clients.iter().all(|(id, cn)| named(id, cn)) {
            break;
        }
        assert!(Instant::now() < deadline, "usernames never matched: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let refused = [
        Some((0x03, 1, "unverified")), // the proxy's verification failed
        Some((0x01, 0, "nocert")),     // TLS, but no client certificate
        None,                          // no SSL TLV at all
    ];
    for ssl in refused {
        let mut s = TcpStream::connect(b.addrs[0]).expect("connect");
        let mut bytes = proxy_v2(ssl);
        bytes.extend(connect_v311_bytes("refused"));
        s.write_all(&bytes).expect("send");
        s.set_read_timeout(Some(WAIT)).expect("read timeout");
        let mut got = Vec::new();
        let r = s.read_to_end(&mut got);
        let closed = r.is_ok() || r.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset);
        assert!(closed, "{ssl:?}: not closed within {WAIT:?}");
        assert!(got.is_empty(), "{ssl:?}: answered {got:?}");
    }
    drop(held);
}

/// SIGHUP reloads certificate files: new handshakes use the new ones, a connection made
/// before stays, and a bad file keeps the previous configuration.
#[test]
fn sighup_reloads_certificates() {
    let d = Dir::new("reload");
    pki(&d);
    let (cert, key) = (d.path("server.pem"), d.path("server.key"));
    let b = Proc::start(
        &[
            "--bind",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
        1,
    );
    let port = b.port(0);
    let ca1 = d.path("ca.pem");
    // A subscriber connected before the reload: it prints the retained `ready` once in.
    assert!(tls_pub(&port, &ca1, None, "ready", "1"));
    let mut early = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "--cafile", &ca1])
        .args(["-t", "ready", "-t", "after", "-C", "2", "-W", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mosquitto_sub");
    let out = early.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    assert_eq!(
        rx.recv_timeout(WAIT).ok().as_deref(),
        Some("1"),
        "early subscriber"
    );
    let ca2 = ca("Second CA");
    let ca2_path = d.write("ca2.pem", &ca2.pem);
    let (c2, k2) = leaf(Some(&ca2), "localhost", true, false);
    d.write("server.pem", &c2);
    d.write("server.key", &k2);
    signal(b.child.id(), libc::SIGHUP);
    assert!(b.log_has("Configuration reloaded.", WAIT));
    assert!(
        tls_pub(&port, &ca2_path, None, "t", "new"),
        "new certificate not served"
    );
    assert!(
        !tls_pub(&port, &ca1, None, "t", "old"),
        "old certificate still served"
    );
    // A bad file: the reload is refused and the current certificate stays.
    d.write("server.pem", "not a certificate");
    signal(b.child.id(), libc::SIGHUP);
    assert!(b.log_has("reload refused, keeping the running configuration", WAIT));
    assert!(tls_pub(&port, &ca2_path, None, "t", "still"));
    // The early connection is still there: publish until it gets one (it exits).
    let deadline = Instant::now() + WAIT;
    loop {
        let args = [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "--cafile",
            &ca2_path,
            "-t",
            "after",
            "-m",
            "x",
        ];
        let _ = run("mosquitto_pub", &args, WAIT);
        if let Some(st) = wait_exit(&mut early, Duration::from_millis(300)) {
            assert!(st.success(), "early subscriber failed: {st:?}");
            break;
        }
        assert!(Instant::now() < deadline, "early subscriber lost");
    }
}

/// `mount_point`: a mounted listener's clients publish and subscribe under the prefix
/// without seeing it; clients of other listeners see the full topics.
#[test]
fn mount_point_prefixes_in_and_strips_out() {
    let d = Dir::new("mount");
    let conf = d.write(
        "m.conf",
        "listener 0 127.0.0.1\nlistener 0 127.0.0.1\nmount_point site/\n",
    );
    let b = Proc::start(&["-c", &conf, "--shards", "2"], 2);
    let mut m = RawClient::clean(b.addrs[1], &id_on("mounted", 1, 2));
    m.subscribe("a/#", 1);
    m.subscribe("$share/g/c/#", 1);
    let mut t = RawClient::clean(b.addrs[0], &id_on("plain", 0, 2));
    t.subscribe("site/b/#", 1);
    // Routes to the other shard are set up asynchronously: publish until one arrives.
    let deadline = Instant::now() + WAIT;
    let first = loop {
        t.publish("site/a/1", b"in", 1, false);
        if let Ok(g) = m.try_packet(Duration::from_millis(300)) {
            break g;
        }
        assert!(
            Instant::now() < deadline,
            "nothing reached the mounted client"
        );
    };
    assert!(format!("{first:?}").contains("\"a/1\""), "{first:?}");
    while m.try_packet(Duration::from_millis(300)).is_ok() {}
    // Outside the mount point: never delivered; then the shared subscription under it.
    t.publish("a/2", b"outside", 1, false);
    t.publish("site/c/3", b"shared", 1, false);
    let got = m.expect_publish(WAIT);
    assert_eq!(
        (got.topic.as_str(), got.payload.as_slice()),
        ("c/3", &b"shared"[..])
    );
    // The mounted client's publish lands under the prefix.
    m.publish("b/1", b"out", 1, false);
    let got = t.expect_publish(WAIT);
    assert_eq!(got.topic, "site/b/1");
}
