//! What crosses the stages: one file found by the walk ([`FileItem`]), the same file hashed
//! and still open ([`Hashed`]), and what reaches the manifest for each entry ([`Done`]), with
//! the small types they carry ([`Stat`], [`RelPath`], [`SourceDir`]).
//!
//! They live here, not in the stage that makes them, so the stages depend on this module and
//! not on each other: walk → hash → place → manifest each import only what they receive.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustix::fs::{FileType, Mode, OFlags};
use vrift_manifest::{EntryInput, Hash, Kind};

use crate::filter::Inspect;

/// A file of this name makes the hash stage panic, in this crate's tests only (a stage that
/// dies mid-run).
#[cfg(test)]
pub(crate) const TEST_PANIC_NAME: &[u8] = b"vrift-test-panic-in-hash";

/// Entries per message between stages.
pub const BATCH: usize = 128;

/// What one `stat` told us about a file; enough to re-ingest without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub nlink: u64,
}

impl Stat {
    pub fn from_metadata(m: &std::fs::Metadata) -> Stat {
        use std::os::unix::fs::MetadataExt;
        Stat {
            dev: m.dev(),
            ino: m.ino(),
            mode: m.mode(),
            size: m.size(),
            mtime_ns: mtime_ns(m.mtime(), m.mtime_nsec()),
            nlink: m.nlink(),
        }
    }

    #[allow(clippy::unnecessary_cast)] // c_long and friends differ in width across targets
    pub fn from_rustix(st: &rustix::fs::Stat) -> Stat {
        Stat {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            size: st.st_size as u64,
            mtime_ns: mtime_ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
            #[allow(clippy::useless_conversion)] // u32 on some targets
            nlink: u64::from(st.st_nlink),
        }
    }

    /// Files with any exec bit are their own kind, so `.bin` scripts stay runnable.
    pub fn file_kind(&self) -> Kind {
        if self.mode & 0o111 != 0 {
            Kind::Executable
        } else {
            Kind::File
        }
    }

    pub(crate) fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode)
    }
}

/// Seconds and nanoseconds as one count of nanoseconds since the epoch, saturating: a file
/// dated beyond the year 2262 (ext4 allows it) gets the largest time, not a wrapped one.
pub fn mtime_ns(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// An open directory of the source tree, shared by the entries found in it.
#[derive(Debug)]
pub struct SourceDir {
    fd: OwnedFd,
    /// Its path relative to the root.
    rel: Vec<u8>,
    /// A later stage replaced an entry in it (so its mtime moved after the walk saw it).
    touched: AtomicBool,
}

impl SourceDir {
    /// Opens `path` as a directory handle for `*at` calls (phantom mode, tier1 symlinks).
    pub fn open(path: &Path) -> std::io::Result<SourceDir> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(SourceDir::new(fd, Vec::new()))
    }

    pub(crate) fn new(fd: OwnedFd, rel: Vec<u8>) -> SourceDir {
        SourceDir {
            fd,
            rel,
            touched: AtomicBool::new(false),
        }
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Records that an entry of this directory was replaced; returns its relative path the
    /// first time only, so each directory is re-read once at the end.
    pub fn touch(&self) -> Option<&[u8]> {
        (!self.touched.swap(true, Ordering::Relaxed)).then_some(self.rel.as_slice())
    }
}

/// A path relative to the ingest root, kept NUL-terminated so its last component can be
/// handed to `*at` system calls without another allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelPath {
    buf: Vec<u8>,
    name_at: usize,
}

impl RelPath {
    /// The root itself (`""`).
    pub fn root() -> RelPath {
        RelPath {
            buf: vec![0],
            name_at: 0,
        }
    }

    /// `parent/name` (or `name` under the root). `name` must not contain NUL or `/`.
    pub fn child(parent: &[u8], name: &[u8]) -> RelPath {
        let mut buf = Vec::with_capacity(parent.len() + name.len() + 2);
        if !parent.is_empty() {
            buf.extend_from_slice(parent);
            buf.push(b'/');
        }
        let name_at = buf.len();
        buf.extend_from_slice(name);
        buf.push(0);
        RelPath { buf, name_at }
    }

    /// From a relative path as stored in a manifest (no NUL bytes, per its validation).
    pub fn from_rel(rel: &[u8]) -> RelPath {
        let name_at = rel.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
        let mut buf = Vec::with_capacity(rel.len() + 1);
        buf.extend_from_slice(rel);
        buf.push(0);
        RelPath { buf, name_at }
    }

    /// The relative path, without the terminator.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.buf.len() - 1]
    }

    /// The last component, NUL-terminated, for `*at` calls relative to the parent directory.
    pub fn name(&self) -> &CStr {
        // The buffer holds exactly one NUL, at its end (see the constructors).
        CStr::from_bytes_with_nul(&self.buf[self.name_at..]).unwrap_or(c"")
    }

    /// The last component's bytes.
    pub fn name_bytes(&self) -> &[u8] {
        &self.buf[self.name_at..self.buf.len() - 1]
    }

    pub fn into_vec(mut self) -> Vec<u8> {
        self.buf.pop();
        self.buf
    }

    /// Absolute path under `root`, for messages and the rare path-based fallback.
    pub fn under(&self, root: &Path) -> PathBuf {
        if self.as_bytes().is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel_os(self.as_bytes()))
        }
    }
}

/// A regular file that must be read and hashed.
#[derive(Debug)]
pub struct FileItem {
    /// The directory it was found in; every later syscall on it is relative to this.
    pub dir: Arc<SourceDir>,
    pub rel: RelPath,
    pub st: Stat,
    /// The filter could not judge it by name: the hash stage, which reads it, decides.
    pub inspect: Option<Inspect>,
}

impl FileItem {
    pub fn path(&self, root: &Path) -> PathBuf {
        self.rel.under(root)
    }
}

/// A hashed file, still open.
pub struct Hashed {
    pub item: FileItem,
    pub hash: Hash,
    pub file: File,
    /// The file's state as hashed (fresh `fstat` after reading).
    pub st: Stat,
}

/// What reaches this stage for each entry of the tree.
#[derive(Debug)]
pub enum Done {
    /// A new or changed entry.
    Entry(EntryInput),
    /// Unchanged since the previous manifest: the entry at this index there, as it is.
    Same(usize),
    /// A directory (relative path) in which a later stage replaced a file: its mtime moved
    /// after the walk saw it, so it is stat'ed again before the manifest is written (or the
    /// next re-ingest would find every such directory changed).
    Restat(Vec<u8>),
}

/// Relative path bytes to an `OsStr` (for joining onto a root).
pub fn rel_os(rel: &[u8]) -> &std::ffi::OsStr {
    std::ffi::OsStr::from_bytes(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_paths_keep_their_name_nul_terminated() {
        let r = RelPath::child(b"a/b", b"c.txt");
        assert_eq!(r.as_bytes(), b"a/b/c.txt");
        assert_eq!(r.name().to_bytes(), b"c.txt");
        assert_eq!(r.name_bytes(), b"c.txt");
        let top = RelPath::child(b"", b"x");
        assert_eq!(top.as_bytes(), b"x");
        assert_eq!(top.name().to_bytes(), b"x");
        assert_eq!(RelPath::from_rel(b"a/b/c.txt"), r);
        assert_eq!(RelPath::from_rel(b"x"), top);
        assert_eq!(RelPath::root().as_bytes(), b"");
        assert_eq!(r.clone().into_vec(), b"a/b/c.txt".to_vec());
        assert_eq!(r.under(Path::new("/r")), Path::new("/r/a/b/c.txt"));
    }
}
