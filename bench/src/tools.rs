//! The external programs the baselines need, found (or installed) before anything is timed,
//! and the exact baseline command lines, built in one place so that what is timed and what
//! the report prints are the same commands.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::exec::run_checked;

/// Finds `b3sum` on `PATH` or in cargo's bin directory; if it is in neither, installs it with
/// `cargo install b3sum --locked` (crates.io, the official BLAKE3 command line tool), so a
/// fresh machine needs no manual step.
pub fn b3sum() -> Result<PathBuf> {
    if let Some(p) = find_b3sum() {
        return Ok(p);
    }
    eprintln!("vrift-bench: b3sum not found; running `cargo install b3sum --locked`");
    run_checked(Command::new("cargo").args(["install", "b3sum", "--locked"]))
        .context("installing b3sum")?;
    find_b3sum().context("b3sum still not found after `cargo install b3sum`")
}

fn find_b3sum() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|c| c.join("bin"));
    on_path
        .into_iter()
        .chain(cargo_bin)
        .map(|d| d.join("b3sum"))
        .find(|p| p.is_file())
}

/// Checks that the vrift binary exists and returns its absolute path.
pub fn vrift(path: &Path) -> Result<PathBuf> {
    if !path.is_file() {
        bail!(
            "no vrift binary at {} (build it with `cargo build --release -p vrift-cli`, or pass --vrift)",
            path.display()
        );
    }
    Ok(std::fs::canonicalize(path)?)
}

/// `cp -al SRC DST`: the floor for anything that hard-links every file of a tree.
pub fn cp_al(src: &Path, dst: &Path) -> Command {
    let mut c = Command::new("cp");
    c.arg("-al").arg(src).arg(dst);
    c
}

/// `find DIR -type f -printf '%s %T@\n'` (stdout to /dev/null): one stat per entry, the
/// floor for a warm re-ingest.
pub fn find_printf(tree: &Path) -> Command {
    let mut c = Command::new("find");
    c.arg(tree).args(["-type", "f", "-printf", "%s %T@\\n"]);
    c
}

/// Files per b3sum invocation: large enough that process start-up is noise (about 130
/// invocations for 64k files), small enough that `-P` keeps every core busy to the end.
pub const B3SUM_BATCH: u32 = 500;

/// `find DIR -type f -print0 | xargs -0 -P<jobs> -n 500 b3sum > /dev/null`: reads and
/// hashes every byte with all cores, the floor for a first ingest (which must do at least
/// that). With `keep_listing`, the listing goes to stdout instead of /dev/null.
pub fn b3sum_all(tree: &Path, jobs: usize, b3sum: &Path, keep_listing: bool) -> Command {
    // `$1` tree, `$2` parallelism, `$3` the b3sum binary: no quoting of paths needed.
    let mut script =
        format!(r#"find "$1" -type f -print0 | xargs -0 -P"$2" -n {B3SUM_BATCH} "$3""#);
    if !keep_listing {
        script.push_str(" > /dev/null");
    }
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(script)
        .arg("sh")
        .arg(tree)
        .arg(jobs.to_string())
        .arg(b3sum);
    c
}

/// How the b3sum baseline reads in the report (the `sh -c` wrapper spelled out).
pub fn b3sum_display(tree: &Path, jobs: usize) -> String {
    format!(
        "find {} -type f -print0 | xargs -0 -P{jobs} -n {B3SUM_BATCH} b3sum > /dev/null",
        crate::exec::shell_quote(&tree.to_string_lossy())
    )
}
