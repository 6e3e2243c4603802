//! What a user asks of an ingest. Names mirror the CLI flags in DESIGN.md section 2.

use std::path::PathBuf;

/// How a source file's bytes get into the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Hard-link the source into the store; the source stays (as the same inode).
    #[default]
    Solid,
    /// Move the source into the store; afterwards the tree exists only through its manifest.
    Phantom,
    /// Copy the content into the store (a clone where the file system can): the tree is left
    /// exactly as it was — modes, link counts, content. For trees that are not disposable
    /// (a project's own sources under `vrift run` or `vrift init`): an editor still saves in
    /// place, and root writing a file never writes the store.
    Copy,
    /// Hash and record only: nothing enters the store and the tree is left exactly as it was,
    /// so the manifest names blobs this store does not hold. For a tree whose content goes
    /// elsewhere: `restore` on a fresh runner packs it straight from the tree to the remote
    /// (a store there would cost a shard directory and a link per blob, and be thrown away).
    Index,
}

/// What is left at the source path after ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tier {
    /// Immutable assets: each source file becomes a symlink to its blob.
    Tier1,
    /// Originals stay regular files in place.
    #[default]
    Tier2,
}

/// Which system-call engine the place stage uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoBackend {
    /// Whichever measured faster on this machine (see bench/README.md).
    #[default]
    Auto,
    Uring,
    Threads,
}

#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub source: PathBuf,
    pub output: PathBuf,
    pub mode: Mode,
    pub tier: Tier,
    /// Worker threads per parallel stage; 0 = all cores.
    pub threads: usize,
    pub io_backend: IoBackend,
    /// Drop secrets (`.env*`, `*.pem`, keys) from the manifest; on by default.
    pub security_filter: bool,
    /// Extra user exclusion globs (gitignore-style, matched against the relative path).
    pub excludes: Vec<String>,
    /// Keep the list of excluded paths for `--show-excluded`.
    pub record_excluded: bool,
    /// Project name in the registry; defaults to the directory's name.
    pub name: Option<String>,
    /// Record the project in the store's registry (off for transient ingests).
    pub register: bool,
    /// Use the previous manifest at `output` to skip unchanged files.
    pub reuse_previous: bool,
    /// Keep the previous manifest's entries of directories gone from disk (see
    /// `manifest::keep_offloaded_entries`): refreshing a project's `vrift.manifest`.
    pub keep_offloaded: bool,
}

impl IngestOptions {
    pub fn new(source: impl Into<PathBuf>, output: impl Into<PathBuf>) -> Self {
        IngestOptions {
            source: source.into(),
            output: output.into(),
            mode: Mode::Solid,
            tier: Tier::Tier2,
            threads: 0,
            io_backend: IoBackend::Auto,
            security_filter: true,
            excludes: Vec::new(),
            record_excluded: false,
            name: None,
            register: true,
            reuse_previous: true,
            keep_offloaded: false,
        }
    }

    pub fn thread_count(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism()
                .map(std::num::NonZero::get)
                .unwrap_or(2)
        }
    }
}
