//! `vrift run [--manifest M]... [--isolate] [--base B]... -- CMD...`: run CMD with the
//! `LD_PRELOAD` shim (`libvrift_shim.so`, see `shim/README.md`) serving the manifests' trees.
//! This module chooses the manifests; `vrift_run` runs the command on them.
//!
//! * Manifests: `--base` layers first, then `--manifest` layers (later ones win). With
//!   none: `./vrift.manifest`, else a transient ingest of the current directory (filters
//!   from `.vriftignore`, see `init.rs`) into the store and a temporary manifest.
//! * The shim is found in `VRIFT_SHIM` or next to the `vrift` binary.
//! * Writes land in an upper directory: `VRIFT_UPPER` if set (kept), else a temporary one
//!   removed when CMD ends.
//! * CMD is started through the shim's own exec logic (the library is `dlopen`ed here), so a
//!   CMD that is itself a virtual file (`node_modules/.bin/tsc`) works.
//! * `vrift run` exits with CMD's status (or re-raises the signal that killed it) and
//!   forwards SIGTERM, SIGHUP, SIGUSR1/2, SIGWINCH and user-sent SIGINT/SIGQUIT to it.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use vrift_pipeline::{ingest, Counters, IngestOptions};
use vrift_run::launcher::{absolute, temp_dir, Launch, TempDir};
use vrift_run::{signals, RunError};

use crate::commands::init::{read_filter, MANIFEST_FILE};
use crate::{Globals, Outcome};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Manifest whose tree CMD sees at its root path (repeatable; later ones win).
    /// Default: ./vrift.manifest, else a transient ingest of the current directory.
    #[arg(long = "manifest", short = 'm', value_name = "M")]
    pub manifest: Vec<PathBuf>,

    /// Run in rootless namespaces on a link farm instead of the shim (see README, "Isolation").
    #[arg(long)]
    pub isolate: bool,

    /// With --isolate: keep the throwaway upper layer (what CMD wrote) and print where it is.
    #[arg(long, requires = "isolate")]
    pub keep: bool,

    /// With --isolate: `loopback` (default) gives CMD a network namespace of its own with
    /// only 127.0.0.1 (it reaches neither the host's services nor the network); `host`
    /// shares the host's network.
    #[arg(long, value_enum, default_value_t = NetworkArg::Loopback, requires = "isolate")]
    pub network: NetworkArg,

    /// With --isolate: a host directory CMD may write, at its own path (repeatable): a cache
    /// kept across runs (`--bind /tmp` for jest's, `--bind ~/.cargo`) or a build's output.
    /// Everything else outside the view stays read-only.
    #[arg(long = "bind", value_name = "DIR", requires = "isolate")]
    pub bind: Vec<PathBuf>,

    /// With --isolate: the view is read-only (writes into it fail with EROFS; use --bind for
    /// output). Without --base its files are then looked up at native speed (no overlay).
    #[arg(long, requires = "isolate")]
    pub read_only: bool,

    /// In a project run (no --manifest: the current directory's `vrift.manifest`, or a
    /// transient ingest of it), what the command writes lands in the project directory, as
    /// it would without vrift. --ephemeral sends it to a throwaway layer instead.
    #[arg(long)]
    pub ephemeral: bool,

    /// Base layer below the manifests (repeatable).
    #[arg(long = "base", value_name = "B")]
    pub base: Vec<PathBuf>,

    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub cmd: Vec<OsString>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkArg {
    Loopback,
    Host,
}

/// The manifests to project, bottom first, plus what must be cleaned up afterwards.
fn manifests(g: &Globals, a: &RunArgs, cleanup: &mut Vec<TempDir>) -> Result<Vec<PathBuf>> {
    let mut list: Vec<PathBuf> = a.base.iter().chain(a.manifest.iter()).cloned().collect();
    if a.manifest.is_empty() {
        let local = PathBuf::from(MANIFEST_FILE);
        if local.is_file() {
            // The project's sources may have changed since `vrift init` (or the last run):
            // bring its manifest up to date first (a warm re-ingest: about a stat per file).
            refresh_project(g, &local)?;
            list.push(local);
        } else {
            list.push(transient_ingest(g, cleanup)?);
        }
    }
    let mut out = Vec::with_capacity(list.len());
    for p in list {
        let abs = absolute(&p)?;
        if abs.as_os_str().as_bytes().contains(&b':') {
            bail!("{}: manifest paths must not contain ':'", abs.display());
        }
        out.push(abs);
    }
    // Each is validated where it is used: by the link farm (`--isolate`), or as the sealed
    // copy the shim maps (`sealed_manifests`) — once, on the bytes that are then used.
    Ok(out)
}

/// Re-ingests the current directory into its `vrift.manifest` (copy mode: the tree is left as
/// it is; unchanged files are not read again).
fn refresh_project(g: &Globals, manifest: &Path) -> Result<()> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let mut opts = IngestOptions::new(cwd.clone(), manifest.to_path_buf());
    opts.mode = vrift_pipeline::Mode::Copy;
    opts.excludes = read_filter(&cwd)?;
    opts.keep_offloaded = true;
    let counters = Arc::new(Counters::default());
    let report = ingest(&opts, &g.store, &counters, |_| {
        crate::note!("vrift run: waiting for the store (or another ingest of this tree)");
    })
    .with_context(|| format!("refreshing {} failed", manifest.display()))?;
    if report.errors > 0 {
        super::print_issues(&report.details.issues, 5);
    }
    Ok(())
}

/// Ingests the current directory into the store (not registered) and returns the path of
/// a temporary manifest.
fn transient_ingest(g: &Globals, cleanup: &mut Vec<TempDir>) -> Result<PathBuf> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let dir = temp_dir("manifest")?;
    cleanup.push(TempDir(Some(dir.clone())));
    let out = dir.join("transient.manifest");
    let mut opts = IngestOptions::new(cwd.clone(), out.clone());
    opts.register = false;
    opts.reuse_previous = false;
    // The user's own project: left exactly as it is (no write bits stripped, no links).
    opts.mode = vrift_pipeline::Mode::Copy;
    opts.excludes = read_filter(&cwd)?;
    let counters = Arc::new(Counters::default());
    let report = ingest(&opts, &g.store, &counters, |_| {
        crate::note!("vrift run: waiting for the store (or another ingest of this tree)");
    })
    .with_context(|| format!("transient ingest of {} failed", cwd.display()))?;
    if report.errors > 0 {
        super::print_issues(&report.details.issues, 5);
    }
    Ok(out)
}

/// A progress line while a link farm is built (on a terminal only), taken off before CMD
/// starts.
fn farm_progress(enabled: bool) -> vrift_run::isolate::farm::BuildObserver {
    use std::sync::{Arc, Mutex};
    use vrift_run::isolate::farm::{BuildEvent, BuildObserver};
    let line: Mutex<Option<crate::progress::Progress>> = Mutex::new(None);
    BuildObserver(Arc::new(move |ev| {
        let mut line = line
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match ev {
            BuildEvent::Started { counters, total } => {
                let c = counters.clone();
                let eta = crate::progress::Eta::start();
                *line = Some(crate::progress::Progress::start_with(
                    enabled,
                    "link farm",
                    move || {
                        let done = vrift_pipeline::Counters::get(&c.files);
                        crate::progress::count_line(done, total, "files and symlinks", &eta)
                    },
                ));
            }
            BuildEvent::Ended => {
                if let Some(p) = line.take() {
                    p.finish();
                }
            }
        }
    }))
}

pub fn run(g: &Globals, a: &RunArgs) -> Result<Outcome> {
    if a.isolate {
        // `--base` alone is a whole root: no implicit manifest of the current directory.
        let mut cleanup: Vec<TempDir> = Vec::new();
        let list = if a.manifest.is_empty() && !a.base.is_empty() {
            a.base.clone()
        } else {
            manifests(g, a, &mut cleanup)?
        };
        let (bases, tops) = list.split_at(a.base.len());
        let mut binds = a.bind.clone();
        // A project run writes into the project, as under the shim: its directory is bound
        // over the view (which the refresh above just made equal to it) — unless the view
        // serves directories gone from disk (offloaded), which the bind would hide.
        if a.manifest.is_empty() && a.base.is_empty() && !a.ephemeral && !a.read_only {
            let cwd = std::env::current_dir().context("cannot read the current directory")?;
            match tops
                .last()
                .map(|m| vrift_run::isolate::offloaded_dirs(m, &cwd))
            {
                Some(Ok(0)) => binds.push(cwd),
                Some(Ok(n)) => eprintln!(
                    "vrift run --isolate: {n} directories of the project are served from the \
                     store (gone from disk): writes go to a throwaway layer; without --isolate \
                     they land in the project"
                ),
                Some(Err(e)) => return Err(e.into()),
                None => {}
            }
        }
        let opts = vrift_run::isolate::Options {
            keep: a.keep,
            network_host: a.network == NetworkArg::Host,
            binds,
            read_only: a.read_only,
            stats: g.verbose > 0,
            progress: Some(farm_progress(g.progress)),
        };
        let code = vrift_run::isolate::run_isolated(&g.store, bases, tops, &a.cmd, &opts);
        drop(cleanup);
        std::process::exit(code?);
    }
    let mut cleanup: Vec<TempDir> = Vec::new();
    let manifests = manifests(g, a, &mut cleanup)?;
    // A project run writes into the project, not into a layer that vanishes at exit.
    let through = (a.manifest.is_empty() && !a.ephemeral)
        .then(|| std::env::current_dir().ok())
        .flatten()
        .filter(|d| d.is_dir());
    let status = match vrift_run::launcher::launch(Launch {
        store: &g.store,
        manifests: &manifests,
        cmd: &a.cmd,
        through: through.clone(),
        cleanup,
        embedded_shim: Some(crate::shim::EMBEDDED),
    }) {
        Ok(s) => s,
        Err(RunError::Spawn { program, errno }) => {
            let err = std::io::Error::from_raw_os_error(errno);
            eprintln!("error: cannot run {}: {err}", program.display());
            std::process::exit(if errno == libc::ENOENT { 127 } else { 126 });
        }
        Err(e) => return Err(e.into()),
    };
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) && !crate::quiet() {
        match &through {
            Some(d) => eprintln!(
                "vrift run: writes went to the project directory {}",
                d.display()
            ),
            None => eprintln!("vrift run: writes went to a throwaway layer (discarded)"),
        }
    }
    if libc::WIFSIGNALED(status) {
        // Die the same way, so a shell sees what killed the command.
        signals::exit_like(status);
    }
    std::process::exit(signals::exit_code(status))
}

/// `vrift __exec-static VCWD EXE ARGV...`, the shim's way to run a static program on the
/// view (see `vrift_run::isolate::static_exec`). Never returns.
pub fn exec_static(args: &[OsString]) -> ! {
    let name = args.get(1).map_or_else(
        || "the program".to_string(),
        |p| p.to_string_lossy().into_owned(),
    );
    match vrift_run::isolate::static_exec::run(args) {
        Ok(status) => signals::exit_like(status),
        Err(e) => {
            eprintln!(
                "vrift: {name} is statically linked, so it cannot see the view through the shim, and running it in a namespace failed: {e}; run it with `vrift run --isolate`"
            );
            std::process::exit(126)
        }
    }
}
