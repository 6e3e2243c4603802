//! The whole ingest, stage by stage: walk → filter → hash → place → manifest.
//!
//! Each stage is a pool of threads joined to the next by a bounded `flume` channel carrying
//! batches, so a slow stage pushes back instead of queueing the tree in memory. The filter
//! runs inside the walker threads (see `filter.rs`). The collect side runs on the calling
//! thread and owns the only unbounded thing: the list of entries for the manifest.

use std::path::{Path, PathBuf};
use std::time::Instant;

use vrift_cas::lock::{Holder, LockKind, StoreLock};
use vrift_cas::registry::{self, Registration};
use vrift_cas::Cas;
use vrift_manifest::FLAG_PHANTOM;

use crate::error::PipelineError;
use crate::filter::Filter;
use crate::hash::hash_stage;
use crate::manifest;
use crate::options::{IngestOptions, IoBackend, Mode};
use crate::phantom;
use crate::place::{place_stage, PlaceConfig};
use crate::reap;
use crate::reingest::{NotReused, Previous};
use crate::report::{Counters, IngestReport, IssueKind, ReportDetails};
use crate::walk::{walk, WalkConfig, WalkSinks};

/// What an ingest is waiting for (the caller tells the user).
pub enum Wait<'a> {
    /// The store lock, held by these processes (a `gc --delete` or `clean`).
    Store(&'a [Holder]),
    /// Another ingest of the same tree.
    Tree(&'a Path),
}

/// Locks the tree at `root` against other ingests of it (`flock` on its directory:
/// exclusive for phantom, shared otherwise), waiting if need be. Released on drop or death.
fn lock_tree(
    root: &Path,
    exclusive: bool,
    on_wait: &mut impl FnMut(Wait<'_>),
) -> Result<std::fs::File, PipelineError> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(root)
        .map_err(|e| PipelineError::io(root, e))?;
    let tried = if exclusive {
        f.try_lock()
    } else {
        f.try_lock_shared()
    };
    match tried {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            on_wait(Wait::Tree(root));
            let r = if exclusive { f.lock() } else { f.lock_shared() };
            r.map_err(|e| PipelineError::io(root, e))?;
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(PipelineError::io(root, e)),
    }
    Ok(f)
}

/// Runs one ingest into the store at `store_root`. Per-file problems are in the report
/// (`errors`, `details.issues`); only problems with the run as a whole are `Err`.
///
/// The steps, each a function below: find what to ingest and where the manifest goes
/// (`Target`), settle the mode, lock the tree and the store, finish an interrupted phantom
/// run, run the stages (`run_stages`: walk → hash → place → collect), publish the manifest
/// and register the project (`publish`), move a phantom tree's files (`move_phantom`), and
/// report.
pub fn ingest(
    opts: &IngestOptions,
    store_root: &Path,
    counters: &Counters,
    mut on_wait: impl FnMut(Wait<'_>),
) -> Result<IngestReport, PipelineError> {
    let started = Instant::now();
    let _sigio = crate::lease::SigioIgnored::new();
    let fd_limit = raise_fd_limit();
    let target = Target::resolve(opts)?;
    let mode = settle_mode(opts, &target, counters)?;
    // The io_uring engine links (solid mode); other modes place on threads. Refused (not
    // built, or no kernel support) before anything is locked or touched.
    let use_uring = mode == Mode::Solid
        && match opts.io_backend {
            IoBackend::Threads => false,
            IoBackend::Uring => {
                crate::uring::available()?;
                true
            }
            IoBackend::Auto => AUTO_USES_URING && crate::uring::available().is_ok(),
        };
    let threads = opts.thread_count();
    // One phantom ingest of a tree at a time: two would move the same files and each lose
    // entries. Solid ingests of one tree may run together (they only link).
    let _tree_lock = lock_tree(&target.root, mode == Mode::Phantom, &mut on_wait)?;
    let cas = Cas::open(store_root)?;
    // Before any source file is touched (solid mode strips write bits, phantom moves files).
    cas.check_writable()
        .map_err(|(path, e)| PipelineError::StoreNotWritable {
            store: cas.root().to_path_buf(),
            reason: format!("{}: {e}", path.display()),
        })?;
    let lock_started = Instant::now();
    let _lock = StoreLock::acquire(cas.root(), LockKind::Shared, true, |h| {
        on_wait(Wait::Store(h));
    })?;
    Counters::add(
        &counters.lock_wait_ns,
        lock_started.elapsed().as_nanos() as u64,
    );

    let mut details = ReportDetails {
        source: target.root.clone(),
        store: cas.root().to_path_buf(),
        ..Default::default()
    };
    details.resumed = finish_interrupted(&cas, &target, threads, counters)?;

    let load_previous = || match Previous::load(&target.output, &target.root, cas.blob_dir()) {
        Ok(p) => Some(p),
        Err(NotReused::Unreadable(why)) => {
            counters.issue(
                IssueKind::Run,
                &target.output,
                format!("previous manifest not reused: {why}"),
            );
            None
        }
        Err(NotReused::Missing | NotReused::OtherRoot) => None,
    };
    // The re-ingest cache (skip unchanged files), unless --no-cache.
    let previous = if opts.reuse_previous {
        load_previous()
    } else {
        None
    };
    // A phantom tree's previous manifest is kept whatever the cache says: its entries of
    // moved files are carried over (they are not on disk to be walked).
    let phantom_previous = if mode == Mode::Phantom && previous.is_none() {
        load_previous()
    } else {
        None
    };

    let filter = filter_for(opts, &target, &cas)?;
    details.io_backend = if use_uring { "uring" } else { "threads" };

    let collected = run_stages(&Stages {
        target: &target,
        cas: &cas,
        mode,
        opts,
        threads,
        filter: &filter,
        previous: previous.as_ref(),
        use_uring,
        fd_limit,
        counters,
    })?;

    // The store could not take some files (full, read-only): the ingest fails as a whole and
    // nothing is published, so no one restores a tree missing those files.
    let failed = Counters::get(&counters.store_failures);
    if failed > 0 {
        return Err(PipelineError::StoreFailed {
            store: cas.root().to_path_buf(),
            failed,
            why: "out of space, read-only or failing".into(),
            output: target.output,
        });
    }

    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| registry::default_name(&target.root));
    // A project is a promise that the store holds its blobs: an index-only ingest makes none.
    let register = opts.register && mode != Mode::Index;
    let published = publish(
        &cas,
        &target,
        mode,
        collected,
        previous,
        phantom_previous,
        opts.keep_offloaded,
        register.then_some(name.as_str()),
        counters,
    )?;
    details.manifest_written = published.written;
    let mut registered = published.registered;
    if mode == Mode::Phantom {
        move_phantom(
            &cas,
            &target,
            opts.tier,
            threads,
            &name,
            published.totals,
            counters,
        )?;
        registered = true;
    } else if register && !registered {
        registry::register(
            cas.root(),
            &Registration {
                name: &name,
                source: &target.root,
                manifest: &target.output,
                files: published.totals.0,
                bytes: published.totals.1,
            },
        )?;
        registered = true;
    }
    if registered {
        details.project = Some(name);
    }
    Ok(report(started, target.output, details, counters))
}

/// What an ingest reads and writes, resolved and checked before anything is touched.
struct Target {
    /// The directory (or single file) named on the command line, canonical.
    start: PathBuf,
    /// What manifest paths are relative to: `start`, or a single file's parent.
    root: PathBuf,
    /// The manifest to write, absolute.
    output: PathBuf,
}

impl Target {
    fn resolve(opts: &IngestOptions) -> Result<Target, PipelineError> {
        let start =
            std::fs::canonicalize(&opts.source).map_err(|e| PipelineError::io(&opts.source, e))?;
        let md = std::fs::metadata(&start).map_err(|e| PipelineError::io(&start, e))?;
        let root: PathBuf = if md.is_dir() {
            start.clone()
        } else if md.is_file() {
            start.parent().unwrap_or(Path::new("/")).to_path_buf()
        } else {
            return Err(PipelineError::NotIngestable { path: start });
        };
        let output = absolute(&opts.output)?;
        // Fail before any file is touched, not after the whole tree was linked.
        match output.parent().map(std::fs::metadata) {
            Some(Ok(m)) if m.is_dir() => {}
            Some(Ok(_)) | None => {
                return Err(PipelineError::io(
                    &output,
                    std::io::Error::new(
                        std::io::ErrorKind::NotADirectory,
                        "parent of the output is not a directory",
                    ),
                ));
            }
            Some(Err(e)) => return Err(PipelineError::io(output.parent().unwrap_or(&output), e)),
        }
        if output.is_dir() {
            return Err(PipelineError::io(
                &output,
                std::io::Error::new(
                    std::io::ErrorKind::IsADirectory,
                    "output must be a file path, not a directory",
                ),
            ));
        }
        Ok(Target {
            start,
            root,
            output,
        })
    }
}

/// The mode the run uses. Phantom is a property of the output: once it describes a phantom
/// tree (or an interrupted phantom run left its journal), its moved files exist only through
/// that manifest, and a plain re-ingest would drop them, so the ingest goes on in phantom
/// mode; an index-only one, which stores nothing, is refused.
fn settle_mode(
    opts: &IngestOptions,
    target: &Target,
    counters: &Counters,
) -> Result<Mode, PipelineError> {
    let invalid = |path: &Path, why: &str| {
        PipelineError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_string()),
        )
    };
    let phantom_output = output_is_phantom(&target.output, &target.root);
    if opts.mode == Mode::Index && phantom_output {
        return Err(invalid(
            &target.output,
            "describes a phantom tree (or an interrupted phantom ingest); an index-only \
             ingest cannot write to it",
        ));
    }
    let mode = if opts.mode != Mode::Phantom && phantom_output {
        counters.issue(
            IssueKind::Run,
            &target.output,
            "describes a phantom tree (its moved files exist only in the store): ingesting in \
             phantom mode to keep them",
        );
        Mode::Phantom
    } else {
        opts.mode
    };
    if matches!(mode, Mode::Copy | Mode::Index) && opts.tier == crate::Tier::Tier1 {
        return Err(invalid(
            &target.root,
            "--tier tier1 replaces files by symlinks; --mode copy leaves the tree as it is",
        ));
    }
    Ok(mode)
}

/// An interrupted phantom ingest of this output is finished before anything else, so its
/// moved files are never mistaken for deleted ones. True if there was one.
fn finish_interrupted(
    cas: &Cas,
    target: &Target,
    threads: usize,
    counters: &Counters,
) -> Result<bool, PipelineError> {
    let Some(j) = phantom::read_journal(&target.output)? else {
        return Ok(false);
    };
    if j.root != target.root {
        return Err(PipelineError::PendingJournal {
            path: phantom::journal_path(&target.output),
            root: j.root,
        });
    }
    let tier = if j.tier1 {
        crate::Tier::Tier1
    } else {
        crate::Tier::Tier2
    };
    phantom::move_phase(cas, &target.output, tier, threads, counters)?;
    phantom::remove_journal(&target.output)?;
    Ok(true)
}

/// The user's filter, plus vrift's own files, which are never part of the tree: the
/// manifest, its journal, and the store itself when it lives inside the source (ingesting its
/// lock files would deadlock).
fn filter_for(opts: &IngestOptions, target: &Target, cas: &Cas) -> Result<Filter, PipelineError> {
    let mut filter = Filter::new(opts.security_filter, true, &opts.excludes)?;
    for own in [
        target.output.clone(),
        phantom::journal_path(&target.output),
        cas.root().to_path_buf(),
    ] {
        if let Ok(rel) = own.strip_prefix(&target.root) {
            filter.ignore_path(rel);
        }
    }
    Ok(filter)
}

/// Everything the stages share.
struct Stages<'a> {
    target: &'a Target,
    cas: &'a Cas,
    mode: Mode,
    opts: &'a IngestOptions,
    threads: usize,
    filter: &'a Filter,
    previous: Option<&'a Previous>,
    use_uring: bool,
    fd_limit: u64,
    counters: &'a Counters,
}

/// Walk → hash → place → collect: each stage a pool of threads (collect: this thread), joined
/// by bounded channels. A stage thread that panics (a bug) ends the run with an error naming
/// the stage: what it held never reached the manifest, so none may be published.
fn run_stages(st: &Stages<'_>) -> Result<manifest::Collected, PipelineError> {
    let (threads, counters, root) = (st.threads, st.counters, &st.target.root);
    let cap = threads.max(1) * 2;
    let (hash_tx, hash_rx) = flume::bounded(cap);
    let (place_tx, place_rx) = flume::bounded(cap);
    let (done_tx, done_rx) = flume::bounded(cap * 4);
    // Each worker holds the only receivers of its input: when a stage dies (a panic), its
    // channel disconnects and the stage before it stops at its next send instead of waiting
    // forever for room.
    let hash_rxs: Vec<_> = (0..threads).map(|_| hash_rx.clone()).collect();
    let place_rxs: Vec<_> = (0..threads).map(|_| place_rx.clone()).collect();
    drop((hash_rx, place_rx));
    let walk_cfg = WalkConfig {
        start: &st.target.start,
        root,
        threads,
        filter: st.filter,
        previous: st.previous,
        blob_dir: st.cas.blob_dir(),
        counters,
        record_excluded: st.opts.record_excluded,
    };
    let collected = std::thread::scope(|s| {
        {
            let sinks = WalkSinks {
                to_hash: hash_tx,
                done: done_tx.clone(),
            };
            let walk_cfg = &walk_cfg;
            s.spawn(move || counters.stage("walk", || walk(walk_cfg, sinks)));
        }
        for rx in hash_rxs {
            let tx = place_tx.clone();
            s.spawn(move || counters.stage("hash", || hash_stage(rx, tx, root, counters)));
        }
        drop(place_tx);
        let (reap_tx, reap_rx) = flume::bounded(reap::backlog(st.fd_limit));
        for _ in 0..reap::REAPERS {
            let rx = reap_rx.clone();
            s.spawn(move || counters.stage("reap", || reap::reap_stage(rx)));
        }
        drop(reap_rx);
        let place_cfg = PlaceConfig {
            cas: st.cas,
            mode: st.mode,
            tier: st.opts.tier,
            counters,
            root,
            reaper: reap_tx,
        };
        // The place workers get a scope of their own: when they are done, `place_cfg` (and
        // with it the reapers' channel) goes away, so the reapers finish too.
        let collected = std::thread::scope(|inner| {
            for rx in place_rxs {
                let tx = done_tx.clone();
                let cfg = &place_cfg;
                if st.use_uring {
                    inner.spawn(move || {
                        counters.stage("place", || {
                            if let Err(e) = crate::uring::place_stage(rx.clone(), tx.clone(), cfg) {
                                // A ring that cannot be set up in this thread: serve on threads.
                                cfg.counters.issue(IssueKind::Run, cfg.cas.root(), e);
                                place_stage(rx, tx, cfg);
                            }
                        })
                    });
                } else {
                    inner.spawn(move || counters.stage("place", || place_stage(rx, tx, cfg)));
                }
            }
            drop(done_tx);
            counters.stage("manifest", || manifest::collect(done_rx, counters))
        });
        drop(place_cfg);
        collected
    });
    match (collected, counters.stage_failure()) {
        (Some(c), None) => Ok(c),
        (_, failure) => {
            let (stage, message) = failure.unwrap_or(("manifest", "no result".into()));
            Err(PipelineError::StageFailed {
                stage,
                message,
                output: st.target.output.clone(),
            })
        }
    }
}

/// What publishing did.
struct Published {
    /// Files with content and their bytes, as the registry records them.
    totals: (u64, u64),
    /// A new manifest was written (not the previous one kept as it was).
    written: bool,
    /// The project is registered already.
    registered: bool,
}

/// Writes the manifest atomically — or keeps the previous one when nothing changed — and,
/// for a solid tree, registers the project first (`register`: its name), so a failure there
/// leaves `output` as it was. A phantom manifest is written before any file moves (it is
/// then the tree's only record); [`move_phantom`] registers it.
#[allow(clippy::too_many_arguments)]
fn publish(
    cas: &Cas,
    target: &Target,
    mode: Mode,
    collected: manifest::Collected,
    previous: Option<Previous>,
    phantom_previous: Option<Previous>,
    keep_offloaded: bool,
    register: Option<&str>,
    counters: &Counters,
) -> Result<Published, PipelineError> {
    let flags = if mode == Mode::Phantom {
        FLAG_PHANTOM
    } else {
        0
    };
    let registration = |name, files, bytes| Registration {
        name,
        source: &target.root,
        manifest: &target.output,
        files,
        bytes,
    };
    if mode != Mode::Phantom && collected.is_unchanged(previous.as_ref(), flags) {
        // Nothing changed: the previous manifest is the answer, byte for byte.
        let t = Instant::now();
        let m = previous.as_ref().map(super::reingest::Previous::manifest);
        let totals = m
            .into_iter()
            .flat_map(vrift_manifest::Manifest::iter)
            .filter(|e| e.kind().has_content())
            .fold((0u64, 0u64), |(f, b), e| (f + 1, b + e.size()));
        Counters::add(&counters.manifest_ns, t.elapsed().as_nanos() as u64);
        let mut registered = false;
        // The manifest is the previous one, validated and in memory already.
        if let (Some(name), Some(p)) = (register, previous.as_ref()) {
            registry::register_bytes(
                cas.root(),
                &registration(name, totals.0, totals.1),
                p.manifest().as_bytes(),
            )?;
            registered = true;
        }
        return Ok(Published {
            totals,
            written: false,
            registered,
        });
    }
    let mut entries = collected.into_entries(previous.as_ref(), &target.root);
    if mode == Mode::Phantom {
        if let Some(p) = previous.as_ref().or(phantom_previous.as_ref()) {
            manifest::keep_phantom_entries(&mut entries, p);
        }
    }
    if keep_offloaded {
        if let Some(p) = previous.as_ref() {
            manifest::keep_offloaded_entries(&mut entries, p);
        }
    }
    let totals = entries
        .iter()
        .filter(|e| e.kind.has_content())
        .fold((0u64, 0u64), |(f, b), e| (f + 1, b + e.size));
    let built = manifest::build(entries, &target.root, flags, previous.as_ref(), counters)?;
    drop(previous);
    let mut registered = false;
    let written = built.is_some();
    if let Some(image) = built {
        if let (Some(name), true) = (register, mode != Mode::Phantom) {
            registry::register_bytes(cas.root(), &registration(name, totals.0, totals.1), &image)?;
            registered = true;
        }
        vrift_manifest::write_file_atomic(&target.output, &image)?;
    }
    Ok(Published {
        totals,
        written,
        registered,
    })
}

/// Phantom mode, once the manifest is durable: the files move into the store and the
/// project is registered (always: the moved files exist only in the store now, and only a
/// registered project, or the pending root held meanwhile, keeps gc off them).
fn move_phantom(
    cas: &Cas,
    target: &Target,
    tier: crate::Tier,
    threads: usize,
    name: &str,
    (files, bytes): (u64, u64),
    counters: &Counters,
) -> Result<(), PipelineError> {
    let output = &target.output;
    // Before the first file moves, the store holds the manifest as a pending root: a gc
    // while this run (or its interrupted remains) is unregistered keeps every moved blob.
    let image = std::fs::read(output).map_err(|e| PipelineError::io(output, e))?;
    let pending = vrift_cas::roots::PendingRoot::create(
        cas.root(),
        &image,
        &vrift_cas::roots::RootInfo {
            pid: std::process::id(),
            source: target.root.clone(),
            output: output.clone(),
            created_unix: unix_now(),
        },
    )?;
    phantom::write_journal(
        output,
        &phantom::Journal {
            version: 1,
            root: target.root.clone(),
            output: output.clone(),
            tier1: tier == crate::Tier::Tier1,
            pid: std::process::id(),
        },
    )?;
    phantom::move_phase(cas, output, tier, threads, counters)?;
    phantom::remove_journal(output)?;
    registry::register(
        cas.root(),
        &Registration {
            name,
            source: &target.root,
            manifest: output,
            files,
            bytes,
        },
    )?;
    pending.release()?;
    vrift_cas::roots::release_for_output(cas.root(), output)?;
    Ok(())
}

/// The report of a finished run, from the counters.
fn report(
    started: Instant,
    output: PathBuf,
    mut details: ReportDetails,
    counters: &Counters,
) -> IngestReport {
    let g = Counters::get;
    let seconds = started.elapsed().as_secs_f64();
    let files_walked = g(&counters.files);
    details.hashed_files = g(&counters.hashed_files);
    details.hashed_bytes = g(&counters.hashed_bytes);
    details.specials = g(&counters.specials);
    details.mode_conflicts = g(&counters.mode_conflicts);
    details.link_hardlink = g(&counters.link_hardlink);
    details.link_rename = g(&counters.link_rename);
    details.link_copy = g(&counters.link_copy);
    details.link_reflink = g(&counters.link_reflink);
    details.fallback_exdev = g(&counters.fallback_exdev);
    details.fallback_emlink = g(&counters.fallback_emlink);
    details.fallback_eperm = g(&counters.fallback_eperm);
    details.walk_seconds = g(&counters.walk_ns) as f64 / 1e9;
    details.hash_seconds = g(&counters.hash_ns) as f64 / 1e9;
    details.place_seconds = g(&counters.place_ns) as f64 / 1e9;
    details.manifest_seconds = g(&counters.manifest_ns) as f64 / 1e9;
    details.issues = counters.take_issues();
    details.excluded_paths = counters.take_excluded();
    IngestReport {
        files: files_walked,
        dirs: g(&counters.dirs),
        symlinks: g(&counters.symlinks),
        bytes: g(&counters.bytes),
        blobs_new: g(&counters.blobs_new),
        dedup_hits: g(&counters.dedup_hits),
        skipped: g(&counters.skipped),
        excluded: g(&counters.excluded),
        errors: g(&counters.errors),
        seconds,
        files_per_sec: if seconds > 0.0 {
            files_walked as f64 / seconds
        } else {
            0.0
        },
        manifest: output,
        issues: counters.issue_counts(),
        details,
    }
}

/// Whether `output` holds a phantom manifest of `root`, or an interrupted phantom run of it
/// left its journal there.
fn output_is_phantom(output: &Path, root: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    if phantom::journal_path(output).exists() {
        return true;
    }
    // The header says it (64 bytes); only a phantom one is opened to compare its root.
    let mut head = [0u8; vrift_manifest::format::HEADER_LEN];
    let phantom_flag = std::fs::File::open(output)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .ok()
        .and_then(|()| vrift_manifest::format::Header::parse(&head, output).ok())
        .is_some_and(|h| h.flags & FLAG_PHANTOM != 0);
    if !phantom_flag {
        return false;
    }
    let opts = vrift_manifest::OpenOptions {
        verify_checksum: false,
        populate: false,
    };
    vrift_manifest::Manifest::open_with(output, opts)
        .is_ok_and(|m| m.is_phantom() && m.root() == root.as_os_str().as_bytes())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What `--io-backend auto` picks. Set from the interleaved measurements in bench/README.md.
const AUTO_USES_URING: bool = false;

fn absolute(p: &Path) -> Result<PathBuf, PipelineError> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(|e| PipelineError::io(".", e))?;
    Ok(cwd.join(p))
}

/// Batches in flight hold open files; make sure the soft limit is not what stops us.
/// Returns the limit in force afterwards.
fn raise_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let (Some(cur), max) = (lim.current, lim.maximum) else {
        return 1 << 16;
    };
    let want = max.unwrap_or(u64::MAX).min(1 << 16);
    if cur < want
        && setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: max,
            },
        )
        .is_ok()
    {
        return want;
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::rel_os;

    /// A stage that died of a bug ends the ingest with an error naming it, and nothing is
    /// published (here a hash thread's failure recorded before the walk starts: the walk stops
    /// at once, so this also shows the others stop taking work).
    #[test]
    fn a_failed_stage_fails_the_ingest_and_publishes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("a/b")).unwrap();
        for i in 0..50 {
            std::fs::write(src.join(format!("a/b/f{i}")), format!("{i}")).unwrap();
        }
        let out = t.path().join("m.vrm");
        let counters = Counters::default();
        let _ = counters.stage("hash", || panic!("injected"));
        let opts = IngestOptions::new(&src, &out);
        let err = ingest(&opts, &t.path().join("store"), &counters, |_| {}).unwrap_err();
        match &err {
            PipelineError::StageFailed { stage, message, .. } => {
                assert_eq!(*stage, "hash");
                assert_eq!(message, "injected");
            }
            other => panic!("unexpected: {other}"),
        }
        let text = err.to_string();
        assert!(text.contains("the hash stage failed"), "{text}");
        assert!(!out.exists(), "a manifest was published");
    }

    /// A hash thread that dies mid-run, with one hash thread and a directory large enough to
    /// fill every queue behind it: the walker must not wait forever for room (the review of
    /// the first version found that it did, the channel being kept open by the stage set-up).
    #[test]
    fn a_stage_dying_mid_run_ends_the_ingest_instead_of_hanging_it() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("big")).unwrap();
        std::fs::write(src.join(rel_os(crate::item::TEST_PANIC_NAME)), "boom").unwrap();
        for i in 0..3000 {
            std::fs::write(src.join(format!("big/f{i}")), format!("{i}")).unwrap();
        }
        let out = t.path().join("m.vrm");
        let store = t.path().join("store");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let counters = Counters::default();
            let mut opts = IngestOptions::new(&src, &out);
            opts.threads = 1;
            let r = ingest(&opts, &store, &counters, |_| {});
            let _ = tx.send((r.map(|_| ()), out.exists()));
        });
        let (r, published) = rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("the ingest hung after a stage died");
        match r {
            Err(PipelineError::StageFailed { stage, .. }) => assert_eq!(stage, "hash"),
            other => panic!("unexpected: {other:?}"),
        }
        assert!(!published, "a manifest was published");
    }
}
