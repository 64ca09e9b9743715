//! The data directory as a whole: recovery of every shard's log, and installing a new
//! shard layout.
//!
//! Owns: `<data_dir>/shard-<k>/` as a set, and `<data_dir>/incoming/` (a layout being
//! installed). Recovery reads **all** shard directories, whatever their number, each in
//! its own thread, splits what each holds by home shard ([`LiveState::split`]) and merges
//! the pieces of each shard ([`recover_parts`]); the engine [`install`]s the parts as
//! fresh per-shard checkpoints (each written in its own thread), after which each shard
//! opens an empty log ([`super::Wal::open`]).
//!
//! Invariant: the install is all-or-nothing across shards. New checkpoints are written and
//! synced under `incoming/`, then `incoming/COMPLETE` is written and synced; only then are
//! the old shard directories replaced. A crash before `COMPLETE` leaves the old layout (and
//! the next recovery deletes `incoming/`); a crash after it is finished by the next
//! recovery. Must not touch: files outside the data directory; the engine's types.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::disk::{Disk, OsDisk};
use super::frame::{member_bytes, CutReason, FileHeader, FileKind, GroupPacker};
use super::reader::{FileScan, PieceReader};
use super::record::{MessageProps, MsgId, Record, StoredMessage};
use super::state::LiveState;
use super::wal::{list_segments, segment_name, CHECKPOINT_FILE};
use super::{io, Lsn, StoreError};

const INCOMING_DIR: &str = "incoming";
const COMPLETE_FILE: &str = "COMPLETE";
const SHARD_PREFIX: &str = "shard-";

/// Where recovery cut a file, and how much it dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutReport {
    /// The file.
    pub file: PathBuf,
    /// Offset of the first byte not kept.
    pub offset: u64,
    /// Bytes dropped from this file (the rest of it).
    pub bytes_dropped: u64,
    /// Why.
    pub reason: CutReason,
}

impl std::fmt::Display for CutReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: cut at offset {} ({}), {} bytes dropped",
            self.file.display(),
            self.offset,
            self.reason,
            self.bytes_dropped
        )
    }
}

/// The merged state of every shard directory, and what recovery had to cut.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Live state, message ids unique across it, tombstones and dead messages dropped.
    pub state: LiveState,
    /// Every cut, in shard order.
    pub cuts: Vec<CutReport>,
    /// Shard directories read.
    pub shards_read: usize,
    /// Records applied (checkpoints and logs).
    pub records: u64,
    /// Sessions found in more than one shard directory (the first one is kept).
    pub conflicts: u64,
}

/// The path of shard `k`'s directory.
pub fn shard_dir(data_dir: &Path, k: usize) -> PathBuf {
    data_dir.join(format!("{SHARD_PREFIX}{k}"))
}

/// Recover every `shard-<k>` directory under `data_dir` (finishing or discarding an
/// interrupted install first) and merge them. A missing `data_dir` recovers as empty.
pub fn recover_all(data_dir: &Path) -> Result<Recovered, StoreError> {
    recover_all_on(Arc::new(OsDisk), data_dir)
}

/// [`recover_all`] on `disk`.
pub fn recover_all_on(disk: Arc<dyn Disk>, data_dir: &Path) -> Result<Recovered, StoreError> {
    let r = recover_parts_on(&*disk, data_dir, 1, |_| 0, |_| 0)?;
    Ok(Recovered {
        state: r.parts.into_iter().next().unwrap_or_default(),
        cuts: r.cuts,
        shards_read: r.shards_read,
        records: r.records,
        conflicts: r.conflicts,
    })
}

/// [`recover_parts_on`] on the real file system.
pub fn recover_parts(
    data_dir: &Path,
    n: usize,
    client_shard: impl Fn(&str) -> usize,
    retained_shard: impl Fn(&str) -> usize,
) -> Result<RecoveredParts, StoreError> {
    recover_parts_on(&OsDisk, data_dir, n, client_shard, retained_shard)
}

/// Every shard directory's state, already split into the parts of a broker of `n` shards
/// (each finished: message ids unique within it, tombstones and dead messages dropped).
#[derive(Debug, Default)]
pub struct RecoveredParts {
    /// Part `k` belongs to shard `k`; bridges are all in part 0 (see
    /// [`super::state::place_bridges`]).
    pub parts: Vec<LiveState>,
    /// Every cut, in shard directory order.
    pub cuts: Vec<CutReport>,
    /// Shard directories read.
    pub shards_read: usize,
    /// Records applied (checkpoints and logs).
    pub records: u64,
    /// Sessions found in more than one shard directory (the first one is kept).
    pub conflicts: u64,
}

/// Recover every `shard-<k>` directory under `data_dir` for a broker of `n` shards:
/// each directory is read in its own thread, its state split by home shard
/// (`client_shard`, `retained_shard`, as [`LiveState::split`]), and each part finished in
/// its own thread. When the shard count is unchanged every directory's state moves whole
/// to its own part: no message is renumbered or copied. A missing `data_dir` recovers as
/// `n` empty parts.
pub fn recover_parts_on(
    disk: &dyn Disk,
    data_dir: &Path,
    n: usize,
    client_shard: impl Fn(&str) -> usize,
    retained_shard: impl Fn(&str) -> usize,
) -> Result<RecoveredParts, StoreError> {
    let n = n.max(1);
    let mut out = RecoveredParts {
        parts: vec![LiveState::default(); n],
        ..RecoveredParts::default()
    };
    if !disk.exists(data_dir) {
        return Ok(out);
    }
    settle(disk, data_dir)?;
    let dirs = shard_dirs(disk, data_dir)?;
    out.shards_read = dirs.len();
    let read = in_parallel(
        dirs.iter()
            .map(|d| move || recover_shard(disk, d))
            .collect(),
    );
    // QoS 2 routings are committed in their origin shard's log and delivered in others':
    // every part settles against the commits of all of them.
    let mut committed = BTreeMap::new();
    let (mut orphans, mut dropped) = (0, 0);
    for r in read {
        let mut r = r?;
        out.records += r.records;
        out.cuts.append(&mut r.cuts);
        orphans += r.state.orphans;
        dropped += r.state.qos2_dropped;
        for (origin, txn) in std::mem::take(&mut r.state.qos2_committed) {
            let at = committed.entry(origin).or_insert(0);
            *at = u64::max(*at, txn);
        }
        let pieces = r.state.split(n, &client_shard, &retained_shard);
        for (part, piece) in out.parts.iter_mut().zip(pieces) {
            out.conflicts += part.merge(piece);
        }
    }
    let finishing = std::mem::take(&mut out.parts)
        .into_iter()
        .map(|mut part| {
            part.qos2_committed = committed.clone();
            move || {
                part.finish();
                Ok(part)
            }
        })
        .collect();
    out.parts = in_parallel(finishing)
        .into_iter()
        .collect::<Result<_, StoreError>>()?;
    // Share identities are numbered per origin shard and logged wherever the message
    // went: every shard numbers on past the highest restored anywhere (decision 0022).
    let share_seq = out.parts.iter().map(LiveState::share_seq_max).max();
    for part in &mut out.parts {
        part.share_seq = share_seq.unwrap_or(0);
    }
    // A completed shared delivery's mark matters only while a restored message of that
    // identity may move onto its member (decision 0023).
    let held: std::collections::HashSet<u64> =
        out.parts.iter().flat_map(LiveState::share_ids).collect();
    for part in &mut out.parts {
        part.keep_share_completed(&held);
    }
    out.parts[0].orphans += orphans;
    out.parts[0].qos2_dropped += dropped;
    Ok(out)
}

/// Run each job in its own thread (all at once) and return their results in order; a
/// job that panicked is an error.
fn in_parallel<T: Send>(
    jobs: Vec<impl FnOnce() -> Result<T, StoreError> + Send>,
) -> Vec<Result<T, StoreError>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = jobs.into_iter().map(|j| scope.spawn(j)).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(StoreError::Io(
                        "recover shard",
                        std::io::Error::other("panicked"),
                    ))
                })
            })
            .collect()
    })
}

/// The `shard-<k>` directories under `data_dir`, by `k`.
fn shard_dirs(disk: &dyn Disk, data_dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut dirs = Vec::new();
    for (name, is_dir) in disk.list(data_dir).map_err(io("list data directory"))? {
        let path = data_dir.join(name);
        if let (Some(k), true) = (shard_index(&path), is_dir) {
            dirs.push((k, path));
        }
    }
    dirs.sort();
    Ok(dirs.into_iter().map(|(_, p)| p).collect())
}

/// One shard directory's state (its own message ids), cuts, and records applied.
struct ShardRecovery {
    state: LiveState,
    cuts: Vec<CutReport>,
    records: u64,
}

/// Replay one shard directory: its checkpoint, then every segment record after the
/// checkpoint's LSN, stopping at the first damage (everything after it is dropped too).
/// Files are read in pieces through one buffer ([`PieceReader`]).
fn recover_shard(disk: &dyn Disk, dir: &Path) -> Result<ShardRecovery, StoreError> {
    let mut r = ShardRecovery {
        state: LiveState::default(),
        cuts: Vec::new(),
        records: 0,
    };
    let segments = list_segments(disk, dir)?;
    reserve_messages(disk, dir, &segments, &mut r.state);
    let mut reader = PieceReader::default();
    let upto = read_checkpoint(disk, dir, &mut reader, &mut r)?;
    let mut expected = upto + 1;
    for (i, n) in segments.iter().enumerate() {
        let path = dir.join(segment_name(*n));
        let scanned = replay_segment(disk, &path, &mut reader, expected, &mut r)?;
        refuse_newer(&path, &scanned)?;
        if scanned.cut.is_none() {
            expected = scanned.next.max(expected);
            continue;
        }
        r.cuts.push(report(&path, &scanned));
        for later in &segments[i + 1..] {
            let path = dir.join(segment_name(*later));
            let len = disk.len(&path).unwrap_or(0);
            r.cuts.push(CutReport {
                file: path,
                offset: 0,
                bytes_dropped: len,
                reason: CutReason::LsnGap { expected, found: 0 },
            });
        }
        break;
    }
    Ok(r)
}

/// Reserve room in `state` for as many messages as the checkpoint and `segments` of
/// `dir` can hold at most (each message takes at least its own frame), so that the
/// message `Vec` is never grown, and copied, while they are read. The room a smaller
/// count leaves unused is address space, never touched; [`LiveState::finish`] gives it
/// back. A size that cannot be read, or room the allocator refuses, reserves nothing.
fn reserve_messages(disk: &dyn Disk, dir: &Path, segments: &[u64], state: &mut LiveState) {
    let files = std::iter::once(dir.join(CHECKPOINT_FILE))
        .chain(segments.iter().map(|n| dir.join(segment_name(*n))));
    let bytes: u64 = files.map(|f| disk.len(&f).unwrap_or(0)).sum();
    let most = bytes / message_frame_bytes_min();
    if let Ok(n) = usize::try_from(most) {
        state.messages.try_reserve(n);
    }
}

/// The fewest bytes a stored message takes in a file: a `MessageStored` record with an
/// empty topic, payload and properties (measured by encoding one, so it follows the
/// format), as a member of a group (format 2: its length and itself; a frame of its own,
/// format 1, takes 16 bytes more).
fn message_frame_bytes_min() -> u64 {
    let msg = StoredMessage {
        topic: "".into(),
        payload: (&[][..]).into(),
        qos: 0,
        retain: false,
        expires_at_unix_ms: None,
        props: MessageProps::default(),
        share_id: 0,
    };
    let mut body = Vec::new();
    Record::MessageStored { id: MsgId(1), msg }.encode(&mut body);
    (member_bytes(body.len()) as u64).max(1)
}

/// Apply the records of segment `path` with LSN ≥ `expected`.
fn replay_segment(
    disk: &dyn Disk,
    path: &Path,
    reader: &mut PieceReader,
    expected: Lsn,
    r: &mut ShardRecovery,
) -> Result<FileScan, StoreError> {
    let head = |header: FileHeader| {
        if header.kind != FileKind::Segment {
            return Err(CutReason::BadHeader("not a segment"));
        }
        if header.lsn > expected {
            return Err(CutReason::LsnGap {
                expected,
                found: header.lsn,
            });
        }
        Ok(header.lsn)
    };
    let apply = |lsn: Lsn, rec: Record<'_>| {
        if lsn >= expected {
            r.state.apply(rec);
            r.records += 1;
        }
    };
    reader
        .scan(disk, path, head, apply)
        .map_err(io("read segment"))
}

/// Apply the checkpoint in `dir`, if any; returns the LSN it covers (0 without one). A
/// damaged checkpoint keeps its valid prefix and is reported.
fn read_checkpoint(
    disk: &dyn Disk,
    dir: &Path,
    reader: &mut PieceReader,
    r: &mut ShardRecovery,
) -> Result<Lsn, StoreError> {
    let path = dir.join(CHECKPOINT_FILE);
    let mut upto = 0;
    let head = |header: FileHeader| match header.kind {
        FileKind::Checkpoint => {
            upto = header.lsn;
            Ok(1)
        }
        FileKind::Segment => Err(CutReason::BadHeader("not a checkpoint")),
    };
    let apply = |_: Lsn, rec: Record<'_>| {
        r.state.apply(rec);
        r.records += 1;
    };
    let scanned = match reader.scan(disk, &path, head, apply) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::Io("read checkpoint", e)),
    };
    refuse_newer(&path, &scanned)?;
    if scanned.cut.is_some() {
        r.cuts.push(report(&path, &scanned));
    }
    Ok(upto)
}

/// Stop recovery at a file a newer build wrote (its header intact, its format version
/// unknown here): cutting it, as damage is cut, would drop it and every later segment,
/// and the next checkpoint would make that loss final.
fn refuse_newer(path: &Path, scanned: &FileScan) -> Result<(), StoreError> {
    match scanned.cut.map(|c| c.reason) {
        Some(CutReason::Format(v)) => Err(StoreError::Format(path.to_path_buf(), v)),
        _ => Ok(()),
    }
}

/// The cut of `scanned` (which has one) as a report.
fn report(path: &Path, scanned: &FileScan) -> CutReport {
    let (offset, reason) = scanned.cut.map_or((scanned.len, CutReason::Torn), |c| {
        (c.offset as u64, c.reason)
    });
    CutReport {
        file: path.to_path_buf(),
        offset,
        bytes_dropped: scanned.bytes_dropped(),
        reason,
    }
}

/// Replace the shard directories under `data_dir` with one per element of `parts`, each
/// holding only a checkpoint of that state (LSN 0), all-or-nothing (see the module doc).
pub fn install(data_dir: &Path, parts: &[LiveState]) -> Result<(), StoreError> {
    install_on(&OsDisk, data_dir, parts)
}

/// [`install`] on `disk`.
pub fn install_on(disk: &dyn Disk, data_dir: &Path, parts: &[LiveState]) -> Result<(), StoreError> {
    let mkdir = |d: &Path| disk.create_dir_all(d).map_err(io("create directory"));
    let sync = |d: &Path| disk.sync_dir(d).map_err(io("fsync directory"));
    mkdir(data_dir)?;
    // The data directory's own entry: without this a power cut after the first start
    // could lose the whole store (found by the power-cut test).
    if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync(parent)?;
    }
    let incoming = data_dir.join(INCOMING_DIR);
    if disk.exists(&incoming) {
        disk.remove_dir_all(&incoming)
            .map_err(io("remove stale incoming directory"))?;
    }
    mkdir(&incoming)?;
    let writes = parts
        .iter()
        .enumerate()
        .map(|(k, part)| {
            let dir = shard_dir(&incoming, k);
            move || {
                mkdir(&dir)?;
                write_fresh_checkpoint(disk, &dir, part)
            }
        })
        .collect();
    in_parallel(writes).into_iter().collect::<Result<(), _>>()?;
    sync(&incoming)?;
    disk.create_new(&incoming.join(COMPLETE_FILE))
        .and_then(|mut f| {
            f.append(format!("{}\n", parts.len()).as_bytes())?;
            f.sync_all()
        })
        .map_err(io("write install marker"))?;
    sync(&incoming)?;
    sync(data_dir)?;
    finish_install(disk, data_dir)
}

/// Bytes of frames encoded before each write of [`write_fresh_checkpoint`].
const CHECKPOINT_WRITE_BYTES: usize = 4 << 20;

/// Write `part` as the checkpoint (LSN 0) of the new directory `dir`, encoding it in
/// pieces of about [`CHECKPOINT_WRITE_BYTES`] (no copy of the whole file in memory), then
/// `fsync` it and `dir`. No temporary file: nothing reads `dir` before the install's
/// marker says every checkpoint is whole. The bytes are those of
/// [`super::wal::encode_checkpoint`].
fn write_fresh_checkpoint(disk: &dyn Disk, dir: &Path, part: &LiveState) -> Result<(), StoreError> {
    let mut f = disk
        .create_new(&dir.join(CHECKPOINT_FILE))
        .map_err(io("create checkpoint"))?;
    let header = FileHeader {
        kind: FileKind::Checkpoint,
        lsn: 0,
    };
    let mut buf = Vec::with_capacity(CHECKPOINT_WRITE_BYTES);
    buf.extend_from_slice(&header.encode());
    let mut packer = GroupPacker::new(1);
    for r in part.records() {
        packer.push(&mut buf, &r);
        if buf.len() >= CHECKPOINT_WRITE_BYTES {
            packer.seal(&mut buf);
            f.append(&buf).map_err(io("write checkpoint"))?;
            buf.clear();
        }
    }
    packer.seal(&mut buf);
    f.append(&buf).map_err(io("write checkpoint"))?;
    f.sync_all().map_err(io("fsync checkpoint"))?;
    disk.sync_dir(dir).map_err(io("fsync directory"))
}

/// Finish an install whose `COMPLETE` marker is durable, or discard one without it.
fn settle(disk: &dyn Disk, data_dir: &Path) -> Result<(), StoreError> {
    let incoming = data_dir.join(INCOMING_DIR);
    if disk.exists(&incoming.join(COMPLETE_FILE)) {
        finish_install(disk, data_dir)
    } else if disk.exists(&incoming) {
        disk.remove_dir_all(&incoming)
            .map_err(io("remove unfinished install"))?;
        disk.sync_dir(data_dir).map_err(io("fsync directory"))
    } else {
        Ok(())
    }
}

/// Swap the old shard directories for the new ones. Idempotent: a crash part-way through
/// is finished by running it again (the marker, naming the new shard count, stays until
/// the end; a `shard-<k>` with `k` below it and no `incoming/shard-<k>` was moved already).
fn finish_install(disk: &dyn Disk, data_dir: &Path) -> Result<(), StoreError> {
    let incoming = data_dir.join(INCOMING_DIR);
    let marker = disk
        .read(&incoming.join(COMPLETE_FILE))
        .map_err(io("read install marker"))?;
    let n: usize = std::str::from_utf8(&marker)
        .ok()
        .and_then(|m| m.trim().parse().ok())
        .ok_or_else(|| {
            StoreError::Io(
                "read install marker",
                std::io::Error::other("not a shard count"),
            )
        })?;
    for old in shard_dirs(disk, data_dir)? {
        let k = shard_index(&old).unwrap_or(usize::MAX);
        if k >= n {
            disk.remove_dir_all(&old)
                .map_err(io("remove old shard directory"))?;
        }
    }
    for k in 0..n {
        let new = shard_dir(&incoming, k);
        if disk.exists(&new) {
            let target = shard_dir(data_dir, k);
            if disk.exists(&target) {
                disk.remove_dir_all(&target)
                    .map_err(io("remove old shard directory"))?;
            }
            disk.rename(&new, &target)
                .map_err(io("move shard directory"))?;
        }
    }
    disk.sync_dir(data_dir).map_err(io("fsync directory"))?;
    disk.remove_dir_all(&incoming)
        .map_err(io("remove incoming directory"))?;
    disk.sync_dir(data_dir).map_err(io("fsync directory"))
}

fn shard_index(dir: &Path) -> Option<usize> {
    dir.file_name()?
        .to_str()?
        .strip_prefix(SHARD_PREFIX)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests;
