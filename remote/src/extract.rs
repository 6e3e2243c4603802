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
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Mutex;

use rustix::fs::{Mode, OFlags, Timespec, Timestamps};
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
    /// Chains for the worker threads (each caches the directories it opened).
    pool: Mutex<Vec<DirChain>>,
    files: Files,
}

fn ts(ns: i64) -> Timespec {
    Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
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
            let at = || self.dest.join(std::ffi::OsStr::new(&*String::from_utf8_lossy(path)));
            let mut write = || -> std::io::Result<()> {
                let (parent, name) = chain.parent_of(path)?;
                let fd = rustix::fs::openat(
                    parent,
                    name.as_c_str(),
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )?;
                let mut off = 0;
                while off < data.len() {
                    off += rustix::io::write(&fd, &data[off..])?;
                }
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o7777 & !SETID_BITS))?;
                let t = ts(*mtime);
                rustix::fs::futimens(
                    &fd,
                    &Timestamps {
                        last_access: t,
                        last_modification: t,
                    },
                )?;
                Ok(())
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
                path: first.as_ref().map_or(dest.to_path_buf(), |i| i.path.clone()),
                source: std::io::Error::other(first.map_or_else(String::new, |i| i.message)),
            });
        }
        let mut files: Files = HashMap::new();
        let mut blobs: Vec<(Hash, u64)> = Vec::new();
        let mut count = 0u64;
        for e in m.iter().filter(|e| matches!(e.kind(), Kind::File | Kind::Executable)) {
            count += 1;
            let k = (*e.hash(), e.size());
            let v = files.entry(k).or_default();
            if v.is_empty() {
                blobs.push(k);
            }
            v.push((e.path().to_vec(), e.mode(), e.mtime_ns()));
        }
        let sink = TreeSink {
            dest,
            root: DirChain::new(root),
            pool: Mutex::new(Vec::new()),
            files,
        };
        let st = &self.stats;
        crate::stats::RemoteStats::add(&st.blobs_total, blobs.len() as u64);
        crate::stats::RemoteStats::add(&st.bytes_total, blobs.iter().map(|b| b.1).sum());
        let mut errors = self.fetch_from_packs(&sink, store, bundle, key, &blobs, jobs)?;
        if !errors.is_empty() {
            let n = errors.len();
            let first = errors.swap_remove(0);
            return Err(if n == 1 {
                first
            } else {
                RemoteError::Several {
                    count: n,
                    first: Box::new(first),
                }
            });
        }
        // Directories last, deepest first: their modes and times as recorded (writing the
        // files changed the times).
        let mut chain = sink.root;
        let dirs: Vec<_> = m.iter().filter(|e| e.kind() == Kind::Dir).collect();
        for e in dirs.iter().rev() {
            let fd = chain
                .open_readable(e.path())
                .map_err(|err| RemoteError::io(dest.join(String::from_utf8_lossy(e.path()).as_ref()), err))?;
            let t = ts(e.mtime_ns());
            let set = rustix::fs::fchmod(fd.as_fd(), Mode::from_raw_mode(e.mode() & 0o7777 & !SETID_BITS))
                .and_then(|()| {
                    rustix::fs::futimens(
                        fd.as_fd(),
                        &Timestamps {
                            last_access: t,
                            last_modification: t,
                        },
                    )
                });
            set.map_err(|err| RemoteError::io(dest, err.into()))?;
        }
        Ok(count)
    }
}
