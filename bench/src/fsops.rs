//! File-system chores around the timed region: copying trees, removing them, flushing
//! dirty pages and dropping the page cache.
//!
//! Copies go through `cp -a` / `cp -al` (the same tool as the `cp -al` baseline), so the
//! trees vrift ingests are made exactly the way a user would make them.
// Cache dropping and syscalls the benchmark times directly.
#![allow(unsafe_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::exec::run_checked;

/// `cp -a SRC DST`: a full, independent copy (new inodes), so that ingesting `DST` — which
/// hard-links its files into a store and drops their write bits — leaves `SRC` untouched.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    run_checked(Command::new("cp").arg("-a").arg(src).arg(dst))
}

/// Makes a private copy of a prepared store: `blake3/` as hard links (blobs are immutable
/// by contract, so sharing their inodes is safe and takes a second instead of copying
/// half a gigabyte per round), everything else (registry, cached manifests, locks) as real
/// copies, so that the ingest under test cannot change the template through them.
pub fn clone_store(template: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
    for entry in std::fs::read_dir(template)? {
        let entry = entry?;
        let flag = if entry.file_name() == "blake3" {
            "-al"
        } else {
            "-a"
        };
        run_checked(
            Command::new("cp")
                .arg(flag)
                .arg(entry.path())
                .arg(dst.join(entry.file_name())),
        )?;
    }
    Ok(())
}

/// Removes a tree that may hold read-only files and directories (an ingested project,
/// a store). Write bits are restored on directories only if a first attempt fails; file
/// inodes are never chmod-ed, since they may be blobs shared with a template store.
///
/// Removal runs on several threads: on a file system mounted with `discard` (as this VM's
/// is) every freed file waits for a synchronous discard, and parallel removals overlap
/// those waits (measured here: 4 parallel `rm` free 4× the files in 0.8× the time).
pub fn remove_tree(path: &Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    remove_in_parallel(path);
    if std::fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    run_checked(
        Command::new("find")
            .arg(path)
            .args(["-type", "d", "-exec", "chmod", "u+rwx", "{}", "+"]),
    )?;
    std::fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))
}

/// Threads that remove subtrees at once.
const REMOVE_THREADS: usize = 8;

/// Splits `root` into subtrees (breadth first, until there are enough to share out) and
/// removes them on [`REMOVE_THREADS`] threads. Best effort: whatever fails here is left for
/// the caller's final `remove_dir_all`, which reports errors.
fn remove_in_parallel(root: &Path) {
    let mut parts = vec![root.to_path_buf()];
    for _ in 0..4 {
        if parts.len() >= REMOVE_THREADS * 8 {
            break;
        }
        let mut next = Vec::new();
        for p in parts {
            match std::fs::read_dir(&p) {
                Ok(rd) if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) => {
                    next.extend(rd.filter_map(std::result::Result::ok).map(|e| e.path()));
                }
                _ => next.push(p),
            }
        }
        parts = next;
    }
    let queue = std::sync::Mutex::new(parts);
    std::thread::scope(|s| {
        for _ in 0..REMOVE_THREADS {
            s.spawn(|| {
                // The lock is taken and released inside `pop`, not held while removing.
                while let Some(p) = pop(&queue) {
                    let _ = match std::fs::symlink_metadata(&p) {
                        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
                        Ok(_) => std::fs::remove_file(&p),
                        Err(_) => Ok(()),
                    };
                }
            });
        }
    });
}

fn pop(queue: &std::sync::Mutex<Vec<PathBuf>>) -> Option<PathBuf> {
    queue.lock().ok()?.pop()
}

/// Flushes dirty pages so the write-back of a preparation step (a 500 MB `cp -a`, an
/// `rm -rf`) is not billed to the command timed next.
pub fn sync() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches`: page cache, dentries and inodes all go, so
/// the next command reads metadata and data from the disk. Needs root.
pub fn drop_caches() -> Result<()> {
    sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n")
        .context("writing /proc/sys/vm/drop_caches (the cold runs need root)")
}

/// Whether `--cold` can work here, checked before any long preparation.
pub fn can_drop_caches() -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/sys/vm/drop_caches")
        .is_ok()
}

/// Whether two paths are on the same file system (hard links need that).
pub fn same_filesystem(a: &Path, b: &Path) -> Result<bool> {
    let da = std::fs::metadata(a)
        .with_context(|| format!("stat {}", a.display()))?
        .dev();
    let db = std::fs::metadata(b)
        .with_context(|| format!("stat {}", b.display()))?
        .dev();
    Ok(da == db)
}
