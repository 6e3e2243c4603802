//! Link farms: a set of layered manifests materialized as real directories, symlinks and hard
//! links to blobs, cached in the store so the next `run --isolate` of the same layers starts
//! at once.
//!
//! Layout: `<store>/farms/<key>/` holds `root/` (the merged tree; a base layer's root is
//! `root/` itself, any other layer sits at `root/<its root path>`) and `farm.json` (what it
//! was built from). `<key>` is the BLAKE3 of every layer's mount point and entries (see
//! [`key`]), so a changed tree is a new farm and an unchanged one, ingested again, is not. A farm is built in `<store>/farms/.build-<pid>-<n>/`
//! (flocked while building) and renamed into place when complete, so a farm under its final
//! name is always whole; builders that died leave `.build-*` directories that the next build
//! or `vrift gc --farms` removes (their flock is free).
//!
//! Files are hard links to the blobs (same inode: no data copied); where a link is impossible
//! (another filesystem, the 65,000-link cap, a foreign owner under `protected_hardlinks`, an
//! exec bit the blob does not share) the file is copied. Directories keep their manifest
//! mode plus `u+rwx`, so a farm can always be deleted; the farm is only ever mounted
//! read-only (as an overlay lower layer), so that bit grants nothing inside.
//!
//! While a run uses a farm it holds a shared `flock` on the farm directory; `gc --farms
//! --delete` takes it exclusively (without waiting) and skips farms in use. A farm's mtime is
//! its last use.
// Builds the link farm with raw *at calls on held descriptors.
#![allow(unsafe_code)]

use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{bail, Context, Result};
use vrift_cas::Cas;
use vrift_manifest::layer::{self, Merged};
use vrift_manifest::{Kind, Manifest};
use vrift_pipeline::materialize::Node as MNode;

pub const FARMS_DIR: &str = "farms";
pub const ROOT_DIR: &str = "root";
const META_FILE: &str = "farm.json";
const BUILD_PREFIX: &str = ".build-";
const DELETE_PREFIX: &str = ".del-";

/// One layer of a farm: a manifest and where its root appears (absolute, normalized: no
/// trailing slash except for `/` itself).
pub struct Layer<'a> {
    pub manifest: &'a Manifest,
    pub at: Vec<u8>,
}

/// What a farm is, in both cache keys: bumped whenever the same layers would build a
/// different farm (v2: files whose blob shows another mtime second are copies; v3: so are
/// repeats of content, one inode per file).
const FARM_FORMAT: &[u8] = b"vrift-farm-v3\0";

/// The cache key of a layer list: BLAKE3 over every layer's mount point and, per entry, what
/// the farm is made of (path, kind, mode, size, content hash, symlink target, the mtime: a
/// directory's, a file's second, which decides between link and copy). Not the raw manifest bytes: those also hold the ingest time and the re-ingest
/// cache (device, inode), so the same tree ingested twice (a transient ingest of an unchanged
/// directory) would otherwise never hit the cache.
pub fn key(layers: &[Layer<'_>]) -> String {
    let mut h = blake3::Hasher::new();
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    buf.extend_from_slice(FARM_FORMAT);
    for l in layers {
        buf.extend_from_slice(b"L");
        buf.extend_from_slice(&(l.at.len() as u64).to_le_bytes());
        buf.extend_from_slice(&l.at);
        buf.extend_from_slice(&(l.manifest.len() as u64).to_le_bytes());
        for e in l.manifest.iter() {
            let path = e.path();
            let target = e.target();
            let kind = e.kind();
            buf.push(kind as u8);
            buf.extend_from_slice(&(path.len() as u32).to_le_bytes());
            buf.extend_from_slice(path);
            buf.extend_from_slice(&e.mode().to_le_bytes());
            buf.extend_from_slice(&e.size().to_le_bytes());
            if kind == Kind::Dir {
                buf.extend_from_slice(&e.mtime_ns().to_le_bytes());
            } else if kind.has_content() {
                buf.extend_from_slice(&e.mtime_ns().div_euclid(1_000_000_000).to_le_bytes());
            }
            if kind.has_content() {
                buf.extend_from_slice(e.hash());
            }
            buf.extend_from_slice(&(target.len() as u32).to_le_bytes());
            buf.extend_from_slice(target);
            if buf.len() >= 1 << 16 {
                h.update(&buf);
                buf.clear();
            }
        }
    }
    h.update(&buf);
    h.finalize().to_hex().to_string()
}

/// The merged tree of `layers` (the one layering implementation, `vrift_manifest::layer`),
/// relative to the farm root, in component order (a directory's subtree right after it), as
/// the materializer wants it.
fn merged<'a>(layers: &'a [Layer<'a>]) -> Vec<(Vec<u8>, MNode<'a>)> {
    let views: Vec<layer::Layer<'a>> = layers
        .iter()
        .map(|l| layer::Layer::new(&l.at, l.manifest.view()))
        .collect();
    // Already in component order (a directory's subtree right after it), as the
    // materializer wants.
    layer::walk(&views, b"/")
        .into_iter()
        .map(|(k, n)| {
            let n = match n {
                Merged::Dir(Some((_, e))) => MNode::Dir {
                    mode: e.mode(),
                    mtime_ns: e.mtime_ns(),
                },
                // A mount point's parent no layer has: as `mkdir -p` would make it.
                Merged::Dir(None) => MNode::Dir {
                    mode: 0o755,
                    mtime_ns: 0,
                },
                Merged::Leaf(_, e) => MNode::Leaf(e),
            };
            (k, n)
        })
        .collect()
}

/// What a build did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct BuildStats {
    pub dirs: u64,
    pub files: u64,
    pub symlinks: u64,
    pub linked: u64,
    pub copied: u64,
    pub seconds: f64,
}

/// A farm ready to be mounted, held in use (shared flock) for as long as this lives.
pub struct Farm {
    pub dir: PathBuf,
    pub root: PathBuf,
    /// Set when this call built the farm (cold start).
    pub built: Option<BuildStats>,
    _in_use: File,
}

fn farms_dir(store: &Path) -> PathBuf {
    store.join(FARMS_DIR)
}

/// Opens the finished farm at `dir` and marks it in use, or `None` if there is none.
fn try_open(dir: &Path) -> Result<Option<Farm>> {
    let f = match File::open(dir) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", dir.display())),
    };
    f.lock_shared()
        .with_context(|| format!("cannot lock {}", dir.display()))?;
    // gc may have renamed it away between our open and the lock.
    let same = match (fs::metadata(dir), f.metadata()) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    };
    if !same || !dir.join(META_FILE).is_file() {
        return Ok(None);
    }
    // Last use = the farm directory's mtime.
    let c = super::sys::cstr(dir)?;
    // SAFETY: valid path; NULL times means "now".
    unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) };
    Ok(Some(Farm {
        dir: dir.to_path_buf(),
        root: dir.join(ROOT_DIR),
        built: None,
        _in_use: f,
    }))
}

static BUILD_COUNTER: AtomicU64 = AtomicU64::new(0);

/// What a farm build tells whoever started the run: that it starts (the counters it
/// advances, one per file or symlink placed, and how many there are), and that it ended —
/// always before CMD starts, so a progress line is off the terminal before CMD writes.
pub enum BuildEvent<'a> {
    Started {
        counters: &'a std::sync::Arc<vrift_pipeline::Counters>,
        total: u64,
    },
    Ended,
}

/// A listener for [`BuildEvent`]s (the CLI draws a progress line from them).
#[derive(Clone)]
pub struct BuildObserver(pub std::sync::Arc<dyn Fn(BuildEvent<'_>) + Send + Sync>);

impl std::fmt::Debug for BuildObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BuildObserver")
    }
}

/// Sends [`BuildEvent::Ended`] however the build ends.
struct EndOnDrop<'a>(Option<&'a BuildObserver>);

impl Drop for EndOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(o) = self.0 {
            (o.0)(BuildEvent::Ended);
        }
    }
}

/// The farm of `layers`: from the cache, or built now (telling `observer` how it goes).
pub fn ensure(
    cas: &Cas,
    layers: &[Layer<'_>],
    manifest_paths: &[PathBuf],
    observer: Option<&BuildObserver>,
) -> Result<Farm> {
    let farms = farms_dir(cas.root());
    // Warm path: the manifests' headers (their payload checksum) name the farm through the
    // index, without reading every entry.
    let quick = quick_key(layers);
    let index = farms.join(INDEX_DIR).join(&quick);
    if let Ok(target) = fs::read_link(&index) {
        let name = target.as_os_str().as_bytes();
        if name.len() == 64 && name.iter().all(u8::is_ascii_hexdigit) {
            if let Some(f) = try_open(&farms.join(&target))? {
                return Ok(f);
            }
        }
    }
    let key = key(layers);
    let dir = farms.join(&key);
    if let Some(f) = try_open(&dir)? {
        write_index(&farms, &quick, &key);
        return Ok(f);
    }
    fs::create_dir_all(&farms).with_context(|| format!("cannot create {}", farms.display()))?;
    // Shared store lock while linking: `gc --delete` (exclusive) cannot remove a blob we are
    // about to link. Once linked, the farm keeps the inode whatever gc does to the name.
    let _store_lock = vrift_cas::lock::StoreLock::acquire(
        cas.root(),
        vrift_cas::lock::LockKind::Shared,
        true,
        |_| eprintln!("vrift run: waiting for the store lock held by another process"),
    )?;
    sweep_stale(&farms);
    if let Some(f) = try_open(&dir)? {
        return Ok(f);
    }
    let n = BUILD_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = farms.join(format!("{BUILD_PREFIX}{}-{n}", std::process::id()));
    fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let lock = File::open(&tmp).with_context(|| format!("cannot open {}", tmp.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", tmp.display()))?;
    let stats = match build(cas, layers, &tmp.join(ROOT_DIR), observer) {
        Ok(s) => s,
        Err(e) => {
            let _ = remove_tree(&tmp);
            return Err(e);
        }
    };
    let meta = serde_json::json!({
        "key": key,
        "layers": layers.iter().zip(manifest_paths).map(|(l, p)| serde_json::json!({
            "manifest": p.display().to_string(),
            "at": String::from_utf8_lossy(&l.at),
            "entries": l.manifest.len(),
        })).collect::<Vec<_>>(),
        "built": stats,
    });
    fs::write(tmp.join(META_FILE), serde_json::to_vec_pretty(&meta)?)
        .with_context(|| format!("cannot write {}", tmp.join(META_FILE).display()))?;
    drop(lock);
    match fs::rename(&tmp, &dir) {
        Ok(()) => {}
        // Another run finished the same farm first: use theirs.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOTEMPTY)) => {
            let _ = remove_tree(&tmp);
        }
        Err(e) => {
            let _ = remove_tree(&tmp);
            return Err(e).with_context(|| format!("cannot rename farm into {}", dir.display()));
        }
    }
    match try_open(&dir)? {
        Some(mut f) => {
            f.built = Some(stats);
            write_index(&farms, &quick, &key);
            Ok(f)
        }
        None => bail!("link farm {} vanished right after it was built (a concurrent `vrift gc --farms --delete`?); run again", dir.display()),
    }
}

/// `<store>/farms/.index/<quick key>` → symlink to `<key>`: see [`quick_key`].
const INDEX_DIR: &str = ".index";

/// A cheap name for a layer list: BLAKE3 over every layer's mount point and manifest header
/// (which holds the xxh3 checksum of the whole payload). Distinct manifests with the same
/// entries (re-ingested) get distinct quick keys but share a farm through the index.
fn quick_key(layers: &[Layer<'_>]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(FARM_FORMAT);
    h.update(b"quick\0");
    for l in layers {
        h.update(&(l.at.len() as u64).to_le_bytes());
        h.update(&l.at);
        h.update(&l.manifest.header().to_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// Records `quick` → `key` (best effort; atomic by rename).
fn write_index(farms: &Path, quick: &str, key: &str) {
    let dir = farms.join(INDEX_DIR);
    let _ = fs::create_dir_all(&dir);
    let n = BUILD_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".tmp-{}-{n}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    if std::os::unix::fs::symlink(key, &tmp).is_ok() && fs::rename(&tmp, dir.join(quick)).is_err() {
        let _ = fs::remove_file(&tmp);
    }
}

/// Removes index entries whose farm is gone, and leftover temp links.
fn sweep_index(farms: &Path) {
    let Ok(rd) = fs::read_dir(farms.join(INDEX_DIR)) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let stale = match fs::read_link(&p) {
            Ok(t) => !farms.join(t).is_dir(),
            Err(_) => true,
        };
        let tmp = e.file_name().as_bytes().starts_with(b".tmp-")
            && e.metadata().is_ok_and(|m| {
                m.modified()
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age.as_secs() > 60)
            });
        if stale || tmp {
            let _ = fs::remove_file(&p);
        }
    }
}

/// Removes `.build-*` and `.del-*` directories nobody holds a lock on (their process died).
pub fn sweep_stale(farms: &Path) -> u64 {
    let mut removed = 0;
    let Ok(rd) = fs::read_dir(farms) else {
        return 0;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let b = name.as_bytes();
        if !(b.starts_with(BUILD_PREFIX.as_bytes()) || b.starts_with(DELETE_PREFIX.as_bytes())) {
            continue;
        }
        let p = e.path();
        let Ok(f) = File::open(&p) else { continue };
        if abandoned(&f, b) && remove_tree(&p).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Whether a `<prefix><pid>-<n>` work directory (opened as `f`) belongs to nobody: its
/// `flock` is free *and* its creator is gone. The pid check covers the moment between
/// creating a directory and locking it (or unlocking and renaming it).
pub fn abandoned(f: &File, name: &[u8]) -> bool {
    if f.try_lock().is_err() {
        return false;
    }
    let digits: Vec<u8> = name
        .iter()
        .skip_while(|b| !b.is_ascii_digit())
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    let Some(pid) = std::str::from_utf8(&digits)
        .ok()
        .and_then(|d| d.parse::<libc::pid_t>().ok())
    else {
        return true;
    };
    if pid as u32 == std::process::id() {
        return false;
    }
    let exists = vrift_cas::lock::pid_alive(pid as u32);
    // A zombie is gone too (its parent just has not reaped it yet).
    let zombie = || {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|st| {
                st.rfind(')')
                    .map(|i| st[i + 1..].trim_start().starts_with('Z'))
            })
            .unwrap_or(false)
    };
    !exists || zombie()
}

/// Builds the merged tree of `layers` at `dest` (which must not exist), through the one
/// materializer that `checkout` uses too (fd-relative, never following a symlink, blobs
/// checked before they are linked, setuid/setgid dropped).
fn build(
    cas: &Cas,
    layers: &[Layer<'_>],
    dest: &Path,
    observer: Option<&BuildObserver>,
) -> Result<BuildStats> {
    use vrift_pipeline::materialize::{self, Options};
    let t0 = std::time::Instant::now();
    let nodes = merged(layers);
    let counters = std::sync::Arc::new(vrift_pipeline::Counters::default());
    let _end = EndOnDrop(observer);
    if let Some(o) = observer {
        let total = nodes
            .iter()
            .filter(|(_, n)| matches!(n, MNode::Leaf(_)))
            .count() as u64;
        (o.0)(BuildEvent::Started {
            counters: &counters,
            total,
        });
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(dest)
        .with_context(|| format!("cannot create {}", dest.display()))?;
    let dest_fd = vrift_pipeline::dirs::open_root(dest)
        .with_context(|| format!("cannot open {}", dest.display()))?;
    let threads = std::thread::available_parallelism()
        .map(std::num::NonZero::get)
        .unwrap_or(2)
        .clamp(1, 16);
    let opts = Options {
        threads,
        dir_mode_add: 0o700,
        mtime_second_exact: true,
        distinct_inodes: true,
        ..Options::default()
    };
    let r = materialize::materialize(cas, dest, dest_fd, &nodes, &opts, &counters);
    if r.errors > 0 {
        let issues = counters.take_issues();
        let shown: Vec<String> = issues
            .iter()
            .take(5)
            .map(|i| format!("{}: {}", i.path.display(), i.message))
            .collect();
        let more = if r.errors > 5 {
            format!(" (and {} more)", r.errors - 5)
        } else {
            String::new()
        };
        bail!(
            "cannot build the link farm: {}{more}; `vrift verify` checks the store",
            shown.join("; ")
        );
    }
    Ok(BuildStats {
        dirs: r.dirs + 1,
        files: r.files,
        symlinks: r.symlinks,
        linked: r.linked,
        copied: r.copied + r.reflinked,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

pub use vrift_cas::clean::remove_tree;

/// A cached farm, as `gc --farms` sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FarmInfo {
    pub key: String,
    pub path: PathBuf,
    /// Last use, seconds since the epoch.
    pub last_used: i64,
    pub in_use: bool,
    pub layers: Vec<String>,
}

/// Every finished farm of the store.
pub fn list(store: &Path) -> Result<Vec<FarmInfo>> {
    let farms = farms_dir(store);
    let rd = match fs::read_dir(&farms) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", farms.display())),
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = e.path();
        let Ok(md) = fs::metadata(&path) else {
            continue;
        };
        let in_use = match File::open(&path) {
            Ok(f) => f.try_lock().is_err(),
            Err(_) => false,
        };
        let layers = fs::read(path.join(META_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                v["layers"].as_array().map(|a| {
                    a.iter()
                        .filter_map(|l| l["manifest"].as_str().map(String::from))
                        .collect()
                })
            })
            .unwrap_or_default();
        out.push(FarmInfo {
            key: name,
            path,
            last_used: md.mtime(),
            in_use,
            layers,
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Deletes one farm unless it is in use; `Ok(false)` when it is.
pub fn delete(info: &FarmInfo) -> Result<bool> {
    let f =
        File::open(&info.path).with_context(|| format!("cannot open {}", info.path.display()))?;
    if f.try_lock().is_err() {
        return Ok(false);
    }
    let parent = info.path.parent().unwrap_or(Path::new("."));
    let n = BUILD_COUNTER.fetch_add(1, Ordering::Relaxed);
    let doomed = parent.join(format!("{DELETE_PREFIX}{}-{n}", std::process::id()));
    fs::rename(&info.path, &doomed)
        .with_context(|| format!("cannot move {} aside", info.path.display()))?;
    drop(f);
    remove_tree(&doomed).with_context(|| format!("cannot remove {}", doomed.display()))?;
    Ok(true)
}

/// Stale `.build-*`/`.del-*` directories removed, for `gc --farms --delete` (which also
/// drops index entries of deleted farms).
pub fn sweep(store: &Path) -> u64 {
    let farms = farms_dir(store);
    let n = sweep_stale(&farms);
    sweep_index(&farms);
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use vrift_manifest::{EntryInput, ManifestBuilder};

    fn manifest(root: &str, entries: Vec<EntryInput>) -> Manifest {
        let mut b = ManifestBuilder::new(root);
        for e in entries {
            b.push(e);
        }
        b.build().unwrap()
    }

    fn paths(t: &[(Vec<u8>, MNode<'_>)]) -> Vec<String> {
        t.iter()
            .map(|(k, n)| {
                let kind = match n {
                    MNode::Dir { .. } => "d",
                    MNode::Leaf(e) => match e.kind() {
                        Kind::Symlink => "l",
                        _ => "f",
                    },
                };
                format!("{kind}:{}", String::from_utf8_lossy(k))
            })
            .collect()
    }

    #[test]
    fn merge_like_layered_view() {
        let base = manifest(
            "/ignored",
            vec![
                EntryInput::file("bin/sh", 1, [1; 32]),
                EntryInput::file("etc/passwd", 1, [2; 32]),
                EntryInput::file("etc/motd", 1, [3; 32]),
                EntryInput::dir("srv/data"),
            ],
        );
        let app = manifest(
            "/w/app",
            vec![
                EntryInput::file("a", 1, [4; 32]),
                EntryInput::file("d/old", 1, [5; 32]),
            ],
        );
        let top = manifest(
            "/w/app",
            vec![
                EntryInput::whiteout("d"),
                EntryInput::file("d2/new", 1, [6; 32]),
            ],
        );
        let over = manifest(
            "/",
            vec![
                EntryInput::whiteout("etc/motd"),
                EntryInput::file("srv", 1, [7; 32]),
            ],
        );
        let layers = [
            Layer {
                manifest: &base,
                at: b"/".to_vec(),
            },
            Layer {
                manifest: &app,
                at: b"/w/app".to_vec(),
            },
            Layer {
                manifest: &top,
                at: b"/w/app".to_vec(),
            },
            Layer {
                manifest: &over,
                at: b"/".to_vec(),
            },
        ];
        let t = merged(&layers);
        assert_eq!(
            paths(&t),
            [
                "d:",
                "d:bin",
                "f:bin/sh",
                "d:etc",
                "f:etc/passwd",
                "f:srv",
                "d:w",
                "d:w/app",
                "f:w/app/a",
                "d:w/app/d2",
                "f:w/app/d2/new",
            ]
        );
        // The key depends on the order of layers.
        let swapped = [
            Layer {
                manifest: &app,
                at: b"/w/app".to_vec(),
            },
            Layer {
                manifest: &base,
                at: b"/".to_vec(),
            },
        ];
        assert_ne!(key(&layers[..2]), key(&swapped));
        assert_eq!(key(&layers[..2]), key(&layers[..2]));
    }

    #[test]
    fn key_ignores_ingest_time_and_cache_fields() {
        let make = |created: i64, ino: u64, size: u64| {
            let mut b = ManifestBuilder::new("/p");
            b.set_created_unix_ns(created);
            let mut e = EntryInput::file("a", size, [1; 32]);
            e.ino = ino;
            b.push(e);
            b.build().unwrap()
        };
        let (m1, m2, m3) = (make(1, 10, 5), make(2, 20, 5), make(1, 10, 6));
        let k = |m| {
            key(&[Layer {
                manifest: m,
                at: b"/p".to_vec(),
            }])
        };
        assert_eq!(k(&m1), k(&m2));
        assert_ne!(k(&m1), k(&m3));
    }

    #[test]
    fn file_replacing_a_dir_and_back() {
        let l0 = manifest("/p", vec![EntryInput::file("x/y", 1, [1; 32])]);
        let l1 = manifest("/p", vec![EntryInput::file("x", 1, [2; 32])]);
        let l2 = manifest("/p", vec![EntryInput::file("x/z", 1, [3; 32])]);
        let l = |m| Layer {
            manifest: m,
            at: b"/p".to_vec(),
        };
        assert_eq!(paths(&merged(&[l(&l0), l(&l1)])), ["d:", "d:p", "f:p/x"]);
        assert_eq!(
            paths(&merged(&[l(&l0), l(&l1), l(&l2)])),
            ["d:", "d:p", "d:p/x", "f:p/x/z"]
        );
    }
}
