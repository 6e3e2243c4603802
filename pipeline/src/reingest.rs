//! The re-ingest cache: the previous manifest written to the same output.
//!
//! A file whose on-disk identity (device, inode, size, mtime in ns, mode apart from the write
//! bits we strip) is what the previous manifest recorded *after* placing it is the same file
//! we left linked to its blob: it is neither read nor hashed again. That keeps a warm
//! re-ingest at about one `lstat` per file.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use vrift_cas::WRITE_BITS;
use vrift_manifest::{Entry, Manifest};

use crate::item::Stat;

pub struct Previous {
    manifest: Manifest,
    blob_dir: PathBuf,
}

/// Why the previous manifest is not used (for a one-line note to the user).
#[derive(Debug)]
pub enum NotReused {
    Missing,
    Unreadable(String),
    OtherRoot,
}

impl Previous {
    /// Loads the previous manifest at `output` if it describes the same `root`.
    pub fn load(output: &Path, root: &Path, blob_dir: &Path) -> Result<Previous, NotReused> {
        let manifest = match Manifest::open(output) {
            Ok(m) => m,
            Err(vrift_manifest::ManifestError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Err(NotReused::Missing)
            }
            Err(e) => return Err(NotReused::Unreadable(e.to_string())),
        };
        if manifest.root() != root.as_os_str().as_bytes() {
            return Err(NotReused::OtherRoot);
        }
        Ok(Previous {
            manifest,
            blob_dir: blob_dir.to_path_buf(),
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Whether the file on disk (`st`) is the one this previous entry recorded as left there.
    pub fn unchanged(&self, e: &Entry<'_>, st: &Stat) -> bool {
        let keep = !WRITE_BITS & 0o7777;
        e.kind().has_content()
            && e.dev() == st.dev
            && e.ino() == st.ino
            && e.size() == st.size
            && e.cache_mtime_ns() == st.mtime_ns
            && e.mode() & keep == st.mode & keep
    }

    /// For a tier1 tree: a symlink pointing at the blob this previous entry recorded stands
    /// for the unchanged file.
    pub fn tier1_unchanged(&self, e: &Entry<'_>, target: &[u8]) -> bool {
        if !e.kind().has_content() || !target.starts_with(self.blob_dir.as_os_str().as_bytes()) {
            return false;
        }
        let rel_blob = vrift_cas::blob_rel(e.hash(), e.size());
        self.blob_dir.join(rel_blob).as_os_str().as_bytes() == target
    }
}
