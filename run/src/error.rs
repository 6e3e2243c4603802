//! The one error type of the crate: what failed, on which path, and why.
//!
//! Setting up a run fails in many small ways (a directory that cannot be made, a namespace the
//! kernel refuses, a manifest that does not validate); each step says what it was doing with
//! [`Context`], so the message reads as a chain — "cannot build the link farm: …: blob … is
//! missing" — and the command line prints it on one line.

use std::fmt;
use std::path::PathBuf;

/// Why a run could not be set up or carried out.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A step failed; `source` says why.
    #[error("{what}: {source}")]
    Context {
        what: String,
        #[source]
        source: Box<RunError>,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Manifest(#[from] vrift_manifest::ManifestError),
    #[error("{0}")]
    Cas(#[from] vrift_cas::CasError),
    #[error("{0}")]
    Ingest(#[from] vrift_pipeline::PipelineError),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// A string for the kernel held a NUL byte.
    #[error("{0}")]
    Nul(#[from] std::ffi::NulError),
    /// The command could not be started (`errno`): not found (exit 127) or not runnable (126).
    #[error("cannot run {}: {}", .program.display(), std::io::Error::from_raw_os_error(*.errno))]
    Spawn { program: PathBuf, errno: i32 },
    /// Anything else, said in words.
    #[error("{0}")]
    Msg(String),
}

pub type Result<T, E = RunError> = std::result::Result<T, E>;

impl RunError {
    pub fn msg(m: impl fmt::Display) -> RunError {
        RunError::Msg(m.to_string())
    }
}

/// Says what a step was doing when it failed (the same calls as `anyhow`'s, typed).
pub trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T>;
    fn with_context<S: fmt::Display>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<RunError>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| RunError::Context {
            what: what.to_string(),
            source: Box::new(e.into()),
        })
    }

    fn with_context<S: fmt::Display>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| RunError::Context {
            what: what().to_string(),
            source: Box::new(e.into()),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.ok_or_else(|| RunError::msg(what))
    }

    fn with_context<S: fmt::Display>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.ok_or_else(|| RunError::msg(what()))
    }
}

/// `return Err(RunError::Msg(format!(...)))`.
macro_rules! bail {
    ($($t:tt)*) => {
        return Err($crate::error::RunError::Msg(format!($($t)*)))
    };
}

/// `RunError::Msg(format!(...))`.
macro_rules! err {
    ($($t:tt)*) => {
        $crate::error::RunError::Msg(format!($($t)*))
    };
}

pub(crate) use {bail, err};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_read_as_a_chain() {
        let e: Result<()> = Err(std::io::Error::from_raw_os_error(libc::ENOENT))
            .context("cannot open /x")
            .context("cannot build the farm");
        assert_eq!(
            e.unwrap_err().to_string(),
            "cannot build the farm: cannot open /x: No such file or directory (os error 2)"
        );
    }
}
