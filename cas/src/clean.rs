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

/// Removes the store directory. Refuses anything that does not look like a store.
pub fn remove_store(root: &Path) -> Result<()> {
    if !root.join(crate::layout::BLOB_DIR).is_dir() {
        return Err(CasError::NotAStore {
            path: root.to_path_buf(),
        });
    }
    fs::remove_dir_all(root).map_err(|e| CasError::io(root, e))
}
