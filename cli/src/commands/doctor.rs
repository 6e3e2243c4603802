use anyhow::Result;
use serde::Serialize;
use vrift_cas::registry::Registry;
use vrift_cas::scan::scan;
use vrift_cas::usage::Usage;
use vrift_cas::verify::check_blob;

use crate::args::DoctorArgs;
use crate::format::{bytes, thousands};
use crate::{Globals, Outcome};

#[derive(Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Warn,
    Error,
}

#[derive(Serialize)]
struct Check {
    name: &'static str,
    status: Status,
    detail: String,
}

/// Below this much free space the store is "nearly full".
const MIN_FREE_BYTES: u64 = 1_000_000_000;

pub fn run(g: &Globals, a: &DoctorArgs) -> Result<Outcome> {
    let cas = super::open_store(g)?;
    let root = cas.root().to_path_buf();
    let mut checks = Vec::new();
    let mut recs: Vec<String> = Vec::new();
    let mut check = |name, status, detail: String| {
        checks.push(Check {
            name,
            status,
            detail,
        })
    };

    let reg = match Registry::load(&root) {
        Ok(r) => {
            check(
                "Registry",
                Status::Ok,
                format!("valid ({} manifests)", r.projects.len()),
            );
            Some(r)
        }
        Err(e) => {
            check("Registry", Status::Error, format!("{e}"));
            recs.push(
                "Run `vrift registry --rebuild` to rebuild the registry from the cached manifests"
                    .into(),
            );
            None
        }
    };
    let usage = reg.as_ref().map(|r| Usage::load(&root, r)).transpose()?;
    if let (Some(reg), Some(usage)) = (&reg, &usage) {
        let unreadable: Vec<&str> = usage
            .projects
            .iter()
            .filter(|p| p.unreadable.is_some())
            .map(|p| p.name.as_str())
            .collect();
        if !unreadable.is_empty() {
            check(
                "Cached manifests",
                Status::Error,
                format!("{} unreadable: {}", unreadable.len(), unreadable.join(", ")),
            );
            recs.push("Re-ingest the projects whose cached manifest is unreadable".into());
        }
        let stale = vrift_cas::gc::stale_projects(reg);
        if stale.is_empty() {
            check("Stale manifests", Status::Ok, "none".into());
        } else {
            let names: Vec<&str> = stale.iter().map(|p| p.name.as_str()).collect();
            check(
                "Stale manifests",
                Status::Warn,
                format!(
                    "{} ({}) (run gc --prune-stale)",
                    stale.len(),
                    names.join(", ")
                ),
            );
            recs.push("Run `vrift gc --prune-stale` to clean stale manifests".into());
        }
    }

    let blobs = scan(&cas)?;
    let writable = blobs.blobs.iter().filter(|b| b.mode & 0o222 != 0).count();
    let store_writable = nix_access_w(&root);
    if writable == 0 && blobs.foreign.is_empty() && store_writable {
        check("CAS permissions", Status::Ok, "OK".into());
    } else {
        let mut parts = Vec::new();
        if writable > 0 {
            parts.push(format!(
                "{} blobs have write bits",
                thousands(writable as u64)
            ));
            recs.push("Run `vrift verify --repair`: a writable blob may have been modified; the next ingest re-protects the rest".into());
        }
        if !blobs.foreign.is_empty() {
            parts.push(format!(
                "{} foreign files in blake3/ (e.g. {})",
                blobs.foreign.len(),
                blobs.foreign[0].display()
            ));
            recs.push("Remove the foreign files listed by `vrift verify` from the store".into());
        }
        if !store_writable {
            parts.push("store root is not writable by this user".into());
            recs.push(format!("Give this user write access to {}", root.display()));
        }
        check("CAS permissions", Status::Warn, parts.join("; "));
    }

    if a.sample > 0 && !blobs.blobs.is_empty() {
        let n = a.sample.min(blobs.blobs.len());
        let mut state = seed();
        let mut buf = Vec::new();
        let mut bad = Vec::new();
        for _ in 0..n {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let b = &blobs.blobs[(state % blobs.blobs.len() as u64) as usize];
            if !matches!(check_blob(&cas, b, &mut buf), Ok(true)) {
                bad.push(cas.blob_path(&b.hash, b.size));
            }
        }
        if bad.is_empty() {
            check(
                "Blob sample",
                Status::Ok,
                format!(
                    "{n} of {} match their names",
                    thousands(blobs.blobs.len() as u64)
                ),
            );
        } else {
            check(
                "Blob sample",
                Status::Error,
                format!(
                    "{} of {n} sampled blobs corrupt (e.g. {})",
                    bad.len(),
                    bad[0].display()
                ),
            );
            recs.push("Run `vrift verify --repair` to find and drop every corrupted blob".into());
        }
    }

    if let Some(usage) = &usage {
        let orphans = blobs
            .blobs
            .iter()
            .filter(|b| !usage.is_referenced(&(b.hash, b.size)))
            .count();
        if orphans == 0 {
            check("Orphaned blobs", Status::Ok, "0".into());
        } else {
            check(
                "Orphaned blobs",
                Status::Warn,
                format!("{} (run vrift gc)", thousands(orphans as u64)),
            );
            recs.push(
                "Run `vrift gc --delete --older-than 1h` to remove unreferenced blobs".into(),
            );
        }
    }

    match free_space(&root) {
        Some((avail, total)) => {
            let low = avail < MIN_FREE_BYTES || avail.saturating_mul(20) < total;
            check(
                "Disk space",
                if low { Status::Warn } else { Status::Ok },
                format!("{} available", bytes(avail)),
            );
            if low {
                recs.push("Free disk space: the store's filesystem is nearly full (`vrift gc --delete` may help)".into());
            }
        }
        None => check(
            "Disk space",
            Status::Warn,
            "unknown (statvfs failed)".into(),
        ),
    }

    let holders = vrift_cas::lock::holders(&root);
    let held = vrift_cas::lock::is_held(&root).unwrap_or(false);
    if held {
        let who: Vec<String> = holders
            .iter()
            .map(|h| format!("pid {} ({:?})", h.pid, h.kind).to_lowercase())
            .collect();
        check(
            "Lock",
            Status::Ok,
            format!(
                "held by {} (an ingest or gc is running)",
                if who.is_empty() {
                    "another process".into()
                } else {
                    who.join(", ")
                }
            ),
        );
    } else {
        check("Lock", Status::Ok, "not held".into());
    }

    let leftovers = std::fs::read_dir(root.join(vrift_cas::store::TMP_DIR))
        .map(|d| d.count())
        .unwrap_or(0);
    if leftovers > 0 && !held {
        check(
            "Temp files",
            Status::Warn,
            format!("{leftovers} left in tmp/ by an interrupted run"),
        );
        recs.push(format!(
            "Remove the leftovers in {}",
            root.join("tmp").display()
        ));
    }

    let healthy = checks.iter().all(|c| c.status == Status::Ok);
    if g.json {
        println!(
            "{}",
            serde_json::json!({ "store": root, "checks": checks, "recommendations": recs, "healthy": healthy })
        );
    } else {
        println!("VRift Doctor Report:");
        println!();
        for c in &checks {
            let icon = match c.status {
                Status::Ok => "✅",
                Status::Warn => "⚠️ ",
                Status::Error => "❌",
            };
            println!("  {icon} {}: {}", c.name, c.detail);
        }
        if !recs.is_empty() {
            println!();
            println!("  Recommendations:");
            for r in &recs {
                println!("  - {r}");
            }
        }
    }
    Ok(if healthy {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    t | 1
}

fn nix_access_w(p: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// (available to us, total) bytes of the filesystem holding `p`.
pub fn free_space(p: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: valid path and out pointer.
    if unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs succeeded.
    let s = unsafe { s.assume_init() };
    Some((s.f_bavail * s.f_frsize, s.f_blocks * s.f_frsize))
}
