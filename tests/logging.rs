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
            .all(|v| v["level"] == "notice" || v["level"] == "warning"),
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
