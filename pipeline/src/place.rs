//! Stage 4: put each hashed file's content into the store and decide what stays at its path.
//!
//! Solid mode: hard-link the hashed inode in as a new blob; if the blob already exists (a
//! dedup hit shows up as EEXIST: one failed syscall) atomically replace the project file by a
//! link to the existing blob so duplicates stop costing disk. Where a link cannot be made
//! (another filesystem, a full inode, no permission) the content is copied in and the
//! project file is left alone. Phantom mode only records here; the move happens after the
//! manifest is durable (see `phantom.rs`).

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Instant;

use flume::{Receiver, Sender};
use vrift_cas::{BlobCheck, Cas, CopyKind, WRITE_BITS};
use vrift_manifest::EntryInput;

use crate::item::{Done, Hashed, Stat};
use crate::lease::Lease;
use crate::options::{Mode, Tier};
use crate::reap::reap;
use crate::report::{Counters, Failure, IssueKind};

/// Mode bits that must agree for two files to share one inode (write bits are stripped from
/// every blob anyway).
const SHARED_MODE_BITS: u32 = 0o7777 & !WRITE_BITS;

pub struct PlaceConfig<'a> {
    pub cas: &'a Cas,
    pub mode: Mode,
    pub tier: Tier,
    pub counters: &'a Counters,
    /// The ingest root, for messages naming a file.
    pub root: &'a Path,
    /// Where descriptors of files whose last name we replaced go to be closed.
    pub reaper: Sender<Vec<File>>,
}

/// Runs one place worker (thread backend) until the input channel closes.
pub fn place_stage(rx: Receiver<Vec<Hashed>>, tx: Sender<Vec<Done>>, cfg: &PlaceConfig<'_>) {
    let c = cfg.counters;
    for batch in &rx {
        if c.quitting() {
            // Another stage failed: link nothing more (solid mode strips write bits).
            return;
        }
        let t = Instant::now();
        Counters::sub_queue(&c.queue_place, batch.len() as u64);
        let mut out = Vec::with_capacity(batch.len());
        let mut freed = Vec::new();
        for h in batch {
            let dir = h.item.dir.clone();
            let before = freed.len();
            if let Some(e) = place_one(h, cfg, &mut freed) {
                out.push(Done::Entry(e));
            }
            if freed.len() > before {
                note_touched(&dir, &mut out);
            }
        }
        reap(&cfg.reaper, freed);
        Counters::add(&c.place_ns, t.elapsed().as_nanos() as u64);
        Counters::add(&c.queue_collect, out.len() as u64);
        if tx.send(out).is_err() {
            return;
        }
    }
}

/// A file of `dir` was replaced, so the directory is stat'ed again at the end; this asks for
/// that once per directory.
pub fn note_touched(dir: &crate::item::SourceDir, out: &mut Vec<Done>) {
    if let Some(rel) = dir.touch() {
        out.push(Done::Restat(rel.to_vec()));
    }
}

/// The manifest entry for a file whose on-disk identity (for re-ingest) is `disk`.
pub fn entry_for(h: &Hashed, disk: &Stat) -> EntryInput {
    EntryInput {
        path: h.item.rel.as_bytes().to_vec(),
        kind: h.st.file_kind(),
        mode: h.st.mode & 0o7777,
        size: h.st.size,
        mtime_ns: h.st.mtime_ns,
        hash: h.hash,
        target: Vec::new(),
        dev: disk.dev,
        ino: disk.ino,
        cache_mtime_ns: disk.mtime_ns,
    }
}

/// Places one file; `None` if it failed (the failure is recorded and the file left as it was).
/// Files whose last name was replaced are pushed onto `freed` for the reapers.
pub fn place_one(h: Hashed, cfg: &PlaceConfig<'_>, freed: &mut Vec<File>) -> Option<EntryInput> {
    match cfg.mode {
        // Phantom: recorded now, moved once the manifest is durable. Index: recorded only.
        Mode::Phantom | Mode::Index => return Some(entry_for(&h, &h.st)),
        Mode::Copy => {
            return match copy_in(&h, cfg) {
                Ok(placed) => Some(placed.entry),
                Err((kind, msg)) => {
                    Counters::add(&cfg.counters.bytes_error, h.st.size);
                    cfg.counters.issue(kind, h.item.path(cfg.root), msg);
                    None
                }
            }
        }
        Mode::Solid => {}
    }
    let linked = link_in(&h, cfg);
    finish_link(h, linked, cfg, freed)
}

/// Links the hashed inode in as the blob of its content (EEXIST: already stored).
fn link_in(h: &Hashed, cfg: &PlaceConfig<'_>) -> io::Result<()> {
    cfg.cas.link_in(
        h.file.as_fd(),
        h.item.dir.fd(),
        h.item.rel.name(),
        &h.hash,
        h.st.size,
    )
}

/// What placing a file did to its path.
struct Placed {
    entry: EntryInput,
    /// The file must stay a file of its own (its mode differs from the blob's).
    keep_own: bool,
    /// The path now names the blob, not the inode we hashed (which may now be unlinked).
    replaced: bool,
}

/// Everything after the attempt to link the file in as a new blob: protecting a new blob,
/// deduplicating on EEXIST, copying where a link is impossible. Shared by both io backends.
pub fn finish_link(
    h: Hashed,
    linked: io::Result<()>,
    cfg: &PlaceConfig<'_>,
    freed: &mut Vec<File>,
) -> Option<EntryInput> {
    link_result(h, linked, cfg, freed, false)
}

/// [`finish_link`]; `retried` after a damaged blob was removed and the link tried again.
fn link_result(
    h: Hashed,
    linked: io::Result<()>,
    cfg: &PlaceConfig<'_>,
    freed: &mut Vec<File>,
    retried: bool,
) -> Option<EntryInput> {
    let c = cfg.counters;
    let result = match linked {
        Ok(()) => {
            if h.st.mode & WRITE_BITS != 0 {
                if let Err(e) = vrift_cas::sys::fchmod(h.file.as_fd(), h.st.mode & SHARED_MODE_BITS)
                {
                    c.issue(
                        IssueKind::Unsealed,
                        h.item.path(cfg.root),
                        format!("blob left writable: {e}"),
                    );
                }
            }
            // No writer may be left once the file is the blob; the lease says so for good.
            let lease = Lease::take(h.file.as_fd());
            let verdict = match lease {
                Lease::Writer => Some((
                    IssueKind::Busy,
                    "open for writing by another process; not stored, left in place".to_string(),
                )),
                Lease::Held(_) | Lease::Unknown => changed_since_hashed(&h),
            };
            // Sealed while the lease still keeps writers out (see vrift_cas::seal).
            let disk = match verdict {
                None => Some(seal(&h, cfg)),
                Some(_) => None,
            };
            drop(lease);
            match (verdict, disk) {
                (None, Some(disk)) => {
                    Counters::add(&c.blobs_new, 1);
                    Counters::add(&c.bytes_new, h.st.size);
                    Counters::add(&c.link_hardlink, 1);
                    Ok(Placed {
                        entry: entry_for(&h, &disk),
                        keep_own: false,
                        replaced: false,
                    })
                }
                (why, _) => Err(withdraw(&h, cfg, why_or_unknown(why))),
            }
        }
        Err(e) => match e.raw_os_error() {
            Some(libc::EEXIST) => match dedup(&h, cfg, retried) {
                Some(placed) => Ok(placed),
                None => {
                    let again = link_in(&h, cfg);
                    return link_result(h, again, cfg, freed, true);
                }
            },
            Some(libc::EXDEV) => {
                Counters::add(&c.fallback_exdev, 1);
                copy_in(&h, cfg)
            }
            Some(libc::EMLINK) => {
                Counters::add(&c.fallback_emlink, 1);
                copy_in(&h, cfg)
            }
            Some(libc::EPERM | libc::EACCES) => {
                Counters::add(&c.fallback_eperm, 1);
                copy_in(&h, cfg)
            }
            errno => {
                if is_store_failure(errno) {
                    Counters::add(&c.store_failures, 1);
                }
                Err((IssueKind::NotStored, format!("cannot link into store: {e}")))
            }
        },
    };
    match result {
        Ok(mut placed) => {
            if cfg.tier == Tier::Tier1 && !placed.keep_own {
                match replace_with_symlink(cfg.cas, &h) {
                    Ok(()) => placed.replaced = true,
                    Err(e) => c.issue(
                        IssueKind::OwnCopy,
                        h.item.path(cfg.root),
                        format!("kept as a regular file (tier1 symlink failed: {e})"),
                    ),
                }
            }
            if placed.replaced {
                freed.push(h.file);
            }
            Some(placed.entry)
        }
        Err((kind, msg)) => {
            Counters::add(&c.bytes_error, h.st.size);
            c.issue(kind, h.item.path(cfg.root), msg);
            None
        }
    }
}

/// Whether the hashed inode changed after its hash was taken: the file is now the blob (solid
/// mode links the very inode), and a process that opened it for writing before the write bits
/// were stripped can still write to it. One `fstat` per new blob; the name must say what the
/// blob holds.
fn changed_since_hashed(h: &Hashed) -> Option<Failure> {
    match vrift_cas::sys::fstat(h.file.as_fd()) {
        Ok(now)
            if now.st_size as u64 == h.st.size
                && unchanged_mtime(Stat::from_rustix(&now).mtime_ns, h.st.mtime_ns) =>
        {
            None
        }
        Ok(_) => Some((
            IssueKind::Changed,
            "changed while it was being ingested (still open for writing by another process?); \
             not stored, left in place"
                .into(),
        )),
        Err(e) => Some((
            IssueKind::NotStored,
            format!("cannot stat after linking: {e}; not stored"),
        )),
    }
}

/// Seals the new blob (the hashed inode, now linked into the store) and returns its state on
/// disk for the manifest's re-ingest cache. A blob we may not seal stays usable: the store
/// re-hashes it before trusting it (see `vrift_cas::seal`).
fn seal(h: &Hashed, cfg: &PlaceConfig<'_>) -> Stat {
    let mut disk = h.st;
    match vrift_cas::seal::seal_fd(h.file.as_fd(), h.st.mtime_ns) {
        Ok(()) => disk.mtime_ns = vrift_cas::seal::sealed_mtime_ns(h.st.mtime_ns),
        Err(e) => cfg.counters.issue(
            IssueKind::Unsealed,
            h.item.path(cfg.root),
            format!("stored, but its blob could not be sealed: {e}"),
        ),
    }
    disk
}

fn why_or_unknown(why: Option<Failure>) -> Failure {
    why.unwrap_or_else(|| (IssueKind::NotStored, "not stored".into()))
}

/// Whether an inode's mtime `now` still says "not written since `then`": equal, or sealed by
/// another thread or process meanwhile (a concurrent dedup re-hashes an unsealed new blob and
/// seals it; a write would set the current time, never the sealed one).
pub fn unchanged_mtime(now: i64, then: i64) -> bool {
    now == then || now == vrift_cas::seal::sealed_mtime_ns(then)
}

/// Undoes the link of a file that changed after hashing: the blob name goes (if it is still
/// this inode) and the file gets its write bits back, as if it had never been ingested.
fn withdraw(h: &Hashed, cfg: &PlaceConfig<'_>, (kind, why): Failure) -> Failure {
    if let Err(e) = cfg
        .cas
        .withdraw_blob(&h.hash, h.st.size, h.st.dev, h.st.ino)
    {
        return (
            kind,
            format!("{why}; and its blob could not be removed: {e} (run `vrift verify --repair`)"),
        );
    }
    let _ = vrift_cas::sys::fchmod(h.file.as_fd(), h.st.mode & 0o7777);
    (kind, why)
}

/// The content is already a blob. Make the project file share it when the modes agree.
///
/// The blob is checked first ([`Cas::check_blob`]: one `stat` when sealed): a blob written
/// to after it was stored never replaces a user's good file. `None`: the blob was damaged
/// (now quarantined) or vanished, so this file, which holds what the name promises, is linked
/// in its place; asked once (`retried` after that).
fn dedup(h: &Hashed, cfg: &PlaceConfig<'_>, retried: bool) -> Option<Placed> {
    let c = cfg.counters;
    let own = |keep_own| Placed {
        entry: entry_for(h, &h.st),
        keep_own,
        replaced: false,
    };
    let rel = || vrift_cas::blob_rel(&h.hash, h.st.size);
    let blob = match cfg.cas.check_blob(&h.hash, h.st.size) {
        Ok(BlobCheck::Sound(b)) => Stat::from_rustix(&b),
        Ok(BlobCheck::Damaged) if !retried => {
            let msg = format!(
                "blob {} was damaged (written to after it was stored); quarantined and \
                 replaced by this file",
                rel()
            );
            c.issue(IssueKind::Repaired, h.item.path(cfg.root), msg);
            return None;
        }
        Ok(BlobCheck::Missing) if !retried => return None,
        Ok(_) => {
            let msg = format!("kept its own copy: blob {} keeps changing under us", rel());
            c.issue(IssueKind::OwnCopy, h.item.path(cfg.root), msg);
            count_dedup(h, c);
            return Some(own(true));
        }
        Err(e) => {
            let msg = format!("kept its own copy: blob {} cannot be checked: {e}", rel());
            c.issue(IssueKind::OwnCopy, h.item.path(cfg.root), msg);
            count_dedup(h, c);
            return Some(own(true));
        }
    };
    count_dedup(h, c);
    Some(share(h, cfg, &blob))
}

fn count_dedup(h: &Hashed, c: &Counters) {
    Counters::add(&c.dedup_hits, 1);
    Counters::add(&c.bytes_dedup, h.st.size);
}

/// A sound blob of this content exists: the project file becomes another link to it (or
/// keeps its own inode where the modes differ or no link can be made).
fn share(h: &Hashed, cfg: &PlaceConfig<'_>, blob: &Stat) -> Placed {
    let c = cfg.counters;
    let own = |keep_own| Placed {
        entry: entry_for(h, &h.st),
        keep_own,
        replaced: false,
    };
    if blob.mode & WRITE_BITS != 0 {
        // A crash between link and chmod left it writable: finish the job.
        let _ = cfg.cas.protect_blob(&h.hash, h.st.size, blob.mode);
    }
    if blob.dev == h.st.dev && blob.ino == h.st.ino {
        // Another name of the same inode (a hard link in the tree) got there first: the file
        // is the blob already, as it is now (sealed since it was hashed).
        return Placed {
            entry: entry_for(h, blob),
            keep_own: false,
            replaced: false,
        };
    }
    if blob.mode & SHARED_MODE_BITS != h.st.mode & SHARED_MODE_BITS {
        // One inode cannot carry two modes: this file keeps its own.
        Counters::add(&c.mode_conflicts, 1);
        return own(true);
    }
    if cfg.tier == Tier::Tier1 {
        // The file is about to become a symlink to the blob anyway.
        return Placed {
            entry: entry_for(h, blob),
            keep_own: false,
            replaced: false,
        };
    }
    match cfg
        .cas
        .replace_with_blob_at(&h.hash, h.st.size, h.item.dir.fd(), h.item.rel.name())
    {
        Ok(()) => {
            Counters::add(&c.link_hardlink, 1);
            Placed {
                entry: entry_for(h, blob),
                keep_own: false,
                replaced: true,
            }
        }
        Err(e) => {
            match e.raw_os_error() {
                Some(libc::EMLINK) => Counters::add(&c.fallback_emlink, 1),
                Some(libc::EXDEV) => Counters::add(&c.fallback_exdev, 1),
                // Another user's blob in a shared store (protected_hardlinks): the file
                // keeps its own inode, as expected there.
                Some(libc::EPERM) => Counters::add(&c.fallback_eperm, 1),
                _ => c.issue(
                    IssueKind::OwnCopy,
                    h.item.path(cfg.root),
                    format!("kept its own copy: {e}"),
                ),
            }
            own(false)
        }
    }
}

/// The content goes in as a copy (no link possible): made from the descriptor that was
/// hashed and re-hashed as it is written (`Cas::copy_in_fd`), never from the path, which may
/// name another file by now. The project file is left as it is.
fn copy_in(h: &Hashed, cfg: &PlaceConfig<'_>) -> Result<Placed, Failure> {
    let c = cfg.counters;
    // Already stored (before or while we copied): its mode may differ from ours, so this
    // file stays a file of its own.
    let stored_already = || {
        Counters::add(&c.dedup_hits, 1);
        Counters::add(&c.bytes_dedup, h.st.size);
        Placed {
            entry: entry_for(h, &h.st),
            keep_own: true,
            replaced: false,
        }
    };
    if let Ok(BlobCheck::Sound(_)) = cfg.cas.check_blob(&h.hash, h.st.size) {
        return Ok(stored_already());
    }
    // A file someone is still writing is not stored, whichever way it would enter.
    if let Lease::Writer = Lease::take(h.file.as_fd()) {
        return Err((
            IssueKind::Busy,
            "open for writing by another process; not stored, left in place".into(),
        ));
    }
    let path = h.item.path(cfg.root);
    let kind = cfg
        .cas
        .copy_in_fd(h.file.as_fd(), &path, &h.hash, h.st.size, h.st.mode)
        .map_err(|e| {
            if is_store_failure(e.raw_os_error()) {
                Counters::add(&c.store_failures, 1);
            }
            (
                IssueKind::NotStored,
                format!("cannot copy into store: {}", e.reason()),
            )
        })?;
    match kind {
        CopyKind::Reflink => Counters::add(&c.link_reflink, 1),
        CopyKind::Copy => Counters::add(&c.link_copy, 1),
        CopyKind::Existed => return Ok(stored_already()),
    }
    Counters::add(&c.blobs_new, 1);
    Counters::add(&c.bytes_new, h.st.size);
    Ok(Placed {
        entry: entry_for(h, &h.st),
        keep_own: false,
        replaced: false,
    })
}

/// Errors that say the store, not the file, is the problem: it is full, read-only or failing.
/// Such an ingest fails as a whole (no manifest published), unlike one with a bad file.
pub fn is_store_failure(errno: Option<i32>) -> bool {
    matches!(
        errno,
        Some(libc::ENOSPC | libc::EDQUOT | libc::EROFS | libc::EIO)
    )
}

/// Tier1: the source file becomes a symlink to its blob, swapped in atomically by rename.
fn replace_with_symlink(cas: &Cas, h: &Hashed) -> io::Result<()> {
    let blob = cas.blob_path(&h.hash, h.st.size);
    symlink_over_at(&blob, h.item.dir.fd(), h.item.rel.name())
}

/// Atomically puts a symlink to `target` at `path` (temp name beside it, then rename).
pub fn symlink_over(target: &Path, path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = crate::item::SourceDir::open(parent)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let name = vrift_cas::sys::cbytes(name.as_encoded_bytes())?;
    symlink_over_at(target, dir.fd(), &name)
}

/// [`symlink_over`] for the entry `name` of the open directory `dir`.
pub fn symlink_over_at(
    target: &Path,
    dir: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::CStr,
) -> io::Result<()> {
    let tmp = vrift_cas::store::sibling_temp_name(unique() | 1 << 63);
    rustix::fs::symlinkat(target, dir, tmp.as_c_str())?;
    let d = dir;
    vrift_cas::sys::renameat(d, &tmp, d, name).inspect_err(|_| {
        let _ = vrift_cas::sys::unlinkat(d, &tmp);
    })
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
