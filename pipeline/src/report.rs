//! Counters shared by the stages (read live by progress bars and metrics) and the final report.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
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
    /// Issues so far, per [`IssueKind`] (index: [`IssueKind::index`]).
    issue_counts: [AtomicU64; IssueKind::ALL.len()],
    issues: Mutex<Vec<Issue>>,
    excluded_paths: Mutex<Vec<PathBuf>>,
    /// Set once a stage thread panicked: the walk stops handing out work and the run ends
    /// with [`Counters::stage_failure`] as its error, publishing nothing.
    quit: AtomicBool,
    stage_failure: Mutex<Option<(&'static str, String)>>,
}

/// A problem with one path. Errors fail the run (exit 1) but never stop it; warnings do not.
#[derive(Debug, Clone, Serialize)]
pub struct Issue {
    pub path: PathBuf,
    pub message: String,
    pub severity: Severity,
    pub kind: IssueKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// What kind of problem a path had. The kinds are counted (summary, `--json`, the
/// `vrift_ingest_issues_total` metric), so an operator sees "3 unreadable" at a glance and a
/// dashboard can alert on one kind (a damaged blob repaired) without parsing messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueKind {
    /// Could not be opened, stat'ed or read (permissions, removed meanwhile, I/O error).
    Unreadable,
    /// Changed while it was read or linked (or stopped being a regular file): not stored.
    Changed,
    /// Open for writing by another process: not stored, left in place.
    Busy,
    /// The store could not take it (link or copy failed, or phantom mode could not move it).
    NotStored,
    /// A checkout could not write it.
    NotWritten,
    /// A fifo, socket or device: skipped.
    Special,
    /// A symlink to nothing (kept as it is).
    Dangling,
    /// Stored, but the file keeps its own copy instead of sharing the blob.
    OwnCopy,
    /// Stored, but the blob could not be sealed read-only (the store re-hashes it before use).
    Unsealed,
    /// The store held a damaged blob of this content: quarantined, replaced by this file.
    Repaired,
    /// About the run rather than one tree file (previous manifest not reused, phantom mode
    /// kept, the io backend fell back).
    Run,
}

impl IssueKind {
    pub const ALL: [IssueKind; 11] = [
        IssueKind::Unreadable,
        IssueKind::Changed,
        IssueKind::Busy,
        IssueKind::NotStored,
        IssueKind::NotWritten,
        IssueKind::Special,
        IssueKind::Dangling,
        IssueKind::OwnCopy,
        IssueKind::Unsealed,
        IssueKind::Repaired,
        IssueKind::Run,
    ];

    /// Errors fail the run; the rest are warnings.
    pub fn severity(self) -> Severity {
        match self {
            IssueKind::Unreadable
            | IssueKind::Changed
            | IssueKind::Busy
            | IssueKind::NotStored
            | IssueKind::NotWritten => Severity::Error,
            IssueKind::Special
            | IssueKind::Dangling
            | IssueKind::OwnCopy
            | IssueKind::Unsealed
            | IssueKind::Repaired
            | IssueKind::Run => Severity::Warning,
        }
    }

    /// The name in `--json` and in the metric's `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            IssueKind::Unreadable => "unreadable",
            IssueKind::Changed => "changed",
            IssueKind::Busy => "busy",
            IssueKind::NotStored => "not_stored",
            IssueKind::NotWritten => "not_written",
            IssueKind::Special => "special",
            IssueKind::Dangling => "dangling",
            IssueKind::OwnCopy => "own_copy",
            IssueKind::Unsealed => "unsealed",
            IssueKind::Repaired => "repaired",
            IssueKind::Run => "run",
        }
    }

    /// How a count of them reads in a summary ("2 unreadable").
    pub fn phrase(self) -> &'static str {
        match self {
            IssueKind::Unreadable => "unreadable",
            IssueKind::Changed => "changed while read",
            IssueKind::Busy => "open for writing elsewhere",
            IssueKind::NotStored => "not stored",
            IssueKind::NotWritten => "not written",
            IssueKind::Special => "special files skipped",
            IssueKind::Dangling => "dangling symlinks",
            IssueKind::OwnCopy => "kept their own copy",
            IssueKind::Unsealed => "blobs not sealed",
            IssueKind::Repaired => "damaged blobs replaced",
            IssueKind::Run => "about the run",
        }
    }

    pub fn index(self) -> usize {
        IssueKind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// Why one path failed: counted by its kind, the message says what happened.
pub type Failure = (IssueKind, String);

/// Issue counts per kind, in [`IssueKind::ALL`] order; what `--json` and the summary show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IssueCounts(pub [u64; IssueKind::ALL.len()]);

impl IssueCounts {
    pub fn get(&self, kind: IssueKind) -> u64 {
        self.0[kind.index()]
    }

    /// The non-zero kinds of one severity, as `(kind, count)`.
    pub fn of(&self, severity: Severity) -> impl Iterator<Item = (IssueKind, u64)> + '_ {
        IssueKind::ALL
            .into_iter()
            .filter(move |k| k.severity() == severity)
            .map(|k| (k, self.get(k)))
            .filter(|(_, n)| *n > 0)
    }

    /// "2 unreadable, 1 changed while read" (empty when there are none).
    pub fn describe(&self, severity: Severity) -> String {
        self.of(severity)
            .map(|(k, n)| format!("{n} {}", k.phrase()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Every kind, zero or not, under its `--json` name: a consumer never meets a missing key.
impl Serialize for IssueCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(IssueKind::ALL.len()))?;
        for k in IssueKind::ALL {
            m.serialize_entry(k.as_str(), &self.get(k))?;
        }
        m.end()
    }
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

    /// Records a problem with `path`; an error-kind one counts towards `errors` (exit 1).
    pub fn issue(
        &self,
        kind: IssueKind,
        path: impl Into<PathBuf>,
        message: impl std::fmt::Display,
    ) {
        let severity = kind.severity();
        if severity == Severity::Error {
            self.errors.fetch_add(1, Relaxed);
        }
        self.issue_counts[kind.index()].fetch_add(1, Relaxed);
        if let Ok(mut v) = self.issues.lock() {
            v.push(Issue {
                path: path.into(),
                message: message.to_string(),
                severity,
                kind,
            });
        }
    }

    /// Runs the body of one stage thread (`stage` names it: walk, hash, place, …). A panic —
    /// a bug — is caught here instead of unwinding through the stages' scope: it is recorded
    /// with the stage's name and the run quits, so the ingest ends with an error naming the
    /// stage rather than hanging (walkers waiting for a directory that will never be
    /// finished) or publishing a manifest that lacks the files the thread held.
    pub fn stage<R>(&self, stage: &'static str, body: impl FnOnce() -> R) -> Option<R> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
            Ok(r) => Some(r),
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(std::string::ToString::to_string)
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panicked".to_string());
                if let Ok(mut f) = self.stage_failure.lock() {
                    f.get_or_insert((stage, message));
                }
                self.quit.store(true, Relaxed);
                None
            }
        }
    }

    /// Whether a stage failed and the others should stop taking work.
    pub fn quitting(&self) -> bool {
        self.quit.load(Relaxed)
    }

    /// The first stage that failed, and its panic message.
    pub fn stage_failure(&self) -> Option<(&'static str, String)> {
        self.stage_failure.lock().ok().and_then(|f| f.clone())
    }

    /// The counts so far, per kind.
    pub fn issue_counts(&self) -> IssueCounts {
        IssueCounts(std::array::from_fn(|i| self.issue_counts[i].load(Relaxed)))
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

/// The summary of one ingest. The first twelve fields are the `--json` contract (then the
/// issue counts per kind).
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
    /// Problems per kind (errors and warnings), every kind present.
    pub issues: IssueCounts,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_are_counted_by_kind_and_errors_by_severity() {
        let c = Counters::default();
        c.issue(IssueKind::Unreadable, "/t/a", "cannot open: denied");
        c.issue(IssueKind::Unreadable, "/t/b", "cannot open: denied");
        c.issue(IssueKind::Changed, "/t/c", "changed");
        c.issue(IssueKind::Dangling, "/t/d", "dangling symlink to x");
        let n = c.issue_counts();
        assert_eq!(n.get(IssueKind::Unreadable), 2);
        assert_eq!(n.get(IssueKind::Dangling), 1);
        assert_eq!(
            Counters::get(&c.errors),
            3,
            "warnings do not count as errors"
        );
        assert_eq!(
            n.describe(Severity::Error),
            "2 unreadable, 1 changed while read"
        );
        assert_eq!(n.describe(Severity::Warning), "1 dangling symlinks");
        let issues = c.take_issues();
        assert_eq!(issues.len(), 4);
        assert_eq!(issues[3].severity, Severity::Warning);
        assert_eq!(issues[3].kind, IssueKind::Dangling);
    }

    #[test]
    fn every_kind_is_in_the_json_with_a_distinct_name() {
        let mut counts = IssueCounts::default();
        counts.0[IssueKind::Busy.index()] = 7;
        let v = serde_json::to_value(counts).unwrap();
        let m = v.as_object().unwrap();
        assert_eq!(m.len(), IssueKind::ALL.len());
        assert_eq!(m["busy"], 7);
        for (i, k) in IssueKind::ALL.into_iter().enumerate() {
            assert_eq!(k.index(), i);
            assert_eq!(m[k.as_str()], if k == IssueKind::Busy { 7 } else { 0 });
        }
    }
}
