//! The corpora: where they live, rebuilding them from `bench/corpora/` with
//! `bench/make-corpus.sh`, and taking stock of a tree (counts and distinct contents) so that
//! vrift's own numbers can be checked against an independent count.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::exec::run_checked;

/// What is in a tree, counted without vrift.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub distinct_contents: u64,
}

/// Where a corpus lives unless `--corpus-dir` says otherwise: `$VRIFT_BENCH_CORPORA/NAME`,
/// else `<repo>/../corpora/NAME` (beside the repository, outside the work tree, so a
/// 500 MB `node_modules` never shows up in `git status`).
pub fn default_dir(repo: &Path, name: &str) -> PathBuf {
    match std::env::var_os("VRIFT_BENCH_CORPORA") {
        Some(root) => PathBuf::from(root).join(name),
        None => repo.join("..").join("corpora").join(name),
    }
}

/// Makes sure `dir/node_modules` holds corpus `name`: runs `bench/make-corpus.sh`, which
/// does nothing when the stamp matches and otherwise installs with `npm ci`. A directory
/// with a `node_modules` but no stamp was made by someone else on purpose (a custom tree
/// given with `--corpus-dir`) and is used as it is.
pub fn ensure(bench_dir: &Path, name: &str, dir: &Path) -> Result<PathBuf> {
    let tree = dir.join("node_modules");
    let stamped = dir.join(".corpus-stamp").exists();
    if tree.is_dir() && !stamped {
        eprintln!(
            "vrift-bench: {} has no .corpus-stamp; using it as it is",
            dir.display()
        );
    } else {
        let script = bench_dir.join("make-corpus.sh");
        run_checked(
            Command::new("bash")
                .arg(&script)
                .arg("--no-count")
                .arg(name)
                .arg(dir),
        )
        .with_context(|| format!("preparing corpus {name} in {}", dir.display()))?;
    }
    if !tree.is_dir() {
        bail!("{} is not a directory", tree.display());
    }
    Ok(std::fs::canonicalize(&tree)?)
}

/// Counts a tree and hashes every file with `b3sum` (the same parallel command as the
/// baseline, its listing kept this time). Doubles as the warm-up that puts the tree in
/// the page cache before the first timed round.
pub fn take_stock(
    tree: &Path,
    b3sum_cmd: &mut Command,
    scratch: &Path,
) -> Result<(Inventory, HashSet<String>)> {
    let (files, dirs, symlinks, bytes) = count(tree)?;

    let listing = scratch.join("b3sum-listing.txt");
    let out = File::create(&listing)?;
    run_checked(b3sum_cmd.stdout(out))?;
    let text = std::fs::read_to_string(&listing)?;
    let mut contents = HashSet::new();
    let mut listed = 0u64;
    for line in text.lines() {
        // b3sum escapes names holding `\` or a newline and marks such lines with a leading `\`.
        let line = line.strip_prefix('\\').unwrap_or(line);
        let Some(hash) = line.get(..64) else {
            bail!("unexpected b3sum output line: {line:?}");
        };
        contents.insert(hash.to_string());
        listed += 1;
    }
    std::fs::remove_file(&listing)?;
    if listed != files {
        bail!(
            "b3sum listed {listed} files but {} holds {files} regular files",
            tree.display()
        );
    }
    let inventory = Inventory {
        files,
        dirs,
        symlinks,
        bytes,
        distinct_contents: contents.len() as u64,
    };
    Ok((inventory, contents))
}

/// Regular files, directories (the root excluded), symlinks and bytes of regular files.
fn count(root: &Path) -> Result<(u64, u64, u64, u64)> {
    let (mut files, mut dirs, mut symlinks, mut bytes) = (0, 0, 0, 0);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let entry = entry?;
            let meta = entry.metadata()?;
            let ft = meta.file_type();
            if ft.is_dir() {
                dirs += 1;
                stack.push(entry.path());
            } else if ft.is_symlink() {
                symlinks += 1;
            } else if ft.is_file() {
                files += 1;
                bytes += meta.size();
            }
        }
    }
    Ok((files, dirs, symlinks, bytes))
}
