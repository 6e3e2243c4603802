//! A tree restored straight from the remote's packs, with no store in between: what
//! `restore` does on a fresh runner, whose store has nothing to share and would only cost
//! time (a file and a shard directory per blob, then a link per file) and disk (the shard
//! directories).
//!
//! Like `tar -x`, but each blob is fetched once (however many files hold it), frames are
//! decoded as they stream in on several connections, and every blob is checked against its
//! name before any file gets its bytes. The tree is made the way the one materializer makes
//! checkouts (directories and symlinks through it; files relative to their parent's
//! descriptor, `O_NOFOLLOW`, `O_EXCL`), in an empty directory the caller swaps into place.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;

use rustix::fs::{Mode, OFlags};
use vrift_cas::Cas;
use vrift_manifest::{Hash, Kind, Manifest};
use vrift_pipeline::dirs::DirChain;
use vrift_pipeline::materialize::{self, Node, Options, SETID_BITS};
use vrift_pipeline::Counters;

use crate::bundle::Bundle;
use crate::error::{RemoteError, Result};
use crate::packed::BlobSink;
use crate::Remote;

/// Files by content: (hash, size) → (path, mode, mtime) of every file holding it.
type Files = HashMap<(Hash, u64), Vec<(Vec<u8>, u32, i64)>>;

struct TreeSink<'a> {
    dest: &'a Path,
    root: DirChain,
    /// Chains for the worker threads, to open directories safely (component by component,
    /// never through a symlink).
    pool: Mutex<Vec<DirChain>>,
    /// Directories opened so far, shared by all threads: frames of different packs land in
    /// the same directories, and reopening a path component by component costs more than
    /// the file it is for. Bounded by `max_dirs` (the descriptor limit).
    dirs: Mutex<HashMap<Vec<u8>, Arc<OwnedFd>>>,
    max_dirs: usize,
    files: Files,
    /// The process's umask: a file whose mode it would cut gets an `fchmod`.
    umask: u32,
}

impl TreeSink<'_> {
    /// The directory `rel` (`""`: the root), from the cache or opened safely.
    fn dir(&self, chain: &mut DirChain, rel: &[u8]) -> std::io::Result<Arc<OwnedFd>> {
        if let Some(fd) = self.dirs.lock().ok().and_then(|d| d.get(rel).cloned()) {
            return Ok(fd);
        }
        let fd = Arc::new(chain.open_readable(rel)?);
        if let Ok(mut d) = self.dirs.lock() {
            if d.len() < self.max_dirs {
                d.insert(rel.to_vec(), fd.clone());
            }
        }
        Ok(fd)
    }
}

impl BlobSink for TreeSink<'_> {
    fn put(&self, hash: &Hash, size: u64, data: &[u8]) -> Result<()> {
        let Some(paths) = self.files.get(&(*hash, size)) else {
            return Ok(());
        };
        let mut chain = match self.pool.lock().ok().and_then(|mut p| p.pop()) {
            Some(c) => c,
            None => self
                .root
                .try_clone()
                .map_err(|e| RemoteError::io(self.dest, e))?,
        };
        let mut result = Ok(());
        for (path, mode, mtime) in paths {
            let at = || {
                self.dest
                    .join(std::ffi::OsStr::new(&*String::from_utf8_lossy(path)))
            };
            let mut write = || -> std::io::Result<()> {
                let (parent, name) = vrift_pipeline::dirs::split(path);
                let name = vrift_pipeline::dirs::c_name(name)?;
                let parent = self.dir(&mut chain, parent)?;
                // Created with its final mode, so no `fchmod` per file where the umask
                // leaves that mode alone (0644, 0755, 0444 under the usual 022); the
                // descriptor is writable whatever the mode says.
                let mode = mode & 0o777;
                let fd = rustix::fs::openat(
                    parent.as_fd(),
                    name.as_c_str(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(mode),
                )?;
                let mut off = 0;
                while off < data.len() {
                    off += rustix::io::write(&fd, &data[off..])?;
                }
                if mode & self.umask != 0 {
                    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
                }
                materialize::set_mtime(fd.as_fd(), *mtime)
            };
            if let Err(e) = write() {
                result = Err(RemoteError::io(at(), e));
                break;
            }
        }
        if let Ok(mut p) = self.pool.lock() {
            p.push(chain);
        }
        result
    }
}

/// How many directories may stay open: the descriptor limit raised to its hard maximum
/// (up to 65,536), minus room for the connections and files in flight.
fn dir_cache_size() -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if let (Some(cur), max) = (l.current, l.maximum) {
        let want = max.unwrap_or(65_536).min(65_536);
        if cur < want {
            l.current = Some(want);
            let _ = setrlimit(Resource::Nofile, l);
        }
    }
    let cur = getrlimit(Resource::Nofile).current.unwrap_or(65_536);
    (cur as usize).saturating_sub(512)
}

impl Remote {
    /// Writes the tree of `bundle` into the empty (or missing) directory `dest` from the
    /// packs. `store` is only where pack indexes are cached. Returns the number of files.
    pub fn extract(
        &self,
        store: &Path,
        key: &str,
        bundle: &Bundle,
        dest: &Path,
        jobs: usize,
    ) -> Result<u64> {
        let m = Manifest::from_bytes(bundle.manifest.clone(), Path::new(key)).map_err(|e| {
            RemoteError::BadManifest {
                key: key.to_string(),
                detail: e.to_string(),
            }
        })?;
        let cas = Cas::open(store)?;
        // Directories and symlinks through the materializer (writable while files land).
        let dest_fd = materialize::open_empty_dest(dest).map_err(|e| RemoteError::io(dest, e))?;
        let root = dest_fd.try_clone().map_err(|e| RemoteError::io(dest, e))?;
        let nodes: Vec<(&[u8], Node<'_>)> = materialize::manifest_nodes(&m)
            .into_iter()
            .filter(|(_, n)| match n {
                Node::Dir { .. } => true,
                Node::Leaf(e) => e.kind() == Kind::Symlink,
            })
            .collect();
        let counters = Counters::default();
        let opts = Options {
            threads: 2,
            dir_mode_add: 0o700,
            ..Options::default()
        };
        let r = materialize::materialize(&cas, dest, dest_fd, &nodes, &opts, &counters);
        if r.errors > 0 {
            let first = counters.take_issues().into_iter().next();
            return Err(RemoteError::Io {
                path: first
                    .as_ref()
                    .map_or(dest.to_path_buf(), |i| i.path.clone()),
                source: std::io::Error::other(first.map_or_else(String::new, |i| i.message)),
            });
        }
        let mut files: Files = HashMap::new();
        let mut blobs: Vec<(Hash, u64)> = Vec::new();
        let mut count = 0u64;
        for e in m
            .iter()
            .filter(|e| matches!(e.kind(), Kind::File | Kind::Executable))
        {
            count += 1;
            let k = (*e.hash(), e.size());
            let v = files.entry(k).or_default();
            if v.is_empty() {
                blobs.push(k);
            }
            v.push((e.path().to_vec(), e.mode(), e.mtime_ns()));
        }
        // Read once (setting it is the only way), before any file is made.
        let umask = rustix::process::umask(Mode::from_raw_mode(0o022));
        rustix::process::umask(umask);
        let sink = TreeSink {
            umask: umask.as_raw_mode() & 0o777,
            dest,
            root: DirChain::new(root),
            pool: Mutex::new(Vec::new()),
            dirs: Mutex::new(HashMap::new()),
            max_dirs: dir_cache_size(),
            files,
        };
        let st = &self.stats;
        crate::stats::RemoteStats::add(&st.blobs_total, blobs.len() as u64);
        crate::stats::RemoteStats::add(&st.bytes_total, blobs.iter().map(|b| b.1).sum());
        let errors = self.fetch_from_packs(&sink, store, bundle, key, &blobs, jobs)?;
        if let Some(e) = RemoteError::from_many(errors) {
            return Err(e);
        }
        // Directories last, deepest first: their modes and times as recorded (writing the
        // files changed the times).
        drop(sink.dirs);
        let mut chain = sink.root;
        let dirs: Vec<_> = m.iter().filter(|e| e.kind() == Kind::Dir).collect();
        for e in dirs.iter().rev() {
            let mode = e.mode() & 0o7777 & !SETID_BITS;
            materialize::finish_dir(&mut chain, e.path(), mode, e.mtime_ns()).map_err(|err| {
                RemoteError::io(dest.join(String::from_utf8_lossy(e.path()).as_ref()), err)
            })?;
        }
        Ok(count)
    }
}
