//! Damaged inputs to `vrift checkout` (and to a re-ingest): truncated or corrupted manifests,
//! non-manifests, missing blobs, a broken journal. Always a clear error naming the file, exit
//! 1, never a panic, never a half-made tree from a bad manifest.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

struct Fixture {
    t: tempfile::TempDir,
    store: PathBuf,
    good: Vec<u8>,
    original: Tree,
}

fn fixture() -> Fixture {
    let t = tempdir();
    let src = t.path().join("p");
    build_tricky_tree(&src);
    let original = snapshot(&src);
    let store = t.path().join("store");
    let out = t.path().join("good.vrm");
    ingest_ok(&store, &src, &out, &[]);
    let good = fs::read(&out).unwrap();
    assert!(good.len() > 200, "manifest unexpectedly small");
    Fixture {
        t,
        store,
        good,
        original,
    }
}

/// `vrift checkout BAD DEST` must fail cleanly; returns stderr.
#[track_caller]
fn expect_clean_failure(f: &Fixture, bad: &Path, what: &str) -> String {
    let dest = f.t.path().join("dest");
    let o = checkout_raw(&f.store, bad, &dest);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{what}\n{}", describe(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&*bad.to_string_lossy()),
        "{what}: the error does not name the manifest\n{e}"
    );
    assert!(
        e.lines().count() <= 3,
        "{what}: not a short, clear error\n{e}"
    );
    assert!(
        !dest.exists() || fs::read_dir(&dest).unwrap().next().is_none(),
        "{what}: a tree was (partly) written from a bad manifest"
    );
    let _ = fs::remove_dir_all(&dest);
    e
}

#[test]
fn truncated_manifests() {
    let f = fixture();
    let bad = f.t.path().join("truncated.vrm");
    let n = f.good.len();
    let mut cuts = vec![0, 1, 7, 8, 16, 32, 63, 64, 65, 100, n / 2, n - 8, n - 1];
    cuts.dedup();
    for cut in cuts {
        fs::write(&bad, &f.good[..cut]).unwrap();
        expect_clean_failure(&f, &bad, &format!("truncated to {cut} of {n} bytes"));
    }
}

#[test]
fn corrupted_bytes_anywhere() {
    let f = fixture();
    let bad = f.t.path().join("corrupt.vrm");
    let n = f.good.len();
    let mut rng = Rng::from_time();
    // Every header byte, then a spread of payload bytes (start, middle, end, random).
    let mut offsets: Vec<usize> = (0..64.min(n)).collect();
    offsets.extend([64, 65, 100, n / 3, n / 2, 2 * n / 3, n - 2, n - 1]);
    for _ in 0..24 {
        offsets.push(64 + rng.below((n - 64) as u64) as usize);
    }
    let mut accepted = Vec::new();
    for off in offsets {
        let mut b = f.good.clone();
        b[off] ^= 0x5a;
        fs::write(&bad, &b).unwrap();
        let dest = f.t.path().join("dest");
        let o = checkout_raw(&f.store, &bad, &dest);
        assert_no_panic(&o);
        if o.status.code() == Some(0) {
            // Only acceptable if the byte did not matter (padding / unused header field):
            // then the result must still be exactly the tree.
            assert_trees_equal(
                &f.original,
                &snapshot(&dest),
                &format!("byte {off} flipped"),
            );
            accepted.push(off);
        } else {
            assert_eq!(o.status.code(), Some(1), "byte {off}\n{}", describe(&o));
            assert!(
                stderr(&o).contains(&*bad.to_string_lossy()),
                "{}",
                describe(&o)
            );
        }
        let _ = fs::remove_dir_all(&dest);
    }
    assert!(
        accepted.len() <= 8,
        "flipped bytes at {accepted:?} went unnoticed: is the checksum checked?"
    );
}

#[test]
fn things_that_are_not_manifests() {
    let f = fixture();
    let dir = f.t.path();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("text", b"hello, I am not a manifest\n".to_vec()),
        ("json", br#"{"files":1}"#.to_vec()),
        ("random", pattern(f.good.len(), 77)),
        ("zeros", vec![0; f.good.len()]),
        ("header only", f.good[..64].to_vec()),
    ];
    for (what, bytes) in cases {
        let p = dir.join(format!("{}.vrm", what.replace(' ', "-")));
        fs::write(&p, bytes).unwrap();
        expect_clean_failure(&f, &p, what);
    }
    // Not even a file.
    expect_clean_failure(&f, &dir.join("missing.vrm"), "missing file");
    let d = dir.join("a-dir.vrm");
    fs::create_dir(&d).unwrap();
    expect_clean_failure(&f, &d, "a directory");
    // A manifest with extra bytes at the end is not silently half-read.
    let p = dir.join("appended.vrm");
    let mut b = f.good.clone();
    b.extend_from_slice(b"trailing garbage");
    fs::write(&p, b).unwrap();
    let dest = dir.join("dest-appended");
    let o = checkout_raw(&f.store, &p, &dest);
    assert_no_panic(&o);
    if o.status.code() == Some(0) {
        assert_trees_equal(&f.original, &snapshot(&dest), "appended garbage");
    } else {
        assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    }
}

/// A blob missing from the store: the error names the file and the blob, the rest of the
/// tree is written, exit 1.
#[test]
fn missing_blob_is_named_and_the_rest_is_restored() {
    let f = fixture();
    let good = f.t.path().join("good.vrm");
    let victim = b"# left-pad\n"; // README.md of both packages
    let blob = blob_path_of(&f.store, victim);
    fs::remove_file(&blob).unwrap();
    let dest = f.t.path().join("dest");
    let o = checkout_raw(&f.store, &good, &dest);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let e = stderr(&o);
    assert!(e.contains("README.md"), "file not named\n{e}");
    let hex = digest::hex(victim);
    assert!(e.contains(&hex[..16]), "blob not named\n{e}");
    let got = snapshot(&dest);
    let want: Tree = f
        .original
        .iter()
        .filter(|(_, n)| !matches!(n, Node::File { content, .. } if content == victim))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_trees_equal(&want, &got, "everything but the missing blob");
}

/// A corrupted manifest at `-o` is not trusted as the re-ingest cache: a warning naming it,
/// then a full ingest that replaces it.
#[test]
fn reingest_over_a_corrupted_previous_manifest() {
    let f = fixture();
    let src = f.t.path().join("p");
    let out = f.t.path().join("good.vrm");
    let mut b = f.good.clone();
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    fs::write(&out, &b).unwrap();
    let o = ingest_raw(&f.store, &src, &out, &[]);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let v = json_of(&o);
    assert_eq!(
        num(&v, "skipped"),
        0,
        "a corrupt cache must not be used: {v}"
    );
    assert!(
        stderr(&o).contains(&*out.to_string_lossy()),
        "{}",
        describe(&o)
    );
    let dest = f.t.path().join("restored");
    checkout_ok(&f.store, &out, &dest);
    assert_trees_equal(
        &f.original,
        &snapshot(&dest),
        "after re-ingest over corruption",
    );
}

/// A broken phantom journal beside `-o`: a clear error naming it, nothing moved.
#[test]
fn broken_journal_is_a_clear_error() {
    let f = fixture();
    let src = f.t.path().join("p");
    let out = f.t.path().join("phantom.vrm");
    let journal = f.t.path().join("phantom.vrm.journal");
    fs::write(&journal, b"{ this is not json").unwrap();
    let before = snapshot(&src);
    let o = ingest_raw(&f.store, &src, &out, &["--mode", "phantom"]);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        stderr(&o).contains(&*journal.to_string_lossy()),
        "{}",
        describe(&o)
    );
    assert_trees_equal(&before, &snapshot(&src), "nothing moved");
    // --resume says the same.
    let o = vrift(&f.store)
        .arg("ingest")
        .arg("--resume")
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        stderr(&o).contains(&*journal.to_string_lossy()),
        "{}",
        describe(&o)
    );
}
