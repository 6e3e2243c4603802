//! `vrift gc --farms [--delete] [--older-than DUR]`: the link-farm cache of `run --isolate`.
//!
//! Farms are a pure cache (hard links to blobs plus directories): deleting one never loses
//! data, the next `run --isolate` of those layers just builds it again. Dry run by default,
//! like `gc`; farms in use by a running sandbox are never deleted; `--older-than` spares
//! farms used more recently than DUR. Leftovers of interrupted builds are always removed
//! with `--delete`.

use anyhow::{anyhow, Result};
use serde_json::json;
use vrift_cas::gc::parse_age;

use crate::args::GcArgs;
use crate::format::thousands;
use crate::{Globals, Outcome};

use vrift_run::isolate::farm;

pub fn run(g: &Globals, a: &GcArgs) -> Result<Outcome> {
    let cas = crate::commands::open_store(g)?;
    let min_age = a
        .older_than
        .as_deref()
        .map(parse_age)
        .transpose()
        .map_err(|e| anyhow!(e))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let farms = farm::list(cas.root())?;
    let (mut deleted, mut in_use, mut too_young) = (0u64, 0u64, 0u64);
    let mut failed: Vec<(String, String)> = Vec::new();
    let mut listed = Vec::new();
    for f in &farms {
        if min_age.is_some_and(|min| now - f.last_used < min as i64) {
            too_young += 1;
            continue;
        }
        if f.in_use {
            in_use += 1;
            continue;
        }
        listed.push(f);
        if a.delete {
            match farm::delete(f) {
                Ok(true) => deleted += 1,
                Ok(false) => in_use += 1,
                Err(e) => failed.push((f.path.display().to_string(), format!("{e:#}"))),
            }
        }
    }
    let swept = if a.delete { farm::sweep(cas.root()) } else { 0 };
    if g.json {
        let mut v = json!({
            "farms": farms.len(),
            "removable": listed.len(),
            "deleted": deleted,
            "in_use": in_use,
            "too_young": too_young,
            "stale_builds_removed": swept,
            "dry_run": !a.delete,
            "failed": failed,
        });
        if a.list {
            v["farm_paths"] = json!(listed.iter().map(|f| &f.path).collect::<Vec<_>>());
        }
        println!("{}", crate::output::versioned(&v));
    } else {
        if a.list {
            for f in &listed {
                println!("{}  ({})", f.path.display(), f.layers.join(", "));
            }
        }
        let mut spared = Vec::new();
        if in_use > 0 {
            spared.push(format!("{} in use", thousands(in_use)));
        }
        if too_young > 0 {
            spared.push(format!(
                "{} used within {}",
                thousands(too_young),
                a.older_than.as_deref().unwrap_or("")
            ));
        }
        let spared = if spared.is_empty() {
            String::new()
        } else {
            format!(" ({} kept)", spared.join(", "))
        };
        if a.delete {
            println!(
                "Deleted {} of {} cached link farms{spared}",
                thousands(deleted),
                thousands(farms.len() as u64)
            );
        } else {
            println!(
                "{} cached link farms, {} removable{spared}",
                thousands(farms.len() as u64),
                thousands(listed.len() as u64)
            );
            if !listed.is_empty() {
                println!(
                    "Dry run: nothing deleted. Run `vrift gc --farms --delete` to remove them."
                );
            }
        }
    }
    for (path, err) in &failed {
        eprintln!("error: {path}: {err}");
    }
    Ok(if failed.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}
