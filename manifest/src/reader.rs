//! Opening manifests: mmap (or an aligned heap copy), verify once, then read in place.
// Maps the manifest file and reads the archive in place after validation.
#![allow(unsafe_code)]

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapOptions};
use rkyv::util::AlignedVec;

use crate::entry::{Entry, Kind};
use crate::format::{self, Header, HEADER_LEN};
use crate::order::{check_successor, is_ancestor, SuccessorError};
use crate::schema::{ArchivedEntryData, ArchivedManifestData};
use crate::view::{Children, View};
use crate::ManifestError;

/// rkyv needs the payload aligned to the archive's largest alignment (8); 16 leaves room.
const PAYLOAD_ALIGN: usize = 16;

enum Storage {
    Mmap(Mmap),
    /// A caller's buffer that happened to be suitably aligned already.
    Vec(Vec<u8>),
    Aligned(AlignedVec<PAYLOAD_ALIGN>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Vec(v) => v,
            Storage::Aligned(v) => v,
        }
    }
}

// Shims and `run` share one opened manifest across threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Manifest>();
};

/// Options for [`Manifest::open_with`].
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// Verify the xxh3 checksum (reads every byte of the file). Structural validation
    /// happens regardless, so skipping this can never cause a panic or unsafety — only
    /// silently wrong data if the file was damaged. Default: `true`.
    pub verify_checksum: bool,
    /// Pre-fault the whole mapping (`MAP_POPULATE`); cheaper than faulting page by page
    /// when the whole file is going to be read anyway (checksum). Default: `true`.
    pub populate: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            verify_checksum: true,
            populate: true,
        }
    }
}

/// An opened, validated manifest. Owns its bytes (an mmap or an aligned heap buffer);
/// every accessor reads the archive in place.
///
/// The file must not be modified in place while mapped (writers in this project always
/// replace manifests by rename, see [`crate::ManifestBuilder::write_atomic`]).
pub struct Manifest {
    storage: Storage,
    header: Header,
    path: PathBuf,
}

impl std::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manifest")
            .field("path", &self.path)
            .field("root", &String::from_utf8_lossy(self.root()))
            .field("entries", &self.len())
            .field("flags", &self.flags())
            .finish_non_exhaustive()
    }
}

impl Manifest {
    /// Memory-maps and fully validates the manifest at `path`.
    pub fn open(path: &Path) -> Result<Manifest, ManifestError> {
        Self::open_with(path, OpenOptions::default())
    }

    /// [`open`](Self::open) with explicit [`OpenOptions`].
    pub fn open_with(path: &Path, opts: OpenOptions) -> Result<Manifest, ManifestError> {
        let file = File::open(path).map_err(|e| ManifestError::io(path, e))?;
        let len = file
            .metadata()
            .map_err(|e| ManifestError::io(path, e))?
            .len();
        let storage = if len < HEADER_LEN as u64 {
            // Too small to be a manifest (mmap of an empty file fails anyway); read it so
            // the header check reports why.
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut &file, &mut bytes)
                .map_err(|e| ManifestError::io(path, e))?;
            Storage::Vec(bytes)
        } else {
            let mut mo = MmapOptions::new();
            if opts.populate {
                mo.populate();
            }
            // SAFETY: the mapping is read-only and private to this process; manifests
            // are only ever replaced by rename, never modified in place, so the bytes
            // do not change under us (the usual mmap caveat, documented on `Manifest`).
            let map = unsafe { mo.map(&file) }.map_err(|e| ManifestError::io(path, e))?;
            Storage::Mmap(map)
        };
        Self::from_storage(storage, path, opts.verify_checksum)
    }

    /// Validates an in-memory manifest image (e.g. a cached copy). Copies it into an
    /// aligned buffer only if `bytes` is not suitably aligned already. `name_for_errors`
    /// is only used in error messages.
    pub fn from_bytes(bytes: Vec<u8>, name_for_errors: &Path) -> Result<Manifest, ManifestError> {
        let storage = if (bytes.as_ptr() as usize).is_multiple_of(PAYLOAD_ALIGN) {
            Storage::Vec(bytes)
        } else {
            let mut v = AlignedVec::<PAYLOAD_ALIGN>::with_capacity(bytes.len());
            v.extend_from_slice(&bytes);
            Storage::Aligned(v)
        };
        Self::from_storage(storage, name_for_errors, true)
    }

    fn from_storage(
        storage: Storage,
        path: &Path,
        verify_checksum: bool,
    ) -> Result<Manifest, ManifestError> {
        let bytes = storage.bytes();
        let header = if verify_checksum {
            format::verify(bytes, path)?
        } else {
            verify_length(bytes, path)?
        };
        let payload = &bytes[HEADER_LEN..];
        let data = rkyv::access::<ArchivedManifestData, rkyv::rancor::Error>(payload)
            .map_err(|e| ManifestError::invalid(path, format!("archive validation failed: {e}")))?;
        check_invariants(data, &header).map_err(|reason| ManifestError::invalid(path, reason))?;
        Ok(Manifest {
            storage,
            header,
            path: path.to_path_buf(),
        })
    }

    fn data(&self) -> &ArchivedManifestData {
        let payload = self.storage.bytes().get(HEADER_LEN..).unwrap_or_default();
        // SAFETY: `from_storage` validated exactly these bytes with `rkyv::access`
        // (bytecheck) before constructing `self`, and the storage is immutable and owned
        // by `self` (see the note on mmaps on `Manifest`).
        unsafe { rkyv::access_unchecked::<ArchivedManifestData>(payload) }
    }

    fn raw_entries(&self) -> &[ArchivedEntryData] {
        self.data().entries.as_slice()
    }

    /// The file this manifest was read from (or the name given to `from_bytes`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The decoded file header.
    pub fn header(&self) -> Header {
        self.header
    }

    /// Absolute directory the tree was ingested from (raw bytes).
    pub fn root(&self) -> &[u8] {
        self.data().root.as_slice()
    }

    /// Header flags (see [`crate::format::FLAG_PHANTOM`]).
    pub fn flags(&self) -> u32 {
        self.header.flags
    }

    /// True if the tree was ingested in phantom mode.
    pub fn is_phantom(&self) -> bool {
        self.header.flags & format::FLAG_PHANTOM != 0
    }

    /// When the manifest was built, ns since the Unix epoch.
    pub fn created_unix_ns(&self) -> i64 {
        self.data().created_unix_ns.to_native()
    }

    /// Number of entries, the root included (so never 0 for a valid manifest).
    pub fn len(&self) -> usize {
        self.raw_entries().len()
    }

    /// True if there are no entries (cannot happen for a validated manifest, which always
    /// holds the root; provided for API symmetry).
    pub fn is_empty(&self) -> bool {
        self.raw_entries().is_empty()
    }

    /// The entries and string table, for reading (see [`View`]).
    pub fn view(&self) -> View<'_> {
        let data = self.data();
        View::new(data.entries.as_slice(), data.strings.as_slice())
    }

    /// Entry number `index` (0 is the root).
    pub fn entry(&self, index: usize) -> Option<Entry<'_>> {
        self.view().entry(index)
    }

    /// The root directory entry.
    pub fn root_entry(&self) -> Option<Entry<'_>> {
        self.entry(0)
    }

    /// Looks up a path relative to the root in O(log n). `""` is the root; trailing
    /// slashes are ignored.
    pub fn lookup(&self, rel_path: &[u8]) -> Option<Entry<'_>> {
        self.view().lookup(rel_path)
    }

    /// Index of `rel_path` (see [`lookup`](Self::lookup)).
    pub fn lookup_index(&self, rel_path: &[u8]) -> Option<usize> {
        self.view().lookup_index(rel_path)
    }

    /// Direct children of `dir` in name order, found by hopping over each child's
    /// subtree — O(number of children), not O(subtree). Empty for non-directories.
    pub fn children(&self, dir: &Entry<'_>) -> Children<'_> {
        self.view().children(dir)
    }

    /// Every entry strictly below `dir` (its whole subtree), in manifest order.
    pub fn descendants(&self, dir: &Entry<'_>) -> impl Iterator<Item = Entry<'_>> + '_ {
        self.view().descendants(dir)
    }

    /// All entries in manifest (component-wise path) order, the root first.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Entry<'_>> + '_ {
        self.view().iter()
    }

    /// The whole file image (header + payload), e.g. to store a cached copy.
    pub fn as_bytes(&self) -> &[u8] {
        self.storage.bytes()
    }
}

/// The header checks of `format::verify` minus the checksum.
fn verify_length(bytes: &[u8], path: &Path) -> Result<Header, ManifestError> {
    let header = Header::parse(bytes, path)?;
    let expected = header.payload_len.saturating_add(HEADER_LEN as u64);
    let found = bytes.len() as u64;
    if found < expected {
        return Err(ManifestError::Truncated {
            path: path.into(),
            expected,
            found,
        });
    }
    if found > expected {
        return Err(ManifestError::invalid(
            path,
            format!("{} trailing bytes after the payload", found - expected),
        ));
    }
    Ok(header)
}

/// Everything a consumer may rely on, checked in one O(n) pass, so that a manifest from
/// anywhere (a crafted file, a bucket, a damaged cache) is refused before one byte is
/// written from it:
///
/// * memory safety of every accessor: string ranges in bounds, known kinds, `subtree_end`
///   in `(index, len]` (exactly `index + 1` for non-directories), the root directory with
///   the empty path at index 0;
/// * the tree shape materializers trust: every path relative and normalized (no empty,
///   `.` or `..` component, no NUL, no leading `/`), strictly sorted component-wise (so
///   unique), every entry directly below the directory entry before it in the ancestor
///   chain — nothing below a file, symlink or whiteout — and each directory's
///   `subtree_end` exactly where its subtree ends;
/// * symlink targets non-empty and free of NUL bytes (no `symlink(2)` could make them).
///
/// Errors name the first offending entry by path.
fn check_invariants(data: &ArchivedManifestData, header: &Header) -> Result<(), String> {
    let entries = data.entries.as_slice();
    let strings = data.strings.as_slice();
    let n = entries.len();
    if header.entry_count != n as u64 {
        return Err(format!(
            "header says {} entries, archive holds {n}",
            header.entry_count
        ));
    }
    let Some(root) = entries.first() else {
        return Err("no root entry".into());
    };
    if root.path_len.to_native() != 0 || root.kind != Kind::Dir as u8 {
        return Err("entry 0 is not the root directory".into());
    }
    if root.subtree_end.to_native() as usize != n {
        return Err("root subtree does not span the manifest".into());
    }
    let string = |off: u32, len: u32| -> Option<&[u8]> {
        let start = off as usize;
        strings.get(start..start.checked_add(len as usize)?)
    };
    let show = |p: &[u8]| format!("{:?}", String::from_utf8_lossy(p));
    // The open directories enclosing the current entry: (index, subtree_end, path).
    let mut open: Vec<(usize, usize, &[u8])> = vec![(0, n, &[])];
    let mut prev: &[u8] = &[];
    let mut prev_kind = Kind::Dir;
    for (i, e) in entries.iter().enumerate() {
        let Some(path) = string(e.path_off.to_native(), e.path_len.to_native()) else {
            return Err(format!("entry {i}: string range out of bounds"));
        };
        let Some(target) = string(e.target_off.to_native(), e.target_len.to_native()) else {
            return Err(format!("entry {i}: string range out of bounds"));
        };
        let Some(kind) = Kind::from_u8(e.kind) else {
            return Err(format!("entry {}: unknown kind {}", show(path), e.kind));
        };
        let end = e.subtree_end.to_native() as usize;
        if i == 0 {
            continue;
        }
        if path.is_empty() {
            return Err(format!("entry {i}: empty path"));
        }
        let parent_len = match check_successor(prev, path) {
            Ok(len) => len,
            Err(SuccessorError::Malformed(why)) => {
                return Err(format!("entry {}: {why}", show(path)))
            }
            Err(SuccessorError::NotAfter) => {
                return Err(format!(
                    "entry {}: not in order after {} (entries must be sorted and unique)",
                    show(path),
                    show(prev)
                ))
            }
        };
        while open.last().is_some_and(|&(_, top_end, _)| top_end <= i) {
            open.pop();
        }
        let Some(&(_, top_end, parent_path)) = open.last() else {
            return Err(format!("entry {}: outside the root's subtree", show(path)));
        };
        if path[..parent_len] != *parent_path {
            let why = if prev_kind != Kind::Dir && is_ancestor(prev, path) {
                "lies below a non-directory"
            } else {
                "is not below its parent directory entry"
            };
            return Err(format!("entry {}: {why}", show(path)));
        }
        let ok = if kind == Kind::Dir {
            end > i && end <= top_end
        } else {
            end == i + 1
        };
        if !ok {
            return Err(format!(
                "entry {}: subtree_end {end} out of range",
                show(path)
            ));
        }
        if kind == Kind::Dir {
            open.push((i, end, path));
        }
        if kind == Kind::Symlink && (target.is_empty() || target.contains(&0)) {
            return Err(format!(
                "entry {}: symlink target is empty or holds a NUL byte",
                show(path)
            ));
        }
        prev = path;
        prev_kind = kind;
    }
    Ok(())
}
