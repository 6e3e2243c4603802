//! Pending roots: manifests whose blobs `gc` must keep although no project is registered for
//! them yet (Nix calls these temporary roots).
//!
//! A phantom ingest moves files into the store *before* it registers its project; if it is
//! killed (or the disk fills) in between, the moved files exist only as blobs, referenced by a
//! manifest the registry does not know. So before the first file moves, the ingest copies its
//! manifest here (fsynced), and removes the copy once the project is registered. A root of a
//! process that died stays until a rerun (`vrift ingest --resume`) registers the project, or
//! until every blob it holds is also held by a registered project — never on age alone.
//!
//! Layout: `<store>/roots/<pid>-<n>.vrm` (the manifest) and `<pid>-<n>.json` (who made it).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use vrift_manifest::Manifest;

use crate::error::{CasError, Result};

pub const ROOTS_DIR: &str = "roots";

/// Who made a pending root, for `doctor` and for a rerun to find its own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RootInfo {
    pub pid: u32,
    /// The tree being ingested.
    pub source: PathBuf,
    /// The manifest the ingest writes (`-o`).
    pub output: PathBuf,
    pub created_unix: u64,
}

/// A pending root held by this process; [`release`](PendingRoot::release) it once the
/// project is registered. Dropping it without releasing keeps it (the safe default when an
/// ingest fails halfway: its moved files stay referenced).
#[derive(Debug)]
pub struct PendingRoot {
    manifest: PathBuf,
    info: PathBuf,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl PendingRoot {
    /// Records `manifest_bytes` (a complete manifest) as a pending root of the store at
    /// `root`. Durable when this returns: written, fsynced and renamed into place.
    pub fn create(root: &Path, manifest_bytes: &[u8], info: &RootInfo) -> Result<PendingRoot> {
        let dir = root.join(ROOTS_DIR);
        fs::create_dir_all(&dir).map_err(|e| CasError::io(&dir, e))?;
        let stem = format!("{}-{}", info.pid, COUNTER.fetch_add(1, Ordering::Relaxed));
        let manifest = dir.join(format!("{stem}.vrm"));
        let meta = dir.join(format!("{stem}.json"));
        let json = serde_json::to_vec_pretty(info)
            .map_err(|e| CasError::io(&meta, io::Error::other(e)))?;
        // The info first: a root without it is still a root (gc reads the .vrm files).
        crate::registry::write_atomic(&meta, &json)?;
        vrift_manifest::write_file_atomic(&manifest, manifest_bytes)?;
        Ok(PendingRoot {
            manifest,
            info: meta,
        })
    }

    /// Removes the root: its manifest is registered now (or the ingest moved nothing).
    pub fn release(self) -> Result<()> {
        remove(&self.manifest, &self.info)
    }
}

fn remove(manifest: &Path, info: &Path) -> Result<()> {
    for p in [manifest, info] {
        match fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(CasError::io(p, e)),
        }
    }
    Ok(())
}

/// One pending root found on disk.
#[derive(Debug, Clone)]
pub struct Pending {
    pub manifest: PathBuf,
    pub info_path: PathBuf,
    /// `None` when the info file is missing or unreadable.
    pub info: Option<RootInfo>,
    /// Whether the process that made it is still running.
    pub alive: bool,
}

/// Every pending root of the store at `root`.
pub fn list(root: &Path) -> Result<Vec<Pending>> {
    let dir = root.join(ROOTS_DIR);
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CasError::io(&dir, e)),
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".vrm") else {
            continue;
        };
        if stem.starts_with('.') {
            continue; // a temp file of write_file_atomic
        }
        let info_path = dir.join(format!("{stem}.json"));
        let info: Option<RootInfo> = fs::read(&info_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let pid = info
            .as_ref()
            .map(|i| i.pid)
            .or_else(|| stem.split('-').next().and_then(|s| s.parse().ok()));
        let alive = pid.is_some_and(crate::lock::pid_alive);
        out.push(Pending {
            manifest: p,
            info_path,
            info,
            alive,
        });
    }
    out.sort_by(|a, b| a.manifest.cmp(&b.manifest));
    Ok(out)
}

/// Removes the pending roots of dead processes that ingested into `output` (a rerun that
/// has now registered that output's project).
pub fn release_for_output(root: &Path, output: &Path) -> Result<usize> {
    let mut n = 0;
    for p in list(root)? {
        if !p.alive && p.info.as_ref().is_some_and(|i| i.output == output) {
            remove(&p.manifest, &p.info_path)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Opens a pending root's manifest (validated like any manifest).
pub fn open(p: &Pending) -> Result<Manifest> {
    Ok(Manifest::open(&p.manifest)?)
}

/// Removes a pending root (gc, when every blob it holds is held by a registered project).
pub fn discard(p: &Pending) -> Result<()> {
    remove(&p.manifest, &p.info_path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vrift_manifest::{EntryInput, ManifestBuilder};

    #[test]
    fn create_list_release() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = ManifestBuilder::new("/src");
        b.push(EntryInput::file("a", 1, [1; 32]));
        let bytes = b.to_bytes().unwrap();
        let info = RootInfo {
            pid: std::process::id(),
            source: "/src".into(),
            output: "/out.vrm".into(),
            created_unix: 1,
        };
        let r = PendingRoot::create(dir.path(), &bytes, &info).unwrap();
        let l = list(dir.path()).unwrap();
        assert_eq!(l.len(), 1);
        assert!(l[0].alive);
        assert_eq!(l[0].info.as_ref(), Some(&info));
        assert_eq!(open(&l[0]).unwrap().len(), 2);
        // A live process's root is never released on behalf of a rerun.
        assert_eq!(
            release_for_output(dir.path(), Path::new("/out.vrm")).unwrap(),
            0
        );
        r.release().unwrap();
        assert!(list(dir.path()).unwrap().is_empty());
    }
}
