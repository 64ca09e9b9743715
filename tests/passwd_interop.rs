//! Password files both ways with Debian's Mosquitto: a file made by `mosquitto_passwd`
//! verifies in shardmq, and a file made by `shardmq passwd` is accepted by a real
//! `mosquitto` broker (and a wrong password is refused). Each test prints why and returns
//! when the Mosquitto binaries are not installed (`.ci/run` installs them).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shardmq::auth::{PasswordFile, Verdict};

const SHARDMQ: &str = env!("CARGO_BIN_EXE_shardmq");

/// The binary, or `None` after printing why the test is skipped.
fn tool(name: &str) -> Option<PathBuf> {
    // PATH, then the sbin directories a non-root PATH often lacks (mosquitto lives there).
    let path = std::env::var_os("PATH").unwrap_or_default();
    let sbin = ["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from);
    for dir in std::env::split_paths(&path).chain(sbin) {
        let p = dir.join(name);
        if p.exists() {
            return Some(p);
        }
    }
    eprintln!("skipped: {name} is not installed (apt-get install mosquitto mosquitto-clients)");
    None
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shardmq-pw-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn files_from_mosquitto_passwd_verify_in_shardmq() {
    let Some(mp) = tool("mosquitto_passwd") else {
        return;
    };
    let dir = scratch("from-mosquitto");
    let file = dir.join("pw");
    run_ok(
        Command::new(&mp)
            .args(["-c", "-b"])
            .arg(&file)
            .args(["alice", "s3cret"]),
    );
    run_ok(
        Command::new(&mp)
            .arg("-b")
            .arg(&file)
            .args(["bob", "with spaces ü"]),
    );
    run_ok(
        Command::new(&mp)
            .args(["-H", "sha512", "-b"])
            .arg(&file)
            .args(["carol", "x"]),
    );
    let f = PasswordFile::load(&file).expect("mosquitto_passwd output loads");
    assert_eq!(f.verify("alice", b"s3cret"), Verdict::Ok);
    assert_eq!(f.verify("bob", "with spaces ü".as_bytes()), Verdict::Ok);
    assert_eq!(f.verify("carol", b"x"), Verdict::Ok);
    assert_eq!(f.verify("alice", b"s3creT"), Verdict::BadPassword);
    assert_eq!(f.verify("dave", b"s3cret"), Verdict::UnknownUser);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A port that was free a moment ago on loopback.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A `mosquitto` child, killed by PID when dropped.
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_mosquitto(bin: &Path, dir: &Path, pwfile: &Path) -> (Broker, u16) {
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    // `user root`: when the test runs as root, mosquitto would otherwise drop to the
    // `mosquitto` user and fail to read our 0600 file.
    let text = format!(
        "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nuser root\n",
        pwfile.display()
    );
    std::fs::write(&conf, text).expect("config");
    let log = std::fs::File::create(dir.join("mosquitto.log")).expect("log file");
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("mosquitto starts");
    let broker = Broker(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto listens within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    (broker, port)
}

fn publish(pub_bin: &Path, port: u16, user: &str, password: &str) -> bool {
    let mut child = Command::new(pub_bin)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-u", user, "-P", password, "-t", "t", "-m", "m"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_pub runs");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mosquitto_pub did not finish within 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Mosquitto's version as (major, minor), from `mosquitto -h`.
fn mosquitto_version(bin: &Path) -> (u32, u32) {
    let out = Command::new(bin).arg("-h").output().expect("mosquitto -h");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v = text.split_whitespace().nth(2).unwrap_or("0.0");
    let mut parts = v.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[test]
fn files_from_shardmq_passwd_work_in_mosquitto() {
    let (Some(broker_bin), Some(pub_bin)) = (tool("mosquitto"), tool("mosquitto_pub")) else {
        return;
    };
    let dir = scratch("to-mosquitto");
    let file = dir.join("pw");
    // 12-byte salt: the only size Mosquitto 2.0's decoder accepts.
    run_ok(
        Command::new(SHARDMQ)
            .args(["passwd", "-c", "-b", "--salt-bytes", "12"])
            .arg(&file)
            .args(["alice", "s3cret"]),
    );
    // The default: a 64-byte salt, Mosquitto 2.1's format.
    run_ok(
        Command::new(SHARDMQ)
            .args(["passwd", "-b"])
            .arg(&file)
            .args(["bob", "pw"]),
    );
    let text = std::fs::read_to_string(&file).expect("written");
    assert!(text.lines().all(|l| l.contains(":$7$1000$")), "{text}");
    let (_broker, port) = start_mosquitto(&broker_bin, &dir, &file);
    let log = || std::fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default();
    assert!(
        publish(&pub_bin, port, "alice", "s3cret"),
        "mosquitto accepts our $7$ line; its log:\n{}",
        log()
    );
    assert!(
        !publish(&pub_bin, port, "alice", "wrong"),
        "and refuses a wrong password"
    );
    assert!(!publish(&pub_bin, port, "nobody", "s3cret"));
    let accepts_64 = mosquitto_version(&broker_bin) >= (2, 1);
    assert_eq!(
        publish(&pub_bin, port, "bob", "pw"),
        accepts_64,
        "64-byte salts work from Mosquitto 2.1 on, not in 2.0"
    );
    drop(_broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shardmq_passwd_reads_the_password_twice_from_stdin_and_edits_in_place() {
    let dir = scratch("stdin");
    let file = dir.join("pw");
    let run = |args: &[&str], input: &str| {
        let mut child = Command::new(SHARDMQ)
            .arg("passwd")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write");
        child.wait_with_output().expect("exit").status.success()
    };
    let f = file.to_str().expect("utf-8 path");
    assert!(run(&["-c", f, "alice"], "one\none\n"));
    assert!(!run(&[f, "bob"], "two\ntwO\n"), "a mismatch is refused");
    assert!(run(&[f, "bob"], "two\n"));
    assert!(run(&["-D", f, "alice"], ""));
    assert!(
        !run(&["-D", f, "alice"], ""),
        "deleting a missing user fails"
    );
    let pw = PasswordFile::load(&file).expect("loads");
    assert_eq!(pw.verify("bob", b"two"), Verdict::Ok);
    assert_eq!(pw.verify("alice", b"one"), Verdict::UnknownUser);
    std::fs::write(&file, "carol:plain\n").expect("write");
    assert!(run(&["-U", f], ""));
    let pw = PasswordFile::load(&file).expect("hashed file loads");
    assert_eq!(pw.verify("carol", b"plain"), Verdict::Ok);
    assert!(
        !run(&["-H", "sha512", "-b", f, "x", "y"], ""),
        "no weak hashes written"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
