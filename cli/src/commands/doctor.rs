//! `vrift doctor`: the store's checks (`vrift_cas::doctor`) as DESIGN.md's report, or JSON.

use anyhow::Result;
use serde::Serialize;
use vrift_cas::doctor::{diagnose, Finding, Status};

use crate::args::DoctorArgs;
use crate::format::{bytes, count, thousands};
use crate::{Globals, Outcome};

#[derive(Serialize)]
struct Check {
    name: &'static str,
    status: Status,
    detail: String,
}

pub fn run(g: &Globals, a: &DoctorArgs) -> Result<Outcome> {
    let cas = super::open_store(g)?;
    let root = cas.root().to_path_buf();
    let found = diagnose(&cas, a.sample)?;
    let checks: Vec<Check> = found
        .iter()
        .map(|f| Check {
            name: f.name(),
            status: f.status(),
            detail: detail(f),
        })
        .collect();
    let recs: Vec<String> = found.iter().flat_map(|f| f.advice(&root)).collect();
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

/// The report line of one finding, after its name.
fn detail(f: &Finding) -> String {
    match f {
        Finding::RegistryValid { manifests } => {
            format!(
                "valid ({})",
                count(*manifests as u64, "manifest", "manifests")
            )
        }
        Finding::RegistryBroken { error } => error.clone(),
        Finding::ManifestsUnreadable { names } => format!(
            "{} with no readable copy (cached nor yours): {}; `gc --delete` refuses until fixed",
            names.len(),
            names.join(", ")
        ),
        Finding::ManifestsCacheDamaged { names } => format!(
            "{} cached copies damaged, your manifest files used instead: {}",
            names.len(),
            names.join(", ")
        ),
        Finding::Stale { names } if names.is_empty() => "none".into(),
        Finding::Stale { names } => format!(
            "{} ({}) (run gc --prune-stale)",
            names.len(),
            names.join(", ")
        ),
        Finding::PhantomsWithoutManifest { names } => format!(
            "{} whose manifest file is gone: {} (their files exist only in the store: kept)",
            names.len(),
            names.join(", ")
        ),
        Finding::Interrupted { runs } => format!(
            "{}: {} (their moved files are kept)",
            runs.len(),
            runs.join(", ")
        ),
        Finding::Permissions {
            writable_blobs,
            foreign,
            store_writable,
        } => {
            let mut parts = Vec::new();
            if *writable_blobs > 0 {
                parts.push(format!(
                    "{} blobs have write bits",
                    thousands(*writable_blobs)
                ));
            }
            if let Some(first) = foreign.first() {
                parts.push(format!(
                    "{} foreign files in blake3/ (e.g. {})",
                    foreign.len(),
                    first.display()
                ));
            }
            if !store_writable {
                parts.push("store root is not writable by this user".into());
            }
            if parts.is_empty() {
                "OK".into()
            } else {
                parts.join("; ")
            }
        }
        Finding::ReferencedAllPresent { blobs } => format!("all {} present", thousands(*blobs)),
        Finding::ReferencedMissing {
            missing,
            first_project,
            example,
        } => format!(
            "{} missing (first needed by {first_project}, e.g. {})",
            thousands(*missing),
            example.display()
        ),
        Finding::Sample {
            sampled,
            of,
            corrupt,
            unreadable,
        } => match corrupt.first() {
            Some(first) => format!(
                "{} of {sampled} sampled blobs corrupt (e.g. {})",
                corrupt.len(),
                first.display()
            ),
            None if *unreadable > 0 => format!(
                "{} of {sampled} sampled blobs are not readable by this user (another user's \
                 files in a shared store: not damage); the rest match their names",
                thousands(*unreadable)
            ),
            None => format!("{sampled} of {} match their names", thousands(*of as u64)),
        },
        Finding::Orphans { count: 0, .. } => "0".into(),
        Finding::Orphans { count, .. } => format!("{} (run vrift gc)", thousands(*count)),
        Finding::Disk { available, .. } => format!("{} available", bytes(*available)),
        Finding::DiskUnknown => "unknown (statvfs failed)".into(),
        Finding::Lock { held: false, .. } => "not held".into(),
        Finding::Lock { holders, .. } => {
            let who: Vec<String> = holders
                .iter()
                .map(|h| format!("pid {} ({:?})", h.pid, h.kind).to_lowercase())
                .collect();
            format!(
                "held by {} (an ingest or gc is running)",
                if who.is_empty() {
                    "another process".into()
                } else {
                    who.join(", ")
                }
            )
        }
        Finding::TempFiles { count, bytes: size } => format!(
            "{count} ({}) left in tmp/ and manifests/ by interrupted runs",
            bytes(*size)
        ),
        Finding::Quarantine { count, dir } => format!(
            "{count} damaged blobs were found and set aside in {}",
            dir.display()
        ),
    }
}
