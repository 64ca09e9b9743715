//! The data directory's lock: one running broker per store.
//!
//! Owns: `<data_dir>/lock`, held with an exclusive `flock` for as long as the [`StoreLock`]
//! lives (the kernel drops it when the process dies, even by `kill -9`, so there is no
//! stale lock to clean up). Invariant: while a `StoreLock` for a directory exists, no other
//! process or open file description can take another. Must not touch: the logs.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use super::disk::{Disk, OsDisk};
use super::{io, StoreError};

/// File name of the lock inside the data directory.
pub const LOCK_FILE: &str = "lock";

/// The held lock; dropping it releases the directory.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    /// Lock `data_dir` (creating it), or fail with [`StoreError::Locked`] if another
    /// broker holds it. The file records the holder's PID for the operator.
    pub fn acquire(data_dir: &Path) -> Result<StoreLock, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        OsDisk
            .create_dir_all(data_dir)
            .map_err(io("create directory"))?;
        let path = data_dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io("open lock file"))?;
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(StoreError::Locked(path));
        }
        file.set_len(0).map_err(io("write lock file"))?;
        writeln!(file, "{}", std::process::id()).map_err(io("write lock file"))?;
        Ok(StoreLock { _file: file })
    }
}

/// The lock file of `data_dir`.
pub fn lock_path(data_dir: &Path) -> PathBuf {
    data_dir.join(LOCK_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::Scratch;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let data = Scratch::new("lock");
        let first = StoreLock::acquire(data.path()).expect("first lock");
        let second = StoreLock::acquire(data.path());
        assert!(matches!(second, Err(StoreError::Locked(_))), "{second:?}");
        let pid = std::fs::read_to_string(lock_path(data.path())).expect("read lock");
        assert_eq!(pid.trim(), std::process::id().to_string());
        drop(first);
        assert!(StoreLock::acquire(data.path()).is_ok());
    }
}
