//! Stage 1: walk the source tree in parallel, one `stat` per entry, relative to open directories.
//!
//! Every directory is opened once and read with `getdents64`; its entries are `fstatat`ed by
//! name relative to that descriptor, and files travel on holding a handle on it, so the later
//! `openat`, `linkat` and `renameat` resolve one name instead of walking the whole path again
//! (on deep `node_modules` paths that walk was most of the kernel time of a warm re-ingest).
//! Directories are a shared LIFO work list: depth-first, so few are open at once.
//!
//! With a previous manifest of the same tree, each directory's entries (sorted by name) are
//! merged against that directory's children in the manifest: an unchanged entry is passed on
//! as the index of its old entry, with no lookup, allocation or read.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use flume::Sender;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir};
use vrift_manifest::{Entry, EntryInput, Kind};

use crate::filter::{Filter, Inspect, Verdict};
use crate::item::{rel_os, Done, FileItem, RelPath, SourceDir, Stat, BATCH};
use crate::reingest::Previous;
use crate::report::{Counters, IssueKind};

/// Where walked entries go.
pub struct WalkSinks {
    pub to_hash: Sender<Vec<FileItem>>,
    pub done: Sender<Vec<Done>>,
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

/// A directory waiting to be read.
struct Job {
    /// `None` for the walk's start directory (opened by path).
    parent: Option<Arc<SourceDir>>,
    rel: RelPath,
    /// Its entry in the previous manifest, if it was a directory there.
    prev: Option<usize>,
}

/// The shared work list: a stack of directories plus the number being read, so workers know
/// the walk is over when both are empty.
struct Queue {
    state: Mutex<(Vec<Job>, usize)>,
    ready: Condvar,
}

impl Queue {
    fn pop(&self, counters: &Counters) -> Option<Job> {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if counters.quitting() {
                // A stage failed: stop, and wake the others so they stop too.
                self.ready.notify_all();
                return None;
            }
            if let Some(job) = st.0.pop() {
                st.1 += 1;
                return Some(job);
            }
            if st.1 == 0 {
                self.ready.notify_all();
                return None;
            }
            st = self
                .ready
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Runs `visit` on directories until the walk is over or the run quits. `visit` reads one
    /// directory and pushes the subdirectories it found. A panic in it is caught (see
    /// [`Counters::stage`]) and every other walker woken to stop: otherwise they would wait
    /// forever for the directory the dead thread was reading.
    fn serve(&self, counters: &Counters, mut visit: impl FnMut(Job, &mut Vec<Job>)) {
        let mut found = Vec::new();
        counters.stage("walk", || {
            while let Some(job) = self.pop(counters) {
                visit(job, &mut found);
                self.finish(&mut found);
            }
        });
        if counters.quitting() {
            let _st = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.ready.notify_all();
        }
    }

    /// Hands over the subdirectories found in one directory and marks that one finished.
    fn finish(&self, found: &mut Vec<Job>) {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = found.len();
        st.0.append(found);
        st.1 -= 1;
        if n > 1 {
            self.ready.notify_all();
        } else if n == 1 || (st.1 == 0 && st.0.is_empty()) {
            // One new job, or the walk is over: wake a waiter (which wakes the rest at the end).
            self.ready.notify_one();
        }
    }
}

/// Runs the walk to completion on `threads` threads; returns when every entry was handed on.
pub fn walk(cfg: &WalkConfig<'_>, sinks: WalkSinks) {
    let mut first = Visitor::new(cfg, &sinks);
    if cfg.start != cfg.root {
        // A single file: its parent is the root, and the file is the only entry.
        first.single_file();
        return;
    }
    let queue = Queue {
        state: Mutex::new((
            vec![Job {
                parent: None,
                rel: RelPath::root(),
                prev: cfg
                    .previous
                    .and_then(|p| p.manifest().root_entry().map(|e| e.index())),
            }],
            0,
        )),
        ready: Condvar::new(),
    };
    std::thread::scope(|s| {
        for _ in 1..cfg.threads.max(1) {
            let (queue, sinks) = (&queue, &sinks);
            s.spawn(move || Visitor::new(cfg, sinks).run(queue));
        }
        first.run(&queue);
    });
}

/// One name read from a directory.
#[derive(Clone, Copy)]
struct Name {
    start: u32,
    len: u32,
    ty: FileType,
}

/// A walker thread's state: its outgoing batches and reused buffers.
struct Visitor<'a, 'b> {
    cfg: &'a WalkConfig<'b>,
    sinks: &'a WalkSinks,
    files: Vec<FileItem>,
    done: Vec<Done>,
    busy_ns: u64,
    dirent_buf: Vec<u8>,
    names: Vec<u8>,
    spans: Vec<Name>,
    subdirs: Vec<Job>,
}

impl<'a, 'b> Visitor<'a, 'b> {
    fn new(cfg: &'a WalkConfig<'b>, sinks: &'a WalkSinks) -> Self {
        Visitor {
            cfg,
            sinks,
            files: Vec::with_capacity(BATCH),
            done: Vec::with_capacity(BATCH),
            busy_ns: 0,
            dirent_buf: Vec::with_capacity(64 * 1024),
            names: Vec::new(),
            spans: Vec::new(),
            subdirs: Vec::new(),
        }
    }

    fn run(mut self, queue: &Queue) {
        queue.serve(self.cfg.counters, |job, found| {
            let t = Instant::now();
            self.read_dir(job);
            self.busy_ns += t.elapsed().as_nanos() as u64;
            found.append(&mut self.subdirs);
        });
    }

    fn path_of(&self, rel: &RelPath) -> PathBuf {
        rel.under(self.cfg.root)
    }

    fn flush_files(&mut self) {
        if !self.files.is_empty() {
            let batch = std::mem::replace(&mut self.files, Vec::with_capacity(BATCH));
            if self.cfg.counters.quitting() {
                // A stage failed: nothing more is hashed.
                return;
            }
            Counters::add(&self.cfg.counters.queue_hash, batch.len() as u64);
            // The receivers only disappear when the run is being torn down.
            let _ = self.sinks.to_hash.send(batch);
        }
    }

    fn push_done(&mut self, d: Done) {
        self.done.push(d);
        if self.done.len() >= BATCH {
            self.flush_done();
        }
    }

    fn flush_done(&mut self) {
        if !self.done.is_empty() {
            let batch = std::mem::replace(&mut self.done, Vec::with_capacity(BATCH));
            Counters::add(&self.cfg.counters.queue_collect, batch.len() as u64);
            let _ = self.sinks.done.send(batch);
        }
    }

    fn prev_entry(&self, index: Option<usize>) -> Option<Entry<'b>> {
        let p = self.cfg.previous?;
        p.manifest().entry(index?)
    }

    /// The ingest of one file named on the command line (its parent is the root).
    fn single_file(&mut self) {
        let c = self.cfg.counters;
        let name = self
            .cfg
            .start
            .file_name()
            .map(std::os::unix::ffi::OsStrExt::as_bytes)
            .unwrap_or(b"");
        let rel = RelPath::child(b"", name);
        let dir = match SourceDir::open(self.cfg.root) {
            Ok(d) => Arc::new(d),
            Err(e) => {
                c.issue(
                    IssueKind::Unreadable,
                    self.cfg.root,
                    format!("cannot open directory: {e}"),
                );
                return;
            }
        };
        let prev = self
            .cfg
            .previous
            .and_then(|p| p.manifest().lookup_index(rel.as_bytes()));
        Counters::add(&c.walked, 1);
        match self.cfg.filter.check(rel.as_bytes(), name, false) {
            Verdict::Keep => self.entry(&dir, rel, FileType::Unknown, prev, None),
            Verdict::Inspect(k) => self.entry(&dir, rel, FileType::Unknown, prev, Some(k)),
            Verdict::Ignore => {}
            Verdict::Exclude => self.exclude(&dir, rel, false),
        }
    }

    /// Reads one directory: its own entry, then every name in it.
    fn read_dir(&mut self, job: Job) {
        let c = self.cfg.counters;
        let opened = match &job.parent {
            Some(parent) => rustix::fs::openat(
                parent.fd(),
                job.rel.name(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ),
            None => rustix::fs::open(
                self.cfg.start,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            ),
        };
        let fd = match opened {
            Ok(fd) => fd,
            Err(e) => {
                c.issue(
                    IssueKind::Unreadable,
                    self.path_of(&job.rel),
                    format!("cannot open directory: {}", std::io::Error::from(e)),
                );
                return;
            }
        };
        let st = match rustix::fs::fstat(&fd) {
            Ok(st) => Stat::from_rustix(&st),
            Err(e) => {
                c.issue(
                    IssueKind::Unreadable,
                    self.path_of(&job.rel),
                    format!("cannot stat: {}", std::io::Error::from(e)),
                );
                return;
            }
        };
        let prev = self
            .prev_entry(job.prev)
            .filter(vrift_manifest::Entry::is_dir);
        Counters::add(&c.dirs, 1);
        match prev {
            Some(e) if same_meta(&e, Kind::Dir, &st, st.size) => {
                self.push_done(Done::Same(e.index()));
            }
            _ => self.push_done(Done::Entry(EntryInput {
                path: job.rel.as_bytes().to_vec(),
                kind: Kind::Dir,
                mode: st.mode & 0o7777,
                // What `stat`, `du` and `tar tv` show for it: recorded, so views show it too.
                size: st.size,
                mtime_ns: st.mtime_ns,
                hash: [0; 32],
                target: Vec::new(),
                dev: st.dev,
                ino: st.ino,
                cache_mtime_ns: st.mtime_ns,
            })),
        }
        let dir = Arc::new(SourceDir::new(fd, job.rel.as_bytes().to_vec()));
        if let Err(e) = self.read_names(&dir) {
            c.issue(
                IssueKind::Unreadable,
                self.path_of(&job.rel),
                format!("cannot read directory: {}", std::io::Error::from(e)),
            );
        }
        // Merge the sorted names with the previous manifest's children of this directory.
        let mut children = match (self.cfg.previous, prev) {
            (Some(p), Some(e)) => Some(p.manifest().children(&e).peekable()),
            _ => None,
        };
        let spans = std::mem::take(&mut self.spans);
        let names = std::mem::take(&mut self.names);
        let parent_rel = job.rel.as_bytes();
        for n in &spans {
            let name = &names[n.start as usize..(n.start + n.len) as usize];
            let mut prev_child = None;
            if let Some(it) = children.as_mut() {
                while let Some(ch) = it.peek() {
                    match ch.name().cmp(name) {
                        std::cmp::Ordering::Less => {
                            it.next();
                        }
                        std::cmp::Ordering::Equal => {
                            prev_child = it.next().map(|e| e.index());
                            break;
                        }
                        std::cmp::Ordering::Greater => break,
                    }
                }
            }
            let rel = RelPath::child(parent_rel, name);
            Counters::add(&c.walked, 1);
            let is_dir = n.ty == FileType::Directory;
            let inspect = match self.cfg.filter.check(rel.as_bytes(), name, is_dir) {
                Verdict::Keep => None,
                Verdict::Inspect(k) => Some(k),
                Verdict::Ignore => continue,
                Verdict::Exclude => {
                    self.exclude(&dir, rel, is_dir);
                    continue;
                }
            };
            if is_dir {
                self.subdirs.push(Job {
                    parent: Some(dir.clone()),
                    rel,
                    prev: prev_child,
                });
            } else {
                self.entry(&dir, rel, n.ty, prev_child, inspect);
            }
        }
        self.spans = spans;
        self.names = names;
        // Keep batches moving: a directory's files are a natural unit to hand on.
        if self.files.len() >= BATCH / 4 {
            self.flush_files();
        }
    }

    /// Fills `names`/`spans` with the directory's entries (without `.` and `..`), by name.
    fn read_names(&mut self, dir: &SourceDir) -> rustix::io::Result<()> {
        self.names.clear();
        self.spans.clear();
        let mut raw = RawDir::new(dir.fd(), self.dirent_buf.spare_capacity_mut());
        while let Some(ent) = raw.next() {
            let ent = ent?;
            let name = ent.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            self.spans.push(Name {
                start: self.names.len() as u32,
                len: name.len() as u32,
                ty: ent.file_type(),
            });
            self.names.extend_from_slice(name);
        }
        let names = &self.names;
        let key = |n: &Name| &names[n.start as usize..(n.start + n.len) as usize];
        self.spans.sort_unstable_by(|a, b| key(a).cmp(key(b)));
        Ok(())
    }

    fn exclude(&mut self, dir: &SourceDir, rel: RelPath, is_dir: bool) {
        let c = self.cfg.counters;
        if !is_dir {
            if let Ok(st) = rustix::fs::statat(dir.fd(), rel.name(), AtFlags::SYMLINK_NOFOLLOW) {
                if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile {
                    Counters::add(&c.bytes_excluded, st.st_size as u64);
                }
            }
        }
        // Always recorded: the summary lists what was left out.
        c.exclude(self.path_of(&rel), true);
    }

    /// A non-directory entry (or one whose type `getdents` did not say).
    fn entry(
        &mut self,
        dir: &Arc<SourceDir>,
        rel: RelPath,
        ty: FileType,
        prev: Option<usize>,
        inspect: Option<Inspect>,
    ) {
        let c = self.cfg.counters;
        let st = match rustix::fs::statat(dir.fd(), rel.name(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Stat::from_rustix(&st),
            Err(e) => {
                c.issue(
                    IssueKind::Unreadable,
                    self.path_of(&rel),
                    format!("cannot stat: {}", std::io::Error::from(e)),
                );
                return;
            }
        };
        let actual = st.file_type();
        if actual == FileType::Directory {
            // Only when getdents did not report a type (or it changed since): walk it.
            if ty != FileType::Directory {
                match self
                    .cfg
                    .filter
                    .check(rel.as_bytes(), rel.name_bytes(), true)
                {
                    Verdict::Keep | Verdict::Inspect(_) => {}
                    Verdict::Ignore => return,
                    Verdict::Exclude => return self.exclude(dir, rel, true),
                }
            }
            self.subdirs.push(Job {
                parent: Some(dir.clone()),
                rel,
                prev: prev.filter(|&i| self.prev_entry(Some(i)).is_some_and(|e| e.is_dir())),
            });
            return;
        }
        let prev = self.prev_entry(prev);
        match actual {
            FileType::RegularFile => {
                Counters::add(&c.files, 1);
                Counters::add(&c.bytes, st.size);
                let unchanged = match (self.cfg.previous, &prev) {
                    (Some(p), Some(e)) => p.unchanged(e, &st),
                    _ => false,
                };
                if let (true, Some(e)) = (unchanged, prev) {
                    Counters::add(&c.skipped, 1);
                    Counters::add(&c.bytes_skipped, st.size);
                    self.push_done(Done::Same(e.index()));
                } else {
                    self.files.push(FileItem {
                        dir: dir.clone(),
                        rel,
                        st,
                        inspect,
                    });
                    if self.files.len() >= BATCH {
                        self.flush_files();
                    }
                }
            }
            FileType::Symlink => self.symlink(dir, rel, &st, prev),
            other => {
                let what = match other {
                    FileType::Fifo => "fifo",
                    FileType::Socket => "socket",
                    FileType::BlockDevice => "block device",
                    FileType::CharacterDevice => "character device",
                    _ => "special file",
                };
                Counters::add(&c.specials, 1);
                c.issue(
                    IssueKind::Special,
                    self.path_of(&rel),
                    format!("skipped {what}"),
                );
            }
        }
    }

    fn symlink(&mut self, dir: &SourceDir, rel: RelPath, st: &Stat, prev: Option<Entry<'b>>) {
        let c = self.cfg.counters;
        let target = match rustix::fs::readlinkat(dir.fd(), rel.name(), Vec::new()) {
            Ok(t) => t.into_bytes(),
            Err(e) => {
                c.issue(
                    IssueKind::Unreadable,
                    self.path_of(&rel),
                    format!("cannot read symlink: {}", std::io::Error::from(e)),
                );
                return;
            }
        };
        // A tier1 tree: the file was replaced by a symlink to its blob last time.
        let tier1 = match (self.cfg.previous, &prev) {
            (Some(p), Some(e)) if p.tier1_unchanged(e, &target) => Some(Done::Same(e.index())),
            _ => tier1_file(self.cfg.blob_dir, rel.as_bytes(), &target, st).map(Done::Entry),
        };
        if let Some(done) = tier1 {
            let size = match &done {
                Done::Entry(e) => e.size,
                Done::Same(_) | Done::Restat(_) => prev.map_or(0, |e| e.size()),
            };
            Counters::add(&c.files, 1);
            Counters::add(&c.bytes, size);
            Counters::add(&c.skipped, 1);
            self.push_done(done);
            return;
        }
        // Following the link from its own directory resolves relative and absolute targets.
        if rustix::fs::statat(dir.fd(), rel.name(), AtFlags::empty()).is_err() {
            self.dangling(&rel, &target);
        }
        Counters::add(&c.symlinks, 1);
        match prev {
            Some(e)
                if e.kind() == Kind::Symlink
                    && e.target() == target
                    && same_meta(&e, Kind::Symlink, st, st.size) =>
            {
                self.push_done(Done::Same(e.index()));
            }
            _ => self.push_done(Done::Entry(EntryInput {
                path: rel.into_vec(),
                kind: Kind::Symlink,
                mode: st.mode & 0o7777,
                size: st.size,
                mtime_ns: st.mtime_ns,
                hash: [0; 32],
                target,
                dev: st.dev,
                ino: st.ino,
                cache_mtime_ns: st.mtime_ns,
            })),
        }
    }

    fn dangling(&self, rel: &RelPath, target: &[u8]) {
        self.cfg.counters.issue(
            IssueKind::Dangling,
            self.path_of(rel),
            format!("dangling symlink to {}", String::from_utf8_lossy(target)),
        );
    }
}

impl Drop for Visitor<'_, '_> {
    fn drop(&mut self) {
        self.flush_files();
        self.flush_done();
        Counters::add(&self.cfg.counters.walk_ns, self.busy_ns);
    }
}

/// The previous entry describes exactly what a fresh stat shows (for directories and
/// symlinks, whose entries are nothing but metadata).
fn same_meta(e: &Entry<'_>, kind: Kind, st: &Stat, size: u64) -> bool {
    e.kind() == kind
        && e.mode() == st.mode & 0o7777
        && e.size() == size
        && e.mtime_ns() == st.mtime_ns
        && e.dev() == st.dev
        && e.ino() == st.ino
        && e.cache_mtime_ns() == st.mtime_ns
}

/// A symlink to a blob of this store stands for the file tier1 replaced: rebuild its entry
/// from the blob's name (hash, size) and mode, with the owner's write bit the blob lost.
fn tier1_file(blob_dir: &Path, rel: &[u8], target: &[u8], link: &Stat) -> Option<EntryInput> {
    let rest = target.strip_prefix(blob_dir.as_os_str().as_bytes())?;
    let name = rest.rsplit(|&b| b == b'/').next()?;
    let (hash, size) = vrift_cas::parse_blob_name(name)?;
    let md = std::fs::metadata(rel_os(target)).ok()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str) -> Job {
        Job {
            parent: None,
            rel: RelPath::child(b"", name.as_bytes()),
            prev: None,
        }
    }

    /// Runs `threads` walkers over a queue starting at "root"; returns how many directories
    /// `visit` was given.
    fn walk_with(
        threads: usize,
        counters: &Counters,
        visit: impl Fn(Job, &mut Vec<Job>) + Sync,
    ) -> u64 {
        let queue = Queue {
            state: Mutex::new((vec![job("root")], 0)),
            ready: Condvar::new(),
        };
        let visited = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    queue.serve(counters, |j, found| {
                        visited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        visit(j, found);
                    });
                });
            }
        });
        visited.into_inner()
    }

    /// A walker thread that panics mid-directory must not leave the others waiting for it
    /// (the directory it held is never finished): all return, and the failure names the walk.
    #[test]
    fn a_panicking_walker_stops_the_walk_instead_of_hanging_it() {
        let counters = Counters::default();
        let n = walk_with(4, &counters, |j, found| {
            match j.rel.as_bytes() {
                b"root" => {
                    // d40 on top of the stack: taken first.
                    found.extend((0..64).filter(|&i| i != 40).map(|i| job(&format!("d{i}"))));
                    found.push(job("d40"));
                }
                b"d40" => panic!("bug while reading d40"),
                // The others are busy until the failure is known (or 20 s).
                _ => {
                    let t = std::time::Instant::now();
                    while !counters.quitting() && t.elapsed().as_secs() < 20 {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
            }
        });
        let (stage, message) = counters.stage_failure().expect("the failure is recorded");
        assert_eq!(stage, "walk");
        assert!(message.contains("d40"), "{message}");
        assert!(counters.quitting());
        // It stopped early: the root, d40, and the directory each other walker held.
        assert!(n <= 5, "{n} directories visited");
    }

    #[test]
    fn a_walk_without_failures_visits_everything() {
        let counters = Counters::default();
        let n = walk_with(3, &counters, |j, found| {
            if j.rel.as_bytes() == b"root" {
                found.extend((0..20).map(|i| job(&format!("d{i}"))));
            }
        });
        assert_eq!(n, 21);
        assert!(counters.stage_failure().is_none());
    }
}
