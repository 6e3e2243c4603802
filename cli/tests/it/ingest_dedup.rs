//! Deduplication in the store: blob naming and layout, cross-project sharing, exec bits of
//! files that share content, and re-ingest of unchanged and changed trees.

use crate::common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::*;

/// A project whose files carry contents `first..first+n` (each twice, in two packages), plus
/// an empty file and a shared LICENSE.
fn project(root: &Path, first: usize, n: usize) {
    for i in first..first + n {
        let c = format!("module.exports = {i};\n");
        write_file(&root.join(format!("a/f{i}.js")), c.as_bytes(), 0o644);
        write_file(&root.join(format!("b/deep/f{i}.js")), c.as_bytes(), 0o644);
    }
    write_file(&root.join("LICENSE"), b"MIT\n", 0o644);
    write_file(&root.join("empty"), b"", 0o644);
}

fn hexes(t: &Tree) -> BTreeSet<String> {
    distinct_contents(t)
        .iter()
        .map(|c| format!("{}_{}", digest::hex(c), c.len()))
        .collect()
}

fn blob_names(store: &Path) -> BTreeSet<String> {
    verify_store(store)
        .into_iter()
        .map(|b| format!("{}_{}", b.hex, b.size))
        .collect()
}

/// Blob count = distinct contents; names = BLAKE3 of the bytes + size; `ab/cd/` shards;
/// no write bits.
#[test]
fn blobs_are_named_by_their_content() {
    let t = tempdir();
    let src = t.path().join("p");
    build_tricky_tree(&src);
    project(&src.join("extra"), 0, 100);
    let original = snapshot(&src);
    let store = t.path().join("store");
    let v = ingest_ok(&store, &src, &t.path().join("m.vrm"), &[]);
    let distinct = distinct_contents(&original);
    assert_eq!(num(&v, "blobs_new"), distinct.len() as u64, "{v}");
    // verify_store re-hashes every blob with an independent BLAKE3 and checks the layout
    let names = blob_names(&store);
    assert_eq!(
        names,
        hexes(&original),
        "blob set = distinct contents of the tree"
    );
    // Shard directories are made on demand, not all 65,536 up front.
    let shards = fs::read_dir(store.join("blake3")).unwrap().count();
    assert!(
        shards <= distinct.len(),
        "{shards} top-level shards for {} blobs",
        distinct.len()
    );
    // Known vector: the empty blob.
    assert!(store
        .join("blake3/af/13/af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262_0.bin")
        .is_file());
}

/// A second project adds only the contents the store lacks, and (solid) its files become
/// links to the existing blobs.
#[test]
fn second_project_adds_only_new_blobs_and_shares_inodes() {
    let t = tempdir();
    let store = t.path().join("store");
    let a = t.path().join("project-a");
    let b = t.path().join("project-b");
    project(&a, 0, 100);
    project(&b, 60, 100); // 40 contents shared with a, plus LICENSE and empty
    let (ta, tb) = (snapshot(&a), snapshot(&b));
    let va = ingest_ok(&store, &a, &t.path().join("a.vrm"), &[]);
    assert_eq!(num(&va, "blobs_new"), distinct_contents(&ta).len() as u64);
    let vb = ingest_ok(&store, &b, &t.path().join("b.vrm"), &[]);
    let new_in_b: BTreeSet<_> = distinct_contents(&tb)
        .difference(&distinct_contents(&ta))
        .cloned()
        .collect();
    assert_eq!(num(&vb, "blobs_new"), new_in_b.len() as u64, "{vb}");
    assert_eq!(new_in_b.len(), 60);
    assert_eq!(
        num(&vb, "dedup_hits"),
        file_count(&tb) as u64 - new_in_b.len() as u64,
        "{vb}"
    );
    let all: BTreeSet<String> = hexes(&ta).union(&hexes(&tb)).cloned().collect();
    assert_eq!(blob_names(&store), all);

    // Every file of both projects is now its blob's inode.
    for (root, tree) in [(&a, &ta), (&b, &tb)] {
        for (rel, n) in tree {
            if let Node::File { content, .. } = n {
                let f = fs::symlink_metadata(join(root, rel)).unwrap();
                let blob = fs::metadata(blob_path_of(&store, content)).unwrap();
                assert_eq!(
                    (f.dev(), f.ino()),
                    (blob.dev(), blob.ino()),
                    "{} in {} does not share its blob's inode",
                    show(rel),
                    root.display()
                );
                assert_eq!(f.mode() & 0o222, 0, "{} is still writable", show(rel));
            }
        }
        // Contents untouched.
        assert_trees_equal(tree, &snapshot(root), "source after ingest");
        assert_no_leftovers(&store, root);
    }
    // The shared LICENSE: 2 projects x 1 file + the blob itself.
    let lic = fs::metadata(blob_path_of(&store, b"MIT\n")).unwrap();
    assert_eq!(lic.nlink(), 3);

    for (m, tree) in [("a.vrm", &ta), ("b.vrm", &tb)] {
        let dest = t.path().join(format!("restored-{m}"));
        checkout_ok(&store, &t.path().join(m), &dest);
        assert_trees_equal(tree, &snapshot(&dest), m);
    }
}

const SCRIPT: &[u8] = b"#!/bin/sh\necho same-content-ran\n";

/// Files with identical content but different exec bits, in one project and across two
/// projects in both orders.
fn exec_conflict_trees(t: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let a = t.join("first");
    write_file(&a.join("tool.sh"), SCRIPT, 0o644);
    write_file(&a.join("bin/tool"), SCRIPT, 0o755);
    write_file(&a.join("doc/tool.txt"), SCRIPT, 0o644);
    write_file(&a.join("other-exec"), b"#!/bin/sh\necho other\n", 0o755);
    write_file(&a.join("other-plain"), b"#!/bin/sh\necho other\n", 0o644);
    let b = t.join("second");
    write_file(&b.join(".bin/tool"), SCRIPT, 0o755);
    write_file(&b.join("copy.sh"), SCRIPT, 0o644);
    write_file(&b.join("x/other"), b"#!/bin/sh\necho other\n", 0o755);
    write_file(&b.join("x/other.txt"), b"#!/bin/sh\necho other\n", 0o644);
    (a, b)
}

/// Mode bits as a program sees them at `p` (following a tier1 symlink).
fn effective_mode(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
}

fn assert_exec_bits_and_run(root: &Path, tree: &Tree, when: &str) {
    for (rel, n) in tree {
        if let Node::File { content, mode } = n {
            let p = join(root, rel);
            let m = effective_mode(&p);
            assert_eq!(
                m & 0o111,
                mode & 0o111,
                "{when}: exec bits of {} are {:o}, were {:o}",
                show(rel),
                m & 0o777,
                mode
            );
            assert_eq!(&fs::read(&p).unwrap(), content, "{when}: {}", show(rel));
            if mode & 0o111 != 0 {
                let o = Command::new(&p).output().unwrap();
                assert!(
                    o.status.success(),
                    "{when}: {} does not run: {}",
                    show(rel),
                    describe(&o)
                );
            }
        }
    }
}

fn exec_bits_survive(mode: &str, tier: &str) {
    let t = tempdir();
    let store = t.path().join("store");
    let (a, b) = exec_conflict_trees(t.path());
    let (ta, tb) = (snapshot(&a), snapshot(&b));
    let args = ["--mode", mode, "--tier", tier];
    ingest_ok(&store, &a, &t.path().join("a.vrm"), &args);
    ingest_ok(&store, &b, &t.path().join("b.vrm"), &args);
    verify_store(&store);
    if mode == "solid" || tier == "tier1" {
        assert_exec_bits_and_run(&a, &ta, "source a after ingest");
        assert_exec_bits_and_run(&b, &tb, "source b after ingest");
    }
    for (m, tree) in [("a.vrm", &ta), ("b.vrm", &tb)] {
        let dest = t.path().join(format!("restored-{m}"));
        checkout_ok(&store, &t.path().join(m), &dest);
        assert_trees_equal(tree, &snapshot(&dest), m);
        assert_exec_bits_and_run(&dest, tree, "after checkout");
    }
    // Re-ingest of the unchanged trees keeps them as they are.
    if mode == "solid" {
        let v = ingest_ok(&store, &a, &t.path().join("a.vrm"), &args);
        assert_eq!(num(&v, "skipped"), num(&v, "files"), "{v}");
        assert_exec_bits_and_run(&a, &ta, "source a after re-ingest");
    }
}

#[test]
fn exec_bits_survive_shared_content_solid_tier2() {
    exec_bits_survive("solid", "tier2");
}

#[test]
fn exec_bits_survive_shared_content_solid_tier1() {
    exec_bits_survive("solid", "tier1");
}

#[test]
fn exec_bits_survive_shared_content_phantom_tier2() {
    exec_bits_survive("phantom", "tier2");
}

#[test]
fn exec_bits_survive_shared_content_phantom_tier1() {
    exec_bits_survive("phantom", "tier1");
}

/// Same content, different read permissions (a private 0600 file and a public 0644 one):
/// neither may come back with the other's permissions, in the source or after checkout (a
/// private file must not become world-readable).
fn read_bits_survive(mode: &str) {
    let t = tempdir();
    let store = t.path().join("store");
    let src = t.path().join("p");
    write_file(&src.join("public.txt"), b"token=123\n", 0o644);
    write_file(&src.join("private.txt"), b"token=123\n", 0o600);
    write_file(&src.join("group.txt"), b"token=123\n", 0o640);
    let original = snapshot(&src);
    ingest_ok(&store, &src, &t.path().join("m.vrm"), &["--mode", mode]);
    if mode == "solid" {
        assert_trees_equal(&original, &snapshot(&src), "source after ingest");
    }
    let dest = t.path().join("restored");
    checkout_ok(&store, &t.path().join("m.vrm"), &dest);
    assert_trees_equal(&original, &snapshot(&dest), "checkout");
}

#[test]
fn read_bits_survive_shared_content_solid() {
    read_bits_survive("solid");
}

#[test]
fn read_bits_survive_shared_content_phantom() {
    read_bits_survive("phantom");
}

/// Solid mode: a duplicate whose mode differs from the blob's keeps its own inode (one inode
/// cannot carry two modes); those with the blob's mode share it.
#[test]
fn mode_conflict_keeps_its_own_inode() {
    let t = tempdir();
    let store = t.path().join("store");
    let (a, _) = exec_conflict_trees(t.path());
    let v = ingest_ok(&store, &a, &t.path().join("a.vrm"), &[]);
    assert_eq!(num(&v, "blobs_new"), 2, "{v}");
    for content in [SCRIPT, &b"#!/bin/sh\necho other\n"[..]] {
        let blob = fs::metadata(blob_path_of(&store, content)).unwrap();
        let mut shared = 0;
        for (rel, n) in snapshot(&a) {
            let Node::File { content: c, .. } = n else {
                continue;
            };
            if c != content {
                continue;
            }
            let f = fs::metadata(join(&a, &rel)).unwrap();
            if f.mode() & 0o111 == blob.mode() & 0o111 {
                assert_eq!(f.ino(), blob.ino(), "{} should share the blob", show(&rel));
                shared += 1;
            } else {
                assert_ne!(f.ino(), blob.ino(), "{} has another mode", show(&rel));
            }
        }
        assert!(shared >= 1);
    }
}

// ---------------------------------------------------------------------------------------
// Re-ingest
// ---------------------------------------------------------------------------------------

fn reingest_unchanged(tier: &str) {
    let t = tempdir();
    let src = t.path().join("p");
    build_tricky_tree(&src);
    let original = snapshot(&src);
    let store = t.path().join("store");
    let out = t.path().join("m.vrm");
    let args = ["--tier", tier];
    let v1 = ingest_ok(&store, &src, &out, &args);
    let files = num(&v1, "files");
    assert_eq!(files, file_count(&original) as u64);
    let v2 = ingest_ok(&store, &src, &out, &args);
    assert_eq!(num(&v2, "files"), files, "{v2}");
    assert_eq!(num(&v2, "skipped"), files, "{v2}");
    assert_eq!(num(&v2, "blobs_new"), 0, "{v2}");
    assert_eq!(num(&v2, "dedup_hits"), 0, "nothing was hashed: {v2}");
    // Nothing changed since: the manifest is not even rewritten.
    let before = fs::metadata(&out).unwrap();
    let v3 = ingest_ok(&store, &src, &out, &args);
    assert_eq!(num(&v3, "skipped"), files, "{v3}");
    let after = fs::metadata(&out).unwrap();
    assert_eq!(
        (before.ino(), before.mtime(), before.mtime_nsec()),
        (after.ino(), after.mtime(), after.mtime_nsec()),
        "unchanged tree: manifest rewritten"
    );
    let dest = t.path().join("restored");
    checkout_ok(&store, &out, &dest);
    assert_trees_equal(&original, &snapshot(&dest), "after re-ingest");
    if tier == "tier2" {
        no_cache_rehashes(&store, &src, &out, tier, &original);
    }
}

/// `--no-cache` reads everything again and yields the same tree.
fn no_cache_rehashes(store: &Path, src: &Path, out: &Path, tier: &str, original: &Tree) {
    let files = file_count(original) as u64;
    let v4 = ingest_ok(store, src, out, &["--tier", tier, "--no-cache"]);
    assert_eq!(num(&v4, "files"), files, "{v4}");
    assert_eq!(num(&v4, "skipped"), 0, "{v4}");
    assert_eq!(num(&v4, "blobs_new"), 0, "{v4}");
    assert_eq!(num(&v4, "dedup_hits"), files, "{v4}");
    let dest = out.with_extension("restored-no-cache");
    checkout_ok(store, out, &dest);
    assert_trees_equal(original, &snapshot(&dest), "after --no-cache");
}

/// A tier1 source is a tree of symlinks into the store; `--no-cache` (re-hash everything,
/// ignore the previous manifest) must still record them as the files they stand for, not as
/// symlinks into the store.
#[test]
fn no_cache_reingest_of_a_tier1_tree_keeps_files() {
    let t = tempdir();
    let src = t.path().join("p");
    build_tricky_tree(&src);
    let original = snapshot(&src);
    let store = t.path().join("store");
    let out = t.path().join("m.vrm");
    ingest_ok(&store, &src, &out, &["--tier", "tier1"]);
    // Without the previous manifest, a symlink into the store is recognized by the blob's
    // name as the file it replaced (the blob is not read again: its name is its content).
    let files = file_count(&original) as u64;
    let v = ingest_ok(&store, &src, &out, &["--tier", "tier1", "--no-cache"]);
    assert_eq!(num(&v, "files"), files, "{v}");
    assert_eq!(num(&v, "blobs_new"), 0, "{v}");
    let dest = out.with_extension("restored-no-cache");
    checkout_ok(&store, &out, &dest);
    assert_trees_equal(&original, &snapshot(&dest), "after --no-cache");
}

#[test]
fn reingest_of_an_unchanged_tree_skips_every_file_tier2() {
    reingest_unchanged("tier2");
}

#[test]
fn reingest_of_an_unchanged_tree_skips_every_file_tier1() {
    reingest_unchanged("tier1");
}

/// Replace a file the way editors and package managers do (new file, rename over).
fn replace(p: &Path, content: &[u8]) {
    let tmp = p.with_extension("new-tmp");
    fs::write(&tmp, content).unwrap();
    fs::rename(&tmp, p).unwrap();
}

fn reingest_changes(tier: &str) {
    let t = tempdir();
    let src = t.path().join("p");
    build_tricky_tree(&src);
    let store = t.path().join("store");
    let out = t.path().join("m.vrm");
    let args = ["--tier", tier];
    let v1 = ingest_ok(&store, &src, &out, &args);
    let files = num(&v1, "files");

    replace(
        &src.join("node_modules/left-pad/index.js"),
        b"module.exports = 'changed';\n",
    );
    fs::remove_file(src.join("node_modules/right-pad/debug.log")).unwrap();
    write_file(
        &src.join("node_modules/new-pkg/index.js"),
        b"brand new\n",
        0o644,
    );
    // Dedup content in a new file costs no blob.
    write_file(
        &src.join("node_modules/new-pkg/LICENSE"),
        b"MIT License\n\nCopyright (c) left-pad\n",
        0o644,
    );
    let expected = resolve_tier1(&src, &snapshot(&src));

    let v2 = ingest_ok(&store, &src, &out, &args);
    assert_eq!(num(&v2, "files"), files + 1, "{v2}");
    assert_eq!(
        num(&v2, "skipped"),
        files - 2,
        "changed, deleted not skipped: {v2}"
    );
    assert_eq!(
        num(&v2, "blobs_new"),
        2,
        "changed file re-hashed, new file hashed: {v2}"
    );
    assert_eq!(num(&v2, "dedup_hits"), 1, "{v2}");
    let dest = t.path().join("restored");
    checkout_ok(&store, &out, &dest);
    assert_trees_equal(&expected, &snapshot(&dest), "checkout after changes");
    verify_store(&store);
    assert_no_leftovers(&store, &src);
}

/// A tier1 source holds symlinks into the store where files were: the tree a checkout must
/// give back has the blobs' contents there.
fn resolve_tier1(src: &Path, t: &Tree) -> Tree {
    let mut out = Tree::new();
    for (rel, n) in t {
        let n = match n {
            Node::Symlink { target } if target.ends_with(b".bin") && target.starts_with(b"/") => {
                let p = join(src, rel);
                let md = fs::metadata(&p).unwrap();
                Node::File {
                    content: fs::read(&p).unwrap(),
                    mode: md.permissions().mode() & RX_BITS,
                }
            }
            other => other.clone(),
        };
        out.insert(rel.clone(), n);
    }
    out
}

#[test]
fn reingest_sees_modified_deleted_and_added_files_tier2() {
    reingest_changes("tier2");
}

#[test]
fn reingest_sees_modified_deleted_and_added_files_tier1() {
    reingest_changes("tier1");
}

/// `touch` (same content, new mtime) is re-hashed but stores nothing new.
#[test]
fn reingest_after_touch_rehashes_without_new_blobs() {
    let t = tempdir();
    let src = t.path().join("p");
    project(&src, 0, 20);
    let store = t.path().join("store");
    let out = t.path().join("m.vrm");
    let v1 = ingest_ok(&store, &src, &out, &[]);
    let f = src.join("LICENSE"); // the only file with its content (so its own inode)
    let st = Command::new("touch")
        .arg("-d")
        .arg("2001-02-03 04:05:06")
        .arg(&f)
        .status()
        .unwrap();
    assert!(st.success());
    let v2 = ingest_ok(&store, &src, &out, &[]);
    assert_eq!(num(&v2, "skipped"), num(&v1, "files") - 1, "{v2}");
    assert_eq!(num(&v2, "blobs_new"), 0, "{v2}");
    assert_eq!(num(&v2, "dedup_hits"), 1, "{v2}");
}

/// A blob written to after it was stored (its size no longer the one its name says) is never
/// shared: the next ingest of that content removes it, stores its own file in its place with
/// a warning naming the blob, and the store verifies again.
#[test]
fn a_damaged_blob_is_replaced_by_the_next_file_with_its_content() {
    use std::io::Write;
    let t = tempdir();
    let store = t.path().join("store");
    let content = b"module.exports = 'shared';\n";
    let a = t.path().join("a");
    write_file(&a.join("x.js"), content, 0o644);
    ingest_ok(&store, &a, &t.path().join("a.vrm"), &[]);
    // Damage it the way a writer that kept its descriptor would: append.
    let blob = blob_path_of(&store, content);
    fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(&blob)
        .unwrap()
        .write_all(b"junk")
        .unwrap();
    fs::set_permissions(&blob, fs::Permissions::from_mode(0o444)).unwrap();

    let b = t.path().join("b");
    write_file(&b.join("y.js"), content, 0o644);
    let out = t.path().join("b.vrm");
    let o = ingest_raw(&store, &b, &out, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let v = json_of(&o);
    assert_eq!(num(&v, "blobs_new"), 1, "stored again, as new: {v}");
    assert_eq!(num(&v, "dedup_hits"), 0, "{v}");
    let e = stderr(&o);
    assert!(
        e.contains("was damaged") && e.contains("replaced by this file"),
        "{e}"
    );
    verify_store(&store);
    assert_eq!(fs::read(&blob).unwrap(), content);
    assert_eq!(
        fs::metadata(&blob).unwrap().ino(),
        fs::metadata(b.join("y.js")).unwrap().ino(),
        "the new file is the blob now"
    );
    let restored = t.path().join("restored");
    checkout_ok(&store, &out, &restored);
    assert_eq!(fs::read(restored.join("y.js")).unwrap(), content);
}
