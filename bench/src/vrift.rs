//! Driving the `vrift` binary under test: its ingest command line, its `--json` summary,
//! and the checks that the summary matches what an independent count of the corpus says
//! (a fast ingest that skipped half the files would otherwise look like a win).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::exec::output_of;

/// The binary under test and the extra ingest arguments (`--vrift-arg`) given to every run.
pub struct Vrift {
    pub bin: PathBuf,
    pub extra_args: Vec<String>,
}

impl Vrift {
    /// `vrift --the-source-root STORE --json --no-progress ingest TREE -o MANIFEST [extra]`.
    /// `VR_THE_SOURCE` is cleared so a user's environment cannot redirect the store.
    pub fn ingest(&self, store: &Path, tree: &Path, manifest: &Path) -> Command {
        let mut c = Command::new(&self.bin);
        c.env_remove("VR_THE_SOURCE")
            .arg("--the-source-root")
            .arg(store)
            .args(["--json", "--no-progress", "ingest"])
            .arg(tree)
            .arg("-o")
            .arg(manifest)
            .args(&self.extra_args);
        c
    }

    /// `vrift --version`, for the report.
    pub fn version(&self) -> Option<String> {
        output_of(Command::new(&self.bin).arg("--version"))
    }
}

/// The one JSON object `vrift ingest --json` prints (issue 2 fixes these keys).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct IngestSummary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub blobs_new: u64,
    pub dedup_hits: u64,
    pub skipped: u64,
    pub excluded: u64,
    pub errors: u64,
    /// vrift's own measure of the ingest (excludes process start-up and exit).
    pub seconds: f64,
    pub files_per_sec: f64,
}

/// Reads the summary from vrift's stdout (the last line that parses, in case anything else
/// was printed first).
pub fn parse_summary(stdout: &str) -> Result<IngestSummary> {
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .with_context(|| format!("no ingest summary in vrift's output: {stdout:?}"))
}

/// What an ingest must report, from counting and hashing the corpus without vrift.
pub struct Expect {
    /// Regular files in the tree (vrift's `files + excluded`).
    pub files: u64,
    pub blobs_new: u64,
    pub dedup_hits: u64,
    pub skipped: u64,
}

impl Expect {
    /// First ingest of a tree whose `distinct` contents are all new to the store.
    pub fn first_ingest(files: u64, new_contents: u64) -> Self {
        Expect {
            files,
            blobs_new: new_contents,
            dedup_hits: files - new_contents,
            skipped: 0,
        }
    }

    /// Second ingest of an unchanged tree at the same `-o`: nothing read, nothing stored.
    pub fn warm_reingest(files: u64) -> Self {
        Expect {
            files,
            blobs_new: 0,
            dedup_hits: 0,
            skipped: files,
        }
    }
}

/// Every way `got` disagrees with `want`, as readable lines (empty when all is well).
/// With files excluded by the security filter the blob counts cannot be predicted from the
/// corpus alone, so only the file total is checked then.
pub fn check(got: &IngestSummary, want: &Expect) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expect = |what: &str, got: u64, want: u64| {
        if got != want {
            problems.push(format!("{what}: vrift reported {got}, expected {want}"));
        }
    };
    expect("errors", got.errors, 0);
    expect("files + excluded", got.files + got.excluded, want.files);
    if got.excluded == 0 {
        expect("blobs_new", got.blobs_new, want.blobs_new);
        expect("dedup_hits", got.dedup_hits, want.dedup_hits);
        expect("skipped", got.skipped, want.skipped);
    }
    problems
}
