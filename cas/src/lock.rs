//! The store lock: ingests hold it shared, `gc --delete` and `clean` exclusive, so a blob a
//! running ingest is about to reference is never deleted under it.
//!
//! `flock` is released by the kernel when a process dies, so a `kill -9` never leaves the
//! store locked. Holders also drop a `<pid>` file beside it so a waiter can say who it waits
//! for; those files are advisory and stale ones (dead pids) are ignored and cleaned.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::{CasError, Result};
use crate::store::LOCK_DIR;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Shared,
    Exclusive,
}

impl LockKind {
    fn name(self) -> &'static str {
        match self {
            LockKind::Shared => "shared",
            LockKind::Exclusive => "exclusive",
        }
    }
}

/// A held store lock; released on drop (or by the kernel if the process dies).
pub struct StoreLock {
    _file: File,
    marker: PathBuf,
}

fn lock_file(root: &Path) -> PathBuf {
    root.join(LOCK_DIR).join("store.lock")
}

fn holders_dir(root: &Path) -> PathBuf {
    root.join(LOCK_DIR).join("holders")
}

impl StoreLock {
    /// Takes the lock. If it is busy and `wait` is false, fails with `LockBusy` naming the
    /// holders; if `wait` is true, calls `on_wait` once with the holders, then blocks.
    pub fn acquire(
        root: &Path,
        kind: LockKind,
        wait: bool,
        on_wait: impl FnOnce(&[Holder]),
    ) -> Result<StoreLock> {
        let path = lock_file(root);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| CasError::io(parent, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| CasError::io(&path, e))?;
        let attempt = match kind {
            LockKind::Shared => file.try_lock_shared(),
            LockKind::Exclusive => file.try_lock(),
        };
        match attempt {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holders = holders(root);
                if !wait {
                    return Err(CasError::LockBusy {
                        path,
                        holders: describe(&holders),
                    });
                }
                on_wait(&holders);
                let r = match kind {
                    LockKind::Shared => file.lock_shared(),
                    LockKind::Exclusive => file.lock(),
                };
                r.map_err(|e| CasError::io(&path, e))?;
            }
            Err(TryLockError::Error(e)) => return Err(CasError::io(&path, e)),
        }
        let dir = holders_dir(root);
        let _ = fs::create_dir_all(&dir);
        let marker = dir.join(format!("{}.{}", std::process::id(), kind.name()));
        let _ = fs::write(&marker, b"");
        Ok(StoreLock {
            _file: file,
            marker,
        })
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.marker);
    }
}

/// A process that holds (or held, if it died) the store lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub kind: LockKind,
}

/// Whether process `pid` exists (signal 0: existence and permission only; EPERM means it
/// exists under another user).
///
/// Pids come from file names anyone can create: 0, and anything that is not a positive
/// `pid_t`, counts as dead (never a probe of a process group).
pub fn pid_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .filter(|&p| p > 0)
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

/// Live holders of the lock, from the marker files; stale markers of dead processes are removed.
pub fn holders(root: &Path) -> Vec<Holder> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(holders_dir(root)) else {
        return out;
    };
    for entry in rd.flatten() {
        let name = entry.file_name();
        let Some((pid, kind)) = name.to_str().and_then(|n| n.split_once('.')) else {
            continue;
        };
        let (Ok(pid), kind) = (pid.parse::<u32>(), kind) else {
            continue;
        };
        let kind = match kind {
            "shared" => LockKind::Shared,
            "exclusive" => LockKind::Exclusive,
            _ => continue,
        };
        if pid_alive(pid) {
            out.push(Holder { pid, kind });
        } else {
            let _ = fs::remove_file(entry.path());
        }
    }
    out.sort_by_key(|h| h.pid);
    out
}

/// Whether anyone holds the lock right now (for `doctor`), checked without waiting.
pub fn is_held(root: &Path) -> Result<bool> {
    let path = lock_file(root);
    let file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(CasError::io(&path, e)),
    };
    match file.try_lock() {
        Ok(()) => Ok(false),
        Err(TryLockError::WouldBlock) => Ok(true),
        Err(TryLockError::Error(e)) => Err(CasError::io(&path, e)),
    }
}

fn describe(holders: &[Holder]) -> String {
    if holders.is_empty() {
        return String::new();
    }
    let list: Vec<String> = holders
        .iter()
        .map(|h| format!("pid {} ({})", h.pid, h.kind.name()))
        .collect();
    format!(" (held by {})", list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_positive_pids_of_live_processes_are_alive() {
        assert!(pid_alive(std::process::id()));
        // Never a process-group probe (kill(0) or kill(-n)) for names anyone can make.
        for pid in [0, u32::MAX, 3_000_000_000, (-5i32) as u32] {
            assert!(!pid_alive(pid), "{pid}");
        }
    }

    #[test]
    fn shared_locks_coexist_exclusive_waits() {
        let dir = tempfile::tempdir().unwrap();
        let a = StoreLock::acquire(dir.path(), LockKind::Shared, false, |_| {}).unwrap();
        let b = StoreLock::acquire(dir.path(), LockKind::Shared, false, |_| {}).unwrap();
        let err = StoreLock::acquire(dir.path(), LockKind::Exclusive, false, |_| {});
        match err {
            Err(CasError::LockBusy { holders, .. }) => {
                assert!(
                    holders.contains(&format!("pid {}", std::process::id())),
                    "{holders}"
                );
            }
            _ => panic!("exclusive lock should be busy"),
        }
        assert!(is_held(dir.path()).unwrap());
        drop(a);
        drop(b);
        assert!(!is_held(dir.path()).unwrap());
        let _c = StoreLock::acquire(dir.path(), LockKind::Exclusive, false, |_| {}).unwrap();
        assert_eq!(holders(dir.path()).len(), 1);
    }

    #[test]
    fn stale_markers_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(holders_dir(dir.path())).unwrap();
        // pid numbers above pid_max never exist
        fs::write(holders_dir(dir.path()).join("2147483000.exclusive"), b"").unwrap();
        assert!(holders(dir.path()).is_empty());
    }
}
