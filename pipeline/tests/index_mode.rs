//! Index mode (what `restore` uses to save on a fresh runner): the manifest is the one a
//! storing ingest writes, while the store gets no blob and no project, and the tree keeps
//! every file exactly as it was (content, mode, link count).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use vrift_manifest::Manifest;
use vrift_pipeline::{ingest, Counters, IngestOptions, Mode};
use vrift_test::oracle::{entries, Seen};

fn build_tree(root: &Path) {
    for p in 0..5 {
        let pkg = root.join(format!("pkg{p}/lib"));
        fs::create_dir_all(&pkg).unwrap();
        fs::write(pkg.join("index.js"), format!("module.exports = {p};\n")).unwrap();
        fs::write(pkg.join("LICENSE"), "shared by every package\n").unwrap();
    }
    let bin = root.join("pkg0/cli.sh");
    fs::write(&bin, "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    symlink("pkg0/cli.sh", root.join("cli")).unwrap();
    fs::write(root.join("empty"), "").unwrap();
}

fn seen(m: &Path) -> Seen {
    entries(&Manifest::open(m).unwrap())
}

/// Path → (mode, link count, content) of every regular file under `root`.
fn files(root: &Path) -> BTreeMap<String, (u32, u64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p);
            } else if md.is_file() {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, (md.mode(), md.nlink(), fs::read(&p).unwrap()));
            }
        }
    }
    out
}

fn blobs(store: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![store.join("blake3")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn index_mode_records_the_tree_and_leaves_tree_and_store_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, copy) = (tmp.path().join("tree"), tmp.path().join("copy"));
    build_tree(&tree);
    // `cp -a` keeps mtimes: the two trees differ only in their inodes.
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(&tree)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(ok.success());
    let before = files(&tree);

    let index_store = tmp.path().join("index-store");
    let mut o = IngestOptions::new(&tree, tmp.path().join("index.vrm"));
    o.mode = Mode::Index;
    let r = ingest(&o, &index_store, &Counters::default(), |_| {}).unwrap();
    assert_eq!(r.errors, 0);
    assert_eq!(r.details.project, None, "an index-only tree was registered");

    let copy_store = tmp.path().join("copy-store");
    let mut o = IngestOptions::new(&copy, tmp.path().join("copy.vrm"));
    o.mode = Mode::Copy;
    ingest(&o, &copy_store, &Counters::default(), |_| {}).unwrap();

    assert_eq!(
        seen(&tmp.path().join("index.vrm")),
        seen(&tmp.path().join("copy.vrm")),
        "index mode wrote another manifest than a storing ingest"
    );
    assert_eq!(blobs(&index_store), 0, "index mode stored blobs");
    assert!(blobs(&copy_store) > 0, "the oracle stored nothing");
    assert_eq!(files(&tree), before, "index mode changed the tree");
}
