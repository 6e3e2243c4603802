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
fn misordered_archive_is_invalid() {
    // Not sorted: a manifest from anywhere is refused before anyone acts on it.
    let data = ManifestData {
        root: b"/r".to_vec(),
        created_unix_ns: 0,
        entries: vec![dir(0, 0, 4), dir(1, 1, 3), dir(0, 1, 3), dir(0, 2, 4)],
        strings: b"zab".to_vec(),
    };
    weird(data);
}

/// `(path, kind, symlink target)` of one crafted entry.
type Row<'a> = (&'a [u8], Kind, &'a [u8]);

/// A hand-made archive from `(path, kind, target)` rows in the given order, each directory's
/// subtree ending where the next entry outside it starts — what a crafted file can hold.
fn crafted(rows: &[Row<'_>]) -> ManifestData {
    let mut strings = Vec::new();
    let mut entries = vec![dir(0, 0, rows.len() as u32 + 1)];
    for (path, kind, target) in rows {
        let path_off = strings.len() as u32;
        strings.extend_from_slice(path);
        let target_off = strings.len() as u32;
        strings.extend_from_slice(target);
        entries.push(EntryData {
            path_off,
            path_len: path.len() as u32,
            target_off,
            target_len: target.len() as u32,
            kind: *kind as u8,
            mode: 0o644,
            ..Default::default()
        });
    }
    let n = entries.len();
    for i in 1..n {
        let me = &rows[i - 1].0;
        let end = if rows[i - 1].1 == Kind::Dir {
            (i + 1..n)
                .find(|&j| {
                    let p = rows[j - 1].0;
                    !(p.len() > me.len() && p.starts_with(me) && p[me.len()] == b'/')
                })
                .unwrap_or(n)
        } else {
            i + 1
        };
        entries[i].subtree_end = end as u32;
    }
    ManifestData {
        root: b"/r".to_vec(),
        created_unix_ns: 0,
        entries,
        strings,
    }
}

/// The shapes an attacker puts in a manifest to make a checkout write outside its target.
#[test]
fn escaping_and_malformed_paths_are_refused_naming_the_entry() {
    use Kind::*;
    let cases: Vec<(Vec<Row<'_>>, &str, &str)> = vec![
        (vec![(b"../../../x", File, b"")], "../../../x", "'..'"),
        (vec![(b"a/../../x", File, b"")], "a/../../x", "'..'"),
        (vec![(b"/etc/passwd", File, b"")], "/etc/passwd", "absolute"),
        (vec![(b"./x", File, b"")], "./x", "'.'"),
        (vec![(b"a//b", File, b"")], "a//b", "empty component"),
        (vec![(b"x\0y", File, b"")], r"x\0y", "NUL"),
        (
            vec![(b"a", Symlink, b"/elsewhere"), (b"a/evil", File, b"")],
            "a/evil",
            "below a non-directory",
        ),
        (
            vec![(b"a", Symlink, b"/elsewhere"), (b"a/d", Dir, b"")],
            "a/d",
            "below a non-directory",
        ),
        (
            vec![(b"f", File, b""), (b"f/g", File, b"")],
            "f/g",
            "below a non-directory",
        ),
        (
            vec![(b"a", File, b""), (b"a", File, b"")],
            "\"a\"",
            "not in order",
        ),
        (
            vec![(b"b", File, b""), (b"a", File, b"")],
            "\"a\"",
            "not in order",
        ),
        (vec![(b"d/x", File, b"")], "d/x", "not below its parent"),
        (vec![(b"l", Symlink, b"")], "\"l\"", "symlink target"),
        (vec![(b"l", Symlink, b"a\0b")], "\"l\"", "symlink target"),
    ];
    for (rows, names, why) in cases {
        let err = weird(crafted(&rows));
        let msg = err.to_string();
        assert!(msg.contains("weird.vrm"), "{msg}");
        assert!(msg.contains(names), "{msg} should name {names}");
        assert!(msg.contains(why), "{msg} should say {why}");
    }
    // The same shapes, made well, are accepted.
    let good = crafted(&[
        (b"a", Kind::Symlink, b"/elsewhere"),
        (b"d", Kind::Dir, b""),
        (b"d/x", Kind::File, b""),
    ]);
    let bytes = format::encode(&good, 0, Path::new("w")).unwrap();
    Manifest::from_bytes(bytes, Path::new("good.vrm")).unwrap();
}

/// A directory whose `subtree_end` stops short or reaches too far is refused, so a
/// consumer that hops over subtrees sees the same tree as one that reads entry by entry.
#[test]
fn wrong_subtree_ends_are_refused() {
    let mut data = crafted(&[
        (b"d", Kind::Dir, b""),
        (b"d/x", Kind::File, b""),
        (b"e", Kind::File, b""),
    ]);
    data.entries[1].subtree_end = 2; // d ends before d/x
    weird(data.clone());
    data.entries[1].subtree_end = 4; // d swallows e
    weird(data);
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
