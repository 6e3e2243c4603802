//! End-to-end tests of `scripts/demo_dedup.sh` on small synthetic `node_modules` trees
//! (`--fixture`, so no npm and no network): every number the demo prints must be the one
//! `vrift status --json` gives for the same store, and a warm re-run must be 100% dedup with
//! zero new blobs. No timing assertions.

use crate::common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::Value;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/demo_dedup.sh")
}

/// `bash scripts/demo_dedup.sh --vrift BIN ARGS...` with no terminal, no color, and no store
/// variable from the caller's environment.
fn demo(args: &[&std::ffi::OsStr], env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new("bash");
    c.arg(script())
        .arg("--vrift")
        .arg(bin())
        .args(args)
        .env_remove("VR_THE_SOURCE")
        .env_remove("VRIFT_DEMO_DIR")
        .env_remove("VRIFT_BENCH_CORPORA")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    output_within(&mut c, 300)
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

/// One package of a fake `node_modules`: its files depend only on name and version, so the
/// same package in two trees has the same contents (what makes cross-project dedup real).
fn package(nm: &Path, rel: &str, name: &str, version: &str) {
    let d = nm.join(rel);
    write_file(
        &d.join("package.json"),
        format!("{{\"name\":\"{name}\",\"version\":\"{version}\"}}\n").as_bytes(),
        0o644,
    );
    // The same license text in every package: in-tree duplicates.
    write_file(
        &d.join("LICENSE"),
        b"MIT License\n\nPermission is hereby granted\n",
        0o644,
    );
    write_file(&d.join(".npmignore"), b"", 0o644);
    for i in 0..4 {
        write_file(
            &d.join(format!("lib/part{i}.js")),
            format!("module.exports = '{name}@{version} part {i}';\n").as_bytes(),
            0o644,
        );
    }
    write_file(
        &d.join("bin/cli.js"),
        format!("#!/usr/bin/env node\nconsole.log('{name}');\n").as_bytes(),
        0o755,
    );
    let seed = name
        .bytes()
        .chain(version.bytes())
        .map(u64::from)
        .sum::<u64>();
    write_file(
        &d.join("dist/bundle.js"),
        &pattern(20_000 + seed as usize, seed),
        0o644,
    );
}

/// A package inside `node_modules`: path, name, version.
type Pkg = (&'static str, &'static str, &'static str);

/// Three projects, in ingest order (sorted names): later ones share packages with earlier
/// ones, and `c-app` holds a nested second copy of a package (in-tree duplicates).
fn build_fixture(root: &Path) -> Vec<(&'static str, PathBuf)> {
    let trees: [(&str, &[Pkg]); 3] = [
        (
            "a-app",
            &[
                ("left-pad", "left-pad", "1.3.0"),
                ("lodash", "lodash", "4.17.21"),
            ],
        ),
        (
            "b-app",
            &[
                ("lodash", "lodash", "4.17.21"),
                ("react", "react", "18.2.0"),
                ("chalk", "chalk", "5.3.0"),
            ],
        ),
        (
            "c-app",
            &[
                ("left-pad", "left-pad", "1.3.0"),
                ("react", "react", "18.2.0"),
                ("chalk", "chalk", "5.3.0"),
                ("express", "express", "4.19.2"),
                ("express/node_modules/chalk", "chalk", "5.3.0"),
                ("react-dom", "react-dom", "18.2.0"),
            ],
        ),
    ];
    let mut out = Vec::new();
    for (project, pkgs) in trees {
        let nm = root.join(project).join("node_modules");
        for (rel, name, version) in pkgs {
            package(&nm, rel, name, version);
        }
        symlink("../chalk/bin/cli.js", &nm.join(".bin/chalk"));
        out.push((project, nm));
    }
    out
}

fn json_stdout(o: &Output) -> Value {
    assert_eq!(o.status.code(), Some(0), "demo failed\n{}", describe(o));
    json_of(o)
}

fn status_json(store: &Path) -> Value {
    let o = vrift(store).args(["--json", "status"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "status failed\n{}", describe(&o));
    json_of(&o)
}

fn canon(p: &str) -> PathBuf {
    fs::canonicalize(p).unwrap_or_else(|e| panic!("canonicalize {p}: {e}"))
}

/// The status entry of the project ingested from `source`.
fn project_at<'a>(status: &'a Value, source: &str) -> &'a Value {
    let want = canon(source);
    status["projects"]
        .as_array()
        .expect("projects")
        .iter()
        .find(|p| Path::new(p["source"].as_str().unwrap()) == want)
        .unwrap_or_else(|| panic!("status lists no project at {source}: {status}"))
}

fn f64_of(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// Checks every row of a scenario against `vrift status --json` of the same store.
fn check_rows_against_status(scenario: &Value, status: &Value) {
    for row in scenario["rows"].as_array().expect("rows") {
        let p = project_at(status, row["source"].as_str().unwrap());
        let name = row["dataset"].as_str().unwrap();
        assert_eq!(p["name"].as_str(), Some(name), "project name of {row}");
        assert_eq!(num(row, "files"), num(p, "files"), "{name}: files");
        assert_eq!(num(row, "blobs"), num(p, "blobs"), "{name}: blobs");
        assert_eq!(
            num(row, "new_blobs"),
            num(p, "blobs") - num(p, "shared_blobs"),
            "{name}: new blobs = blobs - shared_blobs (registry order)"
        );
        assert_eq!(
            num(row, "saved_bytes"),
            num(p, "apparent_bytes") - num(p, "added_bytes"),
            "{name}: saved bytes"
        );
        assert_eq!(num(row, "bytes"), num(p, "apparent_bytes"), "{name}: bytes");
        let files = num(row, "files") as f64;
        let rate = (files - num(row, "new_blobs") as f64) / files;
        assert!(
            (f64_of(row, "dedup_rate") - rate).abs() < 1e-12,
            "{name}: dedup rate"
        );
    }
}

/// Distinct file contents of each tree, read without vrift (before the demo ingests them).
fn contents_of(trees: &[(&str, PathBuf)]) -> Vec<(usize, BTreeSet<Vec<u8>>)> {
    trees
        .iter()
        .map(|(_, nm)| {
            let t = snapshot(nm);
            (file_count(&t), distinct_contents(&t))
        })
        .collect()
}

#[test]
fn demo_numbers_match_status_and_a_warm_rerun_is_total_dedup() {
    let tmp = tempdir();
    let fixture = tmp.path().join("fixture");
    let trees = build_fixture(&fixture);
    let expected = contents_of(&trees);
    let demo_dir = tmp.path().join("demo");
    let store = demo_dir.join("store");
    let base = [
        os("--fixture"),
        fixture.as_os_str(),
        os("--demo-dir"),
        demo_dir.as_os_str(),
    ];

    // Full run: fresh start, then the re-run.
    let mut args = base.to_vec();
    args.push(os("--json"));
    let out = json_stdout(&demo(&args, &[]));
    let status = status_json(&store);
    assert_eq!(
        out["status"]["blobs"], status["blobs"],
        "the demo's final status is this store's"
    );
    let scenarios = out["scenarios"].as_array().expect("scenarios");
    assert_eq!(scenarios.len(), 2, "fresh + rerun: {out}");
    let (fresh, rerun) = (&scenarios[0], &scenarios[1]);
    assert_eq!(fresh["scenario"], "fresh");
    assert_eq!(rerun["scenario"], "rerun");
    check_rows_against_status(fresh, &status);
    check_rows_against_status(rerun, &status);

    // Fresh start: the numbers an independent count predicts, in the given order.
    let rows = fresh["rows"].as_array().unwrap();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["dataset"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a-app", "b-app", "c-app"], "sorted fixture order");
    let mut seen = BTreeSet::new();
    let mut total_new = 0;
    for (i, (row, (files, distinct))) in rows.iter().zip(&expected).enumerate() {
        let new = distinct.difference(&seen).count() as u64;
        assert_eq!(num(row, "files"), *files as u64, "{}: files", names[i]);
        assert_eq!(
            num(row, "blobs"),
            distinct.len() as u64,
            "{}: blobs",
            names[i]
        );
        assert_eq!(num(row, "new_blobs"), new, "{}: new blobs", names[i]);
        assert_eq!(num(row, "registry_position"), i as u64);
        seen.extend(distinct.iter().cloned());
        total_new += new;
    }
    assert!(
        num(&rows[2], "new_blobs") < num(&rows[2], "blobs"),
        "the fixture must share content across projects"
    );
    assert_eq!(
        num(&status, "blobs"),
        total_new,
        "the store holds exactly the fresh start's new blobs (the re-run added none)"
    );
    assert_eq!(num(&fresh["total"], "new_blobs"), total_new);

    // The re-run: 100%, zero new blobs, the same distinct contents per tree.
    let check_rerun = |rerun: &Value| {
        let rows = rerun["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 3);
        for (i, (row, (files, distinct))) in rows.iter().zip(&expected).enumerate() {
            assert_eq!(row["dataset"], format!("{}-rerun", names[i]));
            assert_eq!(num(row, "new_blobs"), 0, "{row}");
            assert_eq!(num(row, "dedup_hits"), *files as u64, "{row}");
            assert_eq!(num(row, "blobs"), distinct.len() as u64, "{row}");
            assert_eq!(f64_of(row, "dedup_rate"), 1.0, "{row}");
            assert_eq!(num(row, "saved_bytes"), num(row, "bytes"), "{row}");
            assert_eq!(num(row, "registry_position"), 3 + i as u64, "{row}");
        }
        assert_eq!(num(&rerun["total"], "new_blobs"), 0);
        assert_eq!(f64_of(&rerun["total"], "dedup_rate"), 1.0);
    };
    check_rerun(rerun);

    // A second --rerun-only on the warm store: the same again, and the registry does not grow.
    let mut args = base.to_vec();
    args.extend([os("--rerun-only"), os("--json")]);
    let out2 = json_stdout(&demo(&args, &[]));
    let status2 = status_json(&store);
    let scenarios2 = out2["scenarios"].as_array().unwrap();
    assert_eq!(scenarios2.len(), 1);
    assert_eq!(scenarios2[0]["scenario"], "rerun");
    check_rows_against_status(&scenarios2[0], &status2);
    check_rerun(&scenarios2[0]);
    assert_eq!(status2["blobs"], status["blobs"], "no new blobs");
    assert_eq!(status2["projects"].as_array().unwrap().len(), 6);
    assert_eq!(num(&status2, "orphans"), 0);
}

#[test]
fn demo_prints_tables_then_status_without_color_in_a_pipe() {
    let tmp = tempdir();
    let fixture = tmp.path().join("fixture");
    build_fixture(&fixture);
    let demo_dir = tmp.path().join("demo");
    let o = demo(
        &[
            os("--fixture"),
            fixture.as_os_str(),
            os("--demo-dir"),
            demo_dir.as_os_str(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for want in [
        "Fresh start: a-app b-app c-app",
        "Re-run: fresh copies",
        "│ Dataset",
        "New blobs",
        "│ c-app-rerun ",
        "100%",
        "VRift CAS Status:",
        "Registered Projects:",
        "--rerun-only",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    assert!(
        !out.contains('\u{1b}'),
        "escape codes off a terminal:\n{out}"
    );
}

#[test]
fn demo_rerun_only_needs_a_fresh_start_first() {
    let tmp = tempdir();
    let fixture = tmp.path().join("fixture");
    build_fixture(&fixture);
    let demo_dir = tmp.path().join("demo");
    let o = demo(
        &[
            os("--fixture"),
            fixture.as_os_str(),
            os("--demo-dir"),
            demo_dir.as_os_str(),
            os("--rerun-only"),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let e = stderr(&o);
    assert!(e.contains("without --rerun-only"), "{e}");
    assert!(!demo_dir.join("store").exists(), "nothing ingested");
}

#[test]
fn demo_never_deletes_a_vr_the_source_store_without_yes() {
    let tmp = tempdir();
    let fixture = tmp.path().join("fixture");
    build_fixture(&fixture);
    // Someone's store, with a project of their own.
    let user_store = tmp.path().join("user-store");
    let mine = tmp.path().join("mine");
    write_file(&mine.join("precious.txt"), b"keep me\n", 0o644);
    ingest_ok(&user_store, &mine, &tmp.path().join("mine.manifest"), &[]);
    let before = status_json(&user_store);
    let demo_dir = tmp.path().join("demo");
    let args = [
        os("--fixture"),
        fixture.as_os_str(),
        os("--demo-dir"),
        demo_dir.as_os_str(),
        os("--fresh-only"),
    ];

    // No terminal to ask, no --yes: a polite refusal, and the store is untouched.
    let o = demo(&args, &[("VR_THE_SOURCE", &user_store)]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let e = stderr(&o);
    assert!(
        e.contains("--yes") && e.contains(&*user_store.to_string_lossy()),
        "{e}"
    );
    assert_eq!(
        status_json(&user_store),
        before,
        "the store must be unchanged"
    );

    // --yes: deleted and refilled by the demo.
    let mut yes = args.to_vec();
    yes.push(os("--yes"));
    let o = demo(&yes, &[("VR_THE_SOURCE", &user_store)]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let after = status_json(&user_store);
    let names: Vec<&str> = after["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a-app", "b-app", "c-app"]);
    assert!(
        !demo_dir.join("store").exists(),
        "VR_THE_SOURCE replaces the demo's own store"
    );
}

#[test]
fn demo_refuses_a_demo_dir_it_did_not_make() {
    let tmp = tempdir();
    let fixture = tmp.path().join("fixture");
    build_fixture(&fixture);
    let demo_dir = tmp.path().join("somebodys-dir");
    write_file(&demo_dir.join("notes.txt"), b"mine\n", 0o644);
    let o = demo(
        &[
            os("--fixture"),
            fixture.as_os_str(),
            os("--demo-dir"),
            demo_dir.as_os_str(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        stderr(&o).contains("not made by this demo"),
        "{}",
        describe(&o)
    );
    assert_eq!(
        fs::read_dir(&demo_dir).unwrap().count(),
        1,
        "nothing written into it"
    );
}

#[test]
fn demo_report_fails_loudly_when_ingest_and_status_disagree() {
    let tmp = tempdir();
    let fixture = tmp.path().join("fixture");
    build_fixture(&fixture);
    let demo_dir = tmp.path().join("demo");
    let o = demo(
        &[
            os("--fixture"),
            fixture.as_os_str(),
            os("--demo-dir"),
            demo_dir.as_os_str(),
            os("--fresh-only"),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    // The demo's own records of that run, one summary doctored: one new blob more than status.
    let records = demo_dir.join("records");
    let mut ingest: Value =
        serde_json::from_slice(&fs::read(records.join("b-app.ingest.json")).unwrap()).unwrap();
    ingest["blobs_new"] = Value::from(num(&ingest, "blobs_new") + 1);
    let doctored = tmp.path().join("doctored.json");
    fs::write(&doctored, ingest.to_string()).unwrap();
    let report = |ingest_b: &Path| {
        Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/demo_dedup_report.py"))
            .args([
                "scenario",
                "--scenario",
                "fresh",
                "--quiet",
                "1",
                "--status",
            ])
            .arg(records.join("fresh.status.json"))
            .arg("--out")
            .arg(tmp.path().join("rows.json"))
            .args(["--row", "b-app"])
            .arg(demo_dir.join("projects/b-app/node_modules"))
            .arg(ingest_b)
            .output()
            .unwrap()
    };
    let ok = report(&records.join("b-app.ingest.json"));
    assert_eq!(ok.status.code(), Some(0), "{}", describe(&ok));
    let bad = report(&doctored);
    assert_eq!(bad.status.code(), Some(1), "{}", describe(&bad));
    let e = stderr(&bad);
    assert!(e.contains("mismatch") && e.contains("new blobs"), "{e}");
}
