//! Remote-traffic metrics through the `metrics` facade, declared with zero values for every
//! label so a dashboard panel never says "no data" because, say, nothing was retried.
//! Copied from [`RemoteStats`] once at the end of a command (push and pull are short).

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Label, Unit,
};

use crate::stats::{Op, RemoteStats, OPS};

pub const REQUESTS: &str = "vrift_remote_requests_total";
pub const RETRIES: &str = "vrift_remote_retries_total";
pub const ERRORS: &str = "vrift_remote_errors_total";
pub const BYTES: &str = "vrift_remote_bytes_total";
pub const BLOBS: &str = "vrift_remote_blobs_total";
pub const BLOB_BYTES: &str = "vrift_remote_blob_bytes_total";
pub const REQUEST_DURATION: &str = "vrift_remote_request_duration_seconds";
pub const DURATION: &str = "vrift_remote_duration_seconds";
pub const LAST_SUCCESS: &str = "vrift_remote_last_run_success";

/// `direction` values of [`BYTES`].
pub const DIRECTIONS: [&str; 2] = ["upload", "download"];
/// `outcome` values of [`BLOBS`] / [`BLOB_BYTES`].
pub const OUTCOMES: [&str; 4] = ["uploaded", "already_remote", "downloaded", "already_local"];
/// `command` values of [`DURATION`].
pub const COMMANDS: [&str; 2] = ["push", "pull"];

/// Request latency buckets (seconds): loopback answers in a millisecond, a far region in 100.
pub const REQUEST_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];
/// Whole push/pull durations (seconds).
pub const DURATION_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

pub fn describe() {
    describe_counter!(
        REQUESTS,
        Unit::Count,
        "S3 requests sent, retries included, by op: head, list, get, put, multipart (create, \
         part, complete, abort)"
    );
    describe_counter!(
        RETRIES,
        Unit::Count,
        "S3 requests that repeated a failed one (5xx, 429, timeout, connection error), by op"
    );
    describe_counter!(
        ERRORS,
        Unit::Count,
        "S3 requests that failed (transport error, 5xx, 429, or 4xx other than a 404 for a \
         lookup), by op; a retried request that then succeeded still counts once here"
    );
    describe_counter!(
        BYTES,
        Unit::Bytes,
        "Payload bytes sent to (upload) or received from (download) the remote"
    );
    describe_counter!(
        BLOBS,
        Unit::Count,
        "Blobs by outcome: uploaded / already_remote (push), downloaded / already_local (pull)"
    );
    describe_counter!(
        BLOB_BYTES,
        Unit::Bytes,
        "Bytes of the blobs in vrift_remote_blobs_total"
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Latency of S3 requests until the response headers, by op"
    );
    describe_histogram!(
        DURATION,
        Unit::Seconds,
        "Wall time of whole push and pull runs"
    );
    describe_gauge!(
        LAST_SUCCESS,
        "1 if the last push or pull (by command) succeeded, 0 otherwise"
    );
}

/// Handles to every remote series of one recorder.
pub struct RemoteMetrics {
    requests: [Counter; 5],
    retries: [Counter; 5],
    errors: [Counter; 5],
    bytes: [Counter; 2],
    blobs: [Counter; 4],
    blob_bytes: [Counter; 4],
    request_duration: [Histogram; 5],
    duration: Histogram,
    last_success: Gauge,
    command: Command,
}

impl RemoteMetrics {
    /// Declares every series of `command` on the current recorder, each with `labels` added.
    /// Only the running command's duration and success are declared: a pull's exposition has
    /// nothing to say about pushes.
    pub fn register(labels: &[(&'static str, String)], command: Command) -> RemoteMetrics {
        describe();
        let with = |k: &'static str, v: &'static str| -> Vec<Label> {
            let mut l: Vec<Label> = labels
                .iter()
                .map(|(k, v)| Label::new(*k, v.clone()))
                .collect();
            l.push(Label::new(k, v));
            l
        };
        let m = RemoteMetrics {
            requests: OPS.map(|o| counter!(REQUESTS, with("op", o))),
            retries: OPS.map(|o| counter!(RETRIES, with("op", o))),
            errors: OPS.map(|o| counter!(ERRORS, with("op", o))),
            bytes: DIRECTIONS.map(|d| counter!(BYTES, with("direction", d))),
            blobs: OUTCOMES.map(|o| counter!(BLOBS, with("outcome", o))),
            blob_bytes: OUTCOMES.map(|o| counter!(BLOB_BYTES, with("outcome", o))),
            request_duration: OPS.map(|o| histogram!(REQUEST_DURATION, with("op", o))),
            duration: histogram!(DURATION, with("command", COMMANDS[command as usize])),
            last_success: gauge!(LAST_SUCCESS, with("command", COMMANDS[command as usize])),
            command,
        };
        m.last_success.set(0.0);
        m
    }

    /// Records the numbers of one command. `durations` are the drained request latencies
    /// (shared by every recorder, hence passed in).
    pub fn finish(
        &self,
        stats: &RemoteStats,
        durations: &[(Op, f32)],
        seconds: f64,
        success: bool,
    ) {
        let g = RemoteStats::get;
        for i in 0..5 {
            self.requests[i].absolute(g(&stats.requests[i]));
            self.retries[i].absolute(g(&stats.retries[i]));
            self.errors[i].absolute(g(&stats.errors[i]));
        }
        self.bytes[0].absolute(g(&stats.bytes_up));
        self.bytes[1].absolute(g(&stats.bytes_down));
        let (moved, present) = match self.command {
            Command::Push => (0, 1),
            Command::Pull => (2, 3),
        };
        self.blobs[moved].absolute(g(&stats.blobs_moved));
        self.blob_bytes[moved].absolute(g(&stats.bytes_moved));
        self.blobs[present].absolute(g(&stats.blobs_present));
        self.blob_bytes[present].absolute(g(&stats.bytes_present));
        for (op, secs) in durations {
            self.request_duration[*op as usize].record(f64::from(*secs));
        }
        self.duration.record(seconds);
        self.last_success.set(if success { 1.0 } else { 0.0 });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Push = 0,
    Pull = 1,
}
