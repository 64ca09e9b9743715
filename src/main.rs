//! `shardmq`: command line → `Config` → shard threads → wait for a signal → shut down.

mod passwd_cmd;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use shardmq::admin::{self, Started};
use shardmq::config::{Args, Command, Config};
use shardmq::log::log;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Passwd(p)) = &args.command {
        return passwd_cmd::run(p);
    }
    if let Some(user) = &args.scram_entry {
        return print_scram_entry(user);
    }
    if let Some(Command::Check { config }) = &args.command {
        return check(config);
    }
    let config = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shardmq: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = shardmq::log_sink::init(&config.log) {
        eprintln!("shardmq: {e}");
        return ExitCode::from(2);
    }
    // Installed before anything is announced, so a signal sent as soon as the broker says
    // it is listening is always a clean shutdown, never the default "die".
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shardmq: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let version = env!("CARGO_PKG_VERSION");
    log(format_args!("shardmq version {version} starting"));
    for w in &config.warnings {
        log(format_args!("Warning: {w}"));
    }
    let shards = config.shards;
    let print_bound = config.print_bound;
    let config_admin = config.admin;
    let metrics = config.metrics.clone();
    let running = match shardmq::shard::run(config) {
        Ok(r) => r,
        Err(e) => {
            log(format_args!("Error: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let admin = match admin::start(config_admin, metrics.clone(), None) {
        Ok(Started::Running(a)) => Some(a),
        Ok(Started::Skipped(warning)) => {
            log(format_args!("Warning: {warning}"));
            None
        }
        Ok(Started::Off) => None,
        Err(e) => {
            log(format_args!("Error: {e}"));
            running.stop();
            running.join();
            return ExitCode::FAILURE;
        }
    };
    for addr in &running.addrs {
        log(format_args!("Opening listen socket on {addr}."));
        if print_bound {
            println!("listening {addr}");
        }
    }
    if let Some(a) = &admin {
        log(format_args!("Admin listener on http://{}/", a.addr()));
        if print_bound {
            println!("admin {}", a.addr());
        }
    }
    let _ = std::io::stdout().flush();
    log(format_args!(
        "shardmq version {version} running with {shards} shard(s)"
    ));
    for sig in signals.forever() {
        if sig != SIGHUP {
            break;
        }
        // SIGHUP: new TLS handshakes use the certificate files as they are now.
        shardmq::shard::listeners::reload_tls(&running.tls_reload);
    }
    log(format_args!("shardmq version {version} terminating"));
    metrics
        .stopping
        .store(true, std::sync::atomic::Ordering::Relaxed);
    running.stop();
    running.join();
    if let Some(a) = admin {
        a.stop();
    }
    ExitCode::SUCCESS
}

/// `shardmq check -c FILE`: validate the file (and the files it names) without starting.
fn check(path: &std::path::Path) -> ExitCode {
    let args = Args::parse_from([
        std::ffi::OsStr::new("shardmq"),
        "-c".as_ref(),
        path.as_os_str(),
    ]);
    match Config::from_args(args) {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("shardmq: warning: {w}");
            }
            println!("{}: configuration OK", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shardmq: {e}");
            ExitCode::from(2)
        }
    }
}

/// `--scram-entry USER`: read a password line from stdin, print the credentials-file line.
fn print_scram_entry(user: &str) -> ExitCode {
    let mut password = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut password) {
        eprintln!("shardmq: cannot read the password from standard input: {e}");
        return ExitCode::from(2);
    }
    let password = password.trim_end_matches(['\r', '\n']);
    match shardmq::auth::scram_entry(user, password, 4096) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shardmq: {e}");
            ExitCode::from(2)
        }
    }
}
