use std::sync::Arc;

use anyhow::{Context, Result};
use vrift_cas::Cas;
use vrift_manifest::Manifest;
use vrift_pipeline::Counters;

use crate::args::CheckoutArgs;
use crate::format::{count, thousands};
use crate::{Globals, Outcome};

pub fn run(g: &Globals, a: &CheckoutArgs) -> Result<Outcome> {
    let manifest = Manifest::open(&a.manifest)?;
    let cas =
        Cas::open_existing(&g.store).with_context(|| format!("store {}", g.store.display()))?;
    let threads = if a.jobs > 0 {
        a.jobs
    } else {
        std::thread::available_parallelism()
            .map(std::num::NonZero::get)
            .unwrap_or(2)
    };
    // Shared lock: a concurrent `gc --delete` must not remove blobs while we link them.
    let _lock = vrift_cas::lock::StoreLock::acquire(
        cas.root(),
        vrift_cas::lock::LockKind::Shared,
        true,
        |_| {
            crate::note!("waiting for the store lock (a gc or clean is running)");
        },
    )?;
    let counters = Arc::new(Counters::default());
    let opts = vrift_pipeline::materialize::Options {
        link_mode: a.link_mode.into(),
        keep_setid: a.keep_setid,
        threads,
        ..Default::default()
    };
    // Files and symlinks are what take the time; `files` counts them as they are done.
    let total = manifest
        .iter()
        .filter(|e| e.kind().has_content() || e.kind() == vrift_manifest::Kind::Symlink)
        .count() as u64;
    let c = counters.clone();
    let eta = crate::progress::Eta::start();
    let line = crate::progress::Progress::start_with(g.progress, "checkout", move || {
        crate::progress::count_line(Counters::get(&c.files), total, "files and symlinks", &eta)
    });
    let report = if a.replace {
        vrift_pipeline::checkout_replacing(&cas, &manifest, &a.dir, &opts, &counters)?
    } else {
        vrift_pipeline::checkout(&cas, &manifest, &a.dir, &opts, &counters)?
    };
    line.finish();
    super::print_issues(&counters.take_issues(), 20);
    if g.json {
        println!(
            "{}",
            crate::output::versioned(serde_json::to_string(&report)?)
        );
    } else {
        let reflinked = if report.reflinked > 0 {
            format!(", {} cloned", thousands(report.reflinked))
        } else {
            String::new()
        };
        // Files of the replaced tree that already were the right links (`--replace`).
        let kept = if report.reused > 0 {
            format!("{} kept, ", thousands(report.reused))
        } else {
            String::new()
        };
        println!(
            "Checked out {} → {}: {} ({kept}{} linked, {} copied{reflinked}), {}, {}, {} in {:.2} s",
            a.manifest.display(),
            a.dir.display(),
            count(report.files, "file", "files"),
            thousands(report.linked),
            thousands(report.copied),
            count(report.dirs, "dir", "dirs"),
            count(report.symlinks, "symlink", "symlinks"),
            count(report.errors, "error", "errors"),
            report.seconds
        );
        if report.setid_dropped > 0 {
            crate::note!(
                "note: dropped setuid/setgid bits of {} entries (--keep-setid keeps them)",
                thousands(report.setid_dropped)
            );
        }
        if report.linked + report.reused > 0 {
            crate::note!(
                "note: linked files share their inode with the store: edit them by replacing \
                 the file, or check out with --link-mode copy to patch in place"
            );
        }
    }
    Ok(if report.errors > 0 {
        Outcome::Failed
    } else {
        Outcome::Ok
    })
}
