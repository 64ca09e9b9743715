//! The store's I/O seam: every file operation the log, checkpoints, recovery and install
//! make goes through a [`Disk`].
//!
//! Owns: nothing on the real disk ([`OsDisk`] is `std::fs`); the simulated disk
//! ([`SimDisk`]) owns its whole in-memory file tree. Invariant of [`SimDisk`]: it keeps,
//! per file, the bytes last made durable by `sync_data`/`sync_all`, and per directory the
//! entries last made durable by `sync_dir`; [`SimDisk::power_cut`] forgets everything
//! else, as a machine losing power may. Must not touch: records, LSNs, MQTT.
//!
//! A third backend, [`FaultDisk`], wraps the real one and fails writes and file creation
//! with `ENOSPC` while a named file exists: the black-box tests' way to fill the disk
//! without root (`SHARDMQ_STORE_FAULT_FILE`, see `docs/persistence.md`).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// A file opened for appending.
pub trait DiskFile: Send {
    /// Append all of `buf` (one `write` on the real disk, `O_APPEND`).
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Cut the file to `len` bytes.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// `fdatasync`.
    fn sync_data(&mut self) -> io::Result<()>;
    /// `fsync`.
    fn sync_all(&mut self) -> io::Result<()>;
    /// Another handle on the same file (the sync thread's).
    fn try_clone(&self) -> io::Result<Box<dyn DiskFile>>;
}

/// A file opened for reading. Like an open file on Unix, it keeps reading the file it
/// opened even if that file is renamed or removed meanwhile.
pub trait DiskReader: Send {
    /// The file's length now, in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Up to `buf.len()` bytes of the file from byte `offset` on, into `buf`; returns how
    /// many were read, fewer than asked only at the end of the file (0 at or past it).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
}

/// The file-system operations the store uses.
pub trait Disk: Send + Sync + fmt::Debug {
    /// Create `path` (mode 0600), failing if it exists, open for appending.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    /// The whole content of `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Open `path` for reading. Recovery reads each file in pieces through one handle
    /// (one open a file, and the kernel sees one reader going through it in order).
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn DiskReader>>;
    /// Up to `buf.len()` bytes of `path` from byte `offset` on, as
    /// [`DiskReader::read_at`]: one read through a handle of its own (a file's header).
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.open_read(path)?.read_at(offset, buf)
    }
    /// The entries of `dir`: name and whether it is a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<(String, bool)>>;
    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> bool;
    /// The length of file `path`.
    fn len(&self, path: &Path) -> io::Result<u64>;
    /// Create `dir` and its parents (mode 0700).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Rename `from` to `to` (replacing a file `to`).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Remove file `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Remove directory `path` and everything under it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// `fsync` directory `dir`: its entries created, renamed or removed become durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsDisk;

struct OsFile(std::fs::File);

impl DiskFile for OsFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        use std::io::Write;
        self.0.write_all(buf)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn sync_all(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
    fn try_clone(&self) -> io::Result<Box<dyn DiskFile>> {
        Ok(Box::new(OsFile(self.0.try_clone()?)))
    }
}

struct OsReader(std::fs::File);

impl DiskReader for OsReader {
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let mut done = 0;
        while done < buf.len() {
            match self.0.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

impl Disk for OsDisk {
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        Ok(Box::new(OsFile(super::create_private(path)?)))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn DiskReader>> {
        Ok(Box::new(OsReader(std::fs::File::open(path)?)))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<(String, bool)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                out.push((name.to_string(), entry.path().is_dir()));
            }
        }
        Ok(out)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn len(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}

/// The environment variable naming [`FaultDisk`]'s switch file (a test hook).
pub const FAULT_FILE_ENV: &str = "SHARDMQ_STORE_FAULT_FILE";

/// The real disk, except that appends and file creation fail with `ENOSPC` while `switch` exists.
#[derive(Debug, Clone)]
pub struct FaultDisk {
    switch: Arc<PathBuf>,
}

impl FaultDisk {
    /// Fail while `switch` exists.
    pub fn new(switch: PathBuf) -> FaultDisk {
        FaultDisk {
            switch: Arc::new(switch),
        }
    }

    fn check(switch: &Path) -> io::Result<()> {
        if switch.exists() {
            Err(io::Error::from_raw_os_error(ENOSPC))
        } else {
            Ok(())
        }
    }
}

/// `ENOSPC` ("No space left on device") on Linux.
const ENOSPC: i32 = 28;
/// `EIO` on Linux.
const EIO: i32 = 5;

struct FaultFile {
    inner: OsFile,
    switch: Arc<PathBuf>,
}

impl DiskFile for FaultFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        FaultDisk::check(&self.switch)?;
        self.inner.append(buf)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn sync_all(&mut self) -> io::Result<()> {
        self.inner.sync_all()
    }
    fn try_clone(&self) -> io::Result<Box<dyn DiskFile>> {
        Ok(Box::new(FaultFile {
            inner: OsFile(self.inner.0.try_clone()?),
            switch: self.switch.clone(),
        }))
    }
}

impl Disk for FaultDisk {
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        FaultDisk::check(&self.switch)?;
        Ok(Box::new(FaultFile {
            inner: OsFile(super::create_private(path)?),
            switch: self.switch.clone(),
        }))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        OsDisk.read(path)
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn DiskReader>> {
        OsDisk.open_read(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<(String, bool)>> {
        OsDisk.list(dir)
    }
    fn exists(&self, path: &Path) -> bool {
        OsDisk.exists(path)
    }
    fn len(&self, path: &Path) -> io::Result<u64> {
        OsDisk.len(path)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        OsDisk.create_dir_all(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        OsDisk.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        OsDisk.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        OsDisk.remove_dir_all(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        OsDisk.sync_dir(dir)
    }
}

/// The disk the broker runs on: the real one, or [`FaultDisk`] when the test hook's
/// environment variable names a switch file.
pub fn from_env() -> Arc<dyn Disk> {
    match std::env::var_os(FAULT_FILE_ENV) {
        Some(p) if !p.is_empty() => Arc::new(FaultDisk::new(PathBuf::from(p))),
        _ => Arc::new(OsDisk),
    }
}

// ---------------------------------------------------------------------------------------
// The simulated disk.

type Ino = u64;

#[derive(Debug, Clone)]
enum Node {
    File {
        /// What a read sees now.
        data: Vec<u8>,
        /// What survives a power cut.
        synced: Vec<u8>,
    },
    Dir {
        /// Entries as they are now.
        now: BTreeMap<String, Ino>,
        /// Entries as they survive a power cut.
        durable: BTreeMap<String, Ino>,
    },
}

#[derive(Debug, Clone)]
struct Tree {
    nodes: BTreeMap<Ino, Node>,
    next: Ino,
    /// Appends (and creates) fail with ENOSPC while true.
    full: bool,
    /// Syncs fail with EIO while true.
    sync_fails: bool,
    /// Reads reaching this offset or past it fail with EIO.
    read_fails_from: Option<u64>,
}

const ROOT: Ino = 0;

/// An in-memory file system that forgets, at [`SimDisk::power_cut`], every byte not yet
/// synced and every directory entry not yet made durable by a directory sync (a file
/// renamed away from a directory that was synced later keeps only its new name). Cloning
/// shares the tree. Deterministic: no clock, no randomness. For the simulation and tests;
/// its `Mutex` is never on the broker's data path.
#[derive(Debug, Clone)]
pub struct SimDisk {
    tree: Arc<Mutex<Tree>>,
}

impl Default for SimDisk {
    fn default() -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            ROOT,
            Node::Dir {
                now: BTreeMap::new(),
                durable: BTreeMap::new(),
            },
        );
        SimDisk {
            tree: Arc::new(Mutex::new(Tree {
                nodes,
                next: 1,
                full: false,
                sync_fails: false,
                read_fails_from: None,
            })),
        }
    }
}

fn not_found() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

/// The names along `path` (its root and `.` dropped).
fn names(path: &Path) -> Vec<String> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect()
}

impl Tree {
    fn lookup(&self, path: &Path) -> Option<Ino> {
        let mut at = ROOT;
        for n in names(path) {
            match self.nodes.get(&at)? {
                Node::Dir { now, .. } => at = *now.get(&n)?,
                Node::File { .. } => return None,
            }
        }
        Some(at)
    }

    /// The parent directory's inode and the last name of `path`.
    fn parent(&self, path: &Path) -> io::Result<(Ino, String)> {
        let mut ns = names(path);
        let last = ns.pop().ok_or_else(not_found)?;
        let dir: PathBuf = ns.iter().collect();
        let ino = self.lookup(&dir).ok_or_else(not_found)?;
        match self.nodes.get(&ino) {
            Some(Node::Dir { .. }) => Ok((ino, last)),
            _ => Err(not_found()),
        }
    }

    fn entries(&mut self, dir: Ino) -> io::Result<&mut BTreeMap<String, Ino>> {
        match self.nodes.get_mut(&dir) {
            Some(Node::Dir { now, .. }) => Ok(now),
            _ => Err(not_found()),
        }
    }

    fn add(&mut self, dir: Ino, name: String, node: Node) -> io::Result<Ino> {
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(ino, node);
        self.entries(dir)?.insert(name, ino);
        Ok(ino)
    }

    fn file(&mut self, ino: Ino) -> io::Result<(&mut Vec<u8>, &mut Vec<u8>)> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File { data, synced }) => Ok((data, synced)),
            _ => Err(not_found()),
        }
    }
}

impl SimDisk {
    fn lock(&self) -> MutexGuard<'_, Tree> {
        // A panic while holding the lock poisons it; the tree is still consistent enough
        // for a test that is failing anyway.
        self.tree.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Power is cut: every file keeps only its synced bytes, every directory only its
    /// durable entries; inodes no longer reachable are freed.
    pub fn power_cut(&self) {
        let mut t = self.lock();
        for node in t.nodes.values_mut() {
            match node {
                Node::File { data, synced } => data.clone_from(synced),
                Node::Dir { now, durable } => now.clone_from(durable),
            }
        }
        let mut reachable = std::collections::BTreeSet::new();
        let mut stack = vec![ROOT];
        while let Some(i) = stack.pop() {
            if !reachable.insert(i) {
                continue;
            }
            if let Some(Node::Dir { now, .. }) = t.nodes.get(&i) {
                stack.extend(now.values().copied());
            }
        }
        t.nodes.retain(|i, _| reachable.contains(i));
    }

    /// A separate disk holding what this one would keep if the power failed now (this one
    /// is left as it is): to check what is durable at a given moment.
    pub fn durable_copy(&self) -> SimDisk {
        let copy = SimDisk {
            tree: Arc::new(Mutex::new(self.lock().clone())),
        };
        copy.power_cut();
        copy
    }

    /// A separate disk holding everything this one holds now, synced or not: what a
    /// restart after the process died (`kill -9`) with the machine up finds.
    pub fn crash_copy(&self) -> SimDisk {
        SimDisk {
            tree: Arc::new(Mutex::new(self.lock().clone())),
        }
    }

    /// A separate disk holding what this one would keep if the power failed now while the
    /// kernel was writing file `path` back: like [`SimDisk::durable_copy`], except that
    /// `path` keeps the first `keep` bytes of its current content (at least its synced
    /// ones), so a batch written but not synced may survive torn at any byte.
    pub fn torn_copy(&self, path: &Path, keep: usize) -> io::Result<SimDisk> {
        let mut tree = self.lock().clone();
        let ino = tree.lookup(path).ok_or_else(not_found)?;
        let (data, synced) = tree.file(ino)?;
        let keep = keep.clamp(synced.len(), data.len());
        synced.clone_from(&data[..keep].to_vec());
        let copy = SimDisk {
            tree: Arc::new(Mutex::new(tree)),
        };
        copy.power_cut();
        Ok(copy)
    }

    /// While `full`, appends and file creation fail with `ENOSPC`.
    pub fn set_full(&self, full: bool) {
        self.lock().full = full;
    }

    /// While `fail`, syncs fail with `EIO`.
    pub fn set_sync_fails(&self, fail: bool) {
        self.lock().sync_fails = fail;
    }

    /// Reads through [`Disk::open_read`] handles that reach byte `from` of a file, or
    /// past it, fail with `EIO` (none with `None`).
    pub fn set_read_fails_from(&self, from: Option<u64>) {
        self.lock().read_fails_from = from;
    }

    /// Bytes held by files now (synced or not).
    pub fn bytes(&self) -> u64 {
        self.lock()
            .nodes
            .values()
            .map(|n| match n {
                Node::File { data, .. } => data.len() as u64,
                Node::Dir { .. } => 0,
            })
            .sum()
    }
}

struct SimFile {
    disk: SimDisk,
    ino: Ino,
}

impl DiskFile for SimFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut t = self.disk.lock();
        if t.full {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        t.file(self.ino)?.0.extend_from_slice(buf);
        Ok(())
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut t = self.disk.lock();
        t.file(self.ino)?.0.resize(len as usize, 0);
        Ok(())
    }
    fn sync_data(&mut self) -> io::Result<()> {
        let mut t = self.disk.lock();
        if t.sync_fails {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        let (data, synced) = t.file(self.ino)?;
        synced.clone_from(data);
        Ok(())
    }
    fn sync_all(&mut self) -> io::Result<()> {
        self.sync_data()
    }
    fn try_clone(&self) -> io::Result<Box<dyn DiskFile>> {
        Ok(Box::new(SimFile {
            disk: self.disk.clone(),
            ino: self.ino,
        }))
    }
}

/// A file of a [`SimDisk`] open for reading: it holds the inode, as an open file does.
struct SimReader {
    disk: SimDisk,
    ino: Ino,
}

impl DiskReader for SimReader {
    fn size(&self) -> io::Result<u64> {
        Ok(self.disk.lock().file(self.ino)?.0.len() as u64)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut t = self.disk.lock();
        if t.read_fails_from
            .is_some_and(|f| offset + buf.len() as u64 > f)
        {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        let data = &t.file(self.ino)?.0;
        let from = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let n = buf.len().min(data.len() - from);
        buf[..n].copy_from_slice(&data[from..from + n]);
        Ok(n)
    }
}

impl Disk for SimDisk {
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let mut t = self.lock();
        if t.full {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        let (dir, name) = t.parent(path)?;
        if t.entries(dir)?.contains_key(&name) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        let file = Node::File {
            data: Vec::new(),
            synced: Vec::new(),
        };
        let ino = t.add(dir, name, file)?;
        Ok(Box::new(SimFile {
            disk: self.clone(),
            ino,
        }))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut t = self.lock();
        let ino = t.lookup(path).ok_or_else(not_found)?;
        Ok(t.file(ino)?.0.clone())
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn DiskReader>> {
        let mut t = self.lock();
        let ino = t.lookup(path).ok_or_else(not_found)?;
        t.file(ino)?;
        Ok(Box::new(SimReader {
            disk: self.clone(),
            ino,
        }))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<(String, bool)>> {
        let t = self.lock();
        let ino = t.lookup(dir).ok_or_else(not_found)?;
        match t.nodes.get(&ino) {
            Some(Node::Dir { now, .. }) => Ok(now
                .iter()
                .map(|(n, i)| (n.clone(), matches!(t.nodes.get(i), Some(Node::Dir { .. }))))
                .collect()),
            _ => Err(not_found()),
        }
    }
    fn exists(&self, path: &Path) -> bool {
        self.lock().lookup(path).is_some()
    }
    fn len(&self, path: &Path) -> io::Result<u64> {
        let mut t = self.lock();
        let ino = t.lookup(path).ok_or_else(not_found)?;
        Ok(t.file(ino)?.0.len() as u64)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut t = self.lock();
        let mut at = ROOT;
        for n in names(dir) {
            let next = t.entries(at)?.get(&n).copied();
            at = match next {
                Some(i) => i,
                None => {
                    let d = Node::Dir {
                        now: BTreeMap::new(),
                        durable: BTreeMap::new(),
                    };
                    t.add(at, n, d)?
                }
            };
        }
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut t = self.lock();
        let (fd, fname) = t.parent(from)?;
        let (td, tname) = t.parent(to)?;
        let ino = t.entries(fd)?.remove(&fname).ok_or_else(not_found)?;
        t.entries(td)?.insert(tname, ino);
        Ok(())
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut t = self.lock();
        let (d, name) = t.parent(path)?;
        t.entries(d)?.remove(&name).ok_or_else(not_found)?;
        Ok(())
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        // The subtree's inodes stay (a durable entry elsewhere may still name them until
        // the next power cut frees what is unreachable).
        self.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut t = self.lock();
        if t.sync_fails {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        let ino = t.lookup(dir).ok_or_else(not_found)?;
        let entries = match t.nodes.get(&ino) {
            Some(Node::Dir { now, .. }) => now.clone(),
            _ => return Err(not_found()),
        };
        // A renamed inode lives under one name: the durable rename removes the old one.
        let moved: std::collections::BTreeSet<Ino> = entries.values().copied().collect();
        for (i, node) in t.nodes.iter_mut() {
            if let (true, Node::Dir { durable, .. }) = (*i != ino, node) {
                durable.retain(|_, x| !moved.contains(x));
            }
        }
        if let Some(Node::Dir { durable, .. }) = t.nodes.get_mut(&ino) {
            *durable = entries;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_power_cut_forgets_unsynced_bytes_and_entries() {
        let d = SimDisk::default();
        d.create_dir_all(Path::new("/a")).expect("mkdir");
        d.sync_dir(Path::new("/")).expect("sync root");
        let mut f = d.create_new(Path::new("/a/x")).expect("create");
        f.append(b"hello").expect("append");
        f.sync_data().expect("sync");
        f.append(b" world").expect("append");
        assert_eq!(d.read(Path::new("/a/x")).expect("read"), b"hello world");
        // The file's entry was never made durable: it goes with the power.
        let mut kept = d.create_new(Path::new("/a/y")).expect("create");
        kept.append(b"y").expect("append");
        kept.sync_all().expect("sync");
        d.power_cut();
        assert!(!d.exists(Path::new("/a/x")));
        assert!(d.exists(Path::new("/a")));

        let mut f = d.create_new(Path::new("/a/x")).expect("create");
        f.append(b"hello").expect("append");
        f.sync_data().expect("sync");
        d.sync_dir(Path::new("/a")).expect("sync dir");
        f.append(b" world").expect("append");
        d.power_cut();
        assert_eq!(d.read(Path::new("/a/x")).expect("read"), b"hello");
    }

    #[test]
    fn a_durable_copy_keeps_what_a_power_cut_would_and_leaves_the_disk_alone() {
        let d = SimDisk::default();
        d.create_dir_all(Path::new("/a")).expect("mkdir");
        d.sync_dir(Path::new("/")).expect("sync root");
        let mut f = d.create_new(Path::new("/a/x")).expect("create");
        f.append(b"hello").expect("append");
        f.sync_data().expect("sync");
        d.sync_dir(Path::new("/a")).expect("sync dir");
        f.append(b" world").expect("append");
        let copy = d.durable_copy();
        assert_eq!(copy.read(Path::new("/a/x")).expect("read"), b"hello");
        assert_eq!(d.read(Path::new("/a/x")).expect("read"), b"hello world");
        f.append(b"!").expect("append");
        assert_eq!(copy.read(Path::new("/a/x")).expect("read"), b"hello");
    }

    #[test]
    fn a_rename_is_durable_only_after_the_directory_sync() {
        let d = SimDisk::default();
        d.create_dir_all(Path::new("/a")).expect("mkdir");
        d.sync_dir(Path::new("/")).expect("sync");
        let mut old = d.create_new(Path::new("/a/c")).expect("create");
        old.append(b"old").expect("append");
        old.sync_all().expect("sync");
        d.sync_dir(Path::new("/a")).expect("sync");
        let mut new = d.create_new(Path::new("/a/c.tmp")).expect("create");
        new.append(b"new").expect("append");
        new.sync_all().expect("sync");
        d.rename(Path::new("/a/c.tmp"), Path::new("/a/c"))
            .expect("rename");
        d.power_cut();
        assert_eq!(d.read(Path::new("/a/c")).expect("read"), b"old");
        let mut new = d.create_new(Path::new("/a/c.tmp")).expect("create");
        new.append(b"new").expect("append");
        new.sync_all().expect("sync");
        d.rename(Path::new("/a/c.tmp"), Path::new("/a/c"))
            .expect("rename");
        d.sync_dir(Path::new("/a")).expect("sync");
        d.power_cut();
        assert_eq!(d.read(Path::new("/a/c")).expect("read"), b"new");
        assert!(!d.exists(Path::new("/a/c.tmp")));
    }

    #[test]
    fn a_ranged_read_sees_what_a_whole_read_sees() {
        let d = SimDisk::default();
        let mut f = d.create_new(Path::new("/x")).expect("create");
        f.append(b"hello world").expect("append");
        let mut buf = [0u8; 4];
        assert_eq!(d.read_at(Path::new("/x"), 0, &mut buf).expect("read"), 4);
        assert_eq!(&buf, b"hell");
        assert_eq!(d.read_at(Path::new("/x"), 9, &mut buf).expect("read"), 2);
        assert_eq!(&buf[..2], b"ld");
        assert_eq!(d.read_at(Path::new("/x"), 11, &mut buf).expect("read"), 0);
        assert_eq!(d.read_at(Path::new("/x"), 99, &mut buf).expect("read"), 0);
        let e = d
            .read_at(Path::new("/y"), 0, &mut buf)
            .expect_err("missing");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);

        let dir = crate::store::testutil::Scratch::new("read-at");
        let path = dir.path().join("x");
        OsDisk
            .create_new(&path)
            .and_then(|mut f| f.append(b"hello world"))
            .expect("write");
        assert_eq!(OsDisk.read_at(&path, 6, &mut buf).expect("read"), 4);
        assert_eq!(&buf, b"worl");
        assert_eq!(OsDisk.read_at(&path, 10, &mut buf).expect("read"), 1);
        assert_eq!(OsDisk.read_at(&path, 11, &mut buf).expect("read"), 0);
    }

    /// An open handle reads the file it opened, renamed or removed since, on both disks.
    #[test]
    fn a_reader_keeps_its_file_through_a_rename_and_a_removal() {
        let sim = SimDisk::default();
        let dir = crate::store::testutil::Scratch::new("open-read");
        for (disk, root) in [(&sim as &dyn Disk, Path::new("/")), (&OsDisk, dir.path())] {
            let (x, y) = (root.join("x"), root.join("y"));
            let mut f = disk.create_new(&x).expect("create");
            f.append(b"hello").expect("append");
            let mut r = disk.open_read(&x).expect("open");
            f.append(b" world").expect("append");
            assert_eq!(r.size().expect("size"), 11);
            disk.rename(&x, &y).expect("rename");
            let mut buf = [0u8; 8];
            assert_eq!(r.read_at(3, &mut buf).expect("read"), 8);
            assert_eq!(&buf, b"lo world");
            disk.remove_file(&y).expect("remove");
            assert_eq!(r.read_at(6, &mut buf).expect("read"), 5);
            assert_eq!(&buf[..5], b"world");
            assert_eq!(r.read_at(11, &mut buf).expect("read"), 0);
            let e = disk.open_read(&x).err().expect("gone");
            assert_eq!(e.kind(), io::ErrorKind::NotFound);
        }
        sim.set_read_fails_from(Some(4));
        let mut f = sim.create_new(Path::new("/z")).expect("create");
        f.append(b"hello").expect("append");
        let mut r = sim.open_read(Path::new("/z")).expect("open");
        let mut buf = [0u8; 4];
        assert_eq!(r.read_at(0, &mut buf).expect("before the failing byte"), 4);
        let e = r.read_at(1, &mut buf).expect_err("reaches it");
        assert_eq!(e.raw_os_error(), Some(EIO));
    }

    #[test]
    fn a_full_disk_refuses_appends_until_space_returns() {
        let d = SimDisk::default();
        let mut f = d.create_new(Path::new("/x")).expect("create");
        d.set_full(true);
        let e = f.append(b"a").expect_err("full");
        assert_eq!(e.raw_os_error(), Some(28));
        d.set_full(false);
        f.append(b"a").expect("append");
        assert_eq!(d.len(Path::new("/x")).expect("len"), 1);
    }
}
