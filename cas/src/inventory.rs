//! Incremental accounting of a store for `vrift serve`: the numbers of `vrift status` (blobs,
//! bytes, orphans, per-project usage) without walking millions of blobs on every refresh.
//!
//! Blobs are immutable and live in `blake3/ab/cd/`; adding or removing one changes its shard
//! directory's mtime. So a refresh stats each shard directory and re-lists only those whose
//! stamp changed, stat-ing only names it has not seen before. References come from the cached
//! manifests; they are re-read (one pass over their entries, as `status` does) only when
//! `registry.json` or a cached manifest changed. A stamp younger than [`RACY_SECS`] is not
//! trusted (the directory may change again within the same timestamp tick), so that directory
//! is looked at again next time.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::registry::{registry_path, Registry};
use crate::usage::Usage;
use vrift_manifest::Hash;

/// Stamps younger than this (seconds) are not trusted.
pub const RACY_SECS: i64 = 2;

/// What identifies one version of a file or directory.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// A file that does not exist: as stable a state as any other.
    const MISSING: Stamp = Stamp {
        ino: 0,
        size: 0,
        mtime: (0, 0),
        ctime: (0, 0),
    };
}

/// The stamp of the file at `path` (`MISSING` if there is none), `None` if it cannot be trusted.
fn stamp_of(path: &Path, now: i64, racy: i64) -> Option<Stamp> {
    match fs::metadata(path) {
        Ok(md) => stamp(&md, now, racy),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some(Stamp::MISSING),
        Err(_) => None,
    }
}

/// The stamp of `md`, or `None` when it is too recent to rely on.
fn stamp(md: &fs::Metadata, now: i64, racy: i64) -> Option<Stamp> {
    if now - md.mtime() < racy || now - md.ctime() < racy {
        return None;
    }
    Some(Stamp {
        ino: md.ino(),
        size: md.size(),
        mtime: (md.mtime(), md.mtime_nsec()),
        ctime: (md.ctime(), md.ctime_nsec()),
    })
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[derive(Clone, Copy)]
struct BlobRec {
    hash: Hash,
    size: u64,
    disk: u64,
}

#[derive(Default)]
struct Leaf {
    stamp: Option<Stamp>,
    blobs: Vec<BlobRec>,
    foreign: u64,
    orphans: u64,
    orphan_bytes: u64,
}

#[derive(Default)]
struct Top {
    stamp: Option<Stamp>,
    leaves: Vec<u8>,
    foreign: u64,
}

/// Store-wide numbers at one refresh.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub blobs: u64,
    pub content_bytes: u64,
    pub disk_bytes: u64,
    pub foreign_files: u64,
    pub orphan_blobs: u64,
    pub orphan_bytes: u64,
}

/// What one refresh did (exported, so the cost of keeping the numbers fresh is visible).
#[derive(Debug, Clone, Copy, Default)]
pub struct RefreshWork {
    pub shard_dirs: u64,
    pub shard_dirs_relisted: u64,
    pub blobs_statted: u64,
    pub manifests_reloaded: bool,
}

/// The incremental inventory of one store.
pub struct Inventory {
    root: PathBuf,
    blob_dir: PathBuf,
    tops: HashMap<u8, Top>,
    leaves: HashMap<u16, Leaf>,
    top_foreign: u64,
    registry_stamp: Option<Option<Stamp>>,
    manifest_stamps: Vec<Option<Stamp>>,
    /// The registry and the references of its cached manifests, or why they are unreadable.
    pub usage: Result<Usage, String>,
    /// Number of projects in the registry (also when the usage could not be computed).
    pub registry_projects: usize,
    /// Stamps younger than this many seconds are not trusted ([`RACY_SECS`]).
    pub racy_secs: i64,
}

impl Inventory {
    pub fn new(root: &Path) -> Inventory {
        Inventory {
            root: root.to_path_buf(),
            blob_dir: root.join(crate::BLOB_DIR),
            tops: HashMap::new(),
            leaves: HashMap::new(),
            top_foreign: 0,
            registry_stamp: None,
            manifest_stamps: Vec::new(),
            usage: Err("not loaded yet".into()),
            registry_projects: 0,
            racy_secs: RACY_SECS,
        }
    }

    /// Brings the inventory up to date, doing only the work the changes since the last
    /// refresh require.
    pub fn refresh(&mut self) -> io::Result<RefreshWork> {
        let mut work = RefreshWork::default();
        let reloaded = self.refresh_usage();
        work.manifests_reloaded = reloaded;
        self.refresh_blobs(&mut work)?;
        if reloaded {
            let usage = self.usage.as_ref().ok();
            for leaf in self.leaves.values_mut() {
                count_orphans(leaf, usage);
            }
        }
        Ok(work)
    }

    /// Re-reads the registry and the manifests if either changed; `true` if it did.
    fn refresh_usage(&mut self) -> bool {
        let now = now_unix();
        let reg_stamp = stamp_of(&registry_path(&self.root), now, self.racy_secs);
        let reg = match Registry::load(&self.root) {
            Ok(r) => r,
            Err(e) => {
                let changed = self.usage.is_ok();
                self.usage = Err(e.to_string());
                self.registry_stamp = None;
                return changed;
            }
        };
        let manifest_stamps: Vec<Option<Stamp>> = reg
            .projects
            .iter()
            .map(|p| stamp_of(&self.root.join(&p.cached_manifest), now, self.racy_secs))
            .collect();
        let unchanged = self.usage.is_ok()
            && self.registry_stamp == Some(reg_stamp)
            && reg_stamp.is_some()
            && manifest_stamps == self.manifest_stamps
            && manifest_stamps.iter().all(Option::is_some);
        if unchanged {
            return false;
        }
        self.registry_projects = reg.projects.len();
        self.usage = Usage::load(&self.root, &reg).map_err(|e| e.to_string());
        self.registry_stamp = Some(reg_stamp);
        self.manifest_stamps = manifest_stamps;
        true
    }

    fn refresh_blobs(&mut self, work: &mut RefreshWork) -> io::Result<()> {
        let now = now_unix();
        let entries = match fs::read_dir(&self.blob_dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.tops.clear();
                self.leaves.clear();
                self.top_foreign = 0;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut present = HashSet::new();
        self.top_foreign = 0;
        for e in entries.flatten() {
            match (hex2(e.file_name().as_bytes()), e.file_type()) {
                (Some(a), Ok(ft)) if ft.is_dir() => {
                    present.insert(a);
                }
                _ => self.top_foreign += 1,
            }
        }
        self.tops.retain(|a, _| present.contains(a));
        self.leaves
            .retain(|idx, _| present.contains(&((idx >> 8) as u8)));
        let usage = self.usage.as_ref().ok();
        for a in present {
            let dir = self.blob_dir.join(hex(a));
            let Ok(md) = fs::metadata(&dir) else {
                continue; // removed meanwhile
            };
            let st = stamp(&md, now, self.racy_secs);
            let top = self.tops.entry(a).or_default();
            if top.stamp.is_none() || top.stamp != st {
                let (leaves, foreign) = list_shards(&dir)?;
                let keep: HashSet<u8> = leaves.iter().copied().collect();
                self.leaves
                    .retain(|idx, _| (idx >> 8) as u8 != a || keep.contains(&((idx & 0xff) as u8)));
                top.leaves = leaves;
                top.foreign = foreign;
            }
            top.stamp = st;
            for &b in &top.leaves {
                work.shard_dirs += 1;
                let idx = (u16::from(a) << 8) | u16::from(b);
                let leaf_dir = dir.join(hex(b));
                let md = match fs::metadata(&leaf_dir) {
                    Ok(md) => md,
                    Err(_) => {
                        self.leaves.remove(&idx);
                        continue;
                    }
                };
                let st = stamp(&md, now, self.racy_secs);
                let leaf = self.leaves.entry(idx).or_default();
                if leaf.stamp.is_none() || leaf.stamp != st {
                    work.shard_dirs_relisted += 1;
                    work.blobs_statted += relist(leaf, &leaf_dir, a, b)?;
                    count_orphans(leaf, usage);
                }
                leaf.stamp = st;
            }
        }
        Ok(())
    }

    /// The store-wide totals as of the last refresh.
    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            foreign_files: self.top_foreign + self.tops.values().map(|t| t.foreign).sum::<u64>(),
            ..Default::default()
        };
        for leaf in self.leaves.values() {
            t.blobs += leaf.blobs.len() as u64;
            for b in &leaf.blobs {
                t.content_bytes += b.size;
                t.disk_bytes += b.disk;
            }
            t.foreign_files += leaf.foreign;
            t.orphan_blobs += leaf.orphans;
            t.orphan_bytes += leaf.orphan_bytes;
        }
        t
    }
}

/// Orphans of one shard: blobs no registered manifest references (none known without a
/// readable registry).
fn count_orphans(leaf: &mut Leaf, usage: Option<&Usage>) {
    leaf.orphans = 0;
    leaf.orphan_bytes = 0;
    let Some(u) = usage else { return };
    for b in &leaf.blobs {
        if !u.is_referenced(&(b.hash, b.size)) {
            leaf.orphans += 1;
            leaf.orphan_bytes += b.disk;
        }
    }
}

/// The `cd` shard directories under `blake3/ab/`, and how many other entries there are.
fn list_shards(dir: &Path) -> io::Result<(Vec<u8>, u64)> {
    let mut leaves = Vec::new();
    let mut foreign = 0;
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((leaves, 0)),
        Err(e) => return Err(e),
    };
    for e in rd.flatten() {
        match (hex2(e.file_name().as_bytes()), e.file_type()) {
            (Some(b), Ok(ft)) if ft.is_dir() => leaves.push(b),
            _ => foreign += 1,
        }
    }
    leaves.sort_unstable();
    Ok((leaves, foreign))
}

/// Re-lists one shard directory, keeping what is known about blobs seen before (blobs never
/// change); returns how many blobs had to be stat-ed.
fn relist(leaf: &mut Leaf, dir: &Path, a: u8, b: u8) -> io::Result<u64> {
    let known: HashMap<(Hash, u64), u64> = leaf
        .blobs
        .iter()
        .map(|r| ((r.hash, r.size), r.disk))
        .collect();
    let mut blobs = Vec::with_capacity(known.len() + 8);
    let mut foreign = 0;
    let mut statted = 0;
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            leaf.blobs.clear();
            leaf.foreign = 0;
            return Ok(0);
        }
        Err(e) => return Err(e),
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let parsed =
            crate::parse_blob_name(name.as_bytes()).filter(|(h, _)| h[0] == a && h[1] == b);
        let Some((hash, size)) = parsed else {
            foreign += 1;
            continue;
        };
        if let Some(&disk) = known.get(&(hash, size)) {
            blobs.push(BlobRec { hash, size, disk });
            continue;
        }
        statted += 1;
        match e.metadata() {
            Ok(md) if md.is_file() => blobs.push(BlobRec {
                hash,
                size,
                disk: md.blocks() * 512,
            }),
            Ok(_) => foreign += 1,
            Err(_) => {} // removed while we looked (a concurrent gc)
        }
    }
    leaf.blobs = blobs;
    leaf.foreign = foreign;
    Ok(statted)
}

fn hex2(n: &[u8]) -> Option<u8> {
    if n.len() != 2 {
        return None;
    }
    let v = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some((v(n[0])? << 4) | v(n[1])?)
}

fn hex(b: u8) -> String {
    format!("{b:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stores file `f{i}` of `src` (content "content {i}") as a copy.
    fn store_one(cas: &crate::Cas, src: &Path, i: u32) {
        let p = src.join(format!("f{i}"));
        fs::write(&p, format!("content {i}")).unwrap();
        let data = fs::read(&p).unwrap();
        let h = *blake3::hash(&data).as_bytes();
        let f = std::fs::File::open(&p).unwrap();
        cas.copy_in_fd(
            std::os::fd::AsFd::as_fd(&f),
            &p,
            &h,
            data.len() as u64,
            0o644,
        )
        .unwrap();
    }

    #[test]
    fn hex_names() {
        assert_eq!(hex2(b"0a"), Some(10));
        assert_eq!(hex2(b"ff"), Some(255));
        assert_eq!(hex2(b"FF"), None);
        assert_eq!(hex2(b"abc"), None);
        assert_eq!(hex(7), "07");
    }

    /// The incremental numbers agree with a full `scan` (what `vrift status` uses), before
    /// and after the store changes.
    #[test]
    fn matches_a_full_scan() {
        let dir = tempfile::tempdir().unwrap();
        let cas = crate::Cas::open(dir.path()).unwrap();
        let mut inv = Inventory::new(cas.root());
        inv.refresh().unwrap();
        assert_eq!(inv.totals().blobs, 0);
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        for i in 0..50u32 {
            store_one(&cas, &src, i);
        }
        fs::write(cas.blob_dir().join("stray"), b"x").unwrap();
        let check = |inv: &Inventory| {
            let full = crate::scan::scan(&cas).unwrap();
            let t = inv.totals();
            assert_eq!(t.blobs, full.blobs.len() as u64);
            assert_eq!(t.content_bytes, full.content_bytes());
            assert_eq!(t.disk_bytes, full.disk_bytes());
            assert_eq!(t.foreign_files, full.foreign.len() as u64);
            // No registry: every blob is an orphan.
            assert_eq!(t.orphan_blobs, full.blobs.len() as u64);
        };
        inv.refresh().unwrap();
        check(&inv);
        // Remove some blobs: their (racy, recent) shard dirs are re-listed.
        let full = crate::scan::scan(&cas).unwrap();
        for b in full.blobs.iter().take(10) {
            cas.remove_blob(&b.hash, b.size).unwrap();
        }
        inv.refresh().unwrap();
        check(&inv);
    }

    /// With nothing changed a refresh lists no shard directory and re-reads no manifest; a
    /// new blob costs one directory listing and one stat.
    #[test]
    fn unchanged_store_costs_only_stats() {
        let dir = tempfile::tempdir().unwrap();
        let cas = crate::Cas::open(dir.path()).unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        let add = |i: u32| store_one(&cas, &src, i);
        for i in 0..30 {
            add(i);
        }
        let mut inv = Inventory::new(cas.root());
        // Trust every stamp at once (the racy window only matters within one timestamp tick,
        // which the sleep below steps over).
        inv.racy_secs = 0;
        let first = inv.refresh().unwrap();
        assert!(first.manifests_reloaded);
        assert_eq!(first.blobs_statted, 30);
        let again = inv.refresh().unwrap();
        assert!(!again.manifests_reloaded);
        assert_eq!(again.shard_dirs_relisted, 0);
        assert_eq!(again.blobs_statted, 0);
        assert_eq!(again.shard_dirs, first.shard_dirs);
        std::thread::sleep(std::time::Duration::from_millis(50));
        add(1000);
        let after = inv.refresh().unwrap();
        assert_eq!(after.blobs_statted, 1);
        assert!(after.shard_dirs_relisted <= 1, "{after:?}");
        assert_eq!(inv.totals().blobs, 31);
    }
}
