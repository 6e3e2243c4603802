//! `--chart PATH`: an SVG bar chart of files/s per corpus for the rows a user compares —
//! vrift's first ingest into an empty store, vrift's warm re-ingest, `cp -al` and
//! `pnpm install --offline` from a warm store — from the latest record of each corpus in
//! `bench/results/*.json`.
//!
//! Records are read as plain JSON, not through the `Report` types, so older layouts keep
//! loading: a schema 1 record has no pnpm row (its bar is marked "not run"), and a record
//! that cannot be read, or has a schema newer than this harness knows, is skipped with a
//! note. Drawn with plotters' SVG backend only (no font files: the SVG names a generic
//! font family and the viewer renders the text), so it builds anywhere.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

use crate::cases::Case;
use crate::report::{thousands, SCHEMA};

/// One corpus's bars, from its latest record.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub corpus: String,
    /// Start of the run (RFC 3339).
    pub date: String,
    pub record: PathBuf,
    /// files/s per chart row, `None` when the record has no such row.
    pub rates: Vec<Option<f64>>,
}

/// Reads every record in `dir` and keeps the latest per corpus, in corpus order (xsmall,
/// small, medium, large, then any others by name). Returns the groups and notes about
/// records skipped.
pub fn latest_per_corpus(dir: &Path) -> Result<(Vec<Group>, Vec<String>)> {
    let mut notes = Vec::new();
    let mut latest: BTreeMap<String, Group> = BTreeMap::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    for path in paths {
        let group = match read_record(&path) {
            Ok(g) => g,
            Err(e) => {
                notes.push(format!("skipped {}: {e:#}", path.display()));
                continue;
            }
        };
        // RFC 3339 UTC timestamps sort as strings; on a tie the later file name wins.
        match latest.get(&group.corpus) {
            Some(old) if old.date > group.date => {}
            _ => {
                latest.insert(group.corpus.clone(), group);
            }
        }
    }
    let mut groups: Vec<Group> = latest.into_values().collect();
    groups.sort_by_key(|g| (corpus_rank(&g.corpus), g.corpus.clone()));
    Ok((groups, notes))
}

fn corpus_rank(name: &str) -> usize {
    ["xsmall", "small", "medium", "large"]
        .iter()
        .position(|c| *c == name)
        .unwrap_or(usize::MAX)
}

fn read_record(path: &Path) -> Result<Group> {
    let text = std::fs::read_to_string(path)?;
    let v: Value = serde_json::from_str(&text).context("not JSON")?;
    let schema = v["schema"].as_u64().context("no schema version")?;
    if schema == 0 || schema > u64::from(SCHEMA) {
        bail!("schema {schema}, this harness reads 1 to {SCHEMA}");
    }
    let corpus = v["corpus"]["name"]
        .as_str()
        .context("no corpus.name")?
        .to_string();
    let date = v["date"].as_str().context("no date")?.to_string();
    let rows = v["rows"].as_array().context("no rows")?;
    let rate = |case: Case| {
        rows.iter()
            .find(|r| r["case"].as_str().and_then(Case::from_id) == Some(case))
            .and_then(|r| r["files_per_sec"].as_f64())
            .filter(|x| x.is_finite() && *x > 0.0)
    };
    Ok(Group {
        corpus,
        date,
        record: path.to_path_buf(),
        rates: Case::CHART.iter().map(|&c| rate(c)).collect(),
    })
}

/// Bar colors, one per chart row (colorblind-safe Okabe–Ito hues).
const COLORS: [RGBColor; 4] = [
    RGBColor(0, 114, 178),
    RGBColor(86, 180, 233),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
];

const FONT: &str = "sans-serif";

/// Renders the chart of `dir`'s records to `out`.
pub fn render(dir: &Path, out: &Path) -> Result<()> {
    let (groups, notes) = latest_per_corpus(dir)?;
    for n in &notes {
        eprintln!("vrift-bench: chart: {n}");
    }
    if groups.is_empty() {
        bail!("no readable benchmark records in {}", dir.display());
    }
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    draw(&groups, out).map_err(|e| anyhow::anyhow!("drawing {}: {e}", out.display()))?;
    for g in &groups {
        let missing: Vec<&str> = Case::CHART
            .iter()
            .zip(&g.rates)
            .filter(|(_, r)| r.is_none())
            .map(|(c, _)| c.id())
            .collect();
        if !missing.is_empty() {
            eprintln!(
                "vrift-bench: chart: {} ({}) has no {} row",
                g.corpus,
                g.record.display(),
                missing.join(", ")
            );
        }
    }
    eprintln!(
        "vrift-bench: wrote {} ({} corpora)",
        out.display(),
        groups.len()
    );
    Ok(())
}

/// "12.3k" style labels for the bars; the axis uses full thousands separators.
fn short(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.0}k", x / 1e3)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn draw(groups: &[Group], out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let n = groups.len();
    let width = (260 * n as u32 + 160).max(760);
    let root = SVGBackend::new(out, (width, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let (head, rest) = root.split_vertically(78);
    let (body, foot) = rest.split_vertically(432);
    let grey = BLACK.mix(0.6);

    // Title, then the legend in two columns (outside the plot, so it never hides a bar).
    head.draw(&Text::new(
        "Files per second by corpus (latest record each; higher is better)",
        (width as i32 / 2, 10),
        TextStyle::from((FONT, 18)).pos(Pos::new(HPos::Center, VPos::Top)),
    ))?;
    let legend = TextStyle::from((FONT, 12)).pos(Pos::new(HPos::Left, VPos::Center));
    for (j, case) in Case::CHART.iter().enumerate() {
        let x = if j % 2 == 0 { 88 } else { 88 + 300 };
        let y = 42 + 20 * (j as i32 / 2);
        head.draw(&Rectangle::new(
            [(x, y - 6), (x + 12, y + 6)],
            COLORS[j].filled(),
        ))?;
        head.draw(&Text::new(case.chart_label(), (x + 18, y), legend.clone()))?;
    }

    let max = groups
        .iter()
        .flat_map(|g| g.rates.iter().flatten())
        .copied()
        .fold(0.0, f64::max)
        .max(1.0);
    let mut chart = ChartBuilder::on(&body)
        .margin_left(12)
        .margin_right(12)
        .margin_top(8)
        .x_label_area_size(44)
        .y_label_area_size(76)
        .build_cartesian_2d(0f64..n as f64, 0f64..max * 1.08)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .x_label_formatter(&|_| String::new())
        .y_labels(8)
        .light_line_style(TRANSPARENT)
        .bold_line_style(BLACK.mix(0.12))
        .y_desc("files/s")
        .y_label_formatter(&|y| thousands(*y))
        .label_style((FONT, 12))
        .draw()?;

    let bars = Case::CHART.len() as f64;
    let (pad, bar_w) = (0.1, 0.8 / bars);
    let label = TextStyle::from((FONT, 11)).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (j, color) in COLORS.iter().enumerate() {
        let rects = groups.iter().enumerate().filter_map(move |(i, g)| {
            let v = g.rates[j]?;
            let x0 = i as f64 + pad + j as f64 * bar_w;
            Some(Rectangle::new(
                [(x0, 0.0), (x0 + bar_w * 0.92, v)],
                color.filled(),
            ))
        });
        chart.draw_series(rects)?;
        // Value labels above the bars, "not run" where a record has no such row.
        let texts = groups.iter().enumerate().map(|(i, g)| {
            let x = i as f64 + pad + (j as f64 + 0.46) * bar_w;
            match g.rates[j] {
                Some(v) => Text::new(short(v), (x, v), label.clone()),
                None => Text::new("not run".to_string(), (x, 0.0), label.clone()),
            }
        });
        chart.draw_series(texts)?;
    }

    // Corpus names (and the record's date) under each group.
    let under = TextStyle::from((FONT, 13)).pos(Pos::new(HPos::Center, VPos::Top));
    let small = TextStyle::from((FONT, 11))
        .color(&grey)
        .pos(Pos::new(HPos::Center, VPos::Top));
    let top = body.get_base_pixel().1;
    for (i, g) in groups.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        let y = y - top;
        body.draw(&Text::new(g.corpus.clone(), (x, y + 6), under.clone()))?;
        let day = g.date.get(..10).unwrap_or(&g.date).to_string();
        body.draw(&Text::new(day, (x, y + 22), small.clone()))?;
    }
    foot.draw(&Text::new(
        "vrift-bench medians, bench/results/*.json; pnpm counts the files of its own layout. \
         2-vCPU VM shared with other builds: read bench/README.md before comparing.",
        (12, 8),
        TextStyle::from((FONT, 11)).color(&grey),
    ))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(dir: &Path, file: &str, schema: u32, corpus: &str, date: &str, rows: &[(&str, f64)]) {
        let rows: Vec<Value> = rows
            .iter()
            .map(|(case, fps)| serde_json::json!({"case": case, "files_per_sec": fps}))
            .collect();
        let v = serde_json::json!({"schema": schema, "date": date, "corpus": {"name": corpus}, "rows": rows});
        std::fs::write(dir.join(file), v.to_string()).unwrap();
    }

    #[test]
    fn latest_record_per_corpus_in_corpus_order_old_schema_included() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        record(
            d,
            "2026-11-25-medium.json",
            1,
            "medium",
            "2026-11-25T16:00:00Z",
            &[
                ("ingest_empty", 2846.0),
                ("reingest_warm", 61048.0),
                ("cp_al", 18657.0),
            ],
        );
        record(
            d,
            "2026-11-20-small.json",
            2,
            "small",
            "2026-11-20T10:00:00Z",
            &[("ingest_empty", 1.0), ("pnpm_offline", 1.0)],
        );
        record(
            d,
            "2026-11-25-small.json",
            2,
            "small",
            "2026-11-25T17:00:00Z",
            &[
                ("ingest_empty", 6630.0),
                ("reingest_warm", 86805.0),
                ("cp_al", 24060.0),
                ("pnpm_offline", 9000.0),
            ],
        );
        record(
            d,
            "2099-01-01-small.json",
            99,
            "small",
            "2099-01-01T00:00:00Z",
            &[],
        );
        std::fs::write(d.join("broken.json"), "{").unwrap();
        std::fs::write(d.join("2026-11-25-small.md"), "# not json").unwrap();

        let (groups, notes) = latest_per_corpus(d).unwrap();
        let names: Vec<&str> = groups.iter().map(|g| g.corpus.as_str()).collect();
        assert_eq!(names, ["small", "medium"]);
        assert_eq!(groups[0].date, "2026-11-25T17:00:00Z");
        assert_eq!(
            groups[0].rates,
            [Some(6630.0), Some(86805.0), Some(24060.0), Some(9000.0)]
        );
        assert_eq!(
            groups[1].rates,
            [Some(2846.0), Some(61048.0), Some(18657.0), None]
        );
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes.iter().any(|n| n.contains("schema 99")), "{notes:?}");

        let svg = d.join("out/chart.svg");
        render(d, &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<svg"), "{}", &text[..text.len().min(200)]);
        for want in [
            "small",
            "medium",
            "pnpm install --offline",
            "87k",
            "not run",
            "cp -al",
        ] {
            assert!(text.contains(want), "missing {want:?} in the SVG");
        }
    }

    #[test]
    fn records_committed_in_the_repo_still_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
        let (groups, notes) = latest_per_corpus(&dir).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert!(groups.iter().any(|g| g.corpus == "medium"));
        for g in &groups {
            assert!(g.rates[0].is_some(), "{} has no first-ingest row", g.corpus);
        }
    }

    #[test]
    fn short_labels() {
        assert_eq!(short(950.0), "950");
        assert_eq!(short(2846.0), "2.8k");
        assert_eq!(short(86805.0), "87k");
        assert_eq!(short(1_234_567.0), "1.23M");
    }
}
