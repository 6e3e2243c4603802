use anyhow::Result;
use serde::Serialize;
use vrift_cas::registry::Registry;
use vrift_cas::scan::scan;
use vrift_cas::usage::Usage;
use vrift_cas::verify::check_blob;

use crate::args::DoctorArgs;
use crate::format::{bytes, count, thousands};
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
                format!(
                    "valid ({})",
                    count(r.projects.len() as u64, "manifest", "manifests")
                ),
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
        let damaged_cache: Vec<&str> = usage
            .projects
            .iter()
            .filter(|p| p.cache_damaged.is_some())
            .map(|p| p.name.as_str())
            .collect();
        if !unreadable.is_empty() {
            check(
                "Manifests",
                Status::Error,
                format!(
                    "{} with no readable copy (cached nor yours): {}; `gc --delete` refuses until fixed",
                    unreadable.len(),
                    unreadable.join(", ")
                ),
            );
            recs.push("Re-ingest the projects with no readable manifest, or `vrift forget NAME` those you no longer need".into());
        } else if !damaged_cache.is_empty() {
            check(
                "Manifests",
                Status::Warn,
                format!(
                    "{} cached copies damaged, your manifest files used instead: {}",
                    damaged_cache.len(),
                    damaged_cache.join(", ")
                ),
            );
            recs.push(
                "Re-ingest those projects to refresh the store's copy of their manifests".into(),
            );
        }
        let stale = vrift_cas::gc::stale_projects(&root, reg);
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
        let phantoms = vrift_cas::gc::kept_phantoms(&root, reg);
        if !phantoms.is_empty() {
            let names: Vec<&str> = phantoms.iter().map(|p| p.name.as_str()).collect();
            check(
                "Phantom projects",
                Status::Warn,
                format!(
                    "{} whose manifest file is gone: {} (their files exist only in the store: kept)",
                    phantoms.len(),
                    names.join(", ")
                ),
            );
            recs.push("Restore them with `vrift checkout` of the store's copy (see `vrift status --json`), or `vrift forget NAME` if they are no longer needed".into());
        }
        let interrupted: Vec<String> = vrift_cas::roots::list(&root)?
            .into_iter()
            .filter(|p| !p.alive)
            .map(|p| match &p.info {
                Some(i) => format!("{} → {}", i.source.display(), i.output.display()),
                None => p.manifest.display().to_string(),
            })
            .collect();
        if !interrupted.is_empty() {
            check(
                "Interrupted ingests",
                Status::Warn,
                format!(
                    "{}: {} (their moved files are kept)",
                    interrupted.len(),
                    interrupted.join(", ")
                ),
            );
            recs.push("Finish them with `vrift ingest SOURCE -o OUTPUT --resume`".into());
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

    let present: std::collections::HashSet<(vrift_manifest::Hash, u64)> =
        blobs.blobs.iter().map(|b| (b.hash, b.size)).collect();
    if let Some(usage) = &usage {
        let missing = usage.missing(&present);
        if missing.is_empty() {
            check(
                "Referenced blobs",
                Status::Ok,
                format!("all {} present", thousands(usage.referenced_blobs() as u64)),
            );
        } else {
            let total: u64 = missing.iter().map(|m| m.1).sum();
            let (name, _, ex) = &missing[0];
            check(
                "Referenced blobs",
                Status::Error,
                format!(
                    "{} missing (first needed by {name}, e.g. {})",
                    thousands(total),
                    cas.blob_path(&ex.0, ex.1).display()
                ),
            );
            recs.push("Re-ingest (or `vrift pull`) the projects whose blobs are missing; `vrift checkout` of them fails until then".into());
        }
    }

    if a.sample > 0 && !blobs.blobs.is_empty() {
        // The same store is sampled the same way every time, each blob at most once.
        let mut order: Vec<&vrift_cas::scan::BlobInfo> = blobs.blobs.iter().collect();
        order.sort_by_key(|b| (b.hash, b.size));
        let n = a.sample.min(order.len());
        let mut buf = Vec::new();
        let (mut bad, mut unreadable) = (Vec::new(), 0u64);
        for i in 0..n {
            let b = order[i * order.len() / n];
            match check_blob(&cas, b, &mut buf) {
                Ok(true) => {}
                Ok(false) => bad.push(cas.blob_path(&b.hash, b.size)),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => unreadable += 1,
                Err(_) => bad.push(cas.blob_path(&b.hash, b.size)),
            }
        }
        if !bad.is_empty() {
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
        } else if unreadable > 0 {
            check(
                "Blob sample",
                Status::Warn,
                format!(
                    "{} of {n} sampled blobs are not readable by this user (another user's \
                     files in a shared store: not damage); the rest match their names",
                    thousands(unreadable)
                ),
            );
            recs.push("In a store shared by a group, ingest with a umask that lets the group read (e.g. 002) and a setgid store directory".into());
        } else {
            check(
                "Blob sample",
                Status::Ok,
                format!(
                    "{n} of {} match their names",
                    thousands(blobs.blobs.len() as u64)
                ),
            );
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
            if usage.unsafe_to_delete().is_empty() {
                recs.push(
                    "Run `vrift gc --delete --older-than 1h` to remove unreferenced blobs".into(),
                );
            }
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

    let mut leftovers = vrift_cas::gc::leftovers_in(&root.join(vrift_cas::store::TMP_DIR), false);
    leftovers.extend(vrift_cas::gc::leftovers_in(
        &root.join(vrift_cas::store::MANIFEST_DIR),
        false,
    ));
    if !leftovers.is_empty() {
        let size: u64 = leftovers.iter().map(|l| l.1).sum();
        check(
            "Temp files",
            Status::Warn,
            format!(
                "{} ({}) left in tmp/ and manifests/ by interrupted runs",
                leftovers.len(),
                bytes(size)
            ),
        );
        recs.push("`vrift gc --delete` removes the temp files of interrupted runs".into());
    }
    let quarantined =
        vrift_cas::gc::leftovers_in(&root.join(vrift_cas::store::QUARANTINE_DIR), true);
    if !quarantined.is_empty() {
        check(
            "Quarantine",
            Status::Warn,
            format!(
                "{} damaged blobs were found and set aside in {}",
                quarantined.len(),
                root.join(vrift_cas::store::QUARANTINE_DIR).display()
            ),
        );
        recs.push("Something wrote into the store (e.g. root editing a hard-linked checkout): check out with `--link-mode copy` where files are patched; `vrift gc --delete` empties the quarantine".into());
    }

    let healthy = checks.iter().all(|c| c.status == Status::Ok);
    if g.json {
        println!(
            "{}",
            crate::output::versioned(
                serde_json::json!({ "store": root, "checks": checks, "recommendations": recs, "healthy": healthy })
            )
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

fn nix_access_w(p: &std::path::Path) -> bool {
    vrift_cas::sys::writable(p)
}

/// (available to us, total) bytes of the filesystem holding `p`.
pub fn free_space(p: &std::path::Path) -> Option<(u64, u64)> {
    vrift_cas::sys::free_space(p).ok()
}
