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
use metrics::{counter, describe_counter, describe_gauge, gauge};
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

/// The store's metrics, each name spelled once: [`describe`] announces every one of
/// [`names::ALL`], the render sets them by these constants.
mod names {
    use metrics::Unit;

    /// A metric `vrift serve` exports: name, kind, unit, help.
    pub struct Metric {
        pub name: &'static str,
        pub counter: bool,
        pub unit: Option<Unit>,
        pub help: &'static str,
    }

    pub const STORE_CONTENT_BYTES: Metric = Metric {
        name: "vrift_store_content_bytes",
        counter: false,
        unit: Some(Unit::Bytes),
        help: "Sum of the sizes of all blobs in the store",
    };
    pub const STORE_DISK_BYTES: Metric = Metric {
        name: "vrift_store_disk_bytes",
        counter: false,
        unit: Some(Unit::Bytes),
        help: "Disk space the blobs occupy (allocated blocks, each blob once)",
    };
    pub const STORE_ORPHAN_BYTES: Metric = Metric {
        name: "vrift_store_orphan_bytes",
        counter: false,
        unit: Some(Unit::Bytes),
        help: "Disk space of blobs that no registered manifest references (what `vrift gc --delete` would free)",
    };
    pub const STORE_APPARENT_BYTES: Metric = Metric {
        name: "vrift_store_apparent_bytes",
        counter: false,
        unit: Some(Unit::Bytes),
        help: "Sum of all registered projects' file sizes: what they would take without the store",
    };
    pub const STORE_REFERENCED_BYTES: Metric = Metric {
        name: "vrift_store_referenced_bytes",
        counter: false,
        unit: Some(Unit::Bytes),
        help: "Bytes of distinct content referenced by registered projects",
    };
    pub const STORE_SAVED_BYTES: Metric = Metric {
        name: "vrift_store_saved_bytes",
        counter: false,
        unit: Some(Unit::Bytes),
        help: "apparent - referenced: bytes deduplication saves",
    };
    pub const STORE_FILESYSTEM_AVAIL_BYTES: Metric = Metric {
        name: "vrift_store_filesystem_avail_bytes",
        counter: false,
        unit: Some(Unit::Bytes),
        help: "Bytes available to vrift on the store's filesystem (read at scrape time)",
    };
    pub const STORE_FILESYSTEM_SIZE_BYTES: Metric = Metric {
        name: "vrift_store_filesystem_size_bytes",
        counter: false,
        unit: Some(Unit::Bytes),
        help: "Size of the store's filesystem",
    };
    pub const STORE_LAST_GC_DELETED_BYTES: Metric = Metric {
        name: "vrift_store_last_gc_deleted_bytes",
        counter: false,
        unit: Some(Unit::Bytes),
        help: "Bytes the last `vrift gc --delete` freed",
    };
    pub const PROJECT_APPARENT_BYTES: Metric = Metric {
        name: "vrift_project_apparent_bytes",
        counter: false,
        unit: Some(Unit::Bytes),
        help: "Sum of the project's file sizes",
    };
    pub const PROJECT_UNIQUE_BYTES: Metric = Metric {
        name: "vrift_project_unique_bytes",
        counter: false,
        unit: Some(Unit::Bytes),
        help: "Bytes of blobs only this project references (what removing it would free)",
    };
    pub const PROJECT_SHARED_BYTES: Metric = Metric {
        name: "vrift_project_shared_bytes",
        counter: false,
        unit: Some(Unit::Bytes),
        help: "Bytes of the project's distinct blobs that other projects reference too",
    };
    pub const PROJECT_ADDED_BYTES: Metric = Metric {
        name: "vrift_project_added_bytes",
        counter: false,
        unit: Some(Unit::Bytes),
        help: "Bytes of blobs this project added to the store (first referenced by it, registry order)",
    };
    pub const STORE_BLOBS: Metric = Metric {
        name: "vrift_store_blobs",
        counter: false,
        unit: Some(Unit::Count),
        help: "Blobs in the store",
    };
    pub const STORE_ORPHAN_BLOBS: Metric = Metric {
        name: "vrift_store_orphan_blobs",
        counter: false,
        unit: Some(Unit::Count),
        help: "Blobs that no registered manifest references",
    };
    pub const STORE_REFERENCED_BLOBS: Metric = Metric {
        name: "vrift_store_referenced_blobs",
        counter: false,
        unit: Some(Unit::Count),
        help: "Distinct blobs referenced by registered projects",
    };
    pub const STORE_FOREIGN_FILES: Metric = Metric {
        name: "vrift_store_foreign_files",
        counter: false,
        unit: Some(Unit::Count),
        help: "Files under blake3/ that are not blobs (temp files of a crashed copy, strays)",
    };
    pub const STORE_PROJECTS: Metric = Metric {
        name: "vrift_store_projects",
        counter: false,
        unit: Some(Unit::Count),
        help: "Registered projects",
    };
    pub const STORE_LOCK_HOLDERS: Metric = Metric {
        name: "vrift_store_lock_holders",
        counter: false,
        unit: Some(Unit::Count),
        help: "Processes holding the store lock, by kind (shared: ingests; exclusive: gc --delete, clean)",
    };
    pub const STORE_LAST_GC_DELETED_BLOBS: Metric = Metric {
        name: "vrift_store_last_gc_deleted_blobs",
        counter: false,
        unit: Some(Unit::Count),
        help: "Blobs the last `vrift gc --delete` removed",
    };
    pub const STORE_REFRESH_SHARD_DIRS_RELISTED: Metric = Metric {
        name: "vrift_store_refresh_shard_dirs_relisted",
        counter: false,
        unit: Some(Unit::Count),
        help: "Blob shard directories the last refresh had to list again",
    };
    pub const PROJECT_FILES: Metric = Metric {
        name: "vrift_project_files",
        counter: false,
        unit: Some(Unit::Count),
        help: "Files (with content) in the project's manifest",
    };
    pub const PROJECT_BLOBS: Metric = Metric {
        name: "vrift_project_blobs",
        counter: false,
        unit: Some(Unit::Count),
        help: "Distinct blobs the project references",
    };
    pub const STORE_DEDUP_RATIO: Metric = Metric {
        name: "vrift_store_dedup_ratio",
        counter: false,
        unit: None,
        help: "Fraction of the projects' apparent bytes saved by deduplication, 0..1 (as `vrift status`)",
    };
    pub const STORE_REGISTRY_READABLE: Metric = Metric {
        name: "vrift_store_registry_readable",
        counter: false,
        unit: None,
        help: "1 if registry.json and the cached manifests could be read (orphan and project numbers need them)",
    };
    pub const PROJECT_MANIFEST_READABLE: Metric = Metric {
        name: "vrift_project_manifest_readable",
        counter: false,
        unit: None,
        help: "1 if the project's cached manifest could be read",
    };
    pub const STORE_LAST_GC_TIMESTAMP_SECONDS: Metric = Metric {
        name: "vrift_store_last_gc_timestamp_seconds",
        counter: false,
        unit: Some(Unit::Seconds),
        help: "Unix time of the last `vrift gc --delete` (0: never)",
    };
    pub const PROJECT_LAST_INGEST_TIMESTAMP_SECONDS: Metric = Metric {
        name: "vrift_project_last_ingest_timestamp_seconds",
        counter: false,
        unit: Some(Unit::Seconds),
        help: "Unix time of the project's last ingest",
    };
    pub const STORE_LOCK_WAIT_SECONDS: Metric = Metric {
        name: "vrift_store_lock_wait_seconds",
        counter: false,
        unit: Some(Unit::Seconds),
        help: "How long the exporter's last probe waited for the shared store lock, or, while it still waits, for how long so far: what a starting ingest waits (long while gc --delete or clean runs)",
    };
    pub const STORE_REFRESH_TIMESTAMP_SECONDS: Metric = Metric {
        name: "vrift_store_refresh_timestamp_seconds",
        counter: false,
        unit: Some(Unit::Seconds),
        help: "Unix time at which the numbers were taken (they are at most --refresh seconds plus one refresh old)",
    };
    pub const STORE_REFRESH_DURATION_SECONDS: Metric = Metric {
        name: "vrift_store_refresh_duration_seconds",
        counter: false,
        unit: Some(Unit::Seconds),
        help: "Wall time of the last refresh",
    };
    pub const STORE_REFRESH_ERRORS_TOTAL: Metric = Metric {
        name: "vrift_store_refresh_errors_total",
        counter: true,
        unit: Some(Unit::Count),
        help: "Refreshes that failed (the previous numbers are kept)",
    };
    /// Always 1; the labels say which vrift produced the metrics (the ingest exports it too).
    pub const BUILD_INFO: Metric = Metric {
        name: vrift_pipeline::metrics::BUILD_INFO,
        counter: false,
        unit: None,
        help: "Always 1; the labels say which vrift produced the metrics",
    };

    pub const ALL: &[Metric] = &[
        STORE_CONTENT_BYTES,
        STORE_DISK_BYTES,
        STORE_ORPHAN_BYTES,
        STORE_APPARENT_BYTES,
        STORE_REFERENCED_BYTES,
        STORE_SAVED_BYTES,
        STORE_FILESYSTEM_AVAIL_BYTES,
        STORE_FILESYSTEM_SIZE_BYTES,
        STORE_LAST_GC_DELETED_BYTES,
        PROJECT_APPARENT_BYTES,
        PROJECT_UNIQUE_BYTES,
        PROJECT_SHARED_BYTES,
        PROJECT_ADDED_BYTES,
        STORE_BLOBS,
        STORE_ORPHAN_BLOBS,
        STORE_REFERENCED_BLOBS,
        STORE_FOREIGN_FILES,
        STORE_PROJECTS,
        STORE_LOCK_HOLDERS,
        STORE_LAST_GC_DELETED_BLOBS,
        STORE_REFRESH_SHARD_DIRS_RELISTED,
        PROJECT_FILES,
        PROJECT_BLOBS,
        STORE_DEDUP_RATIO,
        STORE_REGISTRY_READABLE,
        PROJECT_MANIFEST_READABLE,
        STORE_LAST_GC_TIMESTAMP_SECONDS,
        PROJECT_LAST_INGEST_TIMESTAMP_SECONDS,
        STORE_LOCK_WAIT_SECONDS,
        STORE_REFRESH_TIMESTAMP_SECONDS,
        STORE_REFRESH_DURATION_SECONDS,
        STORE_REFRESH_ERRORS_TOTAL,
        BUILD_INFO,
    ];
}

/// Describes every store metric on the current recorder.
fn describe() {
    for m in names::ALL {
        match (m.counter, m.unit) {
            (true, Some(u)) => describe_counter!(m.name, u, m.help),
            (true, None) => describe_counter!(m.name, m.help),
            (false, Some(u)) => describe_gauge!(m.name, u, m.help),
            (false, None) => describe_gauge!(m.name, m.help),
        }
    }
}

/// The exposition of one scrape.
fn render(root: &Path, s: &Snapshot, state: &State) -> String {
    let rec = metrics_export::recorder();
    metrics::with_local_recorder(&rec, || {
        describe();
        let set = |name: &'static str, v: f64| gauge!(name).set(v);
        let t = &s.totals;
        set(names::STORE_BLOBS.name, t.blobs as f64);
        set(names::STORE_CONTENT_BYTES.name, t.content_bytes as f64);
        set(names::STORE_DISK_BYTES.name, t.disk_bytes as f64);
        set(names::STORE_FOREIGN_FILES.name, t.foreign_files as f64);
        set(
            names::STORE_REGISTRY_READABLE.name,
            f64::from(u8::from(s.registry_readable)),
        );
        set(names::STORE_PROJECTS.name, s.registry_projects as f64);
        if s.registry_readable {
            set(names::STORE_ORPHAN_BLOBS.name, t.orphan_blobs as f64);
            set(names::STORE_ORPHAN_BYTES.name, t.orphan_bytes as f64);
            set(names::STORE_APPARENT_BYTES.name, s.apparent_bytes as f64);
            set(
                names::STORE_REFERENCED_BYTES.name,
                s.referenced_bytes as f64,
            );
            set(
                names::STORE_REFERENCED_BLOBS.name,
                s.referenced_blobs as f64,
            );
            let saved = s.apparent_bytes.saturating_sub(s.referenced_bytes);
            set(names::STORE_SAVED_BYTES.name, saved as f64);
            let ratio = if s.apparent_bytes > 0 {
                saved as f64 / s.apparent_bytes as f64
            } else {
                0.0
            };
            set(names::STORE_DEDUP_RATIO.name, ratio);
        }
        if let Ok((avail, total)) = vrift_cas::sys::free_space(root) {
            set(names::STORE_FILESYSTEM_AVAIL_BYTES.name, avail as f64);
            set(names::STORE_FILESYSTEM_SIZE_BYTES.name, total as f64);
        }
        let gc = s.last_gc.clone().unwrap_or_default();
        set(names::STORE_LAST_GC_TIMESTAMP_SECONDS.name, gc.unix as f64);
        set(names::STORE_LAST_GC_DELETED_BLOBS.name, gc.deleted as f64);
        set(
            names::STORE_LAST_GC_DELETED_BYTES.name,
            gc.deleted_bytes as f64,
        );
        gauge!(names::STORE_LOCK_HOLDERS.name, "kind" => "shared").set(s.holders_shared as f64);
        gauge!(names::STORE_LOCK_HOLDERS.name, "kind" => "exclusive")
            .set(s.holders_exclusive as f64);
        if let Ok(p) = state.probe.lock() {
            let wait = match p.waiting_since {
                Some(since) if since.elapsed() > Duration::from_millis(100) => {
                    Some(since.elapsed().as_secs_f64())
                }
                _ => p.last_wait,
            };
            if let Some(w) = wait {
                set(names::STORE_LOCK_WAIT_SECONDS.name, w);
            }
        }
        set(
            names::STORE_REFRESH_TIMESTAMP_SECONDS.name,
            s.refreshed_unix,
        );
        set(
            names::STORE_REFRESH_DURATION_SECONDS.name,
            s.refresh_seconds,
        );
        set(
            names::STORE_REFRESH_SHARD_DIRS_RELISTED.name,
            s.work.shard_dirs_relisted as f64,
        );
        let errors = state.refresh_errors.lock().map(|n| *n).unwrap_or(0);
        counter!(names::STORE_REFRESH_ERRORS_TOTAL.name).absolute(errors);
        gauge!(names::BUILD_INFO.name, "version" => env!("CARGO_PKG_VERSION")).set(1.0);

        for p in &s.projects {
            let labels = [("project", p.name.clone()), ("project_id", p.id.clone())];
            let pset = |name: &'static str, v: u64| gauge!(name, &labels).set(v as f64);
            pset(names::PROJECT_FILES.name, p.files);
            pset(names::PROJECT_APPARENT_BYTES.name, p.apparent_bytes);
            pset(names::PROJECT_BLOBS.name, p.blobs);
            pset(names::PROJECT_UNIQUE_BYTES.name, p.unique_bytes);
            pset(
                names::PROJECT_SHARED_BYTES.name,
                p.blob_bytes.saturating_sub(p.unique_bytes),
            );
            pset(names::PROJECT_ADDED_BYTES.name, p.added_bytes);
            pset(
                names::PROJECT_LAST_INGEST_TIMESTAMP_SECONDS.name,
                p.last_ingest_unix,
            );
            pset(
                names::PROJECT_MANIFEST_READABLE.name,
                u64::from(p.unreadable.is_none()),
            );
        }
    });
    rec.handle().render()
}
