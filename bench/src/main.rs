//! `vrift-bench`: times vrift and the baselines it is judged against (`cp -al`, `find`,
//! parallel `b3sum`, `pnpm install --offline`) on the same real `node_modules` corpus,
//! interleaved in rounds, and records medians, ratios and the goals of issue 2 as dated
//! JSON + markdown results; `--chart` draws files/s per corpus from those records as SVG.
//!
//! ```text
//! cargo run --release -p vrift-bench -- --corpus medium [--runs 3] [--cold]
//!     [--corpus-dir DIR] [--vrift target/release/vrift] [--vrift-arg=--io-backend=uring]...
//!     [--install-pnpm | --no-pnpm] [--out bench/results/NAME] [--chart bench/results/files-per-sec.svg]
//! cargo run --release -p vrift-bench -- --chart bench/results/files-per-sec.svg
//! ```
//! See `bench/README.md` for what each row means.

mod cases;
mod chart;
mod corpus;
mod exec;
mod fsops;
mod interrupt;
mod machine;
mod pnpm;
mod report;
mod rounds;
mod stats;
mod tools;
mod vrift;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::SystemTime;

use anyhow::{bail, Result};
use clap::Parser;

use cases::Case;
use exec::{describe, output_of, run_timed, Stdout};
use report::{CaseCommand, CorpusInfo, Report, VriftInfo};
use rounds::{Plan, Round};
use vrift::{check, parse_summary, Expect, Vrift};

/// Benchmark `vrift ingest` against cp -al, find and b3sum on one corpus.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Corpus to benchmark: xsmall, small, medium or large (definitions in bench/corpora/).
    /// Without it, only --chart runs.
    #[arg(long, required_unless_present = "chart")]
    corpus: Option<String>,
    /// Project directory of the corpus (the one holding node_modules). Default:
    /// $VRIFT_BENCH_CORPORA/NAME, else REPO/../corpora/NAME. Installed there with
    /// bench/make-corpus.sh (npm ci) when missing or out of date.
    #[arg(long)]
    corpus_dir: Option<PathBuf>,
    /// Corpus the shared store already holds (default: large; medium when --corpus large).
    #[arg(long)]
    shared_corpus: Option<String>,
    /// Project directory of the shared corpus (same defaults as --corpus-dir).
    #[arg(long)]
    shared_corpus_dir: Option<PathBuf>,
    /// Rounds; each round runs every row once, and the table shows medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The vrift binary under test (default: REPO/target/release/vrift).
    #[arg(long)]
    vrift: Option<PathBuf>,
    /// Extra argument for every `vrift ingest` (repeatable), e.g. --vrift-arg=--io-backend=uring.
    #[arg(long = "vrift-arg", allow_hyphen_values = true)]
    vrift_args: Vec<String>,
    /// Also time a cold-cache first ingest and a cold b3sum
    /// (`sync; echo 3 > /proc/sys/vm/drop_caches` before each; needs root).
    #[arg(long)]
    cold: bool,
    /// Write PREFIX.json and PREFIX.md (default: bench/results/DATE-CORPUS[-N]).
    #[arg(long, value_name = "PREFIX")]
    out: Option<PathBuf>,
    /// Where to make the working copies (default: the system temp dir). Best on the corpus's
    /// file system; elsewhere the corpus is first copied there once.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Before each round, wait up to this many seconds for the CPUs to go quiet (this
    /// machine is shared with others' builds); the state found is recorded either way.
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    wait_idle: u64,
    /// Run the harness and everything it starts at this nice value (e.g. -10, needs root):
    /// on a machine shared with others' builds, it keeps their CPU use out of the timings.
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    nice: Option<i32>,
    /// Install pnpm with `npm i -g pnpm` when it is not on PATH (else its row is skipped).
    #[arg(long, conflicts_with = "no_pnpm")]
    install_pnpm: bool,
    /// Skip the pnpm row even when pnpm is installed.
    #[arg(long)]
    no_pnpm: bool,
    /// Draw files/s per corpus (vrift first ingest, re-ingest, cp -al, pnpm --offline) from
    /// the latest record of each corpus in --results-dir as an SVG bar chart at PATH; after
    /// the run when --corpus is given, else on its own.
    #[arg(long, value_name = "PATH")]
    chart: Option<PathBuf>,
    /// Where the records are (for --chart; default bench/results).
    #[arg(long, value_name = "DIR")]
    results_dir: Option<PathBuf>,
    /// Keep the working directory afterwards (for a look at the stores).
    #[arg(long)]
    keep_work: bool,
    /// Delete each round's trees right after the round (the old behaviour). By default they
    /// are parked in WORK/trash and deleted after the last round: on ext4 without a journal
    /// (this VM) every inode freed in the last 1–6 minutes is skipped, one buffer lookup at a
    /// time, by each later inode allocation nearby, so deleting 200k files between rounds
    /// made the next round's mkdirs 3–10× slower — a cost of the harness, not of the rows.
    #[arg(long)]
    delete_between_rounds: bool,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vrift-bench: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> Result<ExitCode> {
    let bench_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let results_dir = args
        .results_dir
        .clone()
        .unwrap_or_else(|| bench_dir.join("results"));
    let Some(name) = args.corpus.clone() else {
        let chart = args.chart.as_deref().expect("clap: --corpus or --chart");
        chart::render(&results_dir, chart)?;
        return Ok(ExitCode::SUCCESS);
    };
    let code = bench(&args, &bench_dir, name)?;
    if let Some(chart) = &args.chart {
        chart::render(&results_dir, chart)?;
    }
    Ok(code)
}

fn bench(args: &Args, bench_dir: &Path, name: String) -> Result<ExitCode> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if args.runs < 3 {
        eprintln!("vrift-bench: warning: fewer than 3 rounds; medians will be shaky");
    }
    let repo = bench_dir
        .parent()
        .expect("bench/ is inside the repo")
        .to_path_buf();

    // Everything that can fail fast does, before minutes of copying.
    let vrift_bin = args
        .vrift
        .clone()
        .unwrap_or_else(|| repo.join("target/release/vrift"));
    let vrift_under_test = Vrift {
        bin: tools::vrift(&vrift_bin)?,
        extra_args: args.vrift_args.clone(),
    };
    if let Some(n) = args.nice {
        machine::set_nice(n)?;
    }
    interrupt::install();
    if args.cold && !fsops::can_drop_caches() {
        bail!("--cold needs to write /proc/sys/vm/drop_caches (run as root)");
    }
    let b3sum = tools::b3sum()?;
    let mut notes = Vec::new();
    let defs = bench_dir.join("corpora").join(&name);
    let pnpm_bin = if args.no_pnpm {
        notes.push("pnpm row skipped: --no-pnpm".to_string());
        None
    } else if !defs.join("package-lock.json").is_file() {
        notes.push(format!(
            "pnpm row skipped: no {} to make a pnpm lock file from",
            defs.join("package-lock.json").display()
        ));
        None
    } else {
        let found = pnpm::find(args.install_pnpm)?;
        if found.is_none() {
            notes.push(
                "pnpm row skipped: pnpm is not installed (pass --install-pnpm to install it with `npm i -g pnpm`)"
                    .to_string(),
            );
        }
        found
    };
    for n in &notes {
        eprintln!("vrift-bench: {n}");
    }
    let shared_name = args
        .shared_corpus
        .clone()
        .unwrap_or_else(|| if name == "large" { "medium" } else { "large" }.to_string());
    if shared_name == name {
        bail!("the shared store must hold another corpus than {name}");
    }
    let corpus_dir = args
        .corpus_dir
        .clone()
        .unwrap_or_else(|| corpus::default_dir(&repo, &name));
    let shared_dir = args
        .shared_corpus_dir
        .clone()
        .unwrap_or_else(|| corpus::default_dir(&repo, &shared_name));
    let tree = corpus::ensure(bench_dir, &name, &corpus_dir)?;
    let shared_tree = corpus::ensure(bench_dir, &shared_name, &shared_dir)?;

    let date = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let work = WorkDir::create(
        &args
            .work_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
            .join(format!("vrift-bench-{name}-{}", std::process::id())),
        args.keep_work,
    )?;
    let scratch = work.path.join("scratch");
    std::fs::create_dir_all(&scratch)?;
    eprintln!("vrift-bench: working in {}", work.path.display());
    // First of the set-up steps, as the one most likely to fail (network, pnpm versions).
    let pnpm = match &pnpm_bin {
        Some(bin) => Some(pnpm::prepare(bin, &defs, &work.path)?),
        None => None,
    };
    interrupt::check()?;

    // Every round runs the same build, even if someone rebuilds target/release meanwhile.
    let snapshot = work.path.join("vrift");
    std::fs::copy(&vrift_under_test.bin, &snapshot)?;
    let vrift = Vrift {
        bin: snapshot,
        extra_args: vrift_under_test.extra_args.clone(),
    };
    let vrift_info = VriftInfo {
        binary: vrift_under_test.bin.clone(),
        binary_modified: std::fs::metadata(&vrift_under_test.bin)
            .and_then(|m| m.modified())
            .ok()
            .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        version: vrift.version(),
        git_commit: output_of(Command::new("git").arg("-C").arg(&repo).args([
            "rev-parse",
            "--short",
            "HEAD",
        ])),
        git_dirty: git_dirty_outside_bench(&repo),
        extra_args: vrift.extra_args.clone(),
    };

    // `cp -al` and solid ingest need the trees on the work dir's file system.
    let source = if fsops::same_filesystem(&tree, &work.path)? {
        std::fs::canonicalize(&tree)?
    } else {
        eprintln!("vrift-bench: corpus is on another file system; copying it to the work dir");
        let copy = work.path.join("source").join("node_modules");
        std::fs::create_dir_all(copy.parent().expect("has parent"))?;
        fsops::copy_tree(&tree, &copy)?;
        copy
    };

    let jobs = machine::nproc();
    let setup_start = std::time::Instant::now();
    eprintln!("vrift-bench: taking stock of {name} and {shared_name} (b3sum of every file, also warms the cache)");
    let (inventory, contents) = corpus::take_stock(
        &source,
        &mut tools::b3sum_all(&source, jobs, &b3sum, true),
        &scratch,
    )?;
    let (shared_inventory, shared_contents) = corpus::take_stock(
        &shared_tree,
        &mut tools::b3sum_all(&shared_tree, jobs, &b3sum, true),
        &scratch,
    )?;
    interrupt::check()?;
    let new_vs_shared = contents.difference(&shared_contents).count() as u64;
    // Tens of MB of hashes: not needed any more, and the harness stays small while it spawns.
    drop((contents, shared_contents));

    let mut problems = Vec::new();
    interrupt::check()?;
    let template = work.path.join("template");
    eprintln!("vrift-bench: building the template store holding {shared_name}");
    {
        let t_tree = template.join("node_modules");
        std::fs::create_dir_all(&template)?;
        fsops::copy_tree(&shared_tree, &t_tree)?;
        let done = run_timed(
            &mut vrift.ingest(
                &template.join("store"),
                &t_tree,
                &template.join("manifest.bin"),
            ),
            Stdout::Capture,
            &scratch,
        )?;
        let summary = parse_summary(&done.stdout)?;
        let want = Expect::first_ingest(shared_inventory.files, shared_inventory.distinct_contents);
        for p in check(&summary, &want) {
            problems.push(format!("template store ({shared_name}): {p}"));
        }
    }

    eprintln!(
        "vrift-bench: setup took {:.1} s",
        setup_start.elapsed().as_secs_f64()
    );

    let cases = Case::round(args.cold, pnpm.is_some());
    let plan = Plan {
        vrift: &vrift,
        b3sum: &b3sum,
        jobs,
        source: &source,
        template_store: &template.join("store"),
        work: &work.path,
        cases: cases.clone(),
        expect_empty: Expect::first_ingest(inventory.files, inventory.distinct_contents),
        expect_shared: Expect::first_ingest(inventory.files, new_vs_shared),
        expect_reingest: Expect::warm_reingest(inventory.files),
        wait_idle: std::time::Duration::from_secs(args.wait_idle),
        delete_between_rounds: args.delete_between_rounds,
        pnpm: pnpm.as_ref(),
    };
    let machine = machine::describe(&work.path);
    let mut all_rounds: Vec<Round> = Vec::new();
    for i in 1..=args.runs {
        all_rounds.push(rounds::run_round(&plan, i, args.runs)?);
    }
    for r in &all_rounds {
        for m in &r.measured {
            for p in &m.problems {
                problems.push(format!("round {}: {}: {p}", r.index, m.case.id()));
            }
        }
    }

    let (rows, ratios, goals) = report::rows_ratios_goals(
        &all_rounds,
        &cases,
        inventory.files,
        pnpm.as_ref().map(|p| p.info.files),
    );
    let report = Report {
        schema: report::SCHEMA,
        date: date.clone(),
        corpus: CorpusInfo {
            name: name.clone(),
            tree: source.clone(),
            inventory,
        },
        shared_corpus: CorpusInfo {
            name: shared_name,
            tree: shared_tree,
            inventory: shared_inventory,
        },
        machine,
        vrift: vrift_info,
        rounds_run: args.runs,
        nice: machine::current_nice(),
        cold: args.cold,
        delete_between_rounds: args.delete_between_rounds,
        pnpm: pnpm.as_ref().map(|p| p.info.clone()),
        notes,
        commands: case_commands(&cases, &vrift_under_test, jobs),
        rows,
        ratios,
        goals,
        problems,
        rounds: all_rounds,
    };

    println!("{}", report.markdown());
    let prefix = args
        .out
        .clone()
        .unwrap_or_else(|| report::default_prefix(&bench_dir.join("results"), &date, &name));
    let (json, md) = report.write(&prefix)?;
    eprintln!("vrift-bench: wrote {} and {}", json.display(), md.display());
    if report.problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "vrift-bench: vrift's summaries disagree with the corpus (see \"Sanity problems\")"
        );
        Ok(ExitCode::from(1))
    }
}

/// Whether the repository has uncommitted changes outside `bench/` — i.e. whether the
/// vrift binary may have been built from code no commit describes.
fn git_dirty_outside_bench(repo: &Path) -> Option<bool> {
    output_of(Command::new("git").arg("-C").arg(repo).args([
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ".",
        ":!bench",
    ]))
    .map(|s| !s.is_empty())
}

/// The setup and timed command of each row, with placeholders: `SRC` the corpus tree,
/// `COPY` a fresh `cp -a` of it, `STORE` the store, `TEMPLATE` the store holding the
/// shared corpus, `MANIFEST` the `-o` file, `DST` a path that does not exist yet.
fn case_commands(cases: &[Case], vrift: &Vrift, jobs: usize) -> Vec<CaseCommand> {
    let p = Path::new;
    let ingest = describe(&vrift.ingest(p("STORE"), p("COPY"), p("MANIFEST")));
    let drop = "sync; echo 3 > /proc/sys/vm/drop_caches";
    cases
        .iter()
        .map(|&case| {
            let (setup, timed) = match case {
                Case::IngestEmpty => ("cp -a SRC COPY; sync (STORE does not exist)".to_string(), ingest.clone()),
                Case::IngestShared => (
                    "cp -a SRC COPY; cp -al TEMPLATE/blake3 STORE/blake3 and cp -a the rest of TEMPLATE; sync".to_string(),
                    ingest.clone(),
                ),
                Case::ReingestWarm => (
                    "none: COPY, STORE and MANIFEST of this round's empty-store ingest; sync".to_string(),
                    ingest.clone(),
                ),
                Case::IngestEmptyCold => (
                    format!("cp -a SRC COPY; {drop} (STORE does not exist)"),
                    ingest.clone(),
                ),
                Case::CpAl => (
                    r"find SRC -type f -printf '%s %T@\n' > /dev/null (warm-up); sync".to_string(),
                    describe(&tools::cp_al(p("SRC"), p("DST"))),
                ),
                Case::Find => (
                    "the same command (warm-up); sync".to_string(),
                    format!("{} > /dev/null", describe(&tools::find_printf(p("SRC")))),
                ),
                Case::B3sum => (
                    "the same command (warm-up); sync".to_string(),
                    tools::b3sum_display(p("SRC"), jobs),
                ),
                Case::B3sumCold => (drop.to_string(), tools::b3sum_display(p("SRC"), jobs)),
                Case::PnpmOffline => (
                    "copy package.json + pnpm-lock.yaml (pnpm import of the corpus's package-lock.json) into an empty PROJECT; \
                     PNPM_STORE filled once before the rounds (pnpm install from the registry); warm-up: stat every PNPM_STORE file, read its index (index.db / *-index.json); sync"
                        .to_string(),
                    pnpm::install_offline_display(),
                ),
            };
            CaseCommand { case, setup, timed }
        })
        .collect()
}

/// The run's scratch directory, removed when the run ends (also on errors) unless kept.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    fn create(path: &Path, keep: bool) -> Result<Self> {
        std::fs::create_dir_all(path)?;
        Ok(WorkDir {
            path: std::fs::canonicalize(path)?,
            keep,
        })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("vrift-bench: kept {}", self.path.display());
        } else if let Err(e) = fsops::remove_tree(&self.path) {
            eprintln!(
                "vrift-bench: could not remove {}: {e:#}",
                self.path.display()
            );
        }
    }
}
