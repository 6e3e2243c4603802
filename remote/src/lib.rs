//! The remote CAS tier: blobs and manifests on S3-compatible object storage (Amazon S3, Ceph
//! RGW, MinIO, Garage, Cloudflare R2, `rclone serve s3`), so CI runners share what one of
//! them ingested instead of each hashing the same `node_modules` again.
//!
//! * [`config`]: `s3://BUCKET/PREFIX`, `<store>/remote.toml`, AWS environment and profiles.
//! * [`keys`]: the key layout (blob keys mirror the local store: `blake3/ab/cd/<hex>_<size>.bin`).
//! * [`pack`], [`bundle`], [`packed`]: blobs travel in zstd-compressed packs with an index;
//!   a manifest travels as a compressed bundle that says where each of its blobs is.
//! * [`Remote::push`]: blobs the remote lacks, in new packs, then the manifest's bundle (last,
//!   so a manifest on the remote always has all its blobs; a killed push rerun skips what
//!   landed).
//! * [`Remote::pull`]: the bundle, then only the blobs missing locally, fetched with merged
//!   ranged GETs and each verified (size + BLAKE3 against its name) before it enters the
//!   store. Manifests of the first format (one object per blob) still pull.
//! * [`stats`] / [`metrics`]: counters of requests, bytes, retries and errors by op.
//!
//! The client is the `object_store` crate (Apache Arrow project) rather than the AWS SDK:
//! it builds in a fraction of the time (one crate over reqwest instead of ~80 smithy crates),
//! has SigV4, multipart, listing and retries with exponential backoff built in, and talks to
//! any S3 implementation with a plain endpoint setting. What it lacks, AWS profile files, is
//! read here with `rust-ini` (see [`config`]).
// Every dependency in Cargo.toml is used (tests' own come from dev-dependencies).
#![cfg_attr(not(test), deny(unused_crate_dependencies))]

pub mod bundle;
pub mod client;
pub mod config;
pub mod error;
mod extract;
pub mod gc;
pub mod keys;
pub mod metrics;
pub mod pack;
pub mod packed;
mod pull;
mod push;
pub mod restore;
pub mod stats;

use std::sync::Arc;

use object_store::aws::AmazonS3;

pub use config::{RemoteUrl, Settings};
pub use error::{RemoteError, Result};
pub use keys::Keys;
pub use pull::{PullOptions, PullReport};
pub use push::{CheckMode, PushOptions, PushReport};
pub use stats::RemoteStats;

/// One configured remote: the client, its key layout and the runtime that drives it. The
/// public API is blocking (the CLI is synchronous); the transfers inside run on a small
/// tokio runtime so many requests are in flight at once.
pub struct Remote {
    rt: tokio::runtime::Runtime,
    store: Arc<AmazonS3>,
    keys: Keys,
    settings: Settings,
    stats: Arc<RemoteStats>,
    /// The server answered a ranged GET with the whole object or `200` (`rclone serve s3`
    /// does): fetch whole packs from then on.
    no_ranges: std::sync::atomic::AtomicBool,
    /// The server answered a ranged GET with a part: ranges of one pack may go in parallel.
    ranges_ok: std::sync::atomic::AtomicBool,
}

impl Remote {
    pub fn connect(settings: Settings, stats: Arc<RemoteStats>) -> Result<Remote> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("vrift-remote")
            .enable_all()
            .build()
            .map_err(|e| RemoteError::Client {
                remote: settings.url.to_string(),
                detail: format!("cannot start the I/O runtime: {e}"),
            })?;
        let store = Arc::new(client::build(&settings, stats.clone())?);
        Ok(Remote {
            rt,
            store,
            keys: settings.url.keys(),
            settings,
            stats,
            no_ranges: std::sync::atomic::AtomicBool::new(false),
            ranges_ok: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn url(&self) -> String {
        self.settings.url.to_string()
    }

    /// `s3://BUCKET/KEY`, for messages.
    pub fn object_url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.settings.url.bucket)
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn stats(&self) -> &Arc<RemoteStats> {
        &self.stats
    }

    /// Turns object_store's error for `key` into ours: a missing object, refused
    /// credentials and everything else, on one line.
    fn error(&self, key: &str, op: &'static str, e: object_store::Error) -> RemoteError {
        let one_line =
            |s: String| server_reason(&s.split_whitespace().collect::<Vec<_>>().join(" "));
        match e {
            object_store::Error::NotFound { ref source, .. }
                if source.to_string().contains("NoSuchBucket") =>
            {
                RemoteError::NoBucket {
                    remote: self.url(),
                    bucket: self.settings.url.bucket.clone(),
                }
            }
            object_store::Error::NotFound { .. } => RemoteError::NotFound {
                key: key.to_string(),
            },
            object_store::Error::PermissionDenied { source, .. }
            | object_store::Error::Unauthenticated { source, .. } => RemoteError::Credentials {
                remote: self.url(),
                detail: one_line(source.to_string()),
            },
            other => RemoteError::Request {
                key: key.to_string(),
                op,
                detail: one_line(other.to_string()),
            },
        }
    }
}

/// object_store quotes the server's XML error body whole; `<Code>` and `<Message>` are what
/// a person needs, so the rest of the XML goes.
fn server_reason(s: &str) -> String {
    let tag = |t: &str| {
        let open = format!("<{t}>");
        let start = s.find(&open)? + open.len();
        let end = s[start..].find(&format!("</{t}>"))? + start;
        Some(s[start..end].to_string())
    };
    match (s.find("<?xml").or_else(|| s.find("<Error>")), tag("Code")) {
        (Some(xml), Some(code)) => {
            let msg = tag("Message").map(|m| format!(": {m}")).unwrap_or_default();
            format!("{}{code}{msg}", &s[..xml])
        }
        _ => s.to_string(),
    }
}

/// `key` as object_store's path type (our keys are plain ASCII segments already).
fn obj_path(key: &str) -> object_store::path::Path {
    object_store::path::Path::from(key)
}
