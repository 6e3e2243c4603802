//! Ingest metrics through the `metrics` facade, fed from [`Counters`].
//!
//! Nothing here runs on the hot path: the stages only bump the relaxed atomics they always
//! bump, and [`Sampler`] copies them into metric handles a few times a second (live values for
//! an endpoint scraped during a long ingest, queue depth), then [`IngestMetrics::finish`]
//! records the totals and the duration once the run is over. Without a recorder (no
//! `--metrics-*` flag) none of this is even started.
//!
//! Every name, help text and label combination is declared up front by
//! [`IngestMetrics::register`], with zero values, so a dashboard never shows "no data" for an
//! outcome that simply did not happen in a run. The exposition side (recorders, HTTP endpoint,
//! textfile, Pushgateway) lives in the CLI.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Label, Unit,
};

use crate::report::{Counters, IssueKind};

pub const FILES: &str = "vrift_ingest_files_total";
pub const BYTES: &str = "vrift_ingest_bytes_total";
pub const LINKS: &str = "vrift_ingest_link_total";
pub const FALLBACKS: &str = "vrift_ingest_fallback_total";
pub const ISSUES: &str = "vrift_ingest_issues_total";
pub const STAGE_BUSY: &str = "vrift_ingest_stage_busy_seconds";
pub const QUEUE_DEPTH: &str = "vrift_ingest_queue_depth";
pub const QUEUE_DEPTH_MAX: &str = "vrift_ingest_queue_depth_max";
pub const DURATION: &str = "vrift_ingest_duration_seconds";
pub const LOCK_WAIT: &str = "vrift_ingest_lock_wait_seconds";
pub const RUNNING: &str = "vrift_ingest_running";
pub const LAST_RUN: &str = "vrift_ingest_last_run_timestamp_seconds";
pub const LAST_SUCCESS: &str = "vrift_ingest_last_run_success";
pub const BUILD_INFO: &str = "vrift_build_info";

/// `outcome` label values, in the order of the `files` / `bytes` handles of [`IngestMetrics`].
pub const OUTCOMES: [&str; 5] = ["new_blob", "dedup_hit", "unchanged", "excluded", "error"];
/// `method` label values of [`LINKS`].
pub const METHODS: [&str; 4] = ["hardlink", "rename", "copy", "reflink"];
/// `reason` label values of [`FALLBACKS`].
pub const REASONS: [&str; 3] = ["exdev", "emlink", "eperm"];
/// `stage` label values of [`STAGE_BUSY`].
pub const STAGES: [&str; 4] = ["walk", "hash", "place", "manifest"];
/// `queue` label values of [`QUEUE_DEPTH`]: the input queue of each stage.
pub const QUEUES: [&str; 3] = ["hash", "place", "collect"];

/// Bucket bounds (seconds) for [`DURATION`]: from a warm re-ingest of a small tree to an hour.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0,
];
/// Bucket bounds (seconds) for [`LOCK_WAIT`]: usually ~0, long while a `gc --delete` runs.
pub const LOCK_WAIT_BUCKETS: [f64; 10] =
    [0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0];

fn severity_label(k: IssueKind) -> &'static str {
    match k.severity() {
        crate::report::Severity::Error => "error",
        crate::report::Severity::Warning => "warning",
    }
}

/// Describes every ingest metric (help text, unit) on the current recorder.
pub fn describe() {
    describe_counter!(
        FILES,
        Unit::Count,
        "Paths seen by the ingest, by outcome: new_blob (stored as a new blob), dedup_hit (content \
         already stored), unchanged (not read: same as the previous manifest), excluded (left out \
         by the filter; a directory counts once), error (failed; the run exits 1)"
    );
    describe_counter!(
        BYTES,
        Unit::Bytes,
        "Bytes of regular files by outcome (see vrift_ingest_files_total); excluded directories \
         are not walked, so only excluded files count their bytes"
    );
    describe_counter!(
        LINKS,
        Unit::Count,
        "How content entered the store or a project file was made to share a blob: hardlink, \
         rename (phantom mode), copy or reflink (where a link was impossible)"
    );
    describe_counter!(
        FALLBACKS,
        Unit::Count,
        "Why a link was impossible: exdev (project and store on different filesystems), emlink \
         (the blob's link count is full), eperm (no permission to link the file)"
    );
    describe_counter!(
        ISSUES,
        Unit::Count,
        "Problems with paths, by kind (label severity: error kinds fail the run): unreadable, \
         changed, busy, not_stored, not_written are errors; special, dangling, own_copy, \
         unsealed, repaired (a damaged blob replaced), run are warnings"
    );
    describe_histogram!(
        STAGE_BUSY,
        Unit::Seconds,
        "Busy time of a pipeline stage in one run, summed over the stage's threads (one \
         observation per run and stage: _sum is the total busy time)"
    );
    describe_gauge!(
        QUEUE_DEPTH,
        Unit::Count,
        "Items waiting in the input queue of a stage (sampled every 200ms during the run)"
    );
    describe_gauge!(
        QUEUE_DEPTH_MAX,
        Unit::Count,
        "Largest queue depth seen by the 200ms sampler during the run"
    );
    describe_histogram!(DURATION, Unit::Seconds, "Wall time of whole ingest runs");
    describe_histogram!(
        LOCK_WAIT,
        Unit::Seconds,
        "Time an ingest waited for the shared store lock (held exclusively by gc --delete or clean)"
    );
    describe_gauge!(RUNNING, "1 while an ingest runs, 0 once it has finished");
    describe_gauge!(
        LAST_RUN,
        Unit::Seconds,
        "Unix time at which the last ingest finished"
    );
    describe_gauge!(
        LAST_SUCCESS,
        "1 if the last ingest finished without errors, 0 otherwise"
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the labels say which vrift produced the metrics"
    );
}

/// Handles to every ingest series of one recorder. Registering them declares the series with
/// zero values; recording through them afterwards touches no lock and no map.
pub struct IngestMetrics {
    files: [Counter; 5],
    bytes: [Counter; 5],
    links: [Counter; 4],
    fallbacks: [Counter; 3],
    issues: [Counter; IssueKind::ALL.len()],
    stage_busy: [Histogram; 4],
    queue: [Gauge; 3],
    queue_max: [Gauge; 3],
    max_seen: Mutex<[u64; 3]>,
    duration: Histogram,
    lock_wait: Histogram,
    running: Gauge,
    last_run: Gauge,
    last_success: Gauge,
}

impl IngestMetrics {
    /// Registers (declares) every series on the current recorder, each with `labels` added
    /// (e.g. `project`), and describes them.
    pub fn register(labels: &[(&'static str, String)]) -> IngestMetrics {
        describe();
        let with = |k: &'static str, v: &'static str| -> Vec<Label> {
            let mut l: Vec<Label> = labels
                .iter()
                .map(|(k, v)| Label::new(*k, v.clone()))
                .collect();
            l.push(Label::new(k, v));
            l
        };
        let base: Vec<Label> = labels
            .iter()
            .map(|(k, v)| Label::new(*k, v.clone()))
            .collect();
        let mut info = base.clone();
        info.push(Label::new("version", env!("CARGO_PKG_VERSION")));
        gauge!(BUILD_INFO, info).set(1.0);
        let m = IngestMetrics {
            files: OUTCOMES.map(|o| counter!(FILES, with("outcome", o))),
            bytes: OUTCOMES.map(|o| counter!(BYTES, with("outcome", o))),
            links: METHODS.map(|o| counter!(LINKS, with("method", o))),
            fallbacks: REASONS.map(|o| counter!(FALLBACKS, with("reason", o))),
            issues: IssueKind::ALL.map(|k| {
                let mut l = with("kind", k.as_str());
                l.push(Label::new("severity", severity_label(k)));
                counter!(ISSUES, l)
            }),
            stage_busy: STAGES.map(|o| histogram!(STAGE_BUSY, with("stage", o))),
            queue: QUEUES.map(|o| gauge!(QUEUE_DEPTH, with("queue", o))),
            queue_max: QUEUES.map(|o| gauge!(QUEUE_DEPTH_MAX, with("queue", o))),
            max_seen: Mutex::new([0; 3]),
            duration: histogram!(DURATION, base.clone()),
            lock_wait: histogram!(LOCK_WAIT, base.clone()),
            running: gauge!(RUNNING, base.clone()),
            last_run: gauge!(LAST_RUN, base.clone()),
            last_success: gauge!(LAST_SUCCESS, base),
        };
        // Counters start at zero by being registered; gauges need a value to be exported.
        for g in m.queue.iter().chain(&m.queue_max) {
            g.set(0.0);
        }
        m.running.set(1.0);
        m.last_run.set(0.0);
        m.last_success.set(0.0);
        m
    }

    /// Copies the live counters into the metric handles (called by the sampler and at the end).
    pub fn sample(&self, c: &Counters) {
        let g = Counters::get;
        let files = [
            g(&c.blobs_new),
            g(&c.dedup_hits),
            g(&c.skipped),
            g(&c.excluded),
            g(&c.errors),
        ];
        let bytes = [
            g(&c.bytes_new),
            g(&c.bytes_dedup),
            g(&c.bytes_skipped),
            g(&c.bytes_excluded),
            g(&c.bytes_error),
        ];
        for (h, v) in self.files.iter().zip(files) {
            h.absolute(v);
        }
        for (h, v) in self.bytes.iter().zip(bytes) {
            h.absolute(v);
        }
        let links = [
            g(&c.link_hardlink),
            g(&c.link_rename),
            g(&c.link_copy),
            g(&c.link_reflink),
        ];
        for (h, v) in self.links.iter().zip(links) {
            h.absolute(v);
        }
        let fallbacks = [
            g(&c.fallback_exdev),
            g(&c.fallback_emlink),
            g(&c.fallback_eperm),
        ];
        for (h, v) in self.fallbacks.iter().zip(fallbacks) {
            h.absolute(v);
        }
        let issues = c.issue_counts();
        for (h, k) in self.issues.iter().zip(IssueKind::ALL) {
            h.absolute(issues.get(k));
        }
        let queues = [g(&c.queue_hash), g(&c.queue_place), g(&c.queue_collect)];
        let mut max = self
            .max_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for i in 0..3 {
            // A gauge briefly "below zero" (a consumer ran before the producer's add) wraps.
            let depth = if queues[i] > u64::MAX / 2 {
                0
            } else {
                queues[i]
            };
            self.queue[i].set(depth as f64);
            if depth > max[i] {
                max[i] = depth;
                self.queue_max[i].set(depth as f64);
            }
        }
    }

    /// Records the end of the run: final totals, its duration, whether it succeeded.
    pub fn finish(&self, c: &Counters, seconds: f64, success: bool) {
        self.sample(c);
        for q in &self.queue {
            q.set(0.0);
        }
        let g = Counters::get;
        let busy = [
            g(&c.walk_ns),
            g(&c.hash_ns),
            g(&c.place_ns),
            g(&c.manifest_ns),
        ];
        for (h, ns) in self.stage_busy.iter().zip(busy) {
            h.record(ns as f64 / 1e9);
        }
        self.duration.record(seconds);
        self.lock_wait
            .record(Counters::get(&c.lock_wait_ns) as f64 / 1e9);
        self.running.set(0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.last_run.set(now);
        self.last_success.set(if success { 1.0 } else { 0.0 });
    }
}

/// Copies [`Counters`] into one or more [`IngestMetrics`] every `period` on its own thread
/// until stopped. The stages never wait for it.
pub struct Sampler {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<JoinHandle<()>>,
}

impl Sampler {
    pub fn start(
        counters: Arc<Counters>,
        sinks: Arc<Vec<IngestMetrics>>,
        period: Duration,
    ) -> Sampler {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let s = stop.clone();
        let handle = std::thread::Builder::new()
            .name("vrift-metrics".into())
            .spawn(move || {
                let (lock, cv) = &*s;
                let mut stopped = lock
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                while !*stopped {
                    for m in sinks.iter() {
                        m.sample(&counters);
                    }
                    stopped = cv
                        .wait_timeout(stopped, period)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
            })
            .ok();
        Sampler { stop, handle }
    }

    /// Stops the thread (wakes it at once) and waits for it.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        cv.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.halt();
    }
}
