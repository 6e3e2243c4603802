//! `vrift restore DIR --key-from FILE... [-- CMD...]`: the CI cache step in one line.
//!
//! The key is a readable prefix (DIR's name and the platform, or `--key`) and the BLAKE3 of
//! the key files (lock files). Then, in order:
//! 1. **local** — the store already holds the tree saved under that key: checkout, no network;
//! 2. **remote** — the remote has it: pull (only what the store lacks) and checkout;
//! 3. **partial** — no exact hit, but a manifest under a `--restore-prefix` (the newest) is
//!    restored as a starting point, as `actions/cache` restore-keys do;
//! 4. **miss** — nothing.
//!
//! Without an exact hit and with a CMD (`npm ci`), CMD runs, DIR is ingested and saved under
//! the key (pushed when a remote is configured). A miss without CMD is exit 3 for the caller;
//! a remote that cannot be reached or refuses the credentials is an error, never a miss.
//!
//! What was restored through the store or saved is kept as `<store>/restore/<key>.vrm` and
//! registered as the project `<key>`, so `gc` keeps its blobs and the next run on this
//! machine hits locally. A store without a single blob (a fresh runner) is not used at all:
//! the tree is written straight from the packs and nothing is kept (`--link-mode hardlink`
//! goes through the store instead).

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use vrift_cas::registry::{self, Registration};
use vrift_cas::Cas;
use vrift_manifest::Manifest;
use vrift_pipeline::materialize::Options as CheckoutOptions;
use vrift_pipeline::{Counters, IngestOptions};

use crate::error::{RemoteError, Result};
use crate::keys::BUNDLE_SUFFIX;
use crate::{PullOptions, PushOptions, Remote};

/// Directory of the store holding the manifests restored or saved by key.
pub const RESTORE_DIR: &str = "restore";

/// How a restore went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hit {
    Local,
    Remote,
    Partial,
    Miss,
}

pub struct RestoreOptions {
    pub dir: PathBuf,
    /// The full key (see [`cache_key`]).
    pub key: String,
    /// Prefixes of keys to fall back to, in order of preference.
    pub restore_prefixes: Vec<String>,
    /// Run on anything but an exact hit; then DIR is saved under the key.
    pub cmd: Option<Vec<OsString>>,
    pub checkout: CheckoutOptions,
    /// Requests in flight (0: the remote's default).
    pub jobs: usize,
    /// On a store with no blobs (a fresh runner), write a tree from the remote straight from
    /// the packs, without the store (the default; off when a link mode is asked for).
    pub direct: bool,
    /// Called with `true` right before CMD starts and `false` once it ended: CMD owns the
    /// terminal meanwhile (a progress line must be off it before CMD writes its first line).
    pub around_cmd: Option<Box<dyn Fn(bool) + Send + Sync>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub hit: Hit,
    pub key: String,
    /// The key whose tree was restored (the key itself, a fallback's, or none).
    pub restored_key: Option<String>,
    pub dir: PathBuf,
    /// How the tree was written: `store` (pulled into the store, checked out as links),
    /// `direct` (a fresh runner: from the packs straight into DIR), `none`.
    pub via: &'static str,
    /// Files written into DIR.
    pub files: u64,
    /// CMD ran (and succeeded) and DIR was saved under the key.
    pub saved: bool,
    /// Saved to the remote too.
    pub pushed: bool,
    /// Bytes received and sent over the wire, and S3 requests.
    pub received_bytes: u64,
    pub sent_bytes: u64,
    pub requests: u64,
    pub seconds: f64,
}

/// `<prefix>-<32 hex digits of BLAKE3 over the key files>`: readable in a bucket listing,
/// and different for any change of a key file's name or content.
pub fn cache_key(prefix: &str, key_files: &[PathBuf]) -> Result<String> {
    let mut h = blake3::Hasher::new();
    h.update(b"vrift-restore-key-v1\0");
    for f in key_files {
        let data = std::fs::read(f).map_err(|e| RemoteError::io(f, e))?;
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        h.update(name.as_bytes());
        h.update(b"\0");
        h.update(&(data.len() as u64).to_le_bytes());
        h.update(&data);
    }
    let key = format!("{prefix}-{}", &h.finalize().to_hex()[..32]);
    crate::keys::check_name(&key)?;
    Ok(key)
}

/// The default readable prefix: DIR's name (leading dots dropped: `.venv` → `venv`) and the
/// platform, e.g. `node_modules-linux-x86_64`.
pub fn default_prefix(dir: &Path) -> String {
    let name = dir
        .canonicalize()
        .ok()
        .as_deref()
        .or(Some(dir))
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().trim_start_matches('.').to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "tree".to_string());
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{clean}-{}-{}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// Whether the store holds no blob at all.
fn store_is_empty(cas: &Cas) -> bool {
    match std::fs::read_dir(cas.blob_dir()) {
        Ok(mut rd) => rd.next().is_none(),
        Err(_) => true,
    }
}

fn record_path(cas: &Cas, key: &str) -> PathBuf {
    cas.root().join(RESTORE_DIR).join(format!("{key}.vrm"))
}

/// The manifest saved locally under `key`, if it is there, valid and every blob it names is
/// in the store.
fn local_record(cas: &Cas, key: &str) -> Option<PathBuf> {
    let p = record_path(cas, key);
    let m = Manifest::open(&p).ok()?;
    let complete = m
        .iter()
        .filter(|e| e.kind().has_content())
        .all(|e| cas.has_blob(e.hash(), e.size()));
    complete.then_some(p)
}

fn register(cas: &Cas, key: &str, dir: &Path, manifest: &Path) -> Result<()> {
    let m = Manifest::open(manifest)?;
    let (mut files, mut bytes) = (0u64, 0u64);
    for e in m.iter().filter(|e| e.kind().has_content()) {
        files += 1;
        bytes += e.size();
    }
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    registry::register(
        cas.root(),
        &Registration {
            name: key,
            source: &dir,
            manifest,
            files,
            bytes,
        },
    )?;
    Ok(())
}

fn checkout(cas: &Cas, manifest: &Path, opts: &RestoreOptions) -> Result<u64> {
    let m = Manifest::open(manifest)?;
    let counters = Counters::default();
    let r = vrift_pipeline::checkout_replacing(cas, &m, &opts.dir, &opts.checkout, &counters)?;
    if r.errors > 0 {
        let first = counters
            .take_issues()
            .into_iter()
            .next()
            .map(|i| format!("{}: {}", i.path.display(), i.message))
            .unwrap_or_default();
        return Err(RemoteError::Io {
            path: opts.dir.clone(),
            source: std::io::Error::other(format!(
                "checkout failed for {} entries ({first}); DIR was left as it was",
                r.errors
            )),
        });
    }
    Ok(r.files)
}

/// The newest manifest on the remote whose name starts with one of `prefixes` (the first
/// prefix with any match wins), as its name.
fn newest_under(remote: &Remote, prefixes: &[String]) -> Result<Option<String>> {
    if prefixes.is_empty() {
        return Ok(None);
    }
    let names = remote.list_manifests()?;
    for p in prefixes {
        if let Some(m) = names
            .iter()
            .filter(|m| m.name.starts_with(p.as_str()))
            .max_by(|a, b| a.recency().cmp(&b.recency()))
        {
            return Ok(Some(m.name.clone()));
        }
    }
    Ok(None)
}

/// See the module docs.
pub fn restore(cas: &Cas, remote: Option<&Remote>, opts: &RestoreOptions) -> Result<RestoreReport> {
    let started = Instant::now();
    let key = opts.key.clone();
    let record = record_path(cas, &key);
    let mut report = RestoreReport {
        hit: Hit::Miss,
        key: key.clone(),
        restored_key: None,
        dir: opts.dir.clone(),
        via: "none",
        files: 0,
        saved: false,
        pushed: false,
        received_bytes: 0,
        sent_bytes: 0,
        requests: 0,
        seconds: 0.0,
    };
    let pull = |remote: &Remote, name: &str| -> Result<()> {
        std::fs::create_dir_all(record.parent().unwrap_or(cas.root()))
            .map_err(|e| RemoteError::io(cas.root(), e))?;
        let out = if name == key {
            record.clone()
        } else {
            record_path(cas, name)
        };
        remote.pull(
            cas,
            name,
            &out,
            &PullOptions {
                jobs: opts.jobs,
                register: false,
                name: None,
            },
        )?;
        Ok(())
    };

    // A store without a single blob (a fresh runner) has nothing to share: trees from the
    // remote go straight into DIR.
    let direct = opts.direct && store_is_empty(cas);
    let extract = |r: &Remote, name: &str| -> Result<u64> {
        let (bkey, bundle) = r.fetch_bundle(name)?.ok_or_else(|| RemoteError::NotFound {
            key: crate::keys::bundle_of(&r.keys().manifest_named(name).unwrap_or_default()),
        })?;
        let mut files = 0;
        vrift_pipeline::replace_dir(&opts.dir, |at| {
            files = r.extract(cas.root(), &bkey, &bundle, at, opts.jobs)?;
            Ok::<bool, RemoteError>(true)
        })?;
        Ok(files)
    };
    if let Some(p) = local_record(cas, &key) {
        report.hit = Hit::Local;
        report.via = "store";
        report.files = checkout(cas, &p, opts)?;
        report.restored_key = Some(key.clone());
    } else if let Some(r) = remote {
        // An error here (credentials, endpoint) is the command's error, never a miss.
        if r.has_manifest(&key)? {
            report.hit = Hit::Remote;
            if direct {
                report.files = extract(r, &key)?;
                report.via = "direct";
            } else {
                pull(r, &key)?;
                report.files = checkout(cas, &record, opts)?;
                report.via = "store";
                register(cas, &key, &opts.dir, &record)?;
            }
            report.restored_key = Some(key.clone());
        }
    }
    if report.hit == Hit::Miss {
        let fallback = match remote {
            Some(r) => newest_under(r, &opts.restore_prefixes)?,
            None => None,
        };
        if let (Some(r), Some(name)) = (remote, fallback) {
            report.hit = Hit::Partial;
            if direct {
                report.files = extract(r, &name)?;
                report.via = "direct";
            } else {
                pull(r, &name)?;
                report.files = checkout(cas, &record_path(cas, &name), opts)?;
                report.via = "store";
            }
            report.restored_key = Some(name);
        }
    }
    if report.hit != Hit::Local && report.hit != Hit::Remote {
        if let Some(cmd) = &opts.cmd {
            if let Some(f) = &opts.around_cmd {
                f(true);
            }
            let ran = run_cmd(cmd);
            if let Some(f) = &opts.around_cmd {
                f(false);
            }
            ran?;
            save(cas, remote, opts, &record, direct, &mut report)?;
        }
    }
    if let Some(r) = remote {
        let st = r.stats();
        report.received_bytes = crate::stats::RemoteStats::get(&st.bytes_down);
        report.sent_bytes = crate::stats::RemoteStats::get(&st.bytes_up);
        report.requests = crate::stats::RemoteStats::total(&st.requests);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn run_cmd(cmd: &[OsString]) -> Result<()> {
    let Some((prog, args)) = cmd.split_first() else {
        return Ok(());
    };
    // Its output goes to stderr: stdout is for `--json` (and CI logs show stderr).
    let err = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| RemoteError::io(PathBuf::from(prog), e))?;
    let st = std::process::Command::new(prog)
        .args(args)
        .stdout(std::process::Stdio::from(err))
        .status()
        .map_err(|e| RemoteError::io(PathBuf::from(prog), e))?;
    if !st.success() {
        return Err(RemoteError::Io {
            path: PathBuf::from(prog),
            source: std::io::Error::other(format!("the install command failed ({st})")),
        });
    }
    Ok(())
}

/// Ingests DIR under the key, keeps the manifest as the local record, pushes it.
///
/// `direct` (a fresh runner: the store holds no blob, and a remote takes the tree): the
/// ingest only hashes (index mode) and the push packs straight from DIR's files, so neither
/// a shard directory nor a link per blob is made for a store the runner throws away, and DIR
/// keeps its files as they are. The record then names blobs the store lacks: it is no local
/// hit later, the remote is.
fn save(
    cas: &Cas,
    remote: Option<&Remote>,
    opts: &RestoreOptions,
    record: &Path,
    direct: bool,
    report: &mut RestoreReport,
) -> Result<()> {
    std::fs::create_dir_all(record.parent().unwrap_or(cas.root()))
        .map_err(|e| RemoteError::io(cas.root(), e))?;
    let direct = direct && remote.is_some();
    let mut io = IngestOptions::new(opts.dir.clone(), record.to_path_buf());
    io.name = Some(opts.key.clone());
    io.reuse_previous = true;
    if direct {
        io.mode = vrift_pipeline::Mode::Index;
    } else if record.exists() && local_record(cas, &opts.key).is_none() {
        // A record whose blobs the store lacks (an index-only save, or a gc since): its
        // unchanged files would be taken from it and never stored.
        io.reuse_previous = false;
    }
    let counters = Arc::new(Counters::default());
    let r = vrift_pipeline::ingest(&io, cas.root(), &counters, |_| {
        eprintln!("vrift restore: waiting for the store (a gc or clean is running)");
    })?;
    report.files = r.files;
    report.saved = true;
    if let Some(remote) = remote {
        remote.push(
            cas,
            record,
            &PushOptions {
                name: opts.key.clone(),
                check: crate::CheckMode::Auto,
                jobs: opts.jobs,
                tree: direct.then(|| r.details.source.clone()),
            },
        )?;
        report.pushed = true;
    }
    Ok(())
}

/// A manifest on the remote, as `remote ls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestInfo {
    pub name: String,
    pub size: u64,
    /// Seconds since the epoch.
    pub modified: i64,
    /// The same in milliseconds, as precise as the server says (S3 listings give
    /// milliseconds): what "newest" ranks by, so two pushes within a second do not tie.
    pub modified_ms: i64,
}

impl ManifestInfo {
    /// Newer manifests rank higher; equal times fall back to the name, so the order is
    /// the same on every runner.
    pub fn recency(&self) -> (i64, &str) {
        (self.modified_ms, &self.name)
    }
}

impl Remote {
    /// Whether a bundle is on the remote under `name`.
    pub fn has_manifest(&self, name: &str) -> Result<bool> {
        let key = crate::keys::bundle_of(&self.keys.manifest_named(name)?);
        self.rt.block_on(self.exists(&key))
    }

    /// Every named manifest (bundle) on the remote.
    pub fn list_manifests(&self) -> Result<Vec<ManifestInfo>> {
        use futures::StreamExt;
        use object_store::ObjectStore;
        let prefix = self.keys.manifests();
        self.rt.block_on(async {
            let mut listing = self.store.list(Some(&crate::obj_path(&prefix)));
            let mut out = Vec::new();
            while let Some(item) = listing.next().await {
                let meta = item.map_err(|e| self.error(&prefix, "list", e))?;
                let key = meta.location.as_ref();
                let rel = key
                    .strip_prefix(prefix.as_str())
                    .map(|r| r.trim_start_matches('/'))
                    .unwrap_or(key);
                // Named bundles only: `manifests/<name>.vrmz`, not `manifests/blake3/…`.
                if let Some(name) = rel.strip_suffix(BUNDLE_SUFFIX).filter(|n| !n.contains('/')) {
                    out.push(ManifestInfo {
                        name: name.to_string(),
                        size: meta.size,
                        modified: meta.last_modified.timestamp(),
                        modified_ms: meta.last_modified.timestamp_millis(),
                    });
                }
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_key_files() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("package-lock.json");
        std::fs::write(&a, "v1").unwrap();
        let k1 = cache_key("nm-linux", std::slice::from_ref(&a)).unwrap();
        assert!(k1.starts_with("nm-linux-") && k1.len() == "nm-linux-".len() + 32);
        assert_eq!(k1, cache_key("nm-linux", std::slice::from_ref(&a)).unwrap());
        std::fs::write(&a, "v2").unwrap();
        assert_ne!(k1, cache_key("nm-linux", std::slice::from_ref(&a)).unwrap());
        assert!(cache_key("nm", &[d.path().join("missing")]).is_err());
        assert_eq!(
            default_prefix(Path::new("/x/.venv")),
            format!("venv-{}-{}", std::env::consts::OS, std::env::consts::ARCH)
        );
    }
}
