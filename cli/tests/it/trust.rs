//! Trust nothing: the store never believes a path, a name, a manifest or a writer.
//!
//! Each test here reproduces an attack or a fault found in review (issue 12) end to end: a
//! crafted manifest (from a file or a bucket), an attacker who swaps a directory for a symlink
//! the moment vrift creates or reads it (a real inotify-driven process running as `nobody`,
//! `support/attacker.py`), a blob written in place, a store that runs out of room. Races are
//! repeated, and a single success of the attacker fails the test.
//!
//! These tests switch users, so they run as root (as CI does); without root they fail under
//! `CI=true` and are skipped with a note otherwise.

use crate::common;
use crate::isolate_support;

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use vrift_manifest::format;
use vrift_manifest::schema::{EntryData, ManifestData};
use vrift_manifest::Kind;

/// Root is what the attacks need (a victim who can read what the attacker cannot).
fn need_root() -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("the trust tests need root (they switch to `nobody` to attack)");
    }
    eprintln!("SKIPPED: not root");
    false
}

// -----------------------------------------------------------------------------------------
// Crafted manifests
// -----------------------------------------------------------------------------------------

/// One crafted entry: path, kind, mode, symlink target, content (for files: the manifest
/// names the blob of this content, which the test may or may not have stored).
struct Crafted<'a> {
    path: &'a [u8],
    kind: Kind,
    mode: u32,
    target: &'a [u8],
    content: &'a [u8],
}

fn file<'a>(path: &'a [u8], mode: u32, content: &'a [u8]) -> Crafted<'a> {
    Crafted {
        path,
        kind: if mode & 0o111 != 0 {
            Kind::Executable
        } else {
            Kind::File
        },
        mode,
        target: b"",
        content,
    }
}

fn dir(path: &[u8], mode: u32) -> Crafted<'_> {
    Crafted {
        path,
        kind: Kind::Dir,
        mode,
        target: b"",
        content: b"",
    }
}

fn link<'a>(path: &'a [u8], target: &'a [u8]) -> Crafted<'a> {
    Crafted {
        path,
        kind: Kind::Symlink,
        mode: 0o777,
        target,
        content: b"",
    }
}

/// The bytes of a manifest holding exactly `rows` in the given order (after the root), each
/// directory's subtree ending where the next entry outside it starts: what an attacker can
/// write with a hex editor, checksum and all. No validation happens here.
fn craft(rows: &[Crafted<'_>]) -> Vec<u8> {
    craft_at(b"/somewhere/else", rows)
}

/// [`craft`] with the manifest's root path given.
fn craft_at(root: &[u8], rows: &[Crafted<'_>]) -> Vec<u8> {
    let mut strings = Vec::new();
    let mut entries = vec![EntryData {
        kind: Kind::Dir as u8,
        mode: 0o755,
        subtree_end: rows.len() as u32 + 1,
        ..Default::default()
    }];
    for r in rows {
        let path_off = strings.len() as u32;
        strings.extend_from_slice(r.path);
        let target_off = strings.len() as u32;
        strings.extend_from_slice(r.target);
        let content = r.kind.has_content();
        entries.push(EntryData {
            path_off,
            path_len: r.path.len() as u32,
            target_off,
            target_len: r.target.len() as u32,
            kind: r.kind as u8,
            mode: r.mode,
            size: if content { r.content.len() as u64 } else { 0 },
            mtime_ns: 1_700_000_000_000_000_000,
            hash: if content {
                *blake3::hash(r.content).as_bytes()
            } else {
                [0; 32]
            },
            ..Default::default()
        });
    }
    let n = entries.len();
    for i in 1..n {
        let me = rows[i - 1].path;
        entries[i].subtree_end = if rows[i - 1].kind == Kind::Dir {
            (i + 1..n)
                .find(|&j| {
                    let p = rows[j - 1].path;
                    !(p.len() > me.len() && p.starts_with(me) && p[me.len()] == b'/')
                })
                .unwrap_or(n) as u32
        } else {
            i as u32 + 1
        };
    }
    let data = ManifestData {
        root: root.to_vec(),
        created_unix_ns: 0,
        entries,
        strings,
    };
    format::encode(&data, 0, Path::new("crafted")).expect("encode")
}

/// Every file and directory under `p` with its mode, for "nothing changed here" checks.
fn listing(p: &Path) -> Vec<(PathBuf, u32, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let md = fs::symlink_metadata(&d).unwrap();
        out.push((d.clone(), md.mode(), md.len()));
        if md.is_dir() {
            for e in fs::read_dir(&d).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

/// A store holding the blob of `content` (so crafted manifests can name a blob that exists).
fn store_with(tmp: &Path, contents: &[&[u8]]) -> PathBuf {
    let store = tmp.join("store");
    let src = tmp.join("seed");
    for (i, c) in contents.iter().enumerate() {
        write_file(&src.join(format!("f{i}")), c, 0o644);
    }
    ingest_ok(&store, &src, &tmp.join("seed.vrm"), &[]);
    store
}

#[test]
fn crafted_manifests_never_make_checkout_write_outside_its_target() {
    let tmp = tempdir();
    let store = store_with(tmp.path(), &[b"payload"]);
    // What the attacker aims at: a directory and a file beside the checkout.
    let outside = tmp.path().join("outside");
    write_file(&outside.join("victim.txt"), b"precious", 0o600);
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o700)).unwrap();
    let before = listing(&outside);
    let outside_s = outside.to_str().unwrap().as_bytes();
    let victim_file = outside.join("victim.txt");
    let victim_s = victim_file.to_str().unwrap().as_bytes();

    let cases: Vec<(&str, Vec<Crafted<'_>>, &str)> = vec![
        (
            "dotdot",
            vec![file(b"../../outside/x", 0o644, b"payload")],
            "'..'",
        ),
        (
            "absolute",
            vec![file(outside_s, 0o644, b"payload")],
            "absolute",
        ),
        (
            "through-symlink",
            vec![link(b"a", outside_s), file(b"a/evil", 0o644, b"payload")],
            "below a non-directory",
        ),
        (
            // The old final mode pass chmod'ed through the symlink: 0777 on a directory outside.
            "chmod-dir-through-symlink",
            vec![link(b"a", outside_s), dir(b"a/sub", 0o777)],
            "below a non-directory",
        ),
        (
            "chmod-file-through-symlink",
            vec![link(b"b", victim_s), dir(b"b", 0o666)],
            "not in order",
        ),
        (
            "unsorted",
            vec![file(b"z", 0o644, b"payload"), file(b"a", 0o644, b"payload")],
            "not in order",
        ),
    ];
    for (name, rows, why) in cases {
        let m = tmp.path().join(format!("{name}.vrm"));
        fs::write(&m, craft(&rows)).unwrap();
        let dest = tmp.path().join("work").join(name).join("node_modules");
        let o = checkout_raw(&store, &m, &dest);
        assert_no_panic(&o);
        assert_eq!(o.status.code(), Some(1), "{name}\n{}", describe(&o));
        let err = stderr(&o);
        assert!(
            err.contains(m.to_str().unwrap()) && err.contains(why),
            "{name}: the error must name the manifest and say {why:?}\n{}",
            describe(&o)
        );
        assert!(
            !dest.exists(),
            "{name}: nothing may be written\n{}",
            describe(&o)
        );
        assert_eq!(listing(&outside), before, "{name}: outside changed");
    }
}

// -----------------------------------------------------------------------------------------
// The attacker process
// -----------------------------------------------------------------------------------------

/// A running `support/attacker.py` (as `nobody`), ready: its inotify watch is in place.
struct Attacker {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Attacker {
    fn start(shared: &Path, args: &[&OsStr]) -> Attacker {
        let script = shared.join("attacker.py");
        if !script.exists() {
            fs::copy(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/attacker.py"),
                &script,
            )
            .unwrap();
            fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut child = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/usr/bin/python3",
            ])
            .arg(&script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start attacker");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "attacker did not start");
        Attacker { child, out }
    }

    /// Whether the attacker acted (it exits once it has); kills it if it never fired.
    fn finish(mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let mut line = String::new();
                let _ = self.out.read_line(&mut line);
                return line.trim() == "done";
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

fn os<S: AsRef<OsStr> + ?Sized>(s: &S) -> &OsStr {
    s.as_ref()
}

/// A directory the attacker (`nobody`) owns, inside a root-made directory everyone may enter.
fn attacker_dir(shared: &Path, name: &str) -> PathBuf {
    let p = shared.join(name);
    fs::create_dir_all(&p).unwrap();
    chown(&p);
    p
}

/// A root-only directory holding a secret, which the attacks try to reach.
fn secret_dir(shared: &Path, rel: &str, content: &[u8]) -> PathBuf {
    let d = shared.join("root-only");
    let f = d.join(rel);
    write_file(&f, content, 0o600);
    fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
    d
}

#[test]
fn checkout_never_follows_a_directory_swapped_for_a_symlink() {
    if !need_root() {
        return;
    }
    let shared = SharedDir::new();
    let tmp = shared.path();
    let src = tmp.join("src");
    // `a/` is created first; by the time the attacker reacts to it, checkout is busy filling
    // `d/` (thousands of links), whose later files and final mode go through the swapped name.
    write_file(&src.join("a/first"), b"first", 0o644);
    for i in 0..8000 {
        write_file(
            &src.join(format!("d/f{i:04}")),
            format!("file {i}").as_bytes(),
            0o644,
        );
    }
    let store = tmp.join("store");
    let manifest = tmp.join("app.vrm");
    ingest_ok(&store, &src, &manifest, &[]);
    // The victim: a directory the attacker may not write, which the swap points at.
    let victim = tmp.join("victim");
    fs::create_dir(&victim).unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o755)).unwrap();
    let before = listing(&victim);
    let mut fired = 0;
    for round in 0..5 {
        // A workspace a build step (the attacker) can write, restored into by root.
        let work = attacker_dir(tmp, &format!("work{round}"));
        let dest = work.join("node_modules");
        fs::create_dir(&dest).unwrap();
        chown(&dest);
        let attacker = Attacker::start(
            tmp,
            &[
                os(&dest),
                os("create"),
                os("a"),
                os("swap"),
                os(&dest.join("d")),
                os(&victim),
            ],
        );
        let o = checkout_raw(&store, &manifest, &dest);
        assert_no_panic(&o);
        let acted = attacker.finish();
        fired += u32::from(acted);
        assert_eq!(
            listing(&victim),
            before,
            "round {round}: checkout wrote or chmod'ed through the attacker's symlink\n{}",
            describe(&o)
        );
        if acted {
            assert_eq!(
                o.status.code(),
                Some(1),
                "round {round}: a swapped directory must be an error\n{}",
                describe(&o)
            );
        }
    }
    assert!(fired >= 3, "the attacker fired only {fired} times of 5");
}

// -----------------------------------------------------------------------------------------
// Pull
// -----------------------------------------------------------------------------------------

#[test]
fn pull_refuses_a_crafted_manifest_from_the_bucket() {
    let Some(s3) = common::s3::S3Server::start() else {
        return;
    };
    let tmp = tempdir();
    let store = tmp.path().join("store");
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    // Anyone who can write the shared prefix plants a manifest; its blob is there too.
    let payload: &[u8] = b"#!/bin/sh\necho owned\n";
    let rows = [file(b"../../../outside/evil.sh", 0o755, payload)];
    let key = "ci/cache/manifests/app.vrm";
    let obj = s3.object(key);
    fs::create_dir_all(obj.parent().unwrap()).unwrap();
    fs::write(&obj, craft(&rows)).unwrap();
    let h = blake3::hash(payload).to_hex();
    let blob = s3.object(&format!(
        "ci/cache/blake3/{}/{}/{h}_{}.bin",
        &h[..2],
        &h[2..4],
        payload.len()
    ));
    fs::create_dir_all(blob.parent().unwrap()).unwrap();
    fs::write(&blob, payload).unwrap();

    let out = tmp.path().join("app.vrm");
    let mut c = vrift(&store);
    s3.env(&mut c);
    c.args(["--no-progress", "--remote"])
        .arg(format!("s3://{}/ci/cache", common::s3::BUCKET))
        .args(["pull", "app", "-o"])
        .arg(&out);
    let o = output_within(&mut c, 120);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        stderr(&o).contains("'..'") && stderr(&o).contains("app.vrm"),
        "the error names the manifest and the entry\n{}",
        describe(&o)
    );
    assert!(!out.exists(), "a refused manifest is not written");
    assert!(fs::read_dir(&outside).unwrap().next().is_none());
}

// -----------------------------------------------------------------------------------------
// Phantom moves
// -----------------------------------------------------------------------------------------

/// Root ingests a tree its owner controls in phantom mode. The moment the manifest lands, the
/// owner swaps a directory for a symlink into root's own files: the move phase must not move
/// root's file into the store (from where checkout would restore it into the attacker's tree).
#[test]
fn phantom_move_never_follows_a_directory_swapped_for_a_symlink() {
    if !need_root() {
        return;
    }
    let shared = SharedDir::new();
    let tmp = shared.path();
    let secret: &[u8] = b"root's private key material";
    let root_only = secret_dir(tmp, "secret.txt", secret);
    let out_dir = tmp.join("out");
    fs::create_dir(&out_dir).unwrap();
    fs::set_permissions(&out_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let store = tmp.join("store");
    let mut fired = 0;
    for round in 0..3 {
        let src = attacker_dir(tmp, &format!("tree{round}"));
        // Enough files before `d/` that the move phase is still busy when the swap lands.
        for i in 0..1500 {
            write_file(
                &src.join(format!("a/f{i:04}")),
                format!("{round}/{i}").as_bytes(),
                0o644,
            );
        }
        write_file(&src.join("d/secret.txt"), b"decoy", 0o644);
        chown_tree(&src);
        let name = format!("app{round}.vrm");
        let manifest = out_dir.join(&name);
        let attacker = Attacker::start(
            tmp,
            &[
                os(&out_dir),
                os("moved_to"),
                os(&name),
                os("swap"),
                os(&src.join("d")),
                os(&root_only),
            ],
        );
        let o = ingest_raw(&store, &src, &manifest, &["--mode", "phantom", "-j", "1"]);
        assert_no_panic(&o);
        fired += u32::from(attacker.finish());
        assert_eq!(
            fs::read(root_only.join("secret.txt")).ok().as_deref(),
            Some(secret),
            "round {round}: root's file was moved out of its directory\n{}",
            describe(&o)
        );
        assert!(
            !blob_path_of(&store, secret).exists(),
            "round {round}: root's file became a blob"
        );
        verify_store(&store);
        // What the manifest restores holds nothing of root's.
        let back = tmp.join(format!("back{round}"));
        let _ = checkout_raw(&store, &manifest, &back);
        assert!(
            !snapshot(&back)
                .values()
                .any(|n| matches!(n, Node::File { content, .. } if content == secret)),
            "round {round}: checkout restores root's file into the attacker's tree"
        );
    }
    assert!(fired >= 2, "the attacker fired only {fired} times of 3");
}

// -----------------------------------------------------------------------------------------
// The copy fallback
// -----------------------------------------------------------------------------------------

/// A store on another file system than the tree (EXDEV: every file is copied in).
fn store_on_other_fs() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    assert!(
        shm.is_dir(),
        "these tests need /dev/shm (a second file system)"
    );
    tempfile::Builder::new()
        .prefix("vrift-trust-store-")
        .tempdir_in(shm)
        .unwrap()
}

/// The tree's owner swaps a file for a symlink to a root-only file right after vrift read it:
/// the copy into the store must come from the descriptor that was hashed, not the path.
#[test]
fn copy_fallback_copies_what_was_hashed_not_what_the_path_names_now() {
    if !need_root() {
        return;
    }
    let shared = SharedDir::new();
    let tmp = shared.path();
    let secret: &[u8] = b"root-only: database password";
    let root_only = secret_dir(tmp, "secret.txt", secret);
    let store_dir = store_on_other_fs();
    let store = store_dir.path().join("store");
    let mut fired = 0;
    for round in 0..6 {
        let src = attacker_dir(tmp, &format!("tree{round}"));
        let target = src.join("pkg/config.txt");
        // Same length as the secret: a size check alone would not notice the swap.
        let innocent = format!(
            "{:<width$}",
            format!("innocent {round}"),
            width = secret.len()
        );
        write_file(&target, innocent.as_bytes(), 0o644);
        for i in 0..200 {
            write_file(
                &src.join(format!("pkg/other{i:03}")),
                format!("{round}.{i}").as_bytes(),
                0o644,
            );
        }
        chown_tree(&src);
        let attacker = Attacker::start(
            tmp,
            &[
                os(&target),
                os("access"),
                os("-"),
                os("swap"),
                os(&target),
                os(&root_only.join("secret.txt")),
            ],
        );
        let manifest = tmp.join(format!("m{round}.vrm"));
        let o = ingest_raw(&store, &src, &manifest, &["-j", "1"]);
        assert_no_panic(&o);
        fired += u32::from(attacker.finish());
        assert!(
            !blob_path_of(&store, secret).exists(),
            "round {round}: the root-only file became a blob\n{}",
            describe(&o)
        );
        let blobs = verify_store(&store);
        assert!(
            blobs.iter().all(|b| fs::read(&b.path).unwrap() != secret),
            "round {round}: a blob holds the secret under another name\n{}",
            describe(&o)
        );
    }
    assert!(fired >= 4, "the attacker fired only {fired} times of 6");
}

/// No attacker: a file rewritten in place (same size) while it is being ingested into a store
/// on another file system. The store must never hold a blob whose content is not its name.
#[test]
fn copy_fallback_never_stores_a_file_rewritten_during_ingest() {
    if !need_root() {
        return;
    }
    let shared = SharedDir::new();
    let tmp = shared.path();
    let store_dir = store_on_other_fs();
    let store = store_dir.path().join("store");
    let mut fired = 0;
    for round in 0..10 {
        let src = attacker_dir(tmp, &format!("tree{round}"));
        let target = src.join("lib/index.js");
        write_file(
            &target,
            format!("module.exports = {round:04};\n").as_bytes(),
            0o644,
        );
        for i in 0..200 {
            write_file(
                &src.join(format!("lib/m{i:03}.js")),
                format!("// {round}.{i}\n").as_bytes(),
                0o644,
            );
        }
        chown_tree(&src);
        let attacker = Attacker::start(
            tmp,
            &[
                os(&target),
                os("access"),
                os("-"),
                os("rewrite"),
                os(&target),
                os(&format!("module.exports = {:04};\n", 9999 - round)),
            ],
        );
        let manifest = tmp.join(format!("m{round}.vrm"));
        let o = ingest_raw(&store, &src, &manifest, &["-j", "1"]);
        assert_no_panic(&o);
        fired += u32::from(attacker.finish());
        verify_store(&store);
        // Whatever the manifest says of the file, its blob holds exactly that.
        let back = tmp.join(format!("back{round}"));
        let c = checkout_raw(&store, &manifest, &back);
        assert_no_panic(&c);
        if let Ok(got) = fs::read(back.join("lib/index.js")) {
            let m = vrift_manifest::Manifest::open(&manifest).unwrap();
            let e = m.lookup(b"lib/index.js").unwrap();
            assert_eq!(*blake3::hash(&got).as_bytes(), *e.hash(), "round {round}");
        }
    }
    assert!(fired >= 8, "the writer fired only {fired} times of 10");
}

// -----------------------------------------------------------------------------------------
// gc never deletes what a pending or unreadable root may hold
// -----------------------------------------------------------------------------------------

fn gc(store: &Path, args: &[&str]) -> Output {
    let o = vrift(store).arg("gc").args(args).output().unwrap();
    assert_no_panic(&o);
    o
}

/// A tree of `n` distinct files, each `size`ish bytes (content unique to `tag`).
fn unique_tree(root: &Path, n: usize, tag: &str) -> Tree {
    for i in 0..n {
        write_file(
            &root.join(format!("pkg{}/f{i:05}.js", i % 17)),
            format!("// {tag} file {i}\n{}", "x".repeat(i % 200)).as_bytes(),
            0o644,
        );
    }
    snapshot(root)
}

/// (a) A phantom ingest killed in its move phase is not registered; a `gc --delete` from
/// another job must keep what it already moved, and `--resume` then finishes it whole.
#[test]
fn gc_keeps_the_blobs_of_a_phantom_ingest_killed_in_its_move_phase() {
    let tmp = tempdir();
    let store = tmp.path().join("store");
    let mut landed = 0;
    for round in 0..3 {
        let src = tmp.path().join(format!("tree{round}"));
        let original = unique_tree(&src, 3000, &format!("r{round}"));
        let out = tmp.path().join(format!("t{round}.vrm"));
        let journal = tmp.path().join(format!("t{round}.vrm.journal"));
        let mut child = vrift(&store)
            .arg("ingest")
            .arg(&src)
            .arg("-o")
            .arg(&out)
            .args(["--mode", "phantom", "-j", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !journal.exists() && Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_millis(15));
        let _ = child.kill();
        let _ = child.wait();
        let left = snapshot(&src)
            .values()
            .filter(|n| matches!(n, Node::File { .. }))
            .count();
        if journal.exists() && left > 0 && left < 3000 {
            landed += 1;
        }
        // Another CI job collects garbage meanwhile.
        let o = gc(&store, &["--delete"]);
        assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
        verify_store(&store);
        let o = ingest_raw(&store, &src, &out, &["--resume"]);
        assert_no_panic(&o);
        assert_eq!(
            o.status.code(),
            Some(0),
            "round {round}: resume\n{}",
            describe(&o)
        );
        let back = tmp.path().join(format!("back{round}"));
        checkout_ok(&store, &out, &back);
        assert_trees_equal(&original, &snapshot(&back), "resumed after gc --delete");
        // Registered now: nothing pending any more.
        let v = json_of(&vrift(&store).args(["--json", "gc"]).output().unwrap());
        assert_eq!(num(&v, "pending_roots"), 0, "{v}");
    }
    assert!(landed >= 1, "no kill landed inside the move phase");
}

/// (c) One flipped byte in the store's cached copy of a manifest: gc falls back to the
/// user's copy; with both unreadable it refuses and names the project; `forget` is the way out.
#[test]
fn gc_survives_a_damaged_cached_manifest_and_refuses_when_no_copy_reads() {
    let tmp = tempdir();
    let store = tmp.path().join("store");
    let src = tmp.path().join("app");
    let original = unique_tree(&src, 300, "cache");
    let out = tmp.path().join("app.vrm");
    ingest_ok(&store, &src, &out, &[]);
    let cached: Vec<PathBuf> = fs::read_dir(store.join("manifests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "vrm"))
        .collect();
    assert_eq!(cached.len(), 1);
    assert_ne!(
        fs::metadata(&cached[0]).unwrap().ino(),
        fs::metadata(&out).unwrap().ino(),
        "the cached copy must be a file of its own"
    );
    let flip = |p: &Path| {
        let mut b = fs::read(p).unwrap();
        let i = b.len() / 2;
        b[i] ^= 0x40;
        fs::write(p, b).unwrap();
    };
    flip(&cached[0]);
    let blobs_before = list_blobs(&store).len();
    let o = gc(&store, &["--delete"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert_eq!(list_blobs(&store).len(), blobs_before, "blobs deleted");
    // The user's tree is gone too (moved away), so only the store can restore it.
    let back = tmp.path().join("back");
    checkout_ok(&store, &out, &back);
    assert_trees_equal(&original, &snapshot(&back), "after gc");
    // Now the user's copy too: nothing is deleted, and the error names the project.
    flip(&out);
    let o = gc(&store, &["--delete"]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        stderr(&o).contains("app") && stderr(&o).contains("forget"),
        "{}",
        describe(&o)
    );
    assert_eq!(list_blobs(&store).len(), blobs_before);
    let d = vrift(&store).arg("doctor").output().unwrap();
    assert_eq!(d.status.code(), Some(1), "{}", describe(&d));
    assert!(
        !String::from_utf8_lossy(&d.stdout).contains("gc --delete --older-than"),
        "doctor must not recommend deleting while a project is unreadable\n{}",
        describe(&d)
    );
    let f = vrift(&store).args(["forget", "app"]).output().unwrap();
    assert_eq!(f.status.code(), Some(0), "{}", describe(&f));
    let o = gc(&store, &["--delete"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
}

/// (d) A phantom project whose (now file-less) source directory and even manifest are gone
/// is not stale: prune keeps it, gc keeps its blobs, and it still checks out.
#[test]
fn gc_prune_stale_never_drops_a_phantom_project() {
    let tmp = tempdir();
    let store = tmp.path().join("store");
    let src = tmp.path().join("app");
    let original = unique_tree(&src, 200, "phantom");
    let out = tmp.path().join("app.vrm");
    ingest_ok(&store, &src, &out, &["--mode", "phantom"]);
    make_removable(&src);
    fs::remove_dir_all(&src).unwrap();
    // Dry run: changes nothing.
    let o = gc(&store, &["--prune-stale"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let kept = tmp.path().join("kept.vrm");
    fs::rename(&out, &kept).unwrap();
    for args in [&["--prune-stale", "--delete"][..], &["--delete"]] {
        let o = gc(&store, args);
        assert_eq!(o.status.code(), Some(0), "{args:?}\n{}", describe(&o));
    }
    let back = tmp.path().join("back");
    checkout_ok(&store, &kept, &back);
    assert_trees_equal(
        &original,
        &snapshot(&back),
        "phantom project after prune + gc",
    );
    // Forgetting it takes --force.
    let f = vrift(&store).args(["forget", "app"]).output().unwrap();
    assert_eq!(f.status.code(), Some(1), "{}", describe(&f));
    assert!(stderr(&f).contains("phantom"), "{}", describe(&f));
}

// -----------------------------------------------------------------------------------------
// Damaged blobs are never served or spread
// -----------------------------------------------------------------------------------------

/// Writes into a blob behind the store's back, as root editing a hard-linked checkout would.
fn damage(blob: &Path, same_size: bool) {
    std::thread::sleep(Duration::from_millis(10));
    let mut b = fs::read(blob).unwrap();
    if same_size {
        b[0] ^= 0x20;
    } else {
        b.extend_from_slice(b"\n// appended\n");
    }
    // Root writes despite the missing write bits, in place (same inode).
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(blob)
        .unwrap();
    let mut f = fs::OpenOptions::new().write(true).open(blob).unwrap();
    std::io::Write::write_all(&mut f, &b).unwrap();
}

#[test]
fn a_damaged_blob_is_never_checked_out_nor_linked_over_a_users_file() {
    if !need_root() {
        return;
    }
    let tmp = tempdir();
    let store = tmp.path().join("store");
    let good: &[u8] = b"module.exports = function leftPad() { /* the real one */ };\n";
    for (same_size, label) in [(true, "edited in place"), (false, "appended to")] {
        let a = tmp.path().join(format!("a-{same_size}"));
        write_file(&a.join("left-pad/index.js"), good, 0o644);
        write_file(
            &a.join("other.js"),
            format!("other {label}").as_bytes(),
            0o644,
        );
        let ma = tmp.path().join(format!("a-{same_size}.vrm"));
        ingest_ok(&store, &a, &ma, &[]);
        // A CI job running as root "fixes" the file in its checkout: the blob changes.
        let co = tmp.path().join(format!("co-{same_size}"));
        checkout_ok(&store, &ma, &co);
        damage(&co.join("left-pad/index.js"), same_size);
        let blob = blob_path_of(&store, good);
        // checkout: that file is an error naming the blob, the rest is written.
        let again = tmp.path().join(format!("again-{same_size}"));
        let o = checkout_raw(&store, &ma, &again);
        assert_eq!(o.status.code(), Some(1), "{label}\n{}", describe(&o));
        assert!(stderr(&o).contains("damaged"), "{label}\n{}", describe(&o));
        assert!(
            !again.join("left-pad/index.js").exists(),
            "{label}: damaged content handed out"
        );
        assert!(again.join("other.js").exists());
        assert!(
            !blob.exists(),
            "{label}: the damaged blob is still under its name"
        );
        // Another tree with the good content: its file stays good and becomes the new blob.
        let b = tmp.path().join(format!("b-{same_size}"));
        write_file(&b.join("left-pad/index.js"), good, 0o644);
        ingest_ok(
            &store,
            &b,
            &tmp.path().join(format!("b-{same_size}.vrm")),
            &[],
        );
        assert_eq!(
            fs::read(b.join("left-pad/index.js")).unwrap(),
            good,
            "{label}"
        );
        assert_eq!(fs::read(&blob).unwrap(), good, "{label}");
        verify_store(&store);
    }
}

/// The dedup path: a damaged blob (same size, so a size check cannot see it) is found when a
/// tree with its content is ingested, and that tree's good file replaces it.
#[test]
fn ingest_never_replaces_a_good_file_by_a_damaged_blob() {
    if !need_root() {
        return;
    }
    let tmp = tempdir();
    let store = tmp.path().join("store");
    let good: &[u8] = b"export const answer = 42;\n";
    let a = tmp.path().join("a");
    write_file(&a.join("x.js"), good, 0o644);
    ingest_ok(&store, &a, &tmp.path().join("a.vrm"), &[]);
    damage(&blob_path_of(&store, good), true);
    let b = tmp.path().join("b");
    write_file(&b.join("y.js"), good, 0o644);
    let v = ingest_ok(&store, &b, &tmp.path().join("b.vrm"), &[]);
    assert_eq!(fs::read(b.join("y.js")).unwrap(), good, "{v}");
    assert_eq!(fs::read(blob_path_of(&store, good)).unwrap(), good);
    verify_store(&store);
}

/// `--link-mode copy`: a checkout you may patch; a write into it never reaches the store.
#[test]
fn checkout_link_mode_copy_gives_files_of_their_own() {
    let tmp = tempdir();
    let store = tmp.path().join("store");
    let src = tmp.path().join("app");
    let original = unique_tree(&src, 50, "copy");
    let m = tmp.path().join("app.vrm");
    ingest_ok(&store, &src, &m, &[]);
    let co = tmp.path().join("co");
    let o = vrift(&store)
        .args(["--json", "checkout", "--link-mode", "copy"])
        .arg(&m)
        .arg(&co)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let v = json_of(&o);
    assert_eq!(num(&v, "linked"), 0, "{v}");
    assert_eq!(num(&v, "copied"), 50, "{v}");
    assert_trees_equal(&original, &snapshot(&co), "copy checkout");
    let f = co.join("pkg0/f00000.js");
    assert_eq!(fs::metadata(&f).unwrap().nlink(), 1);
    fs::write(&f, b"patched").unwrap_or_else(|_| {
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&f, b"patched").unwrap();
    });
    verify_store(&store);
}

// -----------------------------------------------------------------------------------------
// A full store leaves no new manifest
// -----------------------------------------------------------------------------------------

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn small_tmpfs(dir: &Path, size: &str) -> Mount {
    fs::create_dir_all(dir).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "cannot mount a tmpfs at {} (needs root)", dir.display());
    Mount(dir.to_path_buf())
}

#[test]
fn enospc_leaves_the_previous_manifest_and_names_the_failed_files() {
    if !need_root() {
        return;
    }
    let tmp = tempdir();
    let mnt = tmp.path().join("small");
    let _m = small_tmpfs(&mnt, "4m");
    let store = mnt.join("store");
    let src = tmp.path().join("app");
    write_file(&src.join("index.js"), b"v1", 0o644);
    let out = tmp.path().join("app.vrm");
    ingest_ok(&store, &src, &out, &[]);
    let previous = fs::read(&out).unwrap();
    for i in 0..40 {
        write_file(
            &src.join(format!("big/{i:02}.bin")),
            &pattern(200_000, i),
            0o644,
        );
    }
    let o = ingest_raw(&store, &src, &out, &[]);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert_eq!(
        fs::read(&out).unwrap(),
        previous,
        "a failed ingest replaced the manifest"
    );
    let e = stderr(&o);
    assert!(e.contains("No space left"), "{e}");
    assert!(
        e.contains(&*src.join("big").to_string_lossy()),
        "no failed file named\n{e}"
    );
    assert!(e.contains("no manifest written"), "{e}");
    verify_store(&store);
}

// -----------------------------------------------------------------------------------------
// setuid/setgid from a manifest
// -----------------------------------------------------------------------------------------

#[test]
fn setuid_and_setgid_bits_from_a_manifest_are_dropped_unless_asked() {
    if !need_root() {
        return;
    }
    let tmp = tempdir();
    let payload: &[u8] = b"#!/bin/sh\nid\n";
    let store = store_with(tmp.path(), &[payload]);
    let m = tmp.path().join("suid.vrm");
    fs::write(
        &m,
        craft(&[
            dir(b"bin", 0o2755),
            file(b"bin/tool", 0o4755, payload),
            file(b"bin/tool2", 0o2755, payload),
        ]),
    )
    .unwrap();
    let dest = tmp.path().join("co");
    let o = checkout_raw(&store, &m, &dest);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(stderr(&o).contains("setuid"), "{}", describe(&o));
    for p in ["bin", "bin/tool", "bin/tool2"] {
        let mode = fs::metadata(dest.join(p)).unwrap().mode();
        assert_eq!(mode & 0o6000, 0, "{p}: {mode:o}");
    }
    let keep = tmp.path().join("keep");
    let o = vrift(&store)
        .arg("checkout")
        .arg("--keep-setid")
        .arg(&m)
        .arg(&keep)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert_eq!(
        fs::metadata(keep.join("bin/tool")).unwrap().mode() & 0o7777,
        0o4755
    );
}

// -----------------------------------------------------------------------------------------
// clean, doctor, leftovers, checkout errors, concurrent phantom ingests
// -----------------------------------------------------------------------------------------

/// A store pointed at a directory that also holds the user's own files: `clean --all`
/// refuses, naming them, and deletes nothing; a store of its own is removed whole.
#[test]
fn clean_all_never_deletes_files_vrift_did_not_make() {
    let tmp = tempdir();
    let ws = tmp.path().join("ws");
    let src = tmp.path().join("app");
    unique_tree(&src, 20, "clean");
    ingest_ok(&ws, &src, &tmp.path().join("app.vrm"), &[]);
    write_file(&ws.join("notes.txt"), b"my own notes", 0o644);
    write_file(&ws.join("project/main.rs"), b"fn main() {}", 0o644);
    let o = vrift(&ws)
        .args(["clean", "--all", "--force", "--yes"])
        .output()
        .unwrap();
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(stderr(&o).contains("notes.txt"), "{}", describe(&o));
    assert_eq!(fs::read(ws.join("notes.txt")).unwrap(), b"my own notes");
    assert!(ws.join("project/main.rs").exists());
    assert!(ws.join("blake3").is_dir(), "the store went anyway");
    fs::remove_file(ws.join("notes.txt")).unwrap();
    fs::remove_dir_all(ws.join("project")).unwrap();
    let o = vrift(&ws)
        .args(["clean", "--all", "--force", "--yes"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(!ws.exists());
}

/// doctor samples without replacement (a store of 4 blobs with 1 corrupt is always caught),
/// reports the same store the same way twice, and finds a referenced blob that is missing.
#[test]
fn doctor_finds_every_damaged_or_missing_blob_it_should() {
    let tmp = tempdir();
    let store = tmp.path().join("store");
    let src = tmp.path().join("app");
    for i in 0..4 {
        write_file(
            &src.join(format!("f{i}")),
            format!("content {i}").as_bytes(),
            0o644,
        );
    }
    ingest_ok(&store, &src, &tmp.path().join("app.vrm"), &[]);
    let blob = blob_path_of(&store, b"content 2");
    let mut b = fs::read(&blob).unwrap();
    b[0] ^= 1;
    fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&blob, &b).unwrap();
    fs::set_permissions(&blob, fs::Permissions::from_mode(0o444)).unwrap();
    let run = || {
        let o = vrift(&store)
            .args(["doctor", "--sample", "4"])
            .output()
            .unwrap();
        assert_no_panic(&o);
        o
    };
    let first = run();
    assert_eq!(first.status.code(), Some(1), "{}", describe(&first));
    let text = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(text.contains("1 of 4 sampled blobs corrupt"), "{text}");
    let second = run();
    let strip = |s: &str| -> String {
        s.lines()
            .filter(|l| !l.contains("Disk space"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        strip(&text),
        strip(&String::from_utf8_lossy(&second.stdout)),
        "the same store, reported differently"
    );
    fs::remove_file(blob_path_of(&store, b"content 3")).unwrap();
    let o = run();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("Referenced blobs: 1 missing"), "{text}");
}

/// Re-ingesting an unchanged tree leaves no temp files in the store; `doctor` reports the
/// leftovers of dead processes and `gc --delete` removes them.
#[test]
fn leftovers_of_dead_processes_are_reported_and_collected() {
    let tmp = tempdir();
    let store = tmp.path().join("store");
    let src = tmp.path().join("app");
    unique_tree(&src, 30, "left");
    let out = tmp.path().join("app.vrm");
    for _ in 0..3 {
        ingest_ok(&store, &src, &out, &[]);
    }
    let temps = |dir: &str| -> Vec<String> {
        fs::read_dir(store.join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    };
    assert!(temps("manifests").is_empty(), "{:?}", temps("manifests"));
    assert!(temps("tmp").is_empty(), "{:?}", temps("tmp"));
    // What a killed process leaves: temp names carrying a pid that is gone.
    write_file(&store.join("manifests/.tmp-999999-1"), b"half", 0o600);
    write_file(&store.join("tmp/.copy-999999-0"), b"half a blob", 0o600);
    let d = vrift(&store).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&d.stdout);
    assert!(text.contains("Temp files: 2"), "{text}");
    let o = gc(&store, &["--delete"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(temps("manifests").is_empty() && temps("tmp").is_empty());
}

/// A directory checkout cannot create is an error that counts: exit 1, the count in the
/// summary, the rest of the tree written.
#[test]
fn checkout_counts_every_error_it_prints() {
    let tmp = tempdir();
    let payload: &[u8] = b"fine";
    let store = store_with(tmp.path(), &[payload]);
    let long = vec![b'd'; 300]; // longer than NAME_MAX
    let mut deep = long.clone();
    deep.extend_from_slice(b"/x");
    let m = tmp.path().join("long.vrm");
    fs::write(
        &m,
        craft(&[
            file(b"a", 0o644, payload),
            dir(&long, 0o755),
            file(&deep, 0o644, payload),
        ]),
    )
    .unwrap();
    let dest = tmp.path().join("co");
    let o = vrift(&store)
        .args(["--json", "checkout"])
        .arg(&m)
        .arg(&dest)
        .output()
        .unwrap();
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let v = json_of(&o);
    assert_eq!(num(&v, "errors"), 2, "{v}");
    assert!(
        stderr(&o).contains("cannot create directory"),
        "{}",
        describe(&o)
    );
    assert_eq!(fs::read(dest.join("a")).unwrap(), payload);
}

/// Two phantom ingests of one tree into different outputs: the second waits for the first
/// (saying so), nothing is lost, and together their manifests hold every file.
#[test]
fn concurrent_phantom_ingests_of_one_tree_are_serialized() {
    let tmp = tempdir();
    let store = tmp.path().join("store");
    let src = tmp.path().join("app");
    let original = unique_tree(&src, 2000, "twice");
    let spawn = |out: &str| {
        vrift(&store)
            .arg("ingest")
            .arg(&src)
            .arg("-o")
            .arg(tmp.path().join(out))
            .args(["--mode", "phantom", "-j", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn("a.vrm");
    std::thread::sleep(Duration::from_millis(30));
    let b = spawn("b.vrm");
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_eq!(oa.status.code(), Some(0), "{}", describe(&oa));
    assert_eq!(ob.status.code(), Some(0), "{}", describe(&ob));
    assert!(
        stderr(&oa).contains("waiting for another ingest")
            || stderr(&ob).contains("waiting for another ingest"),
        "neither said it waited:\n{}\n{}",
        describe(&oa),
        describe(&ob)
    );
    verify_store(&store);
    let mut got = Tree::new();
    for out in ["a.vrm", "b.vrm"] {
        let back = tmp.path().join(format!("back-{out}"));
        checkout_ok(&store, &tmp.path().join(out), &back);
        got.extend(snapshot(&back));
    }
    assert_trees_equal(&original, &got, "the two manifests together");
}

/// The usage guide's team store: a setgid group directory, two members with `umask 002`.
/// The second member's ingest works (the first one's registry and shard directories are
/// group-writable), and their `doctor` calls the first one's private blobs unreadable, not
/// corrupt.
#[test]
fn a_store_shared_by_a_group_works_for_every_member() {
    if !need_root() {
        return;
    }
    const GID: u32 = 12000;
    let shared = SharedDir::new();
    let store = shared.path().join("team-store");
    fs::create_dir(&store).unwrap();
    std::os::unix::fs::chown(&store, Some(0), Some(GID)).unwrap();
    fs::set_permissions(&store, fs::Permissions::from_mode(0o2775)).unwrap();
    let member = |uid: u32, args: &[&OsStr]| -> Output {
        let o = Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={GID}"))
            .arg("--clear-groups")
            .args(["sh", "-c", "umask 002; exec \"$0\" \"$@\""])
            .arg(&shared.bin)
            .arg("--the-source-root")
            .arg(&store)
            .args(args)
            .env_remove("VR_THE_SOURCE")
            .output()
            .unwrap();
        assert_no_panic(&o);
        o
    };
    let tree = |uid: u32, name: &str, private: &[u8]| -> PathBuf {
        let d = shared.path().join(name);
        write_file(
            &d.join("shared/lib.js"),
            b"module.exports = 'common';\n",
            0o644,
        );
        write_file(&d.join(format!("own/{name}.js")), name.as_bytes(), 0o644);
        write_file(&d.join("own/private.key.txt"), private, 0o600);
        for p in [&d, &d.join("shared"), &d.join("own")] {
            std::os::unix::fs::chown(p, Some(uid), Some(GID)).unwrap();
        }
        for e in [
            "shared/lib.js",
            &format!("own/{name}.js"),
            "own/private.key.txt",
        ] {
            std::os::unix::fs::chown(d.join(e), Some(uid), Some(GID)).unwrap();
        }
        d
    };
    let a = tree(12001, "alice", b"alice's own");
    let b = tree(12002, "bob", b"bob's own");
    let out = shared.path().join("out");
    fs::create_dir(&out).unwrap();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o777)).unwrap();
    for (uid, src, name) in [(12001, &a, "alice"), (12002, &b, "bob")] {
        let m = out.join(format!("{name}.vrm"));
        let o = member(uid, &[os("ingest"), os(src), os("-o"), os(&m)]);
        assert_eq!(o.status.code(), Some(0), "{name}\n{}", describe(&o));
    }
    let reg = fs::metadata(store.join("registry.json")).unwrap();
    assert_eq!(
        reg.mode() & 0o060,
        0o060,
        "registry not group-writable: {:o}",
        reg.mode()
    );
    let o = member(12002, &[os("doctor")]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!text.contains("corrupt"), "{text}");
    assert!(!text.contains("verify --repair"), "{text}");
    assert!(text.contains("not readable by this user"), "{text}");
    verify_store(&store);
}

/// (4b) The store fills up during a phantom ingest's move phase (a store on a small file
/// system of its own: every file is copied in). Files that did not fit stay at their path,
/// those moved stay referenced (a later `gc --delete` keeps them), and together the tree and
/// the manifest still hold everything.
#[test]
fn enospc_during_a_phantom_move_loses_nothing_to_gc() {
    if !need_root() {
        return;
    }
    let tmp = tempdir();
    let mnt = tmp.path().join("small");
    let _m = small_tmpfs(&mnt, "3m");
    let store = mnt.join("store");
    let src = tmp.path().join("app");
    for i in 0..30 {
        write_file(
            &src.join(format!("big/{i:02}.bin")),
            &pattern(200_000, 500 + i),
            0o644,
        );
    }
    let original = snapshot(&src);
    let out = tmp.path().join("app.vrm");
    let o = ingest_raw(&store, &src, &out, &["--mode", "phantom"]);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(stderr(&o).contains("No space left"), "{}", describe(&o));
    let o = gc(&store, &["--delete"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    verify_store(&store);
    let back = tmp.path().join("back");
    if out.exists() {
        checkout_ok(&store, &out, &back);
    }
    let mut got = if back.exists() {
        snapshot(&back)
    } else {
        Tree::new()
    };
    for (k, n) in snapshot(&src) {
        if matches!(n, Node::File { .. }) {
            got.insert(k, n);
        }
    }
    for (k, n) in &original {
        if matches!(n, Node::File { .. }) {
            let mut want = n.clone();
            if let (Node::File { mode, .. }, Some(Node::File { mode: m2, .. })) =
                (&mut want, got.get(k))
            {
                *mode = *m2; // phantom strips write bits from what it moved
            }
            assert_eq!(got.get(k), Some(&want), "{} lost", show(k));
        }
    }
}

/// A blob damaged in the local store (same size) is never pushed: the push fails naming it
/// and neither the damaged bytes nor the manifest reach the bucket.
#[test]
fn push_never_spreads_a_damaged_blob() {
    if !need_root() {
        return;
    }
    let Some(s3) = common::s3::S3Server::start() else {
        return;
    };
    let tmp = tempdir();
    let store = tmp.path().join("store");
    let src = tmp.path().join("app");
    write_file(&src.join("index.js"), b"module.exports = 'good';\n", 0o644);
    write_file(&src.join("other.js"), b"module.exports = 'other';\n", 0o644);
    let m = tmp.path().join("app.vrm");
    ingest_ok(&store, &src, &m, &[]);
    damage(&blob_path_of(&store, b"module.exports = 'good';\n"), true);
    let mut c = vrift(&store);
    s3.env(&mut c);
    c.args(["--no-progress", "--remote"])
        .arg(format!("s3://{}/ci/cache", common::s3::BUCKET))
        .arg("push")
        .arg(&m);
    let o = output_within(&mut c, 120);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not match its name"),
        "{}",
        describe(&o)
    );
    // Nothing went up: no manifest (bundle) and no pack, so no pack can hold the damaged
    // bytes (both files are one pack's worth: the build stops at the damaged blob).
    assert!(
        !s3.object("ci/cache/manifests").exists(),
        "a manifest was pushed"
    );
    let packs = fs::read_dir(s3.object("ci/cache/packs"))
        .map(std::iter::Iterator::count)
        .unwrap_or(0);
    assert_eq!(packs, 0, "a pack holding the damaged blob was pushed");
}

/// The `--isolate` link farm goes through the same materializer as checkout: a crafted
/// manifest is refused before anything is built, and setuid/setgid bits are dropped.
#[test]
fn the_isolate_link_farm_refuses_crafted_manifests_and_drops_setid() {
    let Some(env) = isolate_support::Env::new() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "user namespaces are required in CI"
        );
        return;
    };
    let payload: &[u8] = b"#!/bin/sh\necho tool\n";
    let seed = env.write("seed/tool.sh", payload, 0o755);
    env.ingest(seed.parent().unwrap(), &env.home.join("seed.vrm"));
    let m = env.home.join("suid.vrm");
    // Its root exists on the host (a mount point for the view).
    let at = env.home.join("suidroot");
    fs::create_dir(&at).unwrap();
    env.give(&at);
    let rows = [dir(b"bin", 0o755), file(b"bin/tool", 0o4755, payload)];
    fs::write(&m, craft_at(at.to_str().unwrap().as_bytes(), &rows)).unwrap();
    let o = env.isolate([
        os("--manifest"),
        m.as_os_str(),
        os("--"),
        os("stat"),
        os("-c"),
        os("%a"),
        at.join("bin/tool").as_os_str(),
    ]);
    assert!(o.status.success(), "{}", isolate_support::describe(&o));
    // Setid dropped, never 4755: a hard link to the blob (no write bits) shows 555, a copy
    // (the crafted row's mtime is not the blob's, see `mtime_second_exact`) 755.
    let mode = isolate_support::stdout(&o);
    assert!(mode == "555\n" || mode == "755\n", "{mode}");
    let evil = env.home.join("evil.vrm");
    fs::write(&evil, craft(&[file(b"../../../tmp/evil", 0o644, payload)])).unwrap();
    let o = env.isolate([os("--manifest"), evil.as_os_str(), os("--"), os("true")]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        isolate_support::describe(&o)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("'..'"));
}
