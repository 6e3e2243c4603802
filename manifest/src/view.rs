//! Reading an archive's two arrays (entries, string table): one implementation of entry
//! access, lookup and directory listing for both ways of opening a manifest.
//!
//! [`crate::Manifest`] validates everything at open (O(n)) and then reads through a `View`;
//! the `LD_PRELOAD` shim, which every process under `vrift run` loads, cannot afford O(n)
//! per start-up and builds a `View` after checking only that the arrays lie inside its
//! mapping. So nothing here may rely on validation for memory safety: every string range
//! is read with `get`, every index is bounds-checked, `subtree_end` is clamped into
//! `(index, len]`, and an unknown kind reads as a file. A damaged archive can give wrong
//! answers through a `View`, never an out-of-bounds read or a panic.

use crate::entry::Entry;
use crate::order::{cmp_paths, trim_trailing_slashes};
use crate::schema::ArchivedEntryData;

/// The entries and string table of one archive.
#[derive(Clone, Copy)]
pub struct View<'a> {
    entries: &'a [ArchivedEntryData],
    strings: &'a [u8],
}

impl<'a> View<'a> {
    /// A view of these arrays; any contents are safe to read (see the module docs).
    pub fn new(entries: &'a [ArchivedEntryData], strings: &'a [u8]) -> Self {
        View { entries, strings }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entry number `index` (0 is the root).
    pub fn entry(&self, index: usize) -> Option<Entry<'a>> {
        self.entries
            .get(index)
            .map(|raw| Entry::new(index, raw, self.strings, self.entries.len()))
    }

    /// All entries in manifest order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Entry<'a>> + 'a {
        let (strings, n) = (self.strings, self.entries.len());
        self.entries
            .iter()
            .enumerate()
            .map(move |(i, raw)| Entry::new(i, raw, strings, n))
    }

    /// Binary search for `rel_path` (trailing slashes ignored): `Ok(index)` if present,
    /// else `Err(where it would be inserted)`, which callers use to find an ancestor.
    pub fn search(&self, rel_path: &[u8]) -> Result<usize, usize> {
        let want = trim_trailing_slashes(rel_path);
        let strings = self.strings;
        self.entries.binary_search_by(|raw| {
            let start = raw.path_off.to_native() as usize;
            let end = start.saturating_add(raw.path_len.to_native() as usize);
            cmp_paths(strings.get(start..end).unwrap_or_default(), want)
        })
    }

    /// Index of `rel_path`, in O(log n).
    pub fn lookup_index(&self, rel_path: &[u8]) -> Option<usize> {
        self.search(rel_path).ok()
    }

    /// The entry at `rel_path`.
    pub fn lookup(&self, rel_path: &[u8]) -> Option<Entry<'a>> {
        self.lookup_index(rel_path).and_then(|i| self.entry(i))
    }

    /// Direct children of `dir` in name order, found by hopping over each child's subtree:
    /// O(number of children), not O(subtree). Empty for non-directories.
    pub fn children(&self, dir: &Entry<'_>) -> Children<'a> {
        let (next, end) = if dir.is_dir() {
            (dir.index() + 1, dir.subtree_end())
        } else {
            (0, 0)
        };
        Children {
            view: *self,
            next,
            end,
        }
    }

    /// Every entry strictly below `dir` (its whole subtree), in manifest order.
    pub fn descendants(&self, dir: &Entry<'_>) -> impl Iterator<Item = Entry<'a>> + 'a {
        let view = *self;
        (dir.index() + 1..dir.subtree_end()).filter_map(move |i| view.entry(i))
    }
}

/// Iterator over a directory's direct children; see [`View::children`].
#[derive(Clone)]
pub struct Children<'a> {
    view: View<'a>,
    next: usize,
    end: usize,
}

impl<'a> Iterator for Children<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        if self.next >= self.end {
            return None;
        }
        let e = self.view.entry(self.next)?;
        // subtree_end() > index() always (clamped), so this advances.
        self.next = e.subtree_end();
        Some(e)
    }
}

impl std::iter::FusedIterator for Children<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::EntryData;
    use rkyv::rancor::Error;

    /// Garbage in every field still reads without panics or out-of-bounds access.
    #[test]
    fn damaged_entries_read_safely() {
        let raw = vec![
            EntryData {
                path_off: u32::MAX,
                path_len: u32::MAX,
                kind: 200,
                subtree_end: u32::MAX,
                ..Default::default()
            },
            EntryData {
                path_off: 2,
                path_len: 10,
                kind: 1,
                subtree_end: 0,
                ..Default::default()
            },
        ];
        let bytes = rkyv::to_bytes::<Error>(&raw).unwrap();
        let archived = rkyv::access::<rkyv::Archived<Vec<EntryData>>, Error>(&bytes).unwrap();
        let v = View::new(archived.as_slice(), b"abc");
        for e in v.iter() {
            let _ = (e.path(), e.target(), e.kind(), e.name());
            assert!(e.subtree_end() > e.index() && e.subtree_end() <= v.len());
        }
        let root = v.entry(0).unwrap();
        assert!(v.children(&root).count() <= v.len());
        assert!(v.entry(2).is_none());
        let _ = v.search(b"x");
    }
}
