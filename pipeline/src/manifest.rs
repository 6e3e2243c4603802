//! Stage 5: collect every finished entry, order them, and write the manifest atomically.
//!
//! A warm re-ingest that finds nothing changed leaves the previous file untouched: rewriting
//! and fsyncing an identical 10 MB manifest would cost more than the whole walk.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use flume::Receiver;
use vrift_manifest::order::cmp_paths;
use vrift_manifest::{EntryInput, Kind, ManifestBuilder};

use crate::error::PipelineError;
use crate::item::Done;
use crate::reingest::Previous;
use crate::report::Counters;

/// Everything the stages finished, as it arrived.
#[derive(Debug, Default)]
pub struct Collected {
    entries: Vec<EntryInput>,
    same: Vec<u32>,
    restat: Vec<Vec<u8>>,
}

impl Collected {
    /// True when the walk found exactly the previous manifest again: every entry unchanged,
    /// none added, none gone (each path is walked once, so the counts tell).
    pub fn is_unchanged(&self, previous: Option<&Previous>, flags: u32) -> bool {
        previous.is_some_and(|p| {
            let m = p.manifest();
            self.entries.is_empty()
                && self.restat.is_empty()
                && self.same.len() == m.len()
                && m.flags() == flags
        })
    }

    /// Every entry as an owned value (unchanged ones copied out of the previous manifest),
    /// directories that changed under the later stages stat'ed again under `root`.
    pub fn into_entries(self, previous: Option<&Previous>, root: &Path) -> Vec<EntryInput> {
        let mut all = self.entries;
        if let Some(p) = previous {
            let m = p.manifest();
            all.reserve(self.same.len());
            all.extend(
                self.same
                    .iter()
                    .filter_map(|&i| m.entry(i as usize))
                    .map(|e| e.to_input()),
            );
        }
        if !self.restat.is_empty() {
            // Directories whose files solid mode replaced by links to blobs: their mtime moved
            // only because of vrift. Put back what the walk saw (and recorded), so an ingest
            // leaves directory times as they were. Reached without following a symlink, and
            // only if still the directory that was walked.
            let wanted: HashSet<&[u8]> = self.restat.iter().map(Vec::as_slice).collect();
            let Ok(root_fd) = crate::dirs::open_root(root) else {
                return all;
            };
            let mut chain = crate::dirs::DirChain::new(root_fd);
            for e in all.iter().filter(|e| e.kind == Kind::Dir) {
                if wanted.contains(e.path.as_slice()) {
                    restore_dir_mtime(&mut chain, e);
                }
            }
        }
        all
    }
}

/// Drains the collect channel until every producer has hung up.
pub fn collect(rx: Receiver<Vec<Done>>, counters: &Counters) -> Collected {
    let mut all = Collected::default();
    for batch in &rx {
        Counters::sub_queue(&counters.queue_collect, batch.len() as u64);
        for d in batch {
            match d {
                Done::Entry(e) => all.entries.push(e),
                Done::Same(i) => all.same.push(i as u32),
                Done::Restat(rel) => all.restat.push(rel),
            }
        }
    }
    all
}

fn restore_dir_mtime(chain: &mut crate::dirs::DirChain, e: &EntryInput) {
    use rustix::fs::{Timespec, Timestamps, UTIME_OMIT};
    let fd = chain.open_readable(&e.path);
    let Ok(fd) = fd else { return };
    let Ok(now) = rustix::fs::fstat(&fd) else {
        return;
    };
    if now.st_dev != e.dev || now.st_ino != e.ino {
        return;
    }
    let t = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: e.mtime_ns.div_euclid(1_000_000_000),
            tv_nsec: e.mtime_ns.rem_euclid(1_000_000_000),
        },
    };
    let _ = rustix::fs::futimens(&fd, &t);
}

/// Sorts entries into manifest order (component-wise by path).
pub fn sort(entries: &mut [EntryInput]) {
    entries.sort_unstable_by(|a, b| cmp_paths(&a.path, &b.path));
}

/// Phantom trees shrink on disk as they are ingested: entries of the previous manifest whose
/// files were moved into the store (so are absent now) stay in the view.
pub fn keep_phantom_entries(entries: &mut Vec<EntryInput>, previous: &Previous) {
    sort(entries);
    let mut extra = Vec::new();
    for e in previous.manifest().iter() {
        let present = entries
            .binary_search_by(|x| cmp_paths(&x.path, e.path()))
            .is_ok();
        if !present {
            extra.push(e.to_input());
        }
    }
    if !extra.is_empty() {
        entries.extend(extra);
        sort(entries);
    }
}

/// A project's manifest refreshed before a run (`vrift run` after `vrift init`): a directory
/// that is gone from disk was offloaded to the store on purpose (the usual reason to use
/// vrift: `rm -rf node_modules`, served from the view), so its previous entries stay; a file
/// gone from a directory that is still there was deleted, and goes.
pub fn keep_offloaded_entries(entries: &mut Vec<EntryInput>, previous: &Previous) {
    sort(entries);
    let find = |p: &[u8], entries: &[EntryInput]| {
        entries
            .binary_search_by(|x| cmp_paths(&x.path, p))
            .ok()
            .map(|i| (entries[i].dev, entries[i].ino))
    };
    let prev = previous.manifest();
    let mut extra = Vec::new();
    for e in prev.iter() {
        if e.path().is_empty() || find(e.path(), entries).is_some() {
            continue;
        }
        let parent = vrift_manifest::order::parent(e.path()).unwrap_or_default();
        // Deleted from a directory still on disk (vrift never re-creates a directory of an
        // offloaded tree: a run's writes there go to its throwaway layer).
        let authoritative = find(parent, entries).is_some();
        if e.is_dir() || !authoritative {
            extra.push(e.to_input());
        }
    }
    if !extra.is_empty() {
        entries.extend(extra);
        sort(entries);
    }
}

/// True when `entries` (sorted) are exactly the previous manifest's entries.
pub fn same_as_previous(entries: &[EntryInput], previous: &Previous, flags: u32) -> bool {
    let m = previous.manifest();
    m.flags() == flags
        && m.len() == entries.len()
        && m.iter()
            .zip(entries)
            .all(|(old, new)| same_entry(&old, new))
}

/// Field-by-field equality without building an owned copy of the stored entry.
fn same_entry(old: &vrift_manifest::Entry<'_>, new: &EntryInput) -> bool {
    old.path() == new.path.as_slice()
        && old.kind() == new.kind
        && old.mode() == new.mode
        && old.size() == new.size
        && old.mtime_ns() == new.mtime_ns
        && (!new.kind.has_content() || old.hash() == &new.hash)
        && old.target() == new.target.as_slice()
        && old.dev() == new.dev
        && old.ino() == new.ino
        && old.cache_mtime_ns() == new.cache_mtime_ns
}

/// Serializes the manifest unless it would be identical to `previous` (`None` then): the
/// bytes are published by the caller only once the store side is done (registered), so a
/// failed ingest never leaves a new manifest behind.
pub fn build(
    mut entries: Vec<EntryInput>,
    root: &Path,
    flags: u32,
    previous: Option<&Previous>,
    counters: &Counters,
) -> Result<Option<Vec<u8>>, PipelineError> {
    use std::os::unix::ffi::OsStrExt;
    let t = Instant::now();
    sort(&mut entries);
    if previous.is_some_and(|p| same_as_previous(&entries, p, flags)) {
        Counters::add(&counters.manifest_ns, t.elapsed().as_nanos() as u64);
        return Ok(None);
    }
    let mut b = ManifestBuilder::with_capacity(root.as_os_str().as_bytes(), entries.len());
    b.set_flags(flags);
    for e in entries {
        b.push(e);
    }
    let bytes = b.to_bytes()?;
    Counters::add(&counters.manifest_ns, t.elapsed().as_nanos() as u64);
    Ok(Some(bytes))
}
