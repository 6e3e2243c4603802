//! `vrift run --isolate`: CMD in rootless namespaces over a link farm of the manifests.
//!
//! * [`farm`]: the layered manifests materialized as hard links to blobs, cached per
//!   layer set under `<store>/farms/` (`vrift gc --farms` drops the cache).
//! * [`rundir`]: the per-run scratch directory (overlay upper/work, staging root) and its
//!   removal once the sandbox is gone.
//! * [`ns`]: the namespaces, mounts, `pivot_root`, CMD's privileges, signals, exit status.
//!
//! Without `--base` the host stays visible read-only and each manifest's tree appears at
//! its root path; with `--base` the layers (bases first, then manifests, later ones win)
//! are the whole root filesystem. Either way the farm is the read-only lower layer of an
//! overlay whose upper layer is thrown away (kept with `--keep`), so nothing CMD does
//! reaches a blob or the host — except in the directories given to bind (`--bind`, and a
//! project run's own directory), which CMD writes as it would without vrift.

pub mod farm;
pub mod ns;
pub mod rundir;
pub mod static_exec;
mod sys;

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{bail, Context, Result};
use vrift_cas::Cas;
use vrift_manifest::Manifest;

use farm::Layer;

/// Where a manifest's tree appears: its recorded root, normalized.
fn manifest_root(m: &Manifest, path: &Path) -> Result<Vec<u8>> {
    let r = m.root();
    if !r.starts_with(b"/") {
        bail!(
            "{}: its root {:?} is not an absolute path",
            path.display(),
            String::from_utf8_lossy(r)
        );
    }
    let mut v = r.to_vec();
    while v.len() > 1 && v.ends_with(b"/") {
        v.pop();
    }
    if v.split(|&b| b == b'/').any(|c| c == b"." || c == b"..") {
        bail!(
            "{}: its root {:?} is not a normalized path",
            path.display(),
            String::from_utf8_lossy(r)
        );
    }
    Ok(v)
}

fn os(b: &[u8]) -> PathBuf {
    PathBuf::from(std::ffi::OsStr::from_bytes(b))
}

/// Whether `p` is `anc` or below it (both normalized absolute byte paths).
fn is_under(p: &[u8], anc: &[u8]) -> bool {
    if anc == b"/" {
        return true;
    }
    p == anc || (p.starts_with(anc) && p.get(anc.len()) == Some(&b'/'))
}

/// The layers' roots that lie in no other one, sorted: one overlay each (a root inside
/// another one is part of the outer one's farm subtree).
fn top_roots(layers: &[Layer<'_>]) -> Vec<Vec<u8>> {
    let mut ats: Vec<Vec<u8>> = layers.iter().map(|l| l.at.clone()).collect();
    ats.sort();
    ats.dedup();
    ats.iter()
        .filter(|a| !ats.iter().any(|b| b != *a && is_under(a, b)))
        .cloned()
        .collect()
}

/// How an isolated run differs from the default sandbox.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Keep the throwaway upper layers and say where they are.
    pub keep: bool,
    /// Share the host's network instead of a loopback-only namespace.
    pub network_host: bool,
    /// Host directories CMD may write, at their own paths (`--bind`; a project run's
    /// directory): a cache a tool keeps across runs (jest's in `/tmp`, `~/.cargo`), a build's
    /// output. Everything else outside the view stays read-only.
    pub binds: Vec<PathBuf>,
    /// The view is read-only (writes fail with EROFS); in host mode the link farm is then
    /// bound as it is, without an overlay, so lookups cost what they do natively.
    pub read_only: bool,
    /// Print the set-up's timings on stderr (`-v`; also `VRIFT_ISOLATE_STATS`).
    pub stats: bool,
    /// Told when a link farm is built for this run, and when the build ends.
    pub progress: Option<farm::BuildObserver>,
}

/// The canonical path of each `--bind` directory (a symlinked path would be mounted where it
/// points, not where CMD looks), or an error naming the one that is not a directory, holds
/// the store (CMD could then change blobs, farms and this run's own layers) or lies in it.
fn bind_dirs(binds: &[PathBuf], store: &Path) -> Result<Vec<PathBuf>> {
    let store = std::fs::canonicalize(store).unwrap_or_else(|_| store.to_path_buf());
    let mut out = Vec::with_capacity(binds.len());
    for b in binds {
        let c = std::fs::canonicalize(b).with_context(|| format!("--bind {}", b.display()))?;
        if !c.is_dir() {
            bail!("--bind {}: not a directory", b.display());
        }
        if c == Path::new("/") {
            bail!("--bind /: the whole host would be writable; bind the directories CMD needs");
        }
        if store.starts_with(&c) || c.starts_with(&store) {
            bail!(
                "--bind {}: the store {} would be writable inside; bind a directory beside it",
                b.display(),
                store.display()
            );
        }
        out.push(c);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// `p` with its longest existing prefix resolved (symlinks, `..`): a root deleted from the
/// host keeps its missing tail, below the real path of what is left.
pub(crate) fn real_path(p: &Path) -> PathBuf {
    let mut tail = Vec::new();
    let mut at = p;
    loop {
        if let Ok(c) = std::fs::canonicalize(at) {
            return tail.iter().rev().fold(c, |acc: PathBuf, n| acc.join(n));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                tail.push(name.to_os_string());
                at = parent;
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// How many directories `manifest` (of the project at `dir`) holds that are gone from disk:
/// offloaded trees (`rm -rf node_modules` after an ingest) the view still serves. A project
/// run binds its directory over the view only when there are none, or they would vanish.
pub fn offloaded_dirs(manifest: &Path, dir: &Path) -> Result<u64> {
    let m = Manifest::open(manifest)
        .with_context(|| format!("cannot use manifest {}", manifest.display()))?;
    let mut n = 0;
    for e in m.iter().filter(|e| e.is_dir() && !e.path().is_empty()) {
        if !dir.join(os(e.path())).is_dir() {
            n += 1;
        }
    }
    Ok(n)
}

/// Runs `cmd` isolated; see the module docs. `bases` and `manifests` are bottom first.
/// Returns CMD's exit code (128+N if signal N killed it).
pub fn run_isolated(
    store: &Path,
    bases: &[PathBuf],
    manifests: &[PathBuf],
    cmd: &[OsString],
    opts: &Options,
) -> Result<i32> {
    let t0 = std::time::Instant::now();
    if cmd.is_empty() {
        bail!("no command given");
    }
    let binds = bind_dirs(&opts.binds, store)?;
    let cas = Cas::open_existing(store)
        .with_context(|| format!("no vrift store at {}", store.display()))?;
    let base_mode = !bases.is_empty();
    let paths: Vec<PathBuf> = bases.iter().chain(manifests).cloned().collect();
    let opened: Vec<Manifest> = paths
        .iter()
        .map(|p| Manifest::open(p).with_context(|| format!("cannot use manifest {}", p.display())))
        .collect::<Result<_>>()?;
    let mut layers = Vec::with_capacity(opened.len());
    for (i, (m, p)) in opened.iter().zip(&paths).enumerate() {
        let at = if i < bases.len() {
            b"/".to_vec()
        } else {
            manifest_root(m, p)?
        };
        if !base_mode && at == b"/" {
            bail!(
                "{}: its root is / — a whole root filesystem; give it with --base",
                p.display()
            );
        }
        layers.push(Layer { manifest: m, at });
    }
    let farm = farm::ensure(&cas, &layers, &paths, opts.progress.as_ref())?;
    let t_farm = t0.elapsed();

    // What to mount: in base mode the farm is the root; otherwise one overlay per top-level
    // manifest root (a root inside another one is part of the outer one's farm subtree).
    let mut tops: Vec<Vec<u8>> = Vec::new();
    if base_mode {
        tops.push(b"/".to_vec());
    } else {
        tops = top_roots(&layers);
    }
    let mut rd = rundir::RunDir::create(cas.root(), tops.len(), opts.keep)?;
    let mut overlays = Vec::with_capacity(tops.len());
    for (i, at) in tops.iter().enumerate() {
        let rel = at.strip_prefix(b"/").unwrap_or(at);
        let lower = if rel.is_empty() {
            farm.root.clone()
        } else {
            farm.root.join(os(rel))
        };
        // Mount where the path really is: a symlinked parent on the host would otherwise
        // lead the mount out of the new root.
        let at = os(at);
        let at = if base_mode { at } else { real_path(&at) };
        // The overlay's root directory shows the upper directory's mode: give it the farm's.
        if let Ok(md) = std::fs::metadata(&lower) {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(
                rd.upper(i),
                std::fs::Permissions::from_mode(md.permissions().mode() & 0o7777),
            );
        }
        overlays.push(ns::Overlay {
            at,
            lowers: vec![lower],
            upper: rd.upper(i),
            work: rd.work(i),
        });
    }
    // A manifest root gone from the host gets its mount point from a throwaway layer over its
    // nearest existing ancestor; inside a bound directory that ancestor is the host's own,
    // writable, directory, and the mount point would be left there.
    for o in &overlays {
        if let Some(b) = binds.iter().find(|b| o.at.starts_with(b) && !o.at.exists()) {
            bail!(
                "--bind {}: holds the manifest root {}, which is gone from the host (it would \
                 have to be created there); bind a directory beside it",
                b.display(),
                o.at.display()
            );
        }
    }
    // A layer that ships files under /tmp keeps them visible: /tmp is then the overlay's own
    // (just as throwaway); otherwise a fresh tmpfs.
    let tmpfs_tmp = !base_mode
        || std::fs::read_dir(farm.root.join("tmp")).map_or(true, |mut d| d.next().is_none());
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let plan = ns::Plan {
        staging: rd.staging(),
        scratch: rd.scratch(),
        base: base_mode,
        overlays,
        tmpfs_tmp,
        binds,
        read_only_view: opts.read_only,
        cwd,
        cmd: cmd.to_vec(),
        network_host: opts.network_host,
    };
    if opts.stats || std::env::var_os("VRIFT_ISOLATE_STATS").is_some() {
        let built = farm
            .built
            .as_ref()
            .map(|b| serde_json::to_value(b).unwrap_or_default());
        eprintln!(
            "{}",
            serde_json::json!({
                "farm": farm.dir.display().to_string(),
                "farm_built": built,
                "prepare_seconds": t_farm.as_secs_f64(),
                "setup_seconds": t0.elapsed().as_secs_f64(),
            })
        );
    }
    let result = ns::run(&plan);
    rd.teardown();
    if let Some(k) = &rd.kept {
        for (i, o) in plan.overlays.iter().enumerate() {
            eprintln!(
                "vrift: kept the upper layer of {} at {}",
                o.at.display(),
                k.join(i.to_string()).display()
            );
        }
    }
    drop(farm);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_path_resolves_what_exists_and_keeps_the_missing_tail() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, t.path().join("link")).unwrap();
        let base = std::fs::canonicalize(&real).unwrap();
        assert_eq!(
            real_path(&t.path().join("link/gone/app")),
            base.join("gone/app")
        );
        assert_eq!(real_path(&t.path().join("link")), base);
        assert_eq!(real_path(Path::new("/")), PathBuf::from("/"));
    }
}
