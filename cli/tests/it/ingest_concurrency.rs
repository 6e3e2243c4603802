//! Several `vrift ingest` processes at once into one store, with overlapping content: all
//! succeed, every blob still matches its name, every manifest checks out to its source.

use crate::common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use common::*;

/// Source `k` of 4: contents shared by all, by pairs, and its own.
fn build_source(root: &Path, k: usize) {
    build_tricky_tree(&root.join("tricky")); // identical in all four
    for i in 0..600 {
        let c = format!("shared by all {i}\n");
        write_file(
            &root.join(format!("all/{}/f{i}.js", i % 7)),
            c.as_bytes(),
            0o644,
        );
    }
    for i in 0..300 {
        let c = format!("shared by pair {} #{i}\n", k % 2);
        write_file(&root.join(format!("pair/f{i}.js")), c.as_bytes(), 0o644);
    }
    for i in 0..300 {
        let c = format!("only in source {k} #{i}\n");
        write_file(&root.join(format!("own-{k}/f{i}.js")), c.as_bytes(), 0o644);
    }
    // The same content at different paths and with an exec bit in one source.
    let mode = if k == 0 { 0o755 } else { 0o644 };
    write_file(&root.join("bin/tool"), b"#!/bin/sh\necho tool\n", mode);
}

struct Job {
    src: PathBuf,
    out: PathBuf,
    args: Vec<&'static str>,
    original: Tree,
}

fn spawn(store: &Path, j: &Job) -> Child {
    vrift(store)
        .arg("--json")
        .arg("ingest")
        .arg(&j.src)
        .arg("-o")
        .arg(&j.out)
        .args(&j.args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vrift")
}

fn run_all(store: &Path, jobs: &[Job]) -> Vec<serde_json::Value> {
    let children: Vec<Child> = jobs.iter().map(|j| spawn(store, j)).collect();
    children
        .into_iter()
        .zip(jobs)
        .map(|(c, j)| {
            let o = c.wait_with_output().unwrap();
            assert_eq!(
                o.status.code(),
                Some(0),
                "concurrent ingest of {} failed\n{}",
                j.src.display(),
                describe(&o)
            );
            let v = json_of(&o);
            assert_eq!(num(&v, "errors"), 0, "{}: {v}", j.src.display());
            v
        })
        .collect()
}

fn concurrent_round(modes: [&[&'static str]; 4]) {
    let t = tempdir();
    let store = t.path().join("store");
    let jobs: Vec<Job> = modes
        .iter()
        .enumerate()
        .map(|(k, args)| {
            let src = t.path().join(format!("src-{k}"));
            build_source(&src, k);
            Job {
                original: snapshot(&src),
                out: t.path().join(format!("m{k}.vrm")),
                src,
                args: args.to_vec(),
            }
        })
        .collect();
    let reports = run_all(&store, &jobs);

    let mut all: BTreeSet<Vec<u8>> = BTreeSet::new();
    for j in &jobs {
        all.extend(distinct_contents(&j.original));
    }
    let blobs = verify_store(&store);
    assert_eq!(
        blobs.len(),
        all.len(),
        "one blob per distinct content over all sources"
    );
    let new_total: u64 = reports.iter().map(|v| num(v, "blobs_new")).sum();
    assert_eq!(
        new_total,
        all.len() as u64,
        "each blob counted new exactly once: {reports:?}"
    );

    for (k, j) in jobs.iter().enumerate() {
        assert_no_leftovers(&store, &j.src);
        let dest = t.path().join(format!("restored-{k}"));
        checkout_ok(&store, &j.out, &dest);
        assert_trees_equal(
            &j.original,
            &snapshot(&dest),
            &format!("source {k} {:?}", j.args),
        );
        if j.args.is_empty() {
            assert_trees_equal(&j.original, &snapshot(&j.src), "solid source untouched");
        }
    }

    // All at once again: nothing new, unchanged trees skipped.
    let again = run_all(&store, &jobs);
    for (v, j) in again.iter().zip(&jobs) {
        assert_eq!(num(v, "blobs_new"), 0, "{:?}: {v}", j.args);
        if !j.args.contains(&"phantom") {
            assert_eq!(num(v, "skipped"), num(v, "files"), "{:?}: {v}", j.args);
        }
    }
    assert_eq!(verify_store(&store).len(), all.len());
}

#[test]
fn four_concurrent_solid_ingests_with_overlapping_content() {
    concurrent_round([&[], &[], &[], &[]]);
}

#[test]
fn four_concurrent_ingests_in_mixed_modes() {
    concurrent_round([
        &[],
        &["--tier", "tier1"],
        &["--mode", "phantom"],
        &["--mode", "phantom", "--tier", "tier1", "-j", "1"],
    ]);
}

/// Two processes ingesting the very same tree at once (e.g. two CI steps): both succeed,
/// the tree keeps its contents, both manifests check out to it.
#[test]
fn two_concurrent_ingests_of_the_same_tree() {
    let t = tempdir();
    let store = t.path().join("store");
    let src = t.path().join("src");
    build_source(&src, 0);
    let original = snapshot(&src);
    let jobs: Vec<Job> = (0..2)
        .map(|k| Job {
            src: src.clone(),
            out: t.path().join(format!("m{k}.vrm")),
            args: vec![],
            original: original.clone(),
        })
        .collect();
    run_all(&store, &jobs);
    assert_eq!(
        verify_store(&store).len(),
        distinct_contents(&original).len()
    );
    assert_trees_equal(&original, &snapshot(&src), "source after two ingests");
    assert_no_leftovers(&store, &src);
    for k in 0..2 {
        let dest = t.path().join(format!("restored-{k}"));
        checkout_ok(&store, &t.path().join(format!("m{k}.vrm")), &dest);
        assert_trees_equal(&original, &snapshot(&dest), "checkout");
    }
    fs::remove_dir_all(t.path().join("restored-0")).unwrap();
}
