use std::io;
use std::path::PathBuf;

/// Every failure names the path it concerns, so a message on stderr is actionable on its own.
#[derive(thiserror::Error, Debug)]
pub enum CasError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: file changed while it was being ingested")]
    Changed { path: PathBuf },
    #[error("{path}: does not look like a vrift store (no blake3/ directory)")]
    NotAStore { path: PathBuf },
    #[error("{path}: registry is corrupt ({reason}); run `vrift registry --rebuild`")]
    RegistryCorrupt { path: PathBuf, reason: String },
    #[error("{path}: store lock is held by another process{holders}")]
    LockBusy { path: PathBuf, holders: String },
    #[error("{path} also holds {count} files vrift did not make ({names}): refusing to delete the store; move them out (or the store elsewhere) first")]
    ForeignFiles {
        path: PathBuf,
        count: usize,
        names: String,
    },
    #[error("gc --delete refused, nothing deleted: {reasons}")]
    GcRefused { reasons: String },
    #[error(transparent)]
    Manifest(#[from] vrift_manifest::ManifestError),
}

impl CasError {
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        CasError::Io {
            path: path.into(),
            source,
        }
    }

    /// The message without the path, for callers that already name the path themselves.
    pub fn reason(&self) -> String {
        match self {
            CasError::Io { source, .. } => source.to_string(),
            CasError::Changed { .. } => "file changed while it was being ingested".into(),
            other => other.to_string(),
        }
    }

    /// The raw OS error, for callers that pick a fallback (EXDEV, EMLINK, ENOSPC).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            CasError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

pub type Result<T, E = CasError> = std::result::Result<T, E>;
