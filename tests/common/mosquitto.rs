//! Debian's `mosquitto` broker for the interoperability tests: started from a
//! configuration file on a loopback port, waited for, and stopped by its PID.
//!
//! Owns: the child process (killed and reaped when the guard drops) and the one way the
//! tests start it. Invariant: every wait is bounded by the caller's `within`; a process
//! is only ever signalled through its own PID. Must not touch: the test's files beyond
//! the configuration it is asked to write.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running mosquitto; killed when dropped.
pub struct Mosquitto {
    child: Child,
    /// The port it was waited for on.
    pub port: u16,
}

impl Mosquitto {
    /// `mosquitto -c conf`, returned once 127.0.0.1:`port` accepts connections (bounded by
    /// `within`).
    pub fn spawn(conf: &Path, port: u16, within: Duration) -> Mosquitto {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (Debian package mosquitto; .ci/run installs it)");
        let m = Mosquitto { child, port };
        let deadline = Instant::now() + within;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    /// Start on `port` with anonymous clients, persistence in `dir` (kept across a
    /// restart, so sessions survive a clean stop), every log type in `dir/log`, and the
    /// `extra` configuration lines. `dir` must be writable by mosquitto's own user
    /// ([`world_writable`]).
    pub fn persistent(port: u16, dir: &Path, extra: &str, within: Duration) -> Mosquitto {
        let conf = dir.join("mosquitto.conf");
        let d = dir.display();
        let text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {d}/\nlog_dest file {d}/log\nlog_type all\n{extra}"
        );
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        Mosquitto::spawn(&conf, port, within)
    }

    /// SIGTERM (mosquitto saves its sessions), then wait, bounded.
    pub fn stop(mut self, within: Duration) {
        super::signal(self.child.id(), libc::SIGTERM);
        assert!(
            super::wait_exit(&mut self.child, within).is_some(),
            "mosquitto stops"
        );
    }

    /// SIGKILL: nothing saved since its last save. Waits, bounded.
    pub fn kill9(mut self, within: Duration) {
        super::signal(self.child.id(), libc::SIGKILL);
        assert!(
            super::wait_exit(&mut self.child, within).is_some(),
            "mosquitto dies"
        );
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Let anyone write `dir`: started as root, mosquitto drops to its own user, which must
/// write its database and log there.
pub fn world_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
}
