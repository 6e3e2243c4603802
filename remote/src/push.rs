//! `vrift push`: every blob the manifest references that the remote lacks, then the manifest.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use futures::stream::{self, FuturesUnordered, StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::Serialize;
use vrift_cas::Cas;
use vrift_manifest::{Hash, Manifest};

use crate::error::{RemoteError, Result};
use crate::keys::parse_blob_key;
use crate::stats::RemoteStats;
use crate::{obj_path, Remote};

/// How to learn which blobs the remote has. S3 has no bulk HEAD: LIST returns 1000 keys a
/// request, HEAD answers for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckMode {
    /// Trust the manifests already on the remote first (a manifest is pushed only after all
    /// its blobs, so its presence proves theirs): the same manifest already there means
    /// nothing to check; the previous push of the same name vouches for its blobs. The rest:
    /// HEAD for a few blobs, LIST for many (threshold: `Settings::head_threshold`).
    Auto,
    List,
    Head,
}

pub struct PushOptions {
    /// Project name: the manifest also lands at `manifests/<name>.vrm`.
    pub name: String,
    pub check: CheckMode,
    /// Requests in flight (0: the configured default).
    pub jobs: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    pub remote: String,
    /// `manifests/<name>.vrm` (moves with every push of the name).
    pub manifest_key: String,
    /// `s3://BUCKET/<manifest_key>`.
    pub manifest_url: String,
    /// `manifests/blake3/<hex>.vrm` (these exact bytes, forever).
    pub manifest_hash_key: String,
    pub blobs_total: u64,
    pub bytes_total: u64,
    pub blobs_uploaded: u64,
    pub bytes_uploaded: u64,
    pub blobs_present: u64,
    pub bytes_present: u64,
    /// How presence was learnt: `manifest` (this exact manifest was on the remote already),
    /// `head`, `list`, or `manifest+head` / `manifest+list` (the previous push of the name
    /// vouched for its blobs, the rest were checked).
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
    /// Uploads what the remote lacks of `manifest_path` (whose blobs must be in `cas`).
    /// Blobs first, manifest last: a manifest on the remote always has every blob it names.
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
        for (b, entry) in &blobs_with_entries(&manifest, &blobs) {
            if !cas.has_blob(&b.hash, b.size) {
                return Err(RemoteError::MissingLocalBlob {
                    path: cas.blob_path(&b.hash, b.size),
                    entry: entry.clone(),
                });
            }
        }
        let jobs = if opts.jobs > 0 {
            opts.jobs
        } else {
            self.settings.jobs
        };
        let bytes = Bytes::copy_from_slice(manifest.as_bytes());
        let manifest_hash = *blake3::hash(&bytes).as_bytes();
        let manifest_key = self.keys.manifest_named(&opts.name)?;
        let manifest_hash_key = self.keys.manifest_by_hash(&manifest_hash);
        drop(manifest);

        let check_started = Instant::now();
        let (check, present) = self.rt.block_on(async {
            let mut known = HashSet::new();
            if opts.check == CheckMode::Auto {
                if self.exists(&manifest_hash_key).await? {
                    RemoteStats::add(&self.stats.blobs_checked, blobs.len() as u64);
                    return Ok(("manifest", blobs.iter().map(|b| (b.hash, b.size)).collect()));
                }
                known = self.blobs_of_remote_manifest(&manifest_key).await?;
            }
            let rest: Vec<BlobRef> = blobs
                .iter()
                .filter(|b| !known.contains(&(b.hash, b.size)))
                .copied()
                .collect();
            RemoteStats::add(&self.stats.blobs_checked, (blobs.len() - rest.len()) as u64);
            let rest_mode = match opts.check {
                CheckMode::Auto if rest.len() <= self.settings.head_threshold => CheckMode::Head,
                CheckMode::Auto => CheckMode::List,
                m => m,
            };
            let check = match (known.is_empty(), rest_mode) {
                (true, CheckMode::Head) => "head",
                (true, _) => "list",
                (false, CheckMode::Head) => "manifest+head",
                (false, _) => "manifest+list",
            };
            let mut found = match rest_mode {
                _ if rest.is_empty() => HashSet::new(),
                CheckMode::Head => self.present_by_head(&rest, jobs).await?,
                _ => self.present_by_list(&rest, jobs).await?,
            };
            found.extend(known);
            Ok::<_, RemoteError>((check, found))
        })?;
        let check_seconds = check_started.elapsed().as_secs_f64();
        let missing: Vec<BlobRef> = blobs
            .iter()
            .filter(|b| !present.contains(&(b.hash, b.size)))
            .copied()
            .collect();
        RemoteStats::add(&st.blobs_present, (blobs.len() - missing.len()) as u64);
        RemoteStats::add(
            &st.bytes_present,
            blobs
                .iter()
                .filter(|b| present.contains(&(b.hash, b.size)))
                .map(|b| b.size)
                .sum(),
        );

        self.rt.block_on(async {
            stream::iter(missing.iter().map(|b| self.upload_blob(cas, *b)))
                .buffer_unordered(jobs)
                .try_collect::<()>()
                .await?;
            // Only now, with every blob up: the immutable copy, then the moving name.
            for key in [&manifest_hash_key, &manifest_key] {
                self.store
                    .put(&obj_path(key), PutPayload::from(bytes.clone()))
                    .await
                    .map_err(|e| self.error(key, "put", e))?;
                RemoteStats::add(&st.bytes_up, bytes.len() as u64);
            }
            Ok::<(), RemoteError>(())
        })?;

        let seconds = started.elapsed().as_secs_f64();
        let g = RemoteStats::get;
        let per_sec = |n: u64| RemoteStats::rate(n, seconds);
        Ok(PushReport {
            remote: self.url(),
            manifest_url: self.object_url(&manifest_key),
            manifest_key,
            manifest_hash_key,
            blobs_total: g(&st.blobs_total),
            bytes_total: g(&st.bytes_total),
            blobs_uploaded: g(&st.blobs_moved),
            bytes_uploaded: g(&st.bytes_moved),
            blobs_present: g(&st.blobs_present),
            bytes_present: g(&st.bytes_present),
            check,
            check_seconds,
            seconds,
            blobs_per_sec: per_sec(g(&st.blobs_moved)),
            bytes_per_sec: per_sec(g(&st.bytes_moved)),
            requests: RemoteStats::total(&st.requests),
            retries: RemoteStats::total(&st.retries),
        })
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        match self.store.head(&obj_path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error(key, "head", e)),
        }
    }

    /// The blobs of the manifest at `key`, if there is one that parses (else none: a broken
    /// or foreign object there only means nothing is known).
    async fn blobs_of_remote_manifest(&self, key: &str) -> Result<HashSet<(Hash, u64)>> {
        let got = match self.store.get(&obj_path(key)).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(HashSet::new()),
            Err(e) => return Err(self.error(key, "get", e)),
        };
        let bytes = got.bytes().await.map_err(|e| self.error(key, "get", e))?;
        RemoteStats::add(&self.stats.bytes_down, bytes.len() as u64);
        Ok(match Manifest::from_bytes(bytes.to_vec(), Path::new(key)) {
            Ok(m) => referenced_blobs(&m)
                .into_iter()
                .map(|b| (b.hash, b.size))
                .collect(),
            Err(_) => HashSet::new(),
        })
    }

    /// One HEAD per blob, `jobs` at a time. A remote object of the wrong size is treated as
    /// absent (uploaded again, which repairs a truncated copy).
    async fn present_by_head(
        &self,
        blobs: &[BlobRef],
        jobs: usize,
    ) -> Result<HashSet<(Hash, u64)>> {
        let found: Vec<Option<(Hash, u64)>> = stream::iter(blobs.iter().map(|b| async move {
            let key = self.keys.blob(&b.hash, b.size);
            let r = match self.store.head(&obj_path(&key)).await {
                Ok(meta) if meta.size == b.size => Ok(Some((b.hash, b.size))),
                Ok(_) => Ok(None),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.error(&key, "head", e)),
            };
            RemoteStats::add(&self.stats.blobs_checked, 1);
            r
        }))
        .buffer_unordered(jobs)
        .try_collect()
        .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// LIST of `blake3/ab/` for every first byte `ab` the manifest uses (256 at most, in
    /// parallel): ~1000 keys a request instead of one.
    async fn present_by_list(
        &self,
        blobs: &[BlobRef],
        jobs: usize,
    ) -> Result<HashSet<(Hash, u64)>> {
        let wanted: HashSet<(Hash, u64)> = blobs.iter().map(|b| (b.hash, b.size)).collect();
        let mut tops: Vec<u8> = blobs.iter().map(|b| b.hash[0]).collect();
        tops.sort_unstable();
        tops.dedup();
        let wanted = &wanted;
        let sets: Vec<Vec<(Hash, u64)>> = stream::iter(tops.into_iter().map(|top| async move {
            let prefix = self.keys.blob_top(top);
            let mut out = Vec::new();
            let mut listing = self
                .store
                .list(Some(&obj_path(prefix.trim_end_matches('/'))));
            while let Some(item) = listing.next().await {
                let meta = item.map_err(|e| self.error(&prefix, "list", e))?;
                if let Some(hs) = parse_blob_key(meta.location.as_ref()) {
                    if hs.1 == meta.size && wanted.contains(&hs) {
                        RemoteStats::add(&self.stats.blobs_checked, 1);
                        out.push(hs);
                    }
                }
            }
            Ok::<_, RemoteError>(out)
        }))
        .buffer_unordered(jobs.min(16))
        .try_collect()
        .await?;
        Ok(sets.into_iter().flatten().collect())
    }

    async fn upload_blob(&self, cas: &Cas, b: BlobRef) -> Result<()> {
        let key = self.keys.blob(&b.hash, b.size);
        let path = cas.blob_path(&b.hash, b.size);
        if b.size < self.settings.multipart_threshold {
            let data = tokio::task::block_in_place(|| read_verified(&path, &b.hash, b.size))?;
            self.store
                .put(&obj_path(&key), PutPayload::from(data))
                .await
                .map_err(|e| self.error(&key, "put", e))?;
        } else {
            self.upload_multipart(&key, &path, b).await?;
        }
        RemoteStats::add(&self.stats.bytes_up, b.size);
        RemoteStats::add(&self.stats.blobs_moved, 1);
        RemoteStats::add(&self.stats.bytes_moved, b.size);
        Ok(())
    }

    /// Parts of `part_size`, four in flight, hashed on the way; the upload is completed only
    /// if the whole blob matched its name (and aborted otherwise, so nothing appears).
    async fn upload_multipart(&self, key: &str, path: &Path, b: BlobRef) -> Result<()> {
        let mut up = self
            .store
            .put_multipart(&obj_path(key))
            .await
            .map_err(|e| self.error(key, "multipart", e))?;
        let result: Result<()> = async {
            let mut file = std::fs::File::open(path).map_err(|e| RemoteError::io(path, e))?;
            let mut hasher = blake3::Hasher::new();
            let mut total = 0u64;
            let mut inflight = FuturesUnordered::new();
            loop {
                let part = tokio::task::block_in_place(|| {
                    read_part(&mut file, self.settings.part_size as usize)
                })
                .map_err(|e| RemoteError::io(path, e))?;
                if part.is_empty() {
                    break;
                }
                hasher.update(&part);
                total += part.len() as u64;
                inflight.push(up.put_part(PutPayload::from(Bytes::from(part))));
                while inflight.len() >= 4 {
                    if let Some(r) = inflight.next().await {
                        r.map_err(|e| self.error(key, "multipart", e))?;
                    }
                }
            }
            while let Some(r) = inflight.next().await {
                r.map_err(|e| self.error(key, "multipart", e))?;
            }
            if total != b.size || hasher.finalize().as_bytes() != &b.hash {
                return Err(RemoteError::LocalCorrupt {
                    path: path.to_path_buf(),
                });
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                up.complete()
                    .await
                    .map_err(|e| self.error(key, "multipart", e))?;
                Ok(())
            }
            Err(e) => {
                let _ = up.abort().await;
                Err(e)
            }
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
fn read_verified(path: &PathBuf, hash: &Hash, size: u64) -> Result<Bytes> {
    let data = std::fs::read(path).map_err(|e| RemoteError::io(path, e))?;
    if data.len() as u64 != size || blake3::hash(&data).as_bytes() != hash {
        return Err(RemoteError::LocalCorrupt { path: path.clone() });
    }
    Ok(Bytes::from(data))
}

/// Up to `n` bytes (fewer only at the end of the file).
fn read_part(f: &mut std::fs::File, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(n);
    f.take(n as u64).read_to_end(&mut buf)?;
    Ok(buf)
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
