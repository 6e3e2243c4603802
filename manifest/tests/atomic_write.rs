//! `write_atomic` never exposes a partial file: readers see the old or the new manifest.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vrift_manifest::{EntryInput, Manifest, ManifestBuilder, ManifestError};

fn builder(n: usize, tag: u8) -> ManifestBuilder {
    let mut b = ManifestBuilder::new("/r");
    for i in 0..n {
        b.push(EntryInput::file(
            format!("d{}/f{i}", i % 10),
            i as u64,
            [tag; 32],
        ));
    }
    b
}

fn leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "m.vrm")
        .collect()
}

#[test]
fn replaces_existing_file_completely() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.vrm");
    builder(100, 1).write_atomic(&path).unwrap();
    let old = std::fs::read(&path).unwrap();
    builder(5, 2).write_atomic(&path).unwrap();
    let m = Manifest::open(&path).unwrap();
    assert_eq!(m.len(), 1 + 5 + 5);
    assert_eq!(m.lookup(b"d0/f0").unwrap().hash(), &[2; 32]);
    assert!(std::fs::read(&path).unwrap().len() < old.len());
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
}

#[test]
fn failed_build_leaves_old_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.vrm");
    builder(10, 1).write_atomic(&path).unwrap();
    let old = std::fs::read(&path).unwrap();
    let mut bad = builder(10, 2);
    bad.push(EntryInput::file("d0/f0/under-a-file", 1, [0; 32]));
    let err = bad.write_atomic(&path).unwrap_err();
    assert!(matches!(err, ManifestError::Invalid { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), old);
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn failed_write_names_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/m.vrm");
    let err = builder(1, 1).write_atomic(&path).unwrap_err();
    assert!(matches!(err, ManifestError::Io { .. }), "{err}");
    assert!(err.to_string().contains("no/such/dir"), "{err}");
}

#[test]
fn concurrent_readers_see_old_or_new() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.vrm");
    // two very different sizes so a torn file could not pass as either
    builder(3000, 1).write_atomic(&path).unwrap();
    let small_len = 1 + 10 + 20;
    let big_len = 1 + 10 + 3000;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut opens = 0u32;
            while !stop.load(Ordering::Relaxed) || opens == 0 {
                let m = Manifest::open(&path).expect("reader saw a broken manifest");
                assert!(
                    m.len() == small_len || m.len() == big_len,
                    "len {}",
                    m.len()
                );
                opens += 1;
            }
            opens
        })
    };
    for round in 0..40 {
        let b = if round % 2 == 0 {
            builder(20, 2)
        } else {
            builder(3000, 1)
        };
        b.write_atomic(&path).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let opens = reader.join().unwrap();
    assert!(opens > 0);
    assert!(leftovers(dir.path()).is_empty());
}
