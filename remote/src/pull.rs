//! `vrift pull`: a manifest and only the blobs missing locally, each verified before it lands:
//! from packs (the bundle says where each blob is), or, for a manifest of the first format,
//! one object per blob.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::stream::{self, StreamExt};
use object_store::ObjectStoreExt;
use serde::Serialize;
use vrift_cas::registry::{self, Registration};
use vrift_cas::Cas;
use vrift_manifest::{Hash, Manifest};

use crate::bundle::Bundle;
use crate::error::{RemoteError, Result};
use crate::keys::bundle_of;
use crate::pack::Loc;
use crate::stats::RemoteStats;
use crate::{obj_path, Remote};

pub struct PullOptions {
    /// Requests in flight (0: the configured default).
    pub jobs: usize,
    /// Register the pulled manifest as a project of the local store (what `status` and `gc`
    /// read), under this name (default: the key's name, else the tree's directory name).
    pub register: bool,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PullReport {
    pub remote: String,
    pub manifest_key: String,
    /// `s3://BUCKET/<manifest_key>`.
    pub manifest_url: String,
    /// Where the manifest was written.
    pub manifest: PathBuf,
    pub project: Option<String>,
    pub entries: u64,
    pub blobs_total: u64,
    pub total_bytes: u64,
    pub blobs_downloaded: u64,
    pub downloaded_bytes: u64,
    /// Bytes that came over the wire (compressed packs, bundle, indexes).
    pub received_bytes: u64,
    pub blobs_present: u64,
    pub present_bytes: u64,
    pub seconds: f64,
    pub blobs_per_sec: f64,
    pub bytes_per_sec: f64,
    pub requests: u64,
    pub retries: u64,
}

impl Remote {
    /// The bundle `what` names (see [`crate::Keys::resolve_manifest`]) and its key; `None`
    /// when there is none (a manifest of the first format may be).
    pub fn fetch_bundle(&self, what: &str) -> Result<Option<(String, Bundle)>> {
        let key = bundle_of(&self.keys.resolve_manifest(what)?);
        match self.rt.block_on(self.get_bytes(&key)) {
            Ok(b) => {
                let bundle = Bundle::decode(&b).map_err(|e| RemoteError::BadManifest {
                    key: key.clone(),
                    detail: e.0,
                })?;
                Ok(Some((key, bundle)))
            }
            Err(RemoteError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The manifest `what` names (see [`crate::Keys::resolve_manifest`]) as its key and
    /// checked bytes.
    pub fn fetch_manifest(&self, what: &str) -> Result<(String, Vec<u8>)> {
        let key = self.keys.resolve_manifest(what)?;
        let bytes = self.rt.block_on(async {
            let got = self
                .store
                .get(&obj_path(&key))
                .await
                .map_err(|e| self.error(&key, "get", e))?;
            got.bytes().await.map_err(|e| self.error(&key, "get", e))
        })?;
        RemoteStats::add(&self.stats.bytes_down, bytes.len() as u64);
        let bytes = bytes.to_vec();
        Manifest::from_bytes(bytes.clone(), Path::new(&key)).map_err(|e| {
            RemoteError::BadManifest {
                key: key.clone(),
                detail: e.to_string(),
            }
        })?;
        Ok((key, bytes))
    }

    /// Pulls `what` into `cas` and writes the manifest to `out` (atomically, and only once
    /// every blob it names is in the store). Blobs that fail verification never land; the
    /// others that arrived stay (they are correct, and a rerun need not fetch them again).
    pub fn pull(
        &self,
        cas: &Cas,
        what: &str,
        out: &Path,
        opts: &PullOptions,
    ) -> Result<PullReport> {
        let started = Instant::now();
        sweep_dead_temps(cas);
        let jobs = if opts.jobs > 0 {
            opts.jobs
        } else {
            self.settings.jobs
        };
        let bundle_key = bundle_of(&self.keys.resolve_manifest(what)?);
        let bundle = self.fetch_bundle(what)?.map(|(_, b)| b);
        let (key, bytes) = match &bundle {
            Some(b) => (bundle_key.clone(), b.manifest.clone()),
            None => self.fetch_manifest(what)?,
        };
        let manifest = Manifest::from_bytes(bytes.clone(), Path::new(&key)).map_err(|e| {
            RemoteError::BadManifest {
                key: key.clone(),
                detail: e.to_string(),
            }
        })?;
        let st = &self.stats;
        let mut seen = HashSet::new();
        let mut missing = Vec::new();
        let mut entries_with_content = (0u64, 0u64);
        for e in manifest.iter().filter(|e| e.kind().has_content()) {
            entries_with_content.0 += 1;
            entries_with_content.1 += e.size();
            let b = (*e.hash(), e.size());
            if !seen.insert(b) {
                continue;
            }
            RemoteStats::add(&st.blobs_total, 1);
            RemoteStats::add(&st.bytes_total, b.1);
            if cas.has_blob(&b.0, b.1) {
                RemoteStats::add(&st.blobs_present, 1);
                RemoteStats::add(&st.bytes_present, b.1);
            } else {
                missing.push(b);
            }
        }
        let failures: Vec<RemoteError> = match &bundle {
            Some(b) => self.fetch_from_packs(
                &crate::packed::StoreSink::for_manifest(cas, &manifest),
                cas.root(),
                b,
                &key,
                &missing,
                jobs,
            )?,
            None => self.rt.block_on(async {
                stream::iter(missing.iter().map(|(h, s)| self.download_blob(cas, h, *s)))
                    .buffer_unordered(jobs)
                    .filter_map(|r| async move { r.err() })
                    .collect()
                    .await
            }),
        };
        if let Some(e) = RemoteError::from_many(failures) {
            return Err(e);
        }

        vrift_manifest::write_file_atomic(out, &bytes)?;
        let root = PathBuf::from(OsString::from_vec(manifest.root().to_vec()));
        let project = if opts.register {
            let name = opts.name.clone().unwrap_or_else(|| {
                match what.contains('/') || vrift_manifest::parse_hex(what.as_bytes()).is_some() {
                    true => registry::default_name(&root),
                    false => what.to_string(),
                }
            });
            let out_abs = std::fs::canonicalize(out).unwrap_or_else(|_| out.to_path_buf());
            registry::register(
                cas.root(),
                &Registration {
                    name: &name,
                    source: &root,
                    manifest: &out_abs,
                    files: entries_with_content.0,
                    bytes: entries_with_content.1,
                },
            )?;
            Some(name)
        } else {
            None
        };

        let seconds = started.elapsed().as_secs_f64();
        let g = RemoteStats::get;
        let per_sec = |n: u64| RemoteStats::rate(n, seconds);
        Ok(PullReport {
            remote: self.url(),
            manifest_url: self.object_url(&key),
            manifest_key: key,
            manifest: out.to_path_buf(),
            project,
            entries: manifest.len() as u64,
            blobs_total: g(&st.blobs_total),
            total_bytes: g(&st.bytes_total),
            blobs_downloaded: g(&st.blobs_moved),
            downloaded_bytes: g(&st.bytes_moved),
            received_bytes: g(&st.bytes_down),
            blobs_present: g(&st.blobs_present),
            present_bytes: g(&st.bytes_present),
            seconds,
            blobs_per_sec: per_sec(g(&st.blobs_moved)),
            bytes_per_sec: per_sec(g(&st.bytes_moved)),
            requests: RemoteStats::total(&st.requests),
            retries: RemoteStats::total(&st.retries),
        })
    }

    /// The blobs `missing` from the packs the bundle names; where a pack is gone (repacked
    /// since), from wherever the packs' indexes now say. Failures, one per range or blob.
    pub(crate) fn fetch_from_packs(
        &self,
        sink: &dyn crate::packed::BlobSink,
        store: &Path,
        b: &Bundle,
        key: &str,
        missing: &[(Hash, u64)],
        jobs: usize,
    ) -> Result<Vec<RemoteError>> {
        let locs: HashMap<(Hash, u64), ((Hash, u64), Loc)> = b
            .locs
            .iter()
            .map(|&(h, size, pack, loc)| ((h, size), (b.packs[pack as usize], loc)))
            .collect();
        let mut wanted = Vec::with_capacity(missing.len());
        for &(h, size) in missing {
            let Some(&(pack, loc)) = locs.get(&(h, size)) else {
                return Err(RemoteError::BadManifest {
                    key: key.to_string(),
                    detail: format!(
                        "no pack holds blob {}_{size} (the bundle lists no location)",
                        vrift_manifest::hex(&h)
                    ),
                });
            };
            wanted.push((h, size, pack, loc));
        }
        let (mut errors, gone) = self.fetch_packed(sink, &wanted, jobs);
        if !gone.is_empty() {
            let catalog = self.rt.block_on(self.catalog(store, jobs))?;
            let mut again = Vec::with_capacity(gone.len());
            for (h, size) in gone {
                let found = catalog
                    .blobs
                    .get(&(h, size))
                    .and_then(|&(id, loc)| Some(((id, *catalog.lens.get(&id)?), loc)));
                match found {
                    Some((pack, loc)) => again.push((h, size, pack, loc)),
                    None => errors.push(RemoteError::NotFound {
                        key: format!(
                            "blob {}_{size} of {key} (in no pack on the remote)",
                            vrift_manifest::hex(&h)
                        ),
                    }),
                }
            }
            let (more, still) = self.fetch_packed(sink, &again, jobs);
            errors.extend(more);
            for (h, size) in still {
                errors.push(RemoteError::NotFound {
                    key: format!("blob {}_{size} of {key}", vrift_manifest::hex(&h)),
                });
            }
        }
        Ok(errors)
    }

    /// GET into `<store>/tmp/`, hashing as the bytes arrive; a body longer than the key says
    /// is cut off at once. Only a file of the right size and BLAKE3 is made the blob.
    async fn download_blob(&self, cas: &Cas, hash: &Hash, size: u64) -> Result<()> {
        let key = self.keys.blob(hash, size);
        let got = self
            .store
            .get(&obj_path(&key))
            .await
            .map_err(|e| self.error(&key, "get", e))?;
        let mut body = got.into_stream();
        let tmp = cas.temp_path("pull");
        let result = async {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| RemoteError::io(&tmp, e))?;
            let mut hasher = blake3::Hasher::new();
            let mut got_size = 0u64;
            // Small blobs (most of a node_modules) are written in one go once complete.
            let small = size <= (1 << 20);
            let mut buf = Vec::with_capacity(if small { size as usize } else { 0 });
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| self.error(&key, "get", e))?;
                got_size += chunk.len() as u64;
                RemoteStats::add(&self.stats.bytes_down, chunk.len() as u64);
                if got_size > size {
                    break;
                }
                hasher.update(&chunk);
                if small {
                    buf.extend_from_slice(&chunk);
                } else {
                    tokio::task::block_in_place(|| file.write_all(&chunk))
                        .map_err(|e| RemoteError::io(&tmp, e))?;
                }
            }
            let got_hash = hasher.finalize();
            if got_size != size || got_hash.as_bytes() != hash {
                return Err(RemoteError::Corrupt {
                    key: key.clone(),
                    got_size,
                    got_hash: if got_size > size {
                        "(not computed: body too long)".to_string()
                    } else {
                        got_hash.to_hex().to_string()
                    },
                });
            }
            tokio::task::block_in_place(|| {
                if small {
                    file.write_all(&buf)?;
                }
                drop(file);
                Ok::<(), std::io::Error>(())
            })
            .map_err(|e| RemoteError::io(&tmp, e))?;
            tokio::task::block_in_place(|| cas.insert_verified(&tmp, hash, size, 0o444))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
        RemoteStats::add(&self.stats.blobs_moved, 1);
        RemoteStats::add(&self.stats.bytes_moved, size);
        Ok(())
    }
}

/// Removes `<store>/tmp/.pull-<pid>-*` left by pulls that were killed (their pid is gone):
/// half-downloaded blobs that will never be finished. Best effort.
fn sweep_dead_temps(cas: &Cas) {
    let dir = cas.root().join(vrift_cas::store::TMP_DIR);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(".pull-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let gone = !vrift_cas::lock::pid_alive(pid);
        if gone {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
