//! `vrift push`: the blobs the remote lacks, packed and compressed, then the manifest bundle.
//!
//! Blobs the remote's pack indexes already list are not sent again (the indexes are read once
//! and cached in the store); the rest go up in new packs ([`crate::pack`]), each followed by
//! its index; the manifest's bundle ([`crate::bundle`]) goes last, so a manifest on the remote
//! always has every blob it names. A push killed midway leaves complete packs behind (their
//! indexes say so): a rerun does not send those blobs again.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use object_store::ObjectStoreExt;
use serde::Serialize;
use vrift_cas::Cas;
use vrift_manifest::{Hash, Manifest};

use crate::error::{RemoteError, Result};
use crate::keys::bundle_of;
use crate::stats::RemoteStats;
use crate::{obj_path, Remote};

/// How to learn which blobs the remote has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckMode {
    /// The same manifest already pushed (its bundle by hash is there) means nothing to send;
    /// else the packs' indexes say what is there.
    Auto,
    /// Always read the indexes (`list` and `head` are accepted for the first format's flags).
    List,
    Head,
}

pub struct PushOptions {
    /// Project name: the manifest also lands at `manifests/<name>.vrmz`.
    pub name: String,
    pub check: CheckMode,
    /// Requests in flight (0: the configured default).
    pub jobs: usize,
    /// Read the blobs from this tree (each from the first file of the manifest that holds
    /// it) instead of the store: a tree ingested in index mode, whose blobs the store lacks.
    /// Each is checked against its name as it is read, like a stored one.
    pub tree: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    pub remote: String,
    /// `manifests/<name>.vrmz` (moves with every push of the name).
    pub manifest_key: String,
    /// `s3://BUCKET/<manifest_key>`.
    pub manifest_url: String,
    /// `manifests/blake3/<hex>.vrmz` (this exact manifest, forever).
    pub manifest_hash_key: String,
    pub blobs_total: u64,
    pub total_bytes: u64,
    /// Blobs sent and their size before compression.
    pub blobs_uploaded: u64,
    pub uploaded_bytes: u64,
    pub blobs_present: u64,
    pub present_bytes: u64,
    /// New packs, and the bytes that went over the wire (packs, indexes, bundles).
    pub packs_uploaded: u64,
    pub sent_bytes: u64,
    /// How presence was learnt: `manifest` (this exact manifest was on the remote already)
    /// or `index` (the packs' indexes).
    pub check: &'static str,
    pub check_seconds: f64,
    pub seconds: f64,
    pub blobs_per_sec: f64,
    pub bytes_per_sec: f64,
    pub requests: u64,
    pub retries: u64,
}

#[derive(Clone, Copy)]
struct BlobRef {
    hash: Hash,
    size: u64,
}

impl Remote {
    /// Uploads what the remote lacks of `manifest_path` (whose blobs must be in `cas`), then
    /// its bundle.
    pub fn push(&self, cas: &Cas, manifest_path: &Path, opts: &PushOptions) -> Result<PushReport> {
        let started = Instant::now();
        crate::keys::check_name(&opts.name)?;
        let manifest = Manifest::open(manifest_path)?;
        let blobs = referenced_blobs(&manifest);
        let st = &self.stats;
        RemoteStats::add(&st.blobs_total, blobs.len() as u64);
        RemoteStats::add(&st.bytes_total, blobs.iter().map(|b| b.size).sum());
        // Every blob must be here before anything goes up: a push never leaves the remote a
        // manifest it cannot serve, and fails before spending bandwidth.
        let source: HashMap<(Hash, u64), PathBuf> = match &opts.tree {
            // From the tree: the first file that held the content when it was hashed (paths
            // validated with the manifest: relative, no `..`).
            Some(tree) => {
                use std::os::unix::ffi::OsStrExt;
                let mut first = HashMap::with_capacity(blobs.len());
                for e in manifest.iter().filter(|e| e.kind().has_content()) {
                    first
                        .entry((*e.hash(), e.size()))
                        .or_insert_with(|| tree.join(std::ffi::OsStr::from_bytes(e.path())));
                }
                first
            }
            None => {
                for (b, entry) in &blobs_with_entries(&manifest, &blobs) {
                    if !cas.has_blob(&b.hash, b.size) {
                        return Err(RemoteError::MissingLocalBlob {
                            path: cas.blob_path(&b.hash, b.size),
                            entry: entry.clone(),
                        });
                    }
                }
                HashMap::new()
            }
        };
        let locate = |hash: &Hash, size: u64| -> PathBuf {
            source
                .get(&(*hash, size))
                .cloned()
                .unwrap_or_else(|| cas.blob_path(hash, size))
        };
        let jobs = if opts.jobs > 0 {
            opts.jobs
        } else {
            self.settings.jobs
        };
        let bytes = manifest.as_bytes().to_vec();
        let manifest_hash = *blake3::hash(&bytes).as_bytes();
        let manifest_key = bundle_of(&self.keys.manifest_named(&opts.name)?);
        let manifest_hash_key = bundle_of(&self.keys.manifest_by_hash(&manifest_hash));
        drop(manifest);
        let pairs: Vec<(Hash, u64)> = blobs.iter().map(|b| (b.hash, b.size)).collect();

        let check_started = Instant::now();
        let same =
            opts.check == CheckMode::Auto && self.rt.block_on(self.exists(&manifest_hash_key))?;
        let mut packs_uploaded = 0u64;
        let check;
        let check_seconds;
        if same {
            check = "manifest";
            check_seconds = check_started.elapsed().as_secs_f64();
            RemoteStats::add(&st.blobs_checked, blobs.len() as u64);
            RemoteStats::add(&st.blobs_present, blobs.len() as u64);
            RemoteStats::add(&st.bytes_present, blobs.iter().map(|b| b.size).sum());
            // The name moves to it.
            self.rt.block_on(async {
                let b = self.get_bytes(&manifest_hash_key).await?;
                self.put_bytes(&manifest_key, b).await
            })?;
        } else {
            check = "index";
            let catalog = self.rt.block_on(self.catalog(cas.root(), jobs))?;
            check_seconds = check_started.elapsed().as_secs_f64();
            RemoteStats::add(&st.blobs_checked, blobs.len() as u64);
            let missing: Vec<(Hash, u64)> = pairs
                .iter()
                .filter(|b| !catalog.blobs.contains_key(b))
                .copied()
                .collect();
            RemoteStats::add(&st.blobs_present, (pairs.len() - missing.len()) as u64);
            RemoteStats::add(
                &st.bytes_present,
                pairs
                    .iter()
                    .filter(|b| catalog.blobs.contains_key(b))
                    .map(|b| b.1)
                    .sum(),
            );
            let new = self.push_packs(cas.root(), &locate, &missing, jobs)?;
            packs_uploaded = new.len() as u64;
            let mut fresh: HashMap<(Hash, u64), ((Hash, u64), crate::pack::Loc)> = HashMap::new();
            for (id, len, entries) in &new {
                for e in entries {
                    fresh.insert((e.hash, e.size), ((*id, *len), e.loc));
                }
            }
            let bundle = Remote::bundle(bytes, &pairs, |b| {
                fresh.get(b).copied().or_else(|| {
                    let &(id, loc) = catalog.blobs.get(b)?;
                    Some(((id, *catalog.lens.get(&id)?), loc))
                })
            })
            .ok_or_else(|| RemoteError::Request {
                key: manifest_key.clone(),
                op: "put",
                detail: "a blob has no pack after the upload (a concurrent `remote gc --delete`?)"
                    .into(),
            })?;
            let enc = Bytes::from(
                bundle
                    .encode()
                    .map_err(|e| RemoteError::io(manifest_path, e))?,
            );
            // Only now, with every pack up: the immutable copy, then the moving name.
            self.rt.block_on(async {
                self.put_bytes(&manifest_hash_key, enc.clone()).await?;
                self.put_bytes(&manifest_key, enc).await
            })?;
        }

        let seconds = started.elapsed().as_secs_f64();
        let g = RemoteStats::get;
        let per_sec = |n: u64| RemoteStats::rate(n, seconds);
        Ok(PushReport {
            remote: self.url(),
            manifest_url: self.object_url(&manifest_key),
            manifest_key,
            manifest_hash_key,
            blobs_total: g(&st.blobs_total),
            total_bytes: g(&st.bytes_total),
            blobs_uploaded: g(&st.blobs_moved),
            uploaded_bytes: g(&st.bytes_moved),
            blobs_present: g(&st.blobs_present),
            present_bytes: g(&st.bytes_present),
            packs_uploaded,
            sent_bytes: g(&st.bytes_up),
            check,
            check_seconds,
            seconds,
            blobs_per_sec: per_sec(g(&st.blobs_moved)),
            bytes_per_sec: per_sec(g(&st.bytes_moved)),
            requests: RemoteStats::total(&st.requests),
            retries: RemoteStats::total(&st.retries),
        })
    }

    pub(crate) async fn exists(&self, key: &str) -> Result<bool> {
        match self.store.head(&obj_path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error(key, "head", e)),
        }
    }
}

/// Distinct (hash, size) pairs with content, in manifest order.
fn referenced_blobs(m: &Manifest) -> Vec<BlobRef> {
    let mut seen = HashSet::new();
    m.iter()
        .filter(|e| e.kind().has_content())
        .filter(|e| seen.insert((*e.hash(), e.size())))
        .map(|e| BlobRef {
            hash: *e.hash(),
            size: e.size(),
        })
        .collect()
}

/// Each blob with the first entry path that uses it (for error messages).
fn blobs_with_entries(m: &Manifest, blobs: &[BlobRef]) -> Vec<(BlobRef, String)> {
    let mut first: HashMap<(Hash, u64), String> = HashMap::with_capacity(blobs.len());
    for e in m.iter().filter(|e| e.kind().has_content()) {
        first
            .entry((*e.hash(), e.size()))
            .or_insert_with(|| String::from_utf8_lossy(e.path()).into_owned());
    }
    blobs
        .iter()
        .map(|b| (*b, first.remove(&(b.hash, b.size)).unwrap_or_default()))
        .collect()
}

/// Reads a local blob and checks it against its name: the remote is content-addressed, so a
/// blob damaged on this disk must not be spread to every runner.
pub(crate) fn read_verified(path: &PathBuf, hash: &Hash, size: u64) -> Result<Bytes> {
    let data = std::fs::read(path).map_err(|e| RemoteError::io(path, e))?;
    if data.len() as u64 != size || blake3::hash(&data).as_bytes() != hash {
        return Err(RemoteError::LocalCorrupt { path: path.clone() });
    }
    Ok(Bytes::from(data))
}

/// [`read_verified`] for a push: a blob of the store at `store` that does not match is local
/// damage; a file of an index-only tree (anywhere else) changed since it was hashed.
pub(crate) fn read_for_push(path: &PathBuf, hash: &Hash, size: u64, store: &Path) -> Result<Bytes> {
    read_verified(path, hash, size).map_err(|e| match e {
        RemoteError::LocalCorrupt { path } if !path.starts_with(store) => {
            RemoteError::TreeChanged { path }
        }
        e => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vrift_manifest::{EntryInput, ManifestBuilder};

    #[test]
    fn referenced_blobs_are_distinct_and_skip_non_content() {
        let mut b = ManifestBuilder::new("/r");
        b.push(EntryInput::file("a", 1, [1; 32]));
        b.push(EntryInput::file("b", 1, [1; 32]));
        b.push(EntryInput::file("c", 2, [2; 32]));
        b.push(EntryInput::symlink("d", "a"));
        let m = b.build().unwrap();
        let blobs = referenced_blobs(&m);
        assert_eq!(blobs.len(), 2);
        let with = blobs_with_entries(&m, &blobs);
        assert_eq!(with[0].1, "a");
        assert_eq!(with[1].1, "c");
    }

    #[test]
    fn a_changed_tree_file_and_a_damaged_blob_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        let h = *blake3::hash(b"good").as_bytes();
        let (blob, file) = (store.join("blob"), dir.path().join("tree-file"));
        for p in [&blob, &file] {
            std::fs::write(p, b"evil").unwrap();
        }
        assert!(matches!(
            read_for_push(&blob, &h, 4, &store),
            Err(RemoteError::LocalCorrupt { .. })
        ));
        let e = read_for_push(&file, &h, 4, &store).unwrap_err();
        assert!(matches!(e, RemoteError::TreeChanged { .. }), "{e}");
        assert!(e.to_string().contains("changed since it was hashed"), "{e}");
        std::fs::write(&file, b"good").unwrap();
        assert!(read_for_push(&file, &h, 4, &store).is_ok());
    }

    #[test]
    fn local_corruption_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("blob");
        std::fs::write(&p, b"good").unwrap();
        let h = *blake3::hash(b"good").as_bytes();
        assert!(read_verified(&p, &h, 4).is_ok());
        std::fs::write(&p, b"evil").unwrap();
        assert!(matches!(
            read_verified(&p, &h, 4),
            Err(RemoteError::LocalCorrupt { .. })
        ));
    }
}
