//! `vrift serve --metrics ADDR`: a long-running Prometheus exporter for a shared store.
//!
//! Three threads: a refresher keeps an incremental inventory of the store (see
//! `store_stats.rs`) and publishes a snapshot at most every `--refresh` seconds; a probe takes
//! and drops the shared store lock on the same period, measuring how long a starting ingest
//! would wait; the HTTP thread answers each scrape from the latest snapshot (plus `statvfs`
//! for disk free) through a fresh `metrics-exporter-prometheus` recorder, so a project that
//! left the registry leaves the exposition too.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use metrics::{counter, describe_counter, describe_gauge, gauge, Unit};
use vrift_cas::gc::LastGc;
use vrift_cas::lock::{LockKind, StoreLock};
use vrift_cas::usage::ProjectUsage;

use crate::args::ServeArgs;
use crate::metrics_export;
use crate::{Globals, Outcome};
use vrift_cas::inventory::{Inventory, RefreshWork, Totals};

/// Everything one refresh found.
#[derive(Clone, Default)]
struct Snapshot {
    totals: Totals,
    work: RefreshWork,
    registry_readable: bool,
    registry_projects: usize,
    projects: Vec<ProjectUsage>,
    apparent_bytes: u64,
    referenced_bytes: u64,
    referenced_blobs: u64,
    last_gc: Option<LastGc>,
    holders_shared: u64,
    holders_exclusive: u64,
    refreshed_unix: f64,
    refresh_seconds: f64,
}

#[derive(Default)]
struct Probe {
    /// Set while the probe is blocked on the lock.
    waiting_since: Option<Instant>,
    last_wait: Option<f64>,
}

#[derive(Default)]
struct State {
    snapshot: Mutex<Option<Arc<Snapshot>>>,
    probe: Mutex<Probe>,
    refresh_errors: Mutex<u64>,
}

pub fn run(g: &Globals, a: &ServeArgs) -> Result<Outcome> {
    let cas = super::open_store(g)?;
    let root = cas.root().to_path_buf();
    let period = Duration::from_secs(a.refresh.max(1));
    let listener = metrics_export::bind(&a.metrics)?;
    let addr = listener.local_addr()?;
    let state = Arc::new(State::default());

    {
        let (state, root) = (state.clone(), root.clone());
        std::thread::Builder::new()
            .name("vrift-serve-refresh".into())
            .spawn(move || refresher(&root, period, &state))?;
    }
    {
        let (state, root) = (state.clone(), root.clone());
        std::thread::Builder::new()
            .name("vrift-serve-lock".into())
            .spawn(move || lock_probe(&root, period, &state))?;
    }
    if g.json {
        println!(
            "{}",
            crate::output::versioned(
                serde_json::json!({ "store": root, "metrics_url": format!("http://{addr}/metrics"), "refresh_seconds": period.as_secs() })
            )
        );
    }
    eprintln!(
        "vrift serve: store {} on http://{addr}/metrics (refreshed at most every {}s)",
        root.display(),
        period.as_secs()
    );
    let render_state = state.clone();
    metrics_export::serve_http(
        listener,
        Arc::new(move || {
            let snap = render_state
                .snapshot
                .lock()
                .map_err(|_| (500, "poisoned".to_string()))?
                .clone();
            match snap {
                Some(s) => Ok(render(&root, &s, &render_state)),
                None => Err((
                    503,
                    "the first scan of the store is still running".to_string(),
                )),
            }
        }),
    );
    Ok(Outcome::Ok)
}

fn refresher(root: &Path, period: Duration, state: &State) {
    let mut inv = Inventory::new(root);
    loop {
        let started = Instant::now();
        match inv.refresh() {
            Ok(work) => {
                let snap = snapshot(root, &inv, work, started);
                if let Ok(mut s) = state.snapshot.lock() {
                    *s = Some(Arc::new(snap));
                }
            }
            Err(e) => {
                eprintln!("vrift serve: refresh failed: {e}");
                if let Ok(mut n) = state.refresh_errors.lock() {
                    *n += 1;
                }
            }
        }
        std::thread::sleep(period.saturating_sub(started.elapsed()));
    }
}

fn snapshot(root: &Path, inv: &Inventory, work: RefreshWork, started: Instant) -> Snapshot {
    // Our own lock probe is not a holder anyone waits for.
    let me = std::process::id();
    let holders = vrift_cas::lock::holders(root);
    let count = |k: LockKind| {
        holders
            .iter()
            .filter(|h| h.kind == k && h.pid != me)
            .count() as u64
    };
    let mut s = Snapshot {
        totals: inv.totals(),
        work,
        registry_projects: inv.registry_projects,
        last_gc: vrift_cas::gc::last_gc(root),
        holders_shared: count(LockKind::Shared),
        holders_exclusive: count(LockKind::Exclusive),
        refreshed_unix: unix_now(),
        ..Default::default()
    };
    if let Ok(u) = &inv.usage {
        s.registry_readable = true;
        s.projects = u.projects.clone();
        s.apparent_bytes = u.apparent_bytes();
        s.referenced_bytes = u.referenced_bytes();
        s.referenced_blobs = u.referenced_blobs() as u64;
    }
    s.refresh_seconds = started.elapsed().as_secs_f64();
    s
}

fn lock_probe(root: &Path, period: Duration, state: &State) {
    let mut warned = false;
    loop {
        let t = Instant::now();
        if let Ok(mut p) = state.probe.lock() {
            p.waiting_since = Some(t);
        }
        let got = StoreLock::acquire(root, LockKind::Shared, true, |_| {});
        let waited = t.elapsed().as_secs_f64();
        if let Ok(mut p) = state.probe.lock() {
            p.waiting_since = None;
            p.last_wait = got.is_ok().then_some(waited);
        }
        if let Err(e) = &got {
            if !warned {
                eprintln!("vrift serve: cannot probe the store lock ({e}); vrift_store_lock_wait_seconds not exported");
                warned = true;
            }
        }
        drop(got);
        std::thread::sleep(period);
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Describes every store metric on the current recorder.
fn describe() {
    let bytes = [
        ("vrift_store_content_bytes", "Sum of the sizes of all blobs in the store"),
        ("vrift_store_disk_bytes", "Disk space the blobs occupy (allocated blocks, each blob once)"),
        ("vrift_store_orphan_bytes", "Disk space of blobs that no registered manifest references (what `vrift gc --delete` would free)"),
        ("vrift_store_apparent_bytes", "Sum of all registered projects' file sizes: what they would take without the store"),
        ("vrift_store_referenced_bytes", "Bytes of distinct content referenced by registered projects"),
        ("vrift_store_saved_bytes", "apparent - referenced: bytes deduplication saves"),
        ("vrift_store_filesystem_avail_bytes", "Bytes available to vrift on the store's filesystem (read at scrape time)"),
        ("vrift_store_filesystem_size_bytes", "Size of the store's filesystem"),
        ("vrift_store_last_gc_deleted_bytes", "Bytes the last `vrift gc --delete` freed"),
        ("vrift_project_apparent_bytes", "Sum of the project's file sizes"),
        ("vrift_project_unique_bytes", "Bytes of blobs only this project references (what removing it would free)"),
        ("vrift_project_shared_bytes", "Bytes of the project's distinct blobs that other projects reference too"),
        ("vrift_project_added_bytes", "Bytes of blobs this project added to the store (first referenced by it, registry order)"),
    ];
    for (name, help) in bytes {
        describe_gauge!(name, Unit::Bytes, help);
    }
    let counts = [
        ("vrift_store_blobs", "Blobs in the store"),
        ("vrift_store_orphan_blobs", "Blobs that no registered manifest references"),
        ("vrift_store_referenced_blobs", "Distinct blobs referenced by registered projects"),
        ("vrift_store_foreign_files", "Files under blake3/ that are not blobs (temp files of a crashed copy, strays)"),
        ("vrift_store_projects", "Registered projects"),
        ("vrift_store_lock_holders", "Processes holding the store lock, by kind (shared: ingests; exclusive: gc --delete, clean)"),
        ("vrift_store_last_gc_deleted_blobs", "Blobs the last `vrift gc --delete` removed"),
        ("vrift_store_refresh_shard_dirs_relisted", "Blob shard directories the last refresh had to list again"),
        ("vrift_project_files", "Files (with content) in the project's manifest"),
        ("vrift_project_blobs", "Distinct blobs the project references"),
    ];
    for (name, help) in counts {
        describe_gauge!(name, Unit::Count, help);
    }
    describe_gauge!(
        "vrift_store_dedup_ratio",
        "Fraction of the projects' apparent bytes saved by deduplication, 0..1 (as `vrift status`)"
    );
    describe_gauge!(
        "vrift_store_registry_readable",
        "1 if registry.json and the cached manifests could be read (orphan and project numbers need them)"
    );
    describe_gauge!(
        "vrift_project_manifest_readable",
        "1 if the project's cached manifest could be read"
    );
    describe_gauge!(
        "vrift_store_last_gc_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the last `vrift gc --delete` (0: never)"
    );
    describe_gauge!(
        "vrift_project_last_ingest_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the project's last ingest"
    );
    describe_gauge!(
        "vrift_store_lock_wait_seconds",
        Unit::Seconds,
        "How long the exporter's last probe waited for the shared store lock, or, while it still waits, for how long so far: what a starting ingest waits (long while gc --delete or clean runs)"
    );
    describe_gauge!(
        "vrift_store_refresh_timestamp_seconds",
        Unit::Seconds,
        "Unix time at which the numbers were taken (they are at most --refresh seconds plus one refresh old)"
    );
    describe_gauge!(
        "vrift_store_refresh_duration_seconds",
        Unit::Seconds,
        "Wall time of the last refresh"
    );
    describe_counter!(
        "vrift_store_refresh_errors_total",
        Unit::Count,
        "Refreshes that failed (the previous numbers are kept)"
    );
    describe_gauge!(
        "vrift_build_info",
        "Always 1; the labels say which vrift produced the metrics"
    );
}

/// The exposition of one scrape.
fn render(root: &Path, s: &Snapshot, state: &State) -> String {
    let rec = metrics_export::recorder();
    metrics::with_local_recorder(&rec, || {
        describe();
        let set = |name: &'static str, v: f64| gauge!(name).set(v);
        let t = &s.totals;
        set("vrift_store_blobs", t.blobs as f64);
        set("vrift_store_content_bytes", t.content_bytes as f64);
        set("vrift_store_disk_bytes", t.disk_bytes as f64);
        set("vrift_store_foreign_files", t.foreign_files as f64);
        set(
            "vrift_store_registry_readable",
            f64::from(u8::from(s.registry_readable)),
        );
        set("vrift_store_projects", s.registry_projects as f64);
        if s.registry_readable {
            set("vrift_store_orphan_blobs", t.orphan_blobs as f64);
            set("vrift_store_orphan_bytes", t.orphan_bytes as f64);
            set("vrift_store_apparent_bytes", s.apparent_bytes as f64);
            set("vrift_store_referenced_bytes", s.referenced_bytes as f64);
            set("vrift_store_referenced_blobs", s.referenced_blobs as f64);
            let saved = s.apparent_bytes.saturating_sub(s.referenced_bytes);
            set("vrift_store_saved_bytes", saved as f64);
            let ratio = if s.apparent_bytes > 0 {
                saved as f64 / s.apparent_bytes as f64
            } else {
                0.0
            };
            set("vrift_store_dedup_ratio", ratio);
        }
        if let Ok((avail, total)) = vrift_cas::sys::free_space(root) {
            set("vrift_store_filesystem_avail_bytes", avail as f64);
            set("vrift_store_filesystem_size_bytes", total as f64);
        }
        let gc = s.last_gc.clone().unwrap_or_default();
        set("vrift_store_last_gc_timestamp_seconds", gc.unix as f64);
        set("vrift_store_last_gc_deleted_blobs", gc.deleted as f64);
        set("vrift_store_last_gc_deleted_bytes", gc.deleted_bytes as f64);
        gauge!("vrift_store_lock_holders", "kind" => "shared").set(s.holders_shared as f64);
        gauge!("vrift_store_lock_holders", "kind" => "exclusive").set(s.holders_exclusive as f64);
        if let Ok(p) = state.probe.lock() {
            let wait = match p.waiting_since {
                Some(since) if since.elapsed() > Duration::from_millis(100) => {
                    Some(since.elapsed().as_secs_f64())
                }
                _ => p.last_wait,
            };
            if let Some(w) = wait {
                set("vrift_store_lock_wait_seconds", w);
            }
        }
        set("vrift_store_refresh_timestamp_seconds", s.refreshed_unix);
        set("vrift_store_refresh_duration_seconds", s.refresh_seconds);
        set(
            "vrift_store_refresh_shard_dirs_relisted",
            s.work.shard_dirs_relisted as f64,
        );
        let errors = state.refresh_errors.lock().map(|n| *n).unwrap_or(0);
        counter!("vrift_store_refresh_errors_total").absolute(errors);
        gauge!("vrift_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);

        for p in &s.projects {
            let labels = [("project", p.name.clone()), ("project_id", p.id.clone())];
            let pset = |name: &'static str, v: u64| gauge!(name, &labels).set(v as f64);
            pset("vrift_project_files", p.files);
            pset("vrift_project_apparent_bytes", p.apparent_bytes);
            pset("vrift_project_blobs", p.blobs);
            pset("vrift_project_unique_bytes", p.unique_bytes);
            pset(
                "vrift_project_shared_bytes",
                p.blob_bytes.saturating_sub(p.unique_bytes),
            );
            pset("vrift_project_added_bytes", p.added_bytes);
            pset(
                "vrift_project_last_ingest_timestamp_seconds",
                p.last_ingest_unix,
            );
            pset(
                "vrift_project_manifest_readable",
                u64::from(p.unreadable.is_none()),
            );
        }
    });
    rec.handle().render()
}
