//! The registry of projects ingested into this store, kept inside the store root.
//!
//! Each ingest records its project (source path, manifest path, last ingest) and leaves a
//! cached copy of its manifest under `manifests/`, so `gc` and `registry --rebuild` still know
//! what is referenced when a user's own manifest file is gone. Rewrites are atomic (temp file,
//! fsync, rename) and serialized by a lock file; a corrupt registry is reported, never
//! silently replaced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use vrift_manifest::Manifest;

use crate::error::{CasError, Result};
use crate::store::{LOCK_DIR, MANIFEST_DIR};

pub const REGISTRY_FILE: &str = "registry.json";
pub const REGISTRY_VERSION: u32 = 1;
/// Suffix of cached manifest copies under `manifests/`.
pub const CACHED_SUFFIX: &str = ".vrm";

/// One registered project. Paths are stored as bytes-safe strings (see `path_str`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    /// Stable id derived from the source path: re-ingesting a tree updates its entry.
    pub id: String,
    pub name: String,
    #[serde(with = "path_str")]
    pub source: PathBuf,
    #[serde(with = "path_str")]
    pub manifest: PathBuf,
    /// Path of the cached manifest copy, relative to the store root.
    pub cached_manifest: String,
    pub last_ingest_unix: u64,
    /// When the project was first registered (ns since the epoch). The registry's order is
    /// registration order, which `status` attributes blobs by (a blob is "new" in the first
    /// project that has it); a rebuild restores that order from this (or from the stamp file
    /// beside the cached manifest, when the registry itself is lost). 0 in registries written
    /// before it existed.
    #[serde(default)]
    pub registered_unix_ns: u64,
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    pub version: u32,
    pub projects: Vec<Project>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            version: REGISTRY_VERSION,
            projects: Vec::new(),
        }
    }
}

/// What an ingest tells the registry about itself.
pub struct Registration<'a> {
    pub name: &'a str,
    pub source: &'a Path,
    pub manifest: &'a Path,
    pub files: u64,
    pub bytes: u64,
}

pub fn registry_path(root: &Path) -> PathBuf {
    root.join(REGISTRY_FILE)
}

/// A short stable id for a source directory.
pub fn project_id(source: &Path) -> String {
    let h = blake3::hash(source.as_os_str().as_bytes());
    h.to_hex()[..16].to_string()
}

pub fn cached_manifest_rel(id: &str) -> String {
    format!("{MANIFEST_DIR}/{id}{CACHED_SUFFIX}")
}

/// The file beside a project's cached manifest that records when it was first registered:
/// written once, never replaced, so the registration order survives the loss of
/// `registry.json`.
pub fn registered_stamp_path(root: &Path, id: &str) -> PathBuf {
    root.join(MANIFEST_DIR)
        .join(format!("{id}{REGISTERED_SUFFIX}"))
}

const REGISTERED_SUFFIX: &str = ".registered";

fn read_registered_stamp(root: &Path, id: &str) -> Option<u64> {
    fs::read_to_string(registered_stamp_path(root, id))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Removes what the store keeps for a project besides its registry entry (forget, prune).
pub fn remove_project_files(root: &Path, p: &Project) {
    let _ = fs::remove_file(root.join(&p.cached_manifest));
    let _ = fs::remove_file(registered_stamp_path(root, &p.id));
}

impl Registry {
    /// Loads the registry; a missing file is an empty registry, a corrupt one an error.
    pub fn load(root: &Path) -> Result<Registry> {
        let path = registry_path(root);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Registry::default()),
            Err(e) => return Err(CasError::io(&path, e)),
        };
        let reg: Registry =
            serde_json::from_slice(&bytes).map_err(|e| CasError::RegistryCorrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if reg.version != REGISTRY_VERSION {
            return Err(CasError::RegistryCorrupt {
                path,
                reason: format!("unsupported version {}", reg.version),
            });
        }
        Ok(reg)
    }

    /// Writes the registry atomically.
    pub fn save(&self, root: &Path) -> Result<()> {
        let path = registry_path(root);
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| CasError::io(&path, io::Error::other(e)))?;
        write_atomic(&path, &json)
    }

    /// Read-modify-write under the registry lock, so concurrent ingests never lose an update.
    pub fn update<T>(root: &Path, f: impl FnOnce(&mut Registry) -> T) -> Result<T> {
        let _guard = RegistryGuard::take(root)?;
        let mut reg = Registry::load(root)?;
        let out = f(&mut reg);
        reg.save(root)?;
        Ok(out)
    }

    pub fn find(&self, id: &str) -> Option<&Project> {
        self.projects.iter().find(|p| p.id == id)
    }
}

struct RegistryGuard {
    _file: File,
}

impl RegistryGuard {
    fn take(root: &Path) -> Result<RegistryGuard> {
        let dir = root.join(LOCK_DIR);
        fs::create_dir_all(&dir).map_err(|e| CasError::io(&dir, e))?;
        let path = dir.join("registry.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| CasError::io(&path, e))?;
        f.lock().map_err(|e| CasError::io(&path, e))?;
        Ok(RegistryGuard { _file: f })
    }
}

/// Records an ingest: caches a copy of its manifest inside the store, then upserts the
/// project. The copy is an independent file (not a hard link to the user's manifest, which
/// the user may edit or damage in place), validated before it is written, and lands
/// atomically.
pub fn register(root: &Path, r: &Registration<'_>) -> Result<Project> {
    let m = Manifest::open(r.manifest)?;
    register_bytes(root, r, m.as_bytes())
}

/// [`register`] with the manifest's bytes in hand (built by this process, not yet published
/// at `r.manifest`): the ingest registers before it publishes, so a failure leaves the user's
/// manifest as it was.
pub fn register_bytes(root: &Path, r: &Registration<'_>, image: &[u8]) -> Result<Project> {
    let id = project_id(r.source);
    let rel = cached_manifest_rel(&id);
    let cached = root.join(&rel);
    cache_manifest(root, image, &cached)?;
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut project = Project {
        id: id.clone(),
        name: r.name.to_string(),
        source: r.source.to_path_buf(),
        manifest: r.manifest.to_path_buf(),
        cached_manifest: rel,
        last_ingest_unix: since.as_secs(),
        registered_unix_ns: since.as_nanos() as u64,
        files: r.files,
        bytes: r.bytes,
    };
    let mut p = project.clone();
    project = Registry::update(root, move |reg| {
        match reg.projects.iter_mut().find(|x| x.id == p.id) {
            // A re-ingest keeps its place in the registration order.
            Some(slot) => {
                if slot.registered_unix_ns != 0 {
                    p.registered_unix_ns = slot.registered_unix_ns;
                }
                *slot = p.clone();
            }
            None => {
                // Later than every project registered before, whatever the clock says.
                let last = reg.projects.iter().map(|x| x.registered_unix_ns).max();
                if let Some(last) = last.filter(|&l| l >= p.registered_unix_ns) {
                    p.registered_unix_ns = last + 1;
                }
                reg.projects.push(p.clone());
            }
        }
        p
    })?;
    // Written once (a later ingest finds it there): best effort, the registry holds the
    // same time; only a rebuild after losing registry.json reads it.
    let _ = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(registered_stamp_path(root, &id))
        .and_then(|mut f| {
            use std::io::Write;
            writeln!(f, "{}", project.registered_unix_ns)
        });
    Ok(project)
}

fn cache_manifest(root: &Path, image: &[u8], cached: &Path) -> Result<()> {
    let dir = root.join(MANIFEST_DIR);
    fs::create_dir_all(&dir).map_err(|e| CasError::io(&dir, e))?;
    // Unchanged (a re-ingest of an unchanged tree): nothing to write. The same length and
    // the same 64-byte header (which holds the checksum of the whole payload) say so without
    // reading the rest.
    if same_manifest_file(cached, image) {
        return Ok(());
    }
    vrift_manifest::write_file_atomic(cached, image)?;
    Ok(())
}

fn same_manifest_file(path: &Path, image: &[u8]) -> bool {
    use std::io::Read;
    let head_len = vrift_manifest::format::HEADER_LEN.min(image.len());
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    if f.metadata().map(|m| m.len()).ok() != Some(image.len() as u64) {
        return false;
    }
    let mut head = vec![0u8; head_len];
    f.read_exact(&mut head).is_ok() && head == image[..head_len]
}

/// Rebuilds the registry from the cached manifests (when `registry.json` is lost or corrupt).
/// Returns the rebuilt registry and the cached files that could not be read.
pub fn rebuild(root: &Path) -> Result<(Registry, Vec<(PathBuf, String)>)> {
    let _guard = RegistryGuard::take(root)?;
    let old = Registry::load(root).ok();
    let dir = root.join(MANIFEST_DIR);
    let mut reg = Registry::default();
    let mut bad = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .map_err(|e| CasError::io(&dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(CACHED_SUFFIX) && !n.starts_with('.'))
        })
        .collect();
    entries.sort();
    for path in entries {
        let m = match Manifest::open(&path) {
            Ok(m) => m,
            Err(e) => {
                bad.push((path, e.to_string()));
                continue;
            }
        };
        let source = PathBuf::from(std::ffi::OsString::from_vec(m.root().to_vec()));
        let id = project_id(&source);
        let prev = old.as_ref().and_then(|o| o.find(&id)).cloned();
        let (files, bytes) = m
            .iter()
            .filter(|e| e.kind().has_content())
            .fold((0, 0), |(f, b), e| (f + 1, b + e.size()));
        let mtime = fs::metadata(&path)
            .and_then(|md| md.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let registered_unix_ns = prev
            .as_ref()
            .map(|p| p.registered_unix_ns)
            .filter(|&n| n != 0)
            .or_else(|| read_registered_stamp(root, &id))
            .unwrap_or(mtime.saturating_mul(1_000_000_000));
        reg.projects.push(Project {
            registered_unix_ns,
            name: prev
                .as_ref()
                .map(|p| p.name.clone())
                .unwrap_or_else(|| default_name(&source)),
            manifest: prev
                .as_ref()
                .map(|p| p.manifest.clone())
                .unwrap_or_else(|| path.clone()),
            last_ingest_unix: prev.as_ref().map(|p| p.last_ingest_unix).unwrap_or(mtime),
            cached_manifest: cached_manifest_rel(&id),
            id,
            source,
            files,
            bytes,
        });
    }
    // Registration order, as before the loss (status attributes blobs by it); ties (stores
    // from before the stamps) by last ingest, then id.
    reg.projects.sort_by(|a, b| {
        (a.registered_unix_ns, a.last_ingest_unix, &a.id).cmp(&(
            b.registered_unix_ns,
            b.last_ingest_unix,
            &b.id,
        ))
    });
    reg.save(root)?;
    Ok((reg, bad))
}

/// The name a project gets when none is given: the source directory's name, or its parent's
/// for a `node_modules`/`site-packages` style directory (so `app/node_modules` is "app").
pub fn default_name(source: &Path) -> String {
    let generic = [
        "node_modules",
        "site-packages",
        "vendor",
        ".venv",
        "venv",
        "registry",
    ];
    let base = source.file_name().map(|n| n.to_string_lossy().into_owned());
    match base {
        Some(b) if generic.contains(&b.as_str()) => source
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or(b),
        Some(b) => b,
        None => "/".to_string(),
    }
}

/// Writes `bytes` to `path` through a temp file in the same directory, fsynced and renamed,
/// so a crash leaves either the old or the new file, never a partial one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| CasError::io(dir, e))?;
    // tempfile creates 0600: give it the mode any new file gets (0666 less the umask), so a
    // store shared by a group (setgid directory, umask 002) stays usable by the group.
    use std::os::unix::fs::PermissionsExt;
    tmp.write_all(bytes)
        .and_then(|()| {
            tmp.as_file()
                .set_permissions(fs::Permissions::from_mode(vrift_manifest::new_file_mode()))
        })
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| CasError::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| CasError::io(path, e.error))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Paths as JSON strings; a non-UTF-8 path is written as `hex:<bytes in hex>` so it survives.
mod path_str {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Path, s: S) -> std::result::Result<S::Ok, S::Error> {
        match p.to_str() {
            Some(text) if !text.starts_with("hex:") => s.serialize_str(text),
            _ => {
                let hex: String = p
                    .as_os_str()
                    .as_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                s.serialize_str(&format!("hex:{hex}"))
            }
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<PathBuf, D::Error> {
        let text = String::deserialize(d)?;
        match text.strip_prefix("hex:") {
            Some(hex) => {
                let bytes: std::result::Result<Vec<u8>, _> = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
                    .collect();
                bytes
                    .map(|b| PathBuf::from(std::ffi::OsString::from_vec(b)))
                    .map_err(serde::de::Error::custom)
            }
            None => Ok(PathBuf::from(text)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn non_utf8_paths_round_trip() {
        let p = Project {
            id: "x".into(),
            name: "n".into(),
            source: PathBuf::from(OsStr::from_bytes(b"/tmp/\xff\xfe")),
            manifest: PathBuf::from("/tmp/m.bin"),
            cached_manifest: "manifests/x.vrm".into(),
            last_ingest_unix: 1,
            registered_unix_ns: 5,
            files: 2,
            bytes: 3,
        };
        let json = serde_json::to_string(&p).unwrap();
        let back: Project = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn corrupt_registry_is_an_error_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(registry_path(dir.path()), b"{ not json").unwrap();
        assert!(matches!(
            Registry::load(dir.path()),
            Err(CasError::RegistryCorrupt { .. })
        ));
        // update refuses too, leaving the file for `registry --rebuild`
        assert!(Registry::update(dir.path(), |_| ()).is_err());
        assert_eq!(fs::read(registry_path(dir.path())).unwrap(), b"{ not json");
    }

    #[test]
    fn default_names() {
        assert_eq!(default_name(Path::new("/w/app/node_modules")), "app");
        assert_eq!(default_name(Path::new("/w/lib")), "lib");
    }
}
