//! Writes a store as a one-shard broker would leave it after persistent sessions went
//! offline and messages were queued for them, for the recovery-time benchmark
//! (`bench/recovery`, issue 11). Through the store's own API: one log, records in turns of
//! about 1,000 like a busy shard's, every record the broker writes for this case.
//!
//! `cargo run --release --example store_fill DATA_DIR SESSIONS MESSAGES_PER_SESSION [PAYLOAD_BYTES]`
//!
//! Per session (client id `fill-NNNNNN`, MQTT 3.1.1, Clean Session 0): session created,
//! one QoS 1 subscription `fill/NNNNNN/#`, disconnected. Then, round-robin over the
//! sessions, each message stored once and queued for its session (QoS 1, topic
//! `fill/NNNNNN/K`). `DATA_DIR` must not exist. Nothing is `fdatasync`ed (the benchmark
//! reads it back from the page cache).

use std::borrow::Cow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use shardmq::store::{
    MessageProps, MsgId, Record, SessionInfo, StoredMessage, Subscription, SyncMode, Wal,
    WalOptions,
};

/// Records per `end_turn`, about a busy shard's turn.
const RECORDS_PER_TURN: u64 = 1_000;
/// Bounds, so a typo cannot fill the disk.
const SESSIONS_MAX: u64 = 10_000_000;
const MESSAGES_MAX: u64 = 100_000_000;
const PAYLOAD_BYTES_MAX: usize = 1 << 20;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: Option<u64>| -> Option<u64> {
        args.get(i).map_or(default, |s| s.parse().ok())
    };
    let (Some(dir), Some(sessions), Some(per), Some(payload)) = (
        args.first().map(PathBuf::from),
        num(1, None),
        num(2, None),
        num(3, Some(64)),
    ) else {
        eprintln!("usage: store_fill DATA_DIR SESSIONS MESSAGES_PER_SESSION [PAYLOAD_BYTES]");
        return ExitCode::from(2);
    };
    let payload = usize::try_from(payload).unwrap_or(usize::MAX);
    if sessions > SESSIONS_MAX
        || sessions.saturating_mul(per) > MESSAGES_MAX
        || payload > PAYLOAD_BYTES_MAX
    {
        eprintln!("store_fill: at most {SESSIONS_MAX} sessions, {MESSAGES_MAX} messages, {PAYLOAD_BYTES_MAX}-byte payloads");
        return ExitCode::from(2);
    }
    if dir.exists() {
        eprintln!("store_fill: {} exists", dir.display());
        return ExitCode::from(2);
    }
    match fill(&dir, sessions, per, payload) {
        Ok(records) => {
            println!("records {records}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("store_fill: {e}");
            ExitCode::FAILURE
        }
    }
}

fn fill(dir: &std::path::Path, sessions: u64, per: u64, payload: usize) -> Result<u64, String> {
    let began = Instant::now();
    let opts = WalOptions {
        sync: SyncMode::Never,
        ..WalOptions::default()
    };
    let mut log = Log {
        wal: Wal::open(&dir.join("shard-0"), opts, || {}).map_err(|e| e.to_string())?,
        records: 0,
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    for s in 0..sessions {
        let client = || Cow::Owned(format!("fill-{s:06}"));
        log.add(&Record::SessionCreated(SessionInfo {
            client_id: client(),
            protocol: 4,
            expiry_interval_s: u32::MAX,
            will: None,
        }))?;
        let sub = Subscription {
            share_group: None,
            filter: format!("fill/{s:06}/#").into(),
            qos: 1,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
            identifier: None,
        };
        log.add(&Record::SubscriptionAdded {
            client_id: client(),
            sub,
        })?;
        log.add(&Record::SessionDisconnected {
            client_id: client(),
            at_unix_ms: now_ms,
        })?;
    }
    let body = vec![b'x'; payload];
    let mut id = 0u64;
    for k in 0..per {
        for s in 0..sessions {
            id += 1;
            let msg = StoredMessage {
                topic: format!("fill/{s:06}/{k}").into(),
                payload: Cow::Borrowed(&body),
                qos: 1,
                retain: false,
                expires_at_unix_ms: None,
                props: MessageProps::default(),
                share_id: 0,
            };
            log.add(&Record::MessageStored { id: MsgId(id), msg })?;
            log.add(&Record::DeliveryQueued {
                client_id: format!("fill-{s:06}").into(),
                msg: MsgId(id),
                qos: 1,
                retain: false,
                sub_ids: Cow::Borrowed(&[]),
                txn: 0,
            })?;
        }
    }
    log.wal.end_turn().map_err(|e| e.to_string())?;
    eprintln!(
        "store_fill: {sessions} sessions, {id} messages, {} records in {} ms",
        log.records,
        began.elapsed().as_millis()
    );
    Ok(log.records)
}

struct Log {
    wal: Wal,
    records: u64,
}

impl Log {
    fn add(&mut self, r: &Record<'_>) -> Result<(), String> {
        self.wal.append(r);
        self.records += 1;
        if self.records.is_multiple_of(RECORDS_PER_TURN) {
            self.wal.end_turn().map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
