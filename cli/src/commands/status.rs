use anyhow::Result;
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};
use serde_json::json;
use vrift_cas::registry::Registry;
use vrift_cas::scan::{scan, Scan};
use vrift_cas::usage::Usage;

use crate::args::StatusArgs;
use crate::format::{bytes, thousands};
use crate::{Globals, Outcome};

/// Box drawing as in the DESIGN.md example: full borders, a rule under the header only.
const TABLE_STYLE: &str = "││──├─┼┤│    ┬┴┌┐└┘";

pub fn run(g: &Globals, _a: &StatusArgs) -> Result<Outcome> {
    // No store yet (nothing ingested here): the answer is an empty one, all zeros, and
    // nothing is created by asking.
    let (root, usage, blobs) = if g.store.exists() {
        let cas = super::open_store(g)?;
        let reg = Registry::load(cas.root())?;
        let usage = Usage::load(cas.root(), &reg)?;
        (cas.root().to_path_buf(), usage, scan(&cas)?)
    } else {
        (g.store.clone(), Usage::default(), Scan::default())
    };
    let orphans: Vec<_> = blobs
        .blobs
        .iter()
        .filter(|b| !usage.is_referenced(&(b.hash, b.size)))
        .collect();
    let orphan_bytes: u64 = orphans.iter().map(|b| b.disk_bytes).sum();
    let disk = blobs.disk_bytes();
    let apparent = usage.apparent_bytes();
    let stored = usage.referenced_bytes();
    let saved = apparent.saturating_sub(stored);
    let ratio = if apparent > 0 {
        saved as f64 / apparent as f64
    } else {
        0.0
    };

    if g.json {
        println!(
            "{}",
            crate::output::versioned(json!({
                "store": root,
                "total_bytes": disk,
                "content_bytes": blobs.content_bytes(),
                "blobs": blobs.blobs.len(),
                "projects": usage.projects,
                "orphans": orphans.len(),
                "orphan_bytes": orphan_bytes,
                "apparent_bytes": apparent,
                "referenced_bytes": stored,
                "saved_bytes": saved,
                "dedup_ratio": ratio,
                "foreign_files": blobs.foreign.len(),
            }))
        );
        return Ok(Outcome::Ok);
    }
    println!("VRift CAS Status:");
    println!();
    println!("  CAS Location: {}", super::tilde(&root));
    // Two sizes: blocks on disk, and the files' content (smaller: each file rounds up to
    // whole blocks).
    if blobs.blobs.is_empty() {
        println!("  Total Size:   {}", bytes(disk));
    } else {
        println!(
            "  Total Size:   {} on disk ({} of content)",
            bytes(disk),
            bytes(blobs.content_bytes())
        );
    }
    println!("  Total Blobs:  {}", thousands(blobs.blobs.len() as u64));
    if apparent > 0 {
        println!(
            "  Space Saved:  {} ({} across projects, {} stored; {:.0}% deduplicated)",
            bytes(saved),
            bytes(apparent),
            bytes(stored),
            ratio * 100.0
        );
    }
    println!();
    if usage.projects.is_empty() {
        println!("  Registered Projects: none (run `vrift ingest DIR -o MANIFEST`)");
    } else {
        println!("  Registered Projects:");
        let mut t = Table::new();
        t.load_preset(TABLE_STYLE)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(vec!["Project", "Files", "Unique Blobs", "Shared", "Size"]);
        // Same-named projects (two checkouts called `app`) are told apart by their id.
        let label = |p: &vrift_cas::usage::ProjectUsage| {
            let twins = usage.projects.iter().filter(|q| q.name == p.name).count();
            if twins > 1 {
                format!("{} ({})", p.name, p.id.get(..8).unwrap_or(&p.id))
            } else {
                p.name.clone()
            }
        };
        for (i, p) in usage.projects.iter().enumerate() {
            let size = if p.unreadable.is_some() {
                "unreadable".to_string()
            } else if i == 0 {
                bytes(p.added_bytes)
            } else {
                format!("+{}", bytes(p.added_bytes))
            };
            t.add_row(vec![
                Cell::new(label(p)),
                Cell::new(thousands(p.files)).set_alignment(CellAlignment::Left),
                Cell::new(thousands(p.new_blobs)),
                Cell::new(thousands(p.shared_blobs)),
                Cell::new(size),
            ]);
        }
        for line in t.to_string().lines() {
            println!("  {line}");
        }
        let (new, added) = usage
            .projects
            .iter()
            .fold((0, 0), |(n, a), p| (n + p.new_blobs, a + p.added_bytes));
        println!(
            "  Unique Blobs and Size: what each project added to the store, in registration order;"
        );
        println!(
            "  they sum to {} blobs, {}. Shared: blobs an earlier project had stored.",
            thousands(new),
            bytes(added)
        );
    }
    println!();
    println!(
        "  Orphaned Blobs: {}{} (run `vrift gc` to check)",
        thousands(orphans.len() as u64),
        if orphans.is_empty() {
            String::new()
        } else {
            format!(", {}", bytes(orphan_bytes))
        }
    );
    Ok(Outcome::Ok)
}
