//! Entry kinds, the builder's input record, and the zero-copy [`Entry`] view.

use std::fmt;

use crate::order;
use crate::schema::ArchivedEntryData;
use crate::Hash;

/// What an entry is. Stored as its `u8` discriminant.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A directory.
    Dir = 0,
    /// A regular file without any execute bit.
    File = 1,
    /// A regular file with an execute bit (kept apart so a shim can answer `access(X_OK)`
    /// and materialize with the right mode without looking at `mode`).
    Executable = 2,
    /// A symbolic link; see [`Entry::target`].
    Symlink = 3,
    /// Deletion marker for layered views: hides this path (and its subtree) in lower layers.
    Whiteout = 4,
}

impl Kind {
    /// All kinds, in discriminant order.
    pub const ALL: [Kind; 5] = [
        Kind::Dir,
        Kind::File,
        Kind::Executable,
        Kind::Symlink,
        Kind::Whiteout,
    ];

    /// Decodes a stored discriminant.
    pub fn from_u8(v: u8) -> Option<Kind> {
        Kind::ALL.get(usize::from(v)).copied()
    }

    /// True for [`Kind::File`] and [`Kind::Executable`]: the kinds that have content (a hash).
    pub fn has_content(self) -> bool {
        matches!(self, Kind::File | Kind::Executable)
    }
}

/// One entry handed to [`crate::ManifestBuilder::push`]: an owned, plain record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInput {
    /// Path relative to the manifest root: `/`-separated raw bytes, no leading or
    /// trailing slash; `""` is the root directory.
    pub path: Vec<u8>,
    /// Kind of entry.
    pub kind: Kind,
    /// Unix mode bits.
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the Unix epoch.
    pub mtime_ns: i64,
    /// BLAKE3 of the content (files only; the builder zeroes it for other kinds).
    pub hash: Hash,
    /// Symlink target (symlinks only; the builder clears it for other kinds).
    pub target: Vec<u8>,
    /// Re-ingest cache: device id on disk after ingest.
    pub dev: u64,
    /// Re-ingest cache: inode on disk after ingest.
    pub ino: u64,
    /// Re-ingest cache: mtime (ns) on disk after ingest.
    pub cache_mtime_ns: i64,
}

impl EntryInput {
    /// A bare entry of `kind` at `path` with every other field zero.
    pub fn new(path: impl Into<Vec<u8>>, kind: Kind) -> Self {
        EntryInput {
            path: path.into(),
            kind,
            mode: match kind {
                Kind::Dir | Kind::Executable => 0o755,
                Kind::Symlink => 0o777,
                Kind::File | Kind::Whiteout => 0o644,
            },
            size: 0,
            mtime_ns: 0,
            hash: [0; 32],
            target: Vec::new(),
            dev: 0,
            ino: 0,
            cache_mtime_ns: 0,
        }
    }

    /// A directory (mode 0o755).
    pub fn dir(path: impl Into<Vec<u8>>) -> Self {
        Self::new(path, Kind::Dir)
    }

    /// A regular file (mode 0o644) with the given size and content hash.
    pub fn file(path: impl Into<Vec<u8>>, size: u64, hash: Hash) -> Self {
        EntryInput {
            size,
            hash,
            ..Self::new(path, Kind::File)
        }
    }

    /// A symlink pointing at `target`.
    pub fn symlink(path: impl Into<Vec<u8>>, target: impl Into<Vec<u8>>) -> Self {
        let target = target.into();
        EntryInput {
            size: target.len() as u64,
            target,
            ..Self::new(path, Kind::Symlink)
        }
    }

    /// A whiteout hiding `path` in lower layers.
    pub fn whiteout(path: impl Into<Vec<u8>>) -> Self {
        Self::new(path, Kind::Whiteout)
    }
}

/// A borrowed view of one entry, read straight from the archive (no copying).
#[derive(Clone, Copy)]
pub struct Entry<'a> {
    index: usize,
    raw: &'a ArchivedEntryData,
    strings: &'a [u8],
    /// Entries in the manifest, to keep `subtree_end` in range for unvalidated views.
    n: usize,
}

impl<'a> Entry<'a> {
    pub(crate) fn new(
        index: usize,
        raw: &'a ArchivedEntryData,
        strings: &'a [u8],
        n: usize,
    ) -> Self {
        Entry {
            index,
            raw,
            strings,
            n,
        }
    }

    fn string(&self, off: u32, len: u32) -> &'a [u8] {
        let start = off as usize;
        let end = start.saturating_add(len as usize);
        // Ranges are validated when a `Manifest` is opened, not in the shim's view: `get`
        // keeps this panic-free either way.
        self.strings.get(start..end).unwrap_or_default()
    }

    /// Position in the manifest (entry 0 is the root).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Path relative to the manifest root (`""` for the root).
    pub fn path(&self) -> &'a [u8] {
        self.string(self.raw.path_off.to_native(), self.raw.path_len.to_native())
    }

    /// Last path component (`""` for the root).
    pub fn name(&self) -> &'a [u8] {
        order::file_name(self.path())
    }

    /// Kind of entry.
    pub fn kind(&self) -> Kind {
        // Validated at open; the fallback is unreachable in practice.
        Kind::from_u8(self.raw.kind).unwrap_or(Kind::File)
    }

    /// True for directories.
    pub fn is_dir(&self) -> bool {
        self.kind() == Kind::Dir
    }

    /// Unix mode bits.
    pub fn mode(&self) -> u32 {
        self.raw.mode.to_native()
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.raw.size.to_native()
    }

    /// Modification time, ns since the Unix epoch.
    pub fn mtime_ns(&self) -> i64 {
        self.raw.mtime_ns.to_native()
    }

    /// BLAKE3 content hash (all zero for non-files).
    pub fn hash(&self) -> &'a Hash {
        &self.raw.hash
    }

    /// Symlink target (empty for non-symlinks).
    pub fn target(&self) -> &'a [u8] {
        self.string(
            self.raw.target_off.to_native(),
            self.raw.target_len.to_native(),
        )
    }

    /// Re-ingest cache: device id on disk after ingest.
    pub fn dev(&self) -> u64 {
        self.raw.dev.to_native()
    }

    /// Re-ingest cache: inode on disk after ingest.
    pub fn ino(&self) -> u64 {
        self.raw.ino.to_native()
    }

    /// Re-ingest cache: mtime (ns) on disk after ingest.
    pub fn cache_mtime_ns(&self) -> i64 {
        self.raw.cache_mtime_ns.to_native()
    }

    /// Index one past this entry's last descendant; `index() + 1` for non-directories,
    /// so `index()+1 .. subtree_end()` is exactly the subtree. Always in `(index, len]`
    /// (clamped, for views of unvalidated archives).
    pub fn subtree_end(&self) -> usize {
        (self.raw.subtree_end.to_native() as usize)
            .min(self.n)
            .max(self.index + 1)
    }

    /// An owned copy, e.g. to carry an entry over into a new manifest on re-ingest.
    pub fn to_input(&self) -> EntryInput {
        EntryInput {
            path: self.path().to_vec(),
            kind: self.kind(),
            mode: self.mode(),
            size: self.size(),
            mtime_ns: self.mtime_ns(),
            hash: *self.hash(),
            target: self.target().to_vec(),
            dev: self.dev(),
            ino: self.ino(),
            cache_mtime_ns: self.cache_mtime_ns(),
        }
    }
}

impl fmt::Debug for Entry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("index", &self.index)
            .field("path", &String::from_utf8_lossy(self.path()))
            .field("kind", &self.kind())
            .field("mode", &format_args!("{:o}", self.mode()))
            .field("size", &self.size())
            .field("subtree_end", &self.subtree_end())
            .finish_non_exhaustive()
    }
}
