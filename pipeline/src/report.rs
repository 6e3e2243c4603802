//! Counters shared by the stages (read live by progress bars and metrics) and the final report.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use serde::Serialize;

/// Live counters. Every stage bumps these with relaxed atomics; readers get a consistent
/// enough picture for a progress bar, and the final numbers once the stages have joined.
#[derive(Default)]
pub struct Counters {
    /// Entries seen by the walk (files, dirs, symlinks, specials).
    pub walked: AtomicU64,
    pub files: AtomicU64,
    pub dirs: AtomicU64,
    pub symlinks: AtomicU64,
    pub bytes: AtomicU64,
    pub hashed_files: AtomicU64,
    pub hashed_bytes: AtomicU64,
    pub blobs_new: AtomicU64,
    pub dedup_hits: AtomicU64,
    /// Unchanged since the previous manifest: neither read nor hashed.
    pub skipped: AtomicU64,
    pub excluded: AtomicU64,
    pub errors: AtomicU64,
    /// Bytes by outcome (metrics): stored as a new blob, already stored, unchanged since the
    /// previous manifest, excluded regular files, files that failed.
    pub bytes_new: AtomicU64,
    pub bytes_dedup: AtomicU64,
    pub bytes_skipped: AtomicU64,
    pub bytes_excluded: AtomicU64,
    pub bytes_error: AtomicU64,
    /// Time spent waiting for the shared store lock.
    pub lock_wait_ns: AtomicU64,
    /// Special files (fifo, socket, device) skipped with a warning.
    pub specials: AtomicU64,
    /// Duplicate content whose file keeps its own inode because its mode differs from the blob's.
    pub mode_conflicts: AtomicU64,
    pub link_hardlink: AtomicU64,
    pub link_rename: AtomicU64,
    pub link_copy: AtomicU64,
    pub link_reflink: AtomicU64,
    pub fallback_exdev: AtomicU64,
    pub fallback_emlink: AtomicU64,
    pub fallback_eperm: AtomicU64,
    /// Files the store could not take (full, read-only, failing): these fail the whole
    /// ingest, unlike problems with a file itself.
    pub store_failures: AtomicU64,
    /// Busy nanoseconds per stage (summed over that stage's threads).
    pub walk_ns: AtomicU64,
    pub hash_ns: AtomicU64,
    pub place_ns: AtomicU64,
    pub manifest_ns: AtomicU64,
    /// Items currently queued between stages.
    pub queue_hash: AtomicU64,
    pub queue_place: AtomicU64,
    pub queue_collect: AtomicU64,
    issues: Mutex<Vec<Issue>>,
    excluded_paths: Mutex<Vec<PathBuf>>,
}

/// A problem with one path. Errors fail the run (exit 1) but never stop it; warnings do not.
#[derive(Debug, Clone, Serialize)]
pub struct Issue {
    pub path: PathBuf,
    pub message: String,
    pub severity: Severity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    /// Queue gauges go down as a stage takes a batch off its input channel.
    pub fn sub_queue(c: &AtomicU64, n: u64) {
        c.fetch_sub(n, Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }

    pub fn error(&self, path: impl Into<PathBuf>, message: impl std::fmt::Display) {
        self.errors.fetch_add(1, Relaxed);
        self.push_issue(path.into(), message.to_string(), Severity::Error);
    }

    pub fn warn(&self, path: impl Into<PathBuf>, message: impl std::fmt::Display) {
        self.push_issue(path.into(), message.to_string(), Severity::Warning);
    }

    fn push_issue(&self, path: PathBuf, message: String, severity: Severity) {
        if let Ok(mut v) = self.issues.lock() {
            v.push(Issue {
                path,
                message,
                severity,
            });
        }
    }

    pub fn exclude(&self, path: PathBuf, record: bool) {
        self.excluded.fetch_add(1, Relaxed);
        if record {
            if let Ok(mut v) = self.excluded_paths.lock() {
                v.push(path);
            }
        }
    }

    pub fn take_issues(&self) -> Vec<Issue> {
        self.issues
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }

    pub fn take_excluded(&self) -> Vec<PathBuf> {
        let mut v = self
            .excluded_paths
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// The summary of one ingest. The first twelve fields are the `--json` contract.
#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub blobs_new: u64,
    pub dedup_hits: u64,
    pub skipped: u64,
    pub excluded: u64,
    pub errors: u64,
    pub seconds: f64,
    pub files_per_sec: f64,
    pub manifest: PathBuf,
    #[serde(skip)]
    pub details: ReportDetails,
}

/// Everything else a human summary, metrics or `--show-excluded` may want.
#[derive(Debug, Clone, Default)]
pub struct ReportDetails {
    pub source: PathBuf,
    pub store: PathBuf,
    pub project: Option<String>,
    pub hashed_files: u64,
    pub hashed_bytes: u64,
    pub specials: u64,
    pub mode_conflicts: u64,
    pub link_hardlink: u64,
    pub link_rename: u64,
    pub link_copy: u64,
    pub link_reflink: u64,
    pub fallback_exdev: u64,
    pub fallback_emlink: u64,
    pub fallback_eperm: u64,
    pub walk_seconds: f64,
    pub hash_seconds: f64,
    pub place_seconds: f64,
    pub manifest_seconds: f64,
    pub manifest_written: bool,
    pub resumed: bool,
    pub io_backend: &'static str,
    pub issues: Vec<Issue>,
    pub excluded_paths: Vec<PathBuf>,
}
