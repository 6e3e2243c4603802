//! Stage 1: walk the source tree in parallel, one `lstat` per entry.
//!
//! Uses the `ignore` crate's parallel walker with every filter of its own turned off (it
//! would otherwise skip hidden and gitignored files, which npm packages rely on). Each walker
//! thread classifies what it sees: directories and symlinks are finished entries, unchanged
//! files (re-ingest) are finished entries, other regular files go to the hash stage. Entries
//! travel in batches so channel overhead is paid per hundred files, not per file.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use flume::Sender;
use ignore::{ParallelVisitor, ParallelVisitorBuilder, WalkBuilder, WalkState};
use vrift_manifest::{EntryInput, Kind};

use crate::filter::{Filter, Verdict};
use crate::reingest::Previous;
use crate::report::Counters;

/// Entries per message between stages.
pub const BATCH: usize = 128;

/// What one `lstat` told us about a file; enough to re-ingest without reading it.
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
        Stat {
            dev: m.dev(),
            ino: m.ino(),
            mode: m.mode(),
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            nlink: m.nlink(),
        }
    }

    pub fn from_libc(st: &libc::stat) -> Stat {
        Stat {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            size: st.st_size as u64,
            mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec,
            nlink: st.st_nlink,
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
}

/// A regular file that must be read and hashed.
#[derive(Debug)]
pub struct FileItem {
    pub path: PathBuf,
    pub rel: Vec<u8>,
    pub st: Stat,
}

/// Where walked entries go.
pub struct WalkSinks {
    pub to_hash: Sender<Vec<FileItem>>,
    pub done: Sender<Vec<EntryInput>>,
}

pub struct WalkConfig<'a> {
    /// Directory walked (or the single file ingested).
    pub start: &'a Path,
    /// Directory manifest paths are relative to (the start, or a single file's parent).
    pub root: &'a Path,
    pub threads: usize,
    pub filter: &'a Filter,
    pub previous: Option<&'a Previous>,
    /// The store's blob directory: a symlink into it is a tier1 file, not a symlink.
    pub blob_dir: &'a Path,
    pub counters: &'a Counters,
    pub record_excluded: bool,
}

/// Runs the walk to completion on `threads` threads; returns when every entry was handed on.
pub fn walk(cfg: &WalkConfig<'_>, sinks: WalkSinks) {
    let walker = WalkBuilder::new(cfg.start)
        .standard_filters(false)
        .hidden(false)
        .parents(false)
        .ignore(false)
        .git_ignore(false)
        .git_global(false)
        .git_exclude(false)
        .require_git(false)
        .follow_links(false)
        .threads(cfg.threads)
        .build_parallel();
    let mut builder = Builder { cfg, sinks: &sinks };
    walker.visit(&mut builder);
}

struct Builder<'a, 'b> {
    cfg: &'a WalkConfig<'b>,
    sinks: &'a WalkSinks,
}

impl<'s, 'a, 'b> ParallelVisitorBuilder<'s> for Builder<'a, 'b>
where
    'a: 's,
{
    fn build(&mut self) -> Box<dyn ParallelVisitor + 's> {
        Box::new(Visitor {
            cfg: self.cfg,
            sinks: self.sinks,
            files: Vec::with_capacity(BATCH),
            done: Vec::with_capacity(BATCH),
            busy_ns: 0,
        })
    }
}

struct Visitor<'a, 'b> {
    cfg: &'a WalkConfig<'b>,
    sinks: &'a WalkSinks,
    files: Vec<FileItem>,
    done: Vec<EntryInput>,
    busy_ns: u64,
}

impl Visitor<'_, '_> {
    fn flush_files(&mut self) {
        if !self.files.is_empty() {
            let batch = std::mem::replace(&mut self.files, Vec::with_capacity(BATCH));
            Counters::add(&self.cfg.counters.queue_hash, batch.len() as u64);
            // The receiver only disappears when the run is being torn down.
            let _ = self.sinks.to_hash.send(batch);
        }
    }

    fn flush_done(&mut self) {
        if !self.done.is_empty() {
            let batch = std::mem::replace(&mut self.done, Vec::with_capacity(BATCH));
            Counters::add(&self.cfg.counters.queue_collect, batch.len() as u64);
            let _ = self.sinks.done.send(batch);
        }
    }

    fn rel_of<'p>(&self, path: &'p Path) -> &'p [u8] {
        let root = self.cfg.root.as_os_str().as_bytes();
        let p = path.as_os_str().as_bytes();
        let rest = p.strip_prefix(root).unwrap_or(p);
        rest.strip_prefix(b"/").unwrap_or(rest)
    }

    fn handle(&mut self, entry: ignore::DirEntry) -> WalkState {
        let c = self.cfg.counters;
        let path = entry.path();
        let rel = self.rel_of(path).to_vec();
        let name = if rel.is_empty() {
            &b""[..]
        } else {
            path.file_name().map(|n| n.as_bytes()).unwrap_or(b"")
        };
        let Some(ft) = entry.file_type() else {
            return WalkState::Continue;
        };
        Counters::add(&c.walked, 1);
        let is_dir = ft.is_dir();
        if !rel.is_empty() {
            match self.cfg.filter.check(&rel, name, is_dir) {
                Verdict::Keep => {}
                Verdict::Ignore => {
                    return if is_dir {
                        WalkState::Skip
                    } else {
                        WalkState::Continue
                    };
                }
                Verdict::Exclude => {
                    if !is_dir {
                        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                        Counters::add(&c.bytes_excluded, size);
                    }
                    c.exclude(path.to_path_buf(), self.cfg.record_excluded);
                    return if is_dir {
                        WalkState::Skip
                    } else {
                        WalkState::Continue
                    };
                }
            }
        }
        let md = match entry.metadata() {
            Ok(m) => m,
            Err(e) => {
                c.error(path, format!("cannot stat: {}", io_reason(&e)));
                return WalkState::Continue;
            }
        };
        let st = Stat::from_metadata(&md);
        if is_dir {
            Counters::add(&c.dirs, 1);
            self.done.push(EntryInput {
                path: rel,
                kind: Kind::Dir,
                mode: st.mode & 0o7777,
                size: 0,
                mtime_ns: st.mtime_ns,
                hash: [0; 32],
                target: Vec::new(),
                dev: st.dev,
                ino: st.ino,
                cache_mtime_ns: st.mtime_ns,
            });
        } else if ft.is_symlink() {
            let target = match std::fs::read_link(path) {
                Ok(t) => t.into_os_string().into_encoded_bytes(),
                Err(e) => {
                    c.error(path, format!("cannot read symlink: {e}"));
                    return WalkState::Continue;
                }
            };
            // A tier1 tree: the file was replaced by a symlink to its blob last time.
            let tier1 = self
                .cfg
                .previous
                .and_then(|p| p.tier1_unchanged(&rel, &target))
                .or_else(|| tier1_file(self.cfg.blob_dir, &rel, &target, &st));
            if let Some(prev) = tier1 {
                Counters::add(&c.files, 1);
                Counters::add(&c.bytes, prev.size);
                Counters::add(&c.skipped, 1);
                self.done.push(prev);
            } else {
                if std::fs::metadata(path).is_err() {
                    c.warn(
                        path,
                        format!("dangling symlink to {}", String::from_utf8_lossy(&target)),
                    );
                }
                Counters::add(&c.symlinks, 1);
                self.done.push(EntryInput {
                    path: rel,
                    kind: Kind::Symlink,
                    mode: st.mode & 0o7777,
                    size: st.size,
                    mtime_ns: st.mtime_ns,
                    hash: [0; 32],
                    target,
                    dev: st.dev,
                    ino: st.ino,
                    cache_mtime_ns: st.mtime_ns,
                });
            }
        } else if ft.is_file() {
            Counters::add(&c.files, 1);
            Counters::add(&c.bytes, st.size);
            if let Some(prev) = self.cfg.previous.and_then(|p| p.unchanged(&rel, &st)) {
                Counters::add(&c.skipped, 1);
                Counters::add(&c.bytes_skipped, st.size);
                self.done.push(prev);
            } else {
                self.files.push(FileItem {
                    path: path.to_path_buf(),
                    rel,
                    st,
                });
                if self.files.len() >= BATCH {
                    self.flush_files();
                }
            }
        } else {
            let what = if ft.is_fifo() {
                "fifo"
            } else if ft.is_socket() {
                "socket"
            } else if ft.is_block_device() {
                "block device"
            } else if ft.is_char_device() {
                "character device"
            } else {
                "special file"
            };
            Counters::add(&c.specials, 1);
            c.warn(path, format!("skipped {what}"));
        }
        if self.done.len() >= BATCH {
            self.flush_done();
        }
        WalkState::Continue
    }
}

impl ParallelVisitor for Visitor<'_, '_> {
    fn visit(&mut self, entry: Result<ignore::DirEntry, ignore::Error>) -> WalkState {
        let t = Instant::now();
        let state = match entry {
            Ok(e) => self.handle(e),
            Err(err) => {
                let (path, msg) = split_walk_error(&err);
                self.cfg
                    .counters
                    .error(path.unwrap_or_else(|| self.cfg.start.to_path_buf()), msg);
                WalkState::Continue
            }
        };
        self.busy_ns += t.elapsed().as_nanos() as u64;
        state
    }
}

impl Drop for Visitor<'_, '_> {
    fn drop(&mut self) {
        self.flush_files();
        self.flush_done();
        Counters::add(&self.cfg.counters.walk_ns, self.busy_ns);
    }
}

fn io_reason(e: &ignore::Error) -> String {
    match e.io_error() {
        Some(io) => io.to_string(),
        None => e.to_string(),
    }
}

/// Pulls the path out of the walker's error so the message names it the way ours do.
fn split_walk_error(err: &ignore::Error) -> (Option<PathBuf>, String) {
    match err {
        ignore::Error::WithPath { path, err } => (Some(path.clone()), split_walk_error(err).1),
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            split_walk_error(err)
        }
        ignore::Error::Loop { child, .. } => (Some(child.clone()), "symlink loop".into()),
        ignore::Error::Io(io) => (None, io.to_string()),
        other => (None, other.to_string()),
    }
}

/// Relative path bytes to an `OsStr` (for joining onto a root).
pub fn rel_os(rel: &[u8]) -> &OsStr {
    OsStr::from_bytes(rel)
}

/// A symlink to a blob of this store stands for the file tier1 replaced: rebuild its entry
/// from the blob's name (hash, size) and mode, with the owner's write bit the blob lost.
fn tier1_file(blob_dir: &Path, rel: &[u8], target: &[u8], link: &Stat) -> Option<EntryInput> {
    let rest = target.strip_prefix(blob_dir.as_os_str().as_bytes())?;
    let name = rest.rsplit(|&b| b == b'/').next()?;
    let (hash, size) = vrift_cas::parse_blob_name(name)?;
    let md = std::fs::metadata(OsStr::from_bytes(target)).ok()?;
    let blob = Stat::from_metadata(&md);
    if !md.is_file() || blob.size != size {
        return None;
    }
    let mode = (blob.mode & 0o7777) | 0o200;
    Some(EntryInput {
        path: rel.to_vec(),
        kind: blob.file_kind(),
        mode,
        size,
        mtime_ns: blob.mtime_ns,
        hash,
        target: Vec::new(),
        dev: link.dev,
        ino: link.ino,
        cache_mtime_ns: link.mtime_ns,
    })
}
