//! The packed remote: what is on it ([`Catalog`]), pushing blobs as packs, pulling them with
//! merged ranged GETs. See [`crate::pack`] for the format and [`crate::bundle`] for manifests.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};
use vrift_cas::Cas;
use vrift_manifest::Hash;

use crate::bundle::Bundle;
use crate::error::{RemoteError, Result};
use crate::keys::{parse_pack_key, CONDEMNED_SUFFIX, INDEX_SUFFIX, PACK_SUFFIX};
use crate::pack::{self, IndexEntry, Loc, Pack, PackBuilder};
use crate::stats::RemoteStats;
use crate::{obj_path, Remote};

/// Parts of one multipart upload in flight at once (packs themselves go up `jobs` at a time).
const PARTS_IN_FLIGHT: usize = 4;

/// Frames of one pack closer than this are fetched with one ranged GET (the bytes between
/// them are cheaper than another round trip on any link a CI runner has).
pub const MERGE_GAP: u64 = 2 << 20;
/// Raw bytes of blobs one pack builder takes at a time (several builders run in parallel).
const SEGMENT: u64 = 96 << 20;
/// Directory of the store where pack indexes of remotes are cached (they never change).
pub const INDEX_CACHE_DIR: &str = "remote-index";

/// A pack on the remote, as a listing shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PackInfo {
    #[serde(serialize_with = "hex_id")]
    pub id: Hash,
    pub size: u64,
    /// Last modification, seconds since the epoch.
    pub modified: i64,
    /// Its index is there too (a pack without one is an unfinished push, or being deleted).
    pub indexed: bool,
    /// When `remote gc` unindexed it (its `.condemned` marker's time), if it did.
    pub condemned_at: Option<i64>,
}

fn hex_id<S: serde::Serializer>(h: &Hash, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&vrift_manifest::hex(h))
}

/// Every blob in the remote's indexed packs, and where it is.
#[derive(Default)]
pub struct Catalog {
    pub packs: Vec<PackInfo>,
    pub blobs: HashMap<(Hash, u64), (Hash, Loc)>,
    /// Length of every indexed pack.
    pub lens: HashMap<Hash, u64>,
}

/// One frame to fetch and the blobs wanted from it: (hash, size, offset in the frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameWant {
    pub frame_off: u64,
    pub frame_len: u64,
    pub frame_raw: u64,
    pub blobs: Vec<(Hash, u64, u64)>,
}

/// A ranged GET: bytes `start..end` of a pack and the frames in it, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
    pub frames: Vec<FrameWant>,
}

/// Merges the frames wanted from one pack into ranges: sorted by offset, a frame joins the
/// previous range when the gap between them is at most `gap` bytes.
pub fn plan_ranges(mut frames: Vec<FrameWant>, gap: u64) -> Vec<Range> {
    frames.sort_by_key(|f| f.frame_off);
    let mut out: Vec<Range> = Vec::new();
    for f in frames {
        let end = f.frame_off + f.frame_len;
        match out.last_mut() {
            Some(r) if f.frame_off <= r.end.saturating_add(gap) => {
                r.end = r.end.max(end);
                r.frames.push(f);
            }
            _ => out.push(Range {
                start: f.frame_off,
                end,
                frames: vec![f],
            }),
        }
    }
    out
}

/// Where fetched blobs go, each already checked against its name: the store, or straight
/// into a tree (`restore` on a fresh runner).
pub trait BlobSink: Sync {
    fn put(&self, hash: &Hash, size: u64, data: &[u8]) -> Result<()>;

    /// Gets ready for these blobs while the transfers are under way (called on a thread of
    /// its own, alongside [`put`](Self::put)s): whatever it does must also happen in `put`.
    fn prepare(&self, _blobs: &[Wanted]) {}
}

/// Blobs into the store, each with the mode of the first manifest entry that uses it (write
/// and setid bits aside; `0444` when none is known), so a checkout can link executables too:
/// a file is linked only where the blob already has its mode.
pub struct StoreSink<'a> {
    pub cas: &'a Cas,
    pub modes: HashMap<(Hash, u64), u32>,
}

impl<'a> StoreSink<'a> {
    /// A sink for the blobs of `m`.
    pub fn for_manifest(cas: &'a Cas, m: &vrift_manifest::Manifest) -> Self {
        let mut modes = HashMap::new();
        for e in m.iter().filter(|e| e.kind().has_content()) {
            modes.entry((*e.hash(), e.size())).or_insert(e.mode());
        }
        StoreSink { cas, modes }
    }
}

/// The mode a blob gets from an entry's: its read and execute bits (no write, setuid, setgid
/// or sticky bit), readable by its owner at least.
pub fn blob_mode(entry_mode: u32) -> u32 {
    (entry_mode & 0o555) | 0o400
}

impl BlobSink for StoreSink<'_> {
    /// Makes the blobs' shard directories (one new leaf directory per new blob, mostly, at
    /// 60–110 µs each on ext4) while the first requests are in flight, instead of each one
    /// in the path of the blob's write.
    fn prepare(&self, blobs: &[Wanted]) {
        for (h, ..) in blobs {
            if self.cas.ensure_shard(h).is_err() {
                return; // `put` meets the same error and reports it, naming the blob.
            }
        }
    }

    fn put(&self, hash: &Hash, size: u64, data: &[u8]) -> Result<()> {
        let mode = self
            .modes
            .get(&(*hash, size))
            .map_or(0o444, |m| blob_mode(*m));
        self.cas.insert_bytes(hash, size, data, mode)?;
        Ok(())
    }
}

/// A blob to fetch: hash, size, its pack (id, length) and where it is in it.
pub type Wanted = (Hash, u64, (Hash, u64), Loc);

/// A failed range: the error and, when its pack is gone, the blobs it was to bring.
type RangeFailure = (RemoteError, Vec<(Hash, u64)>);

/// The bytes `off..off + size` of a decoded frame, or `None` when a (damaged or forged)
/// bundle places the blob outside the frame.
fn blob_in_frame(raw: &[u8], off: u64, size: u64) -> Option<&[u8]> {
    let off = usize::try_from(off).ok()?;
    raw.get(off..off.checked_add(usize::try_from(size).ok()?)?)
}

/// A frame's compressed bytes on their way to a decoding thread.
pub(crate) struct FrameJob {
    key: String,
    z: Vec<u8>,
    f: FrameWant,
    /// Its share of the queue's byte budget, given back once the frame is decoded.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// The way to the decoding threads: the queue and its byte budget.
pub(crate) struct Decoders {
    tx: flume::Sender<FrameJob>,
    budget: std::sync::Arc<tokio::sync::Semaphore>,
}

/// MiB of compressed frames that may wait for the decoders at once.
const QUEUE_MIB: usize = 256;

/// One ranged GET to make. A lead carries every frame wanted from its pack and tells the
/// pack's other ranges (holding `wait`) whether its answer covered them.
struct Job {
    pack: (Hash, u64),
    range: Range,
    lead: Option<(Range, tokio::sync::watch::Sender<Option<bool>>)>,
    wait: Option<tokio::sync::watch::Receiver<Option<bool>>>,
}

/// Groups wanted blobs by pack and frame.
fn frames_by_pack(wanted: &[Wanted]) -> BTreeMap<(Hash, u64), Vec<FrameWant>> {
    let mut by: BTreeMap<(Hash, u64), BTreeMap<u64, FrameWant>> = BTreeMap::new();
    for &(hash, size, pack, l) in wanted {
        by.entry(pack)
            .or_default()
            .entry(l.frame_off)
            .or_insert_with(|| FrameWant {
                frame_off: l.frame_off,
                frame_len: l.frame_len,
                frame_raw: l.frame_raw,
                blobs: Vec::new(),
            })
            .blobs
            .push((hash, size, l.off));
    }
    by.into_iter()
        .map(|(p, f)| (p, f.into_values().collect()))
        .collect()
}

impl Remote {
    /// `<store>/remote-index/<tag of this remote>/`.
    pub fn index_cache(&self, store: &Path) -> PathBuf {
        let who = format!(
            "{}|{}",
            self.url(),
            self.settings.endpoint.as_deref().unwrap_or("")
        );
        let tag = blake3::hash(who.as_bytes()).to_hex();
        store.join(INDEX_CACHE_DIR).join(&tag[..16])
    }

    /// Every pack under `packs/`, with whether its index (or `remote gc`'s marker) is there.
    /// An index or marker whose pack is gone shows as a pack of size 0.
    pub(crate) async fn list_packs(&self) -> Result<Vec<PackInfo>> {
        let prefix = self.keys.packs();
        let mut listing = self.store.list(Some(&obj_path(&prefix)));
        let mut packs: BTreeMap<Hash, PackInfo> = BTreeMap::new();
        let blank = |id| PackInfo {
            id,
            size: 0,
            modified: 0,
            indexed: false,
            condemned_at: None,
        };
        while let Some(item) = listing.next().await {
            let meta = item.map_err(|e| self.error(&prefix, "list", e))?;
            let key = meta.location.as_ref();
            let t = meta.last_modified.timestamp();
            if let Some(id) = parse_pack_key(key, PACK_SUFFIX) {
                let p = packs.entry(id).or_insert_with(|| blank(id));
                (p.size, p.modified) = (meta.size, t);
            } else if let Some(id) = parse_pack_key(key, INDEX_SUFFIX) {
                packs.entry(id).or_insert_with(|| blank(id)).indexed = true;
            } else if let Some(id) = parse_pack_key(key, CONDEMNED_SUFFIX) {
                packs.entry(id).or_insert_with(|| blank(id)).condemned_at = Some(t);
            }
        }
        Ok(packs.into_values().collect())
    }

    /// The index of pack `id`, from the cache in `cache` or the remote (then cached).
    pub(crate) async fn load_index(&self, id: &Hash, cache: &Path) -> Result<Vec<IndexEntry>> {
        let cached = cache.join(format!("{}{INDEX_SUFFIX}", vrift_manifest::hex(id)));
        if let Ok(b) = std::fs::read(&cached) {
            if let Ok((_, e)) = pack::decode_index(&b) {
                return Ok(e);
            }
        }
        let key = self.keys.pack_index(id);
        let b = self.get_bytes(&key).await?;
        let (_, entries) = pack::decode_index(&b).map_err(|e| RemoteError::BadPack {
            key: key.clone(),
            detail: e.0,
        })?;
        // Best effort: a cache that cannot be written only costs a GET next time.
        if std::fs::create_dir_all(cache).is_ok() {
            let tmp = cache.join(format!(
                ".tmp-{}-{}",
                std::process::id(),
                vrift_manifest::hex(id)
            ));
            if std::fs::write(&tmp, &b).is_ok() && std::fs::rename(&tmp, &cached).is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
        }
        Ok(entries)
    }

    /// What the remote's indexed packs hold (indexes read in parallel, cached in the store).
    pub(crate) async fn catalog(&self, store: &Path, jobs: usize) -> Result<Catalog> {
        let packs = self.list_packs().await?;
        let cache = self.index_cache(store);
        let indexed: Vec<&PackInfo> = packs.iter().filter(|p| p.indexed && p.size > 0).collect();
        let cache_ref = &cache;
        let loaded: Vec<(Hash, Vec<IndexEntry>)> =
            stream::iter(indexed.iter().map(|p| async move {
                Ok::<_, RemoteError>((p.id, self.load_index(&p.id, cache_ref).await?))
            }))
            .buffer_unordered(jobs.max(1))
            .try_collect()
            .await?;
        let mut blobs = HashMap::new();
        let lens = packs.iter().map(|p| (p.id, p.size)).collect();
        for (id, entries) in loaded {
            for e in entries {
                blobs.entry((e.hash, e.size)).or_insert((id, e.loc));
            }
        }
        Ok(Catalog { packs, blobs, lens })
    }

    pub(crate) async fn get_bytes(&self, key: &str) -> Result<Bytes> {
        let got = self
            .store
            .get(&obj_path(key))
            .await
            .map_err(|e| self.error(key, "get", e))?;
        let b = got.bytes().await.map_err(|e| self.error(key, "get", e))?;
        RemoteStats::add(&self.stats.bytes_down, b.len() as u64);
        Ok(b)
    }

    pub(crate) async fn put_bytes(&self, key: &str, b: Bytes) -> Result<()> {
        let n = b.len() as u64;
        if n >= self.settings.multipart_threshold {
            return self.put_in_parts(key, b).await;
        }
        self.store
            .put(&obj_path(key), PutPayload::from(b))
            .await
            .map_err(|e| self.error(key, "put", e))?;
        RemoteStats::add(&self.stats.bytes_up, n);
        Ok(())
    }

    /// An object at least `multipart_threshold` large goes up as a multipart upload: S3 takes
    /// at most 5 GiB in one PUT, and a pack holding one large blob can be more. Parts of
    /// `part_size`, [`PARTS_IN_FLIGHT`] at a time, each retried by the client like any request; when one
    /// fails for good the upload is aborted, so no parts are left to bill for.
    async fn put_in_parts(&self, key: &str, b: Bytes) -> Result<()> {
        let n = b.len() as u64;
        let mut up = self
            .store
            .put_multipart(&obj_path(key))
            .await
            .map_err(|e| self.error(key, "put", e))?;
        // S3 takes at most 10,000 parts: larger parts for an object that would need more.
        let part = (self.settings.part_size as usize)
            .max(b.len().div_ceil(10_000))
            .max(1);
        // Started in order (the part numbers), a few at a time: packs already go up `jobs`
        // at a time, each with its parts.
        let parts: Vec<_> = (0..b.len())
            .step_by(part)
            .map(|at| up.put_part(PutPayload::from(b.slice(at..(at + part).min(b.len())))))
            .collect();
        let sent: std::result::Result<Vec<()>, object_store::Error> = stream::iter(parts)
            .buffer_unordered(PARTS_IN_FLIGHT)
            .try_collect()
            .await;
        let done = match sent {
            Ok(_) => up.complete().await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            let _ = up.abort().await;
            return Err(self.error(key, "put", e));
        }
        RemoteStats::add(&self.stats.bytes_up, n);
        Ok(())
    }

    /// Packs `blobs` (each read from the path `locate` gives, a blob of the store at `store` or
    /// a file of an index-only tree, and checked against its name) and uploads every
    /// pack, then its index; returns what each new pack holds. Builders run on all cores;
    /// uploads `jobs` at a time as packs complete.
    pub(crate) fn push_packs(
        &self,
        store: &Path,
        locate: &(dyn Fn(&Hash, u64) -> PathBuf + Sync),
        blobs: &[(Hash, u64)],
        jobs: usize,
    ) -> Result<Vec<(Hash, u64, Vec<IndexEntry>)>> {
        // Segments of consecutive blobs (manifest order keeps a package's files together,
        // which is what makes small files compress well).
        let mut segments: Vec<&[(Hash, u64)]> = Vec::new();
        let (mut start, mut raw) = (0usize, 0u64);
        for (i, b) in blobs.iter().enumerate() {
            raw += b.1;
            if raw >= SEGMENT {
                segments.push(&blobs[start..=i]);
                (start, raw) = (i + 1, 0);
            }
        }
        if start < blobs.len() {
            segments.push(&blobs[start..]);
        }
        let threads = std::thread::available_parallelism()
            .map(std::num::NonZero::get)
            .unwrap_or(2)
            .clamp(1, segments.len().max(1));
        let next = AtomicUsize::new(0);
        let failed: Mutex<Option<RemoteError>> = Mutex::new(None);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Pack>(threads);
        std::thread::scope(|s| {
            for _ in 0..threads {
                let tx = tx.clone();
                let (next, failed, segments) = (&next, &failed, &segments);
                s.spawn(move || {
                    let build = || -> Result<()> {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(seg) = segments.get(i) else {
                                return Ok(());
                            };
                            let mut b = PackBuilder::new();
                            for &(hash, size) in *seg {
                                let path = locate(&hash, size);
                                let data = crate::push::read_for_push(&path, &hash, size, store)?;
                                let full =
                                    b.add(hash, &data).map_err(|e| RemoteError::io(&path, e))?;
                                RemoteStats::add(&self.stats.blobs_moved, 1);
                                RemoteStats::add(&self.stats.bytes_moved, size);
                                if let Some(p) = full {
                                    if tx.blocking_send(p).is_err() {
                                        return Ok(()); // the uploader stopped: it has the error
                                    }
                                }
                            }
                            if let Some(p) = b.finish().map_err(|e| RemoteError::io(store, e))? {
                                if tx.blocking_send(p).is_err() {
                                    return Ok(());
                                }
                            }
                            if failed.lock().map(|f| f.is_some()).unwrap_or(true) {
                                return Ok(());
                            }
                        }
                    };
                    if let Err(e) = build() {
                        if let Ok(mut f) = failed.lock() {
                            f.get_or_insert(e);
                        }
                    }
                });
            }
            drop(tx);
            let uploaded: Result<Vec<(Hash, u64, Vec<IndexEntry>)>> = self.rt.block_on(async {
                let packs = async_stream(&mut rx);
                packs
                    .map(|p| async move {
                        let index = Bytes::from(p.index());
                        let len = p.bytes.len() as u64;
                        self.put_bytes(&self.keys.pack(&p.id), Bytes::from(p.bytes))
                            .await?;
                        // The index last: it vouches for a complete pack.
                        self.put_bytes(&self.keys.pack_index(&p.id), index).await?;
                        Ok::<_, RemoteError>((p.id, len, p.entries))
                    })
                    .buffer_unordered(jobs.max(1))
                    .try_collect()
                    .await
            });
            if uploaded.is_err() {
                // Stop the builders: they see the closed channel.
                rx.close();
                while rx.try_recv().is_ok() {}
            }
            let built_err = failed.lock().ok().and_then(|mut f| f.take());
            match (uploaded, built_err) {
                (Err(e), _) | (Ok(_), Some(e)) => Err(e),
                (Ok(v), None) => Ok(v),
            }
        })
    }

    /// Fetches `wanted` blobs (hash, size, pack, location) into `cas`: per pack, merged
    /// ranged GETs, `jobs` in flight, each frame decoded as its bytes arrive and every blob
    /// checked against its name before it is stored. Blobs whose pack is gone (repacked by
    /// `remote gc` since the bundle was read) are returned for a second try.
    pub(crate) fn fetch_packed(
        &self,
        sink: &dyn BlobSink,
        wanted: &[Wanted],
        jobs: usize,
    ) -> (Vec<RemoteError>, Vec<(Hash, u64)>) {
        // Decoding, checking and writing run on threads of their own, one per core: the
        // transfers are futures polled on this one thread, which would otherwise do all of
        // that work itself, one frame at a time, while the other cores idle.
        let workers = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let (tx, rx) = flume::bounded::<FrameJob>(workers * 4);
        let failed: Mutex<Vec<RemoteError>> = Mutex::new(Vec::new());
        let (mut errors, gone) = std::thread::scope(|s| {
            for _ in 0..workers {
                let rx = rx.clone();
                let failed = &failed;
                s.spawn(move || {
                    for j in &rx {
                        if let Err(e) = self.store_frame(sink, &j.key, &j.z, &j.f) {
                            if let Ok(mut f) = failed.lock() {
                                f.push(e);
                            }
                        }
                    }
                });
            }
            drop(rx);
            s.spawn(|| sink.prepare(wanted));
            // `tx` is dropped with this future, which ends the workers.
            self.rt.block_on(self.fetch_packed_async(tx, wanted, jobs))
        });
        errors.extend(failed.into_inner().unwrap_or_default());
        (errors, gone)
    }

    async fn fetch_packed_async(
        &self,
        tx: flume::Sender<FrameJob>,
        wanted: &[Wanted],
        jobs: usize,
    ) -> (Vec<RemoteError>, Vec<(Hash, u64)>) {
        let decoders = Decoders {
            tx,
            budget: std::sync::Arc::new(tokio::sync::Semaphore::new(QUEUE_MIB)),
        };
        let whole = self.no_ranges.load(Ordering::Relaxed);
        // Until a server has answered one ranged GET with a part (206), it may be one that
        // answers every range with the whole pack (`rclone serve s3`): then the first range
        // of each pack ("lead") goes alone, and the pack's other ranges wait for its answer.
        // A whole pack brings every frame wanted from it, so they are done; a part means
        // ranges work, and they go. Without this, N ranges of one pack in flight fetched the
        // whole pack N times.
        let gate = !whole && !self.ranges_ok.load(Ordering::Relaxed);
        let mut leads: Vec<Job> = Vec::new();
        let mut rest: Vec<Job> = Vec::new();
        for (pack, frames) in frames_by_pack(wanted) {
            // A server without ranged reads: one plain GET per pack.
            let gap = if whole { u64::MAX } else { MERGE_GAP };
            let mut ranges = plan_ranges(frames, gap);
            // The largest range leads (the long transfers start early).
            ranges.sort_by_key(|r| std::cmp::Reverse(r.end - r.start));
            let all = (gate && ranges.len() > 1).then(|| Range {
                start: 0,
                end: pack.1,
                frames: {
                    let mut f: Vec<FrameWant> = ranges
                        .iter()
                        .flat_map(|r| r.frames.iter().cloned())
                        .collect();
                    f.sort_by_key(|f| f.frame_off);
                    f
                },
            });
            let (tx, rx) = tokio::sync::watch::channel(None::<bool>);
            let mut ranges = ranges.into_iter();
            if let Some(first) = ranges.next() {
                leads.push(Job {
                    pack,
                    range: first,
                    lead: all.map(|a| (a, tx)),
                    wait: None,
                });
            }
            for r in ranges {
                rest.push(Job {
                    pack,
                    range: r,
                    lead: None,
                    wait: gate.then(|| rx.clone()),
                });
            }
        }
        // Leads first, so a waiting range never holds a slot its lead needs.
        rest.sort_by_key(|j| std::cmp::Reverse(j.range.end - j.range.start));
        leads.sort_by_key(|j| std::cmp::Reverse(j.range.end - j.range.start));
        let results: Vec<Result<(), RangeFailure>> = stream::iter(
            leads
                .into_iter()
                .chain(rest)
                .map(|job| self.fetch_job(&decoders, job)),
        )
        .buffer_unordered(jobs.max(1))
        .collect()
        .await;
        let mut errors = Vec::new();
        let mut gone = Vec::new();
        for r in results {
            match r {
                Ok(()) => {}
                Err((RemoteError::NotFound { .. }, blobs)) => gone.extend(blobs),
                Err((e, _)) => errors.push(e),
            }
        }
        (errors, gone)
    }

    /// One job: a lead tells the ranges waiting on it whether its answer brought the whole
    /// pack (then they are done); a waiting range goes once its lead has answered.
    async fn fetch_job(&self, sink: &Decoders, job: Job) -> Result<(), RangeFailure> {
        if let Some(mut rx) = job.wait {
            // A dropped sender (the lead failed before an answer) counts as "not covered".
            let covered = rx
                .wait_for(std::option::Option::is_some)
                .await
                .map(|v| v.unwrap_or(false))
                .unwrap_or(false);
            if covered {
                return Ok(());
            }
        }
        match job.lead {
            Some((all, tx)) => {
                let tell = |covered: bool| {
                    let _ = tx.send(Some(covered));
                };
                self.fetch_range(sink, &job.pack, &job.range, Some(&all), Some(&tell))
                    .await
            }
            None => {
                self.fetch_range(sink, &job.pack, &job.range, None, None)
                    .await
            }
        }
    }

    /// One ranged GET of a pack. When the server answers with the whole pack and `all` is
    /// given (every frame wanted from this pack), all of them are stored from it. `answered`
    /// hears, once the response has begun, whether it covers `all`. On failure: the first
    /// error, and (when the pack is missing) the blobs it was to bring.
    async fn fetch_range(
        &self,
        sink: &Decoders,
        &(pack, pack_len): &(Hash, u64),
        r: &Range,
        all: Option<&Range>,
        answered: Option<&(dyn Fn(bool) + Sync)>,
    ) -> Result<(), RangeFailure> {
        let tell = |covered: bool| {
            if let Some(f) = answered {
                f(covered);
            }
        };
        let key = self.keys.pack(&pack);
        let all_blobs = || -> Vec<(Hash, u64)> {
            r.frames
                .iter()
                .flat_map(|f| f.blobs.iter().map(|b| (b.0, b.1)))
                .collect()
        };
        // The whole pack is a plain GET: some servers answer a range that covers the whole
        // object with the whole object (200, not 206), which a ranged read must refuse.
        let no_ranges = self.no_ranges.load(Ordering::Relaxed);
        let whole = no_ranges || (r.start == 0 && r.end >= pack_len);
        let opts = GetOptions {
            range: (!whole).then_some(GetRange::Bounded(r.start..r.end)),
            ..Default::default()
        };
        let (got, from, r) = match self.store.get_opts(&obj_path(&key), opts).await {
            Ok(g) if whole => {
                // A whole pack (another pack's lead found ranges refused meanwhile, or the
                // range was the pack): every frame wanted from it comes from this GET.
                tell(all.is_some());
                (g, 0, all.unwrap_or(r))
            }
            Ok(g) => {
                self.ranges_ok.store(true, Ordering::Relaxed);
                tell(false);
                (g, r.start, r)
            }
            // `rclone serve s3` answers every range with 200 and the range's bytes, which
            // object_store refuses: from now on whole packs, the bytes before ours skipped,
            // and every frame wanted from this pack taken from this one GET.
            Err(e) if e.to_string().contains("non-partial response") => {
                self.no_ranges.store(true, Ordering::Relaxed);
                match self
                    .store
                    .get_opts(&obj_path(&key), GetOptions::default())
                    .await
                {
                    Ok(g) => {
                        tell(all.is_some());
                        (g, 0, all.unwrap_or(r))
                    }
                    Err(e) => {
                        tell(false);
                        return Err((self.error(&key, "get", e), all_blobs()));
                    }
                }
            }
            Err(e) => {
                tell(false);
                return Err((self.error(&key, "get", e), all_blobs()));
            }
        };
        let mut body = got.into_stream();
        let mut buf: Vec<u8> = Vec::new();
        // Offset in the pack of `buf[0]`; bytes before `r.start` are dropped as they come.
        let mut buf_start = from;
        let truncated = |at: u64| RemoteError::BadPack {
            key: key.clone(),
            detail: format!(
                "the pack ends at byte {at}, its index says a frame runs to {}",
                r.end
            ),
        };
        for f in &r.frames {
            let end = f.frame_off.saturating_add(f.frame_len);
            if f.frame_off < buf_start {
                // Overlapping frames: only a damaged or forged bundle says so.
                return Err((
                    RemoteError::BadPack {
                        key: key.clone(),
                        detail: format!("frames overlap at byte {}", f.frame_off),
                    },
                    Vec::new(),
                ));
            }
            while buf_start + (buf.len() as u64) < end {
                match body.next().await {
                    Some(Ok(chunk)) => {
                        RemoteStats::add(&self.stats.bytes_down, chunk.len() as u64);
                        buf.extend_from_slice(&chunk);
                        // Nothing before this frame is needed any more.
                        if buf_start < f.frame_off {
                            let skip = ((f.frame_off - buf_start) as usize).min(buf.len());
                            buf.drain(..skip);
                            buf_start += skip as u64;
                        }
                    }
                    Some(Err(e)) => return Err((self.error(&key, "get", e), Vec::new())),
                    None => {
                        let e = truncated(buf_start + buf.len() as u64);
                        return Err((e, Vec::new()));
                    }
                }
            }
            // The frame leaves `buf` without a copy: what came before it goes, what comes
            // after it stays.
            buf.drain(..(f.frame_off - buf_start) as usize);
            let rest = buf.split_off((end - f.frame_off) as usize);
            let z = std::mem::replace(&mut buf, rest);
            buf_start = end;
            // Compressed bytes waiting for the decoders are bounded (a frame of a large blob
            // can be hundreds of MiB): this transfer waits for room, the others go on.
            let mib = ((z.len() as u64).div_ceil(1 << 20)).clamp(1, QUEUE_MIB as u64) as u32;
            let Ok(permit) = sink.budget.clone().acquire_many_owned(mib).await else {
                return Err((
                    RemoteError::BadPack {
                        key: key.clone(),
                        detail: "the frame decoders stopped".to_string(),
                    },
                    Vec::new(),
                ));
            };
            let job = FrameJob {
                key: key.clone(),
                z,
                f: f.clone(),
                _permit: permit,
            };
            // Waits while the workers are behind (other transfers go on meanwhile); they
            // report what fails. Gone workers (a panic) end the run with an error.
            if sink.tx.send_async(job).await.is_err() {
                return Err((
                    RemoteError::BadPack {
                        key: key.clone(),
                        detail: "the frame decoders stopped".to_string(),
                    },
                    Vec::new(),
                ));
            }
        }
        Ok(())
    }

    /// Decodes one frame and stores the blobs wanted from it, each checked against its name.
    fn store_frame(&self, sink: &dyn BlobSink, key: &str, z: &[u8], f: &FrameWant) -> Result<()> {
        let raw = pack::decode_frame(z, f.frame_raw).map_err(|e| RemoteError::BadPack {
            key: key.to_string(),
            detail: format!("frame at byte {}: {}", f.frame_off, e.0),
        })?;
        let mut first_err = None;
        for &(hash, size, off) in &f.blobs {
            let Some(data) = blob_in_frame(&raw, off, size) else {
                first_err.get_or_insert(RemoteError::BadPack {
                    key: key.to_string(),
                    detail: format!(
                        "blob {}_{size} at {off} lies outside its frame at byte {} ({} bytes)",
                        vrift_manifest::hex(&hash),
                        f.frame_off,
                        raw.len()
                    ),
                });
                continue;
            };
            let got = blake3::hash(data);
            if got.as_bytes() != &hash {
                first_err.get_or_insert(RemoteError::Corrupt {
                    key: format!("{key} (blob {}_{size})", vrift_manifest::hex(&hash)),
                    got_size: size,
                    got_hash: got.to_hex().to_string(),
                });
                continue;
            }
            match sink.put(&hash, size, data) {
                Ok(()) => {
                    RemoteStats::add(&self.stats.blobs_moved, 1);
                    RemoteStats::add(&self.stats.bytes_moved, size);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The bundle for `manifest` given where every blob is.
    pub(crate) fn bundle(
        manifest: Vec<u8>,
        blobs: &[(Hash, u64)],
        locate: impl Fn(&(Hash, u64)) -> Option<((Hash, u64), Loc)>,
    ) -> Option<Bundle> {
        let mut packs: Vec<(Hash, u64)> = Vec::new();
        let mut pack_no: HashMap<Hash, u32> = HashMap::new();
        let mut locs = Vec::with_capacity(blobs.len());
        for b in blobs {
            let (pack, loc) = locate(b)?;
            let n = *pack_no.entry(pack.0).or_insert_with(|| {
                packs.push(pack);
                (packs.len() - 1) as u32
            });
            locs.push((b.0, b.1, n, loc));
        }
        Some(Bundle {
            manifest,
            packs,
            locs,
        })
    }
}

/// The receiver as a stream (tokio's mpsc without the `tokio-stream` crate).
fn async_stream(
    rx: &mut tokio::sync::mpsc::Receiver<Pack>,
) -> impl futures::Stream<Item = Pack> + '_ {
    stream::unfold(rx, |rx| async move { rx.recv().await.map(|p| (p, rx)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_placed_outside_its_frame_is_refused_not_a_panic() {
        let raw = b"0123456789";
        assert_eq!(blob_in_frame(raw, 2, 3), Some(&b"234"[..]));
        assert_eq!(blob_in_frame(raw, 0, 10), Some(&raw[..]));
        assert_eq!(blob_in_frame(raw, 10, 0), Some(&b""[..]));
        assert_eq!(blob_in_frame(raw, 8, 3), None);
        assert_eq!(blob_in_frame(raw, 11, 0), None);
        assert_eq!(blob_in_frame(raw, u64::MAX, 2), None);
        assert_eq!(blob_in_frame(raw, 2, u64::MAX), None);
    }

    fn fw(off: u64, len: u64) -> FrameWant {
        FrameWant {
            frame_off: off,
            frame_len: len,
            frame_raw: 1,
            blobs: vec![],
        }
    }

    #[test]
    fn blobs_keep_read_and_execute_bits_only() {
        assert_eq!(blob_mode(0o755), 0o555);
        assert_eq!(blob_mode(0o644), 0o444);
        assert_eq!(blob_mode(0o4755), 0o555);
        assert_eq!(blob_mode(0o000), 0o400);
    }

    #[test]
    fn frames_merge_into_ranges_across_small_gaps() {
        let r = plan_ranges(
            vec![fw(100, 10), fw(0, 50), fw(50, 50), fw(10_000, 5)],
            1000,
        );
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].start, r[0].end, r[0].frames.len()), (0, 110, 3));
        assert_eq!((r[1].start, r[1].end), (10_000, 10_005));
        let r = plan_ranges(vec![fw(0, 10), fw(1010, 5)], 1000);
        assert_eq!(r.len(), 1, "a gap of exactly `gap` bytes merges");
        assert!(plan_ranges(vec![], 10).is_empty());
    }
}
