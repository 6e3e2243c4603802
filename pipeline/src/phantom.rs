//! Phantom mode's second phase: moving source files into the store.
//!
//! Nothing is moved before the manifest naming every file is durable on disk, and a journal
//! beside the output says a move phase may be unfinished. A `kill -9` at any moment therefore
//! leaves every file either at its path or in the store under a durable manifest entry; a
//! rerun (or `vrift ingest --resume`) finds the journal and completes the moves.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};
use serde::{Deserialize, Serialize};
use vrift_cas::{BlobCheck, Cas, CopyKind, WRITE_BITS};
use vrift_manifest::{EntryInput, Manifest};

use crate::dirs::DirChain;
use crate::error::PipelineError;
use crate::hash::hash_fd;
use crate::item::{rel_os, Stat};
use crate::lease::Lease;
use crate::options::Tier;
use crate::report::{Counters, Failure, IssueKind};

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
///
/// The tree's owner may be someone else than the user running the ingest (root in CI), and
/// may swap a directory for a symlink at any moment. So every file is reached from the tree's
/// root one directory at a time without following symlinks ([`DirChain`]), opened
/// `O_NOFOLLOW`, checked to be the inode the manifest recorded (re-hashed from that descriptor
/// if it changed), and moved by linking *that descriptor* into the store and then removing its
/// name — never by a path that may lead elsewhere by now.
pub fn move_phase(
    cas: &Cas,
    output: &Path,
    tier: Tier,
    threads: usize,
    counters: &Counters,
) -> Result<(), PipelineError> {
    let manifest = Manifest::open(output)?;
    let root = PathBuf::from(std::ffi::OsStr::from_bytes(manifest.root()));
    let root_fd = open_tree_root(&root, &manifest).map_err(|e| PipelineError::io(&root, e))?;
    let chain = DirChain::new(root_fd);
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
                let chain = chain.try_clone();
                s.spawn(move || {
                    let mut updated = Vec::new();
                    let mut dropped = Vec::new();
                    let mut buf = Vec::new();
                    let mut chain = match chain {
                        Ok(c) => c,
                        Err(e) => {
                            counters.issue(
                                IssueKind::Unreadable,
                                root,
                                format!("cannot open: {e}"),
                            );
                            return (updated, part.iter().map(|e| e.path.clone()).collect());
                        }
                    };
                    for e in part {
                        let path = root.join(rel_os(&e.path));
                        match move_one(cas, &mut chain, e, &path, tier, counters, &mut buf) {
                            Ok(Some(newer)) => updated.push(newer),
                            Ok(None) => {}
                            Err((kind, msg)) => {
                                Counters::add(&counters.bytes_error, e.size);
                                counters.issue(kind, &path, msg);
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

/// Opens the tree's root and checks it is the directory the manifest was made from (its
/// device and inode, when recorded): a root swapped for a symlink or another directory since
/// is refused rather than emptied into the store.
fn open_tree_root(root: &Path, manifest: &Manifest) -> io::Result<OwnedFd> {
    let fd = crate::dirs::open_root(root)?;
    let st = vrift_cas::sys::fstat(fd.as_fd())?;
    if let Some(r) = manifest.root_entry() {
        if r.ino() != 0 && (r.dev() != st.st_dev || r.ino() != st.st_ino) {
            return Err(io::Error::other(
                "is no longer the directory that was ingested (replaced since); nothing moved",
            ));
        }
    }
    Ok(fd)
}

/// Moves one file. `Ok(Some(entry))` when the file had changed and its entry was updated.
fn move_one(
    cas: &Cas,
    chain: &mut DirChain,
    e: &EntryInput,
    path: &Path,
    tier: Tier,
    counters: &Counters,
    buf: &mut Vec<u8>,
) -> Result<Option<EntryInput>, Failure> {
    let (dir, name) = match chain.parent_of(&e.path) {
        Ok(x) => x,
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {
            return gone(cas, e, None);
        }
        Err(err) => {
            return Err((
                IssueKind::Unreadable,
                format!(
                    "cannot open its directory without following a symlink: {err}; left in place"
                ),
            ))
        }
    };
    let opened = rustix::fs::openat(
        dir,
        name.as_c_str(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    );
    let file = match opened {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::NOENT) => {
            return gone(
                cas,
                e,
                (tier == Tier::Tier1).then_some((dir, name.as_c_str())),
            )
        }
        Err(rustix::io::Errno::LOOP) => {
            // tier1 leaves a symlink to the blob where the file was: already done.
            let blob = cas.blob_path(&e.hash, e.size);
            let target = rustix::fs::readlinkat(dir, name.as_c_str(), Vec::new());
            return match target {
                Ok(t) if t.as_bytes() == blob.as_os_str().as_bytes() => Ok(None),
                _ => Err((
                    IssueKind::Changed,
                    "was replaced by a symlink; left in place".into(),
                )),
            };
        }
        Err(err) => return Err((IssueKind::Unreadable, format!("cannot open: {err}"))),
    };
    let st = Stat::from_rustix(
        &vrift_cas::sys::fstat(file.as_fd()).map_err(|e| (IssueKind::Unreadable, e.to_string()))?,
    );
    if st.mode & libc::S_IFMT != libc::S_IFREG {
        return Err((
            IssueKind::Changed,
            "is no longer a regular file; left in place".into(),
        ));
    }
    let same =
        st.dev == e.dev && st.ino == e.ino && st.size == e.size && st.mtime_ns == e.cache_mtime_ns;
    let (entry, file, updated) = if same {
        (e.clone(), file, false)
    } else {
        let (hash, file, now) =
            hash_fd(file, st, buf).map_err(|err| (err.kind(), err.to_string()))?;
        let mut n = e.clone();
        n.hash = hash;
        n.size = now.size;
        n.mtime_ns = now.mtime_ns;
        n.mode = now.mode & 0o7777;
        n.kind = now.file_kind();
        n.dev = now.dev;
        n.ino = now.ino;
        n.cache_mtime_ns = now.mtime_ns;
        (n, file, true)
    };
    let fd = file.as_fd();
    let restore_mode = || {
        let _ = vrift_cas::sys::fchmod(fd, entry.mode & 0o7777);
    };
    vrift_cas::sys::fchmod(fd, entry.mode & 0o7777 & !WRITE_BITS).map_err(|err| {
        (
            IssueKind::NotStored,
            format!("cannot protect before moving: {err}"),
        )
    })?;
    // The inode becomes the blob: nobody may still hold it open for writing (see lease.rs).
    let lease = Lease::take(fd);
    if let Lease::Writer = lease {
        restore_mode();
        return Err((
            IssueKind::Busy,
            "open for writing by another process; left in place".into(),
        ));
    }
    let stored = store(cas, &file, &entry, &name, dir, path, tier, counters);
    drop(lease);
    match stored {
        Ok(Stored::KeepFile) => {
            restore_mode();
            return Ok(updated.then_some(entry));
        }
        Ok(Stored::InStore) => {}
        Err(msg) => {
            restore_mode();
            return Err(msg);
        }
    }
    // The content is in the store: the name goes, if it still names the inode we moved
    // (whatever else is there now was put there since, by the tree's owner: not ours).
    match rustix::fs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(now) if now.st_dev == st.dev && now.st_ino == st.ino => {
            rustix::fs::unlinkat(dir, name.as_c_str(), AtFlags::empty()).map_err(|err| {
                (
                    IssueKind::NotStored,
                    format!("stored, but cannot remove it from its path: {err}"),
                )
            })?;
            if tier == Tier::Tier1 {
                // Killed between the two steps, a rerun finds the name missing and its blob
                // stored, and makes the symlink then (see `gone`); no temp name is left behind.
                let blob = cas.blob_path(&entry.hash, entry.size);
                rustix::fs::symlinkat(&blob, dir, name.as_c_str()).map_err(|err| {
                    (
                        IssueKind::NotStored,
                        format!("moved, but the tier1 symlink failed: {err}"),
                    )
                })?;
            }
        }
        _ => {
            return Err((
                IssueKind::Changed,
                "stored, but its name was taken by another file meanwhile; left that file in \
                 place"
                    .into(),
            ))
        }
    }
    Ok(updated.then_some(entry))
}

/// Not at its path any more: moved by an earlier (interrupted) run, or removed since. A
/// tier1 tree gets the symlink an interrupted run did not make (`tier1_at`: its directory
/// and name).
fn gone(
    cas: &Cas,
    e: &EntryInput,
    tier1_at: Option<(std::os::fd::BorrowedFd<'_>, &std::ffi::CStr)>,
) -> Result<Option<EntryInput>, Failure> {
    if cas.has_blob(&e.hash, e.size) {
        if let Some((dir, name)) = tier1_at {
            let blob = cas.blob_path(&e.hash, e.size);
            match rustix::fs::symlinkat(&blob, dir, name) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(err) => {
                    return Err((
                        IssueKind::NotStored,
                        format!("moved, but the tier1 symlink failed: {err}"),
                    ))
                }
            }
        }
        Ok(None)
    } else {
        Err((
            IssueKind::Unreadable,
            format!(
                "gone from its path and its blob {} is missing",
                vrift_cas::blob_rel(&e.hash, e.size)
            ),
        ))
    }
}

enum Stored {
    /// The content is in the store; the file's name can go.
    InStore,
    /// The file must stay where it is (a tier1 symlink would show another mode).
    KeepFile,
}

/// Puts the content of the open, protected `file` (the inode `entry` describes) into the store:
/// its own inode linked in as a new blob (sealed), or nothing to do when a sound blob of that
/// content exists, or a verified copy where no link is possible.
#[allow(clippy::too_many_arguments)]
fn store(
    cas: &Cas,
    file: &File,
    entry: &EntryInput,
    name: &std::ffi::CStr,
    dir: std::os::fd::BorrowedFd<'_>,
    path: &Path,
    tier: Tier,
    counters: &Counters,
) -> Result<Stored, Failure> {
    let fd = file.as_fd();
    for attempt in 0..2 {
        match cas.link_in(fd, dir, name, &entry.hash, entry.size) {
            Ok(()) => {
                // Changed after it was checked (a writer that had it open before the write
                // bits went): the blob name would lie. Take it back.
                let now = vrift_cas::sys::fstat(fd).map(|s| Stat::from_rustix(&s));
                let moved = matches!(&now, Ok(n) if n.size == entry.size
                    && crate::place::unchanged_mtime(n.mtime_ns, entry.cache_mtime_ns));
                if !moved {
                    let _ = cas.withdraw_blob(&entry.hash, entry.size, entry.dev, entry.ino);
                    return Err((
                        IssueKind::Changed,
                        "changed while it was being moved into the store (still open for \
                         writing by another process?); left in place, not in the manifest"
                            .into(),
                    ));
                }
                if let Err(err) = vrift_cas::seal::seal_fd(fd, entry.cache_mtime_ns) {
                    counters.issue(
                        IssueKind::Unsealed,
                        path,
                        format!("stored, but its blob could not be sealed: {err}"),
                    );
                }
                Counters::add(&counters.blobs_new, 1);
                Counters::add(&counters.bytes_new, entry.size);
                Counters::add(&counters.link_rename, 1);
                return Ok(Stored::InStore);
            }
            Err(err) if err.raw_os_error() == Some(libc::EEXIST) => {
                match cas.check_blob(&entry.hash, entry.size) {
                    Ok(BlobCheck::Sound(blob)) => {
                        Counters::add(&counters.dedup_hits, 1);
                        Counters::add(&counters.bytes_dedup, entry.size);
                        let keep = 0o7777 & !WRITE_BITS;
                        if tier == Tier::Tier1 && blob.st_mode & keep != entry.mode & keep {
                            // A tier1 symlink would show the blob's mode: this file stays a file.
                            Counters::add(&counters.mode_conflicts, 1);
                            return Ok(Stored::KeepFile);
                        }
                        return Ok(Stored::InStore);
                    }
                    // Damaged (now quarantined) or gone: ours takes its place.
                    Ok(BlobCheck::Damaged | BlobCheck::Missing) if attempt == 0 => continue,
                    Ok(_) => {
                        return Err((
                            IssueKind::NotStored,
                            "its blob keeps changing under us; left in place".into(),
                        ))
                    }
                    Err(err) => {
                        return Err((
                            IssueKind::NotStored,
                            format!("cannot check its blob: {err}"),
                        ))
                    }
                }
            }
            Err(err)
                if matches!(
                    err.raw_os_error(),
                    Some(libc::EXDEV | libc::EMLINK | libc::EPERM | libc::EACCES)
                ) =>
            {
                match err.raw_os_error() {
                    Some(libc::EXDEV) => Counters::add(&counters.fallback_exdev, 1),
                    Some(libc::EMLINK) => Counters::add(&counters.fallback_emlink, 1),
                    _ => Counters::add(&counters.fallback_eperm, 1),
                }
                if let Ok(BlobCheck::Sound(_)) = cas.check_blob(&entry.hash, entry.size) {
                    Counters::add(&counters.dedup_hits, 1);
                    return Ok(Stored::InStore);
                }
                return match cas.copy_in_fd(fd, path, &entry.hash, entry.size, entry.mode) {
                    Ok(CopyKind::Reflink) => {
                        Counters::add(&counters.link_reflink, 1);
                        Counters::add(&counters.blobs_new, 1);
                        Ok(Stored::InStore)
                    }
                    Ok(CopyKind::Copy) => {
                        Counters::add(&counters.link_copy, 1);
                        Counters::add(&counters.blobs_new, 1);
                        Ok(Stored::InStore)
                    }
                    // Another worker stored the same content first.
                    Ok(CopyKind::Existed) => {
                        Counters::add(&counters.dedup_hits, 1);
                        Ok(Stored::InStore)
                    }
                    Err(err) => Err((
                        IssueKind::NotStored,
                        format!("cannot copy into store: {}", err.reason()),
                    )),
                };
            }
            Err(err) => {
                return Err((
                    IssueKind::NotStored,
                    format!("cannot move into store: {err}"),
                ))
            }
        }
    }
    Err((
        IssueKind::NotStored,
        "its blob keeps changing under us; left in place".into(),
    ))
}
