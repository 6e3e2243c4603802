//! `vrift push`, `vrift pull` and the push half of `vrift ingest --push`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use vrift_cas::lock::{LockKind, StoreLock};
use vrift_cas::Cas;
use vrift_remote::metrics::Command as RemoteCommand;
use vrift_remote::{
    CheckMode, PullOptions, PullReport, PushOptions, PushReport, Remote, RemoteError, RemoteStats,
    Settings,
};

use crate::args::{CheckArg, PullArgs, PushArgs, RemoteMetricsArgs};
use crate::format::{bytes, thousands};
use crate::metrics_export::{IngestFlags, RemoteExport};
use crate::progress::Progress;
use crate::{Globals, Outcome};

/// A usage-class remote error (bad URL, none configured, bad name) exits 2 like clap's; the
/// rest are failures (exit 1) through `main`.
fn fail(g: &Globals, e: RemoteError) -> Result<Outcome> {
    if e.is_usage() {
        if g.json {
            println!(
                "{}",
                crate::output::versioned(
                    serde_json::json!({ "error": e.to_string(), "kind": "usage", "exit": 2 })
                )
            );
        }
        eprintln!("error: {e}");
        return Ok(Outcome::Usage);
    }
    Err(e.into())
}

/// The remote from `--remote`/`VR_REMOTE`, `<store>/remote.toml` and the AWS environment.
pub fn connect(g: &Globals, stats: Arc<RemoteStats>) -> Result<Remote, RemoteError> {
    let settings = Settings::resolve(g.remote.as_deref(), &g.store, &|k| std::env::var(k).ok())?;
    Remote::connect(settings, stats)
}

fn shared_lock(store: &Path) -> Result<StoreLock> {
    // Shared, like ingest: a `gc --delete` must not remove blobs being read or just landed.
    Ok(StoreLock::acquire(store, LockKind::Shared, true, |_| {
        crate::note!("waiting for the store lock (a gc or clean is running)");
    })?)
}

fn progress(
    g: &Globals,
    stats: &Arc<RemoteStats>,
    label: &'static str,
    verb: &'static str,
) -> Progress {
    let s = stats.clone();
    let eta = crate::progress::Eta::start();
    Progress::start_with(g.progress, label, move || {
        let get = RemoteStats::get;
        // Percent of the blobs settled (moved, or found there already) once the total is known.
        let settled = get(&s.blobs_moved) + get(&s.blobs_present);
        let pct = settled
            .saturating_mul(100)
            .checked_div(get(&s.blobs_total))
            .map_or(String::new(), |p| format!("{}% ", p.min(100)));
        format!(
            "{pct}checked {}/{} blobs, {} {} ({}), already there {}, {} requests, {} retries{}",
            thousands(get(&s.blobs_checked).max(get(&s.blobs_present))),
            thousands(get(&s.blobs_total)),
            verb,
            thousands(get(&s.blobs_moved)),
            bytes(get(&s.bytes_moved)),
            thousands(get(&s.blobs_present)),
            thousands(RemoteStats::total(&s.requests)),
            thousands(RemoteStats::total(&s.retries)),
            eta.left(settled, get(&s.blobs_total)),
        )
    })
}

fn flags(m: &RemoteMetricsArgs) -> IngestFlags<'_> {
    IngestFlags {
        listen: None,
        textfile: m.metrics_textfile.as_deref(),
        push: m.metrics_push.as_deref(),
        job: &m.metrics_job,
    }
}

/// The name a pushed manifest gets: the registry's project for it, else its tree's name.
fn push_name(store: &Path, manifest: &Path) -> Result<String> {
    let canon = std::fs::canonicalize(manifest).unwrap_or_else(|_| manifest.to_path_buf());
    if let Ok(reg) = vrift_cas::registry::Registry::load(store) {
        if let Some(p) = reg.projects.iter().rev().find(|p| {
            std::fs::canonicalize(&p.manifest).unwrap_or_else(|_| p.manifest.clone()) == canon
        }) {
            return Ok(p.name.clone());
        }
    }
    let m = vrift_manifest::Manifest::open(manifest)?;
    let root = PathBuf::from(
        <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(m.root().to_vec()),
    );
    Ok(vrift_cas::registry::default_name(&root))
}

pub fn push(g: &Globals, a: &PushArgs) -> Result<Outcome> {
    let stats = Arc::new(RemoteStats::default());
    let remote = match connect(g, stats.clone()) {
        Ok(r) => r,
        Err(e) => return fail(g, e),
    };
    let cas = super::open_store(g)?;
    let name = match &a.name {
        Some(n) => n.clone(),
        None => push_name(cas.root(), &a.manifest)?,
    };
    let export = RemoteExport::start(&flags(&a.metrics), &name, RemoteCommand::Push);
    let opts = PushOptions {
        name,
        check: match a.check {
            CheckArg::Auto => CheckMode::Auto,
            CheckArg::List => CheckMode::List,
            CheckArg::Head => CheckMode::Head,
        },
        jobs: a.jobs,
        tree: None,
    };
    let started = std::time::Instant::now();
    let result = run_push(g, &remote, &cas, &a.manifest, &opts);
    if let Some(e) = export {
        for p in e.finish(&stats, started.elapsed().as_secs_f64(), result.is_ok()) {
            eprintln!("warning: {p}");
        }
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => return fail(g, e),
    };
    if g.json {
        println!(
            "{}",
            crate::output::versioned(serde_json::to_string(&report)?)
        );
    } else {
        print_push(&a.manifest, &report);
    }
    Ok(Outcome::Ok)
}

/// The push itself, under the shared store lock and with a progress line.
pub fn run_push(
    g: &Globals,
    remote: &Remote,
    cas: &Cas,
    manifest: &Path,
    opts: &PushOptions,
) -> Result<PushReport, RemoteError> {
    let _lock = shared_lock(cas.root()).map_err(|e| RemoteError::Io {
        path: cas.root().to_path_buf(),
        source: std::io::Error::other(format!("{e:#}")),
    })?;
    let bar = progress(g, remote.stats(), "push", "uploaded");
    let r = remote.push(cas, manifest, opts);
    bar.finish();
    r
}

pub fn print_push(manifest: &Path, r: &PushReport) {
    println!("Pushed {} → {}", manifest.display(), r.manifest_url);
    println!(
        "  blobs       {:>12}  ({})",
        thousands(r.blobs_total),
        bytes(r.total_bytes)
    );
    println!(
        "  uploaded    {:>12}  ({}; {} sent, zstd, in {} new packs)",
        thousands(r.blobs_uploaded),
        bytes(r.uploaded_bytes),
        bytes(r.sent_bytes),
        thousands(r.packs_uploaded)
    );
    println!(
        "  present     {:>12}  ({}; checked by {} in {:.2} s)",
        thousands(r.blobs_present),
        bytes(r.present_bytes),
        r.check,
        r.check_seconds
    );
    print_traffic(
        r.requests,
        r.retries,
        r.seconds,
        r.blobs_per_sec,
        r.bytes_per_sec,
    );
    println!("  by hash     {}", r.manifest_hash_key);
}

pub fn pull(g: &Globals, a: &PullArgs) -> Result<Outcome> {
    let stats = Arc::new(RemoteStats::default());
    let remote = match connect(g, stats.clone()) {
        Ok(r) => r,
        Err(e) => return fail(g, e),
    };
    let key = match remote.keys().resolve_manifest(&a.what) {
        Ok(k) => k,
        Err(e) => return fail(g, e),
    };
    // By default the manifest goes into the store, not into the user's working directory.
    let out = match &a.output {
        Some(o) => o.clone(),
        None => {
            let name = key
                .rsplit('/')
                .next()
                .unwrap_or("pulled.vrm")
                .trim_end_matches(".vrmz")
                .trim_end_matches(".vrm");
            let dir = g.store.join("pulled");
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir.join(format!("{name}.vrm"))
        }
    };
    let cas = Cas::open(&g.store).with_context(|| format!("store {}", g.store.display()))?;
    let project = a.name.clone().unwrap_or_else(|| a.what.clone());
    let export = RemoteExport::start(&flags(&a.metrics), &project, RemoteCommand::Pull);
    let started = std::time::Instant::now();
    let result = (|| {
        let _lock = shared_lock(cas.root())?;
        let bar = progress(g, &stats, "pull", "downloaded");
        let r = remote.pull(
            &cas,
            &a.what,
            &out,
            &PullOptions {
                jobs: a.jobs,
                register: true,
                name: a.name.clone(),
            },
        );
        bar.finish();
        Ok::<_, anyhow::Error>(r)
    })();
    let ok = matches!(result, Ok(Ok(_)));
    if let Some(e) = export {
        for p in e.finish(&stats, started.elapsed().as_secs_f64(), ok) {
            eprintln!("warning: {p}");
        }
    }
    let report = match result? {
        Ok(r) => r,
        Err(e) => return fail(g, e),
    };
    if g.json {
        println!(
            "{}",
            crate::output::versioned(serde_json::to_string(&report)?)
        );
    } else {
        print_pull(&report);
    }
    Ok(Outcome::Ok)
}

fn print_pull(r: &PullReport) {
    println!("Pulled {} → {}", r.manifest_url, r.manifest.display());
    if let Some(p) = &r.project {
        println!("  project     {p}");
    }
    println!(
        "  blobs       {:>12}  ({})",
        thousands(r.blobs_total),
        bytes(r.total_bytes)
    );
    println!(
        "  downloaded  {:>12}  ({}, {} received; every one verified)",
        thousands(r.blobs_downloaded),
        bytes(r.downloaded_bytes),
        bytes(r.received_bytes)
    );
    println!(
        "  present     {:>12}  ({}, already in the local store)",
        thousands(r.blobs_present),
        bytes(r.present_bytes)
    );
    print_traffic(
        r.requests,
        r.retries,
        r.seconds,
        r.blobs_per_sec,
        r.bytes_per_sec,
    );
}

/// The last two lines of a push or pull summary: requests and throughput.
fn print_traffic(
    requests: u64,
    retries: u64,
    seconds: f64,
    blobs_per_sec: f64,
    bytes_per_sec: f64,
) {
    println!(
        "  requests    {:>12}  ({} retried)",
        thousands(requests),
        thousands(retries)
    );
    println!(
        "  time        {:>10.2} s  ({} blobs/s, {}/s)",
        seconds,
        thousands(blobs_per_sec.round() as u64),
        bytes(bytes_per_sec.round() as u64)
    );
}

/// `vrift restore`: see `vrift_remote::restore`.
pub fn restore(g: &Globals, a: &crate::args::RestoreArgs) -> Result<Outcome> {
    use vrift_remote::restore::{self, Hit, RestoreOptions};
    let prefix = a
        .key
        .clone()
        .unwrap_or_else(|| restore::default_prefix(&a.dir));
    let key = match restore::cache_key(&prefix, &a.key_from) {
        Ok(k) => k,
        Err(e) => return fail(g, e),
    };
    let stats = Arc::new(RemoteStats::default());
    // A remote is optional (a persistent runner's store alone is a cache); one that is
    // configured but broken is an error, never a miss.
    let configured = g.remote.is_some()
        || std::env::var_os("VR_REMOTE").is_some()
        || g.store.join("remote.toml").is_file();
    let remote = if configured {
        match connect(g, stats.clone()) {
            Ok(r) => Some(r),
            Err(e) => return fail(g, e),
        }
    } else {
        None
    };
    let cas = Cas::open(&g.store).with_context(|| format!("store {}", g.store.display()))?;
    let threads = if a.jobs > 0 {
        a.jobs
    } else {
        std::thread::available_parallelism()
            .map(std::num::NonZero::get)
            .unwrap_or(2)
    };
    let s = stats.clone();
    let eta = crate::progress::Eta::start();
    let line = Progress::start_with(g.progress, "restore", move || {
        let get = RemoteStats::get;
        let total = get(&s.bytes_total);
        let done = get(&s.bytes_moved) + get(&s.bytes_present);
        let requests = thousands(RemoteStats::total(&s.requests));
        if total == 0 {
            return format!("{requests} requests");
        }
        format!(
            "{:>3}% {}/{} blobs, {} of {}, {requests} requests{}",
            (done.min(total) * 100) / total,
            thousands(get(&s.blobs_moved) + get(&s.blobs_present)),
            thousands(get(&s.blobs_total)),
            bytes(done),
            bytes(total),
            eta.left(done, total),
        )
    });
    let opts = RestoreOptions {
        dir: a.dir.clone(),
        key,
        restore_prefixes: a.restore_prefix.clone(),
        cmd: (!a.cmd.is_empty()).then(|| a.cmd.clone()),
        checkout: vrift_pipeline::materialize::Options {
            link_mode: a.link_mode.into(),
            threads,
            ..Default::default()
        },
        jobs: a.jobs,
        direct: a.link_mode == crate::args::LinkModeArg::Auto,
        around_cmd: Some(Box::new(line.pauser())),
    };
    let report = {
        let _lock = shared_lock(cas.root())?;
        let r = restore::restore(&cas, remote.as_ref(), &opts);
        line.finish();
        match r {
            Ok(r) => r,
            Err(e) => return fail(g, e),
        }
    };
    if g.json {
        println!(
            "{}",
            crate::output::versioned(serde_json::to_string(&report)?)
        );
    } else {
        let what = match report.hit {
            Hit::Local => "hit in the local store".to_string(),
            Hit::Remote => "hit on the remote".to_string(),
            Hit::Partial => format!(
                "partial: restored {}",
                report.restored_key.as_deref().unwrap_or("?")
            ),
            Hit::Miss => "miss".to_string(),
        };
        crate::note!(
            "vrift restore {}: {what}; {} files in {}{}{} ({} received, {} requests, {:.2} s)",
            report.key,
            thousands(report.files),
            report.dir.display(),
            if report.saved { "; saved" } else { "" },
            if report.pushed { " and pushed" } else { "" },
            bytes(report.received_bytes),
            thousands(report.requests),
            report.seconds
        );
    }
    let exact = matches!(report.hit, Hit::Local | Hit::Remote);
    Ok(if exact || report.saved {
        Outcome::Ok
    } else {
        Outcome::Miss
    })
}

/// `vrift remote ls|gc`.
pub fn remote(g: &Globals, a: &crate::args::RemoteArgs) -> Result<Outcome> {
    use crate::args::RemoteCommand;
    let stats = Arc::new(RemoteStats::default());
    let remote = match connect(g, stats) {
        Ok(r) => r,
        Err(e) => return fail(g, e),
    };
    match &a.command {
        RemoteCommand::Ls => {
            let mut list = match remote.list_manifests() {
                Ok(l) => l,
                Err(e) => return fail(g, e),
            };
            list.sort_by(|x, y| x.name.cmp(&y.name));
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            if g.json {
                // One object like every other command's answer (a bare list could not carry
                // `version`).
                println!(
                    "{}",
                    crate::output::versioned(serde_json::json!({ "manifests": list }))
                );
            } else {
                println!("{:<60} {:>10} {:>8}", "MANIFEST", "SIZE", "AGE");
                for m in &list {
                    println!(
                        "{:<60} {:>10} {:>8}",
                        m.name,
                        bytes(m.size),
                        crate::format::age(now - m.modified)
                    );
                }
            }
            Ok(Outcome::Ok)
        }
        RemoteCommand::Gc(o) => {
            let parse = |s: &str| vrift_cas::gc::parse_age(s);
            let older_than = match o.older_than.as_deref().map(parse).transpose() {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("error: --older-than: {e}");
                    return Ok(Outcome::Usage);
                }
            };
            let grace = match parse(&o.grace) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("error: --grace: {e}");
                    return Ok(Outcome::Usage);
                }
            };
            let r = match remote.remote_gc(
                &g.store,
                &vrift_remote::gc::GcOptions {
                    keep_last: o.keep_last,
                    older_than,
                    delete: o.delete,
                    grace_secs: grace,
                    jobs: o.jobs,
                },
            ) {
                Ok(r) => r,
                Err(e) => return fail(g, e),
            };
            if g.json {
                println!("{}", crate::output::versioned(serde_json::to_string(&r)?));
            } else {
                let verb = if r.dry_run { "would" } else { "did" };
                println!(
                    "Remote gc of {} ({}): {} manifests, {} dropped; {} packs ({}), {} in use; {verb} unindex {}, delete {} ({}), restore {}, repack {}",
                    remote.url(),
                    if r.dry_run { "dry run; --delete to act" } else { "deleting" },
                    thousands(r.manifests),
                    thousands(r.manifests_dropped.len() as u64),
                    thousands(r.packs),
                    bytes(r.total_bytes),
                    thousands(r.packs_live),
                    thousands(r.packs_condemned),
                    thousands(r.packs_deleted),
                    bytes(r.deleted_bytes),
                    thousands(r.packs_restored),
                    thousands(r.packs_repacked),
                );
                for m in &r.manifests_dropped {
                    println!("  drop {m}");
                }
            }
            Ok(Outcome::Ok)
        }
    }
}
