//! Enumerating the blobs actually present in a store (status, gc, verify, doctor).
//!
//! Walks `blake3/ab/cd/` with plain `read_dir`; anything whose name does not parse as a blob
//! is reported as foreign (temp files of a crashed copy, files a user dropped there) and is
//! never deleted by gc.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use vrift_manifest::Hash;

use crate::error::{CasError, Result};
use crate::layout::parse_blob_name;
use crate::store::Cas;

/// One blob on disk.
#[derive(Debug, Clone)]
pub struct BlobInfo {
    pub hash: Hash,
    pub size: u64,
    /// Bytes the blob really occupies (`st_blocks * 512`), counted once however many links.
    pub disk_bytes: u64,
    pub nlink: u64,
    pub mode: u32,
    /// Last link/chmod of the inode: when the blob last entered or was re-linked into a
    /// tree. The gc age guard uses it (mtime is the source file's, often decades old).
    pub ctime: i64,
}

#[derive(Debug, Default)]
pub struct Scan {
    pub blobs: Vec<BlobInfo>,
    pub foreign: Vec<PathBuf>,
}

impl Scan {
    pub fn disk_bytes(&self) -> u64 {
        self.blobs.iter().map(|b| b.disk_bytes).sum()
    }

    pub fn content_bytes(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }
}

/// How far a scan has got, for a progress line: top-level shard directories (`ab/`) done of
/// all, and blobs seen. Relaxed atomics, read by another thread.
#[derive(Default, Debug)]
pub struct ScanProgress {
    pub dirs_done: AtomicU64,
    pub dirs_total: AtomicU64,
    pub blobs: AtomicU64,
}

impl ScanProgress {
    /// Percent of the top-level directories done (0 before the scan knows how many).
    pub fn percent(&self) -> u64 {
        let total = self.dirs_total.load(Relaxed);
        (self.dirs_done.load(Relaxed) * 100)
            .checked_div(total)
            .unwrap_or(0)
    }
}

/// Lists every blob in the store.
pub fn scan(cas: &Cas) -> Result<Scan> {
    scan_counted(cas, &ScanProgress::default())
}

/// [`scan`], counting into `progress` as it goes.
pub fn scan_counted(cas: &Cas, progress: &ScanProgress) -> Result<Scan> {
    let mut out = Scan::default();
    let top = cas.blob_dir();
    let tops = read_sorted(top)?;
    progress.dirs_total.store(tops.len() as u64, Relaxed);
    for a in tops {
        let _done = DoneOnDrop(&progress.dirs_done);
        let Ok(ft) = a.file_type() else { continue };
        if !ft.is_dir() || !is_hex2(a.file_name().as_bytes()) {
            out.foreign.push(a.path());
            continue;
        }
        for b in read_sorted(&a.path())? {
            let Ok(ft) = b.file_type() else { continue };
            if !ft.is_dir() || !is_hex2(b.file_name().as_bytes()) {
                out.foreign.push(b.path());
                continue;
            }
            for f in read_sorted(&b.path())? {
                let name = f.file_name();
                let parsed = parse_blob_name(name.as_bytes()).filter(|(h, _)| {
                    let hex = vrift_manifest::hex(h);
                    hex.as_bytes()[0..2] == *a.file_name().as_bytes()
                        && hex.as_bytes()[2..4] == *b.file_name().as_bytes()
                });
                let md = match f.metadata() {
                    Ok(m) => m,
                    Err(_) => continue, // removed while we looked (a concurrent gc)
                };
                match parsed {
                    Some((hash, size)) if md.is_file() => {
                        progress.blobs.fetch_add(1, Relaxed);
                        out.blobs.push(BlobInfo {
                            hash,
                            size,
                            disk_bytes: md.blocks() * 512,
                            nlink: md.nlink(),
                            mode: md.mode(),
                            ctime: md.ctime(),
                        });
                    }
                    _ => out.foreign.push(f.path()),
                }
            }
        }
    }
    Ok(out)
}

/// Counts one top-level directory done however its loop iteration ends (`continue`).
struct DoneOnDrop<'a>(&'a AtomicU64);

impl Drop for DoneOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Relaxed);
    }
}

fn is_hex2(n: &[u8]) -> bool {
    n.len() == 2
        && n.iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

fn read_sorted(dir: &std::path::Path) -> Result<Vec<fs::DirEntry>> {
    let mut v: Vec<fs::DirEntry> = fs::read_dir(dir)
        .map_err(|e| CasError::io(dir, e))?
        .filter_map(std::result::Result::ok)
        .collect();
    v.sort_by_key(std::fs::DirEntry::file_name);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counted_scan_ends_at_every_directory_and_blob() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        for i in 0..40u32 {
            let data = format!("blob {i}");
            let h = *blake3::hash(data.as_bytes()).as_bytes();
            cas.insert_bytes(&h, data.len() as u64, data.as_bytes(), 0o644)
                .unwrap();
        }
        // Something that is not a blob is counted as foreign, not as a blob.
        std::fs::write(cas.blob_dir().join("stray"), b"x").unwrap();
        let p = ScanProgress::default();
        assert_eq!(p.percent(), 0);
        let s = scan_counted(&cas, &p).unwrap();
        assert_eq!(s.blobs.len(), 40);
        assert_eq!(p.blobs.load(Relaxed), 40);
        assert_eq!(
            p.dirs_done.load(Relaxed),
            p.dirs_total.load(Relaxed),
            "every top directory (and the stray file) counted once"
        );
        assert_eq!(p.percent(), 100);
    }
}
