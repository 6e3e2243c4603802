use std::sync::Arc;

use anyhow::{Context, Result};
use vrift_pipeline::{
    ingest, Counters, IngestOptions, IngestReport, IoBackend, Mode, Severity, Tier,
};

use crate::args::{BackendArg, IngestArgs, ModeArg, TierArg};
use crate::format::{bytes, thousands};
use crate::progress::Progress;
use crate::{Globals, Outcome};

pub fn run(g: &Globals, a: &IngestArgs) -> Result<Outcome> {
    let command_started = std::time::Instant::now();
    let source = match &a.dir {
        Some(d) => d.clone(),
        None => resume_source(&a.output)?,
    };
    let mut opts = IngestOptions::new(source, a.output.clone());
    opts.mode = match a.mode {
        ModeArg::Solid => Mode::Solid,
        ModeArg::Phantom => Mode::Phantom,
        ModeArg::Copy => Mode::Copy,
    };
    opts.tier = match a.tier {
        TierArg::Tier1 => Tier::Tier1,
        TierArg::Tier2 => Tier::Tier2,
    };
    opts.threads = a.jobs;
    opts.io_backend = match a.io_backend {
        BackendArg::Auto => IoBackend::Auto,
        BackendArg::Uring => IoBackend::Uring,
        BackendArg::Threads => IoBackend::Threads,
    };
    opts.security_filter = !a.no_security_filter;
    opts.excludes = a.exclude.clone();
    // The project's own filter config, as `vrift init` and `vrift run` read it.
    if opts.source.is_dir() {
        opts.excludes
            .extend(crate::commands::init::read_filter(&opts.source)?);
    }
    opts.record_excluded = a.show_excluded;
    opts.name = a.name.clone();
    opts.reuse_previous = !a.no_cache;

    // With --push, the remote is set up first: a bad URL or missing config fails before
    // the ingest spends any time.
    let remote_stats = Arc::new(vrift_remote::RemoteStats::default());
    let remote = if a.push {
        match super::remote::connect(g, remote_stats.clone()) {
            Ok(r) => Some(r),
            Err(e) if e.is_usage() => {
                eprintln!("error: {e}");
                return Ok(Outcome::Usage);
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };

    let counters = Arc::new(Counters::default());
    let progress = Progress::start(g.progress, counters.clone(), "ingest");
    let mut export = start_metrics(a, &opts, &counters)?;
    if let (Some(e), true) = (export.as_mut(), a.push) {
        e.attach_remote();
    }
    let started = std::time::Instant::now();
    let result = ingest(&opts, &g.store, &counters, |wait| {
        match wait {
        vrift_pipeline::Wait::Store(holders) => {
            let who: Vec<String> = holders.iter().map(|h| format!("pid {}", h.pid)).collect();
            crate::note!(
                "waiting for the store lock held by {}",
                if who.is_empty() {
                    "another process".to_string()
                } else {
                    who.join(", ")
                }
            );
        }
        vrift_pipeline::Wait::Tree(root) => crate::note!(
            "waiting for another ingest of {} to finish (a phantom ingest needs the tree to itself)",
            root.display()
        ),
    }
    });
    progress.finish();
    let ingest_seconds = started.elapsed().as_secs_f64();
    // A push only of a clean ingest: a manifest missing failed files must not become what
    // every runner pulls.
    let pushed = match (&remote, &result) {
        (Some(remote), Ok(report)) if report.errors == 0 => {
            let push_started = std::time::Instant::now();
            let cas = super::open_store(g)?;
            let name = report
                .details
                .project
                .clone()
                .unwrap_or_else(|| vrift_cas::registry::default_name(&report.details.source));
            let opts = vrift_remote::PushOptions {
                name,
                check: vrift_remote::CheckMode::Auto,
                jobs: 0,
                tree: None,
            };
            let r = super::remote::run_push(g, remote, &cas, &report.manifest, &opts);
            if let Some(e) = &export {
                e.record_remote(
                    &remote_stats,
                    push_started.elapsed().as_secs_f64(),
                    r.is_ok(),
                );
            }
            Some(r)
        }
        (Some(_), Ok(_)) => {
            eprintln!("warning: not pushing: the ingest had errors");
            None
        }
        _ => None,
    };
    if let Some(e) = export {
        let ok = result.as_ref().is_ok_and(|r| r.errors == 0);
        for problem in e.finish(&counters, ingest_seconds, ok) {
            eprintln!("warning: {problem}");
        }
    }
    if result.is_err() {
        // The files that failed (e.g. a full store), before the one line saying why it all did.
        super::print_issues(&counters.take_issues(), 20);
    }
    let report = result.with_context(|| format!("ingest of {} failed", opts.source.display()))?;
    if g.verbose > 0 || std::env::var_os("VRIFT_INGEST_STATS").is_some() {
        eprintln!("{}", stats_line(&report));
    }

    super::print_issues(&report.details.issues, 20);
    if opts.mode == Mode::Solid && !looks_disposable(&report.details.source, a.dir.as_deref()) {
        crate::note!(
            "note: solid mode made the files of {} read-only hard links into the store (an edit \
             replaces the file; `vrift clean --fix-perms` gives write bits back); `--mode copy` \
             leaves a tree exactly as it was",
            report.details.source.display()
        );
    }
    if a.show_excluded {
        for p in &report.details.excluded_paths {
            if g.json {
                eprintln!("excluded: {}", p.display());
            } else {
                println!("excluded: {}", p.display());
            }
        }
    }
    let push_failed = matches!(pushed, Some(Err(_)));
    if g.json {
        // Appended by hand: a serde_json::Value would reorder the promised keys.
        let mut text = serde_json::to_string(&report)?;
        let push = match &pushed {
            Some(Ok(p)) => Some(serde_json::to_string(p)?),
            Some(Err(e)) => Some(serde_json::json!({ "error": e.to_string() }).to_string()),
            None => None,
        };
        // What the filter left out, by path (the human summary lists them too).
        text.pop(); // the closing brace of the report object
        text.push_str(",\"excluded_paths\":");
        text.push_str(&serde_json::to_string(&report.details.excluded_paths)?);
        // The project it was registered as, the store, and the whole command's time (the
        // pipeline's is `seconds`; this adds registration and a push).
        text.push_str(",\"project\":");
        text.push_str(&serde_json::to_string(&report.details.project)?);
        text.push_str(",\"store\":");
        text.push_str(&serde_json::to_string(&report.details.store)?);
        text.push_str(&format!(
            ",\"total_seconds\":{}",
            command_started.elapsed().as_secs_f64()
        ));
        if let Some(push) = push {
            text.push_str(",\"push\":");
            text.push_str(&push);
        }
        text.push('}');
        println!("{}", crate::output::versioned(&text));
    } else {
        print_summary(&report);
        let left_out = &report.details.excluded_paths;
        if !a.show_excluded && !left_out.is_empty() {
            // What is not in the manifest is said, not only counted.
            println!("  left out (secrets, version control, your patterns):");
            for p in left_out.iter().take(10) {
                println!("    {}", p.display());
            }
            if left_out.len() > 10 {
                println!(
                    "    … and {} more (--show-excluded lists them all)",
                    thousands(left_out.len() as u64 - 10)
                );
            }
        }
        if let Some(Ok(p)) = &pushed {
            super::remote::print_push(&report.manifest, p);
        }
    }
    if let Some(Err(e)) = &pushed {
        eprintln!("error: push of {} failed: {e}", report.manifest.display());
    }
    Ok(
        if report.errors > 0 || push_failed || (a.push && pushed.is_none()) {
            Outcome::Failed
        } else {
            Outcome::Ok
        },
    )
}

/// Sets up `--metrics-*` (nothing without them), labelled with the project name the
/// registry will use.
fn start_metrics(
    a: &IngestArgs,
    opts: &IngestOptions,
    counters: &Arc<Counters>,
) -> Result<Option<crate::metrics_export::IngestExport>> {
    let m = &a.metrics;
    let flags = crate::metrics_export::IngestFlags {
        listen: m.metrics_listen.as_deref(),
        textfile: m.metrics_textfile.as_deref(),
        push: m.metrics_push.as_deref(),
        job: &m.metrics_job,
    };
    if !flags.any() {
        return Ok(None);
    }
    let project = opts.name.clone().unwrap_or_else(|| {
        let src = std::fs::canonicalize(&opts.source).unwrap_or_else(|_| opts.source.clone());
        let root = match src.parent() {
            Some(parent) if src.is_file() => parent.to_path_buf(),
            _ => src,
        };
        vrift_cas::registry::default_name(&root)
    });
    crate::metrics_export::IngestExport::start(&flags, &project, counters.clone())
}

/// Whether the user pointed solid mode at a tree meant to be replaced wholesale (a dependency
/// directory): then stripping write bits is expected and not worth a note. A single file or a
/// project's own tree gets one.
fn looks_disposable(root: &std::path::Path, given: Option<&std::path::Path>) -> bool {
    if given.is_some_and(std::path::Path::is_file) {
        return false;
    }
    let deps = [
        "node_modules",
        "site-packages",
        "dist-packages",
        ".venv",
        "venv",
        "vendor",
        "registry",
        ".pnpm-store",
        "target",
    ];
    root.components()
        .any(|c| c.as_os_str().to_str().is_some_and(|n| deps.contains(&n)))
}

/// `vrift ingest --resume -o OUT` without DIR: the journal knows the source.
fn resume_source(output: &std::path::Path) -> Result<std::path::PathBuf> {
    let j = vrift_pipeline::phantom::read_journal(output)?.with_context(|| {
        format!(
            "{}: nothing to resume (no journal beside it)",
            output.display()
        )
    })?;
    Ok(j.root)
}

fn print_summary(r: &IngestReport) {
    let d = &r.details;
    println!("Ingested {} → {}", d.source.display(), r.manifest.display());
    if let Some(p) = &d.project {
        println!("  project     {p} (store {})", d.store.display());
    }
    println!(
        "  files       {:>12}  ({})",
        thousands(r.files),
        bytes(r.bytes)
    );
    println!("  dirs        {:>12}", thousands(r.dirs));
    println!("  symlinks    {:>12}", thousands(r.symlinks));
    println!("  new blobs   {:>12}", thousands(r.blobs_new));
    println!("  dedup hits  {:>12}", thousands(r.dedup_hits));
    println!(
        "  skipped     {:>12}  (unchanged since the last ingest)",
        thousands(r.skipped)
    );
    println!("  excluded    {:>12}", thousands(r.excluded));
    let errors = r.issues.describe(Severity::Error);
    if errors.is_empty() {
        println!("  errors      {:>12}", thousands(r.errors));
    } else {
        println!("  errors      {:>12}  ({errors})", thousands(r.errors));
    }
    let warnings = r.issues.describe(Severity::Warning);
    if !warnings.is_empty() {
        let n: u64 = r.issues.of(Severity::Warning).map(|(_, n)| n).sum();
        println!("  warnings    {:>12}  ({warnings})", thousands(n));
    }
    let copies = d.link_copy + d.link_reflink;
    if copies > 0 || d.mode_conflicts > 0 {
        println!(
            "  copies      {:>12}  (cross-device {}, link cap {}, no permission {}); own inode for mode: {}",
            thousands(copies),
            thousands(d.fallback_exdev),
            thousands(d.fallback_emlink),
            thousands(d.fallback_eperm),
            thousands(d.mode_conflicts)
        );
    }
    if d.resumed {
        println!("  resumed     an interrupted phantom ingest was completed first");
    }
    println!(
        "  time        {:>10.2} s  ({} files/s)",
        r.seconds,
        thousands(r.files_per_sec.round() as u64)
    );
}

/// `VRIFT_INGEST_STATS=1`: one JSON line on stderr with what the summary leaves out — busy
/// time per stage (summed over its threads), files actually read, how files were placed —
/// for profiling and the benchmark harness.
fn stats_line(r: &IngestReport) -> String {
    let d = &r.details;
    serde_json::json!({
        "io_backend": d.io_backend,
        "walk_busy_s": d.walk_seconds,
        "hash_busy_s": d.hash_seconds,
        "place_busy_s": d.place_seconds,
        "manifest_s": d.manifest_seconds,
        "manifest_written": d.manifest_written,
        "hashed_files": d.hashed_files,
        "hashed_bytes": d.hashed_bytes,
        "hardlinks": d.link_hardlink,
        "copies": d.link_copy + d.link_reflink,
        "mode_conflicts": d.mode_conflicts,
        "fallbacks": {"exdev": d.fallback_exdev, "emlink": d.fallback_emlink, "eperm": d.fallback_eperm},
    })
    .to_string()
}
