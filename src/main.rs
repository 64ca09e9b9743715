//! `shardmq`: command line → `Config` → shard threads → wait for a signal → shut down.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use shardmq::config::{Args, Config};

fn main() -> ExitCode {
    let config = match Config::from_args(Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shardmq: {e}");
            return ExitCode::from(2);
        }
    };
    let log = shardmq::broker::log;
    log(format_args!(
        "shardmq version {} starting",
        env!("CARGO_PKG_VERSION")
    ));
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
        "shardmq version {} running with {shards} shard(s)",
        env!("CARGO_PKG_VERSION")
    ));
    wait_for_signal();
    log(format_args!(
        "shardmq version {} terminating",
        env!("CARGO_PKG_VERSION")
    ));
    running.stop();
    running.join();
    ExitCode::SUCCESS
}

/// Block until SIGINT or SIGTERM.
fn wait_for_signal() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        Ok(mut signals) => {
            let _ = signals.forever().next();
        }
        Err(e) => {
            shardmq::broker::log(format_args!(
                "cannot install signal handlers ({e}); running until killed"
            ));
            loop {
                std::thread::park();
            }
        }
    }
}
