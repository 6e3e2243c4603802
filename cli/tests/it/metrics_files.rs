//! The shipped Prometheus files pass `promtool`, the dashboard is well-formed, and the
//! node_exporter textfile an ingest writes passes `promtool check metrics` and says what the
//! ingest did.

use crate::metrics_support;

use std::collections::BTreeSet;

use metrics_support::*;
use serde_json::Value;

#[test]
fn scrape_config_and_alert_rules_pass_promtool() {
    let Some(t) = tools(&["promtool"]) else {
        return;
    };
    let dir = dashboards_dir();
    // `check config` also loads the rule files the config names (alerts.yml).
    promtool_check(&t[0], "config", &dir.join("prometheus.yml"));
    promtool_check(&t[0], "rules", &dir.join("alerts.yml"));
}

/// Every expression of a dashboard, wherever it is nested.
pub fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(e)) = m.get("expr") {
                out.push(e.clone());
            }
            for x in m.values() {
                exprs(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

#[test]
fn dashboard_is_importable_and_data_source_agnostic() {
    let text = std::fs::read_to_string(dashboards_dir().join("vrift.json")).unwrap();
    let d: Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let vars = d["templating"]["list"].as_array().expect("templating");
    let ds = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a `datasource` variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    // No panel or target is tied to one Prometheus: all go through the variable.
    fn check_ds(v: &Value, path: &str) {
        match v {
            Value::Object(m) => {
                if let Some(ds) = m.get("datasource") {
                    assert_eq!(ds["uid"], "${datasource}", "{path}: datasource {ds}");
                }
                for (k, x) in m {
                    check_ds(x, &format!("{path}.{k}"));
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    check_ds(x, &format!("{path}[{i}]"));
                }
            }
            _ => {}
        }
    }
    check_ds(&d["panels"], "panels");
    let titles: BTreeSet<String> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["title"].as_str().map(str::to_lowercase))
        .collect();
    for want in [
        "ingest throughput",
        "dedup ratio",
        "new vs reused bytes",
        "stage busy time",
        "fallbacks",
        "store size",
        "orphans over time",
        "projects",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "no panel about {want:?} in {titles:?}"
        );
    }
    let mut all = Vec::new();
    exprs(&d, &mut all);
    assert!(all.len() >= 20, "{all:?}");
    for e in &all {
        assert!(e.contains("vrift_"), "query uses no vrift metric: {e}");
    }
}

#[test]
fn textfile_is_valid_atomic_and_matches_the_run() {
    let tmp = tempdir();
    let store = tmp.path().join("store");
    let src = tmp.path().join("web").join("node_modules");
    let mut files = Vec::new();
    for i in 0..40 {
        // 20 distinct contents, each twice: 20 new blobs, 20 dedup hits.
        files.push((
            format!("p{}/f{i}.js", i % 3),
            format!("module {}\n", i % 20),
        ));
    }
    files.push((".env".into(), "SECRET=1\n".into()));
    write_tree(&src, &files);
    let prom_dir = tmp.path().join("textfile");
    std::fs::create_dir(&prom_dir).unwrap();
    let prom = prom_dir.join("vrift-web.prom");

    let out = vrift(&store)
        .arg("--json")
        .arg("ingest")
        .arg(&src)
        .arg("-o")
        .arg(tmp.path().join("web.vrm"))
        .arg("--metrics-textfile")
        .arg(&prom)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<String> = std::fs::read_dir(&prom_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["vrift-web.prom"], "temp file left behind");
    let text = std::fs::read_to_string(&prom).unwrap();
    if let Some(t) = tools(&["promtool"]) {
        promtool_check_metrics(&t[0], "the textfile", &text);
    }
    let files_total = |outcome| {
        sample(
            &text,
            "vrift_ingest_files_total",
            &[("project", "web"), ("outcome", outcome)],
        )
        .unwrap_or_else(|| panic!("no {outcome} sample in\n{text}"))
    };
    assert_eq!(
        files_total("new_blob"),
        report["blobs_new"].as_f64().unwrap()
    );
    assert_eq!(
        files_total("dedup_hit"),
        report["dedup_hits"].as_f64().unwrap()
    );
    assert_eq!(files_total("excluded"), 1.0);
    assert_eq!(files_total("error"), 0.0);
    assert_eq!(files_total("unchanged"), 0.0);
    assert_eq!(files_total("new_blob"), 20.0);
    let new_bytes = sample(
        &text,
        "vrift_ingest_bytes_total",
        &[("outcome", "new_blob")],
    )
    .unwrap();
    let dedup_bytes = sample(
        &text,
        "vrift_ingest_bytes_total",
        &[("outcome", "dedup_hit")],
    )
    .unwrap();
    assert_eq!(new_bytes + dedup_bytes, report["bytes"].as_f64().unwrap());
    assert_eq!(
        sample(
            &text,
            "vrift_ingest_bytes_total",
            &[("outcome", "excluded")]
        ),
        Some(9.0)
    );
    // Every label combination is there from the start, zero or not.
    for reason in ["exdev", "emlink", "eperm"] {
        assert_eq!(
            sample(&text, "vrift_ingest_fallback_total", &[("reason", reason)]),
            Some(0.0)
        );
    }
    for (kind, severity) in [
        ("unreadable", "error"),
        ("dangling", "warning"),
        ("run", "warning"),
    ] {
        assert_eq!(
            sample(
                &text,
                "vrift_ingest_issues_total",
                &[("kind", kind), ("severity", severity)]
            ),
            Some(0.0),
            "{kind}"
        );
    }
    assert_eq!(
        sample(&text, "vrift_ingest_link_total", &[("method", "hardlink")]),
        Some(40.0)
    );
    assert_eq!(
        sample(&text, "vrift_ingest_duration_seconds_count", &[]),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "vrift_ingest_last_run_success", &[]),
        Some(1.0)
    );

    // A re-ingest: everything unchanged, the file replaced (not appended to).
    let out = vrift(&store)
        .arg("ingest")
        .arg(&src)
        .arg("-o")
        .arg(tmp.path().join("web.vrm"))
        .arg("--metrics-textfile")
        .arg(&prom)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&prom).unwrap();
    assert_eq!(
        sample(
            &text,
            "vrift_ingest_files_total",
            &[("outcome", "unchanged")]
        ),
        Some(40.0)
    );
    assert_eq!(
        sample(
            &text,
            "vrift_ingest_files_total",
            &[("outcome", "new_blob")]
        ),
        Some(0.0)
    );
}
