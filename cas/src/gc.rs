//! Garbage collection: blobs no registered manifest references.
//!
//! Safe on a shared store: deletion runs under the exclusive store lock (every ingest holds
//! it shared from its first link to its registration), the orphan set is computed *after* the
//! lock is taken, and an age guard on the blob's ctime (when it was last linked) can spare
//! anything touched recently.

use std::path::PathBuf;

use crate::error::Result;
use crate::registry::{Project, Registry};
use crate::scan::BlobInfo;
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
    /// Pending roots found (interrupted ingests whose blobs are kept).
    pub pending_roots: u64,
    /// Pending roots of dead processes dropped because registered projects hold all their blobs.
    pub pending_released: u64,
    /// Temp files of dead processes removed from `tmp/`, `manifests/` and the quarantine.
    pub leftovers_removed: u64,
    /// Why a `--delete` would be refused (projects or roots whose manifest cannot be read).
    pub unsafe_to_delete: Vec<String>,
    #[serde(skip)]
    pub orphan_list: Vec<BlobInfo>,
}

/// Whether a registered project is stale: the user has deleted its manifest file, and its
/// blobs are held elsewhere — its files were hard links in the user's tree (solid mode), so
/// forgetting it frees only what the user has already thrown away.
///
/// Never stale: a phantom project (the store holds its only copy of the files; a missing
/// source directory is its normal state), or one whose cached manifest cannot be read (its
/// flags are unknown). Those leave the registry only by `vrift forget`.
pub fn is_stale(root: &std::path::Path, p: &Project) -> bool {
    if p.manifest.exists() {
        return false;
    }
    match vrift_manifest::Manifest::open(&root.join(&p.cached_manifest)) {
        Ok(m) => !m.is_phantom(),
        Err(_) => false,
    }
}

/// Registry entries that are stale (see [`is_stale`]).
pub fn stale_projects<'a>(root: &std::path::Path, reg: &'a Registry) -> Vec<&'a Project> {
    reg.projects.iter().filter(|p| is_stale(root, p)).collect()
}

/// Phantom projects whose user manifest is gone: kept (the store holds their only copy).
pub fn kept_phantoms<'a>(root: &std::path::Path, reg: &'a Registry) -> Vec<&'a Project> {
    reg.projects
        .iter()
        .filter(|p| !p.manifest.exists() && !is_stale(root, p))
        .collect()
}

/// Drops stale entries (and their cached manifests) from the registry; returns them.
pub fn prune_stale(cas: &Cas) -> Result<Vec<Project>> {
    let root = cas.root().to_path_buf();
    let pruned = Registry::update(&root, |reg| {
        let (stale, keep): (Vec<Project>, Vec<Project>) =
            reg.projects.drain(..).partition(|p| is_stale(&root, p));
        reg.projects = keep;
        stale
    })?;
    for p in &pruned {
        crate::registry::remove_project_files(&root, p);
    }
    Ok(pruned)
}

/// Removes a project from the registry (`vrift forget`): its cached manifest goes too, so
/// its blobs become orphans unless another project holds them.
pub fn forget(cas: &Cas, name_or_id: &str) -> Result<Vec<Project>> {
    let root = cas.root().to_path_buf();
    let gone = Registry::update(&root, |reg| {
        let (gone, keep): (Vec<Project>, Vec<Project>) = reg
            .projects
            .drain(..)
            .partition(|p| p.name == name_or_id || p.id == name_or_id);
        reg.projects = keep;
        gone
    })?;
    for p in &gone {
        crate::registry::remove_project_files(&root, p);
    }
    Ok(gone)
}

/// Finds orphans and, if `delete`, removes those older than `min_age_secs`. The caller holds
/// the exclusive store lock when deleting.
pub fn collect(cas: &Cas, delete: bool, min_age_secs: Option<u64>) -> Result<GcReport> {
    collect_without(cas, delete, min_age_secs, &[])
}

/// How far a gc has got, for a progress line.
#[derive(Default, Debug)]
pub struct GcProgress {
    pub scan: crate::scan::ScanProgress,
    /// Orphans examined after the scan (each deleted, kept as too young, or listed).
    pub orphans_done: std::sync::atomic::AtomicU64,
}

/// [`collect`] as if the projects with these ids were not registered (a dry run of
/// `--prune-stale` shows what pruning them would orphan).
pub fn collect_without(
    cas: &Cas,
    delete: bool,
    min_age_secs: Option<u64>,
    ignore_ids: &[String],
) -> Result<GcReport> {
    collect_counted(
        cas,
        delete,
        min_age_secs,
        ignore_ids,
        &GcProgress::default(),
    )
}

/// [`collect_without`], counting into `progress` as it goes.
pub fn collect_counted(
    cas: &Cas,
    delete: bool,
    min_age_secs: Option<u64>,
    ignore_ids: &[String],
    progress: &GcProgress,
) -> Result<GcReport> {
    let mut reg = Registry::load(cas.root())?;
    reg.projects.retain(|p| !ignore_ids.contains(&p.id));
    let usage = Usage::load(cas.root(), &reg)?;
    let unsafe_why = usage.unsafe_to_delete();
    if delete && !unsafe_why.is_empty() {
        return Err(crate::CasError::GcRefused {
            reasons: unsafe_why.join("; "),
        });
    }
    let blobs = crate::scan::scan_counted(cas, &progress.scan)?;
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
        progress
            .orphans_done
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
        r.pending_released = release_covered_roots(cas, &usage)?;
        r.leftovers_removed = sweep_leftovers(cas);
        // Best effort: `vrift serve` reports it; a gc is not failed over its bookkeeping.
        let _ = record_last_gc(cas, &r);
    }
    r.pending_roots = usage.pending.len() as u64;
    r.unsafe_to_delete = unsafe_why;
    Ok(r)
}

/// Drops pending roots of dead processes whose every blob a registered project holds (the
/// rerun registered them, or another project did): they protect nothing any more.
fn release_covered_roots(cas: &Cas, usage: &Usage) -> Result<u64> {
    let mut n = 0;
    for p in crate::roots::list(cas.root())? {
        if p.alive {
            continue;
        }
        let Ok(m) = crate::roots::open(&p) else {
            continue;
        };
        let covered = m
            .iter()
            .filter(|e| e.kind().has_content())
            .all(|e| usage.is_registered_ref(&(*e.hash(), e.size())));
        if covered {
            crate::roots::discard(&p)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Removes what dead processes left behind: temp files in `tmp/` and `manifests/` (named with
/// the pid that made them, or older than a day when they carry none) and quarantined blobs.
pub fn sweep_leftovers(cas: &Cas) -> u64 {
    let mut n = 0;
    for (dir, all) in [
        (crate::store::TMP_DIR, false),
        (crate::store::MANIFEST_DIR, false),
        (crate::store::QUARANTINE_DIR, true),
    ] {
        for (p, _) in leftovers_in(&cas.root().join(dir), all) {
            if std::fs::remove_file(&p).is_ok() {
                n += 1;
            }
        }
    }
    n
}

/// Leftover temp files in `dir` (every file when `all`), with their size.
pub fn leftovers_in(dir: &std::path::Path, all: bool) -> Vec<(PathBuf, u64)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let Ok(md) = e.metadata() else { continue };
        if !md.is_file() {
            continue;
        }
        let dead = all || (name.starts_with('.') && temp_is_abandoned(&name, &md));
        if dead {
            out.push((e.path(), md.len()));
        }
    }
    out
}

/// A temp name `.<what>-<pid>-<n>` (or `.tmp-<pid>-<ns>`) whose process is gone; names
/// without a pid (random suffixes) once they are a day old.
fn temp_is_abandoned(name: &str, md: &std::fs::Metadata) -> bool {
    let pid = name
        .trim_start_matches('.')
        .split('-')
        .nth(1)
        .and_then(|s| s.parse::<u32>().ok());
    match pid {
        Some(pid) => pid != std::process::id() && !crate::lock::pid_alive(pid),
        None => md
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 86_400),
    }
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
