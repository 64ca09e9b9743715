use std::borrow::Cow;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;
use crate::store::layout::{recover_all, shard_dir};
use crate::store::record::{MsgId, Record};
use crate::store::state::LiveState;
use crate::store::testutil::{message, session, Scratch};

const WAIT: Duration = Duration::from_secs(20);

/// Open shard 0's log under `data`, with a callback that signals `rx`.
fn open(data: &Path, opts: WalOptions) -> (Wal, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    let wal = Wal::open(&shard_dir(data, 0), opts, move || {
        let _ = tx.send(());
    })
    .expect("open log");
    (wal, rx)
}

/// Wait, through the callback, until `lsn` is durable; panics after `WAIT`.
fn wait_durable(wal: &Wal, rx: &mpsc::Receiver<()>, lsn: Lsn) {
    let deadline = Instant::now() + WAIT;
    while wal.durable_lsn() < lsn {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "LSN {lsn} not durable after {WAIT:?}");
        let _ = rx.recv_timeout(left);
    }
}

fn client_session(i: u64) -> Record<'static> {
    session(&format!("c{i}"), i.is_multiple_of(3))
}

#[test]
fn durability_is_reported_through_the_callback_and_the_atomic() {
    let data = Scratch::new("durable");
    let (mut wal, rx) = open(data.path(), WalOptions::default());
    assert_eq!((wal.last_lsn(), wal.durable_lsn()), (0, 0));
    let lsns: Vec<Lsn> = (1..=10).map(|i| wal.append(&client_session(i))).collect();
    assert_eq!(lsns, (1..=10).collect::<Vec<_>>());
    assert_eq!(wal.durable_lsn(), 0, "nothing is durable before end_turn");
    wal.end_turn().expect("write");
    wait_durable(&wal, &rx, 10);
    assert_eq!(wal.durable_lsn(), 10);
    assert!(!wal.failed());
    drop(wal);
    let r = recover_all(data.path()).expect("recover");
    assert_eq!(r.state.sessions.len(), 10);
    assert!(r.cuts.is_empty(), "{:?}", r.cuts);
}

#[test]
fn sync_never_is_durable_at_write() {
    let data = Scratch::new("never");
    let opts = WalOptions {
        sync: SyncMode::Never,
        ..WalOptions::default()
    };
    let (mut wal, _rx) = open(data.path(), opts);
    wal.append(&client_session(1));
    wal.end_turn().expect("write");
    assert_eq!(wal.durable_lsn(), 1);
}

#[test]
fn segments_roll_whole_batches_and_recover_in_order() {
    let data = Scratch::new("roll");
    let opts = WalOptions {
        segment_bytes_max: 600,
        ..WalOptions::default()
    };
    let (mut wal, rx) = open(data.path(), opts);
    for turn in 0..20u64 {
        for i in 0..5 {
            wal.append(&client_session(turn * 5 + i + 1));
        }
        wal.end_turn().expect("write");
    }
    wait_durable(&wal, &rx, 100);
    let segments = list_segments(&crate::store::OsDisk, &shard_dir(data.path(), 0)).expect("list");
    assert!(
        segments.len() >= 5,
        "expected several segments, got {segments:?}"
    );
    drop(wal);
    let r = recover_all(data.path()).expect("recover");
    assert_eq!(r.records, 100);
    assert_eq!(r.state.sessions.len(), 100);
    assert!(r.cuts.is_empty(), "{:?}", r.cuts);
}

#[test]
fn open_refuses_a_log_that_was_not_recovered() {
    let data = Scratch::new("refuse");
    let (mut wal, _rx) = open(data.path(), WalOptions::default());
    wal.append(&client_session(1));
    drop(wal);
    let e = Wal::open(&shard_dir(data.path(), 0), WalOptions::default(), || {});
    assert!(
        matches!(e, Err(StoreError::NeedsRecovery(_))),
        "{:?}",
        e.err()
    );
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// The engine's side in miniature: a steady state of 20 sessions with one queued message
/// each, churned for many turns. With checkpoints the directory stays bounded by the live
/// state plus the log since the last checkpoint; recovery gives back exactly the state.
#[test]
fn checkpoints_delete_covered_segments_and_bound_disk_use() {
    let data = Scratch::new("ckpt");
    let policy = CheckpointPolicy {
        log_bytes_max: 8 * 1024,
        interval_s: 0,
    };
    let opts = WalOptions {
        segment_bytes_max: 4096,
        checkpoint: policy,
        ..WalOptions::default()
    };
    let (mut wal, rx) = open(data.path(), opts);
    let mut live = LiveState::default();
    let apply = |wal: &mut Wal, live: &mut LiveState, r: Record<'static>| {
        wal.append(&r);
        live.apply(r);
    };
    let mut checkpoints = 0;
    let mut max_bytes = 0;
    for turn in 0..400u64 {
        let client = Cow::Owned(format!("c{}", turn % 20));
        if turn < 20 {
            apply(&mut wal, &mut live, session(&client, false));
        }
        let old = MsgId(turn.saturating_sub(20) + 1);
        if turn >= 20 {
            apply(
                &mut wal,
                &mut live,
                Record::DeliveryDropped {
                    client_id: client.clone(),
                    msg: old,
                },
            );
        }
        let id = MsgId(turn + 1);
        apply(
            &mut wal,
            &mut live,
            Record::MessageStored {
                id,
                msg: message("t", &[7; 100], false),
            },
        );
        apply(
            &mut wal,
            &mut live,
            Record::DeliveryQueued {
                client_id: client,
                msg: id,
                qos: 1,
            },
        );
        live.finish();
        wal.end_turn().expect("write");
        if wal.checkpoint_due(Instant::now()) {
            assert!(wal.checkpoint(live.records()).expect("checkpoint"));
            assert!(wal.wait_checkpoint(WAIT).expect("checkpoint done"));
            checkpoints += 1;
        }
        max_bytes = max_bytes.max(dir_bytes(&shard_dir(data.path(), 0)));
    }
    wait_durable(&wal, &rx, wal.last_lsn());
    assert!(checkpoints >= 10, "{checkpoints} checkpoints");
    // Live state ≈ 20 × 150 B; log since a checkpoint ≤ 8 KiB plus one segment's slack.
    assert!(max_bytes < 24 * 1024, "directory grew to {max_bytes} bytes");
    drop(wal);
    let mut r = recover_all(data.path()).expect("recover");
    assert!(r.cuts.is_empty(), "{:?}", r.cuts);
    let mut expect = LiveState::default();
    expect.merge(live);
    expect.finish();
    r.state.orphans = expect.orphans;
    assert_eq!(r.state, expect);
}

/// The phase-2 pattern: hold each ack at the LSN of its records, release on wake-up.
#[test]
fn held_acks_are_released_only_once_their_records_are_durable() {
    let data = Scratch::new("hold");
    let (mut wal, rx) = open(data.path(), WalOptions::default());
    let mut held = crate::store::AckHold::default();
    for packet_id in 1..=5u16 {
        let lsn = wal.append(&client_session(u64::from(packet_id)));
        held.hold(lsn, packet_id);
    }
    assert_eq!(
        held.release(wal.durable_lsn()),
        None,
        "nothing durable before end_turn"
    );
    wal.end_turn().expect("write");
    wait_durable(&wal, &rx, 5);
    let released: Vec<u16> = std::iter::from_fn(|| held.release(wal.durable_lsn())).collect();
    assert_eq!(released, vec![1, 2, 3, 4, 5]);
    assert!(held.is_empty());
}
