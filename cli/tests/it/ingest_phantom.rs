//! Phantom mode under `kill -9`: at any moment every original file is either still at its
//! path with its content, or recorded in a durable manifest whose blob is in the store; a
//! rerun (or `vrift ingest --resume -o OUT`) finishes the job and a checkout gives the tree back.

use crate::common;

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use vrift_manifest::Manifest;

const N_FILES: usize = 3000;

/// A few thousand files (with duplicates), plus symlinks, executables, an empty dir.
fn build_crash_tree(root: &Path) -> Tree {
    build_many_files(root, N_FILES, 1500, "crash");
    write_file(
        &root.join("node_modules/.bin/run"),
        b"#!/bin/sh\necho ran\n",
        0o755,
    );
    write_file(&root.join("big.bin"), &pattern((2 << 20) + 3, 9), 0o644);
    write_file(&root.join("empty-file"), b"", 0o644);
    symlink("../pkg-000/f00000.js", &root.join("node_modules/link"));
    symlink("nowhere", &root.join("dangling"));
    fs::create_dir_all(root.join("empty/dir")).unwrap();
    snapshot(root)
}

struct Case {
    _t: tempfile::TempDir,
    src: PathBuf,
    store: PathBuf,
    out: PathBuf,
    original: Tree,
}

impl Case {
    fn new() -> Case {
        let t = tempdir();
        let src = t.path().join("project");
        let original = build_crash_tree(&src);
        Case {
            src,
            store: t.path().join("store"),
            out: t.path().join("out/m.vrm"),
            original,
            _t: t,
        }
    }

    fn journal(&self) -> PathBuf {
        let mut n = self.out.file_name().unwrap().to_os_string();
        n.push(".journal");
        self.out.with_file_name(n)
    }

    fn command(&self, tier: &str) -> Command {
        let mut c = vrift(&self.store);
        c.arg("--json")
            .arg("ingest")
            .arg(&self.src)
            .arg("-o")
            .arg(&self.out)
            .args(["--mode", "phantom", "--tier", tier]);
        c
    }

    fn spawn(&self, tier: &str) -> Child {
        fs::create_dir_all(self.out.parent().unwrap()).unwrap();
        self.command(tier)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn vrift")
    }

    /// The invariant that must hold at every instant.
    fn check_nothing_lost(&self, when: &str) {
        let manifest = if self.out.exists() {
            Some(Manifest::open(&self.out).unwrap_or_else(|e| {
                panic!("{when}: the manifest at OUT is not a complete manifest: {e}")
            }))
        } else {
            None
        };
        let store_c = fs::canonicalize(&self.store).ok();
        let mut at_path = 0;
        let mut in_store = 0;
        for (rel, node) in &self.original {
            let p = join(&self.src, rel);
            match node {
                Node::File { content, .. } => match fs::symlink_metadata(&p) {
                    Ok(md) if md.is_file() => {
                        assert_eq!(
                            &fs::read(&p).unwrap(),
                            content,
                            "{when}: {} changed content",
                            show(rel)
                        );
                        at_path += 1;
                    }
                    Ok(md) if md.file_type().is_symlink() => {
                        // tier1: a symlink to its blob
                        let target = fs::read_link(&p).unwrap();
                        let want = blob_path_of(store_c.as_ref().unwrap(), content);
                        assert_eq!(target, want, "{when}: {} links elsewhere", show(rel));
                        assert_eq!(&fs::read(&p).unwrap(), content, "{when}: {}", show(rel));
                        in_store += 1;
                    }
                    Ok(_) => panic!("{when}: {} is no longer a file", show(rel)),
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        let m = manifest.as_ref().unwrap_or_else(|| {
                            panic!("{when}: {} is gone and there is no manifest", show(rel))
                        });
                        let e = m.lookup(rel).unwrap_or_else(|| {
                            panic!("{when}: {} is gone and not in the manifest", show(rel))
                        });
                        assert!(e.kind().has_content(), "{when}: {}", show(rel));
                        assert_eq!(
                            e.hash(),
                            &digest::hash(content),
                            "{when}: manifest hash of {}",
                            show(rel)
                        );
                        assert_eq!(e.size(), content.len() as u64);
                        let blob = blob_path_of(&self.store, content);
                        let bytes = fs::read(&blob).unwrap_or_else(|err| {
                            panic!(
                                "{when}: {} is gone and its blob is missing: {err}",
                                show(rel)
                            )
                        });
                        assert_eq!(&bytes, content, "{when}: blob of {}", show(rel));
                        in_store += 1;
                    }
                    Err(e) => panic!("{when}: {}: {e}", show(rel)),
                },
                // Phantom never removes directories or symlinks.
                other => {
                    let now = snapshot_one(&p);
                    assert_eq!(now.as_ref(), Some(other), "{when}: {} changed", show(rel));
                }
            }
        }
        if self.store.join("blake3").exists() {
            verify_store(&self.store);
        }
        eprintln!(
            "  {when}: {at_path} files at their path, {in_store} in the store, manifest {}, journal {}",
            if manifest.is_some() { "present" } else { "absent" },
            if self.journal().exists() { "present" } else { "absent" },
        );
    }

    /// After a completed run: all files moved, journal gone, checkout = original.
    fn check_completed(&self, tier: &str, when: &str) {
        assert!(!self.journal().exists(), "{when}: journal left behind");
        self.check_nothing_lost(when);
        for (rel, n) in &self.original {
            if matches!(n, Node::File { .. }) {
                let md = fs::symlink_metadata(join(&self.src, rel));
                match tier {
                    "tier1" => assert!(
                        md.map(|m| m.file_type().is_symlink()).unwrap_or(false),
                        "{when}: {} is not a symlink to its blob",
                        show(rel)
                    ),
                    _ => assert!(md.is_err(), "{when}: {} was not moved", show(rel)),
                }
            }
        }
        let dest = self.out.with_file_name(format!(
            "restored-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        checkout_ok(&self.store, &self.out, &dest);
        assert_trees_equal(&self.original, &snapshot(&dest), when);
        let o = Command::new(dest.join("node_modules/.bin/run"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout), "ran\n");
        fs::remove_dir_all(&dest).unwrap();
        assert_no_leftovers(&self.store, &self.src);
    }

    fn rerun(&self, tier: &str, when: &str) {
        fs::create_dir_all(self.out.parent().unwrap()).unwrap();
        let o = self.command(tier).output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{when}: rerun failed\n{}",
            describe(&o)
        );
        let v = json_of(&o);
        assert_eq!(num(&v, "errors"), 0, "{when}: {v}");
    }
}

fn snapshot_one(p: &Path) -> Option<Node> {
    let md = fs::symlink_metadata(p).ok()?;
    Some(if md.is_dir() {
        use std::os::unix::fs::MetadataExt;
        Node::Dir {
            mode: md.mode() & 0o7777,
        }
    } else if md.file_type().is_symlink() {
        use std::os::unix::ffi::OsStringExt;
        Node::Symlink {
            target: fs::read_link(p).unwrap().into_os_string().into_vec(),
        }
    } else {
        return None;
    })
}

/// Kills `child` as soon as `journal` exists (the move phase has begun), plus `extra`.
/// Returns false if the process finished before that.
fn kill_in_move_phase(child: &mut Child, journal: &Path, extra: Duration) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if journal.exists() {
            std::thread::sleep(extra);
            let _ = child.kill();
            let _ = child.wait();
            return true;
        }
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// How long an uninterrupted phantom ingest of the crash tree takes here.
fn full_run_time(tier: &str) -> Duration {
    let c = Case::new();
    fs::create_dir_all(c.out.parent().unwrap()).unwrap();
    let t = Instant::now();
    c.rerun(tier, "uninterrupted run");
    let d = t.elapsed();
    c.check_completed(tier, "uninterrupted run");
    d
}

#[test]
fn kill_9_at_random_moments_loses_nothing_and_a_rerun_completes() {
    let mut rng = Rng::from_time();
    let full = full_run_time("tier2");
    eprintln!("an uninterrupted phantom ingest takes {full:?}");
    let full_us = full.as_micros().max(1000) as u64;
    // Very early, spread over the run, late, and a few random ones.
    let mut plan: Vec<(String, Option<Duration>)> = vec![
        ("at once".into(), Some(Duration::ZERO)),
        ("after 1 ms".into(), Some(Duration::from_millis(1))),
    ];
    for pct in [20u64, 50, 75, 95] {
        let jitter = rng.below(full_us / 20 + 1);
        let d = Duration::from_micros(full_us * pct / 100 + jitter);
        plan.push((format!("at ~{pct}% ({d:?})"), Some(d)));
    }
    plan.push(("as the move phase starts".into(), None));
    let j = Duration::from_micros(rng.below(full_us / 4 + 1));
    plan.push((format!("{j:?} into the move phase"), Some(j)));
    let n_plain = plan.len() - 2;

    let mut moves_interrupted = 0;
    for (i, (label, delay)) in plan.into_iter().enumerate() {
        let tier = if i % 3 == 2 { "tier1" } else { "tier2" };
        let label = format!("kill #{i} {label} ({tier})");
        let started = Instant::now();
        let c = Case::new();
        let mut child = c.spawn(tier);
        if i < n_plain {
            std::thread::sleep(delay.unwrap());
            let _ = child.kill();
            let _ = child.wait();
        } else if !kill_in_move_phase(&mut child, &c.journal(), delay.unwrap_or_default()) {
            eprintln!("  {label}: finished before the move phase could be interrupted");
        }
        if c.journal().exists() {
            moves_interrupted += 1;
        }
        c.check_nothing_lost(&format!("{label}, after the kill"));
        c.rerun(tier, &format!("{label}, rerun"));
        c.check_completed(tier, &format!("{label}, after the rerun"));
        eprintln!("  ({label}: {:?} in all)", started.elapsed());
    }
    eprintln!("{moves_interrupted} kills landed inside the move phase");
}

/// `vrift ingest --resume -o OUT` (no DIR) finishes an interrupted move phase; the journal
/// knows the source.
#[test]
fn resume_without_dir_finishes_an_interrupted_phantom_ingest() {
    for tier in ["tier2", "tier1"] {
        let mut done = false;
        for attempt in 0..5 {
            let c = Case::new();
            let mut child = c.spawn(tier);
            let extra = Duration::from_millis(attempt * 3);
            if !kill_in_move_phase(&mut child, &c.journal(), extra) || !c.journal().exists() {
                eprintln!("attempt {attempt}: the run finished before the kill; again");
                continue;
            }
            c.check_nothing_lost("after the kill");
            let o = vrift(&c.store)
                .arg("--json")
                .arg("ingest")
                .arg("--resume")
                .arg("-o")
                .arg(&c.out)
                .args(["--mode", "phantom", "--tier", tier])
                .output()
                .unwrap();
            assert_eq!(
                o.status.code(),
                Some(0),
                "--resume failed\n{}",
                describe(&o)
            );
            assert_eq!(num(&json_of(&o), "errors"), 0);
            c.check_completed(tier, &format!("{tier}: after --resume"));
            done = true;
            break;
        }
        assert!(
            done,
            "{tier}: could not interrupt a move phase in 5 attempts"
        );
    }
}

/// An unfinished journal for OUT blocks an ingest of a *different* tree into OUT with a
/// clear error, and touches neither tree.
#[test]
fn pending_journal_blocks_another_tree() {
    let c = Case::new();
    let mut caught = false;
    for attempt in 0..5 {
        let mut child = c.spawn("tier2");
        if kill_in_move_phase(&mut child, &c.journal(), Duration::from_millis(attempt))
            && c.journal().exists()
        {
            caught = true;
            break;
        }
        // It completed: start over with a fresh tree at the same place.
        let _ = fs::remove_dir_all(&c.src);
        let _ = fs::remove_file(&c.out);
        build_crash_tree(&c.src);
    }
    assert!(caught, "could not interrupt a move phase");
    let other = c.out.parent().unwrap().join("other");
    write_file(&other.join("x.txt"), b"x\n", 0o644);
    let o = ingest_raw(&c.store, &other, &c.out, &["--mode", "phantom"]);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let e = stderr(&o);
    assert!(
        e.contains("--resume"),
        "error should say how to proceed:\n{e}"
    );
    assert!(other.join("x.txt").is_file(), "the other tree was touched");
    c.check_nothing_lost("after the refused ingest");
    c.rerun("tier2", "rerun of the original tree");
    c.check_completed("tier2", "rerun of the original tree");
}

/// `--resume` with nothing to resume is a clear error naming OUT.
#[test]
fn resume_with_nothing_to_resume_is_a_clear_error() {
    let t = tempdir();
    let out = t.path().join("never-written.vrm");
    let o = vrift(&t.path().join("store"))
        .arg("ingest")
        .arg("--resume")
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        stderr(&o).contains(&*out.to_string_lossy()),
        "{}",
        describe(&o)
    );
}

/// A phantom re-ingest of an already phantom-ingested tree keeps the moved files in the view
/// and adds new ones.
#[test]
fn phantom_reingest_keeps_moved_files_and_adds_new_ones() {
    let c = Case::new();
    c.rerun("tier2", "first run");
    write_file(&c.src.join("added/new.js"), b"new file\n", 0o644);
    c.rerun("tier2", "second run");
    assert!(!c.src.join("added/new.js").exists(), "new file moved too");
    let dest = c.out.with_file_name("restored");
    checkout_ok(&c.store, &c.out, &dest);
    let mut want = c.original.clone();
    want.insert(b"added".to_vec(), Node::Dir { mode: 0o755 });
    want.insert(
        b"added/new.js".to_vec(),
        Node::File {
            content: b"new file\n".to_vec(),
            mode: 0o444,
        },
    );
    assert_trees_equal(&want, &snapshot(&dest), "after the second phantom run");
}
