//! Phantom mode's second phase: moving source files into the store.
//!
//! Nothing is moved before the manifest naming every file is durable on disk, and a journal
//! beside the output says a move phase may be unfinished. A `kill -9` at any moment therefore
//! leaves every file either at its path or in the store under a durable manifest entry; a
//! rerun (or `vrift ingest --resume`) finds the journal and completes the moves.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vrift_cas::{Cas, CopyKind, WRITE_BITS};
use vrift_manifest::{EntryInput, Manifest};

use crate::error::PipelineError;
use crate::hash::hash_path;
use crate::lease::Lease;
use crate::options::Tier;
use crate::place::symlink_over;
use crate::report::Counters;
use crate::walk::{rel_os, Stat};

#[derive(Debug, Serialize, Deserialize)]
pub struct Journal {
    pub version: u32,
    pub root: PathBuf,
    pub output: PathBuf,
    pub tier1: bool,
    pub pid: u32,
}

/// Where the journal for an output manifest lives.
pub fn journal_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".journal");
    output.with_file_name(name)
}

pub fn read_journal(output: &Path) -> Result<Option<Journal>, PipelineError> {
    let path = journal_path(output);
    match fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| PipelineError::Journal {
                path,
                reason: format!("unreadable journal: {e}"),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PipelineError::io(path, e)),
    }
}

pub fn write_journal(output: &Path, j: &Journal) -> Result<(), PipelineError> {
    let path = journal_path(output);
    let bytes = serde_json::to_vec_pretty(j).map_err(|e| PipelineError::Journal {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    vrift_manifest::write_file_atomic(&path, &bytes)?;
    Ok(())
}

pub fn remove_journal(output: &Path) -> Result<(), PipelineError> {
    let path = journal_path(output);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PipelineError::io(path, e)),
    }
}

/// Moves every file of the (durable) manifest at `output` that is still at its path into the
/// store. Files changed since they were hashed are re-hashed first and their entries updated;
/// then the manifest is rewritten. Idempotent: safe to run again after a crash.
pub fn move_phase(
    cas: &Cas,
    output: &Path,
    tier: Tier,
    threads: usize,
    counters: &Counters,
) -> Result<(), PipelineError> {
    let manifest = Manifest::open(output)?;
    let root = PathBuf::from(std::ffi::OsStr::from_bytes(manifest.root()));
    let files: Vec<EntryInput> = manifest
        .iter()
        .filter(|e| e.kind().has_content())
        .map(|e| e.to_input())
        .collect();
    let chunk = files.len().div_ceil(threads.max(1)).max(1);
    let (updates, dropped): (Vec<EntryInput>, Vec<Vec<u8>>) = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                let root = &root;
                s.spawn(move || {
                    let mut updated = Vec::new();
                    let mut dropped = Vec::new();
                    let mut buf = Vec::new();
                    for e in part {
                        let path = root.join(rel_os(&e.path));
                        match move_one(cas, e, &path, tier, counters, &mut buf) {
                            Ok(Some(newer)) => updated.push(newer),
                            Ok(None) => {}
                            Err(msg) => {
                                Counters::add(&counters.bytes_error, e.size);
                                counters.error(&path, msg);
                                // Left where it was: a manifest never names a missing blob.
                                if !cas.has_blob(&e.hash, e.size) {
                                    dropped.push(e.path.clone());
                                }
                            }
                        }
                    }
                    (updated, dropped)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .fold((Vec::new(), Vec::new()), |(mut u, mut d), (hu, hd)| {
                u.extend(hu);
                d.extend(hd);
                (u, d)
            })
    });
    if !updates.is_empty() || !dropped.is_empty() {
        let dropped: std::collections::HashSet<Vec<u8>> = dropped.into_iter().collect();
        let mut b = vrift_manifest::ManifestBuilder::with_capacity(
            manifest.root().to_vec(),
            manifest.len(),
        );
        b.set_flags(manifest.flags());
        for e in manifest.iter().filter(|e| !dropped.contains(e.path())) {
            b.push(e.to_input());
        }
        for u in updates {
            b.push(u); // later push of the same path wins
        }
        drop(manifest);
        b.write_atomic(output)?;
    }
    Ok(())
}

/// Whether the inode just moved in as the blob of `entry` changed after it was checked: a
/// process that had it open for writing can still write to it. Then it goes back to its path
/// (not in the store, not in the manifest) and the reason is returned.
fn changed_after_move(cas: &Cas, entry: &EntryInput, path: &Path) -> Option<String> {
    let st = match cas.blob_stat(&entry.hash, entry.size) {
        Ok(st) => Stat::from_libc(&st),
        Err(e) => {
            return Some(format!(
                "moved into the store, then its blob could not be checked: {e}"
            ))
        }
    };
    if st.ino == entry.ino && st.size == entry.size && st.mtime_ns == entry.cache_mtime_ns {
        return None;
    }
    let blob = cas.blob_path(&entry.hash, entry.size);
    let back = fs::rename(&blob, path);
    let _ = fs::set_permissions(
        path,
        std::os::unix::fs::PermissionsExt::from_mode(entry.mode & 0o7777),
    );
    Some(match back {
        Ok(()) => "changed while it was being moved into the store (still open for writing by \
                   another process?); left in place, not in the manifest"
            .into(),
        Err(e) => format!(
            "changed while it was being moved into the store, and could not be moved back from {}: {e}",
            blob.display()
        ),
    })
}

/// Moves one file. `Ok(Some(entry))` when the file had changed and its entry was updated.
fn move_one(
    cas: &Cas,
    e: &EntryInput,
    path: &Path,
    tier: Tier,
    counters: &Counters,
    buf: &mut Vec<u8>,
) -> Result<Option<EntryInput>, String> {
    let md = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            // Moved by an earlier (interrupted) run, or removed by the user since.
            return if cas.has_blob(&e.hash, e.size) {
                Ok(None)
            } else {
                Err(format!(
                    "gone from its path and its blob {} is missing",
                    vrift_cas::blob_rel(&e.hash, e.size)
                ))
            };
        }
        Err(err) => return Err(format!("cannot stat: {err}")),
    };
    if md.file_type().is_symlink() {
        // tier1 leaves a symlink to the blob where the file was: already done.
        return Ok(None);
    }
    if !md.file_type().is_file() {
        return Err("is no longer a regular file; left in place".into());
    }
    let st = Stat::from_metadata(&md);
    let same =
        st.dev == e.dev && st.ino == e.ino && st.size == e.size && st.mtime_ns == e.cache_mtime_ns;
    let (entry, updated) = if same {
        (e.clone(), false)
    } else {
        let (hash, _file, now) = hash_path(path, st, buf).map_err(|err| err.to_string())?;
        let mut n = e.clone();
        n.hash = hash;
        n.size = now.size;
        n.mtime_ns = now.mtime_ns;
        n.mode = now.mode & 0o7777;
        n.kind = now.file_kind();
        n.dev = now.dev;
        n.ino = now.ino;
        n.cache_mtime_ns = now.mtime_ns;
        (n, true)
    };
    fs::set_permissions(
        path,
        std::os::unix::fs::PermissionsExt::from_mode(entry.mode & 0o7777 & !WRITE_BITS),
    )
    .map_err(|err| format!("cannot protect before moving: {err}"))?;
    // The inode becomes the blob: nobody may still hold it open for writing (see lease.rs).
    let reader = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path);
    let lease = reader.as_ref().map(|f| Lease::take(f.as_fd()));
    if let Ok(Lease::Writer) = lease {
        let _ = fs::set_permissions(
            path,
            std::os::unix::fs::PermissionsExt::from_mode(entry.mode & 0o7777),
        );
        return Err("open for writing by another process; left in place".into());
    }
    match cas.rename_in(path, &entry.hash, entry.size) {
        Ok(()) => {
            if let Some(why) = changed_after_move(cas, &entry, path) {
                return Err(why);
            }
            Counters::add(&counters.blobs_new, 1);
            Counters::add(&counters.bytes_new, entry.size);
            Counters::add(&counters.link_rename, 1);
        }
        Err(err) if err.raw_os_error() == Some(libc::EEXIST) => {
            Counters::add(&counters.dedup_hits, 1);
            Counters::add(&counters.bytes_dedup, entry.size);
            let keep = 0o7777 & !WRITE_BITS;
            let blob_mode = cas
                .blob_stat(&entry.hash, entry.size)
                .map(|b| b.st_mode)
                .unwrap_or(0);
            if tier == Tier::Tier1 && blob_mode & keep != entry.mode & keep {
                // A tier1 symlink would show the blob's mode: this file stays a file.
                Counters::add(&counters.mode_conflicts, 1);
                let _ = fs::set_permissions(
                    path,
                    std::os::unix::fs::PermissionsExt::from_mode(entry.mode & 0o7777),
                );
                return Ok(updated.then_some(entry));
            }
            fs::remove_file(path).map_err(|err| format!("cannot remove after dedup: {err}"))?;
        }
        Err(err) if err.raw_os_error() == Some(libc::EXDEV) => {
            Counters::add(&counters.fallback_exdev, 1);
            if cas.has_blob(&entry.hash, entry.size) {
                Counters::add(&counters.dedup_hits, 1);
            } else {
                match cas.copy_in(path, &entry.hash, entry.size, entry.mode) {
                    Ok(CopyKind::Reflink) => {
                        Counters::add(&counters.link_reflink, 1);
                        Counters::add(&counters.blobs_new, 1);
                    }
                    Ok(CopyKind::Copy) => {
                        Counters::add(&counters.link_copy, 1);
                        Counters::add(&counters.blobs_new, 1);
                    }
                    // Another worker stored the same content first.
                    Ok(CopyKind::Existed) => Counters::add(&counters.dedup_hits, 1),
                    Err(err) => return Err(format!("cannot copy into store: {}", err.reason())),
                }
            }
            fs::remove_file(path).map_err(|err| format!("cannot remove after copy: {err}"))?;
        }
        Err(err) => return Err(format!("cannot move into store: {err}")),
    }
    if tier == Tier::Tier1 {
        let blob = cas.blob_path(&entry.hash, entry.size);
        std::os::unix::fs::symlink(&blob, path)
            .or_else(|_| symlink_over(&blob, path))
            .map_err(|err| format!("moved, but the tier1 symlink failed: {err}"))?;
    }
    Ok(updated.then_some(entry))
}
