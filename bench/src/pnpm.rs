//! The pnpm baseline: `pnpm install --offline` of the corpus from a warm pnpm store, the way
//! a pnpm user's CI job gets `node_modules` from a cached store (pnpm hard-links files out of
//! its content-addressable store, much as vrift links them into its own).
//!
//! Set-up, once and untimed: the corpus's `package.json` + `package-lock.json` (from
//! `bench/corpora/NAME/`) become a pnpm project through `pnpm import` (which writes
//! `pnpm-lock.yaml` from the npm lock file, so both tools install the same versions); one
//! `pnpm install` from the registry fills the store. Each round then copies the project
//! files into an empty directory and times the offline install into it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::exec::{output_of, run_checked};

/// The pnpm row's tools and inputs, prepared once.
pub struct Pnpm {
    pub bin: PathBuf,
    /// Holds `package.json` and `pnpm-lock.yaml` only: what each round copies.
    pub template: PathBuf,
    pub store: PathBuf,
    pub info: PnpmInfo,
}

/// What the record says about the pnpm row.
#[derive(Debug, Clone, Serialize)]
pub struct PnpmInfo {
    pub version: String,
    /// Regular files in the `node_modules` pnpm makes (its layout: `.pnpm/` holds one copy
    /// of each package version, so usually fewer files than npm's tree). Its files/s is
    /// over this count.
    pub files: u64,
    pub lockfile: String,
}

/// Files copied into each round's fresh project.
const PROJECT_FILES: [&str; 2] = ["package.json", "pnpm-lock.yaml"];

/// Finds `pnpm` on `PATH`. When it is missing and `install` is set, installs it with
/// `npm i -g pnpm` first; when it is missing otherwise, returns `None` (the row is skipped).
pub fn find(install: bool) -> Result<Option<PathBuf>> {
    if let Some(p) = on_path("pnpm") {
        return Ok(Some(p));
    }
    if !install {
        return Ok(None);
    }
    eprintln!("vrift-bench: pnpm not found; running `npm i -g pnpm` (--install-pnpm)");
    run_checked(Command::new("npm").args(["i", "-g", "pnpm"]))
        .context("installing pnpm with `npm i -g pnpm` (needs npm and the npm registry)")?;
    on_path("pnpm")
        .map(Some)
        .context("pnpm still not on PATH after `npm i -g pnpm` (is npm's global bin dir on PATH?)")
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `pnpm ARGS` with the update check off (no network behind the timed command's back).
pub fn command(bin: &Path, dir: &Path) -> Command {
    let mut c = Command::new(bin);
    c.current_dir(dir)
        .env("npm_config_update_notifier", "false");
    c
}

/// The timed command: `pnpm install --offline --frozen-lockfile --ignore-scripts
/// --store-dir STORE --reporter=silent` in `project`.
pub fn install_offline(bin: &Path, project: &Path, store: &Path) -> Command {
    let mut c = command(bin, project);
    c.args([
        "install",
        "--offline",
        "--frozen-lockfile",
        "--ignore-scripts",
        "--reporter=silent",
        "--store-dir",
    ])
    .arg(store);
    c
}

/// How the timed command reads in the report.
pub fn install_offline_display() -> String {
    "cd PROJECT && pnpm install --offline --frozen-lockfile --ignore-scripts --reporter=silent --store-dir PNPM_STORE".into()
}

/// Untimed warm-up before each timed install, as for the other warm rows (this VM pages out
/// page cache idle for about a minute): one stat of every store file, and a read of the
/// store's index (the part pnpm reads rather than links: `index.db` and friends outside
/// `files/` in pnpm 10+, `*-index.json` files inside it in older versions).
pub fn warm_up(store: &Path) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(concat!(
            r#"find "$1" -type f -printf '%s %T@\n' > /dev/null && "#,
            r#"find "$1" -type f \( -name '*-index.json' -o ! -path '*/files/*' \) -exec cat {} + > /dev/null"#
        ))
        .arg("sh")
        .arg(store);
    c
}

/// Makes the pnpm project from the corpus definitions in `defs` (`package.json` +
/// `package-lock.json`) and fills a pnpm store from the registry, in `work`.
pub fn prepare(bin: &Path, defs: &Path, work: &Path) -> Result<Pnpm> {
    let version = output_of(command(bin, work).arg("--version"))
        .with_context(|| format!("{} --version failed", bin.display()))?;
    let template = work.join("pnpm-template");
    let store = work.join("pnpm-store");
    std::fs::create_dir_all(&template)?;
    for f in ["package.json", "package-lock.json"] {
        let from = defs.join(f);
        std::fs::copy(&from, template.join(f))
            .with_context(|| format!("copying {}", from.display()))?;
    }
    run_checked(command(bin, &template).arg("import"))
        .context("`pnpm import` of the corpus's package-lock.json")?;
    std::fs::remove_file(template.join("package-lock.json"))?;
    eprintln!("vrift-bench: filling the pnpm store from the registry (pnpm {version}, untimed)");
    run_checked(
        command(bin, &template)
            .args([
                "install",
                "--frozen-lockfile",
                "--ignore-scripts",
                "--reporter=silent",
                "--store-dir",
            ])
            .arg(&store),
    )
    .context("filling the pnpm store (pnpm install from the registry)")?;
    let files = count_files(&template.join("node_modules"))?;
    crate::fsops::remove_tree(&template.join("node_modules"))?;
    for f in PROJECT_FILES {
        if !template.join(f).is_file() {
            bail!("pnpm import left no {f} in {}", template.display());
        }
    }
    Ok(Pnpm {
        bin: bin.to_path_buf(),
        template,
        store,
        info: PnpmInfo {
            version,
            files,
            lockfile: format!(
                "pnpm import of {}",
                defs.join("package-lock.json").display()
            ),
        },
    })
}

impl Pnpm {
    /// A fresh project directory holding only the project files.
    pub fn new_project(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for f in PROJECT_FILES {
            std::fs::copy(self.template.join(f), dir.join(f))?;
        }
        Ok(())
    }
}

/// Regular files under `root` (symlinks not followed, not counted).
pub fn count_files(root: &Path) -> Result<u64> {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                n += 1;
            }
        }
    }
    Ok(n)
}
