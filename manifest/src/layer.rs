//! Several manifests seen as one tree, overlay-style.
//!
//! Each manifest is mounted at its own [`Manifest::root`]. Later layers win over earlier
//! ones. A [`Kind::Whiteout`] entry in a later layer hides that path and its whole
//! subtree in earlier layers; so does any non-directory (a file or symlink replacing a
//! directory hides what used to be below it). Directories merge: listing one shows the
//! union of the children of every layer down to the first layer that hides it.
//!
//! Paths given to the view are absolute, already normalized (no `.`/`..`, no `//`);
//! trailing slashes are ignored. Ancestors of a layer's root are not synthesized: the
//! view only answers for paths at or below some layer's root.

use std::collections::BTreeMap;

use crate::entry::{Entry, Kind};
use crate::order::{parent, trim_trailing_slashes};
use crate::Manifest;

/// An overlay of manifests; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct LayeredView<'a> {
    layers: Vec<&'a Manifest>,
}

/// What one layer says about one path.
enum Probe<'a> {
    /// The layer has an entry (of any kind, whiteouts included) at the path.
    Found(Entry<'a>),
    /// The layer has no entry at the path but hides it: a non-directory ancestor.
    Hidden,
    /// The layer says nothing about the path; look further down.
    Absent,
}

impl<'a> LayeredView<'a> {
    /// A view over `layers`, bottom first (later layers win).
    pub fn new(layers: impl IntoIterator<Item = &'a Manifest>) -> Self {
        LayeredView {
            layers: layers.into_iter().collect(),
        }
    }

    /// Adds a layer on top.
    pub fn push(&mut self, layer: &'a Manifest) {
        self.layers.push(layer);
    }

    /// The layers, bottom first.
    pub fn layers(&self) -> &[&'a Manifest] {
        &self.layers
    }

    /// The visible entry at `abs_path` and the index of the layer it comes from.
    /// `None` if no layer has it, or it is hidden by a whiteout or a non-directory above.
    pub fn lookup(&self, abs_path: &[u8]) -> Option<(usize, Entry<'a>)> {
        for (i, m) in self.layers.iter().enumerate().rev() {
            let Some(rel) = relative(m.root(), abs_path) else {
                continue;
            };
            match probe(m, rel) {
                Probe::Found(e) if e.kind() == Kind::Whiteout => return None,
                Probe::Found(e) => return Some((i, e)),
                Probe::Hidden => return None,
                Probe::Absent => {}
            }
        }
        None
    }

    /// The visible direct children of the directory at `abs_path`, merged over all layers
    /// and sorted by name: `(name, layer index, entry)`. Empty if `abs_path` is not a
    /// visible directory.
    pub fn list_dir(&self, abs_path: &[u8]) -> Vec<(&'a [u8], usize, Entry<'a>)> {
        // name -> winning entry, or None when the topmost occurrence is a whiteout.
        let mut merged: BTreeMap<&'a [u8], Option<(usize, Entry<'a>)>> = BTreeMap::new();
        for (i, m) in self.layers.iter().enumerate().rev() {
            let Some(rel) = relative(m.root(), abs_path) else {
                continue;
            };
            match probe(m, rel) {
                Probe::Found(dir) if dir.is_dir() => {
                    for child in m.children(&dir) {
                        let visible = (child.kind() != Kind::Whiteout).then_some((i, child));
                        merged.entry(child.name()).or_insert(visible);
                    }
                }
                // A file, symlink or whiteout here hides everything below; if it is the
                // topmost answer, `abs_path` is not a directory at all.
                Probe::Found(_) | Probe::Hidden => break,
                Probe::Absent => {}
            }
        }
        merged
            .into_iter()
            .filter_map(|(name, v)| v.map(|(i, e)| (name, i, e)))
            .collect()
    }
}

/// `abs` relative to `root`, if `abs` is `root` or below it.
fn relative<'p>(root: &[u8], abs: &'p [u8]) -> Option<&'p [u8]> {
    let root = trim_trailing_slashes(root);
    let abs = trim_trailing_slashes(abs);
    let rest = abs.strip_prefix(root)?;
    if rest.is_empty() {
        return Some(rest);
    }
    rest.strip_prefix(b"/").filter(|r| !r.is_empty())
}

fn probe<'a>(m: &'a Manifest, rel: &[u8]) -> Probe<'a> {
    if let Some(e) = m.lookup(rel) {
        return Probe::Found(e);
    }
    // Not present: the deepest ancestor this layer has decides whether it hides `rel`.
    // (A well-formed manifest always has the root directory, so this terminates there.)
    let mut p = parent(rel);
    while let Some(anc) = p {
        if let Some(e) = m.lookup(anc) {
            return if e.is_dir() {
                Probe::Absent
            } else {
                Probe::Hidden
            };
        }
        p = parent(anc);
    }
    Probe::Absent
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EntryInput, ManifestBuilder};

    fn manifest(root: &str, entries: Vec<EntryInput>) -> Manifest {
        let mut b = ManifestBuilder::new(root);
        for e in entries {
            b.push(e);
        }
        b.build().unwrap()
    }

    fn names(v: &[(&[u8], usize, Entry<'_>)]) -> Vec<(String, usize)> {
        v.iter()
            .map(|(n, i, _)| (String::from_utf8_lossy(n).into_owned(), *i))
            .collect()
    }

    #[test]
    fn relative_paths() {
        assert_eq!(relative(b"/p", b"/p"), Some(&b""[..]));
        assert_eq!(relative(b"/p/", b"/p/a/"), Some(&b"a"[..]));
        assert_eq!(relative(b"/p", b"/pa"), None);
        assert_eq!(relative(b"/p", b"/"), None);
        assert_eq!(relative(b"/", b"/"), Some(&b""[..]));
        assert_eq!(relative(b"/", b"/x/y"), Some(&b"x/y"[..]));
    }

    #[test]
    fn later_layers_win_and_whiteouts_hide_subtrees() {
        let base = manifest(
            "/p",
            vec![
                EntryInput::file("a/x", 1, [1; 32]),
                EntryInput::file("a/y", 1, [2; 32]),
                EntryInput::file("b/deep/z", 1, [3; 32]),
                EntryInput::dir("c/d"),
                EntryInput::file("f", 1, [4; 32]),
            ],
        );
        let top = manifest(
            "/p",
            vec![
                EntryInput::file("a/x", 2, [5; 32]),
                EntryInput::file("a/new", 1, [6; 32]),
                EntryInput::whiteout("b"),
                EntryInput::whiteout("a/y"),
                EntryInput::file("c", 3, [7; 32]),
            ],
        );
        let v = LayeredView::new([&base, &top]);
        assert_eq!(
            v.lookup(b"/p/a/x").map(|(i, e)| (i, e.size())),
            Some((1, 2))
        );
        assert_eq!(v.lookup(b"/p/f").map(|(i, _)| i), Some(0));
        assert_eq!(
            v.lookup(b"/p/a/").map(|(i, e)| (i, e.is_dir())),
            Some((1, true))
        );
        assert!(v.lookup(b"/p/a/y").is_none());
        assert!(v.lookup(b"/p/b").is_none());
        assert!(v.lookup(b"/p/b/deep/z").is_none());
        assert!(
            v.lookup(b"/p/c/d").is_none(),
            "file c in top hides dir c/d below"
        );
        assert_eq!(
            v.lookup(b"/p/c").map(|(i, e)| (i, e.kind())),
            Some((1, Kind::File))
        );
        assert!(v.lookup(b"/q").is_none());
        assert!(v.lookup(b"/p/zzz").is_none());

        assert_eq!(
            names(&v.list_dir(b"/p")),
            vec![("a".into(), 1), ("c".into(), 1), ("f".into(), 0)]
        );
        assert_eq!(
            names(&v.list_dir(b"/p/a")),
            vec![("new".into(), 1), ("x".into(), 1)]
        );
        assert!(v.list_dir(b"/p/b").is_empty());
        assert!(v.list_dir(b"/p/c").is_empty());
        assert!(v.list_dir(b"/p/f").is_empty());
        assert!(v.list_dir(b"/nowhere").is_empty());
    }

    #[test]
    fn recreated_dir_above_a_whiteout() {
        let l0 = manifest("/p", vec![EntryInput::file("d/old", 1, [1; 32])]);
        let l1 = manifest("/p", vec![EntryInput::whiteout("d")]);
        let l2 = manifest("/p", vec![EntryInput::file("d/new", 1, [2; 32])]);
        let v = LayeredView::new([&l0, &l1, &l2]);
        assert_eq!(names(&v.list_dir(b"/p/d")), vec![("new".into(), 2)]);
        assert!(v.lookup(b"/p/d/old").is_none());
        assert_eq!(v.lookup(b"/p/d/new").map(|(i, _)| i), Some(2));
    }

    #[test]
    fn layers_at_different_roots() {
        let proj = manifest("/w/proj", vec![EntryInput::file("src/main.rs", 1, [1; 32])]);
        let nm = manifest(
            "/w/proj/node_modules",
            vec![EntryInput::file("left-pad/index.js", 1, [2; 32])],
        );
        let v = LayeredView::new([&proj, &nm]);
        assert_eq!(
            v.lookup(b"/w/proj/node_modules/left-pad/index.js")
                .map(|(i, _)| i),
            Some(1)
        );
        assert_eq!(v.lookup(b"/w/proj/src/main.rs").map(|(i, _)| i), Some(0));
        assert_eq!(
            names(&v.list_dir(b"/w/proj/node_modules")),
            vec![("left-pad".into(), 1)]
        );
        assert_eq!(names(&v.list_dir(b"/w/proj")), vec![("src".into(), 0)]);
    }
}
