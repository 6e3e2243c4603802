//! `vrift init [DIR]`: detect the project type, write the filter config (`.vriftignore`) and
//! `vrift.manifest`.
//!
//! `.vriftignore` is the project's filter config: one gitignore-style glob per line (`#`
//! starts a comment), with the same meaning as `vrift ingest --exclude GLOB`: a pattern
//! without `/` matches a name at any depth, a pattern with `/` (a leading `/` included) is
//! anchored at the project root, a trailing `/` is ignored. Version-control directories and
//! secrets are always left out by the ingest's built-in filters. `vrift ingest DIR`, `vrift
//! init` and the transient ingest of `vrift run` read it; an existing file is never
//! overwritten.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use vrift_pipeline::{ingest, Counters, IngestOptions};

use crate::format::thousands;
use crate::{Globals, Outcome};

/// File name of the filter config, in the project root.
pub const FILTER_FILE: &str = ".vriftignore";
/// File name of the project's manifest, in the project root.
pub const MANIFEST_FILE: &str = "vrift.manifest";

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Project directory (default: the current directory).
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// A kind of project `init` recognizes, with the build outputs it leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectKind {
    Cargo,
    Npm,
    Pip,
}

impl ProjectKind {
    pub fn name(self) -> &'static str {
        match self {
            ProjectKind::Cargo => "cargo",
            ProjectKind::Npm => "npm",
            ProjectKind::Pip => "pip",
        }
    }

    /// Build outputs and caches: not part of a source view. Dependency trees
    /// (`node_modules`, a virtualenv) are kept: serving them is the point.
    fn excludes(self) -> &'static [&'static str] {
        match self {
            ProjectKind::Cargo => &["/target"],
            ProjectKind::Npm => &[
                "/.next",
                "/.nuxt",
                "/.turbo",
                "/.parcel-cache",
                "/.cache",
                "/coverage",
                "/dist",
                "/build",
            ],
            ProjectKind::Pip => &[
                "__pycache__",
                "*.pyc",
                "/.pytest_cache",
                "/.mypy_cache",
                "/.ruff_cache",
                "/.tox",
                "/build",
                "/dist",
                "*.egg-info",
            ],
        }
    }
}

/// The project kinds found in `dir`.
pub fn detect(dir: &Path) -> Vec<ProjectKind> {
    let has = |f: &str| dir.join(f).exists();
    let mut out = Vec::new();
    if has("Cargo.toml") {
        out.push(ProjectKind::Cargo);
    }
    if has("package.json") {
        out.push(ProjectKind::Npm);
    }
    if has("pyproject.toml") || has("requirements.txt") || has("setup.py") || has("setup.cfg") {
        out.push(ProjectKind::Pip);
    }
    out
}

/// The text of a new `.vriftignore` for these kinds.
pub fn filter_text(kinds: &[ProjectKind]) -> String {
    let mut s = String::from(
        "# vrift filter config: paths left out of this project's manifest (vrift ingest, init, run).\n\
         # One gitignore-style glob per line, like `vrift ingest --exclude`: a pattern without '/'\n\
         # matches at any depth; one with '/' (a leading '/' included) is anchored at this directory.\n\
         # Version-control directories and secrets (.env*, *.pem, keys, ...) are always left out.\n",
    );
    if kinds.is_empty() {
        s.push_str("# No Cargo, npm or pip project detected.\n");
    }
    let mut seen: Vec<&str> = Vec::new();
    for k in kinds {
        s.push_str(&format!("\n# {} build outputs and caches\n", k.name()));
        for p in k.excludes() {
            if seen.contains(p) {
                continue;
            }
            seen.push(p);
            s.push_str(p);
            s.push('\n');
        }
    }
    s
}

/// The patterns of `dir/.vriftignore` (empty if there is none).
pub fn read_filter(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join(FILTER_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

pub fn run(g: &Globals, a: &InitArgs) -> Result<Outcome> {
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let dir = std::fs::canonicalize(&dir)
        .with_context(|| format!("{}: no such directory", dir.display()))?;
    if !dir.is_dir() {
        anyhow::bail!("{}: not a directory", dir.display());
    }
    let kinds = detect(&dir);
    let filter_path = dir.join(FILTER_FILE);
    let wrote_filter = if filter_path.exists() {
        false
    } else {
        std::fs::write(&filter_path, filter_text(&kinds))
            .with_context(|| format!("cannot write {}", filter_path.display()))?;
        true
    };
    let excludes = read_filter(&dir)?;
    let manifest = dir.join(MANIFEST_FILE);
    let mut opts = IngestOptions::new(dir.clone(), manifest.clone());
    opts.excludes = excludes.clone();
    // A project's own tree (sources, editors saving in place): copied into the store, left
    // exactly as it is.
    opts.mode = vrift_pipeline::Mode::Copy;
    let counters = Arc::new(Counters::default());
    let report = ingest(&opts, &g.store, &counters, |_| {
        crate::note!("waiting for the store lock held by another process");
    })
    .with_context(|| format!("ingest of {} failed", dir.display()))?;
    super::print_issues(&report.details.issues, 20);
    let kind_names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    if g.json {
        println!(
            "{}",
            crate::output::versioned(serde_json::json!({
                "dir": dir,
                "kinds": kind_names,
                "filter": filter_path,
                "filter_written": wrote_filter,
                "excludes": excludes,
                "manifest": manifest,
                "files": report.files,
                "dirs": report.dirs,
                "errors": report.errors,
            }))
        );
    } else {
        println!(
            "Project {} ({})",
            dir.display(),
            if kind_names.is_empty() {
                "no known project type".to_string()
            } else {
                kind_names.join(", ")
            }
        );
        println!(
            "  filter      {} ({}, {} patterns)",
            filter_path.display(),
            if wrote_filter { "written" } else { "kept" },
            excludes.len()
        );
        println!(
            "  manifest    {} ({} files, {} dirs, {} excluded)",
            manifest.display(),
            thousands(report.files),
            thousands(report.dirs),
            thousands(report.excluded)
        );
        println!("Run commands on it with: vrift run -- CMD");
    }
    Ok(if report.errors > 0 {
        Outcome::Failed
    } else {
        Outcome::Ok
    })
}
