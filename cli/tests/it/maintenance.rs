//! End-to-end tests of the store maintenance commands (status, gc, doctor, verify, registry,
//! clean) on real trees, real processes and a real store.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The binary under test (`VRIFT_TEST_BIN` or this build's) on `store`.
fn vrift(store: &Path) -> Command {
    let mut c = Command::new(crate::common::bin());
    c.arg("--the-source-root")
        .arg(store)
        .env_remove("VR_THE_SOURCE");
    c
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn vrift");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad json ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Writes a project whose files have the given contents; returns the set of contents.
fn project(dir: &Path, contents: &[String]) -> BTreeSet<String> {
    for (i, c) in contents.iter().enumerate() {
        let p = dir.join(format!("pkg{}/file{i}.js", i % 7));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, c).unwrap();
    }
    contents.iter().cloned().collect()
}

fn content(n: usize) -> String {
    format!("module.exports = {n}; // {}\n", "x".repeat(n % 50))
}

fn ingest(store: &Path, src: &Path, out: &Path, name: &str) -> Value {
    json(&run_ok(
        vrift(store)
            .args(["--json", "ingest"])
            .arg(src)
            .arg("-o")
            .arg(out)
            .args(["--name", name]),
    ))
}

fn blobs_on_disk(store: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![store.join("blake3")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path());
            }
        }
    }
    out
}

fn blob_name(c: &str) -> String {
    format!("{}_{}.bin", blake3::hash(c.as_bytes()).to_hex(), c.len())
}

/// Reads a tree into path → (content, mode) for exact comparison.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let md = e.metadata().unwrap();
            if md.is_dir() {
                stack.push(e.path());
            } else {
                out.insert(
                    e.path().strip_prefix(root).unwrap().to_path_buf(),
                    (fs::read(e.path()).unwrap(), md.permissions().mode() & 0o111),
                );
            }
        }
    }
    out
}

struct Three {
    _tmp: tempfile::TempDir,
    store: PathBuf,
    srcs: Vec<PathBuf>,
    outs: Vec<PathBuf>,
    sets: Vec<BTreeSet<String>>,
    snaps: Vec<BTreeMap<PathBuf, (Vec<u8>, u32)>>,
}

/// Three overlapping projects: p1 = 0..300, p2 = 200..600, p3 = 100..250 ∪ 550..700.
fn three_projects() -> Three {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let ranges: [Vec<usize>; 3] = [
        (0..300).collect(),
        (200..600).collect(),
        (100..250).chain(550..700).collect(),
    ];
    let mut t = Three {
        store,
        srcs: vec![],
        outs: vec![],
        sets: vec![],
        snaps: vec![],
        _tmp: tmp,
    };
    for (i, r) in ranges.iter().enumerate() {
        let src = t._tmp.path().join(format!("p{i}"));
        let contents: Vec<String> = r.iter().map(|&n| content(n)).collect();
        t.sets.push(project(&src, &contents));
        t.snaps.push(snapshot(&src));
        let out = t._tmp.path().join(format!("p{i}.manifest"));
        ingest(&t.store, &src, &out, &format!("project{}", i + 1));
        t.srcs.push(src);
        t.outs.push(out);
    }
    t
}

#[test]
fn status_matches_an_independent_count_and_gc_removes_exactly_the_unique_blobs() {
    let t = three_projects();
    let st = json(&run_ok(vrift(&t.store).args(["--json", "status"])));
    let all: BTreeSet<&String> = t.sets.iter().flatten().collect();
    assert_eq!(st["blobs"].as_u64().unwrap(), all.len() as u64);
    assert_eq!(st["orphans"].as_u64().unwrap(), 0);
    let projects = st["projects"].as_array().unwrap();
    assert_eq!(projects.len(), 3);
    for (i, p) in projects.iter().enumerate() {
        let mine = &t.sets[i];
        let earlier: BTreeSet<&String> = t.sets[..i].iter().flatten().collect();
        let others: BTreeSet<&String> = t
            .sets
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, s)| s)
            .collect();
        let unique = mine.iter().filter(|c| !others.contains(c)).count() as u64;
        let shared = mine.iter().filter(|c| earlier.contains(c)).count() as u64;
        let added: u64 = mine
            .iter()
            .filter(|c| !earlier.contains(c))
            .map(|c| c.len() as u64)
            .sum();
        assert_eq!(p["name"], format!("project{}", i + 1));
        assert_eq!(
            p["files"].as_u64().unwrap(),
            mine.len() as u64,
            "files of {p}"
        );
        assert_eq!(p["unique_blobs"].as_u64().unwrap(), unique, "unique of {p}");
        assert_eq!(p["shared_blobs"].as_u64().unwrap(), shared, "shared of {p}");
        assert_eq!(p["added_bytes"].as_u64().unwrap(), added, "added of {p}");
        let new = mine.iter().filter(|c| !earlier.contains(c)).count() as u64;
        assert_eq!(p["new_blobs"].as_u64().unwrap(), new, "new of {p}");
        // One frame that adds up: what it brought plus what it found make its blobs.
        assert_eq!(
            new + shared,
            p["blobs"].as_u64().unwrap(),
            "new + shared of {p}"
        );
    }
    let new_total: u64 = projects
        .iter()
        .map(|p| p["new_blobs"].as_u64().unwrap())
        .sum();
    assert_eq!(new_total, all.len() as u64, "the new blobs of all projects");
    let added_total: u64 = projects
        .iter()
        .map(|p| p["added_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(added_total, st["referenced_bytes"].as_u64().unwrap());
    let apparent: u64 = t.sets.iter().flatten().map(|c| c.len() as u64).sum();
    assert_eq!(st["apparent_bytes"].as_u64().unwrap(), apparent);

    // The human table has the DESIGN.md shape; the store's path and its size on disk (file
    // system blocks) are the only parts that vary from machine to machine.
    let human = String::from_utf8(run_ok(vrift(&t.store).arg("status")).stdout).unwrap();
    let stable: Vec<String> = human
        .lines()
        .map(|l| {
            if l.starts_with("  CAS Location:") {
                "  CAS Location: [store]".to_string()
            } else if let Some((_, content)) = l
                .strip_prefix("  Total Size:   ")
                .and_then(|r| r.split_once(" on disk "))
            {
                format!("  Total Size:   [disk] on disk {content}")
            } else {
                l.to_string()
            }
        })
        .collect();
    insta::assert_snapshot!("status_three_projects", stable.join("\n"));
    assert!(human.starts_with("VRift CAS Status:"), "{human}");
    assert!(
        human.contains("│ Project") && human.contains("│ Unique Blobs │") && human.contains("+"),
        "{human}"
    );
    assert!(
        human.contains("Orphaned Blobs: 0 (run `vrift gc` to check)"),
        "{human}"
    );

    let gc = json(&run_ok(vrift(&t.store).args(["--json", "gc"])));
    assert_eq!(gc["orphans"].as_u64().unwrap(), 0);

    // Project 2 goes away: its manifest and its source.
    fs::remove_file(&t.outs[1]).unwrap();
    fs::remove_dir_all(&t.srcs[1]).unwrap();
    let before = blobs_on_disk(&t.store);
    let pruned = json(&run_ok(vrift(&t.store).args([
        "--json",
        "gc",
        "--prune-stale",
    ])));
    assert_eq!(pruned["pruned"], serde_json::json!(["project2"]));
    let unique2: BTreeSet<&String> = t.sets[1]
        .iter()
        .filter(|c| !t.sets[0].contains(*c) && !t.sets[2].contains(*c))
        .collect();
    assert_eq!(pruned["orphans"].as_u64().unwrap(), unique2.len() as u64);
    assert_eq!(blobs_on_disk(&t.store), before, "a dry run deletes nothing");

    // Right after ingest, the age guard spares everything (pruning happens: --delete).
    let young = json(&run_ok(vrift(&t.store).args([
        "--json",
        "gc",
        "--prune-stale",
        "--delete",
        "--older-than",
        "2h",
    ])));
    assert_eq!(young["deleted"].as_u64().unwrap(), 0);
    assert_eq!(young["too_young"].as_u64().unwrap(), unique2.len() as u64);
    assert_eq!(blobs_on_disk(&t.store), before);

    let del = json(&run_ok(vrift(&t.store).args(["--json", "gc", "--delete"])));
    assert_eq!(del["deleted"].as_u64().unwrap(), unique2.len() as u64);
    let after = blobs_on_disk(&t.store);
    let removed: BTreeSet<String> = before
        .difference(&after)
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let expect: BTreeSet<String> = unique2.iter().map(|c| blob_name(c)).collect();
    assert_eq!(removed, expect, "exactly project2's unique blobs go");

    for i in [0, 2] {
        let dest = t._tmp.path().join(format!("restored{i}"));
        run_ok(vrift(&t.store).arg("checkout").arg(&t.outs[i]).arg(&dest));
        assert_eq!(
            snapshot(&dest),
            t.snaps[i],
            "project{} checks out identically",
            i + 1
        );
    }
}

#[test]
fn gc_racing_ingests_never_deletes_a_referenced_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let seed = tmp.path().join("seed");
    project(&seed, &[content(1)]);
    ingest(&store, &seed, &tmp.path().join("seed.manifest"), "seed");
    for round in 0..4 {
        let src = tmp.path().join(format!("r{round}"));
        let contents: Vec<String> = (0..1500).map(|n| content(n + round * 700)).collect();
        project(&src, &contents);
        let snap = snapshot(&src);
        let out = tmp.path().join(format!("r{round}.manifest"));
        let mut ing = vrift(&store)
            .args(["--json", "ingest"])
            .arg(&src)
            .arg("-o")
            .arg(&out)
            .spawn()
            .unwrap();
        let gcs: Vec<_> = (0..3)
            .map(|_| {
                vrift(&store)
                    .args(["--json", "gc", "--delete"])
                    .output()
                    .unwrap()
            })
            .collect();
        assert!(ing.wait().unwrap().success());
        for g in gcs {
            assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
        }
        run_ok(vrift(&store).args(["gc", "--delete"]));
        let dest = tmp.path().join(format!("restored{round}"));
        run_ok(vrift(&store).arg("checkout").arg(&out).arg(&dest));
        assert_eq!(snapshot(&dest), snap, "round {round}");
    }
}

#[test]
fn verify_detects_a_blob_changed_behind_the_stores_back_and_repair_drops_it() {
    let t = three_projects();
    let ok = json(&run_ok(vrift(&t.store).args(["--json", "verify"])));
    assert_eq!(ok["corrupt"].as_array().unwrap().len(), 0);
    // Someone writes into a hard-linked project file (root ignores the missing write bit).
    let victim = t.srcs[0].join("pkg0/file0.js");
    let mut perm = fs::metadata(&victim).unwrap().permissions();
    perm.set_mode(0o644);
    fs::set_permissions(&victim, perm).unwrap();
    fs::write(&victim, b"tampered").unwrap();
    let out = vrift(&t.store).args(["--json", "verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    let corrupt = v["corrupt"].as_array().unwrap();
    assert_eq!(corrupt.len(), 1, "{v}");
    assert!(corrupt[0]
        .as_str()
        .unwrap()
        .ends_with(&blob_name(&content(0))));
    let doctor = vrift(&t.store)
        .args(["doctor", "--sample", "100000"])
        .output()
        .unwrap();
    assert_eq!(doctor.status.code(), Some(1), "doctor flags it");
    let rep = json(&run_ok(
        vrift(&t.store).args(["--json", "verify", "--repair"]),
    ));
    assert_eq!(rep["repaired"].as_u64().unwrap(), 1);
    let again = json(&run_ok(vrift(&t.store).args(["--json", "verify"])));
    assert_eq!(again["corrupt"].as_array().unwrap().len(), 0);
}

#[test]
fn registry_rebuild_restores_every_project() {
    let t = three_projects();
    // The first project ingested again, later: its last ingest is now the newest, but it
    // keeps its place in the registration order (which status attributes new blobs by).
    let first = json(&run_ok(vrift(&t.store).args(["--json", "registry"])))["projects"][0].clone();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    run_ok(
        vrift(&t.store)
            .arg("ingest")
            .arg(first["source"].as_str().unwrap())
            .arg("-o")
            .arg(first["manifest"].as_str().unwrap())
            .arg("--name")
            .arg(first["name"].as_str().unwrap()),
    );
    let before = json(&run_ok(vrift(&t.store).args(["--json", "status"])));
    // Who brought which blobs, in order: unchanged by a rebuild.
    let attribution = |v: &Value| -> Vec<(String, u64, u64)> {
        v["projects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["source"].as_str().unwrap().to_string(),
                    p["new_blobs"].as_u64().unwrap(),
                    p["shared_blobs"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    run_ok(vrift(&t.store).args(["registry", "--rebuild"]));
    let rebuilt = json(&run_ok(vrift(&t.store).args(["--json", "status"])));
    assert_eq!(
        attribution(&rebuilt),
        attribution(&before),
        "rebuild with the registry"
    );
    fs::remove_file(t.store.join("registry.json")).unwrap();
    let empty = json(&run_ok(vrift(&t.store).args(["--json", "status"])));
    assert_eq!(empty["projects"].as_array().unwrap().len(), 0);
    run_ok(vrift(&t.store).args(["registry", "--rebuild"]));
    let after = json(&run_ok(vrift(&t.store).args(["--json", "status"])));
    let key = |v: &Value| -> BTreeSet<(String, u64, u64)> {
        v["projects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["source"].as_str().unwrap().to_string(),
                    p["files"].as_u64().unwrap(),
                    p["blobs"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(key(&after), key(&before));
    // Lost registry: the order comes back from the stamps beside the cached manifests.
    assert_eq!(
        attribution(&after),
        attribution(&before),
        "rebuild from nothing"
    );
    // A corrupt registry is reported, not overwritten, and rebuild fixes it.
    fs::write(t.store.join("registry.json"), b"{ garbage").unwrap();
    let doc = vrift(&t.store).arg("doctor").output().unwrap();
    assert_eq!(doc.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&doc.stdout).contains("registry --rebuild"));
    let src = t._tmp.path().join("p3");
    project(&src, &[content(9999)]);
    let failed = vrift(&t.store)
        .arg("ingest")
        .arg(&src)
        .arg("-o")
        .arg(t._tmp.path().join("p3.m"))
        .output()
        .unwrap();
    assert!(
        !failed.status.success(),
        "ingest must not silently replace a corrupt registry"
    );
    assert_eq!(
        fs::read(t.store.join("registry.json")).unwrap(),
        b"{ garbage"
    );
    run_ok(vrift(&t.store).args(["registry", "--rebuild"]));
    // The failed ingest still wrote its manifest and blobs; only its registration failed, so
    // the rebuild (from the cached manifests) knows it too.
    let mut expect = key(&before);
    expect.insert((src.display().to_string(), 1, 1));
    assert_eq!(
        key(&json(&run_ok(vrift(&t.store).args(["--json", "status"])))),
        expect
    );
}

#[test]
fn clean_fix_perms_gives_trees_back_and_refuses_non_stores() {
    let t = three_projects();
    let f = t.srcs[0].join("pkg1/file1.js");
    assert_eq!(
        fs::metadata(&f).unwrap().permissions().mode() & 0o222,
        0,
        "ingest strips write bits"
    );
    let refused = vrift(&t.store).args(["clean", "--all"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2), "without --force it refuses");
    assert!(t.store.join("blake3").is_dir());
    run_ok(vrift(&t.store).args(["clean", "--all", "--force", "--yes", "--fix-perms"]));
    assert!(!t.store.exists(), "store gone");
    for src in &t.srcs {
        for (p, _) in snapshot(src) {
            let md = fs::metadata(src.join(&p)).unwrap();
            assert_eq!(
                md.permissions().mode() & 0o200,
                0o200,
                "{} writable again",
                p.display()
            );
        }
    }
    assert_eq!(snapshot(&t.srcs[0]), t.snaps[0], "contents untouched");

    // A directory that is not a store is never wiped.
    let home_like = t._tmp.path().join("home");
    fs::create_dir_all(home_like.join("docs")).unwrap();
    fs::write(home_like.join("docs/precious.txt"), b"keep me").unwrap();
    let out = vrift(&home_like)
        .args(["clean", "--all", "--force", "--yes"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("store"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read(home_like.join("docs/precious.txt")).unwrap(),
        b"keep me"
    );
    // And without a terminal it will not proceed without --yes.
    let t2 = three_projects();
    let out = vrift(&t2.store)
        .args(["clean", "--all", "--force"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(t2.store.join("blake3").is_dir());
}

#[test]
fn doctor_report_shape_and_exit_status() {
    let t = three_projects();
    let out = run_ok(vrift(&t.store).arg("doctor"));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("VRift Doctor Report:"), "{text}");
    for line in [
        "✅ Registry: valid (3 manifests)",
        "✅ CAS permissions: OK",
        "✅ Lock: not held",
        "Disk space:",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    // Stale: the manifest file is gone (the source alone is not enough: the manifest can
    // still restore it).
    fs::remove_dir_all(&t.srcs[2]).unwrap();
    fs::remove_file(&t.outs[2]).unwrap();
    let out = vrift(&t.store).arg("doctor").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("⚠️  Stale manifests: 1"), "{text}");
    assert!(text.contains("Run `vrift gc --prune-stale`"), "{text}");
}
