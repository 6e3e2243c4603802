use std::path::PathBuf;

/// Failures that stop an ingest as a whole. Per-file problems are not errors of this kind:
/// they are recorded in `Counters` and the run goes on.
#[derive(thiserror::Error, Debug)]
pub enum PipelineError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a directory or regular file")]
    NotIngestable { path: PathBuf },
    #[error("bad exclude pattern {pattern:?}: {reason}")]
    Pattern { pattern: String, reason: String },
    #[error("{path}: an interrupted phantom ingest of {root} must be finished first: run `vrift ingest --resume` with the same -o")]
    PendingJournal { path: PathBuf, root: PathBuf },
    #[error("{path}: {reason}")]
    Journal { path: PathBuf, reason: String },
    #[error("the store {store} could not take {failed} files ({why}; each is named above): no manifest written, {output} left as it was")]
    StoreFailed {
        store: PathBuf,
        failed: u64,
        why: String,
        output: PathBuf,
    },
    #[error("the store {store} is not writable ({reason}): nothing was ingested or changed")]
    StoreNotWritable { store: PathBuf, reason: String },
    #[error("the {stage} stage failed ({message}); this is a bug in vrift: nothing was published, {output} left as it was")]
    StageFailed {
        stage: &'static str,
        message: String,
        output: PathBuf,
    },
    #[error("io_uring is not available: {0}")]
    Uring(String),
    #[error(transparent)]
    Cas(#[from] vrift_cas::CasError),
    #[error(transparent)]
    Manifest(#[from] vrift_manifest::ManifestError),
}

impl PipelineError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PipelineError::Io {
            path: path.into(),
            source,
        }
    }
}
