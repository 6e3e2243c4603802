//! Stage 4: put each hashed file's content into the store and decide what stays at its path.
//!
//! Solid mode: hard-link the hashed inode in as a new blob; if the blob already exists (a
//! dedup hit shows up as EEXIST: one failed syscall) atomically replace the project file by a
//! link to the existing blob so duplicates stop costing disk. Where a link cannot be made
//! (another filesystem, a full inode, no permission) the content is copied in and the
//! project file is left alone. Phantom mode only records here; the move happens after the
//! manifest is durable (see `phantom.rs`).

use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Instant;

use flume::{Receiver, Sender};
use vrift_cas::{Cas, CopyKind, WRITE_BITS};
use vrift_manifest::EntryInput;

use crate::hash::Hashed;
use crate::options::{Mode, Tier};
use crate::report::Counters;
use crate::walk::Stat;

/// Mode bits that must agree for two files to share one inode (write bits are stripped from
/// every blob anyway).
const SHARED_MODE_BITS: u32 = 0o7777 & !WRITE_BITS;

pub struct PlaceConfig<'a> {
    pub cas: &'a Cas,
    pub mode: Mode,
    pub tier: Tier,
    pub counters: &'a Counters,
}

/// Runs one place worker (thread backend) until the input channel closes.
pub fn place_stage(rx: Receiver<Vec<Hashed>>, tx: Sender<Vec<EntryInput>>, cfg: &PlaceConfig<'_>) {
    let c = cfg.counters;
    for batch in rx.iter() {
        let t = Instant::now();
        Counters::sub_queue(&c.queue_place, batch.len() as u64);
        let mut out = Vec::with_capacity(batch.len());
        for h in batch {
            if let Some(e) = place_one(h, cfg) {
                out.push(e);
            }
        }
        Counters::add(&c.place_ns, t.elapsed().as_nanos() as u64);
        Counters::add(&c.queue_collect, out.len() as u64);
        if tx.send(out).is_err() {
            return;
        }
    }
}

/// The manifest entry for a file whose on-disk identity (for re-ingest) is `disk`.
pub fn entry_for(h: &Hashed, disk: &Stat) -> EntryInput {
    EntryInput {
        path: h.item.rel.clone(),
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
pub fn place_one(h: Hashed, cfg: &PlaceConfig<'_>) -> Option<EntryInput> {
    if cfg.mode == Mode::Phantom {
        return Some(entry_for(&h, &h.st));
    }
    let linked = cfg
        .cas
        .link_in(h.file.as_fd(), &h.item.path, &h.hash, h.st.size);
    finish_link(h, linked, cfg)
}

/// Everything after the attempt to link the file in as a new blob: protecting a new blob,
/// deduplicating on EEXIST, copying where a link is impossible. Shared by both io backends.
pub fn finish_link(h: Hashed, linked: io::Result<()>, cfg: &PlaceConfig<'_>) -> Option<EntryInput> {
    let c = cfg.counters;
    let result = match linked {
        Ok(()) => {
            Counters::add(&c.blobs_new, 1);
            Counters::add(&c.bytes_new, h.st.size);
            Counters::add(&c.link_hardlink, 1);
            if h.st.mode & WRITE_BITS != 0 {
                if let Err(e) = vrift_cas::sys::fchmod(h.file.as_fd(), h.st.mode & SHARED_MODE_BITS)
                {
                    c.warn(&h.item.path, format!("blob left writable: {e}"));
                }
            }
            Ok((entry_for(&h, &h.st), false))
        }
        Err(e) => match e.raw_os_error() {
            Some(libc::EEXIST) => Ok(dedup(&h, cfg)),
            Some(libc::EXDEV) => {
                Counters::add(&c.fallback_exdev, 1);
                copy_in(&h, cfg)
            }
            Some(libc::EMLINK) => {
                Counters::add(&c.fallback_emlink, 1);
                copy_in(&h, cfg)
            }
            Some(libc::EPERM) | Some(libc::EACCES) => {
                Counters::add(&c.fallback_eperm, 1);
                copy_in(&h, cfg)
            }
            _ => Err(format!("cannot link into store: {e}")),
        },
    };
    match result {
        Ok((entry, keep_own)) => {
            if cfg.tier == Tier::Tier1 && !keep_own {
                if let Err(e) = replace_with_symlink(cfg.cas, &h) {
                    c.warn(
                        &h.item.path,
                        format!("kept as a regular file (tier1 symlink failed: {e})"),
                    );
                }
            }
            Some(entry)
        }
        Err(msg) => {
            Counters::add(&c.bytes_error, h.st.size);
            c.error(&h.item.path, msg);
            None
        }
    }
}

/// The content is already a blob. Make the project file share it when the modes agree.
/// Returns the entry and whether the file must stay a file of its own (mode differs from the
/// blob's), which also rules out the tier1 symlink.
fn dedup(h: &Hashed, cfg: &PlaceConfig<'_>) -> (EntryInput, bool) {
    let c = cfg.counters;
    Counters::add(&c.dedup_hits, 1);
    Counters::add(&c.bytes_dedup, h.st.size);
    let blob = match cfg.cas.blob_stat(&h.hash, h.st.size) {
        Ok(b) => Stat::from_libc(&b),
        Err(e) => {
            c.warn(
                &h.item.path,
                format!("blob vanished while deduplicating: {e}"),
            );
            return (entry_for(h, &h.st), true);
        }
    };
    if blob.mode & WRITE_BITS != 0 {
        // A crash between link and chmod left it writable: finish the job.
        let _ = cfg.cas.protect_blob(&h.hash, h.st.size, blob.mode);
    }
    if blob.dev == h.st.dev && blob.ino == h.st.ino {
        return (entry_for(h, &h.st), false);
    }
    if blob.mode & SHARED_MODE_BITS != h.st.mode & SHARED_MODE_BITS {
        // One inode cannot carry two modes: this file keeps its own.
        Counters::add(&c.mode_conflicts, 1);
        return (entry_for(h, &h.st), true);
    }
    if cfg.tier == Tier::Tier1 {
        // The file is about to become a symlink to the blob anyway.
        return (entry_for(h, &blob), false);
    }
    match cfg.cas.replace_with_blob(&h.hash, h.st.size, &h.item.path) {
        Ok(()) => {
            Counters::add(&c.link_hardlink, 1);
            (entry_for(h, &blob), false)
        }
        Err(e) => {
            match e.raw_os_error() {
                Some(libc::EMLINK) => Counters::add(&c.fallback_emlink, 1),
                Some(libc::EXDEV) => Counters::add(&c.fallback_exdev, 1),
                _ => c.warn(&h.item.path, format!("kept its own copy: {e}")),
            }
            (entry_for(h, &h.st), false)
        }
    }
}

fn copy_in(h: &Hashed, cfg: &PlaceConfig<'_>) -> Result<(EntryInput, bool), String> {
    let c = cfg.counters;
    if cfg.cas.has_blob(&h.hash, h.st.size) {
        Counters::add(&c.dedup_hits, 1);
        Counters::add(&c.bytes_dedup, h.st.size);
        // Its mode may differ from ours: keep the file a file of its own.
        return Ok((entry_for(h, &h.st), true));
    }
    match cfg.cas.copy_in(&h.item.path, &h.hash, h.st.size, h.st.mode) {
        Ok(kind) => {
            Counters::add(&c.blobs_new, 1);
            Counters::add(&c.bytes_new, h.st.size);
            match kind {
                CopyKind::Reflink => Counters::add(&c.link_reflink, 1),
                CopyKind::Copy => Counters::add(&c.link_copy, 1),
            }
            Ok((entry_for(h, &h.st), false))
        }
        Err(e) => Err(format!("cannot copy into store: {}", e.reason())),
    }
}

/// Tier1: the source file becomes a symlink to its blob, swapped in atomically by rename.
fn replace_with_symlink(cas: &Cas, h: &Hashed) -> io::Result<()> {
    let blob = cas.blob_path(&h.hash, h.st.size);
    symlink_over(&blob, &h.item.path)
}

/// Atomically puts a symlink to `target` at `path` (temp name beside it, then rename).
pub fn symlink_over(target: &Path, path: &Path) -> io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let mut name = vrift_cas::SIBLING_TEMP_PREFIX.to_vec();
    name.extend_from_slice(format!("{}-l-{}", vrift_cas::store::pid(), unique()).as_bytes());
    let tmp = parent.join(std::ffi::OsStr::from_bytes(&name));
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
