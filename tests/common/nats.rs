//! Three clustered `nats-server` processes with JetStream on loopback ports, for the
//! cluster tests (`tests/cluster.rs`, `tests/cluster_link.rs`). Each server is killed by
//! its PID when the cluster is dropped.

use std::net::{Ipv4Addr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::WAIT;

pub struct NatsCluster {
    servers: Vec<Option<Child>>,
    /// The client port of each server.
    pub ports: Vec<u16>,
    /// A temporary directory holding the servers' stores and configurations; tests may put
    /// their own files there.
    pub dir: tempfile::TempDir,
}

impl NatsCluster {
    /// `None` (with the reason printed) when `nats-server` is not installed.
    pub fn start() -> Option<NatsCluster> {
        let Ok(out) = Command::new("nats-server").arg("--version").output() else {
            eprintln!("skipped: nats-server is not installed (apt-get install nats-server)");
            return None;
        };
        let version = String::from_utf8_lossy(&out.stdout).to_string();
        let dir = tempfile::tempdir().unwrap();
        // Hold all six listeners at once so the ports differ, then free them.
        let holders: Vec<_> = (0..6)
            .map(|_| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap())
            .collect();
        let ports: Vec<u16> = holders
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        drop(holders);
        // Acknowledged JetStream writes are fsynced at once (Jepsen lost them with the
        // 2-minute default); 2.9 servers do not know the option and fsync on their own
        // schedule, which the tests cannot tell apart.
        let sync = if knows_sync_interval(&version) {
            ", sync_interval: always"
        } else {
            ""
        };
        let mut servers = Vec::new();
        for i in 0..3 {
            let routes: Vec<String> = (0..3)
                .filter(|&j| j != i)
                .map(|j| format!("nats-route://127.0.0.1:{}", ports[3 + j]))
                .collect();
            let conf = format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{}\njetstream {{ store_dir: \"{}\"{sync} }}\ncluster {{ name: smq, listen: 127.0.0.1:{}, routes: [{}] }}\n",
                ports[i],
                dir.path().join(format!("n{i}")).display(),
                ports[3 + i],
                routes.join(", ")
            );
            let path = dir.path().join(format!("n{i}.conf"));
            std::fs::write(&path, conf).unwrap();
            let child = Command::new("nats-server")
                .arg("-c")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            servers.push(Some(child));
        }
        let nats = NatsCluster {
            servers,
            ports: ports[..3].to_vec(),
            dir,
        };
        let deadline = Instant::now() + WAIT;
        for &p in &nats.ports {
            while TcpStream::connect((Ipv4Addr::LOCALHOST, p)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "nats-server did not listen on {p}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Some(nats)
    }

    /// Stop server `i` (SIGKILL to its PID) and wait for it; once only.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.servers[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        (0..self.servers.len()).for_each(|i| self.kill(i));
    }
}

/// `nats-server: v2.10.4` and later know `sync_interval`.
fn knows_sync_interval(version: &str) -> bool {
    let v = version.trim().rsplit('v').next().unwrap_or("");
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 10)
}
