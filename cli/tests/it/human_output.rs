//! The human outputs a user reads, as `insta` snapshots: the ingest summary, `checkout`,
//! `gc`, `verify`, `doctor` (healthy and with problems, in DESIGN.md's shape) and error lines.
//! What varies from run to run or machine to machine is redacted: paths (`[tmp]`), times,
//! rates and free disk space. A change to any of these outputs is then a visible decision in
//! a snapshot diff, not a `starts_with` that still passes.

use std::path::Path;
use std::process::Output;

use crate::common::*;

/// Replaces the run's paths and the numbers that vary between runs.
fn redact(text: &str, tmp: &Path) -> String {
    let text = text.replace(&*tmp.to_string_lossy(), "[tmp]");
    text.lines()
        .map(|l| match l.split_once("Disk space:") {
            // The machine's free space, and so whether it is "nearly full" (✅ or ⚠️).
            Some(_) => "  [ok or warn] Disk space: [free] available".to_string(),
            None => redact_line(l),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Times (`0.01 s`) and rates (`(364 files/s)`).
fn redact_line(line: &str) -> String {
    let words: Vec<&str> = line.split(' ').collect();
    let mut out: Vec<String> = Vec::with_capacity(words.len());
    for (i, w) in words.iter().enumerate() {
        let next = words.get(i + 1).copied().unwrap_or("");
        let number = |s: &str| !s.is_empty() && s.parse::<f64>().is_ok();
        let redacted = if number(w) && (next == "s" || next.starts_with("s:") || next == "s,") {
            "[t]".to_string()
        } else if w.starts_with('(') && number(&w[1..].replace(',', "")) && next == "files/s)" {
            "([n]".to_string()
        } else {
            w.to_string()
        };
        out.push(redacted);
    }
    out.join(" ")
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", describe(&o));
    o
}

fn stdout_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A small project: two files with the same content, one of its own, a symlink, a script.
fn project(root: &Path) {
    write_file(&root.join("lib/a.js"), b"module.exports = 1;\n", 0o644);
    write_file(
        &root.join("lib/copy-of-a.js"),
        b"module.exports = 1;\n",
        0o644,
    );
    write_file(&root.join("README.md"), b"# p\n", 0o644);
    write_file(&root.join(".bin/run"), b"#!/bin/sh\necho run\n", 0o755);
    symlink("lib/a.js", &root.join("main.js"));
}

#[test]
fn redaction_keeps_what_does_not_vary() {
    assert_eq!(
        redact_line("  time              0.01 s  (364 files/s)"),
        "  time              [t] s  ([n] files/s)"
    );
    assert_eq!(
        redact(
            "  ⚠️  Disk space: 64.08 GB available",
            Path::new("/nowhere")
        ),
        "  [ok or warn] Disk space: [free] available"
    );
    assert_eq!(redact_line("  files 3  (12 B)"), "  files 3  (12 B)");
}

#[test]
fn a_projects_life_in_human_output() {
    let t = tempdir();
    let src = t.path().join("p");
    project(&src);
    let store = t.path().join("store");
    let m = t.path().join("p.vrm");
    let tmp = t.path();

    let ingest = ok(vrift(&store)
        .arg("ingest")
        .arg(&src)
        .arg("-o")
        .arg(&m)
        .output()
        .unwrap());
    insta::assert_snapshot!("ingest_summary", redact(&stdout_of(&ingest), tmp));

    let checkout = ok(vrift(&store)
        .arg("checkout")
        .arg(&m)
        .arg(t.path().join("restored"))
        .output()
        .unwrap());
    insta::assert_snapshot!("checkout", redact(&stdout_of(&checkout), tmp));

    let verify = ok(vrift(&store).arg("verify").output().unwrap());
    insta::assert_snapshot!("verify_clean", redact(&stdout_of(&verify), tmp));

    let gc = ok(vrift(&store).arg("gc").output().unwrap());
    insta::assert_snapshot!("gc_nothing_to_do", redact(&stdout_of(&gc), tmp));

    let doctor = ok(vrift(&store).arg("doctor").output().unwrap());
    insta::assert_snapshot!("doctor_healthy", redact(&stdout_of(&doctor), tmp));
}

/// A store with something to report: a project whose manifest the user deleted (stale), one
/// forgotten (its blobs orphaned), a temp file of a dead process.
#[test]
fn doctor_and_gc_with_problems_to_report() {
    let t = tempdir();
    let tmp = t.path();
    let store = t.path().join("store");
    for name in ["kept", "stale", "forgotten"] {
        let src = t.path().join(name);
        project(&src);
        write_file(&src.join("own.txt"), name.as_bytes(), 0o644);
        ok(vrift(&store)
            .arg("ingest")
            .arg(&src)
            .arg("-o")
            .arg(t.path().join(format!("{name}.vrm")))
            .output()
            .unwrap());
    }
    std::fs::remove_file(t.path().join("stale.vrm")).unwrap();
    ok(vrift(&store)
        .args(["forget", "forgotten"])
        .output()
        .unwrap());
    // A temp file of a process that is gone (pids above pid_max never run).
    write_file(&store.join("tmp/.unpack-99999999-1"), b"half", 0o600);

    let doctor = vrift(&store).arg("doctor").output().unwrap();
    assert_eq!(doctor.status.code(), Some(1), "{}", describe(&doctor));
    insta::assert_snapshot!("doctor_with_problems", redact(&stdout_of(&doctor), tmp));

    let gc = ok(vrift(&store).arg("gc").output().unwrap());
    insta::assert_snapshot!("gc_dry_run", redact(&stdout_of(&gc), tmp));
    let gc = ok(vrift(&store)
        .args(["gc", "--delete", "--prune-stale"])
        .output()
        .unwrap());
    insta::assert_snapshot!("gc_delete", redact(&stdout_of(&gc), tmp));
}

/// Error lines: one line on stderr, `error: ` then what failed and the path.
#[test]
fn error_lines() {
    let t = tempdir();
    let tmp = t.path();
    let store = t.path().join("store");
    let runs: [(&str, Vec<std::ffi::OsString>); 3] = [
        (
            "checkout_missing_manifest",
            vec![
                "checkout".into(),
                t.path().join("nope.vrm").into(),
                t.path().join("out").into(),
            ],
        ),
        (
            "ingest_missing_dir",
            vec![
                "ingest".into(),
                t.path().join("no-such-dir").into(),
                "-o".into(),
                t.path().join("m.vrm").into(),
            ],
        ),
        (
            "bad_duration",
            vec!["gc".into(), "--older-than".into(), "banana".into()],
        ),
    ];
    for (name, args) in runs {
        let o = vrift(&store).args(&args).output().unwrap();
        assert!(!o.status.success(), "{name}: {}", describe(&o));
        let e = redact(&stderr(&o), tmp);
        insta::assert_snapshot!(name, format!("exit {}\n{e}", o.status.code().unwrap_or(-1)));
    }
}
