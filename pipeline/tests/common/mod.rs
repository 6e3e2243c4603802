//! What the pipeline's integration tests compare manifests by.
#![allow(dead_code)] // each test file uses a different subset

use std::collections::BTreeMap;

use vrift_manifest::Manifest;

/// Path → (kind, mode, size, mtime of non-directories, hash, symlink target).
pub type Seen = BTreeMap<Vec<u8>, (u8, u32, u64, i64, [u8; 32], Vec<u8>)>;

/// A manifest's entries as [`Seen`].
pub fn entries(m: &Manifest) -> Seen {
    m.iter()
        .map(|e| {
            (
                e.path().to_vec(),
                (
                    e.kind() as u8,
                    e.mode(),
                    e.size(),
                    // A directory's mtime moves when ingest replaces a duplicate in it, at
                    // whatever moment that happened: not part of the comparison.
                    if e.is_dir() { 0 } else { e.mtime_ns() },
                    *e.hash(),
                    e.target().to_vec(),
                ),
            )
        })
        .collect()
}
