use std::io::Write;

use proptest::prelude::*;

use super::*;
use crate::store::frame::{encode_frame, encode_group, FILE_HEADER_BYTES};
use crate::store::record::Record;
use crate::store::testutil::{arb_record, session, Scratch};
use crate::store::wal::{SyncMode, Wal, WalOptions};

fn never(segment_bytes_max: u64) -> WalOptions {
    WalOptions {
        segment_bytes_max,
        sync: SyncMode::Never,
        ..WalOptions::default()
    }
}

/// Write `records` to shard `k`'s log, one turn per record.
fn write_log(data: &Path, k: usize, records: &[Record<'static>], segment_bytes_max: u64) {
    let mut wal = Wal::open(&shard_dir(data, k), never(segment_bytes_max), || {}).expect("open");
    for r in records {
        wal.append(r);
        wal.end_turn().expect("write");
    }
}

fn sessions(prefix: &str, n: usize) -> Vec<Record<'static>> {
    (0..n)
        .map(|i| session(&format!("{prefix}{i}"), i % 2 == 0))
        .collect()
}

fn last_segment(dir: &Path) -> PathBuf {
    let n = list_segments(&crate::store::OsDisk, dir)
        .expect("list")
        .into_iter()
        .last()
        .expect("a segment");
    dir.join(segment_name(n))
}

#[test]
fn a_torn_tail_is_cut_and_reported() {
    let data = Scratch::new("torn");
    write_log(data.path(), 0, &sessions("c", 10), 1 << 20);
    let seg = last_segment(&shard_dir(data.path(), 0));
    let len = std::fs::metadata(&seg).expect("stat").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open");
    f.set_len(len - 3).expect("truncate");
    let r = recover_all(data.path()).expect("recover");
    assert_eq!(r.records, 9);
    assert_eq!(r.cuts.len(), 1);
    let cut = &r.cuts[0];
    assert_eq!((&cut.file, cut.reason), (&seg, CutReason::Torn));
    assert_eq!(cut.offset + cut.bytes_dropped, len - 3);
    assert!(cut.to_string().contains("bytes dropped"));
}

#[test]
fn a_flipped_bit_drops_the_rest_of_the_log_including_later_segments() {
    let data = Scratch::new("flip");
    write_log(data.path(), 0, &sessions("c", 40), 400);
    let dir = shard_dir(data.path(), 0);
    let segs = list_segments(&crate::store::OsDisk, &dir).expect("list");
    assert!(segs.len() >= 4, "{segs:?}");
    let victim = dir.join(segment_name(segs[1]));
    let mut bytes = std::fs::read(&victim).expect("read");
    let at = bytes.len() - 5;
    bytes[at] ^= 0x04;
    std::fs::write(&victim, &bytes).expect("write");
    let r = recover_all(data.path()).expect("recover");
    assert_eq!(r.cuts[0].file, victim);
    assert_eq!(r.cuts[0].reason, CutReason::Checksum);
    assert_eq!(
        r.cuts.len(),
        segs.len() - 1,
        "every later segment is reported dropped"
    );
    // Sessions kept are exactly a prefix: c0 .. c(k-1).
    let k = r.state.sessions.len();
    assert!(k > 0 && k < 40);
    assert_eq!(r.records as usize, k);
    for i in 0..k {
        assert!(
            r.state.sessions.contains_key(&format!("c{i}")),
            "c{i} of {k}"
        );
    }
}

/// Today a zero-filled tail (what a power cut leaves of unsynced bytes) is a checksum cut,
/// and the segments after it are dropped: right while only the last segment written can
/// hold unsynced bytes, and what decision 0021 (preallocated segments) must change first.
#[test]
fn a_zero_filled_tail_is_a_cut_that_drops_later_segments() {
    let data = Scratch::new("zerotail");
    write_log(data.path(), 0, &sessions("c", 40), 400);
    let dir = shard_dir(data.path(), 0);
    let segs = list_segments(&crate::store::OsDisk, &dir).expect("list");
    assert!(segs.len() >= 3, "{segs:?}");
    let first = dir.join(segment_name(segs[0]));
    let len = std::fs::metadata(&first).expect("stat").len();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&first)
        .expect("open");
    f.write_all(&[0u8; 256]).expect("zero fill");
    let r = recover_all(data.path()).expect("recover");
    let cut = &r.cuts[0];
    assert_eq!((&cut.file, cut.reason), (&first, CutReason::Checksum));
    assert_eq!((cut.offset, cut.bytes_dropped), (len, 256));
    assert_eq!(r.cuts.len(), segs.len(), "every later segment is dropped");
    assert!(r.cuts[1..]
        .iter()
        .all(|c| matches!(c.reason, CutReason::LsnGap { found: 0, .. })));
}

/// Give the file at `path` an intact header of format version `version`.
fn reversion(path: &Path, version: u16) {
    let mut bytes = std::fs::read(path).expect("read");
    let header = FileHeader::decode(&bytes).expect("header");
    bytes[..FILE_HEADER_BYTES].copy_from_slice(&header.encode_as(version));
    std::fs::write(path, &bytes).expect("write");
}

/// A segment or a checkpoint a newer build wrote (an intact header, a format version
/// this build does not read) stops recovery with an error naming the file and the
/// version; it is not cut as damage, which would drop it and every later segment.
#[test]
fn a_file_of_a_newer_format_stops_recovery_instead_of_being_cut() {
    let data = Scratch::new("newer");
    write_log(data.path(), 0, &sessions("c", 40), 400);
    let dir = shard_dir(data.path(), 0);
    let segs = list_segments(&crate::store::OsDisk, &dir).expect("list");
    assert!(segs.len() >= 3, "{segs:?}");
    let victim = dir.join(segment_name(segs[1]));
    let original = std::fs::read(&victim).expect("read");
    reversion(&victim, 99);
    match recover_all(data.path()) {
        Err(StoreError::Format(file, 99)) => assert_eq!(file, victim),
        other => panic!("recovery went on past a newer segment: {other:?}"),
    }
    let e = recover_all(data.path())
        .expect_err("still stopped")
        .to_string();
    assert!(
        e.contains("format version 99") && e.contains("newer build"),
        "{e}"
    );

    std::fs::write(&victim, &original).expect("write back");
    let r = recover_all(data.path()).expect("recover");
    assert!(r.cuts.is_empty(), "{:?}", r.cuts);
    install(data.path(), std::slice::from_ref(&r.state)).expect("install");
    let checkpoint = dir.join(CHECKPOINT_FILE);
    reversion(&checkpoint, 3);
    match recover_all(data.path()) {
        Err(StoreError::Format(file, 3)) => assert_eq!(file, checkpoint),
        other => panic!("recovery went on past a newer checkpoint: {other:?}"),
    }
}

#[test]
fn recovery_merges_any_number_of_shards_and_install_redistributes() {
    let data = Scratch::new("reshard");
    for k in 0..3 {
        write_log(data.path(), k, &sessions(&format!("s{k}-"), 5), 1 << 20);
    }
    let r = recover_all(data.path()).expect("recover");
    assert_eq!(
        (r.shards_read, r.state.sessions.len(), r.conflicts),
        (3, 15, 0)
    );
    let home = |c: &str| c.bytes().map(usize::from).sum::<usize>();
    let parts = r.state.clone().split(2, home, home);
    install(data.path(), &parts).expect("install");
    assert!(
        !shard_dir(data.path(), 2).exists(),
        "the third shard directory is gone"
    );
    for (k, part) in parts.iter().enumerate() {
        // The checkpoint written in pieces is the one encoded whole.
        let written = std::fs::read(shard_dir(data.path(), k).join(CHECKPOINT_FILE));
        let whole = crate::store::wal::encode_checkpoint(0, part.records());
        assert_eq!(written.expect("read checkpoint"), whole);
        // Each new shard opens an empty log after its installed checkpoint.
        let mut wal = Wal::open(&shard_dir(data.path(), k), never(1 << 20), || {}).expect("open");
        assert_eq!(wal.last_lsn(), 0);
        wal.append(&session(&format!("new{k}"), false));
        wal.end_turn().expect("write");
        assert!(part.sessions.keys().all(|c| home(c) % 2 == k));
    }
    let again = recover_all(data.path()).expect("recover");
    assert_eq!(again.shards_read, 2);
    assert_eq!(again.state.sessions.len(), 17);
    for (c, s) in &r.state.sessions {
        assert_eq!(again.state.sessions.get(c), Some(s));
    }
}

#[test]
fn an_interrupted_install_is_rolled_back_or_finished() {
    let data = Scratch::new("install");
    write_log(data.path(), 0, &sessions("old", 3), 1 << 20);
    // Without the marker: discarded, the old layout stands.
    let stray = data.path().join("incoming").join("shard-0");
    std::fs::create_dir_all(&stray).expect("mkdir");
    let r = recover_all(data.path()).expect("recover");
    assert_eq!(r.state.sessions.len(), 3);
    assert!(!data.path().join("incoming").exists());
    // With the marker, half moved: finished.
    let mut next = LiveState::default();
    for rec in sessions("new", 2) {
        next.apply(rec);
    }
    let parts = [next, LiveState::default()];
    let incoming = data.path().join("incoming");
    for (k, p) in parts.iter().enumerate() {
        let d = shard_dir(&incoming, k);
        std::fs::create_dir_all(&d).expect("mkdir");
        crate::store::wal::write_checkpoint(
            &crate::store::OsDisk,
            &d,
            &crate::store::wal::encode_checkpoint(0, p.records()),
        )
        .expect("checkpoint");
    }
    let mut marker = std::fs::File::create(incoming.join("COMPLETE")).expect("marker");
    writeln!(marker, "2").expect("marker");
    std::fs::remove_dir_all(shard_dir(data.path(), 0)).expect("rm");
    std::fs::rename(shard_dir(&incoming, 0), shard_dir(data.path(), 0)).expect("mv");
    let r = recover_all(data.path()).expect("recover");
    assert_eq!(r.shards_read, 2);
    let mut ids: Vec<&str> = r.state.sessions.keys().collect();
    ids.sort_unstable();
    assert_eq!(ids, vec!["new0", "new1"]);
}

/// A checkpoint's records are packed in groups (up to 64 KiB each), so a damaged one
/// keeps the whole groups before the damage.
#[test]
fn a_damaged_checkpoint_keeps_its_prefix_and_says_so() {
    let data = Scratch::new("badckpt");
    let mut st = LiveState::default();
    let n = 6000;
    for rec in sessions("c", n) {
        st.apply(rec);
    }
    install(data.path(), &[st]).expect("install");
    let path = shard_dir(data.path(), 0).join(CHECKPOINT_FILE);
    let bytes = std::fs::read(&path).expect("read");
    assert!(
        bytes.len() > 3 * 64 * 1024,
        "{} bytes: too few groups",
        bytes.len()
    );
    std::fs::write(&path, &bytes[..bytes.len() - 10]).expect("truncate");
    let r = recover_all(data.path()).expect("recover");
    let kept = r.state.sessions.len();
    assert!(kept > n / 2 && kept < n, "{kept} of {n} sessions kept");
    assert_eq!(r.cuts.len(), 1);
    assert_eq!(r.cuts[0].file, path);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Random records in a log whose tail is cut and bit-flipped at random: recovery gives
    /// the state of exactly the records before the damage, never one built from garbage.
    #[test]
    fn recovery_keeps_the_longest_valid_prefix(
        records in proptest::collection::vec(arb_record(), 1..40),
        cut_at in any::<prop::sample::Index>(),
        flip in proptest::option::of((any::<prop::sample::Index>(), 0u8..8)),
    ) {
        let data = Scratch::new("prop");
        write_log(data.path(), 0, &records, 1 << 20);
        let seg = last_segment(&shard_dir(data.path(), 0));
        let bytes = std::fs::read(&seg).expect("read");
        let mut ends = Vec::new();
        let mut framed = bytes[..FILE_HEADER_BYTES].to_vec();
        for (i, r) in records.iter().enumerate() {
            // One record per turn: a group of one each.
            encode_group(&mut framed, i as u64 + 1, std::slice::from_ref(r));
            ends.push(framed.len());
        }
        prop_assert_eq!(&framed, &bytes);
        let body = bytes.len() - FILE_HEADER_BYTES;
        let mut damaged = bytes[..FILE_HEADER_BYTES + cut_at.index(body + 1)].to_vec();
        let mut first_bad = damaged.len();
        if let (Some((at, bit)), true) = (flip, damaged.len() > FILE_HEADER_BYTES) {
            let i = FILE_HEADER_BYTES + at.index(damaged.len() - FILE_HEADER_BYTES);
            damaged[i] ^= 1 << bit;
            first_bad = i;
        }
        std::fs::write(&seg, &damaged).expect("write");
        let kept = ends.iter().take_while(|&&e| e <= first_bad).count();
        let r = recover_all(data.path()).expect("recover");
        let mut expect = LiveState::default();
        for rec in &records[..kept] {
            expect.apply(rec.clone());
        }
        let mut merged = LiveState::default();
        merged.merge(expect);
        merged.finish();
        // Recovery keeps a completed shared delivery's mark only while a restored message
        // holds its identity (decision 0023).
        let held = merged.share_ids().collect();
        merged.keep_share_completed(&held);
        prop_assert_eq!(r.records as usize, kept);
        prop_assert_eq!(r.state, merged);
        // A cut is reported when bytes remain after the last frame kept (a truncation
        // exactly at a frame boundary is just a shorter log).
        let kept_end = if kept == 0 { FILE_HEADER_BYTES } else { ends[kept - 1] };
        prop_assert_eq!(r.cuts.len(), usize::from(damaged.len() > kept_end));
    }
}

/// A part described without its message ids (which merging may renumber): sessions
/// with their deliveries' messages spelled out, retained entries likewise, bridges.
fn described(p: &LiveState) -> Vec<String> {
    let msg = |id| format!("{:?}", p.messages.get(&id));
    let mut out = Vec::new();
    for (c, s) in &p.sessions {
        let ds: Vec<_> = s
            .deliveries
            .iter()
            .map(|d| {
                let m = msg(d.msg);
                (m, d.qos, d.retain, &d.sub_ids, d.packet_id, d.state, d.txn)
            })
            .collect();
        out.push(format!(
            "{c} {:?} {:?} {:?} {:?} {ds:?}",
            s.info, s.disconnected_at_unix_ms, s.subscriptions, s.incoming_qos2
        ));
    }
    for (t, r) in &p.retained {
        let m = r.msg.map(msg);
        out.push(format!("{t} {m:?} {} {:?}", r.stamp, r.source));
    }
    out.push(format!("{:?}", p.bridges));
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Splitting each shard directory's state and merging the pieces per shard (what
    /// start-up does) gives the parts that merging everything and then splitting gives
    /// (the naive oracle), for any number of directories and of shards.
    #[test]
    fn recovered_parts_match_merge_then_split(
        logs in proptest::collection::vec(proptest::collection::vec(arb_record(), 0..30), 1..4),
        n in 1usize..4,
    ) {
        let data = Scratch::new("parts");
        for (k, records) in logs.iter().enumerate() {
            write_log(data.path(), k, records, 1 << 20);
        }
        let home = |c: &str| c.bytes().map(usize::from).sum::<usize>();
        let all = recover_all(data.path()).expect("recover");
        let got = recover_parts(data.path(), n, home, home).expect("recover parts");
        prop_assert_eq!(got.records, all.records);
        prop_assert_eq!(got.conflicts, all.conflicts);
        let orphans: u64 = got.parts.iter().map(|p| p.orphans).sum();
        prop_assert_eq!(orphans, all.state.orphans);
        let dropped: u64 = got.parts.iter().map(|p| p.qos2_dropped).sum();
        prop_assert_eq!(dropped, all.state.qos2_dropped);
        let want = all.state.split(n, home, home);
        prop_assert_eq!(got.parts.len(), want.len());
        for (g, w) in got.parts.iter().zip(&want) {
            prop_assert_eq!(described(g), described(w));
            prop_assert_eq!(g.messages.len(), w.messages.len());
        }
    }
}

/// With the shard count unchanged, each directory's state moves whole to its own part:
/// its message ids are kept (nothing renumbered), and the split copies no message.
#[test]
fn an_unchanged_shard_count_keeps_every_message_id() {
    use crate::store::record::MsgId;
    use crate::store::testutil::message;
    let data = Scratch::new("same-n");
    let home = |c: &str| usize::from(c.ends_with('1'));
    for k in 0..2 {
        let client = format!("c{k}");
        let mut records = vec![session(&client, false)];
        for i in 1..=3u64 {
            let id = MsgId(10 * i + k as u64);
            records.push(Record::MessageStored {
                id,
                msg: message("t", b"x", false),
            });
            records.push(Record::DeliveryQueued {
                client_id: client.clone().into(),
                msg: id,
                qos: 1,
                retain: false,
                sub_ids: Vec::new().into(),
                txn: 0,
            });
        }
        write_log(data.path(), k, &records, 1 << 20);
    }
    let got = recover_parts(data.path(), 2, home, home).expect("recover parts");
    for (k, part) in got.parts.iter().enumerate() {
        let ids: Vec<u64> = part.messages.keys().map(|m| m.0).collect();
        assert_eq!(ids, vec![10 + k as u64, 20 + k as u64, 30 + k as u64]);
        assert_eq!(part.sessions.len(), 1);
        assert_eq!(part.sessions[&format!("c{k}")].deliveries.len(), 3);
    }
}

/// A single session with a 100,000-message queue, drained through a window of 1,000 with
/// packet ids reused as they come free: recovery applies every `DeliverySent`/`Done` by
/// index, not by scanning the queue (a scan made this O(n²)), and gets the same queue.
#[test]
fn a_long_single_session_queue_recovers() {
    use crate::store::record::{DeliveryState, MsgId};
    use crate::store::testutil::{message, pid};
    use std::borrow::Cow;
    const N: u64 = 100_000;
    const SENT: u64 = 60_000;
    const WINDOW: u64 = 1_000;
    const DROPPED: u64 = 10;
    let c = || Cow::Borrowed("long");
    let packet = |i: u64| pid((i % 65_535) as u16 + 1);
    let data = Scratch::new("long-queue");
    let mut wal = Wal::open(&shard_dir(data.path(), 0), never(64 << 20), || {}).expect("open");
    wal.append(&session("long", false));
    for i in 1..=N {
        let msg = message("t", &i.to_le_bytes(), false);
        wal.append(&Record::MessageStored { id: MsgId(i), msg });
        wal.append(&Record::DeliveryQueued {
            client_id: c(),
            msg: MsgId(i),
            qos: 1,
            retain: false,
            sub_ids: Cow::Borrowed(&[]),
            txn: 0,
        });
        if i.is_multiple_of(1_000) {
            wal.end_turn().expect("write");
        }
    }
    for i in 1..=SENT {
        let (msg, packet_id, state) = (MsgId(i), packet(i), DeliveryState::InFlight);
        let client_id = c();
        wal.append(&Record::DeliverySent {
            client_id,
            msg,
            packet_id,
            state,
        });
        if i > WINDOW {
            let packet_id = packet(i - WINDOW);
            wal.append(&Record::DeliveryDone {
                client_id: c(),
                packet_id,
            });
        }
        if i.is_multiple_of(1_000) {
            wal.end_turn().expect("write");
        }
    }
    for i in N - DROPPED + 1..=N {
        wal.append(&Record::DeliveryDropped {
            client_id: c(),
            msg: MsgId(i),
        });
    }
    wal.end_turn().expect("write");
    drop(wal);

    let r = recover_all(data.path()).expect("recover");
    assert!(r.cuts.is_empty(), "{:?}", r.cuts);
    let sess = &r.state.sessions["long"];
    let payloads: Vec<u64> = sess
        .deliveries
        .iter()
        .map(|d| {
            let m = &r.state.messages[&d.msg];
            u64::from_le_bytes(m.payload.as_ref().try_into().expect("8 bytes"))
        })
        .collect();
    let want: Vec<u64> = (SENT - WINDOW + 1..=N - DROPPED).collect();
    assert_eq!(payloads, want);
    for (d, i) in sess.deliveries.iter().zip(SENT - WINDOW + 1..) {
        let expect = (i <= SENT).then(|| packet(i));
        assert_eq!(d.packet_id, expect, "delivery of message {i}");
        let state = if i <= SENT {
            DeliveryState::InFlight
        } else {
            DeliveryState::Queued
        };
        assert_eq!(d.state, state);
    }
    assert_eq!(r.state.messages.len() as u64, N - DROPPED - (SENT - WINDOW));
}

/// Recovery reserves the message `Vec` once, from the files' sizes, and never grows it
/// while reading (its capacity is still the reservation: a growth would have raised it);
/// `finish` gives the unused room back. The state is the one an unreserved replay of the
/// same records builds (the oracle: `LiveState::apply` on an empty state).
#[test]
fn recovery_reserves_the_messages_once_and_finish_gives_the_rest_back() {
    use crate::store::record::MsgId;
    use crate::store::testutil::message;
    use std::borrow::Cow;
    let data = Scratch::new("reserve");
    let dir = shard_dir(data.path(), 0);
    let mut records = vec![session("c", false)];
    for i in 1..=3_000u64 {
        let msg = message(&format!("t/{i}"), &i.to_le_bytes(), i % 3 == 0);
        records.push(Record::MessageStored { id: MsgId(i), msg });
        records.push(Record::DeliveryQueued {
            client_id: Cow::Borrowed("c"),
            msg: MsgId(i),
            qos: 1,
            retain: false,
            sub_ids: Cow::Borrowed(&[]),
            txn: 0,
        });
    }
    let mut wal = Wal::open(&dir, never(64 << 10), || {}).expect("open");
    for (i, r) in records.iter().enumerate() {
        wal.append(r);
        if i % 500 == 499 {
            wal.end_turn().expect("write");
        }
    }
    wal.end_turn().expect("write");
    drop(wal);
    let segments = list_segments(&OsDisk, &dir).expect("list");
    assert!(segments.len() > 1, "several segments: {segments:?}");

    let mut reserved = LiveState::default();
    reserve_messages(&OsDisk, &dir, &segments, &mut reserved);
    let room = reserved.messages.capacity();
    assert!(room >= 3_000, "room for every message: {room}");
    let mut r = recover_shard(&OsDisk, &dir).expect("recover");
    assert_eq!(r.state.messages.len(), 3_000);
    assert_eq!(r.state.messages.capacity(), room, "grown while reading");

    let mut oracle = LiveState::default();
    for rec in records {
        oracle.apply(rec);
    }
    assert_eq!(r.state, oracle);
    r.state.finish();
    oracle.finish();
    assert_eq!(r.state, oracle);
    assert_eq!(r.state.messages.capacity(), r.state.messages.len());
}

/// The bound the reservation divides by is a true minimum: no message's frame (format
/// 1) or group member (format 2) is shorter, whatever it holds.
#[test]
fn no_message_frame_is_shorter_than_the_minimum() {
    use crate::store::record::MsgId;
    use crate::store::testutil::message;
    let min = message_frame_bytes_min();
    for (topic, payload, full) in [("", &b""[..], false), ("a", b"", false), ("t", b"x", true)] {
        for id in [0, 1, u64::MAX] {
            let msg = message(topic, payload, full);
            let rec = Record::MessageStored { id: MsgId(id), msg };
            let mut buf = Vec::new();
            encode_frame(&mut buf, 7, &rec);
            let mut group = Vec::new();
            encode_group(&mut group, 7, std::slice::from_ref(&rec));
            let member = group.len() - crate::store::frame::FRAME_HEADER_BYTES;
            assert!(
                buf.len() as u64 >= min && member as u64 >= min,
                "{topic:?} {payload:?}: {} {member}",
                buf.len()
            );
        }
    }
    assert!(min > 1);
}
