//! Shared harness of the black-box tests: a broker process on an ephemeral port, a raw
//! MQTT client built on the project's codec, hand-made wire bytes, and rumqttc helpers.
//!
//! Every wait is bounded. The only fixed-duration wait is `expect_nothing`, which asserts
//! that nothing arrives during a short window.
#![allow(dead_code)]

pub mod canary;
pub mod mosquitto;
pub mod nats;
pub mod pki;

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::num::NonZeroU16;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shardmq::protocol::{
    self, Ack, Connect, Decoded, Packet, Properties, Publish, QoS, ReasonCode, Subscribe,
    Subscription, SubscriptionList, SubscriptionOptions, Unsubscribe, Version, Will,
};

/// Default bound for "this should arrive": generous, since tests run in parallel on few cores.
pub const WAIT: Duration = Duration::from_secs(5);
/// Window for "nothing more arrives".
pub const QUIET: Duration = Duration::from_millis(300);

/// Generate one `#[test]` per shard count for each named `fn name(shards: usize)`.
#[macro_export]
macro_rules! shard_tests {
    ($($name:ident),* $(,)?) => {
        mod shards_1 {
            $( #[test] fn $name() { super::$name(1) } )*
        }
        mod shards_4 {
            $( #[test] fn $name() { super::$name(4) } )*
        }
    };
}

// ---------------------------------------------------------------------------------------
// The broker process
// ---------------------------------------------------------------------------------------

/// A running `shardmq` child process, killed on drop.
pub struct Broker {
    child: Option<Child>,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    /// The temporary store this harness made for it (removed on drop).
    data_dir: Option<std::path::PathBuf>,
}

impl Broker {
    /// The path of the broker binary built by cargo for this test run.
    pub fn bin() -> &'static str {
        env!("CARGO_BIN_EXE_shardmq")
    }

    /// Start the broker on an ephemeral port with `args` added; wait for `listening ADDR`.
    pub fn start(args: &[&str]) -> Broker {
        Broker::start_env(args, &[])
    }

    /// [`Broker::start`] with environment variables `envs` set for the broker only.
    pub fn start_env(args: &[&str], envs: &[(&str, &str)]) -> Broker {
        let mut cmd = Command::new(Self::bin());
        cmd.envs(envs.iter().copied());
        cmd.args(["--bind", "127.0.0.1:0", "--print-bound", "--no-pin"]);
        // Parallel tests must never compete for the admin listener's default port.
        if !args.contains(&"--admin") {
            cmd.args(["--admin", "off"]);
        }
        // Tests never write a store into the repository or share one: a test that wants
        // persistence passes its own fresh `--data-dir`. SHARDMQ_TEST_PERSIST=1 runs the
        // others with persistence on too, each in a fresh temporary store.
        let mut data_dir = None;
        if !args.contains(&"--data-dir") {
            if std::env::var_os("SHARDMQ_TEST_PERSIST").is_some() {
                let dir = fresh_data_dir();
                cmd.arg("--data-dir").arg(&dir);
                data_dir = Some(dir);
            } else {
                cmd.arg("--no-persistence");
            }
        }
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped());
        // Set SHARDMQ_TEST_LOG=1 to see the broker's stderr (add `-v` for packet logs).
        if std::env::var_os("SHARDMQ_TEST_LOG").is_some() {
            cmd.stderr(Stdio::inherit());
        } else {
            cmd.stderr(Stdio::null());
        }
        let mut child = cmd.spawn().expect("spawn shardmq");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining stdout for the child's whole life so it never blocks on it.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        // A big store takes longer to recover (docs/benchmarks.md, recovery time): set
        // SHARDMQ_TEST_START_S to wait longer than the default 10 s for the listener.
        let start_s = std::env::var("SHARDMQ_TEST_START_S")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10u64);
        let deadline = Instant::now() + Duration::from_secs(start_s);
        // With an admin listener asked for, its `admin ADDR` line follows the listeners'.
        let want_admin = args.windows(2).any(|w| w[0] == "--admin" && w[1] != "off");
        let (mut addr, mut admin) = (None, None);
        while addr.is_none() || (want_admin && admin.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("listening ") {
                        addr = addr.or(Some(a.trim().parse().expect("bound address")));
                    } else if let Some(a) = line.strip_prefix("admin ") {
                        admin = Some(a.trim().parse().expect("admin address"));
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait();
                    panic!("broker did not print its addresses within {start_s} s ({status:?})");
                }
            }
        }
        Broker {
            child: Some(child),
            addr: addr.expect("loop ends with an address"),
            admin,
            data_dir,
        }
    }

    /// Start with `--shards N` plus `args`.
    pub fn with_shards(shards: usize, args: &[&str]) -> Broker {
        let n = shards.to_string();
        let mut all = vec!["--shards", n.as_str()];
        all.extend_from_slice(args);
        Broker::start(&all)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's address, when started with `--admin ADDR:PORT`.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Resident set size of the broker in KiB (from /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS line")
    }

    /// True while the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Send SIGTERM and wait (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        signal(self.pid(), libc::SIGTERM);
        self.wait(within)
    }

    /// Wait (bounded) for the process to exit on its own; its exit status.
    pub fn wait(&mut self, within: Duration) -> Option<ExitStatus> {
        wait_exit(self.child.as_mut()?, within)
    }
}

/// How long a broker stopped with SIGTERM on drop (`SHARDMQ_TEST_STOP_TERM`) may take to
/// exit before it is killed: generous for a sanitizer build on a loaded machine.
const TERM_EXIT_MAX: Duration = Duration::from_secs(20);

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SHARDMQ_TEST_STOP_TERM=1 (set by scripts/asan) stops the broker as an operator
            // would, so that it exits through `main` and LeakSanitizer checks it at exit; a
            // SIGKILL leaves nothing to check. A broker that does not exit in time is killed.
            // `try_wait` first: a child already reaped (by `terminate`) may have had its pid
            // reused, and must not be signalled.
            let running = matches!(c.try_wait(), Ok(None));
            if running && std::env::var_os("SHARDMQ_TEST_STOP_TERM").is_some() {
                if let Ok(pid) = libc::pid_t::try_from(c.id()) {
                    // SAFETY: kill(2) with a pid we spawned and have not reaped (checked above).
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                    let _ = wait_exit(&mut c, TERM_EXIT_MAX);
                }
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(d) = self.data_dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A store directory no other broker of this run uses.
fn fresh_data_dir() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("shardmq-test-{}-{n}", std::process::id()))
}

/// Send `sig` to process `pid`.
pub fn signal(pid: u32, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// Poll `child` until it exits or `within` passes.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client id with the prefix `prefix` whose home shard is `shard` of `shards`.
pub fn id_on(prefix: &str, shard: usize, shards: usize) -> String {
    (0..10_000)
        .map(|i| format!("{prefix}-{i}"))
        .find(|id| shardmq::broker::home_shard(id, shards) == shard % shards.max(1))
        .expect("an id for every shard")
}

/// `n` client ids, the i-th on shard `i % shards`, so sessions spread over the shards.
pub fn spread_ids(prefix: &str, n: usize, shards: usize) -> Vec<String> {
    (0..n)
        .map(|i| id_on(&format!("{prefix}{i}"), i, shards))
        .collect()
}

/// A QoS 0 subscriber to `filter` on the home shard of client id `of`. Routing between
/// shards is asynchronous (a publisher's PUBACK does not wait for other shards), so a test
/// that must know a shard has routed some messages waits until this probe has them: the
/// bus is FIFO per pair of shards.
pub fn probe(addr: SocketAddr, of: &str, shards: usize, filter: &str) -> RawClient {
    let home = shardmq::broker::home_shard(of, shards);
    let mut p = RawClient::clean(addr, &id_on(&format!("probe-{of}"), home, shards));
    p.subscribe(filter, 0);
    p
}

// ---------------------------------------------------------------------------------------
// What a raw client receives, owned
// ---------------------------------------------------------------------------------------

/// A received PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// QoS 0, 1 or 2.
    pub qos: u8,
    /// RETAIN flag.
    pub retain: bool,
    /// DUP flag.
    pub dup: bool,
    /// Packet id (QoS > 0).
    pub pid: Option<u16>,
}

impl Msg {
    /// The payload as text (lossy), for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// An owned summary of a packet received from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    /// CONNACK with its 3.x return code (0..=5; 0xFF for anything else).
    ConnAck {
        /// Session Present.
        present: bool,
        /// Return code.
        code: u8,
    },
    /// PUBLISH.
    Publish(Msg),
    /// PUBACK.
    PubAck(u16),
    /// PUBREC.
    PubRec(u16),
    /// PUBREL.
    PubRel(u16),
    /// PUBCOMP.
    PubComp(u16),
    /// SUBACK with its return codes.
    SubAck {
        /// Packet id.
        pid: u16,
        /// One code per filter.
        codes: Vec<u8>,
    },
    /// UNSUBACK.
    UnsubAck(u16),
    /// PINGRESP.
    PingResp,
    /// Anything a server should not send a 3.x client.
    Other(&'static str),
}

/// The 3.x CONNACK return code of a reason code.
pub fn v3_return_code(r: ReasonCode) -> u8 {
    match r {
        ReasonCode::Success => 0,
        ReasonCode::UnsupportedProtocolVersion => 1,
        ReasonCode::ClientIdentifierNotValid => 2,
        ReasonCode::ServerUnavailable => 3,
        ReasonCode::BadUserNameOrPassword => 4,
        ReasonCode::NotAuthorized => 5,
        _ => 0xFF,
    }
}

fn own(p: &Packet<'_>) -> Got {
    match p {
        Packet::ConnAck(c) => Got::ConnAck {
            present: c.session_present,
            code: v3_return_code(c.reason),
        },
        Packet::Publish(p) => Got::Publish(Msg {
            topic: p.topic.to_string(),
            payload: p.payload.to_vec(),
            qos: p.qos as u8,
            retain: p.retain,
            dup: p.dup,
            pid: p.packet_id.map(NonZeroU16::get),
        }),
        Packet::PubAck(a) => Got::PubAck(a.packet_id.get()),
        Packet::PubRec(a) => Got::PubRec(a.packet_id.get()),
        Packet::PubRel(a) => Got::PubRel(a.packet_id.get()),
        Packet::PubComp(a) => Got::PubComp(a.packet_id.get()),
        Packet::SubAck(s) => Got::SubAck {
            pid: s.packet_id.get(),
            codes: s.codes.to_vec(),
        },
        Packet::UnsubAck(u) => Got::UnsubAck(u.packet_id.get()),
        Packet::PingResp => Got::PingResp,
        other => Got::Other(other.name()),
    }
}

/// Why a wait ended without a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitError {
    /// Nothing (complete) arrived in time.
    Timeout,
    /// The broker closed the connection (EOF or reset).
    Closed,
    /// The broker sent bytes the codec rejects.
    Garbage(String),
}

// ---------------------------------------------------------------------------------------
// Raw client
// ---------------------------------------------------------------------------------------

/// How a raw client connects.
#[derive(Debug, Clone)]
pub struct ConnectOpts<'a> {
    /// Protocol version.
    pub version: Version,
    /// Client id.
    pub id: &'a str,
    /// Clean Session.
    pub clean: bool,
    /// Keep Alive, seconds.
    pub keep_alive: u16,
    /// Will: (topic, payload, qos, retain).
    pub will: Option<(&'a str, &'a [u8], u8, bool)>,
}

impl<'a> ConnectOpts<'a> {
    /// 3.1.1 defaults: clean session, keep alive 60, no will.
    pub fn v311(id: &'a str) -> Self {
        ConnectOpts {
            version: Version::V3_1_1,
            id,
            clean: true,
            keep_alive: 60,
            will: None,
        }
    }
}

/// QoS from 0..=2.
pub fn qos(q: u8) -> QoS {
    QoS::from_bits(q).expect("QoS 0..=2")
}

fn pid(p: u16) -> NonZeroU16 {
    NonZeroU16::new(p).expect("nonzero packet id")
}

/// A hand-driven MQTT connection: encodes with the project's codec, decodes what comes back.
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Packets received while waiting for something else.
    stash: VecDeque<Got>,
    version: Version,
    next_pid: u16,
    /// The id this client connected with (for messages).
    pub id: String,
}

impl RawClient {
    /// Open a TCP connection (no MQTT yet).
    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).expect("tcp connect to broker");
        stream.set_nodelay(true).expect("nodelay");
        RawClient {
            stream,
            buf: Vec::new(),
            stash: VecDeque::new(),
            version: Version::V3_1_1,
            next_pid: 0,
            id: String::new(),
        }
    }

    /// The TCP stream, for tests that need to poke at it.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Encode and send a packet.
    pub fn send(&mut self, p: &Packet<'_>) {
        let mut out = Vec::new();
        protocol::encode(p, self.version, &mut out);
        assert!(!out.is_empty(), "codec encoded {} to nothing", p.name());
        self.send_bytes(&out);
    }

    /// Send raw bytes; a failure (the broker already closed) is ignored.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Send raw bytes and report whether the write succeeded.
    pub fn try_send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Half-close nothing, just drop the TCP stream abruptly (no DISCONNECT).
    pub fn drop_tcp(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// A fresh packet id (1..=65535, wrapping).
    pub fn next_pid(&mut self) -> u16 {
        self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
        self.next_pid
    }

    /// Try to take one packet from the receive buffer.
    fn take_buffered(&mut self) -> Result<Option<Got>, WaitError> {
        match protocol::decode(&self.buf, self.version, usize::MAX) {
            Ok(Decoded::Packet { packet, len }) => {
                let got = own(&packet);
                self.buf.drain(..len);
                Ok(Some(got))
            }
            Ok(Decoded::Incomplete { .. }) => Ok(None),
            Err(e) => Err(WaitError::Garbage(format!(
                "{e} in {:02x?}",
                &self.buf[..self.buf.len().min(32)]
            ))),
        }
    }

    /// Read more bytes, waiting at most until `deadline`.
    fn fill(&mut self, deadline: Instant) -> Result<(), WaitError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(WaitError::Timeout);
        }
        self.stream
            .set_read_timeout(Some(left))
            .expect("set read timeout");
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(WaitError::Closed),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(WaitError::Timeout)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(_) => Err(WaitError::Closed),
        }
    }

    /// The next packet from the wire (ignoring the stash).
    fn next_wire(&mut self, deadline: Instant) -> Result<Got, WaitError> {
        loop {
            if let Some(g) = self.take_buffered()? {
                return Ok(g);
            }
            self.fill(deadline)?;
        }
    }

    /// The next packet (stashed first), or why none came within `timeout`.
    pub fn try_packet(&mut self, timeout: Duration) -> Result<Got, WaitError> {
        if let Some(g) = self.stash.pop_front() {
            return Ok(g);
        }
        self.next_wire(Instant::now() + timeout)
    }

    /// The next packet; panics if none arrives within `timeout`.
    pub fn expect_packet(&mut self, timeout: Duration) -> Got {
        match self.try_packet(timeout) {
            Ok(g) => g,
            Err(e) => panic!("[{}] expected a packet within {timeout:?}: {e:?}", self.id),
        }
    }

    /// Wait for the first packet satisfying `want`, stashing the others (in order).
    pub fn expect_where(
        &mut self,
        timeout: Duration,
        what: &str,
        mut want: impl FnMut(&Got) -> bool,
    ) -> Got {
        if let Some(i) = self.stash.iter().position(&mut want) {
            return self.stash.remove(i).expect("index in range");
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_wire(deadline) {
                Ok(g) if want(&g) => return g,
                Ok(g) => self.stash.push_back(g),
                Err(e) => panic!(
                    "[{}] waiting {timeout:?} for {what}: {e:?}; meanwhile got {:?}",
                    self.id, self.stash
                ),
            }
        }
    }

    /// The next packet must be a PUBLISH.
    pub fn expect_publish(&mut self, timeout: Duration) -> Msg {
        match self.expect_packet(timeout) {
            Got::Publish(m) => m,
            other => panic!("[{}] expected PUBLISH, got {other:?}", self.id),
        }
    }

    /// The next packet must be a PUBLISH; acknowledge it (full QoS 2 flow included).
    pub fn expect_publish_acked(&mut self, timeout: Duration) -> Msg {
        let m = self.expect_publish(timeout);
        self.ack(&m);
        m
    }

    /// Acknowledge a received PUBLISH: PUBACK, or PUBREC → PUBREL → PUBCOMP.
    pub fn ack(&mut self, m: &Msg) {
        match (m.qos, m.pid) {
            (1, Some(p)) => self.send(&Packet::PubAck(Ack::new(pid(p)))),
            (2, Some(p)) => {
                self.send(&Packet::PubRec(Ack::new(pid(p))));
                let want = Got::PubRel(p);
                self.expect_where(WAIT, "PUBREL", |g| *g == want);
                self.send(&Packet::PubComp(Ack::new(pid(p))));
            }
            _ => {}
        }
    }

    /// Assert that the broker closes the connection within `timeout`, sending nothing first.
    pub fn expect_closed(&mut self, timeout: Duration) {
        if let Some(g) = self.stash.pop_front() {
            panic!("[{}] expected close, had {g:?} pending", self.id);
        }
        match self.next_wire(Instant::now() + timeout) {
            Err(WaitError::Closed) => {}
            Err(WaitError::Timeout) => {
                panic!("[{}] connection still open after {timeout:?}", self.id)
            }
            Err(WaitError::Garbage(g)) => panic!("[{}] expected close, got bytes {g}", self.id),
            Ok(g) => panic!("[{}] expected close, got {g:?}", self.id),
        }
    }

    /// Wait for the close, ignoring whatever packets come before it; returns them.
    pub fn wait_closed(&mut self, timeout: Duration) -> Vec<Got> {
        let mut got: Vec<Got> = self.stash.drain(..).collect();
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_wire(deadline) {
                Ok(g) => got.push(g),
                Err(WaitError::Closed) => return got,
                Err(WaitError::Garbage(_)) => {
                    // Unparseable bytes: skip them and keep waiting for EOF.
                    self.buf.clear();
                }
                Err(WaitError::Timeout) => {
                    panic!("[{}] still open after {timeout:?}; got {got:?}", self.id)
                }
            }
        }
    }

    /// Assert that no packet arrives (and the connection stays open) for `dur` (≤ 500 ms).
    pub fn expect_nothing(&mut self, dur: Duration) {
        assert!(
            dur <= Duration::from_millis(500),
            "keep quiet windows short"
        );
        if let Some(g) = self.stash.pop_front() {
            panic!("[{}] expected nothing, had {g:?} pending", self.id);
        }
        match self.next_wire(Instant::now() + dur) {
            Err(WaitError::Timeout) => {}
            other => panic!("[{}] expected nothing for {dur:?}, got {other:?}", self.id),
        }
    }

    // ---- MQTT operations -------------------------------------------------------------

    /// Send CONNECT as described, without waiting for CONNACK.
    pub fn send_connect(&mut self, o: &ConnectOpts<'_>) {
        self.send_connect_login(o, None, None);
    }

    /// Send CONNECT as described with a username and password, without waiting.
    pub fn send_connect_login(
        &mut self,
        o: &ConnectOpts<'_>,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) {
        self.version = o.version;
        self.id = o.id.to_string();
        let will = o.will.map(|(topic, payload, q, retain)| Will {
            topic,
            payload,
            qos: qos(q),
            retain,
            properties: Properties::default(),
        });
        let c = Connect {
            version: o.version,
            clean_start: o.clean,
            keep_alive: o.keep_alive,
            client_id: o.id,
            will,
            username,
            password,
            properties: Properties::default(),
        };
        self.send(&Packet::Connect(c));
    }

    /// Connect with a username and password; returns the client and the CONNACK code.
    pub fn handshake_login(
        addr: SocketAddr,
        o: &ConnectOpts<'_>,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> (RawClient, u8) {
        let mut c = RawClient::connect(addr);
        c.send_connect_login(o, username, password);
        match c.expect_packet(WAIT) {
            Got::ConnAck { code, .. } => (c, code),
            other => panic!("[{}] expected CONNACK, got {other:?}", o.id),
        }
    }

    /// Connect and wait for CONNACK; returns (session present, return code).
    pub fn handshake(addr: SocketAddr, o: &ConnectOpts<'_>) -> (RawClient, bool, u8) {
        RawClient::handshake_within(addr, o, WAIT)
    }

    /// `handshake`, waiting up to `wait` for the CONNACK (a clustered node answers only
    /// when its registry does, or refuses after its own claim deadline).
    pub fn handshake_within(
        addr: SocketAddr,
        o: &ConnectOpts<'_>,
        wait: Duration,
    ) -> (RawClient, bool, u8) {
        let mut c = RawClient::connect(addr);
        c.send_connect(o);
        match c.expect_packet(wait) {
            Got::ConnAck { present, code } => (c, present, code),
            other => panic!("[{}] expected CONNACK, got {other:?}", o.id),
        }
    }

    /// Connect and require an accepted CONNACK; returns the client and Session Present.
    pub fn connect_with(addr: SocketAddr, o: &ConnectOpts<'_>) -> (RawClient, bool) {
        let (c, present, code) = RawClient::handshake(addr, o);
        assert_eq!(code, 0, "[{}] CONNACK return code", o.id);
        (c, present)
    }

    /// 3.1.1 connect; asserts CONNACK 0 and returns (client, session present).
    pub fn connect_v311(
        addr: SocketAddr,
        id: &str,
        clean: bool,
        keep_alive: u16,
        will: Option<(&str, &[u8], u8, bool)>,
    ) -> (RawClient, bool) {
        RawClient::connect_with(
            addr,
            &ConnectOpts {
                version: Version::V3_1_1,
                id,
                clean,
                keep_alive,
                will,
            },
        )
    }

    /// Clean 3.1.1 session, keep alive 60, no will.
    pub fn clean(addr: SocketAddr, id: &str) -> RawClient {
        let (c, present) = RawClient::connect_v311(addr, id, true, 60, None);
        assert!(!present, "[{id}] clean session must not be present");
        c
    }

    /// SUBSCRIBE to `filters` and return the SUBACK codes (other packets are stashed).
    pub fn subscribe_many(&mut self, filters: &[(&str, u8)]) -> Vec<u8> {
        self.subscribe_many_within(filters, WAIT)
    }

    /// [`RawClient::subscribe_many`], waiting up to `wait` for the SUBACK.
    pub fn subscribe_many_within(&mut self, filters: &[(&str, u8)], wait: Duration) -> Vec<u8> {
        let subs: Vec<Subscription<'_>> = filters
            .iter()
            .map(|&(filter, q)| Subscription {
                filter,
                options: SubscriptionOptions {
                    qos: qos(q),
                    ..SubscriptionOptions::default()
                },
            })
            .collect();
        let p = self.next_pid();
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: pid(p),
            properties: Properties::default(),
            filters: SubscriptionList::Slice(&subs),
        }));
        match self.expect_where(wait, "SUBACK", |g| matches!(g, Got::SubAck { .. })) {
            Got::SubAck { pid: got, codes } => {
                assert_eq!(got, p, "[{}] SUBACK packet id", self.id);
                assert_eq!(
                    codes.len(),
                    filters.len(),
                    "[{}] SUBACK code count",
                    self.id
                );
                codes
            }
            _ => unreachable!(),
        }
    }

    /// SUBSCRIBE to one filter; asserts it was granted `q`.
    pub fn subscribe(&mut self, filter: &str, q: u8) {
        let codes = self.subscribe_many(&[(filter, q)]);
        assert_eq!(codes, vec![q], "[{}] SUBACK for {filter}", self.id);
    }

    /// UNSUBSCRIBE and wait for UNSUBACK.
    pub fn unsubscribe(&mut self, filters: &[&str]) {
        let p = self.next_pid();
        self.send(&Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(p),
            properties: Properties::default(),
            filters: protocol::StrList::Slice(filters),
        }));
        let want = Got::UnsubAck(p);
        self.expect_where(WAIT, "UNSUBACK", |g| *g == want);
    }

    /// Send a PUBLISH with explicit flags (no waiting).
    pub fn send_publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        q: u8,
        retain: bool,
        dup: bool,
        packet_id: Option<u16>,
    ) {
        self.send(&Packet::Publish(Publish {
            dup,
            qos: qos(q),
            retain,
            topic,
            packet_id: packet_id.map(pid),
            properties: Properties::default(),
            payload,
        }));
    }

    /// PUBLISH and complete its QoS flow (PUBACK, or PUBREC → PUBREL → PUBCOMP).
    /// Returns the packet id used (0 for QoS 0).
    pub fn publish(&mut self, topic: &str, payload: &[u8], q: u8, retain: bool) -> u16 {
        let p = if q > 0 { self.next_pid() } else { 0 };
        self.send_publish(topic, payload, q, retain, false, (q > 0).then_some(p));
        match q {
            1 => {
                let want = Got::PubAck(p);
                self.expect_where(WAIT, "PUBACK", |g| *g == want);
            }
            2 => {
                let want = Got::PubRec(p);
                self.expect_where(WAIT, "PUBREC", |g| *g == want);
                self.send(&Packet::PubRel(Ack::new(pid(p))));
                let want = Got::PubComp(p);
                self.expect_where(WAIT, "PUBCOMP", |g| *g == want);
            }
            _ => {}
        }
        p
    }

    /// PINGREQ and wait for PINGRESP (a cheap round trip: everything sent before it has
    /// been processed by the broker once it returns).
    pub fn ping(&mut self) {
        self.send(&Packet::PingReq);
        self.expect_where(WAIT, "PINGRESP", |g| *g == Got::PingResp);
    }

    /// Send DISCONNECT and wait for the broker to close the socket.
    pub fn disconnect(mut self) {
        self.send(&Packet::Disconnect(protocol::Disconnect {
            reason: ReasonCode::NormalDisconnection,
            properties: Properties::default(),
        }));
        self.wait_closed(WAIT);
    }

    /// Receive `n` PUBLISHes, acknowledging each.
    pub fn collect_acked(&mut self, n: usize, timeout: Duration) -> Vec<Msg> {
        (0..n).map(|_| self.expect_publish_acked(timeout)).collect()
    }
}

// ---------------------------------------------------------------------------------------
// Hand-made wire bytes (independent of the codec, for malformed input)
// ---------------------------------------------------------------------------------------

/// Append an MQTT variable byte integer.
pub fn varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

/// Append a length-prefixed string.
pub fn mqtt_str(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// A packet: first byte, correct remaining length, body.
pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    varint(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

/// CONNECT bytes with protocol name `name`, level `level`, flags `flags`, keepalive 60.
pub fn connect_bytes(name: &[u8], level: u8, flags: u8, id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_str(name, &mut body);
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&60u16.to_be_bytes());
    mqtt_str(id.as_bytes(), &mut body);
    frame(0x10, &body)
}

/// A valid 3.1.1 clean-session CONNECT.
pub fn connect_v311_bytes(id: &str) -> Vec<u8> {
    connect_bytes(b"MQTT", 4, 0x02, id)
}

/// PUBLISH bytes with an explicit first byte (flags), topic and optional packet id.
pub fn publish_bytes(first: u8, topic: &[u8], packet_id: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_str(topic, &mut body);
    if let Some(p) = packet_id {
        body.extend_from_slice(&p.to_be_bytes());
    }
    body.extend_from_slice(payload);
    frame(first, &body)
}

/// A deterministic xorshift PRNG for fuzz-ish tests.
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (seed 0 is remapped).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

// ---------------------------------------------------------------------------------------
// rumqttc (a real client library)
// ---------------------------------------------------------------------------------------

/// rumqttc options for `id` against `addr`.
pub fn rumq_options(addr: SocketAddr, id: &str, clean: bool) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_clean_session(clean);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// Connect a sync rumqttc client and wait for its CONNACK; returns (client, connection,
/// session present).
pub fn rumq_connect(opts: rumqttc::MqttOptions) -> (rumqttc::Client, rumqttc::Connection, bool) {
    let (client, mut conn) = rumqttc::Client::new(opts, 64);
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.recv_timeout(left) {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack)))) => {
                assert_eq!(
                    ack.code,
                    rumqttc::ConnectReturnCode::Success,
                    "rumqttc CONNACK"
                );
                return (client, conn, ack.session_present);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("rumqttc connection error before CONNACK: {e:?}"),
            Err(e) => panic!("rumqttc: no CONNACK within {WAIT:?}: {e:?}"),
        }
    }
}

/// Drive `conn` until `want` accepts an event; panics on timeout or connection error.
pub fn rumq_event_until<T>(
    conn: &mut rumqttc::Connection,
    timeout: Duration,
    what: &str,
    mut want: impl FnMut(&rumqttc::Event) -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.recv_timeout(left) {
            Ok(Ok(ev)) => {
                if let Some(t) = want(&ev) {
                    return t;
                }
            }
            Ok(Err(e)) => panic!("rumqttc error while waiting for {what}: {e:?}"),
            Err(e) => panic!("rumqttc: no {what} within {timeout:?}: {e:?}"),
        }
    }
}

/// Drive `conn` until `want` accepts an incoming packet; panics on timeout or error.
pub fn rumq_until<T>(
    conn: &mut rumqttc::Connection,
    timeout: Duration,
    what: &str,
    mut want: impl FnMut(&rumqttc::Packet) -> Option<T>,
) -> T {
    rumq_event_until(conn, timeout, what, |ev| match ev {
        rumqttc::Event::Incoming(p) => want(p),
        rumqttc::Event::Outgoing(_) => None,
    })
}

/// Drive `conn` until a publish of QoS `q` has completed its flow (sent for QoS 0,
/// PUBACK for QoS 1, PUBCOMP for QoS 2).
pub fn rumq_publish_done(conn: &mut rumqttc::Connection, q: u8) {
    rumq_event_until(conn, WAIT, "publish completion", |ev| match (q, ev) {
        (0, rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(_)))
        | (1, rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))
        | (2, rumqttc::Event::Incoming(rumqttc::Packet::PubComp(_))) => Some(()),
        _ => None,
    })
}

/// Drive `conn` until a PUBLISH arrives.
pub fn rumq_publish(conn: &mut rumqttc::Connection, timeout: Duration) -> rumqttc::Publish {
    rumq_until(conn, timeout, "PUBLISH", |p| match p {
        rumqttc::Packet::Publish(p) => Some(p.clone()),
        _ => None,
    })
}

/// Drive `conn` until the SUBACK arrives; returns its codes.
pub fn rumq_suback(conn: &mut rumqttc::Connection) -> Vec<rumqttc::SubscribeReasonCode> {
    rumq_until(conn, WAIT, "SUBACK", |p| match p {
        rumqttc::Packet::SubAck(s) => Some(s.return_codes.clone()),
        _ => None,
    })
}

/// rumqttc QoS from 0..=2.
pub fn rumq_qos(q: u8) -> rumqttc::QoS {
    match q {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}
