//! Random trees through the whole pipeline, judged by an independent oracle: a plain
//! recursive `std::fs` walk with the `blake3` crate (`vrift_test::oracle::expected`) says what the
//! manifest must hold, entry by entry; then a checkout of that manifest must give back the
//! same tree (kinds, contents, modes, symlink targets). The trees mix what `node_modules`
//! has: shared contents, empty files, executables, nesting, dotfiles, names with spaces and
//! non-ASCII, relative, absolute and dangling symlinks, empty directories, and a file larger
//! than one whole-file read.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use vrift_cas::Cas;
use vrift_manifest::Manifest;
use vrift_pipeline::materialize::{LinkMode, Options};
use vrift_pipeline::{checkout, ingest, Counters, IngestOptions};

use vrift_test::oracle::{assert_same, entries, expected, Seen};

#[derive(Debug, Clone)]
enum Node {
    /// Content number `content` (a few sizes, so contents repeat across files).
    File {
        content: u8,
        exec: bool,
    },
    Link(&'static str),
    Dir,
}

fn content(n: u8) -> Vec<u8> {
    match n {
        0 => Vec::new(),
        1 => b"module.exports = 1;\n".to_vec(),
        2 => vec![b'x'; 4096],
        // Larger than one whole-file read (1 MiB): streamed.
        3 => (0..(1u32 << 20) + 3).map(|i| (i % 251) as u8).collect(),
        n => format!("content {n}\n").into_bytes(),
    }
}

fn tree() -> impl Strategy<Value = Vec<(Vec<&'static str>, Node)>> {
    let name = prop::sample::select(vec![
        "a",
        "b",
        "node_modules",
        "index.js",
        ".bin",
        "with space",
        "é",
        "LICENSE",
    ]);
    let node = prop_oneof![
        4 => (0u8..7, any::<bool>()).prop_map(|(content, exec)| Node::File { content, exec }),
        1 => prop::sample::select(vec!["a", "../b/index.js", "/etc/hostname", "missing/x", "."])
            .prop_map(Node::Link),
        1 => Just(Node::Dir),
    ];
    prop::collection::vec((prop::collection::vec(name, 1..4), node), 1..30)
}

/// Makes the tree. The generator draws paths freely, so two entries can clash (a file where
/// a later entry wants a directory, or the same path twice): the first one made wins and the
/// clashing later one is not made. Every generated tree still has entries (6 to 27 when
/// counted over a run), and the oracle reads whatever was made.
fn build(root: &Path, spec: &[(Vec<&'static str>, Node)]) {
    fs::create_dir_all(root).unwrap();
    for (parts, node) in spec {
        let path: PathBuf = parts.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        let parent = path.parent().unwrap();
        if fs::create_dir_all(parent).is_err() || fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        if !fs::symlink_metadata(parent).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        match node {
            Node::File { content: c, exec } => {
                fs::write(&path, content(*c)).unwrap();
                let mode = if *exec { 0o755 } else { 0o644 };
                fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            }
            Node::Link(target) => symlink(target, &path).unwrap(),
            Node::Dir => fs::create_dir(&path).unwrap(),
        }
    }
}

/// What a checkout must give back: the oracle's view without what a checkout does not
/// promise to reproduce (directory sizes, which depend on the file system's history, and
/// times, which `--link-mode copy` does not set).
fn shape(s: &Seen) -> Seen {
    s.iter()
        .map(|(k, &(kind, mode, size, _mtime, hash, ref target))| {
            let size = if kind == 0 { 0 } else { size };
            (k.clone(), (kind, mode, size, 0, hash, target.clone()))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn manifest_matches_an_independent_walk_and_checkout_gives_the_tree_back(
        spec in tree(),
        threads in 1usize..4,
    ) {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        build(&src, &spec);
        let oracle = expected(&src);

        let store = t.path().join("store");
        let out = t.path().join("m.vrm");
        let mut opts = IngestOptions::new(&src, &out);
        opts.threads = threads;
        let counters = Counters::default();
        let report = ingest(&opts, &store, &counters, |_| {}).unwrap();
        prop_assert_eq!(report.errors, 0, "{:?}", report.details.issues);
        let m = Manifest::open(&out).unwrap();
        let mut recorded = entries(&m);
        recorded.remove(&b""[..]);
        assert_same(&oracle, &recorded, "an independent walk vs the manifest");

        let dest = t.path().join("restored");
        let cas = Cas::open(&store).unwrap();
        let copy = Options { link_mode: LinkMode::Copy, ..Options::default() };
        let r = checkout(&cas, &m, &dest, &copy, &Counters::default()).unwrap();
        prop_assert_eq!(r.errors, 0);
        assert_same(&shape(&oracle), &shape(&expected(&dest)), "the tree vs its checkout");
    }
}
