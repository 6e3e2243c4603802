use anyhow::{anyhow, Result};
use serde_json::json;
use vrift_cas::gc::{self, parse_age};

use crate::args::GcArgs;
use crate::format::{bytes, count, thousands};
use crate::{Globals, Outcome};

pub fn run(g: &Globals, a: &GcArgs) -> Result<Outcome> {
    let cas = super::open_store(g)?;
    let min_age = a
        .older_than
        .as_deref()
        .map(parse_age)
        .transpose()
        .map_err(|e| anyhow!(e))?;
    // Deleting (or pruning) needs the store to itself: no ingest may be between linking a
    // blob and registering the manifest that references it.
    let _lock = if a.delete || a.prune_stale {
        Some(super::exclusive_lock(g, a.no_wait)?)
    } else {
        None
    };
    // Pruning changes the registry: only with --delete; a dry run lists what it would drop.
    let pruned = match (a.prune_stale, a.delete) {
        (true, true) => gc::prune_stale(&cas)?,
        (true, false) => {
            let reg = vrift_cas::registry::Registry::load(cas.root())?;
            gc::stale_projects(cas.root(), &reg)
                .into_iter()
                .cloned()
                .collect()
        }
        _ => Vec::new(),
    };
    // A dry run counts orphans as if the stale projects were pruned (what --delete would do).
    let ignore: Vec<String> = if a.delete {
        Vec::new()
    } else {
        pruned.iter().map(|p| p.id.clone()).collect()
    };
    // On a terminal: how far the scan of the store (and the deletion) has got.
    let progress = std::sync::Arc::new(gc::GcProgress::default());
    let line = {
        let p = progress.clone();
        let deleting = a.delete;
        let eta = crate::progress::Eta::start();
        crate::progress::Progress::start_with(g.progress, "gc", move || {
            use std::sync::atomic::Ordering::Relaxed;
            let orphans = p.orphans_done.load(Relaxed);
            if orphans > 0 {
                let verb = if deleting { "deleting" } else { "checking" };
                format!("{verb} orphans: {}", thousands(orphans))
            } else {
                format!(
                    "scanning the store {}% ({} blobs){}",
                    p.scan.percent(),
                    thousands(p.scan.blobs.load(Relaxed)),
                    eta.left(
                        p.scan.dirs_done.load(Relaxed),
                        p.scan.dirs_total.load(Relaxed)
                    )
                )
            }
        })
    };
    let r = gc::collect_counted(&cas, a.delete, min_age, &ignore, &progress);
    line.finish();
    let mut r = r?;
    if r.pending_roots > 0 && !g.json {
        crate::note!(
            "note: {} pending roots of running or interrupted ingests keep their blobs (see `vrift doctor`)",
            r.pending_roots
        );
    }
    r.pruned = pruned.iter().map(|p| p.name.clone()).collect();
    if g.json {
        let mut v = serde_json::to_value(&r)?;
        v["dry_run"] = json!(!a.delete);
        if a.list {
            v["orphan_paths"] = json!(gc::blob_paths(&cas, &r.orphan_list));
        }
        println!("{}", crate::output::versioned(&v));
    } else {
        let verb = if a.delete { "pruned" } else { "would prune" };
        for p in &pruned {
            println!("{verb} stale project {} ({})", p.name, p.source.display());
        }
        for why in &r.unsafe_to_delete {
            println!("warning: {why}");
        }
        if a.list {
            for p in gc::blob_paths(&cas, &r.orphan_list) {
                println!("{}", p.display());
            }
        }
        let guard = match (&a.older_than, r.too_young) {
            (Some(d), n) if n > 0 => format!(", {} younger than {d} kept", thousands(n)),
            _ => String::new(),
        };
        if a.delete {
            println!(
                "Deleted {} ({}) of {} found{guard}; {} still referenced",
                count(r.deleted, "orphan blob", "orphan blobs"),
                bytes(r.deleted_bytes),
                thousands(r.orphans),
                count(r.referenced_blobs, "blob", "blobs")
            );
        } else {
            println!(
                "{} ({}) referenced by no registered manifest{guard}",
                count(r.orphans, "orphan blob", "orphan blobs"),
                bytes(r.orphan_bytes)
            );
            if r.orphans > 0 && r.unsafe_to_delete.is_empty() {
                println!("Dry run: nothing deleted. Run `vrift gc --delete` to remove them.");
            } else if r.orphans > 0 {
                println!("Dry run: nothing deleted; `--delete` is refused until the manifests above are readable.");
            }
        }
    }
    for (path, err) in &r.failed {
        eprintln!("error: {path}: {err}");
    }
    Ok(if r.failed.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}

/// `vrift forget NAME`: drops a project from the registry.
pub fn forget(g: &Globals, a: &crate::args::ForgetArgs) -> Result<Outcome> {
    let cas = super::open_store(g)?;
    let reg = vrift_cas::registry::Registry::load(cas.root())?;
    let matching: Vec<_> = reg
        .projects
        .iter()
        .filter(|p| p.name == a.name || p.id == a.name)
        .collect();
    if matching.is_empty() {
        return Err(anyhow!(
            "no registered project named {:?} (see `vrift status`)",
            a.name
        ));
    }
    let phantom = matching.iter().any(|p| {
        vrift_manifest::Manifest::open(&cas.root().join(&p.cached_manifest))
            .map(|m| m.is_phantom())
            .unwrap_or(false)
    });
    if phantom && !a.force {
        return Err(anyhow!(
            "{} is a phantom project: its files exist only in the store, and after `forget` the \
             next `gc --delete` removes them for good; add --force if that is what you want",
            a.name
        ));
    }
    let _lock = super::exclusive_lock(g, false)?;
    let gone = gc::forget(&cas, &a.name)?;
    if g.json {
        let names: Vec<&str> = gone.iter().map(|p| p.name.as_str()).collect();
        let ids: Vec<&str> = gone.iter().map(|p| p.id.as_str()).collect();
        println!(
            "{}",
            crate::output::versioned(json!({ "forgotten": names, "ids": ids }))
        );
    } else {
        for p in &gone {
            println!("forgot {} ({}, id {})", p.name, p.source.display(), p.id);
        }
        println!("Its blobs that no other project uses are orphans now: `vrift gc` lists them.");
    }
    Ok(Outcome::Ok)
}
