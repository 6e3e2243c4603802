//! Damaged, truncated, hostile or merely weird files must give a clear error naming the
//! file — never a panic, never undefined behaviour.

use std::path::Path;

use proptest::prelude::*;
use vrift_manifest::format::{self, HEADER_LEN};
use vrift_manifest::schema::{EntryData, ManifestData};
use vrift_manifest::{EntryInput, Kind, Manifest, ManifestBuilder, ManifestError};

fn small_manifest() -> Vec<u8> {
    let mut b = ManifestBuilder::new("/r");
    b.set_created_unix_ns(42);
    b.push(EntryInput::file("a/b.js", 12, [1; 32]));
    b.push(EntryInput::symlink("a/link", "../x"));
    b.push(EntryInput::dir("empty"));
    b.push(EntryInput::whiteout("w"));
    b.push(EntryInput::new("bin/tool", Kind::Executable));
    b.to_bytes().unwrap()
}

/// Every accessor on every entry; used when a mangled file happens to be accepted.
fn exercise(m: &Manifest) {
    let _ = (
        m.root(),
        m.flags(),
        m.created_unix_ns(),
        m.is_empty(),
        m.as_bytes().len(),
    );
    for e in m.iter() {
        let _ = (
            e.path(),
            e.name(),
            e.kind(),
            e.mode(),
            e.size(),
            e.mtime_ns(),
            e.hash(),
        );
        let _ = (
            e.target(),
            e.dev(),
            e.ino(),
            e.cache_mtime_ns(),
            e.subtree_end(),
            e.to_input(),
        );
        let _ = m.lookup(e.path());
        let n = m.children(&e).take(m.len() + 1).count();
        assert!(n <= m.len());
        let _ = m.descendants(&e).count();
    }
    let _ = m.lookup(b"a/b.js");
    let _ = m.entry(m.len());
}

#[test]
fn every_byte_flip_is_detected() {
    let good = small_manifest();
    Manifest::from_bytes(good.clone(), Path::new("good")).unwrap();
    for i in 0..good.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[i] ^= mask;
            let err = Manifest::from_bytes(bad, Path::new("flip.vrm"))
                .expect_err(&format!("flip of byte {i} with {mask:#x} accepted"));
            assert_eq!(err.path(), Path::new("flip.vrm"));
            assert!(err.to_string().contains("flip.vrm"));
        }
    }
}

#[test]
fn every_truncation_is_detected() {
    let good = small_manifest();
    for len in 0..good.len() {
        let err = Manifest::from_bytes(good[..len].to_vec(), Path::new("t.vrm"))
            .expect_err(&format!("truncation to {len} accepted"));
        assert!(
            matches!(err, ManifestError::Truncated { .. }),
            "truncation to {len}: {err}"
        );
    }
    let mut long = good.clone();
    long.push(0);
    let err = Manifest::from_bytes(long, Path::new("t.vrm")).unwrap_err();
    assert!(matches!(err, ManifestError::Invalid { .. }), "{err}");
}

#[test]
fn truncated_files_on_disk() {
    let good = small_manifest();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.vrm");
    for len in [0, 1, 8, 63, 64, 65, good.len() / 2, good.len() - 1] {
        std::fs::write(&path, &good[..len]).unwrap();
        let err = Manifest::open(&path).unwrap_err();
        assert!(
            matches!(err, ManifestError::Truncated { .. }),
            "len {len}: {err}"
        );
        assert!(err.to_string().contains("cut.vrm"), "{err}");
    }
    std::fs::write(&path, &good).unwrap();
    Manifest::open(&path).unwrap();
}

#[test]
fn other_versions_are_refused_by_number() {
    let mut bad = small_manifest();
    bad[8..12].copy_from_slice(&2u32.to_le_bytes());
    format::reseal(&mut bad);
    let err = Manifest::from_bytes(bad, Path::new("v2")).unwrap_err();
    assert!(
        matches!(err, ManifestError::UnsupportedVersion { found: 2, .. }),
        "{err}"
    );
}

fn weird(data: ManifestData) -> ManifestError {
    let bytes = format::encode(&data, 0, Path::new("w")).unwrap();
    let err = Manifest::from_bytes(bytes, Path::new("weird.vrm")).unwrap_err();
    assert!(matches!(err, ManifestError::Invalid { .. }), "{err}");
    err
}

fn dir(path_off: u32, path_len: u32, end: u32) -> EntryData {
    EntryData {
        path_off,
        path_len,
        kind: Kind::Dir as u8,
        subtree_end: end,
        ..Default::default()
    }
}

#[test]
fn validated_but_weird_archives_are_invalid() {
    let strings = b"ab".to_vec();
    let ok = ManifestData {
        root: b"/r".to_vec(),
        created_unix_ns: 0,
        entries: vec![dir(0, 0, 2), dir(0, 1, 2)],
        strings: strings.clone(),
    };
    let bytes = format::encode(&ok, 0, Path::new("w")).unwrap();
    Manifest::from_bytes(bytes, Path::new("ok")).unwrap();

    let with = |entries: Vec<EntryData>| ManifestData {
        entries,
        ..ok.clone()
    };
    // no entries at all
    weird(with(vec![]));
    // entry 0 not the root directory
    weird(with(vec![dir(0, 1, 1)]));
    weird(with(vec![EntryData {
        kind: Kind::File as u8,
        subtree_end: 1,
        ..Default::default()
    }]));
    // root does not span everything
    weird(with(vec![dir(0, 0, 1), dir(0, 1, 2)]));
    // path out of range / overflowing offsets
    weird(with(vec![dir(0, 0, 2), dir(1, 5, 2)]));
    weird(with(vec![dir(0, 0, 2), dir(u32::MAX, u32::MAX, 2)]));
    // target out of range
    weird(with(vec![
        dir(0, 0, 2),
        EntryData {
            path_len: 1,
            target_off: 2,
            target_len: 1,
            kind: 3,
            subtree_end: 2,
            ..Default::default()
        },
    ]));
    // subtree_end not increasing / past the end / wrong for a file
    weird(with(vec![dir(0, 0, 2), dir(0, 1, 1)]));
    weird(with(vec![dir(0, 0, 2), dir(0, 1, 0)]));
    weird(with(vec![dir(0, 0, 2), dir(0, 1, 3)]));
    weird(with(vec![
        dir(0, 0, 3),
        EntryData {
            path_len: 1,
            kind: 1,
            subtree_end: 3,
            ..Default::default()
        },
        dir(1, 1, 3),
    ]));
    // unknown kind
    weird(with(vec![
        dir(0, 0, 2),
        EntryData {
            path_len: 1,
            kind: 5,
            subtree_end: 2,
            ..Default::default()
        },
    ]));
    // empty path on a non-root entry
    weird(with(vec![dir(0, 0, 2), dir(0, 0, 2)]));
    // header entry count disagreeing with the archive
    let mut bytes = format::encode(&ok, 0, Path::new("w")).unwrap();
    bytes[32] = 3;
    format::reseal(&mut bytes);
    let err = Manifest::from_bytes(bytes, Path::new("count")).unwrap_err();
    assert!(matches!(err, ManifestError::Invalid { .. }), "{err}");
}

#[test]
fn misordered_but_valid_archive_does_not_panic() {
    // Not sorted: lookups may miss, but nothing may panic or loop.
    let data = ManifestData {
        root: b"/r".to_vec(),
        created_unix_ns: 0,
        entries: vec![dir(0, 0, 4), dir(1, 1, 3), dir(0, 1, 3), dir(0, 2, 4)],
        strings: b"zab".to_vec(),
    };
    let bytes = format::encode(&data, 0, Path::new("w")).unwrap();
    let m = Manifest::from_bytes(bytes, Path::new("misordered")).unwrap();
    exercise(&m);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random garbage, with or without a plausible magic.
    #[test]
    fn random_bytes_are_rejected(mut bytes in prop::collection::vec(any::<u8>(), 0..400), magic in any::<bool>()) {
        if magic && bytes.len() >= 8 {
            bytes[..8].copy_from_slice(&format::MAGIC);
        }
        prop_assert!(Manifest::from_bytes(bytes, Path::new("garbage")).is_err());
    }

    /// A *correct* header (magic, version, length, checksum) over a random payload gets
    /// past every header check, so this exercises rkyv validation and the invariant
    /// checks: must be Err (or, if ever accepted, fully usable) — never a panic.
    #[test]
    fn random_payload_behind_valid_header(payload in prop::collection::vec(any::<u8>(), 0..600), count in 0u64..4) {
        let header = format::Header { version: format::VERSION, flags: 0, payload_len: payload.len() as u64, checksum: 0, entry_count: count };
        let mut bytes = header.to_bytes().to_vec();
        bytes.extend_from_slice(&payload);
        format::reseal(&mut bytes);
        if let Ok(m) = Manifest::from_bytes(bytes, Path::new("fuzz")) { exercise(&m) }
    }

    /// Mutations of a real manifest with the checksum recomputed: rkyv validation and
    /// the invariant checks must catch whatever they break.
    #[test]
    fn resealed_mutations_never_panic(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut bytes = small_manifest();
        for (idx, val) in edits {
            let i = HEADER_LEN + idx.index(bytes.len() - HEADER_LEN);
            bytes[i] = val;
        }
        format::reseal(&mut bytes);
        if let Ok(m) = Manifest::from_bytes(bytes, Path::new("mutant")) { exercise(&m) }
    }
}
