//! Deleting a whole store, and giving users their files back first.
//!
//! In solid mode a project file *is* a blob (same inode, write bits stripped). `fix_perms`
//! restores each such file's original mode from its manifest, and turns tier1 symlinks back
//! into regular files (a hard link to the blob, taken before the blob's name disappears), so
//! after `clean` the trees are ordinary, writable files again.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use vrift_manifest::Manifest;

use crate::error::{CasError, Result};
use crate::registry::Registry;
use crate::store::Cas;

#[derive(Debug, Default, serde::Serialize)]
pub struct FixPermsReport {
    pub restored: u64,
    pub materialized: u64,
    pub failed: Vec<(String, String)>,
    /// Phantom projects: their files live only in the store.
    pub phantom_projects: Vec<String>,
}

/// Restores write bits (and materializes tier1 symlinks) in every registered project.
pub fn fix_perms(cas: &Cas) -> Result<FixPermsReport> {
    let reg = Registry::load(cas.root())?;
    let mut r = FixPermsReport::default();
    for p in &reg.projects {
        let m = match Manifest::open(&cas.root().join(&p.cached_manifest)) {
            Ok(m) => m,
            Err(e) => {
                r.failed.push((p.cached_manifest.clone(), e.to_string()));
                continue;
            }
        };
        if m.flags() & vrift_manifest::FLAG_PHANTOM != 0 {
            r.phantom_projects.push(p.name.clone());
            continue;
        }
        let root = PathBuf::from(std::ffi::OsStr::from_bytes(m.root()));
        for e in m.iter().filter(|e| e.kind().has_content()) {
            let path = root.join(std::ffi::OsStr::from_bytes(e.path()));
            if let Err(err) = fix_one(cas, &path, e.hash(), e.size(), e.mode(), &mut r) {
                r.failed.push((path.display().to_string(), err.to_string()));
            }
        }
    }
    Ok(r)
}

fn fix_one(
    cas: &Cas,
    path: &Path,
    hash: &vrift_manifest::Hash,
    size: u64,
    mode: u32,
    r: &mut FixPermsReport,
) -> std::io::Result<()> {
    let md = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let blob = match cas.blob_stat(hash, size) {
        Ok(b) => b,
        Err(_) => return Ok(()), // nothing in the store to disentangle from
    };
    if md.file_type().is_symlink() {
        let target = fs::read_link(path)?;
        if target == cas.blob_path(hash, size) {
            cas.replace_with_blob(hash, size, path)?;
            fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))?;
            r.materialized += 1;
        }
        return Ok(());
    }
    if md.is_file()
        && md.ino() == blob.st_ino
        && md.dev() == blob.st_dev
        && md.mode() & 0o7777 != mode & 0o7777
    {
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))?;
        r.restored += 1;
    }
    Ok(())
}

/// Every name vrift makes at the top of a store: what `clean --all` may delete.
pub const OWN_ENTRIES: &[&str] = &[
    crate::layout::BLOB_DIR,
    crate::store::TMP_DIR,
    crate::store::MANIFEST_DIR,
    crate::store::LOCK_DIR,
    crate::store::QUARANTINE_DIR,
    crate::roots::ROOTS_DIR,
    crate::registry::REGISTRY_FILE,
    crate::gc::LAST_GC_FILE,
    "farms",
    "isolate",
    "remote.toml",
    "remote",
    "shim",
    crate::store::SEALED_MARKER,
];

/// Entries at the top of the store vrift did not make (a store pointed at a directory that
/// also holds the user's own files, e.g. `--the-source-root ~/ws`). Temp files of vrift's
/// atomic writes (`.tmp-*`) are its own.
pub fn foreign_entries(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(root).map_err(|e| CasError::io(root, e))? {
        let e = e.map_err(|e| CasError::io(root, e))?;
        let name = e.file_name();
        let n = name.to_string_lossy();
        if OWN_ENTRIES.contains(&n.as_ref()) || n.starts_with(".tmp-") {
            continue;
        }
        out.push(e.path());
    }
    out.sort();
    Ok(out)
}

/// Removes the store: vrift's own entries, then the directory itself. Refuses anything that
/// does not look like a store, and a store directory that also holds files vrift never made
/// (naming them): those are the user's.
pub fn remove_store(root: &Path) -> Result<()> {
    if !root.join(crate::layout::BLOB_DIR).is_dir() {
        return Err(CasError::NotAStore {
            path: root.to_path_buf(),
        });
    }
    let foreign = foreign_entries(root)?;
    if !foreign.is_empty() {
        let names: Vec<String> = foreign
            .iter()
            .take(5)
            .map(|p| p.display().to_string())
            .collect();
        return Err(CasError::ForeignFiles {
            path: root.to_path_buf(),
            count: foreign.len(),
            names: names.join(", "),
        });
    }
    for e in fs::read_dir(root).map_err(|e| CasError::io(root, e))? {
        let p = e.map_err(|e| CasError::io(root, e))?.path();
        let md = fs::symlink_metadata(&p).map_err(|e| CasError::io(&p, e))?;
        let r = if md.is_dir() {
            remove_tree(&p)
        } else {
            fs::remove_file(&p)
        };
        r.map_err(|e| CasError::io(&p, e))?;
    }
    fs::remove_dir(root).map_err(|e| CasError::io(root, e))
}

/// Removes a tree, giving directories `u+rwx` first where a run or a link farm left them
/// without (a read-only directory refuses to have its entries removed).
pub fn remove_tree(p: &Path) -> std::io::Result<()> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            open_up(p);
            fs::remove_dir_all(p)
        }
    }
}

fn open_up(p: &Path) {
    let Ok(md) = fs::symlink_metadata(p) else {
        return;
    };
    if !md.is_dir() {
        return;
    }
    if md.mode() & 0o700 != 0o700 {
        let _ = fs::set_permissions(p, fs::Permissions::from_mode((md.mode() & 0o7777) | 0o700));
    }
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                open_up(&e.path());
            }
        }
    }
}

/// Registered phantom projects: their files exist only in the store, so they go with it.
pub fn phantom_projects(cas: &Cas) -> Vec<String> {
    let Ok(reg) = Registry::load(cas.root()) else {
        return Vec::new();
    };
    reg.projects
        .iter()
        .filter(|p| {
            Manifest::open(&cas.root().join(&p.cached_manifest)).is_ok_and(|m| m.is_phantom())
        })
        .map(|p| p.name.clone())
        .collect()
}
