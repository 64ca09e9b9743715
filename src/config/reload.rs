//! SIGHUP: read the configuration again and decide what of it applies.
//!
//! Owns: building the configuration a reload asks for from the original command line, and
//! the list of settings that cannot change while running. Invariant: the result is either
//! a whole, validated `Config` (with the running values kept for what cannot change live)
//! or an error naming the file and line; never a half-applied mix. Must not touch: the
//! running broker (`shard::Running::reload` applies the result at turn boundaries).
#![forbid(unsafe_code)]

use std::ffi::OsString;

use clap::Parser;

use super::{Args, Config};

/// A configuration to apply, and what of the file could not be applied live.
#[derive(Debug)]
pub struct Reloaded {
    /// The new configuration (what cannot change live keeps its running value).
    pub config: Config,
    /// One line per setting that changed in the file but needs a restart.
    pub needs_restart: Vec<String>,
}

/// Parse `argv` (the broker's own command line, kept from start-up) and the file it names
/// again. The command line still wins over the file, as at start-up.
pub fn reread(running: &Config, argv: &[OsString]) -> Result<Reloaded, String> {
    let args = Args::try_parse_from(argv).map_err(|e| e.to_string())?;
    let mut new = Config::from_args(args)?;
    let mut needs_restart = Vec::new();
    let mut keep = |name: &str, changed: bool| {
        if changed {
            needs_restart.push(format!(
                "{name} cannot change without a restart; keeping the running value"
            ));
        }
    };
    keep("shard count", new.shards != running.shards);
    keep(
        "persistence settings",
        new.persistence != running.persistence,
    );
    keep("admin_listener", new.admin != running.admin);
    keep(
        "admin_password_file",
        new.admin_password_file != running.admin_password_file,
    );
    keep(
        "admin_certfile/admin_keyfile/admin_cafile/admin_require_certificate",
        new.admin_tls != running.admin_tls,
    );
    keep("core pinning", new.pin != running.pin);
    // Bridges (`connection` blocks) change live: `Shard::apply_config` adds, replaces and
    // removes them (docs/bridges.md, *SIGHUP*).
    keep("cluster settings", new.cluster != running.cluster);
    new.cluster = running.cluster.clone();
    new.listener_ids_next = super::listener::assign_ids(
        &running.listeners,
        &mut new.listeners,
        running.listener_ids_next,
    );
    new.shards = running.shards;
    new.persistence = running.persistence.clone();
    new.admin = running.admin;
    new.admin_password_file = running.admin_password_file.clone();
    if new.admin_tls != running.admin_tls {
        new.admin_tls = running.admin_tls.clone();
    }
    new.pin = running.pin;
    new.print_bound = running.print_bound;
    // One figures board per running broker: the shards and the admin listener hold it.
    new.metrics = running.metrics.clone();
    Ok(Reloaded {
        config: new,
        needs_restart,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn a_reload_keeps_what_cannot_change_and_names_it() {
        let dir = std::env::temp_dir().join(format!("shardmq-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("r.conf");
        std::fs::write(&path, "shards 2\nmax_queued_messages 7\n").expect("write");
        let p = path.to_str().expect("utf-8 path");
        let argv = argv(&["shardmq", "-c", p, "--admin", "off"]);
        let running = Config::from_args(Args::parse_from(&argv)).expect("valid");
        std::fs::write(&path, "shards 3\nmax_queued_messages 9\n").expect("write");
        let r = reread(&running, &argv).expect("valid");
        assert_eq!(r.config.max_queued_messages, 9);
        assert_eq!(r.config.shards, 2, "the shard count is kept");
        assert!(std::sync::Arc::ptr_eq(&r.config.metrics, &running.metrics));
        assert_eq!(r.needs_restart.len(), 1, "{:?}", r.needs_restart);
        assert!(r.needs_restart[0].starts_with("shard count"));
        let bridge = "connection b\naddress 127.0.0.1:1\ntopic t/# out 1\n";
        std::fs::write(&path, format!("shards 2\n{bridge}")).expect("write");
        let r = reread(&running, &argv).expect("valid");
        assert_eq!(r.config.bridges.len(), 1, "bridges change live");
        assert!(r.needs_restart.is_empty(), "{:?}", r.needs_restart);
        std::fs::write(&path, "max_queued_messages 9\nbogus 1\n").expect("write");
        let e = reread(&running, &argv).expect_err("a bad file is refused whole");
        assert!(e.ends_with("r.conf:2: unknown option 'bogus'"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn listeners_keep_their_ids_when_reordered_and_new_ones_get_fresh_ids() {
        let dir = std::env::temp_dir().join(format!("shardmq-reload-ids-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("l.conf");
        let l = |ip: &str| format!("listener 0 {ip}\n");
        std::fs::write(&path, l("127.0.0.1") + &l("127.0.0.2") + &l("127.0.0.2")).expect("w");
        let p = path.to_str().expect("utf-8 path");
        let argv = argv(&["shardmq", "-c", p, "--admin", "off"]);
        let running = Config::from_args(Args::parse_from(&argv)).expect("valid");
        let ids = |c: &Config| c.listeners.iter().map(|l| l.id).collect::<Vec<_>>();
        assert_eq!(
            (ids(&running), running.listener_ids_next),
            (vec![0, 1, 2], 3)
        );
        // Reordered, one of the two 127.0.0.2 dropped, a new one added.
        std::fs::write(&path, l("127.0.0.3") + &l("127.0.0.2") + &l("127.0.0.1")).expect("w");
        let r = reread(&running, &argv).expect("valid").config;
        assert_eq!((ids(&r), r.listener_ids_next), (vec![3, 1, 0], 4));
        // The dropped listener's id 2 is never given again.
        std::fs::write(&path, l("127.0.0.2") + &l("127.0.0.2") + &l("127.0.0.1")).expect("w");
        let r2 = reread(&r, &argv).expect("valid").config;
        assert_eq!((ids(&r2), r2.listener_ids_next), (vec![1, 4, 0], 5));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
