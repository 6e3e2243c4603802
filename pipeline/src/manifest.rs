//! Stage 5: collect every finished entry, order them, and write the manifest atomically.
//!
//! A warm re-ingest that finds nothing changed leaves the previous file untouched: rewriting
//! and fsyncing an identical 10 MB manifest would cost more than the whole walk.

use std::path::Path;
use std::time::Instant;

use flume::Receiver;
use vrift_manifest::order::cmp_paths;
use vrift_manifest::{EntryInput, ManifestBuilder};

use crate::error::PipelineError;
use crate::reingest::Previous;
use crate::report::Counters;

/// Drains the collect channel until every producer has hung up.
pub fn collect(rx: Receiver<Vec<EntryInput>>, counters: &Counters) -> Vec<EntryInput> {
    let mut all = Vec::new();
    for batch in rx.iter() {
        Counters::sub_queue(&counters.queue_collect, batch.len() as u64);
        all.extend(batch);
    }
    all
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

/// Writes the manifest unless it would be identical to `previous`. Returns whether it wrote.
pub fn write(
    mut entries: Vec<EntryInput>,
    root: &Path,
    flags: u32,
    output: &Path,
    previous: Option<&Previous>,
    counters: &Counters,
) -> Result<bool, PipelineError> {
    use std::os::unix::ffi::OsStrExt;
    let t = Instant::now();
    sort(&mut entries);
    if previous.is_some_and(|p| same_as_previous(&entries, p, flags)) {
        Counters::add(&counters.manifest_ns, t.elapsed().as_nanos() as u64);
        return Ok(false);
    }
    let mut b = ManifestBuilder::with_capacity(root.as_os_str().as_bytes(), entries.len());
    b.set_flags(flags);
    for e in entries {
        b.push(e);
    }
    b.write_atomic(output)?;
    Counters::add(&counters.manifest_ns, t.elapsed().as_nanos() as u64);
    Ok(true)
}
