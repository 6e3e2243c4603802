//! Build → serialize → open round trips of hand-picked trees.

mod common;

use std::path::Path;

use vrift_manifest::{
    format, hex, EntryInput, Kind, Manifest, ManifestBuilder, ManifestError, FLAG_PHANTOM,
};

fn full(path: &[u8], kind: Kind, seed: u8) -> EntryInput {
    EntryInput {
        path: path.to_vec(),
        kind,
        mode: 0o100000 | u32::from(seed),
        size: u64::from(seed) * 1000 + 7,
        mtime_ns: -(i64::from(seed) * 1_000_000_007),
        hash: if kind.has_content() {
            [seed; 32]
        } else {
            [0; 32]
        },
        target: if kind == Kind::Symlink {
            format!("../t{seed}").into_bytes()
        } else {
            vec![]
        },
        dev: u64::MAX - u64::from(seed),
        ino: u64::from(seed) << 40,
        cache_mtime_ns: i64::MIN + i64::from(seed),
    }
}

fn build(root: &str, entries: &[EntryInput]) -> Manifest {
    let mut b = ManifestBuilder::with_capacity(root, entries.len());
    for e in entries {
        b.push(e.clone());
    }
    assert_eq!(b.len(), entries.len());
    b.build().expect("build")
}

#[test]
fn every_kind_round_trips() {
    let entries = vec![
        full(b"bin", Kind::Dir, 1),
        full(b"bin/tool", Kind::Executable, 2),
        full(b"empty-dir", Kind::Dir, 3),
        EntryInput::file("empty-file", 0, blake3_of_empty()),
        full(b"lib/readme.md", Kind::File, 4),
        EntryInput::symlink("link-dangling", "does/not/exist"),
        EntryInput::symlink("link-abs", "/usr/lib/libc.so.6"),
        EntryInput::symlink("link-empty-dir", "empty-dir"),
        full(b"gone", Kind::Whiteout, 5),
        full(b"lib", Kind::Dir, 6),
    ];
    let m = build("/home/u/project", &entries);
    assert_eq!(m.root(), b"/home/u/project");
    assert_eq!(m.len(), entries.len() + 1, "root synthesized");
    for want in &entries {
        let e = m
            .lookup(&want.path)
            .unwrap_or_else(|| panic!("missing {:?}", want.path));
        assert_eq!(&e.to_input(), want);
        assert_eq!(e.path(), &want.path[..]);
        assert_eq!(e.kind(), want.kind);
        assert_eq!(e.is_dir(), want.kind == Kind::Dir);
        assert_eq!(e.hash(), &want.hash);
        assert_eq!(e.target(), &want.target[..]);
    }
    assert_eq!(
        m.lookup(b"empty-dir").map(|d| m.children(&d).count()),
        Some(0)
    );
    assert_eq!(m.lookup(b"empty-file").map(|f| f.size()), Some(0));
    let root = m.lookup(b"").expect("root");
    assert_eq!(
        (root.index(), root.kind(), root.mode(), root.mtime_ns()),
        (0, Kind::Dir, 0o755, 0)
    );
    let names: Vec<&[u8]> = m.children(&root).map(|e| e.name()).collect();
    assert_eq!(
        names,
        vec![
            &b"bin"[..],
            b"empty-dir",
            b"empty-file",
            b"gone",
            b"lib",
            b"link-abs",
            b"link-dangling",
            b"link-empty-dir"
        ]
    );
    common::check_structure(&m);
}

fn blake3_of_empty() -> [u8; 32] {
    // af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262
    let mut h = [0u8; 32];
    let s = b"af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";
    h.copy_from_slice(&vrift_manifest::parse_hex(s).unwrap());
    assert_eq!(hex(&h).as_bytes(), s);
    h
}

#[test]
fn odd_names_round_trip() {
    let names: Vec<&[u8]> = vec![
        b"\xff\xfe invalid utf8",
        "ünïcødé – 日本語 🦀".as_bytes(),
        b"new\nline",
        b"  spaces  ",
        b"tab\there",
        b"-dash",
        b".hidden",
        b"...",
        b"back\\slash",
        b"\x01\x02\x7f",
        b"a",
        b"a.b",
        b"a-b",
    ];
    let mut entries = vec![];
    for (i, n) in names.iter().enumerate() {
        entries.push(full(n, Kind::File, i as u8));
        let mut nested = n.to_vec();
        nested.extend_from_slice(b".d/");
        nested.extend_from_slice(n);
        entries.push(full(&nested, Kind::Executable, i as u8 + 100));
    }
    let m = build("/r/odd names", &entries);
    for want in &entries {
        assert_eq!(
            m.lookup(&want.path).map(|e| e.to_input()).as_ref(),
            Some(want)
        );
    }
    common::check_structure(&m);
}

#[test]
fn non_utf8_root() {
    let mut b = ManifestBuilder::new(b"/tmp/\xff\xfe".to_vec());
    b.push(EntryInput::dir("x"));
    let m = b.build().unwrap();
    assert_eq!(m.root(), b"/tmp/\xff\xfe");
}

#[test]
fn forty_levels_deep() {
    let mut path = Vec::new();
    for level in 0..40 {
        if level > 0 {
            path.push(b'/');
        }
        path.extend_from_slice(format!("level-{level:02}").as_bytes());
    }
    let mut deep_file = path.clone();
    deep_file.extend_from_slice(b"/leaf.js");
    let m = build(
        "/deep",
        &[
            full(&deep_file, Kind::File, 9),
            EntryInput::file("top.txt", 1, [1; 32]),
        ],
    );
    assert_eq!(m.len(), 1 + 40 + 1 + 1);
    let leaf = m.lookup(&deep_file).unwrap();
    assert_eq!(leaf.name(), b"leaf.js");
    assert_eq!(leaf.size(), 9007);
    // every synthesized level is a dir with exactly one child
    let mut cur = m.lookup(b"").unwrap();
    for level in 0..40 {
        let kids: Vec<_> = m.children(&cur).collect();
        let expect = if level == 0 { 2 } else { 1 };
        assert_eq!(kids.len(), expect, "level {level}");
        cur = kids[0];
        assert!(cur.is_dir());
        assert_eq!(cur.name(), format!("level-{level:02}").as_bytes());
        assert_eq!((cur.mode(), cur.mtime_ns()), (0o755, 0));
    }
    assert_eq!(
        m.children(&cur).next().map(|e| e.index()),
        Some(leaf.index())
    );
    assert_eq!(m.descendants(&m.entry(0).unwrap()).count(), m.len() - 1);
    common::check_structure(&m);
}

#[test]
fn missing_paths_are_none() {
    let m = build(
        "/r",
        &[
            EntryInput::file("a/b/c", 1, [1; 32]),
            EntryInput::file("a/b.txt", 1, [1; 32]),
            EntryInput::file("ab", 1, [1; 32]),
        ],
    );
    for missing in [
        &b"a/b/c/d"[..],
        b"a/b/d",
        b"a/c",
        b"b",
        b"a/b/",
        b"aa",
        b"a.",
        b"a/b.txt/x",
        b"/a",
        b"a//b",
        b"zzz",
        b"\x00",
        b"a/",
        b"c",
    ] {
        let found = m.lookup(missing).map(|e| e.path().to_vec());
        let legit = matches!(missing, b"a/b/" | b"a/");
        assert_eq!(
            found.is_some(),
            legit,
            "{:?}",
            String::from_utf8_lossy(missing)
        );
    }
    assert!(m.entry(m.len()).is_none());
    assert!(m.entry(usize::MAX).is_none());
    // children of a file: none
    let f = m.lookup(b"ab").unwrap();
    assert_eq!(m.children(&f).count(), 0);
}

#[test]
fn flags_created_and_bytes() {
    let mut b = ManifestBuilder::new("/r");
    b.set_flags(FLAG_PHANTOM | 0x80);
    b.set_created_unix_ns(1_700_000_000_123_456_789);
    b.push(EntryInput::file("x", 3, [3; 32]));
    let bytes = b.clone().to_bytes().unwrap();
    assert_eq!(&bytes[..8], &format::MAGIC);
    assert_eq!(
        u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
        format::VERSION
    );
    assert_eq!(
        u32::from_le_bytes(bytes[12..16].try_into().unwrap()),
        FLAG_PHANTOM | 0x80
    );
    assert_eq!(
        u64::from_le_bytes(bytes[16..24].try_into().unwrap()),
        (bytes.len() - 64) as u64
    );
    assert_eq!(u64::from_le_bytes(bytes[32..40].try_into().unwrap()), 2);
    assert!(bytes[40..64].iter().all(|&b| b == 0));
    // deterministic given the same inputs and timestamp
    assert_eq!(b.to_bytes().unwrap(), bytes);

    let m = Manifest::from_bytes(bytes.clone(), Path::new("mem")).unwrap();
    assert_eq!(m.flags(), FLAG_PHANTOM | 0x80);
    assert!(m.is_phantom());
    assert_eq!(m.created_unix_ns(), 1_700_000_000_123_456_789);
    assert_eq!(m.as_bytes(), &bytes[..]);
    assert_eq!(m.header().entry_count, 2);
    assert!(!m.is_empty());

    // an unaligned copy is realigned
    let mut shifted = vec![0u8; 1];
    shifted.extend_from_slice(&bytes);
    let unaligned: Vec<u8> = shifted[1..].to_vec();
    let m2 = Manifest::from_bytes(unaligned, Path::new("mem2")).unwrap();
    assert_eq!(m2.lookup(b"x").unwrap().size(), 3);

    let mut plain = ManifestBuilder::new("/r");
    plain.push(EntryInput::dir("d"));
    let m3 = plain.build().unwrap();
    assert_eq!(m3.flags(), 0);
    assert!(!m3.is_phantom());
    assert!(m3.created_unix_ns() > 1_600_000_000_000_000_000);
}

#[test]
fn open_from_disk_and_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tree.vrm");
    let mut b = ManifestBuilder::new("/r");
    b.push(EntryInput::file("pkg/index.js", 10, [7; 32]));
    b.write_atomic(&path).unwrap();
    let m = Manifest::open(&path).unwrap();
    assert_eq!(m.path(), path);
    assert_eq!(m.lookup(b"pkg/index.js").unwrap().hash(), &[7; 32]);
    let copy = Manifest::from_bytes(m.as_bytes().to_vec(), Path::new("copy")).unwrap();
    assert_eq!(copy.len(), m.len());

    let missing = dir.path().join("nope.vrm");
    let err = Manifest::open(&missing).unwrap_err();
    assert!(matches!(err, ManifestError::Io { .. }));
    assert!(err.to_string().contains("nope.vrm"), "{err}");

    std::fs::write(&path, b"").unwrap();
    let err = Manifest::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            ManifestError::Truncated {
                expected: 64,
                found: 0,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("tree.vrm"), "{err}");

    std::fs::write(&path, b"{\"json\": true}").unwrap();
    let err = Manifest::open(&path).unwrap_err();
    assert!(matches!(err, ManifestError::BadMagic { .. }), "{err}");
    assert_eq!(err.path(), path);
}

#[test]
fn many_siblings_and_nested_packages() {
    // a small node_modules-like shape
    let mut entries = vec![];
    for p in 0..50u32 {
        let pkg = format!("node_modules/pkg{p:03}");
        entries.push(EntryInput::file(
            format!("{pkg}/package.json"),
            100,
            [p as u8; 32],
        ));
        entries.push(EntryInput::file(
            format!("{pkg}/lib/index.js"),
            200,
            [p as u8; 32],
        ));
        if p % 7 == 0 {
            entries.push(EntryInput::file(
                format!("{pkg}/node_modules/inner/index.js"),
                1,
                [1; 32],
            ));
            entries.push(EntryInput::symlink(
                format!("node_modules/.bin/tool{p}"),
                format!("../{pkg}/lib/index.js"),
            ));
        }
    }
    let m = build("/proj", &entries);
    common::check_structure(&m);
    let nm = m.lookup(b"node_modules").unwrap();
    assert_eq!(m.children(&nm).count(), 51);
    assert_eq!(m.children(&nm).next().unwrap().name(), b".bin");
}
