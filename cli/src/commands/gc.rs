use anyhow::{anyhow, Result};
use serde_json::json;
use vrift_cas::gc::{self, parse_age};

use crate::args::GcArgs;
use crate::format::{bytes, thousands};
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
    let pruned = if a.prune_stale {
        gc::prune_stale(&cas)?
    } else {
        Vec::new()
    };
    let mut r = gc::collect(&cas, a.delete, min_age)?;
    r.pruned = pruned.iter().map(|p| p.name.clone()).collect();
    if g.json {
        let mut v = serde_json::to_value(&r)?;
        v["dry_run"] = json!(!a.delete);
        if a.list {
            v["orphan_paths"] = json!(gc::blob_paths(&cas, &r.orphan_list));
        }
        println!("{v}");
    } else {
        for p in &pruned {
            println!("pruned stale project {} ({})", p.name, p.source.display());
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
                "Deleted {} orphan blobs ({}) of {} found{guard}; {} blobs still referenced",
                thousands(r.deleted),
                bytes(r.deleted_bytes),
                thousands(r.orphans),
                thousands(r.referenced_blobs)
            );
        } else {
            println!(
                "{} orphan blobs ({}) referenced by no registered manifest{guard}",
                thousands(r.orphans),
                bytes(r.orphan_bytes)
            );
            if r.orphans > 0 {
                println!("Dry run: nothing deleted. Run `vrift gc --delete` to remove them.");
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
