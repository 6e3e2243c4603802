//! The one error type of this crate.
//!
//! Every variant names the file it is about, because a user with several projects
//! registered needs to know *which* manifest is broken (and the CLI prints these
//! errors verbatim).

use std::io;
use std::path::PathBuf;

/// Why a manifest could not be read or written.
#[derive(thiserror::Error, Debug)]
pub enum ManifestError {
    /// The operating system refused an operation on `path`.
    #[error("manifest {}: {source}", path.display())]
    Io {
        /// File (or directory) the failed operation was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The file does not start with `VRIFTMF\0`: it is not a manifest at all.
    #[error("manifest {}: bad magic (not a vrift manifest)", path.display())]
    BadMagic {
        /// The offending file.
        path: PathBuf,
    },

    /// Written by a newer (or unknown) format version that this build cannot read.
    #[error("manifest {}: unsupported format version {found} (this build reads version {})", path.display(), crate::format::VERSION)]
    UnsupportedVersion {
        /// The offending file.
        path: PathBuf,
        /// Version number found in the header.
        found: u32,
    },

    /// The file is shorter than its header says (interrupted copy, full disk, ...).
    #[error("manifest {}: truncated (expected {expected} bytes, found {found})", path.display())]
    Truncated {
        /// The offending file.
        path: PathBuf,
        /// Length the header announces (or the header length itself).
        expected: u64,
        /// Actual length.
        found: u64,
    },

    /// Header or payload bytes do not match the recorded checksum (bit rot, partial overwrite).
    #[error("manifest {}: checksum mismatch (file is corrupted)", path.display())]
    Checksum {
        /// The offending file.
        path: PathBuf,
    },

    /// Structurally invalid: archive validation failed, an invariant does not hold, or
    /// (when building) the input entries do not form a tree.
    #[error("manifest {}: invalid: {reason}", path.display())]
    Invalid {
        /// The offending file (for the builder: the root being described).
        path: PathBuf,
        /// Human-readable description of the first problem found.
        reason: String,
    },
}

impl ManifestError {
    /// The file this error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            ManifestError::Io { path, .. }
            | ManifestError::BadMagic { path }
            | ManifestError::UnsupportedVersion { path, .. }
            | ManifestError::Truncated { path, .. }
            | ManifestError::Checksum { path }
            | ManifestError::Invalid { path, .. } => path,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        ManifestError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        ManifestError::Invalid {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
