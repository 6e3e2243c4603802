//! `vrift remote gc`: drop old manifests, then packs no kept manifest uses; repack packs that
//! are mostly garbage. Dry run unless asked to delete.
//!
//! Safe against concurrent pushes without a lock: a pack is deleted in two steps, a grace
//! period apart. First its index is replaced by a marker (`packs/<id>.condemned`, holding
//! the index): from then on no push finds its blobs (pushes read indexes), so no new manifest
//! can come to rely on it. A later run deletes it once the marker is older than the grace
//! period — longer than any push takes — if no kept manifest uses it by then; one that does
//! (a push that had read the index just before) gets its index back. Packs younger than the
//! grace period are never touched, nor repacked (a push uploads packs before its manifest).
//!
//! Which manifests are kept: every named one (`manifests/<name>.vrmz`), or the `--keep-last`
//! newest, or those pushed within `--older-than`; the by-hash copy of a kept manifest stays,
//! by-hash copies of superseded pushes go.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Serialize;
use vrift_manifest::Hash;

use crate::bundle::Bundle;
use crate::error::{RemoteError, Result};
use crate::keys::{bundle_of, BUNDLE_SUFFIX, CONDEMNED_SUFFIX, INDEX_SUFFIX};
use crate::pack::{self, PackBuilder};
use crate::{obj_path, Remote};

/// A pack whose live bytes are below this share of its size is repacked.
const REPACK_BELOW: f64 = 0.5;

pub struct GcOptions {
    pub keep_last: Option<usize>,
    /// Drop manifests not pushed for this many seconds.
    pub older_than: Option<u64>,
    pub delete: bool,
    pub grace_secs: u64,
    pub jobs: usize,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub manifests: u64,
    pub manifests_dropped: Vec<String>,
    pub packs: u64,
    pub packs_live: u64,
    /// Unindexed now (deleted by a run after the grace period).
    pub packs_condemned: u64,
    pub packs_deleted: u64,
    pub deleted_bytes: u64,
    /// Given their index back: a kept manifest uses them.
    pub packs_restored: u64,
    pub packs_repacked: u64,
    pub total_bytes: u64,
    pub seconds: f64,
}

impl Remote {
    /// See the module docs.
    pub fn remote_gc(&self, store: &std::path::Path, o: &GcOptions) -> Result<GcReport> {
        let started = Instant::now();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let jobs = if o.jobs > 0 {
            o.jobs
        } else {
            self.settings.jobs
        };
        let mut rep = GcReport {
            dry_run: !o.delete,
            ..Default::default()
        };
        let mut named = self.list_manifests()?;
        named.sort_by(|a, b| b.recency().cmp(&a.recency()));
        rep.manifests = named.len() as u64;
        let (mut kept, mut dropped) = (Vec::new(), Vec::new());
        for (i, m) in named.into_iter().enumerate() {
            let too_many = o.keep_last.is_some_and(|n| i >= n);
            let too_old = o.older_than.is_some_and(|d| now - m.modified > d as i64);
            if too_many || too_old {
                dropped.push(m.name);
            } else {
                kept.push(m.name);
            }
        }
        rep.manifests_dropped = dropped.clone();

        // Mark: the packs every kept manifest uses (bytes of the frames it needs per pack).
        let mut bundles: Vec<(String, Bundle)> = self.rt.block_on(
            stream::iter(kept.iter().map(|name| async move {
                let key = bundle_of(&self.keys.manifest_named(name)?);
                let b = self.get_bytes(&key).await?;
                let bundle = Bundle::decode(&b).map_err(|e| RemoteError::BadManifest {
                    key: key.clone(),
                    detail: e.0,
                })?;
                Ok::<_, RemoteError>((name.clone(), bundle))
            }))
            .buffer_unordered(jobs)
            .try_collect(),
        )?;
        let mut live: HashMap<Hash, u64> = HashMap::new();
        let mut kept_hashes: HashSet<String> = HashSet::new();
        for (_, b) in &bundles {
            kept_hashes.insert(blake3::hash(&b.manifest).to_hex().to_string());
            let mut frames: HashSet<(u32, u64)> = HashSet::new();
            for (_, _, p, l) in &b.locs {
                if frames.insert((*p, l.frame_off)) {
                    *live.entry(b.packs[*p as usize].0).or_default() += l.frame_len;
                }
            }
        }

        // The packs as they are.
        let packs = self.rt.block_on(self.list_packs())?;
        rep.packs = packs.iter().filter(|p| p.size > 0).count() as u64;
        rep.total_bytes = packs.iter().map(|p| p.size).sum();
        let grace = o.grace_secs as i64;
        let cache = self.index_cache(store);

        let mut repack: Vec<Hash> = Vec::new();
        for p in &packs {
            let id = &p.id;
            let used = live.get(id).copied();
            match used {
                Some(bytes) => {
                    rep.packs_live += 1;
                    if !p.indexed && p.condemned_at.is_some() {
                        rep.packs_restored += 1;
                        if o.delete {
                            self.restore_index(id)?;
                        }
                    } else if p.size > 0
                        && (bytes as f64) < REPACK_BELOW * p.size as f64
                        && now - p.modified >= grace
                    {
                        repack.push(*id);
                    }
                }
                None if p.size > 0 && now - p.modified < grace => {} // a push in flight
                None => match p.condemned_at {
                    Some(t) if now - t >= grace => {
                        rep.packs_deleted += 1;
                        rep.deleted_bytes += p.size;
                        if o.delete {
                            self.rt.block_on(async {
                                self.delete(&self.keys.pack(id)).await?;
                                self.delete(&self.key_condemned(id)).await
                            })?;
                        }
                    }
                    Some(_) => {}
                    None => {
                        rep.packs_condemned += 1;
                        if o.delete {
                            self.condemn(id, p.indexed, &cache)?;
                        }
                    }
                },
            }
        }

        if o.delete {
            for id in &repack {
                self.repack(store, id, &mut bundles)?;
                rep.packs_repacked += 1;
            }
            // Dropped manifests, and by-hash copies of manifests no kept name points at.
            let mut doomed: Vec<String> = dropped
                .iter()
                .filter_map(|n| self.keys.manifest_named(n).ok())
                .map(|k| bundle_of(&k))
                .collect();
            let hash_prefix = self.keys.join(&format!(
                "{}/{}",
                crate::keys::MANIFEST_PREFIX,
                vrift_cas::BLOB_DIR
            ));
            self.rt.block_on(async {
                let mut listing = self.store.list(Some(&obj_path(&hash_prefix)));
                while let Some(item) = listing.next().await {
                    let meta = item.map_err(|e| self.error(&hash_prefix, "list", e))?;
                    let key = meta.location.as_ref().to_string();
                    let hex = key
                        .rsplit('/')
                        .next()
                        .and_then(|n| n.strip_suffix(BUNDLE_SUFFIX));
                    if hex.is_some_and(|h| !kept_hashes.contains(h))
                        && now - meta.last_modified.timestamp() >= grace
                    {
                        doomed.push(key);
                    }
                }
                for k in &doomed {
                    self.delete(k).await?;
                }
                Ok::<(), RemoteError>(())
            })?;
        } else {
            rep.packs_repacked = repack.len() as u64;
        }
        rep.seconds = started.elapsed().as_secs_f64();
        Ok(rep)
    }

    fn key_condemned(&self, id: &Hash) -> String {
        self.keys.join(&format!(
            "{}/{}{CONDEMNED_SUFFIX}",
            crate::keys::PACK_PREFIX,
            vrift_manifest::hex(id)
        ))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&obj_path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(key, "delete", e)),
        }
    }

    /// Replaces the pack's index by a marker holding it: no push finds its blobs any more.
    fn condemn(&self, id: &Hash, indexed: bool, cache: &std::path::Path) -> Result<()> {
        self.rt.block_on(async {
            let idx = if indexed {
                let key = self.keys.pack_index(id);
                match self.get_bytes(&key).await {
                    Ok(b) => b,
                    Err(RemoteError::NotFound { .. }) => Bytes::new(),
                    Err(e) => return Err(e),
                }
            } else {
                Bytes::new()
            };
            self.put_bytes(&self.key_condemned(id), idx).await?;
            self.delete(&self.keys.pack_index(id)).await
        })?;
        let _ =
            std::fs::remove_file(cache.join(format!("{}{INDEX_SUFFIX}", vrift_manifest::hex(id))));
        Ok(())
    }

    /// A condemned pack a kept manifest uses gets its index back from the marker.
    fn restore_index(&self, id: &Hash) -> Result<()> {
        self.rt.block_on(async {
            let b = self.get_bytes(&self.key_condemned(id)).await?;
            if pack::decode_index(&b).is_ok() {
                self.put_bytes(&self.keys.pack_index(id), b).await?;
                self.delete(&self.key_condemned(id)).await?;
            }
            Ok(())
        })
    }

    /// Moves the live blobs of pack `id` into a new pack, points every kept bundle at it, and
    /// condemns the old pack.
    fn repack(
        &self,
        store: &std::path::Path,
        id: &Hash,
        bundles: &mut [(String, Bundle)],
    ) -> Result<()> {
        let key = self.keys.pack(id);
        let bytes = self.rt.block_on(self.get_bytes(&key))?;
        // Live blobs of this pack, per frame.
        // (frame offset, length, raw length) → (hash, size, offset in the frame).
        type Frames = BTreeMap<(u64, u64, u64), Vec<(Hash, u64, u64)>>;
        let mut wanted: Frames = BTreeMap::new();
        for (_, b) in bundles.iter() {
            for &(h, size, p, l) in &b.locs {
                if b.packs[p as usize].0 == *id {
                    let f = wanted
                        .entry((l.frame_off, l.frame_len, l.frame_raw))
                        .or_default();
                    if !f.iter().any(|x| x.0 == h && x.1 == size) {
                        f.push((h, size, l.off));
                    }
                }
            }
        }
        let mut builder = PackBuilder::new();
        let mut packs = Vec::new();
        for ((off, len, raw), blobs) in &wanted {
            let z = bytes
                .get(*off as usize..(off + len) as usize)
                .ok_or_else(|| RemoteError::BadPack {
                    key: key.clone(),
                    detail: "shorter than its index says".into(),
                })?;
            let data = pack::decode_frame(z, *raw).map_err(|e| RemoteError::BadPack {
                key: key.clone(),
                detail: e.0,
            })?;
            for &(h, size, boff) in blobs {
                let blob = &data[boff as usize..(boff + size) as usize];
                if blake3::hash(blob).as_bytes() != &h {
                    return Err(RemoteError::BadPack {
                        key: key.clone(),
                        detail: format!(
                            "blob {}_{size} does not match its name",
                            vrift_manifest::hex(&h)
                        ),
                    });
                }
                if let Some(p) = builder
                    .add(h, blob)
                    .map_err(|e| RemoteError::io(store, e))?
                {
                    packs.push(p);
                }
            }
        }
        if let Some(p) = builder.finish().map_err(|e| RemoteError::io(store, e))? {
            packs.push(p);
        }
        let mut moved: HashMap<(Hash, u64), ((Hash, u64), pack::Loc)> = HashMap::new();
        self.rt.block_on(async {
            for p in packs {
                let len = p.bytes.len() as u64;
                for e in &p.entries {
                    moved.insert((e.hash, e.size), ((p.id, len), e.loc));
                }
                let index = Bytes::from(p.index());
                self.put_bytes(&self.keys.pack(&p.id), Bytes::from(p.bytes))
                    .await?;
                self.put_bytes(&self.keys.pack_index(&p.id), index).await?;
            }
            // Every kept bundle that used the old pack now points at the new ones.
            for (name, b) in bundles.iter_mut() {
                if !b.packs.iter().any(|(p, _)| p == id) {
                    continue;
                }
                let mut blobs = Vec::with_capacity(b.locs.len());
                let mut locs: HashMap<(Hash, u64), ((Hash, u64), pack::Loc)> = HashMap::new();
                for &(h, size, p, l) in &b.locs {
                    blobs.push((h, size));
                    let here = moved
                        .get(&(h, size))
                        .copied()
                        .filter(|_| b.packs[p as usize].0 == *id)
                        .unwrap_or((b.packs[p as usize], l));
                    locs.insert((h, size), here);
                }
                let Some(nb) = Remote::bundle(b.manifest.clone(), &blobs, |k| locs.get(k).copied())
                else {
                    continue; // cannot happen: every blob of the bundle has a location
                };
                let enc = Bytes::from(nb.encode().map_err(|e| RemoteError::io(store, e))?);
                let hash = blake3::hash(&b.manifest);
                self.put_bytes(
                    &bundle_of(&self.keys.manifest_by_hash(hash.as_bytes())),
                    enc.clone(),
                )
                .await?;
                // The name moves to the rewritten bundle only if nobody pushed it meanwhile
                // (a newer push keeps its own bundle; its pack, if this one, gets its index
                // back at the next run, and pulls relocate).
                let named = bundle_of(&self.keys.manifest_named(name)?);
                let unchanged = match self.get_bytes(&named).await {
                    Ok(cur) => Bundle::decode(&cur).is_ok_and(|c| c.manifest == b.manifest),
                    Err(_) => false,
                };
                if unchanged {
                    self.put_bytes(&named, enc).await?;
                }
                *b = nb;
            }
            Ok::<(), RemoteError>(())
        })?;
        self.condemn(id, true, &self.index_cache(store))
    }
}
