//! Round trip: `vrift ingest` then `vrift checkout` reproduces an awkward tree exactly, for
//! every mode and tier, and the source is left the way each mode/tier promises.

use crate::common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Solid,
    Phantom,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tier {
    Tier1,
    Tier2,
}

fn count(t: &Tree, f: impl Fn(&Node) -> bool) -> u64 {
    t.values().filter(|n| f(n)).count() as u64
}

/// Runs the two `.bin` entry points of a (restored or source) tree.
fn assert_bin_scripts_run(root: &Path) {
    let o = Command::new(root.join("node_modules/.bin/run-me"))
        .output()
        .expect("run .bin/run-me");
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "bin-ok\n");
    let o = Command::new(root.join("node_modules/.bin/left-pad"))
        .arg("x")
        .output()
        .expect("run .bin/left-pad");
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "left-pad-ok x\n");
}

fn roundtrip(mode: Mode, tier: Tier) {
    let t = tempdir();
    let src = t.path().join("project");
    build_tricky_tree(&src);
    let original = snapshot(&src);
    let store = t.path().join("store");
    let out = t.path().join("project.vrm");
    let mode_s = match mode {
        Mode::Solid => "solid",
        Mode::Phantom => "phantom",
    };
    let tier_s = match tier {
        Tier::Tier1 => "tier1",
        Tier::Tier2 => "tier2",
    };

    let v = ingest_ok(&store, &src, &out, &["--mode", mode_s, "--tier", tier_s]);
    let files = count(&original, |n| matches!(n, Node::File { .. }));
    let symlinks = count(&original, |n| matches!(n, Node::Symlink { .. }));
    let dirs = count(&original, |n| matches!(n, Node::Dir { .. }));
    let bytes: u64 = original
        .values()
        .map(|n| match n {
            Node::File { content, .. } => content.len() as u64,
            _ => 0,
        })
        .sum();
    let distinct = distinct_contents(&original);
    assert_eq!(num(&v, "files"), files, "{v}");
    assert_eq!(num(&v, "symlinks"), symlinks, "{v}");
    let d = num(&v, "dirs");
    assert!(
        d == dirs || d == dirs + 1,
        "dirs {d}, tree has {dirs} (+ root): {v}"
    );
    assert_eq!(num(&v, "bytes"), bytes, "{v}");
    assert_eq!(num(&v, "excluded"), 0, "{v}");
    assert_eq!(num(&v, "skipped"), 0, "{v}");
    assert_eq!(num(&v, "blobs_new"), distinct.len() as u64, "{v}");
    assert_eq!(
        num(&v, "blobs_new") + num(&v, "dedup_hits"),
        files,
        "every file is a new blob or a dedup hit: {v}"
    );
    assert_eq!(
        Path::new(v["manifest"].as_str().unwrap()),
        out,
        "manifest path in the report"
    );
    assert!(out.is_file(), "manifest written");

    // The store: one blob per distinct content, each named by its bytes.
    let blobs = verify_store(&store);
    assert_eq!(blobs.len(), distinct.len(), "one blob per distinct content");
    assert_no_leftovers(&store, &src);
    let journal = t.path().join("project.vrm.journal");
    assert!(!journal.exists(), "phantom journal left behind");

    // What is left at the source.
    let store_c = fs::canonicalize(&store).unwrap();
    let now = snapshot(&src);
    for (rel, node) in &original {
        let p = join(&src, rel);
        match node {
            Node::File { content, mode: m } => match (mode, tier) {
                (Mode::Solid, Tier::Tier2) => {
                    assert_eq!(now.get(rel), Some(node), "{} changed", show(rel));
                    // solid: the project file is the blob's inode (no exec-bit conflicts here)
                    let blob = fs::metadata(blob_path_of(&store, content)).unwrap();
                    let md = fs::symlink_metadata(&p).unwrap();
                    assert_eq!(
                        (md.dev(), md.ino()),
                        (blob.dev(), blob.ino()),
                        "{} is not linked to its blob",
                        show(rel)
                    );
                }
                (_, Tier::Tier1) => {
                    let target = fs::read_link(&p)
                        .unwrap_or_else(|e| panic!("{} is not a symlink: {e}", show(rel)));
                    assert_eq!(
                        target,
                        blob_path_of(&store_c, content),
                        "{} must point at its blob",
                        show(rel)
                    );
                    assert_eq!(&fs::read(&p).unwrap(), content, "{}", show(rel));
                    let md = fs::metadata(&p).unwrap();
                    assert_eq!(
                        md.mode() & 0o111,
                        m & 0o111,
                        "exec bits of {} (through its symlink)",
                        show(rel)
                    );
                }
                (Mode::Phantom, Tier::Tier2) => {
                    assert!(
                        fs::symlink_metadata(&p).is_err(),
                        "phantom: {} should have moved into the store",
                        show(rel)
                    );
                }
            },
            // Directories and symlinks stay as they were in every mode.
            other => assert_eq!(now.get(rel), Some(other), "{} changed", show(rel)),
        }
    }
    let extra: Vec<String> = now
        .keys()
        .filter(|k| !original.contains_key(*k))
        .map(|k| show(k))
        .collect();
    assert!(extra.is_empty(), "new entries in the source: {extra:?}");
    if mode == Mode::Solid || tier == Tier::Tier1 {
        assert_bin_scripts_run(&src);
    }

    // Checkout reproduces the original tree exactly.
    let restored = t.path().join("restored");
    checkout_ok(&store, &out, &restored);
    assert_trees_equal(&original, &snapshot(&restored), "checkout vs original");
    assert_bin_scripts_run(&restored);
    // Checkout must not have damaged the store.
    assert_eq!(verify_store(&store).len(), distinct.len());
    assert_no_leftovers(&store, &restored);

    // And a second checkout of the same manifest is just as good.
    let again = t.path().join("restored-again");
    checkout_ok(&store, &out, &again);
    assert_trees_equal(&original, &snapshot(&again), "second checkout vs original");
}

#[test]
fn roundtrip_solid_tier2() {
    roundtrip(Mode::Solid, Tier::Tier2);
}

#[test]
fn roundtrip_solid_tier1() {
    roundtrip(Mode::Solid, Tier::Tier1);
}

#[test]
fn roundtrip_phantom_tier2() {
    roundtrip(Mode::Phantom, Tier::Tier2);
}

#[test]
fn roundtrip_phantom_tier1() {
    roundtrip(Mode::Phantom, Tier::Tier1);
}

/// One thread, and each io backend: same result. `uring` may be refused with a clear error
/// where the kernel does not offer io_uring, but must not produce a different tree.
#[test]
fn roundtrip_single_thread_and_each_io_backend() {
    for (i, extra) in [
        &["-j", "1", "--io-backend", "threads"][..],
        &["--io-backend", "auto"],
        &["--io-backend", "uring"],
    ]
    .into_iter()
    .enumerate()
    {
        let t = tempdir();
        let src = t.path().join("project");
        build_tricky_tree(&src);
        let original = snapshot(&src);
        let store = t.path().join("store");
        let out = t.path().join("m.vrm");
        let o = ingest_raw(&store, &src, &out, extra);
        assert_no_panic(&o);
        if i == 2 && o.status.code() == Some(1) {
            assert!(
                stderr(&o).contains("io_uring"),
                "uring refused without saying why\n{}",
                describe(&o)
            );
            eprintln!("io_uring backend refused here: {}", stderr(&o).trim());
            continue;
        }
        assert_eq!(o.status.code(), Some(0), "{extra:?}\n{}", describe(&o));
        assert_eq!(num(&json_of(&o), "errors"), 0);
        let restored = t.path().join("restored");
        checkout_ok(&store, &out, &restored);
        assert_trees_equal(&original, &snapshot(&restored), &format!("{extra:?}"));
        verify_store(&store);
    }
}

/// `vrift ingest . -o vrift.manifest`: the manifest (and its journal) inside the tree are
/// never ingested, also not on the second run.
#[test]
fn manifest_inside_the_tree_is_not_ingested() {
    for mode in ["solid", "phantom"] {
        let t = tempdir();
        let src = t.path().join("project");
        build_tricky_tree(&src);
        let original = snapshot(&src);
        let store = t.path().join("store");
        let out = src.join("vrift.manifest");
        let v = ingest_ok(&store, &src, &out, &["--mode", mode]);
        assert_eq!(
            num(&v, "files"),
            file_count(&original) as u64,
            "{mode}: {v}"
        );
        // A second run (phantom: of a tree whose files now live in the store).
        let v2 = ingest_ok(&store, &src, &out, &["--mode", mode]);
        assert_eq!(num(&v2, "blobs_new"), 0, "{mode}: {v2}");
        assert_eq!(num(&v2, "excluded"), 0, "{mode}: {v2}");
        let restored = t.path().join("restored");
        checkout_ok(&store, &out, &restored);
        assert_trees_equal(&original, &snapshot(&restored), mode);
    }
}

/// A relative DIR and a relative -o work from the current directory.
#[test]
fn relative_paths_from_the_current_directory() {
    let t = tempdir();
    build_tricky_tree(&t.path().join("project"));
    let original = snapshot(&t.path().join("project"));
    let o = vrift(Path::new("store"))
        .current_dir(t.path())
        .args(["--json", "ingest", "project", "-o", "m.vrm"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let o = vrift(Path::new("store"))
        .current_dir(t.path())
        .args(["checkout", "m.vrm", "restored"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert_trees_equal(&original, &snapshot(&t.path().join("restored")), "relative");
}

/// Checkout refuses a non-empty destination instead of mixing trees, and says so.
#[test]
fn checkout_into_a_non_empty_directory_is_refused() {
    let t = tempdir();
    let src = t.path().join("project");
    build_tricky_tree(&src);
    let store = t.path().join("store");
    let out = t.path().join("m.vrm");
    ingest_ok(&store, &src, &out, &[]);
    let dest = t.path().join("dest");
    write_file(&dest.join("mine.txt"), b"do not touch\n", 0o644);
    let o = checkout_raw(&store, &out, &dest);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        stderr(&o).contains(&*dest.to_string_lossy()),
        "{}",
        describe(&o)
    );
    assert_eq!(fs::read(dest.join("mine.txt")).unwrap(), b"do not touch\n");
    assert_eq!(fs::read_dir(&dest).unwrap().count(), 1);
    // An existing empty directory is fine.
    let empty = t.path().join("empty");
    fs::create_dir(&empty).unwrap();
    checkout_ok(&store, &out, &empty);
    assert_trees_equal(&snapshot(&src), &snapshot(&empty), "into an empty dir");
}

/// A store inside the tree being ingested (e.g. `vrift ingest ~` with the default
/// `~/.vrift/the_source`) must not ingest itself: its blobs, registry and lock files are not
/// part of the project, and re-ingesting must not hang.
#[test]
fn store_inside_the_tree_is_left_out() {
    let t = tempdir();
    let src = t.path().join("home");
    write_file(&src.join("a.txt"), b"a\n", 0o644);
    write_file(&src.join("empty"), b"", 0o644);
    // The store's parent directory is an ordinary (empty) directory of the tree.
    fs::create_dir(src.join(".vrift")).unwrap();
    let original = snapshot(&src);
    let store = src.join(".vrift/the_source");
    let mut reports = Vec::new();
    for run in 0..2 {
        // (A hang here is the bug: the second run waits on its own lock forever.)
        let o = output_within(
            vrift(&store)
                .arg("--json")
                .arg("ingest")
                .arg(&src)
                .arg("-o")
                .arg(t.path().join("m.vrm")),
            60,
        );
        assert_eq!(o.status.code(), Some(0), "run {run}\n{}", describe(&o));
        reports.push(json_of(&o));
    }
    for (run, v) in reports.iter().enumerate() {
        assert_eq!(num(v, "files"), 2, "run {run}: the store was ingested: {v}");
    }
    let restored = t.path().join("restored");
    checkout_ok(&store, &t.path().join("m.vrm"), &restored);
    assert_trees_equal(&original, &snapshot(&restored), "store left out");
}
