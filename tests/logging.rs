//! Logging options, black box: `log_dest file`, `log_format json`, `log_type` filtering.

mod common;

use std::time::Duration;

use common::*;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("shardmq-log-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

/// Run a broker with configuration `conf` until a client has connected, then stop it.
fn run_with(conf: &std::path::Path) {
    let conf = conf.to_str().expect("utf-8 path");
    let mut b = Broker::start(&["--shards", "1", "-c", conf]);
    RawClient::clean(b.addr(), "log-client").ping();
    let st = b.terminate(Duration::from_secs(5)).expect("exits");
    assert!(st.success(), "{st:?}");
}

#[test]
fn json_lines_go_to_the_log_file() {
    let dir = temp_dir("json");
    let log = dir.join("b.log");
    let conf = dir.join("b.conf");
    std::fs::write(
        &conf,
        format!(
            "log_dest file {}\nlog_format json\nlog_type all\nlog_timestamp_format %Y-%m-%dT%H:%M:%S\n",
            log.display()
        ),
    )
    .expect("write conf");
    run_with(&conf);
    let text = std::fs::read_to_string(&log).expect("log file written");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let msgs: Vec<&str> = lines.iter().filter_map(|v| v["msg"].as_str()).collect();
    assert!(msgs.iter().any(|m| m.ends_with("starting")), "{text}");
    assert!(msgs.iter().any(|m| m.ends_with("terminating")), "{text}");
    assert!(
        lines
            .iter()
            .all(|v| ["notice", "information", "warning", "debug"]
                .contains(&v["level"].as_str().unwrap_or_default())),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .all(|v| v["time"].as_str().is_some_and(|t| t.len() == 19)),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn log_type_filters_levels() {
    let dir = temp_dir("types");
    let log = dir.join("b.log");
    let conf = dir.join("b.conf");
    std::fs::write(
        &conf,
        format!("log_dest file {}\nlog_type error\n", log.display()),
    )
    .expect("write conf");
    run_with(&conf);
    let text = std::fs::read_to_string(&log).expect("log file created");
    assert_eq!(text, "", "only errors were asked for");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Run a broker with `conf_text` (plus `log_dest file`), let `drive` talk to it, stop it
/// and return its log.
fn logged_run(name: &str, conf_text: &str, drive: impl FnOnce(&Broker)) -> String {
    let dir = temp_dir(name);
    let log = dir.join("b.log");
    let conf = dir.join("b.conf");
    std::fs::write(
        &conf,
        format!("log_dest file {}\n{conf_text}", log.display()),
    )
    .expect("write conf");
    let mut b = Broker::start(&["--shards", "2", "-c", conf.to_str().expect("utf-8")]);
    drive(&b);
    let st = b.terminate(Duration::from_secs(5)).expect("exits");
    assert!(st.success(), "{st:?}");
    let text = std::fs::read_to_string(&log).expect("log file written");
    let _ = std::fs::remove_dir_all(&dir);
    text
}

/// Run a broker with `conf_text` (plus `log_dest file`), have one client subscribe,
/// publish at QoS 1 and unsubscribe; return the log.
fn traffic_log(name: &str, conf_text: &str) -> String {
    logged_run(name, conf_text, |b| {
        let mut c = RawClient::clean(b.addr(), "log-sub");
        c.subscribe("a/b", 1);
        c.publish("a/b", b"hello", 1, false);
        c.expect_publish_acked(WAIT);
        c.unsubscribe(&["a/b"]);
        c.disconnect();
    })
}

#[test]
fn debug_subscribe_and_connection_lines_carry_their_levels() {
    let text = traffic_log("all", "log_type all\nlog_format json\n");
    let level_of = |needle: &str| -> String {
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
            .find(|v| v["msg"].as_str().is_some_and(|m| m.contains(needle)))
            .map(|v| v["level"].as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|| panic!("no line with {needle:?} in {text}"))
    };
    assert_eq!(level_of("New client connected from"), "notice");
    assert_eq!(
        level_of("Received PUBLISH from log-sub (d0, q1, r0, m"),
        "debug"
    );
    assert_eq!(
        level_of("Sending PUBLISH to log-sub (d0, q1, r0, m"),
        "debug"
    );
    assert_eq!(level_of("Sending PUBACK to log-sub"), "debug");
    assert_eq!(level_of("Sending CONNACK to log-sub"), "debug");
    assert_eq!(level_of("log-sub 1 a/b"), "subscribe");
    assert_eq!(level_of("log-sub a/b"), "unsubscribe");
    assert_eq!(level_of("Client log-sub disconnected"), "notice");
    // What `mosquitto -v` prints around a SUBSCRIBE: each filter, then the SUBACK.
    assert_eq!(level_of("Received SUBSCRIBE from log-sub"), "debug");
    assert_eq!(level_of("\ta/b (QoS 1)"), "debug");
    assert_eq!(level_of("Sending SUBACK to log-sub"), "debug");
    // Mosquitto's `information` lines: start-up, the file read, listen sockets.
    assert_eq!(level_of("starting"), "information");
    assert_eq!(level_of("Config loaded from"), "information");
    assert_eq!(level_of("Opening listen socket on"), "information");
}

/// `log_type information` alone: start-up, configuration and listener lines, as Mosquitto
/// writes them at that level; connection lines (notice) and packets (debug) stay out.
#[test]
fn information_alone_shows_start_up_and_listeners_only() {
    let text = traffic_log("info", "log_type information\n");
    for present in ["starting", "Config loaded from", "Opening listen socket on"] {
        assert!(text.contains(present), "{present:?} missing from {text}");
    }
    for absent in [
        "New client connected",
        "Sending",
        "disconnected",
        "terminating",
    ] {
        assert!(!text.contains(absent), "{absent:?} in {text}");
    }
}

#[test]
fn connection_messages_false_and_default_levels_leave_out_what_is_off() {
    let text = traffic_log("quiet", "connection_messages false\n");
    assert!(text.contains("starting"), "{text}");
    for absent in ["New client", "disconnected", "PUBLISH", "a/b"] {
        assert!(!text.contains(absent), "{absent:?} in {text}");
    }
    let text = traffic_log("conn", "log_type notice\n");
    assert!(text.contains("New client connected from"), "{text}");
    assert!(!text.contains("Sending"), "{text}");
}

/// A second connection with a client id already connected takes the session over, and
/// the log says so in Mosquitto's words (at its level, error; not with
/// `connection_messages false`).
#[test]
fn a_takeover_is_logged_as_mosquitto_does() {
    let takeover_log = |name: &str, conf_text: &str| -> String {
        logged_run(name, conf_text, |b| {
            let mut old = RawClient::clean(b.addr(), "twin");
            old.ping();
            let mut new = RawClient::clean(b.addr(), "twin");
            new.ping();
            old.expect_closed(WAIT);
        })
    };
    let text = takeover_log("takeover", "log_type all\nlog_format json\n");
    let line = "Client twin already connected, closing old connection.";
    let levels: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
        .filter(|v| v["msg"].as_str() == Some(line))
        .map(|v| v["level"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(levels, ["error"], "{text}");
    let text = takeover_log("takeover-quiet", "connection_messages false\n");
    assert!(!text.contains("already connected"), "{text}");
}
