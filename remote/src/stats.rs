//! Counters of remote traffic, bumped by the HTTP layer and the transfer loops; the CLI turns
//! them into a progress line, the JSON summary and Prometheus metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The `op` label: what an S3 request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Head = 0,
    List = 1,
    Get = 2,
    Put = 3,
    /// Create, upload-part, complete and abort of multipart uploads.
    Multipart = 4,
}

/// Label values of [`Op`], in discriminant order.
pub const OPS: [&str; 5] = ["head", "list", "get", "put", "multipart"];

impl Op {
    pub fn label(self) -> &'static str {
        OPS[self as usize]
    }
}

#[derive(Default, Debug)]
pub struct RemoteStats {
    /// HTTP requests sent, retries included.
    pub requests: [AtomicU64; 5],
    /// Requests that repeat one that failed (object_store's backoff loop).
    pub retries: [AtomicU64; 5],
    /// Requests that failed: transport errors, 5xx, 429, and 4xx except a 404 for a lookup.
    pub errors: [AtomicU64; 5],
    /// Payload bytes sent / received (blobs and manifests).
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,

    /// Distinct blobs the manifest references, and their bytes.
    pub blobs_total: AtomicU64,
    pub bytes_total: AtomicU64,
    /// Blobs found to be there already (on the remote for push, locally for pull).
    pub blobs_present: AtomicU64,
    pub bytes_present: AtomicU64,
    /// Blobs moved (uploaded by push, downloaded by pull).
    pub blobs_moved: AtomicU64,
    pub bytes_moved: AtomicU64,
    /// Blobs whose existence on the remote is known (the check's progress).
    pub blobs_checked: AtomicU64,

    /// Per-request latency until the response headers, for the duration histogram.
    durations: Mutex<Vec<(Op, f32)>>,
}

impl RemoteStats {
    /// `n` per second over `seconds`; 0 for a run too short to time (no NaN or inf in JSON).
    pub fn rate(n: u64, seconds: f64) -> f64 {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    }

    pub fn get(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }

    pub fn add(a: &AtomicU64, n: u64) {
        a.fetch_add(n, Ordering::Relaxed);
    }

    pub fn request(&self, op: Op) {
        Self::add(&self.requests[op as usize], 1);
    }

    pub fn retry(&self, op: Op) {
        Self::add(&self.retries[op as usize], 1);
    }

    pub fn error(&self, op: Op) {
        Self::add(&self.errors[op as usize], 1);
    }

    pub fn observe(&self, op: Op, d: Duration) {
        if let Ok(mut v) = self.durations.lock() {
            v.push((op, d.as_secs_f32()));
        }
    }

    /// The latencies recorded so far (drained: each is exported once).
    pub fn take_durations(&self) -> Vec<(Op, f32)> {
        self.durations
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }

    pub fn total(arr: &[AtomicU64; 5]) -> u64 {
        arr.iter().map(Self::get).sum()
    }
}
