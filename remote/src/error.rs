use std::io;
use std::path::PathBuf;

/// Every failure names the key, URL or path it concerns, so one line on stderr says what to fix.
#[derive(thiserror::Error, Debug)]
pub enum RemoteError {
    #[error("invalid remote {url:?}: {reason} (expected s3://BUCKET[/PREFIX])")]
    BadUrl { url: String, reason: String },
    #[error(
        "no remote configured: pass --remote s3://BUCKET[/PREFIX], set VR_REMOTE, or put \
         url = \"s3://BUCKET/PREFIX\" in {config}"
    )]
    NotConfigured { config: PathBuf },
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("invalid manifest name {name:?}: {reason}")]
    BadName { name: String, reason: String },
    #[error(
        "{remote}: the server refused the credentials ({detail}); check AWS_ACCESS_KEY_ID / \
         AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws/credentials"
    )]
    Credentials { remote: String, detail: String },
    #[error("{remote}: cannot set up the S3 client: {detail}")]
    Client { remote: String, detail: String },
    #[error("{key}: {op} failed: {detail}")]
    Request {
        key: String,
        op: &'static str,
        detail: String,
    },
    #[error("{key}: not on the remote")]
    NotFound { key: String },
    #[error("{remote}: the bucket {bucket:?} does not exist (create it, or check the URL and AWS_ENDPOINT_URL)")]
    NoBucket { remote: String, bucket: String },
    #[error(
        "{key}: downloaded content does not match its name (got {got_size} bytes, BLAKE3 \
         {got_hash}); the remote copy is corrupt or truncated, nothing was stored"
    )]
    Corrupt {
        key: String,
        got_size: u64,
        got_hash: String,
    },
    #[error(
        "{path}: local blob does not match its name; run `vrift verify --repair` and ingest \
         again before pushing"
    )]
    LocalCorrupt { path: PathBuf },
    /// A save packing straight from the tree found a file changed since it was hashed.
    #[error("{path}: changed since it was hashed; the manifest was not pushed, save again")]
    TreeChanged { path: PathBuf },
    #[error("{key}: damaged pack: {detail}; nothing from it was stored")]
    BadPack { key: String, detail: String },
    #[error("{key}: not a valid manifest: {detail}")]
    BadManifest { key: String, detail: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{path}: blob of {entry} is missing from the local store (was it ingested into this \
         store?)"
    )]
    MissingLocalBlob { path: PathBuf, entry: String },
    #[error("{count} transfers failed; first: {first}")]
    Several {
        count: usize,
        first: Box<RemoteError>,
    },
    #[error(transparent)]
    Cas(#[from] vrift_cas::CasError),
    #[error(transparent)]
    Manifest(#[from] vrift_manifest::ManifestError),
    #[error(transparent)]
    Pipeline(#[from] vrift_pipeline::PipelineError),
}

impl RemoteError {
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        RemoteError::Io {
            path: path.into(),
            source,
        }
    }

    /// One error for a list of failures (`None` when there are none): the only one, or the
    /// first and how many there were.
    pub fn from_many(mut errors: Vec<RemoteError>) -> Option<RemoteError> {
        if errors.len() <= 1 {
            return errors.pop();
        }
        let count = errors.len();
        Some(RemoteError::Several {
            count,
            first: Box::new(errors.swap_remove(0)),
        })
    }

    /// Whether this failure is the caller's to fix in how vrift was invoked (exit 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            RemoteError::BadUrl { .. }
                | RemoteError::NotConfigured { .. }
                | RemoteError::BadName { .. }
        )
    }
}

pub type Result<T, E = RemoteError> = std::result::Result<T, E>;
