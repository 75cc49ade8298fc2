//! # One process per data directory
//!
//! RocksDB refuses a second opener of its database with a raw `IO error: lock hold by current
//! process` or `… Resource temporarily unavailable` that names neither the other process nor
//! what to do (issue 17). So before it opens RocksDB a node takes an exclusive `flock(2)` on
//! `<data-dir>/meridian.pid` and writes its pid there; a second node on the same directory
//! fails at once with `data directory DIR is in use by another meridian process (pid N)`.
//!
//! The kernel drops the lock when the process exits, however it exits, so a crashed node never
//! leaves a stale lock behind: the pid in the file is only read when the lock is held, to name
//! the holder. The file stays after the node stops (deleting it would race with a new opener).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's name inside the data directory.
pub const PID_FILE: &str = "meridian.pid";

/// Why the data directory cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Another process holds the lock.
    #[error(
        "data directory {} is in use by another meridian process ({}); stop that node first, or give this one another --data-dir",
        dir.display(),
        pid.map_or("pid unknown".to_string(), |p| format!("pid {p}"))
    )]
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// The holder's pid, as it wrote it.
        pid: Option<u32>,
    },
    /// The lock file cannot be opened, locked or written.
    #[error("data directory {}: cannot use its lock file {PID_FILE}: {error}", dir.display())]
    Io {
        /// The data directory.
        dir: PathBuf,
        /// What failed (not a `source`: the message already says it).
        error: std::io::Error,
    },
}

/// The exclusive lock on a data directory, held until dropped (or the process exits).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock on `dir` (which must exist) and records this process's pid in it, or
    /// says which process holds it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, DataDirError> {
        let io = |error| DataDirError::Io { dir: dir.to_path_buf(), error };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(PID_FILE))
            .map_err(io)?;
        // SAFETY: flock(2) on a descriptor this function owns; it touches no memory.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::WouldBlock {
                return Err(io(e));
            }
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(DataDirError::InUse { dir: dir.to_path_buf(), pid: text.trim().parse().ok() });
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_the_first_release_frees_it() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let held = DataDirLock::acquire(dir.path()).expect("first lock");
        // flock locks belong to the open file, so a second open in this process conflicts too.
        let err = DataDirLock::acquire(dir.path()).expect_err("the directory is in use");
        let want = format!(
            "data directory {} is in use by another meridian process (pid {})",
            dir.path().display(),
            std::process::id()
        );
        assert!(err.to_string().starts_with(&want), "{err}");
        drop(held);
        let again = DataDirLock::acquire(dir.path()).expect("free once the holder is gone");
        let pid = std::fs::read_to_string(dir.path().join(PID_FILE)).expect("pid file");
        assert_eq!(pid, format!("{}\n", std::process::id()));
        drop(again);
    }
}
