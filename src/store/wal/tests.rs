use std::borrow::Cow;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;
use crate::store::frame::{encode_frame, encode_group, FORMAT_SINGLE};
use crate::store::layout::{recover_all, shard_dir};
use crate::store::record::{MsgId, Record};
use crate::store::state::LiveState;
use crate::store::testutil::{fill_records, message, session, Scratch};

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
    let f = wal.figures();
    assert_eq!((f.write_time.count(), f.batch_records.sum()), (1, 10));
    assert_eq!(
        f.batch_bytes.sum(),
        f.disk_bytes.get() - FILE_HEADER_BYTES as u64
    );
    assert!(
        f.sync_time.count() >= 1,
        "the sync thread timed its fdatasync"
    );
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
    // 6 KiB: with grouped frames a turn writes ≈ 190 bytes, so ≈ 12 checkpoints.
    let policy = CheckpointPolicy {
        log_bytes_max: 6 * 1024,
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
                retain: false,
                sub_ids: Cow::Borrowed(&[]),
                txn: 0,
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
    let f = wal.figures();
    assert_eq!(f.checkpoint_time.count(), checkpoints);
    assert_eq!(f.batch_records.count(), 400, "one group commit per turn");
    assert_eq!(f.checkpoint_failures.get(), 0);
    assert_eq!(
        f.disk_bytes.get(),
        dir_bytes(&shard_dir(data.path(), 0)),
        "bytes on disk are tracked exactly"
    );
    // Live state ≈ 20 × 150 B; log since a checkpoint ≤ 6 KiB plus one segment's slack.
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

/// A tiny deterministic generator for the power-cut runs (xorshift64*).
struct Rand(u64);

impl Rand {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// One shard's log on a [`SimDisk`], driven by hand, with the state it has logged.
struct PowerRun {
    disk: crate::store::SimDisk,
    wal: Wal,
    shadow: LiveState,
    /// The session set after each LSN (index = LSN, from the checkpoint's).
    after: Vec<std::collections::BTreeSet<String>>,
    base: Lsn,
}

const POWER_DATA: &str = "/data";

fn power_opts() -> WalOptions {
    WalOptions {
        segment_bytes_max: 1024,
        sync: SyncMode::Always,
        checkpoint: CheckpointPolicy {
            log_bytes_max: 3000,
            interval_s: 0,
        },
        background: Background::Manual,
    }
}

impl PowerRun {
    /// Recover what the disk holds, install it, and open the log after it.
    fn start(disk: crate::store::SimDisk) -> (PowerRun, LiveState) {
        let data = Path::new(POWER_DATA);
        let r = crate::store::recover_all_on(Arc::new(disk.clone()), data).expect("recover");
        let state = r.state;
        let parts = state.clone().split(1, |_| 0, |_| 0);
        crate::store::install_on(&disk, data, &parts).expect("install");
        let wal = Wal::open_on(
            Arc::new(disk.clone()),
            &shard_dir(data, 0),
            power_opts(),
            || {},
        )
        .expect("open");
        let now: std::collections::BTreeSet<String> =
            state.sessions.keys().map(String::from).collect();
        let run = PowerRun {
            disk,
            base: wal.last_lsn(),
            wal,
            shadow: parts.into_iter().next().unwrap_or_default(),
            after: vec![now],
        };
        (run, state)
    }

    fn log(&mut self, r: Record<'static>) {
        let lsn = self.wal.append(&r);
        self.shadow.apply(r);
        assert_eq!(lsn, self.base + self.after.len() as Lsn);
        self.after
            .push(self.shadow.sessions.keys().map(String::from).collect());
    }

    fn step(&mut self, rng: &mut Rand, next_client: &mut u64) {
        match rng.below(20) {
            0..=7 => {
                for _ in 0..=rng.below(4) {
                    let mut live: Vec<String> =
                        self.shadow.sessions.keys().map(String::from).collect();
                    live.sort_unstable();
                    if !live.is_empty() && rng.below(3) == 0 {
                        let c = live[rng.below(live.len() as u64) as usize].clone();
                        self.log(Record::SessionEnded {
                            client_id: Cow::Owned(c),
                        });
                    } else {
                        *next_client += 1;
                        self.log(session(&format!("c{next_client}"), rng.below(2) == 0));
                    }
                }
            }
            8..=10 => {
                let _ = self.wal.end_turn();
            }
            11..=13 => {
                self.wal.sync_step();
            }
            14 => {
                if self.wal.checkpoint_due(Instant::now()) {
                    let _ = self.wal.checkpoint(self.shadow.records());
                }
            }
            15 => {
                self.wal.run_background();
                let _ = self.wal.poll_checkpoint();
            }
            16 => self.disk.set_full(rng.below(4) == 0),
            17 => self.disk.set_sync_fails(rng.below(30) == 0),
            _ => {
                let _ = self.wal.end_turn();
                self.wal.sync_step();
            }
        }
    }
}

/// Power cuts at random points of a log's life (appends, writes, syncs, segment rolls,
/// checkpoints half written, a full disk, failed syncs): recovery always returns the state
/// after some LSN at or past the last one reported durable, never less, never more than
/// was written.
#[test]
fn power_cuts_never_lose_what_was_reported_durable() {
    for seed in 1..=40u64 {
        let mut rng = Rand(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let disk = crate::store::SimDisk::default();
        let (mut run, _) = PowerRun::start(disk.clone());
        let mut next_client = 0;
        for cut in 0..4 {
            for _ in 0..rng.below(400) {
                run.step(&mut rng, &mut next_client);
            }
            let durable = run.wal.durable_lsn();
            let after = std::mem::take(&mut run.after);
            let base = run.base;
            drop(run);
            disk.power_cut();
            disk.set_full(false);
            disk.set_sync_fails(false);
            let (again, state) = PowerRun::start(disk.clone());
            let got: std::collections::BTreeSet<String> =
                state.sessions.keys().map(String::from).collect();
            let first_ok = (durable - base) as usize;
            let matched = after[first_ok..].contains(&got);
            assert!(
                matched,
                "seed {seed}, cut {cut}: recovered {} sessions, not the state after any LSN \
                 from the durable {durable} on (base {base}, last {})",
                got.len(),
                base + after.len() as Lsn - 1
            );
            run = again;
        }
    }
}

/// The sessions of what `disk` would keep through a power cut now.
fn sessions_after_cut(disk: &crate::store::SimDisk) -> Vec<String> {
    let copy = Arc::new(disk.durable_copy());
    let r = crate::store::recover_all_on(copy, Path::new(POWER_DATA)).expect("recover");
    // Before the first sync the segment's header is not durable either (a torn file).
    let gap =
        |c: &&crate::store::CutReport| matches!(c.reason, crate::store::CutReason::LsnGap { .. });
    assert!(!r.cuts.iter().any(|c| gap(&c)), "no LSN gap: {:?}", r.cuts);
    let mut ids: Vec<String> = r.state.sessions.keys().map(String::from).collect();
    ids.sort_unstable();
    ids
}

/// A record cancelled before its batch is written is never written and takes no LSN: the
/// file's LSNs stay consecutive (recovery cuts at a gap), its ticket counts as durable
/// with the batch around it, and a power cut before or after the batch's sync recovers as
/// if it had never been logged. A written record cannot be cancelled.
#[test]
fn cancelled_records_are_never_written_and_take_no_lsn() {
    let disk = crate::store::SimDisk::default();
    let (mut run, _) = PowerRun::start(disk.clone());
    let t: Vec<Lsn> = (1..=3)
        .map(|i| run.wal.append(&client_session(i)))
        .collect();
    assert_eq!(t, [1, 2, 3]);
    assert!(run.wal.cancel(2), "unwritten: taken back");
    assert!(!run.wal.cancel(2), "once");
    assert!(!run.wal.cancel(4), "no such record");
    run.wal.end_turn().expect("write");
    assert!(!run.wal.cancel(1), "written: too late");
    assert_eq!(run.wal.written_file_lsn(), 2, "two frames written");
    assert!(
        sessions_after_cut(&disk).is_empty(),
        "a cut before the sync"
    );
    assert!(run.wal.syncing() && run.wal.will_defer());
    assert!(run.wal.sync_step());
    assert_eq!(
        run.wal.durable_lsn(),
        3,
        "the cancelled ticket counts as durable"
    );
    assert!(!run.wal.syncing());
    assert_eq!(sessions_after_cut(&disk), ["c1", "c3"], "a cut after it");

    // A batch whose every record was cancelled writes nothing and is durable once synced.
    let t5 = run.wal.append(&client_session(5));
    assert!(run.wal.cancel(t5));
    assert!(run.wal.end_turn_unless_syncing().expect("write"));
    assert!(run.wal.sync_step());
    assert_eq!(run.wal.durable_lsn(), t5);
    // The next frames follow on in the file: LSN 3, 4.
    run.wal.append(&client_session(6));
    run.wal.append(&client_session(7));
    assert!(run.wal.end_turn_unless_syncing().expect("write"));
    assert_eq!(run.wal.written_file_lsn(), 4);
    // Another batch while that one waits for its sync stays in memory.
    let t8 = run.wal.append(&client_session(8));
    assert!(!run.wal.end_turn_unless_syncing().expect("kept"));
    assert!(run.wal.cancel(t8), "still cancellable");
    assert!(run.wal.sync_step());
    assert_eq!(sessions_after_cut(&disk), ["c1", "c3", "c6", "c7"]);
    let f = run.wal.figures();
    assert_eq!(f.batch_records.sum(), 4, "live records only: 2, 0 and 2");
    drop(run);
    disk.power_cut();
    let (_again, state) = PowerRun::start(disk.clone());
    let mut got: Vec<&str> = state.sessions.keys().collect();
    got.sort_unstable();
    assert_eq!(got, ["c1", "c3", "c6", "c7"]);
}

/// The unwritten batch reads back exactly the records appended, under their tickets;
/// a cancelled or written one reads back as nothing.
#[test]
fn unwritten_records_read_back_as_appended() {
    let disk = crate::store::SimDisk::default();
    let (mut run, _) = PowerRun::start(disk.clone());
    assert!(run.wal.unwritten_tickets().is_empty());
    let records: Vec<Record<'static>> = (1..=3).map(client_session).collect();
    let t: Vec<Lsn> = records.iter().map(|r| run.wal.append(r)).collect();
    assert_eq!(run.wal.unwritten_tickets(), t[0]..t[2] + 1);
    for (r, &ticket) in records.iter().zip(&t) {
        let back = run
            .wal
            .unwritten(ticket)
            .expect("unwritten")
            .expect("decodes");
        assert_eq!(&back, r);
    }
    assert!(run.wal.cancel(t[1]));
    assert!(run.wal.unwritten(t[1]).is_none(), "cancelled");
    assert!(run.wal.unwritten(t[2] + 1).is_none(), "not appended");
    run.wal.end_turn().expect("write");
    assert!(run.wal.unwritten_tickets().is_empty());
    assert!(run.wal.unwritten(t[0]).is_none(), "written");
    let t4 = run.wal.append(&client_session(4));
    assert_eq!(run.wal.unwritten_tickets(), t4..t4 + 1);
    assert_eq!(
        run.wal.unwritten(t4).expect("unwritten").expect("decodes"),
        client_session(4)
    );
}

/// The groups of the segment file `path` on `disk`: (first LSN, records) of each, read
/// through the frame layer; panics on a cut.
fn groups_in(disk: &crate::store::SimDisk, path: &Path) -> Vec<(Lsn, usize)> {
    let mut buf = vec![0u8; 1 << 20];
    let n = disk.read_at(path, 0, &mut buf).expect("read");
    let bytes = &buf[..n];
    let (header, format) = FileHeader::decode_format(bytes).expect("header");
    assert_eq!(format, crate::store::frame::FrameFormat::Grouped);
    let mut groups = Vec::new();
    let mut pos = FILE_HEADER_BYTES;
    let mut next = header.lsn;
    while pos < bytes.len() {
        let body = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes"));
        let end = pos + 16 + body as usize;
        let mut count = 0;
        let (after, cut) =
            crate::store::frame::scan(&bytes[..end], pos, next, format, |_, _| count += 1);
        assert_eq!(cut, None);
        assert!(
            body as usize <= GROUP_BODY_BYTES_MAX + 64 || count == 1,
            "{body} bytes"
        );
        groups.push((next, count));
        (pos, next) = (end, after);
    }
    groups
}

/// A batch is written as groups of records, one checksum each: small records share a
/// group up to its cap, a record past the cap is a group alone, cancelled records take no
/// LSN inside a group. Torn at every byte (a power cut while the batch was written back,
/// before its sync, so before any of its acks), recovery keeps whole groups: a prefix of
/// the batch, never a part of a group.
#[test]
fn a_batch_is_framed_in_groups_and_a_torn_group_is_dropped_whole() {
    let disk = crate::store::SimDisk::default();
    let (mut run, _) = PowerRun::start(disk.clone());
    let path = shard_dir(Path::new(POWER_DATA), 0).join(segment_name(1));
    let small: Vec<Record<'static>> = (1..=1500).map(client_session).collect();
    let big = Record::MessageStored {
        id: MsgId(1),
        msg: message("big", &vec![9u8; GROUP_BODY_BYTES_MAX + 10], true),
    };
    // The opts' 1,024-byte segments would roll each batch: one big segment here.
    run.wal.opts.segment_bytes_max = 64 << 20;
    let t: Vec<Lsn> = small[..700].iter().map(|r| run.wal.append(r)).collect();
    assert!(run.wal.cancel(t[3]));
    run.wal.append(&big);
    for r in &small[700..] {
        run.wal.append(r);
    }
    run.wal.end_turn().expect("write");
    let groups = groups_in(&disk, &path);
    let counts: Vec<usize> = groups.iter().map(|g| g.1).collect();
    assert_eq!(counts.iter().sum::<usize>(), 1500 - 1 + 1);
    // The big record takes LSN 700 (one before it was cancelled), in a group alone.
    assert!(
        groups.contains(&(700, 1)),
        "the big record alone: {groups:?}"
    );
    assert!((3..=6).contains(&groups.len()), "a few groups: {counts:?}");
    for w in groups.windows(2) {
        assert_eq!(w[0].0 + w[0].1 as Lsn, w[1].0, "LSNs follow on: {groups:?}");
    }
    // Torn anywhere: the sessions recovered are those of whole groups.
    let whole: Vec<usize> = groups
        .iter()
        .scan(0, |n, g| {
            *n += g.1;
            Some(*n)
        })
        .collect();
    let len = disk.len(&path).expect("len") as usize;
    let mut seen = std::collections::BTreeSet::new();
    for keep in (0..=len).step_by(613).chain([len]) {
        let torn = Arc::new(disk.torn_copy(&path, keep).expect("torn"));
        let r = crate::store::recover_all_on(torn, Path::new(POWER_DATA)).expect("recover");
        let records = r.records as usize;
        assert!(
            records == 0 || whole.contains(&records),
            "kept {keep} bytes: {records} records, not a prefix of whole groups {whole:?}"
        );
        seen.insert(records);
    }
    assert!(seen.len() > 3, "cuts fell in several groups: {seen:?}");
    assert!(run.wal.sync_step());
    assert_eq!(run.wal.durable_lsn(), 1501);
}

/// Records bound with `join_from` are framed in one group even where the group's cap
/// falls among them (the group passes the cap by that much), so a torn batch keeps all of
/// them or none. Without the binding, the same batches put a group boundary inside the
/// run for some filler count: the case the binding is for.
#[test]
fn records_joined_into_a_run_are_never_split_between_groups() {
    // How many of these small records fill the first group of a batch.
    let first_group = {
        let disk = crate::store::SimDisk::default();
        let (mut run, _) = PowerRun::start(disk.clone());
        run.wal.opts.segment_bytes_max = 64 << 20;
        for i in 1..=6000 {
            run.wal.append(&client_session(i));
        }
        run.wal.end_turn().expect("write");
        let path = shard_dir(Path::new(POWER_DATA), 0).join(segment_name(1));
        groups_in(&disk, &path)[0].1
    };
    for join in [false, true] {
        let mut split = 0;
        for fillers in first_group - 4..first_group + 2 {
            let disk = crate::store::SimDisk::default();
            let (mut run, _) = PowerRun::start(disk.clone());
            run.wal.opts.segment_bytes_max = 64 << 20;
            let mut i = 0;
            for _ in 0..fillers {
                i += 1;
                run.wal.append(&client_session(i));
            }
            let begin = run.wal.next_ticket();
            for _ in 0..3 {
                i += 1;
                run.wal.append(&client_session(i));
            }
            if join {
                run.wal.join_from(begin);
            }
            run.wal.end_turn().expect("write");
            let path = shard_dir(Path::new(POWER_DATA), 0).join(segment_name(1));
            let starts: Vec<Lsn> = groups_in(&disk, &path).iter().map(|g| g.0).collect();
            if starts.iter().any(|&g| g > begin && g < begin + 3) {
                split += 1;
            }
        }
        if join {
            assert_eq!(split, 0, "a joined run was split between groups");
        } else {
            assert!(split > 0, "no filler count put a boundary inside the run");
        }
    }
}

/// A shard directory whose segment was written before groups (format 1, one record per
/// frame) recovers as before; the log then goes on in groups, and both recover.
#[test]
fn an_old_format_segment_recovers_and_the_log_goes_on_in_groups() {
    let disk = crate::store::SimDisk::default();
    let dir = shard_dir(Path::new(POWER_DATA), 0);
    disk.create_dir_all(&dir).expect("mkdir");
    let header = FileHeader {
        kind: FileKind::Segment,
        lsn: 1,
    };
    let mut old = header.encode_as(FORMAT_SINGLE).to_vec();
    for i in 1..=3 {
        encode_frame(&mut old, i, &client_session(i));
    }
    let mut f = disk.create_new(&dir.join(segment_name(1))).expect("create");
    f.append(&old).expect("write");
    let (mut run, state) = PowerRun::start(disk.clone());
    let mut got: Vec<&str> = state.sessions.keys().collect();
    got.sort_unstable();
    assert_eq!(got, ["c1", "c2", "c3"]);
    run.wal.append(&client_session(4));
    run.wal.append(&client_session(5));
    run.wal.end_turn().expect("write");
    assert!(run.wal.sync_step());
    let mut head = [0u8; FILE_HEADER_BYTES];
    let seg = dir.join(segment_name(1));
    disk.read_at(&seg, 0, &mut head).expect("read");
    let version = u16::from_le_bytes([head[8], head[9]]);
    assert_eq!(version, crate::store::FORMAT_VERSION);
    drop(run);
    disk.power_cut();
    let (_again, state) = PowerRun::start(disk.clone());
    let mut got: Vec<&str> = state.sessions.keys().collect();
    got.sort_unstable();
    assert_eq!(got, ["c1", "c2", "c3", "c4", "c5"]);
}

/// `bench/recovery`'s state (offline sessions with queued QoS 1 messages), live.
fn fill_state(sessions: u64, per: u64) -> LiveState {
    let mut live = LiveState::default();
    for r in fill_records(sessions, per) {
        live.apply(r);
    }
    live.finish();
    live
}

/// A checkpoint is no larger than the log it replaces for the same state: its records
/// are packed in groups as the log's are. With a frame per record (before) it was 27 %
/// larger than the records themselves: 175.3 bytes per stored delivery against the log's
/// 140.9.
#[test]
fn a_checkpoint_is_no_larger_than_the_log_of_its_state() {
    let (sessions, per) = (1000, 10);
    let records = fill_records(sessions, per);
    // The log as `examples/store_fill.rs` writes it: turns of 1,000 records, each a
    // group (≈ 60 KiB, under the group cap).
    let header = FileHeader {
        kind: FileKind::Segment,
        lsn: 1,
    };
    let mut log = header.encode().to_vec();
    for (i, turn) in records.chunks(1000).enumerate() {
        encode_group(&mut log, 1 + i as u64 * 1000, turn);
    }
    let checkpoint = encode_checkpoint(records.len() as Lsn, fill_state(sessions, per).records());
    let deliveries = (sessions * per) as f64;
    let per_delivery = |bytes: usize| bytes as f64 / deliveries;
    assert!(
        checkpoint.len() <= log.len(),
        "checkpoint {:.1} B per delivery, log {:.1}",
        per_delivery(checkpoint.len()),
        per_delivery(log.len()),
    );
    assert!(per_delivery(checkpoint.len()) < 141.0);
}

/// A checkpoint written before groups (format 1, one record per frame) restores the
/// same state as one written now; the install after it writes groups.
#[test]
fn an_old_format_checkpoint_restores_unchanged() {
    let live = fill_state(50, 3);
    let encoded = |s: &LiveState| -> Vec<Vec<u8>> {
        s.records()
            .map(|r| {
                let mut b = Vec::new();
                r.encode(&mut b);
                b
            })
            .collect()
    };
    let header = FileHeader {
        kind: FileKind::Checkpoint,
        lsn: 500,
    };
    let mut old = header.encode_as(FORMAT_SINGLE).to_vec();
    for (lsn, r) in (1..).zip(live.records()) {
        encode_frame(&mut old, lsn, &r);
    }
    let new = encode_checkpoint(500, live.records());
    assert!(new.len() < old.len());
    for bytes in [old, new] {
        let disk = crate::store::SimDisk::default();
        let dir = shard_dir(Path::new(POWER_DATA), 0);
        disk.create_dir_all(&dir).expect("mkdir");
        let mut f = disk.create_new(&dir.join(CHECKPOINT_FILE)).expect("create");
        f.append(&bytes).expect("write");
        let r = crate::store::recover_all_on(Arc::new(disk.clone()), Path::new(POWER_DATA))
            .expect("recover");
        assert!(r.cuts.is_empty(), "{:?}", r.cuts);
        assert_eq!(r.records, live.records().count() as u64);
        assert_eq!(encoded(&r.state), encoded(&live));
        let (_run, state) = PowerRun::start(disk.clone());
        assert_eq!(encoded(&state), encoded(&live));
        let mut head = [0u8; FILE_HEADER_BYTES];
        disk.read_at(&dir.join(CHECKPOINT_FILE), 0, &mut head)
            .expect("read");
        assert_eq!(
            u16::from_le_bytes([head[8], head[9]]),
            crate::store::FORMAT_VERSION
        );
    }
}
