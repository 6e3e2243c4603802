//! The per-run scratch directory and its teardown.
//!
//! Every `run --isolate` gets `<store>/isolate/run-<pid>-<n>/` (on the store's filesystem,
//! which supports the `user.*` xattrs overlayfs needs for `userxattr`), holding the overlay
//! `upper/<i>` and `work/<i>` directories and `root/`, the mount point where the new root is
//! assembled. It is created and removed by `vrift` itself, outside the namespaces, after the
//! namespace's init has been reaped: the mounts lived only in the namespace's private mount
//! table, so by then they are gone and what is left is plain files. `vrift` holds an
//! exclusive `flock` on the directory while it runs; one found unlocked whose `<pid>` is gone
//! belongs to a `vrift` that was itself killed, and the next run sweeps it away.
//!
//! With `--keep` the directory is renamed to `<store>/isolate/kept-<pid>-<n>/` (never swept;
//! remove it yourself) and only `upper/` is left in it. (Not under `<store>/tmp/`, which
//! `vrift doctor` expects to be empty.)

use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::error::{Context, Result};

use super::farm::remove_tree;

pub const RUN_DIR: &str = "isolate";
const PREFIX: &str = "run-";
const KEPT_PREFIX: &str = "kept-";

pub struct RunDir {
    path: PathBuf,
    lock: Option<File>,
    keep: bool,
    /// Where the upper layers ended up with `--keep` (set by teardown).
    pub kept: Option<PathBuf>,
}

impl RunDir {
    /// Creates the scratch directory with `n` upper/work pairs.
    pub fn create(store: &Path, n: usize, keep: bool) -> Result<RunDir> {
        let tmp = store.join(RUN_DIR);
        fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        sweep(&tmp);
        let mut db = fs::DirBuilder::new();
        db.mode(0o700);
        let pid = std::process::id();
        let mut path = None;
        for i in 0..1000u32 {
            let p = tmp.join(format!("{PREFIX}{pid}-{i}"));
            match db.create(&p) {
                Ok(()) => {
                    path = Some(p);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot create {}", p.display())),
            }
        }
        let path =
            path.with_context(|| format!("cannot create a directory in {}", tmp.display()))?;
        let lock = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        lock.lock()
            .with_context(|| format!("cannot lock {}", path.display()))?;
        let rd = RunDir {
            path,
            lock: Some(lock),
            keep,
            kept: None,
        };
        for sub in ["upper", "work", "root"] {
            db.create(rd.path.join(sub))
                .with_context(|| format!("cannot create {}", rd.path.join(sub).display()))?;
        }
        for i in 0..n {
            for sub in ["upper", "work"] {
                let p = rd.path.join(sub).join(i.to_string());
                db.create(&p)
                    .with_context(|| format!("cannot create {}", p.display()))?;
            }
        }
        Ok(rd)
    }

    pub fn staging(&self) -> PathBuf {
        self.path.join("root")
    }

    pub fn upper(&self, i: usize) -> PathBuf {
        self.path.join("upper").join(i.to_string())
    }

    pub fn work(&self, i: usize) -> PathBuf {
        self.path.join("work").join(i.to_string())
    }

    /// Scratch space for mount points the host lacks (see `ns::make_mount_point`).
    pub fn scratch(&self) -> PathBuf {
        self.path.join("mnt")
    }

    /// Removes the directory (or, with `--keep`, keeps only the upper layers). Call once the
    /// namespace is gone.
    pub fn teardown(&mut self) {
        if self.lock.is_none() {
            return;
        }
        if self.keep {
            let _ = remove_tree(&self.path.join("work"));
            let _ = fs::remove_dir(self.path.join("root"));
            let name = self
                .path
                .file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_default();
            let rest = name.strip_prefix(PREFIX.as_bytes()).unwrap_or(&name);
            let mut kept_name = KEPT_PREFIX.as_bytes().to_vec();
            kept_name.extend_from_slice(rest);
            let kept = self
                .path
                .with_file_name(<std::ffi::OsStr as OsStrExt>::from_bytes(&kept_name));
            match fs::rename(&self.path, &kept) {
                Ok(()) => self.kept = Some(kept.join("upper")),
                Err(_) => self.kept = Some(self.path.join("upper")),
            }
        } else {
            let _ = remove_tree(&self.path);
        }
        self.lock = None;
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Removes `run-*` directories no live `vrift` holds.
fn sweep(tmp: &Path) {
    let Ok(rd) = fs::read_dir(tmp) else { return };
    for e in rd.flatten() {
        if !e.file_name().as_bytes().starts_with(PREFIX.as_bytes()) {
            continue;
        }
        let p = e.path();
        let Ok(f) = File::open(&p) else { continue };
        if super::farm::abandoned(&f, e.file_name().as_bytes()) {
            let _ = remove_tree(&p);
        }
    }
}
