//! `vrift checkout --replace` over a tree a previous checkout made (a CI runner that keeps its
//! `node_modules` between jobs, then a lock-file change): directories that already hold
//! exactly the new tree's content, as the blobs' own links, are taken whole; everything else
//! is built anew, and what a build step changed in the old tree is never taken for the blob.

use crate::common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

/// Two versions of a small dependency tree: `whole/` and `keep/` (nested, with an executable
/// and a symlink) and the `touched-*` packages are the same in both (but for the mode of
/// `whole/lib`); `bump/` changes one file but keeps `bump/sub/`; `gone/` goes; `new/` comes.
fn versions(root: &Path) -> (PathBuf, PathBuf) {
    let (v1, v2) = (root.join("v1"), root.join("v2"));
    for v in [&v1, &v2] {
        write_file(&v.join("keep/index.js"), b"module.exports = 1;\n", 0o644);
        write_file(&v.join("keep/lib/deep/a.js"), b"exports.a = 'a';\n", 0o644);
        write_file(&v.join("keep/bin/cli"), b"#!/bin/sh\necho keep\n", 0o755);
        symlink("lib/deep/a.js", &v.join("keep/main.js"));
        for p in ["touched-extra", "touched-file", "touched-link"] {
            write_file(&v.join(p).join("index.js"), p.as_bytes(), 0o644);
            write_file(&v.join(p).join("lib/util.js"), b"util\n", 0o644);
        }
        write_file(&v.join("bump/sub/x.js"), b"x\n", 0o644);
        write_file(&v.join("whole/index.js"), b"whole\n", 0o644);
        write_file(&v.join("whole/lib/deep/w.js"), b"exports.w = 1;\n", 0o644);
        symlink("lib/deep/w.js", &v.join("whole/main.js"));
    }
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(v1.join("whole/lib"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(v2.join("whole/lib"), fs::Permissions::from_mode(0o750)).unwrap();
    write_file(
        &v1.join("bump/package.json"),
        b"{\"version\":\"1.0.0\"}\n",
        0o644,
    );
    write_file(
        &v2.join("bump/package.json"),
        b"{\"version\":\"1.1.0\"}\n",
        0o644,
    );
    write_file(&v1.join("gone/index.js"), b"gone\n", 0o644);
    write_file(&v2.join("new/index.js"), b"new in v2\n", 0o644);
    (v1, v2)
}

fn checkout_replace(store: &Path, manifest: &Path, dest: &Path, extra: &[&str]) -> Output {
    vrift(store)
        .args(["--json", "checkout", "--replace"])
        .args(extra)
        .arg(manifest)
        .arg(dest)
        .output()
        .expect("spawn vrift")
}

fn ino(p: &Path) -> u64 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .ino()
}

/// Directory path → mtime, for the whole tree (a checkout gives every directory the
/// manifest's time, taken or built).
fn dir_times(root: &Path) -> Vec<(PathBuf, i64, i64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let md = fs::symlink_metadata(&d).unwrap();
        out.push((
            d.strip_prefix(root).unwrap().to_path_buf(),
            md.mtime(),
            md.mtime_nsec(),
        ));
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// A store holding both versions (`m1`, `m2`) and `dest`, a checkout of the first.
struct Setup {
    cx: TestContext,
    m1: PathBuf,
    m2: PathBuf,
    dest: PathBuf,
}

fn setup() -> Setup {
    let cx = TestContext::new();
    let (v1, v2) = versions(cx.root());
    let (m1, m2) = (cx.path("v1.vrm"), cx.path("v2.vrm"));
    cx.ingest(&v1, &m1, &[]);
    cx.ingest(&v2, &m2, &[]);
    let dest = cx.path("node_modules");
    cx.checkout(&m1, &dest);
    Setup { cx, m1, m2, dest }
}

/// Nothing of a replace is left beside the destination (`.NAME.vrift-new-PID`, `-old-`).
#[track_caller]
fn assert_no_side_trees(dir: &Path) {
    let left: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".vrift-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn replace_takes_matching_directories_and_builds_the_rest() {
    let Setup { cx, m1, m2, dest } = setup();
    let store = &cx.store;
    let expected_dir = cx.root().join("expected");
    cx.checkout(&m2, &expected_dir);
    let expected = snapshot(&expected_dir);
    // What build steps do to a kept tree: add a file, replace one by a copy with the same
    // bytes (patch-package, an editor), swap a directory for a symlink to elsewhere.
    write_file(
        &dest.join("touched-extra/generated.js"),
        b"made by a build\n",
        0o644,
    );
    let f = dest.join("touched-file/index.js");
    let bytes = fs::read(&f).unwrap();
    fs::remove_file(&f).unwrap();
    write_file(&f, &bytes, 0o444);
    let outside = cx.root().join("outside");
    write_file(&outside.join("util.js"), b"util\n", 0o644);
    fs::remove_dir_all(dest.join("touched-link/lib")).unwrap();
    symlink(&outside, &dest.join("touched-link/lib"));
    // A directory someone else may write (group-writable), and, when the test can, one
    // another user owns: neither is taken (it could change between the check and the move),
    // though the matching directories beside them are.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(
        dest.join("keep/lib/deep"),
        fs::Permissions::from_mode(0o775),
    )
    .unwrap();
    let foreign = is_root();
    if foreign {
        std::os::unix::fs::lchown(dest.join("bump/sub"), Some(65534), Some(65534)).unwrap();
    }
    let outside_before = snapshot(&outside);
    let whole_inode = ino(&dest.join("whole"));
    let copy_inode = ino(&f);

    let o = checkout_replace(store, &m2, &dest, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let v = json_of(&o);
    assert_trees_equal(&expected, &snapshot(&dest), "replaced tree");
    assert_eq!(
        dir_times(&expected_dir),
        dir_times(&dest),
        "directory times"
    );
    // Taken: whole/ (2 files), keep/bin/ (1; keep/lib/deep is group-writable), bump/sub/
    // (1, unless another user owns it), and the untouched lib/ of touched-extra and
    // touched-file (1 each); built: everything else.
    let want = 2 + 1 + u64::from(!foreign) + 1 + 1;
    assert_eq!(num(&v, "reused"), want, "{v}");
    assert_eq!(num(&v, "files"), file_count(&expected) as u64, "{v}");
    assert_eq!(
        ino(&dest.join("whole")),
        whole_inode,
        "whole/ was not taken"
    );
    assert_eq!(
        fs::metadata(dest.join("bump/sub")).unwrap().uid(),
        fs::metadata(&expected_dir).unwrap().uid(),
        "another user's directory was taken"
    );
    assert_ne!(
        ino(&dest.join("touched-file/index.js")),
        copy_inode,
        "a file that is not the blob's link was taken as the blob"
    );
    assert_eq!(
        ino(&dest.join("touched-file/index.js")),
        ino(&blob_path_of(store, b"touched-file"))
    );
    assert_eq!(
        outside_before,
        snapshot(&outside),
        "the symlinked directory was entered"
    );
    assert_no_side_trees(cx.root());

    // The human line says how many files were kept.
    let o = cx
        .vrift()
        .args(["checkout", "--replace"])
        .arg(&m1)
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let line = String::from_utf8_lossy(&o.stdout);
    assert!(line.contains(" kept, "), "{line}");
}

#[test]
fn a_replace_that_fails_leaves_the_old_tree_as_it_was() {
    let Setup { cx, m2, dest, .. } = setup();
    let store = &cx.store;
    let before = snapshot(&dest);
    let times = dir_times(&dest);
    let kept_inode = ino(&dest.join("keep"));
    // A blob only the new tree needs is gone: the new tree cannot be completed, after the
    // matching directories were already taken from the old one.
    let blob = blob_path_of(store, b"new in v2\n");
    fs::remove_file(&blob).unwrap();

    let o = checkout_replace(store, &m2, &dest, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let v = json_of(&o);
    assert!(
        num(&v, "reused") > 0,
        "nothing was taken, so nothing was put back: {v}"
    );
    assert_trees_equal(
        &before,
        &snapshot(&dest),
        "the old tree after a failed replace",
    );
    assert_eq!(
        dir_times(&dest),
        times,
        "directory times after a failed replace"
    );
    assert_eq!(ino(&dest.join("keep")), kept_inode);
    assert_no_side_trees(cx.root());
}

#[test]
fn a_copying_replace_takes_nothing_from_the_old_tree() {
    let Setup { cx, m2, dest, .. } = setup();
    let store = &cx.store;
    let o = checkout_replace(store, &m2, &dest, &["--link-mode", "copy"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let v = json_of(&o);
    assert_eq!(num(&v, "reused"), 0, "{v}");
    assert_ne!(
        ino(&dest.join("keep/lib/deep/a.js")),
        ino(&blob_path_of(store, b"exports.a = 'a';\n")),
        "a copy shares the store's inode"
    );
}
