//! Enumerating the blobs actually present in a store (status, gc, verify, doctor).
//!
//! Walks `blake3/ab/cd/` with plain `read_dir`; anything whose name does not parse as a blob
//! is reported as foreign (temp files of a crashed copy, files a user dropped there) and is
//! never deleted by gc.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

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

/// Lists every blob in the store.
pub fn scan(cas: &Cas) -> Result<Scan> {
    let mut out = Scan::default();
    let top = cas.blob_dir();
    for a in read_sorted(top)? {
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
                    Some((hash, size)) if md.is_file() => out.blobs.push(BlobInfo {
                        hash,
                        size,
                        disk_bytes: md.blocks() * 512,
                        nlink: md.nlink(),
                        mode: md.mode(),
                        ctime: md.ctime(),
                    }),
                    _ => out.foreign.push(f.path()),
                }
            }
        }
    }
    Ok(out)
}

fn is_hex2(n: &[u8]) -> bool {
    n.len() == 2
        && n.iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

fn read_sorted(dir: &std::path::Path) -> Result<Vec<fs::DirEntry>> {
    let mut v: Vec<fs::DirEntry> = fs::read_dir(dir)
        .map_err(|e| CasError::io(dir, e))?
        .filter_map(|e| e.ok())
        .collect();
    v.sort_by_key(|e| e.file_name());
    Ok(v)
}
