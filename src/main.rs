//! `shardmq`: command line → `Config` → shard threads → wait for a signal → shut down.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use shardmq::config::{Args, Config};
use shardmq::log::log;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(user) = &args.scram_entry {
        return print_scram_entry(user);
    }
    let config = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shardmq: {e}");
            return ExitCode::from(2);
        }
    };
    // Installed before anything is announced, so a signal sent as soon as the broker says
    // it is listening is always a clean shutdown, never the default "die".
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
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
    let running = match shardmq::shard::run(config) {
        Ok(r) => r,
        Err(e) => {
            log(format_args!("Error: {e}"));
            return ExitCode::FAILURE;
        }
    };
    for addr in &running.addrs {
        log(format_args!("Opening listen socket on {addr}."));
        if print_bound {
            println!("listening {addr}");
        }
    }
    let _ = std::io::stdout().flush();
    log(format_args!(
        "shardmq version {version} running with {shards} shard(s)"
    ));
    let _ = signals.forever().next();
    log(format_args!("shardmq version {version} terminating"));
    running.stop();
    running.join();
    ExitCode::SUCCESS
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
