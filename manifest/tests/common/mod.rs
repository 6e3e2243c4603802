//! Helpers shared by the integration tests.
#![allow(dead_code)]

use vrift_manifest::{order, Entry, Manifest};

/// Direct children of `dir`, computed by scanning every entry (the reference for
/// `Manifest::children`), in name order.
pub fn brute_children<'a>(m: &'a Manifest, dir: &Entry<'_>) -> Vec<Entry<'a>> {
    if !dir.is_dir() {
        return vec![];
    }
    let mut v: Vec<Entry<'a>> = m
        .iter()
        .filter(|e| e.index() != 0 && order::parent(e.path()) == Some(dir.path()))
        .collect();
    v.sort_by(|a, b| a.name().cmp(b.name()));
    v
}

/// Checks `children()` against the brute-force listing for every directory, and the
/// structural invariants that make it work.
pub fn check_structure(m: &Manifest) {
    let all: Vec<Entry<'_>> = m.iter().collect();
    assert_eq!(all.len(), m.len());
    assert_eq!(all[0].path(), b"");
    assert!(all[0].is_dir());
    for w in all.windows(2) {
        assert_eq!(
            order::cmp_paths(w[0].path(), w[1].path()),
            std::cmp::Ordering::Less,
            "not strictly sorted: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    for e in &all {
        // every entry's parent exists and is a directory
        if let Some(p) = order::parent(e.path()) {
            let parent = m.lookup(p).expect("parent present");
            assert!(parent.is_dir());
            assert!(parent.index() < e.index() && e.index() < parent.subtree_end());
        }
        // subtree_end = one past the last descendant
        let desc = all
            .iter()
            .filter(|d| order::is_ancestor(e.path(), d.path()))
            .count();
        assert_eq!(e.subtree_end(), e.index() + 1 + desc, "{e:?}");
        let got: Vec<usize> = m.children(e).map(|c| c.index()).collect();
        let want: Vec<usize> = brute_children(m, e)
            .iter()
            .map(vrift_manifest::Entry::index)
            .collect();
        assert_eq!(got, want, "children of {e:?}");
        // lookup finds every entry, also with a trailing slash
        assert_eq!(m.lookup(e.path()).map(|x| x.index()), Some(e.index()));
        let mut slash = e.path().to_vec();
        slash.push(b'/');
        assert_eq!(m.lookup(&slash).map(|x| x.index()), Some(e.index()));
    }
}
