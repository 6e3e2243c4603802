//! Where a hard link is impossible: EMLINK (ext4 caps an inode at 65,000 links) and EXDEV
//! (store on another filesystem than the source). Ingest must fall back to copies, never fail.

use crate::common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const N_SAME: usize = 70_000;
const LICENSE: &[u8] = b"MIT License\n\nPermission is hereby granted, free of charge...\n";

/// 70,000 files with identical content (more than ext4's 65,000-link cap): the ingest goes
/// through with no errors, one blob, and a checkout restores all of them.
#[test]
fn emlink_70000_identical_files() {
    let t = tempdir();
    let src = t.path().join("p");
    for d in 0..N_SAME / 1000 {
        let dir = src.join(format!("pkg{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for i in 0..1000 {
            fs::write(dir.join(format!("LICENSE-{i}")), LICENSE).unwrap();
        }
    }
    let store = t.path().join("store");
    let out = t.path().join("m.vrm");
    let v = ingest_ok(&store, &src, &out, &[]);
    assert_eq!(num(&v, "files") as usize, N_SAME, "{v}");
    assert_eq!(num(&v, "blobs_new"), 1, "{v}");
    assert_eq!(num(&v, "dedup_hits") as usize, N_SAME - 1, "{v}");
    let blobs = verify_store(&store);
    assert_eq!(blobs.len(), 1);
    if blobs[0].nlink < 65_000 {
        eprintln!(
            "note: the blob has only {} links: this filesystem has no 65,000 cap, EMLINK not exercised",
            blobs[0].nlink
        );
    }
    assert_no_leftovers(&store, &src);

    // Every source file is intact (linked or kept as its own copy).
    let mut own_inode = 0;
    for d in 0..N_SAME / 1000 {
        for i in 0..1000 {
            let p = src.join(format!("pkg{d:02}/LICENSE-{i}"));
            let md = fs::symlink_metadata(&p).unwrap();
            assert!(md.is_file(), "{} is no longer a file", p.display());
            assert_eq!(md.len(), LICENSE.len() as u64);
            if md.ino() != blobs[0].ino {
                own_inode += 1;
            }
        }
    }
    eprintln!("{own_inode} files kept their own inode (link cap)");
    // Spot-check contents (all share one or a few inodes, so a sample is enough).
    for i in (0..N_SAME).step_by(997) {
        let p = src.join(format!("pkg{:02}/LICENSE-{}", i / 1000, i % 1000));
        assert_eq!(fs::read(&p).unwrap(), LICENSE, "{}", p.display());
    }

    // Re-ingest: everything unchanged (including the files that kept their own inode).
    let v2 = ingest_ok(&store, &src, &out, &[]);
    assert_eq!(num(&v2, "skipped") as usize, N_SAME, "{v2}");

    // Checkout: links until the cap, copies after; every file there with the content.
    let dest = t.path().join("restored");
    checkout_ok(&store, &out, &dest);
    let mut n = 0;
    for d in 0..N_SAME / 1000 {
        for e in fs::read_dir(dest.join(format!("pkg{d:02}"))).unwrap() {
            let e = e.unwrap();
            let md = fs::symlink_metadata(e.path()).unwrap();
            assert!(md.is_file());
            assert_eq!(md.len(), LICENSE.len() as u64, "{}", e.path().display());
            assert_eq!(md.mode() & 0o111, 0);
            n += 1;
        }
    }
    assert_eq!(n, N_SAME);
    for i in (0..N_SAME).step_by(991) {
        let p = dest.join(format!("pkg{:02}/LICENSE-{}", i / 1000, i % 1000));
        assert_eq!(fs::read(&p).unwrap(), LICENSE, "{}", p.display());
    }
    assert_eq!(verify_store(&store).len(), 1);
}

/// A store on tmpfs and a source on disk, or `None` (with a message) where they cannot be
/// on different filesystems here.
fn cross_device() -> Option<(tempfile::TempDir, tempfile::TempDir)> {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        skip_unless_ci("no /dev/shm");
        return None;
    }
    let store_dir = tempfile::Builder::new()
        .prefix("vrift-e2e-store-")
        .tempdir_in(shm)
        .ok()?;
    // Prefer the build directory (on disk for sure), else the default temp dir.
    let target = PathBuf::from(env!("CARGO_BIN_EXE_vrift"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let src_dir = tempfile::Builder::new()
        .prefix("vrift-e2e-src-")
        .tempdir_in(&target)
        .or_else(|_| tempfile::Builder::new().prefix("vrift-e2e-src-").tempdir())
        .ok()?;
    let fs_of = |p: &Path| {
        let o = Command::new("stat")
            .args(["-f", "-c", "%T %i"])
            .arg(p)
            .output();
        o.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let (a, b) = (fs_of(store_dir.path()), fs_of(src_dir.path()));
    let (da, db) = (
        fs::metadata(store_dir.path()).unwrap().dev(),
        fs::metadata(src_dir.path()).unwrap().dev(),
    );
    if da == db || a == b {
        skip_unless_ci(&format!(
            "store ({a}) and source ({b}) are on the same filesystem here"
        ));
        return None;
    }
    eprintln!("store on {a}, source on {b}");
    Some((store_dir, src_dir))
}

fn exdev(mode: &str, tier: &str) {
    let Some((store_dir, src_dir)) = cross_device() else {
        return;
    };
    let store = store_dir.path().join("store");
    let src = src_dir.path().join("project");
    build_tricky_tree(&src);
    let original = snapshot(&src);
    let full_modes: Vec<(Vec<u8>, u32)> = original
        .keys()
        .map(|k| {
            (
                k.clone(),
                fs::symlink_metadata(join(&src, k)).unwrap().mode(),
            )
        })
        .collect();
    let out = src_dir.path().join("m.vrm");
    let v = ingest_ok(&store, &src, &out, &["--mode", mode, "--tier", tier]);
    let distinct = distinct_contents(&original);
    assert_eq!(num(&v, "files") as usize, file_count(&original), "{v}");
    if mode == "solid" {
        // (phantom: see exdev_phantom_counts_duplicates_as_dedup_hits)
        assert_eq!(num(&v, "blobs_new") as usize, distinct.len(), "{v}");
    }
    let blobs = verify_store(&store);
    assert_eq!(blobs.len(), distinct.len());
    let src_dev = fs::metadata(&src).unwrap().dev();
    for b in &blobs {
        assert_ne!(
            b.dev,
            src_dev,
            "blob {} not on the store's filesystem",
            b.path.display()
        );
        assert_eq!(b.nlink, 1, "blob {} is a copy: one link", b.path.display());
    }
    assert_no_leftovers(&store, &src);

    let store_c = fs::canonicalize(&store).unwrap();
    match (mode, tier) {
        ("solid", "tier2") => {
            // Copies were made; the project files are left alone, write bits and all.
            assert_trees_equal(&original, &snapshot(&src), "source after ingest");
            for (k, m) in &full_modes {
                let now = fs::symlink_metadata(join(&src, k)).unwrap().mode();
                assert_eq!(now, *m, "mode of {} changed: {:o} -> {:o}", show(k), m, now);
            }
        }
        (_, "tier1") => {
            for (rel, n) in &original {
                if let Node::File { content, .. } = n {
                    let p = join(&src, rel);
                    assert_eq!(fs::read_link(&p).unwrap(), blob_path_of(&store_c, content));
                    assert_eq!(&fs::read(&p).unwrap(), content);
                }
            }
        }
        _ => {
            for (rel, n) in &original {
                if matches!(n, Node::File { .. }) {
                    assert!(
                        fs::symlink_metadata(join(&src, rel)).is_err(),
                        "phantom: {} still in the source",
                        show(rel)
                    );
                }
            }
        }
    }

    // Checkout onto disk (copies) and onto the store's tmpfs (links).
    let on_disk = src_dir.path().join("restored");
    checkout_ok(&store, &out, &on_disk);
    assert_trees_equal(
        &original,
        &snapshot(&on_disk),
        "checkout onto another filesystem",
    );
    let on_shm = store_dir.path().join("restored");
    checkout_ok(&store, &out, &on_shm);
    assert_trees_equal(
        &original,
        &snapshot(&on_shm),
        "checkout onto the store's filesystem",
    );
    let big = blob_path_of(&store, &pattern((3 << 20) + 17, 3));
    assert_eq!(
        fs::metadata(on_shm.join("sizes/big.bin")).unwrap().ino(),
        fs::metadata(&big).unwrap().ino(),
        "same filesystem: checkout links"
    );
    assert_eq!(verify_store(&store).len(), distinct.len());

    // Re-ingest (solid tier2): unchanged copies are skipped, nothing new.
    if mode == "solid" && tier == "tier2" {
        let v2 = ingest_ok(&store, &src, &out, &[]);
        assert_eq!(num(&v2, "skipped"), num(&v2, "files"), "{v2}");
        assert_eq!(num(&v2, "blobs_new"), 0, "{v2}");
    }
    // make sure nothing under the store keeps the tmpfs busy
    let _ = fs::set_permissions(store_dir.path(), fs::Permissions::from_mode(0o755));
}

#[test]
fn exdev_store_on_tmpfs_solid_tier2() {
    exdev("solid", "tier2");
}

#[test]
fn exdev_store_on_tmpfs_solid_tier1() {
    exdev("solid", "tier1");
}

#[test]
fn exdev_store_on_tmpfs_phantom_tier2() {
    exdev("phantom", "tier2");
}

#[test]
fn exdev_store_on_tmpfs_phantom_tier1() {
    exdev("phantom", "tier1");
}

/// Phantom across filesystems: a duplicate content is one new blob, the other files are
/// dedup hits (as on one filesystem), not "new blobs" that were never added.
#[test]
fn exdev_phantom_counts_duplicates_as_dedup_hits() {
    let Some((store_dir, src_dir)) = cross_device() else {
        return;
    };
    let store = store_dir.path().join("store");
    let src = src_dir.path().join("project");
    for i in 0..20 {
        write_file(
            &src.join(format!("f{i}")),
            format!("c{}", i % 5).as_bytes(),
            0o644,
        );
    }
    let v = ingest_ok(
        &store,
        &src,
        &src_dir.path().join("m.vrm"),
        &["--mode", "phantom"],
    );
    assert_eq!(verify_store(&store).len(), 5);
    assert_eq!(num(&v, "blobs_new"), 5, "{v}");
    assert_eq!(num(&v, "dedup_hits"), 15, "{v}");
}
