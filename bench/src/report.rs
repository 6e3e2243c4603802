//! Turning the rounds into the result record: medians per row, the ratios and goals of
//! issue 2, a markdown rendering for people (also printed to stdout) and JSON for tools.
//! Each run is written as `bench/results/<date>-<corpus>.{json,md}`, so records pile up
//! and later runs can be compared with earlier ones.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cases::{Case, MAX_RSS_GOAL_MB, RATE_GOALS, RATIOS};
use crate::corpus::Inventory;
use crate::machine::Machine;
use crate::pnpm::PnpmInfo;
use crate::rounds::Round;
use crate::stats::{max, median, min};
use crate::vrift::IngestSummary;

/// Version of the JSON layout below; bump when a field changes meaning.
/// 1: the first layout. 2: adds the `pnpm_offline` row, `rows[].files`, `pnpm`, `notes`
/// (a reader of version 1 records finds no pnpm row and takes `files` from the corpus).
pub const SCHEMA: u32 = 2;

#[derive(Serialize)]
pub struct Report {
    pub schema: u32,
    /// Start of the run, RFC 3339, UTC.
    pub date: String,
    pub corpus: CorpusInfo,
    /// The corpus the shared store already holds.
    pub shared_corpus: CorpusInfo,
    pub machine: Machine,
    pub vrift: VriftInfo,
    pub rounds_run: usize,
    /// Nice value the harness and the timed commands ran at.
    pub nice: i32,
    pub cold: bool,
    /// Whether each round's trees were deleted right after it (else parked until the end).
    pub delete_between_rounds: bool,
    /// The pnpm row's set-up (absent when the row was skipped: see `notes`).
    pub pnpm: Option<PnpmInfo>,
    /// What the reader should know about this run: rows skipped and why.
    pub notes: Vec<String>,
    pub commands: Vec<CaseCommand>,
    pub rows: Vec<Row>,
    pub ratios: Vec<Ratio>,
    pub goals: Vec<Goal>,
    /// Disagreements between vrift's summaries and the independent count, and other doubts.
    pub problems: Vec<String>,
    pub rounds: Vec<Round>,
}

#[derive(Serialize)]
pub struct CorpusInfo {
    pub name: String,
    pub tree: PathBuf,
    #[serde(flatten)]
    pub inventory: Inventory,
}

#[derive(Serialize)]
pub struct VriftInfo {
    pub binary: PathBuf,
    /// When the binary was built (its mtime): the lead may rebuild it between runs.
    pub binary_modified: Option<String>,
    pub version: Option<String>,
    pub git_commit: Option<String>,
    /// Uncommitted changes in the repository the binary was (presumably) built from.
    pub git_dirty: Option<bool>,
    pub extra_args: Vec<String>,
}

/// How a row is prepared (untimed) and what exactly is timed.
#[derive(Serialize)]
pub struct CaseCommand {
    pub case: Case,
    pub setup: String,
    pub timed: String,
}

#[derive(Serialize)]
pub struct Row {
    pub case: Case,
    pub label: String,
    pub median_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    pub samples_s: Vec<f64>,
    /// Files the row's rate counts: the corpus's (vrift's own count for vrift rows), or
    /// those of pnpm's layout for the pnpm row.
    pub files: u64,
    /// `files` per second of median wall time.
    pub files_per_sec: f64,
    /// Largest peak RSS over the rounds, MiB.
    pub peak_rss_mib: f64,
    /// Largest harness RSS at spawn over the rounds (the floor of `peak_rss_mib`), MiB.
    pub rss_floor_mib: f64,
    pub median_user_s: f64,
    pub median_sys_s: f64,
    /// Median of vrift's own `seconds` (vrift rows).
    pub vrift_seconds_median: Option<f64>,
    /// vrift's summary from the last round (vrift rows).
    pub last_summary: Option<IngestSummary>,
}

#[derive(Serialize)]
pub struct Ratio {
    pub name: String,
    /// Median of the numerator row over median of the denominator row.
    pub of_medians: f64,
    /// Median of the per-round ratios: each pair ran within the same minute or so, so this
    /// one is the least disturbed by drift.
    pub paired_median: f64,
    pub goal_max: Option<f64>,
    pub met: Option<bool>,
}

#[derive(Serialize)]
pub struct Goal {
    pub what: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

/// Builds the rows, ratios and goals from the rounds. `files` is the corpus file count,
/// `pnpm_files` the file count of pnpm's layout (the pnpm row's rate is over those).
pub fn rows_ratios_goals(
    rounds: &[Round],
    cases: &[Case],
    files: u64,
    pnpm_files: Option<u64>,
) -> (Vec<Row>, Vec<Ratio>, Vec<Goal>) {
    let rows: Vec<Row> = cases
        .iter()
        .filter_map(|&case| {
            let n = match case {
                Case::PnpmOffline => pnpm_files.unwrap_or(files),
                _ => files,
            };
            row(rounds, case, n)
        })
        .collect();

    let mut ratios = Vec::new();
    for def in RATIOS {
        let (Some(num), Some(den)) = (
            rows.iter().find(|r| r.case == def.numerator),
            rows.iter().find(|r| r.case == def.denominator),
        ) else {
            continue;
        };
        let paired: Vec<f64> = num
            .samples_s
            .iter()
            .zip(&den.samples_s)
            .map(|(n, d)| n / d)
            .collect();
        let of_medians = num.median_s / den.median_s;
        ratios.push(Ratio {
            name: def.name.to_string(),
            of_medians,
            paired_median: median(&paired).unwrap_or(f64::NAN),
            goal_max: def.goal_max,
            met: def.goal_max.map(|g| of_medians <= g),
        });
    }

    let mut goals = Vec::new();
    for g in RATE_GOALS {
        if let Some(r) = rows.iter().find(|r| r.case == g.case) {
            goals.push(Goal {
                what: format!("{} files/s", r.label),
                target: format!("≥ {}", thousands(g.min_files_per_sec)),
                measured: thousands(r.files_per_sec),
                met: r.files_per_sec >= g.min_files_per_sec,
            });
        }
    }
    for def in RATIOS {
        if let (Some(goal), Some(r)) = (def.goal_max, ratios.iter().find(|r| r.name == def.name)) {
            goals.push(Goal {
                what: def.name.to_string(),
                target: format!("≤ {goal}×"),
                measured: format!("{:.2}×", r.of_medians),
                met: r.of_medians <= goal,
            });
        }
    }
    let peak = rows
        .iter()
        .filter(|r| r.case.is_vrift())
        .map(|r| r.peak_rss_mib)
        .fold(0.0, f64::max);
    goals.push(Goal {
        what: "vrift peak RSS (any row)".into(),
        target: format!("≤ {MAX_RSS_GOAL_MB} MiB"),
        measured: format!("{peak:.1} MiB"),
        met: peak <= MAX_RSS_GOAL_MB,
    });
    (rows, ratios, goals)
}

fn row(rounds: &[Round], case: Case, files: u64) -> Option<Row> {
    let ms: Vec<_> = rounds
        .iter()
        .flat_map(|r| r.measured.iter().filter(|m| m.case == case))
        .collect();
    if ms.is_empty() {
        return None;
    }
    let walls: Vec<f64> = ms.iter().map(|m| m.sample.wall_s).collect();
    let users: Vec<f64> = ms.iter().map(|m| m.sample.user_s).collect();
    let syss: Vec<f64> = ms.iter().map(|m| m.sample.sys_s).collect();
    let vrift_secs: Vec<f64> = ms
        .iter()
        .filter_map(|m| m.summary.as_ref().map(|s| s.seconds))
        .collect();
    let last_summary = ms.last().and_then(|m| m.summary.clone());
    let files = last_summary.as_ref().map_or(files, |s| s.files);
    let median_s = median(&walls)?;
    Some(Row {
        case,
        label: case.label().to_string(),
        median_s,
        min_s: min(&walls)?,
        max_s: max(&walls)?,
        samples_s: walls,
        files,
        files_per_sec: files as f64 / median_s,
        peak_rss_mib: ms
            .iter()
            .map(|m| m.sample.max_rss_kib as f64 / 1024.0)
            .fold(0.0, f64::max),
        rss_floor_mib: ms
            .iter()
            .map(|m| m.sample.rss_floor_kib as f64 / 1024.0)
            .fold(0.0, f64::max),
        median_user_s: median(&users)?,
        median_sys_s: median(&syss)?,
        vrift_seconds_median: median(&vrift_secs),
        last_summary,
    })
}

impl Report {
    /// The human-readable record (also what the harness prints at the end).
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let c = &self.corpus;
        let _ = writeln!(s, "## `{}` — {}\n", c.name, self.date);
        let _ = writeln!(
            s,
            "- machine: {}, {} cores, {:.1} GiB RAM, Linux {}, work dir on {}",
            m.cpu, m.nproc, m.memory_gib, m.kernel, m.work_fs
        );
        let _ = writeln!(
            s,
            "- corpus `{}`: {} files, {} dirs, {} symlinks, {:.0} MB, {} distinct contents",
            c.name,
            thousands(c.inventory.files as f64),
            thousands(c.inventory.dirs as f64),
            c.inventory.symlinks,
            c.inventory.bytes as f64 / 1e6,
            thousands(c.inventory.distinct_contents as f64)
        );
        let sc = &self.shared_corpus;
        let _ = writeln!(
            s,
            "- shared store holds `{}` ({} files, {} distinct contents)",
            sc.name,
            thousands(sc.inventory.files as f64),
            thousands(sc.inventory.distinct_contents as f64)
        );
        match &self.pnpm {
            Some(p) => {
                let _ = writeln!(
                    s,
                    "- pnpm {}: {} files in its layout (its files/s counts those); lock file from {}",
                    p.version,
                    thousands(p.files as f64),
                    p.lockfile
                );
            }
            None => {
                let _ = writeln!(s, "- pnpm: row not run (see notes)");
            }
        }
        let v = &self.vrift;
        let _ = writeln!(
            s,
            "- vrift: {} (binary built {}) at commit {}{}; extra ingest args: {}",
            v.version.as_deref().unwrap_or("?"),
            v.binary_modified.as_deref().unwrap_or("?"),
            v.git_commit.as_deref().unwrap_or("?"),
            if v.git_dirty == Some(true) {
                " (uncommitted changes)"
            } else {
                ""
            },
            if v.extra_args.is_empty() {
                "none".to_string()
            } else {
                format!("`{}`", v.extra_args.join(" "))
            }
        );
        let loads: Vec<String> = self
            .rounds
            .iter()
            .map(|r| {
                format!(
                    "{}{}",
                    r.loadavg_1m_before
                        .map_or("?".into(), |l| format!("{l:.2}")),
                    if r.rustc_before > 0 {
                        format!(" ({} rustc running)", r.rustc_before)
                    } else {
                        String::new()
                    }
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "- {} interleaved rounds, medians; nice {}; trees of a round {}; 1-min load average at each round's start: {}\n",
            self.rounds_run,
            self.nice,
            if self.delete_between_rounds {
                "deleted right after it"
            } else {
                "parked until the last round ended"
            },
            loads.join(", ")
        );

        let _ = writeln!(
            s,
            "| row | median s | min–max s | files/s | peak RSS MiB | user / sys s |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} | {:.3} | {:.3}–{:.3} | {} | {:.1} | {:.2} / {:.2} |",
                r.label,
                r.median_s,
                r.min_s,
                r.max_s,
                thousands(r.files_per_sec),
                r.peak_rss_mib,
                r.median_user_s,
                r.median_sys_s
            );
        }

        let _ = writeln!(s, "\n| ratio | of medians | per-round (median) | goal |");
        let _ = writeln!(s, "|---|---:|---:|---|");
        for r in &self.ratios {
            let goal = match (r.goal_max, r.met) {
                (Some(g), Some(met)) => format!("≤ {g}× {}", if met { "✅" } else { "❌" }),
                _ => "—".into(),
            };
            let _ = writeln!(
                s,
                "| {} | {:.2}× | {:.2}× | {goal} |",
                r.name, r.of_medians, r.paired_median
            );
        }

        let _ = writeln!(
            s,
            "\n| goal (issue 2, stated for `medium`) | target | measured | |"
        );
        let _ = writeln!(s, "|---|---|---:|---|");
        for g in &self.goals {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                g.what,
                g.target,
                g.measured,
                if g.met { "✅" } else { "❌" }
            );
        }

        let floor = self
            .rows
            .iter()
            .map(|r| r.rss_floor_mib)
            .fold(0.0, f64::max);
        let _ = writeln!(
            s,
            "\nPeak RSS is the child's `ru_maxrss` from `wait4`; values up to {floor:.1} MiB (the harness's own RSS at spawn, which Linux carries into a vfork-ed child's peak) are a floor, not the child's use."
        );
        if let Some(sum) = self
            .rows
            .iter()
            .find(|r| r.case == Case::IngestShared)
            .and_then(|r| r.last_summary.as_ref())
        {
            let _ = writeln!(
                s,
                "\nShared-store ingest stored {} new blobs and found {} dedup hits.",
                thousands(sum.blobs_new as f64),
                thousands(sum.dedup_hits as f64)
            );
        }
        for n in &self.notes {
            let _ = writeln!(s, "\nNote: {n}");
        }
        if self.problems.is_empty() {
            let _ = writeln!(
                s,
                "\nSanity: every vrift summary matched the independent count (files, new blobs, dedup hits, skipped, no errors)."
            );
        } else {
            let _ = writeln!(s, "\nSanity problems:\n");
            for p in &self.problems {
                let _ = writeln!(s, "- {p}");
            }
        }

        let _ = writeln!(s, "\nCommands (`SRC` = `{}`):\n", c.tree.display());
        for cc in &self.commands {
            let _ = writeln!(
                s,
                "- {}: setup `{}`; timed `{}`",
                cc.case.label(),
                cc.setup,
                cc.timed
            );
        }
        s
    }

    /// Writes `<prefix>.json` and `<prefix>.md`.
    pub fn write(&self, prefix: &Path) -> Result<(PathBuf, PathBuf)> {
        if let Some(dir) = prefix.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let json = with_ext(prefix, "json");
        let md = with_ext(prefix, "md");
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        std::fs::write(&json, text).with_context(|| format!("writing {}", json.display()))?;
        std::fs::write(&md, format!("# vrift-bench result\n\n{}", self.markdown()))
            .with_context(|| format!("writing {}", md.display()))?;
        Ok((json, md))
    }
}

/// `results/<YYYY-MM-DD>-<corpus>`, with `-2`, `-3`, … when that day already has one.
pub fn default_prefix(results_dir: &Path, date: &str, corpus: &str) -> PathBuf {
    let day = date.get(..10).unwrap_or(date);
    let base = format!("{day}-{corpus}");
    let taken = |p: &Path| with_ext(p, "json").exists() || with_ext(p, "md").exists();
    let first = results_dir.join(&base);
    if !taken(&first) {
        return first;
    }
    (2..)
        .map(|n| results_dir.join(format!("{base}-{n}")))
        .find(|p| !taken(p))
        .expect("some suffix is free")
}

/// `prefix` + `.ext` (appended: `with_extension` would eat a dot inside the prefix).
fn with_ext(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// 12345.6 → "12,346".
pub fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "—".into();
    }
    let n = x.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1234.0), "1,234");
        assert_eq!(thousands(63965.0), "63,965");
        assert_eq!(thousands(1234567.0), "1,234,567");
    }
}
