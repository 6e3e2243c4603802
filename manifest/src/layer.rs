//! Several manifests seen as one tree, overlay-style: the one implementation of layering,
//! used by the `LD_PRELOAD` shim (per path, without allocating), the `--isolate` link farm
//! (the whole merged tree, [`walk`]) and [`LayeredView`].
//!
//! Each layer is a manifest's entries mounted at a root path. Later layers win over earlier
//! ones. A [`Kind::Whiteout`] entry in a later layer hides that path and its whole subtree
//! in earlier layers; so does any non-directory (a file or symlink replacing a directory
//! hides what used to be below it), and a directory replacing a lower file or symlink hides
//! the lower layer's answer there. Directories merge: listing one shows the union of the
//! children of every layer down to the first layer that hides it.
//!
//! A layer's root makes its ancestors directories, as a mount point does: a proper ancestor
//! of some layer's root is a directory ([`Probe::Implicit`] when no layer below has a
//! directory entry there), whatever lower layers hold at that path — until a higher layer
//! hides it. So a repository whose `.git` is a manifest of its own lists `.git`, and a
//! project layer over a base at `/` has its parents.
//!
//! Paths given here are absolute and normalized (no `.`/`..`, no `//`); trailing slashes are
//! ignored.

use crate::entry::{Entry, Kind};
use crate::order::trim_trailing_slashes;
use crate::view::View;
use crate::Manifest;

/// One layer: a manifest's entries and the absolute path its root is mounted at.
#[derive(Clone, Copy)]
pub struct Layer<'a> {
    /// Normalized, without a trailing slash: `""` for `/`.
    root: &'a [u8],
    view: View<'a>,
}

impl<'a> Layer<'a> {
    /// `view` mounted at `root` (absolute; trailing slashes ignored, `/` is the whole tree).
    pub fn new(root: &'a [u8], view: View<'a>) -> Self {
        Layer {
            root: trim_trailing_slashes(root),
            view,
        }
    }

    /// A manifest mounted where it was ingested.
    pub fn of(m: &'a Manifest) -> Self {
        Layer::new(m.root(), m.view())
    }

    /// The mount point, `""` for `/`.
    pub fn root(&self) -> &'a [u8] {
        self.root
    }

    pub fn view(&self) -> View<'a> {
        self.view
    }
}

/// Why a path does not exist although some layer covers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hidden {
    /// A whiteout at the path or above it (`ENOENT`).
    Deleted,
    /// A file above it (`ENOTDIR`).
    NotDir,
}

/// What the layers say about one path; see [`probe`].
#[derive(Clone, Copy)]
pub enum Probe<'a> {
    /// The visible entry (never a whiteout) and the index of the layer it comes from.
    Found(usize, Entry<'a>),
    /// A directory no layer has an entry for: a proper ancestor of some layer's root.
    Implicit,
    /// Below a symlink: layer `.0` has the symlink `.1` on the path (resolution goes on at
    /// its target).
    ViaSymlink(usize, Entry<'a>),
    /// Covered by a layer but hidden.
    Hidden(Hidden),
    /// No layer says anything about the path.
    Absent,
}

/// `abs` relative to `root` (`""` if equal), if `abs` is `root` or below it. `root` has no
/// trailing slash (`""` for `/`), `abs` none unless it is `/`.
pub fn relative<'p>(root: &[u8], abs: &'p [u8]) -> Option<&'p [u8]> {
    let rest = abs.strip_prefix(root)?;
    match rest {
        [] => Some(rest),
        [b'/'] => Some(&rest[1..]),
        [b'/', r @ ..] => Some(r),
        _ => None,
    }
}

/// The deepest entry of `v` that is an ancestor of the missing `rel`, given the insertion
/// point `pos` of `rel`: it is the longest common component prefix of `rel` and the entry
/// just before `pos` (every entry between an ancestor and `rel` lies in that ancestor's
/// subtree, and entries sort component-wise). `None` only for an empty view.
fn deepest_ancestor<'a>(v: &View<'a>, rel: &[u8], pos: usize) -> Option<Entry<'a>> {
    let prev = v.entry(pos.checked_sub(1)?)?.path();
    let k = prev.iter().zip(rel).take_while(|(a, b)| a == b).count();
    let whole = k == prev.len() && (k == rel.len() || rel.get(k) == Some(&b'/'));
    let cut = if whole {
        k
    } else {
        rel[..k].iter().rposition(|&b| b == b'/').unwrap_or(0)
    };
    match v.search(&rel[..cut.min(rel.len())]) {
        Ok(i) => v.entry(i),
        Err(_) => v.entry(0),
    }
}

/// The path as a root would be written (`/` → `""`), trailing slashes dropped.
fn as_root_form(abs: &[u8]) -> &[u8] {
    trim_trailing_slashes(abs)
}

/// What `layers` (bottom first) show at `abs`, symlinks not followed. O(layers × log n),
/// no allocation: the shim calls this for every path it is asked about.
pub fn probe<'a>(layers: &[Layer<'a>], abs: &[u8]) -> Probe<'a> {
    let abs = as_root_form(abs);
    // Length (in `abs`) of the deepest ancestor-or-self that a higher layer showed as a
    // directory: a lower layer's non-directory at or above it was replaced by that directory.
    let mut dir_depth: Option<usize> = None;
    let mut implicit = false;
    for (li, l) in layers.iter().enumerate().rev() {
        let Some(rel) = relative(l.root, abs) else {
            if relative(abs, l.root).is_some_and(|r| !r.is_empty()) {
                // `abs` is a proper ancestor of this layer's root: a directory from here down.
                implicit = true;
                dir_depth = Some(abs.len());
            }
            continue;
        };
        // Length in `abs` of a layer-relative path of `len` bytes.
        let at = |len: usize| {
            if len == 0 {
                l.root.len()
            } else {
                abs.len() - rel.len() + len
            }
        };
        match l.view.search(rel) {
            Ok(i) => {
                let Some(e) = l.view.entry(i) else { continue };
                return match e.kind() {
                    Kind::Dir => Probe::Found(li, e),
                    // Replaced by a higher layer's mount point, and hiding the layers below.
                    _ if implicit => Probe::Implicit,
                    Kind::Whiteout => Probe::Hidden(Hidden::Deleted),
                    _ => Probe::Found(li, e),
                };
            }
            Err(pos) => {
                let Some(a) = deepest_ancestor(&l.view, rel, pos) else {
                    continue;
                };
                let depth = at(a.path().len());
                if a.kind() == Kind::Dir {
                    dir_depth = Some(dir_depth.map_or(depth, |d| d.max(depth)));
                    continue;
                }
                if dir_depth.is_some_and(|d| d >= depth) {
                    // A higher layer has a directory at (or below) this non-directory, which
                    // it replaced; the non-directory still hides every layer below it.
                    break;
                }
                return match a.kind() {
                    Kind::Symlink => Probe::ViaSymlink(li, a),
                    Kind::Whiteout => Probe::Hidden(Hidden::Deleted),
                    _ => Probe::Hidden(Hidden::NotDir),
                };
            }
        }
    }
    if implicit {
        Probe::Implicit
    } else {
        Probe::Absent
    }
}

/// One visible child of a directory: its name and what it is (`None`: an implicit directory,
/// see [`Probe::Implicit`]).
pub type Child<'a> = (&'a [u8], Option<(usize, Entry<'a>)>);

/// The visible direct children of the directory at `abs`, merged over all layers and sorted
/// by name. Empty if `abs` is not a visible directory.
pub fn list_dir<'a>(layers: &[Layer<'a>], abs: &[u8]) -> Vec<Child<'a>> {
    let abs = as_root_form(abs);
    match probe(layers, abs) {
        Probe::Found(_, e) if e.is_dir() => {}
        Probe::Implicit => {}
        _ => return Vec::new(),
    }
    // The layers that show a directory here, topmost first, down to the first one that
    // hides it (a non-directory here or above, replaced by the directory a higher layer
    // shows, hides everything below it).
    let mut merged: Vec<Child<'a>> = Vec::new();
    let mut shown = 0;
    for (li, l) in layers.iter().enumerate().rev() {
        let Some(rel) = relative(l.root, abs) else {
            continue;
        };
        let dir = match l.view.search(rel) {
            Ok(i) => match l.view.entry(i) {
                Some(e) if e.is_dir() => e,
                _ => break,
            },
            Err(pos) => match deepest_ancestor(&l.view, rel, pos) {
                Some(a) if a.is_dir() => continue,
                Some(_) => break,
                None => continue,
            },
        };
        shown += 1;
        // Whiteouts stay in for now: they hide the same name in lower layers.
        merged.extend(l.view.children(&dir).map(|c| (c.name(), Some((li, c)))));
    }
    if shown > 1 {
        // Stable: for equal names the topmost layer's entry stays first.
        merged.sort_by(|a, b| a.0.cmp(b.0));
        merged.dedup_by(|later, first| later.0 == first.0);
    }
    merged.retain(|(_, w)| !matches!(w, Some((_, e)) if e.kind() == Kind::Whiteout));
    // Mount points below: the next component of each such root is a directory (or that
    // root itself) unless a higher layer hides it; [`probe`] has the whole rule.
    let mut path: Vec<u8> = Vec::new();
    for l in layers {
        let Some(below) = relative(abs, l.root).filter(|r| !r.is_empty()) else {
            continue;
        };
        let name = &below[..below.iter().position(|&b| b == b'/').unwrap_or(below.len())];
        path.clear();
        path.extend_from_slice(abs);
        path.push(b'/');
        path.extend_from_slice(name);
        let what = match probe(layers, &path) {
            Probe::Found(li, e) => Some(Some((li, e))),
            Probe::Implicit => Some(None),
            Probe::ViaSymlink(..) | Probe::Hidden(_) | Probe::Absent => None,
        };
        match (merged.binary_search_by(|c| c.0.cmp(name)), what) {
            (Ok(i), Some(w)) => merged[i].1 = w,
            (Ok(i), None) => {
                merged.remove(i);
            }
            (Err(i), Some(w)) => merged.insert(i, (name, w)),
            (Err(_), None) => {}
        }
    }
    merged
}

/// One node of the merged tree, as [`walk`] yields it.
#[derive(Clone, Copy)]
pub enum Merged<'a> {
    /// A directory: its entry, or `None` for an implicit one (give it a default mode).
    Dir(Option<(usize, Entry<'a>)>),
    /// A file, executable or symlink and the layer it comes from.
    Leaf(usize, Entry<'a>),
}

/// The whole merged tree below `abs` (a visible directory, `abs` itself first), as paths
/// relative to `abs` in component order (a directory's subtree right after it): what a
/// materializer needs to build the view as real files.
pub fn walk<'a>(layers: &[Layer<'a>], abs: &[u8]) -> Vec<(Vec<u8>, Merged<'a>)> {
    let abs = as_root_form(abs);
    let top = match probe(layers, abs) {
        Probe::Found(li, e) if e.is_dir() => Merged::Dir(Some((li, e))),
        Probe::Implicit => Merged::Dir(None),
        _ => return Vec::new(),
    };
    let mut out = vec![(Vec::new(), top)];
    // Depth-first with an explicit stack of (relative dir path, its children, next index).
    let mut stack: Vec<(Vec<u8>, Vec<Child<'a>>, usize)> =
        vec![(Vec::new(), list_dir(layers, abs), 0)];
    let mut full = abs.to_vec();
    while let Some((dir, kids, next)) = stack.last_mut() {
        let Some(&(name, what)) = kids.get(*next) else {
            stack.pop();
            continue;
        };
        *next += 1;
        let mut rel = dir.clone();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name);
        match what {
            Some((li, e)) if !e.is_dir() => out.push((rel, Merged::Leaf(li, e))),
            _ => {
                full.truncate(abs.len());
                full.push(b'/');
                full.extend_from_slice(&rel);
                let kids = list_dir(layers, &full);
                out.push((rel.clone(), Merged::Dir(what)));
                stack.push((rel, kids, 0));
            }
        }
    }
    out
}

/// An overlay of whole manifests, each mounted where it was ingested: a convenience over
/// [`probe`] and [`list_dir`].
#[derive(Clone, Default)]
pub struct LayeredView<'a> {
    layers: Vec<Layer<'a>>,
}

impl<'a> LayeredView<'a> {
    /// A view over `layers`, bottom first (later layers win).
    pub fn new(layers: impl IntoIterator<Item = &'a Manifest>) -> Self {
        LayeredView {
            layers: layers.into_iter().map(Layer::of).collect(),
        }
    }

    /// Adds a layer on top.
    pub fn push(&mut self, layer: &'a Manifest) {
        self.layers.push(Layer::of(layer));
    }

    /// The layers, bottom first.
    pub fn layers(&self) -> &[Layer<'a>] {
        &self.layers
    }

    /// The visible entry at `abs_path` and the index of the layer it comes from. `None` if
    /// no layer has it, it is hidden, or it is an implicit directory (no entry to return).
    pub fn lookup(&self, abs_path: &[u8]) -> Option<(usize, Entry<'a>)> {
        match probe(&self.layers, abs_path) {
            Probe::Found(li, e) => Some((li, e)),
            _ => None,
        }
    }

    /// The visible direct children of the directory at `abs_path` that have an entry,
    /// sorted by name: `(name, layer index, entry)`.
    pub fn list_dir(&self, abs_path: &[u8]) -> Vec<(&'a [u8], usize, Entry<'a>)> {
        list_dir(&self.layers, abs_path)
            .into_iter()
            .filter_map(|(n, w)| w.map(|(li, e)| (n, li, e)))
            .collect()
    }
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
        assert_eq!(relative(b"/p", b"/p/a"), Some(&b"a"[..]));
        assert_eq!(relative(b"/p", b"/pa"), None);
        assert_eq!(relative(b"/p", b"/"), None);
        assert_eq!(relative(b"", b"/"), Some(&b""[..]));
        assert_eq!(relative(b"", b"/x/y"), Some(&b"x/y"[..]));
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
        // The nested root is a child of its parent.
        assert_eq!(
            names(&v.list_dir(b"/w/proj")),
            vec![("node_modules".into(), 1), ("src".into(), 0)]
        );
    }
}

/// [`probe`], [`list_dir`] and [`walk`] against an independent oracle: the layers applied
/// bottom-up to an ordered map of the whole tree, as an overlay mount would stack them.
#[cfg(test)]
mod oracle {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::{EntryInput, ManifestBuilder};

    /// Node of the oracle's tree: a directory (`None`: implicit) or a leaf, as (layer, index).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum O {
        Dir(Option<(usize, usize)>),
        Leaf(usize, usize),
    }

    fn join(a: &[u8], b: &[u8]) -> Vec<u8> {
        let mut v = a.to_vec();
        if !b.is_empty() {
            v.push(b'/');
            v.extend_from_slice(b);
        }
        v
    }

    fn below(p: &[u8], q: &[u8]) -> bool {
        q.len() > p.len() && q.starts_with(p) && q[p.len()] == b'/'
    }

    /// Absolute paths (`""` = `/`) to nodes.
    fn overlay(layers: &[Layer<'_>]) -> BTreeMap<Vec<u8>, O> {
        let mut t: BTreeMap<Vec<u8>, O> = BTreeMap::new();
        let drop_below = |t: &mut BTreeMap<Vec<u8>, O>, p: &[u8]| {
            t.retain(|k, _| !below(p, k));
        };
        let make_dir = |t: &mut BTreeMap<Vec<u8>, O>, p: &[u8]| {
            if !matches!(t.get(p), Some(O::Dir(_))) {
                t.insert(p.to_vec(), O::Dir(None));
            }
        };
        for (li, l) in layers.iter().enumerate() {
            // The mount point and its ancestors become directories.
            for (i, &c) in l.root.iter().enumerate() {
                if c == b'/' {
                    make_dir(&mut t, &l.root[..i]);
                }
            }
            make_dir(&mut t, l.root);
            for e in l.view.iter() {
                let p = join(l.root, e.path());
                match e.kind() {
                    Kind::Whiteout => {
                        drop_below(&mut t, &p);
                        t.remove(&p);
                    }
                    Kind::Dir => {
                        t.insert(p, O::Dir(Some((li, e.index()))));
                    }
                    _ => {
                        drop_below(&mut t, &p);
                        t.insert(p, O::Leaf(li, e.index()));
                    }
                }
            }
        }
        t
    }

    fn build(root: &str, entries: &[(String, u8)]) -> Option<Manifest> {
        let mut b = ManifestBuilder::new(root);
        // Nothing may lie below a non-directory of the same manifest.
        let leaves: Vec<&str> = entries
            .iter()
            .filter(|(_, k)| *k != 1)
            .map(|(p, _)| p.as_str())
            .collect();
        for (i, (p, k)) in entries.iter().enumerate() {
            if leaves.iter().any(|l| below(l.as_bytes(), p.as_bytes())) {
                continue;
            }
            b.push(match k {
                0 => EntryInput::file(p.as_bytes(), i as u64, [i as u8; 32]),
                1 => EntryInput::dir(p.as_bytes()),
                2 => EntryInput::symlink(p.as_bytes(), "t"),
                _ => EntryInput::whiteout(p.as_bytes()),
            });
        }
        b.build().ok()
    }

    fn rel_path() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..4)
            .prop_map(|v| v.join("/"))
    }

    fn layer_spec() -> impl Strategy<Value = (String, Vec<(String, u8)>)> {
        (
            prop::sample::select(vec!["/", "/a", "/a/b", "/b"]),
            prop::collection::btree_map(rel_path(), 0u8..4, 0..8),
        )
            .prop_map(|(r, m)| (r.to_string(), m.into_iter().collect()))
    }

    fn universe() -> Vec<Vec<u8>> {
        let mut out = vec![b"/".to_vec()];
        let names = [&b"a"[..], b"b", b"c"];
        let mut frontier = vec![Vec::new()];
        for _ in 0..5 {
            let mut next = Vec::new();
            for p in &frontier {
                for n in names {
                    let mut q: Vec<u8> = p.clone();
                    q.push(b'/');
                    q.extend_from_slice(n);
                    out.push(q.clone());
                    next.push(q);
                }
            }
            frontier = next;
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        #[test]
        fn probe_list_and_walk_match_an_overlay(specs in prop::collection::vec(layer_spec(), 1..4)) {
            let ms: Vec<Manifest> = specs.iter().filter_map(|(r, e)| build(r, e)).collect();
            prop_assume!(ms.len() == specs.len());
            let layers: Vec<Layer<'_>> = ms.iter().map(Layer::of).collect();
            let want = overlay(&layers);
            let key = |abs: &[u8]| as_root_form(abs).to_vec();
            for abs in universe() {
                let got = match probe(&layers, &abs) {
                    Probe::Found(li, e) if e.is_dir() => Some(O::Dir(Some((li, e.index())))),
                    Probe::Found(li, e) => Some(O::Leaf(li, e.index())),
                    Probe::Implicit => Some(O::Dir(None)),
                    Probe::ViaSymlink(..) | Probe::Hidden(_) | Probe::Absent => None,
                };
                let expect = want.get(&key(&abs)).copied();
                // `/` itself is only a node of the view if something is mounted at or below it.
                prop_assert_eq!(got, expect, "probe {}", String::from_utf8_lossy(&abs));

                let listed: Vec<Vec<u8>> =
                    list_dir(&layers, &abs).iter().map(|(n, _)| n.to_vec()).collect();
                let k = key(&abs);
                let expect_kids: Vec<Vec<u8>> = if matches!(expect, Some(O::Dir(_))) {
                    want.keys()
                        .filter(|p| below(&k, p) && !p[k.len() + 1..].contains(&b'/'))
                        .map(|p| p[k.len() + 1..].to_vec())
                        .collect()
                } else {
                    Vec::new()
                };
                prop_assert_eq!(listed, expect_kids, "list {}", String::from_utf8_lossy(&abs));
            }
            let walked: Vec<(Vec<u8>, O)> = walk(&layers, b"/")
                .into_iter()
                .map(|(p, m)| {
                    let abs = if p.is_empty() { Vec::new() } else { join(b"", &p) };
                    let o = match m {
                        Merged::Dir(w) => O::Dir(w.map(|(li, e)| (li, e.index()))),
                        Merged::Leaf(li, e) => O::Leaf(li, e.index()),
                    };
                    (abs, o)
                })
                .collect();
            let mut expect_walk: Vec<(Vec<u8>, O)> = want.into_iter().collect();
            expect_walk.sort_by(|a, b| crate::order::cmp_paths(&a.0, &b.0));
            prop_assert_eq!(walked, expect_walk);
        }
    }
}
