//! `shardmq`: command line → `Config` → shard threads → wait for a signal → shut down.

mod passwd_cmd;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use shardmq::admin::{self, Started};
use shardmq::config::{Args, Command, Config};
use shardmq::log::{info, log};
use shardmq::shard::StoreStart;
use shardmq::store::{self, CheckpointPolicy, StoreLock, SyncMode, WalOptions};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// jemalloc, with background purging (the system allocator without the `jemalloc`
/// feature): see `shardmq::alloc`.
#[global_allocator]
static GLOBAL: shardmq::alloc::Global = shardmq::alloc::Global {};

fn main() -> ExitCode {
    // Kept for SIGHUP, which reads the same command line and file again.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
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
    if let Some(Command::ClusterForget { config, node }) = &args.command {
        return cluster_forget(config, node);
    }
    let config_file = args.config.clone();
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
    info(format_args!("shardmq version {version} starting"));
    match &config_file {
        Some(f) => info(format_args!("Config loaded from {}.", f.display())),
        None => info(format_args!("Using default config.")),
    }
    for w in &config.warnings {
        log(format_args!("Warning: {w}"));
    }
    let shards = config.shards;
    let print_bound = config.print_bound;
    let config_admin = config.admin;
    let admin_password_file = config.admin_password_file.clone();
    let admin_tls = config.admin_tls.as_ref().map(|t| t.server.clone());
    let metrics = config.metrics.clone();
    let mut current = config.clone();
    // `/readyz` stays not-ready until the store is recovered and every shard runs.
    let recovering = metrics.hold_ready();
    let (store, _lock) = match open_store(&config) {
        Ok(s) => s,
        Err(e) => {
            log(format_args!("Error: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let cluster = config
        .cluster
        .clone()
        .map(|c| shardmq::cluster::node::starter(c, config.metrics.clone()));
    if let Some(c) = &config.cluster {
        log(format_args!(
            "cluster {}: node {} joining through {}",
            c.name,
            c.node,
            c.nats.join(",")
        ));
    }
    let running = shardmq::shard::run_node(config, store, cluster);
    drop(recovering);
    let mut running = match running {
        Ok(r) => r,
        Err(e) => {
            log(format_args!("Error: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let admin_check = match admin_credentials(admin_password_file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            log(format_args!("Error: {e}"));
            running.stop();
            running.join();
            return ExitCode::FAILURE;
        }
    };
    let admin = match admin::start(config_admin, metrics.clone(), admin_check, admin_tls) {
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
        info(format_args!("Opening listen socket on {addr}."));
        if print_bound {
            println!("listening {addr}");
        }
    }
    if let Some(a) = &admin {
        let scheme = if a.tls() { "https" } else { "http" };
        info(format_args!("Admin listener on {scheme}://{}/", a.addr()));
        if print_bound {
            println!("admin {}", a.addr());
        }
    }
    let _ = std::io::stdout().flush();
    log(format_args!(
        "shardmq version {version} running with {shards} shard(s)"
    ));
    while let Some(sig) = signals.forever().next() {
        if sig != SIGHUP {
            break;
        }
        reload(&mut current, &argv, &mut running, admin.as_ref());
    }
    log(format_args!("shardmq version {version} terminating"));
    // A second SIGINT/SIGTERM while draining: exit at once.
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if sig != SIGHUP {
                log(format_args!(
                    "Warning: second signal while shutting down; exiting now"
                ));
                std::process::exit(1);
            }
        }
    });
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

/// The admin listener's HTTP basic auth from `admin_password_file` (the MQTT password
/// file's format), checked on the admin thread, never on a shard.
fn admin_credentials(
    path: Option<&std::path::Path>,
) -> Result<Option<std::sync::Arc<dyn admin::CredentialCheck>>, String> {
    let Some(path) = path else {
        return Ok(None);
    };
    let file = shardmq::auth::passwd::PasswordFile::load(path).map_err(|e| e.to_string())?;
    let check = move |user: &str, password: &str| {
        file.verify(user, password.as_bytes()) == shardmq::auth::passwd::Verdict::Ok
    };
    Ok(Some(std::sync::Arc::new(check)))
}

/// SIGHUP: read the configuration again and apply it, or keep the running one whole.
fn reload(
    current: &mut Config,
    argv: &[std::ffi::OsString],
    running: &mut shardmq::shard::Running,
    admin: Option<&admin::Admin>,
) {
    info(format_args!("Reloading config."));
    let r = match shardmq::config::reload::reread(current, argv) {
        Ok(r) => r,
        Err(e) => {
            refused(current, &e);
            return;
        }
    };
    let log_out = match shardmq::log_sink::prepare(&r.config.log) {
        Ok(p) => p,
        Err(e) => {
            refused(current, &e);
            return;
        }
    };
    let next = std::sync::Arc::new(r.config);
    let (opened, closed) = match running.reload(next.clone()) {
        Ok(x) => x,
        Err(e) => {
            refused(current, &e);
            return;
        }
    };
    shardmq::log_sink::switch(log_out);
    for w in &next.warnings {
        log(format_args!("Warning: {w}"));
    }
    for line in &r.needs_restart {
        log(format_args!("Warning: {line}"));
    }
    for addr in &closed {
        info(format_args!("Closing listen socket on {addr}."));
    }
    for addr in &opened {
        info(format_args!("Opening listen socket on {addr}."));
        if next.print_bound {
            println!("listening {addr}");
        }
    }
    let _ = std::io::stdout().flush();
    if let (Some(a), Some(t)) = (admin, &next.admin_tls) {
        // The same files, read again: a renewed certificate serves the next connections.
        a.set_tls(t.server.clone());
    }
    let m = &next.metrics;
    m.reloads_applied.set(m.reloads_applied.get() + 1);
    info(format_args!("Configuration reloaded."));
    *current = (*next).clone();
}

/// A reload that cannot be applied: logged and counted; the running configuration stays.
fn refused(current: &Config, e: &dyn std::fmt::Display) {
    let m = &current.metrics;
    m.reloads_refused.set(m.reloads_refused.get() + 1);
    log(format_args!(
        "Error: reload refused, keeping the running configuration: {e}"
    ));
}

/// With persistence on: lock the store, recover it, lay it out for this shard count and
/// return each shard's part. The lock is held until the broker exits.
fn open_store(config: &Config) -> Result<(Option<StoreStart>, Option<StoreLock>), String> {
    let p = &config.persistence;
    if !p.enabled {
        return Ok((None, None));
    }
    let dir = p.location.clone();
    let lock = StoreLock::acquire(&dir).map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let n = config.shards;
    let shard_of = |s: &str| shardmq::broker::home_shard(s, n);
    let rec = store::recover_parts(&dir, n, shard_of, shard_of).map_err(|e| e.to_string())?;
    for cut in &rec.cuts {
        log(format_args!(
            "Warning: store: {} cut at byte {} ({} bytes dropped): {:?}",
            cut.file.display(),
            cut.offset,
            cut.bytes_dropped,
            cut.reason
        ));
    }
    let mut parts = rec.parts;
    let bridges = parts
        .first_mut()
        .map(|p| std::mem::take(&mut p.bridges))
        .unwrap_or_default();
    let retained: Vec<_> = parts
        .iter()
        .flat_map(|p| {
            p.retained.iter().filter_map(|(t, r)| {
                let m = p.messages.get(&r.msg?)?;
                Some((t.clone(), m.clone(), r.stamp, r.source.clone()))
            })
        })
        .collect();
    let count = |f: fn(&store::LiveState) -> usize| parts.iter().map(f).sum::<usize>();
    log(format_args!(
        "Store {}: {} session(s), {} message(s), {} retained, {} record(s) read in {} ms",
        dir.display(),
        count(|p| p.sessions.len()),
        count(|p| p.messages.len()),
        retained.len(),
        rec.records,
        started.elapsed().as_millis()
    ));
    // A bridge's stored state is keyed by its local client id (Mosquitto keeps a bridge's
    // queue in that client's session): renaming a `connection` keeps its queue.
    let host = shardmq::shard::bridges::hostname();
    let owner = |local_id: &str| {
        let b = config
            .bridges
            .iter()
            .find(|b| b.local_client_id(&host) == local_id)?;
        Some(shardmq::broker::bridges::bridge_owner(&b.name, n))
    };
    for (name, lost) in store::state::place_bridges(&mut parts, bridges, owner) {
        log(format_args!(
            "Warning: store: no bridge has local_clientid '{name}' any more; its {lost} stored message(s) are dropped"
        ));
    }
    store::install(&dir, &parts).map_err(|e| e.to_string())?;
    log(format_args!(
        "Store {}: laid out for {n} shard(s) after {} ms",
        dir.display(),
        started.elapsed().as_millis()
    ));
    let opts = WalOptions {
        sync: if p.sync_always {
            SyncMode::Always
        } else {
            SyncMode::Never
        },
        checkpoint: CheckpointPolicy {
            interval_s: u64::from(p.autosave_interval_s),
            ..CheckpointPolicy::default()
        },
        ..WalOptions::default()
    };
    let start = StoreStart {
        dir,
        parts,
        retained,
        opts,
    };
    Ok((Some(start), Some(lock)))
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

/// `shardmq cluster-forget -c FILE NODE`: remove a dead node from the cluster FILE's
/// `cluster_*` lines name (`shardmq::cluster::forget`).
fn cluster_forget(path: &std::path::Path, node: &str) -> ExitCode {
    let args = Args::parse_from([
        std::ffi::OsStr::new("shardmq"),
        "-c".as_ref(),
        path.as_os_str(),
    ]);
    let cluster = match Config::from_args(args) {
        Ok(c) => c.cluster,
        Err(e) => {
            eprintln!("shardmq: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(cluster) = cluster else {
        eprintln!("shardmq: {} has no cluster_* lines", path.display());
        return ExitCode::from(2);
    };
    match shardmq::cluster::forget::forget(&cluster, node) {
        Ok(f) => {
            println!(
                "cluster {}: node {node} forgotten: {} interest entries deleted, consumer {}, {} queued messages purged, heartbeat key {}, {} share group queues removed",
                cluster.name,
                f.interest_entries,
                if f.consumer_deleted { "deleted" } else { "absent" },
                f.messages_purged,
                if f.heartbeat_marked {
                    "marked forgotten"
                } else {
                    "absent or forgotten already"
                },
                f.groups_removed
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shardmq: cluster {}: node {node}: {e}", cluster.name);
            ExitCode::FAILURE
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
