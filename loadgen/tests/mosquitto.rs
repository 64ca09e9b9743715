//! End-to-end: runs the load generator against a private Mosquitto when one is installed
//! (skips with a note otherwise). Short runs, every QoS, both protocol versions.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Mosquitto started by this test; stopped (by its own handle) when dropped.
struct Broker {
    child: Child,
    port: u16,
    _dir: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn mosquitto_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
}

fn start() -> Option<Broker> {
    let exe = mosquitto_path()?;
    let port = TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let dir = std::env::temp_dir().join(format!("loadgen-it-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let conf = dir.join("mosquitto.conf");
    let mut f = std::fs::File::create(&conf).ok()?;
    writeln!(
        f,
        "listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true"
    )
    .ok()?;
    writeln!(
        f,
        "persistence false\nmax_queued_messages 1000000\nmax_inflight_messages 0\nlog_dest none"
    )
    .ok()?;
    let child = Command::new(exe)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let broker = Broker {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(broker)
}

/// Runs the load generator and returns its RESULT fields.
fn loadgen(broker: &Broker, args: &[&str]) -> Vec<(String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_shardmq-loadgen"))
        .args(args)
        .args(["--port", &broker.port.to_string(), "--quiet"])
        .args(["--broker-pid", &broker.child.id().to_string()])
        .output()
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| {
            panic!(
                "no RESULT for {args:?}: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    line.split(' ')
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn get<'a>(r: &'a [(String, String)], key: &str) -> &'a str {
    r.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or("missing")
}

#[test]
fn runs_against_mosquitto() {
    let Some(broker) = start() else {
        eprintln!("note: mosquitto is not installed (or did not start); skipping");
        return;
    };
    for mqtt in ["3.1.1", "5"] {
        for qos in ["0", "1", "2"] {
            let r = loadgen(
                &broker,
                &["pairs", "-n", "2", "-q", qos, "--mqtt", mqtt, "-d", "0.3"],
            );
            assert_eq!(get(&r, "lost"), "0", "{mqtt} QoS {qos}: {r:?}");
            assert_eq!(get(&r, "dups"), "0", "{mqtt} QoS {qos}: {r:?}");
            assert_eq!(get(&r, "failures"), "0");
            assert!(get(&r, "delivered").parse::<u64>().unwrap() > 0);
            assert_ne!(get(&r, "broker_cpu_s"), "na");
        }
    }
    let r = loadgen(&broker, &["fanin", "-n", "20", "-q", "1", "-d", "0.3"]);
    assert_eq!(get(&r, "lost"), "0", "{r:?}");
    let r = loadgen(&broker, &["fanout", "-n", "20", "-d", "0.3"]);
    assert_eq!(get(&r, "expected"), get(&r, "delivered"), "{r:?}");
    // Stored sessions (Clean Start 0) for the publisher and every subscriber.
    let args = ["fanout", "-n", "20", "-q", "1", "--persistent", "-d", "0.3"];
    let r = loadgen(&broker, &args);
    assert_eq!(get(&r, "expected"), get(&r, "delivered"), "{r:?}");
    assert_eq!(get(&r, "lost"), "0", "{r:?}");
    assert!(get(&r, "delivered").parse::<u64>().unwrap() > 0);
    let r = loadgen(&broker, &["latency", "-r", "2000", "-d", "0.3"]);
    assert_ne!(get(&r, "p99_us"), "na");
    let r = loadgen(&broker, &["storm", "-n", "50"]);
    assert_eq!(get(&r, "connected"), "50", "{r:?}");
}
