//! Garbage collection: blobs no registered manifest references.
//!
//! Safe on a shared store: deletion runs under the exclusive store lock (every ingest holds
//! it shared from its first link to its registration), the orphan set is computed *after* the
//! lock is taken, and an age guard on the blob's ctime (when it was last linked) can spare
//! anything touched recently.

use std::path::PathBuf;

use crate::error::Result;
use crate::registry::{Project, Registry};
use crate::scan::{scan, BlobInfo};
use crate::store::Cas;
use crate::usage::Usage;

#[derive(Debug, Default, serde::Serialize)]
pub struct GcReport {
    pub orphans: u64,
    pub orphan_bytes: u64,
    /// Orphans spared by `--older-than`.
    pub too_young: u64,
    pub deleted: u64,
    pub deleted_bytes: u64,
    pub failed: Vec<(String, String)>,
    pub pruned: Vec<String>,
    pub referenced_blobs: u64,
    #[serde(skip)]
    pub orphan_list: Vec<BlobInfo>,
}

/// Registry entries whose source directory or manifest file no longer exists.
pub fn stale_projects(reg: &Registry) -> Vec<&Project> {
    reg.projects
        .iter()
        .filter(|p| !p.source.exists() || !p.manifest.exists())
        .collect()
}

/// Drops stale entries (and their cached manifests) from the registry; returns their names.
pub fn prune_stale(cas: &Cas) -> Result<Vec<Project>> {
    let root = cas.root().to_path_buf();
    let pruned = Registry::update(&root, |reg| {
        let (stale, keep): (Vec<Project>, Vec<Project>) = reg
            .projects
            .drain(..)
            .partition(|p| !p.source.exists() || !p.manifest.exists());
        reg.projects = keep;
        stale
    })?;
    for p in &pruned {
        let _ = std::fs::remove_file(root.join(&p.cached_manifest));
    }
    Ok(pruned)
}

/// Finds orphans and, if `delete`, removes those older than `min_age_secs`. The caller holds
/// the exclusive store lock when deleting.
pub fn collect(cas: &Cas, delete: bool, min_age_secs: Option<u64>) -> Result<GcReport> {
    let reg = Registry::load(cas.root())?;
    let usage = Usage::load(cas.root(), &reg)?;
    let blobs = scan(cas)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut r = GcReport {
        referenced_blobs: usage.referenced_blobs() as u64,
        ..Default::default()
    };
    for b in blobs.blobs {
        if usage.is_referenced(&(b.hash, b.size)) {
            continue;
        }
        r.orphans += 1;
        r.orphan_bytes += b.disk_bytes;
        let young = min_age_secs.is_some_and(|min| now - b.ctime < min as i64);
        if young {
            r.too_young += 1;
        } else if delete {
            match cas.remove_blob(&b.hash, b.size) {
                Ok(()) => {
                    r.deleted += 1;
                    r.deleted_bytes += b.disk_bytes;
                }
                Err(e) => r.failed.push((
                    cas.blob_path(&b.hash, b.size).display().to_string(),
                    e.to_string(),
                )),
            }
        }
        r.orphan_list.push(b);
    }
    if delete {
        // Best effort: `vrift serve` reports it; a gc is not failed over its bookkeeping.
        let _ = record_last_gc(cas, &r);
    }
    Ok(r)
}

/// File in the store root recording the last `gc --delete` (read by `vrift serve`).
pub const LAST_GC_FILE: &str = "gc-last.json";

/// When the last `gc --delete` ran and what it did.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LastGc {
    pub unix: u64,
    pub deleted: u64,
    pub deleted_bytes: u64,
    /// Orphans left behind (too young for `--older-than`, or failed).
    pub orphans_left: u64,
}

fn record_last_gc(cas: &Cas, r: &GcReport) -> Result<()> {
    let last = LastGc {
        unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        deleted: r.deleted,
        deleted_bytes: r.deleted_bytes,
        orphans_left: r.orphans - r.deleted,
    };
    let json = serde_json::to_vec(&last).unwrap_or_default();
    crate::registry::write_atomic(&cas.root().join(LAST_GC_FILE), &json)
}

/// The last `gc --delete` of the store at `root`, if any ran (and its record is readable).
pub fn last_gc(root: &std::path::Path) -> Option<LastGc> {
    let bytes = std::fs::read(root.join(LAST_GC_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Parses `30m`, `2h`, `7d`, `45s`, `1w` (and anything `humantime` understands).
pub fn parse_age(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (use e.g. 30m, 2h, 7d)"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return Err(format!("invalid duration {s:?} (use e.g. 30m, 2h, 7d)")),
    };
    Ok(n * mult)
}

/// Paths of blobs, for listing.
pub fn blob_paths(cas: &Cas, blobs: &[BlobInfo]) -> Vec<PathBuf> {
    blobs
        .iter()
        .map(|b| cas.blob_path(&b.hash, b.size))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(parse_age("30m"), Ok(1800));
        assert_eq!(parse_age("2h"), Ok(7200));
        assert_eq!(parse_age("7d"), Ok(604800));
        assert_eq!(parse_age("45"), Ok(45));
        assert!(parse_age("2 hours").is_err());
        assert!(parse_age("h").is_err());
    }
}
