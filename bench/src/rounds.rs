//! The interleaved loop: every round runs every case once (A B C … A B C …), so a drift
//! in this VM's disk speed (2–3× within minutes) hits all rows alike instead of whichever
//! row happened to run during the slow minutes.
//!
//! Each case first prepares its inputs (fresh `cp -a` of the corpus, fresh or cloned store),
//! then `sync`s so the write-back of that preparation is not billed to it, and only then
//! starts the clock. Nothing a case needs is made inside its timed region.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cases::Case;
use crate::exec::{run_checked, run_timed, Sample, Stdout};
use crate::fsops::{clone_store, copy_tree, drop_caches, remove_tree, sync};
use crate::machine;
use crate::pnpm::{self, Pnpm};
use crate::tools;
use crate::vrift::{check, parse_summary, Expect, IngestSummary, Vrift};

/// Everything the rounds need, prepared once.
pub struct Plan<'a> {
    pub vrift: &'a Vrift,
    pub b3sum: &'a Path,
    /// Parallelism of the b3sum baseline (the core count).
    pub jobs: usize,
    /// The corpus tree: source of every fresh copy, and what `cp -al`, `find` and `b3sum` read.
    pub source: &'a Path,
    /// A store holding the other corpus, cloned for every shared-store run.
    pub template_store: &'a Path,
    /// Scratch space; each round works in `work/round-N` and removes it afterwards.
    pub work: &'a Path,
    pub cases: Vec<Case>,
    pub expect_empty: Expect,
    pub expect_shared: Expect,
    pub expect_reingest: Expect,
    /// Before each round, wait up to this long for the CPUs to go quiet (others' builds).
    pub wait_idle: std::time::Duration,
    /// Delete a round's trees when it ends instead of parking them in `work/trash`.
    pub delete_between_rounds: bool,
    /// The pnpm row's project template and warm store (when the row runs).
    pub pnpm: Option<&'a Pnpm>,
}

/// One case's measurement in one round.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub case: Case,
    pub sample: Sample,
    /// vrift's `--json` summary (vrift rows only).
    pub summary: Option<IngestSummary>,
    /// Where the summary disagrees with the independent count of the corpus.
    pub problems: Vec<String>,
}

/// One round, with what else the machine was doing when it started.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub index: usize,
    pub loadavg_1m_before: Option<f64>,
    /// `rustc` processes running when the round started (others' builds on the 2 cores).
    pub rustc_before: usize,
    /// Busy fraction of all CPUs over the second before the round started (0–1).
    pub cpu_busy_before: Option<f64>,
    pub measured: Vec<Measured>,
}

/// CPU busy fraction below which the machine counts as quiet (1 of 2 cores at 30% is
/// background noise; a compile keeps one or both cores near 100%).
const IDLE_BUSY_MAX: f64 = 0.15;

/// Runs round `index` (1-based) of `total`.
pub fn run_round(plan: &Plan, index: usize, total: usize) -> Result<Round> {
    let dir = plan.work.join(format!("round-{index}"));
    remove_tree(&dir)?;
    std::fs::create_dir_all(&dir)?;
    let scratch = plan.work.join("scratch");
    std::fs::create_dir_all(&scratch)?;

    sync();
    let cpu_busy_before = machine::wait_for_idle(plan.wait_idle, IDLE_BUSY_MAX);
    let mut round = Round {
        index,
        loadavg_1m_before: machine::loadavg_1m(),
        rustc_before: machine::count_processes("rustc"),
        cpu_busy_before,
        measured: Vec::new(),
    };
    if round.rustc_before > 0 || cpu_busy_before.is_some_and(|b| b > IDLE_BUSY_MAX) {
        eprintln!(
            "vrift-bench: warning: round {index} starts with CPUs {:.0}% busy, {} rustc running: expect noise",
            cpu_busy_before.unwrap_or(0.0) * 100.0,
            round.rustc_before
        );
    }

    let empty = IngestDirs::new(&dir, "empty");
    for &case in &plan.cases {
        crate::interrupt::check()?;
        let m = run_case(plan, case, &dir, &empty, &scratch)
            .with_context(|| format!("round {index}, {}", case.id()))?;
        let rate = m
            .summary
            .as_ref()
            .map(|s| format!(", {:.0} files/s", s.files as f64 / m.sample.wall_s))
            .unwrap_or_default();
        eprintln!(
            "vrift-bench: round {index}/{total} {:<18} {:>8.3} s{rate}",
            case.id(),
            m.sample.wall_s
        );
        for p in &m.problems {
            eprintln!("vrift-bench: warning: {}: {p}", case.id());
        }
        round.measured.push(m);
    }

    if plan.delete_between_rounds {
        remove_tree(&dir)?;
    } else {
        // Parked, not deleted: freeing inodes now would tax the next round's allocations
        // (see `--delete-between-rounds`). The work dir, trash included, goes at the end.
        let trash = plan.work.join("trash");
        std::fs::create_dir_all(&trash)?;
        std::fs::rename(&dir, trash.join(format!("round-{index}")))?;
    }
    sync();
    Ok(round)
}

/// Tree, store and manifest paths of one ingest scenario inside a round directory.
struct IngestDirs {
    tree: PathBuf,
    store: PathBuf,
    manifest: PathBuf,
}

impl IngestDirs {
    fn new(round_dir: &Path, name: &str) -> Self {
        let base = round_dir.join(name);
        IngestDirs {
            tree: base.join("node_modules"),
            store: base.join("store"),
            manifest: base.join("manifest.bin"),
        }
    }

    /// A fresh copy of the corpus to ingest (ingesting modifies the tree it is given).
    fn prepare(&self, source: &Path) -> Result<()> {
        let base = self.tree.parent().expect("tree has a parent");
        std::fs::create_dir_all(base)?;
        copy_tree(source, &self.tree)
    }
}

fn run_case(
    plan: &Plan,
    case: Case,
    round_dir: &Path,
    empty: &IngestDirs,
    scratch: &Path,
) -> Result<Measured> {
    let ingest = |dirs: &IngestDirs, expect: &Expect| -> Result<Measured> {
        let mut cmd = plan.vrift.ingest(&dirs.store, &dirs.tree, &dirs.manifest);
        if case.is_cold() {
            drop_caches()?;
        } else {
            sync();
        }
        let done = run_timed(&mut cmd, Stdout::Capture, scratch)?;
        let summary = parse_summary(&done.stdout)?;
        let problems = check(&summary, expect);
        Ok(Measured {
            case,
            sample: done.sample,
            summary: Some(summary),
            problems,
        })
    };
    let baseline = |cmd: &mut std::process::Command| -> Result<Measured> {
        if case.is_cold() {
            drop_caches()?;
        } else {
            // Warm means warm: this VM pages out cache idle for about a minute (DAMON
            // `pageout`), so the tree is read once, untimed, right before.
            let mut warm = match case {
                Case::B3sum => tools::b3sum_all(plan.source, plan.jobs, plan.b3sum, false),
                _ => tools::find_printf(plan.source),
            };
            run_checked(warm.stdout(std::process::Stdio::null()))?;
            sync();
        }
        let done = run_timed(cmd, Stdout::Discard, scratch)?;
        Ok(Measured {
            case,
            sample: done.sample,
            summary: None,
            problems: Vec::new(),
        })
    };

    match case {
        Case::IngestEmpty => {
            empty.prepare(plan.source)?;
            ingest(empty, &plan.expect_empty)
        }
        Case::IngestShared => {
            let shared = IngestDirs::new(round_dir, "shared");
            shared.prepare(plan.source)?;
            clone_store(plan.template_store, &shared.store)?;
            ingest(&shared, &plan.expect_shared)
        }
        Case::ReingestWarm => {
            anyhow::ensure!(
                empty.manifest.exists(),
                "re-ingest needs the empty-store ingest earlier in the round"
            );
            ingest(empty, &plan.expect_reingest)
        }
        Case::IngestEmptyCold => {
            let cold = IngestDirs::new(round_dir, "cold");
            cold.prepare(plan.source)?;
            ingest(&cold, &plan.expect_empty)
        }
        Case::CpAl => baseline(&mut tools::cp_al(plan.source, &round_dir.join("cp-al"))),
        Case::Find => baseline(&mut tools::find_printf(plan.source)),
        Case::PnpmOffline => {
            let p = plan
                .pnpm
                .context("the pnpm row needs pnpm (prepared before the rounds)")?;
            let project = round_dir.join("pnpm");
            p.new_project(&project)?;
            run_checked(pnpm::warm_up(&p.store).stdout(std::process::Stdio::null()))?;
            sync();
            let done = run_timed(
                &mut pnpm::install_offline(&p.bin, &project, &p.store),
                Stdout::Discard,
                scratch,
            )?;
            let made = pnpm::count_files(&project.join("node_modules"))?;
            let problems = if made == p.info.files {
                Vec::new()
            } else {
                vec![format!(
                    "pnpm made {made} files, the store-filling install {}",
                    p.info.files
                )]
            };
            Ok(Measured {
                case,
                sample: done.sample,
                summary: None,
                problems,
            })
        }
        Case::B3sum | Case::B3sumCold => baseline(&mut tools::b3sum_all(
            plan.source,
            plan.jobs,
            plan.b3sum,
            false,
        )),
    }
}
